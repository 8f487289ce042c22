//! Audit records: complete (who, confirmer, what, old, new, reason, origin, result, times) at
//! every step, serialisable and readable back, and convertible to `command` events.

mod command_support;

use command_support::*;
use ironplant_control::command::{
    AuditRecord, AuditResult, Authorisation, Decision, Requester, Role,
};
use ironplant_core::{EventKind, Severity, Value, WriteAck};

#[test]
fn a_two_person_command_tells_its_whole_story_in_the_audit() {
    let mut cp = bottling();
    let mut r = req(CIP, Value::Bool(true), erin(), Some(Value::Bool(false)));
    r.reason = "start CIP of the filler bowl".to_owned();
    r.origin = ironplant_control::command::Origin::Hmi;
    let Decision::AwaitingConfirmation(p) = cp.submit(r, &none(), t(0.0)) else {
        panic!("pending expected")
    };
    let gus = Requester::user("gus", Role::Engineer, "s-gus");
    let d = cp.confirm(
        p.id,
        &gus,
        &Authorisation::Allowed,
        info(CIP, Some(Value::Bool(false))),
        &none(),
        t(20.0),
    );
    let id = d.accepted().map(|a| a.id).expect("confirmed");
    cp.device_acknowledged(
        id,
        &WriteAck {
            detail: "function 5 echoed".to_owned(),
            echoed: Some(Value::Bool(true)),
        },
        t(20.2),
    );
    let audit = cp.drain_audit();
    let results: Vec<&str> = audit.iter().map(|r| r.result.code()).collect();
    assert_eq!(results, ["pending", "accepted", "verified"]);
    assert!(audit.iter().all(|r| r.command == id.0));
    assert!(audit.iter().all(|r| r.actor == "erin"
        && r.role.as_deref() == Some("engineer")
        && r.session.as_deref() == Some("s-erin")
        && r.tag == CIP
        && r.old_value == Value::Bool(false)
        && r.new_value == Value::Bool(true)
        && r.reason == "start CIP of the filler bowl"
        && r.origin == "hmi"
        && r.requested_at == t(0.0)));
    assert_eq!(audit[0].confirmer, None);
    assert_eq!(audit[1].confirmer.as_deref(), Some("gus"));
    assert_eq!(audit[2].confirmer.as_deref(), Some("gus"));
    assert_eq!(audit[2].ts, t(20.2));
    assert_eq!(
        audit[2].result,
        AuditResult::Verified {
            seen: Value::Bool(true),
            after_ms: 200
        }
    );

    // Serialised with values in the wire form, and read back the same.
    let text = serde_json::to_string(&audit[2]).expect("serialisable");
    let v: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(v["result"], "verified");
    assert_eq!(v["seen"], true);
    assert_eq!(v["after_ms"], 200);
    assert_eq!(v["old_value"], false);
    assert_eq!(v["confirmer"], "gus");
    assert_eq!(v["requested_at"], t(0.0).to_rfc3339());
    let back: AuditRecord = serde_json::from_str(&text).expect("readable");
    assert_eq!(back, audit[2]);

    // As an event.
    let e = audit[1].to_event();
    assert_eq!(e.kind, EventKind::Command);
    assert_eq!(&*e.code, "accepted");
    assert_eq!(e.severity, Severity::Info);
    assert_eq!(e.subject.as_ref().map(|s| s.as_str()), Some(CIP));
    assert_eq!(e.actor.as_deref(), Some("erin"));
    assert_eq!(e.attribute("confirmer"), Some(&Value::String("gus".into())));
    assert_eq!(e.attribute("old_value"), Some(&Value::Bool(false)));
    assert_eq!(e.attribute("new_value"), Some(&Value::Bool(true)));
    assert_eq!(e.attribute("origin"), Some(&Value::String("hmi".into())));
    assert_eq!(e.attribute("command"), Some(&Value::Int(id.0 as i64)));
    assert_eq!(
        &*e.message,
        format!("erin (engineer) commanded {CIP} = true (was false), second person gus: accepted")
    );
}

#[test]
fn a_refusal_event_carries_its_code_and_message() {
    let mut cp = bottling();
    let mut r = req(SPEED, Value::Int(350), viewer(), Some(Value::Int(300)));
    r.authorisation = denied_viewer();
    cp.submit(r, &none(), t(0.0));
    let rec = cp.drain_audit().pop().expect("audited");
    let e = rec.to_event();
    assert_eq!(&*e.code, "refused");
    assert_eq!(e.severity, Severity::Warning);
    assert_eq!(
        e.attribute("refusal"),
        Some(&Value::String("not_authorised".into()))
    );
    assert!(
        e.message.contains("refused: victor is not authorised"),
        "{}",
        e.message
    );
    let back: AuditRecord =
        serde_json::from_str(&serde_json::to_string(&rec).expect("ser")).expect("de");
    assert_eq!(back, rec);
}
