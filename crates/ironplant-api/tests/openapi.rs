//! The published OpenAPI document against the real responses: the platform runs on the
//! simulated bottling line (Modbus TCP on an ephemeral port) with a historian, events and a
//! real security store; every GET endpoint (and the other endpoints' answers met on the way:
//! login, token and user creation, errors) is called, and each response is validated against
//! its schema in the document by the third-party `jsonschema` validator
//! (tests/peers/openapi_check.py, Draft 2020-12). The schemas are strict, so a field renamed
//! in the code or in the document fails this test.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use ironplant_api::settings::HttpSettings;
use ironplant_api::ApiState;
use ironplant_core::{Event, EventKind, Severity, TagPath, Timestamp, Value};
use ironplant_security::{ManualClock, Security, SecurityOptions, UserStoreOptions};
use serde_json::{json, Value as Json};
use tower::ServiceExt as _;

struct Recorded {
    method: String,
    path: String,
    status: u16,
    content_type: String,
    body: String,
}

struct Fx {
    app: Router,
    recorded: Vec<Recorded>,
}

impl Fx {
    /// Calls `uri` and records the answer under the document's path template `template`.
    async fn call(
        &mut self,
        method: &str,
        template: &str,
        uri: &str,
        auth: Option<&str>,
        body: Option<Json>,
    ) -> (StatusCode, Json) {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let body = match body {
            Some(b) => {
                req = req.header("content-type", "application/json");
                Body::from(b.to_string())
            }
            None => Body::empty(),
        };
        let mut req = req.body(body).expect("request");
        req.extensions_mut()
            .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000))));
        let resp = self.app.clone().oneshot(req).await.expect("response");
        let status = resp.status();
        let content_type = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .expect("body");
        let text = String::from_utf8_lossy(&bytes).into_owned();
        self.recorded.push(Recorded {
            method: method.to_owned(),
            path: template.to_owned(),
            status: status.as_u16(),
            content_type,
            body: text.clone(),
        });
        (status, serde_json::from_str(&text).unwrap_or(Json::Null))
    }
}

fn basic(user: &str, password: &str) -> String {
    ironplant_testkit::basic_auth(user, password)
}

