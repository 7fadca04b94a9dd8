//! Planned shutdown: on SIGTERM trellisd asks every session to log out with
//! an Async Message (event 1, RFC 7143 §11.9.1), serves the Logout, and exits
//! 0 once sessions are gone.

use std::process::Command;

use trellis_tests::raw::Conn;
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

    let expected_statsn = c.statsn;
    let msg = c.logout_when_asked().unwrap();
    assert!(msg.param3 > 0, "Parameter3 gives the seconds to log out in");
    assert_eq!(
        msg.statsn, expected_statsn,
        "the Async Message carries the next StatSN"
    );

    let status = d.terminate().unwrap();
    assert!(status.success(), "exit status {status}\n{}", d.log_text());
    let log = d.log_text();
    assert!(
        log.contains("asking sessions to log out") && log.contains("stopped cleanly"),
        "{log}"
    );
}
