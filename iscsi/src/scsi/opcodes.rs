//! The table of supported operation codes and REPORT SUPPORTED OPERATION
//! CODES (SPC-4 6.35), which reports exactly that table.
//!
//! Each entry carries the CDB usage map (the bits the device server looks at)
//! which doubles as the reserved-bit check: any CDB bit outside the map is
//! rejected with INVALID FIELD IN CDB pointing at it. Service-action bits
//! (byte 1, bits 4:0) are always allowed; in the control byte only NACA and
//! LINK are checked (neither is supported) and vendor-specific bits ignored.

use super::cdb::{be, be16, Cdb, RwLayout};
use super::sense::Sense;
use super::{Completion, LunDevice};

/// Which command handler runs an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Handler {
    TestUnitReady,
    RequestSense,
    Inquiry,
    ModeSelect,
    ModeSense,
    StartStopUnit,
    PreventAllow,
    ReadCapacity10,
    ReadCapacity16,
    ReportLuns,
    ReportTargetPortGroups,
    ReportSupportedOpcodes,
    ReportSupportedTmf,
    Read(RwLayout),
    Write(RwLayout),
    WriteVerify(RwLayout),
    Verify(RwLayout),
    SyncCache(RwLayout),
    Prefetch(RwLayout),
    ReadDefectData10,
    ReadDefectData12,
    WriteSame(RwLayout),
    Unmap,
    GetLbaStatus,
    Reserve,
    Release,
    PrIn,
    PrOut,
    OrWrite,
    CompareAndWrite,
    WriteAtomic,
    ExtendedCopy,
    ReceiveCopyResults,
    Sanitize,
}

/// The data transfer a CDB implies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Xfer {
    /// No data.
    None,
    /// Data-in up to the ALLOCATION LENGTH field at byte `at`, `len` bytes wide.
    AllocLen { at: u8, len: u8 },
    /// Data-out of the PARAMETER LIST LENGTH field at byte `at`, `len` bytes wide.
    ParamLen { at: u8, len: u8 },
    /// Data-in of TRANSFER LENGTH blocks.
    ReadBlocks(RwLayout),
    /// Data-out of TRANSFER LENGTH blocks.
    WriteBlocks(RwLayout),
    /// Data-out of VERIFICATION LENGTH blocks when BYTCHK != 0.
    VerifyBlocks(RwLayout),
    /// WRITE SAME: data-out of one logical block (none with NDOB).
    SameBlock,
    /// COMPARE AND WRITE: data-out of twice NUMBER OF LOGICAL BLOCKS (byte 13).
    CompareAndWrite,
    /// WRITE ATOMIC (16): data-out of TRANSFER LENGTH (bytes 12-13) blocks.
    AtomicBlocks,
}

/// In which ALUA access states a command is processed (SPC-4 5.15.2.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Every state (INQUIRY, REPORT LUNS, REQUEST SENSE, RTPG, RSOC).
    Always,
    /// Active, standby and unavailable (MODE SENSE/SELECT).
    Management,
    /// Active and standby (READ CAPACITY and TEST UNIT READY: let hosts
    /// probe standby paths; PERSISTENT RESERVE IN/OUT).
    Capacity,
    /// Active states only (media access).
    Media,
}

impl OpEntry {
    /// Whether `dev` supports this command (UNMAP needs a thin device);
    /// dispatch and REPORT SUPPORTED OPERATION CODES both ask.
    pub(crate) fn supported_by(&self, dev: &LunDevice) -> bool {
        match self.handler {
            Handler::Unmap => dev.thin,
            Handler::WriteAtomic => dev.atomic_unit_blocks > 0,
            _ => true,
        }
    }
}

/// One supported operation code (and service action).
#[derive(Debug)]
pub(crate) struct OpEntry {
    pub opcode: u8,
    pub sa: Option<u8>,
    pub name: &'static str,
    pub handler: Handler,
    pub xfer: Xfer,
    pub access: Access,
    /// CDB usage map; its length is the CDB length. Byte 0 is the opcode and
    /// the service action sits in its field, as RSOC reports it.
    pub usage: &'static [u8],
}

