//! Platform metrics, rendered in the Prometheus text exposition format (version 0.0.4).
//!
//! Hand-written rather than a metrics crate: the set is small and fixed per device, updates are
//! lock-free atomics on the poll path, and we control the exact text (`prometheus-client` emits
//! OpenMetrics, which older scrapers and `curl | grep` users find surprising).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ironplant_core::BusStats;
use ironplant_historian::HistorianStats;
use ironplant_modbus::PollObserver;

/// Upper bounds (seconds) of the poll latency histogram buckets.
const LATENCY_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

#[derive(Default)]
struct DeviceMetrics {
    requests_ok: AtomicU64,
    requests_failed: AtomicU64,
    connected: AtomicU64,
    connects: AtomicU64,
    disconnects: AtomicU64,
    latency_buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_us: AtomicU64,
}

/// Counters of the Sparkplug host (rendered only once it has started).
#[derive(Debug, Default)]
pub struct SparkplugMetrics {
    /// Set when the host runs.
    pub running: AtomicU64,
    /// `spBv1.0/...` messages handled.
    pub messages: AtomicU64,
    /// Rebirth requests (NCMD `Node Control/Rebirth`) published.
    pub rebirths_requested: AtomicU64,
    /// Sequence gaps seen.
    pub seq_gaps: AtomicU64,
    /// Malformed or inconsistent messages (including seq gaps).
    pub errors: AtomicU64,
    /// Tags added to the namespace by births.
    pub tags_born: AtomicU64,
    /// Metrics of a birth that have no tag path and are not recorded.
    pub metrics_unmapped: AtomicU64,
    /// Writes sent as NCMD/DCMD.
    pub commands: AtomicU64,
    /// Writes confirmed by the edge node's report of the value.
    pub writes_confirmed: AtomicU64,
    /// Writes sent but not confirmed (timed out, or the node or device died first).
    pub writes_unconfirmed: AtomicU64,
    /// Writes refused before sending (offline, no birth, bad value, too many waiting).
    pub writes_refused: AtomicU64,
    /// Messages refused because another connection than the node's birth sent them.
    pub foreign_refused: AtomicU64,
    /// Samples dropped for a timestamp too far from the host's clock.
    pub timestamps_rejected: AtomicU64,
}

/// All counters of a running platform. The device set is fixed at start-up.
pub struct Metrics {
    devices: BTreeMap<String, DeviceMetrics>,
    /// The embedded MQTT broker, once the platform started it.
    broker: std::sync::OnceLock<ironplant_mqtt::Broker>,
    /// The MQTT bridges' counters, by bridge name.
    bridges: std::sync::OnceLock<Vec<(String, Arc<ironplant_mqtt::bridge::BridgeStats>)>>,
    /// The event bus and, when the historian runs, its event store.
    events: std::sync::OnceLock<(
        ironplant_core::EventBus,
        Option<ironplant_historian::events::EventStore>,
    )>,
    pub sparkplug: SparkplugMetrics,
    /// The last identity each Modbus device reported (function 43/14), for the platform's life.
    identities: parking_lot::Mutex<
        std::collections::HashMap<String, ironplant_modbus::ident::DeviceIdentity>,
    >,
}

impl Metrics {
    pub fn new(device_ids: impl IntoIterator<Item = String>) -> Metrics {
        Metrics {
            devices: device_ids
                .into_iter()
                .map(|d| (d, DeviceMetrics::default()))
                .collect(),
            broker: std::sync::OnceLock::new(),
            bridges: std::sync::OnceLock::new(),
            events: std::sync::OnceLock::new(),
            sparkplug: SparkplugMetrics::default(),
            identities: parking_lot::Mutex::default(),
        }
    }

    /// Includes the bridges' counters in [`Metrics::render`].
    pub fn attach_bridges(&self, bridges: &[ironplant_mqtt::bridge::Bridge]) {
        let stats = bridges
            .iter()
            .map(|b| (b.name().to_owned(), b.stats().clone()))
            .collect();
        let _ = self.bridges.set(stats);
    }

    /// Includes the event bus's and the event store's counters in [`Metrics::render`].
    pub fn attach_events(
        &self,
        bus: ironplant_core::EventBus,
        store: Option<ironplant_historian::events::EventStore>,
    ) {
        let _ = self.events.set((bus, store));
    }

