//! The management API client: one request tried on each endpoint in turn,
//! starting at a random one so that several clients spread their load, and
//! moving on when an endpoint is down (no connection, no answer in time, or
//! 503 while it has no Raft leader or its write did not commit in time).
//! Writes are safe to resend: each carries an `Idempotency-Key` header, the
//! same on every attempt, so a write that did apply behind a lost answer is
//! answered again, not applied twice. When no endpoint answers and one may
//! have taken the write, the error gives the key, for the admin to run the
//! command again with `--idempotency-key`.
//!
//! ```text
//!  request ─> endpoint[start] ─ down/503 ─> endpoint[start+1] ─ ... ─> Unreachable(every failure)
//!                 │ 2xx ─> JSON          │ 4xx/5xx ─> Refused (the API's error)
//! ```

use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use trellis_api::ErrorBody;

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// An endpoint answered with an error: the request was refused.
    #[error("{message} (HTTP {status} {code}, from {endpoint})")]
    Refused {
        /// The endpoint that answered.
        endpoint: String,
        /// The HTTP status.
        status: u16,
        /// The API's error code.
        code: String,
        /// The API's error message.
        message: String,
    },
    /// Every endpoint failed.
    #[error("no endpoint could serve the request:{}{}", list(failures), resend(key.as_deref()))]
    Unreachable {
        /// Each endpoint and why it failed.
        failures: Vec<(String, String)>,
        /// The idempotency key of a write that may have applied all the
        /// same (one an endpoint took but did not answer in time).
        key: Option<String>,
    },
}

fn resend(key: Option<&str>) -> String {
    key.map(|k| {
        format!(
            "\nthe write may still have applied; to learn its outcome without applying it twice, run the same command again with --idempotency-key {k}"
        )
    })
    .unwrap_or_default()
}

fn list(failures: &[(String, String)]) -> String {
    failures
        .iter()
        .map(|(endpoint, why)| format!("\n  {endpoint}: {why}"))
        .collect()
}

/// HTTP methods the API uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Read.
    Get,
    /// Create or act.
    Post,
    /// Remove.
    Delete,
}

impl Method {
    fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Delete => "DELETE",
        }
    }
}

/// A successful answer: its JSON, parsed and as received.
#[derive(Debug, Clone)]
pub struct Answer {
    /// Parsed.
    pub value: Value,
    /// As received (what `--json` prints).
    pub text: String,
}

/// The `body` of a request that has none (a GET or a DELETE).
pub const NO_BODY: Option<&()> = None;

/// A client of several equivalent endpoints.
#[derive(Debug)]
pub struct Client {
    endpoints: Vec<String>,
    token: String,
    agent: ureq::Agent,
    start: usize,
    key: Option<String>,
}

/// The order in which endpoints are tried: all of them, from `start` on.
pub fn order(start: usize, n: usize) -> impl Iterator<Item = usize> {
    (0..n).map(move |i| (start + i) % n.max(1))
}

