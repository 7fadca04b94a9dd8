//! Never two writers, with real members in network namespaces: three
//! members on two cluster networks (`a`, `b`) and a host network (`h`)
//! that only carries their portals and APIs; this test process is the host.
//!
//! Raft runs on both cluster networks. First each cluster network of the
//! Primary is cut in turn: a link alarm, and nothing else: the Primary
//! keeps renewing its lease, no role and no epoch changes, its writes go
//! on. Then the Primary is cut off from the other
//! members on both cluster networks while the host still reaches every
//! portal. Two writers record when each write was acknowledged, one through
//! the old Primary (m1), one through the Secondary (m2): m1 stops taking
//! writes once it can no longer renew its lease, and m2 takes them only
//! after that. No write is acknowledged by m1 after m2 acknowledged its
//! first, and every acknowledged write reads back. The gap between m1's
//! first refusal and m2's first acknowledgement is printed.

// Test helpers: a panic is the test failing, with the message in hand.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use trellis_tests::cluster::export_vol;
use trellis_tests::netns::{Lab, Member};
use trellis_tests::raw::Conn;
use trellis_tests::writer::{check_acked, Ack, Record, Writer};
use trellis_tests::{api_request_at, eventually, require_tool, run_id, trellis_cli};

const TARGET: &str = "iqn.2026-12.io.trellis:partition";
const HOST_OLD: &str = "iqn.2026-12.io.trellis:partition-host-a";
const HOST_NEW: &str = "iqn.2026-12.io.trellis:partition-host-b";
const MEMBERS: usize = 3;
const WAIT: Duration = Duration::from_secs(30);

struct Setup {
    lab: Lab,
    members: Vec<Member>,
    _dirs: Vec<tempfile::TempDir>,
    _storage: tempfile::TempDir,
    token: String,
}

fn config(lab: &Lab, i: usize, id: &str, key: &str, token: &str, storage: &Path) -> String {
    let voters: String = (1..=MEMBERS)
        .map(|p| {
            format!(
                "{{ id = {p}, raft = [\"{}:7501\", \"{}:7501\"] }},",
                lab.ip(p, 'a'),
                lab.ip(p, 'b')
            )
        })
        .collect();
    let seeds: String = (1..=MEMBERS)
        .filter(|&p| p != i)
        .flat_map(|p| {
            ['a', 'b'].map(|l| format!("{{ link = \"{l}\", addr = \"{}:7401\" }},", lab.ip(p, l)))
        })
        .collect();
    format!(
        "portals = [\"{h}:3260\"]\n\
         [cluster]\nid = \"{id}\"\nmember = \"m{i}\"\nkey = \"{key}\"\n\
         links = [\n  {{ name = \"a\", addr = \"{a}:7401\" }},\n  {{ name = \"b\", addr = \"{b}:7401\" }},\n]\n\
         seeds = [{seeds}]\n\
         storage_dir = \"{storage}\"\nnode_id = {i}\nraft = [\"{a}:7501\", \"{b}:7501\"]\napi = \"{h}:8080\"\n\
         api_token = \"{token}\"\napi_plaintext = true\nvoters = [{voters}]\n",
        a = lab.ip(i, 'a'),
        b = lab.ip(i, 'b'),
        h = lab.ip(i, 'h'),
        storage = storage.display(),
    )
}

impl Setup {
    fn start() -> Setup {
        let lab = Lab::with_host_network(MEMBERS).expect("lab");
        let run = run_id();
        let (id, key, token) = (
            format!("part-{run}"),
            format!("partition-key-{run}"),
            format!("token-{run}"),
        );
        let storage = tempfile::tempdir().unwrap();
        let dirs: Vec<tempfile::TempDir> =
            (0..MEMBERS).map(|_| tempfile::tempdir().unwrap()).collect();
        let members: Vec<Member> = (1..=MEMBERS)
            .map(|i| {
                let text = config(&lab, i, &id, &key, &token, storage.path());
                lab.trellisd(i, dirs[i - 1].path(), &text)
                    .expect("trellisd starts")
            })
            .collect();
        for (i, m) in members.iter().enumerate() {
            for p in (1..=MEMBERS).filter(|&p| p != i + 1) {
                m.wait_for(&["member admitted", &format!("member=m{p}")], 1, WAIT)
                    .unwrap();
            }
        }
        Setup {
            lab,
            members,
            _dirs: dirs,
            _storage: storage,
            token,
        }
    }

