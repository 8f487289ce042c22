//! The MQTT side of JSON ingest: an in-process subscription on the embedded broker per mapping
//! with a `topic`, each message mapped by [`JsonIngest`] and published on the tag bus. The
//! broker's ACL decides who may publish on those topics (a device needs an allow rule, e.g.
//! `device:plug-7 allow publish shellies/plug-7/#`); nothing here re-checks it.
//!
//! If a subscription's queue ([`QUEUE`] messages) overflows while the bus applies
//! back-pressure, the broker drops and counts messages (`ironplant_mqtt_dropped…`); ingest never
//! blocks the broker.

use std::sync::Arc;

use ironplant_core::{LiveNamespace, TagBus, Timestamp};
use ironplant_mqtt::Broker;
use tokio::task::{JoinHandle, JoinSet};

use crate::json::JsonIngest;

/// Messages an in-process subscription queues before the broker drops (and counts) them.
pub const QUEUE: usize = 16_384;

/// Why ingest could not attach to the broker.
#[derive(Debug, thiserror::Error)]
#[error("ingest mapping {mapping:?}: cannot subscribe to {topic:?}: {error}")]
pub struct AttachError {
    pub mapping: String,
    pub topic: String,
    pub error: String,
}

/// **The one registration point of MQTT ingest** (call it once at start-up, after the bus
/// subscribers exist and before devices start publishing): registers the mappings' fixed tags
/// in `namespace` (refusals are logged and counted as `tag_refused`), subscribes on `broker`
/// for every mapping with a topic and spawns the task that maps and publishes. Abort the handle
/// to stop (it owns the per-mapping tasks). Must be called inside a tokio runtime.
pub fn attach(
    broker: &Broker,
    bus: TagBus,
    namespace: Arc<LiveNamespace>,
    ingest: Arc<JsonIngest>,
) -> Result<JoinHandle<()>, AttachError> {
    for e in ingest.register_tags(&namespace) {
        tracing::error!(error = %e, "ingest: tag not registered");
    }
    let mut receivers = Vec::new();
    for (i, m) in ingest.mappings().enumerate() {
        let Some(topic) = &m.topic else { continue };
        let rx = broker
            .subscribe_internal(&format!("ingest-{}", m.name), topic, QUEUE)
            .map_err(|e| AttachError {
                mapping: m.name.clone(),
                topic: topic.clone(),
                error: e.to_string(),
            })?;
        tracing::info!(mapping = %m.name, topic = %topic, fields = m.fields.len(), "ingest: listening for JSON payloads");
        receivers.push((i, rx));
    }
    Ok(tokio::spawn(async move {
        let mut set = JoinSet::new();
        for (i, mut rx) in receivers {
            let (bus, namespace, ingest) = (bus.clone(), namespace.clone(), ingest.clone());
            set.spawn(async move {
                while let Some(msg) = rx.recv().await {
                    let now = Timestamp::now();
                    let topic = msg.topic.as_str();
                    let Some(filter) = ingest.mapping(i).and_then(|m| m.topic.as_deref()) else {
                        break;
                    };
                    let Some(levels) = crate::json::captures(filter, topic) else {
                        continue;
                    };
                    let Ok(mut mapped) = ingest.handle_mapping(i, &levels, &msg.payload, now)
                    else {
                        continue; // counted and logged by the mapper
                    };
                    let samples = ingest.resolve(i, &namespace, &mut mapped, now);
                    if !samples.is_empty() {
                        bus.publish(samples).await;
                    }
                }
            });
        }
        // Dropping the set (when this task is aborted) aborts the per-mapping tasks.
        while set.join_next().await.is_some() {}
    }))
}
