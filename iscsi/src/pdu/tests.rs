//! Round-trip property tests for every header type and hand-built byte
//! vectors laid out from RFC 7143 §11.

use super::*;
use proptest::prelude::*;

fn dsl() -> impl Strategy<Value = u32> {
    0u32..=MAX_DATA_SEGMENT_LEN
}

fn stage() -> impl Strategy<Value = Stage> {
    prop_oneof![
        Just(Stage::SecurityNegotiation),
        Just(Stage::LoginOperationalNegotiation),
        Just(Stage::FullFeaturePhase),
    ]
}

prop_compose! {
    fn scsi_command()(
        f in (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>(), 0u8..8, any::<u8>(), dsl()),
        v in (any::<u64>(), any::<u32>(), any::<u32>(), any::<u32>(), any::<u32>(), any::<[u8; 16]>()),
    ) -> ScsiCommand {
        ScsiCommand {
            immediate: f.0, final_bit: f.1, read: f.2, write: f.3, attr: f.4,
            total_ahs_len: f.5, data_segment_len: f.6, lun: v.0, itt: v.1,
            expected_data_transfer_length: v.2, cmdsn: v.3, exp_statsn: v.4, cdb: v.5,
        }
    }
}

prop_compose! {
    fn scsi_response()(
        f in (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>(), any::<u8>(), any::<u8>(), any::<u8>(), dsl()),
        v in proptest::array::uniform8(any::<u32>()),
    ) -> ScsiResponse {
        ScsiResponse {
            bidi_overflow: f.0, bidi_underflow: f.1, residual_overflow: f.2, residual_underflow: f.3,
            response: f.4, status: f.5, total_ahs_len: f.6, data_segment_len: f.7,
            itt: v[0], snack_tag: v[1], statsn: v[2], exp_cmdsn: v[3], max_cmdsn: v[4],
            exp_data_sn: v[5], bidi_read_residual_count: v[6], residual_count: v[7],
        }
    }
}

prop_compose! {
    fn data_out()(f in (any::<bool>(), any::<u8>(), dsl(), any::<u64>()), v in proptest::array::uniform5(any::<u32>())) -> DataOut {
        DataOut {
            final_bit: f.0, total_ahs_len: f.1, data_segment_len: f.2, lun: f.3,
            itt: v[0], ttt: v[1], exp_statsn: v[2], data_sn: v[3], buffer_offset: v[4],
        }
    }
}

prop_compose! {
    fn data_in()(
        f in (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>(), any::<u8>(), any::<u8>(), dsl(), any::<u64>()),
        v in proptest::array::uniform8(any::<u32>()),
    ) -> DataIn {
        DataIn {
            final_bit: f.0, acknowledge: f.1, residual_overflow: f.2, residual_underflow: f.3,
            status_present: f.4, status: f.5, total_ahs_len: f.6, data_segment_len: f.7, lun: f.8,
            itt: v[0], ttt: v[1], statsn: v[2], exp_cmdsn: v[3], max_cmdsn: v[4], data_sn: v[5],
            buffer_offset: v[6], residual_count: v[7],
        }
    }
}

prop_compose! {
    fn r2t()(f in (any::<u8>(), dsl(), any::<u64>()), v in proptest::array::uniform8(any::<u32>())) -> R2t {
        R2t {
            total_ahs_len: f.0, data_segment_len: f.1, lun: f.2, itt: v[0], ttt: v[1],
            statsn: v[2], exp_cmdsn: v[3], max_cmdsn: v[4], r2tsn: v[5], buffer_offset: v[6],
            desired_data_transfer_length: v[7],
        }
    }
}

prop_compose! {
    fn nop_out()(f in (any::<bool>(), any::<u8>(), dsl(), any::<u64>()), v in proptest::array::uniform4(any::<u32>())) -> NopOut {
        NopOut {
            immediate: f.0, total_ahs_len: f.1, data_segment_len: f.2, lun: f.3,
            itt: v[0], ttt: v[1], cmdsn: v[2], exp_statsn: v[3],
        }
    }
}

prop_compose! {
    fn nop_in()(f in (any::<u8>(), dsl(), any::<u64>()), v in proptest::array::uniform5(any::<u32>())) -> NopIn {
        NopIn {
            total_ahs_len: f.0, data_segment_len: f.1, lun: f.2,
            itt: v[0], ttt: v[1], statsn: v[2], exp_cmdsn: v[3], max_cmdsn: v[4],
        }
    }
}

