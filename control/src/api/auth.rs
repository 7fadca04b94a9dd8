//! The cluster API token: every endpoint but `/health` needs
//! `Authorization: Bearer <token>`, compared in constant time.

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::ApiError;

/// The expected token, kept as its SHA-256 so that comparing takes the same
/// time whatever the presented token's length or content.
#[derive(Clone)]
pub struct Token {
    digest: [u8; 32],
    /// An empty configured token admits no one.
    empty: bool,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl Token {
    /// The token the API requires.
    pub fn new(token: &str) -> Self {
        Self {
            digest: Sha256::digest(token.as_bytes()).into(),
            empty: token.is_empty(),
        }
    }

    /// Whether `presented` is the token, in time independent of where they
    /// differ.
    pub fn matches(&self, presented: &str) -> bool {
        let presented: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let diff = self
            .digest
            .iter()
            .zip(presented.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        diff == 0 && !self.empty
    }

    /// Whether an `Authorization` header value carries the token.
    fn admits(&self, header: Option<&str>) -> bool {
        let presented = header.and_then(|h| {
            let (scheme, rest) = h.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        });
        // Compare even when no token was presented, so that a missing header
        // costs the same as a wrong one.
        let ok = self.matches(presented.unwrap_or(""));
        ok && presented.is_some()
    }
}

/// Middleware: passes the request on when it carries the token, answers 401
/// otherwise.
pub(super) async fn require_token(
    State(token): State<Token>,
    req: Request,
    next: Next,
) -> Response {
    let header = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if token.admits(header) {
        next.run(req).await
    } else {
        ApiError::Unauthorized.into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_checks() {
        let t = Token::new("s3cret-token");
        assert!(t.admits(Some("Bearer s3cret-token")));
        assert!(t.admits(Some("bearer s3cret-token")));
        assert!(!t.admits(Some("Bearer s3cret-tokem")));
        assert!(!t.admits(Some("Bearer ")));
        assert!(!t.admits(Some("Basic s3cret-token")));
        assert!(!t.admits(Some("s3cret-token")));
        assert!(!t.admits(None));
        let empty = Token::new("");
        assert!(!empty.admits(Some("Bearer ")));
        assert!(!empty.admits(None));
        assert!(!format!("{t:?}").contains("s3cret"));
    }
}
