//! The command path on the platform, against the simulated bottling line over Modbus TCP
//! (`ironplant-sim`): a command submitted to the runtime is written by the Modbus device task
//! and verified by read-back, refusals are audited; an MQTT command from paho-mqtt (a
//! third-party client) gets its answers with its Correlation Data (MQTT 5) or on the reply
//! topic (3.1.1), a two-person confirmation over MQTT needs the confirmer's role, a retained
//! command never runs; a rogue write by a second Modbus master (the simulator's attack, or
//! pymodbus) raises a critical security event within two polls and is written back; the
//! expected value survives a restart.
//!
//! Everything waits on events or samples with a deadline, never on sleeps.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ironplant_control::command::{Authorisation, CommandRequest, Denial, Origin, Requester, Role};
use ironplant_core::{Event, EventFilter, EventKind, EventSubscription, TagPath, Value};
use ironplant_mqtt::{Broker, BrokerConfig};
use ironplant_runtime::commands::CommandResult;
use ironplant_runtime::{Platform, Runtime};
use tokio::net::TcpListener;
use tokio::time::Instant;

const SPEED: &str = "acme/lyon/bottling/line1/filler/plc/speed_setpoint";
const LEVEL: &str = "acme/lyon/bottling/line1/tank/plc/level_setpoint";
const RESET: &str = "acme/lyon/bottling/line1/filler/plc/fault_reset";
const PUMP: &str = "acme/lyon/bottling/line1/tank/plc/pump_enable";

const COMMANDS: &str = r#"
[mqtt]
uns_prefix = "plant"

[[interlock]]
name = "filler_slow"
expr = "`acme/lyon/bottling/line1/filler/plc/speed_setpoint` <= 300"
message = "no level change while the filler runs fast"

[[interlock]]
name = "broken"
expr = "`acme/lyon/bottling/line1/tank/plc/no_such_tag` > 1"
message = "refers to a tag that does not exist"

[[command]]
tag = "acme/lyon/bottling/line1/filler/plc/speed_setpoint"
min = 0
max = 600
max_step = 200
on_unauthorised_change = "restore"

[[command]]
tag = "acme/lyon/bottling/line1/tank/plc/level_setpoint"
interlocks = ["filler_slow"]

[[command]]
tag = "acme/lyon/bottling/line1/filler/plc/fault_reset"
interlocks = ["broken"]

[[command]]
tag = "acme/lyon/bottling/line1/tank/plc/pump_enable"
two_person = { role = "engineer", timeout = "60s" }
"#;

/// The shipped example's plant pointed at the simulator at `addr`, polled every 100 ms, with
/// the command policy above.
fn config(addr: std::net::SocketAddr) -> ironplant_core::config::Config {
    config_with(addr, COMMANDS)
}

fn config_with(addr: std::net::SocketAddr, commands: &str) -> ironplant_core::config::Config {
    let example = include_str!("../../../examples/bottling.toml");
    let plant = example
        .rsplit_once("\n[[sparkplug.asset]]")
        .map_or(example, |(plant, _)| plant)
        .replace("127.0.0.1:5020", &addr.to_string())
        .replace("poll_interval = \"1s\"", "poll_interval = \"100ms\"");
    ironplant_runtime::config::parse("bottling.toml", &format!("{plant}{commands}"))
        .unwrap_or_else(|e| panic!("{e}"))
}

fn tag(p: &str) -> TagPath {
    TagPath::parse(p).expect("a valid path")
}

fn request(path: &str, value: Value, who: Requester) -> CommandRequest {
    CommandRequest {
        tag: tag(path),
        info: None,
        value,
        requester: who,
        authorisation: Authorisation::Allowed,
        reason: "integration".to_owned(),
        origin: Origin::Rest,
    }
}

fn alice() -> Requester {
    Requester::user("alice", Role::Operator, "s-alice")
}

