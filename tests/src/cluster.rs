//! A cluster of real trellisd processes on loopback: members `m1..mN`,
//! each with two control links (127.0.1.i and 127.0.2.i stand for two
//! networks), every member a Raft voter, one shared storage directory,
//! a cluster id and key unique to the run.

use std::time::Duration;

use crate::{eventually, free_control_port, run_id, stable_port, trellis_cli, Trellisd};

/// The `[cluster]` discovery lines of member `i`: its two links on
/// `port`, `peers` as seeds, the cluster `id` and `key`.
pub fn link_lines(i: u8, port: u16, id: &str, key: &str, peers: &[u8]) -> String {
    let mut seeds = String::new();
    for p in peers {
        seeds.push_str(&format!(
            "  {{ link = \"a\", addr = \"127.0.1.{p}:{port}\" }},\n  {{ link = \"b\", addr = \"127.0.2.{p}:{port}\" }},\n"
        ));
    }
    format!(
        "portals = [\"127.0.0.1:3260\"]\n\
         [cluster]\nid = \"{id}\"\nmember = \"m{i}\"\nkey = \"{key}\"\n\
         links = [\n  {{ name = \"a\", addr = \"127.0.1.{i}:{port}\" }},\n  {{ name = \"b\", addr = \"127.0.2.{i}:{port}\" }},\n]\n\
         seeds = [\n{seeds}]\n"
    )
}

/// The `[cluster]` lines that start the replicated configuration and the
/// API of member `i` (node id `i`; every member of `raft_ports` a voter).
pub fn control_lines(
    i: u8,
    raft_ports: &[u16],
    api_port: u16,
    storage: &str,
    token: &str,
) -> String {
    let mut voters = String::new();
    for (j, p) in raft_ports.iter().enumerate() {
        voters.push_str(&format!(
            "  {{ id = {}, raft = \"127.0.0.1:{p}\" }},\n",
            j + 1
        ));
    }
    format!(
        "storage_dir = \"{storage}\"\nnode_id = {i}\nraft = \"127.0.0.1:{}\"\napi = \"127.0.0.1:{api_port}\"\napi_token = \"{token}\"\nvoters = [\n{voters}]\n",
        raft_ports[usize::from(i) - 1]
    )
}

/// The CLI commands that make a thin device `vol` of `size` (with `extra`
/// options, e.g. `--policy aa`), map it as LUN 0 of a new target `target`,
/// and let `initiators` log in to it.
pub fn export_vol<'a>(
    size: &'a str,
    extra: &[&'a str],
    target: &'a str,
    initiators: &[&'a str],
) -> Vec<Vec<&'a str>> {
    let mut device = vec!["device", "create", "vol", "--size", size, "--thin"];
    device.extend_from_slice(extra);
    let mut all = vec![
        device,
        vec!["target", "create", target],
        vec!["target", "map", target, "vol", "--lun", "0"],
    ];
    all.extend(initiators.iter().map(|i| vec!["acl", "allow", target, i]));
    all
}

/// A running cluster.
#[allow(missing_debug_implementations)]
pub struct Cluster {
    /// The members, `members[i]` being `m{i+1}`.
    pub members: Vec<Trellisd>,
    /// Their configuration texts (to restart them).
    pub texts: Vec<String>,
    /// Their API ports.
    pub api_ports: Vec<u16>,
    /// The API token.
    pub token: String,
    /// The shared storage.
    pub storage: tempfile::TempDir,
}

impl Cluster {
    /// Starts `n` members and waits until each has admitted the others.
    pub fn start(n: u8) -> Cluster {
        Self::start_over(n, Duration::ZERO, |_| {})
    }

