//! Trellis iSCSI target.
//!
//! The protocol core is sans-IO: it takes bytes and time and returns bytes and
//! actions; it never touches a socket or a clock. The `target` module is the
//! driver that binds it to sockets and to the data path.
//!
//! ```text
//! socket -> pdu (framing, digests) -> login | session (CmdSN order, R2T, Data-In)
//!        -> scsi (CDB dispatch) -> datapath (io_uring) -> session -> pdu -> socket
//! ```
#![forbid(unsafe_code)]

pub mod damp;
pub mod login;
pub mod pdu;
pub mod scsi;
pub mod session;
pub mod target;
pub mod text;
