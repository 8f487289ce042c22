//! The tag bus: the one internal path every sample travels.
//!
//! Adapters publish batches of samples; consumers (historian, rules, broker, API streams)
//! subscribe. Design points, for 100k tags and 1M samples/s:
//! - Samples move in batches (`Arc<[Sample]>`): one allocation and one channel operation per
//!   poll cycle, not per sample, and fan-out to N subscribers clones a pointer, not the samples.
//! - Every subscriber has its own bounded queue and its own overflow policy: `Block` applies
//!   back-pressure to publishers (for consumers that must see everything, e.g. the historian),
//!   `DropNewest` never slows publishers and counts every sample it drops.
//! - The current value of every tag is kept in a table sharded by tag id, updated before fan-out,
//!   so readers of live values never wait on a consumer. The table grows by shard when tags are
//!   added while running (Sparkplug births): a fixed directory of lazily created shards, so the
//!   hot path never takes a lock to find a shard.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::RwLock;
use tokio::sync::mpsc;

use crate::namespace::TagId;
use crate::sample::Sample;

/// A batch of samples as it travels the bus.
pub type Batch = Arc<[Sample]>;

/// Tags per shard of the current-value table. Tags of one device have neighbouring ids, so a
/// batch usually touches one shard.
const SHARD_TAGS: usize = 1024;
/// Shards the directory has room for. The directory is allocated up front (one pointer-sized
/// cell a shard, 32 KiB) so that it never moves and needs no lock.
const MAX_SHARDS: usize = 4096;
/// The most tags a bus (and so a namespace) can hold: 4,194,304.
pub const MAX_TAGS: usize = SHARD_TAGS * MAX_SHARDS;

type Shard = RwLock<Box<[Option<Sample>]>>;

/// What a subscriber's full queue does to a publisher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    /// Publishers wait until the subscriber catches up (lossless).
    Block,
    /// The batch is dropped for this subscriber only and counted in its `dropped` metric.
    DropNewest,
}

struct Slot {
    name: String,
    tx: mpsc::Sender<Batch>,
    overflow: Overflow,
    dropped: Arc<AtomicU64>,
}

/// Work done on every batch before the current-value table and fan-out: the processor pipeline
/// (validators, computed tags, rules, alarms), installed by the runtime.
pub trait Stage: Send + Sync {
    /// May change, drop or append samples. Must not publish to the bus (it runs inside
    /// `publish`) and must not block.
    fn apply(&self, batch: &mut Vec<Sample>);
}

struct Inner {
    /// The processor pipeline, if one is installed (one atomic load per publish otherwise).
    stage: OnceLock<Arc<dyn Stage>>,
    /// Shard `i` holds tags `i * SHARD_TAGS ..`; created when the first of them is published
    /// (or up front for the tags the bus was created with).
    shards: Box<[OnceLock<Box<Shard>>]>,
    subscribers: RwLock<Arc<Vec<Arc<Slot>>>>,
    published_samples: AtomicU64,
    published_batches: AtomicU64,
}

/// Handle to the bus; cheap to clone.
#[derive(Clone)]
pub struct TagBus {
    inner: Arc<Inner>,
}

/// A consumer's end of the bus.
pub struct Subscription {
    rx: mpsc::Receiver<Batch>,
    dropped: Arc<AtomicU64>,
}

impl Subscription {
    /// The next batch, or `None` once the bus is gone.
    pub async fn recv(&mut self) -> Option<Batch> {
        self.rx.recv().await
    }

    /// The next batch, blocking the thread (for consumers on their own thread, never in async code).
    pub fn blocking_recv(&mut self) -> Option<Batch> {
        self.rx.blocking_recv()
    }

    /// The next batch if one is queued.
    pub fn try_recv(&mut self) -> Option<Batch> {
        self.rx.try_recv().ok()
    }

    /// Samples dropped for this subscriber because its queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Counters of the bus, for metrics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BusStats {
    pub published_samples: u64,
    pub published_batches: u64,
    /// (subscriber name, samples dropped, batches queued now)
    pub subscribers: Vec<(String, u64, usize)>,
}

impl TagBus {
    /// A bus for a namespace of `tag_count` tags now; tags added later (up to [`MAX_TAGS`]) get
    /// their shard of the current-value table when their first sample is published.
    pub fn new(tag_count: usize) -> TagBus {
        let shards: Box<[OnceLock<Box<Shard>>]> =
            (0..MAX_SHARDS).map(|_| OnceLock::new()).collect();
        for shard in shards
            .iter()
            .take(tag_count.min(MAX_TAGS).div_ceil(SHARD_TAGS))
        {
            shard.get_or_init(new_shard);
        }
        TagBus {
            inner: Arc::new(Inner {
                stage: OnceLock::new(),
                shards,
                subscribers: RwLock::new(Arc::new(Vec::new())),
                published_samples: AtomicU64::new(0),
                published_batches: AtomicU64::new(0),
            }),
        }
    }

