//! The MQTT bridge: forwards chosen topics between our broker and an external broker (an
//! enterprise Mosquitto or EMQX), with store-and-forward towards the remote.
//!
//! # Shape
//! - **Out** (local → remote): one in-process subscription per out rule
//!   ([`Broker::subscribe_internal`]); each message gets its remote topic
//!   (`remote_prefix + topic`) and is appended to the bridge's [`queue::DiskQueue`] in
//!   batches (one fsync a batch). The sender takes messages from the queue in order, keeps up
//!   to `window` of them in flight on the [`Client`], and removes each from the queue only
//!   once its PUBACK arrived.
//! - **In** (remote → local): the client subscribes to each in rule's remote filter; every
//!   message is published into the broker as `local_prefix + topic`.
//!
//! # Invariants
//! - **Queued means durable.** A local message counts as queued only once the transaction
//!   holding it is committed; it leaves the disk only after the remote acknowledged it (or
//!   refused it with a reason code, counted as `rejected`), or when the overflow policy drops
//!   it (counted as `dropped`). A restart re-sends whatever was not acknowledged, in order.
//! - **Order.** Messages reach the remote in the order they were queued (per out rule: each
//!   rule has its own local subscription), also across outages and restarts. Duplicates
//!   happen only for messages whose PUBACK was lost with a connection or a restart (QoS 1).
//! - **No loops.** Messages the bridge publishes locally carry the user property
//!   `ironplant-bridge = <name>` and are never sent back out by that bridge; on the remote
//!   side, 5.0 subscriptions use No Local, and under 3.1.1 an incoming message whose topic the
//!   bridge itself produces (an out rule's remote image) is dropped (counted as `looped`).
//! - The local side is lossy only where the broker is: `subscribe_internal` drops (and counts
//!   in the broker's stats) when the bridge's channel is full; it is sized generously and
//!   drained into the queue in batches.

pub mod queue;

use std::future::Future as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;

use crate::broker::Broker;
use crate::client::{Client, ClientError, ClientOptions, Delivery, Event};
use crate::codec::{
    self, MqttString, Packet, ProtocolVersion, Publish, QoS, Subscription, SubscriptionOptions,
};
use crate::topic;
pub use queue::{DiskQueue, Overflow, QueueError, QueueLimits};

/// The user property that marks messages a bridge published into the local broker.
pub const ORIGIN_PROPERTY: &str = "ironplant-bridge";

/// Local topics (filter) forwarded to the remote under `remote_prefix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutRule {
    pub local: String,
    pub remote_prefix: String,
    pub qos: QoS,
}

/// Remote topics (filter) brought into the local broker under `local_prefix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InRule {
    pub remote: String,
    pub local_prefix: String,
    pub qos: QoS,
}

/// One bridge.
#[derive(Debug, Clone)]
pub struct BridgeSettings {
    /// Name (metrics, logs, loop marker, queue directory).
    pub name: String,
    /// The remote broker, `host:port`.
    pub address: String,
    /// How the client connects (client id, version, credentials, keep-alive, back-off).
    pub client: ClientOptions,
    pub out: Vec<OutRule>,
    pub inbound: Vec<InRule>,
    pub limits: QueueLimits,
    /// Directory of this bridge's queue (e.g. `<data-dir>/bridge/<name>`).
    pub queue_dir: PathBuf,
    /// Capacity of each local subscription's channel.
    pub local_capacity: usize,
    /// Messages in flight to the remote at once.
    pub window: usize,
}

/// Counters for `/metrics` (all monotonic except `connected`, `queued` and `queued_bytes`).
#[derive(Debug, Default)]
pub struct BridgeStats {
    /// 1 while connected to the remote, else 0.
    pub connected: AtomicU64,
    /// Messages in the queue now (gauge), in flight included.
    pub queued: AtomicU64,
    /// Bytes in the queue now (gauge).
    pub queued_bytes: AtomicU64,
    /// Messages handed to the client and not yet acknowledged (gauge).
    pub in_flight: AtomicU64,
    /// Local messages written to the queue.
    pub enqueued: AtomicU64,
    /// Messages acknowledged by the remote.
    pub sent: AtomicU64,
    /// Messages dropped by the overflow policy.
    pub dropped: AtomicU64,
    /// Messages the remote refused (reason code) or that could not be sent; removed.
    pub rejected: AtomicU64,
    /// Remote messages published into the local broker.
    pub received: AtomicU64,
    /// Messages not forwarded because they came over this bridge (loop prevention).
    pub looped: AtomicU64,
    /// Connections established to the remote.
    pub connects: AtomicU64,
}

