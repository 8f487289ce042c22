//! The simulator against the outside world: the example config that users copy, and a real
//! Modbus TCP client.

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use ironplant_core::config::{self, Config, ModbusTable, TagConfig};
use ironplant_core::{Value, ValueType};
use ironplant_modbus::codec::decode_registers;
use ironplant_modbus::RegisterBank;
use ironplant_sim::map::{point_def, Kind, PointDef};
use ironplant_sim::{new_bank, tick, Plant, REGISTER_MAP};
use ironplant_sparkplug::settings::SparkplugSettings;
use ironplant_sparkplug::{DeviceSelector, TagMapper};
use tokio::net::TcpListener;
use tokio_modbus::prelude::*;

fn example_config() -> Config {
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/bottling.toml");
    let text = std::fs::read_to_string(file).expect("examples/bottling.toml is readable");
    // The plant and the Sparkplug section (the other sections are the platform's; the
    // `[integrity]` section closes the file).
    let text = text
        .split("\n[integrity]")
        .next()
        .unwrap_or(&text)
        .to_owned();
    let sections = ironplant_control::register(config::Registry::new().with::<SparkplugSettings>());
    config::parse_with("examples/bottling.toml", &text, &sections)
        .unwrap_or_else(|errors| panic!("{errors}"))
}

/// The map entry a tag stands for: the last level of its path names it.
fn def_of(tag: &TagConfig) -> &'static PointDef {
    point_def(tag.path.name())
        .unwrap_or_else(|| panic!("tag {} names no point of the simulator", tag.path))
}

/// Reads a tag from the bank the way the connector does, independently of the sim's own glue.
fn read_tag(bank: &RegisterBank, tag: &TagConfig) -> Value {
    let point = tag
        .modbus
        .as_ref()
        .expect("every example tag has a mapping");
    let unit = &bank.units[&point.unit_id];
    let at = usize::from(point.address);
    match point.table {
        ModbusTable::Coil => Value::Bool(unit.coils[at]),
        ModbusTable::DiscreteInput => Value::Bool(unit.discrete_inputs[at]),
        ModbusTable::Holding => {
            decode_registers(point, &unit.holding[at..at + usize::from(point.len())])
        }
        ModbusTable::Input => {
            decode_registers(point, &unit.input[at..at + usize::from(point.len())])
        }
    }
}

#[test]
fn example_config_maps_every_simulated_point_exactly() {
    let cfg = example_config();
    assert!(cfg.tags.len() >= 30, "{} tags", cfg.tags.len());
    assert_eq!(
        cfg.devices
            .iter()
            .map(|d| (d.id.as_str(), d.unit_id))
            .collect::<Vec<_>>(),
        [("filler-plc", 1), ("utilities", 2)]
    );
    let mut mapped = HashSet::new();
    for tag in &cfg.tags {
        let def = def_of(tag);
        assert!(mapped.insert(def.name), "{} is mapped twice", def.name);
        assert_eq!(tag.path.depth(), 7, "{}", tag.path);
        assert_eq!(tag.modbus.as_ref(), Some(&def.point()), "{}", tag.path);
        assert_eq!(tag.writable, def.kind == Kind::Command, "{}", tag.path);
        let unit = (!def.unit.is_empty()).then(|| def.unit.to_owned());
        assert_eq!(tag.unit, unit, "{}", tag.path);
        assert!(
            !tag.description.is_empty(),
            "{} has no description",
            tag.path
        );
        let (lo, hi) = tag
            .range
            .unwrap_or_else(|| panic!("{} has no range", tag.path));
        assert!(
            lo <= def.range.0 && def.range.1 <= hi,
            "{}: the simulator produces {:?}, the config allows {lo}..{hi}",
            tag.path,
            def.range
        );
    }
    let missing: Vec<_> = REGISTER_MAP
        .iter()
        .filter(|d| !mapped.contains(d.name))
        .map(|d| d.name)
        .collect();
    assert!(missing.is_empty(), "not in the example config: {missing:?}");
}

/// The example places the simulator's Sparkplug device in the asset tree beside the Modbus
/// machines, and every metric it reports fits there (none refused as too deep).
#[test]
fn example_config_places_the_simulated_edge_node_in_the_plant() {
    let cfg = example_config();
    let sp = cfg.get::<SparkplugSettings>();
    let sim = ironplant_sim::sparkplug::EdgeSettings::default();
    let device = DeviceSelector::Device(sim.device_id.clone());
    let asset = sp
        .assets
        .iter()
        .find(|a| {
            a.mapping.group_id == sim.group_id
                && a.mapping.edge_node_id == sim.edge_node_id
                && a.mapping.device == device
        })
        .expect("a [[sparkplug.asset]] for the simulated device");
    let line = asset.mapping.path.parent().expect("below a line");
    assert!(
        cfg.tags.iter().any(|t| t.path.is_under(&line)),
        "Modbus neighbours under {line}"
    );
    let mapper = TagMapper::new(sp.prefix.clone())
        .expect("prefix")
        .with_assets(sp.assets.iter().map(|a| a.mapping.clone()).collect())
        .expect("valid mappings");
    for (metric, _) in ironplant_sim::sparkplug::METRICS {
        let path = mapper
            .path(
                &sim.group_id,
                &sim.edge_node_id,
                Some(&sim.device_id),
                metric,
            )
            .unwrap_or_else(|e| panic!("{metric}: {e}"));
        assert!(path.is_under(&asset.mapping.path), "{path}");
        assert!(
            cfg.tags.iter().all(|t| t.path != path),
            "{path} is a Modbus tag"
        );
    }
    let ns = cfg.namespace();
    let a = ns.asset(&asset.mapping.path).expect("in the tree");
    assert!(a.location.x_m.is_some() && a.effective_location.latitude.is_some());
}

