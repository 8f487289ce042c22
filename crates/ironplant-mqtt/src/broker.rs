//! The broker: accepts MQTT connections, keeps sessions, routes PUBLISH through the
//! subscription tree, keeps retained messages, and delivers wills.
//!
//! Shape: one task per connection reads packets and routes them; each session's outgoing
//! messages go through a bounded queue to a writer task that coalesces everything queued into
//! one socket write (the main lever for throughput: one syscall for many small packets).
//! Routing holds the router lock to look up subscribers and hand each a message (a `try_send`,
//! never an await); encoding happens in the writers.
//!
//! Sessions outlive connections when the client asks for it (3.1.1 clean session = 0, 5.0
//! session expiry > 0): subscriptions stay in the tree, QoS 1/2 messages for an absent client
//! wait in its session (bounded, drops counted), and messages in flight are sent again when it
//! comes back ([`crate::session`]). With a state directory, retained messages and persistent
//! sessions are saved to disk ([`crate::persist`]) and survive a restart.
//!
//! Lock order: router, then a session's state. The writer and read loop take only the
//! session's lock.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::num::{NonZeroU16, NonZeroU32};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Notify};

use crate::auth::{AllowAll, Auth, ConnectInfo, Denied, Principal};
use crate::codec::{
    self, Connack, Connect, DecodeError, Disconnect, MqttString, Packet, ProtocolVersion, Publish,
    PublishResponse, QoS, ReasonCode, SubAck, UnsubAck,
};
use crate::persist::{Batch, Store, StoreError};
use crate::retained::RetainedStore;
use crate::session::{self, now_ms, Admit, Queued, Record, SessionState};
use crate::topic;
use crate::tree::{ClientId, Match, SubOptions, SubTree};

/// Room a connection's read buffer makes before each read. Small, because most connections are
/// idle devices (10,000 of them must fit in a few hundred MB); a busy connection's buffer
/// grows as its packets need.
const READ_CHUNK: usize = 2 * 1024;
/// A writer's buffer is given back when a burst left it larger than this.
const WRITE_KEEP: usize = 64 * 1024;
/// Session expiry meaning "never" (MQTT 5: 0xFFFFFFFF).
const NEVER: u32 = u32::MAX;

/// What happens when a client's queue is full (it reads slower than its messages arrive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overflow {
    /// Keep what is queued; new messages for it are dropped (and counted).
    #[default]
    DropNewest,
    /// End the connection (DISCONNECT 0x97 quota exceeded). QoS 1/2 messages for a
    /// persistent session wait in it, so a client that reconnects catches up without loss.
    Disconnect,
}

/// Broker settings.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Largest packet accepted (and announced to 5.0 clients).
    pub max_packet_size: usize,
    /// Messages queued for a connection's writer before the overflow policy applies.
    pub max_queue: usize,
    /// QoS 1/2 messages a session keeps while its client is away or its window is full, before
    /// new ones are dropped and counted.
    pub max_session_queue: usize,
    /// What happens when a connection's queue is full.
    pub overflow: Overflow,
    /// Time a new connection has to send CONNECT (slow-loris defence).
    pub connect_timeout: Duration,
    /// Longest a write to a client may take before the connection is considered dead (a
    /// client that stops reading does not hold its messages forever).
    pub write_timeout: Duration,
    /// Most QoS 1/2 messages in flight to one client (its Receive Maximum is honoured below
    /// this; 3.1.1 clients get this).
    pub max_inflight: u16,
    /// Receive Maximum announced to 5.0 clients: QoS 2 messages a client may have in flight
    /// to us (PUBREL not yet sent). More is a protocol violation (0x93).
    pub receive_maximum: u16,
    /// Topic aliases a 5.0 client may use towards us (0: none).
    pub topic_alias_maximum: u16,
    /// Longest session expiry granted, in seconds (3.1.1 persistent sessions get this too).
    pub max_session_expiry: u32,
    /// Where retained messages and persistent sessions are saved (`mqtt.redb` inside);
    /// `None`: kept in memory only.
    pub state_dir: Option<PathBuf>,
    /// How often changed state is saved.
    pub persist_interval: Duration,
    /// How often `$SYS/broker/...` statistics are published (`None`: never).
    pub sys_interval: Option<Duration>,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            max_packet_size: 1 << 20,
            max_queue: 10_000,
            max_session_queue: 10_000,

            overflow: Overflow::DropNewest,

            connect_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(30),
            max_inflight: 1_000,
            receive_maximum: 1_024,
            topic_alias_maximum: 64,
            max_session_expiry: 7 * 24 * 3600,
            state_dir: None,
            persist_interval: Duration::from_secs(1),
            sys_interval: Some(Duration::from_secs(10)),
        }
    }
}

/// Counters for `$SYS` and `/metrics`.
#[derive(Debug, Default)]
pub struct BrokerStats {
    pub connections: AtomicU64,
    pub connected: AtomicU64,
    pub messages_in: AtomicU64,
    pub messages_out: AtomicU64,
    /// Messages dropped because a client's queue (or its session's) was full.
    pub dropped: AtomicU64,
    /// Messages not delivered because their message expiry interval passed.
    pub expired: AtomicU64,
    pub protocol_errors: AtomicU64,
    /// Connections, publishes and subscriptions refused by the [`Auth`] hook.
    pub denied: AtomicU64,
    /// Failed saves of the state store.
    pub persist_errors: AtomicU64,
    /// Connections ended because their queue overflowed (`Overflow::Disconnect`).
    pub slow_disconnects: AtomicU64,
}

/// Sizes of the broker's state, for `$SYS` and `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BrokerCounts {
    pub sessions: usize,
    pub persistent_sessions: usize,
    pub subscriptions: usize,
    pub retained: usize,
    /// QoS 1/2 messages waiting in sessions (client away or window full).
    pub queued: usize,
}

#[derive(Debug, Clone)]
struct Retained {
    publish: Publish,
    stored_ms: u64,
}

impl Retained {
    fn expired(&self, now: u64) -> bool {
        self.publish
            .properties
            .message_expiry_interval
            .is_some_and(|e| now.saturating_sub(self.stored_ms) / 1000 >= u64::from(e))
    }
}

/// What a writer task is asked to do.
enum Out {
    /// A message routed to this client: QoS, retain flag and subscription identifiers as it is
    /// delivered; packet id and topic alias are the writer's business.
    Deliver(Publish),
    /// A control packet (acks, SUBACK, PINGRESP...).
    Packet(Packet),
    /// The client's window has room again: send waiting messages.
    Release,
    /// The session was resumed: send again what is in flight, then what waits.
    Resume,
}

/// A session: its name and delivery state (shared by the router and its connection's tasks).
struct Session {
    client_id: Arc<str>,
    state: Mutex<SessionState>,
}

/// Ends a connection from outside its read loop, with a reason.
struct Kick {
    notify: Notify,
    reason: Mutex<Option<ReasonCode>>,
    /// Set with the first kick (a cheap check on the routing path).
    kicked: AtomicBool,
}

impl Kick {
    fn new() -> Kick {
        Kick {
            notify: Notify::new(),
            reason: Mutex::new(None),
            kicked: AtomicBool::new(false),
        }
    }

    /// True the first time (later kicks keep the first reason).
    fn kick(&self, reason: ReasonCode) -> bool {
        let mut r = self.reason.lock();
        if r.is_some() {
            return false;
        }
        *r = Some(reason);
        self.kicked.store(true, Ordering::Release);
        self.notify.notify_one();
        true
    }
}

