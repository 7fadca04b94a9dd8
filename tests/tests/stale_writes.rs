//! Stale writes: a client writes sequence-numbered blocks through three
//! members and, as multipath does, retries a write that timed out through
//! another member. The member it was writing through is SIGSTOPped for
//! longer than the client's timeout (and than its lease), and continued
//! once the client has gone on through the others. Whatever the policy
//! (active-passive, active-active), the woken member executes none of the
//! writes it held: every block reads back as the last write acknowledged
//! for it.
//!
//! The client's timeout (3 s) stands for a Linux host's with the settings
//! the README recommends (a path is failed after noop_out_interval 1 s +
//! noop_out_timeout 2 s): longer than a lease (2 s) and its drift margin,
//! which is what the guarantee needs.

// Test helpers: a panic is the test failing, with the message in hand.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use trellis_tests::alua::{self, state};
use trellis_tests::cluster::Cluster;
use trellis_tests::eventually;
use trellis_tests::raw::Conn;

const TARGET: &str = "iqn.2026-12.io.trellis:stale-test";
const HOST: &str = "iqn.2026-12.io.trellis:stale-host";
/// Blocks written in turn; each is rewritten every `BLOCKS` writes.
const BLOCKS: u64 = 16;
/// How long the client waits for an answer before trying another member.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(3);

/// A multipath-like client: one session per member, one write at a time.
struct Client {
    portals: Vec<SocketAddr>,
    conns: Vec<Option<Conn>>,
    current: Arc<AtomicUsize>,
    lun: u16,
}

/// The data of the write numbered `seq`: the number, repeated.
fn block(seq: u64) -> Vec<u8> {
    seq.to_be_bytes().repeat(64)
}

impl Client {
    fn conn(&mut self, i: usize) -> Option<&mut Conn> {
        if self.conns[i].is_none() {
            let login = || -> anyhow::Result<Conn> {
                let mut c = Conn::connect(self.portals[i])?;
                c.set_timeout(CLIENT_TIMEOUT)?;
                c.negotiate(vec![
                    ("InitiatorName".into(), HOST.into()),
                    ("TargetName".into(), TARGET.into()),
                    ("SessionType".into(), "Normal".into()),
                    ("HeaderDigest".into(), "None".into()),
                    ("DataDigest".into(), "None".into()),
                ])?;
                Ok(c)
            };
            self.conns[i] = login().ok();
        }
        self.conns[i].as_mut()
    }

