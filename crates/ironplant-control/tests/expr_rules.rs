//! Rules: rising edge, `for` durations on a manual clock, re-arm, no re-fire, Bad conditions.

mod expr_support;

use std::time::Duration;

use expr_support::{bad, f, good, t, Tags, LINE};
use ironplant_control::expr::{
    compile, Action, ActionDef, RuleDef, RuleEvent, RuleOutput, Rules, RulesError, Template,
};
use ironplant_core::{QualityReason, Sample, Severity, Value, ValueType};

fn run(r: &mut Rules, batch: &[Sample], now: f64) -> Vec<RuleOutput> {
    let mut out = Vec::new();
    r.process(batch, t(now), &mut out);
    out
}

fn tick(r: &mut Rules, now: f64) -> Vec<RuleOutput> {
    let mut out = Vec::new();
    r.tick(t(now), &mut out);
    out
}

fn fired(out: &[RuleOutput]) -> Vec<(String, Vec<Action>)> {
    out.iter()
        .filter_map(|o| match &o.event {
            RuleEvent::Fired { actions, .. } => Some((o.name.to_string(), actions.clone())),
            RuleEvent::Blocked { .. } => None,
        })
        .collect()
}

fn rule(tags: &Tags, name: &str, when: &str, hold_s: u64, actions: Vec<ActionDef>) -> RuleDef {
    RuleDef {
        name: name.into(),
        when: compile(when, tags).unwrap_or_else(|e| panic!("{when}: {e}")),
        hold: Duration::from_secs(hold_s),
        actions,
    }
}

fn event(tags: &Tags, text: &str) -> ActionDef {
    ActionDef::RaiseEvent {
        severity: Severity::Warning,
        message: Template::compile(text, tags).unwrap_or_else(|e| panic!("{text}: {e}")),
    }
}

#[test]
fn a_rule_fires_on_the_rising_edge_once_and_rearms_when_false() {
    let tags = Tags::line();
    let rejects = tags.id("rejects");
    let mut r = Rules::new(
        vec![rule(
            &tags,
            "reject_alarm",
            "rejects > 10",
            0,
            vec![event(&tags, "rejects at {rejects} ({{high}})")],
        )],
        &|t| tags.name(t),
    )
    .expect("valid");
    assert!(!r.needs_tick());
    let s = |v: i64, at: f64| good(rejects, Value::Int(v), at);
    assert!(fired(&run(&mut r, &[s(5, 1.0)], 1.0)).is_empty());
    let out = run(&mut r, &[s(12, 2.0)], 2.0);
    assert_eq!(
        fired(&out),
        [(
            "reject_alarm".to_owned(),
            vec![Action::RaiseEvent {
                severity: Severity::Warning,
                message: "rejects at 12 ({high})".into()
            }]
        )]
    );
    assert_eq!(out[0].at, t(2.0));
    // Still true: no re-fire.
    assert!(fired(&run(&mut r, &[s(13, 3.0)], 3.0)).is_empty());
    assert!(fired(&run(&mut r, &[s(20, 4.0)], 4.0)).is_empty());
    // False re-arms; true again fires again.
    assert!(fired(&run(&mut r, &[s(3, 5.0)], 5.0)).is_empty());
    assert_eq!(fired(&run(&mut r, &[s(11, 6.0)], 6.0)).len(), 1);
    assert_eq!(r.evaluations(), 6);
}