/// The live connection of a session.
struct Conn {
    tx: mpsc::Sender<Out>,
    /// Wakes the read loop to end the connection (takeover, overflow).
    kick: Arc<Kick>,
    /// Becomes true when the connection has fully detached from the session.
    done: watch::Receiver<bool>,
}

struct Entry {
    session: Arc<Session>,
    conn: Option<Conn>,
    /// Filters (as subscribed, incl. `$share/...`) and options, to restore and to clean up.
    subs: Vec<(String, SubOptions)>,
    /// Session expiry interval, seconds (0: ends with the connection).
    expiry: u32,
    last_seen_ms: u64,
    /// Counts attach/detach, so timers (expiry, delayed will) know if the client came back.
    generation: u64,
    internal: bool,
}

#[derive(Default)]
struct Router {
    tree: SubTree,
    retained: RetainedStore<Retained>,
    entries: HashMap<ClientId, Entry>,
    by_name: HashMap<Arc<str>, ClientId>,
    next_id: ClientId,
    /// Retained topics changed since the last save.
    dirty_retained: HashSet<String>,
    /// Persistent sessions ended since the last save.
    removed: Vec<String>,
}

impl Router {
    fn alloc_id(&mut self) -> ClientId {
        loop {
            self.next_id = self.next_id.wrapping_add(1);
            if !self.entries.contains_key(&self.next_id) {
                return self.next_id;
            }
        }
    }

    /// Ends a session: its subscriptions leave the tree, its record the store.
    fn remove(&mut self, id: ClientId) {
        if let Some(e) = self.entries.remove(&id) {
            if self.by_name.get(&e.session.client_id) == Some(&id) {
                self.by_name.remove(&e.session.client_id);
            }
            for (f, _) in &e.subs {
                self.tree.unsubscribe(f, id);
            }
            if e.expiry > 0 && !e.internal {
                self.removed.push(e.session.client_id.to_string());
            }
        }
    }
}

struct Inner {
    cfg: BrokerConfig,
    router: Mutex<Router>,
    stats: BrokerStats,
    auth: Arc<dyn Auth>,
    /// `None` without a state directory, and after [`Broker::close`].
    store: Mutex<Option<Store>>,
    /// Whether this broker persists at all (cheap check on the routing path).
    persistent: bool,
    started: Instant,
}

/// A running broker; cheap to clone.
#[derive(Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

/// The message a subscriber gets: QoS capped by its subscription, retain as published only when
/// asked, its matching subscription identifiers.
fn prepare(publish: &Publish, m: &Match) -> Publish {
    let mut p = publish.clone();
    p.qos = publish
        .qos
        .min(QoS::from_u8(m.options.qos).unwrap_or(QoS::AtMostOnce));
    p.retain = publish.retain && m.options.retain_as_published;
    p.dup = false;
    p.packet_id = None;
    p.properties.topic_alias = None;
    p.properties.subscription_identifiers = m
        .identifiers
        .iter()
        .copied()
        .filter_map(NonZeroU32::new)
        .collect();
    p
}

/// A message for a connection that is being closed: a persistent session keeps QoS 1/2 ones
/// (behind what the connection's queue holds). False when it is dropped.
fn keep_overflow(e: &Entry, p: Publish) -> bool {
    p.qos != QoS::AtMostOnce
        && e.expiry > 0
        && !matches!(
            e.session.state.lock().enqueue_overflow(Queued::new(p)),
            Admit::Overflow
        )
}

fn will_publish(will: &codec::Will) -> Publish {
    let mut p = Publish::new(will.topic.clone(), will.payload.clone());
    p.qos = will.qos;
    p.retain = will.retain;
    // MQTT 5 (3.1.3.2): the will's properties go out with it.
    let wp = &will.properties;
    p.properties.payload_format_indicator = wp.payload_format_indicator;
    p.properties.message_expiry_interval = wp.message_expiry_interval;
    p.properties.content_type = wp.content_type.clone();
    p.properties.response_topic = wp.response_topic.clone();
    p.properties.correlation_data = wp.correlation_data.clone();
    p.properties.user_properties = wp.user_properties.clone();
    p
}

impl Broker {
    /// A broker that keeps its state in memory only (tests, embedded use), allowing everyone.
    pub fn new(cfg: BrokerConfig) -> Broker {
        Self::build(cfg, Arc::new(AllowAll), None)
    }

    /// A broker with an authentication/authorisation hook and, when `cfg.state_dir` is set,
    /// the retained messages and persistent sessions of the previous run. Call inside a tokio
    /// runtime: it starts the save and `$SYS` tasks.
    pub fn open(cfg: BrokerConfig, auth: Arc<dyn Auth>) -> Result<Broker, StoreError> {
        let store = match &cfg.state_dir {
            Some(dir) => Some(Store::open(&dir.join("mqtt.redb"))?),
            None => None,
        };
        let loaded = match &store {
            Some(s) => Some(s.load()?),
            None => None,
        };
        let broker = Self::build(cfg, auth, store);
        if let Some(l) = loaded {
            broker.restore(l);
        }
        Ok(broker)
    }

    fn build(cfg: BrokerConfig, auth: Arc<dyn Auth>, store: Option<Store>) -> Broker {
        let broker = Broker {
            inner: Arc::new(Inner {
                cfg,
                router: Mutex::new(Router::default()),
                stats: BrokerStats::default(),
                auth,
                persistent: store.is_some(),
                store: Mutex::new(store),
                started: Instant::now(),
            }),
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            broker.start_background();
        }
        broker
    }

