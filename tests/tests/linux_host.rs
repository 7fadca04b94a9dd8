//! A real Linux host through a Primary's death: QEMU (TCG) boots a Debian
//! bookworm kernel and an initramfs of Debian's open-iscsi, multipath-tools,
//! sg3-utils and fio (tests/host/build-image.sh builds and caches them),
//! with two NICs on QEMU's user-mode networks, each of which reaches this
//! machine's loopback as 10.0.2.2 and 10.0.3.2.
//!
//! Three members serve two devices through one target: an active-passive
//! one (LUN 0) and an active-active one (LUN 1). The host logs in to every
//! member through both NICs (six paths to each LUN) with the shipped
//! examples/host/multipath.conf and iscsid.conf; `multipath -ll` must show
//! the ALUA hardware handler on both maps, the AP map's paths grouped by
//! priority (m1's two paths Active/Optimized, prio 50, first; the Standby
//! paths in a lower group) and the AA map's six paths in one group at prio
//! 50 (every member Active/Optimized). One fio on each map writes with
//! crc32c verification, at the same time, while the Primary (m1) is
//! SIGKILLed; the AA fio writes through m1 and the others before the kill.
//! Both must finish with no I/O error and a clean verify; after the kill
//! the AP map serves through m2 and the AA map through the four paths of
//! m2 and m3, m1's two failed. Each map's longest stretch without a
//! completed I/O around the kill is printed (goal 5 s; reported, not
//! asserted), with the I/Os that took over a second: fio paced by
//! `rate_iops` waits for every I/O in flight before it sleeps, so on the
//! AA map the one I/O that went to m1 as it died (failed over after
//! `fast_io_fail_tmo`) holds the job although m2's and m3's paths serve.
//! `TRELLIS_HOST_FIO_AA_OPTIONS` adds fio options to the AA job, for
//! experiments (e.g. `--numjobs=4 --size=6m --offset_increment=6m
//! --rate_iops=63`: four paced jobs, each with its own I/O in flight).
//!
//! Needs root (the image build), qemu-system-x86_64 and Debian's package
//! archive the first time (the image is cached under
//! `TRELLIS_HOST_CACHE`, default ~/.cache/trellis/host).

// Test helpers: a panic is the test failing, with the message in hand.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use trellis_tests::alua::{self, state};
use trellis_tests::cluster::Cluster;
use trellis_tests::{api_request, eventually, have_tool, run};

const TARGET: &str = "iqn.2026-12.io.trellis:linux-host";
/// The active-passive device (LUN 0) and the active-active one (LUN 1).
const AP_DEV: &str = "vol";
const AA_DEV: &str = "aa";
/// The host's initiator name.
const HOST: &str = "iqn.2026-12.io.trellis:qemu-host";
/// The test's own initiator (RTPG probes).
const PROBE: &str = "iqn.2026-12.io.trellis:linux-host-probe";
/// What each fio writes (then verifies), and at what pace: long enough
/// that the kill falls in the write phase with time to spare after it.
const FIO_SIZE: &str = "24m";
const FIO_RATE_IOPS: u32 = 250;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Builds (or finds cached) the host's kernel and initramfs; their folder.
fn image() -> PathBuf {
    let script = repo().join("tests/host/build-image.sh");
    let started = Instant::now();
    let out = run(&mut Command::new(&script), Duration::from_secs(1200)).expect("build-image.sh");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{} failed: {err}", script.display());
    let dir = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    eprintln!(
        "FIGURE linux-host: image {dir} ready in {:.1} s ({})",
        started.elapsed().as_secs_f64(),
        err.lines().last().unwrap_or("")
    );
    PathBuf::from(dir)
}

/// The QEMU process; killed when dropped.
struct Guest {
    child: Child,
    console: PathBuf,
}

