//! Ironplant's embedded historian: every sample durable in a write-ahead log with group commit,
//! then kept in per-tag compressed chunks in a redb database, and queried raw, aggregated or
//! interpolated.
//!
//! Write path: `submit` → WAL writer thread (group commit: one fsync for everything that arrived
//! within `commit_interval`, or `commit_bytes`) → memtable (visible to queries) → acknowledgement.
//! Every `flush_samples` samples or `flush_interval`, the memtable is frozen and a flusher thread
//! compresses it into chunks and commits them together with the checkpoint LSN in one redb
//! transaction; WAL segments before the checkpoint are then deleted.

pub mod aggregate;
pub mod chunk;
pub mod codec;
pub mod events;
pub mod lossy;
mod memtable;
pub mod private_fs;
pub mod settings;
pub mod store;
pub mod wal;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ironplant_core::{Quality, TagPath, Timestamp, Value};
use parking_lot::{Mutex, RwLock};
use tokio::sync::oneshot;

pub use aggregate::{Aggregate, Interpolation};
use lossy::{LossyFilter, LossySpec};
pub use memtable::Raw;
use memtable::{Head, Memtable};
use store::{ChunkKey, Store};
pub use wal::{Disk, WalFile, WalFs};
use wal::{Entry, WalWriter};

/// A stored sample as queries return it.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub ts: Timestamp,
    pub value: Value,
    pub quality: Quality,
}

/// A retention rule: tags under `prefix` keep raw data for `keep`.
#[derive(Debug, Clone, PartialEq)]
pub struct Retention {
    pub prefix: String,
    pub keep: Duration,
}

/// Settings of a historian.
#[derive(Debug, Clone)]
pub struct HistorianConfig {
    pub dir: PathBuf,
    /// How long the WAL writer gathers samples before one fsync (group commit).
    pub commit_interval: Duration,
    /// Gathered bytes that trigger the fsync early.
    pub commit_bytes: usize,
    /// Samples in memory that trigger compression into chunks.
    pub flush_samples: usize,
    /// Age of the oldest sample in memory that triggers compression into chunks.
    pub flush_interval: Duration,
    /// WAL segment size.
    pub segment_bytes: u64,
    /// Raw-data retention by tag prefix (longest prefix wins); tags without a rule keep data forever.
    pub retention: Vec<Retention>,
    /// Optional lossy compression by tag prefix (longest prefix wins); lossless when absent.
    pub lossy: Vec<(String, LossySpec)>,
    /// The file system under the WAL: [`Disk`] except in power-loss tests.
    pub wal_fs: Arc<dyn WalFs>,
    /// How long events are kept (`events.redb`, see [`events`]); `None`: forever.
    pub event_retention: Option<Duration>,
}

impl HistorianConfig {
    pub fn new(dir: impl Into<PathBuf>) -> HistorianConfig {
        HistorianConfig {
            dir: dir.into(),
            commit_interval: Duration::from_millis(2),
            commit_bytes: 1 << 20,
            flush_samples: 4_000_000,
            flush_interval: Duration::from_secs(600),
            segment_bytes: 64 << 20,
            retention: Vec::new(),
            lossy: Vec::new(),
            wal_fs: Disk::shared(),
            event_retention: Some(events::DEFAULT_KEEP),
        }
    }
}

/// What can go wrong, each with what a user needs to fix it.
#[derive(Debug, thiserror::Error)]
pub enum HistorianError {
    #[error("unknown tag {0:?}: it has no history (check the path with GET /api/v1/tags)")]
    UnknownTag(String),
    #[error("invalid time range: from {from} is after to {to}")]
    BadRange { from: Timestamp, to: Timestamp },
    #[error("invalid interval {0:?}: use at least 1ms")]
    BadInterval(Duration),
    #[error("{intervals} intervals requested; at most {max} per call: use a longer interval or a shorter range")]
    TooManyIntervals { intervals: u64, max: u64 },
    #[error("limit {limit} is too large; at most {max} points per call (page with `next`)")]
    LimitTooLarge { limit: usize, max: usize },
    #[error("historian storage error: {0}")]
    Storage(String),
    #[error("historian I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the historian has stopped")]
    Closed,
}

impl HistorianError {
    fn io(path: &Path, source: std::io::Error) -> HistorianError {
        HistorianError::Io {
            path: path.to_owned(),
            source,
        }
    }
}

/// Largest page of raw points and largest number of aggregate intervals per call.
pub const MAX_POINTS: usize = 100_000;
pub const MAX_INTERVALS: u64 = 100_000;

/// Counters for metrics.
#[derive(Debug, Default)]
struct Counters {
    acked_samples: AtomicU64,
    stored_samples: AtomicU64,
    wal_fsyncs: AtomicU64,
    chunks_written: AtomicU64,
    chunk_payload_bytes: AtomicU64,
    checkpoints: AtomicU64,
    retention_dropped_chunks: AtomicU64,
    corrupt_chunks_seen: AtomicU64,
    rollup_hours_read: AtomicU64,
}

/// A snapshot of the historian's counters and sizes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistorianStats {
    pub acked_samples: u64,
    pub stored_samples: u64,
    pub wal_fsyncs: u64,
    pub chunks_written: u64,
    /// Bytes of compressed chunks written (before the database's own overhead).
    pub chunk_payload_bytes: u64,
    pub checkpoints: u64,
    pub retention_dropped_chunks: u64,
    pub corrupt_chunks_seen: u64,
    /// Hourly rollups read by aggregate queries instead of raw samples.
    pub rollup_hours_read: u64,
    pub memtable_samples: u64,
    pub wal_bytes: u64,
    pub chunk_bytes: u64,
    pub tags: u64,
}

