//! Fuzz harnesses: each takes arbitrary bytes and drives one parser of
//! what arrives from outside, as the member does, with no sockets or
//! disks. A panic, an overflow (overflow checks are on) or a hang is a
//! finding. The binaries in `src/bin/` run them under AFL++; `seeds`
//! writes the starting corpus.
//!
//! | harness    | what it reaches                                             |
//! |------------|-------------------------------------------------------------|
//! | `pdu`      | PDU framing (AHS, digests, lengths) and every BHS parser     |
//! | `session`  | a connection: login and text negotiation (CHAP too), then    |
//! |            | full feature PDUs, SCSI commands with data, task management |
//! | `cdb`      | CDB decoding and SCSI dispatch on a device, data-out pages  |
//! | `datagram` | control datagrams, before and after the HMAC check          |
//! | `api`      | the management API's request bodies, through the router     |

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use trellis_datapath::{BufPool, Extent, PoolConfig};
use trellis_iscsi::login::{ChapPolicy, LoginContext, LoginStatus, SessionRequest};
use trellis_iscsi::pdu::{self, Digests, Header, LoginRequest, ScsiCommand, Stage, BHS_LEN};
use trellis_iscsi::scsi::{
    dispatch, dispatch_data_out, dispatch_unmapped, AluaState, Command, LunDevice, LunShared,
    NexusState, PortContext, PortGroup, PortTable,
};
use trellis_iscsi::session::{ConnConfig, Connection, DiskOp, Host, LunEntry, LunTable};

/// The target the session harness serves.
pub const TARGET: &str = "iqn.2026-12.io.trellis:fuzz";
/// The initiator of the seeds.
pub const INITIATOR: &str = "iqn.2026-12.io.trellis:fuzz-host";

// ------------------------------------------------------------------- pdu

/// Splits `data` into PDUs (digests and the receive limit from the first
/// byte) and parses every header.
pub fn pdu(data: &[u8]) {
    let Some((&mode, mut rest)) = data.split_first() else {
        return;
    };
    let digests = Digests {
        header: mode & 1 != 0,
        data: mode & 2 != 0,
    };
    let max =
        [512usize, 8192, 65536, pdu::MAX_DATA_SEGMENT_LEN as usize][usize::from(mode >> 2 & 3)];
    for _ in 0..64 {
        match pdu::split_pdu(rest, digests, max) {
            Ok(Some((raw, n))) => {
                let _ = Header::parse(raw.bhs);
                let _ = pdu::opcode(raw.bhs);
                rest = &rest[n.min(rest.len())..];
            }
            Ok(None) | Err(_) => break,
        }
    }
    if rest.len() >= BHS_LEN {
        let mut bhs = [0u8; BHS_LEN];
        bhs.copy_from_slice(&rest[..BHS_LEN]);
        let _ = Header::parse(&bhs);
    }
}

// --------------------------------------------------------------- session

/// The session harness's target: one LUN, CHAP when asked.
struct FuzzHost {
    luns: Rc<LunTable>,
    chap: bool,
}

impl LoginContext for FuzzHost {
    fn target_exists(&self, target: &str) -> bool {
        target == TARGET
    }
    fn initiator_allowed(&self, _target: Option<&str>, initiator: &str) -> bool {
        initiator != "iqn.2026-12.io.trellis:denied"
    }
    fn chap(&self, _target: Option<&str>, _initiator: &str) -> Option<ChapPolicy> {
        self.chap.then(|| ChapPolicy {
            user: "fuzz".into(),
            secret: b"fuzz-secret-123".to_vec(),
            mutual: Some(("target".into(), b"target-secret-45".to_vec())),
        })
    }
    fn target_alias(&self, _target: &str) -> Option<String> {
        Some("fuzz".into())
    }
    fn allocate_session(&mut self, _req: &SessionRequest) -> Result<u16, LoginStatus> {
        Ok(1)
    }
}

