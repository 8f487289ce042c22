//! Writes through the REST API, on the platform running the simulated bottling line over Modbus
//! TCP, with a real security store: a write verified by read-back; refusals by the envelope,
//! the role, select-before-operate and the two-person rule, each with its code and status;
//! a select-then-operate and a two-person write confirmed by a second engineer; every step an
//! event on the event bus.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use axum::Router;
use ironplant_api::settings::HttpSettings;
use ironplant_api::ApiState;
use ironplant_core::{Event, EventFilter, EventKind, Value};
use ironplant_security::{ManualClock, Role, Security, SecurityOptions, UserStoreOptions};
use serde_json::{json, Value as Json};
use tokio::time::Instant;
use tower::ServiceExt as _;

const SPEED: &str = "acme/lyon/bottling/line1/filler/plc/speed_setpoint";
const LEVEL: &str = "acme/lyon/bottling/line1/tank/plc/level_setpoint";
const PUMP: &str = "acme/lyon/bottling/line1/tank/plc/pump_enable";

const COMMANDS: &str = r#"
[[command]]
tag = "acme/lyon/bottling/line1/filler/plc/speed_setpoint"
min = 0
max = 600
max_step = 200

[[command]]
tag = "acme/lyon/bottling/line1/tank/plc/level_setpoint"
min = 0
max = 100
select_before_operate = "30s"
verify = { tolerance = 0.05 }

[[command]]
tag = "acme/lyon/bottling/line1/tank/plc/pump_enable"
two_person = { role = "engineer", timeout = "60s" }
"#;

async fn call(
    app: &Router,
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
        .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000))));
    let resp = app.clone().oneshot(req).await.expect("response");
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .expect("body");
    (status, serde_json::from_slice(&bytes).unwrap_or(Json::Null))
}

