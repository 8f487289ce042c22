//! The web HMI (issue 14) end to end: the real `ironplant demo` binary on ephemeral ports, and
//! `tests/peers/browser_hmi.js` driving Debian's chromium through playwright-core against it
//! as an operator, a viewer and an admin. The script prints one JSON line of what it saw;
//! every acceptance step is asserted here, and the figures (first-load bytes and time, the
//! 30-day trend's render time) are printed, not asserted as timings.
//!
//! The 30 days of history: before the demo's first start, `ironplant import` loads 30 days of
//! one tag at the demo's own poll rate (one sample a second: 2,592,000 samples) into the data
//! directory's historian, ending a minute before the demo starts, so the trend reads what a
//! month of polling would have stored.

mod common;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ironplant_security::Role;
use serde_json::Value as Json;

const BIN: &str = env!("CARGO_BIN_EXE_ironplant");
/// The tag given 30 days of history (a float the demo polls every second).
const LONG_TAG: &str = "acme/lyon/bottling/line1/energy/meter/active_power";
const SPEED: &str = "acme/lyon/bottling/line1/filler/plc/speed_setpoint";

/// `ironplant demo`, killed on drop; its stdout lines arrive on a channel.
struct Demo {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Demo {
    fn start(dir: &Path) -> Demo {
        let mut child = Command::new(BIN)
            .env("IRONPLANT_MQTTS", "127.0.0.1:0")
            .env("IRONPLANT_OPCUA", "127.0.0.1:0")
            .env("NO_COLOR", "1")
            .args(["demo", "--http", "127.0.0.1:0", "--data-dir", "data"])
            .current_dir(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start ironplant demo");
        let lines = common::pump(child.stdout.take().expect("piped stdout"));
        Demo { child, lines }
    }

    /// The `https://127.0.0.1:PORT` of the banner's "HTTP API:" line.
    fn https_url(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .expect("the demo printed no \"HTTP API:\" line");
            if let Some(rest) = line.split("HTTP API:").nth(1) {
                let url = rest.trim().trim_end_matches("/api/v1/tags");
                assert!(url.starts_with("https://127.0.0.1:"), "{line}");
                return url.to_owned();
            }
        }
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A wide CSV (`ts,<tag>`) of 30 days at one sample a second, ending `end_us`: a daily load
/// cycle with some ripple, so the trend has a shape to draw.
fn month_of_history(file: &Path, end_us: i64) {
    let mut out = std::io::BufWriter::new(std::fs::File::create(file).expect("create the CSV"));
    writeln!(out, "ts,{LONG_TAG}").expect("write");
    let seconds = 30 * 86_400_i64;
    let start = end_us / 1_000_000 - seconds;
    for i in 0..seconds {
        let day = (i % 86_400) as f64 / 86_400.0;
        let ripple = ((i * 7_919) % 100) as f64 / 50.0;
        let v = 40.0 + 12.0 * (day * std::f64::consts::TAU).sin() + ripple;
        let ts = ironplant_core::Timestamp((start + i) * 1_000_000).to_rfc3339();
        writeln!(out, "{ts},{v:.3}").expect("write");
    }
    out.flush().expect("flush the CSV");
}

/// Where the screenshots go: `target/hmi-screenshots/` of the workspace.
fn screenshot_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/hmi-screenshots")
}

#[test]
fn the_web_hmi_works_in_a_real_browser() {
    let Some((modules, chromium)) = ironplant_testkit::browser() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");

    // A month of one tag's history, imported before the platform starts (import opens the
    // historian directly).
    let csv = dir.path().join("month.csv");
    let t0 = Instant::now();
    month_of_history(&csv, ironplant_core::Timestamp::now().0 - 60_000_000);
    let out = Command::new(BIN)
        .args(["import", csv.to_str().expect("utf-8 path"), "--data-dir"])
        .arg(&data)
        .env("NO_COLOR", "1")
        .output()
        .expect("run ironplant import");
    assert!(
        out.status.success(),
        "import failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "imported 30 days of {LONG_TAG} in {:.1} s: {}",
        t0.elapsed().as_secs_f64(),
        String::from_utf8_lossy(&out.stdout).trim()
    );
    std::fs::remove_file(&csv).expect("remove the CSV");

    let demo = Demo::start(dir.path());
    let url = demo.https_url();
    let http = url.trim_start_matches("https://").to_owned();

    // Users of three roles, through the security library (as `ironplant user add` does; safe
    // while the platform runs).
    let sec = ironplant_security::Security::open(
        &data,
        std::sync::Arc::new(ironplant_security::SystemClock),
        Default::default(),
    )
    .expect("open the platform's security state");
    let users = [
        ("hmi-operator", "op-Vq7dT2mXk9pL4wZs", Role::Operator),
        ("hmi-viewer", "view-Hs3nB8rYc6jQ1fGe", Role::Viewer),
        ("hmi-admin", "adm-Lw5pK0tUe2nR7xDa", Role::Admin),
        ("hmi-engineer", "eng-Rk4vB9sYw1mQ6tLh", Role::Engineer),
    ];
    for (name, password, role) in users {
        sec.users
            .create_user(name, password, role, None)
            .expect("create a user");
    }

    // A step on the line pressure, so that the integrity page has a finding with evidence
    // (the detectors see it within seconds: docs/integrity.md).
    let api = common::api_for(&http, &data, Role::Admin);
    let (status, body) = common::try_request(
        &api,
        "POST",
        "/api/v1/simulator/attacks",
        Some(r#"{"kind":"step","signal":"line_pressure","amount":0.3}"#),
    );
    assert_eq!(status, 201, "{body}");

    let shots = screenshot_dir();
    let _ = std::fs::remove_dir_all(&shots);
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/peers/browser_hmi.js");
    let cred = |i: usize| format!("{}:{}", users[i].0, users[i].1);
    let mut child = Command::new("node")
        .arg(&script)
        .env("NODE_PATH", &modules)
        .env("IRONPLANT_CHROMIUM", &chromium)
        .env("IRONPLANT_HMI_URL", &url)
        .env("IRONPLANT_HMI_OPERATOR", cred(0))
        .env("IRONPLANT_HMI_VIEWER", cred(1))
        .env("IRONPLANT_HMI_ADMIN", cred(2))
        .env("IRONPLANT_HMI_ENGINEER", cred(3))
        .env("IRONPLANT_HMI_SCREENSHOTS", &shots)
        .env("IRONPLANT_HMI_LONG_TAG", LONG_TAG)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run node");
    let stdout = common::pump(child.stdout.take().expect("piped stdout"));
    let stderr = common::pump(child.stderr.take().expect("piped stderr"));
    let deadline = Instant::now() + Duration::from_secs(900);
    let mut log = String::new();
    let status = loop {
        // The script's progress lines, as they come.
        while let Ok(line) = stderr.try_recv() {
            if line.starts_with("browser_hmi:") {
                eprintln!("{line}");
            }
            log.push_str(&line);
            log.push('\n');
        }
        if let Some(status) = child.try_wait().expect("node status") {
            break status;
        }
        assert!(Instant::now() < deadline, "the browser script hangs\n{log}");
        // Waiting for the child to end (checked above), not for a side effect.
        std::thread::sleep(Duration::from_millis(100));
    };
    while let Ok(line) = stderr.recv_timeout(Duration::from_secs(1)) {
        log.push_str(&line);
        log.push('\n');
    }
    let printed: Vec<String> = stdout.try_iter().collect();
    assert!(status.success(), "the browser script failed\n{log}");
    let line = printed.last().expect("the script printed its JSON line");
    let got: Json = serde_json::from_str(line).expect("one JSON line");
    let report = serde_json::to_string_pretty(&got).expect("JSON");
    eprintln!("browser_hmi.js: {report}");

    assert_eq!(
        got["errors"],
        serde_json::json!({}),
        "steps failed: {report}"
    );

    // Log in: a session cookie the page's scripts cannot read, sent to this site only.
    assert_eq!(got["login"]["role"], "operator", "{report}");
    assert_eq!(
        got["login"]["cookie"],
        serde_json::json!({"httpOnly": true, "secure": true, "sameSite": "Strict"}),
        "{report}"
    );

    // The bottling line's values update live.
    let live = &got["live"];
    assert_eq!(live["live_state"], "open", "{report}");
    assert_ne!(live["first"], live["next"], "{report}");
    assert!(
        live["floor_plan"].as_array().is_some_and(|a| a
            .iter()
            .any(|s| s.as_str().is_some_and(|s| s.starts_with("Rotary filler")))),
        "the floor plan shows the filler: {report}"
    );
    assert!(
        got["search"]["visible"].as_array().is_some_and(|a| a
            .iter()
            .any(|p| p == "acme/lyon/bottling/line1/filler/plc/speed_actual")),
        "{report}"
    );

    // A 1-hour trend, at screen resolution: no more intervals than the plot has pixels.
    let points = got["trend_1h"]["points"].as_u64().unwrap_or(0);
    let width = got["trend_1h"]["canvas_width"].as_u64().unwrap_or(0);
    assert!(points > 100 && points <= width, "{report}");
    assert!(
        got["trend_zoom"]["points"].as_u64().unwrap_or(0) > 0,
        "{report}"
    );
    assert!(
        got["trend_csv"]["rows"].as_u64().unwrap_or(0) >= points,
        "the CSV holds what is drawn: {report}"
    );

    // Select → confirm → operate, and the read-back.
    let w = &got["write"];
    let target = w["target"].as_i64().expect("target");
    assert!(
        w["change"].as_str().is_some_and(|c| c.contains('→')),
        "{report}"
    );
    assert!(
        w["result"]
            .as_str()
            .is_some_and(|r| r.starts_with("Verified:") && r.contains(&format!("{target} bpm"))),
        "{report}"
    );
    assert_eq!(w["after"], target, "{report}");
    assert!(
        w["shown"]
            .as_str()
            .is_some_and(|s| s.starts_with(&target.to_string())),
        "{report}"
    );
    // A refused write shows the platform's reason, word for word.
    assert_eq!(
        got["refused"]["message"],
        format!("write to {SPEED} refused: outside the operating envelope: 650 is above the maximum 600"),
        "{report}"
    );
    assert_eq!(got["refused"]["value_after"], target, "{report}");

    // Two-person rule: the operator's write waits, the engineer confirms it in another
    // browser, the pump reads the new value back; then it is put back (engineer + admin).
    let two = &got["two_person"];
    assert!(
        two["requested"]
            .as_str()
            .is_some_and(|r| r.contains("waits for a second person (engineer or above)")),
        "{report}"
    );
    assert!(
        two["pending_row"]
            .as_str()
            .is_some_and(|r| r.contains("hmi-operator")),
        "{report}"
    );
    assert!(
        two["confirmed"]
            .as_str()
            .is_some_and(|r| r.contains("confirmed and verified")),
        "{report}"
    );
    assert_eq!(two["after"], two["target"], "{report}");
    assert_eq!(two["restore"]["requested"], 202, "{report}");
    assert_eq!(two["restore"]["result"], "verified", "{report}");
    assert_eq!(two["value_restored"], two["before"], "{report}");

    // The alarm the simulator raised (the motor draws more at the higher speed), flashing
    // until acknowledged from the console with a comment.
    let alarm = &got["alarm"];
    assert_eq!(alarm["flashing"], "flash", "{report}");
    assert_eq!(alarm["reduced_motion_animation"], "none", "{report}");
    assert_eq!(alarm["acknowledged"], true, "{report}");
    assert!(
        alarm["state"] == "acknowledged" || alarm["state"] == "normal",
        "{report}"
    );
    assert!(
        got["alarm_views"]["history_rows"].as_u64().unwrap_or(0) > 0,
        "{report}"
    );

    // Integrity findings with their evidence and a small trend.
    assert!(
        got["integrity"]["findings"].as_u64().unwrap_or(0) >= 1,
        "{report}"
    );
    assert!(
        got["integrity"]["first"]["evidence"].as_u64().unwrap_or(0) >= 3,
        "{report}"
    );

    // System page: an operator gets no audit log, an admin does.
    assert_eq!(got["system"]["audit_shown_to_operator"], false, "{report}");
    assert!(
        got["admin"]["audit_rows"].as_u64().unwrap_or(0) > 0,
        "{report}"
    );

    // CSRF from another origin (a fetch with the cookie, a form post), and from the HMI's own
    // origin without the token: none changes the value.
    let csrf = &got["csrf"];
    assert_eq!(csrf["before"], csrf["after"], "{report}");
    assert_eq!(csrf["after"], target, "{report}");
    let form = csrf["form_status"].as_u64().unwrap_or(0);
    assert!(form == 401 || form == 403, "{report}");
    assert_eq!(
        csrf["no_token"],
        serde_json::json!({"status": 403, "code": "csrf"}),
        "{report}"
    );

    // A viewer sees the values but no write or acknowledge control, and the API refuses its
    // write and its shelve anyway.
    let v = &got["viewer"];
    assert!(v["points"].as_u64().unwrap_or(0) > 0, "{report}");
    assert_eq!(v["write_buttons"], 0, "{report}");
    assert_eq!(v["ack_buttons"], 0, "{report}");
    assert_eq!(v["write"]["status"], 403, "{report}");
    assert_eq!(v["write"]["code"], "not_authorised", "{report}");
    assert_eq!(v["shelve"]["status"], 403, "{report}");
    assert_eq!(v["value_after"], target, "{report}");

    // Logout ends the session; a session that ends under the page brings back the login.
    assert_eq!(got["logout"]["session_status"], 401, "{report}");
    assert!(
        got["session_end"]["notice"]
            .as_str()
            .is_some_and(|n| n.contains("session has expired")),
        "{report}"
    );

    // axe-core: no serious or critical violation on any page, at either width.
    let axe = got["axe"].as_object().expect("axe results");
    assert!(axe.len() >= 18, "{report}");
    for (page, r) in axe {
        assert_eq!(r["serious_or_critical"], 0, "axe on {page}: {r:#}");
    }
    // At tablet width no page scrolls sideways.
    for (page, px) in got["overflow"].as_object().expect("overflow") {
        assert_eq!(px, 0, "{page} is wider than a tablet: {report}");
    }
    let shots_taken = got["screenshots"].as_array().expect("screenshots");
    for s in shots_taken {
        let p = PathBuf::from(s.as_str().expect("path"));
        assert!(
            p.metadata().is_ok_and(|m| m.len() > 1000),
            "{}",
            p.display()
        );
    }

    // The size of the first load is a budget, not a timing: asserted.
    let bytes = got["first_load"]["bytes"].as_u64().unwrap_or(u64::MAX);
    assert!(bytes < 300_000, "first load {bytes} bytes: {report}");
    assert!(
        got["trend_30d"]["points"].as_u64().unwrap_or(0) > 100,
        "{report}"
    );

    eprintln!(
        "HMI figures (loopback, debug build):\n  first load: {} bytes in {} requests, interactive (live values shown) after {} ms\n  1-hour trend: {} intervals drawn in {} ms\n  30-day trend of {LONG_TAG}: {} intervals, loaded and drawn in {} ms ({} ms of it the history query; {} ms from navigation)\n  alarm raised {} ms after the page looked for it\n  screenshots ({}): {}",
        got["first_load"]["bytes"],
        got["first_load"]["requests"],
        got["first_load"]["interactive_ms"],
        got["trend_1h"]["points"],
        got["trend_1h"]["render_ms"],
        got["trend_30d"]["points"],
        got["trend_30d"]["render_ms"],
        got["trend_30d"]["fetch_ms"],
        got["trend_30d"]["wall_ms"],
        got["alarm"]["raised_after_ms"],
        shots_taken.len(),
        shots_taken
            .iter()
            .filter_map(|s| s.as_str())
            .map(|s| s.rsplit('/').next().unwrap_or(s))
            .collect::<Vec<_>>()
            .join(", ")
    );
    drop(demo);
}
