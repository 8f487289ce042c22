//! The processor pipeline: synchronous processors (computed tags, rules, alarms, validators)
//! run on the tag bus's publish path, in registration order, before any sink sees the batch.
//!
//! Invariants:
//! - **No deadlock by construction.** Processors never subscribe to the bus and never publish
//!   to it: what they derive travels in the batch that caused it, and their events go to the
//!   event bus, which never blocks. Timer work ([`Processor::tick`]) runs on the pipeline's own
//!   task ([`Ticker`]), which publishes its output like a source, outside the pipeline's lock.
//! - **A panicking processor does not take the platform down.** It is caught, the processor
//!   is dropped (the samples it already changed in that batch stay changed), reported (log,
//!   metrics, a `system` event) and rebuilt from its factory after a back-off; in between,
//!   batches pass without it.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ironplant_core::{
    EventBus, Processor, ProcessorOutput, Sample, Severity, Stage, TagBus, Timestamp,
};
use parking_lot::Mutex;

use crate::component::{
    lifecycle_event, ComponentError, ComponentStats, RestartPolicy, Role, Service, Shutdown, Status,
};

/// Builds a processor; called again to rebuild it after a panic.
pub type ProcessorFactory = Box<dyn Fn() -> Box<dyn Processor> + Send + Sync>;

struct Slot {
    stats: Arc<ComponentStats>,
    factory: ProcessorFactory,
    processor: Option<Box<dyn Processor>>,
    /// When a failed processor is rebuilt.
    retry_at: Option<Instant>,
    delay: Duration,
    started: Instant,
    /// When its next tick is due, if it ticks.
    next_tick: Option<Instant>,
}

/// The pipeline: install it on the bus with [`TagBus::set_stage`].
pub struct Pipeline {
    slots: Mutex<Vec<Slot>>,
    events: EventBus,
    policy: RestartPolicy,
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string payload".to_owned())
}

impl Slot {
    /// Rebuilds a failed processor once its back-off has passed.
    fn revive(&mut self, now: Instant, events: &EventBus) {
        if self.processor.is_some() || self.retry_at.is_some_and(|t| now < t) {
            return;
        }
        match catch_unwind(AssertUnwindSafe(|| (self.factory)())) {
            Ok(p) => {
                self.next_tick = p.tick_interval().map(|i| now + i);
                self.processor = Some(p);
                self.retry_at = None;
                self.started = now;
                self.stats.set_status(Status::Running);
                let name = &self.stats.name;
                tracing::info!(processor = %name, "processor rebuilt");
                events.publish(lifecycle_event(
                    "component_restarted",
                    Severity::Warning,
                    name,
                    format!("processor {name} restarted"),
                ));
            }
            Err(payload) => self.fail(now, &panic_text(&*payload), events, Duration::MAX),
        }
    }

    fn fail(&mut self, now: Instant, why: &str, events: &EventBus, max: Duration) {
        if now.saturating_duration_since(self.started) >= Duration::from_secs(60) {
            self.delay = Duration::from_millis(100);
        }
        let delay = self.delay;
        self.processor = None;
        self.next_tick = None;
        self.retry_at = Some(now + delay);
        self.delay = (self.delay * 2).min(max);
        let reason = format!("panicked: {why}");
        self.stats.failed(&reason);
        let name = &self.stats.name;
        tracing::error!(processor = %name, error = %reason, retry_in = ?delay, "processor failed; it is bypassed until rebuilt");
        events.publish(
            lifecycle_event(
                "component_failed",
                Severity::Error,
                name,
                format!("processor {name} failed ({reason}); rebuilt in {delay:?}"),
            )
            .with_attribute(
                "reason",
                ironplant_core::Value::String(Arc::from(reason.as_str())),
            ),
        );
    }
}

impl Pipeline {
    pub fn new(events: EventBus, policy: RestartPolicy) -> Pipeline {
        Pipeline {
            slots: Mutex::new(Vec::new()),
            events,
            policy,
        }
    }

