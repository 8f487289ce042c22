//! The platform's command path (`[[command]]`, `[[interlock]]`): the sans-IO
//! `ironplant_control::command::CommandPath` wired in front of [`Runtime::write`], the one write
//! path, for the REST API, MQTT (`<uns_prefix>/_cmd/<tag>`), the rules' writes
//! (`crate::control::RuleWriter`) and the platform's own restores.
//! See docs/commands.md.
//!
//! - [`Commands`] owns the path behind a lock, shared by the API, the MQTT service, the
//!   processor and the persister. [`Commands::submit`] decides, writes an accepted command
//!   through [`Runtime::write`] (on a task of its own, so a caller that goes away does not
//!   leave the command half done), reports the device's answer and resolves with the
//!   [`CommandResult`] once the command is verified or failed by read-back (or refused, or
//!   pending a second person).
//! - [`CommandWatch`] (a processor on the tag bus) feeds every sample of a writable tag to the
//!   path (read-back verification, unauthorised-change detection) and ticks it at its
//!   deadlines. Every audit record becomes an event (`command`, or `security` for an
//!   unauthorised change) and goes to the audit sink the server sets
//!   ([`Commands::set_audit_sink`]: the security audit log). An unauthorised change of a tag
//!   with `on_unauthorised_change = "restore"` is written back by the platform, through the
//!   same checks. Findings (an unauthorised change, a failed command) set the tag's hidden
//!   finding tags, the inputs of its built-in alarms (`crate::alarms`).
//! - `crate::saved::StatePersister` writes the path's snapshot atomically to
//!   `<data-dir>/commands/commands.json` at most once a [`SAVE_EVERY`] after a change and at
//!   shutdown; [`Commands::open`] restores it before the first sample.
//! - [`MqttCommands`] (a service, with a broker) serves the MQTT command convention.
//!
//! Interlocks: each `[[interlock]]` expression is compiled at start against the namespace
//! (`ironplant_control::expr`, absolute paths in backticks) and evaluated on the current values
//! of its inputs when a command of a tag that lists it is decided (before the path's lock is
//! taken: the bus's current values are read outside it). An interlock whose expression does not
//! compile, is not a condition, or has an input that is not Good is "cannot be evaluated", so
//! the write is refused (fail safe), saying why; a compile error is also a warning system
//! event at start. Time functions see only the current value (an interlock is a state, not a
//! history).
//!
//! Invariants: the path's lock is never held across an await, a bus publish or a device write
//! (the processor takes it inside the bus's publish path); every decision and step of a
//! command is one audit record, published as one event; a retained MQTT message is never
//! executed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use ironplant_control::alarm::persist;
use ironplant_control::command::mqtt::{
    command_filter, parse_command_topic, parse_request, reply_topic, MqttCommand, MqttResponse,
    REPLY_LEVEL,
};
use ironplant_control::command::{
    Accepted, AuditRecord, AuditResult, Authorisation, CommandId, CommandPath, CommandRequest,
    CommandSettings, CommandSnapshot, Decision, InterlockSettings, InterlockState, InterlockStatus,
    Origin, Outcome, Pending, Refusal, Requester, Role, SelectToken, TagInfo, TagPolicy,
};
use ironplant_control::expr::{compile, Expr, NameIndex, NamespaceResolver, Type, Val};
use ironplant_core::config::Config;
use ironplant_core::{
    BoxFuture, ComponentError, DeviceWriteError, Event, EventBus, EventKind, LiveNamespace,
    Namespace, Processor, ProcessorOutput, Sample, Severity, Shutdown, TagId, TagPath, Timestamp,
    Value, WriteAck,
};
use ironplant_mqtt::codec::{MqttString, Publish, QoS};
use ironplant_mqtt::Broker;
use parking_lot::{Mutex, RwLock};
use tokio::sync::{oneshot, Notify, Semaphore};

use crate::component::Service;
use crate::{Runtime, RuntimeWriteError};

/// How often the processor looks at the path's deadlines.
pub const TICK: Duration = Duration::from_millis(100);
/// The longest a changed state waits before it is written to disk.
pub use crate::saved::SAVE_EVERY;
/// The snapshot's file name under `<data-dir>/commands/`.
pub const FILE: &str = "commands.json";
/// How long [`Commands::submit`] waits for an outcome beyond the tag's verify timeout before
/// it answers `failed` itself (only when nothing feeds the path samples).
pub const OUTCOME_GRACE: Duration = Duration::from_secs(10);
/// MQTT commands handled at once; more are answered `busy`.
pub const MQTT_CONCURRENCY: usize = 64;

/// Where audit records go besides the event bus (the server: the security audit log). It
/// must not block (it runs inside the bus's publish path).
pub type AuditSink = Box<dyn Fn(&AuditRecord) + Send + Sync>;

/// Audit records kept for the sink until it is set.
pub const EARLY_AUDIT: usize = 1024;

struct AuditOut {
    sink: Option<AuditSink>,
    /// Records made before the sink was set.
    early: Vec<AuditRecord>,
    /// Records beyond [`EARLY_AUDIT`] made before the sink was set.
    lost: usize,
}

/// A record's outcome in one word for the security audit log: the result, with the refusal's
/// code (`refused:envelope_max`).
pub fn audit_outcome(r: &AuditRecord) -> String {
    match &r.result {
        AuditResult::Refused { code, .. } => format!("refused:{code}"),
        other => other.code().to_owned(),
    }
}

/// The detail of a refusal by an interlock that cannot be evaluated at all.
pub const NOT_EVALUATED: &str = "not evaluated";

/// The configured interlocks, compiled: by name, the expression or why it is unusable.
pub struct ExprInterlocks {
    compiled: HashMap<String, Result<Expr, String>>,
}

