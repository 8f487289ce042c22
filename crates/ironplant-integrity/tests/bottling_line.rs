//! The detectors at their defaults against the simulated bottling line (crate `ironplant-sim`),
//! read through the very register map and codec the Modbus connector uses: false findings over
//! simulated days of normal operation, and the time to detect attacks that stay inside the
//! engineering range (a slow drift, a step, a frozen sensor). Simulated time, no network.
//!
//! Tuned on seeds 1..=3 only; the long test also prints seeds 4 and 5 (never tuned on).

use std::time::Duration;

use ironplant_core::config::{parse_with, ModbusPoint, Registry};
use ironplant_core::{Namespace, Quality, Sample, TagId, Timestamp, Value};
use ironplant_integrity::{Change, Detector, Finding, Integrity, IntegrityConfig, Snapshot};
use ironplant_sim::attack::{Injector, Scenario};
use ironplant_sim::{apply_commands, new_bank, read_point, tick, write_readings, Plant};

const LINE: &str = "acme/lyon/bottling/line1";

/// The relations of the line, as an integrator would write them.
const INTEGRITY: &str = r#"
[integrity]
training = "2h"

# Bottles counted (good + rejects) against the filler's speed in bottles/min.
[[integrity.balance]]
id = "bottles"
lhs = [
  { tag = "acme/lyon/bottling/line1/filler/plc/good_count", op = "delta" },
  { tag = "acme/lyon/bottling/line1/filler/plc/reject_count", op = "delta" },
]
rhs = [{ tag = "acme/lyon/bottling/line1/filler/plc/speed_actual", op = "integral", gain = 0.0166666667 }]
window = "5m"
abs = 15
rel = 0.02
for = "30s"

# The energy meter's counter (kWh) against its power reading (kW).
[[integrity.balance]]
id = "energy"
lhs = [{ tag = "acme/lyon/bottling/line1/energy/meter/energy_total", op = "delta" }]
rhs = [{ tag = "acme/lyon/bottling/line1/energy/meter/active_power", op = "integral", gain = 0.000277777778 }]
window = "5m"
abs = 0.1
rel = 0.03
for = "30s"

# The 10 m³ buffer tank: 100 L per % of level against the flows in L/min.
[[integrity.balance]]
id = "tank"
lhs = [{ tag = "acme/lyon/bottling/line1/tank/plc/tank_level", op = "delta", gain = 100.0 }]
rhs = [
  { tag = "acme/lyon/bottling/line1/tank/plc/inflow", op = "integral", gain = 0.0166666667 },
  { tag = "acme/lyon/bottling/line1/tank/plc/outflow", op = "integral", gain = -0.0166666667 },
]
window = "5m"
abs = 40
rel = 0.05
for = "30s"

# The product warms 0.3 °C in the filler bowl: its temperature follows the tank's.
[[integrity.redundant]]
id = "product_temperature"
tags = ["acme/lyon/bottling/line1/filler/plc/product_temp", "acme/lyon/bottling/line1/tank/plc/tank_temp"]
abs = 1.0
for = "30s"
"#;

struct Line {
    plant: Plant,
    bank: ironplant_modbus::RegisterBank,
    points: Vec<(TagId, ModbusPoint)>,
    ns: Namespace,
    integrity: Integrity,
    t: i64,
    batch: Vec<Sample>,
}

/// What an attacker does to the readings between the PLC and the platform.
#[derive(Debug, Clone, Copy)]
enum Attack {
    None,
    /// × (1 + rate × minutes since start).
    Drift {
        tag: &'static str,
        per_min: f64,
    },
    Step {
        tag: &'static str,
        by: f64,
    },
    Freeze {
        tag: &'static str,
    },
    /// One sample off by `by`, then back.
    Spike {
        tag: &'static str,
        by: f64,
    },
}

