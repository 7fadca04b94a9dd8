//! The management API client: one request tried on each endpoint in turn,
//! starting at a random one so that several clients spread their load, and
//! moving on when an endpoint is down (no connection, no answer in time, or
//! 503 while it has no Raft leader or its write did not commit in time).
//! Writes are safe to resend: each carries an `Idempotency-Key` header, the
//! same on every attempt, so a write that did apply behind a lost answer is
//! answered again, not applied twice.
//!
//! ```text
//!  request ─> endpoint[start] ─ down/503 ─> endpoint[start+1] ─ ... ─> Unreachable(every failure)
//!                 │ 2xx ─> JSON          │ 4xx/5xx ─> Refused (the API's error)
//! ```

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

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
    #[error("no endpoint could serve the request:{}", list(.0))]
    Unreachable(Vec<(String, String)>),
}

fn list(failures: &[(String, String)]) -> String {
    failures
        .iter()
        .map(|(endpoint, why)| format!("\n  {endpoint}: {why}"))
        .collect()
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    code: String,
    message: String,
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

/// A client of several equivalent endpoints.
#[derive(Debug)]
pub struct Client {
    endpoints: Vec<String>,
    token: String,
    agent: ureq::Agent,
    start: usize,
}

/// The order in which endpoints are tried: all of them, from `start` on.
pub fn order(start: usize, n: usize) -> impl Iterator<Item = usize> {
    (0..n).map(move |i| (start + i) % n.max(1))
}

impl Client {
    /// A client of `endpoints` (base URLs) sending `token`, starting at
    /// endpoint `start` and waiting up to `timeout` for each answer.
    pub fn new(endpoints: Vec<String>, token: String, start: usize, timeout: Duration) -> Self {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(3).min(timeout))
            .timeout(timeout)
            .build();
        Self {
            endpoints,
            token,
            agent,
            start,
        }
    }

    /// Sends one request; `path` starts with `/`.
    pub fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Answer, ClientError> {
        // One key for every attempt of this write.
        let key = (method != Method::Get).then(|| format!("{:032x}", rand::random::<u128>()));
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
        Err(ClientError::Unreachable(failures))
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
    if s.starts_with("https://") {
        return Err(format!(
            "{s}: the management API speaks plain HTTP (http://)"
        ));
    }
    let host = match s.strip_prefix("http://") {
        Some(rest) => rest,
        None if s.contains("://") => return Err(format!("{s}: only http:// endpoints")),
        None => s,
    };
    let host = host.trim_end_matches('/');
    if host.is_empty() {
        return Err(format!("{s:?}: no host"));
    }
    Ok(format!("http://{host}"))
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
        assert!(parse_endpoint("https://m1").is_err());
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
