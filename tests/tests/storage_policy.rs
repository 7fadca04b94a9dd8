//! The API token cannot reach past a member's own storage rules: a device
//! whose backing resolves outside `[cluster] storage_dir` (by absolute
//! path, `..` or a symbolic link), an existing file Trellis did not create
//! and that would have to be extended, or an absurd size is refused with
//! the reason through the real CLI and API, and nothing changes on disk
//! (decoy files stand in for system files). A device the configuration
//! already holds is not served where the member's rules (narrowed since)
//! do not allow it, and its file is left as it was.

// Test helpers: a panic is the test failing, with the message in hand.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use trellis_tests::{
    api_request, eventually, free_control_port, stable_port, trellis_cli, Trellisd,
};

/// What stands in for /etc/passwd: 1,221 bytes, as in the report.
fn decoy_bytes() -> Vec<u8> {
    let mut v = b"root:x:0:0:decoy, not a real account:/root:/bin/sh\n".repeat(24);
    v.resize(1221, b'#');
    v
}

/// A one-member cluster (a single voter) whose storage directory is
/// `storage`; unique cluster id and key per run.
fn config(storage: &Path, port: u16, raft: u16, api: u16, token: &str, run: &str) -> String {
    format!(
        "[cluster]\nid = \"sp-{run}\"\nmember = \"m1\"\nkey = \"storage-policy-key-{run}\"\nmdns = false\n\
         storage_dir = \"{}\"\n\
         links = [\n  {{ name = \"a\", addr = \"127.0.1.41:{port}\" }},\n  {{ name = \"b\", addr = \"127.0.2.41:{port}\" }},\n]\n\
         node_id = 1\nraft = \"127.0.0.1:{raft}\"\napi = \"127.0.0.1:{api}\"\napi_token = \"{token}\"\n\
         voters = [ {{ id = 1, raft = \"127.0.0.1:{raft}\" }} ]\n",
        storage.display()
    )
}

#[test]
fn backings_outside_the_members_storage_are_refused_and_nothing_changes() {
    let run = trellis_tests::run_id();
    let token = format!("storage-policy-token-{run}");
    let site = tempfile::tempdir().unwrap();
    let storage = site.path().join("storage");
    let etc = site.path().join("etc");
    std::fs::create_dir(&storage).unwrap();
    std::fs::create_dir(&etc).unwrap();
    let decoy = etc.join("passwd");
    std::fs::write(&decoy, decoy_bytes()).unwrap();
    std::os::unix::fs::symlink(&decoy, storage.join("link.img")).unwrap();
    std::os::unix::fs::symlink(&etc, storage.join("etc")).unwrap();
    let theirs = storage.join("theirs.img");
    std::fs::write(&theirs, decoy_bytes()).unwrap();

    let (port, raft, api) = (free_control_port(41..=41), stable_port(), stable_port());
    let data = tempfile::tempdir().unwrap();
    let text = config(&storage, port, raft, api, &token, &run);
    let mut m1 = Trellisd::start_in(data, Some(&text), &[]).expect("m1 starts");
    let ep = format!("127.0.0.1:{api}");
    let cli = |args: &[&str]| trellis_cli(&ep, &token, args);
    // Writes succeed once the single voter leads.
    eventually("m1 takes writes", Duration::from_secs(30), || {
        match cli(&["device", "create", "ok", "--size", "1MiB"]) {
            (0, _) => Ok(()),
            (code, out) => Err(format!("{code} {out}")),
        }
    });
    let created = storage.join("ok.img");
    // The member creates the file as it applies the configuration.
    let meta = eventually("ok.img created", Duration::from_secs(30), || {
        std::fs::metadata(&created).map_err(|e| format!("{e}\n{}", m1.log_tail(20)))
    });
    let mode = meta.permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "a device file is private to the member");

    let decoy_s = decoy.display().to_string();
    let dotdot = storage.join("../etc/passwd").display().to_string();
    for (backing, why) in [
        (decoy_s.as_str(), "outside this member's storage directory"),
        (dotdot.as_str(), "outside this member's storage directory"),
        ("link.img", "outside this member's storage directory"),
        ("etc/passwd", "outside this member's storage directory"),
        ("etc/new.img", "outside this member's storage directory"),
        ("theirs.img", "that Trellis did not create for this device"),
    ] {
        let (code, out) = cli(&[
            "device",
            "create",
            "x",
            "--size",
            "4096",
            "--backing",
            backing,
        ]);
        assert_eq!(code, 1, "{backing}: {out}");
        assert!(
            out.contains("invalid_backing") && out.contains(why),
            "{backing}: {out}"
        );
        assert!(out.contains("on member m1"), "{backing}: {out}");
    }
    // An absurd size, through the API itself.
    let body = r#"{"name": "huge", "size": 18446744073709551104}"#;
    let answer = api_request(api, &token, "POST", "/v1/devices", "", Some(body));
    assert!(
        answer.starts_with("HTTP/1.1 400") && answer.contains("invalid_size"),
        "{answer}"
    );
    // Nothing changed on disk, and only the good device exists.
    assert_eq!(std::fs::read(&decoy).unwrap(), decoy_bytes());
    assert_eq!(std::fs::read(&theirs).unwrap(), decoy_bytes());
    assert!(!etc.join("new.img").exists());
    assert!(!storage.join("huge.img").exists());
    let (code, list) = cli(&["--json", "device", "list"]);
    assert_eq!(code, 0, "{list}");
    assert!(
        list.contains("\"ok\"") && !list.contains("\"x\"") && !list.contains("\"huge\""),
        "{list}"
    );

    // A device the member's own rules allowed when it was created (the
    // storage directory was wider then) is not served once they exclude
    // it: the replicated configuration cannot widen them.
    m1.terminate().unwrap();
    let wide = config(site.path(), port, raft, api, &token, &run);
    let data = std::mem::replace(&mut m1.dir, tempfile::tempdir().unwrap());
    let mut m1 = Trellisd::start_in(data, Some(&wide), &[]).expect("m1 restarts");
    eventually(
        "the wide member takes writes",
        Duration::from_secs(30),
        || match cli(&[
            "device",
            "create",
            "old",
            "--size",
            "1024",
            "--backing",
            "etc/passwd",
        ]) {
            (0, _) => Ok(()),
            (code, out) => Err(format!("{code} {out}")),
        },
    );
    assert_eq!(
        std::fs::read(&decoy).unwrap(),
        decoy_bytes(),
        "served, not changed"
    );
    m1.terminate().unwrap();
    let narrow = config(&storage, port, raft, api, &token, &run);
    let data = std::mem::replace(&mut m1.dir, tempfile::tempdir().unwrap());
    let m1 = Trellisd::start_in(data, Some(&narrow), &[]).expect("m1 restarts");
    eventually(
        "the narrowed member refuses to serve old",
        Duration::from_secs(30),
        || {
            let metrics = api_request(api, &token, "GET", "/metrics", "", None);
            if metrics.contains("trellis_device_unserved{device=\"old\"} 1") {
                Ok(())
            } else {
                Err(format!("{metrics}\n{}", m1.log_tail(40)))
            }
        },
    );
    assert!(
        m1.log_text()
            .contains("outside this member's storage directory"),
        "{}",
        m1.log_tail(40)
    );
    assert_eq!(std::fs::read(&decoy).unwrap(), decoy_bytes());
}