/// Why a bridge cannot start.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error("bridge {bridge}: invalid topic filter {filter:?}: {reason}")]
    Filter {
        bridge: String,
        filter: String,
        reason: String,
    },
}

/// A running bridge; dropping it stops it (what is queued stays on disk).
pub struct Bridge {
    name: String,
    stats: Arc<BridgeStats>,
    client: Client,
    tasks: Vec<JoinHandle<()>>,
}

impl Bridge {
    /// Opens the queue and starts the bridge's tasks.
    pub async fn start(broker: Broker, settings: BridgeSettings) -> Result<Bridge, BridgeError> {
        let s = Arc::new(settings);
        let path = s.queue_dir.join("queue.redb");
        let queue = Arc::new(
            tokio::task::spawn_blocking(move || DiskQueue::open(&path))
                .await
                .map_err(|e| QueueError {
                    file: s.queue_dir.display().to_string(),
                    message: e.to_string(),
                })??,
        );
        let stats = Arc::new(BridgeStats::default());
        let (count, bytes) = queue.len();
        stats.queued.store(count, Ordering::Relaxed);
        stats.queued_bytes.store(bytes, Ordering::Relaxed);
        if count > 0 {
            tracing::info!(bridge = %s.name, messages = count, bytes, "bridge queue holds messages from before the restart; sending them first");
        }

        let mut local = Vec::new();
        for (i, rule) in s.out.iter().enumerate() {
            let rx = broker
                .subscribe_internal(
                    &format!("bridge/{}/{i}", s.name),
                    &rule.local,
                    s.local_capacity,
                )
                .map_err(|e| BridgeError::Filter {
                    bridge: s.name.clone(),
                    filter: rule.local.clone(),
                    reason: e.to_string(),
                })?;
            local.push((rule.clone(), rx));
        }
        for rule in &s.inbound {
            topic::validate_topic_filter(&rule.remote).map_err(|e| BridgeError::Filter {
                bridge: s.name.clone(),
                filter: rule.remote.clone(),
                reason: e.to_string(),
            })?;
        }

        let (client, events) = Client::connect(&s.address, s.client.clone());
        let wake = Arc::new(Notify::new());
        let mut tasks = Vec::new();
        for (rule, rx) in local {
            tasks.push(tokio::spawn(ingest(
                s.clone(),
                rule,
                rx,
                queue.clone(),
                stats.clone(),
                wake.clone(),
            )));
        }
        tasks.push(tokio::spawn(send(
            s.clone(),
            client.clone(),
            queue.clone(),
            stats.clone(),
            wake,
        )));
        tasks.push(tokio::spawn(receive(
            s.clone(),
            client.clone(),
            events,
            broker,
            stats.clone(),
        )));
        Ok(Bridge {
            name: s.name.clone(),
            stats,
            client,
            tasks,
        })
    }

    /// The bridge's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its counters.
    pub fn stats(&self) -> &Arc<BridgeStats> {
        &self.stats
    }

