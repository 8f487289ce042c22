//! The write-ahead log: segment files of checksummed records, appended with group commit.
//!
//! Record: `len u32 | crc32 u32 | payload` where payload is `lsn u64 | count varint | samples`.
//! A sample: `hid varint | ts (zigzag varint delta to the previous sample's ts) | quality u8 |
//! tagged value`. Segments are `wal/<first lsn, 16 hex digits>.wal`.
//!
//! Invariants: an LSN is acknowledged only after the record holding it is fsynced; replay stops
//! at the first record whose length or checksum does not hold (a torn write at a crash) and cuts
//! the segment there, so a torn record is never trusted and never resurrected by a later write.
//!
//! All file I/O goes through [`WalFs`]: [`Disk`] in production, a simulated disk in tests that
//! loses every byte not yet synced at a simulated power cut (`tests/power_loss.rs`). It is called
//! once per group commit, never per sample, so the indirection costs nothing on the hot path.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ironplant_core::Value;

use crate::codec::{
    encoded_len_bound, get_value, put_value, put_varint, quality_from_code, unzigzag, zigzag,
    Malformed, Reader,
};

/// A sample as the historian stores it: historian tag id, source time (µs), value, quality code.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub hid: u32,
    pub ts: i64,
    pub value: Value,
    pub quality: u8,
}

/// Largest record payload accepted on replay (a corrupt length must not allocate gigabytes).
const MAX_RECORD: usize = 256 << 20;

/// Payload bytes a record is kept under when it holds more than one sample: far below
/// [`MAX_RECORD`], so a group commit of large values (arrays, DataSets, long strings) becomes
/// several records rather than one that replay would refuse as corrupt.
pub const RECORD_TARGET: usize = 32 << 20;

/// Encodes `entries` (at least one) as consecutive records with LSNs `first_lsn..first_lsn + n`,
/// each under [`RECORD_TARGET`] unless it holds a single sample; returns `n` (1 unless the
/// values are large).
pub fn encode_records(first_lsn: u64, entries: &[Entry], out: &mut Vec<u8>) -> u64 {
    let mut lsn = first_lsn;
    let mut start = 0;
    let mut bytes = 0usize;
    for (i, e) in entries.iter().enumerate() {
        // hid, ts delta and quality take at most 10 + 10 + 1 bytes.
        let size = 21 + encoded_len_bound(&e.value);
        if i > start && bytes.saturating_add(size) > RECORD_TARGET {
            encode_record(lsn, &entries[start..i], out);
            lsn += 1;
            start = i;
            bytes = 0;
        }
        bytes = bytes.saturating_add(size);
    }
    encode_record(lsn, &entries[start..], out);
    lsn - first_lsn + 1
}

