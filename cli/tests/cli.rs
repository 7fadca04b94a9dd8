//! The `trellis` binary against a real management API (the router over the
//! in-memory test service, on an ephemeral port), with a dead endpoint in
//! front of it.

use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Output};
use std::sync::Arc;

use serde_json::Value;
use trellis_control::api::{self, testing::MemoryService};
use trellis_control::service::{ClusterService, ServiceError};

const TOKEN: &str = "integration-token";
const T1: &str = "iqn.2024-01.org.example:t1";
const I1: &str = "iqn.1998-01.com.vmware:host1";

/// Starts the API on 127.0.0.1 in a background runtime; returns its URL.
fn start_api() -> (String, Arc<MemoryService>) {
    let service = Arc::new(MemoryService::default());
    (serve(service.clone()), service)
}

/// Serves the API over `service` on an ephemeral port; returns its URL.
fn serve(service: Arc<MemoryService>) -> String {
    let router = api::router(service, TOKEN.to_owned(), api::Local::default());
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            api::serve_listener(listener, router, std::future::pending())
                .await
                .expect("serve");
        });
    });
    format!("http://{addr}")
}

/// A local port nothing listens on.
fn dead_endpoint() -> String {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr: SocketAddr = l.local_addr().expect("addr");
    drop(l);
    format!("http://{addr}")
}

