//! The platform's alarms (`[[alarm]]`, `[alarms]`): the ISA-18.2 engine of
//! `ironplant_control::alarm` wired in as a processor on the tag bus, its state kept across
//! restarts, its operations (acknowledge, shelve...) for the API.
//!
//! - `condition` and `suppress_when` expressions are hidden computed bool tags
//!   (`crate::control`), which the alarm engine reads like any tag.
//! - [`Alarms`] owns the engine behind a lock, shared by the processor, the persister and the
//!   API. Every transition becomes an `alarm` event on the event bus (historised, on MQTT, on
//!   the live API).
//! - [`AlarmProcessor`] feeds each batch to the engine inside the bus's publish path and ticks
//!   it (on/off delays, shelve expiry) every [`TICK`].
//! - `crate::saved::StatePersister` (a service) writes the engine's snapshot atomically to
//!   `<data-dir>/alarms/alarms.json` at most once a [`SAVE_EVERY`] after a change, and at
//!   shutdown; [`Alarms::open`] restores it before the first sample, so a restart neither raises
//!   the standing alarms again nor loses an unacknowledged one.
//!
//! Invariants: the lock is never held while publishing on the tag bus (the processor runs
//! inside a publish, so an operation holding it across a publish could deadlock); the snapshot
//! on disk is always a whole one (temp file, fsync, rename, fsync of the directory).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ironplant_control::alarm::config::ExprSource;
use ironplant_control::alarm::{
    persist, AlarmConfigs, AlarmEngine, AlarmError, AlarmSettings, AlarmView, KpiOptions,
    KpiReport, Transition,
};
use ironplant_core::config::Config;
use ironplant_core::{
    Event, EventBus, EventKind, Namespace, Processor, ProcessorOutput, Sample, Severity, TagId,
    Timestamp,
};
use parking_lot::Mutex;

/// How often the processor ticks the engine (delays and shelves end within this).
pub const TICK: Duration = Duration::from_millis(100);
/// The longest a changed alarm state waits before it is written to disk.
pub use crate::saved::SAVE_EVERY;
/// The snapshot's file name under `<data-dir>/alarms/`.
pub const FILE: &str = "alarms.json";

/// Why the alarms cannot start.
#[derive(Debug, thiserror::Error)]
pub enum AlarmStartError {
    #[error("cannot build the configured alarms:\n  {}", .0.join("\n  "))]
    Definitions(Vec<String>),
}

/// The built-in alarms of every writable tag, on the command path's findings
/// (`crate::control::finding_paths`): `<tag with . for />:unauthorised_change` (priority 1: the device shows
/// a value no authorised command explains, e.g. another Modbus master wrote the PLC) and
/// `<tag>:command_failed` (priority 2: the last command was not read back in time).
fn finding_alarms(namespace: &Namespace) -> Vec<ironplant_control::alarm::AlarmDef> {
    use ironplant_control::alarm::{AlarmDef, Condition};
    let mut defs = Vec::new();
    for m in namespace.tags().filter(|m| m.writable) {
        let (unauthorised, failed) = crate::control::finding_paths(&m.path);
        let (Some(u), Some(f)) = (
            namespace.lookup(unauthorised.as_str()),
            namespace.lookup(failed.as_str()),
        ) else {
            continue;
        };
        let mut a = AlarmDef::new(
            &format!("{}:unauthorised_change", alarm_key(&m.path)),
            u.id,
            m.path.clone(),
            Condition::Condition,
        );
        a.priority = 1;
        a.message = format!("Unauthorised change of {}", m.path).into();
        a.consequence =
            "The process runs on a value nobody authorised: possible tampering or a rogue engineering station".into();
        a.response = "Check who wrote the device (security events, audit log); restore the commanded value through the platform".into();
        defs.push(a);
        let mut a = AlarmDef::new(
            &format!("{}:command_failed", alarm_key(&m.path)),
            f.id,
            m.path.clone(),
            Condition::Condition,
        );
        a.priority = 2;
        a.message = format!("Command to {} not confirmed by the device", m.path).into();
        a.consequence = "The device may not run on the commanded value".into();
        a.response = "Check the device and its connection; command the value again".into();
        defs.push(a);
    }
    defs
}