pub fn encode_record(lsn: u64, entries: &[Entry], out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&lsn.to_le_bytes());
    put_varint(out, entries.len() as u64);
    let mut prev = 0i64;
    for e in entries {
        put_varint(out, u64::from(e.hid));
        put_varint(out, zigzag(e.ts.wrapping_sub(prev)));
        prev = e.ts;
        out.push(e.quality);
        put_value(out, &e.value);
    }
    let payload_len = (out.len() - start - 8) as u32;
    let crc = crc32fast::hash(&out[start + 8..]);
    out[start..start + 4].copy_from_slice(&payload_len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

pub fn decode_payload(payload: &[u8]) -> Result<(u64, Vec<Entry>), Malformed> {
    let mut r = Reader::new(payload);
    let lsn = r.u64()?;
    let n = r.len()?;
    let mut entries = Vec::with_capacity(n);
    let mut prev = 0i64;
    for _ in 0..n {
        let hid = u32::try_from(r.varint()?).map_err(|_| Malformed("tag id"))?;
        let ts = prev.wrapping_add(unzigzag(r.varint()?));
        prev = ts;
        let quality = r.u8()?;
        quality_from_code(quality)?;
        let value = get_value(&mut r)?;
        entries.push(Entry {
            hid,
            ts,
            value,
            quality,
        });
    }
    if !r.is_empty() {
        return Err(Malformed("trailing bytes in record"));
    }
    Ok((lsn, entries))
}

/// The file operations the WAL needs. A `WalFs` must keep the POSIX durability contract that the
/// WAL relies on: bytes appended to a file survive a power cut only after
/// [`WalFile::sync_data`], a created or removed file only after [`WalFs::sync_dir`] of its
/// directory.
pub trait WalFs: fmt::Debug + Send + Sync + 'static {
    /// Opens `path` for appending, creating it if needed.
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn WalFile>>;
    /// The whole content of `path`.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Paths of the files in `dir`.
    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>>;
    /// Size of `path` in bytes.
    fn size(&self, path: &Path) -> io::Result<u64>;
    /// Cuts `path` to `len` bytes.
    fn truncate(&self, path: &Path, len: u64) -> io::Result<()>;
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Makes created and removed entries of `dir` durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// A WAL segment open for appending.
pub trait WalFile: Send {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// Makes every appended byte durable (`fdatasync`).
    fn sync_data(&mut self) -> io::Result<()>;
    fn size(&self) -> io::Result<u64>;
}

/// The real file system.
#[derive(Debug, Clone, Copy, Default)]
pub struct Disk;

impl Disk {
    pub fn shared() -> Arc<dyn WalFs> {
        Arc::new(Disk)
    }
}

impl WalFs for Disk {
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn WalFile>> {
        // Private whatever the umask: the WAL holds the plant's data.
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(crate::private_fs::FILE_MODE)
            .open(path)?;
        Ok(Box::new(file))
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let mut data = Vec::new();
        File::open(path)?.read_to_end(&mut data)?;
        Ok(data)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        fs::read_dir(dir)?.map(|e| e.map(|e| e.path())).collect()
    }
    fn size(&self, path: &Path) -> io::Result<u64> {
        Ok(fs::metadata(path)?.len())
    }
    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        OpenOptions::new().write(true).open(path)?.set_len(len)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
}

impl WalFile for File {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.write_all(bytes)
    }
    fn sync_data(&mut self) -> io::Result<()> {
        File::sync_data(self)
    }
    fn size(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }
}

fn segment_path(dir: &Path, first_lsn: u64) -> PathBuf {
    dir.join(format!("{first_lsn:016x}.wal"))
}

/// Segments in LSN order: (first lsn, path).
pub fn segments(fs: &dyn WalFs, dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for path in fs.list(dir)? {
        let lsn = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".wal"))
            .and_then(|n| u64::from_str_radix(n, 16).ok());
        if let Some(lsn) = lsn {
            out.push((lsn, path));
        }
    }
    out.sort();
    Ok(out)
}

/// What replay found.
#[derive(Debug, Default)]
pub struct Replay {
    /// Highest LSN seen (0 if none).
    pub last_lsn: u64,
    /// Bytes cut from a torn tail.
    pub truncated_bytes: u64,
    /// Bytes skipped inside older segments because a record in them was corrupt.
    pub corrupt_bytes: u64,
    pub records: u64,
}

