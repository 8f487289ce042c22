//! The Sparkplug host application as a pure state machine: [`Host::handle`] takes one MQTT message
//! and `now` and returns the [`HostAction`]s to perform (samples to record, messages to publish,
//! status changes, diagnostics). No I/O, no clock.
//!
//! The MQTT side subscribes to `spBv1.0/#` (which includes the host's own STATE topic), registers
//! [`Host::will_message`] as the will of its CONNECT, publishes [`Host::online_message`] right after
//! subscribing, then feeds every message to [`Host::handle`].
//!
//! # Session tracking (per edge node)
//! - NBIRTH starts a session: bdSeq, seq, and every metric with its datatype and alias. Devices
//!   of the previous session go offline until their DBIRTH (which follows immediately).
//! - Every DBIRTH/NDATA/DDATA/DDEATH must carry the previous seq + 1 (mod 256; 255 → 0 is not a
//!   gap). Anything else is a gap. There is no reorder window: the embedded broker delivers one
//!   client's messages in order, so a gap means a lost message.
//! - NDATA/DDATA metrics are resolved by name if they have one, else by the alias of the birth.
//! - An NDEATH is honoured only when its bdSeq equals the bdSeq of the current NBIRTH (a stale
//!   will from an older connection is ignored); an NDEATH without bdSeq is honoured.
//!
//! # Rebirth requests
//! An NCMD `Node Control/Rebirth` = true is published when data (or a DBIRTH) arrives for a node
//! that is not online, for a device that is not born, with a seq gap, or with a metric name or
//! alias the birth did not declare. At most one request per node per `rebirth_retry` (default 5 s)
//! is sent, so a burst of bad messages produces exactly one request; the NBIRTH clears it.
//!
//! # Quality
//! - Values from births and data are **Good**, stamped with the metric timestamp, else the payload
//!   timestamp, else `now`.
//! - `is_null` metrics give `Value::Null` with **Bad(DeviceFailure)**: the edge node says it has no
//!   value (Ironplant carries `Null` only with a non-Good quality).
//! - A value that does not decode as its birth datatype gives **Bad(ConfigError)** carrying the
//!   last known value (plus an error action).
//! - NDEATH: every tag of the node and of all its devices becomes **Bad(CommFailure)** carrying its
//!   last value, stamped `now` (the NDEATH's own timestamp is from the CONNECT, hours old). DDEATH:
//!   only that device's tags, stamped with the DDEATH's payload timestamp (the spec says to use it).
//! - When a rebirth is requested from a node that is online, every Good tag of that node and its
//!   devices that the triggering message did not refresh becomes **Uncertain(Stale)** (last value,
//!   stamped `now`): a message was lost, so any value may be out of date.
//! - After a seq gap, data (and DBIRTHs) of the node are **Uncertain(SequenceGap)** until its next
//!   NBIRTH: lost messages, or a second publisher with its own seq (a forged node), mean nothing
//!   vouches for them. The NBIRTH makes the node's values Good again. Metrics that disappear from a new birth, and devices not re-born yet after an
//!   NBIRTH, are also Uncertain(Stale).
//! - Samples of `is_historical` metrics are flagged [`TagSample::historical`]; they do not change the
//!   last value the host carries into Bad/Stale samples.
//!
//! # Bounds
//! Nodes, devices per node and metrics per node are capped ([`HostOptions`]); a birth that would
//! exceed a cap is rejected with an error action. Payload decoding is bounded by prost (depth ≤ 100,
//! lengths checked against the input).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use ironplant_core::{Quality, QualityReason, TagPath, Timestamp, Value};

use crate::datatype::DataType;
use crate::proto::{payload::metric, Metric, Payload};
use crate::tagmap::{AssetMapping, MapError, Rejected, TagMapper};
use crate::topic::{validate_id, Element, MessageType, Topic, TopicError};
use crate::value::{decode_typed, MetricValue, ValueError};
use crate::{millis_from_timestamp, rebirth_payload, timestamp_from_millis, Publish, Qos, BD_SEQ};

/// Tunables of a [`Host`].
#[derive(Debug, Clone)]
pub struct HostOptions {
    /// Levels put in front of every tag path (at most 3), e.g. `acme/lyon/sparkplug`.
    pub path_prefix: Option<TagPath>,
    /// Edge nodes and devices placed in the asset tree instead (see [`crate::tagmap`]).
    pub asset_mappings: Vec<AssetMapping>,
    /// Least time between two rebirth requests to the same edge node.
    pub rebirth_retry: Duration,
    pub max_nodes: usize,
    pub max_devices_per_node: usize,
    /// Node metrics plus the metrics of all its devices.
    pub max_metrics_per_node: usize,
    /// Samples stamped further ahead of the host's clock are dropped.
    pub max_future: Duration,
    /// Samples (not `is_historical`) stamped further behind are dropped.
    pub max_past: Duration,
}

impl Default for HostOptions {
    fn default() -> Self {
        HostOptions {
            path_prefix: None,
            asset_mappings: Vec::new(),
            rebirth_retry: Duration::from_secs(5),
            max_nodes: 10_000,
            max_devices_per_node: 10_000,
            max_metrics_per_node: 100_000,
            max_future: Duration::from_secs(600),
            max_past: Duration::from_secs(24 * 3600),
        }
    }
}

/// An edge node: group id and edge node id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId {
    pub group_id: String,
    pub edge_node_id: String,
}

