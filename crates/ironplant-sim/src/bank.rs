//! Glue between the plant and a Modbus register bank, driven by [`REGISTER_MAP`]: commands flow
//! from the bank into the plant, readings flow from the plant into the bank, both through the
//! connector's codec so the two sides share one definition of every encoding.

use std::sync::Arc;
use std::time::Duration;

use ironplant_core::config::{ModbusDataType, ModbusPoint, ModbusTable};
use ironplant_core::Value;
use ironplant_modbus::codec::{decode_registers, encode_registers, EncodeError};
use ironplant_modbus::{RegisterBank, SharedBank, UnitImage};
use parking_lot::Mutex;

use crate::attack::AttackControl;
use crate::map::{image_size, Kind, PointDef, Signal, FILLER_UNIT, REGISTER_MAP, UTILITIES_UNIT};
use crate::plant::{MachineState as State, Plant, Readings};

/// Why a point could not be written into a bank.
#[derive(Debug, Clone, PartialEq)]
pub enum BankError {
    NoUnit(u8),
    OutOfImage { unit_id: u8, address: u16 },
    Encode(EncodeError),
}

impl std::fmt::Display for BankError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BankError::NoUnit(u) => write!(f, "the bank has no unit {u}"),
            BankError::OutOfImage { unit_id, address } => {
                write!(f, "address {address} is outside unit {unit_id}'s image")
            }
            BankError::Encode(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for BankError {}

/// A bank with images for both units, sized for the map and holding a fresh plant's readings,
/// so a client that connects before the first tick reads the default setpoints, not zeros.
pub fn new_bank() -> SharedBank {
    let mut bank = RegisterBank::default();
    for (unit, product) in [
        (FILLER_UNIT, "SIM-FILLER"),
        (UTILITIES_UNIT, "SIM-UTILITIES"),
    ] {
        let mut image = UnitImage::new(image_size(unit));
        // What the PLC says it is (function 43/14): the connector reports a change.
        image.identity = Some(ironplant_modbus::ident::DeviceIdentity {
            vendor: "Ironplant".into(),
            product_code: product.into(),
            revision: env!("CARGO_PKG_VERSION").into(),
        });
        bank.units.insert(unit, image);
    }
    // The initial state does not depend on the seed.
    write_outputs(&Plant::new(0), &mut bank);
    Arc::new(Mutex::new(bank))
}

/// One step of the simulation against a bank: apply what clients wrote, advance the plant,
/// publish its readings. Callers hold the bank's lock across it, so no client write can fall
/// between reading the commands and writing them back.
pub fn tick(bank: &mut RegisterBank, plant: &mut Plant, dt: Duration) {
    apply_commands(bank, plant);
    plant.step(dt);
    write_outputs(plant, bank);
}

/// [`tick`], with the readings bent by `attacks` (at the plant's elapsed time) before they
/// reach the bank. Returns the readings as shown.
pub fn tick_attacked(
    bank: &mut RegisterBank,
    plant: &mut Plant,
    dt: Duration,
    attacks: &AttackControl,
) -> Readings {
    apply_commands(bank, plant);
    plant.step(dt);
    let mut shown = plant.readings().clone();
    attacks.apply(plant.elapsed(), &mut shown);
    write_readings(&shown, bank);
    shown
}

/// Reads every command point (coils and holding registers) and hands it to the plant. A set
/// fault-reset coil requests a reset; [`write_outputs`] clears it once the plant handled it.
pub fn apply_commands(bank: &RegisterBank, plant: &mut Plant) {
    for def in REGISTER_MAP.iter().filter(|d| d.kind == Kind::Command) {
        let Some(value) = read_point(bank, &def.point()) else {
            continue;
        };
        match (def.signal, value) {
            (Signal::RunEnable, Value::Bool(on)) => plant.set_run_enable(on),
            (Signal::FaultReset, Value::Bool(true)) => plant.reset_fault(),
            (Signal::PumpEnable, Value::Bool(on)) => plant.set_pump_enable(on),
            (Signal::SpeedSetpoint, v) => {
                if let Some(x) = v.as_f64() {
                    plant.set_speed_setpoint(x);
                }
            }
            (Signal::LevelSetpoint, v) => {
                if let Some(x) = v.as_f64() {
                    plant.set_level_setpoint(x);
                }
            }
            _ => {}
        }
    }
}

/// Writes every point of the map from the plant's readings, commands included (they read back
/// as applied).
pub fn write_outputs(plant: &Plant, bank: &mut RegisterBank) {
    write_readings(plant.readings(), bank);
}

/// Writes every point of the map from `readings` (the plant's, or as an attack shows them).
pub fn write_readings(readings: &Readings, bank: &mut RegisterBank) {
    for def in REGISTER_MAP {
        let value = output_value(def, readings);
        if let Err(err) = write_point(bank, def, &value) {
            // A mismatch between the map and the bank: a bug, not an input problem.
            tracing::error!(point = def.name, %err, "cannot publish simulated value");
        }
    }
}

/// The value of `def` in `readings`, wrapped and clamped to what the point can show.
pub fn output_value(def: &PointDef, r: &Readings) -> Value {
    use Signal::*;
    let v = match def.signal {
        RunEnable => Value::Bool(r.run_enable),
        FaultReset => Value::Bool(r.fault_reset),
        PumpEnable => Value::Bool(r.pump_enable),
        Running => Value::Bool(r.state == State::Running),
        Faulted => Value::Bool(r.state == State::Fault),
        Idle => Value::Bool(r.state == State::Idle),
        AtSpeed => Value::Bool(r.at_speed),
        LevelLow => Value::Bool(r.level_low),
        LevelHigh => Value::Bool(r.level_high),
        PumpRunning => Value::Bool(r.pump_running),
        CompressorRunning => Value::Bool(r.compressor_running),
        MachineState => Value::Int(i64::from(r.state.code())),
        FaultCode => Value::Int(i64::from(r.fault.code())),
        GoodCount => counter(def, r.good_count),
        RejectCount => counter(def, r.reject_count),
        SpeedSetpoint => Value::Float(r.speed_setpoint),
        LevelSetpoint => Value::Float(r.level_setpoint),
        SpeedActual => Value::Float(r.speed),
        MotorCurrent => Value::Float(r.motor_current),
        MotorTemp => Value::Float(r.motor_temp),
        ProductTemp => Value::Float(r.product_temp),
        LinePressure => Value::Float(r.line_pressure),
        Vibration => Value::Float(r.vibration),
        TankLevel => Value::Float(r.tank_level),
        Inflow => Value::Float(r.inflow),
        Outflow => Value::Float(r.outflow),
        TankTemp => Value::Float(r.tank_temp),
        EnergyTotal => Value::Float(r.energy_kwh),
        ActivePower => Value::Float(r.active_power),
        Voltage => Value::Float(r.voltage),
        PowerFactor => Value::Float(r.power_factor),
        AirPressure => Value::Float(r.air_pressure),
        WaterTotal => Value::Float(r.water_litres.floor()),
    };
    let (lo, hi) = def.range;
    match v {
        Value::Float(x) => Value::Float(x.clamp(lo, hi)),
        Value::Int(i) => Value::Int((i as f64).clamp(lo, hi) as i64),
        other => other,
    }
}

/// A total as a register of `def`'s width shows it: a u32 counter wraps like a PLC's.
fn counter(def: &PointDef, total: u64) -> Value {
    let bits = 16 * u32::from(def.data_type.registers());
    let wrapped = if bits >= 64 {
        total
    } else {
        total % (1u64 << bits)
    };
    Value::Int(i64::try_from(wrapped).unwrap_or(i64::MAX))
}

/// Writes one point's value into the bank. A bool with a bit number sets or clears only that
/// bit of its register.
pub fn write_point(
    bank: &mut RegisterBank,
    def: &PointDef,
    value: &Value,
) -> Result<(), BankError> {
    let unit = bank
        .units
        .get_mut(&def.unit_id)
        .ok_or(BankError::NoUnit(def.unit_id))?;
    let out_of_image = BankError::OutOfImage {
        unit_id: def.unit_id,
        address: def.address,
    };
    let at = usize::from(def.address);
    let point = def.point();
    match (def.table, value) {
        (ModbusTable::Coil | ModbusTable::DiscreteInput, Value::Bool(b)) => {
            let table = if def.table == ModbusTable::Coil {
                &mut unit.coils
            } else {
                &mut unit.discrete_inputs
            };
            *table.get_mut(at).ok_or(out_of_image)? = *b;
        }
        (ModbusTable::Coil | ModbusTable::DiscreteInput, other) => {
            return Err(BankError::Encode(EncodeError::WrongType {
                expected: "bool",
                got: other.to_string(),
            }));
        }
        (ModbusTable::Holding | ModbusTable::Input, _) => {
            let table = if def.table == ModbusTable::Holding {
                &mut unit.holding
            } else {
                &mut unit.input
            };
            if let (ModbusDataType::Bool, Some(bit)) = (def.data_type, def.bit) {
                let Value::Bool(on) = *value else {
                    return Err(BankError::Encode(EncodeError::WrongType {
                        expected: "bool",
                        got: value.to_string(),
                    }));
                };
                let word = table.get_mut(at).ok_or(out_of_image)?;
                let mask = 1u16 << bit;
                *word = if on { *word | mask } else { *word & !mask };
            } else {
                let regs = encode_registers(&point, value).map_err(BankError::Encode)?;
                table
                    .get_mut(at..at + regs.len())
                    .ok_or(out_of_image)?
                    .copy_from_slice(&regs);
            }
        }
    }
    Ok(())
}

/// Reads a point from the bank; `None` if its unit or address is not in the bank.
pub fn read_point(bank: &RegisterBank, point: &ModbusPoint) -> Option<Value> {
    let unit = bank.units.get(&point.unit_id)?;
    let at = usize::from(point.address);
    match point.table {
        ModbusTable::Coil => unit.coils.get(at).map(|b| Value::Bool(*b)),
        ModbusTable::DiscreteInput => unit.discrete_inputs.get(at).map(|b| Value::Bool(*b)),
        ModbusTable::Holding | ModbusTable::Input => {
            let table = if point.table == ModbusTable::Holding {
                &unit.holding
            } else {
                &unit.input
            };
            let regs = table.get(at..at + usize::from(point.len()))?;
            Some(decode_registers(point, regs))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::map::point_def;
    use crate::plant::{FaultCode, MachineState};

    fn def(name: &str) -> &'static PointDef {
        point_def(name).unwrap_or_else(|| panic!("no point {name}"))
    }

    fn read(bank: &RegisterBank, name: &str) -> Value {
        read_point(bank, &def(name).point()).expect("mapped point is in the bank")
    }

    /// A bank owned by the test, with what [`new_bank`] puts in.
    fn fresh_bank() -> RegisterBank {
        RegisterBank {
            units: new_bank().lock().units.clone(),
        }
    }

    fn write(bank: &mut RegisterBank, name: &str, value: Value) {
        write_point(bank, def(name), &value).expect("writable point");
    }

    #[test]
    fn new_bank_holds_the_default_setpoints() {
        let bank = new_bank();
        let bank = bank.lock();
        assert_eq!(read(&bank, "speed_setpoint"), Value::Int(400));
        assert_eq!(read(&bank, "level_setpoint"), Value::Float(60.0));
        assert_eq!(read(&bank, "run_enable"), Value::Bool(true));
        assert_eq!(read(&bank, "pump_enable"), Value::Bool(true));
        assert_eq!(read(&bank, "machine_state"), Value::Int(1));
        assert_eq!(read(&bank, "status_running"), Value::Bool(true));
        assert_eq!(read(&bank, "status_idle"), Value::Bool(false));
        assert_eq!(read(&bank, "good_count"), Value::Int(4_718_592));
    }

    #[test]
    fn status_bits_share_one_register_without_clobbering_each_other() {
        let mut bank = fresh_bank();
        let word = |b: &RegisterBank| b.units[&FILLER_UNIT].input[8];
        // Running, run enabled, at speed.
        assert_eq!(word(&bank), 0b11001);
        write(&mut bank, "status_faulted", Value::Bool(true));
        write(&mut bank, "status_running", Value::Bool(false));
        assert_eq!(word(&bank), 0b11010);
    }

    #[test]
    fn setpoint_written_by_a_client_is_applied_and_read_back_clamped() {
        let mut bank = fresh_bank();
        let mut plant = Plant::new(1);
        // A client writes 9999 bpm; the filler clamps to its maximum.
        bank.units
            .get_mut(&FILLER_UNIT)
            .expect("filler unit")
            .holding[0] = 9999;
        tick(&mut bank, &mut plant, Duration::from_millis(100));
        assert_eq!(plant.readings().speed_setpoint, 600.0);
        assert_eq!(read(&bank, "speed_setpoint"), Value::Int(600));
        write(&mut bank, "level_setpoint", Value::Float(42.5));
        tick(&mut bank, &mut plant, Duration::from_millis(100));
        assert_eq!(plant.readings().level_setpoint, 42.5);
    }

    #[test]
    fn fault_reset_coil_is_a_pulse_that_clears_the_fault() {
        let mut bank = fresh_bank();
        let mut plant = Plant::new(2);
        plant.inject_fault(FaultCode::InfeedJam, Duration::from_secs(600));
        tick(&mut bank, &mut plant, Duration::from_secs(1));
        assert_eq!(read(&bank, "machine_state"), Value::Int(2));
        assert_eq!(read(&bank, "fault_code"), Value::Int(1));
        assert_eq!(read(&bank, "faulted"), Value::Bool(true));
        write(&mut bank, "fault_reset", Value::Bool(true));
        tick(&mut bank, &mut plant, Duration::from_millis(100));
        assert_eq!(plant.state(), MachineState::Running);
        assert_eq!(read(&bank, "fault_code"), Value::Int(0));
        assert_eq!(read(&bank, "fault_reset"), Value::Bool(false), "pulse");
    }

    #[test]
    fn run_enable_coil_stops_and_restarts_the_filler() {
        let mut bank = fresh_bank();
        let mut plant = Plant::new(3);
        write(&mut bank, "run_enable", Value::Bool(false));
        for _ in 0..100 {
            tick(&mut bank, &mut plant, Duration::from_millis(100));
        }
        assert_eq!(read(&bank, "idle"), Value::Bool(true));
        assert_eq!(read(&bank, "speed_actual"), Value::Float(0.0));
        assert_eq!(read(&bank, "status_run_enabled"), Value::Bool(false));
        write(&mut bank, "run_enable", Value::Bool(true));
        for _ in 0..300 {
            tick(&mut bank, &mut plant, Duration::from_millis(100));
        }
        let speed = read(&bank, "speed_actual").as_f64().expect("float");
        assert!((speed - 400.0).abs() < 8.0, "speed {speed}");
    }

    #[test]
    fn counters_wrap_like_a_u32_register() {
        let d = def("good_count");
        assert_eq!(counter(d, (1 << 32) + 5), Value::Int(5));
        assert_eq!(counter(def("water_total"), 1 << 40), Value::Int(1 << 40));
    }

    #[test]
    fn writing_a_number_to_a_coil_is_refused() {
        let mut bank = fresh_bank();
        assert!(matches!(
            write_point(&mut bank, def("run_enable"), &Value::Int(1)),
            Err(BankError::Encode(_))
        ));
        let mut empty = RegisterBank::default();
        assert_eq!(
            write_point(&mut empty, def("run_enable"), &Value::Bool(true)),
            Err(BankError::NoUnit(1))
        );
    }
}
