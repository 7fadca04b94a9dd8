//! What members announce in their heartbeats against what Raft committed.
//!
//! Every member announces, on every link, its role and the epoch of the
//! assignment it applies in each Failover Set ([`wire::SetRole`]). Each
//! member compares what it hears with the assignments its own replica has
//! applied:
//!
//! ```text
//!  peer announces epoch  <  applied here   -> Behind   (the peer lags, or is cut off from Raft:
//!                                                       logged; its lease fences it, and it
//!                                                       corrects itself when it hears this one)
//!  peer announces epoch  >  applied here   -> Ahead    (THIS member lags: its ports of that set
//!                                                       stop serving until its replica catches up)
//!  same epoch, another role than committed -> WrongRole (a fault: logged)
//! ```
//!
//! Sans-IO: trellisd's paths thread runs it with the node's announcements
//! and acts on the result.
//!
//! [`wire::SetRole`]: crate::wire::SetRole

use std::collections::BTreeMap;

use crate::config::{Assignment, RoleTable};
use crate::node::Announcements;
use crate::wire::{Role, SetRole};
use crate::MemberId;

/// The role `m` holds in `a`, as announced on the wire (an outgoing
/// Primary still serves: Primary).
pub fn role_in(a: &Assignment, m: &MemberId) -> Role {
    let r = &a.roles;
    if r.primary.as_ref() == Some(m) || r.outgoing.as_ref() == Some(m) {
        Role::Primary
    } else if r.secondary.as_ref() == Some(m) {
        Role::Secondary
    } else if r.alternates.contains(m) {
        Role::Alternate
    } else {
        Role::None
    }
}

/// What `me` announces: its role and epoch in every set with roles.
pub fn announcement(roles: &RoleTable, me: &MemberId) -> Vec<SetRole> {
    roles
        .sets
        .iter()
        .map(|(set, a)| SetRole {
            set: set.clone(),
            role: role_in(a, me),
            epoch: a.epoch,
        })
        .collect()
}

/// A disagreement between an announcement and the applied assignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disagreement {
    /// `member` applies an older assignment of `set` than this replica.
    Behind {
        /// Who.
        member: MemberId,
        /// The set.
        set: String,
        /// The epoch it announces.
        announced: u64,
        /// The epoch applied here.
        applied: u64,
    },
    /// `member` applies a newer assignment of `set` than this replica has:
    /// this member lags.
    Ahead {
        /// Who.
        member: MemberId,
        /// The set.
        set: String,
        /// The epoch it announces.
        announced: u64,
        /// The epoch applied here (0: none).
        applied: u64,
    },
    /// `member` announces, at the epoch applied here, another role than
    /// the assignment gives it.
    WrongRole {
        /// Who.
        member: MemberId,
        /// The set.
        set: String,
        /// The epoch.
        epoch: u64,
        /// What it announces.
        announced: Role,
        /// What the assignment gives it.
        committed: Role,
    },
}

impl std::fmt::Display for Disagreement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Disagreement::Behind {
                member,
                set,
                announced,
                applied,
            } => write!(
                f,
                "{member} announces set {set} at epoch {announced}, behind epoch {applied} applied here"
            ),
            Disagreement::Ahead {
                member,
                set,
                announced,
                applied,
            } => write!(
                f,
                "{member} announces set {set} at epoch {announced}, ahead of epoch {applied} applied here"
            ),
            Disagreement::WrongRole {
                member,
                set,
                epoch,
                announced,
                committed,
            } => write!(
                f,
                "{member} announces {announced:?} in set {set} at epoch {epoch}, where it is {committed:?}"
            ),
        }
    }
}

