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
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, Table,
    TableDefinition,
};

const MESSAGES: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("messages");
/// Remote topic → `[seq: u64 LE][SHA-256 of the record]` of the last retained message queued
/// for it that was not dropped or refused: the remote holds it, or will once it is delivered.
const RETAINED: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("retained");
/// Sequence number → remote topic, for queued records that are some topic's `RETAINED` entry
/// (so dropping or refusing one can forget the digest).
const RETAINED_BY_SEQ: TableDefinition<'_, u64, &str> = TableDefinition::new("retained_by_seq");
/// Counter name → value ([`Counters`]), written in every transaction that changes the queue.
const COUNTERS: TableDefinition<'_, &str, u64> = TableDefinition::new("counters");

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

/// One message to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// The encoded message.
    pub record: Vec<u8>,
    /// For a retained message, its remote topic: a record equal to the last retained one
    /// queued for that topic is skipped (the remote has it), see [`DiskQueue::push`].
    pub retained_topic: Option<String>,
}

/// What a push did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pushed {
    /// New messages now in the queue.
    pub accepted: u64,
    /// Messages dropped by the overflow policy (new ones or old ones).
    pub dropped: u64,
    /// Retained messages not queued because the remote has (or will get) the same one.
    pub unchanged: u64,
}

/// The bridge's counters; persisted with the queue, so they survive restarts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Local messages written to the queue.
    pub enqueued: u64,
    /// Messages acknowledged by the remote.
    pub sent: u64,
    /// Messages dropped by the overflow policy.
    pub dropped: u64,
    /// Messages the remote refused, or that could not be encoded or decoded.
    pub rejected: u64,
    /// Retained messages skipped because the remote already has the same one.
    pub unchanged: u64,
    /// Remote messages published into the local broker.
    pub received: u64,
    /// Messages not forwarded because they came over this bridge.
    pub looped: u64,
    /// Connections established to the remote.
    pub connects: u64,
}

