//! Unauthorised-change detection: a Good sample that no authorised command explains is reported
//! once (not per sample), re-armed when the value returns or a new command is made, not during
//! a command's verification, and with `restore` a platform command writes the expected value
//! back through the same checks. Manual clock.

mod command_support;

use command_support::*;
use ironplant_control::command::{AuditResult, Basis, CommandRequest, Outcome, UnauthorisedChange};
use ironplant_core::{EventKind, Quality, QualityReason, Severity, Value, WriteAck};

fn change(out: &[Outcome]) -> &UnauthorisedChange {
    match out {
        [Outcome::UnauthorisedChange(c)] => c,
        other => panic!("expected one unauthorised change, got {other:?}"),
    }
}

#[test]
fn a_change_nobody_commanded_is_reported_once_and_re_armed_when_it_returns() {
    let mut cp = bottling();
    let pump = path(PUMP);
    cp.watch(pump.clone());
    // Never commanded: the first Good value is the baseline.
    assert!(cp
        .observe(&pump, &Value::Bool(true), Quality::GOOD, t(0.0))
        .is_empty());
    assert!(cp
        .observe(&pump, &Value::Bool(true), Quality::GOOD, t(1.0))
        .is_empty());
    let out = cp.observe(&pump, &Value::Bool(false), Quality::GOOD, t(2.0));
    let c = change(&out);
    assert_eq!(c.expected, Value::Bool(true));
    assert_eq!(c.seen, Value::Bool(false));
    assert_eq!(c.since, t(2.0));
    assert_eq!(c.basis, Basis::Learned { at: t(0.0) });
    assert_eq!(
        c.restore, None,
        "pump_enable has no [[command]]: alarm only"
    );
    // Once per change, not per sample.
    assert!(cp
        .observe(&pump, &Value::Bool(false), Quality::GOOD, t(3.0))
        .is_empty());
    assert!(cp
        .observe(&pump, &Value::Bool(false), Quality::GOOD, t(4.0))
        .is_empty());
    // Back to the expected value: reverted, re-armed.
    assert_eq!(
        cp.observe(&pump, &Value::Bool(true), Quality::GOOD, t(5.0)),
        vec![Outcome::ChangeReverted {
            tag: pump.clone(),
            value: Value::Bool(true)
        }]
    );
    let out = cp.observe(&pump, &Value::Bool(false), Quality::GOOD, t(6.0));
    assert_eq!(change(&out).since, t(6.0));
    let audit = cp.drain_audit();
    assert_eq!(
        audit
            .iter()
            .filter(|r| matches!(r.result, AuditResult::UnauthorisedChange { .. }))
            .count(),
        2
    );
}

#[test]
fn bad_samples_and_unwatched_tags_are_ignored() {
    let mut cp = bottling();
    let speed = path(SPEED);
    cp.observe(&speed, &Value::Int(300), Quality::GOOD, t(0.0));
    assert!(cp
        .observe(
            &speed,
            &Value::Int(0),
            bad(QualityReason::CommFailure),
            t(1.0)
        )
        .is_empty());
    // A tag nobody watches or commands.
    let state = path(STATE);
    assert!(cp
        .observe(&state, &Value::Int(1), Quality::GOOD, t(0.0))
        .is_empty());
    assert!(cp
        .observe(&state, &Value::Int(2), Quality::GOOD, t(1.0))
        .is_empty());
}

#[test]
fn another_rogue_value_is_another_change() {
    let mut cp = bottling();
    let speed = path(SPEED);
    cp.observe(&speed, &Value::Int(300), Quality::GOOD, t(0.0));
    assert_eq!(
        change(&cp.observe(&speed, &Value::Int(500), Quality::GOOD, t(1.0))).seen,
        Value::Int(500)
    );
    assert_eq!(
        change(&cp.observe(&speed, &Value::Int(550), Quality::GOOD, t(2.0))).seen,
        Value::Int(550)
    );
}

