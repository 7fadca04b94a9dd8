//! Sans-IO login phase of one connection (RFC 7143 §6, §12, §13).
//!
//! ```text
//! Login Request + data -> LoginMachine::handle(ctx) -> LoginStep { response, data, outcome }
//!   SecurityNegotiation (AuthMethod, CHAP)   -- skipped when no auth is required
//!   -> LoginOperationalNegotiation (keys.rs, negotiate.rs)
//!   -> FullFeaturePhase: SessionParams for the session layer
//! ```
//! The machine never touches a socket, clock or global RNG: the driver feeds
//! it parsed Login Requests and sends back what it returns; CHAP challenges
//! come from a seeded CSPRNG owned by the machine. Every failure is a
//! `LoginError`, mapped to a Status-Class/Detail in exactly one place
//! (`LoginError::status`).

mod chap;
mod keys;
mod machine;
mod negotiate;
#[cfg(test)]
mod tests;

pub use chap::{ct_eq, ChapAlgorithm};
pub use machine::LoginMachine;

use crate::pdu::{LoginResponse, PduError};
use crate::text::TextError;

/// Which digest values the target accepts for HeaderDigest/DataDigest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestPolicy {
    /// Only None.
    None,
    /// Only CRC32C (the login fails if the initiator will not use it).
    Crc32c,
    /// Either; the initiator's order of preference decides.
    Either,
}

impl DigestPolicy {
    /// Whether the digest named `value` (None / CRC32C) is acceptable.
    pub fn accepts(self, value: &str) -> bool {
        match value {
            "None" => matches!(self, Self::None | Self::Either),
            "CRC32C" => matches!(self, Self::Crc32c | Self::Either),
            _ => false,
        }
    }
}

/// The target's side of operational negotiation: what it offers and accepts.
///
/// Results follow RFC 7143 §13: min for lengths and counts, OR for
/// InitialR2T/DataPDUInOrder/DataSequenceInOrder, AND for ImmediateData, max
/// for DefaultTime2Wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetLimits {
    /// MaxRecvDataSegmentLength we declare (512..=2^24-1).
    pub max_recv_data_segment_length: u32,
    /// Largest MaxBurstLength we accept (512..=2^24-1).
    pub max_burst_length: u32,
    /// Largest FirstBurstLength we accept (512..=2^24-1, ≤ max_burst_length).
    pub first_burst_length: u32,
    /// Largest MaxOutstandingR2T we accept (1..=65535).
    pub max_outstanding_r2t: u32,
    /// Whether we allow immediate data (ImmediateData, AND).
    pub immediate_data: bool,
    /// Whether we insist on an R2T before any unsolicited Data-Out (InitialR2T, OR).
    pub initial_r2t: bool,
    /// Our DefaultTime2Wait (0..=3600, max).
    pub default_time2wait: u16,
    /// Our DefaultTime2Retain (0..=3600, min).
    pub default_time2retain: u16,
    /// MaxConnections we offer (one connection per session).
    pub max_connections: u16,
    /// ErrorRecoveryLevel we support (0).
    pub error_recovery_level: u8,
    /// Accepted HeaderDigest values.
    pub header_digest: DigestPolicy,
    /// Accepted DataDigest values.
    pub data_digest: DigestPolicy,
    /// TargetPortalGroupTag of the portal the connection came in on.
    pub target_portal_group_tag: u16,
    /// CmdSN window granted at login: MaxCmdSN = ExpCmdSN + window - 1.
    pub cmdsn_window: u32,
}

impl Default for TargetLimits {
    /// A production target: 256 KiB PDUs, 1 MiB bursts, immediate data and
    /// unsolicited data allowed (InitialR2T=No) so small writes take one
    /// round trip, several R2Ts in flight, digests at the initiator's choice.
    fn default() -> Self {
        Self {
            max_recv_data_segment_length: 256 * 1024,
            max_burst_length: 1024 * 1024,
            first_burst_length: 256 * 1024,
            max_outstanding_r2t: 8,
            immediate_data: true,
            initial_r2t: false,
            default_time2wait: 2,
            default_time2retain: 20,
            max_connections: 1,
            error_recovery_level: 0,
            header_digest: DigestPolicy::Either,
            data_digest: DigestPolicy::Either,
            target_portal_group_tag: 1,
            cmdsn_window: 128,
        }
    }
}

