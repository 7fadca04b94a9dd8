//! Table-driven login tests: a fake `LoginContext`, an initiator written
//! inline, and exact assertions on every response. No sockets. Login flows
//! and failures live here; operational key results in `keys.rs`.

mod keys;

use md5::{Digest as _, Md5};
use sha2::Sha256;

use super::*;
use crate::pdu::{LoginRequest, Stage};
use crate::text::{encode_hex, parse_binary, parse_pairs, push_pair};

const INI: &str = "iqn.2024-01.org.example:initiator";
const TGT: &str = "iqn.2024-01.org.trellis:disk0";
const SEC: Stage = Stage::SecurityNegotiation;
const OP: Stage = Stage::LoginOperationalNegotiation;
const FFP: Stage = Stage::FullFeaturePhase;

#[derive(Default)]
struct Fake {
    chap: Option<ChapPolicy>,
    deny: bool,
    existing_tsih: Option<u16>,
    alloc_error: Option<LoginStatus>,
    allocated: Vec<SessionRequest>,
}

impl LoginContext for Fake {
    fn target_exists(&self, target: &str) -> bool {
        target == TGT
    }
    fn initiator_allowed(&self, _target: Option<&str>, _initiator: &str) -> bool {
        !self.deny
    }
    fn chap(&self, _target: Option<&str>, _initiator: &str) -> Option<ChapPolicy> {
        self.chap.clone()
    }
    fn target_alias(&self, _target: &str) -> Option<String> {
        Some("disk zero".into())
    }
    fn session_exists(&self, _initiator: &str, _isid: [u8; 6], tsih: u16) -> bool {
        self.existing_tsih == Some(tsih)
    }
    fn allocate_session(&mut self, req: &SessionRequest) -> Result<u16, LoginStatus> {
        if let Some(e) = self.alloc_error {
            return Err(e);
        }
        self.allocated.push(req.clone());
        Ok(0x1234)
    }
}

fn chap_policy(mutual: bool) -> ChapPolicy {
    ChapPolicy {
        user: "alice".into(),
        secret: b"initiator-secret".to_vec(),
        mutual: mutual.then(|| ("trellis".to_owned(), b"target-secret-xx".to_vec())),
    }
}

fn req(csg: Stage, nsg: Stage, transit: bool) -> LoginRequest {
    LoginRequest {
        transit,
        continue_: false,
        csg,
        nsg,
        version_max: 0,
        version_min: 0,
        total_ahs_len: 0,
        data_segment_len: 0,
        isid: [0x80, 0, 0, 0x12, 0x34, 0x56],
        tsih: 0,
        itt: 0x10,
        cid: 1,
        cmdsn: 100,
        exp_statsn: 0,
    }
}

fn text(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in pairs {
        push_pair(&mut out, k, v);
    }
    out
}

fn machine() -> LoginMachine {
    LoginMachine::new(TargetLimits::default(), 7).with_initial_statsn(1000)
}

fn get(step: &LoginStep, key: &str) -> Option<String> {
    parse_pairs(&step.data)
        .unwrap()
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
}

fn status(step: &LoginStep) -> u16 {
    u16::from(step.response.status_class) << 8 | u16::from(step.response.status_detail)
}

fn failed(step: &LoginStep) -> bool {
    matches!(step.outcome, LoginOutcome::Failed)
}

fn params(step: &LoginStep) -> &SessionParams {
    match &step.outcome {
        LoginOutcome::FullFeature(p) => p,
        other => panic!(
            "not in full feature phase: {other:?} {:?} status {:#06x}",
            step.error,
            status(step)
        ),
    }
}

/// What libiscsi sends in its operational stage request.
fn libiscsi_op_keys() -> Vec<(&'static str, &'static str)> {
    vec![
        ("InitiatorName", INI),
        ("TargetName", TGT),
        ("SessionType", "Normal"),
        ("HeaderDigest", "None,CRC32C"),
        ("DataDigest", "None"),
        ("InitialR2T", "No"),
        ("ImmediateData", "Yes"),
        ("MaxBurstLength", "262144"),
        ("FirstBurstLength", "262144"),
        ("DefaultTime2Wait", "2"),
        ("DefaultTime2Retain", "0"),
        ("MaxOutstandingR2T", "1"),
        ("ErrorRecoveryLevel", "0"),
        ("IFMarker", "No"),
        ("OFMarker", "No"),
        ("MaxConnections", "1"),
        ("MaxRecvDataSegmentLength", "262144"),
        ("DataPDUInOrder", "Yes"),
        ("DataSequenceInOrder", "Yes"),
    ]
}

