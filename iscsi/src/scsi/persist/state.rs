//! The PERSISTENT RESERVE OUT service actions on a unit's state, and the
//! events they leave for other I_T nexuses.

use super::{
    parse_transport_id, Event, ItNexus, PrState, PrType, PrView, Registration, Reservation,
    EVENT_LOG,
};
use crate::scsi::cdb::{be, be16};
use crate::scsi::sense::{Sense, SenseKey};
use crate::scsi::ua::UnitAttention;
use crate::scsi::Completion;

impl PrState {
    pub(super) fn key_of(&self, n: &ItNexus) -> Option<u64> {
        self.registrations
            .iter()
            .find(|r| r.nexus == *n)
            .map(|r| r.key)
    }

    /// Whether `n` holds the reservation.
    pub fn holds(&self, n: &ItNexus) -> bool {
        match &self.reservation {
            None => false,
            Some(r) if r.kind.all_registrants() => self.key_of(n).is_some(),
            Some(r) => r.holder == *n,
        }
    }

    /// The view of nexus `n`.
    pub fn view(&self, n: &ItNexus) -> PrView {
        PrView {
            any: !self.registrations.is_empty(),
            registered: self.key_of(n).is_some(),
            kind: self.reservation.as_ref().map(|r| r.kind),
            holder: self.holds(n),
        }
    }

    /// Whether nothing is registered or reserved.
    pub fn is_empty(&self) -> bool {
        self.registrations.is_empty() && self.reservation.is_none()
    }

    fn event(&mut self, to: &ItNexus, e: Event) {
        self.next_event += 1;
        if self.events.len() >= EVENT_LOG {
            self.events.pop_front();
        }
        self.events.push_back((self.next_event, to.clone(), e));
    }

    /// The sequence number of the last event.
    pub(crate) fn last_event(&self) -> u64 {
        self.next_event
    }

    /// Events for `n` after `seen`: unit attentions, and whether its tasks
    /// are to be aborted.
    pub(crate) fn events_for(&self, n: &ItNexus, seen: u64) -> (Vec<UnitAttention>, bool) {
        let mut uas = Vec::new();
        let mut abort = false;
        for (seq, to, e) in &self.events {
            if *seq > seen && to == n {
                match e {
                    Event::Ua(u) => uas.push(*u),
                    Event::Abort => abort = true,
                }
            }
        }
        (uas, abort)
    }

    /// Removes the registration of `n`, and the reservation it held alone,
    /// or (all registrants) once the last registrant goes. Returns whether
    /// a reservation went.
    fn unregister(&mut self, n: &ItNexus) -> bool {
        self.registrations.retain(|r| r.nexus != *n);
        let gone = match &self.reservation {
            Some(r) if r.kind.all_registrants() => self.registrations.is_empty(),
            Some(r) => r.holder == *n,
            None => false,
        };
        if gone {
            let kind = self.reservation.take().map(|r| r.kind);
            if kind.is_some_and(|k| k.registrants_have_access()) {
                self.notify_registrants(n, UnitAttention::ReservationsReleased);
            }
        }
        gone
    }

    fn notify_registrants(&mut self, except: &ItNexus, ua: UnitAttention) {
        let to: Vec<ItNexus> = self
            .registrations
            .iter()
            .filter(|r| r.nexus != *except)
            .map(|r| r.nexus.clone())
            .collect();
        for n in to {
            self.event(&n, Event::Ua(ua));
        }
    }

    /// Removes every registration with `key` except `me`'s, with a unit
    /// attention (and, `abort`, an abort) to each; false if there was none.
    fn preempt_key(&mut self, me: &ItNexus, key: u64, abort: bool) -> bool {
        let gone: Vec<ItNexus> = self
            .registrations
            .iter()
            .filter(|r| r.key == key && r.nexus != *me)
            .map(|r| r.nexus.clone())
            .collect();
        let matched = self.registrations.iter().any(|r| r.key == key);
        self.registrations
            .retain(|r| r.key != key || r.nexus == *me);
        for n in &gone {
            self.event(n, Event::Ua(UnitAttention::RegistrationsPreempted));
            if abort {
                self.event(n, Event::Abort);
            }
        }
        matched
    }