    /// Starts `n` members one at a time, `gap` apart (a cold boot whose
    /// members come up over a while), calling `meanwhile` with the members
    /// started so far every 100 ms or so until the next is due; then waits
    /// until each has admitted the others.
    pub fn start_over(n: u8, gap: Duration, mut meanwhile: impl FnMut(&Cluster)) -> Cluster {
        let run = run_id();
        let (id, key) = (format!("c-{run}"), format!("cluster-key-{run}"));
        let token = format!("token-{run}");
        let port = free_control_port(1..=n);
        let raft_ports: Vec<u16> = (0..n).map(|_| stable_port()).collect();
        let api_ports: Vec<u16> = (0..n).map(|_| stable_port()).collect();
        let storage = tempfile::tempdir().expect("storage directory");
        let dir = storage.path().display().to_string();
        let texts: Vec<String> = (1..=n)
            .map(|i| {
                let peers: Vec<u8> = (1..=n).filter(|&p| p != i).collect();
                link_lines(i, port, &id, &key, &peers)
                    + &control_lines(i, &raft_ports, api_ports[usize::from(i) - 1], &dir, &token)
            })
            .collect();
        let mut c = Cluster {
            members: Vec::new(),
            texts,
            api_ports,
            token,
            storage,
        };
        for i in 0..c.texts.len() {
            let next = std::time::Instant::now() + gap;
            let m = Trellisd::start_with(Some(&c.texts[i]), &[]).expect("trellisd starts");
            c.members.push(m);
            if i + 1 < c.texts.len() {
                while std::time::Instant::now() < next {
                    meanwhile(&c);
                    let left = next.saturating_duration_since(std::time::Instant::now());
                    std::thread::sleep(left.min(Duration::from_millis(100)));
                }
            }
        }
        for i in 0..c.members.len() {
            for p in (1..=n).filter(|&p| usize::from(p) != i + 1) {
                c.wait_log(i, &["member admitted", &format!("member=m{p}")]);
            }
        }
        c
    }

    /// Waits until member `i`'s log has a line with every one of `parts`.
    pub fn wait_log(&self, i: usize, parts: &[&str]) {
        let d = &self.members[i];
        eventually(
            &format!("a log line with {parts:?} from m{}", i + 1),
            Duration::from_secs(30),
            || {
                let log = d.log_text();
                if log.lines().any(|l| parts.iter().all(|p| l.contains(p))) {
                    return Ok(());
                }
                Err(d.log_tail(40))
            },
        );
    }

    /// Every member's API, comma-separated (the CLI skips dead ones).
    pub fn endpoints(&self) -> String {
        self.api_ports
            .iter()
            .map(|p| format!("http://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Runs the CLI against every member; panics unless it succeeds.
    pub fn cli(&self, args: &[&str]) -> String {
        let (code, out) = trellis_cli(&self.endpoints(), &self.token, args);
        assert_eq!(code, 0, "trellis {args:?}: {out}");
        out
    }

    /// The committed roles of `set` (`trellis --json role list`).
    pub fn roles(&self, set: &str) -> serde_json::Value {
        let out = self.cli(&["--json", "role", "list"]);
        let all: serde_json::Value = serde_json::from_str(&out).expect("role list JSON");
        all["roles"]
            .as_array()
            .and_then(|r| r.iter().find(|v| v["set"] == set).cloned())
            .unwrap_or_else(|| panic!("no set {set} in {out}"))
    }

    /// Waits until `set` has a committed Primary; its roles.
    pub fn wait_primary(&self, set: &str, limit: Duration) -> serde_json::Value {
        eventually(&format!("a Primary for set {set}"), limit, || {
            let (code, out) =
                trellis_cli(&self.endpoints(), &self.token, &["--json", "role", "list"]);
            let all: serde_json::Value =
                serde_json::from_str(&out).map_err(|e| format!("{code} {out}: {e}"))?;
            let r = all["roles"]
                .as_array()
                .and_then(|r| r.iter().find(|v| v["set"] == set).cloned())
                .ok_or(out.clone())?;
            if r["primary"].is_string() {
                Ok(r)
            } else {
                Err(out)
            }
        })
    }

    /// SIGKILLs member `i`.
    pub fn kill(&mut self, i: usize) {
        self.members[i].kill();
    }

    /// Starts member `i` again over its data directory.
    pub fn restart(&mut self, i: usize) {
        let dir = std::mem::replace(
            &mut self.members[i].dir,
            tempfile::tempdir().expect("tempdir"),
        );
        self.members[i] = Trellisd::start_in(dir, Some(&self.texts[i]), &[]).expect("restart");
    }
}
