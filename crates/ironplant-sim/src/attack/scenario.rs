//! Data-level attacks as pure transforms: a [`Scenario`] says what to forge, an [`Injector`]
//! turns true readings into the readings a compromised PLC (or a compromised path) shows.
//!
//! No clock and no I/O: every call takes `now`, the elapsed time on the caller's clock (the
//! plant's simulated time in the simulator and in the detection report, the proxy's own clock
//! in [`super::proxy`]). The same scenario, seed and sequence of calls always give the same
//! forged values, so the detection report can run days of simulated time in seconds.
//!
//! Signals are named as in the register map ([`crate::REGISTER_MAP`]); measurements and
//! counters can be attacked, commands and status bits cannot.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::map::{Kind, PointDef, Signal, REGISTER_MAP};
use crate::plant::Readings;

/// Longest delay before an attack takes effect.
pub const MAX_START: Duration = Duration::from_secs(366 * 24 * 3600);
/// Longest recording a replay keeps: one hour...
pub const MAX_RECORD: Duration = Duration::from_secs(3600);
/// ...and at most this many samples per signal (the recording ends early beyond it).
pub const MAX_RECORD_SAMPLES: usize = 100_000;

/// One attack on the plant's data, with its parameters. Serialised with a `kind` tag
/// (`{"kind":"drift","signal":"tank_level","amount":8.0,"ramp_s":600.0}`); times are seconds
/// after the attack was started (`start_s`, default 0: at once).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Scenario {
    /// False-data injection, slow: an offset that grows linearly from 0 to `amount` (in the
    /// signal's engineering unit) over `ramp_s`, then stays. The sensor's own noise stays on
    /// top, and the result stays inside the sensor's range.
    Drift {
        signal: String,
        amount: f64,
        ramp_s: f64,
        #[serde(default)]
        start_s: f64,
    },
    /// False-data injection, sudden: `amount` added from `start_s` on (noise kept, range kept).
    Step {
        signal: String,
        amount: f64,
        #[serde(default)]
        start_s: f64,
    },
    /// Replay: records `record_s` of the signals (or of every attackable signal, `["all"]`)
    /// from `start_s` on, then plays the recording back in a loop instead of the live values.
    Replay {
        signals: Vec<String>,
        record_s: f64,
        #[serde(default)]
        start_s: f64,
    },
    /// Sensor freeze: from `start_s` on, the last value shown before holds, bit for bit.
    Freeze {
        signal: String,
        #[serde(default)]
        start_s: f64,
    },
    /// Man in the middle: the value multiplied by `factor` on its way from the PLC to the
    /// platform (see [`super::proxy`] for the real one on the wire).
    Mitm {
        signal: String,
        factor: f64,
        #[serde(default)]
        start_s: f64,
    },
}

/// Why a scenario cannot run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScenarioError {
    #[error("no attackable signal named {name:?}; measurements and counters of the register map can be attacked: {known}")]
    UnknownSignal { name: String, known: String },
    #[error("{scenario}: {field} = {value} is not allowed: {why}")]
    BadParameter {
        scenario: &'static str,
        field: &'static str,
        value: f64,
        why: String,
    },
    #[error("a replay needs at least one signal (or \"all\")")]
    NoSignals,
}

