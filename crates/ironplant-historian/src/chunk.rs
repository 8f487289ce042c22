//! Immutable compressed chunks: one tag's samples over a time span, columnar.
//!
//! Layout (little-endian):
//! ```text
//! version u8 = 1 | count u32 | first_ts i64 | last_ts i64 |
//! ts:      mode u8: 0 = len varint, pco(i64)     (pco finds delta-of-delta itself)
//!                   1 = step i64                 (strictly regular: first_ts + i·step)
//!                   2 = id u64                   (shared: the column is stored once, in the
//!                                                 store's `times` table, for every tag of a
//!                                                 poll group — see [`encode_ts_column`])
//! quality: runs varint, (code u8, run varint)*   (run-length: nearly always one run)
//! values:  kind u8, then
//!          0 F64:     len varint, pco(f64)       (pco detects the sensor's decimal grid)
//!          1 I64:     len varint, pco(i64)
//!          2 BOOL:    runs varint, (value u8, run varint)*
//!          3 GENERIC: tagged values (nulls, strings, mixed types)
//!          4 CONST:   one tagged value for every sample
//! crc32 u32 over everything before it
//! ```
//! Samples are kept in arrival order; readers sort if a chunk is not ordered (late data).

use ironplant_core::Value;

use crate::codec::{get_value, put_value, put_varint, Malformed, Reader};

const VERSION: u8 = 1;
/// Most samples one chunk holds; longer heads are split.
pub const MAX_CHUNK_SAMPLES: usize = 8192;
/// Bytes of values one chunk holds at most when they are large (arrays, DataSets, long strings;
/// by [`crate::codec::encoded_len_bound`]), unless it holds one sample: 8192 arrays of 65,536
/// floats would otherwise make a 4 GiB chunk that every query of the tag decodes whole.
pub const TARGET_CHUNK_BYTES: usize = 16 << 20;

/// Most samples of a chunk that merging sized to fill a page of the store ([`fit_pages`]).
pub const MAX_FITTED_SAMPLES: usize = 32_768;
/// Bytes a chunk may take to fill one 4 KiB page of the store together with its key (redb
/// gives every value of a page or more a power-of-two run of pages: a chunk of 4.1 kB takes
/// 8 kB; measured: values up to 4,000 bytes fit one page).
pub const PAGE_FIT_BYTES: usize = 3_990;
/// A chunk this large (or with [`MAX_CHUNK_SAMPLES`] samples) is full: merging leaves it alone.
pub const FULL_BYTES: usize = 3_400;

/// Where the chunk starting at `start` of `values` ends (exclusive): at most
/// [`MAX_CHUNK_SAMPLES`] samples and, past the first, [`TARGET_CHUNK_BYTES`] of values.
pub fn chunk_end(values: &[Value], start: usize) -> usize {
    chunk_end_max(values, start, MAX_CHUNK_SAMPLES)
}

/// Whether a stored chunk may still be merged with its neighbours.
pub fn is_full(count: usize, bytes: usize) -> bool {
    count >= MAX_CHUNK_SAMPLES || bytes >= FULL_BYTES
}

