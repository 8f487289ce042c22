//! The load generator's MQTT connections: rumqttc (a third-party library, used as a device
//! uses it: one `AsyncClient` + `EventLoop` per connection, its event loop polled by its own
//! task) or a small client on our own codec, which can pack several PUBLISHes into one write
//! (`--batch`). Payloads carry their send time, publisher and sequence number.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::num::NonZeroU16;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use ironplant_mqtt::codec::{
    self, Connect, MqttString, Packet, ProtocolVersion, Publish, PublishResponse, QoS, ReasonCode,
    Subscribe, Subscription, SubscriptionOptions,
};
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

const VERSION: ProtocolVersion = ProtocolVersion::V311;
const MAX_PACKET: usize = 1 << 20;
/// rumqttc's request channel (`AsyncClient::new(options, cap)`): the capacity of its examples.
pub(super) const RUMQTTC_CAP: usize = 10;
/// Unacknowledged QoS 1/2 PUBLISHes per connection of our client: rumqttc's default inflight.
pub(super) const OURS_INFLIGHT: usize = 100;
/// Longest wait for a CONNACK, SUBACK or a packet the protocol says must come.
const ANSWER: Duration = Duration::from_secs(10);

/// The client library of the load generator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Library {
    /// rumqttc (third party), as a device uses it.
    Rumqttc,
    /// A client on Ironplant's own codec; `--batch` PUBLISHes per write.
    Ours,
}

#[derive(Clone, Copy)]
pub(super) struct ClientKind {
    pub lib: Library,
    /// PUBLISHes our client packs into one write (1: one per write).
    pub batch: usize,
}

/// A broker as the load generator reaches it.
#[derive(Clone)]
pub(super) struct Endpoint {
    pub addr: SocketAddr,
    /// User name and password (our broker under `--policy`: an API token).
    pub login: Option<(String, String)>,
}

/// Nanoseconds since the start of the run: the clock of payload timestamps (publishers and
/// subscribers live in this one process).
pub(super) fn now_ns() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// A device-like JSON payload (~85 bytes) that starts with its send time, publisher and
/// sequence number, so a subscriber reads them without a JSON parser.
pub(super) fn payload(src: u32, seq: u64, value: f64) -> Vec<u8> {
    format!(
        "{{\"ts\":{},\"src\":{src},\"seq\":{seq},\"v\":{value:.3},\"unit\":\"degC\",\"q\":192,\"st\":\"RUN\"}}",
        now_ns()
    )
    .into_bytes()
}

/// What a payload says about itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Stamp {
    pub ts: u64,
    pub src: u32,
    pub seq: u64,
}

/// Reads the head of a [`payload`]; `None` for anything else.
pub(super) fn stamp(p: &[u8]) -> Option<Stamp> {
    fn number(b: &[u8]) -> Option<(u64, &[u8])> {
        let n = b.iter().take_while(|c| c.is_ascii_digit()).count();
        let v = std::str::from_utf8(b.get(..n)?).ok()?.parse().ok()?;
        Some((v, &b[n..]))
    }
    let (ts, rest) = number(p.strip_prefix(b"{\"ts\":")?)?;
    let (src, rest) = number(rest.strip_prefix(b",\"src\":")?)?;
    let (seq, _) = number(rest.strip_prefix(b",\"seq\":")?)?;
    Some(Stamp {
        ts,
        src: u32::try_from(src).ok()?,
        seq,
    })
}

fn rumqttc_qos(qos: QoS) -> rumqttc::QoS {
    match qos {
        QoS::AtMostOnce => rumqttc::QoS::AtMostOnce,
        QoS::AtLeastOnce => rumqttc::QoS::AtLeastOnce,
        QoS::ExactlyOnce => rumqttc::QoS::ExactlyOnce,
    }
}

// ---------------------------------------------------------------------------------------------
// Publishers

/// Acknowledgements a publisher received (PUBACK at QoS 1, PUBCOMP at QoS 2).
#[derive(Default)]
pub(super) struct Acks {
    pub count: AtomicU64,
    /// The acknowledged sequence numbers, when the publisher tracks them.
    log: Option<Mutex<Vec<u64>>>,
}

