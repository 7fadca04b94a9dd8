//! `LoginMachine`: the per-connection login state machine. It checks each
//! Login Request's header against the login so far, gathers continued text
//! (C bit), resolves who is logging in to what, runs security negotiation,
//! delegates operational keys to `Negotiator`, and decides the stage
//! transitions (T bit, CSG/NSG).

use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

use super::chap::{verify, Challenge, ChapAnswer};
use super::keys::{classify, KeyKind, OpKey};
use super::negotiate::{Negotiator, Reply};
use super::{
    ChapAlgorithm, ChapPolicy, LoginContext, LoginError, LoginOutcome, LoginStatus, LoginStep,
    SessionKind, SessionParams, SessionRequest, TargetLimits,
};
use crate::pdu::{LoginRequest, LoginResponse, PduError, Stage, BHS_LEN};
use crate::text::{parse_list, parse_pairs, push_pair, IRRELEVANT, MAX_NAME_LEN, NOT_UNDERSTOOD};

/// Most text one login exchange may accumulate across continued PDUs.
pub const MAX_LOGIN_TEXT: usize = 64 * 1024;

/// Header fields fixed by the first Login Request.
#[derive(Debug, Clone, Copy)]
struct Fixed {
    isid: [u8; 6],
    tsih: u16,
    itt: u32,
    cid: u16,
    cmdsn: u32,
}

/// Identity keys declared so far.
#[derive(Debug, Default)]
struct Identity {
    initiator_name: Option<String>,
    initiator_alias: Option<String>,
    target_name: Option<String>,
    session_type: Option<String>,
}

/// Who is logging in to what, settled by the first complete request.
#[derive(Debug)]
struct Resolved {
    kind: SessionKind,
    initiator: String,
    target: Option<String>,
    chap: Option<ChapPolicy>,
}

/// Progress of security negotiation.
#[derive(Debug)]
enum Auth {
    /// AuthMethod not yet negotiated.
    Start,
    /// AuthMethod=CHAP agreed; awaiting CHAP_A.
    AwaitAlgorithm,
    /// Challenge sent; awaiting CHAP_N/CHAP_R.
    Challenged(Challenge),
    /// Authenticated (by CHAP user, or None).
    Done(Option<String>),
}

/// One connection's login phase, fed Login Requests, returning responses.
#[derive(Debug)]
pub struct LoginMachine {
    limits: TargetLimits,
    rng: StdRng,
    statsn: u32,
    stage: Option<Stage>,
    fixed: Option<Fixed>,
    text: Vec<u8>,
    identity: Identity,
    resolved: Option<Resolved>,
    auth: Auth,
    neg: Negotiator,
    declared: bool,
    finished: bool,
}

impl LoginMachine {
    /// The InitiatorName declared so far.
    pub fn initiator_name(&self) -> Option<&str> {
        self.identity.initiator_name.as_deref()
    }

    /// The TargetName declared so far.
    pub fn target_name(&self) -> Option<&str> {
        self.identity.target_name.as_deref()
    }

    /// A machine with our limits and a seed for its CSPRNG, which draws the
    /// CHAP challenges and the initial StatSN (seed from the OS RNG in production).
    pub fn new(limits: TargetLimits, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let statsn = rng.next_u32();
        Self {
            limits,
            rng,
            statsn,
            stage: None,
            fixed: None,
            text: Vec::new(),
            identity: Identity::default(),
            resolved: None,
            auth: Auth::Start,
            neg: Negotiator::default(),
            declared: false,
            finished: false,
        }
    }

    /// Replaces the initial StatSN (before the first request).
    pub fn with_initial_statsn(mut self, statsn: u32) -> Self {
        self.statsn = statsn;
        self
    }

    /// A machine seeded from the operating system's RNG.
    pub fn from_entropy(limits: TargetLimits) -> Self {
        Self::new(limits, rand::rngs::OsRng.next_u64())
    }

    /// The stage the login is in (None before the first request).
    pub fn stage(&self) -> Option<Stage> {
        self.stage
    }

    /// Whether the login completed or failed.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Handles one Login Request and its data segment.
    pub fn handle(
        &mut self,
        req: &LoginRequest,
        data: &[u8],
        ctx: &mut dyn LoginContext,
    ) -> LoginStep {
        match self.step(req, data, ctx) {
            Ok(step) => step,
            Err(e) => {
                let mut response = self.response(req, false, Stage::SecurityNegotiation, 0, 0);
                let status = e.status();
                response.status_class = status.class();
                response.status_detail = status.detail();
                self.finished = true;
                LoginStep {
                    response,
                    data: Vec::new(),
                    outcome: LoginOutcome::Failed,
                    error: Some(e),
                }
            }
        }
    }

