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

/// Adds every section of this crate to `registry`, in the order their checks need
/// (computed tags before the rules and alarms that read them): `[[computed]]`, `[[rule]]`,
/// `[[command]]`, `[[interlock]]`, `[alarms]`, `[[alarm]]`. For tools that parse a whole
/// platform config without the runtime (the simulator's tests, the benchmarks).
pub fn register(registry: ironplant_core::config::Registry) -> ironplant_core::config::Registry {
    let r = registry
        .with::<expr::ComputedSettings>()
        .with::<expr::RuleSettings>()
        .with::<command::CommandSettings>()
        .with::<command::InterlockSettings>();
    alarm::config::register(r)
}
