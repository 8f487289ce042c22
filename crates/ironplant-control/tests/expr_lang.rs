//! The expression language: errors with spans, values, quality propagation, never a panic.

mod expr_support;

use std::collections::HashMap;

use expr_support::{bad, f, good, t, Tags};
use ironplant_control::expr::{compile, CauseKind, Expr, Outcome, Type, Val};
use ironplant_core::{Quality, QualityLevel, QualityReason, Sample, TagId, Timestamp, Value};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

fn err_at(text: &str) -> (String, String) {
    let tags = Tags::line();
    let e = compile(text, &tags).expect_err(text);
    (text[e.span.range()].to_owned(), e.message)
}

#[test]
fn errors_carry_the_span_of_the_fault() {
    let (at, msg) = err_at("speed_actul / speed_setpoint");
    assert_eq!(at, "speed_actul");
    assert_eq!(
        msg,
        "unknown tag `speed_actul` (no tag acme/lyon/bottling/line1/speed_actul)"
    );
    let (at, msg) = err_at("running + 1");
    assert_eq!(at, "running");
    assert_eq!(msg, "`+` needs a number, but this is a bool");
    let (at, msg) = err_at("clamp(speed_actual, 0)");
    assert_eq!(at, "clamp(speed_actual, 0)");
    assert_eq!(msg, "clamp() takes 3 arguments, but 2 were given");
    let (at, msg) = err_at("abs(speed_actual, 1)");
    assert_eq!(at, "abs(speed_actual, 1)");
    assert_eq!(msg, "abs() takes 1 argument, but 2 were given");
    let (at, msg) = err_at("1 + frobnicate(2)");
    assert_eq!(at, "frobnicate");
    assert_eq!(msg, "unknown function `frobnicate`");
    let (at, _) = err_at("running ? 1 : \"x\"");
    assert_eq!(at, "1 : \"x\"");
    let (at, msg) = err_at("recipe < 3");
    assert_eq!(at, "recipe < 3");
    assert_eq!(msg, "`<` compares a string with a int");
    let (at, msg) = err_at("`acme/lyon/bottling/line9/speed` > 1");
    assert_eq!(at, "`acme/lyon/bottling/line9/speed`");
    assert_eq!(msg, "unknown tag `acme/lyon/bottling/line9/speed`");
    let (at, msg) = err_at("counts > 1");
    assert_eq!(at, "counts");
    assert!(msg.contains("array<int>"), "{msg}");
    let (at, msg) = err_at("avg_over(speed_actual, 5)");
    assert_eq!(at, "5");
    assert!(msg.contains("duration literal"), "{msg}");
    let (at, msg) = err_at("sum(tags(\"acme/lyon/bottling/line1/*/nothing\"))");
    assert_eq!(at, "\"acme/lyon/bottling/line1/*/nothing\"");
    assert!(msg.contains("matches no tag"), "{msg}");
    let (at, msg) = err_at("sum(tags(\"acme/lyon/bottling/line1/*/running\"))");
    assert!(msg.contains("numeric"), "{msg} at {at}");
    let (at, _) = err_at("time_in_state(speed_actual)");
    assert_eq!(at, "speed_actual");
    let (at, msg) = err_at("speed_actual >");
    assert_eq!(
        (at.as_str(), msg.as_str()),
        ("", "expected a value, found the end of the expression")
    );
}

fn eval_with(text: &str, samples: &[Sample], now: Timestamp) -> Outcome {
    let tags = Tags::line();
    let e = compile(text, &tags).unwrap_or_else(|e| panic!("{text}: {e}"));
    let inputs: HashMap<TagId, Sample> = samples.iter().map(|s| (s.tag, s.clone())).collect();
    let mut st = e.new_state();
    e.eval(&mut st, &inputs, now)
}

fn line_inputs() -> Vec<Sample> {
    let tags = Tags::line();
    let id = |n: &str| tags.id(n);
    vec![
        good(id("speed_actual"), f(18_000.0), 1.0),
        good(id("speed_setpoint"), f(24_000.0), 2.0),
        good(id("bottles"), Value::Int(1_000), 3.0),
        good(id("rejects"), Value::Int(15), 4.0),
        good(id("running"), Value::Bool(true), 0.5),
        good(id("filler/power"), f(11.5), 0.0),
        good(id("capper/power"), f(3.25), 0.0),
        good(id("labeler/power"), f(2.0), 0.0),
        good(id("recipe"), Value::String("cola-1l".into()), 0.0),
        good(id("filler/running"), Value::Bool(true), 0.0),
        good(id("capper/running"), Value::Bool(false), 0.0),
        good(id("energy"), f(450.0), 0.0),
    ]
}

