//! Golden byte vectors for the payload codec: one NBIRTH written by hand from the protobuf wire
//! format, and payloads produced by a third-party encoder (Go's google.golang.org/protobuf over the
//! Eclipse Tahu `sparkplug_b.proto`, as published in the test vectors of the UMH benthos-umh
//! Sparkplug plugin). Each must decode to the expected fields and re-encode to the same bytes.

use ironplant_core::{Quality, TagPath, Timestamp, Value};
use ironplant_sparkplug::proto::payload::metric;
use ironplant_sparkplug::proto::Metric;
use ironplant_sparkplug::value::decode_metric_value;
use ironplant_sparkplug::{DataType, Host, HostAction, MetricValue, Payload, TagSample};

/// 1_700_000_000_000 ms as a varint: 7-bit groups, least significant first.
const TS: [u8; 6] = [0x80, 0xd0, 0x95, 0xff, 0xbc, 0x31];
const TS_MS: u64 = 1_700_000_000_000;

fn hand_nbirth() -> Vec<u8> {
    let mut b = Vec::new();
    // Payload.timestamp = field 1, varint: key (1 << 3) | 0.
    b.push(0x08);
    b.extend(TS);
    // Payload.metrics = field 2, length-delimited: key (2 << 3) | 2 = 0x12, then the length.
    // Metric { name: "bdSeq", timestamp, datatype: Int64 (4), long_value: 0 }  — 18 bytes
    b.extend([0x12, 18]);
    b.extend([0x0a, 5]); // name = field 1, LEN 5
    b.extend(b"bdSeq");
    b.push(0x18); // timestamp = field 3, varint
    b.extend(TS);
    b.extend([0x20, 0x04]); // datatype = field 4, varint 4 (Int64)
    b.extend([0x58, 0x00]); // long_value = field 11: (11 << 3) | 0 = 0x58, value 0
                            // Metric { name: "Node Control/Rebirth", timestamp, datatype: Boolean (11), false } — 33 bytes
    b.extend([0x12, 33]);
    b.extend([0x0a, 20]);
    b.extend(b"Node Control/Rebirth");
    b.push(0x18);
    b.extend(TS);
    b.extend([0x20, 0x0b]);
    b.extend([0x70, 0x00]); // boolean_value = field 14: (14 << 3) | 0 = 0x70
                            // Metric { name: "Temperature", alias: 1, timestamp, datatype: Float (9), 21.5 } — 29 bytes
    b.extend([0x12, 29]);
    b.extend([0x0a, 11]);
    b.extend(b"Temperature");
    b.extend([0x10, 0x01]); // alias = field 2, varint 1
    b.push(0x18);
    b.extend(TS);
    b.extend([0x20, 0x09]);
    // float_value = field 12, fixed32: (12 << 3) | 5 = 0x65; 21.5f32 = 0x41AC0000, little-endian.
    b.extend([0x65, 0x00, 0x00, 0xac, 0x41]);
    // Metric { name: "Count", alias: 2, timestamp, datatype: Int16 (2), -2 } — 22 bytes
    b.extend([0x12, 22]);
    b.extend([0x0a, 5]);
    b.extend(b"Count");
    b.extend([0x10, 0x02]);
    b.push(0x18);
    b.extend(TS);
    b.extend([0x20, 0x02]);
    // int_value = field 10: (10 << 3) | 0 = 0x50; -2 as a 16-bit two's complement is 65534 =
    // 0b11_1111111_1111110 → varint FE FF 03.
    b.extend([0x50, 0xfe, 0xff, 0x03]);
    // Payload.seq = field 3, varint 0.
    b.extend([0x18, 0x00]);
    b
}

