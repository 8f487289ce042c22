//! The MQTT side of JSON ingest: an in-process subscription on the embedded broker per mapping
//! with a `topic`, each message mapped by [`JsonIngest`] and published on the tag bus. The
//! broker's ACL decides who may publish on those topics (a device needs an allow rule, e.g.
//! `device:plug-7 allow publish shellies/plug-7/#`); nothing here re-checks it.
//!
//! [`MqttIngest`] is the platform's source component (started after the sinks, restarted by the
//! supervisor if a subscription ends); each run is [`serve`]. [`attach`] runs the same loop on
//! its own task, for embedders and tests.
//!
//! Each message passes the message-level checks ([`crate::guard`]: replays refused, a new
//! publisher or address of a topic reported) with the publisher the broker authenticated;
//! what they notice is an `integrity` event.
//!
//! If a subscription's queue ([`QUEUE`] messages) overflows while the bus applies
//! back-pressure, the broker drops and counts messages; ingest never blocks the broker.

use std::sync::Arc;

use std::future::Future;

use ironplant_core::{
    BoxFuture, ComponentError, EventBus, LiveNamespace, Source, SourceContext, TagBus, Timestamp,
};
use ironplant_mqtt::broker::Origin;
use ironplant_mqtt::codec::Publish;
use ironplant_mqtt::Broker;

use crate::guard::{Provenance, Received};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};

use crate::json::JsonIngest;

/// Messages an in-process subscription queues before the broker drops (and counts) them.
pub const QUEUE: usize = 16_384;

/// Why ingest could not subscribe.
#[derive(Debug, thiserror::Error)]
#[error("ingest mapping {mapping:?}: cannot subscribe to {topic:?}: {error}")]
pub struct AttachError {
    pub mapping: String,
    pub topic: String,
    pub error: String,
}

/// **The registration point of MQTT ingest**: the platform's source, given to the builder as
/// `.source(MqttIngest::new(broker.clone(), ingest.clone()))`, with the same `Arc<JsonIngest>`
/// the API's `ironplant_api::ingest::routes` gets (one set of counters). Each run is
/// [`serve`]; a run that fails (a subscription ended) is restarted by the supervisor.
pub struct MqttIngest {
    broker: Broker,
    ingest: Arc<JsonIngest>,
}

impl MqttIngest {
    pub fn new(broker: Broker, ingest: Arc<JsonIngest>) -> MqttIngest {
        MqttIngest { broker, ingest }
    }
}

impl Source for MqttIngest {
    fn name(&self) -> String {
        "ingest:json".to_owned()
    }

    fn run(self: Arc<Self>, ctx: SourceContext) -> BoxFuture<'static, Result<(), ComponentError>> {
        Box::pin(async move {
            let mut shutdown = ctx.shutdown.clone();
            serve(
                &self.broker,
                ctx.bus,
                ctx.events,
                ctx.namespace,
                self.ingest.clone(),
                async move { shutdown.requested().await },
            )
            .await
            .map_err(ComponentError::new)
        })
    }
}

/// What [`MqttIngest`] runs (and embedders may run under their own supervision): registers
/// the mappings' fixed tags, subscribes on `broker` for every mapping with a topic, and maps
/// and publishes until `shutdown` resolves (`Ok`). `Err` if a subscription cannot be made or
/// ends (the broker stopped): a supervisor restarts it, which subscribes again. Give it the
/// same `Arc<JsonIngest>` as the API's `ironplant_api::ingest::routes` (one set of counters).
pub async fn serve(
    broker: &Broker,
    bus: TagBus,
    events: EventBus,
    namespace: Arc<LiveNamespace>,
    ingest: Arc<JsonIngest>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), String> {
    let receivers = subscribe(broker, &namespace, &ingest).map_err(|e| e.to_string())?;
    if receivers.is_empty() {
        // No mapping listens on MQTT: nothing to do until shutdown.
        shutdown.await;
        return Ok(());
    }
    run(receivers, bus, events, namespace, ingest, shutdown).await
}

