//! The one write path against third-party peers, through the same `Runtime::write` call:
//! a pymodbus server (PyPI) whose datastore is checked on the Python side, and a pysparkplug
//! edge node (PyPI, its own venv) that prints the DCMDs it decoded, applies them and reports
//! them in DDATA, which is what acknowledges a Sparkplug write.
//!
//! The venvs come from the test command (`.ci/test`), which exports IRONPLANT_PYTHON and
//! IRONPLANT_SPARKPLUG_PYTHON. Without them the tests are skipped locally with a message, but
//! fail under CI=true.

mod peer;

use std::time::Duration;

use ironplant_core::{DeviceWriteError, QualityLevel, Value};
use ironplant_mqtt::{Broker, BrokerConfig};
use ironplant_runtime::{start_platform, Runtime, RuntimeWriteError};
use peer::{script, Peer};
use serde_json::Value as Json;
use tokio::time::Instant;

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn good(rt: &Runtime, path: &str) -> Option<Value> {
    let meta = rt.namespace.lookup(path)?;
    rt.bus
        .current(meta.id)
        .filter(|s| s.quality.level == QualityLevel::Good)
        .map(|s| s.value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modbus_writes_reach_a_pymodbus_datastore() {
    let Some(py) = ironplant_testkit::python("pymodbus", "pymodbus") else {
        return;
    };
    let mut peer = Peer::start(&py, script("modbus_server.py"), &[]);
    let port_line = peer.line("PORT", |l| l.starts_with("PORT ")).await;
    let port: u16 = port_line[5..].trim().parse().expect("a port");
    let mut cfg = format!(
        "[[device]]\nid = \"py\"\nprotocol = \"modbus-tcp\"\naddress = \"127.0.0.1:{port}\"\npoll_interval = \"100ms\"\ntimeout = \"1s\"\n\n"
    );
    for (name, m) in [
        ("u16", r#"table = "holding", address = 0, type = "u16""#),
        (
            "i32_cdab",
            r#"table = "holding", address = 58, type = "i32", word_order = "little""#,
        ),
        (
            "f32_cdab",
            r#"table = "holding", address = 20, type = "f32", word_order = "little""#,
        ),
        ("coil1", r#"table = "coil", address = 1"#),
        (
            "bit3",
            r#"table = "holding", address = 56, type = "bool", bit = 3"#,
        ),
        (
            "bit0",
            r#"table = "holding", address = 56, type = "bool", bit = 0"#,
        ),
    ] {
        cfg.push_str(&format!(
            "[[tag]]\npath = \"acme/lab/test/bench/rig/py/{name}\"\ndevice = \"py\"\nwritable = true\nmodbus = {{ {m} }}\n\n"
        ));
    }
    let cfg = ironplant_runtime::config::parse("write.toml", &cfg).expect("valid config");
    let rt = Runtime::start(&cfg, None).expect("start");
    let path = |n: &str| format!("acme/lab/test/bench/rig/py/{n}");
    wait_until("the device answers", || good(&rt, &path("u16")).is_some()).await;

    // A u16: function 6, echoed; the read-back is the ack's value.
    let ack = rt
        .write(&path("u16"), Value::Int(4321))
        .await
        .expect("write u16");
    assert_eq!(ack.echoed, Some(Value::Int(4321)));
    assert!(ack.detail.contains("function 6"), "{}", ack.detail);
    assert_eq!(
        peer.ask("holding 0 1").await["registers"],
        serde_json::json!([4321])
    );

    // An i32 in CDAB word order: function 16; pymodbus's registers decoded by Python's struct.
    let ack = rt
        .write(&path("i32_cdab"), Value::Int(-123_456))
        .await
        .expect("write i32");
    assert_eq!(ack.echoed, Some(Value::Int(-123_456)));
    assert!(ack.detail.contains("function 16"), "{}", ack.detail);
    assert_eq!(peer.ask("decode 58 i cdab").await["value"], -123_456);

    // An f32 in CDAB word order.
    let ack = rt
        .write(&path("f32_cdab"), Value::Float(-1.5))
        .await
        .expect("write f32");
    assert_eq!(ack.echoed, Some(Value::Float(-1.5)));
    assert_eq!(peer.ask("decode 20 f cdab").await["value"], -1.5);

    // A coil: function 5.
    let ack = rt
        .write(&path("coil1"), Value::Bool(true))
        .await
        .expect("write coil");
    assert_eq!(ack.echoed, Some(Value::Bool(true)));
    assert!(ack.detail.contains("function 5"), "{}", ack.detail);
    assert_eq!(
        peer.ask("coils 0 3").await["bits"],
        serde_json::json!([true, true, true])
    );

    // Bits of a register: set bit 3, clear bit 0; bit 15 is kept.
    rt.write(&path("bit3"), Value::Bool(true))
        .await
        .expect("set bit 3");
    let ack = rt
        .write(&path("bit0"), Value::Bool(false))
        .await
        .expect("clear bit 0");
    assert_eq!(ack.echoed, Some(Value::Bool(false)));
    assert_eq!(
        peer.ask("holding 56 1").await["registers"],
        serde_json::json!([0b1000_0000_0000_1000])
    );

    // Values that do not fit are refused before anything is sent, naming tag, value and type.
    for (name, value, says) in [
        ("u16", Value::Int(70_000), "does not fit a U16 register"),
        ("u16", Value::Float(1.5), "not a whole number"),
        ("coil1", Value::Int(0), "a bool (coil) value is needed"),
        ("bit3", Value::Float(1.0), "bool (bit of a register)"),
    ] {
        let err = rt
            .write(&path(name), value.clone())
            .await
            .expect_err("refused");
        assert!(
            matches!(
                &err,
                RuntimeWriteError::Device {
                    source: DeviceWriteError::BadValue { .. },
                    ..
                }
            ),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(
            text.contains(&path(name)) && text.contains(&value.to_string()) && text.contains(says),
            "{text}"
        );
    }
    assert_eq!(
        peer.ask("holding 0 1").await["registers"],
        serde_json::json!([4321]),
        "unchanged by the refused writes"
    );
    // The poller reads what was written, too.
    wait_until("the written values polled", || {
        good(&rt, &path("i32_cdab")) == Some(Value::Int(-123_456))
            && good(&rt, &path("bit3")) == Some(Value::Bool(true))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sparkplug_writes_are_acknowledged_by_the_edge_nodes_report() {
    let Some(py) = ironplant_testkit::python_with(
        "IRONPLANT_SPARKPLUG_PYTHON",
        "venv-sparkplug",
        "pysparkplug",
        "pysparkplug",
    ) else {
        return;
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind an ephemeral port");
    let port = listener.local_addr().expect("local address").port();
    let broker = Broker::new(BrokerConfig::default());
    let b = broker.clone();
    tokio::spawn(async move { b.serve(listener).await });
    let cfg = ironplant_runtime::config::parse(
        "sp.toml",
        "[sparkplug]\nhost_id = \"writer\"\nprefix = \"sp\"\nwrite_timeout = \"1500ms\"\n",
    )
    .expect("valid config");
    let started = start_platform(&cfg, None, Some(&broker)).expect("platform");
    let rt = started.runtime.clone();

    let port = port.to_string();
    let mut edge = Peer::start(
        &py,
        script("sparkplug_write_edge.py"),
        &["127.0.0.1", &port, "Plant1", "edge-w"],
    );
    edge.line("connecting", |l| l.contains("\"connecting\""))
        .await;
    let tag = |m: &str| format!("sp/Plant1/edge-w/Pump1/{m}");
    wait_until("the DBIRTH's tags", || {
        ["Setpoint", "Speed", "Running", "Small", "Stuck"]
            .iter()
            .all(|m| good(&rt, &tag(m)).is_some())
    })
    .await;
    assert_eq!(good(&rt, &tag("Setpoint")), Some(Value::Int(100)));

    // Int32, Float and Boolean: the DCMD as pysparkplug decoded it, and the ack from its DDATA.
    for (metric, value, datatype) in [
        ("Setpoint", Value::Int(-123), "INT32"),
        ("Speed", Value::Float(21.7), "FLOAT"),
        ("Running", Value::Bool(true), "BOOLEAN"),
    ] {
        let ack = rt
            .write(&tag(metric), value.clone())
            .await
            .unwrap_or_else(|e| panic!("write {metric}: {e}"));
        assert_eq!(ack.echoed.as_ref(), Some(&value), "{metric}: {ack:?}");
        assert!(
            ack.detail
                .contains("DCMD on spBv1.0/Plant1/DCMD/edge-w/Pump1"),
            "{}",
            ack.detail
        );
        let line = edge
            .line("the DCMD", |l| {
                l.contains("\"dcmd\"") && l.contains(&format!("\"name\": \"{metric}\""))
            })
            .await;
        let dcmd: Json = serde_json::from_str(&line).expect("JSON line");
        assert_eq!(dcmd["topic"], "spBv1.0/Plant1/DCMD/edge-w/Pump1");
        let m = &dcmd["metrics"][0];
        assert_eq!(m["datatype"], datatype, "{line}");
        assert_eq!(m["alias"], Json::Null, "the birth used names: {line}");
        match &value {
            // pysparkplug widens the f32 it received: 21.7f32 = 21.700000762939453.
            Value::Float(x) => {
                let got = m["value"].as_f64().expect("a number");
                assert_eq!(got as f32, *x as f32, "{line}");
            }
            Value::Int(i) => assert_eq!(m["value"], *i, "{line}"),
            Value::Bool(b) => assert_eq!(m["value"], *b, "{line}"),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(
            good(&rt, &tag(metric)),
            Some(value),
            "the DDATA is on the bus"
        );
    }

    // Refused before sending: a fraction into an Int16, naming tag, value and type.
    let err = rt
        .write(&tag("Small"), Value::Float(1.5))
        .await
        .expect_err("refused");
    let text = err.to_string();
    assert!(
        matches!(
            &err,
            RuntimeWriteError::Device {
                source: DeviceWriteError::BadValue { .. },
                ..
            }
        ) && text.contains(&tag("Small"))
            && text.contains("1.5")
            && text.contains("Int16"),
        "{text}"
    );
    // bdSeq is not a value to write.
    assert!(matches!(
        rt.write("sp/Plant1/edge-w/_node/bdSeq", Value::Int(3))
            .await,
        Err(RuntimeWriteError::NotWritable(_))
    ));

    // A device that receives the command but never reports the value: Timeout.
    let sent = Instant::now();
    let err = rt
        .write(&tag("Stuck"), Value::Int(5))
        .await
        .expect_err("never confirmed");
    assert!(
        matches!(
            err,
            RuntimeWriteError::Device {
                source: DeviceWriteError::Timeout(t),
                ..
            } if t == Duration::from_millis(1500)
        ),
        "{err:?}"
    );
    assert!(
        sent.elapsed() >= Duration::from_millis(1400),
        "{:?}",
        sent.elapsed()
    );
    edge.line("the ignored DCMD", |l| {
        l.contains("\"dcmd\"") && l.contains("\"name\": \"Stuck\"")
    })
    .await;
    assert!(
        !edge.seen.iter().any(|l| l.contains("\"name\": \"Small\"")),
        "the refused write sent nothing: {:?}",
        edge.seen
    );

    // An edge node that is offline (after its NDEATH): refused at once, nothing sent.
    edge.tell("ndeath");
    edge.line("ndeath done", |l| l.contains("\"done\"")).await;
    wait_until("the node's tags Bad", || {
        good(&rt, &tag("Setpoint")).is_none()
    })
    .await;
    let asked = Instant::now();
    let err = rt
        .write(&tag("Setpoint"), Value::Int(1))
        .await
        .expect_err("offline");
    assert!(
        asked.elapsed() < Duration::from_millis(1000),
        "refused at once"
    );
    let text = err.to_string();
    assert!(
        matches!(
            &err,
            RuntimeWriteError::Device {
                source: DeviceWriteError::NotConnected(_),
                ..
            }
        ) && text.contains("edge node Plant1/edge-w is offline"),
        "{text}"
    );
    started.shutdown(Duration::from_secs(5)).await;
}

/// A device placed in the asset tree (`[[sparkplug.asset]]`): its tags live under the asset,
/// and a write to one reaches the pysparkplug edge node as a DCMD on the device's own topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sparkplug_writes_to_a_mapped_asset_reach_the_pysparkplug_edge_node() {
    let Some(py) = ironplant_testkit::python_with(
        "IRONPLANT_SPARKPLUG_PYTHON",
        "venv-sparkplug",
        "pysparkplug",
        "pysparkplug",
    ) else {
        return;
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind an ephemeral port");
    let port = listener.local_addr().expect("local address").port();
    let broker = Broker::new(BrokerConfig::default());
    let b = broker.clone();
    tokio::spawn(async move { b.serve(listener).await });
    let cfg = ironplant_runtime::config::parse(
        "sp.toml",
        r#"
[sparkplug]
host_id = "writer"
write_timeout = "5s"

[[sparkplug.asset]]
group = "Plant1"
node = "edge-m"
device = "Pump1"
path = "acme/lyon/utilities/pumps/pump1"
location = { zone = "pump-room", x = 3.0, y = 4.5 }
"#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let started = start_platform(&cfg, None, Some(&broker)).expect("platform");
    let rt = started.runtime.clone();
    let asset = ironplant_core::TagPath::parse("acme/lyon/utilities/pumps/pump1").expect("path");
    assert_eq!(
        rt.namespace
            .read()
            .asset(&asset)
            .and_then(|a| a.location.zone.clone())
            .as_deref(),
        Some("pump-room")
    );

    let port = port.to_string();
    let mut edge = Peer::start(
        &py,
        script("sparkplug_write_edge.py"),
        &["127.0.0.1", &port, "Plant1", "edge-m"],
    );
    edge.line("connecting", |l| l.contains("\"connecting\""))
        .await;
    let tag = |m: &str| format!("acme/lyon/utilities/pumps/pump1/{m}");
    wait_until("the DBIRTH's tags under the asset", || {
        good(&rt, &tag("Setpoint")).is_some() && good(&rt, &tag("Speed")).is_some()
    })
    .await;
    assert!(
        rt.namespace
            .lookup("Plant1/edge-m/Pump1/Setpoint")
            .is_none(),
        "not at the default path"
    );
    // The node itself is not mapped: today's paths.
    wait_until("the node's metric at its default path", || {
        good(&rt, "Plant1/edge-m/_node/Uptime").is_some()
    })
    .await;

    let ack = rt
        .write(&tag("Setpoint"), Value::Int(-77))
        .await
        .unwrap_or_else(|e| panic!("write: {e}"));
    assert_eq!(ack.echoed, Some(Value::Int(-77)), "{ack:?}");
    let line = edge
        .line("the DCMD", |l| {
            l.contains("\"dcmd\"") && l.contains("\"name\": \"Setpoint\"")
        })
        .await;
    let dcmd: Json = serde_json::from_str(&line).expect("JSON line");
    assert_eq!(dcmd["topic"], "spBv1.0/Plant1/DCMD/edge-m/Pump1");
    assert_eq!(dcmd["metrics"][0]["datatype"], "INT32", "{line}");
    assert_eq!(dcmd["metrics"][0]["value"], -77, "{line}");
    assert_eq!(good(&rt, &tag("Setpoint")), Some(Value::Int(-77)));
    started.shutdown(Duration::from_secs(5)).await;
}

/// The Sparkplug side without a third-party peer (runs everywhere): our edge-node builder on
/// the in-process broker, aliases in use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sparkplug_write_by_alias_waits_for_the_report_in_process() {
    use ironplant_mqtt::codec::{MqttString, Publish as MqttPublish};
    use ironplant_sparkplug::proto::payload::metric::Value as Wire;
    use ironplant_sparkplug::{DataType, EdgeNode, MetricValue, Payload, Publish};

    fn send(broker: &Broker, p: &Publish) {
        let topic = MqttString::from_utf8(bytes::Bytes::from(p.topic.clone())).expect("topic");
        broker.publish(MqttPublish::new(topic, p.payload.clone().into()));
    }
    let broker = Broker::new(BrokerConfig::default());
    let cfg = ironplant_runtime::config::parse(
        "sp.toml",
        "[sparkplug]\nhost_id = \"w\"\nwrite_timeout = \"10s\"\n",
    )
    .expect("valid config");
    let started = start_platform(&cfg, None, Some(&broker)).expect("platform");
    let rt = started.runtime.clone();
    let mut dcmds = broker
        .subscribe_internal("test", "spBv1.0/g/DCMD/#", 16)
        .expect("subscribe");
    let now = ironplant_core::Timestamp::now;
    let mut edge = EdgeNode::new("g", "n").expect("ids");
    edge.add_device("d").expect("new");
    edge.add_device_metric("d", "Level", MetricValue::Float(1.0))
        .expect("new");
    edge.add_device_metric("d", "Count", MetricValue::UInt16(1))
        .expect("new");
    for m in edge.birth(now()) {
        send(&broker, &m);
    }
    wait_until("born", || good(&rt, "g/n/d/Count").is_some()).await;
    assert!(
        rt.writers.get("sparkplug:g/n/d").is_some(),
        "the host registered itself as the device's writer"
    );

    let write = tokio::spawn({
        let rt = rt.clone();
        async move { rt.write("g/n/d/Level", Value::Float(2.5)).await }
    });
    let dcmd = tokio::time::timeout(Duration::from_secs(10), dcmds.recv())
        .await
        .expect("a DCMD")
        .expect("open");
    assert_eq!(dcmd.topic.as_str(), "spBv1.0/g/DCMD/n/d");
    let p = Payload::decode_bytes(&dcmd.payload).expect("payload");
    assert_eq!(p.metrics[0].name, None, "by alias");
    assert_eq!(p.metrics[0].alias, edge.alias(Some("d"), "Level"));
    assert_eq!(p.metrics[0].datatype, Some(DataType::Float.as_u32()));
    assert_eq!(p.metrics[0].value, Some(Wire::FloatValue(2.5)));
    // An old value reported meanwhile does not acknowledge it; the written one does.
    let old_at = now();
    send(
        &broker,
        &edge
            .device_data("d", &[("Level", MetricValue::Float(1.0))], old_at)
            .expect("declared"),
    );
    let level = rt.namespace.lookup("g/n/d/Level").expect("tag").id;
    wait_until("the old value's report on the bus", || {
        rt.bus
            .current(level)
            .is_some_and(|s| s.source_ts.as_micros() / 1000 == old_at.as_micros() / 1000)
    })
    .await;
    assert!(
        !write.is_finished(),
        "acknowledged by a report of another value"
    );
    send(
        &broker,
        &edge
            .device_data("d", &[("Level", MetricValue::Float(2.5))], now())
            .expect("declared"),
    );
    let ack = tokio::time::timeout(Duration::from_secs(10), write)
        .await
        .expect("acknowledged")
        .expect("task")
        .expect("write");
    assert_eq!(ack.echoed, Some(Value::Float(2.5)));
    assert_eq!(good(&rt, "g/n/d/Level"), Some(Value::Float(2.5)));

    // A new session whose birth no longer declares Count: its tag stays, writes are refused.
    let mut reborn = EdgeNode::new("g", "n").expect("ids").with_bd_seq(1);
    reborn.add_device("d").expect("new");
    reborn
        .add_device_metric("d", "Level", MetricValue::Float(2.5))
        .expect("new");
    for m in reborn.birth(now()) {
        send(&broker, &m);
    }
    wait_until("Count stale after the re-birth", || {
        good(&rt, "g/n/d/Count").is_none()
    })
    .await;
    let err = rt
        .write("g/n/d/Count", Value::Int(2))
        .await
        .expect_err("no birth declares it");
    assert!(
        matches!(
            &err,
            RuntimeWriteError::Device {
                source: DeviceWriteError::UnknownTag(_),
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("no birth of device d of edge node g/n declared this metric"),
        "{err}"
    );
    assert!(
        dcmds.try_recv().is_err(),
        "nothing sent for a refused write"
    );
    let sp = &rt.metrics.sparkplug;
    let count = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(
        (
            count(&sp.commands),
            count(&sp.writes_confirmed),
            count(&sp.writes_unconfirmed),
            count(&sp.writes_refused)
        ),
        (1, 1, 0, 1)
    );
    assert!(rt
        .render_metrics()
        .contains("ironplant_sparkplug_writes_confirmed_total 1\n"));
}
