//! Real libiscsi clients against a real trellisd on its embedded default.

use trellis_tests::{iscsi_tool, Trellisd, DEFAULT_TARGET};

#[test]
fn iscsi_ls_lists_the_default_target_with_its_portal() {
    let d = Trellisd::start_default().unwrap();
    let out = iscsi_tool("iscsi-ls", &[&d.portal_url()]).unwrap();
    assert!(
        out.contains(&format!("Target:{DEFAULT_TARGET} Portal:{},1", d.portal)),
        "iscsi-ls output: {out}"
    );
}

#[test]
fn inquiry_reports_trellis_identity() {
    let d = Trellisd::start_default().unwrap();
    let url = d.url(DEFAULT_TARGET, 0);
    let std = iscsi_tool("iscsi-inq", &[&url]).unwrap();
    assert!(std.contains("Vendor:TRELLIS"), "{std}");
    assert!(
        std.contains("Peripheral Device Type:DIRECT_ACCESS"),
        "{std}"
    );
    assert!(std.contains("TPGS:1"), "{std}");
    let serial = iscsi_tool("iscsi-inq", &["-e", "1", "-c", "128", &url]).unwrap();
    let uuid = std::fs::read_to_string(d.dir.path().join("disk0.uuid")).unwrap();
    let hex: String = uuid.trim().chars().filter(|c| *c != '-').collect();
    assert!(serial.contains(&hex), "serial is the device UUID: {serial}");
    let ids = iscsi_tool("iscsi-inq", &["-e", "1", "-c", "131", &url]).unwrap();
    assert!(
        ids.contains("Designator Type:(3) NAA"),
        "VPD 0x83 has an NAA designator: {ids}"
    );
    assert!(
        ids.contains(&format!("{DEFAULT_TARGET},t,0x0001")),
        "target port name: {ids}"
    );
    assert!(
        ids.contains("Designator Type:(4) RELATIVE_TARGET_PORT"),
        "{ids}"
    );
    assert!(
        ids.contains("Designator Type:(5) TARGET_PORT_GROUP"),
        "{ids}"
    );
}

#[test]
fn identity_survives_a_restart() {
    let mut d = Trellisd::start_default().unwrap();
    let url = d.url(DEFAULT_TARGET, 0);
    let before = iscsi_tool("iscsi-inq", &["-e", "1", "-c", "131", &url]).unwrap();
    assert!(d.terminate().unwrap().success());
    let dir = std::mem::replace(&mut d.dir, tempfile::tempdir().unwrap());
    drop(d);
    let d2 = Trellisd::start_in(dir, None, &[]).unwrap();
    let after = iscsi_tool(
        "iscsi-inq",
        &["-e", "1", "-c", "131", &d2.url(DEFAULT_TARGET, 0)],
    )
    .unwrap();
    let naa = |s: &str| {
        s.lines()
            .filter(|l| l.contains("NAA") || l.contains("Designator:"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(naa(&before), naa(&after));
}

#[test]
fn read_capacity_matches_the_default_device() {
    let d = Trellisd::start_default().unwrap();
    let out = iscsi_tool("iscsi-readcapacity16", &[&d.url(DEFAULT_TARGET, 0)]).unwrap();
    assert!(out.contains("Total size:1073741824"), "{out}");
    assert!(out.contains("LOGICAL BLOCK LENGTH IN BYTES:512"), "{out}");
}

#[test]
fn unknown_target_and_lun_are_refused() {
    let d = Trellisd::start_default().unwrap();
    let bad = iscsi_tool("iscsi-inq", &[&d.url("iqn.2026-11.io.trellis:nope", 0)]);
    assert!(bad.is_err(), "login to an unknown target must fail");
    // LUN 5 is not mapped: INQUIRY answers "not connected" (PQ 3) or the
    // login-time probe fails; never a connected disk.
    if let Ok(s) = iscsi_tool("iscsi-inq", &[&d.url(DEFAULT_TARGET, 5)]) {
        assert!(!s.contains("Peripheral Qualifier:CONNECTED"), "{s}");
    }
}

#[test]
fn sigterm_stops_cleanly_with_exit_zero() {
    let mut d = Trellisd::start_default().unwrap();
    iscsi_tool("iscsi-inq", &[&d.url(DEFAULT_TARGET, 0)]).unwrap();
    let status = d.terminate().unwrap();
    assert!(
        status.success(),
        "exit status {status}; log:\n{}",
        d.log_text()
    );
    assert!(d.log_text().contains("stopped cleanly"), "{}", d.log_text());
}

#[test]
fn bad_config_names_file_line_and_problem() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "portals = [\"127.0.0.1:3260\"]\n[[device]]\nname = \"d\"\nsize = \"12 parsecs\"\nmemory = true\n").unwrap();
    let out = std::process::Command::new(trellis_tests::trellisd_bin())
        .arg("--config")
        .arg(&cfg)
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:3", cfg.display())), "{err}");
    assert!(err.contains("device \"d\""), "{err}");
    assert!(err.contains("unknown size unit"), "{err}");
}
