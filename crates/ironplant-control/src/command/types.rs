//! The vocabulary of the command path: who asks, what they ask for, and the answer (accepted,
//! awaiting a second person, or refused with a precise, structured reason).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use ironplant_core::{Quality, Sample, TagMeta, TagPath, Timestamp, Value, ValueType};

/// A command's number, unique for the life of a [`super::CommandPath`]; pending two-person
/// commands are confirmed by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CommandId(pub u64);

impl fmt::Display for CommandId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A person's role, in the same words as `ironplant-security`'s roles (map one onto the other
/// with `as_str`/`parse`). People's roles are ordered: viewer < operator < engineer < admin;
/// `device` is apart and never confirms anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Viewer,
    Operator,
    Engineer,
    Admin,
    Device,
}

impl Role {
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Engineer => "engineer",
            Role::Admin => "admin",
            Role::Device => "device",
        }
    }

    /// Rank among people's roles; `None` for a device.
    fn rank(self) -> Option<u8> {
        match self {
            Role::Viewer => Some(0),
            Role::Operator => Some(1),
            Role::Engineer => Some(2),
            Role::Admin => Some(3),
            Role::Device => None,
        }
    }

    /// Whether this role is `needed` or above (a device never is).
    pub fn at_least(self, needed: Role) -> bool {
        match (self.rank(), needed.rank()) {
            (Some(a), Some(b)) => a >= b,
            _ => false,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Role, String> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "operator" => Ok(Role::Operator),
            "engineer" => Ok(Role::Engineer),
            "admin" => Ok(Role::Admin),
            "device" => Ok(Role::Device),
            other => Err(format!(
                "unknown role {other:?}; expected viewer, operator, engineer, admin or device"
            )),
        }
    }
}

/// Who causes a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// A person (or a token acting for one) with a role.
    User { name: String, role: Role },
    /// A rule of the local logic, as its own identity (`rule:<name>`).
    Rule { name: String },
    /// The platform itself: a restore after an unauthorised change.
    Platform,
}

impl Actor {
    /// The identity as it appears in audit records and events: the user name, `rule:<name>`
    /// or `platform`.
    pub fn identity(&self) -> String {
        match self {
            Actor::User { name, .. } => name.clone(),
            Actor::Rule { name } => format!("rule:{name}"),
            Actor::Platform => "platform".to_owned(),
        }
    }

    pub fn role(&self) -> Option<Role> {
        match self {
            Actor::User { role, .. } => Some(*role),
            _ => None,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Actor::User { .. } => "user",
            Actor::Rule { .. } => "rule",
            Actor::Platform => "platform",
        }
    }
}

/// The actor and the session the request came in (a login session, an MQTT client session, a
/// WebSocket); select-before-operate ties a selection to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requester {
    pub actor: Actor,
    pub session: Option<String>,
}

impl Requester {
    pub fn user(name: &str, role: Role, session: &str) -> Requester {
        Requester {
            actor: Actor::User {
                name: name.to_owned(),
                role,
            },
            session: Some(session.to_owned()),
        }
    }

    pub fn rule(name: &str) -> Requester {
        Requester {
            actor: Actor::Rule {
                name: name.to_owned(),
            },
            session: None,
        }
    }

    pub fn platform() -> Requester {
        Requester {
            actor: Actor::Platform,
            session: None,
        }
    }
}

/// The verdict of the one policy (`ironplant-security`) on "may this requester write this
/// tag": the caller asks it and passes the answer in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authorisation {
    Allowed,
    Denied(Denial),
}

/// Why the policy said no.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    /// The role lacks the permission (e.g. a viewer has no `write_setpoints`).
    Role { role: String, permission: String },
    /// The tag lies outside the identity's tag scope (prefix rule).
    Prefix { tag_scope: String },
    /// Anything else the policy says, in its words.
    Other(String),
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Denial::Role { role, permission } => {
                write!(f, "the role {role} lacks the permission {permission}")
            }
            Denial::Prefix { tag_scope } => {
                write!(
                    f,
                    "the tag is outside the identity's tag scope ({tag_scope})"
                )
            }
            Denial::Other(why) => f.write_str(why),
        }
    }
}

