//! The alarm state machine on a manual clock: every test drives time explicitly.

use std::time::Duration;

use ironplant_control::alarm::{
    AlarmDef, AlarmEngine, AlarmError, AlarmState, Cause, Condition, EngineSettings, Setpoint,
    Transition,
};
use ironplant_core::event::{EventKind, Severity};
use ironplant_core::{Quality, QualityReason, Sample, TagId, TagPath, Timestamp, Value};

const S: i64 = 1_000_000;
const LEVEL: TagId = TagId(0);
const STOPPED: TagId = TagId(1);
const SETPOINT: TagId = TagId(2);
const RUNNING: TagId = TagId(3);

fn t(secs: f64) -> Timestamp {
    Timestamp(1_800_000_000 * S + (secs * 1e6) as i64)
}

fn path(p: &str) -> TagPath {
    TagPath::parse(p).expect("path")
}

fn sample(tag: TagId, value: Value, at: Timestamp) -> Sample {
    Sample {
        tag,
        value,
        quality: Quality::GOOD,
        source_ts: at,
        server_ts: at,
    }
}

fn level_high() -> AlarmDef {
    let mut d = AlarmDef::new(
        "tank_high",
        LEVEL,
        path("acme/lyon/bottling/line1/tank/level"),
        Condition::High { limit: 90.0 },
    );
    d.deadband = 2.0;
    d.on_delay = Duration::from_secs(5);
    d.off_delay = Duration::from_secs(3);
    d.priority = 2;
    d.message = "Tank level high".into();
    d
}

/// Feeds one value of the level at `secs`.
fn level(e: &mut AlarmEngine, x: f64, secs: f64) -> Vec<Transition> {
    e.on_samples(&[sample(LEVEL, Value::Float(x), t(secs))], t(secs))
}

fn states(ts: &[Transition]) -> Vec<(AlarmState, AlarmState, Cause)> {
    ts.iter().map(|t| (t.from, t.to, t.cause)).collect()
}

#[test]
fn high_alarm_goes_unack_ack_rtn_normal_with_deadband_and_delays() {
    let mut e = AlarmEngine::new(vec![level_high()], EngineSettings::default());
    assert!(level(&mut e, 80.0, 0.0).is_empty());
    // Above the limit, but not for the 5 s on-delay: nothing yet.
    assert!(level(&mut e, 91.0, 1.0).is_empty());
    assert_eq!(e.next_deadline(), Some(t(6.0)));
    assert!(e.tick(t(5.9)).is_empty());
    // A dip below the limit restarts the on-delay.
    assert!(level(&mut e, 89.0, 2.0).is_empty());
    assert!(level(&mut e, 91.0, 3.0).is_empty());
    assert!(e.tick(t(7.9)).is_empty(), "on-delay restarted at 3 s");
    let raised = e.tick(t(8.0));
    assert_eq!(
        states(&raised),
        vec![(
            AlarmState::Normal,
            AlarmState::Unacknowledged,
            Cause::Raised
        )]
    );
    assert_eq!(raised[0].ts, t(8.0));
    assert_eq!(raised[0].value, Some(Value::Float(91.0)));
    assert_eq!(raised[0].limit, Some(90.0));
    assert_eq!(raised[0].priority, 2);
    assert_eq!(&*raised[0].class, "acme/lyon/bottling/line1/tank");

    let acked = e
        .ack("tank_high", "alice", "checking the inlet valve", t(10.0))
        .expect("ack");
    assert_eq!(acked.to, AlarmState::Acknowledged);
    assert_eq!(acked.user.as_deref(), Some("alice"));

    // Oscillating inside the deadband (88..90) never clears it, nor re-raises it.
    for (i, x) in [89.0, 88.5, 90.5, 88.1, 89.9, 88.2].iter().enumerate() {
        assert!(level(&mut e, *x, 11.0 + i as f64).is_empty(), "{x}");
        assert!(e.tick(t(11.5 + i as f64)).is_empty());
    }
    assert_eq!(e.state("tank_high"), Some(AlarmState::Acknowledged));
    // Below limit - deadband: the 3 s off-delay runs.
    assert!(level(&mut e, 87.0, 20.0).is_empty());
    assert!(e.tick(t(22.9)).is_empty());
    let cleared = e.tick(t(23.0));
    assert_eq!(
        states(&cleared),
        vec![(AlarmState::Acknowledged, AlarmState::Normal, Cause::Cleared)]
    );
    // Just above the limit again: needs the whole on-delay again.
    assert!(level(&mut e, 90.5, 30.0).is_empty());
    assert!(e.tick(t(34.0)).is_empty());
    assert_eq!(e.tick(t(35.0)).len(), 1);
}

