//! Operational key negotiation (RFC 7143 §6.2, §13): answering the
//! initiator's offers with the result functions, making our own offers for
//! keys whose defaults exceed our limits, and checking the final values.

use super::keys::{BoolFn, NumFn, OpKey, OpValues, MAX_LEN_24};
use super::{DigestPolicy, LoginError, TargetLimits};
use crate::text::{bool_str, parse_bool, parse_list, parse_number_in, Special, IRRELEVANT, REJECT};

/// A response or offer pair.
pub(crate) type Reply = (String, String);

/// Negotiation state of one login's operational keys.
#[derive(Debug, Default)]
pub(crate) struct Negotiator {
    /// Current values (RFC defaults until negotiated).
    pub values: OpValues,
    /// Keys already negotiated or declared in this login.
    seen: Vec<OpKey>,
    /// Our offers awaiting an answer, with the value we offered.
    pending: Vec<(OpKey, String)>,
}

fn reply(out: &mut Vec<Reply>, key: OpKey, value: impl Into<String>) {
    out.push((key.name().to_owned(), value.into()));
}

/// Our side of a numeric key.
fn our_number(key: OpKey, limits: &TargetLimits, values: &OpValues) -> u64 {
    match key {
        OpKey::MaxConnections => u64::from(limits.max_connections),
        OpKey::MaxBurstLength => u64::from(limits.max_burst_length),
        OpKey::FirstBurstLength => {
            u64::from(limits.first_burst_length.min(values.max_burst_length))
        }
        OpKey::DefaultTime2Wait => u64::from(limits.default_time2wait),
        OpKey::DefaultTime2Retain => u64::from(limits.default_time2retain),
        OpKey::MaxOutstandingR2T => u64::from(limits.max_outstanding_r2t),
        OpKey::ErrorRecoveryLevel => u64::from(limits.error_recovery_level),
        OpKey::ProtocolLevel => 1,
        _ => 0,
    }
}

/// Our side of a boolean key.
fn our_bool(key: OpKey, limits: &TargetLimits) -> bool {
    match key {
        OpKey::InitialR2T => limits.initial_r2t,
        OpKey::ImmediateData => limits.immediate_data,
        // We want in-order data; OR makes the result Yes.
        _ => true,
    }
}

fn digest_policy(key: OpKey, limits: &TargetLimits) -> DigestPolicy {
    if key == OpKey::HeaderDigest {
        limits.header_digest
    } else {
        limits.data_digest
    }
}

impl Negotiator {
    /// Whether offers of ours still await an answer.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Answers one batch of operational keys from the initiator, appending
    /// response pairs to `out`.
    pub fn negotiate(
        &mut self,
        pairs: &[(OpKey, &str)],
        limits: &TargetLimits,
        discovery: bool,
        out: &mut Vec<Reply>,
    ) -> Result<(), LoginError> {
        let mut first_burst: Option<&str> = None;
        for &(key, value) in pairs {
            if let Some(i) = self.pending.iter().position(|(k, _)| *k == key) {
                let (_, offered) = self.pending.swap_remove(i);
                self.accept_answer(key, &offered, value)?;
                self.seen.push(key);
                continue;
            }
            if self.seen.contains(&key) {
                return Err(LoginError::Renegotiated(key.name().to_owned()));
            }
            self.seen.push(key);
            if discovery && key.irrelevant_for_discovery() {
                reply(out, key, IRRELEVANT);
                continue;
            }
            if key == OpKey::FirstBurstLength {
                first_burst = Some(value);
                continue;
            }
            self.answer(key, value, limits, out);
        }
        if let Some(value) = first_burst {
            if self.values.first_burst_relevant() {
                self.answer(OpKey::FirstBurstLength, value, limits, out);
            } else {
                reply(out, OpKey::FirstBurstLength, IRRELEVANT);
            }
        }
        Ok(())
    }

    /// Answers one initiator offer.
    fn answer(&mut self, key: OpKey, value: &str, limits: &TargetLimits, out: &mut Vec<Reply>) {
        if let Some((min, max, func)) = key.numeric() {
            match parse_number_in(value, min, max) {
                Ok(offer) => {
                    let ours = our_number(key, limits, &self.values);
                    let result = match func {
                        NumFn::Min => offer.min(ours),
                        NumFn::Max => offer.max(ours),
                    };
                    self.values.set_numeric(key, result);
                    reply(out, key, result.to_string());
                }
                Err(_) => reply(out, key, REJECT),
            }
            return;
        }
        if let Some(func) = key.boolean() {
            match parse_bool(value) {
                Ok(offer) => {
                    let ours = our_bool(key, limits);
                    let result = match func {
                        BoolFn::Or => offer || ours,
                        BoolFn::And => offer && ours,
                    };
                    self.values.set_bool(key, result);
                    reply(out, key, bool_str(result));
                }
                Err(_) => reply(out, key, REJECT),
            }
            return;
        }
        match key {
            OpKey::HeaderDigest | OpKey::DataDigest => {
                let policy = digest_policy(key, limits);
                match parse_list(value).find(|v| policy.accepts(v)) {
                    Some(choice) => {
                        let crc = choice == "CRC32C";
                        if key == OpKey::HeaderDigest {
                            self.values.header_digest = crc;
                        } else {
                            self.values.data_digest = crc;
                        }
                        reply(out, key, choice);
                    }
                    None => reply(out, key, REJECT),
                }
            }
            OpKey::MaxRecvDataSegmentLength => {
                // Declarative: recorded, not answered (our own declaration
                // carries the key). An illegal value leaves the 8192 default.
                if let Ok(v) = parse_number_in(value, 512, MAX_LEN_24) {
                    self.values.set_numeric(key, v);
                }
            }
            OpKey::TaskReporting => {
                if parse_list(value).any(|v| v == "RFC3720") {
                    reply(out, key, "RFC3720");
                } else {
                    reply(out, key, REJECT);
                }
            }
            // RFC 7143 §13.26: markers are obsolete. For IFMarker/OFMarker a
            // "No" is permitted and what pre-7143 initiators expect.
            OpKey::IfMarker | OpKey::OfMarker => match parse_bool(value) {
                Ok(_) => reply(out, key, "No"),
                Err(_) => reply(out, key, REJECT),
            },
            OpKey::IfMarkInt | OpKey::OfMarkInt => reply(out, key, REJECT),
            // SendTargets belongs to full feature phase Text Requests.
            _ => reply(out, key, IRRELEVANT),
        }
    }