    /// REGISTER AND MOVE from `me` (SPC-4 5.13.8): registers the I_T nexus
    /// of the TransportID with the SERVICE ACTION RESERVATION KEY and moves
    /// `me`'s reservation to it; UNREG also unregisters `me`.
    fn register_and_move(
        &mut self,
        me: &ItNexus,
        scope_type: u8,
        p: &[u8],
    ) -> Result<bool, Completion> {
        let check = |s: Sense| Err(Completion::check(s));
        if p.len() < 24 || 24 + be(p, 20, 4) as usize != p.len() {
            return check(Sense::parameter_list_length_error());
        }
        let (key, sark) = (be(p, 0, 8), be(p, 8, 8));
        let (unreg, aptpl) = (p[17] & 0x02 != 0, p[17] & 0x01 != 0);
        if self.key_of(me) != Some(key) {
            return Err(Completion::reservation_conflict());
        }
        match &self.reservation {
            Some(r) if !r.kind.all_registrants() && r.holder == *me => {}
            _ => return Err(Completion::reservation_conflict()),
        }
        if scope_type >> 4 != 0 {
            return check(Sense::invalid_field_in_cdb(2, 7));
        }
        let Some(kind) = PrType::from_code(scope_type & 0x0F) else {
            return check(Sense::invalid_field_in_cdb(2, 3));
        };
        if sark == 0 {
            return check(Sense::invalid_field_in_parameter_list(8, None));
        }
        let Some(initiator) = parse_transport_id(&p[24..]) else {
            return check(Sense::invalid_field_in_parameter_list(24, None));
        };
        let dest = ItNexus {
            initiator,
            rel_port: be16(p, 18),
        };
        if dest == *me {
            return check(Sense::invalid_field_in_parameter_list(24, None));
        }
        match self.registrations.iter_mut().find(|r| r.nexus == dest) {
            Some(r) => r.key = sark,
            None => self.registrations.push(Registration {
                key: sark,
                nexus: dest.clone(),
            }),
        }
        self.reservation = Some(Reservation { kind, holder: dest });
        if unreg {
            self.registrations.retain(|r| r.nexus != *me);
        }
        self.aptpl = aptpl;
        self.generation = self.generation.wrapping_add(1);
        Ok(true)
    }

