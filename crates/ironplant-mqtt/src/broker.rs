//! The broker: accepts MQTT connections, routes PUBLISH through the subscription tree, keeps
//! retained messages, and delivers wills.
//!
//! Shape: one task per connection reads packets and routes them; each session's outgoing
//! messages go through a bounded queue to a writer task that coalesces everything queued into
//! one socket write (the main lever for throughput: one syscall for many small packets).
//! Routing holds the router lock only to look up subscribers; encoding happens in the writers.
//!
//! This first version keeps clean sessions only (a session ends with its connection); persistent
//! sessions, QoS retransmission on reconnect, topic aliases, WebSocket, authentication hooks and
//! the bridge come with the rest of issue 5.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::codec::{
    self, Connack, Connect, DecodeError, Disconnect, MqttString, Packet, ProtocolVersion, Publish,
    PublishResponse, QoS, ReasonCode, SubAck, UnsubAck,
};
use crate::retained::RetainedStore;
use crate::topic;
use crate::tree::{ClientId, Match, SubOptions, SubTree};

/// Room a connection's read buffer makes before each read. Small, because most connections are
/// idle devices (10,000 of them must fit in a few hundred MB); a busy connection's buffer
/// grows as its packets need.
const READ_CHUNK: usize = 2 * 1024;
/// A writer's buffer is given back when a burst left it larger than this.
const WRITE_KEEP: usize = 64 * 1024;

/// Broker settings.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Largest packet accepted (and announced to 5.0 clients).
    pub max_packet_size: usize,
    /// Messages queued per client before new ones are dropped (and counted).
    pub max_queue: usize,
    /// Time a new connection has to send CONNECT (slow-loris defence).
    pub connect_timeout: Duration,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            max_packet_size: 1 << 20,
            max_queue: 10_000,
            connect_timeout: Duration::from_secs(5),
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
    /// Messages dropped because a client's queue was full.
    pub dropped: AtomicU64,
    pub protocol_errors: AtomicU64,
}

#[derive(Debug, Clone)]
struct Retained {
    publish: Publish,
}

/// What a writer task sends.
enum Out {
    /// A message routed to this client, at the QoS it is delivered with.
    Deliver {
        publish: Publish,
        qos: QoS,
        retain: bool,
        identifiers: Vec<u32>,
    },
    /// A control packet (acks, SUBACK, PINGRESP...).
    Packet(Packet),
    /// Send DISCONNECT (5.0) if possible, then close.
    Close(Option<ReasonCode>),
}

struct Client {
    client_id: String,
    tx: mpsc::Sender<Out>,
}

#[derive(Default)]
struct Router {
    tree: SubTree,
    retained: RetainedStore<Retained>,
    clients: HashMap<ClientId, Client>,
    by_name: HashMap<String, ClientId>,
    /// Filters per client, to remove its subscriptions when it goes.
    filters: HashMap<ClientId, Vec<String>>,
    next_id: ClientId,
}

struct Inner {
    cfg: BrokerConfig,
    router: Mutex<Router>,
    stats: BrokerStats,
}

/// A running broker; cheap to clone.
#[derive(Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

impl Broker {
    pub fn new(cfg: BrokerConfig) -> Broker {
        Broker {
            inner: Arc::new(Inner {
                cfg,
                router: Mutex::new(Router::default()),
                stats: BrokerStats::default(),
            }),
        }
    }

    pub fn stats(&self) -> &BrokerStats {
        &self.inner.stats
    }

