//! EXTENDED COPY (LID1, SPC-4 6.4) and RECEIVE COPY RESULTS (SPC-4 6.18),
//! and the third-party copy VPD page (8Fh).
//!
//! ```text
//! EXTENDED COPY ─> DataOut{len} ─> parse_copy_list ─> Action::ExtendedCopy(CopyList)
//!                                                      │ session: resolve_copy(list, LUNs)
//!                                                      └─> read chunk ─> write chunk ─> ...
//!                                                            └─> NexusState::record_copy
//! RECEIVE COPY RESULTS ─ COPY STATUS (held results of this nexus)
//!                      └ OPERATING PARAMETERS (the limits below)
//! ```
//!
//! Only identification descriptor target descriptors (E4h) naming a logical
//! unit of this target by its NAA designator, and block device to block
//! device segment descriptors (02h) are supported. Copies run to completion
//! before status is returned (no IMMED, no background copies).

use super::cdb::{be, be16, Cdb};
use super::sense::{Sense, SenseKey};
use super::NexusState;
use super::{Completion, LunDevice};

/// MAXIMUM TARGET DESCRIPTOR COUNT.
pub const MAX_TARGET_DESCRIPTORS: usize = 2;
/// MAXIMUM SEGMENT DESCRIPTOR COUNT.
pub const MAX_SEGMENT_DESCRIPTORS: usize = 4;
/// Length of an identification descriptor target descriptor.
const TARGET_DESC_LEN: usize = 32;
/// Length of a block device to block device segment descriptor.
const B2B_DESC_LEN: usize = 28;
/// MAXIMUM DESCRIPTOR LIST LENGTH: as many descriptors as the counts allow.
pub const MAX_DESCRIPTOR_LIST_LEN: usize =
    MAX_TARGET_DESCRIPTORS * TARGET_DESC_LEN + MAX_SEGMENT_DESCRIPTORS * B2B_DESC_LEN;
/// MAXIMUM SEGMENT LENGTH in bytes.
pub const MAX_SEGMENT_BYTES: u64 = 64 << 20;
/// Parameter list header length.
const HEADER_LEN: usize = 16;
/// Copy results held per I_T nexus and logical unit.
pub(crate) const HELD_RESULTS: usize = 8;

/// Identification descriptor target descriptor type code.
const IDENT_TARGET: u8 = 0xE4;
/// Block device to block device segment descriptor type code.
const B2B_SEGMENT: u8 = 0x02;

/// One CSCD (copy target) of a parameter list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyTarget {
    /// NUL: the descriptor names no device; using it aborts the copy.
    pub nul: bool,
    /// DESIGNATOR TYPE (3: NAA).
    pub designator_type: u8,
    /// The designator bytes.
    pub designator: Vec<u8>,
}

/// One block device to block device segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopySegment {
    /// SOURCE TARGET DESCRIPTOR INDEX.
    pub src: u16,
    /// DESTINATION TARGET DESCRIPTOR INDEX.
    pub dst: u16,
    /// DC: `blocks` counts destination blocks (else source blocks).
    pub dest_count: bool,
    /// NUMBER OF BLOCKS.
    pub blocks: u16,
    /// SOURCE BLOCK DEVICE LOGICAL BLOCK ADDRESS.
    pub src_lba: u64,
    /// DESTINATION BLOCK DEVICE LOGICAL BLOCK ADDRESS.
    pub dst_lba: u64,
}

/// A parsed EXTENDED COPY (LID1) parameter list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyList {
    /// LIST IDENTIFIER.
    pub list_id: u8,
    /// Whether the results are held for RECEIVE COPY RESULTS (LIST ID
    /// USAGE 00b or 01b).
    pub hold: bool,
    /// Target descriptors, in order.
    pub targets: Vec<CopyTarget>,
    /// Segment descriptors, in order.
    pub segments: Vec<CopySegment>,
}

