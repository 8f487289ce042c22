//! Small file helpers: private directories, atomic writes with an explicit mode, an
//! inter-process lock, and JSON files cached until they change on disk.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};

/// Mode of files holding secrets or secret hashes.
pub const PRIVATE: u32 = 0o600;
/// Mode of files anyone on the host may read (certificates).
pub const PUBLIC: u32 = 0o644;

/// Creates `dir` (and parents) if missing; a directory this crate creates is 0700.
pub fn ensure_private_dir(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| Error::io("create directory", dir, e))
}

/// Writes `bytes` to `path` so that readers see the old or the new content, never a mix:
/// a temporary file in the same directory (created with `mode`, so a secret is never readable
/// by others, not even briefly), fsynced, renamed over `path`, then the directory fsynced.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| Error::io("create", &tmp, e))?;
    // The umask may have removed bits we asked for (e.g. 0644 under umask 077); the mode of
    // the final file is part of the contract, so set it explicitly.
    f.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io("set permissions of", &tmp, e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::io("write", &tmp, e))?;
    drop(f);
    fs::rename(&tmp, path).map_err(|e| Error::io("replace", path, e))?;
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Writes a file that must not exist yet (first-start secrets are written once).
pub fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| Error::io("create", path, e))?;
    f.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io("set permissions of", path, e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::io("write", path, e))
}

/// An exclusive advisory lock on a file, held until dropped. Serialises read-modify-write
/// cycles between the server and CLI commands run next to it.
pub struct FileLock(File);

impl FileLock {
    pub fn acquire(path: &Path) -> Result<FileLock> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(PRIVATE)
            .open(path)
            .map_err(|e| Error::io("open lock file", path, e))?;
        f.lock().map_err(|e| Error::io("lock", path, e))?;
        Ok(FileLock(f))
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

/// Identity of a file's current content as far as `stat` can tell: an atomic replace changes
/// the inode, an in-place change the mtime or length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    ino: u64,
    mtime_ns: i64,
    len: u64,
}

pub(crate) fn stamp(path: &Path) -> Result<Option<Stamp>> {
    match fs::metadata(path) {
        Ok(m) => Ok(Some(Stamp {
            ino: m.ino(),
            mtime_ns: m.mtime().saturating_mul(1_000_000_000) + m.mtime_nsec(),
            len: m.len(),
        })),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("read metadata of", path, e)),
    }
}

/// A JSON document on disk, cached in memory and re-read when another process (or this one)
/// replaced it. Writes go through [`JsonFile::update`]: lock, re-read, change, write atomically.
#[derive(Debug)]
pub struct JsonFile<T> {
    path: PathBuf,
    lock_path: PathBuf,
    mode: u32,
    cache: RwLock<(Option<Stamp>, Arc<T>)>,
}

impl<T: Default + Clone + Serialize + DeserializeOwned> JsonFile<T> {
    pub fn open(path: PathBuf, mode: u32) -> Result<Self> {
        let lock_path = path.with_extension("lock");
        let (st, value) = Self::load(&path)?;
        Ok(JsonFile {
            path,
            lock_path,
            mode,
            cache: RwLock::new((st, Arc::new(value))),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn load(path: &Path) -> Result<(Option<Stamp>, T)> {
        // Stat before reading: if the file changes in between, the next call sees a new
        // stamp and reads again, so a stale cache cannot stick.
        let st = stamp(path)?;
        if st.is_none() {
            return Ok((None, T::default()));
        }
        let bytes = fs::read(path).map_err(|e| Error::io("read", path, e))?;
        let value = serde_json::from_slice(&bytes).map_err(|e| Error::Corrupt {
            path: path.to_owned(),
            detail: e.to_string(),
        })?;
        Ok((st, value))
    }

    /// The current content, re-read only when the file changed since the last call.
    pub fn get(&self) -> Result<Arc<T>> {
        let now = stamp(&self.path)?;
        {
            let c = self.cache.read();
            if c.0 == now {
                return Ok(c.1.clone());
            }
        }
        let (st, value) = Self::load(&self.path)?;
        let value = Arc::new(value);
        *self.cache.write() = (st, value.clone());
        Ok(value)
    }

    /// Read-modify-write under the inter-process lock. `f` may refuse with an error, in which
    /// case nothing is written.
    pub fn update<R>(&self, f: impl FnOnce(&mut T) -> Result<R>) -> Result<R> {
        let _lock = FileLock::acquire(&self.lock_path)?;
        let (_, mut value) = Self::load(&self.path)?;
        let out = f(&mut value)?;
        let bytes = serde_json::to_vec_pretty(&value).map_err(|e| Error::Corrupt {
            path: self.path.clone(),
            detail: format!("cannot serialise: {e}"),
        })?;
        write_atomic(&self.path, &bytes, self.mode)?;
        let st = stamp(&self.path)?;
        *self.cache.write() = (st, Arc::new(value));
        Ok(out)
    }
}
