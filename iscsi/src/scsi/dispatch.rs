//! Command dispatch: unit attention, opcode table lookup, reservation
//! conflict, reserved-bit and ALUA checks, then the per-command handler. Also
//! the small SPC commands with no module of their own (TEST UNIT READY,
//! REQUEST SENSE, START STOP UNIT, PREVENT ALLOW MEDIUM REMOVAL).

use super::alua::{check_access, report_target_port_groups};
use super::block::{block_command, compare_and_write, prefetch, write_atomic, BlockOp};
use super::capacity::{read_capacity10, read_capacity16};
use super::cdb::{pad, Cdb};
use super::defects::{read_defect_data10, read_defect_data12};
use super::inquiry::{inquiry, inquiry_unmapped};
use super::luns::report_luns;
use super::mode::{mode_select, mode_select_cdb, mode_sense};
use super::opcodes::{check_reserved, lookup, report_supported_opcodes, Handler, Lookup};
use super::persist::{pr_conflicts, prin_cdb, prout_cdb, PrRequest};
use super::provisioning::{get_lba_status, unmap, unmap_parameters, write_same};
use super::reserve::{conflicts, ReserveOp};
use super::sanitize::{overwrite_parameters, sanitize_cdb};
use super::sense::{Sense, DESCRIPTOR_SENSE_MAX_LEN, FIXED_SENSE_LEN};
use super::xcopy::{extended_copy_cdb, parse_copy_list, receive_copy_results};
use super::{Action, Command, Completion, LunDevice, PortContext};
use super::{LunShared, NexusState, UnitAttention};

const INQUIRY: u8 = 0x12;
const REPORT_LUNS: u8 = 0xA0;
const REQUEST_SENSE: u8 = 0x03;

/// Runs `cmd` against the mapped logical unit `dev` (whose shared state is
/// `lu`), reached through `port`.
///
/// `luns` are the LUN numbers (not wire-encoded) visible to this initiator,
/// for REPORT LUNS; `nexus` is the state of this I_T nexus for this LUN.
/// A pending unit attention is reported (and cleared) before anything else
/// except for INQUIRY, REPORT LUNS and REQUEST SENSE.
pub fn dispatch(
    cmd: &Command<'_>,
    dev: &LunDevice,
    lu: &LunShared,
    port: &PortContext,
    luns: &[u64],
    nexus: &mut NexusState,
) -> Action {
    if cmd.cdb.is_empty() {
        return Action::Complete(Completion::check(Sense::invalid_opcode()));
    }
    let c = pad(cmd.cdb);
    // Software write protect (MODE SELECT) makes the unit read-only.
    let protected;
    let dev = if nexus.software_write_protect() && !dev.read_only {
        protected = LunDevice {
            read_only: true,
            ..dev.clone()
        };
        &protected
    } else {
        dev
    };
    if !matches!(c[0], INQUIRY | REPORT_LUNS | REQUEST_SENSE) {
        if let Some(ua) = nexus.next_ua() {
            return Action::Complete(Completion::check(ua.sense()));
        }
    }
    match run(&c, cmd.expected_len, dev, lu, port, luns, nexus) {
        Ok(action) => action,
        Err(sense) => Action::Complete(Completion::check(sense)),
    }
}

