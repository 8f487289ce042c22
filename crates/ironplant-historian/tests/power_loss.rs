//! Power loss, simulated: the WAL runs on a simulated disk that keeps written-but-unsynced bytes
//! apart and, at a power cut, loses them (or keeps a random prefix of them, as a torn write
//! would), and forgets created or removed files whose directory was not synced. Every sample the
//! historian acknowledged must survive any number of cuts.
//!
//! A SIGKILL (tests/crash.rs) cannot find a missing fsync: the page cache survives the process.
//! This test does: remove the `sync_data` in `WalWriter::append_durable`, or the `sync_dir` after
//! creating a segment, and it fails.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ironplant_core::{Quality, TagPath, Timestamp, Value};
use ironplant_historian::{Historian, HistorianConfig, WalFile, WalFs};
use parking_lot::Mutex;

/// One file of the simulated disk.
#[derive(Debug, Default)]
struct Inode {
    /// What reads see (the page cache).
    data: Vec<u8>,
    /// What survives a power cut: the content at the last `sync_data`.
    durable: Vec<u8>,
}

#[derive(Debug, Default)]
struct DiskState {
    /// Incremented at every power cut; handles from an earlier boot stop working.
    boot: u64,
    /// Directory entries as they are now, by file name (the WAL uses one directory).
    files: BTreeMap<String, Arc<Mutex<Inode>>>,
    /// Directory entries as of the last `sync_dir`: what a power cut leaves.
    durable_files: BTreeMap<String, Arc<Mutex<Inode>>>,
    rng: u64,
    syncs: u64,
}

/// The simulated disk. `boot()` gives the file system a historian runs on; `power_cut()` ends
/// that boot.
#[derive(Debug, Clone)]
struct SimDisk(Arc<Mutex<DiskState>>);

impl SimDisk {
    fn new(seed: u64) -> SimDisk {
        SimDisk(Arc::new(Mutex::new(DiskState {
            rng: seed | 1,
            ..DiskState::default()
        })))
    }

    fn boot(&self) -> Arc<dyn WalFs> {
        let boot = self.0.lock().boot;
        Arc::new(SimFs {
            disk: self.clone(),
            boot,
        })
    }

    fn syncs(&self) -> u64 {
        self.0.lock().syncs
    }

    /// Power fails: directory entries fall back to the last directory sync; each file keeps what
    /// was synced plus a random prefix of what was not (a torn write).
    fn power_cut(&self) {
        let mut d = self.0.lock();
        d.boot += 1;
        let files = d.durable_files.clone();
        for inode in files.values() {
            let mut i = inode.lock();
            let synced = i.durable.len();
            let unsynced = i.data.len().saturating_sub(synced);
            // The content written since the last sync may not even share the synced prefix
            // (a truncation after it), so only keep a prefix when it does.
            let keep = if unsynced > 0 && i.data.starts_with(&i.durable) {
                let r = xorshift(&mut d.rng);
                (r % (unsynced as u64 + 1)) as usize
            } else {
                0
            };
            let mut survived = i.durable.clone();
            survived.extend_from_slice(&i.data[synced..synced + keep]);
            i.data = survived.clone();
            i.durable = survived;
        }
        d.files = files;
    }
}

fn xorshift(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

#[derive(Debug)]
struct SimFs {
    disk: SimDisk,
    boot: u64,
}

fn power_lost() -> io::Error {
    io::Error::other("simulated power loss: this boot is over")
}

fn name(path: &Path) -> io::Result<String> {
    path.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_owned)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))
}

impl SimFs {
    fn state(&self) -> io::Result<parking_lot::MutexGuard<'_, DiskState>> {
        let d = self.disk.0.lock();
        if d.boot == self.boot {
            Ok(d)
        } else {
            Err(power_lost())
        }
    }

    fn inode(&self, path: &Path) -> io::Result<Arc<Mutex<Inode>>> {
        self.state()?
            .files
            .get(&name(path)?)
            .cloned()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, path.display().to_string()))
    }
}

