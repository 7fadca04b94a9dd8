//! Sans-IO SCSI block-device command layer (SPC-4 / SBC-3): CDB in, action out.
//!
//! ```text
//! session ── Command{cdb, lun} ──> dispatch(cmd, dev, port, luns, nexus)
//!                                    │ unit attention? ── CHECK CONDITION 06/..
//!                                    │ opcode table (opcodes.rs) ── 05/20/00 if absent
//!                                    │ reserved by another nexus? ── RESERVATION CONFLICT
//!                                    │ reserved CDB bits, ALUA access state
//!                                    ├─> Action::Complete(Completion)   status, sense, data-in
//!                                    ├─> Action::Io(IoRequest)         session moves blocks,
//!                                    │                                   datapath does the I/O
//!                                    └─> Action::DataOut { len }       session collects `len`
//!                                          bytes, then dispatch_data_out(cmd, data, ..)
//! ```
//!
//! The layer never touches a socket, the disk or a clock. The session owns
//! data transfer, residuals (EDTL vs. what the CDB implies) and Data-In; the
//! SCSI layer owns everything the CDB says: field validation, LBA range,
//! allocation-length truncation, sense data, and unit attentions (held in the
//! per I_T nexus, per LUN [`NexusState`]).
//!
//! The READ/WRITE path does not allocate: it decodes into a stack copy of the
//! CDB and returns an [`IoRequest`] or a [`Completion`] whose `data` is an
//! empty `Vec`.
//!
//! A single table (`opcodes.rs`) lists every supported operation code with its
//! CDB usage map; [`dispatch`] only runs commands found in it, rejects CDB bits
//! outside the usage map with INVALID FIELD IN CDB, and REPORT SUPPORTED
//! OPERATION CODES reports exactly that table.

mod alua;
mod block;
pub mod blocklock;
mod capacity;
mod cdb;
mod defects;
mod dispatch;
mod inquiry;
mod lu;
mod luns;
mod mode;
mod nexus;
mod opcodes;
mod persist;
mod provisioning;
mod reserve;
mod sanitize;
mod sense;
mod ua;
mod xcopy;

pub use alua::{PortStates, PortTable};
pub use cdb::{data_direction, expected_transfer_len, Direction};
pub use dispatch::{dispatch, dispatch_data_out, dispatch_unmapped};
pub use lu::{ClusterUnit, Done, LunShared, UnitChange, UnitState};
pub use luns::{lun_from_wire, lun_to_wire, MAX_LUN};
pub use mode::mode_select;
pub use nexus::NexusState;
pub use opcodes::command_name;
pub use persist::{
    persistent_reserve, ItNexus, PrRequest, PrState, PrStore, PrType, PrView, Registration,
    Reservation,
};
pub use provisioning::lba_status;
pub use reserve::{new_nexus_id, reserve_release, spc2_token, ReserveOp};
pub use sanitize::{
    sanitize_gate, SanitizeOp, SanitizePhase, SanitizeRequest, SanitizeRun, SanitizeState,
};
pub use sense::{FieldPointer, Sense, SenseKey, Status, DESCRIPTOR_SENSE_MAX_LEN, FIXED_SENSE_LEN};
pub use ua::{UnitAttention, UA_QUEUE_CAPACITY};
pub use xcopy::{
    copy_target_not_reachable, parse_copy_list, resolve_copy, CopyList, CopyResult, CopySegment,
    CopyStep, CopyTarget, MAX_DESCRIPTOR_LIST_LEN, MAX_SEGMENT_BYTES, MAX_SEGMENT_DESCRIPTORS,
    MAX_TARGET_DESCRIPTORS,
};

/// The physical block the backing stores work in: the file system block and
/// page below which a write is a read-modify-write. Reported as the logical
/// blocks per physical block exponent (READ CAPACITY (16)) and as the
/// optimal transfer and unmap granularity (VPD B0h) of 512-byte devices.
pub const PHYSICAL_BLOCK_SIZE: u32 = 4096;