    fn portal(&self, i: usize) -> SocketAddr {
        format!("{}:3260", self.lab.ip(i, 'h')).parse().unwrap()
    }

    fn endpoint(&self, i: usize) -> String {
        format!("http://{}:8080", self.lab.ip(i, 'h'))
    }

    /// The CLI through member `i` only; panics unless it succeeds.
    fn cli_via(&self, i: usize, args: &[&str]) -> String {
        let (code, out) = trellis_cli(&self.endpoint(i), &self.token, args);
        assert_eq!(code, 0, "trellis {args:?} via m{i}: {out}");
        out
    }

    /// The roles of the default set as member `i` has them.
    fn roles_via(&self, i: usize) -> Result<serde_json::Value, String> {
        let (code, out) = trellis_cli(&self.endpoint(i), &self.token, &["--json", "role", "list"]);
        if code != 0 {
            return Err(out);
        }
        let all: serde_json::Value =
            serde_json::from_str(&out).map_err(|e| format!("{e}: {out}"))?;
        all["roles"]
            .as_array()
            .and_then(|r| r.iter().find(|v| v["set"] == "default").cloned())
            .ok_or(out)
    }

    /// A counter from member `i`'s /metrics (0 when absent).
    fn metric(&self, i: usize, name: &str) -> u64 {
        let text = api_request_at(
            &self.lab.ip(i, 'h'),
            8080,
            &self.token,
            "GET",
            "/metrics",
            "",
            None,
        );
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0)
    }
}