#[test]
fn an_unacknowledged_alarm_returns_to_normal_unacknowledged_then_ack_makes_it_normal() {
    let mut d = level_high();
    d.on_delay = Duration::ZERO;
    d.off_delay = Duration::ZERO;
    let mut e = AlarmEngine::new(vec![d], EngineSettings::default());
    assert_eq!(level(&mut e, 95.0, 0.0).len(), 1);
    let rtn = level(&mut e, 80.0, 1.0);
    assert_eq!(
        states(&rtn),
        vec![(
            AlarmState::Unacknowledged,
            AlarmState::ReturnToNormalUnacknowledged,
            Cause::Cleared
        )]
    );
    // Still on the summary until acknowledged.
    assert_eq!(e.active().len(), 1);
    let ack = e.ack("tank_high", "bob", "seen", t(2.0)).expect("ack");
    assert_eq!(
        (ack.from, ack.to),
        (AlarmState::ReturnToNormalUnacknowledged, AlarmState::Normal)
    );
    assert!(e.active().is_empty());
    // RTN unacknowledged, then in alarm again: unacknowledged again.
    level(&mut e, 95.0, 3.0);
    level(&mut e, 80.0, 4.0);
    let again = level(&mut e, 95.0, 5.0);
    assert_eq!(
        states(&again),
        vec![(
            AlarmState::ReturnToNormalUnacknowledged,
            AlarmState::Unacknowledged,
            Cause::Raised
        )]
    );
}

#[test]
fn operations_without_user_or_comment_are_refused_and_change_nothing() {
    let mut d = level_high();
    d.on_delay = Duration::ZERO;
    let mut e = AlarmEngine::new(vec![d], EngineSettings::default());
    // Nothing to acknowledge while normal.
    let err = e
        .ack("tank_high", "alice", "ok", t(0.0))
        .expect_err("normal");
    assert_eq!(
        err,
        AlarmError::NotUnacknowledged {
            alarm: "tank_high".into(),
            state: AlarmState::Normal
        }
    );
    assert!(err.to_string().contains("nothing to acknowledge"), "{err}");
    level(&mut e, 95.0, 1.0);
    let err = e.ack("tank_high", " ", "ok", t(2.0)).expect_err("no user");
    assert!(matches!(err, AlarmError::MissingUser { .. }), "{err}");
    let err = e
        .ack("tank_high", "alice", "", t(2.0))
        .expect_err("no comment");
    assert!(err.to_string().contains("needs a comment"), "{err}");
    for r in [
        e.shelve("tank_high", Duration::from_secs(60), "", "x", t(2.0)),
        e.shelve("tank_high", Duration::from_secs(60), "alice", "  ", t(2.0)),
        e.remove_from_service("tank_high", "alice", "", t(2.0)),
        e.unshelve("tank_high", "", "x", t(2.0)),
        e.return_to_service("tank_high", "alice", "", t(2.0)),
    ] {
        let err = r.expect_err("refused");
        assert!(
            matches!(
                err,
                AlarmError::MissingUser { .. } | AlarmError::MissingComment { .. }
            ),
            "{err}"
        );
    }
    let err = e.ack("nope", "alice", "x", t(2.0)).expect_err("unknown");
    assert_eq!(err, AlarmError::UnknownAlarm("nope".into()));
    assert_eq!(e.state("tank_high"), Some(AlarmState::Unacknowledged));
    // A shelve longer than the maximum is refused.
    let err = e
        .shelve(
            "tank_high",
            Duration::from_secs(9 * 3600),
            "alice",
            "x",
            t(2.0),
        )
        .expect_err("too long");
    assert!(matches!(err, AlarmError::ShelveTooLong { .. }), "{err}");
    assert_eq!(e.state("tank_high"), Some(AlarmState::Unacknowledged));
}

