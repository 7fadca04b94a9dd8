//! What each command asks the API, and how the answer is shown: the API's
//! JSON with `--json`, a table or a sentence otherwise. Requests and
//! answers are [`trellis_api`]'s types, the ones the server uses.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use trellis_api::{
    AclList, AllowInitiator, CreateDevice, CreateTarget, DeviceList, DeviceView, MapLun,
    MemberList, ResizeDevice, StatusView, TargetList, WriteResult, DEFAULT_BLOCK_SIZE,
};

use crate::client::{segment, Answer, Client, ClientError, Method, NO_BODY};
use crate::failover;
use crate::size::format_size;
use crate::table::{key_values, Table};
use crate::{AclCmd, Command, DeviceCmd, MemberCmd, TargetCmd};

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The request failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The answer is not what this version of the CLI expects.
    #[error("unexpected answer from the API: {0}")]
    Answer(#[from] serde_json::Error),
    /// The cluster took the request but did not finish in time.
    #[error("{0}")]
    Unfinished(String),
}

/// Runs `command`; returns what to print.
pub fn run(client: &Client, command: &Command, json: bool) -> Result<String, CommandError> {
    let (answer, human) = match command {
        Command::Status => get(client, "/v1/status", render_status)?,
        Command::Member(MemberCmd::List) => get(client, "/v1/members", render_members)?,
        Command::Member(MemberCmd::Drain { member, wait }) => {
            failover::drain(client, member, *wait)?
        }
        Command::Member(MemberCmd::Undrain { member }) => write(
            client,
            Method::Post,
            &format!("/v1/members/{}/undrain", segment(member)),
            NO_BODY,
            format!("{member} may take roles again"),
            format!("{member} was not drained"),
        )?,
        Command::Device(cmd) => device(client, cmd)?,
        Command::Target(cmd) => target(client, cmd)?,
        Command::Acl(cmd) => acl(client, cmd)?,
        Command::Set(cmd) => failover::set(client, cmd)?,
        Command::Role(cmd) => failover::role(client, cmd)?,
        Command::Events(args) => failover::events(client, args)?,
    };
    if json {
        let mut out = answer.text;
        if !out.ends_with('\n') {
            out.push('\n');
        }
        Ok(out)
    } else {
        Ok(human)
    }
}

/// The API's answer and what to show of it.
pub type Outcome = (Answer, String);

/// A read, shown with `render`.
pub fn get<T: DeserializeOwned>(
    client: &Client,
    path: &str,
    render: fn(T) -> String,
) -> Result<Outcome, CommandError> {
    let answer = client.call(Method::Get, path, NO_BODY)?;
    let human = render(serde_json::from_value(answer.value.clone())?);
    Ok((answer, human))
}

/// A write; `done` says what happened when it changed something, `same`
/// when it was already so.
pub fn write<B: Serialize + ?Sized>(
    client: &Client,
    method: Method,
    path: &str,
    body: Option<&B>,
    done: String,
    same: String,
) -> Result<Outcome, CommandError> {
    let answer = client.call(method, path, body)?;
    // A create answers the object, not a WriteResult: shown as `done`.
    let unchanged = WriteResult::deserialize(&answer.value)
        .is_ok_and(|w| w.result == trellis_api::Outcome::Unchanged);
    Ok((answer, format!("{}\n", if unchanged { same } else { done })))
}

fn device(client: &Client, cmd: &DeviceCmd) -> Result<Outcome, CommandError> {
    match cmd {
        DeviceCmd::Create(c) => {
            let body = CreateDevice {
                name: c.name.clone(),
                size: c.size,
                backing: c.backing.clone(),
                block_size: c
                    .block_size
                    .as_ref()
                    .map(|bs| bs.parse().unwrap_or(DEFAULT_BLOCK_SIZE)),
                thin: c.thin,
                read_only: c.read_only,
                uuid: None,
                set: c.policy.set.clone(),
                policy: c.policy.policy.map(Into::into),
                others: c.policy.others.map(Into::into),
            };
            let answer = client.call(Method::Post, "/v1/devices", Some(&body))?;
            let d: DeviceView = serde_json::from_value(answer.value.clone())?;
            let human = format!(
                "created device {} ({}, uuid {})\n",
                d.name,
                format_size(d.size),
                d.uuid
            );
            Ok((answer, human))
        }
        DeviceCmd::List => get(client, "/v1/devices", render_devices),
        DeviceCmd::Resize { name, size } => write(
            client,
            Method::Post,
            &format!("/v1/devices/{}/resize", segment(name)),
            Some(&ResizeDevice { size: *size }),
            format!("resized device {name} to {}", format_size(*size)),
            format!("device {name} is already {}", format_size(*size)),
        ),
        DeviceCmd::Delete { name } => write(
            client,
            Method::Delete,
            &format!("/v1/devices/{}", segment(name)),
            NO_BODY,
            format!("deleted device {name}"),
            format!("deleted device {name}"),
        ),
        DeviceCmd::SetPolicy { name, policy } => failover::set_policy(client, name, policy),
    }
}

