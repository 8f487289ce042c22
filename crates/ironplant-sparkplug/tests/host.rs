//! Host scenarios driven by an `EdgeNode` (and hand-made payloads), with explicit `now`.

use std::time::Duration;

use ironplant_core::{Quality, QualityReason, TagPath, Timestamp, Value};
use ironplant_sparkplug::proto::payload::metric;
use ironplant_sparkplug::proto::Metric;
use ironplant_sparkplug::{
    is_rebirth_request, DataType, EdgeNode, Host, HostAction, HostError, HostOptions, MetricValue,
    NodeId, Payload, Publish, Qos, TagSample, REBIRTH,
};

const T0: i64 = 1_700_000_000_000_000; // µs

fn at(ms: i64) -> Timestamp {
    Timestamp(T0 + ms * 1000)
}

fn path(s: &str) -> TagPath {
    TagPath::parse(s).expect("valid path")
}

fn samples(actions: &[HostAction]) -> Vec<TagSample> {
    actions
        .iter()
        .filter_map(|a| match a {
            HostAction::Sample(s) => Some(s.clone()),
            _ => None,
        })
        .collect()
}

fn publishes(actions: &[HostAction]) -> Vec<Publish> {
    actions
        .iter()
        .filter_map(|a| match a {
            HostAction::Publish(p) => Some(p.clone()),
            _ => None,
        })
        .collect()
}

