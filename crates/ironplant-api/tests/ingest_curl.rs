//! HTTP ingest with a third-party client: Debian's `curl` posts JSON payloads to
//! `POST /api/v1/ingest/{name}` on the real router served on port 0 (plain HTTP, real security
//! store): 202 with counts and the values on the bus, field-level rejections listed, 400 for a
//! bad payload, 404 for an unknown mapping, 403 for a viewer and for an operator whose write
//! prefixes do not cover the mapping's tags, 415 without `Content-Type: application/json`.
//!
//! `.ci/test` installs curl; without it the test is skipped locally and fails under CI=true.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use ironplant_api::ApiState;
use ironplant_core::{Quality, Value, ValueType};
use ironplant_ingest::Reason;
use ironplant_runtime::Runtime;
use ironplant_security::policy::{PrefixRule, TagScopes};
use ironplant_security::{ManualClock, Role, Security, SecurityOptions, UserStoreOptions};
use serde_json::Value as Json;

const INGEST: &str = r#"
[[ingest.json]]
name = "gateway"
http = true
timestamp = { pointer = "/ts", format = "unix_ms" }

[[ingest.json.field]]
pointer = "/d/temp"
path = "acme/lyon/lab/gw/temp"
unit = "°C"
min = -40.0
max = 85.0

[[ingest.json.field]]
pointer = "/d/fw"
path = "acme/lyon/lab/gw/firmware"
type = "string"
"#;

fn curl(port: u16, name: &str, token: &str, content_type: &str, body: &str) -> (u16, Json) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-X", "POST"])
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args(["-H", &format!("Content-Type: {content_type}")])
        .args(["--data-binary", body])
        .args(["-w", "\n%{http_code}"])
        .arg(format!("http://127.0.0.1:{port}/api/v1/ingest/{name}"))
        .output()
        .expect("run curl");
    assert!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').expect("status line");
    let code: u16 = code.trim().parse().expect("status code");
    let json = serde_json::from_str(body).unwrap_or(Json::Null);
    (code, json)
}

