//! The live API: current values, their changes and events over one WebSocket at
//! `/api/v1/live`, in the wire format of `ironplant_core::wire` (protocol and examples in
//! `docs/live-api.md`).
//!
//! Shape: one *hub* task per platform subscribes once to the tag bus (`DropNewest`, so it can
//! never slow a publisher) and once to the event bus, and routes each sample by tag id to the
//! clients that subscribed to it. A client does not get a queue of samples but an *outbox*: the
//! latest sample per tag plus the order in which tags became dirty. A newer sample of a tag not
//! yet sent replaces the older one (counted in `ironplant_live_coalesced_total`), so a slow
//! client gets fewer messages but always the latest value of each tag, and its memory is bounded
//! by the number of tags it subscribed to. Events are queued per client up to a limit (the
//! oldest are dropped, counted and announced with `{"type":"dropped","events":N}`).
//!
//! Authentication as REST ([`crate::auth`]): `Authorization: Bearer` on the upgrade request
//! (non-browser clients), or, since a browser cannot set headers on a WebSocket, a first message
//! `{"op":"auth","token":"ipt_..."}` within `auth_timeout`. Tokens are never taken from the URL
//! (it ends up in access logs and browser history) nor from a cookie (the API sets none, so a
//! page of another origin cannot ride on a logged-in browser: cross-site WebSocket hijacking
//! needs ambient credentials). The token is re-verified, and the caller's tag scopes re-read,
//! on every `subscribe` and every `recheck_interval`: a revoked token closes the socket (1008)
//! and narrowed scopes stop the tags they no longer cover.
//!
//! Invariants: the hub never waits on a client (it only takes a client's outbox lock for a
//! map insert); the bus never waits on the hub; a client's memory is bounded by its routed tags,
//! `max_events_queued` events and a few control messages; a change of a tag is never sent
//! before the tag's snapshot (the hub queues the snapshot in the same critical section that
//! routes the tag, and the connection sends control messages first).

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use ironplant_core::wire::{EventJson, SampleJson, TagJson};
use ironplant_core::{
    Event, EventFilter, EventKind, EventSubscription, Namespace, Overflow, Sample, Subscription,
    TagId, TagPath, Timestamp,
};
use ironplant_runtime::Runtime;
use ironplant_security::users::AuthMethod;
use ironplant_security::{Identity, Permission, Security};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::time::Instant;

use crate::auth::{self, BearerError, Caller, ClientAddr, TagAccess};
use crate::{ApiError, ApiState};

/// The path of the live API.
pub const PATH: &str = "/api/v1/live";

/// The WebSocket subprotocol of this version of the protocol; selected when the client offers
/// it (offering none is fine too).
pub const SUBPROTOCOL: &str = "ironplant.live.v1";

/// Limits and timers of the live API: `[http.live]` in the config.
pub use crate::settings::LiveSettings;

/// The longest timer the live API uses, whatever the config says.
const MAX_TIMER: Duration = Duration::from_secs(24 * 3600);

/// Counters for `/metrics`.
#[derive(Default)]
struct Counters {
    clients: AtomicUsize,
    connected: AtomicU64,
    coalesced: AtomicU64,
    samples_sent: AtomicU64,
    messages_sent: AtomicU64,
    events_sent: AtomicU64,
    events_dropped: AtomicU64,
    refused_too_many: AtomicU64,
    refused_unauthenticated: AtomicU64,
    refused_forbidden: AtomicU64,
    closed_ping_timeout: AtomicU64,
    closed_write_timeout: AtomicU64,
    closed_revoked: AtomicU64,
    hub_resyncs: AtomicU64,
}

/// The live API of one platform: its settings, counters and (once a client came) its hub.
/// Held by [`crate::listen::Connections`], so every router of the platform shares one hub.
pub struct Live {
    settings: LiveSettings,
    counters: Arc<Counters>,
    next_id: AtomicU64,
    hub: OnceLock<mpsc::UnboundedSender<Ctl>>,
    /// Refusals at the client limit: audited at most once a minute, with their number.
    limit_reports: Mutex<LimitReports>,
}

#[derive(Default)]
struct LimitReports {
    last: Option<Instant>,
    since_last: u64,
}

/// How often refusals at the client limit are written to the audit log.
const LIMIT_REPORT_EVERY: Duration = Duration::from_secs(60);

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Live {
    pub fn new(mut settings: LiveSettings) -> Live {
        // Timers far in the future would overflow `Instant` arithmetic; a day is plenty.
        for d in [
            &mut settings.flush_interval,
            &mut settings.ping_interval,
            &mut settings.write_timeout,
            &mut settings.auth_timeout,
            &mut settings.recheck_interval,
        ] {
            *d = (*d).clamp(Duration::from_millis(1), MAX_TIMER);
        }
        Live {
            settings,
            counters: Arc::default(),
            next_id: AtomicU64::new(1),
            hub: OnceLock::new(),
            limit_reports: Mutex::default(),
        }
    }

    pub fn settings(&self) -> &LiveSettings {
        &self.settings
    }

    /// Live clients connected now.
    pub fn clients(&self) -> usize {
        self.counters.clients.load(Ordering::Relaxed)
    }

    /// Samples superseded by a newer value of their tag before a client got them.
    pub fn coalesced(&self) -> u64 {
        self.counters.coalesced.load(Ordering::Relaxed)
    }

    /// The hub, started on first use on the current tokio runtime.
    fn hub(&self, rt: &Arc<Runtime>) -> mpsc::UnboundedSender<Ctl> {
        self.hub
            .get_or_init(|| Hub::spawn(rt.clone(), self.counters.clone()))
            .clone()
    }

    /// A slot for one more client, or `None` at the limit.
    fn admit(&self) -> Option<ClientSlot> {
        let c = &self.counters;
        let mut now = c.clients.load(Ordering::Relaxed);
        loop {
            if now >= self.settings.max_clients {
                c.refused_too_many.fetch_add(1, Ordering::Relaxed);
                return None;
            }
            match c
                .clients
                .compare_exchange_weak(now, now + 1, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(n) => now = n,
            }
        }
        c.connected.fetch_add(1, Ordering::Relaxed);
        Some(ClientSlot(c.clone()))
    }

    /// The counters in Prometheus text format.
    pub fn render(&self) -> String {
        let c = &self.counters;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, lines: &[(&str, u64)]| {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
            for (labels, v) in lines {
                out.push_str(&format!("{name}{labels} {v}\n"));
            }
        };
        metric(
            "ironplant_live_clients",
            "gauge",
            "Clients of the live WebSocket API connected now.",
            &[("", self.clients() as u64)],
        );
        metric(
            "ironplant_live_clients_connected_total",
            "counter",
            "Clients of the live WebSocket API admitted.",
            &[("", g(&c.connected))],
        );
        metric(
            "ironplant_live_coalesced_total",
            "counter",
            "Samples superseded by a newer value of the same tag before a live client got them.",
            &[("", g(&c.coalesced))],
        );
        metric(
            "ironplant_live_samples_sent_total",
            "counter",
            "Samples sent to live clients (snapshots not included).",
            &[("", g(&c.samples_sent))],
        );
        metric(
            "ironplant_live_messages_sent_total",
            "counter",
            "WebSocket messages sent to live clients.",
            &[("", g(&c.messages_sent))],
        );
        metric(
            "ironplant_live_events_sent_total",
            "counter",
            "Events sent to live clients.",
            &[("", g(&c.events_sent))],
        );
        metric(
            "ironplant_live_events_dropped_total",
            "counter",
            "Events dropped for slow live clients (oldest first; the client is told).",
            &[("", g(&c.events_dropped))],
        );
        metric(
            "ironplant_live_refused_total",
            "counter",
            "Live clients refused.",
            &[
                ("{reason=\"too_many_clients\"}", g(&c.refused_too_many)),
                (
                    "{reason=\"unauthenticated\"}",
                    g(&c.refused_unauthenticated),
                ),
                ("{reason=\"forbidden\"}", g(&c.refused_forbidden)),
            ],
        );
        metric(
            "ironplant_live_closed_total",
            "counter",
            "Live clients closed by the server.",
            &[
                ("{reason=\"ping_timeout\"}", g(&c.closed_ping_timeout)),
                ("{reason=\"write_timeout\"}", g(&c.closed_write_timeout)),
                ("{reason=\"revoked\"}", g(&c.closed_revoked)),
            ],
        );
        metric(
            "ironplant_live_hub_resyncs_total",
            "counter",
            "Times the live hub fell behind the tag bus and re-read current values.",
            &[("", g(&c.hub_resyncs))],
        );
        out
    }
}

/// One admitted client; the gauge goes down when it is dropped.
struct ClientSlot(Arc<Counters>);

impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.0.clients.fetch_sub(1, Ordering::Relaxed);
    }
}

