//! Aggregates over fixed intervals and interpolation at an instant: pure functions over sorted
//! samples. Only Good samples enter a result; Uncertain and Bad ones are counted in `bad`
//! (OPC UA Part 13's default, TreatUncertainAsBad).

use ironplant_core::{Timestamp, Value};

use crate::memtable::Raw;

/// An aggregate function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Aggregate {
    Min,
    Max,
    /// Arithmetic mean of the good samples.
    Avg,
    /// Time-weighted average, each good value holding until the next sample (stepped); time
    /// after a Bad sample counts as unknown and is left out.
    TimeWeightedAvg,
    First,
    Last,
    /// Number of good samples.
    Count,
    /// Population standard deviation of the good samples.
    StdDev,
    /// Increase of a counter: the sum of increments between consecutive good samples, starting
    /// from the last good value before the interval; a decrease counts as a reset to zero.
    Delta,
}

impl Aggregate {
    pub const ALL: [Aggregate; 9] = [
        Aggregate::Min,
        Aggregate::Max,
        Aggregate::Avg,
        Aggregate::TimeWeightedAvg,
        Aggregate::First,
        Aggregate::Last,
        Aggregate::Count,
        Aggregate::StdDev,
        Aggregate::Delta,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Aggregate::Min => "min",
            Aggregate::Max => "max",
            Aggregate::Avg => "avg",
            Aggregate::TimeWeightedAvg => "twa",
            Aggregate::First => "first",
            Aggregate::Last => "last",
            Aggregate::Count => "count",
            Aggregate::StdDev => "stddev",
            Aggregate::Delta => "delta",
        }
    }

    pub fn parse(s: &str) -> Option<Aggregate> {
        Aggregate::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

/// How `at` finds a value between samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interpolation {
    /// The last sample at or before the instant.
    Previous,
    /// Linear between the good samples around the instant (previous value when not numeric).
    Linear,
}

/// One interval's results.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub start: Timestamp,
    /// One per requested aggregate; `None` when the interval has no good data for it.
    pub values: Vec<Option<f64>>,
    pub good: u64,
    pub bad: u64,
}

fn is_good(q: u8) -> bool {
    q >> 5 == 0
}

/// One interval's accumulated state: what an hourly rollup keeps, and what several of them
/// merge into for a longer interval ([`Summary::merge`]).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Summary {
    acc: Acc,
    /// Whether the counter (Delta) was known at the interval's end.
    counter_known: bool,
}

/// Bytes of an encoded [`Summary`].
pub const SUMMARY_BYTES: usize = 8 * 12 + 1;

impl Summary {
    /// The interval's row for `aggs`.
    pub fn row(&self, start: i64, aggs: &[Aggregate]) -> Row {
        let a = &self.acc;
        let has = a.n > 0;
        let values = aggs
            .iter()
            .map(|agg| match agg {
                Aggregate::Min => has.then_some(a.min),
                Aggregate::Max => has.then_some(a.max),
                Aggregate::Avg => has.then_some(a.mean),
                Aggregate::TimeWeightedAvg => (a.known_us > 0).then(|| a.area / a.known_us as f64),
                Aggregate::First => a.first,
                Aggregate::Last => a.last,
                Aggregate::Count => Some(a.good as f64),
                Aggregate::StdDev => has.then(|| (a.m2 / a.n as f64).sqrt()),
                Aggregate::Delta => self.counter_known.then_some(a.delta),
            })
            .collect();
        Row {
            start: Timestamp(start),
            values,
            good: a.good,
            bad: a.bad,
        }
    }

    /// The summary of this interval followed by `next` (Chan et al.'s pairwise mean and M2).
    pub fn merge(&self, next: &Summary) -> Summary {
        let (a, b) = (&self.acc, &next.acc);
        let n = a.n + b.n;
        let (mean, m2) = if a.n == 0 {
            (b.mean, b.m2)
        } else if b.n == 0 {
            (a.mean, a.m2)
        } else {
            let d = b.mean - a.mean;
            let nf = n as f64;
            (
                a.mean + d * b.n as f64 / nf,
                a.m2 + b.m2 + d * d * a.n as f64 * b.n as f64 / nf,
            )
        };
        Summary {
            acc: Acc {
                good: a.good + b.good,
                bad: a.bad + b.bad,
                n,
                min: a.min.min(b.min),
                max: a.max.max(b.max),
                mean,
                m2,
                first: a.first.or(b.first),
                last: b.last.or(a.last),
                area: a.area + b.area,
                known_us: a.known_us + b.known_us,
                delta: a.delta + b.delta,
            },
            counter_known: next.counter_known,
        }
    }

