//! Writes applied at most once: a client names each write with an
//! idempotency key, and resending it (after a lost answer, a timeout, or a
//! 503 from a member that may have forwarded it) answers what the first
//! attempt did instead of applying it again.
//!
//! ```text
//!  Command::Once { key, command } ──apply──┬─ key not seen ─> apply command, remember (key, command, result)
//!                                          ├─ same key, same command ─> the remembered result
//!                                          └─ same key, other command ─> KeyReused
//! ```
//!
//! The table is part of the replicated state (the log's own state in
//! [`ReplicatedState`](super::ReplicatedState), so snapshots carry it) and
//! every member decides the same way. It keeps the last [`RECENT_WRITES`]
//! keyed writes of the whole cluster (refused ones included): a resend
//! after a lost answer comes within seconds, thousands of writes sooner
//! than its key is forgotten. A write is remembered by a digest of its
//! command, not the command, so CHAP secrets do not linger in it.
//!
//! A device created under a key without a uuid of its own gets one derived
//! from the key, its name and the cluster key ([`keyed_device_uuid`]), so
//! that a resent create proposes the very same device, while the same key
//! and name on another cluster give another identity.

use std::collections::VecDeque;

use hmac::Mac;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::command::{Command, ConfigError, Response};
use crate::wire::mac_over;

/// How many keyed writes are remembered. Part of the replicated state's
/// rules: every member must use the same value.
pub const RECENT_WRITES: usize = 1024;

/// The longest idempotency key accepted.
pub const MAX_KEY_LEN: usize = 128;

/// Checks an idempotency key: 1 to [`MAX_KEY_LEN`] characters, each an
/// ASCII letter, digit, `-`, `_`, `.` or `:` (a UUID fits).
pub fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(format!(
            "must be 1 to {MAX_KEY_LEN} characters, not {}",
            key.len()
        ));
    }
    match key
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "-_.:".contains(*c)))
    {
        Some(c) => Err(format!(
            "{c:?} is not allowed (letters, digits, '-', '_', '.' and ':' are)"
        )),
        None => Ok(()),
    }
}

/// A version-4-shaped UUID that only `secret` (the cluster key), `key` and
/// `name` decide.
pub fn keyed_device_uuid(secret: &[u8], key: &str, name: &str) -> Uuid {
    let mut mac = mac_over(secret, &[]);
    for part in ["trellis device uuid", key, name] {
        mac.update(&(part.len() as u64).to_be_bytes());
        mac.update(part.as_bytes());
    }
    let tag = mac.finalize().into_bytes();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&tag[..16]);
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

/// SHA-256 of a command's JSON, in hex: what a remembered write is compared
/// by.
fn digest(command: &Command) -> String {
    // Commands always serialize (string keys, no floats).
    let json = serde_json::to_vec(command).unwrap_or_default();
    Sha256::digest(&json)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// One remembered write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Done {
    key: String,
    /// [`digest`] of the command.
    command: String,
    result: Result<Response, ConfigError>,
}

/// The keyed writes applied lately, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RecentWrites(VecDeque<Done>);

impl RecentWrites {
    /// Whether no keyed write was applied (the field is then left out of
    /// the serialized configuration).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many keyed writes are remembered.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// What the write named `key` answered, if it is remembered: its result
    /// when it was `command`, [`ConfigError::KeyReused`] when the key named
    /// another command.
    pub(super) fn replay(
        &self,
        key: &str,
        command: &Command,
    ) -> Option<Result<Response, ConfigError>> {
        let done = self.0.iter().rev().find(|d| d.key == key)?;
        Some(if done.command == digest(command) {
            done.result.clone()
        } else {
            Err(ConfigError::KeyReused {
                key: key.to_owned(),
            })
        })
    }

