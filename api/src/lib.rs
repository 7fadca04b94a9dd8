//! The JSON bodies of the Trellis management API: what a client sends
//! (requests) and what a member answers (views), shared by the server
//! (`trellis-control`'s `api`) and the CLI (`trellis-cli`), so that the two
//! cannot drift apart. Plain serde data: no HTTP, no cluster logic; the
//! server builds views from its configuration and turns requests into
//! commands itself.
//!
//! ```text
//!  CLI ── request body (Serialize) ──> HTTP ──> control::api (Deserialize, checks) ──> Raft
//!  CLI <── view (Deserialize) ──────── HTTP <── control::api (built from its replica)
//! ```
//!
//! - Requests refuse unknown fields, so that a misspelt field is an error
//!   naming it rather than a silently ignored option; optional fields a
//!   client leaves out are not sent at all.
//! - Views take unknown fields, so that a client keeps working when a newer
//!   member adds some. They never carry CHAP secrets.
//! - Every error answer is an [`ErrorBody`]; a write that returns no object
//!   answers a [`WriteResult`].
#![forbid(unsafe_code)]

mod cluster;
mod devices;
mod failover;
mod targets;

pub use cluster::*;
pub use devices::*;
pub use failover::*;
pub use targets::*;

use serde::{Deserialize, Serialize};

/// The body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// What went wrong, for programs (`code`) and people (`message`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// A stable snake_case code (`not_found`, `no_leader`...).
    pub code: String,
    /// A sentence for people.
    pub message: String,
}

/// The answer to a write that returns no object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteResult {
    /// Whether the configuration changed.
    pub result: Outcome,
}

/// What a write did: `"changed"` or `"unchanged"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The configuration changed.
    Changed,
    /// The write asked for what was already there.
    Unchanged,
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::json;

    use super::*;

    #[test]
    fn requests_round_trip_without_their_absent_fields() {
        let allow = AllowInitiator {
            initiator: "iqn.1998-01.com.vmware:host1".into(),
            chap_user: Some("host1".into()),
            chap_secret: Some("0123456789ab".into()),
            mutual_chap_user: None,
            mutual_chap_secret: None,
            luns: Some(BTreeSet::from([0, 2])),
        };
        let text = serde_json::to_string(&allow).unwrap();
        assert_eq!(
            serde_json::from_str::<AllowInitiator>(&text).unwrap(),
            allow
        );
        assert!(!text.contains("mutual"), "{text}");

        let create = CreateDevice {
            name: "d1".into(),
            size: 4096,
            backing: None,
            block_size: None,
            thin: true,
            read_only: false,
            uuid: None,
            set: None,
            policy: None,
            others: None,
        };
        let value = serde_json::to_value(&create).unwrap();
        assert_eq!(
            value,
            json!({"name": "d1", "size": 4096, "thin": true, "read_only": false})
        );
        assert_eq!(
            serde_json::from_value::<CreateDevice>(value).unwrap(),
            create
        );
    }

    #[test]
    fn requests_refuse_unknown_fields_and_views_take_them() {
        let err = serde_json::from_value::<CreateDevice>(
            json!({"name": "d1", "size": 4096, "thin_provisioned": true}),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("unknown field `thin_provisioned`"),
            "{err}"
        );
        assert!(
            serde_json::from_value::<MapLun>(json!({"device": "d1", "lun": 0, "x": 1})).is_err()
        );

        let result: WriteResult =
            serde_json::from_value(json!({"result": "unchanged", "later": true})).unwrap();
        assert_eq!(result.result, Outcome::Unchanged);
        assert_eq!(
            serde_json::to_value(WriteResult {
                result: Outcome::Changed
            })
            .unwrap(),
            json!({"result": "changed"})
        );
    }
}
