//! An async MQTT 3.1.1 / 5.0 client on our codec, for the bridge and the simulator's Sparkplug
//! edge node.
//!
//! # Shape
//! [`Client::connect`] returns a cheap, cloneable handle and a channel of [`Event`]s. One
//! background task owns the connection: it connects (with capped exponential back-off),
//! sends CONNECT (clean or persistent session, keep-alive, credentials, Will), re-subscribes
//! after a reconnect that lost the session, re-sends unacknowledged QoS 1/2 messages with DUP
//! in their original order, answers PINGs and acknowledges incoming messages per QoS.
//!
//! The handle's calls are requests to that task: [`Client::publish`] returns when the message
//! is written (QoS 0), acknowledged by PUBACK (QoS 1) or by PUBCOMP (QoS 2);
//! [`Client::start_publish`] queues the message and returns a [`Delivery`] to await later, so a
//! caller can keep many messages in flight and still see their acknowledgements in order.
//!
//! # Invariants
//! - **Order.** Publications go on the wire in the order they were requested, also when
//!   re-sent after a reconnect (in-flight ones first, with DUP, then the queued ones).
//! - **Nothing is forgotten on a reconnect.** A QoS 1/2 publication stays in flight until its
//!   acknowledgement arrives, however many connections that takes; only [`Client::disconnect`]
//!   or dropping every handle gives up, and then every pending caller gets
//!   [`ClientError::Closed`].
//! - **Bounded.** At most `max_inflight` (and the server's Receive Maximum) QoS 1/2 messages
//!   are on the wire at once and at most `queue` more wait in the task; beyond that
//!   `start_publish` waits (back-pressure), it never drops.
//! - **Incoming QoS 2 is delivered once** per packet identifier until PUBREL (method A).
//!
//! The transport is generic ([`Connector`]); [`TcpConnector`] is the plain TCP one (TLS plugs
//! in as another connector).

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::io;
use std::num::{NonZeroU16, NonZeroU32};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{sleep_until, timeout, Instant};

use crate::codec::{
    self, Connect, MqttString, Packet, PacketId, ProtocolVersion, Publish, PublishResponse, QoS,
    ReasonCode, Subscribe, Subscription, SubscriptionOptions, Unsubscribe, Will,
};
use crate::topic;

/// How the client connects and behaves.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Protocol version to speak.
    pub version: ProtocolVersion,
    /// Client identifier (empty: the server assigns one; needs a clean session).
    pub client_id: String,
    /// Clean Start (5.0) / Clean Session (3.1.1). `false` resumes the server's session.
    pub clean_start: bool,
    /// MQTT 5.0 Session Expiry Interval in seconds (0: the session ends with the connection).
    pub session_expiry: u32,
    /// Keep-alive interval; zero turns pings off. The server's Server Keep Alive wins (5.0).
    pub keep_alive: Duration,
    /// User name, if any.
    pub username: Option<String>,
    /// Password, if any.
    pub password: Option<Bytes>,
    /// Will message, published by the server when the connection ends without DISCONNECT.
    pub will: Option<Will>,
    /// Time allowed for the transport to connect and for CONNACK to arrive.
    pub connect_timeout: Duration,
    /// First reconnect delay; doubled after each failed attempt up to `reconnect_max`.
    pub reconnect_min: Duration,
    /// Longest reconnect delay.
    pub reconnect_max: Duration,
    /// QoS 1/2 publications on the wire at once (also capped by the server's Receive Maximum).
    pub max_inflight: u16,
    /// Requests waiting in the task (e.g. while disconnected) before callers are held back.
    pub queue: usize,
    /// Largest packet accepted from the server (announced to 5.0 servers).
    pub max_packet_size: usize,
    /// Capacity of the event channel.
    pub event_capacity: usize,
}

impl ClientOptions {
    /// MQTT 3.1.1, clean session, 30 s keep-alive, back-off 100 ms to 30 s.
    pub fn new(client_id: impl Into<String>) -> Self {
        ClientOptions {
            version: ProtocolVersion::V311,
            client_id: client_id.into(),
            clean_start: true,
            session_expiry: 0,
            keep_alive: Duration::from_secs(30),
            username: None,
            password: None,
            will: None,
            connect_timeout: Duration::from_secs(10),
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(30),
            max_inflight: 64,
            queue: 1024,
            max_packet_size: 16 << 20,
            event_capacity: 1024,
        }
    }
}