/// A tag path as an alarm id prefix without `/` (ids are one URL segment in the API):
/// `acme/lyon/line1/plc/speed` → `acme.lyon.line1.plc.speed`.
pub fn alarm_key(tag: &ironplant_core::TagPath) -> String {
    tag.as_str().replace('/', ".")
}

/// An operation asked of an alarm by a person.
#[derive(Debug, Clone, PartialEq)]
pub enum Operation {
    Ack,
    Shelve(Duration),
    Unshelve,
    RemoveFromService,
    ReturnToService,
    Reset,
}

/// The platform's alarms; see the module docs.
pub struct Alarms {
    engine: Mutex<AlarmEngine>,
    events: EventBus,
    kpi: KpiOptions,
    file: Option<PathBuf>,
    dirty: AtomicBool,
    wake: tokio::sync::Notify,
}

impl Alarms {
    /// The configured alarms, restored from `<data_dir>/alarms/alarms.json` if a snapshot
    /// exists (a corrupt one is moved aside and reported as a critical system event, never
    /// silently overwritten). `None` when no alarm is configured.
    pub fn open(
        config: &Config,
        namespace: &Namespace,
        data_dir: Option<&Path>,
        events: &EventBus,
    ) -> Result<Option<Arc<Alarms>>, AlarmStartError> {
        let configs = config.get::<AlarmConfigs>();
        let findings = finding_alarms(namespace);
        if configs.0.is_empty() && findings.is_empty() {
            return Ok(None);
        }
        let settings = config.get::<AlarmSettings>();
        let mut compile = |e: &ExprSource| -> Result<TagId, String> {
            crate::control::alarm_input(config, namespace, e)
        };
        let mut defs = configs
            .build(namespace, &mut compile)
            .map_err(AlarmStartError::Definitions)?;
        defs.extend(findings);
        let mut engine = AlarmEngine::new(defs, settings.engine());
        let file = data_dir.map(|d| d.join("alarms").join(FILE));
        let now = Timestamp::now();
        if let Some(path) = &file {
            match persist::read(path) {
                Ok(None) => {}
                Ok(Some(snapshot)) => {
                    let report = engine.restore(&snapshot, now);
                    for t in &report.transitions {
                        events.publish(t.to_event());
                    }
                    for v in &report.vanished {
                        tracing::warn!(alarm = ?v, "an alarm of the saved state is no longer configured; dropped");
                        events.publish(
                            Event::new(
                                now,
                                EventKind::System,
                                "alarm_vanished",
                                "alarms",
                                format!("alarm {v:?} of the saved state is no longer configured; its state was dropped"),
                            )
                            .with_severity(Severity::Warning),
                        );
                    }
                    tracing::info!(
                        restored = report.restored,
                        changed = report.changed.len(),
                        new = report.new.len(),
                        "alarm state restored"
                    );
                }
                Err(e) => {
                    let aside = path.with_extension(format!("corrupt-{}", now.as_micros()));
                    let moved = std::fs::rename(path, &aside);
                    let msg = format!(
                        "the saved alarm state cannot be read ({e}); alarms start from normal. The file was {}",
                        match moved {
                            Ok(()) => format!("moved to {}", aside.display()),
                            Err(m) => format!("left in place (cannot move it: {m})"),
                        }
                    );
                    tracing::error!("{msg}");
                    events.publish(
                        Event::new(now, EventKind::System, "alarm_state_lost", "alarms", msg)
                            .with_severity(Severity::Critical),
                    );
                }
            }
        }
        Ok(Some(Arc::new(Alarms {
            engine: Mutex::new(engine),
            events: events.clone(),
            kpi: settings.kpi(),
            file,
            dirty: AtomicBool::new(true),
            wake: tokio::sync::Notify::new(),
        })))
    }