const fn op(
    opcode: u8,
    sa: Option<u8>,
    name: &'static str,
    handler: Handler,
    xfer: Xfer,
    access: Access,
    usage: &'static [u8],
) -> OpEntry {
    OpEntry {
        opcode,
        sa,
        name,
        handler,
        xfer,
        access,
        usage,
    }
}

use Access::{Always, Capacity, Management, Media};
use RwLayout::{Six, Sixteen, Ten, Twelve};

const fn alloc(at: u8, len: u8) -> Xfer {
    Xfer::AllocLen { at, len }
}

/// Every supported command, sorted by opcode then service action.
pub(crate) static OPS: &[OpEntry] = TABLE;

#[rustfmt::skip]
const TABLE: &[OpEntry] = &[
    // GOOD on a Standby port (as SCST answers): libiscsi-based initiators
    // test the unit at login and give up on NOT READY; multipath's tur
    // checker sees the path up and the ALUA prioritizer keeps it below the
    // Active/Optimized group.
    op(0x00, None, "TEST UNIT READY", Handler::TestUnitReady, Xfer::None, Capacity,
        &[0x00, 0, 0, 0, 0, 0]),
    op(0x03, None, "REQUEST SENSE", Handler::RequestSense, alloc(4, 1), Always,
        &[0x03, 0x01, 0, 0, 0xFF, 0]),
    op(0x08, None, "READ(6)", Handler::Read(Six), Xfer::ReadBlocks(Six), Media,
        &[0x08, 0x1F, 0xFF, 0xFF, 0xFF, 0]),
    op(0x0A, None, "WRITE(6)", Handler::Write(Six), Xfer::WriteBlocks(Six), Media,
        &[0x0A, 0x1F, 0xFF, 0xFF, 0xFF, 0]),
    op(0x12, None, "INQUIRY", Handler::Inquiry, alloc(3, 2), Always,
        &[0x12, 0x01, 0xFF, 0xFF, 0xFF, 0]),
    op(0x15, None, "MODE SELECT(6)", Handler::ModeSelect, Xfer::ParamLen { at: 4, len: 1 },
        Management, &[0x15, 0x11, 0, 0, 0xFF, 0]),
    op(0x16, None, "RESERVE(6)", Handler::Reserve, Xfer::None, Media, &[0x16, 0, 0, 0, 0, 0]),
    op(0x17, None, "RELEASE(6)", Handler::Release, Xfer::None, Media, &[0x17, 0, 0, 0, 0, 0]),
    op(0x1A, None, "MODE SENSE(6)", Handler::ModeSense, alloc(4, 1), Management,
        &[0x1A, 0x08, 0xFF, 0xFF, 0xFF, 0]),
    op(0x1B, None, "START STOP UNIT", Handler::StartStopUnit, Xfer::None, Media,
        &[0x1B, 0x01, 0, 0x0F, 0xF7, 0]),
    op(0x1E, None, "PREVENT ALLOW MEDIUM REMOVAL", Handler::PreventAllow, Xfer::None, Media,
        &[0x1E, 0, 0, 0, 0x03, 0]),
    op(0x25, None, "READ CAPACITY(10)", Handler::ReadCapacity10, Xfer::None, Capacity,
        &[0x25, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0x01, 0]),
    op(0x28, None, "READ(10)", Handler::Read(Ten), Xfer::ReadBlocks(Ten), Media,
        &[0x28, 0x1A, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F, 0xFF, 0xFF, 0]),
    op(0x2A, None, "WRITE(10)", Handler::Write(Ten), Xfer::WriteBlocks(Ten), Media,
        &[0x2A, 0x1A, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F, 0xFF, 0xFF, 0]),
    op(0x2E, None, "WRITE AND VERIFY(10)", Handler::WriteVerify(Ten), Xfer::WriteBlocks(Ten),
        Media, &[0x2E, 0x12, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F, 0xFF, 0xFF, 0]),
    op(0x2F, None, "VERIFY(10)", Handler::Verify(Ten), Xfer::VerifyBlocks(Ten), Media,
        &[0x2F, 0x16, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F, 0xFF, 0xFF, 0]),
    op(0x34, None, "PRE-FETCH(10)", Handler::Prefetch(Ten), Xfer::None, Media,
        &[0x34, 0x02, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F, 0xFF, 0xFF, 0]),
    op(0x35, None, "SYNCHRONIZE CACHE(10)", Handler::SyncCache(Ten), Xfer::None, Media,
        &[0x35, 0x06, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F, 0xFF, 0xFF, 0]),
    op(0x37, None, "READ DEFECT DATA(10)", Handler::ReadDefectData10, alloc(7, 2), Media,
        &[0x37, 0, 0x1F, 0, 0, 0, 0, 0xFF, 0xFF, 0]),
    op(0x41, None, "WRITE SAME(10)", Handler::WriteSame(Ten), Xfer::SameBlock, Media,
        &[0x41, 0x08, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F, 0xFF, 0xFF, 0]),
    op(0x42, None, "UNMAP", Handler::Unmap, Xfer::ParamLen { at: 7, len: 2 }, Media,
        &[0x42, 0, 0, 0, 0, 0, 0x1F, 0xFF, 0xFF, 0]),
    op(0x48, Some(0x01), "SANITIZE", Handler::Sanitize, Xfer::ParamLen { at: 7, len: 2 }, Media,
        &[0x48, 0xA1, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0]),
    op(0x48, Some(0x02), "SANITIZE", Handler::Sanitize, Xfer::ParamLen { at: 7, len: 2 }, Media,
        &[0x48, 0xA2, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0]),
    op(0x48, Some(0x1F), "SANITIZE", Handler::Sanitize, Xfer::ParamLen { at: 7, len: 2 }, Media,
        &[0x48, 0xBF, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0]),
    op(0x55, None, "MODE SELECT(10)", Handler::ModeSelect, Xfer::ParamLen { at: 7, len: 2 },
        Management, &[0x55, 0x11, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0]),
    op(0x56, None, "RESERVE(10)", Handler::Reserve, Xfer::None, Media,
        &[0x56, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
    op(0x57, None, "RELEASE(10)", Handler::Release, Xfer::None, Media,
        &[0x57, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
    op(0x5A, None, "MODE SENSE(10)", Handler::ModeSense, alloc(7, 2), Management,
        &[0x5A, 0x18, 0xFF, 0xFF, 0, 0, 0, 0xFF, 0xFF, 0]),
    op(0x5E, Some(0x00), "PERSISTENT RESERVE IN", Handler::PrIn, alloc(7, 2), Capacity,
        &[0x5E, 0x00, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0]),
    op(0x5E, Some(0x01), "PERSISTENT RESERVE IN", Handler::PrIn, alloc(7, 2), Capacity,
        &[0x5E, 0x01, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0]),
    op(0x5E, Some(0x02), "PERSISTENT RESERVE IN", Handler::PrIn, alloc(7, 2), Capacity,
        &[0x5E, 0x02, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0]),
    op(0x5E, Some(0x03), "PERSISTENT RESERVE IN", Handler::PrIn, alloc(7, 2), Capacity,
        &[0x5E, 0x03, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0]),
    op(0x5F, Some(0x00), "PERSISTENT RESERVE OUT", Handler::PrOut, Xfer::ParamLen { at: 5, len: 4 },
        Capacity, &[0x5F, 0x00, 0xFF, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0]),
    op(0x5F, Some(0x01), "PERSISTENT RESERVE OUT", Handler::PrOut, Xfer::ParamLen { at: 5, len: 4 },
        Capacity, &[0x5F, 0x01, 0xFF, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0]),
    op(0x5F, Some(0x02), "PERSISTENT RESERVE OUT", Handler::PrOut, Xfer::ParamLen { at: 5, len: 4 },
        Capacity, &[0x5F, 0x02, 0xFF, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0]),
    op(0x5F, Some(0x03), "PERSISTENT RESERVE OUT", Handler::PrOut, Xfer::ParamLen { at: 5, len: 4 },
        Capacity, &[0x5F, 0x03, 0xFF, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0]),
    op(0x5F, Some(0x04), "PERSISTENT RESERVE OUT", Handler::PrOut, Xfer::ParamLen { at: 5, len: 4 },
        Capacity, &[0x5F, 0x04, 0xFF, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0]),
    op(0x5F, Some(0x05), "PERSISTENT RESERVE OUT", Handler::PrOut, Xfer::ParamLen { at: 5, len: 4 },
        Capacity, &[0x5F, 0x05, 0xFF, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0]),
    op(0x5F, Some(0x06), "PERSISTENT RESERVE OUT", Handler::PrOut, Xfer::ParamLen { at: 5, len: 4 },
        Capacity, &[0x5F, 0x06, 0xFF, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0]),
    op(0x5F, Some(0x07), "PERSISTENT RESERVE OUT", Handler::PrOut, Xfer::ParamLen { at: 5, len: 4 },
        Capacity, &[0x5F, 0x07, 0xFF, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0]),
    op(0x83, Some(0x00), "EXTENDED COPY(LID1)", Handler::ExtendedCopy,
        Xfer::ParamLen { at: 10, len: 4 }, Media,
        &[0x83, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0]),
    op(0x84, Some(0x00), "RECEIVE COPY RESULTS", Handler::ReceiveCopyResults, alloc(10, 4),
        Media, &[0x84, 0x00, 0xFF, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0]),
    op(0x84, Some(0x03), "RECEIVE COPY RESULTS", Handler::ReceiveCopyResults, alloc(10, 4),
        Media, &[0x84, 0x03, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0]),
    op(0x88, None, "READ(16)", Handler::Read(Sixteen), Xfer::ReadBlocks(Sixteen), Media,
        &[0x88, 0x1A, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
          0x1F, 0]),
    op(0x89, None, "COMPARE AND WRITE", Handler::CompareAndWrite, Xfer::CompareAndWrite, Media,
        &[0x89, 0x1A, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0xFF, 0x1F, 0]),
    op(0x8A, None, "WRITE(16)", Handler::Write(Sixteen), Xfer::WriteBlocks(Sixteen), Media,
        &[0x8A, 0x1A, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
          0x1F, 0]),
    op(0x8B, None, "ORWRITE(16)", Handler::OrWrite, Xfer::WriteBlocks(Sixteen), Media,
        &[0x8B, 0x1A, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
          0x1F, 0]),
    op(0x8E, None, "WRITE AND VERIFY(16)", Handler::WriteVerify(Sixteen),
        Xfer::WriteBlocks(Sixteen), Media,
        &[0x8E, 0x12, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
          0x1F, 0]),
    op(0x8F, None, "VERIFY(16)", Handler::Verify(Sixteen), Xfer::VerifyBlocks(Sixteen), Media,
        &[0x8F, 0x16, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
          0x1F, 0]),
    op(0x90, None, "PRE-FETCH(16)", Handler::Prefetch(Sixteen), Xfer::None, Media,
        &[0x90, 0x02, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
          0x1F, 0]),
    op(0x91, None, "SYNCHRONIZE CACHE(16)", Handler::SyncCache(Sixteen), Xfer::None, Media,
        &[0x91, 0x06, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
          0x1F, 0]),
    op(0x93, None, "WRITE SAME(16)", Handler::WriteSame(Sixteen), Xfer::SameBlock, Media,
        &[0x93, 0x09, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
          0x1F, 0]),
    op(0x9C, None, "WRITE ATOMIC(16)", Handler::WriteAtomic, Xfer::AtomicBlocks, Media,
        &[0x9C, 0x18, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
          0x3F, 0]),
    op(0x9E, Some(0x10), "READ CAPACITY(16)", Handler::ReadCapacity16, alloc(10, 4), Capacity,
        &[0x9E, 0x10, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
          0x01, 0]),
    op(0x9E, Some(0x12), "GET LBA STATUS", Handler::GetLbaStatus, alloc(10, 4), Media,
        &[0x9E, 0x12, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
          0, 0]),
    op(0xA0, None, "REPORT LUNS", Handler::ReportLuns, alloc(6, 4), Always,
        &[0xA0, 0, 0xFF, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0]),
    op(0xA3, Some(0x0A), "REPORT TARGET PORT GROUPS", Handler::ReportTargetPortGroups,
        alloc(6, 4), Always, &[0xA3, 0xEA, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0]),
    op(0xA3, Some(0x0C), "REPORT SUPPORTED OPERATION CODES", Handler::ReportSupportedOpcodes,
        alloc(6, 4), Always, &[0xA3, 0x0C, 0x87, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0]),
    op(0xA3, Some(0x0D), "REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS", Handler::ReportSupportedTmf,
        alloc(6, 4), Always, &[0xA3, 0x0D, 0x80, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0]),
    op(0xA8, None, "READ(12)", Handler::Read(Twelve), Xfer::ReadBlocks(Twelve), Media,
        &[0xA8, 0x1A, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F, 0]),
    op(0xAA, None, "WRITE(12)", Handler::Write(Twelve), Xfer::WriteBlocks(Twelve), Media,
        &[0xAA, 0x1A, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F, 0]),
    op(0xAE, None, "WRITE AND VERIFY(12)", Handler::WriteVerify(Twelve),
        Xfer::WriteBlocks(Twelve), Media,
        &[0xAE, 0x12, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F, 0]),
    op(0xAF, None, "VERIFY(12)", Handler::Verify(Twelve), Xfer::VerifyBlocks(Twelve), Media,
        &[0xAF, 0x16, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F, 0]),
    op(0xB7, None, "READ DEFECT DATA(12)", Handler::ReadDefectData12, alloc(6, 4), Media,
        &[0xB7, 0x1F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0]),
];

/// Result of looking a CDB up in [`OPS`].
#[derive(Debug)]
pub(crate) enum Lookup {
    /// Supported.
    Found(&'static OpEntry),
    /// The opcode has service actions but not this one.
    UnsupportedServiceAction,
    /// The opcode is not supported.
    Unknown,
}

/// Index of the first [`OPS`] entry of each opcode; `NONE` if unsupported.
static INDEX: [u8; 256] = build_index();
const NONE: u8 = u8::MAX;

const fn build_index() -> [u8; 256] {
    let mut index = [NONE; 256];
    let mut i = TABLE.len();
    while i > 0 {
        i -= 1;
        index[TABLE[i].opcode as usize] = i as u8;
    }
    index
}

/// The entries of `opcode` (contiguous, since the table is sorted).
fn entries(opcode: u8) -> &'static [OpEntry] {
    let first = usize::from(INDEX[usize::from(opcode)]);
    let rest = OPS.get(first..).unwrap_or(&[]);
    let n = rest.iter().take_while(|e| e.opcode == opcode).count();
    &rest[..n]
}

/// True if `opcode` is a service-action opcode in the table.
fn has_service_actions(opcode: u8) -> bool {
    entries(opcode).first().is_some_and(|e| e.sa.is_some())
}

/// Looks up the command of `c` (service action in byte 1 bits 4:0).
pub(crate) fn lookup(c: &Cdb) -> Lookup {
    match entries(c[0]) {
        [] => Lookup::Unknown,
        [e] if e.sa.is_none() => Lookup::Found(e),
        all => {
            let sa = c[1] & 0x1F;
            match all.iter().find(|e| e.sa == Some(sa)) {
                Some(e) => Lookup::Found(e),
                None => Lookup::UnsupportedServiceAction,
            }
        }
    }
}

/// The entry for `c`, if supported.
pub(crate) fn find(c: &Cdb) -> Option<&'static OpEntry> {
    match lookup(c) {
        Lookup::Found(e) => Some(e),
        _ => None,
    }
}

/// Rejects any CDB bit the entry does not use (reserved, RDPROTECT/WRPROTECT,
/// NACA, LINK, ...) with INVALID FIELD IN CDB at its most significant bit.
pub(crate) fn check_reserved(e: &OpEntry, c: &Cdb) -> Result<(), Sense> {
    let last = e.usage.len().saturating_sub(1);
    for (i, (&b, &usage)) in c.iter().zip(e.usage).enumerate().skip(1) {
        let allowed = if i == last {
            !0x05 // control byte: NACA (bit 2) and LINK (bit 0) unsupported
        } else if i == 1 && e.sa.is_some() {
            usage | 0x1F
        } else {
            usage
        };
        let bad = b & !allowed;
        if bad != 0 {
            let bit = 7 - bad.leading_zeros() as u8;
            return Err(Sense::invalid_field_in_cdb(i as u16, bit));
        }
    }
    Ok(())
}

/// The name of the command `cdb` carries (e.g. "READ(10)"), if supported.
pub fn command_name(cdb: &[u8]) -> Option<&'static str> {
    if cdb.is_empty() {
        return None;
    }
    find(&super::cdb::pad(cdb)).map(|e| e.name)
}

/// Length of a command timeouts descriptor (SPC-4 6.35.4).
const TIMEOUTS_LEN: usize = 12;

fn push_timeouts(out: &mut Vec<u8>) {
    // DESCRIPTOR LENGTH 0Ah; nominal and recommended timeouts not specified.
    out.extend_from_slice(&[0x00, 0x0A, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
}

/// REPORT SUPPORTED OPERATION CODES (MAINTENANCE IN, service action 0Ch).
pub(crate) fn report_supported_opcodes(c: &Cdb, dev: &LunDevice) -> Result<Completion, Sense> {
    let rctd = c[2] & 0x80 != 0;
    let options = c[2] & 0x07;
    let req_op = c[3];
    let req_sa = be16(c, 4);
    let alloc = be(c, 6, 4) as usize;

    let one = |entry: Option<&OpEntry>| {
        let mut out = Vec::with_capacity(4 + 16 + TIMEOUTS_LEN);
        match entry {
            Some(e) => {
                out.push(0);
                out.push(if rctd { 0x80 } else { 0 } | 0x03); // supported per standard
                out.extend_from_slice(&(e.usage.len() as u16).to_be_bytes());
                out.extend_from_slice(e.usage);
                if rctd {
                    push_timeouts(&mut out);
                }
            }
            None => out.extend_from_slice(&[0, 0x01, 0, 0]), // not supported
        }
        out
    };
    let by_sa = || {
        entries(req_op)
            .iter()
            .find(|e| e.sa.map(u16::from) == Some(req_sa))
            .filter(|e| e.supported_by(dev))
    };
    let plain = || entries(req_op).first().filter(|e| e.supported_by(dev));
    let listed = || OPS.iter().filter(|e| e.supported_by(dev));

    let mut out = match options {
        0 => {
            let desc_len = 8 + if rctd { TIMEOUTS_LEN } else { 0 };
            let n = listed().count();
            let mut out = Vec::with_capacity(4 + n * desc_len);
            out.extend_from_slice(&((n * desc_len) as u32).to_be_bytes());
            for e in listed() {
                out.push(e.opcode);
                out.push(0);
                out.extend_from_slice(&u16::from(e.sa.unwrap_or(0)).to_be_bytes());
                out.push(0);
                out.push(if rctd { 0x02 } else { 0 } | u8::from(e.sa.is_some()));
                out.extend_from_slice(&(e.usage.len() as u16).to_be_bytes());
                if rctd {
                    push_timeouts(&mut out);
                }
            }
            out
        }
        1 => {
            if has_service_actions(req_op) {
                return Err(Sense::invalid_field_in_cdb(3, 7));
            }
            one(plain())
        }
        2 => {
            if !has_service_actions(req_op) {
                return Err(Sense::invalid_field_in_cdb(3, 7));
            }
            one(by_sa())
        }
        3 => {
            if has_service_actions(req_op) {
                one(by_sa())
            } else {
                one(plain())
            }
        }
        _ => return Err(Sense::invalid_field_in_cdb(2, 2)),
    };
    out.truncate(alloc);
    Ok(Completion::with_data(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scsi::cdb::pad;

    #[test]
    fn table_is_sorted_and_unique() {
        assert!(OPS.len() < usize::from(NONE));
        for w in OPS.windows(2) {
            let a = (w[0].opcode, w[0].sa);
            let b = (w[1].opcode, w[1].sa);
            assert!(a < b, "{} before {}", w[0].name, w[1].name);
        }
        for e in OPS {
            assert_eq!(e.usage[0], e.opcode, "{}", e.name);
            assert!(matches!(e.usage.len(), 6 | 10 | 12 | 16), "{}", e.name);
            if let Some(sa) = e.sa {
                assert_eq!(e.usage[1] & 0x1F, sa, "{}", e.name);
            }
        }
    }

    #[test]
    fn reserved_bits_rejected_at_msb() {
        // READ(10) with RDPROTECT = 1 -> byte 1 bit 5.
        let c = pad(&[0x28, 0x20, 0, 0, 0, 0, 0, 0, 1, 0]);
        let e = find(&c).unwrap();
        assert_eq!(
            check_reserved(e, &c),
            Err(Sense::invalid_field_in_cdb(1, 5))
        );
        // NACA in the control byte.
        let c = pad(&[0x00, 0, 0, 0, 0, 0x04]);
        assert_eq!(
            check_reserved(find(&c).unwrap(), &c),
            Err(Sense::invalid_field_in_cdb(5, 2))
        );
        // DPO/FUA/FUA_NV and vendor bits in control are fine.
        let c = pad(&[0x28, 0x1A, 0, 0, 0, 0, 0, 0, 1, 0xC0]);
        assert_eq!(check_reserved(find(&c).unwrap(), &c), Ok(()));
        // Bytes beyond the CDB length are not looked at.
        let c = pad(&[0x00, 0, 0, 0, 0, 0, 0xFF, 0xFF]);
        assert_eq!(check_reserved(find(&c).unwrap(), &c), Ok(()));
    }

    #[test]
    fn service_action_lookup() {
        assert!(matches!(lookup(&pad(&[0x9E, 0x10])), Lookup::Found(_)));
        assert!(matches!(
            lookup(&pad(&[0x9E, 0x13])),
            Lookup::UnsupportedServiceAction
        ));
        assert!(matches!(lookup(&pad(&[0x43])), Lookup::Unknown));
        assert_eq!(command_name(&[0x9E, 0x10]), Some("READ CAPACITY(16)"));
        assert_eq!(command_name(&[0x28]), Some("READ(10)"));
        assert_eq!(command_name(&[0]), Some("TEST UNIT READY"));
        assert_eq!(command_name(&[]), None);
        assert_eq!(command_name(&[0xA3, 0x05]), None);
    }

    fn rsoc(rctd: bool, options: u8, op: u8, sa: u16) -> Result<Vec<u8>, Sense> {
        let mut c = [0u8; 16];
        c[0] = 0xA3;
        c[1] = 0x0C;
        c[2] = options | if rctd { 0x80 } else { 0 };
        c[3] = op;
        c[4..6].copy_from_slice(&sa.to_be_bytes());
        c[6..10].copy_from_slice(&0xFFFFu32.to_be_bytes());
        report_supported_opcodes(&c, &thin()).map(|c| c.data)
    }

    /// A device supporting every command (thin, with atomic writes).
    fn thin() -> LunDevice {
        LunDevice {
            thin: true,
            atomic_unit_blocks: 8,
            ..crate::scsi::dispatch::tests::disk(512, 1000)
        }
    }

    #[test]
    fn rsoc_all_lists_every_entry() {
        let d = rsoc(false, 0, 0, 0).unwrap();
        assert_eq!(be(&d, 0, 4) as usize, OPS.len() * 8);
        for (i, e) in OPS.iter().enumerate() {
            let x = &d[4 + i * 8..4 + i * 8 + 8];
            assert_eq!(x[0], e.opcode);
            assert_eq!(be16(x, 2), u16::from(e.sa.unwrap_or(0)));
            assert_eq!(x[5], u8::from(e.sa.is_some()));
            assert_eq!(be16(x, 6) as usize, e.usage.len());
        }
        let d = rsoc(true, 0, 0, 0).unwrap();
        assert_eq!(be(&d, 0, 4) as usize, OPS.len() * 20);
        assert_eq!(d[4 + 5], 0x02);
        assert_eq!(&d[12..14], &[0x00, 0x0A]);
    }

    #[test]
    fn rsoc_hides_unmap_on_thick_devices() {
        let mut c = [0u8; 16];
        c[..10].copy_from_slice(&[0xA3, 0x0C, 0x01, 0x42, 0, 0, 0, 0, 0x10, 0]);
        let thick = crate::scsi::dispatch::tests::disk(512, 1000);
        assert_eq!(
            report_supported_opcodes(&c, &thick).unwrap().data,
            vec![0, 0x01, 0, 0]
        );
        let d = report_supported_opcodes(&c, &thin()).unwrap().data;
        assert_eq!(&d[..4], &[0, 0x03, 0, 10]);
        c[2] = 0;
        let all = report_supported_opcodes(&c, &thick).unwrap().data;
        // UNMAP and WRITE ATOMIC (16) are missing.
        assert_eq!(be(&all, 0, 4) as usize, (OPS.len() - 2) * 8);
        assert!(!all[4..].chunks(8).any(|d| d[0] == 0x42));
    }

    #[test]
    fn rsoc_one_command() {
        let d = rsoc(false, 1, 0x28, 0).unwrap();
        assert_eq!(&d[..4], &[0, 0x03, 0, 10]);
        assert_eq!(d[4], 0x28);
        assert_eq!(d[5] & 0x18, 0x18, "DPO/FUA usage");
        assert_eq!(d[5] & 0xE0, 0, "no RDPROTECT");
        // Unsupported opcode: SUPPORT = 001b.
        assert_eq!(rsoc(false, 1, 0x43, 0).unwrap(), vec![0, 0x01, 0, 0]);
        // Opcode with service actions via option 1 -> invalid field.
        assert!(rsoc(false, 1, 0x9E, 0x10).is_err());
        // Option 2.
        let d = rsoc(true, 2, 0x9E, 0x10).unwrap();
        assert_eq!(&d[..4], &[0, 0x83, 0, 16]);
        assert_eq!(&d[4..6], &[0x9E, 0x10]);
        assert_eq!(d.len(), 4 + 16 + 12);
        assert!(rsoc(false, 2, 0x28, 0).is_err());
        assert_eq!(rsoc(false, 2, 0x9E, 0x13).unwrap(), vec![0, 0x01, 0, 0]);
        // Option 3 accepts both.
        assert_eq!(rsoc(false, 3, 0x28, 0).unwrap()[1], 0x03);
        assert_eq!(rsoc(false, 3, 0xA3, 0x0A).unwrap()[1], 0x03);
        assert!(rsoc(false, 4, 0x28, 0).is_err());
    }
}
