//! Hourly rollups answer aggregate queries of whole hours with the same results as the raw
//! samples (to floating-point rounding), including after late data and after retention
//! dropped the raw samples.

use std::time::Duration;

use ironplant_core::{Quality, QualityReason, TagPath, Timestamp, Value};
use ironplant_historian::aggregate::compute;
use ironplant_historian::{Aggregate, Historian, HistorianConfig, Raw};

const H: i64 = 3_600_000_000;
/// 2026-01-01T00:00:00Z.
const T0: i64 = 1_767_225_600_000_000;

fn path(s: &str) -> TagPath {
    TagPath::parse(s).expect("path")
}

/// Three days of a noisy analog every 7 s (not aligned to hours), a counter that resets, a
/// Bad stretch and a two-hour gap.
fn samples() -> Vec<(i64, f64, f64, bool)> {
    let mut out = Vec::new();
    let mut counter = 0.0;
    let mut t = T0 + 3_000_000;
    let mut i = 0u64;
    while t < T0 + 72 * H {
        let gap = (T0 + 30 * H..T0 + 32 * H).contains(&t);
        if !gap {
            let noise = ((i.wrapping_mul(2_654_435_761) % 1000) as f64 - 500.0) / 100.0;
            let v = 50.0 + 20.0 * ((t - T0) as f64 / (5.0 * H as f64)).sin() + noise;
            counter += (i % 5) as f64;
            if i % 20_000 == 19_999 {
                counter = 0.0;
            }
            let bad = (T0 + 40 * H..T0 + 40 * H + 600_000_000).contains(&t);
            out.push((t, (v * 100.0).round() / 100.0, counter, bad));
        }
        t += 7_000_000;
        i += 1;
    }
    out
}

fn quality(bad: bool) -> Quality {
    if bad {
        Quality::bad(QualityReason::CommFailure)
    } else {
        Quality::GOOD
    }
}

/// The raw reference: the same aggregation over the raw samples, no rollups involved.
fn reference(h: &Historian, tag: &str, from: i64, to: i64, step: i64) -> Vec<Vec<Option<f64>>> {
    let page = h
        .raw(tag, Timestamp(from), Timestamp(to), 100_000)
        .expect("raw");
    assert!(page.next.is_none());
    let before = h
        .raw(tag, Timestamp(from - 24 * H), Timestamp(from), 100_000)
        .expect("raw before")
        .points
        .last()
        .cloned();
    let raw = |p: &ironplant_historian::Point| Raw {
        ts: p.ts.0,
        value: p.value.clone(),
        quality: ironplant_historian::codec::quality_code(p.quality),
    };
    let pts: Vec<Raw> = page.points.iter().map(raw).collect();
    let before = before.as_ref().map(raw);
    compute(&pts, before.as_ref(), from, to, step, &Aggregate::ALL)
        .into_iter()
        .map(|r| r.values)
        .collect()
}

fn assert_close(got: &[Vec<Option<f64>>], want: &[Vec<Option<f64>>], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: rows");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        for (k, (a, b)) in g.iter().zip(w).enumerate() {
            let ok = match (a, b) {
                (Some(a), Some(b)) => (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0),
                (None, None) => true,
                _ => false,
            };
            assert!(
                ok,
                "{what}: row {i}, {:?}: {a:?} != {b:?}",
                Aggregate::ALL[k]
            );
        }
    }
}

fn query(h: &Historian, tag: &str, from: i64, to: i64, step: i64) -> Vec<Vec<Option<f64>>> {
    h.aggregate(
        tag,
        Timestamp(from),
        Timestamp(to),
        Duration::from_micros(step as u64),
        &Aggregate::ALL,
    )
    .expect("aggregate")
    .rows
    .into_iter()
    .map(|r| r.values)
    .collect()
}