impl Acks {
    fn new(track: bool) -> Acks {
        Acks {
            count: AtomicU64::new(0),
            log: track.then(|| Mutex::new(Vec::new())),
        }
    }

    fn ack(&self, seq: Option<u64>) {
        self.count.fetch_add(1, Ordering::Relaxed);
        if let (Some(log), Some(seq)) = (&self.log, seq) {
            log.lock().push(seq);
        }
    }

    /// The acknowledged sequence numbers so far (empty unless tracked).
    pub fn acked(&self) -> Vec<u64> {
        self.log
            .as_ref()
            .map(|l| l.lock().clone())
            .unwrap_or_default()
    }
}

/// One publishing connection, on one topic at one QoS.
pub(super) struct Publisher {
    inner: PubInner,
    qos: QoS,
    /// PUBLISHes handed to the client (rumqttc: accepted by its request channel).
    pub sent: u64,
    pub acks: Arc<Acks>,
}

enum PubInner {
    Rumqttc {
        client: rumqttc::AsyncClient,
        topic: String,
        /// Sequence numbers of requests not yet written, in request order (tracking only).
        seqs: Option<Arc<Mutex<VecDeque<u64>>>>,
        task: JoinHandle<anyhow::Result<()>>,
    },
    Ours(Box<OursPublisher>),
}

impl Publisher {
    /// Connects (returns after the CONNACK). With `track`, the sequence numbers of
    /// acknowledged messages are kept ([`Acks::acked`]).
    pub async fn connect(
        kind: ClientKind,
        ep: &Endpoint,
        id: &str,
        topic: &str,
        qos: QoS,
        track: bool,
    ) -> anyhow::Result<Publisher> {
        let acks = Arc::new(Acks::new(track));
        let inner = match kind.lib {
            Library::Rumqttc => {
                let (client, eventloop, _) = rumqttc_connect(ep, id, true).await?;
                let seqs = track.then(|| Arc::new(Mutex::new(VecDeque::new())));
                let task = tokio::spawn(drive_publisher(eventloop, seqs.clone(), acks.clone()));
                PubInner::Rumqttc {
                    client,
                    topic: topic.to_owned(),
                    seqs,
                    task,
                }
            }
            Library::Ours => {
                let (conn, _) = Conn::connect(ep, id, true).await?;
                PubInner::Ours(Box::new(OursPublisher {
                    conn,
                    topic: MqttString::try_from(topic)?,
                    out: Vec::new(),
                    pending: 0,
                    batch: kind.batch.max(1),
                    next_id: 0,
                    inflight: HashMap::new(),
                    acks: acks.clone(),
                }))
            }
        };
        Ok(Publisher {
            inner,
            qos,
            sent: 0,
            acks,
        })
    }

    /// Publishes one message; waits while the client's window of unacknowledged messages is
    /// full (rumqttc: while its request channel is full).
    pub async fn publish(&mut self, payload: Vec<u8>, seq: u64) -> anyhow::Result<()> {
        match &mut self.inner {
            PubInner::Rumqttc {
                client,
                topic,
                seqs,
                task,
            } => {
                if let Some(seqs) = seqs {
                    seqs.lock().push_back(seq);
                }
                let sent = client
                    .publish(topic.as_str(), rumqttc_qos(self.qos), false, payload)
                    .await;
                if sent.is_err() {
                    // The event loop ended: its error says why.
                    return Err(match task.await {
                        Ok(Err(e)) => e,
                        Ok(Ok(())) => anyhow::anyhow!("rumqttc event loop stopped"),
                        Err(e) => anyhow::anyhow!("rumqttc event loop task failed: {e}"),
                    });
                }
            }
            PubInner::Ours(p) => p.publish(self.qos, payload, seq).await?,
        }
        self.sent += 1;
        Ok(())
    }

    /// Writes what our client has packed so far (rumqttc writes every request at once).
    pub async fn flush(&mut self) -> anyhow::Result<()> {
        match &mut self.inner {
            PubInner::Rumqttc { .. } => Ok(()),
            PubInner::Ours(p) => p.flush().await,
        }
    }

