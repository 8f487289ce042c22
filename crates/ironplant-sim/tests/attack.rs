//! The rogue Modbus master: a second connection writes a command point of the running
//! simulator, which obeys it like any master's write.

use std::time::Duration;

use ironplant_core::Value;
use ironplant_sim::attack::{rogue_write, AttackError};
use tokio::net::TcpListener;

#[tokio::test]
async fn a_rogue_master_writes_a_setpoint_and_reads_it_back() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(ironplant_sim::run(listener, 7));

    let done = rogue_write(addr, "speed_setpoint", Value::Int(417))
        .await
        .expect("the write lands");
    assert_eq!(done.point, "speed_setpoint");
    assert_eq!(done.read_back.as_f64(), Some(417.0));
    let stop = rogue_write(addr, "run_enable", Value::Bool(false))
        .await
        .expect("a coil too");
    assert_eq!(stop.read_back, Value::Bool(false));

    // Refused before anything is sent, with what to do instead.
    match rogue_write(addr, "motor_current", Value::Int(1)).await {
        Err(AttackError::UnknownPoint { known, .. }) => {
            assert!(known.contains("speed_setpoint"), "{known}");
        }
        other => panic!("expected UnknownPoint, got {other:?}"),
    }
    assert!(matches!(
        rogue_write(addr, "speed_setpoint", Value::Float(-5.0)).await,
        Err(AttackError::BadValue { .. })
    ));
    server.abort();

    // Nobody listening: a clear connection error, quickly.
    let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let gone = closed.local_addr().expect("addr");
    drop(closed);
    let err = tokio::time::timeout(
        Duration::from_secs(10),
        rogue_write(gone, "speed_setpoint", Value::Int(1)),
    )
    .await
    .expect("fails within 10 s")
    .expect_err("nobody listens");
    assert!(err.to_string().contains(&gone.to_string()), "{err}");
}

// ---- Data-level attacks on the live simulator, the MITM proxy, the forged Sparkplug node ----

use std::net::SocketAddr;
use std::sync::Arc;

use ironplant_core::config::ModbusTable;
use ironplant_mqtt::auth::{Auth, ConnectInfo, Principal};
use ironplant_mqtt::client::TcpConnector;
use ironplant_mqtt::codec::ReasonCode;
use ironplant_mqtt::{Broker, BrokerConfig};
use ironplant_sim::attack::forge::ForgeError;
use ironplant_sim::attack::{
    attack_proxy, forge_sparkplug, mitm_proxy, AttackControl, ForgeSettings, MitmRule, Scenario,
};
use ironplant_sim::map::point_def;
use ironplant_sparkplug::Payload;
use tokio::time::Instant;
use tokio_modbus::client::{Context, Reader, Writer};
use tokio_modbus::prelude::Slave;

const DEADLINE: Duration = Duration::from_secs(10);

async fn connect(addr: SocketAddr, unit: u8) -> Context {
    tokio_modbus::client::tcp::connect_slave(addr, Slave(unit))
        .await
        .expect("connects")
}

/// Reads a map point through `ctx` (its unit), in engineering units.
async fn read(ctx: &mut Context, name: &str) -> f64 {
    let def = point_def(name).expect("mapped");
    let p = def.point();
    let regs = match def.table {
        ModbusTable::Input => ctx.read_input_registers(def.address, p.len()).await,
        _ => ctx.read_holding_registers(def.address, p.len()).await,
    }
    .expect("transport")
    .expect("no exception");
    ironplant_modbus::codec::decode_registers(&p, &regs)
        .as_f64()
        .expect("numeric")
}

