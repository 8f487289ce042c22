//! The async shell that owns one Modbus TCP device: connects, polls on its interval, decodes,
//! publishes samples, reconnects with capped exponential back-off, and performs writes.
//!
//! One task per device, so a device that hangs only delays its own tags: every network step
//! (resolve, connect, each request) is bounded by the device's timeout.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use ironplant_core::config::{DeviceConfig, ModbusDataType, ModbusPoint, ModbusTable};
use ironplant_core::{
    BoxFuture, DeviceWriteError, DeviceWriter, Quality, QualityLevel, QualityReason, Sample,
    TagBus, TagId, TagMeta, Timestamp, Value, WriteAck,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::{timeout, Instant, MissedTickBehavior};
use tokio_modbus::client::{Client, Context, Reader};
use tokio_modbus::prelude::{ExceptionCode, Slave, SlaveContext};
use tokio_modbus::{Request, Response};

use crate::codec::{decode_registers, encode_registers, EncodeError};
use crate::plan::{plan_reads, ReadRequest};

/// A tag served by a device.
#[derive(Debug, Clone)]
pub struct PollPoint {
    pub tag: TagId,
    pub point: ModbusPoint,
    /// Engineering range; values outside it are marked Uncertain(OutOfRange).
    pub range: Option<(f64, f64)>,
}

/// Receives what the poller observes, for metrics. Implemented by the runtime.
pub trait PollObserver: Send + Sync + 'static {
    /// One request finished (successfully or not) after `latency`.
    fn request(&self, device: &str, latency: Duration, ok: bool);
    /// The connection went up or down.
    fn connection(&self, device: &str, up: bool);
    /// Connecting failed or a connection was dropped, for `why` (e.g. "no answer within 1s",
    /// "connection refused by 10.0.0.5:502", "the device closed the connection").
    fn comm_failure(&self, _device: &str, _why: &str) {}
    /// The device identified itself on a new connection (function 43/14): a change between
    /// connections is another PLC answering at its address.
    fn identity(&self, _device: &str, _identity: &crate::ident::DeviceIdentity) {}
}

/// A no-op observer, for tests and tools.
pub struct NoObserver;

impl PollObserver for NoObserver {
    fn request(&self, _: &str, _: Duration, _: bool) {}
    fn connection(&self, _: &str, _: bool) {}
}

pub(crate) struct WriteCmd {
    tag: TagId,
    value: Value,
    reply: oneshot::Sender<Result<WriteAck, DeviceWriteError>>,
}

/// Handle to a running device task. Dropping it stops the task.
pub struct DeviceHandle {
    id: String,
    cmds: mpsc::Sender<WriteCmd>,
    task: JoinHandle<()>,
}

impl DeviceHandle {
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The device's [`DeviceWriter`], for the runtime's registry of writers. It only queues
    /// writes for the device task; the task stops when this handle is dropped.
    pub fn writer(&self) -> ModbusWriter {
        ModbusWriter {
            cmds: self.cmds.clone(),
        }
    }

    /// Writes `value` to the tag's register(s) or coil and waits for the device's answer and
    /// the read-back (see [`ModbusWriter`]).
    pub async fn write(&self, tag: TagId, value: Value) -> Result<WriteAck, DeviceWriteError> {
        send_write(self.cmds.clone(), tag, value).await
    }
}

impl Drop for DeviceHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Writes through one device task, queued behind its current poll so writes and polls never
/// interleave on the connection. The value is checked against the point (type, range, whole
/// number for unscaled integers, bool for coils and bits) before anything is sent. The device's
/// echo is checked (address and value of functions 5 and 6, address and count of function 16),
/// then the written coil or registers are read back in the same task and decoded: that value is
/// [`WriteAck::echoed`] (a device that clamps or ignores the write shows it there).
#[derive(Clone)]
pub struct ModbusWriter {
    pub(crate) cmds: mpsc::Sender<WriteCmd>,
}