    pub fn encode(&self) -> [u8; SUMMARY_BYTES] {
        let a = &self.acc;
        let mut out = [0u8; SUMMARY_BYTES];
        let fields: [u64; 12] = [
            a.good,
            a.bad,
            a.n,
            a.min.to_bits(),
            a.max.to_bits(),
            a.mean.to_bits(),
            a.m2.to_bits(),
            a.first.unwrap_or(0.0).to_bits(),
            a.last.unwrap_or(0.0).to_bits(),
            a.area.to_bits(),
            a.known_us as u64,
            a.delta.to_bits(),
        ];
        for (i, f) in fields.iter().enumerate() {
            out[i * 8..i * 8 + 8].copy_from_slice(&f.to_le_bytes());
        }
        out[96] = u8::from(a.first.is_some())
            | u8::from(a.last.is_some()) << 1
            | u8::from(self.counter_known) << 2;
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<Summary> {
        if bytes.len() != SUMMARY_BYTES {
            return None;
        }
        let f = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[i * 8..i * 8 + 8]);
            u64::from_le_bytes(b)
        };
        let flags = bytes[96];
        Some(Summary {
            acc: Acc {
                good: f(0),
                bad: f(1),
                n: f(2),
                min: f64::from_bits(f(3)),
                max: f64::from_bits(f(4)),
                mean: f64::from_bits(f(5)),
                m2: f64::from_bits(f(6)),
                first: (flags & 1 != 0).then(|| f64::from_bits(f(7))),
                last: (flags & 2 != 0).then(|| f64::from_bits(f(8))),
                area: f64::from_bits(f(9)),
                known_us: f(10) as i64,
                delta: f64::from_bits(f(11)),
            },
            counter_known: flags & 4 != 0,
        })
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Acc {
    good: u64,
    bad: u64,
    n: u64,
    min: f64,
    max: f64,
    mean: f64,
    m2: f64,
    first: Option<f64>,
    last: Option<f64>,
    area: f64,
    known_us: i64,
    delta: f64,
}

/// Computes `aggs` over `[from, to)` in intervals of `step` µs. `pts` are sorted by time and
/// lie in the range; `before` is the last sample before `from`, if any (for TWA and Delta).
pub fn compute(
    pts: &[Raw],
    before: Option<&Raw>,
    from: i64,
    to: i64,
    step: i64,
    aggs: &[Aggregate],
) -> Vec<Row> {
    let mut a = Aggregator::new(aggs, before, from, to, step);
    for p in pts {
        a.push(p);
    }
    a.finish()
}

fn numeric(r: &Raw) -> Option<f64> {
    if is_good(r.quality) {
        r.value.as_f64()
    } else {
        None
    }
}

/// Streaming form of [`compute`]: samples are pushed in time order, so a query over a long range
/// holds one interval's state, not the samples.
pub struct Aggregator {
    aggs: Vec<Aggregate>,
    to: i64,
    step: i64,
    /// The held value for TWA (None = unknown, e.g. after a Bad sample).
    held: Option<f64>,
    /// The counter's last good value, for Delta.
    counter: Option<f64>,
    start: i64,
    end: i64,
    t_prev: i64,
    acc: Acc,
    rows: Vec<Row>,
    /// With [`Aggregator::summaries`]: the intervals' states instead of rows.
    summaries: Option<Vec<(i64, Summary)>>,
}

impl Aggregator {
    pub fn new(
        aggs: &[Aggregate],
        before: Option<&Raw>,
        from: i64,
        to: i64,
        step: i64,
    ) -> Aggregator {
        let held = before.and_then(numeric);
        Aggregator {
            aggs: aggs.to_vec(),
            to,
            step,
            held,
            counter: held,
            start: from,
            end: from.saturating_add(step).min(to),
            t_prev: from,
            acc: Acc::fresh(),
            rows: Vec::new(),
            summaries: None,
        }
    }

    /// The same computation, keeping each interval's [`Summary`] (for rollups).
    pub fn summaries(before: Option<&Raw>, from: i64, to: i64, step: i64) -> Aggregator {
        let mut a = Aggregator::new(&[], before, from, to, step);
        a.summaries = Some(Vec::new());
        a
    }