/// Where the bytes of the chunk database go, by part ([`Historian::storage_breakdown`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StorageBreakdown {
    /// Samples in chunks.
    pub samples: u64,
    pub chunks: u64,
    /// Timestamp columns shared by the chunks of a poll group.
    pub shared_columns: u64,
    /// Timestamps: inline in chunks, and shared columns (with their keys).
    pub timestamp_bytes: u64,
    pub value_bytes: u64,
    pub quality_bytes: u64,
    /// Fixed chunk headers, checksums and keys.
    pub header_bytes: u64,
    /// All of the above.
    pub chunk_bytes: u64,
    /// The database file: chunk bytes plus the storage engine's pages, B-tree and free space.
    pub file_bytes: u64,
    /// The storage engine's pages in use, and within them its B-tree metadata and the unused
    /// room of partly filled pages (the rest of the file is free pages).
    pub engine_allocated_bytes: u64,
    pub engine_metadata_bytes: u64,
    pub engine_fragmented_bytes: u64,
}

impl StorageBreakdown {
    /// Bytes of the file that are not chunk data (the storage engine's overhead).
    pub fn overhead_bytes(&self) -> u64 {
        self.file_bytes.saturating_sub(self.chunk_bytes)
    }
}

struct State {
    active: Memtable,
    /// Being compressed into chunks, oldest first; queried until their chunks are committed.
    frozen: Vec<Arc<Memtable>>,
    /// Wall time of the first sample in `active`.
    active_since: Option<Instant>,
}

/// Tag registry: path ↔ historian id, kept in redb so ids survive restarts and config changes.
#[derive(Default)]
struct Tags {
    by_path: HashMap<TagPath, u32>,
    paths: Vec<Option<TagPath>>,
}

struct Shared {
    cfg: HistorianConfig,
    store: Store,
    state: RwLock<State>,
    tags: RwLock<Tags>,
    /// Latest acknowledged sample per tag (for "last value" queries).
    last: RwLock<Vec<Option<Raw>>>,
    counters: Counters,
    wal_dir: PathBuf,
}

enum Msg {
    Append(Vec<Entry>, Option<oneshot::Sender<Result<(), String>>>),
    Flush(oneshot::Sender<Result<(), String>>),
    Compact(oneshot::Sender<Result<(), String>>),
}

/// The historian. Cheap to clone; the writer stops when the last clone is dropped (after a
/// final flush of everything acknowledged into chunks).
#[derive(Clone)]
pub struct Historian {
    shared: Arc<Shared>,
    tx: Arc<Mutex<Option<std_mpsc::SyncSender<Msg>>>>,
    threads: Arc<Mutex<Vec<std::thread::JoinHandle<()>>>>,
    events: events::EventStore,
}

/// Waits for a submitted batch to be durable.
pub struct Ack(Option<oneshot::Receiver<Result<(), String>>>);

