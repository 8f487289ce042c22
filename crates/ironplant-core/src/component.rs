//! The synchronous parts of the component model: processors (computed tags, rules, alarms,
//! validators) and device writers (the one write path). The async parts — sources and sinks and
//! their supervision — live in `ironplant-runtime`, which composes the platform.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::event::Event;
use crate::namespace::TagMeta;
use crate::sample::{Sample, Timestamp, Value};

/// What a processor hands back besides the batch it may have changed.
#[derive(Debug, Default)]
pub struct ProcessorOutput {
    /// Events to publish on the event bus (never blocks).
    pub events: Vec<Event>,
}

/// A synchronous transform on the tag bus's publish path: it sees every batch before any
/// subscriber does, in processor order, and may change samples (a validator lowering a
/// sample's quality), append derived samples (computed tags) and raise events.
///
/// Processors run under one lock on the publishing task, so they must be quick and must not
/// block or await; time comes in as `now`. They cannot deadlock the bus: they never subscribe
/// to it, and what they add goes out with the batch that caused it. A processor that panics is
/// taken out of the pipeline, reported as a system event and rebuilt by the runtime's
/// supervisor after a back-off.
pub trait Processor: Send {
    /// A short name for logs, metrics and events, e.g. `alarms`.
    fn name(&self) -> &str;

    /// Called with every batch before fan-out. Derived samples are pushed onto `batch`; the tags
    /// they are for must exist in the namespace before the processor is installed.
    fn process(&mut self, batch: &mut Vec<Sample>, now: Timestamp, out: &mut ProcessorOutput);

    /// How often [`Processor::tick`] wants to run (timers: on-delays, staleness), if at all.
    fn tick_interval(&self) -> Option<Duration> {
        None
    }

    /// Called every [`Processor::tick_interval`]: may push samples into `batch` (published like
    /// a source's batch, through the processors after this one) and raise events.
    fn tick(&mut self, now: Timestamp, batch: &mut Vec<Sample>, out: &mut ProcessorOutput) {
        let _ = (now, batch, out);
    }
}

/// A boxed future, for object-safe async traits without a macro crate.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a device said to a write.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteAck {
    /// How the device acknowledged, in its protocol's words (e.g. "function 6 (write single
    /// register) echoed unit 1 holding 0 = 0x10e1; read back 4321", "DCMD on … set \"Speed\"
    /// (by alias 2) to 21.7 as Float; the edge node reported the value 12ms later").
    pub detail: String,
    /// The value the device reported back: a Modbus read-back of the written registers, the
    /// value in the Sparkplug report that confirmed the command.
    pub echoed: Option<Value>,
}

/// Why a write did not reach the device or the device refused it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DeviceWriteError {
    #[error("the value {value} does not fit the tag ({why})")]
    BadValue { value: String, why: String },
    #[error("the tag is read-only at the device ({0})")]
    ReadOnly(String),
    /// The device does not know the tag (no such point on a Modbus device, no metric of that
    /// name in a Sparkplug birth).
    #[error("the device does not serve this tag ({0})")]
    UnknownTag(String),
    /// Not connected, with why (e.g. "edge node g/n is offline (NDEATH)").
    #[error("the device is not connected: {0}")]
    NotConnected(String),
    #[error("the device did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the device refused the write: {0}")]
    Refused(String),
    #[error("communication failed: {0}")]
    Comm(String),
    #[error("the connector is stopped")]
    Stopped,
}

/// The one write path to devices: implemented by each connector that can write (Modbus, the
/// Sparkplug host, later OPC UA) and reached by tag path through the runtime, which looks up the
/// tag's writer (`TagMeta::device`). The safety logic (authorisation, envelope, interlocks,
/// audit) is the command path's, on top of this.
pub trait DeviceWriter: Send + Sync {
    /// Writes `value` to the device behind `tag`, resolving when the device acknowledged it.
    fn write(
        &self,
        tag: &TagMeta,
        value: Value,
    ) -> BoxFuture<'static, Result<WriteAck, DeviceWriteError>>;
}

impl fmt::Debug for dyn DeviceWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DeviceWriter")
    }
}
