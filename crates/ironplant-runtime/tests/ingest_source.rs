//! MQTT JSON ingest as a supervised source of the platform: `[[ingest.json]]` parsed by the
//! runtime's registry, `MqttIngest` registered by the platform builder next to the broker, a
//! device's JSON on the broker ends up in the historian (through the bus and the historian
//! sink), and the source stops with the platform.

use std::time::{Duration, Instant};

use bytes::Bytes;
use ironplant_core::{Timestamp, Value};
use ironplant_mqtt::codec::{MqttString, Publish};
use ironplant_mqtt::{Broker, BrokerConfig};
use ironplant_runtime::component::Status;
use ironplant_runtime::platform::Platform;

const CONFIG: &str = r#"
[[ingest.json]]
name = "shelly"
topic = "shellies/+/status/switch:0"

[[ingest.json.field]]
pointer = "/apower"
path = "acme/lyon/office/{1}/power"
unit = "W"
"#;

fn publish(broker: &Broker, topic: &str, payload: &str) {
    let topic = MqttString::from_utf8(Bytes::from(topic.to_owned())).expect("topic");
    broker.publish(Publish::new(topic, Bytes::from(payload.to_owned())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_on_the_broker_reaches_the_historian_through_the_supervised_source() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = ironplant_runtime::config::parse("plant.toml", CONFIG).expect("valid config");
    let broker = Broker::new(BrokerConfig::default());
    let platform = Platform::builder(config, Some(dir.path()))
        .broker(broker.clone())
        .start()
        .expect("platform starts");
    let runtime = platform.runtime.clone();
    let ingest = runtime.ingest.clone();
    let historian = runtime.historian.clone().expect("historian");
    let path = "acme/lyon/office/plug-3/power";

    // The source subscribes when it first runs: publish until a value arrives.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut n = 0;
    let point = loop {
        if let Some(Some(p)) = historian.last(&[path]).into_iter().next() {
            break p;
        }
        assert!(Instant::now() < deadline, "no sample in the historian");
        n += 1;
        publish(
            &broker,
            "shellies/plug-3/status/switch:0",
            &format!(r#"{{"apower":{n}.5}}"#),
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        matches!(point.value, Value::Float(x) if x.fract() == 0.5),
        "{point:?}"
    );
    assert!(point.ts <= Timestamp::now());
    let meta = runtime.namespace.lookup(path).expect("tag registered");
    assert_eq!(
        (meta.unit.as_deref(), meta.device.as_deref()),
        (Some("W"), Some("ingest:shelly"))
    );
    let sources: Vec<_> = platform
        .components()
        .into_iter()
        .filter(|c| c.name == "ingest:json")
        .collect();
    assert_eq!(sources.len(), 1, "one MQTT ingest source");
    let source = sources[0].clone();
    assert_eq!((source.status(), source.restarts()), (Status::Running, 0));
    assert!(
        ingest
            .stats(0)
            .expect("stats")
            .samples
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );
    platform.shutdown(Duration::from_secs(5)).await;
    assert_eq!(source.status(), Status::Stopped);
}
