//! Lock files of a data directory: one platform process per data directory (`ironplant.lock`,
//! held for the process's life, taken before anything opens a redb file), and one creation of
//! the security state at a time (`setup.lock`, held while `serve`, `demo` or `simulate` open
//! or create it, so two first starts never make two CAs).
//!
//! Both are advisory `flock`s on files that stay in place (removing a lock file would let a
//! third process lock a new inode). The kernel drops them when the process dies, also on
//! SIGKILL, so a crash never leaves a stale lock.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

/// The platform's process lock, in the data directory.
pub const PROCESS_LOCK: &str = "ironplant.lock";
/// The lock around opening (and on first start creating) the security state.
pub const SETUP_LOCK: &str = "setup.lock";

/// A held lock; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

fn open(path: &Path) -> anyhow::Result<File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create data directory {}", dir.display()))?;
    }
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .with_context(|| {
            format!(
                "cannot open the lock file {}; check the data directory's permissions",
                path.display()
            )
        })
}

fn absolute(dir: &Path) -> PathBuf {
    std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_owned())
}

/// Takes the data directory's process lock for `what` (`serve`, `demo`, `query`), or says
/// which process holds it.
pub fn lock_process(dir: &Path, what: &str) -> anyhow::Result<DirLock> {
    let path = dir.join(PROCESS_LOCK);
    let mut file = open(&path)?;
    match file.try_lock() {
        Ok(()) => {
            // Who holds it, for the message a second process prints.
            let _ = file.set_len(0);
            let _ = writeln!(file, "pid {} ({what})", std::process::id());
            Ok(DirLock { _file: file })
        }
        Err(TryLockError::WouldBlock) => {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            let holder = holder.trim();
            let holder = if holder.is_empty() {
                String::new()
            } else {
                format!(" ({holder})")
            };
            bail!(
                "another Ironplant process{holder} uses this data dir ({}); stop it first, or give this one its own with --data-dir DIR",
                absolute(dir).display()
            )
        }
        Err(TryLockError::Error(e)) => Err(e).with_context(|| {
            format!(
                "cannot lock {}; the data directory must be on a local file system",
                path.display()
            )
        }),
    }
}

/// Waits up to `patience` for the setup lock (it is held for the time it takes to open or
/// create the security state, well under a second).
pub fn lock_setup(dir: &Path, patience: Duration) -> anyhow::Result<DirLock> {
    let path = dir.join(SETUP_LOCK);
    let file = open(&path)?;
    let deadline = Instant::now() + patience;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(DirLock { _file: file }),
            Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                // Another process is creating the security state: a short wait.
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(TryLockError::WouldBlock) => bail!(
                "another Ironplant process has been setting up the security state of {} for {patience:?}; is one stuck? ({} is locked)",
                absolute(dir).display(),
                path.display()
            ),
            Err(TryLockError::Error(e)) => {
                return Err(e).with_context(|| {
                    format!(
                        "cannot lock {}; the data directory must be on a local file system",
                        path.display()
                    )
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid() {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("data");
        let first = lock_process(&data, "serve").expect("first lock");
        let err = lock_process(&data, "demo").expect_err("second lock");
        let msg = format!("{err:#}");
        assert!(
            msg.contains("another Ironplant process")
                && msg.contains(&format!("pid {} (serve)", std::process::id()))
                && msg.contains(&absolute(&data).display().to_string())
                && msg.contains("--data-dir"),
            "{msg}"
        );
        drop(first);
        lock_process(&data, "demo").expect("free again once dropped");
    }

    #[test]
    fn the_setup_lock_waits_then_says_what_is_stuck() {
        let dir = tempfile::tempdir().expect("temp dir");
        let held = lock_setup(dir.path(), Duration::ZERO).expect("lock");
        let err = lock_setup(dir.path(), Duration::from_millis(50)).expect_err("held");
        assert!(
            format!("{err:#}").contains("setting up the security state"),
            "{err:#}"
        );
        drop(held);
        lock_setup(dir.path(), Duration::ZERO).expect("free again");
    }
}
