//! Secrets stay private: a member's data directory is 0700 and its
//! configuration database (which holds CHAP secrets) 0600, narrowed where
//! an older install left them wider; device files are created 0600; and
//! the CLI takes CHAP secrets from a file or standard input, so they never
//! show in `ps`, and a host logs in with them.

// Test helpers: a panic is the test failing, with the message in hand.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use trellis_tests::{
    eventually, free_control_port, iscsi_tool, run_id, stable_port, trellis_cli_bin, Trellisd,
};

const HOST: &str = "iqn.2026-12.io.trellis:secrets-host";

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// The CLI with `args`, `stdin` fed to it.
fn cli(endpoint: &str, token: &str, args: &[&str], stdin: &str) -> (i32, String) {
    let mut child = Command::new(trellis_cli_bin())
        .args(["--endpoints", endpoint, "--token", token])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn files_are_private_and_chap_secrets_come_from_files_or_stdin() {
    let run = run_id();
    let token = format!("secrets-test-token-{run}");
    let site = tempfile::tempdir().unwrap();
    let storage = site.path().join("storage");
    std::fs::create_dir(&storage).unwrap();
    // An older install: a world-readable data directory and database.
    let data = tempfile::tempdir().unwrap();
    std::fs::set_permissions(data.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let db = data.path().join("control.redb");
    std::fs::write(&db, b"").unwrap();
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    let data_path = data.path().to_owned();

    let (port, raft, api) = (free_control_port(43..=43), stable_port(), stable_port());
    let text = format!(
        "[cluster]\nid = \"se-{run}\"\nmember = \"m1\"\nkey = \"secrets-test-key-{run}\"\nmdns = false\n\
         storage_dir = \"{}\"\n\
         links = [\n  {{ name = \"a\", addr = \"127.0.1.43:{port}\" }},\n  {{ name = \"b\", addr = \"127.0.2.43:{port}\" }},\n]\n\
         node_id = 1\nraft = \"127.0.0.1:{raft}\"\napi = \"127.0.0.1:{api}\"\napi_token = \"{token}\"\n\
         voters = [ {{ id = 1, raft = \"127.0.0.1:{raft}\" }} ]\n",
        storage.display()
    );
    let m1 = Trellisd::start_in(data, Some(&text), &[]).expect("m1 starts");
    assert_eq!(mode(&data_path), 0o700, "data directory narrowed");
    assert_eq!(mode(&db), 0o600, "configuration database narrowed");

    let ep = format!("127.0.0.1:{api}");
    let target = format!("iqn.2026-12.io.trellis:secrets-{}", std::process::id());
    eventually("m1 takes writes", Duration::from_secs(30), || {
        match cli(
            &ep,
            &token,
            &["device", "create", "s1", "--size", "1MiB"],
            "",
        ) {
            (0, _) => Ok(()),
            (code, out) => Err(format!("{code} {out}")),
        }
    });
    for args in [
        vec!["target", "create", &target],
        vec!["target", "map", &target, "s1", "--lun", "0"],
    ] {
        let (code, out) = cli(&ep, &token, &args, "");
        assert_eq!(code, 0, "{args:?}: {out}");
    }
    let image = storage.join("s1.img");
    eventually("s1.img created", Duration::from_secs(30), || {
        image.exists().then_some(()).ok_or_else(|| m1.log_tail(10))
    });
    assert_eq!(mode(&image), 0o600, "device file");

    // The CHAP secret from a file (its line end dropped), the mutual one
    // from standard input.
    let secret_file = site.path().join("chap-secret");
    std::fs::write(&secret_file, "file-secret-0123\n").unwrap();
    let f = secret_file.display().to_string();
    let allow = [
        "acl",
        "allow",
        &target,
        HOST,
        "--chap-user",
        "host1",
        "--chap-secret-file",
        &f,
        "--mutual-user",
        "tgt",
        "--mutual-secret-file",
        "-",
    ];
    let (code, out) = cli(&ep, &token, &allow, "stdin-secret-4567\n");
    assert_eq!(code, 0, "{out}");
    // Both reach the target: a mutual CHAP login with them succeeds ...
    let url = |user_secret: &str| {
        format!(
            "iscsi://{user_secret}@{}/{target}/0?target_user=tgt&target_password=stdin-secret-4567",
            m1.portal
        )
    };
    eventually(
        "a CHAP login with the secrets from file and stdin",
        Duration::from_secs(30),
        || {
            iscsi_tool("iscsi-inq", &["-i", HOST, &url("host1%file-secret-0123")])
                .map_err(|e| format!("{e:#}"))
                .and_then(|o| o.contains("TRELLIS").then_some(()).ok_or(o))
        },
    );
    // ... and one with the line end kept in the secret fails.
    assert!(iscsi_tool(
        "iscsi-inq",
        &["-i", HOST, &url("host1%file-secret-0123%0A")]
    )
    .is_err());
    // Refusals: a missing file, two secrets from stdin, an empty one.
    let (code, out) = cli(
        &ep,
        &token,
        &[
            "acl",
            "allow",
            &target,
            HOST,
            "--chap-user",
            "u",
            "--chap-secret-file",
            "/nonexistent/s",
        ],
        "",
    );
    assert!(code == 2 && out.contains("/nonexistent/s"), "{code} {out}");
    let (code, out) = cli(
        &ep,
        &token,
        &[
            "acl",
            "allow",
            &target,
            HOST,
            "--chap-user",
            "u",
            "--chap-secret-file",
            "-",
            "--mutual-user",
            "t",
            "--mutual-secret-file",
            "-",
        ],
        "a-secret-00001\nb-secret-00002\n",
    );
    assert!(code == 2 && out.contains("only one secret"), "{code} {out}");
    let (code, out) = cli(
        &ep,
        &token,
        &[
            "acl",
            "allow",
            &target,
            HOST,
            "--chap-user",
            "u",
            "--chap-secret-file",
            "-",
        ],
        "\n",
    );
    assert!(code == 2 && out.contains("is empty"), "{code} {out}");
}
