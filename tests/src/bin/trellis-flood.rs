//! `trellis-flood`: the hostile load of `benches/flood/run.sh`, which runs
//! it against trellisd (this build and an older one) and measures the
//! member's CPU, memory and log while it lasts. Bounded in time and count;
//! loopback only.
//!
//! - `idle ADDR`: hold idle TCP connections to ADDR (a portal or the API)
//!   from `--hosts` source addresses 127.0.0.10.. (`--per-host` each,
//!   reopened as the member closes them).
//! - `chap PORTAL TARGET INITIATOR`: CHAP logins with wrong secrets from
//!   `--parallel` threads; counts the refusals (guesses) and their rate.
//! - `rejects PORTAL`: logs in to the default target and sends unknown
//!   opcodes as fast as it can, logging in again when dropped; counts the
//!   Rejects it got.
//!
//! Every mode runs `--seconds` and prints one line of JSON.

use std::collections::VecDeque;
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use trellis_iscsi::pdu::{LoginResponse, Stage, BHS_LEN};
use trellis_tests::raw::{self, Conn};

struct Args {
    mode: String,
    pos: Vec<String>,
    seconds: u64,
    hosts: u8,
    per_host: usize,
    parallel: usize,
}

fn args() -> Result<Args> {
    let mut a = Args {
        mode: String::new(),
        pos: Vec::new(),
        seconds: 10,
        hosts: 10,
        per_host: 300,
        parallel: 16,
    };
    let mut it = std::env::args().skip(1);
    while let Some(x) = it.next() {
        let mut num = |what: &str| -> Result<u64> {
            it.next()
                .with_context(|| format!("{what} needs a value"))?
                .parse()
                .with_context(|| format!("{what}: not a number"))
        };
        match x.as_str() {
            "--seconds" => a.seconds = num("--seconds")?.clamp(1, 600),
            "--hosts" => a.hosts = u8::try_from(num("--hosts")?.clamp(1, 200))?,
            "--per-host" => a.per_host = usize::try_from(num("--per-host")?.clamp(1, 5000))?,
            "--parallel" => a.parallel = usize::try_from(num("--parallel")?.clamp(1, 256))?,
            _ if a.mode.is_empty() => a.mode = x,
            _ => a.pos.push(x),
        }
    }
    Ok(a)
}

fn loopback(addr: &str) -> Result<SocketAddr> {
    let a: SocketAddr = addr
        .parse()
        .with_context(|| format!("{addr}: not IP:PORT"))?;
    ensure!(a.ip().is_loopback(), "{a}: floods go to loopback only");
    Ok(a)
}

