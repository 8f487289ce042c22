//! The historian against a simple in-memory model, restarts, queries, corruption and retention.

use std::time::Duration;

use ironplant_core::{Quality, QualityReason, TagPath, Timestamp, Value};
use ironplant_historian::{Aggregate, Historian, HistorianConfig, HistorianError, Interpolation};

fn path(s: &str) -> TagPath {
    TagPath::parse(s).expect("valid path")
}

fn cfg(dir: &std::path::Path) -> HistorianConfig {
    let mut c = HistorianConfig::new(dir);
    c.flush_samples = 500; // many checkpoints, so queries cross chunks and memtables
    c
}

const T0: i64 = 1_700_000_000_000_000;
const S: i64 = 1_000_000;

#[test]
fn stores_queries_and_survives_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let h = Historian::open(cfg(dir.path())).expect("open");
    let ids = h
        .register(&[path("a/b/temp"), path("a/b/count"), path("a/b/run")])
        .expect("register");
    // 3 tags × 2000 s at 1 s; the temperature is Bad for 10 s in the middle.
    for chunk in 0..20 {
        let mut batch = Vec::new();
        for i in chunk * 100..(chunk + 1) * 100 {
            let ts = T0 + i * S;
            let q = if (1000..1010).contains(&i) {
                Quality::bad(QualityReason::CommFailure)
            } else {
                Quality::GOOD
            };
            batch.push((ids[0], ts, Value::Float(20.0 + (i % 10) as f64 * 0.1), q));
            batch.push((ids[1], ts, Value::Int(i * 3), Quality::GOOD));
            batch.push((ids[2], ts, Value::Bool(i % 100 < 50), Quality::GOOD));
        }
        h.submit(batch)
            .expect("submit")
            .wait_blocking()
            .expect("durable");
    }
    let check = |h: &Historian| {
        let page = h
            .raw(
                "a/b/count",
                Timestamp(T0),
                Timestamp(T0 + 2000 * S),
                100_000,
            )
            .expect("raw");
        assert_eq!(page.points.len(), 2000);
        assert!(page
            .points
            .iter()
            .enumerate()
            .all(|(i, p)| p.value == Value::Int(i as i64 * 3)
                && p.ts == Timestamp(T0 + i as i64 * S)));
        assert!(page.warnings.is_empty());
        // Paging never loses or repeats a sample.
        let mut from = Timestamp(T0);
        let mut seen = 0;
        loop {
            let p = h
                .raw("a/b/run", from, Timestamp(T0 + 2000 * S), 300)
                .expect("page");
            seen += p.points.len();
            match p.next {
                Some(n) => from = n,
                None => break,
            }
        }
        assert_eq!(seen, 2000);
        // 1-minute averages over the range; the bad samples are excluded and counted.
        let agg = h
            .aggregate(
                "a/b/temp",
                Timestamp(T0),
                Timestamp(T0 + 2000 * S),
                Duration::from_secs(60),
                &[
                    Aggregate::Avg,
                    Aggregate::Count,
                    Aggregate::Min,
                    Aggregate::Max,
                ],
            )
            .expect("aggregate");
        assert_eq!(agg.rows.len(), 34);
        let row = &agg.rows[0];
        assert!(
            (row.values[0].expect("avg") - 20.45).abs() < 1e-9,
            "{row:?}"
        );
        assert_eq!(
            (row.values[1], row.values[2], row.values[3]),
            (Some(60.0), Some(20.0), Some(20.9))
        );
        let with_bad = &agg.rows[16]; // [960, 1020) holds the 10 bad samples
        assert_eq!((with_bad.good, with_bad.bad), (50, 10));
        let delta = h
            .aggregate(
                "a/b/count",
                Timestamp(T0),
                Timestamp(T0 + 600 * S),
                Duration::from_secs(600),
                &[Aggregate::Delta],
            )
            .expect("delta");
        assert_eq!(delta.rows[0].values[0], Some(599.0 * 3.0));
        // Interpolation at an instant between samples.
        let at = h
            .at(
                "a/b/count",
                Timestamp(T0 + 10 * S + S / 2),
                Interpolation::Linear,
            )
            .expect("at")
            .point
            .expect("value");
        assert_eq!(at.value, Value::Float(31.5));
        let prev = h
            .at(
                "a/b/count",
                Timestamp(T0 + 10 * S + S / 2),
                Interpolation::Previous,
            )
            .expect("at")
            .point
            .expect("value");
        assert_eq!(prev.value, Value::Int(30));
        let last = h.last(&["a/b/count", "a/b/none"]);
        assert_eq!(
            last[0].as_ref().map(|p| p.value.clone()),
            Some(Value::Int(1999 * 3))
        );
        assert_eq!(last[1], None);
    };
    check(&h);
    assert!(h.stats().checkpoints > 0, "some data went into chunks");
    h.close();
    // Reopen: the same answers from chunks and the replayed WAL.
    let h = Historian::open(cfg(dir.path())).expect("reopen");
    check(&h);
    h.flush_blocking().expect("flush");
    check(&h);
    // Merging the small chunks of many checkpoints changes nothing a query can see.
    let before = std::fs::metadata(dir.path().join("chunks.redb"))
        .expect("db")
        .len();
    h.compact_blocking().expect("compact");
    check(&h);
    let after = std::fs::metadata(dir.path().join("chunks.redb"))
        .expect("db")
        .len();
    assert!(
        after <= before,
        "compaction grew the file: {before} -> {after}"
    );
    h.close();
    let h = Historian::open(cfg(dir.path())).expect("reopen");
    check(&h);
    h.close();
}

