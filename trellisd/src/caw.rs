//! COMPARE AND WRITE across members: one member, the owner of the device
//! (the Primary of its Failover Set), runs every COMPARE AND WRITE of the
//! device; the others send theirs to it whole over the authenticated
//! member-to-member transport (`ConfigService::call_member`).
//!
//! ```text
//!  session on a non-owner: all data-out in ─> DiskOp::Shared(CompareAndWrite)
//!    ─> SharedScsi ─> call_member(owner, "caw <device> <lba> <blocks> <fua> <hex>")
//!  owner: data path handler ─> Executor (trellis-caw thread, aligned buffers):
//!    take the unit's block locks exclusive (as the owner's own sessions do)
//!    ─> wait for writes in flight there ─> read ─> compare ─> write fence? ─> write
//!    ─> "good" | "miscompare <offset>" | "medium-error-read" | ... | "not-ready"
//! ```
//!
//! The owner's own sessions run theirs on their cores under the same block
//! locks, so every COMPARE AND WRITE of the device, through any member, is
//! atomic against every other: two hosts' ATS heartbeats on one block do
//! not interleave. A member that is not the owner (any more) refuses a
//! forwarded one with "not-ready", which the host gets as NOT READY,
//! ASYMMETRIC ACCESS STATE TRANSITION and retries.

use std::fmt::Write as _;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use trellis_datapath::{BufPool, PoolConfig};
use trellis_iscsi::scsi::blocklock::{self, Exclusive};
use trellis_iscsi::scsi::{Completion, Sense};
use trellis_iscsi::target::Registry;
use uuid::Uuid;

/// How long after it arrived a forwarded COMPARE AND WRITE may still
/// start (queued, then waiting for the block locks); past it, it is
/// answered NOT READY without touching the medium. Well under the sender's
/// wait ([`crate::shared`]'s 5 s), so "not ready" is never said of one
/// that ran after the sender stopped waiting.
pub const START_WITHIN: Duration = Duration::from_secs(2);

/// The largest COMPARE AND WRITE carried (its two halves).
const MAX_DATA: usize = 1 << 20;

/// One COMPARE AND WRITE sent to the owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The device.
    pub device: Uuid,
    /// First logical block.
    pub lba: u64,
    /// Blocks.
    pub blocks: u32,
    /// Force unit access.
    pub fua: bool,
    /// The compare blocks, then the write blocks.
    pub data: Vec<u8>,
}

impl Request {
    /// The text carried to the owner.
    pub fn encode(&self) -> String {
        let mut t = format!(
            "caw {} {} {} {} ",
            self.device,
            self.lba,
            self.blocks,
            u8::from(self.fua)
        );
        t.reserve(self.data.len() * 2);
        for b in &self.data {
            let _ = write!(t, "{b:02x}");
        }
        t
    }

    /// The request written as `text`; None if it is not one.
    pub fn decode(text: &str) -> Option<Self> {
        let mut w = text.split(' ');
        if w.next()? != "caw" {
            return None;
        }
        let device = w.next()?.parse().ok()?;
        let lba = w.next()?.parse().ok()?;
        let blocks = w.next()?.parse().ok()?;
        let fua = w.next()? == "1";
        let hex = w.next()?.as_bytes();
        if hex.len() % 2 != 0 || hex.len() / 2 > MAX_DATA || w.next().is_some() {
            return None;
        }
        let nibble = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
        let data = hex
            .chunks(2)
            .map(|p| Some(nibble(p[0])? << 4 | nibble(p[1])?))
            .collect::<Option<Vec<u8>>>()?;
        Some(Request {
            device,
            lba,
            blocks,
            fua,
            data,
        })
    }
}

/// What the owner answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Compared equal and written.
    Good,
    /// The first differing byte of the compare blocks.
    Miscompare(u64),
    /// The medium could not be read.
    ReadError,
    /// The blocks could not be written.
    WriteError,
    /// Out of the device's range, or data of the wrong size.
    Invalid,
    /// Not the owner, not serving, or the locks stayed taken: retry.
    NotReady,
}

impl Answer {
    /// The text carried back.
    pub fn encode(self) -> String {
        match self {
            Answer::Good => "good".into(),
            Answer::Miscompare(at) => format!("miscompare {at}"),
            Answer::ReadError => "medium-error-read".into(),
            Answer::WriteError => "medium-error-write".into(),
            Answer::Invalid => "invalid".into(),
            Answer::NotReady => "not-ready".into(),
        }
    }

    /// The answer written as `text` (anything else: not ready).
    pub fn decode(text: &str) -> Self {
        match text.split_once(' ') {
            Some(("miscompare", at)) => at.parse().map_or(Answer::NotReady, Answer::Miscompare),
            _ => match text {
                "good" => Answer::Good,
                "medium-error-read" => Answer::ReadError,
                "medium-error-write" => Answer::WriteError,
                "invalid" => Answer::Invalid,
                _ => Answer::NotReady,
            },
        }
    }

    /// The command's completion.
    pub fn completion(self) -> Completion {
        match self {
            Answer::Good => Completion::good(),
            Answer::Miscompare(at) => Completion::check(Sense::miscompare(at)),
            Answer::ReadError => Completion::check(Sense::medium_error_read()),
            Answer::WriteError => Completion::check(Sense::medium_error_write()),
            Answer::Invalid => Completion::check(Sense::lba_out_of_range()),
            Answer::NotReady => Completion::check(Sense::not_ready_alua_transitioning()),
        }
    }
}

