//! Alarm state across a restart: a versioned JSON [`Snapshot`] of every alarm (condition,
//! acknowledgement, shelve, out of service, suppression) and its file, written atomically.
//!
//! The runtime writes the snapshot after every batch of transitions with [`write_atomic`]:
//! the bytes go to a temporary file beside the target, which is fsynced, renamed over the
//! target and the directory fsynced. A crash at any point leaves either the old or the new
//! snapshot under the target name, never a torn one; a leftover temporary file is ignored by
//! [`read`] and replaced by the next write.
//!
//! On restore ([`super::AlarmEngine::restore`]): alarms are matched by id. An alarm in alarm
//! keeps its acknowledgement (so the first sample confirming it raises nothing, and an
//! unacknowledged one is still waiting for the operator); a shelve that expired while the
//! platform was down ends at restore (a `shelve_expired` transition, annunciated again if it
//! was in alarm); an alarm whose definition changed (limit, kind, tag, deadband, latching) is
//! restored the same way, reconciled by the next sample under the new definition, and listed
//! in [`RestoreReport::changed`]; an alarm that is no longer configured is dropped and listed
//! in [`RestoreReport::vanished`] (with whether it was unacknowledged, so the runtime can say
//! so in a system event); a new alarm starts normal.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::Transition;

/// The snapshot format this build writes and reads.
pub const SNAPSHOT_VERSION: u32 = 1;

/// Every alarm's state at one instant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub version: u32,
    /// When it was taken (µs since the epoch).
    pub taken_at: i64,
    pub alarms: Vec<AlarmSnapshot>,
}

/// One alarm in a [`Snapshot`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlarmSnapshot {
    pub id: String,
    /// [`super::AlarmDef::fingerprint`] of the definition it was taken under.
    pub definition: String,
    /// The visible state (informative: restore recomputes it from the fields below).
    pub state: String,
    /// The condition after delays.
    pub condition: bool,
    /// In alarm (the condition, or latched).
    pub active: bool,
    pub acknowledged: bool,
    /// When the visible state was entered (µs).
    pub since: i64,
    #[serde(default)]
    pub active_since: Option<i64>,
    #[serde(default)]
    pub suppressed: bool,
    #[serde(default)]
    pub shelved_until: Option<i64>,
    #[serde(default)]
    pub shelved_by: Option<String>,
    #[serde(default)]
    pub shelve_comment: Option<String>,
    #[serde(default)]
    pub out_of_service_by: Option<String>,
    #[serde(default)]
    pub out_of_service_comment: Option<String>,
}

/// What [`super::AlarmEngine::restore`] did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RestoreReport {
    /// Alarms restored from the snapshot.
    pub restored: usize,
    /// Restored, but under a changed definition (ids).
    pub changed: Vec<String>,
    /// In the snapshot, no longer configured: dropped.
    pub vanished: Vec<VanishedAlarm>,
    /// Configured, not in the snapshot: started normal (ids).
    pub new: Vec<String>,
    /// Caused by the restore (shelves that expired while down): publish them like any other.
    pub transitions: Vec<Transition>,
}

/// An alarm of the snapshot with no definition any more.
#[derive(Debug, Clone, PartialEq)]
pub struct VanishedAlarm {
    pub id: String,
    pub state: String,
    pub acknowledged: bool,
}

/// Why a snapshot could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("alarm snapshot {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("alarm snapshot {path} is not a valid snapshot: {why}; move it aside to start with every alarm normal")]
    Corrupt { path: PathBuf, why: String },
    #[error(
        "alarm snapshot {path} has version {found}; this build reads version {SNAPSHOT_VERSION}"
    )]
    Version { path: PathBuf, found: u32 },
}

