//! fio through its libiscsi engine against a real trellisd: 64 MiB written
//! with crc32c verification and read back, then read back again through a
//! fresh session to prove the data is on the device, not in one session.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use trellis_tests::{run, Trellisd, DEFAULT_TARGET};

fn fio() -> PathBuf {
    let path = std::env::var_os("FIO")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/trellis/fio/fio")
        });
    assert!(
        path.exists(),
        "fio with libiscsi not found at {} (run benches/fio/build-fio.sh or scripts/test-all.sh)",
        path.display()
    );
    path
}

fn fio_url(d: &Trellisd) -> String {
    d.url(DEFAULT_TARGET, 0).replace(':', "\\:")
}

fn fio_run(args: &[String]) -> String {
    let out = run(Command::new(fio()).args(args), Duration::from_secs(300)).expect("run fio");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "fio failed: {text}");
    assert!(text.contains("err= 0"), "fio reported errors: {text}");
    text
}

#[test]
fn fio_writes_64mib_with_crc32c_verify_and_reads_it_back() {
    let d = Trellisd::start_default().unwrap();
    let common = |name: &str, rw: &str| {
        vec![
            format!("--name={name}"),
            "--ioengine=libiscsi".into(),
            format!("--filename={}", fio_url(&d)),
            format!("--rw={rw}"),
            "--bs=64k".into(),
            "--size=64m".into(),
            "--iodepth=8".into(),
            "--verify=crc32c".into(),
            "--verify_fatal=1".into(),
            "--do_verify=1".into(),
            "--verify_state_save=0".into(),
        ]
    };
    let out = fio_run(&common("write-verify", "write"));
    assert!(out.contains("write-verify"), "{out}");
    let mut args = common("read-verify", "read");
    args.push("--verify_only=1".into());
    fio_run(&args);
    // Random 4 KiB writes at depth 32 with verification exercise R2T-free
    // immediate data and many commands in flight.
    let mut args = vec![
        "--name=rand".to_string(),
        "--ioengine=libiscsi".into(),
        format!("--filename={}", fio_url(&d)),
        "--rw=randwrite".into(),
        "--bs=4k".into(),
        "--size=16m".into(),
        "--offset=128m".into(),
        "--iodepth=32".into(),
        "--verify=crc32c".into(),
        "--verify_fatal=1".into(),
        "--verify_state_save=0".into(),
    ];
    fio_run(&args);
    args.push("--verify_only=1".into());
    args[3] = "--rw=randread".into();
    fio_run(&args);
}
