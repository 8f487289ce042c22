//! Shared fixture of the command tests: a bottling line with a filler speed setpoint (envelope,
//! restore on unauthorised change), a recipe (interlock, select-before-operate), a CIP valve
//! (two-person rule) and a tank level setpoint (float, verification tolerance), on a manual
//! clock.

#![allow(dead_code)]

use ironplant_control::command::{
    Authorisation, CommandPath, CommandRequest, CommandSettings, Denial, InterlockSettings,
    InterlockState, InterlockStatus, Origin, Requester, Role, TagInfo,
};
use ironplant_core::config::{parse_with, Config, ConfigErrors, Registry};
use ironplant_core::{Quality, QualityReason, TagPath, Timestamp, Value, ValueType};

pub const SPEED: &str = "acme/lyon/bottling/line1/filler/plc/speed_setpoint";
pub const RECIPE: &str = "acme/lyon/bottling/line1/filler/plc/recipe";
pub const CIP: &str = "acme/lyon/bottling/line1/cip/plc/supply_valve";
pub const LEVEL: &str = "acme/lyon/bottling/line1/tank/plc/level_setpoint";
pub const STATE: &str = "acme/lyon/bottling/line1/filler/plc/machine_state";
pub const PUMP: &str = "acme/lyon/bottling/line1/tank/plc/pump_enable";

pub const PLANT: &str = r#"
[[device]]
id = "filler-plc"
protocol = "modbus-tcp"
address = "127.0.0.1:5020"
unit_id = 1

[[device]]
id = "utilities"
protocol = "modbus-tcp"
address = "127.0.0.1:5020"
unit_id = 2

[[tag]]
path = "acme/lyon/bottling/line1/filler/plc/speed_setpoint"
device = "filler-plc"
unit = "bpm"
min = 0.0
max = 600.0
writable = true
modbus = { table = "holding", address = 0, type = "u16" }

[[tag]]
path = "acme/lyon/bottling/line1/filler/plc/recipe"
device = "filler-plc"
writable = true
modbus = { table = "holding", address = 1, type = "u16" }

[[tag]]
path = "acme/lyon/bottling/line1/filler/plc/machine_state"
device = "filler-plc"
modbus = { table = "input", address = 0, type = "u16" }

[[tag]]
path = "acme/lyon/bottling/line1/cip/plc/supply_valve"
device = "utilities"
writable = true
modbus = { table = "coil", address = 5 }

[[tag]]
path = "acme/lyon/bottling/line1/tank/plc/level_setpoint"
device = "utilities"
unit = "%"
writable = true
modbus = { table = "holding", address = 0, type = "u16", scale = 0.1 }

[[tag]]
path = "acme/lyon/bottling/line1/tank/plc/pump_enable"
device = "utilities"
writable = true
modbus = { table = "coil", address = 0 }
"#;

pub const COMMANDS: &str = r#"
[[interlock]]
name = "filler_stopped"
expr = "acme/lyon/bottling/line1/filler/plc/machine_state != 1"
message = "no recipe change while the filler runs"

[[command]]
tag = "acme/lyon/bottling/line1/filler/plc/speed_setpoint"
min = 0
max = 600
max_step = 100
max_rate = 20
min_interval = "2s"
verify = { timeout = "5s" }
on_unauthorised_change = "restore"

[[command]]
tag = "acme/lyon/bottling/line1/filler/plc/recipe"
interlocks = ["filler_stopped"]
select_before_operate = "10s"

[[command]]
tag = "acme/lyon/bottling/line1/cip/plc/supply_valve"
two_person = { role = "engineer", timeout = "60s" }

[[command]]
tag = "acme/lyon/bottling/line1/tank/plc/level_setpoint"
min = 0
max = 100
verify = { timeout = "3s", tolerance = 0.05 }
"#;

pub fn registry() -> Registry {
    Registry::new()
        .with::<CommandSettings>()
        .with::<InterlockSettings>()
}

pub fn parse(text: &str) -> Result<Config, ConfigErrors> {
    parse_with("bottling.toml", text, &registry())
}

/// The command path of the fixture (the plant and the commands above).
pub fn bottling() -> CommandPath {
    let config = match parse(&format!("{PLANT}{COMMANDS}")) {
        Ok(c) => c,
        Err(e) => panic!("the fixture must parse:\n{e}"),
    };
    CommandPath::new(
        &config.get::<CommandSettings>(),
        &config.get::<InterlockSettings>(),
    )
}

pub fn path(p: &str) -> TagPath {
    TagPath::parse(p).expect("test paths are valid")
}

/// Seconds since an arbitrary origin, as a timestamp (the manual clock).
pub fn t(secs: f64) -> Timestamp {
    Timestamp(1_796_637_600_000_000 + (secs * 1e6) as i64)
}

pub fn value_type(tag: &str) -> ValueType {
    match tag {
        CIP | PUMP => ValueType::Bool,
        LEVEL => ValueType::Float,
        _ => ValueType::Int,
    }
}

pub fn info(tag: &str, current: Option<Value>) -> Option<TagInfo> {
    Some(TagInfo {
        writable: true,
        value_type: value_type(tag),
        current: current.map(|v| (v, Quality::GOOD)),
    })
}

pub fn alice() -> Requester {
    Requester::user("alice", Role::Operator, "s-alice")
}

pub fn bob() -> Requester {
    Requester::user("bob", Role::Operator, "s-bob")
}

pub fn erin() -> Requester {
    Requester::user("erin", Role::Engineer, "s-erin")
}

pub fn viewer() -> Requester {
    Requester::user("victor", Role::Viewer, "s-victor")
}

/// A REST command by `who`, allowed by the policy, on a tag whose current value is `current`.
pub fn req(tag: &str, value: Value, who: Requester, current: Option<Value>) -> CommandRequest {
    CommandRequest {
        tag: path(tag),
        info: info(tag, current),
        value,
        requester: who,
        authorisation: Authorisation::Allowed,
        reason: "test".to_owned(),
        origin: Origin::Rest,
    }
}

pub fn denied_viewer() -> Authorisation {
    Authorisation::Denied(Denial::Role {
        role: "viewer".to_owned(),
        permission: "write_setpoints".to_owned(),
    })
}

pub fn filler_stopped(state: InterlockState, detail: &str) -> Vec<InterlockStatus> {
    vec![InterlockStatus {
        name: "filler_stopped".to_owned(),
        state,
        detail: detail.to_owned(),
    }]
}

pub fn holds() -> Vec<InterlockStatus> {
    filler_stopped(InterlockState::Holds, "machine_state = 0")
}

pub fn none() -> Vec<InterlockStatus> {
    Vec::new()
}

pub fn bad(reason: QualityReason) -> Quality {
    Quality::bad(reason)
}