// ---- the protocol ----------------------------------------------------------------------------

/// A request id chosen by the client, echoed in the answer.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
enum ReqId {
    Int(i64),
    Str(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    op: String,
    #[serde(default)]
    id: Option<ReqId>,
    #[serde(default)]
    tags: Option<Vec<String>>,
    #[serde(default)]
    events: Option<Vec<String>>,
    #[serde(default)]
    token: Option<String>,
    /// The HMI's CSRF token: authenticates with the session cookie of the upgrade request.
    #[serde(default)]
    csrf: Option<String>,
}

const EXAMPLE: &str = r#"{"op":"subscribe","id":1,"tags":["acme/lyon/line1"],"events":["alarm"]}"#;

/// Parses a client message. The error names the position and the kind of problem but never
/// quotes the message (it may hold a token).
fn parse_request(text: &str) -> Result<Request, String> {
    let req: Request = serde_json::from_str(text).map_err(|e| {
        let what = match e.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                "is not valid JSON".to_owned()
            }
            serde_json::error::Category::Data => {
                let msg = e.to_string();
                // Field names are ours, safe to repeat; values are the client's.
                if msg.starts_with("unknown field") || msg.starts_with("missing field") {
                    msg.split(" at line").next().unwrap_or("").to_owned()
                } else {
                    "has a field of the wrong type (op: string, id: number or string, tags and \
                     events: lists of strings, token: string)"
                        .to_owned()
                }
            }
            serde_json::error::Category::Io => "cannot be read".to_owned(),
        };
        format!(
            "the message {what} (line {}, column {}); send a JSON object such as {EXAMPLE}",
            e.line(),
            e.column()
        )
    })?;
    if let Some(ReqId::Str(s)) = &req.id {
        if s.len() > 64 {
            return Err("the id is longer than 64 bytes; use a short number or string".into());
        }
    }
    Ok(req)
}

/// An event subscription: a kind (or every kind) and an optional subject prefix.
#[derive(Debug, Clone, PartialEq)]
struct EventPattern {
    text: String,
    kind: Option<EventKind>,
    subject: Option<TagPath>,
}

impl EventPattern {
    /// `alarm`, `alarm:acme/lyon/line1`, `*`, `*:acme/lyon`.
    fn parse(text: &str) -> Result<EventPattern, String> {
        let (kind, subject) = match text.split_once(':') {
            Some((k, s)) => (k, Some(s)),
            None => (text, None),
        };
        let kind =
            if kind == "*" {
                None
            } else {
                Some(kind.parse::<EventKind>().map_err(|e| {
                    format!("event subscription {text:?}: {e} (or * for every kind)")
                })?)
            };
        let subject = subject
            .map(|s| {
                TagPath::parse(s.trim_end_matches('/')).map_err(|e| {
                    format!(
                        "event subscription {text:?}: the subject prefix {s:?} is not a tag \
                         path: {e}; write KIND:PREFIX, e.g. alarm:acme/lyon/line1"
                    )
                })
            })
            .transpose()?;
        Ok(EventPattern {
            text: text.to_owned(),
            kind,
            subject,
        })
    }

    fn matches(&self, e: &Event) -> bool {
        self.kind.is_none_or(|k| k == e.kind)
            && match (&self.subject, &e.subject) {
                (None, _) => true,
                (Some(p), Some(s)) => s.is_under(p),
                (Some(_), None) => false,
            }
    }
}

/// What one client sees: its patterns, filtered by its scopes.
#[derive(Debug, Clone, Default)]
struct View {
    tags: Vec<TagPath>,
    events: Vec<EventPattern>,
    access: TagAccess,
    /// Security events need `read_audit` (they name users and addresses).
    security_events: bool,
    max_tags: usize,
}

impl View {
    fn wants_tag(&self, path: &TagPath) -> bool {
        self.tags.iter().any(|p| path.is_under(p)) && self.access.can_read(path.as_str())
    }

    fn wants_event(&self, e: &Event) -> bool {
        if e.kind == EventKind::Security && !self.security_events {
            return false;
        }
        // An event about a tag or asset follows the tag scopes; one about nothing in
        // particular only reaches callers without read limits.
        let visible = match &e.subject {
            Some(s) => self.access.can_read(s.as_str()),
            None => self.access.reads_unlimited(),
        };
        visible && self.events.iter().any(|p| p.matches(e))
    }

    /// The ids of the tags it wants among `ns`'s tags from index `from` on, sorted.
    fn scan(&self, ns: &Namespace, from: usize) -> Vec<TagId> {
        if self.tags.is_empty() {
            return Vec::new();
        }
        ns.tags()
            .skip(from)
            .filter(|m| self.wants_tag(&m.path))
            .map(|m| m.id)
            .collect()
    }
}

// ---- the outbox of one client ----------------------------------------------------------------

/// A message waiting to be sent before any sample.
enum Control {
    Text(String),
    /// Current values of the tags of a subscribe, rendered in chunks when sent.
    Snapshot {
        id: Option<ReqId>,
        tags: Vec<(TagId, Option<Sample>)>,
    },
}

#[derive(Default)]
struct Outbox {
    control: VecDeque<Control>,
    /// The latest unsent sample of each dirty tag ...
    latest: HashMap<TagId, Sample>,
    /// ... and the order in which the tags became dirty (each at most once).
    order: VecDeque<TagId>,
    /// Snapshot values a tag's changes must not go back behind (samples still queued in the
    /// hub when the snapshot was read), until `floors_until`.
    floors: HashMap<TagId, Timestamp>,
    floors_until: Option<Instant>,
    /// Tags born (or newly visible) since the last message, announced with their metadata.
    born: Vec<TagId>,
    events: VecDeque<Arc<Event>>,
    events_dropped: u64,
}

/// How long snapshot floors are kept: long enough for anything queued in the hub at the time
/// to pass, short enough that a wall clock stepping back cannot mute a tag for long.
const FLOOR_TTL: Duration = Duration::from_secs(10);

struct ClientShared {
    id: u64,
    outbox: Mutex<Outbox>,
    wake: Notify,
    counters: Arc<Counters>,
    max_events: usize,
}

impl ClientShared {
    /// Takes a sample of a routed tag: it replaces an unsent one of the same tag.
    fn offer(&self, s: &Sample, now: Instant) {
        let mut o = self.outbox.lock();
        if o.floors_until.is_some_and(|until| now >= until) {
            o.floors.clear();
            o.floors_until = None;
        }
        if let Some(floor) = o.floors.get(&s.tag).copied() {
            if s.server_ts < floor {
                return; // older than the snapshot the client was sent
            }
            o.floors.remove(&s.tag);
        }
        let was_idle = o.order.is_empty();
        match o.latest.entry(s.tag) {
            Entry::Occupied(mut e) => {
                e.insert(s.clone());
                drop(o);
                self.counters.coalesced.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Entry::Vacant(e) => {
                e.insert(s.clone());
                o.order.push_back(s.tag);
            }
        }
        drop(o);
        if was_idle {
            self.wake.notify_one();
        }
    }

    fn push_event(&self, e: Arc<Event>) {
        let mut o = self.outbox.lock();
        if o.events.len() >= self.max_events {
            o.events.pop_front();
            o.events_dropped += 1;
            self.counters.events_dropped.fetch_add(1, Ordering::Relaxed);
        }
        o.events.push_back(e);
        drop(o);
        self.wake.notify_one();
    }

    fn events_lost(&self, n: u64) {
        self.outbox.lock().events_dropped += n;
        self.counters.events_dropped.fetch_add(n, Ordering::Relaxed);
        self.wake.notify_one();
    }

    fn push_control(&self, c: Control) {
        self.outbox.lock().control.push_back(c);
        self.wake.notify_one();
    }
}

// ---- the hub ---------------------------------------------------------------------------------

enum Ctl {
    Attach(Arc<ClientShared>),
    Routes(Box<Routes>),
    Detach(u64),
}

/// A client's new set of routed tags (all of them, sorted), computed by its connection from
/// the namespace's first `scanned` tags.
struct Routes {
    client: u64,
    tags: Vec<TagId>,
    scanned: usize,
    snapshot: Snap,
    view: View,
    /// Answered once the routes are in place.
    done: oneshot::Sender<Routed>,
}

/// Which of the new routes get a snapshot.
enum Snap {
    None,
    /// A subscribe: these tags, answering request `id`.
    Tags(Option<ReqId>, Vec<TagId>),
    /// After a scope change: the tags that were not routed before.
    Added,
}

/// What a change of routes did.
#[derive(Debug, Clone, Copy, Default)]
struct Routed {
    tags: usize,
    removed: usize,
    added: usize,
}

struct HubClient {
    shared: Arc<ClientShared>,
    tags: Vec<TagId>,
    view: View,
}

struct Hub {
    rt: Arc<Runtime>,
    counters: Arc<Counters>,
    clients: HashMap<u64, HubClient>,
    /// Client ids by tag index.
    routes: Vec<Vec<u64>>,
    /// Tags of the namespace the hub has looked at for births.
    known: usize,
    /// Capacity of its bus queue.
    bus_queue: usize,
}

/// Batches the hub's bus queue holds; beyond, the bus drops for the hub only (counted) and the
/// hub re-reads the current values of every routed tag.
const HUB_BUS_QUEUE: usize = 1024;
const HUB_EVENT_QUEUE: usize = 4096;

impl Hub {
    fn spawn(rt: Arc<Runtime>, counters: Arc<Counters>) -> mpsc::UnboundedSender<Ctl> {
        Hub::spawn_with(rt, counters, HUB_BUS_QUEUE)
    }

