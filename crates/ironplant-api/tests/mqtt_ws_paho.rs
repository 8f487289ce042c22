//! Interop: MQTT over WebSocket with the third-party client paho-mqtt (PyPI), MQTT 3.1.1 and
//! 5.0: paho over WebSocket at `/mqtt` of the real HTTP server and paho over TCP, on one broker.
//!
//! Each test starts the HTTP API and the broker's TCP listener on 127.0.0.1:0 and runs one
//! scenario of `tests/peers/paho_ws_scenarios.py`, which prints JSON lines (the last one
//! `{"ok": true, ...}`). The venv comes from `.ci/test` (IRONPLANT_PYTHON). Without paho the
//! test is skipped locally with a message, but fails under CI=true.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ironplant_api::ApiState;
use ironplant_mqtt::{Broker, BrokerConfig};
use ironplant_runtime::Runtime;
use ironplant_testkit::ScriptRun;

/// Longest a scenario may take (its own waits time out after 5 s each).
const DEADLINE: Duration = Duration::from_secs(60);

fn python() -> Option<PathBuf> {
    ironplant_testkit::python("paho.mqtt.client", "paho-mqtt")
}

fn scenario(name: &str, version: &str) {
    let Some(py) = python() else { return };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let cfg = ironplant_api::settings::parse("empty.toml", "").expect("an empty config is valid");
    let runtime = Runtime::start(&cfg, None).expect("runtime starts");
    let broker = Broker::new(BrokerConfig::default());
    let (tcp, http) = rt.block_on(async {
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind an ephemeral port");
        let http = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind an ephemeral port");
        (tcp, http)
    });
    let tcp_port = tcp.local_addr().expect("local address").port();
    let ws_port = http.local_addr().expect("local address").port();
    let b = broker.clone();
    rt.spawn(async move { b.serve(tcp).await });
    let state = Arc::new(ApiState {
        runtime: runtime.clone(),
        started: Instant::now(),
        mqtt: Some(broker.clone()),
        security: None,
        http: ironplant_api::listen::Connections::new(Default::default(), None),
    });
    rt.spawn(ironplant_api::serve(
        http,
        state,
        std::future::pending::<()>(),
    ));

    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/peers/paho_ws_scenarios.py");
    let (tcp, ws) = (tcp_port.to_string(), ws_port.to_string());
    let ScriptRun { stdout, report } = ironplant_testkit::run_script(
        &py,
        &script,
        &["127.0.0.1", &tcp, &ws, name, version],
        DEADLINE,
        &format!("{name} (MQTT {version})"),
    );
    runtime.shutdown();
    let last = stdout.lines().last().unwrap_or_default();
    assert_eq!(
        last,
        format!(r#"{{"ok": true, "scenario": "{name}", "version": "{version}"}}"#),
        "{name} (MQTT {version}): unexpected final line\n{report}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.contains(r#""check": "delivered"#) || l.contains(r#""check": "retained"#)),
        "{name} (MQTT {version}): no delivery checked\n{report}"
    );
    assert_eq!(
        broker.stats().protocol_errors.load(Ordering::Relaxed),
        0,
        "{name} (MQTT {version}): the broker saw protocol errors from paho\n{report}"
    );
}

macro_rules! both_versions {
    ($($test:ident => $scenario:literal),* $(,)?) => {
        mod v311 {
            $(#[test] fn $test() { super::scenario($scenario, "3.1.1") })*
        }
        mod v5 {
            $(#[test] fn $test() { super::scenario($scenario, "5") })*
        }
    };
}

both_versions! {
    qos0_websocket_and_tcp_both_ways => "both_ways_qos0",
    qos1_websocket_and_tcp_both_ways => "both_ways_qos1",
    retained_across_websocket_and_tcp => "retained",
}
