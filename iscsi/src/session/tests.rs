//! Sans-IO tests of [`Connection`]: a fake [`Host`], a real buffer pool,
//! encoded PDUs in, and the flattened `take_send` messages parsed back with
//! `split_pdu` and the typed headers. Time is an `Instant` the test moves;
//! no sockets, no sleeps.
//!
//! Every rig checks on drop that the session gave every pool buffer back.

use std::time::{Duration, Instant};

use trellis_datapath::{BufPool, PoolConfig, SendMsg, SendSeg};

use super::*;
use crate::login::{ChapPolicy, LoginStatus, SessionRequest};
use crate::pdu::{
    split_pdu, write_pdu, DataIn, DataOut, LoginRequest, LoginResponse, LogoutRequest,
    LogoutResponse, NopIn, NopOut, R2t, Reject, ScsiCommand, ScsiResponse, Stage, TaskMgmtRequest,
    TaskMgmtResponse, MAX_DATA_SEGMENT_LEN,
};
use crate::scsi::{LunDevice, LunShared, PortContext};
use crate::text::{parse_pairs, push_pair};

const INI: &str = "iqn.2026-01.org.example:initiator";
const TGT: &str = "iqn.2026-11.io.trellis:default";
const TSIH: u16 = 0x4321;
const BS: u32 = 512;
const BLOCKS: u64 = 4096;
const LUN0: u64 = 0;
/// The target's declared MaxRecvDataSegmentLength.
const TARGET_MRDSL: u32 = 8192;
const WINDOW: u32 = 16;
const NOP_INTERVAL: Duration = Duration::from_secs(5);
const NOP_TIMEOUT: Duration = Duration::from_secs(30);
const LOGIN_TIMEOUT: Duration = Duration::from_secs(15);
const MS: Duration = Duration::from_millis(1);
const EIO: i32 = 5;
const ENOSPC: i32 = 28;

// ---------------------------------------------------------------- fake host

struct FakeHost {
    luns: Rc<LunTable>,
    allocated: Vec<SessionRequest>,
    ended: Vec<u16>,
}

impl FakeHost {
    fn new() -> Self {
        let dev = LunDevice {
            name: "disk0".into(),
            block_size: BS,
            num_blocks: BLOCKS,
            read_only: false,
            naa: [0x60, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15],
            serial: "0123456789".into(),
            write_cache: true,
            max_transfer_blocks: 0,
            optimal_transfer_blocks: 0,
            rotational: false,
            thin: false,
            holes_read_zero: false,
        };
        let luns = LunTable {
            port: PortContext {
                target_name: TGT.into(),
                tpgt: 1,
                relative_port_id: 1,
                tpg_id: 1,
                groups: Vec::new(),
            },
            luns: vec![LunEntry {
                lun: LUN0,
                dev: Rc::new(dev),
                slot: 0,
                shared: std::sync::Arc::new(LunShared::new()),
            }],
            ids: vec![0],
        };
        Self {
            luns: Rc::new(luns),
            allocated: Vec::new(),
            ended: Vec::new(),
        }
    }
}

impl LoginContext for FakeHost {
    fn target_exists(&self, target: &str) -> bool {
        target == TGT
    }
    fn initiator_allowed(&self, _target: Option<&str>, _initiator: &str) -> bool {
        true
    }
    fn chap(&self, _target: Option<&str>, _initiator: &str) -> Option<ChapPolicy> {
        None
    }
    fn target_alias(&self, _target: &str) -> Option<String> {
        None
    }
    fn allocate_session(&mut self, req: &SessionRequest) -> Result<u16, LoginStatus> {
        self.allocated.push(req.clone());
        Ok(TSIH)
    }
}

impl Host for FakeHost {
    fn login(&mut self) -> &mut dyn LoginContext {
        self
    }
    fn luns(&mut self, target: &str, _initiator: &str) -> Option<Rc<LunTable>> {
        (target == TGT).then(|| Rc::clone(&self.luns))
    }
    fn send_targets(&self, _initiator: &str, _only: Option<&str>) -> Vec<(String, Vec<String>)> {
        Vec::new()
    }
    fn session_ended(&mut self, tsih: u16) {
        self.ended.push(tsih);
    }
}

// ------------------------------------------------------------- wire helpers

/// One PDU the target sent.
#[derive(Debug, Clone)]
struct Pdu {
    bhs: [u8; BHS_LEN],
    data: Vec<u8>,
}

impl Pdu {
    fn data_in(&self) -> DataIn {
        DataIn::parse(&self.bhs).unwrap_or_else(|e| panic!("not a Data-In: {e}; {self:?}"))
    }
    fn response(&self) -> ScsiResponse {
        ScsiResponse::parse(&self.bhs).unwrap_or_else(|e| panic!("not a Response: {e}; {self:?}"))
    }
    fn r2t(&self) -> R2t {
        R2t::parse(&self.bhs).unwrap_or_else(|e| panic!("not an R2T: {e}; {self:?}"))
    }
    fn nop_in(&self) -> NopIn {
        NopIn::parse(&self.bhs).unwrap_or_else(|e| panic!("not a NOP-In: {e}; {self:?}"))
    }
    fn reject(&self) -> Reject {
        Reject::parse(&self.bhs).unwrap_or_else(|e| panic!("not a Reject: {e}; {self:?}"))
    }
    fn tmf(&self) -> TaskMgmtResponse {
        TaskMgmtResponse::parse(&self.bhs)
            .unwrap_or_else(|e| panic!("not a TMF response: {e}; {self:?}"))
    }
    fn login(&self) -> LoginResponse {
        LoginResponse::parse(&self.bhs)
            .unwrap_or_else(|e| panic!("not a Login Response: {e}; {self:?}"))
    }
    fn logout(&self) -> LogoutResponse {
        LogoutResponse::parse(&self.bhs)
            .unwrap_or_else(|e| panic!("not a Logout Response: {e}; {self:?}"))
    }
}

/// The bytes of a send message in wire order.
fn flatten(msg: &SendMsg) -> Vec<u8> {
    let mut out = Vec::new();
    for s in &msg.segs {
        match *s {
            SendSeg::Head { start, len } => {
                out.extend_from_slice(&msg.head[start as usize..(start + len) as usize]);
            }
            SendSeg::Body { buf, start, len } => out.extend_from_slice(
                &msg.bodies[usize::from(buf)][start as usize..(start + len) as usize],
            ),
        }
    }
    out
}

/// Splits a byte stream into whole PDUs; every byte must belong to one.
fn parse_all(mut bytes: &[u8]) -> Vec<Pdu> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let (raw, n) = split_pdu(bytes, Digests::default(), MAX_DATA_SEGMENT_LEN as usize)
            .expect("target PDU frames")
            .expect("no partial PDU in a send message");
        assert!(raw.ahs.is_empty(), "no AHS expected");
        out.push(Pdu {
            bhs: *raw.bhs,
            data: raw.data.to_vec(),
        });
        bytes = &bytes[n..];
    }
    out
}

fn encode<F: FnOnce(&mut [u8; BHS_LEN])>(f: F) -> [u8; BHS_LEN] {
    let mut bhs = [0u8; BHS_LEN];
    f(&mut bhs);
    bhs
}

