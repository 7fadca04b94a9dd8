//! The router driven request by request against [`MemoryService`].

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use serde_json::{json, Value};
use tower::ServiceExt;

use super::testing::MemoryService;
use super::*;
use crate::config::Backing;
use crate::membership::{LinkState, LinkStatus, MemberState, MemberStatus};
use crate::service::{RaftStatus, ServiceError};
use crate::{LinkName, MemberId};

const TOKEN: &str = "test-cluster-token";
const T1: &str = "iqn.2024-01.org.example:t1";
const I1: &str = "iqn.1998-01.com.vmware:host1";

fn setup() -> (Arc<MemoryService>, Router) {
    let service = Arc::new(MemoryService::default());
    let metrics: MetricsSource =
        Arc::new(|| "trellis_device_read_ops_total{device=\"d1\"} 42\n".to_owned());
    let local = Local {
        metrics,
        ..Local::default()
    };
    let r = router(service.clone(), TOKEN.to_owned(), local);
    (service, r)
}

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    text: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("{e}: {}", self.text))
    }

    /// Asserts the error shape and returns the code.
    fn error_code(&self) -> String {
        let v = self.json();
        let obj = v.as_object().expect("object");
        assert_eq!(obj.len(), 1, "{v}");
        let err = v["error"].as_object().expect("error object");
        assert_eq!(err.len(), 2, "{v}");
        assert!(
            err["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{v}"
        );
        err["code"].as_str().expect("code").to_owned()
    }
}

async fn send(
    r: &Router,
    method: Method,
    uri: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> Answer {
    send_with(r, method, uri, token, &[], body).await
}

/// [`send`] with extra request headers.
async fn send_with(
    r: &Router,
    method: Method,
    uri: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Answer {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let req = match body {
        Some(b) => req
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(b.to_owned())),
        None => req.body(Body::empty()),
    }
    .expect("request");
    let resp = r.clone().oneshot(req).await.expect("infallible");
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .expect("body");
    Answer {
        status,
        headers,
        text: String::from_utf8(bytes.to_vec()).expect("utf-8"),
    }
}

async fn get(r: &Router, uri: &str) -> Answer {
    send(r, Method::GET, uri, Some(TOKEN), None).await
}

async fn post(r: &Router, uri: &str, body: Value) -> Answer {
    send(r, Method::POST, uri, Some(TOKEN), Some(&body.to_string())).await
}

async fn del(r: &Router, uri: &str) -> Answer {
    send(r, Method::DELETE, uri, Some(TOKEN), None).await
}

/// [`post`] with an `Idempotency-Key`.
async fn post_keyed(r: &Router, uri: &str, key: &str, body: Value) -> Answer {
    let headers = [("Idempotency-Key", key)];
    let body = body.to_string();
    send_with(r, Method::POST, uri, Some(TOKEN), &headers, Some(&body)).await
}

#[tokio::test]
async fn health_needs_no_token() {
    let (_, r) = setup();
    let a = send(&r, Method::GET, "/health", None, None).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json(), json!({"status": "ok"}));
}

#[tokio::test]
async fn everything_else_needs_the_token() {
    let (_, r) = setup();
    for (method, uri) in [
        (Method::GET, "/metrics"),
        (Method::GET, "/v1/status"),
        (Method::GET, "/v1/members"),
        (Method::GET, "/v1/devices"),
        (Method::POST, "/v1/devices"),
        (Method::DELETE, "/v1/devices/d1"),
        (Method::GET, "/v1/targets"),
        (Method::GET, "/v1/targets/x/acl"),
    ] {
        for token in [None, Some("wrong-token"), Some("")] {
            let a = send(&r, method.clone(), uri, token, None).await;
            assert_eq!(
                a.status,
                StatusCode::UNAUTHORIZED,
                "{method} {uri} {token:?}"
            );
            assert_eq!(a.error_code(), "unauthorized");
            assert_eq!(a.headers[header::WWW_AUTHENTICATE], "Bearer");
        }
    }
    assert_eq!(get(&r, "/v1/status").await.status, StatusCode::OK);
}