    fn spawn_with(
        rt: Arc<Runtime>,
        counters: Arc<Counters>,
        bus_queue: usize,
    ) -> mpsc::UnboundedSender<Ctl> {
        // Unbounded, yet bounded in practice: a connection waits for the answer to its
        // `Routes` before it sends another, so at most one message per client (plus attach and
        // detach) is ever queued.
        let (tx, rx) = mpsc::unbounded_channel();
        let sub = rt.bus.subscribe("live", bus_queue, Overflow::DropNewest);
        let events = rt
            .events
            .subscribe("live", HUB_EVENT_QUEUE, EventFilter::all());
        let hub = Hub {
            known: rt.namespace.len(),
            rt,
            counters,
            clients: HashMap::new(),
            routes: Vec::new(),
            bus_queue,
        };
        tokio::spawn(hub.run(rx, sub, events));
        tx
    }

    async fn run(
        mut self,
        mut ctl: mpsc::UnboundedReceiver<Ctl>,
        mut sub: Subscription,
        mut events: EventSubscription,
    ) {
        let mut bus_dropped = 0;
        let mut events_dropped = 0;
        // Births are seen on the first sample of the new tag; the tick also catches tags born
        // without one.
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                c = ctl.recv() => match c {
                    Some(c) => self.control(c),
                    None => return,
                },
                b = sub.recv() => match b {
                    Some(batch) => {
                        self.births();
                        self.fan_out(&batch);
                        if sub.dropped() != bus_dropped {
                            // Batches were lost. What is still queued is older than the
                            // current values: pass it on first (bounded, so a flood cannot
                            // keep the hub here), then offer the current values, which
                            // include whatever was lost.
                            for _ in 0..self.bus_queue {
                                let Some(b) = sub.try_recv() else { break };
                                self.births();
                                self.fan_out(&b);
                            }
                            bus_dropped = sub.dropped();
                            self.resync();
                        }
                    }
                    None => return,
                },
                e = events.recv() => match e {
                    Some(e) => {
                        let d = events.dropped();
                        if d != events_dropped {
                            let lost = d - events_dropped;
                            events_dropped = d;
                            for c in self.clients.values().filter(|c| !c.view.events.is_empty()) {
                                c.shared.events_lost(lost);
                            }
                        }
                        for c in self.clients.values() {
                            if c.view.wants_event(&e) {
                                c.shared.push_event(e.clone());
                            }
                        }
                    }
                    None => return,
                },
                _ = tick.tick() => self.births(),
            }
        }
    }

    fn control(&mut self, c: Ctl) {
        match c {
            Ctl::Attach(shared) => {
                self.clients.insert(
                    shared.id,
                    HubClient {
                        shared,
                        tags: Vec::new(),
                        view: View::default(),
                    },
                );
            }
            Ctl::Detach(id) => {
                if let Some(c) = self.clients.remove(&id) {
                    for t in c.tags {
                        if let Some(r) = self.routes.get_mut(t.index()) {
                            r.retain(|x| *x != id);
                        }
                    }
                }
            }
            Ctl::Routes(r) => self.set_routes(*r),
        }
    }

    fn set_routes(&mut self, r: Routes) {
        let Routes {
            client,
            mut tags,
            scanned,
            mut snapshot,
            view,
            done,
        } = r;
        let Some(c) = self.clients.get_mut(&client) else {
            return;
        };
        // Tags born after the connection scanned the namespace but already past the hub's
        // birth check: the connection could not see them, the hub will not announce them.
        if scanned < self.known {
            let late = view.scan(&self.rt.namespace.read(), scanned);
            let late: Vec<TagId> = late
                .into_iter()
                .filter(|t| t.index() < self.known)
                .collect();
            if !late.is_empty() {
                tags.extend(&late);
                tags.sort_unstable();
                tags.dedup();
                match &mut snapshot {
                    Snap::Tags(_, s) => s.extend(late),
                    Snap::Added => {}
                    Snap::None => c.shared.outbox.lock().born.extend(late),
                }
            }
        }
        let id = c.shared.id;
        let (removed, added) = diff(&c.tags, &tags);
        for t in &removed {
            if let Some(r) = self.routes.get_mut(t.index()) {
                r.retain(|x| *x != id);
            }
        }
        for t in &added {
            if self.routes.len() <= t.index() {
                self.routes.resize_with(t.index() + 1, Vec::new);
            }
            self.routes[t.index()].push(id);
        }
        {
            let mut o = c.shared.outbox.lock();
            for t in &removed {
                o.latest.remove(t);
                o.floors.remove(t);
            }
            if !removed.is_empty() {
                let latest = &o.latest;
                let kept: VecDeque<TagId> = o
                    .order
                    .iter()
                    .copied()
                    .filter(|t| latest.contains_key(t))
                    .collect();
                o.order = kept;
                o.born.retain(|t| tags.binary_search(t).is_ok());
            }
            let snapshot = match snapshot {
                Snap::None => None,
                Snap::Tags(req, snap) => Some((req, snap)),
                Snap::Added => (!added.is_empty()).then(|| (None, added.clone())),
            };
            if let Some((req, snap)) = snapshot {
                // Read under the outbox lock, after the routes are in place: every later
                // change goes behind this snapshot, and a queued older one is held back by the
                // floor.
                let until = Instant::now() + FLOOR_TTL;
                let mut values = Vec::with_capacity(snap.len());
                for t in snap {
                    o.latest.remove(&t);
                    let cur = self.rt.bus.current(t);
                    if let Some(s) = &cur {
                        o.floors.insert(t, s.server_ts);
                        o.floors_until = Some(until);
                    }
                    values.push((t, cur));
                }
                let latest = &o.latest;
                let kept: VecDeque<TagId> = o
                    .order
                    .iter()
                    .copied()
                    .filter(|t| latest.contains_key(t))
                    .collect();
                o.order = kept;
                o.control.push_back(Control::Snapshot {
                    id: req,
                    tags: values,
                });
            }
        }
        c.shared.wake.notify_one();
        c.tags = tags;
        c.view = view;
        let _ = done.send(Routed {
            tags: c.tags.len(),
            removed: removed.len(),
            added: added.len(),
        });
    }

    /// Routes tags born since the last look to the clients whose patterns cover them.
    fn births(&mut self) {
        let n = self.rt.namespace.len();
        if n <= self.known {
            return;
        }
        let born: Vec<(TagId, TagPath)> = self
            .rt
            .namespace
            .read()
            .tags()
            .skip(self.known)
            .map(|m| (m.id, m.path.clone()))
            .collect();
        self.known += born.len();
        for c in self.clients.values_mut() {
            if c.view.tags.is_empty() {
                continue;
            }
            let mut any = false;
            for (id, path) in &born {
                if c.tags.len() >= c.view.max_tags || !c.view.wants_tag(path) {
                    continue;
                }
                let Err(pos) = c.tags.binary_search(id) else {
                    continue;
                };
                c.tags.insert(pos, *id);
                if self.routes.len() <= id.index() {
                    self.routes.resize_with(id.index() + 1, Vec::new);
                }
                self.routes[id.index()].push(c.shared.id);
                c.shared.outbox.lock().born.push(*id);
                any = true;
            }
            if any {
                c.shared.wake.notify_one();
            }
        }
    }

    /// The hub missed batches (its bus queue was full): offer every routed tag's current value,
    /// so no client is left with a stale one.
    fn resync(&mut self) {
        self.counters.hub_resyncs.fetch_add(1, Ordering::Relaxed);
        tracing::warn!("the live API fell behind the tag bus; re-reading current values");
        let now = Instant::now();
        for c in self.clients.values() {
            for t in &c.tags {
                if let Some(s) = self.rt.bus.current(*t) {
                    c.shared.offer(&s, now);
                }
            }
        }
    }

    fn fan_out(&self, batch: &[Sample]) {
        let now = Instant::now();
        for s in batch {
            let Some(ids) = self.routes.get(s.tag.index()) else {
                continue;
            };
            for id in ids {
                if let Some(c) = self.clients.get(id) {
                    c.shared.offer(s, now);
                }
            }
        }
    }
}