/// Which path carried the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Origin {
    Rest,
    Mqtt,
    Rule,
    Hmi,
    /// A client of the platform's OPC UA server.
    Opcua,
    /// The platform's own commands (restores).
    Platform,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Rest => "rest",
            Origin::Mqtt => "mqtt",
            Origin::Rule => "rule",
            Origin::Hmi => "hmi",
            Origin::Opcua => "opcua",
            Origin::Platform => "platform",
        }
    }
}

impl FromStr for Origin {
    type Err = String;
    fn from_str(s: &str) -> Result<Origin, String> {
        match s {
            "rest" => Ok(Origin::Rest),
            "mqtt" => Ok(Origin::Mqtt),
            "rule" => Ok(Origin::Rule),
            "hmi" => Ok(Origin::Hmi),
            "opcua" => Ok(Origin::Opcua),
            "platform" => Ok(Origin::Platform),
            other => Err(format!(
                "unknown origin {other:?}; expected rest, mqtt, rule, hmi, opcua or platform"
            )),
        }
    }
}

/// What the platform knows of the target tag when the command is made (from the namespace and
/// the current values); `None` in the request when the tag does not exist.
#[derive(Debug, Clone, PartialEq)]
pub struct TagInfo {
    pub writable: bool,
    pub value_type: ValueType,
    /// The current value and its quality, if any sample was seen.
    pub current: Option<(Value, Quality)>,
}

impl TagInfo {
    /// From the namespace's metadata and the tag's current sample, if any.
    pub fn new(meta: &TagMeta, current: Option<&Sample>) -> TagInfo {
        TagInfo {
            writable: meta.writable,
            value_type: meta.value_type,
            current: current.map(|s| (s.value.clone(), s.quality)),
        }
    }
}

/// One command as it reaches the command path, from any origin.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandRequest {
    pub tag: TagPath,
    /// The tag as the namespace knows it; `None`: no such tag.
    pub info: Option<TagInfo>,
    pub value: Value,
    pub requester: Requester,
    pub authorisation: Authorisation,
    /// Why, in the requester's words (kept in the audit record).
    pub reason: String,
    pub origin: Origin,
}

/// The result of an interlock's evaluation, as the caller (which owns the expressions) found it.
#[derive(Debug, Clone, PartialEq)]
pub struct InterlockStatus {
    pub name: String,
    pub state: InterlockState,
    /// The current values it depends on, for people, e.g. `filler/state = "running"`.
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InterlockState {
    /// The condition holds: writes may proceed.
    Holds,
    /// The condition is false.
    Violated,
    /// An input is not Good (or the interlock could not be evaluated): unknown, so refused.
    BadInput,
}

/// Evaluates interlocks by name, now; the lead implements it over the expression engine.
pub trait Interlocks {
    /// The status of the interlock `name`; `None` if it is not known (refused: fail safe).
    fn status(&self, name: &str) -> Option<InterlockStatus>;
}

impl Interlocks for [InterlockStatus] {
    fn status(&self, name: &str) -> Option<InterlockStatus> {
        self.iter().find(|s| s.name == name).cloned()
    }
}

impl Interlocks for Vec<InterlockStatus> {
    fn status(&self, name: &str) -> Option<InterlockStatus> {
        self.as_slice().status(name)
    }
}

/// A command that passed every check: write `value` to `tag` now, then report the device's
/// answer ([`super::CommandPath::device_acknowledged`] or
/// [`super::CommandPath::device_failed`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Accepted {
    pub id: CommandId,
    pub tag: TagPath,
    pub value: Value,
    /// The identity to write as (the requester; the confirmer is in the audit record).
    pub requested_by: String,
    pub confirmed_by: Option<String>,
}

/// A two-person command waiting for its second person.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    pub id: CommandId,
    pub tag: TagPath,
    pub value: Value,
    pub requested_by: String,
    /// The least role the confirmer needs.
    pub needs_role: Role,
    pub expires_at: Timestamp,
}

/// The answer to a command.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Accepted(Accepted),
    /// Two-person rule: waiting for a second user to confirm by id.
    AwaitingConfirmation(Pending),
    Refused(Refusal),
}

impl Decision {
    pub fn refusal(&self) -> Option<&Refusal> {
        match self {
            Decision::Refused(r) => Some(r),
            _ => None,
        }
    }

