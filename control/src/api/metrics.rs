//! The control plane's Prometheus metrics: members by state, link states,
//! Raft's term, leader and indexes. The data path's counters come from
//! trellisd and are appended after these.

use std::fmt::Write;

use super::views::{link_state_name, member_state_name};
use crate::membership::{LinkState, MemberState, MemberStatus};
use crate::service::RaftStatus;

/// Escapes a label value (backslash, double quote, newline).
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn header(out: &mut String, name: &str, help: &str) {
    // Writing to a String cannot fail.
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
}

/// The control plane's metrics in Prometheus text format.
pub(super) fn render(raft: &RaftStatus, peers: &[MemberStatus]) -> String {
    let mut out = String::new();
    header(
        &mut out,
        "trellis_members",
        "Peers of this member by failure-detector state.",
    );
    for state in [
        MemberState::Alive,
        MemberState::Suspect,
        MemberState::Failed,
    ] {
        let n = peers.iter().filter(|p| p.state == state).count();
        let _ = writeln!(
            out,
            "trellis_members{{state=\"{}\"}} {n}",
            member_state_name(state)
        );
    }
    header(
        &mut out,
        "trellis_link_up",
        "Whether heartbeats arrive from a peer on a link (1), or it is down or flapping (0).",
    );
    for p in peers {
        for l in &p.links {
            let _ = writeln!(
                out,
                "trellis_link_up{{member=\"{}\",link=\"{}\"}} {}",
                label(&p.member.0),
                label(&l.link.0),
                u8::from(l.state == LinkState::Up)
            );
        }
    }
    header(
        &mut out,
        "trellis_link_state",
        "The state of a peer's link (1 for the current state).",
    );
    for p in peers {
        for l in &p.links {
            for state in [LinkState::Up, LinkState::Down, LinkState::Flapping] {
                let _ = writeln!(
                    out,
                    "trellis_link_state{{member=\"{}\",link=\"{}\",state=\"{}\"}} {}",
                    label(&p.member.0),
                    label(&l.link.0),
                    link_state_name(state),
                    u8::from(l.state == state)
                );
            }
        }
    }
    let gauges: [(&str, &str, u64); 5] = [
        (
            "trellis_raft_node_id",
            "This member's Raft node id.",
            raft.node_id,
        ),
        ("trellis_raft_term", "The current Raft term.", raft.term),
        (
            "trellis_raft_has_leader",
            "Whether a Raft leader is known (1) or not (0).",
            u64::from(raft.leader.is_some()),
        ),
        (
            "trellis_raft_commit_index",
            "The highest Raft log index known committed.",
            raft.commit_index.unwrap_or(0),
        ),
        (
            "trellis_raft_applied_index",
            "The highest Raft log index applied to this replica.",
            raft.applied_index.unwrap_or(0),
        ),
    ];
    for (name, help, value) in gauges {
        header(&mut out, name, help);
        let _ = writeln!(out, "{name} {value}");
    }
    header(
        &mut out,
        "trellis_raft_leader",
        "The Raft leader's node id (absent while no leader is known).",
    );
    if let Some(leader) = raft.leader {
        let _ = writeln!(out, "trellis_raft_leader {leader}");
    }
    header(
        &mut out,
        "trellis_raft_is_leader",
        "Whether this member is the Raft leader.",
    );
    let _ = writeln!(
        out,
        "trellis_raft_is_leader {}",
        u8::from(raft.leader == Some(raft.node_id))
    );
    out
}