/// What the connection task reports.
// `Publish` is the common event; boxing it would cost an allocation per message.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// CONNACK accepted; `session_present` tells whether the server resumed a session.
    Connected { session_present: bool },
    /// The connection ended or an attempt failed; the task retries after its back-off.
    Disconnected { error: String },
    /// An incoming message (already acknowledged per its QoS once it is on this channel).
    Publish(Publish),
}

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ClientError {
    /// The client was disconnected on request or every handle was dropped.
    #[error("the MQTT client is closed")]
    Closed,
    /// The server answered with a failure reason code (5.0).
    #[error("the server refused the request: {0:?}")]
    Refused(ReasonCode),
    /// The topic or filter breaks MQTT's rules.
    #[error("invalid topic {topic:?}: {reason}")]
    InvalidTopic { topic: String, reason: String },
    /// The server does not accept this QoS (its CONNACK's Maximum QoS).
    #[error("the server accepts QoS up to {max:?}, not {qos:?}")]
    QosNotSupported { qos: QoS, max: QoS },
    /// The packet cannot be encoded for this server (too large, or not expressible in 3.1.1).
    #[error("cannot send the packet: {0}")]
    Encode(String),
}

/// A byte stream factory: how the task reaches the server (TCP now, TLS later).
pub trait Connector: Send + Sync + 'static {
    /// The connected stream.
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// Opens a new connection to the server.
    fn connect(&self) -> impl Future<Output = io::Result<Self::Stream>> + Send;
    /// The server's address, for logs.
    fn describe(&self) -> String;
}

/// Plain TCP to `host:port`.
#[derive(Debug, Clone)]
pub struct TcpConnector {
    pub address: String,
}

impl Connector for TcpConnector {
    type Stream = TcpStream;
    fn connect(&self) -> impl Future<Output = io::Result<TcpStream>> + Send {
        let address = self.address.clone();
        async move {
            let stream = TcpStream::connect(address.as_str()).await?;
            stream.set_nodelay(true)?;
            Ok(stream)
        }
    }
    fn describe(&self) -> String {
        self.address.clone()
    }
}

type Reply<T> = oneshot::Sender<Result<T, ClientError>>;

#[allow(clippy::large_enum_variant)] // publications are the common request
enum Request {
    Publish {
        publish: Publish,
        done: Reply<()>,
    },
    Subscribe {
        subscriptions: Vec<Subscription>,
        done: Reply<Vec<ReasonCode>>,
    },
    Unsubscribe {
        filters: Vec<MqttString>,
        done: Reply<()>,
    },
    Disconnect {
        done: oneshot::Sender<()>,
    },
}

/// A handle to the connection task; clone it freely. When the last handle is dropped, the
/// task disconnects cleanly (no Will) and ends.
#[derive(Clone)]
pub struct Client {
    tx: mpsc::Sender<Request>,
}

/// The acknowledgement of one publication: resolves when the QoS handshake completes.
pub struct Delivery(oneshot::Receiver<Result<(), ClientError>>);

impl Future for Delivery {
    type Output = Result<(), ClientError>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(ClientError::Closed)))
    }
}

fn mqtt_string(s: &str) -> Result<MqttString, ClientError> {
    MqttString::try_from(s).map_err(|e| ClientError::InvalidTopic {
        topic: s.to_owned(),
        reason: e.to_string(),
    })
}

impl Client {
    /// Starts the connection task over TCP to `address` (`host:port`).
    pub fn connect(address: &str, options: ClientOptions) -> (Client, mpsc::Receiver<Event>) {
        Client::connect_with(
            TcpConnector {
                address: address.to_owned(),
            },
            options,
        )
    }

    /// Starts the connection task over any transport.
    pub fn connect_with<C: Connector>(
        connector: C,
        options: ClientOptions,
    ) -> (Client, mpsc::Receiver<Event>) {
        let (tx, rx) = mpsc::channel(options.queue.max(1));
        let (events_tx, events_rx) = mpsc::channel(options.event_capacity.max(1));
        let task = Task {
            requests: rx,
            events: events_tx,
            pending: VecDeque::new(),
            inflight: VecDeque::new(),
            waiting: HashMap::new(),
            ids: HashSet::new(),
            next_id: 0,
            subscriptions: Vec::new(),
            incoming_qos2: HashSet::new(),
            server: ServerLimits::default(),
            requests_closed: false,
            connector,
            options,
        };
        tokio::spawn(task.run());
        (Client { tx }, events_rx)
    }

