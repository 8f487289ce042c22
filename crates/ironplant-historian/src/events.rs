//! The event store: every [`Event`] of the platform, durable, queryable by time range, subject
//! (asset) prefix, kind and code, newest or oldest first, paged with a cursor.
//!
//! One redb file (`events.redb`, 0600 in the historian's 0700 directory). Tables:
//! - `events`: `(ts µs, seq)` → the encoded event (the primary order: time, then arrival);
//! - `by_subject`: `(prefix, ts, seq)` → `()` for *every* whole-level prefix of the subject
//!   (`acme`, `acme/lyon`, ... the subject itself), so "everything under `acme/lyon/line1`" is
//!   one ordered range scan, not a filter over all events (events are few beside samples; seven
//!   small keys an event are cheap);
//! - `by_kind`: `(kind code, ts, seq)` → `()`;
//! - `meta`: the next sequence number.
//!
//! Writes go through one writer thread that gathers everything submitted within
//! `commit_interval` (or `max_batch` events) into one transaction and one fsync (group commit);
//! an [`EventAck`] resolves only after that commit. Retention deletes events older than `keep`
//! (in bounded transactions, once a minute and at open).
//!
//! Queries are bounded twice: at most [`MAX_EVENTS`] events a page, and at most [`MAX_SCAN`]
//! index entries looked at a call. A page that stops early carries a `next` cursor, so a
//! rare match in a long range is found by paging, never by one unbounded scan.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ironplant_core::{Event, EventKind, Severity, TagPath, Timestamp, Value};
use parking_lot::{Mutex, RwLock};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::oneshot;

use crate::codec::{get_value, put_value, put_varint, Malformed, Reader};
use crate::HistorianError;

const EVENTS: TableDefinition<'_, (i64, u64), &[u8]> = TableDefinition::new("events");
const BY_SUBJECT: TableDefinition<'_, (&str, i64, u64), ()> = TableDefinition::new("by_subject");
const BY_KIND: TableDefinition<'_, (u8, i64, u64), ()> = TableDefinition::new("by_kind");
const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");

/// Most events one query page returns.
pub const MAX_EVENTS: usize = 10_000;
/// Most index entries one query call looks at before it returns a page with a `next` cursor.
pub const MAX_SCAN: usize = 200_000;
/// Default retention of events.
pub const DEFAULT_KEEP: Duration = Duration::from_secs(90 * 24 * 3600);

/// Settings of an event store.
#[derive(Debug, Clone)]
pub struct EventStoreConfig {
    /// The redb file.
    pub path: PathBuf,
    /// Events older than this are deleted; `None` keeps them forever.
    pub keep: Option<Duration>,
    /// How long the writer gathers events before one commit (group commit).
    pub commit_interval: Duration,
    /// Gathered events that trigger the commit early.
    pub max_batch: usize,
}

impl EventStoreConfig {
    pub fn new(path: impl Into<PathBuf>) -> EventStoreConfig {
        EventStoreConfig {
            path: path.into(),
            keep: Some(DEFAULT_KEEP),
            commit_interval: Duration::from_millis(5),
            max_batch: 50_000,
        }
    }
}

/// Where a stored event sits in the store's order: its timestamp and its sequence number.
/// Rendered as `<ts µs>-<seq>`; opaque to clients (they pass it back as `after`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventCursor {
    pub ts: i64,
    pub seq: u64,
}

impl fmt::Display for EventCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ts, self.seq)
    }
}

impl FromStr for EventCursor {
    type Err = String;

    fn from_str(s: &str) -> Result<EventCursor, String> {
        let bad = || {
            format!(
                "{s:?} is not an event cursor; pass back the `next` of the previous page \
                 (e.g. 1764000000000000-42)"
            )
        };
        // The timestamp may be negative: split at the last '-'.
        let (ts, seq) = s.rsplit_once('-').ok_or_else(bad)?;
        Ok(EventCursor {
            ts: ts.parse().map_err(|_| bad())?,
            seq: seq.parse().map_err(|_| bad())?,
        })
    }
}

