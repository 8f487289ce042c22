//! The Sparkplug host wired into a running platform: births become tags (historised, listed),
//! data updates them, a re-birth keeps their ids, deaths turn them Bad, a seq gap publishes a
//! rebirth request, STATE is published. Messages are injected on the broker in-process; the
//! pysparkplug interop test (crates/ironplant/tests/sparkplug_interop.rs) does it over TCP.

use std::sync::atomic::Ordering;
use std::time::Duration;

use ironplant_core::{QualityLevel, QualityReason, TagMeta, Timestamp, Value, ValueType};
use ironplant_mqtt::codec::{MqttString, Publish as MqttPublish};
use ironplant_mqtt::{Broker, BrokerConfig};
use ironplant_runtime::Runtime;
use ironplant_sparkplug::{is_rebirth_request, EdgeNode, MetricValue, Payload, Publish};
use tokio::sync::mpsc;
use tokio::time::Instant;

const CONFIG: &str = r#"
[[tag]]
path = "plant/g1/n1/d1/Taken"
description = "a configured tag where a Sparkplug metric would map"

[sparkplug]
host_id = "test-host"
prefix = "plant"
"#;

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn send(broker: &Broker, p: &Publish) {
    let topic = MqttString::from_utf8(bytes::Bytes::from(p.topic.clone())).expect("topic");
    broker.publish(MqttPublish::new(topic, p.payload.clone().into()));
}

fn current(rt: &Runtime, path: &str) -> Option<(Value, QualityLevel, QualityReason)> {
    let meta = rt.namespace.lookup(path)?;
    let s = rt.bus.current(meta.id)?;
    Some((s.value, s.quality.level, s.quality.reason))
}

