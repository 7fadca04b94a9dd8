//! Authentication of Raft connections with the cluster key: a mutual
//! challenge-response when a connection opens, then an HMAC on every frame
//! under a key of that connection alone, with a sequence number per
//! direction, so a peer without the key can neither join the conversation
//! nor replay, reorder or alter what it overhears.
//!
//! ```text
//!  both, at once:    hello = "TRFT" v1 | protocol major u16, minor u16
//!  (either side closes when the other's control protocol major differs)
//!  server -> client: server nonce (32)
//!  client -> server: client nonce (32) | HMAC(key, "client" | sh | ch | sn | cn)
//!  server -> client: HMAC(key, "server" | ch | sh | cn | sn)
//!  session key = HMAC(key, "session" | sh | ch | sn | cn)
//!  (sh, ch: the server's and the client's hello as sent, so neither
//!   version can be rewritten on the way)
//!  frame = body length u32 | body | HMAC(session key, direction | seq u64 | body)
//! ```

use hmac::Mac;
use rand::RngCore;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::transport::TransportError;
use crate::wire::{mac_over, ClusterKey};
use crate::ProtocolVersion;

const MAGIC: &[u8; 4] = b"TRFT";
const VERSION: u8 = 1;
const NONCE: usize = 32;
/// Length of every tag (HMAC-SHA256).
pub(super) const TAG: usize = 32;

const CLIENT: u8 = b'c';
const SERVER: u8 = b's';

fn tag(key: &[u8], parts: &[&[u8]]) -> [u8; TAG] {
    mac_over(key, parts).finalize().into_bytes().into()
}

fn verify(key: &[u8], parts: &[&[u8]], expected: &[u8]) -> bool {
    mac_over(key, parts).verify_slice(expected).is_ok()
}

fn nonce() -> [u8; NONCE] {
    let mut n = [0u8; NONCE];
    rand::rngs::OsRng.fill_bytes(&mut n);
    n
}

/// One direction of an authenticated connection: the session key, which
/// way it goes, and the next sequence number.
#[derive(Debug)]
pub(super) struct Direction {
    key: [u8; TAG],
    way: u8,
    seq: u64,
}

impl Direction {
    /// The tag of the next frame carrying `body`.
    pub(super) fn seal(&mut self, body: &[u8]) -> [u8; TAG] {
        let t = tag(&self.key, &[&[self.way], &self.seq.to_be_bytes(), body]);
        self.seq += 1;
        t
    }

    /// Checks the tag of the next frame.
    pub(super) fn open(&mut self, body: &[u8], got: &[u8]) -> Result<(), TransportError> {
        if !verify(
            &self.key,
            &[&[self.way], &self.seq.to_be_bytes(), body],
            got,
        ) {
            return Err(TransportError::BadFrame);
        }
        self.seq += 1;
        Ok(())
    }
}

/// Both directions of a connection, as one end sees them.
#[derive(Debug)]
pub(super) struct Session {
    /// What this end sends.
    pub(super) send: Direction,
    /// What this end receives.
    pub(super) recv: Direction,
}

fn session(key: &ClusterKey, hellos: &[u8], sn: &[u8], cn: &[u8], client: bool) -> Session {
    let k = tag(key.secret(), &[b"session", hellos, sn, cn]);
    let (out, inp) = if client {
        (CLIENT, SERVER)
    } else {
        (SERVER, CLIENT)
    };
    Session {
        send: Direction {
            key: k,
            way: out,
            seq: 0,
        },
        recv: Direction {
            key: k,
            way: inp,
            seq: 0,
        },
    }
}

fn hello(protocol: ProtocolVersion) -> Vec<u8> {
    let mut out = Vec::with_capacity(9 + NONCE + TAG);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&protocol.major.to_be_bytes());
    out.extend_from_slice(&protocol.minor.to_be_bytes());
    out
}

