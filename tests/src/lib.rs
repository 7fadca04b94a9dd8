//! Integration-test fixtures: a real `trellisd` process on loopback, and
//! helpers to run libiscsi's command-line clients against it.
//!
//! The tests need `trellisd` built in the same profile (the test script
//! builds it first) and libiscsi's tools on PATH (`apt-get install
//! libiscsi-bin`); `TRELLISD` overrides the binary's path.

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

pub mod alua;
pub mod cluster;
pub mod netns;
pub mod raw;
pub mod writer;

/// The default target's name.
pub const DEFAULT_TARGET: &str = "iqn.2026-11.io.trellis:default";
/// libiscsi's test initiator names.
pub const INITIATOR: &str = "iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test";
/// A second initiator name (for iscsi-test-cu's second session).
pub const INITIATOR2: &str = "iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test-2";

/// Path of the trellisd binary under test.
pub fn trellisd_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("TRELLISD") {
        return PathBuf::from(p);
    }
    // target/<profile>/deps/<test exe> -> target/<profile>/trellisd
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target profile directory");
    dir.join("trellisd")
}

/// Path of the `trellis` CLI binary (built beside trellisd; `TRELLIS_CLI`
/// overrides).
pub fn trellis_cli_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("TRELLIS_CLI") {
        return PathBuf::from(p);
    }
    trellisd_bin().with_file_name("trellis")
}

/// Runs the `trellis` CLI against `endpoints` with `token`; its exit code
/// and stdout followed by stderr.
pub fn trellis_cli(endpoints: &str, token: &str, args: &[&str]) -> (i32, String) {
    let out = Command::new(trellis_cli_bin())
        .args(["--endpoints", endpoints, "--token", token])
        .args(args)
        .output()
        .expect("run trellis");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

/// One HTTP/1.1 request to the management API on 127.0.0.1:`port` with
/// bearer `token`, an extra header line `header` (or none) and a JSON
/// body; the whole answer, status line and headers included.
pub fn api_request(
    port: u16,
    token: &str,
    method: &str,
    path: &str,
    header: &str,
    body: Option<&str>,
) -> String {
    api_request_at("127.0.0.1", port, token, method, path, header, body)
}

/// [`api_request`] to the API on `host`:`port`.
pub fn api_request_at(
    host: &str,
    port: u16,
    token: &str,
    method: &str,
    path: &str,
    header: &str,
    body: Option<&str>,
) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect((host, port)).expect("connect to the API");
    // A stuck API fails the test instead of hanging it.
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("read timeout");
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n"
    );
    if !header.is_empty() {
        head.push_str(header);
        head.push_str("\r\n");
    }
    if let Some(b) = body {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    head.push_str("\r\n");
    head.push_str(body.unwrap_or(""));
    s.write_all(head.as_bytes()).expect("send to the API");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read the API's answer");
    out
}

/// Waits (up to 30 s) until `trellis device list` through `endpoint` lists
/// every device of `names`; a failure shows the last answer and the log
/// tails of `members`.
pub fn wait_devices_listed(endpoint: &str, token: &str, names: &[&str], members: &[&Trellisd]) {
    let what = format!("{names:?} not all listed by {endpoint}");
    eventually(&what, Duration::from_secs(30), || {
        let (code, out) = trellis_cli(endpoint, token, &["--json", "device", "list"]);
        if code == 0 && names.iter().all(|n| out.contains(&format!("\"{n}\""))) {
            return Ok(());
        }
        let logs: String = members.iter().map(|m| m.log_tail(60)).collect();
        Err(format!("exit {code}: {out}\n{logs}"))
    });
}

/// A UDP port free on 127.0.1.`h` and 127.0.2.`h` (the two loopback
/// "networks" of the cluster tests) for every host `h` in `hosts`; outside
/// the ephemeral range, like [`stable_port`].
pub fn free_control_port(hosts: std::ops::RangeInclusive<u8>) -> u16 {
    for _ in 0..200 {
        let Some(port) = below_ephemeral_range() else {
            continue;
        };
        let free = hosts.clone().all(|h| {
            [1, 2]
                .iter()
                .all(|net| std::net::UdpSocket::bind(format!("127.0.{net}.{h}:{port}")).is_ok())
        });
        if free {
            return port;
        }
    }
    panic!("no free control port below the ephemeral range");
}

