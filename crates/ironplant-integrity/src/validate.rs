//! Signal validation per tag: every sample is checked against its tag's rules, derived from the
//! tag's metadata (engineering range, unit, value type), what was learnt about it in the
//! training window (usual update interval, noise, quantisation, longest flat run, largest step)
//! and the configured overrides.
//!
//! | check | applies to | default limit |
//! |---|---|---|
//! | not finite | numbers | NaN and ±∞ are Bad |
//! | out of range | numbers with a range | the engineering range |
//! | rate of change | measurements | the full span in `rate_span_time` (1 s) |
//! | flatline | measurements that showed noise | N samples within the band, N from the learnt repeat rate |
//! | stale | tags that updated regularly | `stale_factor` × the usual interval, at least twice the longest gap learnt |
//! | spike | measurements | median/MAD over the last `spike_window` samples, gated by the largest step learnt |
//! | counter backwards | counters | any decrease that is not a roll-over |
//!
//! Samples of Bad quality are ignored (neither checked nor learnt); only samples that are Good
//! after the checks are learnt from, and only inside the training window. After it the learnt
//! values are frozen (see [`crate::Integrity::snapshot`]).

use std::sync::Arc;
use std::time::Duration;

use ironplant_core::{
    Quality, QualityLevel, QualityReason, Sample, TagId, TagMeta, TagPath, Timestamp, ValueType,
};
use serde::{Deserialize, Serialize};

use crate::{num, secs, stats, words, Change, Detector, Episode, Finding};

/// What a tag is, which decides the checks it gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TagKind {
    /// A noisy analog value: every check.
    Measurement,
    /// A monotonic total: range, roll-over aware monotonicity, a configured rate.
    Counter,
    /// A discrete state (bools, state codes): range only.
    Status,
    /// Written by operators or rules: range only.
    Setpoint,
    /// Not validated.
    Ignored,
}

impl TagKind {
    pub const ALL: [TagKind; 5] = [
        TagKind::Measurement,
        TagKind::Counter,
        TagKind::Status,
        TagKind::Setpoint,
        TagKind::Ignored,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TagKind::Measurement => "measurement",
            TagKind::Counter => "counter",
            TagKind::Status => "status",
            TagKind::Setpoint => "setpoint",
            TagKind::Ignored => "ignored",
        }
    }

    pub fn parse(s: &str) -> Option<TagKind> {
        TagKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The kind a tag's metadata suggests: writable tags are setpoints; bools and unit-less
    /// integers are states; a number in a unit of totals (kWh, L, m³, bottles...) whose range
    /// reaches 10⁶ (or is not given) is a counter; other numbers are measurements. Override it
    /// with `kind` in `[[integrity.tag]]`. Computed tags are ignored (their inputs are
    /// checked, and as regressors they would only repeat them), and so are the platform's own
    /// tags under a `_` level (`_alarms/...`, `<asset>/_integrity/anomaly_score`).
    pub fn infer(meta: &TagMeta) -> TagKind {
        if meta.device.as_deref() == Some(ironplant_core::namespace::COMPUTED_SOURCE)
            || meta
                .path
                .as_str()
                .split('/')
                .any(|level| level.starts_with('_'))
        {
            return TagKind::Ignored;
        }
        if meta.writable {
            return TagKind::Setpoint;
        }
        match meta.value_type {
            ValueType::Bool => TagKind::Status,
            ValueType::Int | ValueType::Float => {
                let unit = meta.unit.as_deref().unwrap_or("").trim();
                let wide = meta.range.is_none_or(|(_, hi)| hi >= 1e6);
                if wide && TOTAL_UNITS.contains(&unit) {
                    TagKind::Counter
                } else if meta.value_type == ValueType::Int && unit.is_empty() {
                    TagKind::Status
                } else {
                    TagKind::Measurement
                }
            }
            _ => TagKind::Ignored,
        }
    }
}

/// Units of accumulated quantities (a counter's unit).
const TOTAL_UNITS: [&str; 20] = [
    "kWh", "Wh", "MWh", "GWh", "kvarh", "J", "kJ", "MJ", "GJ", "L", "l", "m3", "m³", "Nm3", "Nm³",
    "bottles", "pcs", "count", "counts", "units",
];

/// Validation settings of the whole plant (`[integrity]`).
#[derive(Debug, Clone, PartialEq)]
pub struct ValidationSettings {
    /// Stale after this many usual intervals without an update.
    pub stale_factor: f64,
    /// Never stale sooner than this.
    pub min_stale: Duration,
    /// Default rate limit: the whole engineering span in this time.
    pub rate_span_time: Duration,
    /// A flat run is a flatline once its probability under the learnt noise is below this.
    pub flatline_probability: f64,
    pub flatline_min: u32,
    pub flatline_max: u32,
    /// A flatline is at least this many times the longest flat run seen in training.
    pub flatline_run_factor: f64,
    /// Samples in the spike detector's window.
    pub spike_window: usize,
    /// Robust standard deviations from the window's median that make a spike candidate.
    pub spike_k: f64,
    /// A silence of the whole plant longer than this between ticks is a clock jump or a
    /// suspended process, not staleness.
    pub clock_jump: Duration,
}

impl Default for ValidationSettings {
    fn default() -> ValidationSettings {
        ValidationSettings {
            stale_factor: 10.0,
            min_stale: Duration::from_secs(5),
            rate_span_time: Duration::from_secs(1),
            flatline_probability: 1e-9,
            flatline_min: 10,
            flatline_max: 3600,
            flatline_run_factor: 3.0,
            spike_window: 15,
            spike_k: 8.0,
            clock_jump: Duration::from_secs(60),
        }
    }
}

