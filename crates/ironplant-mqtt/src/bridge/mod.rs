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
//! - **The retained replay is not a duplicate.** Every start subscribes anew, and the broker
//!   replays its retained messages; the queue keeps, per remote topic, a digest of the last
//!   retained message queued, and skips a retained message equal to it (counted as
//!   `unchanged`). A changed one goes; one that was dropped or refused is forgotten, so its
//!   next replay goes. The remote is assumed to keep what it acknowledged (a remote that lost
//!   its retained store gets each topic again on its next change).
//! - **Counters survive restarts**: they live in the queue's file, written in the
//!   transactions that change the queue (received, looped and connects with the next one).
//! - **A full queue is a state, not a log storm**: `queue_full` is 1 from the first drop until
//!   the queue is below 90 % of its limits again; the warning is logged at the first drop,
//!   then as a summary with the count at most once a minute.
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
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;

use crate::broker::Broker;
use crate::client::{Client, ClientError, ClientOptions, Delivery, Event};
use crate::codec::{
    self, MqttString, Packet, ProtocolVersion, Publish, QoS, Subscription, SubscriptionOptions,
};
use crate::topic;
pub use queue::{Counters, DiskQueue, Item, Overflow, QueueError, QueueLimits};

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
    /// Signs every outgoing message for its remote topic (`crate::signed`), before it is
    /// queued: what leaves the site carries its provenance.
    pub signer: Option<Arc<crate::signed::Signer>>,
    /// Messages in flight to the remote at once.
    pub window: usize,
}

/// Counters for `/metrics` (all monotonic, across restarts too, except the gauges
/// `connected`, `queue_full`, `queued`, `queued_bytes` and `in_flight`).
#[derive(Debug, Default)]
pub struct BridgeStats {
    /// 1 while connected to the remote, else 0.
    pub connected: AtomicU64,
    /// 1 from the first message the overflow policy dropped until the queue is below 90 % of
    /// its limits again (hysteresis, so an alarm on it does not flap), else 0.
    pub queue_full: AtomicU64,
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
    /// Messages the remote refused (reason code) or that could not be sent, and incoming
    /// messages the local policy refused (a topic the platform owns); removed.
    pub rejected: AtomicU64,
    /// Retained messages not sent because the remote already has the same one (the replay
    /// of the retained store at every start).
    pub unchanged: AtomicU64,
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
    #[error("bridge {bridge}: cannot use the signing key {path}: {reason}; give sign_key the <device>.sign.key of the bundle `ironplant device enroll` wrote")]
    SigningKey {
        bridge: String,
        path: String,
        reason: String,
    },
}

/// A running bridge; dropping it stops it (what is queued stays on disk).
pub struct Bridge {
    name: String,
    stats: Arc<BridgeStats>,
    client: Client,
    queue: Arc<DiskQueue>,
    tasks: Vec<JoinHandle<()>>,
}

/// How often, at most, the "queue full" warning is repeated (as a summary with the count).
pub const DROP_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// What to log about drops (sans-IO: time is a parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReport {
    /// The first drop (of this bridge's life, or the first after a quiet minute).
    First { dropped: u64 },
    /// Drops since the last line.
    Summary { dropped: u64, since: Duration },
}

/// Rate limit of the "queue full" warning: the first drop is logged, then at most one line a
/// [`DROP_LOG_INTERVAL`] with the count since the last line.
#[derive(Debug, Default)]
pub struct DropLog {
    last_line: Option<Instant>,
    unreported: u64,
}

impl DropLog {
    /// `n` messages were dropped at `now`: what to log, if anything.
    pub fn dropped(&mut self, n: u64, now: Instant) -> Option<DropReport> {
        self.unreported += n;
        let report = match self.last_line {
            None => DropReport::First {
                dropped: self.unreported,
            },
            Some(t) if now.duration_since(t) >= DROP_LOG_INTERVAL => {
                if self.unreported == n {
                    // Nothing was held back: a new episode after a quiet minute.
                    DropReport::First { dropped: n }
                } else {
                    DropReport::Summary {
                        dropped: self.unreported,
                        since: now.duration_since(t),
                    }
                }
            }
            Some(_) => return None,
        };
        self.last_line = Some(now);
        self.unreported = 0;
        Some(report)
    }

