//! Malformed and hostile input against a real trellisd, from a raw TCP
//! initiator built on our own PDU codec.
//!
//! Each test opens a *witness* session before the abuse and checks afterwards
//! that it still answers a NOP-Out ping and that `iscsi-inq` still works: bad
//! input may cost the offending connection, never anybody else. The daemon
//! runs one core so the abusive and the witness connections share a ring and
//! a stall of one would be a stall of all.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use trellis_iscsi::pdu::{
    split_pdu, write_pdu, Digests, LoginRequest, LoginResponse, NopIn, NopOut, Reject, ScsiCommand,
    Stage, BHS_LEN, MAX_DATA_SEGMENT_LEN, RESERVED_TAG,
};
use trellis_iscsi::text::{parse_pairs, push_pair};
use trellis_tests::{iscsi_tool, Trellisd, DEFAULT_TARGET};

/// Opcodes of the PDUs the target sends.
const OP_NOP_IN: u8 = 0x20;
const OP_LOGIN_RESPONSE: u8 = 0x23;
const OP_REJECT: u8 = 0x3f;
/// Reject reasons (RFC 7143 §11.17.1).
const REASON_PROTOCOL_ERROR: u8 = 0x04;
const REASON_NOT_SUPPORTED: u8 = 0x05;
/// MaxRecvDataSegmentLength of the login phase (RFC 7143 §12.12).
const LOGIN_MRDSL: usize = 8192;

/// A raw initiator: our PDU types on a blocking socket with timeouts.
mod raw {
    use super::*;

    static NEXT_ISID: AtomicU16 = AtomicU16::new(1);

    /// One PDU from the target.
    #[derive(Debug, Clone)]
    pub struct Pdu {
        pub bhs: [u8; BHS_LEN],
        pub data: Vec<u8>,
    }

    impl Pdu {
        pub fn opcode(&self) -> u8 {
            self.bhs[0] & 0x3f
        }
    }

    /// One TCP connection to the target.
    #[derive(Debug)]
    pub struct Conn {
        pub stream: TcpStream,
        rx: Vec<u8>,
        isid: u16,
        /// Next CmdSN to use.
        pub cmdsn: u32,
        /// Next StatSN expected.
        pub statsn: u32,
        next_itt: u32,
        /// The target's declared MaxRecvDataSegmentLength.
        pub target_mrdsl: usize,
    }

    impl Conn {
        /// Connects; reads time out after `timeout`.
        pub fn connect(portal: SocketAddr) -> Result<Self> {
            let stream = TcpStream::connect_timeout(&portal, Duration::from_secs(5))
                .with_context(|| format!("connect {portal}"))?;
            stream.set_nodelay(true)?;
            stream.set_read_timeout(Some(Duration::from_secs(10)))?;
            stream.set_write_timeout(Some(Duration::from_secs(10)))?;
            Ok(Self {
                stream,
                rx: Vec::new(),
                isid: NEXT_ISID.fetch_add(1, Ordering::Relaxed),
                cmdsn: 1,
                statsn: 0,
                next_itt: 0x1000,
                target_mrdsl: LOGIN_MRDSL,
            })
        }

