//! A deterministic, plant-like data mix for `ironplant-bench historian`: the same tags and values
//! for a given seed on every machine, so our historian and PostgreSQL ingest identical data.
//!
//! Per 20 tags (one device): 10 noisy analogs, 3 setpoints, 3 counters and 4 state bits. Every
//! tag has one sample per step (a poll schedule, no deadband), at `start + step * period`. Event
//! rates (setpoint changes, counter resets, bit toggles) are defined in seconds, so a shorter
//! period gives more samples of the same process, not a busier process.
//!
//! Each tag has its own generator seeded from (seed, tag index): tag 7's series is the same
//! whether the mix has 10 tags or 100,000.

/// One sample value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum MixValue {
    Float(f64),
    Int(i64),
    Bool(bool),
}

impl MixValue {
    /// The value as PostgreSQL's `double precision` column stores it: bool -> 0/1, int -> float.
    pub fn as_f64(self) -> f64 {
        match self {
            MixValue::Float(v) => v,
            MixValue::Int(v) => v as f64,
            MixValue::Bool(v) => f64::from(u8::from(v)),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TagKind {
    /// A measured process value: slow drift plus sensor noise, rounded to the sensor precision.
    Analog,
    /// An operator setpoint: constant for hours, then another round value.
    Setpoint,
    /// A monotonic count (pieces, Wh) that rarely resets to 0.
    Counter,
    /// A state bit that toggles after minutes to hours.
    Boolean,
}

#[derive(Clone, Debug, PartialEq)]
pub struct MixTag {
    pub index: u32,
    /// A 7-level ISA-95 path: enterprise/site/area/line/cell/device/point,
    /// e.g. `acme/plant1/area00/line03/cell02/dev07/temp_0042`.
    pub name: String,
    pub kind: TagKind,
    /// Float values (analogs, setpoints) are exact multiples of `10^-decimals`; 0 for the others.
    pub decimals: u8,
    pub unit: &'static str,
}

/// 2026-01-01T00:00:00Z in microseconds since the Unix epoch: a convenient `start_us`.
pub const START_2026_US: i64 = 1_767_225_600_000_000;

/// Tag kinds of one 20-tag device, interleaved as a PLC's point list would be.
const DEVICE_PATTERN: [TagKind; 20] = {
    use TagKind::{Analog as A, Boolean as B, Counter as C, Setpoint as S};
    [A, A, S, A, B, A, C, A, S, B, A, A, C, B, A, S, A, C, B, A]
};
const TAGS_PER_DEVICE: usize = DEVICE_PATTERN.len();
const DEVICES_PER_CELL: usize = 8;
const CELLS_PER_LINE: usize = 4;
const LINES_PER_AREA: usize = 4;

struct AnalogFlavor {
    name: &'static str,
    unit: &'static str,
    decimals: u8,
    /// Range of the operating point.
    base: (f64, f64),
    /// Range of the drift amplitude (random walk std or sine amplitude).
    amplitude: (f64, f64),
    /// Range of the noise amplitude, in steps of the sensor precision.
    noise_steps: (f64, f64),
}

const ANALOGS: [AnalogFlavor; 6] = [
    AnalogFlavor {
        name: "temp",
        unit: "°C",
        decimals: 1,
        base: (20.0, 90.0),
        amplitude: (0.5, 5.0),
        noise_steps: (0.3, 3.0),
    },
    AnalogFlavor {
        name: "pressure",
        unit: "bar",
        decimals: 2,
        base: (1.0, 10.0),
        amplitude: (0.05, 0.5),
        noise_steps: (0.3, 3.0),
    },
    AnalogFlavor {
        name: "speed",
        unit: "rpm",
        decimals: 0,
        base: (600.0, 3000.0),
        amplitude: (5.0, 60.0),
        noise_steps: (0.3, 4.0),
    },
    AnalogFlavor {
        name: "flow",
        unit: "m3/h",
        decimals: 1,
        base: (5.0, 200.0),
        amplitude: (0.5, 10.0),
        noise_steps: (0.5, 5.0),
    },
    AnalogFlavor {
        name: "level",
        unit: "%",
        decimals: 1,
        base: (20.0, 80.0),
        amplitude: (2.0, 15.0),
        noise_steps: (0.2, 2.0),
    },
    AnalogFlavor {
        name: "current",
        unit: "A",
        decimals: 2,
        base: (2.0, 60.0),
        amplitude: (0.1, 2.0),
        noise_steps: (0.5, 5.0),
    },
];

struct SetpointFlavor {
    name: &'static str,
    unit: &'static str,
    decimals: u8,
    /// The grid setpoints move on, in units of `10^-decimals`.
    step_units: i64,
    base: (f64, f64),
}

const SETPOINTS: [SetpointFlavor; 4] = [
    SetpointFlavor {
        name: "temp_sp",
        unit: "°C",
        decimals: 1,
        step_units: 5,
        base: (40.0, 90.0),
    },
    SetpointFlavor {
        name: "pressure_sp",
        unit: "bar",
        decimals: 2,
        step_units: 25,
        base: (2.0, 8.0),
    },
    SetpointFlavor {
        name: "speed_sp",
        unit: "rpm",
        decimals: 0,
        step_units: 50,
        base: (1000.0, 2500.0),
    },
    SetpointFlavor {
        name: "flow_sp",
        unit: "m3/h",
        decimals: 0,
        step_units: 5,
        base: (20.0, 150.0),
    },
];

/// Mean time between setpoint changes: uniform in this range, per tag (seconds).
const SETPOINT_CHANGE_S: (f64, f64) = (3_600.0, 6.0 * 3_600.0);

struct BoolFlavor {
    name: &'static str,
    /// Mean seconds spent on / off: each uniform in its range, per tag.
    mean_on_s: (f64, f64),
    mean_off_s: (f64, f64),
}

const BOOLS: [BoolFlavor; 4] = [
    BoolFlavor {
        name: "running",
        mean_on_s: (3_600.0, 4.0 * 3_600.0),
        mean_off_s: (600.0, 3_600.0),
    },
    BoolFlavor {
        name: "fault",
        mean_on_s: (120.0, 900.0),
        mean_off_s: (2.0 * 3_600.0, 24.0 * 3_600.0),
    },
    BoolFlavor {
        name: "door_open",
        mean_on_s: (120.0, 600.0),
        mean_off_s: (3_600.0, 8.0 * 3_600.0),
    },
    BoolFlavor {
        name: "valve_open",
        mean_on_s: (300.0, 3_600.0),
        mean_off_s: (300.0, 3_600.0),
    },
];

/// A deterministic generator of plant samples; see the module docs.
pub struct Mix {
    tags: Vec<MixTag>,
    states: Vec<State>,
    /// The states before step 0, to replay when an earlier step is requested.
    initial: Vec<State>,
    start_us: i64,
    period_us: i64,
    /// The step the states produce next.
    next_step: u64,
    /// Each device's poll is stamped up to this far (µs) from its nominal time, uniformly and
    /// deterministically: the 20 tags of one device share their poll's timestamp, as a PLC
    /// read stamps them.
    jitter_us: i64,
    seed: u64,
}

impl Mix {
    /// `tags` tags, samples every `period_us` (at least 1) from `start_us`, deterministic for `seed`.
    pub fn new(tags: usize, start_us: i64, period_us: i64, seed: u64) -> Mix {
        let period_us = period_us.max(1);
        let period_s = period_us as f64 / 1e6;
        let tags = tags.min(u32::MAX as usize);
        let mut meta = Vec::with_capacity(tags);
        let mut states = Vec::with_capacity(tags);
        for i in 0..tags {
            let index = i as u32;
            let mut rng = Rng::for_tag(seed, index);
            let kind = DEVICE_PATTERN[i % TAGS_PER_DEVICE];
            let (point, unit, decimals, state) = match kind {
                TagKind::Analog => {
                    let f = &ANALOGS[rng.below(ANALOGS.len() as u64) as usize];
                    (
                        f.name,
                        f.unit,
                        f.decimals,
                        State::Analog(Analog::new(f, period_s, rng)),
                    )
                }
                TagKind::Setpoint => {
                    let f = &SETPOINTS[rng.below(SETPOINTS.len() as u64) as usize];
                    let state = Setpoint::new(f, period_s, rng);
                    (f.name, f.unit, f.decimals, State::Setpoint(state))
                }
                TagKind::Counter => {
                    let energy = rng.below(2) == 0;
                    let state = State::Counter(Counter::new(energy, period_s, rng));
                    if energy {
                        ("energy", "Wh", 0, state)
                    } else {
                        ("count", "pcs", 0, state)
                    }
                }
                TagKind::Boolean => {
                    let f = &BOOLS[rng.below(BOOLS.len() as u64) as usize];
                    (
                        f.name,
                        "",
                        0,
                        State::Boolean(Boolean::new(f, period_s, rng)),
                    )
                }
            };
            meta.push(MixTag {
                index,
                name: tag_path(i, point),
                kind,
                decimals,
                unit,
            });
            states.push(state);
        }
        Mix {
            tags: meta,
            initial: states.clone(),
            states,
            start_us,
            period_us,
            next_step: 0,
            jitter_us: 0,
            seed,
        }
    }

    /// The same mix with each device's poll timestamps jittered by up to ±`jitter_us`
    /// (µs resolution), shared by the device's tags.
    pub fn with_jitter(mut self, jitter_us: i64) -> Mix {
        self.jitter_us = jitter_us.max(0);
        self
    }

    /// The jitter of `device`'s poll at `step` (SplitMix64 of seed, device and step).
    fn jitter(&self, device: u64, step: u64) -> i64 {
        if self.jitter_us == 0 {
            return 0;
        }
        let mut z = self
            .seed
            .wrapping_add(device.wrapping_mul(0x9E37_79B9_7F4A_7C15))
            .wrapping_add(step.wrapping_mul(0xBF58_476D_1CE4_E5B9));
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let span = 2 * self.jitter_us as u64 + 1;
        (z % span) as i64 - self.jitter_us
    }

    pub fn tags(&self) -> &[MixTag] {
        &self.tags
    }

    #[cfg(test)]
    pub fn start_us(&self) -> i64 {
        self.start_us
    }

    #[cfg(test)]
    pub fn period_us(&self) -> i64 {
        self.period_us
    }

    /// The timestamp of `step`: `start + step * period` (saturating).
    pub fn timestamp_us(&self, step: u64) -> i64 {
        let step = i64::try_from(step).unwrap_or(i64::MAX);
        self.start_us
            .saturating_add(step.saturating_mul(self.period_us))
    }

    /// Fills `out` with one sample per tag for `step`, in tag order; reuses `out`'s allocation.
    ///
    /// Values are a pure function of (seed, tag, step). Increasing steps are cheap (skipped steps
    /// are generated and dropped); an earlier step than the last one replays from step 0.
    pub fn step(&mut self, step: u64, out: &mut Vec<(u32, i64, MixValue)>) {
        if step < self.next_step {
            self.states.clone_from(&self.initial);
            self.next_step = 0;
        }
        while self.next_step < step {
            for state in &mut self.states {
                state.next();
            }
            self.next_step += 1;
        }
        let ts = self.timestamp_us(step);
        let jitter: Vec<i64> = (0..self.states.len().div_ceil(TAGS_PER_DEVICE))
            .map(|d| self.jitter(d as u64, step))
            .collect();
        out.clear();
        out.reserve(self.states.len());
        out.extend(self.states.iter_mut().enumerate().map(|(i, state)| {
            (
                i as u32,
                ts.saturating_add(jitter[i / TAGS_PER_DEVICE]),
                state.next(),
            )
        }));
        self.next_step = step + 1;
    }
}

fn tag_path(i: usize, point: &str) -> String {
    let device = i / TAGS_PER_DEVICE;
    let cell = device / DEVICES_PER_CELL;
    let line = cell / CELLS_PER_LINE;
    let area = line / LINES_PER_AREA;
    format!(
        "acme/plant1/area{area:02}/line{:02}/cell{:02}/dev{:02}/{point}_{i:04}",
        line % LINES_PER_AREA,
        cell % CELLS_PER_LINE,
        device % DEVICES_PER_CELL,
    )
}

#[derive(Clone)]
enum State {
    Analog(Analog),
    Setpoint(Setpoint),
    Counter(Counter),
    Boolean(Boolean),
}

impl State {
    #[inline]
    fn next(&mut self) -> MixValue {
        match self {
            State::Analog(a) => MixValue::Float(a.next()),
            State::Setpoint(s) => MixValue::Float(s.next()),
            State::Counter(c) => MixValue::Int(c.next()),
            State::Boolean(b) => MixValue::Bool(b.next()),
        }
    }
}

#[derive(Clone)]
struct Analog {
    rng: Rng,
    /// `10^decimals`: values are `round(x * scale) / scale`, the f64 nearest the decimal.
    scale: f64,
    noise: f64,
    drift: Drift,
}

#[derive(Clone)]
enum Drift {
    /// Mean-reverting random walk (Ornstein-Uhlenbeck): `x += theta * (mean - x) + sigma * noise`.
    Walk {
        x: f64,
        mean: f64,
        theta: f64,
        sigma: f64,
    },
    /// `mean + amplitude * sin(phase)`, the phase advanced by rotating (cos, sin) each step.
    Sine {
        mean: f64,
        amplitude: f64,
        cos: f64,
        sin: f64,
        cos_w: f64,
        sin_w: f64,
    },
}

/// Standard deviation of `Rng::tri`.
const TRI_STD: f64 = 0.408_248_290_463_863; // 1 / sqrt(6)

impl Analog {
    fn new(f: &AnalogFlavor, period_s: f64, mut rng: Rng) -> Analog {
        let scale = 10f64.powi(i32::from(f.decimals));
        let mean = rng.range(f.base);
        let amplitude = rng.range(f.amplitude);
        let noise = rng.range(f.noise_steps) / scale;
        let drift = if rng.below(2) == 0 {
            // Time constant 30 min .. 4 h; sigma keeps the walk's spread near `amplitude`.
            let tau_s = rng.range((1_800.0, 4.0 * 3_600.0));
            let theta = (period_s / tau_s).min(1.0);
            Drift::Walk {
                x: mean + amplitude * rng.tri(),
                mean,
                theta,
                sigma: amplitude * (2.0 * theta).sqrt() / TRI_STD,
            }
        } else {
            let cycle_s = rng.range((600.0, 8.0 * 3_600.0));
            let w = std::f64::consts::TAU * period_s / cycle_s;
            let phase = rng.range((0.0, std::f64::consts::TAU));
            Drift::Sine {
                mean,
                amplitude,
                cos: phase.cos(),
                sin: phase.sin(),
                cos_w: w.cos(),
                sin_w: w.sin(),
            }
        };
        Analog {
            rng,
            scale,
            noise,
            drift,
        }
    }

    #[inline]
    fn next(&mut self) -> f64 {
        let Analog {
            rng,
            scale,
            noise,
            drift,
        } = self;
        let process = match drift {
            Drift::Walk {
                x,
                mean,
                theta,
                sigma,
            } => {
                *x += *theta * (*mean - *x) + *sigma * rng.tri();
                *x
            }
            Drift::Sine {
                mean,
                amplitude,
                cos,
                sin,
                cos_w,
                sin_w,
            } => {
                let c = *cos * *cos_w - *sin * *sin_w;
                let s = *sin * *cos_w + *cos * *sin_w;
                // First-order renormalisation keeps |(c, s)| at 1 without a sqrt.
                let k = 1.5 - 0.5 * (c * c + s * s);
                *cos = c * k;
                *sin = s * k;
                *mean + *amplitude * *sin
            }
        };
        let raw = process + *noise * rng.tri();
        (raw * *scale).round() / *scale
    }
}

#[derive(Clone)]
struct Setpoint {
    rng: Rng,
    /// Value in units of `10^-decimals`.
    units: i64,
    step_units: i64,
    lo: i64,
    hi: i64,
    scale: f64,
    steps_left: u64,
    mean_steps: f64,
}

impl Setpoint {
    fn new(f: &SetpointFlavor, period_s: f64, mut rng: Rng) -> Setpoint {
        let scale = 10f64.powi(i32::from(f.decimals));
        let base = (rng.range(f.base) * scale / f.step_units as f64).round() as i64 * f.step_units;
        let mean_steps = rng.range(SETPOINT_CHANGE_S) / period_s;
        let steps_left = rng.interval(mean_steps);
        Setpoint {
            rng,
            units: base,
            step_units: f.step_units,
            lo: base - 10 * f.step_units,
            hi: base + 10 * f.step_units,
            scale,
            steps_left,
            mean_steps,
        }
    }

    #[inline]
    fn next(&mut self) -> f64 {
        self.steps_left -= 1;
        if self.steps_left == 0 {
            self.steps_left = self.rng.interval(self.mean_steps);
            let delta = (1 + self.rng.below(3) as i64) * self.step_units;
            let up = self.units + delta;
            let down = self.units - delta;
            // Prefer a random direction; bounce off the ends of the operating range.
            self.units = match (self.rng.below(2) == 0, up <= self.hi, down >= self.lo) {
                (true, true, _) | (false, true, false) => up,
                _ => down,
            };
        }
        self.units as f64 / self.scale
    }
}

#[derive(Clone)]
struct Counter {
    rng: Rng,
    value: i64,
    /// Fractional increments carried to the next step.
    carry: f64,
    /// Mean increment per step.
    per_step: f64,
    /// The counter reads 0 instead of reaching this (a PLC counter with reset at preset).
    limit: i64,
    reset_in: u64,
    reset_mean_steps: f64,
}

impl Counter {
    fn new(energy: bool, period_s: f64, mut rng: Rng) -> Counter {
        let (value, per_s, limit, reset_mean_s) = if energy {
            // An energy meter: 5-200 kW load, a large reading, replaced every few months.
            let kw = rng.range((5.0, 200.0));
            let value = rng.range((1e6, 1e9)) as i64;
            (value, kw * 1_000.0 / 3_600.0, i64::MAX, 90.0 * 86_400.0)
        } else {
            // A piece counter: 0.1-5 pieces/s, reset per batch (8-72 h) or at a 16/32-bit preset.
            let limit = if rng.below(2) == 0 { 65_536 } else { 1 << 31 };
            let per_s = rng.range((0.1, 5.0));
            let value = rng.below(30_000) as i64;
            (
                value,
                per_s,
                limit,
                rng.range((8.0 * 3_600.0, 72.0 * 3_600.0)),
            )
        };
        let reset_mean_steps = reset_mean_s / period_s;
        let reset_in = rng.interval(reset_mean_steps);
        Counter {
            rng,
            value,
            carry: 0.0,
            per_step: per_s * period_s,
            limit,
            reset_in,
            reset_mean_steps,
        }
    }

    #[inline]
    fn next(&mut self) -> i64 {
        self.reset_in -= 1;
        if self.reset_in == 0 {
            self.reset_in = self.rng.interval(self.reset_mean_steps);
            self.value = 0;
            self.carry = 0.0;
            return 0;
        }
        // Increments vary ±50% around the rate; whole units are counted, the rest carried.
        self.carry += self.per_step * (0.5 + self.rng.unit());
        let whole = self.carry.floor();
        self.carry -= whole;
        self.value = self.value.saturating_add(whole as i64);
        if self.value >= self.limit {
            self.value = 0;
        }
        self.value
    }
}

#[derive(Clone)]
struct Boolean {
    rng: Rng,
    on: bool,
    steps_left: u64,
    mean_on_steps: f64,
    mean_off_steps: f64,
}

impl Boolean {
    fn new(f: &BoolFlavor, period_s: f64, mut rng: Rng) -> Boolean {
        let mean_on_steps = rng.range(f.mean_on_s) / period_s;
        let mean_off_steps = rng.range(f.mean_off_s) / period_s;
        let on = rng.unit() < mean_on_steps / (mean_on_steps + mean_off_steps);
        let steps_left = rng.interval(if on { mean_on_steps } else { mean_off_steps });
        Boolean {
            rng,
            on,
            steps_left,
            mean_on_steps,
            mean_off_steps,
        }
    }

    #[inline]
    fn next(&mut self) -> bool {
        self.steps_left -= 1;
        if self.steps_left == 0 {
            self.on = !self.on;
            let mean = if self.on {
                self.mean_on_steps
            } else {
                self.mean_off_steps
            };
            self.steps_left = self.rng.interval(mean);
        }
        self.on
    }
}

/// SplitMix64: tiny, fast and good enough for synthetic data.
#[derive(Clone)]
struct Rng(u64);

impl Rng {
    fn for_tag(seed: u64, index: u32) -> Rng {
        let mut seeder = Rng(seed ^ u64::from(index).wrapping_mul(0xD1B5_4A32_D192_ED03));
        Rng(seeder.next())
    }

    #[inline]
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    #[inline]
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    fn range(&mut self, (lo, hi): (f64, f64)) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    /// Uniform in 0..n (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
    }

    /// Triangular in (-1, 1), mean 0: the sum of two uniforms from one draw, a cheap bell shape.
    #[inline]
    fn tri(&mut self) -> f64 {
        let x = self.next();
        let a = (x >> 32) as f64;
        let b = (x & 0xFFFF_FFFF) as f64;
        (a + b) * (1.0 / 4_294_967_296.0) - 1.0
    }

    /// Steps until the next event of a Poisson process with the given mean interval; at least 1.
    fn interval(&mut self, mean_steps: f64) -> u64 {
        let steps = -(1.0 - self.unit()).ln() * mean_steps;
        // `as` saturates; keep far from u64::MAX so countdowns never wrap.
        (steps as u64).clamp(1, u64::MAX / 2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: i64 = 1_000_000;

    /// Runs `steps` steps and returns the samples per tag.
    fn series(mix: &mut Mix, steps: u64) -> Vec<Vec<MixValue>> {
        let mut per_tag = vec![Vec::with_capacity(steps as usize); mix.tags().len()];
        let mut out = Vec::new();
        for step in 0..steps {
            mix.step(step, &mut out);
            assert_eq!(out.len(), mix.tags().len());
            for &(tag, ts, value) in &out {
                assert_eq!(ts, mix.timestamp_us(step));
                per_tag[tag as usize].push(value);
            }
        }
        per_tag
    }

    fn floats(values: &[MixValue]) -> Vec<f64> {
        values
            .iter()
            .map(|v| match v {
                MixValue::Float(f) => *f,
                other => panic!("expected a float, got {other:?}"),
            })
            .collect()
    }

    #[test]
    fn same_seed_same_data_and_other_seed_other_data() {
        let a = series(&mut Mix::new(100, START_2026_US, SECOND, 7), 500);
        let b = series(&mut Mix::new(100, START_2026_US, SECOND, 7), 500);
        let c = series(&mut Mix::new(100, START_2026_US, SECOND, 8), 500);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(
            Mix::new(100, 0, SECOND, 7).tags(),
            Mix::new(100, 0, SECOND, 7).tags()
        );
        // A tag's series does not depend on how many tags the mix has.
        let small = series(&mut Mix::new(30, START_2026_US, SECOND, 7), 500);
        assert_eq!(small[..], a[..30]);
    }

    #[test]
    fn values_are_a_function_of_the_step_whatever_the_access_order() {
        let all = series(&mut Mix::new(40, 0, SECOND, 3), 300);
        let mut mix = Mix::new(40, 0, SECOND, 3);
        let mut out = Vec::new();
        for step in [5, 17, 299, 4, 4, 250] {
            mix.step(step, &mut out);
            for &(tag, ts, value) in &out {
                assert_eq!(ts, step as i64 * SECOND);
                assert_eq!(
                    value, all[tag as usize][step as usize],
                    "tag {tag} step {step}"
                );
            }
        }
    }

    #[test]
    fn kinds_come_in_plant_proportions_with_isa95_names() {
        let mix = Mix::new(1_000, 0, SECOND, 1);
        let count = |kind| mix.tags().iter().filter(|t| t.kind == kind).count();
        assert_eq!(count(TagKind::Analog), 500);
        assert_eq!(count(TagKind::Setpoint), 150);
        assert_eq!(count(TagKind::Counter), 150);
        assert_eq!(count(TagKind::Boolean), 200);
        for (i, tag) in mix.tags().iter().enumerate() {
            assert_eq!(tag.index as usize, i);
            assert_eq!(tag.name.split('/').count(), 7, "{}", tag.name);
            assert!(tag.name.ends_with(&format!("_{i:04}")), "{}", tag.name);
        }
        assert_eq!(
            mix.tags()[42].name,
            "acme/plant1/area00/line00/cell00/dev02/flow_sp_0042"
        );
        let names: std::collections::HashSet<_> = mix.tags().iter().map(|t| &t.name).collect();
        assert_eq!(names.len(), 1_000);
    }

    #[test]
    fn analogs_drift_slowly_on_their_precision_grid() {
        let mut mix = Mix::new(400, START_2026_US, SECOND, 11);
        let data = series(&mut mix, 3_600);
        let mut flat_tags = 0;
        for tag in mix.tags() {
            if !matches!(tag.kind, TagKind::Analog | TagKind::Setpoint) {
                continue;
            }
            let scale = 10f64.powi(i32::from(tag.decimals));
            let values = floats(&data[tag.index as usize]);
            for &v in &values {
                assert_eq!(
                    (v * scale).round() / scale,
                    v,
                    "{} = {v} is off grid",
                    tag.name
                );
            }
            if tag.kind == TagKind::Setpoint {
                continue;
            }
            // Close consecutive values: the mean step is a few precision steps.
            let mean_step = values
                .windows(2)
                .map(|w| (w[1] - w[0]).abs() * scale)
                .sum::<f64>()
                / (values.len() - 1) as f64;
            assert!(mean_step < 5.0, "{}: mean step {mean_step}", tag.name);
            let distinct: std::collections::HashSet<u64> =
                values.iter().map(|v| v.to_bits()).collect();
            if distinct.len() < 3 {
                flat_tags += 1;
            }
        }
        assert_eq!(flat_tags, 0, "analogs should move");
    }

    #[test]
    fn setpoints_change_rarely_to_round_values() {
        // Two days at a 10 s period: several changes per tag, each onto the setpoint's grid.
        let mut mix = Mix::new(200, 0, 10 * SECOND, 5);
        let data = series(&mut mix, 2 * 8_640);
        let (mut changes, mut samples) = (0, 0);
        for tag in mix.tags().iter().filter(|t| t.kind == TagKind::Setpoint) {
            let values = floats(&data[tag.index as usize]);
            changes += values.windows(2).filter(|w| w[0] != w[1]).count();
            samples += values.len();
        }
        let per_tag_per_day = changes as f64 / 30.0 / 2.0;
        assert!(
            (2.0..=30.0).contains(&per_tag_per_day),
            "{per_tag_per_day} changes/day"
        );
        assert!(changes * 100 < samples);
    }

    #[test]
    fn counters_never_decrease_except_by_resetting_to_zero() {
        // Three days at a 10 s period, so batch resets and 16-bit wraps both show up.
        let mut mix = Mix::new(200, 0, 10 * SECOND, 9);
        let data = series(&mut mix, 3 * 8_640);
        let (mut resets, mut samples) = (0, 0);
        for tag in mix.tags().iter().filter(|t| t.kind == TagKind::Counter) {
            let values: Vec<i64> = data[tag.index as usize]
                .iter()
                .map(|v| match v {
                    MixValue::Int(i) => *i,
                    other => panic!("{}: expected an int, got {other:?}", tag.name),
                })
                .collect();
            for w in values.windows(2) {
                if w[1] < w[0] {
                    assert_eq!(w[1], 0, "{} went from {} to {}", tag.name, w[0], w[1]);
                    resets += 1;
                }
            }
            assert!(values.iter().all(|&v| v >= 0));
            assert!(
                values.last() != values.first(),
                "{} does not count",
                tag.name
            );
            samples += values.len();
        }
        assert!(resets > 0, "no counter reset in three days");
        assert!(
            resets * 1_000 < samples,
            "{resets} resets in {samples} samples"
        );
    }

    #[test]
    fn booleans_toggle_rarely() {
        let mut mix = Mix::new(400, 0, SECOND, 13);
        let data = series(&mut mix, 4 * 3_600);
        let (mut toggles, mut samples, mut on) = (0, 0, 0);
        for tag in mix.tags().iter().filter(|t| t.kind == TagKind::Boolean) {
            let values: Vec<bool> = data[tag.index as usize]
                .iter()
                .map(|v| match v {
                    MixValue::Bool(b) => *b,
                    other => panic!("{}: expected a bool, got {other:?}", tag.name),
                })
                .collect();
            toggles += values.windows(2).filter(|w| w[0] != w[1]).count();
            on += values.iter().filter(|&&b| b).count();
            samples += values.len();
        }
        assert!(toggles > 0);
        // Mean dwell times are at least two minutes.
        assert!(
            toggles * 120 < samples,
            "{toggles} toggles in {samples} samples"
        );
        assert!(
            on > samples / 10 && on < samples * 9 / 10,
            "{on} of {samples} on"
        );
    }

    #[test]
    fn values_convert_to_f64_as_postgres_stores_them() {
        assert_eq!(MixValue::Float(-1.5).as_f64(), -1.5);
        assert_eq!(MixValue::Int(1 << 40).as_f64(), (1u64 << 40) as f64);
        assert_eq!(MixValue::Bool(true).as_f64(), 1.0);
        assert_eq!(MixValue::Bool(false).as_f64(), 0.0);
        let mix = Mix::new(20, 5, 2, 0);
        assert_eq!((mix.start_us(), mix.period_us()), (5, 2));
        assert_eq!(mix.timestamp_us(u64::MAX), i64::MAX);
        assert!(mix
            .tags()
            .iter()
            .all(|t| t.kind == TagKind::Boolean || !t.unit.is_empty()));
    }

    /// `rustc --edition 2021 -O --test bench_mix.rs && ./bench_mix --ignored --nocapture`
    #[test]
    #[ignore = "timing; run in release"]
    fn ten_million_samples_timing() {
        let mut mix = Mix::new(10_000, START_2026_US, SECOND, 1);
        let mut out = Vec::new();
        let started = std::time::Instant::now();
        let mut checksum = 0.0;
        for step in 0..1_000 {
            mix.step(step, &mut out);
            checksum += out[step as usize].2.as_f64();
        }
        let elapsed = started.elapsed();
        eprintln!("10M samples in {elapsed:?} (checksum {checksum})");
    }
}
