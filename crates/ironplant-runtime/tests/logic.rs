//! Local logic on the platform: a computed tag in the namespace with its samples on the bus,
//! a rule raising an event and publishing on MQTT (its write refused until the command path
//! is wired, never sent unchecked), and an alarm on an expression with suppression by design.

use std::time::Duration;

use ironplant_core::{
    EventFilter, EventKind, EventSubscription, Quality, Sample, Timestamp, Value,
};
use ironplant_mqtt::{Broker, BrokerConfig};
use ironplant_runtime::Platform;
use tokio::time::Instant;

const CONFIG: &str = r#"
[[tag]]
path = "acme/lyon/utilities/tank/level"
unit = "%"

[[tag]]
path = "acme/lyon/utilities/tank/inflow"
unit = "m3/h"

[[tag]]
path = "acme/lyon/utilities/tank/maintenance"
description = "1 while the tank is under maintenance"

[[tag]]
path = "acme/lyon/utilities/tank/setpoint"
unit = "%"
writable = true

[[computed]]
path = "acme/lyon/utilities/tank/level_fraction"
expr = "level / 100"

[[rule]]
name = "tank-nearly-full"
asset = "acme/lyon/utilities/tank"
when = "level > 90"
then = [
  { event = "tank at {round(level, 1)} %", severity = "warning" },
  { publish = "alerts/tank", payload = "full" },
  { write = "acme/lyon/utilities/tank/setpoint", value = "80.0" },
]

[[alarm]]
id = "tank_filling_fast"
tag = "acme/lyon/utilities/tank/level"
kind = "condition"
condition = "level > 80 && inflow > 5"
suppress_when = "maintenance > 0.5"
priority = 2
message = "Tank filling fast while high"
"#;

async fn publish(p: &Platform, path: &str, value: Value) {
    let tag = p.runtime.namespace.lookup(path).expect("tag").id;
    let now = Timestamp::now();
    p.runtime
        .bus
        .publish(vec![Sample {
            tag,
            value,
            quality: Quality::GOOD,
            source_ts: now,
            server_ts: now,
        }])
        .await;
}

/// The next event with `code`, within 10 s.
async fn next(sub: &mut EventSubscription, code: &str) -> ironplant_core::Event {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let e = tokio::time::timeout(left, sub.recv())
            .await
            .unwrap_or_else(|_| panic!("no {code} event within 10 s"))
            .expect("event bus open");
        if &*e.code == code {
            return (*e).clone();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn computed_tags_rules_and_expression_alarms_run_on_the_bus() {
    let config = ironplant_runtime::config::parse("logic.toml", CONFIG).expect("valid config");
    let broker = Broker::new(BrokerConfig::default());
    let mut alerts = broker
        .subscribe_internal("test", "alerts/#", 16)
        .expect("subscribe");
    let p = Platform::builder(config, None)
        .broker(broker.clone())
        .start()
        .expect("platform starts");
    let names: Vec<String> = p.processors().iter().map(|c| c.name.clone()).collect();
    assert_eq!(
        names,
        ["integrity", "computed", "rules", "commands", "alarms"],
        "the pipeline's order (integrity first: the others see the qualities it lowered; the command path watches the writable setpoint)"
    );
    let fraction = p
        .runtime
        .namespace
        .lookup("acme/lyon/utilities/tank/level_fraction")
        .expect("the computed tag is a tag");
    assert_eq!(fraction.device.as_deref(), Some("computed"));
    assert!(
        p.runtime
            .namespace
            .lookup("_alarms/tank_filling_fast/condition")
            .is_some(),
        "the alarm's expression is a hidden computed tag"
    );
    let mut events = p.runtime.events.subscribe("test", 256, EventFilter::all());

    publish(
        &p,
        "acme/lyon/utilities/tank/maintenance",
        Value::Float(0.0),
    )
    .await;
    publish(&p, "acme/lyon/utilities/tank/inflow", Value::Float(2.0)).await;
    publish(&p, "acme/lyon/utilities/tank/level", Value::Float(50.0)).await;
    let current = p.runtime.bus.current(fraction.id).expect("computed value");
    assert_eq!(current.value, Value::Float(0.5));
    assert_eq!(current.quality, Quality::GOOD);

    // Above 90: the rule fires once (event, MQTT message); its write goes through the command
    // path as the rule's identity: accepted, then a device error (the setpoint has no device).
    publish(&p, "acme/lyon/utilities/tank/level", Value::Float(95.0)).await;
    // The rule's event comes out with its batch, the write's on the writer's task: in either
    // order.
    let mut seen: Vec<ironplant_core::Event> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let wanted = ["rule_fired", "accepted", "device_error"];
    while !wanted.iter().all(|c| seen.iter().any(|e| &*e.code == *c)) {
        let left = deadline.saturating_duration_since(Instant::now());
        let e = tokio::time::timeout(left, events.recv())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "not all of {wanted:?} within 10 s: {:?}",
                    seen.iter().map(|e| e.code.to_string()).collect::<Vec<_>>()
                )
            })
            .expect("event bus open");
        seen.push((*e).clone());
    }
    let find = |code: &str| {
        seen.iter()
            .find(|e| &*e.code == code)
            .cloned()
            .expect("seen")
    };
    let fired = find("rule_fired");
    assert_eq!(&*fired.message, "tank at 95 %");
    assert_eq!(&*fired.source, "rule:tank-nearly-full");
    let msg = tokio::time::timeout(Duration::from_secs(10), alerts.recv())
        .await
        .expect("published within 10 s")
        .expect("open");
    assert_eq!(&msg.payload[..], b"full");
    let accepted = find("accepted");
    assert_eq!(accepted.kind, EventKind::Command);
    assert_eq!(accepted.actor.as_deref(), Some("rule:tank-nearly-full"));
    assert_eq!(
        accepted.subject.as_ref().map(|s| s.as_str()),
        Some("acme/lyon/utilities/tank/setpoint")
    );
    assert_eq!(accepted.attribute("new_value"), Some(&Value::Float(80.0)));
    let failed = find("device_error");
    assert_eq!(failed.actor.as_deref(), Some("rule:tank-nearly-full"));
    assert!(
        failed.message.contains("has no device"),
        "{}",
        failed.message
    );

    // The expression alarm: high and filling fast.
    publish(&p, "acme/lyon/utilities/tank/inflow", Value::Float(9.0)).await;
    let raised = next(&mut events, "raised").await;
    assert_eq!(raised.kind, EventKind::Alarm);
    let alarms = p.runtime.alarms.clone().expect("alarms");
    assert_eq!(
        alarms.get("tank_filling_fast").map(|v| v.state),
        Some("unacknowledged")
    );
    // Maintenance suppresses it by design.
    publish(
        &p,
        "acme/lyon/utilities/tank/maintenance",
        Value::Float(1.0),
    )
    .await;
    next(&mut events, "suppressed").await;
    assert_eq!(
        alarms.get("tank_filling_fast").map(|v| v.state),
        Some("suppressed")
    );
    p.shutdown(Duration::from_secs(5)).await;
}

#[test]
fn an_alarm_expression_is_checked_at_load_at_its_place() {
    let bad = CONFIG.replace("level > 80 && inflow > 5", "level > 80 && inflw > 5");
    let err = ironplant_runtime::config::parse("logic.toml", &bad).expect_err("unknown name");
    let text = err.to_string();
    assert!(text.contains("logic.toml:37:28"), "{text}");
    assert!(text.contains("inflw"), "{text}");
}