impl DeviceWriter for ModbusWriter {
    fn write(
        &self,
        tag: &TagMeta,
        value: Value,
    ) -> BoxFuture<'static, Result<WriteAck, DeviceWriteError>> {
        Box::pin(send_write(self.cmds.clone(), tag.id, value))
    }
}

async fn send_write(
    cmds: mpsc::Sender<WriteCmd>,
    tag: TagId,
    value: Value,
) -> Result<WriteAck, DeviceWriteError> {
    let (reply, rx) = oneshot::channel();
    cmds.send(WriteCmd { tag, value, reply })
        .await
        .map_err(|_| DeviceWriteError::Stopped)?;
    rx.await.map_err(|_| DeviceWriteError::Stopped)?
}

/// The Modbus request(s) a write becomes.
#[derive(Debug, Clone, PartialEq)]
enum WriteOp {
    /// Function 5.
    Coil(bool),
    /// Function 6.
    Register(u16),
    /// Function 16.
    Registers(Vec<u16>),
    /// Function 3 then 6: one bit of a holding register, the others kept.
    Bit { bit: u8, on: bool },
}

/// Checks `value` against the point and plans the write (pure).
fn plan_write(p: &ModbusPoint, value: &Value) -> Result<WriteOp, EncodeError> {
    let want_bool = |expected| match value {
        Value::Bool(b) => Ok(*b),
        _ => Err(EncodeError::WrongType {
            expected,
            got: value.to_string(),
        }),
    };
    match (p.table, p.data_type, p.bit) {
        (ModbusTable::Coil, _, _) => Ok(WriteOp::Coil(want_bool("bool (coil)")?)),
        (_, ModbusDataType::Bool, Some(bit)) => Ok(WriteOp::Bit {
            bit,
            on: want_bool("bool (bit of a register)")?,
        }),
        _ => {
            let mut words = encode_registers(p, value)?;
            Ok(if words.len() == 1 {
                WriteOp::Register(words.remove(0))
            } else {
                WriteOp::Registers(words)
            })
        }
    }
}

/// Capped exponential back-off: min, 2·min, 4·min, … up to max.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max: max.max(min),
            next: min,
        }
    }
    /// The delay before the next attempt; doubles the one after.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }
    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

/// Everything one device task needs.
pub struct DevicePoller {
    pub config: DeviceConfig,
    pub points: Vec<PollPoint>,
    pub bus: TagBus,
    pub observer: Arc<dyn PollObserver>,
}

enum ReadOutcome {
    Ok,
    Exception(ExceptionCode),
    Broken(String),
}

struct State {
    cfg: DeviceConfig,
    points: Vec<PollPoint>,
    plan: Vec<ReadRequest>,
    bus: TagBus,
    observer: Arc<dyn PollObserver>,
    /// The one connection to the device (never more: the old one is dropped, and its socket
    /// closed, before a new one is opened).
    conn: Option<Context>,
    /// What the connection's socket has seen, to tell why a request failed.
    link: Arc<LinkState>,
    /// Whether the device answered anything on this connection. A connection that never answered
    /// does not reset the back-off: a device that accepts TCP but is otherwise dead is retried
    /// less and less often, like one that refuses.
    answered: bool,
    backoff: Backoff,
    retry_at: Instant,
    /// Last value and quality published per point.
    last: Vec<(Value, Option<Quality>)>,
    /// Whether the last connection attempt failed (to log a failure once, not every retry).
    down_logged: bool,
    /// Whether the device answers device identification (`None`: not asked yet). A device
    /// that does not is never asked again.
    identifies: Option<bool>,
    /// A new connection whose device is to identify itself before the next reads.
    identify_pending: bool,
}

impl DevicePoller {
    /// Starts the device task on the current tokio runtime (unsupervised; the platform runs
    /// devices as [`crate::ModbusSource`]s instead).
    pub fn spawn(self) -> DeviceHandle {
        let (tx, mut rx) = mpsc::channel(64);
        let id = self.config.id.clone();
        let state = self.into_state();
        let task = tokio::spawn(async move { state.run(&mut rx).await });
        DeviceHandle { id, cmds: tx, task }
    }