fn config() -> (Namespace, IntegrityConfig, Vec<(String, ModbusPoint)>) {
    let example = include_str!("../../../examples/bottling.toml");
    let plant = example
        .rsplit_once("\n[[sparkplug.asset]]")
        .map_or(example, |(plant, _)| plant);
    // Exploration only: extra `[integrity]` keys from the environment (e.g. `settle = "120s"`).
    let extra = std::env::var("INTEGRITY_EXTRA").unwrap_or_default();
    let text = format!(
        "{plant}\n{}",
        INTEGRITY.replace("training = \"2h\"", &format!("training = \"2h\"\n{extra}"))
    );
    let registry = Registry::new().with::<IntegrityConfig>();
    let config = parse_with("bottling.toml", &text, &registry).unwrap_or_else(|e| panic!("{e}"));
    let points = config
        .tags
        .iter()
        .filter_map(|t| t.modbus.clone().map(|m| (t.path.as_str().to_owned(), m)))
        .collect();
    (
        config.namespace(),
        (*config.get::<IntegrityConfig>()).clone(),
        points,
    )
}

impl Line {
    fn new(seed: u64) -> Line {
        let (ns, cfg, points) = config();
        let integrity = Integrity::new(&ns, &cfg).unwrap_or_else(|e| panic!("{e:?}"));
        let points = points
            .into_iter()
            .filter_map(|(p, m)| ns.lookup(&p).map(|meta| (meta.id, m)))
            .collect();
        let bank = ironplant_modbus::RegisterBank {
            units: new_bank().lock().units.clone(),
        };
        Line {
            plant: Plant::new(seed),
            bank,
            points,
            ns,
            integrity,
            // 2026-12-07T00:00:00Z
            t: 1_796_601_600,
            batch: Vec::new(),
        }
    }

    fn id(&self, name: &str) -> TagId {
        self.ns
            .tags()
            .find(|m| m.path.name() == name && m.path.as_str().starts_with(LINE))
            .map(|m| m.id)
            .unwrap_or_else(|| panic!("no tag {name}"))
    }

    fn now(&self) -> Timestamp {
        Timestamp(self.t * 1_000_000)
    }

    /// One second of plant and platform; `attack` applies from `since` (seconds of the run).
    fn step(
        &mut self,
        attack: Attack,
        attacked: Option<(TagId, i64, &mut Option<Value>)>,
        out: &mut Vec<Finding>,
    ) {
        self.step_injected(None, attack, attacked, out);
    }

    /// [`Line::step`], with the simulator's own attack injector bending the PLC's readings.
    fn step_injected(
        &mut self,
        injector: Option<&mut Injector>,
        attack: Attack,
        attacked: Option<(TagId, i64, &mut Option<Value>)>,
        out: &mut Vec<Finding>,
    ) {
        match injector {
            None => tick(&mut self.bank, &mut self.plant, Duration::from_secs(1)),
            Some(inj) => {
                apply_commands(&self.bank, &mut self.plant);
                self.plant.step(Duration::from_secs(1));
                let mut shown = self.plant.readings().clone();
                inj.apply(self.plant.elapsed(), &mut shown);
                write_readings(&shown, &mut self.bank);
            }
        }
        self.t += 1;
        let now = self.now();
        self.batch.clear();
        for (id, point) in &self.points {
            let Some(value) = read_point(&self.bank, point) else {
                continue;
            };
            self.batch.push(Sample {
                tag: *id,
                value,
                quality: Quality::GOOD,
                source_ts: now,
                server_ts: now,
            });
        }
        if let Some((tag, since, held)) = attacked {
            if self.t >= since {
                let minutes = (self.t - since) as f64 / 60.0;
                for s in self.batch.iter_mut().filter(|s| s.tag == tag) {
                    let x = s.value.as_f64().unwrap_or(0.0);
                    s.value = match attack {
                        Attack::None => s.value.clone(),
                        Attack::Drift { per_min, .. } => {
                            Value::Float(x * (1.0 + per_min * minutes))
                        }
                        Attack::Step { by, .. } => Value::Float(x + by),
                        Attack::Freeze { .. } => {
                            held.get_or_insert_with(|| s.value.clone()).clone()
                        }
                        Attack::Spike { by, .. } if self.t == since => Value::Float(x + by),
                        Attack::Spike { .. } => s.value.clone(),
                    };
                }
            }
        }
        self.integrity.process(&mut self.batch, now, out);
        self.integrity.tick(now, out);
    }
}

