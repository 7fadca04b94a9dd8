//! Role assignments: per Failover Set, which member is Primary, which
//! Secondary and which are Alternates, each with an epoch. They are the
//! replicated log's own state ([`ReplicatedState::roles`]), not the user's
//! configuration: the Raft leader's arbiter proposes them
//! ([`Command::AssignRoles`]), and only what is committed counts.
//!
//! Epochs are one counter for the whole cluster: every committed
//! assignment takes the next value, so an epoch is never reused, not even
//! by a set deleted and created again. An epoch is the fencing token a
//! member's port states carry.
//!
//! A proposal names the epoch it was computed from (`expect`): if another
//! assignment of the set was committed meanwhile (a former leader's), the
//! proposal is refused and the arbiter decides again from the new state.
//!
//! [`ReplicatedState::roles`]: super::ReplicatedState::roles
//! [`Command::AssignRoles`]: super::Command::AssignRoles

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::command::{ConfigError, Response};
use super::ClusterConfig;
use crate::MemberId;

/// Who holds which role in one set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Roles {
    /// The Primary (None: no member can serve the set).
    #[serde(default)]
    pub primary: Option<MemberId>,
    /// The Secondary, next in line.
    #[serde(default)]
    pub secondary: Option<MemberId>,
    /// The other eligible members, in the order they would be promoted.
    #[serde(default)]
    pub alternates: Vec<MemberId>,
    /// During a planned handover, the former Primary, still serving
    /// (Active/Optimized) until the next epoch: the new Primary becomes
    /// Active/Optimized before the old one steps down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outgoing: Option<MemberId>,
}

impl Roles {
    /// Whether `m` holds any role here.
    pub fn holds(&self, m: &MemberId) -> bool {
        self.primary.as_ref() == Some(m)
            || self.secondary.as_ref() == Some(m)
            || self.outgoing.as_ref() == Some(m)
            || self.alternates.contains(m)
    }

    /// The role of `m`, as people read it.
    pub fn role_of(&self, m: &MemberId) -> Option<&'static str> {
        if self.primary.as_ref() == Some(m) {
            Some("primary")
        } else if self.outgoing.as_ref() == Some(m) {
            Some("outgoing")
        } else if self.secondary.as_ref() == Some(m) {
            Some("secondary")
        } else if self.alternates.contains(m) {
            Some("alternate")
        } else {
            None
        }
    }
}

/// A committed assignment of one set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    /// Its epoch (the fencing token).
    pub epoch: u64,
    /// The roles.
    pub roles: Roles,
    /// When the arbiter decided it (Unix milliseconds, the leader's clock;
    /// for people, never for deciding).
    pub since_ms: u64,
    /// Why ("m1 failed on every link: m2 Primary, m3 Secondary").
    pub why: String,
}

/// One set's part of an [`AssignRoles`](super::Command::AssignRoles).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    /// The set.
    pub set: String,
    /// The epoch the proposal was decided from (0: the set had none).
    pub expect: u64,
    /// The roles.
    pub roles: Roles,
    /// When (Unix milliseconds).
    pub since_ms: u64,
    /// Why.
    pub why: String,
}

/// One committed assignment in the history: what changed in which set,
/// when and why.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleEvent {
    /// The set.
    pub set: String,
    /// The assignment, as committed.
    pub assignment: Assignment,
}

/// How many assignments the history keeps (the oldest go first).
pub const HISTORY: usize = 256;

/// The role assignments of every set and the last epoch given.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleTable {
    /// The last epoch committed (0: none yet).
    #[serde(default)]
    pub last_epoch: u64,
    /// By set name.
    #[serde(default)]
    pub sets: BTreeMap<String, Assignment>,
    /// The last [`HISTORY`] assignments of every set, oldest first. Part
    /// of the replicated state, so every member shows the same history and
    /// it survives restarts (snapshots carry it).
    #[serde(default, skip_serializing_if = "VecDeque::is_empty")]
    pub history: VecDeque<RoleEvent>,
}

impl RoleTable {
    /// Whether nothing was ever assigned (left out of snapshots then).
    pub fn is_empty(&self) -> bool {
        self.last_epoch == 0 && self.sets.is_empty()
    }