    /// Waits up to `wait` for the acknowledgement of every QoS 1/2 message, then disconnects.
    /// Returns whether every message was acknowledged.
    pub async fn finish(mut self, wait: Duration) -> anyhow::Result<bool> {
        self.flush().await?;
        let deadline = Instant::now() + wait;
        let expected = if self.qos == QoS::AtMostOnce {
            0
        } else {
            self.sent
        };
        match self.inner {
            PubInner::Rumqttc { client, task, .. } => {
                while self.acks.count.load(Ordering::Relaxed) < expected
                    && Instant::now() < deadline
                    && !task.is_finished()
                {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                let _ = client.try_disconnect();
                match tokio::time::timeout(Duration::from_secs(5), task).await {
                    Ok(Ok(r)) => r?,
                    Ok(Err(e)) => bail!("rumqttc event loop task failed: {e}"),
                    Err(_) => bail!("rumqttc did not disconnect within 5 s"),
                }
            }
            PubInner::Ours(mut p) => {
                while !p.inflight.is_empty() && Instant::now() < deadline {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if tokio::time::timeout(left, p.conn.rd.fill()).await.is_err() {
                        break;
                    }
                    p.absorb().await?;
                }
                p.conn.disconnect().await?;
            }
        }
        Ok(self.acks.count.load(Ordering::Relaxed) >= expected)
    }
}

/// A publisher's rumqttc event loop: counts acknowledgements and, when tracking, maps packet
/// ids back to sequence numbers (requests leave the channel in order, one `Outgoing::Publish`
/// event each, a collided one later but before any newer one).
async fn drive_publisher(
    mut eventloop: rumqttc::EventLoop,
    seqs: Option<Arc<Mutex<VecDeque<u64>>>>,
    acks: Arc<Acks>,
) -> anyhow::Result<()> {
    use rumqttc::{Event, Outgoing, Packet as P};
    let mut by_pkid: HashMap<u16, u64> = HashMap::new();
    loop {
        match eventloop.poll().await {
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                if let Some(seq) = seqs.as_ref().and_then(|s| s.lock().pop_front()) {
                    if pkid != 0 {
                        by_pkid.insert(pkid, seq);
                    }
                }
            }
            Ok(Event::Incoming(P::PubAck(a))) => acks.ack(by_pkid.remove(&a.pkid)),
            Ok(Event::Incoming(P::PubComp(c))) => acks.ack(by_pkid.remove(&c.pkid)),
            Ok(Event::Outgoing(Outgoing::Disconnect)) => return Ok(()),
            Ok(_) => {}
            Err(rumqttc::ConnectionError::RequestsDone) => return Ok(()),
            Err(e) => return Err(e).context("publisher connection failed"),
        }
    }
}

struct OursPublisher {
    conn: Conn,
    topic: MqttString,
    out: Vec<u8>,
    /// PUBLISHes encoded in `out`, not yet written.
    pending: usize,
    batch: usize,
    next_id: u16,
    /// Unacknowledged packet ids and their sequence numbers.
    inflight: HashMap<u16, u64>,
    acks: Arc<Acks>,
}

impl OursPublisher {
    async fn publish(&mut self, qos: QoS, payload: Vec<u8>, seq: u64) -> anyhow::Result<()> {
        let mut p = Publish::new(self.topic.clone(), payload.into());
        if qos != QoS::AtMostOnce {
            while self.inflight.len() >= OURS_INFLIGHT {
                self.flush().await?;
                if self.inflight.len() < OURS_INFLIGHT {
                    break;
                }
                let more = tokio::time::timeout(ANSWER, self.conn.rd.fill())
                    .await
                    .context("no acknowledgement from the broker within 10 s")??;
                if !more {
                    bail!("broker closed a publisher's connection");
                }
                self.absorb().await?;
            }
            let id = self.free_id();
            p.qos = qos;
            p.packet_id = Some(id);
            self.inflight.insert(id.get(), seq);
        }
        codec::encode(&Packet::Publish(p), VERSION, &mut self.out)?;
        self.pending += 1;
        if self.pending >= self.batch {
            self.flush().await?;
        }
        Ok(())
    }