/// CHAP credentials that apply to one initiator (and target).
#[derive(Clone, PartialEq, Eq)]
pub struct ChapPolicy {
    /// Name the initiator must present in CHAP_N.
    pub user: String,
    /// Secret shared with the initiator.
    pub secret: Vec<u8>,
    /// Target's CHAP_N and secret, used when the initiator asks for mutual CHAP.
    pub mutual: Option<(String, Vec<u8>)>,
}

impl std::fmt::Debug for ChapPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChapPolicy")
            .field("user", &self.user)
            .field("secret", &"<redacted>")
            .field("mutual", &self.mutual.as_ref().map(|(n, _)| n))
            .finish()
    }
}

/// Discovery or Normal session (SessionType key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionKind {
    /// SessionType=Discovery: SendTargets only.
    Discovery,
    /// SessionType=Normal: SCSI to one target.
    Normal,
}

/// What the target driver needs to create (or join) a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRequest {
    /// InitiatorName.
    pub initiator_name: String,
    /// ISID from the Login Request.
    pub isid: [u8; 6],
    /// TSIH from the Login Request: 0 for a new session.
    pub tsih: u16,
    /// TargetName (None for discovery).
    pub target: Option<String>,
    /// Session type.
    pub kind: SessionKind,
    /// Connection ID.
    pub cid: u16,
}

/// Status-Class/Status-Detail of a Login Response (RFC 7143 §11.13.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LoginStatus {
    /// 0x0000 success.
    Success,
    /// 0x0200 initiator error (protocol violation).
    InitiatorError,
    /// 0x0201 authentication failure.
    AuthenticationFailure,
    /// 0x0202 authorization failure.
    AuthorizationFailure,
    /// 0x0203 target not found.
    NotFound,
    /// 0x0204 target removed.
    TargetRemoved,
    /// 0x0205 unsupported version.
    UnsupportedVersion,
    /// 0x0206 too many connections.
    TooManyConnections,
    /// 0x0207 missing parameter.
    MissingParameter,
    /// 0x0208 cannot include in session.
    CannotIncludeInSession,
    /// 0x0209 session type not supported.
    SessionTypeNotSupported,
    /// 0x020a session does not exist.
    SessionDoesNotExist,
    /// 0x020b invalid request during login.
    InvalidDuringLogin,
    /// 0x0300 target error.
    TargetError,
    /// 0x0301 service unavailable.
    ServiceUnavailable,
    /// 0x0302 out of resources.
    OutOfResources,
}

impl LoginStatus {
    /// The 16-bit class<<8 | detail code.
    pub fn code(self) -> u16 {
        match self {
            Self::Success => 0x0000,
            Self::InitiatorError => 0x0200,
            Self::AuthenticationFailure => 0x0201,
            Self::AuthorizationFailure => 0x0202,
            Self::NotFound => 0x0203,
            Self::TargetRemoved => 0x0204,
            Self::UnsupportedVersion => 0x0205,
            Self::TooManyConnections => 0x0206,
            Self::MissingParameter => 0x0207,
            Self::CannotIncludeInSession => 0x0208,
            Self::SessionTypeNotSupported => 0x0209,
            Self::SessionDoesNotExist => 0x020a,
            Self::InvalidDuringLogin => 0x020b,
            Self::TargetError => 0x0300,
            Self::ServiceUnavailable => 0x0301,
            Self::OutOfResources => 0x0302,
        }
    }

    /// Status-Class.
    pub fn class(self) -> u8 {
        (self.code() >> 8) as u8
    }

    /// Status-Detail.
    pub fn detail(self) -> u8 {
        self.code() as u8
    }
}

