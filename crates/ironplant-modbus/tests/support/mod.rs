//! Shared by the connector's tests: one device and its one point.

use std::time::Duration;

use ironplant_core::config::{
    ByteOrder, DeviceConfig, ModbusDataType, ModbusPoint, ModbusTable, Protocol, WordOrder,
};
use ironplant_core::TagId;
use ironplant_modbus::PollPoint;

/// Device `plc`, unit 1, at `address`.
pub fn device(address: String, poll: Duration, timeout: Duration) -> DeviceConfig {
    DeviceConfig {
        id: "plc".into(),
        protocol: Protocol::ModbusTcp,
        address,
        unit_id: 1,
        poll_interval: poll,
        timeout,
        reconnect_max: Duration::from_secs(2),
        max_gap: 0,
        description: String::new(),
    }
}

/// Holding register 0 of unit 1, a u16, as tag 0.
pub fn one_point() -> Vec<PollPoint> {
    vec![PollPoint {
        tag: TagId(0),
        point: ModbusPoint {
            unit_id: 1,
            table: ModbusTable::Holding,
            address: 0,
            data_type: ModbusDataType::U16,
            word_order: WordOrder::BigEndian,
            byte_order: ByteOrder::BigEndian,
            bit: None,
            scale: 1.0,
            offset: 0.0,
            count: 1,
        },
        range: None,
    }]
}
