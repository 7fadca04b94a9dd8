//! Malformed and hostile input against a real trellisd, from a raw TCP
//! initiator built on our own PDU codec.
//!
//! Each test opens a *witness* session before the abuse and checks afterwards
//! that it still answers a NOP-Out ping and that `iscsi-inq` still works: bad
//! input may cost the offending connection, never anybody else. The daemon
//! runs one core so the abusive and the witness connections share a ring and
//! a stall of one would be a stall of all.

use std::io::Write;
use std::net::Shutdown;
use std::time::{Duration, Instant};

use trellis_iscsi::pdu::{write_pdu, Digests, LoginResponse, NopIn, ScsiCommand, Stage, BHS_LEN};
use trellis_tests::{eventually, iscsi_tool, Trellisd, DEFAULT_TARGET};

use trellis_tests::raw::{LOGIN_MRDSL, OP_NOP_IN, REASON_NOT_SUPPORTED, REASON_PROTOCOL_ERROR};

use trellis_tests::raw::{self, Conn};

/// A one-core daemon with a witness session that has answered one ping.
fn setup() -> (Trellisd, Conn) {
    let d = Trellisd::start_with(None, &["--cores", "1"]).expect("start trellisd");
    let mut w = Conn::login(d.portal).expect("witness login");
    w.ping().expect("witness ping");
    (d, w)
}

/// The witness still answers, a real client still works, nothing panicked.
fn others_unharmed(d: &Trellisd, w: &mut Conn) {
    w.ping()
        .unwrap_or_else(|e| panic!("witness session harmed: {e:#}\n{}", d.log_text()));
    let inq = iscsi_tool("iscsi-inq", &[&d.url(DEFAULT_TARGET, 0)])
        .unwrap_or_else(|e| panic!("iscsi-inq failed: {e:#}\n{}", d.log_text()));
    assert!(inq.contains("Vendor:TRELLIS"), "{inq}");
    let log = d.log_text();
    assert!(!log.contains("panicked"), "the daemon panicked:\n{log}");
}

fn nop_bhs(c: &mut Conn) -> [u8; BHS_LEN] {
    let itt = c.itt();
    c.nop_out_bhs(itt, 0)
}

// ------------------------------------------------------------------ truncation

#[test]
fn half_a_bhs_then_close() {
    let (d, mut w) = setup();
    // Before login.
    let mut c = Conn::connect(d.portal).unwrap();
    let bhs = c.login_bhs(
        Stage::LoginOperationalNegotiation,
        Stage::FullFeaturePhase,
        true,
        0,
    );
    c.send_bytes(&bhs[..24]).unwrap();
    c.stream.shutdown(Shutdown::Write).unwrap();
    c.expect_closed().unwrap();
    // In full feature phase.
    let mut c = Conn::login(d.portal).unwrap();
    let bhs = nop_bhs(&mut c);
    c.send_bytes(&bhs[..24]).unwrap();
    c.stream.shutdown(Shutdown::Write).unwrap();
    c.expect_closed().unwrap();
    others_unharmed(&d, &mut w);
}

#[test]
fn half_a_bhs_then_silence_stalls_nobody() {
    let (d, mut w) = setup();
    // In full feature phase: the partial PDU waits, everybody else goes on,
    // and the rest completes it later.
    let mut ff = Conn::login(d.portal).unwrap();
    let itt = ff.itt();
    let bhs = ff.nop_out_bhs(itt, 4);
    let mut pdu = Vec::new();
    write_pdu(&bhs, b"late", Digests::default(), &mut pdu);
    ff.send_bytes(&pdu[..24]).unwrap();
    // Before login: a connection that never finishes its first header.
    let mut lg = Conn::connect(d.portal).unwrap();
    let lbhs = lg.login_bhs(
        Stage::LoginOperationalNegotiation,
        Stage::FullFeaturePhase,
        true,
        0,
    );
    lg.send_bytes(&lbhs[..24]).unwrap();

    others_unharmed(&d, &mut w);

    ff.send_bytes(&pdu[24..]).unwrap();
    let p = ff.recv().unwrap().expect("NOP-In for the completed PDU");
    assert_eq!(p.opcode(), OP_NOP_IN);
    let n = NopIn::parse(&p.bhs).unwrap();
    assert_eq!((n.itt, n.statsn), (itt, ff.statsn));
    assert_eq!(p.data, b"late");
    ff.statsn += 1;
    ff.ping().unwrap();

    // The stalled login is dropped by the login timeout (15 s), silently.
    lg.stream
        .set_read_timeout(Some(Duration::from_secs(45)))
        .unwrap();
    lg.expect_closed().unwrap();
    others_unharmed(&d, &mut w);
}

