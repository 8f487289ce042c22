//! Backfill import into a real historian in a temp dir: 1,000,000 rows of plant-like history
//! (ten sensors, jittered 1 s timestamps, sensor-precision values, some Bad samples, written
//! newest block first so the historian gets old data out of order) imported with the progress
//! bar on, then read back: counts, first and last samples, an average, across a restart.
//! Bad rows are named by line and refuse the file (nothing stored) unless skipped; a second
//! import of the same range is refused.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use ironplant_core::{Quality, QualityReason, Timestamp, Value};
use ironplant_historian::{Aggregate, Historian, HistorianConfig};
use ironplant_ingest::import::{import_file, ImportError, ImportOptions};

/// 2026-01-01T00:00:00Z.
const BASE: i64 = 1_767_225_600_000_000;
const INSTANTS: usize = 100_000;
const BLOCK: usize = 10_000;

const FLOAT_TAGS: [(&str, f64, f64, usize); 8] = [
    ("acme/lyon/bottling/line1/filler/temp", 72.0, 0.05, 2),
    ("acme/lyon/bottling/line1/filler/pressure", 2.4, 0.002, 3),
    ("acme/lyon/bottling/line1/filler/flow", 118.0, 0.3, 1),
    ("acme/lyon/bottling/line1/capper/torque", 12.5, 0.02, 2),
    ("acme/lyon/bottling/line1/capper/current", 3.1, 0.01, 3),
    ("acme/lyon/bottling/line1/labeler/speed", 420.0, 0.5, 1),
    ("acme/lyon/bottling/line1/tank/level", 63.0, 0.04, 2),
    ("acme/lyon/bottling/line1/tank/temp", 18.0, 0.01, 2),
];
const COUNTER: &str = "acme/lyon/bottling/line1/filler/bottles";
const RUNNING: &str = "acme/lyon/bottling/line1/filler/running";

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// What the generator wrote for one tag: (ts, value as rendered, good).
struct Expect {
    count: usize,
    first: (i64, String),
    last: (i64, String),
    good_sum: f64,
    good: usize,
}

fn generate(path: &Path) -> Vec<(String, Expect)> {
    let mut rng = Rng(0x1D0_5EED);
    // Per instant: jittered timestamp (1 s ± 200 ms, strictly increasing).
    let ts: Vec<i64> = (0..INSTANTS)
        .map(|i| BASE + i as i64 * 1_000_000 + (rng.unit() * 400_000.0) as i64 - 200_000)
        .collect();
    let mut columns: Vec<(String, Vec<(String, &str)>)> = Vec::new();
    for (tag, start, step, decimals) in FLOAT_TAGS {
        let mut x = start;
        let mut col = Vec::with_capacity(INSTANTS);
        for i in 0..INSTANTS {
            x += (rng.unit() - 0.5) * 2.0 * step;
            // A sensor outage now and then: Bad, no value.
            if i % 9_973 == 500 {
                col.push((String::new(), "Bad(CommFailure)"));
            } else {
                col.push((format!("{x:.decimals$}"), "Good"));
            }
        }
        columns.push((tag.to_owned(), col));
    }
    let mut n = 1_000_000i64;
    columns.push((
        COUNTER.to_owned(),
        (0..INSTANTS)
            .map(|_| {
                n += (rng.next() % 3) as i64;
                (n.to_string(), "Good")
            })
            .collect(),
    ));
    columns.push((
        RUNNING.to_owned(),
        (0..INSTANTS)
            .map(|i| (((i / 600) % 5 != 0).to_string(), "Good"))
            .collect(),
    ));
    let mut out = String::with_capacity(80 * INSTANTS * columns.len());
    out.push_str("tag,ts,value,quality\n");
    // Newest block first: the historian receives old data after newer data.
    for block in (0..INSTANTS / BLOCK).rev() {
        for i in block * BLOCK..(block + 1) * BLOCK {
            for (tag, col) in &columns {
                let (v, q) = &col[i];
                let _ = writeln!(out, "{tag},{},{v},{q}", Timestamp(ts[i]));
            }
        }
    }
    std::fs::write(path, out).expect("write the CSV");
    columns
        .into_iter()
        .map(|(tag, col)| {
            let mut good_sum = 0.0;
            let mut good = 0;
            for (v, q) in &col {
                if *q == "Good" {
                    good += 1;
                    good_sum += v.parse::<f64>().unwrap_or(0.0);
                }
            }
            let e = Expect {
                count: col.len(),
                first: (ts[0], col[0].0.clone()),
                last: (ts[INSTANTS - 1], col[INSTANTS - 1].0.clone()),
                good_sum,
                good,
            };
            (tag, e)
        })
        .collect()
}

