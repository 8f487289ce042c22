//! `GET /api/v1/events` through the real router with a real security store and a historian:
//! filters, paging with `next`, newest/oldest first, who sees what (security events only for
//! read_audit; tag scopes limit subjects; events without a subject only for unlimited readers),
//! and errors in the API's shape.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use axum::Router;
use ironplant_api::settings::HttpSettings;
use ironplant_api::ApiState;
use ironplant_core::{Event, EventKind, TagPath, Timestamp, Value};
use ironplant_runtime::Runtime;
use ironplant_security::{ManualClock, Security, SecurityOptions, UserStoreOptions};
use serde_json::{json, Value as Json};
use tower::ServiceExt as _;

struct Fx {
    app: Router,
    sec: Arc<Security>,
    runtime: Arc<Runtime>,
    admin: String,
    _dir: tempfile::TempDir,
}

impl Drop for Fx {
    fn drop(&mut self) {
        self.runtime.shutdown();
    }
}

fn basic(user: &str, password: &str) -> String {
    ironplant_testkit::basic_auth(user, password)
}

/// 60 events: kinds cycle alarm/command/security/system/integrity, subjects cycle
/// site/area1/temp, site/area10/temp, site/area2/flow and none (every 4th).
fn events() -> Vec<Event> {
    (0..60i64)
        .map(|i| {
            let kind = EventKind::ALL[(i % 5) as usize];
            let mut e = Event::new(
                Timestamp(1_700_000_000_000_000 + i * 1_000_000),
                kind,
                if i % 2 == 0 { "even" } else { "odd" },
                "test",
                format!("event {i}"),
            )
            .with_attribute("i", Value::Int(i));
            let subject =
                ["site/area1/temp", "site/area10/temp", "site/area2/flow", ""][(i % 4) as usize];
            if !subject.is_empty() {
                e = e.with_subject(TagPath::parse(subject).expect("path"));
            }
            e
        })
        .collect()
}

async fn fixture() -> Fx {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = Arc::new(ManualClock::new(SystemTime::now()));
    let options = SecurityOptions {
        users: UserStoreOptions {
            argon2_m_kib: 64,
            argon2_t: 1,
            argon2_p: 1,
            ..UserStoreOptions::default()
        },
        ..SecurityOptions::default()
    };
    let sec =
        Arc::new(Security::open(&dir.path().join("sec"), clock, options).expect("security opens"));
    let file = std::fs::read_to_string(sec.dir().join("initial-admin-password"))
        .expect("initial admin password file");
    let password = file
        .lines()
        .find_map(|l| l.strip_prefix("password: "))
        .expect("password line")
        .to_owned();
    let cfg = ironplant_api::settings::parse("t.toml", "").expect("a valid config");
    let runtime = Runtime::start(&cfg, Some(&dir.path().join("data"))).expect("runtime");
    runtime
        .historian
        .as_ref()
        .expect("historian")
        .events()
        .write(events())
        .await
        .expect("events stored");
    let app = ironplant_api::router(Arc::new(ApiState {
        runtime: runtime.clone(),
        started: Instant::now(),
        mqtt: None,
        security: Some(sec.clone()),
        http: ironplant_api::listen::Connections::new(HttpSettings::default(), Some(sec.clone())),
    }));
    Fx {
        app,
        sec,
        runtime,
        admin: basic("admin", &password),
        _dir: dir,
    }
}

impl Fx {
    async fn call(
        &self,
        method: &str,
        uri: &str,
        auth: &str,
        body: Option<Json>,
    ) -> (StatusCode, Json) {
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header("authorization", auth);
        let body = match body {
            Some(b) => {
                req = req.header("content-type", "application/json");
                Body::from(b.to_string())
            }
            None => Body::empty(),
        };
        let mut req = req.body(body).expect("request");
        req.extensions_mut()
            .insert(ConnectInfo(SocketAddr::from(([192, 0, 2, 10], 40000))));
        let resp = self.app.clone().oneshot(req).await.expect("response");
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .expect("body");
        (status, serde_json::from_slice(&bytes).unwrap_or(Json::Null))
    }

    /// The `i` attributes of every event of every page, following `next`.
    async fn all(&self, query: &str, auth: &str) -> Vec<i64> {
        let mut out = Vec::new();
        let mut after = String::new();
        for _ in 0..100 {
            let (status, body) = self
                .call("GET", &format!("/api/v1/events?{query}{after}"), auth, None)
                .await;
            assert_eq!(status, StatusCode::OK, "{query}: {body}");
            let events = body["events"].as_array().expect("events");
            assert_eq!(body["count"], events.len());
            out.extend(
                events
                    .iter()
                    .map(|e| e["attributes"]["i"].as_i64().expect("i")),
            );
            match body["next"].as_str() {
                Some(n) => after = format!("&after={n}"),
                None => return out,
            }
        }
        panic!("paging does not end for {query}");
    }

