//! The platform's OPC UA server (issue 15) end to end: the real `ironplant demo` on ephemeral
//! ports, and two third-party clients against it, asyncua (PyPI, `tests/peers/opcua_client.py`)
//! and node-opcua (npm, `tests/peers/opcua_node_client.js`), each doing what a SCADA engineer
//! would: its application certificate is refused until `ironplant opcua trust --server`; then it
//! browses Objects → Ironplant → acme → … → speed_actual (browse names, NodeIds, data types),
//! reads live values with their quality and timestamps, receives changes through a
//! subscription, is refused without credentials and with a wrong password, and writes through
//! the command path: an operator's setpoint reaches the simulated labeller (over OPC UA) and
//! reads back, a value outside the envelope is BadOutOfRange, a wrong type BadTypeMismatch and a
//! viewer BadUserAccessDenied; the command events say the write came from OPC UA.
//!
//! One demo serves both clients, each on its own thread with its own users and certificate.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use ironplant_core::Timestamp;
use serde_json::Value as Json;

const BIN: &str = env!("CARGO_BIN_EXE_ironplant");
const NAMESPACE_URI: &str = "urn:ironplant:uns";
/// The asset levels from the Ironplant folder down to the filler's PLC.
const LEVELS: [&str; 6] = ["acme", "lyon", "bottling", "line1", "filler", "plc"];
const SPEED_ACTUAL: &str = "acme/lyon/bottling/line1/filler/plc/speed_actual";
const SPEED_SETPOINT: &str = "acme/lyon/bottling/line1/filler/plc/speed_setpoint";
const GLUE_SETPOINT: &str = "acme/lyon/bottling/line1/labeller/glue_setpoint";
const GLUE_TEMPERATURE: &str = "acme/lyon/bottling/line1/labeller/glue_temperature";

/// `ironplant demo`, killed on drop; its output lines arrive on channels.
struct Demo {
    child: Child,
    lines: mpsc::Receiver<String>,
    errs: mpsc::Receiver<String>,
}