    /// The queue has room again: the drops not reported yet, if a line is due.
    pub fn cleared(&mut self, now: Instant) -> Option<u64> {
        if self.unreported == 0
            || self
                .last_line
                .is_some_and(|t| now.duration_since(t) < DROP_LOG_INTERVAL)
        {
            return None;
        }
        self.last_line = Some(now);
        Some(std::mem::take(&mut self.unreported))
    }
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
        let drops = Arc::new(Mutex::new(DropLog::default()));
        // Counters continue from the last run's.
        publish_stats(&queue, &stats, &s, &drops);
        let (count, bytes) = queue.len();
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
                drops.clone(),
            )));
        }
        tasks.push(tokio::spawn(send(
            s.clone(),
            client.clone(),
            queue.clone(),
            stats.clone(),
            wake,
            drops.clone(),
        )));
        tasks.push(tokio::spawn(receive(
            s.clone(),
            client.clone(),
            events,
            broker,
            queue.clone(),
            stats.clone(),
            drops,
        )));
        Ok(Bridge {
            name: s.name.clone(),
            stats,
            client,
            queue,
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

    /// Stops the tasks and disconnects cleanly; the queue keeps what was not acknowledged,
    /// and the counters are written.
    pub async fn shutdown(mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
            let _ = t.await;
        }
        self.client.disconnect().await;
        let q = self.queue.clone();
        match tokio::task::spawn_blocking(move || q.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(bridge = %self.name, error = %e, "cannot save the bridge's counters")
            }
            Err(e) => {
                tracing::warn!(bridge = %self.name, error = %e, "cannot save the bridge's counters")
            }
        }
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
    drops: Arc<Mutex<DropLog>>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        let mut records = Vec::with_capacity(batch.len());
        let mut refused = Counters::default();
        for mut p in batch.drain(..) {
            if came_over(&p, &s.name) {
                refused.looped += 1;
                continue;
            }
            let remote = format!("{}{}", rule.remote_prefix, p.topic);
            let Ok(t) = MqttString::try_from(remote.as_str()) else {
                refused.rejected += 1;
                tracing::warn!(bridge = %s.name, topic = %remote, "remote topic is not a valid MQTT topic; message not forwarded");
                continue;
            };
            if let Some(signer) = &s.signer {
                p.payload = bytes::Bytes::from(signer.seal(&remote, &p.payload));
            }
            p.topic = t;
            p.dup = false;
            p.packet_id = None;
            p.qos = QoS::AtMostOnce;
            p.properties.topic_alias = None;
            p.properties.subscription_identifiers.clear();
            let retained_topic = p.retain.then(|| remote.clone());
            match encode_record(&p, rule.qos) {
                Some(record) => records.push(Item {
                    record,
                    retained_topic,
                }),
                None => refused.rejected += 1,
            }
        }
        if refused != Counters::default() {
            queue.note(&refused);
        }
        if records.is_empty() {
            publish_stats(&queue, &stats, &s, &drops);
            continue;
        }
        let q = queue.clone();
        let limits = s.limits;
        let n = records.len() as u64;
        let pushed = tokio::task::spawn_blocking(move || q.push(&records, limits)).await;
        let dropped = match pushed {
            Ok(Ok(p)) => p.dropped,
            Ok(Err(e)) => {
                queue.note(&Counters {
                    dropped: n,
                    ..Counters::default()
                });
                tracing::error!(bridge = %s.name, error = %e, messages = n, "cannot write to the bridge queue; messages dropped");
                0
            }
            Err(_) => return,
        };
        if dropped > 0 {
            stats.queue_full.store(1, Ordering::Relaxed);
            let report = drops.lock().dropped(dropped, Instant::now());
            match report {
                Some(DropReport::First { dropped }) => {
                    tracing::warn!(bridge = %s.name, dropped, policy = ?limits.overflow, max_messages = limits.max_messages, max_bytes = limits.max_bytes, "bridge queue full; messages dropped (repeated at most once a minute with the count; see ironplant_bridge_queue_full)");
                }
                Some(DropReport::Summary { dropped, since }) => {
                    tracing::warn!(bridge = %s.name, dropped, since = ?since, policy = ?limits.overflow, "bridge queue still full; messages dropped since the last warning");
                }
                None => {}
            }
        }
        publish_stats(&queue, &stats, &s, &drops);
        wake.notify_one();
    }
}

