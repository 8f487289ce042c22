//! Security of the running binary, seen from outside with third-party peers: paho-mqtt over
//! TLS (anonymous refused, enrolled device allowed within its ACL, wildcard and foreign-topic
//! attempts refused and audited, revocation without restart), curl against HTTPS, and the
//! CLI (`device`, `user`, `token`, `audit verify` on an edited log, and against witnessed
//! heads after a rollback and a wipe).

mod common;

use common::pump;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value as Json;

const BIN: &str = env!("CARGO_BIN_EXE_ironplant");

fn python() -> Option<PathBuf> {
    ironplant_testkit::python("paho.mqtt", "paho-mqtt")
}

/// `ironplant serve` on ephemeral ports in `dir/data`; killed on drop.
struct Platform {
    child: Child,
    lines: mpsc::Receiver<String>,
    _errs: mpsc::Receiver<String>,
}

impl Platform {
    fn start(dir: &Path) -> Platform {
        Self::start_with(dir, &[])
    }

    fn start_with(dir: &Path, extra: &[&str]) -> Platform {
        Self::start_env(dir, extra, &[])
    }

    fn start_env(dir: &Path, extra: &[&str], env: &[(&str, &Path)]) -> Platform {
        Self::start_config(dir, "[sparkplug]\nhost_id = \"sec\"\n", extra, env)
    }

    fn start_config(dir: &Path, config: &str, extra: &[&str], env: &[(&str, &Path)]) -> Platform {
        std::fs::write(dir.join("p.toml"), config).expect("config");
        let mut child = Command::new(BIN)
            .args(["serve", "--config", "p.toml", "--http", "127.0.0.1:0"])
            .args(["--mqtts", "127.0.0.1:0", "--data-dir", "data"])
            .args(extra)
            .envs(env.iter().copied())
            .env("NO_COLOR", "1")
            .current_dir(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start ironplant serve");
        let lines = pump(child.stdout.take().expect("stdout"));
        let errs = pump(child.stderr.take().expect("stderr"));
        Platform {
            child,
            lines,
            _errs: errs,
        }
    }

    /// The first `127.0.0.1:PORT` of the stdout line starting with `marker`.
    fn address_after(&self, marker: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let line = self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|_| panic!("no line with {marker:?}"));
            if line.trim_start().starts_with(marker) {
                let word = line
                    .split_whitespace()
                    .find(|w| w.contains("127.0.0.1:"))
                    .expect("an address");
                let addr = word.rsplit("://").next().unwrap_or(word);
                return addr.split('/').next().expect("host:port").to_owned();
            }
        }
    }
}

