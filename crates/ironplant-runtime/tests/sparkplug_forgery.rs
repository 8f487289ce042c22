//! A forged Sparkplug edge node with the real node's (stolen) credentials, over TCP: the
//! simulator's real edge node publishes through the broker, the simulator's forger connects as
//! the same identity and births and publishes the node too. The host refuses the second birth
//! while the real connection lives and every message of the forger, raises critical
//! `integrity` events naming both connections, and the real node's values stay Good (the
//! forged messages never reach the host's sequence tracking).

use std::sync::atomic::Ordering;
use std::time::Duration;

use ironplant_core::{Event, EventFilter, EventKind, QualityLevel, Severity};
use ironplant_mqtt::{Broker, BrokerConfig};
use ironplant_runtime::Runtime;
use ironplant_sim::attack::{forge_sparkplug_plain, ForgeSettings};
use ironplant_sim::plant::Plant;
use ironplant_sim::sparkplug::EdgeSettings;
use tokio::net::TcpListener;
use tokio::time::Instant;

const CONFIG: &str = r#"
[sparkplug]
host_id = "forgery-host"
"#;

const SPEED: &str = "bottling/sim-edge/line1/Filler/Speed";

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(15);
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_node_with_stolen_credentials_is_refused_and_reported() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = ironplant_runtime::config::parse("t.toml", CONFIG).expect("valid config");
    let rt = Runtime::start(&config, Some(dir.path())).expect("runtime");
    let broker = Broker::new(BrokerConfig::default());
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let serving = broker.clone();
    let broker_task = tokio::spawn(async move { serving.serve(listener).await });
    let mut events = rt.events.subscribe("test", 4096, EventFilter::all());
    let host = ironplant_runtime::sparkplug::start(
        broker.clone(),
        &rt,
        &config.get::<ironplant_sparkplug::settings::SparkplugSettings>(),
    )
    .expect("host");

    // The real node, on its own connection.
    let mut plant = Plant::new(3);
    plant.step(Duration::from_secs(60));
    let (readings_tx, readings) = tokio::sync::watch::channel(plant.readings().clone());
    let edge = EdgeSettings {
        broker: addr.to_string(),
        interval: Duration::from_millis(100),
        ..EdgeSettings::default()
    };
    let edge_task = tokio::spawn(ironplant_sim::sparkplug::run(edge, readings));
    let physics = tokio::spawn(async move {
        loop {
            plant.step(Duration::from_millis(100));
            if readings_tx.send(plant.readings().clone()).is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let good = |rt: &Runtime| {
        rt.namespace
            .lookup(SPEED)
            .and_then(|m| rt.bus.current(m.id))
            .filter(|s| s.quality.level == QualityLevel::Good)
    };
    wait_until("the real node's speed, Good", || good(&rt).is_some()).await;

    // The forger: same identity (anonymous here, as the broker has no auth), its own
    // connection, a guessed bdSeq, a fresh seq.
    let forged = ForgeSettings {
        broker: addr.to_string(),
        messages: 3,
        interval: Duration::from_millis(50),
        birth: Some(0),
        ..ForgeSettings::default()
    };
    let report = forge_sparkplug_plain(&forged, None)
        .await
        .expect("the broker lets the forger publish");
    assert_eq!(report.messages.len(), 5, "NBIRTH, DBIRTH, 3 DDATA");

    let end = Instant::now() + Duration::from_secs(15);
    let mut seen: Vec<Event> = Vec::new();
    while !(seen.iter().any(|e| &*e.code == "sparkplug_duplicate_birth")
        && seen
            .iter()
            .any(|e| &*e.code == "sparkplug_foreign_publisher"))
    {
        let e = tokio::time::timeout_at(end, events.recv())
            .await
            .unwrap_or_else(|_| panic!("integrity events; seen {seen:#?}"))
            .expect("event bus open");
        seen.push((*e).clone());
    }
    let dup = seen
        .iter()
        .find(|e| &*e.code == "sparkplug_duplicate_birth")
        .expect("found above");
    assert_eq!(dup.kind, EventKind::Integrity);
    assert_eq!(dup.severity, Severity::Critical);
    assert!(
        dup.message.contains("sim-edge-bottling-2") && dup.message.contains("still connected"),
        "{}",
        dup.message
    );
    // Every forged message was refused (the NBIRTH, the DBIRTH and the 3 DDATA).
    wait_until("5 refused messages", || {
        rt.metrics.sparkplug.foreign_refused.load(Ordering::Relaxed) >= 5
    })
    .await;
    assert_eq!(
        rt.metrics.sparkplug.seq_gaps.load(Ordering::Relaxed),
        0,
        "the forged seq never reached the host"
    );
    // The real node goes on, Good.
    let before = good(&rt).expect("good").server_ts;
    wait_until("a newer Good value from the real node", || {
        good(&rt).is_some_and(|s| s.server_ts > before)
    })
    .await;

    physics.abort();
    edge_task.abort();
    host.shutdown();
    broker_task.abort();
}