#[test]
fn values_match_hand_computation() {
    let s = line_inputs();
    let v = |text: &str| {
        let o = eval_with(text, &s, t(10.0));
        assert_eq!(o.quality, Quality::GOOD, "{text}: {o:?}");
        o.value
    };
    // Line efficiency: 18000 / 24000.
    assert_eq!(v("speed_actual / speed_setpoint"), Val::Float(0.75));
    // Reject rate in %: int / int divides as floats.
    assert_eq!(v("rejects / bottles * 100"), Val::Float(1.5));
    // Energy per bottle (kWh): 450 / 1000.
    assert_eq!(v("energy / bottles"), Val::Float(0.45));
    assert_eq!(v("bottles - rejects"), Val::Int(985));
    assert_eq!(v("bottles % 7"), Val::Int(1000 % 7));
    assert_eq!(v("-bottles * 2"), Val::Int(-2000));
    assert_eq!(
        v("sum(tags(\"acme/lyon/bottling/line1/*/power\"))"),
        Val::Float(16.75)
    );
    assert_eq!(
        v("avg(tags(\"acme/lyon/bottling/line1/*/power\"))"),
        Val::Float(16.75 / 3.0)
    );
    assert_eq!(
        v("max(tags(\"acme/lyon/bottling/line1/*/power\"))"),
        Val::Float(11.5)
    );
    assert_eq!(
        v("min(tags(\"acme/lyon/bottling/line1/*/power\"))"),
        Val::Float(2.0)
    );
    assert_eq!(
        v("count(tags(\"acme/lyon/bottling/line1/*/running\"))"),
        Val::Int(1)
    );
    assert_eq!(v("min(bottles, rejects, 20)"), Val::Int(15));
    assert_eq!(v("max(bottles, 2.5)"), Val::Float(1000.0));
    assert_eq!(v("clamp(speed_actual, 0, 10000)"), Val::Float(10000.0));
    assert_eq!(v("clamp(rejects, 20, 30)"), Val::Int(20));
    assert_eq!(
        v("round(speed_actual / speed_setpoint * 100, 1)"),
        Val::Float(75.0)
    );
    assert_eq!(v("round(2.345, 2)"), Val::Float(2.35));
    assert_eq!(v("floor(-2.5) + ceil(2.1)"), Val::Float(0.0));
    assert_eq!(v("sqrt(16.0)"), Val::Float(4.0));
    assert_eq!(v("abs(-3)"), Val::Int(3));
    assert_eq!(v("int(7.9) + int(-7.9)"), Val::Int(0));
    assert_eq!(v("float(bottles) / 8"), Val::Float(125.0));
    assert_eq!(v("int(running) + int(false)"), Val::Int(1));
    assert_eq!(
        v("running && speed_actual > 10000 ? \"fast\" : \"slow\""),
        Val::Str("fast".into())
    );
    assert_eq!(
        v("recipe == \"cola-1l\" && !(bottles < 1000)"),
        Val::Bool(true)
    );
    assert_eq!(
        v("`acme/lyon/bottling/line1/filler/power` >= 11.5"),
        Val::Bool(true)
    );
    assert_eq!(v("5m + 30s"), Val::Float(330.0));
    assert_eq!(v("1_000 + 1e3 + .5"), Val::Float(2000.5));
    assert_eq!(v("quality(speed_actual)"), Val::Str("Good".into()));
    assert_eq!(v("is_good(rejects) || false"), Val::Bool(true));
    // The newest input's time is the result's.
    let o = eval_with("rejects / bottles", &s, t(10.0));
    assert_eq!(o.source_ts, t(4.0));
}