impl ExprInterlocks {
    /// Compiles every `[[interlock]]` against `namespace`; the second value lists the ones that
    /// do not compile or are not conditions, in words.
    pub fn compile(
        settings: &InterlockSettings,
        namespace: &Namespace,
    ) -> (ExprInterlocks, Vec<String>) {
        let index = NameIndex::new(namespace);
        let resolver = NamespaceResolver {
            namespace,
            index: &index,
            scope: None,
        };
        let mut problems = Vec::new();
        let compiled = settings
            .interlocks
            .iter()
            .map(|i| {
                let c = match compile(&i.expr, &resolver) {
                    Ok(e) if e.ty() == Type::Bool => Ok(e),
                    Ok(e) => Err(format!(
                        "its expression is a {}, not a condition (true or false)",
                        e.ty().as_str()
                    )),
                    Err(e) => Err(format!("its expression does not compile: {e}")),
                };
                if let Err(why) = &c {
                    problems.push(format!("interlock {:?} ({:?}): {why}", i.name, i.expr));
                }
                (i.name.clone(), c)
            })
            .collect();
        (ExprInterlocks { compiled }, problems)
    }

    /// The state of the interlock `name` on the current values of `runtime`'s bus, now.
    pub fn status(&self, name: &str, runtime: Option<&Runtime>, now: Timestamp) -> InterlockStatus {
        let unknown = |detail: String| InterlockStatus {
            name: name.to_owned(),
            state: InterlockState::BadInput,
            detail,
        };
        let expr = match self.compiled.get(name) {
            None => return unknown(format!("{NOT_EVALUATED}: no [[interlock]] of that name")),
            Some(Err(why)) => return unknown(format!("{NOT_EVALUATED}: {why}")),
            Some(Ok(e)) => e,
        };
        let Some(rt) = runtime else {
            return unknown(format!("{NOT_EVALUATED}: the platform is not running"));
        };
        let inputs: HashMap<TagId, Sample> = expr
            .inputs()
            .iter()
            .filter_map(|id| rt.bus.current(*id).map(|s| (*id, s)))
            .collect();
        let name_of = |id: TagId| {
            rt.namespace
                .tag(id)
                .map_or_else(|| format!("tag #{}", id.index()), |m| m.path.to_string())
        };
        let detail = expr.describe_inputs(&inputs, &name_of);
        let out = expr.eval(&mut expr.new_state(), &inputs, now);
        let state = match (&out.value, out.quality.is_good()) {
            (Val::Bool(true), true) => InterlockState::Holds,
            (Val::Bool(false), true) => InterlockState::Violated,
            _ => InterlockState::BadInput,
        };
        InterlockStatus {
            name: name.to_owned(),
            state,
            detail,
        }
    }
}

/// What became of a command, as the API and MQTT render it.
#[derive(Debug, Clone, PartialEq)]
pub enum CommandResult {
    /// A check failed; nothing was written.
    Refused(Refusal),
    /// Two-person rule: waiting for a second person to confirm it by id.
    Pending(Pending),
    /// The device shows the commanded value.
    Verified {
        id: CommandId,
        tag: TagPath,
        value: Value,
        after: Duration,
    },
    /// Written, but the device did not show the value in time (or echoed another).
    Failed {
        id: CommandId,
        tag: TagPath,
        commanded: Value,
        last_seen: Option<Value>,
        why: String,
    },
    /// The write did not reach the device or the device refused it.
    DeviceError {
        id: CommandId,
        tag: TagPath,
        message: String,
    },
    /// A newer accepted command of the tag took over before this one was verified.
    Superseded {
        id: CommandId,
        tag: TagPath,
        by: CommandId,
    },
}

impl CommandResult {
    /// `refused`, `pending`, `verified`, `failed`, `device_error` or `superseded`.
    pub fn result(&self) -> &'static str {
        match self {
            CommandResult::Refused(_) => "refused",
            CommandResult::Pending(_) => "pending",
            CommandResult::Verified { .. } => "verified",
            CommandResult::Failed { .. } => "failed",
            CommandResult::DeviceError { .. } => "device_error",
            CommandResult::Superseded { .. } => "superseded",
        }
    }

    /// The command's id (a refusal's is only in the audit record).
    pub fn id(&self) -> Option<CommandId> {
        match self {
            CommandResult::Refused(_) => None,
            CommandResult::Pending(p) => Some(p.id),
            CommandResult::Verified { id, .. }
            | CommandResult::Failed { id, .. }
            | CommandResult::DeviceError { id, .. }
            | CommandResult::Superseded { id, .. } => Some(*id),
        }
    }

    /// The body of the MQTT response (docs/commands.md).
    pub fn to_mqtt(&self) -> MqttResponse {
        let base = |result: &'static str| MqttResponse {
            result,
            command: self.id().map(|i| i.0),
            code: None,
            reason: None,
            echoed: None,
            expires: None,
        };
        match self {
            CommandResult::Refused(r) => MqttResponse::refused(r),
            CommandResult::Pending(p) => {
                MqttResponse::from_decision(&Decision::AwaitingConfirmation(p.clone()))
            }
            CommandResult::Verified { value, .. } => MqttResponse {
                echoed: Some(value.clone()),
                ..base("verified")
            },
            CommandResult::Failed { last_seen, why, .. } => MqttResponse {
                echoed: last_seen.clone(),
                reason: Some(why.clone()),
                ..base("failed")
            },
            CommandResult::DeviceError { message, .. } => MqttResponse {
                reason: Some(message.clone()),
                ..base("device_error")
            },
            CommandResult::Superseded { by, .. } => MqttResponse {
                reason: Some(format!(
                    "command {by} on the same tag was accepted before this one was verified"
                )),
                ..base("superseded")
            },
        }
    }
}

/// The answer of [`Commands::decide`]: write it, or done already.
#[derive(Debug, Clone, PartialEq)]
pub enum Decided {
    /// Passed every check: [`Commands::complete`] writes it.
    Accepted(Accepted),
    /// Refused or pending.
    Done(CommandResult),
}

impl From<Decision> for Decided {
    fn from(d: Decision) -> Decided {
        match d {
            Decision::Accepted(a) => Decided::Accepted(a),
            Decision::AwaitingConfirmation(p) => Decided::Done(CommandResult::Pending(p)),
            Decision::Refused(r) => Decided::Done(CommandResult::Refused(r)),
        }
    }
}

