//! DNS-SD over mDNS (RFC 6762/6763) on each link, for the Discovery
//! Service: this member advertises one `_trellis._udp` instance per link
//! (its control address on that network, with TXT records naming the
//! cluster, the member, the link and the protocol), and browses for the
//! others'. What it finds goes to [`crate::discovery::Discovery::found`] as a
//! candidate on that link; admission still needs the authenticated hello
//! exchange on every network, so a forged record earns nothing.
//!
//! ```text
//!  ServiceDaemon (mdns-sd, its own thread, on the links' interfaces)
//!     register: <cluster>-<member>-<link>._trellis._udp.local.  TXT cluster= member= link= protocol=
//!     browse ─> ServiceResolved ─ same cluster, a link we have ─> Found { link, member, addr } ─> node
//! ```

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use mdns_sd::{IfKind, ServiceDaemon, ServiceEvent, ServiceInfo};

use crate::discovery::{Identity, SERVICE_TYPE};
use crate::{LinkName, MemberId};

/// A candidate the browser found: a member's control address on a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The link (network) it is on.
    pub link: LinkName,
    /// The member its record names.
    pub member: MemberId,
    /// Its control address there.
    pub addr: SocketAddr,
}

/// Why mDNS could not start.
#[derive(Debug, thiserror::Error)]
pub enum MdnsError {
    /// The mDNS daemon refused (no multicast, port in use...).
    #[error("mDNS: {0}")]
    Daemon(#[from] mdns_sd::Error),
    /// The browser thread could not be started.
    #[error("cannot start the mDNS browser thread")]
    Thread(#[source] std::io::Error),
}

/// The advertisement and the browser of one member.
pub struct Mdns {
    daemon: ServiceDaemon,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Mdns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mdns").finish_non_exhaustive()
    }
}

/// The instance name of `member`'s record on `link`.
fn instance(identity: &Identity, link: &LinkName) -> String {
    format!("{}-{}-{}", identity.cluster, identity.member, link)
}

/// What a resolved record offers: a candidate when it belongs to our
/// cluster, is on one of our links and is not us.
fn candidate(
    identity: &Identity,
    links: &[(LinkName, SocketAddr)],
    cluster: Option<&str>,
    member: Option<&str>,
    link: Option<&str>,
    ips: &[IpAddr],
    port: u16,
) -> Vec<Found> {
    let (Some(cluster), Some(member), Some(link)) = (cluster, member, link) else {
        return Vec::new();
    };
    if cluster != identity.cluster.0 || member == identity.member.0 {
        return Vec::new();
    }
    let Some((link, own)) = links.iter().find(|(l, _)| l.0 == link) else {
        return Vec::new();
    };
    ips.iter()
        .filter(|ip| ip.is_ipv4() == own.is_ipv4())
        .map(|ip| Found {
            link: link.clone(),
            member: MemberId(member.to_owned()),
            addr: SocketAddr::new(*ip, port),
        })
        .collect()
}

impl Mdns {
    /// Advertises `identity` on each of `links` and browses for the other
    /// members of its cluster; each candidate found goes to `found`.
    pub fn start(
        identity: &Identity,
        links: &[(LinkName, SocketAddr)],
        found: impl Fn(Found) + Send + 'static,
    ) -> Result<Mdns, MdnsError> {
        let daemon = ServiceDaemon::new()?;
        // Only the links' networks: not the management or host networks.
        daemon.disable_interface(IfKind::All)?;
        for (_, addr) in links {
            let ip = addr.ip();
            let kind = match ip {
                IpAddr::V4(v4) if v4.is_loopback() => IfKind::LoopbackV4,
                IpAddr::V6(v6) if v6.is_loopback() => IfKind::LoopbackV6,
                _ => IfKind::Addr(ip),
            };
            daemon.enable_interface(kind)?;
        }
        for (link, addr) in links {
            let name = instance(identity, link);
            let host = format!("{}-{}-{}.local.", identity.cluster, identity.member, link);
            let protocol = format!("{}.{}", identity.protocol.major, identity.protocol.minor);
            let txt = [
                ("cluster", identity.cluster.0.as_str()),
                ("member", identity.member.0.as_str()),
                ("link", link.0.as_str()),
                ("protocol", protocol.as_str()),
            ];
            let info =
                ServiceInfo::new(SERVICE_TYPE, &name, &host, addr.ip(), addr.port(), &txt[..])?;
            daemon.register(info)?;
        }
        let events = daemon.browse(SERVICE_TYPE)?;
        let stop = Arc::new(AtomicBool::new(false));
        let (me, links, stop2) = (identity.clone(), links.to_vec(), Arc::clone(&stop));
        let thread = std::thread::Builder::new()
            .name("trellis-mdns".into())
            .spawn(move || {
                while !stop2.load(Ordering::Relaxed) {
                    let event = match events.recv_timeout(Duration::from_millis(200)) {
                        Ok(e) => e,
                        Err(e) if e.to_string().contains("timed out") => continue,
                        Err(_) => return,
                    };
                    if let ServiceEvent::ServiceResolved(s) = event {
                        let ips: Vec<IpAddr> =
                            s.get_addresses().iter().map(|ip| ip.to_ip_addr()).collect();
                        for f in candidate(
                            &me,
                            &links,
                            s.get_property_val_str("cluster"),
                            s.get_property_val_str("member"),
                            s.get_property_val_str("link"),
                            &ips,
                            s.get_port(),
                        ) {
                            tracing::debug!(member = %f.member, link = %f.link, addr = %f.addr, "mDNS found a candidate");
                            found(f);
                        }
                    }
                }
            })
            .map_err(MdnsError::Thread)?;
        Ok(Mdns {
            daemon,
            stop,
            thread: Some(thread),
        })
    }

