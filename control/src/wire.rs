//! The control datagrams members exchange on each link: heartbeats, and the
//! hello / hello-ack pair that confirms a candidate on one network.
//! Every datagram is authenticated with HMAC-SHA256 under the cluster key.
//!
//! ```text
//! "TRLS" | format u8 | kind u8 | body length u16 | body | HMAC-SHA256 (32 bytes, over all before it)
//! body = header (cluster, from, software, protocol major/minor, incarnation, link, seq) + kind fields
//! heartbeat fields = role u8 | epoch u64
//!                   | (1.1) count u8 | count x (set string | role u8 | epoch u64) | sessions u32 | flags u8 (1: unhealthy, 2: booting)
//!                   | (1.2) devices u64 (device-state changes applied)
//! ```
//!
//! A heartbeat's first role and epoch sum its roles up (Primary of some set,
//! else Secondary, ...; the highest epoch) for members of protocol 1.0,
//! which ignore what follows; from 1.1 it lists its role and epoch in each
//! Failover Set it holds one in (as many as fit; a member in more sets
//! announces them over successive heartbeats).
//!
//! Strings are a length byte and UTF-8; integers are big-endian. Decoding
//! reads the header first, so a datagram from another cluster or an
//! incompatible protocol version is refused with that reason (for a clear
//! log line) before the tag is checked; a wrong cluster key fails the tag.

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::{ClusterId, LinkName, MemberId, ProtocolVersion};

const MAGIC: &[u8; 4] = b"TRLS";
/// Datagram format (of this framing; the protocol version is in the header).
const FORMAT: u8 = 1;
const TAG_LEN: usize = 32;
/// Largest datagram encoded or accepted.
pub const MAX_DATAGRAM: usize = 1200;

/// The shared secret that authenticates control datagrams.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterKey(Vec<u8>);

impl ClusterKey {
    /// A key from its secret bytes (at least 16).
    pub fn new(secret: &[u8]) -> Result<Self, WireError> {
        if secret.len() < 16 {
            return Err(WireError::ShortKey(secret.len()));
        }
        Ok(Self(secret.to_vec()))
    }

    /// The secret bytes, for keys derived from it (Raft connections).
    pub(crate) fn secret(&self) -> &[u8] {
        &self.0
    }

    fn mac(&self) -> Hmac<Sha256> {
        mac_over(&self.0, &[])
    }
}

/// HMAC-SHA256 under `key`, fed `parts` in order; finalize it for a tag or
/// verify a tag against it.
pub(crate) fn mac_over(key: &[u8], parts: &[&[u8]]) -> Hmac<Sha256> {
    // HMAC takes keys of any length; new_from_slice cannot fail for it.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    for p in parts {
        mac.update(p);
    }
    mac
}

impl fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusterKey(<secret>)")
    }
}

/// What every datagram says about its sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The cluster the sender belongs to.
    pub cluster: ClusterId,
    /// The sender.
    pub from: MemberId,
    /// Sender's software version (for operators; compatibility is by protocol).
    pub software: String,
    /// Sender's control protocol version.
    pub protocol: ProtocolVersion,
    /// Grows every time the sender restarts: tells a restart from a delay.
    pub incarnation: u64,
    /// The network the datagram was sent on.
    pub link: LinkName,
    /// Per-sender sequence number.
    pub seq: u64,
}

/// A member's role as it announces it (the failover services fill it in).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    /// No role assigned yet.
    #[default]
    None,
    /// Serves the devices of its failover set.
    Primary,
    /// Takes over from the Primary.
    Secondary,
    /// Stands by to become Secondary.
    Alternate,
    /// A voter that serves no data.
    Witness,
}

impl Role {
    /// Its name, as people read it.
    pub fn name(self) -> &'static str {
        match self {
            Role::None => "none",
            Role::Primary => "primary",
            Role::Secondary => "secondary",
            Role::Alternate => "alternate",
            Role::Witness => "witness",
        }
    }

    fn code(self) -> u8 {
        match self {
            Role::None => 0,
            Role::Primary => 1,
            Role::Secondary => 2,
            Role::Alternate => 3,
            Role::Witness => 4,
        }
    }

    fn from_code(c: u8) -> Result<Self, WireError> {
        Ok(match c {
            0 => Role::None,
            1 => Role::Primary,
            2 => Role::Secondary,
            3 => Role::Alternate,
            4 => Role::Witness,
            _ => return Err(WireError::Malformed("unknown role")),
        })
    }
}

