//! The command path's state across a restart (snapshot → JSON → a new path): expectations,
//! last writes, already reported changes and command ids are kept.

mod command_support;

use command_support::*;
use ironplant_control::command::{Basis, CommandPath, CommandSnapshot, Outcome, SnapshotError};
use ironplant_core::{Quality, Value, WriteAck};

fn restart(cp: &CommandPath) -> CommandPath {
    let text = serde_json::to_string(&cp.snapshot()).expect("serialisable");
    let snap: CommandSnapshot = serde_json::from_str(&text).expect("readable");
    let mut fresh = bottling();
    // As the platform does at every start: its declared setpoints are watched (detection is
    // configuration, not state: it is not in the snapshot).
    fresh.watch(path(PUMP));
    fresh.restore(&snap).expect("usable");
    fresh
}

#[test]
fn a_value_changed_while_the_platform_was_down_is_still_unauthorised() {
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
    let mut cp = restart(&cp);
    // The first sample after the restart is compared with the commanded value, not learned.
    let out = cp.observe(&speed, &Value::Int(420), Quality::GOOD, t(1.0));
    match out.as_slice() {
        [Outcome::UnauthorisedChange(c)] => {
            assert_eq!(c.expected, Value::Int(350));
            assert_eq!(c.basis, Basis::Commanded { id, at: t(0.0) });
        }
        other => panic!("{other:?}"),
    }
    // min_interval (2 s) holds across the restart; ids go on.
    let d = cp.submit(
        req(SPEED, Value::Int(350), alice(), Some(Value::Int(420))),
        &none(),
        t(1.0),
    );
    assert_eq!(d.refusal().map(|r| r.code()), Some("envelope_interval"));
    let d = cp.submit(
        req(SPEED, Value::Int(350), alice(), Some(Value::Int(420))),
        &none(),
        t(3.0),
    );
    assert!(d.accepted().expect("accepted").id > id);
}

#[test]
fn a_change_already_reported_is_not_reported_again() {
    let mut cp = bottling();
    let pump = path(PUMP);
    cp.watch(pump.clone());
    cp.observe(&pump, &Value::Bool(true), Quality::GOOD, t(0.0));
    assert_eq!(
        cp.observe(&pump, &Value::Bool(false), Quality::GOOD, t(1.0))
            .len(),
        1
    );
    let mut cp = restart(&cp);
    assert!(cp
        .observe(&pump, &Value::Bool(false), Quality::GOOD, t(5.0))
        .is_empty());
    assert!(matches!(
        cp.observe(&pump, &Value::Bool(true), Quality::GOOD, t(6.0))
            .as_slice(),
        [Outcome::ChangeReverted { .. }]
    ));
}

#[test]
fn a_command_in_flight_keeps_the_expectation_it_had_before() {
    let mut cp = bottling();
    let speed = path(SPEED);
    cp.observe(&speed, &Value::Int(300), Quality::GOOD, t(0.0));
    cp.submit(
        req(SPEED, Value::Int(350), alice(), Some(Value::Int(300))),
        &none(),
        t(1.0),
    );
    let snap = cp.snapshot();
    let kept = snap.tags.iter().find(|t| t.tag == SPEED).expect("kept");
    assert_eq!(kept.expected, Some(Value::Int(300)));
    assert_eq!(kept.basis.as_deref(), Some("learned"));
    let mut cp = restart(&cp);
    assert!(cp
        .observe(&speed, &Value::Int(300), Quality::GOOD, t(2.0))
        .is_empty());
}

#[test]
fn an_unusable_snapshot_is_refused_whole() {
    let mut cp = bottling();
    let mut snap = cp.snapshot();
    snap.version = 2;
    assert_eq!(cp.restore(&snap), Err(SnapshotError::Version(2)));
    let mut snap = bottling().snapshot();
    if let Some(t) = snap.tags.first_mut() {
        t.basis = Some("guessed".to_owned());
        t.expected = Some(Value::Int(1));
    }
    assert!(matches!(
        cp.restore(&snap),
        Err(SnapshotError::Basis { .. })
    ));
}
