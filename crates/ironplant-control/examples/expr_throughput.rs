//! Throughput of the computed-tags engine: 10,000 computed tags fed 10,000 input changes per
//! second (simulated time, manual clock), then as fast as one core goes; then the same for
//! 10,000 rules (`when a > x && b < y for 5s then event`).
//!
//! `cargo run --release -p ironplant-control --example expr_throughput [computed] [changes/s]`
//!
//! Prints evaluations per second and the share of one core used. A figure, not a test: the
//! lead moves it into `ironplant-bench`.
#![allow(clippy::print_stdout)]

use std::time::Instant;

use ironplant_control::expr::{
    compile, ActionDef, Computed, ComputedDef, NameIndex, NamespaceResolver, RuleDef, Rules,
    Template,
};
use ironplant_core::Severity;
use ironplant_core::{
    Namespace, Quality, Sample, TagId, TagMeta, TagPath, Timestamp, Value, ValueType,
};

fn meta(path: &str) -> TagMeta {
    TagMeta {
        id: TagId(0),
        path: TagPath::parse(path).expect("valid path"),
        value_type: ValueType::Float,
        unit: None,
        description: String::new(),
        range: None,
        writable: false,
        device: None,
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n_computed: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let rate: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let n_inputs = n_computed / 2;
    let mut ns = Namespace::new();
    let inputs: Vec<TagId> = (0..n_inputs)
        .map(|i| {
            ns.add_tag(meta(&format!("acme/lyon/plant/line{}/in/t{i}", i % 50)))
                .expect("room")
        })
        .collect();
    let outputs: Vec<TagId> = (0..n_computed)
        .map(|i| {
            ns.add_tag(meta(&format!("acme/lyon/plant/line{}/calc/c{i}", i % 50)))
                .expect("room")
        })
        .collect();
    let index = NameIndex::new(&ns);
    let resolver = NamespaceResolver {
        namespace: &ns,
        index: &index,
        scope: None,
    };
    let input = |k: usize| format!("`acme/lyon/plant/line{}/in/t{}`", k % 50, k);
    let mut defs = Vec::with_capacity(n_computed);
    for (i, out) in outputs.iter().enumerate() {
        let (a, b) = (input(i % n_inputs), input((i * 7 + 3) % n_inputs));
        let text = match i % 10 {
            0..=3 => format!("{a} * 1.5 + {b}"),
            4 | 5 => format!("{a} > {b} ? {a} - {b} : 0.0"),
            6 | 7 if i > 0 => format!(
                "`acme/lyon/plant/line{}/calc/c{}` * 0.5 + {a}",
                (i - 1) % 50,
                i - 1
            ),
            8 => format!("avg_over({a}, 1m)"),
            _ => format!("{a} / max({b}, 1.0) * 100"),
        };
        let expr = compile(&text, &resolver).expect("valid expression");
        defs.push(ComputedDef {
            output: *out,
            name: format!("c{i}"),
            value_type: ValueType::Float,
            expr,
        });
    }
    let t0 = Instant::now();
    let mut engine = Computed::new(defs).expect("no cycle");
    println!(
        "{n_computed} computed tags over {n_inputs} inputs, built in {:.1} ms",
        t0.elapsed().as_secs_f64() * 1e3
    );

    // Simulated time: batches every 10 ms, `rate` changes per second, ticks every second.
    let start = Timestamp(1_800_000_000_000_000);
    let seconds = 10;
    let per_batch = rate / 100;
    let mut out = Vec::with_capacity(4096);
    let mut busy = std::time::Duration::ZERO;
    let mut k = 0usize;
    let mut samples_out = 0usize;
    let before = engine.stats();
    for step in 0..seconds * 100 {
        let now = Timestamp(start.0 + step as i64 * 10_000);
        let batch: Vec<Sample> = (0..per_batch)
            .map(|j| {
                k = k.wrapping_add(7919);
                Sample {
                    tag: inputs[k % n_inputs],
                    value: Value::Float((k % 1000) as f64 + j as f64 * 0.01),
                    quality: Quality::GOOD,
                    source_ts: now,
                    server_ts: now,
                }
            })
            .collect();
        let t = Instant::now();
        out.clear();
        engine.process(&batch, now, &mut out);
        if step % 100 == 99 {
            engine.tick(now, &mut out);
        }
        busy += t.elapsed();
        samples_out += out.len();
    }
    let evals = engine.stats().evaluations - before.evaluations;
    let cpu = busy.as_secs_f64() / seconds as f64 * 100.0;
    println!(
        "simulated {seconds} s at {rate} changes/s: {evals} evaluations ({:.0}/s), {samples_out} samples out, busy {:.1} ms = {cpu:.2} % of one core",
        evals as f64 / seconds as f64,
        busy.as_secs_f64() * 1e3,
    );

    // Flat out: the same batches back to back.
    let t = Instant::now();
    let before = engine.stats().evaluations;
    let mut changes = 0usize;
    let mut step = 0i64;
    while t.elapsed().as_secs_f64() < 2.0 {
        let now = Timestamp(start.0 + (seconds as i64 * 100 + step) * 10_000);
        step += 1;
        let batch: Vec<Sample> = (0..per_batch)
            .map(|_| {
                k = k.wrapping_add(7919);
                Sample {
                    tag: inputs[k % n_inputs],
                    value: Value::Float((k % 1000) as f64),
                    quality: Quality::GOOD,
                    source_ts: now,
                    server_ts: now,
                }
            })
            .collect();
        changes += batch.len();
        out.clear();
        engine.process(&batch, now, &mut out);
    }
    let el = t.elapsed().as_secs_f64();
    let evals = engine.stats().evaluations - before;
    println!(
        "flat out: {:.0} evaluations/s, {:.0} input changes/s on one core",
        evals as f64 / el,
        changes as f64 / el
    );

    // Rules: as many as computed tags, each reading two inputs, half with a `for`.
    let mut defs = Vec::with_capacity(n_computed);
    for i in 0..n_computed {
        let (a, b) = (input(i % n_inputs), input((i * 13 + 5) % n_inputs));
        let when = compile(&format!("{a} > 700 && {b} < 300"), &resolver).expect("valid");
        defs.push(RuleDef {
            name: format!("r{i}"),
            when,
            hold: std::time::Duration::from_secs(if i % 2 == 0 { 0 } else { 5 }),
            actions: vec![ActionDef::RaiseEvent {
                severity: Severity::Warning,
                message: Template::compile(&format!("r{i}: {{{a}}} and {{{b}}}"), &resolver)
                    .expect("valid"),
            }],
        });
    }
    let name = |t: TagId| {
        ns.tag(t)
            .map_or_else(String::new, |m| m.path.as_str().to_owned())
    };
    let mut rules = Rules::new(defs, &name).expect("valid rules");
    let mut fired = Vec::new();
    let mut busy = std::time::Duration::ZERO;
    let mut n_fired = 0usize;
    let before = rules.evaluations();
    for step in 0..seconds * 100 {
        let now = Timestamp(start.0 + step as i64 * 10_000);
        let batch: Vec<Sample> = (0..per_batch)
            .map(|_| {
                k = k.wrapping_add(7919);
                Sample {
                    tag: inputs[k % n_inputs],
                    value: Value::Float((k % 1000) as f64),
                    quality: Quality::GOOD,
                    source_ts: now,
                    server_ts: now,
                }
            })
            .collect();
        let t = Instant::now();
        fired.clear();
        rules.process(&batch, now, &mut fired);
        if step % 100 == 99 {
            rules.tick(now, &mut fired);
        }
        busy += t.elapsed();
        n_fired += fired.len();
    }
    let evals = rules.evaluations() - before;
    println!(
        "{n_computed} rules, simulated {seconds} s at {rate} changes/s: {evals} condition evaluations ({:.0}/s), {n_fired} firings, busy {:.1} ms = {:.2} % of one core",
        evals as f64 / seconds as f64,
        busy.as_secs_f64() * 1e3,
        busy.as_secs_f64() / seconds as f64 * 100.0,
    );
}
