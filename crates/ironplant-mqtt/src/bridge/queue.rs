//! The bridge's store-and-forward queue: a durable FIFO of encoded messages in one redb file.
//!
//! Keys are sequence numbers (u64, increasing, never reused within a file), values the encoded
//! message. A message is *queued* once the transaction holding it is committed (fsynced);
//! it leaves the queue when the remote acknowledged it ([`DiskQueue::ack`]) or when the
//! overflow policy drops it. Messages handed to the sender ([`DiskQueue::take`]) are *taken*:
//! the overflow policy never drops those (they may be on the wire already), so with
//! drop-oldest the oldest message not yet taken goes first.
//!
//! Why redb rather than our own segment log: the queue needs appends at the tail, deletes at
//! the head *and* (drop-oldest) deletes just behind the in-flight window, each atomic with the
//! counters, and crash-safe. redb gives that in a few lines (copy-on-write B-tree, checksummed
//! commits) and is already a dependency of the historian. Its cost is one fsync per commit,
//! which we amortise by committing a batch of messages per transaction; a bridge is bounded by
//! its remote broker's acknowledgements long before that.

use std::path::Path;

use parking_lot::Mutex;
use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
};

const MESSAGES: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("messages");

/// A storage failure (disk full, corrupt file); the message says which file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bridge queue {file}: {message}")]
pub struct QueueError {
    pub file: String,
    pub message: String,
}

/// What to do with a new message when the queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    /// Drop the oldest messages not yet taken by the sender to make room.
    DropOldest,
    /// Drop the new message.
    DropNewest,
}

/// Bounds of a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    pub max_messages: u64,
    pub max_bytes: u64,
    pub overflow: Overflow,
}

/// What a push did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pushed {
    /// New messages now in the queue.
    pub accepted: u64,
    /// Messages dropped by the overflow policy (new ones or old ones).
    pub dropped: u64,
}

#[derive(Debug, Default)]
struct State {
    /// Next sequence number to assign.
    next_seq: u64,
    /// First sequence number not yet taken by the sender.
    untaken: u64,
    count: u64,
    bytes: u64,
}

/// A durable FIFO; every method does blocking I/O (call it from a blocking thread).
pub struct DiskQueue {
    db: Database,
    file: String,
    state: Mutex<State>,
}

impl DiskQueue {
    /// Opens (or creates) the queue file and counts what it holds.
    pub fn open(path: &Path) -> Result<DiskQueue, QueueError> {
        let file = path.display().to_string();
        let err = |e: &dyn std::fmt::Display| QueueError {
            file: file.clone(),
            message: e.to_string(),
        };
        if let Some(dir) = path.parent() {
            crate::private_fs::create_dir(dir).map_err(|e| err(&e))?;
        }
        crate::private_fs::create_file(path).map_err(|e| err(&e))?;
        let db = Database::create(path).map_err(|e| err(&e))?;
        let txn = db.begin_write().map_err(|e| err(&e))?;
        txn.open_table(MESSAGES).map_err(|e| err(&e))?;
        txn.commit().map_err(|e| err(&e))?;
        let mut st = State::default();
        {
            let txn = db.begin_read().map_err(|e| err(&e))?;
            let table = txn.open_table(MESSAGES).map_err(|e| err(&e))?;
            st.count = table.len().map_err(|e| err(&e))?;
            let mut first = None;
            for entry in table.iter().map_err(|e| err(&e))? {
                let (k, v) = entry.map_err(|e| err(&e))?;
                first.get_or_insert(k.value());
                st.bytes += v.value().len() as u64;
                st.next_seq = k.value() + 1;
            }
            st.untaken = first.unwrap_or(st.next_seq);
        }
        Ok(DiskQueue {
            db,
            file,
            state: Mutex::new(st),
        })
    }

    fn err(&self, e: impl std::fmt::Display) -> QueueError {
        QueueError {
            file: self.file.clone(),
            message: e.to_string(),
        }
    }

