//! In-memory heads: the acknowledged samples not yet in compressed chunks, per tag, columnar.

use ironplant_core::Value;

use crate::wal::Entry;

/// One tag's recent samples in arrival order (almost always time order).
#[derive(Debug, Default, Clone)]
pub struct Head {
    pub ts: Vec<i64>,
    pub values: Vec<Value>,
    pub quality: Vec<u8>,
}

/// A stored sample as queries see it (quality still as its code).
#[derive(Debug, Clone, PartialEq)]
pub struct Raw {
    pub ts: i64,
    pub value: Value,
    pub quality: u8,
}

impl Head {
    pub fn push(&mut self, ts: i64, value: Value, quality: u8) {
        self.ts.push(ts);
        self.values.push(value);
        self.quality.push(quality);
    }

    pub fn len(&self) -> usize {
        self.ts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ts.is_empty()
    }

    fn raw(&self, i: usize) -> Raw {
        Raw {
            ts: self.ts[i],
            value: self.values[i].clone(),
            quality: self.quality[i],
        }
    }

    /// Samples with `from <= ts < to`, in stored order.
    pub fn range(&self, from: i64, to: i64, out: &mut Vec<Raw>) {
        for (i, &t) in self.ts.iter().enumerate() {
            if t >= from && t < to {
                out.push(self.raw(i));
            }
        }
    }

    /// The latest sample strictly before `t` (the later one of equal timestamps).
    pub fn before(&self, t: i64) -> Option<Raw> {
        let mut best: Option<usize> = None;
        for (i, &ts) in self.ts.iter().enumerate() {
            if ts < t && best.is_none_or(|b| ts >= self.ts[b]) {
                best = Some(i);
            }
        }
        best.map(|i| self.raw(i))
    }

    /// The earliest sample at or after `t`.
    pub fn after(&self, t: i64) -> Option<Raw> {
        let mut best: Option<usize> = None;
        for (i, &ts) in self.ts.iter().enumerate() {
            if ts >= t && best.is_none_or(|b| ts < self.ts[b]) {
                best = Some(i);
            }
        }
        best.map(|i| self.raw(i))
    }
}

/// All heads, indexed by historian tag id.
#[derive(Debug, Default)]
pub struct Memtable {
    pub heads: Vec<Head>,
    pub samples: usize,
    /// Highest WAL LSN whose samples are in this memtable (or earlier memtables/chunks).
    pub lsn: u64,
}

impl Memtable {
    pub fn insert(&mut self, e: Entry) {
        let i = e.hid as usize;
        if i >= self.heads.len() {
            self.heads.resize_with(i + 1, Head::default);
        }
        self.heads[i].push(e.ts, e.value, e.quality);
        self.samples += 1;
    }

    pub fn head(&self, hid: u32) -> Option<&Head> {
        self.heads.get(hid as usize).filter(|h| !h.is_empty())
    }
}
