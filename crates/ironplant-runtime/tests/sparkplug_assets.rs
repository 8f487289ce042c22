//! Sparkplug in the asset tree, through a running platform: `[[sparkplug.asset]]` assets are in
//! the namespace from the start with their location, a mapped node's births land under them
//! (folders as implied assets), a metric too deep for its asset is refused and counted, an
//! unmapped node keeps the default paths, and writes to mapped tags reach the edge node as
//! NCMD/DCMD on its own topics. Messages go through the in-process broker; the pysparkplug
//! write test is in `write_path.rs`.

use std::sync::atomic::Ordering;
use std::time::Duration;

use ironplant_core::{AssetLevel, QualityLevel, TagPath, Timestamp, Value};
use ironplant_mqtt::codec::{MqttString, Publish as MqttPublish};
use ironplant_mqtt::{Broker, BrokerConfig};
use ironplant_runtime::{start_platform, Runtime};
use ironplant_sparkplug::proto::payload::metric::Value as Wire;
use ironplant_sparkplug::{EdgeNode, MetricValue, Payload, Publish};
use tokio::time::Instant;

const CONFIG: &str = r#"
[[asset]]
path = "acme/lyon"
location = { latitude = 45.7285, longitude = 4.8830 }

[[asset]]
path = "acme/lyon/bottling"
location = { zone = "hall-b", x = 120.0, y = 45.0 }

[[tag]]
path = "acme/lyon/bottling/line1/filler/plc/speed"
description = "a configured neighbour of the Sparkplug machine"

[sparkplug]
host_id = "assets"
write_timeout = "10s"

[[sparkplug.asset]]
group = "bottling"
node = "sim-edge"
device = "line1"
path = "acme/lyon/bottling/line1/edge"
name = "Line 1 edge gateway"
location = { zone = "hall-b", x = 14.0, y = 40.0 }

[[sparkplug.asset]]
group = "bottling"
node = "sim-edge"
path = "acme/lyon/bottling/gw"
"#;

fn send(broker: &Broker, p: &Publish) {
    let topic = MqttString::from_utf8(bytes::Bytes::from(p.topic.clone())).expect("topic");
    broker.publish(MqttPublish::new(topic, p.payload.clone().into()));
}

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn good(rt: &Runtime, path: &str) -> Option<Value> {
    let meta = rt.namespace.lookup(path)?;
    rt.bus
        .current(meta.id)
        .filter(|s| s.quality.level == QualityLevel::Good)
        .map(|s| s.value)
}

/// The next NCMD or DCMD seen on the broker.
async fn next_command(rx: &mut tokio::sync::mpsc::Receiver<MqttPublish>) -> MqttPublish {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let left = end.saturating_duration_since(Instant::now());
        let msg = tokio::time::timeout(left, rx.recv())
            .await
            .expect("a command within 10 s")
            .expect("subscription open");
        if msg.topic.as_str().contains("CMD/") {
            return msg;
        }
    }
}

