//! Events: typed, timestamped facts that are not samples — an alarm transition, a command, a
//! security finding, a component restarted. They travel their own bus ([`EventBus`]) beside the
//! tag bus, are historised by the historian's event store, published on MQTT and served by the
//! API, all in the one wire format of `crate::wire`.
//!
//! Publishing an event never blocks and never takes a lock a subscriber holds, so a processor
//! that runs inside the tag bus's publish path (or any task) can raise events without risking a
//! deadlock. Each subscriber has a bounded queue; a full queue drops the newest event for that
//! subscriber and counts it (`ironplant_events_dropped_total`).

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;
use tokio::sync::mpsc;

use crate::path::TagPath;
use crate::sample::{Timestamp, Value};

/// The family an event belongs to; subscribers filter on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventKind {
    /// An alarm changed state (raised, acknowledged, cleared, shelved...).
    Alarm,
    /// A write to a device was requested, refused, performed or read back.
    Command,
    /// Something a security officer wants to see (a refused login, a forged message...).
    Security,
    /// The platform itself: a component started, failed, restarted; a queue filled up.
    System,
    /// A finding of data validation or manipulation detection.
    Integrity,
}

impl EventKind {
    pub const ALL: [EventKind; 5] = [
        EventKind::Alarm,
        EventKind::Command,
        EventKind::Security,
        EventKind::System,
        EventKind::Integrity,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Alarm => "alarm",
            EventKind::Command => "command",
            EventKind::Security => "security",
            EventKind::System => "system",
            EventKind::Integrity => "integrity",
        }
    }

    /// A one-byte code for storage (stable: never renumber).
    pub fn code(self) -> u8 {
        match self {
            EventKind::Alarm => 1,
            EventKind::Command => 2,
            EventKind::Security => 3,
            EventKind::System => 4,
            EventKind::Integrity => 5,
        }
    }

    pub fn from_code(code: u8) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.code() == code)
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EventKind {
    type Err = String;

    fn from_str(s: &str) -> Result<EventKind, String> {
        EventKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
                format!(
                    "unknown event kind {s:?}; expected one of {}",
                    names.join(", ")
                )
            })
    }
}

/// How much an event matters (syslog-like; alarms also carry their ISA-18.2 priority as an
/// attribute).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Severity {
    Info,
    Warning,
    Error,
    Critical,
}

impl Severity {
    pub const ALL: [Severity; 4] = [
        Severity::Info,
        Severity::Warning,
        Severity::Error,
        Severity::Critical,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
            Severity::Critical => "critical",
        }
    }
}

impl FromStr for Severity {
    type Err = String;

    fn from_str(s: &str) -> Result<Severity, String> {
        Severity::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                format!("unknown severity {s:?}; expected info, warning, error or critical")
            })
    }
}

/// One event. Built with [`Event::new`] and the `with_*` methods.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// When it happened.
    pub ts: Timestamp,
    pub kind: EventKind,
    /// What happened, within its kind: a short snake_case word such as `raised`, `acknowledged`,
    /// `write`, `refused`, `component_restarted`.
    pub code: Arc<str>,
    pub severity: Severity,
    /// The asset or tag the event is about, if any (an ISA-95 path).
    pub subject: Option<TagPath>,
    /// The component that raised it, e.g. `modbus:filler`, `sparkplug-host`, `runtime`.
    pub source: Arc<str>,
    /// The user or identity that caused it, if any (a command's author, an acknowledging operator).
    pub actor: Option<Arc<str>>,
    /// One line for people.
    pub message: Arc<str>,
    /// Structured details (old and new value, limit, reason...), in insertion order.
    pub attributes: Vec<(Arc<str>, Value)>,
}

impl Event {
    pub fn new(
        ts: Timestamp,
        kind: EventKind,
        code: &str,
        source: &str,
        message: impl Into<Arc<str>>,
    ) -> Event {
        Event {
            ts,
            kind,
            code: Arc::from(code),
            severity: Severity::Info,
            subject: None,
            source: Arc::from(source),
            actor: None,
            message: message.into(),
            attributes: Vec::new(),
        }
    }