fn render(v: &Value) -> String {
    match v {
        Value::Float(x) => format!("{x}"),
        other => other.to_string(),
    }
}

fn check(h: &Historian, tag: &str, e: &Expect) {
    let from = Timestamp(BASE - 1_000_000);
    let to = Timestamp(BASE + INSTANTS as i64 * 1_000_000 + 1_000_000);
    let mut points = Vec::new();
    let mut at = from;
    loop {
        let page = h
            .raw(tag, at, to, ironplant_historian::MAX_POINTS)
            .expect("raw");
        points.extend(page.points);
        match page.next {
            Some(next) => at = next,
            None => break,
        }
    }
    assert_eq!(points.len(), e.count, "{tag}: count");
    assert!(
        points.windows(2).all(|w| w[0].ts < w[1].ts),
        "{tag}: in time order"
    );
    let first = &points[0];
    let last = &points[points.len() - 1];
    for (p, (ts, want)) in [(first, &e.first), (last, &e.last)] {
        assert_eq!(p.ts.0, *ts, "{tag}: ts");
        match want.parse::<f64>() {
            Ok(x) => assert_eq!(p.value.as_f64(), Some(x), "{tag}: value"),
            Err(_) => assert_eq!(render(&p.value), *want, "{tag}: value"),
        }
    }
    if tag != RUNNING {
        let agg = h
            .aggregate(
                tag,
                from,
                to,
                Duration::from_secs(200_000),
                &[Aggregate::Avg, Aggregate::Count],
            )
            .expect("aggregate");
        assert_eq!(agg.rows.len(), 1);
        let row = &agg.rows[0];
        let avg = row.values[0].expect("an average");
        let want = e.good_sum / e.good as f64;
        assert!(
            (avg - want).abs() < 1e-9 * want.abs().max(1.0),
            "{tag}: avg {avg} != {want}"
        );
        assert_eq!(
            row.values[1],
            Some(e.good as f64),
            "{tag}: count of good samples"
        );
        assert_eq!(row.bad as usize, e.count - e.good, "{tag}: bad samples");
    }
}

fn open(dir: &Path) -> Historian {
    Historian::open(HistorianConfig::new(dir.join("historian"))).expect("historian opens")
}

#[test]
fn a_million_rows_round_trip_through_the_historian() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("backfill.csv");
    let expect = generate(&file);
    let rows: usize = expect.iter().map(|(_, e)| e.count).sum();
    assert_eq!(rows, 1_000_000);

    let h = open(dir.path());
    let report = import_file(
        &h,
        &file,
        &ImportOptions {
            progress: true,
            ..ImportOptions::default()
        },
    )
    .expect("imports");
    eprintln!("{report}");
    eprintln!("import rate: {:.0} rows/s", report.rows_per_sec());
    assert_eq!(
        (report.imported, report.skipped, report.tags),
        (1_000_000, 0, 10)
    );
    assert_eq!(
        h.stats().acked_samples,
        1_000_000,
        "every row acknowledged (WAL fsynced)"
    );
    for (tag, e) in &expect {
        check(&h, tag, e);
    }
    let types: Vec<Option<Value>> = h
        .last(&[COUNTER, RUNNING, FLOAT_TAGS[2].0])
        .into_iter()
        .map(|p| p.map(|p| p.value))
        .collect();
    assert!(matches!(types[0], Some(Value::Int(_))), "{types:?}");
    assert!(matches!(types[1], Some(Value::Bool(_))), "{types:?}");
    assert!(matches!(types[2], Some(Value::Float(_))), "{types:?}");

    // Again: the same range is refused, nothing added.
    let again = import_file(&h, &file, &ImportOptions::default()).expect_err("overlap");
    assert!(matches!(again, ImportError::Overlap { .. }), "{again}");
    assert!(again.to_string().contains("--allow-overlap"), "{again}");
    h.close();

    // Durable across a restart, and still right once the out-of-order chunks are merged.
    let h = open(dir.path());
    check(&h, FLOAT_TAGS[0].0, &expect[0].1);
    h.compact_blocking().expect("compact");
    for (tag, e) in &expect {
        check(&h, tag, e);
    }
    h.close();
}

