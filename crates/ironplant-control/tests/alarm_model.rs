//! Random runs of the engine (seeded, reproducible): invariants after every step, and a
//! restart at a random step (snapshot → JSON → restore) that must not change what follows.

use std::collections::HashMap;
use std::time::Duration;

use ironplant_control::alarm::persist::Snapshot;
use ironplant_control::alarm::{
    AlarmDef, AlarmEngine, AlarmState, Condition, EngineSettings, Setpoint, Transition,
};
use ironplant_core::{Quality, QualityReason, Sample, TagId, TagPath, Timestamp, Value};

/// A small deterministic generator (no dependency; xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const IDS: [&str; 6] = ["hi", "lo", "hihi_latch", "state", "dev", "cond"];

fn defs() -> Vec<AlarmDef> {
    let p = |s: &str| TagPath::parse(&format!("acme/site/area/line/cell/{s}")).expect("path");
    let mut hi = AlarmDef::new("hi", TagId(0), p("t0"), Condition::High { limit: 50.0 });
    hi.deadband = 5.0;
    hi.suppress = Some(TagId(4));
    let mut lo = AlarmDef::new("lo", TagId(0), p("t0"), Condition::Low { limit: 20.0 });
    lo.deadband = 2.0;
    lo.priority = 1;
    let mut hihi = AlarmDef::new(
        "hihi_latch",
        TagId(1),
        p("t1"),
        Condition::HighHigh { limit: 80.0 },
    );
    hihi.latching = true;
    let state = AlarmDef::new(
        "state",
        TagId(2),
        p("t2"),
        Condition::State {
            state: Value::Bool(true),
            equal: true,
        },
    );
    let mut dev = AlarmDef::new(
        "dev",
        TagId(1),
        p("t1"),
        Condition::Deviation {
            setpoint: Setpoint::Constant(50.0),
            band: 10.0,
        },
    );
    dev.deadband = 1.0;
    dev.suppress = Some(TagId(4));
    let cond = AlarmDef::new("cond", TagId(3), p("line"), Condition::Condition);
    vec![hi, lo, hihi, state, dev, cond]
}

#[derive(Debug, Clone)]
enum Op {
    Sample(Sample),
    Ack(usize),
    Shelve(usize, u64),
    Unshelve(usize),
    Remove(usize),
    Return(usize),
    Reset(usize),
    Tick,
}

fn op(rng: &mut Rng, now: Timestamp) -> Op {
    let alarm = rng.below(IDS.len() as u64) as usize;
    match rng.below(14) {
        0..=5 => {
            let tag = rng.below(5) as u32;
            let value = match tag {
                0 | 1 => Value::Float(rng.below(101) as f64),
                _ => Value::Bool(rng.below(2) == 0),
            };
            let quality = if rng.below(10) == 0 {
                Quality::bad(QualityReason::CommFailure)
            } else {
                Quality::GOOD
            };
            Op::Sample(Sample {
                tag: TagId(tag),
                value,
                quality,
                source_ts: now,
                server_ts: now,
            })
        }
        6 | 7 => Op::Ack(alarm),
        8 => Op::Shelve(alarm, 1 + rng.below(120)),
        9 => Op::Unshelve(alarm),
        10 => Op::Remove(alarm),
        11 => Op::Return(alarm),
        12 => Op::Reset(alarm),
        _ => Op::Tick,
    }
}

/// Applies an op; the transitions it caused, or the error's text.
fn apply(e: &mut AlarmEngine, op: &Op, now: Timestamp) -> Result<Vec<Transition>, String> {
    let one = |r: Result<Transition, _>| r.map(|t| vec![t]).map_err(|e| format!("{e}"));
    match op {
        Op::Sample(s) => Ok(e.on_samples(std::slice::from_ref(s), now)),
        Op::Ack(i) => one(e.ack(IDS[*i], "op", "c", now)),
        Op::Shelve(i, secs) => one(e.shelve(IDS[*i], Duration::from_secs(*secs), "op", "c", now)),
        Op::Unshelve(i) => one(e.unshelve(IDS[*i], "op", "c", now)),
        Op::Remove(i) => one(e.remove_from_service(IDS[*i], "op", "c", now)),
        Op::Return(i) => one(e.return_to_service(IDS[*i], "op", "c", now)),
        Op::Reset(i) => one(e.reset(IDS[*i], "op", "c", now)),
        Op::Tick => Ok(e.tick(now)),
    }
}