impl Ack {
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

impl Historian {
    /// Opens (or creates) a historian in `cfg.dir`, replaying its WAL.
    pub fn open(cfg: HistorianConfig) -> Result<Historian, HistorianError> {
        for spec in &cfg.lossy {
            lossy::validate(&spec.1).map_err(|e| {
                HistorianError::Storage(format!("lossy rule for {:?}: {e}", spec.0))
            })?;
        }
        let wal_dir = cfg.dir.join("wal");
        private_fs::create_dir(&wal_dir).map_err(|e| HistorianError::io(&wal_dir, e))?;
        let store = Store::open(&cfg.dir.join("chunks.redb"))?;
        let mut ecfg = events::EventStoreConfig::new(cfg.dir.join("events.redb"));
        ecfg.keep = cfg.event_retention;
        let event_store = events::EventStore::open(ecfg)?;
        let (checkpoint, paths) = store.load()?;
        let mut tags = Tags::default();
        for (path, hid) in paths {
            if let Ok(p) = TagPath::parse(&path) {
                let i = hid as usize;
                if tags.paths.len() <= i {
                    tags.paths.resize(i + 1, None);
                }
                tags.paths[i] = Some(p.clone());
                tags.by_path.insert(p, hid);
            }
        }
        let mut filters = Filters::new(&cfg.lossy);
        let mut active = Memtable {
            lsn: checkpoint,
            ..Memtable::default()
        };
        let mut last: Vec<Option<Raw>> = Vec::new();
        let started = Instant::now();
        let replay = wal::replay(&*cfg.wal_fs, &wal_dir, checkpoint, |lsn, entries| {
            for e in entries {
                remember_last(&mut last, &e);
                filters.apply(e, &tags, &mut active);
            }
            active.lsn = lsn;
        })
        .map_err(|e| HistorianError::io(&wal_dir, e))?;
        filters.flush_all(&mut active);
        let next_lsn = replay.last_lsn.max(checkpoint) + 1;
        if replay.records > 0 {
            tracing::info!(records = replay.records, samples = active.samples, truncated_bytes = replay.truncated_bytes, took = ?started.elapsed(), "historian replayed its WAL");
        }
        // Seed "last value" from chunks for tags with nothing newer in the WAL.
        for hid in 0..tags.paths.len() as u32 {
            if last.get(hid as usize).and_then(Option::as_ref).is_none() {
                if let Ok(Some(r)) = store.last_in_chunks(hid) {
                    if last.len() <= hid as usize {
                        last.resize(hid as usize + 1, None);
                    }
                    last[hid as usize] = Some(r);
                }
            }
        }
        let wal = WalWriter::create(cfg.wal_fs.clone(), &wal_dir, next_lsn, cfg.segment_bytes)
            .map_err(|e| HistorianError::io(&wal_dir, e))?;
        let active_since = (active.samples > 0).then(Instant::now);
        let shared = Arc::new(Shared {
            cfg: cfg.clone(),
            store,
            state: RwLock::new(State {
                active,
                frozen: Vec::new(),
                active_since,
            }),
            tags: RwLock::new(tags),
            last: RwLock::new(last),
            counters: Counters::default(),
            wal_dir,
        });
        let (tx, rx) = std_mpsc::sync_channel::<Msg>(256);
        // One job may wait while another is compressed; beyond that the writer waits (back-pressure).
        let (ftx, frx) = std_mpsc::sync_channel::<Job>(1);
        let writer = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("historian-wal".into())
                .spawn(move || writer_loop(shared, rx, ftx, wal, filters, next_lsn))
                .map_err(|e| {
                    HistorianError::Storage(format!("cannot start the WAL writer thread: {e}"))
                })?
        };
        let flusher = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("historian-flush".into())
                .spawn(move || flusher_loop(shared, frx))
                .map_err(|e| {
                    HistorianError::Storage(format!("cannot start the flusher thread: {e}"))
                })?
        };
        Ok(Historian {
            shared,
            tx: Arc::new(Mutex::new(Some(tx))),
            threads: Arc::new(Mutex::new(vec![writer, flusher])),
            events: event_store,
        })
    }

    /// Historian ids for `paths`, registering new ones durably.
    pub fn register(&self, paths: &[TagPath]) -> Result<Vec<u32>, HistorianError> {
        {
            let tags = self.shared.tags.read();
            if let Some(ids) = paths
                .iter()
                .map(|p| tags.by_path.get(p).copied())
                .collect::<Option<Vec<_>>>()
            {
                return Ok(ids);
            }
        }
        let mut tags = self.shared.tags.write();
        let new: Vec<(TagPath, u32)> = {
            let mut next = tags.paths.len() as u32;
            let mut seen = std::collections::HashSet::new();
            paths
                .iter()
                .filter(|p| !tags.by_path.contains_key(*p) && seen.insert((*p).clone()))
                .map(|p| {
                    next += 1;
                    (p.clone(), next - 1)
                })
                .collect()
        };
        self.shared.store.register(&new)?;
        for (p, hid) in new {
            let i = hid as usize;
            if tags.paths.len() <= i {
                tags.paths.resize(i + 1, None);
            }
            tags.paths[i] = Some(p.clone());
            tags.by_path.insert(p, hid);
        }
        Ok(paths
            .iter()
            .filter_map(|p| tags.by_path.get(p).copied())
            .collect())
    }

    /// The historian id of a tag, if it has history.
    pub fn hid(&self, path: &str) -> Option<u32> {
        let p = TagPath::parse(path).ok()?;
        self.shared.tags.read().by_path.get(&p).copied()
    }

    /// Paths of every tag with history.
    pub fn tag_paths(&self) -> Vec<TagPath> {
        self.shared
            .tags
            .read()
            .paths
            .iter()
            .flatten()
            .cloned()
            .collect()
    }

    /// Queues samples `(hid, ts µs, value, quality)` for storage. The returned [`Ack`] resolves
    /// once they are durable and visible to queries. Blocks while the writer is saturated.
    pub fn submit(&self, samples: Vec<(u32, i64, Value, Quality)>) -> Result<Ack, HistorianError> {
        self.submit_entries(entries(samples), true)
    }

    /// Queues samples without asking for an acknowledgement (the tag bus path: durability is
    /// still the WAL's, only nobody waits for it). Blocks while the writer is saturated.
    pub fn ingest(
        &self,
        samples: impl IntoIterator<Item = (u32, i64, Value, Quality)>,
    ) -> Result<(), HistorianError> {
        self.submit_entries(entries(samples), false).map(|_| ())
    }

    fn submit_entries(&self, entries: Vec<Entry>, want_ack: bool) -> Result<Ack, HistorianError> {
        let (ack_tx, ack_rx) = if want_ack {
            let (a, b) = oneshot::channel();
            (Some(a), Some(b))
        } else {
            (None, None)
        };
        let tx = self.tx.lock().clone().ok_or(HistorianError::Closed)?;
        tx.send(Msg::Append(entries, ack_tx))
            .map_err(|_| HistorianError::Closed)?;
        Ok(Ack(ack_rx))
    }

    /// Stores samples and waits until they are durable.
    pub async fn write(
        &self,
        samples: Vec<(u32, i64, Value, Quality)>,
    ) -> Result<(), HistorianError> {
        self.submit(samples)?.wait().await
    }

    /// Compresses everything in memory into chunks now (and waits for it).
    pub fn flush_blocking(&self) -> Result<(), HistorianError> {
        let (a, b) = oneshot::channel();
        let tx = self.tx.lock().clone().ok_or(HistorianError::Closed)?;
        tx.send(Msg::Flush(a)).map_err(|_| HistorianError::Closed)?;
        b.blocking_recv()
            .map_err(|_| HistorianError::Closed)?
            .map_err(HistorianError::Storage)
    }

    /// Flushes, merges every run of small chunks into full-size ones and shrinks the database
    /// file (the flusher merges in the background too, once runs are long enough).
    pub fn compact_blocking(&self) -> Result<(), HistorianError> {
        self.flush_blocking()?;
        let (a, b) = oneshot::channel();
        let tx = self.tx.lock().clone().ok_or(HistorianError::Closed)?;
        tx.send(Msg::Compact(a))
            .map_err(|_| HistorianError::Closed)?;
        b.blocking_recv()
            .map_err(|_| HistorianError::Closed)?
            .map_err(HistorianError::Storage)
    }

    /// Stops the writer after flushing everything acknowledged into chunks.
    pub fn close(&self) {
        drop(self.tx.lock().take());
        for t in self.threads.lock().drain(..) {
            let _ = t.join();
        }
        // Release the file and its lock now, even if clones of this handle remain.
        self.shared.store.close();
        self.events.close();
    }

    pub fn stats(&self) -> HistorianStats {
        let c = &self.shared.counters;
        let st = self.shared.state.read();
        let mem = st.active.samples + st.frozen.iter().map(|f| f.samples).sum::<usize>();
        drop(st);
        HistorianStats {
            acked_samples: c.acked_samples.load(Ordering::Relaxed),
            stored_samples: c.stored_samples.load(Ordering::Relaxed),
            wal_fsyncs: c.wal_fsyncs.load(Ordering::Relaxed),
            chunks_written: c.chunks_written.load(Ordering::Relaxed),
            chunk_payload_bytes: c.chunk_payload_bytes.load(Ordering::Relaxed),
            checkpoints: c.checkpoints.load(Ordering::Relaxed),
            retention_dropped_chunks: c.retention_dropped_chunks.load(Ordering::Relaxed),
            corrupt_chunks_seen: c.corrupt_chunks_seen.load(Ordering::Relaxed),
            rollup_hours_read: c.rollup_hours_read.load(Ordering::Relaxed),
            memtable_samples: mem as u64,
            wal_bytes: wal::disk_bytes(&*self.shared.cfg.wal_fs, &self.shared.wal_dir),
            chunk_bytes: self.shared.store.file_bytes(),
            tags: self.shared.tags.read().by_path.len() as u64,
        }
    }

    /// Where the chunk database's bytes go (timestamps, values, quality, headers, the storage
    /// engine's overhead). Reads every chunk: for benchmarks and diagnostics.
    pub fn storage_breakdown(&self) -> Result<StorageBreakdown, HistorianError> {
        self.shared.store.breakdown()
    }

    /// The event store beside the samples (`events.redb`).
    pub fn events(&self) -> &events::EventStore {
        &self.events
    }

    pub fn dir(&self) -> &Path {
        &self.shared.cfg.dir
    }

    fn resolve(&self, path: &str) -> Result<u32, HistorianError> {
        self.hid(path)
            .ok_or_else(|| HistorianError::UnknownTag(path.to_owned()))
    }

    /// A consistent view of one tag across chunks, the frozen and the active memtable.
    fn snapshot(
        &self,
        hid: u32,
        from: i64,
        to: i64,
        context: bool,
    ) -> Result<TagView, HistorianError> {
        let st = self.shared.state.read();
        let txn = self.shared.store.begin_read()?;
        let mut mem = Vec::new();
        let mut before = None;
        let mut after = None;
        let heads: Vec<&Head> = st
            .frozen
            .iter()
            .filter_map(|f| f.head(hid))
            .chain(st.active.head(hid))
            .collect();
        for h in heads {
            h.range(from, to, &mut mem);
            if context {
                before = later(before, h.before(from));
                after = earlier(after, h.after(to));
            }
        }
        drop(st);
        Ok(TagView {
            txn,
            mem,
            before,
            after,
        })
    }

    /// Raw samples of `path` with `from <= ts < to`, oldest first, at most `limit`. When more
    /// exist, `next` is the `from` of the next page (a page never splits equal timestamps).
    pub fn raw(
        &self,
        path: &str,
        from: Timestamp,
        to: Timestamp,
        limit: usize,
    ) -> Result<RawPage, HistorianError> {
        check_range(from, to)?;
        if limit > MAX_POINTS {
            return Err(HistorianError::LimitTooLarge {
                limit,
                max: MAX_POINTS,
            });
        }
        let hid = self.resolve(path)?;
        let view = self.snapshot(hid, from.0, to.0, false)?;
        let mut warnings = Vec::new();
        let mut pts: Vec<Raw> = Vec::new();
        // Stop once the page is full and the first sample of the next page is known.
        self.stream(view, hid, from.0, to.0, path, &mut warnings, |r| {
            pts.push(r);
            !(pts.len() > limit
                && pts.last().map(|l| l.ts) != pts.get(limit.saturating_sub(1)).map(|p| p.ts))
        })?;
        self.note_corrupt(&warnings);
        let mut next = None;
        if pts.len() > limit {
            let cut_ts = pts[limit].ts;
            let keep = if limit > 0 && pts[limit - 1].ts == cut_ts {
                pts.iter().position(|p| p.ts == cut_ts).unwrap_or(limit)
            } else {
                limit
            };
            let keep = if keep == 0 {
                pts.iter().take_while(|p| p.ts == cut_ts).count()
            } else {
                keep
            };
            next = pts.get(keep).map(|p| Timestamp(p.ts));
            pts.truncate(keep);
        }
        Ok(RawPage {
            points: pts.into_iter().map(to_point).collect(),
            next,
            warnings,
        })
    }

    /// Aggregates of `path` over `[from, to)` in fixed intervals; bad samples are excluded and
    /// counted per interval.
    pub fn aggregate(
        &self,
        path: &str,
        from: Timestamp,
        to: Timestamp,
        interval: Duration,
        aggs: &[Aggregate],
    ) -> Result<AggResult, HistorianError> {
        check_range(from, to)?;
        if interval < Duration::from_millis(1) {
            return Err(HistorianError::BadInterval(interval));
        }
        let step = i64::try_from(interval.as_micros())
            .map_err(|_| HistorianError::BadInterval(interval))?;
        let intervals = ((to.0 - from.0) as u64).div_ceil(step as u64);
        if intervals > MAX_INTERVALS {
            return Err(HistorianError::TooManyIntervals {
                intervals,
                max: MAX_INTERVALS,
            });
        }
        let hid = self.resolve(path)?;
        let mut view = self.snapshot(hid, from.0, to.0, true)?;
        let mut warnings = Vec::new();
        // Whole hours, aligned: the hourly rollups answer as far as they reach.
        let (mut rows, split) = self.rows_from_rollups(&view, hid, from.0, to.0, step, aggs)?;
        let before = later(
            view.before.take(),
            self.shared
                .store
                .before(&view.txn, hid, split, &mut warnings, path)?,
        );
        let mut agg = aggregate::Aggregator::new(aggs, before.as_ref(), split, to.0, step);
        if split < to.0 {
            self.stream(view, hid, split, to.0, path, &mut warnings, |r| {
                agg.push(&r);
                true
            })?;
        }
        self.note_corrupt(&warnings);
        rows.extend(agg.finish());
        Ok(AggResult {
            aggregates: aggs.to_vec(),
            rows,
            warnings,
        })
    }

    /// The rows of `[from, split)` computed from hourly rollups, and `split` (`from` when the
    /// rollups cannot answer: an interval that is not whole hours from an hour boundary, no
    /// rollups yet, or samples of those hours still in memory — late data — or pending).
    fn rows_from_rollups(
        &self,
        view: &TagView,
        hid: u32,
        from: i64,
        to: i64,
        step: i64,
        aggs: &[Aggregate],
    ) -> Result<(Vec<aggregate::Row>, i64), HistorianError> {
        let hour = store::HOUR_US;
        if step % hour != 0 || from.rem_euclid(hour) != 0 || view.before.is_some() {
            return Ok((Vec::new(), from));
        }
        let mut reach = self.shared.store.rollup_mark(&view.txn, hid)?.min(to);
        if let Some(m) = view.mem.iter().map(|r| r.ts).min() {
            reach = reach.min(m);
        }
        let split = from + (reach.saturating_sub(from)).max(0) / step * step;
        if split <= from {
            return Ok((Vec::new(), from));
        }
        let Some(hours) = self.shared.store.rollups(&view.txn, hid, from, split)? else {
            return Ok((Vec::new(), from));
        };
        self.shared
            .counters
            .rollup_hours_read
            .fetch_add(hours.len() as u64, Ordering::Relaxed);
        let per = usize::try_from(step / hour).unwrap_or(1).max(1);
        let rows = hours
            .chunks(per)
            .enumerate()
            .map(|(i, group)| {
                let merged = group.iter().skip(1).fold(group[0], |acc, s| acc.merge(s));
                merged.row(from + i as i64 * step, aggs)
            })
            .collect();
        Ok((rows, split))
    }

    /// The value of `path` at `at`: the last sample at or before it (`Previous`), or linear
    /// interpolation between the good samples around it (`Linear`).
    pub fn at(
        &self,
        path: &str,
        at: Timestamp,
        how: Interpolation,
    ) -> Result<AtResult, HistorianError> {
        let hid = self.resolve(path)?;
        // Context window [at, at+1): `before` = last sample < at, exact hits in `mem`, `after` >= at+1.
        let mut view = self.snapshot(hid, at.0, at.0.saturating_add(1), true)?;
        let mut warnings = Vec::new();
        let exact = self.shared.store.scan(
            &view.txn,
            hid,
            at.0,
            at.0.saturating_add(1),
            &mut warnings,
            path,
        )?;
        let before = later(
            view.before.take(),
            self.shared
                .store
                .before(&view.txn, hid, at.0, &mut warnings, path)?,
        );
        let after = earlier(
            view.after.take(),
            self.shared
                .store
                .after(&view.txn, hid, at.0.saturating_add(1), &mut warnings, path)?,
        );
        self.note_corrupt(&warnings);
        let hit = exact.into_iter().chain(view.mem).last();
        let point = aggregate::interpolate(hit, before, after, at.0, how).map(to_point);
        Ok(AtResult { point, warnings })
    }

    /// The latest acknowledged sample of each path (`None` for unknown tags or no data).
    pub fn last(&self, paths: &[&str]) -> Vec<Option<Point>> {
        let tags = self.shared.tags.read();
        let last = self.shared.last.read();
        paths
            .iter()
            .map(|p| {
                let hid = TagPath::parse(p)
                    .ok()
                    .and_then(|p| tags.by_path.get(&p).copied())?;
                last.get(hid as usize).cloned().flatten().map(to_point)
            })
            .collect()
    }

    /// Feeds `emit` every sample of `[from, to)` in time order, holding only what cannot yet be
    /// ordered: chunks arrive by last timestamp with the earliest start of all later chunks
    /// (the watermark), so samples before it are final.
    #[allow(clippy::too_many_arguments)]
    fn stream(
        &self,
        view: TagView,
        hid: u32,
        from: i64,
        to: i64,
        path: &str,
        warnings: &mut Vec<String>,
        emit: impl FnMut(Raw) -> bool,
    ) -> Result<(), HistorianError> {
        let mut buf: Vec<Raw> = view.mem;
        let mut go_on = true;
        let emit = std::cell::RefCell::new(emit);
        let emit_direct = |r: Raw| (emit.borrow_mut())(r);
        let drain_until = |buf: &mut Vec<Raw>, watermark: i64, go_on: &mut bool| {
            buf.sort_by_key(|r| r.ts);
            let n = buf.partition_point(|r| r.ts < watermark);
            for r in buf.drain(..n) {
                if !(emit.borrow_mut())(r) {
                    *go_on = false;
                    break;
                }
            }
        };
        self.shared
            .store
            .visit(&view.txn, hid, from, to, warnings, path, |watermark, c| {
                let in_range = |i: usize| c.ts[i] >= from && c.ts[i] < to;
                let sorted = c.ts.windows(2).all(|w| w[0] <= w[1]);
                if buf.is_empty() && sorted {
                    // The common case: ordered chunks that do not overlap. No buffering.
                    for i in (0..c.ts.len()).filter(|&i| in_range(i)) {
                        let r = Raw {
                            ts: c.ts[i],
                            value: c.values[i].clone(),
                            quality: c.quality[i],
                        };
                        if r.ts >= watermark {
                            buf.push(r);
                        } else if go_on && !emit_direct(r) {
                            go_on = false;
                        }
                    }
                    return go_on;
                }
                for i in (0..c.ts.len()).filter(|&i| in_range(i)) {
                    buf.push(Raw {
                        ts: c.ts[i],
                        value: c.values[i].clone(),
                        quality: c.quality[i],
                    });
                }
                drain_until(&mut buf, watermark, &mut go_on);
                go_on
            })?;
        if go_on {
            drain_until(&mut buf, i64::MAX, &mut go_on);
        }
        Ok(())
    }

    fn note_corrupt(&self, warnings: &[String]) {
        if !warnings.is_empty() {
            self.shared
                .counters
                .corrupt_chunks_seen
                .fetch_add(warnings.len() as u64, Ordering::Relaxed);
            for w in warnings {
                tracing::error!(warning = %w, "historian skipped a corrupt chunk");
            }
        }
    }
}