fn write(tag: &str) -> String {
    format!("/api/v1/tags/{tag}/write")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_go_through_the_command_path_and_every_step_is_an_event() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sim = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the simulator");
    let sim_addr = sim.local_addr().expect("address");
    let sim = tokio::spawn(ironplant_sim::run(sim, 7));
    let example = include_str!("../../../examples/bottling.toml");
    let plant = example
        .rsplit_once("\n[[sparkplug.asset]]")
        .map_or(example, |(plant, _)| plant)
        .replace("127.0.0.1:5020", &sim_addr.to_string())
        .replace("poll_interval = \"1s\"", "poll_interval = \"100ms\"");
    let config = ironplant_api::settings::parse("bottling.toml", &format!("{plant}{COMMANDS}"))
        .unwrap_or_else(|e| panic!("{e}"));
    let platform = ironplant_runtime::start_platform(&config, Some(&dir.path().join("data")), None)
        .expect("platform starts");
    let rt = platform.runtime.clone();
    let mut events = rt.events.subscribe("test", 4096, EventFilter::all());

    let options = SecurityOptions {
        users: UserStoreOptions {
            argon2_m_kib: 64,
            argon2_t: 1,
            argon2_p: 1,
            ..UserStoreOptions::default()
        },
        ..SecurityOptions::default()
    };
    let clock = Arc::new(ManualClock::new(SystemTime::now()));
    let sec = Arc::new(Security::open(&dir.path().join("sec"), clock, options).expect("security"));
    for (name, role) in [
        ("alice", Role::Operator),
        ("erin", Role::Engineer),
        ("gus", Role::Engineer),
        ("vic", Role::Viewer),
    ] {
        sec.users
            .create_user(name, &format!("{name}-password-1"), role, None)
            .expect("user");
    }
    let auth = |name: &str| ironplant_testkit::basic_auth(name, &format!("{name}-password-1"));
    let (alice, erin, gus, vic) = (auth("alice"), auth("erin"), auth("gus"), auth("vic"));
    let app = ironplant_api::router(Arc::new(ApiState {
        runtime: rt.clone(),
        started: std::time::Instant::now(),
        mqtt: None,
        security: Some(sec.clone()),
        http: ironplant_api::listen::Connections::new(HttpSettings::default(), Some(sec.clone())),
    }));

    // Wait for the setpoints to be polled (the step limit needs the current value).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, t) = call(&app, "GET", &format!("/api/v1/tags/{SPEED}"), &alice, None).await;
        let (_, l) = call(&app, "GET", &format!("/api/v1/tags/{LEVEL}"), &alice, None).await;
        if t["quality"] == "Good" && l["quality"] == "Good" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "setpoints not Good within 20 s: {t} {l}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Accepted, written, verified by the device's read-back.
    let (s, b) = call(
        &app,
        "POST",
        &write(SPEED),
        &alice,
        Some(json!({"value": 450, "reason": "33cl run"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["command"]["result"], "verified", "{b}");
    assert_eq!(b["command"]["value"], 450, "{b}");

    // Refused: the envelope (409), the role (403), a type (400).
    let (s, b) = call(
        &app,
        "POST",
        &write(SPEED),
        &alice,
        Some(json!({"value": 700})),
    )
    .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("envelope_max")),
        "{b}"
    );
    assert!(
        b["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("700 is above the maximum 600")),
        "{b}"
    );
    let (s, b) = call(
        &app,
        "POST",
        &write(SPEED),
        &vic,
        Some(json!({"value": 460})),
    )
    .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("not_authorised")),
        "{b}"
    );
    assert!(
        b["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("viewer lacks the permission write_setpoints")),
        "{b}"
    );
    let (s, b) = call(
        &app,
        "POST",
        &write(SPEED),
        &alice,
        Some(json!({"value": "fast"})),
    )
    .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("bad_value_type")),
        "{b}"
    );

    // Select-before-operate: refused without a selection; selected, then operated.
    let (s, b) = call(
        &app,
        "POST",
        &write(LEVEL),
        &alice,
        Some(json!({"value": 42.5})),
    )
    .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("not_selected")),
        "{b}"
    );
    let select = format!("/api/v1/tags/{LEVEL}/select");
    let (s, b) = call(
        &app,
        "POST",
        &select,
        &alice,
        Some(json!({"value": 42.5, "reason": "refill"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let sel = b["selection"]["id"].as_u64().expect("a selection id");
    let (s, b) = call(
        &app,
        "POST",
        &write(LEVEL),
        &erin,
        Some(json!({"value": 42.5})),
    )
    .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("selected_by_another_session")),
        "{b}"
    );
    let (s, b) = call(
        &app,
        "POST",
        &write(LEVEL),
        &alice,
        Some(json!({"value": 42.5, "select": sel + 1000})),
    )
    .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("select_mismatch")),
        "{b}"
    );
    let (s, b) = call(
        &app,
        "POST",
        &write(LEVEL),
        &alice,
        Some(json!({"value": 42.5, "select": sel})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["command"]["result"], "verified", "{b}");

    // Two-person rule: pending; the requester cannot confirm; a second engineer does.
    let (s, b) = call(
        &app,
        "POST",
        &write(PUMP),
        &erin,
        Some(json!({"value": true, "reason": "refill"})),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    assert_eq!(b["command"]["result"], "pending", "{b}");
    let id = b["command"]["id"].as_u64().expect("an id");
    let (s, b) = call(&app, "GET", "/api/v1/commands", &vic, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["pending"][0]["id"].as_u64(), Some(id), "{b}");
    assert_eq!(b["pending"][0]["needs_role"], "engineer", "{b}");
    let confirm = format!("/api/v1/commands/{id}/confirm");
    let reason = Some(json!({"reason": "checked on site"}));
    let (s, b) = call(&app, "POST", &confirm, &erin, reason.clone()).await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("confirmer_same_user")),
        "{b}"
    );
    let (s, b) = call(&app, "POST", &confirm, &alice, reason.clone()).await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("confirmer_role_too_low")),
        "{b}"
    );
    // A viewer is not a person who may confirm: refused by the rule (the command stays).
    let (s, b) = call(&app, "POST", &confirm, &vic, reason.clone()).await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("confirmer_role_too_low")),
        "{b}"
    );
    let (s, b) = call(&app, "POST", &confirm, &gus, reason.clone()).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(
        (b["command"]["id"].as_u64(), &b["command"]["result"]),
        (Some(id), &json!("verified")),
        "{b}"
    );
    let (s, b) = call(&app, "GET", "/api/v1/commands", &vic, None).await;
    assert_eq!((s, &b["pending"]), (StatusCode::OK, &json!([])), "{b}");

    // Every step was an event, in order, with the refusal's code.
    let want: Vec<(&str, &str, Option<&str>)> = vec![
        ("alice", "accepted", None),
        ("alice", "verified", None),
        ("alice", "refused", Some("envelope_max")),
        ("vic", "refused", Some("not_authorised")),
        ("alice", "refused", Some("bad_value_type")),
        ("alice", "refused", Some("not_selected")),
        ("alice", "selected", None),
        ("erin", "refused", Some("selected_by_another_session")),
        ("alice", "accepted", None),
        ("alice", "verified", None),
        ("erin", "pending", None),
        ("erin", "refused", Some("confirmer_same_user")),
        ("erin", "refused", Some("confirmer_role_too_low")),
        ("erin", "refused", Some("confirmer_role_too_low")),
        ("erin", "accepted", None),
        ("erin", "verified", None),
    ];
    let mut got: Vec<Event> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.len() < want.len() {
        let e = tokio::time::timeout_at(deadline, events.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} command events: {got:?}", got.len()))
            .expect("open");
        if e.kind == EventKind::Command {
            got.push(Arc::unwrap_or_clone(e));
        }
    }
    let got: Vec<(String, String, Option<String>)> = got
        .iter()
        .map(|e| {
            (
                e.actor.as_deref().unwrap_or("").to_owned(),
                e.code.to_string(),
                e.attribute("refusal").and_then(|v| match v {
                    Value::String(s) => Some(s.to_string()),
                    _ => None,
                }),
            )
        })
        .collect();
    let want: Vec<(String, String, Option<String>)> = want
        .into_iter()
        .map(|(a, c, r)| (a.to_owned(), c.to_owned(), r.map(str::to_owned)))
        .collect();
    assert_eq!(got, want);
    platform.shutdown(Duration::from_secs(5)).await;
    sim.abort();
}