#[test]
fn a_shelve_expires_and_the_alarm_is_annunciated_again_if_still_active() {
    let mut d = level_high();
    d.on_delay = Duration::ZERO;
    d.off_delay = Duration::ZERO;
    let mut e = AlarmEngine::new(vec![d], EngineSettings::default());
    level(&mut e, 95.0, 0.0);
    e.ack("tank_high", "alice", "known", t(1.0)).expect("ack");
    let sh = e
        .shelve(
            "tank_high",
            Duration::from_secs(600),
            "alice",
            "sensor being cleaned",
            t(2.0),
        )
        .expect("shelve");
    assert_eq!(
        (sh.from, sh.to),
        (AlarmState::Acknowledged, AlarmState::Shelved)
    );
    assert_eq!(sh.shelved_until, Some(t(602.0)));
    assert!(e.active().is_empty(), "a shelved alarm is off the summary");
    // Changes while shelved are not annunciated.
    assert!(level(&mut e, 80.0, 100.0).is_empty());
    assert!(level(&mut e, 96.0, 200.0).is_empty());
    assert_eq!(e.next_deadline(), Some(t(602.0)));
    assert!(e.tick(t(601.9)).is_empty());
    let back = e.tick(t(602.0));
    assert_eq!(
        states(&back),
        vec![(
            AlarmState::Shelved,
            AlarmState::Unacknowledged,
            Cause::ShelveExpired
        )]
    );
    // Shelved again, cleared meanwhile: comes back normal.
    e.shelve(
        "tank_high",
        Duration::from_secs(60),
        "alice",
        "again",
        t(700.0),
    )
    .expect("shelve");
    level(&mut e, 50.0, 710.0);
    let back = e.tick(t(760.0));
    assert_eq!(
        states(&back),
        vec![(
            AlarmState::Shelved,
            AlarmState::Normal,
            Cause::ShelveExpired
        )]
    );
    // Unshelve early needs a shelve.
    let err = e
        .unshelve("tank_high", "alice", "x", t(800.0))
        .expect_err("not shelved");
    assert!(matches!(err, AlarmError::NotShelved { .. }));
}

fn with_suppression() -> AlarmEngine {
    let mut d = level_high();
    d.on_delay = Duration::ZERO;
    d.off_delay = Duration::ZERO;
    d.suppress = Some(STOPPED);
    AlarmEngine::new(vec![d], EngineSettings::default())
}