/// Reads every record with LSN > `after` in order, calling `f` for each; cuts a torn tail.
pub fn replay(
    fs: &dyn WalFs,
    dir: &Path,
    after: u64,
    mut f: impl FnMut(u64, Vec<Entry>),
) -> io::Result<Replay> {
    let mut out = Replay::default();
    let segs = segments(fs, dir)?;
    for (i, (_, path)) in segs.iter().enumerate() {
        let data = fs.read(path)?;
        let mut pos = 0usize;
        let good_end = loop {
            if pos == data.len() {
                break pos;
            }
            let Some(head) = data.get(pos..pos + 8) else {
                break pos;
            };
            let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
            let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
            if len > MAX_RECORD {
                break pos;
            }
            let Some(payload) = data.get(pos + 8..pos + 8 + len) else {
                break pos;
            };
            if crc32fast::hash(payload) != crc {
                break pos;
            }
            let Ok((lsn, entries)) = decode_payload(payload) else {
                break pos;
            };
            out.last_lsn = out.last_lsn.max(lsn);
            out.records += 1;
            if lsn > after {
                f(lsn, entries);
            }
            pos += 8 + len;
        };
        if good_end < data.len() {
            let cut = (data.len() - good_end) as u64;
            if i + 1 == segs.len() {
                // The tail of the newest segment: a write torn by a crash, never acknowledged.
                tracing::warn!(segment = %path.display(), offset = good_end, bytes = cut, "WAL ends in a torn record; cutting it (it was never acknowledged)");
                fs.truncate(path, good_end as u64)?;
                out.truncated_bytes += cut;
            } else {
                // Damage inside an older segment is not a torn write (later segments exist, so
                // this one was complete): skip the rest of it, keep everything after it.
                tracing::error!(segment = %path.display(), offset = good_end, bytes = cut, "corrupt WAL record in a completed segment; its remaining records are skipped");
                out.corrupt_bytes += cut;
            }
        }
    }
    Ok(out)
}

/// The appending end of the log.
pub struct WalWriter {
    fs: Arc<dyn WalFs>,
    dir: PathBuf,
    file: Box<dyn WalFile>,
    first_lsn: u64,
    size: u64,
    pub segment_bytes: u64,
}

impl WalWriter {
    /// Opens a fresh segment starting at `next_lsn`.
    pub fn create(
        fs: Arc<dyn WalFs>,
        dir: &Path,
        next_lsn: u64,
        segment_bytes: u64,
    ) -> io::Result<WalWriter> {
        let path = segment_path(dir, next_lsn);
        let file = fs.open_append(&path)?;
        let size = file.size()?;
        fs.sync_dir(dir)?;
        Ok(WalWriter {
            fs,
            dir: dir.to_owned(),
            file,
            first_lsn: next_lsn,
            size,
            segment_bytes,
        })
    }

    /// Appends encoded records and makes them durable.
    pub fn append_durable(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.append(bytes)?;
        self.file.sync_data()?;
        self.size += bytes.len() as u64;
        Ok(())
    }

    /// Starts a new segment at `next_lsn` if the current one is full (or `force`).
    pub fn maybe_roll(&mut self, next_lsn: u64, force: bool) -> io::Result<()> {
        if (force || self.size >= self.segment_bytes) && next_lsn != self.first_lsn {
            *self = WalWriter::create(self.fs.clone(), &self.dir, next_lsn, self.segment_bytes)?;
        }
        Ok(())
    }

    pub fn current_first_lsn(&self) -> u64 {
        self.first_lsn
    }
}

/// Deletes segments that only hold records with LSN <= `checkpoint` (every segment that is
/// followed by one starting at or below `checkpoint + 1`).
pub fn remove_checkpointed(fs: &dyn WalFs, dir: &Path, checkpoint: u64) -> io::Result<u64> {
    let segs = segments(fs, dir)?;
    let mut removed = 0;
    for w in segs.windows(2) {
        if w[1].0 <= checkpoint + 1 {
            fs.remove(&w[0].1)?;
            removed += 1;
        }
    }
    if removed > 0 {
        fs.sync_dir(dir)?;
    }
    Ok(removed)
}