struct TagView {
    txn: redb::ReadTransaction,
    mem: Vec<Raw>,
    before: Option<Raw>,
    after: Option<Raw>,
}

/// One page of raw samples.
#[derive(Debug, Clone, PartialEq)]
pub struct RawPage {
    pub points: Vec<Point>,
    pub next: Option<Timestamp>,
    /// Corrupt chunks that were skipped, with their tag and time range.
    pub warnings: Vec<String>,
}

/// Aggregated rows: one per interval, `values[i]` for `aggregates[i]`.
#[derive(Debug, Clone, PartialEq)]
pub struct AggResult {
    pub aggregates: Vec<Aggregate>,
    pub rows: Vec<aggregate::Row>,
    pub warnings: Vec<String>,
}

/// The result of an `at` query.
#[derive(Debug, Clone, PartialEq)]
pub struct AtResult {
    pub point: Option<Point>,
    pub warnings: Vec<String>,
}

fn entries(samples: impl IntoIterator<Item = (u32, i64, Value, Quality)>) -> Vec<Entry> {
    samples
        .into_iter()
        .map(|(hid, ts, value, q)| Entry {
            hid,
            ts,
            value,
            quality: codec::quality_code(q),
        })
        .collect()
}

fn check_range(from: Timestamp, to: Timestamp) -> Result<(), HistorianError> {
    if from > to {
        return Err(HistorianError::BadRange { from, to });
    }
    Ok(())
}