impl Snapshot {
    /// Brings the snapshot up to date with transitions that happened after it was taken
    /// (read back from the event store after a crash: [`Transition::from_event`]); those at or
    /// before `taken_at` are skipped, the rest applied in time order. The visible state, the
    /// acknowledgement and the overlays (shelve, suppression, out of service) follow each
    /// transition; the condition is the one the state implies, and the first sample after the
    /// restore reconciles it like after any restore. An alarm the snapshot does not know
    /// gets an entry with an unknown definition (empty `definition`). Returns how many
    /// transitions were applied; `taken_at` becomes the last one's time.
    pub fn replay<'a>(&mut self, transitions: impl IntoIterator<Item = &'a Transition>) -> usize {
        use super::AlarmState as S;
        let mut newer: Vec<&Transition> = transitions
            .into_iter()
            .filter(|t| t.ts.0 > self.taken_at)
            .collect();
        newer.sort_by_key(|t| t.ts);
        for t in &newer {
            let i = match self.alarms.iter().position(|a| *a.id == *t.alarm) {
                Some(i) => i,
                None => {
                    self.alarms.push(AlarmSnapshot {
                        id: t.alarm.to_string(),
                        definition: String::new(),
                        state: S::Normal.as_str().to_owned(),
                        condition: false,
                        active: false,
                        acknowledged: true,
                        since: t.ts.0,
                        active_since: None,
                        suppressed: false,
                        shelved_until: None,
                        shelved_by: None,
                        shelve_comment: None,
                        out_of_service_by: None,
                        out_of_service_comment: None,
                    });
                    self.alarms.len() - 1
                }
            };
            let a = &mut self.alarms[i];
            let user = t.user.as_deref().map(str::to_owned);
            let comment = t.comment.as_deref().map(str::to_owned);
            let annunciated = |a: &mut AlarmSnapshot, active: bool, acked: bool| {
                if active && !a.active {
                    a.active_since = Some(t.ts.0);
                }
                if !active {
                    a.active_since = None;
                }
                a.active = active;
                a.condition = active;
                a.acknowledged = acked;
                a.suppressed = false;
                a.shelved_until = None;
                a.shelved_by = None;
                a.shelve_comment = None;
                a.out_of_service_by = None;
                a.out_of_service_comment = None;
            };
            match t.to {
                S::Normal => annunciated(a, false, true),
                S::Unacknowledged => annunciated(a, true, false),
                S::Acknowledged => annunciated(a, true, true),
                S::ReturnToNormalUnacknowledged => annunciated(a, false, false),
                S::Shelved => {
                    a.shelved_until = t.shelved_until.map(|u| u.0);
                    a.shelved_by = user;
                    a.shelve_comment = comment;
                }
                S::SuppressedByDesign => a.suppressed = true,
                S::OutOfService => {
                    a.shelved_until = None;
                    a.shelved_by = None;
                    a.shelve_comment = None;
                    a.out_of_service_by = user;
                    a.out_of_service_comment = comment;
                }
            }
            a.state = t.to.as_str().to_owned();
            a.since = t.ts.0;
            self.taken_at = self.taken_at.max(t.ts.0);
        }
        newer.len()
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a snapshot always serialises")
    }

    /// Parses a snapshot, checking its version.
    pub fn from_json(bytes: &[u8], path: &Path) -> Result<Snapshot, PersistError> {
        #[derive(Deserialize)]
        struct Version {
            version: u32,
        }
        let corrupt = |e: serde_json::Error| PersistError::Corrupt {
            path: path.to_owned(),
            why: e.to_string(),
        };
        let v: Version = serde_json::from_slice(bytes).map_err(corrupt)?;
        if v.version != SNAPSHOT_VERSION {
            return Err(PersistError::Version {
                path: path.to_owned(),
                found: v.version,
            });
        }
        serde_json::from_slice(bytes).map_err(corrupt)
    }
}

/// The temporary file [`write_atomic`] writes before the rename.
pub fn temp_path(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Writes a snapshot to `path` atomically (temp file, fsync, rename, fsync of the directory).
pub fn write(path: &Path, snapshot: &Snapshot) -> Result<(), PersistError> {
    write_atomic(path, &snapshot.to_json())
}

/// Replaces `path` by `bytes` so that a crash leaves the old content or the new, whole.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), PersistError> {
    write_atomic_crashing(path, bytes, None)
}

