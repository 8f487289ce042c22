//! `ironplant-bench rules`: the cost of local logic on a running platform.
//!
//! One platform per scenario, built from a generated config: `inputs` float tags, then either
//! nothing (the baseline), `rules` `[[rule]]`s (`when = "a > 700 && b < 300"`, half held
//! for 5 s, each raising an event), and `alarms` high alarms with deadband and on-delay. The
//! load publishes `rate` changes a second at a fixed pace (100 batches a second, values with
//! jitter around a slow wave), as a plant's connectors do, for `seconds`. CPU is this
//! process's (every thread: the publisher, the bus and its processors, the event bus), so
//! the logic's cost is the difference to the baseline in the same run. Then a flood: every
//! alarm crosses its limit in one batch; the time until each `raised` event reached an event
//! subscriber gives alarm events/s (and again for the acknowledgements and the clears).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use ironplant_core::{EventFilter, EventKind, Quality, Sample, TagId, Timestamp, Value};
use ironplant_runtime::alarms::Operation;
use ironplant_runtime::Platform;

/// Batches a second at the fixed rate.
const BATCHES_PER_SECOND: u64 = 100;

fn config(inputs: usize, rules: usize, alarms: usize) -> String {
    let mut c = String::new();
    for i in 0..inputs {
        let _ = writeln!(
            c,
            "[[tag]]\npath = \"acme/lyon/plant/line{}/sensors/t{i}\"\n",
            i % 50
        );
    }
    let tag = |k: usize| format!("`acme/lyon/plant/line{}/sensors/t{}`", k % 50, k);
    for r in 0..rules {
        let (a, b) = (tag(r % inputs), tag((r * 7 + 3) % inputs));
        let hold = if r % 2 == 0 { "" } else { "for = \"5s\"\n" };
        let _ = writeln!(
            c,
            "[[rule]]\nname = \"r{r}\"\nwhen = \"{a} > 700 && {b} < 300\"\n{hold}then = [{{ event = \"r{r} fired\", severity = \"info\" }}]\n"
        );
    }
    for a in 0..alarms {
        let k = a % inputs;
        let _ = writeln!(
            c,
            "[[alarm]]\nid = \"a{a}\"\ntag = \"acme/lyon/plant/line{}/sensors/t{k}\"\nkind = \"high\"\nlimit = 2000.0\ndeadband = 5.0\non_delay = \"0s\"\npriority = {}\nmessage = \"t{k} high\"\n",
            k % 50,
            1 + a % 4
        );
    }
    c
}

/// A sensor-like value: a slow wave per tag with jitter, in 0..1000.
fn value(tag: usize, step: u64, seed: &mut u64) -> f64 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let jitter = ((*seed >> 33) % 1000) as f64 / 100.0 - 5.0;
    let wave = ((step as f64 / 50.0) + tag as f64).sin();
    (500.0 + 450.0 * wave + jitter).clamp(0.0, 1000.0)
}

struct Run {
    cpu: Duration,
    wall: Duration,
    changes: u64,
    events: u64,
}

