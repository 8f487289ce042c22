//! Alarm state survives a kill: `ironplant serve` is killed with SIGKILL after alarm
//! transitions that its snapshot (`alarms/alarms.json`, written at most once a
//! `save_interval`, here an hour) does not hold yet; after the restart the alarms are in the
//! state the operators left them (from the event store, which commits each transition
//! durably), nothing is raised again, and the KPI report still counts the alarms of before.
//!
//! Driven from outside like an integrator would: JSON over HTTPS ingest sets the values, the
//! alarm API acknowledges and shelves, the events API shows what is stored.

mod common;

use common::pump;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{api_for, try_get, try_request, Api};
use serde_json::Value as Json;

const BIN: &str = env!("CARGO_BIN_EXE_ironplant");

const CONFIG: &str = r#"
[sparkplug]
host_id = "kill"

[alarms]
save_interval = "1h"

[[ingest.json]]
name = "probe"
http = true

[[ingest.json.field]]
pointer = "/temp"
path = "acme/lyon/lab/probe/temp"
unit = "°C"

[[ingest.json.field]]
pointer = "/pressure"
path = "acme/lyon/lab/probe/pressure"
unit = "bar"

[[ingest.json.field]]
pointer = "/flow"
path = "acme/lyon/lab/probe/flow"
unit = "m3/h"

[[alarm]]
id = "temp_high"
tag = "acme/lyon/lab/probe/temp"
kind = "high"
limit = 50.0
deadband = 1.0
priority = 2
message = "Probe temperature high"

[[alarm]]
id = "pressure_high"
tag = "acme/lyon/lab/probe/pressure"
kind = "high"
limit = 8.0
deadband = 0.5
priority = 1
message = "Probe pressure high"

[[alarm]]
id = "flow_low"
tag = "acme/lyon/lab/probe/flow"
kind = "low"
limit = 2.0
priority = 3
message = "Probe flow low"
"#;

/// `ironplant serve` on ephemeral ports in `dir/data`; SIGKILLed on drop.
struct Serve {
    child: Child,
    _out: mpsc::Receiver<String>,
    _err: mpsc::Receiver<String>,
    api: Api,
}

