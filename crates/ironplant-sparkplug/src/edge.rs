//! A Sparkplug edge node as a pure message builder: it keeps the bdSeq, the seq counter, the
//! declared metrics (names, aliases, datatypes, current values) and devices, and produces the
//! NBIRTH/DBIRTH/NDATA/DDATA/DDEATH/NDEATH messages to publish. Used by the simulator and tests.
//!
//! - [`EdgeNode::will`] is the NDEATH to register in the MQTT CONNECT (QoS 1, not retained); its
//!   bdSeq is the one the next [`EdgeNode::birth`] carries. Call [`EdgeNode::reconnect`] before each
//!   new MQTT connection to move to the next bdSeq (mod 256).
//! - [`EdgeNode::birth`] restarts seq at 0 (NBIRTH) and gives every DBIRTH, NDATA, DDATA and
//!   DDEATH the next seq, wrapping 255 → 0.
//! - With aliases on (the default), births declare an alias for every metric except
//!   `Node Control/Rebirth` (the spec forbids one there) and data carries aliases only.
//! - Data metrics carry their datatype: the specification says SHOULD NOT, but pysparkplug
//!   cannot decode a metric without one.

use ironplant_core::Timestamp;

use crate::datatype::DataType;
use crate::proto::payload::{metric, property_value, PropertySet, PropertyValue};
use crate::proto::{Metric, Payload};
use crate::topic::{validate_id, Element, MessageType, Topic, TopicError};
use crate::value::MetricValue;
use crate::{is_rebirth_request, millis_from_timestamp, Publish, Qos, BD_SEQ, REBIRTH};

/// Misuse of an [`EdgeNode`] (these come from the caller, not the network).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EdgeError {
    #[error("{0}")]
    Id(#[from] TopicError),
    #[error("metric {0:?} is already declared")]
    DuplicateMetric(String),
    #[error("metric {0:?} is reserved: the edge node manages it")]
    ReservedMetric(String),
    #[error("no metric {0:?} is declared")]
    UnknownMetric(String),
    #[error("device {0:?} is already declared")]
    DuplicateDevice(String),
    #[error("no device {0:?} is declared")]
    UnknownDevice(String),
    #[error("metric {name:?} is declared as {declared} but the update is {given}")]
    TypeMismatch {
        name: String,
        declared: DataType,
        given: DataType,
    },
}

#[derive(Debug, Clone)]
struct EdgeMetric {
    name: String,
    alias: u64,
    value: MetricValue,
    /// Sent in births as the `engUnit` property.
    unit: Option<String>,
}

#[derive(Debug, Clone)]
struct EdgeDevice {
    id: String,
    metrics: Vec<EdgeMetric>,
}

/// A Sparkplug B edge node (see the module docs).
#[derive(Debug, Clone)]
pub struct EdgeNode {
    group_id: String,
    edge_node_id: String,
    bd_seq: u8,
    /// The seq of the next message.
    seq: u8,
    aliases: bool,
    next_alias: u64,
    metrics: Vec<EdgeMetric>,
    devices: Vec<EdgeDevice>,
}

impl EdgeNode {
    /// An edge node with bdSeq 0 and aliases on.
    pub fn new(group_id: &str, edge_node_id: &str) -> Result<EdgeNode, EdgeError> {
        validate_id(Element::GroupId, group_id)?;
        validate_id(Element::EdgeNodeId, edge_node_id)?;
        Ok(EdgeNode {
            group_id: group_id.to_owned(),
            edge_node_id: edge_node_id.to_owned(),
            bd_seq: 0,
            seq: 0,
            aliases: true,
            next_alias: 1,
            metrics: Vec::new(),
            devices: Vec::new(),
        })
    }

    /// Starts from another bdSeq (e.g. one persisted across restarts).
    pub fn with_bd_seq(mut self, bd_seq: u8) -> EdgeNode {
        self.bd_seq = bd_seq;
        self
    }

    /// Whether births declare aliases and data uses them (default: on).
    pub fn with_aliases(mut self, on: bool) -> EdgeNode {
        self.aliases = on;
        self
    }

    pub fn bd_seq(&self) -> u8 {
        self.bd_seq
    }

    /// The seq the next message will carry.
    pub fn next_seq(&self) -> u8 {
        self.seq
    }

