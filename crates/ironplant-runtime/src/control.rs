//! Local logic on the platform: computed tags (`[[computed]]`) and rules (`[[rule]]`) of
//! `ironplant_control::expr` as processors on the tag bus, and the expressions of alarms
//! (`condition`, `suppress_when`) as hidden computed bool tags the alarm engine reads.
//!
//! Pipeline order: computed tags first (their samples join the batch that caused them), then
//! rules (they see the computed values), then alarms (on tags and computed tags alike).
//!
//! - Alarm expressions: each becomes the bool tag `_alarms/<alarm id>/condition` or
//!   `.../suppress` (source `computed`), registered before the alarm engine is built
//!   ([`register_alarm_inputs`]) and computed by the same engine as `[[computed]]` tags.
//! - Rule actions: `event` → a `system` event `rule_fired` from `rule:<name>` with the
//!   action's severity; `publish` → the broker (when there is one); `write` → the command
//!   path (`crate::commands`) as the rule's identity (`rule:<name>`, origin `rule`: envelope,
//!   interlocks, read-back, audit; no select-before-operate, no two-person write), performed
//!   off the bus by [`RuleWriter`] (a write can take seconds; the bus must not wait).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ironplant_control::alarm::config::{AlarmConfigs, ExprSource};
use ironplant_control::command::{
    Authorisation, CommandRequest, CommandSettings, Origin, Requester,
};
use ironplant_control::expr::{
    compile, Action, Computed, ComputedDef, ComputedSettings, NameIndex, NamespaceResolver,
    RuleEvent, RuleOutput, RuleSettings, Rules, COMPUTED_SOURCE,
};
use ironplant_core::config::Config;
use ironplant_core::{
    BoxFuture, ComponentError, Event, EventKind, LiveNamespace, Namespace, Processor,
    ProcessorOutput, Sample, Severity, Shutdown, TagId, TagMeta, TagPath, Timestamp, Value,
    ValueType,
};
use ironplant_mqtt::codec::{MqttString, Publish, QoS};
use ironplant_mqtt::Broker;
use tokio::sync::mpsc;

use crate::component::Service;

/// The first level of the hidden tags that carry alarm expressions.
pub const ALARM_INPUTS: &str = "_alarms";
/// Rule writes queued for the writer before new ones are refused (counted, reported).
pub const RULE_WRITE_QUEUE: usize = 1024;

/// Why local logic cannot start (the config was checked at load, so this is rare: a tag
/// that vanished between load and start, a limit of the namespace).
#[derive(Debug, thiserror::Error)]
#[error("cannot start the computed tags, rules or alarm expressions:\n  {}", .0.join("\n  "))]
pub struct LogicStartError(pub Vec<String>);

/// The hidden tag of an alarm expression: `_alarms/<id>/condition` or `_alarms/<id>/suppress`.
fn alarm_input_path(alarm_id: &str, field: &str) -> Result<TagPath, String> {
    let mut level: String = alarm_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if level.starts_with('.') {
        level.replace_range(0..1, "_");
    }
    TagPath::parse(&format!("{ALARM_INPUTS}/{level}/{field}"))
        .map_err(|e| format!("alarm {alarm_id:?}: no tag path for its {field}: {e}"))
}

/// Every alarm expression with its hidden tag's path.
fn alarm_expressions(config: &Config) -> Vec<(TagPath, ExprSource, String)> {
    let mut out = Vec::new();
    for a in &config.get::<AlarmConfigs>().0 {
        for (e, field) in [
            (&a.condition_expr, "condition"),
            (&a.suppress_when, "suppress"),
        ] {
            if let Some(e) = e {
                match alarm_input_path(&a.id, field) {
                    Ok(p) => out.push((p, e.clone(), a.id.clone())),
                    Err(why) => tracing::error!("{why}"),
                }
            }
        }
    }
    out
}