/// Arrays and DataSets come back exactly from the WAL (replayed at reopen), from chunks and
/// after compaction; aggregates count them (like strings) but take no number from them.
#[test]
fn arrays_and_datasets_survive_wal_replay_and_chunks() {
    use ironplant_core::{Array, DataSet, ScalarType};
    let dir = tempfile::tempdir().expect("tempdir");
    let h = Historian::open(cfg(dir.path())).expect("open");
    let ids = h
        .register(&[path("a/b/spectrum"), path("a/b/table")])
        .expect("register");
    let spectrum = |i: i64| {
        Value::array(
            Array::from_floats(
                (0..(i % 5 + 1))
                    .map(|k| (i * 10 + k) as f64 * 0.5)
                    .collect(),
            )
            .expect("small"),
        )
    };
    let table = |i: i64| {
        Value::dataset(
            DataSet::new(
                vec!["batch".into(), "ok".into()],
                vec![ScalarType::String, ScalarType::Bool],
                vec![
                    vec![
                        Value::String(format!("b{i}").into()),
                        Value::Bool(i % 2 == 0),
                    ],
                    vec![Value::Null, Value::Bool(true)],
                ],
            )
            .expect("valid"),
        )
    };
    // 700 samples each: with flush_samples = 500 the first part goes to chunks, the rest stays
    // in the WAL until the reopen replays it.
    const N: i64 = 700;
    for part in 0..7 {
        let batch: Vec<_> = (part * 100..(part + 1) * 100)
            .flat_map(|i| {
                [
                    (ids[0], T0 + i * S, spectrum(i), Quality::GOOD),
                    (ids[1], T0 + i * S, table(i), Quality::GOOD),
                ]
            })
            .collect();
        h.submit(batch)
            .expect("submit")
            .wait_blocking()
            .expect("durable");
    }
    let check = |h: &Historian| {
        let page = h
            .raw("a/b/spectrum", Timestamp(T0), Timestamp(T0 + N * S), 10_000)
            .expect("raw");
        assert_eq!(page.points.len(), N as usize);
        for (i, p) in page.points.iter().enumerate() {
            assert_eq!(p.value, spectrum(i as i64), "spectrum sample {i}");
        }
        let page = h
            .raw("a/b/table", Timestamp(T0), Timestamp(T0 + N * S), 10_000)
            .expect("raw");
        assert_eq!(page.points.len(), N as usize);
        for (i, p) in page.points.iter().enumerate() {
            assert_eq!(p.value, table(i as i64), "table sample {i}");
        }
        let agg = h
            .aggregate(
                "a/b/spectrum",
                Timestamp(T0),
                Timestamp(T0 + 100 * S),
                Duration::from_secs(100),
                &[Aggregate::Avg, Aggregate::Count, Aggregate::Max],
            )
            .expect("aggregate");
        let row = &agg.rows[0];
        assert_eq!(row.good, 100);
        // As for strings: counted as good samples, but no average or maximum of an array.
        assert_eq!(row.values, vec![None, Some(100.0), None], "{row:?}");
    };
    check(&h);
    assert!(h.stats().checkpoints > 0, "some data went into chunks");
    h.close();
    let h = Historian::open(cfg(dir.path())).expect("reopen");
    check(&h);
    h.flush_blocking().expect("flush");
    h.compact_blocking().expect("compact");
    check(&h);
    h.close();
}