#[test]
fn the_commanded_value_is_expected_after_a_command_and_not_checked_while_it_is_verified() {
    let mut cp = bottling();
    let speed = path(SPEED);
    cp.observe(&speed, &Value::Int(300), Quality::GOOD, t(0.0));
    let id = cp
        .submit(
            req(SPEED, Value::Int(350), alice(), Some(Value::Int(300))),
            &none(),
            t(1.0),
        )
        .accepted()
        .map(|a| a.id)
        .expect("accepted");
    cp.device_acknowledged(
        id,
        &WriteAck {
            detail: String::new(),
            echoed: None,
        },
        t(1.1),
    );
    // During verification the old value is no unauthorised change.
    assert!(cp
        .observe(&speed, &Value::Int(300), Quality::GOOD, t(1.5))
        .is_empty());
    assert!(matches!(
        cp.observe(&speed, &Value::Int(350), Quality::GOOD, t(2.0))
            .as_slice(),
        [Outcome::Verified { .. }]
    ));
    let out = cp.observe(&speed, &Value::Int(300), Quality::GOOD, t(3.0));
    let c = change(&out);
    assert_eq!(c.expected, Value::Int(350));
    assert_eq!(c.basis, Basis::Commanded { id, at: t(1.0) });
}

#[test]
fn a_new_command_re_arms_detection() {
    let mut cp = bottling();
    let speed = path(SPEED);
    cp.observe(&speed, &Value::Int(300), Quality::GOOD, t(0.0));
    change(&cp.observe(&speed, &Value::Int(320), Quality::GOOD, t(1.0)));
    // An operator makes 320 the commanded value: verified, nothing to report any more.
    let id = cp
        .submit(
            req(SPEED, Value::Int(320), alice(), Some(Value::Int(320))),
            &none(),
            t(2.0),
        )
        .accepted()
        .map(|a| a.id)
        .expect("accepted");
    let out = cp.device_acknowledged(
        id,
        &WriteAck {
            detail: String::new(),
            echoed: Some(Value::Int(320)),
        },
        t(2.1),
    );
    assert!(matches!(out, Some(Outcome::Verified { .. })));
    assert!(cp
        .observe(&speed, &Value::Int(320), Quality::GOOD, t(3.0))
        .is_empty());
    change(&cp.observe(&speed, &Value::Int(300), Quality::GOOD, t(4.0)));
}

#[test]
fn restore_generates_a_platform_command_that_passes_the_same_checks() {
    let mut cp = bottling();
    let speed = path(SPEED);
    let id = cp
        .submit(
            req(SPEED, Value::Int(350), alice(), Some(Value::Int(300))),
            &none(),
            t(0.0),
        )
        .accepted()
        .map(|a| a.id)
        .expect("accepted");
    cp.device_acknowledged(
        id,
        &WriteAck {
            detail: String::new(),
            echoed: Some(Value::Int(350)),
        },
        t(0.1),
    );
    cp.drain_audit();
    // A rogue Modbus master writes 420.
    let out = cp.observe(&speed, &Value::Int(420), Quality::GOOD, t(10.0));
    let c = change(&out).clone();
    assert_eq!(c.restore, Some(Value::Int(350)));
    let rec = cp.drain_audit().pop().expect("audited");
    assert_eq!(rec.actor, "unknown");
    assert_eq!(rec.old_value, Value::Int(350));
    assert_eq!(rec.new_value, Value::Int(420));
    let AuditResult::UnauthorisedChange { message } = &rec.result else {
        panic!("{rec:?}")
    };
    assert!(message.starts_with(&format!(
        "unauthorised change of {SPEED}: the device shows 420 but the platform expects 350 (commanded by command {id} at"
    )), "{message}");
    assert!(message.ends_with("; restoring it"), "{message}");
    let event = rec.to_event();
    assert_eq!(event.kind, EventKind::Security);
    assert_eq!(event.severity, Severity::Critical);
    assert_eq!(&*event.code, "unauthorised_change");
    // The restore goes through the checks as the platform (70 bpm step, 7 s/10 s since the
    // last write: inside the envelope).
    let restore = CommandRequest::restore(
        c.tag.clone(),
        c.restore.clone().expect("restore"),
        info(SPEED, Some(Value::Int(420))),
    );
    let d = cp.submit(restore, &none(), t(10.0));
    let a = d.accepted().expect("the restore passes the envelope");
    assert_eq!(a.value, Value::Int(350));
    assert_eq!(a.requested_by, "platform");
    let rec = cp.drain_audit().pop().expect("audited");
    assert_eq!(rec.actor_kind, "platform");
    assert_eq!(rec.origin, "platform");
    assert_eq!(rec.old_value, Value::Int(420));
}