    /// Messages and bytes in the queue (taken ones included).
    pub fn len(&self) -> (u64, u64) {
        let st = self.state.lock();
        (st.count, st.bytes)
    }

    /// Whether the queue holds nothing.
    pub fn is_empty(&self) -> bool {
        self.state.lock().count == 0
    }

    /// Appends `records` in order in one durable transaction, applying the limits.
    pub fn push(&self, records: &[Vec<u8>], limits: QueueLimits) -> Result<Pushed, QueueError> {
        let mut st = self.state.lock();
        let mut next = State {
            next_seq: st.next_seq,
            untaken: st.untaken,
            count: st.count,
            bytes: st.bytes,
        };
        let mut out = Pushed::default();
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut table = txn.open_table(MESSAGES).map_err(|e| self.err(e))?;
            for rec in records {
                let len = rec.len() as u64;
                let fits =
                    |s: &State| s.count < limits.max_messages && s.bytes + len <= limits.max_bytes;
                if len > limits.max_bytes || limits.max_messages == 0 {
                    out.dropped += 1;
                    continue;
                }
                if !fits(&next) && limits.overflow == Overflow::DropOldest {
                    // Make room from the oldest message nobody has taken yet.
                    while !fits(&next) && next.untaken < next.next_seq {
                        let removed = table.remove(next.untaken).map_err(|e| self.err(e))?;
                        if let Some(v) = removed {
                            next.count -= 1;
                            next.bytes -= v.value().len() as u64;
                            out.dropped += 1;
                        }
                        next.untaken += 1;
                    }
                }
                if !fits(&next) {
                    out.dropped += 1;
                    continue;
                }
                table
                    .insert(next.next_seq, rec.as_slice())
                    .map_err(|e| self.err(e))?;
                next.next_seq += 1;
                next.count += 1;
                next.bytes += len;
                out.accepted += 1;
            }
        }
        txn.commit().map_err(|e| self.err(e))?;
        *st = next;
        Ok(out)
    }

    /// Hands out up to `max` messages not yet taken, oldest first, and marks them taken.
    pub fn take(&self, max: usize) -> Result<Vec<(u64, Vec<u8>)>, QueueError> {
        let mut st = self.state.lock();
        if st.untaken >= st.next_seq || max == 0 {
            return Ok(Vec::new());
        }
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = txn.open_table(MESSAGES).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for entry in table
            .range(st.untaken..)
            .map_err(|e| self.err(e))?
            .take(max)
        {
            let (k, v) = entry.map_err(|e| self.err(e))?;
            out.push((k.value(), v.value().to_vec()));
        }
        if let Some((last, _)) = out.last() {
            st.untaken = last + 1;
        }
        Ok(out)
    }

    /// Removes acknowledged (or refused) messages in one durable transaction.
    pub fn ack(&self, seqs: &[u64]) -> Result<(), QueueError> {
        if seqs.is_empty() {
            return Ok(());
        }
        let mut st = self.state.lock();
        let mut txn = self.db.begin_write().map_err(|e| self.err(e))?;
        txn.set_durability(Durability::Immediate)
            .map_err(|e| self.err(e))?;
        let (mut count, mut bytes) = (st.count, st.bytes);
        {
            let mut table = txn.open_table(MESSAGES).map_err(|e| self.err(e))?;
            for seq in seqs {
                if let Some(v) = table.remove(*seq).map_err(|e| self.err(e))? {
                    count -= 1;
                    bytes -= v.value().len() as u64;
                }
            }
        }
        txn.commit().map_err(|e| self.err(e))?;
        st.count = count;
        st.bytes = bytes;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(i: u64) -> Vec<u8> {
        format!("message {i:04}").into_bytes()
    }

    fn limits(max_messages: u64, overflow: Overflow) -> QueueLimits {
        QueueLimits {
            max_messages,
            max_bytes: u64::MAX,
            overflow,
        }
    }

    #[test]
    fn fifo_survives_reopen_and_acks_remove() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("q.redb");
        let q = DiskQueue::open(&path).expect("open");
        let recs: Vec<_> = (0..10).map(rec).collect();
        let p = q
            .push(&recs, limits(100, Overflow::DropNewest))
            .expect("push");
        assert_eq!(
            p,
            Pushed {
                accepted: 10,
                dropped: 0
            }
        );
        let taken = q.take(4).expect("take");
        assert_eq!(
            taken.iter().map(|t| t.1.clone()).collect::<Vec<_>>(),
            recs[..4]
        );
        q.ack(&[taken[0].0, taken[1].0]).expect("ack");
        assert_eq!(q.len().0, 8);
        drop(q);
        // Taken but unacknowledged messages come back after a restart, in order.
        let q = DiskQueue::open(&path).expect("reopen");
        assert_eq!(q.len(), (8, recs[2..].iter().map(|r| r.len() as u64).sum()));
        let all = q.take(100).expect("take");
        assert_eq!(
            all.iter().map(|t| t.1.clone()).collect::<Vec<_>>(),
            recs[2..]
        );
        assert!(
            all.windows(2).all(|w| w[0].0 < w[1].0),
            "sequence increases"
        );
        assert!(q.take(100).expect("take").is_empty());
        // New sequence numbers continue after the old ones.
        q.push(&[rec(99)], limits(100, Overflow::DropNewest))
            .expect("push");
        let next = q.take(1).expect("take");
        assert!(next[0].0 > all[all.len() - 1].0);
    }

    #[test]
    fn overflow_policies() {
        let dir = tempfile::tempdir().expect("temp dir");
        let q = DiskQueue::open(&dir.path().join("new.redb")).expect("open");
        let recs: Vec<_> = (0..8).map(rec).collect();
        let p = q
            .push(&recs, limits(5, Overflow::DropNewest))
            .expect("push");
        assert_eq!(
            p,
            Pushed {
                accepted: 5,
                dropped: 3
            }
        );
        let got: Vec<_> = q.take(10).expect("take").into_iter().map(|t| t.1).collect();
        assert_eq!(got, recs[..5], "the newest were dropped");

        let q = DiskQueue::open(&dir.path().join("old.redb")).expect("open");
        q.push(&recs[..3], limits(5, Overflow::DropOldest))
            .expect("push");
        // Two are taken (in flight): drop-oldest must spare them.
        let inflight = q.take(2).expect("take");
        let p = q
            .push(&recs[3..], limits(5, Overflow::DropOldest))
            .expect("push");
        assert_eq!(
            p,
            Pushed {
                accepted: 5,
                dropped: 3
            },
            "3 old out, 5 new in"
        );
        let rest: Vec<_> = q.take(10).expect("take").into_iter().map(|t| t.1).collect();
        assert_eq!(rest, recs[5..], "the oldest untaken (2, 3, 4) were dropped");
        assert_eq!(q.len().0, 5);
        q.ack(&inflight.iter().map(|t| t.0).collect::<Vec<_>>())
            .expect("ack");
        assert_eq!(q.len().0, 3);

        // Bytes bound, and a message larger than the whole queue.
        let q = DiskQueue::open(&dir.path().join("bytes.redb")).expect("open");
        let l = QueueLimits {
            max_messages: 100,
            max_bytes: 2 * recs[0].len() as u64,
            overflow: Overflow::DropOldest,
        };
        let p = q.push(&recs[..3], l).expect("push");
        assert_eq!(
            p,
            Pushed {
                accepted: 3,
                dropped: 1
            }
        );
        let p = q.push(&[vec![0; 1000]], l).expect("push");
        assert_eq!(
            p,
            Pushed {
                accepted: 0,
                dropped: 1
            }
        );
        let got: Vec<_> = q.take(10).expect("take").into_iter().map(|t| t.1).collect();
        assert_eq!(got, recs[1..3]);
    }
}
