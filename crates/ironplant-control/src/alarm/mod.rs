//! ISA-18.2 / IEC 62682 alarms: definitions, the alarm state machine, the engine that feeds
//! them from samples, KPIs, a persistent snapshot and the `[[alarm]]` / `[alarms]` config.
//!
//! Everything here is synchronous and takes `now`: the runtime wraps [`AlarmEngine`] in a
//! processor on the tag bus, publishes each [`Transition`] as an [`Event`] (kind `alarm`) and
//! writes [`AlarmEngine::snapshot`] with [`persist::write_atomic`] after every batch of
//! transitions. See docs/alarms.md for the states, the config and the KPI definitions.
//!
//! - [`config`]: the `[[alarm]]` definitions and `[alarms]` globals (a core `Section` each).
//! - [`engine`]: [`AlarmEngine`], samples in, transitions out; operator operations.
//! - [`kpi`]: the ISA-18.2 §16 / EEMUA 191 performance report, a pure function of transitions.
//! - [`persist`]: the versioned snapshot and its atomic file.

pub mod config;
pub mod engine;
pub mod kpi;
pub mod persist;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use ironplant_core::event::{Event, EventKind, Severity};
use ironplant_core::{TagId, TagPath, Timestamp, Value};

pub use config::{AlarmConfig, AlarmConfigs, AlarmSettings};
pub use engine::{AlarmEngine, AlarmView, EngineSettings, Operation};
pub use kpi::{KpiOptions, KpiReport};
pub use persist::{RestoreReport, Snapshot};

/// The `source` of every alarm event.
pub const EVENT_SOURCE: &str = "alarms";

/// The stable name of an alarm: configured, or `<tag path>:<kind>` by default. It keys the
/// snapshot, the API and operator operations.
pub type AlarmId = Arc<str>;

/// The states of ISA-18.2 Figure 5 as an operator sees them. The first four are the
/// alarm/acknowledge combinations; the last three hide the alarm from the operator and take
/// precedence in that order (out of service over shelved over suppressed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AlarmState {
    /// A: not in alarm, acknowledged.
    Normal,
    /// B: in alarm, not acknowledged.
    Unacknowledged,
    /// C: in alarm, acknowledged.
    Acknowledged,
    /// D: returned to normal before it was acknowledged.
    ReturnToNormalUnacknowledged,
    /// E: shelved by an operator until a time.
    Shelved,
    /// F: suppressed by design while its condition holds (e.g. the line is stopped).
    SuppressedByDesign,
    /// G: removed from service by maintenance until returned.
    OutOfService,
}

impl AlarmState {
    pub const ALL: [AlarmState; 7] = [
        AlarmState::Normal,
        AlarmState::Unacknowledged,
        AlarmState::Acknowledged,
        AlarmState::ReturnToNormalUnacknowledged,
        AlarmState::Shelved,
        AlarmState::SuppressedByDesign,
        AlarmState::OutOfService,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AlarmState::Normal => "normal",
            AlarmState::Unacknowledged => "unacknowledged",
            AlarmState::Acknowledged => "acknowledged",
            AlarmState::ReturnToNormalUnacknowledged => "rtn_unacknowledged",
            AlarmState::Shelved => "shelved",
            AlarmState::SuppressedByDesign => "suppressed",
            AlarmState::OutOfService => "out_of_service",
        }
    }

    pub fn parse(s: &str) -> Option<AlarmState> {
        AlarmState::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Shown on the operator's alarm summary (in alarm, or waiting for an acknowledgement).
    pub fn is_annunciated(self) -> bool {
        matches!(
            self,
            AlarmState::Unacknowledged
                | AlarmState::Acknowledged
                | AlarmState::ReturnToNormalUnacknowledged
        )
    }
}

impl fmt::Display for AlarmState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a transition happened; the event's `code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Cause {
    /// The condition became true (after its on-delay).
    Raised,
    /// The condition became false (after its off-delay).
    Cleared,
    Acknowledged,
    /// A latching alarm reset by an operator after it cleared.
    Reset,
    Shelved,
    Unshelved,
    /// The shelve time ran out.
    ShelveExpired,
    Suppressed,
    Unsuppressed,
    RemovedFromService,
    ReturnedToService,
}