/// Reads the other side's hello (returned as received); refuses another
/// framing or an incompatible control protocol.
async fn read_hello<S: AsyncRead + Unpin>(
    s: &mut S,
    ours: ProtocolVersion,
) -> Result<[u8; 9], TransportError> {
    let mut head = [0u8; 9];
    s.read_exact(&mut head).await?;
    if &head[..4] != MAGIC || head[4] != VERSION {
        return Err(TransportError::Handshake(
            "not a Trellis Raft peer (or another version of it)".to_owned(),
        ));
    }
    let peer = ProtocolVersion {
        major: u16::from_be_bytes([head[5], head[6]]),
        minor: u16::from_be_bytes([head[7], head[8]]),
    };
    if !ours.compatible_with(peer) {
        return Err(TransportError::Handshake(format!(
            "the peer speaks control protocol {peer}, incompatible with our {ours}"
        )));
    }
    Ok(head)
}

/// The connecting side: proves it holds the key and checks the server does.
pub(super) async fn client<S>(
    s: &mut S,
    key: &ClusterKey,
    protocol: ProtocolVersion,
) -> Result<Session, TransportError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let ch = hello(protocol);
    s.write_all(&ch).await?;
    s.flush().await?;
    let sh = read_hello(s, protocol).await?;
    // The server's hello then ours: what both proofs and the session key
    // cover.
    let hellos = [&sh[..], &ch[..]].concat();
    let mut sn = [0u8; NONCE];
    s.read_exact(&mut sn).await?;
    let cn = nonce();
    let mut out = Vec::with_capacity(NONCE + TAG);
    out.extend_from_slice(&cn);
    out.extend_from_slice(&tag(key.secret(), &[b"client", &hellos, &sn, &cn]));
    s.write_all(&out).await?;
    s.flush().await?;
    let mut proof = [0u8; TAG];
    match s.read_exact(&mut proof).await {
        Ok(_) => {}
        // A server that does not accept our key closes the connection.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            return Err(TransportError::Refused)
        }
        Err(e) => return Err(e.into()),
    }
    if !verify(key.secret(), &[b"server", &ch, &sh, &cn, &sn], &proof) {
        return Err(TransportError::Refused);
    }
    Ok(session(key, &hellos, &sn, &cn, true))
}

/// The accepting side: challenges the client, and proves itself only to a
/// client that answered with the key.
pub(super) async fn server<S>(
    s: &mut S,
    key: &ClusterKey,
    protocol: ProtocolVersion,
) -> Result<Session, TransportError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let sn = nonce();
    let sh = hello(protocol);
    s.write_all(&[&sh[..], &sn[..]].concat()).await?;
    s.flush().await?;
    let ch = read_hello(s, protocol).await?;
    let hellos = [&sh[..], &ch[..]].concat();
    let mut cn = [0u8; NONCE];
    s.read_exact(&mut cn).await?;
    let mut proof = [0u8; TAG];
    s.read_exact(&mut proof).await?;
    if !verify(key.secret(), &[b"client", &hellos, &sn, &cn], &proof) {
        return Err(TransportError::Refused);
    }
    s.write_all(&tag(key.secret(), &[b"server", &ch, &sh, &cn, &sn]))
        .await?;
    s.flush().await?;
    Ok(session(key, &hellos, &sn, &cn, false))
}

#[cfg(test)]
mod tests {
    // Test helpers: a panic is the test failing.
    #![allow(clippy::unwrap_used)]

    use super::*;

    const V1: ProtocolVersion = ProtocolVersion::CURRENT;

    type Outcome = Result<Session, TransportError>;

    /// A client handshake on `c` and a server handshake on `s`, run against
    /// each other; each end hangs up when it is done, as a connection's
    /// owner does (a refusing end closes).
    async fn handshake<C, S>(
        mut c: C,
        (client_key, client_v): (&ClusterKey, ProtocolVersion),
        mut s: S,
        (server_key, server_v): (&ClusterKey, ProtocolVersion),
    ) -> (Outcome, Outcome)
    where
        C: AsyncRead + AsyncWrite + Unpin,
        S: AsyncRead + AsyncWrite + Unpin,
    {
        tokio::join!(
            async move { client(&mut c, client_key, client_v).await },
            async move { server(&mut s, server_key, server_v).await }
        )
    }

    /// [`handshake`] over a fresh in-memory connection.
    async fn over_duplex(
        client_side: (&ClusterKey, ProtocolVersion),
        server_side: (&ClusterKey, ProtocolVersion),
    ) -> (Outcome, Outcome) {
        let (a, b) = tokio::io::duplex(4096);
        handshake(a, client_side, b, server_side).await
    }