/// Compares `announced` (per member, per set: role and epoch) with the
/// assignments in `roles`. Sets this replica does not know are compared
/// as epoch 0 (a set created since: the announcer is ahead).
pub fn cross_check(roles: &RoleTable, announced: &Announcements) -> Vec<Disagreement> {
    let mut out = Vec::new();
    for (member, sets) in announced {
        for (set, &(role, epoch)) in sets {
            let applied = roles.sets.get(set);
            let here = applied.map_or(0, |a| a.epoch);
            if epoch > here {
                out.push(Disagreement::Ahead {
                    member: member.clone(),
                    set: set.clone(),
                    announced: epoch,
                    applied: here,
                });
            } else if epoch < here {
                out.push(Disagreement::Behind {
                    member: member.clone(),
                    set: set.clone(),
                    announced: epoch,
                    applied: here,
                });
            } else if let Some(a) = applied {
                let committed = role_in(a, member);
                if committed != role {
                    out.push(Disagreement::WrongRole {
                        member: member.clone(),
                        set: set.clone(),
                        epoch,
                        announced: role,
                        committed,
                    });
                }
            }
        }
    }
    out
}

/// The sets some peer announces a newer epoch for than applied here, with
/// the newest epoch heard: this member's ports of those sets must not
/// serve until its replica has caught up.
pub fn lagging_sets(found: &[Disagreement]) -> BTreeMap<String, u64> {
    let mut out: BTreeMap<String, u64> = BTreeMap::new();
    for d in found {
        if let Disagreement::Ahead { set, announced, .. } = d {
            let e = out.entry(set.clone()).or_default();
            *e = (*e).max(*announced);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Roles;

    fn m(s: &str) -> MemberId {
        MemberId(s.into())
    }

    fn table() -> RoleTable {
        let mut t = RoleTable {
            last_epoch: 7,
            ..RoleTable::default()
        };
        t.sets.insert(
            "default".into(),
            Assignment {
                epoch: 7,
                roles: Roles {
                    primary: Some(m("m2")),
                    secondary: Some(m("m3")),
                    alternates: vec![m("m1")],
                    outgoing: None,
                },
                since_ms: 0,
                why: String::new(),
            },
        );
        t
    }

    fn heard(
        list: &[(&str, &str, Role, u64)],
    ) -> BTreeMap<MemberId, BTreeMap<String, (Role, u64)>> {
        let mut out: BTreeMap<MemberId, BTreeMap<String, (Role, u64)>> = BTreeMap::new();
        for &(who, set, role, epoch) in list {
            out.entry(m(who))
                .or_default()
                .insert(set.into(), (role, epoch));
        }
        out
    }

    #[test]
    fn agreeing_members_raise_nothing() {
        let t = table();
        let all = heard(&[
            ("m1", "default", Role::Alternate, 7),
            ("m2", "default", Role::Primary, 7),
            ("m3", "default", Role::Secondary, 7),
        ]);
        assert_eq!(cross_check(&t, &all), []);
        // What each announces is exactly what the others expect.
        for who in ["m1", "m2", "m3"] {
            let a = announcement(&t, &m(who));
            assert_eq!(a.len(), 1);
            assert_eq!(all[&m(who)]["default"], (a[0].role, a[0].epoch));
        }
    }

    #[test]
    fn each_kind_of_disagreement_is_found() {
        let t = table();
        let found = cross_check(
            &t,
            &heard(&[
                // A former Primary still at the epoch before.
                ("m1", "default", Role::Primary, 6),
                // A member that applied an assignment this one has not.
                ("m3", "default", Role::Primary, 8),
                // A set this replica has not heard of.
                ("m3", "s9", Role::Primary, 9),
                // The right epoch, the wrong role.
                ("m2", "default", Role::Secondary, 7),
            ]),
        );
        assert_eq!(
            found,
            [
                Disagreement::Behind {
                    member: m("m1"),
                    set: "default".into(),
                    announced: 6,
                    applied: 7
                },
                Disagreement::WrongRole {
                    member: m("m2"),
                    set: "default".into(),
                    epoch: 7,
                    announced: Role::Secondary,
                    committed: Role::Primary
                },
                Disagreement::Ahead {
                    member: m("m3"),
                    set: "default".into(),
                    announced: 8,
                    applied: 7
                },
                Disagreement::Ahead {
                    member: m("m3"),
                    set: "s9".into(),
                    announced: 9,
                    applied: 0
                },
            ]
        );
        assert_eq!(
            lagging_sets(&found),
            BTreeMap::from([("default".to_owned(), 8), ("s9".to_owned(), 9)])
        );
        assert!(found[0].to_string().contains("behind epoch 7"));
    }
}