#[test]
fn hand_encoded_nbirth_decodes_and_reencodes_identically() {
    let bytes = hand_nbirth();
    assert_eq!(bytes.len(), 119);
    let p = Payload::decode_bytes(&bytes).expect("valid NBIRTH");
    assert_eq!(p.timestamp, Some(TS_MS));
    assert_eq!(p.seq, Some(0));
    assert_eq!(p.metrics.len(), 4);
    let names: Vec<_> = p.metrics.iter().map(|m| m.name.as_deref()).collect();
    assert_eq!(
        names,
        [
            Some("bdSeq"),
            Some("Node Control/Rebirth"),
            Some("Temperature"),
            Some("Count")
        ]
    );
    let values: Vec<_> = p
        .metrics
        .iter()
        .map(|m| decode_metric_value(m).expect("typed").expect("not null"))
        .collect();
    assert_eq!(
        values,
        [
            MetricValue::Int64(0),
            MetricValue::Boolean(false),
            MetricValue::Float(21.5),
            MetricValue::Int16(-2),
        ]
    );
    assert_eq!(p.metrics[2].alias, Some(1));
    assert_eq!(p.metrics[2].timestamp, Some(TS_MS));
    assert_eq!(p.to_bytes(), bytes);

    // And building the same payload from typed values gives the same bytes.
    let built = Payload {
        timestamp: Some(TS_MS),
        metrics: [
            ("bdSeq", None, MetricValue::Int64(0)),
            ("Node Control/Rebirth", None, MetricValue::Boolean(false)),
            ("Temperature", Some(1), MetricValue::Float(21.5)),
            ("Count", Some(2), MetricValue::Int16(-2)),
        ]
        .into_iter()
        .map(|(name, alias, v)| Metric {
            name: Some(name.to_owned()),
            alias,
            timestamp: Some(TS_MS),
            datatype: Some(v.datatype().as_u32()),
            value: Some(v.to_proto()),
            ..Default::default()
        })
        .collect(),
        seq: Some(0),
        ..Default::default()
    };
    assert_eq!(built.to_bytes(), bytes);
}

/// `NBIRTH_V1`: bdSeq (alias 1, UInt64 88), Node Control/Rebirth (alias 2, false),
/// Temperature (alias 100, Double 21.5), seq 0.
const GO_NBIRTH: [u8; 82] = [
    0x08, 0xd2, 0xe2, 0x83, 0xb9, 0xfa, 0x32, 0x12, 0x0d, 0x0a, 0x05, 0x62, 0x64, 0x53, 0x65, 0x71,
    0x10, 0x01, 0x20, 0x08, 0x58, 0x58, 0x12, 0x1c, 0x0a, 0x14, 0x4e, 0x6f, 0x64, 0x65, 0x20, 0x43,
    0x6f, 0x6e, 0x74, 0x72, 0x6f, 0x6c, 0x2f, 0x52, 0x65, 0x62, 0x69, 0x72, 0x74, 0x68, 0x10, 0x02,
    0x20, 0x0b, 0x70, 0x00, 0x12, 0x1a, 0x0a, 0x0b, 0x54, 0x65, 0x6d, 0x70, 0x65, 0x72, 0x61, 0x74,
    0x75, 0x72, 0x65, 0x10, 0x64, 0x20, 0x0a, 0x69, 0x00, 0x00, 0x00, 0x00, 0x00, 0x80, 0x35, 0x40,
    0x18, 0x00,
];
/// `NDATA_V1`: alias 100 = 22.5, seq 1.
const GO_NDATA: [u8; 24] = [
    0x08, 0xd2, 0xe2, 0x83, 0xb9, 0xfa, 0x32, 0x12, 0x0d, 0x10, 0x64, 0x20, 0x0a, 0x69, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x80, 0x36, 0x40, 0x18, 0x01,
];
/// `NDEATH_V1`: bdSeq 0 (so it does not match `NBIRTH_V1`'s 88).
const GO_NDEATH: [u8; 24] = [
    0x08, 0xd2, 0xe2, 0x83, 0xb9, 0xfa, 0x32, 0x12, 0x0d, 0x0a, 0x05, 0x62, 0x64, 0x53, 0x65, 0x71,
    0x10, 0x00, 0x20, 0x08, 0x58, 0x00, 0x18, 0x00,
];
/// `NDATA_GAP`: alias 100 = 27.0 with seq 5.
const GO_NDATA_GAP: [u8; 24] = [
    0x08, 0xd2, 0xe2, 0x83, 0xb9, 0xfa, 0x32, 0x12, 0x0d, 0x10, 0x64, 0x20, 0x0a, 0x69, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x3b, 0x40, 0x18, 0x05,
];
const GO_TS_MS: u64 = 1_750_855_643_474;

