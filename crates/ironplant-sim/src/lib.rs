//! A simulated bottling line behind a Modbus TCP server: two PLCs with believable physics and
//! noise, for demos, tests and for building on Ironplant before real devices are at hand.
//!
//! # Layers
//! - [`plant`]: the physics as a plain struct. [`Plant::step`] takes the elapsed time as a
//!   parameter and never reads a clock; all randomness comes from a seeded RNG, so one seed
//!   gives one trajectory and tests drive hours of production in milliseconds.
//! - [`map`]: the register map, [`REGISTER_MAP`], the single source of truth for where each
//!   signal lives and how it is encoded (the table below and `examples/bottling.toml` are
//!   checked against it by tests).
//! - [`bank`]: applies commands from a register bank to the plant and writes its readings back,
//!   through `ironplant_modbus::codec`, the very codec the connector decodes with.
//! - [`run`] and [`physics_loop`]: the thin async shell, a 100 ms physics tick next to
//!   `ironplant_modbus::serve`.
//! - [`attack`]: attacks for detection to find. Data-level scenarios are pure transforms over
//!   the readings, switched at run time through an [`AttackControl`] ([`run_attacked`]) between
//!   the physics and the bank; a Modbus TCP man in the middle, a forged Sparkplug node and a
//!   rogue Modbus master act on the wire.
//!
//! # The plant
//! **Filler** (unit 1). While running, the speed follows its setpoint through a first-order lag
//! (τ 4 s, acceleration limited to 60 bpm/s); a stop ramps it down at 80 bpm/s, a fault at
//! 200 bpm/s. Motor current follows the load plus an acceleration term, the motor warms toward
//! ambient + 0.11 K/A² (τ 15 min). Random faults strike while running (Poisson, one every
//! 12.5 min of running on average) and clear by themselves after 20-60 s or on a pulse of the
//! fault-reset coil. About 1.2 % of bottles are rejected, 5 % in the minute after a restart.
//! Product temperature is the tank's plus the warming in the filler bowl; line pressure is
//! ~2.5 bar, its noise growing with speed.
//!
//! **Utilities** (unit 2). The 10 m³ buffer tank feeds the filler (0.75 L a bottle) and is
//! refilled by a pump under a P controller toward the level setpoint (so, like a real P loop,
//! it settles a few % below it). A dry tank trips the filler with "product starved" until it
//! is back above 10 %. The compressor cycles between 6.5 and 7.5 bar against the line's air
//! use. Active power is base load + chiller + filler motor + pump + compressor; the voltage sags
//! with load and wanders slowly; the energy and water meters integrate.
//!
//! # Register map
//! Addresses are 0-based protocol addresses. `ABCD` is big-endian (most significant word
//! first), `CDAB` word-swapped, `BADC` byte-swapped inside each register. Engineering value =
//! raw × scale. Commands read back as applied (clamped); the fault-reset coil is a pulse the
//! simulator clears once handled.
//!
//! | unit | table | address | name | type | scale | eng. unit | range | kind |
//! |---|---|---|---|---|---|---|---|---|
//! | 1 | coil | 0 | `run_enable` | bool |  |  | 0..1 | command |
//! | 1 | coil | 1 | `fault_reset` | bool |  |  | 0..1 | command |
//! | 1 | discrete_input | 0 | `running` | bool |  |  | 0..1 | status |
//! | 1 | discrete_input | 1 | `faulted` | bool |  |  | 0..1 | status |
//! | 1 | discrete_input | 2 | `idle` | bool |  |  | 0..1 | status |
//! | 1 | holding | 0 | `speed_setpoint` | u16 |  | bpm | 0..600 | command |
//! | 1 | input | 0-1 | `speed_actual` | f32 ABCD |  | bpm | 0..700 | measurement |
//! | 1 | input | 2-3 | `motor_current` | f32 CDAB |  | A | 0..40 | measurement |
//! | 1 | input | 4 | `motor_temp` | i16 | ×0.1 | °C | -20..150 | measurement |
//! | 1 | input | 5 | `product_temp` | i16 | ×0.01 | °C | -5..25 | measurement |
//! | 1 | input | 6 | `line_pressure` | u16 | ×0.001 | bar | 0..6 | measurement |
//! | 1 | input | 7 | `machine_state` | u16 |  |  | 0..2 | status |
//! | 1 | input | 8.0 | `status_running` | bool |  |  | 0..1 | status |
//! | 1 | input | 8.1 | `status_faulted` | bool |  |  | 0..1 | status |
//! | 1 | input | 8.2 | `status_idle` | bool |  |  | 0..1 | status |
//! | 1 | input | 8.3 | `status_run_enabled` | bool |  |  | 0..1 | status |
//! | 1 | input | 8.4 | `status_at_speed` | bool |  |  | 0..1 | status |
//! | 1 | input | 9 | `fault_code` | u16 |  |  | 0..6 | status |
//! | 1 | input | 10-11 | `good_count` | u32 ABCD |  | bottles | 0..4294967295 | counter |
//! | 1 | input | 12-13 | `reject_count` | u32 CDAB |  | bottles | 0..4294967295 | counter |
//! | 1 | input | 14 | `vibration` | u16 | ×0.01 | mm/s | 0..50 | measurement |
//! | 2 | coil | 0 | `pump_enable` | bool |  |  | 0..1 | command |
//! | 2 | discrete_input | 0 | `level_low` | bool |  |  | 0..1 | status |
//! | 2 | discrete_input | 1 | `level_high` | bool |  |  | 0..1 | status |
//! | 2 | discrete_input | 2 | `pump_running` | bool |  |  | 0..1 | status |
//! | 2 | discrete_input | 3 | `compressor_running` | bool |  |  | 0..1 | status |
//! | 2 | holding | 0 | `level_setpoint` | u16 | ×0.1 | % | 0..100 | command |
//! | 2 | input | 0-1 | `tank_level` | f32 ABCD |  | % | 0..100 | measurement |
//! | 2 | input | 2-3 | `inflow` | f32 CDAB |  | L/min | 0..700 | measurement |
//! | 2 | input | 4-5 | `outflow` | f32 BADC |  | L/min | 0..700 | measurement |
//! | 2 | input | 6 | `tank_temp` | i16 | ×0.1 | °C | -20..60 | measurement |
//! | 2 | input | 7-10 | `energy_total` | f64 ABCD |  | kWh | 0..1000000000000 | counter |
//! | 2 | input | 11-12 | `active_power` | f32 ABCD |  | kW | 0..200 | measurement |
//! | 2 | input | 13 | `voltage` | u16 | ×0.1 | V | 0..500 | measurement |
//! | 2 | input | 14 | `power_factor` | u16 | ×0.001 |  | 0..1 | measurement |
//! | 2 | input | 15 | `air_pressure` | u16 | ×0.01 | bar | 0..10 | measurement |
//! | 2 | input | 16-19 | `water_total` | u64 ABCD |  | L | 0..1000000000000000 | counter |
//!
//! `machine_state`: 0 idle, 1 running, 2 fault. Status word (unit 1, input 8): bit 0 running,
//! bit 1 faulted, bit 2 idle, bit 3 run enabled, bit 4 at speed (within 2 % of the setpoint).
//! `fault_code`: 0 none, 1 infeed jam, 2 capper torque, 3 low air pressure, 4 label missing,
//! 5 guard door open, 6 product starved (tank dry).