    /// Registers a consumer with a queue of `capacity` batches.
    pub fn subscribe(&self, name: &str, capacity: usize, overflow: Overflow) -> Subscription {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let dropped = Arc::new(AtomicU64::new(0));
        let slot = Arc::new(Slot {
            name: name.to_owned(),
            tx,
            overflow,
            dropped: dropped.clone(),
        });
        let mut subs = self.inner.subscribers.write();
        let mut next = Vec::clone(&subs);
        next.push(slot);
        *subs = Arc::new(next);
        Subscription { rx, dropped }
    }

    /// Installs the processor pipeline; it sees every batch published from now on. Only the
    /// first call takes effect (returns `false` afterwards): install it before the sources start.
    pub fn set_stage(&self, stage: Arc<dyn Stage>) -> bool {
        self.inner.stage.set(stage).is_ok()
    }

    /// Publishes a batch: runs the processor pipeline on it (if installed), updates the
    /// current-value table, then hands the batch to every subscriber in subscription order.
    /// Samples with ids of [`MAX_TAGS`] or more are left out of the current-value table
    /// (adapters only produce ids the namespace gave them).
    pub async fn publish(&self, mut samples: Vec<Sample>) {
        if let Some(stage) = self.inner.stage.get() {
            stage.apply(&mut samples);
        }
        if samples.is_empty() {
            return;
        }
        self.update_current(&samples);
        let batch: Batch = samples.into();
        self.inner
            .published_samples
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        self.inner.published_batches.fetch_add(1, Ordering::Relaxed);
        let subs = self.inner.subscribers.read().clone();
        let mut closed = false;
        for slot in subs.iter() {
            let sent = match slot.overflow {
                Overflow::Block => slot.tx.send(batch.clone()).await.map_err(|_| true),
                Overflow::DropNewest => match slot.tx.try_send(batch.clone()) {
                    Ok(()) => Ok(()),
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        slot.dropped
                            .fetch_add(batch.len() as u64, Ordering::Relaxed);
                        Err(false)
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => Err(true),
                },
            };
            closed |= sent == Err(true);
        }
        if closed {
            let mut subs = self.inner.subscribers.write();
            let next: Vec<_> = subs.iter().filter(|s| !s.tx.is_closed()).cloned().collect();
            *subs = Arc::new(next);
        }
    }

    fn update_current(&self, samples: &[Sample]) {
        let mut i = 0;
        while i < samples.len() {
            let shard_no = samples[i].tag.index() / SHARD_TAGS;
            let Some(cell) = self.inner.shards.get(shard_no) else {
                i += 1;
                continue;
            };
            // One atomic load when the shard exists; created once per 1,024 new tags.
            let shard = cell.get_or_init(new_shard);
            let mut shard = shard.write();
            while let Some(s) = samples.get(i) {
                if s.tag.index() / SHARD_TAGS != shard_no {
                    break;
                }
                if let Some(slot) = shard.get_mut(s.tag.index() % SHARD_TAGS) {
                    *slot = Some(s.clone());
                }
                i += 1;
            }
        }
    }

    /// The latest sample of a tag, if any arrived.
    pub fn current(&self, tag: TagId) -> Option<Sample> {
        let shard = self.inner.shards.get(tag.index() / SHARD_TAGS)?.get()?;
        shard
            .read()
            .get(tag.index() % SHARD_TAGS)
            .cloned()
            .flatten()
    }

    /// Calls `f` with the latest sample of every tag that has one, in id order.
    pub fn for_each_current(&self, mut f: impl FnMut(&Sample)) {
        for shard in self.inner.shards.iter().filter_map(OnceLock::get) {
            for s in shard.read().iter().flatten() {
                f(s);
            }
        }
    }

    pub fn stats(&self) -> BusStats {
        let subs = self.inner.subscribers.read().clone();
        BusStats {
            published_samples: self.inner.published_samples.load(Ordering::Relaxed),
            published_batches: self.inner.published_batches.load(Ordering::Relaxed),
            subscribers: subs
                .iter()
                .map(|s| {
                    let queued = s.tx.max_capacity() - s.tx.capacity();
                    (s.name.clone(), s.dropped.load(Ordering::Relaxed), queued)
                })
                .collect(),
        }
    }
}

