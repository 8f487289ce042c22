//! Optional per-tag lossy compression, deadband and swinging-door trending (SDT), as PI and Canary
//! offer it. Pure and streaming: no I/O, no clock; time is `i64` microseconds, values `f64`.
//!
//! Lossless is the default; a tag opts in with a [`LossySpec`]. A [`LossyFilter`] decides, sample by
//! sample, which samples the historian stores, and [`reconstruct`] turns the stored samples back into a
//! value at any time. For a stream pushed in time order and ended with [`LossyFilter::flush`]:
//!
//! - every stored point is one of the pushed samples, unchanged (same timestamp, same bits), in order;
//! - the first and the last sample are stored, so the stored series spans the raw one;
//! - NaN and infinite values are always stored (they are fault signals) and restart the filter;
//! - samples sharing a timestamp are all stored: an instant has one reconstructed value (the last
//!   sample's), so none of them could stand for another;
//! - every sample is reconstructed within [`LossyFilter::max_error`] of its value, except the earlier
//!   ones of a shared timestamp, which are stored verbatim instead.
//!
//! SDT departs from the textbook (Bristol 1990) on purpose in one respect. The textbook keeps the door
//! open while *some* line from the archived point passes within the deviation of every sample, then
//! archives the held sample, and the line to *that* sample can miss an earlier one by up to twice the
//! deviation. Here a new sample extends the segment only if the line from the archived point to it passes
//! within the deviation of every sample in between, so the bound holds for what is actually stored. The
//! door is also narrowed by a few ulps, so that the bound holds in floating-point arithmetic too.

/// Lossy compression settings of a tag (off by default: lossless).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LossySpec {
    /// Keep a sample only if it differs from the last kept one by more than `deadband` (absolute,
    /// engineering units). Reconstruction: the previous kept value holds (step).
    /// Error bound: |original - reconstructed| <= deadband.
    Deadband { deadband: f64 },
    /// Swinging-door trending with compression deviation `deviation` (absolute, engineering units).
    /// Reconstruction: linear interpolation between kept points. Error bound:
    /// |original - reconstructed| <= deviation for every original sample. With `max_interval_us`,
    /// consecutive stored points are at most that far apart unless the raw samples themselves are.
    SwingingDoor {
        deviation: f64,
        max_interval_us: Option<i64>,
    },
}

