//! The broker: accepts MQTT connections, keeps sessions, routes PUBLISH through the
//! subscription tree, keeps retained messages, and delivers wills.
//!
//! Shape: one task per connection reads packets and routes them; each session's outgoing
//! messages go through a bounded queue to a writer task that coalesces everything queued into
//! one socket write (the main lever for throughput: one syscall for many small packets).
//! Routing holds the router lock to look up subscribers and hand each a message (a `try_send`,
//! never an await); encoding happens in the writers. A client's QoS 1/2 message that finds a
//! subscriber's queue full is handed over by the publisher's connection when there is room,
//! before it is acknowledged (back-pressure; see `conn.rs` `hand_over`).
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
use std::net::{IpAddr, SocketAddr};
use std::num::{NonZeroU16, NonZeroU32};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
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

mod conn;
mod writer;

pub use crate::transport::{Generic, Transport};
use conn::ClientLimits;
use writer::writer;

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
    /// QoS 1/2 messages a session keeps in memory while its client is away or its window is
    /// full. Beyond, a persistent session of a broker with a state directory keeps them on
    /// disk (up to `max_session_disk` bytes); other sessions drop new ones (counted).
    pub max_session_queue: usize,
    /// Bytes of messages one persistent session keeps on disk beyond `max_session_queue`.
    pub max_session_disk: u64,
    /// How long a publisher waits for room in a subscriber's full queue before that subscriber
    /// is disconnected (0x97) for being too slow. Meanwhile the publisher's connection is not
    /// read and its QoS 1/2 message not acknowledged: back-pressure, never a drop of a message
    /// already acknowledged. The disconnected subscriber's persistent session keeps the messages.
    pub slow_consumer_timeout: Duration,
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
    /// Keep Alive the server imposes on 5.0 clients (Server Keep Alive in CONNACK) and uses
    /// for 3.1.1 clients that asked for none or for more; `None`: the client's own.
    pub server_keep_alive: Option<u16>,
    /// Most live connections; `privileged_reserve` more are kept for privileged identities
    /// (administrators) so they can still get in when the limit is reached.
    pub max_connections: usize,
    pub privileged_reserve: usize,
    /// Most live connections from one source address (loopback is exempt: it is this
    /// machine's own processes, bounded by `max_connections`).
    pub max_connections_per_address: usize,
    /// Most sessions (live and stored persistent ones) in all.
    pub max_sessions: usize,
    /// Most subscriptions one session holds.
    pub max_subscriptions_per_client: usize,
    /// Most retained messages, and their bytes (topic + payload), one identity may own.
    pub max_retained_per_owner: usize,
    pub max_retained_bytes_per_owner: usize,
    /// How often live connections are re-checked with [`Auth::revalidate`].
    pub revalidate_interval: Duration,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            max_packet_size: 1 << 20,
            max_queue: 10_000,
            max_session_queue: 10_000,
            max_session_disk: 256 << 20,
            slow_consumer_timeout: Duration::from_secs(5),

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
            server_keep_alive: None,
            max_connections: 15_000,
            privileged_reserve: 16,
            max_connections_per_address: 500,
            max_sessions: 100_000,
            max_subscriptions_per_client: 1_000,
            max_retained_per_owner: 10_000,
            max_retained_bytes_per_owner: 16 << 20,
            revalidate_interval: Duration::from_millis(250),
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
    /// Connections ended for being too slow: their queue stayed full for
    /// `slow_consumer_timeout` while a publisher waited, or overflowed under
    /// `Overflow::Disconnect`.
    pub slow_disconnects: AtomicU64,
    /// Requests refused by a resource limit (connections, sessions, subscriptions, retained).
    pub limited: AtomicU64,
    /// Connections closed because their identity was revoked or lowered.
    pub revoked: AtomicU64,
    /// Wills dropped because their identity may not publish on the topic when they fired.
    pub wills_denied: AtomicU64,
    /// Failed accepts on a listener (e.g. out of file descriptors); the listener retries.
    pub accept_errors: AtomicU64,
}

