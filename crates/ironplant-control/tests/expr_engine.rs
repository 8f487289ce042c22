//! Computed tags: incremental evaluation, cycles, time functions on a manual clock.

mod expr_support;

use expr_support::{bad, f, good, t, Tags, LINE};
use ironplant_control::expr::{compile, Computed, ComputedDef, ComputedError};
use ironplant_core::{Quality, QualityLevel, QualityReason, Sample, TagId, Value, ValueType};

/// Defines computed tags `(name, type, expr)` under the line, in order; returns the engine.
fn engine(tags: &mut Tags, defs: &[(&str, ValueType, &str)]) -> Result<Computed, ComputedError> {
    let ids: Vec<TagId> = defs
        .iter()
        .map(|(n, ty, _)| tags.add(&format!("{LINE}/{n}"), *ty))
        .collect();
    let defs = defs
        .iter()
        .zip(ids)
        .map(|((n, ty, text), id)| ComputedDef {
            output: id,
            name: format!("{LINE}/{n}"),
            value_type: *ty,
            expr: compile(text, &*tags).unwrap_or_else(|e| panic!("{text}: {e}")),
        })
        .collect();
    Computed::new(defs)
}

fn run(c: &mut Computed, batch: &[Sample], now: f64) -> Vec<Sample> {
    let mut out = Vec::new();
    c.process(batch, t(now), &mut out);
    out
}

fn tick(c: &mut Computed, now: f64) -> Vec<Sample> {
    let mut out = Vec::new();
    c.tick(t(now), &mut out);
    out
}

fn values(tags: &Tags, out: &[Sample]) -> Vec<(String, Value)> {
    out.iter()
        .map(|s| {
            (
                tags.name(s.tag).rsplit('/').next().unwrap_or("").to_owned(),
                s.value.clone(),
            )
        })
        .collect()
}

#[test]
fn only_affected_tags_are_evaluated_each_once_in_order() {
    let mut tags = Tags::line();
    let fl = ValueType::Float;
    // z reads x and y; both read inputs; w reads only energy. Defined out of order on purpose.
    let mut c = engine(
        &mut tags,
        &[
            ("z", fl, "x + y"),
            ("x", fl, "speed_actual * 2"),
            ("y", fl, "speed_setpoint + 1"),
            ("w", fl, "energy"),
        ],
    )
    .expect("valid");
    let sa = tags.id("speed_actual");
    let sp = tags.id("speed_setpoint");
    let en = tags.id("energy");
    let out = run(
        &mut c,
        &[good(sa, f(10.0), 1.0), good(sp, f(20.0), 2.0)],
        3.0,
    );
    assert_eq!(
        values(&tags, &out),
        [
            ("x".into(), f(20.0)),
            ("y".into(), f(21.0)),
            ("z".into(), f(41.0))
        ]
    );
    assert_eq!(
        c.stats().evaluations,
        3,
        "z once, though both its inputs changed"
    );
    // source_ts is the newest input's, server_ts is now.
    assert_eq!(out[2].source_ts, t(2.0));
    assert_eq!(out[2].server_ts, t(3.0));
    assert_eq!(out[0].source_ts, t(1.0));

    let out = run(&mut c, &[good(sa, f(11.0), 4.0)], 4.0);
    assert_eq!(
        values(&tags, &out),
        [("x".into(), f(22.0)), ("z".into(), f(43.0))]
    );
    assert_eq!(c.stats().evaluations, 5, "x and z only, not y nor w");

    let out = run(&mut c, &[good(en, f(7.0), 5.0)], 5.0);
    assert_eq!(values(&tags, &out), [("w".into(), f(7.0))]);
    assert_eq!(c.stats().evaluations, 6);

    // Its own outputs passed back (the extended batch): ignored, not re-evaluated.
    let again = run(&mut c, &out, 5.5);
    assert!(again.is_empty());
    assert_eq!(c.stats().evaluations, 6);

    // A tag no expression reads: nothing.
    let out = run(
        &mut c,
        &[good(tags.id("recipe"), Value::String("x".into()), 6.0)],
        6.0,
    );
    assert!(out.is_empty());
    assert_eq!(c.stats().evaluations, 6);
    assert_eq!(c.stats().samples_out, 6);
}