/// (in `old` only, in `new` only) of two sorted lists.
fn diff(old: &[TagId], new: &[TagId]) -> (Vec<TagId>, Vec<TagId>) {
    let (mut i, mut j) = (0, 0);
    let (mut removed, mut added) = (Vec::new(), Vec::new());
    while i < old.len() || j < new.len() {
        match (old.get(i), new.get(j)) {
            (Some(a), Some(b)) if a == b => {
                i += 1;
                j += 1;
            }
            (Some(a), Some(b)) if a < b => {
                removed.push(*a);
                i += 1;
            }
            (Some(_), Some(b)) => {
                added.push(*b);
                j += 1;
            }
            (Some(a), None) => {
                removed.push(*a);
                i += 1;
            }
            (None, Some(b)) => {
                added.push(*b);
                j += 1;
            }
            (None, None) => break,
        }
    }
    (removed, added)
}

// ---- messages sent ---------------------------------------------------------------------------

#[derive(Serialize)]
struct LimitsJson {
    max_tags: usize,
    max_subscriptions: usize,
    max_events_queued: usize,
    max_message_size: usize,
    ping_interval_s: u64,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum OutMsg<'a> {
    Ready {
        user: Option<&'a str>,
        limits: LimitsJson,
    },
    Snapshot {
        id: Option<&'a ReqId>,
        tags: Vec<TagJson<'a>>,
        more: bool,
    },
    Samples {
        samples: Vec<SampleJson<'a>>,
    },
    Tags {
        tags: Vec<TagJson<'a>>,
    },
    Event {
        event: EventJson<'a>,
    },
    Dropped {
        events: u64,
    },
    Unsubscribed {
        id: Option<&'a ReqId>,
        tags: usize,
        subscriptions: usize,
    },
    Pong {
        id: Option<&'a ReqId>,
    },
    Error {
        id: Option<&'a ReqId>,
        code: &'a str,
        message: &'a str,
    },
}

fn to_text(m: &OutMsg<'_>) -> String {
    // Serialising these types cannot fail: string keys, no maps with other keys.
    serde_json::to_string(m).unwrap_or_else(|e| {
        tracing::error!(error = %e, "cannot encode a live API message");
        String::from(r#"{"type":"error","id":null,"code":"internal","message":"encoding failed"}"#)
    })
}

fn error_text(id: Option<&ReqId>, code: &str, message: &str) -> String {
    to_text(&OutMsg::Error { id, code, message })
}

// ---- the connection --------------------------------------------------------------------------

/// How a connection proved who it is, kept to re-check it.
enum Auth {
    /// The API runs without security (router tests): everything is allowed.
    Open,
    Token {
        sec: Arc<Security>,
        token: String,
        identity: Identity,
    },
}

/// Why a connection ends.
enum End {
    /// The client closed or the socket failed.
    Gone,
    /// Send a close frame, then end.
    Close(u16, String),
    /// The client stopped reading: nothing more can be sent.
    WriteTimeout,
}

struct Session {
    rt: Arc<Runtime>,
    settings: LiveSettings,
    hub: mpsc::UnboundedSender<Ctl>,
    shared: Arc<ClientShared>,
    auth: Auth,
    source: IpAddr,
    access: TagAccess,
    security_events: bool,
    tag_patterns: Vec<TagPath>,
    event_patterns: Vec<EventPattern>,
    /// When the next sample message may go.
    next_flush: Instant,
}

/// Detaches the client from the hub however the connection ends.
struct Detach {
    hub: mpsc::UnboundedSender<Ctl>,
    id: u64,
}

impl Drop for Detach {
    fn drop(&mut self) {
        let _ = self.hub.send(Ctl::Detach(self.id));
    }
}

/// `GET /api/v1/live`.
pub(crate) async fn upgrade(
    State(st): State<Arc<ApiState>>,
    caller: Option<Extension<Caller>>,
    addr: Option<Extension<ClientAddr>>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let live = st.http.live();
    let source = addr.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |Extension(a)| a.0);
    // Credentials on the upgrade request were checked by the middleware (`caller`); without
    // them, the first message must carry a token.
    let pre: Option<Auth> = match (&st.security, caller) {
        (None, _) => Some(Auth::Open),
        (Some(_), None) => None,
        (Some(sec), Some(Extension(caller))) => {
            let Some(identity) = caller.identity.clone() else {
                return forbidden_upgrade(live, "no identity");
            };
            let token = match (&identity.via, auth::bearer_token(&headers)) {
                (AuthMethod::Token { .. }, Some(t)) => t,
                _ => {
                    live.counters
                        .refused_unauthenticated
                        .fetch_add(1, Ordering::Relaxed);
                    return ApiError::new(
                        StatusCode::UNAUTHORIZED,
                        "bearer_required",
                        "the live API takes a bearer token (an API token, or a session token \
                         from POST /api/v1/login), in `Authorization: Bearer` or in the first \
                         message {\"op\":\"auth\",\"token\":\"...\"}; not a password",
                    )
                    .into_response();
                }
            };
            if let Err(e) = caller.require(Permission::ReadTags) {
                live.counters
                    .refused_forbidden
                    .fetch_add(1, Ordering::Relaxed);
                return e.into_response();
            }
            Some(Auth::Token {
                sec: sec.clone(),
                token,
                identity,
            })
        }
    };
    let ws = match ws {
        Ok(ws) => ws,
        Err(e) => {
            if pre.is_none() {
                live.counters
                    .refused_unauthenticated
                    .fetch_add(1, Ordering::Relaxed);
                if let Some(sec) = &st.security {
                    auth::record_denial(
                        sec,
                        None,
                        "http-api".into(),
                        source,
                        "unauthenticated",
                        &Method::GET,
                        PATH,
                    );
                }
                return ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthenticated",
                    "authentication required: this is the live WebSocket API; open a WebSocket \
                     and send {\"op\":\"auth\",\"token\":\"...\"} first, or send \
                     `Authorization: Bearer <token>` with the upgrade",
                )
                .into_response();
            }
            return ApiError::new(
                StatusCode::UPGRADE_REQUIRED,
                "websocket_required",
                format!(
                    "this is the live API and needs a WebSocket upgrade ({e}); connect to \
                     ws(s)://HOST:PORT{PATH}, protocol in docs/live-api.md"
                ),
            )
            .into_response();
        }
    };
    let Some(slot) = live.admit() else {
        // Audited and logged at most once a minute (a client retrying in a loop must not
        // flood the audit log), with the number refused since.
        let now = Instant::now();
        let report = {
            let mut r = live.limit_reports.lock();
            r.since_last += 1;
            let due = r
                .last
                .is_none_or(|t| now.duration_since(t) >= LIMIT_REPORT_EVERY);
            due.then(|| {
                r.last = Some(now);
                std::mem::take(&mut r.since_last)
            })
        };
        if let Some(refused) = report {
            tracing::warn!(%source, max = live.settings.max_clients, refused, "live API clients refused: limit reached ([http.live] max_clients)");
            if let Some(sec) = &st.security {
                sec.audit.submit(ironplant_security::AuditEvent::AclDenied {
                    principal: None,
                    client_id: "http-api live".into(),
                    source: Some(source.to_string()),
                    action: "api:too_many_live_clients".into(),
                    topic: format!("{refused} live client(s) refused since the last record"),
                });
            }
        }
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_live_clients",
            format!(
                "the live API serves at most {} clients at once; close another one or raise the \
                 limit",
                live.settings.max_clients
            ),
        )
        .into_response();
    };
    let settings = live.settings.clone();
    let hub = live.hub(&st.runtime);
    let shared = Arc::new(ClientShared {
        id: live.next_id.fetch_add(1, Ordering::Relaxed),
        outbox: Mutex::new(Outbox::default()),
        wake: Notify::new(),
        counters: live.counters.clone(),
        max_events: settings.max_events_queued.max(1),
    });
    let rt = st.runtime.clone();
    let security = st.security.clone();
    // The HMI's session cookie, for an in-band `{"op":"auth","csrf":…}`: only from a page of
    // this origin (browsers always send `Origin` on a WebSocket) and without a header token.
    let cookie = (!headers.contains_key(axum::http::header::AUTHORIZATION)
        && crate::session::same_origin(&headers))
    .then(|| crate::session::cookie_token(&headers))
    .flatten();
    ws.protocols([SUBPROTOCOL])
        .max_message_size(settings.max_message_size)
        .max_frame_size(settings.max_message_size)
        .write_buffer_size(0)
        .on_upgrade(move |mut socket| async move {
            let _slot = slot;
            let auth = match pre {
                Some(a) => a,
                None => {
                    let Some(sec) = security else { return };
                    let auth = auth_in_band(
                        &mut socket,
                        &sec,
                        &settings,
                        &shared.counters,
                        source,
                        cookie,
                    )
                    .await;
                    match auth {
                        Some(a) => a,
                        None => return,
                    }
                }
            };
            let timeout = settings.write_timeout;
            match Session::new(rt, settings, hub, shared, auth, source).await {
                Ok(session) => session.serve(socket).await,
                Err(End::Close(code, reason)) => {
                    send_close(&mut socket, code, &reason, timeout).await;
                }
                Err(End::Gone | End::WriteTimeout) => {}
            }
        })
}