    /// Takes the initiator's answer to an offer of ours.
    fn accept_answer(&mut self, key: OpKey, offered: &str, value: &str) -> Result<(), LoginError> {
        let bad = || LoginError::BadAnswer {
            key: key.name().to_owned(),
            value: value.to_owned(),
        };
        if Special::parse(value).is_some() {
            // The key keeps its default; `finish` judges whether that is acceptable.
            return Ok(());
        }
        if let Some((min, max, func)) = key.numeric() {
            let offer = parse_number_in(offered, min, max).map_err(|_| bad())?;
            let answer = parse_number_in(value, min, max).map_err(|_| bad())?;
            let ok = match func {
                NumFn::Min => answer <= offer,
                NumFn::Max => answer >= offer,
            };
            if !ok {
                return Err(bad());
            }
            self.values.set_numeric(key, answer);
            return Ok(());
        }
        if let Some(func) = key.boolean() {
            let offer = parse_bool(offered).map_err(|_| bad())?;
            let answer = parse_bool(value).map_err(|_| bad())?;
            let result = match func {
                BoolFn::Or => offer || answer,
                BoolFn::And => offer && answer,
            };
            if result != answer {
                return Err(bad());
            }
            self.values.set_bool(key, answer);
            return Ok(());
        }
        match key {
            OpKey::HeaderDigest | OpKey::DataDigest if value == offered => {
                let crc = value == "CRC32C";
                if key == OpKey::HeaderDigest {
                    self.values.header_digest = crc;
                } else {
                    self.values.data_digest = crc;
                }
                Ok(())
            }
            _ => Err(bad()),
        }
    }

    /// Offers keys the initiator left at a default our limits cannot accept.
    /// Returns the pairs to send; they stay pending until answered.
    pub fn make_offers(&mut self, limits: &TargetLimits, discovery: bool) -> Vec<Reply> {
        let d = OpValues::default();
        let mut wanted: Vec<(OpKey, String)> = Vec::new();
        for key in [OpKey::HeaderDigest, OpKey::DataDigest] {
            if digest_policy(key, limits) == DigestPolicy::Crc32c {
                wanted.push((key, "CRC32C".to_owned()));
            }
        }
        if !discovery {
            if limits.max_burst_length < d.max_burst_length {
                wanted.push((OpKey::MaxBurstLength, limits.max_burst_length.to_string()));
            }
            if !limits.immediate_data {
                wanted.push((OpKey::ImmediateData, bool_str(false).to_owned()));
            }
            let max_burst = limits.max_burst_length.min(self.values.max_burst_length);
            let first = limits.first_burst_length.min(max_burst);
            if first < d.first_burst_length {
                wanted.push((OpKey::FirstBurstLength, first.to_string()));
            }
        }
        if limits.default_time2wait > d.default_time2wait {
            wanted.push((
                OpKey::DefaultTime2Wait,
                limits.default_time2wait.to_string(),
            ));
        }
        if limits.default_time2retain < d.default_time2retain {
            wanted.push((
                OpKey::DefaultTime2Retain,
                limits.default_time2retain.to_string(),
            ));
        }
        let mut out = Vec::new();
        for (key, value) in wanted {
            if self.seen.contains(&key) || self.pending.iter().any(|(k, _)| *k == key) {
                continue;
            }
            out.push((key.name().to_owned(), value.clone()));
            self.pending.push((key, value));
        }
        out
    }

    /// Final checks before full feature phase.
    pub fn finish(&mut self, limits: &TargetLimits) -> Result<(), LoginError> {
        if limits.header_digest == DigestPolicy::Crc32c && !self.values.header_digest {
            return Err(LoginError::DigestPolicy("HeaderDigest"));
        }
        if limits.data_digest == DigestPolicy::Crc32c && !self.values.data_digest {
            return Err(LoginError::DigestPolicy("DataDigest"));
        }
        let v = &mut self.values;
        v.first_burst_length = v.first_burst_length.min(v.max_burst_length);
        Ok(())
    }
}
