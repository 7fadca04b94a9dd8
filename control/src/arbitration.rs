//! The Arbitration Service (SPEC.md §3): per Failover Set, which member is
//! Primary, which Secondary and which are Alternates. Sans-IO: [`decide`]
//! takes the configuration, what is known of each member now, the
//! committed assignments and the time, and returns a decision per set; the
//! Raft leader runs it and commits the changes (each with the next epoch).
//!
//! ```text
//!  ClusterConfig (sets, priorities, failback) ─┐
//!  MemberFacts (liveness, health, boot, ...)  ─┼─> decide ─> per set: Keep
//!  committed Assignments (roles, epochs)      ─┤                     | Assign(roles, why)
//!  now, cold boot settled?                    ─┘                     | Wait(why)
//! ```
//!
//! Rules, in order:
//! - **Eligible** for a new role: alive (not suspect), renewing its lease,
//!   healthy, compatible, booted, neither drained nor quarantined.
//! - **Sticky**: a Primary keeps its role while it can hold it (alive or
//!   only suspect, its lease not run out, healthy, not drained or
//!   quarantined), whoever comes
//!   back; with failback `auto` a member of higher priority that has been
//!   eligible for the set's delay takes the role in a planned handover.
//! - A Primary that cannot hold its role is replaced by the Secondary if
//!   eligible, else by the first eligible member in priority order; a
//!   Secondary that went is replaced by the first eligible member. The
//!   others eligible are Alternates, in priority order.
//! - **Never two writers**: a Primary is replaced only once its lease can
//!   no longer hold (`lease_may_hold` false); until then the set waits.
//! - **Planned** changes (drain, failback) hand over: the new Primary is
//!   assigned with the old one `outgoing` (both serve), and after
//!   [`HANDOVER`] the old one steps down in the next epoch.
//! - **Cold boot**: a set with no assignment yet gets none while any of its
//!   members is not eligible (never heard from, not renewing its lease yet,
//!   booting), until the boot window has passed (`settled`), so the
//!   preferred member, not the first to start, becomes Primary.
//! - **Hierarchical** sets: each child set is decided on its own; the
//!   parent's Primary is the Primary of its active child (the child of the
//!   current Primary while that child has one: a failure inside a child is
//!   handled there first), else of the first child in priority order that
//!   has one.
//!
//! Deterministic: the same inputs give the same decisions; ties go by
//! priority order.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::config::{Assignment, ClusterConfig, Composition, Failback, FailoverSet, Roles};
use crate::MemberId;

/// How long a planned handover keeps the old Primary serving beside the
/// new one before it steps down.
pub const HANDOVER: Duration = Duration::from_millis(500);

/// A member's liveness as the failure detector sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// Heard from lately.
    Alive,
    /// Silent on every link for a while: may be back any moment.
    Suspect,
    /// Silent on every link past the failure timeout.
    Failed,
    /// Never heard from since this member started.
    Unknown,
}

/// What is known of one member now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberFacts {
    /// Its liveness.
    pub liveness: Liveness,
    /// Its health checks pass (backing stores, portals, process).
    pub healthy: bool,
    /// Its version and features may share its sets.
    pub compatible: bool,
    /// Its Boot Service let it take a role.
    pub booted: bool,
    /// An operator asked its roles to move away.
    pub drained: bool,
    /// It failed too often and waits for an operator.
    pub quarantined: bool,
    /// How long it has been eligible without a break (for failback).
    pub eligible_for: Duration,
    /// It renews its lease: it is up and reaches the quorum.
    pub renewing: bool,
    /// It may still believe it holds a lease (its last one has not run out
    /// with the drift margin).
    pub lease_may_hold: bool,
}

impl MemberFacts {
    /// A member alive and well for `for_`, its lease renewed.
    pub fn up(for_: Duration) -> Self {
        MemberFacts {
            liveness: Liveness::Alive,
            healthy: true,
            compatible: true,
            booted: true,
            drained: false,
            quarantined: false,
            eligible_for: for_,
            renewing: true,
            lease_may_hold: true,
        }
    }

    /// A member failed on every link whose lease has run out.
    pub fn failed() -> Self {
        MemberFacts {
            liveness: Liveness::Failed,
            eligible_for: Duration::ZERO,
            renewing: false,
            lease_may_hold: false,
            ..Self::up(Duration::ZERO)
        }
    }