    fn start_background(&self) {
        if self.inner.persistent {
            let weak = Arc::downgrade(&self.inner);
            let every = self.inner.cfg.persist_interval;
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let Some(inner) = weak.upgrade() else { break };
                    let broker = Broker { inner };
                    let _ = tokio::task::spawn_blocking(move || broker.save(false)).await;
                }
            });
        }
        if let Some(every) = self.inner.cfg.sys_interval {
            let weak = Arc::downgrade(&self.inner);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                loop {
                    tick.tick().await;
                    let Some(inner) = weak.upgrade() else { break };
                    Broker { inner }.publish_sys();
                }
            });
        }
    }

    pub fn stats(&self) -> &BrokerStats {
        &self.inner.stats
    }

    pub fn counts(&self) -> BrokerCounts {
        let r = self.inner.router.lock();
        let mut c = BrokerCounts {
            retained: r.retained.len(),
            ..BrokerCounts::default()
        };
        for e in r.entries.values().filter(|e| !e.internal) {
            c.sessions += 1;
            c.persistent_sessions += usize::from(e.expiry > 0);
            c.subscriptions += e.subs.len();
            c.queued += e.session.state.lock().pending_len();
        }
        c
    }

    /// Saves everything that changed (and, with `all`, every persistent session, stamped as
    /// seen now: for a clean shutdown). Blocking; a no-op without a state directory.
    pub fn save(&self, all: bool) {
        // One save at a time (the store's lock), so batches reach the disk in order.
        let store = self.inner.store.lock();
        let Some(store) = store.as_ref() else {
            return;
        };
        let batch = self.snapshot(all);
        if let Err(e) = store.save(&batch) {
            self.inner
                .stats
                .persist_errors
                .fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %e, "cannot save the MQTT state; retrying at the next interval");
            // Keep the changes for the next attempt.
            let mut r = self.inner.router.lock();
            for (topic, _) in batch.retained {
                r.dirty_retained.insert(topic);
            }
            for (name, rec) in batch.sessions {
                match rec {
                    None => r.removed.push(name),
                    Some(_) => {
                        if let Some(id) = r.by_name.get(name.as_str()).copied() {
                            if let Some(e) = r.entries.get(&id) {
                                e.session.state.lock().dirty = true;
                            }
                        }
                    }
                }
            }
        }
    }

    /// Saves all state now.
    pub fn flush(&self) {
        self.save(true);
    }

    /// Saves all state and closes the store (call on shutdown, after the listeners stopped);
    /// nothing is saved after this. The state directory can then be opened again.
    pub fn close(&self) {
        self.save(true);
        self.inner.store.lock().take();
    }

    fn snapshot(&self, all: bool) -> Batch {
        let mut batch = Batch::default();
        let now = now_ms();
        let mut r = self.inner.router.lock();
        let r = &mut *r;
        for topic in r.dirty_retained.drain() {
            let m = r
                .retained
                .get(&topic)
                .map(|m| (m.stored_ms, m.publish.clone()));
            batch.retained.push((topic, m));
        }
        for name in r.removed.drain(..) {
            batch.sessions.push((name, None));
        }
        for e in r.entries.values_mut() {
            if e.expiry == 0 || e.internal {
                continue;
            }
            let mut st = e.session.state.lock();
            if !(st.dirty || all) {
                continue;
            }
            if e.conn.is_some() {
                e.last_seen_ms = now;
            }
            let rec = session::encode_record(e.expiry, e.last_seen_ms, &e.subs, &st);
            st.dirty = false;
            batch
                .sessions
                .push((e.session.client_id.to_string(), Some(rec)));
        }
        batch
    }

    /// Puts back what the store held: retained messages, and sessions (offline, with their
    /// subscriptions and queued messages, expiring on schedule).
    fn restore(&self, loaded: crate::persist::Loaded) {
        let cfg = &self.inner.cfg;
        let now = now_ms();
        for what in &loaded.damaged {
            tracing::warn!(%what, "unreadable entry in the MQTT state store; skipped");
        }
        let mut timers = Vec::new();
        {
            let mut r = self.inner.router.lock();
            for (stored_ms, publish) in loaded.retained {
                let topic = publish.topic.as_str().to_owned();
                let m = Retained { publish, stored_ms };
                if !m.expired(now) {
                    r.retained.set(&topic, Some(m));
                }
            }
            for (name, bytes) in loaded.sessions {
                let rec = match Record::decode(
                    &bytes,
                    usize::from(cfg.max_inflight),
                    cfg.max_session_queue,
                ) {
                    Ok(rec) => rec,
                    Err(e) => {
                        tracing::warn!(client = %name, error = %e, "unreadable MQTT session; dropped");
                        r.removed.push(name);
                        continue;
                    }
                };
                let expiry = rec.expiry.min(cfg.max_session_expiry);
                let gone_s = now.saturating_sub(rec.last_seen_ms) / 1000;
                if expiry != NEVER && gone_s >= u64::from(expiry) {
                    r.removed.push(name);
                    continue;
                }
                let id = r.alloc_id();
                let client_id: Arc<str> = name.into();
                for (f, o) in &rec.subscriptions {
                    r.tree.subscribe(f, id, *o);
                }
                r.by_name.insert(client_id.clone(), id);
                r.entries.insert(
                    id,
                    Entry {
                        session: Arc::new(Session {
                            client_id: client_id.clone(),
                            state: Mutex::new(rec.state),
                        }),
                        conn: None,
                        subs: rec.subscriptions,
                        expiry,
                        last_seen_ms: rec.last_seen_ms,
                        generation: 0,
                        internal: false,
                    },
                );
                if expiry != NEVER {
                    let left = u64::from(expiry).saturating_sub(gone_s);
                    timers.push((client_id, Duration::from_secs(left)));
                }
            }
            tracing::info!(
                retained = r.retained.len(),
                sessions = r.entries.len(),
                "MQTT state restored"
            );
        }
        if tokio::runtime::Handle::try_current().is_ok() {
            for (client_id, after) in timers {
                self.expire_later(client_id, 0, after);
            }
        }
    }

    /// Ends the session `client_id` after `after`, unless its client came back meanwhile.
    fn expire_later(&self, client_id: Arc<str>, generation: u64, after: Duration) {
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let Some(inner) = weak.upgrade() else { return };
            let mut r = inner.router.lock();
            let Some(id) = r.by_name.get(&client_id).copied() else {
                return;
            };
            let stale = r
                .entries
                .get(&id)
                .is_some_and(|e| e.conn.is_none() && e.generation == generation);
            if stale {
                tracing::debug!(client = %client_id, "MQTT session expired");
                r.remove(id);
            }
        });
    }

    /// Accepts connections until the listener fails.
    pub async fn serve(&self, listener: TcpListener) -> std::io::Result<()> {
        loop {
            let (stream, peer) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            let broker = self.clone();
            tokio::spawn(async move {
                if let Err(e) = broker.connection(stream, peer, None).await {
                    tracing::debug!(%peer, error = %e, "mqtt connection ended");
                }
            });
        }
    }

    /// Serves one already accepted connection over any byte stream (a TLS stream, a WebSocket
    /// adapter); returns when the connection ends.
    pub async fn serve_connection<S: Transport>(
        &self,
        stream: S,
        peer: SocketAddr,
    ) -> std::io::Result<()> {
        self.connection(stream, peer, None).await
    }

    /// Like [`Broker::serve_connection`], for a transport that verified a client certificate:
    /// its subject reaches the [`Auth`] hook.
    pub async fn serve_authenticated<S: Transport>(
        &self,
        stream: S,
        peer: SocketAddr,
        certificate_subject: Option<String>,
    ) -> std::io::Result<()> {
        self.connection(stream, peer, certificate_subject).await
    }

    /// An in-process subscriber (Sparkplug host, bridge): every message matching `filter`
    /// (wildcards allowed, no `$share`) arrives on the returned channel, at QoS 0 and with its
    /// retain flag, retained messages first. When the channel is full, messages are dropped and
    /// counted like any slow client's. Dropping the receiver ends the subscription.
    pub fn subscribe_internal(
        &self,
        name: &str,
        filter: &str,
        capacity: usize,
    ) -> Result<mpsc::Receiver<Publish>, topic::TopicError> {
        topic::validate_topic_filter(filter)?;
        let (tx, mut rx) = mpsc::channel::<Out>(capacity.max(1));
        let (out_tx, out_rx) = mpsc::channel::<Publish>(capacity.max(1));
        let opts = SubOptions {
            qos: 0,
            no_local: false,
            retain_as_published: true,
            identifier: 0,
        };
        let id = {
            let mut r = self.inner.router.lock();
            let id = r.alloc_id();
            let (_done_tx, done) = watch::channel(false);
            r.entries.insert(
                id,
                Entry {
                    session: Arc::new(Session {
                        client_id: format!("$internal/{name}").into(),
                        state: Mutex::new(SessionState::new(1, 0)),
                    }),
                    conn: Some(Conn {
                        tx,
                        kick: Arc::new(Kick::new()),
                        done,
                    }),
                    subs: vec![(filter.to_owned(), opts)],
                    expiry: 0,
                    last_seen_ms: 0,
                    generation: 0,
                    internal: true,
                },
            );
            r.tree.subscribe(filter, id, opts);
            let now = now_ms();
            for (_, m) in r.retained.matching(filter) {
                if m.expired(now) {
                    continue;
                }
                let mut p = m.publish.clone();
                p.retain = true;
                if out_tx.try_send(p).is_err() {
                    self.inner.stats.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
            id
        };
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            while let Some(item) = rx.recv().await {
                match item {
                    Out::Deliver(mut publish) => {
                        publish.qos = QoS::AtMostOnce;
                        publish.packet_id = None;
                        if out_tx.send(publish).await.is_err() {
                            break;
                        }
                    }
                    Out::Packet(_) | Out::Release | Out::Resume => {}
                }
            }
            if let Some(inner) = weak.upgrade() {
                inner.router.lock().remove(id);
            }
        });
        Ok(out_rx)
    }

    /// Publishes a message from inside the platform (UNS, $SYS, Sparkplug host commands).
    pub fn publish(&self, publish: Publish) {
        self.route(None, publish);
    }

    fn publish_sys(&self) {
        let st = &self.inner.stats;
        let c = self.counts();
        let items: [(&str, String); 11] = [
            (
                "version",
                format!("ironplant {}", env!("CARGO_PKG_VERSION")),
            ),
            (
                "uptime",
                format!("{} seconds", self.inner.started.elapsed().as_secs()),
            ),
            (
                "clients/connected",
                st.connected.load(Ordering::Relaxed).to_string(),
            ),
            ("clients/total", c.sessions.to_string()),
            (
                "messages/received",
                st.messages_in.load(Ordering::Relaxed).to_string(),
            ),
            (
                "messages/sent",
                st.messages_out.load(Ordering::Relaxed).to_string(),
            ),
            (
                "messages/dropped",
                st.dropped.load(Ordering::Relaxed).to_string(),
            ),
            (
                "messages/expired",
                st.expired.load(Ordering::Relaxed).to_string(),
            ),
            ("messages/queued", c.queued.to_string()),
            ("retained messages/count", c.retained.to_string()),
            ("subscriptions/count", c.subscriptions.to_string()),
        ];
        for (name, value) in items {
            let topic = MqttString::from_utf8(Bytes::from(format!("$SYS/broker/{name}")));
            if let Ok(topic) = topic {
                let mut p = Publish::new(topic, Bytes::from(value));
                p.retain = true;
                self.route_inner(None, p, false);
            }
        }
    }

    fn route(&self, from: Option<ClientId>, publish: Publish) {
        self.route_inner(from, publish, true);
    }

    fn route_inner(&self, from: Option<ClientId>, publish: Publish, count: bool) {
        let st = &self.inner.stats;
        if count {
            st.messages_in.fetch_add(1, Ordering::Relaxed);
        }
        let mut matches: Vec<Match> = Vec::new();
        let mut r = self.inner.router.lock();
        let r = &mut *r;
        if publish.retain {
            let topic = publish.topic.as_str();
            if publish.payload.is_empty() {
                r.retained.set(topic, None);
            } else {
                // Keep the payload apart from the connection's read buffer it was sliced from.
                let mut kept = publish.clone();
                kept.payload = Bytes::copy_from_slice(&publish.payload);
                kept.dup = false;
                kept.packet_id = None;
                kept.properties.topic_alias = None;
                r.retained.set(
                    topic,
                    Some(Retained {
                        publish: kept,
                        stored_ms: if publish.properties.message_expiry_interval.is_some() {
                            now_ms()
                        } else {
                            0
                        },
                    }),
                );
            }
            if self.inner.persistent && !topic.starts_with("$SYS/") {
                r.dirty_retained.insert(topic.to_owned());
            }
        }
        r.tree.matches(publish.topic.as_str(), &mut matches);
        let (mut sent, mut dropped) = (0u64, 0u64);
        for m in &matches {
            if m.options.no_local && Some(m.client) == from && !m.shared {
                continue;
            }
            let Some(e) = r.entries.get(&m.client) else {
                continue;
            };
            let p = prepare(&publish, m);
            let p = match &e.conn {
                // A connection being closed (taken over, or too slow) gets nothing more: what
                // is for its session waits behind what its queue still holds.
                Some(c) if c.kick.kicked.load(Ordering::Acquire) => {
                    dropped += u64::from(!keep_overflow(e, p));
                    continue;
                }
                Some(c) => match c.tx.try_send(Out::Deliver(p)) {
                    Ok(()) => {
                        sent += 1;
                        continue;
                    }
                    Err(mpsc::error::TrySendError::Full(Out::Deliver(p)))
                        if self.inner.cfg.overflow == Overflow::Disconnect =>
                    {
                        if c.kick.kick(ReasonCode::QuotaExceeded) {
                            st.slow_disconnects.fetch_add(1, Ordering::Relaxed);
                        }
                        dropped += u64::from(!keep_overflow(e, p));
                        continue;
                    }
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        dropped += 1;
                        continue;
                    }
                    // The connection is going: keep the message in its session.
                    Err(mpsc::error::TrySendError::Closed(Out::Deliver(p))) => p,
                    Err(mpsc::error::TrySendError::Closed(_)) => continue,
                },
                None => p,
            };
            // The client is away: QoS 1/2 messages wait in a persistent session.
            if p.qos != QoS::AtMostOnce && e.expiry > 0 {
                match e.session.state.lock().enqueue(Queued::new(p)) {
                    Admit::Overflow => dropped += 1,
                    _ => sent += 1,
                }
            }
        }
        if sent > 0 {
            st.messages_out.fetch_add(sent, Ordering::Relaxed);
        }
        if dropped > 0 {
            st.dropped.fetch_add(dropped, Ordering::Relaxed);
        }
    }

    async fn connection<S: Transport>(
        &self,
        mut stream: S,
        peer: SocketAddr,
        certificate_subject: Option<String>,
    ) -> std::io::Result<()> {
        let cfg = &self.inner.cfg;
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        // CONNECT first, within the connect timeout.
        let connect = match tokio::time::timeout(
            cfg.connect_timeout,
            read_connect(&mut stream, &mut buf, cfg.max_packet_size),
        )
        .await
        {
            Err(_) => {
                tracing::debug!(%peer, "no CONNECT within the timeout; closing");
                return Ok(());
            }
            Ok(Err(e)) => return Err(e),
            Ok(Ok(Err(e))) => {
                self.inner
                    .stats
                    .protocol_errors
                    .fetch_add(1, Ordering::Relaxed);
                let version = if matches!(e, DecodeError::UnsupportedProtocolVersion { .. }) {
                    ProtocolVersion::V311
                } else {
                    ProtocolVersion::V5
                };
                let code = if version == ProtocolVersion::V311 {
                    ReasonCode::UnsupportedProtocolVersion
                } else {
                    e.reason_code()
                };
                tracing::debug!(%peer, error = %e, "bad CONNECT");
                return refuse(&mut stream, version, code).await;
            }
            Ok(Ok(Ok(c))) => c,
        };
        let version = connect.protocol_version;
        let (client_id, assigned) = if connect.client_id.as_str().is_empty() {
            let id = format!(
                "ironplant-{}",
                self.inner.stats.connections.load(Ordering::Relaxed) + 1
            );
            (id, true)
        } else {
            (connect.client_id.as_str().to_owned(), false)
        };
        if assigned && version == ProtocolVersion::V311 && !connect.clean_start {
            return refuse(&mut stream, version, ReasonCode::ClientIdentifierNotValid).await;
        }
        let info = ConnectInfo {
            peer,
            protocol: version,
            client_id: &client_id,
            username: connect.username.as_ref().map(MqttString::as_str),
            password: connect.password.as_deref(),
            certificate_subject: certificate_subject.as_deref(),
        };
        let principal = match self.inner.auth.connect(&info) {
            Ok(p) => p,
            Err(code) => {
                self.inner.stats.denied.fetch_add(1, Ordering::Relaxed);
                refuse(&mut stream, version, code).await?;
                self.inner.auth.denied(None, peer, Denied::Connect(code));
                return Ok(());
            }
        };
        let props = &connect.properties;
        let requested = if version == ProtocolVersion::V5 {
            props.session_expiry_interval.unwrap_or(0)
        } else if connect.clean_start {
            0
        } else {
            NEVER
        };
        let expiry = requested.min(cfg.max_session_expiry);
        let window = if version == ProtocolVersion::V5 {
            props.receive_maximum.map_or(u16::MAX, NonZeroU16::get)
        } else {
            u16::MAX
        }
        .min(cfg.max_inflight);
        let limits = ClientLimits {
            topic_alias_maximum: if version == ProtocolVersion::V5 {
                props.topic_alias_maximum.unwrap_or(0)
            } else {
                0
            },
            max_packet_size: props
                .maximum_packet_size
                .map_or(usize::MAX, |m| m.get() as usize),
        };

        let mut ack_props = codec::ConnackProperties::default();
        if version == ProtocolVersion::V5 {
            if assigned {
                ack_props.assigned_client_identifier =
                    MqttString::from_utf8(Bytes::from(client_id.clone())).ok();
            }
            ack_props.maximum_packet_size = u32::try_from(cfg.max_packet_size)
                .ok()
                .and_then(NonZeroU32::new);
            ack_props.receive_maximum = NonZeroU16::new(cfg.receive_maximum);
            ack_props.topic_alias_maximum = Some(cfg.topic_alias_maximum);
            if expiry != requested {
                ack_props.session_expiry_interval = Some(expiry);
            }
        }
        let (tx, rx) = mpsc::channel::<Out>(cfg.max_queue);
        let kick = Arc::new(Kick::new());
        let (done_tx, done_rx) = watch::channel(false);
        let (id, session, generation) = self
            .attach(
                &client_id,
                connect.clean_start,
                expiry,
                usize::from(window),
                Conn {
                    tx: tx.clone(),
                    kick: kick.clone(),
                    done: done_rx,
                },
                ack_props,
            )
            .await;
        self.inner.stats.connections.fetch_add(1, Ordering::Relaxed);
        self.inner.stats.connected.fetch_add(1, Ordering::Relaxed);
        let (read_half, write_half) = Transport::split(stream);
        let stop = Arc::new(Kick::new());
        let writer = tokio::spawn(writer(
            write_half,
            rx,
            version,
            session.clone(),
            limits,
            self.inner.clone(),
            stop.clone(),
        ));
        let mut ctx = ConnCtx {
            id,
            version,
            peer,
            session: session.clone(),
            principal,
            aliases: Vec::new(),
            expiry,
            requested_zero: requested == 0,
        };
        let outcome = self
            .read_loop(read_half, buf, &mut ctx, &connect, &tx, &kick)
            .await;
        // Stop the writer, then detach: what it had not sent goes back to the session.
        let close = match &outcome {
            Ok(Goodbye::Kick(code)) => Some(*code),
            _ => None,
        };
        // (A kick already carries its reason; the first reason wins.)
        match close {
            Some(code) => {
                stop.kick(code);
            }
            None => stop.notify.notify_one(),
        }
        drop(tx);
        let leftovers = writer.await.ok();
        let ended = self.detach(id, ctx.expiry, leftovers);
        self.inner.stats.connected.fetch_sub(1, Ordering::Relaxed);
        let _ = done_tx.send(true);
        // The will goes out unless the client said goodbye properly; MQTT 5 may delay it
        // (will delay interval), and then it is cancelled if the client comes back in time.
        if let (Some(will), false) = (&connect.will, matches!(outcome, Ok(Goodbye::Clean))) {
            let delay = will
                .properties
                .will_delay_interval
                .unwrap_or(0)
                .min(ctx.expiry);
            let p = will_publish(will);
            if delay == 0 || ended {
                self.route(None, p);
            } else {
                self.will_later(session.client_id.clone(), generation + 1, delay, p);
            }
        }
        if !ended && ctx.expiry != NEVER {
            self.expire_later(
                session.client_id.clone(),
                generation + 1,
                Duration::from_secs(u64::from(ctx.expiry)),
            );
        }
        outcome.map(|_| ())
    }

    fn will_later(&self, client_id: Arc<str>, generation: u64, delay: u32, p: Publish) {
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(u64::from(delay))).await;
            let Some(inner) = weak.upgrade() else { return };
            let broker = Broker { inner };
            let due = {
                let r = broker.inner.router.lock();
                match r.by_name.get(&client_id).and_then(|id| r.entries.get(id)) {
                    // The session is still the one the client left, and it has not returned.
                    Some(e) => e.conn.is_none() && e.generation == generation,
                    // The session ended meanwhile (its will should have gone then; send now).
                    None => true,
                }
            };
            if due {
                broker.route(None, p);
            }
        });
    }

    /// Binds a connection to its session: takes over a live connection of the same client id
    /// (waiting until it has detached), resumes the stored session unless `clean` (or starts a
    /// new one). CONNACK (with `ack_props`) and the resume order are queued before the
    /// connection becomes visible to routing, so they come first. Returns (id, session,
    /// generation).
    async fn attach(
        &self,
        client_id: &str,
        clean: bool,
        expiry: u32,
        window: usize,
        conn: Conn,
        ack_props: codec::ConnackProperties,
    ) -> (ClientId, Arc<Session>, u64) {
        let greet = |conn: &Conn, present: bool| {
            let ack = Packet::Connack(Connack {
                session_present: present,
                reason_code: ReasonCode::Success,
                properties: ack_props.clone(),
            });
            let _ = conn.tx.try_send(Out::Packet(ack));
            let _ = conn.tx.try_send(Out::Resume);
        };
        let cfg = &self.inner.cfg;
        // Session takeover: the older connection is closed first.
        for _ in 0..3 {
            let old = {
                let r = self.inner.router.lock();
                r.by_name
                    .get(client_id)
                    .and_then(|id| r.entries.get(id))
                    .and_then(|e| e.conn.as_ref())
                    .map(|c| {
                        c.kick.kick(ReasonCode::SessionTakenOver);
                        c.done.clone()
                    })
            };
            let Some(mut done) = old else { break };
            let _ =
                tokio::time::timeout(Duration::from_secs(5), done.wait_for(|finished| *finished))
                    .await;
        }
        let mut r = self.inner.router.lock();
        let existing = r.by_name.get(client_id).copied();
        if let Some(old) = existing {
            let live = r.entries.get(&old).is_some_and(|e| e.conn.is_some());
            if clean || live {
                r.remove(old);
            }
        }
        if let Some(id) = r.by_name.get(client_id).copied() {
            if let Some(e) = r.entries.get_mut(&id) {
                greet(&conn, true);
                e.conn = Some(conn);
                e.expiry = expiry;
                e.generation += 1;
                let mut st = e.session.state.lock();
                st.window = window.max(1);
                st.dirty = true;
                return (id, e.session.clone(), e.generation);
            }
        }
        let id = r.alloc_id();
        let client_id: Arc<str> = client_id.into();
        let session = Arc::new(Session {
            client_id: client_id.clone(),
            state: Mutex::new(SessionState::new(window, cfg.max_session_queue)),
        });
        session.state.lock().dirty = true;
        greet(&conn, false);
        r.by_name.insert(client_id, id);
        r.entries.insert(
            id,
            Entry {
                session: session.clone(),
                conn: Some(conn),
                subs: Vec::new(),
                expiry,
                last_seen_ms: now_ms(),
                generation: 0,
                internal: false,
            },
        );
        (id, session, 0)
    }

    /// Unbinds the connection from its session. A session with expiry 0 ends here (true);
    /// otherwise the messages the writer had not sent go back to the session, in order.
    fn detach(&self, id: ClientId, expiry: u32, leftovers: Option<Leftovers>) -> bool {
        let mut r = self.inner.router.lock();
        let Some(e) = r.entries.get_mut(&id) else {
            return true; // already removed (taken over with a clean start)
        };
        e.conn = None;
        e.generation += 1;
        e.last_seen_ms = now_ms();
        e.expiry = expiry;
        if expiry == 0 {
            r.remove(id);
            return true;
        }
        let mut st = e.session.state.lock();
        st.dirty = true;
        if let Some(mut rx) = leftovers {
            let mut waiting = Vec::new();
            while let Ok(item) = rx.try_recv() {
                waiting.push(item);
            }
            let mut dropped = 0;
            for item in waiting {
                if let Out::Deliver(p) = item {
                    if p.qos != QoS::AtMostOnce {
                        if let Admit::Overflow = st.enqueue(Queued::new(p)) {
                            dropped += 1;
                        }
                    }
                }
            }
            if dropped > 0 {
                self.inner
                    .stats
                    .dropped
                    .fetch_add(dropped, Ordering::Relaxed);
            }
        }
        st.absorb_overflow();
        false
    }

    async fn read_loop<R: AsyncRead + Unpin>(
        &self,
        mut rd: R,
        mut buf: BytesMut,
        ctx: &mut ConnCtx,
        connect: &Connect,
        tx: &mpsc::Sender<Out>,
        kick: &Kick,
    ) -> std::io::Result<Goodbye> {
        let max = self.inner.cfg.max_packet_size;
        // Keep alive: 1.5 times the client's interval without any packet closes the connection.
        let idle = (connect.keep_alive > 0)
            .then(|| Duration::from_millis(u64::from(connect.keep_alive) * 1500));
        let mut replies: Vec<Out> = Vec::new();
        loop {
            // Decode everything buffered: one freeze, then zero-copy slices per packet (their
            // payloads share this buffer); the incomplete tail goes back for the next read.
            let frozen = buf.split().freeze();
            let mut off = 0;
            let mut end = None;
            loop {
                let rest = frozen.slice(off..);
                match codec::decode_bytes(&rest, ctx.version, max) {
                    Ok(Some((packet, used))) => {
                        off += used;
                        if let Some(bye) = self.handle(ctx, packet, &mut replies) {
                            end = Some(bye);
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        self.inner
                            .stats
                            .protocol_errors
                            .fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(client = %ctx.session.client_id, error = %e, "malformed packet; disconnecting");
                        end = Some(Goodbye::Kick(e.reason_code()));
                        break;
                    }
                }
            }
            // Acknowledgements wait for room in the writer's queue: a client that does not read
            // its acks stops being read (back-pressure), it does not lose them.
            for r in replies.drain(..) {
                if tx.send(r).await.is_err() {
                    return Ok(Goodbye::Lost);
                }
            }
            if let Some(bye) = end {
                return Ok(bye);
            }
            buf.extend_from_slice(&frozen[off..]);
            // A fresh buffer after split(): make room for a large read, not 64 bytes at a time.
            buf.reserve(READ_CHUNK);
            let read = async {
                match idle {
                    Some(d) => match tokio::time::timeout(d, rd.read_buf(&mut buf)).await {
                        Ok(r) => r.map(Some),
                        Err(_) => Ok(None),
                    },
                    None => rd.read_buf(&mut buf).await.map(Some),
                }
            };
            let n = tokio::select! {
                r = read => r?,
                () = kick.notify.notified() => {
                    let reason = kick.reason.lock().unwrap_or(ReasonCode::UnspecifiedError);
                    return Ok(Goodbye::Kick(reason));
                }
            };
            match n {
                None => return Ok(Goodbye::Kick(ReasonCode::KeepAliveTimeout)),
                Some(0) => return Ok(Goodbye::Lost),
                Some(_) => {}
            }
        }
    }

    fn deny(&self, ctx: &ConnCtx, what: Denied<'_>) {
        self.inner.stats.denied.fetch_add(1, Ordering::Relaxed);
        tracing::info!(client = %ctx.session.client_id, peer = %ctx.peer, ?what, "MQTT request denied");
        self.inner.auth.denied(Some(&ctx.principal), ctx.peer, what);
    }

    /// Handles one packet, pushing what to send back; `Some` ends the connection.
    fn handle(&self, ctx: &mut ConnCtx, packet: Packet, out: &mut Vec<Out>) -> Option<Goodbye> {
        let cfg = &self.inner.cfg;
        let v5 = ctx.version == ProtocolVersion::V5;
        let ack = |pid, code: ReasonCode| {
            let mut r = PublishResponse::new(pid);
            if v5 {
                r.reason_code = code;
            }
            r
        };
        match packet {
            Packet::Publish(mut p) => {
                // MQTT 5 topic aliases: a non-empty topic (re)binds the alias, an empty one
                // uses it.
                if let Some(alias) = p.properties.topic_alias.take() {
                    let a = usize::from(alias.get());
                    if a > usize::from(cfg.topic_alias_maximum) {
                        return Some(Goodbye::Kick(ReasonCode::TopicAliasInvalid));
                    }
                    if ctx.aliases.len() < a {
                        ctx.aliases.resize(a, None);
                    }
                    if p.topic.as_str().is_empty() {
                        match &ctx.aliases[a - 1] {
                            Some(t) => p.topic = t.clone(),
                            None => return Some(Goodbye::Kick(ReasonCode::ProtocolError)),
                        }
                    } else {
                        ctx.aliases[a - 1] = Some(p.topic.clone());
                    }
                }
                if topic::validate_topic_name(p.topic.as_str()).is_err() {
                    return Some(Goodbye::Kick(ReasonCode::TopicNameInvalid));
                }
                let (qos, pid) = (p.qos, p.packet_id);
                if !self
                    .inner
                    .auth
                    .may_publish(&ctx.principal, p.topic.as_str())
                {
                    self.deny(ctx, Denied::Publish(p.topic.as_str()));
                    // 3.1.1 has no way to say no: the message is acknowledged and dropped.
                    match (qos, pid) {
                        (QoS::AtLeastOnce, Some(pid)) => out.push(Out::Packet(Packet::PubAck(
                            ack(pid, ReasonCode::NotAuthorized),
                        ))),
                        (QoS::ExactlyOnce, Some(pid)) => out.push(Out::Packet(Packet::PubRec(
                            ack(pid, ReasonCode::NotAuthorized),
                        ))),
                        _ => {}
                    }
                    return None;
                }
                match (qos, pid) {
                    (QoS::ExactlyOnce, Some(pid)) => {
                        let new = {
                            let mut st = ctx.session.state.lock();
                            if st.incoming_qos2_len() >= usize::from(cfg.receive_maximum)
                                && !st.pubrel_pending(pid)
                            {
                                return Some(Goodbye::Kick(ReasonCode::ReceiveMaximumExceeded));
                            }
                            st.incoming_qos2(pid)
                        };
                        // Exactly once: a re-sent PUBLISH whose PUBREL is still to come is
                        // acknowledged again but not routed again.
                        if new {
                            self.route(Some(ctx.id), p);
                        }
                        out.push(Out::Packet(Packet::PubRec(PublishResponse::new(pid))));
                    }
                    (QoS::AtLeastOnce, Some(pid)) => {
                        // Route (and store a retained message) before acknowledging: once the
                        // publisher has its PUBACK, a new subscriber must find it.
                        self.route(Some(ctx.id), p);
                        out.push(Out::Packet(Packet::PubAck(PublishResponse::new(pid))));
                    }
                    _ => self.route(Some(ctx.id), p),
                }
            }
            Packet::PubRel(r) => {
                let known = ctx.session.state.lock().pubrel(r.packet_id);
                out.push(Out::Packet(Packet::PubComp(ack(r.packet_id, found(known)))));
            }
            Packet::PubAck(r) => {
                if ctx.session.state.lock().puback(r.packet_id) {
                    out.push(Out::Release);
                }
            }
            Packet::PubRec(r) => {
                let failed = r.reason_code.is_error();
                let known = ctx.session.state.lock().pubrec(r.packet_id, failed);
                if failed {
                    out.push(Out::Release);
                } else {
                    out.push(Out::Packet(Packet::PubRel(ack(r.packet_id, found(known)))));
                }
            }
            Packet::PubComp(r) => {
                if ctx.session.state.lock().pubcomp(r.packet_id) {
                    out.push(Out::Release);
                }
            }
            Packet::Subscribe(s) => {
                let mut codes = Vec::with_capacity(s.subscriptions.len());
                let mut retained: Vec<Publish> = Vec::new();
                let mut denied: Vec<String> = Vec::new();
                {
                    let now = now_ms();
                    let mut r = self.inner.router.lock();
                    let r = &mut *r;
                    for sub in &s.subscriptions {
                        let filter = sub.filter.as_str();
                        if topic::validate_topic_filter(filter).is_err() {
                            codes.push(ReasonCode::TopicFilterInvalid);
                            continue;
                        }
                        let shared = crate::tree::split_shared(filter);
                        let plain = shared.map_or(filter, |(_, f)| f);
                        if !self.inner.auth.may_subscribe(&ctx.principal, plain) {
                            denied.push(filter.to_owned());
                            codes.push(if v5 {
                                ReasonCode::NotAuthorized
                            } else {
                                ReasonCode::UnspecifiedError
                            });
                            continue;
                        }
                        let opts = SubOptions {
                            qos: sub.options.qos as u8,
                            no_local: sub.options.no_local,
                            retain_as_published: sub.options.retain_as_published,
                            identifier: s.properties.subscription_identifier.map_or(0, |i| i.get()),
                        };
                        let new = r.tree.subscribe(filter, ctx.id, opts);
                        if let Some(e) = r.entries.get_mut(&ctx.id) {
                            match e.subs.iter_mut().find(|(f, _)| f == filter) {
                                Some(slot) => slot.1 = opts,
                                None => e.subs.push((filter.to_owned(), opts)),
                            }
                            e.session.state.lock().dirty = true;
                        }
                        let send_retained = shared.is_none()
                            && match sub.options.retain_handling {
                                codec::RetainHandling::SendAtSubscribe => true,
                                codec::RetainHandling::SendAtSubscribeIfNew => new,
                                codec::RetainHandling::DoNotSend => false,
                            };
                        if send_retained {
                            let m = Match {
                                client: ctx.id,
                                options: SubOptions {
                                    retain_as_published: true,
                                    ..opts
                                },
                                identifiers: vec![opts.identifier],
                                shared: false,
                            };
                            for (_, kept) in r.retained.matching(filter) {
                                if !kept.expired(now) {
                                    let mut p = prepare(&kept.publish, &m);
                                    p.retain = true;
                                    retained.push(p);
                                }
                            }
                        }
                        codes.push(match sub.options.qos {
                            QoS::AtMostOnce => ReasonCode::Success,
                            QoS::AtLeastOnce => ReasonCode::GrantedQos1,
                            QoS::ExactlyOnce => ReasonCode::GrantedQos2,
                        });
                    }
                }
                for f in &denied {
                    self.deny(ctx, Denied::Subscribe(f));
                }
                out.push(Out::Packet(Packet::SubAck(SubAck {
                    packet_id: s.packet_id,
                    properties: Default::default(),
                    reason_codes: codes,
                })));
                out.extend(retained.into_iter().map(Out::Deliver));
            }
            Packet::Unsubscribe(u) => {
                let mut codes = Vec::with_capacity(u.filters.len());
                {
                    let mut r = self.inner.router.lock();
                    let r = &mut *r;
                    for f in &u.filters {
                        let existed = r.tree.unsubscribe(f.as_str(), ctx.id);
                        if let Some(e) = r.entries.get_mut(&ctx.id) {
                            e.subs.retain(|(x, _)| x != f.as_str());
                            e.session.state.lock().dirty = true;
                        }
                        codes.push(if existed {
                            ReasonCode::Success
                        } else {
                            ReasonCode::NoSubscriptionExisted
                        });
                    }
                }
                if !v5 {
                    codes.clear();
                }
                out.push(Out::Packet(Packet::UnsubAck(UnsubAck {
                    packet_id: u.packet_id,
                    properties: Default::default(),
                    reason_codes: codes,
                })));
            }
            Packet::PingReq => out.push(Out::Packet(Packet::PingResp)),
            Packet::Disconnect(d) => {
                // MQTT 5: the client may change its session expiry, but not from 0 (3.14.2.2.2).
                if let Some(e) = d.properties.session_expiry_interval {
                    if ctx.requested_zero && e != 0 {
                        return Some(Goodbye::Kick(ReasonCode::ProtocolError));
                    }
                    ctx.expiry = e.min(cfg.max_session_expiry);
                }
                return Some(if d.reason_code == ReasonCode::DisconnectWithWillMessage {
                    Goodbye::Lost
                } else {
                    Goodbye::Clean
                });
            }
            Packet::Connect(_) => return Some(Goodbye::Kick(ReasonCode::ProtocolError)),
            Packet::Auth(_) => return Some(Goodbye::Kick(ReasonCode::BadAuthenticationMethod)),
            Packet::Connack(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => {
                return Some(Goodbye::Kick(ReasonCode::ProtocolError));
            }
        }
        None
    }
}

/// The reason code answering a PUBREC/PUBREL for a packet id that was (not) known.
fn found(known: bool) -> ReasonCode {
    if known {
        ReasonCode::Success
    } else {
        ReasonCode::PacketIdentifierNotFound
    }
}

/// Per-connection state of the read side.
struct ConnCtx {
    id: ClientId,
    version: ProtocolVersion,
    peer: SocketAddr,
    session: Arc<Session>,
    principal: Principal,
    /// Topic aliases the client set up (index = alias - 1).
    aliases: Vec<Option<MqttString>>,
    /// Session expiry interval in force (DISCONNECT may change it).
    expiry: u32,
    /// The client asked for expiry 0 at CONNECT (it may not raise it at DISCONNECT).
    requested_zero: bool,
}

/// What the client announced about what it can receive (MQTT 5).
#[derive(Debug, Clone, Copy)]
struct ClientLimits {
    topic_alias_maximum: u16,
    max_packet_size: usize,
}

/// How a connection ended.
enum Goodbye {
    /// DISCONNECT received: no will.
    Clean,
    /// The connection dropped: the will goes out.
    Lost,
    /// We end it with this reason (5.0 clients get a DISCONNECT); the will goes out.
    Kick(ReasonCode),
}

/// What a writer leaves when it stops: its queue and the part of its last batch not sent.
type Leftovers = mpsc::Receiver<Out>;

/// Encodes packets for one client: assigns outgoing topic aliases (MQTT 5) and discards
/// packets larger than the client accepts.
struct Encoder {
    version: ProtocolVersion,
    limits: ClientLimits,
    aliases: HashMap<MqttString, NonZeroU16>,
}

impl Encoder {
    /// Appends `packet` to `out`; false when it was discarded (too large for the client).
    fn push(&mut self, packet: Packet, out: &mut Vec<u8>) -> bool {
        let start = out.len();
        let mut fresh_alias = None;
        let packet = match packet {
            Packet::Publish(mut p) if self.limits.topic_alias_maximum > 0 => {
                if let Some(a) = self.aliases.get(&p.topic) {
                    p.properties.topic_alias = Some(*a);
                    p.topic = MqttString::new();
                } else if self.aliases.len() < usize::from(self.limits.topic_alias_maximum) {
                    let a = u16::try_from(self.aliases.len() + 1)
                        .ok()
                        .and_then(NonZeroU16::new);
                    if let Some(a) = a {
                        self.aliases.insert(p.topic.clone(), a);
                        fresh_alias = Some(p.topic.clone());
                        p.properties.topic_alias = Some(a);
                    }
                }
                Packet::Publish(p)
            }
            other => other,
        };
        if let Err(e) = codec::encode(&packet, self.version, out) {
            tracing::debug!(error = %e, "cannot encode a packet for this client; skipped");
            out.truncate(start);
            if let Some(t) = fresh_alias {
                self.aliases.remove(&t);
            }
            return false;
        }
        if out.len() - start > self.limits.max_packet_size {
            out.truncate(start);
            if let Some(t) = fresh_alias {
                self.aliases.remove(&t);
            }
            return false;
        }
        true
    }
}

/// Drains the queue into one buffer per wake-up and writes it with one syscall. QoS 1/2
/// messages enter the session's window here (packet ids are assigned under its lock), so the
/// order in which messages reach the client is the order they were queued. Stops when `stop`
/// is kicked (sending DISCONNECT with its reason to a 5.0 client), when a write fails or takes
/// longer than the write timeout; returns the queue, whose messages go back to the session.
async fn writer<W: AsyncWrite + Unpin>(
    mut wr: W,
    mut rx: mpsc::Receiver<Out>,
    version: ProtocolVersion,
    session: Arc<Session>,
    limits: ClientLimits,
    inner: Arc<Inner>,
    stop: Arc<Kick>,
) -> mpsc::Receiver<Out> {
    let mut enc = Encoder {
        version,
        limits,
        aliases: HashMap::new(),
    };
    let mut out: Vec<u8> = Vec::new();
    let mut batch: Vec<Out> = Vec::new();
    let stats = &inner.stats;
    let write_timeout = inner.cfg.write_timeout;
    loop {
        let n = tokio::select! {
            biased;
            () = stop.notify.notified() => break,
            n = rx.recv_many(&mut batch, 256) => n,
        };
        if n == 0 {
            break;
        }
        out.clear();
        let (mut dropped, mut expired) = (0u64, 0u64);
        {
            let mut st = None;
            let mut now = None;
            for item in batch.drain(..) {
                match item {
                    Out::Packet(p) => {
                        enc.push(p, &mut out);
                    }
                    Out::Deliver(p) if p.qos == QoS::AtMostOnce => {
                        enc.push(Packet::Publish(p), &mut out);
                    }
                    Out::Deliver(p) => {
                        let st = st.get_or_insert_with(|| session.state.lock());
                        let now = *now.get_or_insert_with(now_ms);
                        match st.admit(Queued::new(p), now) {
                            Admit::Send(p) => {
                                let pid = p.packet_id;
                                if !enc.push(Packet::Publish(p), &mut out) {
                                    if let Some(pid) = pid {
                                        st.forget(pid);
                                    }
                                }
                            }
                            Admit::Queued => {}
                            Admit::Overflow => dropped += 1,
                            Admit::Expired => expired += 1,
                        }
                    }
                    Out::Release => {
                        let st = st.get_or_insert_with(|| session.state.lock());
                        let now = *now.get_or_insert_with(now_ms);
                        for p in st.release(now, &mut expired) {
                            let pid = p.packet_id;
                            if !enc.push(Packet::Publish(p), &mut out) {
                                if let Some(pid) = pid {
                                    st.forget(pid);
                                }
                            }
                        }
                    }
                    Out::Resume => {
                        let st = st.get_or_insert_with(|| session.state.lock());
                        let now = *now.get_or_insert_with(now_ms);
                        expired += st.expire(now) as u64;
                        for p in st.resend() {
                            enc.push(p, &mut out);
                        }
                        for p in st.release(now, &mut expired) {
                            enc.push(Packet::Publish(p), &mut out);
                        }
                    }
                }
            }
        }
        if dropped > 0 {
            stats.dropped.fetch_add(dropped, Ordering::Relaxed);
        }
        if expired > 0 {
            stats.expired.fetch_add(expired, Ordering::Relaxed);
        }
        if !out.is_empty() {
            // A client that stops reading must not hold its connection (and its messages)
            // forever: the write is bounded, and a kick interrupts it.
            let written = tokio::select! {
                biased;
                () = stop.notify.notified() => false,
                r = tokio::time::timeout(write_timeout, wr.write_all(&out)) => matches!(r, Ok(Ok(()))),
            };
            if !written {
                // Cut mid-packet, possibly: no DISCONNECT after that.
                stop.reason.lock().take();
                break;
            }
        }
        if out.capacity() > WRITE_KEEP {
            out = Vec::new();
        }
        if batch.capacity() > 256 {
            batch = Vec::new();
        }
    }
    // Goodbye: a 5.0 client learns why (best effort, briefly).
    let reason = *stop.reason.lock();
    out.clear();
    if let (Some(code), ProtocolVersion::V5) = (reason, version) {
        let _ = codec::encode(
            &Packet::Disconnect(Disconnect {
                reason_code: code,
                properties: Default::default(),
            }),
            version,
            &mut out,
        );
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        if !out.is_empty() {
            wr.write_all(&out).await?;
        }
        wr.shutdown().await
    })
    .await;
    rx
}

