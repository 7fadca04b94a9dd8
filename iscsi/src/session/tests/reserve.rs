//! Session tests of SPC-2 RESERVE/RELEASE across two sessions of one
//! logical unit, and of everything that releases a reservation, on the rig
//! of `tests.rs`.

use super::*;

fn cdb6(opcode: u8) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = opcode;
    c
}

const TUR: u8 = 0x00;
const RESERVE6: u8 = 0x16;
const RELEASE6: u8 = 0x17;
const RESERVE10: u8 = 0x56;
const RELEASE10: u8 = 0x57;
const GOOD: u8 = 0x00;
const CONFLICT: u8 = 0x18;

/// Sends a no-data command and returns its status.
fn run(r: &mut Rig, cdb: [u8; 16]) -> u8 {
    let itt = r.scsi(cdb, 0, false, false, &[], true);
    let resp = r.one().response();
    assert_eq!((resp.itt, resp.response), (itt, 0));
    r.statsn_is(resp.statsn);
    resp.status
}

/// Two sessions (different ISIDs, different nexus) of the same LUN, both
/// past the power-on unit attention.
fn pair() -> (Rig, Rig) {
    let a = Rig::ready(&Keys::default());
    let b = a.sharing();
    (a, b)
}

#[test]
fn reservation_conflicts_for_the_other_session_only() {
    let (mut a, mut b) = pair();
    assert_eq!(run(&mut a, cdb6(RESERVE6)), GOOD);
    assert_eq!(
        run(&mut a, cdb6(RESERVE6)),
        GOOD,
        "the holder may re-reserve"
    );
    assert_eq!(run(&mut b, cdb6(RESERVE6)), CONFLICT);
    assert_eq!(run(&mut b, cdb6(RESERVE10)), CONFLICT);
    assert_eq!(
        run(&mut b, cdb6(RELEASE6)),
        GOOD,
        "a no-op from another nexus"
    );
    assert_eq!(run(&mut b, cdb6(TUR)), CONFLICT);
    // MODE SENSE(6) conflicts; INQUIRY does not.
    let mut sense = cdb6(0x1A);
    sense[2] = 0x3F;
    assert_eq!(run(&mut a, sense), GOOD);
    let itt = b.scsi(sense, 255, true, false, &[], true);
    let resp = b.one().response();
    assert_eq!((resp.itt, resp.status), (itt, CONFLICT));
    b.statsn_is(resp.statsn);
    let itt = b.scsi(inquiry(96), 96, true, false, &[], true);
    let d = b.one().data_in();
    assert!(d.status_present);
    assert_eq!((d.itt, d.status), (itt, GOOD));
    b.statsn_is(d.statsn);
    // Reads conflict without touching the disk.
    let itt = b.scsi(read10(0, 1), 512, true, false, &[], true);
    let resp = b.one().response();
    assert_eq!((resp.itt, resp.status), (itt, CONFLICT));
    b.statsn_is(resp.statsn);
    assert!(b.conn.next_disk().is_none());

    assert_eq!(run(&mut a, cdb6(RELEASE10)), GOOD);
    assert_eq!(run(&mut b, cdb6(RESERVE10)), GOOD);
    assert_eq!(run(&mut a, cdb6(TUR)), CONFLICT);
    assert_eq!(run(&mut b, cdb6(RELEASE6)), GOOD);
    assert_eq!(run(&mut a, cdb6(TUR)), GOOD);
}

fn logout(r: &mut Rig) {
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
    assert_eq!(r.one().logout().response, 0);
}

fn tmf(r: &mut Rig, function: u8) {
    assert_eq!(r.tmf_response(function, 0, 0), 0);
}

#[test]
fn reservation_is_released_by() {
    type Trigger = fn(&mut Rig);
    let triggers: &[(&str, Trigger)] = &[
        ("RELEASE(6)", |r| assert_eq!(run(r, cdb6(RELEASE6)), GOOD)),
        ("RELEASE(10)", |r| assert_eq!(run(r, cdb6(RELEASE10)), GOOD)),
        ("logout", logout),
        ("connection loss", |r| r.conn.close(CloseReason::Shutdown)),
        ("session dropped", |r| {
            r.conn = Connection::new(Rc::new(config()), 42, r.now);
        }),
        ("LOGICAL UNIT RESET", |r| tmf(r, 5)),
        ("TARGET WARM RESET", |r| tmf(r, 6)),
        ("TARGET COLD RESET", |r| tmf(r, 7)),
    ];
    for (name, trigger) in triggers {
        let (mut a, mut b) = pair();
        assert_eq!(run(&mut a, cdb6(RESERVE6)), GOOD, "{name}");
        assert_eq!(run(&mut b, cdb6(RESERVE6)), CONFLICT, "{name}");
        trigger(&mut a);
        // A LOGICAL UNIT RESET reaches b as a unit attention first.
        let mut status = run(&mut b, cdb6(RESERVE6));
        if status == 0x02 {
            status = run(&mut b, cdb6(RESERVE6));
        }
        assert_eq!(status, GOOD, "{name}: b may reserve now");
        assert_eq!(run(&mut b, cdb6(RELEASE6)), GOOD, "{name}");
    }
}

#[test]
fn a_session_ending_keeps_anothers_reservation() {
    let (mut a, mut b) = pair();
    assert_eq!(run(&mut b, cdb6(RESERVE6)), GOOD);
    a.conn.close(CloseReason::Shutdown);
    a.conn = Connection::new(Rc::new(config()), 42, a.now);
    let mut c = b.sharing();
    assert_eq!(run(&mut c, cdb6(RESERVE6)), CONFLICT);
}