impl Host for FuzzHost {
    fn login(&mut self) -> &mut dyn LoginContext {
        self
    }
    fn luns(&mut self, target: &str, _initiator: &str) -> Option<Rc<LunTable>> {
        (target == TARGET).then(|| Rc::clone(&self.luns))
    }
    fn send_targets(&self, _initiator: &str, _only: Option<&str>) -> Vec<(String, Vec<String>)> {
        vec![(TARGET.into(), vec!["127.0.0.1:3260,1".into()])]
    }
    fn session_ended(&mut self, _tsih: u16) {}
}

/// A device of `block_size` bytes per block and `blocks` blocks.
fn device(block_size: u32, blocks: u64) -> LunDevice {
    LunDevice {
        name: "fuzz".into(),
        block_size,
        num_blocks: blocks,
        read_only: false,
        naa: [0x60, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15],
        serial: "FUZZ0001".into(),
        write_cache: true,
        max_transfer_blocks: 256,
        optimal_transfer_blocks: 8,
        rotational: false,
        thin: true,
        holes_read_zero: true,
        atomic_unit_blocks: 0,
    }
}

fn port() -> PortContext {
    PortContext {
        target_name: TARGET.into(),
        tpgt: 1,
        relative_port_id: 1,
        tpg_id: 1,
    }
}

/// A unit whose own group (1) is in `state`, group 2 standby.
fn unit(state: AluaState) -> LunShared {
    let lu = LunShared::new();
    lu.ports().set(
        PortTable {
            epoch: 1,
            groups: vec![
                PortGroup {
                    id: 1,
                    state,
                    preferred: true,
                    relative_ports: vec![1],
                },
                PortGroup {
                    id: 2,
                    state: AluaState::Standby,
                    preferred: false,
                    relative_ports: vec![2],
                },
            ],
        },
        1,
    );
    lu
}

/// Completes a disk request as a store would (reads give zeros).
fn complete(conn: &mut Connection, req: trellis_iscsi::session::DiskRequest, pool: &BufPool) {
    match req.op {
        DiskOp::Read(buf) | DiskOp::Write { buf, .. } | DiskOp::WriteAtomic { buf, .. } => {
            let n = i32::try_from(buf.len()).unwrap_or(i32::MAX);
            conn.disk_done(req.task, n, Some(buf), pool);
        }
        DiskOp::Extent => conn.extent_done(
            req.task,
            Ok(Extent {
                mapped: req.offset.is_multiple_of(8192),
                len: 4096,
            }),
            pool,
        ),
        DiskOp::Flush
        | DiskOp::Prefetch { .. }
        | DiskOp::Unmap { .. }
        | DiskOp::WriteZeroes { .. } => conn.disk_done(req.task, 0, None, pool),
        // The fuzzed unit is a lone gateway's: nothing goes to a cluster.
        DiskOp::Shared(_) => {
            conn.shared_done(req.task, trellis_iscsi::scsi::Completion::good(), pool)
        }
    }
}

/// How far [`session`] got.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SessionRun {
    /// The connection reached full feature phase.
    pub full_feature: bool,
    /// Messages it sent (each one or more PDUs, batched).
    pub sent: usize,
    /// Disk requests it made.
    pub disk: usize,
}

