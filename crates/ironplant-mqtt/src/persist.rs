//! The broker's durable state: retained messages and persistent sessions in one redb file, so
//! both survive a restart.
//!
//! Writes are batched: the broker marks what changed and a background task saves it every
//! `persist_interval` (default 1 s) in one transaction, and once more on shutdown
//! ([`crate::Broker::flush`]). A crash loses at most the changes of that last interval — the
//! trade every broker makes (Mosquitto saves every 30 min by default), because a transaction per
//! retained message would cap the broker at the disk's fsync rate.

use std::path::{Path, PathBuf};

use bytes::{Buf, BufMut, Bytes};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::codec::Publish;
use crate::session::{decode_publish, encode_publish};

const RETAINED: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("retained");
const SESSIONS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("sessions");

/// The store could not be opened, read or written.
#[derive(Debug, thiserror::Error)]
#[error("MQTT state store {path}: {message}")]
pub struct StoreError {
    pub path: PathBuf,
    pub message: String,
}

/// Changes to save in one transaction.
#[derive(Debug, Default)]
pub struct Batch {
    /// Retained messages set (topic, stored at ms, message) or cleared (`None`).
    pub retained: Vec<(String, Option<(u64, Publish)>)>,
    /// Session records written (client id, record) or removed (`None`).
    pub sessions: Vec<(String, Option<Vec<u8>>)>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.retained.is_empty() && self.sessions.is_empty()
    }
}

/// What a previous run left.
#[derive(Debug, Default)]
pub struct Loaded {
    pub retained: Vec<(u64, Publish)>,
    pub sessions: Vec<(String, Vec<u8>)>,
    /// Entries that could not be read (skipped, named in the log).
    pub damaged: Vec<String>,
}

pub struct Store {
    db: Database,
    path: PathBuf,
}

impl Store {
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let err = |e: &dyn std::fmt::Display| StoreError {
            path: path.to_owned(),
            message: e.to_string(),
        };
        if let Some(dir) = path.parent() {
            crate::private_fs::create_dir(dir).map_err(|e| err(&e))?;
        }
        crate::private_fs::create_file(path).map_err(|e| err(&e))?;
        let db = Database::create(path).map_err(|e| err(&e))?;
        let txn = db.begin_write().map_err(|e| err(&e))?;
        {
            txn.open_table(RETAINED).map_err(|e| err(&e))?;
            txn.open_table(SESSIONS).map_err(|e| err(&e))?;
        }
        txn.commit().map_err(|e| err(&e))?;
        Ok(Store {
            db,
            path: path.to_owned(),
        })
    }

    fn err(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    pub fn load(&self) -> Result<Loaded, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let mut out = Loaded::default();
        let t = txn.open_table(RETAINED).map_err(|e| self.err(e))?;
        for row in t.iter().map_err(|e| self.err(e))? {
            let (k, v) = row.map_err(|e| self.err(e))?;
            let mut buf = Bytes::copy_from_slice(v.value());
            let decoded = (buf.remaining() >= 8)
                .then(|| buf.get_u64())
                .and_then(|ms| decode_publish(&mut buf).ok().flatten().map(|p| (ms, p)));
            match decoded {
                Some((ms, p)) if p.topic.as_str() == k.value() => out.retained.push((ms, p)),
                _ => out
                    .damaged
                    .push(format!("retained message of {:?}", k.value())),
            }
        }
        let t = txn.open_table(SESSIONS).map_err(|e| self.err(e))?;
        for row in t.iter().map_err(|e| self.err(e))? {
            let (k, v) = row.map_err(|e| self.err(e))?;
            out.sessions
                .push((k.value().to_owned(), v.value().to_vec()));
        }
        Ok(out)
    }

    pub fn save(&self, batch: &Batch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut t = txn.open_table(RETAINED).map_err(|e| self.err(e))?;
            for (topic, m) in &batch.retained {
                match m {
                    Some((ms, p)) => {
                        let mut v = Vec::new();
                        v.put_u64(*ms);
                        encode_publish(p, &mut v);
                        t.insert(topic.as_str(), v.as_slice())
                            .map_err(|e| self.err(e))?;
                    }
                    None => {
                        t.remove(topic.as_str()).map_err(|e| self.err(e))?;
                    }
                }
            }
            let mut t = txn.open_table(SESSIONS).map_err(|e| self.err(e))?;
            for (id, rec) in &batch.sessions {
                match rec {
                    Some(r) => {
                        t.insert(id.as_str(), r.as_slice())
                            .map_err(|e| self.err(e))?;
                    }
                    None => {
                        t.remove(id.as_str()).map_err(|e| self.err(e))?;
                    }
                }
            }
        }
        txn.commit().map_err(|e| self.err(e))
    }
}