/// One segment resolved to logical units of the session's LUN table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyStep {
    /// Index of the source logical unit in the slice given to [`resolve_copy`].
    pub src: usize,
    /// Index of the destination logical unit.
    pub dst: usize,
    /// First source block.
    pub src_lba: u64,
    /// First destination block.
    pub dst_lba: u64,
    /// Blocks to copy (source and destination share the block size).
    pub blocks: u32,
}

/// What a finished copy left for COPY STATUS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyResult {
    /// LIST IDENTIFIER of the copy.
    pub list_id: u8,
    /// Completed without error.
    pub ok: bool,
    /// Segments processed.
    pub segments: u16,
    /// Bytes written to destinations.
    pub bytes: u64,
}

/// COPY ABORTED with `asc`/`ascq`.
fn copy_aborted(asc: u8, ascq: u8) -> Sense {
    Sense::new(SenseKey::CopyAborted, asc, ascq)
}

/// COPY ABORTED, COPY TARGET DEVICE NOT REACHABLE.
pub fn copy_target_not_reachable() -> Sense {
    copy_aborted(0x0D, 0x02)
}

/// EXTENDED COPY CDB: the parameter list length (0: nothing to do).
pub(crate) fn extended_copy_cdb(c: &Cdb) -> super::Action {
    match be(c, 10, 4) as u32 {
        0 => super::Action::Complete(Completion::good()),
        len => super::Action::DataOut { len },
    }
}

/// Parses a LID1 parameter list.
pub fn parse_copy_list(data: &[u8]) -> Result<CopyList, Sense> {
    if data.len() < HEADER_LEN {
        return Err(Sense::parameter_list_length_error());
    }
    let usage = (data[1] >> 3) & 0x03;
    if data[1] & 0x20 != 0 {
        // STR: sequential striped transfers are a stream device feature.
        return Err(Sense::invalid_field_in_parameter_list(1, 5));
    }
    let tgt_len = usize::from(be16(data, 2));
    let seg_len = be(data, 8, 4) as usize;
    let inline_len = be(data, 12, 4) as usize;
    if inline_len != 0 {
        return Err(Sense::invalid_field_in_parameter_list(12, None));
    }
    if tgt_len + seg_len > MAX_DESCRIPTOR_LIST_LEN {
        return Err(Sense::parameter_list_length_error());
    }
    if HEADER_LEN + tgt_len + seg_len > data.len() {
        return Err(Sense::parameter_list_length_error());
    }
    let mut targets = Vec::new();
    let mut at = HEADER_LEN;
    let tgt_end = HEADER_LEN + tgt_len;
    while at < tgt_end {
        if data[at] != IDENT_TARGET {
            return Err(Sense::new(SenseKey::IllegalRequest, 0x26, 0x07));
        }
        if targets.len() == MAX_TARGET_DESCRIPTORS {
            return Err(Sense::new(SenseKey::IllegalRequest, 0x26, 0x06));
        }
        if at + TARGET_DESC_LEN > tgt_end {
            return Err(Sense::parameter_list_length_error());
        }
        let d = &data[at..at + TARGET_DESC_LEN];
        // LU ID TYPE (bits 7-6 of byte 1) is not used by an identification
        // descriptor CSCD: its designator names the unit (SPC-4 6.4.6.3).
        if d[1] & 0x1F != 0 {
            // PERIPHERAL DEVICE TYPE: block devices only.
            return Err(Sense::invalid_field_in_parameter_list(at as u16 + 1, 4));
        }
        let len = usize::from(d[7]).min(20);
        targets.push(CopyTarget {
            nul: d[1] & 0x20 != 0,
            designator_type: d[5] & 0x0F,
            designator: d[8..8 + len].to_vec(),
        });
        at += TARGET_DESC_LEN;
    }
    let mut segments = Vec::new();
    let end = tgt_end + seg_len;
    while at < end {
        if data[at] != B2B_SEGMENT {
            return Err(Sense::new(SenseKey::IllegalRequest, 0x26, 0x09));
        }
        if segments.len() == MAX_SEGMENT_DESCRIPTORS {
            return Err(Sense::new(SenseKey::IllegalRequest, 0x26, 0x08));
        }
        if at + B2B_DESC_LEN > end {
            return Err(Sense::parameter_list_length_error());
        }
        let d = &data[at..at + B2B_DESC_LEN];
        if usize::from(be16(d, 2)) != B2B_DESC_LEN - 4 {
            return Err(Sense::invalid_field_in_parameter_list(at as u16 + 2, None));
        }
        segments.push(CopySegment {
            src: be16(d, 4),
            dst: be16(d, 6),
            dest_count: d[1] & 0x02 != 0,
            blocks: be16(d, 10),
            src_lba: be(d, 12, 8),
            dst_lba: be(d, 20, 8),
        });
        at += B2B_DESC_LEN;
    }
    Ok(CopyList {
        list_id: data[0],
        hold: usage < 2,
        targets,
        segments,
    })
}