impl Demo {
    fn start(dir: &Path, data: &Path) -> Demo {
        let mut child = Command::new(BIN)
            .env("IRONPLANT_MQTTS", "127.0.0.1:0")
            .env("IRONPLANT_OPCUA", "127.0.0.1:0")
            .env("NO_COLOR", "1")
            .args(["demo", "--http", "127.0.0.1:0", "--data-dir"])
            .arg(data)
            .current_dir(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start ironplant demo");
        let lines = common::pump(child.stdout.take().expect("piped stdout"));
        let errs = common::pump(child.stderr.take().expect("piped stderr"));
        Demo { child, lines, errs }
    }

    /// The banner's lines, up to "Press Ctrl-C to stop.".
    fn banner(&self) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut banner = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = self.lines.recv_timeout(left) else {
                let errs: Vec<String> = self.errs.try_iter().collect();
                let tail = &errs[errs.len().saturating_sub(20)..];
                panic!(
                    "the demo printed no complete banner\n--- stdout\n{}\n--- stderr (end)\n{}",
                    banner.join("\n"),
                    tail.join("\n")
                );
            };
            let end = line.contains("Press Ctrl-C to stop.");
            banner.push(line);
            if end {
                return banner;
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

/// The platform as the clients see it, shared by their threads.
struct Plant {
    data: PathBuf,
    /// `opc.tcp://localhost:PORT/` from the banner.
    url: String,
    /// The HTTPS API as admin, to read the command events.
    api: common::Api,
    admin_password: String,
    /// When the demo was started: every value the clients see is younger.
    started: Timestamp,
    /// Held while a client writes the glue setpoint and reads it back, so that the other
    /// client's write cannot come in between.
    glue: Mutex<()>,
}

impl Plant {
    /// `ironplant ARGS --data-dir DATA` on the running platform's data directory: its stdout,
    /// after asserting success.
    fn cli(&self, args: &[&str]) -> String {
        let out = Command::new(BIN)
            .args(args)
            .arg("--data-dir")
            .arg(&self.data)
            .env("NO_COLOR", "1")
            .output()
            .expect("run ironplant");
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        );
        assert!(out.status.success(), "ironplant {args:?}: {stdout}{stderr}");
        stdout
    }

    /// A user of `role` made with `ironplant user add`: its generated password.
    fn add_user(&self, name: &str, role: &str) -> String {
        let password = self.cli(&["user", "add", name, "--role", role]);
        let password = password.trim();
        assert!(password.len() >= 16, "{name}: {password:?}");
        password.to_owned()
    }

    /// The command events about `tag` (newest first).
    fn command_events(&self, tag: &str) -> Vec<Json> {
        let (status, body) = common::try_get(
            &self.api,
            &format!("/api/v1/events?kind=command&subject={tag}&limit=200"),
        );
        assert_eq!(status, 200, "{body}");
        let events: Json = serde_json::from_str(&body).expect("JSON events");
        events["events"].as_array().cloned().unwrap_or_default()
    }
}

/// One third-party client script, with its own certificate directory.
struct Peer {
    name: &'static str,
    program: PathBuf,
    script: PathBuf,
    /// `NODE_PATH` for node-opcua.
    node_path: Option<PathBuf>,
    url: String,
    pki: PathBuf,
}

/// What one run of a client printed: its exit code and JSON lines.
struct Run {
    code: Option<i32>,
    lines: Vec<Json>,
    report: String,
}

impl Run {
    /// The last line of a successful run.
    fn ok(&self) -> &Json {
        assert_eq!(self.code, Some(0), "{}", self.report);
        self.lines
            .last()
            .unwrap_or_else(|| panic!("no output\n{}", self.report))
    }

    /// The status of a refused connection (exit code 2, `{"error", "status"}`).
    fn refused(&self) -> String {
        assert_eq!(self.code, Some(2), "{}", self.report);
        let last = self
            .lines
            .last()
            .unwrap_or_else(|| panic!("no output\n{}", self.report));
        assert!(last["error"].is_string(), "{}", self.report);
        last["status"].as_str().unwrap_or_default().to_owned()
    }
}

type Login<'a> = Option<(&'a str, &'a str)>;

impl Peer {
    /// Runs the client as `login` (anonymous when `None`) with `args`, at most 60 s.
    fn run(&self, login: Login<'_>, args: &[&str]) -> Run {
        let mut cmd = Command::new(&self.program);
        cmd.arg(&self.script)
            .arg(&self.url)
            .arg("--pki")
            .arg(&self.pki);
        if let Some((user, password)) = login {
            cmd.args(["--user", user, "--password", password]);
        }
        cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
        if let Some(modules) = &self.node_path {
            cmd.env("NODE_PATH", modules);
        }
        let mut child = cmd.spawn().expect("start the OPC UA client");
        let out = drain(child.stdout.take().expect("piped stdout"));
        let err = drain(child.stderr.take().expect("piped stderr"));
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = child.try_wait().expect("poll the client") {
                break Some(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            // Waiting for the child to end (checked above), not for a side effect.
            std::thread::sleep(Duration::from_millis(20));
        };
        let stdout = out.join().expect("stdout reader");
        let stderr = err.join().expect("stderr reader");
        let report = format!(
            "{} {args:?} as {:?}\n--- stdout\n{stdout}--- stderr\n{stderr}",
            self.name,
            login.map(|l| l.0)
        );
        let Some(status) = status else {
            panic!("no answer within 60 s: {report}");
        };
        let lines = stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}\n{report}")))
            .collect();
        Run {
            code: status.code(),
            lines,
            report,
        }
    }

    /// Reads `nodes` until every value is Good (the demo's first polls may still be on
    /// their way), at most 20 s.
    fn read_good(&self, login: Login<'_>, nodes: &[&str]) -> Vec<Json> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let run = self.run(login, &[&["read"][..], nodes].concat());
            let values = run.ok()["values"].as_array().cloned().unwrap_or_default();
            assert_eq!(values.len(), nodes.len(), "{}", run.report);
            if values.iter().all(|v| v["status"] == "Good") {
                return values;
            }
            assert!(Instant::now() < deadline, "not Good: {}", run.report);
        }
    }
}

fn drain(mut pipe: impl std::io::Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = pipe.read_to_string(&mut s);
        s
    })
}

/// The `YYYY-MM-DDTHH:MM:SS` of `t` (both clients print RFC 3339 UTC with a `Z`, asyncua to
/// the microsecond and node-opcua to the millisecond: whole seconds compare as text).
fn second(t: &str) -> &str {
    assert!(t.len() > 19 && t.ends_with('Z'), "not RFC 3339 UTC: {t:?}");
    &t[..19]
}