#[test]
fn a_restore_outside_the_envelope_is_refused_like_any_command() {
    let mut cp = bottling();
    let speed = path(SPEED);
    cp.observe(&speed, &Value::Int(300), Quality::GOOD, t(0.0));
    let out = cp.observe(&speed, &Value::Int(550), Quality::GOOD, t(1.0));
    let c = change(&out).clone();
    assert_eq!(c.restore, Some(Value::Int(300)));
    let d = cp.submit(
        CommandRequest::restore(c.tag, Value::Int(300), info(SPEED, Some(Value::Int(550)))),
        &none(),
        t(1.0),
    );
    assert_eq!(d.refusal().map(|r| r.code()), Some("envelope_step"));
}

#[test]
fn a_configured_expected_value_is_the_baseline_before_any_sample() {
    let text = format!(
        "{PLANT}\n[[command]]\ntag = \"{PUMP}\"\nexpected = true\non_unauthorised_change = \"restore\"\n"
    );
    let config = parse(&text).unwrap_or_else(|e| panic!("{e}"));
    let mut cp = ironplant_control::command::CommandPath::new(
        &config.get::<ironplant_control::command::CommandSettings>(),
        &config.get::<ironplant_control::command::InterlockSettings>(),
    );
    let out = cp.observe(&path(PUMP), &Value::Bool(false), Quality::GOOD, t(0.0));
    let c = change(&out);
    assert_eq!(c.basis, Basis::Configured);
    assert_eq!(c.expected, Value::Bool(true));
    assert_eq!(c.restore, Some(Value::Bool(true)));
}

/// A tag writable only because its protocol lets any value be commanded (a Sparkplug metric
/// without a `[[command]]`: a counter, a measurement) changes by itself: its changes are no
/// finding, but a command to it is still verified by read-back. Watching it as a setpoint
/// later (`watch`) turns detection on; a read-back watch never turns it off.
#[test]
fn a_tag_watched_for_read_back_only_is_verified_but_its_changes_are_no_finding() {
    let mut cp = bottling();
    let pump = path(PUMP);
    cp.watch_read_back(pump.clone());
    for (i, v) in [true, false, true, false].into_iter().enumerate() {
        assert!(
            cp.observe(&pump, &Value::Bool(v), Quality::GOOD, t(i as f64))
                .is_empty(),
            "sample {i}"
        );
    }
    let id = cp
        .submit(
            req(PUMP, Value::Bool(true), alice(), Some(Value::Bool(false))),
            &none(),
            t(5.0),
        )
        .accepted()
        .map(|a| a.id)
        .expect("accepted");
    let ack = WriteAck {
        detail: String::new(),
        echoed: None,
    };
    cp.device_acknowledged(id, &ack, t(5.1));
    assert!(matches!(
        cp.observe(&pump, &Value::Bool(true), Quality::GOOD, t(5.5))
            .as_slice(),
        [Outcome::Verified { .. }]
    ));
    assert!(cp
        .observe(&pump, &Value::Bool(false), Quality::GOOD, t(6.0))
        .is_empty());
    // Declared a setpoint: detection from now on, against the last commanded value.
    cp.watch(pump.clone());
    cp.watch_read_back(pump.clone());
    let out = cp.observe(&pump, &Value::Bool(false), Quality::GOOD, t(7.0));
    assert_eq!(change(&out).expected, Value::Bool(true));
}