/// Cuts a run of one tag's samples into chunks that each fill one page of the store (as
/// close to [`PAGE_FIT_BYTES`] as a few trial encodings get, at most [`MAX_FITTED_SAMPLES`]);
/// returns the end of each chunk. Large values (tens of bytes a sample and more) are cut by
/// [`chunk_end`] instead: a page would hold too few of them.
pub fn fit_pages(ts: &[i64], values: &[Value], quality: &[u8]) -> Result<Vec<usize>, ChunkError> {
    let n = ts.len();
    let mut ends = Vec::new();
    let mut start = 0;
    let size =
        |a: usize, b: usize| encode(&ts[a..b], &values[a..b], &quality[a..b]).map(|c| c.len());
    while start < n {
        let hi = chunk_end_max(values, start, MAX_FITTED_SAMPLES);
        let all = size(start, hi)?;
        if all <= PAGE_FIT_BYTES {
            ends.push(hi);
            start = hi;
            continue;
        }
        let count = hi - start;
        if all / count > PAGE_FIT_BYTES / 64 {
            let end = chunk_end(values, start);
            ends.push(end);
            start = end;
            continue;
        }
        // Compressed size grows about linearly with the samples: guess, then correct.
        let (mut lo, mut up) = (1usize, count);
        let mut best = 1usize;
        let mut guess = count * PAGE_FIT_BYTES / all;
        for _ in 0..6 {
            let g = guess.clamp(lo, up - 1);
            let s = size(start, start + g)?;
            if s <= PAGE_FIT_BYTES {
                best = best.max(g);
                lo = g;
                if s * 100 >= PAGE_FIT_BYTES * 97 || lo + 1 >= up {
                    break;
                }
                guess = g * PAGE_FIT_BYTES / s.max(1);
                if guess <= g {
                    guess = g + 1;
                }
            } else {
                up = g;
                if lo + 1 >= up {
                    break;
                }
                guess = (g * PAGE_FIT_BYTES / s).min(g - 1);
            }
        }
        ends.push(start + best);
        start += best;
    }
    Ok(ends)
}

/// [`chunk_end`] with another sample limit.
pub fn chunk_end_max(values: &[Value], start: usize, max: usize) -> usize {
    let mut end = start;
    let mut bytes = 0usize;
    while end < values.len() && end - start < max {
        // A timestamp and a quality code come with each value.
        let size = 9 + crate::codec::encoded_len_bound(&values[end]);
        if end > start && bytes.saturating_add(size) > TARGET_CHUNK_BYTES {
            break;
        }
        bytes = bytes.saturating_add(size);
        end += 1;
    }
    end
}

/// A decoded chunk's columns.
#[derive(Debug, Clone, PartialEq)]
pub struct Columns {
    pub ts: Vec<i64>,
    pub values: Vec<Value>,
    pub quality: Vec<u8>,
}

/// The fixed-size start of a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub count: u32,
    pub first_ts: i64,
    pub last_ts: i64,
}

/// Why a chunk could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ChunkError {
    #[error("checksum mismatch")]
    Checksum,
    #[error(transparent)]
    Malformed(#[from] Malformed),
    #[error("compression failed: {0}")]
    Pco(String),
}

fn pco_config() -> pco::ChunkConfig {
    // Level 8 is pco's default: best ratio per CPU second for our mix.
    pco::ChunkConfig::default()
}

fn put_block(out: &mut Vec<u8>, block: &[u8]) {
    put_varint(out, block.len() as u64);
    out.extend_from_slice(block);
}

fn put_runs<T: Copy + PartialEq>(
    out: &mut Vec<u8>,
    items: impl Iterator<Item = T>,
    mut emit: impl FnMut(&mut Vec<u8>, T),
) {
    let mut runs: Vec<(T, u64)> = Vec::new();
    for x in items {
        match runs.last_mut() {
            Some((v, n)) if *v == x => *n += 1,
            _ => runs.push((x, 1)),
        }
    }
    put_varint(out, runs.len() as u64);
    for (v, n) in runs {
        emit(out, v);
        put_varint(out, n);
    }
}

