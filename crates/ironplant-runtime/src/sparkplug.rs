//! The Sparkplug B host application on the embedded broker: the thin async shell around
//! [`ironplant_sparkplug::Host`].
//!
//! It subscribes in-process to `spBv1.0/#`, publishes its STATE (`spBv1.0/STATE/<host_id>`,
//! retained, `online:true`), feeds every message to the host state machine and performs what it
//! returns: metrics become tags of the [`LiveNamespace`] (first seen at their birth, typed by
//! the birth datatype) and their values samples on the [`TagBus`], so the historian, the UNS and
//! the API see them like Modbus tags; rebirth requests are published on the broker.
//! [`SparkplugHost::shutdown`] publishes `online:false`.
//!
//! The in-process subscription has no MQTT will: the broker lives in the same process, so when
//! the host dies the broker (and every subscriber's view of STATE) dies with it.
//!
//! If the subscription's queue overflows the broker drops messages; the next message of that
//! edge node then shows a seq gap and the host asks for a rebirth, so a drop heals itself.
//!
//! Metrics of a node or device mapped to an asset (`[[sparkplug.asset]]`) become tags under
//! that asset, which the config put in the namespace's asset tree; their folders become
//! implied assets below it as the tags are born. A metric with no path (its folders do not fit
//! below the asset, a name too long...) is logged and counted, never recorded.
//!
//! Writes: the host is the [`DeviceWriter`] of every node and device whose birth creates tags
//! (registered in the platform's `Writers` under the tags' source). A write is a request to the same
//! task that owns the [`Host`], which builds the NCMD/DCMD ([`Host::write_command`]: birth
//! datatype, alias or name, value checked first), publishes it, and resolves the write when the
//! edge node reports the written value ([`PendingWrites`]), or with `Timeout` after
//! `[sparkplug] write_timeout`, or `NotConnected` if the node or device dies first.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ironplant_core::{
    BoxFuture, ComponentError, DeviceWriteError, DeviceWriter, Event, EventBus, EventKind,
    LiveNamespace, Sample, Severity, Shutdown, Source, SourceContext, TagBus, TagId, TagMeta,
    TagPath, Timestamp, Value, WriteAck,
};
use ironplant_mqtt::codec::{MqttString, Publish as MqttPublish, QoS};
use ironplant_mqtt::{Broker, Origin};
use ironplant_sparkplug::provenance::{Finding, PublisherWatch, Sender, TimingOptions, Verdict};
use ironplant_sparkplug::settings::SparkplugSettings;
use ironplant_sparkplug::{
    Host, HostAction, HostError, HostOptions, MessageType, NodeId, PendingWrites, Topic,
    WriteError, WriteOutcome, REBIRTH,
};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::metrics::SparkplugMetrics;
use crate::writers::Writers;
use crate::Runtime;

/// Messages the in-process subscription queues before the broker drops (and counts) them.
const QUEUE: usize = 16_384;
/// Writes queued for the host's task before writers wait.
const WRITE_QUEUE: usize = 256;
/// Commands sent and waiting for their confirmation at most; more are refused.
const MAX_PENDING_WRITES: usize = 4096;

/// Why the host could not start.
#[derive(Debug, thiserror::Error)]
pub enum SparkplugError {
    #[error("sparkplug host: {0}")]
    Config(#[from] ironplant_sparkplug::ConfigError),
    #[error("sparkplug host: cannot subscribe to spBv1.0/#: {0}")]
    Subscribe(String),
}

/// The host application as a supervised [`Source`] (see the module docs): one per platform,
/// registered by [`crate::Platform`] when the broker runs and `[sparkplug]` enables it.
///
/// A restarted run builds a fresh [`Host`] (so the edge nodes' next messages, unknown to it,
/// make it ask for rebirths) and subscribes again; the tags keep their ids (the namespace
/// keeps them) and the writer stays registered: its request queue outlives the runs, so a
/// write sent while the host restarts is served by the next run, and a write the failed run
/// held ends as `Stopped`.
pub struct SparkplugSource {
    broker: Broker,
    settings: Arc<SparkplugSettings>,
    metrics: Arc<crate::Metrics>,
    state_topic: String,
    writer: Arc<SparkplugWriter>,
    writes: tokio::sync::Mutex<mpsc::Receiver<WriteRequest>>,
    /// The first run's subscription, made when the source is built so that nothing published
    /// after the platform started is missed.
    first: parking_lot::Mutex<Option<mpsc::Receiver<(MqttPublish, Origin)>>>,
}

impl SparkplugSource {
    /// Checks the settings (host id, asset mappings) and subscribes to `spBv1.0/#`.
    pub fn new(
        broker: Broker,
        settings: Arc<SparkplugSettings>,
        metrics: Arc<crate::Metrics>,
    ) -> Result<SparkplugSource, SparkplugError> {
        let host = new_host(&settings)?;
        let state_topic = host.online_message(Timestamp::now()).topic;
        let rx = subscribe(&broker)?;
        let (requests, writes) = mpsc::channel(WRITE_QUEUE);
        Ok(SparkplugSource {
            broker,
            settings,
            metrics,
            state_topic,
            writer: Arc::new(SparkplugWriter { requests }),
            writes: tokio::sync::Mutex::new(writes),
            first: parking_lot::Mutex::new(Some(rx)),
        })
    }