    /// Polls and performs the writes of `cmds` until `cmds` closes: a fresh connection and
    /// state on every call.
    pub(crate) async fn run(self, cmds: &mut mpsc::Receiver<WriteCmd>) {
        self.into_state().run(cmds).await
    }

    fn into_state(self) -> State {
        let modbus_points: Vec<ModbusPoint> = self.points.iter().map(|p| p.point.clone()).collect();
        let plan = plan_reads(&modbus_points, self.config.max_gap);
        let n = self.points.len();
        State {
            // The first retry comes at the next poll anyway: back off from there.
            backoff: Backoff::new(
                self.config.poll_interval.max(Duration::from_millis(100)),
                self.config.reconnect_max,
            ),
            cfg: self.config,
            points: self.points,
            plan,
            bus: self.bus,
            observer: self.observer,
            conn: None,
            link: Arc::new(LinkState::default()),
            answered: false,
            retry_at: Instant::now(),
            last: vec![(Value::Null, None); n],
            down_logged: false,
            identifies: None,
            identify_pending: false,
        }
    }
}

impl State {
    async fn run(mut self, cmds: &mut mpsc::Receiver<WriteCmd>) {
        if self.cfg.poll_interval.is_zero() {
            return self.run_back_to_back(cmds).await;
        }
        let mut tick = tokio::time::interval(self.cfg.poll_interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => self.poll_cycle().await,
                cmd = cmds.recv() => match cmd {
                    Some(cmd) => {
                        let result = self.write(cmd.tag, &cmd.value).await;
                        let _ = cmd.reply.send(result);
                    }
                    None => return,
                },
            }
        }
    }

    /// Polls as fast as the device answers (benchmarks; config validation forbids a zero interval).
    async fn run_back_to_back(mut self, cmds: &mut mpsc::Receiver<WriteCmd>) {
        loop {
            self.poll_cycle().await;
            match cmds.try_recv() {
                Ok(cmd) => {
                    let result = self.write(cmd.tag, &cmd.value).await;
                    let _ = cmd.reply.send(result);
                }
                Err(mpsc::error::TryRecvError::Disconnected) => return,
                Err(mpsc::error::TryRecvError::Empty) => tokio::task::yield_now().await,
            }
        }
    }

    async fn connect(&mut self) -> bool {
        if self.conn.is_some() {
            return true;
        }
        if Instant::now() < self.retry_at {
            return false;
        }
        let addr = self.cfg.address.clone();
        let link = Arc::new(LinkState::default());
        let attempt = async {
            let addrs = tokio::net::lookup_host(&addr)
                .await
                .map_err(|e| format!("cannot resolve {addr}: {e}"))?;
            let mut last_err = format!("{addr} resolves to no address");
            for sa in addrs {
                // Dropped unconnected (and its socket closed) if the timeout below fires.
                match TcpStream::connect(sa).await {
                    Ok(stream) => {
                        let _ = stream.set_nodelay(true);
                        let stream = WatchedStream {
                            inner: stream,
                            link: link.clone(),
                        };
                        return Ok(tokio_modbus::client::tcp::attach_slave(
                            stream,
                            Slave(self.cfg.unit_id),
                        ));
                    }
                    Err(e) => last_err = connect_error(sa, &e),
                }
            }
            Err(last_err)
        };
        match timeout(self.cfg.timeout, attempt).await {
            Ok(Ok(ctx)) => {
                tracing::debug!(device = %self.cfg.id, address = %addr, "TCP connected");
                self.conn = Some(ctx);
                self.link = link;
                self.answered = false;
                self.identify_pending = self.identifies != Some(false);
                true
            }
            Ok(Err(why)) => {
                self.failed(&why);
                false
            }
            Err(_) => {
                self.failed(&format!(
                    "no answer to connect within {:?}",
                    self.cfg.timeout
                ));
                false
            }
        }
    }

    /// The device answered a request (data or an exception): the connection is healthy.
    fn answered(&mut self) {
        if !self.answered {
            self.answered = true;
            self.backoff.reset();
            tracing::info!(device = %self.cfg.id, address = %self.cfg.address, "connected");
            self.down_logged = false;
            self.observer.connection(&self.cfg.id, true);
        }
    }

    /// Drops the connection after a timeout or transport error. Its socket is closed (with a
    /// reset, so a device that stopped reading frees the slot at once) before any new connection
    /// is opened: the device never sees two connections from us.
    fn disconnect(&mut self, why: &str) {
        let Some(ctx) = self.conn.take() else { return };
        self.link.reset_on_close.store(true, Ordering::Relaxed);
        drop(ctx);
        if self.answered {
            self.answered = false;
            self.observer.comm_failure(&self.cfg.id, why);
            self.observer.connection(&self.cfg.id, false);
            tracing::warn!(device = %self.cfg.id, error = %why, "connection lost; tags are Bad(CommFailure), reconnecting");
            self.down_logged = true;
            // The first reconnect after a healthy connection is immediate (at the next poll);
            // the back-off was reset when the device answered.
            self.retry_at = Instant::now();
        } else {
            // Connected, but the device never answered: as bad as a refused connection.
            self.failed(why);
        }
    }

    /// Records a failed attempt (connect, or a connection that never answered): Bad tags, and
    /// the next attempt only after the back-off.
    fn failed(&mut self, why: &str) {
        self.observer.comm_failure(&self.cfg.id, why);
        let delay = self.backoff.next_delay();
        self.retry_at = Instant::now() + delay;
        if !self.down_logged {
            tracing::warn!(device = %self.cfg.id, address = %self.cfg.address, error = %why, retry_in = ?delay, "device unreachable; tags are Bad(CommFailure), retrying with back-off");
            self.down_logged = true;
        } else {
            tracing::debug!(device = %self.cfg.id, error = %why, retry_in = ?delay, "device still unreachable");
        }
    }

    /// A true reason for a failed request: a timeout, the device hanging up, or the OS error.
    fn request_error(&self, e: &tokio_modbus::Error) -> String {
        // tokio-modbus reports a closed connection with whatever `errno` happens to hold
        // (often EINPROGRESS); the socket knows better.
        if self.link.eof.load(Ordering::Relaxed) {
            return "the device closed the connection".to_owned();
        }
        match e {
            tokio_modbus::Error::Transport(io) => match io.kind() {
                io::ErrorKind::ConnectionReset => "the device reset the connection".to_owned(),
                io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionAborted => {
                    "the connection broke (the device closed it)".to_owned()
                }
                _ => format!("transport error: {io}"),
            },
            tokio_modbus::Error::Protocol(p) => format!("the device answered out of step: {p}"),
        }
    }

    async fn poll_cycle(&mut self) {
        let mut samples = Vec::with_capacity(self.points.len());
        if !self.connect().await {
            self.mark_all(Quality::bad(QualityReason::CommFailure), &mut samples);
            self.bus.publish(samples).await;
            return;
        }
        if self.identify_pending {
            self.identify_pending = false;
            self.identify().await;
            if self.conn.is_none() {
                self.mark_all(Quality::bad(QualityReason::CommFailure), &mut samples);
                self.bus.publish(samples).await;
                return;
            }
        }
        for r in 0..self.plan.len() {
            let req = self.plan[r].clone();
            let started = Instant::now();
            let outcome = self.read(&req).await;
            let ok = matches!(outcome, (ReadOutcome::Ok, _));
            self.observer.request(&self.cfg.id, started.elapsed(), ok);
            if !matches!(outcome, (ReadOutcome::Broken(_), _)) {
                self.answered();
            }
            let now = Timestamp::now();
            match outcome {
                (ReadOutcome::Ok, data) => {
                    for &i in &req.points {
                        let p = &self.points[i];
                        let off = usize::from(p.point.address - req.start);
                        let value = match &data {
                            Data::Bits(b) => b.get(off).map(|&b| Value::Bool(b)),
                            Data::Words(w) => w
                                .get(off..off + usize::from(p.point.len()))
                                .map(|regs| decode_registers(&p.point, regs)),
                        };
                        let Some(value) = value else {
                            // A short answer: the device broke the protocol for this point.
                            self.push(
                                i,
                                None,
                                Quality::bad(QualityReason::DeviceFailure),
                                now,
                                &mut samples,
                            );
                            continue;
                        };
                        let quality = match (p.range, value.as_f64()) {
                            // NaN or infinity is no measurement: a sensor or PLC fault.
                            (_, Some(x)) if !x.is_finite() => {
                                Quality::bad(QualityReason::DeviceFailure)
                            }
                            (Some((lo, hi)), Some(x)) if x < lo || x > hi => {
                                Quality::uncertain(QualityReason::OutOfRange)
                            }
                            _ => Quality::GOOD,
                        };
                        self.push(i, Some(value), quality, now, &mut samples);
                    }
                }
                (ReadOutcome::Exception(code), _) => {
                    let reason = match code {
                        ExceptionCode::IllegalDataAddress | ExceptionCode::IllegalFunction => {
                            QualityReason::ConfigError
                        }
                        _ => QualityReason::DeviceFailure,
                    };
                    tracing::debug!(device = %self.cfg.id, unit = req.unit_id, table = req.table.as_str(), start = req.start, count = req.count, exception = %code, "read refused");
                    for &i in &req.points {
                        self.push(i, None, Quality::bad(reason), now, &mut samples);
                    }
                }
                (ReadOutcome::Broken(why), _) => {
                    self.disconnect(&why);
                    self.mark_all(Quality::bad(QualityReason::CommFailure), &mut samples);
                    break;
                }
            }
        }
        self.bus.publish(samples).await;
    }

    async fn read(&mut self, req: &ReadRequest) -> (ReadOutcome, Data) {
        let Some(ctx) = self.conn.as_mut() else {
            return (
                ReadOutcome::Broken("not connected".into()),
                Data::Words(Vec::new()),
            );
        };
        ctx.set_slave(Slave(req.unit_id));
        let (a, n) = (req.start, req.count);
        let t = self.cfg.timeout;
        let res = match req.table {
            ModbusTable::Coil => timeout(t, ctx.read_coils(a, n))
                .await
                .map(|r| r.map(|r| r.map(Data::Bits))),
            ModbusTable::DiscreteInput => timeout(t, ctx.read_discrete_inputs(a, n))
                .await
                .map(|r| r.map(|r| r.map(Data::Bits))),
            ModbusTable::Holding => timeout(t, ctx.read_holding_registers(a, n))
                .await
                .map(|r| r.map(|r| r.map(Data::Words))),
            ModbusTable::Input => timeout(t, ctx.read_input_registers(a, n))
                .await
                .map(|r| r.map(|r| r.map(Data::Words))),
        };
        match res {
            Ok(Ok(Ok(data))) => (ReadOutcome::Ok, data),
            Ok(Ok(Err(code))) => (ReadOutcome::Exception(code), Data::Words(Vec::new())),
            Ok(Err(e)) => (
                ReadOutcome::Broken(self.request_error(&e)),
                Data::Words(Vec::new()),
            ),
            // A late answer would arrive out of step with the next request: start afresh.
            Err(_) => (
                ReadOutcome::Broken(format!("no answer within {t:?}")),
                Data::Words(Vec::new()),
            ),
        }
    }

    /// Records a point's new state; Good and Uncertain samples are always published (every scan),
    /// a Bad one only when the quality changes, carrying the last known value.
    fn push(
        &mut self,
        i: usize,
        value: Option<Value>,
        quality: Quality,
        now: Timestamp,
        out: &mut Vec<Sample>,
    ) {
        let (last_value, last_quality) = &mut self.last[i];
        if quality.level == QualityLevel::Bad && *last_quality == Some(quality) {
            return;
        }
        if let Some(v) = value {
            *last_value = v;
        }
        *last_quality = Some(quality);
        out.push(Sample {
            tag: self.points[i].tag,
            value: last_value.clone(),
            quality,
            source_ts: now,
            server_ts: now,
        });
    }

    fn mark_all(&mut self, quality: Quality, out: &mut Vec<Sample>) {
        let now = Timestamp::now();
        for i in 0..self.points.len() {
            self.push(i, None, quality, now, out);
        }
    }

    async fn write(&mut self, tag: TagId, value: &Value) -> Result<WriteAck, DeviceWriteError> {
        let id = self.cfg.id.clone();
        let p = self
            .points
            .iter()
            .find(|p| p.tag == tag)
            .ok_or_else(|| {
                DeviceWriteError::UnknownTag(format!("device {id} has no point for tag {}", tag.0))
            })?
            .point
            .clone();
        let place = format!("unit {} {} {}", p.unit_id, p.table.as_str(), p.address);
        if !p.table.is_writable() {
            return Err(DeviceWriteError::ReadOnly(format!(
                "{place} of device {id}: the {} table cannot be written",
                p.table.as_str()
            )));
        }
        let op = plan_write(&p, value).map_err(|e| DeviceWriteError::BadValue {
            value: value.to_string(),
            why: format!("{} {place}: {e}", p.data_type.as_str()),
        })?;
        if !self.connect().await {
            return Err(DeviceWriteError::NotConnected(format!(
                "device {id} at {} is unreachable",
                self.cfg.address
            )));
        }
        if let Some(ctx) = self.conn.as_mut() {
            ctx.set_slave(Slave(p.unit_id));
        }
        let a = p.address;
        let mismatch = |what: String| {
            DeviceWriteError::Refused(format!("{place}: the device's answer {what}"))
        };
        let detail = match op {
            WriteOp::Coil(on) => match self.request(Request::WriteSingleCoil(a, on)).await? {
                Response::WriteSingleCoil(ra, rc) if (ra, rc) == (a, on) => {
                    format!("function 5 (write single coil) echoed {place} = {on}")
                }
                other => return Err(mismatch(format!("{other:?} does not echo {on}"))),
            },
            WriteOp::Register(w) => self.write_register(a, w, &place).await?,
            WriteOp::Registers(words) => {
                let n = words.len();
                match self
                    .request(Request::WriteMultipleRegisters(a, words.into()))
                    .await?
                {
                    Response::WriteMultipleRegisters(ra, rn) if ra == a && usize::from(rn) == n => {
                        format!(
                            "function 16 (write multiple registers) echoed {place}, {n} registers"
                        )
                    }
                    other => {
                        return Err(mismatch(format!("{other:?} does not echo {n} registers")))
                    }
                }
            }
            WriteOp::Bit { bit, on } => {
                // Read-modify-write in this task, so our own polls cannot interleave; another
                // master writing the same register in between could, which the read-back shows.
                let current = match self.request(Request::ReadHoldingRegisters(a, 1)).await? {
                    Response::ReadHoldingRegisters(regs) if regs.len() == 1 => regs[0],
                    other => return Err(mismatch(format!("{other:?} is not one register"))),
                };
                let next = if on {
                    current | (1 << bit)
                } else {
                    current & !(1 << bit)
                };
                let echo = self.write_register(a, next, &place).await?;
                format!("bit {bit} set to {on} by read-modify-write: {echo}")
            }
        };
        tracing::info!(device = %id, tag = tag.0, %value, %detail, "wrote");
        let (echoed, read_back) = self.read_back(&p).await;
        Ok(WriteAck {
            detail: format!("{detail}; {read_back}"),
            echoed,
        })
    }

    /// Function 6 with its echo checked; the echo in words.
    async fn write_register(
        &mut self,
        a: u16,
        w: u16,
        place: &str,
    ) -> Result<String, DeviceWriteError> {
        match self.request(Request::WriteSingleRegister(a, w)).await? {
            Response::WriteSingleRegister(ra, rw) if (ra, rw) == (a, w) => Ok(format!(
                "function 6 (write single register) echoed {place} = {w:#06x}"
            )),
            other => Err(DeviceWriteError::Refused(format!(
                "{place}: the device's answer {other:?} does not echo {w:#06x}"
            ))),
        }
    }

    /// Reads the written coil or registers back and decodes them as the point. The write was
    /// acknowledged already, so a failed read-back is reported in words, not as an error.
    async fn read_back(&mut self, p: &ModbusPoint) -> (Option<Value>, String) {
        let req = if p.table == ModbusTable::Coil {
            Request::ReadCoils(p.address, 1)
        } else {
            Request::ReadHoldingRegisters(p.address, p.len())
        };
        match self.request(req).await {
            Ok(Response::ReadCoils(bits)) if !bits.is_empty() => {
                let v = Value::Bool(bits[0]);
                (Some(v.clone()), format!("read back {v}"))
            }
            Ok(Response::ReadHoldingRegisters(regs)) if regs.len() == usize::from(p.len()) => {
                let v = decode_registers(p, &regs);
                (Some(v.clone()), format!("read back {v}"))
            }
            Ok(other) => (None, format!("read-back answered {other:?}")),
            Err(e) => (None, format!("read-back failed: {e}")),
        }
    }

    /// Asks the device who it is (function 43/14) on a new connection. An exception or an
    /// answer that is not one means it does not identify itself: never asked again. No answer
    /// at all drops the connection once (a late answer would confuse the next read) and is not
    /// asked again either.
    async fn identify(&mut self) {
        let t = self.cfg.timeout;
        let Some(ctx) = self.conn.as_mut() else {
            return;
        };
        match timeout(t, ctx.call(crate::ident::request())).await {
            Ok(Ok(Ok(Response::ReadDeviceIdentification(r)))) => {
                self.answered();
                let id = crate::ident::from_response(&r);
                self.identifies = Some(true);
                tracing::debug!(device = %self.cfg.id, identity = %id, "device identified itself");
                self.observer.identity(&self.cfg.id, &id);
            }
            Ok(Ok(_)) => {
                self.answered();
                self.identifies = Some(false);
            }
            Ok(Err(e)) => {
                // A device that drops the connection when asked is not asked again.
                self.identifies = Some(false);
                let why = self.request_error(&e);
                self.disconnect(&why);
            }
            Err(_) => {
                self.identifies = Some(false);
                self.disconnect(&format!(
                    "no answer to device identification within {t:?} (not asked again)"
                ));
            }
        }
    }

    /// One request of a write, bounded by the device timeout. A timeout or transport error
    /// drops the connection, like a failed poll.
    async fn request(&mut self, req: Request<'_>) -> Result<Response, DeviceWriteError> {
        let t = self.cfg.timeout;
        let Some(ctx) = self.conn.as_mut() else {
            return Err(DeviceWriteError::NotConnected(format!(
                "device {} lost its connection",
                self.cfg.id
            )));
        };
        match timeout(t, ctx.call(req)).await {
            Ok(Ok(Ok(rsp))) => {
                self.answered();
                Ok(rsp)
            }
            Ok(Ok(Err(code))) => {
                self.answered();
                Err(DeviceWriteError::Refused(format!(
                    "Modbus exception {code}"
                )))
            }
            Ok(Err(e)) => {
                let why = self.request_error(&e);
                self.disconnect(&why);
                Err(DeviceWriteError::Comm(why))
            }
            Err(_) => {
                self.disconnect(&format!("no answer to a write within {t:?}"));
                Err(DeviceWriteError::Timeout(t))
            }
        }
    }
}

