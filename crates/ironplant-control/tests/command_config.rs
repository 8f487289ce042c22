//! The `[[command]]` and `[[interlock]]` sections through core's parser: the bottling-line
//! policies as written, and every mistake reported at file:line:col with a hint.

mod command_support;

use std::time::Duration;

use command_support::*;
use ironplant_control::command::{
    CommandSettings, Envelope, InterlockSettings, OnUnauthorisedChange, Role, TwoPerson, Verify,
};
use ironplant_core::Value;

#[test]
fn the_bottling_policies_are_read_as_written() {
    let config = parse(&format!("{PLANT}{COMMANDS}")).unwrap_or_else(|e| panic!("{e}"));
    let cmds = config.get::<CommandSettings>();
    assert_eq!(cmds.tags.len(), 4);
    let speed = &cmds.tags[0];
    assert_eq!(speed.tag.as_str(), SPEED);
    assert_eq!(
        speed.envelope,
        Envelope {
            min: Some(0.0),
            max: Some(600.0),
            max_step: Some(100.0),
            max_rate: Some(20.0),
            min_interval: Some(Duration::from_secs(2)),
        }
    );
    assert_eq!(speed.on_unauthorised_change, OnUnauthorisedChange::Restore);
    assert_eq!(speed.select_before_operate, None);
    let recipe = &cmds.tags[1];
    assert_eq!(recipe.interlocks, vec!["filler_stopped".to_owned()]);
    assert_eq!(recipe.select_before_operate, Some(Duration::from_secs(10)));
    assert_eq!(recipe.verify, Verify::default());
    let cip = &cmds.tags[2];
    assert_eq!(
        cip.two_person,
        Some(TwoPerson {
            role: Role::Engineer,
            timeout: Duration::from_secs(60)
        })
    );
    assert_eq!(cip.on_unauthorised_change, OnUnauthorisedChange::Alarm);
    let level = &cmds.tags[3];
    assert_eq!(
        level.verify,
        Verify {
            timeout: Duration::from_secs(3),
            tolerance: 0.05
        }
    );
    let il = config.get::<InterlockSettings>();
    let def = il.get("filler_stopped").expect("defined");
    assert_eq!(
        def.expr,
        "acme/lyon/bottling/line1/filler/plc/machine_state != 1"
    );
    assert_eq!(def.message, "no recipe change while the filler runs");
    // The span lets the expression engine report at file:line:col.
    let text = format!("{PLANT}{COMMANDS}");
    assert_eq!(
        &text[def.expr_offset..def.expr_offset + def.expr.len()],
        def.expr
    );
    assert_eq!(&text[def.expr_span.clone()], format!("\"{}\"", def.expr));
}

#[test]
fn a_multi_line_expression_keeps_its_offset() {
    let text = format!("{PLANT}[[interlock]]\nname = \"x\"\nexpr = \"\"\"\n{STATE} != 1\"\"\"\n");
    let config = parse(&text).unwrap_or_else(|e| panic!("{e}"));
    let il = config.get::<InterlockSettings>();
    let def = il.get("x").expect("defined");
    assert_eq!(
        &text[def.expr_offset..def.expr_offset + def.expr.len()],
        def.expr
    );
    assert_eq!(
        def.message, def.expr,
        "the message defaults to the expression"
    );
}

#[test]
fn a_dynamic_tag_needs_no_tag_entry() {
    let text = format!(
        "{PLANT}[[command]]\ntag = \"acme/lyon/bottling/line1/labeller/edge/Speed\"\ndynamic = true\nmax = 10\n"
    );
    let config = parse(&text).unwrap_or_else(|e| panic!("{e}"));
    let cmds = config.get::<CommandSettings>();
    assert!(cmds.tags[0].dynamic);
    assert_eq!(cmds.tags[0].envelope.max, Some(10.0));
}

fn errors(extra: &str) -> String {
    match parse(&format!("{PLANT}{extra}")) {
        Ok(_) => panic!("expected errors for:\n{extra}"),
        Err(e) => e.to_string(),
    }
}

/// The 1-based line in the whole file of the `n`-th line of `extra`.
fn line(extra_line: usize) -> usize {
    PLANT.lines().count() + extra_line
}