fn identity() -> Vec<(&'static str, &'static str)> {
    vec![
        ("InitiatorName", INI),
        ("TargetName", TGT),
        ("SessionType", "Normal"),
    ]
}

#[test]
fn none_login_in_one_pdu() {
    let mut m = machine();
    let mut ctx = Fake::default();
    let step = m.handle(&req(OP, FFP, true), &text(&libiscsi_op_keys()), &mut ctx);
    let r = step.response;
    assert_eq!(status(&step), 0);
    assert!(r.transit && !r.continue_);
    assert_eq!((r.csg, r.nsg), (OP, FFP));
    assert_eq!(
        (r.tsih, r.itt, r.isid),
        (0x1234, 0x10, [0x80, 0, 0, 0x12, 0x34, 0x56])
    );
    assert_eq!((r.statsn, r.exp_cmdsn, r.max_cmdsn), (1000, 100, 227));
    assert_eq!(r.data_segment_len as usize, step.data.len());
    assert_eq!(get(&step, "TargetPortalGroupTag").as_deref(), Some("1"));
    assert_eq!(
        get(&step, "MaxRecvDataSegmentLength").as_deref(),
        Some("262144")
    );
    assert_eq!(get(&step, "TargetAlias").as_deref(), Some("disk zero"));
    assert_eq!(get(&step, "HeaderDigest").as_deref(), Some("None"));
    assert_eq!(get(&step, "IFMarker").as_deref(), Some("No"));
    let p = params(&step);
    assert_eq!(p.kind, SessionKind::Normal);
    assert_eq!(p.target_name.as_deref(), Some(TGT));
    assert_eq!(p.initiator_name, INI);
    assert_eq!((p.tsih, p.cid, p.exp_cmdsn_start), (0x1234, 1, 100));
    assert_eq!((p.max_cmdsn, p.next_statsn), (227, 1001));
    assert!(!p.header_digest && !p.data_digest);
    assert!(!p.initial_r2t && p.immediate_data);
    assert_eq!(p.max_burst_length, 262_144);
    assert_eq!(p.first_burst_length, 262_144);
    assert_eq!(p.max_recv_data_segment_length_initiator, 262_144);
    assert_eq!(p.max_recv_data_segment_length_target, 262_144);
    assert_eq!((p.default_time2wait, p.default_time2retain), (2, 0));
    assert_eq!((p.max_outstanding_r2t, p.error_recovery_level), (1, 0));
    assert_eq!(p.chap_user, None);
    assert_eq!(ctx.allocated.len(), 1);
    assert_eq!(ctx.allocated[0].target.as_deref(), Some(TGT));
    assert!(m.is_finished());
    // Anything after the login is refused.
    let again = m.handle(&req(OP, FFP, true), &[], &mut ctx);
    assert!(failed(&again));
    assert_eq!(status(&again), 0x0200);
}

#[test]
fn none_login_through_security_stage() {
    let mut m = machine();
    let mut ctx = Fake::default();
    let mut keys = identity();
    keys.push(("AuthMethod", "CHAP,None"));
    let s1 = m.handle(&req(SEC, OP, true), &text(&keys), &mut ctx);
    assert_eq!(status(&s1), 0);
    assert_eq!(get(&s1, "AuthMethod").as_deref(), Some("None"));
    assert!(s1.response.transit);
    assert_eq!((s1.response.csg, s1.response.nsg), (SEC, OP));
    assert_eq!(s1.response.statsn, 1000);
    assert_eq!(get(&s1, "TargetPortalGroupTag").as_deref(), Some("1"));
    assert_eq!(get(&s1, "MaxRecvDataSegmentLength"), None);
    assert_eq!(s1.outcome, LoginOutcome::Continue);
    assert_eq!(m.stage(), Some(OP));

    let s2 = m.handle(&req(OP, FFP, true), &text(&libiscsi_op_keys()), &mut ctx);
    assert_eq!(s2.response.statsn, 1001);
    assert_eq!(get(&s2, "TargetPortalGroupTag"), None);
    assert_eq!(
        get(&s2, "MaxRecvDataSegmentLength").as_deref(),
        Some("262144")
    );
    assert_eq!(params(&s2).next_statsn, 1002);
}

