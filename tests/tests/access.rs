//! Access control with real libiscsi clients: per-initiator ACLs, one-way and
//! mutual CHAP, and what a not-allowed initiator can see (nothing).

use std::process::Command;
use std::time::Duration;

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

    // Even with the right credentials of another initiator's entry.
    let (ok, out) = tool("iscsi-inq", OTHER, &url(&d, "host1%host1-secret-123@", ""));
    assert!(!ok && out.contains("Authorization failure"), "{out}");
    let (ok, out) = tool("iscsi-inq", OTHER, &url(&d, "", ""));
    assert!(!ok && out.contains("Authorization failure"), "{out}");
}