impl NodeId {
    pub fn new(group_id: &str, edge_node_id: &str) -> NodeId {
        NodeId {
            group_id: group_id.to_owned(),
            edge_node_id: edge_node_id.to_owned(),
        }
    }
}

/// One tag value to record.
#[derive(Debug, Clone, PartialEq)]
pub struct TagSample {
    pub path: TagPath,
    pub value: Value,
    pub quality: Quality,
    pub ts: Timestamp,
    /// From an `is_historical` metric: history to store, not the current value.
    pub historical: bool,
}

/// What the MQTT side should do after [`Host::handle`].
#[derive(Debug, Clone, PartialEq)]
pub enum HostAction {
    /// Record a tag value.
    Sample(TagSample),
    /// Publish a message (a rebirth request, or the host's STATE).
    Publish(Publish),
    /// An edge node (`device_id: None`) or device came online or went offline.
    Status {
        node: NodeId,
        device_id: Option<String>,
        online: bool,
        ts: Timestamp,
    },
    /// Something in the input was wrong; the host has dealt with it (log it).
    Error(HostError),
}

/// Problems found in the input. Each names the topic it came from.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum HostError {
    #[error("{0}")]
    Topic(#[from] TopicError),
    #[error("{topic}: malformed Sparkplug B payload: {error}")]
    Decode { topic: String, error: String },
    #[error("{topic}: sequence gap: expected seq {expected:?}, got {got:?}; rebirth requested")]
    SeqGap {
        topic: String,
        expected: Option<u8>,
        got: Option<u64>,
    },
    #[error("{topic}: the edge node or device has no current birth; rebirth requested")]
    NotBorn { topic: String },
    #[error("{topic}: alias {alias} was not declared in the birth; rebirth requested")]
    UnknownAlias { topic: String, alias: u64 },
    #[error("{topic}: metric {name:?} was not declared in the birth; rebirth requested")]
    UnknownMetric { topic: String, name: String },
    #[error("{topic}: a metric has neither a name nor an alias")]
    AnonymousMetric { topic: String },
    #[error("{topic}: alias {alias} is declared twice; the later metric keeps it")]
    DuplicateAlias { topic: String, alias: u64 },
    #[error("{topic}: {samples} sample(s) dropped: stamped {ts}, too far from the host's clock ({now}); check the edge node's clock (historical data must set is_historical)")]
    AbsurdTimestamp {
        topic: String,
        samples: usize,
        ts: Timestamp,
        now: Timestamp,
    },
    #[error("{topic}: metric {metric:?}: {error}")]
    BadMetric {
        topic: String,
        metric: String,
        error: ValueError,
    },
    #[error("{topic}: metric {metric:?} has no tag path and is not recorded: {error}")]
    Unmappable {
        topic: String,
        metric: String,
        error: MapError,
    },
    #[error("{topic}: {what} would exceed the limit of {limit}; birth rejected")]
    Limit {
        topic: String,
        what: &'static str,
        limit: usize,
    },
    #[error("{topic}: malformed STATE payload: {why}")]
    BadState { topic: String, why: String },
}

/// Why a [`Host`] could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("host id: {0}")]
    HostId(TopicError),
    #[error("path prefix: {0}")]
    Prefix(MapError),
    /// The first of the mappings' problems (the config section reports them all).
    #[error("{0}")]
    Assets(Rejected),
}

/// Why [`Host::write_command`] could not build a command. Nothing is sent then.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WriteError {
    #[error("{path} is not the path of a Sparkplug metric")]
    NotSparkplug { path: TagPath },
    /// The edge node or device had a birth but is offline now (NDEATH, DDEATH, or an NBIRTH
    /// whose devices are not re-born yet).
    #[error("{path}: {scope} is offline; writes are refused until its next birth")]
    Offline { path: TagPath, scope: String },
    #[error("{path}: no birth of {scope} declared this metric")]
    UnknownMetric { path: TagPath, scope: String },
    /// bdSeq and `Node Control/…` belong to the session between host and edge node.
    #[error("{path}: metric {metric:?} is part of the Sparkplug session, not a writable value")]
    ReadOnly { path: TagPath, metric: String },
    #[error("{path}: {error}")]
    Value { path: TagPath, error: ValueError },
}

/// Whether a metric can be written through its tag: a writable datatype, and not one of the
/// session's own metrics (bdSeq, `Node Control/…`).
pub fn is_writable_metric(name: &str, datatype: DataType) -> bool {
    datatype.is_writable() && !is_session_metric(name)
}

fn is_session_metric(name: &str) -> bool {
    name == BD_SEQ || name.starts_with("Node Control/")
}

/// An NCMD/DCMD built by [`Host::write_command`]: the message to publish, and what the edge node
/// is expected to report once it applied it (Sparkplug has no command acknowledgement; see
/// [`crate::writes::PendingWrites`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    pub publish: Publish,
    pub path: TagPath,
    pub node: NodeId,
    pub device_id: Option<String>,
    /// The metric's name in the birth.
    pub metric: String,
    /// The alias the command carries instead of the name, when the birth declared one.
    pub alias: Option<u64>,
    pub datatype: DataType,
    /// The value as sent (`value` narrowed to `datatype`, e.g. an f32 for Float).
    pub value: MetricValue,
}