/// Feeds `data` to a new connection as the bytes of its socket. The first
/// byte chooses: bit 0, a valid login is sent first (so the rest reaches
/// full feature phase); bit 1, the target requires CHAP; bits 2-4, the
/// size of the pieces the bytes arrive in.
pub fn session(data: &[u8]) -> SessionRun {
    let mut run = SessionRun::default();
    let Some((&mode, rest)) = data.split_first() else {
        return run;
    };
    let mut bytes = Vec::with_capacity(rest.len() + 1024);
    if mode & 1 != 0 {
        bytes.extend(login_bytes(1));
    }
    bytes.extend_from_slice(rest);
    let t0 = Instant::now();
    let mut conn = Connection::new(Rc::new(ConnConfig::default()), 7, t0);
    let mut host = FuzzHost {
        luns: Rc::new(LunTable {
            port: port(),
            luns: vec![LunEntry {
                lun: trellis_iscsi::scsi::lun_to_wire(0),
                dev: Rc::new(device(512, 2048)),
                slot: 0,
                shared: Arc::new(LunShared::new()),
                sanitize: Arc::default(),
            }],
            ids: vec![0],
        }),
        chap: mode & 2 != 0,
    };
    let pool = match BufPool::new(&PoolConfig {
        classes: vec![(4096, 8), (65536, 4), (1 << 20, 2)],
    }) {
        Ok(p) => p,
        Err(_) => return run,
    };
    let piece = [usize::MAX, 1, 7, 48, 49, 100, 4096, 65536][usize::from(mode >> 2 & 7)];
    let mut pending: Vec<u8> = Vec::new();
    let mut now = t0;
    for chunk in bytes.chunks(piece) {
        pending.extend_from_slice(chunk);
        now += Duration::from_millis(1);
        // Bounded: a buffer-starved connection resumes after completions.
        for _ in 0..16 {
            let used = conn.receive(&pending, &mut host, &pool, now);
            pending.drain(..used.min(pending.len()));
            run.full_feature |= conn.is_full_feature();
            let mut completed = false;
            while let Some(req) = conn.next_disk() {
                complete(&mut conn, req, &pool);
                completed = true;
                run.disk += 1;
            }
            while let Some(m) = conn.take_send() {
                conn.send_done(m);
                run.sent += 1;
            }
            if conn.should_close() {
                return run;
            }
            if !(conn.blocked() && completed) {
                break;
            }
        }
    }
    conn.tick(now + Duration::from_secs(6));
    conn.tick(now + Duration::from_secs(40));
    while let Some(m) = conn.take_send() {
        conn.send_done(m);
        run.sent += 1;
    }
    run
}

/// A one-PDU login to [`TARGET`] straight to full feature phase.
pub fn login_bytes(cmdsn: u32) -> Vec<u8> {
    let mut text = Vec::new();
    for (k, v) in [
        ("InitiatorName", INITIATOR),
        ("TargetName", TARGET),
        ("SessionType", "Normal"),
        ("HeaderDigest", "None"),
        ("DataDigest", "None"),
        ("ImmediateData", "Yes"),
        ("InitialR2T", "No"),
        ("MaxRecvDataSegmentLength", "65536"),
    ] {
        text.extend_from_slice(k.as_bytes());
        text.push(b'=');
        text.extend_from_slice(v.as_bytes());
        text.push(0);
    }
    let mut bhs = [0u8; BHS_LEN];
    LoginRequest {
        transit: true,
        continue_: false,
        csg: Stage::LoginOperationalNegotiation,
        nsg: Stage::FullFeaturePhase,
        version_max: 0,
        version_min: 0,
        total_ahs_len: 0,
        data_segment_len: text.len() as u32,
        isid: [0x80, 0, 0, 0, 0, 1],
        tsih: 0,
        itt: 1,
        cid: 1,
        cmdsn,
        exp_statsn: 0,
    }
    .encode(&mut bhs);
    let mut out = Vec::new();
    pdu::write_pdu(&bhs, &text, Digests::default(), &mut out);
    out
}

/// A SCSI Command PDU with `cdb` and `data` (immediate) for LUN 0.
pub fn scsi_bytes(
    itt: u32,
    cmdsn: u32,
    cdb: &[u8],
    edtl: u32,
    write: bool,
    data: &[u8],
) -> Vec<u8> {
    let mut c = [0u8; 16];
    c[..cdb.len().min(16)].copy_from_slice(&cdb[..cdb.len().min(16)]);
    let mut bhs = [0u8; BHS_LEN];
    ScsiCommand {
        immediate: false,
        final_bit: true,
        read: !write && edtl > 0,
        write,
        attr: 1,
        total_ahs_len: 0,
        data_segment_len: data.len() as u32,
        lun: trellis_iscsi::scsi::lun_to_wire(0),
        itt,
        expected_data_transfer_length: edtl,
        cmdsn,
        exp_statsn: 0,
        cdb: c,
    }
    .encode(&mut bhs);
    let mut out = Vec::new();
    pdu::write_pdu(&bhs, data, Digests::default(), &mut out);
    out
}