    pub fn with_severity(mut self, severity: Severity) -> Event {
        self.severity = severity;
        self
    }

    pub fn with_subject(mut self, subject: TagPath) -> Event {
        self.subject = Some(subject);
        self
    }

    pub fn with_actor(mut self, actor: &str) -> Event {
        self.actor = Some(Arc::from(actor));
        self
    }

    pub fn with_attribute(mut self, name: &str, value: Value) -> Event {
        self.attributes.push((Arc::from(name), value));
        self
    }

    /// The value of an attribute, if present.
    pub fn attribute(&self, name: &str) -> Option<&Value> {
        self.attributes
            .iter()
            .find(|(n, _)| &**n == name)
            .map(|(_, v)| v)
    }
}

/// Which events a subscriber wants.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventFilter {
    /// Empty: every kind.
    pub kinds: Vec<EventKind>,
    /// Only events whose subject lies at or under one of these paths. Empty: any subject (and
    /// events without one).
    pub subjects: Vec<TagPath>,
}

impl EventFilter {
    pub fn all() -> EventFilter {
        EventFilter::default()
    }

    pub fn matches(&self, e: &Event) -> bool {
        if !self.kinds.is_empty() && !self.kinds.contains(&e.kind) {
            return false;
        }
        if self.subjects.is_empty() {
            return true;
        }
        match &e.subject {
            Some(s) => self.subjects.iter().any(|p| s == p || s.is_under(p)),
            None => false,
        }
    }
}

struct EventSlot {
    name: String,
    filter: EventFilter,
    tx: mpsc::Sender<Arc<Event>>,
    dropped: Arc<AtomicU64>,
}

#[derive(Default)]
struct EventInner {
    subscribers: RwLock<Arc<Vec<Arc<EventSlot>>>>,
    published: AtomicU64,
    /// Dropped by subscribers that went away (kept so the total never goes down).
    dropped_gone: AtomicU64,
}

/// The event bus; cheap to clone.
#[derive(Clone, Default)]
pub struct EventBus {
    inner: Arc<EventInner>,
}

/// A subscriber's end of the event bus.
pub struct EventSubscription {
    rx: mpsc::Receiver<Arc<Event>>,
    dropped: Arc<AtomicU64>,
}

impl EventSubscription {
    /// The next event, or `None` once the bus is gone.
    pub async fn recv(&mut self) -> Option<Arc<Event>> {
        self.rx.recv().await
    }

    /// The next event, blocking the thread (never call it in async code).
    pub fn blocking_recv(&mut self) -> Option<Arc<Event>> {
        self.rx.blocking_recv()
    }

    pub fn try_recv(&mut self) -> Option<Arc<Event>> {
        self.rx.try_recv().ok()
    }

    /// Events dropped for this subscriber because its queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Counters of the event bus, for metrics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventBusStats {
    pub published: u64,
    /// (subscriber name, events dropped, events queued now)
    pub subscribers: Vec<(String, u64, usize)>,
    /// Every event dropped so far, also by subscribers that are gone.
    pub dropped_total: u64,
}

impl EventBus {
    pub fn new() -> EventBus {
        EventBus::default()
    }

    /// A subscriber with a queue of `capacity` events; events not matching `filter` are not
    /// queued for it.
    pub fn subscribe(&self, name: &str, capacity: usize, filter: EventFilter) -> EventSubscription {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let dropped = Arc::new(AtomicU64::new(0));
        let slot = Arc::new(EventSlot {
            name: name.to_owned(),
            filter,
            tx,
            dropped: dropped.clone(),
        });
        let mut subs = self.inner.subscribers.write();
        let mut next = Vec::clone(&subs);
        next.push(slot);
        *subs = Arc::new(next);
        EventSubscription { rx, dropped }
    }