/// A member's role in one Failover Set, as it announces it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetRole {
    /// The set.
    pub set: String,
    /// The role the sender applies there.
    pub role: Role,
    /// The epoch of the assignment it applies.
    pub epoch: u64,
}

impl SetRole {
    /// Its size in a heartbeat.
    pub fn wire_len(&self) -> usize {
        1 + self.set.len() + 1 + 8
    }
}

/// What a member's heartbeats say of its data path (protocol 1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DataState {
    /// Normal iSCSI sessions logged in to it.
    pub sessions: u32,
    /// Whether it serves every device of the configuration (a device whose
    /// backing it cannot open makes it unhealthy: no new role for it).
    pub healthy: bool,
    /// Whether it has finished booting: its replica applied and its
    /// exports set up (no role before).
    pub booted: bool,
    /// (1.2) The device-state changes its data path has applied
    /// ([`DeviceStates::seq`](crate::config::DeviceStates::seq)): a member
    /// answers a SCSI command that changed a device's shared state once
    /// every live peer says it applied it.
    pub devices: u64,
}

/// A control datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// "I am alive", on every link, every heartbeat interval.
    Heartbeat {
        /// Sender.
        header: Header,
        /// Its roles summed up (for protocol 1.0 peers).
        role: Role,
        /// The highest epoch of its roles.
        epoch: u64,
        /// Its role and epoch per set (protocol 1.1).
        roles: Vec<SetRole>,
        /// Its data path's state (protocol 1.1; None from a 1.0 sender).
        state: Option<DataState>,
    },
    /// A candidate's greeting on one network, carrying its links.
    Hello {
        /// Sender.
        header: Header,
        /// Echoed by the ack.
        nonce: u64,
        /// The sender's control address on each of its links.
        links: Vec<(LinkName, String)>,
    },
    /// The answer to a hello, on the same network.
    HelloAck {
        /// Sender.
        header: Header,
        /// The hello's nonce.
        nonce: u64,
    },
}

impl Message {
    /// The sender's header.
    pub fn header(&self) -> &Header {
        match self {
            Message::Heartbeat { header, .. }
            | Message::Hello { header, .. }
            | Message::HelloAck { header, .. } => header,
        }
    }

    fn kind(&self) -> u8 {
        match self {
            Message::Heartbeat { .. } => 1,
            Message::Hello { .. } => 2,
            Message::HelloAck { .. } => 3,
        }
    }
}

/// Why a datagram was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Shorter than its framing says.
    #[error("truncated datagram")]
    Truncated,
    /// Not a Trellis control datagram.
    #[error("not a Trellis control datagram")]
    BadMagic,
    /// A framing this build does not know.
    #[error("unknown datagram format {0}")]
    UnknownFormat(u8),
    /// A message kind this build does not know.
    #[error("unknown message kind {0}")]
    UnknownKind(u8),
    /// A field out of range.
    #[error("malformed datagram: {0}")]
    Malformed(&'static str),
    /// Larger than [`MAX_DATAGRAM`] (encoding) or a field too long.
    #[error("datagram too large")]
    TooLarge,
    /// From a member of another cluster.
    #[error("member {from} belongs to cluster {claimed}, not ours")]
    WrongCluster {
        /// Sender as it names itself.
        from: MemberId,
        /// Cluster it claims.
        claimed: ClusterId,
    },
    /// From a member whose protocol this build cannot speak.
    #[error("member {from} speaks control protocol {peer}, incompatible with our {ours}")]
    IncompatibleProtocol {
        /// Sender as it names itself.
        from: MemberId,
        /// Its version.
        peer: ProtocolVersion,
        /// Ours.
        ours: ProtocolVersion,
    },
    /// The tag does not verify: the sender has another cluster key (or the
    /// datagram was altered).
    #[error("member {from}: authentication failed (cluster key mismatch?)")]
    BadTag {
        /// Sender as it names itself.
        from: MemberId,
    },
    /// A cluster key shorter than 16 bytes.
    #[error("cluster key too short: {0} bytes, need at least 16")]
    ShortKey(usize),
}

