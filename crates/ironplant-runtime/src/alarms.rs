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

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ironplant_control::alarm::config::ExprSource;
pub use ironplant_control::alarm::Operation;
use ironplant_control::alarm::{
    persist, AlarmConfigs, AlarmEngine, AlarmError, AlarmSettings, AlarmView, KpiOptions,
    KpiReport, Transition,
};
use ironplant_core::config::Config;
use ironplant_core::{
    Event, EventBus, EventKind, Namespace, Processor, ProcessorOutput, Sample, Severity, TagId,
    Timestamp,
};
use ironplant_historian::events::{EventOrder, EventQuery, EventStore, MAX_EVENTS};
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

/// The built-in alarms of every writable tag (and `dynamic` `[[command]]` tag:
/// `crate::control::finding_subjects`), on the command path's findings
/// (`crate::control::finding_paths`): `<tag with . for />:unauthorised_change` (priority 1: the device shows
/// a value no authorised command explains, e.g. another Modbus master wrote the PLC) and
/// `<tag>:command_failed` (priority 2: the last command was not read back in time).
fn finding_alarms(
    config: &Config,
    namespace: &Namespace,
) -> Vec<ironplant_control::alarm::AlarmDef> {
    use ironplant_control::alarm::{AlarmDef, Condition};
    let mut defs = Vec::new();
    for path in crate::control::finding_subjects(config, namespace) {
        let (unauthorised, failed) = crate::control::finding_paths(&path);
        let (Some(u), Some(f)) = (
            namespace.lookup(unauthorised.as_str()),
            namespace.lookup(failed.as_str()),
        ) else {
            continue;
        };
        let mut a = AlarmDef::new(
            &format!("{}:unauthorised_change", alarm_key(&path)),
            u.id,
            path.clone(),
            Condition::Condition,
        );
        a.priority = 1;
        a.message = format!("Unauthorised change of {path}").into();
        a.consequence =
            "The process runs on a value nobody authorised: possible tampering or a rogue engineering station".into();
        a.response = "Check who wrote the device (security events, audit log); restore the commanded value through the platform".into();
        defs.push(a);
        let mut a = AlarmDef::new(
            &format!("{}:command_failed", alarm_key(&path)),
            f.id,
            path.clone(),
            Condition::Condition,
        );
        a.priority = 2;
        a.message = format!("Command to {path} not confirmed by the device").into();
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

/// The platform's alarms; see the module docs.
pub struct Alarms {
    engine: Mutex<AlarmEngine>,
    events: EventBus,
    /// The event store, where every transition is kept: read back at restart (transitions
    /// newer than the snapshot) and for the KPIs.
    store: Option<EventStore>,
    kpi: KpiOptions,
    file: Option<PathBuf>,
    dirty: AtomicBool,
    wake: tokio::sync::Notify,
    save_every: Duration,
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
        store: Option<&EventStore>,
        builtin: Vec<ironplant_control::alarm::AlarmDef>,
    ) -> Result<Option<Arc<Alarms>>, AlarmStartError> {
        let configs = config.get::<AlarmConfigs>();
        let mut findings = finding_alarms(config, namespace);
        findings.extend(builtin);
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
            let saved = persist::read(path);
            let saved = match (saved, store) {
                // The snapshot is written at most once a `save_interval`: transitions after
                // it (a crash) are in the event store, which commits each batch durably.
                (Ok(snapshot), Some(store)) => Ok(catch_up(snapshot, store, now, events)),
                (other, _) => other,
            };
            match saved {
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
                    let msg = format!(
                        "the saved alarm state cannot be read ({e}); alarms start from normal. The file was {}",
                        crate::saved::set_aside(path, now)
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
            store: store.cloned(),
            save_every: settings.save_interval,
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

    /// The ISA-18.2 performance report over `from..to`: from the event store's transitions
    /// (so across restarts and beyond the history kept in memory) plus those kept in memory
    /// that the store has not committed yet; without a store, from memory only. Reads the
    /// store: call it off the async workers.
    pub fn kpi(&self, from: Timestamp, to: Timestamp) -> KpiReport {
        let Some(store) = &self.store else {
            return self.engine.lock().kpi(from, to, &self.kpi);
        };
        // Alarms raised before the span and still standing are seen through the day before.
        let lookback = Timestamp(from.0.saturating_sub(86_400_000_000));
        let mut transitions = stored_transitions(store, lookback, to, KPI_MAX_TRANSITIONS);
        let mut seen: HashSet<(i64, Arc<str>, &'static str)> = transitions
            .iter()
            .map(|t| (t.ts.0, t.alarm.clone(), t.cause.as_str()))
            .collect();
        let engine = self.engine.lock();
        let recent: Vec<Transition> = engine
            .history()
            .filter(|t| t.ts >= lookback && t.ts < to)
            .filter(|t| seen.insert((t.ts.0, t.alarm.clone(), t.cause.as_str())))
            .cloned()
            .collect();
        transitions.extend(recent);
        engine.kpi_over(&transitions, from, to, &self.kpi)
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
        let t = self.engine.lock().operate(id, op, user, comment, now)?;
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

/// The most transitions a KPI report reads from the event store (about 200 MB at worst).
const KPI_MAX_TRANSITIONS: usize = 1_000_000;
/// The most transitions replayed over a snapshot at start.
const REPLAY_MAX: usize = 1_000_000;

/// The alarm transitions the store holds in `[from, to)`, oldest first, at most `max`.
fn stored_transitions(
    store: &EventStore,
    from: Timestamp,
    to: Timestamp,
    max: usize,
) -> Vec<Transition> {
    let mut q = EventQuery::new(from, to);
    q.kinds = vec![EventKind::Alarm];
    q.order = EventOrder::OldestFirst;
    q.limit = MAX_EVENTS;
    let mut out = Vec::new();
    loop {
        let page = match store.query(&q, &|_| true) {
            Ok(page) => page,
            Err(e) => {
                tracing::error!(error = %e, "cannot read alarm transitions from the event store");
                break;
            }
        };
        out.extend(
            page.events
                .iter()
                .filter_map(|e| Transition::from_event(&e.event)),
        );
        match page.next {
            Some(next) if out.len() < max => q.after = Some(next),
            Some(_) => {
                tracing::warn!(
                    max,
                    "more alarm transitions than can be read at once; the oldest {max} are used"
                );
                break;
            }
            None => break,
        }
    }
    out.truncate(max);
    out
}

/// The snapshot brought up to date with the transitions the event store holds after it (all
/// of them when there is no snapshot yet), so a crash between two snapshot writes loses no
/// alarm state: each transition is committed to the store within milliseconds.
fn catch_up(
    snapshot: Option<persist::Snapshot>,
    store: &EventStore,
    now: Timestamp,
    events: &EventBus,
) -> Option<persist::Snapshot> {
    let from = snapshot
        .as_ref()
        .map_or(0, |s| s.taken_at.saturating_add(1));
    let newer = stored_transitions(
        store,
        Timestamp(from),
        Timestamp(now.0.saturating_add(1)),
        REPLAY_MAX,
    );
    if newer.is_empty() {
        return snapshot;
    }
    let mut snapshot = snapshot.unwrap_or(persist::Snapshot {
        version: persist::SNAPSHOT_VERSION,
        taken_at: 0,
        alarms: Vec::new(),
    });
    let applied = snapshot.replay(&newer);
    tracing::info!(
        applied,
        "alarm transitions after the last snapshot replayed from the event store"
    );
    events.publish(Event::new(
        now,
        EventKind::System,
        "alarm_state_replayed",
        "alarms",
        format!("{applied} alarm transitions newer than the saved alarm state were replayed from the event store (the platform stopped before it saved them)"),
    ));
    Some(snapshot)
}

impl crate::saved::SavedState for Alarms {
    fn what(&self) -> &'static str {
        "alarm"
    }

    fn save_every(&self) -> Duration {
        self.save_every
    }

    fn changes(&self) -> &tokio::sync::Notify {
        &self.wake
    }

    fn save(&self) -> Result<(), persist::PersistError> {
        Alarms::save(self)
    }
}