    /// Withdraws the records (goodbye packets) and stops the daemon.
    pub fn shutdown(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Ok(done) = self.daemon.shutdown() {
            let _ = done.recv_timeout(Duration::from_secs(2));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ClusterKey;
    use crate::{ClusterId, ProtocolVersion};

    fn me() -> Identity {
        Identity {
            member: MemberId("m1".into()),
            cluster: ClusterId("c1".into()),
            key: ClusterKey::new(b"0123456789abcdef").unwrap_or_else(|_| unreachable!()),
            software: "test".into(),
            protocol: ProtocolVersion::CURRENT,
            incarnation: 1,
        }
    }

    #[test]
    fn records_become_candidates_only_for_our_cluster_and_links() {
        let links = vec![
            (
                LinkName("a".into()),
                "10.0.1.1:7401".parse().unwrap_or_else(|_| unreachable!()),
            ),
            (
                LinkName("b".into()),
                "10.0.2.1:7401".parse().unwrap_or_else(|_| unreachable!()),
            ),
        ];
        let ip = |s: &str| s.parse::<IpAddr>().unwrap_or_else(|_| unreachable!());
        let found = candidate(
            &me(),
            &links,
            Some("c1"),
            Some("m2"),
            Some("b"),
            &[ip("10.0.2.2"), ip("fe80::1")],
            7401,
        );
        assert_eq!(
            found,
            vec![Found {
                link: LinkName("b".into()),
                member: MemberId("m2".into()),
                addr: "10.0.2.2:7401".parse().unwrap_or_else(|_| unreachable!()),
            }]
        );
        let none = |cluster, member, link| {
            candidate(
                &me(),
                &links,
                cluster,
                member,
                link,
                &[ip("10.0.1.2")],
                7401,
            )
            .is_empty()
        };
        assert!(none(Some("c2"), Some("m2"), Some("a")), "another cluster");
        assert!(none(Some("c1"), Some("m1"), Some("a")), "ourselves");
        assert!(
            none(Some("c1"), Some("m2"), Some("z")),
            "a link we do not have"
        );
        assert!(none(None, Some("m2"), Some("a")), "no cluster record");
        assert_eq!(instance(&me(), &LinkName("a".into())), "c1-m1-a");
    }
}