async fn refuse<S: AsyncWrite + Unpin>(
    stream: &mut S,
    version: ProtocolVersion,
    code: ReasonCode,
) -> std::io::Result<()> {
    let mut out = Vec::new();
    let ack = Packet::Connack(Connack {
        session_present: false,
        reason_code: code,
        properties: Default::default(),
    });
    if codec::encode(&ack, version, &mut out).is_ok() {
        stream.write_all(&out).await?;
    }
    Ok(())
}

async fn read_connect<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    max: usize,
) -> std::io::Result<Result<Connect, DecodeError>> {
    loop {
        match codec::decode_connect(buf, max) {
            Ok(Some((c, used))) => {
                let _ = buf.split_to(used);
                return Ok(Ok(c));
            }
            Ok(None) => {}
            Err(e) => return Ok(Err(e)),
        }
        if stream.read_buf(buf).await? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "closed before CONNECT",
            ));
        }
    }
}

/// A byte stream the broker can serve MQTT over. TCP splits without a lock; anything else
/// (TLS, WebSocket adapters) goes through [`Generic`].
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    type Read: AsyncRead + Unpin + Send + 'static;
    type Write: AsyncWrite + Unpin + Send + 'static;
    fn split(self) -> (Self::Read, Self::Write);
}

impl Transport for TcpStream {
    type Read = tokio::net::tcp::OwnedReadHalf;
    type Write = tokio::net::tcp::OwnedWriteHalf;
    fn split(self) -> (Self::Read, Self::Write) {
        self.into_split()
    }
}

/// Wraps any stream as a [`Transport`] (split with `tokio::io::split`).
pub struct Generic<S>(pub S);

impl<S: AsyncRead + Unpin> AsyncRead for Generic<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Generic<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> Transport for Generic<S> {
    type Read = tokio::io::ReadHalf<Generic<S>>;
    type Write = tokio::io::WriteHalf<Generic<S>>;
    fn split(self) -> (Self::Read, Self::Write) {
        tokio::io::split(self)
    }
}