/// Runs one platform at the fixed rate and measures it.
async fn run(
    inputs: usize,
    rules: usize,
    alarms: usize,
    rate: u64,
    seconds: u64,
) -> anyhow::Result<Run> {
    let text = config(inputs, rules, alarms);
    let cfg = ironplant_runtime::config::parse("bench-rules.toml", &text)
        .map_err(|e| anyhow::anyhow!("the generated config is invalid: {e}"))?;
    let platform = Platform::builder(cfg, None)
        .start()
        .context("cannot start the platform")?;
    let bus = platform.runtime.bus.clone();
    let mut events = platform
        .runtime
        .events
        .subscribe("bench", 1 << 16, EventFilter::all());
    let seen = Arc::new(AtomicU64::new(0));
    let counter = tokio::spawn({
        let seen = seen.clone();
        async move {
            while events.recv().await.is_some() {
                seen.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    let per_batch = (rate / BATCHES_PER_SECOND).max(1) as usize;
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / BATCHES_PER_SECOND));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut seed = 42u64;
    let mut k = 0usize;
    let cpu0 = crate::bench::process_cpu()?;
    let t0 = Instant::now();
    let mut changes = 0u64;
    for step in 0..seconds * BATCHES_PER_SECOND {
        tick.tick().await;
        let now = Timestamp::now();
        let batch: Vec<Sample> = (0..per_batch)
            .map(|_| {
                k = (k + 7919) % inputs;
                Sample {
                    tag: TagId(k as u32),
                    value: Value::Float(value(k, step, &mut seed)),
                    quality: Quality::GOOD,
                    source_ts: now,
                    server_ts: now,
                }
            })
            .collect();
        changes += batch.len() as u64;
        bus.publish(batch).await;
    }
    let wall = t0.elapsed();
    let cpu = crate::bench::process_cpu()?.saturating_sub(cpu0);
    let events = seen.load(Ordering::Relaxed);
    counter.abort();
    platform.shutdown(Duration::from_secs(5)).await;
    Ok(Run {
        cpu,
        wall,
        changes,
        events,
    })
}

/// Every alarm raised in one batch, then acknowledged, then cleared: events/s of each.
async fn flood(inputs: usize, alarms: usize) -> anyhow::Result<Vec<(String, usize, Duration)>> {
    let cfg = ironplant_runtime::config::parse("bench-flood.toml", &config(inputs, 0, alarms))
        .map_err(|e| anyhow::anyhow!("the generated config is invalid: {e}"))?;
    let platform = Platform::builder(cfg, None)
        .start()
        .context("cannot start the platform")?;
    let runtime = platform.runtime.clone();
    let engine = runtime.alarms.clone().context("no alarms")?;
    let mut events = runtime.events.subscribe(
        "bench",
        4 * alarms + 16,
        EventFilter {
            kinds: vec![EventKind::Alarm],
            ..EventFilter::default()
        },
    );
    let publish_all = |v: f64| {
        let now = Timestamp::now();
        (0..inputs.min(alarms))
            .map(|k| Sample {
                tag: TagId(k as u32),
                value: Value::Float(v),
                quality: Quality::GOOD,
                source_ts: now,
                server_ts: now,
            })
            .collect::<Vec<_>>()
    };
    let mut out = Vec::new();
    let mut wait = |label: &str, t0: Instant, n: usize| {
        out.push((label.to_owned(), n, t0.elapsed()));
    };
    // Normal first, so every alarm starts from a value.
    runtime.bus.publish(publish_all(10.0)).await;
    let t0 = Instant::now();
    runtime.bus.publish(publish_all(5000.0)).await;
    let raised = collect(&mut events, alarms).await;
    wait("raised (one batch crosses every limit)", t0, raised);
    let t0 = Instant::now();
    let ids: Vec<String> = engine.active().into_iter().map(|v| v.id).collect();
    let ack = tokio::task::spawn_blocking({
        let engine = engine.clone();
        move || {
            ids.iter()
                .filter(|id| {
                    engine
                        .operate(id, &Operation::Ack, "bench", "flood drill")
                        .is_ok()
                })
                .count()
        }
    })
    .await?;
    let acked = collect(&mut events, ack).await;
    wait("acknowledged (one API call each)", t0, acked);
    let t0 = Instant::now();
    runtime.bus.publish(publish_all(10.0)).await;
    let cleared = collect(&mut events, alarms).await;
    wait("cleared (one batch returns every value)", t0, cleared);
    platform.shutdown(Duration::from_secs(5)).await;
    Ok(out)
}

/// Waits for `n` events (at most 30 s); how many arrived.
async fn collect(events: &mut ironplant_core::EventSubscription, n: usize) -> usize {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut got = 0;
    while got < n {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(_)) => got += 1,
            _ => break,
        }
    }
    got
}

pub async fn bench_rules(
    rules: usize,
    alarms: usize,
    rate: u64,
    seconds: u64,
) -> anyhow::Result<()> {
    let inputs = 5_000;
    println!(
        "ironplant bench rules: {inputs} input tags, {rate} changes/s in {BATCHES_PER_SECOND} batches/s for {seconds} s per scenario; CPU of this process (all threads)"
    );
    println!();
    let scenarios = [
        ("baseline: bus, no logic", 0, 0),
        ("alarms only", 0, alarms),
        ("rules + alarms", rules, alarms),
    ];
    let mut rows = Vec::new();
    let mut base = None;
    let mut logic_cpu = 0.0;
    for (label, r, a) in scenarios {
        eprintln!("running: {label}");
        let m = run(inputs, r, a, rate, seconds).await?;
        let cores = m.cpu.as_secs_f64() / m.wall.as_secs_f64();
        let extra = base.map_or(0.0, |b: f64| cores - b);
        if base.is_none() {
            base = Some(cores);
        }
        if r > 0 {
            logic_cpu = extra;
        }
        rows.push([
            label.to_owned(),
            r.to_string(),
            a.to_string(),
            format!("{:.0}", m.changes as f64 / m.wall.as_secs_f64()),
            format!("{:.1} %", cores * 100.0),
            if base == Some(cores) {
                "-".to_owned()
            } else {
                format!("{:+.1} %", extra * 100.0)
            },
            format!("{:.0}", m.events as f64 / m.wall.as_secs_f64()),
        ]);
    }
    crate::bench::print_table(
        [
            "scenario",
            "rules",
            "alarms",
            "changes/s",
            "CPU (one core = 100 %)",
            "over baseline",
            "events/s",
        ],
        &rows,
    );
    println!();
    let per_1000 = if rules > 0 {
        logic_cpu * 100.0 / (rules as f64 / 1000.0)
    } else {
        0.0
    };
    println!(
        "CPU per 1,000 rules at {rate} changes/s (with {alarms} alarms): {per_1000:.2} % of one core"
    );
    let floods = flood(inputs, alarms).await?;
    println!();
    let rows: Vec<[String; 3]> = floods
        .iter()
        .map(|(label, n, d)| {
            [
                label.clone(),
                n.to_string(),
                format!("{:.0}", *n as f64 / d.as_secs_f64().max(1e-9)),
            ]
        })
        .collect();
    crate::bench::print_table(["alarm flood", "events", "events/s"], &rows);
    println!();
    println!(
        "target: {rules} rules and {alarms} alarms at {rate} changes/s under 10 % of one core over the baseline — {}",
        if logic_cpu < 0.10 { "met" } else { "MISSED" }
    );
    println!("bias: a generated config (two-input rules, high alarms) on one process; the load is our own publisher on the bus (no connector, no historian), so the baseline is small and the difference is the logic's own cost; events go to one in-process subscriber.");
    Ok(())
}