#[test]
fn rollup_answers_equal_raw_aggregates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = HistorianConfig::new(dir.path());
    cfg.flush_samples = 5_000;
    let h = Historian::open(cfg).expect("open");
    let ids = h
        .register(&[path("a/b/temp"), path("a/b/count")])
        .expect("register");
    let data = samples();
    for part in data.chunks(3_000) {
        let batch = part
            .iter()
            .flat_map(|&(t, v, c, bad)| {
                [
                    (ids[0], t, Value::Float(v), quality(bad)),
                    (ids[1], t, Value::Float(c), Quality::GOOD),
                ]
            })
            .collect();
        h.submit(batch)
            .expect("submit")
            .wait_blocking()
            .expect("durable");
    }
    h.flush_blocking().expect("flush");
    for tag in ["a/b/temp", "a/b/count"] {
        for (from, to, step) in [
            (T0, T0 + 72 * H, H),
            (T0, T0 + 72 * H, 6 * H),
            (T0 + 24 * H, T0 + 72 * H, 24 * H),
            (T0 + 5 * H, T0 + 50 * H, 3 * H),
        ] {
            let before = h.stats().rollup_hours_read;
            let got = query(&h, tag, from, to, step);
            assert!(
                h.stats().rollup_hours_read > before,
                "{tag}: rollups not used"
            );
            assert_close(&got, &reference(&h, tag, from, to, step), tag);
        }
    }

    // A late sample in an old hour: answered from raw data until it is rolled up, then from
    // the renewed rollups — right both times.
    h.submit(vec![(
        ids[0],
        T0 + 10 * H + 1,
        Value::Float(1_000.0),
        Quality::GOOD,
    )])
    .expect("submit")
    .wait_blocking()
    .expect("durable");
    let want = reference(&h, "a/b/temp", T0, T0 + 24 * H, H);
    assert_close(
        &query(&h, "a/b/temp", T0, T0 + 24 * H, H),
        &want,
        "late, in memory",
    );
    h.flush_blocking().expect("flush");
    assert_close(
        &query(&h, "a/b/temp", T0, T0 + 24 * H, H),
        &want,
        "late, rolled up",
    );
    assert_eq!(want[10][1], Some(1_000.0), "the late maximum counts");

    // Not whole hours: raw, as before.
    let before = h.stats().rollup_hours_read;
    query(&h, "a/b/temp", T0 + 1, T0 + 24 * H, H);
    query(&h, "a/b/temp", T0, T0 + 24 * H, 60_000_000);
    assert_eq!(h.stats().rollup_hours_read, before);
    h.close();
}

#[test]
fn rollups_outlive_the_raw_samples_retention_drops() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = HistorianConfig::new(dir.path());
    cfg.flush_samples = 1_000_000;
    cfg.retention = vec![ironplant_historian::Retention {
        prefix: "a".into(),
        keep: Duration::from_secs(3600),
    }];
    let h = Historian::open(cfg).expect("open");
    let id = h.register(&[path("a/old")]).expect("register")[0];
    // Two days from 2026-01-01, one sample a minute: far older than an hour.
    let batch = (0..2 * 24 * 60)
        .map(|i| {
            (
                id,
                T0 + i * 60_000_000,
                Value::Float((i % 60) as f64),
                Quality::GOOD,
            )
        })
        .collect();
    h.submit(batch)
        .expect("submit")
        .wait_blocking()
        .expect("durable");
    let want = query(&h, "a/old", T0, T0 + 24 * H, H);
    h.flush_blocking().expect("flush");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while h.stats().retention_dropped_chunks == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "retention did not run"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let raw = h
        .raw("a/old", Timestamp(T0), Timestamp(T0 + 48 * H), 10_000)
        .expect("raw");
    assert!(raw.points.is_empty(), "raw samples dropped");
    // The hourly figures of the first day remain.
    assert_close(
        &query(&h, "a/old", T0, T0 + 24 * H, H),
        &want,
        "after retention",
    );
    assert_eq!(want[3][6], Some(60.0), "60 samples an hour");
    h.close();
}
