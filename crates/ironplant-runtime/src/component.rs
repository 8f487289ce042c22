//! The component model: sources produce samples, sinks consume them, processors
//! ([`ironplant_core::Processor`]) transform them on the way (see [`crate::pipeline`]).
//!
//! A component is a long-running async task that the [`Supervisor`] owns: it is started in
//! order (sinks before sources, so no sink misses the first sample), restarted with an
//! exponential back-off when it fails (returns an error, returns when it should not, or
//! panics), reported every time (log, `ironplant_component_*` metrics, a `system` event), and
//! stopped in order at shutdown (sources first, then sinks after they drained what was queued).
//!
//! A component keeps nothing across restarts except what its own struct holds (it is shared as
//! `Arc<Self>`; each start calls [`Source::run`] or [`Sink::run`] again). A sink's bus
//! subscription belongs to the supervisor and survives the sink's restarts, so a sink that
//! panicked resumes with the next queued batch.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ironplant_core::writers::Writers;
use ironplant_core::{
    Event, EventBus, EventKind, LiveNamespace, Severity, Subscription, TagBus, Timestamp,
};
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use ironplant_core::component::{
    ComponentError, Service, Shutdown, Sink, SinkContext, SinkQueue, Source, SourceContext,
};

/// The role of a component, which fixes its start and stop order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    Sink,
    /// A synchronous processor on the bus's publish path ([`crate::pipeline`]).
    Processor,
    Service,
    Source,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Sink => "sink",
            Role::Processor => "processor",
            Role::Service => "service",
            Role::Source => "source",
        }
    }
}

/// A component's state, as metrics and the API show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Running = 0,
    /// Failed; waiting for its back-off before the next start.
    Restarting = 1,
    Stopped = 2,
}

/// What the platform knows about one component.
#[derive(Debug)]
pub struct ComponentStats {
    pub name: String,
    pub role: Role,
    status: AtomicU8,
    restarts: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl ComponentStats {
    pub(crate) fn new(name: String, role: Role) -> Arc<ComponentStats> {
        Arc::new(ComponentStats {
            name,
            role,
            status: AtomicU8::new(Status::Running as u8),
            restarts: AtomicU64::new(0),
            last_error: Mutex::new(None),
        })
    }

    pub(crate) fn failed(&self, reason: &str) {
        self.restarts.fetch_add(1, Ordering::Relaxed);
        self.status
            .store(Status::Restarting as u8, Ordering::Relaxed);
        *self.last_error.lock() = Some(reason.to_owned());
    }

    pub(crate) fn set_status(&self, status: Status) {
        self.status.store(status as u8, Ordering::Relaxed);
    }

    pub fn status(&self) -> Status {
        match self.status.load(Ordering::Relaxed) {
            0 => Status::Running,
            1 => Status::Restarting,
            _ => Status::Stopped,
        }
    }

    pub fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::Relaxed)
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().clone()
    }
}

/// Restart back-off: from `min` doubling to `max`; a run that lasted `healthy_after` resets it.
#[derive(Debug, Clone, Copy)]
pub struct RestartPolicy {
    pub min: Duration,
    pub max: Duration,
    pub healthy_after: Duration,
}

impl Default for RestartPolicy {
    fn default() -> RestartPolicy {
        RestartPolicy {
            min: Duration::from_millis(100),
            max: Duration::from_secs(30),
            healthy_after: Duration::from_secs(60),
        }
    }
}

enum Runnable {
    Source(Arc<dyn Source>),
    Sink(Arc<dyn Sink>, Arc<tokio::sync::Mutex<Subscription>>),
    Service(Arc<dyn Service>),
}

struct Running {
    role: Role,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// Owns the components' tasks: start order, restarts, ordered shutdown.
pub struct Supervisor {
    bus: TagBus,
    events: EventBus,
    namespace: Arc<LiveNamespace>,
    writers: Writers,
    policy: RestartPolicy,
    stats: Mutex<Vec<Arc<ComponentStats>>>,
    running: Mutex<Vec<Running>>,
}

impl Supervisor {
    pub fn new(
        bus: TagBus,
        events: EventBus,
        namespace: Arc<LiveNamespace>,
        writers: Writers,
        policy: RestartPolicy,
    ) -> Supervisor {
        Supervisor {
            bus,
            events,
            namespace,
            writers,
            policy,
            stats: Mutex::new(Vec::new()),
            running: Mutex::new(Vec::new()),
        }
    }

    /// Every component started so far, in start order.
    pub fn components(&self) -> Vec<Arc<ComponentStats>> {
        self.stats.lock().clone()
    }

    /// Lists a component another part of the runtime runs (a processor of the pipeline), so
    /// it is reported with the others.
    pub(crate) fn adopt(&self, stats: Arc<ComponentStats>) {
        self.stats.lock().push(stats);
    }

    /// Subscribes a sink to the bus now (so it sees every sample published from here on) and
    /// starts it. Call for every sink before the first source.
    pub fn start_sink(&self, sink: Arc<dyn Sink>) {
        let q = sink.queue();
        let sub = self.bus.subscribe(&sink.name(), q.capacity, q.overflow);
        let name = sink.name();
        self.spawn(
            name,
            Role::Sink,
            Runnable::Sink(sink, Arc::new(tokio::sync::Mutex::new(sub))),
        );
    }

