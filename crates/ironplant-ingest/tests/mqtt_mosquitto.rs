//! JSON over MQTT with a third-party client: Debian's `mosquitto_pub` sends a Shelly plug
//! status and a Tasmota SENSOR message to our embedded broker (port 0); the values arrive on
//! the tag bus with their type, unit and timestamp. A bad payload is counted and the next good
//! one is still mapped.
//!
//! `.ci/test` installs `mosquitto-clients`; without them the test is skipped locally with a
//! message and fails under CI=true.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use ironplant_core::{
    EventBus, EventFilter, EventKind, LiveNamespace, Namespace, Overflow, Quality, Sample,
    Subscription, TagBus, Timestamp, Value, ValueType,
};
use ironplant_ingest::{IngestSettings, JsonIngest, Reason};
use ironplant_mqtt::{Broker, BrokerConfig};

const CONFIG: &str = r#"
[[ingest.json]]
name = "shelly"
topic = "shellies/+/status/switch:0"

[[ingest.json.field]]
pointer = "/apower"
path = "acme/lyon/office/{1}/power"
unit = "W"
min = 0.0
max = 3680.0

[[ingest.json.field]]
pointer = "/aenergy/total"
path = "acme/lyon/office/{1}/energy"
unit = "kWh"
scale = 0.001

[[ingest.json]]
name = "tasmota"
topic = "tele/+/SENSOR"
timestamp = { pointer = "/Time", format = "rfc3339", assume_offset = "+01:00" }

[[ingest.json.field]]
pointer = "/ENERGY/Power"
path = "acme/lyon/kitchen/{1}/power"
type = "int"
unit = "W"
"#;

/// A Tasmota SENSOR message (local time, no offset).
const TASMOTA: &str = r#"{"Time":"2026-01-15T08:30:00","ENERGY":{"TotalStartTime":"2025-11-02T10:12:41","Total":153.442,"Yesterday":1.201,"Today":0.774,"Power":42,"ApparentPower":58,"ReactivePower":40,"Factor":0.72,"Voltage":231,"Current":0.252}}"#;

fn have_mosquitto_pub() -> bool {
    ironplant_testkit::peer_available(
        "mosquitto_pub (Debian package mosquitto-clients)",
        Command::new("mosquitto_pub").arg("--help").output().is_ok(),
    )
}

async fn publish(port: u16, topic: &'static str, payload: &'static str) {
    tokio::task::spawn_blocking(move || publish_blocking(port, topic, payload))
        .await
        .expect("mosquitto_pub task");
}

