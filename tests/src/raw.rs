//! A raw iSCSI initiator for tests: our own PDU codec on a blocking socket
//! with timeouts, for what libiscsi's tools cannot send (malformed PDUs)
//! or cannot show (Async Messages).

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use trellis_iscsi::pdu::{
    split_pdu, write_pdu, AsyncMessage, DataIn, Digests, LoginRequest, LoginResponse,
    LogoutRequest, LogoutResponse, NopIn, NopOut, Reject, ScsiCommand, ScsiResponse, Stage,
    TaskMgmtRequest, BHS_LEN, MAX_DATA_SEGMENT_LEN, RESERVED_TAG,
};
use trellis_iscsi::text::{parse_pairs, push_pair};

use crate::DEFAULT_TARGET;

/// Opcodes of the PDUs the target sends.
pub const OP_NOP_IN: u8 = 0x20;
/// Login Response.
pub const OP_LOGIN_RESPONSE: u8 = 0x23;
/// Logout Response.
pub const OP_LOGOUT_RESPONSE: u8 = 0x26;
/// Async Message.
pub const OP_ASYNC_MESSAGE: u8 = 0x32;
/// Reject.
pub const OP_REJECT: u8 = 0x3f;
/// Reject reasons (RFC 7143 §11.17.1).
pub const REASON_PROTOCOL_ERROR: u8 = 0x04;
/// Reject: command not supported.
pub const REASON_NOT_SUPPORTED: u8 = 0x05;
/// MaxRecvDataSegmentLength of the login phase (RFC 7143 §12.12).
pub const LOGIN_MRDSL: usize = 8192;

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

    /// Reads and writes on the connection time out after `limit`.
    pub fn set_timeout(&self, limit: Duration) -> Result<()> {
        self.stream.set_read_timeout(Some(limit))?;
        self.stream.set_write_timeout(Some(limit))?;
        Ok(())
    }

    /// Connects and logs in to the default target, straight to full
    /// feature phase.
    pub fn login(portal: SocketAddr) -> Result<Self> {
        Self::login_conn(Self::connect(portal)?)
    }

    /// Logs in with a chosen ISID (and so a fixed initiator port name,
    /// the same I_T nexus across reconnects).
    pub fn login_as(portal: SocketAddr, isid: u16) -> Result<Self> {
        let mut c = Self::connect(portal)?;
        c.isid = isid;
        Self::login_conn(c)
    }

    /// Connects and logs in to `target` as `initiator`.
    pub fn login_to(portal: SocketAddr, target: &str, initiator: &str) -> Result<Self> {
        let mut c = Self::connect(portal)?;
        c.negotiate(vec![
            ("InitiatorName".to_owned(), initiator.to_owned()),
            ("TargetName".to_owned(), target.to_owned()),
            ("SessionType".to_owned(), "Normal".to_owned()),
            ("HeaderDigest".to_owned(), "None".to_owned()),
            ("DataDigest".to_owned(), "None".to_owned()),
        ])?;
        Ok(c)
    }

    fn login_conn(mut c: Self) -> Result<Self> {
        let keys = vec![
            ("InitiatorName".to_owned(), c.initiator_name()),
            ("TargetName".to_owned(), DEFAULT_TARGET.to_owned()),
            ("SessionType".to_owned(), "Normal".to_owned()),
            ("HeaderDigest".to_owned(), "None".to_owned()),
            ("DataDigest".to_owned(), "None".to_owned()),
        ];
        c.negotiate(keys)?;
        Ok(c)
    }

    /// Runs operational negotiation with `keys` to full feature phase,
    /// accepting the target's own offers as they are. Returns every key the
    /// target answered (the last value of each); its
    /// MaxRecvDataSegmentLength is kept for data PDUs.
    pub fn negotiate(
        &mut self,
        mut keys: Vec<(String, String)>,
    ) -> Result<std::collections::BTreeMap<String, String>> {
        let mut answered = std::collections::BTreeMap::new();
        let mut proposed: std::collections::BTreeSet<String> =
            keys.iter().map(|(k, _)| k.clone()).collect();
        for _ in 0..4 {
            let text = text(&keys);
            let bhs = self.login_bhs(
                Stage::LoginOperationalNegotiation,
                Stage::FullFeaturePhase,
                true,
                text.len(),
            );
            self.send(&bhs, &text)?;
            let p = self.recv()?.context("connection closed during login")?;
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
            if let Some((_, v)) = pairs.iter().find(|(k, _)| k == "MaxRecvDataSegmentLength") {
                self.target_mrdsl = v.parse()?;
            }
            answered.extend(pairs.iter().cloned());
            if r.transit && r.nsg == Stage::FullFeaturePhase {
                self.statsn = r.statsn.wrapping_add(1);
                self.cmdsn = r.exp_cmdsn;
                return Ok(answered);
            }
            // The target made offers: accept them as they are. Answers to
            // our own keys and its declarations are not echoed.
            keys = pairs
                .into_iter()
                .filter(|(k, _)| {
                    !proposed.contains(k)
                        && !matches!(
                            k.as_str(),
                            "MaxRecvDataSegmentLength" | "TargetPortalGroupTag" | "TargetAlias"
                        )
                })
                .collect();
            proposed.extend(keys.iter().map(|(k, _)| k.clone()));
        }
        bail!("login did not reach full feature phase")
    }

    pub fn initiator_name(&self) -> String {
        format!("iqn.2026-01.org.example:bad-input-{}", self.isid)
    }

    pub fn login_bhs(&self, csg: Stage, nsg: Stage, transit: bool, len: usize) -> [u8; BHS_LEN] {
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

    /// Waits for the target's request to log out (Async Message, event 1),
    /// then logs out as an initiator does: the Logout Response must answer
    /// and the connection close. The Async Message.
    pub fn logout_when_asked(&mut self) -> Result<AsyncMessage> {
        let p = self.recv()?.context("closed before an Async Message")?;
        ensure!(
            p.opcode() == OP_ASYNC_MESSAGE,
            "expected an Async Message, got opcode {:#x}",
            p.opcode()
        );
        let msg = AsyncMessage::parse(&p.bhs)?;
        ensure!(
            msg.event == 1,
            "Async event {}, not a logout request",
            msg.event
        );
        self.logout_with(msg.statsn.wrapping_add(1))?;
        Ok(msg)
    }

    /// Logs out (close the session): the Logout Response must answer and
    /// the connection close.
    pub fn logout(&mut self) -> Result<()> {
        self.logout_with(self.statsn)
    }

    fn logout_with(&mut self, exp_statsn: u32) -> Result<()> {
        let itt = self.itt();
        let mut bhs = [0u8; BHS_LEN];
        LogoutRequest {
            immediate: true,
            reason_code: 0,
            total_ahs_len: 0,
            data_segment_len: 0,
            itt,
            cid: 0,
            cmdsn: self.cmdsn,
            exp_statsn,
        }
        .encode(&mut bhs);
        self.send(&bhs, &[])?;
        let p = self
            .recv()?
            .context("closed instead of a Logout Response")?;
        ensure!(
            p.opcode() == OP_LOGOUT_RESPONSE,
            "expected a Logout Response, got {p:?}"
        );
        let resp = LogoutResponse::parse(&p.bhs)?;
        ensure!(
            (resp.itt, resp.response) == (itt, 0),
            "Logout Response {resp:?}"
        );
        self.expect_closed()
    }
}