    fn free_id(&mut self) -> NonZeroU16 {
        loop {
            self.next_id = self.next_id.wrapping_add(1);
            if let Some(id) = NonZeroU16::new(self.next_id) {
                if !self.inflight.contains_key(&id.get()) {
                    return id;
                }
            }
        }
    }

    /// Writes the packed PUBLISHes, then takes in whatever acknowledgements have arrived.
    async fn flush(&mut self) -> anyhow::Result<()> {
        if !self.out.is_empty() {
            self.conn.wr.write_all(&self.out).await?;
            self.out.clear();
            self.pending = 0;
        }
        if !self.inflight.is_empty() {
            self.conn.rd.fill_ready()?;
            self.absorb().await?;
        }
        Ok(())
    }

    /// Handles the acknowledgements already read (a PUBREC is answered with PUBREL).
    async fn absorb(&mut self) -> anyhow::Result<()> {
        let mut rel = Vec::new();
        while let Some(p) = self.conn.rd.try_next()? {
            match p {
                Packet::PubAck(r) | Packet::PubComp(r) => {
                    let seq = self.inflight.remove(&r.packet_id.get());
                    if seq.is_some() {
                        self.acks.ack(seq);
                    }
                }
                Packet::PubRec(r) => codec::encode(
                    &Packet::PubRel(PublishResponse::new(r.packet_id)),
                    VERSION,
                    &mut rel,
                )?,
                _ => {}
            }
        }
        if !rel.is_empty() {
            self.conn.wr.write_all(&rel).await?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Subscribers

/// Delivery counters shared by the subscribers of one scenario.
#[derive(Default)]
pub(super) struct Sink {
    /// Latencies are kept only while this is set.
    pub measuring: AtomicBool,
    pub delivered: AtomicU64,
    pub measured: AtomicU64,
    /// Connections a persistent subscriber had to re-open.
    pub reconnects: AtomicU64,
    /// Set: a rate-limited subscriber handles messages as fast as it can from now on.
    pub unthrottled: AtomicBool,
    /// [`now_ns`] of the last delivery.
    pub last_ns: AtomicU64,
    /// Closed loop: publishers, and per subscriber and publisher the highest sequence number
    /// delivered (at `subscriber * publishers + publisher`); empty elsewhere.
    pub publishers: usize,
    pub upto: Vec<AtomicU64>,
    /// Closed loop: per publisher, woken when one of its messages is delivered.
    pub wake: Vec<Notify>,
}

impl Sink {
    /// A sink that follows the progress of each of `publishers` at `subscribers`.
    pub fn closed_loop(publishers: usize, subscribers: usize) -> Sink {
        Sink {
            publishers,
            upto: (0..publishers * subscribers)
                .map(|_| AtomicU64::new(0))
                .collect(),
            wake: (0..publishers).map(|_| Notify::new()).collect(),
            ..Sink::default()
        }
    }
}

/// What one subscriber received.
#[derive(Default)]
pub(super) struct Received {
    /// Publish-to-delivery latencies (ns) of what arrived while measuring.
    pub latencies: Vec<u64>,
    /// Deliveries per (publisher, sequence number), when tracked.
    pub seen: HashMap<(u32, u64), u32>,
    /// Payloads that were not ours.
    pub malformed: u64,
}

struct Recorder {
    sink: Arc<Sink>,
    /// This subscriber's index among the scenario's.
    index: usize,
    track: bool,
    got: Received,
}

impl Recorder {
    fn record(&mut self, payload: &[u8]) {
        let now = now_ns();
        self.sink.delivered.fetch_add(1, Ordering::Relaxed);
        self.sink.last_ns.store(now, Ordering::Relaxed);
        match stamp(payload) {
            Some(s) => {
                if self.sink.measuring.load(Ordering::Relaxed) {
                    self.got.latencies.push(now.saturating_sub(s.ts));
                    self.sink.measured.fetch_add(1, Ordering::Relaxed);
                }
                if self.track {
                    *self.got.seen.entry((s.src, s.seq)).or_default() += 1;
                }
                let src = s.src as usize;
                let slot = self.index * self.sink.publishers + src;
                if let (Some(upto), Some(wake)) =
                    (self.sink.upto.get(slot), self.sink.wake.get(src))
                {
                    upto.fetch_max(s.seq, Ordering::Relaxed);
                    wake.notify_waiters();
                }
            }
            None => self.got.malformed += 1,
        }
    }
}

/// At most `rate` messages a second: message k is handled no earlier than 1/rate after k-1.
struct Pacer {
    next: tokio::time::Instant,
    period: Duration,
}

impl Pacer {
    fn new(rate: u32) -> Pacer {
        Pacer {
            next: tokio::time::Instant::now(),
            period: Duration::from_secs(1) / rate.max(1),
        }
    }

    async fn wait(&mut self) {
        let at = self.next.max(tokio::time::Instant::now());
        tokio::time::sleep_until(at).await;
        self.next = at + self.period;
    }
}

pub(super) struct SubSpec {
    pub id: String,
    /// This subscriber's index among the scenario's (for [`Sink::upto`]).
    pub index: usize,
    pub filter: String,
    pub qos: QoS,
    /// false: a persistent session, re-opened (without a new SUBSCRIBE when the broker still
    /// has it) whenever the connection drops.
    pub clean: bool,
    /// Messages a second the subscriber handles at most (`None`: as fast as it can).
    pub max_rate: Option<u32>,
    /// Keep (publisher, sequence) of every delivery.
    pub track: bool,
}

/// A running subscriber.
pub(super) struct Subscriber {
    stop: watch::Sender<bool>,
    task: JoinHandle<anyhow::Result<Received>>,
}

impl Subscriber {
    /// Connects and subscribes (returns after the SUBACK), then receives in a task.
    pub async fn start(
        kind: ClientKind,
        ep: &Endpoint,
        spec: SubSpec,
        sink: Arc<Sink>,
    ) -> anyhow::Result<Subscriber> {
        let (stop, stop_rx) = watch::channel(false);
        let rec = Recorder {
            sink,
            index: spec.index,
            track: spec.track,
            got: Received::default(),
        };
        let task = match kind.lib {
            Library::Rumqttc => {
                let (client, mut eventloop, session) =
                    rumqttc_connect(ep, &spec.id, spec.clean).await?;
                if !session {
                    rumqttc_subscribe(&client, &mut eventloop, &spec).await?;
                }
                tokio::spawn(rumqttc_receive(client, eventloop, spec, rec, stop_rx))
            }
            Library::Ours => {
                let (mut conn, session) = Conn::connect(ep, &spec.id, spec.clean).await?;
                if !session {
                    conn.subscribe(&spec.filter, spec.qos).await?;
                }
                tokio::spawn(ours_receive(conn, ep.clone(), spec, rec, stop_rx))
            }
        };
        Ok(Subscriber { stop, task })
    }

    /// Disconnects and returns what was received.
    pub async fn stop(self) -> anyhow::Result<Received> {
        let _ = self.stop.send(true);
        self.task.await.context("subscriber task failed")?
    }
}

async fn rumqttc_subscribe(
    client: &rumqttc::AsyncClient,
    eventloop: &mut rumqttc::EventLoop,
    spec: &SubSpec,
) -> anyhow::Result<()> {
    use rumqttc::{Event, Packet as P, SubscribeReasonCode};
    client
        .subscribe(spec.filter.as_str(), rumqttc_qos(spec.qos))
        .await
        .context("rumqttc request channel closed")?;
    let deadline = Instant::now() + ANSWER;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = tokio::time::timeout(left, eventloop.poll())
            .await
            .context("no SUBACK within 10 s")?
            .context("subscriber connection failed")?;
        if let Event::Incoming(P::SubAck(a)) = event {
            if a.return_codes
                .iter()
                .any(|c| matches!(c, SubscribeReasonCode::Failure))
            {
                bail!("broker refused the subscription to {}", spec.filter);
            }
            return Ok(());
        }
    }
}

async fn rumqttc_receive(
    client: rumqttc::AsyncClient,
    mut eventloop: rumqttc::EventLoop,
    spec: SubSpec,
    mut rec: Recorder,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<Received> {
    use rumqttc::{Event, Outgoing, Packet as P};
    let mut pacer = spec.max_rate.map(Pacer::new);
    loop {
        let event = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => break,
            e = eventloop.poll() => e,
        };
        match event {
            Ok(Event::Incoming(P::Publish(p))) => {
                // The slow consumer: no poll (so no read) until this message is handled.
                if let Some(pacer) = &mut pacer {
                    if !rec.sink.unthrottled.load(Ordering::Relaxed) {
                        pacer.wait().await;
                    }
                }
                rec.record(&p.payload);
            }
            Ok(Event::Incoming(P::ConnAck(c))) => {
                if !c.session_present {
                    client
                        .try_subscribe(spec.filter.as_str(), rumqttc_qos(spec.qos))
                        .context("rumqttc request channel full")?;
                }
            }
            Ok(_) => {}
            Err(e) if spec.clean => {
                return Err(e)
                    .with_context(|| format!("subscriber {} lost its connection", spec.id))
            }
            Err(_) => {
                // The next poll reconnects (persistent session).
                rec.sink.reconnects.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while !matches!(
            eventloop.poll().await,
            Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_)
        ) {}
    })
    .await;
    Ok(rec.got)
}

async fn ours_receive(
    mut conn: Conn,
    ep: Endpoint,
    spec: SubSpec,
    mut rec: Recorder,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<Received> {
    let mut pacer = spec.max_rate.map(Pacer::new);
    let mut acks = Vec::new();
    'run: loop {
        // Handle what has been read; a slow consumer acknowledges as it goes (every 10, as
        // rumqttc's reads do), a fast one once per read.
        let mut unsent = 0;
        while let Some(p) = conn.rd.try_next()? {
            match p {
                Packet::Publish(p) => {
                    if let Some(pacer) = &mut pacer {
                        if !rec.sink.unthrottled.load(Ordering::Relaxed) {
                            pacer.wait().await;
                        }
                    }
                    rec.record(&p.payload);
                    let ack = match (p.qos, p.packet_id) {
                        (QoS::AtLeastOnce, Some(id)) => Packet::PubAck(PublishResponse::new(id)),
                        (QoS::ExactlyOnce, Some(id)) => Packet::PubRec(PublishResponse::new(id)),
                        _ => continue,
                    };
                    codec::encode(&ack, VERSION, &mut acks)?;
                }
                Packet::PubRel(r) => codec::encode(
                    &Packet::PubComp(PublishResponse::new(r.packet_id)),
                    VERSION,
                    &mut acks,
                )?,
                _ => continue,
            }
            unsent += 1;
            if pacer.is_some() && unsent >= 10 {
                conn.wr.write_all(&acks).await?;
                acks.clear();
                unsent = 0;
            }
        }
        let mut lost = false;
        if !acks.is_empty() {
            lost = conn.wr.write_all(&acks).await.is_err();
            acks.clear();
        }
        if !lost {
            tokio::select! {
                biased;
                _ = stop.wait_for(|s| *s) => break 'run,
                r = conn.rd.fill() => lost = !matches!(r, Ok(true)),
            }
        }
        if lost {
            if spec.clean {
                bail!("broker closed subscriber {}'s connection", spec.id);
            }
            rec.sink.reconnects.fetch_add(1, Ordering::Relaxed);
            loop {
                if *stop.borrow() {
                    break 'run;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                if let Ok((c, session)) = Conn::connect(&ep, &spec.id, false).await {
                    conn = c;
                    // Publishers are running: deliveries may come before the SUBACK, which
                    // the loop above skips.
                    if !session {
                        conn.send_subscribe(&spec.filter, spec.qos).await?;
                    }
                    break;
                }
            }
        }
    }
    let _ = conn.disconnect().await;
    Ok(rec.got)
}

// ---------------------------------------------------------------------------------------------
// Connections

/// Connects with rumqttc (returns after the CONNACK: the first poll connects); also whether
/// the broker resumed a session. Options are rumqttc's defaults but the client id, clean
/// session, credentials and TCP_NODELAY.
async fn rumqttc_connect(
    ep: &Endpoint,
    id: &str,
    clean: bool,
) -> anyhow::Result<(rumqttc::AsyncClient, rumqttc::EventLoop, bool)> {
    use rumqttc::{Event, Packet as P};
    let mut options = rumqttc::MqttOptions::new(id, ep.addr.ip().to_string(), ep.addr.port());
    options.set_clean_session(clean);
    if let Some((user, password)) = &ep.login {
        options.set_credentials(user, password);
    }
    let (client, mut eventloop) = rumqttc::AsyncClient::new(options, RUMQTTC_CAP);
    // The one network option changed: rumqttc leaves Nagle on, and on loopback (64 kB MSS,
    // 40 ms delayed ACKs) that halved Mosquitto's closed-loop throughput and made its 50k/s
    // row collapse, an artifact no real network shows as strongly. Both brokers and our own
    // client set TCP_NODELAY too.
    let mut network = rumqttc::NetworkOptions::new();
    network.set_tcp_nodelay(true);
    eventloop.set_network_options(network);
    let event = tokio::time::timeout(ANSWER, eventloop.poll())
        .await
        .with_context(|| format!("{id}: no CONNACK from {} within 10 s", ep.addr))?
        .with_context(|| format!("{id}: cannot connect to {}", ep.addr))?;
    match event {
        Event::Incoming(P::ConnAck(c)) => Ok((client, eventloop, c.session_present)),
        e => bail!("{id}: expected a CONNACK, got {e:?}"),
    }
}

/// A connection of our own client.
pub(super) struct Conn {
    rd: Reader,
    wr: OwnedWriteHalf,
}

impl Conn {
    /// Connects (MQTT 3.1.1, keep alive off); also whether the broker resumed a session.
    pub async fn connect(ep: &Endpoint, id: &str, clean: bool) -> anyhow::Result<(Conn, bool)> {
        let stream = TcpStream::connect(ep.addr)
            .await
            .with_context(|| format!("{id}: cannot connect to {}", ep.addr))?;
        stream.set_nodelay(true)?;
        let (rd, mut wr) = stream.into_split();
        let mut connect = Connect::new(VERSION, MqttString::try_from(id)?, 0);
        connect.clean_start = clean;
        if let Some((user, password)) = &ep.login {
            connect.username = Some(MqttString::try_from(user.as_str())?);
            connect.password = Some(password.clone().into_bytes().into());
        }
        let mut out = Vec::new();
        codec::encode(&Packet::Connect(Box::new(connect)), VERSION, &mut out)?;
        wr.write_all(&out).await?;
        let mut rd = Reader {
            rd,
            buf: Vec::with_capacity(1024),
            start: 0,
        };
        match rd.next().await.with_context(|| format!("{id}: CONNACK"))? {
            Packet::Connack(c) if c.reason_code == ReasonCode::Success => {
                Ok((Conn { rd, wr }, c.session_present))
            }
            p => bail!("{id}: expected a successful CONNACK, got {p:?}"),
        }
    }

    /// Sends SUBSCRIBE; the SUBACK is left to the caller's reads.
    async fn send_subscribe(&mut self, filter: &str, qos: QoS) -> anyhow::Result<()> {
        let sub = Subscribe {
            packet_id: NonZeroU16::MIN,
            properties: Default::default(),
            subscriptions: vec![Subscription {
                filter: MqttString::try_from(filter)?,
                options: SubscriptionOptions::qos(qos),
            }],
        };
        let mut out = Vec::new();
        codec::encode(&Packet::Subscribe(sub), VERSION, &mut out)?;
        self.wr.write_all(&out).await?;
        Ok(())
    }

    /// Subscribes and waits for the SUBACK (before anything is published on `filter`).
    async fn subscribe(&mut self, filter: &str, qos: QoS) -> anyhow::Result<()> {
        self.send_subscribe(filter, qos).await?;
        match self.rd.next().await? {
            Packet::SubAck(a) if a.reason_codes.iter().all(|c| (*c as u8) < 0x80) => Ok(()),
            Packet::SubAck(a) => bail!("broker refused {filter}: {:?}", a.reason_codes),
            p => bail!("expected a SUBACK, got {p:?}"),
        }
    }

    /// Sends DISCONNECT and closes the write side, so the broker sees a normal end of session.
    pub async fn disconnect(&mut self) -> anyhow::Result<()> {
        let mut out = Vec::new();
        codec::encode(&Packet::Disconnect(Default::default()), VERSION, &mut out)?;
        self.wr.write_all(&out).await?;
        self.wr.shutdown().await?;
        Ok(())
    }
}

/// The read side of a connection of our client: bytes in, packets out.
struct Reader {
    rd: OwnedReadHalf,
    buf: Vec<u8>,
    start: usize,
}

impl Reader {
    fn compact(&mut self) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.reserve(64 * 1024);
    }

    /// Reads once more from the socket; false at end of stream. Cancel-safe (callers wrap it
    /// in timeouts and selects): bytes land in the buffer only when a read completes.
    async fn fill(&mut self) -> anyhow::Result<bool> {
        self.compact();
        Ok(self.rd.read_buf(&mut self.buf).await? > 0)
    }

    /// Reads what the socket has without waiting.
    fn fill_ready(&mut self) -> anyhow::Result<()> {
        loop {
            self.compact();
            match self.rd.try_read_buf(&mut self.buf) {
                Ok(0) => bail!("broker closed the connection"),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e).context("cannot read from the broker"),
            }
        }
    }

