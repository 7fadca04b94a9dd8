//! Access control with real libiscsi clients: per-initiator ACLs, one-way and
//! mutual CHAP, and what a not-allowed initiator can see (nothing).

use std::process::Command;
use std::time::{Duration, Instant};

use trellis_tests::{require_tool, run, Trellisd};

const TARGET: &str = "iqn.2026-11.io.trellis:chap";
const HOST1: &str = "iqn.2026-11.test:host1";
const OTHER: &str = "iqn.2026-11.test:other";

const CONFIG: &str = r#"
portals = ["127.0.0.1:3260"]

[[device]]
name = "d"
size = "64MiB"
memory = true

[[device]]
name = "open"
size = "64MiB"
memory = true

[[target]]
name = "iqn.2026-11.io.trellis:chap"
luns = [{ lun = 0, device = "d" }]

[[target.acl]]
initiator = "iqn.2026-11.test:host1"
chap_user = "host1"
chap_secret = "host1-secret-123"
mutual_user = "trellis"
mutual_secret = "target-secret-456"

[[target]]
name = "iqn.2026-11.io.trellis:open"
luns = [{ lun = 0, device = "open" }]
"#;

/// Runs a libiscsi tool as `initiator`; returns (success, stdout+stderr).
fn tool(tool: &str, initiator: &str, url: &str) -> (bool, String) {
    require_tool(tool);
    let out = run(
        Command::new(tool).args(["-i", initiator, url]),
        Duration::from_secs(30),
    )
    .expect("run a libiscsi tool");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn url(d: &Trellisd, cred: &str, query: &str) -> String {
    format!("iscsi://{cred}{}/{TARGET}/0{query}", d.portal)
}

#[test]
fn mutual_chap_logs_in_and_wrong_secrets_are_refused() {
    let d = Trellisd::start_with(Some(CONFIG), &[]).unwrap();
    let mutual = "?target_user=trellis&target_password=target-secret-456";
    let (ok, out) = tool(
        "iscsi-inq",
        HOST1,
        &url(&d, "host1%host1-secret-123@", mutual),
    );
    assert!(
        ok && out.contains("Vendor:TRELLIS"),
        "mutual CHAP login: {out}"
    );

    // One-way CHAP (the initiator does not ask us to prove ourselves) works too.
    let (ok, out) = tool("iscsi-inq", HOST1, &url(&d, "host1%host1-secret-123@", ""));
    assert!(ok, "one-way CHAP login: {out}");

    let (ok, out) = tool("iscsi-inq", HOST1, &url(&d, "host1%wrong-secret-000@", ""));
    assert!(
        !ok && out.contains("Authentication failure"),
        "wrong secret: {out}"
    );

    let (ok, out) = tool("iscsi-inq", HOST1, &url(&d, "nobody%host1-secret-123@", ""));
    assert!(
        !ok && out.contains("Authentication failure"),
        "wrong user: {out}"
    );

    let (ok, out) = tool("iscsi-inq", HOST1, &url(&d, "", ""));
    assert!(
        !ok && out.contains("Authentication failure"),
        "no CHAP at all: {out}"
    );

    // The initiator checks our answer: a wrong target secret must not match.
    let bad_mutual = "?target_user=trellis&target_password=not-the-target-secret";
    let (ok, out) = tool(
        "iscsi-inq",
        HOST1,
        &url(&d, "host1%host1-secret-123@", bad_mutual),
    );
    assert!(
        !ok && out.contains("Invalid CHAP_R"),
        "mutual CHAP with a wrong target secret: {out}"
    );
}

#[test]
fn a_not_allowed_initiator_sees_nothing_and_gets_nothing() {
    let d = Trellisd::start_with(Some(CONFIG), &[]).unwrap();
    let portal = format!("iscsi://{}", d.portal);
    let (ok, listed) = tool("iscsi-ls", HOST1, &portal);
    assert!(ok, "{listed}");
    assert!(listed.contains(&format!("Target:{TARGET} ")), "{listed}");
    assert!(
        listed.contains("Target:iqn.2026-11.io.trellis:open "),
        "{listed}"
    );

    let (_, listed) = tool("iscsi-ls", OTHER, &portal);
    assert!(
        !listed.contains(TARGET),
        "the ACL'd target leaks to {OTHER}: {listed}"
    );
    assert!(
        listed.contains("Target:iqn.2026-11.io.trellis:open "),
        "open target visible: {listed}"
    );

    // Even with the right credentials of another initiator's entry. It is
    // told what a login to a target that does not exist is told, so an
    // outsider cannot list target names by trying them.
    let (ok, out) = tool("iscsi-inq", OTHER, &url(&d, "host1%host1-secret-123@", ""));
    assert!(!ok && out.contains("Target not found"), "{out}");
    let (ok, refused) = tool("iscsi-inq", OTHER, &url(&d, "", ""));
    assert!(!ok, "{refused}");
    let missing = format!(
        "iscsi://{}/iqn.2026-11.io.trellis:no-such-target/0",
        d.portal
    );
    let (ok, absent) = tool("iscsi-inq", OTHER, &missing);
    assert!(!ok, "{absent}");
    let status = |out: &str| {
        out.lines()
            .find(|l| l.contains("Login Failed") || l.contains("not found"))
            .map(|l| l.replace("no-such-target", "").replace(TARGET, ""))
    };
    assert!(status(&refused).is_some(), "{refused}");
    assert_eq!(
        status(&refused).map(|l| l.replace("iqn.2026-11.io.trellis:", "")),
        status(&absent).map(|l| l.replace("iqn.2026-11.io.trellis:", "")),
        "refused: {refused}\nabsent: {absent}"
    );
    // The log says which it was, for the admin.
    let log = d.log_text();
    assert!(
        log.contains("kind=\"authorization\"") || log.contains("kind=authorization"),
        "{}",
        d.log_tail(10)
    );
    assert!(
        log.contains("kind=\"not_found\"") || log.contains("kind=not_found"),
        "{}",
        d.log_tail(10)
    );
}

/// Wrong CHAP secrets: each refusal is logged with the initiator, its
/// address, the target and the reason; after three, each answer comes
/// later (0.25 s, doubling), so guessing slows to a crawl; the right
/// secret still logs in at once (successes are never held back).
#[test]
fn refused_logins_are_logged_and_slowed() {
    let d = Trellisd::start_with(Some(CONFIG), &[]).unwrap();
    let guess = |i: usize| {
        let started = Instant::now();
        let (ok, out) = tool(
            "iscsi-inq",
            HOST1,
            &url(&d, &format!("host1%wrong-secret-{i:03}@"), ""),
        );
        assert!(
            !ok && out.contains("Authentication failure"),
            "guess {i}: {out}"
        );
        started.elapsed()
    };
    let took: Vec<Duration> = (0..8).map(guess).collect();
    // Guesses 4 to 8 wait at least 0.25 + 0.5 + 1 + 2 + 4 s in all (a
    // lower bound: a loaded machine only adds to it).
    let slowed: Duration = took[3..].iter().sum();
    assert!(slowed >= Duration::from_millis(7_500), "{took:?}");
    let log = d.log_text();
    let refusals: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("login refused"))
        .collect();
    assert_eq!(refusals.len(), 8, "{}", d.log_tail(20));
    for l in &refusals {
        assert!(
            l.contains(HOST1)
                && l.contains("127.0.0.1")
                && l.contains(TARGET)
                && l.contains("authentication"),
            "{l}"
        );
    }
    // The right secret logs in; it clears the name's count, not the
    // address's: a guesser cannot reset its delay by logging in somewhere.
    let (ok, out) = tool("iscsi-inq", HOST1, &url(&d, "host1%host1-secret-123@", ""));
    assert!(ok, "{out}");
    assert!(refusals[7].contains("delay=4s"), "{}", refusals[7]);
    guess(9);
    let log = d.log_text();
    let last = log
        .lines()
        .rfind(|l| l.contains("login refused"))
        .unwrap_or_default();
    assert!(last.contains("delay=8s"), "{last}");
}