/// The platform's command path; see the module docs.
pub struct Commands {
    path: Mutex<CommandPath>,
    interlocks: ExprInterlocks,
    runtime: OnceLock<Weak<Runtime>>,
    events: EventBus,
    waiters: Mutex<HashMap<CommandId, oneshot::Sender<CommandResult>>>,
    /// Finding changes for the alarm inputs (tag, unauthorised (else failed), on), from
    /// outcomes wherever they are resolved; [`CommandWatch`] publishes them.
    findings: Mutex<Vec<(TagPath, bool, bool)>>,
    /// The last selection of each tag (one session holds a tag at a time) and its session, to
    /// check the `select` id of an operate. Bounded by the tags.
    selections: Mutex<HashMap<TagPath, (String, CommandId)>>,
    audit_out: Mutex<AuditOut>,
    roles: RwLock<Option<RoleResolver>>,
    file: Option<PathBuf>,
    dirty: AtomicBool,
    wake: Notify,
}

impl Commands {
    /// The configured command path, every writable tag of `namespace` watched, restored from
    /// `<data_dir>/commands/commands.json` if a snapshot exists (a corrupt one is moved aside
    /// and reported as a critical system event, never silently overwritten).
    pub fn open(
        config: &Config,
        namespace: &Namespace,
        data_dir: Option<&Path>,
        events: &EventBus,
    ) -> Arc<Commands> {
        let mut path = CommandPath::new(
            &config.get::<CommandSettings>(),
            &config.get::<InterlockSettings>(),
        );
        // Setpoints declared by configuration are watched for unauthorised changes; tags
        // writable only by their protocol (Sparkplug metrics restored from a saved namespace)
        // for read-back only (`CommandPath::watch_read_back`).
        let declared: std::collections::HashSet<&TagPath> = config
            .tags
            .iter()
            .filter(|t| t.writable)
            .map(|t| &t.path)
            .collect();
        for m in namespace.tags().filter(|m| m.writable) {
            if declared.contains(&m.path) {
                path.watch(m.path.clone());
            } else {
                path.watch_read_back(m.path.clone());
            }
        }
        let file = data_dir.map(|d| d.join("commands").join(FILE));
        if let Some(f) = &file {
            restore(&mut path, f, events);
        }
        let (interlocks, problems) =
            ExprInterlocks::compile(&config.get::<InterlockSettings>(), namespace);
        for p in problems {
            let msg = format!("{p}; writes to the tags that list it are refused");
            tracing::warn!("{msg}");
            events.publish(
                Event::new(
                    Timestamp::now(),
                    EventKind::System,
                    "interlock_not_evaluated",
                    "commands",
                    msg,
                )
                .with_severity(Severity::Warning),
            );
        }
        Arc::new(Commands {
            path: Mutex::new(path),
            interlocks,
            runtime: OnceLock::new(),
            events: events.clone(),
            waiters: Mutex::new(HashMap::new()),
            findings: Mutex::new(Vec::new()),
            selections: Mutex::new(HashMap::new()),
            audit_out: Mutex::new(AuditOut {
                sink: None,
                early: Vec::new(),
                lost: 0,
            }),
            roles: RwLock::new(None),
            file,
            dirty: AtomicBool::new(false),
            wake: Notify::new(),
        })
    }

    /// Ties the path to the runtime it writes through (the platform does it once at start).
    pub fn attach(&self, runtime: &Arc<Runtime>) {
        let _ = self.runtime.set(Arc::downgrade(runtime));
    }

    /// Sends every audit record to `sink` too (the server: the security audit log), after
    /// the record's event was published, outside the path's lock. Records made before the sink
    /// was set (the first polls after a start) are handed to it now, up to [`EARLY_AUDIT`].
    pub fn set_audit_sink(&self, sink: AuditSink) {
        let mut out = self.audit_out.lock();
        for r in out.early.drain(..) {
            sink(&r);
        }
        if out.lost > 0 {
            tracing::warn!(
                lost = out.lost,
                "command audit records made before the audit log was attached were not kept"
            );
        }
        out.sink = Some(sink);
    }

    /// Tells the MQTT side the role of a user by name (the server asks its user store).
    pub fn set_role_resolver(&self, roles: RoleResolver) {
        *self.roles.write() = Some(roles);
    }

    /// The role of the user `name`, if a resolver knows it.
    pub fn role_of(&self, name: &str) -> Option<Role> {
        self.roles.read().as_ref().and_then(|f| f(name))
    }

    /// What a writable tag's commands are subject to: its policy (envelope, interlocks,
    /// select-before-operate, two-person rule) and each interlock's state on the current
    /// values, `now` (for the HMI, before anyone writes).
    pub fn point(&self, tag: &TagPath, now: Timestamp) -> (TagPolicy, Vec<InterlockStatus>) {
        let policy = self.path.lock().policy(tag);
        let rt = self.runtime();
        let interlocks = policy
            .interlocks
            .iter()
            .map(|name| self.interlocks.status(name, rt.as_deref(), now))
            .collect();
        (policy, interlocks)
    }

    fn runtime(&self) -> Option<Arc<Runtime>> {
        self.runtime.get().and_then(Weak::upgrade)
    }

    /// What the namespace and the bus know of `tag` now.
    fn info(&self, tag: &TagPath) -> Option<TagInfo> {
        let rt = self.runtime()?;
        let meta = rt.namespace.lookup(tag.as_str())?;
        let current = rt.bus.current(meta.id);
        Some(TagInfo::new(&meta, current.as_ref()))
    }

    /// The interlocks of `tag`'s policy, evaluated now on the bus's current values (outside the
    /// path's lock: the bus's table must never be read under it).
    fn interlocks_of(&self, tag: &TagPath, now: Timestamp) -> Vec<InterlockStatus> {
        let names = self.path.lock().policy(tag).interlocks;
        if names.is_empty() {
            return Vec::new();
        }
        let rt = self.runtime();
        names
            .iter()
            .map(|n| self.interlocks.status(n, rt.as_deref(), now))
            .collect()
    }

    /// Runs `f` on the path under its lock and takes the audit records it made.
    fn locked<R>(&self, f: impl FnOnce(&mut CommandPath) -> R) -> (R, Vec<AuditRecord>) {
        let mut p = self.path.lock();
        let r = f(&mut p);
        let audit = p.drain_audit();
        (r, audit)
    }

    /// Publishes the records as events and hands them on (outside the lock).
    fn emit(&self, audit: Vec<AuditRecord>) {
        for r in &audit {
            self.events.publish(r.to_event());
        }
        self.after_audit(&audit);
    }