fn run(
    c: &Cdb,
    edtl: u32,
    dev: &LunDevice,
    lu: &LunShared,
    port: &PortContext,
    luns: &[u64],
    nexus: &mut NexusState,
) -> Result<Action, Sense> {
    let entry = match lookup(c) {
        Lookup::Found(e) => e,
        Lookup::UnsupportedServiceAction => return Err(Sense::invalid_field_in_cdb(1, 4)),
        Lookup::Unknown => return Err(Sense::invalid_opcode()),
    };
    if !entry.supported_by(dev) {
        return Err(Sense::invalid_opcode());
    }
    if nexus.reserved_elsewhere() && conflicts(entry.handler) {
        return Ok(Action::Complete(Completion::reservation_conflict()));
    }
    if pr_conflicts(entry.handler, nexus.pr_view()) {
        return Ok(Action::Complete(Completion::reservation_conflict()));
    }
    check_reserved(entry, c)?;
    check_access(entry.access, nexus.access_state())?;
    let done = |r: Result<Completion, Sense>| r.map(Action::Complete);
    match entry.handler {
        Handler::Read(l) => block_command(BlockOp::Read, l, c, dev),
        Handler::Write(l) => block_command(BlockOp::Write, l, c, dev),
        Handler::WriteVerify(l) => block_command(BlockOp::WriteVerify, l, c, dev),
        Handler::Verify(l) => block_command(BlockOp::Verify, l, c, dev),
        Handler::SyncCache(l) => block_command(BlockOp::SyncCache, l, c, dev),
        Handler::OrWrite => block_command(BlockOp::OrWrite, super::cdb::RwLayout::Sixteen, c, dev),
        Handler::Prefetch(l) => prefetch(l, c, dev),
        Handler::CompareAndWrite => compare_and_write(c, dev, edtl),
        Handler::WriteAtomic => write_atomic(c, dev),
        Handler::WriteSame(l) => write_same(l, c, dev, edtl),
        Handler::Unmap => unmap(c, dev),
        Handler::GetLbaStatus => get_lba_status(c, dev),
        Handler::ReadDefectData10 => done(read_defect_data10(c)),
        Handler::ReadDefectData12 => done(read_defect_data12(c)),
        Handler::TestUnitReady | Handler::PreventAllow => Ok(Action::Complete(Completion::good())),
        Handler::StartStopUnit => done(start_stop_unit(c)),
        Handler::RequestSense => done(Ok(request_sense(c, nexus.next_ua().map(|u| u.sense())))),
        Handler::Inquiry => done(inquiry(c, dev, port, lu.ports())),
        Handler::ModeSense => done(mode_sense(c, dev, nexus.software_write_protect())),
        Handler::ModeSelect => mode_select_cdb(c),
        Handler::ReadCapacity10 => done(read_capacity10(c, dev)),
        Handler::ReadCapacity16 => done(read_capacity16(c, dev)),
        Handler::ReportLuns => {
            let r = report_luns(c, luns);
            if r.is_ok() {
                nexus.clear(UnitAttention::ReportedLunsChanged);
            }
            done(r)
        }
        Handler::ReportTargetPortGroups => done(report_target_port_groups(c, port, lu.ports())),
        Handler::ReportSupportedOpcodes => done(report_supported_opcodes(c, dev)),
        Handler::ReportSupportedTmf => done(Ok(report_supported_tmf(c))),
        Handler::Reserve => Ok(Action::Reservation(ReserveOp::Reserve)),
        Handler::Release => Ok(Action::Reservation(ReserveOp::Release)),
        Handler::PrIn => Ok(Action::PersistentReserve(prin_cdb(c))),
        Handler::PrOut => prout_cdb(c).map(|len| Action::DataOut { len }),
        Handler::ExtendedCopy => Ok(extended_copy_cdb(c)),
        Handler::ReceiveCopyResults => done(receive_copy_results(c, nexus)),
        Handler::Sanitize => sanitize_cdb(c, dev),
    }
}

/// What to do with the command with CDB `cdb` whose data-out `data` the
/// session collected after [`Action::DataOut`]: MODE SELECT (6)/(10)
/// completes; UNMAP turns its parameter list into [`Action::Unmap`] and
/// EXTENDED COPY into [`Action::ExtendedCopy`].
pub fn dispatch_data_out(
    cdb: &[u8],
    data: &[u8],
    dev: &LunDevice,
    lu: &LunShared,
    nexus: &mut NexusState,
) -> Action {
    match cdb.first() {
        Some(0x15) | Some(0x55) => mode_select(cdb, data, dev, lu, nexus),
        Some(0x5F) => {
            // Short CDBs read their missing bytes as zero, as everywhere else.
            let c = pad(cdb);
            Action::PersistentReserve(PrRequest::Out {
                sa: c[1] & 0x1F,
                scope_type: c[2],
                params: data.to_vec(),
            })
        }
        Some(0x83) => parse_copy_list(data)
            .map(Action::ExtendedCopy)
            .unwrap_or_else(|s| Action::Complete(Completion::check(s))),
        Some(0x48) => overwrite_parameters(cdb, data, dev)
            .map(Action::Sanitize)
            .unwrap_or_else(|s| Action::Complete(Completion::check(s))),
        Some(0x42) if dev.thin => {
            unmap_parameters(data, dev).unwrap_or_else(|s| Action::Complete(Completion::check(s)))
        }
        _ => Action::Complete(Completion::check(Sense::internal_target_failure())),
    }
}

/// Runs `cmd` addressed to a LUN with no logical unit mapped for this
/// initiator: INQUIRY answers peripheral qualifier 011b / type 1Fh, REPORT
/// LUNS lists `luns`, REQUEST SENSE returns LOGICAL UNIT NOT SUPPORTED as
/// sense data; everything else fails with LOGICAL UNIT NOT SUPPORTED.
pub fn dispatch_unmapped(cmd: &Command<'_>, luns: &[u64]) -> Completion {
    let c = pad(cmd.cdb);
    let result = match (cmd.cdb.first(), lookup(&c)) {
        (Some(&INQUIRY | &REPORT_LUNS | &REQUEST_SENSE), Lookup::Found(e)) => check_reserved(e, &c)
            .and_then(|()| match e.handler {
                Handler::Inquiry => inquiry_unmapped(&c),
                Handler::ReportLuns => report_luns(&c, luns),
                _ => Ok(request_sense(&c, Some(Sense::lun_not_supported()))),
            }),
        _ => Err(Sense::lun_not_supported()),
    };
    result.unwrap_or_else(Completion::check)
}