// ------------------------------------------------------------------- cdb

/// The first four bytes choose the device and the port's ALUA state, the
/// next byte the CDB length; then the CDB, then data-out.
pub fn cdb(data: &[u8]) {
    if data.len() < 5 {
        return;
    }
    let (cfg, rest) = data.split_at(5);
    let blocks = [0u64, 1, 8, 1 << 20, u64::MAX >> 12, u64::MAX][usize::from(cfg[0] >> 1 & 7) % 6];
    let dev = LunDevice {
        read_only: cfg[0] & 16 != 0,
        thin: cfg[0] & 32 != 0,
        holes_read_zero: cfg[0] & 64 != 0,
        write_cache: cfg[0] & 128 != 0,
        max_transfer_blocks: u32::from(cfg[1]),
        atomic_unit_blocks: u32::from(cfg[2] & 7),
        ..device(if cfg[0] & 1 == 0 { 512 } else { 4096 }, blocks)
    };
    let states = [
        AluaState::ActiveOptimized,
        AluaState::ActiveNonOptimized,
        AluaState::Standby,
        AluaState::Unavailable,
        AluaState::Transitioning,
        AluaState::Offline,
    ];
    let p = port();
    let lu = unit(states[usize::from(cfg[2] >> 3) % states.len()]);
    let len = usize::from(cfg[4] % 33).min(rest.len());
    let (cdb, payload) = rest.split_at(len);
    let cmd = Command {
        cdb,
        lun: 0,
        expected_len: u32::from(cfg[3]) << 4,
        read: cfg[3] & 1 != 0,
        write: cfg[3] & 2 != 0,
    };
    let mut nexus = NexusState::new();
    nexus.observe(&lu);
    for _ in 0..2 {
        let _ = dispatch(&cmd, &dev, &lu, &p, &[0, 1, 5000], &mut nexus);
    }
    let _ = dispatch_data_out(cdb, payload, &dev, &lu, &mut nexus);
    let _ = dispatch_unmapped(&cmd, &[0, 1]);
}

// -------------------------------------------------------------- datagram

const CLUSTER: &str = "fuzz";

fn key() -> trellis_control::wire::ClusterKey {
    trellis_control::wire::ClusterKey::new(b"fuzz-cluster-key-0123")
        .unwrap_or_else(|_| unreachable!())
}

/// Decodes `data` as a datagram as received (it fails the tag almost
/// always), then as the body of one with a valid tag: the first byte is
/// the message kind, the rest the body after the cluster name.
pub fn datagram(data: &[u8]) {
    use hmac::Mac;
    use trellis_control::wire::decode;
    use trellis_control::{ClusterId, ProtocolVersion};
    let (key, cluster, ours) = (key(), ClusterId(CLUSTER.into()), ProtocolVersion::CURRENT);
    let _ = decode(data, &key, &cluster, ours);
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    // The datagram layout: magic, format, kind, body length, body, tag.
    let template = seed_datagram();
    let mut body = vec![CLUSTER.len() as u8];
    body.extend_from_slice(CLUSTER.as_bytes());
    body.extend_from_slice(rest);
    let Ok(len) = u16::try_from(body.len()) else {
        return;
    };
    let mut out = template[..5].to_vec();
    out.push(kind);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&body);
    let mut mac = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(b"fuzz-cluster-key-0123")
        .unwrap_or_else(|_| unreachable!());
    mac.update(&out);
    out.extend_from_slice(&mac.finalize().into_bytes());
    let _ = decode(&out, &key, &cluster, ours);
}

