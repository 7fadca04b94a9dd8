//! Connection floods against a real trellisd: the member neither spins
//! nor floods its log, and a good host still logs in.
//!
//! - at the portal's connection cap, with idle connections from many
//!   addresses: stale logins make room, a good client logs in;
//! - at the descriptor limit (the open-file limit lowered under the
//!   running daemon with `prlimit`): accepts pause instead of spinning,
//!   a line per interval is logged, a good client still logs in.
//!
//! The member's CPU is its user+system time from `/proc/PID/stat` over the
//! flood (a resource, not a speed); floods are bounded in count and time.

// Test helpers: a panic is the test failing, with the message in hand.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use trellis_tests::{closed_within, connect_from, eventually, iscsi_tool, Trellisd};

const TARGET: &str = "iqn.2026-12.io.trellis:floods";

fn config(extra: &str) -> String {
    format!(
        "[iscsi]\n{extra}\n[[device]]\nname = \"d0\"\nsize = \"16MiB\"\nmemory = true\n\n\
         [[target]]\nname = \"{TARGET}\"\nluns = [{{ lun = 0, device = \"d0\" }}]\n"
    )
}

/// CPU seconds (user + system) `pid` has used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which ends with ')'): utime is the
    // 12th, stime the 13th.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks / 100.0
}

/// Opens connections to `portal` from 127.0.0.`first`.. (`addresses` of
/// them, round robin) for `duration`, holding up to `hold` at once (the
/// oldest dropped past that) and sending nothing; at most `max` in all.
/// Returns how many it opened.
fn flood(
    portal: SocketAddr,
    first: u8,
    addresses: u8,
    hold: usize,
    max: usize,
    duration: Duration,
    stop: &AtomicBool,
) -> usize {
    let start = Instant::now();
    let mut held = std::collections::VecDeque::new();
    let mut opened = 0;
    let mut i = 0u32;
    while start.elapsed() < duration && opened < max && !stop.load(Ordering::Relaxed) {
        let src = first + (i % u32::from(addresses)) as u8;
        i += 1;
        // A full accept backlog leaves a connect hanging: move on.
        match connect_from(src, portal, Duration::from_millis(100)) {
            Ok(s) => {
                opened += 1;
                held.push_back(s);
                if held.len() > hold {
                    held.pop_front();
                }
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    opened
}

/// The good client: iscsi-inq from 127.0.0.1 through the portal.
fn good_client_logs_in(d: &Trellisd) -> Result<(), String> {
    iscsi_tool("iscsi-inq", &[&d.url(TARGET, 0)])
        .map_err(|e| format!("{e:#}"))
        .and_then(|out| {
            if out.contains("TRELLIS") {
                Ok(())
            } else {
                Err(out)
            }
        })
}

/// Runs `flood` on a thread while `during` runs; the flood's connection
/// count, the member's CPU seconds per second over it, and `during`'s
/// result.
fn under_flood<T>(
    d: &Trellisd,
    addresses: u8,
    hold: usize,
    during: impl FnOnce() -> T,
) -> (usize, f64, T) {
    let pid = d.pid().unwrap();
    let portal = d.portal;
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = Arc::clone(&stop);
    let cpu0 = cpu_seconds(pid);
    let t0 = Instant::now();
    let flooder = std::thread::spawn(move || {
        flood(
            portal,
            10,
            addresses,
            hold,
            20_000,
            Duration::from_secs(12),
            &stop2,
        )
    });
    // Let the flood fill the caps first.
    std::thread::sleep(Duration::from_secs(2));
    let result = during();
    stop.store(true, Ordering::SeqCst);
    let opened = flooder.join().unwrap();
    let cpu = (cpu_seconds(pid) - cpu0) / t0.elapsed().as_secs_f64();
    (opened, cpu, result)
}

fn count_lines(log: &str, what: &str) -> usize {
    log.lines().filter(|l| l.contains(what)).count()
}

#[test]
fn a_full_portal_makes_room_for_a_good_host_and_logs_a_line_per_interval() {
    let d = Trellisd::start_with(
        Some(&config("max_connections = 48\nmax_logins_per_address = 4")),
        &[],
    )
    .unwrap();
    // One address holds 4 logins in progress; a 5th is closed at once.
    let from9: Vec<TcpStream> = (0..5)
        .map(|_| connect_from(9, d.portal, Duration::from_secs(5)).unwrap())
        .collect();
    let held = from9
        .iter()
        .filter(|s| !closed_within(s, Duration::from_millis(500)))
        .count();
    assert_eq!(held, 4, "one address holds max_logins_per_address logins");
    drop(from9);
    // 16 addresses x 4 logins each > 48: the portal fills with idle
    // logins, and addresses reach their own cap.
    let (opened, cpu, logged_in) = under_flood(&d, 16, 400, || {
        eventually(
            "the good client logs in during the flood",
            Duration::from_secs(8),
            || good_client_logs_in(&d),
        )
    });
    let () = logged_in;
    let log = d.log_text();
    assert!(opened > 500, "the flood opened only {opened} connections");
    assert!(
        log.contains("the portal holds its cap of 48 connections"),
        "{}",
        d.log_tail(30)
    );
    assert!(
        log.contains("4 logins from that address are in progress already"),
        "{}",
        d.log_tail(30)
    );
    // One line per 5 s per core and kind, with a count, not one per
    // connection.
    eprintln!(
        "flood: {opened} connections, member CPU {cpu:.3} of a core, {} bytes of log",
        log.len()
    );
    let lines = count_lines(&log, "connections refused");
    assert!(
        lines <= 12,
        "{lines} refusal lines for {opened} connections"
    );
    assert!(
        cpu < 0.5,
        "the member used {cpu:.2} of a core under the flood"
    );
    // After the flood the portal serves as before.
    good_client_logs_in(&d).unwrap();
}

#[test]
fn out_of_descriptors_accepts_pause_and_a_good_host_still_logs_in() {
    let d = Trellisd::start_with(Some(&config("")), &[]).unwrap();
    let pid = d.pid().unwrap().to_string();
    // The open-file limit lowered under the running member (its portal cap
    // of 1024 was sized for the limit it started with).
    let out = std::process::Command::new("prlimit")
        .args(["--pid", &pid, "--nofile=96:96"])
        .output()
        .expect("prlimit (util-linux) runs");
    assert!(out.status.success(), "prlimit needs root: {out:?}");
    let (opened, cpu, logged_in) = under_flood(&d, 40, 600, || {
        eventually(
            "the good client logs in at the descriptor limit",
            Duration::from_secs(9),
            || good_client_logs_in(&d),
        )
    });
    let () = logged_in;
    let log = d.log_text();
    assert!(opened > 200, "the flood opened only {opened} connections");
    assert!(
        log.contains("accepts failing (Too many open files"),
        "the flood did not reach the descriptor limit: {}",
        d.log_tail(30)
    );
    eprintln!(
        "flood: {opened} connections, member CPU {cpu:.3} of a core, {} bytes of log",
        log.len()
    );
    let lines = count_lines(&log, "accepts fail");
    assert!(lines <= 12, "{lines} lines about failing accepts");
    assert!(
        cpu < 0.5,
        "the member used {cpu:.2} of a core at the descriptor limit"
    );
    let log_bytes = log.len();
    assert!(log_bytes < 64 << 10, "{log_bytes} bytes of log");
}
