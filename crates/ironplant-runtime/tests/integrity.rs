//! Integrity on the platform: the checks run first on the bus (the sample's quality is lowered
//! before anything else sees it), a finding is an `integrity` event and raises the subject's
//! built-in alarm, a tag born at run time (as a Sparkplug birth makes them) is checked too,
//! and the learnt models are saved when training ends.

use std::time::Duration;

use ironplant_core::{
    EventFilter, EventKind, EventSubscription, Quality, Sample, TagId, TagMeta, TagPath, Timestamp,
    Value, ValueType,
};
use ironplant_runtime::Platform;
use tokio::time::Instant;

const CONFIG: &str = r#"
[integrity]
training = "1s"

[[tag]]
path = "acme/lyon/utilities/tank/level"
unit = "%"
min = 0.0
max = 100.0
"#;

async fn publish(p: &Platform, tag: TagId, v: f64) {
    let now = Timestamp::now();
    p.runtime
        .bus
        .publish(vec![Sample {
            tag,
            value: Value::Float(v),
            quality: Quality::GOOD,
            source_ts: now,
            server_ts: now,
        }])
        .await;
}

/// The next event of `kind` with `code` for which `want` holds, within 10 s.
async fn next(
    sub: &mut EventSubscription,
    kind: EventKind,
    what: &str,
    want: impl Fn(&ironplant_core::Event) -> bool,
) -> std::sync::Arc<ironplant_core::Event> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let e = tokio::time::timeout(left, sub.recv())
            .await
            .unwrap_or_else(|_| panic!("no {what} within 10 s"))
            .expect("event bus open");
        if e.kind == kind && want(&e) {
            return e;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_value_is_flagged_alarmed_and_tags_born_later_are_checked_too() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = ironplant_runtime::config::parse("integrity.toml", CONFIG).expect("valid config");
    let p = Platform::builder(config, Some(dir.path()))
        .start()
        .expect("platform starts");
    assert_eq!(
        p.processors().first().map(|c| c.name.as_str()),
        Some("integrity")
    );
    let mut events = p.runtime.events.subscribe("test", 256, EventFilter::all());
    let level = TagId(0);

    // Not a number: Bad on the bus, an integrity finding, the tag's built-in alarm.
    publish(&p, level, 50.0).await;
    publish(&p, level, f64::NAN).await;
    let current = p.runtime.bus.current(level).expect("a current value");
    assert!(!current.quality.is_good(), "{current:?}");
    let found = next(&mut events, EventKind::Integrity, "a finding", |e| {
        e.code.as_ref() as &str == "raised"
    })
    .await;
    assert!(
        found.message.contains("acme/lyon/utilities/tank/level"),
        "{}",
        found.message
    );
    next(
        &mut events,
        EventKind::Alarm,
        "the level's integrity alarm",
        |e| {
            e.attribute("alarm").is_some_and(|a| {
                a.to_string()
                    .contains("acme.lyon.utilities.tank.level:integrity")
            })
        },
    )
    .await;

    // A tag born at run time is checked with the default rules.
    let flow = p
        .runtime
        .namespace
        .register(TagMeta {
            id: TagId(0),
            path: TagPath::parse("acme/lyon/utilities/tank/flow").expect("path"),
            value_type: ValueType::Float,
            unit: Some("L/min".into()),
            description: String::new(),
            range: Some((0.0, 100.0)),
            writable: false,
            device: Some("sparkplug:g/n".into()),
        })
        .expect("registered");
    publish(&p, flow, 5.0).await;
    publish(&p, flow, f64::INFINITY).await;
    let found = next(
        &mut events,
        EventKind::Integrity,
        "a finding on the new tag",
        |e| e.code.as_ref() as &str == "raised" && e.message.contains("tank/flow"),
    )
    .await;
    assert_eq!(
        found.subject.as_ref().map(TagPath::as_str),
        Some("acme/lyon/utilities/tank/flow")
    );

    // After the training window (1 s of data), the models are saved to the data directory.
    let file = ironplant_runtime::integrity::models_path(dir.path());
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut v = 50.0;
    while !file.exists() {
        assert!(
            Instant::now() < deadline,
            "no {} after training",
            file.display()
        );
        v += 0.1;
        publish(&p, level, v).await;
        // Samples at a plant-like pace: training counts the data's own time.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let text = std::fs::read_to_string(&file).expect("models");
    assert!(text.contains("acme/lyon/utilities/tank/level"), "{text}");
    p.shutdown(Duration::from_secs(5)).await;
}
