//! Sparkplug B 3.0 for Ironplant: the protobuf payload codec, topic parsing, the metric ⇄ tag
//! mapping, and two pure (sans-IO) state machines — a host application ([`Host`]) and an edge node
//! ([`EdgeNode`]) — that take messages and `now` and return what to publish or record.
//!
//! Nothing here touches a socket or a clock: the MQTT side (issue 5's broker, or a client) feeds
//! `(topic, payload, now)` into [`Host::handle`] and performs the returned [`HostAction`]s.

pub mod datatype;
pub mod edge;
pub mod host;
pub mod proto;
pub mod provenance;
pub mod settings;
pub mod tagmap;
pub mod topic;
pub mod value;
pub mod writes;

pub use datatype::DataType;
pub use edge::{EdgeError, EdgeNode};
pub use host::{
    is_writable_metric, Command, ConfigError, Host, HostAction, HostError, HostOptions, MetricInfo,
    NodeId, TagSample, WriteError,
};
pub use proto::Payload;
pub use tagmap::{AssetMapping, DeviceSelector, MapError, MappingError, MetricAddress, TagMapper};
pub use topic::{MessageType, Topic, TopicError};
pub use value::{DataSet, MetricValue, ValueError};
pub use writes::{PendingWrites, WriteOutcome};

use ironplant_core::Timestamp;

/// The name of the bdSeq metric in NBIRTH and NDEATH.
pub const BD_SEQ: &str = "bdSeq";
/// The metric a host sets to `true` in an NCMD to ask an edge node for a new birth sequence.
pub const REBIRTH: &str = "Node Control/Rebirth";

/// MQTT quality of service of a message to publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Qos {
    AtMostOnce = 0,
    AtLeastOnce = 1,
}

impl Qos {
    pub fn as_u8(self) -> u8 {
        self as u8
    }
}

/// A message for the MQTT side to publish (or register as a will).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: Qos,
    pub retain: bool,
}

/// Sparkplug milliseconds since the epoch → [`Timestamp`]; `None` if it does not fit.
pub fn timestamp_from_millis(ms: u64) -> Option<Timestamp> {
    i64::try_from(ms)
        .ok()
        .and_then(|m| m.checked_mul(1000))
        .map(Timestamp)
}

/// [`Timestamp`] → Sparkplug milliseconds since the epoch (instants before 1970 become 0).
pub fn millis_from_timestamp(ts: Timestamp) -> u64 {
    u64::try_from(ts.as_micros().div_euclid(1000)).unwrap_or(0)
}

/// Whether a decoded NCMD payload asks for a rebirth (`Node Control/Rebirth` = true).
pub fn is_rebirth_request(payload: &Payload) -> bool {
    payload.metrics.iter().any(|m| {
        m.name.as_deref() == Some(REBIRTH)
            && m.value == Some(proto::payload::metric::Value::BooleanValue(true))
    })
}

/// The payload of a rebirth request: `Node Control/Rebirth` = true at `now`. The datatype is
/// included (although 3.0 says commands SHOULD NOT carry it) because pysparkplug cannot decode a
/// metric without one.
pub fn rebirth_payload(now: Timestamp) -> Payload {
    let ms = millis_from_timestamp(now);
    Payload {
        timestamp: Some(ms),
        metrics: vec![proto::Metric {
            name: Some(REBIRTH.to_owned()),
            timestamp: Some(ms),
            datatype: Some(DataType::Boolean.as_u32()),
            value: Some(proto::payload::metric::Value::BooleanValue(true)),
            ..Default::default()
        }],
        seq: None,
        uuid: None,
        body: None,
    }
}
