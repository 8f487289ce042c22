//! The safe command path: every write (REST, MQTT, rules, later the HMI) passes the same checks
//! before it reaches `Runtime::write`, is verified by read-back, and is audited; writes nobody
//! commanded are detected. Sans-IO: [`CommandPath`] takes the policy's verdict, the tag's
//! state, the interlocks' states and `now`, and answers with decisions, findings and audit
//! records. See docs/commands.md.
//!
//! Decision order (the first failing check is the refusal): authorisation (the one policy,
//! asked by the caller) → the tag exists → it is writable → the value's type → the operating
//! envelope (min, max, max_step, max_rate, min_interval) → interlocks (an input not Good
//! refuses) → select-before-operate → two-person rule (pending until a second person
//! confirms; the checks run again then).
//!
//! Invariants:
//! - A command is accepted only if every check passed on the state passed in with it; a
//!   two-person command is checked again when confirmed.
//! - Unknown is refused: an interlock that is not evaluated or has a Bad input, a step limit
//!   with no Good current value.
//! - Every decision and every later step (verified, failed, device error) makes one audit
//!   record, with the command's id.
//! - An unauthorised change is reported once per changed value; detection is re-armed when
//!   the value returns or a new command is accepted, and is off while a command is verified.

mod audit;
mod config;
mod engine;
pub mod mqtt;
mod snapshot;
mod types;

pub use audit::{AuditRecord, AuditResult};
pub use config::{
    CommandSettings, Envelope, InterlockDef, InterlockSettings, OnUnauthorisedChange, TagPolicy,
    TwoPerson, Verify, DEFAULT_TWO_PERSON_TIMEOUT, DEFAULT_VERIFY_TIMEOUT,
};
pub use engine::{Basis, CommandPath, Outcome, SelectToken, UnauthorisedChange};
pub use snapshot::{CommandSnapshot, SnapshotError, TagSnapshot};
pub use types::{
    values_match, Accepted, Actor, Authorisation, CommandId, CommandRequest, Decision, Denial,
    EnvelopeViolation, InterlockState, InterlockStatus, Interlocks, Origin, Pending, Refusal,
    RefusalReason, Requester, Role, TagInfo,
};