#[test]
fn types_follow_the_rules() {
    let tags = Tags::line();
    let ty = |s: &str| compile(s, &tags).map(|e: Expr| e.ty()).expect(s);
    assert_eq!(ty("bottles + rejects"), Type::Int);
    assert_eq!(ty("bottles / rejects"), Type::Float);
    assert_eq!(ty("bottles + 1.0"), Type::Float);
    assert_eq!(ty("running ? bottles : 2.5"), Type::Float);
    assert_eq!(ty("prev(recipe)"), Type::String);
    assert_eq!(
        ty("sum(tags(\"acme/lyon/bottling/line1/*/power\"))"),
        Type::Float
    );
    assert_eq!(
        ty("count(tags(\"acme/lyon/bottling/line1/*/running\"))"),
        Type::Int
    );
    let e = compile(
        "bottles + `acme/lyon/bottling/line1/rejects` + bottles",
        &tags,
    )
    .expect("ok");
    assert_eq!(e.inputs(), &[tags.id("bottles"), tags.id("rejects")]);
    assert!(!e.is_time_dependent());
    assert!(compile("time_in_state(running) > 5m", &tags)
        .expect("ok")
        .is_time_dependent());
}

#[test]
fn calculation_errors_are_bad_with_a_reason_never_a_panic() {
    let tags = Tags::line();
    let id = |n: &str| tags.id(n);
    let s = vec![
        good(id("speed_actual"), f(0.0), 1.0),
        good(id("speed_setpoint"), f(0.0), 1.0),
        good(id("bottles"), Value::Int(i64::MAX), 1.0),
        good(id("rejects"), Value::Int(0), 1.0),
    ];
    let check = |text: &str, kind: CauseKind, part: &str| {
        let o = eval_with(text, &s, t(2.0));
        assert_eq!(o.quality.level, QualityLevel::Bad, "{text}: {o:?}");
        assert_eq!(o.quality.reason, QualityReason::CalculationFailed, "{text}");
        let c = o.cause.expect("a cause");
        assert_eq!(c.kind, kind, "{text}");
        assert_eq!(&text[c.span.range()], part, "{text}");
        let why = c.describe(text, o.quality, &|t| tags.name(t));
        assert!(why.contains(part), "{why}");
    };
    check(
        "speed_actual / speed_setpoint",
        CauseKind::DivByZero,
        "speed_actual / speed_setpoint",
    );
    check(
        "1 + bottles % rejects",
        CauseKind::DivByZero,
        "bottles % rejects",
    );
    check("bottles + 1", CauseKind::Overflow, "bottles + 1");
    check(
        "abs(-bottles - 1)",
        CauseKind::Overflow,
        "abs(-bottles - 1)",
    );
    check("sqrt(-1.0) > 0", CauseKind::NotFinite, "sqrt(-1.0)");
    check("int(1e300)", CauseKind::Overflow, "int(1e300)");
    check("1e308 * 10.0", CauseKind::NotFinite, "1e308 * 10.0");
}