fn forbidden_upgrade(live: &Live, why: &str) -> Response {
    live.counters
        .refused_forbidden
        .fetch_add(1, Ordering::Relaxed);
    ApiError::new(StatusCode::FORBIDDEN, "forbidden", why.to_owned()).into_response()
}

async fn send_text(socket: &mut WebSocket, text: String, timeout: Duration) {
    let _ = tokio::time::timeout(timeout, socket.send(Message::Text(text.into()))).await;
}

async fn send_close(socket: &mut WebSocket, code: u16, reason: &str, timeout: Duration) {
    // A close reason is at most 123 bytes (RFC 6455 §5.5).
    let mut reason = reason.to_owned();
    while reason.len() > 123 {
        reason.pop();
    }
    let frame = Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from(reason),
    }));
    let _ = tokio::time::timeout(timeout, socket.send(frame)).await;
}

/// Waits for `{"op":"auth","token":...}` and checks it; on failure tells the client why and
/// closes with 1008.
async fn auth_in_band(
    socket: &mut WebSocket,
    sec: &Arc<Security>,
    settings: &LiveSettings,
    counters: &Counters,
    source: IpAddr,
    cookie: Option<String>,
) -> Option<Auth> {
    let refuse = |code: &'static str| {
        counters
            .refused_unauthenticated
            .fetch_add(1, Ordering::Relaxed);
        auth::record_denial(
            sec,
            None,
            "http-api live".into(),
            source,
            code,
            &Method::GET,
            PATH,
        );
    };
    let first = tokio::time::timeout(settings.auth_timeout, socket.recv()).await;
    let text = match first {
        Ok(Some(Ok(Message::Text(t)))) => t,
        Ok(Some(Ok(_))) | Ok(Some(Err(_))) | Ok(None) | Err(_) => {
            refuse("unauthenticated");
            let msg = format!(
                "authenticate first: send {{\"op\":\"auth\",\"token\":\"...\"}} as a text message \
                 within {}s of connecting",
                settings.auth_timeout.as_secs().max(1)
            );
            send_text(
                socket,
                error_text(None, "unauthenticated", &msg),
                settings.write_timeout,
            )
            .await;
            send_close(
                socket,
                1008,
                "authentication required",
                settings.write_timeout,
            )
            .await;
            return None;
        }
    };
    let req = parse_request(&text);
    let (id, token) = match req {
        Ok(Request {
            op,
            id,
            token: Some(token),
            csrf: None,
            ..
        }) if op == "auth" => (id, token),
        // The HMI: the session cookie of the upgrade, unlocked by its CSRF token.
        Ok(Request {
            op,
            id,
            token: None,
            csrf: Some(csrf),
            ..
        }) if op == "auth"
            && cookie
                .as_deref()
                .is_some_and(|c| crate::session::csrf_matches(c, &csrf)) =>
        {
            (id, cookie.unwrap_or_default())
        }
        _ => {
            refuse("unauthenticated");
            send_text(
                socket,
                error_text(
                    None,
                    "unauthenticated",
                    "the first message must be {\"op\":\"auth\",\"token\":\"...\"} with an API \
                     token or a session token from POST /api/v1/login (or, from the HMI's own \
                     page with its session cookie, {\"op\":\"auth\",\"csrf\":\"...\"})",
                ),
                settings.write_timeout,
            )
            .await;
            send_close(
                socket,
                1008,
                "authentication required",
                settings.write_timeout,
            )
            .await;
            return None;
        }
    };
    let s = sec.clone();
    let t = token.clone();
    let checked = tokio::task::spawn_blocking(move || auth::verify_bearer(&s, &t)).await;
    let refusal = match checked {
        Ok(Ok((identity, _))) if identity.role.allows(Permission::ReadTags) => {
            return Some(Auth::Token {
                sec: sec.clone(),
                token,
                identity,
            });
        }
        Ok(Ok((identity, _))) => {
            counters.refused_forbidden.fetch_add(1, Ordering::Relaxed);
            auth::record_denial(
                sec,
                Some(identity.user.clone()),
                "http-api live".into(),
                source,
                "forbidden",
                &Method::GET,
                PATH,
            );
            (
                "forbidden",
                format!(
                    "your role {} does not have the permission read_tags the live API needs",
                    identity.role
                ),
            )
        }
        Ok(Err(BearerError::Token(e))) => {
            refuse("unauthenticated");
            ("unauthenticated", e.to_string())
        }
        Ok(Err(BearerError::Scopes(e))) => {
            tracing::error!(error = %e, "cannot read the API tag scopes; refusing a live client");
            (
                "security_error",
                "the access rules cannot be read; see the server log".to_owned(),
            )
        }
        Err(e) => {
            tracing::error!(error = %e, "live API authentication task failed");
            ("internal", "authentication failed unexpectedly".to_owned())
        }
    };
    send_text(
        socket,
        error_text(id.as_ref(), refusal.0, &refusal.1),
        settings.write_timeout,
    )
    .await;
    send_close(socket, 1008, &refusal.1, settings.write_timeout).await;
    None
}

impl Session {
    async fn new(
        rt: Arc<Runtime>,
        settings: LiveSettings,
        hub: mpsc::UnboundedSender<Ctl>,
        shared: Arc<ClientShared>,
        auth: Auth,
        source: IpAddr,
    ) -> Result<Session, End> {
        let mut s = Session {
            rt,
            next_flush: Instant::now(),
            settings,
            hub,
            shared,
            auth,
            source,
            access: TagAccess::unrestricted(),
            security_events: true,
            tag_patterns: Vec::new(),
            event_patterns: Vec::new(),
        };
        // The scopes as of now (the middleware's are from the upgrade request).
        s.recheck().await?;
        Ok(s)
    }

    fn user(&self) -> Option<&str> {
        match &self.auth {
            Auth::Open => None,
            Auth::Token { identity, .. } => Some(&identity.user),
        }
    }

    /// Re-verifies the token and re-reads the scopes. `Ok(true)` when the access changed.
    async fn recheck(&mut self) -> Result<bool, End> {
        let Auth::Token {
            sec,
            token,
            identity,
        } = &mut self.auth
        else {
            return Ok(false);
        };
        let (s, t) = (sec.clone(), token.clone());
        let checked = tokio::task::spawn_blocking(move || auth::verify_bearer(&s, &t)).await;
        let (id, access) = match checked {
            Ok(Ok(r)) => r,
            Ok(Err(BearerError::Token(e))) => {
                self.shared
                    .counters
                    .closed_revoked
                    .fetch_add(1, Ordering::Relaxed);
                return Err(End::Close(
                    1008,
                    format!("{e}; connect again with a valid token"),
                ));
            }
            Ok(Err(BearerError::Scopes(e))) => {
                tracing::error!(error = %e, "cannot read the API tag scopes; closing a live client");
                return Err(End::Close(
                    1011,
                    "the access rules cannot be read; see the server log".into(),
                ));
            }
            Err(e) => {
                tracing::error!(error = %e, "live API authentication task failed");
                return Err(End::Close(
                    1011,
                    "authentication failed unexpectedly".into(),
                ));
            }
        };
        if !id.role.allows(Permission::ReadTags) {
            self.shared
                .counters
                .closed_revoked
                .fetch_add(1, Ordering::Relaxed);
            return Err(End::Close(
                1008,
                format!(
                    "your role {} no longer has the permission read_tags",
                    id.role
                ),
            ));
        }
        let security_events = id.role.allows(Permission::ReadAudit);
        *identity = id;
        let changed = access != self.access || security_events != self.security_events;
        self.access = access;
        self.security_events = security_events;
        Ok(changed)
    }

    fn view(&self, tags: Vec<TagPath>, events: Vec<EventPattern>) -> View {
        View {
            tags,
            events,
            access: self.access.clone(),
            security_events: self.security_events,
            max_tags: self.settings.max_tags_per_client,
        }
    }

    fn error(&self, id: Option<&ReqId>, code: &str, message: &str) {
        self.shared
            .push_control(Control::Text(error_text(id, code, message)));
    }