    /// The alias declared for a node metric (`device_id: None`) or device metric.
    pub fn alias(&self, device_id: Option<&str>, name: &str) -> Option<u64> {
        let list = match device_id {
            None => &self.metrics,
            Some(d) => &self.devices.iter().find(|x| x.id == d)?.metrics,
        };
        list.iter().find(|m| m.name == name).map(|m| m.alias)
    }

    /// The current value of a node metric (`device_id: None`) or device metric.
    pub fn value(&self, device_id: Option<&str>, name: &str) -> Option<&MetricValue> {
        let list = match device_id {
            None => &self.metrics,
            Some(d) => &self.devices.iter().find(|x| x.id == d)?.metrics,
        };
        list.iter().find(|m| m.name == name).map(|m| &m.value)
    }

    /// Declares a node metric with its initial value (its type is the metric's datatype).
    pub fn add_metric(&mut self, name: &str, value: MetricValue) -> Result<(), EdgeError> {
        if name == BD_SEQ || name == REBIRTH {
            return Err(EdgeError::ReservedMetric(name.to_owned()));
        }
        if self.metrics.iter().any(|m| m.name == name) {
            return Err(EdgeError::DuplicateMetric(name.to_owned()));
        }
        let alias = self.take_alias();
        self.metrics.push(EdgeMetric {
            name: name.to_owned(),
            alias,
            value,
            unit: None,
        });
        Ok(())
    }

    pub fn add_device(&mut self, device_id: &str) -> Result<(), EdgeError> {
        validate_id(Element::DeviceId, device_id)?;
        if self.devices.iter().any(|d| d.id == device_id) {
            return Err(EdgeError::DuplicateDevice(device_id.to_owned()));
        }
        self.devices.push(EdgeDevice {
            id: device_id.to_owned(),
            metrics: Vec::new(),
        });
        Ok(())
    }

    /// Declares a device metric with its initial value.
    pub fn add_device_metric(
        &mut self,
        device_id: &str,
        name: &str,
        value: MetricValue,
    ) -> Result<(), EdgeError> {
        let alias = self.next_alias;
        let dev = self.device_mut(device_id)?;
        if dev.metrics.iter().any(|m| m.name == name) {
            return Err(EdgeError::DuplicateMetric(name.to_owned()));
        }
        dev.metrics.push(EdgeMetric {
            name: name.to_owned(),
            alias,
            value,
            unit: None,
        });
        self.next_alias += 1;
        Ok(())
    }

    /// Gives a declared metric an engineering unit, sent in births as the `engUnit` property
    /// (the key Ignition uses; Sparkplug 3.0 standardises none).
    pub fn set_unit(
        &mut self,
        device_id: Option<&str>,
        name: &str,
        unit: &str,
    ) -> Result<(), EdgeError> {
        let list = match device_id {
            None => &mut self.metrics,
            Some(d) => &mut self.device_mut(d)?.metrics,
        };
        let m = list
            .iter_mut()
            .find(|m| m.name == name)
            .ok_or_else(|| EdgeError::UnknownMetric(name.to_owned()))?;
        m.unit = Some(unit.to_owned());
        Ok(())
    }

    /// The NDEATH to register as the will of the next MQTT CONNECT.
    pub fn will(&self, now: Timestamp) -> Publish {
        self.death(now)
    }

    /// The NDEATH to publish before an intentional disconnect (same bdSeq as the will).
    pub fn death(&self, now: Timestamp) -> Publish {
        let payload = Payload {
            timestamp: Some(millis_from_timestamp(now)),
            metrics: vec![self.bd_seq_metric(now)],
            ..Default::default()
        };
        Publish {
            topic: self.topic(MessageType::NDeath, None),
            payload: payload.to_bytes(),
            qos: Qos::AtLeastOnce,
            retain: false,
        }
    }

    /// Moves to the next bdSeq; call before each new MQTT connection (then use [`EdgeNode::will`]).
    pub fn reconnect(&mut self) {
        self.bd_seq = self.bd_seq.wrapping_add(1);
    }