/// A connected client, as [`Broker::clients`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientInfo {
    pub client_id: String,
    /// The authenticated user or device (`None`: anonymous).
    pub user: Option<String>,
    pub peer: SocketAddr,
    pub subscriptions: usize,
    /// The session outlives the connection (session expiry > 0).
    pub persistent: bool,
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
    /// Who stored it (counted against their quota); `None`: the platform, or restored.
    owner: Option<Arc<str>>,
}

impl Retained {
    fn bytes(&self) -> usize {
        self.publish.topic.as_str().len() + self.publish.payload.len()
    }
}

/// Retained messages one identity owns.
#[derive(Debug, Default, Clone, Copy)]
struct Usage {
    count: usize,
    bytes: usize,
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
    ///
    /// (Boxed, as is `Packet`: a queue allocates room for 32 items when it is created, and an
    /// idle connection should not pay 8 kB for it.)
    Deliver(Box<Publish>),
    /// A control packet (acks, SUBACK, PINGRESP...).
    Packet(Box<Packet>),
    /// The client's window has room again: send waiting messages.
    Release,
    /// The session was resumed: send again what is in flight, then what waits.
    Resume,
}

impl Out {
    fn packet(p: Packet) -> Out {
        Out::Packet(Box::new(p))
    }
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

/// A QoS 1/2 message whose subscriber's queue was full when it was routed: the publisher's
/// connection hands it over when there is room (or the subscriber is disconnected for being
/// too slow) before it acknowledges the message and reads on.
struct Blocked {
    client: ClientId,
    tx: mpsc::Sender<Out>,
    kick: Arc<Kick>,
    /// An in-process subscriber: never disconnected; the message is dropped (counted) when
    /// it does not take it in time.
    internal: bool,
    publish: Publish,
}

/// The live connection of a session.
struct Conn {
    /// Messages for the client (bounded: `max_queue`).
    tx: mpsc::Sender<Out>,
    /// Control packets and orders for its writer (acks, Release, Resume), apart from the
    /// messages so that a full message queue never holds back the acks that free it.
    ctl: mpsc::Sender<Out>,
    /// Wakes the read loop to end the connection (takeover, overflow).
    kick: Arc<Kick>,
    /// Becomes true when the connection has fully detached from the session.
    done: watch::Receiver<bool>,
    /// Who is connected (re-checked by [`Auth::revalidate`]); `None` for internal ones.
    principal: Option<Principal>,
    peer: SocketAddr,
}

/// Why a connection could not attach to its session.
enum Refusal {
    /// The client id's session (live or stored) belongs to another identity.
    Owner,
    /// `max_sessions` reached.
    Sessions,
}

/// A live connection's place in the connection limits ([`Broker::admit`]); given back when
/// dropped.
pub struct Slot {
    inner: Arc<Inner>,
    address: Option<IpAddr>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.inner.open.fetch_sub(1, Ordering::Relaxed);
        if let Some(a) = self.address {
            let mut m = self.inner.addresses.lock();
            if let Some(n) = m.get_mut(&a) {
                *n -= 1;
                if *n == 0 {
                    m.remove(&a);
                }
            }
        }
    }
}

struct Entry {
    session: Arc<Session>,
    conn: Option<Conn>,
    /// Filters (as subscribed, incl. `$share/...`) and options, to restore and to clean up.
    subs: Vec<(String, SubOptions)>,
    /// Session expiry interval, seconds (0: ends with the connection).
    expiry: u32,
    last_seen_ms: u64,
    /// Changes on every attach/detach, so timers (expiry, delayed will) know if the client
    /// came back. Drawn from one broker-wide counter, so a new session with the same client id
    /// never repeats a generation an old session's timer waits for.
    generation: u64,
    internal: bool,
    /// The identity that owns the session (`Principal::owner`).
    owner: Option<Arc<str>>,
    /// False for a session restored from a record that did not say (resumed clean).
    owner_known: bool,
    /// For an in-process subscriber that wants to know who published
    /// ([`Broker::subscribe_internal_with_origin`]): messages go here, with their origin.
    origin_tx: Option<mpsc::Sender<(Publish, Origin)>>,
}

