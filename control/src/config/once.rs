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
//! The table is part of the replicated state (a field of
//! [`ClusterConfig`](super::ClusterConfig), so snapshots carry it) and
//! every member decides the same way. It keeps the last [`RECENT_WRITES`]
//! keys: far more than the writes a client can have in doubt at once.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::command::{Command, ConfigError, Response};

/// How many keyed writes are remembered.
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

/// One remembered write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Done {
    key: String,
    command: Command,
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
        Some(if done.command == *command {
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
        if self.0.len() == RECENT_WRITES {
            self.0.pop_front();
        }
        self.0.push_back(Done {
            key: key.to_owned(),
            command: command.clone(),
            result: result.clone(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ClusterConfig, Object};

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

    #[test]
    fn a_keyed_write_applies_once_and_answers_the_same_again() {
        let mut c = ClusterConfig::default();
        let first = c.apply(&once("k1", create(T1)));
        assert_eq!(first, Ok(Response::Changed));
        let after_first = c.clone();
        // Sent again: the same answer, nothing applied (unkeyed, the second
        // attempt is refused as a duplicate).
        assert_eq!(c.apply(&once("k1", create(T1))), Ok(Response::Changed));
        assert_eq!(c, after_first);
        assert!(matches!(
            c.apply(&create(T1)),
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
        let refused = c.apply(&once("k2", delete.clone()));
        assert!(matches!(refused, Err(ConfigError::NotFound { .. })));
        c.apply(&create("iqn.2024-01.org.example:none"))
            .expect("create");
        assert_eq!(c.apply(&once("k2", delete.clone())), refused);

        // The same key on another request is refused and changes nothing.
        let before = c.clone();
        assert_eq!(
            c.apply(&once("k1", create("iqn.2024-01.org.example:t2"))),
            Err(ConfigError::KeyReused { key: "k1".into() })
        );
        assert_eq!(c, before);
        assert_eq!(c.recent_writes.len(), 2);
    }

    #[test]
    fn the_oldest_keys_are_forgotten_beyond_the_limit() {
        let mut c = ClusterConfig::default();
        let iqn = |i: usize| format!("iqn.2024-01.org.example:t{i}");
        for i in 0..=RECENT_WRITES {
            let r = c.apply(&once(&format!("k{i}"), create(&iqn(i))));
            assert_eq!(r, Ok(Response::Changed));
        }
        assert_eq!(c.recent_writes.len(), RECENT_WRITES);
        // k1 is still remembered.
        assert_eq!(c.apply(&once("k1", create(&iqn(1)))), Ok(Response::Changed));
        // k0 is forgotten: applied again, the command itself answers.
        assert!(matches!(
            c.apply(&once("k0", create(&iqn(0)))),
            Err(ConfigError::AlreadyExists { .. })
        ));
        assert_eq!(c.recent_writes.len(), RECENT_WRITES);
    }

    #[test]
    fn the_table_travels_with_the_configuration() {
        let mut c = ClusterConfig::default();
        // A configuration serialized before keyed writes existed decodes
        // (an empty table), and an empty table is left out.
        let plain = serde_json::to_string(&c).expect("encode");
        assert!(!plain.contains("recent_writes"), "{plain}");
        let back: ClusterConfig = serde_json::from_str(&plain).expect("decode");
        assert_eq!(back, c);
        c.apply(&once("k1", create(T1))).expect("apply");
        c.apply(&once("k2", create(T1))).expect_err("a duplicate");
        let text = serde_json::to_string(&c).expect("encode");
        let mut back: ClusterConfig = serde_json::from_str(&text).expect("decode");
        assert_eq!(back, c);
        assert_eq!(back.apply(&once("k1", create(T1))), Ok(Response::Changed));
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
