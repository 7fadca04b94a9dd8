//! Task management, logout, keepalive and malformed PDUs.

use super::*;

// --------------------------------------------------------- task management

#[test]
fn abort_task_of_an_in_flight_read_answers_after_disk_done() {
    let mut r = Rig::ready(&Keys::default());
    let cmdsn = r.cmdsn;
    let itt = r.scsi(read10(0, 8), 4096, true, false, &[], true);
    let req = r.disk();
    let DiskOp::Read(buf) = req.op else {
        panic!("read");
    };
    let tmf_itt = r.tmf(1, itt, cmdsn);
    r.nothing(); // the read is still on the disk
    assert_eq!(r.conn.task_count(), 1);
    r.disk_done(req.task, 4096, Some(buf));
    let out = r.output();
    assert_eq!(out.len(), 1, "only the TMF response, no Data-In: {out:?}");
    let t = out[0].tmf();
    assert_eq!((t.itt, t.response), (tmf_itt, 0), "function complete");
    r.statsn_is(t.statsn);
    assert_eq!(r.conn.task_count(), 0);
    // The ITT is free again and the session goes on.
    r.ping();
}

#[test]
fn abort_task_of_a_write_collecting_data_answers_at_once() {
    let mut r = Rig::ready(&Keys::default());
    let cmdsn = r.cmdsn;
    let (itt, t) = write_waiting_for_r2t(&mut r);
    let tmf_itt = r.tmf(1, itt, cmdsn);
    let resp = r.one().tmf();
    assert_eq!((resp.itt, resp.response), (tmf_itt, 0));
    r.statsn_is(resp.statsn);
    assert_eq!(r.conn.task_count(), 0);
    // Late data for the aborted task is dropped, not a protocol error.
    r.data_out(itt, t.ttt, 0, 0, &[0u8; 8192], true);
    r.nothing();
    assert!(!r.conn.should_close());
    assert!(r.conn.next_disk().is_none());
    r.ping();
}

#[test]
fn abort_task_of_an_unknown_task_says_task_does_not_exist() {
    let mut r = Rig::ready(&Keys::default());
    // RefCmdSN not below the TMF's CmdSN: the task was never received.
    let cmdsn = r.cmdsn;
    let tmf_itt = r.tmf(1, 0xdead, cmdsn.wrapping_add(3));
    let resp = r.one().tmf();
    assert_eq!((resp.itt, resp.response), (tmf_itt, 1));
    r.statsn_is(resp.statsn);
}

#[test]
fn query_task_tells_a_live_task_from_a_finished_one() {
    let mut r = Rig::ready(&Keys::default());
    let cmdsn = r.cmdsn;
    let itt = r.scsi(read10(0, 8), 4096, true, false, &[], true);
    let req = r.disk();
    assert_eq!(
        r.tmf_response(9, itt, cmdsn),
        7,
        "FUNCTION SUCCEEDED: the task exists"
    );
    // QUERY TASK SET on the LUN: a task is there.
    assert_eq!(r.tmf_response(10, 0, 0), 7);
    let DiskOp::Read(buf) = req.op else {
        panic!("read");
    };
    r.disk_done(req.task, 4096, Some(buf));
    let out = r.output();
    let last = out
        .last()
        .expect("the read completes: querying aborts nothing");
    r.statsn_is(last.data_in().statsn);
    assert_eq!(
        r.tmf_response(9, itt, cmdsn),
        0,
        "FUNCTION COMPLETE: no such task"
    );
    assert_eq!(r.tmf_response(10, 0, 0), 0);
}

#[test]
fn clear_task_set_aborts_other_sessions_tasks_and_tells_them() {
    let mut a = Rig::ready(&Keys::default());
    let mut b = a.sharing();
    // B has a write waiting for its data.
    let (itt_b, _t) = write_waiting_for_r2t(&mut b);
    assert_eq!(b.conn.task_count(), 1);
    // A clears the task set of the unit.
    assert_eq!(a.tmf_response(4, 0, 0), 0);
    // B notices when its core wakes: the task goes, unanswered.
    b.conn.poll_shared();
    assert_eq!(b.conn.task_count(), 0);
    b.nothing();
    let _ = itt_b;
    // B is told COMMANDS CLEARED BY ANOTHER INITIATOR; A is not.
    let itt = b.scsi([0; 16], 0, false, false, &[], true);
    assert_eq!(status(&mut b, itt), (0x02, Some((0x06, 0x2F, 0x00))));
    let itt = a.scsi([0; 16], 0, false, false, &[], true);
    assert_eq!(status(&mut a, itt), (0, None));
}

#[test]
fn lun_reset_aborts_tasks_of_other_sessions_at_once() {
    let mut a = Rig::ready(&Keys::default());
    let mut b = a.sharing();
    let itt_b = b.scsi(read10(0, 8), 4096, true, false, &[], true);
    let req = b.disk();
    assert_eq!(a.tmf_response(5, 0, 0), 0);
    b.conn.poll_shared();
    // The read's data comes back from the disk after the reset: dropped.
    let DiskOp::Read(buf) = req.op else {
        panic!("read");
    };
    b.disk_done(req.task, 4096, Some(buf));
    b.nothing();
    assert_eq!(b.conn.task_count(), 0);
    let _ = itt_b;
    let itt = b.scsi([0; 16], 0, false, false, &[], true);
    assert_eq!(status(&mut b, itt), (0x02, Some((0x06, 0x29, 0x03))));
}