fn target(client: &Client, cmd: &TargetCmd) -> Result<Outcome, CommandError> {
    match cmd {
        TargetCmd::Create { iqn, alias } => {
            let body = CreateTarget {
                iqn: iqn.clone(),
                alias: alias.clone(),
            };
            write(
                client,
                Method::Post,
                "/v1/targets",
                Some(&body),
                format!("created target {iqn}"),
                format!("created target {iqn}"),
            )
        }
        TargetCmd::List => get(client, "/v1/targets", render_targets),
        TargetCmd::Delete { iqn } => write(
            client,
            Method::Delete,
            &format!("/v1/targets/{}", segment(iqn)),
            NO_BODY,
            format!("deleted target {iqn}"),
            format!("deleted target {iqn}"),
        ),
        TargetCmd::Map { iqn, device, lun } => write(
            client,
            Method::Post,
            &format!("/v1/targets/{}/luns", segment(iqn)),
            Some(&MapLun {
                device: device.clone(),
                lun: *lun,
            }),
            format!("mapped device {device} as LUN {lun} of {iqn}"),
            format!("device {device} is already LUN {lun} of {iqn}"),
        ),
        TargetCmd::Unmap { iqn, lun } => write(
            client,
            Method::Delete,
            &format!("/v1/targets/{}/luns/{lun}", segment(iqn)),
            NO_BODY,
            format!("unmapped LUN {lun} of {iqn}"),
            format!("unmapped LUN {lun} of {iqn}"),
        ),
    }
}

fn acl(client: &Client, cmd: &AclCmd) -> Result<Outcome, CommandError> {
    match cmd {
        AclCmd::Allow(a) => {
            let body = AllowInitiator {
                initiator: a.initiator.clone(),
                chap_user: a.chap_user.clone(),
                chap_secret: a.chap_secret.clone(),
                mutual_chap_user: a.mutual_user.clone(),
                mutual_chap_secret: a.mutual_secret.clone(),
                luns: a.luns.as_ref().map(|l| l.iter().copied().collect()),
            };
            let chap = if a.chap_user.is_some() {
                " with CHAP"
            } else {
                ""
            };
            write(
                client,
                Method::Post,
                &format!("/v1/targets/{}/acl", segment(&a.iqn)),
                Some(&body),
                format!("allowed {} on {}{chap}", a.initiator, a.iqn),
                format!(
                    "{} was already allowed on {} with these settings",
                    a.initiator, a.iqn
                ),
            )
        }
        AclCmd::List { iqn } => get(
            client,
            &format!("/v1/targets/{}/acl", segment(iqn)),
            render_acl,
        ),
        AclCmd::Deny { iqn, initiator } => write(
            client,
            Method::Delete,
            &format!("/v1/targets/{}/acl/{}", segment(iqn), segment(initiator)),
            NO_BODY,
            format!("denied {initiator} on {iqn}"),
            format!("denied {initiator} on {iqn}"),
        ),
    }
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

fn ids(v: &[u64]) -> String {
    if v.is_empty() {
        return "-".to_owned();
    }
    v.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
}

fn render_status(s: StatusView) -> String {
    let r = &s.raft;
    let leader = match (r.leader, &r.leader_member) {
        (None, _) => "none (election in progress or no quorum)".to_owned(),
        (Some(id), Some(m)) => format!("{m} (node {id})"),
        (Some(id), None) => format!("node {id}"),
    };
    let m = &s.members;
    key_values(&[
        (
            "member",
            format!(
                "{} (node {})",
                s.member.as_deref().unwrap_or("-"),
                r.node_id
            ),
        ),
        ("raft term", r.term.to_string()),
        ("leader", leader),
        (
            "commit/applied",
            format!("{}/{}", opt(r.commit_index), opt(r.applied_index)),
        ),
        ("voters", ids(&r.voters)),
        ("learners", ids(&r.learners)),
        (
            "members",
            format!(
                "{} configured; peers: {} alive, {} suspect, {} failed",
                m.configured, m.alive, m.suspect, m.failed
            ),
        ),
        ("devices", s.devices.to_string()),
        ("targets", s.targets.to_string()),
    ])
}

/// A duration in milliseconds for people (`3s`, `2m5s`, `1h2m`, `1d3h`).
pub fn duration(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        3600..86400 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{}h", s / 86400, s % 86400 / 3600),
    }
}

fn render_members(list: MemberList) -> String {
    if list.members.is_empty() {
        return "no members\n".to_owned();
    }
    let mut t = Table::new(&[
        "ID", "NODE", "STATE", "FOR", "LINKS", "SESSIONS", "API", "ROLE",
    ]);
    for m in list.members {
        let links = m
            .links
            .iter()
            .map(|l| format!("{}:{}", l.link, l.state))
            .collect::<Vec<_>>()
            .join(" ");
        let mut role = Vec::new();
        if m.local {
            role.push("this member");
        }
        if m.witness {
            role.push("witness");
        }
        if m.drained {
            role.push("drained");
        }
        if m.healthy == Some(false) {
            role.push("unhealthy");
        }
        t.row(vec![
            m.id,
            opt(m.node_id),
            m.state,
            m.since_ms.map_or_else(|| "-".to_owned(), duration),
            if links.is_empty() {
                "-".to_owned()
            } else {
                links
            },
            opt(m.sessions),
            opt(m.api),
            role.join(", "),
        ]);
    }
    t.render()
}