/// Total bytes of all segments.
pub fn disk_bytes(fs: &dyn WalFs, dir: &Path) -> u64 {
    segments(fs, dir).map_or(0, |s| s.iter().filter_map(|(_, p)| fs.size(p).ok()).sum())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(n: u32, base: i64) -> Vec<Entry> {
        (0..n)
            .map(|i| Entry {
                hid: i % 7,
                ts: base + i64::from(i),
                value: Value::Int(i64::from(i)),
                quality: 0,
            })
            .collect()
    }

    #[test]
    fn records_round_trip_and_torn_tails_are_cut() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut w = WalWriter::create(Disk::shared(), dir.path(), 1, 1 << 20).expect("create");
        for lsn in 1..=3u64 {
            let mut buf = Vec::new();
            encode_record(lsn, &entries(10, lsn as i64 * 100), &mut buf);
            w.append_durable(&buf).expect("append");
        }
        // A torn fourth record: only half of it reached the disk.
        let mut buf = Vec::new();
        encode_record(4, &entries(10, 400), &mut buf);
        w.append_durable(&buf[..buf.len() / 2]).expect("append");
        drop(w);

        let mut seen = Vec::new();
        let r = replay(&Disk, dir.path(), 1, |lsn, e| seen.push((lsn, e))).expect("replay");
        assert_eq!(
            seen.iter().map(|s| s.0).collect::<Vec<_>>(),
            vec![2, 3],
            "records after the checkpoint"
        );
        assert_eq!(seen[0].1, entries(10, 200));
        assert_eq!(r.last_lsn, 3);
        assert!(r.truncated_bytes > 0);
        // The cut is permanent: a second replay sees a clean log.
        let r2 = replay(&Disk, dir.path(), 0, |_, _| {}).expect("replay");
        assert_eq!((r2.records, r2.truncated_bytes), (3, 0));
    }

    #[test]
    fn large_values_are_split_into_records_replay_accepts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut w = WalWriter::create(Disk::shared(), dir.path(), 1, 1 << 30).expect("create");
        // 100 arrays of 65,536 floats: 50 MiB in one group commit.
        let big = Value::array(
            ironplant_core::Array::from_floats(vec![1.5; ironplant_core::MAX_ELEMENTS])
                .expect("at the limit"),
        );
        let batch: Vec<Entry> = (0..100)
            .map(|i| Entry {
                hid: 1,
                ts: i,
                value: big.clone(),
                quality: 0,
            })
            .collect();
        let mut buf = Vec::new();
        let n = encode_records(7, &batch, &mut buf);
        assert_eq!(n, 2);
        w.append_durable(&buf).expect("append");
        drop(w);
        let mut seen = Vec::new();
        let r = replay(&Disk, dir.path(), 0, |lsn, e| seen.push((lsn, e.len()))).expect("replay");
        assert_eq!(r.truncated_bytes, 0);
        assert_eq!(seen.iter().map(|s| s.0).collect::<Vec<_>>(), vec![7, 8]);
        assert_eq!(seen.iter().map(|s| s.1).sum::<usize>(), 100);
        // Small values: one record, as before.
        let mut buf = Vec::new();
        assert_eq!(encode_records(1, &entries(1000, 0), &mut buf), 1);
    }

    #[test]
    fn a_flipped_bit_ends_replay_there() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut w = WalWriter::create(Disk::shared(), dir.path(), 1, 1 << 20).expect("create");
        let mut buf = Vec::new();
        encode_record(1, &entries(5, 0), &mut buf);
        let first = buf.len();
        encode_record(2, &entries(5, 10), &mut buf);
        buf[first + 12] ^= 1;
        w.append_durable(&buf).expect("append");
        let r = replay(&Disk, dir.path(), 0, |_, _| {}).expect("replay");
        assert_eq!((r.records, r.last_lsn), (1, 1));
    }

    #[test]
    fn checkpointed_segments_are_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut w = WalWriter::create(Disk::shared(), dir.path(), 1, 10).expect("create");
        for lsn in 1..=4u64 {
            let mut buf = Vec::new();
            encode_record(lsn, &entries(3, 0), &mut buf);
            w.append_durable(&buf).expect("append");
            w.maybe_roll(lsn + 1, false).expect("roll");
        }
        assert_eq!(segments(&Disk, dir.path()).expect("list").len(), 5);
        remove_checkpointed(&Disk, dir.path(), 2).expect("remove");
        let left: Vec<u64> = segments(&Disk, dir.path())
            .expect("list")
            .iter()
            .map(|s| s.0)
            .collect();
        assert_eq!(left, vec![3, 4, 5]);
    }
}
