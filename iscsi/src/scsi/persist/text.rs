//! The saved form of a unit's persistent reservation state: one item a
//! line (initiator port names hold no whitespace). Only what APTPL keeps is
//! written: generation, registrations, reservation.

use std::fmt::Write as _;

use super::{ItNexus, PrState, PrType, Registration, Reservation};

impl PrState {
    /// The saved form of this state.
    pub fn to_text(&self) -> String {
        encode(self)
    }

    /// The state saved as `text`; None if it is not a saved state.
    pub fn from_text(text: &str) -> Option<Self> {
        decode(text)
    }
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
            r.key, r.nexus.rel_port, r.nexus.initiator
        );
    }
    if let Some(r) = &s.reservation {
        let _ = writeln!(
            t,
            "res {} {} {}",
            r.kind.code(),
            r.holder.rel_port,
            r.holder.initiator
        );
    }
    t
}

fn decode(text: &str) -> Option<PrState> {
    let mut lines = text.lines();
    if lines.next()? != "trellis-pr 1" {
        return None;
    }
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
                let initiator = w.next()?.to_string();
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
                let initiator = w.next()?.to_string();
                s.reservation = Some(Reservation {
                    kind,
                    holder: ItNexus {
                        initiator,
                        rel_port,
                    },
                });
            }
            _ => return None,
        }
    }
    Some(s)
}