#[test]
fn suppression_by_design_hides_the_alarm_and_restores_it() {
    let mut e = with_suppression();
    let stopped = |e: &mut AlarmEngine, on: bool, secs: f64| {
        e.on_samples(&[sample(STOPPED, Value::Bool(on), t(secs))], t(secs))
    };
    assert!(stopped(&mut e, false, 0.0).is_empty());
    let s = stopped(&mut e, true, 1.0);
    assert_eq!(
        states(&s),
        vec![(
            AlarmState::Normal,
            AlarmState::SuppressedByDesign,
            Cause::Suppressed
        )]
    );
    // In alarm while the line is stopped: not annunciated.
    assert!(level(&mut e, 95.0, 2.0).is_empty());
    assert!(e.active().is_empty());
    let view = e.get("tank_high").expect("view");
    assert!(view.condition, "the condition is still tracked");
    // The line starts: the alarm still holds, so it is annunciated.
    let u = stopped(&mut e, false, 3.0);
    assert_eq!(
        states(&u),
        vec![(
            AlarmState::SuppressedByDesign,
            AlarmState::Unacknowledged,
            Cause::Unsuppressed
        )]
    );
    // Acknowledged, then suppressed and released while still in alarm: annunciated again as a
    // new alarm (ISA-18.2: back through Normal), not silently acknowledged.
    e.ack("tank_high", "alice", "seen", t(3.1)).expect("ack");
    stopped(&mut e, true, 3.2);
    let u = stopped(&mut e, false, 3.3);
    assert_eq!(
        states(&u),
        vec![(
            AlarmState::SuppressedByDesign,
            AlarmState::Unacknowledged,
            Cause::Unsuppressed
        )]
    );
    // Both (the sample and the suppression) in one batch, in order.
    let both = e.on_samples(
        &[
            sample(STOPPED, Value::Bool(true), t(4.0)),
            sample(LEVEL, Value::Float(50.0), t(4.0)),
            sample(STOPPED, Value::Bool(false), t(4.0)),
        ],
        t(4.0),
    );
    assert_eq!(
        states(&both),
        vec![
            (
                AlarmState::Unacknowledged,
                AlarmState::SuppressedByDesign,
                Cause::Suppressed
            ),
            (
                AlarmState::SuppressedByDesign,
                AlarmState::Normal,
                Cause::Unsuppressed
            ),
        ]
    );
}

#[test]
fn out_of_service_hides_the_alarm_until_returned() {
    let mut e = with_suppression();
    level(&mut e, 95.0, 0.0);
    let oos = e
        .remove_from_service(
            "tank_high",
            "maint",
            "transmitter replaced, WO 4711",
            t(1.0),
        )
        .expect("oos");
    assert_eq!(
        (oos.from, oos.to),
        (AlarmState::Unacknowledged, AlarmState::OutOfService)
    );
    let err = e
        .shelve("tank_high", Duration::from_secs(60), "alice", "x", t(2.0))
        .expect_err("oos");
    assert!(matches!(err, AlarmError::OutOfService { .. }));
    let err = e
        .remove_from_service("tank_high", "maint", "again", t(2.0))
        .expect_err("twice");
    assert!(matches!(err, AlarmError::AlreadyOutOfService { .. }));
    // Suppression and process changes do not show through.
    assert!(e
        .on_samples(&[sample(STOPPED, Value::Bool(true), t(3.0))], t(3.0))
        .is_empty());
    assert!(e
        .on_samples(&[sample(STOPPED, Value::Bool(false), t(3.5))], t(3.5))
        .is_empty());
    assert!(level(&mut e, 50.0, 4.0).is_empty());
    assert!(level(&mut e, 97.0, 5.0).is_empty());
    let view = e.get("tank_high").expect("view");
    assert_eq!(view.out_of_service_by.as_deref(), Some("maint"));
    let back = e
        .return_to_service("tank_high", "maint", "calibrated", t(6.0))
        .expect("rts");
    assert_eq!(
        (back.from, back.to),
        (AlarmState::OutOfService, AlarmState::Unacknowledged)
    );
    let err = e
        .return_to_service("tank_high", "maint", "again", t(7.0))
        .expect_err("not oos");
    assert!(matches!(err, AlarmError::NotOutOfService { .. }));
}

#[test]
fn a_latching_alarm_stays_until_reset() {
    let mut d = level_high();
    d.on_delay = Duration::ZERO;
    d.off_delay = Duration::ZERO;
    d.latching = true;
    let mut e = AlarmEngine::new(vec![d], EngineSettings::default());
    level(&mut e, 95.0, 0.0);
    assert!(level(&mut e, 50.0, 1.0).is_empty(), "latched: no RTN");
    assert_eq!(e.state("tank_high"), Some(AlarmState::Unacknowledged));
    let err = e
        .reset("tank_high", "alice", "x", t(2.0))
        .expect_err("unacked");
    assert!(err.to_string().contains("acknowledge it first"), "{err}");
    e.ack("tank_high", "alice", "seen", t(3.0)).expect("ack");
    level(&mut e, 95.0, 4.0);
    let err = e
        .reset("tank_high", "alice", "x", t(5.0))
        .expect_err("active");
    assert!(err.to_string().contains("still active"), "{err}");
    level(&mut e, 50.0, 6.0);
    let r = e
        .reset("tank_high", "alice", "pump restarted", t(7.0))
        .expect("reset");
    assert_eq!(
        (r.from, r.to, r.cause),
        (AlarmState::Acknowledged, AlarmState::Normal, Cause::Reset)
    );
}