/// Resolves every segment of `list` to logical units of `devs` (the
/// session's LUN table) and checks the block ranges: COPY ABORTED when a
/// target is unknown, NUL or out of range, or a range passes the capacity.
pub fn resolve_copy(list: &CopyList, devs: &[&LunDevice]) -> Result<Vec<CopyStep>, Sense> {
    let find = |index: u16| -> Result<usize, Sense> {
        let t = list
            .targets
            .get(usize::from(index))
            .ok_or_else(copy_target_not_reachable)?;
        if t.nul || t.designator_type != 3 {
            return Err(copy_target_not_reachable());
        }
        devs.iter()
            .position(|d| d.naa[..] == t.designator[..])
            .ok_or_else(copy_target_not_reachable)
    };
    let mut steps = Vec::with_capacity(list.segments.len());
    for s in &list.segments {
        let (src, dst) = (find(s.src)?, find(s.dst)?);
        let (sd, dd) = (devs[src], devs[dst]);
        if sd.block_size != dd.block_size {
            return Err(Sense::invalid_field_in_parameter_list(0, None));
        }
        let blocks = u32::from(s.blocks);
        if u64::from(blocks) * u64::from(sd.block_size) > MAX_SEGMENT_BYTES {
            return Err(Sense::invalid_field_in_parameter_list(0, None));
        }
        let fits = |lba: u64, dev: &LunDevice| {
            lba.checked_add(u64::from(blocks))
                .is_some_and(|e| e <= dev.num_blocks)
        };
        if !fits(s.src_lba, sd) || !fits(s.dst_lba, dd) {
            return Err(copy_aborted(0x00, 0x00));
        }
        if dd.read_only {
            return Err(copy_aborted(0x27, 0x00));
        }
        steps.push(CopyStep {
            src,
            dst,
            src_lba: s.src_lba,
            dst_lba: s.dst_lba,
            blocks,
        });
    }
    Ok(steps)
}

/// RECEIVE COPY RESULTS: COPY STATUS (00h) of a held copy of this nexus,
/// or OPERATING PARAMETERS (03h).
pub(crate) fn receive_copy_results(c: &Cdb, nexus: &NexusState) -> Result<Completion, Sense> {
    let alloc = be(c, 10, 4) as usize;
    let mut out = match c[1] & 0x1F {
        0x00 => {
            let r = nexus
                .copy_result(c[2])
                .ok_or_else(|| Sense::invalid_field_in_cdb(2, None))?;
            copy_status(&r)
        }
        0x03 => operating_parameters(),
        _ => return Err(Sense::invalid_field_in_cdb(1, 4)),
    };
    out.truncate(alloc);
    Ok(Completion::with_data(out))
}

/// COPY STATUS data (SPC-4 6.18.3).
fn copy_status(r: &CopyResult) -> Vec<u8> {
    let mut d = vec![0u8; 12];
    d[3] = 8;
    d[4] = if r.ok { 0x00 } else { 0x01 };
    d[5..7].copy_from_slice(&r.segments.to_be_bytes());
    // TRANSFER COUNT UNITS: bytes, or KiB when bytes do not fit.
    let (units, count) = match u32::try_from(r.bytes) {
        Ok(b) => (0u8, b),
        Err(_) => (1u8, u32::try_from(r.bytes >> 10).unwrap_or(u32::MAX)),
    };
    d[7] = units;
    d[8..12].copy_from_slice(&count.to_be_bytes());
    d
}

