//! End-to-end tests of the `ironplant` binary: demo, serve + simulate (the README's
//! two-process flow, also on a data directory the demo used), check, `--help` of every
//! command, and clear errors (a taken port, a missing file, a second process on one data
//! directory, plain MQTT to the TLS port).

mod common;

use common::pump;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use serde_json::Value as Json;

const BIN: &str = env!("CARGO_BIN_EXE_ironplant");

/// A child process killed on drop, whose stdout lines arrive on a channel.
struct Proc {
    child: Child,
    lines: mpsc::Receiver<String>,
    errs: mpsc::Receiver<String>,
}

impl Proc {
    fn start(args: &[&str], dir: &Path) -> Proc {
        let mut child = Command::new(BIN)
            .env("IRONPLANT_MQTTS", "127.0.0.1:0")
            .env("IRONPLANT_OPCUA", "127.0.0.1:0")
            .args(args)
            .current_dir(dir)
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start ironplant");
        let lines = pump(child.stdout.take().expect("piped stdout"));
        let errs = pump(child.stderr.take().expect("piped stderr"));
        Proc { child, lines, errs }
    }

    /// Waits for a stdout line containing `marker` and returns the first socket address in it.
    fn address_after(&self, marker: &str) -> String {
        let line = self.line_with(marker);
        let word = line
            .split_whitespace()
            .find(|w| w.contains("127.0.0.1:"))
            .expect("an address");
        let addr = word.rsplit("://").next().unwrap_or(word);
        addr.split('/').next().expect("host:port").to_owned()
    }
}