fn later(a: Option<Raw>, b: Option<Raw>) -> Option<Raw> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b.ts >= a.ts { b } else { a }),
        (a, b) => a.or(b),
    }
}

fn earlier(a: Option<Raw>, b: Option<Raw>) -> Option<Raw> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b.ts < a.ts { b } else { a }),
        (a, b) => a.or(b),
    }
}

fn to_point(r: Raw) -> Point {
    Point {
        ts: Timestamp(r.ts),
        value: r.value,
        quality: codec::quality_from_code(r.quality)
            .unwrap_or(Quality::bad(ironplant_core::QualityReason::ConfigError)),
    }
}

fn remember_last(last: &mut Vec<Option<Raw>>, e: &Entry) {
    let i = e.hid as usize;
    if last.len() <= i {
        last.resize(i + 1, None);
    }
    if last[i].as_ref().is_none_or(|l| e.ts >= l.ts) {
        last[i] = Some(Raw {
            ts: e.ts,
            value: e.value.clone(),
            quality: e.quality,
        });
    }
}

/// Per-tag lossy filters, chosen by longest matching prefix.
struct Filters {
    rules: Vec<(String, LossySpec)>,
    by_hid: HashMap<u32, Option<(LossyFilter, bool)>>,
}

impl Filters {
    fn new(rules: &[(String, LossySpec)]) -> Filters {
        let mut rules = rules.to_vec();
        rules.sort_by_key(|r| std::cmp::Reverse(r.0.len()));
        Filters {
            rules,
            by_hid: HashMap::new(),
        }
    }