/// Registers the hidden bool tag of every alarm expression (idempotent: the same path keeps
/// its id), before the alarm engine looks them up with [`alarm_input`].
pub fn register_alarm_inputs(
    config: &Config,
    namespace: &LiveNamespace,
) -> Result<(), LogicStartError> {
    let mut errors = Vec::new();
    for (path, e, id) in alarm_expressions(config) {
        let meta = TagMeta {
            id: TagId(0),
            path: path.clone(),
            value_type: ValueType::Bool,
            unit: None,
            description: format!("alarm {id:?}: {}", e.text),
            range: None,
            writable: false,
            device: Some(COMPUTED_SOURCE.to_owned()),
        };
        if let Err(err) = namespace.register(meta) {
            errors.push(format!("alarm {id:?}: cannot add {path}: {err}"));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(LogicStartError(errors))
    }
}

/// The hidden tag of the alarm expression `e` (registered by [`register_alarm_inputs`]).
pub fn alarm_input(
    config: &Config,
    namespace: &Namespace,
    e: &ExprSource,
) -> Result<TagId, String> {
    alarm_expressions(config)
        .into_iter()
        .find(|(_, x, _)| x == e)
        .and_then(|(p, _, _)| namespace.lookup(p.as_str()))
        .map(|m| m.id)
        .ok_or_else(|| format!("the expression {:?} has no input tag", e.text))
}

/// The computed-tag engine: `[[computed]]` plus the alarm expressions. `None` when there is
/// nothing to compute.
pub fn computed(
    config: &Config,
    namespace: &Namespace,
) -> Result<Option<Computed>, LogicStartError> {
    let index = NameIndex::new(namespace);
    let mut defs = config
        .get::<ComputedSettings>()
        .defs(namespace, &index)
        .map_err(LogicStartError)?;
    let mut errors = Vec::new();
    for (path, e, id) in alarm_expressions(config) {
        let Some(meta) = namespace.lookup(path.as_str()) else {
            errors.push(format!("alarm {id:?}: {path} is not registered"));
            continue;
        };
        let resolver = NamespaceResolver {
            namespace,
            index: &index,
            scope: e.scope.clone(),
        };
        match compile(&e.text, &resolver) {
            Ok(expr) => defs.push(ComputedDef {
                output: meta.id,
                name: path.to_string(),
                value_type: ValueType::Bool,
                expr,
            }),
            Err(err) => errors.push(format!("alarm {id:?}: {:?}: {err}", e.text)),
        }
    }
    if !errors.is_empty() {
        return Err(LogicStartError(errors));
    }
    if defs.is_empty() {
        return Ok(None);
    }
    Computed::new(defs)
        .map(Some)
        .map_err(|e| LogicStartError(vec![e.to_string()]))
}

/// The rules engine, `None` without `[[rule]]`s.
pub fn rules(config: &Config, namespace: &Namespace) -> Result<Option<Rules>, LogicStartError> {
    let settings = config.get::<RuleSettings>();
    if settings.rules.is_empty() {
        return Ok(None);
    }
    settings.build(namespace).map(Some).map_err(LogicStartError)
}

/// A write a rule asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleWrite {
    pub rule: Arc<str>,
    pub tag: TagPath,
    pub value: Value,
}

/// The rules on the bus: actions performed or handed on; see the module docs.
pub struct RuleProcessor {
    rules: Rules,
    namespace: Arc<LiveNamespace>,
    broker: Option<Broker>,
    writes: mpsc::Sender<RuleWrite>,
    outputs: Vec<RuleOutput>,
}

impl RuleProcessor {
    pub fn new(
        rules: Rules,
        namespace: Arc<LiveNamespace>,
        broker: Option<Broker>,
        writes: mpsc::Sender<RuleWrite>,
    ) -> RuleProcessor {
        RuleProcessor {
            rules,
            namespace,
            broker,
            writes,
            outputs: Vec::new(),
        }
    }

