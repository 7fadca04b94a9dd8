//! SCSI tasks of a session: the path of one command from its PDU to its
//! status.
//!
//! ```text
//! SCSI Command ─> scsi::dispatch ─┬─ Complete ──────────────> Data-In / Response
//!                                 ├─ Io(Read) ─> buffer ─> disk read ─> Data-In + status
//!                                 ├─ Io(Write) ─> buffer <─ immediate data, Data-Out (R2T)
//!                                 │                 └─> disk write ─> Response
//!                                 ├─ Io(WriteSame/OrWrite/CompareAndWrite/...) ─> media.rs steps
//!                                 ├─ DataOut (parameter list) ─> dispatch_data_out ─> Response
//!                                 │                                  ├─ Unmap(ranges) ─> punch holes
//!                                 │                                  └─ ExtendedCopy ─> copy.rs
//!                                 └─ Unmap(ranges) ─> punch holes ─> Response
//! ```
//!
//! A task owns its data buffer from allocation until its disk I/O completes;
//! the ring owns it while the I/O is in flight.

use trellis_datapath::{Buf, StoreSlot};

use crate::scsi::{IoRequest, Sense, Status};

/// Why a task holds data-out bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Block I/O.
    Io(IoRequest),
    /// A parameter list for `scsi::dispatch_data_out` (MODE SELECT, ...).
    Params,
    /// Deallocating UNMAP's ranges, in order (`Task::ranges`).
    Unmap,
    /// EXTENDED COPY segments (`Task::copy`).
    Copy,
}

/// Where a task stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Waiting for a data buffer from the pool.
    NeedBuffer,
    /// Receiving data-out.
    Collecting,
    /// Disk I/O submitted.
    InFlight,
    /// VERIFY / ORWRITE / COMPARE AND WRITE: the read of the medium is
    /// submitted (into `Task::verify`).
    Verifying,
    /// Waiting for blocks a COMPARE AND WRITE holds (or, for one, for
    /// overlapping writes to finish).
    RangeWait,
}

/// One outstanding R2T.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct R2tState {
    /// Target transfer tag.
    pub ttt: u32,
    /// Buffer offset of the burst.
    pub offset: u32,
    /// Length of the burst.
    pub len: u32,
    /// Bytes of the burst received so far.
    pub received: u32,
    /// Next DataSN expected in the burst.
    pub next_datasn: u32,
}

/// A SCSI command in progress.
#[derive(Debug)]
pub struct Task {
    /// Initiator task tag.
    pub itt: u32,
    /// Internal id (ring tags use it; ITTs may be reused after an abort).
    pub id: u32,
    /// LUN field of the command (wire format).
    pub lun: u64,
    /// Index into the session's LUN table.
    pub lun_index: usize,
    /// Backing store slot on this core's ring.
    pub slot: StoreSlot,
    /// Block size of the device.
    pub block_size: u32,
    /// CmdSN of the command.
    pub cmdsn: u32,
    /// Expected data transfer length.
    pub edtl: u32,
    /// What the data is for.
    pub purpose: Purpose,
    /// Bytes the command moves (from the CDB).
    pub xfer: u32,
    /// Bytes of data-out the initiator will send: `min(edtl, xfer)` for a
    /// write whose EDTL covers it.
    pub want: u32,
    /// Stage.
    pub stage: Stage,
    /// Data buffer.
    pub buf: Option<Buf>,
    /// Parameter list bytes (non-I/O data-out).
    pub params: Vec<u8>,
    /// Data-out bytes received.
    pub received: u32,
    /// Next unsolicited DataSN.
    pub unsolicited_datasn: u32,
    /// Unsolicited data still allowed (FirstBurstLength minus immediate).
    pub unsolicited_left: u32,
    /// Offset up to which R2Ts have been sent (or unsolicited data covers).
    pub r2t_offset: u32,
    /// Next R2TSN.
    pub r2tsn: u32,
    /// Outstanding R2Ts.
    pub r2ts: Vec<R2tState>,
    /// Aborted by task management: its status is never sent.
    pub aborted: bool,
    /// Immediate data held while waiting for a buffer.
    pub held: Vec<u8>,
    /// The CDB (for parameter-list commands).
    pub cdb: [u8; 16],
    /// VERIFY, ORWRITE, COMPARE AND WRITE: buffer the medium is read into.
    pub verify: Option<Buf>,
    /// UNMAP: `(lba, blocks)` ranges still to deallocate.
    pub ranges: Vec<(u64, u32)>,
    /// WRITE SAME: bytes of the range written so far.
    pub done: u64,
    /// EXTENDED COPY: the segments and the progress through them.
    pub copy: Option<Box<super::copy::CopyJob>>,
    /// SANITIZE: the operation and the progress through it.
    pub sanitize: Option<Box<super::sanitize::SanitizeJob>>,
}

impl Task {
    /// Whether all data-out has arrived.
    pub fn data_complete(&self) -> bool {
        self.received >= self.want
    }

    /// The block I/O request, if any.
    pub fn io(&self) -> Option<IoRequest> {
        match self.purpose {
            Purpose::Io(io) => Some(io),
            Purpose::Params | Purpose::Unmap | Purpose::Copy => None,
        }
    }

    /// Byte offset of the I/O on the store.
    pub fn offset(&self) -> u64 {
        self.io()
            .map_or(0, |io| io.lba * u64::from(self.block_size))
    }

    /// Whether this task receives data-out.
    pub fn is_write(&self) -> bool {
        match self.purpose {
            Purpose::Params => true,
            Purpose::Unmap | Purpose::Copy => false,
            Purpose::Io(io) => io.is_write(),
        }
    }

    /// Whether the task is past data collection and may have disk I/O in
    /// flight (task management must wait for it).
    pub fn in_flight(&self) -> bool {
        matches!(self.stage, Stage::InFlight | Stage::Verifying)
    }
}

/// Final status of a task, ready for the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskStatus {
    /// SCSI status.
    pub status: Status,
    /// Sense, for CHECK CONDITION.
    pub sense: Option<Sense>,
}

impl TaskStatus {
    /// GOOD.
    pub fn good() -> Self {
        Self {
            status: Status::Good,
            sense: None,
        }
    }

    /// CHECK CONDITION with `sense`.
    pub fn check(sense: Sense) -> Self {
        Self {
            status: Status::CheckCondition,
            sense: Some(sense),
        }
    }
}

/// Residual of a transfer: (underflow, overflow, count).
pub fn residual(edtl: u32, xfer: u32) -> (bool, bool, u32) {
    use std::cmp::Ordering;
    match edtl.cmp(&xfer) {
        Ordering::Equal => (false, false, 0),
        Ordering::Greater => (true, false, edtl - xfer),
        Ordering::Less => (false, true, xfer - edtl),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn residuals() {
        assert_eq!(residual(4096, 4096), (false, false, 0));
        assert_eq!(residual(8192, 4096), (true, false, 4096));
        assert_eq!(residual(512, 4096), (false, true, 3584));
        assert_eq!(residual(0, 512), (false, true, 512));
    }
}