#[test]
fn cycles_are_refused_naming_the_whole_cycle() {
    let mut tags = Tags::line();
    let fl = ValueType::Float;
    let err = engine(
        &mut tags,
        &[
            ("ok", fl, "energy"),
            ("a", fl, "b + 1"),
            ("b", fl, "c * ok"),
            ("c", fl, "a"),
        ],
    )
    .expect_err("cycle");
    let ComputedError::Cycle { defs, names } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(defs, &[1, 2, 3]);
    assert_eq!(names.len(), 4);
    assert_eq!(
        err.to_string(),
        format!("computed tags form a cycle: {LINE}/a → {LINE}/b → {LINE}/c → {LINE}/a")
    );
    let mut tags = Tags::line();
    let err = engine(&mut tags, &[("self", fl, "self + 1")]).expect_err("self loop");
    assert_eq!(
        err.to_string(),
        format!("computed tags form a cycle: {LINE}/self → {LINE}/self")
    );
}

#[test]
fn bad_inputs_propagate_and_are_explained() {
    let mut tags = Tags::line();
    let mut c = engine(
        &mut tags,
        &[
            (
                "efficiency",
                ValueType::Float,
                "speed_actual / speed_setpoint",
            ),
            ("efficiency_pct", ValueType::Float, "efficiency * 100"),
            ("net", ValueType::Float, "bottles - rejects"),
        ],
    )
    .expect("valid");
    let (sa, sp) = (tags.id("speed_actual"), tags.id("speed_setpoint"));
    let out = run(
        &mut c,
        &[good(sa, f(9.0), 1.0), good(sp, f(12.0), 1.0)],
        1.0,
    );
    assert_eq!(out[1].value, f(75.0));
    let out = run(&mut c, &[bad(sp, QualityReason::CommFailure, 2.0)], 2.0);
    assert_eq!(out.len(), 2);
    for s in &out {
        assert_eq!(s.quality, Quality::bad(QualityReason::CommFailure));
    }
    // A Bad result keeps the last Good value (OPC UA style), never a made-up one.
    assert_eq!(out[0].value, f(0.75));
    let name = |t: TagId| tags.name(t);
    assert_eq!(
        c.explain(out[1].tag, &name).as_deref(),
        Some("acme/lyon/bottling/line1/efficiency_pct is Bad(CommFailure): input acme/lyon/bottling/line1/speed_setpoint is Bad(CommFailure)")
    );
    // Division by zero: Bad, with the reason.
    let out = run(&mut c, &[good(sp, f(0.0), 3.0)], 3.0);
    assert_eq!(out[0].quality.level, QualityLevel::Bad);
    assert_eq!(
        c.explain(out[0].tag, &name).as_deref(),
        Some("acme/lyon/bottling/line1/efficiency is Bad(CalculationFailed): division by zero in `speed_actual / speed_setpoint`")
    );
    // The int expression feeds a float tag as a float; no value yet is Bad.
    let out = run(
        &mut c,
        &[good(tags.id("bottles"), Value::Int(10), 4.0)],
        4.0,
    );
    assert_eq!(out[0].quality.level, QualityLevel::Bad);
    assert_eq!(out[0].value, Value::Null, "never had a value");
    let out = run(&mut c, &[good(tags.id("rejects"), Value::Int(3), 5.0)], 5.0);
    assert_eq!(
        (out[0].value.clone(), out[0].quality),
        (f(7.0), Quality::GOOD)
    );
    assert_eq!(c.explain(out[0].tag, &name), None);
}