    /// Runs `cdb` (with `out`, expecting `edtl_in` bytes back) until some
    /// member answers GOOD: a unit attention is retried on the same member,
    /// any other refusal, a timeout or a lost connection on the next.
    fn run(&mut self, cdb: &[u8], out: &[u8], edtl_in: u32) -> Vec<u8> {
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut tried = 0;
        loop {
            assert!(Instant::now() < deadline, "no member took {cdb:02x?}");
            let i = self.current.load(Ordering::SeqCst);
            let lun = self.lun;
            let r = match self.conn(i) {
                Some(c) => c.scsi_lun(lun, cdb, out, edtl_in).ok(),
                None => None,
            };
            match r {
                Some(r) if r.status == 0 => return r.data,
                Some(r) if r.status == 2 && r.sense.get(2).is_some_and(|k| k & 0x0F == 6) => {}
                other => {
                    if other.is_none() {
                        self.conns[i] = None;
                    }
                    self.current
                        .store((i + 1) % self.portals.len(), Ordering::SeqCst);
                    tried += 1;
                    if tried % self.portals.len() == 0 {
                        // Every member refused: a failover in progress.
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            }
        }
    }

    fn write(&mut self, lba: u64, seq: u64) {
        let mut cdb = [0u8; 10];
        cdb[0] = 0x2A;
        cdb[2..6].copy_from_slice(&(lba as u32).to_be_bytes());
        cdb[8] = 1;
        self.run(&cdb, &block(seq), 0);
    }

    fn read(&mut self, lba: u64) -> Vec<u8> {
        let mut cdb = [0u8; 10];
        cdb[0] = 0x28;
        cdb[2..6].copy_from_slice(&(lba as u32).to_be_bytes());
        cdb[8] = 1;
        self.run(&cdb, &[], 512)
    }
}

/// Every block holds the last write acknowledged for it; read through
/// whichever member serves.
fn check_blocks(c: &Cluster, lun: u16, acked: &[u64], when: &str) {
    let mut reader = Client {
        portals: c.members.iter().map(|m| m.portal).collect(),
        conns: c.members.iter().map(|_| None).collect(),
        current: Arc::new(AtomicUsize::new(0)),
        lun,
    };
    let mut lost = Vec::new();
    for lba in 0..BLOCKS {
        let data = reader.read(lba);
        let on_disk = u64::from_be_bytes(data[..8].try_into().unwrap());
        if on_disk != acked[lba as usize] {
            lost.push((lba, acked[lba as usize], on_disk));
        }
    }
    assert!(
        lost.is_empty(),
        "{when}: acknowledged writes lost (block, acknowledged, on disk): {lost:?}"
    );
}

/// Writes through the cluster while the member in use is stopped and
/// continued `rounds` times. Before each member is continued the writes
/// pause; once it answers again (its held commands went through its
/// cores first), every block must still hold its last acknowledged write.
fn stall_rounds(c: &Cluster, lun: u16, rounds: usize) {
    let portals: Vec<SocketAddr> = c.members.iter().map(|m| m.portal).collect();
    let current = Arc::new(AtomicUsize::new(0));
    let acked = Arc::new(Mutex::new(vec![0u64; BLOCKS as usize]));
    let count = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let pause = Arc::new(AtomicBool::new(false));
    let idle = Arc::new(AtomicBool::new(false));
    let writer = {
        let (current, acked, count, stop, pause, idle) = (
            Arc::clone(&current),
            Arc::clone(&acked),
            Arc::clone(&count),
            Arc::clone(&stop),
            Arc::clone(&pause),
            Arc::clone(&idle),
        );
        let portals = portals.clone();
        std::thread::spawn(move || {
            let mut client = Client {
                conns: portals.iter().map(|_| None).collect(),
                portals,
                current,
                lun,
            };
            let mut seq = 0;
            while !stop.load(Ordering::SeqCst) {
                if pause.load(Ordering::SeqCst) {
                    idle.store(true, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
                idle.store(false, Ordering::SeqCst);
                seq += 1;
                let lba = seq % BLOCKS;
                client.write(lba, seq);
                acked.lock().unwrap()[lba as usize] = seq;
                count.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    let acks_grow_by = |n: u64, what: &str| {
        let from = count.load(Ordering::SeqCst);
        eventually(what, Duration::from_secs(90), || {
            let now = count.load(Ordering::SeqCst);
            (now >= from + n)
                .then_some(())
                .ok_or(format!("{now} writes acknowledged"))
        });
    };
    for round in 0..rounds {
        acks_grow_by(50, "writes going on");
        let victim = current.load(Ordering::SeqCst);
        c.members[victim].signal("STOP");
        let stopped = Instant::now();
        // The client times out on the stopped member and goes on through
        // the others, rewriting every block several times.
        acks_grow_by(3 * BLOCKS, "writes through the other members");
        pause.store(true, Ordering::SeqCst);
        eventually("the writer paused", Duration::from_secs(90), || {
            idle.load(Ordering::SeqCst)
                .then_some(())
                .ok_or_else(|| "writing".to_owned())
        });
        let held = stopped.elapsed();
        assert!(held > CLIENT_TIMEOUT, "round {round}: stopped for {held:?}");
        c.members[victim].signal("CONT");
        eprintln!("round {round}: m{} stopped for {held:?}", victim + 1);
        // Once it answers, what it held has been through its cores.
        let portal = c.members[victim].portal;
        eventually("the woken member answers", Duration::from_secs(30), || {
            alua::rtpg(portal, TARGET, HOST, lun).map_err(|e| format!("{e:#}"))
        });
        let snapshot = acked.lock().unwrap().clone();
        check_blocks(c, lun, &snapshot, &format!("round {round}"));
        pause.store(false, Ordering::SeqCst);
    }
    stop.store(true, Ordering::SeqCst);
    writer.join().expect("the writer");
    let snapshot = acked.lock().unwrap().clone();
    check_blocks(c, lun, &snapshot, "at the end");
}

#[test]
fn a_stalled_member_never_executes_the_writes_it_held() {
    let c = Cluster::start(3);
    c.wait_primary("default", Duration::from_secs(60));
    for args in [
        vec!["device", "create", "ap", "--size", "1MiB"],
        vec!["device", "create", "aa", "--size", "1MiB", "--policy", "aa"],
        vec!["target", "create", TARGET],
        vec!["target", "map", TARGET, "ap", "--lun", "0"],
        vec!["target", "map", TARGET, "aa", "--lun", "1"],
        vec!["acl", "allow", TARGET, HOST],
    ] {
        c.cli(&args);
    }
    for lun in [0, 1] {
        alua::wait_state(
            c.members[0].portal,
            TARGET,
            HOST,
            lun,
            1,
            state::AO,
            Duration::from_secs(30),
        );
    }
    stall_rounds(&c, 0, 2);
    stall_rounds(&c, 1, 2);
    for (i, m) in c.members.iter().enumerate() {
        let n = m.log_text().matches("write fence").count();
        eprintln!("m{}: {n} writes refused at the fence", i + 1);
    }
}