#[test]
fn for_durations_hold_on_now_and_a_dip_restarts_them() {
    let mut tags = Tags::line();
    let valve = tags.add("acme/lyon/bottling/line1/filler/valve", ValueType::Float);
    let speed = tags.id("speed_actual");
    let mut r = Rules::new(
        vec![rule(
            &tags,
            "slow_down",
            "speed_actual > 100",
            30,
            vec![
                ActionDef::Write {
                    tag: valve,
                    value_type: ValueType::Float,
                    // An int expression written to a float tag is sent as a float.
                    value: compile("speed_actual > 200 ? 75 : 50", &tags).expect("valid"),
                },
                ActionDef::Publish {
                    topic: Template::compile(
                        "plant/line1/{`acme/lyon/bottling/line1/recipe`}",
                        &tags,
                    )
                    .expect("valid"),
                    payload: Template::compile("{{\"speed\": {speed_actual}}}", &tags)
                        .expect("valid"),
                },
            ],
        )],
        &|t| tags.name(t),
    )
    .expect("valid");
    assert!(r.needs_tick());
    let s = |v: f64, at: f64| good(speed, f(v), at);
    let recipe = good(tags.id("recipe"), Value::String("cola".into()), 0.0);
    assert!(
        fired(&run(&mut r, &[recipe, s(120.0, 0.0)], 0.0)).is_empty(),
        "not yet held"
    );
    assert!(fired(&tick(&mut r, 29.0)).is_empty());
    // A dip below restarts the hold.
    assert!(fired(&run(&mut r, &[s(90.0, 29.5)], 29.5)).is_empty());
    assert!(fired(&run(&mut r, &[s(130.0, 31.0)], 31.0)).is_empty());
    assert_eq!(r.next_due(), Some(t(61.0)), "the hold restarted at 31 s");
    assert!(fired(&tick(&mut r, 60.0)).is_empty(), "29 s since 31");
    let out = tick(&mut r, 61.0);
    assert_eq!(
        fired(&out),
        [(
            "slow_down".to_owned(),
            vec![
                Action::Write {
                    tag: valve,
                    value: f(50.0)
                },
                Action::Publish {
                    topic: "plant/line1/cola".into(),
                    payload: "{\"speed\": 130}".into()
                }
            ]
        )]
    );
    assert!(
        fired(&tick(&mut r, 200.0)).is_empty(),
        "no re-fire while true"
    );
    assert!(fired(&run(&mut r, &[s(10.0, 201.0)], 201.0)).is_empty());
    assert!(fired(&run(&mut r, &[s(110.0, 202.0)], 202.0)).is_empty());
    assert_eq!(fired(&tick(&mut r, 232.0)).len(), 1, "re-armed, held again");
}

#[test]
fn a_bad_condition_does_not_fire_and_says_why_once() {
    let tags = Tags::line();
    let (sa, sp) = (tags.id("speed_actual"), tags.id("speed_setpoint"));
    let mut r = Rules::new(
        vec![rule(
            &tags,
            "low_efficiency",
            "speed_actual / speed_setpoint < 0.5",
            0,
            vec![event(
                &tags,
                "efficiency {round(speed_actual / speed_setpoint * 100, 1)} %",
            )],
        )],
        &|t| tags.name(t),
    )
    .expect("valid");
    let out = run(
        &mut r,
        &[
            good(sa, f(10.0), 1.0),
            bad(sp, QualityReason::CommFailure, 1.0),
        ],
        1.0,
    );
    assert_eq!(out.len(), 1);
    assert_eq!(
        out[0].event,
        RuleEvent::Blocked {
            reason: "input acme/lyon/bottling/line1/speed_setpoint is Bad(CommFailure)".into()
        }
    );
    // Still Bad: reported once per Bad period.
    assert!(run(&mut r, &[good(sa, f(11.0), 2.0)], 2.0).is_empty());
    // Good again and true: fires.
    let out = run(&mut r, &[good(sp, f(100.0), 3.0)], 3.0);
    assert_eq!(
        fired(&out),
        [(
            "low_efficiency".to_owned(),
            vec![Action::RaiseEvent {
                severity: Severity::Warning,
                message: "efficiency 11 %".into()
            }]
        )]
    );
    // Division by zero is Bad too.
    let out = run(&mut r, &[good(sp, f(0.0), 4.0)], 4.0);
    assert_eq!(
        out[0].event,
        RuleEvent::Blocked {
            reason: "division by zero in `speed_actual / speed_setpoint`".into()
        }
    );
}

#[test]
fn a_write_with_a_bad_value_is_skipped_with_its_reason() {
    let mut tags = Tags::line();
    let sp = tags.add("acme/lyon/bottling/line1/filler/setpoint", ValueType::Float);
    let mut r = Rules::new(
        vec![rule(
            &tags,
            "follow",
            "running",
            0,
            vec![ActionDef::Write {
                tag: sp,
                value_type: ValueType::Float,
                value: compile("speed_setpoint * 0.9", &tags).expect("valid"),
            }],
        )],
        &|t| tags.name(t),
    )
    .expect("valid");
    let out = run(
        &mut r,
        &[good(tags.id("running"), Value::Bool(true), 1.0)],
        1.0,
    );
    let RuleEvent::Fired { actions, skipped } = &out[0].event else {
        panic!("{out:?}")
    };
    assert!(actions.is_empty());
    assert_eq!(
        skipped,
        &["action 1: no write to acme/lyon/bottling/line1/filler/setpoint: input acme/lyon/bottling/line1/speed_setpoint has no value yet"]
    );
}

#[test]
fn rules_are_checked() {
    let tags = Tags::line();
    let err = Rules::new(vec![rule(&tags, "r", "bottles + 1", 0, vec![])], &|t| {
        tags.name(t)
    })
    .expect_err("not a bool");
    assert!(matches!(err, RulesError::NotBool { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "rule \"r\": its condition is a int, not a bool"
    );
    let _ = LINE;
}