#[test]
fn security_straight_to_ffp_goes_through_operational() {
    let mut m = machine();
    let mut ctx = Fake::default();
    let mut keys = identity();
    keys.push(("AuthMethod", "None"));
    let s1 = m.handle(&req(SEC, FFP, true), &text(&keys), &mut ctx);
    assert!(s1.response.transit);
    assert_eq!(s1.response.nsg, OP);
    let s2 = m.handle(&req(OP, FFP, true), &[], &mut ctx);
    let p = params(&s2);
    // Nothing negotiated: RFC defaults, clipped by our limits.
    assert_eq!(p.max_burst_length, 262_144);
    assert_eq!(p.first_burst_length, 65_536);
    assert!(p.initial_r2t && p.immediate_data);
    assert_eq!(p.max_recv_data_segment_length_initiator, 8192);
}

#[test]
fn discovery_login() {
    let mut m = machine();
    let mut ctx = Fake::default();
    let keys = [
        ("InitiatorName", INI),
        ("SessionType", "Discovery"),
        ("HeaderDigest", "None"),
        ("MaxBurstLength", "262144"),
        ("MaxRecvDataSegmentLength", "65536"),
        ("SendTargets", "All"),
    ];
    let step = m.handle(&req(OP, FFP, true), &text(&keys), &mut ctx);
    assert_eq!(get(&step, "TargetPortalGroupTag"), None);
    assert_eq!(get(&step, "TargetAlias"), None);
    assert_eq!(get(&step, "MaxBurstLength").as_deref(), Some("Irrelevant"));
    assert_eq!(get(&step, "SendTargets").as_deref(), Some("Irrelevant"));
    let p = params(&step);
    assert_eq!(p.kind, SessionKind::Discovery);
    assert_eq!(p.target_name, None);
    assert_eq!(p.max_recv_data_segment_length_initiator, 65536);
    assert_eq!(ctx.allocated[0].kind, SessionKind::Discovery);
}

/// Runs the libiscsi CHAP exchange up to the challenge; returns (id, challenge).
fn chap_to_challenge(m: &mut LoginMachine, ctx: &mut Fake, algs: &str) -> (u8, Vec<u8>) {
    let mut keys = identity();
    keys.push(("AuthMethod", "CHAP,None"));
    let s1 = m.handle(&req(SEC, OP, true), &text(&keys), ctx);
    assert_eq!(get(&s1, "AuthMethod").as_deref(), Some("CHAP"));
    assert!(!s1.response.transit, "must not leave security before CHAP");
    let s2 = m.handle(&req(SEC, OP, false), &text(&[("CHAP_A", algs)]), ctx);
    assert_eq!(status(&s2), 0);
    assert!(!s2.response.transit);
    let id: u8 = get(&s2, "CHAP_I").unwrap().parse().unwrap();
    let c = get(&s2, "CHAP_C").unwrap();
    assert!(c.starts_with("0x"));
    let challenge = parse_binary(&c).unwrap();
    assert!(challenge.len() >= 16);
    (id, challenge)
}

fn md5_response(id: u8, secret: &[u8], challenge: &[u8]) -> String {
    let mut h = Md5::new();
    h.update([id]);
    h.update(secret);
    h.update(challenge);
    encode_hex(&h.finalize())
}

#[test]
fn chap_one_way_good() {
    let mut m = machine();
    let mut ctx = Fake {
        chap: Some(chap_policy(false)),
        ..Fake::default()
    };
    let (id, c) = chap_to_challenge(&mut m, &mut ctx, "5");
    let r = md5_response(id, b"initiator-secret", &c);
    let s3 = m.handle(
        &req(SEC, OP, true),
        &text(&[("CHAP_N", "alice"), ("CHAP_R", &r)]),
        &mut ctx,
    );
    assert_eq!(status(&s3), 0);
    assert!(s3.response.transit);
    assert_eq!(s3.response.nsg, OP);
    assert_eq!(get(&s3, "CHAP_R"), None);
    let s4 = m.handle(&req(OP, FFP, true), &text(&libiscsi_op_keys()), &mut ctx);
    assert_eq!(params(&s4).chap_user.as_deref(), Some("alice"));
}

#[test]
fn chap_sha256_and_lowercase_hex() {
    let mut m = machine();
    let mut ctx = Fake {
        chap: Some(chap_policy(false)),
        ..Fake::default()
    };
    let (id, c) = chap_to_challenge(&mut m, &mut ctx, "7,5");
    let mut h = Sha256::new();
    h.update([id]);
    h.update(b"initiator-secret");
    h.update(&c);
    let r = encode_hex(&h.finalize()).to_lowercase();
    let s3 = m.handle(
        &req(SEC, OP, true),
        &text(&[("CHAP_N", "alice"), ("CHAP_R", &r)]),
        &mut ctx,
    );
    assert_eq!(status(&s3), 0, "{:?}", s3.error);
}