    /// Adds a processor at the end of the pipeline; returns its stats for reporting.
    pub fn add(&self, factory: ProcessorFactory) -> Arc<ComponentStats> {
        let now = Instant::now();
        let processor = factory();
        let stats = ComponentStats::new(processor.name().to_owned(), Role::Processor);
        self.slots.lock().push(Slot {
            stats: stats.clone(),
            next_tick: processor.tick_interval().map(|i| now + i),
            processor: Some(processor),
            factory,
            retry_at: None,
            delay: self.policy.min,
            started: now,
        });
        stats
    }

    pub fn is_empty(&self) -> bool {
        self.slots.lock().is_empty()
    }

    /// Runs every due tick; returns what they produced.
    fn tick(&self, now: Timestamp) -> (Vec<Sample>, Option<Instant>) {
        let mono = Instant::now();
        let mut batch = Vec::new();
        let mut out = ProcessorOutput::default();
        let mut next: Option<Instant> = None;
        {
            let mut slots = self.slots.lock();
            for slot in slots.iter_mut() {
                slot.revive(mono, &self.events);
                if let Some(at) = slot.retry_at {
                    next = Some(next.map_or(at, |n| n.min(at)));
                }
                let (Some(p), Some(due)) = (slot.processor.as_mut(), slot.next_tick) else {
                    continue;
                };
                if due <= mono {
                    let r = catch_unwind(AssertUnwindSafe(|| p.tick(now, &mut batch, &mut out)));
                    match r {
                        Ok(()) => {
                            let every = p.tick_interval().unwrap_or(Duration::from_secs(1));
                            slot.next_tick = Some(mono + every);
                        }
                        Err(payload) => {
                            slot.fail(mono, &panic_text(&*payload), &self.events, self.policy.max)
                        }
                    }
                }
                if let Some(t) = slot.next_tick {
                    next = Some(next.map_or(t, |n| n.min(t)));
                }
            }
        }
        for e in out.events {
            self.events.publish(e);
        }
        (batch, next)
    }
}

impl Stage for Pipeline {
    fn apply(&self, batch: &mut Vec<Sample>) {
        let now = Timestamp::now();
        let mono = Instant::now();
        let mut out = ProcessorOutput::default();
        {
            let mut slots = self.slots.lock();
            for slot in slots.iter_mut() {
                slot.revive(mono, &self.events);
                let Some(p) = slot.processor.as_mut() else {
                    continue;
                };
                if let Err(payload) =
                    catch_unwind(AssertUnwindSafe(|| p.process(batch, now, &mut out)))
                {
                    slot.fail(mono, &panic_text(&*payload), &self.events, self.policy.max);
                }
            }
        }
        for e in out.events {
            self.events.publish(e);
        }
    }
}

/// The pipeline's timer task: runs processors' ticks and publishes what they produce.
pub struct Ticker {
    pub pipeline: Arc<Pipeline>,
    pub bus: TagBus,
}

impl Service for Ticker {
    fn name(&self) -> String {
        "processor-ticks".to_owned()
    }

    fn run(
        self: Arc<Self>,
        mut shutdown: Shutdown,
    ) -> ironplant_core::BoxFuture<'static, Result<(), ComponentError>> {
        Box::pin(async move {
            loop {
                let (batch, next) = self.pipeline.tick(Timestamp::now());
                if !batch.is_empty() {
                    self.bus.publish(batch).await;
                }
                // With nothing ticking, look again now and then (a rebuilt processor may tick).
                let wake = next.unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
                tokio::select! {
                    _ = tokio::time::sleep_until(wake.into()) => {}
                    _ = shutdown.requested() => return Ok(()),
                }
            }
        })
    }
}

/// A processor that does nothing: what a factory returns when it can no longer build its
/// processor (logged by the caller), so the pipeline keeps its order.
pub struct Inert(pub &'static str);

impl Processor for Inert {
    fn name(&self) -> &str {
        self.0
    }

    fn process(&mut self, _batch: &mut Vec<Sample>, _now: Timestamp, _out: &mut ProcessorOutput) {}
}