impl Proc {
    /// Waits for the next stdout line containing `marker`.
    fn line_with(&self, marker: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no line with {marker:?}"));
            if line.contains(marker) {
                return line;
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The platform's HTTPS API as a client sees it: its address, the CA of its data directory,
/// and an API token made through the security library (the way `ironplant token create` does).
struct Api {
    addr: String,
    tls: Arc<rustls::ClientConfig>,
    token: String,
}

impl Proc {
    /// Waits for the API's address, then trusts the CA in `data_dir` and makes a viewer token.
    fn api(&self, data_dir: &Path) -> Api {
        let addr = self.address_after("HTTP API:");
        api_for(addr, data_dir)
    }
}

fn api_for(addr: String, data_dir: &Path) -> Api {
    let sec = ironplant_security::Security::open(
        data_dir,
        Arc::new(ironplant_security::SystemClock),
        Default::default(),
    )
    .expect("open the platform's security state");
    let token = sec
        .users
        .create_token(
            "admin",
            Some(ironplant_security::Role::Viewer),
            Duration::from_secs(3600),
            "test",
            None,
        )
        .expect("create a token")
        .token;
    let tls = ironplant_security::client_config(sec.ca.ca_pem(), None).expect("client config");
    Api {
        addr,
        tls: Arc::new(tls),
        token,
    }
}

/// A minimal HTTP/1.1 GET over TLS with the token: (status, body).
fn get(api: &Api, path: &str) -> (u16, String) {
    let s = TcpStream::connect(&api.addr).expect("connect to the API");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("server name");
    let conn = rustls::ClientConnection::new(api.tls.clone(), name).expect("TLS client");
    let mut s = rustls::StreamOwned::new(conn, s);
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
        api.addr, api.token
    )
    .expect("send");
    let mut raw = Vec::new();
    match s.read_to_end(&mut raw) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => {}
        Err(e) => panic!("read response: {e}"),
    }
    let raw = String::from_utf8(raw).expect("UTF-8 response");
    let (head, body) = raw.split_once("\r\n\r\n").expect("headers end");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status code");
    (status, body.to_owned())
}

fn get_json(addr: &Api, path: &str) -> (u16, Json) {
    let (status, body) = get(addr, path);
    (
        status,
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {body}")),
    )
}

fn wait_for<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {secs} s waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn tags(addr: &Api, query: &str) -> Vec<Json> {
    let (status, body) = get_json(addr, &format!("/api/v1/tags{query}"));
    assert_eq!(status, 200);
    body["tags"].as_array().expect("tags array").clone()
}

fn run(args: &[&str], dir: &Path) -> Output {
    Command::new(BIN)
        .env("IRONPLANT_MQTTS", "127.0.0.1:0")
        .env("IRONPLANT_OPCUA", "127.0.0.1:0")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run ironplant")
}

#[test]
fn demo_serves_live_good_changing_values() {
    let dir = tempfile::tempdir().expect("tempdir");
    let started = Instant::now();
    let demo = Proc::start(
        &["demo", "--http", "127.0.0.1:0", "--data-dir", "data"],
        dir.path(),
    );
    let addr = demo.api(&dir.path().join("data"));
    // The first start shows the admin's password once, the same as in its 0600 file.
    let first_start = demo.line_with("First start:");
    let shown = first_start
        .split('`')
        .nth(3)
        .expect("the password between backticks");
    let kept = std::fs::read_to_string(dir.path().join("data/security/initial-admin-password"))
        .expect("the initial admin password file");
    let kept = kept
        .lines()
        .find_map(|l| l.strip_prefix("password:"))
        .expect("a password line")
        .trim();
    assert!(shown.len() >= 16, "{first_start}");
    assert_eq!(shown, kept, "{first_start}");

    // >= 30 tags, all Good, within 5 s of start-up.
    let first = wait_for("30 Good tags", 20, || {
        let t = tags(&addr, "");
        (t.len() >= 30 && t.iter().all(|t| t["quality"] == "Good")).then_some(t)
    });
    eprintln!("all tags Good after {:?}", started.elapsed());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    for t in &first {
        assert!(
            t["ts"]
                .as_str()
                .is_some_and(|s| s.ends_with('Z') && s.contains('.')),
            "{t}"
        );
        // Modbus tags sit at the bottom of the ISA-95 tree; Sparkplug tags are named by
        // group/node/device/metric; OPC UA and computed tags live where the config puts them.
        let modbus = !t["device"].as_str().is_some_and(|d| {
            d.starts_with("sparkplug:")
                || d.starts_with("opcua:")
                || d == "computed"
                || d == "command-path"
                || d == "integrity"
        });
        assert!(
            !modbus
                || t["path"]
                    .as_str()
                    .is_some_and(|p| p.split('/').count() == 7),
            "{t}"
        );
    }
    // The simulator's Sparkplug B edge node reaches the platform through the broker: its
    // device metrics become Good tags too.
    let sparkplug = wait_for("Sparkplug tags of the simulated edge node", 20, || {
        let t = tags(&addr, "?prefix=acme/lyon/bottling/line1/edge/");
        (t.len() >= 5 && t.iter().all(|t| t["quality"] == "Good")).then_some(t)
    });
    assert!(
        sparkplug.iter().all(|t| t["device"]
            .as_str()
            .is_some_and(|d| d.starts_with("sparkplug:bottling/sim-edge"))),
        "{sparkplug:?}"
    );

    // Values change between two calls 2 s apart.
    std::thread::sleep(Duration::from_secs(2));
    let second = tags(&addr, "");
    let changed = first
        .iter()
        .zip(&second)
        .filter(|(a, b)| a["value"] != b["value"])
        .count();
    assert!(changed >= 5, "only {changed} tag values changed in 2 s");

    // One tag, prefix filter, errors with a stable shape.
    let path = first[0]["path"].as_str().expect("path");
    let (status, one) = get_json(&addr, &format!("/api/v1/tags/{path}"));
    assert_eq!(status, 200);
    assert_eq!(one["path"], path);
    let prefix = path.rsplit_once('/').expect("parent").0;
    let filtered = tags(&addr, &format!("?prefix={prefix}"));
    assert!(!filtered.is_empty() && filtered.len() < first.len());
    assert!(filtered
        .iter()
        .all(|t| t["path"].as_str().is_some_and(|p| p.starts_with(prefix))));
    let (status, err) = get_json(&addr, "/api/v1/tags/acme/nope");
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (404, Some("tag_not_found"))
    );
    let (status, err) = get_json(&addr, "/api/v1/tags/acme/bad%20path");
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (400, Some("invalid_path"))
    );
    assert!(err["error"]["message"]
        .as_str()
        .is_some_and(|m| !m.is_empty()));
    let (status, err) = get_json(&addr, "/no/such/endpoint");
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (404, Some("not_found"))
    );

    // Assets with locations; health; metrics.
    let (status, assets) = get_json(&addr, "/api/v1/assets");
    assert_eq!(status, 200);
    let root = &assets["assets"][0];
    assert_eq!(root["level"], "enterprise");
    let site = &root["children"][0];
    assert_eq!(site["level"], "site");
    assert!(site["location"]["latitude"].is_f64(), "{site}");
    // The simulated Sparkplug machine sits in line 1 beside the Modbus ones, with its location,
    // its metric folders as assets holding its tags.
    fn find<'a>(assets: &'a Json, path: &str) -> Option<&'a Json> {
        assets.as_array()?.iter().find_map(|a| {
            if a["path"] == path {
                Some(a)
            } else {
                find(&a["children"], path)
            }
        })
    }
    let line = find(&assets["assets"], "acme/lyon/bottling/line1").expect("line 1");
    let edge = find(&line["children"], "acme/lyon/bottling/line1/edge").expect("the edge asset");
    assert_eq!(edge["location"]["zone"], "hall-b", "{edge}");
    assert!(edge["effective_location"]["latitude"].is_f64(), "{edge}");
    assert!(
        find(&line["children"], "acme/lyon/bottling/line1/filler").is_some(),
        "its Modbus neighbour"
    );
    let filler =
        find(&edge["children"], "acme/lyon/bottling/line1/edge/Filler").expect("the metric folder");
    assert!(
        filler["tags"].as_array().is_some_and(|t| t
            .iter()
            .any(|p| p == "acme/lyon/bottling/line1/edge/Filler/Speed")),
        "{filler}"
    );
    let (status, health) = get_json(&addr, "/healthz");
    assert_eq!((status, health["status"].as_str()), (200, Some("ok")));
    let (status, metrics) = get(&addr, "/metrics");
    assert_eq!(status, 200);
    let ingested: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("ironplant_samples_ingested_total "))
        .and_then(|v| v.parse().ok())
        .expect("samples counter");
    assert!(ingested >= 60, "{ingested}");
    assert!(metrics.contains("ironplant_poll_latency_seconds_bucket{device="));
    assert!(metrics.contains("ironplant_poll_errors_total{device="));
    assert!(
        metrics.contains("ironplant_mqtt_retained_messages "),
        "the broker reports to /metrics"
    );
    assert!(
        dir.path().join("data/demo.toml").exists(),
        "demo saves its config in the data dir"
    );
}

