//! Operational key negotiation through the login machine: every key's
//! result function, out-of-range values, and the target's own offers.

use super::*;

/// Negotiates one extra key in an otherwise minimal login.
fn negotiate_one(key: &'static str, value: &'static str) -> LoginStep {
    let mut keys = identity();
    keys.push((key, value));
    let mut m = machine();
    m.handle(&req(OP, FFP, true), &text(&keys), &mut Fake::default())
}

#[test]
fn every_key_result_function() {
    // (key, offer, response) with TargetLimits::default().
    let table: &[(&str, &str, Option<&str>)] = &[
        ("HeaderDigest", "CRC32C,None", Some("CRC32C")),
        ("HeaderDigest", "None,CRC32C", Some("None")),
        ("HeaderDigest", "MD5", Some("Reject")),
        ("DataDigest", "CRC32C", Some("CRC32C")),
        ("MaxConnections", "4", Some("1")),
        ("MaxConnections", "0", Some("Reject")),
        ("MaxConnections", "65536", Some("Reject")),
        ("InitialR2T", "No", Some("No")),
        ("InitialR2T", "Yes", Some("Yes")),
        ("InitialR2T", "maybe", Some("Reject")),
        ("ImmediateData", "Yes", Some("Yes")),
        ("ImmediateData", "No", Some("No")),
        // Declarative: the only MaxRecvDataSegmentLength in the response is ours.
        ("MaxRecvDataSegmentLength", "4096", Some("262144")),
        ("MaxRecvDataSegmentLength", "511", Some("262144")),
        ("MaxBurstLength", "16777215", Some("1048576")),
        ("MaxBurstLength", "0x10000", Some("65536")),
        ("MaxBurstLength", "511", Some("Reject")),
        ("MaxBurstLength", "16777216", Some("Reject")),
        ("FirstBurstLength", "16777215", Some("262144")),
        ("FirstBurstLength", "4096", Some("4096")),
        ("FirstBurstLength", "100", Some("Reject")),
        ("DefaultTime2Wait", "0", Some("2")),
        ("DefaultTime2Wait", "30", Some("30")),
        ("DefaultTime2Wait", "3601", Some("Reject")),
        ("DefaultTime2Retain", "0", Some("0")),
        ("DefaultTime2Retain", "3600", Some("20")),
        ("DefaultTime2Retain", "-1", Some("Reject")),
        ("MaxOutstandingR2T", "64", Some("8")),
        ("MaxOutstandingR2T", "2", Some("2")),
        ("MaxOutstandingR2T", "0", Some("Reject")),
        ("DataPDUInOrder", "No", Some("Yes")),
        ("DataSequenceInOrder", "No", Some("Yes")),
        ("ErrorRecoveryLevel", "2", Some("0")),
        ("ErrorRecoveryLevel", "3", Some("Reject")),
        ("iSCSIProtocolLevel", "2", Some("1")),
        ("TaskReporting", "ResponseFence,RFC3720", Some("RFC3720")),
        ("TaskReporting", "FastAbort", Some("Reject")),
        ("IFMarker", "Yes", Some("No")),
        ("OFMarker", "No", Some("No")),
        ("IFMarkInt", "2048~8192", Some("Reject")),
        ("OFMarkInt", "2048", Some("Reject")),
        ("SendTargets", "All", Some("Irrelevant")),
        ("X-com.example.knob", "1", Some("NotUnderstood")),
        ("X#vendor", "1", Some("NotUnderstood")),
        ("Frobnicate", "Yes", Some("NotUnderstood")),
    ];
    for &(key, offer, want) in table {
        let s = negotiate_one(key, offer);
        assert_eq!(status(&s), 0, "{key}={offer}: {:?}", s.error);
        assert_eq!(get(&s, key).as_deref(), want, "{key}={offer}");
    }
}