prop_compose! {
    fn tmf_request()(
        f in (any::<bool>(), 0u8..0x80, any::<u8>(), dsl(), any::<u64>()),
        v in proptest::array::uniform6(any::<u32>()),
    ) -> TaskMgmtRequest {
        TaskMgmtRequest {
            immediate: f.0, function: f.1, total_ahs_len: f.2, data_segment_len: f.3, lun: f.4,
            itt: v[0], referenced_task_tag: v[1], cmdsn: v[2], exp_statsn: v[3],
            ref_cmdsn: v[4], exp_data_sn: v[5],
        }
    }
}

prop_compose! {
    fn tmf_response()(f in (any::<u8>(), any::<u8>(), dsl()), v in proptest::array::uniform4(any::<u32>())) -> TaskMgmtResponse {
        TaskMgmtResponse {
            response: f.0, total_ahs_len: f.1, data_segment_len: f.2,
            itt: v[0], statsn: v[1], exp_cmdsn: v[2], max_cmdsn: v[3],
        }
    }
}

prop_compose! {
    fn login_request()(
        f in (any::<bool>(), any::<bool>(), stage(), stage(), any::<u8>(), any::<u8>(), any::<u8>(), dsl()),
        v in (any::<[u8; 6]>(), any::<u16>(), any::<u32>(), any::<u16>(), any::<u32>(), any::<u32>()),
    ) -> LoginRequest {
        LoginRequest {
            transit: f.0, continue_: f.1, csg: f.2, nsg: f.3, version_max: f.4, version_min: f.5,
            total_ahs_len: f.6, data_segment_len: f.7, isid: v.0, tsih: v.1, itt: v.2, cid: v.3,
            cmdsn: v.4, exp_statsn: v.5,
        }
    }
}

prop_compose! {
    fn login_response()(
        f in (any::<bool>(), any::<bool>(), stage(), stage(), any::<u8>(), any::<u8>(), any::<u8>(), dsl()),
        v in (any::<[u8; 6]>(), any::<u16>(), proptest::array::uniform4(any::<u32>()), any::<u8>(), any::<u8>()),
    ) -> LoginResponse {
        LoginResponse {
            transit: f.0, continue_: f.1, csg: f.2, nsg: f.3, version_max: f.4, version_active: f.5,
            total_ahs_len: f.6, data_segment_len: f.7, isid: v.0, tsih: v.1, itt: v.2[0],
            statsn: v.2[1], exp_cmdsn: v.2[2], max_cmdsn: v.2[3], status_class: v.3,
            status_detail: v.4,
        }
    }
}

prop_compose! {
    fn text_request()(
        f in (any::<bool>(), any::<bool>(), any::<bool>(), any::<u8>(), dsl(), any::<u64>()),
        v in proptest::array::uniform4(any::<u32>()),
    ) -> TextRequest {
        TextRequest {
            immediate: f.0, final_bit: f.1, continue_: f.2, total_ahs_len: f.3,
            data_segment_len: f.4, lun: f.5, itt: v[0], ttt: v[1], cmdsn: v[2], exp_statsn: v[3],
        }
    }
}

prop_compose! {
    fn text_response()(
        f in (any::<bool>(), any::<bool>(), any::<u8>(), dsl(), any::<u64>()),
        v in proptest::array::uniform5(any::<u32>()),
    ) -> TextResponse {
        TextResponse {
            final_bit: f.0, continue_: f.1, total_ahs_len: f.2, data_segment_len: f.3, lun: f.4,
            itt: v[0], ttt: v[1], statsn: v[2], exp_cmdsn: v[3], max_cmdsn: v[4],
        }
    }
}

prop_compose! {
    fn logout_request()(
        f in (any::<bool>(), 0u8..0x80, any::<u8>(), dsl(), any::<u16>()),
        v in proptest::array::uniform3(any::<u32>()),
    ) -> LogoutRequest {
        LogoutRequest {
            immediate: f.0, reason_code: f.1, total_ahs_len: f.2, data_segment_len: f.3,
            cid: f.4, itt: v[0], cmdsn: v[1], exp_statsn: v[2],
        }
    }
}

prop_compose! {
    fn logout_response()(
        f in (any::<u8>(), any::<u8>(), dsl(), any::<u16>(), any::<u16>()),
        v in proptest::array::uniform4(any::<u32>()),
    ) -> LogoutResponse {
        LogoutResponse {
            response: f.0, total_ahs_len: f.1, data_segment_len: f.2, time2wait: f.3,
            time2retain: f.4, itt: v[0], statsn: v[1], exp_cmdsn: v[2], max_cmdsn: v[3],
        }
    }
}