// ------------------------------------------------------------------- oversize

/// A header announcing a 16 MiB - 1 data segment (the most the 24-bit field
/// holds) in full feature phase: the target answers Reject (protocol error)
/// with the header, before any data arrives, and closes the connection.
#[test]
fn oversized_data_segment_is_rejected_and_the_connection_closed() {
    let (d, mut w) = setup();
    let mut c = Conn::login(d.portal).unwrap();
    let mut bhs = nop_bhs(&mut c);
    bhs[5..8].copy_from_slice(&[0xff, 0xff, 0xff]);
    c.send_bytes(&bhs).unwrap();
    let r = c.expect_reject(REASON_PROTOCOL_ERROR, &bhs).unwrap();
    assert_eq!(r.statsn, c.statsn);
    c.expect_closed().unwrap();

    // The same for a SCSI Command (WRITE(10)) announcing immediate data.
    let mut c = Conn::login(d.portal).unwrap();
    let mut cmd = [0u8; BHS_LEN];
    let mut cdb = [0u8; 16];
    cdb[0] = 0x2a;
    cdb[8] = 8;
    ScsiCommand {
        immediate: false,
        final_bit: true,
        read: false,
        write: true,
        attr: 1,
        total_ahs_len: 0,
        data_segment_len: 16 * 1024 * 1024 - 1,
        lun: 0,
        itt: c.itt(),
        expected_data_transfer_length: 4096,
        cmdsn: c.cmdsn,
        exp_statsn: c.statsn,
        cdb,
    }
    .encode(&mut cmd);
    c.send_bytes(&cmd).unwrap();
    c.expect_reject(REASON_PROTOCOL_ERROR, &cmd).unwrap();
    c.expect_closed().unwrap();
    others_unharmed(&d, &mut w);
}

/// A NOP-Out whose ping data exceeds the MaxRecvDataSegmentLength the target
/// declared at login; one exactly at the limit is echoed.
#[test]
fn nop_out_with_data_above_the_negotiated_limit() {
    let (d, mut w) = setup();
    let mut c = Conn::login(d.portal).unwrap();
    let limit = c.target_mrdsl;
    assert!(
        limit > LOGIN_MRDSL,
        "the target declared its limit: {limit}"
    );
    // At the limit: fine (the echo is not our concern here, only acceptance).
    let itt = c.itt();
    let data = vec![0x5a; 4096];
    let bhs = c.nop_out_bhs(itt, data.len());
    c.send(&bhs, &data).unwrap();
    let p = c.recv().unwrap().expect("NOP-In");
    assert_eq!((p.opcode(), p.data.len()), (OP_NOP_IN, 4096));
    c.statsn += 1;
    // Above it.
    let itt = c.itt();
    let data = vec![0xa5; limit + 512];
    let bhs = c.nop_out_bhs(itt, data.len());
    let mut pdu = Vec::new();
    write_pdu(&bhs, &data, Digests::default(), &mut pdu);
    // The target may close before it has read it all; that is its right.
    let _ = c.stream.write_all(&pdu);
    let r = c.expect_reject(REASON_PROTOCOL_ERROR, &bhs).unwrap();
    assert_eq!(r.statsn, c.statsn);
    c.expect_closed().unwrap();
    others_unharmed(&d, &mut w);
}

// ----------------------------------------------------------- unknown opcodes

/// An undefined opcode (0x1f) and target-only ones (0x21 SCSI Response, 0x3f
/// Reject) in full feature phase: Reject "command not supported" carrying the
/// header, and the connection goes on.
#[test]
fn unknown_and_target_opcodes_are_rejected_and_the_connection_survives() {
    let (d, mut w) = setup();
    let mut c = Conn::login(d.portal).unwrap();
    for (op, data_len) in [(0x1f_u8, 0usize), (0x21, 0), (0x1f, 13), (0x3f, 0)] {
        let itt = c.itt();
        let mut bhs = [0u8; BHS_LEN];
        bhs[0] = op;
        bhs[1] = 0x80;
        bhs[5..8].copy_from_slice(&(data_len as u32).to_be_bytes()[1..]);
        bhs[16..20].copy_from_slice(&itt.to_be_bytes());
        bhs[24..28].copy_from_slice(&c.cmdsn.to_be_bytes());
        c.send(&bhs, &vec![0xcc; data_len]).unwrap();
        let r = c
            .expect_reject(REASON_NOT_SUPPORTED, &bhs)
            .unwrap_or_else(|e| panic!("opcode {op:#04x}: {e:#}"));
        assert_eq!(r.statsn, c.statsn, "a Reject takes the next StatSN");
        c.statsn += 1;
        // Same connection, still in step.
        c.ping().unwrap();
    }
    others_unharmed(&d, &mut w);
}