    /// Answers a Login Request whose header did not parse (e.g. a reserved
    /// stage) with an initiator-error response; the login is over.
    pub fn handle_malformed(&mut self, bhs: &[u8; BHS_LEN], err: PduError) -> LoginStep {
        let e = LoginError::Header(err);
        let status = e.status();
        let mut isid = [0u8; 6];
        isid.copy_from_slice(&bhs[8..14]);
        let stage = self.stage.unwrap_or(Stage::SecurityNegotiation);
        let response = LoginResponse {
            transit: false,
            continue_: false,
            csg: stage,
            nsg: Stage::SecurityNegotiation,
            version_max: 0,
            version_active: 0,
            total_ahs_len: 0,
            data_segment_len: 0,
            isid,
            tsih: 0,
            itt: crate::pdu::itt(bhs),
            statsn: self.next_statsn(),
            exp_cmdsn: 0,
            max_cmdsn: 0,
            status_class: status.class(),
            status_detail: status.detail(),
        };
        self.finished = true;
        LoginStep {
            response,
            data: Vec::new(),
            outcome: LoginOutcome::Failed,
            error: Some(e),
        }
    }

    fn next_statsn(&mut self) -> u32 {
        let s = self.statsn;
        self.statsn = self.statsn.wrapping_add(1);
        s
    }

    /// A success-status response header; consumes one StatSN.
    fn response(
        &mut self,
        req: &LoginRequest,
        transit: bool,
        nsg: Stage,
        tsih: u16,
        data_len: usize,
    ) -> LoginResponse {
        let cmdsn = self.fixed.map_or(req.cmdsn, |f| f.cmdsn);
        LoginResponse {
            transit,
            continue_: false,
            csg: req.csg,
            nsg: if transit {
                nsg
            } else {
                Stage::SecurityNegotiation
            },
            version_max: 0,
            version_active: 0,
            total_ahs_len: 0,
            data_segment_len: u32::try_from(data_len).unwrap_or(u32::MAX),
            isid: req.isid,
            tsih,
            itt: req.itt,
            statsn: self.next_statsn(),
            exp_cmdsn: cmdsn,
            max_cmdsn: cmdsn.wrapping_add(self.limits.cmdsn_window.max(1) - 1),
            status_class: 0,
            status_detail: 0,
        }
    }

    fn step(
        &mut self,
        req: &LoginRequest,
        data: &[u8],
        ctx: &mut dyn LoginContext,
    ) -> Result<LoginStep, LoginError> {
        if self.finished {
            return Err(LoginError::Finished);
        }
        self.check_header(req)?;
        self.text.extend_from_slice(data);
        if self.text.len() > MAX_LOGIN_TEXT {
            return Err(LoginError::TextTooLong(MAX_LOGIN_TEXT));
        }
        if req.continue_ {
            // RFC 7143 §6.1: acknowledge a continued request with an empty response.
            let response = self.response(req, false, req.csg, 0, 0);
            return Ok(LoginStep {
                response,
                data: Vec::new(),
                outcome: LoginOutcome::Continue,
                error: None,
            });
        }
        let text = std::mem::take(&mut self.text);
        let pairs = parse_pairs(&text)?;
        let mut out: Vec<Reply> = Vec::new();

        for (k, v) in &pairs {
            if classify(k) == KeyKind::Identity {
                self.declare_identity(k, v)?;
            }
        }
        let first = self.resolved.is_none();
        if first {
            self.resolve(req, ctx)?;
            if self.kind() == SessionKind::Normal {
                // RFC 7143 §13.9: returned in the response to the first request.
                out.push((
                    "TargetPortalGroupTag".to_owned(),
                    self.limits.target_portal_group_tag.to_string(),
                ));
            }
        }

        let discovery = self.kind() == SessionKind::Discovery;
        let mut ops: Vec<(OpKey, &str)> = Vec::new();
        let mut security: Vec<(&str, &str)> = Vec::new();
        for (k, v) in &pairs {
            match classify(k) {
                KeyKind::Identity | KeyKind::TargetDeclared => {}
                KeyKind::Security => security.push((k, v)),
                KeyKind::Operational(op) => ops.push((op, v)),
                KeyKind::Unknown => out.push((k.clone(), NOT_UNDERSTOOD.to_owned())),
            }
        }
        if req.csg == Stage::SecurityNegotiation {
            self.security(&security, &mut out)?;
        } else {
            for (k, _) in &security {
                if *k == "AuthMethod" {
                    out.push(((*k).to_owned(), IRRELEVANT.to_owned()));
                } else {
                    return Err(LoginError::SecurityKeyOutOfStage((*k).to_owned()));
                }
            }
        }
        self.neg
            .negotiate(&ops, &self.limits, discovery, &mut out)?;

        self.transition(req, ctx, out)
    }

