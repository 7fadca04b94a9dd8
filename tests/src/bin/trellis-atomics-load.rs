//! `trellis-atomics-load`: a COMPARE AND WRITE / UNMAP load generator for
//! `benches/fio/atomics.sh`, which runs it next to fio to show whether such
//! traffic slows ordinary reads and writes.
//!
//! Each session is one iSCSI login (the raw initiator of
//! [`trellis_tests::raw`], one command at a time) to LUN 0 of `--target`:
//!
//! - `caw`: READ(16) one 512-byte block, then COMPARE AND WRITE (0x89) it
//!   with the block just read as verify data and a new pattern as write
//!   data, so that it matches unless someone else wrote the block in between
//!   (a MISCOMPARE is counted, and counted as an error). `--caw-blocks N`
//!   makes each COMPARE AND WRITE N blocks long, at multiples of N.
//! - `unmap`: UNMAP (0x42) of one 8-block range.
//! - `both`: alternately one of each.
//!
//! Addresses walk `[--lba-start, --lba-start + --lba-count)` with a stride
//! coprime to the range (so every block, or 8-block range, is visited once
//! per cycle, spread over the range). With `--sessions N` the range is cut
//! into N disjoint slices, one per session. After `--duration` seconds one
//! line of JSON goes to stdout: ops, ops/s, errors (and details).

use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use trellis_tests::raw::{self, Conn};

/// Logical block size of the device.
const BLOCK: usize = 512;
/// Blocks per UNMAP descriptor.
const UNMAP_BLOCKS: u64 = 8;
/// SCSI status GOOD.
const GOOD: u8 = 0x00;
/// SCSI status CHECK CONDITION.
const CHECK_CONDITION: u8 = 0x02;
/// Sense key MISCOMPARE.
const MISCOMPARE: u8 = 0x0e;
/// Sense key UNIT ATTENTION.
const UNIT_ATTENTION: u8 = 0x06;
/// Consecutive failed reconnects after which a session gives up.
const MAX_RECONNECTS: u32 = 10;

const USAGE: &str = "\
Usage: trellis-atomics-load --portal HOST:PORT --target IQN --mode caw|unmap|both
                            --lba-start N --lba-count N --duration SECS
                            [--sessions N] [--rate OPS_PER_S] [--caw-blocks N]

  --mode caw     READ + COMPARE AND WRITE (matching) of 1 block, cycling in the range
  --mode unmap   UNMAP of 8-block ranges cycling in the range
  --mode both    alternately one of each
  --sessions N   concurrent iSCSI sessions, each on its own slice of the range [1]
  --rate R       cap on total ops/s over all sessions, 0 = as fast as possible [0]
  --caw-blocks N blocks per COMPARE AND WRITE (at LBAs that are multiples of N) [1]

Prints one line of JSON at the end: ops, ops_per_s, errors, ...";

/// What to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Caw,
    Unmap,
    Both,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Caw => "caw",
            Mode::Unmap => "unmap",
            Mode::Both => "both",
        }
    }
}

/// Command-line options.
#[derive(Debug, Clone)]
struct Opts {
    portal: SocketAddr,
    target: String,
    mode: Mode,
    lba_start: u64,
    lba_count: u64,
    duration: Duration,
    sessions: u64,
    rate: f64,
    caw_blocks: u64,
}

fn parse_args() -> Result<Opts> {
    let mut portal = None;
    let mut target = None;
    let mut mode = None;
    let mut lba_start = None;
    let mut lba_count = None;
    let mut duration = None;
    let mut sessions = 1u64;
    let mut rate = 0f64;
    let mut caw_blocks = 1u64;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--help" || flag == "-h" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        let num = || -> Result<u64> {
            value
                .parse::<u64>()
                .with_context(|| format!("{flag}: not a number: {value}"))
        };
        match flag.as_str() {
            "--portal" => {
                let addr = value
                    .to_socket_addrs()
                    .with_context(|| format!("--portal {value}"))?
                    .next()
                    .with_context(|| format!("--portal {value}: no address"))?;
                portal = Some(addr);
            }
            "--target" => target = Some(value),
            "--mode" => {
                mode = Some(match value.as_str() {
                    "caw" => Mode::Caw,
                    "unmap" => Mode::Unmap,
                    "both" => Mode::Both,
                    other => bail!("--mode {other}: use caw, unmap or both"),
                })
            }
            "--lba-start" => lba_start = Some(num()?),
            "--lba-count" => lba_count = Some(num()?),
            "--duration" => {
                let secs: f64 = value
                    .parse()
                    .with_context(|| format!("--duration: not a number: {value}"))?;
                ensure!(
                    secs.is_finite() && secs > 0.0,
                    "--duration must be positive"
                );
                duration = Some(Duration::from_secs_f64(secs));
            }
            "--sessions" => sessions = num()?,
            "--caw-blocks" => caw_blocks = num()?,
            "--rate" => {
                rate = value
                    .parse()
                    .with_context(|| format!("--rate: not a number: {value}"))?;
                ensure!(rate.is_finite() && rate >= 0.0, "--rate must be >= 0");
            }
            other => bail!("unknown option {other}\n\n{USAGE}"),
        }
    }
    let need = |name: &str| format!("{name} is required\n\n{USAGE}");
    let opts = Opts {
        portal: portal.with_context(|| need("--portal"))?,
        target: target.with_context(|| need("--target"))?,
        mode: mode.with_context(|| need("--mode"))?,
        lba_start: lba_start.with_context(|| need("--lba-start"))?,
        lba_count: lba_count.with_context(|| need("--lba-count"))?,
        duration: duration.with_context(|| need("--duration"))?,
        sessions,
        rate,
        caw_blocks,
    };
    ensure!(opts.sessions >= 1, "--sessions must be at least 1");
    ensure!(
        (1..=255).contains(&opts.caw_blocks),
        "--caw-blocks must be 1..255"
    );
    let least = UNMAP_BLOCKS.max(opts.caw_blocks);
    ensure!(
        opts.lba_count / opts.sessions >= least,
        "--lba-count must give each session at least {least} blocks"
    );
    Ok(opts)
}