/// A request, when it arrived, and where to answer.
type Job = (Request, Instant, tokio::sync::oneshot::Sender<Answer>);

/// Runs forwarded COMPARE AND WRITEs on this member (the owner), one at a
/// time, on a thread of its own with aligned buffers (O_DIRECT stores).
#[derive(Debug, Clone)]
pub struct Executor {
    jobs: mpsc::Sender<Job>,
}

impl Executor {
    /// Starts the thread, running against `registry`'s units.
    pub fn start(registry: Arc<Registry>) -> Result<(Executor, JoinHandle<()>)> {
        let (tx, rx) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("trellis-caw".into())
            .spawn(move || {
                let pool = match BufPool::new(&PoolConfig {
                    classes: vec![(MAX_DATA / 2, 2)],
                }) {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::error!(error = %e, "no buffers for forwarded COMPARE AND WRITE; they are answered NOT READY");
                        for (_, _, reply) in rx {
                            let _ = reply.send(Answer::NotReady);
                        }
                        return;
                    }
                };
                for (req, arrived, reply) in rx {
                    let deadline = arrived + START_WITHIN;
                    let answer = if reply.is_closed() || Instant::now() >= deadline {
                        Answer::NotReady
                    } else {
                        execute(&registry, &pool, &req, deadline)
                    };
                    let _ = reply.send(answer);
                }
            })
            .context("cannot start a thread")?;
        Ok((Executor { jobs: tx }, thread))
    }

    /// Runs `req` here and answers.
    pub async fn run(&self, req: Request) -> Answer {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.jobs.send((req, Instant::now(), tx)).is_err() {
            return Answer::NotReady;
        }
        rx.await.unwrap_or(Answer::NotReady)
    }
}

/// Runs one COMPARE AND WRITE against the unit's medium, under its block
/// locks.
fn execute(reg: &Registry, pool: &BufPool, req: &Request, deadline: Instant) -> Answer {
    let Some(unit) = reg.unit(req.device) else {
        return Answer::NotReady;
    };
    if unit.caw_elsewhere() {
        return Answer::NotReady;
    }
    let Some(dev) = reg.device(req.device) else {
        return Answer::NotReady;
    };
    let bs = u64::from(dev.spec().block_size);
    let len = u64::from(req.blocks) * bs;
    let bytes_end = req
        .lba
        .checked_add(u64::from(req.blocks))
        .and_then(|e| e.checked_mul(bs));
    if req.blocks == 0
        || req.data.len() as u64 != 2 * len
        || bytes_end.is_none_or(|e| e > dev.spec().size)
    {
        return Answer::Invalid;
    }
    let len = len as usize;
    let offset = req.lba * bs;
    let locks = unit.locks();
    let mask = blocklock::mask(req.lba, req.lba + u64::from(req.blocks));
    while locks.try_exclusive(mask) == Exclusive::Busy {
        if Instant::now() >= deadline {
            return Answer::NotReady;
        }
        std::thread::sleep(Duration::from_micros(100));
    }
    let answer = (|| {
        while !locks.drained(mask) {
            if Instant::now() >= deadline {
                return Answer::NotReady;
            }
            std::thread::sleep(Duration::from_micros(50));
        }
        let (Some(mut medium), Some(mut write)) = (pool.get(len), pool.get(len)) else {
            return Answer::NotReady;
        };
        medium.set_len(len);
        if dev.store().read_at(&mut medium, offset).is_err() {
            return Answer::ReadError;
        }
        let (compare, new) = req.data.split_at(len);
        if let Some(at) = medium.iter().zip(compare).position(|(a, b)| a != b) {
            return Answer::Miscompare(at as u64);
        }
        if !unit.ports().writable_at(Instant::now()) {
            return Answer::NotReady;
        }
        write.set_len(len);
        write.copy_from_slice(new);
        match dev.store().write_at(&write, offset, req.fua) {
            Ok(()) => Answer::Good,
            Err(_) => Answer::WriteError,
        }
    })();
    locks.release_exclusive(mask);
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_answers_round_trip() {
        let r = Request {
            device: Uuid::from_u128(7),
            lba: 42,
            blocks: 1,
            fua: true,
            data: (0..=255).chain(0..=255).collect(),
        };
        assert_eq!(Request::decode(&r.encode()), Some(r.clone()));
        assert_eq!(Request::decode("caw x 1 1 0 00"), None);
        assert_eq!(
            Request::decode("caw 00000000-0000-0000-0000-000000000007 1 1 0 0g"),
            None
        );
        assert_eq!(Request::decode("nope"), None);
        for a in [
            Answer::Good,
            Answer::Miscompare(513),
            Answer::ReadError,
            Answer::WriteError,
            Answer::Invalid,
            Answer::NotReady,
        ] {
            assert_eq!(Answer::decode(&a.encode()), a);
        }
        assert_eq!(Answer::decode("garbage"), Answer::NotReady);
        assert_eq!(
            Answer::Miscompare(3).completion(),
            Completion::check(Sense::miscompare(3))
        );
    }
}
