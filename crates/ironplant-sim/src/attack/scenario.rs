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
        if !(start.is_finite() && start >= 0.0) {
            return Err(bad("start_s", start, "a delay in seconds, 0 or more"));
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
                if def.unit.is_empty() { "units" } else { def.unit },
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
    let count = |v: f64| if v.is_finite() { v.round().max(0.0) as u64 } else { 0 };
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