    pub fn accepted(&self) -> Option<&Accepted> {
        match self {
            Decision::Accepted(a) => Some(a),
            _ => None,
        }
    }
}

/// A refused command: which tag, and precisely why ([`RefusalReason`], rendered in words by
/// `Display`, with a stable machine code from [`Refusal::code`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub tag: TagPath,
    pub reason: RefusalReason,
}

impl Refusal {
    pub fn code(&self) -> &'static str {
        self.reason.code()
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "write to {} refused: {}", self.tag, self.reason)
    }
}

impl std::error::Error for Refusal {}

/// Why a command was refused.
#[derive(Debug, Clone, PartialEq)]
pub enum RefusalReason {
    /// The one policy said no.
    NotAuthorised {
        identity: String,
        denial: Denial,
    },
    UnknownTag,
    NotWritable,
    /// The value is not of the tag's type.
    BadValueType {
        expected: ValueType,
        got: &'static str,
    },
    /// Outside the tag's operating envelope.
    Envelope(EnvelopeViolation),
    /// An interlock of the tag does not hold (or its inputs are not Good: `state` says which).
    Interlock {
        name: String,
        message: String,
        state: InterlockState,
        detail: String,
    },
    /// Select-before-operate: no selection by this session.
    NotSelected,
    /// Select-before-operate: the selection ran out before the operate.
    SelectExpired {
        expired_at: Timestamp,
    },
    /// Select-before-operate: another session holds the selection.
    SelectedByAnotherSession {
        holder: String,
        expires_at: Timestamp,
    },
    /// Select-before-operate: the operate's value differs from the value selected with.
    SelectValueMismatch {
        selected: Value,
    },
    /// Select-before-operate needs a session to tie the selection to.
    NoSession,
    /// Two-person rule: no pending command with that id (never made, done or expired).
    UnknownPending {
        id: CommandId,
    },
    /// Two-person rule: the pending command ran out before a second person confirmed it.
    ConfirmationExpired {
        requested_by: String,
        expired_at: Timestamp,
    },
    /// Two-person rule: the confirmer is the requester.
    SameUser {
        user: String,
    },
    /// Two-person rule: the confirmer's role is below the configured one.
    ConfirmerRoleTooLow {
        role: Option<Role>,
        needs: Role,
    },
    /// Two-person rule: a rule cannot be one of the two persons.
    TwoPersonNeedsUsers,
    /// Two-person rule: a second person rejected it.
    RejectedByConfirmer {
        by: String,
    },
    /// Two-person rule: another command of the tag is waiting for its second person (one at a
    /// time per tag, so pending commands are bounded).
    AlreadyPending {
        id: CommandId,
        requested_by: String,
        expires_at: Timestamp,
    },
}

impl RefusalReason {
    /// A stable machine-readable code (API `code`, MQTT response `code`, audit).
    pub fn code(&self) -> &'static str {
        use RefusalReason::*;
        match self {
            NotAuthorised { .. } => "not_authorised",
            UnknownTag => "unknown_tag",
            NotWritable => "not_writable",
            BadValueType { .. } => "bad_value_type",
            Envelope(v) => v.code(),
            Interlock {
                state: InterlockState::BadInput,
                ..
            } => "interlock_bad_input",
            Interlock { .. } => "interlock",
            NotSelected => "not_selected",
            SelectExpired { .. } => "select_expired",
            SelectedByAnotherSession { .. } => "selected_by_another_session",
            SelectValueMismatch { .. } => "select_value_mismatch",
            NoSession => "no_session",
            UnknownPending { .. } => "unknown_pending",
            ConfirmationExpired { .. } => "confirmation_expired",
            SameUser { .. } => "confirmer_same_user",
            ConfirmerRoleTooLow { .. } => "confirmer_role_too_low",
            TwoPersonNeedsUsers => "two_person_needs_users",
            RejectedByConfirmer { .. } => "rejected",
            AlreadyPending { .. } => "confirmation_pending",
        }
    }
}