#[tokio::test]
async fn device_lifecycle() {
    let (service, r) = setup();
    let a = post(
        &r,
        "/v1/devices",
        json!({"name": "d1", "size": 1u64 << 30, "thin": true}),
    )
    .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
    let created = a.json();
    assert_eq!(created["name"], "d1");
    // Without a backing: NAME.img in the members' storage directory.
    assert_eq!(created["backing"], "d1.img");
    assert_eq!(created["block_size"], 512);
    assert_eq!(created["thin"], true);
    let uuid = created["uuid"].as_str().expect("uuid generated").to_owned();
    assert_eq!(
        service.config().devices["d1"].uuid.to_string(),
        uuid,
        "the uuid answered is the one applied"
    );

    let a = post(
        &r,
        "/v1/devices",
        json!({"name": "d2", "size": 4096 * 10, "backing": "/srv/d2.img", "block_size": 4096, "read_only": true}),
    )
    .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);

    let list = get(&r, "/v1/devices").await;
    assert_eq!(list.status, StatusCode::OK);
    let devices = list.json()["devices"].as_array().expect("array").clone();
    let names: Vec<_> = devices.iter().map(|d| d["name"].clone()).collect();
    assert_eq!(names, [json!("d1"), json!("d2")]);
    assert_eq!(devices[1]["backing"], "/srv/d2.img");
    assert_eq!(devices[1]["read_only"], true);

    let a = post(&r, "/v1/devices/d1/resize", json!({"size": 2u64 << 30})).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert_eq!(a.json(), json!({"result": "changed"}));
    assert_eq!(service.config().devices["d1"].size, 2 << 30);
    let a = post(&r, "/v1/devices/d1/resize", json!({"size": 2u64 << 30})).await;
    assert_eq!(a.json(), json!({"result": "unchanged"}));

    let a = del(&r, "/v1/devices/d1").await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(!service.config().devices.contains_key("d1"));
    let a = del(&r, "/v1/devices/d1").await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert_eq!(a.error_code(), "not_found");
    assert_eq!(a.json()["error"]["message"], "no device d1");
}

#[tokio::test]
async fn a_keyed_write_sent_twice_applies_once() {
    let (service, r) = setup();
    let body = json!({"name": "d1", "size": 1 << 20});
    let key = "4b0f2c1e-7d3a-4c55-9a0e-2f4d5c6b7a81";
    let first = post_keyed(&r, "/v1/devices", key, body.clone()).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.text);
    // Resent (its answer lost): the same answer, the same device, and it
    // was applied once.
    let again = post_keyed(&r, "/v1/devices", key, body.clone()).await;
    assert_eq!(again.status, StatusCode::CREATED, "{}", again.text);
    assert_eq!(again.json(), first.json());
    let uuid = service.config().devices["d1"].uuid;
    assert_eq!(first.json()["uuid"], uuid.to_string());
    assert_eq!(service.remembered_writes(), 1);
    // The uuid comes from the key, the name and the cluster: another
    // cluster creating d1 under the same key gets another identity.
    assert_eq!(uuid, service.keyed_device_uuid(key, "d1"));
    let (elsewhere, r2) = setup();
    let there = post_keyed(&r2, "/v1/devices", key, body.clone()).await;
    assert_eq!(there.status, StatusCode::CREATED, "{}", there.text);
    assert_ne!(elsewhere.config().devices["d1"].uuid, uuid);
    // Without a key the same request is a second, refused, create.
    let unkeyed = post(&r, "/v1/devices", body).await;
    assert_eq!(unkeyed.status, StatusCode::CONFLICT);
    // The key on another request is refused.
    let other = post_keyed(
        &r,
        "/v1/devices",
        key,
        json!({"name": "d2", "size": 1 << 20}),
    )
    .await;
    assert_eq!(other.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(other.error_code(), "idempotency_key_reused");
    assert!(!service.config().devices.contains_key("d2"));
    // Other writes take keys too.
    let target = json!({"iqn": T1});
    for _ in 0..2 {
        let a = post_keyed(&r, "/v1/targets", "t-1", target.clone()).await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
    }
    assert_eq!(service.remembered_writes(), 2);
    // A malformed key is refused before anything is written.
    for bad in ["has space", &"k".repeat(129)] {
        let a = post_keyed(
            &r,
            "/v1/devices",
            bad,
            json!({"name": "d3", "size": 1 << 20}),
        )
        .await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.text);
        assert_eq!(a.error_code(), "invalid_field");
        assert!(a.text.contains("Idempotency-Key"), "{}", a.text);
    }
    assert!(!service.config().devices.contains_key("d3"));
}