impl LunDevice {
    /// Logical blocks per physical block (1 for 4096-byte devices).
    pub fn blocks_per_physical(&self) -> u32 {
        (PHYSICAL_BLOCK_SIZE / self.block_size.max(1)).max(1)
    }
}

/// What the SCSI layer knows of a device (filled by the target from datapath's
/// `VirtualDevice`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LunDevice {
    /// Human-readable device name (not reported on the wire).
    pub name: String,
    /// Logical block size in bytes: 512 or 4096.
    pub block_size: u32,
    /// Capacity in logical blocks.
    pub num_blocks: u64,
    /// Writes fail with DATA PROTECT, WRITE PROTECTED; MODE SENSE reports WP.
    pub read_only: bool,
    /// NAA type 6 designator (16 bytes) derived from the device UUID.
    pub naa: [u8; 16],
    /// Unit serial number (ASCII), VPD page 80h.
    pub serial: String,
    /// Write cache enabled (WCE in the caching mode page).
    pub write_cache: bool,
    /// Largest transfer in blocks per command (VPD B0h); 0 = no limit.
    pub max_transfer_blocks: u32,
    /// Optimal transfer length in blocks (VPD B0h); 0 = not reported.
    pub optimal_transfer_blocks: u32,
    /// Rotational medium (VPD B1h reports "not reported" instead of non-rotating).
    pub rotational: bool,
    /// Thin provisioned: LBPME/LBPU/LBPWS and unmap limits are reported,
    /// UNMAP is supported and WRITE SAME may deallocate.
    pub thin: bool,
    /// Unmapped blocks read back as zeros (LBPRZ, with `thin`).
    pub holes_read_zero: bool,
    /// Blocks the store writes untorn (RWF_ATOMIC): WRITE ATOMIC (16) takes
    /// exactly this many, aligned to it; 0 = not offered.
    pub atomic_unit_blocks: u32,
}

/// Asymmetric access state of a target port group (SPC-4 5.15.2.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AluaState {
    /// Active/optimized (0h).
    ActiveOptimized,
    /// Active/non-optimized (1h).
    ActiveNonOptimized,
    /// Standby (2h).
    Standby,
    /// Unavailable (3h).
    Unavailable,
    /// Transitioning between states (Fh).
    Transitioning,
    /// Offline (Eh).
    Offline,
}

impl AluaState {
    /// The ASYMMETRIC ACCESS STATE code.
    pub fn code(self) -> u8 {
        match self {
            AluaState::ActiveOptimized => 0x0,
            AluaState::ActiveNonOptimized => 0x1,
            AluaState::Standby => 0x2,
            AluaState::Unavailable => 0x3,
            AluaState::Offline => 0xE,
            AluaState::Transitioning => 0xF,
        }
    }

    /// The state of ASYMMETRIC ACCESS STATE code `c` (low four bits);
    /// reserved codes read as Unavailable.
    pub fn from_code(c: u8) -> Self {
        match c & 0x0F {
            0x0 => AluaState::ActiveOptimized,
            0x1 => AluaState::ActiveNonOptimized,
            0x2 => AluaState::Standby,
            0xE => AluaState::Offline,
            0xF => AluaState::Transitioning,
            _ => AluaState::Unavailable,
        }
    }
}

/// One target port group as reported by REPORT TARGET PORT GROUPS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortGroup {
    /// Target port group identifier.
    pub id: u16,
    /// Current asymmetric access state.
    pub state: AluaState,
    /// PREF bit: this group is preferred.
    pub preferred: bool,
    /// Relative target port identifiers in this group.
    pub relative_ports: Vec<u16>,
}

/// The port a command arrived on (target port identity for VPD 83h and
/// REPORT TARGET PORT GROUPS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortContext {
    /// Target name (iqn) of this port.
    pub target_name: String,
    /// Target portal group tag of this port.
    pub tpgt: u16,
    /// Relative target port identifier of this port.
    pub relative_port_id: u16,
    /// Target port group this port belongs to.
    pub tpg_id: u16,
}

