//! The `[[alarm]]` and `[alarms]` sections: a bottling-line example and every error, rendered
//! at file:line:col.

use std::time::Duration;

use ironplant_control::alarm::config::{self, AlarmConfigs, AlarmSettings, ExprSource};
use ironplant_control::alarm::{AlarmEngine, AlarmState, Condition, Setpoint};
use ironplant_core::config::{parse_with, Config, ConfigErrors, Diagnostics, Registry, Section};
use ironplant_core::{Quality, Sample, TagId, TagMeta, TagPath, Timestamp, Value, ValueType};
use serde::Deserialize;

const PLANT: &str = r#"
[[device]]
id = "plc"
protocol = "modbus-tcp"
address = "127.0.0.1:5020"

[[tag]]
path = "acme/lyon/bottling/line1/tank/plc/tank_level"
device = "plc"
unit = "%"
modbus = { table = "input", address = 0, type = "f32" }

[[tag]]
path = "acme/lyon/bottling/line1/tank/plc/level_setpoint"
device = "plc"
modbus = { table = "input", address = 2, type = "f32" }

[[tag]]
path = "acme/lyon/bottling/line1/filler/plc/motor_current"
device = "plc"
unit = "A"
modbus = { table = "input", address = 4, type = "f32" }

[[tag]]
path = "acme/lyon/bottling/line1/filler/plc/running"
device = "plc"
modbus = { table = "discrete_input", address = 0 }
"#;

const ALARMS: &str = r#"
[alarms]
operators = 2
max_shelve = "4h"
flood_threshold = 12

[[alarm]]
tag = "acme/lyon/bottling/line1/tank/plc/tank_level"
kind = "high"
limit = 90
deadband = 2.0
on_delay = "5s"
off_delay = "3s"
priority = 2
message = "Buffer tank level high"
consequence = "Tank overflows onto the floor"
response = "Reduce the inflow or start the filler"

[[alarm]]
id = "tank_dev"
tag = "acme/lyon/bottling/line1/tank/plc/tank_level"
kind = "deviation"
setpoint = "acme/lyon/bottling/line1/tank/plc/level_setpoint"
band = 10.0

[[alarm]]
tag = "acme/lyon/bottling/line1/filler/plc/motor_current"
kind = "high"
limit = 18.5
priority = 1
on_delay = "2s"
suppress_when = "!running"
message = "Filler motor over-current"

[[alarm]]
tag = "acme/lyon/bottling/line1/filler/plc/running"
kind = "state"
state = false
priority = 4

[[alarm]]
id = "reject_rate_high"
tag = "acme/lyon/bottling/line1/filler"
kind = "condition"
condition = "motor_current > 15.0"
priority = 3
on_delay = "1m"
"#;

fn parse(text: &str) -> Result<Config, ConfigErrors> {
    parse_with("ironplant.toml", text, &config::register(Registry::new()))
}