/// Transitions without the value (a restored engine has not seen a sample yet).
fn strip(ts: Result<Vec<Transition>, String>) -> Result<Vec<Transition>, String> {
    ts.map(|v| {
        v.into_iter()
            .map(|mut t| {
                t.value = None;
                t
            })
            .collect()
    })
}

fn check_invariants(e: &AlarmEngine, last: &HashMap<String, AlarmState>, ctx: &str) {
    let summary: Vec<String> = e.active().into_iter().map(|v| v.id).collect();
    for id in IDS {
        let state = e.state(id).expect("known alarm");
        let expected = last.get(id).copied().unwrap_or(AlarmState::Normal);
        assert_eq!(state, expected, "{ctx}: {id} state vs its last transition");
        assert_eq!(
            summary.iter().any(|s| s == id),
            state.is_annunciated(),
            "{ctx}: {id} on the summary"
        );
        let view = e.get(id).expect("view");
        // Acknowledged ⇔ the state says so, for the shown states.
        match state {
            AlarmState::Unacknowledged | AlarmState::ReturnToNormalUnacknowledged => {
                assert!(!view.acknowledged, "{ctx}: {id}")
            }
            AlarmState::Acknowledged | AlarmState::Normal => {
                assert!(view.acknowledged, "{ctx}: {id}")
            }
            _ => {}
        }
    }
}

#[test]
fn random_runs_keep_the_invariants_and_survive_a_restart_at_any_step() {
    for seed in 1..=300u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let mut a = AlarmEngine::new(defs(), EngineSettings::default());
        let mut b: Option<AlarmEngine> = None;
        let restart_at = rng.below(200) as usize;
        let mut now = Timestamp(1_800_000_000_000_000);
        let mut last: HashMap<String, AlarmState> = HashMap::new();
        for step in 0..250 {
            now = Timestamp(now.0 + rng.below(20_000_000) as i64);
            if step == restart_at {
                let json = a.snapshot(now).to_json();
                let snap = Snapshot::from_json(&json, std::path::Path::new("mem")).expect("json");
                let mut fresh = AlarmEngine::new(defs(), EngineSettings::default());
                let report = fresh.restore(&snap, now);
                assert_eq!(report.restored, IDS.len());
                // What the restore ends (shelves run out) is what a tick ends in the engine
                // that kept running.
                let ticked = a.tick(now);
                assert_eq!(
                    strip(Ok(ticked.clone())),
                    strip(Ok(report.transitions.clone())),
                    "seed {seed}: restore vs tick"
                );
                for t in ticked {
                    last.insert(t.alarm.to_string(), t.to);
                }
                b = Some(fresh);
            }
            let o = op(&mut rng, now);
            let ra = apply(&mut a, &o, now);
            let ctx = format!("seed {seed} step {step} {o:?}");
            if let Ok(ts) = &ra {
                for t in ts {
                    let prev = last.insert(t.alarm.to_string(), t.to);
                    assert_eq!(prev.unwrap_or(AlarmState::Normal), t.from, "{ctx}: chain");
                    assert_ne!(t.from, t.to, "{ctx}: a transition changes the state");
                }
            }
            check_invariants(&a, &last, &ctx);
            if let Some(b) = b.as_mut() {
                let rb = apply(b, &o, now);
                assert_eq!(strip(ra), strip(rb), "{ctx}: restored engine diverged");
            }
            // A tick at the same instant after the op changes nothing more than the op did.
            let extra = a.tick(now);
            if let Some(b) = b.as_mut() {
                assert_eq!(
                    strip(Ok(extra.clone())),
                    strip(Ok(b.tick(now))),
                    "{ctx}: tick"
                );
            }
            for t in extra {
                last.insert(t.alarm.to_string(), t.to);
            }
        }
    }
}