    /// The intervals' summaries (for an aggregator made by [`Aggregator::summaries`]).
    pub fn finish_summaries(mut self) -> Vec<(i64, Summary)> {
        while self.start < self.to {
            self.close();
        }
        self.summaries.unwrap_or_default()
    }

    /// Closes intervals until `ts` falls in the current one.
    fn advance_to(&mut self, ts: i64) {
        while ts >= self.end && self.start < self.to {
            self.close();
        }
    }

    fn close(&mut self) {
        let a = &mut self.acc;
        if let Some(h) = self.held {
            a.area += h * (self.end - self.t_prev) as f64;
            a.known_us += self.end - self.t_prev;
        }
        let summary = Summary {
            acc: *a,
            counter_known: self.counter.is_some(),
        };
        match self.summaries.as_mut() {
            Some(s) => s.push((self.start, summary)),
            None => self.rows.push(summary.row(self.start, &self.aggs)),
        }
        self.start = self.end;
        self.end = self.start.saturating_add(self.step).min(self.to);
        self.t_prev = self.start;
        self.acc = Acc::fresh();
    }

    /// Adds the next sample (time order; samples outside the range are ignored).
    pub fn push(&mut self, p: &Raw) {
        if p.ts < self.start || p.ts >= self.to {
            return;
        }
        self.advance_to(p.ts);
        let a = &mut self.acc;
        if let Some(h) = self.held {
            a.area += h * (p.ts - self.t_prev) as f64;
            a.known_us += p.ts - self.t_prev;
        }
        self.t_prev = p.ts;
        if !is_good(p.quality) {
            a.bad += 1;
            self.held = None;
            return;
        }
        a.good += 1;
        let Some(x) = p.value.as_f64() else {
            self.held = None;
            return;
        };
        self.held = Some(x);
        a.n += 1;
        a.min = a.min.min(x);
        a.max = a.max.max(x);
        let d = x - a.mean;
        a.mean += d / a.n as f64;
        a.m2 += d * (x - a.mean);
        a.first.get_or_insert(x);
        a.last = Some(x);
        if let Some(c) = self.counter {
            a.delta += if x >= c { x - c } else { x };
        }
        self.counter = Some(x);
    }

