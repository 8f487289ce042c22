//! The command path in front of a real write path: the simulated bottling line served over
//! Modbus TCP (`ironplant-sim`), polled and written by the Modbus device task
//! (`ironplant-modbus`). A viewer's write is refused and never reaches the PLC; an operator's
//! write reaches it and is verified by the device's read-back; a rogue write by a second Modbus
//! master (the simulator's attack, or a pymodbus client) is caught at the next poll, and the
//! restore puts the commanded value back.
//!
//! The command path's `now` is a manual clock (it is sans-IO); only the plant runs in real
//! time, and the test waits on samples with a deadline, never on sleeps.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ironplant_control::command::{
    Authorisation, CommandPath, CommandRequest, CommandSettings, Denial, InterlockSettings, Origin,
    Outcome, Requester, Role, TagInfo,
};
use ironplant_core::config::{parse_with, Registry};
use ironplant_core::{
    DeviceWriter, Namespace, Overflow, Quality, Sample, Subscription, TagBus, TagMeta, TagPath,
    Timestamp, Value,
};
use ironplant_modbus::poller::NoObserver;
use ironplant_modbus::{DevicePoller, PollPoint};
use tokio::net::TcpListener;
use tokio::time::Instant;

const SPEED: &str = "acme/lyon/bottling/line1/filler/plc/speed_setpoint";

const COMMANDS: &str = r#"
[[command]]
tag = "acme/lyon/bottling/line1/filler/plc/speed_setpoint"
min = 0
max = 600
max_step = 100
min_interval = "2s"
on_unauthorised_change = "restore"
"#;

fn t(secs: f64) -> Timestamp {
    Timestamp(1_796_637_600_000_000 + (secs * 1e6) as i64)
}

/// Reads bus batches until a Good sample of `tag` arrives (within 10 s), feeding every sample
/// to the command path at `now`; returns that sample's value and the path's outcomes.
async fn next_value(
    sub: &mut Subscription,
    ns: &Namespace,
    cp: &mut CommandPath,
    tag: &TagPath,
    now: Timestamp,
) -> (Value, Vec<Outcome>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut outcomes = Vec::new();
    loop {
        let batch = tokio::time::timeout_at(deadline, sub.recv())
            .await
            .unwrap_or_else(|_| panic!("no Good sample of {tag} within 10 s"))
            .expect("the bus is open");
        let mut found = None;
        for s in batch.iter() {
            let Some(meta) = ns.tag(s.tag) else { continue };
            outcomes.extend(cp.observe(&meta.path, &s.value, s.quality, now));
            if &meta.path == tag && s.quality.is_good() {
                found = Some(s.value.clone());
            }
        }
        if let Some(v) = found {
            return (v, outcomes);
        }
    }
}

fn request(meta: &TagMeta, value: Value, who: Requester, current: &Value) -> CommandRequest {
    CommandRequest {
        tag: meta.path.clone(),
        info: Some(TagInfo::new(
            meta,
            Some(&Sample {
                tag: meta.id,
                value: current.clone(),
                quality: Quality::GOOD,
                source_ts: Timestamp(0),
                server_ts: Timestamp(0),
            }),
        )),
        value,
        requester: who,
        authorisation: Authorisation::Allowed,
        reason: "integration".to_owned(),
        origin: Origin::Rest,
    }
}