        /// Connects and logs in to the default target, straight to full
        /// feature phase.
        pub fn login(portal: SocketAddr) -> Result<Self> {
            let mut c = Self::connect(portal)?;
            let mut keys = vec![
                ("InitiatorName".to_owned(), c.initiator_name()),
                ("TargetName".to_owned(), DEFAULT_TARGET.to_owned()),
                ("SessionType".to_owned(), "Normal".to_owned()),
                ("HeaderDigest".to_owned(), "None".to_owned()),
                ("DataDigest".to_owned(), "None".to_owned()),
            ];
            for _ in 0..4 {
                let text = text(&keys);
                let bhs = c.login_bhs(
                    Stage::LoginOperationalNegotiation,
                    Stage::FullFeaturePhase,
                    true,
                    text.len(),
                );
                c.send(&bhs, &text)?;
                let p = c.recv()?.context("connection closed during login")?;
                ensure!(
                    p.opcode() == OP_LOGIN_RESPONSE,
                    "not a login response: {p:?}"
                );
                let r = LoginResponse::parse(&p.bhs)?;
                ensure!(
                    (r.status_class, r.status_detail) == (0, 0),
                    "login failed: {:#04x}/{:#04x}",
                    r.status_class,
                    r.status_detail
                );
                let pairs = parse_pairs(&p.data)?;
                for (k, v) in &pairs {
                    if k == "MaxRecvDataSegmentLength" {
                        c.target_mrdsl = v.parse()?;
                    }
                }
                if r.transit && r.nsg == Stage::FullFeaturePhase {
                    c.statsn = r.statsn.wrapping_add(1);
                    c.cmdsn = r.exp_cmdsn;
                    return Ok(c);
                }
                // The target made offers: accept them as they are.
                keys = pairs
                    .into_iter()
                    .filter(|(k, _)| k != "MaxRecvDataSegmentLength" && k != "TargetPortalGroupTag")
                    .collect();
            }
            bail!("login did not reach full feature phase")
        }

        pub fn initiator_name(&self) -> String {
            format!("iqn.2026-01.org.example:bad-input-{}", self.isid)
        }

        pub fn login_bhs(
            &self,
            csg: Stage,
            nsg: Stage,
            transit: bool,
            len: usize,
        ) -> [u8; BHS_LEN] {
            let mut bhs = [0u8; BHS_LEN];
            let [hi, lo] = self.isid.to_be_bytes();
            LoginRequest {
                transit,
                continue_: false,
                csg,
                nsg,
                version_max: 0,
                version_min: 0,
                total_ahs_len: 0,
                data_segment_len: len as u32,
                isid: [0x80, 0x00, 0x7e, 0x57, hi, lo],
                tsih: 0,
                itt: 1,
                cid: 0,
                cmdsn: self.cmdsn,
                exp_statsn: 0,
            }
            .encode(&mut bhs);
            bhs
        }

        pub fn itt(&mut self) -> u32 {
            self.next_itt += 1;
            self.next_itt
        }

        pub fn nop_out_bhs(&mut self, itt: u32, data_len: usize) -> [u8; BHS_LEN] {
            let mut bhs = [0u8; BHS_LEN];
            NopOut {
                immediate: true,
                total_ahs_len: 0,
                data_segment_len: data_len as u32,
                lun: 0,
                itt,
                ttt: RESERVED_TAG,
                cmdsn: self.cmdsn,
                exp_statsn: self.statsn,
            }
            .encode(&mut bhs);
            bhs
        }

        pub fn send(&mut self, bhs: &[u8; BHS_LEN], data: &[u8]) -> Result<()> {
            let mut out = Vec::new();
            write_pdu(bhs, data, Digests::default(), &mut out);
            self.send_bytes(&out)
        }

        pub fn send_bytes(&mut self, bytes: &[u8]) -> Result<()> {
            self.stream.write_all(bytes).context("send")?;
            Ok(())
        }

        /// The next PDU, or `None` once the target closed the connection.
        /// The target's keepalive pings are answered and skipped. A read
        /// timeout is an error: the target must answer or close.
        pub fn recv(&mut self) -> Result<Option<Pdu>> {
            loop {
                let p = match self.next_pdu()? {
                    Some(p) => p,
                    None => return Ok(None),
                };
                if p.opcode() == OP_NOP_IN {
                    let n = NopIn::parse(&p.bhs)?;
                    if n.itt == RESERVED_TAG {
                        let mut bhs = [0u8; BHS_LEN];
                        NopOut {
                            immediate: true,
                            total_ahs_len: 0,
                            data_segment_len: 0,
                            lun: 0,
                            itt: RESERVED_TAG,
                            ttt: n.ttt,
                            cmdsn: self.cmdsn,
                            exp_statsn: self.statsn,
                        }
                        .encode(&mut bhs);
                        self.send(&bhs, &[])?;
                        continue;
                    }
                }
                return Ok(Some(p));
            }
        }