#[test]
fn a_primary_cut_off_from_the_cluster_acknowledges_nothing_once_the_new_primary_has() {
    require_tool("ip");
    let s = Setup::start();
    let roles = eventually("m1 Primary, m2 Secondary", WAIT, || {
        let r = s.roles_via(1)?;
        (r["primary"] == "m1" && r["secondary"] == "m2")
            .then_some(r.clone())
            .ok_or(r.to_string())
    });
    let epoch = roles["epoch"].as_u64().unwrap();
    for args in export_vol("64MiB", &[], TARGET, &[HOST_OLD, HOST_NEW]) {
        s.cli_via(1, &args);
    }
    let mut old = Writer::start(s.portal(1), TARGET, HOST_OLD, 0);
    let mut new = Writer::start(s.portal(2), TARGET, HOST_NEW, 1000);
    let started = Instant::now();
    eventually("writes acknowledged through m1", WAIT, || {
        let n = old.goods_since(started);
        (n >= 20)
            .then_some(())
            .ok_or(format!("{n} so far: {:?}", old.records().last()))
    });

    // One cluster network cut, each in turn (Raft runs on both): an
    // alarm, the lease still renewed, no role or epoch change, every write
    // through m1 taken.
    for net in ['a', 'b'] {
        let link = format!("link={net}");
        let down = ["link down (alarm)", "member=m1", &link];
        let downs = s.members[1].count(&down);
        let cut_one = Instant::now();
        s.lab.cut(1, net).unwrap();
        s.members[1].wait_for(&down, downs + 1, WAIT).unwrap();
        let renewals = s.metric(1, "trellis_lease_renewals_total");
        eventually(
            &format!("m1 renewing its lease with network {net} cut"),
            WAIT,
            || {
                let now = s.metric(1, "trellis_lease_renewals_total");
                (now >= renewals + 5)
                    .then_some(())
                    .ok_or(format!("{now} renewals (from {renewals})"))
            },
        );
        for i in 1..=MEMBERS {
            let r = s.roles_via(i).unwrap();
            assert_eq!(
                (&r["primary"], r["epoch"].as_u64()),
                (&"m1".into(), Some(epoch)),
                "network {net} cut, via m{i}: {r}"
            );
        }
        let during: Vec<_> = old
            .records()
            .into_iter()
            .filter(|r| r.0 >= cut_one)
            .collect();
        assert!(
            during.iter().any(|r| r.3 == Ack::Good),
            "no write through m1 with network {net} cut"
        );
        assert!(
            during.iter().all(|r| r.3 == Ack::Good),
            "writes through m1 refused with network {net} cut: {:?}",
            during.iter().find(|r| r.3 != Ack::Good)
        );
        let up = ["link up", "member=m1", &link];
        let ups = s.members[1].count(&up);
        s.lab.restore(1, net).unwrap();
        s.members[1].wait_for(&up, ups + 1, WAIT).unwrap();
    }

    // Both cluster networks cut: m1 is alone, the host still reaches it.
    let cut = Instant::now();
    s.lab.cut(1, 'a').unwrap();
    s.lab.cut(1, 'b').unwrap();
    let moved = eventually("m2 Primary after m1 was cut off", WAIT, || {
        let r = s.roles_via(2)?;
        (r["primary"] == "m2" && r["epoch"].as_u64() > Some(epoch))
            .then_some(r.clone())
            .ok_or(r.to_string())
    });
    eventually("writes acknowledged through m2", WAIT, || {
        let n = new.goods_since(cut);
        (n >= 20)
            .then_some(())
            .ok_or(format!("{n} so far: {:?}", new.records().last()))
    });
    eventually("m1 refusing writes", WAIT, || {
        let r = old.records();
        r.iter()
            .any(|r| r.0 >= cut && r.3 != Ack::Good)
            .then_some(())
            .ok_or(format!("{:?}", r.last()))
    });
    let old_log = old.finish();
    let new_log = new.finish();

    let old_last_good = old_log.iter().rev().find(|r| r.3 == Ack::Good).unwrap().0;
    let old_first_refusal = old_log
        .iter()
        .find(|r| r.0 >= cut && r.3 != Ack::Good)
        .unwrap();
    let new_first_good = new_log.iter().find(|r| r.3 == Ack::Good).unwrap().0;
    // Before the cut, m2 (Standby) took no write: it refused them with
    // 02/04/0B.
    assert!(new_first_good > cut, "m2 took a write before the cut");
    assert!(
        new_log
            .iter()
            .any(|r| r.0 < cut && r.3 == Ack::Refused(2, 0x04, 0x0B)),
        "m2 did not refuse writes as Standby: {:?}",
        &new_log[..new_log.len().min(5)]
    );
    assert!(
        old_last_good < new_first_good,
        "m1 acknowledged a write {} ms after m2 acknowledged its first",
        (old_last_good - new_first_good).as_millis()
    );
    eprintln!(
        "FIGURE partition: cut -> m1 refuses writes {} ms ({:?}); m1's first refusal -> m2's first acknowledgement {} ms; m1's last acknowledgement -> m2's first {} ms; cut -> m2's first {} ms; roles {}",
        (old_first_refusal.0 - cut).as_millis(),
        old_first_refusal.3,
        (new_first_good - old_first_refusal.0).as_millis(),
        (new_first_good - old_last_good).as_millis(),
        (new_first_good - cut).as_millis(),
        moved["why"],
    );

    // Every acknowledged write, through either member, reads back through
    // the new Primary.
    let mut reader = Conn::login_to(s.portal(2), TARGET, HOST_NEW).unwrap();
    reader.clear_unit_attentions().unwrap();
    let both: Vec<Record> = old_log.iter().chain(&new_log).cloned().collect();
    check_acked(&mut reader, &both);

    // m1, back on the networks, does not take the role back.
    s.lab.restore(1, 'a').unwrap();
    s.lab.restore(1, 'b').unwrap();
    let back = eventually("m1 back with a role", WAIT, || {
        let r = s.roles_via(2)?;
        let holds = r["secondary"] == "m1"
            || r["alternates"]
                .as_array()
                .is_some_and(|a| a.contains(&"m1".into()));
        holds.then_some(r.clone()).ok_or(r.to_string())
    });
    assert_eq!(back["primary"], "m2", "{back}");
}