#[test]
fn killing_the_simulator_makes_tags_bad_until_it_returns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = Proc::start(
        &[
            "simulate",
            "--listen",
            "127.0.0.1:0",
            "--sparkplug-broker",
            "off",
        ],
        dir.path(),
    );
    let sim_addr = sim.address_after("listening on");
    let config = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/bottling.toml"),
    )
    .expect("example config")
    .replace("127.0.0.1:5020", &sim_addr);
    std::fs::write(dir.path().join("plant.toml"), config).expect("write config");
    let platform = Proc::start(
        &["serve", "--config", "plant.toml", "--http", "127.0.0.1:0"],
        dir.path(),
    );
    let addr = platform.api(&dir.path().join("ironplant-data"));
    // The tags fed by the devices (directly or computed from them); the command path's
    // finding tags and the integrity checks' flags and scores (they judge the devices' data)
    // stay Good whatever the devices do.
    let all_quality = |q: &str| {
        let t: Vec<Json> = tags(&addr, "")
            .into_iter()
            .filter(|t| t["device"] != "command-path" && t["device"] != "integrity")
            .collect();
        (!t.is_empty() && t.iter().all(|t| t["quality"] == q)).then_some(t)
    };
    wait_for("all Good", 20, || all_quality("Good"));

    drop(sim);
    let killed = Instant::now();
    let bad = wait_for("all Bad", 10, || all_quality("Bad"));
    assert!(bad.iter().all(|t| t["quality_reason"] == "CommFailure"));
    // Two poll intervals of the example (1 s), plus slack for a loaded machine.
    assert!(
        killed.elapsed() < Duration::from_millis(2500),
        "took {:?}",
        killed.elapsed()
    );

    let _sim = Proc::start(
        &[
            "simulate",
            "--listen",
            &sim_addr,
            "--sparkplug-broker",
            "off",
        ],
        dir.path(),
    );
    wait_for("all Good again", 20, || all_quality("Good"));
}