    /// The audit sink, superseded commands' waiters, the persister.
    fn after_audit(&self, audit: &[AuditRecord]) {
        if audit.is_empty() {
            return;
        }
        {
            let mut out = self.audit_out.lock();
            match &out.sink {
                Some(sink) => audit.iter().for_each(sink),
                None => {
                    let room = EARLY_AUDIT.saturating_sub(out.early.len());
                    out.lost += audit.len().saturating_sub(room);
                    out.early.extend(audit.iter().take(room).cloned());
                }
            }
        }
        for r in audit {
            if let AuditResult::Superseded { by } = r.result {
                if let Ok(tag) = TagPath::parse(&r.tag) {
                    self.resolve_with(
                        CommandId(r.command),
                        CommandResult::Superseded {
                            id: CommandId(r.command),
                            tag,
                            by: CommandId(by),
                        },
                    );
                }
            }
        }
        self.changed();
    }

    fn changed(&self) {
        self.dirty.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    fn resolve_with(&self, id: CommandId, result: CommandResult) {
        if let Some(tx) = self.waiters.lock().remove(&id) {
            let _ = tx.send(result);
        }
    }

    /// Hands a final outcome to the command's waiter, and notes what it means for the
    /// finding alarms.
    fn resolve(&self, o: &Outcome) {
        {
            let mut f = self.findings.lock();
            match o {
                Outcome::UnauthorisedChange(c) => f.push((c.tag.clone(), true, true)),
                Outcome::ChangeReverted { tag, .. } => f.push((tag.clone(), true, false)),
                Outcome::Verified { tag, .. } => {
                    f.push((tag.clone(), true, false));
                    f.push((tag.clone(), false, false));
                }
                Outcome::Failed { tag, .. } => f.push((tag.clone(), false, true)),
                _ => {}
            }
        }
        match o {
            Outcome::Verified {
                id,
                tag,
                value,
                after,
            } => self.resolve_with(
                *id,
                CommandResult::Verified {
                    id: *id,
                    tag: tag.clone(),
                    value: value.clone(),
                    after: *after,
                },
            ),
            Outcome::Failed {
                id,
                tag,
                commanded,
                last_seen,
                why,
            } => self.resolve_with(
                *id,
                CommandResult::Failed {
                    id: *id,
                    tag: tag.clone(),
                    commanded: commanded.clone(),
                    last_seen: last_seen.clone(),
                    why: why.clone(),
                },
            ),
            _ => {}
        }
    }

    /// Decides a command (the request's `info` is filled in from the namespace and the bus).
    pub fn decide(&self, mut req: CommandRequest) -> Decided {
        req.info = self.info(&req.tag);
        let now = Timestamp::now();
        let interlocks = self.interlocks_of(&req.tag, now);
        let (d, audit) = self.locked(|p| p.submit(req, &interlocks, now));
        self.emit(audit);
        d.into()
    }

    /// Writes an accepted command through [`Runtime::write`], reports the device's answer and
    /// resolves with the read-back's verdict. The write and the report run on a task of their
    /// own: dropping this future does not leave the command half done.
    pub async fn complete(self: &Arc<Self>, a: Accepted) -> CommandResult {
        let r = self.write_and_verify(a).await;
        if matches!(r, CommandResult::Verified { .. }) {
            // The new expected value is on disk before the caller hears of it: a crash right
            // after a verified command cannot turn the device's (commanded) value into an
            // unauthorised change at the restart.
            let this = self.clone();
            let save = move || {
                this.dirty.store(true, Ordering::Release);
                this.save()
            };
            if let Ok(Err(e)) = tokio::task::spawn_blocking(save).await {
                tracing::error!(error = %e, "cannot save the command state after a verified command");
            }
        }
        r
    }

    async fn write_and_verify(self: &Arc<Self>, a: Accepted) -> CommandResult {
        let (tx, rx) = oneshot::channel();
        self.waiters.lock().insert(a.id, tx);
        let this = self.clone();
        let id = a.id;
        let tag = a.tag.clone();
        let commanded = a.value.clone();
        let written = tokio::spawn(async move { this.write(a).await }).await;
        match written {
            Ok(Some(done)) => {
                self.waiters.lock().remove(&id);
                return done;
            }
            Ok(None) => {}
            Err(e) => {
                self.waiters.lock().remove(&id);
                return CommandResult::DeviceError {
                    id,
                    tag,
                    message: format!("the write task failed: {e}"),
                };
            }
        }
        let timeout = self.path.lock().policy(&tag).verify.timeout + OUTCOME_GRACE;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(r)) => r,
            _ => {
                self.waiters.lock().remove(&id);
                CommandResult::Failed {
                    id,
                    tag,
                    commanded,
                    last_seen: None,
                    why: format!(
                        "no read-back outcome within {:.3} s (is the command processor running?)",
                        timeout.as_secs_f64()
                    ),
                }
            }
        }
    }

    /// The write itself; `Some` when the command is over (device error).
    async fn write(&self, a: Accepted) -> Option<CommandResult> {
        let Some(rt) = self.runtime() else {
            let message = "the platform is not running (no runtime to write through)";
            let now = Timestamp::now();
            let ((), audit) = self.locked(|p| p.device_failed(a.id, message, now));
            self.emit(audit);
            return Some(CommandResult::DeviceError {
                id: a.id,
                tag: a.tag,
                message: message.to_owned(),
            });
        };
        let written = match rt.write(a.tag.as_str(), a.value.clone()).await {
            // The write went out but its answer did not come in time (for Sparkplug, the edge
            // node's report of the value is the only answer): the device may have taken it,
            // so the read-back decides, as after an acknowledgement without echo. A `failed`
            // command raises the tag's alarm and the platform keeps expecting the commanded
            // value; a `device_error` would put the old expectation back and report a late
            // application as an unauthorised change.
            Err(RuntimeWriteError::Device {
                source: DeviceWriteError::Timeout(t),
                ..
            }) => {
                tracing::warn!(tag = %a.tag, value = %a.value, timeout = ?t, "no answer to a command's write: verifying it by read-back");
                Ok(WriteAck {
                    detail: format!("no answer within {t:?}"),
                    echoed: None,
                })
            }
            other => other,
        };
        let now = Timestamp::now();
        match written {
            Ok(ack) => {
                let (out, audit) = self.locked(|p| p.device_acknowledged(a.id, &ack, now));
                self.emit(audit);
                if let Some(o) = out {
                    self.resolve(&o);
                }
                None
            }
            Err(e) => {
                let message = e.to_string();
                let ((), audit) = self.locked(|p| p.device_failed(a.id, &message, now));
                self.emit(audit);
                Some(CommandResult::DeviceError {
                    id: a.id,
                    tag: a.tag,
                    message,
                })
            }
        }
    }

    /// Decides a command and, accepted, writes it and waits for its read-back.
    pub async fn submit(self: &Arc<Self>, req: CommandRequest) -> CommandResult {
        match self.decide(req) {
            Decided::Accepted(a) => self.complete(a).await,
            Decided::Done(r) => r,
        }
    }

    /// Select-before-operate: the requester's session holds the tag (see
    /// `CommandPath::select`); `req.value` may be `Value::Null`.
    pub fn select(&self, mut req: CommandRequest) -> Result<SelectToken, Refusal> {
        req.info = self.info(&req.tag);
        let now = Timestamp::now();
        let interlocks = self.interlocks_of(&req.tag, now);
        let (r, audit) = self.locked(|p| p.select(req, &interlocks, now));
        self.emit(audit);
        if let Ok(t) = &r {
            self.selections
                .lock()
                .insert(t.tag.clone(), (t.session.clone(), t.id));
        }
        r
    }

    /// Whether `id` is the selection the session last got for the tag (an operate may name
    /// the selection it operates).
    pub fn is_selection(&self, tag: &TagPath, session: &str, id: CommandId) -> bool {
        self.selections
            .lock()
            .get(tag)
            .is_some_and(|(s, held)| s == session && *held == id)
    }

    /// Drops the session's selection of the tag; `false` if it held none.
    pub fn cancel_select(&self, tag: &TagPath, requester: &Requester, origin: Origin) -> bool {
        let now = Timestamp::now();
        let (held, audit) = self.locked(|p| p.cancel_select(tag, requester, origin, now));
        self.emit(audit);
        if held {
            self.selections.lock().remove(tag);
        }
        held
    }

    /// Two-person commands waiting for their second person.
    pub fn pending(&self) -> Vec<Pending> {
        self.path.lock().pending()
    }

    /// Two-person rule: `confirmer` confirms the pending command `id` (the checks run again on
    /// the tag's current state).
    pub fn confirm_decide(
        &self,
        id: CommandId,
        confirmer: &Requester,
        authorisation: &Authorisation,
    ) -> Decided {
        let tag = self
            .path
            .lock()
            .pending()
            .into_iter()
            .find(|p| p.id == id)
            .map(|p| p.tag);
        let info = tag.as_ref().and_then(|t| self.info(t));
        let now = Timestamp::now();
        let interlocks = tag
            .as_ref()
            .map_or_else(Vec::new, |t| self.interlocks_of(t, now));
        let (d, audit) =
            self.locked(|p| p.confirm(id, confirmer, authorisation, info, &interlocks, now));
        self.emit(audit);
        d.into()
    }

    /// [`Commands::confirm_decide`], then the write and its read-back.
    pub async fn confirm(
        self: &Arc<Self>,
        id: CommandId,
        confirmer: &Requester,
        authorisation: &Authorisation,
    ) -> CommandResult {
        match self.confirm_decide(id, confirmer, authorisation) {
            Decided::Accepted(a) => self.complete(a).await,
            Decided::Done(r) => r,
        }
    }

    /// Two-person rule: `by` rejects (or, the requester, withdraws) the pending command.
    /// `Ok`: the refusal that ended it; `Err`: why this rejection is refused.
    pub fn reject(
        &self,
        id: CommandId,
        by: &Requester,
        authorisation: &Authorisation,
    ) -> Result<Refusal, Refusal> {
        let now = Timestamp::now();
        let (r, audit) = self.locked(|p| p.reject(id, by, authorisation, now));
        self.emit(audit);
        r
    }

    /// The platform writes the expected value back after an unauthorised change.
    fn spawn_restore(self: &Arc<Self>, tag: TagPath, value: Value) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            tracing::error!(%tag, "cannot restore after an unauthorised change: no async runtime");
            return;
        };
        let this = self.clone();
        handle.spawn(async move {
            let r = this
                .submit(CommandRequest::restore(tag.clone(), value, None))
                .await;
            tracing::warn!(%tag, result = r.result(), "restore after an unauthorised change");
        });
    }

    /// Writes the snapshot if the state changed since the last write (blocking).
    fn save(&self) -> Result<(), persist::PersistError> {
        let Some(path) = &self.file else {
            return Ok(());
        };
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        let snapshot = self.path.lock().snapshot();
        let bytes = serde_json::to_vec_pretty(&snapshot)
            .expect("a snapshot has string keys only, so it always serializes");
        let written = path
            .parent()
            .map_or(Ok(()), |dir| {
                std::fs::create_dir_all(dir).map_err(|source| persist::PersistError::Io {
                    path: dir.to_owned(),
                    source,
                })
            })
            .and_then(|()| persist::write_atomic(path, &bytes));
        // Try again at the next round.
        written.inspect_err(|_| self.dirty.store(true, Ordering::Release))
    }
}

