//! `trellis set ...` (Failover Sets) and `trellis device set-policy`: what
//! each asks the API and how the answer is shown.

use clap::{Args, Subcommand, ValueEnum};
use trellis_api::{
    AddSetMember, Composition, CreateSet, EventList, FailbackMode, Others, Policy, RoleList,
    SetDevicePolicy, SetFailback, SetList, SetView,
};

use crate::client::{segment, Client, Method, NO_BODY};
use crate::commands::{duration, get, write, CommandError, Outcome};
use crate::table::{key_values, Table};

/// `--composition`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompositionArg {
    /// One member, no failover.
    Single,
    /// Members in priority order: Primary, Secondary, the rest Alternates.
    NWay,
    /// Sets in priority order (a card failure is handled inside its
    /// chassis first).
    Hierarchical,
}

/// `--policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PolicyArg {
    /// One writer: the Primary is Active/Optimized (also `ap`).
    #[value(alias = "ap")]
    ActivePassive,
    /// Every healthy member is Active/Optimized (also `aa`).
    #[value(alias = "aa")]
    ActiveActive,
}

/// `--others`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OthersArg {
    /// Non-primaries are Standby (hosts keep the path, send no I/O).
    Standby,
    /// Non-primaries are Active/Non-optimized.
    NonOptimized,
}

/// `--failback`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FailbackArg {
    /// Only an operator moves the Primary role back.
    Manual,
    /// A recovered member of higher priority takes it back after a delay.
    Auto,
}

impl From<PolicyArg> for Policy {
    fn from(p: PolicyArg) -> Self {
        match p {
            PolicyArg::ActivePassive => Policy::ActivePassive,
            PolicyArg::ActiveActive => Policy::ActiveActive,
        }
    }
}

impl From<OthersArg> for Others {
    fn from(o: OthersArg) -> Self {
        match o {
            OthersArg::Standby => Others::Standby,
            OthersArg::NonOptimized => Others::NonOptimized,
        }
    }
}

impl From<FailbackArg> for FailbackMode {
    fn from(f: FailbackArg) -> Self {
        match f {
            FailbackArg::Manual => FailbackMode::Manual,
            FailbackArg::Auto => FailbackMode::Auto,
        }
    }
}

/// The set and port policy of a device (`device create`, `device
/// set-policy`).
#[derive(Debug, Clone, Default, Args)]
pub struct PolicyArgs {
    /// The Failover Set whose members serve the device (default: the set
    /// of every data member).
    #[arg(long)]
    pub set: Option<String>,
    /// Port policy: active-passive (ap, the default) or active-active (aa).
    #[arg(long, value_enum)]
    pub policy: Option<PolicyArg>,
    /// For active-passive: the non-primaries' state (default standby).
    #[arg(long, value_enum)]
    pub others: Option<OthersArg>,
}

/// `trellis set ...`
#[derive(Debug, Subcommand)]
pub enum SetCmd {
    /// Create a Failover Set.
    Create {
        /// Its name.
        name: String,
        /// How it is composed.
        #[arg(long, value_enum, default_value = "n-way")]
        composition: CompositionArg,
        /// Member ids (set names for a hierarchical set), comma-separated,
        /// in priority order: the first is the preferred Primary.
        #[arg(long, value_delimiter = ',', required = true)]
        members: Vec<String>,
        /// Failback.
        #[arg(long, value_enum)]
        failback: Option<FailbackArg>,
        /// Seconds a recovered member must stay eligible before an
        /// automatic failback (default 60).
        #[arg(long, value_name = "SECS")]
        failback_delay: Option<u64>,
    },
    /// List sets.
    List,
    /// One set.
    Show {
        /// The set.
        name: String,
    },
    /// Delete a set no device uses.
    Delete {
        /// The set.
        name: String,
    },
    /// Add a member (a set, to a hierarchical set).
    AddMember {
        /// The set.
        set: String,
        /// The member id or set name.
        member: String,
        /// Its place in the priority order, 0 first (default: last).
        #[arg(long)]
        position: Option<usize>,
    },
    /// Remove a member.
    RemoveMember {
        /// The set.
        set: String,
        /// The member id or set name.
        member: String,
    },
    /// Change a set's failback.
    Failback {
        /// The set.
        set: String,
        /// manual or auto.
        #[arg(value_enum)]
        mode: FailbackArg,
        /// For auto: seconds of stable eligibility first (default 60).
        #[arg(long, value_name = "SECS")]
        delay: Option<u64>,
    },
}