/// Waits (10 s at most) until `tag` has a Good sample equal to `want`.
async fn wait_value(rt: &Runtime, path: &str, want: &Value) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let id = rt.namespace.lookup(path).expect("the tag").id;
    loop {
        if rt
            .bus
            .current(id)
            .is_some_and(|s| s.quality.is_good() && &s.value == want)
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{path} did not show {want} within 10 s (now {:?})",
            rt.bus.current(id)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Events until `pred` holds for one (10 s at most); returns every event seen.
async fn until_event(sub: &mut EventSubscription, pred: impl Fn(&Event) -> bool) -> Vec<Event> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    loop {
        let e = tokio::time::timeout_at(deadline, sub.recv())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no such event within 10 s; seen: {:?}",
                    seen.iter()
                        .map(|e: &Event| format!("{}/{} {}", e.kind.as_str(), e.code, e.message))
                        .collect::<Vec<_>>()
                )
            })
            .expect("the event bus is open");
        let e = Arc::unwrap_or_clone(e);
        let done = pred(&e);
        seen.push(e);
        if done {
            return seen;
        }
    }
}

fn is(e: &Event, kind: EventKind, code: &str) -> bool {
    e.kind == kind && &*e.code == code
}

async fn simulator() -> (
    std::net::SocketAddr,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    (addr, tokio::spawn(ironplant_sim::run(listener, 7)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_are_decided_written_verified_and_audited() {
    let (addr, sim) = simulator().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let platform = Platform::builder(config(addr), Some(dir.path()))
        .start()
        .expect("platform starts");
    let rt = platform.runtime.clone();
    let mut events = rt.events.subscribe("test", 4096, EventFilter::all());
    let audited = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let a = audited.clone();
    rt.commands.set_audit_sink(Box::new(move |r| {
        a.lock().push((r.actor.clone(), r.result.code()))
    }));
    wait_value(&rt, SPEED, &Value::Int(400)).await;
    let c = &rt.commands;

    // Accepted, written over Modbus, verified by the device's read-back.
    match c.submit(request(SPEED, Value::Int(450), alice())).await {
        CommandResult::Verified { value, .. } => assert_eq!(value, Value::Int(450)),
        other => panic!("expected verified, got {other:?}"),
    }
    wait_value(&rt, SPEED, &Value::Int(450)).await;

    // Refused: the policy's verdict, the envelope, an interlock nobody evaluates yet.
    let mut viewer = request(
        SPEED,
        Value::Int(460),
        Requester::user("vic", Role::Viewer, "v"),
    );
    viewer.authorisation = Authorisation::Denied(Denial::Role {
        role: "viewer".to_owned(),
        permission: "write_setpoints".to_owned(),
    });
    let refused = |r: CommandResult| match r {
        CommandResult::Refused(r) => (r.code(), r.to_string()),
        other => panic!("expected a refusal, got {other:?}"),
    };
    assert_eq!(refused(c.submit(viewer).await).0, "not_authorised");
    let (code, msg) = refused(c.submit(request(SPEED, Value::Int(650), alice())).await);
    assert_eq!(code, "envelope_max");
    assert!(msg.contains("650 is above the maximum 600"), "{msg}");
    // Interlocks: evaluated on the current values; one that holds lets the write through,
    // one that does not compile refuses every write, saying why.
    let (code, msg) = refused(c.submit(request(LEVEL, Value::Float(40.0), alice())).await);
    assert_eq!(code, "interlock");
    assert!(
        msg.contains("interlock filler_slow does not hold")
            && msg.contains(&format!("{SPEED} = 450")),
        "{msg}"
    );
    let verified = |r: CommandResult| match r {
        CommandResult::Verified { value, .. } => value,
        other => panic!("expected verified, got {other:?}"),
    };
    assert_eq!(
        verified(c.submit(request(SPEED, Value::Int(300), alice())).await),
        Value::Int(300)
    );
    wait_value(&rt, SPEED, &Value::Int(300)).await;
    assert_eq!(
        verified(c.submit(request(LEVEL, Value::Float(40.0), alice())).await).as_f64(),
        Some(40.0)
    );
    let (code, msg) = refused(c.submit(request(RESET, Value::Bool(true), alice())).await);
    assert_eq!(code, "interlock_bad_input");
    assert!(
        msg.contains("interlock broken") && msg.contains("does not compile"),
        "{msg}"
    );

    // Each step is an event and went to the audit sink.
    let seen = until_event(&mut events, |e| {
        is(e, EventKind::Command, "refused") && e.message.contains("broken")
    })
    .await;
    let codes: Vec<&str> = seen
        .iter()
        .filter(|e| &*e.source == "command")
        .map(|e| &*e.code)
        .collect();
    let want = [
        ("alice", "accepted"),
        ("alice", "verified"),
        ("vic", "refused"),
        ("alice", "refused"),
        ("alice", "refused"),
        ("alice", "accepted"),
        ("alice", "verified"),
        ("alice", "accepted"),
        ("alice", "verified"),
        ("alice", "refused"),
    ];
    assert_eq!(
        codes,
        want.iter().map(|(_, c)| *c).collect::<Vec<_>>(),
        "{codes:?}"
    );
    assert_eq!(
        audited.lock().clone(),
        want.iter()
            .map(|(a, c)| (a.to_string(), *c))
            .collect::<Vec<_>>()
    );
    platform.shutdown(Duration::from_secs(5)).await;
    sim.abort();
}

/// A rogue write by a second Modbus master: a critical security event within two polls, then
/// the platform writes the commanded value back (through the same checks) and it is verified.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rogue_write_raises_a_security_event_and_is_restored() {
    rogue_scenario(None).await;
}

/// The same with the rogue write made by a third-party Modbus client (pymodbus,
/// tests/peers/modbus_rogue_write.py).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rogue_write_by_pymodbus_raises_a_security_event_and_is_restored() {
    let Some(py) = ironplant_testkit::python("pymodbus", "pymodbus") else {
        return;
    };
    rogue_scenario(Some(py)).await;
}

/// `pymodbus`: the interpreter to run the rogue client with; `None`: the simulator's attack.
async fn rogue_scenario(pymodbus: Option<PathBuf>) {
    let (addr, sim) = simulator().await;
    let platform = Platform::builder(config(addr), None)
        .start()
        .expect("platform starts");
    let rt = platform.runtime.clone();
    let mut events = rt.events.subscribe("test", 4096, EventFilter::all());
    wait_value(&rt, SPEED, &Value::Int(400)).await;
    let c = rt.commands.clone();
    assert!(matches!(
        c.submit(request(SPEED, Value::Int(450), alice())).await,
        CommandResult::Verified { .. }
    ));
    // A poll showing the commanded value ends the window in which older polls are taken as
    // stale, so from here a rogue value is reported at once.
    wait_value(&rt, SPEED, &Value::Int(450)).await;
    match pymodbus {
        None => {
            let w = ironplant_sim::attack::rogue_write(addr, "speed_setpoint", Value::Int(520))
                .await
                .expect("the rogue write");
            assert_eq!(w.read_back, Value::Int(520));
        }
        Some(py) => {
            let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../tests/peers/modbus_rogue_write.py");
            let port = addr.port().to_string();
            let run = tokio::task::spawn_blocking(move || {
                ironplant_testkit::run_script(
                    &py,
                    &script,
                    &["127.0.0.1", &port, "1", "0", "520"],
                    Duration::from_secs(20),
                    "the pymodbus rogue write",
                )
            })
            .await
            .expect("the script runner");
            assert_eq!(run.stdout.trim(), "WROTE 520 READ 520", "{}", run.report);
        }
    }
    let written = Instant::now();
    let seen = until_event(&mut events, |e| {
        is(e, EventKind::Security, "unauthorised_change")
    })
    .await;
    // Two polls of 100 ms, with room for a loaded machine.
    assert!(
        written.elapsed() < Duration::from_secs(2),
        "reported after {:?}",
        written.elapsed()
    );
    let change = seen.last().expect("the finding");
    assert_eq!(change.severity, ironplant_core::Severity::Critical);
    assert_eq!(change.subject.as_ref().map(|s| s.as_str()), Some(SPEED));
    assert_eq!(change.attribute("new_value"), Some(&Value::Int(520)));
    assert_eq!(change.attribute("old_value"), Some(&Value::Int(450)));
    // And an ISA-18.2 alarm of priority 1 on the tag (built in for every writable tag).
    let alarm_id = format!(
        "{}:unauthorised_change",
        ironplant_runtime::alarms::alarm_key(&ironplant_core::TagPath::parse(SPEED).expect("path"))
    );
    let raised = |e: &Event| {
        is(e, EventKind::Alarm, "raised")
            && e.attribute("alarm")
                .map(|v| v.to_string().trim_matches('"').to_owned())
                == Some(alarm_id.clone())
    };
    // Everything seen so far: the restore's `accepted` may come before or after the alarm.
    let mut before = seen.clone();
    if !seen.iter().any(raised) {
        before.extend(until_event(&mut events, raised).await);
    }
    let alarms = rt.alarms.clone().expect("built-in alarms");
    let view = alarms.get(&alarm_id).expect("the alarm");
    assert_eq!(view.priority, 1);
    let seen = until_event(&mut events, |e| {
        is(e, EventKind::Command, "verified") && e.actor.as_deref() == Some("platform")
    })
    .await;
    assert!(
        before.iter().chain(&seen).any(
            |e| is(e, EventKind::Command, "accepted") && e.actor.as_deref() == Some("platform")
        ),
        "the restore was accepted first"
    );
    wait_value(&rt, SPEED, &Value::Int(450)).await;
    // Restored: the condition is gone, the alarm waits for an operator's acknowledgement.
    let deadline = Instant::now() + Duration::from_secs(10);
    while alarms.get(&alarm_id).map(|v| v.state) != Some("rtn_unacknowledged") {
        assert!(
            Instant::now() < deadline,
            "{:?}",
            alarms.get(&alarm_id).map(|v| v.state)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    platform.shutdown(Duration::from_secs(5)).await;
    sim.abort();
}

fn state_file(dir: &Path) -> PathBuf {
    dir.join("commands").join("commands.json")
}

/// The expected value survives a restart: a value changed while the platform was down is an
/// unauthorised change at the first poll, not learned as the new normal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_expected_value_survives_a_restart() {
    let (addr, sim) = simulator().await;
    let dir = tempfile::tempdir().expect("temp dir");
    // Alarm only: the finding must stand, not be restored, for this check.
    let cfg = config_with(
        addr,
        &COMMANDS.replace("on_unauthorised_change = \"restore\"", ""),
    );
    let platform = Platform::builder(cfg.clone(), Some(dir.path()))
        .start()
        .expect("platform starts");
    let rt = platform.runtime.clone();
    wait_value(&rt, SPEED, &Value::Int(400)).await;
    let r = rt
        .commands
        .submit(request(SPEED, Value::Int(350), alice()))
        .await;
    let id = match r {
        CommandResult::Verified { id, .. } => id,
        other => panic!("expected verified, got {other:?}"),
    };
    // On disk before the result was handed out (a crash now would not lose it).
    let saved: serde_json::Value = serde_json::from_slice(
        &std::fs::read(state_file(dir.path())).expect("the state was saved with the result"),
    )
    .expect("JSON");
    platform.shutdown(Duration::from_secs(5)).await;
    let speed = saved["tags"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["tag"] == SPEED))
        .cloned()
        .expect("the speed setpoint is kept");
    assert_eq!(speed["expected"], 350, "{saved}");
    assert_eq!(speed["basis"], "commanded");
    assert_eq!(speed["command"], id.0);

    // While the platform is down, someone writes the PLC.
    let w = ironplant_sim::attack::rogue_write(addr, "speed_setpoint", Value::Int(380))
        .await
        .expect("the rogue write");
    assert_eq!(w.read_back, Value::Int(380));

    let platform = Platform::builder(cfg, Some(dir.path()))
        .start()
        .expect("platform starts again");
    let rt = platform.runtime.clone();
    // The first poll may come before a subscription could exist: read the event store, which
    // keeps every event from the start.
    let store = rt.historian.as_ref().expect("historian").events().clone();
    let deadline = Instant::now() + Duration::from_secs(10);
    let change = loop {
        let q = ironplant_historian::events::EventQuery {
            kinds: vec![EventKind::Security],
            code: Some("unauthorised_change".to_owned()),
            ..ironplant_historian::events::EventQuery::new(
                ironplant_core::Timestamp(0),
                ironplant_core::Timestamp(i64::MAX),
            )
        };
        let page = store.query(&q, &|_| true).expect("query");
        if let Some(e) = page.events.first() {
            break e.event.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no unauthorised_change event stored"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(change.attribute("old_value"), Some(&Value::Int(350)));
    // The audit sink set after the start still gets the records made before it.
    let audited = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let a = audited.clone();
    rt.commands
        .set_audit_sink(Box::new(move |r| a.lock().push(r.result.code())));
    assert_eq!(audited.lock().clone(), ["unauthorised_change"]);
    assert_eq!(change.attribute("new_value"), Some(&Value::Int(380)));
    wait_value(&rt, SPEED, &Value::Int(380)).await;
    // Ids stay unique across the restart.
    match rt
        .commands
        .submit(request(SPEED, Value::Int(400), alice()))
        .await
    {
        CommandResult::Verified { id: next, .. } => assert!(next.0 > id.0, "{next} after {id}"),
        other => panic!("expected verified, got {other:?}"),
    }
    platform.shutdown(Duration::from_secs(5)).await;
    sim.abort();
}

/// paho-mqtt publishes a command with a Response Topic and Correlation Data (MQTT 5) and gets
/// `accepted` then `verified`, both with its correlation data; an MQTT 3.1.1 client gets a
/// refusal on the reply topic; a retained command is never executed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mqtt_command_round_trip_carries_the_correlation_data() {
    let Some(py) = ironplant_testkit::python("paho.mqtt.client", "paho-mqtt") else {
        return;
    };
    let (addr, sim) = simulator().await;
    let broker = Broker::new(BrokerConfig::default());
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port().to_string();
    let b = broker.clone();
    tokio::spawn(async move { b.serve(listener).await });
    let platform = Platform::builder(config(addr), None)
        .broker(broker.clone())
        .start()
        .expect("platform starts");
    let rt = platform.runtime.clone();
    wait_value(&rt, SPEED, &Value::Int(400)).await;
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/peers/paho_command.py");
    let topic = format!("plant/_cmd/{SPEED}");
    let run = |args: Vec<String>| {
        let py = py.clone();
        let script = script.clone();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            ironplant_testkit::run_script(
                &py,
                &script,
                &args,
                Duration::from_secs(60),
                "paho command",
            )
        })
    };
    let lines = |stdout: &str| -> Vec<serde_json::Value> {
        stdout
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };

    let out = run(vec![
        "127.0.0.1".into(),
        port.clone(),
        "5".into(),
        topic.clone(),
        r#"{"value": 470, "reason": "33cl run"}"#.into(),
        "2".into(),
        "req-42".into(),
    ])
    .await
    .expect("the script runner");
    let got = lines(&out.stdout);
    assert_eq!(
        got.last(),
        Some(&serde_json::json!({"ok": true})),
        "{}",
        out.report
    );
    let responses: Vec<&serde_json::Value> =
        got.iter().filter(|l| l.get("response").is_some()).collect();
    assert_eq!(responses.len(), 2, "{}", out.report);
    assert_eq!(
        responses[0]["response"]["result"], "accepted",
        "{}",
        out.report
    );
    assert_eq!(
        responses[1]["response"]["result"], "verified",
        "{}",
        out.report
    );
    assert_eq!(responses[1]["response"]["echoed"], 470);
    assert_eq!(
        responses[0]["response"]["command"],
        responses[1]["response"]["command"]
    );
    for r in &responses {
        assert_eq!(r["correlation"], "req-42", "{}", out.report);
    }
    wait_value(&rt, SPEED, &Value::Int(470)).await;

    // MQTT 3.1.1: no properties; the refusal comes on the reply topic.
    let out = run(vec![
        "127.0.0.1".into(),
        port.clone(),
        "3.1.1".into(),
        topic.clone(),
        r#"{"value": 900}"#.into(),
        "1".into(),
    ])
    .await
    .expect("the script runner");
    let got = lines(&out.stdout);
    let r = got
        .iter()
        .find(|l| l.get("response").is_some())
        .unwrap_or_else(|| panic!("no response\n{}", out.report));
    assert_eq!(r["topic"], format!("plant/_cmd_reply/{SPEED}"));
    assert_eq!(r["response"]["result"], "refused");
    assert_eq!(r["response"]["code"], "envelope_max");

    // Two-person rule over MQTT: a confirmation needs the confirmer's role; without one (an
    // anonymous connection, no resolver) it is refused, with one it is written and verified.
    let pending = match rt
        .commands
        .submit(request(
            PUMP,
            Value::Bool(true),
            Requester::user("erin", Role::Engineer, "s-erin"),
        ))
        .await
    {
        CommandResult::Pending(p) => p,
        other => panic!("expected pending, got {other:?}"),
    };
    let pump_topic = format!("plant/_cmd/{PUMP}");
    let confirm = format!(r#"{{"confirm": {}, "reason": "checked"}}"#, pending.id.0);
    let out = run(vec![
        "127.0.0.1".into(),
        port.clone(),
        "5".into(),
        pump_topic.clone(),
        confirm.clone(),
        "1".into(),
        "c-1".into(),
    ])
    .await
    .expect("the script runner");
    let got = lines(&out.stdout);
    let r = got
        .iter()
        .find(|l| l.get("response").is_some())
        .unwrap_or_else(|| panic!("no response\n{}", out.report));
    assert_eq!(r["response"]["code"], "role_unknown", "{}", out.report);
    assert_eq!(rt.commands.pending().len(), 1, "still pending");
    rt.commands.set_role_resolver(Arc::new(|name: &str| {
        (name == "anonymous").then_some(Role::Engineer)
    }));
    let out = run(vec![
        "127.0.0.1".into(),
        port.clone(),
        "5".into(),
        pump_topic,
        confirm,
        "2".into(),
        "c-2".into(),
    ])
    .await
    .expect("the script runner");
    let results: Vec<serde_json::Value> = lines(&out.stdout)
        .iter()
        .filter_map(|l| l.get("response").map(|r| r["result"].clone()))
        .collect();
    assert_eq!(results, ["accepted", "verified"], "{}", out.report);
    assert!(rt.commands.pending().is_empty());
    wait_value(&rt, PUMP, &Value::Bool(true)).await;

    // A retained command is answered as an error and never executed.
    let mut events = rt.events.subscribe("test", 4096, EventFilter::all());
    let mut replies = broker
        .subscribe_internal("observer", &format!("plant/_cmd_reply/{SPEED}"), 16)
        .expect("subscribe");
    let mut p = ironplant_mqtt::codec::Publish::new(
        ironplant_mqtt::codec::MqttString::from_utf8(bytes::Bytes::from(topic.clone()))
            .expect("topic"),
        bytes::Bytes::from_static(br#"{"value": 480}"#),
    );
    p.retain = true;
    broker.publish(p);
    // The platform's own retained publish has no client: dropped without an answer. A client's
    // retained command is answered; paho publishes one here.
    let out = tokio::task::spawn_blocking({
        let port = port.clone();
        let topic = topic.clone();
        move || {
            std::process::Command::new("mosquitto_pub")
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &port,
                    "-r",
                    "-q",
                    "1",
                    "-t",
                    &topic,
                    "-m",
                    r#"{"value": 490}"#,
                ])
                .output()
        }
    })
    .await
    .expect("runner")
    .expect("mosquitto_pub runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reply = tokio::time::timeout(Duration::from_secs(10), replies.recv())
        .await
        .expect("an answer to the retained command")
        .expect("open");
    let body: serde_json::Value = serde_json::from_slice(&reply.payload).expect("JSON");
    assert_eq!(body["code"], "retained_command", "{body}");
    // A command published after them is executed; by its answers both retained ones were
    // handled (the subscription is read in order), and neither was executed.
    let out = run(vec![
        "127.0.0.1".into(),
        port.clone(),
        "5".into(),
        topic.clone(),
        r#"{"value": 475}"#.into(),
        "2".into(),
        "req-43".into(),
    ])
    .await
    .expect("the script runner");
    assert!(
        out.stdout.contains(r#""result": "verified""#),
        "{}",
        out.report
    );
    let mut written = Vec::new();
    while let Some(e) = events.try_recv() {
        if e.kind == EventKind::Command && &*e.code == "accepted" {
            written.push(e.attribute("new_value").cloned());
        }
    }
    assert_eq!(
        written,
        [Some(Value::Int(475))],
        "only the live command ran"
    );
    wait_value(&rt, SPEED, &Value::Int(475)).await;
    platform.shutdown(Duration::from_secs(5)).await;
    sim.abort();
}