    /// Publishes and waits until the QoS handshake completes (QoS 0: until it is written).
    pub async fn publish(
        &self,
        topic: &str,
        payload: impl Into<Bytes>,
        qos: QoS,
        retain: bool,
    ) -> Result<(), ClientError> {
        let mut p = Publish::new(mqtt_string(topic)?, payload.into());
        p.qos = qos;
        p.retain = retain;
        self.start_publish(p).await?.await
    }

    /// Queues a publication (any properties; `dup` and `packet_id` are the task's) and returns
    /// its [`Delivery`]. Waits only while the task's queue is full.
    pub async fn start_publish(&self, mut publish: Publish) -> Result<Delivery, ClientError> {
        topic::validate_topic_name(&publish.topic).map_err(|e| ClientError::InvalidTopic {
            topic: publish.topic.to_string(),
            reason: e.to_string(),
        })?;
        publish.dup = false;
        publish.packet_id = None;
        // Server-to-client only; a client must not send them.
        publish.properties.subscription_identifiers.clear();
        publish.properties.topic_alias = None;
        let (done, rx) = oneshot::channel();
        self.tx
            .send(Request::Publish { publish, done })
            .await
            .map_err(|_| ClientError::Closed)?;
        Ok(Delivery(rx))
    }

    /// Subscribes to `filters` (each with its maximum QoS) and returns the SUBACK's codes.
    /// Accepted subscriptions are renewed after every reconnect that lost the session.
    pub async fn subscribe(&self, filters: &[(&str, QoS)]) -> Result<Vec<ReasonCode>, ClientError> {
        let subscriptions = filters
            .iter()
            .map(|(f, qos)| {
                Ok(Subscription {
                    filter: mqtt_string(f)?,
                    options: SubscriptionOptions::qos(*qos),
                })
            })
            .collect::<Result<Vec<_>, ClientError>>()?;
        self.subscribe_with(subscriptions).await
    }

    /// Like [`Client::subscribe`], with every option (no_local, retain_as_published, ...).
    pub async fn subscribe_with(
        &self,
        subscriptions: Vec<Subscription>,
    ) -> Result<Vec<ReasonCode>, ClientError> {
        for s in &subscriptions {
            topic::validate_topic_filter(&s.filter).map_err(|e| ClientError::InvalidTopic {
                topic: s.filter.to_string(),
                reason: e.to_string(),
            })?;
        }
        if subscriptions.is_empty() {
            return Ok(Vec::new());
        }
        let (done, rx) = oneshot::channel();
        self.tx
            .send(Request::Subscribe {
                subscriptions,
                done,
            })
            .await
            .map_err(|_| ClientError::Closed)?;
        rx.await.unwrap_or(Err(ClientError::Closed))
    }

    /// Unsubscribes from `filters`.
    pub async fn unsubscribe(&self, filters: &[&str]) -> Result<(), ClientError> {
        let filters = filters
            .iter()
            .map(|f| mqtt_string(f))
            .collect::<Result<Vec<_>, _>>()?;
        if filters.is_empty() {
            return Ok(());
        }
        let (done, rx) = oneshot::channel();
        self.tx
            .send(Request::Unsubscribe { filters, done })
            .await
            .map_err(|_| ClientError::Closed)?;
        rx.await.unwrap_or(Err(ClientError::Closed))
    }

    /// Sends DISCONNECT (the server discards the Will) and stops the task; pending requests
    /// fail with [`ClientError::Closed`].
    pub async fn disconnect(&self) {
        let (done, rx) = oneshot::channel();
        if self.tx.send(Request::Disconnect { done }).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// A QoS 1/2 publication on the wire.
struct Outgoing {
    id: PacketId,
    publish: Publish,
    /// QoS 2: PUBREC arrived and PUBREL was sent.
    released: bool,
    done: Reply<()>,
}

/// A SUBSCRIBE or UNSUBSCRIBE waiting for its ack: the request (put back in the queue if the
/// connection drops), or `None` for the task's own re-subscription.
#[allow(clippy::large_enum_variant)] // few, short-lived
enum Waiting {
    Request(Request),
    Restore,
}

/// What the server's CONNACK allows.
#[derive(Debug, Clone, Copy)]
struct ServerLimits {
    receive_maximum: u16,
    maximum_qos: QoS,
    maximum_packet_size: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            receive_maximum: u16::MAX,
            maximum_qos: QoS::ExactlyOnce,
            maximum_packet_size: codec::VARINT_MAX as usize + 5,
        }
    }
}

enum Exit {
    /// Disconnect requested or every handle dropped: the task ends.
    Closed,
    /// The connection failed; `connected` tells whether CONNACK had been accepted.
    Lost { error: String, connected: bool },
}

