//! Alarms on the platform: `[[alarm]]` becomes a processor on the tag bus, each transition an
//! `alarm` event (historised), operations by a named user, and the state kept across a restart
//! on the same data directory (no re-raise, the unacknowledged alarm still unacknowledged).

use std::time::Duration;

use ironplant_core::{
    EventFilter, EventKind, EventSubscription, Quality, Sample, TagId, Timestamp, Value,
};
use ironplant_runtime::alarms::Operation;
use ironplant_runtime::Platform;
use tokio::time::Instant;

const CONFIG: &str = r#"
# This test is about the configured alarms; the built-in integrity alarms have their own tests
# (a level jumping 50 -> 95 in no time is a rate-of-change finding).
[integrity]
enabled = false

[[tag]]
path = "acme/lyon/utilities/tank/level"
unit = "%"
min = 0.0
max = 100.0

[[tag]]
path = "acme/lyon/utilities/tank/temp"
unit = "°C"

[[alarm]]
id = "level_high"
tag = "acme/lyon/utilities/tank/level"
kind = "high"
limit = 90.0
deadband = 2.0
priority = 2
message = "Tank level high"

[[alarm]]
id = "temp_high"
tag = "acme/lyon/utilities/tank/temp"
kind = "high"
limit = 8.0
priority = 3
message = "Tank too warm"
"#;

async fn publish(p: &Platform, tag: u32, v: f64) {
    let now = Timestamp::now();
    p.runtime
        .bus
        .publish(vec![Sample {
            tag: TagId(tag),
            value: Value::Float(v),
            quality: Quality::GOOD,
            source_ts: now,
            server_ts: now,
        }])
        .await;
}

/// The next alarm event's code and alarm id, within 10 s.
async fn next_alarm(sub: &mut EventSubscription) -> (String, String) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let e = tokio::time::timeout(left, sub.recv())
            .await
            .expect("an alarm event within 10 s")
            .expect("event bus open");
        if e.kind == EventKind::Alarm {
            let id = e
                .attribute("alarm")
                .map(|v| v.to_string().trim_matches('"').to_owned())
                .unwrap_or_default();
            return (e.code.to_string(), id);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alarms_raise_events_take_operations_and_survive_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = ironplant_runtime::config::parse("alarms.toml", CONFIG).expect("valid config");

    let p = Platform::builder(config.clone(), Some(dir.path()))
        .start()
        .expect("platform starts");
    let alarms = p.runtime.alarms.clone().expect("alarms configured");
    assert!(p.processors().iter().any(|c| c.name == "alarms"));
    let mut events = p.runtime.events.subscribe("test", 256, EventFilter::all());

    // Normal values: nothing. Level above 90: raised (unacknowledged).
    publish(&p, 0, 50.0).await;
    publish(&p, 1, 4.0).await;
    publish(&p, 0, 95.0).await;
    assert_eq!(
        next_alarm(&mut events).await,
        ("raised".into(), "level_high".into())
    );
    let active = alarms.active();
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].state, "unacknowledged");

    // Inside the deadband (89 > 90 - 2): still active. An operator acknowledges it.
    publish(&p, 0, 89.0).await;
    let err = alarms
        .operate("level_high", &Operation::Ack, "olivia", "")
        .expect_err("a comment is required");
    assert!(err.to_string().contains("comment"), "{err}");
    alarms
        .operate("level_high", &Operation::Ack, "olivia", "inflow reduced")
        .expect("acknowledged");
    assert_eq!(
        next_alarm(&mut events).await,
        ("acknowledged".into(), "level_high".into())
    );
    // The temperature alarm raised and left unacknowledged.
    publish(&p, 1, 9.5).await;
    assert_eq!(
        next_alarm(&mut events).await,
        ("raised".into(), "temp_high".into())
    );

    // Stop cleanly: the state is saved.
    p.shutdown(Duration::from_secs(5)).await;
    assert!(dir.path().join("alarms/alarms.json").exists());

    // Restart on the same data directory: the same states, no new `raised` when the values
    // confirm them.
    let p = Platform::builder(config, Some(dir.path()))
        .start()
        .expect("platform restarts");
    let alarms = p.runtime.alarms.clone().expect("alarms configured");
    let mut events = p.runtime.events.subscribe("test", 256, EventFilter::all());
    let state = |id: &str| alarms.get(id).map(|v| v.state);
    assert_eq!(state("level_high"), Some("acknowledged"));
    assert_eq!(state("temp_high"), Some("unacknowledged"));
    publish(&p, 0, 95.0).await;
    publish(&p, 1, 9.5).await;
    // The first alarm event after the restart is the return to normal below, not a re-raise.
    publish(&p, 0, 80.0).await;
    assert_eq!(
        next_alarm(&mut events).await,
        ("cleared".into(), "level_high".into()),
        "no re-raise storm after the restart"
    );
    assert_eq!(state("level_high"), Some("normal"));
    assert_eq!(state("temp_high"), Some("unacknowledged"));

    // The transitions are historised like any event.
    let store = p
        .runtime
        .historian
        .as_ref()
        .expect("historian")
        .events()
        .clone();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let q = ironplant_historian::events::EventQuery {
            kinds: vec![EventKind::Alarm],
            ..ironplant_historian::events::EventQuery::new(Timestamp(0), Timestamp(i64::MAX))
        };
        let page = store.query(&q, &|_| true).expect("query");
        let codes: Vec<&str> = page.events.iter().map(|e| &*e.event.code).collect();
        if codes.len() >= 4 {
            assert!(codes.contains(&"acknowledged"), "{codes:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "alarm events not stored: {codes:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    p.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_saved_state_is_moved_aside_and_reported() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir_all(dir.path().join("alarms")).expect("dir");
    std::fs::write(dir.path().join("alarms/alarms.json"), b"{ torn").expect("write");
    let config = ironplant_runtime::config::parse("alarms.toml", CONFIG).expect("valid config");
    let p = Platform::builder(config, Some(dir.path()))
        .start()
        .expect("the platform still starts");
    let alarms = p.runtime.alarms.clone().expect("alarms");
    assert_eq!(alarms.get("level_high").map(|v| v.state), Some("normal"));
    let aside: Vec<_> = std::fs::read_dir(dir.path().join("alarms"))
        .expect("dir")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("corrupt"))
        .collect();
    assert_eq!(aside.len(), 1, "the unreadable file is kept for inspection");
    p.shutdown(Duration::from_secs(5)).await;
}