/// Which way a query walks through time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EventOrder {
    #[default]
    NewestFirst,
    OldestFirst,
}

/// A query of the event store. Every filter given must match.
#[derive(Debug, Clone)]
pub struct EventQuery {
    /// `from <= ts < to`.
    pub from: Timestamp,
    pub to: Timestamp,
    /// Empty: every kind.
    pub kinds: Vec<EventKind>,
    /// Only events whose subject is this path or lies under it (whole levels).
    pub subject: Option<TagPath>,
    pub code: Option<String>,
    pub order: EventOrder,
    /// At most [`MAX_EVENTS`].
    pub limit: usize,
    /// Continue after this event (the `next` of the previous page, same order).
    pub after: Option<EventCursor>,
}

impl EventQuery {
    /// Everything in `[from, to)`, newest first, 1,000 a page.
    pub fn new(from: Timestamp, to: Timestamp) -> EventQuery {
        EventQuery {
            from,
            to,
            kinds: Vec::new(),
            subject: None,
            code: None,
            order: EventOrder::NewestFirst,
            limit: 1_000,
            after: None,
        }
    }
}

/// An event as the store returns it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub cursor: EventCursor,
    pub event: Event,
}

/// One page of a query.
#[derive(Debug, Clone, Default)]
pub struct EventPage {
    pub events: Vec<StoredEvent>,
    /// Set when more may follow: pass it as `after` with the same query.
    pub next: Option<EventCursor>,
    /// Stored events that could not be decoded (named by cursor), skipped.
    pub warnings: Vec<String>,
}

/// Counters of the event store.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventStoreStats {
    /// Events committed (durable) since open.
    pub stored: u64,
    /// Transactions committed (each one fsync).
    pub commits: u64,
    /// Events deleted by retention since open.
    pub expired: u64,
    /// Size of the file.
    pub file_bytes: u64,
}

#[derive(Default)]
struct Counters {
    stored: AtomicU64,
    commits: AtomicU64,
    expired: AtomicU64,
}

type AckTx = oneshot::Sender<Result<(), String>>;

enum Msg {
    Append(Vec<Event>, Option<AckTx>),
    Expire(Timestamp, oneshot::Sender<Result<u64, String>>),
}

struct Shared {
    cfg: EventStoreConfig,
    /// Behind a lock so closing releases the file even while handles remain.
    db: RwLock<Option<Database>>,
    counters: Counters,
}

/// The event store. Cheap to clone; [`EventStore::close`] stops the writer after committing
/// everything submitted.
#[derive(Clone)]
pub struct EventStore {
    shared: Arc<Shared>,
    tx: Arc<Mutex<Option<std_mpsc::SyncSender<Msg>>>>,
    thread: Arc<Mutex<Option<std::thread::JoinHandle<()>>>>,
}

/// Waits for submitted events to be durable.
pub struct EventAck(Option<oneshot::Receiver<Result<(), String>>>);

impl EventAck {
    pub async fn wait(self) -> Result<(), HistorianError> {
        match self.0 {
            None => Ok(()),
            Some(rx) => rx
                .await
                .map_err(|_| HistorianError::Closed)?
                .map_err(HistorianError::Storage),
        }
    }

    /// Blocking wait, for threads outside an async runtime.
    pub fn wait_blocking(self) -> Result<(), HistorianError> {
        match self.0 {
            None => Ok(()),
            Some(rx) => rx
                .blocking_recv()
                .map_err(|_| HistorianError::Closed)?
                .map_err(HistorianError::Storage),
        }
    }
}

fn storage<E: fmt::Display>(e: E) -> HistorianError {
    HistorianError::Storage(format!("event store: {e}"))
}