fn curl_get(port: u16, path: &str, token: &str) -> (u16, Json) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args(["-w", "\n%{http_code}"])
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').expect("status line");
    (
        code.trim().parse().expect("status code"),
        serde_json::from_str(body).unwrap_or(Json::Null),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_posts_json_that_lands_on_the_bus_under_the_write_policy() {
    if !ironplant_testkit::peer_available(
        "curl (Debian package curl)",
        Command::new("curl").arg("--version").output().is_ok(),
    ) {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
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
    let sec = Arc::new(Security::open(dir.path(), clock, options).expect("security opens"));
    let ttl = Duration::from_secs(3600);
    for (user, role) in [
        ("otto", Role::Operator),
        ("vera", Role::Viewer),
        ("erin", Role::Engineer),
    ] {
        sec.users
            .create_user(user, "a-long-password-1", role, None)
            .expect("user");
    }
    let gateway = sec
        .users
        .create_token("otto", Some(Role::Operator), ttl, "lab gateway", None)
        .expect("token");
    let elsewhere = sec
        .users
        .create_token("otto", Some(Role::Operator), ttl, "other line", None)
        .expect("token");
    let viewer = sec
        .users
        .create_token("vera", Some(Role::Viewer), ttl, "viewer", None)
        .expect("token");
    let engineer = sec
        .users
        .create_token("erin", Some(Role::Engineer), ttl, "diagnostics", None)
        .expect("token");
    let scopes = TagScopes::path(&sec);
    let rule = |p: &str| PrefixRule {
        read: None,
        write: Some(vec![p.to_owned()]),
    };
    TagScopes::set_token_rule(&scopes, &gateway.id, &rule("acme/lyon/lab")).expect("rule");
    TagScopes::set_token_rule(&scopes, &elsewhere.id, &rule("acme/lyon/line2")).expect("rule");

    // The platform's parser: [[ingest.json]] is a section of the registry.
    let cfg = ironplant_api::settings::parse("t.toml", INGEST).expect("a valid config");
    let runtime = Runtime::start(&cfg, None).expect("runtime");
    // The runtime built the mappings from the config and registered their tags.
    let ingest = runtime.ingest.clone();
    assert_eq!(ingest.mappings().count(), 1);
    for path in ["acme/lyon/lab/gw/temp", "acme/lyon/lab/gw/firmware"] {
        assert!(
            runtime.namespace.lookup(path).is_some(),
            "{path} registered"
        );
    }
    let state = Arc::new(ApiState {
        runtime: runtime.clone(),
        started: Instant::now(),
        mqtt: None,
        security: Some(sec.clone()),
        http: ironplant_api::listen::Connections::new(Default::default(), Some(sec.clone())),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind an ephemeral port");
    let port = listener.local_addr().expect("address").port();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    // What the platform does for --insecure-http: the ingest routes are part of the API.
    let server = tokio::spawn(ironplant_api::serve(listener, state, async move {
        let _ = stop_rx.await;
    }));

    let call = move |name: &'static str, token: String, ct: &'static str, body: String| {
        tokio::task::spawn_blocking(move || curl(port, name, &token, ct, &body))
    };
    let json = "application/json";
    let ts_ms = ironplant_core::Timestamp::now().0 / 1000 - 5_000;
    let good = format!(r#"{{"ts":{ts_ms},"d":{{"temp":21.37,"fw":"1.4.2","rssi":-61}}}}"#);

    let (code, body) = call("gateway", gateway.token.clone(), json, good.clone())
        .await
        .expect("curl");
    assert_eq!(code, 202, "{body}");
    assert_eq!(
        (body["accepted"].as_u64(), body["rejected"].as_u64()),
        (Some(2), Some(0)),
        "{body}"
    );
    let temp = runtime
        .namespace
        .lookup("acme/lyon/lab/gw/temp")
        .expect("tag");
    assert_eq!(
        (temp.value_type, temp.unit.as_deref()),
        (ValueType::Float, Some("°C"))
    );
    let now = runtime.bus.current(temp.id).expect("a current value");
    assert_eq!(
        (now.value, now.quality),
        (Value::Float(21.37), Quality::GOOD)
    );
    assert_eq!(now.source_ts.0, ts_ms * 1000, "the payload's own time");
    let fw = runtime
        .namespace
        .lookup("acme/lyon/lab/gw/firmware")
        .expect("tag");
    assert_eq!(
        runtime.bus.current(fw.id).map(|s| s.value),
        Some(Value::String("1.4.2".into()))
    );

    // A partial payload: what is there is accepted, the rest listed.
    let partial = format!(r#"{{"ts":{ts_ms},"d":{{"temp":"21.5"}}}}"#);
    let (code, body) = call("gateway", gateway.token.clone(), json, partial.clone())
        .await
        .expect("curl");
    assert_eq!(code, 202, "{body}");
    assert_eq!(
        (body["accepted"].as_u64(), body["rejected"].as_u64()),
        (Some(1), Some(1)),
        "{body}"
    );
    assert_eq!(body["errors"][0]["pointer"], "/d/fw");
    assert_eq!(body["errors"][0]["reason"], "missing_field");
    // The same payload again (recorded and replayed): refused whole.
    let (code, body) = call("gateway", gateway.token.clone(), json, partial)
        .await
        .expect("curl");
    assert_eq!(code, 409, "{body}");
    assert_eq!(body["error"]["code"], "replayed", "{body}");

    // Payloads rejected whole.
    for (payload, needle) in [
        ("{\"ts\": 1, \"d\": ".to_owned(), "not JSON"),
        (r#"{"d":{"temp":20}}"#.to_owned(), "no timestamp at /ts"),
        (
            r#"{"ts":86400000,"d":{"temp":20}}"#.to_owned(),
            "before 2000",
        ),
    ] {
        let (code, body) = call("gateway", gateway.token.clone(), json, payload)
            .await
            .expect("curl");
        assert_eq!(code, 400, "{body}");
        assert_eq!(body["error"]["code"], "bad_payload", "{body}");
        let msg = body["error"]["message"].as_str().unwrap_or("");
        assert!(msg.contains(needle), "{msg}");
    }
    let st = ingest.stats(0).expect("stats");
    assert_eq!(st.rejected(Reason::NotJson), 1);
    assert_eq!(st.rejected(Reason::BadTimestamp), 1);
    assert_eq!(st.rejected(Reason::AbsurdTimestamp), 1);
    // The replay is mapped before it is judged: its missing field is counted as well.
    assert_eq!(st.rejected(Reason::MissingField), 2);
    assert_eq!(st.rejected(Reason::Replayed), 1);

    // Who may post: the write policy of the API.
    let (code, body) = call("nope", gateway.token.clone(), json, good.clone())
        .await
        .expect("curl");
    assert_eq!(
        (code, body["error"]["code"].as_str()),
        (404, Some("ingest_not_found")),
        "{body}"
    );
    let (code, body) = call("gateway", viewer.token.clone(), json, good.clone())
        .await
        .expect("curl");
    assert_eq!(
        (code, body["error"]["code"].as_str()),
        (403, Some("forbidden")),
        "{body}"
    );
    let (code, body) = call("gateway", elsewhere.token.clone(), json, good.clone())
        .await
        .expect("curl");
    assert_eq!(
        (code, body["error"]["code"].as_str()),
        (403, Some("forbidden")),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("acme/lyon/lab/gw/temp"),
        "{body}"
    );
    let (code, body) = call("gateway", gateway.token.clone(), "text/plain", good)
        .await
        .expect("curl");
    assert_eq!(
        (code, body["error"]["code"].as_str()),
        (415, Some("unsupported_media_type")),
        "{body}"
    );
    assert_eq!(
        st.messages.load(std::sync::atomic::Ordering::Relaxed),
        6,
        "requests refused by the API are not mapped (the replay was: 6 payloads)"
    );

    // Diagnostics: counters by reason and the last error, for those who configure devices.
    let (code, body) =
        tokio::task::spawn_blocking(move || curl_get(port, "/api/v1/ingest", &engineer.token))
            .await
            .expect("curl");
    assert_eq!(code, 200, "{body}");
    let m = &body["mappings"][0];
    assert_eq!(
        (
            m["name"].as_str(),
            m["messages"].as_u64(),
            m["samples"].as_u64()
        ),
        (Some("gateway"), Some(6), Some(3)),
        "{body}"
    );
    assert_eq!(m["rejected"]["not_json"], 1, "{body}");
    assert_eq!(m["rejected"]["replayed"], 1, "{body}");
    assert_eq!(m["last_error"]["reason"], "absurd_timestamp", "{body}");
    let token = gateway.token.clone();
    let (code, _) = tokio::task::spawn_blocking(move || curl_get(port, "/api/v1/ingest", &token))
        .await
        .expect("curl");
    assert_eq!(code, 403, "an operator does not see the diagnostics");

    let _ = stop_tx.send(());
    let _ = server.await;
    runtime.shutdown();
}
