//! Path swap (SPEC.md §3): roles become ALUA states, per device. Sans-IO:
//! every member computes the same table for a device from the committed
//! assignment of its set (one epoch), then overrides only its own group
//! by what its lease allows.
//!
//! | role, device policy        | active-passive             | active-active |
//! |----------------------------|----------------------------|---------------|
//! | Primary, outgoing Primary  | Active/Optimized (pref)    | Active/Optimized |
//! | Secondary, Alternate       | Standby, or Active/Non-opt | Active/Optimized |
//! | no role (failed, drained)  | Unavailable                | Unavailable   |
//! | set not assigned yet       | Transitioning              | Transitioning |
//!
//! | this member's lease | its own group                                       |
//! |---------------------|-----------------------------------------------------|
//! | valid               | as the table says                                   |
//! | expiring            | Transitioning where the table says Active           |
//! | expired             | Standby (active-passive) or Unavailable (active-active) where the table says Active |
//! | behind              | Transitioning where the table says Active, until the member has applied the epoch its lease was granted at |

use crate::config::{Assignment, ClusterConfig, Device, Others, PortPolicy};
use crate::lease::LeaseState;
use crate::MemberId;

/// An asymmetric access state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Active/Optimized.
    Optimized,
    /// Active/Non-optimized.
    NonOptimized,
    /// Standby.
    Standby,
    /// Unavailable.
    Unavailable,
    /// Transitioning.
    Transitioning,
}

impl Access {
    /// Whether hosts may send I/O.
    pub fn active(self) -> bool {
        matches!(self, Access::Optimized | Access::NonOptimized)
    }

    /// The name `/metrics` and the CLI use.
    pub fn name(self) -> &'static str {
        match self {
            Access::Optimized => "active_optimized",
            Access::NonOptimized => "active_non_optimized",
            Access::Standby => "standby",
            Access::Unavailable => "unavailable",
            Access::Transitioning => "transitioning",
        }
    }
}

/// One member's target port group for a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// The member.
    pub member: MemberId,
    /// Its target port group id (its port id).
    pub id: u16,
    /// Its relative target port id (the same).
    pub relative_port: u16,
    /// Its state.
    pub state: Access,
    /// Preferred (only ever on an Active/Optimized group).
    pub preferred: bool,
}

/// A device's groups, all from one epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceTable {
    /// The epoch of its set's assignment (0: none yet).
    pub epoch: u64,
    /// One group per member of its set, in priority order.
    pub groups: Vec<Group>,
}

/// The table of `device` from its set's committed assignment (None: not
/// assigned yet).
pub fn device_table(
    config: &ClusterConfig,
    device: &Device,
    assignment: Option<&Assignment>,
) -> DeviceTable {
    let members = config.set_members(&device.set);
    let groups = members
        .iter()
        .filter_map(|m| {
            let port = config.members.get(m)?.port_id()?;
            let state = match assignment {
                None => Access::Transitioning,
                Some(a) => state_of(m, a, device.policy),
            };
            Some(Group {
                member: m.clone(),
                id: port,
                relative_port: port,
                state,
                preferred: state == Access::Optimized
                    && assignment.is_some_and(|a| a.roles.primary.as_ref() == Some(m)),
            })
        })
        .collect();
    DeviceTable {
        epoch: assignment.map_or(0, |a| a.epoch),
        groups,
    }
}

fn state_of(m: &MemberId, a: &Assignment, policy: PortPolicy) -> Access {
    let r = &a.roles;
    let leading = r.primary.as_ref() == Some(m) || r.outgoing.as_ref() == Some(m);
    let following = r.secondary.as_ref() == Some(m) || r.alternates.contains(m);
    match (policy, leading, following) {
        (_, true, _) => Access::Optimized,
        (PortPolicy::ActiveActive, _, true) => Access::Optimized,
        (
            PortPolicy::ActivePassive {
                others: Others::NonOptimized,
            },
            _,
            true,
        ) => Access::NonOptimized,
        (PortPolicy::ActivePassive { .. }, _, true) => Access::Standby,
        _ => Access::Unavailable,
    }
}

