//! A writer like a host's: one session through one member, one WRITE (10)
//! at a time over its own blocks, each carrying its sequence number, and
//! each answer stamped with when it arrived. A refused write (a unit
//! attention included) is recorded and the writer goes on with the next,
//! as a host retries; what was acknowledged can be read back and checked.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::raw::Conn;

/// Blocks each writer rewrites in turn (its own range).
pub const BLOCKS: u32 = 32;

/// What became of one write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ack {
    /// GOOD.
    Good,
    /// CHECK CONDITION with this sense key, ASC, ASCQ.
    Refused(u8, u8, u8),
    /// No answer (timeout, lost connection).
    Failed(String),
}

/// A write's answer: when it arrived, the block, the sequence number
/// written, and what it was.
pub type Record = (Instant, u32, u64, Ack);

/// One writer: one session through one member, one WRITE (10) at a time
/// over its own blocks, each write's answer stamped with when it arrived.
#[derive(Debug)]
pub struct Writer {
    log: Arc<Mutex<Vec<Record>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    /// Starts writing through `portal` as `initiator` to target `target`'s
    /// LUN 0, blocks `base..base + BLOCKS`.
    pub fn start(
        portal: SocketAddr,
        target: &'static str,
        initiator: &'static str,
        base: u32,
    ) -> Writer {
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (l, s) = (Arc::clone(&log), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            let mut conn: Option<Conn> = None;
            let mut seq = 0u64;
            while !s.load(Ordering::SeqCst) {
                if conn.is_none() {
                    conn = Conn::login_to(portal, target, initiator).ok();
                    if let Some(c) = &conn {
                        c.set_timeout(Duration::from_secs(3))
                            .expect("socket timeout");
                    } else {
                        // The portal refused the login: try again shortly.
                        std::thread::sleep(Duration::from_millis(50));
                        continue;
                    }
                }
                seq += 1;
                let lba = base + (seq % u64::from(BLOCKS)) as u32;
                let mut cdb = [0u8; 10];
                cdb[0] = 0x2A;
                cdb[2..6].copy_from_slice(&lba.to_be_bytes());
                cdb[8] = 1;
                let data = seq.to_be_bytes().repeat(64);
                let Some(c) = conn.as_mut() else { continue };
                let ack = match c.scsi(&cdb, &data, 0) {
                    Ok(r) if r.status == 0 => Ack::Good,
                    Ok(r) => Ack::Refused(
                        r.sense.get(2).map_or(0, |k| k & 0x0F),
                        r.sense.get(12).copied().unwrap_or(0),
                        r.sense.get(13).copied().unwrap_or(0),
                    ),
                    Err(e) => {
                        conn = None;
                        Ack::Failed(format!("{e:#}"))
                    }
                };
                let refused = ack != Ack::Good;
                l.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push((Instant::now(), lba, seq, ack));
                if refused {
                    // A refusing member is not hammered.
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        });
        Writer {
            log,
            stop,
            thread: Some(thread),
        }
    }

    /// What happened so far.
    pub fn records(&self) -> Vec<Record> {
        self.log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Writes acknowledged since `t`.
    pub fn goods_since(&self, t: Instant) -> usize {
        self.records()
            .iter()
            .filter(|r| r.0 >= t && r.3 == Ack::Good)
            .count()
    }

    /// Stops the writer; everything it recorded.
    pub fn finish(&mut self) -> Vec<Record> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().expect("the writer thread");
        }
        self.records()
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// What each block of `records` may hold: its last acknowledged sequence
/// number, and the later writes to it whose outcome is unknown (no answer:
/// the member may have executed them before it died). A refused write
/// (CHECK CONDITION) was not executed.
pub fn last_acked(records: &[Record]) -> Vec<(u32, u64, Vec<u64>)> {
    let mut last: BTreeMap<u32, (u64, Vec<u64>)> = BTreeMap::new();
    for (_, lba, seq, ack) in records {
        match ack {
            Ack::Good => {
                last.insert(*lba, (*seq, Vec::new()));
            }
            Ack::Failed(_) => {
                if let Some((_, unknown)) = last.get_mut(lba) {
                    unknown.push(*seq);
                }
            }
            Ack::Refused(..) => {}
        }
    }
    last.into_iter().map(|(l, (s, u))| (l, s, u)).collect()
}

/// Reads back, over `reader`, every block `records` acknowledged, and
/// panics naming each that holds neither its last acknowledged write nor
/// a later one whose outcome is unknown.
pub fn check_acked(reader: &mut Conn, records: &[Record]) {
    let mut lost = Vec::new();
    for (lba, seq, unknown) in last_acked(records) {
        let mut cdb = [0u8; 10];
        cdb[0] = 0x28;
        cdb[2..6].copy_from_slice(&lba.to_be_bytes());
        cdb[8] = 1;
        let r = reader.scsi(&cdb, &[], 512).expect("READ (10)");
        assert_eq!(r.status, 0, "READ of {lba}: {r:?}");
        let on_disk = u64::from_be_bytes(r.data[..8].try_into().expect("8 bytes"));
        if on_disk != seq && !unknown.contains(&on_disk) {
            lost.push((lba, seq, on_disk));
        }
    }
    assert!(
        lost.is_empty(),
        "acknowledged writes lost (block, acknowledged, on disk): {lost:?}"
    );
}
