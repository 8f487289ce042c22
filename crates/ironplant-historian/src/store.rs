//! Chunk storage in redb (ACID, pure Rust): the tag registry, the compressed chunks, and the
//! checkpoint LSN, committed together so chunks and the WAL position never disagree.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use ironplant_core::TagPath;
use parking_lot::RwLock;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::chunk;
use crate::memtable::Raw;
use crate::HistorianError;

/// path → historian tag id.
const TAGS: TableDefinition<'_, &str, u32> = TableDefinition::new("tags");
/// (hid, last_ts, first_ts, seq) → chunk bytes. Ordered by last_ts so a range scan from `from`
/// finds every chunk that can hold samples at or after it.
const CHUNKS: TableDefinition<'_, (u32, i64, i64, u64), &[u8]> = TableDefinition::new("chunks");
/// hid → the longest time span of any of its chunks (bounds how far a scan must look).
const SPANS: TableDefinition<'_, u32, i64> = TableDefinition::new("spans");
const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");
/// Hourly rollups: (hid, hour start µs) → [`crate::aggregate::Summary`] of that hour, computed
/// from the raw samples with the exact state an aggregate query carries (the value held from
/// before the hour for the time-weighted average, the counter for Delta). Kept when retention
/// drops the raw chunks.
const ROLLUP_1H: TableDefinition<'_, (u32, i64), &[u8]> = TableDefinition::new("rollup_1h");
/// hid → the end of the hours rolled up (every hour before it has its row).
const ROLLUP_MARK: TableDefinition<'_, u32, i64> = TableDefinition::new("rollup_mark");
/// hid → the earliest sample committed since its rollups were last brought up to date
/// (written with the chunks, in their transaction).
const ROLLUP_DIRTY: TableDefinition<'_, u32, i64> = TableDefinition::new("rollup_dirty");
/// One hour in µs: the rollup's interval.
pub const HOUR_US: i64 = 3_600_000_000;

/// The chunks that are not full (fewer than `chunk::MAX_CHUNK_SAMPLES` samples), keyed as in
/// `CHUNKS`: what background merging looks at, whatever the age of their data.
const SMALL: TableDefinition<'_, (u32, i64, i64, u64), ()> = TableDefinition::new("small");
/// Shared timestamp columns: id → `[references u32 LE][chunk::encode_ts_column]`. The tags of
/// one poll group are stamped once per poll, so their chunks' timestamps are identical: stored
/// once here, referenced by id from each chunk (and freed with the last reference).
const TIMES: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("times");

/// A timestamp column shared by the chunks at `members` (indices into the chunks committed
/// with it); they were encoded with [`chunk::TsColumn::Shared`] and get its id at commit.
pub struct SharedTs {
    pub column: Vec<u8>,
    pub members: Vec<usize>,
}

/// Whether a chunk has room for more samples (a candidate for merging).
fn not_full(bytes: &[u8]) -> bool {
    chunk::header(bytes).is_ok_and(|h| !chunk::is_full(h.count as usize, bytes.len()))
}

/// The timestamps of shared column `id`.
fn times_of(
    t: &impl ReadableTable<u64, &'static [u8]>,
    id: u64,
) -> Result<Vec<i64>, chunk::ChunkError> {
    let row = t
        .get(id)
        .map_err(|e| chunk::ChunkError::Pco(format!("shared timestamps {id}: {e}")))?
        .ok_or(crate::codec::Malformed("missing shared timestamps"))?;
    let v = row.value();
    if v.len() < 4 {
        return Err(crate::codec::Malformed("shared timestamps too short").into());
    }
    chunk::decode_ts_column(&v[4..])
}

/// Drops one reference to the shared column of `bytes` (a chunk being deleted), if it has one.
fn release_ts(
    t: &mut redb::Table<'_, u64, &'static [u8]>,
    bytes: &[u8],
) -> Result<(), HistorianError> {
    let Ok(Some(id)) = chunk::ts_ref(bytes) else {
        return Ok(());
    };
    let row = t.get(id).map_err(storage)?.map(|v| v.value().to_vec());
    if let Some(mut v) = row.filter(|v| v.len() >= 4) {
        let refs = u32::from_le_bytes([v[0], v[1], v[2], v[3]]).saturating_sub(1);
        if refs == 0 {
            t.remove(id).map_err(storage)?;
        } else {
            v[..4].copy_from_slice(&refs.to_le_bytes());
            t.insert(id, v.as_slice()).map_err(storage)?;
        }
    }
    Ok(())
}