        fn next_pdu(&mut self) -> Result<Option<Pdu>> {
            let mut chunk = vec![0u8; 64 * 1024];
            loop {
                if let Some((raw, n)) =
                    split_pdu(&self.rx, Digests::default(), MAX_DATA_SEGMENT_LEN as usize)?
                {
                    let p = Pdu {
                        bhs: *raw.bhs,
                        data: raw.data.to_vec(),
                    };
                    self.rx.drain(..n);
                    return Ok(Some(p));
                }
                match self.stream.read(&mut chunk) {
                    Ok(0) => {
                        ensure!(self.rx.is_empty(), "closed inside a PDU: {:?}", self.rx);
                        return Ok(None);
                    }
                    Ok(n) => self.rx.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == ErrorKind::ConnectionReset => {
                        ensure!(self.rx.is_empty(), "reset inside a PDU: {:?}", self.rx);
                        return Ok(None);
                    }
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                        bail!("no answer from the target (read timed out)")
                    }
                    Err(e) => return Err(e).context("receive"),
                }
            }
        }

        /// Reads until the target closes; fails on any PDU.
        pub fn expect_closed(&mut self) -> Result<()> {
            if let Some(p) = self.recv()? {
                bail!(
                    "expected the connection closed, got opcode {:#04x}: {p:?}",
                    p.opcode()
                );
            }
            Ok(())
        }

        /// A Reject with `reason` carrying `bhs`; returns it.
        pub fn expect_reject(&mut self, reason: u8, bhs: &[u8; BHS_LEN]) -> Result<Reject> {
            let p = self.recv()?.context("closed instead of a Reject")?;
            ensure!(p.opcode() == OP_REJECT, "expected a Reject, got {p:?}");
            let r = Reject::parse(&p.bhs)?;
            ensure!(
                r.reason == reason,
                "Reject reason {:#04x}, expected {reason:#04x}",
                r.reason
            );
            ensure!(p.bhs[16..20] == [0xff; 4], "Reject ITT is reserved");
            ensure!(p.data == bhs[..], "the Reject carries the offending header");
            Ok(r)
        }

        /// A login failure response with `class`/`detail`, then close.
        pub fn expect_login_reject(&mut self, class: u8, detail: u8) -> Result<()> {
            let p = self.recv()?.context("closed without a login response")?;
            ensure!(
                p.opcode() == OP_LOGIN_RESPONSE,
                "expected a Login Response, got {p:?}"
            );
            let r = LoginResponse::parse(&p.bhs)?;
            ensure!(
                (r.status_class, r.status_detail) == (class, detail),
                "login status {:#04x}/{:#04x}, expected {class:#04x}/{detail:#04x}",
                r.status_class,
                r.status_detail
            );
            ensure!(
                !r.transit && r.tsih == 0,
                "a failed login transits nowhere: {r:?}"
            );
            self.expect_closed()
        }

        /// NOP-Out ping with data; the NOP-In must echo it with the next StatSN.
        pub fn ping(&mut self) -> Result<()> {
            let itt = self.itt();
            let data = b"are you there?".to_vec();
            let bhs = self.nop_out_bhs(itt, data.len());
            self.send(&bhs, &data)?;
            let p = self.recv()?.context("closed instead of a NOP-In")?;
            ensure!(p.opcode() == OP_NOP_IN, "expected a NOP-In, got {p:?}");
            let n = NopIn::parse(&p.bhs)?;
            ensure!(n.itt == itt, "NOP-In ITT {:#x}, expected {itt:#x}", n.itt);
            ensure!(p.data == data, "NOP-In echoes the ping data");
            ensure!(
                n.statsn == self.statsn,
                "StatSN {} expected {}",
                n.statsn,
                self.statsn
            );
            self.statsn = self.statsn.wrapping_add(1);
            Ok(())
        }
    }

    pub fn text(pairs: &[(String, String)]) -> Vec<u8> {
        let mut t = Vec::new();
        for (k, v) in pairs {
            push_pair(&mut t, k, v);
        }
        t
    }
}

