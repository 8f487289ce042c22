//! The consumers of the event bus: the event store (historian) and MQTT.
//!
//! - [`attach_store`]: a subscription with a large queue (65,536 events) drained by its own
//!   thread into the historian's event store, in batches of whatever arrived (the store
//!   group-commits them). The bus never blocks: if the store falls that far behind, events are
//!   dropped and counted (`ironplant_events_dropped_total{subscriber="event-store"}`).
//! - [`attach_mqtt`]: every event as JSON (the wire format, `core::wire::EventJson`) on
//!   `<uns_prefix>/_events/<kind>/<subject path>` (`_platform` for events without a subject),
//!   QoS 0, not retained (an event is a fact of a moment, not a state a late subscriber
//!   should be told). The platform owns these topics: no client may publish there.

use std::sync::Arc;

use bytes::Bytes;
use ironplant_core::wire::EventJson;
use ironplant_core::{Event, EventBus, EventFilter};
use ironplant_historian::events::EventStore;
use ironplant_mqtt::codec::{MqttString, Publish, QoS};
use ironplant_mqtt::Broker;
use tokio::task::JoinHandle;

/// The topic level under the UNS prefix that holds events.
pub const EVENTS_LEVEL: &str = "_events";
/// The last level of an event without a subject.
pub const PLATFORM_SUBJECT: &str = "_platform";
/// Queue of the store's subscription: a burst this large is absorbed without a drop.
pub const STORE_QUEUE: usize = 65_536;
/// Queue of the MQTT publisher's subscription.
pub const MQTT_QUEUE: usize = 8_192;
/// Most events handed to the store at once.
const STORE_BATCH: usize = 8_192;

/// `<uns_prefix>/_events` (or `_events` without a prefix): the root of every event topic.
pub fn events_root(uns_prefix: &str) -> String {
    let prefix = uns_prefix.trim_end_matches('/');
    if prefix.is_empty() {
        EVENTS_LEVEL.to_owned()
    } else {
        format!("{prefix}/{EVENTS_LEVEL}")
    }
}

/// The MQTT topic of an event: `<root>/<kind>/<subject path or _platform>`.
pub fn topic(root: &str, e: &Event) -> String {
    let subject = e.subject.as_ref().map_or(PLATFORM_SUBJECT, |s| s.as_str());
    format!("{root}/{}/{subject}", e.kind.as_str())
}

/// The JSON payload of an event (the wire format).
pub fn payload(e: &Event) -> Vec<u8> {
    serde_json::to_vec(&EventJson::new(e))
        .expect("an event has string keys only, so it always serializes")
}

/// Feeds every event of `bus` into `store` on its own thread (the store's submit blocks when
/// its writer is saturated, which must not stall async workers). Ends when the bus or the
/// store goes away.
pub fn attach_store(
    store: &EventStore,
    bus: &EventBus,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let mut sub = bus.subscribe("event-store", STORE_QUEUE, EventFilter::all());
    let store = store.clone();
    std::thread::Builder::new()
        .name("event-store-ingest".into())
        .spawn(move || {
            while let Some(first) = sub.blocking_recv() {
                let mut batch = Vec::with_capacity(64);
                batch.push(Arc::unwrap_or_clone(first));
                while batch.len() < STORE_BATCH {
                    match sub.try_recv() {
                        Some(e) => batch.push(Arc::unwrap_or_clone(e)),
                        None => break,
                    }
                }
                if store.ingest(batch).is_err() {
                    return; // closed: the platform is shutting down
                }
            }
        })
}

/// Publishes every event of `bus` on `broker` under [`events_root`]`(uns_prefix)`.
pub fn attach_mqtt(broker: Broker, bus: &EventBus, uns_prefix: &str) -> JoinHandle<()> {
    let mut sub = bus.subscribe("mqtt-events", MQTT_QUEUE, EventFilter::all());
    let root = events_root(uns_prefix);
    tokio::spawn(async move {
        while let Some(e) = sub.recv().await {
            let Ok(topic) = MqttString::from_utf8(Bytes::from(topic(&root, &e))) else {
                continue;
            };
            let mut p = Publish::new(topic, Bytes::from(payload(&e)));
            p.qos = QoS::AtMostOnce;
            p.retain = false;
            broker.publish(p);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ironplant_core::{EventKind, TagPath, Timestamp, Value};

    #[test]
    fn topics_name_the_kind_and_the_subject() {
        let e = Event::new(Timestamp(0), EventKind::Alarm, "raised", "rules", "high")
            .with_subject(TagPath::parse("acme/lyon/line1/filler/temp").expect("path"));
        assert_eq!(
            topic(&events_root("site1/uns/"), &e),
            "site1/uns/_events/alarm/acme/lyon/line1/filler/temp"
        );
        let e = Event::new(Timestamp(0), EventKind::System, "started", "runtime", "up");
        assert_eq!(topic(&events_root(""), &e), "_events/system/_platform");
        let e = e.with_attribute("n", Value::Int(3));
        let v: serde_json::Value = serde_json::from_slice(&payload(&e)).expect("json");
        assert_eq!(v["kind"], "system");
        assert_eq!(v["ts"], "1970-01-01T00:00:00.000000Z");
        assert_eq!(v["attributes"]["n"], 3);
        assert!(v["subject"].is_null());
    }
}