/// Stores shared columns under new ids (from `META.next_times_id`) and points their member
/// chunks at them.
fn store_shared(
    txn: &redb::WriteTransaction,
    shared: Vec<SharedTs>,
    chunks: &mut [(ChunkKey, Vec<u8>)],
) -> Result<(), HistorianError> {
    if shared.is_empty() {
        return Ok(());
    }
    let mut meta = txn.open_table(META).map_err(storage)?;
    let mut next = meta
        .get("next_times_id")
        .map_err(storage)?
        .map_or(1, |v| v.value());
    let mut t = txn.open_table(TIMES).map_err(storage)?;
    for s in shared {
        let id = next;
        next += 1;
        let mut row = Vec::with_capacity(4 + s.column.len());
        row.extend_from_slice(&(s.members.len() as u32).to_le_bytes());
        row.extend_from_slice(&s.column);
        t.insert(id, row.as_slice()).map_err(storage)?;
        for &i in &s.members {
            let c = chunks
                .get_mut(i)
                .ok_or_else(|| HistorianError::Storage("shared timestamps: bad member".into()))?;
            chunk::set_ts_ref(&mut c.1, id).map_err(|e| HistorianError::Storage(e.to_string()))?;
        }
    }
    meta.insert("next_times_id", next).map_err(storage)?;
    Ok(())
}

/// One chunk's columns before encoding.
pub type ChunkParts = (ChunkKey, Vec<i64>, Vec<ironplant_core::Value>, Vec<u8>);
/// Encoded chunks and the shared timestamp columns they refer to.
pub type Encoded = (Vec<(ChunkKey, Vec<u8>)>, Vec<SharedTs>);

