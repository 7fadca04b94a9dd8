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
    /// The target no longer admits the initiator (or is gone).
    revoked: bool,
    generation: u64,
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
            atomic_unit_blocks: 0,
        };
        let luns = LunTable {
            port: PortContext {
                target_name: TGT.into(),
                tpgt: 1,
                relative_port_id: 1,
                tpg_id: 1,
            },
            luns: vec![LunEntry {
                lun: LUN0,
                dev: Rc::new(dev),
                slot: 0,
                shared: std::sync::Arc::new(LunShared::new()),
                sanitize: std::sync::Arc::default(),
            }],
            ids: vec![0],
        };
        Self {
            luns: Rc::new(luns),
            revoked: false,
            generation: 0,
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
        (target == TGT && !self.revoked).then(|| Rc::clone(&self.luns))
    }
    fn send_targets(&self, _initiator: &str, _only: Option<&str>) -> Vec<(String, Vec<String>)> {
        Vec::new()
    }
    fn session_ended(&mut self, tsih: u16) {
        self.ended.push(tsih);
    }
    fn config_generation(&self) -> u64 {
        self.generation
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
        max_protocol_errors: MAX_PROTOCOL_ERRORS,
    }
}

/// Rejects a connection may earn within the window in these tests.
const MAX_PROTOCOL_ERRORS: u32 = 8;

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
    /// LUN field of the SCSI commands sent.
    lun: u64,
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
            lun: LUN0,
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

    /// [`Rig::scsi`] on wire LUN `lun`.
    #[allow(clippy::too_many_arguments)]
    fn scsi_lun(
        &mut self,
        lun: u64,
        cdb: [u8; 16],
        edtl: u32,
        read: bool,
        write: bool,
        data: &[u8],
        final_bit: bool,
    ) -> u32 {
        let before = std::mem::replace(&mut self.lun, lun);
        let itt = self.scsi(cdb, edtl, read, write, data, final_bit);
        self.lun = before;
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
                lun: self.lun,
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

    /// Another session (another I_T nexus, as if on another core) on this
    /// rig's logical units, logged in with its unit attentions cleared.
    fn sharing(&self) -> Rig {
        let mut b = Rig::new(0x1000);
        b.host.luns = Rc::clone(&self.host.luns);
        b.login(&Keys::default());
        b.clear_ua();
        b
    }

    /// Sends TMF `function` for LUN 0; checks the response's ITT and StatSN
    /// and returns its response code.
    fn tmf_response(&mut self, function: u8, referenced: u32, ref_cmdsn: u32) -> u8 {
        let itt = self.tmf(function, referenced, ref_cmdsn);
        let t = self.one().tmf();
        assert_eq!(t.itt, itt);
        self.statsn_is(t.statsn);
        t.response
    }

    fn at(&mut self, d: Duration) -> Instant {
        self.now = self.t0 + d;
        self.now
    }
}

/// The rig's LUN made thin (UNMAP, WRITE SAME with UNMAP).
fn thin(r: &mut Rig) {
    let mut table = (*r.host.luns).clone();
    let mut dev = (*table.luns[0].dev).clone();
    dev.thin = true;
    dev.holes_read_zero = true;
    table.luns[0].dev = Rc::new(dev);
    r.host.luns = Rc::new(table);
}

/// The one SCSI Response queued: `(status, sense key/ASC/ASCQ if any)`.
fn status(r: &mut Rig, itt: u32) -> (u8, Option<(u8, u8, u8)>) {
    let p = r.one();
    let resp = p.response();
    assert_eq!((resp.itt, resp.response), (itt, 0));
    r.statsn_is(resp.statsn);
    let sense = (resp.status == 0x02).then(|| sense_of(&p));
    (resp.status, sense)
}

const GOOD: (u8, Option<(u8, u8, u8)>) = (0, None);

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

mod control;
mod copy;
mod io;
mod login;
mod media;
mod reconfig;
mod reserve;
mod sanitize;