/// Idle connections from many source addresses, reopened when closed.
fn idle(a: &Args) -> Result<String> {
    let to = loopback(a.pos.first().context("idle ADDR")?)?;
    let deadline = Instant::now() + Duration::from_secs(a.seconds);
    let cap = usize::from(a.hosts) * a.per_host;
    let mut held: VecDeque<TcpStream> = VecDeque::new();
    let (mut opened, mut failed) = (0u64, 0u64);
    let mut i = 0usize;
    while Instant::now() < deadline {
        if held.len() >= cap {
            // Drop those the member closed; keep the others.
            // Keep those still open and silent; drop those the member closed.
            held.retain(|s| {
                let mut b = [0u8; 1];
                s.set_nonblocking(true).is_ok()
                    && matches!(s.peek(&mut b), Err(ref e) if e.kind() == std::io::ErrorKind::WouldBlock)
            });
            if held.len() >= cap {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        }
        let src = 10 + (i % usize::from(a.hosts)) as u8;
        i += 1;
        match trellis_tests::connect_from(src, to, Duration::from_millis(200)) {
            Ok(s) => {
                opened += 1;
                held.push_back(s);
            }
            Err(_) => {
                failed += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }
    Ok(format!(
        "{{\"mode\":\"idle\",\"opened\":{opened},\"connect_failures\":{failed},\"held_at_end\":{}}}",
        held.len()
    ))
}

/// One CHAP login with a wrong secret; whether it was refused as an
/// authentication failure.
fn chap_guess(portal: SocketAddr, target: &str, initiator: &str, guess: u64) -> Result<bool> {
    let mut c = Conn::connect(portal)?;
    c.stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let step = |c: &mut Conn,
                keys: &[(&str, String)],
                transit: bool|
     -> Result<(LoginResponse, Vec<(String, String)>)> {
        let pairs: Vec<(String, String)> = keys
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        let text = raw::text(&pairs);
        let bhs = c.login_bhs(
            Stage::SecurityNegotiation,
            Stage::LoginOperationalNegotiation,
            transit,
            text.len(),
        );
        c.send(&bhs, &text)?;
        let p = c.recv()?.context("closed during login")?;
        let r = LoginResponse::parse(&p.bhs)?;
        let answer = trellis_iscsi::text::parse_pairs(&p.data).unwrap_or_default();
        Ok((r, answer))
    };
    let (r, _) = step(
        &mut c,
        &[
            ("InitiatorName", initiator.to_owned()),
            ("TargetName", target.to_owned()),
            ("SessionType", "Normal".to_owned()),
            ("AuthMethod", "CHAP".to_owned()),
        ],
        false,
    )?;
    ensure!(
        r.status_class == 0,
        "login refused before CHAP: {:#04x}/{:#04x}",
        r.status_class,
        r.status_detail
    );
    let (r, offer) = step(&mut c, &[("CHAP_A", "5".to_owned())], false)?;
    ensure!(r.status_class == 0, "CHAP_A refused");
    ensure!(
        offer.iter().any(|(k, _)| k == "CHAP_C"),
        "no challenge: {offer:?}"
    );
    let wrong = format!(
        "0x{:032x}",
        u128::from(guess).wrapping_mul(0x9E37_79B9_7F4A_7C15)
    );
    let (r, _) = step(
        &mut c,
        &[("CHAP_N", "host1".to_owned()), ("CHAP_R", wrong)],
        true,
    )?;
    Ok((r.status_class, r.status_detail) == (2, 1))
}

fn chap(a: &Args) -> Result<String> {
    let portal = loopback(a.pos.first().context("chap PORTAL TARGET INITIATOR")?)?;
    let target = a
        .pos
        .get(1)
        .context("chap PORTAL TARGET INITIATOR")?
        .clone();
    let initiator = a
        .pos
        .get(2)
        .context("chap PORTAL TARGET INITIATOR")?
        .clone();
    let deadline = Instant::now() + Duration::from_secs(a.seconds);
    let (refused, errors) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let started = Instant::now();
    let threads: Vec<_> = (0..a.parallel)
        .map(|t| {
            let (target, initiator) = (target.clone(), initiator.clone());
            let (refused, errors) = (Arc::clone(&refused), Arc::clone(&errors));
            std::thread::spawn(move || {
                let mut n = t as u64 * 1_000_000;
                while Instant::now() < deadline {
                    n += 1;
                    match chap_guess(portal, &target, &initiator, n) {
                        Ok(true) => refused.fetch_add(1, Ordering::Relaxed),
                        Ok(false) | Err(_) => errors.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    let secs = started.elapsed().as_secs_f64();
    let g = refused.load(Ordering::Relaxed);
    Ok(format!(
        "{{\"mode\":\"chap\",\"guesses\":{g},\"per_second\":{:.1},\"errors\":{},\"seconds\":{secs:.1}}}",
        g as f64 / secs,
        errors.load(Ordering::Relaxed)
    ))
}

fn rejects(a: &Args) -> Result<String> {
    let portal = loopback(a.pos.first().context("rejects PORTAL")?)?;
    let deadline = Instant::now() + Duration::from_secs(a.seconds);
    let mut bhs = [0u8; BHS_LEN];
    bhs[0] = 0x1f;
    bhs[1] = 0x80;
    let burst = bhs.repeat(256);
    let (mut rejects, mut logins, mut drops) = (0u64, 0u64, 0u64);
    while Instant::now() < deadline {
        let Ok(mut c) = Conn::login(portal) else {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        logins += 1;
        c.stream
            .set_read_timeout(Some(Duration::from_millis(500)))?;
        'conn: while Instant::now() < deadline {
            if c.send_bytes(&burst).is_err() {
                drops += 1;
                break;
            }
            for _ in 0..256 {
                match c.recv() {
                    Ok(Some(p)) if p.opcode() == 0x3f => rejects += 1,
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => {
                        drops += 1;
                        break 'conn;
                    }
                }
            }
        }
    }
    Ok(format!(
        "{{\"mode\":\"rejects\",\"rejects\":{rejects},\"logins\":{logins},\"dropped\":{drops},\"seconds\":{}}}",
        a.seconds
    ))
}

fn main() -> ExitCode {
    let run = || -> Result<String> {
        let a = args()?;
        // Hold as many connections as the hard limit allows.
        let _ = trellis_datapath::raise_nofile_limit();
        match a.mode.as_str() {
            "idle" => idle(&a),
            "chap" => chap(&a),
            "rejects" => rejects(&a),
            other => bail!("unknown mode {other:?} (idle, chap, rejects)"),
        }
    };
    match run() {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("trellis-flood: {e:#}");
            ExitCode::from(2)
        }
    }
}