#[test]
fn quality_is_the_worst_of_the_inputs_that_determined_the_result() {
    let tags = Tags::line();
    let id = |n: &str| tags.id(n);
    let mut s = line_inputs();
    // speed_setpoint is Bad (device unreachable), capper/power is Uncertain.
    s[1] = bad(id("speed_setpoint"), QualityReason::CommFailure, 5.0);
    s[6].quality = Quality::uncertain(QualityReason::Stale);
    let o = eval_with("speed_actual / speed_setpoint", &s, t(10.0));
    assert_eq!(o.quality, Quality::bad(QualityReason::CommFailure));
    let c = o.cause.expect("cause");
    assert_eq!(
        (c.kind, c.tag),
        (CauseKind::Input, Some(id("speed_setpoint")))
    );
    assert_eq!(
        c.describe("", o.quality, &|t| tags.name(t)),
        "input acme/lyon/bottling/line1/speed_setpoint is Bad(CommFailure)"
    );
    // Uncertain input: Uncertain result with its reason.
    let o = eval_with("`acme/lyon/bottling/line1/capper/power` * 2", &s, t(10.0));
    assert_eq!(o.quality, Quality::uncertain(QualityReason::Stale));
    assert_eq!(o.value, Val::Float(6.5));
    // A Good operand that decides alone decides the quality too.
    let o = eval_with("!running && speed_setpoint > 1", &s, t(10.0));
    assert_eq!(
        (o.value.clone(), o.quality),
        (Val::Bool(false), Quality::GOOD)
    );
    let o = eval_with("running && speed_setpoint > 1", &s, t(10.0));
    assert_eq!(o.quality.level, QualityLevel::Bad);
    let o = eval_with("running || speed_setpoint > 1", &s, t(10.0));
    assert_eq!(
        (o.value.clone(), o.quality),
        (Val::Bool(true), Quality::GOOD)
    );
    // The condition of `? :` and the chosen branch count.
    let o = eval_with("running ? speed_actual : speed_setpoint", &s, t(10.0));
    assert_eq!(
        (o.value.clone(), o.quality),
        (Val::Float(18_000.0), Quality::GOOD)
    );
    // A sum needs every term; avg/min/max leave Bad ones out and say so (Uncertain).
    s[5] = bad(id("filler/power"), QualityReason::DeviceFailure, 5.0);
    s[6].quality = Quality::GOOD;
    let o = eval_with(
        "sum(tags(\"acme/lyon/bottling/line1/*/power\"))",
        &s,
        t(10.0),
    );
    assert_eq!(o.quality, Quality::bad(QualityReason::DeviceFailure));
    let o = eval_with(
        "avg(tags(\"acme/lyon/bottling/line1/*/power\"))",
        &s,
        t(10.0),
    );
    assert_eq!(o.value, Val::Float((3.25 + 2.0) / 2.0));
    assert_eq!(o.quality, Quality::uncertain(QualityReason::DeviceFailure));
    let c = o.cause.expect("cause");
    assert_eq!(
        (c.kind, c.tag),
        (CauseKind::SomeInputsBad, Some(id("filler/power")))
    );
    // is_good / quality test the quality and are Good themselves.
    let o = eval_with(
        "is_good(speed_setpoint) ? speed_setpoint : 0.0",
        &s,
        t(10.0),
    );
    assert_eq!(
        (o.value.clone(), o.quality),
        (Val::Float(0.0), Quality::GOOD),
        "a fallback for a Bad input is Good"
    );
    let o = eval_with("is_good(speed_setpoint)", &s, t(10.0));
    assert_eq!(
        (o.value.clone(), o.quality),
        (Val::Bool(false), Quality::GOOD)
    );
    let o = eval_with("quality(speed_setpoint) == \"Bad\"", &s, t(10.0));
    assert_eq!(
        (o.value.clone(), o.quality),
        (Val::Bool(true), Quality::GOOD)
    );
    // No value yet: Bad, naming the tag.
    let o = eval_with("energy / bottles", &[], t(10.0));
    assert_eq!(o.quality.level, QualityLevel::Bad);
    assert_eq!(
        o.cause.map(|c| (c.kind, c.tag)),
        Some((CauseKind::NoValue, Some(id("energy"))))
    );
    // A value of the wrong type (a string for a float tag): Bad, ConfigError.
    let wrong = vec![good(id("energy"), Value::String("x".into()), 1.0)];
    let o = eval_with("energy + 1", &wrong, t(10.0));
    assert_eq!(o.quality, Quality::bad(QualityReason::ConfigError));
}