    /// Checks version, constant fields, stage and T/C/NSG of a request.
    fn check_header(&mut self, req: &LoginRequest) -> Result<(), LoginError> {
        match self.fixed {
            None => {
                // Only version 0x00 exists; it must lie in [min, max].
                if req.version_min > 0 {
                    return Err(LoginError::UnsupportedVersion {
                        min: req.version_min,
                        max: req.version_max,
                    });
                }
                if req.csg == Stage::FullFeaturePhase {
                    return Err(LoginError::WrongStage {
                        expected: Stage::SecurityNegotiation,
                        got: req.csg,
                    });
                }
                self.fixed = Some(Fixed {
                    isid: req.isid,
                    tsih: req.tsih,
                    itt: req.itt,
                    cid: req.cid,
                    cmdsn: req.cmdsn,
                });
                self.stage = Some(req.csg);
            }
            Some(f) => {
                if f.isid != req.isid {
                    return Err(LoginError::FieldChanged("ISID"));
                }
                if f.tsih != req.tsih {
                    return Err(LoginError::FieldChanged("TSIH"));
                }
                if f.itt != req.itt {
                    return Err(LoginError::FieldChanged("ITT"));
                }
                if f.cid != req.cid {
                    return Err(LoginError::FieldChanged("CID"));
                }
                let expected = self.stage.unwrap_or(Stage::SecurityNegotiation);
                if req.csg != expected {
                    return Err(LoginError::WrongStage {
                        expected,
                        got: req.csg,
                    });
                }
            }
        }
        if req.transit && req.continue_ {
            return Err(LoginError::TransitWithContinue);
        }
        if req.transit && req.nsg <= req.csg {
            return Err(LoginError::InvalidTransition {
                csg: req.csg,
                nsg: req.nsg,
            });
        }
        Ok(())
    }

    fn declare_identity(&mut self, key: &str, value: &str) -> Result<(), LoginError> {
        let (slot, what) = match key {
            "InitiatorName" => (&mut self.identity.initiator_name, "InitiatorName"),
            "TargetName" => (&mut self.identity.target_name, "TargetName"),
            "SessionType" => (&mut self.identity.session_type, "SessionType"),
            _ => (&mut self.identity.initiator_alias, "InitiatorAlias"),
        };
        if matches!(what, "InitiatorName" | "TargetName")
            && (value.is_empty() || value.len() > MAX_NAME_LEN)
        {
            return Err(LoginError::BadName(what));
        }
        match slot {
            Some(old) if old != value => Err(LoginError::IdentityChanged(what)),
            Some(_) => Ok(()),
            None => {
                *slot = Some(value.to_owned());
                Ok(())
            }
        }
    }

    fn kind(&self) -> SessionKind {
        self.resolved
            .as_ref()
            .map_or(SessionKind::Normal, |r| r.kind)
    }

