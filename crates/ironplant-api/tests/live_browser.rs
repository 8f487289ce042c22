//! A real browser on the live API: Debian's chromium, driven by playwright-core (npm), runs
//! `tests/peers/browser_live.js`, whose page opens a WebSocket to `/api/v1/live`, is refused
//! with a wrong token, authenticates in its first message with a right one (handed to the page,
//! not put in the URL), subscribes to a prefix and reports its snapshot and the first change
//! after it, while this test keeps publishing changes on the bus.
//!
//! `.ci/test` installs chromium (apt) and playwright-core (into target/browser). Without them
//! the test is skipped locally with a message, but fails under CI=true.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use ironplant_api::ApiState;
use ironplant_core::{Quality, Sample, TagId, TagMeta, TagPath, Timestamp, Value, ValueType};
use ironplant_runtime::Runtime;
use ironplant_security::{ManualClock, Role, Security, SecurityOptions, UserStoreOptions};
use serde_json::{json, Value as Json};

fn sample(tag: TagId, v: i64) -> Sample {
    let now = Timestamp::now();
    Sample {
        tag,
        value: Value::Int(v),
        quality: Quality::GOOD,
        source_ts: now,
        server_ts: now,
    }
}

#[test]
fn chromium_page_gets_snapshot_and_changes() {
    let Some((modules, chromium)) = ironplant_testkit::browser() else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let _enter = rt.enter();
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
    sec.users
        .create_user("hmi", "a-long-enough-password", Role::Viewer, None)
        .expect("user");
    let token = sec
        .users
        .create_token("hmi", None, Duration::from_secs(600), "browser", None)
        .expect("token")
        .token;
    let cfg = ironplant_api::settings::parse("empty.toml", "").expect("an empty config is valid");
    let runtime = Runtime::start(&cfg, None).expect("runtime starts");
    let tags: Vec<TagId> = [
        "acme/lyon/line1/filler/speed",
        "acme/lyon/line1/filler/temp",
    ]
    .iter()
    .map(|p| {
        runtime
            .register_tag(TagMeta {
                id: TagId(0),
                path: TagPath::parse(p).expect("path"),
                value_type: ValueType::Int,
                unit: None,
                description: String::new(),
                range: None,
                writable: false,
                device: None,
            })
            .expect("register")
    })
    .collect();
    let other = runtime
        .register_tag(TagMeta {
            id: TagId(0),
            path: TagPath::parse("acme/lyon/line2/x/y").expect("path"),
            value_type: ValueType::Int,
            unit: None,
            description: String::new(),
            range: None,
            writable: false,
            device: None,
        })
        .expect("register");
    rt.block_on(runtime.bus.publish(vec![
        sample(tags[0], 10),
        sample(tags[1], 20),
        sample(other, 30),
    ]));
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind an ephemeral port");
    let addr = listener.local_addr().expect("local address");
    let state = Arc::new(ApiState {
        runtime: runtime.clone(),
        started: Instant::now(),
        mqtt: None,
        security: Some(sec.clone()),
        http: ironplant_api::listen::Connections::new(Default::default(), Some(sec.clone())),
    });
    rt.spawn(ironplant_api::serve(
        listener,
        state,
        std::future::pending::<()>(),
    ));

    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/peers/browser_live.js");
    let mut child = Command::new("node")
        .arg(&script)
        .arg(format!("ws://{addr}/api/v1/live"))
        .env("NODE_PATH", &modules)
        .env("IRONPLANT_CHROMIUM", &chromium)
        .env("IRONPLANT_LIVE_TOKEN", &token)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run node");
    // Keep changing the speed (and the tag outside the prefix) until the page is done: it
    // waits for the first change after its snapshot.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut v = 1_000;
    while child.try_wait().expect("node status").is_none() {
        assert!(Instant::now() < deadline, "the browser script hangs");
        v += 1;
        rt.block_on(async {
            runtime
                .bus
                .publish(vec![sample(other, v), sample(tags[0], v)])
                .await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        });
    }
    let out = child.wait_with_output().expect("node output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = format!(
        "--- stdout\n{stdout}--- stderr\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "the browser script failed\n{report}");
    let got: Json = serde_json::from_str(stdout.trim()).expect("one JSON line");
    assert_eq!(
        got["bad_token"],
        json!({"type": "error", "code": "unauthenticated", "close": 1008}),
        "{report}"
    );
    assert_eq!(got["protocol"], "ironplant.live.v1", "{report}");
    assert_eq!(
        got["ready"],
        json!({"type": "ready", "user": "hmi"}),
        "{report}"
    );
    // The snapshot: both line1 tags, with the values published before the page came (the
    // speed may already have changed once the test started publishing).
    assert_eq!(got["snapshot"]["id"], 7, "{report}");
    let snap = got["snapshot"]["tags"].as_object().expect("tags");
    assert_eq!(snap.len(), 2, "{report}");
    assert_eq!(
        snap["acme/lyon/line1/filler/temp"],
        json!([20, "Good"]),
        "{report}"
    );
    let speed = snap["acme/lyon/line1/filler/speed"][0]
        .as_i64()
        .expect("speed");
    // The change: the speed (never the tag outside the prefix), newer than the snapshot.
    assert_eq!(
        got["change"]["path"], "acme/lyon/line1/filler/speed",
        "{report}"
    );
    let changed = got["change"]["value"].as_i64().expect("value");
    assert!(
        changed > speed && changed > 1_000 && changed <= v,
        "{report}"
    );
    assert_eq!(got["change"]["quality"], "Good", "{report}");
    assert_eq!(got["change"]["has_ts"], true, "{report}");
    runtime.shutdown();
}