impl Guest {
    fn boot(image: &Path, share: &Path, logs: &Path) -> Guest {
        let console = logs.join("console.log");
        let mut args: Vec<String> = vec![
            "-accel".into(),
            "tcg".into(),
            "-m".into(),
            "1024".into(),
            "-smp".into(),
            "1".into(),
            "-kernel".into(),
            image.join("vmlinuz").display().to_string(),
            "-initrd".into(),
            image.join("initrd.img").display().to_string(),
            "-append".into(),
            "console=ttyS0 panic=-1 net.ifnames=0 quiet".into(),
            "-display".into(),
            "none".into(),
            "-monitor".into(),
            "none".into(),
            "-serial".into(),
            format!("file:{}", console.display()),
            "-no-reboot".into(),
            "-virtfs".into(),
            format!(
                "local,path={},mount_tag=host,security_model=none,id=host",
                share.display()
            ),
        ];
        // Two NICs, each on a user-mode network of its own whose .2 is
        // this machine's loopback; no IPv6, and the guest has no default
        // route: it reaches nothing but the members' portals.
        for (i, net) in ["10.0.2.0/24", "10.0.3.0/24"].iter().enumerate() {
            args.extend([
                "-netdev".into(),
                format!("user,id=n{i},net={net},ipv6=off"),
                "-device".into(),
                format!("virtio-net-pci,netdev=n{i}"),
            ]);
        }
        let child = Command::new("qemu-system-x86_64")
            .args(&args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(logs.join("qemu.out")).unwrap())
            .stderr(std::fs::File::create(logs.join("qemu.err")).unwrap())
            .spawn()
            .expect("start qemu-system-x86_64");
        Guest { child, console }
    }