    pub fn finish(mut self) -> Vec<Row> {
        while self.start < self.to {
            self.close();
        }
        self.rows
    }
}

impl Acc {
    fn fresh() -> Acc {
        Acc {
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            ..Acc::default()
        }
    }
}

/// The value at `t`: `hit` is a sample exactly at `t`, `before`/`after` the nearest ones
/// around it. The returned sample carries `t` as its time.
pub fn interpolate(
    hit: Option<Raw>,
    before: Option<Raw>,
    after: Option<Raw>,
    t: i64,
    how: Interpolation,
) -> Option<Raw> {
    if let Some(h) = hit {
        return Some(h);
    }
    let prev = before?;
    if how == Interpolation::Linear {
        if let Some(next) = after {
            let both_good = is_good(prev.quality) && is_good(next.quality);
            if let (true, Some(a), Some(b)) = (both_good, prev.value.as_f64(), next.value.as_f64())
            {
                if !matches!(prev.value, Value::Bool(_)) && next.ts > prev.ts {
                    let f = (t - prev.ts) as f64 / (next.ts - prev.ts) as f64;
                    return Some(Raw {
                        ts: t,
                        value: Value::Float(a + (b - a) * f),
                        quality: prev.quality,
                    });
                }
            }
        }
    }
    Some(Raw { ts: t, ..prev })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BAD: u8 = 2 << 5 | 1;

    fn r(ts: i64, v: f64) -> Raw {
        Raw {
            ts,
            value: Value::Float(v),
            quality: 0,
        }
    }

    fn agg(
        pts: &[Raw],
        before: Option<&Raw>,
        from: i64,
        to: i64,
        step: i64,
        a: Aggregate,
    ) -> Vec<Option<f64>> {
        compute(pts, before, from, to, step, &[a])
            .into_iter()
            .map(|r| r.values[0])
            .collect()
    }

    #[test]
    fn basic_aggregates_per_interval() {
        let pts = [r(0, 1.0), r(10, 3.0), r(20, 5.0), r(30, 7.0)];
        assert_eq!(
            agg(&pts, None, 0, 40, 20, Aggregate::Min),
            vec![Some(1.0), Some(5.0)]
        );
        assert_eq!(
            agg(&pts, None, 0, 40, 20, Aggregate::Max),
            vec![Some(3.0), Some(7.0)]
        );
        assert_eq!(
            agg(&pts, None, 0, 40, 20, Aggregate::Avg),
            vec![Some(2.0), Some(6.0)]
        );
        assert_eq!(
            agg(&pts, None, 0, 40, 20, Aggregate::First),
            vec![Some(1.0), Some(5.0)]
        );
        assert_eq!(
            agg(&pts, None, 0, 40, 20, Aggregate::Last),
            vec![Some(3.0), Some(7.0)]
        );
        assert_eq!(
            agg(&pts, None, 0, 40, 20, Aggregate::Count),
            vec![Some(2.0), Some(2.0)]
        );
        assert_eq!(
            agg(&pts, None, 0, 40, 20, Aggregate::StdDev),
            vec![Some(1.0), Some(1.0)]
        );
        // Empty interval: no value, count 0.
        assert_eq!(agg(&pts, None, 40, 60, 20, Aggregate::Avg), vec![None]);
        assert_eq!(
            agg(&pts, None, 40, 60, 20, Aggregate::Count),
            vec![Some(0.0)]
        );
    }

    #[test]
    fn time_weighted_average_holds_values_and_skips_bad_time() {
        // 0 for 10 µs, then 10 for 30 µs: TWA over [0,40) = 300/40 = 7.5; Avg = 5.
        let pts = [r(0, 0.0), r(10, 10.0)];
        assert_eq!(
            agg(&pts, None, 0, 40, 40, Aggregate::TimeWeightedAvg),
            vec![Some(7.5)]
        );
        // The value before the range holds into it.
        assert_eq!(
            agg(
                &[r(20, 4.0)],
                Some(&r(-5, 2.0)),
                0,
                40,
                40,
                Aggregate::TimeWeightedAvg
            ),
            vec![Some(3.0)]
        );
        // After a Bad sample the value is unknown: [0,10) at 6, [10,30) unknown, [30,40) at 2.
        let pts = [
            r(0, 6.0),
            Raw {
                ts: 10,
                value: Value::Null,
                quality: BAD,
            },
            r(30, 2.0),
        ];
        assert_eq!(
            agg(&pts, None, 0, 40, 40, Aggregate::TimeWeightedAvg),
            vec![Some(4.0)]
        );
        let rows = compute(&pts, None, 0, 40, 40, &[Aggregate::Avg]);
        assert_eq!(
            (rows[0].good, rows[0].bad, rows[0].values[0]),
            (2, 1, Some(4.0))
        );
    }

    #[test]
    fn delta_handles_counter_resets() {
        let pts = [r(0, 100.0), r(10, 110.0), r(20, 5.0), r(30, 8.0)];
        // From the value before the range (90): +10 +10, reset to 5 counts 5, +3 = 28.
        assert_eq!(
            agg(&pts, Some(&r(-1, 90.0)), 0, 40, 40, Aggregate::Delta),
            vec![Some(28.0)]
        );
        assert_eq!(
            agg(&pts, None, 0, 40, 20, Aggregate::Delta),
            vec![Some(10.0), Some(8.0)]
        );
        // No samples, but a known counter: zero increase.
        assert_eq!(
            agg(&[], Some(&r(-1, 90.0)), 0, 10, 10, Aggregate::Delta),
            vec![Some(0.0)]
        );
    }

    #[test]
    fn interpolation() {
        let before = Some(r(0, 10.0));
        let after = Some(r(100, 20.0));
        let lin = interpolate(
            None,
            before.clone(),
            after.clone(),
            25,
            Interpolation::Linear,
        )
        .expect("value");
        assert_eq!((lin.ts, lin.value), (25, Value::Float(12.5)));
        let prev =
            interpolate(None, before.clone(), after, 25, Interpolation::Previous).expect("value");
        assert_eq!((prev.ts, prev.value), (25, Value::Float(10.0)));
        assert_eq!(
            interpolate(None, None, Some(r(5, 1.0)), 1, Interpolation::Linear),
            None
        );
        let bad_after = Some(Raw {
            ts: 100,
            value: Value::Float(99.0),
            quality: BAD,
        });
        let held = interpolate(None, before, bad_after, 50, Interpolation::Linear).expect("value");
        assert_eq!(
            held.value,
            Value::Float(10.0),
            "no interpolation towards a bad sample"
        );
    }
}