/// REQUEST SENSE: `pending` (or NO SENSE) in fixed or descriptor format per DESC.
pub(super) fn request_sense(c: &Cdb, pending: Option<Sense>) -> Completion {
    let sense = pending.unwrap_or_else(Sense::no_sense);
    let alloc = usize::from(c[4]);
    let mut buf = [0u8; DESCRIPTOR_SENSE_MAX_LEN];
    let n = if c[1] & 0x01 != 0 {
        sense.encode_descriptor(&mut buf)
    } else {
        sense.encode_fixed(&mut buf[..FIXED_SENSE_LEN])
    };
    Completion::with_data(buf[..n.min(alloc)].to_vec())
}

/// START STOP UNIT: accepted (and ignored) except LOEJ, since the medium is
/// not removable, and reserved power conditions.
fn start_stop_unit(c: &Cdb) -> Result<Completion, Sense> {
    if !matches!(c[4] >> 4, 0x0 | 0x1 | 0x2 | 0x3 | 0x7 | 0xA | 0xB) {
        return Err(Sense::invalid_field_in_cdb(4, 7));
    }
    if c[4] & 0x02 != 0 {
        return Err(Sense::invalid_field_in_cdb(4, 1));
    }
    Ok(Completion::good())
}

/// REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS (MAINTENANCE IN, service
/// action 0Dh; SPC-4 6.37): the functions `session::tmf` carries out. ABORT
/// TASK, ABORT TASK SET, CLEAR ACA, CLEAR TASK SET, LOGICAL UNIT RESET,
/// QUERY TASK, TARGET RESET; QUERY TASK SET and I_T NEXUS RESET. With REPD
/// the extended format follows, reporting no timeouts (TMFTMOV 0).
fn report_supported_tmf(c: &Cdb) -> Completion {
    // ATS ATSS CACAS CTSS LURS QTS TRS (WAKES not supported).
    const BYTE0: u8 = 0x80 | 0x40 | 0x20 | 0x10 | 0x08 | 0x04 | 0x02;
    // QTSS, ITNRS (QAES not supported).
    const BYTE1: u8 = 0x02 | 0x01;
    let repd = c[2] & 0x80 != 0;
    let alloc = super::cdb::be(c, 6, 4) as usize;
    let mut out = vec![BYTE0, BYTE1, 0, 0];
    if repd {
        out[3] = 0x0C;
        out.resize(16, 0);
    }
    out.truncate(alloc);
    Completion::with_data(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::scsi::opcodes::OPS;
    use crate::scsi::{AluaState, IoOp, IoRequest, PortGroup, PortTable, Status};
    use proptest::prelude::*;

    /// A test disk: write cache on, 128-block max transfer, 32 optimal.
    pub(crate) fn disk(block_size: u32, num_blocks: u64) -> LunDevice {
        LunDevice {
            name: "disk0".into(),
            block_size,
            num_blocks,
            read_only: false,
            naa: [
                0x60, 0x01, 0x40, 0x50, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xAA,
                0xBB, 0xCC,
            ],
            serial: "SERIAL01".into(),
            write_cache: true,
            max_transfer_blocks: 128,
            optimal_transfer_blocks: 32,
            rotational: false,
            thin: false,
            holes_read_zero: true,
            atomic_unit_blocks: 0,
        }
    }

    /// A test port: relative port 2 in group 7.
    pub(crate) fn port() -> PortContext {
        PortContext {
            target_name: "iqn.2024-01.io.trellis:t1".into(),
            tpgt: 1,
            relative_port_id: 2,
            tpg_id: 7,
        }
    }

    /// The port table of a test unit: group 7 (active/optimized, preferred,
    /// ports 2 and 3); group 8 standby with port 9.
    pub(crate) fn table() -> PortTable {
        PortTable {
            epoch: 1,
            groups: vec![
                PortGroup {
                    id: 7,
                    state: AluaState::ActiveOptimized,
                    preferred: true,
                    relative_ports: vec![2, 3],
                },
                PortGroup {
                    id: 8,
                    state: AluaState::Standby,
                    preferred: false,
                    relative_ports: vec![9],
                },
            ],
        }
    }

    /// A test unit reached through [`port`], with [`table`].
    pub(crate) fn unit() -> LunShared {
        let lu = LunShared::new();
        lu.ports().set(table(), 7);
        lu
    }

    fn cmd(cdb: &[u8]) -> Command<'_> {
        Command {
            cdb,
            lun: 0,
            expected_len: 0,
            read: false,
            write: false,
        }
    }

    fn run_on(cdb: &[u8], dev: &LunDevice, p: &PortContext, nexus: &mut NexusState) -> Action {
        dispatch(&cmd(cdb), dev, &unit(), p, &[0, 1], nexus)
    }

    fn complete(a: Action) -> Completion {
        match a {
            Action::Complete(c) => c,
            other => panic!("expected completion, got {other:?}"),
        }
    }

    fn sense_of(a: Action) -> Option<(u8, u8, u8)> {
        complete(a).sense.map(|s| (s.key.code(), s.asc, s.ascq))
    }

    const TUR: [u8; 6] = [0; 6];
    const INQ: [u8; 6] = [0x12, 0, 0, 0, 96, 0];
    const RLUNS: [u8; 12] = [0xA0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0];

    #[test]
    fn unit_attention_once_and_not_on_inquiry() {
        let (dev, p) = (disk(512, 1000), port());
        let mut n = NexusState::new();
        assert_eq!(
            complete(run_on(&INQ, &dev, &p, &mut n)).status,
            Status::Good
        );
        assert_eq!(
            complete(run_on(&RLUNS, &dev, &p, &mut n)).status,
            Status::Good
        );
        assert_eq!(n.pending(), &[UnitAttention::PowerOnReset]);
        assert_eq!(sense_of(run_on(&TUR, &dev, &p, &mut n)), Some((6, 0x29, 0)));
        assert_eq!(complete(run_on(&TUR, &dev, &p, &mut n)), Completion::good());
    }

    #[test]
    fn unit_attention_precedes_invalid_opcode_and_read() {
        let (dev, p) = (disk(512, 1000), port());
        let mut n = NexusState::empty();
        n.push(UnitAttention::CapacityChanged);
        assert_eq!(
            sense_of(run_on(&[0x42; 10], &dev, &p, &mut n)),
            Some((6, 0x2A, 9))
        );
        assert_eq!(
            sense_of(run_on(&[0x42; 10], &dev, &p, &mut n)),
            Some((5, 0x20, 0))
        );
        n.push(UnitAttention::AsymmetricAccessStateChanged);
        let read = [0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0];
        assert_eq!(
            sense_of(run_on(&read, &dev, &p, &mut n)),
            Some((6, 0x2A, 6))
        );
        assert!(matches!(run_on(&read, &dev, &p, &mut n), Action::Io(_)));
    }

    #[test]
    fn request_sense_reports_and_clears() {
        let (dev, p) = (disk(512, 1000), port());
        let mut n = NexusState::new();
        let fixed = complete(run_on(&[0x03, 0, 0, 0, 252, 0], &dev, &p, &mut n));
        assert_eq!(fixed.status, Status::Good);
        assert_eq!(fixed.data, Sense::ua_power_on_reset().to_fixed());
        let none = complete(run_on(&[0x03, 0x01, 0, 0, 252, 0], &dev, &p, &mut n));
        assert_eq!(none.data, [0x72, 0, 0, 0, 0, 0, 0, 0]);
        let short = complete(run_on(&[0x03, 0, 0, 0, 3, 0], &dev, &p, &mut n));
        assert_eq!(short.data, [0x70, 0, 0]);
    }

    #[test]
    fn report_luns_clears_luns_changed() {
        let (dev, p) = (disk(512, 1000), port());
        let mut n = NexusState::empty();
        n.push(UnitAttention::ReportedLunsChanged);
        let d = complete(run_on(&RLUNS, &dev, &p, &mut n)).data;
        assert_eq!(&d[0..4], &[0, 0, 0, 16]);
        assert_eq!(n.pending(), &[]);
    }

    #[test]
    fn protect_bits_and_field_pointers() {
        let (dev, p) = (disk(512, 1000), port());
        let mut n = NexusState::empty();
        for (cdb, byte, bit) in [
            (vec![0x28, 0x20, 0, 0, 0, 0, 0, 0, 1, 0], 1, 5),
            (vec![0xAA, 0xE0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0], 1, 7),
            (vec![0x2F, 0x40, 0, 0, 0, 0, 0, 0, 1, 0], 1, 6),
            (vec![0x2E, 0x08, 0, 0, 0, 0, 0, 0, 1, 0], 1, 3),
            (vec![0x12, 0x02, 0, 0, 96, 0], 1, 1),
            (vec![0x00, 0, 0, 0, 0, 0x01], 5, 0),
            (
                vec![0x9E, 0x13, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0],
                1,
                4,
            ),
        ] {
            let c = complete(run_on(&cdb, &dev, &p, &mut n));
            assert_eq!(
                c.sense,
                Some(Sense::invalid_field_in_cdb(byte, bit)),
                "{cdb:02x?}"
            );
        }
    }

    #[test]
    fn io_actions() {
        let (dev, p) = (disk(512, 1000), port());
        let mut n = NexusState::empty();
        let a = run_on(&[0x2A, 0x18, 0, 0, 0, 5, 0, 0, 2, 0], &dev, &p, &mut n);
        assert_eq!(
            a,
            Action::Io(IoRequest {
                op: IoOp::Write,
                lba: 5,
                blocks: 2,
                fua: true
            })
        );
        let a = run_on(
            &[0x91, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            &dev,
            &p,
            &mut n,
        );
        assert!(matches!(
            a,
            Action::Io(IoRequest {
                op: IoOp::Flush { immediate: true },
                ..
            })
        ));
        let sense = |cdb: &[u8], n: &mut NexusState| sense_of(run_on(cdb, &dev, &p, n));
        assert_eq!(sense(&[0x1B, 0, 0, 0, 0x02, 0], &mut n), Some((5, 0x24, 0)));
        assert_eq!(sense(&[0x1B, 0x01, 0, 0, 0x01, 0], &mut n), None);
        assert_eq!(sense(&[0x1E, 0, 0, 0, 0x01, 0], &mut n), None);
    }

    #[test]
    fn mode_select_via_data_out() {
        let (dev, p) = (disk(512, 1000), port());
        let mut n = NexusState::empty();
        let c = [0x15, 0x10, 0, 0, 16, 0];
        assert_eq!(run_on(&c, &dev, &p, &mut n), Action::DataOut { len: 16 });
        let mut data = vec![0, 0, 0, 0];
        data.extend_from_slice(&[0x0A, 0x0A, 0x02, 0x10, 0, 0, 0, 0, 0xFF, 0xFF, 0, 0]);
        assert_eq!(
            dispatch_data_out(&c, &data, &dev, &crate::scsi::LunShared::new(), &mut n),
            Action::Complete(Completion::good())
        );
        assert_eq!(
            dispatch_data_out(&TUR, &[], &dev, &crate::scsi::LunShared::new(), &mut n),
            Action::Complete(Completion::check(Sense::internal_target_failure()))
        );
    }

    #[test]
    fn short_cdbs_in_data_out_read_missing_bytes_as_zero() {
        // The proptest found this: a one-byte PERSISTENT RESERVE OUT CDB
        // indexed past its end.
        let dev = disk(512, 1000);
        let mut n = NexusState::empty();
        let lu = crate::scsi::LunShared::new();
        let params = vec![7u8; 24];
        assert_eq!(
            dispatch_data_out(&[0x5F], &params, &dev, &lu, &mut n),
            Action::PersistentReserve(PrRequest::Out {
                sa: 0,
                scope_type: 0,
                params: params.clone()
            })
        );
        assert_eq!(
            dispatch_data_out(&[0x5F, 0x21, 0x13], &params, &dev, &lu, &mut n),
            Action::PersistentReserve(PrRequest::Out {
                sa: 1,
                scope_type: 0x13,
                params
            })
        );
        for op in [0x15u8, 0x55, 0x83, 0x48, 0x42] {
            let _ = dispatch_data_out(&[op], &[0; 8], &dev, &lu, &mut n);
        }
    }

    #[test]
    fn alua_standby_gates_media_access() {
        let dev = disk(512, 1000);
        let p = PortContext {
            tpg_id: 8,
            relative_port_id: 9,
            ..port()
        };
        // The unit as member 8 sees it: its own group is Standby.
        let lu = LunShared::new();
        lu.ports().set(table(), 8);
        let mut n = NexusState::attached(&lu, 1);
        n.next_ua();
        n.observe(&lu);
        let mut run = |cdb: &[u8]| sense_of(dispatch(&cmd(cdb), &dev, &lu, &p, &[0], &mut n));
        let read = [0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0];
        assert_eq!(run(&read), Some((2, 0x04, 0x0B)));
        assert_eq!(run(&TUR), None);
        assert_eq!(run(&INQ), None);
        let rc10 = [0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(run(&rc10), None);
    }

    #[test]
    fn software_write_protect_refuses_writes_and_sets_wp() {
        use crate::scsi::LunShared;
        let (dev, p) = (disk(512, 1000), port());
        let lu = LunShared::new();
        let mut n = NexusState::attached(&lu, 1);
        n.clear(UnitAttention::PowerOnReset);
        assert!(lu.set_software_write_protect(true, 2));
        n.observe(&lu);
        assert_eq!(n.next_ua(), Some(UnitAttention::ModeParametersChanged));
        let write10 = [0x2A, 0, 0, 0, 0, 0, 0, 0, 1, 0];
        assert_eq!(
            sense_of(run_on(&write10, &dev, &p, &mut n)),
            Some((7, 0x27, 0))
        );
        let ms = complete(run_on(&[0x1A, 0x08, 0x0A, 0, 255, 0], &dev, &p, &mut n)).data;
        assert_eq!(ms[2] & 0x80, 0x80, "WP in the header");
        assert_eq!(ms[4 + 4] & 0x08, 0x08, "SWP in the Control page");
        let read10 = [0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0];
        assert!(matches!(run_on(&read10, &dev, &p, &mut n), Action::Io(_)));
    }

    #[test]
    fn report_supported_tmf_lists_what_the_session_carries_out() {
        let (dev, p) = (disk(512, 1000), port());
        let mut n = NexusState::empty();
        let short = complete(run_on(
            &[0xA3, 0x0D, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0],
            &dev,
            &p,
            &mut n,
        ));
        // ATS ATSS CACAS CTSS LURS QTS TRS; QTSS ITNRS.
        assert_eq!(short.data, [0xFE, 0x03, 0, 0]);
        let repd = complete(run_on(
            &[0xA3, 0x0D, 0x80, 0, 0, 0, 0, 0, 0, 16, 0, 0],
            &dev,
            &p,
            &mut n,
        ));
        assert_eq!(repd.data.len(), 16);
        assert_eq!(&repd.data[..4], &[0xFE, 0x03, 0, 0x0C]);
        let cut = complete(run_on(
            &[0xA3, 0x0D, 0x80, 0, 0, 0, 0, 0, 0, 2, 0, 0],
            &dev,
            &p,
            &mut n,
        ));
        assert_eq!(cut.data, [0xFE, 0x03]);
    }

    /// Commands from a nexus other than the holder of the reservation: which
    /// conflict, which run; the holder runs all of them.
    #[test]
    fn reservation_conflicts() {
        use crate::scsi::{reserve_release, LunShared, ReserveOp};
        let (dev, p) = (disk(512, 1000), port());
        let lu = LunShared::new();
        let mut holder = NexusState::attached(&lu, 1);
        let mut other = NexusState::attached(&lu, 2);
        holder.clear(UnitAttention::PowerOnReset);
        other.clear(UnitAttention::PowerOnReset);
        assert!(matches!(
            run_on(&[0x16, 0, 0, 0, 0, 0], &dev, &p, &mut holder),
            Action::Reservation(ReserveOp::Reserve)
        ));
        assert_eq!(
            reserve_release(ReserveOp::Reserve, &lu, &holder),
            Completion::good()
        );
        holder.observe(&lu);
        other.observe(&lu);
        let read10 = [0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0];
        let rc16 = [0x9E, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0];
        let rtpg = [0xA3, 0x0A, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0];
        // (CDB, conflicts for the other nexus)
        let table: &[(&[u8], bool)] = &[
            (&TUR, true),
            (&read10, true),
            (&[0x2A, 0, 0, 0, 0, 0, 0, 0, 0, 0], true),
            (&[0x1A, 0, 0x3F, 0, 255, 0], true),
            (&[0x15, 0x10, 0, 0, 0, 0], true),
            (&[0x16, 0, 0, 0, 0, 0], true),
            (&[0x56, 0, 0, 0, 0, 0, 0, 0, 0, 0], true),
            (&[0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0], true),
            (&[0x17, 0, 0, 0, 0, 0], false),
            (&[0x57, 0, 0, 0, 0, 0, 0, 0, 0, 0], false),
            (&INQ, false),
            (&RLUNS, false),
            (&[0x03, 0, 0, 0, 18, 0], false),
            (&[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], false),
            (&rc16, false),
            (&rtpg, false),
            (&[0xA3, 0x0C, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0], false),
            (&[0xA3, 0x0D, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0], false),
        ];
        for (i, &(cdb, conflict)) in table.iter().enumerate() {
            let got = run_on(cdb, &dev, &p, &mut other);
            let is_conflict =
                matches!(&got, Action::Complete(c) if *c == Completion::reservation_conflict());
            assert_eq!(is_conflict, conflict, "row {i}: {cdb:02x?} -> {got:?}");
            let mine = run_on(cdb, &dev, &p, &mut holder);
            assert!(
                !matches!(&mine, Action::Complete(c) if c.status == Status::ReservationConflict),
                "row {i}: holder got {mine:?}"
            );
        }
        // An invalid opcode stays invalid; a unit attention still comes first.
        assert_eq!(
            sense_of(run_on(&[0xFF; 6], &dev, &p, &mut other)),
            Some((5, 0x20, 0))
        );
        other.push(UnitAttention::CapacityChanged);
        assert_eq!(
            sense_of(run_on(&TUR, &dev, &p, &mut other)),
            Some((6, 0x2A, 9))
        );
        // Once released, nothing conflicts any more.
        assert_eq!(
            reserve_release(ReserveOp::Release, &lu, &other),
            Completion::good()
        );
        other.observe(&lu);
        assert!(other.reserved_elsewhere());
        assert_eq!(
            reserve_release(ReserveOp::Release, &lu, &holder),
            Completion::good()
        );
        other.observe(&lu);
        assert!(!other.reserved_elsewhere());
        assert_eq!(
            complete(run_on(&TUR, &dev, &p, &mut other)),
            Completion::good()
        );
    }

    /// PERSISTENT RESERVE OUT through dispatch, then the conflicts an
    /// Exclusive Access reservation causes for an unregistered nexus, and
    /// SPC-2 RESERVE against registrations.
    #[test]
    fn persistent_reservation_through_dispatch() {
        use crate::scsi::{persistent_reserve, ItNexus, LunShared};
        let (dev, p) = (disk(512, 1000), port());
        let lu = LunShared::new();
        let who = |i| ItNexus::iscsi("iqn.2026-01.test:ini", [0x80, 0, 0, 0, 0, i], 1);
        let mut a = NexusState::attached(&lu, 1).with_pr_identity(who(1));
        let mut b = NexusState::attached(&lu, 2).with_pr_identity(who(2));
        a.clear(UnitAttention::PowerOnReset);
        b.clear(UnitAttention::PowerOnReset);
        let prout = |sa: u8, t: u8| [0x5F, sa, t, 0, 0, 0, 0, 0, 24, 0];
        let bad_len = [0x5F, 0, 0, 0, 0, 0, 0, 0, 23, 0];
        assert_eq!(
            sense_of(run_on(&bad_len, &dev, &p, &mut a)),
            Some((5, 0x1A, 0))
        );
        let mut params = [0u8; 24];
        // REGISTER key 9, then RESERVE Exclusive Access.
        for (sa, t, key, sark) in [(0u8, 0u8, 0u64, 9u64), (1, 3, 9, 0)] {
            let c = prout(sa, t);
            assert_eq!(run_on(&c, &dev, &p, &mut a), Action::DataOut { len: 24 });
            params[..8].copy_from_slice(&key.to_be_bytes());
            params[8..16].copy_from_slice(&sark.to_be_bytes());
            let Action::PersistentReserve(req) = dispatch_data_out(&c, &params, &dev, &lu, &mut a)
            else {
                panic!("no PR request");
            };
            assert_eq!(persistent_reserve(&req, &lu, &mut a), Completion::good());
        }
        a.observe(&lu);
        b.observe(&lu);
        let read10 = [0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0];
        let conflict =
            |a: Action| matches!(a, Action::Complete(c) if c.status == Status::ReservationConflict);
        assert!(conflict(run_on(&read10, &dev, &p, &mut b)));
        assert!(!conflict(run_on(&read10, &dev, &p, &mut a)));
        assert!(!conflict(run_on(&TUR, &dev, &p, &mut b)));
        assert!(!conflict(run_on(&INQ, &dev, &p, &mut b)));
        let prin = [0x5E, 0x01, 0, 0, 0, 0, 0, 0, 64, 0];
        let Action::PersistentReserve(req) = run_on(&prin, &dev, &p, &mut b) else {
            panic!("PR IN not dispatched");
        };
        let d = persistent_reserve(&req, &lu, &mut b).data;
        assert_eq!((d.len(), d[21]), (24, 3));
        // SPC-2 RESERVE conflicts for everyone while registrations exist.
        assert!(conflict(run_on(&[0x16, 0, 0, 0, 0, 0], &dev, &p, &mut a)));
        assert!(conflict(run_on(&[0x17, 0, 0, 0, 0, 0], &dev, &p, &mut b)));
        // PR IN service action 4 is not supported.
        assert_eq!(
            sense_of(run_on(
                &[0x5E, 0x04, 0, 0, 0, 0, 0, 0, 64, 0],
                &dev,
                &p,
                &mut a
            )),
            Some((5, 0x24, 0))
        );
    }

    /// RESERVE/RELEASE with a third-party or extent bit set are rejected.
    #[test]
    fn reserve_release_fields() {
        let (dev, p) = (disk(512, 1000), port());
        let mut n = NexusState::empty();
        for cdb in [
            [0x16, 0x01, 0, 0, 0, 0],
            [0x17, 0x10, 0, 0, 0, 0],
            [0x16, 0, 0x01, 0, 0, 0],
        ] {
            assert_eq!(
                sense_of(run_on(&cdb, &dev, &p, &mut n)).map(|s| s.0),
                Some(5)
            );
        }
        let r10 = [0x56, 0x10, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(
            sense_of(run_on(&r10, &dev, &p, &mut n)).map(|s| s.0),
            Some(5)
        );
    }

    /// Every opcode (and service action) dispatch accepts is in RSOC, and
    /// every RSOC entry is accepted by dispatch.
    #[test]
    fn rsoc_matches_dispatch() {
        for (thin, atomic_unit_blocks) in [(false, 0), (true, 0), (true, 8)] {
            rsoc_matches_dispatch_on(&LunDevice {
                thin,
                atomic_unit_blocks,
                ..disk(512, 1000)
            });
        }
    }

    fn rsoc_matches_dispatch_on(dev: &LunDevice) {
        let p = port();
        let mut rsoc = [0u8; 16];
        rsoc[..10].copy_from_slice(&[0xA3, 0x0C, 0, 0, 0, 0, 0, 0, 0x10, 0]);
        let data = complete(run_on(&rsoc, dev, &p, &mut NexusState::empty())).data;
        let listed: Vec<(u8, u16)> = data[4..]
            .chunks(8)
            .map(|d| (d[0], u16::from_be_bytes([d[2], d[3]])))
            .collect();
        let unsupported = OPS.iter().filter(|e| !e.supported_by(dev)).count();
        assert_eq!(
            unsupported,
            usize::from(!dev.thin) + usize::from(dev.atomic_unit_blocks == 0)
        );
        assert_eq!(listed.len(), OPS.len() - unsupported);

        for opcode in 0..=255u8 {
            for sa in 0..32u8 {
                let mut c = [0u8; 16];
                c[0] = opcode;
                c[1] = sa;
                // Allocation/parameter lengths of zero keep every command trivial.
                let got = complete_or_io(run_on(&c, dev, &p, &mut NexusState::empty()));
                let unsupported = got == Some(Sense::invalid_opcode())
                    || got == Some(Sense::invalid_field_in_cdb(1, 4));
                let in_table = listed.contains(&(opcode, u16::from(sa)))
                    || (sa == 0 && listed.contains(&(opcode, 0)));
                let sa_opcode = matches!(opcode, 0x9E | 0xA3);
                if sa_opcode || sa == 0 {
                    assert_eq!(!unsupported, in_table, "opcode {opcode:#04x} sa {sa:#04x}");
                }
            }
        }
    }

    fn complete_or_io(a: Action) -> Option<Sense> {
        match a {
            Action::Complete(c) => c.sense,
            _ => None,
        }
    }

    #[test]
    fn unmapped_lun() {
        let inq = dispatch_unmapped(&cmd(&INQ), &[0, 3]);
        assert_eq!(inq.status, Status::Good);
        assert_eq!(inq.data[0], 0x7F);
        let rl = dispatch_unmapped(&cmd(&RLUNS), &[0, 3]);
        assert_eq!(&rl.data[..4], &[0, 0, 0, 16]);
        assert_eq!(&rl.data[16..18], &[0, 3]);
        let rs = dispatch_unmapped(&cmd(&[0x03, 0, 0, 0, 18, 0]), &[]);
        assert_eq!(rs.status, Status::Good);
        assert_eq!((rs.data[2], rs.data[12]), (0x05, 0x25));
        let tur = dispatch_unmapped(&cmd(&TUR), &[]);
        assert_eq!(tur, Completion::check(Sense::lun_not_supported()));
        let bad = dispatch_unmapped(&cmd(&[0x12, 0x02, 0, 0, 96, 0]), &[]);
        assert_eq!(bad.sense, Some(Sense::invalid_field_in_cdb(1, 1)));
        assert_eq!(
            dispatch_unmapped(&cmd(&[]), &[]),
            Completion::check(Sense::lun_not_supported())
        );
    }

    fn arb_dev() -> impl Strategy<Value = LunDevice> {
        (
            prop_oneof![Just(512u32), Just(4096u32)],
            any::<u64>(),
            any::<bool>(),
            any::<u32>(),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(|(bs, n, ro, max, thin, wce)| LunDevice {
                block_size: bs,
                num_blocks: n,
                read_only: ro,
                max_transfer_blocks: max,
                thin,
                holes_read_zero: wce,
                atomic_unit_blocks: 0,
                write_cache: wce,
                ..disk(bs, n)
            })
    }

    proptest! {
        #[test]
        fn dispatch_never_panics(
            cdb in proptest::collection::vec(any::<u8>(), 0..40),
            dev in arb_dev(),
            data in proptest::collection::vec(any::<u8>(), 0..300),
            state in 0u8..6,
        ) {
            let states = [
                AluaState::ActiveOptimized, AluaState::ActiveNonOptimized, AluaState::Standby,
                AluaState::Unavailable, AluaState::Transitioning, AluaState::Offline,
            ];
            let p = port();
            let lu = LunShared::new().with_port_state(states[usize::from(state)]);
            let mut n = NexusState::new();
            n.observe(&lu);
            let c = cmd(&cdb);
            for _ in 0..2 {
                if let Action::Complete(done) = dispatch(&c, &dev, &lu, &p, &[0, 1, 5000], &mut n) {
                    prop_assert_eq!(done.sense.is_some(), done.status == Status::CheckCondition);
                }
            }
            let _ = dispatch_data_out(&cdb, &data, &dev, &crate::scsi::LunShared::new(), &mut n);
            let _ = dispatch_unmapped(&c, &[0, 1]);
        }

        #[test]
        fn opcode_prefixed_cdbs_never_panic(
            opcode in prop::sample::select(OPS.iter().map(|e| e.opcode).collect::<Vec<_>>()),
            rest in proptest::collection::vec(any::<u8>(), 15),
            dev in arb_dev(),
            data in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let mut cdb = vec![opcode];
            cdb.extend_from_slice(&rest);
            let c = cmd(&cdb);
            let mut n = NexusState::empty();
            let _ = dispatch(&c, &dev, &unit(), &port(), &[0], &mut n);
            let _ = dispatch_data_out(&cdb, &data, &dev, &crate::scsi::LunShared::new(), &mut n);
        }
    }
}