#[test]
fn bad_queries_get_clear_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let h = Historian::open(cfg(dir.path())).expect("open");
    h.register(&[path("a/x")]).expect("register");
    assert!(matches!(
        h.raw("a/nope", Timestamp(0), Timestamp(1), 10),
        Err(HistorianError::UnknownTag(_))
    ));
    assert!(matches!(
        h.raw("a/x", Timestamp(10), Timestamp(1), 10),
        Err(HistorianError::BadRange { .. })
    ));
    assert!(matches!(
        h.raw("a/x", Timestamp(0), Timestamp(1), 10_000_000),
        Err(HistorianError::LimitTooLarge { .. })
    ));
    let e = h
        .aggregate(
            "a/x",
            Timestamp(0),
            Timestamp(T0),
            Duration::from_millis(1),
            &[Aggregate::Avg],
        )
        .expect_err("too many");
    assert!(matches!(e, HistorianError::TooManyIntervals { .. }), "{e}");
    assert!(matches!(
        h.aggregate(
            "a/x",
            Timestamp(0),
            Timestamp(1),
            Duration::ZERO,
            &[Aggregate::Avg]
        ),
        Err(HistorianError::BadInterval(_))
    ));
    h.close();
}

#[test]
fn a_corrupt_chunk_is_reported_and_skipped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let h = Historian::open(cfg(dir.path())).expect("open");
    let id = h.register(&[path("a/c")]).expect("register")[0];
    // Three checkpoints, so three chunks.
    for part in 0..3 {
        let batch = (part * 1000..(part + 1) * 1000)
            .map(|i| (id, T0 + i * S, Value::Float(i as f64), Quality::GOOD))
            .collect();
        h.submit(batch)
            .expect("submit")
            .wait_blocking()
            .expect("durable");
        h.flush_blocking().expect("flush");
    }
    h.close();
    // Flip a byte of the first chunk on disk (through redb, as bit rot would).
    {
        let store = ironplant_historian::store::Store::open(&dir.path().join("chunks.redb"))
            .expect("store");
        assert!(store.corrupt_first_chunk(id).expect("corrupt"));
    }
    let h = Historian::open(cfg(dir.path())).expect("reopen");
    let page = h
        .raw("a/c", Timestamp(T0), Timestamp(T0 + 3000 * S), 10_000)
        .expect("query still answers");
    assert_eq!(page.warnings.len(), 1, "{:?}", page.warnings);
    let w = &page.warnings[0];
    assert!(
        w.contains("a/c") && w.contains("corrupt") && w.contains("2023-11-14T22:13:20"),
        "{w}"
    );
    assert_eq!(
        page.points.len(),
        2000,
        "the two intact chunks still answer"
    );
    assert_eq!(page.points[0].ts, Timestamp(T0 + 1000 * S));
    assert_eq!(h.stats().corrupt_chunks_seen, 1);
    // Merging never swallows a corrupt chunk, and the rest still merges.
    h.compact_blocking().expect("compact");
    let page = h
        .raw("a/c", Timestamp(T0), Timestamp(T0 + 3000 * S), 10_000)
        .expect("query");
    assert_eq!((page.points.len(), page.warnings.len()), (2000, 1));
    h.close();
}

