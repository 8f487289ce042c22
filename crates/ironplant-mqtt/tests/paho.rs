//! Interop: the broker against the third-party client paho-mqtt (PyPI), MQTT 3.1.1 and 5.0.
//!
//! Each test starts its own broker on 127.0.0.1:0 and runs one scenario of
//! `tests/peers/paho_scenarios.py`, which checks what paho observed and prints it as JSON lines
//! (the last one `{"ok": true, ...}`). The venv comes from the test command (`.ci/test`), which
//! exports IRONPLANT_PYTHON. Without paho the test is skipped locally with a message, but fails
//! under CI=true: a peer must never be silently missing there.

use std::path::PathBuf;

use std::time::Duration;

use ironplant_mqtt::{Broker, BrokerConfig};
use ironplant_testkit::ScriptRun;

/// Longest a scenario may take (its own waits time out after 5 s each).
const DEADLINE: Duration = Duration::from_secs(60);

fn python() -> Option<PathBuf> {
    ironplant_testkit::python("paho.mqtt.client", "paho-mqtt")
}

/// Runs one scenario against a fresh broker and fails the test with paho's report if it failed.
fn scenario(name: &str, version: &str) {
    let Some(py) = python() else { return };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind an ephemeral port");
    let port = listener.local_addr().expect("local address").port();
    let broker = Broker::new(BrokerConfig::default());
    let b = broker.clone();
    rt.spawn(async move { b.serve(listener).await });

    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/peers/paho_scenarios.py");
    let ScriptRun { stdout, report } = ironplant_testkit::run_script(
        &py,
        &script,
        &["127.0.0.1", &port.to_string(), name, version],
        DEADLINE,
        &format!("{name} (MQTT {version})"),
    );
    let last = stdout.lines().last().unwrap_or_default();
    assert_eq!(
        last,
        format!(r#"{{"ok": true, "scenario": "{name}", "version": "{version}"}}"#),
        "{name} (MQTT {version}): unexpected final line\n{report}"
    );
    assert!(
        stdout
            .lines()
            .filter(|l| l.contains(r#""check": "#))
            .count()
            >= 1,
        "{name} (MQTT {version}): no checks reported\n{report}"
    );
    assert_eq!(
        broker
            .stats()
            .protocol_errors
            .load(std::sync::atomic::Ordering::Relaxed),
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
    qos0_end_to_end => "qos0",
    qos1_end_to_end => "qos1",
    qos2_handshake_on_both_sides => "qos2",
    retained_delivered_later_and_cleared => "retained",
    will_on_lost_connection_only => "will",
    wildcards_plus_and_hash => "wildcards",
    shared_subscription_splits_messages => "shared",
    persistent_session_keeps_qos1_and_qos2_messages => "persistent",
}

#[test]
fn v5_will_delay() {
    scenario("will_delay", "5");
}

#[test]
fn v5_subscription_identifiers_come_back() {
    scenario("subscription_identifier", "5");
}

#[test]
fn v5_user_properties_pass_through() {
    scenario("user_properties", "5");
}

#[test]
fn v5_no_local() {
    scenario("no_local", "5");
}