fn read10(lba: u32, blocks: u16) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = 0x28;
    c[2..6].copy_from_slice(&lba.to_be_bytes());
    c[7..9].copy_from_slice(&blocks.to_be_bytes());
    c
}

fn write10(lba: u32, blocks: u16) -> [u8; 16] {
    let mut c = read10(lba, blocks);
    c[0] = 0x2a;
    c
}

fn inquiry(alloc: u16) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = 0x12;
    c[3..5].copy_from_slice(&alloc.to_be_bytes());
    c
}

/// A recognisable byte pattern, different per `seed`.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
        .collect()
}

/// Counts the pool's free buffers (takes them all, then gives them back).
fn free_buffers(pool: &BufPool) -> usize {
    let mut all = Vec::new();
    while let Some(b) = pool.get(1) {
        all.push(b);
    }
    all.len()
}

/// (sense key, ASC, ASCQ) of a SCSI Response carrying fixed-format sense.
fn sense_of(p: &Pdu) -> (u8, u8, u8) {
    let d = &p.data;
    assert!(d.len() >= 2 + 14, "sense data present: {d:?}");
    let n = usize::from(u16::from_be_bytes([d[0], d[1]]));
    assert_eq!(n + 2, d.len(), "SenseLength covers the segment");
    let s = &d[2..];
    assert_eq!(s[0] & 0x7f, 0x70, "fixed format, current");
    (s[2] & 0x0f, s[12], s[13])
}

// ---------------------------------------------------------------------- rig

/// Operational keys the test initiator declares.
#[derive(Debug, Clone)]
struct Keys {
    mrdsl: u32,
    max_burst: u32,
    first_burst: u32,
    initial_r2t: bool,
    immediate_data: bool,
    max_r2t: u32,
}

impl Default for Keys {
    fn default() -> Self {
        Self {
            mrdsl: 65536,
            max_burst: 262_144,
            first_burst: 65536,
            initial_r2t: true,
            immediate_data: true,
            max_r2t: 1,
        }
    }
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "Yes"
    } else {
        "No"
    }
}

fn op_text(k: &Keys) -> Vec<u8> {
    let mut t = Vec::new();
    for (key, value) in [
        ("InitiatorName", INI.to_owned()),
        ("TargetName", TGT.to_owned()),
        ("SessionType", "Normal".to_owned()),
        ("HeaderDigest", "None".to_owned()),
        ("DataDigest", "None".to_owned()),
        ("MaxRecvDataSegmentLength", k.mrdsl.to_string()),
        ("MaxBurstLength", k.max_burst.to_string()),
        ("FirstBurstLength", k.first_burst.to_string()),
        ("InitialR2T", yes_no(k.initial_r2t).to_owned()),
        ("ImmediateData", yes_no(k.immediate_data).to_owned()),
        ("MaxOutstandingR2T", k.max_r2t.to_string()),
        ("ErrorRecoveryLevel", "0".to_owned()),
        ("DefaultTime2Wait", "2".to_owned()),
        ("DefaultTime2Retain", "20".to_owned()),
    ] {
        push_pair(&mut t, key, &value);
    }
    t
}

fn config() -> ConnConfig {
    ConnConfig {
        limits: TargetLimits {
            max_recv_data_segment_length: TARGET_MRDSL,
            max_burst_length: 1 << 20,
            first_burst_length: 65536,
            max_outstanding_r2t: 8,
            immediate_data: true,
            initial_r2t: false,
            cmdsn_window: WINDOW,
            ..TargetLimits::default()
        },
        nop_interval: NOP_INTERVAL,
        nop_timeout: NOP_TIMEOUT,
        login_timeout: LOGIN_TIMEOUT,
    }
}

const POOL_BUFFERS: usize = 4 + 4 + 2;

fn pool() -> BufPool {
    BufPool::new(&PoolConfig {
        classes: vec![(4096, 4), (16384, 4), (131_072, 2)],
    })
    .expect("pool")
}

struct Rig {
    conn: Connection,
    host: FakeHost,
    pool: BufPool,
    t0: Instant,
    now: Instant,
    /// Next CmdSN to send.
    cmdsn: u32,
    /// Next StatSN the target must use.
    statsn: u32,
    next_itt: u32,
}

impl Drop for Rig {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        // Flush and recycle whatever is still queued, then no buffer may be
        // held by the connection unless a disk request is outstanding.
        while let Some(m) = self.conn.take_send() {
            self.conn.send_done(m);
        }
        if self.conn.disk.is_empty() && self.conn.task_count() == 0 {
            assert_eq!(free_buffers(&self.pool), POOL_BUFFERS, "buffer leak");
        }
    }
}

impl Rig {
    fn new(first_cmdsn: u32) -> Self {
        let t0 = Instant::now();
        Self {
            conn: Connection::new(Rc::new(config()), 42, t0),
            host: FakeHost::new(),
            pool: pool(),
            t0,
            now: t0,
            cmdsn: first_cmdsn,
            statsn: 0,
            next_itt: 0x100,
        }
    }

    /// Logs in with `keys` and clears the power-on unit attention.
    fn ready(keys: &Keys) -> Self {
        let mut r = Self::new(0x1000);
        r.login(keys);
        r.clear_ua();
        r
    }

    /// Feeds one PDU; all of it must be consumed.
    fn send(&mut self, bhs: &[u8; BHS_LEN], data: &[u8]) {
        let mut bytes = Vec::new();
        write_pdu(bhs, data, Digests::default(), &mut bytes);
        let used = self
            .conn
            .receive(&bytes, &mut self.host, &self.pool, self.now);
        assert_eq!(used, bytes.len(), "whole PDU consumed");
    }

    /// Everything the target queued, parsed; the messages are recycled.
    fn output(&mut self) -> Vec<Pdu> {
        let mut bytes = Vec::new();
        while let Some(m) = self.conn.take_send() {
            bytes.extend(flatten(&m));
            self.conn.send_done(m);
        }
        parse_all(&bytes)
    }

    /// Exactly one PDU queued.
    fn one(&mut self) -> Pdu {
        let mut out = self.output();
        assert_eq!(out.len(), 1, "expected exactly one PDU: {out:?}");
        out.remove(0)
    }

    fn nothing(&mut self) {
        let out = self.output();
        assert!(out.is_empty(), "expected no output: {out:?}");
    }

    /// Asserts `statsn` is the next StatSN and consumes it.
    fn statsn_is(&mut self, statsn: u32) {
        assert_eq!(statsn, self.statsn, "StatSN sequence");
        self.statsn = self.statsn.wrapping_add(1);
    }

    fn itt(&mut self) -> u32 {
        self.next_itt += 1;
        self.next_itt
    }

    fn params(&self) -> &SessionParams {
        match &self.conn.phase {
            Phase::Full(s) => &s.params,
            Phase::Login(_) => panic!("still in login phase"),
        }
    }

    fn login_request(&self, csg: Stage, nsg: Stage, transit: bool, len: usize) -> [u8; 48] {
        encode(|b| {
            LoginRequest {
                transit,
                continue_: false,
                csg,
                nsg,
                version_max: 0,
                version_min: 0,
                total_ahs_len: 0,
                data_segment_len: len as u32,
                isid: [0x80, 0, 0, 0, 0, 1],
                tsih: 0,
                itt: 7,
                cid: 1,
                cmdsn: self.cmdsn,
                exp_statsn: 0,
            }
            .encode(b)
        })
    }