impl Cause {
    pub const ALL: [Cause; 11] = [
        Cause::Raised,
        Cause::Cleared,
        Cause::Acknowledged,
        Cause::Reset,
        Cause::Shelved,
        Cause::Unshelved,
        Cause::ShelveExpired,
        Cause::Suppressed,
        Cause::Unsuppressed,
        Cause::RemovedFromService,
        Cause::ReturnedToService,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Raised => "raised",
            Cause::Cleared => "cleared",
            Cause::Acknowledged => "acknowledged",
            Cause::Reset => "reset",
            Cause::Shelved => "shelved",
            Cause::Unshelved => "unshelved",
            Cause::ShelveExpired => "shelve_expired",
            Cause::Suppressed => "suppressed",
            Cause::Unsuppressed => "unsuppressed",
            Cause::RemovedFromService => "removed_from_service",
            Cause::ReturnedToService => "returned_to_service",
        }
    }

    pub fn parse(s: &str) -> Option<Cause> {
        Cause::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// What makes an alarm true.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// value > limit (clears below limit - deadband).
    High {
        limit: f64,
    },
    HighHigh {
        limit: f64,
    },
    /// value < limit (clears above limit + deadband).
    Low {
        limit: f64,
    },
    LowLow {
        limit: f64,
    },
    /// |value - setpoint| > band (clears below band - deadband).
    Deviation {
        setpoint: Setpoint,
        band: f64,
    },
    /// |Δvalue / Δt| > rate units per second, Δ taken over `window` (clears below rate - deadband).
    Rate {
        rate: f64,
        window: Duration,
    },
    /// value == state (or != with `equal: false`).
    State {
        state: Value,
        equal: bool,
    },
    /// The tag's quality is Bad (for longer than the on-delay).
    BadQuality,
    /// The input tag is a bool the caller computes (an expression of the `expr` module): true is
    /// the alarm.
    Condition,
}

impl Condition {
    pub fn kind(&self) -> &'static str {
        match self {
            Condition::High { .. } => "high",
            Condition::HighHigh { .. } => "high_high",
            Condition::Low { .. } => "low",
            Condition::LowLow { .. } => "low_low",
            Condition::Deviation { .. } => "deviation",
            Condition::Rate { .. } => "rate",
            Condition::State { .. } => "state",
            Condition::BadQuality => "bad_quality",
            Condition::Condition => "condition",
        }
    }

    /// The number the value is compared with, for records and events.
    pub fn limit(&self) -> Option<f64> {
        match *self {
            Condition::High { limit }
            | Condition::HighHigh { limit }
            | Condition::Low { limit }
            | Condition::LowLow { limit } => Some(limit),
            Condition::Deviation { band, .. } => Some(band),
            Condition::Rate { rate, .. } => Some(rate),
            Condition::State { .. } | Condition::BadQuality | Condition::Condition => None,
        }
    }
}

/// The setpoint of a deviation alarm.
#[derive(Debug, Clone, PartialEq)]
pub enum Setpoint {
    Constant(f64),
    /// Another tag's current value (no deviation alarm until it has a Good numeric value).
    Tag(TagId),
}

/// One alarm as the engine runs it (built from an [`AlarmConfig`] by
/// [`AlarmConfig::build`], or in code).
#[derive(Debug, Clone, PartialEq)]
pub struct AlarmDef {
    pub id: AlarmId,
    /// The tag the condition reads (for `condition` alarms: the bool input).
    pub tag: TagId,
    /// The subject of its events: the tag's path (for `condition` alarms the configured tag or
    /// asset).
    pub path: TagPath,
    pub condition: Condition,
    /// Hysteresis in the value's units (limits, deviation, rate); 0 for none.
    pub deadband: f64,
    pub on_delay: Duration,
    pub off_delay: Duration,
    /// 1 (highest) to 4.
    pub priority: u8,
    pub message: Arc<str>,
    pub consequence: Arc<str>,
    pub response: Arc<str>,
    /// A bool input: true suppresses the alarm by design.
    pub suppress: Option<TagId>,
    /// Class or area (default: the ISA-95 asset path of the tag).
    pub class: Arc<str>,
    /// Stays annunciated after it clears until reset by an operator.
    pub latching: bool,
}

