//! Login to full feature phase, NOP-Out/NOP-In and the CmdSN window.

use super::*;

// -------------------------------------------------------------------- login

#[test]
fn login_enters_full_feature_phase_with_negotiated_values() {
    let mut r = Rig::new(0x1000);
    assert!(!r.conn.is_full_feature());
    assert_eq!(r.conn.tsih(), None);
    let keys = Keys {
        mrdsl: 4096,
        max_burst: 16384,
        first_burst: 8192,
        initial_r2t: true,
        immediate_data: true,
        max_r2t: 2,
    };
    let (resp, pairs) = r.login(&keys);
    assert_eq!(resp.tsih, TSIH);
    assert_eq!(resp.itt, 7);
    assert_eq!(resp.isid, [0x80, 0, 0, 0, 0, 1]);
    assert_eq!(
        (resp.csg, resp.nsg),
        (Stage::LoginOperationalNegotiation, Stage::FullFeaturePhase)
    );
    assert_eq!(resp.exp_cmdsn, 0x1000);
    assert_eq!(resp.max_cmdsn, 0x1000 + WINDOW - 1);
    let get = |k: &str| {
        pairs
            .iter()
            .find(|(pk, _)| pk == k)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(get("MaxRecvDataSegmentLength"), Some("8192"), "{pairs:?}");
    assert_eq!(get("MaxBurstLength"), Some("16384"));
    assert_eq!(get("MaxOutstandingR2T"), Some("2"));
    assert_eq!(r.conn.tsih(), Some(TSIH));
    assert_eq!(r.host.allocated.len(), 1);
    assert_eq!(r.host.allocated[0].target.as_deref(), Some(TGT));
    assert_eq!(r.host.allocated[0].initiator_name, INI);
    let p = r.params().clone();
    assert_eq!(p.max_recv_data_segment_length_initiator, 4096);
    assert_eq!(p.max_recv_data_segment_length_target, TARGET_MRDSL);
    assert_eq!((p.max_burst_length, p.first_burst_length), (16384, 8192));
    assert!(p.initial_r2t && p.immediate_data);
    assert_eq!(p.max_outstanding_r2t, 2);
    // The session now accepts data segments up to our declaration, not 8 KiB
    // of the login phase.
    assert_eq!(
        r.conn.max_pdu_len(),
        BHS_LEN + 1024 + 4 + TARGET_MRDSL as usize + 4
    );
    // StatSN continues from the login response, one per response.
    let first = resp.statsn;
    let a = r.ping();
    let b = r.ping();
    assert_eq!(
        (a.statsn, b.statsn),
        (first.wrapping_add(1), first.wrapping_add(2))
    );
    // Immediate pings do not move the window.
    assert_eq!((b.exp_cmdsn, b.max_cmdsn), (0x1000, 0x1000 + WINDOW - 1));
}

#[test]
fn login_through_security_stage_keeps_statsn_sequence() {
    let mut r = Rig::new(77);
    let mut sec = Vec::new();
    push_pair(&mut sec, "InitiatorName", INI);
    push_pair(&mut sec, "TargetName", TGT);
    push_pair(&mut sec, "SessionType", "Normal");
    push_pair(&mut sec, "AuthMethod", "None");
    let bhs = r.login_request(
        Stage::SecurityNegotiation,
        Stage::LoginOperationalNegotiation,
        true,
        sec.len(),
    );
    r.send(&bhs, &sec);
    let p = r.one();
    let first = p.login();
    assert_eq!((first.status_class, first.status_detail), (0, 0));
    assert!(first.transit);
    assert_eq!(
        (first.csg, first.nsg),
        (
            Stage::SecurityNegotiation,
            Stage::LoginOperationalNegotiation
        )
    );
    assert_eq!(first.tsih, 0, "TSIH only in the final response");
    assert!(!r.conn.is_full_feature());
    let text = op_text(&Keys::default());
    let bhs = r.login_request(
        Stage::LoginOperationalNegotiation,
        Stage::FullFeaturePhase,
        true,
        text.len(),
    );
    r.send(&bhs, &text);
    let last = r.one().login();
    assert_eq!(last.statsn, first.statsn.wrapping_add(1));
    assert_eq!(last.tsih, TSIH);
    assert_eq!((last.exp_cmdsn, last.max_cmdsn), (77, 77 + WINDOW - 1));
    assert!(r.conn.is_full_feature());
    r.statsn = last.statsn.wrapping_add(1);
    r.ping();
}

#[test]
fn non_login_pdu_before_login_closes_without_answer() {
    let mut r = Rig::new(1);
    r.nop_out(9, RESERVED_TAG, true, &[]);
    r.nothing();
    assert!(r.conn.should_close());
    assert!(matches!(r.conn.closing(), Some(CloseReason::Protocol(_))));
    assert!(!r.conn.is_full_feature());
    assert!(r.host.allocated.is_empty());
}

#[test]
fn login_with_reserved_stage_gets_an_initiator_error_login_response() {
    let mut r = Rig::new(1);
    let text = op_text(&Keys::default());
    let mut bhs = r.login_request(
        Stage::LoginOperationalNegotiation,
        Stage::FullFeaturePhase,
        true,
        text.len(),
    );
    bhs[1] = (bhs[1] & !0x03) | 0x02; // NSG = 2 (reserved)
    r.send(&bhs, &text);
    let p = r.one();
    let resp = p.login();
    assert_eq!((resp.status_class, resp.status_detail), (0x02, 0x00));
    assert_eq!(resp.itt, 7);
    assert!(r.conn.should_close());
    assert!(!r.conn.is_full_feature());
}

#[test]
fn login_times_out() {
    let mut r = Rig::new(1);
    r.conn.tick(r.t0 + LOGIN_TIMEOUT);
    assert!(!r.conn.should_close());
    r.conn.tick(r.t0 + LOGIN_TIMEOUT + MS);
    assert!(r.conn.should_close());
    assert_eq!(r.conn.closing(), Some(&CloseReason::LoginFailed));
}

// --------------------------------------------------------- NOP and CmdSN

#[test]
fn nop_out_ping_echoes_data_and_lun() {
    let mut r = Rig::ready(&Keys::default());
    let data = pattern(1001, 3); // not a multiple of 4: padding must be stripped
    let itt = r.itt();
    let cmdsn = r.cmdsn;
    let bhs = encode(|b| {
        NopOut {
            immediate: false,
            total_ahs_len: 0,
            data_segment_len: data.len() as u32,
            lun: 0x0001_0000_0000_0000,
            itt,
            ttt: RESERVED_TAG,
            cmdsn,
            exp_statsn: r.statsn,
        }
        .encode(b)
    });
    r.cmdsn += 1;
    r.send(&bhs, &data);
    let p = r.one();
    let n = p.nop_in();
    assert_eq!(n.itt, itt);
    assert_eq!(n.ttt, RESERVED_TAG);
    assert_eq!(n.lun, 0x0001_0000_0000_0000);
    assert_eq!(n.data_segment_len, 1001);
    assert_eq!(p.data, data);
    r.statsn_is(n.statsn);
    // A non-immediate NOP-Out consumed its CmdSN.
    assert_eq!((n.exp_cmdsn, n.max_cmdsn), (cmdsn + 1, cmdsn + WINDOW));
}

#[test]
fn cmdsn_window_moves_on_non_immediate_commands_only() {
    let mut r = Rig::ready(&Keys::default());
    // clear_ua consumed 0x1000.
    let exp = 0x1001;
    let n = r.ping();
    assert_eq!((n.exp_cmdsn, n.max_cmdsn), (exp, exp + WINDOW - 1));

    // An immediate SCSI command carries ExpCmdSN and does not advance it.
    let itt = r.itt();
    r.scsi_raw(itt, exp, true, inquiry(36), 36, true, false, &[], true);
    let p = r.one();
    let d = p.data_in();
    assert_eq!(
        (d.itt, d.exp_cmdsn, d.max_cmdsn),
        (itt, exp, exp + WINDOW - 1)
    );
    r.statsn_is(d.statsn);

    // Ahead of ExpCmdSN, a duplicate, and beyond MaxCmdSN: all ignored.
    for cmdsn in [exp + 1, exp - 1, exp + WINDOW, exp + 0x8000_0000] {
        let itt = r.itt();
        r.scsi_raw(itt, cmdsn, false, read10(0, 1), 512, true, false, &[], true);
        r.nothing();
        assert!(r.conn.next_disk().is_none(), "CmdSN {cmdsn:#x} ignored");
        assert_eq!(r.conn.task_count(), 0);
    }
    assert!(!r.conn.should_close());
    let n = r.ping();
    assert_eq!(n.exp_cmdsn, exp, "ignored commands did not move the window");

    // The in-order one executes and advances the window by exactly one.
    let itt = r.itt();
    r.scsi_raw(itt, exp, false, inquiry(36), 36, true, false, &[], true);
    let d = r.one().data_in();
    assert_eq!(d.itt, itt);
    r.statsn_is(d.statsn);
    assert_eq!((d.exp_cmdsn, d.max_cmdsn), (exp + 1, exp + WINDOW));
}

#[test]
fn cmdsn_window_wraps() {
    let mut r = Rig::new(u32::MAX - 1);
    r.login(&Keys::default());
    r.clear_ua(); // u32::MAX - 1
    let itt = r.scsi(inquiry(36), 36, true, false, &[], true); // u32::MAX
    let d = r.one().data_in();
    assert_eq!(d.itt, itt);
    r.statsn_is(d.statsn);
    assert_eq!((d.exp_cmdsn, d.max_cmdsn), (0, WINDOW - 1));
    let itt = r.scsi(inquiry(36), 36, true, false, &[], true); // 0
    let d = r.one().data_in();
    assert_eq!(d.itt, itt);
    r.statsn_is(d.statsn);
    assert_eq!((d.exp_cmdsn, d.max_cmdsn), (1, WINDOW));
}