fn get_runs<T: Copy>(
    r: &mut Reader<'_>,
    count: usize,
    mut read: impl FnMut(&mut Reader<'_>) -> Result<T, Malformed>,
) -> Result<Vec<T>, Malformed> {
    let runs = r.len()?;
    let mut out = Vec::with_capacity(count);
    for _ in 0..runs {
        let v = read(r)?;
        let n = usize::try_from(r.varint()?).map_err(|_| Malformed("run too long"))?;
        if n > count - out.len() {
            return Err(Malformed("runs exceed the sample count"));
        }
        out.extend(std::iter::repeat_n(v, n));
    }
    if out.len() != count {
        return Err(Malformed("runs do not cover the sample count"));
    }
    Ok(out)
}

/// The timestamps of a chunk, inline (mode 0 or 1) appended to `out`.
fn put_ts_inline(out: &mut Vec<u8>, ts: &[i64]) -> Result<(), ChunkError> {
    if is_regular(ts) {
        let step = if ts.len() > 1 {
            ts[1].wrapping_sub(ts[0])
        } else {
            0
        };
        // A strictly regular schedule (polling): first and step say it all.
        out.push(1);
        out.extend_from_slice(&step.to_le_bytes());
    } else {
        out.push(0);
        put_block(
            out,
            &pco::standalone::simple_compress(ts, &pco_config())
                .map_err(|e| ChunkError::Pco(e.to_string()))?,
        );
    }
    Ok(())
}

/// Reads inline timestamps (mode 0 or 1, the mode byte already read).
fn get_ts_inline(
    r: &mut Reader<'_>,
    mode: u8,
    n: usize,
    first: i64,
) -> Result<Vec<i64>, ChunkError> {
    let pco_err = |e: pco::errors::PcoError| ChunkError::Pco(e.to_string());
    let ts: Vec<i64> = match mode {
        0 => {
            let ts_len = r.len()?;
            pco::standalone::simple_decompress(r.bytes(ts_len)?).map_err(pco_err)?
        }
        1 => {
            let step = r.i64()?;
            (0..n as i64)
                .map(|i| first.wrapping_add(step.wrapping_mul(i)))
                .collect()
        }
        _ => return Err(Malformed("timestamp encoding").into()),
    };
    if ts.len() != n {
        return Err(Malformed("timestamp count").into());
    }
    Ok(ts)
}

/// A timestamp column stored once for several chunks (the tags of one poll group share their
/// timestamps exactly): `count u32 | first i64 | inline ts (mode 0 or 1)`.
pub fn encode_ts_column(ts: &[i64]) -> Result<Vec<u8>, ChunkError> {
    let mut out = Vec::with_capacity(32 + ts.len());
    out.extend_from_slice(&(ts.len() as u32).to_le_bytes());
    out.extend_from_slice(&ts.first().copied().unwrap_or(0).to_le_bytes());
    put_ts_inline(&mut out, ts)?;
    Ok(out)
}

/// Reads a column written by [`encode_ts_column`].
pub fn decode_ts_column(bytes: &[u8]) -> Result<Vec<i64>, ChunkError> {
    let mut r = Reader::new(bytes);
    let n = r.u32()? as usize;
    let first = r.i64()?;
    let mode = r.u8()?;
    get_ts_inline(&mut r, mode, n, first)
}

/// Where a chunk's timestamps are.
#[derive(Debug, Clone, Copy)]
pub enum TsColumn<'a> {
    /// In the chunk.
    Inline(&'a [i64]),
    /// In the store's shared column `id` (these are its timestamps, for the header).
    Shared { id: u64, ts: &'a [i64] },
}

/// Offset of the timestamp mode byte (after version, count, first and last).
const TS_MODE_AT: usize = 21;

/// Points a chunk encoded with [`TsColumn::Shared`] at column `id` (ids are given when the
/// column is stored) and renews its checksum.
pub fn set_ts_ref(bytes: &mut [u8], id: u64) -> Result<(), ChunkError> {
    if bytes.len() < TS_MODE_AT + 9 + 4 || bytes[TS_MODE_AT] != 2 {
        return Err(Malformed("not a chunk with shared timestamps").into());
    }
    bytes[TS_MODE_AT + 1..TS_MODE_AT + 9].copy_from_slice(&id.to_le_bytes());
    let end = bytes.len() - 4;
    let crc = crc32fast::hash(&bytes[..end]);
    bytes[end..].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// Whether `ts` is strictly regular (stored as first + step inline: nothing to share).
pub fn is_regular(ts: &[i64]) -> bool {
    let step = if ts.len() > 1 {
        ts[1].wrapping_sub(ts[0])
    } else {
        0
    };
    step >= 0
        && ts
            .iter()
            .enumerate()
            .all(|(i, &t)| t == ts[0].wrapping_add(step.wrapping_mul(i as i64)))
}

/// Groups of at least two indices of `columns` whose timestamps are identical and irregular
/// (the tags of one poll group, stamped once per poll): each group's column is worth storing
/// once. Equality is checked element by element, never assumed from a hash.
pub fn identical_columns(columns: &[&[i64]]) -> Vec<Vec<usize>> {
    let mut buckets: std::collections::HashMap<u64, Vec<Vec<usize>>> =
        std::collections::HashMap::new();
    for (i, ts) in columns.iter().enumerate() {
        if ts.len() < 2 || is_regular(ts) {
            continue;
        }
        // FNV-1a over the values: a bucket key only.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for t in ts.iter() {
            for b in t.to_le_bytes() {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        }
        let groups = buckets.entry(h).or_default();
        match groups.iter_mut().find(|g| columns[g[0]] == *ts) {
            Some(g) => g.push(i),
            None => groups.push(vec![i]),
        }
    }
    let mut out: Vec<Vec<usize>> = buckets
        .into_values()
        .flatten()
        .filter(|g| g.len() >= 2)
        .collect();
    out.sort_unstable();
    out
}

/// The shared timestamp column a chunk refers to, if any (checksum verified).
pub fn ts_ref(bytes: &[u8]) -> Result<Option<u64>, ChunkError> {
    let body = checked_body(bytes)?;
    let mut r = Reader::new(body);
    read_header(&mut r)?;
    if r.u8()? == 2 {
        return Ok(Some(r.u64()?));
    }
    Ok(None)
}

/// Bytes of a chunk by part: (fixed header and checksum, timestamps, quality, values).
pub fn sections(bytes: &[u8]) -> Result<[usize; 4], ChunkError> {
    let body = checked_body(bytes)?;
    let mut r = Reader::new(body);
    read_header(&mut r)?;
    let ts_start = body.len() - r.remaining();
    match r.u8()? {
        0 => {
            let n = r.len()?;
            r.bytes(n)?;
        }
        1 | 2 => {
            r.bytes(8)?;
        }
        _ => return Err(Malformed("timestamp encoding").into()),
    }
    let q_start = body.len() - r.remaining();
    let runs = r.len()?;
    for _ in 0..runs {
        r.u8()?;
        r.varint()?;
    }
    let v_start = body.len() - r.remaining();
    Ok([
        ts_start + 4,
        q_start - ts_start,
        v_start - q_start,
        body.len() - v_start,
    ])
}

/// Encodes one chunk. `ts`, `values` and `quality` have equal, non-zero length.
pub fn encode(ts: &[i64], values: &[Value], quality: &[u8]) -> Result<Vec<u8>, ChunkError> {
    encode_with(TsColumn::Inline(ts), values, quality)
}

/// Encodes one chunk whose timestamps are inline or in a shared column.
pub fn encode_with(
    column: TsColumn<'_>,
    values: &[Value],
    quality: &[u8],
) -> Result<Vec<u8>, ChunkError> {
    let ts = match column {
        TsColumn::Inline(ts) | TsColumn::Shared { ts, .. } => ts,
    };
    debug_assert!(ts.len() == values.len() && ts.len() == quality.len() && !ts.is_empty());
    let mut out = Vec::with_capacity(64 + ts.len());
    out.push(VERSION);
    out.extend_from_slice(&(ts.len() as u32).to_le_bytes());
    let (first, last) = ts
        .iter()
        .fold((i64::MAX, i64::MIN), |(lo, hi), &t| (lo.min(t), hi.max(t)));
    out.extend_from_slice(&first.to_le_bytes());
    out.extend_from_slice(&last.to_le_bytes());
    let cfg = pco_config();
    match column {
        TsColumn::Inline(ts) => put_ts_inline(&mut out, ts)?,
        TsColumn::Shared { id, .. } => {
            out.push(2);
            out.extend_from_slice(&id.to_le_bytes());
        }
    }
    put_runs(&mut out, quality.iter().copied(), |o, q| o.push(q));
    if values.iter().all(|v| *v == values[0]) {
        out.push(4);
        put_value(&mut out, &values[0]);
    } else if values.iter().all(|v| matches!(v, Value::Float(_))) {
        let f: Vec<f64> = values
            .iter()
            .map(|v| if let Value::Float(x) = v { *x } else { 0.0 })
            .collect();
        out.push(0);
        put_block(
            &mut out,
            &pco::standalone::simple_compress(&f, &cfg)
                .map_err(|e| ChunkError::Pco(e.to_string()))?,
        );
    } else if values.iter().all(|v| matches!(v, Value::Int(_))) {
        let i: Vec<i64> = values
            .iter()
            .map(|v| if let Value::Int(x) = v { *x } else { 0 })
            .collect();
        out.push(1);
        put_block(
            &mut out,
            &pco::standalone::simple_compress(&i, &cfg)
                .map_err(|e| ChunkError::Pco(e.to_string()))?,
        );
    } else if values.iter().all(|v| matches!(v, Value::Bool(_))) {
        out.push(2);
        put_runs(
            &mut out,
            values.iter().map(|v| matches!(v, Value::Bool(true))),
            |o, b| o.push(u8::from(b)),
        );
    } else {
        out.push(3);
        for v in values {
            put_value(&mut out, v);
        }
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    Ok(out)
}

fn checked_body(bytes: &[u8]) -> Result<&[u8], ChunkError> {
    if bytes.len() < 4 {
        return Err(Malformed("chunk too short").into());
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32fast::hash(body).to_le_bytes() != crc {
        return Err(ChunkError::Checksum);
    }
    Ok(body)
}

/// Reads only the header (after checking the checksum).
pub fn header(bytes: &[u8]) -> Result<Header, ChunkError> {
    let mut r = Reader::new(checked_body(bytes)?);
    read_header(&mut r)
}

fn read_header(r: &mut Reader<'_>) -> Result<Header, ChunkError> {
    if r.u8()? != VERSION {
        return Err(Malformed("unknown chunk version").into());
    }
    Ok(Header {
        count: r.u32()?,
        first_ts: r.i64()?,
        last_ts: r.i64()?,
    })
}

/// Decodes a whole chunk with inline timestamps, verifying its checksum and every length.
pub fn decode(bytes: &[u8]) -> Result<(Header, Columns), ChunkError> {
    decode_with(bytes, &mut |_| {
        Err(Malformed("shared timestamps without their store").into())
    })
}

/// Decodes a whole chunk; `shared` gives the column of a shared timestamp id.
pub fn decode_with(
    bytes: &[u8],
    shared: &mut dyn FnMut(u64) -> Result<Vec<i64>, ChunkError>,
) -> Result<(Header, Columns), ChunkError> {
    let mut r = Reader::new(checked_body(bytes)?);
    let h = read_header(&mut r)?;
    let n = h.count as usize;
    let pco_err = |e: pco::errors::PcoError| ChunkError::Pco(e.to_string());
    let ts = match r.u8()? {
        2 => {
            let ts = shared(r.u64()?)?;
            if ts.len() != n
                || ts.iter().min() != Some(&h.first_ts)
                || ts.iter().max() != Some(&h.last_ts)
            {
                return Err(Malformed("shared timestamps do not match the chunk").into());
            }
            ts
        }
        mode => get_ts_inline(&mut r, mode, n, h.first_ts)?,
    };
    let quality = get_runs(&mut r, n, |r| r.u8())?;
    let values: Vec<Value> = match r.u8()? {
        0 => {
            let len = r.len()?;
            let f: Vec<f64> = pco::standalone::simple_decompress(r.bytes(len)?).map_err(pco_err)?;
            f.into_iter().map(Value::Float).collect()
        }
        1 => {
            let len = r.len()?;
            let i: Vec<i64> = pco::standalone::simple_decompress(r.bytes(len)?).map_err(pco_err)?;
            i.into_iter().map(Value::Int).collect()
        }
        2 => get_runs(&mut r, n, |r| Ok(r.u8()? != 0))?
            .into_iter()
            .map(Value::Bool)
            .collect(),
        3 => (0..n)
            .map(|_| get_value(&mut r))
            .collect::<Result<_, _>>()?,
        4 => vec![get_value(&mut r)?; n],
        _ => return Err(Malformed("value encoding").into()),
    };
    if values.len() != n {
        return Err(Malformed("value count").into());
    }
    Ok((
        h,
        Columns {
            ts,
            values,
            quality,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn round_trip(values: Vec<Value>) -> usize {
        let n = values.len();
        let ts: Vec<i64> = (0..n as i64)
            .map(|i| 1_700_000_000_000_000 + i * 1_000_000)
            .collect();
        let q = vec![0u8; n];
        let bytes = encode(&ts, &values, &q).expect("encode");
        let (h, cols) = decode(&bytes).expect("decode");
        assert_eq!(
            h,
            Header {
                count: n as u32,
                first_ts: ts[0],
                last_ts: ts[n - 1]
            }
        );
        assert_eq!(
            cols,
            Columns {
                ts,
                values,
                quality: q
            }
        );
        bytes.len()
    }

    #[test]
    fn identical_irregular_columns_are_grouped_and_shared() {
        let a: Vec<i64> = (0..100)
            .map(|i| i * 1_000_000 + (i * 7_919) % 5_000)
            .collect();
        let mut b = a.clone();
        b[50] += 1;
        let regular: Vec<i64> = (0..100).map(|i| i * 1_000_000).collect();
        let cols: Vec<&[i64]> = vec![&a, &b, &a, &regular, &regular, &a, &b];
        assert_eq!(identical_columns(&cols), vec![vec![0, 2, 5], vec![1, 6]]);

        // A shared chunk points at its column once the store gave it an id.
        let values: Vec<Value> = (0..100).map(|i| Value::Float(i as f64)).collect();
        let q = vec![0u8; 100];
        let mut bytes = encode_with(TsColumn::Shared { id: 0, ts: &a }, &values, &q).expect("enc");
        set_ts_ref(&mut bytes, 42).expect("set");
        assert_eq!(ts_ref(&bytes).expect("ref"), Some(42));
        let column = encode_ts_column(&a).expect("column");
        let (_, cols) = decode_with(&bytes, &mut |id| {
            assert_eq!(id, 42);
            decode_ts_column(&column)
        })
        .expect("decode");
        assert_eq!(cols.ts, a);
        assert_eq!(cols.values, values);
        // The wrong column is refused, not trusted.
        let other = encode_ts_column(&b[..99]).expect("column");
        assert!(decode_with(&bytes, &mut |_| decode_ts_column(&other)).is_err());
        // Sections add up to the chunk.
        let [head, ts, qual, vals] = sections(&bytes).expect("sections");
        assert_eq!(head + ts + qual + vals, bytes.len());
        assert_eq!(ts, 9);
        assert!(set_ts_ref(&mut encode(&a, &values, &q).expect("enc"), 1).is_err());
    }

    #[test]
    fn every_value_kind_round_trips() {
        round_trip(
            (0..1000)
                .map(|i| Value::Float((i as f64 * 0.01).sin() * 10.0))
                .collect(),
        );
        round_trip((0..1000).map(|i| Value::Int(i * 7 - 300)).collect());
        round_trip((0..1000).map(|i| Value::Bool(i / 100 % 2 == 0)).collect());
        round_trip(vec![
            Value::Null,
            Value::Float(1.5),
            Value::String(Arc::from("x")),
            Value::Int(3),
        ]);
    }

    #[test]
    fn merged_runs_are_cut_to_fill_pages() {
        // A noisy sensor at 0.01 precision: about half a byte to a byte per sample.
        let n = 60_000;
        let ts: Vec<i64> = (0..n as i64).map(|i| i * 1_000_000).collect();
        let values: Vec<Value> = (0..n as u64)
            .map(|i| {
                let noise = (i.wrapping_mul(2_654_435_761) % 200) as f64 / 100.0;
                Value::Float(
                    ((20.0 + (i as f64 / 900.0).sin() * 5.0 + noise) * 100.0).round() / 100.0,
                )
            })
            .collect();
        let q = vec![0u8; n];
        let ends = fit_pages(&ts, &values, &q).expect("fit");
        assert_eq!(*ends.last().expect("ends"), n);
        let mut start = 0;
        for (i, &end) in ends.iter().enumerate() {
            let len = encode(&ts[start..end], &values[start..end], &q[start..end])
                .expect("enc")
                .len();
            assert!(len <= PAGE_FIT_BYTES, "chunk {i}: {len} bytes");
            if i + 1 < ends.len() {
                assert!(
                    len * 100 >= PAGE_FIT_BYTES * 90,
                    "chunk {i}: only {len} bytes"
                );
                assert!(is_full(end - start, len));
            }
            start = end;
        }
        // Large values keep the count/size rule.
        let big: Vec<Value> = (0..100)
            .map(|i| Value::String(Arc::from("x".repeat(500 + i))))
            .collect();
        let bts: Vec<i64> = (0..100).collect();
        assert_eq!(fit_pages(&bts, &big, &[0; 100]).expect("fit"), vec![100]);
    }

    #[test]
    fn large_values_make_smaller_chunks() {
        let small = vec![Value::Float(1.0); 20_000];
        assert_eq!(chunk_end(&small, 0), MAX_CHUNK_SAMPLES);
        assert_eq!(chunk_end(&small, 19_000), 20_000);
        // 512 KiB a value: 31 of them fit 16 MiB.
        let big = Value::array(
            ironplant_core::Array::from_floats(vec![0.5; ironplant_core::MAX_ELEMENTS])
                .expect("at the limit"),
        );
        let bigs = vec![big; 100];
        assert_eq!(chunk_end(&bigs, 0), 31);
        assert_eq!(chunk_end(&bigs, 93), 100);
        assert_eq!(chunk_end(&bigs[..1], 0), 1, "one sample always fits");
    }

    #[test]
    fn arrays_and_datasets_round_trip_through_chunks() {
        use ironplant_core::{Array, DataSet, ScalarType};
        let arrays: Vec<Value> = (0..100)
            .map(|i| {
                Value::array(
                    Array::from_floats((0..i % 7).map(|k| f64::from(k) * 0.5).collect())
                        .expect("small"),
                )
            })
            .collect();
        round_trip(arrays.clone());
        // One value for the whole chunk (the CONST encoding).
        round_trip(vec![arrays[5].clone(); 50]);
        let ds = Value::dataset(
            DataSet::new(
                vec!["a".into(), "b".into()],
                vec![ScalarType::String, ScalarType::Int],
                vec![vec![Value::String("x".into()), Value::Int(2)]],
            )
            .expect("valid"),
        );
        round_trip(vec![
            ds.clone(),
            Value::Float(1.0),
            arrays[3].clone(),
            Value::Null,
            ds,
        ]);
    }

    #[test]
    fn regular_series_compress_well() {
        // A noisy analog on a 0.1 grid, one sample a second: a few bits a sample.
        let mut x = 0u64;
        let values: Vec<Value> = (0..4096)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                Value::Float(((200.0 + (x >> 60) as f64) * 0.1 * 10.0).round() / 10.0)
            })
            .collect();
        let bytes = round_trip(values);
        assert!(bytes < 4096, "{bytes} bytes for 4096 samples");
        let flat = round_trip(vec![Value::Float(42.0); 4096]);
        assert!(
            flat <= 48,
            "{flat} bytes for a constant on a regular schedule"
        );
        // Irregular timestamps still round-trip (through pco).
        let ts: Vec<i64> = (0..100).map(|i| i * i).collect();
        let v: Vec<Value> = (0..100).map(|i| Value::Int(i % 3)).collect();
        let bytes = encode(&ts, &v, &[0; 100]).expect("encode");
        assert_eq!(decode(&bytes).expect("decode").1.ts, ts);
    }

    #[test]
    fn corruption_is_detected_not_trusted() {
        let ts = [1i64, 2, 3];
        let v = [Value::Int(1), Value::Int(2), Value::Int(3)];
        let mut bytes = encode(&ts, &v, &[0, 0, 0]).expect("encode");
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x40;
            assert!(decode(&bad).is_err(), "flip at {i} went unnoticed");
        }
        bytes.truncate(bytes.len() - 1);
        assert!(decode(&bytes).is_err());
        assert!(decode(&[]).is_err());
    }
}
