//! fio through its libiscsi engine against a real trellisd: 64 MiB written
//! with crc32c verification and read back, then read back again through a
//! fresh session to prove the data is on the device, not in one session.

use trellis_tests::{fio_filename, fio_run, Trellisd, DEFAULT_TARGET};

fn fio_url(d: &Trellisd) -> String {
    fio_filename(&d.url(DEFAULT_TARGET, 0))
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