/// Encodes `msg` with its tag under `key`.
pub fn encode(msg: &Message, key: &ClusterKey) -> Result<Vec<u8>, WireError> {
    let mut body = Vec::with_capacity(256);
    let h = msg.header();
    put_str(&mut body, &h.cluster.0)?;
    put_str(&mut body, &h.from.0)?;
    put_str(&mut body, &h.software)?;
    body.extend_from_slice(&h.protocol.major.to_be_bytes());
    body.extend_from_slice(&h.protocol.minor.to_be_bytes());
    body.extend_from_slice(&h.incarnation.to_be_bytes());
    put_str(&mut body, &h.link.0)?;
    body.extend_from_slice(&h.seq.to_be_bytes());
    match msg {
        Message::Heartbeat {
            role,
            epoch,
            roles,
            state,
            ..
        } => {
            body.push(role.code());
            body.extend_from_slice(&epoch.to_be_bytes());
            let n = u8::try_from(roles.len()).map_err(|_| WireError::TooLarge)?;
            body.push(n);
            for r in roles {
                put_str(&mut body, &r.set)?;
                body.push(r.role.code());
                body.extend_from_slice(&r.epoch.to_be_bytes());
            }
            if let Some(d) = state {
                body.extend_from_slice(&d.sessions.to_be_bytes());
                body.push(u8::from(!d.healthy) | (u8::from(!d.booted) << 1));
                body.extend_from_slice(&d.devices.to_be_bytes());
            }
        }
        Message::Hello { nonce, links, .. } => {
            body.extend_from_slice(&nonce.to_be_bytes());
            let n = u8::try_from(links.len()).map_err(|_| WireError::TooLarge)?;
            body.push(n);
            for (l, addr) in links {
                put_str(&mut body, &l.0)?;
                put_str(&mut body, addr)?;
            }
        }
        Message::HelloAck { nonce, .. } => body.extend_from_slice(&nonce.to_be_bytes()),
    }
    let len = u16::try_from(body.len()).map_err(|_| WireError::TooLarge)?;
    let mut out = Vec::with_capacity(8 + body.len() + TAG_LEN);
    out.extend_from_slice(MAGIC);
    out.push(FORMAT);
    out.push(msg.kind());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&body);
    let mut mac = key.mac();
    mac.update(&out);
    out.extend_from_slice(&mac.finalize().into_bytes());
    if out.len() > MAX_DATAGRAM {
        return Err(WireError::TooLarge);
    }
    Ok(out)
}

/// Decodes and authenticates a datagram from a member of `cluster` speaking
/// a protocol compatible with `ours`.
pub fn decode(
    data: &[u8],
    key: &ClusterKey,
    cluster: &ClusterId,
    ours: ProtocolVersion,
) -> Result<Message, WireError> {
    if data.len() > MAX_DATAGRAM {
        return Err(WireError::TooLarge);
    }
    let mut r = Reader(data);
    if r.take(4)? != MAGIC {
        return Err(WireError::BadMagic);
    }
    let format = r.u8()?;
    if format != FORMAT {
        return Err(WireError::UnknownFormat(format));
    }
    let kind = r.u8()?;
    let len = usize::from(r.u16()?);
    let signed_len = 8 + len;
    if data.len() != signed_len + TAG_LEN {
        return Err(WireError::Truncated);
    }
    let mut b = Reader(r.take(len)?);
    let header = Header {
        cluster: ClusterId(b.string()?),
        from: MemberId(b.string()?),
        software: b.string()?,
        protocol: ProtocolVersion {
            major: b.u16()?,
            minor: b.u16()?,
        },
        incarnation: b.u64()?,
        link: LinkName(b.string()?),
        seq: b.u64()?,
    };
    if &header.cluster != cluster {
        return Err(WireError::WrongCluster {
            from: header.from,
            claimed: header.cluster,
        });
    }
    if !ours.compatible_with(header.protocol) {
        return Err(WireError::IncompatibleProtocol {
            from: header.from,
            peer: header.protocol,
            ours,
        });
    }
    let mut mac = key.mac();
    mac.update(&data[..signed_len]);
    if mac.verify_slice(&data[signed_len..]).is_err() {
        return Err(WireError::BadTag { from: header.from });
    }
    let msg = match kind {
        1 => Message::Heartbeat {
            header,
            role: Role::from_code(b.u8()?)?,
            epoch: b.u64()?,
            // A 1.0 sender stops here.
            roles: if b.0.is_empty() {
                Vec::new()
            } else {
                let n = b.u8()?;
                let mut roles = Vec::with_capacity(usize::from(n));
                for _ in 0..n {
                    roles.push(SetRole {
                        set: b.string()?,
                        role: Role::from_code(b.u8()?)?,
                        epoch: b.u64()?,
                    });
                }
                roles
            },
            state: if b.0.is_empty() {
                None
            } else {
                let sessions = b.u32()?;
                let flags = b.u8()?;
                Some(DataState {
                    sessions,
                    healthy: flags & 1 == 0,
                    booted: flags & 2 == 0,
                    // A 1.1 sender stops before it.
                    devices: if b.0.is_empty() { 0 } else { b.u64()? },
                })
            },
        },
        2 => {
            let nonce = b.u64()?;
            let n = b.u8()?;
            let mut links = Vec::with_capacity(usize::from(n));
            for _ in 0..n {
                links.push((LinkName(b.string()?), b.string()?));
            }
            Message::Hello {
                header,
                nonce,
                links,
            }
        }
        3 => Message::HelloAck {
            header,
            nonce: b.u64()?,
        },
        k => return Err(WireError::UnknownKind(k)),
    };
    // Fields a newer minor version appends are ignored.
    Ok(msg)
}