/// A session sending nothing but unknown opcodes gets a Reject for each
/// of the first 32 at most (the default max_protocol_errors within 10 s),
/// then is dropped; the log carries a line per drop, not one per PDU; an
/// address that keeps doing it waits before its next logins are answered.
#[test]
fn a_flood_of_unknown_opcodes_is_disconnected() {
    let (d, mut w) = setup();
    let mut c = Conn::login(d.portal).unwrap();
    let mut bhs = [0u8; BHS_LEN];
    bhs[0] = 0x1f;
    bhs[1] = 0x80;
    // All at once, as a flooding initiator sends them.
    let flood: Vec<u8> = bhs.repeat(1000);
    // The target may close mid-way: later writes may fail.
    let _ = c.send_bytes(&flood);
    let mut rejects = 0;
    loop {
        match c.recv() {
            Ok(Some(p)) if p.opcode() == 0x3f => rejects += 1,
            Ok(Some(p)) => panic!("unexpected PDU {:#04x}", p.opcode()),
            Ok(None) | Err(_) => break,
        }
    }
    // At most 32 (a reset may discard the last ones unread), never 1000.
    assert!(
        (1..=32).contains(&rejects),
        "{rejects} Rejects before the connection was dropped"
    );
    eventually("the drop is logged", Duration::from_secs(10), || {
        let log = d.log_text();
        log.contains("more than 32 protocol errors")
            .then_some(())
            .ok_or_else(|| d.log_tail(20))
    });
    // Reconnecting does not renew the flood: after three more drops, a new
    // connection from the address waits before its login is answered
    // (0.5 s after the fifth drop: a lower bound).
    for _ in 0..4 {
        let mut c = Conn::login(d.portal).unwrap();
        let _ = c.send_bytes(&flood);
        while let Ok(Some(_)) = c.recv() {}
    }
    eventually("five drops counted", Duration::from_secs(10), || {
        let n = d.log_text().matches("more than 32 protocol errors").count();
        (n >= 5).then_some(()).ok_or(format!("{n} drops logged"))
    });
    let started = Instant::now();
    let mut c = Conn::login(d.portal).unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(450),
        "the login after five drops was not held: {:?}",
        started.elapsed()
    );
    c.ping().unwrap();
    let log = d.log_text();
    assert!(
        !log.contains("rejecting PDUs"),
        "per-PDU lines are debug only"
    );
    others_unharmed(&d, &mut w);
}

// ------------------------------------------------------------------- login

/// Full-feature PDUs before the login completed: the connection is closed,
/// with no answer and no session.
#[test]
fn commands_before_login_close_the_connection() {
    let (d, mut w) = setup();
    // A SCSI Command (INQUIRY) as the very first PDU.
    let mut c = Conn::connect(d.portal).unwrap();
    let mut bhs = [0u8; BHS_LEN];
    let mut cdb = [0u8; 16];
    cdb[0] = 0x12;
    cdb[4] = 36;
    ScsiCommand {
        immediate: false,
        final_bit: true,
        read: true,
        write: false,
        attr: 1,
        total_ahs_len: 0,
        data_segment_len: 0,
        lun: 0,
        itt: 5,
        expected_data_transfer_length: 36,
        cmdsn: 1,
        exp_statsn: 0,
        cdb,
    }
    .encode(&mut bhs);
    c.send(&bhs, &[]).unwrap();
    c.expect_closed().unwrap();

    // A NOP-Out as the first PDU.
    let mut c = Conn::connect(d.portal).unwrap();
    let bhs = nop_bhs(&mut c);
    c.send(&bhs, &[]).unwrap();
    c.expect_closed().unwrap();

    // Security stage done, operational stage skipped: a SCSI Command.
    let mut c = Conn::connect(d.portal).unwrap();
    let text = raw::text(&[
        ("InitiatorName".into(), c.initiator_name()),
        ("TargetName".into(), DEFAULT_TARGET.into()),
        ("SessionType".into(), "Normal".into()),
        ("AuthMethod".into(), "None".into()),
    ]);
    let lbhs = c.login_bhs(
        Stage::SecurityNegotiation,
        Stage::LoginOperationalNegotiation,
        true,
        text.len(),
    );
    c.send(&lbhs, &text).unwrap();
    let p = c.recv().unwrap().expect("login response");
    let r = LoginResponse::parse(&p.bhs).unwrap();
    assert_eq!((r.status_class, r.status_detail), (0, 0));
    assert!(r.transit);
    assert_eq!(r.nsg, Stage::LoginOperationalNegotiation);
    c.send(&bhs, &[]).unwrap();
    c.expect_closed().unwrap();
    others_unharmed(&d, &mut w);
}