#[tokio::test]
async fn config_errors_map_to_statuses() {
    let (_, r) = setup();
    let ok = post(&r, "/v1/devices", json!({"name": "d1", "size": 1 << 20})).await;
    assert_eq!(ok.status, StatusCode::CREATED);
    let cases = [
        (
            json!({"name": "d1", "size": 1 << 20}),
            StatusCode::CONFLICT,
            "already_exists",
        ),
        (
            json!({"name": "-bad", "size": 1 << 20}),
            StatusCode::BAD_REQUEST,
            "invalid_name",
        ),
        (
            json!({"name": "d3", "size": 1000}),
            StatusCode::BAD_REQUEST,
            "invalid_size",
        ),
        (
            json!({"name": "d3", "size": 4096, "block_size": 1024}),
            StatusCode::BAD_REQUEST,
            "invalid_block_size",
        ),
        (
            json!({"name": "d3", "size": 4096, "backing": ""}),
            StatusCode::BAD_REQUEST,
            "invalid_field",
        ),
        (
            json!({"name": "d3", "size": 4096, "backing": "../escape.img"}),
            StatusCode::BAD_REQUEST,
            "invalid_backing",
        ),
        (
            json!({"name": "d3", "size": 4096, "backing": "d1.img"}),
            StatusCode::CONFLICT,
            "backing_taken",
        ),
    ];
    for (body, status, code) in cases {
        let a = post(&r, "/v1/devices", body.clone()).await;
        assert_eq!(
            (a.status, a.error_code().as_str()),
            (status, code),
            "{body}"
        );
    }
    let a = post(&r, "/v1/devices/d1/resize", json!({"size": 512})).await;
    assert_eq!(
        (a.status, a.error_code().as_str()),
        (StatusCode::BAD_REQUEST, "shrink")
    );
    let a = post(&r, "/v1/devices/nope/resize", json!({"size": 1 << 21})).await;
    assert_eq!(
        (a.status, a.error_code().as_str()),
        (StatusCode::NOT_FOUND, "not_found")
    );
}