    /// Whether it may take a new role.
    pub fn eligible(&self) -> bool {
        self.liveness == Liveness::Alive
            && self.renewing
            && self.healthy
            && self.compatible
            && self.booted
            && !self.drained
            && !self.quarantined
    }

    /// Whether a Primary may keep its role: a Primary whose lease ran out
    /// has stepped down by itself.
    fn can_hold(&self) -> bool {
        matches!(self.liveness, Liveness::Alive | Liveness::Suspect)
            && self.lease_may_hold
            && self.healthy
            && !self.drained
            && !self.quarantined
    }

    /// Why it is not eligible, for people.
    fn why_not(&self) -> &'static str {
        let alive = self.liveness == Liveness::Alive;
        match self.liveness {
            _ if self.quarantined => "quarantined",
            _ if self.drained => "drained",
            Liveness::Failed => "failed on every link",
            Liveness::Suspect => "silent on every link",
            Liveness::Unknown => "not heard from",
            _ if !self.healthy => "unhealthy",
            _ if !self.lease_may_hold => "without a lease",
            _ if !self.compatible => "incompatible",
            _ if !self.booted => "still booting",
            _ if alive && !self.renewing => "not renewing its lease",
            _ => "eligible",
        }
    }
}

/// What the arbiter decides for one set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The committed assignment stands.
    Keep,
    /// Commit these roles (the next epoch).
    Assign {
        /// The roles.
        roles: Roles,
        /// Why, for the event history.
        why: String,
    },
    /// A change is due but must wait (a lease that may still hold, a cold
    /// boot not settled).
    Wait {
        /// What it waits for.
        why: String,
    },
}

/// Everything [`decide`] looks at.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    /// The configuration (sets, members, priorities).
    pub config: &'a ClusterConfig,
    /// What is known of each member (a member missing is `Unknown`).
    pub facts: &'a BTreeMap<MemberId, MemberFacts>,
    /// The committed assignments, by set.
    pub current: &'a BTreeMap<String, Assignment>,
    /// Now, Unix milliseconds (compared with assignments' `since_ms`).
    pub now_ms: u64,
    /// The cold-boot window has passed: sets may be assigned although some
    /// members were never heard from.
    pub settled: bool,
}

impl Inputs<'_> {
    fn facts(&self, m: &MemberId) -> MemberFacts {
        self.facts.get(m).copied().unwrap_or(MemberFacts {
            liveness: Liveness::Unknown,
            eligible_for: Duration::ZERO,
            renewing: false,
            lease_may_hold: false,
            ..MemberFacts::up(Duration::ZERO)
        })
    }
}

/// Decides every set of the configuration.
pub fn decide(inputs: &Inputs<'_>) -> BTreeMap<String, Decision> {
    let mut out = BTreeMap::new();
    for set in inputs.config.failover_sets() {
        let d = match set.composition {
            Composition::Hierarchical => hierarchical(inputs, &set),
            _ => flat(inputs, &set),
        };
        out.insert(set.name.clone(), d);
    }
    out
}

fn ids(set: &FailoverSet) -> Vec<MemberId> {
    set.members.iter().map(|m| MemberId(m.clone())).collect()
}

