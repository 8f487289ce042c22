//! The `[[computed]]` and `[[rule]]` sections: file:line:col errors inside expressions,
//! load-time checks, the computed tags in the namespace, and engines built from the config.

use ironplant_control::expr::{
    Action, ComputedSettings, ConfigScope, ExprText, RuleEvent, RuleSettings, Type,
};
use ironplant_core::config::Diagnostics;
use ironplant_core::config::{parse_with, ConfigErrors, Registry};
use ironplant_core::TagPath;
use ironplant_core::{Quality, Sample, Timestamp, Value, ValueType};

const PLANT: &str = r#"
[[device]]
id = "plc"
protocol = "modbus-tcp"
address = "127.0.0.1:5020"

[[tag]]
path = "acme/lyon/bottling/line1/filler/plc/speed_actual"
device = "plc"
modbus = { table = "input", address = 0, type = "f32" }

[[tag]]
path = "acme/lyon/bottling/line1/filler/plc/speed_setpoint"
device = "plc"
writable = true
modbus = { table = "holding", address = 0, type = "u16" }

[[tag]]
path = "acme/lyon/bottling/line1/filler/plc/good_count"
device = "plc"
modbus = { table = "input", address = 10, type = "u32" }

[[tag]]
path = "acme/lyon/bottling/line1/filler/plc/reject_count"
device = "plc"
modbus = { table = "input", address = 12, type = "u32" }

[[tag]]
path = "acme/lyon/bottling/line1/filler/plc/running"
device = "plc"
modbus = { table = "discrete_input", address = 0 }

[[tag]]
path = "acme/lyon/bottling/line1/energy/meter/energy_total"
device = "plc"
modbus = { table = "input", address = 20, type = "f64" }
"#;

fn registry() -> Registry {
    Registry::new()
        .with::<ComputedSettings>()
        .with::<RuleSettings>()
}

fn errors(extra: &str) -> String {
    let text = format!("{PLANT}{extra}");
    match parse_with("plant.toml", &text, &registry()) {
        Ok(_) => "no error".into(),
        Err(e) => e.to_string(),
    }
}

/// The `file:line:col: error: …` lines only.
fn heads(extra: &str) -> Vec<String> {
    errors(extra)
        .lines()
        .filter(|l| l.starts_with("plant.toml:"))
        .map(str::to_owned)
        .collect()
}

fn line_of(extra: &str, needle: &str) -> (usize, usize) {
    let text = format!("{PLANT}{extra}");
    let at = text.find(needle).unwrap_or_else(|| panic!("{needle}"));
    let e = ConfigErrors {
        file: String::new(),
        source: text,
        errors: vec![],
    };
    e.line_col(at)
}