    /// The host's STATE topic, `spBv1.0/STATE/<host_id>`.
    pub fn state_topic(&self) -> &str {
        &self.state_topic
    }
}

impl Source for SparkplugSource {
    fn name(&self) -> String {
        format!("sparkplug-host:{}", self.settings.host_id)
    }

    fn run(self: Arc<Self>, ctx: SourceContext) -> BoxFuture<'static, Result<(), ComponentError>> {
        Box::pin(async move {
            let mut host =
                new_host(&self.settings).map_err(|e| ComponentError::new(e.to_string()))?;
            let first = self.first.lock().take();
            let rx = match first {
                Some(rx) => rx,
                None => subscribe(&self.broker).map_err(|e| ComponentError::new(e.to_string()))?,
            };
            // Only one run at a time holds the write queue; the supervisor never overlaps runs.
            let mut writes = self.writes.lock().await;
            let now = Timestamp::now();
            // The will is never registered (see the module docs); asking for it fixes the
            // STATE timestamp the online message repeats.
            let _ = host.will_message(now);
            perform_publish(
                &self.broker,
                host.online_message(now),
                &self.metrics.sparkplug,
            );
            self.metrics.sparkplug.running.store(1, Ordering::Relaxed);
            tracing::info!(host_id = %self.settings.host_id, state = %self.state_topic, prefix = ?self.settings.prefix.as_ref().map(TagPath::as_str), "sparkplug host application started");
            let shell = Shell {
                host,
                broker: self.broker.clone(),
                namespace: ctx.namespace.clone(),
                bus: ctx.bus.clone(),
                metrics: self.metrics.clone(),
                ids: HashMap::new(),
                refused: HashSet::new(),
                writers: ctx.writers.clone(),
                writer: self.writer.clone(),
                pending: PendingWrites::new(),
                write_timeout: self.settings.write_timeout,
                watch: PublisherWatch::new(TimingOptions::default()),
                events: ctx.events.clone(),
            };
            let mut shutdown = ctx.shutdown.clone();
            let ended = tokio::select! {
                () = shell.run(rx, &mut writes) => Err(ComponentError::new(
                    "the broker ended the host's subscription to spBv1.0/#",
                )),
                () = shutdown.requested() => Ok(()),
            };
            publish_offline(&self.broker, &self.state_topic);
            self.metrics.sparkplug.running.store(0, Ordering::Relaxed);
            ended
        })
    }
}

fn new_host(settings: &SparkplugSettings) -> Result<Host, SparkplugError> {
    let options = HostOptions {
        path_prefix: settings.prefix.clone(),
        asset_mappings: settings.assets.iter().map(|a| a.mapping.clone()).collect(),
        ..HostOptions::default()
    };
    Ok(Host::with_options(&settings.host_id, options)?)
}

/// With each message's origin: who published it, for the [`PublisherWatch`].
fn subscribe(broker: &Broker) -> Result<mpsc::Receiver<(MqttPublish, Origin)>, SparkplugError> {
    broker
        .subscribe_internal_with_origin("sparkplug-host", "spBv1.0/#", QUEUE)
        .map_err(|e| SparkplugError::Subscribe(e.to_string()))
}