/// `trellis role ...`
#[derive(Debug, Subcommand)]
pub enum RoleCmd {
    /// Per set: Primary, Secondary, Alternates, epoch, since when, why.
    List,
}

/// `trellis events`.
#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Only the events of this Failover Set.
    #[arg(long, value_name = "SET")]
    pub set: Option<String>,
    /// Only the last N events (after --set).
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub last: usize,
}

/// Runs `trellis events`: the replicated history of role assignments, the
/// oldest shown first; `--json` prints the same selection.
pub fn events(client: &Client, args: &EventsArgs) -> Result<Outcome, CommandError> {
    let mut answer = client.call(Method::Get, "/v1/events", NO_BODY)?;
    let mut list: EventList = serde_json::from_value(answer.value.clone())?;
    select_events(&mut list, args.set.as_deref(), args.last);
    answer.value = serde_json::to_value(&list)?;
    answer.text = serde_json::to_string_pretty(&list)?;
    let human = render_events_at(list, now_ms());
    Ok((answer, human))
}

/// Keeps the events of `set` (all: None), the last `last` of them.
fn select_events(list: &mut EventList, set: Option<&str>, last: usize) {
    if let Some(set) = set {
        list.events.retain(|e| e.set == set);
    }
    let skip = list.events.len().saturating_sub(last);
    list.events.drain(..skip);
}

