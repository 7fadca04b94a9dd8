//! `trellis-shared-latency`: times the commands whose state a cluster
//! shares across members, one at a time through one session, for
//! `benches/fio/cluster.sh --shared`.
//!
//! - `prout`: PERSISTENT RESERVE OUT, REGISTER AND IGNORE EXISTING KEY with
//!   a new key each time (every one changes the state, so each is one
//!   commit through the replicated log and waits for every member); the
//!   registration is removed at the end.
//! - `caw`: READ one block, then COMPARE AND WRITE it (matching, so it
//!   writes); only the COMPARE AND WRITE is timed. Through a member that
//!   is not the device's owner it is forwarded to the owner.
//!
//! Every timed command must end GOOD (else the tool fails: it would time
//! an error path). One line of JSON goes to stdout: count, median_us,
//! p99_us, max_us.

use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use trellis_tests::raw::Conn;

const USAGE: &str = "\
Usage: trellis-shared-latency --portal HOST:PORT --target IQN --initiator IQN
                              --mode prout|caw --count N [--lba N]

Prints one line of JSON: count, median_us, p99_us, max_us.";

/// Status GOOD.
const GOOD: u8 = 0;
/// Block size of the device.
const BLOCK: usize = 512;

struct Args {
    portal: SocketAddr,
    target: String,
    initiator: String,
    mode: String,
    count: usize,
    lba: u64,
}

fn args() -> Result<Args> {
    let mut it = std::env::args().skip(1);
    let (mut portal, mut target, mut initiator, mut mode) = (None, None, None, None);
    let (mut count, mut lba) = (1000, 1000);
    while let Some(a) = it.next() {
        let mut value = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--portal" => {
                portal = Some(
                    value()?
                        .to_socket_addrs()?
                        .next()
                        .context("--portal: no address")?,
                )
            }
            "--target" => target = Some(value()?),
            "--initiator" => initiator = Some(value()?),
            "--mode" => mode = Some(value()?),
            "--count" => count = value()?.parse().context("--count")?,
            "--lba" => lba = value()?.parse().context("--lba")?,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    let mode = mode.context("--mode is required")?;
    ensure!(
        mode == "prout" || mode == "caw",
        "--mode: prout or caw, not {mode:?}"
    );
    ensure!(count > 0, "--count: at least 1");
    Ok(Args {
        portal: portal.context("--portal is required")?,
        target: target.context("--target is required")?,
        initiator: initiator.context("--initiator is required")?,
        mode,
        count,
        lba,
    })
}

/// REGISTER AND IGNORE EXISTING KEY with service action key `key`.
fn register(c: &mut Conn, key: u64) -> Result<u8> {
    let mut p = vec![0u8; 24];
    p[8..16].copy_from_slice(&key.to_be_bytes());
    Ok(c.scsi(&[0x5F, 0x06, 0, 0, 0, 0, 0, 0, 24, 0], &p, 0)?
        .status)
}

/// The time one command took; it must end GOOD.
fn timed(what: &str, f: impl FnOnce() -> Result<u8>) -> Result<Duration> {
    let started = Instant::now();
    let status = f()?;
    let took = started.elapsed();
    ensure!(status == GOOD, "{what} ended with status {status:#x}");
    Ok(took)
}

fn run(a: &Args) -> Result<Vec<Duration>> {
    let mut c = Conn::login_to(a.portal, &a.target, &a.initiator)?;
    c.set_timeout(Duration::from_secs(30))?;
    c.clear_unit_attentions()?;
    let mut took = Vec::with_capacity(a.count);
    if a.mode == "prout" {
        for i in 0..a.count {
            let key = 0x5E00_0000_0000_0000 | (i as u64 + 1);
            took.push(timed("PERSISTENT RESERVE OUT", || register(&mut c, key))?);
        }
        ensure!(register(&mut c, 0)? == GOOD, "unregister at the end");
        return Ok(took);
    }
    let l = a.lba.to_be_bytes();
    for i in 0..a.count {
        let mut read = [0u8; 16];
        read[0] = 0x88;
        read[2..10].copy_from_slice(&l);
        read[13] = 1;
        let r = c.scsi(&read, &[], BLOCK as u32)?;
        ensure!(r.status == GOOD && r.data.len() == BLOCK, "READ(16): {r:?}");
        let mut data = r.data.clone();
        data.extend((0..BLOCK).map(|j| (i + j) as u8));
        let mut cdb = [0u8; 16];
        cdb[0] = 0x89;
        cdb[2..10].copy_from_slice(&l);
        cdb[13] = 1;
        took.push(timed("COMPARE AND WRITE", || {
            Ok(c.scsi(&cdb, &data, 0)?.status)
        })?);
    }
    Ok(took)
}

fn main() -> ExitCode {
    let result = args().and_then(|a| run(&a));
    match result {
        Ok(mut took) => {
            took.sort();
            let at = |q: f64| took[((took.len() - 1) as f64 * q).round() as usize].as_micros();
            println!(
                "{{\"count\": {}, \"median_us\": {}, \"p99_us\": {}, \"max_us\": {}}}",
                took.len(),
                at(0.5),
                at(0.99),
                at(1.0)
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("trellis-shared-latency: {e:#}");
            ExitCode::FAILURE
        }
    }
}