    /// One-PDU operational login straight to full feature phase.
    fn login(&mut self, keys: &Keys) -> (LoginResponse, Vec<(String, String)>) {
        let text = op_text(keys);
        let bhs = self.login_request(
            Stage::LoginOperationalNegotiation,
            Stage::FullFeaturePhase,
            true,
            text.len(),
        );
        self.send(&bhs, &text);
        let p = self.one();
        let r = p.login();
        let pairs = parse_pairs(&p.data).expect("login text");
        assert_eq!(
            (r.status_class, r.status_detail),
            (0, 0),
            "login succeeded: {pairs:?}"
        );
        assert!(r.transit, "final response transits: {pairs:?}");
        assert_eq!(r.nsg, Stage::FullFeaturePhase);
        assert!(self.conn.is_full_feature());
        self.statsn = r.statsn.wrapping_add(1);
        (r, pairs)
    }

    fn scsi(
        &mut self,
        cdb: [u8; 16],
        edtl: u32,
        read: bool,
        write: bool,
        data: &[u8],
        final_bit: bool,
    ) -> u32 {
        let itt = self.itt();
        let cmdsn = self.cmdsn;
        self.cmdsn = self.cmdsn.wrapping_add(1);
        self.scsi_raw(itt, cmdsn, false, cdb, edtl, read, write, data, final_bit);
        itt
    }

    #[allow(clippy::too_many_arguments)]
    fn scsi_raw(
        &mut self,
        itt: u32,
        cmdsn: u32,
        immediate: bool,
        cdb: [u8; 16],
        edtl: u32,
        read: bool,
        write: bool,
        data: &[u8],
        final_bit: bool,
    ) {
        let bhs = encode(|b| {
            ScsiCommand {
                immediate,
                final_bit,
                read,
                write,
                attr: 1,
                total_ahs_len: 0,
                data_segment_len: data.len() as u32,
                lun: LUN0,
                itt,
                expected_data_transfer_length: edtl,
                cmdsn,
                exp_statsn: self.statsn,
                cdb,
            }
            .encode(b)
        });
        self.send(&bhs, data);
    }

    fn data_out(&mut self, itt: u32, ttt: u32, data_sn: u32, offset: u32, data: &[u8], fin: bool) {
        let bhs = encode(|b| {
            DataOut {
                final_bit: fin,
                total_ahs_len: 0,
                data_segment_len: data.len() as u32,
                lun: LUN0,
                itt,
                ttt,
                exp_statsn: self.statsn,
                data_sn,
                buffer_offset: offset,
            }
            .encode(b)
        });
        self.send(&bhs, data);
    }

    fn nop_out(&mut self, itt: u32, ttt: u32, immediate: bool, data: &[u8]) {
        let cmdsn = self.cmdsn;
        if !immediate {
            self.cmdsn = self.cmdsn.wrapping_add(1);
        }
        let bhs = encode(|b| {
            NopOut {
                immediate,
                total_ahs_len: 0,
                data_segment_len: data.len() as u32,
                lun: 0,
                itt,
                ttt,
                cmdsn,
                exp_statsn: self.statsn,
            }
            .encode(b)
        });
        self.send(&bhs, data);
    }

    /// An immediate NOP-Out ping; returns the NOP-In.
    fn ping(&mut self) -> NopIn {
        let itt = self.itt();
        self.nop_out(itt, RESERVED_TAG, true, b"ping");
        let p = self.one();
        let n = p.nop_in();
        assert_eq!(n.itt, itt);
        assert_eq!(p.data, b"ping");
        self.statsn_is(n.statsn);
        n
    }

    /// TEST UNIT READY answers the power-on unit attention once.
    fn clear_ua(&mut self) {
        let itt = self.scsi([0; 16], 0, false, false, &[], true);
        let p = self.one();
        let r = p.response();
        assert_eq!((r.itt, r.response, r.status), (itt, 0, 0x02));
        self.statsn_is(r.statsn);
        assert_eq!(sense_of(&p), (0x06, 0x29, 0x00), "POWER ON, RESET");
        assert!(self.conn.next_disk().is_none());
    }

    fn disk_done(&mut self, task: u32, result: i32, buf: Option<Buf>) {
        self.conn.disk_done(task, result, buf, &self.pool);
    }

    /// Takes the one disk request queued.
    fn disk(&mut self) -> DiskRequest {
        let req = self.conn.next_disk().expect("a disk request");
        assert!(self.conn.next_disk().is_none(), "only one disk request");
        req
    }

    fn tmf(&mut self, function: u8, referenced: u32, ref_cmdsn: u32) -> u32 {
        let itt = self.itt();
        let bhs = encode(|b| {
            TaskMgmtRequest {
                immediate: true,
                function,
                total_ahs_len: 0,
                data_segment_len: 0,
                lun: LUN0,
                itt,
                referenced_task_tag: referenced,
                cmdsn: self.cmdsn,
                exp_statsn: self.statsn,
                ref_cmdsn,
                exp_data_sn: 0,
            }
            .encode(b)
        });
        self.send(&bhs, &[]);
        itt
    }

    fn at(&mut self, d: Duration) -> Instant {
        self.now = self.t0 + d;
        self.now
    }
}

// -------------------------------------------------------------------- login