    /// Records a forbidden subscription in the audit log, like a REST 403.
    fn deny(&self, what: &str) {
        self.shared
            .counters
            .refused_forbidden
            .fetch_add(1, Ordering::Relaxed);
        if let Auth::Token { sec, identity, .. } = &self.auth {
            let client = match &identity.via {
                AuthMethod::Token { id } => format!("http-api live token:{id}"),
                _ => "http-api live".to_owned(),
            };
            auth::record_denial(
                sec,
                Some(identity.user.clone()),
                client,
                self.source,
                "forbidden",
                &Method::GET,
                &format!("{PATH} subscribe {what}"),
            );
        }
    }

    /// Sends the hub the routes of `view` (scanning the namespace) and waits until they are in
    /// place. `snapshot`: which of them get a snapshot.
    async fn route(
        &mut self,
        view: View,
        tags: Vec<TagId>,
        scanned: usize,
        snapshot: Snap,
    ) -> Result<Routed, End> {
        let (done, rx) = oneshot::channel();
        let routes = Routes {
            client: self.shared.id,
            tags,
            scanned,
            snapshot,
            view,
            done,
        };
        if self.hub.send(Ctl::Routes(Box::new(routes))).is_err() {
            return Err(End::Close(1011, "the live hub stopped".into()));
        }
        match rx.await {
            Ok(r) => Ok(r),
            Err(_) => Err(End::Close(1011, "the live hub stopped".into())),
        }
    }

    /// The namespace's tags `view` wants (sorted) and the namespace length they come from.
    fn scan(&self, view: &View) -> (Vec<TagId>, usize) {
        let ns = self.rt.namespace.read();
        (view.scan(&ns, 0), ns.len())
    }

    async fn handle_text(&mut self, text: &str) -> Result<(), End> {
        let req = match parse_request(text) {
            Ok(r) => r,
            Err(msg) => {
                self.error(None, "bad_request", &msg);
                return Ok(());
            }
        };
        match req.op.as_str() {
            "subscribe" => self.subscribe(req).await,
            "unsubscribe" => self.unsubscribe(req).await,
            "ping" => {
                let text = to_text(&OutMsg::Pong {
                    id: req.id.as_ref(),
                });
                self.shared.push_control(Control::Text(text));
                Ok(())
            }
            "auth" => {
                self.error(
                    req.id.as_ref(),
                    "already_authenticated",
                    "this connection is already authenticated; to use another token, open a \
                     new connection",
                );
                Ok(())
            }
            other => {
                let mut op: String = other.chars().take(32).collect();
                if op.len() < other.len() {
                    op.push('…');
                }
                self.error(
                    req.id.as_ref(),
                    "unknown_op",
                    &format!(
                        "unknown op {op:?}; expected subscribe, unsubscribe or ping, e.g. \
                         {EXAMPLE}"
                    ),
                );
                Ok(())
            }
        }
    }

    async fn subscribe(&mut self, req: Request) -> Result<(), End> {
        let id = req.id;
        let tags_in = req.tags.unwrap_or_default();
        let events_in = req.events.unwrap_or_default();
        if tags_in.is_empty() && events_in.is_empty() {
            self.error(
                id.as_ref(),
                "bad_request",
                &format!("subscribe needs \"tags\" or \"events\", e.g. {EXAMPLE}"),
            );
            return Ok(());
        }
        // Credentials and scopes as they are now, not as at the upgrade.
        if self.recheck().await? {
            self.reroute().await?;
        }
        let mut new_tags = Vec::new();
        for p in &tags_in {
            let path = match TagPath::parse(p.trim_end_matches('/')) {
                Ok(path) => path,
                Err(e) => {
                    self.error(
                        id.as_ref(),
                        "bad_path",
                        &format!(
                            "{:?} in \"tags\" is not a tag path: {e}; give whole levels, e.g. \
                             \"acme/lyon/line1\" (everything below it) or a full tag path",
                            clip(p)
                        ),
                    );
                    return Ok(());
                }
            };
            if !self.access.can_see_asset(path.as_str()) {
                self.deny(path.as_str());
                self.error(
                    id.as_ref(),
                    "forbidden",
                    &format!(
                        "you may not read {:?}: it is outside the tag prefixes you are limited \
                         to; subscribe to a prefix inside them",
                        path.as_str()
                    ),
                );
                return Ok(());
            }
            new_tags.push(path);
        }
        let mut new_events = Vec::new();
        for p in &events_in {
            let pat = match EventPattern::parse(p) {
                Ok(pat) => pat,
                Err(msg) => {
                    self.error(id.as_ref(), "bad_event", &clip_msg(msg));
                    return Ok(());
                }
            };
            if pat.kind == Some(EventKind::Security) && !self.security_events {
                self.deny(&pat.text);
                self.error(
                    id.as_ref(),
                    "forbidden",
                    "security events need the permission read_audit, which your role does not \
                     have",
                );
                return Ok(());
            }
            if let Some(s) = &pat.subject {
                if !self.access.can_see_asset(s.as_str()) {
                    self.deny(&pat.text);
                    self.error(
                        id.as_ref(),
                        "forbidden",
                        &format!(
                            "you may not read events about {:?}: it is outside the tag prefixes \
                             you are limited to",
                            s.as_str()
                        ),
                    );
                    return Ok(());
                }
            }
            new_events.push(pat);
        }
        let mut tag_patterns = self.tag_patterns.clone();
        for p in &new_tags {
            if !tag_patterns.contains(p) {
                tag_patterns.push(p.clone());
            }
        }
        let mut event_patterns = self.event_patterns.clone();
        for p in &new_events {
            if !event_patterns.contains(p) {
                event_patterns.push(p.clone());
            }
        }
        let max = self.settings.max_subscriptions_per_client;
        if tag_patterns.len() + event_patterns.len() > max {
            self.error(
                id.as_ref(),
                "too_many_subscriptions",
                &format!(
                    "a connection holds at most {max} tag and event subscriptions; unsubscribe \
                     some or subscribe to a common prefix"
                ),
            );
            return Ok(());
        }
        let view = self.view(tag_patterns.clone(), event_patterns.clone());
        let (tags, scanned) = self.scan(&view);
        let max_tags = self.settings.max_tags_per_client;
        if tags.len() > max_tags {
            self.error(
                id.as_ref(),
                "too_many_tags",
                &format!(
                    "these subscriptions cover {} tags; a connection may follow at most \
                     {max_tags}; subscribe to narrower prefixes",
                    tags.len()
                ),
            );
            return Ok(());
        }
        // The snapshot: the tags this request names (also those already followed).
        let snap: Vec<TagId> = {
            let ns = self.rt.namespace.read();
            tags.iter()
                .copied()
                .filter(|t| {
                    ns.tag(*t)
                        .is_some_and(|m| new_tags.iter().any(|p| m.path.is_under(p)))
                })
                .collect()
        };
        self.route(view, tags, scanned, Snap::Tags(id, snap))
            .await?;
        self.tag_patterns = tag_patterns;
        self.event_patterns = event_patterns;
        Ok(())
    }

    async fn unsubscribe(&mut self, req: Request) -> Result<(), End> {
        let id = req.id;
        match (&req.tags, &req.events) {
            (None, None) => {
                self.tag_patterns.clear();
                self.event_patterns.clear();
            }
            (tags, events) => {
                for p in tags.iter().flatten() {
                    let p = p.trim_end_matches('/');
                    self.tag_patterns.retain(|t| t.as_str() != p);
                }
                for p in events.iter().flatten() {
                    self.event_patterns.retain(|e| e.text != *p);
                }
            }
        }
        let view = self.view(self.tag_patterns.clone(), self.event_patterns.clone());
        let (tags, scanned) = self.scan(&view);
        let routed = self.route(view, tags, scanned, Snap::None).await?;
        let text = to_text(&OutMsg::Unsubscribed {
            id: id.as_ref(),
            tags: routed.tags,
            subscriptions: self.tag_patterns.len() + self.event_patterns.len(),
        });
        self.shared.push_control(Control::Text(text));
        Ok(())
    }

    /// After a change of scopes: routes what the patterns cover now; newly visible tags get a
    /// snapshot, the client is told how many are no longer sent.
    async fn reroute(&mut self) -> Result<(), End> {
        let view = self.view(self.tag_patterns.clone(), self.event_patterns.clone());
        let (tags, scanned) = self.scan(&view);
        let r = self.route(view, tags, scanned, Snap::Added).await?;
        if r.removed > 0 || r.added > 0 {
            self.error(
                None,
                "scope_changed",
                &format!(
                    "your tag scopes changed: {} subscribed tag(s) are no longer sent, {} are \
                     now included (their values came in a snapshot with id null)",
                    r.removed, r.added
                ),
            );
        }
        Ok(())
    }