    pub fn start_service(&self, service: Arc<dyn Service>) {
        let name = service.name();
        self.spawn(name, Role::Service, Runnable::Service(service));
    }

    pub fn start_source(&self, source: Arc<dyn Source>) {
        let name = source.name();
        self.spawn(name, Role::Source, Runnable::Source(source));
    }

    fn spawn(&self, name: String, role: Role, what: Runnable) {
        let stats = ComponentStats::new(name.clone(), role);
        self.stats.lock().push(stats.clone());
        let (stop, stop_rx) = watch::channel(false);
        let shutdown = Shutdown::new(stop_rx);
        let bus = self.bus.clone();
        let events = self.events.clone();
        let namespace = self.namespace.clone();
        let writers = self.writers.clone();
        let policy = self.policy;
        tracing::info!(component = %name, role = role.as_str(), "starting");
        let task = tokio::spawn(async move {
            let mut delay = policy.min;
            loop {
                let started = Instant::now();
                let fut = match &what {
                    Runnable::Source(s) => s.clone().run(SourceContext {
                        bus: bus.clone(),
                        events: events.clone(),
                        namespace: namespace.clone(),
                        writers: writers.clone(),
                        shutdown: shutdown.clone(),
                    }),
                    Runnable::Sink(s, sub) => s.clone().run(SinkContext {
                        batches: sub.clone(),
                        events: events.clone(),
                        namespace: namespace.clone(),
                        shutdown: shutdown.clone(),
                    }),
                    Runnable::Service(s) => s.clone().run(shutdown.clone()),
                };
                // Its own task, so a panic is caught as a JoinError instead of ending ours.
                let outcome = tokio::spawn(fut).await;
                if shutdown.is_requested() {
                    if let Ok(Err(e)) = &outcome {
                        tracing::warn!(component = %name, error = %e, "stopped with an error");
                    }
                    break;
                }
                let reason = match outcome {
                    Ok(Ok(())) => "stopped by itself".to_owned(),
                    Ok(Err(e)) => e.0,
                    Err(e) => join_reason(e),
                };
                if started.elapsed() >= policy.healthy_after {
                    delay = policy.min;
                }
                stats.failed(&reason);
                tracing::error!(component = %name, role = role.as_str(), error = %reason, retry_in = ?delay, "component failed; restarting");
                events.publish(
                    lifecycle_event(
                        "component_failed",
                        Severity::Error,
                        &name,
                        format!(
                            "{} {name} failed ({reason}); restarting in {delay:?}",
                            role.as_str()
                        ),
                    )
                    .with_attribute(
                        "reason",
                        ironplant_core::Value::String(Arc::from(reason.as_str())),
                    ),
                );
                let mut sd = shutdown.clone();
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = sd.requested() => break,
                }
                delay = (delay * 2).min(policy.max);
                stats.set_status(Status::Running);
                tracing::info!(component = %name, restarts = stats.restarts(), "component restarted");
                events.publish(
                    lifecycle_event(
                        "component_restarted",
                        Severity::Warning,
                        &name,
                        format!("{} {name} restarted", role.as_str()),
                    )
                    .with_attribute(
                        "restarts",
                        ironplant_core::Value::from_u64(stats.restarts()),
                    ),
                );
            }
            stats.set_status(Status::Stopped);
        });
        self.running.lock().push(Running { role, stop, task });
    }

    /// Asks every component to stop, without waiting (a synchronous shutdown).
    pub fn request_stop(&self) {
        for r in self.running.lock().iter() {
            let _ = r.stop.send(true);
        }
    }

    /// Stops every component in order: sources, then services, then sinks (which drain what is
    /// queued first). Each role gets `grace` to stop before its tasks are aborted.
    pub async fn shutdown(&self, grace: Duration) {
        let mut all = std::mem::take(&mut *self.running.lock());
        for role in [Role::Source, Role::Service, Role::Sink] {
            let (these, rest): (Vec<Running>, Vec<Running>) =
                all.into_iter().partition(|r| r.role == role);
            all = rest;
            for r in &these {
                let _ = r.stop.send(true);
            }
            let deadline = tokio::time::Instant::now() + grace;
            for r in these {
                let abort = r.task.abort_handle();
                if tokio::time::timeout_at(deadline, r.task).await.is_err() {
                    tracing::warn!(
                        role = role.as_str(),
                        "a component did not stop within {grace:?}; aborted"
                    );
                    abort.abort();
                }
            }
        }
    }

    /// Counts by role of components now running, restarting, stopped.
    pub fn summary(&self) -> HashMap<(Role, &'static str), usize> {
        let mut m = HashMap::new();
        for s in self.stats.lock().iter() {
            let st = match s.status() {
                Status::Running => "running",
                Status::Restarting => "restarting",
                Status::Stopped => "stopped",
            };
            *m.entry((s.role, st)).or_default() += 1;
        }
        m
    }
}

/// The `system` event of a component failure or restart.
pub(crate) fn lifecycle_event(
    code: &str,
    severity: Severity,
    name: &str,
    message: String,
) -> Event {
    Event::new(
        Timestamp::now(),
        EventKind::System,
        code,
        "supervisor",
        message,
    )
    .with_severity(severity)
    .with_attribute("component", ironplant_core::Value::String(Arc::from(name)))
}

fn join_reason(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a non-string payload".to_owned());
            format!("panicked: {what}")
        }
        Err(_) => "cancelled".to_owned(),
    }
}
