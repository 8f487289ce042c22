//! Events through a running platform: published on the event bus, stored durably by the
//! historian's event store (found again after a restart), published on MQTT under
//! `<uns_prefix>/_events/<kind>/<subject>`, and counted in the metrics.

use std::time::Duration;

use ironplant_core::{Event, EventKind, Severity, TagPath, Timestamp, Value};
use ironplant_historian::events::{EventOrder, EventQuery, MAX_EVENTS};
use ironplant_mqtt::{Broker, BrokerConfig};
use ironplant_runtime::{start_platform, Runtime};
use tokio::time::Instant;

const CONFIG: &str = r#"
[mqtt]
uns_prefix = "site1/uns"
"#;

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn event(i: i64) -> Event {
    Event::new(
        Timestamp(1_700_000_000_000_000 + i),
        if i % 2 == 0 {
            EventKind::Alarm
        } else {
            EventKind::System
        },
        "raised",
        "test",
        format!("event {i}"),
    )
    .with_severity(Severity::Warning)
    .with_subject(TagPath::parse(&format!("acme/lyon/line{}/tank/level", i % 3)).expect("path"))
    .with_attribute("i", Value::Int(i))
}

fn metric(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_stored_published_on_mqtt_and_counted() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = ironplant_runtime::config::parse("t.toml", CONFIG).expect("valid config");
    let broker = Broker::new(BrokerConfig::default());
    let mut observer = broker
        .subscribe_internal("observer", "site1/uns/_events/#", 65_536)
        .expect("subscribe");
    let started = start_platform(&config, Some(dir.path()), Some(&broker)).expect("platform");
    let rt = started.runtime.clone();

    // A burst far beyond what the store commits at once; nothing is dropped (queue 65,536).
    let n = 20_000i64;
    for i in 0..n {
        rt.events.publish(event(i));
    }
    let store = rt.historian.as_ref().expect("historian").events().clone();
    wait_until("every event stored", || store.stats().stored == n as u64).await;
    let text = rt.render_metrics();
    assert_eq!(
        metric(&text, "ironplant_events_published_total"),
        Some(n as u64)
    );
    assert_eq!(
        metric(&text, "ironplant_events_stored_total"),
        Some(n as u64)
    );
    // The store's subscription lost nothing (the MQTT publisher's, 8,192 deep, may have).
    assert_eq!(
        metric(
            &text,
            "ironplant_events_dropped_total{subscriber=\"event-store\"}"
        ),
        Some(0)
    );
    assert!(metric(&text, "ironplant_events_dropped_total").is_some());
    assert!(
        store.stats().commits < 2_000,
        "{} commits for {n} events",
        store.stats().commits
    );

    // On MQTT: the first event, in the wire format, not retained.
    let msg = tokio::time::timeout(Duration::from_secs(10), observer.recv())
        .await
        .expect("an event on MQTT")
        .expect("open");
    assert_eq!(
        msg.topic.as_str(),
        "site1/uns/_events/alarm/acme/lyon/line0/tank/level"
    );
    assert!(!msg.retain);
    let v: serde_json::Value = serde_json::from_slice(&msg.payload).expect("json");
    assert_eq!(v["kind"], "alarm");
    assert_eq!(v["subject"], "acme/lyon/line0/tank/level");
    assert_eq!(v["severity"], "warning");
    assert_eq!(v["attributes"]["i"], 0);
    assert_eq!(v["ts"], "2023-11-14T22:13:20.000000Z");
    // A platform event without a subject goes under `_platform`.
    rt.events.publish(Event::new(
        Timestamp::now(),
        EventKind::System,
        "test_done",
        "test",
        "done",
    ));
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let left = end.saturating_duration_since(Instant::now());
        let msg = tokio::time::timeout(left, observer.recv())
            .await
            .expect("the platform event on MQTT")
            .expect("open");
        if msg.topic.as_str() == "site1/uns/_events/system/_platform" {
            break;
        }
    }
    wait_until("the last event stored", || {
        store.stats().stored == n as u64 + 1
    })
    .await;

    // Durable: after a clean shutdown and a new runtime on the same data directory.
    rt.shutdown();
    drop(started);
    drop(rt);
    let rt = Runtime::build(&config, Some(dir.path())).expect("restart");
    let store = rt.historian.as_ref().expect("historian").events().clone();
    let mut q = EventQuery::new(Timestamp(0), Timestamp(i64::MAX));
    q.subject = Some(TagPath::parse("acme/lyon/line1").expect("path"));
    q.kinds = vec![EventKind::Alarm];
    q.order = EventOrder::OldestFirst;
    q.limit = MAX_EVENTS;
    let page = store.query(&q, &|_| true).expect("query");
    let want: Vec<i64> = (0..n).filter(|i| i % 2 == 0 && i % 3 == 1).collect();
    let got: Vec<i64> = page
        .events
        .iter()
        .map(|e| match e.event.attribute("i") {
            Some(Value::Int(i)) => *i,
            other => panic!("no index: {other:?}"),
        })
        .collect();
    assert_eq!(got, want);
    rt.shutdown();
}
