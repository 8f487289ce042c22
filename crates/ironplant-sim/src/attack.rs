//! Attacks on the simulated plant, for showing and testing what the platform detects.
//!
//! - Data-level attacks ([`scenario`]): false-data injection as a slow [drift](Scenario::Drift)
//!   or a [step](Scenario::Step), [replay](Scenario::Replay) of a recorded period, sensor
//!   [freeze](Scenario::Freeze), and a [man in the middle](Scenario::Mitm) that scales a value.
//!   Each is a pure transform ([`Injector`]) over the plant's [`Readings`](crate::Readings) or
//!   single values, given the elapsed time: the live simulator applies them between its physics
//!   and its register bank through an [`AttackControl`] switched at run time
//!   ([`crate::run_attacked`]); the detection report applies them to a plant stepped in
//!   simulated time.
//! - On the wire: [`proxy::mitm_proxy`], a real Modbus TCP proxy between PLC and platform that
//!   rewrites a register's value in read answers ([`proxy::attack_proxy`] applies any
//!   scenario that way).
//! - [`forge::forge_sparkplug`]: a Sparkplug B node with another node's stolen credentials.
//! - [`rogue_write`]: a second Modbus master writing a command point, below.
//!
//! [`rogue_write`] is a *second* Modbus master: it connects to the simulator's Modbus server on
//! its own connection (as an engineering laptop or a compromised HMI would), writes one
//! command point of the register map, and disconnects. The platform never commanded that
//! value, so its unauthorised-change detection must notice the change at the next poll.

pub mod control;
pub mod forge;
pub mod proxy;
pub mod scenario;

pub use control::{ActiveAttack, AttackControl, StartError};
pub use forge::{forge_sparkplug, forge_sparkplug_plain, ForgeReport, ForgeSettings, Forger};
pub use proxy::{attack_proxy, mitm_proxy, MitmRule};
pub use scenario::{Injector, Phase, Scenario, ScenarioError};

use std::net::SocketAddr;
use std::time::Duration;

use ironplant_core::config::ModbusTable;
use ironplant_core::Value;
use tokio_modbus::client::{Reader, Writer};
use tokio_modbus::prelude::Slave;

use crate::map::{Kind, REGISTER_MAP};

/// How long each network step of an attack may take.
const STEP: Duration = Duration::from_secs(5);

/// Why an attack did not happen.
#[derive(Debug, thiserror::Error)]
pub enum AttackError {
    #[error(
        "no command point named {name:?} in the simulator's register map; writable points: {known}"
    )]
    UnknownPoint { name: String, known: String },
    #[error("the value {value} does not fit point {name:?}: {why}")]
    BadValue {
        name: String,
        value: String,
        why: String,
    },
    #[error("cannot reach the simulator's Modbus server at {addr}: {why}; is `ironplant simulate` running there? (`ironplant demo` prints its simulator's address: pass it with --modbus)")]
    Connect { addr: SocketAddr, why: String },
    #[error("the Modbus write to {addr} failed: {why}")]
    Write { addr: SocketAddr, why: String },
}

/// What a rogue write did.
#[derive(Debug, Clone, PartialEq)]
pub struct RogueWrite {
    /// The point's name in the register map.
    pub point: &'static str,
    /// The value written, in engineering units.
    pub value: Value,
    /// The value the simulator reported back (it clamps some commands).
    pub read_back: Value,
}

/// The command points (coils and holding registers) an attack can write.
pub fn command_points() -> impl Iterator<Item = &'static str> {
    REGISTER_MAP
        .iter()
        .filter(|d| d.kind == Kind::Command)
        .map(|d| d.name)
}

/// Writes `value` (engineering units) to the command point `name` of the simulator at `addr`
/// from a separate Modbus connection, then reads it back.
pub async fn rogue_write(
    addr: SocketAddr,
    name: &str,
    value: Value,
) -> Result<RogueWrite, AttackError> {
    let def = REGISTER_MAP
        .iter()
        .find(|d| d.name == name && d.kind == Kind::Command)
        .ok_or_else(|| AttackError::UnknownPoint {
            name: name.to_owned(),
            known: command_points().collect::<Vec<_>>().join(", "),
        })?;
    let point = def.point();
    let bad = |why: String| AttackError::BadValue {
        name: name.to_owned(),
        value: value.to_string(),
        why,
    };
    let io = |why: String| AttackError::Write { addr, why };
    let mut ctx = tokio::time::timeout(
        STEP,
        tokio_modbus::client::tcp::connect_slave(addr, Slave(def.unit_id)),
    )
    .await
    .map_err(|_| AttackError::Connect {
        addr,
        why: format!("no connection within {STEP:?}"),
    })?
    .map_err(|e| AttackError::Connect {
        addr,
        why: e.to_string(),
    })?;
    let read_back = match def.table {
        ModbusTable::Coil => {
            let on = match &value {
                Value::Bool(b) => *b,
                v => match v.as_f64() {
                    Some(x) if x == 0.0 || x == 1.0 => x == 1.0,
                    _ => return Err(bad("a coil takes true/false or 0/1".into())),
                },
            };
            step(ctx.write_single_coil(def.address, on))
                .await
                .map_err(io)?;
            let bits = step(ctx.read_coils(def.address, 1)).await.map_err(io)?;
            Value::Bool(bits.first().copied().unwrap_or(false))
        }
        ModbusTable::Holding => {
            let words = ironplant_modbus::codec::encode_registers(&point, &value)
                .map_err(|e| bad(e.to_string()))?;
            step(ctx.write_multiple_registers(def.address, &words))
                .await
                .map_err(io)?;
            let regs = step(ctx.read_holding_registers(def.address, point.len()))
                .await
                .map_err(io)?;
            ironplant_modbus::codec::decode_registers(&point, &regs)
        }
        other => return Err(bad(format!("{other:?} is read-only"))),
    };
    Ok(RogueWrite {
        point: def.name,
        value,
        read_back,
    })
}

/// One request, bounded in time, with the protocol's two error layers flattened into words.
async fn step<T>(
    request: impl std::future::Future<
        Output = Result<Result<T, tokio_modbus::ExceptionCode>, tokio_modbus::Error>,
    >,
) -> Result<T, String> {
    match tokio::time::timeout(STEP, request).await {
        Err(_) => Err(format!("no answer within {STEP:?}")),
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok(Err(code))) => Err(format!("the server answered with exception {code}")),
        Ok(Ok(Ok(t))) => Ok(t),
    }
}