#[test]
fn login_enters_full_feature_phase_with_negotiated_values() {
    let mut r = Rig::new(0x1000);
    assert!(!r.conn.is_full_feature());
    assert_eq!(r.conn.tsih(), None);
    let keys = Keys {
        mrdsl: 4096,
        max_burst: 16384,
        first_burst: 8192,
        initial_r2t: true,
        immediate_data: true,
        max_r2t: 2,
    };
    let (resp, pairs) = r.login(&keys);
    assert_eq!(resp.tsih, TSIH);
    assert_eq!(resp.itt, 7);
    assert_eq!(resp.isid, [0x80, 0, 0, 0, 0, 1]);
    assert_eq!(
        (resp.csg, resp.nsg),
        (Stage::LoginOperationalNegotiation, Stage::FullFeaturePhase)
    );
    assert_eq!(resp.exp_cmdsn, 0x1000);
    assert_eq!(resp.max_cmdsn, 0x1000 + WINDOW - 1);
    let get = |k: &str| {
        pairs
            .iter()
            .find(|(pk, _)| pk == k)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(get("MaxRecvDataSegmentLength"), Some("8192"), "{pairs:?}");
    assert_eq!(get("MaxBurstLength"), Some("16384"));
    assert_eq!(get("MaxOutstandingR2T"), Some("2"));
    assert_eq!(r.conn.tsih(), Some(TSIH));
    assert_eq!(r.host.allocated.len(), 1);
    assert_eq!(r.host.allocated[0].target.as_deref(), Some(TGT));
    assert_eq!(r.host.allocated[0].initiator_name, INI);
    let p = r.params().clone();
    assert_eq!(p.max_recv_data_segment_length_initiator, 4096);
    assert_eq!(p.max_recv_data_segment_length_target, TARGET_MRDSL);
    assert_eq!((p.max_burst_length, p.first_burst_length), (16384, 8192));
    assert!(p.initial_r2t && p.immediate_data);
    assert_eq!(p.max_outstanding_r2t, 2);
    // The session now accepts data segments up to our declaration, not 8 KiB
    // of the login phase.
    assert_eq!(
        r.conn.max_pdu_len(),
        BHS_LEN + 1024 + 4 + TARGET_MRDSL as usize + 4
    );
    // StatSN continues from the login response, one per response.
    let first = resp.statsn;
    let a = r.ping();
    let b = r.ping();
    assert_eq!(
        (a.statsn, b.statsn),
        (first.wrapping_add(1), first.wrapping_add(2))
    );
    // Immediate pings do not move the window.
    assert_eq!((b.exp_cmdsn, b.max_cmdsn), (0x1000, 0x1000 + WINDOW - 1));
}

#[test]
fn login_through_security_stage_keeps_statsn_sequence() {
    let mut r = Rig::new(77);
    let mut sec = Vec::new();
    push_pair(&mut sec, "InitiatorName", INI);
    push_pair(&mut sec, "TargetName", TGT);
    push_pair(&mut sec, "SessionType", "Normal");
    push_pair(&mut sec, "AuthMethod", "None");
    let bhs = r.login_request(
        Stage::SecurityNegotiation,
        Stage::LoginOperationalNegotiation,
        true,
        sec.len(),
    );
    r.send(&bhs, &sec);
    let p = r.one();
    let first = p.login();
    assert_eq!((first.status_class, first.status_detail), (0, 0));
    assert!(first.transit);
    assert_eq!(
        (first.csg, first.nsg),
        (
            Stage::SecurityNegotiation,
            Stage::LoginOperationalNegotiation
        )
    );
    assert_eq!(first.tsih, 0, "TSIH only in the final response");
    assert!(!r.conn.is_full_feature());
    let text = op_text(&Keys::default());
    let bhs = r.login_request(
        Stage::LoginOperationalNegotiation,
        Stage::FullFeaturePhase,
        true,
        text.len(),
    );
    r.send(&bhs, &text);
    let last = r.one().login();
    assert_eq!(last.statsn, first.statsn.wrapping_add(1));
    assert_eq!(last.tsih, TSIH);
    assert_eq!((last.exp_cmdsn, last.max_cmdsn), (77, 77 + WINDOW - 1));
    assert!(r.conn.is_full_feature());
    r.statsn = last.statsn.wrapping_add(1);
    r.ping();
}

#[test]
fn non_login_pdu_before_login_closes_without_answer() {
    let mut r = Rig::new(1);
    r.nop_out(9, RESERVED_TAG, true, &[]);
    r.nothing();
    assert!(r.conn.should_close());
    assert!(matches!(r.conn.closing(), Some(CloseReason::Protocol(_))));
    assert!(!r.conn.is_full_feature());
    assert!(r.host.allocated.is_empty());
}

#[test]
fn login_with_reserved_stage_gets_an_initiator_error_login_response() {
    let mut r = Rig::new(1);
    let text = op_text(&Keys::default());
    let mut bhs = r.login_request(
        Stage::LoginOperationalNegotiation,
        Stage::FullFeaturePhase,
        true,
        text.len(),
    );
    bhs[1] = (bhs[1] & !0x03) | 0x02; // NSG = 2 (reserved)
    r.send(&bhs, &text);
    let p = r.one();
    let resp = p.login();
    assert_eq!((resp.status_class, resp.status_detail), (0x02, 0x00));
    assert_eq!(resp.itt, 7);
    assert!(r.conn.should_close());
    assert!(!r.conn.is_full_feature());
}

#[test]
fn login_times_out() {
    let mut r = Rig::new(1);
    r.conn.tick(r.t0 + LOGIN_TIMEOUT);
    assert!(!r.conn.should_close());
    r.conn.tick(r.t0 + LOGIN_TIMEOUT + MS);
    assert!(r.conn.should_close());
    assert_eq!(r.conn.closing(), Some(&CloseReason::LoginFailed));
}

// --------------------------------------------------------- NOP and CmdSN

#[test]
fn nop_out_ping_echoes_data_and_lun() {
    let mut r = Rig::ready(&Keys::default());
    let data = pattern(1001, 3); // not a multiple of 4: padding must be stripped
    let itt = r.itt();
    let cmdsn = r.cmdsn;
    let bhs = encode(|b| {
        NopOut {
            immediate: false,
            total_ahs_len: 0,
            data_segment_len: data.len() as u32,
            lun: 0x0001_0000_0000_0000,
            itt,
            ttt: RESERVED_TAG,
            cmdsn,
            exp_statsn: r.statsn,
        }
        .encode(b)
    });
    r.cmdsn += 1;
    r.send(&bhs, &data);
    let p = r.one();
    let n = p.nop_in();
    assert_eq!(n.itt, itt);
    assert_eq!(n.ttt, RESERVED_TAG);
    assert_eq!(n.lun, 0x0001_0000_0000_0000);
    assert_eq!(n.data_segment_len, 1001);
    assert_eq!(p.data, data);
    r.statsn_is(n.statsn);
    // A non-immediate NOP-Out consumed its CmdSN.
    assert_eq!((n.exp_cmdsn, n.max_cmdsn), (cmdsn + 1, cmdsn + WINDOW));
}

#[test]
fn cmdsn_window_moves_on_non_immediate_commands_only() {
    let mut r = Rig::ready(&Keys::default());
    // clear_ua consumed 0x1000.
    let exp = 0x1001;
    let n = r.ping();
    assert_eq!((n.exp_cmdsn, n.max_cmdsn), (exp, exp + WINDOW - 1));

    // An immediate SCSI command carries ExpCmdSN and does not advance it.
    let itt = r.itt();
    r.scsi_raw(itt, exp, true, inquiry(36), 36, true, false, &[], true);
    let p = r.one();
    let d = p.data_in();
    assert_eq!(
        (d.itt, d.exp_cmdsn, d.max_cmdsn),
        (itt, exp, exp + WINDOW - 1)
    );
    r.statsn_is(d.statsn);

    // Ahead of ExpCmdSN, a duplicate, and beyond MaxCmdSN: all ignored.
    for cmdsn in [exp + 1, exp - 1, exp + WINDOW, exp + 0x8000_0000] {
        let itt = r.itt();
        r.scsi_raw(itt, cmdsn, false, read10(0, 1), 512, true, false, &[], true);
        r.nothing();
        assert!(r.conn.next_disk().is_none(), "CmdSN {cmdsn:#x} ignored");
        assert_eq!(r.conn.task_count(), 0);
    }
    assert!(!r.conn.should_close());
    let n = r.ping();
    assert_eq!(n.exp_cmdsn, exp, "ignored commands did not move the window");

    // The in-order one executes and advances the window by exactly one.
    let itt = r.itt();
    r.scsi_raw(itt, exp, false, inquiry(36), 36, true, false, &[], true);
    let d = r.one().data_in();
    assert_eq!(d.itt, itt);
    r.statsn_is(d.statsn);
    assert_eq!((d.exp_cmdsn, d.max_cmdsn), (exp + 1, exp + WINDOW));
}

#[test]
fn cmdsn_window_wraps() {
    let mut r = Rig::new(u32::MAX - 1);
    r.login(&Keys::default());
    r.clear_ua(); // u32::MAX - 1
    let itt = r.scsi(inquiry(36), 36, true, false, &[], true); // u32::MAX
    let d = r.one().data_in();
    assert_eq!(d.itt, itt);
    r.statsn_is(d.statsn);
    assert_eq!((d.exp_cmdsn, d.max_cmdsn), (0, WINDOW - 1));
    let itt = r.scsi(inquiry(36), 36, true, false, &[], true); // 0
    let d = r.one().data_in();
    assert_eq!(d.itt, itt);
    r.statsn_is(d.statsn);
    assert_eq!((d.exp_cmdsn, d.max_cmdsn), (1, WINDOW));
}

// ---------------------------------------------------------------- read path

#[test]
fn read10_is_one_disk_read_then_data_in_split_at_initiator_mrdsl() {
    let keys = Keys {
        mrdsl: 2048,
        ..Keys::default()
    };
    let mut r = Rig::ready(&keys);
    let itt = r.scsi(read10(100, 9), 9 * BS, true, false, &[], true);
    r.nothing();
    let req = r.disk();
    assert_eq!(req.slot, 0);
    assert_eq!(req.offset, 100 * u64::from(BS));
    let DiskOp::Read(mut buf) = req.op else {
        panic!("expected a read, got {:?}", req.op);
    };
    assert_eq!(buf.len(), 9 * BS as usize);
    let data = pattern(buf.len(), 9);
    buf.copy_from_slice(&data);
    r.disk_done(req.task, 9 * BS as i32, Some(buf));
    let out = r.output();
    assert_eq!(out.len(), 3, "4608 bytes at MRDSL 2048: {out:?}");
    let mut got = Vec::new();
    for (i, p) in out.iter().enumerate() {
        let d = p.data_in();
        let last = i == 2;
        assert_eq!(d.itt, itt);
        assert_eq!(d.lun, LUN0);
        assert_eq!(d.ttt, RESERVED_TAG);
        assert_eq!(d.data_sn, i as u32, "DataSN");
        assert_eq!(d.buffer_offset, i as u32 * 2048, "buffer offset");
        assert_eq!(d.data_segment_len as usize, p.data.len());
        assert_eq!(p.data.len(), if last { 512 } else { 2048 });
        assert_eq!(d.final_bit, last, "F only on the last");
        assert_eq!(d.status_present, last, "S only on the last");
        assert!(!d.acknowledge);
        assert!(!d.residual_overflow && !d.residual_underflow);
        assert_eq!(d.residual_count, 0);
        if last {
            assert_eq!(d.status, 0);
            r.statsn_is(d.statsn);
        }
        got.extend_from_slice(&p.data);
    }
    assert_eq!(got, data);
    assert_eq!(r.conn.task_count(), 0);
    // The next response takes the next StatSN.
    r.ping();
}

#[test]
fn read_with_edtl_above_the_transfer_reports_underflow() {
    let mut r = Rig::ready(&Keys::default());
    let itt = r.scsi(read10(8, 4), 8192, true, false, &[], true);
    let req = r.disk();
    let DiskOp::Read(mut buf) = req.op else {
        panic!("read");
    };
    assert_eq!(buf.len(), 2048, "the CDB decides what is read");
    buf.fill(0xa5);
    r.disk_done(req.task, 2048, Some(buf));
    let p = r.one();
    let d = p.data_in();
    assert_eq!(d.itt, itt);
    assert!(d.final_bit && d.status_present);
    assert_eq!(p.data, vec![0xa5; 2048]);
    assert!(d.residual_underflow && !d.residual_overflow);
    assert_eq!(d.residual_count, 8192 - 2048);
    r.statsn_is(d.statsn);
}

#[test]
fn read_with_edtl_below_the_transfer_reports_overflow() {
    let mut r = Rig::ready(&Keys::default());
    let itt = r.scsi(read10(8, 4), 1000, true, false, &[], true);
    let req = r.disk();
    let DiskOp::Read(mut buf) = req.op else {
        panic!("read");
    };
    assert_eq!(buf.len(), 2048);
    let data = pattern(2048, 1);
    buf.copy_from_slice(&data);
    r.disk_done(req.task, 2048, Some(buf));
    let p = r.one();
    let d = p.data_in();
    assert_eq!(d.itt, itt);
    assert!(d.final_bit && d.status_present);
    assert_eq!(p.data, data[..1000], "only EDTL bytes are sent");
    assert!(d.residual_overflow && !d.residual_underflow);
    assert_eq!(d.residual_count, 2048 - 1000);
    r.statsn_is(d.statsn);
}

#[test]
fn inquiry_is_answered_without_disk_io() {
    let mut r = Rig::new(5);
    r.login(&Keys::default());
    // INQUIRY is exempt from the pending power-on unit attention.
    let itt = r.scsi(inquiry(255), 255, true, false, &[], true);
    assert!(r.conn.next_disk().is_none());
    let p = r.one();
    let d = p.data_in();
    assert_eq!(d.itt, itt);
    assert!(d.final_bit && d.status_present);
    assert_eq!(d.status, 0);
    assert_eq!(p.data[0], 0x00, "connected direct-access device");
    assert_eq!(&p.data[8..16], b"TRELLIS ");
    assert_eq!(
        usize::from(p.data[4]) + 5,
        p.data.len(),
        "ADDITIONAL LENGTH"
    );
    assert!(d.residual_underflow);
    assert_eq!(d.residual_count as usize, 255 - p.data.len());
    r.statsn_is(d.statsn);
    assert_eq!(r.conn.task_count(), 0);
}

#[test]
fn read_disk_error_is_check_condition_medium_error() {
    let mut r = Rig::ready(&Keys::default());
    let itt = r.scsi(read10(0, 8), 4096, true, false, &[], true);
    let req = r.disk();
    let DiskOp::Read(buf) = req.op else {
        panic!("read");
    };
    r.disk_done(req.task, -EIO, Some(buf));
    let p = r.one();
    let resp = p.response();
    assert_eq!((resp.itt, resp.response, resp.status), (itt, 0, 0x02));
    assert!(!resp.residual_overflow && !resp.residual_underflow);
    assert_eq!(
        sense_of(&p),
        (0x03, 0x11, 0x00),
        "MEDIUM ERROR, UNRECOVERED READ ERROR"
    );
    r.statsn_is(resp.statsn);

    // A short read is an error too, never data.
    let itt = r.scsi(read10(0, 8), 4096, true, false, &[], true);
    let req = r.disk();
    let DiskOp::Read(buf) = req.op else {
        panic!("read");
    };
    r.disk_done(req.task, 512, Some(buf));
    let p = r.one();
    let resp = p.response();
    assert_eq!((resp.itt, resp.status), (itt, 0x02));
    assert_eq!(sense_of(&p), (0x03, 0x11, 0x00));
    r.statsn_is(resp.statsn);
}

// --------------------------------------------------------------- write path

#[test]
fn write10_with_immediate_data_only_needs_no_r2t() {
    let mut r = Rig::ready(&Keys::default());
    let data = pattern(4096, 7);
    let mut cdb = write10(40, 8);
    cdb[1] = 0x08; // FUA
    let itt = r.scsi(cdb, 4096, false, true, &data, true);
    r.nothing(); // no R2T
    let req = r.disk();
    assert_eq!(req.offset, 40 * u64::from(BS));
    let DiskOp::Write { buf, fua } = req.op else {
        panic!("expected a write, got {:?}", req.op);
    };
    assert!(fua, "FUA reaches the disk request");
    assert_eq!(&buf[..], &data[..], "exactly the immediate data");
    r.disk_done(req.task, 4096, Some(buf));
    let p = r.one();
    let resp = p.response();
    assert_eq!((resp.itt, resp.response, resp.status), (itt, 0, 0));
    assert_eq!(resp.data_segment_len, 0);
    assert!(!resp.residual_overflow && !resp.residual_underflow);
    assert_eq!(resp.exp_data_sn, 0, "no R2T was sent");
    r.statsn_is(resp.statsn);
}

/// A write whose data comes in answer to R2Ts: MaxBurstLength 16 KiB,
/// MaxOutstandingR2T 2, target MRDSL 8 KiB, 8 KiB of immediate data.
#[test]
fn write10_with_r2ts_honours_burst_and_outstanding_limits() {
    let keys = Keys {
        max_burst: 16384,
        first_burst: 16384,
        initial_r2t: true,
        immediate_data: true,
        max_r2t: 2,
        ..Keys::default()
    };
    let mut r = Rig::ready(&keys);
    let total = 130 * BS as usize; // 66560
    let data = pattern(total, 11);
    let imm = TARGET_MRDSL as usize;
    let itt = r.scsi(
        write10(1000, 130),
        total as u32,
        false,
        true,
        &data[..imm],
        true,
    );
    assert!(r.conn.next_disk().is_none());
    let out = r.output();
    assert_eq!(out.len(), 2, "MaxOutstandingR2T=2: {out:?}");
    let mut r2ts: Vec<R2t> = out.iter().map(Pdu::r2t).collect();
    let expect = [(0, 8192, 16384), (1, 24576, 16384)];
    for (t, (sn, off, len)) in r2ts.iter().zip(expect) {
        assert_eq!(
            (t.r2tsn, t.buffer_offset, t.desired_data_transfer_length),
            (sn, off, len)
        );
        assert_eq!((t.itt, t.lun), (itt, LUN0));
        assert_ne!(t.ttt, RESERVED_TAG);
        assert_eq!(t.statsn, r.statsn, "R2T carries, not consumes, StatSN");
        assert_eq!(t.data_segment_len, 0);
    }
    assert_ne!(r2ts[0].ttt, r2ts[1].ttt, "distinct TTTs");

    // Answer each burst in MRDSL-sized Data-Out PDUs, oldest R2T first; each
    // completed burst frees exactly one R2T slot.
    let mut next = vec![(2, 40960, 16384), (3, 57344, 9216)];
    let mut seen_sn = 2;
    while !r2ts.is_empty() {
        let t = r2ts.remove(0);
        let (start, len) = (
            t.buffer_offset as usize,
            t.desired_data_transfer_length as usize,
        );
        let mut sn = 0;
        let mut off = start;
        while off < start + len {
            let n = (start + len - off).min(TARGET_MRDSL as usize);
            let fin = off + n == start + len;
            r.data_out(itt, t.ttt, sn, off as u32, &data[off..off + n], fin);
            let out = r.output();
            if !fin {
                assert!(out.is_empty(), "no R2T before the burst completes: {out:?}");
            } else if !next.is_empty() {
                assert_eq!(out.len(), 1, "one R2T per completed burst: {out:?}");
                let nt = out[0].r2t();
                let (esn, eoff, elen) = next.remove(0);
                assert_eq!(
                    (nt.r2tsn, nt.buffer_offset, nt.desired_data_transfer_length),
                    (esn, eoff, elen)
                );
                assert!(nt.desired_data_transfer_length <= 16384);
                assert_eq!(nt.itt, itt);
                assert!(r2ts.iter().all(|o| o.ttt != nt.ttt));
                seen_sn += 1;
                r2ts.push(nt);
                assert!(r2ts.len() <= 2, "MaxOutstandingR2T");
            } else {
                assert!(out.is_empty(), "{out:?}");
            }
            sn += 1;
            off += n;
        }
        if !r2ts.is_empty() || !next.is_empty() {
            assert!(r.conn.next_disk().is_none(), "no write before all data");
        }
    }
    assert_eq!(seen_sn, 4);
    let req = r.disk();
    assert_eq!(req.offset, 1000 * u64::from(BS));
    let DiskOp::Write { buf, fua } = req.op else {
        panic!("expected a write, got {:?}", req.op);
    };
    assert!(!fua);
    assert_eq!(buf.len(), total);
    assert!(
        buf[..] == data[..],
        "the write carries exactly the Data-Out bytes"
    );
    r.disk_done(req.task, total as i32, Some(buf));
    let p = r.one();
    let resp = p.response();
    assert_eq!((resp.itt, resp.status), (itt, 0));
    assert_eq!(resp.exp_data_sn, 4, "ExpDataSN counts the R2Ts");
    r.statsn_is(resp.statsn);
}

/// InitialR2T=No: immediate data, then unsolicited Data-Out up to
/// FirstBurstLength, then R2Ts for the rest.
#[test]
fn write10_with_unsolicited_data_out_then_r2t() {
    let keys = Keys {
        max_burst: 65536,
        first_burst: 16384,
        initial_r2t: false,
        immediate_data: true,
        max_r2t: 1,
        ..Keys::default()
    };
    let mut r = Rig::ready(&keys);
    assert!(!r.params().initial_r2t);
    let total = 32768usize;
    let data = pattern(total, 21);
    let itt = r.scsi(
        write10(8, 64),
        total as u32,
        false,
        true,
        &data[..4096],
        false,
    );
    r.nothing(); // waits for the unsolicited burst
    r.data_out(itt, RESERVED_TAG, 0, 4096, &data[4096..12288], false);
    r.nothing();
    r.data_out(itt, RESERVED_TAG, 1, 12288, &data[12288..16384], true);
    let t = r.one().r2t();
    assert_eq!(
        (t.r2tsn, t.buffer_offset, t.desired_data_transfer_length),
        (0, 16384, 16384)
    );
    r.data_out(itt, t.ttt, 0, 16384, &data[16384..24576], false);
    r.data_out(itt, t.ttt, 1, 24576, &data[24576..], true);
    r.nothing();
    let req = r.disk();
    let DiskOp::Write { buf, .. } = req.op else {
        panic!("write");
    };
    assert!(buf[..] == data[..]);
    r.disk_done(req.task, total as i32, Some(buf));
    let resp = r.one().response();
    assert_eq!((resp.itt, resp.status, resp.exp_data_sn), (itt, 0, 1));
    r.statsn_is(resp.statsn);
}

#[test]
fn write_disk_error_is_check_condition_medium_error() {
    let mut r = Rig::ready(&Keys::default());
    let data = pattern(1024, 2);
    let itt = r.scsi(write10(0, 2), 1024, false, true, &data, true);
    let req = r.disk();
    let DiskOp::Write { buf, .. } = req.op else {
        panic!("write");
    };
    r.disk_done(req.task, -ENOSPC, Some(buf));
    let p = r.one();
    let resp = p.response();
    assert_eq!((resp.itt, resp.status), (itt, 0x02));
    assert_eq!(
        sense_of(&p),
        (0x03, 0x0c, 0x00),
        "MEDIUM ERROR, WRITE ERROR"
    );
    r.statsn_is(resp.statsn);
}

/// Starts a write that waits for Data-Out in answer to one R2T.
fn write_waiting_for_r2t(r: &mut Rig) -> (u32, R2t) {
    let itt = r.scsi(write10(0, 16), 8192, false, true, &[], true);
    let t = r.one().r2t();
    assert_eq!(
        (
            t.itt,
            t.r2tsn,
            t.buffer_offset,
            t.desired_data_transfer_length
        ),
        (itt, 0, 0, 8192)
    );
    (itt, t)
}

/// A Data-Out sequence error ends the command (ERL 0 has no recovery R2T)
/// with CHECK CONDITION, ABORTED COMMAND and the iSCSI ASC/ASCQ of RFC 7143
/// §11.4.7.2; nothing is written, the connection goes on, and later Data-Out
/// for the ended task is dropped.
fn data_out_fault(r: &mut Rig, itt: u32, ttt: u32, sense: (u8, u8, u8), exp_data_sn: u32) {
    let p = r.one();
    let resp = p.response();
    assert_eq!((resp.itt, resp.response, resp.status), (itt, 0, 0x02));
    assert_eq!(sense_of(&p), sense);
    assert_eq!(resp.exp_data_sn, exp_data_sn);
    r.statsn_is(resp.statsn);
    assert!(r.conn.next_disk().is_none(), "nothing is written");
    assert_eq!(r.conn.task_count(), 0);
    assert!(!r.conn.should_close());
    r.data_out(itt, ttt, 0, 0, &[0u8; 512], true);
    r.nothing();
    assert!(!r.conn.should_close());
    r.ping();
}

#[test]
fn data_out_with_wrong_datasn_ends_the_command() {
    let mut r = Rig::ready(&Keys::default());
    let (itt, t) = write_waiting_for_r2t(&mut r);
    r.data_out(itt, t.ttt, 1, 0, &[0u8; 4096], false);
    data_out_fault(&mut r, itt, t.ttt, (0x0b, 0x4b, 0x00), 1);
}

#[test]
fn data_out_with_unknown_ttt_ends_the_command() {
    let mut r = Rig::ready(&Keys::default());
    let (itt, t) = write_waiting_for_r2t(&mut r);
    r.data_out(itt, t.ttt ^ 0x5555, 0, 0, &[0u8; 4096], false);
    data_out_fault(&mut r, itt, t.ttt, (0x0b, 0x4b, 0x01), 1);
}

#[test]
fn data_out_outside_its_r2t_ends_the_command() {
    let mut r = Rig::ready(&Keys::default());
    let (itt, t) = write_waiting_for_r2t(&mut r);
    r.data_out(itt, t.ttt, 0, 4096, &[0u8; 8192], false);
    data_out_fault(&mut r, itt, t.ttt, (0x0b, 0x4b, 0x05), 1);
}

#[test]
fn data_out_with_wrapping_buffer_offset_ends_the_command() {
    let mut r = Rig::ready(&Keys::default());
    let (itt, t) = write_waiting_for_r2t(&mut r);
    r.data_out(itt, t.ttt, 0, u32::MAX - 15, &[0u8; 512], false);
    data_out_fault(&mut r, itt, t.ttt, (0x0b, 0x4b, 0x05), 1);
}

#[test]
fn unsolicited_data_out_with_wrong_datasn_ends_the_command() {
    let keys = Keys {
        initial_r2t: false,
        first_burst: 16384,
        ..Keys::default()
    };
    let mut r = Rig::ready(&keys);
    let itt = r.scsi(write10(0, 32), 16384, false, true, &[0u8; 4096], false);
    r.nothing();
    r.data_out(itt, RESERVED_TAG, 3, 4096, &[0u8; 4096], false);
    data_out_fault(&mut r, itt, RESERVED_TAG, (0x0b, 0x4b, 0x00), 0);
}

#[test]
fn unsolicited_data_out_beyond_first_burst_ends_the_command() {
    let keys = Keys {
        initial_r2t: false,
        first_burst: 8192,
        ..Keys::default()
    };
    let mut r = Rig::ready(&keys);
    let itt = r.scsi(write10(0, 32), 16384, false, true, &[0u8; 4096], false);
    r.data_out(itt, RESERVED_TAG, 0, 4096, &[0u8; 8192], false);
    data_out_fault(&mut r, itt, RESERVED_TAG, (0x0b, 0x0c, 0x0c), 0);
}

#[test]
fn unsolicited_data_out_with_wrapping_buffer_offset_ends_the_command() {
    let keys = Keys {
        initial_r2t: false,
        first_burst: 16384,
        ..Keys::default()
    };
    let mut r = Rig::ready(&keys);
    let itt = r.scsi(write10(0, 32), 16384, false, true, &[0u8; 4096], false);
    r.data_out(itt, RESERVED_TAG, 0, u32::MAX - 15, &[0u8; 512], false);
    data_out_fault(&mut r, itt, RESERVED_TAG, (0x0b, 0x4b, 0x05), 0);
}

// --------------------------------------------------------- task management

#[test]
fn abort_task_of_an_in_flight_read_answers_after_disk_done() {
    let mut r = Rig::ready(&Keys::default());
    let cmdsn = r.cmdsn;
    let itt = r.scsi(read10(0, 8), 4096, true, false, &[], true);
    let req = r.disk();
    let DiskOp::Read(buf) = req.op else {
        panic!("read");
    };
    let tmf_itt = r.tmf(1, itt, cmdsn);
    r.nothing(); // the read is still on the disk
    assert_eq!(r.conn.task_count(), 1);
    r.disk_done(req.task, 4096, Some(buf));
    let out = r.output();
    assert_eq!(out.len(), 1, "only the TMF response, no Data-In: {out:?}");
    let t = out[0].tmf();
    assert_eq!((t.itt, t.response), (tmf_itt, 0), "function complete");
    r.statsn_is(t.statsn);
    assert_eq!(r.conn.task_count(), 0);
    // The ITT is free again and the session goes on.
    r.ping();
}

#[test]
fn abort_task_of_a_write_collecting_data_answers_at_once() {
    let mut r = Rig::ready(&Keys::default());
    let cmdsn = r.cmdsn;
    let (itt, t) = write_waiting_for_r2t(&mut r);
    let tmf_itt = r.tmf(1, itt, cmdsn);
    let resp = r.one().tmf();
    assert_eq!((resp.itt, resp.response), (tmf_itt, 0));
    r.statsn_is(resp.statsn);
    assert_eq!(r.conn.task_count(), 0);
    // Late data for the aborted task is dropped, not a protocol error.
    r.data_out(itt, t.ttt, 0, 0, &[0u8; 8192], true);
    r.nothing();
    assert!(!r.conn.should_close());
    assert!(r.conn.next_disk().is_none());
    r.ping();
}

#[test]
fn abort_task_of_an_unknown_task_says_task_does_not_exist() {
    let mut r = Rig::ready(&Keys::default());
    // RefCmdSN not below the TMF's CmdSN: the task was never received.
    let cmdsn = r.cmdsn;
    let tmf_itt = r.tmf(1, 0xdead, cmdsn.wrapping_add(3));
    let resp = r.one().tmf();
    assert_eq!((resp.itt, resp.response), (tmf_itt, 1));
    r.statsn_is(resp.statsn);
}

// ------------------------------------------------------------------ logout

#[test]
fn logout_answers_then_closes() {
    let mut r = Rig::ready(&Keys::default());
    let itt = r.itt();
    let bhs = encode(|b| {
        LogoutRequest {
            immediate: true,
            reason_code: 0,
            total_ahs_len: 0,
            data_segment_len: 0,
            itt,
            cid: 1,
            cmdsn: r.cmdsn,
            exp_statsn: r.statsn,
        }
        .encode(b)
    });
    r.send(&bhs, &[]);
    let p = r.one();
    let l = p.logout();
    assert_eq!((l.itt, l.response), (itt, 0));
    r.statsn_is(l.statsn);
    assert!(r.conn.should_close());
    assert_eq!(r.conn.closing(), Some(&CloseReason::Logout));
    assert_eq!(r.host.ended, vec![TSIH]);
    // Nothing more is read.
    let mut more = Vec::new();
    write_pdu(&bhs, &[], Digests::default(), &mut more);
    assert_eq!(r.conn.receive(&more, &mut r.host, &r.pool, r.now), 0);
    r.nothing();
}

#[test]
fn logout_for_recovery_is_refused_and_the_session_stays() {
    let mut r = Rig::ready(&Keys::default());
    let itt = r.itt();
    let bhs = encode(|b| {
        LogoutRequest {
            immediate: true,
            reason_code: 2,
            total_ahs_len: 0,
            data_segment_len: 0,
            itt,
            cid: 1,
            cmdsn: r.cmdsn,
            exp_statsn: r.statsn,
        }
        .encode(b)
    });
    r.send(&bhs, &[]);
    let l = r.one().logout();
    assert_eq!((l.itt, l.response), (itt, 2), "recovery not supported");
    r.statsn_is(l.statsn);
    assert!(!r.conn.should_close());
    assert!(r.host.ended.is_empty());
    r.ping();
}

// --------------------------------------------------------------- keepalive

#[test]
fn idle_session_is_pinged_and_kept_when_the_initiator_answers() {
    let mut r = Rig::new(10);
    r.login(&Keys::default());
    r.conn.tick(r.t0 + NOP_INTERVAL);
    r.nothing();
    r.conn.tick(r.t0 + NOP_INTERVAL + MS);
    let p = r.one();
    let n = p.nop_in();
    assert_eq!(n.itt, RESERVED_TAG);
    assert_ne!(n.ttt, RESERVED_TAG);
    assert_eq!(n.statsn, r.statsn, "a ping does not consume a StatSN");
    assert!(p.data.is_empty());
    // No second ping while one is outstanding.
    r.conn.tick(r.t0 + 3 * NOP_INTERVAL);
    r.nothing();
    // A reply with the wrong TTT does not count.
    r.at(3 * NOP_INTERVAL);
    r.nop_out(RESERVED_TAG, n.ttt ^ 1, true, &[]);
    r.nothing();
    r.conn.tick(r.t0 + NOP_INTERVAL + MS + NOP_TIMEOUT + MS);
    assert!(r.conn.should_close(), "wrong-TTT answer is no answer");
    assert_eq!(r.conn.closing(), Some(&CloseReason::Timeout));

    // Again, answering properly this time.
    let mut r = Rig::new(10);
    r.login(&Keys::default());
    r.conn.tick(r.t0 + NOP_INTERVAL + MS);
    let n = r.one().nop_in();
    r.at(NOP_INTERVAL + 2 * MS);
    r.nop_out(RESERVED_TAG, n.ttt, true, &[]);
    r.nothing(); // no NOP-In for an answer
    r.conn.tick(r.t0 + NOP_INTERVAL + 2 * MS + NOP_TIMEOUT);
    // Idle again for longer than the interval: a new ping, not a close.
    assert!(!r.conn.should_close());
    let n2 = r.one().nop_in();
    assert_ne!(n2.ttt, n.ttt, "each ping has its own TTT");
    assert_eq!(n2.statsn, r.statsn);
    r.ping();
}

#[test]
fn unanswered_ping_closes_after_nop_timeout() {
    let mut r = Rig::new(10);
    r.login(&Keys::default());
    let sent = r.t0 + NOP_INTERVAL + MS;
    r.conn.tick(sent);
    r.one().nop_in();
    // Other traffic is no answer to the ping.
    r.at(NOP_INTERVAL + 10 * MS);
    r.ping();
    r.conn.tick(sent + NOP_TIMEOUT);
    assert!(!r.conn.should_close());
    r.conn.tick(sent + NOP_TIMEOUT + MS);
    assert!(r.conn.should_close());
    assert_eq!(r.conn.closing(), Some(&CloseReason::Timeout));
}

// ----------------------------------------------------------- bad input

#[test]
fn unknown_and_target_opcodes_are_rejected_and_the_session_goes_on() {
    let mut r = Rig::ready(&Keys::default());
    for op in [0x1f_u8, 0x21, 0x3f] {
        let mut bhs = [0u8; BHS_LEN];
        bhs[0] = op;
        bhs[1] = 0x80;
        bhs[5..8].copy_from_slice(&[0, 0, 10]); // 10 bytes of data to skip
        bhs[16..20].copy_from_slice(&0x1234_5678_u32.to_be_bytes());
        r.send(&bhs, &[0xee; 10]);
        let p = r.one();
        let rej = p.reject();
        assert_eq!(rej.reason, 0x05, "command not supported for {op:#x}");
        assert_eq!(p.data, bhs, "the Reject carries the offending header");
        r.statsn_is(rej.statsn);
        assert!(!r.conn.should_close());
    }
    r.ping();
}

#[test]
fn oversized_data_segment_is_rejected_and_closes() {
    let mut r = Rig::ready(&Keys::default());
    let bhs = encode(|b| {
        NopOut {
            immediate: true,
            total_ahs_len: 0,
            data_segment_len: TARGET_MRDSL + 4,
            lun: 0,
            itt: 99,
            ttt: RESERVED_TAG,
            cmdsn: r.cmdsn,
            exp_statsn: r.statsn,
        }
        .encode(b)
    });
    // The header alone is enough to decide.
    let used = r.conn.receive(&bhs, &mut r.host, &r.pool, r.now);
    assert_eq!(used, 0);
    let p = r.one();
    let rej = p.reject();
    assert_eq!(rej.reason, 0x04, "protocol error");
    assert_eq!(p.data, bhs);
    r.statsn_is(rej.statsn);
    assert!(r.conn.should_close());
    assert!(matches!(r.conn.closing(), Some(CloseReason::Protocol(_))));
}

mod media;
mod reserve;