#[tokio::test]
async fn the_live_simulator_freezes_a_sensor_at_run_time_and_lets_go_on_stop() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let attacks = AttackControl::new();
    let server = tokio::spawn(ironplant_sim::run_attacked(
        listener,
        21,
        None,
        attacks.clone(),
    ));
    let mut ctx = connect(addr, 2).await;

    // The level is live: noisy from tick to tick.
    let first = read(&mut ctx, "tank_level").await;
    let deadline = Instant::now() + DEADLINE;
    while read(&mut ctx, "tank_level").await == first {
        assert!(Instant::now() < deadline, "the level never changed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    attacks
        .start(Scenario::Freeze {
            signal: "tank_level".into(),
            start_s: 0.0,
        })
        .expect("valid");
    // The value shown when the attack started holds, bit for bit, while the inflow keeps
    // moving (the physics goes on). Read right after the start, it is that value already.
    let frozen = read(&mut ctx, "tank_level").await;
    let inflow = read(&mut ctx, "inflow").await;
    let deadline = Instant::now() + DEADLINE;
    let (mut same, mut inflow_moves) = (0, 0);
    while same < 10 || inflow_moves < 3 {
        assert!(
            Instant::now() < deadline,
            "{same} equal reads, inflow moved {inflow_moves}"
        );
        tokio::time::sleep(Duration::from_millis(60)).await;
        let level = read(&mut ctx, "tank_level").await;
        assert_eq!(level.to_bits(), frozen.to_bits(), "{frozen} -> {level}");
        same += 1;
        if read(&mut ctx, "inflow").await != inflow {
            inflow_moves += 1;
        }
    }
    assert_eq!(attacks.stop("freeze"), vec!["freeze:tank_level".to_owned()]);
    let deadline = Instant::now() + DEADLINE;
    while read(&mut ctx, "tank_level").await == frozen {
        assert!(Instant::now() < deadline, "still frozen after stop");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.abort();
}

#[tokio::test]
async fn the_mitm_proxy_scales_a_value_on_the_wire_and_passes_writes() {
    // The simulator's register bank behind its Modbus server, without physics: values hold
    // still, so what passes through the proxy compares exactly with what is behind it.
    let bank = ironplant_sim::new_bank();
    let plc = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let plc_addr = plc.local_addr().expect("addr");
    let plc_task = tokio::spawn(ironplant_modbus::serve(plc, bank.clone()));
    let proxy = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let proxy_addr = proxy.local_addr().expect("addr");
    let rule = MitmRule {
        point: "tank_level".into(),
        factor: 0.5,
    };
    let proxy_task = tokio::spawn(mitm_proxy(proxy, plc_addr, rule));

    let mut direct = connect(plc_addr, 2).await;
    let mut bent = connect(proxy_addr, 2).await;
    let level = read(&mut direct, "tank_level").await;
    assert!(level > 40.0, "{level}");
    assert_eq!(read(&mut bent, "tank_level").await, level * 0.5);
    // A block read as the platform's poller does it: only the level's registers differ.
    let all_direct = direct
        .read_input_registers(0, 20)
        .await
        .expect("transport")
        .expect("no exception");
    let all_bent = bent
        .read_input_registers(0, 20)
        .await
        .expect("transport")
        .expect("no exception");
    assert_ne!(all_bent[..2], all_direct[..2]);
    assert_eq!(all_bent[2..], all_direct[2..]);

    // Writes pass through untouched.
    bent.write_single_register(0, 425)
        .await
        .expect("transport")
        .expect("accepted");
    assert_eq!(read(&mut direct, "level_setpoint").await, 42.5);
    let mut filler = connect(proxy_addr, 1).await;
    filler
        .write_single_coil(0, false)
        .await
        .expect("transport")
        .expect("accepted");
    assert!(
        !bank.lock().units[&1].coils[0],
        "run_enable written through"
    );
    assert_eq!(
        read(&mut filler, "speed_actual").await,
        400.0,
        "not attacked"
    );

    // A bad rule is refused before anything listens.
    let spare = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let bad = MitmRule {
        point: "run_enable".into(),
        factor: 0.5,
    };
    let err = mitm_proxy(spare, plc_addr, bad).await.expect_err("refused");
    assert!(err.to_string().contains("tank_level"), "{err}");
    proxy_task.abort();
    plc_task.abort();
}

#[tokio::test]
async fn the_attack_proxy_bends_the_running_simulator_on_the_wire() {
    let sim = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let sim_addr = sim.local_addr().expect("addr");
    let sim_task = tokio::spawn(ironplant_sim::run(sim, 22));
    let proxy = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let proxy_addr = proxy.local_addr().expect("addr");
    let attacks = AttackControl::new();
    attacks
        .start(Scenario::Mitm {
            signal: "active_power".into(),
            factor: 0.5,
            start_s: 0.0,
        })
        .expect("valid");
    let proxy_task = tokio::spawn(attack_proxy(proxy, sim_addr, attacks.clone()));
    let mut direct = connect(sim_addr, 2).await;
    let mut bent = connect(proxy_addr, 2).await;
    for _ in 0..5 {
        let truth = read(&mut direct, "active_power").await;
        let shown = read(&mut bent, "active_power").await;
        let ratio = shown / truth;
        // The two reads are up to a tick apart: the power's noise is well under 10 %.
        assert!((0.45..0.55).contains(&ratio), "{shown} / {truth}");
    }
    // Switched at run time: stopped, the true value passes again.
    attacks.stop("all");
    let ratio = read(&mut bent, "active_power").await / read(&mut direct, "active_power").await;
    assert!((0.9..1.1).contains(&ratio), "{ratio}");
    proxy_task.abort();
    sim_task.abort();
}

/// The broker's view of identities: the node `sim-edge` logs in with its password.
struct Passwords;

impl Auth for Passwords {
    fn connect(&self, info: &ConnectInfo<'_>) -> Result<Principal, ReasonCode> {
        match (info.username, info.password) {
            (Some("sim-edge"), Some(b"s3cret")) => Ok(Principal {
                client_id: info.client_id.into(),
                user: Some("sim-edge".into()),
                roles: vec!["device".into()],
                owner: Some("device:sim-edge".into()),
            }),
            _ => Err(ReasonCode::BadUserNameOrPassword),
        }
    }
    fn may_publish(&self, _who: &Principal, _topic: &str) -> bool {
        true
    }
    fn may_subscribe(&self, _who: &Principal, _filter: &str) -> bool {
        true
    }
    fn is_cheap(&self) -> bool {
        true
    }
}

#[tokio::test]
async fn a_forged_node_publishes_in_the_real_nodes_name_with_stolen_credentials() {
    let broker = Broker::open(BrokerConfig::default(), Arc::new(Passwords)).expect("broker");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let mut seen = broker
        .subscribe_internal_with_origin("test", "spBv1.0/bottling/#", 64)
        .expect("filter");
    let serving = broker.clone();
    let broker_task = tokio::spawn(async move { serving.serve(listener).await });
    let connector = TcpConnector {
        address: addr.to_string(),
    };
    let settings = ForgeSettings {
        broker: addr.to_string(),
        messages: 3,
        interval: Duration::from_millis(50),
        birth: Some(0),
        ..ForgeSettings::default()
    };
    let stolen = Some(("sim-edge".to_owned(), "s3cret".to_owned()));
    let report = forge_sparkplug(&settings, connector.clone(), stolen)
        .await
        .expect("the stolen identity is accepted");
    assert_eq!(report.client_id, "sim-edge-bottling-2");
    let topics: Vec<_> = report.messages.iter().map(|m| m.topic.as_str()).collect();
    assert_eq!(
        topics,
        [
            "spBv1.0/bottling/NBIRTH/sim-edge",
            "spBv1.0/bottling/DBIRTH/sim-edge/line1",
            "spBv1.0/bottling/DDATA/sim-edge/line1",
            "spBv1.0/bottling/DDATA/sim-edge/line1",
            "spBv1.0/bottling/DDATA/sim-edge/line1",
        ]
    );

    // The broker delivered each of them as coming from the node's identity.
    let mut seqs = Vec::new();
    let deadline = Instant::now() + DEADLINE;
    while seqs.len() < 5 {
        let (publish, origin) = tokio::time::timeout_at(deadline, seen.recv())
            .await
            .expect("the forged messages arrive")
            .expect("broker running");
        assert_eq!(origin.owner.as_deref(), Some("device:sim-edge"));
        assert_eq!(origin.client_id.as_deref(), Some("sim-edge-bottling-2"));
        let payload = Payload::decode_bytes(&publish.payload).expect("a Sparkplug payload");
        if publish.topic.as_str().contains("/DDATA/") {
            // Plausible values: every metric, the filler running at about 400 bpm.
            assert_eq!(payload.metrics.len(), 10);
            let speed = payload.metrics.iter().find_map(|m| match m.value {
                Some(ironplant_sparkplug::proto::payload::metric::Value::DoubleValue(v))
                    if (300.0..500.0).contains(&v) =>
                {
                    Some(v)
                }
                _ => None,
            });
            assert!(speed.is_some(), "{payload:?}");
        }
        seqs.push(payload.seq);
    }
    // A fresh sequence: the forger knows nothing of the real node's seq.
    assert_eq!(
        seqs,
        [Some(0), Some(1), Some(2), Some(3), Some(4)],
        "seq restarts at 0"
    );

    // Without the password, the broker turns the forger away.
    let err = forge_sparkplug(
        &settings,
        connector,
        Some(("sim-edge".to_owned(), "guess".to_owned())),
    )
    .await
    .expect_err("refused");
    assert!(matches!(err, ForgeError::Connect { .. }), "{err}");
    broker_task.abort();
}

/// Interop: a third-party Modbus master (pymodbus) reads through the man in the middle and
/// decodes the bent value itself; its write through the proxy lands in the PLC.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pymodbus_reads_the_scaled_value_through_the_mitm_proxy() {
    let Some(py) = ironplant_testkit::python("pymodbus", "pymodbus") else {
        return;
    };
    // The simulator's bank and Modbus server without physics: the values hold still.
    let bank = ironplant_sim::new_bank();
    let plc = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let plc_addr = plc.local_addr().expect("addr");
    let plc_task = tokio::spawn(ironplant_modbus::serve(plc, bank.clone()));
    let proxy = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let proxy_addr = proxy.local_addr().expect("addr");
    let rule = MitmRule {
        point: "tank_level".into(),
        factor: 0.8,
    };
    let proxy_task = tokio::spawn(mitm_proxy(proxy, plc_addr, rule));
    let script = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/peers/modbus_mitm_read.py");
    let (proxy_port, plc_port) = (proxy_addr.port().to_string(), plc_addr.port().to_string());
    let run = tokio::task::spawn_blocking(move || {
        ironplant_testkit::run_script(
            &py,
            &script,
            &["127.0.0.1", &proxy_port, &plc_port, "333"],
            DEADLINE,
            "pymodbus through the MITM proxy",
        )
    })
    .await
    .expect("script thread");
    let words: Vec<&str> = run.stdout.split_whitespace().collect();
    let field = |name: &str| -> &str {
        let at = words
            .iter()
            .position(|w| *w == name)
            .unwrap_or_else(|| panic!("no {name}\n{}", run.report));
        words.get(at + 1).copied().unwrap_or_default()
    };
    let number = |name: &str| -> f64 {
        field(name)
            .parse()
            .unwrap_or_else(|_| panic!("{name} is not a number\n{}", run.report))
    };
    let (direct, bent) = (number("DIRECT"), number("PROXY"));
    assert!(direct > 40.0, "{}", run.report);
    // Both sides are f32 on the wire: the proxy's product rounds to the nearest f32.
    assert_eq!(bent, f64::from((direct * 0.8) as f32), "{}", run.report);
    assert_eq!(field("OTHERS_EQUAL"), "True", "{}", run.report);
    assert_eq!(number("SETPOINT"), 333.0, "{}", run.report);
    assert_eq!(bank.lock().units[&2].holding[0], 333);
    proxy_task.abort();
    plc_task.abort();
}