/// A valid heartbeat datagram of the fuzz cluster.
pub fn seed_datagram() -> Vec<u8> {
    use trellis_control::wire::{encode, DataState, Header, Message, Role, SetRole};
    use trellis_control::{ClusterId, LinkName, MemberId, ProtocolVersion};
    let msg = Message::Heartbeat {
        header: Header {
            cluster: ClusterId(CLUSTER.into()),
            from: MemberId("m1".into()),
            software: "trellis 0.1.0".into(),
            protocol: ProtocolVersion::CURRENT,
            incarnation: 1,
            link: LinkName("a".into()),
            seq: 7,
        },
        role: Role::Primary,
        epoch: 3,
        roles: vec![
            SetRole {
                set: "default".into(),
                role: Role::Primary,
                epoch: 3,
            },
            SetRole {
                set: "s1".into(),
                role: Role::Alternate,
                epoch: 2,
            },
        ],
        state: Some(DataState {
            sessions: 2,
            healthy: true,
            booted: true,
            devices: 0,
        }),
    };
    encode(&msg, &key()).unwrap_or_default()
}

// ------------------------------------------------------------------- api

thread_local! {
    static API: (tokio::runtime::Runtime, axum::Router) = {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap_or_else(|e| panic!("runtime: {e}"));
        let service = Arc::new(trellis_control::api::testing::MemoryService::default());
        let router = trellis_control::api::router(
            service,
            API_TOKEN.into(),
            trellis_control::api::Local::default(),
        );
        (rt, router)
    };
}

const API_TOKEN: &str = "fuzz-api-token-0123";

/// The API's write endpoints, by the first byte of the input.
pub const API_ENDPOINTS: &[(&str, &str)] = &[
    ("POST", "/v1/devices"),
    ("POST", "/v1/devices/d1/resize"),
    ("POST", "/v1/targets"),
    ("POST", "/v1/targets/iqn.2026-12.io.trellis:t/luns"),
    ("POST", "/v1/targets/iqn.2026-12.io.trellis:t/acl"),
    ("DELETE", "/v1/devices/d1"),
];

/// Sends the rest of `data` as the JSON body of the endpoint its first
/// byte picks, with the token, through the real router (a fresh
/// in-memory cluster per process: the state builds up across inputs).
pub fn api(data: &[u8]) {
    use tower::ServiceExt;
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let (method, path) = API_ENDPOINTS[usize::from(pick) % API_ENDPOINTS.len()];
    let Ok(req) = axum::http::Request::builder()
        .method(method)
        .uri(path)
        .header("Authorization", format!("Bearer {API_TOKEN}"))
        .header("Content-Type", "application/json")
        .header("Idempotency-Key", format!("k{}", body.len() % 7))
        .body(axum::body::Body::from(body.to_vec()))
    else {
        return;
    };
    API.with(|(rt, router)| {
        let _ = rt.block_on(router.clone().oneshot(req));
    });
}

