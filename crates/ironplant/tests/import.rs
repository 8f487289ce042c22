//! `ironplant import` end to end with the real binary: history exported by `ironplant query`
//! (CSV and Parquet, offline from a data directory) imports into a fresh data directory and
//! exports again byte for byte; a second import of the same range and a file with bad rows are
//! refused with one clear error, and nothing is stored.

use std::path::Path;
use std::process::{Command, Output};

use ironplant_core::{Quality, QualityReason, TagPath, Value};
use ironplant_historian::{Historian, HistorianConfig};

const BIN: &str = env!("CARGO_BIN_EXE_ironplant");
/// 2026-01-01T00:00:00Z.
const BASE: i64 = 1_767_225_600_000_000;
const TAGS: [&str; 4] = [
    "acme/lyon/line1/oven/temp",
    "acme/lyon/line1/oven/count",
    "acme/lyon/line1/oven/running",
    "acme/lyon/line1/oven/recipe",
];

fn ironplant(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("run ironplant")
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `ironplant query` of every tag, offline (nothing listens on port 1), into `out`.
fn export(data: &Path, format: &str, out: &Path) {
    let mut args = vec![
        "query",
        "--http",
        "127.0.0.1:1",
        "--from",
        "2025-12-31T00:00:00Z",
        "--to",
        "2026-01-02T00:00:00Z",
        "--format",
        format,
        "--output",
        out.to_str().expect("utf-8 path"),
        "--data-dir",
        data.to_str().expect("utf-8 path"),
    ];
    for t in TAGS {
        args.extend(["--tag", t]);
    }
    ok(ironplant(&args));
}

fn import(file: &Path, data: &Path) -> Output {
    ironplant(&[
        "import",
        file.to_str().expect("utf-8 path"),
        "--data-dir",
        data.to_str().expect("utf-8 path"),
    ])
}

#[test]
fn export_import_export_round_trips_csv_and_parquet() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let origin = tmp.path().join("origin");
    {
        let h = Historian::open(HistorianConfig::new(origin.join("historian"))).expect("open");
        let paths: Vec<TagPath> = TAGS
            .iter()
            .map(|t| TagPath::parse(t).expect("path"))
            .collect();
        let ids = h.register(&paths).expect("register");
        let mut samples = Vec::new();
        for i in 0..500i64 {
            // Irregular microsecond timestamps, sensor values, an outage, a whole number.
            let ts = BASE + i * 1_000_003 + (i * 7919) % 1000;
            let (temp, q) = match i {
                100 => (Value::Null, Quality::bad(QualityReason::CommFailure)),
                200 => (Value::Float(21.0), Quality::GOOD),
                300 => (
                    Value::Float(95.25),
                    Quality::uncertain(QualityReason::OutOfRange),
                ),
                _ => (
                    Value::Float(20.0 + (i as f64 * 0.37).sin() * 3.0),
                    Quality::GOOD,
                ),
            };
            samples.push((ids[0], ts, temp, q));
            samples.push((ids[1], ts, Value::Int(1_000 + i * 3), Quality::GOOD));
            if i % 50 == 0 {
                samples.push((ids[2], ts, Value::Bool(i % 100 == 0), Quality::GOOD));
                let recipe = format!("cake \"{}\", {}\nline two", i / 50, i);
                samples.push((ids[3], ts, Value::String(recipe.into()), Quality::GOOD));
            }
        }
        h.submit(samples)
            .expect("submit")
            .wait_blocking()
            .expect("durable");
        h.close();
    }
    let csv = tmp.path().join("export.csv");
    export(&origin, "csv", &csv);
    let exported = std::fs::read_to_string(&csv).expect("exported CSV");
    assert_eq!(exported.lines().next(), Some("tag,ts,value,quality"));

    // CSV → a fresh data directory → CSV again.
    let copy = tmp.path().join("copy");
    let out = ok(import(&csv, &copy));
    assert!(
        out.contains("Imported 1020 sample(s) of 4 tag(s) from csv"),
        "{out}"
    );
    let again = tmp.path().join("again.csv");
    export(&copy, "csv", &again);
    assert_eq!(std::fs::read_to_string(&again).expect("CSV"), exported);

    // Parquet → another one → CSV.
    let parquet = tmp.path().join("export.parquet");
    export(&origin, "parquet", &parquet);
    let from_parquet = tmp.path().join("from-parquet");
    let out = ok(import(&parquet, &from_parquet));
    assert!(
        out.contains("Imported 1020 sample(s) of 4 tag(s) from parquet"),
        "{out}"
    );
    let via_parquet = tmp.path().join("via-parquet.csv");
    export(&from_parquet, "csv", &via_parquet);
    assert_eq!(
        std::fs::read_to_string(&via_parquet).expect("CSV"),
        exported
    );

    // The same range again: refused, nothing added.
    let out = import(&csv, &copy);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("already has") && err.contains("--allow-overlap"),
        "{err}"
    );
    export(&copy, "csv", &again);
    assert_eq!(
        std::fs::read_to_string(&again).expect("CSV"),
        exported,
        "no duplicates"
    );

    // Bad rows: named by line, nothing stored.
    let bad = tmp.path().join("bad.csv");
    std::fs::write(
        &bad,
        "tag,ts,value,quality\nplant/x/t,2026-01-01T00:00:00Z,1.5,Good\nplant/x/t,2026-13-01T00:00:00Z,1.5,Good\n",
    )
    .expect("write");
    let fresh = tmp.path().join("fresh");
    let out = import(&bad, &fresh);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}:3: ts \"2026-13-01T00:00:00Z\" is not an RFC 3339 time",
            bad.display()
        )),
        "{err}"
    );
    assert!(err.contains("--skip-bad"), "{err}");
    let h = Historian::open(HistorianConfig::new(fresh.join("historian"))).expect("open");
    assert!(h.tag_paths().is_empty(), "nothing registered");
    h.close();
}

/// `ironplant check` reports the `[[ingest.json]]` section's errors (owned by the ingest crate)
/// together with core's, each with its position.
#[test]
fn check_reports_ingest_errors_with_core_errors() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let cfg = tmp.path().join("plant.toml");
    std::fs::write(
        &cfg,
        "[[tag]]\npath = \"bad path\"\n\n[[ingest.json]]\nname = \"plugs\"\ntopic = \"shellies/+/status\"\n\n[[ingest.json.field]]\npointer = \"apower\"\npath = \"acme/lyon/{1}/power\"\n",
    )
    .expect("write");
    let out = ironplant(&["check", "--config", cfg.to_str().expect("utf-8 path")]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let file = cfg.display();
    assert!(
        err.contains(&format!("{file}:2:8: error: invalid tag path")),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{file}:9:11: error: \"apower\" is not a JSON pointer"
        )),
        "{err}"
    );
    assert!(err.contains("2 error(s)"), "{err}");

    std::fs::write(
        &cfg,
        "[[ingest.json]]\nname = \"plugs\"\ntopic = \"shellies/+/status\"\n\n[[ingest.json.field]]\npointer = \"/apower\"\npath = \"acme/lyon/{1}/power\"\nunit = \"W\"\n",
    )
    .expect("write");
    let out = ironplant(&["check", "--config", cfg.to_str().expect("utf-8 path")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