/// Logs in to `target` (not only the default one that
/// [`Conn::login`] knows), asking for ImmediateData so that a COMPARE AND
/// WRITE's 1 KiB of data goes with the command (the raw initiator cannot
/// answer R2Ts).
fn login(portal: SocketAddr, target: &str, session: u64, caw_blocks: u64) -> Result<Conn> {
    let mut c = Conn::connect(portal)?;
    let initiator = format!(
        "iqn.2026-11.io.trellis:atomics-load-{}-{session}",
        std::process::id()
    );
    let proposed = [("ImmediateData", "Yes"), ("FirstBurstLength", "65536")];
    let mut keys: Vec<(String, String)> = vec![
        ("InitiatorName".to_owned(), initiator),
        ("TargetName".to_owned(), target.to_owned()),
        ("SessionType".to_owned(), "Normal".to_owned()),
        ("HeaderDigest".to_owned(), "None".to_owned()),
        ("DataDigest".to_owned(), "None".to_owned()),
    ];
    keys.extend(
        proposed
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    let answered = c
        .negotiate(keys)
        .with_context(|| format!("login to {target}"))?;
    let immediate = answered.get("ImmediateData").is_none_or(|v| v == "Yes");
    let first_burst: usize = match answered.get("FirstBurstLength") {
        Some(v) => v.parse()?,
        None => 65_536,
    };
    ensure!(
        immediate,
        "the target refused ImmediateData; this generator sends data only as immediate data"
    );
    let need = 2 * BLOCK * caw_blocks as usize;
    ensure!(
        first_burst >= need && c.target_mrdsl >= need,
        "FirstBurstLength {first_burst} / target MaxRecvDataSegmentLength {} below {need} bytes",
        c.target_mrdsl
    );
    c.clear_unit_attentions()?;
    Ok(c)
}

/// What a session did.
#[derive(Debug, Default, Clone)]
struct Stats {
    caw: u64,
    unmap: u64,
    reads: u64,
    miscompares: u64,
    errors: u64,
    reconnects: u64,
    busy: Duration,
    first_error: Option<String>,
}

impl Stats {
    fn add(&mut self, o: &Stats) {
        self.caw += o.caw;
        self.unmap += o.unmap;
        self.reads += o.reads;
        self.miscompares += o.miscompares;
        self.errors += o.errors;
        self.reconnects += o.reconnects;
        self.busy += o.busy;
        if self.first_error.is_none() {
            self.first_error.clone_from(&o.first_error);
        }
    }

    fn error(&mut self, what: String) {
        self.errors += 1;
        if self.first_error.is_none() {
            eprintln!("trellis-atomics-load: {what}");
            self.first_error = Some(what);
        }
    }
}

/// A stride in `1..n` coprime to `n`, near n / golden ratio, so that
/// `(k * stride) % n` visits every slot once per `n` steps, spread out.
fn stride(n: u64) -> u64 {
    fn gcd(a: u64, b: u64) -> u64 {
        if b == 0 {
            a
        } else {
            gcd(b, a % b)
        }
    }
    if n <= 2 {
        return 1;
    }
    let mut s = ((n as f64) * 0.618_033_988_75) as u64;
    s = s.clamp(1, n - 1);
    while gcd(s, n) != 1 {
        s += 1;
    }
    s
}

fn be(v: u64, out: &mut [u8]) {
    let bytes = v.to_be_bytes();
    out.copy_from_slice(&bytes[bytes.len() - out.len()..]);
}

/// Sense key of fixed-format sense data, if any.
fn sense_key(sense: &[u8]) -> Option<u8> {
    sense.get(2).map(|b| b & 0x0f)
}

fn describe(r: &raw::ScsiResult) -> String {
    let asc = r.sense.get(12).copied().unwrap_or(0);
    let ascq = r.sense.get(13).copied().unwrap_or(0);
    format!(
        "status {:#04x}, sense key {:#03x}, ASC/ASCQ {asc:#04x}/{ascq:#04x}",
        r.status,
        sense_key(&r.sense).unwrap_or(0)
    )
}

/// Result of one operation on a live connection.
enum Outcome {
    Done,
    /// The target answered but not with GOOD (counted already).
    Failed,
}

/// One session's slice of the range and its position in it.
struct Walker {
    start: u64,
    caw_blocks: u64,
    caw_slots: u64,
    caw_stride: u64,
    unmap_slots: u64,
    unmap_stride: u64,
    caw_k: u64,
    unmap_k: u64,
    seq: u64,
    session: u64,
}

impl Walker {
    fn new(start: u64, count: u64, session: u64, caw_blocks: u64) -> Self {
        let unmap_slots = count / UNMAP_BLOCKS;
        let caw_slots = count / caw_blocks;
        Self {
            start,
            caw_blocks,
            caw_slots,
            caw_stride: stride(caw_slots),
            unmap_slots,
            unmap_stride: stride(unmap_slots),
            caw_k: 0,
            unmap_k: 0,
            seq: 0,
            session,
        }
    }

    fn next_caw_lba(&mut self) -> u64 {
        let slot = (self.caw_k % self.caw_slots) * self.caw_stride % self.caw_slots;
        self.caw_k += 1;
        self.start + slot * self.caw_blocks
    }

    fn next_unmap_lba(&mut self) -> u64 {
        let slot = (self.unmap_k % self.unmap_slots) * self.unmap_stride % self.unmap_slots;
        self.unmap_k += 1;
        self.start + slot * UNMAP_BLOCKS
    }

    /// READ(16) of the blocks, then COMPARE AND WRITE with what was read.
    fn caw(&mut self, c: &mut Conn, st: &mut Stats) -> Result<Outcome> {
        let lba = self.next_caw_lba();
        let len = BLOCK * self.caw_blocks as usize;
        let mut read = [0u8; 16];
        read[0] = 0x88;
        be(lba, &mut read[2..10]);
        be(self.caw_blocks, &mut read[10..14]);
        let r = c.scsi(&read, &[], len as u32)?;
        st.reads += 1;
        if r.status != GOOD || r.data.len() != len {
            if sense_key(&r.sense) != Some(UNIT_ATTENTION) {
                st.error(format!(
                    "READ(16) LBA {lba}: {} ({} bytes)",
                    describe(&r),
                    r.data.len()
                ));
            }
            return Ok(Outcome::Failed);
        }
        self.seq += 1;
        let mut out = Vec::with_capacity(2 * len);
        out.extend_from_slice(&r.data);
        let mut block = vec![0u8; len];
        for (i, chunk) in block.chunks_exact_mut(8).enumerate() {
            let word = match i % 4 {
                0 => lba,
                1 => self.seq,
                2 => self.session,
                _ => 0x5452_454c_4c49_5321, // "TRELLIS!"
            };
            chunk.copy_from_slice(&word.to_be_bytes());
        }
        out.extend_from_slice(&block);
        let mut caw = [0u8; 16];
        caw[0] = 0x89;
        be(lba, &mut caw[2..10]);
        be(self.caw_blocks, &mut caw[13..14]);
        let r = c.scsi(&caw, &out, 0)?;
        if r.status == GOOD {
            st.caw += 1;
            return Ok(Outcome::Done);
        }
        if r.status == CHECK_CONDITION && sense_key(&r.sense) == Some(MISCOMPARE) {
            st.miscompares += 1;
            st.error(format!("COMPARE AND WRITE LBA {lba}: MISCOMPARE"));
        } else if sense_key(&r.sense) != Some(UNIT_ATTENTION) {
            st.error(format!("COMPARE AND WRITE LBA {lba}: {}", describe(&r)));
        }
        Ok(Outcome::Failed)
    }

    /// UNMAP of one 8-block range (SBC-3 5.28: 8-byte header, one 16-byte
    /// block descriptor).
    fn unmap(&mut self, c: &mut Conn, st: &mut Stats) -> Result<Outcome> {
        let lba = self.next_unmap_lba();
        let mut param = [0u8; 24];
        be(22, &mut param[0..2]); // UNMAP DATA LENGTH (bytes after this field)
        be(16, &mut param[2..4]); // UNMAP BLOCK DESCRIPTOR DATA LENGTH
        be(lba, &mut param[8..16]);
        be(UNMAP_BLOCKS, &mut param[16..20]);
        let mut cdb = [0u8; 10];
        cdb[0] = 0x42;
        be(param.len() as u64, &mut cdb[7..9]);
        let r = c.scsi(&cdb, &param, 0)?;
        if r.status == GOOD {
            st.unmap += 1;
            return Ok(Outcome::Done);
        }
        if sense_key(&r.sense) != Some(UNIT_ATTENTION) {
            st.error(format!("UNMAP LBA {lba}+{UNMAP_BLOCKS}: {}", describe(&r)));
        }
        Ok(Outcome::Failed)
    }
}

/// One session on an established connection: runs operations until `end`,
/// logs in again after a transport error (counted as an error).
fn session(opts: &Opts, index: u64, conn: Conn, start: u64, count: u64, end: Instant) -> Stats {
    let mut st = Stats::default();
    let mut w = Walker::new(start, count, index, opts.caw_blocks);
    let per_session_rate = opts.rate / opts.sessions as f64;
    let interval =
        (per_session_rate > 0.0).then(|| Duration::from_secs_f64(1.0 / per_session_rate));
    let mut next_slot = Instant::now();
    let mut conn = Some(conn);
    let mut failed_logins = 0u32;
    let mut n = 0u64;
    while Instant::now() < end {
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match login(opts.portal, &opts.target, index, opts.caw_blocks) {
                Ok(c) => {
                    failed_logins = 0;
                    conn.insert(c)
                }
                Err(e) => {
                    st.error(format!("session {index}: login: {e:#}"));
                    failed_logins += 1;
                    if failed_logins >= MAX_RECONNECTS {
                        break;
                    }
                    thread::sleep(Duration::from_millis(200));
                    continue;
                }
            },
        };
        if let Some(iv) = interval {
            let now = Instant::now();
            if next_slot > now {
                thread::sleep(next_slot - now);
            }
            next_slot = next_slot.max(now - iv) + iv;
        }
        let caw = match opts.mode {
            Mode::Caw => true,
            Mode::Unmap => false,
            Mode::Both => n.is_multiple_of(2),
        };
        n += 1;
        let t0 = Instant::now();
        let outcome = if caw {
            w.caw(c, &mut st)
        } else {
            w.unmap(c, &mut st)
        };
        st.busy += t0.elapsed();
        match outcome {
            Ok(Outcome::Done | Outcome::Failed) => {}
            Err(e) => {
                st.error(format!("session {index}: {e:#}"));
                st.reconnects += 1;
                conn = None;
            }
        }
    }
    st
}

