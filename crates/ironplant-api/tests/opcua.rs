//! `POST /api/v1/opcua/browse` and `/trust` against a third-party server (asyncua, PyPI,
//! `tests/peers/opcua_server.py`): a viewer may not; an engineer meets the untrusted server
//! (409 with its thumbprint), trusts it, browses the tree and gets the `[[opcua.node]]` config
//! of its variables, which the platform's config parser accepts.

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::SystemTime;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use axum::Router;
use ironplant_api::settings::HttpSettings;
use ironplant_api::ApiState;
use ironplant_security::{ManualClock, Role, Security, SecurityOptions, UserStoreOptions};
use serde_json::{json, Value as Json};
use tower::ServiceExt as _;

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn call(app: &Router, uri: &str, auth: &str, body: Json) -> (StatusCode, Json) {
    let mut req = Request::builder()
        .method("POST")
        .uri(uri)
        .header("authorization", auth)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .expect("request");
    req.extensions_mut()
        .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000))));
    let resp = app.clone().oneshot(req).await.expect("response");
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .expect("body");
    (status, serde_json::from_slice(&bytes).unwrap_or(Json::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engineers_browse_a_server_trust_it_and_get_its_config() {
    let Some(py) = ironplant_testkit::python("asyncua", "asyncua (PyPI)") else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/peers/opcua_server.py");
    let mut child = Command::new(py)
        .arg(script)
        .arg(dir.path().join("server"))
        .args(["--count", "3"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the asyncua server");
    let stdout = child.stdout.take().expect("piped");
    let server = Server(child);
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("the server's first line");
    let v: Json = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
    let url = v["url"].as_str().expect("url").to_owned();
    let thumbprint = v["thumbprint"].as_str().expect("thumbprint").to_owned();

    let data = dir.path().join("data");
    let config = ironplant_api::settings::parse("empty.toml", "").expect("config");
    let platform = ironplant_runtime::start_platform(&config, Some(&data), None).expect("platform");
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
    let sec = Arc::new(Security::open(&data, clock, options).expect("security"));
    for (name, role) in [("erin", Role::Engineer), ("vic", Role::Viewer)] {
        sec.users
            .create_user(name, &format!("{name}-password-1"), role, None)
            .expect("user");
    }
    let auth = |name: &str| ironplant_testkit::basic_auth(name, &format!("{name}-password-1"));
    let app = ironplant_api::router(Arc::new(ApiState {
        runtime: platform.runtime.clone(),
        started: std::time::Instant::now(),
        mqtt: None,
        security: Some(sec.clone()),
        http: ironplant_api::listen::Connections::new(HttpSettings::default(), Some(sec.clone())),
    }));
    let login = json!({"url": url, "user": "op", "password": "op-password"});

    let (s, b) = call(&app, "/api/v1/opcua/browse", &auth("vic"), login.clone()).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{b}");

    let (s, b) = call(&app, "/api/v1/opcua/browse", &auth("erin"), login.clone()).await;
    assert_eq!(s, StatusCode::CONFLICT, "{b}");
    assert_eq!(b["error"]["code"], "opcua_untrusted");
    let message = b["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(&thumbprint), "{message}");

    let (s, b) = call(
        &app,
        "/api/v1/opcua/trust",
        &auth("erin"),
        json!({"thumbprint": &thumbprint[..16]}),
    )
    .await;
    assert_eq!(
        (s, b["trusted"].as_str()),
        (StatusCode::OK, Some(thumbprint.as_str())),
        "{b}"
    );

    let mut deep = login.clone();
    deep["depth"] = json!(2);
    let (s, b) = call(&app, "/api/v1/opcua/browse", &auth("erin"), deep).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let nodes = b["nodes"].as_array().expect("nodes");
    let line1 = nodes
        .iter()
        .find(|n| {
            n["browse_name"]
                .as_str()
                .is_some_and(|n| n.ends_with("Line1"))
        })
        .unwrap_or_else(|| panic!("Line1 in {b}"));
    let v0 = nodes
        .iter()
        .find(|n| {
            n["parent"] == line1["node_id"]
                && n["browse_name"].as_str().is_some_and(|n| n.ends_with("v0"))
        })
        .unwrap_or_else(|| panic!("v0 under Line1 in {b}"));
    assert_eq!(v0["node_class"], "Variable");
    assert_eq!(v0["data_type"], "i=11", "Double");

    let mut gen = login.clone();
    gen["node"] = line1["node_id"].clone();
    gen["config"] = json!({"connection": "line1", "prefix": "acme/lyon/packaging/line1/labeller"});
    let (s, b) = call(&app, "/api/v1/opcua/browse", &auth("erin"), gen).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["variables"], 3);
    let toml = format!(
        "[[opcua.connection]]\nid = \"line1\"\nurl = \"{url}\"\n\n{}",
        b["config"].as_str().expect("config")
    );
    let parsed = ironplant_api::settings::parse("generated.toml", &toml)
        .unwrap_or_else(|e| panic!("{e}\n{toml}"));
    let ns = parsed.namespace();
    let v0 = ns
        .lookup("acme/lyon/packaging/line1/labeller/v0")
        .unwrap_or_else(|| panic!("v0 tag in\n{toml}"));
    assert_eq!(
        (v0.unit.as_deref(), v0.range, v0.writable),
        (Some("%"), Some((0.0, 100.0)), true)
    );
    drop(server);
    platform.shutdown(std::time::Duration::from_secs(5)).await;
}