fn describe(f: &Finding, start: i64) -> String {
    format!(
        "[{:>6} s] {} {} {}",
        f.at.0 / 1_000_000 - start,
        f.change.as_str(),
        f.id,
        f.explanation
    )
}

/// Runs `seed` for `secs` of normal operation; returns the findings raised after training.
fn normal(seed: u64, secs: i64) -> Vec<String> {
    let mut line = Line::new(seed);
    let start = line.t;
    let mut out = Vec::new();
    for _ in 0..secs {
        line.step(Attack::None, None, &mut out);
    }
    assert!(line.integrity.is_trained());
    out.iter()
        .filter(|f| f.change == Change::Raised)
        .map(|f| describe(f, start))
        .collect()
}

struct Detection {
    detector: Option<Detector>,
    after: Option<i64>,
    explanation: String,
}

/// Trains on seed `seed` (or restores `snap`), runs 10 minutes, then attacks for up to `limit`.
fn detect(seed: u64, snap: &Snapshot, attack: Attack, limit: i64) -> Detection {
    let mut line = Line::new(seed);
    line.integrity.restore(snap).expect("restore");
    let tag = match attack {
        Attack::Drift { tag, .. }
        | Attack::Step { tag, .. }
        | Attack::Freeze { tag }
        | Attack::Spike { tag, .. } => line.id(tag),
        Attack::None => TagId(u32::MAX),
    };
    let mut out = Vec::new();
    // The plant runs on from a fresh start: give the detectors 10 minutes of normal data.
    for _ in 0..600 {
        line.step(Attack::None, None, &mut out);
    }
    let before = out.iter().filter(|f| f.change == Change::Raised).count();
    let since = line.t + 1;
    let mut held = None;
    for _ in 0..limit {
        let n = out.len();
        line.step(attack, Some((tag, since, &mut held)), &mut out);
        if let Some(f) = out[n..].iter().find(|f| {
            f.change == Change::Raised && (f.tags.contains(&tag) || f.detector == Detector::Anomaly)
        }) {
            return Detection {
                detector: Some(f.detector),
                after: Some(line.t - since + 1),
                explanation: f.explanation.clone(),
            };
        }
    }
    Detection {
        detector: None,
        after: None,
        explanation: format!("{before} unrelated findings before the attack"),
    }
}

fn trained(seed: u64) -> Snapshot {
    let mut line = Line::new(seed);
    let mut out = Vec::new();
    for _ in 0..2 * 3600 + 1 {
        line.step(Attack::None, None, &mut out);
    }
    line.integrity.snapshot().expect("trained after the window")
}

const ATTACKS: [(&str, Attack); 7] = [
    (
        "drift +0.5 %/min on line_pressure",
        Attack::Drift {
            tag: "line_pressure",
            per_min: 0.005,
        },
    ),
    (
        "drift +0.5 %/min on product_temp",
        Attack::Drift {
            tag: "product_temp",
            per_min: 0.005,
        },
    ),
    (
        "step +0.1 bar on line_pressure",
        Attack::Step {
            tag: "line_pressure",
            by: 0.1,
        },
    ),
    ("frozen tank_level", Attack::Freeze { tag: "tank_level" }),
    (
        "drift +0.5 %/min on tank_level",
        Attack::Drift {
            tag: "tank_level",
            per_min: 0.005,
        },
    ),
    (
        "frozen good_count (a counter)",
        Attack::Freeze { tag: "good_count" },
    ),
    (
        "one-sample spike +0.5 bar on line_pressure",
        Attack::Spike {
            tag: "line_pressure",
            by: 0.5,
        },
    ),
];

fn attacks(seed: u64) -> Vec<(String, Detection)> {
    let snap = trained(seed);
    // The snapshot survives its JSON form (a restart reads it back from disk).
    let snap = Snapshot::from_json(&snap.to_json()).expect("round trip");
    let mut results: Vec<(String, Detection)> = ATTACKS
        .iter()
        .map(|(name, a)| (name.to_string(), detect(seed, &snap, *a, 1800)))
        .collect();
    results.extend(catalogue(seed, &snap));
    results
}