    /// Accepts connections until the listener fails.
    pub async fn serve(&self, listener: TcpListener) -> std::io::Result<()> {
        loop {
            let (stream, peer) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            let broker = self.clone();
            tokio::spawn(async move {
                if let Err(e) = broker.connection(stream, peer).await {
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
        self.connection(stream, peer).await
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
        let id = self.register(&format!("$internal/{name}"), tx);
        {
            let mut r = self.inner.router.lock();
            let opts = SubOptions {
                qos: 0,
                no_local: false,
                retain_as_published: true,
                identifier: 0,
            };
            if r.tree.subscribe(filter, id, opts) {
                r.filters.entry(id).or_default().push(filter.to_owned());
            }
            for (_, m) in r.retained.matching(filter) {
                let mut p = m.publish.clone();
                p.retain = true;
                if out_tx.try_send(p).is_err() {
                    self.inner.stats.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        let broker = self.clone();
        tokio::spawn(async move {
            while let Some(item) = rx.recv().await {
                match item {
                    Out::Deliver {
                        mut publish,
                        retain,
                        ..
                    } => {
                        publish.qos = QoS::AtMostOnce;
                        publish.packet_id = None;
                        publish.retain = retain;
                        if out_tx.send(publish).await.is_err() {
                            break;
                        }
                    }
                    Out::Close(_) => break,
                    Out::Packet(_) => {}
                }
            }
            broker.unregister(id);
        });
        Ok(out_rx)
    }

    /// Publishes a message from inside the platform (UNS, $SYS, Sparkplug host commands).
    pub fn publish(&self, publish: Publish) {
        self.route(None, publish);
    }

    fn route(&self, from: Option<ClientId>, publish: Publish) {
        let st = &self.inner.stats;
        st.messages_in.fetch_add(1, Ordering::Relaxed);
        let mut matches: Vec<Match> = Vec::new();
        let senders: Vec<(mpsc::Sender<Out>, Match)> = {
            let mut r = self.inner.router.lock();
            if publish.retain {
                let topic = publish.topic.as_str();
                if publish.payload.is_empty() {
                    r.retained.set(topic, None);
                } else {
                    // Keep the payload apart from the connection's read buffer it was sliced from.
                    let mut kept = publish.clone();
                    kept.payload = Bytes::copy_from_slice(&publish.payload);
                    r.retained.set(topic, Some(Retained { publish: kept }));
                }
            }
            r.tree.matches(publish.topic.as_str(), &mut matches);
            matches
                .into_iter()
                .filter(|m| !(m.options.no_local && Some(m.client) == from && !m.shared))
                .filter_map(|m| r.clients.get(&m.client).map(|c| (c.tx.clone(), m)))
                .collect()
        };
        for (tx, m) in senders {
            let qos = publish
                .qos
                .min(QoS::from_u8(m.options.qos).unwrap_or(QoS::AtMostOnce));
            let retain = publish.retain && m.options.retain_as_published;
            let out = Out::Deliver {
                publish: publish.clone(),
                qos,
                retain,
                identifiers: m.identifiers,
            };
            match tx.try_send(out) {
                Ok(()) => {
                    st.messages_out.fetch_add(1, Ordering::Relaxed);
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    st.dropped.fetch_add(1, Ordering::Relaxed);
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
    }

    async fn connection<S: Transport>(
        &self,
        mut stream: S,
        peer: SocketAddr,
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
                let mut out = Vec::new();
                let ack = Packet::Connack(Connack {
                    session_present: false,
                    reason_code: code,
                    properties: Default::default(),
                });
                if codec::encode(&ack, version, &mut out).is_ok() {
                    let _ = stream.write_all(&out).await;
                }
                tracing::debug!(%peer, error = %e, "bad CONNECT");
                return Ok(());
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
        let (tx, rx) = mpsc::channel::<Out>(cfg.max_queue);
        let id = self.register(&client_id, tx.clone());
        self.inner.stats.connections.fetch_add(1, Ordering::Relaxed);
        self.inner.stats.connected.fetch_add(1, Ordering::Relaxed);
        let mut props = codec::ConnackProperties::default();
        if version == ProtocolVersion::V5 {
            if assigned {
                props.assigned_client_identifier =
                    MqttString::from_utf8(Bytes::from(client_id.clone())).ok();
            }
            props.maximum_packet_size = u32::try_from(cfg.max_packet_size)
                .ok()
                .and_then(std::num::NonZeroU32::new);
        }
        let ack = Packet::Connack(Connack {
            session_present: false,
            reason_code: ReasonCode::Success,
            properties: props,
        });
        let (read_half, write_half) = Transport::split(stream);
        let _ = tx.try_send(Out::Packet(ack));
        let writer = tokio::spawn(writer(write_half, rx, version));
        let outcome = self
            .read_loop(read_half, buf, id, version, &connect, &tx)
            .await;
        self.unregister(id);
        self.inner.stats.connected.fetch_sub(1, Ordering::Relaxed);
        // The will goes out unless the client said goodbye properly.
        if let (Some(will), false) = (&connect.will, matches!(outcome, Ok(Goodbye::Clean))) {
            let mut p = Publish::new(will.topic.clone(), will.payload.clone());
            p.qos = will.qos;
            p.retain = will.retain;
            // MQTT 5 (3.1.3.2): the will's properties go out with it. The will delay is not
            // implemented yet (clean sessions only), so it is published at once.
            let wp = &will.properties;
            p.properties.payload_format_indicator = wp.payload_format_indicator;
            p.properties.message_expiry_interval = wp.message_expiry_interval;
            p.properties.content_type = wp.content_type.clone();
            p.properties.response_topic = wp.response_topic.clone();
            p.properties.correlation_data = wp.correlation_data.clone();
            p.properties.user_properties = wp.user_properties.clone();
            self.route(None, p);
        }
        if let Ok(Goodbye::Kick(code)) = outcome {
            let _ = tx.send(Out::Close(Some(code))).await;
        } else {
            let _ = tx.send(Out::Close(None)).await;
        }
        drop(tx);
        let _ = writer.await;
        outcome.map(|_| ())
    }

    fn register(&self, client_id: &str, tx: mpsc::Sender<Out>) -> ClientId {
        let mut r = self.inner.router.lock();
        // Session takeover: the older connection with the same client id is closed.
        if let Some(old) = r.by_name.get(client_id).copied() {
            if let Some(c) = r.clients.get(&old) {
                let _ =
                    c.tx.try_send(Out::Close(Some(ReasonCode::SessionTakenOver)));
            }
        }
        r.next_id = r.next_id.wrapping_add(1);
        let id = r.next_id;
        r.clients.insert(
            id,
            Client {
                client_id: client_id.to_owned(),
                tx,
            },
        );
        r.by_name.insert(client_id.to_owned(), id);
        id
    }

    fn unregister(&self, id: ClientId) {
        let mut r = self.inner.router.lock();
        if let Some(c) = r.clients.remove(&id) {
            if r.by_name.get(&c.client_id) == Some(&id) {
                r.by_name.remove(&c.client_id);
            }
        }
        for f in r.filters.remove(&id).unwrap_or_default() {
            r.tree.unsubscribe(&f, id);
        }
    }

    async fn read_loop<R: AsyncRead + Unpin>(
        &self,
        mut rd: R,
        mut buf: BytesMut,
        id: ClientId,
        version: ProtocolVersion,
        connect: &Connect,
        tx: &mpsc::Sender<Out>,
    ) -> std::io::Result<Goodbye> {
        let max = self.inner.cfg.max_packet_size;
        // Keep alive: 1.5 times the client's interval without any packet closes the connection.
        let idle = (connect.keep_alive > 0)
            .then(|| Duration::from_millis(u64::from(connect.keep_alive) * 1500));
        loop {
            // Decode everything buffered: one freeze, then zero-copy slices per packet (their
            // payloads share this buffer); the incomplete tail goes back for the next read.
            let frozen = buf.split().freeze();
            let mut off = 0;
            loop {
                let rest = frozen.slice(off..);
                match codec::decode_bytes(&rest, version, max) {
                    Ok(Some((packet, used))) => {
                        off += used;
                        if let Some(bye) = self.handle(id, version, packet, tx) {
                            return Ok(bye);
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        self.inner
                            .stats
                            .protocol_errors
                            .fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(client = id, error = %e, "malformed packet; disconnecting");
                        return Ok(Goodbye::Kick(e.reason_code()));
                    }
                }
            }
            buf.extend_from_slice(&frozen[off..]);
            // A fresh buffer after split(): make room for a large read, not 64 bytes at a time.
            buf.reserve(READ_CHUNK);
            let read = rd.read_buf(&mut buf);
            let n = match idle {
                Some(d) => match tokio::time::timeout(d, read).await {
                    Ok(r) => r?,
                    Err(_) => return Ok(Goodbye::Kick(ReasonCode::KeepAliveTimeout)),
                },
                None => read.await?,
            };
            if n == 0 {
                return Ok(Goodbye::Lost);
            }
        }
    }

    /// Handles one packet; `Some` ends the connection.
    fn handle(
        &self,
        id: ClientId,
        version: ProtocolVersion,
        packet: Packet,
        tx: &mpsc::Sender<Out>,
    ) -> Option<Goodbye> {
        let send = |p: Packet| {
            let _ = tx.try_send(Out::Packet(p));
        };
        match packet {
            Packet::Publish(p) => {
                if topic::validate_topic_name(p.topic.as_str()).is_err() {
                    return Some(Goodbye::Kick(ReasonCode::TopicNameInvalid));
                }
                let (qos, pid) = (p.qos, p.packet_id);
                // Route (and store a retained message) before acknowledging: once the publisher
                // has its PUBACK/PUBREC, a new subscriber must find the retained message.
                self.route(Some(id), p);
                match (qos, pid) {
                    (QoS::AtLeastOnce, Some(pid)) => {
                        send(Packet::PubAck(PublishResponse::new(pid)))
                    }
                    (QoS::ExactlyOnce, Some(pid)) => {
                        send(Packet::PubRec(PublishResponse::new(pid)))
                    }
                    _ => {}
                }
            }
            Packet::PubRel(r) => send(Packet::PubComp(PublishResponse::new(r.packet_id))),
            Packet::PubRec(r) => send(Packet::PubRel(PublishResponse::new(r.packet_id))),
            Packet::PubAck(_) | Packet::PubComp(_) => {}
            Packet::Subscribe(s) => {
                let mut codes = Vec::with_capacity(s.subscriptions.len());
                let mut retained: Vec<(Publish, u8)> = Vec::new();
                {
                    let mut r = self.inner.router.lock();
                    for sub in &s.subscriptions {
                        let filter = sub.filter.as_str();
                        if topic::validate_topic_filter(filter).is_err() {
                            codes.push(ReasonCode::TopicFilterInvalid);
                            continue;
                        }
                        let opts = SubOptions {
                            qos: sub.options.qos as u8,
                            no_local: sub.options.no_local,
                            retain_as_published: sub.options.retain_as_published,
                            identifier: s.properties.subscription_identifier.map_or(0, |i| i.get()),
                        };
                        let new = r.tree.subscribe(filter, id, opts);
                        if new {
                            r.filters.entry(id).or_default().push(filter.to_owned());
                        }
                        let shared = crate::tree::split_shared(filter).is_some();
                        let send_retained = !shared
                            && match sub.options.retain_handling {
                                codec::RetainHandling::SendAtSubscribe => true,
                                codec::RetainHandling::SendAtSubscribeIfNew => new,
                                codec::RetainHandling::DoNotSend => false,
                            };
                        if send_retained {
                            for (_, m) in r.retained.matching(filter) {
                                retained.push((m.publish.clone(), opts.qos));
                            }
                        }
                        codes.push(match sub.options.qos {
                            QoS::AtMostOnce => ReasonCode::Success,
                            QoS::AtLeastOnce => ReasonCode::GrantedQos1,
                            QoS::ExactlyOnce => ReasonCode::GrantedQos2,
                        });
                    }
                }
                send(Packet::SubAck(SubAck {
                    packet_id: s.packet_id,
                    properties: Default::default(),
                    reason_codes: codes,
                }));
                for (p, max_qos) in retained {
                    let qos = p.qos.min(QoS::from_u8(max_qos).unwrap_or(QoS::AtMostOnce));
                    let _ = tx.try_send(Out::Deliver {
                        publish: p,
                        qos,
                        retain: true,
                        identifiers: Vec::new(),
                    });
                }
            }
            Packet::Unsubscribe(u) => {
                let mut codes = Vec::with_capacity(u.filters.len());
                {
                    let mut r = self.inner.router.lock();
                    for f in &u.filters {
                        let existed = r.tree.unsubscribe(f.as_str(), id);
                        if let Some(list) = r.filters.get_mut(&id) {
                            list.retain(|x| x != f.as_str());
                        }
                        codes.push(if existed {
                            ReasonCode::Success
                        } else {
                            ReasonCode::NoSubscriptionExisted
                        });
                    }
                }
                if version == ProtocolVersion::V311 {
                    codes.clear();
                }
                send(Packet::UnsubAck(UnsubAck {
                    packet_id: u.packet_id,
                    properties: Default::default(),
                    reason_codes: codes,
                }));
            }
            Packet::PingReq => send(Packet::PingResp),
            Packet::Disconnect(d) => {
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

/// How a connection ended.
enum Goodbye {
    /// DISCONNECT received: no will.
    Clean,
    /// The connection dropped: the will goes out.
    Lost,
    /// We end it with this reason (5.0 clients get a DISCONNECT); the will goes out.
    Kick(ReasonCode),
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

/// Drains the queue into one buffer per wake-up and writes it with one syscall.
async fn writer<W: AsyncWrite + Unpin>(
    mut wr: W,
    mut rx: mpsc::Receiver<Out>,
    version: ProtocolVersion,
) {
    let mut out: Vec<u8> = Vec::new();
    let mut next_pid: u16 = 0;
    let mut batch = Vec::new();
    loop {
        if rx.recv_many(&mut batch, 256).await == 0 {
            break;
        }
        out.clear();
        let mut close: Option<Option<ReasonCode>> = None;
        for item in batch.drain(..) {
            let packet = match item {
                Out::Packet(p) => p,
                Out::Deliver {
                    mut publish,
                    qos,
                    retain,
                    identifiers,
                } => {
                    publish.qos = qos;
                    publish.retain = retain;
                    publish.dup = false;
                    publish.packet_id = if qos == QoS::AtMostOnce {
                        None
                    } else {
                        next_pid = next_pid.wrapping_add(1).max(1);
                        std::num::NonZeroU16::new(next_pid)
                    };
                    publish.properties.topic_alias = None;
                    publish.properties.subscription_identifiers = identifiers
                        .into_iter()
                        .filter_map(std::num::NonZeroU32::new)
                        .collect();
                    Packet::Publish(publish)
                }
                Out::Close(code) => {
                    close = Some(code);
                    break;
                }
            };
            if let Err(e) = codec::encode(&packet, version, &mut out) {
                tracing::debug!(error = %e, "cannot encode a packet for this client; skipped");
            }
        }
        if let Some(Some(code)) = close {
            if version == ProtocolVersion::V5 {
                let _ = codec::encode(
                    &Packet::Disconnect(Disconnect {
                        reason_code: code,
                        properties: Default::default(),
                    }),
                    version,
                    &mut out,
                );
            }
        }
        if !out.is_empty() && wr.write_all(&out).await.is_err() {
            break;
        }
        if out.capacity() > WRITE_KEEP {
            out = Vec::new();
        }
        if batch.capacity() > 256 {
            batch = Vec::new();
        }
        if close.is_some() {
            let _ = wr.shutdown().await;
            break;
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