impl Drop for Platform {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn cli(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .args(["--data-dir", "data"])
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .output()
        .expect("run ironplant")
}

fn cli_ok(dir: &Path, args: &[&str]) -> String {
    let out = cli(dir, args);
    assert!(
        out.status.success(),
        "ironplant {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a paho scenario; returns its JSON lines (the last must say ok).
fn paho(py: &Path, args: &[&str]) -> Vec<Json> {
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/peers/paho_security.py");
    let out = Command::new("timeout")
        .arg("30")
        .arg(py)
        .arg(script)
        .args(args)
        .output()
        .expect("run python");
    let lines: Vec<Json> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    assert!(
        out.status.success() && lines.last().is_some_and(|l| l["ok"] == true),
        "{args:?}: {lines:?}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    lines
}

fn step<'a>(lines: &'a [Json], name: &str) -> &'a Json {
    lines
        .iter()
        .find(|l| l["step"] == name)
        .unwrap_or_else(|| panic!("no step {name}: {lines:?}"))
}

fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn mqtt_over_tls_refuses_anonymous_enforces_the_acl_and_revocation() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let platform = Platform::start(d);
    let mqtt = platform.address_after("MQTT/TLS:");
    let (host, port) = mqtt.rsplit_once(':').expect("host:port");
    let ca = d.join("data/security/ca/ca.crt");
    let ca = ca.to_str().expect("UTF-8");

    // Anonymous: TLS works (the server is verified against our CA), CONNECT is refused.
    let anon = paho(&py, &["connect", host, port, ca]);
    assert_eq!(anon[0]["kind"], "connack", "{anon:?}");
    assert_eq!(anon[0]["what"], "Not authorized", "{anon:?}");
    // A wrong password is refused as such.
    let bad = paho(&py, &["login", host, port, ca, "admin", "not-the-password"]);
    assert_eq!(bad[0]["what"], "Bad user name or password", "{bad:?}");

    // An enrolled device (CLI, while the platform runs) connects with its certificate.
    let enrolled = cli_ok(d, &["device", "enroll", "press-4", "--out", "press-4"]);
    assert!(enrolled.contains("CA fingerprint (SHA-256):"), "{enrolled}");
    let crt = d.join("press-4/press-4.crt");
    let key = d.join("press-4/press-4.key");
    let (crt, key) = (crt.to_str().expect("UTF-8"), key.to_str().expect("UTF-8"));
    let run = paho(&py, &["device", host, port, ca, crt, key, "press-4"]);
    assert_eq!(step(&run, "connect")["what"], "Success");
    assert_eq!(step(&run, "subscribe own")["granted"][0], "Granted QoS 1");
    // Wildcards do not widen access: `#` and a shared subscription over all devices are refused.
    assert_eq!(step(&run, "subscribe #")["granted"][0], "Not authorized");
    assert_eq!(
        step(&run, "subscribe $share/g/devices/#")["granted"][0],
        "Not authorized"
    );
    assert_eq!(step(&run, "publish own")["ack"], "Success");
    assert_eq!(
        step(&run, "received own")["message"],
        serde_json::json!(["devices/press-4/hello", "hi"])
    );
    // Publishing as another Sparkplug node is refused with Not authorized (0x87) ...
    assert_eq!(step(&run, "publish foreign")["ack"], "Not authorized");
    // ... and the denial is in the audit log.
    let log = d.join("data/security/audit/audit.log");
    let denial = wait_for("the ACL denial in the audit log", || {
        std::fs::read_to_string(&log).ok()?.lines().find_map(|l| {
            let r: Json = serde_json::from_str(l).ok()?;
            let text = r.to_string();
            (text.contains("acl_denied")
                && text.contains("spBv1.0/bottling/NDATA/other-node")
                && text.contains("press-4"))
            .then_some(r)
        })
    });
    assert!(denial.to_string().contains("publish"), "{denial}");

    // Revoked from the CLI while the platform runs: refused at the next connect, no restart.
    let revoked = cli_ok(d, &["device", "revoke", "press-4"]);
    assert!(revoked.contains("Revoked device `press-4`"), "{revoked}");
    let again = paho(&py, &["connect", host, port, ca, crt, key]);
    assert_ne!(again[0]["what"], "Success", "{again:?}");
    let list = cli_ok(d, &["device", "list"]);
    let row = list
        .lines()
        .find(|l| l.starts_with("press-4"))
        .unwrap_or_else(|| panic!("{list}"));
    assert!(row.contains("revoked"), "{list}");
    assert!(list.starts_with("NAME"), "{list}");
}

#[test]
fn curl_reaches_the_https_api_with_the_ca_and_plain_http_gets_nothing() {
    let have = Command::new("curl").arg("--version").output().is_ok();
    if !common::peer_available("curl", have) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let platform = Platform::start(d);
    let http = platform.address_after("HTTP API:");
    let ca = d.join("data/security/ca/ca.crt");
    let token = cli_ok(
        d,
        &[
            "token",
            "create",
            "--user",
            "admin",
            "--role",
            "viewer",
            "--expires",
            "1h",
        ],
    );
    let token = token.trim();
    assert!(
        token.starts_with("ipt_"),
        "only the token on stdout: {token:?}"
    );
    let curl = |args: &[&str]| {
        Command::new("curl")
            .args(["-sS", "--max-time", "10", "-o", "-", "-w", "\n%{http_code}"])
            .args(args)
            .output()
            .expect("run curl")
    };
    let ok = curl(&[
        "--cacert",
        ca.to_str().expect("UTF-8"),
        "-H",
        &format!("Authorization: Bearer {token}"),
        &format!("https://{http}/healthz"),
    ]);
    let text = String::from_utf8_lossy(&ok.stdout);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let (body, code) = text.rsplit_once('\n').expect("code line");
    assert_eq!(code, "200", "{text}");
    let health: Json = serde_json::from_str(body).expect("JSON");
    assert_eq!(health["status"], "ok");
    // Without our CA, curl refuses the certificate (exit 60).
    let untrusted = curl(&[&format!("https://{http}/healthz")]);
    assert_eq!(untrusted.status.code(), Some(60), "{untrusted:?}");
    // Plain HTTP to the HTTPS port gets no HTTP answer.
    let plain = curl(&[&format!("http://{http}/healthz")]);
    assert!(!plain.status.success(), "{plain:?}");
    assert!(
        !String::from_utf8_lossy(&plain.stdout).contains("\"status\""),
        "{plain:?}"
    );
}

#[test]
fn cli_manages_users_and_tokens_and_audit_verify_names_an_edited_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    std::fs::create_dir(d.join("data")).expect("data dir");
    let password = cli_ok(d, &["user", "add", "alice", "--role", "operator"]);
    assert_eq!(
        password.trim().len(),
        24,
        "one generated password: {password:?}"
    );
    let again = cli_ok(d, &["user", "passwd", "alice"]);
    assert_ne!(again.trim(), password.trim());
    let users = cli_ok(d, &["user", "list"]);
    assert!(
        users
            .lines()
            .any(|l| l.starts_with("alice") && l.contains("operator")),
        "{users}"
    );
    // A token above the user's role is refused, with a reason.
    let out = cli(
        d,
        &["token", "create", "--user", "alice", "--role", "admin"],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("error: cannot create a token for \"alice\""),
        "{err}"
    );