#[test]
fn retention_drops_old_chunks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = cfg(dir.path());
    c.retention = vec![ironplant_historian::Retention {
        prefix: "a/old".into(),
        keep: Duration::from_secs(3600),
    }];
    let h = Historian::open(c).expect("open");
    let ids = h
        .register(&[path("a/old"), path("a/keep")])
        .expect("register");
    let now = Timestamp::now().0;
    let mut batch = Vec::new();
    for i in 0..1000 {
        let ts = now - 7200 * S + i * S; // two hours ago
        batch.push((ids[0], ts, Value::Float(1.0), Quality::GOOD));
        batch.push((ids[1], ts, Value::Float(1.0), Quality::GOOD));
    }
    h.submit(batch)
        .expect("submit")
        .wait_blocking()
        .expect("durable");
    // Retention runs after checkpoints (at most once a minute) and every minute.
    h.flush_blocking().expect("flush");
    let old = h
        .raw("a/old", Timestamp(now - 8000 * S), Timestamp(now), 10_000)
        .expect("raw");
    let kept = h
        .raw(
            "a/keep",
            Timestamp(now - 8000 * S),
            Timestamp(now + 1),
            10_000,
        )
        .expect("raw");
    assert_eq!(old.points.len(), 0, "expired data dropped");
    assert_eq!(kept.points.len(), 1000, "other tags untouched");
    assert!(h.stats().retention_dropped_chunks > 0);
    h.close();
}

#[test]
fn lossy_rules_store_less_within_the_declared_error() {
    use ironplant_historian::lossy::{reconstruct, LossySpec};
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = LossySpec::SwingingDoor {
        deviation: 0.5,
        max_interval_us: None,
    };
    let mut c = cfg(dir.path());
    c.lossy = vec![("a/lossy".into(), spec)];
    let h = Historian::open(c).expect("open");
    let ids = h
        .register(&[path("a/lossy/x"), path("a/exact")])
        .expect("register");
    let signal = |i: i64| ((i as f64) * 0.01).sin() * 20.0 + ((i * 7919) % 13) as f64 * 0.01;
    let mut batch = Vec::new();
    for i in 0..5000 {
        batch.push((ids[0], T0 + i * S, Value::Float(signal(i)), Quality::GOOD));
        batch.push((ids[1], T0 + i * S, Value::Float(signal(i)), Quality::GOOD));
    }
    h.submit(batch)
        .expect("submit")
        .wait_blocking()
        .expect("durable");
    h.flush_blocking().expect("flush");
    let lossy = h
        .raw(
            "a/lossy/x",
            Timestamp(T0),
            Timestamp(T0 + 5000 * S),
            100_000,
        )
        .expect("raw");
    let exact = h
        .raw("a/exact", Timestamp(T0), Timestamp(T0 + 5000 * S), 100_000)
        .expect("raw");
    assert_eq!(
        exact.points.len(),
        5000,
        "tags without a rule stay lossless"
    );
    assert!(
        lossy.points.len() < 500,
        "stored {} of 5000",
        lossy.points.len()
    );
    let stored: Vec<(i64, f64)> = lossy
        .points
        .iter()
        .map(|p| (p.ts.0, p.value.as_f64().expect("number")))
        .collect();
    for i in 0..5000 {
        let r = reconstruct(&spec, &stored, T0 + i * S).expect("covered");
        assert!(
            (r - signal(i)).abs() <= 0.5,
            "sample {i}: {r} vs {}",
            signal(i)
        );
    }
    h.close();
}