/// Outcome of a SCSI command: status, sense (if any) and Data-In bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScsiResult {
    /// SCSI status byte.
    pub status: u8,
    /// Sense data (fixed format) when the status is CHECK CONDITION.
    pub sense: Vec<u8>,
    /// Data-In.
    pub data: Vec<u8>,
}

impl Conn {
    /// Runs one SCSI command on LUN 0: `out` goes as immediate data (it
    /// must fit FirstBurstLength), `edtl_in` bytes are expected back.
    pub fn scsi(&mut self, cdb: &[u8], out: &[u8], edtl_in: u32) -> Result<ScsiResult> {
        self.scsi_lun(0, cdb, out, edtl_in)
    }

    /// [`Conn::scsi`] on LUN `lun`.
    pub fn scsi_lun(
        &mut self,
        lun: u16,
        cdb: &[u8],
        out: &[u8],
        edtl_in: u32,
    ) -> Result<ScsiResult> {
        let edtl = if out.is_empty() {
            edtl_in
        } else {
            out.len() as u32
        };
        let (itt, bhs) = self.command(lun, cdb, edtl_in > 0, out.len() as u32, edtl);
        self.send(&bhs, out)?;
        let mut data = Vec::new();
        loop {
            let p = self
                .recv()?
                .context("connection closed before the status")?;
            match p.opcode() {
                0x25 => {
                    let d = DataIn::parse(&p.bhs)?;
                    ensure!(d.itt == itt, "Data-In for another task");
                    data.extend_from_slice(&p.data);
                    if d.status_present {
                        self.statsn = d.statsn.wrapping_add(1);
                        return Ok(ScsiResult {
                            status: d.status,
                            sense: Vec::new(),
                            data,
                        });
                    }
                }
                0x21 => {
                    let r = ScsiResponse::parse(&p.bhs)?;
                    ensure!(r.itt == itt, "response for another task");
                    self.statsn = r.statsn.wrapping_add(1);
                    let sense = p.data.get(2..).unwrap_or_default().to_vec();
                    return Ok(ScsiResult {
                        status: r.status,
                        sense,
                        data,
                    });
                }
                op => bail!("unexpected PDU {op:#x} while waiting for a SCSI status"),
            }
        }
    }