fn names(ms: &[MemberId]) -> String {
    ms.iter()
        .map(|m| m.0.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The roles of a single or n-way set, or why they cannot change yet.
fn flat(inputs: &Inputs<'_>, set: &FailoverSet) -> Decision {
    let members = ids(set);
    let current = inputs.current.get(&set.name);
    match roles_of(inputs, &members, set.failback, current.map(|a| &a.roles)) {
        Err(why) => Decision::Wait { why },
        Ok(next) => settle(inputs, set, current, next),
    }
}

/// What a set's roles become: the new roles and the reasons, or why the
/// set must wait. Shared by flat sets and the children of a hierarchy.
fn roles_of(
    inputs: &Inputs<'_>,
    members: &[MemberId],
    failback: Failback,
    current: Option<&Roles>,
) -> Result<(Roles, Vec<String>), String> {
    let facts = |m: &MemberId| inputs.facts(m);
    let eligible: Vec<&MemberId> = members.iter().filter(|m| facts(m).eligible()).collect();
    let mut why = Vec::new();
    if current.is_none() && !inputs.settled {
        // Cold boot: the set starts when every member can take a role (or
        // the boot window has passed), so that the preferred member, not
        // the first ready, becomes Primary.
        let waiting: Vec<String> = members
            .iter()
            .filter(|m| !facts(m).eligible())
            .map(|m| format!("{m} ({})", facts(m).why_not()))
            .collect();
        if !waiting.is_empty() {
            return Err(format!("cold boot: waiting for {}", waiting.join(", ")));
        }
    }
    if current.is_none() {
        why.push(if inputs.settled {
            "first roles".to_owned()
        } else {
            "cold boot: every member up".to_owned()
        });
    }
    // An outgoing Primary of a finished handover steps down now.
    let old = current.and_then(|r| r.primary.clone());
    let mut primary = old.clone().filter(|p| facts(p).can_hold());
    if let (Some(p), None) = (&old, &primary) {
        let f = facts(p);
        // Drained or unhealthy but up: a planned handover, below. Else
        // (silent, not renewing) the role moves only once its lease ran out.
        if f.lease_may_hold && !f.drained && f.healthy {
            return Err(format!("{p} is {}; its lease may still hold", f.why_not()));
        }
        why.push(format!("{p} {}", f.why_not()));
    }
    let mut planned = None;
    if let Some(p) = &old {
        let f = facts(p);
        if (f.drained || !f.healthy) && f.can_hand_over() {
            // Drained or unhealthy but up: a planned handover.
            planned = Some(p.clone());
            primary = None;
        }
    }
    // Failback: a member ranked above the Primary, eligible long enough.
    if let (Some(p), Failback::Auto { delay_secs }) = (&primary, failback) {
        let rank = |m: &MemberId| members.iter().position(|x| x == m);
        let better = eligible.iter().find(|m| {
            rank(m) < rank(p) && facts(m).eligible_for >= Duration::from_secs(delay_secs)
        });
        if let Some(b) = better {
            why.push(format!("failback to {b}"));
            planned = Some(p.clone());
            primary = Some((*b).clone());
        }
    }
    let old_secondary = current.and_then(|r| r.secondary.clone());
    if primary.is_none() {
        primary = old_secondary
            .clone()
            .filter(|s| facts(s).eligible())
            .or_else(|| eligible.first().map(|m| (*m).clone()));
        if primary.is_none() && planned.is_some() {
            // Drained, but no member can take over: it keeps serving.
            primary = planned.take();
            why.clear();
        }
    }
    let outgoing = match (&planned, &primary) {
        (Some(o), Some(p)) if o != p => Some(o.clone()),
        _ => None,
    };
    // The outgoing Primary holds no other role during the handover.
    let taken = |m: &MemberId| Some(m) == primary.as_ref() || Some(m) == outgoing.as_ref();
    let secondary = old_secondary
        .filter(|s| facts(s).eligible() && !taken(s))
        .or_else(|| eligible.iter().find(|m| !taken(m)).map(|m| (*m).clone()));
    let alternates = eligible
        .iter()
        .filter(|m| !taken(m) && Some(**m) != secondary.as_ref())
        .map(|m| (*m).clone())
        .collect();
    Ok((
        Roles {
            primary,
            secondary,
            alternates,
            outgoing,
        },
        why,
    ))
}

impl MemberFacts {
    /// Whether it is up and may serve until a successor is Active/Optimized
    /// (a drained or unhealthy Primary hands over; a quarantined one does
    /// not serve).
    fn can_hand_over(&self) -> bool {
        matches!(self.liveness, Liveness::Alive | Liveness::Suspect)
            && self.lease_may_hold
            && !self.quarantined
    }
}

/// Compares `next` with the committed assignment: Keep, or Assign with the
/// reasons, finishing a handover once it has lasted [`HANDOVER`].
fn settle(
    inputs: &Inputs<'_>,
    set: &FailoverSet,
    current: Option<&Assignment>,
    (mut next, mut why): (Roles, Vec<String>),
) -> Decision {
    if let Some(cur) = current {
        if let Some(o) = &cur.roles.outgoing {
            // A handover in progress: keep the old Primary serving until it
            // has lasted long enough, then let it step down.
            let elapsed = inputs.now_ms.saturating_sub(cur.since_ms);
            if next.primary == cur.roles.primary && next.outgoing.is_none() {
                if elapsed < HANDOVER.as_millis() as u64 && inputs.facts(o).can_hand_over() {
                    next.outgoing = Some(o.clone());
                    next.alternates.retain(|m| m != o);
                    if next.secondary.as_ref() == Some(o) {
                        next.secondary = cur.roles.secondary.clone();
                    }
                } else {
                    why.push(format!("handover from {o} complete"));
                }
            }
        }
        if next == cur.roles {
            return Decision::Keep;
        }
    }
    if next.primary.is_none() {
        why.push("no member can be Primary".to_owned());
    }
    Decision::Assign {
        why: describe(&set.name, &why, &next),
        roles: next,
    }
}

fn describe(set: &str, why: &[String], r: &Roles) -> String {
    let mut parts = vec![];
    if let Some(p) = &r.primary {
        parts.push(format!("{p} Primary"));
    }
    if let Some(o) = &r.outgoing {
        parts.push(format!("{o} outgoing"));
    }
    if let Some(s) = &r.secondary {
        parts.push(format!("{s} Secondary"));
    }
    if !r.alternates.is_empty() {
        parts.push(format!("{} Alternates", names(&r.alternates)));
    }
    let head = if why.is_empty() {
        String::new()
    } else {
        format!("{} -> ", why.join("; "))
    };
    format!("{head}set {set}: {}", parts.join(", "))
}

/// A hierarchical set: its children decided first, then which child is
/// active.
fn hierarchical(inputs: &Inputs<'_>, set: &FailoverSet) -> Decision {
    let current = inputs.current.get(&set.name);
    let mut children = Vec::new();
    let mut child_why = Vec::new();
    for name in &set.members {
        let Some(child) = inputs.config.failover_set(name) else {
            continue;
        };
        let members = ids(&child);
        // A child's roles as they will be: its own decision this round.
        let child_current = inputs.current.get(name).map(|a| &a.roles);
        match roles_of(inputs, &members, child.failback, child_current) {
            Ok((roles, reasons)) => {
                child_why.extend(reasons);
                children.push((name.clone(), members, roles));
            }
            Err(why) => {
                return Decision::Wait {
                    why: format!("{name}: {why}"),
                }
            }
        }
    }
    let old = current.and_then(|a| a.roles.primary.clone());
    let has_primary = |c: &&(String, Vec<MemberId>, Roles)| c.2.primary.is_some();
    let mut why = child_why;
    // The child of the current Primary stays active while it has one.
    let mut active = old
        .as_ref()
        .and_then(|p| children.iter().find(|c| c.1.contains(p)))
        .filter(has_primary);
    if let (Some(p), None) = (&old, active) {
        let f = inputs.facts(p);
        if f.lease_may_hold && !f.can_hold() {
            return Decision::Wait {
                why: format!("{p} is {}; its lease may still hold", f.why_not()),
            };
        }
        why.push(format!("every member of the set of {p} is down"));
    }
    let first = children.iter().find(has_primary);
    if let (Some(a), Failback::Auto { delay_secs }) = (active, set.failback) {
        let rank = |name: &str| set.members.iter().position(|m| m == name);
        if let Some(f) = first.filter(|f| rank(&f.0) < rank(&a.0)) {
            let ready =
                f.2.primary.as_ref().is_some_and(|p| {
                    inputs.facts(p).eligible_for >= Duration::from_secs(delay_secs)
                });
            if ready {
                why.push(format!("failback to set {}", f.0));
                active = Some(f);
            }
        }
    }
    let active = active.or(first);
    let mut roles = Roles::default();
    if let Some(a) = active {
        roles.primary = a.2.primary.clone();
        roles.secondary = a.2.secondary.clone();
        roles.alternates = a.2.alternates.clone();
        for c in children.iter().filter(|c| c.0 != a.0) {
            let rest =
                c.2.primary
                    .iter()
                    .chain(&c.2.secondary)
                    .chain(&c.2.alternates);
            for m in rest {
                if roles.secondary.is_none() {
                    roles.secondary = Some(m.clone());
                } else {
                    roles.alternates.push(m.clone());
                }
            }
        }
        // A planned handover inside the active child shows in the parent.
        if let Some(o) = &a.2.outgoing {
            roles.outgoing = Some(o.clone());
        }
    }
    settle(inputs, set, current, (roles, why))
}

#[cfg(test)]
#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;
