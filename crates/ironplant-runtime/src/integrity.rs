//! Data integrity on the platform (issue 13): the detectors of `ironplant-integrity` as the
//! first processor of the pipeline, their findings as events and as ISA-18.2 alarms, their
//! learnt models kept across restarts.
//!
//! - [`Integrity::open`] builds the engine from `[integrity]` (defaults from each tag's
//!   metadata when the section is absent), registers one hidden bool tag per subject,
//!   `_integrity/<FNV-64 of the subject>/suspect` (source `integrity`), and the anomaly score
//!   of each modelled asset as `<asset>/_integrity/anomaly_score`, and restores
//!   `<data-dir>/integrity/models.json` (so a restart does not learn again from data an
//!   attacker may be bending).
//! - Subjects: every checked tag (validation; computed tags are not checked, their inputs
//!   are) and the assets consistency and anomaly findings name (the deepest asset holding the
//!   tags involved, the asset of each model group). Each gets the built-in alarm
//!   `<subject with . for />:integrity` (priority 2) on its `suspect` tag
//!   ([`Integrity::alarm_defs`]), true while any episode on the subject is open.
//! - [`IntegrityProcessor`] runs before the computed tags (so they see the lowered qualities)
//!   and the alarms (so a finding alarms in the batch that raised it): each finding is an
//!   `integrity` event with its evidence ([`ironplant_integrity::Finding::to_event`]).
//! - `crate::saved::StatePersister` saves the models when training ends and at shutdown.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ironplant_control::alarm::persist::{self, PersistError};
use ironplant_control::alarm::{AlarmDef, Condition};
use ironplant_core::config::Config;
use ironplant_core::{
    Event, EventBus, EventKind, LiveNamespace, Processor, ProcessorOutput, Quality, Sample,
    Severity, TagId, TagMeta, TagPath, Timestamp, Value, ValueType,
};
use ironplant_integrity::{Change, Finding, IntegrityConfig, Snapshot};
use parking_lot::Mutex;

/// The first level of the hidden finding tags.
pub const INTEGRITY_FINDINGS: &str = "_integrity";
/// The source of the finding and score tags.
pub const SOURCE: &str = "integrity";
/// The models' file under `<data-dir>/integrity/`.
pub const FILE: &str = "models.json";
/// How often the processor ticks the engine (staleness, windows).
pub const TICK: Duration = Duration::from_secs(1);

/// Where the platform keeps its learnt models under `data_dir`.
pub fn models_path(data_dir: &Path) -> PathBuf {
    data_dir.join("integrity").join(FILE)
}

/// Installs models learnt elsewhere (e.g. the demo's, learnt on the simulator in simulated
/// time) where the next start restores them; atomic, so a crash leaves the old file or the new.
pub fn install_models(data_dir: &Path, snapshot: &Snapshot) -> Result<PathBuf, PersistError> {
    let path = models_path(data_dir);
    write_models(&path, snapshot)?;
    Ok(path)
}

fn write_models(path: &Path, snapshot: &Snapshot) -> Result<(), PersistError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| PersistError::Io {
            path: dir.to_owned(),
            source,
        })?;
    }
    persist::write_atomic(path, snapshot.to_json().as_bytes())
}

/// Why integrity cannot start.
#[derive(Debug, thiserror::Error)]
#[error("cannot start the integrity checks:\n  {}", .0.join("\n  "))]
pub struct IntegrityStartError(pub Vec<String>);