/// Implemented by the target driver: the configuration and session table
/// the login consults. Tests use a fake.
pub trait LoginContext {
    /// Whether a target of this name is configured.
    fn target_exists(&self, target: &str) -> bool;
    /// Whether `initiator` may log in to `target` (None = discovery).
    fn initiator_allowed(&self, target: Option<&str>, initiator: &str) -> bool;
    /// CHAP credentials required for this pair; None accepts AuthMethod=None.
    fn chap(&self, target: Option<&str>, initiator: &str) -> Option<ChapPolicy>;
    /// TargetAlias to declare, if any.
    fn target_alias(&self, target: &str) -> Option<String>;
    /// Whether a session with this initiator, ISID and TSIH exists (TSIH ≠ 0 logins).
    fn session_exists(&self, _initiator: &str, _isid: [u8; 6], _tsih: u16) -> bool {
        false
    }
    /// Creates the session just before the final transition; returns its TSIH (≠ 0).
    fn allocate_session(&mut self, req: &SessionRequest) -> Result<u16, LoginStatus>;
}

/// Every value a session needs from its login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionParams {
    /// Discovery or Normal.
    pub kind: SessionKind,
    /// InitiatorName.
    pub initiator_name: String,
    /// InitiatorAlias, if declared.
    pub initiator_alias: Option<String>,
    /// TargetName (None for discovery).
    pub target_name: Option<String>,
    /// ISID.
    pub isid: [u8; 6],
    /// TSIH assigned by `allocate_session`.
    pub tsih: u16,
    /// Connection ID.
    pub cid: u16,
    /// CHAP user that authenticated, if CHAP was used.
    pub chap_user: Option<String>,
    /// HeaderDigest=CRC32C in force.
    pub header_digest: bool,
    /// DataDigest=CRC32C in force.
    pub data_digest: bool,
    /// Initiator's MaxRecvDataSegmentLength: the most we may send per PDU.
    pub max_recv_data_segment_length_initiator: u32,
    /// Our declared MaxRecvDataSegmentLength: the most we accept per PDU.
    pub max_recv_data_segment_length_target: u32,
    /// MaxBurstLength.
    pub max_burst_length: u32,
    /// FirstBurstLength (≤ MaxBurstLength).
    pub first_burst_length: u32,
    /// ImmediateData.
    pub immediate_data: bool,
    /// InitialR2T.
    pub initial_r2t: bool,
    /// MaxOutstandingR2T.
    pub max_outstanding_r2t: u32,
    /// DataPDUInOrder.
    pub data_pdu_in_order: bool,
    /// DataSequenceInOrder.
    pub data_sequence_in_order: bool,
    /// DefaultTime2Wait in seconds.
    pub default_time2wait: u16,
    /// DefaultTime2Retain in seconds.
    pub default_time2retain: u16,
    /// ErrorRecoveryLevel.
    pub error_recovery_level: u8,
    /// MaxConnections.
    pub max_connections: u16,
    /// iSCSIProtocolLevel (1 unless negotiated lower).
    pub protocol_level: u8,
    /// TargetPortalGroupTag of the login's portal.
    pub target_portal_group_tag: u16,
    /// CmdSN of the login: the first non-immediate command carries it.
    pub exp_cmdsn_start: u32,
    /// MaxCmdSN granted in the final Login Response.
    pub max_cmdsn: u32,
    /// StatSN for the first response after login.
    pub next_statsn: u32,
}

impl SessionParams {
    /// Whether this is a discovery session.
    pub fn is_discovery(&self) -> bool {
        self.kind == SessionKind::Discovery
    }
}

/// What the driver does after sending a step's response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginOutcome {
    /// Wait for the next Login Request.
    Continue,
    /// Login complete: enter full feature phase with these parameters.
    FullFeature(Box<SessionParams>),
    /// Login failed: close the connection after sending the response
    /// (`LoginStep::error` says why).
    Failed,
}

/// One Login Response to send and what follows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginStep {
    /// The header, with DataSegmentLength set to `data.len()`.
    pub response: LoginResponse,
    /// The text data segment.
    pub data: Vec<u8>,
    /// What to do after sending.
    pub outcome: LoginOutcome,
    /// Why the login failed, when `outcome` is `Failed`.
    pub error: Option<LoginError>,
}