impl EventStore {
    /// Opens (or creates) the store and starts its writer; runs retention once.
    pub fn open(cfg: EventStoreConfig) -> Result<EventStore, HistorianError> {
        if let Some(dir) = cfg.path.parent() {
            crate::private_fs::create_dir(dir).map_err(|e| HistorianError::io(dir, e))?;
        }
        crate::private_fs::create_file(&cfg.path).map_err(|e| HistorianError::io(&cfg.path, e))?;
        let db = Database::create(&cfg.path).map_err(|e| {
            HistorianError::Storage(format!("cannot open {}: {e}", cfg.path.display()))
        })?;
        let txn = db.begin_write().map_err(storage)?;
        let next_seq = {
            txn.open_table(EVENTS).map_err(storage)?;
            txn.open_table(BY_SUBJECT).map_err(storage)?;
            txn.open_table(BY_KIND).map_err(storage)?;
            let meta = txn.open_table(META).map_err(storage)?;
            let seq = meta
                .get("next_seq")
                .map_err(storage)?
                .map_or(0, |v| v.value());
            seq
        };
        txn.commit().map_err(storage)?;
        let shared = Arc::new(Shared {
            cfg,
            db: RwLock::new(Some(db)),
            counters: Counters::default(),
        });
        let (tx, rx) = std_mpsc::sync_channel::<Msg>(1024);
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("historian-events".into())
                .spawn(move || writer_loop(&shared, &rx, next_seq))
                .map_err(|e| {
                    HistorianError::Storage(format!("cannot start the event writer thread: {e}"))
                })?
        };
        Ok(EventStore {
            shared,
            tx: Arc::new(Mutex::new(Some(tx))),
            thread: Arc::new(Mutex::new(Some(thread))),
        })
    }

    /// Queues events for storage; the [`EventAck`] resolves once they are durable (and
    /// visible to queries). Blocks while the writer is saturated.
    pub fn submit(&self, events: Vec<Event>) -> Result<EventAck, HistorianError> {
        let (a, b) = oneshot::channel();
        self.send(Msg::Append(events, Some(a)))?;
        Ok(EventAck(Some(b)))
    }

    /// Queues events without waiting for them (durability is still the commit's; the
    /// counters say when they are stored). Blocks while the writer is saturated.
    pub fn ingest(&self, events: Vec<Event>) -> Result<(), HistorianError> {
        self.send(Msg::Append(events, None))
    }

    /// Stores events and waits until they are durable.
    pub async fn write(&self, events: Vec<Event>) -> Result<(), HistorianError> {
        self.submit(events)?.wait().await
    }

    fn send(&self, msg: Msg) -> Result<(), HistorianError> {
        let tx = self.tx.lock().clone().ok_or(HistorianError::Closed)?;
        tx.send(msg).map_err(|_| HistorianError::Closed)
    }

    /// Deletes every event older than `cutoff` now (retention does this by itself with the
    /// configured `keep`); returns how many.
    pub fn expire_before(&self, cutoff: Timestamp) -> Result<u64, HistorianError> {
        let (a, b) = oneshot::channel();
        self.send(Msg::Expire(cutoff, a))?;
        b.blocking_recv()
            .map_err(|_| HistorianError::Closed)?
            .map_err(HistorianError::Storage)
    }

    /// Stops the writer after committing everything submitted, and releases the file.
    pub fn close(&self) {
        drop(self.tx.lock().take());
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
        *self.shared.db.write() = None;
    }

    pub fn stats(&self) -> EventStoreStats {
        let c = &self.shared.counters;
        EventStoreStats {
            stored: c.stored.load(Ordering::Relaxed),
            commits: c.commits.load(Ordering::Relaxed),
            expired: c.expired.load(Ordering::Relaxed),
            file_bytes: std::fs::metadata(&self.shared.cfg.path).map_or(0, |m| m.len()),
        }
    }

    pub fn path(&self) -> &Path {
        &self.shared.cfg.path
    }

    /// One page of events matching `q` and `visible` (the caller's own filter, e.g. what a
    /// user may see). Bounded by `q.limit` (≤ [`MAX_EVENTS`]) and [`MAX_SCAN`].
    pub fn query(
        &self,
        q: &EventQuery,
        visible: &dyn Fn(&Event) -> bool,
    ) -> Result<EventPage, HistorianError> {
        self.query_with_budget(q, visible, MAX_SCAN)
    }

    /// [`EventStore::query`] with another scan budget (tests).
    pub fn query_with_budget(
        &self,
        q: &EventQuery,
        visible: &dyn Fn(&Event) -> bool,
        budget: usize,
    ) -> Result<EventPage, HistorianError> {
        if q.limit > MAX_EVENTS {
            return Err(HistorianError::LimitTooLarge {
                limit: q.limit,
                max: MAX_EVENTS,
            });
        }
        if q.from > q.to {
            return Err(HistorianError::BadRange {
                from: q.from,
                to: q.to,
            });
        }
        let mut page = EventPage::default();
        let Some((lo, hi)) = bounds(q) else {
            return Ok(page);
        };
        if q.limit == 0 {
            return Ok(page);
        }
        let guard = self.shared.db.read();
        let db = guard.as_ref().ok_or(HistorianError::Closed)?;
        let txn = db.begin_read().map_err(storage)?;
        let events = txn.open_table(EVENTS).map_err(storage)?;
        let rev = q.order == EventOrder::NewestFirst;
        type Row = Result<((i64, u64), Option<Vec<u8>>), redb::StorageError>;
        // One ordered walk of keys (and, on the primary table, the bytes with them).
        let rows: Box<dyn Iterator<Item = Row>> = if let Some(subject) = &q.subject {
            let t = txn.open_table(BY_SUBJECT).map_err(storage)?;
            let s = subject.as_str();
            let r = t
                .range((s, lo.0, lo.1)..(s, hi.0, hi.1))
                .map_err(storage)?
                .map(|row| {
                    row.map(|(k, _)| {
                        let (_, ts, seq) = k.value();
                        ((ts, seq), None)
                    })
                });
            if rev {
                Box::new(r.rev())
            } else {
                Box::new(r)
            }
        } else if let [kind] = q.kinds[..] {
            let t = txn.open_table(BY_KIND).map_err(storage)?;
            let c = kind.code();
            let r = t
                .range((c, lo.0, lo.1)..(c, hi.0, hi.1))
                .map_err(storage)?
                .map(|row| {
                    row.map(|(k, _)| {
                        let (_, ts, seq) = k.value();
                        ((ts, seq), None)
                    })
                });
            if rev {
                Box::new(r.rev())
            } else {
                Box::new(r)
            }
        } else {
            let r = events
                .range(lo..hi)
                .map_err(storage)?
                .map(|row| row.map(|(k, v)| (k.value(), Some(v.value().to_vec()))));
            if rev {
                Box::new(r.rev())
            } else {
                Box::new(r)
            }
        };
        let mut rows = rows;
        let mut scanned = 0usize;
        while let Some(row) = rows.next() {
            let (key, bytes) = row.map_err(storage)?;
            scanned += 1;
            let cursor = EventCursor {
                ts: key.0,
                seq: key.1,
            };
            let bytes = match bytes {
                Some(b) => Some(b),
                None => events
                    .get(key)
                    .map_err(storage)?
                    .map(|v| v.value().to_vec()),
            };
            // None: an index entry whose event retention is deleting right now.
            if let Some(bytes) = bytes {
                match decode(Timestamp(key.0), &bytes) {
                    Ok(e) if matches(q, &e) && visible(&e) => {
                        page.events.push(StoredEvent { cursor, event: e });
                    }
                    Ok(_) => {}
                    Err(m) => page
                        .warnings
                        .push(format!("event {cursor} is unreadable and was skipped: {m}")),
                }
            }
            if page.events.len() >= q.limit || scanned >= budget {
                // More may follow only if the walk is not over.
                if rows.next().is_some() {
                    page.next = Some(cursor);
                }
                break;
            }
        }
        Ok(page)
    }
}

