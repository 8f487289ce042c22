//! The tags of one poll group share their timestamps: a jittered poll schedule costs one
//! timestamp column per group, not per tag — through checkpoints, merges and retention, and
//! every tag still reads back exactly what was written.

use std::time::Duration;

use ironplant_core::{Quality, TagPath, Timestamp, Value};
use ironplant_historian::{Historian, HistorianConfig};

const T0: i64 = 1_767_225_600_000_000;

/// A deterministic jitter in [-5 ms, +5 ms] at µs resolution.
fn jitter(step: i64, group: i64) -> i64 {
    let x = (step * 7_919 + group * 104_729).wrapping_mul(2_654_435_761) % 10_001;
    x.abs() - 5_000
}

/// `groups` poll groups of `per_group` tags, one poll a second with jitter, for `seconds`.
fn ingest(h: &Historian, groups: i64, per_group: i64, seconds: i64) -> Vec<u32> {
    let paths: Vec<TagPath> = (0..groups * per_group)
        .map(|i| TagPath::parse(&format!("acme/p/a/l/c/dev{}/pt{i}", i / per_group)).expect("path"))
        .collect();
    let ids = h.register(&paths).expect("register");
    for step in 0..seconds {
        let mut batch = Vec::new();
        for g in 0..groups {
            let ts = T0 + step * 1_000_000 + jitter(step, g);
            for k in 0..per_group {
                let i = (g * per_group + k) as usize;
                let v = ((step + i as i64) % 50) as f64 * 0.1;
                batch.push((ids[i], ts, Value::Float(v), Quality::GOOD));
            }
        }
        h.submit(batch)
            .expect("submit")
            .wait_blocking()
            .expect("durable");
    }
    ids
}

fn check_all(h: &Historian, groups: i64, per_group: i64, seconds: i64) {
    for i in 0..groups * per_group {
        let g = i / per_group;
        let path = format!("acme/p/a/l/c/dev{g}/pt{i}");
        let page = h
            .raw(
                &path,
                Timestamp(T0 - 10_000_000),
                Timestamp(T0 + seconds * 1_000_000),
                100_000,
            )
            .expect("raw");
        assert_eq!(page.points.len() as i64, seconds, "{path}");
        for (step, p) in page.points.iter().enumerate() {
            let step = step as i64;
            assert_eq!(
                p.ts.0,
                T0 + step * 1_000_000 + jitter(step, g),
                "{path} #{step}"
            );
            assert_eq!(p.value, Value::Float(((step + i) % 50) as f64 * 0.1));
        }
    }
}

#[test]
fn a_poll_group_stores_its_timestamps_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = HistorianConfig::new(dir.path());
    cfg.flush_samples = 4_000; // several checkpoints, then merges
    let h = Historian::open(cfg).expect("open");
    let (groups, per_group, seconds) = (4, 10, 1_200);
    ingest(&h, groups, per_group, seconds);
    h.flush_blocking().expect("flush");
    let b = h.storage_breakdown().expect("breakdown");
    // One column per group and checkpoint, referenced by its ten tags' chunks.
    assert!(b.shared_columns > 0);
    assert!(b.shared_columns * 5 <= b.chunks, "{b:?}");
    check_all(&h, groups, per_group, seconds);

    // Merging keeps the sharing: the merged chunks of a group have identical timestamps.
    h.compact_blocking().expect("compact");
    let merged = h.storage_breakdown().expect("breakdown");
    assert_eq!(merged.samples, (groups * per_group * seconds) as u64);
    assert_eq!(merged.shared_columns, groups as u64, "{merged:?}");
    assert_eq!(merged.chunks, (groups * per_group) as u64, "{merged:?}");
    // Timestamps of 40 tags cost about what 4 do.
    let per_sample = merged.timestamp_bytes as f64 / merged.samples as f64;
    assert!(
        per_sample < 0.4,
        "{per_sample:.3} B/sample of timestamps: {merged:?}"
    );
    check_all(&h, groups, per_group, seconds);

    // After a restart too.
    h.close();
    let h = Historian::open(HistorianConfig::new(dir.path())).expect("reopen");
    check_all(&h, groups, per_group, seconds);
    h.close();
}

#[test]
fn retention_frees_shared_columns_with_their_last_chunk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = HistorianConfig::new(dir.path());
    // One checkpoint (retention runs after it, then at most once a minute).
    cfg.flush_samples = 1_000_000;
    cfg.retention = vec![ironplant_historian::Retention {
        prefix: "acme".into(),
        keep: Duration::from_secs(3600),
    }];
    // Data from 2026-01-01: far older than an hour, so retention drops all of it.
    let h = Historian::open(cfg).expect("open");
    ingest(&h, 2, 5, 600);
    h.flush_blocking().expect("flush");
    // Retention runs right after the checkpoint, on the flusher's thread.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while h.stats().retention_dropped_chunks == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "retention did not run"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let b = h.storage_breakdown().expect("breakdown");
    assert_eq!(b.chunks, 0, "{b:?}");
    assert_eq!(b.shared_columns, 0, "no column outlives its chunks: {b:?}");
    h.close();
}