#[test]
fn late_and_overlapping_data_comes_back_in_time_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let h = Historian::open(cfg(dir.path())).expect("open");
    let id = h.register(&[path("a/late")]).expect("register")[0];
    // Three overlapping checkpoints, the middle one reversed, plus a memtable overlapping all.
    let ranges: [(i64, i64, bool); 3] = [(100, 200, false), (50, 150, true), (0, 300, false)];
    let mut expected = 0;
    for (lo, hi, rev) in ranges {
        let mut ts: Vec<i64> = (lo..hi).filter(|t| t % 3 == (lo / 50) % 3).collect();
        if rev {
            ts.reverse();
        }
        expected += ts.len();
        let batch = ts
            .iter()
            .map(|&t| (id, T0 + t * S, Value::Int(t), Quality::GOOD))
            .collect();
        h.submit(batch)
            .expect("submit")
            .wait_blocking()
            .expect("durable");
        h.flush_blocking().expect("flush");
    }
    let mem: Vec<_> = (0..300)
        .filter(|t| t % 7 == 0)
        .map(|t| (id, T0 + t * S + 1, Value::Int(t), Quality::GOOD))
        .collect();
    expected += mem.len();
    assert_eq!(expected, 33 + 33 + 100 + 43);
    h.submit(mem)
        .expect("submit")
        .wait_blocking()
        .expect("durable");
    for limit in [7, 100_000] {
        let mut from = Timestamp(T0);
        let mut all = Vec::new();
        loop {
            let page = h
                .raw("a/late", from, Timestamp(T0 + 400 * S), limit)
                .expect("raw");
            all.extend(page.points.iter().map(|p| p.ts));
            match page.next {
                Some(n) => from = n,
                None => break,
            }
        }
        assert!(
            all.windows(2).all(|w| w[0] <= w[1]),
            "out of order with limit {limit}"
        );
        assert_eq!(all.len(), expected, "limit {limit}");
    }
    let count = h
        .aggregate(
            "a/late",
            Timestamp(T0),
            Timestamp(T0 + 400 * S),
            Duration::from_secs(400),
            &[Aggregate::Count],
        )
        .expect("aggregate");
    assert_eq!(count.rows[0].values[0], Some(expected as f64));
    h.close();
}

#[test]
fn old_data_and_half_full_chunks_are_merged_in_the_background() {
    // A backfill from two years ago, written in pieces: the background merge (no compaction
    // asked) joins neighbouring chunks whatever the age of their data, also when one of them
    // is more than half full.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = HistorianConfig::new(dir.path());
    c.flush_samples = 1_000_000; // checkpoints only when asked
    let h = Historian::open(c).expect("open");
    let id = h.register(&[path("a/backfill")]).expect("register")[0];
    let old = Timestamp::now().0 - 2 * 365 * 86_400 * S;
    let mut next = 0i64;
    let mut write = |n: i64| {
        let batch = (next..next + n)
            .map(|i| {
                (
                    id,
                    old + i * S,
                    Value::Float((i % 100) as f64),
                    Quality::GOOD,
                )
            })
            .collect();
        next += n;
        h.submit(batch)
            .expect("submit")
            .wait_blocking()
            .expect("durable");
        h.flush_blocking().expect("flush");
    };
    // 5,000 samples, then 3,000: two chunks, the first more than half full.
    write(5_000);
    write(3_000);
    // Then ten small pieces, merged once eight of them wait.
    for _ in 0..10 {
        write(300);
    }
    let b = h.storage_breakdown().expect("breakdown");
    assert_eq!(b.samples, 11_000);
    // 5,000 + 3,000 → one chunk of 8,000 (not yet full: it compresses to far less than a
    // page), which the first piece of 300 joins (8,300: full); the next eight pieces → one of
    // 2,400; the last one waits for more.
    assert_eq!(b.chunks, 3, "{b:?}");
    let page = h
        .raw(
            "a/backfill",
            Timestamp(old),
            Timestamp(old + 11_000 * S),
            100_000,
        )
        .expect("raw");
    assert_eq!(page.points.len(), 11_000);
    assert!(page
        .points
        .iter()
        .enumerate()
        .all(|(i, p)| p.ts.0 == old + i as i64 * S && p.value == Value::Float((i % 100) as f64)));
    h.close();
}