/// Copies the queue's counters and gauges into `stats`, and clears `queue_full` once the
/// queue is below 90 % of its limits.
fn publish_stats(
    queue: &DiskQueue,
    stats: &BridgeStats,
    s: &BridgeSettings,
    drops: &Mutex<DropLog>,
) {
    let (count, bytes) = queue.len();
    stats.queued.store(count, Ordering::Relaxed);
    stats.queued_bytes.store(bytes, Ordering::Relaxed);
    let c = queue.counters();
    for (field, v) in [
        (&stats.enqueued, c.enqueued),
        (&stats.sent, c.sent),
        (&stats.dropped, c.dropped),
        (&stats.rejected, c.rejected),
        (&stats.unchanged, c.unchanged),
        (&stats.received, c.received),
        (&stats.looped, c.looped),
        (&stats.connects, c.connects),
    ] {
        field.store(v, Ordering::Relaxed);
    }
    let below = |n: u64, max: u64| u128::from(n) * 10 < u128::from(max) * 9;
    if below(count, s.limits.max_messages)
        && below(bytes, s.limits.max_bytes)
        && stats.queue_full.swap(0, Ordering::Relaxed) == 1
    {
        let unreported = drops.lock().cleared(Instant::now());
        match unreported {
            Some(n) => {
                tracing::info!(bridge = %s.name, dropped = n, "bridge queue has room again; messages dropped since the last warning")
            }
            None => tracing::debug!(bridge = %s.name, "bridge queue has room again"),
        }
    }
}

/// The queue → the remote, in order, removing each message once acknowledged.
async fn send(
    s: Arc<BridgeSettings>,
    client: Client,
    queue: Arc<DiskQueue>,
    stats: Arc<BridgeStats>,
    wake: Arc<Notify>,
    drops: Arc<Mutex<DropLog>>,
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
                let _ = tokio::task::spawn_blocking(move || q.ack(&[], &bad)).await;
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
        let mut refused = Vec::new();
        let mut result = Some(first);
        while let Some(r) = result.take() {
            let Some((seq, _)) = inflight.pop_front() else {
                break;
            };
            match r {
                Ok(()) => done.push(seq),
                Err(ClientError::Closed) => return,
                Err(e) => {
                    refused.push(seq);
                    tracing::warn!(bridge = %s.name, error = %e, "the remote refused a bridged message; removed from the queue");
                }
            }
            stats
                .in_flight
                .store(inflight.len() as u64, Ordering::Relaxed);
            if let Some((_, next)) = inflight.front_mut() {
                result = futures_poll_now(next);
            }
        }
        let q = queue.clone();
        match tokio::task::spawn_blocking(move || q.ack(&done, &refused)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(bridge = %s.name, error = %e, "cannot remove acknowledged messages from the bridge queue (they will be sent again after a restart)")
            }
            Err(_) => return,
        }
        publish_stats(&queue, &stats, &s, &drops);
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
    queue: Arc<DiskQueue>,
    stats: Arc<BridgeStats>,
    drops: Arc<Mutex<DropLog>>,
) {
    let count = |delta: Counters| {
        queue.note(&delta);
        publish_stats(&queue, &stats, &s, &drops);
    };
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
                count(Counters {
                    connects: 1,
                    ..Counters::default()
                });
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
                    count(Counters {
                        looped: 1,
                        ..Counters::default()
                    });
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
                    count(Counters {
                        rejected: 1,
                        ..Counters::default()
                    });
                    continue;
                };
                p.topic = t;
                p.qos = QoS::AtMostOnce;
                p.packet_id = None;
                p.dup = false;
                p.properties.subscription_identifiers.clear();
                p.properties.topic_alias = None;
                p.properties.user_properties.push(origin.clone());
                // The same question as for any publication: a remote broker may not forge
                // the platform's own topics (the UNS of its tags, its host's STATE, `$SYS`).
                if broker.publish_bridged(&s.name, p) {
                    count(Counters {
                        received: 1,
                        ..Counters::default()
                    });
                } else {
                    count(Counters {
                        rejected: 1,
                        ..Counters::default()
                    });
                }
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

    #[test]
    fn drop_warnings_are_rate_limited_with_a_count() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut log = DropLog::default();
        assert_eq!(
            log.dropped(3, at(0)),
            Some(DropReport::First { dropped: 3 })
        );
        // Twice a second for a minute: silent, counted.
        for i in 1..120 {
            assert_eq!(log.dropped(1, at(i * 500)), None, "{i}");
        }
        assert_eq!(
            log.dropped(1, at(60_000)),
            Some(DropReport::Summary {
                dropped: 120,
                since: Duration::from_secs(60)
            })
        );
        assert_eq!(log.dropped(2, at(61_000)), None);
        // Room again: the held-back count is reported only once a line is due.
        assert_eq!(log.cleared(at(62_000)), None);
        assert_eq!(log.cleared(at(120_000)), Some(2));
        assert_eq!(log.cleared(at(200_000)), None, "nothing held back");
        // A new episode after a quiet minute starts with a first line again.
        assert_eq!(
            log.dropped(5, at(300_000)),
            Some(DropReport::First { dropped: 5 })
        );
    }
}