const STALE: Quality = Quality {
    level: ironplant_core::QualityLevel::Uncertain,
    reason: QualityReason::Stale,
};
/// Data after a seq gap, until the node's next NBIRTH.
const AFTER_GAP: Quality = Quality {
    level: ironplant_core::QualityLevel::Uncertain,
    reason: QualityReason::SequenceGap,
};
const COMM_FAILURE: Quality = Quality {
    level: ironplant_core::QualityLevel::Bad,
    reason: QualityReason::CommFailure,
};
const NULL_QUALITY: Quality = Quality {
    level: ironplant_core::QualityLevel::Bad,
    reason: QualityReason::DeviceFailure,
};
const BAD_VALUE: Quality = Quality {
    level: ironplant_core::QualityLevel::Bad,
    reason: QualityReason::ConfigError,
};

/// What the current birth declared about a metric, for the tag it becomes.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricInfo {
    pub node: NodeId,
    pub device_id: Option<String>,
    pub name: String,
    pub datatype: DataType,
    /// From the `engUnit` (Ignition), `EngUnit` or `unit` property, if any.
    pub unit: Option<String>,
    /// From the `Documentation`, `Tooltip` or `description` property, if any.
    pub description: Option<String>,
    /// Whether [`Host::write_command`] can write it ([`is_writable_metric`]).
    pub writable: bool,
}

/// Property keys that carry a metric's engineering unit and description, in order of
/// preference. Sparkplug 3.0 standardises none; these are what edge software sends in practice.
const UNIT_KEYS: [&str; 3] = ["engUnit", "EngUnit", "unit"];
const DESCRIPTION_KEYS: [&str; 3] = ["Documentation", "Tooltip", "description"];

fn string_property(
    props: Option<&crate::proto::payload::PropertySet>,
    keys: &[&str],
) -> Option<String> {
    let props = props?;
    keys.iter().find_map(|k| {
        let i = props.keys.iter().position(|key| key == k)?;
        match props.values.get(i)?.value.as_ref()? {
            crate::proto::payload::property_value::Value::StringValue(s) if !s.is_empty() => {
                Some(s.clone())
            }
            _ => None,
        }
    })
}

#[derive(Debug)]
struct MetricState {
    datatype: DataType,
    alias: Option<u64>,
    unit: Option<String>,
    description: Option<String>,
    /// `None` when the name has no tag path (reported at birth).
    path: Option<TagPath>,
    /// The last current (non-historical) value and quality recorded; `None` before the first.
    last: Option<(Value, Quality)>,
}

/// The metrics of an edge node itself or of one device.
#[derive(Debug, Default)]
struct Scope {
    online: bool,
    metrics: BTreeMap<String, MetricState>,
    aliases: HashMap<u64, String>,
}

#[derive(Debug, Default)]
struct NodeState {
    scope: Scope,
    bd_seq: Option<u64>,
    last_seq: Option<u8>,
    /// A seq gap was seen since the last NBIRTH: data is Uncertain(SequenceGap) until the next.
    gap: bool,
    rebirth_at: Option<Timestamp>,
    devices: BTreeMap<String, Scope>,
}

impl NodeState {
    fn device_metric_count(&self) -> usize {
        self.devices.values().map(|d| d.metrics.len()).sum()
    }
}

/// Metrics refreshed by the message being handled: (device, metric name).
type Touched = HashSet<(Option<String>, String)>;

/// A Sparkplug B host application (see the module docs).
#[derive(Debug)]
pub struct Host {
    host_id: String,
    mapper: TagMapper,
    rebirth_retry_us: i64,
    max_nodes: usize,
    max_devices_per_node: usize,
    max_metrics_per_node: usize,
    max_future_us: i64,
    max_past_us: i64,
    nodes: HashMap<NodeId, NodeState>,
    /// The timestamp of the will registered with the current connection.
    connect_ms: Option<u64>,
}

impl Host {
    pub fn new(host_id: &str) -> Result<Host, ConfigError> {
        Host::with_options(host_id, HostOptions::default())
    }

    pub fn with_options(host_id: &str, options: HostOptions) -> Result<Host, ConfigError> {
        validate_id(Element::HostId, host_id).map_err(ConfigError::HostId)?;
        let mapper = TagMapper::new(options.path_prefix)
            .map_err(ConfigError::Prefix)?
            .with_assets(options.asset_mappings)
            .map_err(|e| {
                let first = e.into_iter().next();
                ConfigError::Assets(first.expect("a refusal names at least one problem"))
            })?;
        Ok(Host {
            host_id: host_id.to_owned(),
            mapper,
            rebirth_retry_us: i64::try_from(options.rebirth_retry.as_micros()).unwrap_or(i64::MAX),
            max_nodes: options.max_nodes,
            max_devices_per_node: options.max_devices_per_node,
            max_metrics_per_node: options.max_metrics_per_node,
            max_future_us: i64::try_from(options.max_future.as_micros()).unwrap_or(i64::MAX),
            max_past_us: i64::try_from(options.max_past.as_micros()).unwrap_or(i64::MAX),
            nodes: HashMap::new(),
            connect_ms: None,
        })
    }

    pub fn host_id(&self) -> &str {
        &self.host_id
    }

    /// The metric ⇄ tag path mapping this host uses.
    pub fn mapper(&self) -> &TagMapper {
        &self.mapper
    }

    /// Whether the edge node (`device_id: None`) or device has a current birth.
    pub fn is_online(&self, node: &NodeId, device_id: Option<&str>) -> bool {
        self.nodes.get(node).is_some_and(|n| match device_id {
            None => n.scope.online,
            Some(d) => n.scope.online && n.devices.get(d).is_some_and(|s| s.online),
        })
    }

