//! The register map: where every simulated signal lives in the two Modbus units, and how it is
//! encoded. This table is the only place that says so; the bank glue, the crate docs (checked by
//! a test) and `examples/bottling.toml` (checked by a test) all follow it.

use ironplant_core::config::{ByteOrder, ModbusDataType, ModbusPoint, ModbusTable, WordOrder};

/// Unit id of the filler PLC.
pub const FILLER_UNIT: u8 = 1;
/// Unit id of the utilities PLC (buffer tank, energy meter, compressed air, water).
pub const UTILITIES_UNIT: u8 = 2;

/// A value of the plant, independent of where it is mapped (a signal may appear at several
/// addresses, e.g. `running` as a discrete input and as a bit of the status word).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Signal {
    // Filler commands.
    RunEnable,
    FaultReset,
    SpeedSetpoint,
    // Filler outputs.
    Running,
    Faulted,
    Idle,
    AtSpeed,
    SpeedActual,
    MotorCurrent,
    MotorTemp,
    ProductTemp,
    LinePressure,
    MachineState,
    FaultCode,
    GoodCount,
    RejectCount,
    Vibration,
    // Utilities commands.
    PumpEnable,
    LevelSetpoint,
    // Utilities outputs.
    LevelLow,
    LevelHigh,
    PumpRunning,
    CompressorRunning,
    TankLevel,
    Inflow,
    Outflow,
    TankTemp,
    EnergyTotal,
    ActivePower,
    Voltage,
    PowerFactor,
    AirPressure,
    WaterTotal,
}

/// How a point behaves, which says what a reader may expect of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Written by clients, read by the plant (coils and holding registers). The plant writes
    /// back the value it applied, so a clamped setpoint reads back clamped.
    Command,
    /// A noisy analog value: changes on every tick.
    Measurement,
    /// Monotonic total; a `u32` counter wraps like a PLC's.
    Counter,
    /// Discrete state: changes only on events.
    Status,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Command => "command",
            Kind::Measurement => "measurement",
            Kind::Counter => "counter",
            Kind::Status => "status",
        }
    }
}

/// One entry of the register map.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PointDef {
    /// Last level of the tag path in the example config, unique across the map.
    pub name: &'static str,
    pub signal: Signal,
    pub kind: Kind,
    pub unit_id: u8,
    pub table: ModbusTable,
    /// 0-based protocol address.
    pub address: u16,
    pub data_type: ModbusDataType,
    pub word_order: WordOrder,
    pub byte_order: ByteOrder,
    /// For a bool in one bit of a register (0 = least significant).
    pub bit: Option<u8>,
    /// Engineering value = raw × scale + offset.
    pub scale: f64,
    pub offset: f64,
    /// Engineering unit; empty where the value has none (booleans, codes, ratios).
    pub unit: &'static str,
    /// Engineering range; the simulator clamps to it, so readers never see a value outside.
    pub range: (f64, f64),
}

impl PointDef {
    const fn new(
        unit_id: u8,
        table: ModbusTable,
        address: u16,
        name: &'static str,
        signal: Signal,
        data_type: ModbusDataType,
        kind: Kind,
    ) -> PointDef {
        PointDef {
            name,
            signal,
            kind,
            unit_id,
            table,
            address,
            data_type,
            word_order: WordOrder::BigEndian,
            byte_order: ByteOrder::BigEndian,
            bit: None,
            scale: 1.0,
            offset: 0.0,
            unit: "",
            // Booleans read as 0/1; every other entry must set its range (a test checks).
            range: if matches!(data_type, ModbusDataType::Bool) {
                (0.0, 1.0)
            } else {
                (f64::NAN, f64::NAN)
            },
        }
    }

    const fn scale(mut self, scale: f64) -> PointDef {
        self.scale = scale;
        self
    }

    /// Least significant word first ("CDAB").
    const fn word_swapped(mut self) -> PointDef {
        self.word_order = WordOrder::LittleEndian;
        self
    }

    /// Bytes swapped inside each register ("BADC").
    const fn byte_swapped(mut self) -> PointDef {
        self.byte_order = ByteOrder::LittleEndian;
        self
    }

    const fn bit(mut self, bit: u8) -> PointDef {
        self.bit = Some(bit);
        self
    }

    const fn unit(mut self, unit: &'static str) -> PointDef {
        self.unit = unit;
        self
    }

    const fn range(mut self, lo: f64, hi: f64) -> PointDef {
        self.range = (lo, hi);
        self
    }

    const fn kind(mut self, kind: Kind) -> PointDef {
        self.kind = kind;
        self
    }