#[test]
fn check_reports_every_error_with_line_and_column() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broken = r#"[[device]]
id = "plc"
protocol = "modbus-tcp"
address = "127.0.0.1:502"

[[tag]]
path = "acme/site/area/line/cell/plc/a"
device = "nope"
modbus = { table = "holding", address = 0 }

[[tag]]
path = "acme/site/area/line/cell/plc/bad path"
device = "plc"
modbus = { table = "holding", address = 5 }

[[tag]]
path = "acme/site/area/line/cell/plc/b"
device = "plc"
modbus = { table = "holding", address = 10, type = "f32" }

[[tag]]
path = "acme/site/area/line/cell/plc/c"
device = "plc"
modbus = { table = "holding", address = 11, type = "u16" }

[[tag]]
path = "acme/site/area/line/cell/plc/d"
device = "plc"
modbus = { table = "holding", address = 20, type = "int128" }
"#;
    std::fs::write(dir.path().join("broken.toml"), broken).expect("write");
    let out = run(&["check", "--config", "broken.toml"], dir.path());
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "broken.toml:8:10: error: unknown device \"nope\"",
        "broken.toml:12:8: error: invalid tag path",
        "broken.toml:24:",
        "overlaps tag acme/site/area/line/cell/plc/b",
        "broken.toml:29:",
        "unknown data type \"int128\"",
        "hint:",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }

    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/bottling.toml");
    let out = run(
        &["check", "--config", example.to_str().expect("utf-8 path")],
        dir.path(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn clear_one_line_errors_for_port_in_use_and_missing_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let holder = TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken = holder.local_addr().expect("addr").to_string();
    let out = run(&["demo", "--http", &taken], dir.path());
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_else(|| panic!("no error line in:\n{err}"));
    assert!(
        line.contains(&taken) && line.contains("in use") && line.contains("--http"),
        "{line}"
    );

    let out = run(&["serve", "--config", "missing.toml"], dir.path());
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.lines().filter(|l| l.starts_with("error:")).count(),
        1,
        "{err}"
    );
    assert!(
        err.contains("cannot read config file missing.toml") && err.contains("No such file"),
        "{err}"
    );
}

#[test]
fn an_unreachable_device_keeps_the_platform_running() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A port that refuses connections: bound, then closed.
    let dead = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let cfg = format!(
        "[[device]]\nid = \"gone\"\nprotocol = \"modbus-tcp\"\naddress = \"{dead}\"\npoll_interval = \"200ms\"\n\n\
         [[tag]]\npath = \"acme/site/area/line/cell/gone/x\"\ndevice = \"gone\"\nmodbus = {{ table = \"input\", address = 0 }}\n"
    );
    std::fs::write(dir.path().join("c.toml"), cfg).expect("write");
    let p = Proc::start(
        &["serve", "--config", "c.toml", "--http", "127.0.0.1:0"],
        dir.path(),
    );
    let addr = p.api(&dir.path().join("ironplant-data"));
    // Before the first poll the tag is Bad(NotConnected); then the failed connect makes it CommFailure.
    let t = wait_for("tag Bad(CommFailure)", 10, || {
        let t = tags(&addr, "");
        (t[0]["quality_reason"] == "CommFailure").then(|| t[0].clone())
    });
    assert_eq!(t["quality"], "Bad");
    let (status, health) = get_json(&addr, "/healthz");
    assert_eq!(
        (status, health["devices"]["gone"].as_str()),
        (200, Some("down"))
    );
    let warning = wait_for("a warning on stderr", 10, || {
        p.errs.try_iter().find(|l| l.contains("device unreachable"))
    });
    assert!(
        warning.contains("gone") && warning.contains(&dead.to_string()),
        "{warning}"
    );

    // Ctrl-C (SIGINT) shuts down cleanly with exit code 0.
    let mut p = p;
    let pid = p.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill")
        .success());
    let status = wait_for("exit after SIGINT", 10, || {
        p.child.try_wait().expect("try_wait")
    });
    assert!(status.success(), "{status:?}");
    wait_for("the shutdown log line", 10, || {
        p.errs.try_iter().find(|l| l.contains("shutting down"))
    });
}

