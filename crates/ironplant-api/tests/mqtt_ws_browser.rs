//! A real browser at `/mqtt`: Debian's chromium, driven by playwright-core (npm), runs
//! `tests/peers/browser_mqtt_ws.js`, whose page speaks MQTT 3.1.1 over a browser WebSocket.
//! The test publishes a retained message before the page connects and waits for the page's own
//! message through an in-process subscriber.
//!
//! `.ci/test` installs chromium (apt) and playwright-core (into target/browser). Without them
//! the test is skipped locally with a message, but fails under CI=true.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ironplant_api::ApiState;
use ironplant_mqtt::codec::{MqttString, Publish};
use ironplant_mqtt::{Broker, BrokerConfig};
use ironplant_runtime::Runtime;

fn s(text: &str) -> MqttString {
    MqttString::from_utf8(Bytes::copy_from_slice(text.as_bytes())).expect("valid string")
}

#[test]
fn chromium_page_speaks_mqtt_over_websocket() {
    let Some((modules, chromium)) = ironplant_testkit::browser() else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    // The broker's in-process subscriber runs a task on this runtime.
    let _enter = rt.enter();
    let cfg = ironplant_api::settings::parse("empty.toml", "").expect("an empty config is valid");
    let runtime = Runtime::start(&cfg, None).expect("runtime starts");
    let broker = Broker::new(BrokerConfig::default());
    let mut retained = Publish::new(s("browser/in"), Bytes::from_static(b"setpoint 42"));
    retained.retain = true;
    broker.publish(retained);
    let mut from_page = broker
        .subscribe_internal("test", "browser/out", 16)
        .expect("valid filter");
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind an ephemeral port");
    let addr = listener.local_addr().expect("local address");
    let state = Arc::new(ApiState {
        runtime: runtime.clone(),
        started: Instant::now(),
        mqtt: Some(broker.clone()),
        security: None,
        http: ironplant_api::listen::Connections::new(Default::default(), None),
    });
    rt.spawn(ironplant_api::serve(
        listener,
        state,
        std::future::pending::<()>(),
    ));

    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/peers/browser_mqtt_ws.js");
    let out = Command::new("node")
        .arg(&script)
        .arg(format!("ws://{addr}/mqtt"))
        .env("NODE_PATH", &modules)
        .env("IRONPLANT_CHROMIUM", &chromium)
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = format!(
        "--- stdout\n{stdout}--- stderr\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "the browser script failed\n{report}");
    assert_eq!(
        stdout.trim(),
        r#"{"protocol":"mqtt","connack":[0,0],"suback":[0,1,0],"received":{"retain":true,"topic":"browser/in","payload":"setpoint 42"}}"#,
        "{report}"
    );
    let got = rt
        .block_on(async { tokio::time::timeout(Duration::from_secs(5), from_page.recv()).await })
        .expect("the page's message within 5 s")
        .expect("subscription open");
    assert_eq!(&got.payload[..], b"hello from chromium");
    runtime.shutdown();
}