/// Publishes the STATE death certificate (`online:false`).
fn publish_offline(broker: &Broker, state_topic: &str) {
    let ms = ironplant_sparkplug::millis_from_timestamp(Timestamp::now());
    let payload = format!(r#"{{"online":false,"timestamp":{ms}}}"#);
    if let Some(p) = to_mqtt(state_topic, payload.into_bytes(), true) {
        broker.publish(p);
    }
}

/// A host started without a supervisor (tests, embedders); see [`start`].
pub struct SparkplugHost {
    broker: Broker,
    state_topic: String,
    stop: tokio::sync::watch::Sender<bool>,
    task: JoinHandle<Result<(), ComponentError>>,
}

impl SparkplugHost {
    /// The host's STATE topic, `spBv1.0/STATE/<host_id>`.
    pub fn state_topic(&self) -> &str {
        &self.state_topic
    }

    /// Stops handling messages and publishes the STATE death certificate (`online:false`).
    pub fn shutdown(self) {
        let _ = self.stop.send(true);
        self.task.abort();
        publish_offline(&self.broker, &self.state_topic);
    }
}

/// Starts the host on `broker` for `runtime` without a supervisor (on the current tokio
/// runtime): one run of [`SparkplugSource`], ended by [`SparkplugHost::shutdown`].
pub fn start(
    broker: Broker,
    runtime: &Runtime,
    settings: &SparkplugSettings,
) -> Result<SparkplugHost, SparkplugError> {
    let source = Arc::new(SparkplugSource::new(
        broker.clone(),
        Arc::new(settings.clone()),
        runtime.metrics.clone(),
    )?);
    let state_topic = source.state_topic.clone();
    let (stop, rx) = tokio::sync::watch::channel(false);
    let ctx = SourceContext {
        bus: runtime.bus.clone(),
        events: runtime.events.clone(),
        namespace: runtime.namespace.clone(),
        writers: runtime.writers.clone(),
        shutdown: Shutdown::new(rx),
    };
    let task = tokio::spawn(source.run(ctx));
    Ok(SparkplugHost {
        broker,
        state_topic,
        stop,
        task,
    })
}

struct Shell {
    host: Host,
    broker: Broker,
    namespace: Arc<LiveNamespace>,
    bus: TagBus,
    metrics: Arc<crate::Metrics>,
    /// Tag ids of the metrics seen so far (a re-birth finds the same id in the namespace).
    ids: HashMap<TagPath, TagId>,
    /// Paths that belong to another source (a configured tag): reported once, never recorded.
    refused: HashSet<TagPath>,
    /// Where the sources of born tags get their writer (this host).
    writers: Writers,
    writer: Arc<dyn DeviceWriter>,
    /// Commands sent, waiting for the edge node to report their value.
    pending: PendingWrites<Waiting>,
    write_timeout: Duration,
    /// Which connection birthed each node, and its message rate (issue 13).
    watch: PublisherWatch,
    events: EventBus,
}

/// A write asked of the host's task.
struct WriteRequest {
    path: TagPath,
    value: Value,
    reply: oneshot::Sender<Result<WriteAck, DeviceWriteError>>,
}

/// A command sent, waiting for its confirmation.
struct Waiting {
    reply: oneshot::Sender<Result<WriteAck, DeviceWriteError>>,
    /// What was sent, in words, for the acknowledgement and the logs.
    sent: String,
    at: tokio::time::Instant,
}

/// The [`DeviceWriter`] of every Sparkplug source: forwards writes to the host's task.
struct SparkplugWriter {
    requests: mpsc::Sender<WriteRequest>,
}

impl DeviceWriter for SparkplugWriter {
    fn write(
        &self,
        tag: &TagMeta,
        value: Value,
    ) -> BoxFuture<'static, Result<WriteAck, DeviceWriteError>> {
        let requests = self.requests.clone();
        let path = tag.path.clone();
        Box::pin(async move {
            let (reply, rx) = oneshot::channel();
            requests
                .send(WriteRequest { path, value, reply })
                .await
                .map_err(|_| DeviceWriteError::Stopped)?;
            rx.await.map_err(|_| DeviceWriteError::Stopped)?
        })
    }
}