impl Scenario {
    /// The scenario's stable kind name: `drift`, `step`, `replay`, `freeze` or `mitm`.
    pub fn name(&self) -> &'static str {
        match self {
            Scenario::Drift { .. } => "drift",
            Scenario::Step { .. } => "step",
            Scenario::Replay { .. } => "replay",
            Scenario::Freeze { .. } => "freeze",
            Scenario::Mitm { .. } => "mitm",
        }
    }

    /// Kind and signals, e.g. `drift:tank_level` or `replay:tank_level+inflow`: unique among
    /// running attacks (starting one with the same label replaces it).
    pub fn label(&self) -> String {
        let signals = match self {
            Scenario::Replay { signals, .. } => signals.join("+"),
            Scenario::Drift { signal, .. }
            | Scenario::Step { signal, .. }
            | Scenario::Freeze { signal, .. }
            | Scenario::Mitm { signal, .. } => signal.clone(),
        };
        format!("{}:{signals}", self.name())
    }

    /// Seconds after the start of the attack at which it takes effect.
    pub fn start_s(&self) -> f64 {
        match self {
            Scenario::Drift { start_s, .. }
            | Scenario::Step { start_s, .. }
            | Scenario::Replay { start_s, .. }
            | Scenario::Freeze { start_s, .. }
            | Scenario::Mitm { start_s, .. } => *start_s,
        }
    }

    /// The map entries attacked, `"all"` expanded; checks every parameter.
    pub fn targets(&self) -> Result<Vec<&'static PointDef>, ScenarioError> {
        let name = self.name();
        let bad = |field: &'static str, value: f64, why: &str| ScenarioError::BadParameter {
            scenario: name,
            field,
            value,
            why: why.to_owned(),
        };
        let start = self.start_s();
        if !(start.is_finite() && (0.0..=MAX_START.as_secs_f64()).contains(&start)) {
            return Err(bad(
                "start_s",
                start,
                &format!(
                    "a delay in seconds, from 0 to {} (a year)",
                    MAX_START.as_secs()
                ),
            ));
        }
        let targets = match self {
            Scenario::Replay {
                signals, record_s, ..
            } => {
                if !(record_s.is_finite()
                    && *record_s > 0.0
                    && *record_s <= MAX_RECORD.as_secs_f64())
                {
                    return Err(bad(
                        "record_s",
                        *record_s,
                        &format!(
                            "the recording lasts more than 0 and at most {} s",
                            MAX_RECORD.as_secs()
                        ),
                    ));
                }
                if signals.is_empty() {
                    return Err(ScenarioError::NoSignals);
                }
                if signals.iter().any(|s| s == "all") {
                    attackable().collect()
                } else {
                    let mut out: Vec<&'static PointDef> = Vec::new();
                    for s in signals {
                        let def = attackable_def(s)?;
                        if !out.iter().any(|d| d.name == def.name) {
                            out.push(def);
                        }
                    }
                    out
                }
            }
            Scenario::Drift {
                signal,
                amount,
                ramp_s,
                ..
            } => {
                let def = attackable_def(signal)?;
                check_amount(def, name, *amount)?;
                if !(ramp_s.is_finite() && *ramp_s > 0.0) {
                    return Err(bad(
                        "ramp_s",
                        *ramp_s,
                        "the drift takes more than 0 s to reach its amount (e.g. 600)",
                    ));
                }
                vec![def]
            }
            Scenario::Step { signal, amount, .. } => {
                let def = attackable_def(signal)?;
                check_amount(def, name, *amount)?;
                vec![def]
            }
            Scenario::Freeze { signal, .. } => vec![attackable_def(signal)?],
            Scenario::Mitm { signal, factor, .. } => {
                let def = attackable_def(signal)?;
                if !(factor.is_finite() && *factor > 0.0 && *factor != 1.0) {
                    return Err(bad(
                        "factor",
                        *factor,
                        "a positive scale other than 1 (e.g. 0.8 shows 80 % of the value)",
                    ));
                }
                vec![def]
            }
        };
        Ok(targets)
    }

    /// A default instance of every scenario, as the detection report and the demo run them:
    /// each bends a different signal, by an amount a range check alone cannot see.
    pub fn catalogue() -> Vec<Scenario> {
        vec![
            Scenario::Drift {
                signal: "tank_level".into(),
                amount: 8.0,
                ramp_s: 600.0,
                start_s: 0.0,
            },
            Scenario::Step {
                signal: "line_pressure".into(),
                amount: 0.3,
                start_s: 0.0,
            },
            Scenario::Replay {
                signals: vec!["all".into()],
                record_s: 60.0,
                start_s: 0.0,
            },
            Scenario::Freeze {
                signal: "motor_current".into(),
                start_s: 0.0,
            },
            Scenario::Mitm {
                signal: "active_power".into(),
                factor: 0.8,
                start_s: 0.0,
            },
        ]
    }
}