/// Why a login failed; `status` maps each to the wire.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    /// Version-min/max do not include version 0.
    #[error("unsupported version range {min}..={max}")]
    UnsupportedVersion {
        /// Version-min.
        min: u8,
        /// Version-max.
        max: u8,
    },
    /// A field that must stay constant across the login changed.
    #[error("{0} changed during login")]
    FieldChanged(&'static str),
    /// The request's CSG is not the stage the login is in.
    #[error("request for stage {got:?} while in {expected:?}")]
    WrongStage {
        /// Our stage.
        expected: crate::pdu::Stage,
        /// The request's CSG.
        got: crate::pdu::Stage,
    },
    /// T requests an illegal stage transition.
    #[error("invalid transition from {csg:?} to {nsg:?}")]
    InvalidTransition {
        /// Current stage.
        csg: crate::pdu::Stage,
        /// Requested next stage.
        nsg: crate::pdu::Stage,
    },
    /// Both T and C set.
    #[error("T and C bits both set")]
    TransitWithContinue,
    /// Continued text beyond the limit.
    #[error("login text exceeds {0} bytes")]
    TextTooLong(usize),
    /// Malformed text.
    #[error("bad login text")]
    Text(#[from] TextError),
    /// Malformed Login Request header.
    #[error("bad login header")]
    Header(#[source] PduError),
    /// A required key is missing.
    #[error("missing key {0}")]
    MissingKey(&'static str),
    /// An iSCSI name is empty or too long.
    #[error("invalid {0}")]
    BadName(&'static str),
    /// An identity key was re-declared with another value.
    #[error("{0} re-declared with a different value")]
    IdentityChanged(&'static str),
    /// SessionType not Discovery or Normal.
    #[error("unsupported session type {0:?}")]
    UnsupportedSessionType(String),
    /// TargetName not configured.
    #[error("target {0:?} not found")]
    TargetNotFound(String),
    /// ACL forbids this initiator.
    #[error("initiator not authorized")]
    NotAuthorized,
    /// TSIH ≠ 0 names no session.
    #[error("session does not exist")]
    SessionDoesNotExist,
    /// A second connection to an existing session (MaxConnections=1).
    #[error("too many connections")]
    TooManyConnections,
    /// Authentication failed or was skipped while required.
    #[error("authentication failed: {0}")]
    Authentication(&'static str),
    /// A key was negotiated twice in one login.
    #[error("key {0} renegotiated")]
    Renegotiated(String),
    /// A security key arrived outside the security stage.
    #[error("security key {0} outside security negotiation")]
    SecurityKeyOutOfStage(String),
    /// A negotiated digest violates our policy.
    #[error("{0} not acceptable to the target's digest policy")]
    DigestPolicy(&'static str),
    /// The initiator answered a target offer with an illegal value.
    #[error("bad answer {value:?} to offered key {key}")]
    BadAnswer {
        /// Key.
        key: String,
        /// Value.
        value: String,
    },
    /// The target driver refused the session.
    #[error("session allocation refused: {0:?}")]
    Allocation(LoginStatus),
    /// A Login Request after the login completed or failed.
    #[error("login already finished")]
    Finished,
}

impl LoginError {
    /// The Login Response status for this failure (the one mapping to the wire).
    pub fn status(&self) -> LoginStatus {
        match self {
            Self::UnsupportedVersion { .. } => LoginStatus::UnsupportedVersion,
            Self::MissingKey(_) => LoginStatus::MissingParameter,
            Self::UnsupportedSessionType(_) => LoginStatus::SessionTypeNotSupported,
            // An initiator a target does not admit is told the target is
            // not there, as for a target that does not exist: the answer
            // does not tell an outsider which target names exist.
            Self::TargetNotFound(_) | Self::NotAuthorized => LoginStatus::NotFound,
            Self::SessionDoesNotExist => LoginStatus::SessionDoesNotExist,
            Self::TooManyConnections => LoginStatus::TooManyConnections,
            Self::Authentication(_) => LoginStatus::AuthenticationFailure,
            Self::Allocation(status) => *status,
            Self::FieldChanged(_)
            | Self::WrongStage { .. }
            | Self::InvalidTransition { .. }
            | Self::TransitWithContinue
            | Self::TextTooLong(_)
            | Self::Text(_)
            | Self::Header(_)
            | Self::BadName(_)
            | Self::IdentityChanged(_)
            | Self::Renegotiated(_)
            | Self::SecurityKeyOutOfStage(_)
            | Self::DigestPolicy(_)
            | Self::BadAnswer { .. }
            | Self::Finished => LoginStatus::InitiatorError,
        }
    }
}