#[test]
fn third_party_vectors_decode_and_reencode_identically() {
    let p = Payload::decode_bytes(&GO_NBIRTH).expect("valid");
    assert_eq!(p.timestamp, Some(GO_TS_MS));
    assert_eq!(p.seq, Some(0));
    let summary: Vec<_> = p
        .metrics
        .iter()
        .map(|m| (m.name.clone(), m.alias, m.datatype, m.value.clone()))
        .collect();
    assert_eq!(
        summary,
        [
            (
                Some("bdSeq".to_owned()),
                Some(1),
                Some(DataType::UInt64.as_u32()),
                Some(metric::Value::LongValue(88))
            ),
            (
                Some("Node Control/Rebirth".to_owned()),
                Some(2),
                Some(DataType::Boolean.as_u32()),
                Some(metric::Value::BooleanValue(false))
            ),
            (
                Some("Temperature".to_owned()),
                Some(100),
                Some(DataType::Double.as_u32()),
                Some(metric::Value::DoubleValue(21.5))
            ),
        ]
    );
    for bytes in [&GO_NBIRTH[..], &GO_NDATA, &GO_NDEATH, &GO_NDATA_GAP] {
        let p = Payload::decode_bytes(bytes).expect("valid");
        assert_eq!(p.to_bytes(), bytes);
    }
    let d = Payload::decode_bytes(&GO_NDATA).expect("valid");
    assert_eq!(d.seq, Some(1));
    assert_eq!(d.metrics[0].name, None);
    assert_eq!(d.metrics[0].alias, Some(100));
    assert_eq!(d.metrics[0].value, Some(metric::Value::DoubleValue(22.5)));
}

fn samples(actions: &[HostAction]) -> Vec<&TagSample> {
    actions
        .iter()
        .filter_map(|a| match a {
            HostAction::Sample(s) => Some(s),
            _ => None,
        })
        .collect()
}

#[test]
fn host_follows_a_third_party_session() {
    let go_ts = Timestamp(GO_TS_MS as i64 * 1000);
    // A minute after the Go node stamped its messages (a host drops samples stamped far from
    // its clock).
    let now = Timestamp(go_ts.0 + 60_000_000);
    let topic = |t: &str| format!("spBv1.0/UMH/{t}/edge");
    let mut host = Host::new("ironplant").expect("valid id");

    let birth = host.handle(&topic("NBIRTH"), &GO_NBIRTH, now);
    let temp = TagPath::parse("UMH/edge/_node/Temperature").expect("valid");
    assert!(samples(&birth).contains(&&TagSample {
        path: temp.clone(),
        value: Value::Float(21.5),
        quality: Quality::GOOD,
        ts: go_ts,
        historical: false,
    }));
    assert_eq!(samples(&birth).len(), 3);

    let data = host.handle(&topic("NDATA"), &GO_NDATA, now);
    assert_eq!(
        data,
        [HostAction::Sample(TagSample {
            path: temp.clone(),
            value: Value::Float(22.5),
            quality: Quality::GOOD,
            ts: go_ts,
            historical: false,
        })]
    );

    // bdSeq 0 does not match the birth's 88: a stale will, ignored.
    assert_eq!(host.handle(&topic("NDEATH"), &GO_NDEATH, now), []);

    // seq 5 after 1: gap → one rebirth request.
    let gap = host.handle(&topic("NDATA"), &GO_NDATA_GAP, now);
    let publishes: Vec<_> = gap
        .iter()
        .filter_map(|a| match a {
            HostAction::Publish(p) => Some(p),
            _ => None,
        })
        .collect();
    assert_eq!(publishes.len(), 1);
    assert_eq!(publishes[0].topic, "spBv1.0/UMH/NCMD/edge");
}