impl WalFs for SimFs {
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn WalFile>> {
        let inode = self.state()?.files.entry(name(path)?).or_default().clone();
        Ok(Box::new(SimFile {
            disk: self.disk.clone(),
            boot: self.boot,
            inode,
        }))
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        Ok(self.inode(path)?.lock().data.clone())
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        Ok(self.state()?.files.keys().map(|n| dir.join(n)).collect())
    }
    fn size(&self, path: &Path) -> io::Result<u64> {
        Ok(self.inode(path)?.lock().data.len() as u64)
    }
    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        let inode = self.inode(path)?;
        let mut i = inode.lock();
        let len = usize::try_from(len).map_err(io::Error::other)?;
        i.data.truncate(len);
        Ok(())
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        self.state()?
            .files
            .remove(&name(path)?)
            .map(drop)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, path.display().to_string()))
    }
    fn sync_dir(&self, _dir: &Path) -> io::Result<()> {
        let mut d = self.state()?;
        d.durable_files = d.files.clone();
        Ok(())
    }
}

struct SimFile {
    disk: SimDisk,
    boot: u64,
    inode: Arc<Mutex<Inode>>,
}

impl SimFile {
    fn check(&self) -> io::Result<parking_lot::MutexGuard<'_, DiskState>> {
        let d = self.disk.0.lock();
        if d.boot == self.boot {
            Ok(d)
        } else {
            Err(power_lost())
        }
    }
}

impl WalFile for SimFile {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        let _boot = self.check()?;
        self.inode.lock().data.extend_from_slice(bytes);
        Ok(())
    }
    fn sync_data(&mut self) -> io::Result<()> {
        let mut d = self.check()?;
        d.syncs += 1;
        let mut i = self.inode.lock();
        i.durable = i.data.clone();
        Ok(())
    }
    fn size(&self) -> io::Result<u64> {
        let _boot = self.check()?;
        Ok(self.inode.lock().data.len() as u64)
    }
}

const T0: i64 = 1_700_000_000_000_000;
const TAGS: [&str; 3] = ["plant/line/temp", "plant/line/count", "plant/line/run"];

fn config(dir: &Path, fs: Arc<dyn WalFs>) -> HistorianConfig {
    let mut c = HistorianConfig::new(dir);
    c.wal_fs = fs;
    c.commit_interval = std::time::Duration::from_micros(200);
    // Small segments, so records span many files and segment creation is exercised.
    c.segment_bytes = 4096;
    // Checkpoints only when the test asks (it copies the database file between boots).
    c.flush_samples = usize::MAX;
    c.flush_interval = std::time::Duration::from_secs(3600);
    c
}

/// One sample per (tag, sequence number): the value encodes both, so any stored point can be
/// traced back to the submission it came from.
fn sample(tag: usize, seq: i64) -> (i64, Value) {
    let ts = T0 + seq * 1000;
    let value = match tag {
        0 => Value::Float(seq as f64 * 0.5),
        1 => Value::Int(seq * 7),
        _ => Value::Bool(seq % 3 == 0),
    };
    (ts, value)
}

/// Every point the historian holds, per tag.
fn stored(h: &Historian) -> Vec<Vec<(i64, Value)>> {
    TAGS.iter()
        .map(|t| {
            h.raw(t, Timestamp(T0 - 1), Timestamp(T0 + (1 << 40)), 100_000)
                .expect("raw query")
                .points
                .into_iter()
                .map(|p| (p.ts.0, p.value))
                .collect()
        })
        .collect()
}