/// The key range `[lo, hi)` of `(ts, seq)` a query walks, after its cursor; `None` if empty.
fn bounds(q: &EventQuery) -> Option<((i64, u64), (i64, u64))> {
    let mut lo = (q.from.0, 0u64);
    let mut hi = (q.to.0, 0u64);
    if let Some(c) = q.after {
        match q.order {
            EventOrder::OldestFirst => {
                let next = match c.seq.checked_add(1) {
                    Some(s) => (c.ts, s),
                    None => (c.ts.checked_add(1)?, 0),
                };
                lo = lo.max(next);
            }
            EventOrder::NewestFirst => hi = hi.min((c.ts, c.seq)),
        }
    }
    (lo < hi).then_some((lo, hi))
}

fn matches(q: &EventQuery, e: &Event) -> bool {
    (q.kinds.is_empty() || q.kinds.contains(&e.kind))
        && q.code.as_deref().is_none_or(|c| *e.code == *c)
        && q.subject
            .as_ref()
            .is_none_or(|p| e.subject.as_ref().is_some_and(|s| s == p || s.is_under(p)))
}

/// Every whole-level prefix of a path, shortest first, ending with the path itself.
fn prefixes(p: &TagPath) -> impl Iterator<Item = &str> {
    let s = p.as_str();
    s.match_indices('/')
        .map(move |(i, _)| &s[..i])
        .chain(std::iter::once(s))
}