/// A TCP port free on loopback for a daemon that must bind the same port
/// again when it restarts (its Raft and API addresses are in its config).
///
/// It lies below the kernel's ephemeral range: a port from that range can
/// be taken meanwhile as the local port of any client connection, and that
/// connection's TIME_WAIT then refuses the restarted daemon's bind for a
/// minute (even with SO_REUSEADDR), which made restart tests flaky on a
/// busy machine.
pub fn stable_port() -> u16 {
    for _ in 0..200 {
        let Some(port) = below_ephemeral_range() else {
            continue;
        };
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free TCP port below the ephemeral range");
}

/// A random port in [10000, start of the ephemeral range) not handed out
/// before by this process (a test asks for several before any is bound);
/// `None` when the draw was one handed out already.
fn below_ephemeral_range() -> Option<u16> {
    use std::hash::{BuildHasher, Hasher};
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    // Where the kernel's range starts; a machine configured with ephemeral
    // ports below 11000 gets 32768, Linux's default (and may then collide).
    let low: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .filter(|&low| low > 11000)
        .unwrap_or(32768);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    let span = u64::from(low - 10000);
    let port = 10000 + u16::try_from(h.finish() % span).unwrap_or(0);
    let mut handed = HANDED_OUT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if handed.contains(&port) {
        return None;
    }
    handed.push(port);
    Some(port)
}

/// Whether a libiscsi tool is installed.
pub fn have_tool(name: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Panics with a clear message when a required client tool is missing:
/// tests must not pass silently without their real client.
pub fn require_tool(name: &str) {
    assert!(
        have_tool(name),
        "{name} is not installed; run the test script (it installs libiscsi-bin) or `apt-get install libiscsi-bin`"
    );
}

/// A free TCP port on loopback (bound and released; the daemon takes it next).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

/// The daemon's log filter: `RUST_LOG`, or `info`, always with trellisd's
/// own info lines (the fixtures wait for some of them).
fn log_filter() -> String {
    match std::env::var("RUST_LOG") {
        Ok(v) if !v.contains("trellisd") => format!("{v},trellisd=info"),
        Ok(v) => v,
        Err(_) => "info".to_owned(),
    }
}

/// A running trellisd.
#[derive(Debug)]
pub struct Trellisd {
    child: Option<Child>,
    /// Where it listens.
    pub portal: SocketAddr,
    /// Its data directory (removed on drop).
    pub dir: tempfile::TempDir,
    log: PathBuf,
}

impl Trellisd {
    /// Starts the embedded default configuration on a free loopback port.
    pub fn start_default() -> Result<Self> {
        Self::start_with(None, &[])
    }

    /// Starts with an optional config text and extra arguments.
    pub fn start_with(config: Option<&str>, extra: &[&str]) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("trellis-test-")
            .tempdir_in(std::env::temp_dir())?;
        Self::start_in(dir, config, extra)
    }

    /// Starts in a given data directory (to restart over the same data).
    pub fn start_in(
        mut dir: tempfile::TempDir,
        config: Option<&str>,
        extra: &[&str],
    ) -> Result<Self> {
        let mut last = None;
        for _ in 0..5 {
            let port = free_port();
            let portal: SocketAddr = ([127, 0, 0, 1], port).into();
            let log = dir.path().join(format!("trellisd-{port}.log"));
            let mut cmd = Command::new(trellisd_bin());
            cmd.arg("--data-dir")
                .arg(dir.path())
                .arg("--portal")
                .arg(portal.to_string())
                .args(extra)
                .env("RUST_LOG", log_filter())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log)?);
            if let Some(text) = config {
                let path = dir.path().join("trellisd.toml");
                std::fs::write(&path, text)?;
                cmd.arg("--config").arg(&path);
            }
            let child = cmd
                .spawn()
                .with_context(|| format!("cannot start {}", trellisd_bin().display()))?;
            let mut d = Self {
                child: Some(child),
                portal,
                dir,
                log,
            };
            match d.wait_ready(Duration::from_secs(15)) {
                Ok(()) => return Ok(d),
                Err(e) => {
                    last = Some(format!("{e:#}\n{}", d.log_text()));
                    d.kill();
                    dir = d.take_dir();
                }
            }
        }
        bail!("trellisd did not start: {}", last.unwrap_or_default())
    }

    /// Starts a witness (no portal) in `dir` with `config`; ready when it
    /// logs that it serves.
    pub fn start_witness(dir: tempfile::TempDir, config: &str) -> Result<Self> {
        let log = dir.path().join("trellisd-witness.log");
        let path = dir.path().join("trellisd.toml");
        std::fs::write(&path, config)?;
        let child = Command::new(trellisd_bin())
            .arg("--data-dir")
            .arg(dir.path())
            .arg("--config")
            .arg(&path)
            .arg("--witness")
            .env("RUST_LOG", log_filter())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .with_context(|| format!("cannot start {}", trellisd_bin().display()))?;
        let d = Self {
            child: Some(child),
            portal: ([127, 0, 0, 1], 0).into(),
            dir,
            log,
        };
        let start = Instant::now();
        while !d.log_text().contains("serving as a witness") {
            if start.elapsed() > Duration::from_secs(15) {
                bail!("the witness did not start:\n{}", d.log_text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(d)
    }

    fn take_dir(mut self) -> tempfile::TempDir {
        self.child = None;
        std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir"))
    }

    fn wait_ready(&mut self, limit: Duration) -> Result<()> {
        let start = Instant::now();
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    bail!("trellisd exited early with {status}");
                }
            }
            // Serving once the portal opens and the daemon says so (a
            // cluster member logs it after its Raft and API listeners).
            let open = TcpStream::connect_timeout(&self.portal, Duration::from_millis(200)).is_ok();
            if open && self.log_text().contains("trellisd serving") {
                return Ok(());
            }
            if start.elapsed() > limit {
                if open {
                    bail!(
                        "portal {} opened, but trellisd did not log \"trellisd serving\" within {limit:?}",
                        self.portal
                    );
                }
                bail!("portal {} did not open within {limit:?}", self.portal);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// iSCSI URL of `target` LUN `lun` on this daemon.
    pub fn url(&self, target: &str, lun: u16) -> String {
        format!("iscsi://{}/{target}/{lun}", self.portal)
    }

    /// iSCSI URL of the portal (for discovery).
    pub fn portal_url(&self) -> String {
        format!("iscsi://{}", self.portal)
    }

    /// The daemon's log so far.
    pub fn log_text(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// The last `lines` lines of the daemon's log, headed by its portal:
    /// what a failing cluster test shows of each member.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = self.log_text();
        let all: Vec<&str> = text.lines().collect();
        let from = all.len().saturating_sub(lines);
        format!(
            "--- trellisd {} (pid {:?}), last {} lines ---\n{}\n",
            self.portal,
            self.pid(),
            all.len() - from,
            all[from..].join("\n")
        )
    }

    /// Process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends `signal` (`STOP`, `CONT`, ...) to the process.
    pub fn signal(&self, signal: &str) {
        if let Some(pid) = self.pid() {
            let ok = Command::new("kill")
                .arg(format!("-{signal}"))
                .arg(pid.to_string())
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "kill -{signal} {pid} failed");
        }
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> Result<ExitStatus> {
        let Some(mut child) = self.child.take() else {
            bail!("trellisd is not running");
        };
        Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()?;
        let start = Instant::now();
        loop {
            if let Some(s) = child.try_wait()? {
                return Ok(s);
            }
            if start.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                bail!("trellisd did not stop within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the process (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Trellisd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs a command to completion with a time limit, capturing its output.
pub fn run(cmd: &mut Command, limit: Duration) -> Result<Output> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    let mut out = child.stdout.take().context("stdout")?;
    let mut err = child.stderr.take().context("stderr")?;
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{cmd:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ok(Output {
        status,
        stdout: t_out.join().unwrap_or_default(),
        stderr: t_err.join().unwrap_or_default(),
    })
}

/// Runs a libiscsi tool and returns its stdout, failing on a non-zero exit.
pub fn iscsi_tool(tool: &str, args: &[&str]) -> Result<String> {
    require_tool(tool);
    let out = run(Command::new(tool).args(args), Duration::from_secs(60))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "{tool} {args:?} failed ({}): {stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(stdout)
}

/// fio built with the libiscsi engine: `FIO`, else where the test script
/// builds it (`~/.cache/trellis/fio/fio`).
pub fn fio_bin() -> PathBuf {
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

/// fio running in the background. Ending it ends every process it forked:
/// fio runs each job in a child process that leaves the parent's process
/// group, so killing the parent (or its group) leaves the job running, and a
/// job whose target died retries its connection forever. Killed on drop.
#[derive(Debug)]
pub struct BackgroundFio {
    child: Child,
}

/// The processes whose parent is `pid`, from `/proc`.
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let child: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).ok()?;
        // pid (comm) state ppid ...: comm may hold spaces, so split after ')'.
        let ppid: u32 = stat
            .rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        (ppid == pid).then_some(child)
    })
    .collect()
}

fn sigkill(pid: u32) {
    let pid = i32::try_from(pid).expect("pid fits i32");
    // Never 0, 1 or a negative number (a group, or every process).
    assert!(pid > 1, "refusing to signal pid {pid}");
    // SAFETY: kill(2) on one positive pid has no memory effects.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
}

impl BackgroundFio {
    /// Starts fio with `args`, its output discarded.
    pub fn start(args: &[String]) -> BackgroundFio {
        let child = Command::new(fio_bin())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start fio");
        BackgroundFio { child }
    }

    /// Kills fio's job processes and fio, and reaps it.
    pub fn stop(&mut self) {
        let parent = self.child.id();
        // The parent first stopped, so it forks no job after the walk.
        let pid = i32::try_from(parent).expect("pid fits i32");
        assert!(pid > 1, "refusing to signal pid {pid}");
        // SAFETY: as in sigkill.
        unsafe {
            libc::kill(pid, libc::SIGSTOP);
        }
        let mut todo = vec![parent];
        let mut all = Vec::new();
        while let Some(p) = todo.pop() {
            let kids = children_of(p);
            todo.extend(&kids);
            all.extend(kids);
        }
        for p in all {
            sigkill(p);
        }
        sigkill(parent);
        let _ = self.child.wait();
    }
}

impl Drop for BackgroundFio {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.stop();
        }
    }
}

/// Runs fio with `args`; panics unless it succeeds with no errors. Its
/// output.
pub fn fio_run(args: &[String]) -> String {
    let out = run(Command::new(fio_bin()).args(args), Duration::from_secs(300)).expect("run fio");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "fio failed: {text}");
    assert!(text.contains("err= 0"), "fio reported errors: {text}");
    text
}