/// One SCSI command as received by the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Command<'a> {
    /// The CDB: 16 bytes or more (AHS extended CDB); shorter slices are
    /// treated as zero-padded.
    pub cdb: &'a [u8],
    /// LUN field of the SCSI Command PDU (wire format).
    pub lun: u64,
    /// Expected data transfer length (EDTL).
    pub expected_len: u32,
    /// R bit of the PDU.
    pub read: bool,
    /// W bit of the PDU.
    pub write: bool,
}

/// What the session should do with a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send status (and data-in) now.
    Complete(Completion),
    /// Perform block I/O, then send GOOD (or the sense the I/O produced).
    Io(IoRequest),
    /// Collect `len` bytes of data-out (parameter list, e.g. MODE SELECT),
    /// then call [`dispatch_data_out`] with them for what to do next.
    DataOut {
        /// Parameter list length from the CDB.
        len: u32,
    },
    /// Deallocate every `(lba, blocks)` range (UNMAP's block descriptors,
    /// already range-checked), then send GOOD.
    Unmap(Vec<(u64, u32)>),
    /// RESERVE or RELEASE the logical unit: the session applies it to the
    /// unit's shared state with [`reserve_release`] and sends its status.
    Reservation(ReserveOp),
    /// PERSISTENT RESERVE IN or OUT (with its parameter list): the session
    /// runs it against the unit's shared state with [`persistent_reserve`].
    PersistentReserve(PrRequest),
    /// EXTENDED COPY: the session resolves the list against its LUN table
    /// with [`resolve_copy`], copies every segment, records the result in
    /// the nexus ([`NexusState::record_copy`]) and sends the status.
    ExtendedCopy(CopyList),
    /// SANITIZE (with its parameter list, for OVERWRITE): the session starts
    /// it on the unit's [`SanitizeState`] and runs its disk steps.
    Sanitize(SanitizeRequest),
    /// A change of a cluster's unit (MODE SELECT of software write
    /// protect): the session has the cluster decide it
    /// ([`ClusterUnit::change`]) and sends its status.
    Shared(UnitChange),
}

/// Final status of a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// SCSI status.
    pub status: Status,
    /// Sense data (CHECK CONDITION only).
    pub sense: Option<Sense>,
    /// Data-in, already truncated to the ALLOCATION LENGTH.
    pub data: Vec<u8>,
}

impl Completion {
    /// GOOD with no data.
    pub fn good() -> Self {
        Completion {
            status: Status::Good,
            sense: None,
            data: Vec::new(),
        }
    }

    /// GOOD with data-in.
    pub fn with_data(data: Vec<u8>) -> Self {
        Completion {
            status: Status::Good,
            sense: None,
            data,
        }
    }

    /// RESERVATION CONFLICT.
    pub fn reservation_conflict() -> Self {
        Completion {
            status: Status::ReservationConflict,
            sense: None,
            data: Vec::new(),
        }
    }

    /// CHECK CONDITION with `sense`.
    pub fn check(sense: Sense) -> Self {
        Completion {
            status: Status::CheckCondition,
            sense: Some(sense),
            data: Vec::new(),
        }
    }
}

/// Block I/O the session performs (READ, WRITE, VERIFY, SYNCHRONIZE CACHE,
/// PRE-FETCH, WRITE SAME, GET LBA STATUS, ORWRITE, COMPARE AND WRITE).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoRequest {
    /// Kind of I/O.
    pub op: IoOp,
    /// First logical block.
    pub lba: u64,
    /// Number of logical blocks; for `Flush`, 0 means "to the last LBA".
    pub blocks: u32,
    /// Force unit access: write through to stable media (RWF_DSYNC).
    pub fua: bool,
}