impl Serve {
    fn start(dir: &Path) -> Serve {
        let mut child = Command::new(BIN)
            .args(["serve", "--config", "p.toml", "--http", "127.0.0.1:0"])
            .args(["--mqtts", "127.0.0.1:0", "--data-dir", "data"])
            .env("NO_COLOR", "1")
            .current_dir(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start ironplant serve");
        let out = pump(child.stdout.take().expect("stdout"));
        let err = pump(child.stderr.take().expect("stderr"));
        let deadline = Instant::now() + Duration::from_secs(30);
        let addr = loop {
            let line = out
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("the `HTTP API:` line of ironplant serve");
            if line.trim_start().starts_with("HTTP API:") {
                let word = line
                    .split_whitespace()
                    .find(|w| w.contains("127.0.0.1:"))
                    .expect("an address");
                let addr = word.rsplit("://").next().unwrap_or(word);
                break addr.split('/').next().expect("host:port").to_owned();
            }
        };
        let api = api_for(&addr, &dir.join("data"), ironplant_security::Role::Admin);
        Serve {
            child,
            _out: out,
            _err: err,
            api,
        }
    }

    fn kill(mut self) {
        // SIGKILL: no shutdown path runs, nothing more is saved.
        self.child.kill().expect("kill");
        self.child.wait().expect("wait");
    }

    fn json(&self, method: &str, path: &str, body: Option<&str>) -> (u16, Json) {
        let (status, text) = try_request(&self.api, method, path, body);
        (status, serde_json::from_str(&text).unwrap_or(Json::Null))
    }

    fn ingest(&self, body: &str) {
        let (status, answer) = self.json("POST", "/api/v1/ingest/probe", Some(body));
        assert_eq!(status, 202, "ingest {body}: {answer}");
    }

    fn operate(&self, id: &str, op: &str, body: &str) {
        let (status, answer) = self.json("POST", &format!("/api/v1/alarms/{id}/{op}"), Some(body));
        assert_eq!(status, 200, "{op} {id}: {answer}");
    }

    /// Every configured alarm's state, by id.
    /// The configured alarms' states (not the built-in integrity alarms of every tag).
    fn states(&self) -> Vec<(String, String)> {
        let (status, text) = try_get(&self.api, "/api/v1/alarms?all=true");
        assert_eq!(status, 200, "{text}");
        let v: Json = serde_json::from_str(&text).expect("json");
        let mut out: Vec<(String, String)> = v["alarms"]
            .as_array()
            .expect("alarms")
            .iter()
            .filter(|a| !a["id"].as_str().unwrap_or_default().ends_with(":integrity"))
            .map(|a| {
                (
                    a["id"].as_str().unwrap_or_default().to_owned(),
                    a["state"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        out.sort();
        out
    }

    /// The stored alarm events (oldest first) as (alarm, code).
    fn stored(&self) -> Vec<(String, String)> {
        let (status, v) = self.json("GET", "/api/v1/events?kind=alarm&order=oldest", None);
        if status != 200 {
            return Vec::new();
        }
        v["events"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| {
                !e["attributes"]["alarm"]
                    .as_str()
                    .unwrap_or_default()
                    .ends_with(":integrity")
            })
            .map(|e| {
                (
                    e["attributes"]["alarm"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    e["code"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn saved_state(file: &Path, id: &str) -> Option<String> {
    let v: Json = serde_json::from_slice(&std::fs::read(file).ok()?).ok()?;
    v["alarms"]
        .as_array()?
        .iter()
        .find(|a| a["id"] == id)
        .and_then(|a| a["state"].as_str().map(str::to_owned))
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[test]
fn alarm_state_survives_a_kill_between_two_snapshots() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("p.toml"), CONFIG).expect("config");
    let file = dir.path().join("data/alarms/alarms.json");

    let serve = Serve::start(dir.path());
    serve.ingest(r#"{"temp": 60.5, "pressure": 1.2, "flow": 5.0}"#);
    // The first change is saved at once; the next ones wait for `save_interval` (an hour).
    wait_for("temp_high unacknowledged in the snapshot", || {
        (saved_state(&file, "temp_high").as_deref() == Some("unacknowledged")).then_some(())
    });
    serve.operate("temp_high", "ack", r#"{"comment": "seen, fan started"}"#);
    serve.ingest(r#"{"temp": 58.0, "pressure": 9.1, "flow": 5.0}"#);
    serve.ingest(r#"{"temp": 57.0, "pressure": 1.0, "flow": 5.0}"#);
    serve.operate(
        "flow_low",
        "shelve",
        r#"{"comment": "sensor being cleaned", "duration": "2h"}"#,
    );
    let want_stored = pairs(&[
        ("temp_high", "raised"),
        ("temp_high", "acknowledged"),
        ("pressure_high", "raised"),
        ("pressure_high", "cleared"),
        ("flow_low", "shelved"),
    ]);
    wait_for("the five transitions in the event store", || {
        (serve.stored() == want_stored).then_some(())
    });
    let want = pairs(&[
        ("flow_low", "shelved"),
        ("pressure_high", "rtn_unacknowledged"),
        ("temp_high", "acknowledged"),
    ]);
    assert_eq!(serve.states(), want);
    serve.kill();

    // The snapshot on disk is the one of the first change: what follows was never saved.
    assert_eq!(
        saved_state(&file, "temp_high").as_deref(),
        Some("unacknowledged")
    );
    assert_eq!(
        saved_state(&file, "pressure_high").as_deref(),
        Some("normal")
    );

    let serve = Serve::start(dir.path());
    assert_eq!(
        serve.states(),
        want,
        "the alarm state after the kill and restart"
    );
    // Nothing raised again at the restart, and the report still counts the two alarms.
    assert_eq!(serve.stored(), want_stored);
    let (status, kpi) = serve.json("GET", "/api/v1/alarms/kpi", None);
    assert_eq!(status, 200, "{kpi}");
    assert_eq!(kpi["alarms"], 2, "{kpi}");
    // The operator finishes the job after the restart: the unacknowledged return to normal
    // is still theirs to acknowledge.
    serve.operate("pressure_high", "ack", r#"{"comment": "was a spike"}"#);
    assert_eq!(
        serve.states(),
        pairs(&[
            ("flow_low", "shelved"),
            ("pressure_high", "normal"),
            ("temp_high", "acknowledged"),
        ])
    );
}