/// The map entries an attack can bend: measurements and counters.
pub fn attackable() -> impl Iterator<Item = &'static PointDef> {
    REGISTER_MAP
        .iter()
        .filter(|d| matches!(d.kind, Kind::Measurement | Kind::Counter))
}

fn attackable_def(name: &str) -> Result<&'static PointDef, ScenarioError> {
    attackable()
        .find(|d| d.name == name)
        .ok_or_else(|| ScenarioError::UnknownSignal {
            name: name.to_owned(),
            known: attackable().map(|d| d.name).collect::<Vec<_>>().join(", "),
        })
}

/// An injected offset bigger than half the sensor's span is no longer subtle: refused.
fn check_amount(def: &PointDef, scenario: &'static str, amount: f64) -> Result<(), ScenarioError> {
    let half_span = (def.range.1 - def.range.0) / 2.0;
    if amount.is_finite() && amount != 0.0 && amount.abs() <= half_span {
        Ok(())
    } else {
        Err(ScenarioError::BadParameter {
            scenario,
            field: "amount",
            value: amount,
            why: format!(
                "an offset in {} other than 0, at most half of {}'s range {}..{} ({half_span})",
                if def.unit.is_empty() {
                    "units"
                } else {
                    def.unit
                },
                def.name,
                def.range.0,
                def.range.1
            ),
        })
    }
}

/// Where an injector is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Before `start_s`: the true values pass.
    Waiting,
    /// A replay recording: the true values pass, and are kept.
    Recording,
    /// The values shown are forged.
    Active,
}

/// Per-signal memory of an injector.
#[derive(Debug, Clone, Default)]
struct Memory {
    /// The last value seen (freeze holds it).
    last: Option<f64>,
    /// The value held by a freeze.
    held: Option<f64>,
    /// A replay's recording: offsets from the recording's start, values.
    recording: Vec<(Duration, f64)>,
}

/// A running [`Scenario`]: turns true values into forged ones (see the module docs).
#[derive(Debug, Clone)]
pub struct Injector {
    scenario: Scenario,
    /// When the attack takes effect (or a replay starts recording), on the caller's clock.
    begins: Duration,
    targets: Vec<&'static PointDef>,
    memory: Vec<Memory>,
}

impl Injector {
    /// The scenario started at `origin` on the caller's clock (it takes effect `start_s` later).
    pub fn new(scenario: Scenario, origin: Duration) -> Result<Injector, ScenarioError> {
        let targets = scenario.targets()?;
        let begins = origin + Duration::from_secs_f64(scenario.start_s());
        Ok(Injector {
            memory: vec![Memory::default(); targets.len()],
            scenario,
            begins,
            targets,
        })
    }

    pub fn scenario(&self) -> &Scenario {
        &self.scenario
    }

    /// When the attack takes effect, on the caller's clock.
    pub fn begins(&self) -> Duration {
        self.begins
    }

    /// Names of the signals this injector bends.
    pub fn signals(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.targets.iter().map(|d| d.name)
    }

    pub fn phase(&self, now: Duration) -> Phase {
        if now < self.begins {
            Phase::Waiting
        } else if let Scenario::Replay { .. } = self.scenario {
            if now < self.begins + self.record_len() {
                Phase::Recording
            } else {
                Phase::Active
            }
        } else {
            Phase::Active
        }
    }

    fn record_len(&self) -> Duration {
        match self.scenario {
            Scenario::Replay { record_s, .. } => Duration::from_secs_f64(record_s),
            _ => Duration::ZERO,
        }
    }

    /// The value shown for `signal` at `now` when the true value is `actual`. Signals this
    /// injector does not bend pass unchanged. Call it with non-decreasing `now`.
    pub fn value(&mut self, signal: &str, now: Duration, actual: f64) -> f64 {
        match self.targets.iter().position(|d| d.name == signal) {
            Some(i) => self.value_at(i, now, actual),
            None => actual,
        }
    }