fn render_devices(list: DeviceList) -> String {
    if list.devices.is_empty() {
        return "no devices\n".to_owned();
    }
    let mut t = Table::new(&[
        "NAME", "SIZE", "BLOCK", "BACKING", "FLAGS", "SET", "POLICY", "MAPPED", "UUID",
    ]);
    for d in list.devices {
        let mut flags = Vec::new();
        if d.thin {
            flags.push("thin");
        }
        if d.read_only {
            flags.push("read-only");
        }
        let mapped = d
            .mapped
            .iter()
            .map(|m| format!("{} LUN {}", m.target, m.lun))
            .collect::<Vec<_>>()
            .join(", ");
        t.row(vec![
            d.name,
            format_size(d.size),
            d.block_size.to_string(),
            d.backing,
            if flags.is_empty() {
                "-".to_owned()
            } else {
                flags.join(",")
            },
            d.set,
            failover::policy_name(d.policy, d.others).to_owned(),
            if mapped.is_empty() {
                "-".to_owned()
            } else {
                mapped
            },
            d.uuid.to_string(),
        ]);
    }
    t.render()
}

fn render_targets(list: TargetList) -> String {
    if list.targets.is_empty() {
        return "no targets\n".to_owned();
    }
    let mut t = Table::new(&["IQN", "ALIAS", "LUNS", "INITIATORS"]);
    for target in list.targets {
        let luns = target
            .luns
            .iter()
            .map(|l| format!("{}:{}", l.lun, l.device))
            .collect::<Vec<_>>()
            .join(" ");
        t.row(vec![
            target.iqn,
            opt(target.alias),
            if luns.is_empty() {
                "-".to_owned()
            } else {
                luns
            },
            target.initiators.to_string(),
        ]);
    }
    t.render()
}

fn render_acl(list: AclList) -> String {
    if list.acl.is_empty() {
        return format!("no initiator is allowed on {}\n", list.target);
    }
    let mut t = Table::new(&["INITIATOR", "LUNS", "CHAP USER", "MUTUAL CHAP USER"]);
    for e in list.acl {
        let luns = e.luns.map_or_else(
            || "all".to_owned(),
            |l| l.iter().map(u16::to_string).collect::<Vec<_>>().join(","),
        );
        t.row(vec![
            e.initiator,
            luns,
            opt(e.chap_user),
            opt(e.mutual_chap_user),
        ]);
    }
    t.render()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn device_table() {
        let list: DeviceList = serde_json::from_value(json!({"devices": [
            {"name": "d1", "uuid": "00000000-0000-4000-8000-000000000001", "size": 1u64 << 30,
             "backing": "memory", "block_size": 512, "thin": true, "read_only": false,
             "mapped": [{"target": "iqn.x:t", "lun": 0}]},
            {"name": "data-02", "uuid": "00000000-0000-4000-8000-000000000002", "size": 3u64 << 29,
             "backing": "/srv/d2.img", "block_size": 4096, "thin": false, "read_only": true,
             "set": "s1", "policy": "active-active", "mapped": [], "future": 1},
        ]}))
        .expect("view");
        assert_eq!(
            render_devices(list),
            "NAME     SIZE     BLOCK  BACKING      FLAGS      SET      POLICY          MAPPED         UUID\n\
             d1       1 GiB    512    memory       thin       default  active-passive  iqn.x:t LUN 0  00000000-0000-4000-8000-000000000001\n\
             data-02  1.5 GiB  4096   /srv/d2.img  read-only  s1       active-active   -              00000000-0000-4000-8000-000000000002\n"
        );
        assert_eq!(
            render_devices(DeviceList { devices: vec![] }),
            "no devices\n"
        );
    }

    #[test]
    fn acl_table_and_durations() {
        let list: AclList = serde_json::from_value(json!({"target": "t", "acl": [
            {"initiator": "iqn.a", "luns": null, "chap_user": "u", "mutual_chap_user": null},
            {"initiator": "iqn.b", "luns": [0, 1], "chap_user": null, "mutual_chap_user": null},
        ]}))
        .expect("view");
        assert_eq!(
            render_acl(list),
            "INITIATOR  LUNS  CHAP USER  MUTUAL CHAP USER\n\
             iqn.a      all   u          -\n\
             iqn.b      0,1   -          -\n"
        );
        assert_eq!(duration(1500), "1s");
        assert_eq!(duration(61_000), "1m1s");
        assert_eq!(duration(7_200_000), "2h0m");
        assert_eq!(duration(90_000_000), "1d1h");
    }
}