pub mod attack;
pub mod bank;
pub mod labeller;
pub mod map;
pub mod opcua;
pub mod plant;
pub mod sparkplug;

use std::io;
use std::time::Duration;

use ironplant_modbus::SharedBank;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

pub use attack::AttackControl;
pub use bank::{
    apply_commands, new_bank, read_point, tick, tick_attacked, write_outputs, write_readings,
};
pub use map::{PointDef, Signal, FILLER_UNIT, REGISTER_MAP, UTILITIES_UNIT};
pub use plant::{FaultCode, MachineState, Plant, Readings};

/// Period of the physics loop.
pub const TICK: Duration = Duration::from_millis(100);

/// Longest step the loop integrates at once. After a stall (a suspended machine, a debugger)
/// the plant moves on instead of replaying the whole gap while holding the bank's lock.
const MAX_DT: Duration = Duration::from_secs(10);

/// Serves a simulated plant seeded with `seed` on `listener` (units 1 and 2), until accepting
/// fails or the future is dropped; the physics task stops with it.
pub async fn run(listener: TcpListener, seed: u64) -> io::Result<()> {
    run_with(listener, seed, None).await
}

/// Like [`run`], also sending the plant's readings after every tick to `readings` (the
/// Sparkplug edge node follows them).
pub async fn run_with(
    listener: TcpListener,
    seed: u64,
    readings: Option<watch::Sender<Readings>>,
) -> io::Result<()> {
    run_attacked(listener, seed, readings, AttackControl::new()).await
}