fn fnv(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The hidden bool tag that is true while `subject` has an open integrity episode.
pub fn suspect_path(subject: &TagPath) -> TagPath {
    TagPath::parse(&format!(
        "{INTEGRITY_FINDINGS}/{:016x}/suspect",
        fnv(subject.as_str())
    ))
    .expect("a fixed shape of valid levels")
}

/// The anomaly score tag of an asset.
pub fn score_path(asset: &TagPath) -> Option<TagPath> {
    TagPath::parse(&format!("{}/_integrity/anomaly_score", asset.as_str())).ok()
}

/// The platform's integrity checks; see the module docs.
pub struct Integrity {
    /// Enabled, with something to check (else no processor runs).
    active: bool,
    /// For tags born at run time (Sparkplug births, templated ingest paths).
    namespace: Arc<LiveNamespace>,
    /// Ids below this were known when the engine was built; above, each is looked up once.
    known_below: usize,
    /// By tag id: looked up already (a flat table: this is on every batch's path).
    looked_up: Mutex<Vec<bool>>,
    engine: Mutex<ironplant_integrity::Integrity>,
    /// Subject → its `suspect` tag.
    flags: HashMap<TagPath, TagId>,
    /// Open episodes per subject (finding ids).
    open: Mutex<HashMap<TagPath, HashSet<Arc<str>>>>,
    /// Modelled asset → its score tag.
    scores: Vec<(TagPath, TagId)>,
    file: Option<PathBuf>,
    /// Training had ended at the last save.
    saved_trained: AtomicBool,
    dirty: AtomicBool,
    wake: tokio::sync::Notify,
}

impl Integrity {
    /// Builds the checks, registers their tags in `namespace` and restores the saved models.
    pub fn open(
        config: &Config,
        namespace: &Arc<LiveNamespace>,
        data_dir: Option<&Path>,
        events: &EventBus,
    ) -> Result<Arc<Integrity>, IntegrityStartError> {
        let cfg = config.get::<IntegrityConfig>();
        let ns = namespace.read();
        let known_below = ns.len();
        let mut engine =
            ironplant_integrity::Integrity::new(&ns, &cfg).map_err(IntegrityStartError)?;
        // Only what a finding can name: no alarm that could never raise.
        let subjects = if cfg.enabled {
            engine.subjects(&ns)
        } else {
            Vec::new()
        };
        let active = !subjects.is_empty();
        let modelled: Vec<TagPath> = if active {
            engine.anomaly().groups().map(|(a, ..)| a.clone()).collect()
        } else {
            Vec::new()
        };
        drop(ns);
        let mut errors = Vec::new();
        let mut flags = HashMap::new();
        for s in subjects {
            let meta = TagMeta {
                id: TagId(0),
                path: suspect_path(&s),
                value_type: ValueType::Bool,
                unit: None,
                description: format!("the data of {s} is suspect (integrity checks)"),
                range: None,
                writable: false,
                device: Some(SOURCE.to_owned()),
            };
            match namespace.register(meta) {
                Ok(id) => {
                    flags.insert(s, id);
                }
                Err(e) => errors.push(format!("{s}: cannot add its suspect tag: {e}")),
            }
        }
        let mut scores = Vec::new();
        for a in modelled {
            let Some(path) = score_path(&a) else { continue };
            let meta = TagMeta {
                id: TagId(0),
                path: path.clone(),
                value_type: ValueType::Float,
                unit: None,
                description: format!(
                    "anomaly score of {a}: CUSUM of its frozen models' residuals over the alarm threshold (1 = at the threshold)"
                ),
                range: None,
                writable: false,
                device: Some(SOURCE.to_owned()),
            };
            match namespace.register(meta) {
                Ok(id) => scores.push((a, id)),
                Err(e) => errors.push(format!("{a}: cannot add {path}: {e}")),
            }
        }
        if !errors.is_empty() {
            return Err(IntegrityStartError(errors));
        }
        let file = data_dir.map(models_path);
        let mut trained = false;
        if let Some(f) = file.as_ref().filter(|_| active) {
            match std::fs::read_to_string(f) {
                Ok(text) => match Snapshot::from_json(&text).and_then(|s| engine.restore(&s)) {
                    Ok(_) => {
                        trained = engine.is_trained();
                        tracing::info!(file = %f.display(), "integrity models restored (not learnt again)");
                    }
                    Err(e) => {
                        let now = Timestamp::now();
                        let msg = format!(
                            "the saved integrity models cannot be used ({e}); they are learnt again from the next training window of data. The file was {}",
                            crate::saved::set_aside(f, now)
                        );
                        tracing::error!("{msg}");
                        events.publish(
                            Event::new(
                                now,
                                EventKind::System,
                                "integrity_models_lost",
                                SOURCE,
                                msg,
                            )
                            .with_severity(Severity::Warning),
                        );
                    }
                },
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::error!(file = %f.display(), error = %e, "cannot read the integrity models; learning them again")
                }
            }
        }
        Ok(Arc::new(Integrity {
            active,
            namespace: namespace.clone(),
            known_below,
            looked_up: Mutex::new(Vec::new()),
            engine: Mutex::new(engine),
            flags,
            open: Mutex::new(HashMap::new()),
            scores,
            file,
            saved_trained: AtomicBool::new(trained),
            dirty: AtomicBool::new(false),
            wake: tokio::sync::Notify::new(),
        }))
    }

    /// The built-in alarm of every subject (see the module docs).
    pub fn alarm_defs(&self) -> Vec<AlarmDef> {
        let mut defs: Vec<AlarmDef> = self
            .flags
            .iter()
            .map(|(subject, id)| {
                let mut a = AlarmDef::new(
                    &format!("{}:integrity", subject.as_str().replace('/', ".")),
                    *id,
                    subject.clone(),
                    Condition::Condition,
                );
                a.priority = 2;
                a.message = format!("Data of {subject} not trustworthy").into();
                a.consequence = "Decisions on these values (rules, operators, reports) may be wrong: a sensor fault, or data being manipulated".into();
                a.response = "Read the integrity event's evidence (which check, which tags, by how much, since when); check the sensor, its wiring and who can write between it and the platform".into();
                a
            })
            .collect();
        defs.sort_by(|a, b| a.id.cmp(&b.id));
        defs
    }

    /// Whether the checks run: `[integrity] enabled` (the default) and something to check.
    pub fn is_active(&self) -> bool {
        self.active
    }

    /// Whether the models have been learnt (training ended, or restored).
    pub fn is_trained(&self) -> bool {
        self.engine.lock().is_trained()
    }

    /// Validates tags born since the engine was built with the default rules (they join no
    /// model group, and have no built-in alarm: their findings are events).
    fn adopt_new_tags(&self, batch: &[Sample]) {
        let mut fresh = Vec::new();
        {
            let mut seen = self.looked_up.lock();
            for s in batch {
                let i = s.tag.index();
                if i < self.known_below {
                    continue;
                }
                if seen.len() <= i {
                    seen.resize(i + 1, false);
                }
                if !seen[i] {
                    seen[i] = true;
                    fresh.push(s.tag);
                }
            }
        }
        if fresh.is_empty() {
            return;
        }
        let metas: Vec<TagMeta> = fresh
            .iter()
            .filter_map(|id| self.namespace.tag(*id))
            .collect();
        let mut engine = self.engine.lock();
        for m in &metas {
            engine.add_tag(m);
        }
    }

    /// Applies findings: events, and the `suspect` tags whose state changed (as samples).
    fn apply(
        &self,
        found: &[Finding],
        now: Timestamp,
        batch: &mut Vec<Sample>,
        out: &mut ProcessorOutput,
    ) {
        if found.is_empty() {
            return;
        }
        let mut open = self.open.lock();
        for f in found {
            out.events.push(f.to_event());
            let Some(subject) = &f.subject else { continue };
            let Some(&flag) = self.flags.get(subject) else {
                continue;
            };
            let set = open.entry(subject.clone()).or_default();
            let was = !set.is_empty();
            match f.change {
                Change::Raised => {
                    set.insert(f.id.clone());
                }
                Change::Cleared => {
                    set.remove(&f.id);
                }
            }
            let is = !set.is_empty();
            if was != is {
                batch.push(flag_sample(flag, is, now));
            }
        }
    }

    /// The anomaly scores as samples (every tick).
    fn score_samples(&self, now: Timestamp, batch: &mut Vec<Sample>) {
        if self.scores.is_empty() {
            return;
        }
        let engine = self.engine.lock();
        let by_asset: HashMap<&TagPath, f64> = engine.scores().collect();
        for (asset, id) in &self.scores {
            let (value, quality) = match by_asset.get(asset) {
                Some(s) if s.is_finite() => (Value::Float(*s), Quality::GOOD),
                _ => (
                    Value::Null,
                    Quality::bad(ironplant_core::QualityReason::InsufficientData),
                ),
            };
            batch.push(Sample {
                tag: *id,
                value,
                quality,
                source_ts: now,
                server_ts: now,
            });
        }
    }

    fn note_training(&self) {
        if !self.saved_trained.load(Ordering::Acquire) && self.engine.lock().is_trained() {
            self.dirty.store(true, Ordering::Release);
            self.wake.notify_one();
        }
    }

    /// Writes the models if training ended since the last write (blocking).
    fn save(&self) -> Result<(), PersistError> {
        let Some(path) = &self.file else {
            return Ok(());
        };
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        let Some(snapshot) = self.engine.lock().snapshot() else {
            return Ok(());
        };
        match write_models(path, &snapshot) {
            Ok(()) => {
                self.saved_trained.store(true, Ordering::Release);
                tracing::info!(file = %path.display(), "integrity models learnt and saved; they stay frozen");
                Ok(())
            }
            Err(e) => {
                self.dirty.store(true, Ordering::Release);
                Err(e)
            }
        }
    }
}