    /// The next message due, if any: control messages first (snapshots before the changes
    /// that follow them), then births, then samples (at most once per flush interval), then
    /// events.
    fn next_due(&mut self, now: Instant) -> Option<Message> {
        let max = self.settings.max_samples_per_message.max(1);
        let mut o = self.shared.outbox.lock();
        if let Some(c) = o.control.pop_front() {
            match c {
                Control::Text(t) => return Some(Message::Text(t.into())),
                Control::Snapshot { id, mut tags } => {
                    let rest = (tags.len() > max).then(|| tags.split_off(max));
                    let more = rest.is_some();
                    if let Some(rest) = rest {
                        o.control.push_front(Control::Snapshot {
                            id: id.clone(),
                            tags: rest,
                        });
                    }
                    drop(o);
                    let ns = self.rt.namespace.read();
                    let json: Vec<TagJson<'_>> = tags
                        .iter()
                        .filter_map(|(t, s)| Some(TagJson::new(ns.tag(*t)?, s.as_ref())))
                        .collect();
                    return Some(Message::Text(
                        to_text(&OutMsg::Snapshot {
                            id: id.as_ref(),
                            tags: json,
                            more,
                        })
                        .into(),
                    ));
                }
            }
        }
        if !o.born.is_empty() {
            let n = o.born.len().min(max);
            let born: Vec<TagId> = o.born.drain(..n).collect();
            drop(o);
            let current: Vec<Option<Sample>> =
                born.iter().map(|t| self.rt.bus.current(*t)).collect();
            let ns = self.rt.namespace.read();
            let json: Vec<TagJson<'_>> = born
                .iter()
                .zip(&current)
                .filter_map(|(t, s)| Some(TagJson::new(ns.tag(*t)?, s.as_ref())))
                .collect();
            return Some(Message::Text(to_text(&OutMsg::Tags { tags: json }).into()));
        }
        let mut samples = Vec::new();
        if !o.order.is_empty() && now >= self.next_flush {
            samples.reserve(o.order.len().min(max));
            while samples.len() < max {
                let Some(t) = o.order.pop_front() else { break };
                if let Some(s) = o.latest.remove(&t) {
                    samples.push(s);
                }
            }
        }
        // Entries of unrouted tags leave `order` without a sample; events may still be due.
        if !samples.is_empty() {
            drop(o);
            self.next_flush = now + self.settings.flush_interval;
            let ns = self.rt.namespace.read();
            let json: Vec<SampleJson<'_>> = samples
                .iter()
                .filter_map(|s| Some(SampleJson::new(Some(&ns.tag(s.tag)?.path), s)))
                .collect();
            self.shared
                .counters
                .samples_sent
                .fetch_add(json.len() as u64, Ordering::Relaxed);
            return Some(Message::Text(
                to_text(&OutMsg::Samples { samples: json }).into(),
            ));
        }
        if o.events_dropped > 0 {
            let n = std::mem::take(&mut o.events_dropped);
            return Some(Message::Text(
                to_text(&OutMsg::Dropped { events: n }).into(),
            ));
        }
        if let Some(e) = o.events.pop_front() {
            drop(o);
            self.shared
                .counters
                .events_sent
                .fetch_add(1, Ordering::Relaxed);
            return Some(Message::Text(
                to_text(&OutMsg::Event {
                    event: EventJson::new(&e),
                })
                .into(),
            ));
        }
        None
    }

    /// When samples are waiting for the flush interval: the time they may go.
    fn flush_deadline(&self) -> Option<Instant> {
        (!self.shared.outbox.lock().order.is_empty()).then_some(self.next_flush)
    }