impl Client {
    /// A client of `endpoints` (base URLs) sending `token`, starting at
    /// endpoint `start` and waiting up to `timeout` for each answer.
    /// `https://` endpoints are verified against the public roots, or the
    /// roots `tls` trusts where given.
    pub fn new(
        endpoints: Vec<String>,
        token: String,
        start: usize,
        timeout: Duration,
        tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    ) -> Self {
        let mut builder = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(3).min(timeout))
            .timeout(timeout);
        if let Some(tls) = tls {
            builder = builder.tls_config(tls);
        }
        let agent = builder.build();
        Self {
            endpoints,
            token,
            agent,
            start,
            key: None,
        }
    }

    /// Writes carry `key` as their idempotency key instead of a random one
    /// (to resend a write whose outcome is unknown).
    pub fn with_idempotency_key(mut self, key: Option<String>) -> Self {
        self.key = key;
        self
    }

    /// Sends one request, with `body` as JSON ([`NO_BODY`] for none);
    /// `path` starts with `/`.
    pub fn call<B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<Answer, ClientError> {
        // One key for every attempt of this write.
        let key = (method != Method::Get).then(|| {
            self.key
                .clone()
                .unwrap_or_else(|| format!("{:032x}", rand::random::<u128>()))
        });
        // Whether an endpoint may have taken the write without answering.
        let mut in_doubt = false;
        let mut failures = Vec::new();
        for i in order(self.start, self.endpoints.len()) {
            let endpoint = &self.endpoints[i];
            let request = self
                .agent
                .request(method.as_str(), &format!("{endpoint}{path}"))
                .set("Authorization", &format!("Bearer {}", self.token))
                .set("Accept", "application/json");
            let request = match &key {
                Some(key) => request.set("Idempotency-Key", key),
                None => request,
            };
            let result = match body {
                Some(b) => request.send_json(b),
                None => request.call(),
            };
            match result {
                Ok(response) => match response.into_string() {
                    Ok(text) => match serde_json::from_str(&text) {
                        Ok(value) => return Ok(Answer { value, text }),
                        Err(e) => failures
                            .push((endpoint.clone(), format!("not a Trellis API answer ({e})"))),
                    },
                    Err(e) => failures.push((endpoint.clone(), format!("reading the answer: {e}"))),
                },
                Err(ureq::Error::Status(status, response)) => {
                    let text = response.into_string().unwrap_or_default();
                    let (code, message) = match serde_json::from_str::<ErrorBody>(&text) {
                        Ok(b) => (b.error.code, b.error.message),
                        Err(_) => (String::from("unknown"), text.trim().to_owned()),
                    };
                    if status == 503 {
                        // No leader: nothing was proposed. Anything else
                        // (the write did not commit in time, the leader
                        // stopped answering) may still apply.
                        in_doubt |= code != "no_leader";
                        failures.push((endpoint.clone(), format!("{message} (HTTP 503 {code})")));
                        continue;
                    }
                    return Err(ClientError::Refused {
                        endpoint: endpoint.clone(),
                        status,
                        code,
                        message,
                    });
                }
                Err(ureq::Error::Transport(t)) => {
                    // A refused connection carried nothing; a timeout or a
                    // dropped connection may have carried the write.
                    in_doubt |= t.kind() != ureq::ErrorKind::ConnectionFailed
                        && t.kind() != ureq::ErrorKind::Dns;
                    // Its Display starts with the URL, which the list shows already.
                    let why = t.to_string();
                    let why = why
                        .split_once(": ")
                        .filter(|(url, _)| url.starts_with(endpoint.as_str()))
                        .map_or(why.as_str(), |(_, rest)| rest);
                    failures.push((endpoint.clone(), why.to_owned()));
                }
            }
        }
        Err(ClientError::Unreachable {
            failures,
            key: key.filter(|_| in_doubt),
        })
    }
}

/// Percent-encodes one path segment (IQNs keep their `:`).
pub fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b':') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Checks and normalizes an endpoint: `host:port` gets `http://`; the
/// trailing `/` goes.
pub fn parse_endpoint(s: &str) -> Result<String, String> {
    let s = s.trim();
    let (scheme, host) = if let Some(rest) = s.strip_prefix("https://") {
        ("https", rest)
    } else if let Some(rest) = s.strip_prefix("http://") {
        ("http", rest)
    } else if s.contains("://") {
        return Err(format!("{s}: only http:// and https:// endpoints"));
    } else {
        ("http", s)
    };
    let host = host.trim_end_matches('/');
    if host.is_empty() {
        return Err(format!("{s:?}: no host"));
    }
    Ok(format!("{scheme}://{host}"))
}

/// TLS for `https://` endpoints trusting the CA certificates of the PEM
/// file `ca` (a member's certificate must chain to one of them and name
/// the host the endpoint gives).
pub fn tls_trusting(ca: &std::path::Path) -> Result<std::sync::Arc<rustls::ClientConfig>, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    let pem =
        std::fs::read(ca).map_err(|e| format!("cannot read CA file {}: {e}", ca.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| format!("CA file {}: {e}", ca.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("CA file {}: {e}", ca.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("CA file {} holds no certificate", ca.display()));
    }
    #[allow(deprecated)] // see trellis_control::api::ring_provider: ureq's own provider too
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(std::sync::Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tries_every_endpoint_once_from_start() {
        assert_eq!(order(2, 3).collect::<Vec<_>>(), [2, 0, 1]);
        assert_eq!(order(0, 1).collect::<Vec<_>>(), [0]);
        assert_eq!(order(0, 0).count(), 0);
    }

    #[test]
    fn endpoints() {
        assert_eq!(
            parse_endpoint("10.0.0.1:8080"),
            Ok("http://10.0.0.1:8080".into())
        );
        assert_eq!(
            parse_endpoint("http://m1:8080/"),
            Ok("http://m1:8080".into())
        );
        assert_eq!(
            parse_endpoint("https://m1:8443"),
            Ok("https://m1:8443".into())
        );
        assert!(parse_endpoint("ftp://m1").is_err());
        assert!(parse_endpoint("").is_err());
        assert!(parse_endpoint("http://").is_err());
    }

    #[test]
    fn segments() {
        assert_eq!(
            segment("iqn.2024-01.org.example:t1"),
            "iqn.2024-01.org.example:t1"
        );
        assert_eq!(segment("a b/c"), "a%20b%2Fc");
    }
}
