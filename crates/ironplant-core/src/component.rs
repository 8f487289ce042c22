//! The component model's vocabulary: sources (connectors, ingest), sinks (historian, UNS,
//! uplink), services, synchronous processors (computed tags, rules, alarms, validators) and
//! device writers (the one write path). A connector implements these in its own crate;
//! `ironplant-runtime` composes and supervises them (start order, restarts, shutdown).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::bus::{Batch, Overflow, Subscription, TagBus};
use crate::event::{Event, EventBus};
use crate::namespace::LiveNamespace;
use crate::namespace::TagMeta;
use crate::sample::{Sample, Timestamp, Value};
use crate::writers::Writers;

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

/// Why a component stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentError(pub String);

impl fmt::Display for ComponentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ComponentError {}

impl ComponentError {
    pub fn new(message: impl Into<String>) -> ComponentError {
        ComponentError(message.into())
    }
}

/// A stop signal: resolves once the platform shuts the component down.
#[derive(Clone)]
pub struct Shutdown {
    rx: watch::Receiver<bool>,
}

impl Shutdown {
    /// A signal that fires when `rx` turns true (or its sender goes away).
    pub fn new(rx: watch::Receiver<bool>) -> Shutdown {
        Shutdown { rx }
    }

    /// A signal that never fires (tests and embedders that stop by dropping).
    pub fn never() -> Shutdown {
        let (tx, rx) = watch::channel(false);
        // Keep the sender alive for the life of the process: a dropped one would fire.
        std::mem::forget(tx);
        Shutdown { rx }
    }

    /// Resolves when the component must stop (at once if it already must).
    pub async fn requested(&mut self) {
        // An error means the sender is gone: stop as well.
        let _ = self.rx.wait_for(|stop| *stop).await;
    }

    pub fn is_requested(&self) -> bool {
        *self.rx.borrow()
    }
}

/// What a source works with.
#[derive(Clone)]
pub struct SourceContext {
    pub bus: TagBus,
    pub events: EventBus,
    pub namespace: Arc<LiveNamespace>,
    /// Where a connector that can write registers its [`DeviceWriter`] for the sources it owns.
    pub writers: Writers,
    pub shutdown: Shutdown,
}

/// What a sink works with. `batches` is the sink's own bus subscription, created before any
/// source started and kept across restarts.
pub struct SinkContext {
    pub batches: Arc<tokio::sync::Mutex<Subscription>>,
    pub events: EventBus,
    pub namespace: Arc<LiveNamespace>,
    pub shutdown: Shutdown,
}

impl SinkContext {
    /// This run's input: the sink's subscription, held until the returned value is dropped.
    pub async fn input(&self) -> SinkInput {
        SinkInput {
            sub: self.batches.clone().lock_owned().await,
            shutdown: self.shutdown.clone(),
            draining: false,
        }
    }
}

/// A sink's batches with the shutdown rule built in: [`SinkInput::next`] waits for the next
/// batch until shutdown is requested, then returns what is still queued (sources have
/// stopped by then) and `None`.
pub struct SinkInput {
    sub: tokio::sync::OwnedMutexGuard<Subscription>,
    shutdown: Shutdown,
    draining: bool,
}

impl SinkInput {
    /// The next batch; `None` once the bus is gone or, after shutdown, the queue is empty.
    pub async fn next(&mut self) -> Option<Batch> {
        if !self.draining {
            tokio::select! {
                b = self.sub.recv() => return b,
                () = self.shutdown.requested() => self.draining = true,
            }
        }
        self.sub.try_recv()
    }
}

/// A producer of samples: a connector (Modbus, Sparkplug, OPC UA) or an ingest path.
pub trait Source: Send + Sync + 'static {
    /// A stable name for logs, metrics and events, e.g. `modbus:filler`.
    fn name(&self) -> String;

    /// Runs until `ctx.shutdown` is requested (then returns `Ok`). Returning `Ok` before that,
    /// returning an error or panicking counts as a failure: the supervisor restarts it.
    fn run(self: Arc<Self>, ctx: SourceContext) -> BoxFuture<'static, Result<(), ComponentError>>;
}

/// How a sink wants its bus subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SinkQueue {
    /// Batches queued before `overflow` applies.
    pub capacity: usize,
    /// `Block` for sinks that must see every sample (the historian), `DropNewest` for those
    /// that must never slow the sources (UNS, live views).
    pub overflow: Overflow,
}

/// A consumer of samples: the historian, the UNS publisher, an uplink.
pub trait Sink: Send + Sync + 'static {
    fn name(&self) -> String;

    fn queue(&self) -> SinkQueue;

    /// Consumes `ctx.batches` until it ends or shutdown is requested; at shutdown, drains what
    /// is already queued first. A failure (error, early return, panic) is restarted.
    fn run(self: Arc<Self>, ctx: SinkContext) -> BoxFuture<'static, Result<(), ComponentError>>;
}

/// Any other long-running task the platform owns (a listener, a bridge): restarted and reported
/// like sources and sinks, stopped after the sources and before the sinks.
pub trait Service: Send + Sync + 'static {
    fn name(&self) -> String;

    fn run(self: Arc<Self>, shutdown: Shutdown) -> BoxFuture<'static, Result<(), ComponentError>>;
}