    async fn send(&self, socket: &mut WebSocket, msg: Message) -> Result<(), End> {
        match tokio::time::timeout(self.settings.write_timeout, socket.send(msg)).await {
            Ok(Ok(())) => {
                self.shared
                    .counters
                    .messages_sent
                    .fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Ok(Err(_)) => Err(End::Gone),
            Err(_) => {
                self.shared
                    .counters
                    .closed_write_timeout
                    .fetch_add(1, Ordering::Relaxed);
                Err(End::WriteTimeout)
            }
        }
    }

    async fn serve(mut self, mut socket: WebSocket) {
        if self.hub.send(Ctl::Attach(self.shared.clone())).is_err() {
            tracing::error!("the live hub has stopped; refusing a live client");
            let t = self.settings.write_timeout;
            send_close(&mut socket, 1011, "the live hub stopped", t).await;
            return;
        }
        let _detach = Detach {
            hub: self.hub.clone(),
            id: self.shared.id,
        };
        tracing::debug!(user = ?self.user(), source = %self.source, "live client connected");
        let ready = to_text(&OutMsg::Ready {
            user: self.user(),
            limits: LimitsJson {
                max_tags: self.settings.max_tags_per_client,
                max_subscriptions: self.settings.max_subscriptions_per_client,
                max_events_queued: self.settings.max_events_queued,
                max_message_size: self.settings.max_message_size,
                ping_interval_s: self.settings.ping_interval.as_secs(),
            },
        });
        self.shared.push_control(Control::Text(ready));
        let Err(end) = self.run(&mut socket).await;
        match end {
            End::Close(code, reason) => {
                tracing::debug!(code, %reason, "closing a live client");
                send_close(&mut socket, code, &reason, self.settings.write_timeout).await;
            }
            End::Gone => {}
            End::WriteTimeout => {
                tracing::info!(source = %self.source, "live client stopped reading; closed");
            }
        }
    }

    async fn run(&mut self, socket: &mut WebSocket) -> Result<std::convert::Infallible, End> {
        let ping_every = self.settings.ping_interval.max(Duration::from_millis(10));
        let mut last_seen = Instant::now();
        let mut next_ping = last_seen + ping_every;
        let mut next_recheck = last_seen + self.settings.recheck_interval;
        loop {
            // Send what is due, a few messages at a time so requests are read in between.
            for _ in 0..16 {
                let Some(msg) = self.next_due(Instant::now()) else {
                    break;
                };
                self.send(socket, msg).await?;
            }
            let mut deadline = next_ping.min(next_recheck);
            if let Some(f) = self.flush_deadline() {
                deadline = deadline.min(f);
            }
            tokio::select! {
                m = socket.recv() => {
                    last_seen = Instant::now();
                    match m {
                        None => return Err(End::Gone),
                        Some(Ok(Message::Text(t))) => self.handle_text(&t).await?,
                        Some(Ok(Message::Binary(_))) => self.error(
                            None,
                            "text_only",
                            "the live API speaks JSON in text messages; binary messages are \
                             not understood",
                        ),
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                        Some(Ok(Message::Close(_))) => return Err(End::Gone),
                        Some(Err(e)) => {
                            let e = e.into_inner();
                            return match e.downcast_ref::<tokio_tungstenite::tungstenite::Error>() {
                                Some(tokio_tungstenite::tungstenite::Error::Capacity(_)) => {
                                    Err(End::Close(1009, format!(
                                        "message larger than {} bytes",
                                        self.settings.max_message_size
                                    )))
                                }
                                _ => Err(End::Gone),
                            };
                        }
                    }
                }
                _ = self.shared.wake.notified() => {}
                _ = tokio::time::sleep_until(deadline) => {}
            }
            let now = Instant::now();
            if now >= next_ping {
                if now.duration_since(last_seen) > 2 * ping_every {
                    self.shared
                        .counters
                        .closed_ping_timeout
                        .fetch_add(1, Ordering::Relaxed);
                    return Err(End::Close(1001, "no answer to pings; reconnect".into()));
                }
                self.send(socket, Message::Ping(Default::default())).await?;
                next_ping = now + ping_every;
            }
            if now >= next_recheck {
                next_recheck = now + self.settings.recheck_interval;
                if self.recheck().await? {
                    self.reroute().await?;
                }
            }
        }
    }
}

fn clip(s: &str) -> String {
    let mut out: String = s.chars().take(64).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

fn clip_msg(s: String) -> String {
    if s.len() <= 300 {
        return s;
    }
    let mut out: String = s.chars().take(300).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ironplant_core::{Quality, Value};

    fn sample(tag: u32, v: i64, ts: i64) -> Sample {
        Sample {
            tag: TagId(tag),
            value: Value::Int(v),
            quality: Quality::GOOD,
            source_ts: Timestamp(ts),
            server_ts: Timestamp(ts),
        }
    }

    fn client() -> ClientShared {
        ClientShared {
            id: 1,
            outbox: Mutex::new(Outbox::default()),
            wake: Notify::new(),
            counters: Arc::default(),
            max_events: 3,
        }
    }

    #[test]
    fn the_outbox_keeps_the_latest_sample_per_tag_in_first_dirty_order() {
        let c = client();
        let now = Instant::now();
        for v in 0..100 {
            c.offer(&sample(7, v, v), now);
            c.offer(&sample(3, -v, v), now);
        }
        let o = c.outbox.lock();
        assert_eq!(
            o.order.iter().copied().collect::<Vec<_>>(),
            [TagId(7), TagId(3)]
        );
        assert_eq!(o.latest.len(), 2, "memory is one sample per tag");
        assert_eq!(o.latest[&TagId(7)].value, Value::Int(99));
        assert_eq!(o.latest[&TagId(3)].value, Value::Int(-99));
        assert_eq!(c.counters.coalesced.load(Ordering::Relaxed), 198);
    }

    #[test]
    fn a_floor_holds_back_values_older_than_the_snapshot_until_it_expires() {
        let c = client();
        let now = Instant::now();
        {
            let mut o = c.outbox.lock();
            o.floors.insert(TagId(1), Timestamp(50));
            o.floors_until = Some(now + FLOOR_TTL);
        }
        c.offer(&sample(1, 1, 40), now);
        assert!(c.outbox.lock().latest.is_empty(), "older than the snapshot");
        c.offer(&sample(1, 2, 60), now);
        c.offer(&sample(1, 3, 45), now);
        assert_eq!(
            c.outbox.lock().latest[&TagId(1)].value,
            Value::Int(3),
            "the floor is lifted by the first newer sample (a clock step back is not muted)"
        );
        let mut o = c.outbox.lock();
        o.floors.insert(TagId(2), Timestamp(50));
        o.floors_until = Some(now);
        drop(o);
        c.offer(&sample(2, 1, 10), now + Duration::from_millis(1));
        assert!(
            c.outbox.lock().latest.contains_key(&TagId(2)),
            "expired floor"
        );
    }

    #[test]
    fn events_beyond_the_limit_drop_the_oldest_and_count() {
        let c = client();
        for i in 0..5 {
            c.push_event(Arc::new(Event::new(
                Timestamp(i),
                EventKind::System,
                "x",
                "test",
                "m",
            )));
        }
        let o = c.outbox.lock();
        assert_eq!(o.events_dropped, 2);
        assert_eq!(
            o.events.iter().map(|e| e.ts.0).collect::<Vec<_>>(),
            [2, 3, 4]
        );
    }

    #[tokio::test]
    async fn a_hub_that_fell_behind_the_bus_re_reads_the_current_values() {
        let cfg = crate::settings::parse("t.toml", "").expect("empty config");
        let rt = Arc::new(Runtime::build(&cfg, None).expect("runtime"));
        let tags: Vec<TagId> = (0..3)
            .map(|i| {
                rt.register_tag(ironplant_core::TagMeta {
                    id: TagId(0),
                    path: TagPath::parse(&format!("a/b/t{i}")).expect("path"),
                    value_type: ironplant_core::ValueType::Int,
                    unit: None,
                    description: String::new(),
                    range: None,
                    writable: false,
                    device: None,
                })
                .expect("register")
            })
            .collect();
        let counters = Arc::new(Counters::default());
        // A queue of one batch: the hub cannot keep up with a burst.
        let hub = Hub::spawn_with(rt.clone(), counters.clone(), 1);
        let shared = Arc::new(client());
        hub.send(Ctl::Attach(shared.clone())).expect("hub");
        let (done, rx) = oneshot::channel();
        let routes = Routes {
            client: shared.id,
            tags: tags.clone(),
            scanned: rt.namespace.len(),
            snapshot: Snap::None,
            view: View::default(),
            done,
        };
        hub.send(Ctl::Routes(Box::new(routes))).expect("hub");
        assert_eq!(rx.await.expect("routed").tags, 3);
        // On this single-threaded runtime the hub does not run during the burst (a
        // `DropNewest` publish never waits): all but the first batch are dropped for it.
        for v in 0..50 {
            rt.bus
                .publish(tags.iter().map(|t| sample(t.0, v, v)).collect())
                .await;
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let latest: Vec<Option<Value>> = {
                let o = shared.outbox.lock();
                tags.iter()
                    .map(|t| o.latest.get(t).map(|s| s.value.clone()))
                    .collect()
            };
            if latest.iter().all(|v| *v == Some(Value::Int(49))) {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{latest:?}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(counters.hub_resyncs.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn messages_have_the_documented_shapes() {
        let path = TagPath::parse("acme/lyon/line1/t").expect("path");
        let s = Sample {
            tag: TagId(0),
            value: Value::Float(1.5),
            quality: Quality::GOOD,
            source_ts: Timestamp(1_000_000),
            server_ts: Timestamp(1_000_250),
        };
        let id = ReqId::Int(3);
        assert_eq!(
            to_text(&OutMsg::Samples {
                samples: vec![SampleJson::new(Some(&path), &s)]
            }),
            r#"{"type":"samples","samples":[{"path":"acme/lyon/line1/t","value":1.5,"quality":"Good","quality_reason":null,"ts":"1970-01-01T00:00:01.000000Z","server_ts":"1970-01-01T00:00:01.000250Z"}]}"#
        );
        assert_eq!(
            error_text(Some(&id), "bad_path", "why and how"),
            r#"{"type":"error","id":3,"code":"bad_path","message":"why and how"}"#
        );
        assert_eq!(
            to_text(&OutMsg::Dropped { events: 4 }),
            r#"{"type":"dropped","events":4}"#
        );
        assert_eq!(
            to_text(&OutMsg::Pong {
                id: Some(&ReqId::Str("p".into()))
            }),
            r#"{"type":"pong","id":"p"}"#
        );
        assert_eq!(
            to_text(&OutMsg::Unsubscribed {
                id: None,
                tags: 2,
                subscriptions: 1
            }),
            r#"{"type":"unsubscribed","id":null,"tags":2,"subscriptions":1}"#
        );
        let e = Event::new(Timestamp(0), EventKind::Alarm, "raised", "alarms", "high")
            .with_subject(path.clone())
            .with_attribute("limit", Value::Int(80));
        assert_eq!(
            to_text(&OutMsg::Event {
                event: EventJson::new(&e)
            }),
            r#"{"type":"event","event":{"ts":"1970-01-01T00:00:00.000000Z","kind":"alarm","code":"raised","severity":"info","subject":"acme/lyon/line1/t","source":"alarms","actor":null,"message":"high","attributes":{"limit":80}}}"#
        );
    }

    #[test]
    fn timers_are_clamped() {
        let live = Live::new(LiveSettings {
            ping_interval: Duration::from_secs(u64::MAX / 4),
            ..LiveSettings::default()
        });
        assert_eq!(live.settings().ping_interval, MAX_TIMER);
        assert_eq!(
            live.settings().flush_interval,
            LiveSettings::default().flush_interval
        );
    }

    #[test]
    fn diff_of_sorted_lists() {
        let t = |v: &[u32]| v.iter().map(|i| TagId(*i)).collect::<Vec<_>>();
        assert_eq!(
            diff(&t(&[1, 2, 4, 7]), &t(&[2, 3, 7, 9])),
            (t(&[1, 4]), t(&[3, 9]))
        );
        assert_eq!(diff(&[], &t(&[1])), (vec![], t(&[1])));
    }

    #[test]
    fn event_patterns_parse_and_match() {
        let p = EventPattern::parse("alarm:acme/lyon").expect("valid");
        let path = |s: &str| TagPath::parse(s).expect("path");
        let e = Event::new(Timestamp(0), EventKind::Alarm, "raised", "t", "m")
            .with_subject(path("acme/lyon/line1/temp"));
        assert!(p.matches(&e));
        assert!(!p.matches(&e.clone().with_subject(path("acme/lyonnais"))));
        assert!(!EventPattern::parse("system").expect("valid").matches(&e));
        assert!(EventPattern::parse("*").expect("valid").matches(&e));
        let err = EventPattern::parse("alarms").expect_err("unknown kind");
        assert!(err.contains("expected one of alarm"), "{err}");
        let err = EventPattern::parse("alarm:a//b").expect_err("bad subject");
        assert!(err.contains("KIND:PREFIX"), "{err}");
    }

    #[test]
    fn request_errors_never_quote_the_message() {
        let err = parse_request(r#"{"op":"auth","token":12345678}"#).expect_err("bad type");
        assert!(!err.contains("12345678"), "{err}");
        let err = parse_request(r#"{"op":"auth","tokn":"ipt_secret"}"#).expect_err("unknown");
        assert!(err.contains("unknown field `tokn`"), "{err}");
        assert!(!err.contains("ipt_secret"), "{err}");
        let err = parse_request(r#"{"op":"auth","token":"ipt_sec"#).expect_err("truncated");
        assert!(!err.contains("ipt_sec"), "{err}");
        assert!(err.contains("line 1"), "{err}");
    }
}