prop_compose! {
    fn snack_request()(
        f in (0u8..16, any::<u8>(), dsl(), any::<u64>()),
        v in proptest::array::uniform5(any::<u32>()),
    ) -> SnackRequest {
        SnackRequest {
            snack_type: f.0, total_ahs_len: f.1, data_segment_len: f.2, lun: f.3,
            itt: v[0], ttt: v[1], exp_statsn: v[2], beg_run: v[3], run_length: v[4],
        }
    }
}

prop_compose! {
    fn async_message()(
        f in (any::<u8>(), dsl(), any::<u64>(), any::<u8>(), any::<u8>()),
        v in proptest::array::uniform3(any::<u32>()),
        p in proptest::array::uniform3(any::<u16>()),
    ) -> AsyncMessage {
        AsyncMessage {
            total_ahs_len: f.0, data_segment_len: f.1, lun: f.2, event: f.3, vcode: f.4,
            statsn: v[0], exp_cmdsn: v[1], max_cmdsn: v[2], param1: p[0], param2: p[1],
            param3: p[2],
        }
    }
}

prop_compose! {
    fn reject()(f in (any::<u8>(), any::<u8>(), dsl()), v in proptest::array::uniform4(any::<u32>())) -> Reject {
        Reject {
            reason: f.0, total_ahs_len: f.1, data_segment_len: f.2,
            statsn: v[0], exp_cmdsn: v[1], max_cmdsn: v[2], data_sn: v[3],
        }
    }
}

macro_rules! round_trip {
    ($($name:ident: $strategy:expr => $ty:ty;)*) => {
        proptest! {
            $(
                #[test]
                fn $name(x in $strategy) {
                    let mut b = [0xa5u8; BHS_LEN];
                    x.encode(&mut b);
                    prop_assert_eq!(<$ty>::parse(&b), Ok(x));
                    prop_assert_eq!(total_ahs_len(&b), usize::from(x.total_ahs_len) * 4);
                    prop_assert_eq!(data_segment_len(&b), x.data_segment_len as usize);
                }
            )*
        }
    };
}

round_trip! {
    rt_scsi_command: scsi_command() => ScsiCommand;
    rt_scsi_response: scsi_response() => ScsiResponse;
    rt_data_out: data_out() => DataOut;
    rt_data_in: data_in() => DataIn;
    rt_r2t: r2t() => R2t;
    rt_nop_out: nop_out() => NopOut;
    rt_nop_in: nop_in() => NopIn;
    rt_tmf_request: tmf_request() => TaskMgmtRequest;
    rt_tmf_response: tmf_response() => TaskMgmtResponse;
    rt_login_request: login_request() => LoginRequest;
    rt_login_response: login_response() => LoginResponse;
    rt_text_request: text_request() => TextRequest;
    rt_text_response: text_response() => TextResponse;
    rt_logout_request: logout_request() => LogoutRequest;
    rt_logout_response: logout_response() => LogoutResponse;
    rt_snack_request: snack_request() => SnackRequest;
    rt_async_message: async_message() => AsyncMessage;
    rt_reject: reject() => Reject;
}

proptest! {
    #[test]
    fn header_parse_never_panics(b in proptest::array::uniform32(any::<u8>()), t in proptest::array::uniform16(any::<u8>())) {
        let mut bhs = [0u8; BHS_LEN];
        bhs[..32].copy_from_slice(&b);
        bhs[32..].copy_from_slice(&t);
        let _ = Header::parse(&bhs);
    }

    #[test]
    fn split_pdu_never_panics(buf in proptest::collection::vec(any::<u8>(), 0..200), h: bool, d: bool) {
        let _ = split_pdu(&buf, Digests { header: h, data: d }, 64);
    }
}

fn hex(s: &str) -> [u8; BHS_LEN] {
    let clean: Vec<u8> = s.bytes().filter(|c| c.is_ascii_hexdigit()).collect();
    let mut out = [0u8; BHS_LEN];
    for (i, pair) in clean.chunks(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16).unwrap() as u8;
        let lo = (pair[1] as char).to_digit(16).unwrap() as u8;
        out[i] = hi << 4 | lo;
    }
    out
}

