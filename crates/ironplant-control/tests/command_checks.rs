//! Every check of the command path and its refusal: authorisation, tag, value type, envelope
//! (min, max, step, rate, interval), interlocks (false, Bad input, not evaluated),
//! select-before-operate and the two-person rule; and the accepted path. Manual clock.

mod command_support;

use std::time::Duration;

use command_support::*;
use ironplant_control::command::{
    AuditResult, Authorisation, CommandId, Decision, Denial, EnvelopeViolation, InterlockState,
    Origin, Refusal, RefusalReason, Requester, Role, TagInfo,
};
use ironplant_core::{Quality, QualityReason, Value, ValueType};

fn refused(d: &Decision) -> &Refusal {
    match d {
        Decision::Refused(r) => r,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn last_result(cp: &mut ironplant_control::command::CommandPath) -> AuditResult {
    cp.drain_audit()
        .pop()
        .map(|r| r.result)
        .expect("every decision is audited")
}

#[test]
fn an_accepted_write_says_what_to_write_and_is_audited() {
    let mut cp = bottling();
    let d = cp.submit(
        req(SPEED, Value::Int(350), alice(), Some(Value::Int(300))),
        &none(),
        t(0.0),
    );
    let a = d.accepted().expect("within the envelope");
    assert_eq!(a.tag.as_str(), SPEED);
    assert_eq!(a.value, Value::Int(350));
    assert_eq!(a.requested_by, "alice");
    let audit = cp.drain_audit();
    assert_eq!(audit.len(), 1);
    let r = &audit[0];
    assert_eq!(r.result, AuditResult::Accepted);
    assert_eq!(r.actor, "alice");
    assert_eq!(r.role.as_deref(), Some("operator"));
    assert_eq!(r.session.as_deref(), Some("s-alice"));
    assert_eq!(r.old_value, Value::Int(300));
    assert_eq!(r.new_value, Value::Int(350));
    assert_eq!(r.origin, "rest");
    assert_eq!(r.command, a.id.0);
}

#[test]
fn an_integer_for_a_float_tag_is_written_as_a_float() {
    let mut cp = bottling();
    let d = cp.submit(
        req(LEVEL, Value::Int(60), alice(), Some(Value::Float(55.0))),
        &none(),
        t(0.0),
    );
    assert_eq!(d.accepted().map(|a| &a.value), Some(&Value::Float(60.0)));
}

#[test]
fn a_viewer_is_refused_with_the_policy_reason_and_audited() {
    let mut cp = bottling();
    let mut r = req(SPEED, Value::Int(350), viewer(), Some(Value::Int(300)));
    r.authorisation = denied_viewer();
    let d = cp.submit(r, &none(), t(0.0));
    let refusal = refused(&d);
    assert_eq!(refusal.code(), "not_authorised");
    assert_eq!(
        refusal.to_string(),
        format!("write to {SPEED} refused: victor is not authorised to write it: the role viewer lacks the permission write_setpoints")
    );
    match last_result(&mut cp) {
        AuditResult::Refused { code, message } => {
            assert_eq!(code, "not_authorised");
            assert!(
                message.contains("lacks the permission write_setpoints"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
    // A tag scope (prefix) denial says so too.
    let mut r = req(SPEED, Value::Int(350), alice(), Some(Value::Int(300)));
    r.authorisation = Authorisation::Denied(Denial::Prefix {
        tag_scope: "acme/lyon/packaging".to_owned(),
    });
    let d = cp.submit(r, &none(), t(0.0));
    assert!(refused(&d)
        .to_string()
        .contains("outside the identity's tag scope (acme/lyon/packaging)"));
}

#[test]
fn unknown_read_only_and_mistyped_writes_are_refused() {
    let mut cp = bottling();
    let mut r = req(SPEED, Value::Int(1), alice(), None);
    r.info = None;
    assert_eq!(
        refused(&cp.submit(r, &none(), t(0.0))).reason,
        RefusalReason::UnknownTag
    );
    let mut r = req(STATE, Value::Int(1), alice(), None);
    r.info = Some(TagInfo {
        writable: false,
        value_type: ValueType::Int,
        current: None,
    });
    assert_eq!(
        refused(&cp.submit(r, &none(), t(0.0))).reason,
        RefusalReason::NotWritable
    );
    let r = req(
        SPEED,
        Value::String("fast".into()),
        alice(),
        Some(Value::Int(300)),
    );
    let d = cp.submit(r, &none(), t(0.0));
    assert_eq!(
        refused(&d).reason,
        RefusalReason::BadValueType {
            expected: ValueType::Int,
            got: "string"
        }
    );
    assert!(refused(&d)
        .to_string()
        .ends_with("the value is string, the tag takes int"));
    let r = req(CIP, Value::Int(1), erin(), Some(Value::Bool(false)));
    assert_eq!(
        refused(&cp.submit(r, &none(), t(0.0))).code(),
        "bad_value_type"
    );
}

#[test]
fn the_envelope_refuses_below_min_and_above_max_with_the_numbers() {
    let mut cp = bottling();
    let d = cp.submit(
        req(SPEED, Value::Int(-5), alice(), Some(Value::Int(0))),
        &none(),
        t(0.0),
    );
    assert_eq!(
        refused(&d).reason,
        RefusalReason::Envelope(EnvelopeViolation::BelowMin {
            value: -5.0,
            min: 0.0
        })
    );
    assert_eq!(refused(&d).code(), "envelope_min");
    assert!(refused(&d)
        .to_string()
        .ends_with("outside the operating envelope: -5 is below the minimum 0"));
    let d = cp.submit(
        req(SPEED, Value::Int(650), alice(), Some(Value::Int(580))),
        &none(),
        t(0.0),
    );
    assert_eq!(refused(&d).code(), "envelope_max");
    assert!(refused(&d)
        .to_string()
        .ends_with("650 is above the maximum 600"));
    // The edges are inside.
    assert!(cp
        .submit(
            req(SPEED, Value::Int(600), alice(), Some(Value::Int(580))),
            &none(),
            t(0.0)
        )
        .accepted()
        .is_some());
}

#[test]
fn the_envelope_refuses_a_step_larger_than_max_step_from_the_current_value() {
    let mut cp = bottling();
    let d = cp.submit(
        req(SPEED, Value::Int(450), alice(), Some(Value::Int(300))),
        &none(),
        t(0.0),
    );
    assert_eq!(
        refused(&d).reason,
        RefusalReason::Envelope(EnvelopeViolation::StepTooLarge {
            from: 300.0,
            to: 450.0,
            max_step: 100.0
        })
    );
    assert!(refused(&d)
        .to_string()
        .ends_with("a step from 300 to 450 is 150 (maximum step 100)"));
    // Unknown or Bad current value: the step cannot be checked, refused (fail safe).
    let d = cp.submit(req(SPEED, Value::Int(320), alice(), None), &none(), t(0.0));
    assert_eq!(refused(&d).code(), "envelope_step");
    assert!(refused(&d)
        .to_string()
        .contains("the current value is unknown"));
    let mut r = req(SPEED, Value::Int(320), alice(), None);
    r.info = Some(TagInfo {
        writable: true,
        value_type: ValueType::Int,
        current: Some((Value::Int(300), Quality::bad(QualityReason::CommFailure))),
    });
    let d = cp.submit(r, &none(), t(0.0));
    assert!(refused(&d)
        .to_string()
        .contains("the current value is Bad(CommFailure); refused to fail safe"));
}

#[test]
fn the_envelope_refuses_a_rate_above_max_rate_since_the_last_write() {
    let mut cp = bottling();
    let ok = cp.submit(
        req(SPEED, Value::Int(350), alice(), Some(Value::Int(300))),
        &none(),
        t(0.0),
    );
    assert!(ok.accepted().is_some());
    // 70 bpm in 3 s is 23.3 bpm/s > 20.
    let d = cp.submit(
        req(SPEED, Value::Int(420), alice(), Some(Value::Int(350))),
        &none(),
        t(3.0),
    );
    assert_eq!(
        refused(&d).reason,
        RefusalReason::Envelope(EnvelopeViolation::RateTooHigh {
            from: 350.0,
            to: 420.0,
            elapsed: Duration::from_secs(3),
            max_rate: 20.0
        })
    );
    assert!(refused(&d).to_string().ends_with(
        "from 350 to 420 in 3.000 s since the last write is 23.333 units/s (maximum rate 20 units/s)"
    ));
    // 70 in 4 s is 17.5 bpm/s.
    let d = cp.submit(
        req(SPEED, Value::Int(420), alice(), Some(Value::Int(350))),
        &none(),
        t(4.0),
    );
    assert!(d.accepted().is_some(), "{d:?}");
}

#[test]
fn the_envelope_refuses_a_write_sooner_than_min_interval() {
    let mut cp = bottling();
    assert!(cp
        .submit(
            req(SPEED, Value::Int(310), alice(), Some(Value::Int(300))),
            &none(),
            t(0.0)
        )
        .accepted()
        .is_some());
    let d = cp.submit(
        req(SPEED, Value::Int(310), bob(), Some(Value::Int(310))),
        &none(),
        t(1.5),
    );
    assert_eq!(
        refused(&d).reason,
        RefusalReason::Envelope(EnvelopeViolation::TooSoon {
            elapsed: Duration::from_millis(1500),
            min_interval: Duration::from_secs(2)
        })
    );
    assert_eq!(refused(&d).code(), "envelope_interval");
    assert!(refused(&d)
        .to_string()
        .ends_with("the last write was 1.500 s ago (minimum time between writes 2.000 s)"));
    // Refusals do not count as writes: 2 s after the accepted one it passes.
    assert!(cp
        .submit(
            req(SPEED, Value::Int(310), bob(), Some(Value::Int(310))),
            &none(),
            t(2.0)
        )
        .accepted()
        .is_some());
}

fn selected_recipe(cp: &mut ironplant_control::command::CommandPath, at: f64) {
    cp.select(
        req(RECIPE, Value::Null, alice(), Some(Value::Int(3))),
        &holds(),
        t(at),
    )
    .expect("alice may select the recipe");
}

#[test]
fn an_interlock_that_does_not_hold_refuses_with_its_name_message_and_detail() {
    let mut cp = bottling();
    selected_recipe(&mut cp, 0.0);
    let running = filler_stopped(InterlockState::Violated, "machine_state = 1 (running)");
    let d = cp.submit(
        req(RECIPE, Value::Int(4), alice(), Some(Value::Int(3))),
        &running,
        t(1.0),
    );
    assert_eq!(
        refused(&d).reason,
        RefusalReason::Interlock {
            name: "filler_stopped".to_owned(),
            message: "no recipe change while the filler runs".to_owned(),
            state: InterlockState::Violated,
            detail: "machine_state = 1 (running)".to_owned()
        }
    );
    assert_eq!(refused(&d).code(), "interlock");
    assert!(refused(&d).to_string().ends_with(
        "interlock filler_stopped does not hold: no recipe change while the filler runs (machine_state = 1 (running))"
    ));
    // Interlocks are checked before the selection, which therefore still holds.
    let d = cp.submit(
        req(RECIPE, Value::Int(4), alice(), Some(Value::Int(3))),
        &holds(),
        t(2.0),
    );
    assert!(d.accepted().is_some(), "{d:?}");
}

#[test]
fn an_interlock_with_a_bad_input_or_not_evaluated_refuses_to_fail_safe() {
    let mut cp = bottling();
    selected_recipe(&mut cp, 0.0);
    let unknown = filler_stopped(
        InterlockState::BadInput,
        "machine_state is Bad(CommFailure)",
    );
    let d = cp.submit(
        req(RECIPE, Value::Int(4), alice(), Some(Value::Int(3))),
        &unknown,
        t(1.0),
    );
    assert_eq!(refused(&d).code(), "interlock_bad_input");
    assert!(refused(&d).to_string().ends_with(
        "interlock filler_stopped (no recipe change while the filler runs) cannot be evaluated: an input is not Good (machine_state is Bad(CommFailure)); refused to fail safe"
    ));
    let d = cp.submit(
        req(RECIPE, Value::Int(4), alice(), Some(Value::Int(3))),
        &none(),
        t(1.0),
    );
    assert_eq!(refused(&d).code(), "interlock_bad_input");
    assert!(refused(&d)
        .to_string()
        .contains("the interlock was not evaluated"));
}

#[test]
fn select_before_operate_refuses_an_operate_without_select() {
    let mut cp = bottling();
    let d = cp.submit(
        req(RECIPE, Value::Int(4), alice(), Some(Value::Int(3))),
        &holds(),
        t(0.0),
    );
    assert_eq!(refused(&d).reason, RefusalReason::NotSelected);
    assert!(refused(&d).to_string().ends_with(
        "select-before-operate: the tag was not selected by this session; select it first"
    ));
    assert_eq!(last_result(&mut cp).code(), "refused");
}

#[test]
fn select_then_operate_in_the_window_is_accepted_once() {
    let mut cp = bottling();
    let token = cp
        .select(
            req(RECIPE, Value::Int(4), alice(), Some(Value::Int(3))),
            &holds(),
            t(0.0),
        )
        .expect("select");
    assert_eq!(token.session, "s-alice");
    assert_eq!(token.expires_at, t(10.0));
    assert_eq!(token.value, Some(Value::Int(4)));
    assert!(matches!(
        cp.drain_audit()[0].result,
        AuditResult::Selected { expires_at } if expires_at == t(10.0)
    ));
    // Selected for 4: another value is refused, and the selection stays.
    let d = cp.submit(
        req(RECIPE, Value::Int(5), alice(), Some(Value::Int(3))),
        &holds(),
        t(5.0),
    );
    assert_eq!(
        refused(&d).reason,
        RefusalReason::SelectValueMismatch {
            selected: Value::Int(4)
        }
    );
    let d = cp.submit(
        req(RECIPE, Value::Int(4), alice(), Some(Value::Int(3))),
        &holds(),
        t(9.9),
    );
    assert!(d.accepted().is_some(), "{d:?}");
    // The operate used the selection up.
    let d = cp.submit(
        req(RECIPE, Value::Int(4), alice(), Some(Value::Int(4))),
        &holds(),
        t(9.95),
    );
    assert_eq!(refused(&d).reason, RefusalReason::NotSelected);
}

#[test]
fn an_operate_after_the_selection_expired_is_refused() {
    let mut cp = bottling();
    selected_recipe(&mut cp, 0.0);
    let d = cp.submit(
        req(RECIPE, Value::Int(4), alice(), Some(Value::Int(3))),
        &holds(),
        t(10.0),
    );
    assert_eq!(
        refused(&d).reason,
        RefusalReason::SelectExpired {
            expired_at: t(10.0)
        }
    );
    assert_eq!(refused(&d).code(), "select_expired");
    assert!(refused(&d).to_string().contains("the selection expired at"));
}

#[test]
fn a_selection_held_by_another_session_refuses_its_select_and_operate() {
    let mut cp = bottling();
    selected_recipe(&mut cp, 0.0);
    let e = cp
        .select(
            req(RECIPE, Value::Null, bob(), Some(Value::Int(3))),
            &holds(),
            t(1.0),
        )
        .expect_err("alice holds it");
    assert_eq!(
        e.reason,
        RefusalReason::SelectedByAnotherSession {
            holder: "s-alice".to_owned(),
            expires_at: t(10.0)
        }
    );
    let d = cp.submit(
        req(RECIPE, Value::Int(4), bob(), Some(Value::Int(3))),
        &holds(),
        t(2.0),
    );
    assert_eq!(refused(&d).code(), "selected_by_another_session");
    // The same user in another session is another session.
    let d = cp.submit(
        req(
            RECIPE,
            Value::Int(4),
            Requester::user("alice", Role::Operator, "s-alice-2"),
            Some(Value::Int(3)),
        ),
        &holds(),
        t(2.0),
    );
    assert_eq!(refused(&d).code(), "selected_by_another_session");
    // Once it has expired (tick), bob may select.
    cp.tick(t(10.0));
    assert!(cp
        .select(
            req(RECIPE, Value::Null, bob(), Some(Value::Int(3))),
            &holds(),
            t(10.0)
        )
        .is_ok());
}

#[test]
fn a_cancelled_selection_frees_the_tag() {
    let mut cp = bottling();
    selected_recipe(&mut cp, 0.0);
    assert!(
        !cp.cancel_select(&path(RECIPE), &bob(), Origin::Mqtt, t(1.0)),
        "bob holds nothing"
    );
    assert!(cp.cancel_select(&path(RECIPE), &alice(), Origin::Mqtt, t(1.0)));
    assert_eq!(last_result(&mut cp), AuditResult::SelectCancelled);
    let d = cp.submit(
        req(RECIPE, Value::Int(4), alice(), Some(Value::Int(3))),
        &holds(),
        t(2.0),
    );
    assert_eq!(refused(&d).reason, RefusalReason::NotSelected);
    assert!(cp
        .select(
            req(RECIPE, Value::Null, bob(), Some(Value::Int(3))),
            &holds(),
            t(2.0)
        )
        .is_ok());
}

#[test]
fn a_viewer_cannot_select() {
    let mut cp = bottling();
    let mut r = req(RECIPE, Value::Null, viewer(), Some(Value::Int(3)));
    r.authorisation = denied_viewer();
    assert_eq!(
        cp.select(r, &holds(), t(0.0)).expect_err("viewer").code(),
        "not_authorised"
    );
}

fn cip_pending(cp: &mut ironplant_control::command::CommandPath) -> CommandId {
    match cp.submit(
        req(CIP, Value::Bool(true), erin(), Some(Value::Bool(false))),
        &none(),
        t(0.0),
    ) {
        Decision::AwaitingConfirmation(p) => {
            assert_eq!(p.requested_by, "erin");
            assert_eq!(p.needs_role, Role::Engineer);
            assert_eq!(p.expires_at, t(60.0));
            p.id
        }
        other => panic!("expected a pending command, got {other:?}"),
    }
}

fn confirm_by(
    cp: &mut ironplant_control::command::CommandPath,
    id: CommandId,
    who: &Requester,
    at: f64,
) -> Decision {
    cp.confirm(
        id,
        who,
        &Authorisation::Allowed,
        info(CIP, Some(Value::Bool(false))),
        &none(),
        t(at),
    )
}

#[test]
fn a_two_person_write_waits_then_a_second_engineer_confirms_it() {
    let mut cp = bottling();
    let id = cip_pending(&mut cp);
    assert!(matches!(
        last_result(&mut cp),
        AuditResult::Pending { ref needs_role, .. } if needs_role == "engineer"
    ));
    assert_eq!(cp.pending().len(), 1);
    let frank = Requester::user("frank", Role::Admin, "s-frank");
    let d = confirm_by(&mut cp, id, &frank, 30.0);
    let a = d.accepted().expect("a second person with a higher role");
    assert_eq!(a.id, id);
    assert_eq!(a.value, Value::Bool(true));
    assert_eq!(a.requested_by, "erin");
    assert_eq!(a.confirmed_by.as_deref(), Some("frank"));
    let r = cp.drain_audit().pop().expect("audited");
    assert_eq!(r.result, AuditResult::Accepted);
    assert_eq!(r.actor, "erin");
    assert_eq!(r.confirmer.as_deref(), Some("frank"));
    assert_eq!(r.confirmer_role.as_deref(), Some("admin"));
    assert_eq!(r.requested_at, t(0.0));
    assert_eq!(r.ts, t(30.0));
    assert!(cp.pending().is_empty());
}

#[test]
fn the_requester_cannot_be_the_second_person() {
    let mut cp = bottling();
    let id = cip_pending(&mut cp);
    let again = Requester::user("erin", Role::Engineer, "s-erin-phone");
    let d = confirm_by(&mut cp, id, &again, 5.0);
    assert_eq!(
        refused(&d).reason,
        RefusalReason::SameUser {
            user: "erin".to_owned()
        }
    );
    assert!(refused(&d).to_string().ends_with(
        "two-person rule: erin requested the command and cannot confirm it; a second person must"
    ));
    // Still pending for the right person.
    assert_eq!(cp.pending().len(), 1);
    assert!(confirm_by(
        &mut cp,
        id,
        &Requester::user("gus", Role::Engineer, "g"),
        6.0
    )
    .accepted()
    .is_some());
}

#[test]
fn a_confirmer_below_the_configured_role_is_refused() {
    let mut cp = bottling();
    let id = cip_pending(&mut cp);
    let d = confirm_by(&mut cp, id, &bob(), 5.0);
    assert_eq!(
        refused(&d).reason,
        RefusalReason::ConfirmerRoleTooLow {
            role: Some(Role::Operator),
            needs: Role::Engineer
        }
    );
    assert!(refused(&d).to_string().ends_with(
        "two-person rule: the confirmer's role operator is below the required engineer"
    ));
    let audit = cp.drain_audit();
    let r = audit.last().expect("the attempt is audited");
    assert_eq!(r.confirmer.as_deref(), Some("bob"));
    assert!(
        matches!(&r.result, AuditResult::Refused { code, .. } if code == "confirmer_role_too_low")
    );
    // A rule cannot be the second person either.
    let d = confirm_by(&mut cp, id, &Requester::rule("auto_cip"), 6.0);
    assert_eq!(refused(&d).reason, RefusalReason::TwoPersonNeedsUsers);
    // And a confirmer the policy denies is refused.
    let d = cp.confirm(
        id,
        &Requester::user("gus", Role::Engineer, "g"),
        &Authorisation::Denied(Denial::Prefix {
            tag_scope: "acme/lyon/packaging".to_owned(),
        }),
        info(CIP, Some(Value::Bool(false))),
        &none(),
        t(7.0),
    );
    assert_eq!(refused(&d).code(), "not_authorised");
    assert_eq!(cp.pending().len(), 1);
}

#[test]
fn a_two_person_write_nobody_confirms_expires_and_is_refused() {
    let mut cp = bottling();
    let id = cip_pending(&mut cp);
    cp.drain_audit();
    assert_eq!(cp.next_deadline(), Some(t(60.0)));
    assert!(cp.tick(t(59.9)).is_empty());
    let out = cp.tick(t(60.0));
    assert_eq!(out.len(), 1);
    match &out[0] {
        ironplant_control::command::Outcome::ConfirmationExpired { id: got, refusal } => {
            assert_eq!(*got, id);
            assert_eq!(refusal.code(), "confirmation_expired");
            assert!(refusal
                .to_string()
                .contains("the command by erin was not confirmed in time"));
        }
        other => panic!("{other:?}"),
    }
    let r = cp.drain_audit().pop().expect("audited");
    assert!(
        matches!(&r.result, AuditResult::Refused { code, .. } if code == "confirmation_expired")
    );
    // Too late to confirm now.
    let d = confirm_by(
        &mut cp,
        id,
        &Requester::user("gus", Role::Engineer, "g"),
        61.0,
    );
    assert_eq!(refused(&d).reason, RefusalReason::UnknownPending { id });
}

#[test]
fn a_confirmation_after_the_deadline_but_before_tick_is_refused_as_expired() {
    let mut cp = bottling();
    let id = cip_pending(&mut cp);
    let d = confirm_by(
        &mut cp,
        id,
        &Requester::user("gus", Role::Engineer, "g"),
        60.5,
    );
    assert_eq!(refused(&d).code(), "confirmation_expired");
}

#[test]
fn a_rule_cannot_request_a_two_person_write_and_a_second_person_can_reject() {
    let mut cp = bottling();
    let d = cp.submit(
        req(
            CIP,
            Value::Bool(true),
            Requester::rule("auto_cip"),
            Some(Value::Bool(false)),
        ),
        &none(),
        t(0.0),
    );
    assert_eq!(refused(&d).reason, RefusalReason::TwoPersonNeedsUsers);
    let id = cip_pending(&mut cp);
    // Who cannot confirm cannot veto either; the command stays pending.
    let e = cp
        .reject(id, &bob(), &Authorisation::Allowed, t(2.0))
        .expect_err("an operator cannot reject an engineer's command");
    assert_eq!(e.code(), "confirmer_role_too_low");
    let e = cp
        .reject(
            id,
            &Requester::rule("auto_cip"),
            &Authorisation::Allowed,
            t(2.0),
        )
        .expect_err("a rule cannot reject");
    assert_eq!(e.reason, RefusalReason::TwoPersonNeedsUsers);
    assert_eq!(cp.pending().len(), 1);
    let r = cp
        .reject(
            id,
            &Requester::user("gus", Role::Engineer, "g"),
            &Authorisation::Allowed,
            t(3.0),
        )
        .expect("a second engineer may reject");
    assert_eq!(
        r.reason,
        RefusalReason::RejectedByConfirmer {
            by: "gus".to_owned()
        }
    );
    let rec = cp.drain_audit().pop().expect("audited");
    assert_eq!(rec.confirmer.as_deref(), Some("gus"));
    assert!(cp.pending().is_empty());
    // The requester may withdraw their own.
    let id = cip_pending(&mut cp);
    let r = cp
        .reject(id, &erin(), &Authorisation::Allowed, t(4.0))
        .expect("withdrawn");
    assert_eq!(
        r.reason,
        RefusalReason::RejectedByConfirmer {
            by: "erin".to_owned()
        }
    );
    assert!(cp.pending().is_empty());
}

#[test]
fn a_confirmed_two_person_write_is_checked_again_on_the_current_state() {
    let mut cp = bottling();
    let id = cip_pending(&mut cp);
    // Between request and confirmation the tag became read-only (e.g. a re-birth).
    let d = cp.confirm(
        id,
        &Requester::user("gus", Role::Engineer, "g"),
        &Authorisation::Allowed,
        Some(TagInfo {
            writable: false,
            value_type: ValueType::Bool,
            current: None,
        }),
        &none(),
        t(5.0),
    );
    assert_eq!(refused(&d).reason, RefusalReason::NotWritable);
    assert!(
        cp.pending().is_empty(),
        "a failed re-check ends the command"
    );
}

#[test]
fn rules_write_as_their_own_identity_without_selecting() {
    let mut cp = bottling();
    let mut r = req(
        RECIPE,
        Value::Int(2),
        Requester::rule("night_shift"),
        Some(Value::Int(3)),
    );
    r.origin = ironplant_control::command::Origin::Rule;
    let d = cp.submit(r, &holds(), t(0.0));
    assert_eq!(
        d.accepted().map(|a| a.requested_by.as_str()),
        Some("rule:night_shift")
    );
    let rec = cp.drain_audit().pop().expect("audited");
    assert_eq!(rec.actor_kind, "rule");
    assert_eq!(rec.origin, "rule");
}

#[test]
fn the_checks_run_in_the_documented_order() {
    // A viewer's out-of-envelope write to an interlocked tag: the first check wins.
    let mut cp = bottling();
    let mut r = req(SPEED, Value::Int(9999), viewer(), None);
    r.authorisation = denied_viewer();
    assert_eq!(
        refused(&cp.submit(r, &none(), t(0.0))).code(),
        "not_authorised"
    );
    let r = req(SPEED, Value::String("x".into()), alice(), None);
    assert_eq!(
        refused(&cp.submit(r, &none(), t(0.0))).code(),
        "bad_value_type"
    );
    let r = req(SPEED, Value::Int(9999), alice(), None);
    assert_eq!(
        refused(&cp.submit(r, &none(), t(0.0))).code(),
        "envelope_max"
    );
    let r = req(RECIPE, Value::Int(1), alice(), Some(Value::Int(3)));
    let running = filler_stopped(InterlockState::Violated, "machine_state = 1");
    assert_eq!(refused(&cp.submit(r, &running, t(0.0))).code(), "interlock");
}

#[test]
fn one_two_person_command_at_a_time_per_tag() {
    let mut cp = bottling();
    let id = cip_pending(&mut cp);
    let d = cp.submit(
        req(
            CIP,
            Value::Bool(false),
            Requester::user("gus", Role::Engineer, "g"),
            Some(Value::Bool(false)),
        ),
        &none(),
        t(10.0),
    );
    assert_eq!(
        refused(&d).reason,
        RefusalReason::AlreadyPending {
            id,
            requested_by: "erin".to_owned(),
            expires_at: t(60.0)
        }
    );
    assert_eq!(refused(&d).code(), "confirmation_pending");
    assert_eq!(cp.pending().len(), 1);
    // Once it has run out (even without a tick), a new one may wait.
    let d = cp.submit(
        req(
            CIP,
            Value::Bool(true),
            Requester::user("gus", Role::Engineer, "g"),
            Some(Value::Bool(false)),
        ),
        &none(),
        t(61.0),
    );
    assert!(matches!(d, Decision::AwaitingConfirmation(_)), "{d:?}");
    assert_eq!(cp.pending().len(), 1);
}