#[test]
fn every_example_tag_decodes_in_range_and_analog_tags_move() {
    let cfg = example_config();
    let shared = new_bank();
    let mut bank = shared.lock();
    let mut plant = Plant::new(2024);
    let mut seen: Vec<BTreeSet<String>> = vec![BTreeSet::new(); cfg.tags.len()];
    // Ten simulated minutes at the physics loop's tick, sampled like a 10 s poll.
    for step in 1..=6000 {
        tick(&mut bank, &mut plant, Duration::from_millis(100));
        if step % 100 != 0 {
            continue;
        }
        for (tag, seen) in cfg.tags.iter().zip(&mut seen) {
            let value = read_tag(&bank, tag);
            assert_eq!(
                value.value_type(),
                Some(tag.value_type),
                "{}: {value}",
                tag.path
            );
            let x = value.as_f64().expect("numeric or bool");
            let (lo, hi) = tag.range.expect("checked above");
            assert!(
                (lo..=hi).contains(&x),
                "{} = {x} at {} s, outside {lo}..{hi}",
                tag.path,
                step / 10
            );
            seen.insert(value.to_string());
        }
    }
    for (tag, seen) in cfg.tags.iter().zip(&seen) {
        let def = def_of(tag);
        if matches!(def.kind, Kind::Measurement | Kind::Counter) {
            // Slow values (the motor's temperature) move by a few steps of their resolution.
            assert!(
                seen.len() >= 3,
                "{} hardly moves in 10 minutes: {seen:?}",
                tag.path
            );
        }
        if def.kind == Kind::Command {
            assert_eq!(seen.len(), 1, "{} changed without a write", tag.path);
        }
        if tag.value_type == ValueType::Bool {
            assert!(seen.len() <= 2);
        }
    }
}

/// Polls `read` until `done` holds for its value, failing after a deadline.
async fn poll_until<T: std::fmt::Debug>(
    what: &str,
    mut read: impl AsyncFnMut() -> T,
    done: impl Fn(&T) -> bool,
) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let value = read().await;
        if done(&value) {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}; last value {value:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn decode(name: &str, regs: &[u16]) -> f64 {
    let def = point_def(name).expect("point exists");
    decode_registers(&def.point(), regs)
        .as_f64()
        .expect("numeric")
}

#[tokio::test]
async fn serves_the_plant_over_modbus_tcp_and_obeys_writes() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let server = tokio::spawn(ironplant_sim::run(listener, 7));
    let mut ctx = tokio_modbus::client::tcp::connect_slave(addr, Slave(1))
        .await
        .expect("connect");

    let setpoint = ctx
        .read_holding_registers(0, 1)
        .await
        .expect("io")
        .expect("no exception");
    assert_eq!(setpoint, [400]);

    // The physics loop ticks: bottles are counted.
    let good = |regs: &Vec<u16>| decode("good_count", regs);
    let first = ctx
        .read_input_registers(10, 2)
        .await
        .expect("io")
        .expect("ok");
    let later = poll_until(
        "the good counter to advance",
        async || {
            ctx.read_input_registers(10, 2)
                .await
                .expect("io")
                .expect("ok")
        },
        |regs| good(regs) > good(&first),
    )
    .await;
    assert!(good(&later) > 4_718_592.0);

    // A new setpoint slows the filler down.
    ctx.write_single_register(0, 150)
        .await
        .expect("io")
        .expect("ok");
    let setpoint = ctx
        .read_holding_registers(0, 1)
        .await
        .expect("io")
        .expect("ok");
    assert_eq!(setpoint, [150]);
    poll_until(
        "the filler to slow down",
        async || {
            ctx.read_input_registers(0, 2)
                .await
                .expect("io")
                .expect("ok")
        },
        |regs| decode("speed_actual", regs) < 350.0,
    )
    .await;

    // The fault-reset coil is a pulse the simulator clears once handled.
    ctx.write_single_coil(1, true)
        .await
        .expect("io")
        .expect("ok");
    poll_until(
        "the fault-reset coil to be cleared",
        async || ctx.read_coils(1, 1).await.expect("io").expect("ok"),
        |coils| coils == &[false],
    )
    .await;

    // Unit 2 answers on the same connection.
    ctx.set_slave(Slave(2));
    let level = ctx
        .read_input_registers(0, 2)
        .await
        .expect("io")
        .expect("ok");
    let level = decode("tank_level", &level);
    assert!((40.0..70.0).contains(&level), "tank level {level}");
    // A unit that does not exist is refused with an exception, not silence.
    ctx.set_slave(Slave(9));
    let refused = ctx.read_input_registers(0, 1).await.expect("io");
    assert_eq!(refused, Err(ExceptionCode::GatewayTargetDevice));

    server.abort();
}