    /// Settles session type, target, ACL, TSIH and the auth requirement.
    fn resolve(
        &mut self,
        req: &LoginRequest,
        ctx: &mut dyn LoginContext,
    ) -> Result<(), LoginError> {
        let initiator = self
            .identity
            .initiator_name
            .clone()
            .ok_or(LoginError::MissingKey("InitiatorName"))?;
        let kind = match self.identity.session_type.as_deref() {
            None | Some("Normal") => SessionKind::Normal,
            Some("Discovery") => SessionKind::Discovery,
            Some(other) => return Err(LoginError::UnsupportedSessionType(other.to_owned())),
        };
        let target = match kind {
            SessionKind::Discovery => None,
            SessionKind::Normal => {
                let t = self
                    .identity
                    .target_name
                    .clone()
                    .ok_or(LoginError::MissingKey("TargetName"))?;
                if !ctx.target_exists(&t) {
                    return Err(LoginError::TargetNotFound(t));
                }
                Some(t)
            }
        };
        if !ctx.initiator_allowed(target.as_deref(), &initiator) {
            return Err(LoginError::NotAuthorized);
        }
        if req.tsih != 0 {
            // One connection per session: joining an existing one is refused.
            return Err(if ctx.session_exists(&initiator, req.isid, req.tsih) {
                LoginError::TooManyConnections
            } else {
                LoginError::SessionDoesNotExist
            });
        }
        let chap = ctx.chap(target.as_deref(), &initiator);
        if chap.is_some() && req.csg != Stage::SecurityNegotiation {
            return Err(LoginError::Authentication(
                "security negotiation skipped while CHAP is required",
            ));
        }
        self.resolved = Some(Resolved {
            kind,
            initiator,
            target,
            chap,
        });
        Ok(())
    }

    /// Security negotiation keys of one complete request, in order.
    fn security(&mut self, keys: &[(&str, &str)], out: &mut Vec<Reply>) -> Result<(), LoginError> {
        let policy = self.resolved.as_ref().and_then(|r| r.chap.clone());
        let mut answer = ChapAnswer::default();
        for &(k, v) in keys {
            match k {
                "AuthMethod" => {
                    if !matches!(self.auth, Auth::Start) {
                        return Err(LoginError::Renegotiated(k.to_owned()));
                    }
                    let offers_chap = parse_list(v).any(|m| m == "CHAP");
                    let offers_none = parse_list(v).any(|m| m == "None");
                    if policy.is_some() {
                        if !offers_chap {
                            return Err(LoginError::Authentication("CHAP required, not offered"));
                        }
                        out.push((k.to_owned(), "CHAP".to_owned()));
                        self.auth = Auth::AwaitAlgorithm;
                    } else if offers_none {
                        out.push((k.to_owned(), "None".to_owned()));
                        self.auth = Auth::Done(None);
                    } else {
                        return Err(LoginError::Authentication("no common AuthMethod"));
                    }
                }
                "CHAP_A" => {
                    if !matches!(self.auth, Auth::AwaitAlgorithm) {
                        return Err(LoginError::Authentication("unexpected CHAP_A"));
                    }
                    let alg = ChapAlgorithm::choose(v)
                        .ok_or(LoginError::Authentication("no supported CHAP_A"))?;
                    let challenge = Challenge::new(alg, &mut self.rng);
                    for (ck, cv) in challenge.announce() {
                        out.push((ck.to_owned(), cv));
                    }
                    self.auth = Auth::Challenged(challenge);
                }
                "CHAP_N" => answer.name = Some(v),
                "CHAP_R" => answer.response = Some(v),
                "CHAP_I" => answer.mutual_id = Some(v),
                _ => answer.mutual_challenge = Some(v),
            }
        }
        let answered = answer.name.is_some()
            || answer.response.is_some()
            || answer.mutual_id.is_some()
            || answer.mutual_challenge.is_some();
        if answered {
            let (Auth::Challenged(challenge), Some(policy)) = (&self.auth, policy.as_ref()) else {
                return Err(LoginError::Authentication("unexpected CHAP response"));
            };
            let replies = verify(challenge, policy, &answer)?;
            for (rk, rv) in replies {
                out.push((rk.to_owned(), rv));
            }
            self.auth = Auth::Done(Some(policy.user.clone()));
        }
        Ok(())
    }