    /// Tells the injector what was shown before it started (a freeze that starts at once holds
    /// the value shown last, not the next one).
    pub fn prime(&mut self, shown: &Readings) {
        for (def, mem) in self.targets.iter().zip(&mut self.memory) {
            if mem.last.is_none() {
                mem.last = reading(shown, def.signal);
            }
        }
    }

    /// Bends the injector's signals in `readings` (shown at `now`).
    pub fn apply(&mut self, now: Duration, readings: &mut Readings) {
        for i in 0..self.targets.len() {
            let signal = self.targets[i].signal;
            if let Some(actual) = reading(readings, signal) {
                let shown = self.value_at(i, now, actual);
                set_reading(readings, signal, shown);
            }
        }
    }

    fn value_at(&mut self, i: usize, now: Duration, actual: f64) -> f64 {
        let phase = self.phase(now);
        let record_len = self.record_len();
        let (lo, hi) = self.targets[i].range;
        let since = now.saturating_sub(self.begins);
        let mem = &mut self.memory[i];
        if phase == Phase::Waiting {
            mem.last = Some(actual);
            return actual;
        }
        match &self.scenario {
            Scenario::Drift { amount, ramp_s, .. } => {
                let share = (since.as_secs_f64() / ramp_s).min(1.0);
                (actual + amount * share).clamp(lo, hi)
            }
            Scenario::Step { amount, .. } => (actual + amount).clamp(lo, hi),
            Scenario::Freeze { .. } => *mem.held.get_or_insert(mem.last.unwrap_or(actual)),
            Scenario::Mitm { factor, .. } => (actual * factor).clamp(lo, hi),
            Scenario::Replay { .. } => {
                if phase == Phase::Recording {
                    if mem.recording.len() < MAX_RECORD_SAMPLES {
                        mem.recording.push((since, actual));
                    }
                    return actual;
                }
                // The loop lasts as long as the recording asked for, or as what was kept.
                let span = match mem.recording.last() {
                    Some(_) if mem.recording.len() < MAX_RECORD_SAMPLES => record_len,
                    Some((t, _)) => *t + Duration::from_nanos(1),
                    None => return actual, // nothing was seen while recording
                };
                let played = since - record_len;
                let span_ns = span.as_nanos().max(1);
                let offset = Duration::from_nanos(
                    u64::try_from(played.as_nanos() % span_ns).unwrap_or(u64::MAX),
                );
                // The last sample recorded at or before this offset into the recording.
                let at = mem.recording.partition_point(|(t, _)| *t <= offset);
                mem.recording[at.saturating_sub(1)].1
            }
        }
    }
}

/// The value of an attackable signal in `r`.
pub fn reading(r: &Readings, signal: Signal) -> Option<f64> {
    use Signal::*;
    Some(match signal {
        SpeedActual => r.speed,
        MotorCurrent => r.motor_current,
        MotorTemp => r.motor_temp,
        ProductTemp => r.product_temp,
        LinePressure => r.line_pressure,
        Vibration => r.vibration,
        TankLevel => r.tank_level,
        Inflow => r.inflow,
        Outflow => r.outflow,
        TankTemp => r.tank_temp,
        EnergyTotal => r.energy_kwh,
        ActivePower => r.active_power,
        Voltage => r.voltage,
        PowerFactor => r.power_factor,
        AirPressure => r.air_pressure,
        WaterTotal => r.water_litres,
        GoodCount => r.good_count as f64,
        RejectCount => r.reject_count as f64,
        _ => return None,
    })
}