/// The starting corpus of each harness: valid inputs that reach deep.
pub fn seeds() -> Vec<(&'static str, Vec<Vec<u8>>)> {
    let mut session_seed = vec![1u8];
    session_seed.extend(scsi_bytes(2, 1, &[0x12, 0, 0, 0, 96, 0], 96, false, &[]));
    session_seed.extend(scsi_bytes(
        3,
        2,
        &[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        8,
        false,
        &[],
    ));
    session_seed.extend(scsi_bytes(
        4,
        3,
        &[0x2a, 0, 0, 0, 0, 8, 0, 0, 1, 0],
        512,
        true,
        &[0xab; 512],
    ));
    session_seed.extend(scsi_bytes(
        5,
        4,
        &[0x28, 0, 0, 0, 0, 8, 0, 0, 1, 0],
        512,
        false,
        &[],
    ));
    let mut login_only = vec![0u8];
    login_only.extend(login_bytes(1));
    let mut chap = vec![2u8];
    chap.extend(login_bytes(1));
    let mut bytewise = vec![1u8 | 1 << 2];
    bytewise.extend(scsi_bytes(2, 1, &[0, 0, 0, 0, 0, 0], 0, false, &[]));
    let inquiry = vec![0x12, 0, 0, 0, 96, 0];
    let mut cdb_seeds = Vec::new();
    for (cfg, cdb, data) in [
        ([0u8, 0, 0, 0x61, 6], inquiry.clone(), vec![]),
        (
            [0u8, 0, 0, 0x21, 10],
            vec![0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            vec![],
        ),
        (
            [0x20u8, 0, 0, 0x12, 10],
            vec![0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0],
            {
                let mut d = vec![0, 22, 0, 16, 0, 0, 0, 0];
                d.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0, 8, 0, 0, 0, 0]);
                d
            },
        ),
        (
            [0u8, 0, 0, 0x21, 16],
            vec![0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0],
            vec![],
        ),
        (
            [0u8, 0, 0, 0x22, 10],
            vec![0x5f, 0x01, 0, 0, 0, 0, 0, 0, 24, 0],
            vec![0; 24],
        ),
        (
            [0u8, 0, 0, 0x21, 10],
            vec![0x5e, 0x00, 0, 0, 0, 0, 0, 0x10, 0, 0],
            vec![],
        ),
        (
            [0u8, 0, 0, 0x21, 12],
            vec![0xa3, 0x0a, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0],
            vec![],
        ),
        (
            [0u8, 0, 0, 0x22, 6],
            vec![0x15, 0x10, 0, 0, 24, 0],
            vec![0; 24],
        ),
    ] {
        let mut s = cfg.to_vec();
        s.extend(cdb);
        s.extend(data);
        cdb_seeds.push(s);
    }
    let mut heartbeat_body = vec![1u8];
    let dg = seed_datagram();
    // Kind, then the body after the cluster name, as `datagram` rebuilds it.
    heartbeat_body.extend_from_slice(&dg[8 + 1 + CLUSTER.len()..dg.len() - 32]);
    let api_seeds = vec![
        [&[0u8][..], br#"{"name": "d1", "size": 1048576, "block_size": 512, "thin": true}"#].concat(),
        [&[1u8][..], br#"{"size": 2097152}"#].concat(),
        [&[2u8][..], br#"{"iqn": "iqn.2026-12.io.trellis:t", "alias": "t"}"#].concat(),
        [&[3u8][..], br#"{"lun": 0, "device": "d1"}"#].concat(),
        [&[4u8][..], br#"{"initiator": "iqn.2026-12.io.trellis:h", "chap_user": "u", "chap_secret": "twelve-chars", "luns": [0]}"#].concat(),
        [&[5u8][..], b""].concat(),
    ];
    let mut pdu_seeds = vec![[&[0u8][..], &login_bytes(1)].concat()];
    pdu_seeds.push([&[0u8][..], &scsi_bytes(2, 1, &inquiry, 96, false, &[])].concat());
    vec![
        ("pdu", pdu_seeds),
        ("session", vec![session_seed, login_only, chap, bytewise]),
        ("cdb", cdb_seeds),
        ("datagram", vec![dg.clone(), heartbeat_body]),
        ("api", api_seeds),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The main session seed logs in and runs its four commands, two of
    /// them on the disk.
    #[test]
    fn the_session_seed_reaches_the_disk() {
        let (_, inputs) = &seeds()[1];
        let run = session(&inputs[0]);
        assert!(run.full_feature, "{run:?}");
        assert!(run.sent >= 2 && run.disk >= 2, "{run:?}");
    }

    /// Every seed runs through its harness without a finding.
    #[test]
    fn seeds_run_clean() {
        for (name, inputs) in seeds() {
            for input in inputs {
                match name {
                    "pdu" => pdu(&input),
                    "session" => {
                        session(&input);
                    }
                    "cdb" => cdb(&input),
                    "datagram" => datagram(&input),
                    "api" => api(&input),
                    other => panic!("{other}"),
                }
            }
        }
    }
}