/// Takes back the snapshot at `file`, if any; a corrupt one is moved aside and reported.
fn restore(path: &mut CommandPath, file: &Path, events: &EventBus) {
    let now = Timestamp::now();
    let bytes = match std::fs::read(file) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
        Err(e) => {
            lost(file, &format!("cannot read it: {e}"), events, now);
            return;
        }
    };
    let restored = serde_json::from_slice::<CommandSnapshot>(&bytes)
        .map_err(|e| e.to_string())
        .and_then(|s| path.restore(&s).map_err(|e| e.to_string()));
    match restored {
        Ok(n) => tracing::info!(tags = n, "command state restored"),
        Err(e) => lost(file, &e, events, now),
    }
}

fn lost(file: &Path, why: &str, events: &EventBus, now: Timestamp) {
    let msg = format!(
        "the saved command state {} cannot be used ({why}); expected values are learned again. The file was {}",
        file.display(),
        crate::saved::set_aside(file, now)
    );
    tracing::error!("{msg}");
    events.publish(
        Event::new(
            now,
            EventKind::System,
            "command_state_lost",
            "commands",
            msg,
        )
        .with_severity(Severity::Critical),
    );
}

/// The path on the bus's publish path; see the module docs.
pub struct CommandWatch {
    commands: Arc<Commands>,
    namespace: Arc<LiveNamespace>,
    /// By tag index: the path of a writable tag, `None` for the others.
    paths: Vec<Option<TagPath>>,
    /// By tag index: a Good sample was seen (the first one may be learned as expected).
    seen: Vec<bool>,
    outcomes: Vec<Outcome>,
    /// The finding tags start Good `false` (nothing found yet), at the first tick.
    started: bool,
}