/// Longest spike window accepted.
pub const MAX_SPIKE_WINDOW: usize = 255;

/// Per-tag overrides (`[[integrity.tag]]`); `None` keeps the default.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TagRule {
    pub kind: Option<TagKind>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// Largest physically possible change, units per second.
    pub max_rate: Option<f64>,
    pub stale_after: Option<Duration>,
    /// Samples within the noise band that make a flatline; 0 turns the check off.
    pub flatline_samples: Option<u32>,
    /// Changes within ± this are no change (default: half the learnt quantisation step).
    pub noise_band: Option<f64>,
    pub spike: Option<bool>,
    /// A counter's roll-over modulus (default from its range: 2¹⁶, 2³² or 2⁶⁴).
    pub wrap: Option<f64>,
}

/// What training learnt about one tag; frozen afterwards.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Learnt {
    /// Update intervals seen (arrival times) and their sum and maximum, seconds.
    pub intervals: u64,
    pub interval_sum: f64,
    pub max_gap: f64,
    /// Consecutive Good pairs seen, and how many did not change.
    pub steps: u64,
    pub repeats: u64,
    /// Smallest non-zero change (the quantisation step), 0 if none seen.
    pub quantum: f64,
    /// Largest change between consecutive samples.
    pub max_step: f64,
    /// Longest run of unchanged samples (pinned values at a range end excluded).
    pub max_run: u32,
    #[serde(skip)]
    run: u32,
}

/// Limits derived from the metadata, the overrides and what was learnt.
#[derive(Debug, Clone, Default, PartialEq)]
struct Limits {
    range: Option<(f64, f64)>,
    max_rate: Option<f64>,
    stale_after: Option<f64>,
    flatline_n: Option<u32>,
    band: f64,
    /// Spikes larger than the largest learnt step only.
    max_step: Option<f64>,
    interval: Option<f64>,
    wrap: Option<f64>,
}

const N_CHECKS: usize = 7;

fn slot(d: Detector) -> usize {
    match d {
        Detector::NotFinite => 0,
        Detector::OutOfRange => 1,
        Detector::RateOfChange => 2,
        Detector::Flatline => 3,
        Detector::Stale => 4,
        Detector::Spike => 5,
        _ => 6,
    }
}

#[derive(Debug)]
struct TagState {
    id: TagId,
    path: TagPath,
    name: Arc<str>,
    unit: Arc<str>,
    kind: TagKind,
    rule: TagRule,
    meta_range: Option<(f64, f64)>,
    learnt: Learnt,
    limits: Limits,
    last_seen: Option<Timestamp>,
    /// The last sample checked (source time, value), for rate, flatline and monotonicity.
    prev: Option<(Timestamp, f64)>,
    flat_anchor: f64,
    flat_count: u32,
    flat_since: Timestamp,
    window: Vec<f64>,
    win_pos: usize,
    /// A spike candidate waiting for the next sample: (time, value, median, band).
    candidate: Option<(Timestamp, f64, f64, f64)>,
    quiet: usize,
    episodes: [Episode; N_CHECKS],
}

impl TagState {
    fn new(meta: &TagMeta, rule: TagRule, window: usize) -> TagState {
        let kind = rule.kind.unwrap_or_else(|| TagKind::infer(meta));
        TagState {
            id: meta.id,
            path: meta.path.clone(),
            name: Arc::from(meta.path.as_str()),
            unit: Arc::from(meta.unit.as_deref().unwrap_or("")),
            kind,
            rule,
            meta_range: meta.range,
            learnt: Learnt::default(),
            limits: Limits::default(),
            last_seen: None,
            prev: None,
            flat_anchor: f64::NAN,
            flat_count: 0,
            flat_since: Timestamp(0),
            window: Vec::with_capacity(window),
            win_pos: 0,
            candidate: None,
            quiet: 0,
            episodes: [Episode::default(); N_CHECKS],
        }
    }

    /// Limits before or after training (`frozen`: the learnt parts apply).
    fn derive(&mut self, s: &ValidationSettings, frozen: bool) {
        let r = &self.rule;
        let range = match (
            r.min.or(self.meta_range.map(|m| m.0)),
            r.max.or(self.meta_range.map(|m| m.1)),
        ) {
            (Some(lo), Some(hi)) if lo < hi => Some((lo, hi)),
            _ => None,
        };
        let l = &self.learnt;
        let measurement = self.kind == TagKind::Measurement;
        let max_rate = r.max_rate.or_else(|| {
            if measurement {
                range.map(|(lo, hi)| (hi - lo) / s.rate_span_time.as_secs_f64().max(1e-3))
            } else {
                None
            }
        });
        let interval = (frozen && l.intervals >= 20).then(|| l.interval_sum / l.intervals as f64);
        // Only a tag that updated regularly in training has a usual interval to miss (a polled
        // tag); one reported by exception (a Sparkplug state) may rightly stay silent for hours.
        let regular = interval.filter(|i| l.max_gap <= 5.0 * i);
        let stale_after = r.stale_after.map(|d| d.as_secs_f64()).or_else(|| {
            if matches!(self.kind, TagKind::Ignored) {
                return None;
            }
            regular.map(|i| {
                (s.stale_factor * i)
                    .max(2.0 * l.max_gap)
                    .max(s.min_stale.as_secs_f64())
            })
        });
        let band = r.noise_band.unwrap_or(0.5 * l.quantum).max(0.0);
        let flatline_n = match r.flatline_samples {
            Some(0) => None,
            Some(n) => Some(n),
            None if measurement && frozen && l.steps >= 100 => {
                // Laplace's rule for the repeat probability; no noise expected: no check.
                let p0 = (l.repeats as f64 + 1.0) / (l.steps as f64 + 2.0);
                if p0 > 0.95 {
                    None
                } else {
                    let n = (s.flatline_probability.ln() / p0.ln()).ceil();
                    let n = n.max(s.flatline_run_factor * f64::from(l.max_run));
                    Some((n as u32).clamp(s.flatline_min, s.flatline_max))
                }
            }
            None => None,
        };
        let spike = r.spike.unwrap_or(measurement);
        let max_step = (spike && frozen && l.steps >= 100).then_some(l.max_step);
        let wrap = r.wrap.or(if self.kind == TagKind::Counter {
            default_wrap(range)
        } else {
            None
        });
        self.limits = Limits {
            range,
            max_rate,
            stale_after,
            flatline_n,
            band,
            max_step,
            interval,
            wrap,
        };
    }