fn errors(text: &str) -> String {
    match parse(text) {
        Ok(_) => panic!("expected errors"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn the_bottling_line_alarms_parse_and_build_an_engine() {
    let text = format!("{PLANT}{ALARMS}");
    let cfg = parse(&text).unwrap_or_else(|e| panic!("{e}"));
    let settings = cfg.get::<AlarmSettings>();
    assert_eq!(settings.operators, 2);
    assert_eq!(settings.max_shelve, Duration::from_secs(4 * 3600));
    assert_eq!(settings.flood_threshold, 12);
    assert_eq!(settings.kpi().operators, 2);
    let alarms = cfg.get::<AlarmConfigs>();
    let ids: Vec<&str> = alarms.0.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "acme/lyon/bottling/line1/tank/plc/tank_level:high",
            "tank_dev",
            "acme/lyon/bottling/line1/filler/plc/motor_current:high",
            "acme/lyon/bottling/line1/filler/plc/running:state",
            "reject_rate_high"
        ]
    );
    let high = &alarms.0[0];
    assert_eq!(high.condition, Condition::High { limit: 90.0 });
    assert_eq!((high.deadband, high.priority), (2.0, 2));
    assert_eq!(high.on_delay, Duration::from_secs(5));
    assert_eq!(high.consequence, "Tank overflows onto the floor");
    // Expressions are kept with their span for the expression compiler.
    let sup = alarms.0[2].suppress_when.as_ref().expect("suppress_when");
    assert_eq!(&text[sup.span.clone()], "\"!running\"");
    assert_eq!(alarms.0[3].message, "running state");

    // Build: the lead's expression compiler turns each expression into a bool input tag. Here
    // two made-up inputs after the configured tags.
    let mut ns = cfg.namespace();
    let mut add = |p: &str| {
        ns.add_tag(TagMeta {
            id: TagId(0),
            path: TagPath::parse(p).expect("path"),
            value_type: ValueType::Bool,
            unit: None,
            description: String::new(),
            range: None,
            writable: false,
            device: None,
        })
        .expect("tag")
    };
    let not_running = add("acme/lyon/bottling/line1/filler/_alarm/not_running");
    let reject = add("acme/lyon/bottling/line1/filler/_alarm/reject_rate_high");
    let mut compile = |e: &ExprSource| -> Result<TagId, String> {
        Ok(if e.text.contains("running") {
            not_running
        } else {
            reject
        })
    };
    let defs = alarms.build(&ns, &mut compile).expect("build");
    assert_eq!(
        defs[1].condition,
        Condition::Deviation {
            setpoint: Setpoint::Tag(TagId(1)),
            band: 10.0
        }
    );
    assert_eq!(defs[2].suppress, Some(not_running));
    assert_eq!(defs[4].tag, reject);
    assert_eq!(&*defs[4].class, "acme/lyon/bottling/line1");
    let mut engine = AlarmEngine::new(defs, settings.engine());
    let at = Timestamp(1_800_000_000_000_000);
    let s = Sample {
        tag: reject,
        value: Value::Bool(true),
        quality: Quality::GOOD,
        source_ts: at,
        server_ts: at,
    };
    assert!(engine.on_samples(&[s], at).is_empty(), "1 min on-delay");
    let raised = engine.tick(Timestamp(at.0 + 60_000_000));
    assert_eq!(raised.len(), 1);
    assert_eq!(&*raised[0].alarm, "reject_rate_high");
    assert_eq!(raised[0].to, AlarmState::Unacknowledged);
}

#[test]
fn an_empty_file_has_no_alarms_and_default_settings() {
    let cfg = parse(PLANT).unwrap_or_else(|e| panic!("{e}"));
    assert!(cfg.get::<AlarmConfigs>().0.is_empty());
    assert_eq!(*cfg.get::<AlarmSettings>(), AlarmSettings::default());
}

#[test]
fn every_mistake_is_reported_at_its_place_with_a_hint() {
    let text = format!(
        "{PLANT}{}",
        r#"
[alarms]
operators = 0

[[alarm]]
tag = "acme/lyon/bottling/line1/tank/plc/tank_levle"
kind = "high"
limit = 90.0

[[alarm]]
tag = "acme/lyon/bottling/line1/filler/plc/running"
kind = "high"
limit = 1.0

[[alarm]]
tag = "acme/lyon/bottling/line1/tank/plc/tank_level"
kind = "high"
limit = 20.0

[[alarm]]
tag = "acme/lyon/bottling/line1/tank/plc/tank_level"
kind = "low"
limit = 30.0

[[alarm]]
tag = "acme/lyon/bottling/line1/filler/plc/running"
kind = "state"
state = false
priority = 5

[[alarm]]
tag = "acme/lyon/bottling/line1/tank/plc/tank_level"
kind = "hihi"

[[alarm]]
tag = "acme/lyon/bottling/line1/filler/plc/motor_current"
kind = "rate"
limit = 3.0
on_delay = "soon"
"#
    );
    let out = errors(&text);
    let expect = [
        "operators 0 is out of range",
        "alarm on unknown tag acme/lyon/bottling/line1/tank/plc/tank_levle",
        "a high alarm needs a numeric tag; acme/lyon/bottling/line1/filler/plc/running is bool",
        "inconsistent limits on acme/lyon/bottling/line1/tank/plc/tank_level: high limit 20 is not above low limit 30",
        "priority 5 is out of range",
        "hint: use 1 (highest, urgent) to 4 (lowest)",
        "unknown alarm kind \"hihi\"",
        "`limit` does not apply to a rate alarm",
        "a rate alarm needs `rate`",
        "on_delay \"soon\" is not a duration",
    ];
    for e in expect {
        assert!(out.contains(e), "missing {e:?} in:\n{out}");
    }
    // Positions: the unknown tag's line.
    let line = text
        .lines()
        .position(|l| l.contains("tank_levle"))
        .expect("line")
        + 1;
    assert!(
        out.contains(&format!(
            "ironplant.toml:{line}:7: error: alarm on unknown tag"
        )),
        "{out}"
    );
    assert!(out.contains("error(s) in ironplant.toml"));
}

#[test]
fn unknown_fields_and_duplicate_ids_are_refused() {
    let text = format!(
        "{PLANT}{}",
        r#"
[[alarm]]
id = "x"
tag = "acme/lyon/bottling/line1/tank/plc/tank_level"
kind = "high"
limit = 90.0

[[alarm]]
id = "x"
tag = "acme/lyon/bottling/line1/tank/plc/tank_level"
kind = "high_high"
limit = 95.0
"#
    );
    assert!(errors(&text).contains("alarm id \"x\" is used twice"));
    let text = format!(
        "{PLANT}\n[[alarm]]\ntag = \"acme/lyon/bottling/line1/tank/plc/tank_level\"\nkind = \"high\"\nlimt = 3\n"
    );
    assert!(errors(&text).contains("unknown field `limt`"));
}

/// A stand-in for the computed-tag section of the `expr` module: it defines tags.
#[derive(Debug, Clone, Default, PartialEq)]
struct Computed(Vec<String>);

#[derive(Deserialize)]
struct RawComputed {
    path: String,
}

impl Section for Computed {
    const KEY: &'static str = "computed";
    fn parse(source: &str, _plant: &Config, _d: &mut Diagnostics) -> Computed {
        let raw = ironplant_core::config::section::<Vec<RawComputed>>(source, Self::KEY)
            .ok()
            .flatten()
            .unwrap_or_default();
        Computed(raw.into_iter().map(|r| r.path).collect())
    }
    fn tags(&self) -> Vec<TagMeta> {
        self.0
            .iter()
            .filter_map(|p| TagPath::parse(p).ok())
            .map(|path| TagMeta {
                id: TagId(0),
                path,
                value_type: ValueType::Float,
                unit: None,
                description: String::new(),
                range: None,
                writable: false,
                device: None,
            })
            .collect()
    }
}

#[test]
fn an_alarm_on_a_computed_tag_is_accepted_when_its_section_is_registered_first() {
    let text = format!(
        "{PLANT}{}",
        r#"
[[computed]]
path = "acme/lyon/bottling/line1/filler/reject_rate"

[[alarm]]
tag = "acme/lyon/bottling/line1/filler/reject_rate"
kind = "high"
limit = 2.0
"#
    );
    let registry = config::register(Registry::new().with::<Computed>());
    let cfg = parse_with("ironplant.toml", &text, &registry).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.get::<AlarmConfigs>().0.len(), 1);
    // Registered after the alarms, the computed tag is not known yet: an error, unless the
    // caller passes it.
    let late = Registry::new()
        .with::<AlarmSettings>()
        .with::<AlarmConfigs>()
        .with::<Computed>();
    let e = parse_with("ironplant.toml", &text, &late).expect_err("unknown");
    assert!(e.to_string().contains("alarm on unknown tag"), "{e}");
    let plant = ironplant_core::config::parse("ironplant.toml", PLANT).expect("plant");
    let mut d = Diagnostics::new();
    let extra = [(
        TagPath::parse("acme/lyon/bottling/line1/filler/reject_rate").expect("path"),
        ValueType::Float,
    )];
    let alarms = AlarmConfigs::parse_with_tags(&text, &plant, &extra, &mut d);
    assert!(d.is_empty());
    assert_eq!(alarms.0.len(), 1);
}