    /// Stops the tasks and disconnects cleanly; the queue keeps what was not acknowledged.
    pub async fn shutdown(mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
            let _ = t.await;
        }
        self.client.disconnect().await;
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Most local messages written to the queue in one transaction.
const BATCH: usize = 1024;

/// Format byte of a queue record: `[1][qos][PUBLISH encoded as MQTT 5.0 at QoS 0]`.
const RECORD_V1: u8 = 1;

fn encode_record(p: &Publish, qos: QoS) -> Option<Vec<u8>> {
    let mut out = vec![RECORD_V1, qos as u8];
    codec::encode(&Packet::Publish(p.clone()), ProtocolVersion::V5, &mut out).ok()?;
    Some(out)
}

fn decode_record(rec: &[u8]) -> Option<Publish> {
    let (&[RECORD_V1, qos], rest) = rec.split_first_chunk::<2>()? else {
        return None;
    };
    let qos = QoS::from_u8(qos)?;
    match codec::decode(rest, ProtocolVersion::V5, usize::MAX) {
        Ok(Some((Packet::Publish(mut p), _))) => {
            p.qos = qos;
            Some(p)
        }
        _ => None,
    }
}

fn came_over(p: &Publish, name: &str) -> bool {
    p.properties
        .user_properties
        .iter()
        .any(|(k, v)| k.as_str() == ORIGIN_PROPERTY && v.as_str() == name)
}

/// Local messages of one out rule → the queue.
async fn ingest(
    s: Arc<BridgeSettings>,
    rule: OutRule,
    mut rx: mpsc::Receiver<Publish>,
    queue: Arc<DiskQueue>,
    stats: Arc<BridgeStats>,
    wake: Arc<Notify>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        let mut records = Vec::with_capacity(batch.len());
        for mut p in batch.drain(..) {
            if came_over(&p, &s.name) {
                stats.looped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let remote = format!("{}{}", rule.remote_prefix, p.topic);
            let Ok(t) = MqttString::try_from(remote.as_str()) else {
                stats.rejected.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(bridge = %s.name, topic = %remote, "remote topic is not a valid MQTT topic; message not forwarded");
                continue;
            };
            p.topic = t;
            p.dup = false;
            p.packet_id = None;
            p.qos = QoS::AtMostOnce;
            p.properties.topic_alias = None;
            p.properties.subscription_identifiers.clear();
            match encode_record(&p, rule.qos) {
                Some(r) => records.push(r),
                None => {
                    stats.rejected.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        if records.is_empty() {
            continue;
        }
        let q = queue.clone();
        let limits = s.limits;
        let n = records.len();
        let pushed = tokio::task::spawn_blocking(move || q.push(&records, limits)).await;
        match pushed {
            Ok(Ok(p)) => {
                stats.enqueued.fetch_add(p.accepted, Ordering::Relaxed);
                if p.dropped > 0 {
                    stats.dropped.fetch_add(p.dropped, Ordering::Relaxed);
                    tracing::warn!(bridge = %s.name, dropped = p.dropped, policy = ?limits.overflow, "bridge queue full; messages dropped");
                }
            }
            Ok(Err(e)) => {
                stats.dropped.fetch_add(n as u64, Ordering::Relaxed);
                tracing::error!(bridge = %s.name, error = %e, messages = n, "cannot write to the bridge queue; messages dropped");
            }
            Err(_) => return,
        }
        publish_gauges(&queue, &stats);
        wake.notify_one();
    }
}

fn publish_gauges(queue: &DiskQueue, stats: &BridgeStats) {
    let (count, bytes) = queue.len();
    stats.queued.store(count, Ordering::Relaxed);
    stats.queued_bytes.store(bytes, Ordering::Relaxed);
}

/// The queue → the remote, in order, removing each message once acknowledged.
async fn send(
    s: Arc<BridgeSettings>,
    client: Client,
    queue: Arc<DiskQueue>,
    stats: Arc<BridgeStats>,
    wake: Arc<Notify>,
) {
    let window = s.window.max(1);
    let mut inflight: std::collections::VecDeque<(u64, Delivery)> = Default::default();
    loop {
        // Top up the window from the queue.
        if inflight.len() < window {
            let q = queue.clone();
            let want = window - inflight.len();
            let taken = match tokio::task::spawn_blocking(move || q.take(want)).await {
                Ok(Ok(t)) => t,
                Ok(Err(e)) => {
                    tracing::error!(bridge = %s.name, error = %e, "cannot read the bridge queue");
                    Vec::new()
                }
                Err(_) => return,
            };
            let mut bad = Vec::new();
            for (seq, rec) in taken {
                let Some(p) = decode_record(&rec) else {
                    tracing::error!(bridge = %s.name, seq, "unreadable record in the bridge queue; removed");
                    stats.rejected.fetch_add(1, Ordering::Relaxed);
                    bad.push(seq);
                    continue;
                };
                match client.start_publish(p).await {
                    Ok(d) => {
                        inflight.push_back((seq, d));
                        stats
                            .in_flight
                            .store(inflight.len() as u64, Ordering::Relaxed);
                    }
                    Err(_) => return,
                }
            }
            if !bad.is_empty() {
                let q = queue.clone();
                let _ = tokio::task::spawn_blocking(move || q.ack(&bad)).await;
            }
        }
        let room = inflight.len() < window;
        let Some((_, front)) = inflight.front_mut() else {
            wake.notified().await;
            continue;
        };
        let first = tokio::select! {
            r = front => r,
            () = wake.notified(), if room => continue,
        };
        // The front one is done; take every other one that is done too, in order.
        let mut done = Vec::new();
        let mut result = Some(first);
        while let Some(r) = result.take() {
            let Some((seq, _)) = inflight.pop_front() else {
                break;
            };
            match r {
                Ok(()) => {
                    stats.sent.fetch_add(1, Ordering::Relaxed);
                }
                Err(ClientError::Closed) => return,
                Err(e) => {
                    stats.rejected.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(bridge = %s.name, error = %e, "the remote refused a bridged message; removed from the queue");
                }
            }
            done.push(seq);
            stats
                .in_flight
                .store(inflight.len() as u64, Ordering::Relaxed);
            if let Some((_, next)) = inflight.front_mut() {
                result = futures_poll_now(next);
            }
        }
        let q = queue.clone();
        match tokio::task::spawn_blocking(move || q.ack(&done)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(bridge = %s.name, error = %e, "cannot remove acknowledged messages from the bridge queue (they will be sent again after a restart)")
            }
            Err(_) => return,
        }
        publish_gauges(&queue, &stats);
    }
}

/// The result of a delivery if it is already complete.
fn futures_poll_now(d: &mut Delivery) -> Option<Result<(), ClientError>> {
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    match std::pin::Pin::new(d).poll(&mut cx) {
        std::task::Poll::Ready(r) => Some(r),
        std::task::Poll::Pending => None,
    }
}

/// Remote events: connection state, and messages into the local broker.
async fn receive(
    s: Arc<BridgeSettings>,
    client: Client,
    mut events: mpsc::Receiver<Event>,
    broker: Broker,
    stats: Arc<BridgeStats>,
) {
    let v5 = s.client.version == ProtocolVersion::V5;
    if !s.inbound.is_empty() {
        let subs: Vec<Subscription> = s
            .inbound
            .iter()
            .filter_map(|r| {
                Some(Subscription {
                    filter: MqttString::try_from(r.remote.as_str()).ok()?,
                    options: SubscriptionOptions {
                        no_local: v5,
                        retain_as_published: v5,
                        ..SubscriptionOptions::qos(r.qos)
                    },
                })
            })
            .collect();
        let c = client.clone();
        let name = s.name.clone();
        // Queued in the client until connected; renewed by it after every lost session.
        tokio::spawn(async move {
            if let Err(e) = c.subscribe_with(subs).await {
                tracing::warn!(bridge = %name, error = %e, "bridge subscription failed");
            }
        });
    }
    let origin: (MqttString, MqttString) = (
        MqttString::from_static(ORIGIN_PROPERTY),
        MqttString::try_from(s.name.as_str()).unwrap_or_default(),
    );
    while let Some(e) = events.recv().await {
        match e {
            Event::Connected { .. } => {
                stats.connected.store(1, Ordering::Relaxed);
                stats.connects.fetch_add(1, Ordering::Relaxed);
                tracing::info!(bridge = %s.name, remote = %s.address, "bridge connected");
            }
            Event::Disconnected { error } => {
                if stats.connected.swap(0, Ordering::Relaxed) == 1 {
                    tracing::warn!(bridge = %s.name, remote = %s.address, %error, "bridge disconnected; queueing outgoing messages");
                } else {
                    tracing::debug!(bridge = %s.name, %error, "bridge connection attempt failed");
                }
            }
            Event::Publish(mut p) => {
                if !v5 && s.out.iter().any(|r| produced_by(r, &p.topic)) {
                    stats.looped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let Some(rule) = s
                    .inbound
                    .iter()
                    .find(|r| topic::topic_matches(&r.remote, &p.topic))
                else {
                    continue;
                };
                let local = format!("{}{}", rule.local_prefix, p.topic);
                let Ok(t) = MqttString::try_from(local.as_str()) else {
                    stats.rejected.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                p.topic = t;
                p.qos = QoS::AtMostOnce;
                p.packet_id = None;
                p.dup = false;
                p.properties.subscription_identifiers.clear();
                p.properties.topic_alias = None;
                p.properties.user_properties.push(origin.clone());
                broker.publish(p);
                stats.received.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Whether `remote_topic` is one this out rule publishes (its remote image).
fn produced_by(rule: &OutRule, remote_topic: &str) -> bool {
    remote_topic
        .strip_prefix(rule.remote_prefix.as_str())
        .is_some_and(|rest| topic::topic_matches(&rule.local, rest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn records_round_trip_with_properties() {
        let mut p = Publish::new(
            MqttString::from_static("site1/a/b"),
            Bytes::from_static(b"42"),
        );
        p.retain = true;
        p.properties.content_type = Some(MqttString::from_static("application/json"));
        let rec = encode_record(&p, QoS::AtLeastOnce).expect("encodes");
        let back = decode_record(&rec).expect("decodes");
        assert_eq!(back.qos, QoS::AtLeastOnce);
        assert!(back.retain);
        assert_eq!(back.topic, "site1/a/b");
        assert_eq!(back.payload, Bytes::from_static(b"42"));
        assert_eq!(back.properties.content_type, p.properties.content_type);
        assert_eq!(decode_record(&rec[..rec.len() - 1]), None, "truncated");
        assert_eq!(decode_record(&[9, 1, 0x30, 0]), None, "unknown format");
    }

    #[test]
    fn remote_image_of_out_rules() {
        let r = OutRule {
            local: "acme/#".into(),
            remote_prefix: "site1/".into(),
            qos: QoS::AtLeastOnce,
        };
        assert!(produced_by(&r, "site1/acme/x"));
        assert!(!produced_by(&r, "site1/other/x"));
        assert!(!produced_by(&r, "enterprise/cmd/x"));
    }
}