#[test]
fn an_error_points_inside_the_expression() {
    let extra = r#"
[[computed]]
path = "acme/lyon/bottling/line1/filler/efficiency"
expr = "speed_actual / speed_setpiont"
"#;
    let (line, col) = line_of(extra, "speed_setpiont");
    let out = errors(extra);
    assert!(
        out.starts_with(&format!(
            "plant.toml:{line}:{col}: error: unknown tag `speed_setpiont` (no tag acme/lyon/bottling/line1/filler/speed_setpiont)\n"
        )),
        "{out}"
    );
    // The caret underlines the name.
    assert!(
        out.contains(&format!(
            "      | {}{}\n",
            " ".repeat(col - 1),
            "^".repeat(14)
        )),
        "{out}"
    );
    assert!(
        out.contains("= hint: did you mean speed_setpoint?\n"),
        "{out}"
    );
    let far = "\n[[computed]]\npath = \"acme/lyon/bottling/line1/filler/q\"\nexpr = \"flux\"\n";
    assert!(
        errors(far).contains("= hint: a bare name is the tag acme/lyon/bottling/line1/filler/<name>, or the only tag of that name below"),
        "{}",
        errors(far)
    );
    let quoted = "\n[[computed]]\npath = \"acme/lyon/bottling/line1/filler/q\"\nexpr = \"`acme/lyon/bottling/line1/filler/plc/good_cuont`\"\n";
    assert!(
        errors(quoted)
            .contains("= hint: did you mean `acme/lyon/bottling/line1/filler/plc/good_count`?"),
        "{}",
        errors(quoted)
    );

    // Literal strings and multi-line strings map too.
    let extra = "
[[computed]]
path = 'acme/lyon/bottling/line1/filler/x'
expr = 'running + 1'

[[computed]]
path = 'acme/lyon/bottling/line1/filler/y'
expr = \"\"\"
good_count +
  foo(1)\"\"\"
";
    let (l1, c1) = line_of(extra, "running + 1");
    let (l2, c2) = line_of(extra, "foo(1)");
    assert_eq!(
        heads(extra),
        [
            format!("plant.toml:{l1}:{c1}: error: `+` needs a number, but this is a bool"),
            format!("plant.toml:{l2}:{c2}: error: unknown function `foo`"),
        ]
    );

    // An escape in the string: the error points at the whole string.
    let extra = r#"
[[computed]]
path = "acme/lyon/bottling/line1/filler/z"
expr = "running == \"x\" && nope"
"#;
    let (l, c) = line_of(extra, r#""running"#);
    assert_eq!(
        heads(extra),
        [format!(
            "plant.toml:{l}:{c}: error: `==` compares a bool with a string"
        )]
    );
}

#[test]
fn load_checks_types_cycles_collisions_and_names() {
    let extra = r#"
[[computed]]
path = "acme/lyon/bottling/line1/filler/plc/running"
expr = "true"

[[computed]]
path = "acme/lyon/bottling/line1/filler/a"
expr = "b + 1"

[[computed]]
path = "acme/lyon/bottling/line1/filler/b"
expr = "a * 2"

[[computed]]
path = "acme/lyon/bottling/line1/filler/typed"
type = "int"
expr = "speed_actual * 2"

[[computed]]
path = "acme/lyon/bottling/line1/filler/badtype"
type = "array<int>"
expr = "1"
"#;
    let h = heads(extra);
    let msgs: Vec<&str> = h
        .iter()
        .map(|l| l.split(": error: ").nth(1).unwrap_or(""))
        .collect();
    assert_eq!(
        msgs,
        [
            "computed tag acme/lyon/bottling/line1/filler/plc/running is also a configured [[tag]]",
            "computed tags form a cycle: acme/lyon/bottling/line1/filler/a → acme/lyon/bottling/line1/filler/b → acme/lyon/bottling/line1/filler/a",
            "the expression gives a float but the computed tag's type is int",
            "type \"array<int>\" is not a computed tag's type",
        ],
        "{}",
        errors(extra)
    );
    let (l, c) = line_of(extra, "speed_actual * 2");
    assert!(
        h[2].starts_with(&format!("plant.toml:{l}:{c}: ")),
        "{}",
        h[2]
    );
    // A longer cycle, and a tag reading it (not reported: the cycle is the error).
    let extra = r#"
[[computed]]
path = "acme/lyon/bottling/line1/filler/reader"
expr = "z + 1"

[[computed]]
path = "acme/lyon/bottling/line1/filler/x"
expr = "y"

[[computed]]
path = "acme/lyon/bottling/line1/filler/y"
expr = "`acme/lyon/bottling/line1/filler/z` * 2"

[[computed]]
path = "acme/lyon/bottling/line1/filler/z"
expr = "x - 1"
"#;
    let h = heads(extra);
    let (l, c) = line_of(extra, "\"y\"");
    assert_eq!(
        h,
        [format!("plant.toml:{l}:{c}: error: computed tags form a cycle: acme/lyon/bottling/line1/filler/x → acme/lyon/bottling/line1/filler/y → acme/lyon/bottling/line1/filler/z → acme/lyon/bottling/line1/filler/x")]
    );
}

const LINE_LOGIC: &str = r#"
[[computed]]
path = "acme/lyon/bottling/line1/filler/efficiency"
unit = "%"
description = "Actual speed over setpoint"
expr = "speed_actual / speed_setpoint * 100"

[[computed]]
path = "acme/lyon/bottling/line1/filler/reject_rate"
unit = "%"
expr = "reject_count / max(good_count + reject_count, 1) * 100"

[[computed]]
path = "acme/lyon/bottling/line1/energy_per_bottle"
unit = "Wh"
expr = "delta_over(`acme/lyon/bottling/line1/energy/meter/energy_total`, 1h) * 1000 / max(delta_over(`acme/lyon/bottling/line1/filler/plc/good_count`, 1h), 1.0)"

[[computed]]
path = "acme/lyon/bottling/line1/filler/slow"
expr = "efficiency < 80.0"

[[rule]]
name = "reject-rate-high"
asset = "acme/lyon/bottling/line1/filler"
when = "reject_rate > 5.0"
for = "10s"
then = [
  { event = "reject rate {round(reject_rate, 1)} % on filler", severity = "warning" },
  { publish = "acme/lyon/bottling/line1/alerts", payload = "{{\"reject_rate\": {reject_rate}}}" },
  { write = "acme/lyon/bottling/line1/filler/plc/speed_setpoint", value = "int(speed_setpoint * 0.9)" },
]
"#;

#[test]
fn computed_tags_join_the_namespace_and_the_engines_run_from_the_config() {
    let text = format!("{PLANT}{LINE_LOGIC}");
    let cfg = parse_with("plant.toml", &text, &registry()).unwrap_or_else(|e| panic!("{e}"));
    let computed = cfg.get::<ComputedSettings>();
    let types: Vec<ValueType> = computed.tags.iter().map(|c| c.value_type).collect();
    assert_eq!(
        types,
        [
            ValueType::Float,
            ValueType::Float,
            ValueType::Float,
            ValueType::Bool
        ]
    );
    let ns = cfg.namespace();
    let eff = ns
        .lookup("acme/lyon/bottling/line1/filler/efficiency")
        .expect("in the namespace");
    assert_eq!(
        (eff.unit.as_deref(), eff.device.as_deref()),
        (Some("%"), Some("computed"))
    );
    let mut engine = computed.build(&ns).unwrap_or_else(|e| panic!("{e:?}"));
    let rules_cfg = cfg.get::<RuleSettings>();
    assert_eq!(rules_cfg.rules[0].hold, std::time::Duration::from_secs(10));
    let mut rules = rules_cfg.build(&ns).unwrap_or_else(|e| panic!("{e:?}"));

    let id = |p: &str| {
        ns.lookup(&format!("acme/lyon/bottling/line1/{p}"))
            .expect(p)
            .id
    };
    let at = |s: i64| Timestamp(1_800_000_000_000_000 + s * 1_000_000);
    let sample = |p: &str, v: Value, s: i64| Sample {
        tag: id(p),
        value: v,
        quality: Quality::GOOD,
        source_ts: at(s),
        server_ts: at(s),
    };
    let mut batch = vec![
        sample("filler/plc/speed_actual", Value::Float(540.0), 0),
        sample("filler/plc/speed_setpoint", Value::Int(600), 0),
        sample("filler/plc/good_count", Value::Int(900), 0),
        sample("filler/plc/reject_count", Value::Int(100), 0),
    ];
    let mut derived = Vec::new();
    engine.process(&batch, at(0), &mut derived);
    let got = |d: &[Sample], p: &str| d.iter().find(|s| s.tag == id(p)).map(|s| s.value.clone());
    assert_eq!(got(&derived, "filler/efficiency"), Some(Value::Float(90.0)));
    assert_eq!(
        got(&derived, "filler/reject_rate"),
        Some(Value::Float(10.0))
    );
    assert_eq!(got(&derived, "filler/slow"), Some(Value::Bool(false)));
    // The rules see the batch with the derived samples, as on the bus.
    batch.extend(derived);
    let mut out = Vec::new();
    rules.process(&batch, at(0), &mut out);
    assert!(out.is_empty(), "held for 10 s first: {out:?}");
    rules.tick(at(10), &mut out);
    let [o] = out.as_slice() else {
        panic!("{out:?}")
    };
    let RuleEvent::Fired { actions, skipped } = &o.event else {
        panic!("{o:?}")
    };
    assert!(skipped.is_empty(), "{skipped:?}");
    assert_eq!(
        actions,
        &[
            Action::RaiseEvent {
                severity: ironplant_core::Severity::Warning,
                message: "reject rate 10 % on filler".into()
            },
            Action::Publish {
                topic: "acme/lyon/bottling/line1/alerts".into(),
                payload: "{\"reject_rate\": 10}".into()
            },
            Action::Write {
                tag: id("filler/plc/speed_setpoint"),
                value: Value::Int(540)
            },
        ]
    );
}

#[test]
fn rule_errors_are_reported_where_they_are() {
    let extra = r#"
[[computed]]
path = "acme/lyon/bottling/line1/filler/efficiency"
expr = "speed_actual / speed_setpoint"

[[rule]]
name = "r1"
when = "`acme/lyon/bottling/line1/filler/efficiency` * 2"
then = [{ event = "x {nope}" }]

[[rule]]
name = "r1"
when = "true"
for = "soon"
then = [
  { write = "acme/lyon/bottling/line1/filler/plc/speed_actual", value = "1.0" },
  { write = "acme/lyon/bottling/line1/filler/efficiency", value = "1.0" },
  { event = "x", publish = "t" },
  { event = "x", severity = "loud" },
  { publish = "a/+/b" },
]
"#;
    let h = heads(extra);
    let pos = |needle: &str| {
        let (l, c) = line_of(extra, needle);
        format!("plant.toml:{l}:{c}: error: ")
    };
    assert_eq!(
        h,
        [
            format!("{}the condition is a float, but a bool is needed", pos("`acme/lyon/bottling/line1/filler/efficiency` * 2")),
            format!("{}unknown tag `nope`", pos("nope}")),
            format!("{}rule \"r1\" is defined twice", pos("\"r1\"\nwhen = \"true\"")),
            format!("{}for \"soon\" is not a duration: expected number at 0", pos("\"soon\"")),
            format!("{}rule writes tag acme/lyon/bottling/line1/filler/plc/speed_actual, which is not writable", pos("\"acme/lyon/bottling/line1/filler/plc/speed_actual\", value")),
            format!("{}rule writes tag acme/lyon/bottling/line1/filler/efficiency, which is not writable", pos("\"acme/lyon/bottling/line1/filler/efficiency\", value")),
            format!("{}an action has exactly one of write, event or publish", pos("{ event = \"x\", publish")),
            format!("{}unknown severity \"loud\"; expected info, warning, error or critical", pos("\"loud\"")),
            format!("{}publish topic \"a/+/b\" is not a topic name", pos("\"a/+/b\"")),
        ],
        "{}",
        errors(extra)
    );
}

#[test]
fn sections_read_on_their_own() {
    let text = format!("{PLANT}{LINE_LOGIC}");
    let (computed, errs) = ComputedSettings::from_source(&text);
    assert!(errs.is_empty(), "{errs:?}");
    assert_eq!(computed.tags.len(), 4);
    let (rules, errs) = RuleSettings::from_source(&text);
    assert!(errs.is_empty(), "{errs:?}");
    assert_eq!(rules.rules[0].name, "reject-rate-high");
}

#[test]
fn other_sections_check_their_expressions_in_place() {
    // As an [[alarm]] or [[interlock]] section would: its own string, checked by ConfigScope.
    let extra = r#"
[[computed]]
path = "acme/lyon/bottling/line1/filler/efficiency"
expr = "speed_actual / speed_setpoint"

[[my_alarm]]
condition = "efficiency < 80 && runing"
"#;
    let text = format!("{PLANT}{extra}");
    let cfg = parse_with(
        "plant.toml",
        &text,
        &Registry::new().with::<ComputedSettings>(),
    );
    // Core refuses the unknown section; the plant part is what a section's parse receives.
    assert!(cfg.is_err());
    let plant = parse_with("plant.toml", PLANT, &Registry::new()).expect("plant");
    let scope = ConfigScope::new(&text, &plant);
    let start = text.find("\"efficiency < 80").expect("there");
    let end = start + "\"efficiency < 80 && runing\"".len();
    let expr = ExprText::at(&text, "efficiency < 80 && runing".into(), start..end);
    let asset = TagPath::parse("acme/lyon/bottling/line1/filler").expect("path");
    let mut d = Diagnostics::new();
    assert_eq!(
        scope.check(&expr, Some(&asset), Some(Type::Bool), &mut d),
        None
    );
    let e = &d.errors[0];
    assert_eq!(&text[e.span.clone()], "runing");
    assert_eq!(
        e.message,
        "unknown tag `runing` (no tag acme/lyon/bottling/line1/filler/runing)"
    );
    let ok = ExprText::at(&text, "efficiency < 80 && running".into(), 0..0);
    let mut d = Diagnostics::new();
    assert_eq!(
        scope.check(&ok, Some(&asset), Some(Type::Bool), &mut d),
        Some(Type::Bool)
    );
    assert!(d.is_empty());
    let mut d = Diagnostics::new();
    assert_eq!(
        scope.check(&ok, Some(&asset), Some(Type::Float), &mut d),
        None
    );
    assert_eq!(
        d.errors[0].message,
        "the expression is a bool, but a float is needed"
    );
}

/// The first example of docs/expressions.md loads against a plant with those tags.
#[test]
fn the_documented_example_loads() {
    let doc = include_str!("../../../docs/expressions.md");
    let start = doc.find("```toml\n").expect("a toml block") + "```toml\n".len();
    let len = doc[start..].find("```").expect("closed");
    let example = &doc[start..start + len];
    let power = r#"
[[tag]]
path = "acme/lyon/bottling/line1/filler/meter/power"
device = "plc"
modbus = { table = "input", address = 30, type = "f32" }

[[tag]]
path = "acme/lyon/bottling/line1/capper/meter/power"
device = "plc"
modbus = { table = "input", address = 32, type = "f32" }
"#;
    let text = format!("{PLANT}{power}{example}");
    let cfg = parse_with("plant.toml", &text, &registry()).unwrap_or_else(|e| panic!("{e}"));
    let ns = cfg.namespace();
    let engine = cfg.get::<ComputedSettings>().build(&ns).expect("builds");
    assert_eq!(engine.outputs().count(), 4);
    assert!(engine.needs_tick(), "delta_over");
    let rules = cfg.get::<RuleSettings>().build(&ns).expect("builds");
    assert!(rules.needs_tick(), "for = 10s");
}

/// Random expression text in every place of both sections: errors, never a panic, and every
/// error span lies inside the file.
#[test]
fn random_sections_never_panic() {
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};
    let pieces = [
        "speed_actual",
        "running",
        "good_count",
        "`acme/lyon/bottling/line1/filler/plc/reject_count`",
        "efficiency",
        "+",
        "/",
        "&&",
        "?",
        ":",
        "(",
        ")",
        "1",
        "2.5",
        "5m",
        "{",
        "}",
        "{{",
        "\\\"",
        "'",
        "é",
        "round(",
        "tags(",
        "\\\\",
        "nope",
        ",",
        " ",
        "\\n",
    ];
    let mut rng = SmallRng::seed_from_u64(7);
    for _ in 0..500 {
        let mut gen = || {
            let n = rng.random_range(0..10);
            (0..n)
                .map(|_| pieces[rng.random_range(0..pieces.len())])
                .collect::<String>()
        };
        let extra = format!(
            "\n[[computed]]\npath = \"acme/lyon/bottling/line1/filler/efficiency\"\nexpr = \"{}\"\n\n[[rule]]\nname = \"r\"\nasset = \"acme/lyon/bottling/line1/filler\"\nwhen = \"{}\"\nthen = [{{ event = \"{}\" }}, {{ publish = \"t/{}\", payload = \"{}\" }}, {{ write = \"acme/lyon/bottling/line1/filler/plc/speed_setpoint\", value = \"{}\" }}]\n",
            gen(), gen(), gen(), gen(), gen(), gen()
        );
        let text = format!("{PLANT}{extra}");
        if let Err(e) = parse_with("plant.toml", &text, &registry()) {
            for err in &e.errors {
                assert!(
                    err.span.end <= text.len() && err.span.start <= err.span.end,
                    "{err:?}"
                );
            }
            let _ = e.to_string();
        }
    }
}