struct Task<C> {
    connector: C,
    options: ClientOptions,
    requests: mpsc::Receiver<Request>,
    requests_closed: bool,
    events: mpsc::Sender<Event>,
    /// Requests not yet on the wire, in order.
    pending: VecDeque<Request>,
    /// QoS 1/2 publications on the wire, in the order they were first sent.
    inflight: VecDeque<Outgoing>,
    /// SUBSCRIBE / UNSUBSCRIBE awaiting their acks.
    waiting: HashMap<u16, Waiting>,
    /// Packet identifiers in use (in flight or waiting).
    ids: HashSet<u16>,
    next_id: u16,
    /// Accepted subscriptions, renewed when the session was lost.
    subscriptions: Vec<Subscription>,
    /// Incoming QoS 2 packet identifiers received and not yet released.
    incoming_qos2: HashSet<u16>,
    server: ServerLimits,
}

/// Requests beyond this many waiting in the task are left in the channel (back-pressure).
fn pending_cap(o: &ClientOptions) -> usize {
    o.queue.max(1)
}

impl<C: Connector> Task<C> {
    async fn run(mut self) {
        let mut delay = self.options.reconnect_min;
        loop {
            match self.session().await {
                Exit::Closed => break,
                Exit::Lost { error, connected } => {
                    tracing::debug!(server = %self.connector.describe(), %error, "MQTT connection lost");
                    let _ = self.events.try_send(Event::Disconnected { error });
                    if connected {
                        delay = self.options.reconnect_min;
                    }
                    self.requeue_waiting();
                    if !self.wait(delay).await {
                        break;
                    }
                    delay = (delay * 2).min(self.options.reconnect_max.max(delay));
                }
            }
        }
        self.fail_all();
    }

    /// Waits out the back-off while taking requests; false if the client was closed.
    async fn wait(&mut self, delay: Duration) -> bool {
        let deadline = Instant::now() + delay;
        loop {
            let room = !self.requests_closed && self.pending.len() < pending_cap(&self.options);
            tokio::select! {
                () = sleep_until(deadline) => return true,
                req = self.requests.recv(), if room => match req {
                    None => {
                        self.requests_closed = true;
                        return false;
                    }
                    Some(Request::Disconnect { done }) => {
                        let _ = done.send(());
                        return false;
                    }
                    Some(r) => self.pending.push_back(r),
                },
            }
        }
    }

    /// Puts SUBSCRIBE/UNSUBSCRIBE requests whose acks never came back at the queue's front.
    fn requeue_waiting(&mut self) {
        let mut ids: Vec<u16> = self.waiting.keys().copied().collect();
        ids.sort_unstable();
        for id in ids.into_iter().rev() {
            self.ids.remove(&id);
            if let Some(Waiting::Request(r)) = self.waiting.remove(&id) {
                self.pending.push_front(r);
            }
        }
    }

    fn fail_all(&mut self) {
        for o in self.inflight.drain(..) {
            let _ = o.done.send(Err(ClientError::Closed));
        }
        self.requests.close();
        while let Ok(r) = self.requests.try_recv() {
            self.pending.push_back(r);
        }
        for r in self.pending.drain(..) {
            fail(r);
        }
        for (_, w) in self.waiting.drain() {
            if let Waiting::Request(r) = w {
                fail(r);
            }
        }
    }

    fn connect_packet(&self) -> Result<Connect, ClientError> {
        let o = &self.options;
        let keep_alive = u16::try_from(o.keep_alive.as_secs()).unwrap_or(u16::MAX);
        let mut c = Connect::new(o.version, mqtt_string(&o.client_id)?, keep_alive);
        c.clean_start = o.clean_start;
        c.will = o.will.clone();
        c.username = o.username.as_deref().map(mqtt_string).transpose()?;
        c.password = o.password.clone();
        if o.version == ProtocolVersion::V5 {
            c.properties.session_expiry_interval =
                (o.session_expiry > 0).then_some(o.session_expiry);
            c.properties.receive_maximum = NonZeroU16::new(u16::MAX);
            c.properties.maximum_packet_size =
                NonZeroU32::new(u32::try_from(o.max_packet_size).unwrap_or(u32::MAX));
        }
        Ok(c)
    }