/// Like [`run_with`], with the data-level attacks of `attacks` applied between the physics and
/// the register bank (and the readings sent out): keep a clone of the handle to start and stop
/// attacks while it runs. Its clock is the plant's simulated time.
pub async fn run_attacked(
    listener: TcpListener,
    seed: u64,
    readings: Option<watch::Sender<Readings>>,
    attacks: AttackControl,
) -> io::Result<()> {
    let bank = new_bank();
    let _physics = AbortOnDrop(tokio::spawn(physics_loop_attacked(
        bank.clone(),
        seed,
        readings,
        attacks,
    )));
    match listener.local_addr() {
        Ok(addr) => tracing::info!(%addr, seed, "simulated bottling line serving"),
        Err(_) => tracing::info!(seed, "simulated bottling line serving"),
    }
    ironplant_modbus::serve(listener, bank).await
}

/// Ticks a plant seeded with `seed` against `bank` every [`TICK`], with the measured elapsed
/// time as `dt`. Runs until dropped. `bank` needs the images [`new_bank`] creates.
pub async fn physics_loop(bank: SharedBank, seed: u64) {
    physics_loop_with(bank, seed, None).await;
}

/// [`physics_loop`], sending the readings after every tick to `readings` if given.
pub async fn physics_loop_with(
    bank: SharedBank,
    seed: u64,
    readings: Option<watch::Sender<Readings>>,
) {
    physics_loop_attacked(bank, seed, readings, AttackControl::new()).await;
}

/// [`physics_loop_with`], showing the readings as the running attacks of `attacks` bend them
/// (in the bank and in what is sent to `readings`, as a lying sensor would).
pub async fn physics_loop_attacked(
    bank: SharedBank,
    seed: u64,
    readings: Option<watch::Sender<Readings>>,
    attacks: AttackControl,
) {
    let mut plant = Plant::new(seed);
    let mut interval = tokio::time::interval(TICK);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last = Instant::now();
    loop {
        interval.tick().await;
        let now = Instant::now();
        let dt = (now - last).min(MAX_DT);
        last = now;
        let (state, fault) = (plant.state(), plant.fault());
        let shown = tick_attacked(&mut bank.lock(), &mut plant, dt, &attacks);
        if let Some(tx) = &readings {
            tx.send_replace(shown);
        }
        if (state, fault) != (plant.state(), plant.fault()) {
            tracing::info!(
                state = ?plant.state(),
                fault = ?plant.fault(),
                fault_code = plant.fault().code(),
                "simulated filler changed state"
            );
        }
    }
}

/// Aborts the task when dropped, so the physics stops with the server that owns it.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ironplant_core::config::{ByteOrder, WordOrder};

    fn type_name(d: &PointDef) -> String {
        let base = d.data_type.as_str();
        let order = match (d.word_order, d.byte_order) {
            _ if d.data_type.registers() == 1 || d.table.is_bits() => "",
            (WordOrder::BigEndian, ByteOrder::BigEndian) => " ABCD",
            (WordOrder::LittleEndian, ByteOrder::BigEndian) => " CDAB",
            (WordOrder::BigEndian, ByteOrder::LittleEndian) => " BADC",
            (WordOrder::LittleEndian, ByteOrder::LittleEndian) => " DCBA",
        };
        format!("{base}{order}")
    }

    /// The docs row of one map entry.
    fn doc_row(d: &PointDef) -> String {
        let p = d.point();
        let address = match d.bit {
            Some(bit) => format!("{}.{bit}", d.address),
            None if p.len() > 1 => format!("{}-{}", d.address, p.last_address()),
            None => d.address.to_string(),
        };
        let scale = if d.scale == 1.0 {
            String::new()
        } else {
            format!("×{}", d.scale)
        };
        format!(
            "//! | {} | {} | {address} | `{}` | {} | {scale} | {} | {}..{} | {} |",
            d.unit_id,
            d.table.as_str(),
            d.name,
            type_name(d),
            d.unit,
            d.range.0,
            d.range.1,
            d.kind.as_str(),
        )
    }

    #[test]
    fn crate_docs_list_the_register_map() {
        let expected: Vec<String> = REGISTER_MAP.iter().map(doc_row).collect();
        let source = include_str!("lib.rs");
        let documented: Vec<&str> = source
            .lines()
            .filter(|l| l.starts_with("//! | 1 |") || l.starts_with("//! | 2 |"))
            .collect();
        assert!(
            documented == expected,
            "the register map table in the crate docs is stale; replace its rows with:\n{}",
            expected.join("\n")
        );
    }
}