    /// The point as the connector sees it.
    pub fn point(&self) -> ModbusPoint {
        ModbusPoint {
            unit_id: self.unit_id,
            table: self.table,
            address: self.address,
            data_type: self.data_type,
            word_order: self.word_order,
            byte_order: self.byte_order,
            bit: self.bit,
            scale: self.scale,
            offset: self.offset,
            count: 1,
        }
    }
}

const fn coil(unit_id: u8, address: u16, name: &'static str, signal: Signal) -> PointDef {
    PointDef::new(
        unit_id,
        ModbusTable::Coil,
        address,
        name,
        signal,
        ModbusDataType::Bool,
        Kind::Command,
    )
}

const fn discrete(unit_id: u8, address: u16, name: &'static str, signal: Signal) -> PointDef {
    PointDef::new(
        unit_id,
        ModbusTable::DiscreteInput,
        address,
        name,
        signal,
        ModbusDataType::Bool,
        Kind::Status,
    )
}

const fn holding(
    unit_id: u8,
    address: u16,
    name: &'static str,
    signal: Signal,
    data_type: ModbusDataType,
) -> PointDef {
    PointDef::new(
        unit_id,
        ModbusTable::Holding,
        address,
        name,
        signal,
        data_type,
        Kind::Command,
    )
}

const fn input(
    unit_id: u8,
    address: u16,
    name: &'static str,
    signal: Signal,
    data_type: ModbusDataType,
) -> PointDef {
    PointDef::new(
        unit_id,
        ModbusTable::Input,
        address,
        name,
        signal,
        data_type,
        Kind::Measurement,
    )
}

/// Bit `bit` of the filler's status word (input register 8).
const fn status_bit(bit: u8, name: &'static str, signal: Signal) -> PointDef {
    input(FILLER_UNIT, STATUS_WORD, name, signal, ModbusDataType::Bool)
        .bit(bit)
        .kind(Kind::Status)
}

const STATUS_WORD: u16 = 8;
const U32_MAX: f64 = u32::MAX as f64;

/// The register map of both units. Documented in the crate docs; see there for the meaning of
/// the state and fault codes.
pub const REGISTER_MAP: &[PointDef] = {
    use ModbusDataType::*;
    use Signal::*;
    const F: u8 = FILLER_UNIT;
    const U: u8 = UTILITIES_UNIT;
    &[
        // ---- Unit 1: filler PLC ----
        coil(F, 0, "run_enable", RunEnable),
        coil(F, 1, "fault_reset", FaultReset),
        discrete(F, 0, "running", Running),
        discrete(F, 1, "faulted", Faulted),
        discrete(F, 2, "idle", Idle),
        holding(F, 0, "speed_setpoint", SpeedSetpoint, U16)
            .unit("bpm")
            .range(0.0, 600.0),
        input(F, 0, "speed_actual", SpeedActual, F32)
            .unit("bpm")
            .range(0.0, 700.0),
        input(F, 2, "motor_current", MotorCurrent, F32)
            .word_swapped()
            .unit("A")
            .range(0.0, 40.0),
        input(F, 4, "motor_temp", MotorTemp, I16)
            .scale(0.1)
            .unit("°C")
            .range(-20.0, 150.0),
        input(F, 5, "product_temp", ProductTemp, I16)
            .scale(0.01)
            .unit("°C")
            .range(-5.0, 25.0),
        input(F, 6, "line_pressure", LinePressure, U16)
            .scale(0.001)
            .unit("bar")
            .range(0.0, 6.0),
        input(F, 7, "machine_state", MachineState, U16)
            .kind(Kind::Status)
            .range(0.0, 2.0),
        status_bit(0, "status_running", Running),
        status_bit(1, "status_faulted", Faulted),
        status_bit(2, "status_idle", Idle),
        status_bit(3, "status_run_enabled", RunEnable),
        status_bit(4, "status_at_speed", AtSpeed),
        input(F, 9, "fault_code", FaultCode, U16)
            .kind(Kind::Status)
            .range(0.0, 6.0),
        input(F, 10, "good_count", GoodCount, U32)
            .kind(Kind::Counter)
            .unit("bottles")
            .range(0.0, U32_MAX),
        input(F, 12, "reject_count", RejectCount, U32)
            .word_swapped()
            .kind(Kind::Counter)
            .unit("bottles")
            .range(0.0, U32_MAX),
        input(F, 14, "vibration", Vibration, U16)
            .scale(0.01)
            .unit("mm/s")
            .range(0.0, 50.0),
        // ---- Unit 2: utilities PLC ----
        coil(U, 0, "pump_enable", PumpEnable),
        discrete(U, 0, "level_low", LevelLow),
        discrete(U, 1, "level_high", LevelHigh),
        discrete(U, 2, "pump_running", PumpRunning),
        discrete(U, 3, "compressor_running", CompressorRunning),
        holding(U, 0, "level_setpoint", LevelSetpoint, U16)
            .scale(0.1)
            .unit("%")
            .range(0.0, 100.0),
        input(U, 0, "tank_level", TankLevel, F32)
            .unit("%")
            .range(0.0, 100.0),
        input(U, 2, "inflow", Inflow, F32)
            .word_swapped()
            .unit("L/min")
            .range(0.0, 700.0),
        input(U, 4, "outflow", Outflow, F32)
            .byte_swapped()
            .unit("L/min")
            .range(0.0, 700.0),
        input(U, 6, "tank_temp", TankTemp, I16)
            .scale(0.1)
            .unit("°C")
            .range(-20.0, 60.0),
        input(U, 7, "energy_total", EnergyTotal, F64)
            .kind(Kind::Counter)
            .unit("kWh")
            .range(0.0, 1e12),
        input(U, 11, "active_power", ActivePower, F32)
            .unit("kW")
            .range(0.0, 200.0),
        input(U, 13, "voltage", Voltage, U16)
            .scale(0.1)
            .unit("V")
            .range(0.0, 500.0),
        input(U, 14, "power_factor", PowerFactor, U16)
            .scale(0.001)
            .range(0.0, 1.0),
        input(U, 15, "air_pressure", AirPressure, U16)
            .scale(0.01)
            .unit("bar")
            .range(0.0, 10.0),
        input(U, 16, "water_total", WaterTotal, U64)
            .kind(Kind::Counter)
            .unit("L")
            .range(0.0, 1e15),
    ]
};