#[test]
fn target_reset_reaches_every_session_and_i_t_nexus_reset_only_its_own() {
    let mut a = Rig::ready(&Keys::default());
    let mut b = a.sharing();
    assert_eq!(a.tmf_response(6, 0, 0), 0);
    for r in [&mut a, &mut b] {
        let itt = r.scsi([0; 16], 0, false, false, &[], true);
        assert_eq!(status(r, itt), (0x02, Some((0x06, 0x29, 0x03))));
    }
    // I_T NEXUS RESET: A is told of its nexus loss, B hears nothing.
    assert_eq!(a.tmf_response(11, 0, 0), 0);
    let itt = a.scsi([0; 16], 0, false, false, &[], true);
    assert_eq!(status(&mut a, itt), (0x02, Some((0x06, 0x29, 0x07))));
    let itt = b.scsi([0; 16], 0, false, false, &[], true);
    assert_eq!(status(&mut b, itt), (0, None));
}

#[test]
fn clear_aca_completes_and_unknown_functions_are_not_supported() {
    let mut r = Rig::ready(&Keys::default());
    assert_eq!(r.tmf_response(3, 0, 0), 0, "no ACA condition to clear");
    assert_eq!(
        r.tmf_response(8, 0, 0),
        4,
        "TASK REASSIGN needs ErrorRecoveryLevel 2"
    );
    assert_eq!(r.tmf_response(12, 0, 0), 5, "QUERY ASYNCHRONOUS EVENT");
}

// ------------------------------------------------------------------ logout

#[test]
fn logout_answers_then_closes() {
    let mut r = Rig::ready(&Keys::default());
    let itt = r.itt();
    let bhs = encode(|b| {
        LogoutRequest {
            immediate: true,
            reason_code: 0,
            total_ahs_len: 0,
            data_segment_len: 0,
            itt,
            cid: 1,
            cmdsn: r.cmdsn,
            exp_statsn: r.statsn,
        }
        .encode(b)
    });
    r.send(&bhs, &[]);
    let p = r.one();
    let l = p.logout();
    assert_eq!((l.itt, l.response), (itt, 0));
    r.statsn_is(l.statsn);
    assert!(r.conn.should_close());
    assert_eq!(r.conn.closing(), Some(&CloseReason::Logout));
    assert_eq!(r.host.ended, vec![TSIH]);
    // Nothing more is read.
    let mut more = Vec::new();
    write_pdu(&bhs, &[], Digests::default(), &mut more);
    assert_eq!(r.conn.receive(&more, &mut r.host, &r.pool, r.now), 0);
    r.nothing();
}

#[test]
fn logout_for_recovery_is_refused_and_the_session_stays() {
    let mut r = Rig::ready(&Keys::default());
    let itt = r.itt();
    let bhs = encode(|b| {
        LogoutRequest {
            immediate: true,
            reason_code: 2,
            total_ahs_len: 0,
            data_segment_len: 0,
            itt,
            cid: 1,
            cmdsn: r.cmdsn,
            exp_statsn: r.statsn,
        }
        .encode(b)
    });
    r.send(&bhs, &[]);
    let l = r.one().logout();
    assert_eq!((l.itt, l.response), (itt, 2), "recovery not supported");
    r.statsn_is(l.statsn);
    assert!(!r.conn.should_close());
    assert!(r.host.ended.is_empty());
    r.ping();
}

// --------------------------------------------------------------- keepalive

#[test]
fn idle_session_is_pinged_and_kept_when_the_initiator_answers() {
    let mut r = Rig::new(10);
    r.login(&Keys::default());
    r.conn.tick(r.t0 + NOP_INTERVAL);
    r.nothing();
    r.conn.tick(r.t0 + NOP_INTERVAL + MS);
    let p = r.one();
    let n = p.nop_in();
    assert_eq!(n.itt, RESERVED_TAG);
    assert_ne!(n.ttt, RESERVED_TAG);
    assert_eq!(n.statsn, r.statsn, "a ping does not consume a StatSN");
    assert!(p.data.is_empty());
    // No second ping while one is outstanding.
    r.conn.tick(r.t0 + 3 * NOP_INTERVAL);
    r.nothing();
    // A reply with the wrong TTT does not count.
    r.at(3 * NOP_INTERVAL);
    r.nop_out(RESERVED_TAG, n.ttt ^ 1, true, &[]);
    r.nothing();
    r.conn.tick(r.t0 + NOP_INTERVAL + MS + NOP_TIMEOUT + MS);
    assert!(r.conn.should_close(), "wrong-TTT answer is no answer");
    assert_eq!(r.conn.closing(), Some(&CloseReason::Timeout));

    // Again, answering properly this time.
    let mut r = Rig::new(10);
    r.login(&Keys::default());
    r.conn.tick(r.t0 + NOP_INTERVAL + MS);
    let n = r.one().nop_in();
    r.at(NOP_INTERVAL + 2 * MS);
    r.nop_out(RESERVED_TAG, n.ttt, true, &[]);
    r.nothing(); // no NOP-In for an answer
    r.conn.tick(r.t0 + NOP_INTERVAL + 2 * MS + NOP_TIMEOUT);
    // Idle again for longer than the interval: a new ping, not a close.
    assert!(!r.conn.should_close());
    let n2 = r.one().nop_in();
    assert_ne!(n2.ttt, n.ttt, "each ping has its own TTT");
    assert_eq!(n2.statsn, r.statsn);
    r.ping();
}