use raw::Conn;

/// A one-core daemon with a witness session that has answered one ping.
fn setup() -> (Trellisd, Conn) {
    let d = Trellisd::start_with(None, &["--cores", "1"]).expect("start trellisd");
    let mut w = Conn::login(d.portal).expect("witness login");
    w.ping().expect("witness ping");
    (d, w)
}

/// The witness still answers, a real client still works, nothing panicked.
fn others_unharmed(d: &Trellisd, w: &mut Conn) {
    w.ping()
        .unwrap_or_else(|e| panic!("witness session harmed: {e:#}\n{}", d.log_text()));
    let inq = iscsi_tool("iscsi-inq", &[&d.url(DEFAULT_TARGET, 0)])
        .unwrap_or_else(|e| panic!("iscsi-inq failed: {e:#}\n{}", d.log_text()));
    assert!(inq.contains("Vendor:TRELLIS"), "{inq}");
    let log = d.log_text();
    assert!(!log.contains("panicked"), "the daemon panicked:\n{log}");
}

fn nop_bhs(c: &mut Conn) -> [u8; BHS_LEN] {
    let itt = c.itt();
    c.nop_out_bhs(itt, 0)
}

// ------------------------------------------------------------------ truncation

#[test]
fn half_a_bhs_then_close() {
    let (d, mut w) = setup();
    // Before login.
    let mut c = Conn::connect(d.portal).unwrap();
    let bhs = c.login_bhs(
        Stage::LoginOperationalNegotiation,
        Stage::FullFeaturePhase,
        true,
        0,
    );
    c.send_bytes(&bhs[..24]).unwrap();
    c.stream.shutdown(Shutdown::Write).unwrap();
    c.expect_closed().unwrap();
    // In full feature phase.
    let mut c = Conn::login(d.portal).unwrap();
    let bhs = nop_bhs(&mut c);
    c.send_bytes(&bhs[..24]).unwrap();
    c.stream.shutdown(Shutdown::Write).unwrap();
    c.expect_closed().unwrap();
    others_unharmed(&d, &mut w);
}

#[test]
fn half_a_bhs_then_silence_stalls_nobody() {
    let (d, mut w) = setup();
    // In full feature phase: the partial PDU waits, everybody else goes on,
    // and the rest completes it later.
    let mut ff = Conn::login(d.portal).unwrap();
    let itt = ff.itt();
    let bhs = ff.nop_out_bhs(itt, 4);
    let mut pdu = Vec::new();
    write_pdu(&bhs, b"late", Digests::default(), &mut pdu);
    ff.send_bytes(&pdu[..24]).unwrap();
    // Before login: a connection that never finishes its first header.
    let mut lg = Conn::connect(d.portal).unwrap();
    let lbhs = lg.login_bhs(
        Stage::LoginOperationalNegotiation,
        Stage::FullFeaturePhase,
        true,
        0,
    );
    lg.send_bytes(&lbhs[..24]).unwrap();

    others_unharmed(&d, &mut w);

    ff.send_bytes(&pdu[24..]).unwrap();
    let p = ff.recv().unwrap().expect("NOP-In for the completed PDU");
    assert_eq!(p.opcode(), OP_NOP_IN);
    let n = NopIn::parse(&p.bhs).unwrap();
    assert_eq!((n.itt, n.statsn), (itt, ff.statsn));
    assert_eq!(p.data, b"late");
    ff.statsn += 1;
    ff.ping().unwrap();

    // The stalled login is dropped by the login timeout (15 s), silently.
    lg.stream
        .set_read_timeout(Some(Duration::from_secs(45)))
        .unwrap();
    lg.expect_closed().unwrap();
    others_unharmed(&d, &mut w);
}