/// [`write_atomic`], or with `crash_after = Some(n)` a crash simulated after `n` bytes reached
/// the file being written (tests: whatever was written must not be what [`read`] sees).
fn write_atomic_crashing(
    path: &Path,
    bytes: &[u8],
    crash_after: Option<usize>,
) -> Result<(), PersistError> {
    let io = |source| PersistError::Io {
        path: path.to_owned(),
        source,
    };
    let tmp = temp_path(path);
    {
        let mut f = fs::File::create(&tmp).map_err(io)?;
        if let Some(n) = crash_after {
            f.write_all(&bytes[..n.min(bytes.len())]).map_err(io)?;
            return Err(io(io::Error::other("simulated crash")));
        }
        f.write_all(bytes).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    fs::rename(&tmp, path).map_err(io)?;
    sync_dir(path).map_err(io)
}

#[cfg(unix)]
fn sync_dir(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    fs::File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_path: &Path) -> io::Result<()> {
    Ok(())
}

/// Reads the snapshot at `path`: `None` if there is none (first start). A temporary file
/// left by a crash is never read.
pub fn read(path: &Path) -> Result<Option<Snapshot>, PersistError> {
    match fs::read(path) {
        Ok(bytes) => Snapshot::from_json(&bytes, path).map(Some),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(PersistError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(n: usize) -> Snapshot {
        Snapshot {
            version: SNAPSHOT_VERSION,
            taken_at: 42,
            alarms: (0..n)
                .map(|i| AlarmSnapshot {
                    id: format!("a{i}"),
                    definition: "d".into(),
                    state: "unacknowledged".into(),
                    condition: true,
                    active: true,
                    acknowledged: false,
                    since: 7,
                    active_since: Some(7),
                    suppressed: false,
                    shelved_until: None,
                    shelved_by: None,
                    shelve_comment: None,
                    out_of_service_by: None,
                    out_of_service_comment: None,
                })
                .collect(),
        }
    }

    #[test]
    fn a_snapshot_round_trips_through_its_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("alarms.json");
        assert_eq!(read(&path).expect("read"), None);
        write(&path, &snap(3)).expect("write");
        assert_eq!(read(&path).expect("read"), Some(snap(3)));
        assert!(!temp_path(&path).exists(), "the temp file is renamed away");
    }

    #[test]
    fn a_torn_temp_file_never_replaces_a_good_snapshot() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("alarms.json");
        write(&path, &snap(2)).expect("write");
        // A crash in the middle of the next write, at every length: the good snapshot stays.
        let next = snap(5).to_json();
        for n in [0, 1, next.len() / 2, next.len() - 1, next.len()] {
            assert!(write_atomic_crashing(&path, &next, Some(n)).is_err());
            assert_eq!(
                read(&path).expect("read"),
                Some(snap(2)),
                "crash after {n} bytes"
            );
        }
        assert!(
            temp_path(&path).exists(),
            "the torn temp file is left behind"
        );
        // The next write replaces the leftover and the snapshot.
        write(&path, &snap(5)).expect("write");
        assert_eq!(read(&path).expect("read"), Some(snap(5)));
    }

    #[test]
    fn a_torn_or_foreign_snapshot_is_an_error_not_a_silent_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("alarms.json");
        let bytes = snap(2).to_json();
        fs::write(&path, &bytes[..bytes.len() - 10]).expect("torn");
        let e = read(&path).expect_err("torn");
        assert!(matches!(e, PersistError::Corrupt { .. }), "{e}");
        let mut other = snap(1);
        other.version = 99;
        fs::write(&path, other.to_json()).expect("write");
        let e = read(&path).expect_err("version");
        assert!(e.to_string().contains("version 99"), "{e}");
    }
}