#[test]
fn chap_failures() {
    type Mutate = fn(u8, &[u8]) -> Vec<(String, String)>;
    let cases: Vec<(&str, Mutate)> = vec![
        ("bad secret", |id, c| {
            vec![
                ("CHAP_N".into(), "alice".into()),
                ("CHAP_R".into(), md5_response(id, b"wrong", c)),
            ]
        }),
        ("bad user", |id, c| {
            vec![
                ("CHAP_N".into(), "mallory".into()),
                ("CHAP_R".into(), md5_response(id, b"initiator-secret", c)),
            ]
        }),
        ("missing response", |_, _| {
            vec![("CHAP_N".into(), "alice".into())]
        }),
        ("malformed response", |_, _| {
            vec![
                ("CHAP_N".into(), "alice".into()),
                ("CHAP_R".into(), "0xZZ".into()),
            ]
        }),
        ("reflected challenge", |id, c| {
            vec![
                ("CHAP_N".into(), "alice".into()),
                ("CHAP_R".into(), md5_response(id, b"initiator-secret", c)),
                ("CHAP_I".into(), id.to_string()),
                ("CHAP_C".into(), encode_hex(c)),
            ]
        }),
    ];
    for (name, answer) in cases {
        let mut m = machine();
        let mut ctx = Fake {
            chap: Some(chap_policy(true)),
            ..Fake::default()
        };
        let (id, c) = chap_to_challenge(&mut m, &mut ctx, "5");
        let pairs = answer(id, &c);
        let refs: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let s = m.handle(&req(SEC, OP, true), &text(&refs), &mut ctx);
        assert!(failed(&s), "{name}");
        assert_eq!(status(&s), 0x0201, "{name}");
        assert!(s.data.is_empty());
        assert!(ctx.allocated.is_empty());
    }
}

#[test]
fn mutual_chap() {
    let mut m = machine();
    let mut ctx = Fake {
        chap: Some(chap_policy(true)),
        ..Fake::default()
    };
    let (id, c) = chap_to_challenge(&mut m, &mut ctx, "5");
    let r = md5_response(id, b"initiator-secret", &c);
    let my_challenge = [0x5au8; 32];
    let s3 = m.handle(
        &req(SEC, OP, true),
        &text(&[
            ("CHAP_N", "alice"),
            ("CHAP_R", &r),
            ("CHAP_I", "77"),
            ("CHAP_C", &encode_hex(&my_challenge)),
        ]),
        &mut ctx,
    );
    assert_eq!(status(&s3), 0);
    assert!(s3.response.transit);
    assert_eq!(get(&s3, "CHAP_N").as_deref(), Some("trellis"));
    let expected = md5_response(77, b"target-secret-xx", &my_challenge);
    assert_eq!(get(&s3, "CHAP_R"), Some(expected.clone()));
    // libiscsi checks exactly "0x" + 32 hex digits for MD5.
    assert_eq!(expected.len(), 2 + 32);
}

#[test]
fn mutual_chap_not_configured_fails() {
    let mut m = machine();
    let mut ctx = Fake {
        chap: Some(chap_policy(false)),
        ..Fake::default()
    };
    let (id, c) = chap_to_challenge(&mut m, &mut ctx, "5");
    let r = md5_response(id, b"initiator-secret", &c);
    let s = m.handle(
        &req(SEC, OP, true),
        &text(&[
            ("CHAP_N", "alice"),
            ("CHAP_R", &r),
            ("CHAP_I", "1"),
            ("CHAP_C", "0x0102030405060708"),
        ]),
        &mut ctx,
    );
    assert_eq!(status(&s), 0x0201);
}

#[test]
fn unsupported_chap_algorithm_fails() {
    let mut m = machine();
    let mut ctx = Fake {
        chap: Some(chap_policy(false)),
        ..Fake::default()
    };
    let mut keys = identity();
    keys.push(("AuthMethod", "CHAP"));
    m.handle(&req(SEC, OP, false), &text(&keys), &mut ctx);
    let s = m.handle(&req(SEC, OP, false), &text(&[("CHAP_A", "6")]), &mut ctx);
    assert_eq!(status(&s), 0x0201);
}

