//! Persistent reservations against a real trellisd: a registration and a
//! reservation made with APTPL survive a restart of the daemon, and bind
//! other I_T nexuses after it; without APTPL they do not survive.

// Test helpers: a panic is the test failing, with the message in hand.
#![allow(clippy::unwrap_used)]

use trellis_tests::raw::{Conn, ScsiResult};
use trellis_tests::Trellisd;

const KEY: u64 = 0x1122_3344_5566_7788;
const HOLDER_ISID: u16 = 0x0a01;
const OTHER_ISID: u16 = 0x0a02;
const RESERVATION_CONFLICT: u8 = 0x18;
/// Write Exclusive.
const TYPE_WE: u8 = 1;

fn pr_out(
    c: &mut Conn,
    service_action: u8,
    ty: u8,
    key: u64,
    sa_key: u64,
    aptpl: bool,
) -> ScsiResult {
    let mut params = [0u8; 24];
    params[..8].copy_from_slice(&key.to_be_bytes());
    params[8..16].copy_from_slice(&sa_key.to_be_bytes());
    params[20] = u8::from(aptpl);
    let cdb = [0x5f, service_action, ty, 0, 0, 0, 0, 0, 24, 0];
    c.scsi(&cdb, &params, 0).expect("PERSISTENT RESERVE OUT")
}

fn pr_in(c: &mut Conn, service_action: u8) -> Vec<u8> {
    let cdb = [0x5e, service_action, 0, 0, 0, 0, 0, 0x10, 0, 0];
    let r = c.scsi(&cdb, &[], 4096).expect("PERSISTENT RESERVE IN");
    assert_eq!(r.status, 0, "PR IN status, sense {:02x?}", r.sense);
    r.data
}

fn write_one_block(c: &mut Conn) -> ScsiResult {
    let cdb = [0x2a, 0, 0, 0, 0, 8, 0, 0, 1, 0];
    c.scsi(&cdb, &[0x5a; 512], 0).expect("WRITE(10)")
}

/// (keys, reservation key and type) as PR IN reports them.
fn pr_view(c: &mut Conn) -> (Vec<u64>, Option<(u64, u8)>) {
    let keys = pr_in(c, 0);
    let len = u32::from_be_bytes(keys[4..8].try_into().unwrap()) as usize;
    let keys = keys[8..8 + len]
        .chunks(8)
        .map(|k| u64::from_be_bytes(k.try_into().unwrap()))
        .collect();
    let res = pr_in(c, 1);
    let len = u32::from_be_bytes(res[4..8].try_into().unwrap()) as usize;
    let reservation = (len >= 16).then(|| {
        (
            u64::from_be_bytes(res[8..16].try_into().unwrap()),
            res[21] & 0x0f,
        )
    });
    (keys, reservation)
}

fn restart(mut d: Trellisd) -> Trellisd {
    assert!(d.terminate().unwrap().success(), "{}", d.log_text());
    let dir = std::mem::replace(&mut d.dir, tempfile::tempdir().unwrap());
    drop(d);
    Trellisd::start_in(dir, None, &[]).unwrap()
}

#[test]
fn aptpl_reservation_survives_a_restart() {
    let d = Trellisd::start_default().unwrap();
    let mut holder = Conn::login_as(d.portal, HOLDER_ISID).unwrap();
    holder.clear_unit_attentions().unwrap();
    assert_eq!(
        pr_out(&mut holder, 0x00, 0, 0, KEY, true).status,
        0,
        "REGISTER with APTPL"
    );
    assert_eq!(
        pr_out(&mut holder, 0x01, TYPE_WE, KEY, 0, false).status,
        0,
        "RESERVE WE"
    );
    assert_eq!(pr_view(&mut holder), (vec![KEY], Some((KEY, TYPE_WE))));
    drop(holder);

    let d = restart(d);
    let mut other = Conn::login_as(d.portal, OTHER_ISID).unwrap();
    other.clear_unit_attentions().unwrap();
    assert_eq!(
        pr_view(&mut other),
        (vec![KEY], Some((KEY, TYPE_WE))),
        "state after restart"
    );
    let w = write_one_block(&mut other);
    assert_eq!(
        w.status, RESERVATION_CONFLICT,
        "a write from another nexus conflicts"
    );

    let mut holder = Conn::login_as(d.portal, HOLDER_ISID).unwrap();
    holder.clear_unit_attentions().unwrap();
    assert_eq!(
        write_one_block(&mut holder).status,
        0,
        "the holder still writes after the restart"
    );
    // Release and unregister: nothing is left to persist.
    assert_eq!(
        pr_out(&mut holder, 0x02, TYPE_WE, KEY, 0, false).status,
        0,
        "RELEASE"
    );
    assert_eq!(
        pr_out(&mut holder, 0x00, 0, KEY, 0, false).status,
        0,
        "unregister"
    );
    drop((holder, other));

    let d = restart(d);
    let mut other = Conn::login_as(d.portal, OTHER_ISID).unwrap();
    other.clear_unit_attentions().unwrap();
    assert_eq!(pr_view(&mut other), (vec![], None));
    assert_eq!(write_one_block(&mut other).status, 0);
}

#[test]
fn without_aptpl_registrations_end_with_the_daemon() {
    let d = Trellisd::start_default().unwrap();
    let mut holder = Conn::login_as(d.portal, HOLDER_ISID).unwrap();
    holder.clear_unit_attentions().unwrap();
    assert_eq!(
        pr_out(&mut holder, 0x00, 0, 0, KEY, false).status,
        0,
        "REGISTER"
    );
    assert_eq!(
        pr_out(&mut holder, 0x01, TYPE_WE, KEY, 0, false).status,
        0,
        "RESERVE WE"
    );
    let mut other = Conn::login_as(d.portal, OTHER_ISID).unwrap();
    other.clear_unit_attentions().unwrap();
    assert_eq!(write_one_block(&mut other).status, RESERVATION_CONFLICT);
    drop((holder, other));

    let d = restart(d);
    let mut other = Conn::login_as(d.portal, OTHER_ISID).unwrap();
    other.clear_unit_attentions().unwrap();
    assert_eq!(pr_view(&mut other), (vec![], None));
    assert_eq!(write_one_block(&mut other).status, 0);
}