    /// Commits `proposals` together, or none of them: each must name a set
    /// that exists and the epoch it was decided from, and its members must
    /// be members of the set.
    pub fn assign(
        &mut self,
        config: &ClusterConfig,
        proposals: &[Proposal],
    ) -> Result<Response, ConfigError> {
        for p in proposals {
            let Some(_) = config.failover_set(&p.set) else {
                return Err(ConfigError::NotFound {
                    object: super::Object::Set,
                    name: p.set.clone(),
                });
            };
            let current = self.sets.get(&p.set).map_or(0, |a| a.epoch);
            if current != p.expect {
                return Err(ConfigError::StaleEpoch {
                    set: p.set.clone(),
                    expected: p.expect,
                    current,
                });
            }
            let members = config.set_members(&p.set);
            let r = &p.roles;
            let named = r
                .primary
                .iter()
                .chain(&r.secondary)
                .chain(&r.outgoing)
                .chain(&r.alternates);
            for m in named {
                if !members.contains(m) {
                    return Err(ConfigError::InvalidSet {
                        set: p.set.clone(),
                        reason: format!("a role for {m}, who is not a member of it"),
                    });
                }
            }
        }
        for p in proposals {
            self.last_epoch += 1;
            let assignment = Assignment {
                epoch: self.last_epoch,
                roles: p.roles.clone(),
                since_ms: p.since_ms,
                why: p.why.clone(),
            };
            if self.history.len() == HISTORY {
                self.history.pop_front();
            }
            self.history.push_back(RoleEvent {
                set: p.set.clone(),
                assignment: assignment.clone(),
            });
            self.sets.insert(p.set.clone(), assignment);
        }
        Ok(if proposals.is_empty() {
            Response::Unchanged
        } else {
            Response::Changed
        })
    }

    /// Forgets the assignments of sets the configuration no longer has
    /// (their epochs stay used).
    pub fn prune(&mut self, config: &ClusterConfig) {
        self.sets.retain(|s, _| config.failover_set(s).is_some());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::testing::with_data_members;

    fn roles(p: &str, s: Option<&str>) -> Roles {
        Roles {
            primary: Some(MemberId(p.into())),
            secondary: s.map(|s| MemberId(s.into())),
            ..Roles::default()
        }
    }

    fn proposal(set: &str, expect: u64, r: Roles) -> Proposal {
        Proposal {
            set: set.into(),
            expect,
            roles: r,
            since_ms: 1,
            why: "test".into(),
        }
    }

    #[test]
    fn epochs_rise_once_per_assignment_and_stale_proposals_are_refused() {
        let config = with_data_members(&["m1", "m2", "m3"]);
        let mut t = RoleTable::default();
        assert_eq!(
            t.assign(&config, &[proposal("default", 0, roles("m1", Some("m2")))]),
            Ok(Response::Changed)
        );
        assert_eq!(t.sets["default"].epoch, 1);
        // A former leader's proposal from epoch 0: refused, nothing moves.
        let before = t.clone();
        let stale = t.assign(&config, &[proposal("default", 0, roles("m3", None))]);
        assert_eq!(
            stale,
            Err(ConfigError::StaleEpoch {
                set: "default".into(),
                expected: 0,
                current: 1
            })
        );
        assert_eq!(t, before);
        // A role for a stranger, or an unknown set: refused, all or nothing.
        let bad = [
            proposal("default", 1, roles("m2", None)),
            proposal("default", 1, roles("m9", None)),
        ];
        assert!(t.assign(&config, &bad).is_err());
        assert!(t
            .assign(&config, &[proposal("s9", 0, roles("m1", None))])
            .is_err());
        assert_eq!(t, before);
        t.assign(&config, &[proposal("default", 1, roles("m2", Some("m3")))])
            .unwrap();
        assert_eq!((t.last_epoch, t.sets["default"].epoch), (2, 2));
        assert_eq!(
            t.sets["default"].roles.role_of(&MemberId("m3".into())),
            Some("secondary")
        );
        // The history has both commits, in order; refusals left no trace.
        let epochs: Vec<u64> = t.history.iter().map(|e| e.assignment.epoch).collect();
        assert_eq!(epochs, [1, 2]);
        assert_eq!(t.history[1].assignment, t.sets["default"]);
    }

    #[test]
    fn the_history_keeps_the_last_assignments() {
        let config = with_data_members(&["m1", "m2"]);
        let mut t = RoleTable::default();
        for e in 0..HISTORY as u64 + 10 {
            let r = if e % 2 == 0 {
                roles("m1", Some("m2"))
            } else {
                roles("m2", Some("m1"))
            };
            t.assign(&config, &[proposal("default", e, r)]).unwrap();
        }
        assert_eq!(t.history.len(), HISTORY);
        assert_eq!(t.history.front().unwrap().assignment.epoch, 11);
        assert_eq!(
            t.history.back().unwrap().assignment.epoch,
            HISTORY as u64 + 10
        );
        // Survives a round trip through JSON (snapshots).
        let back: RoleTable = serde_json::from_value(serde_json::to_value(&t).unwrap()).unwrap();
        assert_eq!(back, t);
    }
}