#[test]
fn login_failures_table() {
    struct Case {
        name: &'static str,
        ctx: Fake,
        req: LoginRequest,
        keys: Vec<(&'static str, &'static str)>,
        want: u16,
    }
    let op = req(OP, FFP, true);
    let mut bad_version = op;
    bad_version.version_min = 1;
    bad_version.version_max = 2;
    let mut tsih = op;
    tsih.tsih = 9;
    let cases = vec![
        Case {
            name: "missing InitiatorName",
            ctx: Fake::default(),
            req: op,
            keys: vec![("TargetName", TGT)],
            want: 0x0207,
        },
        Case {
            name: "missing TargetName",
            ctx: Fake::default(),
            req: op,
            keys: vec![("InitiatorName", INI)],
            want: 0x0207,
        },
        Case {
            name: "unknown target",
            ctx: Fake::default(),
            req: op,
            keys: vec![("InitiatorName", INI), ("TargetName", "iqn.nope")],
            want: 0x0203,
        },
        Case {
            // Answered as an unknown target: no oracle of target names.
            name: "initiator not allowed",
            ctx: Fake {
                deny: true,
                ..Fake::default()
            },
            req: op,
            keys: identity(),
            want: 0x0203,
        },
        Case {
            name: "CHAP required, security skipped",
            ctx: Fake {
                chap: Some(chap_policy(false)),
                ..Fake::default()
            },
            req: op,
            keys: identity(),
            want: 0x0201,
        },
        Case {
            name: "CHAP required, only None offered",
            ctx: Fake {
                chap: Some(chap_policy(false)),
                ..Fake::default()
            },
            req: req(SEC, OP, true),
            keys: vec![
                ("InitiatorName", INI),
                ("TargetName", TGT),
                ("AuthMethod", "None"),
            ],
            want: 0x0201,
        },
        Case {
            name: "CHAP required, no AuthMethod, transit",
            ctx: Fake {
                chap: Some(chap_policy(false)),
                ..Fake::default()
            },
            req: req(SEC, OP, true),
            keys: identity(),
            want: 0x0201,
        },
        Case {
            name: "only CHAP offered, none configured",
            ctx: Fake::default(),
            req: req(SEC, OP, true),
            keys: vec![
                ("InitiatorName", INI),
                ("TargetName", TGT),
                ("AuthMethod", "CHAP"),
            ],
            want: 0x0201,
        },
        Case {
            name: "version mismatch",
            ctx: Fake::default(),
            req: bad_version,
            keys: identity(),
            want: 0x0205,
        },
        Case {
            name: "TSIH of unknown session",
            ctx: Fake::default(),
            req: tsih,
            keys: identity(),
            want: 0x020a,
        },
        Case {
            name: "second connection to a session",
            ctx: Fake {
                existing_tsih: Some(9),
                ..Fake::default()
            },
            req: tsih,
            keys: identity(),
            want: 0x0206,
        },
        Case {
            name: "unsupported session type",
            ctx: Fake::default(),
            req: op,
            keys: vec![("InitiatorName", INI), ("SessionType", "Bogus")],
            want: 0x0209,
        },
        Case {
            name: "backwards transition",
            ctx: Fake::default(),
            req: req(OP, SEC, true),
            keys: identity(),
            want: 0x0200,
        },
        Case {
            name: "start in full feature phase",
            ctx: Fake::default(),
            req: req(FFP, FFP, false),
            keys: identity(),
            want: 0x0200,
        },
        Case {
            name: "allocation refused",
            ctx: Fake {
                alloc_error: Some(LoginStatus::OutOfResources),
                ..Fake::default()
            },
            req: op,
            keys: identity(),
            want: 0x0302,
        },
        Case {
            name: "security key in operational stage",
            ctx: Fake::default(),
            req: op,
            keys: vec![("InitiatorName", INI), ("TargetName", TGT), ("CHAP_A", "5")],
            want: 0x0200,
        },
    ];
    for c in cases {
        let mut m = machine();
        let mut ctx = c.ctx;
        let s = m.handle(&c.req, &text(&c.keys), &mut ctx);
        assert_eq!(status(&s), c.want, "{}: {:?}", c.name, s.error);
        assert!(failed(&s), "{}", c.name);
        assert!(!s.response.transit, "{}", c.name);
        assert_eq!(s.response.itt, c.req.itt, "{}", c.name);
        assert!(m.is_finished());
    }
}