/// Descriptor type codes implemented.
const IMPLEMENTED: [u8; 2] = [B2B_SEGMENT, IDENT_TARGET];

/// OPERATING PARAMETERS data (SPC-4 6.18.5).
fn operating_parameters() -> Vec<u8> {
    let mut d = vec![0u8; 44];
    d[4] = 0x01; // SNLID: lists may be of LID1 only, but ids are per nexus.
    d[8..10].copy_from_slice(&(MAX_TARGET_DESCRIPTORS as u16).to_be_bytes());
    d[10..12].copy_from_slice(&(MAX_SEGMENT_DESCRIPTORS as u16).to_be_bytes());
    d[12..16].copy_from_slice(&(MAX_DESCRIPTOR_LIST_LEN as u32).to_be_bytes());
    d[16..20].copy_from_slice(&(MAX_SEGMENT_BYTES as u32).to_be_bytes());
    // MAXIMUM INLINE DATA LENGTH, HELD DATA LIMIT, stream transfer: 0.
    d[34..36].copy_from_slice(&1u16.to_be_bytes()); // TOTAL CONCURRENT COPIES
    d[36] = 1; // MAXIMUM CONCURRENT COPIES
    d[43] = IMPLEMENTED.len() as u8;
    d.extend_from_slice(&IMPLEMENTED);
    let n = (d.len() - 4) as u32;
    d[0..4].copy_from_slice(&n.to_be_bytes());
    d
}