    /// Remembers that `command`, named `key`, answered `result`; the
    /// oldest goes beyond [`RECENT_WRITES`].
    pub(super) fn record(
        &mut self,
        key: &str,
        command: &Command,
        result: &Result<Response, ConfigError>,
    ) {
        while self.0.len() >= RECENT_WRITES {
            self.0.pop_front();
        }
        self.0.push_back(Done {
            key: key.to_owned(),
            command: digest(command),
            result: result.clone(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Object, ReplicatedState};

    const T1: &str = "iqn.2024-01.org.example:t1";

    fn create(iqn: &str) -> Command {
        Command::CreateTarget {
            iqn: iqn.to_owned(),
            alias: None,
        }
    }

    fn once(key: &str, command: Command) -> Command {
        Command::Once {
            key: key.to_owned(),
            command: Box::new(command),
        }
    }

    impl ReplicatedState {
        fn apply_r(&mut self, command: &Command) -> Result<Response, ConfigError> {
            self.apply(command).result
        }
    }

    #[test]
    fn a_keyed_write_applies_once_and_answers_the_same_again() {
        let mut c = ReplicatedState::default();
        let first = c.apply_r(&once("k1", create(T1)));
        assert_eq!(first, Ok(Response::Changed));
        let after_first = c.clone();
        // Sent again: the same answer, nothing applied (unkeyed, the second
        // attempt is refused as a duplicate).
        assert_eq!(c.apply_r(&once("k1", create(T1))), Ok(Response::Changed));
        assert_eq!(c, after_first);
        assert!(matches!(
            c.apply_r(&create(T1)),
            Err(ConfigError::AlreadyExists {
                object: Object::Target,
                ..
            })
        ));

        // A refusal is remembered too: the retry is refused the same way
        // even after the cause went away.
        let delete = Command::DeleteTarget {
            iqn: "iqn.2024-01.org.example:none".to_owned(),
        };
        let refused = c.apply_r(&once("k2", delete.clone()));
        assert!(matches!(refused, Err(ConfigError::NotFound { .. })));
        c.apply_r(&create("iqn.2024-01.org.example:none"))
            .expect("create");
        assert_eq!(c.apply_r(&once("k2", delete.clone())), refused);

        // The same key on another request is refused and changes nothing.
        let before = c.clone();
        assert_eq!(
            c.apply_r(&once("k1", create("iqn.2024-01.org.example:t2"))),
            Err(ConfigError::KeyReused { key: "k1".into() })
        );
        assert_eq!(c, before);
        assert_eq!(c.recent_writes.len(), 2);
    }

    #[test]
    fn the_oldest_keys_are_forgotten_beyond_the_limit() {
        let mut c = ReplicatedState::default();
        let iqn = |i: usize| format!("iqn.2024-01.org.example:t{i}");
        for i in 0..=RECENT_WRITES {
            let r = c.apply_r(&once(&format!("k{i}"), create(&iqn(i))));
            assert_eq!(r, Ok(Response::Changed));
        }
        assert_eq!(c.recent_writes.len(), RECENT_WRITES);
        // k1 is still remembered.
        assert_eq!(
            c.apply_r(&once("k1", create(&iqn(1)))),
            Ok(Response::Changed)
        );
        // k0 is forgotten: applied again, the command itself answers.
        assert!(matches!(
            c.apply_r(&once("k0", create(&iqn(0)))),
            Err(ConfigError::AlreadyExists { .. })
        ));
        assert_eq!(c.recent_writes.len(), RECENT_WRITES);
    }

    #[test]
    fn the_table_travels_with_the_configuration() {
        let mut c = ReplicatedState::default();
        // A configuration serialized before keyed writes existed decodes
        // (an empty table), and an empty table is left out.
        let plain = serde_json::to_string(&c).expect("encode");
        assert!(!plain.contains("recent_writes"), "{plain}");
        let back: ReplicatedState = serde_json::from_str(&plain).expect("decode");
        assert_eq!(back, c);
        c.apply_r(&once("k1", create(T1))).expect("apply");
        c.apply_r(&once("k2", create(T1))).expect_err("a duplicate");
        let text = serde_json::to_string(&c).expect("encode");
        let mut back: ReplicatedState = serde_json::from_str(&text).expect("decode");
        assert_eq!(back, c);
        assert_eq!(back.apply_r(&once("k1", create(T1))), Ok(Response::Changed));
    }

    #[test]
    fn nested_keyed_writes_are_refused_and_not_remembered() {
        let mut c = ReplicatedState::default();
        let nested = once("k1", once("k2", create(T1)));
        assert_eq!(c.apply_r(&nested), Err(ConfigError::NestedOnce));
        assert!(c.recent_writes.is_empty() && c.config.targets.is_empty());
    }

    #[test]
    fn secrets_are_not_remembered() {
        use crate::config::{ChapAuth, ChapCredentials};
        let mut c = ReplicatedState::default();
        c.apply_r(&create(T1)).expect("target");
        let secret = "a-chap-secret-to-forget";
        let allow = Command::AllowInitiator {
            target: T1.to_owned(),
            initiator: "iqn.1998-01.com.vmware:host1".to_owned(),
            luns: None,
            auth: Some(ChapAuth {
                chap: ChapCredentials {
                    user: "host1".to_owned(),
                    secret: secret.to_owned(),
                },
                mutual: None,
            }),
        };
        c.apply_r(&once("k1", allow.clone())).expect("allow");
        let deny = Command::DenyInitiator {
            target: T1.to_owned(),
            initiator: "iqn.1998-01.com.vmware:host1".to_owned(),
        };
        c.apply_r(&once("k2", deny)).expect("deny");
        let text = serde_json::to_string(&c).expect("encode");
        assert!(!text.contains(secret), "{text}");
        // Still recognized by its digest.
        assert_eq!(c.apply_r(&once("k1", allow)), Ok(Response::Changed));
    }

    #[test]
    fn keyed_device_uuids_are_per_cluster_key_and_name() {
        let a = keyed_device_uuid(b"cluster-key-one-0123", "k1", "d1");
        assert_eq!(a, keyed_device_uuid(b"cluster-key-one-0123", "k1", "d1"));
        assert_eq!(a.get_version_num(), 4);
        for other in [
            keyed_device_uuid(b"cluster-key-two-0123", "k1", "d1"),
            keyed_device_uuid(b"cluster-key-one-0123", "k2", "d1"),
            keyed_device_uuid(b"cluster-key-one-0123", "k1", "d2"),
            // The parts are length-prefixed: no shifting between them.
            keyed_device_uuid(b"cluster-key-one-0123", "k1d", "1"),
        ] {
            assert_ne!(a, other);
        }
    }

    #[test]
    fn keys_are_checked() {
        assert_eq!(check_key("4b0f2c1e-7d3a-4c55-9a0e-2f4d5c6b7a81"), Ok(()));
        assert_eq!(check_key("a:b.c_d-1"), Ok(()));
        assert!(check_key("").is_err());
        assert!(check_key(&"k".repeat(MAX_KEY_LEN)).is_ok());
        assert!(check_key(&"k".repeat(MAX_KEY_LEN + 1)).is_err());
        let err = check_key("has space").expect_err("space");
        assert!(err.contains("' '"), "{err}");
    }
}
