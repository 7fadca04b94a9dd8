//! Persistent reservations: service actions, conflicts, PR IN answers,
//! the saved form.

use super::*;
use crate::scsi::cdb::be;
use crate::scsi::opcodes::Handler;
use crate::scsi::opcodes::OPS;
use crate::scsi::Completion;
use crate::scsi::Status;
use crate::scsi::{LunShared, NexusState};
use command::prin;

fn nx(i: u8) -> ItNexus {
    ItNexus::iscsi("iqn.2026-01.test:ini", [0x80, 0, 0, 0, 0, i], 1)
}

fn params(key: u64, sark: u64, flags: u8) -> Vec<u8> {
    let mut p = vec![0u8; 24];
    p[..8].copy_from_slice(&key.to_be_bytes());
    p[8..16].copy_from_slice(&sark.to_be_bytes());
    p[20] = flags;
    p
}

fn out(s: &mut PrState, n: u8, sa: u8, t: u8, key: u64, sark: u64) -> Status {
    match s.prout(&nx(n), sa, t, &params(key, sark, 0)) {
        Ok(_) => Status::Good,
        Err(c) => c.status,
    }
}

const CONFLICT: Status = Status::ReservationConflict;
const GOOD: Status = Status::Good;
const CHECK: Status = Status::CheckCondition;

#[test]
fn transport_id_and_name() {
    let n = nx(1);
    assert_eq!(n.initiator, "iqn.2026-01.test:ini,i,0x800000000001");
    let t = n.transport_id();
    assert_eq!(t[0], 0x45);
    assert_eq!(t.len() % 4, 0);
    assert_eq!(usize::from(u16::from_be_bytes([t[2], t[3]])), t.len() - 4);
}

/// Per type: (read, write) conflicts for (holder, registered, unregistered).
#[test]
fn conflict_table_per_type() {
    use PrType::*;
    let read = Handler::Read(crate::scsi::cdb::RwLayout::Ten);
    let write = Handler::Write(crate::scsi::cdb::RwLayout::Ten);
    // (type, registered non-holder (read, write), unregistered (read, write))
    let table = [
        (WriteExclusive, (false, true), (false, true)),
        (ExclusiveAccess, (true, true), (true, true)),
        (WriteExclusiveRegistrantsOnly, (false, false), (false, true)),
        (ExclusiveAccessRegistrantsOnly, (false, false), (true, true)),
        (WriteExclusiveAllRegistrants, (false, false), (false, true)),
        (ExclusiveAccessAllRegistrants, (false, false), (true, true)),
    ];
    for (kind, reg, unreg) in table {
        let mut s = PrState::default();
        assert_eq!(out(&mut s, 1, 0, 0, 0, 0xA), GOOD);
        assert_eq!(out(&mut s, 2, 0, 0, 0, 0xB), GOOD);
        assert_eq!(out(&mut s, 1, 1, kind.code(), 0xA, 0), GOOD);
        let holder = s.view(&nx(1));
        assert!(holder.holder);
        for h in [read, write, Handler::ModeSelect, Handler::TestUnitReady] {
            assert!(!pr_conflicts(h, &holder), "{kind:?} holder {h:?}");
        }
        let v = s.view(&nx(2));
        assert_eq!(v.holder, kind.all_registrants());
        assert_eq!(
            (pr_conflicts(read, &v), pr_conflicts(write, &v)),
            reg,
            "{kind:?}"
        );
        let v = s.view(&nx(3));
        assert_eq!(
            (pr_conflicts(read, &v), pr_conflicts(write, &v)),
            unreg,
            "{kind:?}"
        );
        for h in [
            Handler::Inquiry,
            Handler::TestUnitReady,
            Handler::ReportLuns,
            Handler::ReadCapacity10,
            Handler::PrIn,
            Handler::PrOut,
            Handler::RequestSense,
        ] {
            assert!(!pr_conflicts(h, &v), "{kind:?} {h:?}");
        }
        assert!(pr_conflicts(Handler::Reserve, &v));
        assert!(pr_conflicts(Handler::Release, &v));
    }
}

#[test]
fn every_handler_is_classified() {
    // Without registrations nothing conflicts; SPC-2 ones do with one.
    let none = PrView::default();
    let reg = PrView {
        any: true,
        ..PrView::default()
    };
    for e in OPS {
        assert!(!pr_conflicts(e.handler, &none), "{}", e.name);
        let spc2 = matches!(e.handler, Handler::Reserve | Handler::Release);
        assert_eq!(pr_conflicts(e.handler, &reg), spc2, "{}", e.name);
    }
}