    let verified = cli_ok(d, &["audit", "verify"]);
    assert!(verified.contains(": ok"), "{verified}");
    // One byte changed in the record of alice's creation: verify fails and names it.
    let log = d.join("data/security/audit/audit.log");
    let mut bytes = std::fs::read(&log).expect("read log");
    let at = bytes
        .windows(7)
        .position(|w| w == b"\"alice\"")
        .expect("a record names alice")
        + 1;
    let index = bytes[..at].iter().filter(|&&b| b == b'\n').count();
    bytes[at] = b'A';
    std::fs::write(&log, bytes).expect("write log");
    let out = cli(d, &["audit", "verify"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("audit record {index}:")), "{err}");
}

#[test]
fn a_bring_your_own_server_certificate_is_served() {
    let have = Command::new("curl").arg("--version").output().is_ok()
        && Command::new("openssl").arg("version").output().is_ok();
    if !common::peer_available("curl and openssl", have) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    // A certificate from "the company's own PKI" (self-signed here), not our CA.
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "2", "-subj", "/CN=plant.example"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .args(["-keyout", "own.key", "-out", "own.crt"])
        .current_dir(d)
        .output()
        .expect("run openssl");
    assert!(made.status.success(), "{made:?}");
    let platform = Platform::start_with(d, &["--tls-cert", "own.crt", "--tls-key", "own.key"]);
    let http = platform.address_after("HTTP API:");
    let curl = |ca: &Path| {
        Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "10",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
            ])
            .arg("--cacert")
            .arg(ca)
            .arg(format!("https://{http}/healthz"))
            .output()
            .expect("run curl")
    };
    let own = curl(&d.join("own.crt"));
    assert_eq!(
        String::from_utf8_lossy(&own.stdout),
        "200",
        "{}",
        String::from_utf8_lossy(&own.stderr)
    );
    // The built-in CA did not sign what is served now.
    let builtin = curl(&d.join("data/security/ca/ca.crt"));
    assert_eq!(builtin.status.code(), Some(60), "{builtin:?}");
}

#[test]
fn a_separate_simulator_joins_with_its_enrolled_edge_node() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let platform = Platform::start(d);
    let http = platform.address_after("HTTP API:");
    let mqtts = platform.address_after("MQTT/TLS:");
    cli_ok(
        d,
        &[
            "device", "enroll", "sim-edge", "--role", "device", "--out", "edge",
        ],
    );
    let mut sim = Command::new(BIN)
        .args(["simulate", "--listen", "127.0.0.1:0"])
        .args(["--sparkplug-broker", &mqtts, "--sparkplug-bundle", "edge"])
        .current_dir(d)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start ironplant simulate");
    let api = common::api_for(&http, &d.join("data"), ironplant_security::Role::Viewer);
    let found = wait_for("the edge node's tags", || {
        let (status, body) = common::try_get(&api, "/api/v1/tags?prefix=bottling/sim-edge/line1");
        let v: Json = serde_json::from_str(&body).ok()?;
        let tags = v["tags"].as_array()?;
        (status == 200 && tags.len() >= 5).then_some(tags.len())
    });
    let _ = sim.kill();
    let _ = sim.wait();
    assert!(found >= 5);
}