#[test]
fn negotiated_values_reach_session_params() {
    let s = negotiate_one("MaxBurstLength", "65536");
    assert_eq!(params(&s).max_burst_length, 65536);
    // FirstBurstLength defaults to 65536 and never exceeds MaxBurstLength.
    assert_eq!(params(&s).first_burst_length, 65536);
    let mrdsl = |v| {
        params(&negotiate_one("MaxRecvDataSegmentLength", v)).max_recv_data_segment_length_initiator
    };
    assert_eq!(mrdsl("4096"), 4096);
    assert_eq!(mrdsl("511"), 8192);
    assert!(params(&negotiate_one("HeaderDigest", "CRC32C")).header_digest);
    assert!(params(&negotiate_one("DataDigest", "CRC32C,None")).data_digest);
    assert_eq!(
        params(&negotiate_one("MaxOutstandingR2T", "64")).max_outstanding_r2t,
        8
    );
    assert_eq!(
        params(&negotiate_one("DefaultTime2Wait", "30")).default_time2wait,
        30
    );
    assert!(!params(&negotiate_one("ImmediateData", "No")).immediate_data);
    assert!(params(&negotiate_one("InitialR2T", "Yes")).initial_r2t);
    // A rejected value leaves the default in place.
    assert_eq!(
        params(&negotiate_one("MaxBurstLength", "1")).max_burst_length,
        262_144
    );
    let mut keys = identity();
    keys.push(("MaxBurstLength", "8192"));
    keys.push(("FirstBurstLength", "65536"));
    let mut m = machine();
    let s = m.handle(&req(OP, FFP, true), &text(&keys), &mut Fake::default());
    assert_eq!(get(&s, "FirstBurstLength").as_deref(), Some("8192"));
    assert_eq!(params(&s).first_burst_length, 8192);
}

#[test]
fn first_burst_irrelevant_without_unsolicited_data() {
    let mut keys = identity();
    keys.push(("InitialR2T", "Yes"));
    keys.push(("ImmediateData", "No"));
    keys.push(("FirstBurstLength", "65536"));
    let mut m = machine();
    let s = m.handle(&req(OP, FFP, true), &text(&keys), &mut Fake::default());
    assert_eq!(get(&s, "FirstBurstLength").as_deref(), Some("Irrelevant"));
}

#[test]
fn target_offers_when_defaults_exceed_limits() {
    let limits = TargetLimits {
        max_burst_length: 65536,
        first_burst_length: 16384,
        immediate_data: false,
        ..TargetLimits::default()
    };
    let mut m = LoginMachine::new(limits, 1);
    let mut ctx = Fake::default();
    let s1 = m.handle(&req(OP, FFP, true), &text(&identity()), &mut ctx);
    assert_eq!(status(&s1), 0);
    assert!(!s1.response.transit, "offers outstanding");
    assert_eq!(get(&s1, "MaxBurstLength").as_deref(), Some("65536"));
    assert_eq!(get(&s1, "ImmediateData").as_deref(), Some("No"));
    assert_eq!(get(&s1, "FirstBurstLength").as_deref(), Some("16384"));
    let s2 = m.handle(
        &req(OP, FFP, true),
        &text(&[
            ("MaxBurstLength", "32768"),
            ("ImmediateData", "No"),
            ("FirstBurstLength", "16384"),
        ]),
        &mut ctx,
    );
    assert!(s2.data.is_empty() || get(&s2, "MaxBurstLength").is_none());
    let p = params(&s2);
    assert_eq!(p.max_burst_length, 32768);
    assert_eq!(p.first_burst_length, 16384);
    assert!(!p.immediate_data);
}

#[test]
fn bad_answer_to_offer_fails() {
    let limits = TargetLimits {
        max_burst_length: 65536,
        ..TargetLimits::default()
    };
    let mut m = LoginMachine::new(limits, 1);
    let mut ctx = Fake::default();
    m.handle(&req(OP, FFP, true), &text(&identity()), &mut ctx);
    let s = m.handle(
        &req(OP, FFP, true),
        &text(&[("MaxBurstLength", "131072")]),
        &mut ctx,
    );
    assert_eq!(status(&s), 0x0200);
}

#[test]
fn required_digest_not_accepted_fails() {
    let limits = TargetLimits {
        header_digest: DigestPolicy::Crc32c,
        ..TargetLimits::default()
    };
    let mut m = LoginMachine::new(limits, 1);
    let mut keys = identity();
    keys.push(("HeaderDigest", "None"));
    let s = m.handle(&req(OP, FFP, true), &text(&keys), &mut Fake::default());
    assert_eq!(status(&s), 0x0200);
    assert_eq!(s.outcome, LoginOutcome::Failed);
    assert_eq!(s.error, Some(LoginError::DigestPolicy("HeaderDigest")));
}