// ------------------------------------------------------------------- oversize

/// A header announcing a 16 MiB - 1 data segment (the most the 24-bit field
/// holds) in full feature phase: the target answers Reject (protocol error)
/// with the header, before any data arrives, and closes the connection.
#[test]
fn oversized_data_segment_is_rejected_and_the_connection_closed() {
    let (d, mut w) = setup();
    let mut c = Conn::login(d.portal).unwrap();
    let mut bhs = nop_bhs(&mut c);
    bhs[5..8].copy_from_slice(&[0xff, 0xff, 0xff]);
    c.send_bytes(&bhs).unwrap();
    let r = c.expect_reject(REASON_PROTOCOL_ERROR, &bhs).unwrap();
    assert_eq!(r.statsn, c.statsn);
    c.expect_closed().unwrap();

    // The same for a SCSI Command (WRITE(10)) announcing immediate data.
    let mut c = Conn::login(d.portal).unwrap();
    let mut cmd = [0u8; BHS_LEN];
    let mut cdb = [0u8; 16];
    cdb[0] = 0x2a;
    cdb[8] = 8;
    ScsiCommand {
        immediate: false,
        final_bit: true,
        read: false,
        write: true,
        attr: 1,
        total_ahs_len: 0,
        data_segment_len: 16 * 1024 * 1024 - 1,
        lun: 0,
        itt: c.itt(),
        expected_data_transfer_length: 4096,
        cmdsn: c.cmdsn,
        exp_statsn: c.statsn,
        cdb,
    }
    .encode(&mut cmd);
    c.send_bytes(&cmd).unwrap();
    c.expect_reject(REASON_PROTOCOL_ERROR, &cmd).unwrap();
    c.expect_closed().unwrap();
    others_unharmed(&d, &mut w);
}

/// A NOP-Out whose ping data exceeds the MaxRecvDataSegmentLength the target
/// declared at login; one exactly at the limit is echoed.
#[test]
fn nop_out_with_data_above_the_negotiated_limit() {
    let (d, mut w) = setup();
    let mut c = Conn::login(d.portal).unwrap();
    let limit = c.target_mrdsl;
    assert!(
        limit > LOGIN_MRDSL,
        "the target declared its limit: {limit}"
    );
    // At the limit: fine (the echo is not our concern here, only acceptance).
    let itt = c.itt();
    let data = vec![0x5a; 4096];
    let bhs = c.nop_out_bhs(itt, data.len());
    c.send(&bhs, &data).unwrap();
    let p = c.recv().unwrap().expect("NOP-In");
    assert_eq!((p.opcode(), p.data.len()), (OP_NOP_IN, 4096));
    c.statsn += 1;
    // Above it.
    let itt = c.itt();
    let data = vec![0xa5; limit + 512];
    let bhs = c.nop_out_bhs(itt, data.len());
    let mut pdu = Vec::new();
    write_pdu(&bhs, &data, Digests::default(), &mut pdu);
    // The target may close before it has read it all; that is its right.
    let _ = c.stream.write_all(&pdu);
    let r = c.expect_reject(REASON_PROTOCOL_ERROR, &bhs).unwrap();
    assert_eq!(r.statsn, c.statsn);
    c.expect_closed().unwrap();
    others_unharmed(&d, &mut w);
}

// ----------------------------------------------------------- unknown opcodes