/// A retained message and its owner, replayed to a new in-process subscriber.
type OwnedRetained = (Publish, Option<Arc<str>>);

/// Who published a message, as the broker authenticated it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Origin {
    /// The publishing client's id; `None` for the platform's own messages and for retained
    /// messages replayed at subscription.
    pub client_id: Option<Arc<str>>,
    /// The identity that owns the publishing client (`Principal::owner`, e.g. `user:alice`);
    /// `None` for anonymous clients and for the platform.
    pub owner: Option<Arc<str>>,
    /// The publishing connection's remote address; `None` as for `client_id`.
    pub peer: Option<std::net::SocketAddr>,
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
    /// Retained messages per owner (quota).
    retained_usage: HashMap<Arc<str>, Usage>,
    /// Source of `Entry::generation`.
    generations: u64,
    /// Entries that are the platform's own subscriptions (not sessions).
    internal: usize,
}

impl Router {
    fn next_generation(&mut self) -> u64 {
        self.generations += 1;
        self.generations
    }

    fn alloc_id(&mut self) -> ClientId {
        loop {
            self.next_id = self.next_id.wrapping_add(1);
            if !self.entries.contains_key(&self.next_id) {
                return self.next_id;
            }
        }
    }

    /// Ends a session: its subscriptions leave the tree, its record the store, its spill file
    /// the disk.
    fn remove(&mut self, id: ClientId) {
        if let Some(e) = self.entries.remove(&id) {
            e.session.state.lock().remove_spill();
            if self.by_name.get(&e.session.client_id) == Some(&id) {
                self.by_name.remove(&e.session.client_id);
            }
            for (f, _) in &e.subs {
                self.tree.unsubscribe(f, id);
            }
            if e.expiry > 0 && !e.internal {
                self.removed.push(e.session.client_id.to_string());
            }
            if e.internal {
                self.internal -= 1;
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
    /// Live connections per non-loopback source address.
    addresses: Mutex<HashMap<IpAddr, usize>>,
    /// Live connections, counted from accept to close (`connected` counts attached ones).
    open: std::sync::atomic::AtomicUsize,
    /// Numbers the client ids the broker assigns.
    next_assigned: AtomicU64,
    /// The authoriser's epoch when live subscriptions were last checked against it.
    checked_epoch: AtomicU64,
}

impl Inner {
    /// Where persistent sessions spill, when the broker has a state directory.
    fn spill_dir(&self) -> Option<PathBuf> {
        self.cfg.state_dir.as_ref().map(|d| d.join("spill"))
    }

    /// The spill of a persistent session: a new one (`resume` false), or the file an earlier
    /// connection or run left. `None` without a state directory.
    fn spill_for(&self, client_id: &str, resume: bool) -> Option<crate::spill::Spill> {
        let path = crate::spill::path_for(&self.spill_dir()?, client_id);
        let max = self.cfg.max_session_disk;
        if !resume {
            return Some(crate::spill::Spill::fresh(path, max));
        }
        match crate::spill::Spill::open(path.clone(), max) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(client = %client_id, path = %path.display(), error = %e,
                    "cannot read the session's spill file; starting a new one");
                let _ = std::fs::rename(&path, path.with_extension("damaged"));
                Some(crate::spill::Spill::fresh(path, max))
            }
        }
    }
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
                addresses: Mutex::new(HashMap::new()),
                open: std::sync::atomic::AtomicUsize::new(0),
                next_assigned: AtomicU64::new(0),
                checked_epoch: AtomicU64::new(0),
            }),
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            broker.start_background();
        }
        broker
    }

    fn start_background(&self) {
        if self.inner.persistent {
            self.every(self.inner.cfg.persist_interval, |broker| async move {
                let _ = tokio::task::spawn_blocking(move || broker.save(false)).await;
            });
        }
        // Revocation reaches live connections: re-check every connected identity.
        self.every(self.inner.cfg.revalidate_interval, |broker| async move {
            broker.revalidate();
        });
        if let Some(period) = self.inner.cfg.sys_interval {
            self.every(period, |broker| async move { broker.publish_sys() });
        }
    }

    /// Runs `task` every `period` (a late tick is not caught up) until the broker is dropped.
    fn every<F, Fut>(&self, period: Duration, task: F)
    where
        F: Fn(Broker) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { break };
                task(Broker { inner }).await;
            }
        });
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
            st.flush_spill();
            if !(st.dirty || all) {
                continue;
            }
            if e.conn.is_some() {
                e.last_seen_ms = now;
            }
            let owner = match (&e.owner, e.owner_known) {
                (_, false) => session::OwnerField::Unknown,
                (None, true) => session::OwnerField::Anonymous,
                (Some(o), true) => session::OwnerField::Known(o),
            };
            let rec = session::encode_record(e.expiry, e.last_seen_ms, &e.subs, &st, owner);
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
        let spill_dir = self.inner.spill_dir().unwrap_or_default();
        let mut spills = HashSet::new();
        {
            let mut r = self.inner.router.lock();
            for (stored_ms, publish) in loaded.retained {
                let topic = publish.topic.as_str().to_owned();
                // The owner is not stored: restored messages count against no one's quota.
                let m = Retained {
                    publish,
                    stored_ms,
                    owner: None,
                };
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
                let generation = r.next_generation();
                let client_id: Arc<str> = name.into();
                let mut rec = rec;
                if let Some(s) = self.inner.spill_for(&client_id, true) {
                    spills.insert(crate::spill::path_for(&spill_dir, &client_id));
                    rec.state.set_spill(s);
                }
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
                        generation,
                        internal: false,
                        owner: rec.owner.map(Into::into),
                        owner_known: rec.owner_known,
                        origin_tx: None,
                    },
                );
                if expiry != NEVER {
                    let left = u64::from(expiry).saturating_sub(gone_s);
                    timers.push((client_id, generation, Duration::from_secs(left)));
                }
            }
            tracing::info!(
                retained = r.retained.len(),
                sessions = r.entries.len(),
                "MQTT state restored"
            );
        }
        // Spill files of sessions that did not survive (expired, unreadable, or removed
        // after the last save) go.
        if let Ok(dir) = std::fs::read_dir(&spill_dir) {
            for f in dir.flatten() {
                let p = f.path();
                if p.extension().is_some_and(|x| x == "q") && !spills.contains(&p) {
                    let _ = std::fs::remove_file(&p);
                }
            }
        }
        if tokio::runtime::Handle::try_current().is_ok() {
            for (client_id, generation, after) in timers {
                self.expire_later(client_id, generation, after);
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

    /// Accepts connections for as long as the task runs. A failed accept (out of file
    /// descriptors under a connection flood, say) is logged, counted in
    /// [`BrokerStats::accept_errors`] and retried after 100 ms: the listener never gives up.
    pub async fn serve(&self, listener: TcpListener) -> std::io::Result<()> {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    // EMFILE and friends (a connection flood, a descriptor leak elsewhere):
                    // back off instead of spinning or giving up; the listener stays up.
                    self.inner
                        .stats
                        .accept_errors
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "MQTT listener: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let broker = self.clone();
            tokio::spawn(async move {
                if let Err(e) = broker.connection(stream, peer, None, None).await {
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
        self.connection(stream, peer, None, None).await
    }

    /// Like [`Broker::serve_connection`], for a transport that verified a client certificate:
    /// its subject reaches the [`Auth`] hook.
    pub async fn serve_authenticated<S: Transport>(
        &self,
        stream: S,
        peer: SocketAddr,
        certificate_subject: Option<String>,
    ) -> std::io::Result<()> {
        self.connection(stream, peer, certificate_subject, None)
            .await
    }

    /// Like [`Broker::serve_authenticated`], for a connection admitted with [`Broker::admit`]
    /// before its transport's handshake.
    pub async fn serve_admitted<S: Transport>(
        &self,
        stream: S,
        peer: SocketAddr,
        certificate_subject: Option<String>,
        slot: Slot,
    ) -> std::io::Result<()> {
        self.connection(stream, peer, certificate_subject, Some(slot))
            .await
    }

    /// The broker's settings.
    pub fn config(&self) -> &BrokerConfig {
        &self.inner.cfg
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
        let (id, retained) = self.add_internal(name, filter, tx, None);
        for (p, _) in retained {
            if out_tx.try_send(p).is_err() {
                self.inner.stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            while let Some(item) = rx.recv().await {
                match item {
                    Out::Deliver(mut publish) => {
                        publish.qos = QoS::AtMostOnce;
                        publish.packet_id = None;
                        if out_tx.send(*publish).await.is_err() {
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

    /// Like [`Broker::subscribe_internal`], and each message comes with its [`Origin`]: who
    /// published it as the broker authenticated them (for a command path that must know who
    /// asked, after the `Auth` hook allowed the publish). Retained messages replayed at
    /// subscription carry their owner and no client id. Delivered from the router without an
    /// intermediate task: a full channel drops (counted).
    pub fn subscribe_internal_with_origin(
        &self,
        name: &str,
        filter: &str,
        capacity: usize,
    ) -> Result<mpsc::Receiver<(Publish, Origin)>, topic::TopicError> {
        topic::validate_topic_filter(filter)?;
        // The entry's connection channel stays unused: the router hands messages to `origin`.
        let (tx, _unused) = mpsc::channel::<Out>(1);
        let (origin_tx, origin_rx) = mpsc::channel(capacity.max(1));
        let (id, retained) = self.add_internal(name, filter, tx, Some(origin_tx.clone()));
        for (mut p, owner) in retained {
            p.qos = QoS::AtMostOnce;
            let origin = Origin {
                client_id: None,
                owner,
                peer: None,
            };
            if origin_tx.try_send((p, origin)).is_err() {
                self.inner.stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            origin_tx.closed().await;
            if let Some(inner) = weak.upgrade() {
                inner.router.lock().remove(id);
            }
        });
        Ok(origin_rx)
    }

    /// Registers an in-process subscriber; returns its id and the retained messages that
    /// match (with their owners), for the caller to hand over first.
    fn add_internal(
        &self,
        name: &str,
        filter: &str,
        tx: mpsc::Sender<Out>,
        origin_tx: Option<mpsc::Sender<(Publish, Origin)>>,
    ) -> (ClientId, Vec<OwnedRetained>) {
        let opts = SubOptions {
            qos: 0,
            no_local: false,
            retain_as_published: true,
            identifier: 0,
        };
        let mut r = self.inner.router.lock();
        let id = r.alloc_id();
        r.internal += 1;
        let (_done_tx, done) = watch::channel(false);
        r.entries.insert(
            id,
            Entry {
                session: Arc::new(Session {
                    client_id: format!("$internal/{name}").into(),
                    state: Mutex::new(SessionState::new(1, 0)),
                }),
                conn: Some(Conn {
                    ctl: tx.clone(),
                    tx,
                    kick: Arc::new(Kick::new()),
                    done,
                    principal: None,
                    peer: SocketAddr::from(([0, 0, 0, 0], 0)),
                }),
                subs: vec![(filter.to_owned(), opts)],
                expiry: 0,
                last_seen_ms: 0,
                generation: 0,
                internal: true,
                owner: None,
                owner_known: true,
                origin_tx,
            },
        );
        r.tree.subscribe(filter, id, opts);
        let now = now_ms();
        let retained = r
            .retained
            .matching(filter)
            .into_iter()
            .filter(|(_, m)| !m.expired(now))
            .map(|(_, m)| {
                let mut p = m.publish.clone();
                p.retain = true;
                (p, m.owner.clone())
            })
            .collect();
        (id, retained)
    }

    /// The connected clients (not the platform's own), by client id: who and from where, with
    /// their subscription count. For the HMI's system page; bounded by `max_connections`.
    pub fn clients(&self) -> Vec<ClientInfo> {
        let r = self.inner.router.lock();
        let mut out: Vec<ClientInfo> = r
            .entries
            .values()
            .filter(|e| !e.internal)
            .filter_map(|e| {
                let c = e.conn.as_ref()?;
                let p = c.principal.as_ref()?;
                Some(ClientInfo {
                    client_id: p.client_id.to_string(),
                    user: p.user.as_deref().map(str::to_owned),
                    peer: c.peer,
                    subscriptions: e.subs.len(),
                    persistent: e.expiry > 0,
                })
            })
            .collect();
        out.sort_by(|a, b| a.client_id.cmp(&b.client_id));
        out
    }

    /// Whether a client with this id is connected now, and from where.
    pub fn connected_from(&self, client_id: &str) -> Option<SocketAddr> {
        let r = self.inner.router.lock();
        let id = r.by_name.get(client_id)?;
        r.entries.get(id)?.conn.as_ref().map(|c| c.peer)
    }

    /// Publishes a message from inside the platform (UNS, $SYS, Sparkplug host commands).
    pub fn publish(&self, publish: Publish) {
        self.route(None, None, publish);
    }

    /// When the rules changed (the authoriser's epoch moved), checks every live connection's
    /// subscriptions again and withdraws those its identity may no longer have: tightened
    /// rules reach live connections, not only new ones.
    fn withdraw_subscriptions(&self) {
        let epoch = self.inner.auth.epoch();
        if self.inner.checked_epoch.swap(epoch, Ordering::AcqRel) == epoch {
            return;
        }
        let mut withdrawn: Vec<(Principal, SocketAddr, String)> = Vec::new();
        {
            let mut r = self.inner.router.lock();
            let r = &mut *r;
            for (id, e) in r.entries.iter_mut() {
                let Some(c) = e.conn.as_ref() else { continue };
                let Some(p) = c.principal.as_ref() else {
                    continue;
                };
                let auth = &self.inner.auth;
                let before = e.subs.len();
                e.subs.retain(|(f, _)| {
                    let plain = crate::tree::split_shared(f).map_or(f.as_str(), |(_, f)| f);
                    let keep = auth.may_subscribe(p, plain);
                    if !keep {
                        withdrawn.push((p.clone(), c.peer, f.clone()));
                    }
                    keep
                });
                if e.subs.len() != before {
                    e.session.state.lock().dirty = true;
                    for (_, _, f) in withdrawn
                        .iter()
                        .filter(|(w, _, _)| w.client_id == p.client_id)
                    {
                        r.tree.unsubscribe(f, *id);
                    }
                }
            }
        }
        for (p, peer, f) in &withdrawn {
            self.inner.stats.denied.fetch_add(1, Ordering::Relaxed);
            self.inner
                .auth
                .denied(Some(p), *peer, Denied::WithdrawnSubscription(f));
        }
    }

    /// Takes a connection slot for `peer`, or refuses (counted and reported) when the total
    /// (with its reserve) or the per-address limit is reached. Listeners that do work before
    /// MQTT starts (a TLS handshake) take it first and pass it to [`Broker::serve_admitted`].
    pub fn admit(&self, peer: SocketAddr) -> Option<Slot> {
        let cfg = &self.inner.cfg;
        let address = (!peer.ip().is_loopback()).then(|| peer.ip());
        let open = self.inner.open.fetch_add(1, Ordering::Relaxed) + 1;
        let mut slot = Slot {
            inner: self.inner.clone(),
            address: None,
        };
        let refused = if open > cfg.max_connections + cfg.privileged_reserve {
            Some("connections")
        } else if let Some(a) = address {
            let mut m = self.inner.addresses.lock();
            let n = m.entry(a).or_insert(0);
            if *n >= cfg.max_connections_per_address {
                Some("connections_per_address")
            } else {
                *n += 1;
                slot.address = Some(a);
                None
            }
        } else {
            None
        };
        match refused {
            None => Some(slot),
            Some(limit) => {
                self.inner.stats.limited.fetch_add(1, Ordering::Relaxed);
                self.inner.auth.denied(None, peer, Denied::Limit(limit));
                None
            }
        }
    }

    /// Publishes a message a bridge brought in from a remote broker, if [`Auth::may_inject`]
    /// lets it land on its topic; false (reported as a denied publish) otherwise.
    pub fn publish_bridged(&self, bridge: &str, publish: Publish) -> bool {
        let topic = publish.topic.as_str();
        if topic.starts_with('$') || !self.inner.auth.may_inject(bridge, topic) {
            self.inner.stats.denied.fetch_add(1, Ordering::Relaxed);
            let who = Principal {
                client_id: format!("$bridge/{bridge}").into(),
                user: Some(format!("bridge:{bridge}").into()),
                roles: Vec::new(),
                owner: None,
            };
            self.inner.auth.denied(
                Some(&who),
                SocketAddr::from(([0, 0, 0, 0], 0)),
                Denied::Publish(topic),
            );
            return false;
        }
        self.route(None, None, publish)
    }

    /// Re-checks every live connection's identity ([`Auth::revalidate`]) and closes those no
    /// longer valid (revoked, disabled, role lowered) with reason 0x87.
    pub fn revalidate(&self) {
        self.withdraw_subscriptions();
        let live: Vec<(Principal, Arc<Kick>, SocketAddr)> = {
            let r = self.inner.router.lock();
            r.entries
                .values()
                .filter_map(|e| e.conn.as_ref())
                .filter(|c| !c.kick.kicked.load(Ordering::Acquire))
                .filter_map(|c| c.principal.clone().map(|p| (p, c.kick.clone(), c.peer)))
                .collect()
        };
        if live.is_empty() {
            return;
        }
        let who: Vec<&Principal> = live.iter().map(|(p, _, _)| p).collect();
        let valid = self.inner.auth.revalidate(&who);
        for ((p, kick, peer), ok) in live.iter().zip(valid) {
            if !ok && kick.kick(ReasonCode::NotAuthorized) {
                self.inner.stats.revoked.fetch_add(1, Ordering::Relaxed);
                tracing::info!(client = %p.client_id, %peer, "identity revoked or lowered; connection closed");
                self.inner.auth.denied(Some(p), *peer, Denied::Revoked);
            }
        }
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
                let _ = self.route_inner(None, None, p, false, None);
            }
        }
    }

    /// Routes a message; false when a client's retained message was refused by its owner's
    /// quota (nothing was routed).
    fn route(&self, from: Option<ClientId>, owner: Option<&Arc<str>>, publish: Publish) -> bool {
        self.route_inner(from, owner, publish, true, None)
    }

    /// Routes a message. With `blocked` (a client's publish), a QoS 1/2 message whose
    /// subscriber's queue is full is not dropped: it is pushed onto `blocked` for the
    /// publisher's connection to hand over when there is room (back-pressure), and so is every
    /// later one for that subscriber, to keep their order. Without it (wills, `$SYS`, bridged
    /// and internal publishes) a full queue drops the message (counted), or disconnects the
    /// subscriber under [`Overflow::Disconnect`].
    fn route_inner(
        &self,
        from: Option<ClientId>,
        owner: Option<&Arc<str>>,
        publish: Publish,
        count: bool,
        mut blocked: Option<&mut Vec<Blocked>>,
    ) -> bool {
        let st = &self.inner.stats;
        let mut matches: Vec<Match> = Vec::new();
        let mut r = self.inner.router.lock();
        let r = &mut *r;
        if publish.retain {
            let topic = publish.topic.as_str();
            let owner = owner.cloned();
            let incoming = if publish.payload.is_empty() {
                0
            } else {
                topic.len() + publish.payload.len()
            };
            if let Some(o) = owner.as_ref().filter(|_| incoming > 0) {
                // What the owner would hold after this message replaces the topic's.
                let mut u = r.retained_usage.get(o).copied().unwrap_or_default();
                if let Some(old) = r
                    .retained
                    .get(topic)
                    .filter(|m| m.owner.as_ref() == Some(o))
                {
                    u.count -= 1;
                    u.bytes -= old.bytes();
                }
                if u.count + 1 > self.inner.cfg.max_retained_per_owner
                    || u.bytes + incoming > self.inner.cfg.max_retained_bytes_per_owner
                {
                    st.limited.fetch_add(1, Ordering::Relaxed);
                    return false;
                }
            }
            if count {
                st.messages_in.fetch_add(1, Ordering::Relaxed);
            }
            if let Some(old) = r.retained.get(topic) {
                if let Some(o) = old.owner.clone() {
                    let bytes = old.bytes();
                    if let Some(u) = r.retained_usage.get_mut(&o) {
                        u.count = u.count.saturating_sub(1);
                        u.bytes = u.bytes.saturating_sub(bytes);
                        if u.count == 0 {
                            r.retained_usage.remove(&o);
                        }
                    }
                }
            }
            if publish.payload.is_empty() {
                r.retained.set(topic, None);
            } else {
                if let Some(o) = &owner {
                    let u = r.retained_usage.entry(o.clone()).or_default();
                    u.count += 1;
                    u.bytes += incoming;
                }
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
                        owner,
                    }),
                );
            }
            if self.inner.persistent && !topic.starts_with("$SYS/") {
                r.dirty_retained.insert(topic.to_owned());
            }
        } else if count {
            st.messages_in.fetch_add(1, Ordering::Relaxed);
        }
        r.tree.matches(publish.topic.as_str(), &mut matches);
        let (mut sent, mut dropped) = (0u64, 0u64);
        let mut origin: Option<Origin> = None;
        for m in &matches {
            if m.options.no_local && Some(m.client) == from && !m.shared {
                continue;
            }
            let Some(e) = r.entries.get(&m.client) else {
                continue;
            };
            let p = prepare(&publish, m);
            if let Some(tx) = &e.origin_tx {
                let o = origin.get_or_insert_with(|| {
                    let f = from.and_then(|id| r.entries.get(&id));
                    Origin {
                        client_id: f.map(|f| f.session.client_id.clone()),
                        owner: owner.cloned(),
                        peer: f.and_then(|f| f.conn.as_ref()).map(|c| c.peer),
                    }
                });
                let mut p = p;
                p.qos = QoS::AtMostOnce;
                p.packet_id = None;
                match tx.try_send((p, o.clone())) {
                    Ok(()) => sent += 1,
                    Err(_) => dropped += 1,
                }
                continue;
            }
            let p = match &e.conn {
                // A connection being closed (taken over, or too slow) gets nothing more: what
                // is for its session waits behind what its queue still holds.
                Some(c) if c.kick.kicked.load(Ordering::Acquire) => {
                    dropped += u64::from(!keep_overflow(e, p));
                    continue;
                }
                Some(c) => {
                    // QoS 1/2 for this subscriber (an in-process one takes everything at QoS 0:
                    // what counts is what the publisher was promised), and not to the
                    // publisher itself (it would wait on its own queue, which only its own
                    // acks, read by the very loop that waits, can free).
                    let assured = if e.internal {
                        publish.qos != QoS::AtMostOnce
                    } else {
                        p.qos != QoS::AtMostOnce
                    };
                    let hold = match blocked.as_deref_mut() {
                        Some(b) if assured && Some(m.client) != from => Some(b),
                        _ => None,
                    };
                    if let Some(b) = hold {
                        let behind = b.iter().any(|x| x.client == m.client);
                        let p = if behind {
                            p
                        } else {
                            match c.tx.try_send(Out::Deliver(Box::new(p))) {
                                Ok(()) => {
                                    sent += 1;
                                    continue;
                                }
                                Err(mpsc::error::TrySendError::Full(Out::Deliver(p))) => *p,
                                Err(mpsc::error::TrySendError::Closed(Out::Deliver(p))) => {
                                    dropped += u64::from(!keep_overflow(e, *p));
                                    continue;
                                }
                                Err(_) => continue,
                            }
                        };
                        b.push(Blocked {
                            client: m.client,
                            tx: c.tx.clone(),
                            kick: c.kick.clone(),
                            internal: e.internal,
                            publish: p,
                        });
                        continue;
                    }
                    match c.tx.try_send(Out::Deliver(Box::new(p))) {
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
                            dropped += u64::from(!keep_overflow(e, *p));
                            continue;
                        }
                        Err(mpsc::error::TrySendError::Full(_)) => {
                            dropped += 1;
                            continue;
                        }
                        // The connection is going: keep the message in its session.
                        Err(mpsc::error::TrySendError::Closed(Out::Deliver(p))) => *p,
                        Err(mpsc::error::TrySendError::Closed(_)) => continue,
                    }
                }
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
        true
    }
}
