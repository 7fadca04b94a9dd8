//! CHAP for iSCSI (RFC 7143 §12.1.3, RFC 1994): algorithm choice, challenge
//! generation, response computation and verification.
//!
//! ```text
//! I: AuthMethod=CHAP,...           T: AuthMethod=CHAP
//! I: CHAP_A=<list>                 T: CHAP_A=a CHAP_I=id CHAP_C=challenge
//! I: CHAP_N CHAP_R [CHAP_I CHAP_C] T: [CHAP_N CHAP_R]      (mutual in brackets)
//! ```
//! R = H(id || secret || challenge). Comparisons of responses are constant
//! time; a challenge reflected back at us is refused.

use md5::{Digest as _, Md5};
use rand::RngCore;
use sha2::Sha256;

use super::{ChapPolicy, LoginError};
use crate::text::{encode_hex, parse_binary, parse_list, parse_number, MAX_LARGE_BINARY_LEN};

/// Challenge length we send, in bytes.
pub(crate) const CHALLENGE_LEN: usize = 32;

/// A CHAP digest algorithm (CHAP_A values, IANA PPP registry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChapAlgorithm {
    /// 5: MD5 (what libiscsi and most initiators use).
    Md5,
    /// 7: SHA-256.
    Sha256,
}

impl ChapAlgorithm {
    /// The CHAP_A number.
    pub fn code(self) -> u8 {
        match self {
            Self::Md5 => 5,
            Self::Sha256 => 7,
        }
    }

    /// The algorithm for a CHAP_A number we support.
    pub fn from_code(code: u64) -> Option<Self> {
        match code {
            5 => Some(Self::Md5),
            7 => Some(Self::Sha256),
            _ => None,
        }
    }

    /// First algorithm of the initiator's CHAP_A list that we support.
    pub fn choose(list: &str) -> Option<Self> {
        parse_list(list)
            .filter_map(|v| parse_number(v).ok())
            .find_map(Self::from_code)
    }

    /// R = H(id || secret || challenge).
    pub fn response(self, id: u8, secret: &[u8], challenge: &[u8]) -> Vec<u8> {
        match self {
            Self::Md5 => {
                let mut h = Md5::new();
                h.update([id]);
                h.update(secret);
                h.update(challenge);
                h.finalize().to_vec()
            }
            Self::Sha256 => {
                let mut h = Sha256::new();
                h.update([id]);
                h.update(secret);
                h.update(challenge);
                h.finalize().to_vec()
            }
        }
    }
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// The challenge we issued, awaiting the initiator's response.
#[derive(Debug, Clone)]
pub(crate) struct Challenge {
    /// Algorithm agreed by CHAP_A.
    pub algorithm: ChapAlgorithm,
    /// CHAP_I we sent.
    pub id: u8,
    /// CHAP_C we sent.
    pub challenge: Vec<u8>,
}

impl Challenge {
    /// Draws a fresh identifier and challenge.
    pub fn new(algorithm: ChapAlgorithm, rng: &mut dyn RngCore) -> Self {
        let mut challenge = vec![0u8; CHALLENGE_LEN];
        rng.fill_bytes(&mut challenge);
        let mut id = [0u8; 1];
        rng.fill_bytes(&mut id);
        Self {
            algorithm,
            id: id[0],
            challenge,
        }
    }

    /// The pairs that announce this challenge.
    pub fn announce(&self) -> [(&'static str, String); 3] {
        [
            ("CHAP_A", self.algorithm.code().to_string()),
            ("CHAP_I", self.id.to_string()),
            ("CHAP_C", encode_hex(&self.challenge)),
        ]
    }
}

/// The initiator's answer to our challenge.
#[derive(Debug, Clone, Default)]
pub(crate) struct ChapAnswer<'a> {
    /// CHAP_N.
    pub name: Option<&'a str>,
    /// CHAP_R.
    pub response: Option<&'a str>,
    /// CHAP_I for mutual CHAP.
    pub mutual_id: Option<&'a str>,
    /// CHAP_C for mutual CHAP.
    pub mutual_challenge: Option<&'a str>,
}

/// Verifies the initiator and, for mutual CHAP, returns our CHAP_N/CHAP_R.
pub(crate) fn verify(
    ours: &Challenge,
    policy: &ChapPolicy,
    answer: &ChapAnswer<'_>,
) -> Result<Vec<(&'static str, String)>, LoginError> {
    let fail = LoginError::Authentication;
    let name = answer.name.ok_or(fail("CHAP_N missing"))?;
    let response = answer.response.ok_or(fail("CHAP_R missing"))?;
    let response = parse_binary(response).map_err(|_| fail("CHAP_R malformed"))?;
    let expected = ours
        .algorithm
        .response(ours.id, &policy.secret, &ours.challenge);
    // Evaluate both checks before deciding, so timing does not reveal which failed.
    let name_ok = ct_eq(name.as_bytes(), policy.user.as_bytes());
    let response_ok = ct_eq(&response, &expected);
    if !(name_ok & response_ok) {
        return Err(fail("CHAP_N or CHAP_R does not match"));
    }
    match (answer.mutual_id, answer.mutual_challenge) {
        (None, None) => Ok(Vec::new()),
        (Some(_), None) | (None, Some(_)) => Err(fail("mutual CHAP needs both CHAP_I and CHAP_C")),
        (Some(id), Some(challenge)) => {
            let (target_user, target_secret) = policy
                .mutual
                .as_ref()
                .ok_or(fail("mutual CHAP requested but not configured"))?;
            let id = parse_number(id)
                .ok()
                .and_then(|v| u8::try_from(v).ok())
                .ok_or(fail("CHAP_I malformed"))?;
            let challenge = parse_binary(challenge).map_err(|_| fail("CHAP_C malformed"))?;
            if challenge.is_empty() || challenge.len() > MAX_LARGE_BINARY_LEN {
                return Err(fail("CHAP_C length out of range"));
            }
            if ct_eq(&challenge, &ours.challenge) {
                return Err(fail("reflected CHAP challenge"));
            }
            if ct_eq(target_secret, &policy.secret) {
                return Err(fail("mutual CHAP secret equals initiator secret"));
            }
            let r = ours.algorithm.response(id, target_secret, &challenge);
            Ok(vec![
                ("CHAP_N", target_user.clone()),
                ("CHAP_R", encode_hex(&r)),
            ])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1994_md5_shape() {
        let r = ChapAlgorithm::Md5.response(1, b"secret", &[0u8; 16]);
        assert_eq!(r.len(), 16);
        let s = ChapAlgorithm::Sha256.response(1, b"secret", &[0u8; 16]);
        assert_eq!(s.len(), 32);
        // Known MD5 of the 1-byte message 0x00 || "" || "" = md5("\0").
        assert_eq!(
            encode_hex(&ChapAlgorithm::Md5.response(0, b"", b"")),
            "0x93B885ADFE0DA089CDF634904FD59F71"
        );
    }

    #[test]
    fn choose_algorithm() {
        assert_eq!(ChapAlgorithm::choose("5"), Some(ChapAlgorithm::Md5));
        assert_eq!(ChapAlgorithm::choose("7,5"), Some(ChapAlgorithm::Sha256));
        assert_eq!(ChapAlgorithm::choose("6,5"), Some(ChapAlgorithm::Md5));
        assert_eq!(ChapAlgorithm::choose("6,x"), None);
    }

    #[test]
    fn constant_time_eq() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
        assert!(ct_eq(b"", b""));
    }
}