    #[allow(clippy::too_many_arguments)]
    fn finding(
        &self,
        detector: Detector,
        change: Change,
        value: f64,
        limit: f64,
        since: Timestamp,
        at: Timestamp,
        explanation: String,
    ) -> Finding {
        Finding {
            id: Arc::from(format!("{}:{}", self.name, detector.as_str())),
            detector,
            change,
            subject: Some(self.path.clone()),
            tags: vec![self.id],
            value,
            limit,
            since,
            at,
            explanation,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn raise(
        &mut self,
        d: Detector,
        since: Timestamp,
        at: Timestamp,
        value: f64,
        limit: f64,
        explain: impl FnOnce(&TagState) -> String,
        out: &mut Vec<Finding>,
    ) {
        if self.episodes[slot(d)].enter(since) {
            let text = explain(self);
            out.push(self.finding(d, Change::Raised, value, limit, since, at, text));
        }
    }

    fn clear(&mut self, d: Detector, at: Timestamp, value: f64, out: &mut Vec<Finding>) {
        if let Some(since) = self.episodes[slot(d)].leave() {
            let text = format!(
                "{}: {} ended after {}",
                self.name,
                d.as_str().replace('_', " "),
                words(secs(since, at))
            );
            out.push(self.finding(d, Change::Cleared, value, f64::NAN, since, at, text));
        }
    }

    fn unit_suffix(&self) -> String {
        if self.unit.is_empty() {
            String::new()
        } else {
            format!(" {}", self.unit)
        }
    }

    fn pinned(&self, x: f64) -> bool {
        self.limits.range.is_some_and(|(lo, hi)| {
            let eps = 1e-9 * (hi - lo);
            (x - lo).abs() <= eps || (x - hi).abs() <= eps
        })
    }
}

/// A counter's roll-over modulus from the top of its range: 2¹⁶, 2³² or 2⁶⁴.
pub(crate) fn default_wrap(range: Option<(f64, f64)>) -> Option<f64> {
    let (_, hi) = range?;
    if hi == 65_535.0 {
        Some(65_536.0)
    } else if hi == 4_294_967_295.0 {
        Some(4_294_967_296.0)
    } else if hi >= 1.8e19 {
        Some(2f64.powi(64))
    } else {
        None
    }
}

/// Lowers `q` to `to` unless it is already at least as bad.
fn lower(q: &mut Quality, to: Quality) {
    if q.level < to.level {
        *q = to;
    }
}

/// The validation detector: per-tag state in a flat table indexed by [`TagId`].
#[derive(Debug)]
pub struct Validator {
    settings: ValidationSettings,
    training: Duration,
    started: Option<Timestamp>,
    frozen: bool,
    tags: Vec<Option<TagState>>,
    scratch: Vec<f64>,
    last_tick: Option<Timestamp>,
}

impl Validator {
    /// Validates every tag of `tags` (rules by id; tags without a rule get the defaults).
    pub fn new<'a>(
        settings: ValidationSettings,
        training: Duration,
        tags: impl IntoIterator<Item = (&'a TagMeta, TagRule)>,
    ) -> Validator {
        let window = settings.spike_window.clamp(3, MAX_SPIKE_WINDOW);
        let mut v = Validator {
            settings,
            training,
            started: None,
            frozen: false,
            tags: Vec::new(),
            scratch: vec![0.0; window],
            last_tick: None,
        };
        for (meta, rule) in tags {
            v.add_tag(meta, rule);
        }
        v
    }

    /// Adds (or replaces) a tag, e.g. one that appeared at run time.
    pub fn add_tag(&mut self, meta: &TagMeta, rule: TagRule) {
        let i = meta.id.index();
        if self.tags.len() <= i {
            self.tags.resize_with(i + 1, || None);
        }
        let window = self.scratch.len();
        let mut st = TagState::new(meta, rule, window);
        st.derive(&self.settings, self.frozen);
        self.tags[i] = Some(st);
    }

    /// The kind a tag is validated as, if it is validated.
    pub fn kind(&self, tag: TagId) -> Option<TagKind> {
        self.tags.get(tag.index())?.as_ref().map(|t| t.kind)
    }

    /// Whether training is over (the learnt limits apply).
    pub fn is_frozen(&self) -> bool {
        self.frozen
    }

    /// What was learnt per tag, for a snapshot.
    pub fn learnt(&self) -> impl Iterator<Item = (&TagPath, &Learnt)> {
        self.tags.iter().flatten().map(|t| (&t.path, &t.learnt))
    }

    /// Installs learnt values (from a snapshot) and freezes: nothing is learnt again.
    pub fn restore(&mut self, learnt: &[(TagPath, Learnt)]) -> usize {
        let mut n = 0;
        for (path, l) in learnt {
            if let Some(t) = self.tags.iter_mut().flatten().find(|t| &t.path == path) {
                t.learnt = l.clone();
                n += 1;
            }
        }
        self.freeze();
        n
    }

    /// Ends training now.
    pub fn freeze(&mut self) {
        self.frozen = true;
        let s = &self.settings;
        for t in self.tags.iter_mut().flatten() {
            t.derive(s, true);
        }
    }

    fn training(&mut self, now: Timestamp) -> bool {
        if self.frozen {
            return false;
        }
        let started = *self.started.get_or_insert(now);
        if secs(started, now) >= self.training.as_secs_f64() {
            self.freeze();
            return false;
        }
        true
    }

    /// Checks one sample, lowering its quality when it fails a check, and pushes the
    /// findings of episodes that start or end.
    pub fn check(&mut self, sample: &mut Sample, now: Timestamp, out: &mut Vec<Finding>) {
        let learning = self.training(now);
        let s = &self.settings;
        let Some(Some(t)) = self.tags.get_mut(sample.tag.index()) else {
            return;
        };
        if t.kind == TagKind::Ignored {
            return;
        }
        // Any sample, whatever its quality, shows the source is alive.
        if learning {
            if let Some(prev) = t.last_seen {
                let gap = secs(prev, now);
                if gap > 0.0 {
                    t.learnt.intervals += 1;
                    t.learnt.interval_sum += gap;
                    t.learnt.max_gap = t.learnt.max_gap.max(gap);
                }
            }
        }
        t.last_seen = Some(now);
        t.clear(Detector::Stale, now, f64::NAN, out);
        if sample.quality.level == QualityLevel::Bad {
            return;
        }
        let Some(x) = sample.value.as_f64() else {
            return;
        };
        let ts = sample.source_ts;
        if !x.is_finite() {
            t.raise(
                Detector::NotFinite,
                ts,
                now,
                x,
                f64::NAN,
                |t| format!("{} reported {x}, not a finite number", t.name),
                out,
            );
            lower(
                &mut sample.quality,
                Quality::bad(QualityReason::Implausible),
            );
            return;
        }
        t.clear(Detector::NotFinite, now, x, out);
        let before = sample.quality;

        // Range.
        if let Some((lo, hi)) = t.limits.range {
            let eps = 1e-9 * (hi - lo);
            if x < lo - eps || x > hi + eps {
                let limit = if x < lo { lo } else { hi };
                t.raise(
                    Detector::OutOfRange,
                    ts,
                    now,
                    x,
                    limit,
                    |t| {
                        format!(
                            "{} = {}{} is outside its range {}..{}",
                            t.name,
                            num(x),
                            t.unit_suffix(),
                            num(lo),
                            num(hi)
                        )
                    },
                    out,
                );
                lower(
                    &mut sample.quality,
                    Quality::uncertain(QualityReason::OutOfRange),
                );
            } else {
                t.clear(Detector::OutOfRange, now, x, out);
            }
        }

        let prev = t.prev;
        // Time must move forward between samples: a source clock that went back (or two
        // samples of one instant) gives no rate, and restarts the flat run and the window.
        let dt = prev.map(|(pt, _)| secs(pt, ts));
        let ordered = dt.is_some_and(|d| d > 0.0);
        if prev.is_some() && !ordered {
            t.flat_count = 0;
            t.flat_anchor = f64::NAN;
        }
        t.prev = Some((ts, x));

        match t.kind {
            TagKind::Counter => {
                if let (Some((_, p)), true) = (prev, ordered) {
                    let mut d = x - p;
                    if d < 0.0 {
                        match t.limits.wrap {
                            Some(m) if -d > 0.5 * m => d += m,
                            _ => {
                                t.raise(
                                    Detector::CounterBackwards,
                                    ts,
                                    now,
                                    x,
                                    p,
                                    |t| {
                                        format!(
                                            "counter {} went back from {} to {}{}; not a roll-over",
                                            t.name,
                                            num(p),
                                            num(x),
                                            t.unit_suffix()
                                        )
                                    },
                                    out,
                                );
                                lower(
                                    &mut sample.quality,
                                    Quality::uncertain(QualityReason::Implausible),
                                );
                            }
                        }
                    }
                    if d >= 0.0 {
                        t.clear(Detector::CounterBackwards, now, x, out);
                        if let (Some(max), Some(dt)) = (t.limits.max_rate, dt) {
                            let rate = d / dt;
                            rate_check(t, rate, max, d, dt, ts, now, x, sample, out);
                        }
                    }
                }
            }
            TagKind::Measurement => {
                if let (Some((_, p)), Some(dt), true) = (prev, dt, ordered) {
                    // A burst of samples must not look fast: at least half the usual interval.
                    let dt_eff = t.limits.interval.map_or(dt, |i| dt.max(0.5 * i));
                    if let Some(max) = t.limits.max_rate {
                        let d = x - p;
                        rate_check(t, d.abs() / dt_eff, max, d, dt, ts, now, x, sample, out);
                    }
                }
                flatline(t, x, ts, now, sample, out);
                spike(t, x, ts, now, s, &mut self.scratch, sample, out);
                if learning && ordered && sample.quality.is_good() && before.is_good() {
                    if let Some((_, p)) = prev {
                        let pinned = t.pinned(x);
                        learn_step(&mut t.learnt, x - p, pinned);
                    }
                }
            }
            TagKind::Status | TagKind::Setpoint | TagKind::Ignored => {}
        }
    }

    /// Raises `stale` for tags not updated within their limit. Call it regularly (every
    /// second or so); a pause of the whole plant longer than `clock_jump` between two ticks,
    /// or `now` going back, restarts every tag's clock instead.
    pub fn tick(&mut self, now: Timestamp, out: &mut Vec<Finding>) {
        let _ = self.training(now);
        let jump = match self.last_tick {
            Some(last) => {
                let gap = secs(last, now);
                gap < 0.0 || gap > self.settings.clock_jump.as_secs_f64()
            }
            None => false,
        };
        self.last_tick = Some(now);
        for t in self.tags.iter_mut().flatten() {
            let Some(seen) = t.last_seen else { continue };
            if jump {
                t.last_seen = Some(now);
                continue;
            }
            let Some(limit) = t.limits.stale_after else {
                continue;
            };
            let age = secs(seen, now);
            if age > limit {
                let interval = t.limits.interval;
                t.raise(
                    Detector::Stale,
                    seen,
                    now,
                    age,
                    limit,
                    |t| {
                        format!(
                            "{} has not been updated for {} (usual interval {}, limit {})",
                            t.name,
                            words(age),
                            interval.map_or_else(|| "not learnt".to_owned(), words),
                            words(limit)
                        )
                    },
                    out,
                );
            }
        }
    }

    /// The active validation episodes: (tag, detector, since).
    pub fn active(&self) -> impl Iterator<Item = (TagId, Detector, Timestamp)> + '_ {
        self.tags.iter().flatten().flat_map(|t| {
            [
                Detector::NotFinite,
                Detector::OutOfRange,
                Detector::RateOfChange,
                Detector::Flatline,
                Detector::Stale,
                Detector::Spike,
                Detector::CounterBackwards,
            ]
            .into_iter()
            .filter(|d| t.episodes[slot(*d)].active)
            .map(|d| (t.id, d, t.episodes[slot(d)].since))
        })
    }

    /// The derived limits of a tag, in words (for docs, the API and tests).
    pub fn describe(&self, tag: TagId) -> Option<String> {
        let t = self.tags.get(tag.index())?.as_ref()?;
        let l = &t.limits;
        Some(format!(
            "{} {}: range {:?}, max_rate {:?}/s, stale_after {:?} s, flatline {:?} samples within ±{}, spike gate {:?}, wrap {:?}",
            t.name,
            t.kind.as_str(),
            l.range,
            l.max_rate,
            l.stale_after,
            l.flatline_n,
            num(l.band),
            l.max_step,
            l.wrap
        ))
    }
}

#[allow(clippy::too_many_arguments)]
fn rate_check(
    t: &mut TagState,
    rate: f64,
    max: f64,
    d: f64,
    dt: f64,
    ts: Timestamp,
    now: Timestamp,
    x: f64,
    sample: &mut Sample,
    out: &mut Vec<Finding>,
) {
    if rate > max {
        t.raise(
            Detector::RateOfChange,
            ts,
            now,
            rate,
            max,
            |t| {
                format!(
                    "{} changed by {}{} in {} ({}/s), more than the physically possible {}/s",
                    t.name,
                    num(d),
                    t.unit_suffix(),
                    words(dt),
                    num(rate),
                    num(max)
                )
            },
            out,
        );
        lower(
            &mut sample.quality,
            Quality::uncertain(QualityReason::Implausible),
        );
    } else {
        t.clear(Detector::RateOfChange, now, x, out);
    }
}

fn flatline(
    t: &mut TagState,
    x: f64,
    ts: Timestamp,
    now: Timestamp,
    sample: &mut Sample,
    out: &mut Vec<Finding>,
) {
    let Some(n) = t.limits.flatline_n else {
        return;
    };
    // A value pinned at a range end is a clamp (a flow meter at standstill), not a freeze.
    if t.flat_anchor.is_nan() || (x - t.flat_anchor).abs() > t.limits.band || t.pinned(x) {
        t.flat_anchor = x;
        t.flat_count = 1;
        t.flat_since = ts;
        t.clear(Detector::Flatline, now, x, out);
        return;
    }
    t.flat_count = t.flat_count.saturating_add(1);
    if t.flat_count >= n {
        let since = t.flat_since;
        let count = t.flat_count;
        let band = t.limits.band;
        let max_run = t.learnt.max_run;
        t.raise(Detector::Flatline, since, now, x, f64::from(n), |t| {
            format!(
                "{} has stayed at {}{} (±{}) for {count} samples ({}) since {since}; noise was expected (longest flat run in training: {max_run} samples)",
                t.name,
                num(x),
                t.unit_suffix(),
                num(band),
                words(secs(since, ts)),
            )
        }, out);
        lower(
            &mut sample.quality,
            Quality::uncertain(QualityReason::Implausible),
        );
    }
}

#[allow(clippy::too_many_arguments)]
fn spike(
    t: &mut TagState,
    x: f64,
    ts: Timestamp,
    now: Timestamp,
    s: &ValidationSettings,
    scratch: &mut [f64],
    sample: &mut Sample,
    out: &mut Vec<Finding>,
) {
    let Some(max_step) = t.limits.max_step else {
        return;
    };
    let cap = t.window.capacity().max(3);
    // Decide the candidate of the previous sample: back near the median is a spike.
    if let Some((cts, cx, med, band)) = t.candidate.take() {
        if (x - med).abs() <= band {
            let dev = cx - med;
            t.raise(Detector::Spike, cts, now, cx, band, |t| {
                format!(
                    "{} jumped to {}{} at {cts}, {} from the median {} of its last {} samples (limit ±{}), and came back",
                    t.name,
                    num(cx),
                    t.unit_suffix(),
                    num(dev),
                    num(med),
                    t.window.len(),
                    num(band)
                )
            }, out);
            t.quiet = 0;
        } else {
            // It stayed: a step, not a spike. Start the window again from here.
            t.window.clear();
            t.win_pos = 0;
        }
    }
    if t.window.len() == cap {
        let med = stats::median(&t.window, scratch).unwrap_or(x);
        for (i, w) in t.window.iter().enumerate() {
            if let Some(slot) = scratch.get_mut(i) {
                *slot = (w - med).abs();
            }
        }
        let n = t.window.len().min(scratch.len());
        let mut tmp = [0.0f64; MAX_SPIKE_WINDOW];
        let mad = stats::median(&scratch[..n], &mut tmp).unwrap_or(0.0);
        let sigma = (1.4826 * mad).max(t.limits.band).max(t.learnt.quantum);
        let band = s.spike_k * sigma;
        let prev_step = t
            .window
            .get((t.win_pos + cap - 1) % cap)
            .map_or(0.0, |p| (x - p).abs());
        if sigma > 0.0 && (x - med).abs() > band && prev_step > 1.5 * max_step {
            t.candidate = Some((ts, x, med, band));
            lower(
                &mut sample.quality,
                Quality::uncertain(QualityReason::Implausible),
            );
            return;
        }
    }
    if t.window.len() < cap {
        t.window.push(x);
        t.win_pos = t.window.len() % cap;
    } else {
        t.window[t.win_pos] = x;
        t.win_pos = (t.win_pos + 1) % cap;
    }
    t.quiet += 1;
    if t.quiet >= cap {
        t.clear(Detector::Spike, now, x, out);
    }
}

fn learn_step(l: &mut Learnt, d: f64, pinned: bool) {
    l.steps += 1;
    let a = d.abs();
    if a == 0.0 {
        l.repeats += 1;
        if !pinned {
            l.run += 1;
            l.max_run = l.max_run.max(l.run);
        }
    } else {
        l.run = 0;
        if l.quantum == 0.0 || a < l.quantum {
            l.quantum = a;
        }
    }
    l.max_step = l.max_step.max(a);
}

#[cfg(test)]
mod tests {
    use super::*;
    use ironplant_core::Value;