fn render_events_at(list: EventList, now_ms: u64) -> String {
    if list.events.is_empty() {
        return "no role assignments yet\n".to_owned();
    }
    let mut t = Table::new(&["WHEN", "SET", "EPOCH", "WHAT"]);
    for e in list.events {
        t.row(vec![
            format!("{} ago", duration(now_ms.saturating_sub(e.since_ms))),
            e.set,
            e.epoch.to_string(),
            e.why,
        ]);
    }
    t.render()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Runs `trellis role ...`.
pub fn role(client: &Client, cmd: &RoleCmd) -> Result<Outcome, CommandError> {
    match cmd {
        RoleCmd::List => get(client, "/v1/roles", render_roles),
    }
}

fn render_roles(list: RoleList) -> String {
    render_roles_at(list, now_ms())
}

fn render_roles_at(list: RoleList, now_ms: u64) -> String {
    let dash = |m: &Option<String>| m.clone().unwrap_or_else(|| "-".to_owned());
    let mut t = Table::new(&[
        "SET",
        "EPOCH",
        "PRIMARY",
        "SECONDARY",
        "ALTERNATES",
        "SINCE",
        "WHY",
    ]);
    for r in list.roles {
        let primary = match &r.outgoing {
            Some(o) => format!("{} (from {o})", dash(&r.primary)),
            None => dash(&r.primary),
        };
        let since = if r.since_ms == 0 {
            "-".to_owned()
        } else {
            format!("{} ago", duration(now_ms.saturating_sub(r.since_ms)))
        };
        t.row(vec![
            r.set,
            r.epoch.to_string(),
            primary,
            dash(&r.secondary),
            or_dash(&r.alternates),
            since,
            r.why,
        ]);
    }
    t.render()
}

/// Runs `trellis member drain`: drains `member`, then waits up to `wait`
/// seconds until it is Primary (or outgoing Primary) of no set; reports
/// where the roles went, or fails naming the sets it still leads.
pub fn drain(client: &Client, member: &str, wait: u64) -> Result<Outcome, CommandError> {
    let (answer, _) = write(
        client,
        Method::Post,
        &format!("/v1/members/{}/drain", segment(member)),
        NO_BODY,
        String::new(),
        String::new(),
    )?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(wait);
    loop {
        let roles = client.call(Method::Get, "/v1/roles", NO_BODY)?;
        let list: RoleList = serde_json::from_value(roles.value)?;
        let leads: Vec<String> = list
            .roles
            .iter()
            .filter(|r| {
                r.primary.as_deref() == Some(member) || r.outgoing.as_deref() == Some(member)
            })
            .map(|r| r.set.clone())
            .collect();
        if leads.is_empty() {
            let moved: Vec<String> = list
                .roles
                .iter()
                .filter(|r| r.primary.is_some())
                .map(|r| {
                    format!(
                        "set {} epoch {}: {} Primary",
                        r.set,
                        r.epoch,
                        r.primary.clone().unwrap_or_default()
                    )
                })
                .collect();
            let roles = moved.join("; ");
            return drain_sessions(client, member, deadline, wait, roles)
                .map(|human| (answer, human));
        }
        if wait == 0 {
            return Ok((
                answer,
                format!("{member} drained; still Primary of {}\n", leads.join(", ")),
            ));
        }
        if std::time::Instant::now() >= deadline {
            return Err(CommandError::Unfinished(format!(
                "{member} is drained but still Primary of {} after {wait} s (no other eligible member?)",
                leads.join(", ")
            )));
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// The second half of a drain: waits until `member` has no sessions
/// (hosts asked to log out go, and log in elsewhere) or the deadline.
fn drain_sessions(
    client: &Client,
    member: &str,
    deadline: std::time::Instant,
    wait: u64,
    roles: String,
) -> Result<String, CommandError> {
    loop {
        let answer = client.call(Method::Get, "/v1/members", NO_BODY)?;
        let list: trellis_api::MemberList = serde_json::from_value(answer.value)?;
        let sessions = list
            .members
            .iter()
            .find(|m| m.id == member)
            .and_then(|m| m.sessions);
        match sessions {
            Some(0) => return Ok(format!("{member} drained: no sessions; {roles}\n")),
            None => {
                return Ok(format!(
                    "{member} drained ({member}'s sessions are not known here); {roles}\n"
                ))
            }
            Some(n) if wait == 0 => {
                return Ok(format!(
                    "{member} drained; {n} sessions asked to log out; {roles}\n"
                ))
            }
            Some(n) if std::time::Instant::now() >= deadline => {
                return Err(CommandError::Unfinished(format!(
                    "{member} is drained and Primary of no set, but {n} sessions are still logged in to it after {wait} s"
                )))
            }
            Some(_) => std::thread::sleep(std::time::Duration::from_millis(200)),
        }
    }
}

/// Runs `trellis set ...`.
pub fn set(client: &Client, cmd: &SetCmd) -> Result<Outcome, CommandError> {
    match cmd {
        SetCmd::Create {
            name,
            composition,
            members,
            failback,
            failback_delay,
        } => {
            let body = CreateSet {
                name: name.clone(),
                composition: match composition {
                    CompositionArg::Single => Composition::Single,
                    CompositionArg::NWay => Composition::NWay,
                    CompositionArg::Hierarchical => Composition::Hierarchical,
                },
                members: members.clone(),
                failback: failback.map(Into::into),
                failback_delay_secs: *failback_delay,
            };
            write(
                client,
                Method::Post,
                "/v1/sets",
                Some(&body),
                format!("created set {name}: {}", members.join(", ")),
                format!("created set {name}"),
            )
        }
        SetCmd::List => get(client, "/v1/sets", render_sets),
        SetCmd::Show { name } => get(client, &format!("/v1/sets/{}", segment(name)), render_set),
        SetCmd::Delete { name } => write(
            client,
            Method::Delete,
            &format!("/v1/sets/{}", segment(name)),
            NO_BODY,
            format!("deleted set {name}"),
            format!("deleted set {name}"),
        ),
        SetCmd::AddMember {
            set,
            member,
            position,
        } => write(
            client,
            Method::Post,
            &format!("/v1/sets/{}/members", segment(set)),
            Some(&AddSetMember {
                member: member.clone(),
                position: *position,
            }),
            format!("added {member} to set {set}"),
            format!("{member} is already in set {set}"),
        ),
        SetCmd::RemoveMember { set, member } => write(
            client,
            Method::Delete,
            &format!("/v1/sets/{}/members/{}", segment(set), segment(member)),
            NO_BODY,
            format!("removed {member} from set {set}"),
            format!("removed {member} from set {set}"),
        ),
        SetCmd::Failback { set, mode, delay } => write(
            client,
            Method::Post,
            &format!("/v1/sets/{}/failback", segment(set)),
            Some(&SetFailback {
                failback: (*mode).into(),
                delay_secs: *delay,
            }),
            format!("set {set}: failback {}", mode_name(*mode, *delay)),
            format!(
                "set {set}: failback was already {}",
                mode_name(*mode, *delay)
            ),
        ),
    }
}

fn mode_name(mode: FailbackArg, delay: Option<u64>) -> String {
    match (mode, delay) {
        (FailbackArg::Manual, _) => "manual".to_owned(),
        (FailbackArg::Auto, Some(d)) => format!("auto after {d} s"),
        (FailbackArg::Auto, None) => "auto".to_owned(),
    }
}

/// The request of `device set-policy` for `args`.
pub fn policy_request(args: &PolicyArgs) -> SetDevicePolicy {
    SetDevicePolicy {
        set: args.set.clone(),
        policy: args.policy.map(Into::into),
        others: args.others.map(Into::into),
    }
}

/// Runs `trellis device set-policy`.
pub fn set_policy(client: &Client, name: &str, args: &PolicyArgs) -> Result<Outcome, CommandError> {
    write(
        client,
        Method::Post,
        &format!("/v1/devices/{}/policy", segment(name)),
        Some(&policy_request(args)),
        format!("device {name}: set and policy changed"),
        format!("device {name}: set and policy were already so"),
    )
}

/// How a device's policy reads in a table.
pub fn policy_name(policy: Policy, others: Option<Others>) -> &'static str {
    match (policy, others) {
        (Policy::ActiveActive, _) => "active-active",
        (Policy::ActivePassive, Some(Others::NonOptimized)) => "active-passive/ano",
        (Policy::ActivePassive, _) => "active-passive",
    }
}

fn composition_name(c: Composition) -> &'static str {
    match c {
        Composition::Single => "single",
        Composition::NWay => "n-way",
        Composition::Hierarchical => "hierarchical",
    }
}

fn failback_name(s: &SetView) -> String {
    match (s.failback, s.failback_delay_secs) {
        (FailbackMode::Auto, Some(d)) => format!("auto ({d} s)"),
        (FailbackMode::Auto, None) => "auto".to_owned(),
        (FailbackMode::Manual, _) => "manual".to_owned(),
    }
}

fn or_dash(items: &[String]) -> String {
    if items.is_empty() {
        "-".to_owned()
    } else {
        items.join(", ")
    }
}

fn render_sets(list: SetList) -> String {
    let mut t = Table::new(&["NAME", "COMPOSITION", "MEMBERS", "FAILBACK", "DEVICES"]);
    for s in list.sets {
        t.row(vec![
            s.name.clone(),
            composition_name(s.composition).to_owned(),
            or_dash(&s.members),
            failback_name(&s),
            or_dash(&s.devices),
        ]);
    }
    t.render()
}

fn render_set(s: SetView) -> String {
    let composition = if s.builtin {
        format!(
            "{} (built in: every data member)",
            composition_name(s.composition)
        )
    } else {
        composition_name(s.composition).to_owned()
    };
    key_values(&[
        ("name", s.name.clone()),
        ("composition", composition),
        ("members", or_dash(&s.members)),
        ("failback", failback_name(&s)),
        ("devices", or_dash(&s.devices)),
    ])
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn set_table_and_detail() {
        let list: SetList = serde_json::from_value(json!({"sets": [
            {"name": "default", "composition": "n-way", "members": ["m1", "m2", "m3"],
             "failback": "manual", "builtin": true, "devices": ["d1"]},
            {"name": "chassis", "composition": "hierarchical", "members": ["c1", "c2"],
             "failback": "auto", "failback_delay_secs": 30, "devices": []},
        ]}))
        .expect("view");
        assert_eq!(
            render_sets(list.clone()),
            "NAME     COMPOSITION   MEMBERS     FAILBACK     DEVICES\n\
             default  n-way         m1, m2, m3  manual       d1\n\
             chassis  hierarchical  c1, c2      auto (30 s)  -\n"
        );
        let shown = render_set(list.sets[0].clone());
        assert!(
            shown.contains("n-way (built in: every data member)"),
            "{shown}"
        );
    }

    #[test]
    fn events_are_selected_by_set_then_the_last_n() {
        let event = |set: &str, epoch: u64, why: &str| json!({"set": set, "epoch": epoch, "primary": "m1", "since_ms": 1_000 * epoch, "why": why});
        let all: EventList = serde_json::from_value(json!({"events": [
            event("default", 1, "cold boot -> set default: m1 Primary"),
            event("s1", 2, "cold boot -> set s1: m1 Primary"),
            event("default", 3, "m1 failed on every link -> set default: m2 Primary"),
            event("default", 4, "m2 drained -> set default: m3 Primary"),
        ]}))
        .expect("view");
        let mut list = all.clone();
        select_events(&mut list, Some("default"), 2);
        let epochs: Vec<u64> = list.events.iter().map(|e| e.epoch).collect();
        assert_eq!(epochs, [3, 4]);
        let out = render_events_at(list, 10_000);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3, "{out}");
        assert!(
            lines[0].starts_with("WHEN    SET      EPOCH  WHAT"),
            "{out}"
        );
        assert!(
            lines[1].starts_with("7s ago  default  3      m1 failed on every link"),
            "{out}"
        );
        let mut none = all;
        select_events(&mut none, Some("s9"), 20);
        assert_eq!(render_events_at(none, 0), "no role assignments yet\n");
    }

    #[test]
    fn role_table() {
        let list: RoleList = serde_json::from_value(json!({"roles": [
            {"set": "default", "epoch": 7, "primary": "m2", "secondary": "m3",
             "alternates": [], "since_ms": 10_000, "why": "m1 failed on every link -> set default: m2 Primary, m3 Secondary"},
            {"set": "s1", "epoch": 0, "why": "no roles committed yet"},
        ]}))
        .expect("view");
        let out = render_roles_at(list, 13_500);
        let lines: Vec<&str> = out.lines().collect();
        assert!(
            lines[0].starts_with("SET      EPOCH  PRIMARY  SECONDARY  ALTERNATES  SINCE"),
            "{out}"
        );
        assert!(
            lines[1]
                .starts_with("default  7      m2       m3         -           3s ago  m1 failed"),
            "{out}"
        );
        assert!(
            lines[2]
                .starts_with("s1       0      -        -          -           -       no roles"),
            "{out}"
        );
    }

    #[test]
    fn policy_arguments_become_the_request() {
        let args = PolicyArgs {
            set: Some("s1".into()),
            policy: Some(PolicyArg::ActivePassive),
            others: Some(OthersArg::NonOptimized),
        };
        assert_eq!(
            serde_json::to_value(policy_request(&args)).unwrap(),
            json!({"set": "s1", "policy": "active-passive", "others": "non-optimized"})
        );
        assert_eq!(
            serde_json::to_value(policy_request(&PolicyArgs::default())).unwrap(),
            json!({})
        );
    }
}