/// `url` (`iscsi://host:port/iqn/lun`) as fio's `filename`, colons escaped.
pub fn fio_filename(url: &str) -> String {
    url.replace(':', "\\:")
}

/// Polls `probe` every 300 ms until it gives `Ok`, for at most `limit`;
/// then panics with `what` and the last `Err`.
pub fn eventually<T>(
    what: &str,
    limit: Duration,
    mut probe: impl FnMut() -> Result<T, String>,
) -> T {
    let start = Instant::now();
    loop {
        match probe() {
            Ok(v) => return v,
            Err(last) if start.elapsed() > limit => panic!("{what}: {last}"),
            Err(_) => std::thread::sleep(Duration::from_millis(300)),
        }
    }
}

/// A suffix unique to this run, for cluster ids and keys (mDNS reaches
/// other test runs on the same host).
pub fn run_id() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
    )
}

/// A CA and a certificate for 127.0.0.1 and localhost signed by it, as
/// PEM files in `dir`: (ca, cert, key).
pub fn test_certificates(dir: &Path) -> Result<(PathBuf, PathBuf, PathBuf)> {
    let ca_key = rcgen::KeyPair::generate()?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "trellis test CA");
    let ca = ca_params.self_signed(&ca_key)?;
    let key = rcgen::KeyPair::generate()?;
    let params = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])?;
    let cert = params.signed_by(&key, &ca, &ca_key)?;
    let paths = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    std::fs::write(&paths.0, ca.pem())?;
    std::fs::write(&paths.1, cert.pem())?;
    std::fs::write(&paths.2, key.serialize_pem())?;
    Ok(paths)
}

/// A TCP connection to `to` from 127.0.0.`src` (a loopback "host" of its
/// own, for per-address limits), giving up after `limit`.
pub fn connect_from(src: u8, to: SocketAddr, limit: Duration) -> std::io::Result<TcpStream> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    let from: SocketAddr = ([127, 0, 0, src], 0).into();
    s.bind(&from.into())?;
    s.connect_timeout(&to.into(), limit)?;
    Ok(s.into())
}

/// Whether the peer closed `s` within `limit` (EOF or a reset), reading
/// and discarding whatever it sent first.
pub fn closed_within(s: &TcpStream, limit: Duration) -> bool {
    if s.set_read_timeout(Some(limit)).is_err() {
        return true;
    }
    let mut buf = [0u8; 1024];
    let mut reader = s;
    loop {
        match reader.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
}