    const S: i64 = 1_000_000;

    fn meta(
        id: u32,
        name: &str,
        vt: ValueType,
        unit: Option<&str>,
        range: Option<(f64, f64)>,
    ) -> TagMeta {
        TagMeta {
            id: TagId(id),
            path: TagPath::parse(&format!("p/{name}")).expect("valid path"),
            value_type: vt,
            unit: unit.map(str::to_owned),
            description: String::new(),
            range,
            writable: false,
            device: None,
        }
    }

    fn sample(id: u32, t: i64, v: Value) -> Sample {
        Sample {
            tag: TagId(id),
            value: v,
            quality: Quality::GOOD,
            source_ts: Timestamp(t * S),
            server_ts: Timestamp(t * S),
        }
    }

    fn feed(v: &mut Validator, id: u32, t: i64, x: f64, out: &mut Vec<Finding>) -> Quality {
        let mut s = sample(id, t, Value::Float(x));
        v.check(&mut s, Timestamp(t * S), out);
        s.quality
    }

    /// A deterministic noise in -0.5..0.5 (no RNG crate needed).
    fn noise(i: i64) -> f64 {
        let h = (i as u64)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .rotate_left(17);
        (h >> 11) as f64 / (1u64 << 53) as f64 - 0.5
    }

    fn pressure() -> (Validator, TagMeta) {
        let m = meta(
            0,
            "pressure",
            ValueType::Float,
            Some("bar"),
            Some((0.0, 6.0)),
        );
        let v = Validator::new(
            ValidationSettings::default(),
            Duration::from_secs(600),
            [(&m, TagRule::default())],
        );
        (v, m)
    }