fn writer_loop(shared: &Shared, rx: &std_mpsc::Receiver<Msg>, mut next_seq: u64) {
    let mut last_retention: Option<Instant> = None;
    loop {
        if shared.cfg.keep.is_some()
            && last_retention.is_none_or(|t| t.elapsed() >= Duration::from_secs(60))
        {
            last_retention = Some(Instant::now());
            if let Some(keep) = shared.cfg.keep {
                let keep_us = i64::try_from(keep.as_micros()).unwrap_or(i64::MAX);
                let cutoff = Timestamp(Timestamp::now().0.saturating_sub(keep_us));
                match expire(shared, cutoff) {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(events = n, "event retention deleted expired events"),
                    Err(e) => tracing::warn!(error = %e, "event retention failed; will retry"),
                }
            }
        }
        let first = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(m) => m,
            Err(std_mpsc::RecvTimeoutError::Timeout) => continue,
            Err(std_mpsc::RecvTimeoutError::Disconnected) => return,
        };
        let mut batch: Vec<Event> = Vec::new();
        let mut acks: Vec<AckTx> = Vec::new();
        let mut pending = Some(first);
        let deadline = Instant::now() + shared.cfg.commit_interval;
        let mut closed = false;
        loop {
            match pending.take() {
                Some(Msg::Append(events, ack)) => {
                    batch.extend(events);
                    acks.extend(ack);
                }
                Some(Msg::Expire(cutoff, reply)) => {
                    // Commit what was gathered first, so "before" means before this request.
                    commit_batch(shared, &mut next_seq, &mut batch, &mut acks);
                    let _ = reply.send(expire(shared, cutoff).map_err(|e| e.to_string()));
                }
                None => {}
            }
            if batch.len() >= shared.cfg.max_batch {
                break;
            }
            let now = Instant::now();
            if now >= deadline {
                // Whatever is already queued still joins this commit.
                match rx.try_recv() {
                    Ok(m) => pending = Some(m),
                    Err(std_mpsc::TryRecvError::Empty) => break,
                    Err(std_mpsc::TryRecvError::Disconnected) => {
                        closed = true;
                        break;
                    }
                }
                continue;
            }
            match rx.recv_timeout(deadline - now) {
                Ok(m) => pending = Some(m),
                Err(std_mpsc::RecvTimeoutError::Timeout) => {}
                Err(std_mpsc::RecvTimeoutError::Disconnected) => {
                    closed = true;
                    break;
                }
            }
        }
        commit_batch(shared, &mut next_seq, &mut batch, &mut acks);
        if closed {
            return;
        }
    }
}