#[test]
fn deviation_rate_state_bad_quality_and_condition_alarms() {
    let base = path("acme/lyon/bottling/line1/filler/speed");
    let mut dev = AlarmDef::new(
        "speed_dev",
        LEVEL,
        base.clone(),
        Condition::Deviation {
            setpoint: Setpoint::Tag(SETPOINT),
            band: 5.0,
        },
    );
    dev.deadband = 1.0;
    let rate = AlarmDef::new(
        "speed_rate",
        LEVEL,
        base.clone(),
        Condition::Rate {
            rate: 2.0,
            window: Duration::from_secs(10),
        },
    );
    let bad = {
        let mut d = AlarmDef::new("speed_bad", LEVEL, base.clone(), Condition::BadQuality);
        d.on_delay = Duration::from_secs(30);
        d
    };
    let state = AlarmDef::new(
        "filler_stopped",
        RUNNING,
        path("acme/lyon/bottling/line1/filler/running"),
        Condition::State {
            state: Value::Bool(false),
            equal: true,
        },
    );
    let cond = AlarmDef::new(
        "line_eff_low",
        STOPPED,
        path("acme/lyon/bottling/line1"),
        Condition::Condition,
    );
    let mut e = AlarmEngine::new(vec![dev, rate, bad, state, cond], EngineSettings::default());
    let ids = |ts: &[Transition]| -> Vec<(String, AlarmState)> {
        ts.iter().map(|t| (t.alarm.to_string(), t.to)).collect()
    };
    // No setpoint yet: no deviation alarm.
    assert!(e
        .on_samples(&[sample(LEVEL, Value::Float(100.0), t(0.0))], t(0.0))
        .is_empty());
    let r = e.on_samples(&[sample(SETPOINT, Value::Float(90.0), t(0.0))], t(0.0));
    assert_eq!(
        ids(&r),
        vec![("speed_dev".into(), AlarmState::Unacknowledged)]
    );
    // 100 → 104.5 in 10 s is 0.45/s; |104.5 - 90| still > band - deadband.
    assert!(e
        .on_samples(&[sample(LEVEL, Value::Float(104.5), t(10.0))], t(10.0))
        .is_empty());
    // The setpoint follows: deviation 0.5 → clears.
    let r = e.on_samples(&[sample(SETPOINT, Value::Float(104.0), t(11.0))], t(11.0));
    assert_eq!(
        ids(&r),
        vec![("speed_dev".into(), AlarmState::ReturnToNormalUnacknowledged)]
    );
    // A jump of 40 in 10 s is 4/s > 2/s.
    let r = e.on_samples(&[sample(LEVEL, Value::Float(144.5), t(20.0))], t(20.0));
    let got = ids(&r);
    assert!(
        got.contains(&("speed_rate".into(), AlarmState::Unacknowledged)),
        "{got:?}"
    );
    // Bad quality for less than 30 s: nothing; longer: the alarm.
    let mut bad_sample = sample(LEVEL, Value::Null, t(30.0));
    bad_sample.quality = Quality::bad(QualityReason::CommFailure);
    assert!(e.on_samples(&[bad_sample.clone()], t(30.0)).is_empty());
    assert!(e.tick(t(59.0)).is_empty());
    assert_eq!(
        ids(&e.tick(t(60.0))),
        vec![("speed_bad".into(), AlarmState::Unacknowledged)]
    );
    // Value-based alarms keep their state on a Bad sample.
    assert_eq!(e.get("speed_rate").map(|v| v.condition), Some(true));
    // Discrete state.
    let r = e.on_samples(&[sample(RUNNING, Value::Bool(false), t(61.0))], t(61.0));
    assert_eq!(
        ids(&r),
        vec![("filler_stopped".into(), AlarmState::Unacknowledged)]
    );
    // A condition fed by the caller (an expression's bool).
    let r = e.on_samples(&[sample(STOPPED, Value::Bool(true), t(62.0))], t(62.0));
    assert_eq!(
        ids(&r),
        vec![("line_eff_low".into(), AlarmState::Unacknowledged)]
    );
    let r = e.on_samples(&[sample(STOPPED, Value::Bool(false), t(63.0))], t(63.0));
    assert_eq!(
        ids(&r),
        vec![(
            "line_eff_low".into(),
            AlarmState::ReturnToNormalUnacknowledged
        )]
    );
}