#[test]
fn duplicate_and_malformed_text_is_initiator_error() {
    for data in [
        b"InitiatorName=a\0InitiatorName=a\0".to_vec(),
        b"InitiatorName\0".to_vec(),
        b"=x\0".to_vec(),
    ] {
        let mut m = machine();
        let s = m.handle(&req(OP, FFP, true), &data, &mut Fake::default());
        assert_eq!(status(&s), 0x0200);
    }
}

#[test]
fn continued_text_is_gathered() {
    let mut m = machine();
    let mut ctx = Fake::default();
    let all = text(&libiscsi_op_keys());
    let cut = 40; // mid-key
    let mut first = req(OP, FFP, false);
    first.continue_ = true;
    let s1 = m.handle(&first, &all[..cut], &mut ctx);
    assert_eq!(status(&s1), 0);
    assert!(s1.data.is_empty());
    assert!(!s1.response.transit);
    assert_eq!(s1.outcome, LoginOutcome::Continue);
    assert_eq!(s1.response.statsn, 1000);
    let s2 = m.handle(&req(OP, FFP, true), &all[cut..], &mut ctx);
    assert_eq!(s2.response.statsn, 1001);
    assert_eq!(params(&s2).max_recv_data_segment_length_initiator, 262_144);
    // TPGT goes in the response to the first request with C=0.
    assert_eq!(get(&s2, "TargetPortalGroupTag").as_deref(), Some("1"));
}

#[test]
fn transit_with_continue_is_an_error() {
    let mut m = machine();
    let mut r = req(OP, FFP, true);
    r.continue_ = true;
    let s = m.handle(&r, &text(&identity()), &mut Fake::default());
    assert_eq!(status(&s), 0x0200);
}

#[test]
fn constant_fields_and_renegotiation() {
    let mut keys = identity();
    keys.push(("MaxBurstLength", "65536"));
    for change in 0..4 {
        let mut m = machine();
        let mut ctx = Fake::default();
        let s1 = m.handle(&req(OP, FFP, false), &text(&keys), &mut ctx);
        assert_eq!(status(&s1), 0);
        let mut r = req(OP, FFP, true);
        let data = match change {
            0 => {
                r.itt = 0x11;
                Vec::new()
            }
            1 => {
                r.cid = 2;
                Vec::new()
            }
            2 => {
                r.isid[5] ^= 1;
                Vec::new()
            }
            _ => text(&[("MaxBurstLength", "65536")]),
        };
        let s2 = m.handle(&r, &data, &mut ctx);
        assert_eq!(status(&s2), 0x0200, "change {change}");
    }
}

#[test]
fn libiscsi_resends_identity_in_operational_stage() {
    // libiscsi repeats InitiatorName/TargetName/SessionType in the operational
    // stage after CHAP; identical re-declarations are accepted.
    let mut m = machine();
    let mut ctx = Fake {
        chap: Some(chap_policy(false)),
        ..Fake::default()
    };
    let (id, c) = chap_to_challenge(&mut m, &mut ctx, "5");
    let r = md5_response(id, b"initiator-secret", &c);
    m.handle(
        &req(SEC, OP, true),
        &text(&[("CHAP_N", "alice"), ("CHAP_R", &r)]),
        &mut ctx,
    );
    let s = m.handle(&req(OP, FFP, true), &text(&libiscsi_op_keys()), &mut ctx);
    params(&s);
    // A different name is not accepted.
    let mut m = machine();
    m.handle(
        &req(OP, FFP, false),
        &text(&identity()),
        &mut Fake::default(),
    );
    let s = m.handle(
        &req(OP, FFP, true),
        &text(&[("InitiatorName", "iqn.other")]),
        &mut Fake::default(),
    );
    assert_eq!(status(&s), 0x0200);
}

#[test]
fn malformed_header_gets_initiator_error() {
    let mut m = machine();
    let mut bhs = [0u8; crate::pdu::BHS_LEN];
    bhs[0] = 0x43;
    bhs[1] = 0x80 | 0x08 | 0x03;
    bhs[16..20].copy_from_slice(&[0, 0, 0, 0x42]);
    let err = LoginRequest::parse(&bhs).unwrap_err();
    let s = m.handle_malformed(&bhs, err);
    assert_eq!(status(&s), 0x0200);
    assert_eq!(s.response.itt, 0x42);
    assert!(failed(&s));
}

#[test]
fn status_codes() {
    assert_eq!(LoginStatus::SessionDoesNotExist.code(), 0x020a);
    assert_eq!(LoginStatus::OutOfResources.class(), 3);
    assert_eq!(LoginStatus::OutOfResources.detail(), 2);
    assert_eq!(LoginStatus::Success.code(), 0);
}