fn trellis(endpoints: &str, token: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_trellis"))
        .env_remove("TRELLIS_ENDPOINTS")
        .env_remove("TRELLIS_TOKEN")
        .args([
            "--endpoints",
            endpoints,
            "--token",
            token,
            "--timeout",
            "10",
        ])
        .args(args)
        .output()
        .expect("run trellis")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[track_caller]
fn ok(o: Output) -> String {
    assert_eq!(
        o.status.code(),
        Some(0),
        "stdout: {}\nstderr: {}",
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

#[test]
fn falls_over_to_a_live_endpoint() {
    let (live, service) = start_api();
    let endpoints = format!("{},{live}", dead_endpoint());
    let run = |args: &[&str]| trellis(&endpoints, TOKEN, args);

    let out = ok(run(&["device", "create", "d1", "--size", "1GiB", "--thin"]));
    assert!(out.starts_with("created device d1 (1 GiB, uuid "), "{out}");
    assert_eq!(service.config().devices["d1"].size, 1 << 30);
    // The start is random: repeat so that the dead endpoint comes first too.
    for _ in 0..8 {
        let out = ok(run(&["device", "list"]));
        assert!(out.starts_with("NAME"), "{out}");
        assert!(
            out.contains("d1") && out.contains("1 GiB") && out.contains("thin"),
            "{out}"
        );
    }

    let json: Value = serde_json::from_str(&ok(run(&["--json", "device", "list"]))).expect("json");
    assert_eq!(json["devices"][0]["size"], 1u64 << 30);

    ok(run(&["device", "resize", "d1", "--size", "2GiB"]));
    assert_eq!(service.config().devices["d1"].size, 2 << 30);
    ok(run(&["target", "create", T1, "--alias", "first"]));
    ok(run(&["target", "map", T1, "d1", "--lun", "0"]));
    let out = ok(run(&["target", "list"]));
    assert!(out.contains(T1) && out.contains("0:d1"), "{out}");
    let secret = "integration-chap-secret";
    ok(run(&[
        "acl",
        "allow",
        T1,
        I1,
        "--chap-user",
        "host1",
        "--chap-secret",
        secret,
        "--luns",
        "0",
    ]));
    let out = ok(run(&["acl", "list", T1]));
    assert!(out.contains(I1) && out.contains("host1"), "{out}");
    let out = ok(run(&["--json", "acl", "list", T1]));
    assert!(!out.contains(secret), "{out}");
    ok(run(&["acl", "deny", T1, I1]));
    ok(run(&["target", "unmap", T1, "--lun", "0"]));
    ok(run(&["device", "delete", "d1"]));
    assert!(service.config().devices.is_empty());

    let out = ok(run(&["status"]));
    assert!(out.contains("raft term") && out.contains("node 1"), "{out}");
    ok(run(&["member", "list"]));
}

#[test]
fn a_write_whose_answer_was_lost_is_answered_again_not_applied_twice() {
    // Two endpoints of one cluster: the first one tried applies each write
    // but its answer is lost (503), so the CLI resends it to the other.
    let service = Arc::new(MemoryService::default());
    let endpoints = format!("{},{}", serve(service.clone()), serve(service.clone()));
    let run = |args: &[&str]| {
        service.lose_answers(1);
        let out = ok(trellis(&endpoints, TOKEN, args));
        assert_eq!(service.lost_answers(), 0, "the write was not sent");
        out
    };
    let out = run(&["device", "create", "d1", "--size", "1MiB"]);
    let uuid = service.config().devices["d1"].uuid;
    assert!(out.contains(&uuid.to_string()), "{out}");
    run(&["target", "create", T1]);
    run(&["acl", "allow", T1, I1]);
    run(&["acl", "deny", T1, I1]);
    run(&["target", "delete", T1]);
    run(&["device", "delete", "d1"]);
    let config = service.config();
    assert!(config.devices.is_empty() && config.targets.is_empty());
    // Each write was proposed twice and applied once.
    assert_eq!(service.remembered_writes(), 6);
}

#[test]
fn a_write_in_doubt_names_its_key_and_the_key_learns_its_outcome() {
    let service = Arc::new(MemoryService::default());
    let endpoints = format!("{},{}", serve(service.clone()), serve(service.clone()));
    // Every endpoint takes the write and loses the answer: exit 3, and the
    // error names the key to resend it with.
    service.lose_answers(2);
    let create = ["device", "create", "d1", "--size", "1MiB"];
    let o = trellis(&endpoints, TOKEN, &create);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let err = stderr(&o);
    let key = err
        .split_once("--idempotency-key ")
        .map(|(_, k)| k.trim())
        .unwrap_or_else(|| panic!("no key in: {err}"));
    // It had applied, once. Run again with the key: its outcome, not a
    // second create (which would be refused: d1 exists).
    let uuid = service.config().devices["d1"].uuid;
    let mut args = vec!["--idempotency-key", key];
    args.extend(create);
    let out = ok(trellis(&endpoints, TOKEN, &args));
    assert!(out.contains(&uuid.to_string()), "{out}");
    assert_eq!(service.remembered_writes(), 1);
    // A malformed key is refused by the cluster with the reason.
    let o = trellis(
        &endpoints,
        TOKEN,
        &["--idempotency-key", "a b", "target", "create", T1],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("Idempotency-Key"), "{}", stderr(&o));
    // Without a leader nothing was proposed: no key to resend with.
    service.fail_writes(Some(ServiceError::NoLeader));
    let o = trellis(&endpoints, TOKEN, &["target", "create", T1]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(!stderr(&o).contains("--idempotency-key"), "{}", stderr(&o));
}

#[test]
fn refusals_exit_1_with_the_api_message() {
    let (live, _service) = start_api();
    let o = trellis(&live, "wrong-token", &["device", "list"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("401") && err.contains("token"), "{err}");

    let o = trellis(&live, TOKEN, &["device", "delete", "nope"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("no device nope"), "{}", stderr(&o));

    ok(trellis(
        &live,
        TOKEN,
        &["device", "create", "d1", "--size", "1MiB"],
    ));
    let o = trellis(&live, TOKEN, &["device", "create", "d1", "--size", "1MiB"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("already exists"), "{}", stderr(&o));
}

#[test]
fn no_endpoint_exits_3_naming_each() {
    let (dead1, dead2) = (dead_endpoint(), dead_endpoint());
    let o = trellis(&format!("{dead1},{dead2}"), TOKEN, &["status"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains(&dead1) && err.contains(&dead2), "{err}");

    // A member without a Raft leader answers 503: try the next, and fail
    // with exit 3 when none can write.
    let (live, service) = start_api();
    service.fail_writes(Some(ServiceError::NoLeader));
    let o = trellis(
        &format!("{live},{dead1}"),
        TOKEN,
        &["device", "create", "d1", "--size", "1MiB"],
    );
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("no_leader"), "{}", stderr(&o));
}

#[test]
fn usage_errors_exit_2() {
    let live = dead_endpoint();
    for args in [
        &["device", "create", "d1"][..],
        &["device", "create", "d1", "--size", "1XB"],
        &[
            "device",
            "create",
            "d1",
            "--size",
            "1GiB",
            "--block-size",
            "1000",
        ],
        &["acl", "allow", T1, I1, "--chap-user", "u"],
        &["frobnicate"],
    ] {
        let o = trellis(&live, TOKEN, args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
    }
}

#[test]
fn sets_and_device_policies_through_the_cli() {
    let config = api::testing::with_data_members(&["m1", "m2", "m3"]);
    let service = Arc::new(MemoryService::new(config));
    let endpoint = serve(service.clone());
    let run = |args: &[&str]| trellis(&endpoint, TOKEN, args);
    let out = ok(run(&[
        "set",
        "create",
        "s1",
        "--members",
        "m2,m1",
        "--failback",
        "auto",
        "--failback-delay",
        "30",
    ]));
    assert!(out.contains("created set s1: m2, m1"), "{out}");
    ok(run(&[
        "device",
        "create",
        "d1",
        "--size",
        "1MiB",
        "--backing",
        "memory",
        "--set",
        "s1",
        "--policy",
        "aa",
    ]));
    let d = &service.config().devices["d1"];
    assert_eq!(d.set, "s1");
    assert_eq!(d.policy, trellis_control::config::PortPolicy::ActiveActive);
    let out = ok(run(&["device", "list"]));
    assert!(out.contains("s1") && out.contains("active-active"), "{out}");
    ok(run(&["set", "add-member", "s1", "m3", "--position", "0"]));
    let out = ok(run(&["set", "show", "s1"]));
    assert!(
        out.contains("m3, m2, m1") && out.contains("auto (30 s)") && out.contains("d1"),
        "{out}"
    );
    // Refusals name the problem and exit 1; nothing changes.
    let o = run(&["set", "create", "s2", "--members", "m9"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("no member m9"), "{}", stderr(&o));
    let o = run(&["set", "delete", "s1"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("device d1 belongs to it"),
        "{}",
        stderr(&o)
    );
    // A usage error: an unknown policy.
    let o = run(&["device", "set-policy", "d1", "--policy", "bogus"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    ok(run(&[
        "device",
        "set-policy",
        "d1",
        "--set",
        "default",
        "--policy",
        "ap",
        "--others",
        "non-optimized",
    ]));
    ok(run(&["set", "delete", "s1"]));
    let out = ok(run(&["set", "list"]));
    assert!(out.contains("default") && !out.contains("s1"), "{out}");
}