fn flag_sample(tag: TagId, on: bool, now: Timestamp) -> Sample {
    Sample {
        tag,
        value: Value::Bool(on),
        quality: Quality::GOOD,
        source_ts: now,
        server_ts: now,
    }
}

impl crate::saved::SavedState for Integrity {
    fn what(&self) -> &'static str {
        "integrity"
    }

    fn changes(&self) -> &tokio::sync::Notify {
        &self.wake
    }

    fn save(&self) -> Result<(), PersistError> {
        Integrity::save(self)
    }
}

/// The checks on the bus's publish path; see the module docs.
pub struct IntegrityProcessor {
    integrity: Arc<Integrity>,
    found: Vec<Finding>,
    /// The `suspect` tags got their first (false) value.
    started: bool,
}

impl IntegrityProcessor {
    pub fn new(integrity: Arc<Integrity>) -> IntegrityProcessor {
        IntegrityProcessor {
            integrity,
            found: Vec::new(),
            started: false,
        }
    }
}

impl Processor for IntegrityProcessor {
    fn name(&self) -> &str {
        "integrity"
    }

    fn process(&mut self, batch: &mut Vec<Sample>, now: Timestamp, out: &mut ProcessorOutput) {
        self.integrity.adopt_new_tags(batch);
        self.found.clear();
        self.integrity
            .engine
            .lock()
            .process(batch, now, &mut self.found);
        let found = std::mem::take(&mut self.found);
        self.integrity.apply(&found, now, batch, out);
        self.found = found;
    }

    fn tick_interval(&self) -> Option<Duration> {
        Some(TICK)
    }

    fn tick(&mut self, now: Timestamp, batch: &mut Vec<Sample>, out: &mut ProcessorOutput) {
        if !self.started {
            // Nothing found yet: every suspect tag starts Good false (a rebuilt processor
            // republishes the open episodes' state).
            let open = self.integrity.open.lock();
            for (subject, id) in &self.integrity.flags {
                let on = open.get(subject).is_some_and(|s| !s.is_empty());
                batch.push(flag_sample(*id, on, now));
            }
            self.started = true;
        }
        self.found.clear();
        self.integrity.engine.lock().tick(now, &mut self.found);
        let found = std::mem::take(&mut self.found);
        self.integrity.apply(&found, now, batch, out);
        self.found = found;
        self.integrity.score_samples(now, batch);
        self.integrity.note_training();
    }
}