    /// Active alarms (not normal), by priority then newest first.
    pub fn active(&self) -> Vec<AlarmView> {
        self.engine.lock().active()
    }

    /// Every configured alarm with its state.
    pub fn all(&self) -> Vec<AlarmView> {
        self.engine.lock().all()
    }

    pub fn get(&self, id: &str) -> Option<AlarmView> {
        self.engine.lock().get(id)
    }

    /// The ISA-18.2 performance report over `from..to` (from the transitions kept in memory).
    pub fn kpi(&self, from: Timestamp, to: Timestamp) -> KpiReport {
        self.engine.lock().kpi(from, to, &self.kpi)
    }

    /// Performs an operator's operation; the transition is published as an event and saved.
    pub fn operate(
        &self,
        id: &str,
        op: &Operation,
        user: &str,
        comment: &str,
    ) -> Result<Transition, AlarmError> {
        let now = Timestamp::now();
        let t = {
            let mut e = self.engine.lock();
            match op {
                Operation::Ack => e.ack(id, user, comment, now),
                Operation::Shelve(d) => e.shelve(id, *d, user, comment, now),
                Operation::Unshelve => e.unshelve(id, user, comment, now),
                Operation::RemoveFromService => e.remove_from_service(id, user, comment, now),
                Operation::ReturnToService => e.return_to_service(id, user, comment, now),
                Operation::Reset => e.reset(id, user, comment, now),
            }?
        };
        self.events.publish(t.to_event());
        self.changed();
        Ok(t)
    }

    fn changed(&self) {
        self.dirty.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    /// Writes the snapshot if the state changed since the last write (blocking).
    fn save(&self) -> Result<(), persist::PersistError> {
        let Some(path) = &self.file else {
            return Ok(());
        };
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        let snapshot = self.engine.lock().snapshot(Timestamp::now());
        if let Some(dir) = path.parent() {
            if let Err(source) = std::fs::create_dir_all(dir) {
                self.dirty.store(true, Ordering::Release);
                return Err(persist::PersistError::Io {
                    path: dir.to_owned(),
                    source,
                });
            }
        }
        persist::write(path, &snapshot).inspect_err(|_| {
            // Try again at the next round.
            self.dirty.store(true, Ordering::Release);
        })
    }
}

/// The engine on the bus's publish path; see the module docs.
pub struct AlarmProcessor {
    alarms: Arc<Alarms>,
    transitions: Vec<Transition>,
}

impl AlarmProcessor {
    pub fn new(alarms: Arc<Alarms>) -> AlarmProcessor {
        AlarmProcessor {
            alarms,
            transitions: Vec::new(),
        }
    }

    fn emit(&mut self, out: &mut ProcessorOutput) {
        if self.transitions.is_empty() {
            return;
        }
        out.events
            .extend(self.transitions.drain(..).map(|t| t.to_event()));
        self.alarms.changed();
    }
}

impl Processor for AlarmProcessor {
    fn name(&self) -> &str {
        "alarms"
    }

    fn process(&mut self, batch: &mut Vec<Sample>, now: Timestamp, out: &mut ProcessorOutput) {
        self.alarms
            .engine
            .lock()
            .on_samples_into(batch, now, &mut self.transitions);
        self.emit(out);
    }

    fn tick_interval(&self) -> Option<Duration> {
        Some(TICK)
    }

    fn tick(&mut self, now: Timestamp, _batch: &mut Vec<Sample>, out: &mut ProcessorOutput) {
        self.alarms
            .engine
            .lock()
            .tick_into(now, &mut self.transitions);
        self.emit(out);
    }
}

impl crate::saved::SavedState for Alarms {
    fn what(&self) -> &'static str {
        "alarm"
    }

    fn changes(&self) -> &tokio::sync::Notify {
        &self.wake
    }

    fn save(&self) -> Result<(), persist::PersistError> {
        Alarms::save(self)
    }
}