#[test]
fn the_summary_is_sorted_by_priority_then_newest_first() {
    let mk = |id: &str, tag: u32, prio: u8| {
        let mut d = AlarmDef::new(
            id,
            TagId(tag),
            path(&format!("a/b/c/t{tag}")),
            Condition::High { limit: 1.0 },
        );
        d.priority = prio;
        d
    };
    let mut e = AlarmEngine::new(
        vec![
            mk("p3_old", 0, 3),
            mk("p1", 1, 1),
            mk("p3_new", 2, 3),
            mk("p2", 3, 2),
        ],
        EngineSettings::default(),
    );
    for (i, tag) in [0u32, 1, 2, 3].iter().enumerate() {
        e.on_samples(
            &[sample(TagId(*tag), Value::Int(5), t(i as f64))],
            t(i as f64),
        );
    }
    let order: Vec<String> = e.active().into_iter().map(|v| v.id).collect();
    assert_eq!(order, ["p1", "p2", "p3_new", "p3_old"]);
}

#[test]
fn a_transition_is_an_alarm_event_and_reads_back() {
    let mut d = level_high();
    d.on_delay = Duration::ZERO;
    let mut e = AlarmEngine::new(vec![d], EngineSettings::default());
    level(&mut e, 95.0, 0.0);
    let sh = e
        .shelve(
            "tank_high",
            Duration::from_secs(60),
            "alice",
            "cleaning",
            t(1.0),
        )
        .expect("shelve");
    let ev = sh.to_event();
    assert_eq!(ev.kind, EventKind::Alarm);
    assert_eq!(&*ev.code, "shelved");
    assert_eq!(ev.severity, Severity::Error, "priority 2");
    assert_eq!(
        ev.subject.as_ref().map(|s| s.as_str()),
        Some("acme/lyon/bottling/line1/tank/level")
    );
    assert_eq!(ev.actor.as_deref(), Some("alice"));
    assert_eq!(
        ev.attribute("state"),
        Some(&Value::String("shelved".into()))
    );
    assert_eq!(
        ev.attribute("from"),
        Some(&Value::String("unacknowledged".into()))
    );
    assert_eq!(ev.attribute("priority"), Some(&Value::Int(2)));
    assert_eq!(
        ev.attribute("comment"),
        Some(&Value::String("cleaning".into()))
    );
    assert_eq!(ev.attribute("value"), Some(&Value::Float(95.0)));
    // Through the wire format and back, as the event store does.
    let json = serde_json::to_string(&ironplant_core::wire::EventJson::new(&ev)).expect("json");
    let back: ironplant_core::wire::EventIn = serde_json::from_str(&json).expect("parse");
    let back = back.into_event().expect("event");
    assert_eq!(Transition::from_event(&back), Some(sh));
}

#[test]
fn samples_of_tags_without_alarms_and_unknown_ids_are_ignored() {
    let mut e = AlarmEngine::new(vec![level_high()], EngineSettings::default());
    let r = e.on_samples(
        &[
            sample(TagId(7), Value::Float(1e9), t(0.0)),
            sample(TagId(u32::MAX), Value::Float(1e9), t(0.0)),
        ],
        t(0.0),
    );
    assert!(r.is_empty());
    assert_eq!(e.get("tank_high").and_then(|v| v.value), None);
}