    /// Publishes one event to every matching subscriber. Never blocks: a full queue drops the
    /// event for that subscriber and counts it.
    pub fn publish(&self, event: Event) {
        self.inner.published.fetch_add(1, Ordering::Relaxed);
        let event = Arc::new(event);
        let subs = self.inner.subscribers.read().clone();
        let mut closed = false;
        for slot in subs.iter() {
            if !slot.filter.matches(&event) {
                continue;
            }
            match slot.tx.try_send(event.clone()) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    slot.dropped.fetch_add(1, Ordering::Relaxed);
                }
                Err(mpsc::error::TrySendError::Closed(_)) => closed = true,
            }
        }
        if closed {
            let mut w = self.inner.subscribers.write();
            let (gone, kept): (Vec<_>, Vec<_>) = w.iter().cloned().partition(|s| s.tx.is_closed());
            for s in gone {
                self.inner
                    .dropped_gone
                    .fetch_add(s.dropped.load(Ordering::Relaxed), Ordering::Relaxed);
            }
            *w = Arc::new(kept);
        }
    }

    pub fn stats(&self) -> EventBusStats {
        let subs = self.inner.subscribers.read().clone();
        let subscribers: Vec<(String, u64, usize)> = subs
            .iter()
            .map(|s| {
                let queued = s.tx.max_capacity() - s.tx.capacity();
                (s.name.clone(), s.dropped.load(Ordering::Relaxed), queued)
            })
            .collect();
        let dropped_total = self.inner.dropped_gone.load(Ordering::Relaxed)
            + subscribers.iter().map(|s| s.1).sum::<u64>();
        EventBusStats {
            published: self.inner.published.load(Ordering::Relaxed),
            subscribers,
            dropped_total,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(s: &str) -> TagPath {
        TagPath::parse(s).expect("valid path")
    }

    #[test]
    fn filters_by_kind_and_subject() {
        let bus = EventBus::new();
        let mut alarms = bus.subscribe(
            "alarms",
            8,
            EventFilter {
                kinds: vec![EventKind::Alarm],
                subjects: vec![path("acme/lyon/line1")],
            },
        );
        let mut all = bus.subscribe("all", 8, EventFilter::all());
        bus.publish(
            Event::new(Timestamp(1), EventKind::Alarm, "raised", "test", "high")
                .with_subject(path("acme/lyon/line1/filler/temp")),
        );
        bus.publish(
            Event::new(
                Timestamp(2),
                EventKind::Alarm,
                "raised",
                "test",
                "other line",
            )
            .with_subject(path("acme/lyon/line2/filler/temp")),
        );
        bus.publish(Event::new(
            Timestamp(3),
            EventKind::System,
            "started",
            "test",
            "up",
        ));
        let got = alarms.try_recv().expect("one alarm");
        assert_eq!(&*got.message, "high");
        assert!(alarms.try_recv().is_none());
        let n = std::iter::from_fn(|| all.try_recv()).count();
        assert_eq!(n, 3);
    }

    #[test]
    fn a_full_queue_drops_and_counts_without_blocking() {
        let bus = EventBus::new();
        let mut sub = bus.subscribe("slow", 2, EventFilter::all());
        for i in 0..5 {
            bus.publish(Event::new(
                Timestamp(i),
                EventKind::System,
                "x",
                "test",
                "m",
            ));
        }
        assert_eq!(sub.dropped(), 3);
        assert_eq!(sub.try_recv().map(|e| e.ts), Some(Timestamp(0)));
        let stats = bus.stats();
        assert_eq!(stats.published, 5);
        assert_eq!(stats.dropped_total, 3);
        drop(sub);
        bus.publish(Event::new(
            Timestamp(9),
            EventKind::System,
            "x",
            "test",
            "m",
        ));
        let stats = bus.stats();
        assert!(stats.subscribers.is_empty());
        assert_eq!(
            stats.dropped_total, 3,
            "drops of a gone subscriber still count"
        );
    }

    #[test]
    fn kinds_parse_and_round_trip_their_codes() {
        for k in EventKind::ALL {
            assert_eq!(k.as_str().parse::<EventKind>(), Ok(k));
            assert_eq!(EventKind::from_code(k.code()), Some(k));
        }
        let err = "alarms".parse::<EventKind>().expect_err("unknown");
        assert!(err.contains("expected one of alarm"), "{err}");
    }
}