fn second_of(t: Timestamp) -> String {
    t.to_rfc3339()[..19].to_owned()
}

/// Everything one client does against the platform; `glue` is the setpoint it writes (the
/// two clients write different values).
fn exercise(plant: &Plant, peer: &Peer, glue: f64) {
    let tag = if peer.name == "asyncua" { "py" } else { "node" };
    let admin = ("admin", plant.admin_password.as_str());
    let operator_name = format!("op-{tag}");
    let viewer_name = format!("viewer-{tag}");
    let operator_password = plant.add_user(&operator_name, "operator");
    let viewer_password = plant.add_user(&viewer_name, "viewer");
    let operator = Some((operator_name.as_str(), operator_password.as_str()));
    let viewer = Some((viewer_name.as_str(), viewer_password.as_str()));

    // An unknown client application is refused, its certificate kept for the administrator,
    // who trusts it with the CLI by the first digits of its thumbprint.
    let cert = peer.run(None, &["cert"]);
    let thumb = cert.ok()["thumbprint"]
        .as_str()
        .expect("a thumbprint")
        .to_owned();
    let refused = peer.run(Some(admin), &["read", "i=2255"]);
    assert_eq!(
        refused.refused(),
        "BadCertificateUntrusted",
        "{}",
        refused.report
    );
    let listed = plant.cli(&["opcua", "certificates", "--server"]);
    let (rejected, _) = listed.split_once("trusted:").expect("two sections");
    assert!(rejected.contains(&thumb), "{thumb} not rejected: {listed}");
    let trusted = plant.cli(&["opcua", "trust", "--server", &thumb[..16]]);
    assert!(
        trusted.contains(&format!("Trusted the client certificate {thumb}")),
        "{trusted}"
    );
    let listed = plant.cli(&["opcua", "certificates", "--server"]);
    let (_, trusted) = listed.split_once("trusted:").expect("two sections");
    assert!(trusted.contains(&thumb), "{thumb} not trusted: {listed}");
    let audit = std::fs::read_to_string(plant.data.join("security/audit/audit.log"))
        .expect("the audit log");
    assert!(
        audit.contains(&format!("OPC UA: trusted client certificate {thumb}")),
        "the trust is audited"
    );

    // The namespace of the UNS, and its root folder under Objects.
    let run = peer.run(viewer, &["read", "i=2255"]);
    let namespaces = run.ok()["values"][0]["value"].clone();
    let ns = namespaces
        .as_array()
        .and_then(|a| a.iter().position(|u| u == NAMESPACE_URI))
        .unwrap_or_else(|| panic!("{NAMESPACE_URI} not in {namespaces}"));
    let id = |path: &str| format!("ns={ns};s={path}");
    let root = format!("ns={ns};i=1");
    let run = peer.run(Some(admin), &["browse", "i=85"]);
    let objects = run.ok()["nodes"].as_array().cloned().unwrap_or_default();
    let folder = objects
        .iter()
        .find(|n| n["browse_name"] == "Ironplant")
        .unwrap_or_else(|| panic!("no Ironplant under Objects: {}", run.report));
    assert_eq!(folder["node_id"], root.as_str(), "{folder}");
    assert_eq!(folder["browse_ns"], ns, "{folder}");
    assert_eq!(folder["node_class"], "Object", "{folder}");

    // Down the asset tree to speed_actual: one browse of seven levels.
    let run = peer.run(Some(admin), &["browse", &root, "--depth", "7"]);
    let nodes = run.ok()["nodes"].as_array().cloned().unwrap_or_default();
    let node = |path: &str| {
        nodes
            .iter()
            .find(|n| n["node_id"] == id(path).as_str())
            .unwrap_or_else(|| panic!("{} not browsed: {}", id(path), run.report))
            .clone()
    };
    let mut parent = root.clone();
    let mut path = String::new();
    for level in LEVELS.iter().chain(["speed_actual"].iter()) {
        if !path.is_empty() {
            path.push('/');
        }
        path.push_str(level);
        let n = node(&path);
        assert_eq!(n["browse_name"], *level, "{n}");
        assert_eq!(n["browse_ns"], ns, "{n}");
        assert_eq!(n["parent"], parent.as_str(), "{n}");
        let class = if path == SPEED_ACTUAL {
            "Variable"
        } else {
            "Object"
        };
        assert_eq!(n["node_class"], class, "{n}");
        parent = id(&path);
    }
    assert_eq!(
        node(SPEED_ACTUAL)["data_type"],
        "i=11",
        "a float is a Double"
    );
    assert_eq!(
        node(SPEED_SETPOINT)["data_type"],
        "i=8",
        "an int is an Int64"
    );
    assert_eq!(
        node(GLUE_SETPOINT)["data_type"],
        "i=11",
        "a float is a Double"
    );

    // Live values with their quality and timestamps.
    let (speed, temperature) = (id(SPEED_ACTUAL), id(GLUE_TEMPERATURE));
    let before = second_of(plant.started);
    let values = peer.read_good(viewer, &[&speed, &temperature]);
    let after = second_of(Timestamp(Timestamp::now().0 + 1_000_000));
    for (v, node) in values.iter().zip([&speed, &temperature]) {
        assert_eq!(v["node_id"], node.as_str(), "{v}");
        assert!(v["value"].as_f64().is_some_and(f64::is_finite), "{v}");
        assert_eq!(v["status_code"], 0, "{v}");
        let source = second(v["source_timestamp"].as_str().expect("a source time"));
        let server = second(v["server_timestamp"].as_str().expect("a server time"));
        assert!(
            before.as_str() <= source && source <= server && server <= after.as_str(),
            "times out of order or not from this run ({before} .. {after}): {v}"
        );
    }

    // Changes of the filler's speed through a subscription (the demo polls it every second).
    let run = peer.run(
        viewer,
        &["subscribe", &speed, "--interval", "100", "--seconds", "5"],
    );
    let done = run.ok();
    assert_eq!(done["done"], true, "{}", run.report);
    let changes = &run.lines[..run.lines.len() - 1];
    assert_eq!(
        done["count"].as_u64(),
        Some(changes.len() as u64),
        "{}",
        run.report
    );
    let mut distinct: Vec<f64> = Vec::new();
    let mut last_time = String::new();
    for c in changes {
        assert_eq!(c["node_id"], speed.as_str(), "{}", run.report);
        assert_eq!(c["status"], "Good", "{}", run.report);
        let v = c["value"].as_f64().expect("a number");
        if !distinct.contains(&v) {
            distinct.push(v);
        }
        let t = c["source_timestamp"]
            .as_str()
            .expect("a source time")
            .to_owned();
        assert!(t > last_time, "source times go forward: {}", run.report);
        last_time = t;
    }
    assert!(
        distinct.len() >= 3,
        "at least 3 different values in 5 s: {}",
        run.report
    );

    // Refused: without credentials (asyncua; node-opcua itself refuses to try when no endpoint
    // offers anonymous) and with a wrong password.
    if peer.name == "asyncua" {
        let run = peer.run(None, &["read", &speed]);
        let status = run.refused();
        // The stack refuses an anonymous token at its policy check (none is offered), or with
        // the anonymous policy id at the platform's authenticator.
        assert!(
            ["BadIdentityTokenInvalid", "BadIdentityTokenRejected"].contains(&status.as_str()),
            "{}",
            run.report
        );
    }
    let run = peer.run(Some((&viewer_name, "not-the-password")), &["read", &speed]);
    assert_eq!(run.refused(), "BadUserAccessDenied", "{}", run.report);

    // Writes through the command path: the setpoint reaches the simulated labeller (an OPC UA
    // server of its own) and comes back as the tag's value.
    let glue_id = id(GLUE_SETPOINT);
    let text = glue.to_string();
    {
        let _only_us = plant.glue.lock().unwrap_or_else(|e| e.into_inner());
        let run = peer.run(operator, &["write", &glue_id, &text, "--type", "Double"]);
        assert_eq!(run.ok()["status"], "Good", "{}", run.report);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let run = peer.run(viewer, &["read", &glue_id]);
            let v = &run.ok()["values"][0];
            if v["value"].as_f64() == Some(glue) {
                assert_eq!(v["status"], "Good", "{}", run.report);
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{glue} not read back: {}",
                run.report
            );
        }
    }
    let setpoint = id(SPEED_SETPOINT);
    let run = peer.run(operator, &["write", &setpoint, "650", "--type", "Int64"]);
    assert_eq!(run.ok()["status"], "BadOutOfRange", "{}", run.report);
    let run = peer.run(operator, &["write", &setpoint, "250.5", "--type", "Double"]);
    assert_eq!(run.ok()["status"], "BadTypeMismatch", "{}", run.report);
    let run = peer.run(viewer, &["write", &glue_id, "140", "--type", "Double"]);
    assert_eq!(run.ok()["status"], "BadUserAccessDenied", "{}", run.report);

    // The command events name the operator and OPC UA as the origin.
    let from_us = |e: &Json| {
        e["actor"] == operator_name.as_str()
            && e["attributes"]["origin"] == "opcua"
            && e["attributes"]["session"] == format!("opcua:{operator_name}").as_str()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let glue_events = plant.command_events(GLUE_SETPOINT);
        let speed_events = plant.command_events(SPEED_SETPOINT);
        let verified = glue_events.iter().any(|e| {
            from_us(e)
                && e["code"] == "verified"
                && e["attributes"]["new_value"].as_f64() == Some(glue)
        });
        let out_of_range = speed_events.iter().any(|e| {
            from_us(e)
                && e["code"] == "refused"
                && e["attributes"]["new_value"] == 650
                && e["attributes"]["refusal"]
                    .as_str()
                    .is_some_and(|r| r.starts_with("envelope_"))
        });
        if verified && out_of_range {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no OPC UA command events of {operator_name}: {glue_events:#?}\n{speed_events:#?}"
        );
        // Polling the event store, which commits shortly after the command ends.
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn third_party_clients_browse_read_subscribe_and_write_through_the_command_path() {
    let script = |name: &str| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/peers")
            .join(name)
    };
    let asyncua = ironplant_testkit::python("asyncua", "asyncua (PyPI)");
    let node = ironplant_testkit::node_module("opcua-node", "node-opcua", "node-opcua (npm)");
    if asyncua.is_none() && node.is_none() {
        return;
    }
    let started = Instant::now();
    let started_at = Timestamp(Timestamp::now().0 - 1_000_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let demo = Demo::start(dir.path(), &data);
    let banner = demo.banner();
    let line = |marker: &str| {
        banner
            .iter()
            .find(|l| l.contains(marker))
            .unwrap_or_else(|| panic!("no {marker:?} in the banner: {banner:#?}"))
            .clone()
    };
    let opcua = line("OPC UA:");
    let url = opcua
        .split_whitespace()
        .find(|w| w.starts_with("opc.tcp://"))
        .unwrap_or_else(|| panic!("no URL: {opcua}"))
        .to_owned();
    assert!(
        opcua.contains("SignAndEncrypt") && opcua.contains("writes through the command path"),
        "{opcua}"
    );
    let http = line("HTTP API:");
    let http = http
        .split_whitespace()
        .find_map(|w| w.strip_prefix("https://"))
        .and_then(|w| w.split('/').next())
        .unwrap_or_else(|| panic!("no address: {http}"))
        .to_owned();
    let kept = std::fs::read_to_string(data.join("security/initial-admin-password"))
        .expect("the initial admin password file");
    let admin_password = kept
        .lines()
        .find_map(|l| l.strip_prefix("password:"))
        .expect("a password line")
        .trim()
        .to_owned();
    eprintln!(
        "demo up after {:.1} s: {url}",
        started.elapsed().as_secs_f64()
    );
    let plant = Plant {
        api: common::api_for(&http, &data, ironplant_security::Role::Admin),
        data,
        url,
        admin_password,
        started: started_at,
        glue: Mutex::new(()),
    };

    let mut peers = Vec::new();
    if let Some(python) = asyncua {
        peers.push((
            Peer {
                name: "asyncua",
                program: python,
                script: script("opcua_client.py"),
                node_path: None,
                url: plant.url.clone(),
                pki: dir.path().join("pki-asyncua"),
            },
            131.25,
        ));
    }
    if let Some((node, modules)) = node {
        peers.push((
            Peer {
                name: "node-opcua",
                program: node,
                script: script("opcua_node_client.js"),
                node_path: Some(modules),
                url: plant.url.clone(),
                pki: dir.path().join("pki-node"),
            },
            168.75,
        ));
    }
    std::thread::scope(|s| {
        for (peer, glue) in &peers {
            let plant = &plant;
            s.spawn(move || {
                let t0 = Instant::now();
                exercise(plant, peer, *glue);
                eprintln!(
                    "{}: every step passed in {:.1} s",
                    peer.name,
                    t0.elapsed().as_secs_f64()
                );
            });
        }
    });
    eprintln!("total {:.1} s", started.elapsed().as_secs_f64());
    drop(demo);
}