    async fn session(&mut self) -> Exit {
        let lost = |error: String| Exit::Lost {
            error,
            connected: false,
        };
        let o = self.options.clone();
        let version = o.version;
        let connect = match self.connect_packet() {
            Ok(c) => c,
            Err(e) => return lost(format!("invalid connect options: {e}")),
        };
        let mut stream = match timeout(o.connect_timeout, self.connector.connect()).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                return lost(format!(
                    "cannot connect to {}: {e}",
                    self.connector.describe()
                ))
            }
            Err(_) => {
                return lost(format!(
                    "cannot connect to {}: no answer within {:?}",
                    self.connector.describe(),
                    o.connect_timeout
                ))
            }
        };
        let mut out = Vec::with_capacity(256);
        if let Err(e) = codec::encode(&Packet::Connect(Box::new(connect)), version, &mut out) {
            return lost(format!("cannot encode CONNECT: {e}"));
        }
        if let Err(e) = stream.write_all(&out).await {
            return lost(format!("cannot send CONNECT: {e}"));
        }
        out.clear();
        let mut buf = BytesMut::with_capacity(4096);
        let connack = match timeout(
            o.connect_timeout,
            read_packet(&mut stream, &mut buf, version, o.max_packet_size),
        )
        .await
        {
            Ok(Ok(Packet::Connack(c))) => c,
            Ok(Ok(other)) => return lost(format!("expected CONNACK, got {}", other.packet_type())),
            Ok(Err(e)) => return lost(format!("no CONNACK: {e}")),
            Err(_) => return lost(format!("no CONNACK within {:?}", o.connect_timeout)),
        };
        if connack.reason_code as u8 >= 0x80 {
            return lost(format!(
                "the server refused the connection: {:?}{}",
                connack.reason_code,
                connack
                    .properties
                    .reason_string
                    .as_ref()
                    .map(|s| format!(" ({s})"))
                    .unwrap_or_default()
            ));
        }
        let p = &connack.properties;
        self.server = ServerLimits {
            receive_maximum: p.receive_maximum.map_or(u16::MAX, NonZeroU16::get),
            maximum_qos: p.maximum_qos.unwrap_or(QoS::ExactlyOnce),
            maximum_packet_size: p
                .maximum_packet_size
                .map_or(ServerLimits::default().maximum_packet_size, |m| {
                    m.get() as usize
                }),
        };
        let keep_alive = match p.server_keep_alive {
            Some(k) => Duration::from_secs(u64::from(k)),
            None => o.keep_alive,
        };
        let session_present = connack.session_present;
        tracing::debug!(server = %self.connector.describe(), session_present, "MQTT connected");
        let _ = self.events.try_send(Event::Connected { session_present });

        // The session is gone (or never was): its subscriptions and incoming QoS 2 state too.
        if !session_present {
            self.incoming_qos2.clear();
            if !self.subscriptions.is_empty() {
                if let Err(e) = self.send_restore(&mut out) {
                    return lost(e);
                }
            }
        }
        // Re-send what was in flight, in order, flagged as duplicates.
        for o in &mut self.inflight {
            let packet = if o.released {
                Packet::PubRel(PublishResponse::new(o.id))
            } else {
                o.publish.dup = true;
                Packet::Publish(o.publish.clone())
            };
            if let Err(e) = codec::encode(&packet, version, &mut out) {
                return lost(format!("cannot encode a re-sent packet: {e}"));
            }
        }

        let ping_every = (!keep_alive.is_zero()).then_some(keep_alive);
        let mut last_sent = Instant::now();
        let mut ping_sent: Option<Instant> = None;
        let mut closing = false;
        loop {
            self.fill(&mut out);
            if !out.is_empty() {
                if let Err(e) = stream.write_all(&out).await {
                    return Exit::Lost {
                        error: format!("write failed: {e}"),
                        connected: true,
                    };
                }
                out.clear();
                last_sent = Instant::now();
            }
            if closing {
                let mut d = Vec::new();
                let _ = codec::encode(&Packet::Disconnect(Default::default()), version, &mut d);
                let _ = stream.write_all(&d).await;
                let _ = stream.shutdown().await;
                return Exit::Closed;
            }
            let ping_at = ping_every.map(|k| match ping_sent {
                Some(t) => t + k,
                None => last_sent + k,
            });
            let room = !self.requests_closed && self.pending.len() < pending_cap(&self.options);
            tokio::select! {
                read = stream.read_buf(&mut buf) => {
                    match read {
                        Ok(0) => return Exit::Lost { error: "the server closed the connection".into(), connected: true },
                        Err(e) => return Exit::Lost { error: format!("read failed: {e}"), connected: true },
                        Ok(_) => {}
                    }
                    loop {
                        let packet = match next_packet(&mut buf, version, o.max_packet_size) {
                            Ok(Some(p)) => p,
                            Ok(None) => break,
                            Err(e) => return Exit::Lost { error: format!("malformed packet from the server: {e}"), connected: true },
                        };
                        if let Packet::PingResp = packet {
                            ping_sent = None;
                            continue;
                        }
                        if let Err(error) = self.handle(packet, &mut out).await {
                            return Exit::Lost { error, connected: true };
                        }
                    }
                }
                req = self.requests.recv(), if room => {
                    match req {
                        None => {
                            self.requests_closed = true;
                            closing = true;
                        }
                        Some(Request::Disconnect { done }) => {
                            let _ = done.send(());
                            closing = true;
                        }
                        Some(r) => {
                            self.pending.push_back(r);
                            // Take whatever else is queued, so one write carries it all.
                            while self.pending.len() < pending_cap(&self.options) {
                                match self.requests.try_recv() {
                                    Ok(Request::Disconnect { done }) => {
                                        let _ = done.send(());
                                        closing = true;
                                        break;
                                    }
                                    Ok(r) => self.pending.push_back(r),
                                    Err(_) => break,
                                }
                            }
                        }
                    }
                }
                () = sleep_until(ping_at.unwrap_or_else(far_future)), if ping_at.is_some() => {
                    if ping_sent.is_some() {
                        return Exit::Lost { error: format!("no PINGRESP within {keep_alive:?}"), connected: true };
                    }
                    let _ = codec::encode(&Packet::PingReq, version, &mut out);
                    ping_sent = Some(Instant::now());
                }
            }
        }
    }

    fn send_restore(&mut self, out: &mut Vec<u8>) -> Result<(), String> {
        let Some(id) = self.alloc_id() else {
            return Err("no free packet identifier".into());
        };
        let packet = Packet::Subscribe(Subscribe {
            packet_id: id,
            properties: Default::default(),
            subscriptions: self.subscriptions.clone(),
        });
        codec::encode(&packet, self.options.version, out)
            .map_err(|e| format!("cannot encode SUBSCRIBE: {e}"))?;
        self.waiting.insert(id.get(), Waiting::Restore);
        Ok(())
    }

    fn alloc_id(&mut self) -> Option<PacketId> {
        if self.ids.len() >= usize::from(u16::MAX) {
            return None;
        }
        loop {
            self.next_id = self.next_id.wrapping_add(1);
            if let Some(id) = NonZeroU16::new(self.next_id) {
                if self.ids.insert(id.get()) {
                    return Some(id);
                }
            }
        }
    }

    fn release_id(&mut self, id: PacketId) {
        self.ids.remove(&id.get());
    }

    /// Moves pending requests onto the wire (into `out`) while the in-flight window allows.
    fn fill(&mut self, out: &mut Vec<u8>) {
        let window = usize::from(
            self.options
                .max_inflight
                .max(1)
                .min(self.server.receive_maximum),
        );
        while let Some(req) = self.pending.front() {
            if let Request::Publish { publish, .. } = req {
                if publish.qos != QoS::AtMostOnce && self.inflight.len() >= window {
                    break;
                }
            }
            let Some(req) = self.pending.pop_front() else {
                break;
            };
            match req {
                Request::Publish { mut publish, done } => {
                    if publish.qos > self.server.maximum_qos {
                        let _ = done.send(Err(ClientError::QosNotSupported {
                            qos: publish.qos,
                            max: self.server.maximum_qos,
                        }));
                        continue;
                    }
                    let id = if publish.qos == QoS::AtMostOnce {
                        None
                    } else {
                        match self.alloc_id() {
                            Some(id) => Some(id),
                            None => {
                                self.pending.push_front(Request::Publish { publish, done });
                                break;
                            }
                        }
                    };
                    publish.packet_id = id;
                    let packet = Packet::Publish(publish);
                    match self.encode_checked(&packet, out) {
                        Err(e) => {
                            if let Some(id) = id {
                                self.release_id(id);
                            }
                            let _ = done.send(Err(e));
                        }
                        Ok(()) => {
                            let Packet::Publish(publish) = packet else {
                                continue;
                            };
                            match id {
                                None => {
                                    let _ = done.send(Ok(()));
                                }
                                Some(id) => self.inflight.push_back(Outgoing {
                                    id,
                                    publish,
                                    released: false,
                                    done,
                                }),
                            }
                        }
                    }
                }
                Request::Subscribe {
                    subscriptions,
                    done,
                } => {
                    let Some(id) = self.alloc_id() else {
                        self.pending.push_front(Request::Subscribe {
                            subscriptions,
                            done,
                        });
                        break;
                    };
                    let packet = Packet::Subscribe(Subscribe {
                        packet_id: id,
                        properties: Default::default(),
                        subscriptions,
                    });
                    match self.encode_checked(&packet, out) {
                        Err(e) => {
                            self.release_id(id);
                            let _ = done.send(Err(e));
                        }
                        Ok(()) => {
                            let Packet::Subscribe(s) = packet else {
                                continue;
                            };
                            self.waiting.insert(
                                id.get(),
                                Waiting::Request(Request::Subscribe {
                                    subscriptions: s.subscriptions,
                                    done,
                                }),
                            );
                        }
                    }
                }
                Request::Unsubscribe { filters, done } => {
                    let Some(id) = self.alloc_id() else {
                        self.pending
                            .push_front(Request::Unsubscribe { filters, done });
                        break;
                    };
                    let packet = Packet::Unsubscribe(Unsubscribe {
                        packet_id: id,
                        properties: Default::default(),
                        filters,
                    });
                    match self.encode_checked(&packet, out) {
                        Err(e) => {
                            self.release_id(id);
                            let _ = done.send(Err(e));
                        }
                        Ok(()) => {
                            let Packet::Unsubscribe(u) = packet else {
                                continue;
                            };
                            self.waiting.insert(
                                id.get(),
                                Waiting::Request(Request::Unsubscribe {
                                    filters: u.filters,
                                    done,
                                }),
                            );
                        }
                    }
                }
                Request::Disconnect { done } => {
                    // Only taken from the channel directly; never queued.
                    let _ = done.send(());
                }
            }
        }
    }

    fn encode_checked(&self, packet: &Packet, out: &mut Vec<u8>) -> Result<(), ClientError> {
        let version = self.options.version;
        let len =
            codec::encoded_len(packet, version).map_err(|e| ClientError::Encode(e.to_string()))?;
        if len > self.server.maximum_packet_size {
            return Err(ClientError::Encode(format!(
                "{len} bytes, over the server's maximum packet size of {}",
                self.server.maximum_packet_size
            )));
        }
        codec::encode(packet, version, out).map_err(|e| ClientError::Encode(e.to_string()))
    }

    /// Handles one packet from the server; `Err` ends the connection.
    async fn handle(&mut self, packet: Packet, out: &mut Vec<u8>) -> Result<(), String> {
        let version = self.options.version;
        let mut reply = |p: Packet| put(out, version, &p);
        match packet {
            Packet::Publish(p) => {
                if p.topic.is_empty() {
                    return Err(
                        "the server used a topic alias, which this client does not accept".into(),
                    );
                }
                match (p.qos, p.packet_id) {
                    (QoS::AtMostOnce, _) => self.deliver(p).await,
                    (QoS::AtLeastOnce, Some(id)) => {
                        self.deliver(p).await;
                        reply(Packet::PubAck(PublishResponse::new(id)))?;
                    }
                    (QoS::ExactlyOnce, Some(id)) => {
                        if self.incoming_qos2.insert(id.get()) {
                            self.deliver(p).await;
                        }
                        reply(Packet::PubRec(PublishResponse::new(id)))?;
                    }
                    (_, None) => return Err("PUBLISH with QoS > 0 but no packet identifier".into()),
                }
            }
            Packet::PubAck(r) => {
                if let Some(i) = self
                    .inflight
                    .iter()
                    .position(|o| o.id == r.packet_id && o.publish.qos == QoS::AtLeastOnce)
                {
                    if let Some(o) = self.inflight.remove(i) {
                        self.release_id(o.id);
                        let _ = o.done.send(ack_result(r.reason_code));
                    }
                }
            }
            Packet::PubRec(r) => {
                if let Some(i) = self
                    .inflight
                    .iter()
                    .position(|o| o.id == r.packet_id && o.publish.qos == QoS::ExactlyOnce)
                {
                    if r.reason_code as u8 >= 0x80 {
                        if let Some(o) = self.inflight.remove(i) {
                            self.release_id(o.id);
                            let _ = o.done.send(Err(ClientError::Refused(r.reason_code)));
                        }
                    } else {
                        if let Some(o) = self.inflight.get_mut(i) {
                            o.released = true;
                        }
                        reply(Packet::PubRel(PublishResponse::new(r.packet_id)))?;
                    }
                } else {
                    // Not ours (any more): release it so the server can free its state.
                    reply(Packet::PubRel(PublishResponse::new(r.packet_id)))?;
                }
            }
            Packet::PubComp(r) => {
                if let Some(i) = self
                    .inflight
                    .iter()
                    .position(|o| o.id == r.packet_id && o.released)
                {
                    if let Some(o) = self.inflight.remove(i) {
                        self.release_id(o.id);
                        let _ = o.done.send(Ok(()));
                    }
                }
            }
            Packet::PubRel(r) => {
                self.incoming_qos2.remove(&r.packet_id.get());
                reply(Packet::PubComp(PublishResponse::new(r.packet_id)))?;
            }
            Packet::SubAck(s) => {
                self.release_id(s.packet_id);
                match self.waiting.remove(&s.packet_id.get()) {
                    Some(Waiting::Request(Request::Subscribe {
                        subscriptions,
                        done,
                    })) => {
                        for (sub, code) in subscriptions.iter().zip(&s.reason_codes) {
                            if (*code as u8) < 0x80 {
                                self.subscriptions.retain(|x| x.filter != sub.filter);
                                self.subscriptions.push(sub.clone());
                            }
                        }
                        let _ = done.send(Ok(s.reason_codes));
                    }
                    Some(Waiting::Restore) => {
                        for (sub, code) in self.subscriptions.iter().zip(&s.reason_codes) {
                            if *code as u8 >= 0x80 {
                                tracing::warn!(filter = %sub.filter, code = ?code, "the server refused a renewed subscription");
                            }
                        }
                    }
                    Some(Waiting::Request(other)) => fail(other),
                    None => {}
                }
            }
            Packet::UnsubAck(u) => {
                self.release_id(u.packet_id);
                match self.waiting.remove(&u.packet_id.get()) {
                    Some(Waiting::Request(Request::Unsubscribe { filters, done })) => {
                        self.subscriptions.retain(|s| !filters.contains(&s.filter));
                        let _ = done.send(Ok(()));
                    }
                    Some(Waiting::Request(other)) => fail(other),
                    _ => {}
                }
            }
            Packet::Disconnect(d) => {
                return Err(format!(
                    "the server disconnected: {:?}{}",
                    d.reason_code,
                    d.properties
                        .reason_string
                        .as_ref()
                        .map(|s| format!(" ({s})"))
                        .unwrap_or_default()
                ))
            }
            other => {
                return Err(format!(
                    "unexpected {} from the server",
                    other.packet_type()
                ))
            }
        }
        Ok(())
    }

    async fn deliver(&mut self, mut p: Publish) {
        p.dup = false;
        // A receiver that was dropped just means nobody listens; the message is still acked.
        let _ = self.events.send(Event::Publish(p)).await;
    }
}