impl fmt::Display for RefusalReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use RefusalReason::*;
        match self {
            NotAuthorised { identity, denial } => {
                write!(f, "{identity} is not authorised to write it: {denial}")
            }
            UnknownTag => f.write_str("no such tag"),
            NotWritable => f.write_str("the tag is not writable"),
            BadValueType { expected, got } => write!(
                f,
                "the value is {got}, the tag takes {}",
                expected.as_str()
            ),
            Envelope(v) => write!(f, "outside the operating envelope: {v}"),
            Interlock {
                name,
                message,
                state: InterlockState::BadInput,
                detail,
            } => write!(
                f,
                "interlock {name} ({message}) cannot be evaluated: an input is not Good ({detail}); refused to fail safe"
            ),
            Interlock {
                name,
                message,
                detail,
                ..
            } => write!(f, "interlock {name} does not hold: {message} ({detail})"),
            NotSelected => f.write_str(
                "select-before-operate: the tag was not selected by this session; select it first",
            ),
            SelectExpired { expired_at } => write!(
                f,
                "select-before-operate: the selection expired at {expired_at}; select again"
            ),
            SelectedByAnotherSession { holder, expires_at } => write!(
                f,
                "select-before-operate: session {holder} holds the selection until {expires_at}"
            ),
            SelectValueMismatch { selected } => write!(
                f,
                "select-before-operate: the tag was selected for the value {selected}, not this one"
            ),
            NoSession => {
                f.write_str("select-before-operate needs a session; the request carries none")
            }
            UnknownPending { id } => write!(
                f,
                "two-person rule: no command {id} is waiting for confirmation"
            ),
            ConfirmationExpired {
                requested_by,
                expired_at,
            } => write!(
                f,
                "two-person rule: the command by {requested_by} was not confirmed in time (expired at {expired_at})"
            ),
            SameUser { user } => write!(
                f,
                "two-person rule: {user} requested the command and cannot confirm it; a second person must"
            ),
            ConfirmerRoleTooLow { role, needs } => match role {
                Some(r) => write!(
                    f,
                    "two-person rule: the confirmer's role {r} is below the required {needs}"
                ),
                None => write!(
                    f,
                    "two-person rule: the confirmer is not a person with the role {needs} or above"
                ),
            },
            TwoPersonNeedsUsers => f.write_str(
                "two-person rule: the tag needs two people; a rule cannot request or confirm it",
            ),
            RejectedByConfirmer { by } => write!(f, "two-person rule: rejected by {by}"),
            AlreadyPending {
                id,
                requested_by,
                expires_at,
            } => write!(
                f,
                "two-person rule: command {id} by {requested_by} is waiting for confirmation until {expires_at}; confirm or reject it first"
            ),
        }
    }
}

/// Which limit of the operating envelope a command breaks, with the numbers.
#[derive(Debug, Clone, PartialEq)]
pub enum EnvelopeViolation {
    BelowMin {
        value: f64,
        min: f64,
    },
    AboveMax {
        value: f64,
        max: f64,
    },
    /// The change from the current value is larger than `max_step`.
    StepTooLarge {
        from: f64,
        to: f64,
        max_step: f64,
    },
    /// A step limit applies but the current value is unknown or not Good.
    StepUnchecked {
        why: String,
    },
    /// Since the last accepted command the value would move faster than `max_rate`.
    RateTooHigh {
        from: f64,
        to: f64,
        elapsed: Duration,
        max_rate: f64,
    },
    /// The last accepted command was less than `min_interval` ago.
    TooSoon {
        elapsed: Duration,
        min_interval: Duration,
    },
    /// An envelope applies and the value is not a number.
    NotNumeric,
}

impl EnvelopeViolation {
    pub fn code(&self) -> &'static str {
        use EnvelopeViolation::*;
        match self {
            BelowMin { .. } => "envelope_min",
            AboveMax { .. } => "envelope_max",
            StepTooLarge { .. } | StepUnchecked { .. } => "envelope_step",
            RateTooHigh { .. } => "envelope_rate",
            TooSoon { .. } => "envelope_interval",
            NotNumeric => "envelope_not_numeric",
        }
    }
}