/// Validates a spec: the deadband or deviation must be finite and > 0, the maximum interval positive.
/// Every problem of the spec is reported, separated by "; ".
pub fn validate(spec: &LossySpec) -> Result<(), String> {
    let mut problems = Vec::new();
    match *spec {
        LossySpec::Deadband { deadband } => check_positive("deadband", deadband, &mut problems),
        LossySpec::SwingingDoor {
            deviation,
            max_interval_us,
        } => {
            check_positive("swinging-door deviation", deviation, &mut problems);
            if let Some(max) = max_interval_us.filter(|&max| max <= 0) {
                problems.push(format!(
                    "swinging-door max_interval_us must be a positive number of microseconds, \
                     got {max}; leave it unset for no limit"
                ));
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

fn check_positive(what: &str, value: f64, problems: &mut Vec<String>) {
    if !(value.is_finite() && value > 0.0) {
        problems.push(format!(
            "{what} must be a finite number greater than 0 (engineering units), got {value}; \
             remove the lossy setting to store every sample"
        ));
    }
}

/// The samples a [`LossyFilter::push`] asks to store, oldest first: none, one or two. A fixed array,
/// so pushing never allocates; iterate it or look at [`Emitted::as_slice`].
#[must_use = "emitted samples must be stored, or they are lost"]
#[derive(Debug, Clone, Copy)]
pub struct Emitted {
    points: [(i64, f64); 2],
    next: usize,
    len: usize,
}

impl Emitted {
    const NOTHING: Emitted = Emitted {
        points: [(0, 0.0); 2],
        next: 0,
        len: 0,
    };

    /// The samples not yet taken by iteration.
    pub fn as_slice(&self) -> &[(i64, f64)] {
        &self.points[self.next..self.len]
    }

    pub fn is_empty(&self) -> bool {
        self.next == self.len
    }

    fn push(&mut self, point: (i64, f64)) {
        let slot = self
            .points
            .get_mut(self.len)
            .expect("a push emits at most the held sample and the new one");
        *slot = point;
        self.len += 1;
    }
}

impl Iterator for Emitted {
    type Item = (i64, f64);

    fn next(&mut self) -> Option<(i64, f64)> {
        if self.next < self.len {
            let point = self.points[self.next];
            self.next += 1;
            Some(point)
        } else {
            None
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.len - self.next;
        (left, Some(left))
    }
}

impl ExactSizeIterator for Emitted {}

/// Relative slack taken off the deviation so that the bound survives rounding: the check and the
/// interpolation in [`reconstruct`] each round a handful of times, at the scale of the values involved.
const ROUNDING_MARGIN: f64 = 32.0 * f64::EPSILON;

/// Streaming lossy-compression state of one tag.
#[derive(Debug, Clone)]
pub struct LossyFilter {
    spec: LossySpec,
    algorithm: Algorithm,
    /// The stored finite sample the filter measures from (deadband: last kept; SDT: last archived).
    /// `None` at the start and after a non-finite sample: the next sample is stored.
    anchor: Option<(i64, f64)>,
    /// The latest sample when it was not stored; `flush` stores it.
    held: Option<(i64, f64)>,
    /// SDT only: the slopes of lines from `anchor` that pass within the deviation of every sample since.
    door: Door,
}

#[derive(Debug, Clone, Copy)]
enum Algorithm {
    /// An invalid spec stores every sample: a bad setting must not lose data.
    Lossless,
    Deadband {
        deadband: f64,
    },
    SwingingDoor {
        deviation: f64,
        max_interval_us: Option<i64>,
    },
}

impl LossyFilter {
    /// A filter for `spec`. A spec that fails [`validate`] stores every sample (and `max_error` is 0).
    pub fn new(spec: LossySpec) -> LossyFilter {
        let algorithm = match (validate(&spec), spec) {
            (Err(_), _) => Algorithm::Lossless,
            (Ok(()), LossySpec::Deadband { deadband }) => Algorithm::Deadband { deadband },
            (
                Ok(()),
                LossySpec::SwingingDoor {
                    deviation,
                    max_interval_us,
                },
            ) => Algorithm::SwingingDoor {
                deviation,
                max_interval_us,
            },
        };
        LossyFilter {
            spec,
            algorithm,
            anchor: None,
            held: None,
            door: Door::OPEN,
        }
    }

    /// Feeds one sample; returns the samples to store now, oldest first (SDT emits the held sample when
    /// the door closes, then possibly the new one). Samples must come in non-decreasing time order; one
    /// that does not is stored as-is and restarts the filter, so nothing is silently dropped.
    pub fn push(&mut self, ts: i64, value: f64) -> Emitted {
        let mut out = Emitted::NOTHING;
        match self.algorithm {
            Algorithm::Lossless => out.push((ts, value)),
            Algorithm::Deadband { deadband } => self.push_deadband(deadband, (ts, value), &mut out),
            Algorithm::SwingingDoor {
                deviation,
                max_interval_us,
            } => self.push_swinging_door(deviation, max_interval_us, (ts, value), &mut out),
        }
        out
    }

    /// Ends the stream (a chunk flush, a shutdown): returns the latest sample if it was not stored yet, so
    /// the stored series ends where the raw one does. Pushing may go on afterwards, from that sample.
    pub fn flush(&mut self) -> Option<(i64, f64)> {
        let held = self.held.take()?;
        self.restart_from(held);
        Some(held)
    }

    pub fn spec(&self) -> LossySpec {
        self.spec
    }

    /// The maximum reconstruction error this filter guarantees (0 for an invalid spec, stored losslessly).
    pub fn max_error(&self) -> f64 {
        match self.algorithm {
            Algorithm::Lossless => 0.0,
            Algorithm::Deadband { deadband } => deadband,
            Algorithm::SwingingDoor { deviation, .. } => deviation,
        }
    }

    fn restart_from(&mut self, stored: (i64, f64)) {
        self.anchor = stored.1.is_finite().then_some(stored);
        self.held = None;
        self.door = Door::OPEN;
    }

    fn push_deadband(&mut self, deadband: f64, sample: (i64, f64), out: &mut Emitted) {
        let (ts, value) = sample;
        let Some((anchor_ts, anchor_value)) = self.anchor else {
            out.push(sample);
            self.restart_from(sample);
            return;
        };
        let previous_ts = self.held.map_or(anchor_ts, |(held_ts, _)| held_ts);
        if ts <= previous_ts {
            // The instant of the previous sample (or, out of order, earlier): store both, as neither
            // can stand for the other.
            if let Some(held) = self.held {
                out.push(held);
            }
            out.push(sample);
            self.restart_from(sample);
        } else if !value.is_finite() || (value - anchor_value).abs() > deadband {
            out.push(sample);
            self.restart_from(sample);
        } else {
            self.held = Some(sample);
        }
    }

    fn push_swinging_door(
        &mut self,
        deviation: f64,
        max_interval_us: Option<i64>,
        sample: (i64, f64),
        out: &mut Emitted,
    ) {
        let (ts, value) = sample;
        if !value.is_finite() {
            // No line leads to a NaN: close the segment at the held sample, then store the fault.
            if let Some(held) = self.held {
                out.push(held);
            }
            out.push(sample);
            self.restart_from(sample);
            return;
        }
        let Some(mut anchor) = self.anchor else {
            out.push(sample);
            self.restart_from(sample);
            return;
        };
        if let Some(held) = self.held {
            // The instant of the held sample (or, out of order, earlier): archive it, and then this
            // sample below, as neither can stand for the other. Past this, `ts > held.0 > anchor.0`:
            // the slope is well defined.
            let not_later = ts <= held.0;
            let too_long = max_interval_us.is_some_and(|max| span(anchor.0, ts) > i128::from(max));
            if not_later || too_long || !self.door.admits(slope(anchor, sample)) {
                out.push(held);
                self.restart_from(held);
                anchor = held;
            }
        }
        if ts <= anchor.0 {
            // Same instant as the archived point (or earlier): no slope to draw. Store it; the last
            // value at an instant is the one reconstructed there.
            out.push(sample);
            self.restart_from(sample);
            return;
        }
        self.door.narrow(anchor, sample, deviation);
        self.held = Some(sample);
    }
}

/// The range of slopes (value units per microsecond) of lines from the archived point that pass within
/// the deviation of every sample seen since. A sample extends the segment if the line to it is in range.
#[derive(Debug, Clone, Copy)]
struct Door {
    lowest: f64,
    highest: f64,
}

impl Door {
    const OPEN: Door = Door {
        lowest: f64::NEG_INFINITY,
        highest: f64::INFINITY,
    };
    const SHUT: Door = Door {
        lowest: f64::INFINITY,
        highest: f64::NEG_INFINITY,
    };

    fn admits(&self, slope: f64) -> bool {
        slope.is_finite() && self.lowest <= slope && slope <= self.highest
    }

    /// Adds the constraint of `sample` (later than `anchor`): the line must pass within the deviation,
    /// less the rounding margin, of it. When rounding at these magnitudes eats the whole deviation, only
    /// a flat line through a sample equal to the anchor is exact (interpolating between equal values
    /// does not round); anything else shuts the door and is stored: lossless rather than out of bounds.
    fn narrow(&mut self, anchor: (i64, f64), sample: (i64, f64), deviation: f64) {
        let dt = span(anchor.0, sample.0) as f64;
        let rise = sample.1 - anchor.1;
        let tolerance = deviation - ROUNDING_MARGIN * (anchor.1.abs() + sample.1.abs() + deviation);
        let (lowest, highest) = if tolerance > 0.0 && rise.is_finite() {
            ((rise - tolerance) / dt, (rise + tolerance) / dt)
        } else if rise == 0.0 {
            (0.0, 0.0)
        } else {
            (Door::SHUT.lowest, Door::SHUT.highest)
        };
        self.lowest = self.lowest.max(lowest);
        self.highest = self.highest.min(highest);
    }
}

/// `to - from` without overflow, whatever the timestamps.
fn span(from: i64, to: i64) -> i128 {
    i128::from(to) - i128::from(from)
}

fn slope(from: (i64, f64), to: (i64, f64)) -> f64 {
    (to.1 - from.1) / span(from.0, to.0) as f64
}

/// Reconstructs the value at `ts` from stored points sorted by time, as the spec's reconstruction
/// defines: step for deadband, linear between points for SDT. `None` before the first point; after the
/// last one its value holds. Where several points share a timestamp the last one is the value there.
/// A segment with a non-finite end is a step (a fault lasts until the next point).
pub fn reconstruct(spec: &LossySpec, stored: &[(i64, f64)], ts: i64) -> Option<f64> {
    let after = stored.partition_point(|&(t, _)| t <= ts);
    let before = *stored.get(after.checked_sub(1)?)?;
    if before.0 == ts {
        return Some(before.1);
    }
    match (spec, stored.get(after)) {
        (LossySpec::SwingingDoor { .. }, Some(&next))
            if before.1.is_finite() && next.1.is_finite() =>
        {
            Some(interpolate(before, next, ts))
        }
        _ => Some(before.1),
    }
}

/// The value at `ts`, strictly between `from` and `to`, on the line through them.
fn interpolate(from: (i64, f64), to: (i64, f64), ts: i64) -> f64 {
    let fraction = span(from.0, ts) as f64 / span(from.0, to.0) as f64;
    let value = from.1 + (to.1 - from.1) * fraction;
    if value.is_finite() {
        value
    } else {
        // `to.1 - from.1` overflowed (values near f64::MAX of opposite signs).
        from.1 * (1.0 - fraction) + to.1 * fraction
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deadband(deadband: f64) -> LossySpec {
        LossySpec::Deadband { deadband }
    }

    fn sdt(deviation: f64, max_interval_us: Option<i64>) -> LossySpec {
        LossySpec::SwingingDoor {
            deviation,
            max_interval_us,
        }
    }

    /// Feeds every sample, then flushes: what the historian would store.
    fn run(spec: LossySpec, samples: &[(i64, f64)]) -> Vec<(i64, f64)> {
        let mut filter = LossyFilter::new(spec);
        let mut stored = Vec::new();
        for &(ts, value) in samples {
            stored.extend(filter.push(ts, value));
        }
        stored.extend(filter.flush());
        stored
    }

    fn same_point(a: (i64, f64), b: (i64, f64)) -> bool {
        a.0 == b.0 && a.1.to_bits() == b.1.to_bits()
    }

    fn assert_points(actual: &[(i64, f64)], expected: &[(i64, f64)]) {
        assert!(
            actual.len() == expected.len()
                && actual.iter().zip(expected).all(|(a, e)| same_point(*a, *e)),
            "stored {actual:?}, expected {expected:?}"
        );
    }

    /// For hand-worked interpolations, which may round in the last bit.
    fn assert_close(actual: Option<f64>, expected: f64) {
        assert!(
            actual.is_some_and(|a| (a - expected).abs() <= 1e-12),
            "reconstructed {actual:?}, expected {expected}"
        );
    }

    /// Checks every promise of the module on one stream and what the filter stored of it.
    fn check_stream(spec: LossySpec, samples: &[(i64, f64)], stored: &[(i64, f64)], case: &str) {
        let bound = LossyFilter::new(spec).max_error();
        let (Some(&first), Some(&last)) = (samples.first(), samples.last()) else {
            assert!(stored.is_empty(), "{case}: stored {stored:?} from nothing");
            return;
        };
        assert!(
            stored.first().is_some_and(|&p| same_point(p, first)),
            "{case}: first sample {first:?} not stored first: {:?}",
            stored.first()
        );
        assert!(
            stored.last().is_some_and(|&p| same_point(p, last)),
            "{case}: last sample {last:?} not stored last: {:?}",
            stored.last()
        );
        let mut originals = samples.iter();
        for &point in stored {
            assert!(
                originals.any(|&s| same_point(s, point)),
                "{case}: stored {point:?} is not a sample, or is out of order"
            );
        }
        for (i, &(ts, value)) in samples.iter().enumerate() {
            let Some(rebuilt) = reconstruct(&spec, stored, ts) else {
                panic!("{case}: nothing reconstructed at sample #{i} ({ts}, {value})");
            };
            let error = (value - rebuilt).abs();
            let shared_ts = samples.get(i + 1).is_some_and(|next| next.0 == ts)
                || i.checked_sub(1)
                    .and_then(|j| samples.get(j))
                    .is_some_and(|prev| prev.0 == ts);
            if shared_ts {
                assert!(
                    stored.iter().any(|&p| same_point(p, (ts, value))),
                    "{case}: sample #{i} ({ts}, {value}) shares its timestamp but is not stored"
                );
            }
            let superseded = samples.get(i + 1).is_some_and(|next| next.0 == ts);
            if superseded {
                // Stored verbatim (checked above); the instant's value is the last sample's.
            } else if value.is_finite() {
                assert!(
                    error <= bound,
                    "{case}: sample #{i} ({ts}, {value}) reconstructed as {rebuilt}: \
                     error {error} > bound {bound}"
                );
            } else {
                assert!(
                    value.to_bits() == rebuilt.to_bits(),
                    "{case}: fault sample #{i} ({ts}, {value}) reconstructed as {rebuilt}"
                );
            }
        }
        if let LossySpec::SwingingDoor {
            max_interval_us: Some(max),
            ..
        } = spec
        {
            for pair in stored.windows(2) {
                let (from, to) = (pair[0].0, pair[1].0);
                let between = samples.partition_point(|s| s.0 <= from)
                    < samples.partition_point(|s| s.0 < to);
                assert!(
                    span(from, to) <= i128::from(max) || !between,
                    "{case}: stored points at {from} and {to} are more than {max} µs apart \
                     with samples between them"
                );
            }
        }
    }

    /// xorshift64: deterministic, dependency-free randomness for the property tests.
    struct XorShift(u64);

    impl XorShift {
        fn new(seed: u64) -> XorShift {
            XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
        }

        fn next_u64(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }

        /// Uniform in [0, 1).
        fn unit(&mut self) -> f64 {
            (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next_u64() % n
        }

        fn chance(&mut self, p: f64) -> bool {
            self.unit() < p
        }

        /// Roughly normal, mean 0, standard deviation 1 (Irwin-Hall).
        fn noise(&mut self) -> f64 {
            (0..12).map(|_| self.unit()).sum::<f64>() - 6.0
        }

        fn pick<T: Copy>(&mut self, choices: &[T]) -> T {
            choices[self.below(choices.len() as u64) as usize]
        }
    }

    /// A random signal of one of several shapes; returns the samples and the signal's noise scale.
    fn random_signal(rng: &mut XorShift, kind: u64) -> (Vec<(i64, f64)>, f64) {
        let n = rng.pick(&[1, 2, 3, 50, 200, 400]);
        let offset = rng.pick(&[0.0, 1e3, -5e4, 1e6]);
        let scale = rng.pick(&[1e-3, 1.0, 100.0]);
        let duplicates = if kind == 5 || rng.chance(0.2) {
            0.05
        } else {
            0.0
        };
        let mut ts: i64 = rng.pick(&[0, -1_000_000_000_000, 1_700_000_000_000_000]);
        let mut level = offset;
        let mut slope = 0.0;
        let period = 20.0 + rng.unit() * 500.0;
        let mut samples = Vec::with_capacity(n);
        for i in 0..n {
            let value = match kind {
                // Random walk.
                0 => {
                    level += rng.noise() * scale;
                    level
                }
                // Sine with noise.
                1 => {
                    let phase = i as f64 / period * std::f64::consts::TAU;
                    offset + 20.0 * scale * phase.sin() + 0.1 * scale * rng.noise()
                }
                // Steps with a little noise.
                2 => {
                    if rng.chance(0.03) {
                        level += rng.noise() * 30.0 * scale;
                    }
                    level + 0.05 * scale * rng.noise()
                }
                // Ramps: piecewise linear, sometimes noisy.
                3 => {
                    if rng.chance(0.05) {
                        slope = rng.noise() * scale;
                    }
                    level += slope;
                    level + if i % 2 == 0 { 0.0 } else { 0.2 * scale }
                }
                // Constant.
                4 => offset,
                // Random walk with faults.
                _ => {
                    level += rng.noise() * scale;
                    if rng.chance(0.05) {
                        rng.pick(&[f64::NAN, f64::INFINITY, f64::NEG_INFINITY])
                    } else {
                        level
                    }
                }
            };
            samples.push((ts, value));
            ts += if rng.chance(duplicates) {
                0
            } else if rng.chance(0.01) {
                1 + rng.below(10_000_000) as i64
            } else {
                1 + rng.below(2_000) as i64
            };
        }
        (samples, scale)
    }

    #[test]
    fn lossy_guarantees_hold_on_thousands_of_random_signals() {
        let mut rng = XorShift::new(0x1_0550);
        let mut checked = 0;
        for case in 0..3_000 {
            let kind = case % 6;
            let (samples, scale) = random_signal(&mut rng, kind);
            let small = scale * rng.pick(&[0.3, 1.0, 3.0]);
            let large = scale * rng.pick(&[10.0, 50.0]);
            let tiny = 1e-13;
            let max_interval = rng.pick(&[1, 500, 5_000, 100_000]);
            let specs = [
                deadband(small),
                deadband(large),
                deadband(tiny),
                sdt(small, None),
                sdt(large, None),
                sdt(tiny, None),
                sdt(large, Some(max_interval)),
            ];
            for spec in specs {
                let stored = run(spec, &samples);
                check_stream(
                    spec,
                    &samples,
                    &stored,
                    &format!("case {case} kind {kind} {spec:?}"),
                );
                checked += samples.len();
            }
        }
        assert!(checked > 1_000_000, "only {checked} samples checked");
    }

    #[test]
    fn lossy_guarantees_hold_across_flushes_in_the_middle_of_the_stream() {
        let mut rng = XorShift::new(42);
        for case in 0..500 {
            let (samples, scale) = random_signal(&mut rng, case % 6);
            for spec in [
                deadband(scale * 3.0),
                sdt(scale * 3.0, None),
                sdt(scale, Some(3_000)),
            ] {
                let mut filter = LossyFilter::new(spec);
                let mut stored = Vec::new();
                for &(ts, value) in &samples {
                    stored.extend(filter.push(ts, value));
                    if rng.chance(0.02) {
                        stored.extend(filter.flush());
                        assert_eq!(filter.flush(), None, "a second flush stores nothing");
                    }
                }
                stored.extend(filter.flush());
                check_stream(spec, &samples, &stored, &format!("case {case} {spec:?}"));
            }
        }
    }

    #[test]
    fn lossy_swinging_door_bound_holds_exactly_at_the_edge_of_the_door() {
        // Samples exactly a deviation away from a line, where rounding decides: the door must not
        // admit a line whose interpolation, as `reconstruct` computes it, misses by even one ulp.
        let mut rng = XorShift::new(0xED6E);
        for case in 0..20_000 {
            let deviation = rng.pick(&[1e-3, 0.1, 0.3, 7.0]) * (1.0 + rng.unit());
            let start = (
                rng.below(1_000_000) as i64,
                rng.pick(&[0.1, 1e3, 1e6, -3e8]),
            );
            let n = 3 + rng.below(8) as i64;
            let end = (
                start.0 + n * 1_000,
                start.1 + rng.noise() * 100.0 * deviation,
            );
            let mut samples = vec![start];
            for i in 1..n {
                let on_line = interpolate(start, end, start.0 + i * 1_000);
                let side = if rng.chance(0.5) { 1.0 } else { -1.0 };
                samples.push((start.0 + i * 1_000, on_line + side * deviation));
            }
            samples.push(end);
            let spec = sdt(deviation, None);
            let stored = run(spec, &samples);
            check_stream(spec, &samples, &stored, &format!("edge case {case}"));
        }
    }

    #[test]
    fn lossy_compresses_a_smooth_noisy_signal() {
        let mut rng = XorShift::new(7);
        // One sample a second for 10,000 s: a slow sine (amplitude 10, period 1 h) plus noise of ±0.05.
        let samples: Vec<(i64, f64)> = (0..10_000)
            .map(|i| {
                let phase = i as f64 / 3_600.0 * std::f64::consts::TAU;
                let noise = (rng.unit() - 0.5) * 0.1;
                (i * 1_000_000, 10.0 * phase.sin() + noise)
            })
            .collect();
        let by_deadband = run(deadband(0.25), &samples);
        let by_sdt = run(sdt(0.25, None), &samples);
        check_stream(deadband(0.25), &samples, &by_deadband, "deadband");
        check_stream(sdt(0.25, None), &samples, &by_sdt, "sdt");
        assert!(
            by_deadband.len() * 20 < samples.len(),
            "deadband kept {} of {}",
            by_deadband.len(),
            samples.len()
        );
        assert!(
            by_sdt.len() * 100 < samples.len(),
            "SDT kept {} of {}",
            by_sdt.len(),
            samples.len()
        );
        assert!(
            by_sdt.len() < by_deadband.len(),
            "SDT ({}) should beat deadband ({}) on a smooth signal",
            by_sdt.len(),
            by_deadband.len()
        );
    }

    #[test]
    fn lossy_constant_signal_keeps_only_its_ends() {
        let samples: Vec<(i64, f64)> = (0..1_000).map(|i| (i * 10, 42.5)).collect();
        let ends = [(0, 42.5), (9_990, 42.5)];
        assert_points(&run(deadband(0.1), &samples), &ends);
        assert_points(&run(sdt(0.1, None), &samples), &ends);
        assert_points(&run(sdt(1e-300, None), &samples), &ends);
    }

    #[test]
    fn lossy_deadband_golden() {
        let samples = [
            (0, 10.0),
            (1, 10.5), // 0.5 from 10: dropped
            (2, 11.0), // exactly the deadband from 10: dropped (must be *more* than it)
            (3, 11.2), // 1.2 from 10: kept
            (4, 9.8),  // 1.4 from 11.2: kept
            (5, 9.9),  // dropped
            (6, 9.95), // dropped, but the last sample: stored by flush
        ];
        let stored = run(deadband(1.0), &samples);
        assert_points(&stored, &[(0, 10.0), (3, 11.2), (4, 9.8), (6, 9.95)]);
        let spec = deadband(1.0);
        assert_eq!(reconstruct(&spec, &stored, 2), Some(10.0));
        assert_eq!(reconstruct(&spec, &stored, 5), Some(9.8));
        assert_eq!(reconstruct(&spec, &stored, 100), Some(9.95));
        assert_eq!(reconstruct(&spec, &stored, -1), None);
    }

    #[test]
    fn lossy_deadband_push_by_push() {
        let mut filter = LossyFilter::new(deadband(1.0));
        assert_points(filter.push(0, 0.0).as_slice(), &[(0, 0.0)]);
        assert!(filter.push(1, 0.9).is_empty());
        assert!(filter.push(2, -0.9).is_empty());
        assert_points(filter.push(3, -1.5).as_slice(), &[(3, -1.5)]);
        assert_eq!(filter.flush(), None, "the last sample is already stored");
        assert!(filter.push(4, -1.0).is_empty());
        assert_eq!(filter.flush(), Some((4, -1.0)));
        // The flushed sample is the new reference: 0.2 from -1.0 is dropped, 1.2 from it is kept.
        assert!(filter.push(5, -0.8).is_empty());
        assert_points(filter.push(6, 0.2).as_slice(), &[(6, 0.2)]);
    }

    #[test]
    fn lossy_swinging_door_golden() {
        // Deviation 1, worked by hand. Slopes are per µs from the archived point; the door holds the
        // range of slopes that pass within the deviation of every sample since.
        let samples = [
            (0, 0.0), // first: archived
            (1, 0.5), // held; door [-0.5, 1.5]
            (2, 1.2), // slope 0.6 in the door: held; door [0.1, 1.1]
            (3, 1.5), // slope 0.5 in the door: held; door [0.1667, 0.8333]
            (4, 4.0), // slope 1.0 out: archive (3, 1.5); from it, held; door [1.5, 3.5]
            (5, 6.0), // slope 2.25 in: held; door [1.75, 2.75]
            (6, 6.0), // slope 1.5 out: archive (5, 6.0); held; door [-1, 1]
            (7, 6.2), // slope 0.1 in: held; stored by flush
        ];
        let spec = sdt(1.0, None);
        let stored = run(spec, &samples);
        assert_points(&stored, &[(0, 0.0), (3, 1.5), (5, 6.0), (7, 6.2)]);
        assert_close(reconstruct(&spec, &stored, 1), 0.5);
        assert_close(reconstruct(&spec, &stored, 2), 1.0);
        assert_close(reconstruct(&spec, &stored, 4), 3.75);
        assert_close(reconstruct(&spec, &stored, 6), 6.1);
        check_stream(spec, &samples, &stored, "golden");
    }

    #[test]
    fn lossy_swinging_door_push_by_push() {
        let mut filter = LossyFilter::new(sdt(1.0, None));
        assert_points(filter.push(0, 0.0).as_slice(), &[(0, 0.0)]);
        assert!(filter.push(1, 0.5).is_empty());
        assert!(filter.push(2, 1.2).is_empty());
        assert!(filter.push(3, 1.5).is_empty());
        let emitted = filter.push(4, 4.0);
        assert_eq!(emitted.len(), 1);
        assert_points(&emitted.collect::<Vec<_>>(), &[(3, 1.5)]);
        assert_eq!(filter.flush(), Some((4, 4.0)));
        assert_eq!(filter.flush(), None);
    }

    #[test]
    fn lossy_swinging_door_never_archives_a_line_that_misses_a_sample() {
        // The textbook door stays open here (slopes -0.1 ..= 0.05 fit both samples), but the line from
        // (0, 0) to the held (2, -0.9) passes at -0.45 at t = 1: 1.35 from 0.9, beyond the deviation.
        let samples = [(0, 0.0), (1, 0.9), (2, -0.9), (3, -0.9)];
        let spec = sdt(1.0, None);
        let stored = run(spec, &samples);
        assert_points(&stored, &[(0, 0.0), (1, 0.9), (3, -0.9)]);
        check_stream(spec, &samples, &stored, "textbook counterexample");
    }

    #[test]
    fn lossy_swinging_door_max_interval_golden() {
        let samples: Vec<(i64, f64)> = (0..=10).map(|t| (t, 5.0)).collect();
        let spec = sdt(1.0, Some(3));
        let stored = run(spec, &samples);
        assert_points(
            &stored,
            &[(0, 5.0), (3, 5.0), (6, 5.0), (9, 5.0), (10, 5.0)],
        );
        // A raw gap wider than the interval cannot be filled: both its ends are stored.
        let gap = [(0, 5.0), (1, 5.0), (10, 5.0), (11, 5.0), (12, 5.0)];
        assert_points(
            &run(spec, &gap),
            &[(0, 5.0), (1, 5.0), (10, 5.0), (12, 5.0)],
        );
    }

    #[test]
    fn lossy_faults_are_stored_and_restart_the_filter() {
        let nan = f64::NAN;
        let inf = f64::INFINITY;
        let samples = [(0, 1.0), (1, 1.0), (2, nan), (3, 1.0), (4, 1.0), (5, 1.0)];
        // SDT closes the segment at the held sample before the fault, and starts anew after it.
        let spec = sdt(0.5, None);
        let mut filter = LossyFilter::new(spec);
        assert_eq!(filter.push(0, 1.0).len(), 1);
        assert!(filter.push(1, 1.0).is_empty());
        let emitted = filter.push(2, nan);
        assert_eq!(emitted.as_slice().len(), 2);
        assert_points(emitted.as_slice(), &[(1, 1.0), (2, nan)]);
        let stored = run(spec, &samples);
        assert_points(&stored, &[(0, 1.0), (1, 1.0), (2, nan), (3, 1.0), (5, 1.0)]);
        assert!(reconstruct(&spec, &stored, 2).is_some_and(f64::is_nan));
        check_stream(spec, &samples, &stored, "sdt nan");

        // Deadband: the held sample is within the deadband of the kept value, so it need not be stored.
        let spec = deadband(0.5);
        let stored = run(spec, &samples);
        assert_points(&stored, &[(0, 1.0), (2, nan), (3, 1.0), (5, 1.0)]);
        check_stream(spec, &samples, &stored, "deadband nan");

        // Repeated infinities are each stored: faults are never filtered.
        let samples = [(0, 1.0), (1, inf), (2, inf), (3, -inf), (4, 1.2), (5, 1.3)];
        for spec in [deadband(0.5), sdt(0.5, None)] {
            let stored = run(spec, &samples);
            assert_points(&stored, &samples);
            check_stream(spec, &samples, &stored, "infinities");
        }
    }

    #[test]
    fn lossy_equal_timestamps() {
        let spec = sdt(1.0, None);
        // A jump at one instant: both values are stored, and the later one is the value there.
        let jump = [(0, 0.0), (1, 0.2), (1, 5.0), (2, 5.1), (3, 5.0)];
        let stored = run(spec, &jump);
        assert_points(&stored, &[(0, 0.0), (1, 0.2), (1, 5.0), (3, 5.0)]);
        assert_eq!(reconstruct(&spec, &stored, 1), Some(5.0));
        check_stream(spec, &jump, &stored, "jump");
        // Even close values at one instant, which the door would admit, are all stored: dropping the
        // first would let a third one at the instant supersede it by more than the deviation.
        let close = [(0, 0.0), (1, 0.2), (1, 0.4), (1, 1.5), (2, 1.6), (3, 1.7)];
        let stored = run(spec, &close);
        assert_points(&stored, &[(0, 0.0), (1, 0.2), (1, 0.4), (1, 1.5), (3, 1.7)]);
        assert_eq!(reconstruct(&spec, &stored, 1), Some(1.5));
        check_stream(spec, &close, &stored, "close");
        // A second sample at the archived instant is stored.
        let again = [(0, 0.0), (0, 0.3), (1, 0.3)];
        assert_points(&run(spec, &again), &[(0, 0.0), (0, 0.3), (1, 0.3)]);
        // Deadband too stores every sample of a shared instant, even within the deadband.
        let spec = deadband(1.0);
        let shared = [(0, 0.0), (1, 0.5), (1, 0.2), (1, 0.3), (2, 0.4), (3, 0.1)];
        let stored = run(spec, &shared);
        assert_points(&stored, &[(0, 0.0), (1, 0.5), (1, 0.2), (1, 0.3), (3, 0.1)]);
        assert_eq!(reconstruct(&spec, &stored, 2), Some(0.3));
        check_stream(spec, &shared, &stored, "deadband shared");
    }

    #[test]
    fn lossy_out_of_order_samples_are_stored_not_dropped() {
        let samples = [(0, 0.0), (5, 0.1), (3, 0.2), (4, 0.2)];
        for spec in [deadband(1.0), sdt(1.0, None)] {
            let stored = run(spec, &samples);
            assert_points(&stored, &[(0, 0.0), (5, 0.1), (3, 0.2), (4, 0.2)]);
        }
    }

    #[test]
    fn lossy_extreme_magnitudes_stay_within_bounds() {
        let big = f64::MAX / 2.0;
        let samples = [
            (0, -big),
            (1, big),
            (2, -big),
            (3, 1e300),
            (4, 1e300),
            (5, 1e300 + 1e285),
        ];
        for spec in [deadband(1.0), sdt(1.0, None), sdt(1e290, Some(2))] {
            let stored = run(spec, &samples);
            check_stream(spec, &samples, &stored, &format!("{spec:?}"));
        }
        // A deviation far below the values' precision stores every sample: lossless, not out of bounds.
        let samples: Vec<(i64, f64)> = (0..100).map(|i| (i, 1e9 + (i % 3) as f64 * 1e-7)).collect();
        let spec = sdt(1e-9, None);
        let stored = run(spec, &samples);
        assert_eq!(stored.len(), samples.len());
        check_stream(spec, &samples, &stored, "tiny deviation");
        // Timestamps at both ends of i64 do not overflow.
        let samples = [(i64::MIN, 0.0), (0, 0.5), (i64::MAX, 0.0)];
        let stored = run(sdt(1.0, None), &samples);
        check_stream(sdt(1.0, None), &samples, &stored, "extreme timestamps");
    }

    #[test]
    fn lossy_reconstruct_edges() {
        let spec = sdt(1.0, None);
        assert_eq!(reconstruct(&spec, &[], 0), None);
        let stored = [(0, 0.1), (10, 0.3)];
        assert_eq!(reconstruct(&spec, &stored, -1), None);
        // A stored point is returned exactly, not recomputed (0.1 + (0.3 - 0.1) is 0.30000000000000004).
        assert_eq!(reconstruct(&spec, &stored, 10), Some(0.3));
        assert_close(reconstruct(&spec, &stored, 5), 0.2);
        assert_eq!(reconstruct(&spec, &stored, 11), Some(0.3));
        assert_eq!(reconstruct(&deadband(1.0), &stored, 9), Some(0.1));
        // A segment ending at a fault is a step, as is one starting at it.
        let faulty = [(0, 1.0), (10, f64::NAN), (20, 3.0)];
        assert_eq!(reconstruct(&spec, &faulty, 5), Some(1.0));
        assert!(reconstruct(&spec, &faulty, 15).is_some_and(f64::is_nan));
        // Opposite values near f64::MAX interpolate without overflowing.
        let huge = [(0, -f64::MAX), (2, f64::MAX)];
        assert_eq!(reconstruct(&spec, &huge, 1), Some(0.0));
    }

    #[test]
    fn lossy_validate_explains_what_is_wrong() {
        assert_eq!(validate(&deadband(0.5)), Ok(()));
        assert_eq!(validate(&sdt(0.5, Some(1))), Ok(()));
        assert_eq!(validate(&sdt(0.5, None)), Ok(()));
        assert_eq!(
            validate(&deadband(0.0)),
            Err(
                "deadband must be a finite number greater than 0 (engineering units), got 0; \
                 remove the lossy setting to store every sample"
                    .to_owned()
            )
        );
        assert_eq!(
            validate(&sdt(f64::NAN, Some(-5))),
            Err(
                "swinging-door deviation must be a finite number greater than 0 (engineering \
                 units), got NaN; remove the lossy setting to store every sample; swinging-door \
                 max_interval_us must be a positive number of microseconds, got -5; leave it \
                 unset for no limit"
                    .to_owned()
            )
        );
        for bad in [
            deadband(-1.0),
            deadband(f64::INFINITY),
            sdt(0.0, None),
            sdt(1.0, Some(0)),
        ] {
            assert!(validate(&bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn lossy_invalid_spec_stores_every_sample() {
        let samples = [(0, 1.0), (1, 1.0), (2, 1.0)];
        for spec in [deadband(f64::NAN), sdt(-1.0, None), sdt(1.0, Some(0))] {
            let filter = LossyFilter::new(spec);
            assert_eq!(filter.max_error(), 0.0);
            assert_eq!(format!("{:?}", filter.spec()), format!("{spec:?}"));
            assert_points(&run(spec, &samples), &samples);
        }
        assert_eq!(LossyFilter::new(sdt(0.5, None)).max_error(), 0.5);
        assert_eq!(LossyFilter::new(deadband(2.0)).max_error(), 2.0);
    }
}