/// Who writes the setpoint behind the platform's back.
enum Rogue {
    /// `ironplant_sim::attack::rogue_write` (`ironplant attack rogue-write`).
    Simulator,
    /// A pymodbus client (tests/peers/modbus_rogue_write.py) run by this interpreter.
    Pymodbus(PathBuf),
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_reach_the_simulated_plc_and_a_rogue_write_is_caught_at_the_next_poll() {
    scenario(Rogue::Simulator).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rogue_write_by_a_pymodbus_client_is_caught_at_the_next_poll() {
    let Some(py) = ironplant_testkit::python("pymodbus", "pymodbus") else {
        return;
    };
    scenario(Rogue::Pymodbus(py)).await;
}

async fn scenario(rogue: Rogue) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let sim = tokio::spawn(ironplant_sim::run(listener, 7));

    // The shipped example's plant (its Sparkplug mapping is another crate's section), pointed
    // at this simulator, with a command policy for the speed setpoint.
    let example = include_str!("../../../examples/bottling.toml");
    let plant = example
        .rsplit_once("\n[[sparkplug.asset]]")
        .map_or(example, |(plant, _)| plant)
        .replace("127.0.0.1:5020", &addr.to_string());
    let registry = Registry::new()
        .with::<CommandSettings>()
        .with::<InterlockSettings>();
    let config = parse_with("bottling.toml", &format!("{plant}{COMMANDS}"), &registry)
        .unwrap_or_else(|e| panic!("{e}"));
    let ns = config.namespace();
    let mut cp = CommandPath::new(
        &config.get::<CommandSettings>(),
        &config.get::<InterlockSettings>(),
    );
    for m in ns.tags().filter(|m| m.writable) {
        cp.watch(m.path.clone());
    }

    let mut device = config
        .devices
        .iter()
        .find(|d| d.id == "filler-plc")
        .cloned()
        .expect("the example has the filler PLC");
    device.poll_interval = Duration::from_millis(50);
    let points = config
        .tags
        .iter()
        .filter(|t| t.device.as_deref() == Some("filler-plc"))
        .filter_map(|t| {
            Some(PollPoint {
                tag: ns.lookup(t.path.as_str())?.id,
                point: t.modbus.clone()?,
                range: t.range,
            })
        })
        .collect();
    let bus = TagBus::new(ns.len());
    let mut sub = bus.subscribe("test", 1024, Overflow::DropNewest);
    let handle = DevicePoller {
        config: device,
        points,
        bus: bus.clone(),
        observer: Arc::new(NoObserver),
    }
    .spawn();
    let writer = handle.writer();
    let meta = ns.lookup(SPEED).cloned().expect("the speed setpoint");
    let speed = meta.path.clone();

    // The simulator starts at 400 bpm: learned as the expected value.
    let (v, out) = next_value(&mut sub, &ns, &mut cp, &speed, t(0.0)).await;
    assert_eq!(v, Value::Int(400));
    assert!(out.is_empty(), "{out:?}");

    // A viewer's write is refused and never reaches the PLC.
    let mut r = request(
        &meta,
        Value::Int(450),
        Requester::user("victor", Role::Viewer, "v"),
        &v,
    );
    r.authorisation = Authorisation::Denied(Denial::Role {
        role: "viewer".to_owned(),
        permission: "write_setpoints".to_owned(),
    });
    assert_eq!(
        cp.submit(r, &Vec::new(), t(1.0))
            .refusal()
            .map(|r| r.code()),
        Some("not_authorised")
    );

    // An operator's write reaches the PLC and is verified by the device's read-back.
    let alice = Requester::user("alice", Role::Operator, "s-alice");
    let d = cp.submit(
        request(&meta, Value::Int(450), alice, &v),
        &Vec::new(),
        t(2.0),
    );
    let a = d.accepted().cloned().expect("inside the envelope");
    let ack = writer
        .write(&meta, a.value.clone())
        .await
        .expect("the simulator takes the write");
    assert_eq!(ack.echoed, Some(Value::Int(450)));
    match cp.device_acknowledged(a.id, &ack, t(2.1)) {
        Some(Outcome::Verified { id, value, .. }) => {
            assert_eq!(id, a.id);
            assert_eq!(value, Value::Int(450));
        }
        other => panic!("expected verified, got {other:?}"),
    }
    // Polls made before the write may still show 400: stale, no finding.
    loop {
        let (v, out) = next_value(&mut sub, &ns, &mut cp, &speed, t(3.0)).await;
        assert!(out.is_empty(), "{out:?}");
        if v != Value::Int(400) {
            assert_eq!(v, Value::Int(450));
            break;
        }
    }

    // A second Modbus master writes the setpoint behind the platform's back.
    match rogue {
        Rogue::Simulator => {
            let w = ironplant_sim::attack::rogue_write(addr, "speed_setpoint", Value::Int(520))
                .await
                .expect("the rogue write");
            assert_eq!(w.read_back, Value::Int(520));
        }
        Rogue::Pymodbus(py) => {
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
    // Samples of polls made before the write still show 450 (and are no finding); the first
    // poll that shows 520 is the finding.
    let (v, out) = loop {
        let (v, out) = next_value(&mut sub, &ns, &mut cp, &speed, t(4.0)).await;
        if v != Value::Int(450) {
            break (v, out);
        }
        assert!(out.is_empty(), "{out:?}");
    };
    assert_eq!(v, Value::Int(520));
    let change = match out.as_slice() {
        [Outcome::UnauthorisedChange(c)] => c.clone(),
        other => panic!("expected one unauthorised change, got {other:?}"),
    };
    assert_eq!(change.expected, Value::Int(450));
    assert_eq!(change.seen, Value::Int(520));
    assert_eq!(change.restore, Some(Value::Int(450)));

    // The restore goes through the same checks as the platform, and is verified.
    let restore = CommandRequest::restore(
        speed.clone(),
        Value::Int(450),
        request(&meta, Value::Null, Requester::platform(), &v).info,
    );
    let d = cp.submit(restore, &Vec::new(), t(5.0));
    let a = d
        .accepted()
        .cloned()
        .expect("the restore is inside the envelope");
    let ack = writer.write(&meta, a.value.clone()).await.expect("written");
    assert!(matches!(
        cp.device_acknowledged(a.id, &ack, t(5.1)),
        Some(Outcome::Verified { .. })
    ));
    // Polls made before the restore may still show 520: stale, no second finding.
    loop {
        let (v, out) = next_value(&mut sub, &ns, &mut cp, &speed, t(6.0)).await;
        assert!(out.is_empty(), "{out:?}");
        if v != Value::Int(520) {
            assert_eq!(v, Value::Int(450));
            break;
        }
    }

    let story: Vec<(String, &'static str)> = cp
        .drain_audit()
        .iter()
        .map(|r| (r.actor.clone(), r.result.code()))
        .collect();
    let expected: Vec<(String, &'static str)> = [
        ("victor", "refused"),
        ("alice", "accepted"),
        ("alice", "verified"),
        ("unknown", "unauthorised_change"),
        ("platform", "accepted"),
        ("platform", "verified"),
    ]
    .iter()
    .map(|(a, c)| (a.to_string(), *c))
    .collect();
    assert_eq!(story, expected);
    drop(handle);
    sim.abort();
}
