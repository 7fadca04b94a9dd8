//! The management API of a real member under TLS and under a flood of
//! idle connections: the CLI talks to it over TLS when it trusts the
//! member's CA (and not otherwise, nor in clear); idle connections from
//! one address are capped and closed after the header timeout, the
//! member's memory comes back down, and an admin from another address is
//! served throughout.

// Test helpers: a panic is the test failing, with the message in hand.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use trellis_tests::{
    closed_within, connect_from, eventually, free_control_port, stable_port, trellis_cli_bin,
    Trellisd,
};

/// The CLI with `args` after `--endpoints endpoint --token token`.
fn cli(endpoint: &str, token: &str, extra: &[&str]) -> (i32, String) {
    let out = std::process::Command::new(trellis_cli_bin())
        .args(["--endpoints", endpoint, "--token", token, "--timeout", "10"])
        .args(extra)
        .env_remove("TRELLIS_CA")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn the_cli_speaks_tls_and_idle_connections_are_capped_and_closed() {
    let run = trellis_tests::run_id();
    let token = format!("api-hardening-token-{run}");
    let site = tempfile::tempdir().unwrap();
    let (ca, cert, key) = trellis_tests::test_certificates(site.path()).unwrap();
    let (port, raft, api) = (free_control_port(42..=42), stable_port(), stable_port());
    let text = format!(
        "[cluster]\nid = \"ah-{run}\"\nmember = \"m1\"\nkey = \"api-hardening-key-{run}\"\nmdns = false\n\
         links = [\n  {{ name = \"a\", addr = \"127.0.1.42:{port}\" }},\n  {{ name = \"b\", addr = \"127.0.2.42:{port}\" }},\n]\n\
         node_id = 1\nraft = \"127.0.0.1:{raft}\"\napi = \"127.0.0.1:{api}\"\napi_token = \"{token}\"\n\
         api_tls_cert = \"{}\"\napi_tls_key = \"{}\"\n\
         api_max_connections = 64\napi_max_connections_per_address = 16\napi_header_timeout_secs = 6\n\
         voters = [ {{ id = 1, raft = \"127.0.0.1:{raft}\" }} ]\n",
        cert.display(),
        key.display()
    );
    let m1 = Trellisd::start_with(Some(&text), &[]).expect("m1 starts");
    let https = format!("https://localhost:{api}");
    let ca_s = ca.display().to_string();
    // Over TLS with the CA: served (writes too, once the voter leads).
    eventually("a write over TLS", Duration::from_secs(30), || {
        match cli(
            &https,
            &token,
            &["--ca", &ca_s, "device", "create", "t1", "--size", "1MiB"],
        ) {
            (0, _) => Ok(()),
            (code, out) => Err(format!("{code} {out}")),
        }
    });
    let (code, out) = cli(&https, &token, &["--ca", &ca_s, "--json", "device", "list"]);
    assert!(code == 0 && out.contains("\"t1\""), "{code} {out}");
    // Without the CA the member's certificate is not trusted; in clear the
    // TLS port gives no API.
    let (code, out) = cli(&https, &token, &["member", "list"]);
    assert_eq!(code, 3, "{out}");
    assert!(
        out.to_lowercase().contains("certificate") || out.contains("UnknownIssuer"),
        "{out}"
    );
    let (code, out) = cli(
        &format!("http://127.0.0.1:{api}"),
        &token,
        &["member", "list"],
    );
    assert_ne!(code, 0, "{out}");
    // A bad CA file is a usage error naming it.
    let (code, out) = cli(
        &https,
        &token,
        &["--ca", "/nonexistent/ca.pem", "member", "list"],
    );
    assert!(
        code == 2 && out.contains("/nonexistent/ca.pem"),
        "{code} {out}"
    );

    // A flood of idle connections from one address.
    let pid = m1.pid().unwrap();
    let before = rss_kib(pid);
    let addr: SocketAddr = ([127, 0, 0, 1], api).into();
    let t0 = Instant::now();
    // (This process's own open-file limit bounds the flood.)
    let mut idle: Vec<TcpStream> = (0..900)
        .filter_map(|_| connect_from(7, addr, Duration::from_secs(2)).ok())
        .collect();
    let flood = idle.len();
    assert!(flood > 800, "only {flood} connections opened");
    let during = rss_kib(pid);
    // Past its 16, the address's connections are closed as soon as the
    // member accepts them (well before the header timeout).
    let drained = Instant::now();
    while idle.len() > 16 && drained.elapsed() < Duration::from_secs(4) {
        idle.retain(|s| !closed_within(s, Duration::from_millis(1)));
    }
    let open = idle.len();
    assert!(open <= 16, "{open} idle connections held from one address");
    // An admin from another address is served meanwhile.
    let (code, out) = cli(&https, &token, &["--ca", &ca_s, "member", "list"]);
    assert_eq!(code, 0, "{out}");
    // The held ones are closed after the header timeout.
    for s in &idle {
        assert!(
            closed_within(s, Duration::from_secs(10)),
            "an idle connection outlived the timeout"
        );
    }
    let closed_after = t0.elapsed();
    drop(idle);
    let after = eventually(
        "the member's memory comes back",
        Duration::from_secs(10),
        || {
            let now = rss_kib(pid);
            if now <= before + 8 * 1024 {
                Ok(now)
            } else {
                Err(format!("RSS {now} KiB, {before} KiB before"))
            }
        },
    );
    eprintln!(
        "idle flood: {flood} connections, member RSS {before} KiB before, {during} KiB during, {after} KiB after; all closed after {closed_after:?}"
    );
    let log = m1.log_text();
    let lines = log
        .lines()
        .filter(|l| l.contains("management API connections refused"))
        .count();
    assert!(
        (1..=3).contains(&lines),
        "{lines} refusal lines\n{}",
        m1.log_tail(20)
    );
}