/// Login requests that break the stage rules get a Login Response with
/// status 0x0200 (initiator error) and the connection is closed.
#[test]
fn login_stage_violations_are_refused() {
    let (d, mut w) = setup();
    let identity = |c: &Conn| {
        raw::text(&[
            ("InitiatorName".into(), c.initiator_name()),
            ("TargetName".into(), DEFAULT_TARGET.into()),
            ("SessionType".into(), "Normal".into()),
        ])
    };
    // CSG = FullFeaturePhase on the first request.
    let mut c = Conn::connect(d.portal).unwrap();
    let text = identity(&c);
    let bhs = c.login_bhs(
        Stage::FullFeaturePhase,
        Stage::FullFeaturePhase,
        true,
        text.len(),
    );
    c.send(&bhs, &text).unwrap();
    c.expect_login_reject(0x02, 0x00).unwrap();

    // A transition backwards (operational -> security).
    let mut c = Conn::connect(d.portal).unwrap();
    let text = identity(&c);
    let bhs = c.login_bhs(
        Stage::LoginOperationalNegotiation,
        Stage::SecurityNegotiation,
        true,
        text.len(),
    );
    c.send(&bhs, &text).unwrap();
    c.expect_login_reject(0x02, 0x00).unwrap();

    // The reserved stage value 2 as NSG.
    let mut c = Conn::connect(d.portal).unwrap();
    let text = identity(&c);
    let mut bhs = c.login_bhs(
        Stage::LoginOperationalNegotiation,
        Stage::FullFeaturePhase,
        true,
        text.len(),
    );
    bhs[1] = (bhs[1] & !0x03) | 0x02;
    c.send(&bhs, &text).unwrap();
    c.expect_login_reject(0x02, 0x00).unwrap();

    // Back to the security stage after the target moved on to operational.
    let mut c = Conn::connect(d.portal).unwrap();
    let pairs = vec![
        ("InitiatorName".to_owned(), c.initiator_name()),
        ("TargetName".to_owned(), DEFAULT_TARGET.to_owned()),
        ("AuthMethod".to_owned(), "None".to_owned()),
    ];
    let text = raw::text(&pairs);
    let bhs = c.login_bhs(
        Stage::SecurityNegotiation,
        Stage::LoginOperationalNegotiation,
        true,
        text.len(),
    );
    c.send(&bhs, &text).unwrap();
    let p = c.recv().unwrap().expect("login response");
    let r = LoginResponse::parse(&p.bhs).unwrap();
    assert_eq!(
        (r.status_class, r.transit, r.nsg),
        (0, true, Stage::LoginOperationalNegotiation)
    );
    let bhs = c.login_bhs(Stage::SecurityNegotiation, Stage::FullFeaturePhase, true, 0);
    c.send(&bhs, &[]).unwrap();
    c.expect_login_reject(0x02, 0x00).unwrap();

    others_unharmed(&d, &mut w);
}

// ------------------------------------------------------------------ garbage

/// xorshift64*: deterministic garbage without a dependency.
fn garbage(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
        })
        .collect()
}

/// 4 KiB of random bytes as the first thing on a connection. Whatever the
/// first 48 bytes say, the connection ends; where they announce a data
/// segment above the login-phase limit (nearly always), the answer is exactly
/// one Reject (protocol error) carrying them.
#[test]
fn random_garbage_after_connect_closes_only_that_connection() {
    let (d, mut w) = setup();
    let mut exact = 0;
    for seed in 1..=8u64 {
        let g = garbage(seed, 4096);
        let mut c = Conn::connect(d.portal).unwrap();
        c.stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        // The target may close before it has read it all.
        let _ = c.stream.write_all(&g);
        let head: [u8; BHS_LEN] = g[..BHS_LEN].try_into().unwrap();
        let dsl = usize::from(head[5]) << 16 | usize::from(head[6]) << 8 | usize::from(head[7]);
        if dsl > LOGIN_MRDSL {
            exact += 1;
            c.expect_reject(REASON_PROTOCOL_ERROR, &head)
                .unwrap_or_else(|e| panic!("seed {seed}: {e:#}"));
            c.expect_closed()
                .unwrap_or_else(|e| panic!("seed {seed}: {e:#}"));
        } else {
            // Anything may come back first, but the connection must end.
            let mut n = 0;
            while c
                .recv()
                .unwrap_or_else(|e| panic!("seed {seed}: {e:#}"))
                .is_some()
            {
                n += 1;
                assert!(n < 4, "seed {seed}: the target keeps answering garbage");
            }
        }
    }
    assert!(
        exact >= 6,
        "the seeds exercise the exact case ({exact} of 8)"
    );
    others_unharmed(&d, &mut w);
}