    /// Trains on 600 s of 2.5 bar ± 0.05, quantised to 0.001; returns the next second.
    fn trained(v: &mut Validator) -> i64 {
        let mut out = Vec::new();
        for t in 0..=600 {
            let x = ((2.5 + 0.1 * noise(t)) * 1000.0).round() / 1000.0;
            feed(v, 0, t, x, &mut out);
            v.tick(Timestamp(t * S), &mut out);
        }
        assert!(out.is_empty(), "{out:?}");
        assert!(v.is_frozen());
        601
    }

    #[test]
    fn kinds_are_inferred_from_metadata() {
        let m = |vt, unit, range| meta(0, "x", vt, unit, range);
        assert_eq!(
            TagKind::infer(&m(ValueType::Float, Some("bar"), Some((0.0, 6.0)))),
            TagKind::Measurement
        );
        assert_eq!(
            TagKind::infer(&m(
                ValueType::Int,
                Some("bottles"),
                Some((0.0, 4294967295.0))
            )),
            TagKind::Counter
        );
        assert_eq!(
            TagKind::infer(&m(ValueType::Float, Some("kWh"), Some((0.0, 1e12)))),
            TagKind::Counter
        );
        // A tank volume in litres is a measurement, not a total.
        assert_eq!(
            TagKind::infer(&m(ValueType::Float, Some("L"), Some((0.0, 10000.0)))),
            TagKind::Measurement
        );
        assert_eq!(
            TagKind::infer(&m(ValueType::Int, None, Some((0.0, 2.0)))),
            TagKind::Status
        );
        assert_eq!(
            TagKind::infer(&m(ValueType::Bool, None, None)),
            TagKind::Status
        );
        assert_eq!(
            TagKind::infer(&m(ValueType::String, None, None)),
            TagKind::Ignored
        );
        let mut w = m(ValueType::Int, Some("bpm"), Some((0.0, 600.0)));
        w.writable = true;
        assert_eq!(TagKind::infer(&w), TagKind::Setpoint);
    }