/// Commits `batch` in one durable transaction, then resolves `acks`.
fn commit_batch(
    shared: &Shared,
    next_seq: &mut u64,
    batch: &mut Vec<Event>,
    acks: &mut Vec<AckTx>,
) {
    if batch.is_empty() && acks.is_empty() {
        return;
    }
    let n = batch.len() as u64;
    let result = write_events(shared, *next_seq, batch);
    match &result {
        Ok(()) => {
            *next_seq += n;
            shared.counters.stored.fetch_add(n, Ordering::Relaxed);
            shared.counters.commits.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => tracing::error!(error = %e, events = n, "cannot store events"),
    }
    let r = result.map_err(|e| e.to_string());
    for a in acks.drain(..) {
        let _ = a.send(r.clone());
    }
    batch.clear();
}

fn write_events(shared: &Shared, first_seq: u64, batch: &[Event]) -> Result<(), HistorianError> {
    if batch.is_empty() {
        return Ok(());
    }
    let guard = shared.db.read();
    let db = guard.as_ref().ok_or(HistorianError::Closed)?;
    let txn = db.begin_write().map_err(storage)?;
    {
        let mut events = txn.open_table(EVENTS).map_err(storage)?;
        let mut by_subject = txn.open_table(BY_SUBJECT).map_err(storage)?;
        let mut by_kind = txn.open_table(BY_KIND).map_err(storage)?;
        let mut buf = Vec::with_capacity(256);
        for (i, e) in batch.iter().enumerate() {
            let seq = first_seq + i as u64;
            buf.clear();
            encode(e, &mut buf);
            events.insert((e.ts.0, seq), &buf[..]).map_err(storage)?;
            by_kind
                .insert((e.kind.code(), e.ts.0, seq), ())
                .map_err(storage)?;
            if let Some(s) = &e.subject {
                for p in prefixes(s) {
                    by_subject.insert((p, e.ts.0, seq), ()).map_err(storage)?;
                }
            }
        }
        let mut meta = txn.open_table(META).map_err(storage)?;
        meta.insert("next_seq", first_seq + batch.len() as u64)
            .map_err(storage)?;
    }
    txn.commit().map_err(storage)
}

/// Deletes events with `ts < cutoff` and their index entries, 10,000 a transaction.
fn expire(shared: &Shared, cutoff: Timestamp) -> Result<u64, HistorianError> {
    let mut total = 0u64;
    loop {
        let guard = shared.db.read();
        let db = guard.as_ref().ok_or(HistorianError::Closed)?;
        let txn = db.begin_write().map_err(storage)?;
        let n = {
            let mut events = txn.open_table(EVENTS).map_err(storage)?;
            let mut by_subject = txn.open_table(BY_SUBJECT).map_err(storage)?;
            let mut by_kind = txn.open_table(BY_KIND).map_err(storage)?;
            // Key, and (kind, subject) for its index entries when the event can be decoded.
            type Doomed = ((i64, u64), Option<(u8, Option<TagPath>)>);
            let mut doomed: Vec<Doomed> = Vec::new();
            for row in events
                .range((i64::MIN, 0u64)..(cutoff.0, 0u64))
                .map_err(storage)?
                .take(10_000)
            {
                let (k, v) = row.map_err(storage)?;
                let key = k.value();
                let info = decode(Timestamp(key.0), v.value())
                    .ok()
                    .map(|e| (e.kind.code(), e.subject));
                doomed.push((key, info));
            }
            for (key, info) in &doomed {
                events.remove(*key).map_err(storage)?;
                if let Some((kind, subject)) = info {
                    by_kind.remove((*kind, key.0, key.1)).map_err(storage)?;
                    if let Some(s) = subject {
                        for p in prefixes(s) {
                            by_subject.remove((p, key.0, key.1)).map_err(storage)?;
                        }
                    }
                }
            }
            doomed.len()
        };
        txn.commit().map_err(storage)?;
        total += n as u64;
        shared
            .counters
            .expired
            .fetch_add(n as u64, Ordering::Relaxed);
        if n < 10_000 {
            return Ok(total);
        }
    }
}

// ---- encoding ------------------------------------------------------------------------------
//
// Version 1: `1 | kind | severity | code | source | subject? | actor? | message | n | (name,
// tagged value) × n`; strings are varint length + UTF-8, optional ones a 0/1 byte first. The
// timestamp is the key's.

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

fn put_opt(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        None => out.push(0),
        Some(s) => {
            out.push(1);
            put_str(out, s);
        }
    }
}

