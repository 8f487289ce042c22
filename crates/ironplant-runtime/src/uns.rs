//! Unified Namespace over MQTT: every change of a tag's value or quality is published, retained,
//! as JSON on the tag's path, so any MQTT client can browse the plant live.
//!
//! The bus subscription is lossy (`DropNewest`): a slow broker never slows the adapters; drops
//! are counted in `ironplant_bus_dropped_samples_total{subscriber="uns"}`. Since every message is
//! retained and re-sent on the next change, a drop delays a value, it does not lose the topic.

use std::sync::Arc;

use bytes::Bytes;
use ironplant_core::wire::SampleJson;
use ironplant_core::{
    BoxFuture, ComponentError, LiveNamespace, Overflow, Quality, Sample, Sink, SinkContext,
    SinkQueue, Value,
};
use ironplant_mqtt::codec::{MqttString, Publish, QoS};
use ironplant_mqtt::Broker;
use parking_lot::Mutex;

/// The JSON payload of a tag's UNS message: the wire format's sample (`core::wire::SampleJson`)
/// without the path (the topic says it), with the unit.
pub fn payload(sample: &Sample, unit: Option<&str>) -> Vec<u8> {
    serde_json::to_vec(&SampleJson::new(None, sample).with_unit(unit))
        .expect("a sample has string keys only, so it always serializes")
}

/// The UNS publisher as a sink: every change of `bus` on `broker` under `prefix` (empty: the
/// bare tag path). Tags added to the namespace while running are published like configured
/// ones. What it last published survives its restarts (no republish storm after a failure).
pub struct UnsSink {
    broker: Broker,
    prefix: String,
    /// What was last published per tag id.
    last: Mutex<Vec<Option<(Value, Quality)>>>,
}

impl UnsSink {
    pub fn new(broker: Broker, prefix: &str) -> UnsSink {
        UnsSink {
            broker,
            prefix: prefix.trim_end_matches('/').to_owned(),
            last: Mutex::new(Vec::new()),
        }
    }

    fn publish(&self, batch: &[Sample], namespace: &LiveNamespace) {
        let mut last = self.last.lock();
        // Tags born since the last batch: the namespace has them before their samples.
        if last.len() < namespace.len() {
            last.resize(namespace.len(), None);
        }
        let ns = namespace.read();
        for s in batch {
            let Some(slot) = last.get_mut(s.tag.index()) else {
                continue;
            };
            if slot
                .as_ref()
                .is_some_and(|(v, q)| *v == s.value && *q == s.quality)
            {
                continue;
            }
            *slot = Some((s.value.clone(), s.quality));
            let Some(meta) = ns.tag(s.tag) else {
                continue;
            };
            let topic = if self.prefix.is_empty() {
                meta.path.to_string()
            } else {
                format!("{}/{}", self.prefix, meta.path)
            };
            let Ok(topic) = MqttString::from_utf8(Bytes::from(topic)) else {
                continue;
            };
            let mut p = Publish::new(topic, Bytes::from(payload(s, meta.unit.as_deref())));
            p.qos = QoS::AtMostOnce;
            p.retain = true;
            self.broker.publish(p);
        }
    }
}

impl Sink for UnsSink {
    fn name(&self) -> String {
        "uns".to_owned()
    }

    fn queue(&self) -> SinkQueue {
        SinkQueue {
            capacity: 256,
            overflow: Overflow::DropNewest,
        }
    }

    fn run(self: Arc<Self>, ctx: SinkContext) -> BoxFuture<'static, Result<(), ComponentError>> {
        Box::pin(async move {
            let mut input = ctx.input().await;
            while let Some(batch) = input.next().await {
                self.publish(&batch, &ctx.namespace);
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ironplant_core::{QualityReason, TagId, Timestamp};

    #[test]
    fn payload_is_json_with_quality_and_unit() {
        let s = Sample {
            tag: TagId(0),
            value: Value::Float(21.5),
            quality: Quality::bad(QualityReason::CommFailure),
            source_ts: Timestamp(1_000_000_000_000_000),
            server_ts: Timestamp(1_000_000_000_000_000),
        };
        let v: serde_json::Value = serde_json::from_slice(&payload(&s, Some("°C"))).expect("json");
        assert_eq!(v["value"], 21.5);
        assert_eq!(v["quality"], "Bad");
        assert_eq!(v["quality_reason"], "CommFailure");
        assert_eq!(v["unit"], "°C");
        assert_eq!(v["ts"], "2001-09-09T01:46:40.000000Z");
        assert_eq!(v["server_ts"], "2001-09-09T01:46:40.000000Z");
        assert!(v.get("path").is_none(), "the topic names the tag");
        let nan = Sample {
            value: Value::Float(f64::NAN),
            quality: Quality::GOOD,
            ..s
        };
        let v: serde_json::Value = serde_json::from_slice(&payload(&nan, None)).expect("json");
        assert!(v["value"].is_null() && v["quality_reason"].is_null() && v["unit"].is_null());
        let array = Sample {
            value: Value::array(
                ironplant_core::Array::from_floats(vec![1.5, -2.0]).expect("small"),
            ),
            ..s
        };
        let v: serde_json::Value = serde_json::from_slice(&payload(&array, None)).expect("json");
        assert_eq!(v["value"], serde_json::json!([1.5, -2.0]));
        let table = Sample {
            value: Value::dataset(
                ironplant_core::DataSet::new(
                    vec!["n".into()],
                    vec![ironplant_core::ScalarType::Int],
                    vec![vec![Value::Int(3)], vec![Value::Null]],
                )
                .expect("valid"),
            ),
            ..s
        };
        let v: serde_json::Value = serde_json::from_slice(&payload(&table, None)).expect("json");
        assert_eq!(
            v["value"],
            serde_json::json!({"columns": ["n"], "types": ["int"], "rows": [[3], [null]]})
        );
    }
}
