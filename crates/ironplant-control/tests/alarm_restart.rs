//! Alarm state across a simulated restart: the engine is snapshotted to a file, dropped, and a
//! new engine (possibly with changed definitions) restores it.

use std::time::Duration;

use ironplant_control::alarm::persist;
use ironplant_control::alarm::{
    AlarmDef, AlarmEngine, AlarmState, Cause, Condition, EngineSettings, Transition,
};
use ironplant_core::{Quality, Sample, TagId, TagPath, Timestamp, Value};

const S: i64 = 1_000_000;

fn t(secs: i64) -> Timestamp {
    Timestamp(1_800_000_000 * S + secs * S)
}

fn high(id: &str, tag: u32, limit: f64) -> AlarmDef {
    AlarmDef::new(
        id,
        TagId(tag),
        TagPath::parse(&format!("acme/lyon/bottling/line1/tank{tag}/level")).expect("path"),
        Condition::High { limit },
    )
}

fn feed(e: &mut AlarmEngine, tag: u32, x: f64, at: i64) -> Vec<Transition> {
    let s = Sample {
        tag: TagId(tag),
        value: Value::Float(x),
        quality: Quality::GOOD,
        source_ts: t(at),
        server_ts: t(at),
    };
    e.on_samples(&[s], t(at))
}

fn defs() -> Vec<AlarmDef> {
    vec![
        high("acked", 0, 90.0),
        high("unacked", 1, 90.0),
        high("rtn_unacked", 2, 90.0),
        high("shelved_short", 3, 90.0),
        high("shelved_long", 4, 90.0),
        high("oos", 5, 90.0),
        high("normal", 6, 90.0),
    ]
}

/// Runs a plant into a mix of states and restarts it through the snapshot file.
fn before_restart(path: &std::path::Path) -> AlarmEngine {
    let mut e = AlarmEngine::new(defs(), EngineSettings::default());
    for tag in 0..6 {
        assert_eq!(feed(&mut e, tag, 95.0, 0).len(), 1);
    }
    feed(&mut e, 6, 10.0, 0);
    e.ack("acked", "alice", "known", t(1)).expect("ack");
    feed(&mut e, 2, 10.0, 2);
    e.shelve(
        "shelved_short",
        Duration::from_secs(60),
        "alice",
        "cleaning",
        t(3),
    )
    .expect("shelve");
    e.shelve(
        "shelved_long",
        Duration::from_secs(3600),
        "alice",
        "cleaning",
        t(3),
    )
    .expect("shelve");
    e.remove_from_service("oos", "maint", "WO 17", t(4))
        .expect("oos");
    persist::write(path, &e.snapshot(t(5))).expect("write snapshot");
    e
}

#[test]
fn alarm_state_survives_a_restart_without_re_raising_or_losing_an_unacked_alarm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("alarms.json");
    let before = before_restart(&file);
    let states_before: Vec<(String, &str)> =
        before.all().into_iter().map(|v| (v.id, v.state)).collect();
    drop(before);

    // The platform is down for 2 minutes: the short shelve ran out meanwhile.
    let now = t(125);
    let snap = persist::read(&file).expect("read").expect("a snapshot");
    let mut e = AlarmEngine::new(defs(), EngineSettings::default());
    let report = e.restore(&snap, now);
    assert_eq!(report.restored, 7);
    assert!(report.changed.is_empty() && report.vanished.is_empty() && report.new.is_empty());
    let expired: Vec<(&str, AlarmState, AlarmState, Cause)> = report
        .transitions
        .iter()
        .map(|t| (&*t.alarm, t.from, t.to, t.cause))
        .collect();
    assert_eq!(
        expired,
        vec![(
            "shelved_short",
            AlarmState::Shelved,
            AlarmState::Unacknowledged,
            Cause::ShelveExpired
        )]
    );
    let states_after: Vec<(String, &str)> = e.all().into_iter().map(|v| (v.id, v.state)).collect();
    let mut expected = states_before.clone();
    expected[3].1 = "unacknowledged";
    assert_eq!(states_after, expected);

    // The first poll after the restart confirms every value: no event at all.
    let mut events = Vec::new();
    for tag in 0..6 {
        let x = if tag == 2 { 10.0 } else { 95.0 };
        events.extend(feed(&mut e, tag, x, 126));
    }
    events.extend(feed(&mut e, 6, 10.0, 126));
    events.extend(e.tick(t(127)));
    assert!(events.is_empty(), "re-raise storm: {events:?}");
    // The unacknowledged alarm is still waiting for the operator, the acked one is not.
    assert_eq!(e.state("unacked"), Some(AlarmState::Unacknowledged));
    assert!(e.ack("unacked", "bob", "after restart", t(128)).is_ok());
    assert!(e.ack("acked", "bob", "again", t(128)).is_err());
    // The restored acked alarm clears normally when the value drops.
    let c = feed(&mut e, 0, 10.0, 130);
    assert_eq!(
        c.iter().map(|t| (t.from, t.to)).collect::<Vec<_>>(),
        vec![(AlarmState::Acknowledged, AlarmState::Normal)]
    );
    // The long shelve still ends on time, counted from before the restart.
    assert!(e.tick(t(3602)).is_empty());
    assert_eq!(e.tick(t(3603)).len(), 1);
}