    /// The next complete packet already read, if any.
    fn try_next(&mut self) -> anyhow::Result<Option<Packet>> {
        match codec::decode(&self.buf[self.start..], VERSION, MAX_PACKET)? {
            Some((p, used)) => {
                self.start += used;
                Ok(Some(p))
            }
            None => Ok(None),
        }
    }

    async fn next(&mut self) -> anyhow::Result<Packet> {
        loop {
            if let Some(p) = self.try_next()? {
                return Ok(p);
            }
            if !tokio::time::timeout(ANSWER, self.fill())
                .await
                .context("no answer from the broker within 10 s")??
            {
                bail!("broker closed the connection");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_reads_back_its_stamp_and_looks_like_a_device_message() {
        let p = payload(4321, 98_765, 21.374);
        let s = stamp(&p).expect("our own payload");
        assert_eq!((s.src, s.seq), (4321, 98_765));
        assert!(s.ts <= now_ns());
        assert!((60..=110).contains(&p.len()), "{} bytes", p.len());
        let text = std::str::from_utf8(&p).expect("UTF-8");
        assert!(
            text.starts_with("{\"ts\":") && text.ends_with('}'),
            "{text}"
        );
        assert!(text.contains("\"v\":21.374"), "{text}");
    }

    #[test]
    fn foreign_payloads_have_no_stamp() {
        for p in [
            &b""[..],
            b"{\"ts\":",
            b"{\"ts\":12,\"src\":3}",
            b"{\"ts\":x,\"src\":1,\"seq\":2}",
            b"{\"ts\":1,\"src\":99999999999,\"seq\":2}",
            b"{\"ts\":99999999999999999999999,\"src\":1,\"seq\":2}",
        ] {
            assert_eq!(stamp(p), None, "{:?}", String::from_utf8_lossy(p));
        }
        assert_eq!(
            stamp(b"{\"ts\":1,\"src\":2,\"seq\":3,\"v\":0}"),
            Some(Stamp {
                ts: 1,
                src: 2,
                seq: 3
            })
        );
    }

    #[tokio::test]
    async fn the_pacer_spaces_messages_by_its_period() {
        let mut pacer = Pacer::new(1000);
        let t0 = tokio::time::Instant::now();
        for _ in 0..50 {
            pacer.wait().await;
        }
        // The first message goes at once, the 50th no earlier than 49 periods later.
        assert!(
            t0.elapsed() >= Duration::from_millis(49),
            "{:?}",
            t0.elapsed()
        );
    }
}