impl CommandWatch {
    pub fn new(commands: Arc<Commands>, namespace: Arc<LiveNamespace>) -> CommandWatch {
        let mut w = CommandWatch {
            commands,
            namespace,
            paths: Vec::new(),
            seen: Vec::new(),
            outcomes: Vec::new(),
            started: false,
        };
        w.refresh();
        w
    }

    /// Learns the tags added to the namespace since (a Sparkplug metric's birth); writable
    /// ones are watched for read-back (and for unauthorised changes only if a `[[command]]`
    /// names them: a metric's datatype makes it commandable, not a setpoint).
    fn refresh(&mut self) {
        let added: Vec<Option<TagPath>> = self
            .namespace
            .read()
            .tags()
            .skip(self.paths.len())
            .map(|m| m.writable.then(|| m.path.clone()))
            .collect();
        if added.is_empty() {
            return;
        }
        {
            let mut p = self.commands.path.lock();
            for t in added.iter().flatten() {
                p.watch_read_back(t.clone());
            }
        }
        self.seen.extend(added.iter().map(|_| false));
        self.paths.extend(added);
    }

    /// Sets a finding tag (`crate::control::finding_paths`) for the alarm engine after this
    /// processor: `unauthorised` or `failed` of `tag`.
    fn finding(&self, tag: &TagPath, unauthorised: bool, on: bool, batch: &mut Vec<Sample>) {
        let (u, f) = crate::control::finding_paths(tag);
        let path = if unauthorised { u } else { f };
        if let Some(meta) = self.namespace.lookup(path.as_str()) {
            let now = Timestamp::now();
            batch.push(Sample {
                tag: meta.id,
                value: Value::Bool(on),
                quality: ironplant_core::Quality::GOOD,
                source_ts: now,
                server_ts: now,
            });
        }
    }

    /// Publishes the noted finding changes as samples of the finding tags.
    fn publish_findings(&self, batch: &mut Vec<Sample>) {
        let noted = std::mem::take(&mut *self.commands.findings.lock());
        for (tag, unauthorised, on) in noted {
            self.finding(&tag, unauthorised, on, batch);
        }
    }

    fn finish(
        &mut self,
        audit: Vec<AuditRecord>,
        out: &mut ProcessorOutput,
        batch: &mut Vec<Sample>,
    ) {
        out.events.extend(audit.iter().map(AuditRecord::to_event));
        self.commands.after_audit(&audit);
        if self.outcomes.is_empty() {
            self.publish_findings(batch);
            return;
        }
        self.commands.changed();
        for o in std::mem::take(&mut self.outcomes) {
            self.commands.resolve(&o);
            match o {
                Outcome::UnauthorisedChange(c) => {
                    if let Some(v) = c.restore {
                        self.commands.spawn_restore(c.tag, v);
                    }
                }
                Outcome::ChangeReverted { tag, value } => {
                    out.events.push(
                        Event::new(
                            Timestamp::now(),
                            EventKind::Security,
                            "change_reverted",
                            "command",
                            format!("{tag} shows its expected value {value} again"),
                        )
                        .with_subject(tag)
                        .with_severity(Severity::Info),
                    );
                }
                _ => {}
            }
        }
        self.publish_findings(batch);
    }
}

impl Processor for CommandWatch {
    fn name(&self) -> &str {
        "commands"
    }

    fn process(&mut self, batch: &mut Vec<Sample>, now: Timestamp, out: &mut ProcessorOutput) {
        if batch.iter().any(|s| s.tag.index() >= self.paths.len()) {
            self.refresh();
        }
        let mut first_seen = false;
        let audit = {
            let mut p = self.commands.path.lock();
            for s in batch.iter() {
                let i = s.tag.index();
                let Some(Some(tag)) = self.paths.get(i) else {
                    continue;
                };
                if s.quality.is_good() {
                    if let Some(seen) = self.seen.get_mut(i) {
                        first_seen |= !*seen;
                        *seen = true;
                    }
                }
                self.outcomes
                    .extend(p.observe(tag, &s.value, s.quality, now));
            }
            p.drain_audit()
        };
        if first_seen {
            self.commands.changed();
        }
        self.finish(audit, out, batch);
    }

    fn tick_interval(&self) -> Option<Duration> {
        Some(TICK)
    }

    fn tick(&mut self, now: Timestamp, batch: &mut Vec<Sample>, out: &mut ProcessorOutput) {
        if !self.started {
            self.started = true;
            for tag in self.paths.iter().flatten() {
                // A finding already noted (a restored state) follows in the same batch.
                self.finding(tag, true, false, batch);
                self.finding(tag, false, false, batch);
            }
        }
        let audit = {
            let mut p = self.commands.path.lock();
            if p.next_deadline().is_none_or(|d| d > now) {
                None
            } else {
                self.outcomes.extend(p.tick(now));
                Some(p.drain_audit())
            }
        };
        match audit {
            Some(audit) => self.finish(audit, out, batch),
            // Findings of commands resolved off the bus (a read-back by echo).
            None => self.publish_findings(batch),
        }
    }
}

impl crate::saved::SavedState for Commands {
    fn what(&self) -> &'static str {
        "command"
    }

    fn changes(&self) -> &tokio::sync::Notify {
        &self.wake
    }

    fn save(&self) -> Result<(), persist::PersistError> {
        Commands::save(self)
    }
}