#[test]
fn mistakes_are_reported_at_their_position_with_a_hint() {
    let extra = r#"[[interlock]]
name = "filler_stopped"
expr = "x != 1"

[[interlock]]
name = "filler_stopped"
expr = "y"

[[command]]
tag = "acme/lyon/bottling/line1/filler/plc/speedsetpoint"

[[command]]
tag = "acme/lyon/bottling/line1/filler/plc/machine_state"

[[command]]
tag = "acme/lyon/bottling/line1/filler/plc/speed_setpoint"
min = 600
max = 0
interlocks = ["filler_stoped"]

[[command]]
tag = "acme/lyon/bottling/line1/filler/plc/speed_setpoint"

[[command]]
tag = "acme/lyon/bottling/line1/cip/plc/supply_valve"
max = 1
two_person = { role = "device" }
on_unauthorised_change = "ignore"
verify = { tolerance = -1 }
select_before_operate = "soon"
"#;
    let text = errors(extra);
    let expect = [
        (
            6,
            8,
            "interlock \"filler_stopped\" is defined twice",
            "give each [[interlock]] its own name",
        ),
        (
            10,
            7,
            "[[command]] names an unknown tag acme/lyon/bottling/line1/filler/plc/speedsetpoint",
            "writable tags: acme/lyon/bottling/line1/cip/plc/supply_valve,",
        ),
        (
            13,
            7,
            "tag acme/lyon/bottling/line1/filler/plc/machine_state is not writable in the plant config",
            "set `writable = true` on its [[tag]]",
        ),
        (17, 7, "min 600 is above max 0", "swap them"),
        (
            19,
            15,
            "unknown interlock \"filler_stoped\"",
            "known interlocks: filler_stopped\n",
        ),
        (
            22,
            7,
            "tag acme/lyon/bottling/line1/filler/plc/speed_setpoint has two [[command]] entries",
            "merge them into one",
        ),
        (
            25,
            7,
            "tag acme/lyon/bottling/line1/cip/plc/supply_valve is of type bool; min, max, max_step and max_rate need a number",
            "remove the numeric limits",
        ),
        (
            27,
            23,
            "two_person role \"device\" is not a person's role",
            "use operator, engineer or admin",
        ),
        (
            28,
            26,
            "on_unauthorised_change \"ignore\" is not known",
            "use \"alarm\"",
        ),
        (
            29,
            24,
            "verify tolerance -1 is not usable",
            "a finite number >= 0",
        ),
        (
            30,
            25,
            "select_before_operate \"soon\" is not a duration",
            "write a number with a unit",
        ),
    ];
    for (l, col, message, hint) in expect {
        let head = format!("bottling.toml:{}:{col}: error: {message}", line(l));
        assert!(text.contains(&head), "missing {head:?} in:\n{text}");
        assert!(
            text.contains(&format!("= hint: {hint}")),
            "missing hint {hint:?} in:\n{text}"
        );
    }
    assert!(
        text.ends_with(&format!("{} error(s) in bottling.toml", expect.len())),
        "{text}"
    );
}

#[test]
fn unknown_fields_are_named() {
    let text = errors(
        "[[command]]\ntag = \"acme/lyon/bottling/line1/filler/plc/speed_setpoint\"\nmaximum = 5\n",
    );
    assert!(text.contains("unknown field `maximum`"), "{text}");
    assert!(text.contains("hint: check the spelling"), "{text}");
}

#[test]
fn without_the_sections_nothing_is_configured() {
    let config = parse(PLANT).unwrap_or_else(|e| panic!("{e}"));
    assert!(config.get::<CommandSettings>().tags.is_empty());
    assert!(config.get::<InterlockSettings>().interlocks.is_empty());
    // A configured expected value is typed by the tag.
    let text = format!("{PLANT}[[command]]\ntag = \"{LEVEL}\"\nexpected = 60\n");
    let config = parse(&text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        config.get::<CommandSettings>().tags[0].expected,
        Some(Value::Float(60.0))
    );
    let text = errors(&format!("[[command]]\ntag = \"{PUMP}\"\nexpected = 3\n"));
    assert!(text.contains("expected value 3 is int, the tag"), "{text}");
}