/// What a connection's socket has seen, shared between the stream (inside tokio-modbus's
/// context) and the device task.
#[derive(Debug, Default)]
struct LinkState {
    /// The device closed its side (a read returned end of file).
    eof: AtomicBool,
    /// Close with a reset rather than a FIN: set when we abandon a connection.
    reset_on_close: AtomicBool,
}

/// The device's TCP stream, watched for end of file and reset on close when abandoned.
#[derive(Debug)]
struct WatchedStream {
    inner: TcpStream,
    link: Arc<LinkState>,
}

impl AsyncRead for WatchedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let room = buf.remaining() > 0;
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            if room && buf.filled().len() == before {
                self.link.eof.store(true, Ordering::Relaxed);
            }
        }
        polled
    }
}

impl AsyncWrite for WatchedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl Drop for WatchedStream {
    fn drop(&mut self) {
        // A device whose Modbus task hangs never reads our FIN, so its TCP stack would keep the
        // slot; a reset frees it. Zero linger never blocks the drop.
        if self.link.reset_on_close.load(Ordering::Relaxed) {
            let _ = self.inner.set_zero_linger();
        }
    }
}

/// A connect failure in words an operator can act on.
fn connect_error(addr: std::net::SocketAddr, e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => {
            format!("connection refused by {addr} (nothing listens on that port, or a firewall rejects it)")
        }
        io::ErrorKind::HostUnreachable => format!("host {} is unreachable", addr.ip()),
        io::ErrorKind::NetworkUnreachable => format!("no route to the network of {}", addr.ip()),
        io::ErrorKind::TimedOut => format!("{addr} did not answer the connect"),
        io::ErrorKind::AddrNotAvailable => format!("{addr} is not a usable address"),
        _ => format!("cannot connect to {addr}: {e}"),
    }
}