#[test]
fn bad_rows_are_named_and_refuse_the_file_unless_skipped() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("bad.csv");
    std::fs::write(
        &file,
        "tag,ts,value,quality\n\
         plant/a/temp,2026-01-01T00:00:00Z,21.5,Good\n\
         plant/a/temp,2026-01-01T00:00:01Z,21.6\n\
         plant/a/temp,yesterday,21.7,Good\n\
         plant a temp,2026-01-01T00:00:03Z,21.8,Good\n\
         plant/a/temp,2026-01-01T00:00:04Z,,Good\n\
         plant/a/temp,2026-01-01T00:00:05Z,21.9,Fine\n\
         plant/a/temp,2026-01-01T00:00:06,22.0,Good\n\
         plant/a/note,2026-01-01T00:00:07Z,\"a, b\nand \"\"c\"\"\",Good\n\
         plant/a/temp,2026-01-01T00:00:08Z,,Bad(CommFailure)\n",
    )
    .expect("write");
    let h = open(dir.path());
    let e = import_file(&h, &file, &ImportOptions::default()).expect_err("bad rows");
    let text = e.to_string();
    let name = file.display().to_string();
    for want in [
        format!("{name}:3: 3 field(s); expected 4"),
        format!("{name}:4: ts \"yesterday\" is not an RFC 3339 time"),
        format!("{name}:5: tag \"plant a temp\" is not a tag path"),
        format!("{name}:6: a Good sample needs a value"),
        format!("{name}:7: quality \"Fine\" is not Good"),
        format!("{name}:8: ts \"2026-01-01T00:00:06\" has no UTC offset"),
        "6 bad row(s)".to_owned(),
        "nothing was imported".to_owned(),
    ] {
        assert!(text.contains(&want), "missing {want:?} in\n{text}");
    }
    assert!(h.tag_paths().is_empty(), "nothing registered");
    assert_eq!(h.stats().acked_samples, 0, "nothing stored");

    let report = import_file(
        &h,
        &file,
        &ImportOptions {
            skip_bad: true,
            ..ImportOptions::default()
        },
    )
    .expect("good rows imported");
    assert_eq!((report.imported, report.skipped), (3, 6));
    assert_eq!(report.bad[0].line, 3);
    let from = Timestamp(BASE);
    let to = Timestamp(BASE + 10_000_000);
    let temp = h.raw("plant/a/temp", from, to, 10).expect("raw");
    assert_eq!(
        temp.points
            .iter()
            .map(|p| (p.value.clone(), p.quality))
            .collect::<Vec<_>>(),
        vec![
            (Value::Float(21.5), Quality::GOOD),
            (Value::Null, Quality::bad(QualityReason::CommFailure))
        ]
    );
    let note = h.raw("plant/a/note", from, to, 10).expect("raw");
    assert_eq!(
        note.points[0].value,
        Value::String("a, b\nand \"c\"".into())
    );
    h.close();
}

#[test]
fn wide_csv_one_column_per_tag() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("wide.csv");
    std::fs::write(
        &file,
        "ts,plant/a/temp,plant/a/on\n2026-01-01T00:00:00Z,21,true\n2026-01-01T00:00:01+00:00,21.5,\n2026-01-01T01:00:02+01:00,,false\n",
    )
    .expect("write");
    let h = open(dir.path());
    let report = import_file(&h, &file, &ImportOptions::default()).expect("imports");
    assert_eq!((report.imported, report.tags), (4, 2));
    let to = Timestamp(BASE + 10_000_000);
    let temp = h.raw("plant/a/temp", Timestamp(BASE), to, 10).expect("raw");
    assert_eq!(
        temp.points
            .iter()
            .map(|p| p.value.clone())
            .collect::<Vec<_>>(),
        vec![Value::Float(21.0), Value::Float(21.5)],
        "21 is a float because the column has 21.5"
    );
    let on = h.raw("plant/a/on", Timestamp(BASE), to, 10).expect("raw");
    assert_eq!(
        on.points
            .iter()
            .map(|p| (p.ts.0 - BASE, p.value.clone()))
            .collect::<Vec<_>>(),
        vec![(0, Value::Bool(true)), (2_000_000, Value::Bool(false))]
    );
    h.close();
}