/// An undefined opcode (0x1f) and target-only ones (0x21 SCSI Response, 0x3f
/// Reject) in full feature phase: Reject "command not supported" carrying the
/// header, and the connection goes on.
#[test]
fn unknown_and_target_opcodes_are_rejected_and_the_connection_survives() {
    let (d, mut w) = setup();
    let mut c = Conn::login(d.portal).unwrap();
    for (op, data_len) in [(0x1f_u8, 0usize), (0x21, 0), (0x1f, 13), (0x3f, 0)] {
        let itt = c.itt();
        let mut bhs = [0u8; BHS_LEN];
        bhs[0] = op;
        bhs[1] = 0x80;
        bhs[5..8].copy_from_slice(&(data_len as u32).to_be_bytes()[1..]);
        bhs[16..20].copy_from_slice(&itt.to_be_bytes());
        bhs[24..28].copy_from_slice(&c.cmdsn.to_be_bytes());
        c.send(&bhs, &vec![0xcc; data_len]).unwrap();
        let r = c
            .expect_reject(REASON_NOT_SUPPORTED, &bhs)
            .unwrap_or_else(|e| panic!("opcode {op:#04x}: {e:#}"));
        assert_eq!(r.statsn, c.statsn, "a Reject takes the next StatSN");
        c.statsn += 1;
        // Same connection, still in step.
        c.ping().unwrap();
    }
    others_unharmed(&d, &mut w);
}

// ------------------------------------------------------------------- login

/// Full-feature PDUs before the login completed: the connection is closed,
/// with no answer and no session.
#[test]
fn commands_before_login_close_the_connection() {
    let (d, mut w) = setup();
    // A SCSI Command (INQUIRY) as the very first PDU.
    let mut c = Conn::connect(d.portal).unwrap();
    let mut bhs = [0u8; BHS_LEN];
    let mut cdb = [0u8; 16];
    cdb[0] = 0x12;
    cdb[4] = 36;
    ScsiCommand {
        immediate: false,
        final_bit: true,
        read: true,
        write: false,
        attr: 1,
        total_ahs_len: 0,
        data_segment_len: 0,
        lun: 0,
        itt: 5,
        expected_data_transfer_length: 36,
        cmdsn: 1,
        exp_statsn: 0,
        cdb,
    }
    .encode(&mut bhs);
    c.send(&bhs, &[]).unwrap();
    c.expect_closed().unwrap();

    // A NOP-Out as the first PDU.
    let mut c = Conn::connect(d.portal).unwrap();
    let bhs = nop_bhs(&mut c);
    c.send(&bhs, &[]).unwrap();
    c.expect_closed().unwrap();

    // Security stage done, operational stage skipped: a SCSI Command.
    let mut c = Conn::connect(d.portal).unwrap();
    let text = raw::text(&[
        ("InitiatorName".into(), c.initiator_name()),
        ("TargetName".into(), DEFAULT_TARGET.into()),
        ("SessionType".into(), "Normal".into()),
        ("AuthMethod".into(), "None".into()),
    ]);
    let lbhs = c.login_bhs(
        Stage::SecurityNegotiation,
        Stage::LoginOperationalNegotiation,
        true,
        text.len(),
    );
    c.send(&lbhs, &text).unwrap();
    let p = c.recv().unwrap().expect("login response");
    let r = LoginResponse::parse(&p.bhs).unwrap();
    assert_eq!((r.status_class, r.status_detail), (0, 0));
    assert!(r.transit);
    assert_eq!(r.nsg, Stage::LoginOperationalNegotiation);
    c.send(&bhs, &[]).unwrap();
    c.expect_closed().unwrap();
    others_unharmed(&d, &mut w);
}

