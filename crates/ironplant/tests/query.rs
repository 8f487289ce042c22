//! `ironplant query` end to end: history recorded by a real `ironplant demo`, asked through the
//! running platform's API, then read straight from the data directory after a clean stop
//! (SIGINT): table, CSV, JSON, paging, --limit, aggregates, --at, Parquet, and errors.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value as Json;

mod common;
use common::Api;

const BIN: &str = env!("CARGO_BIN_EXE_ironplant");
const SPEED: &str = "acme/lyon/bottling/line1/filler/plc/speed_actual";
const RUNNING: &str = "acme/lyon/bottling/line1/filler/plc/status_running";

/// A demo platform recording into `data`; killed on drop if still running.
struct Demo {
    child: Child,
    addr: String,
    api: Api,
    data: PathBuf,
}

impl Demo {
    fn start(data: &Path) -> Demo {
        let mut child = Command::new(BIN)
            .env("IRONPLANT_MQTTS", "127.0.0.1:0")
            .env("IRONPLANT_OPCUA", "127.0.0.1:0")
            .args(["demo", "--http", "127.0.0.1:0", "--data-dir"])
            .arg(data)
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(
                std::fs::File::create(data.with_extension("log")).expect("demo log"),
            ))
            .spawn()
            .expect("start ironplant demo");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            // Drain stdout to the end even after the address is found: a closed pipe would
            // kill the demo at its next println.
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let addr = loop {
            let line = rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("the demo prints its HTTP address");
            if let Some(url) = line.trim().strip_prefix("HTTP API:") {
                let url = url.trim().trim_start_matches("https://");
                break url.split('/').next().expect("host:port").to_owned();
            }
        };
        let api = common::api_for(&addr, data, ironplant_security::Role::Viewer);
        Demo {
            child,
            addr,
            api,
            data: data.to_owned(),
        }
    }

    /// Waits until the API has at least `n` samples of `tag` in the last hour.
    fn wait_for_samples(&self, tag: &str, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (status, body) = common::try_get(&self.api, &format!("/api/v1/history?tag={tag}"));
            if status == 200 {
                let json: Json = serde_json::from_str(&body).expect("history JSON");
                if json["tags"][0]["points"].as_array().map_or(0, Vec::len) >= n {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no {n} samples of {tag} within 30 s: {status} {body}\ndemo log:\n{}",
                std::fs::read_to_string(self.data.with_extension("log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the platform like Ctrl-C does and waits for it to exit.
    fn interrupt(mut self) {
        let pid = self.child.id().to_string();
        let ok = Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .expect("run kill");
        assert!(ok.success(), "kill -INT {pid} failed");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for the demo") {
                assert!(status.success(), "the demo exited with {status}");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the demo did not stop within 30 s of SIGINT"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A data directory holding a few seconds of the demo's history (the platform stopped).
fn recorded(dir: &Path) -> PathBuf {
    let data = dir.join("data");
    let demo = Demo::start(&data);
    demo.wait_for_samples(SPEED, 4);
    demo.interrupt();
    data
}

/// An address where nothing listens (a port just released).
fn dead_http() -> String {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr").to_string();
    drop(l);
    addr
}

fn query(http: &str, data: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .env("IRONPLANT_MQTTS", "127.0.0.1:0")
        .env("IRONPLANT_OPCUA", "127.0.0.1:0")
        .args(["query", "--http", http, "--data-dir"])
        .arg(data)
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("run ironplant query")
}

fn ok(out: &Output) -> (String, String) {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "query failed: {stderr}\n{stdout}");
    (stdout, stderr)
}

fn json(out: &Output) -> Json {
    let (stdout, _) = ok(out);
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

fn points(j: &Json, tag: usize) -> &Vec<Json> {
    j["tags"][tag]["points"].as_array().expect("points")
}

#[test]
fn asks_the_running_platform_then_reads_the_data_dir_after_it_stops() {
    let dir = tempfile::tempdir().expect("temp dir");
    let demo = Demo::start(&dir.path().join("data"));
    demo.wait_for_samples(SPEED, 3);
    let data = demo.data.clone();

    // Over HTTPS (the CA of --data-dir) with an API token, as `ironplant token create` makes.
    let online = query(
        &demo.addr,
        &data,
        &[
            "--token",
            &demo.api.token,
            "--tag",
            SPEED,
            "--format",
            "json",
        ],
    );
    let (_, stderr) = ok(&online);
    assert!(stderr.contains("Querying the platform at"), "{stderr}");
    let online = json(&online);
    let online_points = points(&online, 0).clone();
    assert!(online_points.len() >= 3, "{online}");

    demo.interrupt();

    let offline = query(&dead_http(), &data, &["--tag", SPEED, "--format", "json"]);
    let (_, stderr) = ok(&offline);
    assert!(stderr.contains("No platform answers on"), "{stderr}");
    assert!(stderr.contains("connection refused"), "{stderr}");
    let offline = json(&offline);
    // Everything the platform had answered is on disk, identical.
    assert_eq!(
        &points(&offline, 0)[..online_points.len()],
        &online_points[..]
    );
}

#[test]
fn offline_table_csv_json_paging_aggregates_and_at() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = recorded(dir.path());
    let http = dead_http();

    // JSON: both tags, typed values, Good quality.
    let all = json(&query(
        &http,
        &data,
        &["--tag", SPEED, "--tag", RUNNING, "--format", "json"],
    ));
    assert_eq!(all["mode"], "raw");
    assert_eq!(all["tags"][0]["tag"], SPEED);
    assert_eq!(all["tags"][1]["tag"], RUNNING);
    let speed = points(&all, 0);
    let n = speed.len();
    assert!(n >= 4, "{all}");
    for p in speed {
        let v = p["value"].as_f64().expect("numeric speed");
        assert!(
            v.is_finite() && v > 0.0,
            "the running filler has a speed: {p}"
        );
        assert_eq!(p["quality"], "Good");
    }
    assert_eq!(all["tags"][0]["next"], Json::Null);
    assert!(
        points(&all, 1).iter().all(|p| p["value"].is_boolean()),
        "{all}"
    );

    // Table: a heading per tag, then one aligned row per point.
    let (table, _) = ok(&query(&http, &data, &["--tag", SPEED]));
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines[0], format!("{SPEED} ({n} points)"));
    assert!(
        lines[1].starts_with("TIME (UTC)") && lines[1].ends_with("VALUE  QUALITY"),
        "{table}"
    );
    assert_eq!(lines.len(), n + 2, "{table}");
    let first_ts = speed[0]["ts"].as_str().expect("ts");
    assert!(
        lines[2].starts_with(first_ts) && lines[2].ends_with("  Good"),
        "{table}"
    );
    // Values right-aligned under VALUE, qualities left-aligned under QUALITY.
    let value_end = lines[1].find("VALUE").expect("VALUE column") + "VALUE".len();
    let quality_at = lines[1].find("QUALITY").expect("QUALITY column");
    for row in &lines[2..] {
        assert!(
            row.as_bytes()[value_end - 1].is_ascii_digit() && &row[quality_at..] == "Good",
            "columns not aligned:\n{table}"
        );
    }

    // CSV: the same points.
    let (csv, _) = ok(&query(&http, &data, &["--tag", SPEED, "--format", "csv"]));
    let rows: Vec<Vec<&str>> = csv.lines().map(|l| l.split(',').collect()).collect();
    assert_eq!(rows[0], ["tag", "ts", "value", "quality"]);
    assert_eq!(rows.len(), n + 1);
    for (row, p) in rows[1..].iter().zip(speed) {
        assert_eq!(row[0], SPEED);
        assert_eq!(row[1], p["ts"].as_str().expect("ts"));
        let v: f64 = row[2].parse().expect("a number");
        assert_eq!(Some(v), p["value"].as_f64());
        assert_eq!(row[3], "Good");
    }

    // Paging through `next` two points at a time gives the same points.
    let paged = json(&query(
        &http,
        &data,
        &["--tag", SPEED, "--format", "json", "--page-size", "2"],
    ));
    assert_eq!(points(&paged, 0), speed);

    // --limit stops early and says where to continue.
    let out = query(
        &http,
        &data,
        &["--tag", SPEED, "--format", "json", "--limit", "2"],
    );
    let (_, stderr) = ok(&out);
    let limited = json(&out);
    assert_eq!(points(&limited, 0)[..], speed[..2]);
    assert_eq!(limited["tags"][0]["next"], speed[2]["ts"]);
    assert!(stderr.contains("stopped at --limit"), "{stderr}");

    // Aggregates: one interval over everything counts every point.
    let agg = json(&query(
        &http,
        &data,
        &[
            "--tag",
            SPEED,
            "--interval",
            "1h",
            "--agg",
            "count,max",
            "--format",
            "json",
        ],
    ));
    let rows = agg["tags"][0]["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 1, "{agg}");
    assert_eq!(rows[0]["count"].as_u64(), Some(n as u64));
    let max = speed
        .iter()
        .filter_map(|p| p["value"].as_f64())
        .fold(f64::MIN, f64::max);
    assert_eq!(rows[0]["max"].as_f64(), Some(max));

    // --at: the last sample before now.
    let at = json(&query(
        &http,
        &data,
        &["--tag", SPEED, "--at", "now", "--format", "json"],
    ));
    assert_eq!(at["tags"][0]["point"]["value"], speed[n - 1]["value"]);
    let (table, _) = ok(&query(
        &http,
        &data,
        &["--tag", SPEED, "--at", "now", "--interp", "linear"],
    ));
    assert!(
        table
            .lines()
            .nth(2)
            .is_some_and(|l| l.starts_with(SPEED) && l.ends_with("Good")),
        "{table}"
    );

    // Output to a file.
    let file = dir.path().join("speed.csv");
    let out = query(
        &http,
        &data,
        &["--tag", SPEED, "--format", "csv", "--output"],
    );
    assert!(!out.status.success(), "--output needs a file");
    let (_, stderr) = ok(&Command::new(BIN)
        .env("IRONPLANT_MQTTS", "127.0.0.1:0")
        .env("IRONPLANT_OPCUA", "127.0.0.1:0")
        .args(["query", "--http", &http, "--data-dir"])
        .arg(&data)
        .args(["--tag", SPEED, "--format", "csv", "--output"])
        .arg(&file)
        .output()
        .expect("run"));
    assert!(stderr.contains(&format!("Wrote {n} row(s)")), "{stderr}");
    assert_eq!(std::fs::read_to_string(&file).expect("written"), csv);
}

#[test]
fn offline_parquet_export_reads_back() {
    use parquet::file::reader::{FileReader, SerializedFileReader};

    let dir = tempfile::tempdir().expect("temp dir");
    let data = recorded(dir.path());
    let http = dead_http();
    let all = json(&query(
        &http,
        &data,
        &["--tag", SPEED, "--tag", RUNNING, "--format", "json"],
    ));
    let expected: Vec<(String, i64, Json)> = (0..2)
        .flat_map(|t| {
            let tag = all["tags"][t]["tag"].as_str().expect("tag").to_owned();
            points(&all, t)
                .iter()
                .map(|p| {
                    let ts = humantime::parse_rfc3339(p["ts"].as_str().expect("ts"))
                        .expect("rfc3339")
                        .duration_since(std::time::UNIX_EPOCH)
                        .expect("after 1970")
                        .as_micros() as i64;
                    (tag.clone(), ts, p["value"].clone())
                })
                .collect::<Vec<_>>()
        })
        .collect();

    let file = dir.path().join("h.parquet");
    let out = Command::new(BIN)
        .env("IRONPLANT_MQTTS", "127.0.0.1:0")
        .env("IRONPLANT_OPCUA", "127.0.0.1:0")
        .args(["query", "--http", &http, "--data-dir"])
        .arg(&data)
        .args([
            "--tag", SPEED, "--tag", RUNNING, "--format", "parquet", "--output",
        ])
        .arg(&file)
        .output()
        .expect("run");
    ok(&out);
    let bytes = std::fs::read(&file).expect("parquet written");
    assert!(bytes.len() > 8 && bytes.starts_with(b"PAR1") && bytes.ends_with(b"PAR1"));

    let reader = SerializedFileReader::new(std::fs::File::open(&file).expect("open"))
        .expect("valid parquet");
    let meta = reader.metadata().file_metadata();
    assert_eq!(meta.num_rows(), expected.len() as i64);
    let names: Vec<&str> = meta
        .schema_descr()
        .columns()
        .iter()
        .map(|c| c.name())
        .collect();
    assert_eq!(names, ["tag", "ts", "value", "value_text", "quality"]);
    let rows: Vec<parquet::record::Row> = reader
        .get_row_iter(None)
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("readable rows");
    assert_eq!(rows.len(), expected.len());
    for (row, (tag, ts, value)) in rows.iter().zip(&expected) {
        use parquet::record::Field;
        let cols: Vec<&Field> = row.get_column_iter().map(|(_, f)| f).collect();
        assert_eq!(cols[0], &Field::Str(tag.clone()));
        assert_eq!(cols[1], &Field::TimestampMicros(*ts));
        match value {
            Json::Bool(b) => {
                assert_eq!(cols[2], &Field::Double(if *b { 1.0 } else { 0.0 }));
                assert_eq!(cols[3], &Field::Str(b.to_string()));
            }
            v => {
                assert_eq!(cols[2], &Field::Double(v.as_f64().expect("number")));
                assert_eq!(cols[3], &Field::Null);
            }
        }
        assert_eq!(cols[4], &Field::Str("Good".to_owned()));
    }

    // Aggregates get their own columns.
    let file = dir.path().join("agg.parquet");
    let out = Command::new(BIN)
        .env("IRONPLANT_MQTTS", "127.0.0.1:0")
        .env("IRONPLANT_OPCUA", "127.0.0.1:0")
        .args(["query", "--http", &http, "--data-dir"])
        .arg(&data)
        .args([
            "--tag",
            SPEED,
            "--interval",
            "1h",
            "--agg",
            "avg,count",
            "--format",
            "parquet",
            "-o",
        ])
        .arg(&file)
        .output()
        .expect("run");
    ok(&out);
    let reader = SerializedFileReader::new(std::fs::File::open(&file).expect("open"))
        .expect("valid parquet");
    let meta = reader.metadata().file_metadata();
    assert_eq!(meta.num_rows(), 1);
    let names: Vec<&str> = meta
        .schema_descr()
        .columns()
        .iter()
        .map(|c| c.name())
        .collect();
    assert_eq!(names, ["tag", "start", "avg", "count", "good", "bad"]);
}

#[test]
fn errors_say_what_and_how_to_fix_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = recorded(dir.path());
    let http = dead_http();
    let fails = |args: &[&str], needle: &str| {
        let out = query(&http, &data, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} should fail");
        assert!(
            stderr.contains(needle),
            "{args:?}: {stderr:?} lacks {needle:?}"
        );
    };
    fails(&["--tag", "acme/nope"], "unknown tag \"acme/nope\"");
    fails(&["--tag", "acme/nope"], "[tag_not_found]");
    fails(
        &["--tag", SPEED, "--from", "soon"],
        "from=\"soon\" is not a time",
    );
    fails(
        &["--tag", SPEED, "--from", "now", "--to", "-1h"],
        "[bad_range]",
    );
    fails(
        &["--tag", SPEED, "--interval", "1ms", "--from", "-1d"],
        "[too_many_intervals]",
    );
    fails(
        &["--tag", SPEED, "--interval", "1m", "--agg", "median"],
        "unknown aggregate \"median\"",
    );
    fails(&["--tag", SPEED, "--format", "parquet"], "--output FILE");
    let out = query(&http, &dir.path().join("empty"), &["--tag", SPEED]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("holds no historian data"), "{stderr}");
    assert!(
        !dir.path().join("empty").exists(),
        "a failed query creates nothing"
    );
}