/// This member's own state for a device whose table says `table_state`,
/// given its lease and the last epoch it has applied.
pub fn own_state(
    table_state: Access,
    policy: PortPolicy,
    lease: LeaseState,
    applied_epoch: u64,
) -> Access {
    if !table_state.active() {
        return table_state;
    }
    match lease {
        LeaseState::Valid { epoch, .. } if epoch <= applied_epoch => table_state,
        LeaseState::Valid { .. } | LeaseState::Expiring { .. } => Access::Transitioning,
        LeaseState::Expired => match policy {
            PortPolicy::ActivePassive { .. } => Access::Standby,
            PortPolicy::ActiveActive => Access::Unavailable,
        },
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::api::testing::with_data_members;
    use crate::config::{Roles, DEFAULT_SET};

    fn device(policy: PortPolicy) -> Device {
        Device {
            name: "d".into(),
            uuid: uuid::Uuid::from_u128(1),
            size: 4096,
            backing: crate::config::Backing::Memory,
            block_size: 512,
            thin: false,
            read_only: false,
            set: DEFAULT_SET.into(),
            policy,
        }
    }

    fn assignment(p: &str, s: &str, outgoing: Option<&str>) -> Assignment {
        Assignment {
            epoch: 7,
            roles: Roles {
                primary: Some(MemberId(p.into())),
                secondary: Some(MemberId(s.into())),
                alternates: vec![],
                outgoing: outgoing.map(|o| MemberId(o.into())),
            },
            since_ms: 0,
            why: String::new(),
        }
    }

    fn states(t: &DeviceTable) -> Vec<(u16, Access, bool)> {
        t.groups
            .iter()
            .map(|g| (g.id, g.state, g.preferred))
            .collect()
    }

    #[test]
    fn roles_become_states_per_policy() {
        use Access::*;
        let c = with_data_members(&["m1", "m2", "m3"]);
        let a = assignment("m2", "m1", None);
        let ap = device_table(&c, &device(PortPolicy::default()), Some(&a));
        assert_eq!(ap.epoch, 7);
        assert_eq!(
            states(&ap),
            [
                (1, Standby, false),
                (2, Optimized, true),
                (3, Unavailable, false)
            ]
        );
        let ano = PortPolicy::ActivePassive {
            others: Others::NonOptimized,
        };
        assert_eq!(
            states(&device_table(&c, &device(ano), Some(&a)))[0],
            (1, NonOptimized, false)
        );
        let aa = device_table(&c, &device(PortPolicy::ActiveActive), Some(&a));
        assert_eq!(
            states(&aa),
            [
                (1, Optimized, false),
                (2, Optimized, true),
                (3, Unavailable, false)
            ]
        );
        // A planned handover: both Active/Optimized, the new one preferred.
        let h = device_table(
            &c,
            &device(PortPolicy::default()),
            Some(&assignment("m2", "m3", Some("m1"))),
        );
        assert_eq!(
            states(&h),
            [
                (1, Optimized, false),
                (2, Optimized, true),
                (3, Standby, false)
            ]
        );
        // Not assigned yet: nobody Active.
        let none = device_table(&c, &device(PortPolicy::default()), None);
        assert!(
            none.groups.iter().all(|g| g.state == Transitioning),
            "{none:?}"
        );
        assert_eq!(none.epoch, 0);
    }

    #[test]
    fn a_member_without_its_lease_is_never_active() {
        use Access::*;
        let now = Instant::now();
        let valid = |epoch| LeaseState::Valid { until: now, epoch };
        let ap = PortPolicy::default();
        let aa = PortPolicy::ActiveActive;
        let table = [
            (Optimized, ap, valid(7), 7, Optimized),
            (Optimized, ap, valid(8), 7, Transitioning),
            (
                Optimized,
                ap,
                LeaseState::Expiring {
                    until: now,
                    epoch: 7,
                },
                7,
                Transitioning,
            ),
            (Optimized, ap, LeaseState::Expired, 7, Standby),
            (Optimized, aa, LeaseState::Expired, 7, Unavailable),
            (NonOptimized, ap, LeaseState::Expired, 7, Standby),
            (Standby, ap, LeaseState::Expired, 7, Standby),
            (Unavailable, aa, valid(7), 7, Unavailable),
        ];
        for (table_state, policy, lease, applied, want) in table {
            assert_eq!(
                own_state(table_state, policy, lease, applied),
                want,
                "{table_state:?} {policy:?} {lease:?} {applied}"
            );
        }
    }
}