impl fmt::Display for EnvelopeViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use EnvelopeViolation::*;
        match self {
            BelowMin { value, min } => write!(f, "{value} is below the minimum {min}"),
            AboveMax { value, max } => write!(f, "{value} is above the maximum {max}"),
            StepTooLarge { from, to, max_step } => write!(
                f,
                "a step from {from} to {to} is {} (maximum step {max_step})",
                (to - from).abs()
            ),
            StepUnchecked { why } => write!(
                f,
                "the maximum step cannot be checked: {why}; refused to fail safe"
            ),
            RateTooHigh {
                from,
                to,
                elapsed,
                max_rate,
            } => {
                let secs = elapsed.as_secs_f64();
                let rate = if secs > 0.0 {
                    format!("{:.3}", (to - from).abs() / secs)
                } else {
                    "unbounded".to_owned()
                };
                write!(
                    f,
                    "from {from} to {to} in {secs:.3} s since the last write is {rate} units/s (maximum rate {max_rate} units/s)"
                )
            }
            TooSoon {
                elapsed,
                min_interval,
            } => write!(
                f,
                "the last write was {:.3} s ago (minimum time between writes {:.3} s)",
                elapsed.as_secs_f64(),
                min_interval.as_secs_f64()
            ),
            NotNumeric => f.write_str("the tag has numeric limits and the value is not a number"),
        }
    }
}

/// Whether two values are the same for verification and change detection: numbers within
/// `tolerance` (absolute; at least a relative 1e-6 when a float is involved, which absorbs the
/// rounding of a 32-bit float register), everything else equal.
pub fn values_match(a: &Value, b: &Value, tolerance: f64) -> bool {
    let float = matches!(a, Value::Float(_)) || matches!(b, Value::Float(_));
    match (a, b) {
        (
            Value::Int(_) | Value::U64(_) | Value::Float(_),
            Value::Int(_) | Value::U64(_) | Value::Float(_),
        ) if float || tolerance > 0.0 => match (a.as_f64(), b.as_f64()) {
            (Some(x), Some(y)) => {
                let rel = if float {
                    1e-6 * x.abs().max(y.abs())
                } else {
                    0.0
                };
                (x - y).abs() <= tolerance.max(rel)
            }
            _ => false,
        },
        _ => a == b,
    }
}

/// Whether `v` is acceptable for a tag of type `t`: its type, or an integer for a float tag.
pub(crate) fn admits(t: ValueType, v: &Value) -> bool {
    match (t, v) {
        (ValueType::Float, Value::Int(_) | Value::U64(_)) => true,
        _ => v.value_type() == Some(t),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_match_within_tolerance_and_f32_rounding() {
        // 21.7 written to an f32 register reads back as 21.700000762939453.
        assert!(values_match(
            &Value::Float(21.7),
            &Value::Float(f64::from(21.7f32)),
            0.0
        ));
        assert!(!values_match(
            &Value::Float(21.7),
            &Value::Float(21.71),
            0.0
        ));
        assert!(values_match(
            &Value::Float(21.7),
            &Value::Float(21.71),
            0.02
        ));
        assert!(values_match(&Value::Int(5), &Value::Float(5.0), 0.0));
        assert!(!values_match(&Value::Int(5), &Value::Int(6), 0.0));
        assert!(values_match(&Value::Int(5), &Value::Int(6), 1.0));
        assert!(values_match(&Value::Bool(true), &Value::Bool(true), 0.5));
        assert!(!values_match(&Value::Bool(true), &Value::Int(1), 0.0));
        assert!(!values_match(
            &Value::String("a".into()),
            &Value::String("b".into()),
            9.0
        ));
    }

    #[test]
    fn roles_are_ordered_and_a_device_is_no_person() {
        assert!(Role::Admin.at_least(Role::Engineer));
        assert!(Role::Engineer.at_least(Role::Engineer));
        assert!(!Role::Operator.at_least(Role::Engineer));
        assert!(!Role::Device.at_least(Role::Viewer));
        assert_eq!("engineer".parse::<Role>(), Ok(Role::Engineer));
        assert!("boss".parse::<Role>().is_err());
    }

    #[test]
    fn an_integer_is_admitted_for_a_float_tag_only() {
        assert!(admits(ValueType::Float, &Value::Int(3)));
        assert!(!admits(ValueType::Int, &Value::Float(3.0)));
        assert!(!admits(ValueType::Bool, &Value::Int(1)));
    }
}