    /// Stores `e` in `mem`, or what its tag's lossy filter keeps of it.
    fn apply(&mut self, e: Entry, tags: &Tags, mem: &mut Memtable) {
        if self.rules.is_empty() {
            mem.insert(e);
            return;
        }
        let rules = &self.rules;
        let slot = self.by_hid.entry(e.hid).or_insert_with(|| {
            let path = tags.paths.get(e.hid as usize).cloned().flatten()?;
            let spec = rules.iter().find(|(prefix, _)| path.has_prefix(prefix))?.1;
            Some((LossyFilter::new(spec), false))
        });
        let Some((filter, was_int)) = slot else {
            mem.insert(e);
            return;
        };
        let numeric = match e.value {
            Value::Float(f) => Some((f, false)),
            Value::Int(i) => Some((i as f64, true)),
            _ => None,
        };
        match numeric {
            Some((x, is_int)) if e.quality == 0 => {
                *was_int = is_int;
                for (ts, v) in filter.push(e.ts, x) {
                    mem.insert(Entry {
                        hid: e.hid,
                        ts,
                        value: number(v, is_int),
                        quality: 0,
                    });
                }
            }
            _ => {
                // Not a good number: store the held point, then this sample as it is.
                if let Some((ts, v)) = filter.flush() {
                    mem.insert(Entry {
                        hid: e.hid,
                        ts,
                        value: number(v, *was_int),
                        quality: 0,
                    });
                }
                *filter = LossyFilter::new(filter.spec());
                mem.insert(e);
            }
        }
    }

    /// Stores every held point (before a checkpoint: the WAL holding them will be deleted).
    fn flush_all(&mut self, mem: &mut Memtable) {
        for (hid, slot) in self.by_hid.iter_mut() {
            if let Some((filter, was_int)) = slot {
                if let Some((ts, v)) = filter.flush() {
                    mem.insert(Entry {
                        hid: *hid,
                        ts,
                        value: number(v, *was_int),
                        quality: 0,
                    });
                }
            }
        }
    }
}

fn number(v: f64, is_int: bool) -> Value {
    if is_int {
        Value::Int(v as i64)
    } else {
        Value::Float(v)
    }
}

/// A unit of work for the flusher: a memtable to compress, and/or someone to tell when every
/// job before and including this one is done.
struct Job {
    mem: Option<Arc<Memtable>>,
    done: Option<std_mpsc::Sender<Result<(), String>>>,
    /// Merge every run of small chunks and shrink the database file.
    compact: bool,
}