impl Counters {
    fn fields(&self) -> [(&'static str, u64); 8] {
        [
            ("enqueued", self.enqueued),
            ("sent", self.sent),
            ("dropped", self.dropped),
            ("rejected", self.rejected),
            ("unchanged", self.unchanged),
            ("received", self.received),
            ("looped", self.looped),
            ("connects", self.connects),
        ]
    }

    fn set(&mut self, name: &str, v: u64) {
        match name {
            "enqueued" => self.enqueued = v,
            "sent" => self.sent = v,
            "dropped" => self.dropped = v,
            "rejected" => self.rejected = v,
            "unchanged" => self.unchanged = v,
            "received" => self.received = v,
            "looped" => self.looped = v,
            "connects" => self.connects = v,
            _ => {} // a counter of a newer version: ignored
        }
    }

    fn plus(&self, d: &Counters) -> Counters {
        Counters {
            enqueued: self.enqueued.saturating_add(d.enqueued),
            sent: self.sent.saturating_add(d.sent),
            dropped: self.dropped.saturating_add(d.dropped),
            rejected: self.rejected.saturating_add(d.rejected),
            unchanged: self.unchanged.saturating_add(d.unchanged),
            received: self.received.saturating_add(d.received),
            looped: self.looped.saturating_add(d.looped),
            connects: self.connects.saturating_add(d.connects),
        }
    }
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

/// A durable FIFO; every method does blocking I/O (call it from a blocking thread), except
/// [`DiskQueue::len`], [`DiskQueue::counters`] and [`DiskQueue::note`].
pub struct DiskQueue {
    db: Database,
    file: String,
    state: Mutex<State>,
    /// Live counters; the disk has them as of the last transaction. A separate lock, so
    /// [`DiskQueue::note`] never waits for a commit.
    counters: Mutex<Counters>,
}

/// SHA-256 of a record: what the remote holds for a retained topic.
fn digest(record: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, record);
    let mut out = [0; 32];
    out.copy_from_slice(d.as_ref());
    out
}

fn retained_entry(seq: u64, digest: &[u8; 32]) -> [u8; 40] {
    let mut v = [0; 40];
    v[..8].copy_from_slice(&seq.to_le_bytes());
    v[8..].copy_from_slice(digest);
    v
}

/// Forgets the retained digest that `seq` set, if it is still its topic's one: the remote
/// will not get that message (dropped or refused).
fn forget_retained(
    by_seq: &mut Table<'_, u64, &str>,
    retained: &mut Table<'_, &str, &[u8]>,
    seq: u64,
) -> Result<(), redb::Error> {
    let Some(topic) = by_seq.remove(seq)?.map(|t| t.value().to_owned()) else {
        return Ok(());
    };
    let current = retained
        .get(topic.as_str())?
        .and_then(|v| v.value().get(..8).map(|b| b.to_vec()));
    if current.as_deref() == Some(&seq.to_le_bytes()[..]) {
        retained.remove(topic.as_str())?;
    }
    Ok(())
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
        txn.open_table(RETAINED).map_err(|e| err(&e))?;
        txn.open_table(RETAINED_BY_SEQ).map_err(|e| err(&e))?;
        txn.open_table(COUNTERS).map_err(|e| err(&e))?;
        txn.commit().map_err(|e| err(&e))?;
        let mut st = State::default();
        let mut counters = Counters::default();
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
            // Sequence numbers are never reused within a file, even once the queue is empty:
            // a retained digest names the sequence number that set it.
            let by_seq = txn.open_table(RETAINED_BY_SEQ).map_err(|e| err(&e))?;
            if let Some(last) = by_seq.last().map_err(|e| err(&e))? {
                st.next_seq = st.next_seq.max(last.0.value() + 1);
            }
            let retained = txn.open_table(RETAINED).map_err(|e| err(&e))?;
            for entry in retained.iter().map_err(|e| err(&e))? {
                let (_, v) = entry.map_err(|e| err(&e))?;
                if let Some(seq) = v.value().first_chunk::<8>() {
                    st.next_seq = st.next_seq.max(u64::from_le_bytes(*seq) + 1);
                }
            }
            st.untaken = st.untaken.min(st.next_seq);
            if first.is_none() {
                st.untaken = st.next_seq;
            }
            let table = txn.open_table(COUNTERS).map_err(|e| err(&e))?;
            for entry in table.iter().map_err(|e| err(&e))? {
                let (k, v) = entry.map_err(|e| err(&e))?;
                counters.set(k.value(), v.value());
            }
        }
        Ok(DiskQueue {
            db,
            file,
            state: Mutex::new(st),
            counters: Mutex::new(counters),
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

    /// The counters now (restored from the file at open).
    pub fn counters(&self) -> Counters {
        *self.counters.lock()
    }

    /// Adds to counters that change without a queue transaction (received, looped, connects,
    /// messages refused before queueing); they reach the disk with the next transaction or
    /// [`DiskQueue::flush`].
    pub fn note(&self, delta: &Counters) {
        let mut c = self.counters.lock();
        *c = c.plus(delta);
    }

    /// Writes the counters (at shutdown).
    pub fn flush(&self) -> Result<(), QueueError> {
        let _st = self.state.lock();
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        self.write_counters(&txn, &Counters::default())?;
        txn.commit().map_err(|e| self.err(e))
    }

    /// Writes the live counters plus `delta` (this transaction's changes, applied to the live
    /// ones by the caller once committed).
    fn write_counters(
        &self,
        txn: &redb::WriteTransaction,
        delta: &Counters,
    ) -> Result<(), QueueError> {
        let c = self.counters.lock().plus(delta);
        let mut table = txn.open_table(COUNTERS).map_err(|e| self.err(e))?;
        for (name, v) in c.fields() {
            table.insert(name, v).map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    /// Appends `items` in order in one durable transaction, applying the limits.
    ///
    /// A retained item whose record equals the last retained record queued for its remote topic
    /// (and neither dropped nor refused since) is skipped and counted as `unchanged`: the
    /// remote has it, or gets it from the queue. This is what keeps the broker's replay of
    /// retained messages at every start from re-sending the whole snapshot upstream.
    pub fn push(&self, items: &[Item], limits: QueueLimits) -> Result<Pushed, QueueError> {
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
            let mut retained = txn.open_table(RETAINED).map_err(|e| self.err(e))?;
            let mut by_seq = txn.open_table(RETAINED_BY_SEQ).map_err(|e| self.err(e))?;
            for item in items {
                let rec = &item.record;
                let hash = item.retained_topic.as_ref().map(|_| digest(rec));
                if let (Some(topic), Some(hash)) = (&item.retained_topic, &hash) {
                    let same = retained
                        .get(topic.as_str())
                        .map_err(|e| self.err(e))?
                        .is_some_and(|v| v.value().get(8..) == Some(&hash[..]));
                    if same {
                        out.unchanged += 1;
                        continue;
                    }
                }
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
                            forget_retained(&mut by_seq, &mut retained, next.untaken)
                                .map_err(|e| self.err(e))?;
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
                if let (Some(topic), Some(hash)) = (&item.retained_topic, &hash) {
                    retained
                        .insert(topic.as_str(), &retained_entry(next.next_seq, hash)[..])
                        .map_err(|e| self.err(e))?;
                    by_seq
                        .insert(next.next_seq, topic.as_str())
                        .map_err(|e| self.err(e))?;
                }
                next.next_seq += 1;
                next.count += 1;
                next.bytes += len;
                out.accepted += 1;
            }
        }
        let delta = Counters {
            enqueued: out.accepted,
            dropped: out.dropped,
            unchanged: out.unchanged,
            ..Counters::default()
        };
        self.write_counters(&txn, &delta)?;
        txn.commit().map_err(|e| self.err(e))?;
        *st = next;
        self.note(&delta);
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
        match out.last() {
            Some((last, _)) => st.untaken = last + 1,
            None => st.untaken = st.next_seq,
        }
        Ok(out)
    }

    /// Removes acknowledged messages (`acked`, counted as sent) and refused or unreadable
    /// ones (`refused`, counted as rejected; the remote does not have them, so a retained
    /// one's digest is forgotten) in one durable transaction.
    pub fn ack(&self, acked: &[u64], refused: &[u64]) -> Result<(), QueueError> {
        if acked.is_empty() && refused.is_empty() {
            return Ok(());
        }
        let mut st = self.state.lock();
        let mut txn = self.db.begin_write().map_err(|e| self.err(e))?;
        txn.set_durability(Durability::Immediate)
            .map_err(|e| self.err(e))?;
        let (mut count, mut bytes) = (st.count, st.bytes);
        let mut delta = Counters::default();
        {
            let mut table = txn.open_table(MESSAGES).map_err(|e| self.err(e))?;
            let mut retained = txn.open_table(RETAINED).map_err(|e| self.err(e))?;
            let mut by_seq = txn.open_table(RETAINED_BY_SEQ).map_err(|e| self.err(e))?;
            for (seqs, ok) in [(acked, true), (refused, false)] {
                for seq in seqs {
                    if let Some(v) = table.remove(*seq).map_err(|e| self.err(e))? {
                        count -= 1;
                        bytes -= v.value().len() as u64;
                    }
                    if ok {
                        delta.sent += 1;
                        by_seq.remove(*seq).map_err(|e| self.err(e))?;
                    } else {
                        delta.rejected += 1;
                        forget_retained(&mut by_seq, &mut retained, *seq)
                            .map_err(|e| self.err(e))?;
                    }
                }
            }
        }
        self.write_counters(&txn, &delta)?;
        txn.commit().map_err(|e| self.err(e))?;
        st.count = count;
        st.bytes = bytes;
        self.note(&delta);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(i: u64) -> Vec<u8> {
        format!("message {i:04}").into_bytes()
    }

    fn items(recs: &[Vec<u8>]) -> Vec<Item> {
        recs.iter()
            .map(|r| Item {
                record: r.clone(),
                retained_topic: None,
            })
            .collect()
    }

    fn retained(topic: &str, value: &str) -> Item {
        Item {
            record: value.as_bytes().to_vec(),
            retained_topic: Some(topic.to_owned()),
        }
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
            .push(&items(&recs), limits(100, Overflow::DropNewest))
            .expect("push");
        assert_eq!(
            p,
            Pushed {
                accepted: 10,
                dropped: 0,
                unchanged: 0,
            }
        );
        let taken = q.take(4).expect("take");
        assert_eq!(
            taken.iter().map(|t| t.1.clone()).collect::<Vec<_>>(),
            recs[..4]
        );
        q.ack(&[taken[0].0, taken[1].0], &[]).expect("ack");
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
        q.push(&items(&[rec(99)]), limits(100, Overflow::DropNewest))
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
            .push(&items(&recs), limits(5, Overflow::DropNewest))
            .expect("push");
        assert_eq!(
            p,
            Pushed {
                accepted: 5,
                dropped: 3,
                unchanged: 0,
            }
        );
        let got: Vec<_> = q.take(10).expect("take").into_iter().map(|t| t.1).collect();
        assert_eq!(got, recs[..5], "the newest were dropped");

        let q = DiskQueue::open(&dir.path().join("old.redb")).expect("open");
        q.push(&items(&recs[..3]), limits(5, Overflow::DropOldest))
            .expect("push");
        // Two are taken (in flight): drop-oldest must spare them.
        let inflight = q.take(2).expect("take");
        let p = q
            .push(&items(&recs[3..]), limits(5, Overflow::DropOldest))
            .expect("push");
        assert_eq!(
            p,
            Pushed {
                accepted: 5,
                dropped: 3,
                unchanged: 0,
            },
            "3 old out, 5 new in"
        );
        let rest: Vec<_> = q.take(10).expect("take").into_iter().map(|t| t.1).collect();
        assert_eq!(rest, recs[5..], "the oldest untaken (2, 3, 4) were dropped");
        assert_eq!(q.len().0, 5);
        q.ack(&inflight.iter().map(|t| t.0).collect::<Vec<_>>(), &[])
            .expect("ack");
        assert_eq!(q.len().0, 3);

        // Bytes bound, and a message larger than the whole queue.
        let q = DiskQueue::open(&dir.path().join("bytes.redb")).expect("open");
        let l = QueueLimits {
            max_messages: 100,
            max_bytes: 2 * recs[0].len() as u64,
            overflow: Overflow::DropOldest,
        };
        let p = q.push(&items(&recs[..3]), l).expect("push");
        assert_eq!(
            p,
            Pushed {
                accepted: 3,
                dropped: 1,
                unchanged: 0,
            }
        );
        let p = q.push(&items(&[vec![0; 1000]]), l).expect("push");
        assert_eq!(
            p,
            Pushed {
                accepted: 0,
                dropped: 1,
                unchanged: 0,
            }
        );
        let got: Vec<_> = q.take(10).expect("take").into_iter().map(|t| t.1).collect();
        assert_eq!(got, recs[1..3]);
    }

    fn all(q: &DiskQueue) -> Vec<Vec<u8>> {
        q.take(1000)
            .expect("take")
            .into_iter()
            .map(|t| t.1)
            .collect()
    }

    #[test]
    fn unchanged_retained_messages_are_not_queued_again() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("q.redb");
        let l = limits(100, Overflow::DropNewest);
        let q = DiskQueue::open(&path).expect("open");
        let p = q
            .push(&[retained("a", "1"), retained("b", "1")], l)
            .expect("push");
        assert_eq!((p.accepted, p.unchanged), (2, 0));
        let taken = q.take(10).expect("take");
        q.ack(&taken.iter().map(|t| t.0).collect::<Vec<_>>(), &[])
            .expect("ack");
        drop(q);
        // A restart replays the retained snapshot: only what changed is queued.
        let q = DiskQueue::open(&path).expect("reopen");
        let p = q
            .push(&[retained("a", "1"), retained("b", "2")], l)
            .expect("push");
        assert_eq!((p.accepted, p.unchanged), (1, 1));
        assert_eq!(all(&q), vec![b"2".to_vec()]);
        // Within one batch too; and a value that comes back is sent again.
        let p = q
            .push(
                &[retained("a", "2"), retained("a", "2"), retained("a", "1")],
                l,
            )
            .expect("push");
        assert_eq!((p.accepted, p.unchanged), (2, 1));
        // Plain (not retained) messages are never skipped.
        let p = q.push(&items(&[rec(1), rec(1)]), l).expect("push");
        assert_eq!((p.accepted, p.unchanged), (2, 0));
        let c = q.counters();
        assert_eq!((c.enqueued, c.unchanged, c.sent), (7, 2, 2));
    }

    #[test]
    fn dropped_or_refused_retained_messages_are_sent_again() {
        let dir = tempfile::tempdir().expect("temp dir");
        let q = DiskQueue::open(&dir.path().join("q.redb")).expect("open");
        let l = limits(1, Overflow::DropOldest);
        q.push(&[retained("a", "1")], l).expect("push");
        // "b" pushes "a" out: the remote never got "a", so its replay must go again.
        let p = q.push(&[retained("b", "1")], l).expect("push");
        assert_eq!((p.accepted, p.dropped), (1, 1));
        let p = q.push(&[retained("a", "1")], l).expect("push");
        assert_eq!((p.accepted, p.unchanged, p.dropped), (1, 0, 1));
        let taken = q.take(1).expect("take");
        // Refused by the remote: not there either.
        q.ack(&[], &[taken[0].0]).expect("refuse");
        let p = q.push(&[retained("a", "1")], l).expect("push");
        assert_eq!((p.accepted, p.unchanged), (1, 0));
        let c = q.counters();
        assert_eq!((c.rejected, c.dropped, c.enqueued), (1, 2, 4));
    }

    #[test]
    fn counters_survive_a_restart() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("q.redb");
        let q = DiskQueue::open(&path).expect("open");
        q.note(&Counters {
            received: 3,
            connects: 1,
            ..Counters::default()
        });
        q.push(
            &items(&[rec(1), rec(2), rec(3)]),
            limits(2, Overflow::DropNewest),
        )
        .expect("push");
        let taken = q.take(2).expect("take");
        q.ack(&[taken[0].0], &[taken[1].0]).expect("ack");
        q.note(&Counters {
            looped: 1,
            ..Counters::default()
        });
        let before = q.counters();
        assert_eq!(
            before,
            Counters {
                enqueued: 2,
                sent: 1,
                dropped: 1,
                rejected: 1,
                unchanged: 0,
                received: 3,
                looped: 1,
                connects: 1,
            }
        );
        q.flush().expect("flush");
        drop(q);
        let q = DiskQueue::open(&path).expect("reopen");
        assert_eq!(q.counters(), before);
    }
}