/// The map entry named `name`.
pub fn point_def(name: &str) -> Option<&'static PointDef> {
    REGISTER_MAP.iter().find(|d| d.name == name)
}

/// Items each table of `unit_id` needs to hold every mapped point.
pub fn image_size(unit_id: u8) -> usize {
    REGISTER_MAP
        .iter()
        .filter(|d| d.unit_id == unit_id)
        .map(|d| d.point().last_address() as usize + 1)
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ironplant_core::Value;
    use ironplant_modbus::codec::{decode_registers, encode_registers};
    use std::collections::HashSet;

    #[test]
    fn names_are_unique_and_valid_path_levels() {
        let mut seen = HashSet::new();
        for d in REGISTER_MAP {
            assert!(seen.insert(d.name), "duplicate name {}", d.name);
            assert!(
                d.name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{} is not snake_case",
                d.name
            );
        }
    }

    #[test]
    fn points_do_not_overlap_except_distinct_bits_of_one_register() {
        for (i, a) in REGISTER_MAP.iter().enumerate() {
            for b in &REGISTER_MAP[i + 1..] {
                if (a.unit_id, a.table) != (b.unit_id, b.table) {
                    continue;
                }
                let (pa, pb) = (a.point(), b.point());
                let overlap = u32::from(pb.address) <= pa.last_address()
                    && u32::from(pa.address) <= pb.last_address();
                let distinct_bits = matches!((a.bit, b.bit), (Some(x), Some(y)) if x != y);
                assert!(!overlap || distinct_bits, "{} overlaps {}", a.name, b.name);
            }
        }
    }

    #[test]
    fn commands_are_writable_and_everything_else_is_not() {
        for d in REGISTER_MAP {
            assert_eq!(
                d.kind == Kind::Command,
                d.table.is_writable(),
                "{}: kind {:?} in table {:?}",
                d.name,
                d.kind,
                d.table
            );
        }
    }

    #[test]
    fn ranges_are_set_and_both_ends_encode_and_round_trip() {
        for d in REGISTER_MAP {
            let (lo, hi) = d.range;
            assert!(lo < hi, "{}: range not set or empty", d.name);
            if d.data_type == ModbusDataType::Bool {
                assert_eq!(d.range, (0.0, 1.0), "{}", d.name);
                assert!(d.table.is_bits() || d.bit.is_some(), "{}", d.name);
                continue;
            }
            assert!(d.bit.is_none(), "{}: bit on a {:?}", d.name, d.data_type);
            let p = d.point();
            for end in [lo, hi] {
                let regs = encode_registers(&p, &Value::Float(end))
                    .unwrap_or_else(|e| panic!("{} cannot hold {end}: {e}", d.name));
                let back = decode_registers(&p, &regs).as_f64().expect("numeric");
                let tolerance = d.scale.abs() / 2.0 + end.abs() * 1e-6;
                assert!(
                    (back - end).abs() <= tolerance,
                    "{}: {end} reads back as {back}",
                    d.name
                );
            }
        }
    }

    #[test]
    fn image_sizes_cover_both_units() {
        assert_eq!(image_size(FILLER_UNIT), 15);
        assert_eq!(image_size(UTILITIES_UNIT), 20);
        assert_eq!(image_size(9), 0);
    }
}