    #[test]
    fn nan_and_infinities_are_bad_once_per_episode() {
        let (mut v, _) = pressure();
        let mut out = Vec::new();
        assert_eq!(
            feed(&mut v, 0, 0, f64::NAN, &mut out),
            Quality::bad(QualityReason::Implausible)
        );
        assert_eq!(
            feed(&mut v, 0, 1, f64::INFINITY, &mut out).level,
            QualityLevel::Bad
        );
        assert_eq!(
            feed(&mut v, 0, 2, f64::NEG_INFINITY, &mut out).level,
            QualityLevel::Bad
        );
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(
            (out[0].detector, out[0].change),
            (Detector::NotFinite, Change::Raised)
        );
        assert!(out[0].explanation.contains("NaN"), "{}", out[0].explanation);
        assert!(feed(&mut v, 0, 3, 2.5, &mut out).is_good());
        assert_eq!(out.len(), 2);
        assert_eq!(
            (out[1].detector, out[1].change),
            (Detector::NotFinite, Change::Cleared)
        );
        assert_eq!(out[1].since, Timestamp(0));
    }

    #[test]
    fn out_of_range_is_uncertain_and_named() {
        let (mut v, _) = pressure();
        let mut out = Vec::new();
        assert!(feed(&mut v, 0, 0, 5.9, &mut out).is_good());
        let q = feed(&mut v, 0, 10, 6.5, &mut out);
        assert_eq!(q, Quality::uncertain(QualityReason::OutOfRange));
        feed(&mut v, 0, 20, 6.4, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].limit, 6.0);
        assert!(
            out[0].explanation.contains("outside its range 0..6"),
            "{}",
            out[0].explanation
        );
        feed(&mut v, 0, 30, 5.5, &mut out);
        assert_eq!(out.last().map(|f| f.change), Some(Change::Cleared));
    }