fn publish_blocking(port: u16, topic: &str, payload: &str) {
    let out = Command::new("timeout")
        .args(["10", "mosquitto_pub", "-h", "127.0.0.1", "-p"])
        .arg(port.to_string())
        .args(["-V", "mqttv311", "-q", "1", "-t", topic, "-m", payload])
        .output()
        .expect("run mosquitto_pub");
    assert!(
        out.status.success(),
        "mosquitto_pub failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Ingest of `config` on our broker (an ephemeral port), the bus and the events it feeds.
struct Rig {
    ingest: Arc<JsonIngest>,
    port: u16,
    broker: Broker,
    namespace: Arc<LiveNamespace>,
    bus: TagBus,
    sub: Subscription,
    events: EventBus,
    /// The integrity events.
    integrity: ironplant_core::EventSubscription,
}

async fn rig(config: &str) -> Rig {
    let (settings, errors) = IngestSettings::from_source(config);
    assert!(errors.is_empty(), "{errors:?}");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind an ephemeral port");
    let port = listener.local_addr().expect("address").port();
    let broker = Broker::new(BrokerConfig::default());
    let serving = broker.clone();
    tokio::spawn(async move { serving.serve(listener).await });
    let bus = TagBus::new(0);
    let sub = bus.subscribe("test", 64, Overflow::Block);
    let events = EventBus::new();
    let integrity = events.subscribe(
        "test",
        16,
        EventFilter {
            kinds: vec![EventKind::Integrity],
            subjects: Vec::new(),
        },
    );
    Rig {
        ingest: Arc::new(JsonIngest::new(settings)),
        port,
        broker,
        namespace: Arc::new(LiveNamespace::new(Namespace::new())),
        bus,
        sub,
        events,
        integrity,
    }
}

/// The next batch on the bus, within a deadline.
async fn next(sub: &mut Subscription) -> Vec<Sample> {
    tokio::time::timeout(Duration::from_secs(10), sub.recv())
        .await
        .expect("a batch within 10 s")
        .expect("bus open")
        .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_pub_payloads_reach_the_bus_typed_and_timestamped() {
    if !have_mosquitto_pub() {
        return;
    }
    let Rig {
        ingest,
        port,
        broker,
        namespace,
        bus,
        mut sub,
        events,
        mut integrity,
    } = rig(CONFIG).await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serve = ironplant_ingest::mqtt::serve(
        &broker,
        bus.clone(),
        events.clone(),
        namespace.clone(),
        ingest.clone(),
        async move {
            let _ = stopped.await;
        },
    );
    let mut serve = std::pin::pin!(serve);
    let body = async {
        // A Shelly Plus Plug S status (Gen2 MQTT), stamped with the receive time.
        let before = Timestamp::now();
        publish(
        port,
        "shellies/plug-7/status/switch:0",
        r#"{"id":0,"source":"init","output":true,"apower":12.3,"voltage":230.1,"current":0.071,"aenergy":{"total":1234.5,"by_minute":[0.0,0.0,0.0],"minute_ts":1796637600},"temperature":{"tC":38.5,"tF":101.3}}"#,
    ).await;
        let batch = next(&mut sub).await;
        let after = Timestamp::now();
        assert_eq!(batch.len(), 2, "{batch:?}");
        let power = namespace
            .lookup("acme/lyon/office/plug-7/power")
            .expect("the templated tag was registered at first sight");
        assert_eq!(
            (
                power.value_type,
                power.unit.as_deref(),
                power.range,
                power.device.as_deref()
            ),
            (
                ValueType::Float,
                Some("W"),
                Some((0.0, 3680.0)),
                Some("ingest:shelly")
            )
        );
        let energy = namespace
            .lookup("acme/lyon/office/plug-7/energy")
            .expect("registered");
        assert_eq!(energy.unit.as_deref(), Some("kWh"));
        assert_eq!(batch[0].tag, power.id);
        assert_eq!(batch[0].value, Value::Float(12.3));
        assert_eq!(batch[0].quality, Quality::GOOD);
        assert_eq!(batch[1].tag, energy.id);
        assert_eq!(batch[1].value, Value::Float(1.2345));
        for s in &batch {
            assert!(
                s.source_ts >= before && s.source_ts <= after,
                "receive time {} not within [{before}, {after}]",
                s.source_ts
            );
        }

        // A Tasmota SENSOR message carries the device's local time.
        publish(port, "tele/tasmota_fridge/SENSOR", TASMOTA).await;
        let batch = next(&mut sub).await;
        let fridge = namespace
            .lookup("acme/lyon/kitchen/tasmota_fridge/power")
            .expect("registered");
        assert_eq!(
            (fridge.value_type, fridge.unit.as_deref()),
            (ValueType::Int, Some("W"))
        );
        assert_eq!(batch.len(), 1);
        assert_eq!(batch[0].value, Value::Int(42));
        assert_eq!(
            batch[0].source_ts.to_rfc3339(),
            "2026-01-15T07:30:00.000000Z"
        );

        // The same message again (recorded and replayed): refused whole, counted, reported;
        // the device's next message is mapped.
        publish(port, "tele/tasmota_fridge/SENSOR", TASMOTA).await;
        publish(
            port,
            "tele/tasmota_fridge/SENSOR",
            r#"{"Time":"2026-01-15T08:30:10","ENERGY":{"Power":43}}"#,
        )
        .await;
        let batch = next(&mut sub).await;
        assert_eq!(batch.len(), 1, "{batch:?}");
        assert_eq!(batch[0].value, Value::Int(43), "the replay reached the bus");
        assert_eq!(
            ingest.stats(1).expect("tasmota").rejected(Reason::Replayed),
            1
        );
        let event = tokio::time::timeout(Duration::from_secs(5), integrity.recv())
            .await
            .expect("an integrity event")
            .expect("bus open");
        assert_eq!(event.code.as_ref() as &str, "ingest_replay", "{event:?}");
        assert!(
            event.message.contains("tele/tasmota_fridge/SENSOR")
                && event.message.contains("2026-01-15T07:30:00"),
            "{}",
            event.message
        );

        // A bad payload is counted and the next good one is still mapped.
        publish(
            port,
            "shellies/plug-7/status/switch:0",
            "{\"apower\": 12.3,",
        )
        .await;
        publish(
            port,
            "shellies/plug-7/status/switch:0",
            r#"{"apower":99.5,"aenergy":{"total":1240.0}}"#,
        )
        .await;
        let batch = next(&mut sub).await;
        assert_eq!(batch[0].value, Value::Float(99.5));
        let stats = ingest.stats(0).expect("shelly stats");
        assert_eq!(stats.rejected(Reason::NotJson), 1);
        assert_eq!(stats.messages.load(std::sync::atomic::Ordering::Relaxed), 3);
        assert_eq!(stats.samples.load(std::sync::atomic::Ordering::Relaxed), 4);
        let last = stats.last_error().expect("kept for diagnostics");
        assert!(last.message.contains("not JSON"), "{}", last.message);
        let metrics = ingest.render_metrics();
        assert!(
            metrics.contains(
                "ironplant_ingest_rejected_total{mapping=\"shelly\",reason=\"not_json\"} 1"
            ),
            "{metrics}"
        );
    };
    // `biased`: the source is polled first, so it has subscribed before anything is published.
    tokio::select! {
        biased;
        r = &mut serve => panic!("ingest ended early: {r:?}"),
        () = body => {}
    }
    let _ = stop.send(());
    let ended = tokio::time::timeout(Duration::from_secs(10), serve)
        .await
        .expect("stops at shutdown");
    assert_eq!(ended, Ok(()));
}

const SIGNED: &str = r#"
[[ingest.json]]
name = "plugs"
topic = "plugs/+/status"
signed = "required"
timestamp = { pointer = "/ts", format = "unix_ms" }

[[ingest.json.field]]
pointer = "/apower"
path = "acme/lyon/office/{1}/power"
unit = "W"
"#;

/// The enrolled devices' public keys, and the refusals the audit log would record.
#[derive(Default)]
struct Keys {
    keys: std::collections::HashMap<String, Vec<u8>>,
    refused: parking_lot::Mutex<Vec<(String, String)>>,
}

impl ironplant_ingest::json::SignerKeys for Keys {
    fn public_key(&self, signer: &str) -> Option<Vec<u8>> {
        self.keys.get(signer).cloned()
    }

    fn refused(
        &self,
        topic: &str,
        signer: &str,
        why: &ironplant_mqtt::signed::SignedError,
        _from: &ironplant_ingest::guard::Provenance,
    ) {
        self.refused
            .lock()
            .push((format!("{topic} {signer}"), why.code().to_owned()));
    }
}

/// Signed payloads through a third-party publisher: a device's envelope is verified and its
/// reading mapped; a changed value, a payload moved to another device's topic, an unknown
/// signer and an unsigned payload are refused (counted, audited, an integrity event); the
/// same signed message again is refused as a replay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_payloads_from_mosquitto_pub_are_verified() {
    use ironplant_mqtt::signed::{unhex, Signer};
    if !have_mosquitto_pub() {
        return;
    }
    let Rig {
        ingest,
        port,
        broker,
        namespace,
        bus,
        mut sub,
        events,
        mut integrity,
    } = rig(SIGNED).await;
    let (plug7, _) = Signer::generate("plug-7").expect("key");
    let (stranger, _) = Signer::generate("plug-9").expect("key");
    let mut keys = Keys::default();
    keys.keys.insert(
        "plug-7".into(),
        unhex(&plug7.public_key_hex()).expect("hex"),
    );
    let keys = Arc::new(keys);
    ingest.set_signers(keys.clone());
    let serve =
        ironplant_ingest::mqtt::attach(&broker, bus.clone(), events, namespace, ingest.clone())
            .expect("subscribed");
    let send = |topic: &'static str, payload: Vec<u8>| async move {
        let payload = String::from_utf8(payload).expect("UTF-8 envelope");
        tokio::task::spawn_blocking(move || publish_blocking(port, topic, &payload))
            .await
            .expect("mosquitto_pub task");
    };
    let t0 = 1_796_601_600_000_i64;
    let reading = |ts: i64, w: f64| format!(r#"{{"ts":{ts},"apower":{w}}}"#).into_bytes();
    let good = plug7.seal("plugs/plug-7/status", &reading(t0, 12.5));
    send("plugs/plug-7/status", good.clone()).await;
    let batch = next(&mut sub).await;
    assert_eq!(batch[0].value, Value::Float(12.5));

    // Changed on the way, moved to another device's topic, signed by a stranger, unsigned,
    // and the good one again.
    let tampered = String::from_utf8(plug7.seal("plugs/plug-7/status", &reading(t0 + 1000, 13.0)))
        .expect("UTF-8")
        .replace("13", "93")
        .into_bytes();
    send("plugs/plug-7/status", tampered).await;
    send(
        "plugs/plug-8/status",
        plug7.seal("plugs/plug-7/status", &reading(t0 + 2000, 13.0)),
    )
    .await;
    send(
        "plugs/plug-9/status",
        stranger.seal("plugs/plug-9/status", &reading(t0 + 3000, 13.0)),
    )
    .await;
    send("plugs/plug-7/status", reading(t0 + 4000, 13.0)).await;
    send("plugs/plug-7/status", good).await;
    // Then a good one: the only reading on the bus since the first.
    send(
        "plugs/plug-7/status",
        plug7.seal("plugs/plug-7/status", &reading(t0 + 5000, 14.0)),
    )
    .await;
    let batch = next(&mut sub).await;
    assert_eq!(batch.len(), 1, "{batch:?}");
    assert_eq!(
        batch[0].value,
        Value::Float(14.0),
        "a refused payload reached the bus"
    );
    let stats = ingest.stats(0).expect("stats");
    assert_eq!(stats.rejected(Reason::BadSignature), 3);
    assert_eq!(stats.rejected(Reason::Unsigned), 1);
    assert_eq!(stats.rejected(Reason::Replayed), 1);
    let refused = keys.refused.lock().clone();
    assert_eq!(
        refused,
        [
            (
                "plugs/plug-7/status plug-7".to_owned(),
                "bad_signature".to_owned()
            ),
            (
                "plugs/plug-8/status plug-7".to_owned(),
                "bad_signature".to_owned()
            ),
            (
                "plugs/plug-9/status plug-9".to_owned(),
                "unknown_signer".to_owned()
            ),
        ]
    );
    let event = tokio::time::timeout(Duration::from_secs(5), integrity.recv())
        .await
        .expect("an integrity event")
        .expect("bus open");
    assert_eq!(
        event.code.as_ref() as &str,
        "ingest_signature_refused",
        "{event:?}"
    );
    serve.abort();
}