fn severity_code(s: Severity) -> u8 {
    match s {
        Severity::Info => 0,
        Severity::Warning => 1,
        Severity::Error => 2,
        Severity::Critical => 3,
    }
}

/// The stored bytes of an event (without its timestamp, which is the key's).
pub fn encode(e: &Event, out: &mut Vec<u8>) {
    out.push(1);
    out.push(e.kind.code());
    out.push(severity_code(e.severity));
    put_str(out, &e.code);
    put_str(out, &e.source);
    put_opt(out, e.subject.as_ref().map(TagPath::as_str));
    put_opt(out, e.actor.as_deref());
    put_str(out, &e.message);
    put_varint(out, e.attributes.len() as u64);
    for (k, v) in &e.attributes {
        put_str(out, k);
        put_value(out, v);
    }
}

fn get_str<'a>(r: &mut Reader<'a>) -> Result<&'a str, Malformed> {
    let n = r.len()?;
    std::str::from_utf8(r.bytes(n)?).map_err(|_| Malformed("string is not UTF-8"))
}

fn get_opt<'a>(r: &mut Reader<'a>) -> Result<Option<&'a str>, Malformed> {
    match r.u8()? {
        0 => Ok(None),
        1 => get_str(r).map(Some),
        _ => Err(Malformed("option flag")),
    }
}

/// Reads [`encode`]'s bytes back.
pub fn decode(ts: Timestamp, bytes: &[u8]) -> Result<Event, Malformed> {
    let mut r = Reader::new(bytes);
    if r.u8()? != 1 {
        return Err(Malformed("unknown event record version"));
    }
    let kind = EventKind::from_code(r.u8()?).ok_or(Malformed("event kind"))?;
    let severity = *Severity::ALL
        .get(usize::from(r.u8()?))
        .ok_or(Malformed("severity"))?;
    let code = get_str(&mut r)?;
    let source = get_str(&mut r)?;
    let subject = get_opt(&mut r)?
        .map(|s| TagPath::parse(s).map_err(|_| Malformed("subject path")))
        .transpose()?;
    let actor = get_opt(&mut r)?;
    let message = get_str(&mut r)?;
    let n = r.varint()?;
    let mut attributes = Vec::new();
    for _ in 0..n {
        let k = get_str(&mut r)?;
        let v: Value = get_value(&mut r)?;
        attributes.push((Arc::from(k), v));
    }
    if !r.is_empty() {
        return Err(Malformed("trailing bytes after an event"));
    }
    Ok(Event {
        ts,
        kind,
        code: Arc::from(code),
        severity,
        subject,
        source: Arc::from(source),
        actor: actor.map(Arc::from),
        message: Arc::from(message),
        attributes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_through_their_encoding() {
        let e = Event::new(Timestamp(-5), EventKind::Command, "write", "api", "set 4.2")
            .with_severity(Severity::Critical)
            .with_subject(TagPath::parse("acme/lyon/line1/filler/speed").expect("path"))
            .with_actor("alice")
            .with_attribute("old", Value::Float(1.5))
            .with_attribute("new", Value::U64(u64::MAX))
            .with_attribute("why", Value::String("ramp".into()));
        let mut b = Vec::new();
        encode(&e, &mut b);
        assert_eq!(decode(Timestamp(-5), &b), Ok(e));
        for cut in 0..b.len() {
            assert!(decode(Timestamp(0), &b[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn prefixes_are_whole_levels() {
        let p = TagPath::parse("a/bc/d").expect("path");
        assert_eq!(prefixes(&p).collect::<Vec<_>>(), ["a", "a/bc", "a/bc/d"]);
    }

    #[test]
    fn cursors_parse_back() {
        for c in [
            EventCursor { ts: 17, seq: 3 },
            EventCursor { ts: -17, seq: 0 },
        ] {
            assert_eq!(c.to_string().parse::<EventCursor>(), Ok(c));
        }
        assert!("17".parse::<EventCursor>().is_err());
        assert!("x-1".parse::<EventCursor>().is_err());
    }
}