impl IoRequest {
    /// Bytes of data-in or data-out this request moves: blocks for reads and
    /// writes, one block for WRITE SAME (none with NDOB), twice the blocks for
    /// COMPARE AND WRITE, the allocation length for GET LBA STATUS, and 0 for
    /// `Flush` and `Prefetch`.
    pub fn data_len(&self, block_size: u32) -> u64 {
        let blocks = u64::from(self.blocks) * u64::from(block_size);
        match self.op {
            IoOp::Flush { .. } | IoOp::Prefetch { .. } => 0,
            IoOp::WriteSame { ndob: true, .. } => 0,
            IoOp::WriteSame { ndob: false, .. } => u64::from(block_size),
            IoOp::CompareAndWrite => 2 * blocks,
            IoOp::LbaStatus { alloc } => u64::from(alloc.min(provisioning::LBA_STATUS_LEN)),
            _ => blocks,
        }
    }

    /// Whether the request receives data-out.
    pub fn is_write(&self) -> bool {
        matches!(
            self.op,
            IoOp::Write
                | IoOp::WriteAtomic
                | IoOp::WriteVerify
                | IoOp::Verify { .. }
                | IoOp::WriteSame { ndob: false, .. }
                | IoOp::OrWrite
                | IoOp::CompareAndWrite
        )
    }

    /// Whether the request changes the medium (and so must not interleave
    /// with a COMPARE AND WRITE of the same blocks).
    pub fn modifies(&self) -> bool {
        matches!(
            self.op,
            IoOp::Write
                | IoOp::WriteAtomic
                | IoOp::WriteVerify
                | IoOp::WriteSame { .. }
                | IoOp::OrWrite
                | IoOp::CompareAndWrite
        )
    }
}

/// The kind of block I/O.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoOp {
    /// Read `blocks` and send them as data-in.
    Read,
    /// Collect data-out, write it.
    Write,
    /// Collect data-out and compare it with the medium; on mismatch complete
    /// with `Sense::miscompare(offset)`. (BYTCHK = 0 never reaches the session.)
    Verify {
        /// Byte-by-byte comparison requested (always true today).
        bytchk: bool,
    },
    /// Collect data-out, write it through to media (`fua` is set).
    WriteVerify,
    /// WRITE ATOMIC (16): collect data-out, write it untorn (RWF_ATOMIC).
    WriteAtomic,
    /// Flush the write cache for the range (fdatasync).
    Flush {
        /// IMMED: status may be returned before the flush completes.
        immediate: bool,
    },
    /// PRE-FETCH: read the range into the cache (`blocks` 0: to the last
    /// LBA); see [`prefetch_status`] for the status.
    Prefetch {
        /// IMMED: status may be returned before the blocks are cached.
        immediate: bool,
    },
    /// WRITE SAME: collect one block of data-out (none with `ndob`: zeros)
    /// and write it to every block of the range. An all-zero block is written
    /// as a zero range, or deallocated when `unmap` is set (thin devices only;
    /// the SCSI layer refuses `unmap` otherwise).
    WriteSame {
        /// UNMAP: deallocate the range if the block is all zeros.
        unmap: bool,
        /// NDOB: no data-out buffer; the block is zeros.
        ndob: bool,
    },
    /// GET LBA STATUS from `lba`: find the allocation extent there and answer
    /// with [`lba_status`].
    LbaStatus {
        /// ALLOCATION LENGTH.
        alloc: u32,
    },
    /// ORWRITE: collect data-out, read the blocks, OR the data in, write.
    OrWrite,
    /// COMPARE AND WRITE: collect 2 × `blocks` of data-out, read the blocks,
    /// compare them with the first half (MISCOMPARE with the offset on a
    /// difference), else write the second half. Atomic with respect to other
    /// writes of the same blocks.
    CompareAndWrite,
}

/// Status of a PRE-FETCH whose blocks were (`cached`) or were not placed in a
/// cache (SBC-3 5.9): CONDITION MET, or GOOD when there is no cache to hold
/// them (O_DIRECT stores).
pub fn prefetch_status(cached: bool) -> Completion {
    Completion {
        status: if cached {
            Status::ConditionMet
        } else {
            Status::Good
        },
        sense: None,
        data: Vec::new(),
    }
}
