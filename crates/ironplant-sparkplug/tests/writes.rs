//! Writes, sans-IO: the host builds NCMD/DCMD from the birth (datatype, alias or name), checks
//! values before anything is sent, refuses offline nodes and unborn metrics, and
//! `PendingWrites` confirms a write only when a report carries the written value.

use ironplant_core::{Quality, QualityReason, TagPath, Timestamp, Value};
use ironplant_sparkplug::proto::payload::metric::Value as Wire;
use ironplant_sparkplug::{
    is_writable_metric, DataType, EdgeNode, Host, HostAction, MetricValue, NodeId, Payload,
    PendingWrites, Publish, Qos, WriteError, WriteOutcome,
};

const T0: i64 = 1_700_000_000_000_000; // µs

fn at(ms: i64) -> Timestamp {
    Timestamp(T0 + ms * 1000)
}

fn path(s: &str) -> TagPath {
    TagPath::parse(s).expect("valid path")
}

/// Node `Plant1/edge-1` (Uptime Int64) with device `Pump1`: Setpoint Int32, Speed Float,
/// Running Boolean, Small Int16.
fn edge(aliases: bool) -> EdgeNode {
    let mut e = EdgeNode::new("Plant1", "edge-1")
        .expect("valid ids")
        .with_bd_seq(1)
        .with_aliases(aliases);
    e.add_metric("Uptime", MetricValue::Int64(10)).expect("new");
    e.add_device("Pump1").expect("new");
    for (name, v) in [
        ("Setpoint", MetricValue::Int32(100)),
        ("Speed", MetricValue::Float(1450.5)),
        ("Running", MetricValue::Boolean(false)),
        ("Small", MetricValue::Int16(3)),
    ] {
        e.add_device_metric("Pump1", name, v).expect("new");
    }
    e
}

fn feed(host: &mut Host, msgs: &[Publish], now: Timestamp) -> Vec<HostAction> {
    msgs.iter()
        .flat_map(|m| host.handle(&m.topic, &m.payload, now))
        .collect()
}

fn born(e: &mut EdgeNode) -> Host {
    let mut host = Host::new("ironplant").expect("valid id");
    feed(&mut host, &e.birth(at(0)), at(1));
    host
}

const SETPOINT: &str = "Plant1/edge-1/Pump1/Setpoint";
const SPEED: &str = "Plant1/edge-1/Pump1/Speed";
const RUNNING: &str = "Plant1/edge-1/Pump1/Running";

#[test]
fn dcmd_carries_the_birth_datatype_by_name_without_aliases() {
    let mut e = edge(false);
    let host = born(&mut e);
    for (p, value, dt, wire) in [
        (
            SETPOINT,
            Value::Int(-5),
            DataType::Int32,
            // Sparkplug puts signed 32-bit values in int_value as their two's complement.
            Wire::IntValue((-5i32) as u32),
        ),
        (
            SPEED,
            Value::Float(12.25),
            DataType::Float,
            Wire::FloatValue(12.25),
        ),
        (
            RUNNING,
            Value::Bool(true),
            DataType::Boolean,
            Wire::BooleanValue(true),
        ),
    ] {
        let cmd = host
            .write_command(&path(p), &value, at(20))
            .expect("writable");
        assert_eq!(cmd.publish.topic, "spBv1.0/Plant1/DCMD/edge-1/Pump1");
        assert_eq!(
            (cmd.publish.qos, cmd.publish.retain),
            (Qos::AtMostOnce, false)
        );
        assert_eq!((cmd.datatype, cmd.alias), (dt, None));
        assert_eq!(cmd.node, NodeId::new("Plant1", "edge-1"));
        assert_eq!(cmd.device_id.as_deref(), Some("Pump1"));
        let payload = Payload::decode_bytes(&cmd.publish.payload).expect("valid");
        assert_eq!(payload.timestamp, Some(1_700_000_000_020));
        assert_eq!(payload.seq, None, "commands carry no seq");
        let [m] = payload.metrics.as_slice() else {
            panic!("one metric: {payload:?}");
        };
        assert_eq!(m.name.as_deref(), p.rsplit('/').next(), "by name");
        assert_eq!(m.alias, None);
        assert_eq!(m.datatype, Some(dt.as_u32()));
        assert_eq!(m.value.as_ref(), Some(&wire));
    }
    // A node metric is an NCMD.
    let ncmd = host
        .write_command(&path("Plant1/edge-1/_node/Uptime"), &Value::Int(7), at(20))
        .expect("writable");
    assert_eq!(ncmd.publish.topic, "spBv1.0/Plant1/NCMD/edge-1");
    assert_eq!(ncmd.device_id, None);
    assert_eq!(ncmd.value, MetricValue::Int64(7));
}