/// Random token soup and random well-formed expressions: compile and evaluate never panic.
#[test]
fn random_expressions_never_panic() {
    let tags = Tags::line();
    let atoms = [
        "speed_actual",
        "speed_setpoint",
        "bottles",
        "rejects",
        "running",
        "recipe",
        "energy",
        "`acme/lyon/bottling/line1/filler/power`",
        "0",
        "1",
        "-1",
        "9223372036854775807",
        "2.5",
        "0.0",
        "1e308",
        "true",
        "false",
        "\"a\"",
        "5m",
        "counts",
        "nope",
    ];
    let funcs = [
        "abs",
        "min",
        "max",
        "clamp",
        "round",
        "floor",
        "ceil",
        "sqrt",
        "int",
        "float",
        "rate",
        "avg_over",
        "delta_over",
        "time_in_state",
        "changed",
        "prev",
        "quality",
        "is_good",
        "sum",
        "avg",
        "count",
        "tags",
    ];
    let ops = [
        "+", "-", "*", "/", "%", "<", "<=", ">", ">=", "==", "!=", "&&", "||",
    ];
    let soup = [
        "(",
        ")",
        ",",
        "?",
        ":",
        "!",
        "-",
        "`",
        "\"",
        "'",
        "{",
        "=",
        "&",
        "|",
        "é",
        " ",
        "1.",
        "5x",
        "tags(\"acme/lyon/bottling/line1/*/power\")",
    ];
    let mut rng = SmallRng::seed_from_u64(12);
    fn gen(rng: &mut SmallRng, depth: u32, atoms: &[&str], funcs: &[&str], ops: &[&str]) -> String {
        if depth == 0 || rng.random_bool(0.3) {
            return atoms[rng.random_range(0..atoms.len())].to_owned();
        }
        match rng.random_range(0..4) {
            0 => format!(
                "{} {} {}",
                gen(rng, depth - 1, atoms, funcs, ops),
                ops[rng.random_range(0..ops.len())],
                gen(rng, depth - 1, atoms, funcs, ops)
            ),
            1 => {
                let n = rng.random_range(0..4);
                let args: Vec<String> = (0..n)
                    .map(|_| gen(rng, depth - 1, atoms, funcs, ops))
                    .collect();
                format!(
                    "{}({})",
                    funcs[rng.random_range(0..funcs.len())],
                    args.join(", ")
                )
            }
            2 => format!(
                "{} ? {} : {}",
                gen(rng, depth - 1, atoms, funcs, ops),
                gen(rng, depth - 1, atoms, funcs, ops),
                gen(rng, depth - 1, atoms, funcs, ops)
            ),
            _ => format!("!({})", gen(rng, depth - 1, atoms, funcs, ops)),
        }
    }
    let mut inputs: HashMap<TagId, Sample> = HashMap::new();
    let mut compiled = 0;
    for round in 0..20_000 {
        let text = if round % 2 == 0 {
            gen(&mut rng, 5, &atoms, &funcs, &ops)
        } else {
            let n = rng.random_range(1..12);
            (0..n)
                .map(|_| {
                    let pool: &[&str] = match rng.random_range(0..3) {
                        0 => &atoms,
                        1 => &ops,
                        _ => &soup,
                    };
                    pool[rng.random_range(0..pool.len())]
                })
                .collect::<Vec<_>>()
                .join("")
        };
        // Random input values, some Bad, some of the wrong type.
        for (i, _) in tags.tags.iter().enumerate() {
            let v = match rng.random_range(0..6) {
                0 => Value::Int(rng.random()),
                1 => Value::Float(rng.random_range(-1e3..1e3)),
                2 => Value::Float([f64::NAN, f64::INFINITY, 0.0, -0.0][rng.random_range(0..4)]),
                3 => Value::Bool(rng.random()),
                4 => Value::String("s".into()),
                _ => Value::Null,
            };
            let mut s = good(TagId(i as u32), v, f64::from(round));
            // Now and then a device clock from another age.
            if rng.random_bool(0.05) {
                s.source_ts = Timestamp([i64::MIN, i64::MAX, 0, -1][rng.random_range(0..4)]);
            }
            if rng.random_bool(0.2) {
                s.quality = Quality::bad(QualityReason::CommFailure);
            }
            inputs.insert(TagId(i as u32), s);
        }
        if let Ok(e) = compile(&text, &tags) {
            compiled += 1;
            let mut st = e.new_state();
            for k in 0..3 {
                let now = if k == 2 {
                    Timestamp(i64::MIN)
                } else {
                    t(f64::from(round) + f64::from(k))
                };
                let o = e.eval(&mut st, &inputs, now);
                // A Good float result is finite.
                if let (Val::Float(x), true) = (&o.value, o.quality.is_good()) {
                    assert!(x.is_finite(), "{text} gave {x} with Good quality");
                }
            }
        }
    }
    assert!(
        compiled > 1000,
        "the generator should make many valid expressions ({compiled})"
    );
}

#[test]
fn inputs_are_described_for_people() {
    let tags = Tags::line();
    let e = compile("running && speed_actual > 10 && bottles > 0", &tags).expect("valid");
    let mut s = line_inputs();
    s[0].quality = Quality::uncertain(QualityReason::Stale);
    let inputs: HashMap<TagId, Sample> = s
        .into_iter()
        .filter(|s| s.tag != tags.id("bottles"))
        .map(|s| (s.tag, s))
        .collect();
    assert_eq!(
        e.describe_inputs(&inputs, &|t| tags.name(t)),
        "acme/lyon/bottling/line1/running = true, acme/lyon/bottling/line1/speed_actual = 18000 (Uncertain(Stale)), acme/lyon/bottling/line1/bottles: no value"
    );
}