/// `mosquitto_sub`, a third-party MQTT client, sees the plant live on the tag paths. Under
/// CI=true a missing client fails the test (.ci/test installs Debian's mosquitto-clients).
#[test]
fn mqtt_clients_see_the_unified_namespace() {
    let have = Command::new("mosquitto_sub").arg("--help").output().is_ok();
    if !have {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "mosquitto_sub is required under CI=true"
        );
        eprintln!("SKIPPED: mosquitto_sub not installed");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let demo = Proc::start(
        &["demo", "--http", "127.0.0.1:0", "--data-dir", "data"],
        dir.path(),
    );
    // Over TLS, as a viewer with an API token as the password (anonymous clients are refused).
    let data = dir.path().join("data");
    let api = demo.api(&data);
    let mqtt = demo.address_after("MQTT/TLS:");
    let (host, port) = mqtt.rsplit_once(':').expect("host:port");
    let cafile = data.join("security/ca/ca.crt");
    let cafile = cafile.to_str().expect("UTF-8 path");
    let login = ["--cafile", cafile, "-u", "admin", "-P", api.token.as_str()];
    let out = Command::new("timeout")
        .args(["20", "mosquitto_sub", "-h", host, "-p", port])
        .args(login)
        .args(["-t", "acme/lyon/bottling/line1/filler/#", "-v", "-C", "25"])
        .output()
        .expect("run mosquitto_sub");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 25, "{text}");
    for line in &lines {
        let (topic, payload) = line.split_once(' ').expect("topic payload");
        assert!(
            topic.starts_with("acme/lyon/bottling/line1/filler/"),
            "{line}"
        );
        let v: Json = serde_json::from_str(payload).unwrap_or_else(|e| panic!("{line}: {e}"));
        assert_eq!(v["quality"], "Good", "{line}");
        assert!(v["ts"].as_str().is_some_and(|t| t.ends_with('Z')), "{line}");
    }
    // Live: the actual speed keeps changing.
    let out = Command::new("timeout")
        .args(["20", "mosquitto_sub", "-h", host, "-p", port])
        .args(login)
        .args([
            "-t",
            "acme/lyon/bottling/line1/filler/plc/speed_actual",
            "-C",
            "3",
        ])
        .output()
        .expect("run mosquitto_sub");
    let values: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(values.len(), 3, "the retained value and two changes");
    assert!(values[1] != values[2], "{values:?}");
}

/// A free port on loopback (bound, then released) for a listener two processes must agree on
/// before either starts.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// The example config pointed at a simulator.
fn plant_config(dir: &Path, sim_addr: &str) {
    let config = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/bottling.toml"),
    )
    .expect("example config")
    .replace("127.0.0.1:5020", sim_addr);
    std::fs::write(dir.join("plant.toml"), config).expect("write config");
}

/// Waits until the simulated edge node's Sparkplug tags are Good on the platform.
fn sparkplug_tags_good(api: &Api, what: &str) {
    wait_for(what, 30, || {
        let t = tags(api, "?prefix=acme/lyon/bottling/line1/edge/");
        (t.len() >= 5 && t.iter().all(|t| t["quality"] == "Good")).then_some(())
    });
}

