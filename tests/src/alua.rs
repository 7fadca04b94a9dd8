//! ALUA as a host sees it, with the raw initiator: REPORT TARGET PORT
//! GROUPS through a member, and waiting for a member's port to reach a
//! state.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{ensure, Context, Result};

use crate::raw::Conn;

/// Asymmetric access state codes (SPC-4).
pub mod state {
    /// Active/Optimized.
    pub const AO: u8 = 0x0;
    /// Active/Non-optimized.
    pub const ANO: u8 = 0x1;
    /// Standby.
    pub const STANDBY: u8 = 0x2;
    /// Unavailable.
    pub const UNAVAILABLE: u8 = 0x3;
    /// Transitioning.
    pub const TRANSITIONING: u8 = 0xF;
}

/// One target port group of an RTPG answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// Its id.
    pub id: u16,
    /// Its asymmetric access state code.
    pub state: u8,
    /// The PREF bit.
    pub preferred: bool,
    /// Its relative target ports.
    pub ports: Vec<u16>,
}

/// A REPORT TARGET PORT GROUPS answer (extended header).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// IMPLICIT TRANSITION TIME, seconds.
    pub transition_secs: u8,
    /// Every group.
    pub groups: Vec<Group>,
}

impl Report {
    /// The state of group `id`.
    pub fn state_of(&self, id: u16) -> Option<u8> {
        self.groups.iter().find(|g| g.id == id).map(|g| g.state)
    }
}

/// REPORT TARGET PORT GROUPS (extended header) on `lun` over `c`; unit
/// attentions pending on the nexus are taken first (up to a few).
pub fn rtpg_on(c: &mut Conn, lun: u16) -> Result<Report> {
    let cdb = [0xA3, 0x20 | 0x0A, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0];
    let mut r = c.scsi_lun(lun, &cdb, &[], 1024)?;
    for _ in 0..8 {
        let unit_attention = r.status == 2 && r.sense.get(2).is_some_and(|k| k & 0x0F == 6);
        if !unit_attention {
            break;
        }
        r = c.scsi_lun(lun, &cdb, &[], 1024)?;
    }
    ensure!(
        r.status == 0,
        "RTPG status {:#x}, sense {:02x?}",
        r.status,
        r.sense
    );
    let d = &r.data;
    ensure!(
        d.len() >= 8 && d[4] & 0x70 == 0x10,
        "not an extended header: {d:02x?}"
    );
    let end = (4 + u32::from_be_bytes([d[0], d[1], d[2], d[3]]) as usize).min(d.len());
    let mut groups = Vec::new();
    let mut at = 8;
    while at + 8 <= end {
        let n = usize::from(d[at + 7]);
        let ports = (0..n)
            .filter_map(|i| {
                let p = d.get(at + 8 + 4 * i + 2..at + 8 + 4 * i + 4)?;
                Some(u16::from_be_bytes([p[0], p[1]]))
            })
            .collect();
        groups.push(Group {
            id: u16::from_be_bytes([d[at + 2], d[at + 3]]),
            state: d[at] & 0x0F,
            preferred: d[at] & 0x80 != 0,
            ports,
        });
        at += 8 + 4 * n;
    }
    Ok(Report {
        transition_secs: d[5],
        groups,
    })
}

/// Logs in to `target` at `portal` as `initiator`, takes the unit
/// attentions a new nexus starts with (up to a few), and reports the
/// groups of `lun`.
pub fn rtpg(portal: SocketAddr, target: &str, initiator: &str, lun: u16) -> Result<Report> {
    let mut c = Conn::login_to(portal, target, initiator).context("login")?;
    rtpg_on(&mut c, lun)
}

/// Waits until group `own` of `lun`, as reported through `portal`, is in
/// `want`; the last report, or why not.
pub fn wait_state(
    portal: SocketAddr,
    target: &str,
    initiator: &str,
    lun: u16,
    own: u16,
    want: u8,
    limit: Duration,
) -> Report {
    crate::eventually(
        &format!("port group {own} of LUN {lun} at {portal} in state {want:#x}"),
        limit,
        || {
            let r = rtpg(portal, target, initiator, lun).map_err(|e| format!("{e:#}"))?;
            match r.state_of(own) {
                Some(s) if s == want => Ok(r),
                _ => Err(format!("{r:?}")),
            }
        },
    )
}