    fn key(s: &str) -> ClusterKey {
        ClusterKey::new(s.as_bytes()).unwrap()
    }

    #[tokio::test]
    async fn both_ends_with_the_key_agree_on_a_session() {
        let k = key("the-cluster-key-0123");
        let (c, s) = over_duplex((&k, V1), (&k, V1)).await;
        let (mut c, mut s) = (c.unwrap(), s.unwrap());
        // Frames go one way and the other, in order.
        for body in [&b"one"[..], b"two"] {
            let t = c.send.seal(body);
            s.recv.open(body, &t).unwrap();
        }
        let t = s.send.seal(b"back");
        c.recv.open(b"back", &t).unwrap();
        // Replayed, altered or reflected frames fail.
        let t = c.send.seal(b"three");
        assert!(s.recv.open(b"thrEE", &t).is_err());
        let mut s2 = session(&k, &[], &[0; 32], &[0; 32], false);
        let replay = c.send.seal(b"x");
        s2.recv.seq = 99;
        assert!(s2.recv.open(b"x", &replay).is_err());
        let own = s.send.seal(b"mine");
        assert!(s.recv.open(b"mine", &own).is_err(), "a reflected frame");
    }

    #[tokio::test]
    async fn a_wrong_key_is_refused_on_both_sides() {
        let (ours, theirs) = (key("the-cluster-key-0123"), key("another-key-456789"));
        let (c, s) = over_duplex((&ours, V1), (&theirs, V1)).await;
        assert!(matches!(s, Err(TransportError::Refused)), "{s:?}");
        assert!(matches!(c, Err(TransportError::Refused)), "{c:?}");
    }

    /// A machine in the middle that rewrites the client's advertised
    /// version (here its minor, which alone would pass the check) breaks
    /// the proofs: the hellos are covered by them.
    #[tokio::test]
    async fn a_rewritten_hello_fails_the_handshake() {
        let k = key("the-cluster-key-0123");
        let (client_end, mut mitm_c) = tokio::io::duplex(4096);
        let (mut mitm_s, server_end) = tokio::io::duplex(4096);
        let relay = async move {
            // Client hello: forward with the minor version changed.
            let mut ch = [0u8; 9];
            mitm_c.read_exact(&mut ch).await.unwrap();
            ch[8] ^= 1;
            mitm_s.write_all(&ch).await.unwrap();
            // Then copy both ways as they are (a hang-up passed on).
            let _ = tokio::io::copy_bidirectional(&mut mitm_c, &mut mitm_s).await;
            std::future::pending::<()>().await;
        };
        let (c, s) = tokio::select! {
            r = handshake(client_end, (&k, V1), server_end, (&k, V1)) => r,
            () = relay => unreachable!("the relay ends only when both ends are gone"),
        };
        assert!(matches!(s, Err(TransportError::Refused)), "{s:?}");
        assert!(c.is_err(), "{c:?}");
    }

    #[tokio::test]
    async fn something_else_on_the_port_is_told_apart() {
        let (mut a, mut b) = tokio::io::duplex(4096);
        b.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n")
            .await
            .unwrap();
        let c = client(&mut a, &key("the-cluster-key-0123"), V1).await;
        assert!(matches!(c, Err(TransportError::Handshake(_))), "{c:?}");
    }

    #[tokio::test]
    async fn an_incompatible_protocol_is_refused_on_both_sides_saying_so() {
        let k = key("the-cluster-key-0123");
        let v2 = ProtocolVersion { major: 2, minor: 0 };
        let (c, s) = over_duplex((&k, v2), (&k, V1)).await;
        let why = |r: Outcome| match r {
            Err(TransportError::Handshake(why)) => why,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            why(c),
            "the peer speaks control protocol 1.2, incompatible with our 2.0"
        );
        assert_eq!(
            why(s),
            "the peer speaks control protocol 2.0, incompatible with our 1.2"
        );
        // Another minor is fine.
        let v1_3 = ProtocolVersion { major: 1, minor: 3 };
        let (c, s) = over_duplex((&k, v1_3), (&k, V1)).await;
        assert!(c.is_ok() && s.is_ok());
    }
}