fn workspace() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_matches_the_published_document() {
    let Some(py) =
        ironplant_testkit::python("jsonschema", "jsonschema (tests/peers/requirements.txt)")
    else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");

    // The simulated plant and the platform on the bundled config pointed at it.
    let sim = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the simulator");
    let sim_addr = sim.local_addr().expect("address");
    tokio::spawn(ironplant_sim::run(sim, 7));
    let text = std::fs::read_to_string(workspace().join("examples/bottling.toml"))
        .expect("examples/bottling.toml")
        .replace("127.0.0.1:5020", &sim_addr.to_string());
    let config = ironplant_api::settings::parse("bottling.toml", &text).expect("valid config");
    let started = ironplant_runtime::start_platform(&config, Some(&dir.path().join("data")), None)
        .expect("platform starts");
    let runtime = started.runtime.clone();

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
    let admin = basic("admin", &password);
    let mut fx = Fx {
        app: ironplant_api::router(Arc::new(ApiState {
            runtime: runtime.clone(),
            started: std::time::Instant::now(),
            mqtt: None,
            security: Some(sec.clone()),
            http: ironplant_api::listen::Connections::new(
                HttpSettings::default(),
                Some(sec.clone()),
            ),
        })),
        recorded: Vec::new(),
    };

    // Wait for every Modbus tag to be Good (values, times and units in the answers).
    let deadline = Instant::now() + Duration::from_secs(30);
    let tags = loop {
        let app = fx.app.clone();
        let mut req = Request::get("/api/v1/tags")
            .header("authorization", &admin)
            .body(Body::empty())
            .expect("request");
        req.extensions_mut()
            .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000))));
        let resp = app.oneshot(req).await.expect("response");
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .expect("body");
        let v: Json = serde_json::from_slice(&bytes).expect("json");
        let tags = v["tags"].as_array().cloned().unwrap_or_default();
        if !tags.is_empty() && tags.iter().all(|t| t["quality"] == "Good") {
            break tags;
        }
        assert!(Instant::now() < deadline, "tags not Good within 30 s: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let tag = tags[0]["path"].as_str().expect("path").to_owned();
    let asset = TagPath::parse(&tag)
        .expect("path")
        .parent()
        .expect("a parent")
        .to_string();

    // Events of three kinds, with and without a subject.
    let store = runtime
        .historian
        .as_ref()
        .expect("historian")
        .events()
        .clone();
    runtime.events.publish(
        Event::new(
            Timestamp::now(),
            EventKind::Alarm,
            "raised",
            "rules",
            "high",
        )
        .with_severity(Severity::Warning)
        .with_subject(TagPath::parse(&tag).expect("path"))
        .with_attribute("limit", Value::Float(80.5))
        .with_attribute("count", Value::U64(u64::MAX)),
    );
    runtime.events.publish(Event::new(
        Timestamp::now(),
        EventKind::System,
        "component_started",
        "runtime",
        "started",
    ));
    runtime.events.publish(
        Event::new(
            Timestamp::now(),
            EventKind::Security,
            "refused",
            "api",
            "no",
        )
        .with_actor("mallory")
        .with_severity(Severity::Error),
    );
    while store.stats().stored < 3 {
        assert!(Instant::now() < deadline, "events not stored");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let a = Some(admin.as_str());
    // Tags and assets.
    let (s, _) = fx
        .call("GET", "/api/v1/tags", "/api/v1/tags", a, None)
        .await;
    assert_eq!(s, StatusCode::OK);
    let prefix = format!("/api/v1/tags?prefix={asset}");
    fx.call("GET", "/api/v1/tags", &prefix, a, None).await;
    let (s, t) = fx
        .call(
            "GET",
            "/api/v1/tags/{path}",
            &format!("/api/v1/tags/{tag}"),
            a,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(t["ts"].is_string() && t["server_ts"].is_string(), "{t}");
    let (s, _) = fx
        .call(
            "GET",
            "/api/v1/tags/{path}",
            "/api/v1/tags/no/such/tag",
            a,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = fx
        .call(
            "GET",
            "/api/v1/tags/{path}",
            "/api/v1/tags/bad%20path",
            a,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    fx.call("GET", "/api/v1/tags", "/api/v1/tags", None, None)
        .await;
    fx.call("GET", "/api/v1/assets", "/api/v1/assets", a, None)
        .await;

    // History: raw (paged), aggregates, at, CSV, and an error.
    let h = "/api/v1/history";
    // Three samples stored, so a page of two has a `next`.
    loop {
        let (_, raw) = fx
            .call("GET", h, &format!("{h}?tag={tag}&from=now-1h"), a, None)
            .await;
        fx.recorded.pop();
        if raw["tags"][0]["points"].as_array().map_or(0, Vec::len) >= 3 {
            break;
        }
        assert!(Instant::now() < deadline, "no history: {raw}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (s, raw) = fx
        .call(
            "GET",
            h,
            &format!("{h}?tag={tag}&from=now-1h&limit=2"),
            a,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        raw["tags"][0]["points"].as_array().map(Vec::len),
        Some(2),
        "{raw}"
    );
    let (s, agg) = fx
        .call(
            "GET",
            h,
            &format!("{h}?tag={tag}&from=now-1m&interval=10s&agg=avg,min,max,count,twa,delta"),
            a,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{agg}");
    fx.call(
        "GET",
        h,
        &format!("{h}?tag={tag}&at=now&interp=linear"),
        a,
        None,
    )
    .await;
    let (s, _) = fx
        .call(
            "GET",
            h,
            &format!("{h}?tag={tag}&from=now-1h&format=csv"),
            a,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = fx
        .call("GET", h, &format!("{h}?from=now-1h"), a, None)
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    // Events.
    let e = "/api/v1/events";
    let (s, page) = fx.call("GET", e, e, a, None).await;
    assert_eq!((s, page["count"].as_u64()), (StatusCode::OK, Some(3)));
    fx.call(
        "GET",
        e,
        &format!("{e}?kind=alarm&subject={asset}&limit=1&order=oldest"),
        a,
        None,
    )
    .await;
    fx.call("GET", e, &format!("{e}?limit=1"), a, None).await;
    let (s, _) = fx.call("GET", e, &format!("{e}?limit=0"), a, None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    // Alarms (the bundled config has three, plus two built in per writable tag): the summary, every alarm, the KPI report, an
    // operation refused by state (409), by role (403) and an unknown one (404).
    let al = "/api/v1/alarms";
    let (s, list) = fx.call("GET", al, &format!("{al}?all=true"), a, None).await;
    assert_eq!(s, StatusCode::OK);
    let ids: Vec<&str> = list["alarms"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x["id"].as_str()).collect())
        .unwrap_or_default();
    for id in [
        "tank_level_high",
        "filler_motor_overcurrent",
        "reject_rate_high",
        // Built in for every writable tag: the command path's findings.
        "acme.lyon.bottling.line1.filler.plc.speed_setpoint:unauthorised_change",
        "acme.lyon.bottling.line1.filler.plc.speed_setpoint:command_failed",
    ] {
        assert!(ids.contains(&id), "{id} in {ids:?}");
    }
    fx.call("GET", al, al, a, None).await;

    // The HMI's reads: writable points (the filler speed's envelope), the system page, the
    // session of a header-authenticated caller (no CSRF token: it needs none).
    let pts = "/api/v1/commands/points";
    let (s, points) = fx.call("GET", pts, pts, a, None).await;
    assert_eq!(s, StatusCode::OK);
    let speed_point = points["points"]
        .as_array()
        .and_then(|p| {
            p.iter()
                .find(|x| x["path"] == "acme/lyon/bottling/line1/filler/plc/speed_setpoint")
        })
        .cloned()
        .unwrap_or_default();
    assert_eq!(speed_point["envelope"]["max"], 600.0, "{points}");
    assert_eq!(speed_point["can_write"], true, "{speed_point}");
    let sys = "/api/v1/system";
    let (s, system) = fx.call("GET", sys, sys, a, None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        system["components"]
            .as_array()
            .is_some_and(|v| !v.is_empty()),
        "{system}"
    );
    assert!(
        system["devices"].as_array().is_some_and(|v| !v.is_empty()),
        "{system}"
    );
    let ses = "/api/v1/session";
    let (s, session) = fx.call("GET", ses, ses, a, None).await;
    assert_eq!(
        (s, session["csrf"].is_null()),
        (StatusCode::OK, true),
        "{session}"
    );
    let (s, _) = fx
        .call(
            "GET",
            "/api/v1/alarms/kpi",
            "/api/v1/alarms/kpi?from=now-1h",
            a,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let op = "/api/v1/alarms/{id}/{operation}";
    let ack = "/api/v1/alarms/tank_level_high/ack";
    let body = json!({"comment": "seen"});
    let (s, _) = fx.call("POST", op, ack, a, Some(body.clone())).await;
    assert_eq!(
        s,
        StatusCode::CONFLICT,
        "a normal alarm has nothing to acknowledge"
    );
    let (s, _) = fx
        .call(
            "POST",
            op,
            "/api/v1/alarms/tank_level_high/explode",
            a,
            Some(body.clone()),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = fx
        .call(
            "POST",
            op,
            "/api/v1/alarms/tank_level_high/shelve",
            a,
            Some(json!({"comment": "sensor swap", "duration": "30m"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);

    // Health, metrics, the document itself.
    fx.call("GET", "/healthz", "/healthz", None, None).await;
    let (s, health) = fx.call("GET", "/healthz", "/healthz", a, None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(health["devices"].is_object(), "{health}");
    let (s, _) = fx.call("GET", "/metrics", "/metrics", a, None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, served) = fx
        .call(
            "GET",
            "/api/v1/openapi.json",
            "/api/v1/openapi.json",
            None,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let document: Json = serde_json::from_str(ironplant_api::openapi::DOCUMENT).expect("json");
    assert_eq!(served, document);

    // Accounts: login, users, tokens, audit (and a 403 and a 409 on the way).
    let (s, _) = fx
        .call(
            "POST",
            "/api/v1/login",
            "/api/v1/login",
            None,
            Some(json!({"user": "admin", "password": password})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let users = "/api/v1/users";
    let vera = json!({"name": "vera", "password": "viewer-password-1", "role": "viewer"});
    let (s, _) = fx.call("POST", users, users, a, Some(vera.clone())).await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _) = fx.call("POST", users, users, a, Some(vera)).await;
    assert_eq!(s, StatusCode::CONFLICT);
    fx.call("GET", users, users, a, None).await;
    let viewer = basic("vera", "viewer-password-1");
    let (s, _) = fx.call("GET", users, users, Some(&viewer), None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = fx
        .call(
            "POST",
            "/api/v1/alarms/{id}/{operation}",
            "/api/v1/alarms/tank_level_high/unshelve",
            Some(&viewer),
            Some(json!({"comment": "no"})),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "a viewer cannot operate alarms");

    // Commands (the bundled config limits the filler speed to 0..600, 200 per step): a write
    // verified by read-back, refusals by the envelope (409) and the role (403), a selection
    // and its cancel, the pending list, an unknown pending command.
    let speed = "acme/lyon/bottling/line1/filler/plc/speed_setpoint";
    let w = "/api/v1/tags/{path}/write";
    let write = format!("/api/v1/tags/{speed}/write");
    let (s, body) = fx
        .call(
            "POST",
            w,
            &write,
            a,
            Some(json!({"value": 420, "reason": "openapi"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["command"]["result"], "verified", "{body}");
    let (s, body) = fx
        .call("POST", w, &write, a, Some(json!({"value": 650})))
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "envelope_max", "{body}");
    let (s, body) = fx
        .call(
            "POST",
            w,
            &write,
            Some(&viewer),
            Some(json!({"value": 430})),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "not_authorised", "{body}");
    let (s, _) = fx
        .call("POST", w, &write, a, Some(json!({"reason": "no value"})))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let sel = "/api/v1/tags/{path}/select";
    let select = format!("/api/v1/tags/{speed}/select");
    let (s, body) = fx
        .call("POST", sel, &select, a, Some(json!({"value": 430})))
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let (s, body) = fx.call("DELETE", sel, &select, a, None).await;
    assert_eq!((s, &body["cancelled"]), (StatusCode::OK, &json!(true)));
    let (s, body) = fx
        .call("GET", "/api/v1/commands", "/api/v1/commands", a, None)
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let (s, body) = fx
        .call(
            "POST",
            "/api/v1/commands/{id}/{action}",
            "/api/v1/commands/99999/confirm",
            a,
            Some(json!({"reason": "checked"})),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"]["code"], "unknown_pending", "{body}");
    let tokens = "/api/v1/tokens";
    let (s, _) = fx
        .call(
            "POST",
            tokens,
            tokens,
            a,
            Some(json!({"label": "ci", "role": "viewer", "read_prefixes": [asset]})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    fx.call("GET", tokens, tokens, a, None).await;
    fx.call("GET", tokens, &format!("{tokens}?all=true"), a, None)
        .await;
    let audit = "/api/v1/audit";
    let (s, _) = fx
        .call("GET", audit, &format!("{audit}?limit=5"), a, None)
        .await;
    assert_eq!(s, StatusCode::OK);

    // The third-party validator decides.
    let doc_file = dir.path().join("openapi.json");
    std::fs::write(&doc_file, ironplant_api::openapi::DOCUMENT).expect("write the document");
    let rec_file = dir.path().join("responses.json");
    let rec: Vec<Json> = fx
        .recorded
        .iter()
        .map(|r| {
            json!({"method": r.method, "path": r.path, "status": r.status,
                   "content_type": r.content_type, "body": r.body})
        })
        .collect();
    std::fs::write(&rec_file, serde_json::to_vec(&rec).expect("json")).expect("write responses");
    let script = workspace().join("tests/peers/openapi_check.py");
    let (doc_arg, rec_arg) = (
        doc_file.to_string_lossy().into_owned(),
        rec_file.to_string_lossy().into_owned(),
    );
    let run = tokio::task::spawn_blocking(move || {
        ironplant_testkit::run_script(
            &py,
            &script,
            &[&doc_arg, &rec_arg],
            Duration::from_secs(60),
            "OpenAPI validation",
        )
    })
    .await
    .expect("validator");
    assert!(run.stdout.contains("JSON bodies valid"), "{}", run.report);
    eprintln!("{}", run.stdout.trim());
    runtime.shutdown();
}