    /// Sends a write-direction command of `len` bytes on LUN 0 without its
    /// data and waits for the target's first R2T: the task then waits for
    /// data-out that has not come. Returns its ITT and the R2T's TTT.
    pub fn start_write(&mut self, cdb: &[u8], len: u32) -> Result<(u32, u32)> {
        let (itt, bhs) = self.command(0, cdb, false, 0, len);
        self.send(&bhs, &[])?;
        let p = self.recv()?.context("connection closed before the R2T")?;
        ensure!(
            p.opcode() == 0x31,
            "expected an R2T, got PDU {:#x}",
            p.opcode()
        );
        let ttt = u32::from_be_bytes([p.bhs[20], p.bhs[21], p.bhs[22], p.bhs[23]]);
        Ok((itt, ttt))
    }

    /// Sends `data` as the one final Data-Out of task `itt` for R2T `ttt`.
    pub fn data_out(&mut self, itt: u32, ttt: u32, data: &[u8]) -> Result<()> {
        let mut bhs = [0u8; BHS_LEN];
        trellis_iscsi::pdu::DataOut {
            final_bit: true,
            total_ahs_len: 0,
            data_segment_len: data.len() as u32,
            lun: trellis_iscsi::scsi::lun_to_wire(0),
            itt,
            ttt,
            exp_statsn: self.statsn,
            data_sn: 0,
            buffer_offset: 0,
        }
        .encode(&mut bhs);
        self.send(&bhs, data)
    }

    /// LOGICAL UNIT RESET of LUN `lun` (immediate): the response code of
    /// the Task Management Function Response (0: function complete).
    pub fn lun_reset(&mut self, lun: u16) -> Result<u8> {
        self.task_mgmt(5, lun)
    }

    /// Task management function `function` (4 CLEAR TASK SET, 5 LOGICAL
    /// UNIT RESET...) on LUN `lun`, immediate: the response code.
    pub fn task_mgmt(&mut self, function: u8, lun: u16) -> Result<u8> {
        let itt = self.itt();
        let mut bhs = [0u8; BHS_LEN];
        TaskMgmtRequest {
            immediate: true,
            function,
            total_ahs_len: 0,
            data_segment_len: 0,
            lun: trellis_iscsi::scsi::lun_to_wire(lun),
            itt,
            referenced_task_tag: RESERVED_TAG,
            cmdsn: self.cmdsn,
            exp_statsn: self.statsn,
            ref_cmdsn: self.cmdsn,
            exp_data_sn: 0,
        }
        .encode(&mut bhs);
        self.send(&bhs, &[])?;
        loop {
            let p = self
                .recv()?
                .context("connection closed before the TMF response")?;
            if p.opcode() == 0x22 {
                ensure!(
                    u32::from_be_bytes([p.bhs[16], p.bhs[17], p.bhs[18], p.bhs[19]]) == itt,
                    "TMF response for another request"
                );
                self.statsn = u32::from_be_bytes([p.bhs[24], p.bhs[25], p.bhs[26], p.bhs[27]])
                    .wrapping_add(1);
                return Ok(p.bhs[2]);
            }
        }
    }

    /// The BHS of a SCSI command on LUN `lun` (a write when it has data or
    /// is not a read), with the next ITT and CmdSN.
    fn command(
        &mut self,
        lun: u16,
        cdb: &[u8],
        read: bool,
        immediate_len: u32,
        edtl: u32,
    ) -> (u32, [u8; BHS_LEN]) {
        let mut c = [0u8; 16];
        c[..cdb.len()].copy_from_slice(cdb);
        let itt = self.itt();
        let mut bhs = [0u8; BHS_LEN];
        ScsiCommand {
            immediate: false,
            final_bit: true,
            read,
            write: immediate_len > 0 || (!read && edtl > 0),
            attr: 1,
            total_ahs_len: 0,
            data_segment_len: immediate_len,
            lun: trellis_iscsi::scsi::lun_to_wire(lun),
            itt,
            expected_data_transfer_length: edtl,
            cmdsn: self.cmdsn,
            exp_statsn: self.statsn,
            cdb: c,
        }
        .encode(&mut bhs);
        self.cmdsn = self.cmdsn.wrapping_add(1);
        (itt, bhs)
    }

    /// TEST UNIT READY until GOOD, consuming the unit attentions a new
    /// nexus starts with.
    pub fn clear_unit_attentions(&mut self) -> Result<()> {
        for _ in 0..8 {
            if self.scsi(&[0u8; 6], &[], 0)?.status == 0 {
                return Ok(());
            }
        }
        bail!("TEST UNIT READY never returned GOOD")
    }
}

pub fn text(pairs: &[(String, String)]) -> Vec<u8> {
    let mut t = Vec::new();
    for (k, v) in pairs {
        push_pair(&mut t, k, v);
    }
    t
}