/// The next message on `rx` whose topic satisfies `pred`.
async fn next_on(rx: &mut mpsc::Receiver<MqttPublish>, pred: impl Fn(&str) -> bool) -> MqttPublish {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let left = end.saturating_duration_since(Instant::now());
        let msg = tokio::time::timeout(left, rx.recv())
            .await
            .expect("message within 10 s")
            .expect("subscription open");
        if pred(msg.topic.as_str()) {
            return msg;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn births_data_rebirth_gap_and_death_through_the_platform() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = ironplant_runtime::config::parse("t.toml", CONFIG).expect("valid config");
    let rt = Runtime::start(&config, Some(dir.path())).expect("runtime");
    let configured = rt.namespace.len();
    let broker = Broker::new(BrokerConfig::default());
    let host = ironplant_runtime::sparkplug::start(
        broker.clone(),
        &rt,
        &config.get::<ironplant_sparkplug::settings::SparkplugSettings>(),
    )
    .expect("host");
    assert_eq!(host.state_topic(), "spBv1.0/STATE/test-host");
    let mut observer = broker
        .subscribe_internal("observer", "spBv1.0/#", 1024)
        .expect("subscribe");
    let state = next_on(&mut observer, |t| t == "spBv1.0/STATE/test-host").await;
    assert!(state.retain, "STATE is retained");
    let json: serde_json::Value = serde_json::from_slice(&state.payload).expect("json");
    assert_eq!(json["online"], true);
    assert!(json["timestamp"]
        .as_u64()
        .is_some_and(|t| t > 1_600_000_000_000));

    let now = Timestamp::now;
    let mut edge = EdgeNode::new("g1", "n1").expect("ids").with_bd_seq(3);
    edge.add_metric("Uptime", MetricValue::Int64(10))
        .expect("new");
    edge.add_device("d1").expect("new");
    edge.add_device_metric("d1", "Speed", MetricValue::Double(1450.0))
        .expect("new");
    edge.set_unit(Some("d1"), "Speed", "rpm").expect("declared");
    edge.add_device_metric("d1", "Running", MetricValue::Boolean(true))
        .expect("new");
    edge.add_device_metric("d1", "Taken", MetricValue::Double(7.0))
        .expect("new");
    for m in edge.birth(now()) {
        send(&broker, &m);
    }
    let speed = "plant/g1/n1/d1/Speed";
    wait_until("Speed born with its value", || {
        current(&rt, speed)
            == Some((
                Value::Float(1450.0),
                QualityLevel::Good,
                QualityReason::None,
            ))
    })
    .await;
    let meta: TagMeta = rt.namespace.lookup(speed).expect("tag");
    assert!(
        meta.id.index() >= configured,
        "ids continue after the configured tags"
    );
    assert_eq!(meta.value_type, ValueType::Float);
    assert_eq!(meta.unit.as_deref(), Some("rpm"));
    assert!(meta.writable, "a Double metric can be written (DCMD)");
    assert!(
        !rt.namespace
            .lookup("plant/g1/n1/_node/bdSeq")
            .expect("born")
            .writable,
        "bdSeq is the session's"
    );
    assert_eq!(meta.device.as_deref(), Some("sparkplug:g1/n1/d1"));
    assert_eq!(
        current(&rt, "plant/g1/n1/_node/Uptime").map(|c| c.0),
        Some(Value::Int(10))
    );
    assert_eq!(
        current(&rt, "plant/g1/n1/d1/Running").map(|c| c.0),
        Some(Value::Bool(true))
    );
    // bdSeq and Node Control/Rebirth are metrics of the NBIRTH too.
    assert!(rt.namespace.lookup("plant/g1/n1/_node/bdSeq").is_some());
    // A Sparkplug metric never feeds a configured tag.
    let taken = rt
        .namespace
        .lookup("plant/g1/n1/d1/Taken")
        .expect("configured");
    assert_eq!(taken.device, None);
    assert_eq!(rt.bus.current(taken.id), None);
    let sp = &rt.metrics.sparkplug;
    assert!(sp.errors.load(Ordering::Relaxed) >= 1);

    // Data.
    send(
        &broker,
        &edge
            .device_data("d1", &[("Speed", MetricValue::Double(1500.0))], now())
            .expect("declared"),
    );
    wait_until("DDATA applied", || {
        current(&rt, speed).map(|c| c.0) == Some(Value::Float(1500.0))
    })
    .await;

    // A re-birth keeps every tag and id.
    let len = rt.namespace.len();
    for m in edge.birth(now()) {
        send(&broker, &m);
    }
    send(
        &broker,
        &edge
            .device_data("d1", &[("Speed", MetricValue::Double(1501.0))], now())
            .expect("declared"),
    );
    wait_until("data after the re-birth", || {
        current(&rt, speed).map(|c| c.0) == Some(Value::Float(1501.0))
    })
    .await;
    assert_eq!(rt.namespace.len(), len, "no new tag for a re-birth");
    assert_eq!(rt.namespace.lookup(speed).map(|m| m.id), Some(meta.id));

    // A lost message: the next one has a seq gap, and the host asks for a rebirth.
    let _lost = edge
        .device_data("d1", &[("Speed", MetricValue::Double(1.0))], now())
        .expect("declared");
    send(
        &broker,
        &edge
            .device_data("d1", &[("Speed", MetricValue::Double(1502.0))], now())
            .expect("declared"),
    );
    let ncmd = next_on(&mut observer, |t| t == "spBv1.0/g1/NCMD/n1").await;
    let p = Payload::decode_bytes(&ncmd.payload).expect("payload");
    assert!(is_rebirth_request(&p));
    assert!(edge.is_rebirth_request(ncmd.topic.as_str(), &ncmd.payload));
    wait_until("gap counted", || {
        sp.seq_gaps.load(Ordering::Relaxed) == 1
            && sp.rebirths_requested.load(Ordering::Relaxed) == 1
    })
    .await;
    wait_until("every message handled", || {
        sp.messages.load(Ordering::Relaxed) >= 9
    })
    .await;

    // Death: tags go Bad(CommFailure), keeping their value.
    for m in edge.birth(now()) {
        send(&broker, &m);
    }
    send(&broker, &edge.death(now()));
    wait_until("NDEATH marks the device's tags Bad", || {
        current(&rt, speed)
            == Some((
                Value::Float(1502.0),
                QualityLevel::Bad,
                QualityReason::CommFailure,
            ))
    })
    .await;
    assert_eq!(
        current(&rt, "plant/g1/n1/_node/Uptime").map(|c| (c.1, c.2)),
        Some((QualityLevel::Bad, QualityReason::CommFailure))
    );

    // Historised like any tag.
    let historian = rt.historian.as_ref().expect("historian on");
    wait_until("Speed's history acknowledged", || {
        historian
            .raw(speed, Timestamp(0), Timestamp::now(), 100)
            .is_ok_and(|page| page.points.len() >= 3)
    })
    .await;

    // Clean shutdown: STATE online:false, retained.
    host.shutdown();
    let state = next_on(&mut observer, |t| t == "spBv1.0/STATE/test-host").await;
    let json: serde_json::Value = serde_json::from_slice(&state.payload).expect("json");
    assert_eq!(json["online"], false);
    rt.shutdown();
}