/// Body of the third-party copy VPD page (8Fh): the supported commands
/// descriptor.
pub(crate) fn third_party_copy_vpd() -> Vec<u8> {
    // EXTENDED COPY (LID1), RECEIVE COPY RESULTS (COPY STATUS, OPERATING
    // PARAMETERS).
    let commands: [u8; 7] = [0x83, 1, 0x00, 0x84, 2, 0x00, 0x03];
    let mut d = vec![0x00, 0x01, 0, 0, commands.len() as u8];
    d.extend_from_slice(&commands);
    while d.len() % 4 != 0 {
        d.push(0);
    }
    let len = (d.len() - 4) as u16;
    d[2..4].copy_from_slice(&len.to_be_bytes());
    d
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::scsi::dispatch::tests::disk;

    fn naa(n: u8) -> [u8; 16] {
        let mut a = [0x60; 16];
        a[15] = n;
        a
    }

    fn target(id: [u8; 16], nul: bool) -> Vec<u8> {
        let mut d = vec![0u8; TARGET_DESC_LEN];
        d[0] = IDENT_TARGET;
        d[1] = if nul { 0x20 } else { 0 };
        d[4] = 0x01;
        d[5] = 0x03;
        d[7] = 16;
        d[8..24].copy_from_slice(&id);
        d[30] = 0x02; // block size 512
        d
    }

    fn segment(src: u16, dst: u16, blocks: u16, src_lba: u64, dst_lba: u64) -> Vec<u8> {
        let mut d = vec![0u8; B2B_DESC_LEN];
        d[0] = B2B_SEGMENT;
        d[3] = 0x18;
        d[4..6].copy_from_slice(&src.to_be_bytes());
        d[6..8].copy_from_slice(&dst.to_be_bytes());
        d[10..12].copy_from_slice(&blocks.to_be_bytes());
        d[12..20].copy_from_slice(&src_lba.to_be_bytes());
        d[20..28].copy_from_slice(&dst_lba.to_be_bytes());
        d
    }

    fn list(id: u8, usage: u8, targets: &[Vec<u8>], segments: &[Vec<u8>]) -> Vec<u8> {
        let t: Vec<u8> = targets.concat();
        let s: Vec<u8> = segments.concat();
        let mut d = vec![0u8; HEADER_LEN];
        d[0] = id;
        d[1] = usage << 3;
        d[2..4].copy_from_slice(&(t.len() as u16).to_be_bytes());
        d[8..12].copy_from_slice(&(s.len() as u32).to_be_bytes());
        d.extend_from_slice(&t);
        d.extend_from_slice(&s);
        d
    }

    fn key(s: &Sense) -> (u8, u8, u8) {
        (s.key.code(), s.asc, s.ascq)
    }

    #[test]
    fn parse_table() {
        let good = list(7, 0, &[target(naa(1), false)], &[segment(0, 0, 8, 0, 100)]);
        let l = parse_copy_list(&good).unwrap();
        assert_eq!(l.list_id, 7);
        assert!(l.hold);
        assert_eq!(l.targets[0].designator, naa(1).to_vec());
        assert_eq!(
            l.segments,
            vec![CopySegment {
                src: 0,
                dst: 0,
                dest_count: false,
                blocks: 8,
                src_lba: 0,
                dst_lba: 100
            }]
        );
        assert!(!parse_copy_list(&list(1, 3, &[], &[])).unwrap().hold);

        let mut bad_type = target(naa(1), false);
        bad_type[0] = 0xE0;
        let mut stream = segment(0, 0, 1, 0, 0);
        stream[0] = 0x03;
        let too_many_t = vec![target(naa(1), false); MAX_TARGET_DESCRIPTORS + 1];
        let too_many_s = vec![segment(0, 0, 1, 0, 0); MAX_SEGMENT_DESCRIPTORS + 1];
        let mut inline = good.clone();
        inline[15] = 1;
        let table: Vec<(Vec<u8>, (u8, u8, u8))> = vec![
            (good[..15].to_vec(), (5, 0x1A, 0)),
            (good[..HEADER_LEN + 31].to_vec(), (5, 0x1A, 0)),
            (good[..good.len() - 1].to_vec(), (5, 0x1A, 0)),
            (
                list(1, 0, &[bad_type], &[segment(0, 0, 1, 0, 0)]),
                (5, 0x26, 0x07),
            ),
            (
                list(1, 0, &[target(naa(1), false)], &[stream]),
                (5, 0x26, 0x09),
            ),
            (
                list(1, 0, &too_many_t, &[segment(0, 0, 1, 0, 0)]),
                (5, 0x26, 0x06),
            ),
            (
                list(1, 0, &[target(naa(1), false)], &too_many_s),
                (5, 0x26, 0x08),
            ),
            (list(1, 0, &too_many_t, &too_many_s), (5, 0x1A, 0)),
            (inline, (5, 0x26, 0)),
        ];
        // LU ID TYPE is not used by identification descriptors: any value
        // parses the same.
        let mut reserved_type = target(naa(1), false);
        reserved_type[1] = 0x80;
        let ok = parse_copy_list(&list(1, 0, &[reserved_type], &[segment(0, 0, 1, 0, 0)]));
        assert_eq!(
            ok.map(|l| l.targets[0].designator.clone()),
            Ok(naa(1).to_vec())
        );
        for (i, (data, want)) in table.iter().enumerate() {
            let got = parse_copy_list(data).expect_err(&format!("row {i}"));
            assert_eq!(key(&got), *want, "row {i}");
        }
    }

    #[test]
    fn resolve_table() {
        let mut a = disk(512, 1000);
        a.naa = naa(1);
        let mut b = disk(512, 100);
        b.naa = naa(2);
        let devs = [&a, &b];
        let ts = [target(naa(1), false), target(naa(2), false)];
        let ok = parse_copy_list(&list(1, 0, &ts, &[segment(0, 1, 10, 5, 90)])).unwrap();
        assert_eq!(
            resolve_copy(&ok, &devs).unwrap(),
            vec![CopyStep {
                src: 0,
                dst: 1,
                src_lba: 5,
                dst_lba: 90,
                blocks: 10
            }]
        );
        let aborted = |targets: &[Vec<u8>], seg: Vec<u8>| {
            let l = parse_copy_list(&list(1, 0, targets, &[seg])).unwrap();
            key(&resolve_copy(&l, &devs).unwrap_err())
        };
        assert_eq!(aborted(&ts, segment(0, 2, 1, 0, 0)), (0xA, 0x0D, 0x02));
        assert_eq!(
            aborted(&[target(naa(9), false)], segment(0, 0, 1, 0, 0)),
            (0xA, 0x0D, 0x02)
        );
        assert_eq!(
            aborted(&[target(naa(1), true)], segment(0, 0, 1, 0, 0)),
            (0xA, 0x0D, 0x02)
        );
        assert_eq!(aborted(&ts, segment(0, 1, 11, 0, 90)), (0xA, 0, 0));
        assert_eq!(aborted(&ts, segment(0, 1, 1, 1000, 0)), (0xA, 0, 0));
    }

    #[test]
    fn results_layouts() {
        let mut n = NexusState::empty();
        let mut c = [0u8; 16];
        c[0] = 0x84;
        c[2] = 3;
        c[13] = 0xFF;
        let e = receive_copy_results(&c, &n).unwrap_err();
        assert_eq!(key(&e), (5, 0x24, 0));
        n.record_copy(CopyResult {
            list_id: 3,
            ok: true,
            segments: 1,
            bytes: 4096,
        });
        let d = receive_copy_results(&c, &n).unwrap().data;
        assert_eq!(d, [0, 0, 0, 8, 0, 0, 1, 0, 0, 0, 0x10, 0]);

        c[1] = 0x03;
        let d = receive_copy_results(&c, &n).unwrap().data;
        assert_eq!(d.len(), 46);
        assert_eq!(d[3], 42);
        assert_eq!(be16(&d, 8), MAX_TARGET_DESCRIPTORS as u16);
        assert_eq!(be16(&d, 10), MAX_SEGMENT_DESCRIPTORS as u16);
        assert_eq!(be(&d, 12, 4) as usize, MAX_DESCRIPTOR_LIST_LEN);
        assert_eq!(&d[43..], &[2, 0x02, 0xE4]);
        c[13] = 10;
        assert_eq!(receive_copy_results(&c, &n).unwrap().data.len(), 10);

        let v = third_party_copy_vpd();
        assert_eq!(v, [0, 1, 0, 8, 7, 0x83, 1, 0, 0x84, 2, 0, 3]);
    }

    proptest! {
        #[test]
        fn parse_never_panics(data in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = parse_copy_list(&data);
        }

        #[test]
        fn parse_round_trips(
            id in any::<u8>(),
            usage in 0u8..4,
            targets in proptest::collection::vec((any::<[u8; 16]>(), any::<bool>()), 0..=2),
            segments in proptest::collection::vec(
                (any::<u16>(), any::<u16>(), any::<u16>(), any::<u64>(), any::<u64>()),
                0..=4,
            ),
        ) {
            let t: Vec<Vec<u8>> = targets.iter().map(|(n, nul)| target(*n, *nul)).collect();
            let s: Vec<Vec<u8>> = segments
                .iter()
                .map(|&(a, b, n, x, y)| segment(a, b, n, x, y))
                .collect();
            let l = parse_copy_list(&list(id, usage, &t, &s)).unwrap();
            prop_assert_eq!(l.list_id, id);
            prop_assert_eq!(l.hold, usage < 2);
            let got: Vec<(Vec<u8>, bool)> =
                l.targets.iter().map(|t| (t.designator.clone(), t.nul)).collect();
            let want: Vec<(Vec<u8>, bool)> =
                targets.iter().map(|(n, nul)| (n.to_vec(), *nul)).collect();
            prop_assert_eq!(got, want);
            let got: Vec<_> = l
                .segments
                .iter()
                .map(|s| (s.src, s.dst, s.blocks, s.src_lba, s.dst_lba))
                .collect();
            prop_assert_eq!(got, segments);
        }
    }
}