/// Sets an attackable signal in `r` (counters round to whole units, never below 0).
pub fn set_reading(r: &mut Readings, signal: Signal, v: f64) {
    use Signal::*;
    let count = |v: f64| {
        if v.is_finite() {
            v.round().max(0.0) as u64
        } else {
            0
        }
    };
    match signal {
        SpeedActual => r.speed = v,
        MotorCurrent => r.motor_current = v,
        MotorTemp => r.motor_temp = v,
        ProductTemp => r.product_temp = v,
        LinePressure => r.line_pressure = v,
        Vibration => r.vibration = v,
        TankLevel => r.tank_level = v,
        Inflow => r.inflow = v,
        Outflow => r.outflow = v,
        TankTemp => r.tank_temp = v,
        EnergyTotal => r.energy_kwh = v,
        ActivePower => r.active_power = v,
        Voltage => r.voltage = v,
        PowerFactor => r.power_factor = v,
        AirPressure => r.air_pressure = v,
        WaterTotal => r.water_litres = v,
        GoodCount => r.good_count = count(v),
        RejectCount => r.reject_count = count(v),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plant::Plant;

    const TICK: Duration = Duration::from_millis(100);

    /// Steps a plant `ticks` times and returns (now, true readings, shown readings) per tick.
    fn run(
        seed: u64,
        injector: &mut Injector,
        ticks: usize,
    ) -> Vec<(Duration, Readings, Readings)> {
        let mut plant = Plant::new(seed);
        (0..ticks)
            .map(|_| {
                plant.step(TICK);
                let truth = plant.readings().clone();
                let mut shown = truth.clone();
                injector.apply(plant.elapsed(), &mut shown);
                (plant.elapsed(), truth, shown)
            })
            .collect()
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn a_drift_ramps_to_its_amount_keeps_the_noise_and_stays_in_range() {
        let scenario = Scenario::Drift {
            signal: "tank_level".into(),
            amount: 8.0,
            ramp_s: 600.0,
            start_s: 60.0,
        };
        let mut inj = Injector::new(scenario, Duration::ZERO).expect("valid");
        let (lo, hi) = crate::map::point_def("tank_level").expect("mapped").range;
        let trace = run(11, &mut inj, 12_000); // 20 min
        for (now, truth, shown) in &trace {
            let offset = shown.tank_level - truth.tank_level;
            let expected = 8.0 * ((now.as_secs_f64() - 60.0).max(0.0) / 600.0).min(1.0);
            assert!(
                (offset - expected).abs() < 1e-9,
                "at {now:?}: offset {offset}, expected {expected}"
            );
            assert!(
                (lo..=hi).contains(&shown.tank_level),
                "{}",
                shown.tank_level
            );
            // Nothing else is touched.
            assert_eq!(shown.inflow, truth.inflow);
        }
        // The true level moves with noise; the shown one moves by exactly the same steps, so
        // its noise is the sensor's own (a flatline or rate check sees nothing new).
        let changes = trace
            .windows(2)
            .filter(|w| w[1].1.tank_level != w[0].1.tank_level)
            .count();
        assert!(changes > 11_000, "the true level is noisy: {changes}");
        // The drift per tick is far below the sensor's own tick-to-tick change (its noise), so
        // a rate-of-change check cannot see it either.
        let mut moves: Vec<f64> = trace
            .windows(2)
            .map(|w| (w[1].1.tank_level - w[0].1.tank_level).abs())
            .collect();
        moves.sort_by(f64::total_cmp);
        let median_move = moves[moves.len() / 2];
        let drift_per_tick = 8.0 / 600.0 * TICK.as_secs_f64();
        assert!(
            drift_per_tick * 10.0 < median_move,
            "{drift_per_tick} vs {median_move}"
        );
        // A drift toward an end of the range stops there instead of leaving it.
        let mut down = Injector::new(
            Scenario::Drift {
                signal: "tank_level".into(),
                amount: -50.0,
                ramp_s: 1.0,
                start_s: 0.0,
            },
            Duration::ZERO,
        )
        .expect("valid");
        let mut r = Readings {
            tank_level: 20.0,
            ..Readings::default()
        };
        down.apply(secs(5), &mut r);
        assert_eq!(r.tank_level, 0.0);
    }

    #[test]
    fn a_step_adds_its_amount_from_its_start_on() {
        let mut inj = Injector::new(
            Scenario::Step {
                signal: "line_pressure".into(),
                amount: 0.3,
                start_s: 30.0,
            },
            secs(100), // started at 100 s on the plant's clock: takes effect at 130 s
        )
        .expect("valid");
        assert_eq!(inj.begins(), secs(130));
        let trace = run(12, &mut inj, 2_000);
        for (now, truth, shown) in &trace {
            let offset = shown.line_pressure - truth.line_pressure;
            if *now < secs(130) {
                assert_eq!(offset, 0.0, "at {now:?}");
                assert_eq!(inj.phase(*now), Phase::Waiting);
            } else {
                assert!((offset - 0.3).abs() < 1e-12, "at {now:?}: {offset}");
            }
        }
        assert_eq!(inj.phase(secs(130)), Phase::Active);
    }

    #[test]
    fn a_freeze_holds_the_last_value_exactly() {
        let mut inj = Injector::new(
            Scenario::Freeze {
                signal: "motor_current".into(),
                start_s: 10.0,
            },
            Duration::ZERO,
        )
        .expect("valid");
        let trace = run(13, &mut inj, 6_000);
        let before = trace
            .iter()
            .rev()
            .find(|(now, ..)| *now < secs(10))
            .map(|(_, truth, _)| truth.motor_current)
            .expect("ticks before the freeze");
        let frozen: Vec<_> = trace.iter().filter(|(now, ..)| *now >= secs(10)).collect();
        assert!(frozen
            .iter()
            .all(|(_, _, shown)| shown.motor_current.to_bits() == before.to_bits()));
        // ...while the true current kept moving.
        assert!(frozen
            .iter()
            .any(|(_, truth, _)| truth.motor_current != before));
    }

    #[test]
    fn a_replay_plays_the_recording_back_in_a_loop() {
        let mut inj = Injector::new(
            Scenario::Replay {
                signals: vec!["tank_level".into(), "inflow".into()],
                record_s: 30.0,
                start_s: 5.0,
            },
            Duration::ZERO,
        )
        .expect("valid");
        // 2 min: 5 s waiting, 30 s recording, 85 s replay.
        let trace = run(14, &mut inj, 1_200);
        let at = |t: Duration| {
            trace
                .iter()
                .find(|(now, ..)| *now == t)
                .unwrap_or_else(|| panic!("no tick at {t:?}"))
        };
        let mut replayed = 0;
        for (now, truth, shown) in &trace {
            if *now < secs(35) {
                assert_eq!(shown, truth, "recording passes the true values, at {now:?}");
                continue;
            }
            // 5 s + (now - 35 s) mod 30 s: the moment recorded.
            let ms = u64::try_from(now.as_millis()).expect("small");
            let recorded = Duration::from_millis(5_000 + (ms - 35_000) % 30_000);
            let (_, then, _) = at(recorded);
            assert_eq!(shown.tank_level, then.tank_level, "at {now:?}");
            assert_eq!(shown.inflow, then.inflow, "at {now:?}");
            assert_eq!(shown.outflow, truth.outflow, "not replayed");
            replayed += 1;
        }
        assert_eq!(replayed, 851); // ticks at 35.0 s ..= 120.0 s
                                   // Every attackable signal at once.
        let all = Injector::new(
            Scenario::Replay {
                signals: vec!["all".into()],
                record_s: 1.0,
                start_s: 0.0,
            },
            Duration::ZERO,
        )
        .expect("valid");
        assert_eq!(all.signals().count(), attackable().count());
        assert!(all.signals().any(|s| s == "good_count"));
    }

    #[test]
    fn a_mitm_scales_the_value() {
        let mut inj = Injector::new(
            Scenario::Mitm {
                signal: "active_power".into(),
                factor: 0.8,
                start_s: 0.0,
            },
            Duration::ZERO,
        )
        .expect("valid");
        for (_, truth, shown) in run(15, &mut inj, 100) {
            assert!((shown.active_power - 0.8 * truth.active_power).abs() < 1e-9);
        }
        assert_eq!(inj.value("power_factor", secs(1), 0.9), 0.9, "not targeted");
    }

    #[test]
    fn bad_scenarios_are_refused_with_what_to_do() {
        let err = |s: Scenario| Injector::new(s, Duration::ZERO).expect_err("refused");
        let e = err(Scenario::Freeze {
            signal: "speed_setpoint".into(),
            start_s: 0.0,
        });
        assert!(
            matches!(&e, ScenarioError::UnknownSignal { known, .. } if known.contains("tank_level") && !known.contains("speed_setpoint")),
            "{e}"
        );
        let e = err(Scenario::Step {
            signal: "tank_level".into(),
            amount: 60.0,
            start_s: 0.0,
        });
        assert!(e.to_string().contains("half of tank_level's range"), "{e}");
        for bad in [f64::NAN, f64::INFINITY, 0.0] {
            err(Scenario::Step {
                signal: "tank_level".into(),
                amount: bad,
                start_s: 0.0,
            });
        }
        err(Scenario::Drift {
            signal: "tank_level".into(),
            amount: 1.0,
            ramp_s: 0.0,
            start_s: 0.0,
        });
        err(Scenario::Mitm {
            signal: "tank_level".into(),
            factor: 1.0,
            start_s: 0.0,
        });
        for start_s in [-1.0, 1e300, f64::NAN] {
            err(Scenario::Freeze {
                signal: "tank_level".into(),
                start_s,
            });
        }
        assert_eq!(
            err(Scenario::Replay {
                signals: vec![],
                record_s: 10.0,
                start_s: 0.0
            }),
            ScenarioError::NoSignals
        );
        err(Scenario::Replay {
            signals: vec!["tank_level".into()],
            record_s: 7200.0,
            start_s: 0.0,
        });
    }

    #[test]
    fn scenarios_read_and_write_json_with_a_kind_tag() {
        let s: Scenario = serde_json::from_str(
            r#"{"kind":"drift","signal":"tank_level","amount":8.0,"ramp_s":600}"#,
        )
        .expect("parses");
        assert_eq!(
            s,
            Scenario::Drift {
                signal: "tank_level".into(),
                amount: 8.0,
                ramp_s: 600.0,
                start_s: 0.0
            }
        );
        assert_eq!(s.label(), "drift:tank_level");
        let json = serde_json::to_string(&Scenario::Mitm {
            signal: "active_power".into(),
            factor: 0.8,
            start_s: 0.0,
        })
        .expect("serialises");
        assert_eq!(
            json,
            r#"{"kind":"mitm","signal":"active_power","factor":0.8,"start_s":0.0}"#
        );
        assert!(serde_json::from_str::<Scenario>(
            r#"{"kind":"freeze","signal":"tank_level","amount":1}"#
        )
        .is_err());
        let names: Vec<_> = Scenario::catalogue().iter().map(Scenario::name).collect();
        assert_eq!(names, ["drift", "step", "replay", "freeze", "mitm"]);
        for s in Scenario::catalogue() {
            s.targets().unwrap_or_else(|e| panic!("{}: {e}", s.label()));
            let back: Scenario =
                serde_json::from_str(&serde_json::to_string(&s).expect("ser")).expect("de");
            assert_eq!(back, s);
        }
    }

    #[test]
    fn every_attackable_signal_reads_and_writes_its_own_field() {
        let r = Plant::new(1).readings().clone();
        for def in attackable() {
            let v = reading(&r, def.signal).unwrap_or_else(|| panic!("{} readable", def.name));
            let mut changed = r.clone();
            set_reading(&mut changed, def.signal, v + 1.0);
            assert_eq!(reading(&changed, def.signal), Some(v + 1.0), "{}", def.name);
            // Exactly one field changed: the mapped value in the bank shows the change.
            assert_ne!(changed, r, "{}", def.name);
            assert_ne!(
                crate::bank::output_value(def, &changed),
                crate::bank::output_value(def, &r),
                "{}",
                def.name
            );
        }
    }
}