    /// Includes the broker's counters in [`Metrics::render`].
    pub fn attach_broker(&self, broker: ironplant_mqtt::Broker) {
        let _ = self.broker.set(broker);
    }

    /// The MQTT bridges' counters, by bridge name (empty before they start or without any).
    pub fn bridges(&self) -> &[(String, Arc<ironplant_mqtt::bridge::BridgeStats>)] {
        self.bridges.get().map_or(&[], Vec::as_slice)
    }

    /// The event store's counters, when the historian runs.
    pub fn event_store(&self) -> Option<ironplant_historian::events::EventStoreStats> {
        self.events.get()?.1.as_ref().map(|s| s.stats())
    }

    /// Whether the device's connection is up.
    pub fn device_connected(&self, device: &str) -> Option<bool> {
        self.devices
            .get(device)
            .map(|d| d.connected.load(Ordering::Relaxed) == 1)
    }

    pub fn device_ids(&self) -> impl Iterator<Item = &str> {
        self.devices.keys().map(String::as_str)
    }

    /// Failed requests of a device so far.
    pub fn poll_errors(&self, device: &str) -> u64 {
        self.devices
            .get(device)
            .map_or(0, |d| d.requests_failed.load(Ordering::Relaxed))
    }

    /// Renders every metric; `bus` supplies the tag bus counters.
    pub fn render(
        &self,
        bus: &BusStats,
        tag_count: usize,
        historian: Option<&HistorianStats>,
    ) -> String {
        let mut out = String::with_capacity(4096);
        let w = &mut out;
        let _ = writeln!(w, "# HELP ironplant_tags Tags in the namespace.\n# TYPE ironplant_tags gauge\nironplant_tags {tag_count}");
        let _ = writeln!(w, "# HELP ironplant_samples_ingested_total Samples published on the tag bus.\n# TYPE ironplant_samples_ingested_total counter\nironplant_samples_ingested_total {}", bus.published_samples);
        let _ = writeln!(w, "# HELP ironplant_bus_batches_total Batches published on the tag bus.\n# TYPE ironplant_bus_batches_total counter\nironplant_bus_batches_total {}", bus.published_batches);
        let _ = writeln!(w, "# HELP ironplant_bus_dropped_samples_total Samples dropped for a subscriber whose queue was full.\n# TYPE ironplant_bus_dropped_samples_total counter");
        for (name, dropped, _) in &bus.subscribers {
            let _ = writeln!(
                w,
                "ironplant_bus_dropped_samples_total{{subscriber=\"{}\"}} {dropped}",
                escape(name)
            );
        }
        let _ = writeln!(w, "# HELP ironplant_bus_queued_batches Batches waiting in a subscriber's queue.\n# TYPE ironplant_bus_queued_batches gauge");
        for (name, _, queued) in &bus.subscribers {
            let _ = writeln!(
                w,
                "ironplant_bus_queued_batches{{subscriber=\"{}\"}} {queued}",
                escape(name)
            );
        }
        let _ = writeln!(w, "# HELP ironplant_poll_requests_total Modbus read requests by outcome.\n# TYPE ironplant_poll_requests_total counter");
        for (id, d) in &self.devices {
            let id = escape(id);
            let _ = writeln!(
                w,
                "ironplant_poll_requests_total{{device=\"{id}\",result=\"ok\"}} {}",
                d.requests_ok.load(Ordering::Relaxed)
            );
            let _ = writeln!(
                w,
                "ironplant_poll_requests_total{{device=\"{id}\",result=\"error\"}} {}",
                d.requests_failed.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(w, "# HELP ironplant_poll_errors_total Failed Modbus read requests (exceptions, timeouts, broken connections).\n# TYPE ironplant_poll_errors_total counter");
        for (id, d) in &self.devices {
            let _ = writeln!(
                w,
                "ironplant_poll_errors_total{{device=\"{}\"}} {}",
                escape(id),
                d.requests_failed.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(w, "# HELP ironplant_device_connected Whether the device connection is up (1) or down (0).\n# TYPE ironplant_device_connected gauge");
        for (id, d) in &self.devices {
            let _ = writeln!(
                w,
                "ironplant_device_connected{{device=\"{}\"}} {}",
                escape(id),
                d.connected.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(w, "# HELP ironplant_device_reconnects_total Connections established after the first.\n# TYPE ironplant_device_reconnects_total counter");
        for (id, d) in &self.devices {
            let _ = writeln!(
                w,
                "ironplant_device_reconnects_total{{device=\"{}\"}} {}",
                escape(id),
                d.connects.load(Ordering::Relaxed).saturating_sub(1)
            );
        }
        let _ = writeln!(w, "# HELP ironplant_poll_latency_seconds Round-trip time of Modbus read requests.\n# TYPE ironplant_poll_latency_seconds histogram");
        for (id, d) in &self.devices {
            let id = escape(id);
            let mut cumulative = 0;
            for (i, le) in LATENCY_BUCKETS.iter().enumerate() {
                cumulative += d.latency_buckets[i].load(Ordering::Relaxed);
                let _ = writeln!(w, "ironplant_poll_latency_seconds_bucket{{device=\"{id}\",le=\"{le}\"}} {cumulative}");
            }
            let count = d.latency_count.load(Ordering::Relaxed);
            let _ = writeln!(
                w,
                "ironplant_poll_latency_seconds_bucket{{device=\"{id}\",le=\"+Inf\"}} {count}"
            );
            let sum = d.latency_sum_us.load(Ordering::Relaxed) as f64 / 1e6;
            let _ = writeln!(
                w,
                "ironplant_poll_latency_seconds_sum{{device=\"{id}\"}} {sum}"
            );
            let _ = writeln!(
                w,
                "ironplant_poll_latency_seconds_count{{device=\"{id}\"}} {count}"
            );
        }
        if let Some(h) = historian {
            render_historian(w, h);
        }
        if let Some((bus, store)) = self.events.get() {
            render_events(w, &bus.stats(), store.as_ref().map(|s| s.stats()).as_ref());
        }
        if let Some(b) = self.broker.get() {
            render_broker(w, b);
        }
        if let Some(b) = self.bridges.get().filter(|b| !b.is_empty()) {
            render_bridges(w, b);
        }
        if self.sparkplug.running.load(Ordering::Relaxed) == 1 {
            render_sparkplug(w, &self.sparkplug);
        }
        out
    }
}

fn render_broker(w: &mut String, b: &ironplant_mqtt::Broker) {
    let st = b.stats();
    let c = b.counts();
    let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let (counter, gauge) = ("counter", "gauge");
    let metrics = [
        (
            "connections_total",
            counter,
            "MQTT connections accepted.",
            get(&st.connections),
        ),
        (
            "messages_received_total",
            counter,
            "PUBLISH packets routed (from clients and the platform).",
            get(&st.messages_in),
        ),
        (
            "messages_sent_total",
            counter,
            "Messages handed to subscribers (sent or queued in their session).",
            get(&st.messages_out),
        ),
        (
            "messages_dropped_total",
            counter,
            "Messages dropped because a client's queue was full.",
            get(&st.dropped),
        ),
        (
            "messages_expired_total",
            counter,
            "Messages not delivered because their message expiry passed.",
            get(&st.expired),
        ),
        (
            "protocol_errors_total",
            counter,
            "Connections ended for a protocol error.",
            get(&st.protocol_errors),
        ),
        (
            "denied_total",
            counter,
            "Connections, publishes and subscriptions refused.",
            get(&st.denied),
        ),
        (
            "slow_disconnects_total",
            counter,
            "Connections closed for reading slower than their messages arrive (queue full past slow_consumer_timeout, or overflow = \"disconnect\").",
            get(&st.slow_disconnects),
        ),
        (
            "limited_total",
            counter,
            "Connections, sessions, subscriptions and retained messages refused by a limit.",
            get(&st.limited),
        ),
        (
            "revoked_disconnects_total",
            counter,
            "Connections closed because their identity was revoked, disabled or lowered.",
            get(&st.revoked),
        ),
        (
            "wills_denied_total",
            counter,
            "Wills not sent because their identity may no longer publish on their topic.",
            get(&st.wills_denied),
        ),
        (
            "accept_errors_total",
            counter,
            "Failed accepts on an MQTT listener (e.g. out of file descriptors); it retries.",
            get(&st.accept_errors),
        ),
        (
            "persist_errors_total",
            counter,
            "Failed saves of retained messages and sessions.",
            get(&st.persist_errors),
        ),
        (
            "clients_connected",
            gauge,
            "Connected MQTT clients.",
            get(&st.connected),
        ),
        (
            "sessions",
            gauge,
            "MQTT sessions (connected or kept for an absent client).",
            c.sessions as u64,
        ),
        (
            "subscriptions",
            gauge,
            "MQTT subscriptions.",
            c.subscriptions as u64,
        ),
        (
            "retained_messages",
            gauge,
            "Retained MQTT messages.",
            c.retained as u64,
        ),
        (
            "queued_messages",
            gauge,
            "QoS 1/2 messages waiting in sessions.",
            c.queued as u64,
        ),
    ];
    for (name, kind, help, v) in metrics {
        let _ = writeln!(w, "# HELP ironplant_mqtt_{name} {help}\n# TYPE ironplant_mqtt_{name} {kind}\nironplant_mqtt_{name} {v}");
    }
}

fn render_sparkplug(w: &mut String, s: &SparkplugMetrics) {
    let counters: [(&str, &str, &AtomicU64); 12] = [
        (
            "messages_total",
            "Sparkplug B messages handled by the host application.",
            &s.messages,
        ),
        (
            "rebirths_requested_total",
            "Rebirth requests (NCMD Node Control/Rebirth) published.",
            &s.rebirths_requested,
        ),
        (
            "seq_gaps_total",
            "Sequence gaps seen (each leads to a rebirth request).",
            &s.seq_gaps,
        ),
        (
            "foreign_publisher_refused_total",
            "Messages of an edge node refused: another connection than its birth's sent them.",
            &s.foreign_refused,
        ),
        (
            "timestamps_rejected_total",
            "Samples dropped: stamped more than 10 min ahead of the host's clock, or (live) a day behind.",
            &s.timestamps_rejected,
        ),
        (
            "errors_total",
            "Malformed or inconsistent Sparkplug messages (seq gaps included).",
            &s.errors,
        ),
        (
            "tags_born_total",
            "Tags added to the namespace by Sparkplug births.",
            &s.tags_born,
        ),
        (
            "metrics_unmapped_total",
            "Metrics of births with no tag path, not recorded (folders deeper than their asset leaves room for, a path inside a mapped asset's tree, a name too long).",
            &s.metrics_unmapped,
        ),
        (
            "commands_total",
            "Writes sent to edge nodes as NCMD/DCMD.",
            &s.commands,
        ),
        (
            "writes_confirmed_total",
            "Writes confirmed by the edge node reporting the written value.",
            &s.writes_confirmed,
        ),
        (
            "writes_unconfirmed_total",
            "Writes sent but not confirmed (timed out, or the node or device went offline).",
            &s.writes_unconfirmed,
        ),
        (
            "writes_refused_total",
            "Writes refused before sending (offline, no birth, value not fitting the datatype, too many waiting).",
            &s.writes_refused,
        ),
    ];
    for (name, help, v) in counters {
        let v = v.load(Ordering::Relaxed);
        let _ = writeln!(w, "# HELP ironplant_sparkplug_{name} {help}\n# TYPE ironplant_sparkplug_{name} counter\nironplant_sparkplug_{name} {v}");
    }
}

fn render_historian(w: &mut String, h: &HistorianStats) {
    let counters: [(&str, &str, u64); 7] = [
        (
            "acked_samples_total",
            "Samples durable in the WAL and visible to queries.",
            h.acked_samples,
        ),
        (
            "stored_samples_total",
            "Samples compressed into chunks.",
            h.stored_samples,
        ),
        (
            "wal_fsyncs_total",
            "WAL group commits (one fsync each).",
            h.wal_fsyncs,
        ),
        (
            "chunks_written_total",
            "Compressed chunks written.",
            h.chunks_written,
        ),
        (
            "checkpoints_total",
            "Checkpoints (memtable compressed into chunks).",
            h.checkpoints,
        ),
        (
            "retention_dropped_chunks_total",
            "Chunks dropped by retention rules.",
            h.retention_dropped_chunks,
        ),
        (
            "corrupt_chunks_total",
            "Corrupt chunks found (and skipped) by queries.",
            h.corrupt_chunks_seen,
        ),
    ];
    for (name, help, v) in counters {
        let _ = writeln!(w, "# HELP ironplant_historian_{name} {help}\n# TYPE ironplant_historian_{name} counter\nironplant_historian_{name} {v}");
    }
    let _ = writeln!(w, "# HELP ironplant_historian_memtable_samples Samples in memory, not yet in chunks.\n# TYPE ironplant_historian_memtable_samples gauge\nironplant_historian_memtable_samples {}", h.memtable_samples);
    let _ = writeln!(w, "# HELP ironplant_historian_tags Tags with history.\n# TYPE ironplant_historian_tags gauge\nironplant_historian_tags {}", h.tags);
    let _ = writeln!(w, "# HELP ironplant_historian_disk_bytes Bytes on disk by part.\n# TYPE ironplant_historian_disk_bytes gauge");
    let _ = writeln!(
        w,
        "ironplant_historian_disk_bytes{{part=\"wal\"}} {}",
        h.wal_bytes
    );
    let _ = writeln!(
        w,
        "ironplant_historian_disk_bytes{{part=\"chunks\"}} {}",
        h.chunk_bytes
    );
}

/// The supervised components: state and restarts, by name and role.
pub(crate) fn render_components(
    w: &mut String,
    components: &[Arc<crate::component::ComponentStats>],
) {
    if components.is_empty() {
        return;
    }
    let _ = writeln!(w, "# HELP ironplant_component_status State of a component: 0 running, 1 failed and waiting for its restart, 2 stopped.\n# TYPE ironplant_component_status gauge");
    for c in components {
        let _ = writeln!(
            w,
            "ironplant_component_status{{component=\"{}\",role=\"{}\"}} {}",
            escape(&c.name),
            c.role.as_str(),
            c.status() as u8
        );
    }
    let _ = writeln!(w, "# HELP ironplant_component_restarts_total Times a component failed (error, early return or panic) and was restarted.\n# TYPE ironplant_component_restarts_total counter");
    for c in components {
        let _ = writeln!(
            w,
            "ironplant_component_restarts_total{{component=\"{}\",role=\"{}\"}} {}",
            escape(&c.name),
            c.role.as_str(),
            c.restarts()
        );
    }
}

fn render_events(
    w: &mut String,
    bus: &ironplant_core::event::EventBusStats,
    store: Option<&ironplant_historian::events::EventStoreStats>,
) {
    let _ = writeln!(w, "# HELP ironplant_events_published_total Events published on the event bus.\n# TYPE ironplant_events_published_total counter\nironplant_events_published_total {}", bus.published);
    let _ = writeln!(w, "# HELP ironplant_events_dropped_total Events dropped for a subscriber whose queue was full (all subscribers, also those gone).\n# TYPE ironplant_events_dropped_total counter\nironplant_events_dropped_total {}", bus.dropped_total);
    for (name, dropped, _) in &bus.subscribers {
        let _ = writeln!(
            w,
            "ironplant_events_dropped_total{{subscriber=\"{}\"}} {dropped}",
            escape(name)
        );
    }
    let _ = writeln!(w, "# HELP ironplant_events_queued Events waiting in a subscriber's queue.\n# TYPE ironplant_events_queued gauge");
    for (name, _, queued) in &bus.subscribers {
        let _ = writeln!(
            w,
            "ironplant_events_queued{{subscriber=\"{}\"}} {queued}",
            escape(name)
        );
    }
    if let Some(s) = store {
        let _ = writeln!(w, "# HELP ironplant_events_stored_total Events stored durably by the historian.\n# TYPE ironplant_events_stored_total counter\nironplant_events_stored_total {}", s.stored);
        let _ = writeln!(w, "# HELP ironplant_events_commits_total Event store transactions (one fsync each).\n# TYPE ironplant_events_commits_total counter\nironplant_events_commits_total {}", s.commits);
        let _ = writeln!(w, "# HELP ironplant_events_expired_total Events deleted by retention.\n# TYPE ironplant_events_expired_total counter\nironplant_events_expired_total {}", s.expired);
        let _ = writeln!(w, "# HELP ironplant_events_disk_bytes Bytes of the event store file.\n# TYPE ironplant_events_disk_bytes gauge\nironplant_events_disk_bytes {}", s.file_bytes);
    }
}

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl PollObserver for Metrics {
    fn request(&self, device: &str, latency: Duration, ok: bool) {
        let Some(d) = self.devices.get(device) else {
            return;
        };
        if ok {
            d.requests_ok.fetch_add(1, Ordering::Relaxed);
        } else {
            d.requests_failed.fetch_add(1, Ordering::Relaxed);
        }
        let secs = latency.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|le| secs <= *le) {
            d.latency_buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        d.latency_count.fetch_add(1, Ordering::Relaxed);
        d.latency_sum_us
            .fetch_add(latency.as_micros() as u64, Ordering::Relaxed);
    }

    fn identity(&self, device: &str, identity: &ironplant_modbus::ident::DeviceIdentity) {
        let previous = self
            .identities
            .lock()
            .insert(device.to_owned(), identity.clone());
        match previous {
            None => {
                tracing::info!(device, identity = %identity, "Modbus device identified itself");
            }
            Some(before) if before != *identity => {
                let msg = format!(
                    "Modbus device {device} now identifies as \"{identity}\", before as \"{before}\": another PLC answers at its address (swapped, or impersonated)"
                );
                tracing::warn!("{msg}");
                if let Some((bus, _)) = self.events.get() {
                    bus.publish(
                        ironplant_core::Event::new(
                            ironplant_core::Timestamp::now(),
                            ironplant_core::EventKind::Integrity,
                            "modbus_identity_changed",
                            "modbus",
                            msg,
                        )
                        .with_severity(ironplant_core::Severity::Warning)
                        .with_attribute(
                            "device",
                            ironplant_core::Value::String(std::sync::Arc::from(device)),
                        ),
                    );
                }
            }
            Some(_) => {}
        }
    }

    fn connection(&self, device: &str, up: bool) {
        let Some(d) = self.devices.get(device) else {
            return;
        };
        d.connected.store(u64::from(up), Ordering::Relaxed);
        if up {
            d.connects.fetch_add(1, Ordering::Relaxed);
        } else {
            d.disconnects.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn render_bridges(w: &mut String, bridges: &[(String, Arc<ironplant_mqtt::bridge::BridgeStats>)]) {
    type Field = fn(&ironplant_mqtt::bridge::BridgeStats) -> &std::sync::atomic::AtomicU64;
    let metrics: [(&str, &str, &str, Field); 13] = [
        (
            "connected",
            "gauge",
            "1 while the bridge is connected to its remote broker.",
            |s| &s.connected,
        ),
        (
            "queue_full",
            "gauge",
            "1 from the first message dropped by the queue's overflow policy until the queue is below 90 % of its limits again.",
            |s| &s.queue_full,
        ),
        (
            "queued_messages",
            "gauge",
            "Messages in the store-and-forward queue (in flight included).",
            |s| &s.queued,
        ),
        (
            "queued_bytes",
            "gauge",
            "Bytes in the store-and-forward queue.",
            |s| &s.queued_bytes,
        ),
        (
            "in_flight",
            "gauge",
            "Messages sent to the remote and not yet acknowledged.",
            |s| &s.in_flight,
        ),
        (
            "enqueued_total",
            "counter",
            "Local messages written to the queue.",
            |s| &s.enqueued,
        ),
        (
            "sent_total",
            "counter",
            "Messages acknowledged by the remote.",
            |s| &s.sent,
        ),
        (
            "dropped_total",
            "counter",
            "Messages dropped by the queue's overflow policy.",
            |s| &s.dropped,
        ),
        (
            "rejected_total",
            "counter",
            "Messages the remote refused.",
            |s| &s.rejected,
        ),
        (
            "unchanged_total",
            "counter",
            "Retained messages not sent again because the remote already has the same one (the replay at each start).",
            |s| &s.unchanged,
        ),
        (
            "received_total",
            "counter",
            "Remote messages published into the local broker.",
            |s| &s.received,
        ),
        (
            "looped_total",
            "counter",
            "Messages not forwarded because they came over this bridge.",
            |s| &s.looped,
        ),
        (
            "connects_total",
            "counter",
            "Connections established to the remote.",
            |s| &s.connects,
        ),
    ];
    for (name, kind, help, field) in metrics {
        let _ = writeln!(
            w,
            "# HELP ironplant_bridge_{name} {help}\n# TYPE ironplant_bridge_{name} {kind}"
        );
        for (bridge, st) in bridges {
            let _ = writeln!(
                w,
                "ironplant_bridge_{name}{{bridge=\"{}\"}} {}",
                escape(bridge),
                field(st).load(Ordering::Relaxed)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plc_that_identifies_differently_is_an_integrity_event() {
        let m = Metrics::new(["plc".to_owned()]);
        let events = ironplant_core::EventBus::new();
        let mut sub = events.subscribe("test", 8, ironplant_core::EventFilter::all());
        m.attach_events(events, None);
        let id = |product: &str| ironplant_modbus::ident::DeviceIdentity {
            vendor: "Acme".into(),
            product_code: product.into(),
            revision: "1.0".into(),
        };
        // The first identity, and the same one at a reconnect: nothing to report.
        m.identity("plc", &id("PLC-9"));
        m.identity("plc", &id("PLC-9"));
        assert!(sub.try_recv().is_none());
        m.identity("plc", &id("PLC-1"));
        let e = sub.try_recv().expect("an event");
        assert_eq!(e.kind, ironplant_core::EventKind::Integrity);
        assert_eq!(&*e.code, "modbus_identity_changed");
        assert!(
            e.message.contains("Acme PLC-1 1.0") && e.message.contains("Acme PLC-9 1.0"),
            "{}",
            e.message
        );
    }

    #[test]
    fn renders_prometheus_text_with_histogram() {
        let m = Metrics::new(["plc\"1".to_owned()]);
        m.request("plc\"1", Duration::from_millis(3), true);
        m.request("plc\"1", Duration::from_millis(30), false);
        m.request("unknown", Duration::from_millis(30), false);
        m.connection("plc\"1", true);
        let stats = BusStats {
            published_samples: 42,
            published_batches: 2,
            subscribers: vec![("api".into(), 7, 1)],
        };
        let hist = HistorianStats {
            acked_samples: 5,
            wal_bytes: 100,
            chunk_bytes: 2000,
            ..HistorianStats::default()
        };
        let text = m.render(&stats, 31, Some(&hist));
        assert!(
            text.contains("ironplant_historian_acked_samples_total 5\n"),
            "{text}"
        );
        assert!(
            text.contains("ironplant_historian_disk_bytes{part=\"chunks\"} 2000\n"),
            "{text}"
        );
        assert!(
            text.contains("ironplant_samples_ingested_total 42\n"),
            "{text}"
        );
        assert!(text.contains("ironplant_tags 31\n"));
        assert!(text.contains("ironplant_bus_dropped_samples_total{subscriber=\"api\"} 7\n"));
        assert!(
            text.contains("ironplant_poll_errors_total{device=\"plc\\\"1\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "ironplant_poll_latency_seconds_bucket{device=\"plc\\\"1\",le=\"0.005\"} 1\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "ironplant_poll_latency_seconds_bucket{device=\"plc\\\"1\",le=\"0.05\"} 2\n"
            ),
            "{text}"
        );
        assert!(text.contains("ironplant_poll_latency_seconds_count{device=\"plc\\\"1\"} 2\n"));
        assert!(text.contains("ironplant_device_connected{device=\"plc\\\"1\"} 1\n"));
        assert_eq!(m.device_connected("plc\"1"), Some(true));
        assert!(!text.contains("sparkplug"), "no host, no host metrics");
        m.sparkplug.running.store(1, Ordering::Relaxed);
        m.sparkplug.seq_gaps.fetch_add(3, Ordering::Relaxed);
        let text = m.render(&stats, 31, None);
        assert!(
            text.contains("ironplant_sparkplug_seq_gaps_total 3\n"),
            "{text}"
        );
        assert!(text.contains("# TYPE ironplant_sparkplug_messages_total counter\nironplant_sparkplug_messages_total 0\n"), "{text}");
    }

    #[test]
    fn renders_bridge_queue_full_and_counters() {
        let m = Metrics::new(Vec::<String>::new());
        let st = Arc::new(ironplant_mqtt::bridge::BridgeStats::default());
        st.queue_full.store(1, Ordering::Relaxed);
        st.unchanged.store(7, Ordering::Relaxed);
        let _ = m.bridges.set(vec![("ent".to_owned(), st)]);
        let text = m.render(&BusStats::default(), 0, None);
        assert!(
            text.contains("# TYPE ironplant_bridge_queue_full gauge\nironplant_bridge_queue_full{bridge=\"ent\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("ironplant_bridge_unchanged_total{bridge=\"ent\"} 7\n"),
            "{text}"
        );
    }
}
