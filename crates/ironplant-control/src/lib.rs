//! Local logic and safe commands (issue 12), as synchronous state machines that take `now`
//! and never do I/O: the runtime wires them in as processors on the tag bus and as the
//! command path in front of the one write path (`Runtime::write`).
//!
//! - [`expr`]: the expression language of computed tags, rules and interlocks (parsed and
//!   type-checked at config load, evaluated incrementally).
//! - [`alarm`]: ISA-18.2 / IEC 62682 alarms: definitions, the state machine, KPIs.
//! - [`command`]: the checks every command passes before it reaches a device (envelope,
//!   interlocks, select-before-operate, two-person rule) and read-back verification.

pub mod alarm;
pub mod command;
pub mod expr;
