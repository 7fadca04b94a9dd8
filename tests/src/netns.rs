//! Network namespaces as cluster members: each member gets its own
//! namespace (its own loopback, so every member can use portal
//! 127.0.0.1:3260) with one veth per network, and each network is a bridge
//! in the root namespace. A test cuts one network of one member by taking
//! the bridge side of its veth down, and restores it.
//!
//! ```text
//!   ns m1            root                ns m2
//!   veth a 10.201.0.1 ── bridge a ── 10.201.0.2 veth a
//!   veth b 10.202.0.1 ── bridge b ── 10.202.0.2 veth b
//! ```
//!
//! A namespace with no trellisd in it is a host: with a veth on each
//! network it is a multipath initiator (`Lab::exec` runs clients there).
//!
//! [`Lab::with_host_network`] adds a third network, `h`, for hosts only:
//! the members serve their portals there, and the root namespace (the test
//! itself) has an address on it, so a test's own clients reach every
//! portal while the members' cluster networks `a` and `b` are cut.
//!
//! Needs root and iproute2. Names carry a per-lab tag, so labs of tests
//! running at the same time do not meet; everything is deleted on drop.

use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::trellisd_bin;

/// The networks of a lab.
pub const LINKS: [char; 2] = ['a', 'b'];

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Namespaces and bridges for `members` members on two networks.
#[derive(Debug)]
pub struct Lab {
    tag: String,
    members: usize,
    /// The networks: [`LINKS`], and `h` with a host network.
    nets: Vec<char>,
    /// The third octet of network `h`'s addresses (per lab, so that labs
    /// running at once do not share a route in the root namespace).
    host_subnet: u8,
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .with_context(|| format!("cannot run ip {args:?}"))?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl Lab {
    /// Creates the namespaces, bridges and links, all up.
    pub fn new(members: usize) -> Result<Self> {
        Self::build(members, false)
    }

    /// [`Lab::new`] plus the host network `h`, on which the root namespace
    /// has address [`Lab::root_ip`].
    pub fn with_host_network(members: usize) -> Result<Self> {
        Self::build(members, true)
    }

    fn build(members: usize, host: bool) -> Result<Self> {
        // Interface names are at most 15 bytes: keep the tag short.
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let tag = format!("{}{n}", std::process::id() % 10_000);
        let mut nets = LINKS.to_vec();
        if host {
            nets.push('h');
        }
        let host_subnet = u8::try_from((std::process::id() + n) % 200 + 20).expect("below 256");
        let lab = Lab {
            tag,
            members,
            nets,
            host_subnet,
        };
        for &l in &lab.nets {
            let br = lab.bridge(l);
            ip(&["link", "add", &br, "type", "bridge"])?;
            ip(&["link", "set", &br, "up"])?;
        }
        for i in 1..=members {
            let ns = lab.ns(i);
            ip(&["netns", "add", &ns])?;
            ip(&["netns", "exec", &ns, "ip", "link", "set", "lo", "up"])?;
            for &l in &lab.nets {
                let (inner, outer) = (lab.veth(i, l), lab.outer(i, l));
                ip(&[
                    "link", "add", &inner, "type", "veth", "peer", "name", &outer,
                ])?;
                ip(&["link", "set", &inner, "netns", &ns])?;
                ip(&["link", "set", &outer, "master", &lab.bridge(l)])?;
                ip(&["link", "set", &outer, "up"])?;
                let addr = format!("{}/24", lab.ip(i, l));
                ip(&[
                    "netns", "exec", &ns, "ip", "addr", "add", &addr, "dev", &inner,
                ])?;
                ip(&["netns", "exec", &ns, "ip", "link", "set", &inner, "up"])?;
            }
        }
        if host {
            let addr = format!("{}/24", lab.root_ip());
            ip(&["addr", "add", &addr, "dev", &lab.bridge('h')])?;
        }
        Ok(lab)
    }

    /// The root namespace's address on the host network `h`.
    pub fn root_ip(&self) -> String {
        format!("10.203.{}.254", self.host_subnet)
    }

    /// Member `i`'s namespace.
    pub fn ns(&self, i: usize) -> String {
        format!("trl{}m{i}", self.tag)
    }

    fn bridge(&self, l: char) -> String {
        format!("trb{}{l}", self.tag)
    }

    fn veth(&self, i: usize, l: char) -> String {
        format!("trv{}{i}{l}", self.tag)
    }

    fn outer(&self, i: usize, l: char) -> String {
        format!("trp{}{i}{l}", self.tag)
    }

    /// Member `i`'s address on network `l`.
    pub fn ip(&self, i: usize, l: char) -> String {
        match l {
            'a' => format!("10.201.0.{i}"),
            'b' => format!("10.202.0.{i}"),
            _ => format!("10.203.{}.{i}", self.host_subnet),
        }
    }

    /// Cuts member `i` off network `l` (its cable pulled from the switch).
    pub fn cut(&self, i: usize, l: char) -> Result<()> {
        ip(&["link", "set", &self.outer(i, l), "down"])
    }

    /// Plugs member `i` back into network `l`.
    pub fn restore(&self, i: usize, l: char) -> Result<()> {
        ip(&["link", "set", &self.outer(i, l), "up"])
    }

    /// Runs `program` with `args` in namespace `i` (at most 60 s); its
    /// output.
    pub fn exec(&self, i: usize, program: &std::path::Path, args: &[&str]) -> Result<Output> {
        crate::run(
            Command::new("ip")
                .args(["netns", "exec", &self.ns(i)])
                .arg(program)
                .args(args),
            Duration::from_secs(60),
        )
    }

    /// Starts trellisd in member `i`'s namespace with `config`, in data
    /// directory `dir`; its stderr goes to `dir/trellisd.log`. Ready when
    /// it logs that it serves.
    pub fn trellisd(&self, i: usize, dir: &std::path::Path, config: &str) -> Result<Member> {
        let cfg = dir.join("trellisd.toml");
        std::fs::write(&cfg, config)?;
        let log = dir.join("trellisd.log");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns(i)])
            .arg(trellisd_bin())
            .arg("--data-dir")
            .arg(dir)
            .arg("--config")
            .arg(&cfg)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("cannot start trellisd in a namespace")?;
        let m = Member {
            child: Some(child),
            log,
        };
        let start = Instant::now();
        while !m.log_text().contains("trellisd serving") {
            if start.elapsed() > Duration::from_secs(15) {
                bail!(
                    "trellisd in {} did not start:\n{}",
                    self.ns(i),
                    m.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(m)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for i in 1..=self.members {
            let _ = ip(&["netns", "del", &self.ns(i)]);
        }
        for &l in &self.nets {
            let _ = ip(&["link", "del", &self.bridge(l)]);
        }
    }
}

/// A trellisd running in a lab namespace (killed on drop).
#[derive(Debug)]
pub struct Member {
    child: Option<Child>,
    log: std::path::PathBuf,
}

impl Member {
    /// Its log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Lines of its log containing every one of `parts`.
    pub fn count(&self, parts: &[&str]) -> usize {
        self.log_text()
            .lines()
            .filter(|l| parts.iter().all(|p| l.contains(p)))
            .count()
    }

    /// Waits until at least `n` log lines contain every one of `parts`.
    pub fn wait_for(&self, parts: &[&str], n: usize, limit: Duration) -> Result<()> {
        let start = Instant::now();
        while self.count(parts) < n {
            if start.elapsed() > limit {
                bail!("no {n} log lines with {parts:?}:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.kill();
    }
}