#[test]
fn dcmd_uses_the_alias_when_the_birth_declared_one() {
    let mut e = edge(true);
    let host = born(&mut e);
    let cmd = host
        .write_command(&path(SETPOINT), &Value::Int(42), at(5))
        .expect("writable");
    let alias = e.alias(Some("Pump1"), "Setpoint");
    assert!(alias.is_some());
    assert_eq!(cmd.alias, alias);
    let payload = Payload::decode_bytes(&cmd.publish.payload).expect("valid");
    assert_eq!(payload.metrics[0].name, None, "3.0: alias only");
    assert_eq!(payload.metrics[0].alias, alias);
    assert_eq!(payload.metrics[0].value, Some(Wire::IntValue(42)));
}

#[test]
fn values_are_checked_against_the_datatype_before_anything_is_sent() {
    let mut e = edge(false);
    let host = born(&mut e);
    let small = path("Plant1/edge-1/Pump1/Small");
    let refused = |p: &TagPath, v: Value| {
        host.write_command(p, &v, at(5))
            .expect_err("refused")
            .to_string()
    };
    assert_eq!(
        refused(&small, Value::Float(1.5)),
        "Plant1/edge-1/Pump1/Small: Int16 takes whole numbers, not 1.5"
    );
    assert_eq!(
        refused(&small, Value::Int(40_000)),
        "Plant1/edge-1/Pump1/Small: value 40000 is out of range for Int16"
    );
    assert_eq!(
        refused(&path(SPEED), Value::String("fast".into())),
        "Plant1/edge-1/Pump1/Speed: a string value cannot be written as Float"
    );
    assert_eq!(
        refused(&path(RUNNING), Value::Int(2)),
        "Plant1/edge-1/Pump1/Running: value 2 is out of range for Boolean"
    );
    // The session's own metrics are not values to write.
    assert!(matches!(
        host.write_command(&path("Plant1/edge-1/_node/bdSeq"), &Value::Int(1), at(5)),
        Err(WriteError::ReadOnly { .. })
    ));
    assert!(!is_writable_metric("bdSeq", DataType::Int64));
    assert!(!is_writable_metric(
        "Node Control/Rebirth",
        DataType::Boolean
    ));
    assert!(is_writable_metric("Speed", DataType::Float));
    assert!(!is_writable_metric("Table", DataType::DataSet));
    let info = host.metric_info(&path(SPEED)).expect("born");
    assert!(info.writable);
    let bd = host
        .metric_info(&path("Plant1/edge-1/_node/bdSeq"))
        .expect("born");
    assert!(!bd.writable);
}

#[test]
fn offline_nodes_devices_and_unborn_metrics_are_refused() {
    let mut e = edge(false);
    let mut host = Host::new("ironplant").expect("valid id");
    // Never born.
    assert_eq!(
        host.write_command(&path(SPEED), &Value::Float(1.0), at(0))
            .map_err(|e| e.to_string()),
        Err(
            "Plant1/edge-1/Pump1/Speed: no birth of device Pump1 of edge node Plant1/edge-1 declared this metric"
                .to_owned()
        )
    );
    feed(&mut host, &e.birth(at(0)), at(1));
    assert!(matches!(
        host.write_command(&path("Plant1/edge-1/Pump1/Nope"), &Value::Int(1), at(2)),
        Err(WriteError::UnknownMetric { .. })
    ));
    assert!(matches!(
        host.write_command(&path("not/sparkplug"), &Value::Int(1), at(2)),
        Err(WriteError::NotSparkplug { .. }) | Err(WriteError::UnknownMetric { .. })
    ));
    // DDEATH: that device only.
    let dd = e.device_death("Pump1", at(3)).expect("declared");
    host.handle(&dd.topic, &dd.payload, at(3));
    assert_eq!(
        host.write_command(&path(SPEED), &Value::Float(1.0), at(4))
            .map_err(|e| e.to_string()),
        Err("Plant1/edge-1/Pump1/Speed: device Pump1 of edge node Plant1/edge-1 is offline; writes are refused until its next birth".to_owned())
    );
    host.write_command(&path("Plant1/edge-1/_node/Uptime"), &Value::Int(1), at(4))
        .expect("the node is still online");
    // NDEATH: the node and every device.
    let will = e.will(at(0));
    host.handle(&will.topic, &will.payload, at(5));
    for p in ["Plant1/edge-1/_node/Uptime", SPEED] {
        assert_eq!(
            host.write_command(&path(p), &Value::Int(1), at(6))
                .map_err(|e| e.to_string()),
            Err(format!(
                "{p}: edge node Plant1/edge-1 is offline; writes are refused until its next birth"
            ))
        );
    }
    // Born again: writable again.
    feed(&mut host, &e.birth(at(10)), at(10));
    host.write_command(&path(SPEED), &Value::Float(1.0), at(11))
        .expect("born again");
}