    fn perform(&mut self, out: &mut ProcessorOutput) {
        for o in self.outputs.drain(..) {
            let source = format!("rule:{}", o.name);
            match o.event {
                RuleEvent::Blocked { reason } => out.events.push(
                    Event::new(o.at, EventKind::System, "rule_blocked", &source, reason)
                        .with_severity(Severity::Warning),
                ),
                RuleEvent::Fired { actions, skipped } => {
                    for why in skipped {
                        out.events.push(
                            Event::new(
                                o.at,
                                EventKind::System,
                                "rule_action_skipped",
                                &source,
                                why,
                            )
                            .with_severity(Severity::Warning),
                        );
                    }
                    for a in actions {
                        match a {
                            Action::RaiseEvent { severity, message } => out.events.push(
                                Event::new(o.at, EventKind::System, "rule_fired", &source, message)
                                    .with_severity(severity),
                            ),
                            Action::Publish { topic, payload } => {
                                let Some(broker) = &self.broker else {
                                    continue;
                                };
                                match MqttString::from_utf8(Bytes::from(topic.clone())) {
                                    Ok(t) => {
                                        let mut p = Publish::new(t, Bytes::from(payload));
                                        p.qos = QoS::AtMostOnce;
                                        broker.publish(p);
                                    }
                                    Err(e) => out.events.push(
                                        Event::new(
                                            o.at,
                                            EventKind::System,
                                            "rule_action_skipped",
                                            &source,
                                            format!("cannot publish on {topic:?}: {e}"),
                                        )
                                        .with_severity(Severity::Warning),
                                    ),
                                }
                            }
                            Action::Write { tag, value } => {
                                let Some(meta) = self.namespace.tag(tag) else {
                                    continue;
                                };
                                let w = RuleWrite {
                                    rule: o.name.clone(),
                                    tag: meta.path.clone(),
                                    value,
                                };
                                if self.writes.try_send(w).is_err() {
                                    out.events.push(
                                        Event::new(
                                            o.at,
                                            EventKind::Command,
                                            "rule_write_refused",
                                            &source,
                                            format!(
                                                "write to {} not performed: {RULE_WRITE_QUEUE} rule writes are waiting",
                                                meta.path
                                            ),
                                        )
                                        .with_subject(meta.path.clone())
                                        .with_severity(Severity::Error),
                                    );
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

impl Processor for RuleProcessor {
    fn name(&self) -> &str {
        "rules"
    }

    fn process(&mut self, batch: &mut Vec<Sample>, now: Timestamp, out: &mut ProcessorOutput) {
        self.rules.process(batch, now, &mut self.outputs);
        self.perform(out);
    }

    fn tick_interval(&self) -> Option<Duration> {
        self.rules
            .needs_tick()
            .then_some(Duration::from_millis(100))
    }

    fn tick(&mut self, now: Timestamp, _batch: &mut Vec<Sample>, out: &mut ProcessorOutput) {
        self.rules.tick(now, &mut self.outputs);
        self.perform(out);
    }
}

/// Performs rule writes off the bus through the command path, one at a time in order (a
/// service).
pub struct RuleWriter {
    /// Outlives the writer's runs (a restarted run takes up the same queue).
    writes: tokio::sync::Mutex<mpsc::Receiver<RuleWrite>>,
    commands: Arc<crate::commands::Commands>,
}

impl RuleWriter {
    /// A writer and the sender its processor uses.
    pub fn new(commands: Arc<crate::commands::Commands>) -> (RuleWriter, mpsc::Sender<RuleWrite>) {
        let (tx, rx) = mpsc::channel(RULE_WRITE_QUEUE);
        (
            RuleWriter {
                writes: tokio::sync::Mutex::new(rx),
                commands,
            },
            tx,
        )
    }
}

impl Service for RuleWriter {
    fn name(&self) -> String {
        "rule-writer".to_owned()
    }

    fn run(
        self: Arc<Self>,
        mut shutdown: Shutdown,
    ) -> BoxFuture<'static, Result<(), ComponentError>> {
        Box::pin(async move {
            let mut rx = self.writes.lock().await;
            loop {
                let w = tokio::select! {
                    w = rx.recv() => w,
                    () = shutdown.requested() => None,
                };
                let Some(w) = w else {
                    return Ok(());
                };
                // Never unchecked: a rule writes through the command path (envelope,
                // interlocks, read-back, audit); every step is a `command` event.
                let r = self
                    .commands
                    .submit(CommandRequest {
                        tag: w.tag.clone(),
                        info: None,
                        value: w.value.clone(),
                        requester: Requester::rule(&w.rule),
                        authorisation: Authorisation::Allowed,
                        reason: format!("rule {}", w.rule),
                        origin: Origin::Rule,
                    })
                    .await;
                tracing::debug!(rule = %w.rule, tag = %w.tag, result = r.result(), "rule write");
            }
        })
    }
}

/// The first level of the hidden tags that carry the command path's findings.
pub const COMMAND_FINDINGS: &str = "_commands";
/// The source of those hidden tags.
pub const FINDINGS_SOURCE: &str = "command-path";

/// The hidden bool tags of a writable tag's findings: `_commands/<key>/unauthorised` (a value no
/// authorised command explains) and `_commands/<key>/failed` (the last command was not read
/// back). `<key>` is a stable hash of the path (a path can be 7 levels deep already).
pub fn finding_paths(tag: &TagPath) -> (TagPath, TagPath) {
    // FNV-1a, 64 bits: stable across builds and platforms.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in tag.as_str().bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let path = |leaf: &str| {
        TagPath::parse(&format!("{COMMAND_FINDINGS}/{h:016x}/{leaf}"))
            .expect("a fixed shape of valid levels")
    };
    (path("unauthorised"), path("failed"))
}

/// The tags that have findings (and built-in alarms): every writable tag of the namespace and
/// every `[[command]]` tag with `dynamic = true` (a Sparkplug metric born at run time, whose
/// command may fail like any other).
pub fn finding_subjects(config: &Config, namespace: &Namespace) -> Vec<TagPath> {
    let mut tags: Vec<TagPath> = namespace
        .tags()
        .filter(|m| m.writable)
        .map(|m| m.path.clone())
        .collect();
    for p in config
        .get::<CommandSettings>()
        .tags
        .iter()
        .filter(|p| p.dynamic)
    {
        if !tags.contains(&p.tag) {
            tags.push(p.tag.clone());
        }
    }
    tags
}

/// Registers the finding tags of every [`finding_subjects`] tag, before the alarm engine is
/// built.
pub fn register_finding_inputs(
    config: &Config,
    namespace: &LiveNamespace,
) -> Result<(), LogicStartError> {
    let subjects = finding_subjects(config, &namespace.read());
    let mut errors = Vec::new();
    for tag in subjects {
        let (unauthorised, failed) = finding_paths(&tag);
        for (path, what) in [
            (unauthorised, "shows a value no authorised command explains"),
            (failed, "did not show the last commanded value in time"),
        ] {
            let meta = TagMeta {
                id: TagId(0),
                path: path.clone(),
                value_type: ValueType::Bool,
                unit: None,
                description: format!("{tag} {what}"),
                range: None,
                writable: false,
                device: Some(FINDINGS_SOURCE.to_owned()),
            };
            if let Err(e) = namespace.register(meta) {
                errors.push(format!("{tag}: cannot add {path}: {e}"));
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(LogicStartError(errors))
    }
}