/// The simulator's own attack catalogue (what the detection report runs), injected at the PLC:
/// the first finding after the attack starts, whatever its detector.
fn catalogue(seed: u64, snap: &Snapshot) -> Vec<(String, Detection)> {
    Scenario::catalogue()
        .into_iter()
        .map(|scenario| {
            let mut line = Line::new(seed);
            line.integrity.restore(snap).expect("restore");
            let mut out = Vec::new();
            for _ in 0..600 {
                line.step(Attack::None, None, &mut out);
            }
            let before = out.len();
            let label = scenario.label();
            let mut inj =
                Injector::new(scenario, line.plant.elapsed()).expect("catalogue scenario");
            inj.prime(line.plant.readings());
            let begins = inj.begins();
            let mut found = None;
            for _ in 0..1800 {
                let n = out.len();
                line.step_injected(Some(&mut inj), Attack::None, None, &mut out);
                if let Some(f) = out[n..].iter().find(|f| f.change == Change::Raised) {
                    let after = line.plant.elapsed().saturating_sub(begins).as_secs() as i64;
                    found = Some(Detection {
                        detector: Some(f.detector),
                        after: Some(after),
                        explanation: f.explanation.clone(),
                    });
                    break;
                }
            }
            let d = found.unwrap_or(Detection {
                detector: None,
                after: None,
                explanation: format!("{before} findings before the attack"),
            });
            (format!("catalogue: {label}"), d)
        })
        .collect()
}

fn print_attacks(seed: u64, results: &[(String, Detection)]) {
    for (name, d) in results {
        match (d.detector, d.after) {
            (Some(det), Some(s)) => println!(
                "seed {seed}: {name}: detected by {det} after {s} s: {}",
                d.explanation
            ),
            _ => println!("seed {seed}: {name}: NOT DETECTED ({})", d.explanation),
        }
    }
}

#[test]
fn four_hours_of_normal_operation_raise_nothing_and_attacks_are_detected() {
    let findings = normal(1, 4 * 3600);
    for f in &findings {
        println!("seed 1 false finding: {f}");
    }
    assert!(
        findings.len() <= 1,
        "{} false findings in 2 h after training:\n{}",
        findings.len(),
        findings.join("\n")
    );
    let results = attacks(2);
    print_attacks(2, &results);
    for (name, d) in &results {
        assert!(d.after.is_some(), "{name} not detected: {}", d.explanation);
    }
}

/// The full check for the detection report: 24 simulated hours per seed.
#[test]
#[ignore = "about a minute per seed in a debug build; the lead runs it for the detection report"]
fn a_day_of_normal_operation_per_seed() {
    let mut total = 0;
    for seed in 1..=5u64 {
        let findings = normal(seed, 24 * 3600);
        let tuned = if seed <= 3 { "tuned" } else { "not tuned on" };
        println!(
            "seed {seed} ({tuned}): {} false findings in 22 h after 2 h of training",
            findings.len()
        );
        for f in &findings {
            println!("  {f}");
        }
        total += findings.len();
        print_attacks(seed, &attacks(seed));
    }
    assert!(total <= 5, "{total} false findings in 5 simulated days");
}

#[test]
#[ignore = "exploration"]
fn explore() {
    let seed: u64 = std::env::var("SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let hours: i64 = std::env::var("HOURS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6);
    let mut line = Line::new(seed);
    let start = line.t;
    let ms = line.id("machine_state");
    let mut out = Vec::new();
    let mut last_state = None;
    let mut last_change = 0;
    for _ in 0..hours * 3600 {
        let n = out.len();
        line.step(Attack::None, None, &mut out);
        let st = line
            .batch
            .iter()
            .find(|s| s.tag == ms)
            .map(|s| s.value.clone());
        if st != last_state {
            if last_state.is_some() {
                last_change = line.t - start;
            }
            last_state = st;
        }
        for f in &out[n..] {
            println!(
                "{} (last state change {} s before)",
                describe(f, start),
                line.t - start - last_change
            );
        }
    }
    if let Some(s) = line.integrity.snapshot() {
        for m in &s.models {
            println!(
                "{} phi {:.3} sigma {:.4} inflation {:.2} n {}",
                m.target, m.phi, m.sigma_u, m.inflation, m.n
            );
        }
    }
}