/// (nexus, service action, type, key, SARK, status, keys after).
type Step = (u8, u8, u8, u64, u64, Status, &'static [u64]);

#[test]
fn register_sequences() {
    let mut s = PrState::default();
    let steps: &[Step] = &[
        (1, 0, 0, 5, 7, CONFLICT, &[]),
        (1, 0, 0, 0, 0, GOOD, &[]),
        (1, 0, 0, 0, 7, GOOD, &[7]),
        (1, 0, 0, 8, 9, CONFLICT, &[7]),
        (1, 0, 0, 7, 9, GOOD, &[9]),
        (1, 6, 0, 0, 10, GOOD, &[10]),
        (2, 6, 0, 123, 11, GOOD, &[10, 11]),
        (2, 1, 1, 10, 0, CONFLICT, &[10, 11]),
        (3, 1, 1, 0, 0, CONFLICT, &[10, 11]),
        (2, 1, 2, 11, 0, CHECK, &[10, 11]),
        (2, 1, 1, 11, 0, GOOD, &[10, 11]),
        (1, 1, 1, 10, 0, CONFLICT, &[10, 11]),
        (2, 1, 1, 11, 0, GOOD, &[10, 11]),
        (1, 2, 1, 10, 0, GOOD, &[10, 11]),
        (2, 2, 3, 11, 0, CHECK, &[10, 11]),
        (2, 0, 0, 11, 0, GOOD, &[10]),
        (1, 3, 0, 10, 0, GOOD, &[]),
        (1, 7, 0, 0, 0, CONFLICT, &[]),
    ];
    for (i, &(n, sa, t, key, sark, status, keys)) in steps.iter().enumerate() {
        assert_eq!(out(&mut s, n, sa, t, key, sark), status, "step {i}");
        let got: Vec<u64> = s.registrations.iter().map(|r| r.key).collect();
        assert_eq!(got, keys, "step {i}");
    }
    // Unregistering the holder released the reservation.
    assert!(s.reservation.is_none());
}

#[test]
fn preempt_and_unit_attentions() {
    let mut s = PrState::default();
    for n in 1..=3 {
        assert_eq!(out(&mut s, n, 0, 0, 0, u64::from(n)), GOOD);
    }
    assert_eq!(out(&mut s, 2, 1, 5, 2, 0), GOOD);
    let seen = s.last_event();
    // Preempt the holder: its registration goes, 1 holds now (type 1).
    assert_eq!(out(&mut s, 1, 5, 1, 1, 2), GOOD);
    assert!(s.holds(&nx(1)));
    assert_eq!(s.key_of(&nx(2)), None);
    assert_eq!(
        s.events_for(&nx(2), seen),
        (vec![UnitAttention::RegistrationsPreempted], true)
    );
    assert_eq!(
        s.events_for(&nx(3), seen),
        (vec![UnitAttention::ReservationsReleased], false)
    );
    // Preempting a key nobody has conflicts; SARK 0 is invalid here.
    assert_eq!(out(&mut s, 1, 4, 1, 1, 99), CONFLICT);
    assert_eq!(out(&mut s, 1, 4, 1, 1, 0), CHECK);
    // Preempt a non-holder: reservation stays.
    assert_eq!(out(&mut s, 1, 4, 1, 1, 3), GOOD);
    assert_eq!(s.registrations.len(), 1);
    assert!(s.holds(&nx(1)));
    // CLEAR: everyone else gets RESERVATIONS PREEMPTED.
    assert_eq!(out(&mut s, 2, 0, 0, 0, 4), GOOD);
    let seen = s.last_event();
    assert_eq!(out(&mut s, 1, 3, 0, 1, 0), GOOD);
    assert!(s.is_empty());
    assert_eq!(
        s.events_for(&nx(2), seen).0,
        vec![UnitAttention::ReservationsPreempted]
    );
}

#[test]
fn all_registrants_preempt_with_zero_key() {
    let mut s = PrState::default();
    for n in 1..=3 {
        assert_eq!(out(&mut s, n, 0, 0, 0, u64::from(n)), GOOD);
    }
    assert_eq!(out(&mut s, 2, 1, 8, 2, 0), GOOD);
    assert!(s.holds(&nx(3)));
    assert_eq!(out(&mut s, 1, 4, 3, 1, 0), GOOD);
    assert_eq!(s.registrations.len(), 1);
    assert_eq!(
        s.reservation.as_ref().map(|r| r.kind),
        Some(PrType::ExclusiveAccess)
    );
    assert!(s.holds(&nx(1)));
}

#[test]
fn prin_data() {
    let mut s = PrState::default();
    assert_eq!(out(&mut s, 1, 0, 0, 0, 0x1122), GOOD);
    assert_eq!(out(&mut s, 1, 1, 3, 0x1122, 0), GOOD);
    let keys = prin(&s, 0, 100).data;
    assert_eq!(&keys[..8], &[0, 0, 0, 1, 0, 0, 0, 8]);
    assert_eq!(be(&keys, 8, 8), 0x1122);
    assert_eq!(prin(&s, 0, 4).data.len(), 4);
    let res = prin(&s, 1, 100).data;
    assert_eq!(res.len(), 24);
    assert_eq!((be(&res, 8, 8), res[21]), (0x1122, 3));
    let caps = prin(&s, 2, 100).data;
    assert_eq!(&caps[..2], &[0, 8]);
    let full = prin(&s, 3, 200).data;
    assert_eq!(full[20], 0x01);
    assert_eq!(full[21], 3);
    assert_eq!(be(&full, 4, 4) as usize, full.len() - 8);
}

#[test]
fn register_and_move() {
    let mut s = PrState::default();
    assert_eq!(out(&mut s, 1, 0, 0, 0, 1), GOOD);
    let mv = |key: u64, sark: u64, unreg: bool, tid: &[u8]| {
        let mut p = params(key, sark, 0);
        p[17] = if unreg { 0x02 } else { 0 };
        p[18..20].copy_from_slice(&1u16.to_be_bytes());
        p[20..24].copy_from_slice(&(tid.len() as u32).to_be_bytes());
        p.extend_from_slice(tid);
        p
    };
    let tid = nx(2).transport_id();
    // Not the holder yet: conflict.
    assert_eq!(
        s.prout(&nx(1), 7, 1, &mv(1, 5, false, &tid)),
        Err(Completion::reservation_conflict())
    );
    assert_eq!(out(&mut s, 1, 1, 1, 1, 0), GOOD);
    assert!(s.prout(&nx(1), 7, 1, &mv(1, 0, false, &tid)).is_err());
    assert!(s
        .prout(
            &nx(1),
            7,
            1,
            &mv(1, 5, false, &[0x05, 0, 0, 4, b'x', 0, 0, 0])
        )
        .is_err());
    assert!(s
        .prout(&nx(1), 7, 1, &mv(1, 5, false, &nx(1).transport_id()))
        .is_err());
    assert_eq!(s.prout(&nx(1), 7, 3, &mv(1, 5, true, &tid)), Ok(true));
    assert!(s.holds(&nx(2)));
    assert_eq!(s.key_of(&nx(2)), Some(5));
    assert_eq!(s.key_of(&nx(1)), None);
    assert_eq!(
        s.reservation.as_ref().map(|r| r.kind),
        Some(PrType::ExclusiveAccess)
    );
    assert_eq!(
        parse_transport_id(&{
            let mut t = vec![0x45, 0, 0, 24];
            t.extend_from_slice(b"iqn.x:y,I,0X80000000ABCD\0\0\0");
            t
        }),
        Some("iqn.x:y,i,0x80000000abcd".into())
    );
}

#[test]
fn saved_form_round_trip() {
    let mut s = PrState::default();
    assert!(s.prout(&nx(1), 0, 0, &params(0, 42, 1)).unwrap());
    assert_eq!(out(&mut s, 2, 0, 0, 0, 43), GOOD);
    assert_eq!(s.prout(&nx(2), 0, 0, &params(43, 44, 1)), Ok(true));
    assert_eq!(out(&mut s, 1, 1, 6, 42, 0), GOOD);
    let back = PrState::from_text(&s.to_text()).unwrap();
    assert_eq!(back.registrations, s.registrations);
    assert_eq!(back.reservation, s.reservation);
    assert_eq!(back.generation, s.generation);
    assert!(back.aptpl);
    assert_eq!(PrState::from_text("garbage"), None);
    assert_eq!(PrState::from_text("trellis-pr 1\nreg zz 1 x"), None);
}

#[test]
fn shared_state_reaches_other_nexus() {
    let lu = LunShared::new();
    let mut a = NexusState::attached(&lu, 1).with_pr_identity(nx(1));
    let mut b = NexusState::attached(&lu, 2).with_pr_identity(nx(2));
    let reg = |k| PrRequest::Out {
        sa: 0,
        scope_type: 0,
        params: params(0, k, 0),
    };
    assert_eq!(persistent_reserve(&reg(1), &lu, &mut a).status, GOOD);
    assert_eq!(persistent_reserve(&reg(2), &lu, &mut b).status, GOOD);
    let reserve = PrRequest::Out {
        sa: 1,
        scope_type: 3,
        params: params(2, 0, 0),
    };
    assert_eq!(persistent_reserve(&reserve, &lu, &mut b).status, GOOD);
    a.observe(&lu);
    assert_eq!(a.pr_view().kind, Some(PrType::ExclusiveAccess));
    assert!(!a.pr_view().holder);
    let preempt = PrRequest::Out {
        sa: 5,
        scope_type: 1,
        params: params(1, 2, 0),
    };
    assert_eq!(persistent_reserve(&preempt, &lu, &mut a).status, GOOD);
    b.observe(&lu);
    assert!(b.pending().contains(&UnitAttention::RegistrationsPreempted));
    assert!(b.take_abort());
    assert!(!b.take_abort());
    assert!(!b.pr_view().registered);
}

#[test]
fn shared_form_carries_everything_and_installs_on_another_unit() {
    // Member 1 runs PREEMPT AND ABORT; member 2 installs the state it
    // shared, and its nexus of the preempted initiator port gets the unit
    // attention and the abort, as it would on member 1.
    let mut s = PrState::default();
    assert_eq!(s.prout(&nx(1), 0, 0, &params(0, 1, 0)), Ok(true));
    assert_eq!(s.prout(&nx(2), 0, 0, &params(0, 2, 1)), Ok(true));
    assert_eq!(out(&mut s, 2, 1, 1, 2, 0), GOOD);
    assert_eq!(out(&mut s, 1, 5, 1, 1, 2), GOOD);
    let text = s.to_shared_text();
    let back = PrState::from_text(&text).unwrap();
    assert_eq!(back, s);
    assert!(!back.aptpl || s.aptpl);
    // The saved (APTPL) form has no events.
    assert!(!s.to_text().contains("event"));
    assert_eq!(PrState::from_text("trellis-pr 1\nevent 1 abort 1 x"), None);
    assert_eq!(PrState::from_text("trellis-pr 2\nevent 1 bogus 1 x"), None);

    let other = LunShared::new();
    let mut b = NexusState::attached(&other, 2).with_pr_identity(nx(2));
    b.observe(&other);
    assert!(!b.take_abort());
    let before = other.pr_version();
    other.install_pr(back);
    assert_ne!(other.pr_version(), before);
    b.observe(&other);
    assert!(b.pending().contains(&UnitAttention::RegistrationsPreempted));
    assert!(b.take_abort());
    assert!(!b.pr_view().registered);
    assert_eq!(b.pr_view().kind, Some(PrType::WriteExclusive));
}

#[test]
fn unit_state_text_round_trips_and_a_reset_installs_once() {
    use crate::scsi::UnitState;
    let mut s = UnitState::default();
    assert_eq!(s.pr.prout(&nx(1), 0, 0, &params(0, 7, 0)), Ok(true));
    s.resets = 3;
    let back = UnitState::from_text(&s.to_text()).unwrap();
    assert_eq!(back, s);
    // With an SPC-2 holder and software write protect set by a nexus.
    let mut full = s.clone();
    full.spc2 = Some(nx(2));
    full.swp = true;
    full.swp_by = Some(nx(3));
    full.clears = 2;
    full.clearer = Some(nx(4));
    assert_eq!(UnitState::from_text(&full.to_text()), Some(full.clone()));
    full.clearer = None;
    full.sanitize = crate::scsi::SanitizePhase::Failed { ause: true };
    full.sanitize_by = 2;
    assert_eq!(UnitState::from_text(&full.to_text()), Some(full.clone()));
    full.swp_by = None;
    assert_eq!(UnitState::from_text(&full.to_text()), Some(full));
    assert_eq!(UnitState::from_text("trellis-pr 2\nresets x\n"), None);
    assert_eq!(UnitState::from_text("nonsense"), None);

    // A unit that starts from the state counts its resets as made; a
    // later install with one more makes exactly one reset.
    let lu = LunShared::new();
    lu.start_from(1, s.clone());
    let mut n = NexusState::attached(&lu, 1).with_pr_identity(nx(1));
    n.observe(&lu);
    let before = lu.resets();
    assert!(lu.install(1, s.clone()));
    assert_eq!(lu.resets(), before, "the same state again: no reset");
    s.resets += 1;
    let stale = s.clone();
    assert!(lu.install(3, s.clone()));
    assert!(lu.install(3, s));
    // An older version read before is not installed over it.
    let mut older = stale;
    older.resets = 0;
    older.swp = true;
    assert!(!lu.install(2, older));
    assert!(!lu.software_write_protect());
    assert_eq!(lu.resets(), before + 1);
    n.observe(&lu);
    assert!(n.pending().contains(&UnitAttention::LunReset));
    assert!(n.take_abort());
    assert!(n.pr_view().registered);

    // SPC-2 holder and SWP installed: the holder's own nexus is not
    // reserved elsewhere, another is; the nexus that set SWP gets no unit
    // attention for it, another does.
    let cluster_lu = LunShared::new().with_cluster(std::sync::Arc::new(NoCluster));
    let mut holder = NexusState::attached(&cluster_lu, 10).with_pr_identity(nx(2));
    let mut other = NexusState::attached(&cluster_lu, 11).with_pr_identity(nx(3));
    let mut st = UnitState {
        spc2: Some(nx(2)),
        swp: true,
        swp_by: Some(nx(2)),
        ..UnitState::default()
    };
    cluster_lu.install(1, st.clone());
    holder.observe(&cluster_lu);
    other.observe(&cluster_lu);
    assert!(!holder.reserved_elsewhere());
    assert!(other.reserved_elsewhere());
    assert!(holder.software_write_protect() && other.software_write_protect());
    assert!(!holder
        .pending()
        .contains(&UnitAttention::ModeParametersChanged));
    assert!(other
        .pending()
        .contains(&UnitAttention::ModeParametersChanged));
    st.spc2 = None;
    cluster_lu.install(2, st);
    other.observe(&cluster_lu);
    assert!(!other.reserved_elsewhere());
}

/// A cluster that decides nothing (the tests install states directly).
#[derive(Debug)]
struct NoCluster;

impl crate::scsi::ClusterUnit for NoCluster {
    fn change(&self, _: ItNexus, _: crate::scsi::UnitChange, done: crate::scsi::Done) {
        done(Completion::good());
    }

    fn state(&self) -> Option<(u64, crate::scsi::UnitState)> {
        None
    }
}

#[test]
fn initiator_names_cannot_add_lines_to_the_text_forms() {
    use crate::scsi::UnitState;
    // A name a host could send at login, with line breaks and spaces that
    // would read as fields of the state if written as they are.
    let evil = ItNexus {
        initiator: "iqn.x:y\nsanitize 1 7\nswp 1 % é,i,0x800000000001".into(),
        rel_port: 2,
    };
    let mut s = UnitState::default();
    assert_eq!(s.pr.prout(&evil, 0, 0, &params(0, 9, 1)), Ok(true));
    assert_eq!(s.pr.prout(&evil, 1, 1, &params(9, 0, 1)), Ok(true));
    s.spc2 = Some(evil.clone());
    s.swp_by = Some(evil.clone());
    let text = s.to_text();
    assert_eq!(
        text.lines().filter(|l| l.starts_with("sanitize")).count(),
        0,
        "{text}"
    );
    let back = UnitState::from_text(&text).unwrap();
    assert_eq!(back, s);
    assert!(!back.swp);
    assert_eq!(back.sanitize, crate::scsi::SanitizePhase::Idle);
    // The saved (APTPL) form too.
    let saved = PrState::from_text(&s.pr.to_text()).unwrap();
    assert_eq!(saved.registrations, s.pr.registrations);
    // Malformed escapes are refused, not misread.
    assert_eq!(text::unword("a%zz"), None);
    assert_eq!(text::unword("a%4"), None);
    assert_eq!(text::unword("a%41b").as_deref(), Some("aAb"));
}