/// [`serve`] on its own task, without a supervisor (embedders and tests): subscribes now
/// (errors are returned here), then maps until the handle is aborted. Must be called inside
/// a tokio runtime.
pub fn attach(
    broker: &Broker,
    bus: TagBus,
    events: EventBus,
    namespace: Arc<LiveNamespace>,
    ingest: Arc<JsonIngest>,
) -> Result<JoinHandle<()>, AttachError> {
    let receivers = subscribe(broker, &namespace, &ingest)?;
    Ok(tokio::spawn(async move {
        let _ = run(
            receivers,
            bus,
            events,
            namespace,
            ingest,
            std::future::pending(),
        )
        .await;
    }))
}

type Receivers = Vec<(usize, mpsc::Receiver<(Publish, Origin)>)>;

fn subscribe(
    broker: &Broker,
    namespace: &LiveNamespace,
    ingest: &JsonIngest,
) -> Result<Receivers, AttachError> {
    for e in ingest.register_tags(namespace) {
        tracing::error!(error = %e, "ingest: tag not registered");
    }
    let mut receivers = Vec::new();
    for (i, m) in ingest.mappings().enumerate() {
        let Some(topic) = &m.topic else { continue };
        let rx = broker
            .subscribe_internal_with_origin(&format!("ingest-{}", m.name), topic, QUEUE)
            .map_err(|e| AttachError {
                mapping: m.name.clone(),
                topic: topic.clone(),
                error: e.to_string(),
            })?;
        tracing::info!(mapping = %m.name, topic = %topic, fields = m.fields.len(), "ingest: listening for JSON payloads");
        receivers.push((i, rx));
    }
    Ok(receivers)
}

/// Maps every subscription's messages until shutdown (`Ok`) or until one ends (`Err`).
async fn run(
    receivers: Receivers,
    bus: TagBus,
    events: EventBus,
    namespace: Arc<LiveNamespace>,
    ingest: Arc<JsonIngest>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), String> {
    // Dropping the set (at shutdown, or when the caller's task is aborted) aborts the
    // per-mapping tasks, which drops their subscriptions.
    let mut set = JoinSet::new();
    for (i, mut rx) in receivers {
        let (bus, events, namespace, ingest) = (
            bus.clone(),
            events.clone(),
            namespace.clone(),
            ingest.clone(),
        );
        set.spawn(async move {
            while let Some((msg, origin)) = rx.recv().await {
                let now = Timestamp::now();
                let Some(filter) = ingest.mapping(i).and_then(|m| m.topic.as_deref()) else {
                    break;
                };
                let Some(levels) = crate::json::captures(filter, msg.topic.as_str()) else {
                    continue;
                };
                let from = Provenance {
                    identity: origin.owner.clone(),
                    address: origin.peer,
                };
                let topic = msg.topic.as_str();
                let received = Received {
                    topic,
                    payload: &msg.payload,
                    from: &from,
                };
                let Ok(opened) = ingest.open_signed(i, received, now, &events) else {
                    continue; // counted, reported and audited
                };
                let payload: &[u8] = opened.as_ref().map_or(&msg.payload[..], |(_, p)| p);
                let Ok(mut mapped) = ingest.handle_mapping(i, &levels, payload, now) else {
                    continue; // counted and logged by the mapper
                };
                let received = Received {
                    payload,
                    ..received
                };
                if ingest.admit(i, received, &mapped, now, &events).is_err() {
                    continue; // a replay: counted and reported
                }
                let samples = ingest.resolve(i, &namespace, &mut mapped, now);
                if !samples.is_empty() {
                    bus.publish(samples).await;
                }
            }
            ingest
                .mapping(i)
                .map(|m| m.name.clone())
                .unwrap_or_default()
        });
    }
    tokio::select! {
        () = shutdown => Ok(()),
        ended = set.join_next() => {
            let which = match ended {
                Some(Ok(name)) => format!("mapping {name:?}"),
                Some(Err(e)) => format!("a mapping's task ({e})"),
                None => "every mapping".to_owned(),
            };
            Err(format!("ingest: the broker subscription of {which} ended"))
        }
    }
}