impl Shell {
    async fn run(
        mut self,
        mut rx: mpsc::Receiver<(MqttPublish, Origin)>,
        writes: &mut mpsc::Receiver<WriteRequest>,
    ) {
        let mut timing = tokio::time::interval(Duration::from_secs(1));
        timing.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let wake = self.pending.next_deadline().map(|d| {
                let left = d.as_micros().saturating_sub(Timestamp::now().as_micros());
                tokio::time::Instant::now()
                    + Duration::from_micros(u64::try_from(left).unwrap_or(0))
            });
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some((msg, origin)) => {
                        if self.admit(msg.topic.as_str(), &origin) {
                            self.handle(msg.topic.as_str(), &msg.payload).await;
                        }
                    }
                    None => return,
                },
                _ = timing.tick() => {
                    let mut found = Vec::new();
                    self.watch.tick(Timestamp::now(), &mut found);
                    self.report(found);
                }
                Some(req) = writes.recv() => self.start_write(req),
                () = sleep_until(wake) => {
                    for (w, outcome) in self.pending.expire(Timestamp::now()) {
                        self.finish(w, outcome);
                    }
                }
            }
        }
    }

    /// Whether the message's publisher may speak for its edge node ([`PublisherWatch`]);
    /// findings become `integrity` events.
    fn admit(&mut self, topic: &str, origin: &Origin) -> bool {
        let Ok(Topic::Edge {
            group_id,
            message_type,
            edge_node_id,
            ..
        }) = Topic::parse(topic)
        else {
            return true; // STATE and malformed topics: the host deals with them
        };
        let node = NodeId::new(&group_id, &edge_node_id);
        let sender = Sender {
            client_id: origin.client_id.as_deref().map(str::to_owned),
            owner: origin.owner.as_deref().map(str::to_owned),
            address: origin.peer,
        };
        // Only an NBIRTH from another connection needs to know if the bound one still lives.
        let bound_alive = message_type == MessageType::NBirth
            && self
                .watch
                .born_by(&node)
                .filter(|b| b.client_id != sender.client_id || b.address != sender.address)
                .and_then(|b| b.client_id.as_deref().map(|id| (id, b.address)))
                .is_some_and(|(id, at)| at.is_some() && self.broker.connected_from(id) == at);
        let mut found = Vec::new();
        let verdict = self.watch.observe(
            &node,
            message_type,
            &sender,
            bound_alive,
            Timestamp::now(),
            &mut found,
        );
        self.report(found);
        if verdict == Verdict::Refuse {
            self.metrics
                .sparkplug
                .foreign_refused
                .fetch_add(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    fn report(&self, found: Vec<Finding>) {
        for f in found {
            let severity = match f {
                Finding::ForeignPublisher { .. } | Finding::DuplicateBirth { .. } => {
                    Severity::Critical
                }
                Finding::PublisherChanged { .. } | Finding::TimingChanged { .. } => {
                    Severity::Warning
                }
                Finding::TimingNormal { .. } => Severity::Info,
            };
            let msg = f.message();
            tracing::warn!(code = f.code(), "{msg}");
            let node = f.node();
            self.events.publish(
                Event::new(
                    Timestamp::now(),
                    EventKind::Integrity,
                    f.code(),
                    "sparkplug",
                    msg,
                )
                .with_severity(severity)
                .with_attribute("group", Value::String(node.group_id.as_str().into()))
                .with_attribute("node", Value::String(node.edge_node_id.as_str().into())),
            );
        }
    }

    /// Builds and publishes the command, or refuses the write with nothing sent.
    fn start_write(&mut self, req: WriteRequest) {
        let now = Timestamp::now();
        let m = &self.metrics.sparkplug;
        if self.pending.len() >= MAX_PENDING_WRITES {
            m.writes_refused.fetch_add(1, Ordering::Relaxed);
            let _ = req.reply.send(Err(DeviceWriteError::Refused(format!(
                "{MAX_PENDING_WRITES} Sparkplug writes are waiting for their edge nodes; try again later"
            ))));
            return;
        }
        let cmd = match self.host.write_command(&req.path, &req.value, now) {
            Ok(cmd) => cmd,
            Err(e) => {
                m.writes_refused.fetch_add(1, Ordering::Relaxed);
                tracing::info!(tag = %req.path, value = %req.value, error = %e, "sparkplug write refused");
                let _ = req.reply.send(Err(write_error(e, &req.value)));
                return;
            }
        };
        m.commands.fetch_add(1, Ordering::Relaxed);
        let by = match cmd.alias {
            Some(alias) => format!("alias {alias}"),
            None => "name".to_owned(),
        };
        let kind = if cmd.device_id.is_some() {
            "DCMD"
        } else {
            "NCMD"
        };
        let sent = format!(
            "{kind} on {} set {:?} (by {by}) to {} as {}",
            cmd.publish.topic, cmd.metric, req.value, cmd.datatype
        );
        tracing::info!(tag = %req.path, %sent, "sparkplug write sent");
        perform_publish(&self.broker, cmd.publish.clone(), &self.metrics.sparkplug);
        let timeout_us = i64::try_from(self.write_timeout.as_micros()).unwrap_or(i64::MAX);
        let deadline = Timestamp(now.as_micros().saturating_add(timeout_us));
        let waiting = Waiting {
            reply: req.reply,
            sent,
            at: tokio::time::Instant::now(),
        };
        self.pending.add(waiting, &cmd, deadline);
    }

    fn finish(&self, w: Waiting, outcome: WriteOutcome) {
        let m = &self.metrics.sparkplug;
        let counter = match outcome {
            WriteOutcome::Confirmed { .. } => &m.writes_confirmed,
            _ => &m.writes_unconfirmed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let result = match outcome {
            WriteOutcome::Confirmed { value, .. } => Ok(WriteAck {
                detail: format!(
                    "{}; the edge node reported the value {:?} later",
                    w.sent,
                    w.at.elapsed()
                ),
                echoed: Some(value),
            }),
            WriteOutcome::Offline { scope } => Err(DeviceWriteError::NotConnected(format!(
                "{scope} went offline before reporting the written value ({})",
                w.sent
            ))),
            WriteOutcome::TimedOut { last_reported } => {
                tracing::warn!(sent = %w.sent, last_reported = ?last_reported, timeout = ?self.write_timeout, "sparkplug write not confirmed: no report of the written value");
                Err(DeviceWriteError::Timeout(self.write_timeout))
            }
        };
        let _ = w.reply.send(result);
    }

    async fn handle(&mut self, topic: &str, payload: &[u8]) {
        let metrics = self.metrics.clone();
        let m = &metrics.sparkplug;
        m.messages.fetch_add(1, Ordering::Relaxed);
        let now = Timestamp::now();
        let actions = self.host.handle(topic, payload, now);
        let ended = self.pending.observe(&actions);
        // A birth may change a metric's datatype or unit: refresh the metadata of its tags.
        let birth = matches!(
            Topic::parse(topic),
            Ok(Topic::Edge {
                message_type: MessageType::NBirth | MessageType::DBirth,
                ..
            })
        );
        let mut history = Vec::new();
        let mut current = Vec::new();
        for action in actions {
            match action {
                HostAction::Sample(s) => {
                    let Some(tag) = self.tag_id(&s.path, birth) else {
                        continue;
                    };
                    let sample = Sample {
                        tag,
                        value: s.value,
                        quality: s.quality,
                        source_ts: s.ts,
                        server_ts: now,
                    };
                    if s.historical {
                        history.push(sample);
                    } else {
                        current.push(sample);
                    }
                }
                HostAction::Publish(p) => perform_publish(&self.broker, p, m),
                HostAction::Status {
                    node,
                    device_id,
                    online,
                    ..
                } => {
                    tracing::info!(group = %node.group_id, node = %node.edge_node_id, device = device_id.as_deref().unwrap_or("-"), online, "sparkplug status");
                }
                HostAction::Error(e) => {
                    m.errors.fetch_add(1, Ordering::Relaxed);
                    match e {
                        HostError::SeqGap { .. } => {
                            m.seq_gaps.fetch_add(1, Ordering::Relaxed);
                        }
                        HostError::Unmappable { .. } => {
                            m.metrics_unmapped.fetch_add(1, Ordering::Relaxed);
                        }
                        HostError::AbsurdTimestamp { samples, .. } => {
                            m.timestamps_rejected.fetch_add(
                                u64::try_from(samples).unwrap_or(u64::MAX),
                                Ordering::Relaxed,
                            );
                        }
                        _ => {}
                    }
                    tracing::warn!(error = %e, "sparkplug");
                }
            }
        }
        // History first, so the message's current values are what the live table keeps.
        self.bus.publish(history).await;
        self.bus.publish(current).await;
        // After the bus: whoever got the acknowledgement reads the written value.
        for (w, outcome) in ended {
            self.finish(w, outcome);
        }
    }

    /// The tag of a metric's path, registering it (or refreshing its metadata at a birth).
    fn tag_id(&mut self, path: &TagPath, birth: bool) -> Option<TagId> {
        if let Some(id) = self.ids.get(path) {
            if !birth {
                return Some(*id);
            }
        }
        if self.refused.contains(path) {
            return None;
        }
        let info = self.host.metric_info(path)?;
        let source = match &info.device_id {
            None => format!(
                "sparkplug:{}/{}",
                info.node.group_id, info.node.edge_node_id
            ),
            Some(d) => format!(
                "sparkplug:{}/{}/{d}",
                info.node.group_id, info.node.edge_node_id
            ),
        };
        let meta = TagMeta {
            id: TagId(0),
            path: path.clone(),
            value_type: info.datatype.value_type(),
            unit: info.unit,
            description: info
                .description
                .unwrap_or_else(|| format!("Sparkplug metric {:?} ({})", info.name, info.datatype)),
            range: None,
            writable: info.writable,
            device: Some(source.clone()),
        };
        let before = self.namespace.len();
        match self.namespace.register(meta) {
            Ok(id) => {
                if self.namespace.len() > before {
                    self.metrics
                        .sparkplug
                        .tags_born
                        .fetch_add(1, Ordering::Relaxed);
                    // Under a mapped asset, the metric's folders become assets of the tree
                    // too (once: assets are never removed).
                    if let Some((asset, _)) = self.host.mapper().asset_of(path) {
                        self.namespace.imply_assets(path, asset);
                    }
                }
                self.ids.insert(path.clone(), id);
                if let Err(e) = self.writers.register(&source, self.writer.clone()) {
                    tracing::error!(error = %e, "sparkplug metrics of this source are not writable");
                }
                Some(id)
            }
            Err(e) => {
                tracing::error!(error = %e, "sparkplug metric not recorded");
                self.metrics
                    .sparkplug
                    .errors
                    .fetch_add(1, Ordering::Relaxed);
                self.refused.insert(path.clone());
                None
            }
        }
    }
}

/// Sleeps until `at`, or forever without a deadline.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The host's refusal in the write path's terms.
fn write_error(e: WriteError, value: &Value) -> DeviceWriteError {
    match e {
        WriteError::NotSparkplug { .. } | WriteError::UnknownMetric { .. } => {
            DeviceWriteError::UnknownTag(e.to_string())
        }
        WriteError::Offline { .. } => DeviceWriteError::NotConnected(e.to_string()),
        WriteError::ReadOnly { .. } => DeviceWriteError::ReadOnly(e.to_string()),
        WriteError::Value { error, .. } => DeviceWriteError::BadValue {
            value: value.to_string(),
            why: error.to_string(),
        },
    }
}

fn perform_publish(broker: &Broker, p: ironplant_sparkplug::Publish, m: &SparkplugMetrics) {
    if p.topic.contains("/NCMD/") && is_rebirth(&p.payload) {
        m.rebirths_requested.fetch_add(1, Ordering::Relaxed);
        tracing::info!(topic = %p.topic, "sparkplug rebirth requested");
    }
    if let Some(mut out) = to_mqtt(&p.topic, p.payload, p.retain) {
        // In-process publishes are delivered at each subscriber's QoS; the host's own QoS only
        // matters for what the broker grants.
        out.qos = match p.qos {
            ironplant_sparkplug::Qos::AtMostOnce => QoS::AtMostOnce,
            ironplant_sparkplug::Qos::AtLeastOnce => QoS::AtLeastOnce,
        };
        broker.publish(out);
    }
}

fn is_rebirth(payload: &[u8]) -> bool {
    ironplant_sparkplug::Payload::decode_bytes(payload)
        .is_ok_and(|p| p.metrics.iter().any(|m| m.name.as_deref() == Some(REBIRTH)))
}

fn to_mqtt(topic: &str, payload: Vec<u8>, retain: bool) -> Option<MqttPublish> {
    let topic = MqttString::from_utf8(Bytes::from(topic.to_owned())).ok()?;
    let mut p = MqttPublish::new(topic, Bytes::from(payload));
    p.retain = retain;
    Some(p)
}