    /// The STATE death certificate to register as the will of the next MQTT CONNECT. Its
    /// timestamp is remembered: the next [`Host::online_message`] must repeat it.
    pub fn will_message(&mut self, now: Timestamp) -> Publish {
        let ms = millis_from_timestamp(now);
        self.connect_ms = Some(ms);
        self.state_message(false, ms)
    }

    /// The STATE birth certificate (`{"online":true,…}`, QoS 1, retained), stamped with the
    /// timestamp of the last [`Host::will_message`] (or `now` if none was made).
    pub fn online_message(&self, now: Timestamp) -> Publish {
        let ms = self
            .connect_ms
            .unwrap_or_else(|| millis_from_timestamp(now));
        self.state_message(true, ms)
    }

    /// The STATE death certificate to publish before a clean disconnect, stamped `now`.
    pub fn offline_message(&self, now: Timestamp) -> Publish {
        self.state_message(false, millis_from_timestamp(now))
    }

    fn state_message(&self, online: bool, ms: u64) -> Publish {
        Publish {
            topic: Topic::state(&self.host_id),
            payload: format!(r#"{{"online":{online},"timestamp":{ms}}}"#).into_bytes(),
            qos: Qos::AtLeastOnce,
            retain: true,
        }
    }

    /// Handles one MQTT message. Never panics on any input.
    pub fn handle(&mut self, topic: &str, payload: &[u8], now: Timestamp) -> Vec<HostAction> {
        let mut out = Vec::new();
        let parsed = match Topic::parse(topic) {
            Ok(t) => t,
            Err(e) => {
                out.push(HostAction::Error(HostError::Topic(e)));
                return out;
            }
        };
        let (group_id, message_type, edge_node_id, device_id) = match parsed {
            Topic::State { host_id } => {
                self.on_state(topic, &host_id, payload, now, &mut out);
                return out;
            }
            Topic::Edge {
                group_id,
                message_type,
                edge_node_id,
                device_id,
            } => (group_id, message_type, edge_node_id, device_id),
        };
        // Commands are from host applications (possibly this one) to edge nodes.
        if matches!(message_type, MessageType::NCmd | MessageType::DCmd) {
            return out;
        }
        let payload = match Payload::decode_bytes(payload) {
            Ok(p) => p,
            Err(e) => {
                out.push(HostAction::Error(HostError::Decode {
                    topic: topic.to_owned(),
                    error: e.to_string(),
                }));
                return out;
            }
        };
        let node = NodeId {
            group_id,
            edge_node_id,
        };
        match (message_type, device_id) {
            (MessageType::NBirth, _) => self.on_nbirth(topic, node, &payload, now, &mut out),
            (MessageType::NDeath, _) => self.on_ndeath(&node, &payload, now, &mut out),
            (MessageType::NData, _) => self.on_data(topic, &node, None, &payload, now, &mut out),
            (MessageType::DBirth, Some(d)) => {
                self.on_dbirth(topic, &node, d, &payload, now, &mut out)
            }
            (MessageType::DData, Some(d)) => {
                self.on_data(topic, &node, Some(d), &payload, now, &mut out)
            }
            (MessageType::DDeath, Some(d)) => {
                self.on_ddeath(topic, &node, &d, &payload, now, &mut out)
            }
            // Device types always have a device id (checked by `Topic::parse`); commands returned
            // above.
            _ => {}
        }
        self.check_times(topic, now, &mut out);
        out
    }

    /// Drops samples stamped too far from `now` (a wrong edge node clock, or a replay of old
    /// messages): more than `max_future` ahead, or, unless `is_historical`, more than
    /// `max_past` behind. Counted as [`HostError::AbsurdTimestamp`] errors, one per message.
    fn check_times(&self, topic: &str, now: Timestamp, out: &mut Vec<HostAction>) {
        let latest = now.0.saturating_add(self.max_future_us);
        let earliest = now.0.saturating_sub(self.max_past_us);
        let mut dropped = 0usize;
        let mut example = None;
        out.retain(|a| match a {
            HostAction::Sample(s) if s.ts.0 > latest || (!s.historical && s.ts.0 < earliest) => {
                dropped += 1;
                example.get_or_insert(s.ts);
                false
            }
            _ => true,
        });
        if let Some(ts) = example {
            out.push(HostAction::Error(HostError::AbsurdTimestamp {
                topic: topic.to_owned(),
                samples: dropped,
                ts,
                now,
            }));
        }
    }

    /// What the latest birth declared about the metric behind `path` (also while its node or
    /// device is offline); `None` if no birth declared it.
    pub fn metric_info(&self, path: &TagPath) -> Option<MetricInfo> {
        let addr = self.mapper.address(path)?;
        let node = NodeId {
            group_id: addr.group_id,
            edge_node_id: addr.edge_node_id,
        };
        let state = self.nodes.get(&node)?;
        let scope = match &addr.device_id {
            None => &state.scope,
            Some(d) => state.devices.get(d)?,
        };
        let m = scope.metrics.get(&addr.metric)?;
        Some(MetricInfo {
            writable: is_writable_metric(&addr.metric, m.datatype),
            datatype: m.datatype,
            unit: m.unit.clone(),
            description: m.description.clone(),
            node,
            device_id: addr.device_id,
            name: addr.metric,
        })
    }

    /// Builds the NCMD/DCMD that writes `value` to the metric behind `path`, using the datatype
    /// (and alias, if any) of the current birth. See [`Host::write_command`].
    pub fn command(
        &self,
        path: &TagPath,
        value: &Value,
        now: Timestamp,
    ) -> Result<Publish, WriteError> {
        self.write_command(path, value, now).map(|c| c.publish)
    }

    /// Builds the command that writes `value` to the metric behind `path`: an NCMD for a node
    /// metric, a DCMD for a device metric, the value encoded as the datatype of the current
    /// birth, the metric named by its alias when the birth declared one (3.0), else by its name.
    /// Refused, with nothing to send, when the node or device is offline, no birth declared the
    /// metric, it is a session metric, or the value does not fit the datatype (a fraction into an
    /// integer type, out of range, a string into a number…).
    pub fn write_command(
        &self,
        path: &TagPath,
        value: &Value,
        now: Timestamp,
    ) -> Result<Command, WriteError> {
        let addr = self
            .mapper
            .address(path)
            .ok_or_else(|| WriteError::NotSparkplug { path: path.clone() })?;
        let node_id = NodeId {
            group_id: addr.group_id,
            edge_node_id: addr.edge_node_id,
        };
        let node_name = format!("edge node {}/{}", node_id.group_id, node_id.edge_node_id);
        let scope_name = match &addr.device_id {
            None => node_name.clone(),
            Some(d) => format!("device {d} of {node_name}"),
        };
        let unknown = || WriteError::UnknownMetric {
            path: path.clone(),
            scope: scope_name.clone(),
        };
        let node = self.nodes.get(&node_id).ok_or_else(unknown)?;
        let scope = match &addr.device_id {
            None => &node.scope,
            Some(d) => node.devices.get(d).ok_or_else(unknown)?,
        };
        let state = scope.metrics.get(&addr.metric).ok_or_else(unknown)?;
        if !node.scope.online || !scope.online {
            let scope = if node.scope.online {
                scope_name
            } else {
                node_name
            };
            return Err(WriteError::Offline {
                path: path.clone(),
                scope,
            });
        }
        if is_session_metric(&addr.metric) {
            return Err(WriteError::ReadOnly {
                path: path.clone(),
                metric: addr.metric,
            });
        }
        let mv =
            MetricValue::from_value(state.datatype, value).map_err(|error| WriteError::Value {
                path: path.clone(),
                error,
            })?;
        let ms = millis_from_timestamp(now);
        let metric = Metric {
            // 3.0: with aliases in use, commands carry the alias only.
            name: state.alias.is_none().then(|| addr.metric.clone()),
            alias: state.alias,
            timestamp: Some(ms),
            // Included for pysparkplug, which cannot decode a metric without it.
            datatype: Some(state.datatype.as_u32()),
            value: Some(mv.to_proto()),
            ..Default::default()
        };
        let (mt, device) = match &addr.device_id {
            None => (MessageType::NCmd, None),
            Some(d) => (MessageType::DCmd, Some(d.as_str())),
        };
        let payload = Payload {
            timestamp: Some(ms),
            metrics: vec![metric],
            ..Default::default()
        };
        Ok(Command {
            publish: Publish {
                topic: Topic::edge(&node_id.group_id, mt, &node_id.edge_node_id, device),
                payload: payload.to_bytes(),
                qos: Qos::AtMostOnce,
                retain: false,
            },
            path: path.clone(),
            device_id: addr.device_id,
            node: node_id,
            metric: addr.metric,
            alias: state.alias,
            datatype: state.datatype,
            value: mv,
        })
    }

    fn on_state(
        &mut self,
        topic: &str,
        host_id: &str,
        payload: &[u8],
        now: Timestamp,
        out: &mut Vec<HostAction>,
    ) {
        // Other hosts' STATE is theirs to manage.
        if host_id != self.host_id {
            return;
        }
        let online = serde_json::from_slice::<serde_json::Value>(payload)
            .map_err(|e| e.to_string())
            .and_then(|v| {
                v.get("online")
                    .and_then(serde_json::Value::as_bool)
                    .ok_or_else(|| "no boolean \"online\" key".to_owned())
            });
        match online {
            Ok(true) => {}
            // Our own death certificate (e.g. the will of an older connection, delivered late):
            // we are alive, so say so again, or edge nodes would walk away.
            Ok(false) => out.push(HostAction::Publish(self.online_message(now))),
            Err(why) => out.push(HostAction::Error(HostError::BadState {
                topic: topic.to_owned(),
                why,
            })),
        }
    }

    fn on_nbirth(
        &mut self,
        topic: &str,
        node_id: NodeId,
        p: &Payload,
        now: Timestamp,
        out: &mut Vec<HostAction>,
    ) {
        let existing = self.nodes.get(&node_id);
        if existing.is_none() && self.nodes.len() >= self.max_nodes {
            out.push(limit(topic, "the number of edge nodes", self.max_nodes));
            return;
        }
        let device_metrics = existing.map_or(0, NodeState::device_metric_count);
        if p.metrics.len().saturating_add(device_metrics) > self.max_metrics_per_node {
            out.push(limit(
                topic,
                "the number of metrics",
                self.max_metrics_per_node,
            ));
            return;
        }
        let mut births = Vec::new();
        let scope = self.birth_scope(topic, &node_id, None, p, now, &mut births);
        let node = self.nodes.entry(node_id.clone()).or_default();
        let keep: Touched = scope.metrics.keys().map(|k| (None, k.clone())).collect();
        mark_scope(&mut node.scope, None, STALE, now, &keep, out);
        for (id, dev) in &mut node.devices {
            mark_scope(dev, Some(id), STALE, now, &Touched::new(), out);
            if std::mem::take(&mut dev.online) {
                out.push(HostAction::Status {
                    node: node_id.clone(),
                    device_id: Some(id.clone()),
                    online: false,
                    ts: now,
                });
            }
        }
        out.append(&mut births);
        node.scope = scope;
        node.gap = false;
        node.bd_seq = bd_seq_of(p);
        node.last_seq = p.seq.and_then(|s| u8::try_from(s).ok());
        node.rebirth_at = None;
        out.push(HostAction::Status {
            node: node_id,
            device_id: None,
            online: true,
            ts: payload_ts(p).unwrap_or(now),
        });
    }

    fn on_ndeath(
        &mut self,
        node_id: &NodeId,
        p: &Payload,
        now: Timestamp,
        out: &mut Vec<HostAction>,
    ) {
        let Some(node) = self.nodes.get_mut(node_id) else {
            return;
        };
        if !node.scope.online {
            return;
        }
        if let (Some(born), Some(dead)) = (node.bd_seq, bd_seq_of(p)) {
            if born != dead {
                // The will of an older connection: the current session is alive.
                return;
            }
        }
        node.scope.online = false;
        node.last_seq = None;
        node.rebirth_at = None;
        let none = Touched::new();
        mark_scope(&mut node.scope, None, COMM_FAILURE, now, &none, out);
        for (id, dev) in &mut node.devices {
            mark_scope(dev, Some(id), COMM_FAILURE, now, &none, out);
            if std::mem::take(&mut dev.online) {
                out.push(HostAction::Status {
                    node: node_id.clone(),
                    device_id: Some(id.clone()),
                    online: false,
                    ts: now,
                });
            }
        }
        out.push(HostAction::Status {
            node: node_id.clone(),
            device_id: None,
            online: false,
            ts: now,
        });
    }

    fn on_dbirth(
        &mut self,
        topic: &str,
        node_id: &NodeId,
        device_id: String,
        p: &Payload,
        now: Timestamp,
        out: &mut Vec<HostAction>,
    ) {
        let Some(node) = self.nodes.get_mut(node_id).filter(|n| n.scope.online) else {
            out.push(HostAction::Error(HostError::NotBorn {
                topic: topic.to_owned(),
            }));
            self.request_rebirth(node_id, now, out);
            return;
        };
        let gap = check_seq(node, p.seq, topic);
        let is_new = !node.devices.contains_key(&device_id);
        if is_new && node.devices.len() >= self.max_devices_per_node {
            out.push(limit(
                topic,
                "the number of devices",
                self.max_devices_per_node,
            ));
            return;
        }
        // The metrics this DBIRTH replaces do not count.
        let others = (node.scope.metrics.len() + node.device_metric_count())
            .saturating_sub(node.devices.get(&device_id).map_or(0, |d| d.metrics.len()));
        if p.metrics.len().saturating_add(others) > self.max_metrics_per_node {
            out.push(limit(
                topic,
                "the number of metrics",
                self.max_metrics_per_node,
            ));
            return;
        }
        let mut births = Vec::new();
        let scope = self.birth_scope(topic, node_id, Some(&device_id), p, now, &mut births);
        let touched: Touched = scope
            .metrics
            .keys()
            .map(|k| (Some(device_id.clone()), k.clone()))
            .collect();
        let Some(node) = self.nodes.get_mut(node_id) else {
            return;
        };
        if node.gap {
            // A device born between a gap and the node's rebirth is no more trusted than data.
            for b in &mut births {
                if let HostAction::Sample(s) = b {
                    if s.quality == Quality::GOOD {
                        s.quality = AFTER_GAP;
                    }
                }
            }
        }
        let old = node.devices.entry(device_id.clone()).or_default();
        mark_scope(old, Some(&device_id), STALE, now, &touched, out);
        *old = scope;
        out.append(&mut births);
        out.push(HostAction::Status {
            node: node_id.clone(),
            device_id: Some(device_id),
            online: true,
            ts: payload_ts(p).unwrap_or(now),
        });
        if let Err(e) = gap {
            out.push(HostAction::Error(e));
            self.stale_and_rebirth(node_id, &touched, now, out);
        }
    }

    fn on_ddeath(
        &mut self,
        topic: &str,
        node_id: &NodeId,
        device_id: &str,
        p: &Payload,
        now: Timestamp,
        out: &mut Vec<HostAction>,
    ) {
        let Some(node) = self.nodes.get_mut(node_id).filter(|n| n.scope.online) else {
            return;
        };
        let gap = check_seq(node, p.seq, topic);
        let ts = payload_ts(p).unwrap_or(now);
        let mut touched = Touched::new();
        if let Some(dev) = node.devices.get_mut(device_id).filter(|d| d.online) {
            dev.online = false;
            mark_scope(dev, Some(device_id), COMM_FAILURE, ts, &Touched::new(), out);
            touched.extend(
                dev.metrics
                    .keys()
                    .map(|k| (Some(device_id.to_owned()), k.clone())),
            );
            out.push(HostAction::Status {
                node: node_id.clone(),
                device_id: Some(device_id.to_owned()),
                online: false,
                ts,
            });
        }
        if let Err(e) = gap {
            out.push(HostAction::Error(e));
            self.stale_and_rebirth(node_id, &touched, now, out);
        }
    }

    fn on_data(
        &mut self,
        topic: &str,
        node_id: &NodeId,
        device_id: Option<String>,
        p: &Payload,
        now: Timestamp,
        out: &mut Vec<HostAction>,
    ) {
        let Some(node) = self.nodes.get_mut(node_id).filter(|n| n.scope.online) else {
            out.push(HostAction::Error(HostError::NotBorn {
                topic: topic.to_owned(),
            }));
            self.request_rebirth(node_id, now, out);
            return;
        };
        let mut rebirth = false;
        if let Err(e) = check_seq(node, p.seq, topic) {
            out.push(HostAction::Error(e));
            rebirth = true;
        }
        // Between a gap and the rebirth nothing says the values are current or the node's own
        // (lost messages, or a second publisher with its own seq): Uncertain, not Good.
        let quality = if node.gap { AFTER_GAP } else { Quality::GOOD };
        let scope = match &device_id {
            None => Some(&mut node.scope),
            Some(d) => node.devices.get_mut(d).filter(|s| s.online),
        };
        let mut touched = Touched::new();
        match scope {
            None => {
                out.push(HostAction::Error(HostError::NotBorn {
                    topic: topic.to_owned(),
                }));
                rebirth = true;
            }
            Some(scope) => {
                let base_ts = payload_ts(p).unwrap_or(now);
                for m in &p.metrics {
                    match data_metric(scope, topic, m, base_ts, quality, out) {
                        Ok(Some(name)) => {
                            touched.insert((device_id.clone(), name));
                        }
                        Ok(None) => {}
                        Err(()) => rebirth = true,
                    }
                }
            }
        }
        if rebirth {
            self.stale_and_rebirth(node_id, &touched, now, out);
        }
    }

    /// Marks the Good tags of an online node not in `touched` Uncertain(Stale) and requests a
    /// rebirth (rate-limited).
    fn stale_and_rebirth(
        &mut self,
        node_id: &NodeId,
        touched: &Touched,
        now: Timestamp,
        out: &mut Vec<HostAction>,
    ) {
        if let Some(node) = self.nodes.get_mut(node_id) {
            mark_scope(&mut node.scope, None, STALE, now, touched, out);
            for (id, dev) in &mut node.devices {
                mark_scope(dev, Some(id), STALE, now, touched, out);
            }
        }
        self.request_rebirth(node_id, now, out);
    }

    fn request_rebirth(&mut self, node_id: &NodeId, now: Timestamp, out: &mut Vec<HostAction>) {
        if !self.nodes.contains_key(node_id) && self.nodes.len() >= self.max_nodes {
            // No room to remember the request; asking anyway would flood the node.
            return;
        }
        let node = self.nodes.entry(node_id.clone()).or_default();
        if let Some(at) = node.rebirth_at {
            let elapsed = now.as_micros().saturating_sub(at.as_micros());
            // A clock that went backwards counts as "long enough".
            if (0..self.rebirth_retry_us).contains(&elapsed) {
                return;
            }
        }
        node.rebirth_at = Some(now);
        out.push(HostAction::Publish(Publish {
            topic: Topic::edge(
                &node_id.group_id,
                MessageType::NCmd,
                &node_id.edge_node_id,
                None,
            ),
            payload: rebirth_payload(now).to_bytes(),
            qos: Qos::AtMostOnce,
            retain: false,
        }));
    }

    /// The scope a birth declares; its samples go to `births`.
    fn birth_scope(
        &self,
        topic: &str,
        node_id: &NodeId,
        device_id: Option<&str>,
        p: &Payload,
        now: Timestamp,
        births: &mut Vec<HostAction>,
    ) -> Scope {
        let base_ts = payload_ts(p).unwrap_or(now);
        let mut scope = Scope {
            online: true,
            ..Scope::default()
        };
        for m in &p.metrics {
            let Some(name) = m.name.clone() else {
                births.push(HostAction::Error(HostError::AnonymousMetric {
                    topic: topic.to_owned(),
                }));
                continue;
            };
            let datatype = match m.datatype {
                None => Err(ValueError::MissingDataType),
                Some(raw) => DataType::from_u32(raw).ok_or(ValueError::UnknownDataType(raw)),
            };
            // A metric with a bad datatype is still tracked (as Unknown), so its data gives
            // Bad(ConfigError) samples instead of endless rebirth requests.
            let datatype = datatype.unwrap_or_else(|error| {
                births.push(HostAction::Error(HostError::BadMetric {
                    topic: topic.to_owned(),
                    metric: name.clone(),
                    error,
                }));
                DataType::Unknown
            });
            let path =
                match self
                    .mapper
                    .path(&node_id.group_id, &node_id.edge_node_id, device_id, &name)
                {
                    Ok(p) => Some(p),
                    Err(error) => {
                        births.push(HostAction::Error(HostError::Unmappable {
                            topic: topic.to_owned(),
                            metric: name.clone(),
                            error,
                        }));
                        None
                    }
                };
            if let Some(alias) = m.alias {
                if let Some(previous) = scope.aliases.insert(alias, name.clone()) {
                    if previous != name {
                        births.push(HostAction::Error(HostError::DuplicateAlias {
                            topic: topic.to_owned(),
                            alias,
                        }));
                    }
                }
            }
            let mut state = MetricState {
                datatype,
                alias: m.alias,
                unit: string_property(m.properties.as_ref(), &UNIT_KEYS),
                description: string_property(m.properties.as_ref(), &DESCRIPTION_KEYS),
                path,
                last: None,
            };
            if datatype != DataType::Unknown {
                apply_value(&mut state, topic, &name, m, base_ts, Quality::GOOD, births);
            }
            scope.metrics.insert(name, state);
        }
        scope
    }
}

fn limit(topic: &str, what: &'static str, limit: usize) -> HostAction {
    HostAction::Error(HostError::Limit {
        topic: topic.to_owned(),
        what,
        limit,
    })
}

fn payload_ts(p: &Payload) -> Option<Timestamp> {
    p.timestamp.and_then(timestamp_from_millis)
}

fn bd_seq_of(p: &Payload) -> Option<u64> {
    p.metrics
        .iter()
        .find(|m| m.name.as_deref() == Some(BD_SEQ))
        .and_then(|m| match m.value {
            Some(metric::Value::IntValue(v)) => Some(u64::from(v)),
            Some(metric::Value::LongValue(v)) => Some(v),
            _ => None,
        })
}

/// Checks and records the seq of a non-NBIRTH message.
fn check_seq(node: &mut NodeState, seq: Option<u64>, topic: &str) -> Result<(), HostError> {
    let expected = node.last_seq.map(|s| s.wrapping_add(1));
    let got = seq.and_then(|s| u8::try_from(s).ok());
    node.last_seq = got;
    match (expected, got) {
        (Some(e), Some(g)) if e == g => Ok(()),
        // The birth carried no usable seq: nothing to compare with.
        (None, Some(_)) => Ok(()),
        _ => {
            node.gap = true;
            Err(HostError::SeqGap {
                topic: topic.to_owned(),
                expected,
                got: seq,
            })
        }
    }
}

/// Applies one NDATA/DDATA metric. `Ok(Some(name))` when it refreshed a metric, `Ok(None)` when
/// it was skipped, `Err(())` when only a rebirth can resolve it.
fn data_metric(
    scope: &mut Scope,
    topic: &str,
    m: &Metric,
    base_ts: Timestamp,
    quality: Quality,
    out: &mut Vec<HostAction>,
) -> Result<Option<String>, ()> {
    let name = match (&m.name, m.alias) {
        (Some(n), _) => {
            if !scope.metrics.contains_key(n) {
                out.push(HostAction::Error(HostError::UnknownMetric {
                    topic: topic.to_owned(),
                    name: n.clone(),
                }));
                return Err(());
            }
            n.clone()
        }
        (None, Some(alias)) => match scope.aliases.get(&alias) {
            Some(n) => n.clone(),
            None => {
                out.push(HostAction::Error(HostError::UnknownAlias {
                    topic: topic.to_owned(),
                    alias,
                }));
                return Err(());
            }
        },
        (None, None) => {
            out.push(HostAction::Error(HostError::AnonymousMetric {
                topic: topic.to_owned(),
            }));
            return Ok(None);
        }
    };
    let Some(state) = scope.metrics.get_mut(&name) else {
        return Err(());
    };
    apply_value(state, topic, &name, m, base_ts, quality, out);
    Ok(Some(name))
}

/// Decodes a metric's value with its birth datatype and records the sample, with `quality`
/// (Good, or Uncertain after a seq gap) when it decodes.
fn apply_value(
    state: &mut MetricState,
    topic: &str,
    name: &str,
    m: &Metric,
    base_ts: Timestamp,
    quality: Quality,
    out: &mut Vec<HostAction>,
) {
    let ts = m
        .timestamp
        .and_then(timestamp_from_millis)
        .unwrap_or(base_ts);
    let historical = m.is_historical == Some(true);
    let decoded = decode_typed(state.datatype, m).and_then(|v| v.map(|v| v.to_value()).transpose());
    match decoded {
        Ok(Some(Some(value))) => record(state, value, quality, ts, historical, out),
        // Bytes, File, a template definition: no tag value.
        Ok(Some(None)) => {}
        Ok(None) => record(state, Value::Null, NULL_QUALITY, ts, historical, out),
        Err(error) => {
            out.push(HostAction::Error(HostError::BadMetric {
                topic: topic.to_owned(),
                metric: name.to_owned(),
                error,
            }));
            let last = state.last.as_ref().map_or(Value::Null, |(v, _)| v.clone());
            record(state, last, BAD_VALUE, ts, historical, out);
        }
    }
}

fn record(
    state: &mut MetricState,
    value: Value,
    quality: Quality,
    ts: Timestamp,
    historical: bool,
    out: &mut Vec<HostAction>,
) {
    if let Some(path) = &state.path {
        out.push(HostAction::Sample(TagSample {
            path: path.clone(),
            value: value.clone(),
            quality,
            ts,
            historical,
        }));
    }
    if !historical {
        state.last = Some((value, quality));
    }
}

/// Re-records every tag of `scope` not in `skip` with `quality` and its last value: Uncertain
/// only downgrades Good tags; Bad applies to any tag not already in that exact state.
fn mark_scope(
    scope: &mut Scope,
    device_id: Option<&str>,
    quality: Quality,
    ts: Timestamp,
    skip: &Touched,
    out: &mut Vec<HostAction>,
) {
    for (name, state) in &mut scope.metrics {
        let Some((value, current)) = &state.last else {
            continue;
        };
        let applies = match quality.level {
            ironplant_core::QualityLevel::Uncertain => current.is_good(),
            _ => *current != quality,
        };
        if !applies || skip.contains(&(device_id.map(str::to_owned), name.clone())) {
            continue;
        }
        let value = value.clone();
        record(state, value, quality, ts, false, out);
    }
}