    /// Whether QEMU still runs.
    fn running(&mut self) -> bool {
        self.child.try_wait().expect("qemu status").is_none()
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Everything the guest told so far, for a failure's message.
fn guest_story(share: &Path, guest: &Guest) -> String {
    let console = read(&guest.console);
    let tail: Vec<&str> = console.lines().rev().take(40).collect();
    format!(
        "--- guest.log ---\n{}\n--- console (last 40 lines) ---\n{}\n\
         --- fio-ap.txt ---\n{}\n--- fio-aa.txt ---\n{}",
        read(&share.join("guest.log")),
        tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
        read(&share.join("fio-ap.txt")),
        read(&share.join("fio-aa.txt"))
    )
}

/// Polls every 100 ms until `file` exists in the share, QEMU still
/// running; panics with the guest's story at `limit`, or when QEMU or the
/// guest's script ended first.
fn wait_file(share: &Path, guest: &mut Guest, file: &str, limit: Duration) {
    let start = Instant::now();
    let path = share.join(file);
    while !path.exists() {
        let ended = share.join("state/exit").exists() && file != "state/exit";
        assert!(
            guest.running() && !ended && start.elapsed() < limit,
            "{file} did not appear (qemu running: {}, the guest's script ended: {ended}, waited {:?})\n{}",
            guest.running(),
            start.elapsed(),
            guest_story(share, guest)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One path group of `multipath -ll`: its priority, status and paths.
#[derive(Debug)]
struct PathGroup {
    prio: u32,
    status: String,
    devs: Vec<MapPath>,
}

/// A path of a map: its device (sdX), its device-mapper state (`active`,
/// `failed`) and multipathd's checker state (`ready`, `ghost`, `faulty`).
#[derive(Debug)]
struct MapPath {
    dev: String,
    dm: String,
    checker: String,
}

fn path_groups(ll: &str) -> Vec<PathGroup> {
    let mut groups: Vec<PathGroup> = Vec::new();
    for line in ll.lines() {
        if line.contains("policy=") {
            let field = |k: &str| {
                line.split_whitespace()
                    .find_map(|w| w.strip_prefix(k))
                    .unwrap_or_default()
                    .to_owned()
            };
            groups.push(PathGroup {
                prio: field("prio=").parse().unwrap_or(0),
                status: field("status="),
                devs: Vec::new(),
            });
        } else if let Some(g) = groups.last_mut() {
            // "| |- 2:0:0:0 sda 8:0 active ready running"
            let words: Vec<&str> = line.split_whitespace().collect();
            if let Some(i) = words.iter().position(|w| w.matches(':').count() == 3) {
                if let (Some(dev), Some(dm), Some(checker)) =
                    (words.get(i + 1), words.get(i + 3), words.get(i + 4))
                {
                    g.devs.push(MapPath {
                        dev: (*dev).to_owned(),
                        dm: (*dm).to_owned(),
                        checker: (*checker).to_owned(),
                    });
                }
            }
        }
    }
    groups
}

/// The port each path (sdX) leads to, from the guest's paths file
/// ("sda 10.0.2.2:3261 active/optimized dh=alua recovery_tmo=3
/// hctl=2:0:0:1").
fn path_ports(paths: &str) -> Vec<(String, u16)> {
    paths
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let dev = w.next()?.to_owned();
            let port = w.next()?.rsplit(':').next()?.parse().ok()?;
            Some((dev, port))
        })
        .collect()
}

/// Completion times (Unix ms) from fio's completion-latency log.
fn completions(log: &str) -> Vec<u64> {
    let mut t: Vec<u64> = log
        .lines()
        .filter_map(|l| l.split(',').next()?.trim().parse().ok())
        .collect();
    t.sort_unstable();
    t
}

/// The completion latencies (ms) in fio's completion-latency log (its
/// second column, in ns).
fn latencies_ms(log: &str) -> Vec<u64> {
    log.lines()
        .filter_map(|l| l.split(',').nth(1)?.trim().parse::<u64>().ok())
        .map(|ns| ns / 1_000_000)
        .collect()
}

/// The longest stretch without a completion: (from, to) in Unix ms.
fn longest_gap(t: &[u64]) -> (u64, u64) {
    t.windows(2)
        .map(|w| (w[0], w[1]))
        .max_by_key(|(a, b)| b - a)
        .unwrap_or((0, 0))
}

/// When (Unix ms) the host's kernel first saw a connection drop, from
/// dmesg and the guest's clock pair (Unix time, uptime).
fn first_conn_error(dmesg: &str, clock: &str) -> Option<u64> {
    let mut c = clock.split_whitespace().map(|v| v.parse::<f64>().ok());
    let (unix, uptime) = (c.next()??, c.next()??);
    let line = dmesg.lines().find(|l| l.contains("detected conn error"))?;
    let stamp: f64 = line
        .strip_prefix('[')?
        .split(']')
        .next()?
        .trim()
        .parse()
        .ok()?;
    Some(((unix - uptime + stamp) * 1000.0) as u64)
}

/// The ALUA state the host's kernel holds for a path (sdX), from the
/// guest's paths file.
fn access_state<'a>(paths: &'a str, dev: &str) -> Option<&'a str> {
    paths.lines().find_map(|l| {
        let mut w = l.split_whitespace();
        (w.next()? == dev).then(|| w.nth(1))?
    })
}

/// Bytes of `device` member `i` wrote to the backing store.
fn written(c: &Cluster, i: usize, device: &str) -> u64 {
    let m = api_request(c.api_ports[i], &c.token, "GET", "/metrics", "", None);
    let name = format!("trellis_device_write_bytes_total{{device=\"{device}\"");
    m.lines()
        .find(|l| l.starts_with(&name))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

/// The longest stall in a map's completion log, printed as a FIGURE
/// line with the I/Os that took over a second (fio paced by `rate_iops`
/// waits for every I/O in flight before it sleeps, so one slow I/O holds
/// the job); its length in ms.
fn stall_figure(map: &str, log: &str, dropped: Option<u64>) -> u64 {
    let t = completions(log);
    assert!(t.len() > 1000, "{map} map: {} completions logged", t.len());
    let (from, to) = longest_gap(&t);
    let slow: Vec<u64> = latencies_ms(log)
        .into_iter()
        .filter(|&ms| ms > 1000)
        .collect();
    eprintln!(
        "FIGURE linux-host: {map} map: {} I/Os completed; longest stall {} ms ({}); \
         I/Os over 1 s: {slow:?} ms",
        t.len(),
        to - from,
        match dropped {
            Some(d) => format!(
                "from {} ms to {} ms after the host saw m1's connection drop",
                from as i64 - d as i64,
                to as i64 - d as i64
            ),
            None => "no connection drop in dmesg".into(),
        }
    );
    to - from
}

#[test]
fn a_linux_host_writes_and_verifies_through_a_primary_kill() {
    let test_started = Instant::now();
    let image = image();
    assert!(
        have_tool("qemu-system-x86_64"),
        "qemu-system-x86_64 is not installed (tests/host/build-image.sh installs it)"
    );

    let mut c = Cluster::start(3);
    c.wait_primary("default", Duration::from_secs(60));
    eventually("every member with a role", Duration::from_secs(30), || {
        let r = c.roles("default");
        let want = (&"m1".into(), &"m2".into(), &serde_json::json!(["m3"]));
        ((&r["primary"], &r["secondary"], &r["alternates"]) == want)
            .then_some(())
            .ok_or(r.to_string())
    });
    for args in [
        vec!["device", "create", AP_DEV, "--size", "256MiB", "--thin"],
        vec![
            "device", "create", AA_DEV, "--size", "256MiB", "--thin", "--policy", "aa",
        ],
        vec!["target", "create", TARGET],
        vec!["target", "map", TARGET, AP_DEV, "--lun", "0"],
        vec!["target", "map", TARGET, AA_DEV, "--lun", "1"],
        vec!["acl", "allow", TARGET, HOST],
        vec!["acl", "allow", TARGET, PROBE],
    ] {
        c.cli(&args);
    }
    // LUN 0 (AP): m1 Active/Optimized, the others Standby; LUN 1 (AA):
    // every member Active/Optimized.
    let want = [state::AO, state::STANDBY, state::STANDBY];
    for (i, m) in c.members.iter().enumerate() {
        for (lun, want) in [(0, want[i]), (1, state::AO)] {
            alua::wait_state(
                m.portal,
                TARGET,
                PROBE,
                lun,
                i as u16 + 1,
                want,
                Duration::from_secs(30),
            );
        }
    }
    let ports: Vec<u16> = c.members.iter().map(|m| m.portal.port()).collect();

    // What the host gets: the shipped settings, as a host administrator
    // installs them.
    // TRELLIS_HOST_KEEP=1 keeps what the guest left, and the members'
    // logs (m1.log...), for a look after.
    let keep = std::env::var_os("TRELLIS_HOST_KEEP").is_some();
    let share = tempfile::Builder::new()
        .prefix("trellis-host-")
        .disable_cleanup(keep)
        .tempdir()
        .unwrap();
    let s = share.path();
    if keep {
        eprintln!("keeping {}", s.display());
    }
    let logs = s.join("qemu");
    std::fs::create_dir_all(&logs).unwrap();
    std::fs::create_dir_all(s.join("etc/iscsi")).unwrap();
    std::fs::create_dir_all(s.join("etc-append/iscsi")).unwrap();
    std::fs::create_dir_all(s.join("state")).unwrap();
    let shipped = |f: &str| std::fs::read_to_string(repo().join("examples/host").join(f)).unwrap();
    // Debian's multipath-tools defaults to find_multipaths "strict" (only
    // WWIDs already known); "yes" takes any device with two paths.
    // TRELLIS_HOST_MULTIPATH_DEFAULTS puts other lines in the defaults
    // section, for experiments with other settings (said on stderr).
    let defaults = match std::env::var("TRELLIS_HOST_MULTIPATH_DEFAULTS") {
        Ok(extra) if !extra.is_empty() => {
            eprintln!("NOT THE SHIPPED SETTINGS: multipath.conf defaults {extra:?}");
            if extra.contains("find_multipaths") {
                extra
            } else {
                format!("find_multipaths yes\n    {extra}")
            }
        }
        _ => "find_multipaths yes".to_owned(),
    };
    // The test's lines go into the shipped defaults section (a section
    // given twice is refused).
    let conf = shipped("multipath.conf");
    assert!(
        conf.contains("\ndefaults {\n"),
        "the shipped multipath.conf has a defaults section"
    );
    std::fs::write(
        s.join("etc/multipath.conf"),
        conf.replacen(
            "\ndefaults {\n",
            &format!("\ndefaults {{\n    {defaults}\n"),
            1,
        ),
    )
    .unwrap();
    std::fs::write(
        s.join("etc/iscsi/initiatorname.iscsi"),
        format!("InitiatorName={HOST}\n"),
    )
    .unwrap();
    // Appended to Debian's iscsid.conf: the later value of a key wins.
    std::fs::write(
        s.join("etc-append/iscsi/iscsid.conf"),
        shipped("iscsid.conf"),
    )
    .unwrap();
    std::fs::copy(repo().join("tests/host/guest.sh"), s.join("guest.sh")).unwrap();
    let port_list: Vec<String> = ports.iter().map(u16::to_string).collect();
    // TRELLIS_HOST_FIO_AA_OPTIONS gives the AA map's fio more options, for
    // experiments (said on stderr).
    let aa_extra = std::env::var("TRELLIS_HOST_FIO_AA_OPTIONS").unwrap_or_default();
    if !aa_extra.is_empty() {
        eprintln!("NOT THE TEST'S fio OPTIONS: the AA map's fio also gets {aa_extra:?}");
    }
    std::fs::write(
        s.join("params"),
        format!(
            "TARGET={TARGET}\nPORTS=\"{}\"\nFIO_SIZE={FIO_SIZE}\nFIO_RATE_IOPS={FIO_RATE_IOPS}\n\
             FIO_AA_EXTRA=\"{aa_extra}\"\n",
            port_list.join(" ")
        ),
    )
    .unwrap();

    let booting = Instant::now();
    let mut guest = Guest::boot(&image, s, &logs);
    wait_file(s, &mut guest, "state/booted", Duration::from_secs(300));
    let boot_wall = booting.elapsed();
    eprintln!(
        "FIGURE linux-host: guest booted in {:.1} s (its uptime then {} s)",
        boot_wall.as_secs_f64(),
        read(&s.join("state/booted")).trim()
    );
    wait_file(s, &mut guest, "state/fio-started", Duration::from_secs(300));
    let fio_seen = Instant::now();
    let fio_done = |s: &Path| ["ap", "aa"].map(|j| s.join(format!("state/fio-{j}-done")).exists());

    // The AP fio writes through m1 (the Primary), the AA one through m1
    // and the others at once: then m1 dies.
    let ap_before = written(&c, 0, AP_DEV);
    let aa_before: Vec<u64> = (0..3).map(|i| written(&c, i, AA_DEV)).collect();
    let aa_through = eventually(
        "the host writing through m1 to both devices, and through m2 or m3 to the AA one",
        Duration::from_secs(120),
        || {
            assert!(guest.running(), "{}", guest_story(s, &guest));
            let ap = written(&c, 0, AP_DEV) - ap_before;
            let aa: Vec<u64> = (0..3)
                .map(|i| written(&c, i, AA_DEV) - aa_before[i])
                .collect();
            (ap > 1 << 20 && aa[0] > 1 << 20 && aa[1] + aa[2] > 1 << 20)
                .then(|| aa.clone())
                .ok_or(format!(
                    "{ap} bytes of {AP_DEV} through m1; {aa:?} of {AA_DEV} through m1, m2, m3"
                ))
        },
    );
    assert_eq!(
        fio_done(s),
        [false, false],
        "a fio finished before the kill\n{}",
        guest_story(s, &guest)
    );
    let killed = Instant::now();
    c.kill(0);
    alua::wait_state(
        c.members[1].portal,
        TARGET,
        PROBE,
        0,
        2,
        state::AO,
        Duration::from_secs(30),
    );
    let to_ao = killed.elapsed();
    eprintln!(
        "FIGURE linux-host: SIGKILL of m1 {:.1} s into fio; m2 Active/Optimized {} ms later \
         (the AA fio had written {} KiB through m1, {} KiB through m2, {} KiB through m3)",
        killed.duration_since(fio_seen).as_secs_f64(),
        to_ao.as_millis(),
        aa_through[0] >> 10,
        aa_through[1] >> 10,
        aa_through[2] >> 10
    );
    assert_eq!(
        fio_done(s),
        [false, false],
        "a fio finished before m2 took over: the kill was not under load\n{}",
        guest_story(s, &guest)
    );
    // The AA device's own change: m1's group Unavailable, m2 and m3 still
    // Active/Optimized.
    eventually(
        "m1's group of the AA device Unavailable through m2",
        Duration::from_secs(30),
        || {
            let r =
                alua::rtpg(c.members[1].portal, TARGET, PROBE, 1).map_err(|e| format!("{e:#}"))?;
            (r.state_of(1) == Some(state::UNAVAILABLE)
                && r.state_of(2) == Some(state::AO)
                && r.state_of(3) == Some(state::AO))
            .then_some(())
            .ok_or(format!("{r:?}"))
        },
    );

    wait_file(s, &mut guest, "state/exit", Duration::from_secs(600));
    if keep {
        for (i, m) in c.members.iter().enumerate() {
            std::fs::write(s.join(format!("m{}.log", i + 1)), m.log_text()).unwrap();
        }
    }
    let story = guest_story(s, &guest);
    let guest_exit = read(&s.join("state/exit")).trim().to_owned();
    let before_ll = read(&s.join("multipath-before.txt"));
    let after_ll = read(&s.join("multipath-after.txt"));
    let aa_before_ll = read(&s.join("multipath-aa-before.txt"));
    let aa_after_ll = read(&s.join("multipath-aa-after.txt"));
    let paths_before = read(&s.join("paths-before.txt"));
    let paths_after = read(&s.join("paths-after.txt"));
    let fio_out = read(&s.join("fio-ap.txt"));
    let fio_exit = read(&s.join("fio-ap-exit")).trim().to_owned();
    let aa_fio_out = read(&s.join("fio-aa.txt"));
    let aa_fio_exit = read(&s.join("fio-aa-exit")).trim().to_owned();
    eprintln!(
        "--- AP map: multipath -ll before the kill ---\n{before_ll}\
         --- AA map: multipath -ll before the kill ---\n{aa_before_ll}--- paths ---\n{paths_before}\
         --- node settings ---\n{}--- AP map: multipath -ll after ---\n{after_ll}\
         --- AA map: multipath -ll after ---\n{aa_after_ll}--- paths ---\n{paths_after}\
         --- fio (AP) ---\n{fio_out}--- fio (AA) ---\n{aa_fio_out}",
        read(&s.join("node-settings.txt"))
    );
    assert_eq!(guest_exit, "0", "the guest's script failed\n{story}");

    // sg_persist through a path to m1 and one to m2 of the AA device: one
    // reservation, and m2's path (another I_T nexus) refused a write.
    let pr = |f: &str| read(&s.join(f));
    eprintln!(
        "--- sg_persist: paths {} --- out ---\n{}--- keys through m2 ---\n{}\
         --- reservation through m2 ---\n{}--- write through m2 ---\n{}\
         --- write through m1 ---\n{}--- keys after CLEAR ---\n{}",
        pr("pr-paths.txt"),
        pr("pr-out.txt"),
        pr("pr-keys-m2.txt"),
        pr("pr-reservation-m2.txt"),
        pr("pr-write-m2.txt"),
        pr("pr-write-m1.txt"),
        pr("pr-keys-after.txt")
    );
    assert!(pr("pr-keys-m2.txt").contains("0x7e57"), "{story}");
    let reservation = pr("pr-reservation-m2.txt");
    assert!(
        reservation.contains("Key=0x7e57") && reservation.contains("Write Exclusive"),
        "{reservation}"
    );
    assert!(
        pr("pr-write-m2.txt").contains("Reservation Conflict"),
        "a write through m2's path: {}",
        pr("pr-write-m2.txt")
    );
    assert!(
        pr("pr-write-m1.txt").contains("SCSI Status: Good")
            || !pr("pr-write-m1.txt").contains("Status:"),
        "the holder's write through m1: {}",
        pr("pr-write-m1.txt")
    );
    assert!(
        pr("pr-keys-after.txt").contains("no registered reservation keys")
            || pr("pr-keys-after.txt").contains("NO registered"),
        "{}",
        pr("pr-keys-after.txt")
    );

    // The AP map: the ALUA handler, m1's two paths first at prio 50, the
    // Standby paths below.
    assert!(before_ll.contains("hwhandler='1 alua'"), "{before_ll}");
    let groups = path_groups(&before_ll);
    let port_of = path_ports(&paths_before);
    let member_of = |dev: &str| -> Option<usize> {
        let (_, p) = port_of.iter().find(|(d, _)| d == dev)?;
        ports.iter().position(|q| q == p)
    };
    assert!(groups.len() >= 2, "{groups:?}\n{before_ll}");
    assert_eq!(
        groups.iter().map(|g| g.devs.len()).sum::<usize>(),
        6,
        "{before_ll}"
    );
    let top = &groups[0];
    assert_eq!(
        (top.prio, top.status.as_str()),
        (50, "active"),
        "{before_ll}"
    );
    assert_eq!(top.devs.len(), 2, "m1's two paths: {before_ll}");
    assert!(
        top.devs
            .iter()
            .all(|p| member_of(&p.dev) == Some(0) && p.dm == "active"),
        "the first group is not m1's two active paths: {groups:?}\n{paths_before}"
    );
    for g in &groups[1..] {
        assert!(g.prio < 50, "{before_ll}");
        assert!(
            g.devs.iter().all(|p| member_of(&p.dev) != Some(0)),
            "{before_ll}"
        );
    }
    // After: the first group's usable paths are m2's two (m1's, failed,
    // may stay listed with the priority they last had).
    let after = path_groups(&after_ll);
    let port_after = path_ports(&paths_after);
    let member_after = |dev: &str| -> Option<usize> {
        let (_, p) = port_after.iter().find(|(d, _)| d == dev)?;
        ports.iter().position(|q| q == p)
    };
    let top_after = after.first().expect("groups after the kill");
    let serving: Vec<Option<usize>> = top_after
        .devs
        .iter()
        .filter(|p| p.dm == "active")
        .map(|p| member_after(&p.dev))
        .collect();
    assert_eq!(
        (top_after.prio, serving),
        (50, vec![Some(1), Some(1)]),
        "the first group after the kill is not m2's: {after_ll}\n{paths_after}"
    );

    // The AA map: the ALUA handler, one group of all six paths at prio 50,
    // two through each member, every one Active/Optimized and in use.
    assert!(
        aa_before_ll.contains("hwhandler='1 alua'"),
        "{aa_before_ll}"
    );
    let aa_groups = path_groups(&aa_before_ll);
    assert_eq!(aa_groups.len(), 1, "{aa_groups:?}\n{aa_before_ll}");
    let g = &aa_groups[0];
    assert_eq!(
        (g.prio, g.status.as_str(), g.devs.len()),
        (50, "active", 6),
        "{aa_before_ll}"
    );
    let mut per_member = [0; 3];
    for p in &g.devs {
        assert_eq!(
            (p.dm.as_str(), p.checker.as_str()),
            ("active", "ready"),
            "{aa_before_ll}"
        );
        assert_eq!(
            access_state(&paths_before, &p.dev),
            Some("active/optimized"),
            "{}: {paths_before}",
            p.dev
        );
        let m = member_of(&p.dev).unwrap_or_else(|| panic!("{}: {paths_before}", p.dev));
        per_member[m] += 1;
    }
    assert_eq!(per_member, [2, 2, 2], "{aa_before_ll}\n{paths_before}");
    // After: m1's two paths failed, the four of m2 and m3 serving in the
    // group in use.
    let aa_after = path_groups(&aa_after_ll);
    let all_after: Vec<(&PathGroup, &MapPath)> = aa_after
        .iter()
        .flat_map(|g| g.devs.iter().map(move |p| (g, p)))
        .collect();
    let m1_paths: Vec<&str> = all_after
        .iter()
        .filter(|(_, p)| member_after(&p.dev) == Some(0))
        .map(|(_, p)| p.dm.as_str())
        .collect();
    assert_eq!(
        m1_paths,
        ["failed", "failed"],
        "m1's paths of the AA map after the kill: {aa_after_ll}\n{paths_after}"
    );
    let others: Vec<(u32, &str, &str, &str, Option<usize>)> = all_after
        .iter()
        .filter(|(_, p)| member_after(&p.dev) != Some(0))
        .map(|(g, p)| {
            (
                g.prio,
                g.status.as_str(),
                p.dm.as_str(),
                p.checker.as_str(),
                member_after(&p.dev),
            )
        })
        .collect();
    assert_eq!(
        others.len(),
        4,
        "the AA map's paths after the kill: {aa_after_ll}\n{paths_after}"
    );
    assert!(
        others.iter().all(|&(prio, status, dm, checker, m)| {
            (prio, status, dm, checker) == (50, "active", "active", "ready")
                && matches!(m, Some(1 | 2))
        }),
        "the four paths of m2 and m3 are not all serving after the kill: {others:?}\n\
         {aa_after_ll}\n{paths_after}"
    );

    // fio: no error, a clean verify, on both maps.
    for (map, exit, out) in [
        ("AP", &fio_exit, &fio_out),
        ("AA", &aa_fio_exit, &aa_fio_out),
    ] {
        assert_eq!(exit, "0", "fio on the {map} map failed\n{story}");
        assert!(out.contains("err= 0"), "{map}: {out}");
        assert!(!out.contains("verify:"), "{map}: {out}");
    }

    // The stalls: the longest stretch without a completion on each map,
    // and where the host's kernel saw m1's connections drop.
    let dropped = first_conn_error(&read(&s.join("dmesg.txt")), &read(&s.join("clock.txt")));
    stall_figure("AP", &read(&s.join("lat-ap.log")), dropped);
    stall_figure("AA", &read(&s.join("lat-aa.log")), dropped);
    eprintln!(
        "FIGURE linux-host: whole test {:.1} s",
        test_started.elapsed().as_secs_f64()
    );
}
