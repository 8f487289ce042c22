//! KPIs over transitions produced by a real engine on a manual clock.

use std::time::Duration;

use ironplant_control::alarm::kpi::{self, KpiOptions};
use ironplant_control::alarm::{AlarmDef, AlarmEngine, Condition, EngineSettings, Transition};
use ironplant_core::{Quality, Sample, TagId, TagPath, Timestamp, Value};

const S: i64 = 1_000_000;
const T0: i64 = 1_800_000_000 * S;

fn t(secs: i64) -> Timestamp {
    Timestamp(T0 + secs * S)
}

fn engine(n: u32) -> AlarmEngine {
    let defs = (0..n)
        .map(|i| {
            let mut d = AlarmDef::new(
                &format!("a{i:02}"),
                TagId(i),
                TagPath::parse(&format!("acme/lyon/bottling/line1/t{i:02}/pv")).expect("path"),
                Condition::High { limit: 10.0 },
            );
            d.priority = u8::try_from(i % 4 + 1).expect("1..=4");
            d
        })
        .collect();
    AlarmEngine::new(defs, EngineSettings::default())
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

/// Raises and clears an alarm once.
fn pulse(e: &mut AlarmEngine, tag: u32, at: i64) {
    feed(e, tag, 20.0, at);
    feed(e, tag, 0.0, at + 1);
}

#[test]
fn chattering_alarms_are_found() {
    let mut e = engine(3);
    // a00: 3 activations within 50 s → chattering. a01: 3 activations 40 s apart (80 s for
    // three) → not. a02: once.
    for at in [0, 25, 50] {
        pulse(&mut e, 0, at);
    }
    for at in [0, 40, 80] {
        pulse(&mut e, 1, at);
    }
    pulse(&mut e, 2, 5);
    let r = e.kpi(t(0), t(600), &KpiOptions::default());
    let ch: Vec<(&str, usize, usize)> = r
        .chattering
        .iter()
        .map(|c| (c.alarm.as_str(), c.activations, c.max_in_window))
        .collect();
    assert_eq!(ch, vec![("a00", 3, 3)]);
    assert_eq!(r.alarms, 7);
    assert_eq!(r.top[0].alarm, "a00");
    assert_eq!(r.top.last().map(|f| f.alarm.as_str()), Some("a02"));
}

#[test]
fn flood_periods_average_and_peak_per_operator() {
    let mut e = engine(40);
    // Period 0 [0, 600): 5 alarms. Period 1 [600, 1200): 30 alarms. Period 2: 12. Period 3: 0.
    for i in 0..5 {
        pulse(&mut e, i, 10 + i64::from(i));
    }
    for i in 0..30 {
        pulse(&mut e, i, 610 + 2 * i64::from(i));
    }
    for i in 0..12 {
        pulse(&mut e, i, 1210 + 2 * i64::from(i));
    }
    let opts = KpiOptions::default();
    let r = e.kpi(t(0), t(2400), &opts);
    assert_eq!(r.periods, 4);
    assert_eq!(r.alarms, 47);
    assert_eq!(r.per_operator_per_period_peak, 30.0);
    assert!((r.per_operator_per_period_avg - 47.0 / 4.0).abs() < 1e-9);
    assert_eq!(r.flood_periods, 2);
    assert!((r.flood_percent - 50.0).abs() < 1e-9);
    let floods: Vec<(i64, i64, usize, usize)> = r
        .floods
        .iter()
        .map(|f| ((f.start - T0) / S, (f.end - T0) / S, f.alarms, f.peak))
        .collect();
    assert_eq!(
        floods,
        vec![(600, 1800, 42, 30)],
        "two flood periods merged"
    );
    // Priorities: tags i%4+1.
    let prio: Vec<usize> = r.priorities.iter().map(|p| p.count).collect();
    assert_eq!(prio.iter().sum::<usize>(), 47);
    assert_eq!(prio[0], 2 + 8 + 3, "i%4==0 among 0..5, 0..30, 0..12");
    // With 3 operators the load per operator falls below the threshold.
    let r3 = e.kpi(
        t(0),
        t(2400),
        &KpiOptions {
            operators: 3,
            ..opts
        },
    );
    assert_eq!(r3.flood_periods, 0);
    assert_eq!(r3.per_operator_per_period_peak, 10.0);
    assert_eq!(r3.top.len(), 10);
}

#[test]
fn standing_shelved_and_out_of_service_alarms_are_counted() {
    let mut e = engine(4);
    feed(&mut e, 0, 20.0, 0);
    feed(&mut e, 1, 20.0, 20 * 3600);
    feed(&mut e, 2, 20.0, 0);
    e.shelve(
        "a02",
        Duration::from_secs(3600),
        "alice",
        "noisy",
        t(30 * 3600),
    )
    .expect("shelve");
    e.remove_from_service("a03", "maint", "WO 9", t(30 * 3600))
        .expect("oos");
    let end = t(25 * 3600 + 30 * 60);
    let opts = KpiOptions::default();
    let live = e.kpi(t(0), t(31 * 3600), &opts);
    let standing: Vec<&str> = live.standing.iter().map(|s| s.alarm.as_str()).collect();
    assert_eq!(standing, vec!["a00", "a02"], "a01 active for 11 h only");
    assert_eq!((live.shelved_now, live.out_of_service_now), (1, 1));
    assert_eq!((live.shelved, live.removed_from_service), (1, 1));
    // The pure function over the transitions alone (as read from the event store) agrees at a
    // time before the shelve.
    let history: Vec<Transition> = e.history().cloned().collect();
    let r = kpi::report(&history, t(0), end, &opts);
    let standing: Vec<(&str, u64)> = r
        .standing
        .iter()
        .map(|s| (s.alarm.as_str(), s.hours as u64))
        .collect();
    assert_eq!(standing, vec![("a00", 25), ("a02", 25)]);
    let r = kpi::report(&history, t(0), t(31 * 3600), &opts);
    assert_eq!((r.shelved_now, r.out_of_service_now), (1, 1));
    // The report serialises for the API.
    let json = serde_json::to_value(&r).expect("json");
    assert_eq!(json["operators"], 1);
    assert!(json["floods"].is_array());
}

#[test]
fn kpis_from_events_match_kpis_from_transitions() {
    let mut e = engine(2);
    for at in [0, 10, 20, 30] {
        pulse(&mut e, 0, at);
    }
    let history: Vec<Transition> = e.history().cloned().collect();
    let back: Vec<Transition> = history
        .iter()
        .map(|t| Transition::from_event(&t.to_event()).expect("alarm event"))
        .collect();
    let opts = KpiOptions::default();
    assert_eq!(
        kpi::report(&history, t(0), t(600), &opts),
        kpi::report(&back, t(0), t(600), &opts)
    );
    assert_eq!(kpi::report(&back, t(0), t(600), &opts).chattering.len(), 1);
}