impl AlarmDef {
    /// A definition with defaults: priority 3, no deadband or delays, class = the tag's asset.
    pub fn new(id: &str, tag: TagId, path: TagPath, condition: Condition) -> AlarmDef {
        let class = path
            .parent()
            .map_or_else(|| Arc::from(""), |p| Arc::from(p.as_str()));
        let message = Arc::from(format!("{} {}", path.as_str(), condition.kind()).as_str());
        AlarmDef {
            id: Arc::from(id),
            tag,
            path,
            condition,
            deadband: 0.0,
            on_delay: Duration::ZERO,
            off_delay: Duration::ZERO,
            priority: 3,
            message,
            consequence: Arc::from(""),
            response: Arc::from(""),
            suppress: None,
            class,
            latching: false,
        }
    }

    /// What decides whether the alarm is active; a restored alarm whose fingerprint differs
    /// is reported as changed (see [`persist`]).
    pub fn fingerprint(&self) -> String {
        let params = match &self.condition {
            Condition::Deviation {
                setpoint: Setpoint::Tag(t),
                band,
            } => format!("setpoint=tag#{} band={band}", t.0),
            Condition::Deviation {
                setpoint: Setpoint::Constant(c),
                band,
            } => format!("setpoint={c} band={band}"),
            Condition::Rate { rate, window } => format!("rate={rate} window={window:?}"),
            Condition::State { state, equal } => format!("state={state} equal={equal}"),
            c => c.limit().map(|l| format!("limit={l}")).unwrap_or_default(),
        };
        format!(
            "{} {} {params} deadband={} latching={}",
            self.path.as_str(),
            self.condition.kind(),
            self.deadband,
            self.latching
        )
    }
}

/// One change of an alarm's state: the record the runtime publishes as an event (see
/// [`Transition::to_event`]), historises and feeds to the KPIs.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub alarm: AlarmId,
    pub tag: TagPath,
    pub kind: &'static str,
    pub from: AlarmState,
    pub to: AlarmState,
    pub cause: Cause,
    /// The tag's last value (None if none seen yet).
    pub value: Option<Value>,
    pub limit: Option<f64>,
    pub priority: u8,
    pub class: Arc<str>,
    pub message: Arc<str>,
    /// The operator for operations; None for process changes.
    pub user: Option<Arc<str>>,
    pub comment: Option<Arc<str>>,
    /// For `shelved`: when the shelve ends.
    pub shelved_until: Option<Timestamp>,
    pub ts: Timestamp,
}

impl Transition {
    /// Severity of an alarm event from its ISA-18.2 priority.
    pub fn severity(priority: u8) -> Severity {
        match priority {
            1 => Severity::Critical,
            2 => Severity::Error,
            3 => Severity::Warning,
            _ => Severity::Info,
        }
    }

    /// The event to publish: kind `alarm`, code = the cause, subject = the tag, actor = the
    /// operator, attributes `alarm`, `state`, `from`, `priority`, `kind`, `class`, then
    /// `value`, `limit`, `comment`, `shelved_until` (µs since the epoch) when known.
    pub fn to_event(&self) -> Event {
        let message = format!(
            "{} ({})",
            self.message,
            self.cause.as_str().replace('_', " ")
        );
        let mut e = Event::new(
            self.ts,
            EventKind::Alarm,
            self.cause.as_str(),
            EVENT_SOURCE,
            message,
        )
        .with_severity(Transition::severity(self.priority))
        .with_subject(self.tag.clone())
        .with_attribute("alarm", Value::String(self.alarm.clone()))
        .with_attribute("state", Value::String(Arc::from(self.to.as_str())))
        .with_attribute("from", Value::String(Arc::from(self.from.as_str())))
        .with_attribute("priority", Value::Int(i64::from(self.priority)))
        .with_attribute("kind", Value::String(Arc::from(self.kind)))
        .with_attribute("class", Value::String(self.class.clone()));
        if let Some(v) = &self.value {
            e = e.with_attribute("value", v.clone());
        }
        if let Some(l) = self.limit {
            e = e.with_attribute("limit", Value::Float(l));
        }
        if let Some(c) = &self.comment {
            e = e.with_attribute("comment", Value::String(c.clone()));
        }
        if let Some(u) = self.shelved_until {
            e = e.with_attribute("shelved_until", Value::Int(u.0));
        }
        if let Some(u) = &self.user {
            e = e.with_actor(u);
        }
        e
    }