fn writer_loop(
    shared: Arc<Shared>,
    rx: std_mpsc::Receiver<Msg>,
    flusher: std_mpsc::SyncSender<Job>,
    mut wal: WalWriter,
    mut filters: Filters,
    mut next_lsn: u64,
) {
    let cfg = shared.cfg.clone();
    let mut buf: Vec<u8> = Vec::with_capacity(cfg.commit_bytes * 2);
    let mut pending: Vec<Entry> = Vec::new();
    let mut acks: Vec<oneshot::Sender<Result<(), String>>> = Vec::new();
    let mut flush_acks: Vec<oneshot::Sender<Result<(), String>>> = Vec::new();
    let mut compact_acks: Vec<oneshot::Sender<Result<(), String>>> = Vec::new();
    let mut closing = false;
    while !closing {
        // Wait for work, but wake up to honour flush_interval.
        let first = match rx.recv_timeout(Duration::from_millis(500)) {
            Ok(m) => Some(m),
            Err(std_mpsc::RecvTimeoutError::Timeout) => None,
            Err(std_mpsc::RecvTimeoutError::Disconnected) => {
                closing = true;
                None
            }
        };
        let mut take = |m: Msg, pending: &mut Vec<Entry>| match m {
            Msg::Append(mut e, ack) => {
                pending.append(&mut e);
                acks.extend(ack);
            }
            Msg::Flush(ack) => flush_acks.push(ack),
            Msg::Compact(ack) => compact_acks.push(ack),
        };
        if let Some(m) = first {
            take(m, &mut pending);
            let deadline = Instant::now() + cfg.commit_interval;
            // Group commit: gather until the interval ends or enough bytes are waiting
            // (16 bytes a sample is a fair estimate of the encoded size).
            while pending.len() * 16 < cfg.commit_bytes {
                let left = deadline.saturating_duration_since(Instant::now());
                match rx.recv_timeout(left) {
                    Ok(m) => take(m, &mut pending),
                    Err(std_mpsc::RecvTimeoutError::Timeout) => break,
                    Err(std_mpsc::RecvTimeoutError::Disconnected) => {
                        closing = true;
                        break;
                    }
                }
            }
        }
        if !pending.is_empty() {
            buf.clear();
            // Usually one record; several when large values (arrays, DataSets) would make one
            // record bigger than replay accepts.
            let records = wal::encode_records(next_lsn, &pending, &mut buf);
            let lsn = next_lsn + records - 1;
            if let Err(e) = wal.append_durable(&buf) {
                let msg = format!("cannot write the WAL: {e}");
                tracing::error!(error = %msg, "historian write failed; samples not acknowledged");
                for a in acks.drain(..) {
                    let _ = a.send(Err(msg.clone()));
                }
                pending.clear();
                // The segment may now end in a partial record: continue in a fresh one.
                next_lsn += records;
                if let Err(e) = wal.maybe_roll(next_lsn, true) {
                    tracing::error!(error = %e, "cannot start a new WAL segment");
                }
                continue;
            }
            next_lsn += records;
            shared.counters.wal_fsyncs.fetch_add(1, Ordering::Relaxed);
            let n = pending.len() as u64;
            {
                let tags = shared.tags.read();
                let mut last = shared.last.write();
                let mut st = shared.state.write();
                if st.active_since.is_none() {
                    st.active_since = Some(Instant::now());
                }
                for e in pending.drain(..) {
                    remember_last(&mut last, &e);
                    filters.apply(e, &tags, &mut st.active);
                }
                st.active.lsn = lsn;
            }
            shared
                .counters
                .acked_samples
                .fetch_add(n, Ordering::Relaxed);
            for a in acks.drain(..) {
                let _ = a.send(Ok(()));
            }
            if let Err(e) = wal.maybe_roll(next_lsn, false) {
                tracing::error!(error = %e, "cannot start a new WAL segment");
            }
        }
        let due = {
            let st = shared.state.read();
            st.active.samples > 0
                && (st.active.samples >= cfg.flush_samples
                    || st
                        .active_since
                        .is_some_and(|t| t.elapsed() >= cfg.flush_interval))
        };
        let wait = !flush_acks.is_empty() || closing;
        if due || wait {
            let result = freeze(&shared, &flusher, &mut filters, &mut wal, next_lsn, wait);
            for a in flush_acks.drain(..) {
                let _ = a.send(result.clone());
            }
        }
        if !compact_acks.is_empty() {
            let (done, finished) = std_mpsc::channel();
            let result = flusher
                .send(Job {
                    mem: None,
                    done: Some(done),
                    compact: true,
                })
                .map_err(|_| "the flusher has stopped".to_owned())
                .and_then(|()| {
                    finished
                        .recv()
                        .map_err(|_| "the flusher has stopped".to_owned())?
                });
            for a in compact_acks.drain(..) {
                let _ = a.send(result.clone());
            }
        }
    }
}

/// Moves the active memtable to the frozen list and queues it for compression. With `wait`,
/// returns only when every queued memtable is in chunks.
fn freeze(
    shared: &Arc<Shared>,
    flusher: &std_mpsc::SyncSender<Job>,
    filters: &mut Filters,
    wal: &mut WalWriter,
    next_lsn: u64,
    wait: bool,
) -> Result<(), String> {
    let frozen = {
        let mut st = shared.state.write();
        // Held lossy points must be stored: the WAL records holding them go with the checkpoint.
        filters.flush_all(&mut st.active);
        if st.active.samples == 0 {
            None
        } else {
            let lsn = st.active.lsn;
            let mem = Arc::new(std::mem::replace(
                &mut st.active,
                Memtable {
                    lsn,
                    ..Memtable::default()
                },
            ));
            st.active_since = None;
            st.frozen.push(mem.clone());
            Some(mem)
        }
    };
    if frozen.is_some() {
        // New records go to a new segment, so the old ones can be deleted after the checkpoint.
        wal.maybe_roll(next_lsn, true)
            .map_err(|e| format!("cannot start a new WAL segment: {e}"))?;
    }
    let (done, finished) = if wait {
        let (a, b) = std_mpsc::channel();
        (Some(a), Some(b))
    } else {
        (None, None)
    };
    if frozen.is_some() || done.is_some() {
        flusher
            .send(Job {
                mem: frozen,
                done,
                compact: false,
            })
            .map_err(|_| "the flusher has stopped".to_owned())?;
    }
    match finished {
        Some(rx) => rx
            .recv()
            .map_err(|_| "the flusher has stopped".to_owned())?,
        None => Ok(()),
    }
}