    #[test]
    fn a_jump_faster_than_physics_allows_is_a_rate_finding() {
        let (mut v, _) = pressure();
        let mut out = Vec::new();
        feed(&mut v, 0, 0, 0.5, &mut out);
        // 6 bar/s is the default limit (span 6 in 1 s): 5.5 bar in one second is fine...
        assert!(feed(&mut v, 0, 1, 5.5, &mut out).is_good());
        // ...5.5 bar in 0.5 s is not.
        let mut s = sample(0, 0, Value::Float(0.0));
        s.source_ts = Timestamp(S + S / 2);
        v.check(&mut s, Timestamp(2 * S), &mut out);
        assert_eq!(s.quality, Quality::uncertain(QualityReason::Implausible));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].detector, Detector::RateOfChange);
        assert_eq!(out[0].value, 11.0);
    }

    #[test]
    fn a_source_clock_going_back_gives_no_rate_and_no_panic() {
        let (mut v, _) = pressure();
        let mut out = Vec::new();
        feed(&mut v, 0, 100, 1.0, &mut out);
        // Back an hour, then forward a day: no rate finding from either.
        assert!(feed(&mut v, 0, 100 - 3600, 5.0, &mut out).is_good());
        assert!(feed(&mut v, 0, 86_400, 1.0, &mut out).is_good());
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn a_frozen_sensor_is_a_flatline_but_a_clamped_one_is_not() {
        let (mut v, m) = pressure();
        let mut t = trained(&mut v);
        let mut out = Vec::new();
        let desc = v.describe(m.id).unwrap_or_default();
        assert!(desc.contains("flatline Some(10)"), "{desc}");
        for _ in 0..9 {
            assert!(feed(&mut v, 0, t, 2.512, &mut out).is_good());
            t += 1;
        }
        assert!(out.is_empty());
        let q = feed(&mut v, 0, t, 2.512, &mut out);
        assert_eq!(q, Quality::uncertain(QualityReason::Implausible));
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].detector, Detector::Flatline);
        assert_eq!(out[0].since, Timestamp((t - 9) * S));
        for _ in 0..100 {
            t += 1;
            feed(&mut v, 0, t, 2.512, &mut out);
        }
        assert_eq!(out.len(), 1, "one finding per episode");
        t += 1;
        assert!(feed(&mut v, 0, t, 2.52, &mut out).is_good());
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].change, Change::Cleared);
        // At the bottom of the range (a flow meter at standstill): no flatline.
        for _ in 0..100 {
            t += 1;
            feed(&mut v, 0, t, 0.0, &mut out);
        }
        assert_eq!(out.len(), 2, "{out:?}");
    }

    #[test]
    fn stale_needs_learnt_interval_and_ignores_clock_jumps() {
        let (mut v, _) = pressure();
        let mut t = trained(&mut v);
        let mut out = Vec::new();
        feed(&mut v, 0, t, 2.5, &mut out);
        // Ticks with no sample: stale after 10 × 1 s.
        for _ in 0..10 {
            t += 1;
            v.tick(Timestamp(t * S), &mut out);
        }
        assert!(out.is_empty(), "{out:?}");
        t += 1;
        v.tick(Timestamp(t * S), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].detector, Detector::Stale);
        assert_eq!(out[0].limit, 10.0);
        t += 1;
        feed(&mut v, 0, t, 2.5, &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].change, Change::Cleared);
        // The clock jumps 3 hours forward between two ticks: not stale.
        t += 3 * 3600;
        v.tick(Timestamp(t * S), &mut out);
        // ...and back a day: not stale either.
        v.tick(Timestamp((t - 86_400) * S), &mut out);
        assert_eq!(out.len(), 2, "{out:?}");
    }

    #[test]
    fn a_tag_reported_by_exception_is_never_stale_by_default() {
        let (mut v, _) = pressure();
        let mut out = Vec::new();
        // Updates every 1 to 60 s in training (irregular): no learnt staleness.
        let mut t = 0;
        for i in 0..=200 {
            feed(&mut v, 0, t, 2.5 + 0.1 * noise(i), &mut out);
            t += if i % 10 == 0 { 60 } else { 1 };
        }
        assert!(v.is_frozen());
        for _ in 0..3600 {
            t += 1;
            v.tick(Timestamp(t * S), &mut out);
        }
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn an_isolated_outlier_is_a_spike_a_step_is_not() {
        let (mut v, _) = pressure();
        let mut t = trained(&mut v);
        let mut out = Vec::new();
        for i in 0..20 {
            feed(&mut v, 0, t, 2.5 + 0.1 * noise(1000 + i), &mut out);
            t += 1;
        }
        // 2.5 → 3.5 → 2.5: a spike, seen when the value comes back.
        assert_eq!(
            feed(&mut v, 0, t, 3.5, &mut out),
            Quality::uncertain(QualityReason::Implausible)
        );
        assert!(out.is_empty());
        t += 1;
        assert!(feed(&mut v, 0, t, 2.5, &mut out).is_good());
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].detector, Detector::Spike);
        assert_eq!(out[0].value, 3.5);
        // A step to 3.5 that stays is not a spike.
        for i in 0..40 {
            t += 1;
            feed(&mut v, 0, t, 2.5 + 0.1 * noise(2000 + i), &mut out);
        }
        assert_eq!(out.len(), 2, "the spike cleared: {out:?}");
        for i in 0..20 {
            t += 1;
            feed(&mut v, 0, t, 3.5 + 0.1 * noise(3000 + i), &mut out);
        }
        assert_eq!(out.len(), 2, "{out:?}");
    }

    #[test]
    fn counters_roll_over_but_never_go_back() {
        let m = meta(
            0,
            "count",
            ValueType::Int,
            Some("bottles"),
            Some((0.0, 4294967295.0)),
        );
        let mut v = Validator::new(
            ValidationSettings::default(),
            Duration::ZERO,
            [(&m, TagRule::default())],
        );
        let mut out = Vec::new();
        let feed_i = |v: &mut Validator, t: i64, x: i64, out: &mut Vec<Finding>| {
            let mut s = sample(0, t, Value::Int(x));
            v.check(&mut s, Timestamp(t * S), out);
            s.quality
        };
        assert!(feed_i(&mut v, 0, 4_294_967_290, &mut out).is_good());
        // u32 wrap: 4294967290 → 3 is +9.
        assert!(feed_i(&mut v, 1, 3, &mut out).is_good());
        assert!(out.is_empty(), "{out:?}");
        // 3 → 1 is backwards.
        assert_eq!(
            feed_i(&mut v, 2, 1, &mut out),
            Quality::uncertain(QualityReason::Implausible)
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].detector, Detector::CounterBackwards);
        assert!(
            out[0].explanation.contains("from 3 to 1"),
            "{}",
            out[0].explanation
        );
        assert!(feed_i(&mut v, 3, 5, &mut out).is_good());
        assert_eq!(out[1].change, Change::Cleared);
    }

    #[test]
    fn bad_samples_are_neither_checked_nor_learnt() {
        let (mut v, m) = pressure();
        let mut out = Vec::new();
        for t in 0..=600 {
            let mut s = sample(0, t, Value::Float(2.5));
            s.quality = Quality::bad(QualityReason::CommFailure);
            v.check(&mut s, Timestamp(t * S), &mut out);
            assert_eq!(s.quality, Quality::bad(QualityReason::CommFailure));
        }
        feed(&mut v, 0, 601, 99.0, &mut out);
        assert_eq!(out.len(), 1, "only the range check: {out:?}");
        // Nothing learnt from the Bad constant: no flatline, no spike gate.
        let d = v.describe(m.id).unwrap_or_default();
        assert!(
            d.contains("flatline None") && d.contains("spike gate None"),
            "{d}"
        );
    }

    #[test]
    fn a_restored_validator_uses_the_learnt_limits_at_once() {
        let (mut v, _) = pressure();
        trained(&mut v);
        let learnt: Vec<(TagPath, Learnt)> =
            v.learnt().map(|(p, l)| (p.clone(), l.clone())).collect();
        let (mut fresh, m) = pressure();
        assert_eq!(fresh.restore(&learnt), 1);
        assert!(fresh.is_frozen());
        assert_eq!(fresh.describe(m.id), v.describe(m.id));
    }
}