#[test]
fn unanswered_ping_closes_after_nop_timeout() {
    let mut r = Rig::new(10);
    r.login(&Keys::default());
    let sent = r.t0 + NOP_INTERVAL + MS;
    r.conn.tick(sent);
    r.one().nop_in();
    // Other traffic is no answer to the ping.
    r.at(NOP_INTERVAL + 10 * MS);
    r.ping();
    r.conn.tick(sent + NOP_TIMEOUT);
    assert!(!r.conn.should_close());
    r.conn.tick(sent + NOP_TIMEOUT + MS);
    assert!(r.conn.should_close());
    assert_eq!(r.conn.closing(), Some(&CloseReason::Timeout));
}

// ----------------------------------------------------------- bad input

#[test]
fn unknown_and_target_opcodes_are_rejected_and_the_session_goes_on() {
    let mut r = Rig::ready(&Keys::default());
    for op in [0x1f_u8, 0x21, 0x3f] {
        let mut bhs = [0u8; BHS_LEN];
        bhs[0] = op;
        bhs[1] = 0x80;
        bhs[5..8].copy_from_slice(&[0, 0, 10]); // 10 bytes of data to skip
        bhs[16..20].copy_from_slice(&0x1234_5678_u32.to_be_bytes());
        r.send(&bhs, &[0xee; 10]);
        let p = r.one();
        let rej = p.reject();
        assert_eq!(rej.reason, 0x05, "command not supported for {op:#x}");
        assert_eq!(p.data, bhs, "the Reject carries the offending header");
        r.statsn_is(rej.statsn);
        assert!(!r.conn.should_close());
    }
    r.ping();
}

/// An unknown opcode with 10 bytes of data.
fn unknown_opcode() -> [u8; BHS_LEN] {
    let mut bhs = [0u8; BHS_LEN];
    bhs[0] = 0x1f;
    bhs[1] = 0x80;
    bhs[5..8].copy_from_slice(&[0, 0, 10]);
    bhs
}

#[test]
fn a_flood_of_protocol_errors_drops_the_connection() {
    let mut r = Rig::ready(&Keys::default());
    let bhs = unknown_opcode();
    for _ in 0..MAX_PROTOCOL_ERRORS {
        r.send(&bhs, &[0xee; 10]);
        let rej = r.one().reject();
        assert_eq!(rej.reason, 0x05);
        r.statsn_is(rej.statsn);
        assert!(!r.conn.should_close());
    }
    // One more within the window: no Reject, the connection goes.
    r.send(&bhs, &[0xee; 10]);
    assert!(r.conn.should_close());
    assert_eq!(
        r.conn.closing(),
        Some(&CloseReason::TooManyErrors(MAX_PROTOCOL_ERRORS))
    );
}

#[test]
fn protocol_errors_spread_over_windows_are_tolerated() {
    let mut r = Rig::ready(&Keys::default());
    let bhs = unknown_opcode();
    for round in 0..3 {
        for _ in 0..MAX_PROTOCOL_ERRORS {
            r.send(&bhs, &[0xee; 10]);
            let rej = r.one().reject();
            assert_eq!(rej.reason, 0x05, "round {round}");
            r.statsn_is(rej.statsn);
        }
        r.at((PROTOCOL_ERROR_WINDOW + MS) * (round + 1));
        r.ping();
    }
    assert!(!r.conn.should_close());
}

#[test]
fn oversized_data_segment_is_rejected_and_closes() {
    let mut r = Rig::ready(&Keys::default());
    let bhs = encode(|b| {
        NopOut {
            immediate: true,
            total_ahs_len: 0,
            data_segment_len: TARGET_MRDSL + 4,
            lun: 0,
            itt: 99,
            ttt: RESERVED_TAG,
            cmdsn: r.cmdsn,
            exp_statsn: r.statsn,
        }
        .encode(b)
    });
    // The header alone is enough to decide.
    let used = r.conn.receive(&bhs, &mut r.host, &r.pool, r.now);
    assert_eq!(used, 0);
    let p = r.one();
    let rej = p.reject();
    assert_eq!(rej.reason, 0x04, "protocol error");
    assert_eq!(p.data, bhs);
    r.statsn_is(rej.statsn);
    assert!(r.conn.should_close());
    assert!(matches!(r.conn.closing(), Some(CloseReason::Protocol(_))));
}