/// Installs the command path on a started runtime: ties it to the runtime, adds the
/// processor (when there is a writable tag to watch or a `[[command]]`) and the persister (with
/// a data directory). The platform starts the MQTT service when there is a broker.
pub(crate) fn install(
    runtime: &Arc<Runtime>,
    factories: &mut Vec<crate::pipeline::ProcessorFactory>,
    has_commands: bool,
) {
    let commands = runtime.commands.clone();
    commands.attach(runtime);
    let writable = runtime.namespace.read().tags().any(|m| m.writable);
    if writable || has_commands {
        let ns = runtime.namespace.clone();
        factories.push(Box::new(move || {
            Box::new(CommandWatch::new(commands.clone(), ns.clone())) as Box<dyn Processor>
        }));
    }
    // Nothing to keep without a data directory.
    if runtime.commands.file.is_some() {
        runtime
            .supervisor
            .start_service(Arc::new(crate::saved::StatePersister(
                runtime.commands.clone(),
            )));
    }
}

// ---- MQTT ------------------------------------------------------------------------------------

/// The MQTT command convention (docs/commands.md) on the embedded broker: subscribes (with
/// the publisher's authenticated origin) to `<uns_prefix>/_cmd/#`, submits each request and
/// answers on its Response Topic with its Correlation Data (or on `<uns_prefix>/_cmd_reply/
/// <tag>`). The broker's Auth hook already decided the publish by the write policy, so a
/// message that arrives here is authorised (the verdict is `Allowed`).
///
/// - Retained messages are never executed: not the ones replayed at subscription (a command
///   must not run again at every restart), nor a live one (answered `error`,
///   `retained_command`).
/// - The identity is the origin's owner (`user:NAME`); the role is asked of the resolver the
///   server sets ([`Commands::set_role_resolver`]), else taken as `operator`, the least role
///   the write policy lets publish commands. A two-person confirmation or rejection needs the
///   real role and is refused (`role_unknown`) without it.
/// - The session of select-before-operate is the MQTT client id.
/// - A Response Topic under `$`, in `spBv1.0/`, with wildcards, or under the UNS prefix (other
///   than `_cmd_reply/`) is not used (the platform must not publish into the data namespace
///   for a client); the answer goes to the reply topic.
pub struct MqttCommands {
    pub commands: Arc<Commands>,
    pub broker: Broker,
    pub uns_prefix: String,
    permits: Arc<Semaphore>,
}

/// Looks up a user's role by name.
pub type RoleResolver = Arc<dyn Fn(&str) -> Option<Role> + Send + Sync>;

impl MqttCommands {
    pub fn new(commands: Arc<Commands>, broker: Broker, uns_prefix: &str) -> MqttCommands {
        MqttCommands {
            commands,
            broker,
            uns_prefix: uns_prefix.to_owned(),
            permits: Arc::new(Semaphore::new(MQTT_CONCURRENCY)),
        }
    }

    /// The requester from the broker's origin: (requester, whether the role is known).
    fn requester(&self, origin: &ironplant_mqtt::Origin) -> (Requester, bool) {
        let name = match origin.owner.as_deref() {
            Some(o) => o.strip_prefix("user:").unwrap_or(o).to_owned(),
            None => "anonymous".to_owned(),
        };
        let known = self.commands.role_of(&name);
        let session = format!(
            "mqtt:{}",
            origin.client_id.as_deref().unwrap_or("(no client id)")
        );
        (
            Requester::user(&name, known.unwrap_or(Role::Operator), &session),
            known.is_some(),
        )
    }

    fn respond(&self, request: &Publish, tag: Option<&TagPath>, r: &MqttResponse) {
        let asked = request
            .properties
            .response_topic
            .as_ref()
            .map(|t| t.as_str().to_owned());
        let topic = match (asked, tag) {
            (Some(t), _) if response_topic_allowed(&self.uns_prefix, &t) => t,
            (_, Some(tag)) => reply_topic(&self.uns_prefix, tag),
            (_, None) => return,
        };
        let Ok(topic) = MqttString::from_utf8(Bytes::from(topic)) else {
            return;
        };
        let mut p = Publish::new(topic, Bytes::from(r.render()));
        p.qos = QoS::AtLeastOnce;
        p.retain = false;
        p.properties.correlation_data = request.properties.correlation_data.clone();
        self.broker.publish(p);
    }

    async fn handle(self: Arc<Self>, p: Publish, origin: ironplant_mqtt::Origin) {
        let tag = match parse_command_topic(&self.uns_prefix, p.topic.as_str()) {
            Ok(t) => t,
            Err(e) => return self.respond(&p, None, &MqttResponse::error(&e)),
        };
        let cmd = match parse_request(&p.payload[..]) {
            Ok(c) => c,
            Err(e) => return self.respond(&p, Some(&tag), &MqttResponse::error(&e)),
        };
        let (who, role_known) = self.requester(&origin);
        let request = |value: Value, reason: String| CommandRequest {
            tag: tag.clone(),
            info: None,
            value,
            requester: who.clone(),
            authorisation: Authorisation::Allowed,
            reason,
            origin: Origin::Mqtt,
        };
        let c = &self.commands;
        match cmd {
            MqttCommand::Operate { value, reason } => match c.decide(request(value, reason)) {
                Decided::Accepted(a) => {
                    self.respond(
                        &p,
                        Some(&tag),
                        &MqttResponse::from_decision(&Decision::Accepted(a.clone())),
                    );
                    let r = c.complete(a).await;
                    self.respond(&p, Some(&tag), &r.to_mqtt());
                }
                Decided::Done(r) => self.respond(&p, Some(&tag), &r.to_mqtt()),
            },
            MqttCommand::Select { value, reason } => {
                let r = match c.select(request(value.unwrap_or(Value::Null), reason)) {
                    Ok(t) => MqttResponse::selected(&t),
                    Err(r) => MqttResponse::refused(&r),
                };
                self.respond(&p, Some(&tag), &r);
            }
            MqttCommand::Cancel => {
                let held = c.cancel_select(&tag, &who, Origin::Mqtt);
                self.respond(&p, Some(&tag), &MqttResponse::cancelled(held));
            }
            MqttCommand::Confirm { id, .. } | MqttCommand::Reject { id, .. } if !role_known => {
                let r = MqttResponse {
                    result: "refused",
                    command: Some(id.0),
                    code: Some("role_unknown"),
                    reason: Some(format!(
                        "two-person rule: {} cannot confirm or reject over MQTT: the platform does not know the role of this connection's identity; use the REST API (POST /api/v1/commands/{id}/confirm)",
                        who.actor.identity()
                    )),
                    echoed: None,
                    expires: None,
                };
                self.respond(&p, Some(&tag), &r);
            }
            MqttCommand::Confirm { id, .. } => {
                match c.confirm_decide(id, &who, &Authorisation::Allowed) {
                    Decided::Accepted(a) => {
                        self.respond(
                            &p,
                            Some(&tag),
                            &MqttResponse::from_decision(&Decision::Accepted(a.clone())),
                        );
                        let r = c.complete(a).await;
                        self.respond(&p, Some(&tag), &r.to_mqtt());
                    }
                    Decided::Done(r) => self.respond(&p, Some(&tag), &r.to_mqtt()),
                }
            }
            MqttCommand::Reject { id, .. } => {
                let r = match c.reject(id, &who, &Authorisation::Allowed) {
                    Ok(r) | Err(r) => MqttResponse::refused(&r),
                };
                self.respond(&p, Some(&tag), &r);
            }
        }
    }
}