/// The token's id: the middle part of `ipt_<id>_<secret>`.
fn token_id(token: &str) -> &str {
    token
        .trim()
        .strip_prefix("ipt_")
        .and_then(|r| r.split('_').next())
        .expect("a token")
}

/// Issue 10's attacks, re-tried with paho-mqtt over TLS against the running binary: a will on
/// another node's topic, another device's client id, taking over a connection of another
/// identity, revocation reaching a live connection, and a tag-prefix limit over MQTT.
#[test]
fn wills_client_ids_takeovers_revocation_and_prefix_limits_over_mqtt() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    std::fs::create_dir(d.join("data")).expect("data dir");
    // A viewer limited to one line by the configuration; an operator without limits.
    let limited = cli_ok(d, &["user", "add", "lina", "--role", "viewer"]);
    let operator = cli_ok(d, &["user", "add", "olga", "--role", "operator"]);
    // An engineer may publish anywhere (default ACL) but on the platform's own topics.
    let engineer = cli_ok(d, &["user", "add", "erin", "--role", "engineer"]);
    let (limited, operator, engineer) = (limited.trim(), operator.trim(), engineer.trim());
    std::fs::write(
        d.join("p.toml"),
        "[sparkplug]\nhost_id = \"sec\"\n\n[security.tag_scopes.lina]\nread = [\"acme/lyon/line1\"]\n",
    )
    .expect("config");
    let mut child = Command::new(BIN)
        .args(["serve", "--config", "p.toml", "--http", "127.0.0.1:0"])
        .args(["--mqtts", "127.0.0.1:0", "--data-dir", "data"])
        .env("NO_COLOR", "1")
        .current_dir(d)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ironplant serve");
    let platform = Platform {
        lines: pump(child.stdout.take().expect("stdout")),
        _errs: pump(child.stderr.take().expect("stderr")),
        child,
    };
    let mqtt = platform.address_after("MQTT/TLS:");
    let (host, port) = mqtt.rsplit_once(':').expect("host:port");
    let ca = d.join("data/security/ca/ca.crt");
    let ca = ca.to_str().expect("UTF-8");
    cli_ok(d, &["device", "enroll", "press-4", "--out", "press-4"]);
    let crt = d.join("press-4/press-4.crt");
    let key = d.join("press-4/press-4.key");
    let (crt, key) = (crt.to_str().expect("UTF-8"), key.to_str().expect("UTF-8"));
    let connack = |lines: &[Json]| {
        step(lines, "connect")["what"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    };

    // 1. Wills: a viewer's will on the host's STATE, a device's will as another node or on a
    //    UNS tag path: CONNECT refused with Not authorized (0x87), before anything is kept.
    for will in [
        "spBv1.0/STATE/sec",
        "$SYS/broker/uptime",
        "acme/lyon/line1/filler/speed",
    ] {
        let r = paho(&py, &["as", host, port, ca, "", will, "lina", limited]);
        assert_eq!(connack(&r), "Not authorized", "viewer will on {will}");
    }
    for will in [
        "spBv1.0/bottling/NDEATH/sim-edge",
        "acme/lyon/line1/filler/speed",
    ] {
        let r = paho(&py, &["as", host, port, ca, "press-4", will, crt, key]);
        assert_eq!(connack(&r), "Not authorized", "device will on {will}");
    }
    // Its own node's death certificate is its to set.
    let r = paho(
        &py,
        &[
            "as",
            host,
            port,
            ca,
            "press-4",
            "spBv1.0/g/NDEATH/press-4",
            crt,
            key,
        ],
    );
    assert_eq!(connack(&r), "Success");
    // Events are the platform's: nobody forges one, not even an engineer who may publish on
    // `#` (a will on a free topic is accepted, so the refusal is the reservation's).
    for will in [
        "_events/alarm/acme/lyon/line1/filler/temp",
        "_events/security/_platform",
        "_cmd_reply/acme/lyon/bottling/line1/filler/plc/speed_setpoint",
    ] {
        let r = paho(&py, &["as", host, port, ca, "", will, "erin", engineer]);
        assert_eq!(connack(&r), "Not authorized", "engineer will on {will}");
    }
    let r = paho(
        &py,
        &[
            "as",
            host,
            port,
            ca,
            "",
            "notes/erin/status",
            "erin",
            engineer,
        ],
    );
    assert_eq!(connack(&r), "Success", "engineer will on a free topic");

    // 2. A device may use only its own client ids.
    let r = paho(&py, &["as", host, port, ca, "sim-edge", "-", crt, key]);
    assert_eq!(connack(&r), "Client identifier not valid");

    // 3. The device holds `press-4`; the operator (logged in, but someone else) tries to take
    //    it over: refused, and the holder stays connected.
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/peers/paho_security.py");
    let mut holder = Command::new(&py)
        .arg(&script)
        .args(["hold", host, port, ca, "press-4", "4", crt, key])
        .stdout(Stdio::piped())
        .spawn()
        .expect("run the holder");
    let held = pump(holder.stdout.take().expect("stdout"));
    let first = held
        .recv_timeout(Duration::from_secs(10))
        .expect("holder connected");
    assert!(first.contains("\"Success\""), "{first}");
    let r = paho(
        &py,
        &["as", host, port, ca, "press-4", "-", "olga", operator],
    );
    assert_eq!(
        connack(&r),
        "Not authorized",
        "takeover by another identity"
    );
    let closed = held
        .recv_timeout(Duration::from_secs(10))
        .expect("holder's end");
    assert!(
        closed.contains("still connected"),
        "the holder was kicked: {closed}"
    );
    let _ = holder.wait();

    // 4. Revocation: a token's live connection closes within a second of `token revoke`.
    let token = cli_ok(d, &["token", "create", "--user", "olga", "--expires", "1h"]);
    let mut live = Command::new(&py)
        .arg(&script)
        .args(["hold", host, port, ca, "dash-1", "10", "olga", token.trim()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("run the token client");
    let lines = pump(live.stdout.take().expect("stdout"));
    let first = lines
        .recv_timeout(Duration::from_secs(10))
        .expect("connected");
    assert!(first.contains("\"Success\""), "{first}");
    cli_ok(d, &["token", "revoke", token_id(&token)]);
    let revoked_at = Instant::now();
    let closed = lines.recv_timeout(Duration::from_secs(10)).expect("closed");
    let took = revoked_at.elapsed();
    assert!(closed.contains("Not authorized"), "{closed}");
    assert!(took < Duration::from_millis(1500), "closed after {took:?}");
    let _ = live.wait();

    // 5. One policy: the viewer limited to line 1 over REST is limited to it over MQTT.
    let r = paho(
        &py,
        &[
            "subscribe",
            host,
            port,
            ca,
            "lina",
            limited,
            "#",
            "acme/#",
            "spBv1.0/#",
            "acme/lyon/line1/#",
        ],
    );
    let granted: Vec<&str> = r
        .iter()
        .filter(|l| l["step"] == "subscribe")
        .map(|l| l["granted"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        granted,
        [
            "Not authorized",
            "Not authorized",
            "Not authorized",
            "Granted QoS 1"
        ]
    );

    // Every refusal is in the audit log.
    let log = d.join("data/security/audit/audit.log");
    wait_for("the refusals in the audit log", || {
        let text = std::fs::read_to_string(&log).ok()?;
        let has = |s: &str| text.contains(s);
        (has("\"will\"")
            && has("\"client_id\"")
            && has("\"takeover\"")
            && has("\"revoked_disconnect\""))
        .then_some(())
    });
}

/// The platform appends its signed audit head to the witness file at start and at shutdown;
/// `audit head` prints one too. After the audit directory is rolled back to an older copy,
/// plain `audit verify` passes (the copy is consistent in itself) but `--witness` names the
/// rollback; a deleted log is a wipe with or without a witness.
#[test]
fn audit_verify_with_a_witness_catches_a_rollback_and_a_wipe() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let witness = d.join("witness.jsonl");
    let p = Platform::start_env(d, &[], &[("IRONPLANT_AUDIT_WITNESS", &witness)]);
    p.address_after("HTTP API:");
    let mqtts = p.address_after("MQTT/TLS:");
    let lines = |path: &Path| -> usize {
        std::fs::read_to_string(path)
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };
    wait_for("the first head in the witness file", || {
        (lines(&witness) >= 1).then_some(())
    });
    assert_eq!(common_mode(&witness), 0o600);
    // The same signed head, retained on $SYS for an admin's client (and a bridge).
    let have = Command::new("mosquitto_sub").arg("--help").output().is_ok();
    if common::peer_available("mosquitto_sub (Debian mosquitto-clients)", have) {
        let token = cli_ok(
            d,
            &["token", "create", "--user", "admin", "--expires", "1h"],
        );
        let (host, port) = mqtts.rsplit_once(':').expect("host:port");
        let out = Command::new("timeout")
            .args(["20", "mosquitto_sub", "-h", host, "-p", port])
            .args(["--cafile", "data/security/ca/ca.crt", "-u", "admin"])
            .args(["-P", token.trim(), "-t", "$SYS/ironplant/audit/head"])
            .args(["-C", "1", "-W", "15"])
            .current_dir(d)
            .output()
            .expect("run mosquitto_sub");
        let got = String::from_utf8_lossy(&out.stdout);
        let first = std::fs::read_to_string(&witness).expect("witness");
        assert_eq!(
            got.trim(),
            first.lines().next().unwrap_or_default(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut p = p;
    assert!(Command::new("kill")
        .args(["-TERM", &p.child.id().to_string()])
        .status()
        .expect("kill")
        .success());
    wait_for("exit after SIGTERM", || {
        p.child.try_wait().expect("try_wait")
    });
    assert!(lines(&witness) >= 2, "a last head at shutdown");
    let verified = cli_ok(d, &["audit", "verify", "--witness", "witness.jsonl"]);
    assert!(verified.contains("holds all"), "{verified}");

    // Keep a copy of the audit directory, go on, witness the new head.
    let audit = d.join("data/security/audit");
    let old = d.join("old-audit");
    std::fs::create_dir(&old).expect("mkdir");
    for f in ["audit.log", "head.json"] {
        std::fs::copy(audit.join(f), old.join(f)).expect("copy");
    }
    cli_ok(d, &["user", "add", "mallory", "--role", "viewer"]);
    let head = cli_ok(d, &["audit", "head"]);
    assert_eq!(head.lines().count(), 1, "{head}");
    let statement: Json = serde_json::from_str(head.trim()).expect("one JSON line");
    for field in ["seq", "hash", "ts", "sig"] {
        assert!(!statement[field].is_null(), "{field} in {head}");
    }
    std::fs::write(d.join("latest.jsonl"), &head).expect("write");

    // Roll back.
    for f in ["audit.log", "head.json"] {
        std::fs::copy(old.join(f), audit.join(f)).expect("copy");
    }
    cli_ok(d, &["audit", "verify"]);
    let out = cli(
        d,
        &[
            "audit",
            "verify",
            "--witness",
            "witness.jsonl",
            "--witness",
            "latest.jsonl",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("audit record {}: is missing", statement["seq"]))
            && err.contains("rolled back"),
        "{err}"
    );
    // The same statement on stdin (as from `mosquitto_sub -t '$SYS/ironplant/audit/head'`).
    let mut child = Command::new(BIN)
        .args(["audit", "verify", "--witness", "-", "--data-dir", "data"])
        .current_dir(d)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("run ironplant");
    std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), head.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("rolled back"));

    // Wiped: the log deleted. Without a witness too.
    std::fs::remove_file(audit.join("audit.log")).expect("rm");
    let out = cli(d, &["audit", "verify"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("wiped"), "{err}");
}

fn common_mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

/// `acl add|list|remove` on the data directory: rules are checked before they are written,
/// numbered for removal, audited; configured rules cannot be removed from the CLI.
#[test]
fn acl_rules_are_added_listed_and_removed_from_the_cli() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    std::fs::create_dir(d.join("data")).expect("data dir");
    let out = cli(d, &["acl", "add", "role:viewer deny subscribe"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("allow|deny publish|subscribe|both"), "{err}");
    cli_ok(
        d,
        &[
            "acl",
            "add",
            "role:viewer deny subscribe acme/lyon/recipes/#",
        ],
    );
    cli_ok(
        d,
        &["acl", "add", "device:press-4 allow publish plant/%u/#"],
    );
    let list = cli_ok(d, &["acl", "list"]);
    assert!(
        list.contains("  1  acl add  role:viewer deny subscribe acme/lyon/recipes/#"),
        "{list}"
    );
    assert!(
        list.contains("  2  acl add  device:press-4 allow publish plant/%u/#"),
        "{list}"
    );
    assert!(list.contains("config   role:admin allow both #"), "{list}");
    let out = cli(d, &["acl", "remove", "7"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("there is no added rule 7"));
    cli_ok(d, &["acl", "remove", "1"]);
    let list = cli_ok(d, &["acl", "list"]);
    assert!(!list.contains("recipes"), "{list}");
    assert!(list.contains("  1  acl add  device:press-4"), "{list}");
    let log = std::fs::read_to_string(d.join("data/security/audit/audit.log")).expect("log");
    assert!(log.contains("acl add: role:viewer deny subscribe acme/lyon/recipes/#"));
    assert!(log.contains("acl remove: role:viewer deny subscribe acme/lyon/recipes/#"));
}

const SIGNED_INGEST: &str = r#"
[sparkplug]
host_id = "sec"

[[ingest.json]]
name = "telemetry"
topic = "devices/+/telemetry"
signed = "required"
timestamp = { pointer = "/ts", format = "unix_ms" }

[[ingest.json.field]]
pointer = "/apower"
path = "acme/lyon/office/{1}/power"
unit = "W"
"#;

/// Signed provenance end to end: an enrolled device's bundle has a signing key; a payload
/// signed with it (`ironplant device sign`) and published by Debian's `mosquitto_pub` over TLS
/// with the device's certificate is mapped; the same envelope with its value changed on the way
/// is refused and recorded in the audit log (`signature_refused`).
#[test]
fn a_devices_signed_payload_is_verified_and_a_forged_one_is_audited() {
    let have = Command::new("mosquitto_pub").arg("--help").output().is_ok();
    if !common::peer_available("mosquitto_pub (Debian mosquitto-clients)", have) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let platform = Platform::start_config(d, SIGNED_INGEST, &[], &[]);
    let http = platform.address_after("HTTP API:");
    let mqtt = platform.address_after("MQTT/TLS:");
    let (host, port) = mqtt.rsplit_once(':').expect("host:port");
    cli_ok(d, &["device", "enroll", "plug-7", "--out", "plug-7"]);
    let api = common::api_for(&http, &d.join("data"), ironplant_security::Role::Viewer);
    let topic = "devices/plug-7/telemetry";
    let sign = |ts: i64, w: f64| -> String {
        let out = cli_ok(
            d,
            &[
                "device",
                "sign",
                "--key",
                "plug-7/plug-7.sign.key",
                "--topic",
                topic,
                &format!(r#"{{"ts":{ts},"apower":{w}}}"#),
            ],
        );
        out.trim().to_owned()
    };
    let publish = |payload: &str| {
        let out = Command::new("mosquitto_pub")
            .args([
                "-h",
                host,
                "-p",
                port,
                "--cafile",
                "data/security/ca/ca.crt",
            ])
            .args(["--cert", "plug-7/plug-7.crt", "--key", "plug-7/plug-7.key"])
            .args(["-i", "plug-7", "-q", "1", "-t", topic, "-m", payload])
            .current_dir(d)
            .output()
            .expect("run mosquitto_pub");
        assert!(
            out.status.success(),
            "mosquitto_pub: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let power = |want: f64| {
        wait_for(&format!("power = {want}"), || {
            let (status, body) =
                common::try_get(&api, "/api/v1/tags/acme/lyon/office/plug-7/power");
            let v: Json = serde_json::from_str(&body).ok()?;
            (status == 200 && v["value"].as_f64() == Some(want)).then_some(())
        })
    };
    // Stamped now: the platform refuses times far from its clock.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_millis() as i64;
    publish(&sign(now_ms, 12.5));
    power(12.5);

    // Changed on the way: refused and audited; the next genuine one is mapped.
    let forged = sign(now_ms + 1000, 13.0)
        .replace("13.0", "93.0")
        .replace(":13", ":93");
    assert!(forged.contains("93"), "{forged}");
    publish(&forged);
    publish(&sign(now_ms + 2000, 14.0));
    power(14.0);
    let log = d.join("data/security/audit/audit.log");
    let record = wait_for("the refused signature in the audit log", || {
        std::fs::read_to_string(&log).ok()?.lines().find_map(|l| {
            let r: Json = serde_json::from_str(l).ok()?;
            (r["kind"] == "signature_refused").then_some(r)
        })
    });
    assert_eq!(record["signer"], "plug-7", "{record}");
    assert_eq!(record["topic"], topic, "{record}");
    assert_eq!(record["principal"], "device:plug-7", "{record}");
    drop(platform);
}