#[test]
fn time_functions_follow_the_manual_clock() {
    let mut tags = Tags::line();
    let fl = ValueType::Float;
    let mut c = engine(
        &mut tags,
        &[
            ("bottle_rate", fl, "rate(bottles)"),
            ("speed_avg", fl, "avg_over(speed_actual, 1m)"),
            ("energy_1h", fl, "delta_over(energy, 1h)"),
            ("run_time", fl, "time_in_state(running)"),
            ("recipe_changed", ValueType::Bool, "changed(recipe)"),
            ("last_recipe", ValueType::String, "prev(recipe)"),
        ],
    )
    .expect("valid");
    assert!(c.needs_tick());
    let id = |n: &str| tags.id(n);
    let by = |out: &[Sample], n: &str| -> Option<Sample> {
        out.iter().find(|s| s.tag == tags.id(n)).cloned()
    };
    // rate: 100 bottles at t=0, 150 at t=10 → 5 per second; Bad before the second sample.
    let out = run(&mut c, &[good(id("bottles"), Value::Int(100), 0.0)], 0.0);
    assert_eq!(
        by(&out, "bottle_rate").map(|s| s.quality.level),
        Some(QualityLevel::Bad)
    );
    let out = run(&mut c, &[good(id("bottles"), Value::Int(150), 10.0)], 10.0);
    assert_eq!(by(&out, "bottle_rate").map(|s| s.value), Some(f(5.0)));

    // avg_over(1m): 10 from t=0, 20 from t=30. At t=30 the window [-30, 30] is not covered.
    let sa = id("speed_actual");
    let _ = run(&mut c, &[good(sa, f(10.0), 0.0)], 0.0);
    let out = run(&mut c, &[good(sa, f(20.0), 30.0)], 30.0);
    let s = by(&out, "speed_avg").expect("evaluated");
    assert_eq!(
        (s.value, s.quality.level),
        (f(10.0), QualityLevel::Uncertain)
    );
    // At t=60 the window [0, 60] holds 10 for 30 s and 20 for 30 s: 15, Good.
    let out = tick(&mut c, 60.0);
    let s = by(&out, "speed_avg").expect("changed on the tick");
    assert_eq!((s.value, s.quality), (f(15.0), Quality::GOOD));
    assert_eq!(s.source_ts, t(60.0));
    // At t=75: [15, 75] → 10 for 15 s, 20 for 45 s = 17.5.
    let out = tick(&mut c, 75.0);
    assert_eq!(by(&out, "speed_avg").map(|s| s.value), Some(f(17.5)));
    // At t=90 and later the window holds only 20.
    let out = tick(&mut c, 90.0);
    assert_eq!(by(&out, "speed_avg").map(|s| s.value), Some(f(20.0)));
    let out = tick(&mut c, 95.0);
    assert_eq!(
        by(&out, "speed_avg"),
        None,
        "unchanged: no sample on a tick"
    );

    // delta_over(1h): energy 1000 at t=0, 1300 at t=1800, 1500 at t=3600: +500 over the hour.
    let en = id("energy");
    let _ = run(&mut c, &[good(en, f(1000.0), 0.0)], 0.0);
    let _ = run(&mut c, &[good(en, f(1300.0), 1800.0)], 1800.0);
    let out = run(&mut c, &[good(en, f(1500.0), 3600.0)], 3600.0);
    let s = by(&out, "energy_1h").expect("evaluated");
    assert_eq!((s.value, s.quality), (f(500.0), Quality::GOOD));
    // At 5400 the window starts at 1800: 1500 - 1300.
    let out = tick(&mut c, 5400.0);
    assert_eq!(by(&out, "energy_1h").map(|s| s.value), Some(f(200.0)));

    // time_in_state: running from t=100, ticks count the seconds, false resets to 0.
    let r = id("running");
    let out = run(&mut c, &[good(r, Value::Bool(true), 100.0)], 100.0);
    assert_eq!(by(&out, "run_time").map(|s| s.value), Some(f(0.0)));
    assert_eq!(
        by(&tick(&mut c, 105.0), "run_time").map(|s| s.value),
        Some(f(5.0))
    );
    assert_eq!(
        by(&tick(&mut c, 107.5), "run_time").map(|s| s.value),
        Some(f(7.5))
    );
    // A repeated true sample does not restart the count.
    let out = run(&mut c, &[good(r, Value::Bool(true), 108.0)], 108.0);
    assert_eq!(by(&out, "run_time").map(|s| s.value), Some(f(8.0)));
    let out = run(&mut c, &[good(r, Value::Bool(false), 110.0)], 110.0);
    assert_eq!(by(&out, "run_time").map(|s| s.value), Some(f(0.0)));
    assert_eq!(by(&tick(&mut c, 120.0), "run_time"), None, "still 0");

    // changed / prev see samples, not evaluations.
    let rc = id("recipe");
    let s = |v: &str, at: f64| good(rc, Value::String(v.into()), at);
    let out = run(&mut c, &[s("cola", 1.0)], 1.0);
    assert_eq!(
        by(&out, "recipe_changed").map(|s| s.value),
        Some(Value::Bool(false))
    );
    assert_eq!(
        by(&out, "last_recipe").map(|s| s.quality.level),
        Some(QualityLevel::Bad)
    );
    let out = run(&mut c, &[s("lemon", 2.0)], 2.0);
    assert_eq!(
        by(&out, "recipe_changed").map(|s| s.value),
        Some(Value::Bool(true))
    );
    assert_eq!(
        by(&out, "last_recipe").map(|s| s.value),
        Some(Value::String("cola".into()))
    );
    let out = run(&mut c, &[s("lemon", 3.0)], 3.0);
    assert_eq!(
        by(&out, "recipe_changed").map(|s| s.value),
        Some(Value::Bool(false))
    );
    assert_eq!(
        by(&out, "last_recipe").map(|s| s.value),
        Some(Value::String("lemon".into()))
    );
}