    /// The birth sequence: NBIRTH (seq 0, bdSeq, `Node Control/Rebirth` = false, every node
    /// metric) then one DBIRTH per device.
    pub fn birth(&mut self, now: Timestamp) -> Vec<Publish> {
        self.seq = 0;
        let ms = millis_from_timestamp(now);
        let mut metrics = vec![
            self.bd_seq_metric(now),
            Metric {
                name: Some(REBIRTH.to_owned()),
                timestamp: Some(ms),
                datatype: Some(DataType::Boolean.as_u32()),
                value: Some(metric::Value::BooleanValue(false)),
                ..Default::default()
            },
        ];
        metrics.extend(
            self.metrics
                .iter()
                .map(|m| birth_metric(m, self.aliases, ms)),
        );
        let mut out = vec![self.publish(MessageType::NBirth, None, metrics, now)];
        let births: Vec<(String, Vec<Metric>)> = self
            .devices
            .iter()
            .map(|d| {
                let ms_metrics = d
                    .metrics
                    .iter()
                    .map(|m| birth_metric(m, self.aliases, ms))
                    .collect();
                (d.id.clone(), ms_metrics)
            })
            .collect();
        for (id, metrics) in births {
            out.push(self.publish(MessageType::DBirth, Some(&id), metrics, now));
        }
        out
    }

    /// A DBIRTH for one device (e.g. when it comes back after a DDEATH).
    pub fn device_birth(&mut self, device_id: &str, now: Timestamp) -> Result<Publish, EdgeError> {
        let ms = millis_from_timestamp(now);
        let aliases = self.aliases;
        let metrics = self
            .device_mut(device_id)?
            .metrics
            .iter()
            .map(|m| birth_metric(m, aliases, ms))
            .collect();
        Ok(self.publish(MessageType::DBirth, Some(device_id), metrics, now))
    }

    /// An NDATA with new values for node metrics.
    pub fn node_data(
        &mut self,
        updates: &[(&str, MetricValue)],
        now: Timestamp,
    ) -> Result<Publish, EdgeError> {
        let ms = millis_from_timestamp(now);
        let aliases = self.aliases;
        let metrics = apply_updates(&mut self.metrics, updates, aliases, ms)?;
        Ok(self.publish(MessageType::NData, None, metrics, now))
    }

    /// A DDATA with new values for a device's metrics.
    pub fn device_data(
        &mut self,
        device_id: &str,
        updates: &[(&str, MetricValue)],
        now: Timestamp,
    ) -> Result<Publish, EdgeError> {
        let ms = millis_from_timestamp(now);
        let aliases = self.aliases;
        let dev = self.device_mut(device_id)?;
        let metrics = apply_updates(&mut dev.metrics, updates, aliases, ms)?;
        Ok(self.publish(MessageType::DData, Some(device_id), metrics, now))
    }

    /// A DDEATH: the device is no longer reachable.
    pub fn device_death(&mut self, device_id: &str, now: Timestamp) -> Result<Publish, EdgeError> {
        self.device_mut(device_id)?;
        Ok(self.publish(MessageType::DDeath, Some(device_id), Vec::new(), now))
    }

    /// Whether an incoming message is a rebirth request for this node (answer with
    /// [`EdgeNode::birth`]). Malformed payloads are not requests.
    pub fn is_rebirth_request(&self, topic: &str, payload: &[u8]) -> bool {
        topic == self.topic(MessageType::NCmd, None)
            && Payload::decode_bytes(payload).is_ok_and(|p| is_rebirth_request(&p))
    }

    fn take_alias(&mut self) -> u64 {
        let a = self.next_alias;
        self.next_alias += 1;
        a
    }

    fn device_mut(&mut self, device_id: &str) -> Result<&mut EdgeDevice, EdgeError> {
        self.devices
            .iter_mut()
            .find(|d| d.id == device_id)
            .ok_or_else(|| EdgeError::UnknownDevice(device_id.to_owned()))
    }

    fn topic(&self, mt: MessageType, device_id: Option<&str>) -> String {
        Topic::edge(&self.group_id, mt, &self.edge_node_id, device_id)
    }

    fn bd_seq_metric(&self, now: Timestamp) -> Metric {
        Metric {
            name: Some(BD_SEQ.to_owned()),
            timestamp: Some(millis_from_timestamp(now)),
            datatype: Some(DataType::Int64.as_u32()),
            value: Some(metric::Value::LongValue(u64::from(self.bd_seq))),
            ..Default::default()
        }
    }

    /// A sequenced message (everything but NDEATH).
    fn publish(
        &mut self,
        mt: MessageType,
        device_id: Option<&str>,
        metrics: Vec<Metric>,
        now: Timestamp,
    ) -> Publish {
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        let payload = Payload {
            timestamp: Some(millis_from_timestamp(now)),
            metrics,
            seq: Some(u64::from(seq)),
            ..Default::default()
        };
        Publish {
            topic: self.topic(mt, device_id),
            payload: payload.to_bytes(),
            qos: Qos::AtMostOnce,
            retain: false,
        }
    }
}