    /// PERSISTENT RESERVE OUT from `me`. Ok(true) when the state changed.
    pub fn prout(
        &mut self,
        me: &ItNexus,
        sa: u8,
        scope_type: u8,
        p: &[u8],
    ) -> Result<bool, Completion> {
        let check = |s: Sense| Completion::check(s);
        if sa == 0x07 {
            return self.register_and_move(me, scope_type, p);
        }
        if p.len() != 24 {
            return Err(check(Sense::parameter_list_length_error()));
        }
        let key = be(p, 0, 8);
        let sark = be(p, 8, 8);
        let flags = p[20];
        if flags & 0x08 != 0 {
            return Err(check(Sense::invalid_field_in_parameter_list(20, 3)));
        }
        if flags & 0x04 != 0 {
            return Err(check(Sense::invalid_field_in_parameter_list(20, 2)));
        }
        let aptpl = flags & 0x01 != 0;
        let mine = self.key_of(me);
        let conflict = Completion::reservation_conflict;
        match sa {
            // REGISTER, REGISTER AND IGNORE EXISTING KEY.
            0x00 | 0x06 => {
                if sa == 0x00 && mine.unwrap_or(0) != key {
                    return Err(conflict());
                }
                match (mine, sark) {
                    (None, 0) => return Ok(false),
                    (None, k) => self.registrations.push(Registration {
                        key: k,
                        nexus: me.clone(),
                    }),
                    (Some(_), 0) => {
                        self.unregister(me);
                    }
                    (Some(_), k) => {
                        if let Some(r) = self.registrations.iter_mut().find(|r| r.nexus == *me) {
                            r.key = k;
                        }
                    }
                }
                self.aptpl = aptpl;
                self.generation = self.generation.wrapping_add(1);
                return Ok(true);
            }
            0x01..=0x05 => {}
            _ => return Err(check(Sense::invalid_field_in_cdb(1, 4))),
        }
        if mine != Some(key) {
            return Err(conflict());
        }
        let scope = scope_type >> 4;
        let kind = PrType::from_code(scope_type & 0x0F);
        let typed = || -> Result<PrType, Completion> {
            if scope != 0 {
                return Err(check(Sense::invalid_field_in_cdb(2, 7)));
            }
            kind.ok_or_else(|| check(Sense::invalid_field_in_cdb(2, 3)))
        };
        match sa {
            // RESERVE.
            0x01 => {
                let kind = typed()?;
                match &self.reservation {
                    Some(r) if self.holds(me) && r.kind == kind => Ok(false),
                    Some(_) => Err(conflict()),
                    None => {
                        self.reservation = Some(Reservation {
                            kind,
                            holder: me.clone(),
                        });
                        Ok(true)
                    }
                }
            }
            // RELEASE.
            0x02 => {
                let Some(r) = &self.reservation else {
                    return Ok(false);
                };
                if !self.holds(me) {
                    return Ok(false);
                }
                let kind = r.kind;
                if scope != 0 {
                    return Err(check(Sense::invalid_field_in_cdb(2, 7)));
                }
                if Some(kind) != PrType::from_code(scope_type & 0x0F) {
                    return Err(check(Sense::new(SenseKey::IllegalRequest, 0x26, 0x04)));
                }
                self.reservation = None;
                if kind.registrants_have_access() {
                    self.notify_registrants(me, UnitAttention::ReservationsReleased);
                }
                Ok(true)
            }
            // CLEAR.
            0x03 => {
                self.reservation = None;
                self.notify_registrants(me, UnitAttention::ReservationsPreempted);
                self.registrations.clear();
                self.generation = self.generation.wrapping_add(1);
                Ok(true)
            }
            // PREEMPT, PREEMPT AND ABORT.
            _ => {
                let abort = sa == 0x05;
                let kind = typed()?;
                let res = self.reservation.clone();
                match res {
                    None => {
                        if sark == 0 {
                            return Err(check(Sense::invalid_field_in_parameter_list(8, None)));
                        }
                        if !self.preempt_key(me, sark, abort) {
                            return Err(conflict());
                        }
                    }
                    Some(r) if r.kind.all_registrants() && sark == 0 => {
                        let others: Vec<u64> = self
                            .registrations
                            .iter()
                            .filter(|x| x.nexus != *me)
                            .map(|x| x.key)
                            .collect();
                        for k in others {
                            self.preempt_key(me, k, abort);
                        }
                        self.reservation = Some(Reservation {
                            kind,
                            holder: me.clone(),
                        });
                    }
                    Some(r)
                        if !r.kind.all_registrants() && self.key_of(&r.holder) == Some(sark) =>
                    {
                        self.preempt_key(me, sark, abort);
                        self.reservation = Some(Reservation {
                            kind,
                            holder: me.clone(),
                        });
                        if kind != r.kind {
                            self.notify_registrants(me, UnitAttention::ReservationsReleased);
                        }
                    }
                    Some(_) => {
                        if sark == 0 {
                            return Err(check(Sense::invalid_field_in_parameter_list(8, None)));
                        }
                        if !self.preempt_key(me, sark, abort) {
                            return Err(conflict());
                        }
                    }
                }
                self.generation = self.generation.wrapping_add(1);
                Ok(true)
            }
        }
    }
}