fn flusher_loop(shared: Arc<Shared>, rx: std_mpsc::Receiver<Job>) {
    let mut last_retention = Instant::now() - Duration::from_secs(3600);
    loop {
        let job = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(j) => j,
            Err(std_mpsc::RecvTimeoutError::Timeout) => {
                run_retention(&shared, &mut last_retention);
                continue;
            }
            Err(std_mpsc::RecvTimeoutError::Disconnected) => return,
        };
        let mut result = Ok(());
        if let Some(mem) = job.mem {
            // Memtables are checkpointed strictly in order: a later checkpoint would let the WAL
            // records of a failed one be deleted. So a failure is retried until it succeeds (the
            // writer waits meanwhile), or, if the process stops, the WAL replays it next start.
            let mut attempt = 0u32;
            loop {
                let started = Instant::now();
                match checkpoint(&shared, &mem) {
                    Ok(chunks) => {
                        shared.counters.checkpoints.fetch_add(1, Ordering::Relaxed);
                        shared
                            .counters
                            .chunks_written
                            .fetch_add(chunks, Ordering::Relaxed);
                        shared
                            .counters
                            .stored_samples
                            .fetch_add(mem.samples as u64, Ordering::Relaxed);
                        tracing::debug!(samples = mem.samples, chunks, lsn = mem.lsn, took = ?started.elapsed(), "historian checkpoint");
                        if let Err(e) =
                            wal::remove_checkpointed(&*shared.cfg.wal_fs, &shared.wal_dir, mem.lsn)
                        {
                            tracing::warn!(error = %e, "cannot remove checkpointed WAL segments; they will be removed later");
                        }
                        break;
                    }
                    Err(e) => {
                        attempt += 1;
                        tracing::error!(error = %e, attempt, "historian checkpoint failed; data stays in the WAL, retrying");
                        if job.done.is_some() && attempt >= 3 {
                            result = Err(format!("checkpoint failed: {e}"));
                            break;
                        }
                        std::thread::sleep(Duration::from_secs(1));
                    }
                }
            }
            if result.is_err() {
                // Leave the memtable frozen (still queried); its samples replay from the WAL.
                if let Some(done) = job.done {
                    let _ = done.send(result);
                }
                // Stop checkpointing: nothing later may commit before this one.
                return;
            }
        }
        // Background merging: checkpoints leave one small chunk per tag each time.
        let min_run = if job.compact { 2 } else { 8 };
        match shared.store.merge_small(min_run) {
            Ok((0, _)) => {}
            Ok((removed, written)) => {
                tracing::debug!(removed, written, "historian merged small chunks")
            }
            Err(e) => tracing::warn!(error = %e, "merging small chunks failed; will retry"),
        }
        update_rollups(&shared);
        if job.compact && !shared.store.compact_file() {
            tracing::debug!("database file compaction skipped (readers active or nothing to do)");
        }
        if let Some(done) = job.done {
            let _ = done.send(result);
        }
        run_retention(&shared, &mut last_retention);
    }
}

/// Compresses a frozen memtable into chunks and commits them with the checkpoint LSN.
fn checkpoint(shared: &Arc<Shared>, mem: &Arc<Memtable>) -> Result<u64, HistorianError> {
    let mut parts = Vec::new();
    // Long heads are cut to fill the store's pages, except those sharing their timestamps
    // with other tags' (a poll group), which are cut alike so that they still share.
    let grouped: std::collections::HashSet<usize> = {
        let cols: Vec<&[i64]> = mem.heads.iter().map(|h| h.ts.as_slice()).collect();
        chunk::identical_columns(&cols)
            .into_iter()
            .flatten()
            .collect()
    };
    for (hid, head) in mem.heads.iter().enumerate() {
        if head.is_empty() {
            continue;
        }
        let fitted = if head.len() > chunk::MAX_CHUNK_SAMPLES && !grouped.contains(&hid) {
            chunk::fit_pages(&head.ts, &head.values, &head.quality)
                .map_err(|e| HistorianError::Storage(format!("cannot compress a chunk: {e}")))?
        } else {
            Vec::new()
        };
        let mut fitted = fitted.into_iter();
        let mut start = 0;
        while start < head.len() {
            let end = fitted
                .next()
                .unwrap_or_else(|| chunk::chunk_end(&head.values, start));
            let (first, last) = head.ts[start..end]
                .iter()
                .fold((i64::MAX, i64::MIN), |(a, b), &t| (a.min(t), b.max(t)));
            parts.push((
                ChunkKey {
                    hid: hid as u32,
                    last_ts: last,
                    first_ts: first,
                    seq: 0,
                },
                head.ts[start..end].to_vec(),
                head.values[start..end].to_vec(),
                head.quality[start..end].to_vec(),
            ));
            start = end;
        }
    }
    // The tags of one poll group share their timestamps: stored once.
    let (chunks, shared_ts) = store::encode_chunks(parts)?;
    let n = chunks.len() as u64;
    let payload: u64 = chunks.iter().map(|c| c.1.len() as u64).sum::<u64>()
        + shared_ts.iter().map(|s| s.column.len() as u64).sum::<u64>();
    shared
        .counters
        .chunk_payload_bytes
        .fetch_add(payload, Ordering::Relaxed);
    // Commit under the state lock so no query sees both the new chunks and the frozen memtable.
    let mut st = shared.state.write();
    shared.store.commit_chunks(chunks, shared_ts, mem.lsn)?;
    st.frozen.retain(|f| !Arc::ptr_eq(f, mem));
    Ok(n)
}

/// Brings the hourly rollups of every tag with new samples up to date.
fn update_rollups(shared: &Arc<Shared>) {
    let pending = match shared.store.rollups_pending() {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read pending rollups; will retry");
            return;
        }
    };
    for (hid, dirty) in pending {
        if let Err(e) = shared.store.roll_up(hid, dirty) {
            tracing::warn!(hid, error = %e, "cannot update rollups; will retry");
        }
    }
}

fn run_retention(shared: &Arc<Shared>, last_run: &mut Instant) {
    if shared.cfg.retention.is_empty() || last_run.elapsed() < Duration::from_secs(60) {
        return;
    }
    *last_run = Instant::now();
    let now = Timestamp::now().0;
    let mut rules = shared.cfg.retention.clone();
    rules.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
    let cutoffs: Vec<(u32, i64)> = {
        let tags = shared.tags.read();
        tags.paths
            .iter()
            .enumerate()
            .filter_map(|(hid, p)| {
                let p = p.as_ref()?;
                let rule = rules.iter().find(|r| p.has_prefix(&r.prefix))?;
                Some((hid as u32, now - rule.keep.as_micros() as i64))
            })
            .collect()
    };
    match shared.store.drop_before(&cutoffs) {
        Ok(n) if n > 0 => {
            shared
                .counters
                .retention_dropped_chunks
                .fetch_add(n, Ordering::Relaxed);
            tracing::info!(chunks = n, "retention dropped expired chunks");
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "retention failed; will retry"),
    }
}