    /// A transition read back from its event (e.g. from the event store, for KPIs over
    /// history); `None` if the event is not an alarm transition of this module.
    pub fn from_event(e: &Event) -> Option<Transition> {
        if e.kind != EventKind::Alarm {
            return None;
        }
        let text = |name: &str| match e.attribute(name) {
            Some(Value::String(s)) => Some(s.clone()),
            _ => None,
        };
        let cause = Cause::parse(&e.code)?;
        let to = AlarmState::parse(&text("state")?)?;
        let from = AlarmState::parse(&text("from")?)?;
        let priority = match e.attribute("priority") {
            Some(Value::Int(p)) => u8::try_from(*p).ok()?,
            _ => return None,
        };
        let kind = KINDS
            .iter()
            .copied()
            .find(|k| text("kind").as_deref() == Some(*k))
            .unwrap_or("condition");
        // The message of the record is the definition's; the event appends the cause.
        let suffix = format!(" ({})", cause.as_str().replace('_', " "));
        let message = e
            .message
            .strip_suffix(suffix.as_str())
            .unwrap_or(&e.message);
        Some(Transition {
            alarm: text("alarm")?,
            tag: e.subject.clone()?,
            kind,
            from,
            to,
            cause,
            value: e.attribute("value").cloned(),
            limit: e.attribute("limit").and_then(Value::as_f64),
            priority,
            class: text("class").unwrap_or_else(|| Arc::from("")),
            message: Arc::from(message),
            user: e.actor.clone(),
            comment: text("comment"),
            shelved_until: match e.attribute("shelved_until") {
                Some(Value::Int(t)) => Some(Timestamp(*t)),
                _ => None,
            },
            ts: e.ts,
        })
    }
}

/// Every `kind` name, in config order.
pub const KINDS: [&str; 9] = [
    "high",
    "high_high",
    "low",
    "low_low",
    "deviation",
    "rate",
    "state",
    "bad_quality",
    "condition",
];

/// Why an operator operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AlarmError {
    #[error("no alarm {0:?}; list them with GET /api/v1/alarms")]
    UnknownAlarm(String),
    #[error("{operation} needs a user (who is doing it)")]
    MissingUser { operation: &'static str },
    #[error("{operation} needs a comment (why); write a few words for the alarm journal")]
    MissingComment { operation: &'static str },
    #[error("alarm {alarm:?} is {state}, not unacknowledged; there is nothing to acknowledge")]
    NotUnacknowledged { alarm: String, state: AlarmState },
    #[error(
        "shelving for {requested:?} is longer than the maximum of {max:?} ([alarms] max_shelve)"
    )]
    ShelveTooLong { requested: Duration, max: Duration },
    #[error("a shelve needs a duration greater than zero")]
    ShelveZero,
    #[error("alarm {alarm:?} is already shelved until {until}; unshelve it first")]
    AlreadyShelved { alarm: String, until: Timestamp },
    #[error("alarm {alarm:?} is not shelved")]
    NotShelved { alarm: String },
    #[error("alarm {alarm:?} is out of service; return it to service first")]
    OutOfService { alarm: String },
    #[error("alarm {alarm:?} is already out of service")]
    AlreadyOutOfService { alarm: String },
    #[error("alarm {alarm:?} is not out of service")]
    NotOutOfService { alarm: String },
    #[error("alarm {alarm:?} is not latching; it returns to normal on its own")]
    NotLatching { alarm: String },
    #[error("alarm {alarm:?} cannot be reset: {why}")]
    CannotReset { alarm: String, why: &'static str },
}

/// Checks the user and comment every operation needs.
fn check_operator(operation: &'static str, user: &str, comment: &str) -> Result<(), AlarmError> {
    if user.trim().is_empty() {
        return Err(AlarmError::MissingUser { operation });
    }
    if comment.trim().is_empty() {
        return Err(AlarmError::MissingComment { operation });
    }
    Ok(())
}