/// The README's two-process flow (`simulate &` then `serve --config examples/bottling.toml`,
/// here with free ports instead of 5020/8080/8883 and the example config pointed at the
/// simulator's port), on a fresh data directory where both processes start at once, then
/// after the demo used the directory, and again after the edge node was revoked and enrolled
/// elsewhere: the simulator's Sparkplug edge node gets in every time, and so does the demo's.
#[test]
fn the_readme_two_process_flow_works_also_after_the_demo() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let data = d.join("ironplant-data");
    let mqtts = format!("127.0.0.1:{}", free_port());
    let simulate = |extra: &[&str]| {
        let mut args = vec!["simulate", "--listen", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        let sim = Proc::start(&args, d);
        let addr = sim.address_after("listening on");
        (sim, addr)
    };
    let serve = || {
        let mut child = Command::new(BIN)
            .env("IRONPLANT_MQTTS", &mqtts)
            .args(["serve", "--config", "plant.toml", "--http", "127.0.0.1:0"])
            .current_dir(d)
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start ironplant serve");
        let lines = pump(child.stdout.take().expect("piped stdout"));
        let errs = pump(child.stderr.take().expect("piped stderr"));
        Proc { child, lines, errs }
    };

    // 1. Fresh directory: simulate and serve start together; one of them creates the CA.
    let (sim, sim_addr) = simulate(&["--sparkplug-broker", &mqtts]);
    plant_config(d, &sim_addr);
    let platform = serve();
    let api = platform.api(&data);
    sparkplug_tags_good(&api, "the edge node's tags on a fresh data dir");
    wait_for("Modbus tags Good", 20, || {
        let t = tags(&api, "?prefix=acme/lyon/bottling/line1/filler");
        (!t.is_empty() && t.iter().all(|t| t["quality"] == "Good")).then_some(())
    });

    // The token from a file or the environment, never on the command line.
    let token_file = d.join("token");
    std::fs::write(&token_file, format!("{}\n", api.token)).expect("token file");
    let tag = "acme/lyon/bottling/line1/filler/plc/speed_actual";
    for (env, args) in [
        (None, vec!["--token-file", "token"]),
        (Some(api.token.as_str()), vec![]),
    ] {
        let mut cmd = Command::new(BIN);
        cmd.args([
            "query", "--tag", tag, "--http", &api.addr, "--format", "json",
        ])
        .args(&args)
        .current_dir(d);
        if let Some(t) = env {
            cmd.env("IRONPLANT_TOKEN", t);
        }
        let out = cmd.output().expect("run ironplant query");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Json = serde_json::from_slice(&out.stdout).expect("JSON output");
        assert!(v.to_string().contains(tag), "{v}");
    }

    // A second platform on the same data directory is refused with a clear reason.
    let out = run(
        &["serve", "--config", "plant.toml", "--http", "127.0.0.1:0"],
        d,
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_else(|| panic!("no error line in:\n{err}"));
    let abs = std::fs::canonicalize(&data).expect("data dir");
    assert!(
        line.contains("another Ironplant process")
            && line.contains(&format!("pid {} (serve)", platform.child.id()))
            && line.contains(&abs.display().to_string()),
        "{line}"
    );
    // `query` falls back to the data directory when nothing answers on --http: with the
    // platform holding it, it says so instead of failing on the historian's file lock.
    let out = run(
        &[
            "query",
            "--tag",
            tag,
            "--http",
            "127.0.0.1:1",
            "--token-file",
            "token",
        ],
        d,
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("another Ironplant process") && err.contains("point --http at"),
        "{err}"
    );
    drop(platform);
    drop(sim);

    // 2. The demo on the same directory: its own edge node (the same device) gets in.
    let demo = Proc::start(&["demo", "--http", "127.0.0.1:0"], d);
    sparkplug_tags_good(&demo.api(&data), "the demo's edge node after simulate");
    drop(demo);

    // 3. The README flow again, after the demo.
    let (sim, sim_addr) = simulate(&["--sparkplug-broker", &mqtts]);
    plant_config(d, &sim_addr);
    let platform = serve();
    sparkplug_tags_good(&platform.api(&data), "the edge node's tags after the demo");
    drop(platform);
    drop(sim);

    // 4. The device revoked and enrolled again elsewhere: that bundle works, and the demo
    //    afterwards enrols its edge node again rather than staying refused.
    let ok = |args: &[&str]| {
        let out = run(args, d);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    ok(&["device", "revoke", "sim-edge"]);
    ok(&[
        "device", "enroll", "sim-edge", "--role", "device", "--out", "edge",
    ]);
    let (sim, sim_addr) = simulate(&["--sparkplug-broker", &mqtts, "--sparkplug-bundle", "edge"]);
    plant_config(d, &sim_addr);
    let platform = serve();
    sparkplug_tags_good(&platform.api(&data), "the edge node with its own bundle");
    drop(platform);
    drop(sim);
    let demo = Proc::start(&["demo", "--http", "127.0.0.1:0"], d);
    sparkplug_tags_good(
        &demo.api(&data),
        "the demo's edge node after a re-enrolment",
    );
}

/// `simulate --sparkplug-plain` refuses the TLS port up front, and a broker that closes the
/// connection on a plain CONNECT (the platform's TLS listener) with a message of its own.
#[test]
fn simulate_says_why_plain_mqtt_cannot_reach_a_tls_broker() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A simulator that does not refuse would run until stopped: wait with a deadline.
    let run = |args: &[&str], dir: &Path| {
        let child = Command::new(BIN)
            .args(args)
            .current_dir(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run ironplant");
        let pid = child.id();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(out) => out.expect("output"),
            Err(_) => {
                let _ = Command::new("kill").arg(pid.to_string()).status();
                panic!("{args:?} did not refuse within 20 s");
            }
        }
    };
    let error_line = |out: &Output| {
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        err.lines()
            .find(|l| l.starts_with("error:"))
            .unwrap_or_else(|| panic!("no error line in:\n{err}"))
            .to_owned()
    };
    let out = run(
        &[
            "simulate",
            "--listen",
            "127.0.0.1:0",
            "--sparkplug-plain",
            "--sparkplug-broker",
            "127.0.0.1:8883",
        ],
        dir.path(),
    );
    let line = error_line(&out);
    assert!(
        line.contains("MQTT over TLS port")
            && line.contains("--sparkplug-bundle")
            && line.contains("--sparkplug-broker off"),
        "{line}"
    );

    let platform = Proc::start(
        &["demo", "--http", "127.0.0.1:0", "--data-dir", "data"],
        dir.path(),
    );
    let mqtts = platform.address_after("MQTT/TLS:");
    let out = run(
        &[
            "simulate",
            "--listen",
            "127.0.0.1:0",
            "--sparkplug-plain",
            "--sparkplug-broker",
            &mqtts,
        ],
        dir.path(),
    );
    let line = error_line(&out);
    assert!(
        line.contains("closed the connection") && line.contains("--sparkplug-bundle"),
        "{line}"
    );
}

/// Each command's `--help` shows its own flags and an example, not every server flag.
#[test]
fn help_shows_each_command_its_own_flags_and_an_example() {
    let dir = tempfile::tempdir().expect("tempdir");
    let help = |args: &[&str]| {
        let out = run(args, dir.path());
        assert!(out.status.success(), "{args:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let serve = help(&["serve", "--help"]);
    assert!(serve.contains("--mqtts") && serve.contains("--data-dir") && serve.contains("Example"));
    for args in [
        ["device", "enroll", "--help"].as_slice(),
        &["check", "--help"],
        &["simulate", "--help"],
        &["query", "--help"],
        &["token", "create", "--help"],
    ] {
        let h = help(args);
        assert!(
            !h.contains("--mqtts") && !h.contains("--tls-cert") && h.contains("Example"),
            "{args:?}:\n{h}"
        );
    }
    assert!(help(&["device", "enroll", "--help"]).contains("--data-dir"));
    assert!(!help(&["check", "--help"]).contains("--data-dir"));
    // The benchmarks are their own binary (crates/ironplant-bench), not a product command.
    assert!(!help(&["--help"]).contains("bench"));
    let bench = run(&["bench", "bus", "--help"], dir.path());
    assert!(
        !bench.status.success()
            && String::from_utf8_lossy(&bench.stderr).contains("unrecognized subcommand 'bench'"),
        "{bench:?}"
    );
}
