//! Modbus TCP for Ironplant: the polling connector that turns device registers into samples on
//! the tag bus, and a register-bank server (used by the simulated plant and by tests).
//!
//! Layers: [`codec`] converts between registers and values (pure), [`plan`] groups points into
//! as few requests as the protocol allows (pure), [`poller`] is the async shell that owns one
//! device's connection, and [`server`] serves a shared register image.

pub mod codec;
pub mod ident;
pub mod plan;
pub mod poller;
pub mod server;
pub mod source;

pub use plan::{plan_reads, ReadRequest};
pub use poller::{DeviceHandle, DevicePoller, ModbusWriter, PollObserver, PollPoint};
pub use server::{serve, RegisterBank, SharedBank, UnitImage};
pub use source::ModbusSource;