#[tokio::test]
async fn bad_bodies_name_the_field() {
    let (_, r) = setup();
    let cases = [
        (r#"{"name": "d1"}"#, "size"),
        (r#"{"name": "d1", "size": "big"}"#, "size"),
        (
            r#"{"name": "d1", "size": 4096, "blocksize": 512}"#,
            "blocksize",
        ),
        (r#"{"name": "d1", "size": 4096, "thin": 1}"#, "thin"),
    ];
    for (body, field) in cases {
        let a = send(&r, Method::POST, "/v1/devices", Some(TOKEN), Some(body)).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(a.error_code(), "invalid_body");
        let message = a.json()["error"]["message"]
            .as_str()
            .expect("message")
            .to_owned();
        assert!(message.contains(field), "{body}: {message}");
    }
    let a = send(
        &r,
        Method::POST,
        "/v1/devices",
        Some(TOKEN),
        Some("{not json"),
    )
    .await;
    assert_eq!(
        (a.status, a.error_code().as_str()),
        (StatusCode::BAD_REQUEST, "invalid_body")
    );

    // Past axum's body limit (2 MB): 413, not a parse error.
    let huge = format!(r#"{{"name": "{}", "size": 4096}}"#, "a".repeat(3 << 20));
    let a = send(&r, Method::POST, "/v1/devices", Some(TOKEN), Some(&huge)).await;
    assert_eq!(
        (a.status, a.error_code().as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, "too_large")
    );

    let req = Request::builder()
        .method(Method::POST)
        .uri("/v1/devices")
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .body(Body::from(r#"{"name": "d1", "size": 4096}"#))
        .expect("request");
    let resp = r.clone().oneshot(req).await.expect("infallible");
    assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);

    let a = del(&r, "/v1/targets/x/luns/notanumber").await;
    assert_eq!(
        (a.status, a.error_code().as_str()),
        (StatusCode::BAD_REQUEST, "invalid_path")
    );
    let a = get(&r, "/v1/nothing-here").await;
    assert_eq!(
        (a.status, a.error_code().as_str()),
        (StatusCode::NOT_FOUND, "no_route")
    );
    let a = send(&r, Method::PUT, "/v1/devices", Some(TOKEN), None).await;
    assert_eq!(a.status, StatusCode::METHOD_NOT_ALLOWED);
    a.error_code();
}

/// The message of `a`, a 400 `invalid_backing` answer.
fn refused_backing(a: &Answer) -> String {
    assert_eq!(
        (a.status, a.error_code().as_str()),
        (StatusCode::BAD_REQUEST, "invalid_backing")
    );
    a.json()["error"]["message"]
        .as_str()
        .expect("message")
        .to_owned()
}

#[tokio::test]
async fn a_backing_this_member_cannot_reach_is_refused_before_anything_is_written() {
    let service = Arc::new(MemoryService::default());
    let checked = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = Arc::clone(&checked);
    let local = Local {
        check_backing: Arc::new(move |d: &Device| {
            seen.lock().expect("lock").push(d.name.clone());
            match &d.backing {
                // Unreachable, or a block device of 1 MiB.
                Backing::Path(p) if p.starts_with("/unmounted") || d.size > 1 << 20 => {
                    Err(ConfigError::InvalidBacking {
                        device: d.name.clone(),
                        path: p.display().to_string(),
                        reason: "is not reachable on member m1".into(),
                    })
                }
                _ => Ok(()),
            }
        }),
        ..Local::default()
    };
    let r = router(service.clone(), TOKEN.to_owned(), local);
    let a = post(
        &r,
        "/v1/devices",
        json!({"name": "d1", "size": 4096, "backing": "/unmounted/d1.img"}),
    )
    .await;
    let message = refused_backing(&a);
    assert!(
        message.contains("/unmounted/d1.img") && message.contains("member m1"),
        "{message}"
    );
    assert!(
        service.config().devices.is_empty(),
        "a refused device was written"
    );
    // The check sees the device as it would be written: the default
    // backing of a device created without one.
    let a = post(&r, "/v1/devices", json!({"name": "d2", "size": 4096})).await;
    assert_eq!(a.status, StatusCode::CREATED);
    assert_eq!(a.json()["backing"], "d2.img");
    assert_eq!(*checked.lock().expect("lock"), ["d1", "d2"]);
    assert!(service.config().devices.contains_key("d2"));
    // A grown device is checked at its new size (a block device must hold
    // it); a shrink or an unknown device is refused by the command itself.
    let a = post(&r, "/v1/devices/d2/resize", json!({"size": 8192})).await;
    assert_eq!(a.status, StatusCode::OK);
    for (path, size) in [
        ("/v1/devices/d2/resize", 4096),
        ("/v1/devices/nope/resize", 8192),
    ] {
        let a = post(&r, path, json!({"size": size})).await;
        assert!(a.status.is_client_error(), "{path}");
    }
    let a = post(&r, "/v1/devices/d2/resize", json!({"size": 2 << 20})).await;
    refused_backing(&a);
    assert_eq!(*checked.lock().expect("lock"), ["d1", "d2", "d2", "d2"]);
    assert_eq!(service.config().devices["d2"].size, 8192);
}

#[tokio::test]
async fn a_resent_create_is_answered_without_the_backing_check() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let service = Arc::new(MemoryService::default());
    let share_gone = Arc::new(AtomicBool::new(false));
    let gone = Arc::clone(&share_gone);
    let local = Local {
        check_backing: Arc::new(move |d: &Device| {
            if gone.load(Ordering::SeqCst) {
                return Err(ConfigError::InvalidBacking {
                    device: d.name.clone(),
                    path: "d1.img".into(),
                    reason: "is gone".into(),
                });
            }
            Ok(())
        }),
        ..Local::default()
    };
    let r = router(service.clone(), TOKEN.to_owned(), local);
    let body = json!({"name": "d1", "size": 4096});
    let first = post_keyed(&r, "/v1/devices", "resend-1", body.clone()).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.text);
    // The share goes away; the client, its answer lost, sends again.
    share_gone.store(true, Ordering::SeqCst);
    let again = post_keyed(&r, "/v1/devices", "resend-1", body.clone()).await;
    assert_eq!((again.status, again.json()), (first.status, first.json()));
    // A new write of a name that exists is the command's 409, not the
    // check's refusal.
    let taken = post_keyed(&r, "/v1/devices", "resend-2", body).await;
    assert_eq!(
        (taken.status, taken.error_code().as_str()),
        (StatusCode::CONFLICT, "already_exists")
    );
    assert_eq!(service.config().devices.len(), 1);
}

#[tokio::test]
async fn a_hung_backing_check_is_cut_short_and_does_not_stall_the_api() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let service = Arc::new(MemoryService::default());
    let (release, hung) = std::sync::mpsc::channel::<()>();
    let hung = Arc::new(std::sync::Mutex::new(hung));
    let returned = Arc::new(AtomicBool::new(false));
    let done = Arc::clone(&returned);
    let local = Local {
        // Blocks like a stat on a dead NFS server (for 2 s at most, so
        // that a check run on the API's own thread fails this test
        // instead of hanging it).
        check_backing: Arc::new(move |_: &Device| {
            let _ = hung
                .lock()
                .expect("lock")
                .recv_timeout(Duration::from_secs(2));
            done.store(true, Ordering::SeqCst);
            Ok(())
        }),
        check_timeout: Duration::from_millis(300),
        member: "m7".into(),
        ..Local::default()
    };
    let r = router(service.clone(), TOKEN.to_owned(), local);
    let create = post(&r, "/v1/devices", json!({"name": "d1", "size": 4096}));
    let meanwhile = async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let listed = get(&r, "/v1/devices").await;
        // Answered while the check still hangs.
        (listed.status, returned.load(Ordering::SeqCst))
    };
    let (a, listed) = tokio::join!(create, meanwhile);
    assert_eq!(listed, (StatusCode::OK, false));
    // Worth another try, or another member: 503.
    assert_eq!(
        (a.status, a.error_code().as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
    );
    let message = a.json()["error"]["message"]
        .as_str()
        .expect("message")
        .to_owned();
    assert!(
        message.contains("could not be examined within 300ms on member m7"),
        "{message}"
    );
    assert!(service.config().devices.is_empty());
    let _ = release.send(());
}

#[tokio::test]
async fn service_errors_map_to_statuses() {
    let (service, r) = setup();
    for (error, status, code) in [
        (
            ServiceError::NoLeader,
            StatusCode::SERVICE_UNAVAILABLE,
            "no_leader",
        ),
        (
            ServiceError::Unavailable("leader unreachable".into()),
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
        ),
        (
            ServiceError::Internal("disk on fire".into()),
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
        ),
    ] {
        service.fail_writes(Some(error));
        let a = post(&r, "/v1/devices", json!({"name": "d1", "size": 4096})).await;
        assert_eq!((a.status, a.error_code().as_str()), (status, code));
        if status == StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(a.headers[header::RETRY_AFTER], "1");
        }
    }
    service.fail_writes(None);
    let a = post(&r, "/v1/devices", json!({"name": "d1", "size": 4096})).await;
    assert_eq!(a.status, StatusCode::CREATED);
}

#[tokio::test]
async fn targets_luns_and_acl() {
    let (service, r) = setup();
    assert_eq!(
        post(&r, "/v1/devices", json!({"name": "d1", "size": 1 << 20}))
            .await
            .status,
        StatusCode::CREATED
    );
    let a = post(&r, "/v1/targets", json!({"iqn": T1, "alias": "first"})).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
    assert_eq!(a.json()["alias"], "first");
    let a = post(&r, "/v1/targets", json!({"iqn": T1})).await;
    assert_eq!(
        (a.status, a.error_code().as_str()),
        (StatusCode::CONFLICT, "already_exists")
    );
    let a = post(&r, "/v1/targets", json!({"iqn": "not-an-iqn"})).await;
    assert_eq!(
        (a.status, a.error_code().as_str()),
        (StatusCode::BAD_REQUEST, "invalid_name")
    );

    let luns = format!("/v1/targets/{T1}/luns");
    let a = post(&r, &luns, json!({"device": "d1", "lun": 0})).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    let a = post(&r, &luns, json!({"device": "nope", "lun": 1})).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    let a = post(&r, &luns, json!({"device": "d1", "lun": 20000})).await;
    assert_eq!(a.error_code(), "lun_out_of_range");

    let a = get(&r, "/v1/targets").await;
    assert_eq!(
        a.json()["targets"],
        json!([{"iqn": T1, "alias": "first", "luns": [{"lun": 0, "device": "d1"}], "initiators": 0}])
    );
    let a = get(&r, "/v1/devices").await;
    assert_eq!(
        a.json()["devices"][0]["mapped"],
        json!([{"target": T1, "lun": 0}])
    );
    let a = del(&r, "/v1/devices/d1").await;
    assert_eq!(
        (a.status, a.error_code().as_str()),
        (StatusCode::CONFLICT, "device_mapped")
    );

    let acl = format!("/v1/targets/{T1}/acl");
    let secret = "a-long-chap-secret";
    let a = post(
        &r,
        &acl,
        json!({"initiator": I1, "chap_user": "host1", "chap_secret": secret, "luns": [0]}),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    let a = post(&r, &acl, json!({"initiator": I1, "chap_user": "host1"})).await;
    assert_eq!(a.error_code(), "invalid_field");
    assert!(a.text.contains("chap_secret"), "{}", a.text);
    let a = post(
        &r,
        &acl,
        json!({"initiator": I1, "chap_user": "h", "chap_secret": "short"}),
    )
    .await;
    assert_eq!(a.error_code(), "chap_secret_length");
    let a = post(&r, &acl, json!({"initiator": I1, "luns": [7]})).await;
    assert_eq!(
        (a.status, a.error_code().as_str()),
        (StatusCode::NOT_FOUND, "lun_not_mapped")
    );

    let a = get(&r, &acl).await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(!a.text.contains(secret), "secret leaked: {}", a.text);
    assert_eq!(
        a.json(),
        json!({"target": T1, "acl": [{"initiator": I1, "luns": [0], "chap_user": "host1", "mutual_chap_user": null}]})
    );
    for uri in ["/v1/targets", "/v1/status", "/v1/devices", "/metrics"] {
        assert!(!get(&r, uri).await.text.contains(secret), "{uri}");
    }
    assert!(service.config().targets[T1].acl[I1].auth.is_some());

    assert_eq!(del(&r, &format!("{acl}/{I1}")).await.status, StatusCode::OK);
    let a = del(&r, &format!("{acl}/{I1}")).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert_eq!(del(&r, &format!("{luns}/0")).await.status, StatusCode::OK);
    let a = del(&r, &format!("{luns}/0")).await;
    assert_eq!(
        (a.status, a.error_code().as_str()),
        (StatusCode::NOT_FOUND, "lun_not_mapped")
    );
    assert_eq!(
        del(&r, &format!("/v1/targets/{T1}")).await.status,
        StatusCode::OK
    );
    let a = get(&r, &acl).await;
    assert_eq!(
        (a.status, a.error_code().as_str()),
        (StatusCode::NOT_FOUND, "not_found")
    );
    assert_eq!(del(&r, "/v1/devices/d1").await.status, StatusCode::OK);
}

fn peer(name: &str, state: MemberState, links: &[(&str, LinkState)]) -> MemberStatus {
    MemberStatus {
        announced: Vec::new(),
        data: None,
        member: MemberId(name.into()),
        state,
        since: Duration::from_secs(3),
        incarnation: Some(7),
        links: links
            .iter()
            .map(|(l, s)| LinkStatus {
                link: LinkName((*l).into()),
                state: *s,
                since: Duration::from_millis(1500),
                last_heard: Some(Duration::from_millis(100)),
            })
            .collect(),
    }
}

#[tokio::test]
async fn metrics_status_and_members() {
    let (service, r) = setup();
    service.set_raft(RaftStatus {
        node_id: 1,
        term: 5,
        leader: Some(2),
        commit_index: Some(17),
        applied_index: Some(16),
        voters: vec![1, 2, 3],
        learners: vec![],
    });
    service.set_members(vec![
        peer(
            "m2",
            MemberState::Alive,
            &[("a", LinkState::Up), ("b", LinkState::Down)],
        ),
        peer(
            "m3",
            MemberState::Failed,
            &[("a", LinkState::Down), ("b", LinkState::Down)],
        ),
    ]);
    let a = get(&r, "/metrics").await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.headers[header::CONTENT_TYPE]
        .to_str()
        .expect("ascii")
        .starts_with("text/plain"));
    for line in [
        "trellis_members{state=\"alive\"} 1",
        "trellis_members{state=\"suspect\"} 0",
        "trellis_members{state=\"failed\"} 1",
        "trellis_link_up{member=\"m2\",link=\"a\"} 1",
        "trellis_link_up{member=\"m2\",link=\"b\"} 0",
        "trellis_link_up{member=\"m3\",link=\"a\"} 0",
        "trellis_raft_term 5",
        "trellis_raft_leader 2",
        "trellis_raft_is_leader 0",
        "trellis_raft_commit_index 17",
        "trellis_raft_applied_index 16",
        "# TYPE trellis_raft_term gauge",
        "trellis_device_read_ops_total{device=\"d1\"} 42",
    ] {
        assert!(
            a.text.lines().any(|l| l == line),
            "missing {line:?} in\n{}",
            a.text
        );
    }

    let a = get(&r, "/v1/status").await;
    let v = a.json();
    assert_eq!(v["raft"]["term"], 5);
    assert_eq!(v["raft"]["leader"], 2);
    assert_eq!(v["members"]["alive"], 1);
    assert_eq!(v["members"]["failed"], 1);

    let a = get(&r, "/v1/members").await;
    let v = a.json();
    let members = v["members"].as_array().expect("array");
    assert_eq!(members.len(), 2);
    assert_eq!(members[0]["id"], "m2");
    assert_eq!(members[0]["state"], "alive");
    assert_eq!(members[0]["links"][1]["state"], "down");
    assert_eq!(members[0]["links"][0]["since_ms"], 1500);
    assert_eq!(members[1]["state"], "failed");
}

#[test]
fn this_members_own_links_show_what_its_peers_hear() {
    let mut config = crate::config::ClusterConfig::default();
    let addr = |s: &str| s.parse().expect("address");
    let me = crate::config::Member {
        id: MemberId("m1".into()),
        node_id: 1,
        links: ["a", "b", "c", "d"]
            .iter()
            .map(|l| (LinkName((*l).into()), addr("127.0.1.1:7401")))
            .collect(),
        api: addr("127.0.0.1:8081"),
        portals: vec![addr("127.0.0.1:3261")],
        witness: false,
    };
    config
        .apply(&crate::config::Command::UpsertMember(me))
        .expect("member");
    let raft = RaftStatus {
        node_id: 1,
        ..RaftStatus::default()
    };
    let peers = [
        peer(
            "m2",
            MemberState::Alive,
            &[
                ("a", LinkState::Up),
                ("b", LinkState::Down),
                ("d", LinkState::Down),
            ],
        ),
        peer(
            "m3",
            MemberState::Alive,
            &[("a", LinkState::Down), ("b", LinkState::Flapping)],
        ),
    ];
    let list = views::member_list(&config, &raft, &peers, None);
    let local = list.members.iter().find(|m| m.local).expect("this member");
    assert_eq!(local.state, "alive");
    let states: Vec<(&str, &str)> = local
        .links
        .iter()
        .map(|l| (l.link.as_str(), l.state.as_str()))
        .collect();
    assert_eq!(
        states,
        [
            ("a", "up"),
            ("b", "flapping"),
            ("c", "unknown"),
            ("d", "down")
        ],
        "up if any peer hears it, else flapping, else down; unknown with nobody on it"
    );
}

#[test]
fn label_values_are_escaped() {
    let text = metrics::render(
        &RaftStatus::default(),
        &[peer(
            "m\"1\\\n",
            MemberState::Alive,
            &[("a", LinkState::Up)],
        )],
    );
    assert!(
        text.contains("trellis_link_up{member=\"m\\\"1\\\\\\n\",link=\"a\"} 1"),
        "{text}"
    );
    assert!(
        !text.lines().any(|l| l.starts_with("trellis_raft_leader ")),
        "no leader, no sample: {text}"
    );
}

#[tokio::test]
async fn sets_and_device_policies() {
    let config = super::testing::with_data_members(&["m1", "m2", "m3"]);
    let service = Arc::new(MemoryService::new(config));
    let r = router(service.clone(), TOKEN.to_owned(), Local::default());
    // The built-in set is there from the start.
    let list = get(&r, "/v1/sets").await.json();
    assert_eq!(list["sets"][0]["name"], "default");
    assert_eq!(list["sets"][0]["builtin"], true);
    assert_eq!(list["sets"][0]["members"], json!(["m1", "m2", "m3"]));
    let a = post(
        &r,
        "/v1/sets",
        json!({"name": "s1", "composition": "n-way", "members": ["m2", "m1"],
               "failback": "auto"}),
    )
    .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
    assert_eq!(a.json()["failback_delay_secs"], 60);
    // Bad input: a clear error, nothing written.
    let bad = post(
        &r,
        "/v1/sets",
        json!({"name": "s2", "composition": "n-way", "members": ["m9"]}),
    )
    .await;
    assert_eq!(
        (bad.status, bad.error_code()),
        (StatusCode::NOT_FOUND, "not_found".into())
    );
    let bad = post(
        &r,
        "/v1/sets",
        json!({"name": "s2", "composition": "single", "members": ["m1", "m2"]}),
    )
    .await;
    assert_eq!(
        (bad.status, bad.error_code()),
        (StatusCode::BAD_REQUEST, "invalid_set".into())
    );
    let bad = post(
        &r,
        "/v1/sets",
        json!({"name": "s2", "composition": "n-way", "members": ["m1"],
               "failback": "manual", "failback_delay_secs": 5}),
    )
    .await;
    assert_eq!(bad.error_code(), "invalid_field");
    assert!(bad.text.contains("failback_delay_secs"), "{}", bad.text);
    assert!(!service.config().sets.contains_key("s2"));
    // A device in s1, active-active.
    let d = post(
        &r,
        "/v1/devices",
        json!({"name": "d1", "size": 1048576, "backing": "memory", "set": "s1",
               "policy": "active-active"}),
    )
    .await;
    assert_eq!(d.status, StatusCode::CREATED, "{}", d.text);
    assert_eq!(
        (d.json()["set"].clone(), d.json()["policy"].clone()),
        (json!("s1"), json!("active-active"))
    );
    let bad = post(
        &r,
        "/v1/devices",
        json!({"name": "d2", "size": 1048576, "backing": "memory", "policy": "active-active",
               "others": "standby"}),
    )
    .await;
    assert_eq!(bad.error_code(), "invalid_field");
    // Moved back to the default set, active-passive with non-optimized others.
    let p = post(
        &r,
        "/v1/devices/d1/policy",
        json!({"set": "default", "others": "non-optimized"}),
    )
    .await;
    assert_eq!(p.json()["result"], "changed", "{}", p.text);
    let view = get(&r, "/v1/devices").await.json();
    assert_eq!(view["devices"][0]["policy"], "active-passive");
    assert_eq!(view["devices"][0]["others"], "non-optimized");
    assert_eq!(
        post(&r, "/v1/devices/d1/policy", json!({}))
            .await
            .error_code(),
        "invalid_field"
    );
    // Members, failback, delete.
    let add = post(
        &r,
        "/v1/sets/s1/members",
        json!({"member": "m3", "position": 0}),
    )
    .await;
    assert_eq!(add.json()["result"], "changed");
    let shown = get(&r, "/v1/sets/s1").await.json();
    assert_eq!(shown["members"], json!(["m3", "m2", "m1"]));
    assert_eq!(
        del(&r, "/v1/sets/s1/members/m2").await.json()["result"],
        "changed"
    );
    let fb = post(&r, "/v1/sets/s1/failback", json!({"failback": "manual"})).await;
    assert_eq!(fb.json()["result"], "changed");
    assert_eq!(get(&r, "/v1/sets/s9").await.status, StatusCode::NOT_FOUND);
    assert_eq!(
        del(&r, "/v1/sets/default").await.error_code(),
        "invalid_set"
    );
    assert_eq!(del(&r, "/v1/sets/s1").await.json()["result"], "changed");
}