    /// Decides T/NSG of the response, finishing the login when it reaches FFP.
    fn transition(
        &mut self,
        req: &LoginRequest,
        ctx: &mut dyn LoginContext,
        mut out: Vec<Reply>,
    ) -> Result<LoginStep, LoginError> {
        let discovery = self.kind() == SessionKind::Discovery;
        let chap_required = self.resolved.as_ref().is_some_and(|r| r.chap.is_some());
        let mut transit = req.transit;
        let mut nsg = req.nsg;

        if req.csg == Stage::SecurityNegotiation && transit {
            match &self.auth {
                Auth::Done(_) => {}
                Auth::Start if !chap_required => {}
                Auth::Start => return Err(LoginError::Authentication("AuthMethod not negotiated")),
                // CHAP still in progress: keep the initiator in this stage.
                Auth::AwaitAlgorithm | Auth::Challenged(_) => transit = false,
            }
            if transit && nsg == Stage::FullFeaturePhase {
                // Always pass through the operational stage: our
                // MaxRecvDataSegmentLength declaration and any offers of ours
                // belong there. A target may answer with a lower NSG.
                nsg = Stage::LoginOperationalNegotiation;
            }
        }
        if req.csg == Stage::LoginOperationalNegotiation && transit {
            let offers = self.neg.make_offers(&self.limits, discovery);
            if !offers.is_empty() || self.neg.has_pending() {
                out.extend(offers);
                transit = false;
            }
        }
        let finishing = transit && nsg == Stage::FullFeaturePhase;
        if !self.declared && req.csg == Stage::LoginOperationalNegotiation {
            self.declared = true;
            out.push((
                "MaxRecvDataSegmentLength".to_owned(),
                self.limits.max_recv_data_segment_length.to_string(),
            ));
            if let Some(alias) = self
                .resolved
                .as_ref()
                .and_then(|r| r.target.as_deref())
                .and_then(|t| ctx.target_alias(t))
            {
                out.push(("TargetAlias".to_owned(), alias));
            }
        }

        let mut data = Vec::new();
        for (k, v) in &out {
            push_pair(&mut data, k, v);
        }

        if finishing {
            let params = self.finish(req, ctx)?;
            let response = self.response(req, true, nsg, params.tsih, data.len());
            let mut params = params;
            params.max_cmdsn = response.max_cmdsn;
            params.next_statsn = self.statsn;
            self.finished = true;
            return Ok(LoginStep {
                response,
                data,
                outcome: LoginOutcome::FullFeature(Box::new(params)),
                error: None,
            });
        }
        if transit {
            self.stage = Some(nsg);
        }
        let response = self.response(req, transit, nsg, 0, data.len());
        Ok(LoginStep {
            response,
            data,
            outcome: LoginOutcome::Continue,
            error: None,
        })
    }

    /// Final checks, session allocation and the negotiated parameters.
    fn finish(
        &mut self,
        req: &LoginRequest,
        ctx: &mut dyn LoginContext,
    ) -> Result<SessionParams, LoginError> {
        self.neg.finish(&self.limits)?;
        let resolved = self
            .resolved
            .as_ref()
            .ok_or(LoginError::MissingKey("InitiatorName"))?;
        let fixed = self.fixed.ok_or(LoginError::Finished)?;
        let request = SessionRequest {
            initiator_name: resolved.initiator.clone(),
            isid: fixed.isid,
            tsih: req.tsih,
            target: resolved.target.clone(),
            kind: resolved.kind,
            cid: fixed.cid,
        };
        let tsih = match ctx.allocate_session(&request) {
            Ok(0) | Err(LoginStatus::Success) => {
                return Err(LoginError::Allocation(LoginStatus::TargetError))
            }
            Ok(tsih) => tsih,
            Err(status) => return Err(LoginError::Allocation(status)),
        };
        let v = &self.neg.values;
        let chap_user = match &self.auth {
            Auth::Done(user) => user.clone(),
            _ => None,
        };
        Ok(SessionParams {
            kind: resolved.kind,
            initiator_name: resolved.initiator.clone(),
            initiator_alias: self.identity.initiator_alias.clone(),
            target_name: resolved.target.clone(),
            isid: fixed.isid,
            tsih,
            cid: fixed.cid,
            chap_user,
            header_digest: v.header_digest,
            data_digest: v.data_digest,
            max_recv_data_segment_length_initiator: v.mrdsl_initiator,
            max_recv_data_segment_length_target: self.limits.max_recv_data_segment_length,
            max_burst_length: v.max_burst_length,
            first_burst_length: v.first_burst_length,
            immediate_data: v.immediate_data,
            initial_r2t: v.initial_r2t,
            max_outstanding_r2t: v.max_outstanding_r2t,
            data_pdu_in_order: v.data_pdu_in_order,
            data_sequence_in_order: v.data_sequence_in_order,
            default_time2wait: v.default_time2wait,
            default_time2retain: v.default_time2retain,
            error_recovery_level: v.error_recovery_level,
            max_connections: v.max_connections,
            protocol_level: v.protocol_level,
            target_portal_group_tag: self.limits.target_portal_group_tag,
            exp_cmdsn_start: fixed.cmdsn,
            max_cmdsn: 0,
            next_statsn: 0,
        })
    }
}