fn run() -> Result<()> {
    let opts = parse_args()?;
    let slice = opts.lba_count / opts.sessions;
    // Log every session in first: a target that refuses us is fatal, and
    // the clock runs only while commands do.
    let conns = (0..opts.sessions)
        .map(|i| {
            login(opts.portal, &opts.target, i, opts.caw_blocks)
                .with_context(|| format!("session {i}"))
        })
        .collect::<Result<Vec<_>>>()?;
    let t0 = Instant::now();
    let end = t0 + opts.duration;
    let total = thread::scope(|s| {
        let handles: Vec<_> = conns
            .into_iter()
            .zip(0u64..)
            .map(|(conn, i)| {
                let opts = &opts;
                s.spawn(move || session(opts, i, conn, opts.lba_start + i * slice, slice, end))
            })
            .collect();
        let mut total = Stats::default();
        for h in handles {
            match h.join() {
                Ok(st) => total.add(&st),
                Err(_) => total.error("a session thread panicked".to_owned()),
            }
        }
        total
    });
    let elapsed = t0.elapsed().as_secs_f64();
    let ops = total.caw + total.unmap;
    let mean_us = if ops > 0 {
        total.busy.as_secs_f64() * 1e6 / ops as f64
    } else {
        0.0
    };
    let first_error = match &total.first_error {
        Some(e) => format!(
            "\"{}\"",
            e.replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', " ")
        ),
        None => "null".to_owned(),
    };
    println!(
        "{{\"mode\":\"{}\",\"caw_blocks\":{},\"sessions\":{},\"lba_start\":{},\"lba_count\":{},\"seconds\":{elapsed:.3},\
\"ops\":{ops},\"ops_per_s\":{:.1},\"errors\":{},\"caw\":{},\"unmap\":{},\"reads\":{},\
\"miscompares\":{},\"reconnects\":{},\"mean_op_us\":{mean_us:.1},\"first_error\":{first_error}}}",
        opts.mode.name(),
        opts.caw_blocks,
        opts.sessions,
        opts.lba_start,
        opts.lba_count,
        ops as f64 / elapsed,
        total.errors,
        total.caw,
        total.unmap,
        total.reads,
        total.miscompares,
        total.reconnects,
    );
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("trellis-atomics-load: {e:#}");
            ExitCode::from(2)
        }
    }
}