fn errors(actions: &[HostAction]) -> Vec<HostError> {
    actions
        .iter()
        .filter_map(|a| match a {
            HostAction::Error(e) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

fn sample_of<'a>(actions: &'a [HostAction], p: &str) -> Vec<&'a TagSample> {
    actions
        .iter()
        .filter_map(|a| match a {
            HostAction::Sample(s) if s.path.as_str() == p => Some(s),
            _ => None,
        })
        .collect()
}

/// An edge node `Plant1/edge-1` with a node metric, and devices `Pump1` and `Tank`.
fn edge() -> EdgeNode {
    let mut e = EdgeNode::new("Plant1", "edge-1")
        .expect("valid ids")
        .with_bd_seq(7);
    e.add_metric("Uptime", MetricValue::Int64(10)).expect("new");
    e.add_device("Pump1").expect("new");
    e.add_device_metric("Pump1", "Speed", MetricValue::Double(1450.0))
        .expect("new");
    e.add_device_metric("Pump1", "Running", MetricValue::Boolean(true))
        .expect("new");
    e.add_device("Tank").expect("new");
    e.add_device_metric("Tank", "Level/Percent", MetricValue::Float(42.5))
        .expect("new");
    e
}

fn feed(host: &mut Host, msgs: &[Publish], now: Timestamp) -> Vec<HostAction> {
    msgs.iter()
        .flat_map(|m| host.handle(&m.topic, &m.payload, now))
        .collect()
}

/// A host that has seen `edge`'s birth sequence at `at(0)`.
fn born(edge: &mut EdgeNode) -> (Host, Vec<HostAction>) {
    let mut host = Host::new("ironplant").expect("valid id");
    let msgs = edge.birth(at(0));
    let actions = feed(&mut host, &msgs, at(1));
    (host, actions)
}

#[test]
fn birth_then_data_by_alias_gives_samples_with_paths_values_timestamps() {
    let mut e = edge();
    let (mut host, birth) = born(&mut e);
    assert!(errors(&birth).is_empty(), "{birth:?}");
    let s = samples(&birth);
    let paths: Vec<&str> = s.iter().map(|x| x.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "Plant1/edge-1/_node/bdSeq",
            "Plant1/edge-1/_node/Node_x20Control/Rebirth",
            "Plant1/edge-1/_node/Uptime",
            "Plant1/edge-1/Pump1/Speed",
            "Plant1/edge-1/Pump1/Running",
            "Plant1/edge-1/Tank/Level/Percent",
        ]
    );
    assert!(s
        .iter()
        .all(|x| x.quality == Quality::GOOD && x.ts == at(0)));
    assert_eq!(s[0].value, Value::Int(7));
    assert_eq!(s[1].value, Value::Bool(false));
    assert_eq!(s[3].value, Value::Float(1450.0));
    let node = NodeId::new("Plant1", "edge-1");
    assert!(host.is_online(&node, None));
    assert!(host.is_online(&node, Some("Pump1")));
    assert!(birth.contains(&HostAction::Status {
        node: node.clone(),
        device_id: Some("Tank".into()),
        online: true,
        ts: at(0),
    }));

    // DDATA by alias only (no names on the wire).
    let msg = e
        .device_data("Pump1", &[("Speed", MetricValue::Double(1475.5))], at(100))
        .expect("declared");
    let p = Payload::decode_bytes(&msg.payload).expect("valid");
    assert_eq!(p.metrics[0].name, None);
    assert!(p.metrics[0].alias.is_some());
    let data = host.handle(&msg.topic, &msg.payload, at(150));
    assert_eq!(
        data,
        [HostAction::Sample(TagSample {
            path: path("Plant1/edge-1/Pump1/Speed"),
            value: Value::Float(1475.5),
            quality: Quality::GOOD,
            ts: at(100),
            historical: false,
        })]
    );

    // Timestamps: metric, else payload, else now.
    let mut p = Payload {
        timestamp: Some(1_700_000_000_500),
        seq: Some(u64::from(e.next_seq())),
        metrics: vec![
            Metric {
                alias: e.alias(None, "Uptime"),
                timestamp: Some(1_700_000_000_400),
                value: Some(metric::Value::LongValue(11)),
                ..Default::default()
            },
            Metric {
                alias: e.alias(None, "Uptime"),
                value: Some(metric::Value::LongValue(12)),
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    let topic = "spBv1.0/Plant1/NDATA/edge-1";
    let a = host.handle(topic, &p.to_bytes(), at(900));
    let ts: Vec<_> = samples(&a)
        .iter()
        .map(|s| (s.value.clone(), s.ts))
        .collect();
    assert_eq!(ts, [(Value::Int(11), at(400)), (Value::Int(12), at(500))]);
    p.timestamp = None;
    p.seq = Some(p.seq.unwrap_or(0) + 1);
    p.metrics.truncate(1);
    p.metrics[0].timestamp = None;
    let a = host.handle(topic, &p.to_bytes(), at(900));
    assert_eq!(samples(&a)[0].ts, at(900));
}

#[test]
fn pysparkplug_style_data_by_name_with_datatype() {
    let mut e = edge().with_aliases(false);
    let (mut host, birth) = born(&mut e);
    assert!(errors(&birth).is_empty());
    let msg = e
        .node_data(&[("Uptime", MetricValue::Int64(99))], at(5))
        .expect("declared");
    let p = Payload::decode_bytes(&msg.payload).expect("valid");
    assert_eq!(p.metrics[0].name.as_deref(), Some("Uptime"));
    assert_eq!(p.metrics[0].alias, None);
    assert_eq!(p.metrics[0].datatype, Some(DataType::Int64.as_u32()));
    let a = host.handle(&msg.topic, &msg.payload, at(6));
    assert_eq!(
        sample_of(&a, "Plant1/edge-1/_node/Uptime")[0].value,
        Value::Int(99)
    );
}

fn rebirth_requests(actions: &[HostAction]) -> Vec<Publish> {
    publishes(actions)
        .into_iter()
        .filter(|p| p.topic.contains("/NCMD/"))
        .collect()
}

fn assert_is_rebirth(p: &Publish, topic: &str, now: Timestamp) {
    assert_eq!(p.topic, topic);
    assert_eq!(p.qos, Qos::AtMostOnce);
    assert!(!p.retain);
    let payload = Payload::decode_bytes(&p.payload).expect("valid NCMD");
    assert!(is_rebirth_request(&payload));
    assert_eq!(payload.seq, None, "NCMD carries no seq");
    assert_eq!(payload.timestamp, Some((now.as_micros() / 1000) as u64));
    assert_eq!(payload.metrics.len(), 1);
    assert_eq!(payload.metrics[0].name.as_deref(), Some(REBIRTH));
    assert_eq!(
        payload.metrics[0].datatype,
        Some(DataType::Boolean.as_u32())
    );
    assert_eq!(
        payload.metrics[0].value,
        Some(metric::Value::BooleanValue(true))
    );
}

#[test]
fn seq_gap_requests_exactly_one_rebirth() {
    let mut e = edge();
    let (mut host, _) = born(&mut e);
    // Lose one message.
    let _lost = e
        .device_data("Pump1", &[("Speed", MetricValue::Double(1.0))], at(10))
        .expect("declared");
    let next = e
        .device_data(
            "Tank",
            &[("Level/Percent", MetricValue::Float(50.0))],
            at(20),
        )
        .expect("declared");
    let a = host.handle(&next.topic, &next.payload, at(30));
    let req = rebirth_requests(&a);
    assert_eq!(req.len(), 1, "{a:?}");
    assert_is_rebirth(&req[0], "spBv1.0/Plant1/NCMD/edge-1", at(30));
    assert!(errors(&a).iter().any(|e| matches!(
        e,
        HostError::SeqGap {
            expected: Some(3),
            got: Some(4),
            ..
        }
    )));
    // The new value is Uncertain(SequenceGap) (nothing vouches for it until the rebirth);
    // everything else that was Good is Uncertain(Stale) until the birth.
    assert_eq!(
        sample_of(&a, "Plant1/edge-1/Tank/Level/Percent")[0].quality,
        Quality::uncertain(QualityReason::SequenceGap)
    );
    let stale = sample_of(&a, "Plant1/edge-1/Pump1/Speed");
    assert_eq!(stale.len(), 1);
    assert_eq!(stale[0].quality, Quality::uncertain(QualityReason::Stale));
    assert_eq!(stale[0].value, Value::Float(1450.0), "last known value");
    assert_eq!(stale[0].ts, at(30));
    assert_eq!(samples(&a).len(), 6);

    // Later messages, in order or with another gap, do not repeat the request within the retry.
    let more = e
        .node_data(&[("Uptime", MetricValue::Int64(11))], at(40))
        .expect("declared");
    let a = host.handle(&more.topic, &more.payload, at(41));
    assert!(rebirth_requests(&a).is_empty());
    assert!(errors(&a).is_empty());
    // In order now, but still before the rebirth: still Uncertain(SequenceGap).
    assert_eq!(
        sample_of(&a, "Plant1/edge-1/_node/Uptime")[0].quality,
        Quality::uncertain(QualityReason::SequenceGap)
    );
    let _lost = e.node_data(&[], at(50)).expect("empty update");
    let gap2 = e.node_data(&[], at(60)).expect("empty update");
    let a = host.handle(&gap2.topic, &gap2.payload, at(61));
    assert!(rebirth_requests(&a).is_empty(), "throttled");
    assert!(errors(&a)
        .iter()
        .any(|e| matches!(e, HostError::SeqGap { .. })));

    // The edge node answers with a new birth: everything Good again (devices pass through
    // Uncertain(Stale) between the NBIRTH and their DBIRTH), and it resets the throttle.
    let rebirth = e.birth(at(70));
    let a = feed(&mut host, &rebirth, at(71));
    let mut last = std::collections::BTreeMap::new();
    for s in samples(&a) {
        last.insert(s.path.clone(), s.quality);
    }
    assert_eq!(last.len(), 6);
    assert!(last.values().all(|q| *q == Quality::GOOD), "{last:?}");
    let _lost = e.node_data(&[], at(80)).expect("empty update");
    let gap3 = e.node_data(&[], at(90)).expect("empty update");
    let a = host.handle(&gap3.topic, &gap3.payload, at(91));
    assert_eq!(rebirth_requests(&a).len(), 1);
}

#[test]
fn rebirth_request_is_repeated_after_the_retry_interval() {
    let mut host = Host::with_options(
        "ironplant",
        HostOptions {
            rebirth_retry: Duration::from_secs(2),
            ..HostOptions::default()
        },
    )
    .expect("valid");
    let mut e = edge();
    e.birth(at(0));
    let d = e.node_data(&[], at(1)).expect("ok");
    assert_eq!(
        rebirth_requests(&host.handle(&d.topic, &d.payload, at(0))).len(),
        1
    );
    assert!(rebirth_requests(&host.handle(&d.topic, &d.payload, at(1999))).is_empty());
    assert_eq!(
        rebirth_requests(&host.handle(&d.topic, &d.payload, at(2000))).len(),
        1
    );
    // A clock that jumps back does not silence the node forever.
    assert_eq!(
        rebirth_requests(&host.handle(&d.topic, &d.payload, at(-60_000))).len(),
        1
    );
}

#[test]
fn seq_wrap_255_to_0_is_not_a_gap() {
    let mut e = edge();
    let (mut host, _) = born(&mut e);
    // The birth used seq 0..=2; send enough data to wrap twice.
    for i in 0..600 {
        let m = e
            .node_data(&[("Uptime", MetricValue::Int64(i))], at(i))
            .expect("declared");
        let seq = Payload::decode_bytes(&m.payload)
            .expect("valid")
            .seq
            .expect("has seq");
        assert_eq!(seq, (3 + i as u64) % 256);
        let a = host.handle(&m.topic, &m.payload, at(i));
        assert!(errors(&a).is_empty(), "seq {seq}: {a:?}");
        assert!(publishes(&a).is_empty(), "seq {seq}");
        assert_eq!(samples(&a).len(), 1);
    }
}

#[test]
fn ndeath_with_matching_bdseq_marks_node_and_device_tags_bad() {
    let mut e = edge();
    let (mut host, _) = born(&mut e);
    let d = e
        .device_data("Pump1", &[("Speed", MetricValue::Double(1500.0))], at(10))
        .expect("ok");
    host.handle(&d.topic, &d.payload, at(10));
    let will = e.will(at(-3_600_000)); // registered at CONNECT, an hour earlier
    let a = host.handle(&will.topic, &will.payload, at(5000));
    let s = samples(&a);
    assert_eq!(s.len(), 6, "{a:?}");
    assert!(s
        .iter()
        .all(|x| x.quality == Quality::bad(QualityReason::CommFailure) && x.ts == at(5000)));
    assert_eq!(
        sample_of(&a, "Plant1/edge-1/Pump1/Speed")[0].value,
        Value::Float(1500.0),
        "carries the last value"
    );
    let node = NodeId::new("Plant1", "edge-1");
    assert!(!host.is_online(&node, None));
    assert!(!host.is_online(&node, Some("Tank")));
    for device_id in [None, Some("Pump1".to_owned()), Some("Tank".to_owned())] {
        assert!(a.contains(&HostAction::Status {
            node: node.clone(),
            device_id,
            online: false,
            ts: at(5000),
        }));
    }
    // A second NDEATH changes nothing; data afterwards asks for a birth.
    assert_eq!(host.handle(&will.topic, &will.payload, at(5001)), []);
    let d = e.node_data(&[], at(6000)).expect("ok");
    let a = host.handle(&d.topic, &d.payload, at(6000));
    assert_eq!(rebirth_requests(&a).len(), 1);
    assert!(errors(&a)
        .iter()
        .any(|e| matches!(e, HostError::NotBorn { .. })));
}

#[test]
fn ndeath_with_a_stale_bdseq_is_ignored() {
    let mut e = edge();
    let old_will = e.will(at(-10));
    e.reconnect(); // new connection: bdSeq 8
    let (mut host, _) = born(&mut e);
    // The broker publishes the previous connection's will late.
    assert_eq!(host.handle(&old_will.topic, &old_will.payload, at(50)), []);
    let node = NodeId::new("Plant1", "edge-1");
    assert!(host.is_online(&node, Some("Pump1")));
    // The current will does take the node down.
    let will = e.will(at(-5));
    assert!(!samples(&host.handle(&will.topic, &will.payload, at(60))).is_empty());
    assert!(!host.is_online(&node, None));
}

#[test]
fn ddeath_marks_only_that_device_bad() {
    let mut e = edge();
    let (mut host, _) = born(&mut e);
    let death = e.device_death("Pump1", at(300)).expect("declared");
    let a = host.handle(&death.topic, &death.payload, at(400));
    let s = samples(&a);
    let paths: Vec<&str> = s.iter().map(|x| x.path.as_str()).collect();
    assert_eq!(
        paths,
        ["Plant1/edge-1/Pump1/Running", "Plant1/edge-1/Pump1/Speed"]
    );
    assert!(s
        .iter()
        .all(|x| x.quality == Quality::bad(QualityReason::CommFailure) && x.ts == at(300)));
    let node = NodeId::new("Plant1", "edge-1");
    assert!(host.is_online(&node, None));
    assert!(host.is_online(&node, Some("Tank")));
    assert!(!host.is_online(&node, Some("Pump1")));
    assert!(publishes(&a).is_empty());

    // Other traffic goes on; the dead device's data asks for a rebirth.
    let tank = e
        .device_data(
            "Tank",
            &[("Level/Percent", MetricValue::Float(1.0))],
            at(500),
        )
        .expect("ok");
    let a = host.handle(&tank.topic, &tank.payload, at(500));
    assert!(errors(&a).is_empty());
    let pump = e
        .device_data("Pump1", &[("Speed", MetricValue::Double(1.0))], at(600))
        .expect("ok");
    let a = host.handle(&pump.topic, &pump.payload, at(600));
    assert_eq!(rebirth_requests(&a).len(), 1);

    // The device comes back with its own DBIRTH.
    let back = e.device_birth("Pump1", at(700)).expect("declared");
    let a = host.handle(&back.topic, &back.payload, at(700));
    assert!(errors(&a).is_empty(), "{a:?}");
    assert!(host.is_online(&node, Some("Pump1")));
    assert_eq!(
        sample_of(&a, "Plant1/edge-1/Pump1/Speed")[0].quality,
        Quality::GOOD
    );
}

#[test]
fn data_before_birth_requests_rebirth() {
    let mut host = Host::new("ironplant").expect("valid");
    let mut e = edge();
    let _unseen = e.birth(at(0)); // published before the host connected
    for (i, msg) in [
        e.node_data(&[("Uptime", MetricValue::Int64(1))], at(1)),
        e.device_data("Pump1", &[("Speed", MetricValue::Double(2.0))], at(2)),
    ]
    .into_iter()
    .enumerate()
    {
        let msg = msg.expect("declared");
        let a = host.handle(&msg.topic, &msg.payload, at(10));
        assert!(samples(&a).is_empty());
        let req = rebirth_requests(&a);
        // One request for the node, not one per message.
        assert_eq!(req.len(), usize::from(i == 0), "{a:?}");
        if i == 0 {
            assert_is_rebirth(&req[0], "spBv1.0/Plant1/NCMD/edge-1", at(10));
        }
    }
    // The answering birth is accepted, whatever seq the node was at before.
    let a = feed(&mut host, &e.birth(at(20)), at(21));
    assert!(errors(&a).is_empty());
    assert_eq!(samples(&a).len(), 6);

    // DBIRTH without an NBIRTH, and DDATA for a device that was never born, also ask.
    let mut host = Host::new("ironplant").expect("valid");
    let dbirth = e.device_birth("Tank", at(30)).expect("declared");
    assert_eq!(
        rebirth_requests(&host.handle(&dbirth.topic, &dbirth.payload, at(30))).len(),
        1
    );
    let mut host = Host::new("ironplant").expect("valid");
    let mut msgs = e.birth(at(40));
    msgs.truncate(2); // NBIRTH and Pump1's DBIRTH; Tank's DBIRTH is lost
    feed(&mut host, &msgs, at(40));
    let tank = e
        .device_data(
            "Tank",
            &[("Level/Percent", MetricValue::Float(1.0))],
            at(50),
        )
        .expect("ok");
    let a = host.handle(&tank.topic, &tank.payload, at(50));
    assert_eq!(rebirth_requests(&a).len(), 1, "{a:?}");
}

#[test]
fn unknown_alias_requests_rebirth() {
    let mut e = edge();
    let (mut host, _) = born(&mut e);
    let p = Payload {
        timestamp: Some(1_700_000_000_100),
        seq: Some(u64::from(e.next_seq())),
        metrics: vec![
            Metric {
                alias: Some(999),
                value: Some(metric::Value::LongValue(1)),
                ..Default::default()
            },
            Metric {
                alias: e.alias(None, "Uptime"),
                value: Some(metric::Value::LongValue(77)),
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    let a = host.handle("spBv1.0/Plant1/NDATA/edge-1", &p.to_bytes(), at(200));
    assert_eq!(rebirth_requests(&a).len(), 1);
    assert!(errors(&a)
        .iter()
        .any(|e| matches!(e, HostError::UnknownAlias { alias: 999, .. })));
    // The resolvable metric is still recorded, Good; the rest went stale.
    let up = sample_of(&a, "Plant1/edge-1/_node/Uptime");
    assert_eq!(up.len(), 1);
    assert_eq!(
        (up[0].value.clone(), up[0].quality),
        (Value::Int(77), Quality::GOOD)
    );
    assert_eq!(
        sample_of(&a, "Plant1/edge-1/Pump1/Speed")[0].quality,
        Quality::uncertain(QualityReason::Stale)
    );

    // Device aliases belong to their device: Tank's alias is unknown on Pump1.
    let tank_alias = e.alias(Some("Tank"), "Level/Percent");
    let mut host2 = born(&mut edge()).0;
    let p = Payload {
        timestamp: Some(1_700_000_000_100),
        seq: Some(3),
        metrics: vec![Metric {
            alias: tank_alias,
            value: Some(metric::Value::FloatValue(1.0)),
            ..Default::default()
        }],
        ..Default::default()
    };
    let a = host2.handle("spBv1.0/Plant1/DDATA/edge-1/Pump1", &p.to_bytes(), at(1));
    assert_eq!(rebirth_requests(&a).len(), 1);
}

#[test]
fn null_historical_and_undecodable_values() {
    let mut e = edge();
    let (mut host, _) = born(&mut e);
    let speed = e.alias(Some("Pump1"), "Speed");
    let p = Payload {
        timestamp: Some(1_700_000_000_100),
        seq: Some(u64::from(e.next_seq())),
        metrics: vec![
            Metric {
                alias: speed,
                timestamp: Some(1_699_999_000_000),
                is_historical: Some(true),
                value: Some(metric::Value::DoubleValue(900.0)),
                ..Default::default()
            },
            Metric {
                alias: speed,
                is_null: Some(true),
                ..Default::default()
            },
            Metric {
                alias: e.alias(Some("Pump1"), "Running"),
                value: Some(metric::Value::StringValue("yes".into())),
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    let a = host.handle("spBv1.0/Plant1/DDATA/edge-1/Pump1", &p.to_bytes(), at(200));
    let s = samples(&a);
    assert_eq!(s.len(), 3);
    assert_eq!(
        (s[0].value.clone(), s[0].quality, s[0].ts, s[0].historical),
        (Value::Float(900.0), Quality::GOOD, at(-1_000_000), true)
    );
    assert_eq!(
        (s[1].value.clone(), s[1].quality, s[1].historical),
        (
            Value::Null,
            Quality::bad(QualityReason::DeviceFailure),
            false
        )
    );
    // A string where the birth said Boolean: Bad(ConfigError), last value kept.
    assert_eq!(
        (s[2].value.clone(), s[2].quality),
        (Value::Bool(true), Quality::bad(QualityReason::ConfigError))
    );
    assert!(errors(&a)
        .iter()
        .any(|e| matches!(e, HostError::BadMetric { .. })));
    assert!(rebirth_requests(&a).is_empty());
}

/// Arrays arrive as typed array values; a malformed one (odd length) or one over the core's
/// element limit is a BadMetric error and Bad(ConfigError) with the last value kept.
#[test]
fn arrays_decode_to_array_values_and_bad_ones_are_refused() {
    let mut e = edge();
    e.add_device_metric("Pump1", "Profile", MetricValue::Int16Array(vec![-1, 2]))
        .expect("new");
    let (mut host, a) = born(&mut e);
    let profile = "Plant1/edge-1/Pump1/Profile";
    let ints = |v: Vec<i64>| Value::array(ironplant_core::Array::from_ints(v).expect("small"));
    assert_eq!(sample_of(&a, profile)[0].value, ints(vec![-1, 2]));
    let alias = e.alias(Some("Pump1"), "Profile");
    let data = |e: &EdgeNode, bytes: Vec<u8>| Payload {
        timestamp: Some(1_700_000_000_100),
        seq: Some(u64::from(e.next_seq())),
        metrics: vec![Metric {
            alias,
            value: Some(metric::Value::BytesValue(bytes)),
            ..Default::default()
        }],
        ..Default::default()
    };
    // 3 bytes for 2-byte elements.
    let a = host.handle(
        "spBv1.0/Plant1/DDATA/edge-1/Pump1",
        &data(&e, vec![1, 0, 2]).to_bytes(),
        at(200),
    );
    let s = sample_of(&a, profile);
    assert_eq!(
        (s[0].value.clone(), s[0].quality),
        (ints(vec![-1, 2]), Quality::bad(QualityReason::ConfigError))
    );
    assert!(errors(&a)
        .iter()
        .any(|e| matches!(e, HostError::BadMetric { .. })));
    // One element more than a value may hold (a valid Sparkplug array, but too large for us).
    let over = vec![0u8; 2 * (ironplant_core::MAX_ELEMENTS + 1)];
    let a = host.handle(
        "spBv1.0/Plant1/DDATA/edge-1/Pump1",
        // The next seq after the first DDATA's.
        &Payload {
            seq: Some(u64::from(e.next_seq()) + 1),
            ..data(&e, over)
        }
        .to_bytes(),
        at(300),
    );
    assert_eq!(
        sample_of(&a, profile)[0].quality,
        Quality::bad(QualityReason::ConfigError)
    );
    assert!(errors(&a).iter().any(|e| matches!(
        e,
        HostError::BadMetric {
            error: ironplant_sparkplug::ValueError::TooLarge { .. },
            ..
        }
    )));
    assert!(rebirth_requests(&a).is_empty(), "no seq gap");
}

#[test]
fn malformed_payloads_are_errors_never_panics() {
    let mut e = edge();
    let (mut host, _) = born(&mut e);
    let good = e
        .device_data("Pump1", &[("Speed", MetricValue::Double(1.0))], at(1))
        .expect("ok");
    // Every truncation of a valid payload, and some garbage.
    for cut in 0..good.payload.len() {
        let _ = host.handle(&good.topic, &good.payload[..cut], at(2));
    }
    let a = host.handle(&good.topic, &[0xff, 0xff, 0xff], at(3));
    assert!(matches!(errors(&a)[..], [HostError::Decode { .. }]));
    assert!(samples(&a).is_empty());
    // Deterministic random bytes on every message type.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let types = [
        "spBv1.0/g/NBIRTH/n",
        "spBv1.0/g/NDATA/n",
        "spBv1.0/g/NDEATH/n",
        "spBv1.0/g/DBIRTH/n/d",
        "spBv1.0/g/DDATA/n/d",
        "spBv1.0/g/DDEATH/n/d",
        "spBv1.0/STATE/ironplant",
    ];
    for i in 0..5_000u64 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let len = (state % 64) as usize;
        let bytes: Vec<u8> = (0..len)
            .map(|k| (state.rotate_left(k as u32 * 5) & 0xff) as u8)
            .collect();
        let _ = host.handle(types[(i % 7) as usize], &bytes, at(i as i64));
    }
    // Bad topics are errors too.
    for t in [
        "",
        "spBv1.0",
        "spBv1.0/g/NDATA",
        "spBv1.0/g/XDATA/n",
        "a/b/c",
    ] {
        let a = host.handle(t, &good.payload, at(5));
        assert!(matches!(errors(&a)[..], [HostError::Topic(_)]), "{t:?}");
    }
    // A birth with a metric that has no tag path: reported, the rest recorded.
    let p = Payload {
        timestamp: Some(1_700_000_000_000),
        seq: Some(0),
        metrics: vec![
            Metric {
                name: Some("a//b".into()),
                datatype: Some(DataType::Int32.as_u32()),
                value: Some(metric::Value::IntValue(1)),
                ..Default::default()
            },
            Metric {
                name: Some("ok".into()),
                datatype: Some(99),
                value: Some(metric::Value::IntValue(1)),
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    let a = host.handle("spBv1.0/g/NBIRTH/n2", &p.to_bytes(), at(9));
    let errs = errors(&a);
    assert!(errs
        .iter()
        .any(|e| matches!(e, HostError::Unmappable { .. })));
    assert!(errs
        .iter()
        .any(|e| matches!(e, HostError::BadMetric { .. })));
    // Data for the unmappable metric is known (no rebirth loop), just not recorded.
    let d = Payload {
        seq: Some(1),
        metrics: vec![Metric {
            name: Some("a//b".into()),
            value: Some(metric::Value::IntValue(2)),
            ..Default::default()
        }],
        ..Default::default()
    };
    let a = host.handle("spBv1.0/g/NDATA/n2", &d.to_bytes(), at(10));
    assert_eq!(a, []);
}

#[test]
fn state_messages_follow_the_3_0_rules() {
    let mut host = Host::new("scada-1").expect("valid");
    let will = host.will_message(at(0));
    assert_eq!(will.topic, "spBv1.0/STATE/scada-1");
    assert_eq!(will.qos, Qos::AtLeastOnce);
    assert!(will.retain);
    assert_eq!(
        String::from_utf8(will.payload).expect("utf-8"),
        r#"{"online":false,"timestamp":1700000000000}"#
    );
    // The birth repeats the will's timestamp, not its own `now`.
    let online = host.online_message(at(250));
    assert_eq!(online.topic, "spBv1.0/STATE/scada-1");
    assert_eq!((online.qos, online.retain), (Qos::AtLeastOnce, true));
    assert_eq!(
        String::from_utf8(online.payload.clone()).expect("utf-8"),
        r#"{"online":true,"timestamp":1700000000000}"#
    );
    assert_eq!(
        String::from_utf8(host.offline_message(at(900)).payload).expect("utf-8"),
        r#"{"online":false,"timestamp":1700000000900}"#
    );
    // Our own ONLINE echoed back: nothing to do. Our own OFFLINE (a late will): say ONLINE again.
    assert_eq!(host.handle(&online.topic, &online.payload, at(300)), []);
    let a = host.handle(
        "spBv1.0/STATE/scada-1",
        br#"{"online":false,"timestamp":1}"#,
        at(400),
    );
    assert_eq!(a, [HostAction::Publish(online.clone())]);
    // Another host's state is not ours to manage; garbage on ours is reported.
    assert_eq!(
        host.handle("spBv1.0/STATE/other", br#"{"online":false}"#, at(500)),
        []
    );
    let a = host.handle("spBv1.0/STATE/scada-1", b"ONLINE", at(600));
    assert!(matches!(errors(&a)[..], [HostError::BadState { .. }]));
    // Commands from host applications are not data.
    assert_eq!(host.handle("spBv1.0/g/NCMD/n", &[0xff], at(700)), []);
}

#[test]
fn commands_use_the_birth_datatype_and_alias() {
    let mut e = edge();
    let (host, _) = born(&mut e);
    let cmd = host
        .command(
            &path("Plant1/edge-1/Pump1/Speed"),
            &Value::Int(1200),
            at(10),
        )
        .expect("writable");
    assert_eq!(cmd.topic, "spBv1.0/Plant1/DCMD/edge-1/Pump1");
    assert_eq!((cmd.qos, cmd.retain), (Qos::AtMostOnce, false));
    let p = Payload::decode_bytes(&cmd.payload).expect("valid");
    assert_eq!(p.seq, None);
    assert_eq!(p.timestamp, Some(1_700_000_000_010));
    assert_eq!(p.metrics[0].name, None, "aliases in use: alias only");
    assert_eq!(p.metrics[0].alias, e.alias(Some("Pump1"), "Speed"));
    assert_eq!(p.metrics[0].datatype, Some(DataType::Double.as_u32()));
    assert_eq!(p.metrics[0].value, Some(metric::Value::DoubleValue(1200.0)));

    let ncmd = host
        .command(&path("Plant1/edge-1/_node/Uptime"), &Value::Int(5), at(10))
        .expect("writable");
    assert_eq!(ncmd.topic, "spBv1.0/Plant1/NCMD/edge-1");

    assert!(host
        .command(&path("Plant1/edge-1/Pump1/Running"), &Value::Int(3), at(10))
        .is_err());
    assert!(host
        .command(&path("Plant1/edge-1/Pump1/Nope"), &Value::Int(3), at(10))
        .is_err());
    assert!(host
        .command(&path("Plant1/edge-9/Pump1/Speed"), &Value::Int(3), at(10))
        .is_err());
    assert!(host
        .command(&path("acme/lyon"), &Value::Int(3), at(10))
        .is_err());
}

#[test]
fn limits_reject_births_beyond_the_caps() {
    let mut host = Host::with_options(
        "ironplant",
        HostOptions {
            max_nodes: 1,
            max_metrics_per_node: 4,
            ..HostOptions::default()
        },
    )
    .expect("valid");
    let mut e = edge();
    let a = feed(&mut host, &e.birth(at(0)), at(0));
    // NBIRTH has 3 metrics; Pump1's 2 more would make 5 > 4.
    assert!(errors(&a)
        .iter()
        .any(|e| matches!(e, HostError::Limit { limit: 4, .. })));
    let mut other = EdgeNode::new("Plant1", "edge-2").expect("valid");
    let a = feed(&mut host, &other.birth(at(0)), at(0));
    assert!(errors(&a)
        .iter()
        .any(|e| matches!(e, HostError::Limit { limit: 1, .. })));
    assert!(samples(&a).is_empty());
}

#[test]
fn metric_info_gives_the_birth_datatype_and_properties() {
    let mut e = edge();
    e.set_unit(Some("Pump1"), "Speed", "rpm").expect("declared");
    let (mut host, _) = born(&mut e);
    let speed = path("Plant1/edge-1/Pump1/Speed");
    let info = host.metric_info(&speed).expect("born");
    assert_eq!(info.datatype, DataType::Double);
    assert_eq!(info.unit.as_deref(), Some("rpm"));
    assert_eq!(info.description, None);
    assert_eq!(info.node, NodeId::new("Plant1", "edge-1"));
    assert_eq!(
        (info.device_id.as_deref(), info.name.as_str()),
        (Some("Pump1"), "Speed")
    );
    let uptime = host
        .metric_info(&path("Plant1/edge-1/_node/Uptime"))
        .expect("born");
    assert_eq!((uptime.datatype, uptime.unit), (DataType::Int64, None));
    assert_eq!(host.metric_info(&path("Plant1/edge-1/Pump1/Nope")), None);
    assert_eq!(host.metric_info(&path("other/thing")), None);
    // Still known after the node died (its tags go Bad, they keep their metadata).
    let death = e.death(at(10));
    host.handle(&death.topic, &death.payload, at(10));
    assert!(host.metric_info(&speed).is_some());
}

/// A host that places `Plant1/edge-1` in the asset tree: `Pump1` in a cell, the node (and
/// `Tank`, not mapped otherwise) under a line.
fn mapped_host() -> Host {
    use ironplant_sparkplug::{AssetMapping, DeviceSelector};
    let mapping = |device, asset: &str| AssetMapping {
        group_id: "Plant1".into(),
        edge_node_id: "edge-1".into(),
        device,
        path: path(asset),
    };
    Host::with_options(
        "ironplant",
        HostOptions {
            asset_mappings: vec![
                mapping(
                    DeviceSelector::Device("Pump1".into()),
                    "acme/lyon/hall/line1/pump/edge",
                ),
                mapping(DeviceSelector::Node, "acme/lyon/hall/gw"),
            ],
            ..HostOptions::default()
        },
    )
    .expect("valid mappings")
}

#[test]
fn births_of_a_mapped_node_land_under_its_assets_and_writes_find_their_way_back() {
    let mut e = edge();
    e.add_device_metric("Pump1", "Motor/Temp", MetricValue::Float(40.0))
        .expect("new");
    let mut host = mapped_host();
    let birth = feed(&mut host, &e.birth(at(0)), at(1));
    let owned: Vec<String> = samples(&birth)
        .into_iter()
        .map(|s| s.path.to_string())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(
        owned,
        [
            "acme/lyon/hall/gw/Tank/Level/Percent",
            "acme/lyon/hall/gw/_node/Node_x20Control/Rebirth",
            "acme/lyon/hall/gw/_node/Uptime",
            "acme/lyon/hall/gw/_node/bdSeq",
            "acme/lyon/hall/line1/pump/edge/Running",
            "acme/lyon/hall/line1/pump/edge/Speed",
        ]
    );
    // The folder that does not fit below the cell asset: refused, named, not folded.
    let refused = errors(&birth);
    assert_eq!(refused.len(), 1, "{refused:?}");
    let text = refused[0].to_string();
    assert!(
        matches!(
            &refused[0],
            HostError::Unmappable {
                error: ironplant_sparkplug::MapError::TooDeep { .. },
                ..
            }
        ) && text
            .contains("spBv1.0/Plant1/DBIRTH/edge-1/Pump1: metric \"Motor/Temp\" has no tag path")
            && text.contains("leaves room for 1"),
        "{text}"
    );
    // Data lands there too.
    let data = e
        .device_data("Pump1", &[("Speed", MetricValue::Double(1200.0))], at(5))
        .expect("declared");
    let got = host.handle(&data.topic, &data.payload, at(6));
    assert_eq!(
        sample_of(&got, "acme/lyon/hall/line1/pump/edge/Speed")
            .first()
            .map(|s| s.value.clone()),
        Some(Value::Float(1200.0))
    );
    // The metric behind a mapped tag, and the commands it writes to.
    let info = host
        .metric_info(&path("acme/lyon/hall/line1/pump/edge/Speed"))
        .expect("born");
    assert_eq!(
        (info.node, info.device_id.as_deref(), info.name.as_str()),
        (NodeId::new("Plant1", "edge-1"), Some("Pump1"), "Speed")
    );
    let cmd = host
        .write_command(
            &path("acme/lyon/hall/line1/pump/edge/Speed"),
            &Value::Int(900),
            at(10),
        )
        .expect("writable");
    assert_eq!(cmd.publish.topic, "spBv1.0/Plant1/DCMD/edge-1/Pump1");
    assert_eq!(cmd.path.as_str(), "acme/lyon/hall/line1/pump/edge/Speed");
    let p = Payload::decode_bytes(&cmd.publish.payload).expect("valid");
    assert_eq!(p.metrics[0].alias, e.alias(Some("Pump1"), "Speed"));
    assert_eq!(p.metrics[0].value, Some(metric::Value::DoubleValue(900.0)));
    let tank = host
        .write_command(
            &path("acme/lyon/hall/gw/Tank/Level/Percent"),
            &Value::Float(50.0),
            at(10),
        )
        .expect("writable");
    assert_eq!(tank.publish.topic, "spBv1.0/Plant1/DCMD/edge-1/Tank");
    assert_eq!(tank.metric, "Level/Percent");
    let ncmd = host
        .write_command(
            &path("acme/lyon/hall/gw/_node/Uptime"),
            &Value::Int(3),
            at(10),
        )
        .expect("writable");
    assert_eq!(ncmd.publish.topic, "spBv1.0/Plant1/NCMD/edge-1");
    // The default spelling of a mapped metric is no metric at all.
    assert!(matches!(
        host.write_command(&path("Plant1/edge-1/Pump1/Speed"), &Value::Int(3), at(10)),
        Err(ironplant_sparkplug::WriteError::NotSparkplug { .. })
    ));
}

/// Samples stamped too far from the host's clock are dropped and reported (a wrong edge node
/// clock, or old messages replayed); historical ones may be old.
#[test]
fn samples_stamped_far_from_the_hosts_clock_are_dropped() {
    let mut e = edge();
    let (mut host, _) = born(&mut e);
    const MIN: i64 = 60_000;
    // 11 minutes in the future.
    let ahead = e
        .device_data(
            "Pump1",
            &[("Speed", MetricValue::Double(1.0))],
            at(11 * MIN),
        )
        .expect("declared");
    let a = host.handle(&ahead.topic, &ahead.payload, at(0));
    assert!(samples(&a).is_empty(), "{a:?}");
    assert!(
        matches!(
            &errors(&a)[..],
            [HostError::AbsurdTimestamp { samples: 1, .. }]
        ),
        "{a:?}"
    );
    // 9 minutes ahead is within the tolerance.
    let near = e
        .device_data("Pump1", &[("Speed", MetricValue::Double(2.0))], at(9 * MIN))
        .expect("declared");
    let a = host.handle(&near.topic, &near.payload, at(0));
    assert_eq!(sample_of(&a, "Plant1/edge-1/Pump1/Speed").len(), 1, "{a:?}");
    // Two days old, live: dropped.
    let old = e
        .device_data("Pump1", &[("Speed", MetricValue::Double(3.0))], at(0))
        .expect("declared");
    let a = host.handle(&old.topic, &old.payload, at(2 * 24 * 60 * MIN));
    assert!(
        sample_of(&a, "Plant1/edge-1/Pump1/Speed").is_empty(),
        "{a:?}"
    );
    assert!(errors(&a)
        .iter()
        .any(|e| matches!(e, HostError::AbsurdTimestamp { .. })));
}