/// Checks the invariant after a reboot: every acknowledged sample is there, and nothing is there
/// that was never submitted.
fn verify(h: &Historian, acked: &BTreeSet<i64>, submitted: &HashSet<i64>, boot: usize) {
    let points = stored(h);
    for (tag, pts) in points.iter().enumerate() {
        let seqs: BTreeSet<i64> = pts.iter().map(|(ts, _)| (ts - T0) / 1000).collect();
        let lost: Vec<&i64> = acked.difference(&seqs).collect();
        assert!(
            lost.is_empty(),
            "boot {boot}: tag {} lost {} acknowledged samples after a power cut (first: {:?})",
            TAGS[tag],
            lost.len(),
            lost.iter().take(5).collect::<Vec<_>>()
        );
        for (ts, value) in pts {
            let seq = (ts - T0) / 1000;
            assert!(
                submitted.contains(&seq),
                "boot {boot}: {} holds a sample never submitted (ts {ts})",
                TAGS[tag]
            );
            assert_eq!(
                (*ts, value),
                (sample(tag, seq).0, &sample(tag, seq).1),
                "boot {boot}: wrong value"
            );
        }
    }
}

#[test]
fn every_acknowledged_sample_survives_power_cuts() {
    let root = tempfile::tempdir().expect("tempdir");
    let disk = SimDisk::new(0x5eed_1234);
    let paths: Vec<TagPath> = TAGS
        .iter()
        .map(|t| TagPath::parse(t).expect("valid path"))
        .collect();
    let mut acked: BTreeSet<i64> = BTreeSet::new();
    let mut submitted: HashSet<i64> = HashSet::new();
    let mut seq = 0i64;
    let mut previous: Option<PathBuf> = None;
    for boot in 0..6 {
        // The database (tag registry and checkpointed chunks) carries over between boots; the
        // historian of the previous boot still holds the old copy open, as a dead process would
        // have held it.
        let dir = root.path().join(format!("boot{boot}"));
        std::fs::create_dir_all(&dir).expect("mkdir");
        if let Some(prev) = &previous {
            std::fs::copy(prev.join("chunks.redb"), dir.join("chunks.redb")).expect("copy db");
        }
        let h = Historian::open(config(&dir, disk.boot())).expect("open after a power cut");
        let ids = h.register(&paths).expect("register");
        verify(&h, &acked, &submitted, boot);

        // Acknowledged batches of varying size.
        for batch in 0..40 {
            let n = 1 + (batch * 7 + boot * 3) % 25;
            let mut samples = Vec::new();
            let first = seq;
            for _ in 0..n {
                for (tag, id) in ids.iter().enumerate() {
                    let (ts, value) = sample(tag, seq);
                    samples.push((*id, ts, value, Quality::GOOD));
                }
                submitted.insert(seq);
                seq += 1;
            }
            h.submit(samples)
                .expect("submit")
                .wait_blocking()
                .expect("durable");
            acked.extend(first..seq);
            if boot % 2 == 1 && batch == 20 {
                // A checkpoint in the middle: chunks in the database, old segments removed.
                h.flush_blocking().expect("flush");
            }
        }
        // Batches in flight at the power cut: they may or may not survive.
        for _ in 0..5 {
            let mut samples = Vec::new();
            for (tag, id) in ids.iter().enumerate() {
                let (ts, value) = sample(tag, seq);
                samples.push((*id, ts, value, Quality::GOOD));
            }
            submitted.insert(seq);
            seq += 1;
            h.ingest(samples).expect("ingest");
        }
        disk.power_cut();
        // The process is gone: nothing of it may run a shutdown (that would flush what the WAL
        // lost into the database and hide the loss).
        std::mem::forget(h);
        previous = Some(dir);
    }
    assert!(disk.syncs() > 0);
    let dir = root.path().join("final");
    std::fs::create_dir_all(&dir).expect("mkdir");
    if let Some(prev) = &previous {
        std::fs::copy(prev.join("chunks.redb"), dir.join("chunks.redb")).expect("copy db");
    }
    let h = Historian::open(config(&dir, disk.boot())).expect("open after the last power cut");
    verify(&h, &acked, &submitted, 6);
}