#[test]
fn a_write_is_confirmed_by_the_report_of_its_value_only() {
    let mut e = edge(true);
    let mut host = born(&mut e);
    let mut pending = PendingWrites::new();
    let cmd = host
        .write_command(&path(SPEED), &Value::Float(12.3), at(10))
        .expect("writable");
    assert_eq!(cmd.value, MetricValue::Float(12.3));
    pending.add("speed", &cmd, at(5010));
    let cmd = host
        .write_command(&path(SETPOINT), &Value::Int(7), at(10))
        .expect("writable");
    pending.add("setpoint", &cmd, at(2010));
    assert_eq!(pending.next_deadline(), Some(at(2010)));

    // A report of another value (sent before the command was applied) does not confirm it.
    let old = e
        .device_data("Pump1", &[("Speed", MetricValue::Float(1450.5))], at(20))
        .expect("declared");
    assert_eq!(
        pending.observe(&host.handle(&old.topic, &old.payload, at(20))),
        []
    );
    // Neither does a historical report of the value.
    let mut hist = Payload::decode_bytes(
        &e.device_data("Pump1", &[("Speed", MetricValue::Float(12.3))], at(30))
            .expect("declared")
            .payload,
    )
    .expect("valid");
    hist.metrics[0].is_historical = Some(true);
    let topic = "spBv1.0/Plant1/DDATA/edge-1/Pump1";
    assert_eq!(
        pending.observe(&host.handle(topic, &hist.to_bytes(), at(30))),
        []
    );
    // The report of the value (an f32, recorded as its shortest decimal) does.
    let new = e
        .device_data("Pump1", &[("Speed", MetricValue::Float(12.3))], at(40))
        .expect("declared");
    let done = pending.observe(&host.handle(&new.topic, &new.payload, at(40)));
    assert_eq!(
        done,
        [(
            "speed",
            WriteOutcome::Confirmed {
                value: Value::Float(12.3),
                ts: at(40)
            }
        )]
    );
    assert_eq!(pending.len(), 1);
    // Nothing for the setpoint but its old value: it times out, saying what was reported.
    let other = e
        .device_data("Pump1", &[("Setpoint", MetricValue::Int32(100))], at(50))
        .expect("declared");
    assert_eq!(
        pending.observe(&host.handle(&other.topic, &other.payload, at(50))),
        []
    );
    assert_eq!(pending.expire(at(2009)), []);
    assert_eq!(
        pending.expire(at(2010)),
        [(
            "setpoint",
            WriteOutcome::TimedOut {
                last_reported: Some(Value::Int(100))
            }
        )]
    );
    assert!(pending.is_empty());
    assert_eq!(pending.next_deadline(), None);
}

#[test]
fn a_death_ends_the_writes_of_its_node_or_device() {
    let mut e = edge(false);
    let mut host = born(&mut e);
    let mut pending = PendingWrites::new();
    for (key, p, v) in [
        ("pump", SPEED, Value::Float(1.0)),
        ("node", "Plant1/edge-1/_node/Uptime", Value::Int(1)),
    ] {
        let cmd = host.write_command(&path(p), &v, at(1)).expect("writable");
        pending.add(key, &cmd, at(10_000));
    }
    let dd = e.device_death("Pump1", at(2)).expect("declared");
    let done = pending.observe(&host.handle(&dd.topic, &dd.payload, at(2)));
    assert_eq!(
        done,
        [(
            "pump",
            WriteOutcome::Offline {
                scope: "device Pump1 of edge node Plant1/edge-1".into()
            }
        )]
    );
    let will = e.will(at(0));
    let done = pending.observe(&host.handle(&will.topic, &will.payload, at(3)));
    assert_eq!(
        done,
        [(
            "node",
            WriteOutcome::Offline {
                scope: "edge node Plant1/edge-1".into()
            }
        )]
    );
    // A Bad sample carrying the value (the death's) never confirms anything.
    let a = HostAction::Sample(ironplant_sparkplug::TagSample {
        path: path(SPEED),
        value: Value::Float(1.0),
        quality: Quality::bad(QualityReason::CommFailure),
        ts: at(4),
        historical: false,
    });
    let mut p2 = PendingWrites::new();
    feed(&mut host, &e.birth(at(5)), at(5));
    let cmd = host
        .write_command(&path(SPEED), &Value::Float(1.0), at(6))
        .expect("born again");
    p2.add("again", &cmd, at(100));
    assert_eq!(p2.observe(&[a]), []);
    assert_eq!(p2.len(), 1);
}