/// Splits chunk columns into shared timestamp columns (one per group of identical, irregular
/// ones) and encodes every chunk; returns the encoded chunks and the columns to store.
pub fn encode_chunks(parts: Vec<ChunkParts>) -> Result<Encoded, HistorianError> {
    let err =
        |e: chunk::ChunkError| HistorianError::Storage(format!("cannot compress a chunk: {e}"));
    let groups = {
        let cols: Vec<&[i64]> = parts.iter().map(|p| p.1.as_slice()).collect();
        chunk::identical_columns(&cols)
    };
    let mut group_of = vec![None; parts.len()];
    let mut shared = Vec::with_capacity(groups.len());
    for (g, members) in groups.into_iter().enumerate() {
        for &i in &members {
            group_of[i] = Some(g);
        }
        shared.push(SharedTs {
            column: chunk::encode_ts_column(&parts[members[0]].1).map_err(err)?,
            members,
        });
    }
    let mut out = Vec::with_capacity(parts.len());
    for (i, (key, ts, values, quality)) in parts.into_iter().enumerate() {
        let column = match group_of[i] {
            Some(_) => chunk::TsColumn::Shared { id: 0, ts: &ts },
            None => chunk::TsColumn::Inline(&ts),
        };
        out.push((
            key,
            chunk::encode_with(column, &values, &quality).map_err(err)?,
        ));
    }
    Ok((out, shared))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkKey {
    pub hid: u32,
    pub last_ts: i64,
    pub first_ts: i64,
    pub seq: u64,
}

pub struct Store {
    /// Behind a lock so that file compaction (which needs `&mut`) can exclude readers, and so
    /// that closing releases the file (and its lock) even while handles remain.
    db: RwLock<Option<Database>>,
    path: PathBuf,
    spans: RwLock<HashMap<u32, i64>>,
    next_seq: RwLock<u64>,
}

fn storage<E: std::fmt::Display>(e: E) -> HistorianError {
    HistorianError::Storage(e.to_string())
}

impl Store {
    pub fn open(path: &Path) -> Result<Store, HistorianError> {
        crate::private_fs::create_file(path).map_err(|e| {
            HistorianError::Storage(format!("cannot create {}: {e}", path.display()))
        })?;
        let db = Database::create(path)
            .map_err(|e| HistorianError::Storage(format!("cannot open {}: {e}", path.display())))?;
        let txn = db.begin_write().map_err(storage)?;
        {
            txn.open_table(TAGS).map_err(storage)?;
            txn.open_table(CHUNKS).map_err(storage)?;
            txn.open_table(SPANS).map_err(storage)?;
            txn.open_table(META).map_err(storage)?;
            txn.open_table(TIMES).map_err(storage)?;
            txn.open_table(SMALL).map_err(storage)?;
            txn.open_table(ROLLUP_1H).map_err(storage)?;
            txn.open_table(ROLLUP_MARK).map_err(storage)?;
            let mut dirty = txn.open_table(ROLLUP_DIRTY).map_err(storage)?;
            // A file from before rollups: roll every tag up from its first chunk.
            let mut meta = txn.open_table(META).map_err(storage)?;
            if meta.get("rollups").map_err(storage)?.is_none() {
                let chunks = txn.open_table(CHUNKS).map_err(storage)?;
                let mut first: HashMap<u32, i64> = HashMap::new();
                for row in chunks.iter().map_err(storage)? {
                    let (k, _) = row.map_err(storage)?;
                    let (hid, _, f, _) = k.value();
                    let e = first.entry(hid).or_insert(f);
                    *e = (*e).min(f);
                }
                for (hid, f) in first {
                    dirty.insert(hid, f).map_err(storage)?;
                }
                meta.insert("rollups", 1).map_err(storage)?;
            }
            drop(meta);
            drop(dirty);
            // A file from before the index: fill it once.
            let mut meta = txn.open_table(META).map_err(storage)?;
            if meta.get("small_index").map_err(storage)?.is_none() {
                let chunks = txn.open_table(CHUNKS).map_err(storage)?;
                let mut small = txn.open_table(SMALL).map_err(storage)?;
                for row in chunks.iter().map_err(storage)? {
                    let (k, v) = row.map_err(storage)?;
                    if not_full(v.value()) {
                        small.insert(k.value(), ()).map_err(storage)?;
                    }
                }
                meta.insert("small_index", 1).map_err(storage)?;
            }
        }
        txn.commit().map_err(storage)?;
        Ok(Store {
            db: RwLock::new(Some(db)),
            path: path.to_owned(),
            spans: RwLock::new(HashMap::new()),
            next_seq: RwLock::new(0),
        })
    }

    /// Loads the checkpoint LSN and the tag registry (and caches spans).
    pub fn load(&self) -> Result<(u64, Vec<(String, u32)>), HistorianError> {
        let txn = self.db()?.begin_read().map_err(storage)?;
        let meta = txn.open_table(META).map_err(storage)?;
        let checkpoint = meta
            .get("checkpoint_lsn")
            .map_err(storage)?
            .map_or(0, |v| v.value());
        *self.next_seq.write() = meta
            .get("next_seq")
            .map_err(storage)?
            .map_or(0, |v| v.value());
        let mut tags = Vec::new();
        for row in txn
            .open_table(TAGS)
            .map_err(storage)?
            .iter()
            .map_err(storage)?
        {
            let (k, v) = row.map_err(storage)?;
            tags.push((k.value().to_owned(), v.value()));
        }
        let mut spans = self.spans.write();
        for row in txn
            .open_table(SPANS)
            .map_err(storage)?
            .iter()
            .map_err(storage)?
        {
            let (k, v) = row.map_err(storage)?;
            spans.insert(k.value(), v.value());
        }
        Ok((checkpoint, tags))
    }

    pub fn register(&self, new: &[(TagPath, u32)]) -> Result<(), HistorianError> {
        if new.is_empty() {
            return Ok(());
        }
        let txn = self.db()?.begin_write().map_err(storage)?;
        {
            let mut t = txn.open_table(TAGS).map_err(storage)?;
            for (p, hid) in new {
                t.insert(p.as_str(), *hid).map_err(storage)?;
            }
        }
        txn.commit().map_err(storage)
    }

    /// Inserts chunks and sets the checkpoint LSN in one durable transaction.
    pub fn commit_chunks(
        &self,
        mut chunks: Vec<(ChunkKey, Vec<u8>)>,
        shared: Vec<SharedTs>,
        checkpoint_lsn: u64,
    ) -> Result<(), HistorianError> {
        let txn = self.db()?.begin_write().map_err(storage)?;
        store_shared(&txn, shared, &mut chunks)?;
        let mut seq = *self.next_seq.read();
        let mut spans = self.spans.read().clone();
        {
            let mut t = txn.open_table(CHUNKS).map_err(storage)?;
            let mut s = txn.open_table(SPANS).map_err(storage)?;
            let mut small = txn.open_table(SMALL).map_err(storage)?;
            let mut dirty = txn.open_table(ROLLUP_DIRTY).map_err(storage)?;
            for (k, bytes) in &chunks {
                let earliest = dirty.get(k.hid).map_err(storage)?.map(|v| v.value());
                if earliest.is_none_or(|e| k.first_ts < e) {
                    dirty.insert(k.hid, k.first_ts).map_err(storage)?;
                }
                t.insert((k.hid, k.last_ts, k.first_ts, seq), bytes.as_slice())
                    .map_err(storage)?;
                if not_full(bytes) {
                    small
                        .insert((k.hid, k.last_ts, k.first_ts, seq), ())
                        .map_err(storage)?;
                }
                seq += 1;
                let span = k.last_ts.saturating_sub(k.first_ts);
                let cur = spans.entry(k.hid).or_insert(0);
                if span > *cur {
                    *cur = span;
                    s.insert(k.hid, span).map_err(storage)?;
                }
            }
            let mut m = txn.open_table(META).map_err(storage)?;
            m.insert("checkpoint_lsn", checkpoint_lsn)
                .map_err(storage)?;
            m.insert("next_seq", seq).map_err(storage)?;
        }
        txn.commit().map_err(storage)?;
        *self.next_seq.write() = seq;
        *self.spans.write() = spans;
        Ok(())
    }

    fn db(&self) -> Result<parking_lot::MappedRwLockReadGuard<'_, Database>, HistorianError> {
        parking_lot::RwLockReadGuard::try_map(self.db.read(), Option::as_ref)
            .map_err(|_| HistorianError::Closed)
    }

    /// Closes the database file; later calls fail with `Closed`.
    pub fn close(&self) {
        *self.db.write() = None;
    }

    pub fn begin_read(&self) -> Result<redb::ReadTransaction, HistorianError> {
        self.db()?.begin_read().map_err(storage)
    }

    pub fn span(&self, hid: u32) -> i64 {
        self.spans.read().get(&hid).copied().unwrap_or(0)
    }

    fn decode(
        &self,
        times: &impl ReadableTable<u64, &'static [u8]>,
        key: (u32, i64, i64, u64),
        bytes: &[u8],
        path: &str,
        warnings: &mut Vec<String>,
    ) -> Option<chunk::Columns> {
        match chunk::decode_with(bytes, &mut |id| times_of(times, id)) {
            Ok((_, cols)) => Some(cols),
            Err(e) => {
                warnings.push(format!(
                    "corrupt chunk of tag {path} covering {} .. {} ({e}); its samples were skipped",
                    ironplant_core::Timestamp(key.2),
                    ironplant_core::Timestamp(key.1)
                ));
                None
            }
        }
    }

    /// Calls `f(watermark, chunk)` with every readable chunk that may hold samples in
    /// `[from, to)`, in order of their last timestamp, until `f` returns false. `watermark` is
    /// the earliest first timestamp of any chunk still to come: samples before it are final.
    /// Corrupt chunks become warnings.
    #[allow(clippy::too_many_arguments)]
    pub fn visit(
        &self,
        txn: &redb::ReadTransaction,
        hid: u32,
        from: i64,
        to: i64,
        warnings: &mut Vec<String>,
        path: &str,
        mut f: impl FnMut(i64, chunk::Columns) -> bool,
    ) -> Result<(), HistorianError> {
        let t = txn.open_table(CHUNKS).map_err(storage)?;
        let times = txn.open_table(TIMES).map_err(storage)?;
        let horizon = to.saturating_add(self.span(hid));
        // Keys first (cheap), so each chunk knows the earliest start of those after it.
        let mut keys = Vec::new();
        for row in t
            .range((hid, from, i64::MIN, 0)..=(hid, i64::MAX, i64::MAX, u64::MAX))
            .map_err(storage)?
        {
            let (k, _) = row.map_err(storage)?;
            let key = k.value();
            if key.1 > horizon {
                break;
            }
            if key.2 < to {
                keys.push(key);
            }
        }
        let mut after = vec![i64::MAX; keys.len()];
        for i in (0..keys.len().saturating_sub(1)).rev() {
            after[i] = after[i + 1].min(keys[i + 1].2);
        }
        for (i, key) in keys.into_iter().enumerate() {
            let Some(v) = t.get(key).map_err(storage)? else {
                continue;
            };
            if let Some(c) = self.decode(&times, key, v.value(), path, warnings) {
                if !f(after[i], c) {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Samples with `from <= ts < to` from every chunk that may hold some (in chunk order).
    pub fn scan(
        &self,
        txn: &redb::ReadTransaction,
        hid: u32,
        from: i64,
        to: i64,
        warnings: &mut Vec<String>,
        path: &str,
    ) -> Result<Vec<Raw>, HistorianError> {
        let mut out = Vec::new();
        self.visit(txn, hid, from, to, warnings, path, |_, c| {
            for i in (0..c.ts.len()).filter(|&i| c.ts[i] >= from && c.ts[i] < to) {
                out.push(Raw {
                    ts: c.ts[i],
                    value: c.values[i].clone(),
                    quality: c.quality[i],
                });
            }
            true
        })?;
        Ok(out)
    }

    /// The latest sample strictly before `t` in chunks.
    pub fn before(
        &self,
        txn: &redb::ReadTransaction,
        hid: u32,
        t: i64,
        warnings: &mut Vec<String>,
        path: &str,
    ) -> Result<Option<Raw>, HistorianError> {
        let table = txn.open_table(CHUNKS).map_err(storage)?;
        let times = txn.open_table(TIMES).map_err(storage)?;
        let mut best: Option<Raw> = None;
        let consider = |c: &chunk::Columns, best: &mut Option<Raw>| {
            for i in 0..c.ts.len() {
                if c.ts[i] < t && best.as_ref().is_none_or(|b| c.ts[i] >= b.ts) {
                    *best = Some(Raw {
                        ts: c.ts[i],
                        value: c.values[i].clone(),
                        quality: c.quality[i],
                    });
                }
            }
        };
        // Chunks ending before t: the one ending last holds the latest such sample (skipping
        // corrupt ones).
        for row in table
            .range((hid, i64::MIN, i64::MIN, 0)..(hid, t, i64::MIN, 0))
            .map_err(storage)?
            .rev()
        {
            let (k, v) = row.map_err(storage)?;
            if let Some(c) = self.decode(&times, k.value(), v.value(), path, warnings) {
                consider(&c, &mut best);
                break;
            }
        }
        // Chunks ending at or after t that start before it.
        let horizon = t.saturating_add(self.span(hid));
        for row in table
            .range((hid, t, i64::MIN, 0)..=(hid, i64::MAX, i64::MAX, u64::MAX))
            .map_err(storage)?
        {
            let (k, v) = row.map_err(storage)?;
            let key = k.value();
            if key.1 > horizon {
                break;
            }
            if key.2 < t {
                if let Some(c) = self.decode(&times, key, v.value(), path, warnings) {
                    consider(&c, &mut best);
                }
            }
        }
        Ok(best)
    }

    /// The earliest sample at or after `t` in chunks.
    pub fn after(
        &self,
        txn: &redb::ReadTransaction,
        hid: u32,
        t: i64,
        warnings: &mut Vec<String>,
        path: &str,
    ) -> Result<Option<Raw>, HistorianError> {
        let table = txn.open_table(CHUNKS).map_err(storage)?;
        let times = txn.open_table(TIMES).map_err(storage)?;
        let span = self.span(hid);
        let mut best: Option<Raw> = None;
        for row in table
            .range((hid, t, i64::MIN, 0)..=(hid, i64::MAX, i64::MAX, u64::MAX))
            .map_err(storage)?
        {
            let (k, v) = row.map_err(storage)?;
            let key = k.value();
            // A chunk ending at L starts at or after L - span: none further can beat `best`.
            if best
                .as_ref()
                .is_some_and(|b| key.1.saturating_sub(span) > b.ts)
            {
                break;
            }
            if let Some(c) = self.decode(&times, key, v.value(), path, warnings) {
                for i in 0..c.ts.len() {
                    if c.ts[i] >= t && best.as_ref().is_none_or(|b| c.ts[i] < b.ts) {
                        best = Some(Raw {
                            ts: c.ts[i],
                            value: c.values[i].clone(),
                            quality: c.quality[i],
                        });
                    }
                }
            }
        }
        Ok(best)
    }

    /// The latest sample of a tag in chunks.
    pub fn last_in_chunks(&self, hid: u32) -> Result<Option<Raw>, HistorianError> {
        let txn = self.begin_read()?;
        let mut ignored = Vec::new();
        self.before(&txn, hid, i64::MAX, &mut ignored, "")
    }

    /// Deletes chunks whose last sample is older than the tag's cutoff.
    pub fn drop_before(&self, cutoffs: &[(u32, i64)]) -> Result<u64, HistorianError> {
        if cutoffs.is_empty() {
            return Ok(0);
        }
        let txn = self.db()?.begin_write().map_err(storage)?;
        let mut n = 0;
        {
            let mut t = txn.open_table(CHUNKS).map_err(storage)?;
            let mut times = txn.open_table(TIMES).map_err(storage)?;
            let mut small = txn.open_table(SMALL).map_err(storage)?;
            for &(hid, cutoff) in cutoffs {
                let keys: Vec<(u32, i64, i64, u64)> = t
                    .range((hid, i64::MIN, i64::MIN, 0)..(hid, cutoff, i64::MIN, 0))
                    .map_err(storage)?
                    .filter_map(|r| r.ok().map(|(k, _)| k.value()))
                    .collect();
                for k in keys {
                    if let Some(v) = t.remove(k).map_err(storage)? {
                        release_ts(&mut times, v.value())?;
                    }
                    small.remove(k).map_err(storage)?;
                    n += 1;
                }
            }
        }
        txn.commit().map_err(storage)?;
        Ok(n)
    }

    /// Merges runs of neighbouring chunks of each tag that are not full into chunks of up to
    /// [`chunk::MAX_CHUNK_SAMPLES`]: a run is merged once it has `min_run` chunks or enough samples
    /// for half a full chunk. Checkpoints write one chunk per tag each time, so without this a
    /// tag polled every second would keep ten-minute chunks whose fixed overhead costs more than
    /// their data. Corrupt chunks are never merged (they stay, reported by queries).
    /// Candidates come from the `small` index, so data of any age is merged (a backfill of last
    /// year's files as well as today's checkpoints) without reading the full chunks of the
    /// history. Returns (chunks merged away, chunks written).
    pub fn merge_small(&self, min_run: usize) -> Result<(u64, u64), HistorianError> {
        const ENOUGH: u32 = chunk::MAX_CHUNK_SAMPLES as u32 / 2;
        // A run holds up to a few fitted chunks' worth.
        const RUN_SAMPLES: u32 = 4 * chunk::MAX_FITTED_SAMPLES as u32;
        type Key = (u32, i64, i64, u64);
        let mut plans: Vec<Vec<(Key, Vec<u8>)>> = Vec::new();
        let mut stale: Vec<Key> = Vec::new();
        {
            let txn = self.begin_read()?;
            let t = txn.open_table(CHUNKS).map_err(storage)?;
            let small = txn.open_table(SMALL).map_err(storage)?;
            let mut run: Vec<(Key, Vec<u8>)> = Vec::new();
            let mut run_samples = 0u32;
            let mut run_bytes = 0usize;
            let close = |run: &mut Vec<(Key, Vec<u8>)>,
                         samples: u32,
                         bytes: usize,
                         plans: &mut Vec<Vec<(Key, Vec<u8>)>>| {
                if run.len() >= 2
                    && (run.len() >= min_run || samples >= ENOUGH || bytes >= chunk::FULL_BYTES)
                {
                    plans.push(std::mem::take(run));
                } else {
                    run.clear();
                }
            };
            for row in small.iter().map_err(storage)? {
                let (k, _) = row.map_err(storage)?;
                let key = k.value();
                let Some(v) = t.get(key).map_err(storage)? else {
                    stale.push(key);
                    continue;
                };
                let bytes = v.value();
                let header = chunk::header(bytes).ok();
                // Chunks of large values merge only up to TARGET_CHUNK_BYTES of stored bytes
                // (tagged values are stored uncompressed; a constant chunk decodes to clones of
                // one value, which share its Arc).
                let fits = header.is_some_and(|h| {
                    run_samples + h.count <= RUN_SAMPLES
                        && run_bytes + bytes.len() <= chunk::TARGET_CHUNK_BYTES
                });
                // Neighbours only: no other chunk of the tag between the run and this one.
                let adjacent = match run.last() {
                    Some((prev, _)) if prev.0 == key.0 => t
                        .range::<Key>((
                            std::ops::Bound::Excluded(*prev),
                            std::ops::Bound::Excluded(key),
                        ))
                        .map_err(storage)?
                        .next()
                        .is_none(),
                    _ => false,
                };
                if !(adjacent && fits) {
                    close(&mut run, run_samples, run_bytes, &mut plans);
                    run_samples = 0;
                    run_bytes = 0;
                }
                if let Some(h) = header {
                    run_samples += h.count;
                    run_bytes += bytes.len();
                    run.push((key, bytes.to_vec()));
                }
            }
            close(&mut run, run_samples, run_bytes, &mut plans);
        }
        if plans.is_empty() && stale.is_empty() {
            return Ok((0, 0));
        }
        let txn = self.db()?.begin_write().map_err(storage)?;
        let (mut removed, mut written) = (0, 0);
        let mut seq = *self.next_seq.read();
        {
            let mut t = txn.open_table(CHUNKS).map_err(storage)?;
            let mut times = txn.open_table(TIMES).map_err(storage)?;
            let mut small = txn.open_table(SMALL).map_err(storage)?;
            for k in stale {
                small.remove(k).map_err(storage)?;
            }
            // Decode every plan first: the merged chunks of the tags of one poll group have
            // identical timestamps again, and share them again.
            let mut merged = Vec::new();
            for plan in plans {
                let mut rows: Vec<(i64, ironplant_core::Value, u8)> = Vec::new();
                let mut ok = true;
                for (_, bytes) in &plan {
                    match chunk::decode_with(bytes, &mut |id| times_of(&times, id)) {
                        Ok((_, c)) => rows.extend(
                            c.ts.into_iter()
                                .zip(c.values)
                                .zip(c.quality)
                                .map(|((t, v), q)| (t, v, q)),
                        ),
                        Err(_) => ok = false,
                    }
                }
                if !ok || rows.is_empty() {
                    continue;
                }
                rows.sort_by_key(|r| r.0);
                let ts: Vec<i64> = rows.iter().map(|r| r.0).collect();
                let quality: Vec<u8> = rows.iter().map(|r| r.2).collect();
                let values: Vec<ironplant_core::Value> = rows.into_iter().map(|r| r.1).collect();
                let hid = plan[0].0 .0;
                for (k, bytes) in &plan {
                    t.remove(*k).map_err(storage)?;
                    small.remove(*k).map_err(storage)?;
                    release_ts(&mut times, bytes)?;
                    removed += 1;
                }
                let (first, last) = (ts[0], ts[ts.len() - 1]);
                let key = ChunkKey {
                    hid,
                    last_ts: last,
                    first_ts: first,
                    seq: 0,
                };
                merged.push((key, ts, values, quality));
            }
            drop(times);
            // Cut each run: runs that share their timestamps with other tags' (a poll group)
            // at the same counts, so they still share; the others to fill pages.
            let groups = {
                let cols: Vec<&[i64]> = merged.iter().map(|m| m.1.as_slice()).collect();
                chunk::identical_columns(&cols)
            };
            let mut grouped = vec![false; merged.len()];
            for g in &groups {
                for &i in g {
                    grouped[i] = true;
                }
            }
            let mut parts = Vec::new();
            for (i, (key, ts, values, quality)) in merged.into_iter().enumerate() {
                let ends = if grouped[i] {
                    let mut ends = Vec::new();
                    let mut at = 0;
                    while at < ts.len() {
                        at = chunk::chunk_end(&values, at);
                        ends.push(at);
                    }
                    ends
                } else {
                    chunk::fit_pages(&ts, &values, &quality)
                        .map_err(|e| HistorianError::Storage(e.to_string()))?
                };
                let mut from = 0;
                for end in ends {
                    let (first, last) = ts[from..end]
                        .iter()
                        .fold((i64::MAX, i64::MIN), |(a, b), &t| (a.min(t), b.max(t)));
                    parts.push((
                        ChunkKey {
                            hid: key.hid,
                            last_ts: last,
                            first_ts: first,
                            seq: 0,
                        },
                        ts[from..end].to_vec(),
                        values[from..end].to_vec(),
                        quality[from..end].to_vec(),
                    ));
                    from = end;
                }
            }
            let (mut chunks, shared) = encode_chunks(parts)?;
            store_shared(&txn, shared, &mut chunks)?;
            for (key, bytes) in chunks {
                let (hid, first, last) = (key.hid, key.first_ts, key.last_ts);
                t.insert((hid, last, first, seq), bytes.as_slice())
                    .map_err(storage)?;
                if not_full(&bytes) {
                    small.insert((hid, last, first, seq), ()).map_err(storage)?;
                }
                seq += 1;
                written += 1;
                let span = last - first;
                if span > self.span(hid) {
                    txn.open_table(SPANS)
                        .map_err(storage)?
                        .insert(hid, span)
                        .map_err(storage)?;
                    self.spans.write().insert(hid, span);
                }
            }
            txn.open_table(META)
                .map_err(storage)?
                .insert("next_seq", seq)
                .map_err(storage)?;
        }
        txn.commit().map_err(storage)?;
        *self.next_seq.write() = seq;
        Ok((removed, written))
    }

    /// Tags whose rollups wait for new samples, with the earliest of those.
    pub fn rollups_pending(&self) -> Result<Vec<(u32, i64)>, HistorianError> {
        let txn = self.begin_read()?;
        let t = txn.open_table(ROLLUP_DIRTY).map_err(storage)?;
        let mut out = Vec::new();
        for row in t.iter().map_err(storage)? {
            let (k, v) = row.map_err(storage)?;
            out.push((k.value(), v.value()));
        }
        Ok(out)
    }

    /// Brings a tag's hourly rollups up to date from `dirty` (its earliest new sample) to the
    /// start of the hour of its latest sample in chunks (that hour may still fill). Reads the
    /// raw samples a day at a time.
    pub fn roll_up(&self, hid: u32, dirty: i64) -> Result<(), HistorianError> {
        let txn = self.begin_read()?;
        let last = txn
            .open_table(CHUNKS)
            .map_err(storage)?
            .range((hid, i64::MIN, i64::MIN, 0)..=(hid, i64::MAX, i64::MAX, u64::MAX))
            .map_err(storage)?
            .next_back()
            .transpose()
            .map_err(storage)?
            .map(|(k, _)| k.value().1);
        let first = txn
            .open_table(CHUNKS)
            .map_err(storage)?
            .range((hid, i64::MIN, i64::MIN, 0)..=(hid, i64::MAX, i64::MAX, u64::MAX))
            .map_err(storage)?
            .next()
            .transpose()
            .map_err(storage)?
            .map(|(k, _)| k.value().2);
        let mark = self.rollup_mark(&txn, hid)?;
        // From the first hour not rolled up yet, or the hour of the earliest new sample if it
        // is older — but never before the raw data retention left (those hours keep the
        // rollups made while their samples were there).
        let floor = |t: i64| t - t.rem_euclid(HOUR_US);
        let mut start = floor(dirty);
        if mark != i64::MIN {
            start = start.min(mark);
        }
        if let Some(f) = first {
            start = start.max(floor(f));
        }
        let seal = last.map_or(i64::MIN, floor);
        let mut rows = Vec::new();
        if start < seal {
            let mut warnings = Vec::new();
            let before = self.before(&txn, hid, start, &mut warnings, "")?;
            let mut agg =
                crate::aggregate::Aggregator::summaries(before.as_ref(), start, seal, HOUR_US);
            let mut w = start;
            while w < seal {
                let end = w.saturating_add(24 * HOUR_US).min(seal);
                let mut samples = self.scan(&txn, hid, w, end, &mut warnings, "")?;
                samples.sort_by_key(|r| r.ts);
                for r in &samples {
                    agg.push(r);
                }
                w = end;
            }
            rows = agg.finish_summaries();
        }
        drop(txn);
        let txn = self.db()?.begin_write().map_err(storage)?;
        {
            let mut t = txn.open_table(ROLLUP_1H).map_err(storage)?;
            for (hour, summary) in &rows {
                t.insert((hid, *hour), summary.encode().as_slice())
                    .map_err(storage)?;
            }
            let mut marks = txn.open_table(ROLLUP_MARK).map_err(storage)?;
            let mark = marks
                .get(hid)
                .map_err(storage)?
                .map_or(i64::MIN, |v| v.value());
            if seal > mark {
                marks.insert(hid, seal).map_err(storage)?;
            }
            // Done with what was pending (unless more came meanwhile).
            let mut d = txn.open_table(ROLLUP_DIRTY).map_err(storage)?;
            let now = d.get(hid).map_err(storage)?.map(|v| v.value());
            if now == Some(dirty) {
                d.remove(hid).map_err(storage)?;
            }
        }
        txn.commit().map_err(storage)
    }

    /// The hourly summaries of `[from, to)` (hour-aligned) when the rollups cover all of it
    /// and nothing newer is pending for those hours; `None` otherwise.
    pub fn rollups(
        &self,
        txn: &redb::ReadTransaction,
        hid: u32,
        from: i64,
        to: i64,
    ) -> Result<Option<Vec<crate::aggregate::Summary>>, HistorianError> {
        let mark = txn
            .open_table(ROLLUP_MARK)
            .map_err(storage)?
            .get(hid)
            .map_err(storage)?
            .map_or(i64::MIN, |v| v.value());
        let dirty = txn
            .open_table(ROLLUP_DIRTY)
            .map_err(storage)?
            .get(hid)
            .map_err(storage)?
            .map_or(i64::MAX, |v| v.value());
        if to > mark || dirty < to {
            return Ok(None);
        }
        let t = txn.open_table(ROLLUP_1H).map_err(storage)?;
        let mut out = Vec::with_capacity(usize::try_from((to - from) / HOUR_US).unwrap_or(0));
        let mut expect = from;
        for row in t.range((hid, from)..(hid, to)).map_err(storage)? {
            let (k, v) = row.map_err(storage)?;
            let Some(s) = crate::aggregate::Summary::decode(v.value()) else {
                return Ok(None);
            };
            if k.value().1 != expect {
                return Ok(None);
            }
            out.push(s);
            expect += HOUR_US;
        }
        Ok((expect == to).then_some(out))
    }

    /// The end of a tag's hourly rollups (`i64::MIN`: none).
    pub fn rollup_mark(
        &self,
        txn: &redb::ReadTransaction,
        hid: u32,
    ) -> Result<i64, HistorianError> {
        Ok(txn
            .open_table(ROLLUP_MARK)
            .map_err(storage)?
            .get(hid)
            .map_err(storage)?
            .map_or(i64::MIN, |v| v.value()))
    }

    /// Where the bytes of the database file go (reads every chunk).
    pub fn breakdown(&self) -> Result<crate::StorageBreakdown, HistorianError> {
        let txn = self.begin_read()?;
        let mut b = crate::StorageBreakdown {
            file_bytes: self.file_bytes(),
            ..Default::default()
        };
        for row in txn
            .open_table(CHUNKS)
            .map_err(storage)?
            .iter()
            .map_err(storage)?
        {
            let (_, v) = row.map_err(storage)?;
            let bytes = v.value();
            b.chunks += 1;
            // Key: hid, last, first, seq.
            b.chunk_bytes += bytes.len() as u64 + 28;
            if let (Ok(h), Ok([head, ts, q, values])) =
                (chunk::header(bytes), chunk::sections(bytes))
            {
                b.samples += u64::from(h.count);
                b.header_bytes += head as u64 + 28;
                b.timestamp_bytes += ts as u64;
                b.quality_bytes += q as u64;
                b.value_bytes += values as u64;
            }
        }
        for row in txn
            .open_table(TIMES)
            .map_err(storage)?
            .iter()
            .map_err(storage)?
        {
            let (_, v) = row.map_err(storage)?;
            b.shared_columns += 1;
            b.timestamp_bytes += v.value().len() as u64 + 8;
            b.chunk_bytes += v.value().len() as u64 + 8;
        }
        drop(txn);
        // The engine's own view (a write transaction, aborted: nothing changes).
        let w = self.db()?.begin_write().map_err(storage)?;
        let st = w.stats().map_err(storage)?;
        b.engine_allocated_bytes = st.allocated_pages() * st.page_size() as u64;
        b.engine_metadata_bytes = st.metadata_bytes();
        b.engine_fragmented_bytes = st.fragmented_bytes();
        w.abort().map_err(storage)?;
        Ok(b)
    }

    /// Gives free pages back to the file system. Fails harmlessly (returns false) while queries
    /// hold read transactions; redb reuses free pages anyway, so this only shrinks the file.
    pub fn compact_file(&self) -> bool {
        self.db
            .write()
            .as_mut()
            .is_some_and(|db| db.compact().unwrap_or(false))
    }

    /// Bytes of the database file on disk.
    pub fn file_bytes(&self) -> u64 {
        std::fs::metadata(&self.path).map_or(0, |m| m.len())
    }

    /// Test helper: overwrites one byte of the first chunk of `hid`, as disk corruption would.
    #[doc(hidden)]
    pub fn corrupt_first_chunk(&self, hid: u32) -> Result<bool, HistorianError> {
        let txn = self.db()?.begin_write().map_err(storage)?;
        let found = {
            let mut t = txn.open_table(CHUNKS).map_err(storage)?;
            let first = t
                .range((hid, i64::MIN, i64::MIN, 0)..=(hid, i64::MAX, i64::MAX, u64::MAX))
                .map_err(storage)?
                .next()
                .and_then(|r| r.ok())
                .map(|(k, v)| (k.value(), v.value().to_vec()));
            match first {
                Some((k, mut bytes)) => {
                    let mid = bytes.len() / 2;
                    bytes[mid] ^= 0x5A;
                    t.insert(k, bytes.as_slice()).map_err(storage)?;
                    true
                }
                None => false,
            }
        };
        txn.commit().map_err(storage)?;
        Ok(found)
    }
}