/// Login requests that break the stage rules get a Login Response with
/// status 0x0200 (initiator error) and the connection is closed.
#[test]
fn login_stage_violations_are_refused() {
    let (d, mut w) = setup();
    let identity = |c: &Conn| {
        raw::text(&[
            ("InitiatorName".into(), c.initiator_name()),
            ("TargetName".into(), DEFAULT_TARGET.into()),
            ("SessionType".into(), "Normal".into()),
        ])
    };
    // CSG = FullFeaturePhase on the first request.
    let mut c = Conn::connect(d.portal).unwrap();
    let text = identity(&c);
    let bhs = c.login_bhs(
        Stage::FullFeaturePhase,
        Stage::FullFeaturePhase,
        true,
        text.len(),
    );
    c.send(&bhs, &text).unwrap();
    c.expect_login_reject(0x02, 0x00).unwrap();

    // A transition backwards (operational -> security).
    let mut c = Conn::connect(d.portal).unwrap();
    let text = identity(&c);
    let bhs = c.login_bhs(
        Stage::LoginOperationalNegotiation,
        Stage::SecurityNegotiation,
        true,
        text.len(),
    );
    c.send(&bhs, &text).unwrap();
    c.expect_login_reject(0x02, 0x00).unwrap();

    // The reserved stage value 2 as NSG.
    let mut c = Conn::connect(d.portal).unwrap();
    let text = identity(&c);
    let mut bhs = c.login_bhs(
        Stage::LoginOperationalNegotiation,
        Stage::FullFeaturePhase,
        true,
        text.len(),
    );
    bhs[1] = (bhs[1] & !0x03) | 0x02;
    c.send(&bhs, &text).unwrap();
    c.expect_login_reject(0x02, 0x00).unwrap();

    // Back to the security stage after the target moved on to operational.
    let mut c = Conn::connect(d.portal).unwrap();
    let pairs = vec![
        ("InitiatorName".to_owned(), c.initiator_name()),
        ("TargetName".to_owned(), DEFAULT_TARGET.to_owned()),
        ("AuthMethod".to_owned(), "None".to_owned()),
    ];
    let text = raw::text(&pairs);
    let bhs = c.login_bhs(
        Stage::SecurityNegotiation,
        Stage::LoginOperationalNegotiation,
        true,
        text.len(),
    );
    c.send(&bhs, &text).unwrap();
    let p = c.recv().unwrap().expect("login response");
    let r = LoginResponse::parse(&p.bhs).unwrap();
    assert_eq!(
        (r.status_class, r.transit, r.nsg),
        (0, true, Stage::LoginOperationalNegotiation)
    );
    let bhs = c.login_bhs(Stage::SecurityNegotiation, Stage::FullFeaturePhase, true, 0);
    c.send(&bhs, &[]).unwrap();
    c.expect_login_reject(0x02, 0x00).unwrap();

    others_unharmed(&d, &mut w);
}

// ------------------------------------------------------------------ garbage

/// xorshift64*: deterministic garbage without a dependency.
fn garbage(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
        })
        .collect()
}

/// 4 KiB of random bytes as the first thing on a connection. Whatever the
/// first 48 bytes say, the connection ends; where they announce a data
/// segment above the login-phase limit (nearly always), the answer is exactly
/// one Reject (protocol error) carrying them.
#[test]
fn random_garbage_after_connect_closes_only_that_connection() {
    let (d, mut w) = setup();
    let mut exact = 0;
    for seed in 1..=8u64 {
        let g = garbage(seed, 4096);
        let mut c = Conn::connect(d.portal).unwrap();
        c.stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        // The target may close before it has read it all.
        let _ = c.stream.write_all(&g);
        let head: [u8; BHS_LEN] = g[..BHS_LEN].try_into().unwrap();
        let dsl = usize::from(head[5]) << 16 | usize::from(head[6]) << 8 | usize::from(head[7]);
        if dsl > LOGIN_MRDSL {
            exact += 1;
            c.expect_reject(REASON_PROTOCOL_ERROR, &head)
                .unwrap_or_else(|e| panic!("seed {seed}: {e:#}"));
            c.expect_closed()
                .unwrap_or_else(|e| panic!("seed {seed}: {e:#}"));
        } else {
            // Anything may come back first, but the connection must end.
            let mut n = 0;
            while c
                .recv()
                .unwrap_or_else(|e| panic!("seed {seed}: {e:#}"))
                .is_some()
            {
                n += 1;
                assert!(n < 4, "seed {seed}: the target keeps answering garbage");
            }
        }
    }
    assert!(
        exact >= 6,
        "the seeds exercise the exact case ({exact} of 8)"
    );
    others_unharmed(&d, &mut w);
}