fn birth_metric(m: &EdgeMetric, aliases: bool, ms: u64) -> Metric {
    Metric {
        name: Some(m.name.clone()),
        alias: aliases.then_some(m.alias),
        timestamp: Some(ms),
        datatype: Some(m.value.datatype().as_u32()),
        value: Some(m.value.to_proto()),
        properties: m.unit.as_ref().map(|u| PropertySet {
            keys: vec!["engUnit".to_owned()],
            values: vec![PropertyValue {
                r#type: Some(DataType::String.as_u32()),
                is_null: None,
                value: Some(property_value::Value::StringValue(u.clone())),
            }],
        }),
        ..Default::default()
    }
}

/// Checks every update before applying any, so a rejected update leaves the values unchanged.
fn apply_updates(
    metrics: &mut [EdgeMetric],
    updates: &[(&str, MetricValue)],
    aliases: bool,
    ms: u64,
) -> Result<Vec<Metric>, EdgeError> {
    for (name, value) in updates {
        let m = metrics
            .iter()
            .find(|m| m.name == *name)
            .ok_or_else(|| EdgeError::UnknownMetric((*name).to_owned()))?;
        if m.value.datatype() != value.datatype() {
            return Err(EdgeError::TypeMismatch {
                name: (*name).to_owned(),
                declared: m.value.datatype(),
                given: value.datatype(),
            });
        }
    }
    let mut out = Vec::with_capacity(updates.len());
    for (name, value) in updates {
        if let Some(m) = metrics.iter_mut().find(|m| m.name == *name) {
            m.value = value.clone();
            out.push(Metric {
                name: (!aliases).then(|| m.name.clone()),
                alias: aliases.then_some(m.alias),
                timestamp: Some(ms),
                datatype: Some(value.datatype().as_u32()),
                value: Some(value.to_proto()),
                ..Default::default()
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rebirth_payload;

    const NOW: Timestamp = Timestamp(1_700_000_000_000_000);

    fn decode(p: &Publish) -> Payload {
        Payload::decode_bytes(&p.payload).expect("valid payload")
    }

    fn node() -> EdgeNode {
        let mut e = EdgeNode::new("g", "n").expect("valid").with_bd_seq(255);
        e.add_metric("Temp", MetricValue::Float(20.0)).expect("new");
        e.add_device("d1").expect("new");
        e.add_device_metric("d1", "On", MetricValue::Boolean(false))
            .expect("new");
        e
    }

    #[test]
    fn birth_sequence_has_seq_bdseq_rebirth_and_aliases() {
        let mut e = node();
        let msgs = e.birth(NOW);
        let topics: Vec<&str> = msgs.iter().map(|m| m.topic.as_str()).collect();
        assert_eq!(topics, ["spBv1.0/g/NBIRTH/n", "spBv1.0/g/DBIRTH/n/d1"]);
        assert!(msgs.iter().all(|m| m.qos == Qos::AtMostOnce && !m.retain));
        let nbirth = decode(&msgs[0]);
        assert_eq!(nbirth.seq, Some(0));
        assert_eq!(nbirth.timestamp, Some(1_700_000_000_000));
        let bd = &nbirth.metrics[0];
        assert_eq!(bd.name.as_deref(), Some(BD_SEQ));
        assert_eq!(bd.datatype, Some(DataType::Int64.as_u32()));
        assert_eq!(bd.value, Some(metric::Value::LongValue(255)));
        let rebirth = &nbirth.metrics[1];
        assert_eq!(rebirth.name.as_deref(), Some(REBIRTH));
        assert_eq!(rebirth.alias, None, "the spec forbids an alias here");
        assert_eq!(rebirth.value, Some(metric::Value::BooleanValue(false)));
        let temp = &nbirth.metrics[2];
        assert_eq!(temp.name.as_deref(), Some("Temp"));
        assert_eq!(temp.alias, Some(1));
        assert_eq!(temp.datatype, Some(DataType::Float.as_u32()));
        let dbirth = decode(&msgs[1]);
        assert_eq!(dbirth.seq, Some(1));
        assert_eq!(dbirth.metrics[0].alias, Some(2));
        assert_eq!(e.next_seq(), 2);
    }

    #[test]
    fn seq_wraps_and_bdseq_moves_per_connection() {
        let mut e = node();
        e.birth(NOW);
        let mut seqs = Vec::new();
        for _ in 0..300 {
            let m = e
                .node_data(&[("Temp", MetricValue::Float(1.0))], NOW)
                .expect("declared");
            seqs.push(decode(&m).seq.expect("sequenced"));
        }
        assert_eq!(seqs[253], 255);
        assert_eq!(seqs[254], 0);
        assert!(seqs.windows(2).all(|w| w[1] == (w[0] + 1) % 256));
        // NDEATH: no seq, QoS 1, not retained, the session's bdSeq.
        let will = e.will(NOW);
        assert_eq!(will.topic, "spBv1.0/g/NDEATH/n");
        assert_eq!((will.qos, will.retain), (Qos::AtLeastOnce, false));
        let p = decode(&will);
        assert_eq!(p.seq, None);
        assert_eq!(p.metrics[0].value, Some(metric::Value::LongValue(255)));
        e.reconnect();
        assert_eq!(e.bd_seq(), 0);
        let p = decode(&e.will(NOW));
        assert_eq!(p.metrics[0].value, Some(metric::Value::LongValue(0)));
        // A new birth restarts seq at 0.
        assert_eq!(decode(&e.birth(NOW)[0]).seq, Some(0));
        let dd = e.device_death("d1", NOW).expect("declared");
        assert_eq!(dd.topic, "spBv1.0/g/DDEATH/n/d1");
        assert_eq!(decode(&dd).seq, Some(2));
    }

    #[test]
    fn data_uses_aliases_and_rejects_misuse_without_changing_state() {
        let mut e = node();
        e.birth(NOW);
        let m = e
            .device_data("d1", &[("On", MetricValue::Boolean(true))], NOW)
            .expect("declared");
        let p = decode(&m);
        assert_eq!(p.metrics[0].name, None);
        assert_eq!(p.metrics[0].alias, Some(2));
        assert_eq!(p.metrics[0].datatype, Some(DataType::Boolean.as_u32()));
        let seq = e.next_seq();
        assert_eq!(
            e.node_data(
                &[
                    ("Temp", MetricValue::Float(5.0)),
                    ("Temp", MetricValue::Double(5.0))
                ],
                NOW
            ),
            Err(EdgeError::TypeMismatch {
                name: "Temp".into(),
                declared: DataType::Float,
                given: DataType::Double
            })
        );
        assert_eq!(e.next_seq(), seq, "a rejected update sends nothing");
        let birth = decode(&e.birth(NOW)[0]);
        assert_eq!(
            birth.metrics[2].value,
            Some(metric::Value::FloatValue(20.0)),
            "a rejected update changes nothing"
        );
        assert_eq!(
            e.node_data(&[("Nope", MetricValue::Float(1.0))], NOW),
            Err(EdgeError::UnknownMetric("Nope".into()))
        );
        assert_eq!(
            e.device_data("d9", &[], NOW),
            Err(EdgeError::UnknownDevice("d9".into()))
        );
        assert_eq!(
            e.add_metric(BD_SEQ, MetricValue::Int64(0)),
            Err(EdgeError::ReservedMetric(BD_SEQ.into()))
        );
        assert_eq!(
            e.add_metric("Temp", MetricValue::Int64(0)),
            Err(EdgeError::DuplicateMetric("Temp".into()))
        );
        assert_eq!(
            e.add_device("d1"),
            Err(EdgeError::DuplicateDevice("d1".into()))
        );
        assert!(matches!(e.add_device("a/b"), Err(EdgeError::Id(_))));
        assert!(EdgeNode::new("g", "").is_err());

        let mut plain = node().with_aliases(false);
        plain.birth(NOW);
        let p = decode(
            &plain
                .node_data(&[("Temp", MetricValue::Float(2.0))], NOW)
                .expect("declared"),
        );
        assert_eq!(p.metrics[0].name.as_deref(), Some("Temp"));
        assert_eq!(p.metrics[0].alias, None);
    }

    #[test]
    fn recognises_rebirth_requests() {
        let e = node();
        let req = rebirth_payload(NOW).to_bytes();
        assert!(e.is_rebirth_request("spBv1.0/g/NCMD/n", &req));
        assert!(!e.is_rebirth_request("spBv1.0/g/NCMD/other", &req));
        assert!(!e.is_rebirth_request("spBv1.0/g/NCMD/n", &[0xff, 0x01]));
        let mut no = rebirth_payload(NOW);
        no.metrics[0].value = Some(metric::Value::BooleanValue(false));
        assert!(!e.is_rebirth_request("spBv1.0/g/NCMD/n", &no.to_bytes()));
    }
}
