//! The async shell that owns one Modbus TCP device: connects, polls on its interval, decodes,
//! publishes samples, reconnects with capped exponential back-off, and performs writes.
//!
//! One task per device, so a device that hangs only delays its own tags: every network step
//! (resolve, connect, each request) is bounded by the device's timeout.

use std::sync::Arc;
use std::time::Duration;

use ironplant_core::config::{DeviceConfig, ModbusDataType, ModbusPoint, ModbusTable};
use ironplant_core::{
    Quality, QualityLevel, QualityReason, Sample, TagBus, TagId, Timestamp, Value,
};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::{timeout, Instant, MissedTickBehavior};
use tokio_modbus::client::{Context, Reader, Writer};
use tokio_modbus::prelude::{ExceptionCode, Slave, SlaveContext};

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
}

/// A no-op observer, for tests and tools.
pub struct NoObserver;

impl PollObserver for NoObserver {
    fn request(&self, _: &str, _: Duration, _: bool) {}
    fn connection(&self, _: &str, _: bool) {}
}

/// Why a write failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WriteError {
    #[error("tag {0:?} is not served by this device")]
    UnknownTag(TagId),
    #[error("the {0} table is read-only")]
    ReadOnly(&'static str),
    #[error(transparent)]
    Encode(#[from] EncodeError),
    #[error("device is not connected")]
    NotConnected,
    #[error("device answered with exception {0}")]
    Exception(String),
    #[error("device did not answer within {0:?}")]
    Timeout(Duration),
    #[error("communication failed: {0}")]
    Comm(String),
    #[error("device task has stopped")]
    Stopped,
}

struct WriteCmd {
    tag: TagId,
    value: Value,
    reply: oneshot::Sender<Result<(), WriteError>>,
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

    /// Writes `value` to the tag's register(s) or coil and waits for the device's answer.
    pub async fn write(&self, tag: TagId, value: Value) -> Result<(), WriteError> {
        let (reply, rx) = oneshot::channel();
        self.cmds
            .send(WriteCmd { tag, value, reply })
            .await
            .map_err(|_| WriteError::Stopped)?;
        rx.await.map_err(|_| WriteError::Stopped)?
    }
}

impl Drop for DeviceHandle {
    fn drop(&mut self) {
        self.task.abort();
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
    conn: Option<Context>,
    backoff: Backoff,
    retry_at: Instant,
    /// Last value and quality published per point.
    last: Vec<(Value, Option<Quality>)>,
    /// Whether the last connection attempt failed (to log a failure once, not every retry).
    down_logged: bool,
}

impl DevicePoller {
    /// Starts the device task on the current tokio runtime.
    pub fn spawn(self) -> DeviceHandle {
        let (tx, rx) = mpsc::channel(64);
        let id = self.config.id.clone();
        let modbus_points: Vec<ModbusPoint> = self.points.iter().map(|p| p.point.clone()).collect();
        let plan = plan_reads(&modbus_points, self.config.max_gap);
        let n = self.points.len();
        let state = State {
            backoff: Backoff::new(Duration::from_millis(100), self.config.reconnect_max),
            cfg: self.config,
            points: self.points,
            plan,
            bus: self.bus,
            observer: self.observer,
            conn: None,
            retry_at: Instant::now(),
            last: vec![(Value::Null, None); n],
            down_logged: false,
        };
        let task = tokio::spawn(state.run(rx));
        DeviceHandle { id, cmds: tx, task }
    }
}

impl State {
    async fn run(mut self, mut cmds: mpsc::Receiver<WriteCmd>) {
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
    async fn run_back_to_back(mut self, mut cmds: mpsc::Receiver<WriteCmd>) {
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
        let attempt = async {
            let mut last_err = String::from("no address found");
            for sa in tokio::net::lookup_host(&addr)
                .await
                .map_err(|e| e.to_string())?
            {
                match tokio::net::TcpStream::connect(sa).await {
                    Ok(stream) => {
                        let _ = stream.set_nodelay(true);
                        return Ok(tokio_modbus::client::tcp::attach_slave(
                            stream,
                            Slave(self.cfg.unit_id),
                        ));
                    }
                    Err(e) => last_err = e.to_string(),
                }
            }
            Err(last_err)
        };
        match timeout(self.cfg.timeout, attempt).await {
            Ok(Ok(ctx)) => {
                tracing::info!(device = %self.cfg.id, address = %addr, "connected");
                self.conn = Some(ctx);
                self.backoff.reset();
                self.down_logged = false;
                self.observer.connection(&self.cfg.id, true);
                true
            }
            outcome => {
                let why = match outcome {
                    Ok(Err(e)) => e,
                    _ => format!("no answer within {:?}", self.cfg.timeout),
                };
                let delay = self.backoff.next_delay();
                self.retry_at = Instant::now() + delay;
                if !self.down_logged {
                    tracing::warn!(device = %self.cfg.id, address = %addr, error = %why, "cannot connect; tags are Bad(CommFailure), retrying with back-off");
                    self.down_logged = true;
                } else {
                    tracing::debug!(device = %self.cfg.id, error = %why, retry_in = ?delay, "still cannot connect");
                }
                false
            }
        }
    }

    fn disconnect(&mut self, why: &str) {
        if self.conn.take().is_some() {
            tracing::warn!(device = %self.cfg.id, error = %why, "connection lost; tags are Bad(CommFailure), reconnecting");
            self.observer.connection(&self.cfg.id, false);
            self.down_logged = true;
            // First reconnect attempt at the next tick; back-off grows only on failures.
            self.retry_at = Instant::now();
        }
    }

    async fn poll_cycle(&mut self) {
        let mut samples = Vec::with_capacity(self.points.len());
        if !self.connect().await {
            self.mark_all(Quality::bad(QualityReason::CommFailure), &mut samples);
            self.bus.publish(samples).await;
            return;
        }
        for r in 0..self.plan.len() {
            let req = self.plan[r].clone();
            let started = Instant::now();
            let outcome = self.read(&req).await;
            let ok = matches!(outcome, (ReadOutcome::Ok, _));
            self.observer.request(&self.cfg.id, started.elapsed(), ok);
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
            Ok(Err(e)) => (ReadOutcome::Broken(e.to_string()), Data::Words(Vec::new())),
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

    async fn write(&mut self, tag: TagId, value: &Value) -> Result<(), WriteError> {
        let p = self
            .points
            .iter()
            .find(|p| p.tag == tag)
            .ok_or(WriteError::UnknownTag(tag))?
            .point
            .clone();
        if !p.table.is_writable() {
            return Err(WriteError::ReadOnly(p.table.as_str()));
        }
        let words = if p.table == ModbusTable::Coil {
            Vec::new()
        } else {
            encode_registers(&p, value)?
        };
        if p.table == ModbusTable::Coil && !matches!(value, Value::Bool(_)) {
            return Err(EncodeError::WrongType {
                expected: "bool",
                got: value.to_string(),
            }
            .into());
        }
        if !self.connect().await {
            return Err(WriteError::NotConnected);
        }
        let t = self.cfg.timeout;
        let ctx = self.conn.as_mut().ok_or(WriteError::NotConnected)?;
        ctx.set_slave(Slave(p.unit_id));
        let res = match (p.table, p.data_type, p.bit) {
            (ModbusTable::Coil, _, _) => {
                timeout(
                    t,
                    ctx.write_single_coil(p.address, matches!(value, Value::Bool(true))),
                )
                .await
            }
            (_, ModbusDataType::Bool, Some(bit)) => {
                // Read-modify-write of one bit; a concurrent writer of the same register could
                // interleave, which the command path's read-back detects.
                match timeout(t, ctx.read_holding_registers(p.address, 1)).await {
                    Ok(Ok(Ok(regs))) => {
                        let cur = regs.first().copied().unwrap_or(0);
                        let next = if matches!(value, Value::Bool(true)) {
                            cur | (1 << bit)
                        } else {
                            cur & !(1 << bit)
                        };
                        timeout(t, ctx.write_single_register(p.address, next)).await
                    }
                    other => other.map(|r| r.map(|r| r.map(|_| ()))),
                }
            }
            _ if words.len() == 1 => {
                timeout(t, ctx.write_single_register(p.address, words[0])).await
            }
            _ => timeout(t, ctx.write_multiple_registers(p.address, &words)).await,
        };
        match res {
            Ok(Ok(Ok(()))) => {
                tracing::info!(device = %self.cfg.id, tag = tag.0, %value, "wrote");
                Ok(())
            }
            Ok(Ok(Err(code))) => Err(WriteError::Exception(code.to_string())),
            Ok(Err(e)) => {
                let why = e.to_string();
                self.disconnect(&why);
                Err(WriteError::Comm(why))
            }
            Err(_) => {
                self.disconnect("write timed out");
                Err(WriteError::Timeout(t))
            }
        }
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
}