#[test]
fn a_changed_or_vanished_definition_is_handled_and_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("alarms.json");
    drop(before_restart(&file));
    let snap = persist::read(&file).expect("read").expect("snapshot");
    // New config: "unacked" got a higher limit, "normal" was deleted, "added" is new.
    let mut defs = defs();
    defs[1] = high("unacked", 1, 99.0);
    defs.remove(6);
    defs.push(high("added", 7, 50.0));
    let mut e = AlarmEngine::new(defs, EngineSettings::default());
    let report = e.restore(&snap, t(10));
    assert_eq!(report.changed, vec!["unacked".to_owned()]);
    assert_eq!(report.vanished.len(), 1);
    assert_eq!(report.vanished[0].id, "normal");
    assert_eq!(report.new, vec!["added".to_owned()]);
    // Restored as it was; the next sample decides under the new limit (95 < 99: it returns to
    // normal, still unacknowledged: the operator has not seen it).
    assert_eq!(e.state("unacked"), Some(AlarmState::Unacknowledged));
    let r = feed(&mut e, 1, 95.0, 11);
    assert_eq!(
        r.iter().map(|t| t.to).collect::<Vec<_>>(),
        vec![AlarmState::ReturnToNormalUnacknowledged]
    );
    assert_eq!(e.state("added"), Some(AlarmState::Normal));
}

#[test]
fn a_snapshot_is_json_with_a_version() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("alarms.json");
    drop(before_restart(&file));
    let text = std::fs::read_to_string(&file).expect("read");
    let v: serde_json::Value = serde_json::from_str(&text).expect("json");
    assert_eq!(v["version"], 1);
    assert_eq!(v["alarms"][4]["shelved_by"], "alice");
    assert_eq!(v["alarms"][1]["acknowledged"], false);
}

/// A crash between two snapshots: the snapshot was taken early, every transition after it is
/// in the event store. Replaying the events (round-tripped through `to_event`/`from_event`, as
/// the runtime reads them back) over the old snapshot restores the very states of before the
/// crash, and the first samples confirming them raise nothing.
#[test]
fn transitions_after_the_snapshot_are_replayed_from_their_events() {
    let mut e = AlarmEngine::new(defs(), EngineSettings::default());
    let early = e.snapshot(t(-1));
    let mut events = Vec::new();
    for tag in 0..6 {
        events.extend(feed(&mut e, tag, 95.0, 0));
    }
    feed(&mut e, 6, 10.0, 0);
    events.push(e.ack("acked", "alice", "known", t(1)).expect("ack"));
    events.extend(feed(&mut e, 2, 10.0, 2));
    events.push(
        e.shelve(
            "shelved_long",
            Duration::from_secs(3600),
            "al",
            "clean",
            t(3),
        )
        .expect("shelve"),
    );
    events.push(
        e.remove_from_service("oos", "maint", "WO 17", t(4))
            .expect("oos"),
    );
    let stored: Vec<Transition> = events
        .iter()
        .map(|tr| Transition::from_event(&tr.to_event()).expect("an alarm event reads back"))
        .collect();
    let before: Vec<(String, &str, bool)> = e
        .all()
        .into_iter()
        .map(|v| (v.id, v.state, v.acknowledged))
        .collect();

    // Without the replay the old snapshot would bring back a plant with no alarm at all.
    let mut bare = AlarmEngine::new(defs(), EngineSettings::default());
    bare.restore(&early, t(6));
    assert!(bare.active().is_empty());

    let mut snapshot = early.clone();
    // Transitions at or before the snapshot are skipped (already in it).
    assert_eq!(snapshot.replay(&stored), stored.len());
    assert_eq!(
        snapshot.replay(&stored),
        0,
        "a second replay changes nothing"
    );
    let mut after = AlarmEngine::new(defs(), EngineSettings::default());
    let report = after.restore(&snapshot, t(6));
    assert!(report.transitions.is_empty(), "{:?}", report.transitions);
    assert!(report.changed.is_empty(), "{:?}", report.changed);
    let restored: Vec<(String, &str, bool)> = after
        .all()
        .into_iter()
        .map(|v| (v.id, v.state, v.acknowledged))
        .collect();
    assert_eq!(restored, before);
    // The process confirms what was restored: no re-raise storm.
    for (tag, x) in [
        (0, 95.0),
        (1, 95.0),
        (2, 10.0),
        (4, 95.0),
        (5, 95.0),
        (6, 10.0),
    ] {
        assert_eq!(feed(&mut after, tag, x, 7), vec![], "tag {tag}");
    }
    assert_eq!(
        after.state("rtn_unacked"),
        Some(AlarmState::ReturnToNormalUnacknowledged)
    );
    let t = after.ack("unacked", "bob", "on it", t(8)).expect("ack");
    assert_eq!(
        (t.cause, t.to),
        (Cause::Acknowledged, AlarmState::Acknowledged)
    );
}
