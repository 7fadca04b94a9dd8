//! Planned shutdown: on SIGTERM trellisd asks every session to log out with
//! an Async Message (event 1, RFC 7143 §11.9.1), serves the Logout, and exits
//! 0 once sessions are gone.

use std::process::Command;

use trellis_iscsi::pdu::{AsyncMessage, LogoutRequest, LogoutResponse, BHS_LEN};
use trellis_tests::raw::{Conn, OP_ASYNC_MESSAGE, OP_LOGOUT_RESPONSE};
use trellis_tests::Trellisd;

#[test]
fn sigterm_asks_sessions_to_log_out_then_exits_zero() {
    let mut d = Trellisd::start_default().unwrap();
    let mut c = Conn::login(d.portal).unwrap();
    c.ping().unwrap();
    let pid = d.pid().unwrap();
    assert!(Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap()
        .success());

    let p = c
        .recv()
        .unwrap()
        .expect("an Async Message before the connection closes");
    assert_eq!(p.opcode(), OP_ASYNC_MESSAGE, "got opcode {:#x}", p.opcode());
    let msg = AsyncMessage::parse(&p.bhs).unwrap();
    assert_eq!(msg.event, 1, "event 1: the target requests logout");
    assert!(msg.param3 > 0, "Parameter3 gives the seconds to log out in");
    assert_eq!(
        msg.statsn, c.statsn,
        "the Async Message carries the next StatSN"
    );

    let itt = c.itt();
    let mut bhs = [0u8; BHS_LEN];
    LogoutRequest {
        immediate: true,
        reason_code: 0,
        total_ahs_len: 0,
        data_segment_len: 0,
        itt,
        cid: 0,
        cmdsn: c.cmdsn,
        exp_statsn: msg.statsn.wrapping_add(1),
    }
    .encode(&mut bhs);
    c.send(&bhs, &[]).unwrap();
    let p = c.recv().unwrap().expect("a Logout Response");
    assert_eq!(p.opcode(), OP_LOGOUT_RESPONSE);
    let resp = LogoutResponse::parse(&p.bhs).unwrap();
    assert_eq!((resp.itt, resp.response), (itt, 0));
    c.expect_closed().unwrap();

    let status = d.terminate().unwrap();
    assert!(status.success(), "exit status {status}\n{}", d.log_text());
    let log = d.log_text();
    assert!(
        log.contains("asking sessions to log out") && log.contains("stopped cleanly"),
        "{log}"
    );
}