enum Data {
    Bits(Vec<bool>),
    Words(Vec<u16>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(500));
        let seq: Vec<_> = (0..5).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(seq, vec![100, 200, 400, 500, 500]);
        b.reset();
        assert_eq!(b.next_delay().as_millis(), 100);
    }

    fn point(table: ModbusTable, data_type: ModbusDataType, bit: Option<u8>) -> ModbusPoint {
        ModbusPoint {
            unit_id: 1,
            table,
            address: 7,
            data_type,
            word_order: ironplant_core::config::WordOrder::LittleEndian,
            byte_order: ironplant_core::config::ByteOrder::BigEndian,
            bit,
            scale: 1.0,
            offset: 0.0,
            count: 1,
        }
    }

    #[test]
    fn writes_are_planned_per_table_and_checked_first() {
        use ModbusDataType::*;
        let coil = point(ModbusTable::Coil, Bool, None);
        assert_eq!(
            plan_write(&coil, &Value::Bool(true)),
            Ok(WriteOp::Coil(true))
        );
        assert!(matches!(
            plan_write(&coil, &Value::Int(1)),
            Err(EncodeError::WrongType { .. })
        ));
        let bit = point(ModbusTable::Holding, Bool, Some(3));
        assert_eq!(
            plan_write(&bit, &Value::Bool(false)),
            Ok(WriteOp::Bit { bit: 3, on: false })
        );
        assert!(plan_write(&bit, &Value::Float(1.0)).is_err());
        let u16p = point(ModbusTable::Holding, U16, None);
        assert_eq!(
            plan_write(&u16p, &Value::Int(4321)),
            Ok(WriteOp::Register(4321))
        );
        assert!(matches!(
            plan_write(&u16p, &Value::Int(70_000)),
            Err(EncodeError::OutOfRange { .. })
        ));
        // i32 -123456 = 0xFFFE_1DC0, little-endian word order: low word first.
        let i32p = point(ModbusTable::Holding, I32, None);
        assert_eq!(
            plan_write(&i32p, &Value::Int(-123_456)),
            Ok(WriteOp::Registers(vec![0x1DC0, 0xFFFE]))
        );
    }
}
