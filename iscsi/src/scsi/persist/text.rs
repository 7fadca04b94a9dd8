//! The text forms of a unit's persistent reservation state: one item a
//! line, words apart. An initiator port name is one word: its bytes outside
//! printable ASCII, spaces and `%` are written `%XX` ([`word`]), so no name
//! a host sends (at login, or in a TransportID) can end a line or add one.
//!
//! - The saved form (`trellis-pr 1`, [`PrState::to_text`]) holds what APTPL
//!   keeps: generation, registrations, reservation.
//! - The shared form (`trellis-pr 2`, [`PrState::to_shared_text`]) holds the
//!   whole state, APTPL and the event log for other I_T nexuses included:
//!   what every member of a cluster applies, so that a unit attention or a
//!   PREEMPT AND ABORT reaches nexuses on every member.

use std::fmt::Write as _;

use super::{Event, ItNexus, PrState, PrType, Registration, Reservation};
use crate::scsi::ua::UnitAttention;

impl PrState {
    /// The saved form of this state.
    pub fn to_text(&self) -> String {
        encode(self)
    }

    /// The shared form of this state: all of it.
    pub fn to_shared_text(&self) -> String {
        let mut t = encode(self).replacen("trellis-pr 1", "trellis-pr 2", 1);
        let _ = writeln!(t, "aptpl {}", u8::from(self.aptpl));
        let _ = writeln!(t, "next_event {}", self.next_event);
        for (seq, to, e) in &self.events {
            let kind = match e {
                Event::Ua(UnitAttention::ReservationsPreempted) => "preempted",
                Event::Ua(UnitAttention::ReservationsReleased) => "released",
                Event::Ua(UnitAttention::RegistrationsPreempted) => "registrations-preempted",
                Event::Ua(_) => continue,
                Event::Abort => "abort",
            };
            let _ = writeln!(
                t,
                "event {seq} {kind} {} {}",
                to.rel_port,
                word(&to.initiator)
            );
        }
        t
    }

    /// The state saved as `text` in either form; None if it is not one.
    pub fn from_text(text: &str) -> Option<Self> {
        decode(text)
    }
}

/// `name` as one word of the text forms: `%`, spaces, controls and bytes
/// past ASCII as `%XX`.
pub(crate) fn word(name: &str) -> String {
    let mut w = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_graphic() && b != b'%' {
            w.push(b as char);
        } else {
            let _ = write!(w, "%{b:02X}");
        }
    }
    w
}

/// The name written as word `w`; None if it is not one.
pub(crate) fn unword(w: &str) -> Option<String> {
    let b = w.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else if b[i].is_ascii_graphic() {
            out.push(b[i]);
            i += 1;
        } else {
            return None;
        }
    }
    String::from_utf8(out).ok()
}

/// The text form of `s` (one item a line; initiator port names hold no
/// whitespace).
fn encode(s: &PrState) -> String {
    let mut t = String::from("trellis-pr 1\n");
    let _ = writeln!(t, "generation {}", s.generation);
    for r in &s.registrations {
        let _ = writeln!(
            t,
            "reg {:016x} {} {}",
            r.key,
            r.nexus.rel_port,
            word(&r.nexus.initiator)
        );
    }
    if let Some(r) = &s.reservation {
        let _ = writeln!(
            t,
            "res {} {} {}",
            r.kind.code(),
            r.holder.rel_port,
            word(&r.holder.initiator)
        );
    }
    t
}

fn decode(text: &str) -> Option<PrState> {
    let mut lines = text.lines();
    let shared = match lines.next()? {
        "trellis-pr 1" => false,
        "trellis-pr 2" => true,
        _ => return None,
    };
    let mut s = PrState {
        aptpl: true,
        ..PrState::default()
    };
    for line in lines {
        let mut w = line.split_whitespace();
        match w.next()? {
            "generation" => s.generation = w.next()?.parse().ok()?,
            "reg" => {
                let key = u64::from_str_radix(w.next()?, 16).ok()?;
                let rel_port = w.next()?.parse().ok()?;
                let initiator = unword(w.next()?)?;
                s.registrations.push(Registration {
                    key,
                    nexus: ItNexus {
                        initiator,
                        rel_port,
                    },
                });
            }
            "res" => {
                let kind = PrType::from_code(w.next()?.parse().ok()?)?;
                let rel_port = w.next()?.parse().ok()?;
                let initiator = unword(w.next()?)?;
                s.reservation = Some(Reservation {
                    kind,
                    holder: ItNexus {
                        initiator,
                        rel_port,
                    },
                });
            }
            "aptpl" if shared => s.aptpl = w.next()? == "1",
            "next_event" if shared => s.next_event = w.next()?.parse().ok()?,
            "event" if shared => {
                let seq = w.next()?.parse().ok()?;
                let e = match w.next()? {
                    "preempted" => Event::Ua(UnitAttention::ReservationsPreempted),
                    "released" => Event::Ua(UnitAttention::ReservationsReleased),
                    "registrations-preempted" => Event::Ua(UnitAttention::RegistrationsPreempted),
                    "abort" => Event::Abort,
                    _ => return None,
                };
                let rel_port = w.next()?.parse().ok()?;
                let initiator = unword(w.next()?)?;
                s.events.push_back((
                    seq,
                    ItNexus {
                        initiator,
                        rel_port,
                    },
                    e,
                ));
            }
            _ => return None,
        }
    }
    Some(s)
}