fn put(out: &mut Vec<u8>, version: ProtocolVersion, p: &Packet) -> Result<(), String> {
    codec::encode(p, version, out).map_err(|e| format!("cannot encode {}: {e}", p.packet_type()))
}

fn ack_result(code: ReasonCode) -> Result<(), ClientError> {
    if (code as u8) < 0x80 {
        Ok(())
    } else {
        Err(ClientError::Refused(code))
    }
}

fn fail(r: Request) {
    match r {
        Request::Publish { done, .. } | Request::Unsubscribe { done, .. } => {
            let _ = done.send(Err(ClientError::Closed));
        }
        Request::Subscribe { done, .. } => {
            let _ = done.send(Err(ClientError::Closed));
        }
        Request::Disconnect { done } => {
            let _ = done.send(());
        }
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365)
}

/// Splits the next complete packet off `buf`, if there is one.
fn next_packet(
    buf: &mut BytesMut,
    version: ProtocolVersion,
    max: usize,
) -> Result<Option<Packet>, codec::DecodeError> {
    let Some(h) = codec::decode_header(buf, version, max)? else {
        return Ok(None);
    };
    if buf.len() < h.packet_len() {
        buf.reserve(h.packet_len() - buf.len());
        return Ok(None);
    }
    let frame = buf.split_to(h.packet_len()).freeze();
    Ok(codec::decode_bytes(&frame, version, max)?.map(|(p, _)| p))
}

async fn read_packet<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    version: ProtocolVersion,
    max: usize,
) -> io::Result<Packet> {
    loop {
        match next_packet(buf, version, max) {
            Ok(Some(p)) => return Ok(p),
            Ok(None) => {}
            Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())),
        }
        if stream.read_buf(buf).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the connection",
            ));
        }
    }
}