fn put_str(out: &mut Vec<u8>, s: &str) -> Result<(), WireError> {
    let n = u8::try_from(s.len()).map_err(|_| WireError::TooLarge)?;
    out.push(n);
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.0.len() < n {
            return Err(WireError::Truncated);
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, WireError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, WireError> {
        let mut a = [0u8; 4];
        a.copy_from_slice(self.take(4)?);
        Ok(u32::from_be_bytes(a))
    }
    fn u64(&mut self) -> Result<u64, WireError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(a))
    }
    fn string(&mut self) -> Result<String, WireError> {
        let n = usize::from(self.u8()?);
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| WireError::Malformed("string is not UTF-8"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key() -> ClusterKey {
        ClusterKey::new(b"0123456789abcdef-cluster-key").expect("key")
    }

    fn header(from: &str) -> Header {
        Header {
            cluster: ClusterId("c1".into()),
            from: MemberId(from.into()),
            software: "trellis 0.1.0".into(),
            protocol: ProtocolVersion::CURRENT,
            incarnation: 3,
            link: LinkName("a".into()),
            seq: 42,
        }
    }

    fn dec(d: &[u8]) -> Result<Message, WireError> {
        decode(d, &key(), &ClusterId("c1".into()), ProtocolVersion::CURRENT)
    }

    #[test]
    fn each_kind_round_trips() {
        let msgs = [
            Message::Heartbeat {
                header: header("m1"),
                role: Role::Secondary,
                epoch: 7,
                roles: Vec::new(),
                state: None,
            },
            Message::Heartbeat {
                header: header("m1"),
                role: Role::Primary,
                epoch: 9,
                roles: vec![
                    SetRole {
                        set: "default".into(),
                        role: Role::Secondary,
                        epoch: 7,
                    },
                    SetRole {
                        set: "chassis-a".into(),
                        role: Role::Primary,
                        epoch: 9,
                    },
                ],
                state: Some(DataState {
                    sessions: 12,
                    healthy: false,
                    booted: true,
                    devices: 77,
                }),
            },
            Message::Hello {
                header: header("m2"),
                nonce: 0xDEAD_BEEF,
                links: vec![
                    (LinkName("a".into()), "127.0.1.2:7401".into()),
                    (LinkName("b".into()), "127.0.2.2:7401".into()),
                ],
            },
            Message::HelloAck {
                header: header("m3"),
                nonce: 9,
            },
        ];
        for m in msgs {
            let d = encode(&m, &key()).expect("encode");
            assert_eq!(dec(&d), Ok(m));
        }
    }

    /// A 1.0 heartbeat (no per-set roles) reads as one with none; a 1.0
    /// reader, which stops after the epoch, reads a 1.1 heartbeat's summary.
    #[test]
    fn heartbeats_of_1_0_and_1_1_read_each_other() {
        let mut old_header = header("m1");
        old_header.protocol = ProtocolVersion { major: 1, minor: 0 };
        let full = Message::Heartbeat {
            header: old_header,
            role: Role::Primary,
            epoch: 4,
            roles: vec![SetRole {
                set: "s1".into(),
                role: Role::Primary,
                epoch: 4,
            }],
            state: Some(DataState {
                sessions: 3,
                healthy: true,
                booted: false,
                devices: 5,
            }),
        };
        let d = encode(&full, &key()).expect("encode");
        let body_len = usize::from(u16::from_be_bytes([d[6], d[7]]));
        let resign = |cut: usize| {
            let mut old = d[..8 + cut].to_vec();
            old[6..8].copy_from_slice(&u16::try_from(cut).unwrap().to_be_bytes());
            let mut mac = key().mac();
            mac.update(&old);
            old.extend_from_slice(&mac.finalize().into_bytes());
            old
        };
        // As 1.1 wrote it: no device-state count, read as none applied.
        let Ok(Message::Heartbeat { state, .. }) = dec(&resign(body_len - 8)) else {
            panic!("a 1.1 heartbeat refused");
        };
        assert_eq!(state.map(|s| (s.sessions, s.devices)), Some((3, 0)));
        // The same datagram as 1.0 wrote it: the body ends after the epoch.
        let cut = body_len - (1 + (1 + 2) + 1 + 8) - (4 + 1 + 8);
        let Ok(Message::Heartbeat {
            role, epoch, roles, ..
        }) = dec(&resign(cut))
        else {
            panic!("a 1.0 heartbeat refused");
        };
        assert_eq!((role, epoch, roles), (Role::Primary, 4, Vec::new()));
    }

    #[test]
    fn refusals_say_why() {
        let m = Message::HelloAck {
            header: header("m4"),
            nonce: 1,
        };
        let d = encode(&m, &key()).expect("encode");
        // Another cluster key: the tag fails.
        let other = ClusterKey::new(b"another-cluster-key!").expect("key");
        assert_eq!(
            decode(
                &d,
                &other,
                &ClusterId("c1".into()),
                ProtocolVersion::CURRENT
            ),
            Err(WireError::BadTag {
                from: MemberId("m4".into())
            })
        );
        // Another cluster.
        assert_eq!(
            decode(
                &d,
                &key(),
                &ClusterId("c2".into()),
                ProtocolVersion::CURRENT
            ),
            Err(WireError::WrongCluster {
                from: MemberId("m4".into()),
                claimed: ClusterId("c1".into()),
            })
        );
        // An incompatible protocol (major 2).
        let mut h = header("m5");
        h.protocol = ProtocolVersion { major: 2, minor: 0 };
        let d2 = encode(
            &Message::HelloAck {
                header: h,
                nonce: 1,
            },
            &key(),
        )
        .expect("encode");
        let e = dec(&d2).expect_err("refused");
        assert_eq!(
            e.to_string(),
            "member m5 speaks control protocol 2.0, incompatible with our 1.2"
        );
        // A newer minor is fine.
        let mut h = header("m6");
        h.protocol = ProtocolVersion { major: 1, minor: 4 };
        let d3 = encode(
            &Message::HelloAck {
                header: h,
                nonce: 1,
            },
            &key(),
        )
        .expect("encode");
        assert!(dec(&d3).is_ok());
        // Altered, truncated, garbage.
        let mut bad = d.clone();
        let at = bad.len() - 40;
        bad[at] ^= 1;
        assert!(matches!(
            dec(&bad),
            Err(WireError::BadTag { .. }) | Err(WireError::Malformed(_))
        ));
        assert_eq!(dec(&d[..d.len() - 1]), Err(WireError::Truncated));
        assert_eq!(dec(b"HTTP/1.1 200 OK\r\n"), Err(WireError::BadMagic));
        assert_eq!(ClusterKey::new(b"short"), Err(WireError::ShortKey(5)));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = dec(&data);
        }

        #[test]
        fn heartbeats_round_trip(from in "[a-z0-9-]{1,30}", inc: u64, seq: u64, epoch: u64, role in 0u8..5) {
            let mut h = header(&from);
            h.incarnation = inc;
            h.seq = seq;
            let roles = vec![SetRole { set: from.clone(), role: Role::from_code(role).expect("role"), epoch }];
            let state = Some(DataState { sessions: seq as u32, healthy: inc % 2 == 0, booted: seq % 3 == 0, devices: inc });
            let m = Message::Heartbeat { header: h, role: Role::from_code(role).expect("role"), epoch, roles, state };
            let d = encode(&m, &key()).expect("encode");
            prop_assert_eq!(dec(&d), Ok(m));
        }
    }
}