#[test]
fn login_request_vector() {
    // I|0x03, T=1 CSG=1 NSG=3, vmax 0 vmin 0, AHS 0, DSL 0x000123,
    // ISID 80 12 34 56 78 9a, TSIH 0, ITT 1, CID 2, CmdSN 7, ExpStatSN 0.
    let b = hex("43 87 00 00 00 00 01 23 80 12 34 56 78 9a 00 00
         00 00 00 01 00 02 00 00 00 00 00 07 00 00 00 00
         00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00");
    let h = Header::parse(&b).unwrap();
    let Header::LoginRequest(l) = h else {
        panic!("not a login: {h:?}")
    };
    assert!(l.transit && !l.continue_);
    assert_eq!(l.csg, Stage::LoginOperationalNegotiation);
    assert_eq!(l.nsg, Stage::FullFeaturePhase);
    assert_eq!(l.data_segment_len, 0x123);
    assert_eq!(l.isid, [0x80, 0x12, 0x34, 0x56, 0x78, 0x9a]);
    assert_eq!((l.itt, l.cid, l.cmdsn), (1, 2, 7));
    let mut again = [0u8; BHS_LEN];
    l.encode(&mut again);
    assert_eq!(again, b);
}

#[test]
fn scsi_command_read10_vector() {
    // READ(10) LBA 0x10 len 8, F R, ATTR simple, EDTL 4096, LUN 1 (peripheral).
    let b = hex("01 c1 00 00 00 00 00 00 00 01 00 00 00 00 00 00
         00 00 00 2a 00 00 10 00 00 00 00 05 00 00 00 09
         28 00 00 00 00 10 00 00 08 00 00 00 00 00 00 00");
    let c = ScsiCommand::parse(&b).unwrap();
    assert!(c.final_bit && c.read && !c.write && !c.immediate);
    assert_eq!(c.attr, 1);
    assert_eq!(c.lun, 0x0001_0000_0000_0000);
    assert_eq!(c.itt, 0x2a);
    assert_eq!(c.expected_data_transfer_length, 4096);
    assert_eq!((c.cmdsn, c.exp_statsn), (5, 9));
    assert_eq!(c.cdb[0], 0x28);
    assert_eq!(c.cdb[8], 8);
}

#[test]
fn data_in_with_status_vector() {
    let d = DataIn {
        final_bit: true,
        acknowledge: false,
        residual_overflow: false,
        residual_underflow: true,
        status_present: true,
        status: 0,
        total_ahs_len: 0,
        data_segment_len: 0x1000,
        lun: 0,
        itt: 0x2a,
        ttt: RESERVED_TAG,
        statsn: 3,
        exp_cmdsn: 6,
        max_cmdsn: 0x85,
        data_sn: 0,
        buffer_offset: 0,
        residual_count: 512,
    };
    let mut b = [0u8; BHS_LEN];
    d.encode(&mut b);
    let want = hex("25 83 00 00 00 00 10 00 00 00 00 00 00 00 00 00
         00 00 00 2a ff ff ff ff 00 00 00 03 00 00 00 06
         00 00 00 85 00 00 00 00 00 00 00 00 00 00 02 00");
    assert_eq!(b, want);
}

#[test]
fn reject_and_async_carry_reserved_itt() {
    let mut b = [0u8; BHS_LEN];
    Reject {
        reason: 0x09,
        total_ahs_len: 0,
        data_segment_len: 48,
        statsn: 1,
        exp_cmdsn: 2,
        max_cmdsn: 3,
        data_sn: 0,
    }
    .encode(&mut b);
    assert_eq!(&b[..4], &[0x3f, 0x80, 0x09, 0x00]);
    assert_eq!(itt(&b), RESERVED_TAG);
    AsyncMessage {
        total_ahs_len: 0,
        data_segment_len: 0,
        lun: 0,
        statsn: 1,
        exp_cmdsn: 2,
        max_cmdsn: 3,
        event: 1,
        vcode: 0,
        param1: 0,
        param2: 0,
        param3: 5,
    }
    .encode(&mut b);
    assert_eq!(itt(&b), RESERVED_TAG);
    assert_eq!(b[36], 1);
    assert_eq!(&b[42..44], &[0, 5]);
}

#[test]
fn reserved_login_stage_is_rejected() {
    let mut b = [0u8; BHS_LEN];
    b[0] = 0x43;
    b[1] = 0x88 | 0x03; // CSG=2
    assert!(matches!(
        LoginRequest::parse(&b),
        Err(PduError::InvalidField(_))
    ));
}

#[test]
fn wrong_opcode_is_reported() {
    let mut b = [0u8; BHS_LEN];
    b[0] = 0x05;
    assert_eq!(
        ScsiCommand::parse(&b),
        Err(PduError::WrongOpcode {
            expected: 0x01,
            found: 0x05
        })
    );
}