    async fn add_user(&self, name: &str, password: &str, role: &str) -> String {
        let (status, body) = self
            .call(
                "POST",
                "/api/v1/users",
                &self.admin,
                Some(json!({"name": name, "password": password, "role": role})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        basic(name, password)
    }
}

fn model(f: impl Fn(i64) -> bool, newest: bool) -> Vec<i64> {
    let mut v: Vec<i64> = (0..60).filter(|i| f(*i)).collect();
    if newest {
        v.reverse();
    }
    v
}

fn subject(i: i64) -> Option<&'static str> {
    [
        Some("site/area1/temp"),
        Some("site/area10/temp"),
        Some("site/area2/flow"),
        None,
    ][(i % 4) as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_pages_and_orders() {
    let fx = fixture().await;
    let admin = fx.admin.clone();
    // Everything, newest first by default, in pages of 7.
    assert_eq!(fx.all("limit=7", &admin).await, model(|_| true, true));
    assert_eq!(
        fx.all("limit=7&order=oldest", &admin).await,
        model(|_| true, false)
    );
    // One event in full, in the wire format.
    let (_, body) = fx
        .call("GET", "/api/v1/events?limit=1&order=oldest", &admin, None)
        .await;
    assert_eq!(
        body["events"][0],
        json!({
            "ts": "2023-11-14T22:13:20.000000Z", "kind": "alarm", "code": "even",
            "severity": "info", "subject": "site/area1/temp", "source": "test", "actor": null,
            "message": "event 0", "attributes": {"i": 0}
        })
    );
    // Subject prefix by whole levels: site/area1 is not site/area10.
    assert_eq!(
        fx.all("subject=site/area1&limit=5", &admin).await,
        model(|i| subject(i) == Some("site/area1/temp"), true)
    );
    assert_eq!(
        fx.all("subject=site&limit=5", &admin).await,
        model(|i| subject(i).is_some(), true)
    );
    // Kinds, code and time range together.
    let from = "2023-11-14T22:13:30Z"; // i = 10
    let to = "2023-11-14T22:14:00Z"; // i = 40, exclusive
    assert_eq!(
        fx.all(
            &format!("kind=alarm,command&code=even&from={from}&to={to}&limit=3"),
            &admin
        )
        .await,
        model(|i| (10..40).contains(&i) && i % 5 <= 1 && i % 2 == 0, true)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_events_need_read_audit_and_scopes_limit_subjects() {
    let fx = fixture().await;
    let viewer = fx.add_user("vera", "viewer-password-1", "viewer").await;
    // A viewer sees everything but security events; asking for them is refused.
    assert_eq!(
        fx.all("limit=1000", &viewer).await,
        model(|i| i % 5 != 2, true)
    );
    let (status, body) = fx
        .call("GET", "/api/v1/events?kind=security", &viewer, None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "forbidden");
    assert_eq!(
        fx.all("kind=security&limit=1000", &fx.admin).await,
        model(|i| i % 5 == 2, true)
    );
    // A user limited to site/area2 sees only events about it: not the others', not the
    // platform's own (no subject).
    let ula = fx.add_user("ula", "limited-password", "viewer").await;
    std::fs::write(
        fx.sec.dir().join(ironplant_api::auth::SCOPES_FILE),
        r#"{"users": {"ula": {"read": ["site/area2"]}}}"#,
    )
    .expect("write scopes");
    assert_eq!(
        fx.all("limit=1000", &ula).await,
        model(
            |i| subject(i) == Some("site/area2/flow") && i % 5 != 2,
            true
        )
    );
    assert!(fx
        .all("subject=site/area1&limit=1000", &ula)
        .await
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_parameters_answer_in_the_error_shape() {
    let fx = fixture().await;
    for (query, code) in [
        ("kind=alarms", "bad_request"),
        ("subject=a//b", "invalid_path"),
        ("limit=10001", "limit_too_large"),
        ("order=sideways", "bad_request"),
        ("after=nope", "bad_request"),
        ("from=now&to=now-1h", "bad_range"),
        ("colour=red", "bad_request"),
    ] {
        let (status, body) = fx
            .call("GET", &format!("/api/v1/events?{query}"), &fx.admin, None)
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert_eq!(body["error"]["code"], code, "{query}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{body}"
        );
    }
    let (status, _) = fx
        .call("GET", "/api/v1/events", "Bearer ipt_nope", None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}
