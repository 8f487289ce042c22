//! A 1,000-alarm flood: how many alarm transitions per second the engine turns out, and what
//! the quiet hot path costs (10,000 samples/s on tags with alarms that do not change state).
//!
//! `cargo run --release -p ironplant-control --example alarm_flood [ALARMS] [ROUNDS]`
//! (to be moved into ironplant-bench).

use std::time::{Duration, Instant};

use ironplant_control::alarm::{AlarmDef, AlarmEngine, Condition, EngineSettings};
use ironplant_core::{Quality, Sample, TagId, TagPath, Timestamp, Value};

fn main() {
    let mut args = std::env::args().skip(1);
    let alarms: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let rounds: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(200);
    let defs: Vec<AlarmDef> = (0..alarms)
        .map(|i| {
            let path = TagPath::parse(&format!("acme/lyon/bottling/line{}/cell/dev/t{i}", i % 7))
                .expect("a valid path");
            let mut d = AlarmDef::new(
                &format!("a{i}"),
                TagId(i),
                path,
                Condition::High { limit: 50.0 },
            );
            d.deadband = 1.0;
            d.priority = u8::try_from(i % 4 + 1).expect("1..=4");
            d
        })
        .collect();
    let mut engine = AlarmEngine::new(defs, EngineSettings::default());
    let batch = |x: f64, at: Timestamp| -> Vec<Sample> {
        (0..alarms)
            .map(|i| Sample {
                tag: TagId(i),
                value: Value::Float(x),
                quality: Quality::GOOD,
                source_ts: at,
                server_ts: at,
            })
            .collect()
    };
    let high = batch(90.0, Timestamp(0));
    let low = batch(10.0, Timestamp(0));
    // Flood: every alarm raised, acknowledged, cleared, each round.
    let mut transitions = 0usize;
    let mut now = 1_800_000_000_000_000i64;
    let started = Instant::now();
    let ids: Vec<String> = (0..alarms).map(|i| format!("a{i}")).collect();
    let mut out = Vec::new();
    for _ in 0..rounds {
        now += 1_000_000;
        out.clear();
        engine.on_samples_into(&high, Timestamp(now), &mut out);
        transitions += out.len();
        for id in &ids {
            if engine.ack(id, "bench", "flood", Timestamp(now)).is_ok() {
                transitions += 1;
            }
        }
        now += 1_000_000;
        out.clear();
        engine.on_samples_into(&low, Timestamp(now), &mut out);
        transitions += out.len();
    }
    let flood = started.elapsed();
    println!(
        "flood: {alarms} alarms, {transitions} transitions (raise, ack, clear) in {:.3} s: {:.0} transitions/s",
        flood.as_secs_f64(),
        transitions as f64 / flood.as_secs_f64()
    );
    let events = Instant::now();
    let mut n = 0;
    for t in engine.history().take(100_000) {
        n += t.to_event().attributes.len();
    }
    println!(
        "to_event: {:.0} events/s ({n} attributes)",
        engine.history().take(100_000).count() as f64 / events.elapsed().as_secs_f64()
    );
    // Quiet: values moving inside the normal band, no transition.
    let quiet: Vec<Vec<Sample>> = (0..10)
        .map(|k| batch(20.0 + f64::from(k), Timestamp(0)))
        .collect();
    let started = Instant::now();
    let mut samples = 0u64;
    let mut changes = 0usize;
    while started.elapsed() < Duration::from_secs(1) {
        for b in &quiet {
            now += 1000;
            out.clear();
            engine.on_samples_into(b, Timestamp(now), &mut out);
            changes += out.len();
            samples += b.len() as u64;
        }
    }
    let per_sample = started.elapsed().as_secs_f64() / samples as f64;
    println!(
        "quiet: {:.1} M samples/s ({:.0} ns a sample, {changes} transitions); 10,000 samples/s cost {:.3} % of one core",
        samples as f64 / started.elapsed().as_secs_f64() / 1e6,
        per_sample * 1e9,
        per_sample * 10_000.0 * 100.0
    );
    // The snapshot the runtime writes after a batch of transitions.
    let started = Instant::now();
    let snap = engine.snapshot(Timestamp(now));
    let json = snap.to_json();
    let serialise = started.elapsed();
    let dir = std::env::temp_dir().join(format!("alarm_flood_{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("alarms.json");
    let started = Instant::now();
    let writes = 20;
    for _ in 0..writes {
        ironplant_control::alarm::persist::write_atomic(&file, &json).expect("write");
    }
    let write = started.elapsed() / writes;
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "snapshot of {alarms} alarms: {} KiB, built and serialised in {:.2} ms, written atomically (fsync) in {:.2} ms",
        json.len() / 1024,
        serialise.as_secs_f64() * 1e3,
        write.as_secs_f64() * 1e3
    );
    let started = Instant::now();
    let ticks = 10_000;
    for _ in 0..ticks {
        now += 100_000;
        engine.tick(Timestamp(now));
    }
    println!(
        "tick over {alarms} alarms: {:.1} µs",
        started.elapsed().as_secs_f64() * 1e6 / f64::from(ticks)
    );
}