fn new_shard() -> Box<Shard> {
    Box::new(RwLock::new(vec![None; SHARD_TAGS].into_boxed_slice()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::{Quality, Timestamp, Value};

    fn sample(tag: u32, v: i64) -> Sample {
        Sample {
            tag: TagId(tag),
            value: Value::Int(v),
            quality: Quality::GOOD,
            source_ts: Timestamp(v),
            server_ts: Timestamp(v),
        }
    }

    #[tokio::test]
    async fn fans_out_in_order_and_keeps_current_values() {
        let bus = TagBus::new(3000);
        let mut a = bus.subscribe("a", 8, Overflow::Block);
        let mut b = bus.subscribe("b", 8, Overflow::DropNewest);
        bus.publish(vec![sample(0, 1), sample(2047, 2), sample(2999, 3)])
            .await;
        bus.publish(vec![sample(0, 4)]).await;
        for sub in [&mut a, &mut b] {
            let first = sub.recv().await.expect("batch");
            assert_eq!(
                first.iter().map(|s| s.tag.0).collect::<Vec<_>>(),
                vec![0, 2047, 2999]
            );
            let second = sub.recv().await.expect("batch");
            assert_eq!(second[0].value, Value::Int(4));
        }
        assert_eq!(bus.current(TagId(0)).map(|s| s.value), Some(Value::Int(4)));
        assert_eq!(
            bus.current(TagId(2999)).map(|s| s.value),
            Some(Value::Int(3))
        );
        assert_eq!(bus.current(TagId(5)), None);
        assert_eq!(bus.current(TagId(99_999)), None);
        assert_eq!(bus.current(TagId(u32::MAX)), None);
        let mut seen = 0;
        bus.for_each_current(|_| seen += 1);
        assert_eq!(seen, 3);
        assert_eq!(bus.stats().published_samples, 4);
    }

    #[tokio::test]
    async fn current_value_table_grows_for_tags_added_later() {
        let bus = TagBus::new(10);
        let mut sub = bus.subscribe("s", 8, Overflow::Block);
        // A tag born at run time, far past the initial shard, and one past the limit.
        let late = u32::try_from(MAX_TAGS - 1).expect("fits");
        bus.publish(vec![sample(5, 1), sample(5000, 2), sample(late, 3)])
            .await;
        bus.publish(vec![sample(u32::MAX, 4)]).await;
        assert_eq!(
            bus.current(TagId(5000)).map(|s| s.value),
            Some(Value::Int(2))
        );
        assert_eq!(
            bus.current(TagId(late)).map(|s| s.value),
            Some(Value::Int(3))
        );
        assert_eq!(bus.current(TagId(5001)), None);
        assert_eq!(
            bus.current(TagId(u32::MAX)),
            None,
            "beyond MAX_TAGS: not kept"
        );
        let mut seen = Vec::new();
        bus.for_each_current(|s| seen.push(s.tag.0));
        assert_eq!(seen, vec![5, 5000, late]);
        assert_eq!(sub.recv().await.expect("batch").len(), 3);
        assert_eq!(
            sub.recv().await.expect("batch")[0].tag.0,
            u32::MAX,
            "still fanned out"
        );
    }

    #[tokio::test]
    async fn drop_newest_counts_drops_and_never_blocks() {
        let bus = TagBus::new(10);
        let mut slow = bus.subscribe("slow", 2, Overflow::DropNewest);
        for v in 0..5 {
            bus.publish(vec![sample(1, v), sample(2, v)]).await;
        }
        assert_eq!(slow.dropped(), 6, "3 batches of 2 samples did not fit");
        assert_eq!(slow.recv().await.expect("batch")[0].value, Value::Int(0));
        assert_eq!(bus.stats().subscribers[0].1, 6);
    }

    #[tokio::test]
    async fn block_applies_back_pressure() {
        let bus = TagBus::new(10);
        let mut sub = bus.subscribe("lossless", 1, Overflow::Block);
        bus.publish(vec![sample(1, 0)]).await;
        let bus2 = bus.clone();
        let publisher = tokio::spawn(async move {
            for v in 1..50 {
                bus2.publish(vec![sample(1, v)]).await;
            }
        });
        for v in 0..50 {
            assert_eq!(sub.recv().await.expect("batch")[0].value, Value::Int(v));
        }
        publisher.await.expect("publisher finished");
        assert_eq!(sub.dropped(), 0);
    }

    #[tokio::test]
    async fn closed_subscribers_are_removed() {
        let bus = TagBus::new(10);
        let sub = bus.subscribe("gone", 1, Overflow::Block);
        drop(sub);
        bus.publish(vec![sample(1, 0)]).await;
        assert!(bus.stats().subscribers.is_empty());
    }
}