#[test]
fn window_memory_is_bounded_and_keeps_the_integral() {
    let mut tags = Tags::line();
    let mut c = engine(
        &mut tags,
        &[("avg", ValueType::Float, "avg_over(speed_actual, 1h)")],
    )
    .expect("valid");
    let sa = tags.id("speed_actual");
    // 5,000 samples in one hour (more than MAX_WINDOW_SAMPLES) alternating 0 and 10: the
    // average is 5, whatever the merging.
    let n = 5_000;
    let mut last = None;
    for i in 0..=n {
        let at = f64::from(i) * 3600.0 / f64::from(n);
        let v = if i % 2 == 0 { 0.0 } else { 10.0 };
        last = run(&mut c, &[good(sa, f(v), at)], at).pop();
    }
    let s = last.expect("a sample");
    let Value::Float(avg) = s.value else {
        panic!("{s:?}")
    };
    assert!((avg - 5.0).abs() < 0.01, "{avg}");
}

#[test]
fn the_engine_is_a_processor_on_the_bus() {
    use ironplant_core::{Processor, ProcessorOutput};
    fn send<T: Send + 'static>(_: &T) {}
    let mut tags = Tags::line();
    let mut c = engine(
        &mut tags,
        &[
            ("eff", ValueType::Float, "speed_actual / speed_setpoint"),
            ("run_time", ValueType::Float, "time_in_state(running)"),
        ],
    )
    .expect("valid");
    send(&c);
    assert_eq!(
        Processor::tick_interval(&c),
        Some(std::time::Duration::from_secs(1))
    );
    let (sa, sp, r) = (
        tags.id("speed_actual"),
        tags.id("speed_setpoint"),
        tags.id("running"),
    );
    let mut batch = vec![
        good(sa, f(3.0), 1.0),
        good(sp, f(4.0), 1.0),
        good(r, Value::Int(1), 1.0),
    ];
    let mut out = ProcessorOutput::default();
    Processor::process(&mut c, &mut batch, t(1.0), &mut out);
    assert_eq!(batch.len(), 5, "the computed samples follow their inputs");
    assert_eq!(batch[3].value, f(0.75));
    assert_eq!(batch[4].value, f(0.0), "a 0/1 integer reads as a bool");
    let mut ticked = Vec::new();
    Processor::tick(&mut c, t(4.0), &mut ticked, &mut out);
    assert_eq!(values(&tags, &ticked), [("run_time".into(), f(3.0))]);
}

#[test]
fn timestamps_from_another_age_do_not_panic() {
    let mut tags = Tags::line();
    let mut c = engine(
        &mut tags,
        &[
            ("r", ValueType::Float, "rate(speed_actual)"),
            ("a", ValueType::Float, "avg_over(speed_actual, 1m)"),
            ("d", ValueType::Float, "delta_over(speed_actual, 1m)"),
        ],
    )
    .expect("valid");
    let sa = tags.id("speed_actual");
    let mut out = Vec::new();
    for (i, ts) in [i64::MIN, 1, i64::MAX - 1, i64::MAX]
        .into_iter()
        .enumerate()
    {
        let mut s = good(sa, f(i as f64), 0.0);
        s.source_ts = ironplant_core::Timestamp(ts);
        c.process(&[s], t(1.0), &mut out);
        c.tick(ironplant_core::Timestamp(ts), &mut out);
    }
    for s in &out {
        if let Value::Float(x) = s.value {
            assert!(
                x.is_finite() || s.quality.level == QualityLevel::Bad,
                "{s:?}"
            );
        }
    }
}