/// Whether the platform may answer on `topic`, a client's Response Topic: not a system topic,
/// not Sparkplug, no wildcard, and not in the UNS (except the reply level).
pub fn response_topic_allowed(uns_prefix: &str, topic: &str) -> bool {
    if topic.is_empty()
        || topic.starts_with('$')
        || topic.starts_with("spBv1.0/")
        || topic.contains(['+', '#', '\0'])
    {
        return false;
    }
    let prefix = uns_prefix.trim_end_matches('/');
    let reply = if prefix.is_empty() {
        format!("{REPLY_LEVEL}/")
    } else {
        format!("{prefix}/{REPLY_LEVEL}/")
    };
    if topic.starts_with(&reply) {
        return true;
    }
    !prefix.is_empty() && topic != prefix && !topic.starts_with(&format!("{prefix}/"))
}

impl Service for MqttCommands {
    fn name(&self) -> String {
        "mqtt-commands".to_owned()
    }

    fn run(
        self: Arc<Self>,
        mut shutdown: Shutdown,
    ) -> BoxFuture<'static, Result<(), ComponentError>> {
        Box::pin(async move {
            let filter = command_filter(&self.uns_prefix);
            let mut rx = self
                .broker
                .subscribe_internal_with_origin("commands", &filter, 1024)
                .map_err(|e| ComponentError::new(format!("cannot subscribe to {filter:?}: {e}")))?;
            loop {
                let (p, origin) = tokio::select! {
                    m = rx.recv() => match m {
                        Some(m) => m,
                        None => return Err(ComponentError::new("the broker closed the command subscription")),
                    },
                    () = shutdown.requested() => return Ok(()),
                };
                if p.retain {
                    // A retained command must never run (at every restart it would run again).
                    if origin.client_id.is_some() {
                        let tag = parse_command_topic(&self.uns_prefix, p.topic.as_str()).ok();
                        let r = MqttResponse {
                            result: "error",
                            command: None,
                            code: Some("retained_command"),
                            reason: Some("a retained command is never executed; publish it without the retain flag".to_owned()),
                            echoed: None,
                            expires: None,
                        };
                        self.respond(&p, tag.as_ref(), &r);
                    } else {
                        tracing::warn!(topic = %p.topic.as_str(), "a retained command was not executed");
                    }
                    continue;
                }
                let Ok(permit) = self.permits.clone().try_acquire_owned() else {
                    let tag = parse_command_topic(&self.uns_prefix, p.topic.as_str()).ok();
                    let r = MqttResponse {
                        result: "error",
                        command: None,
                        code: Some("busy"),
                        reason: Some(format!(
                            "{MQTT_CONCURRENCY} commands are being handled; try again"
                        )),
                        echoed: None,
                        expires: None,
                    };
                    self.respond(&p, tag.as_ref(), &r);
                    continue;
                };
                let this = self.clone();
                tokio::spawn(async move {
                    this.handle(p, origin).await;
                    drop(permit);
                });
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_never_go_into_the_data_namespace() {
        let ok = |p: &str, t: &str| response_topic_allowed(p, t);
        assert!(ok("plant", "clients/abc/replies"));
        assert!(ok("plant", "plant/_cmd_reply/a/b"));
        assert!(ok("plant/", "plant/_cmd_reply/a/b"));
        assert!(!ok("plant", "plant/acme/lyon/speed"), "a tag topic");
        assert!(!ok("plant", "plant"));
        assert!(!ok("plant", "plant/_events/security/x"));
        assert!(!ok("plant", "$SYS/broker/uptime"));
        assert!(!ok("plant", "spBv1.0/g/NCMD/n"));
        assert!(!ok("plant", "clients/+/replies"));
        assert!(!ok("plant", ""));
        // Without a prefix everything is the UNS: only the reply level.
        assert!(!ok("", "clients/abc/replies"));
        assert!(ok("", "_cmd_reply/a/b"));
        // Another prefix that merely starts the same is not the UNS.
        assert!(ok("plant", "plantation/replies"));
    }

    #[test]
    fn an_interlock_that_cannot_be_evaluated_says_why() {
        let (i, problems) =
            ExprInterlocks::compile(&InterlockSettings::default(), &Namespace::new());
        assert!(problems.is_empty());
        let s = i.status("filler_stopped", None, Timestamp(0));
        assert_eq!(s.state, InterlockState::BadInput);
        assert!(
            s.detail.contains("no [[interlock]] of that name"),
            "{}",
            s.detail
        );
    }

    #[test]
    fn results_render_as_mqtt_answers() {
        let tag = TagPath::parse("a/b/c").expect("path");
        let v = CommandResult::Verified {
            id: CommandId(7),
            tag: tag.clone(),
            value: Value::Int(320),
            after: Duration::from_millis(12),
        };
        let j: serde_json::Value = serde_json::from_slice(&v.to_mqtt().render()).expect("JSON");
        assert_eq!(
            j,
            serde_json::json!({"result": "verified", "command": 7, "echoed": 320})
        );
        let e = CommandResult::DeviceError {
            id: CommandId(8),
            tag,
            message: "not connected".to_owned(),
        };
        let j: serde_json::Value = serde_json::from_slice(&e.to_mqtt().render()).expect("JSON");
        assert_eq!(
            j,
            serde_json::json!({"result": "device_error", "command": 8, "reason": "not connected"})
        );
        assert_eq!(e.result(), "device_error");
        assert_eq!(e.id(), Some(CommandId(8)));
    }
}