fn path(p: &str) -> TagPath {
    TagPath::parse(p).expect("valid path")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mapped_edge_node_lives_in_the_asset_tree_and_takes_writes() {
    let config =
        ironplant_runtime::config::parse("assets.toml", CONFIG).unwrap_or_else(|e| panic!("{e}"));
    let broker = Broker::new(BrokerConfig::default());
    let started = start_platform(&config, None, Some(&broker)).expect("platform");
    let rt = started.runtime.clone();

    // The mapped asset is in the tree before any birth, with its own and inherited location.
    {
        let ns = rt.namespace.read();
        let edge = ns
            .asset(&path("acme/lyon/bottling/line1/edge"))
            .expect("the mapped asset");
        assert_eq!(edge.name, "Line 1 edge gateway");
        assert_eq!(edge.level, AssetLevel::Cell);
        assert_eq!(
            (
                edge.location.zone.as_deref(),
                edge.location.x_m,
                edge.location.y_m
            ),
            (Some("hall-b"), Some(14.0), Some(40.0))
        );
        assert_eq!(
            (
                edge.effective_location.latitude,
                edge.effective_location.longitude
            ),
            (Some(45.7285), Some(4.8830)),
            "the site's coordinates"
        );
        let line = ns
            .asset(&path("acme/lyon/bottling/line1"))
            .expect("the Modbus and Sparkplug machines share their line");
        assert_eq!(line.level, AssetLevel::Line);
        assert!(ns.asset(&path("acme/lyon/bottling/gw")).is_some());
    }

    let mut dcmds = broker
        .subscribe_internal("test", "spBv1.0/bottling/#", 1024)
        .expect("subscribe");
    let now = Timestamp::now;
    let mut edge = EdgeNode::new("bottling", "sim-edge").expect("ids");
    edge.add_metric("Uptime", MetricValue::Int64(1))
        .expect("new");
    edge.add_device("line1").expect("new");
    edge.add_device_metric("line1", "Filler/Speed", MetricValue::Double(380.0))
        .expect("new");
    edge.add_device_metric("line1", "Filler/Setpoint", MetricValue::Int32(400))
        .expect("new");
    edge.add_device_metric("line1", "Filler/Motor/Temp", MetricValue::Float(41.5))
        .expect("new");
    edge.add_device("palletiser").expect("new");
    edge.add_device_metric("palletiser", "Layers", MetricValue::Int32(4))
        .expect("new");
    // A node nobody mapped: today's default paths.
    let mut other = EdgeNode::new("bottling", "lab").expect("ids");
    other.add_device("scale").expect("new");
    other
        .add_device_metric("scale", "Weight", MetricValue::Double(1.25))
        .expect("new");
    for m in edge.birth(now()).iter().chain(&other.birth(now())) {
        send(&broker, m);
    }
    let speed = "acme/lyon/bottling/line1/edge/Filler/Speed";
    let setpoint = "acme/lyon/bottling/line1/edge/Filler/Setpoint";
    wait_until("the mapped and unmapped births", || {
        good(&rt, speed).is_some()
            && good(&rt, setpoint).is_some()
            && good(&rt, "acme/lyon/bottling/gw/_node/Uptime").is_some()
            && good(&rt, "acme/lyon/bottling/gw/palletiser/Layers").is_some()
            && good(&rt, "bottling/lab/scale/Weight").is_some()
    })
    .await;
    assert_eq!(good(&rt, speed), Some(Value::Float(380.0)));
    assert!(
        rt.namespace
            .lookup("bottling/sim-edge/line1/Filler/Speed")
            .is_none(),
        "nothing at the default path of a mapped device"
    );
    let meta = rt.namespace.lookup(speed).expect("tag");
    assert_eq!(
        meta.device.as_deref(),
        Some("sparkplug:bottling/sim-edge/line1")
    );
    // Folders are assets under the mapped one, and inherit its location.
    {
        let ns = rt.namespace.read();
        let filler = ns
            .asset(&path("acme/lyon/bottling/line1/edge/Filler"))
            .expect("the folder is an asset");
        assert_eq!(filler.level, AssetLevel::Device);
        assert_eq!(filler.effective_location.x_m, Some(14.0));
        assert!(
            ns.asset(&path("bottling/lab")).is_none(),
            "an unmapped node adds no assets"
        );
    }
    // Too deep for the asset (edge is at depth 5, Filler/Motor/Temp needs 3 levels): refused,
    // counted, never folded into some other path.
    let sp = &rt.metrics.sparkplug;
    assert_eq!(sp.metrics_unmapped.load(Ordering::Relaxed), 1);
    assert!(rt
        .namespace
        .read()
        .tags()
        .all(|t| !t.path.as_str().contains("Motor")));
    assert!(rt
        .render_metrics()
        .contains("ironplant_sparkplug_metrics_unmapped_total 1\n"));

    // A write to a mapped tag: a DCMD on the device's own topic, acknowledged by its report.
    let write = tokio::spawn({
        let rt = rt.clone();
        async move { rt.write(setpoint, Value::Int(420)).await }
    });
    let dcmd = next_command(&mut dcmds).await;
    assert_eq!(dcmd.topic.as_str(), "spBv1.0/bottling/DCMD/sim-edge/line1");
    let p = Payload::decode_bytes(&dcmd.payload).expect("payload");
    assert_eq!(
        p.metrics[0].alias,
        edge.alias(Some("line1"), "Filler/Setpoint")
    );
    assert_eq!(p.metrics[0].value, Some(Wire::IntValue(420)));
    send(
        &broker,
        &edge
            .device_data(
                "line1",
                &[("Filler/Setpoint", MetricValue::Int32(420))],
                now(),
            )
            .expect("declared"),
    );
    let ack = tokio::time::timeout(Duration::from_secs(10), write)
        .await
        .expect("acknowledged")
        .expect("task")
        .unwrap_or_else(|e| panic!("write: {e}"));
    assert_eq!(ack.echoed, Some(Value::Int(420)));
    assert_eq!(good(&rt, setpoint), Some(Value::Int(420)));

    // A node metric under the node's asset: an NCMD.
    let write = tokio::spawn({
        let rt = rt.clone();
        async move {
            rt.write("acme/lyon/bottling/gw/_node/Uptime", Value::Int(7))
                .await
        }
    });
    let ncmd = next_command(&mut dcmds).await;
    assert_eq!(ncmd.topic.as_str(), "spBv1.0/bottling/NCMD/sim-edge");
    send(
        &broker,
        &edge
            .node_data(&[("Uptime", MetricValue::Int64(7))], now())
            .expect("declared"),
    );
    let ack = tokio::time::timeout(Duration::from_secs(10), write)
        .await
        .expect("acknowledged")
        .expect("task")
        .unwrap_or_else(|e| panic!("write: {e}"));
    assert_eq!(ack.echoed, Some(Value::Int(7)));
    started.shutdown(Duration::from_secs(5)).await;
}
