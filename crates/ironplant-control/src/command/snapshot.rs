//! What the command path keeps across a restart: for each tag the value the platform expects
//! (so a value changed while the platform was down is still an unauthorised change), the last
//! accepted write (so `max_rate` and `min_interval` hold across a restart), the value already
//! reported as an unauthorised change (no second alarm for it), and the next command id (ids
//! stay unique in the audit log). Selections, pending two-person commands and commands in
//! flight are not kept: they end with the process (a pending command must be asked again).

use ironplant_core::wire::{parse_ts, ValueIn, ValueJson};
use ironplant_core::{Timestamp, Value};
use serde::{Deserialize, Serialize};

/// The serialisable state (JSON through serde; `version` 1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandSnapshot {
    pub version: u32,
    /// The next command id to hand out.
    pub next_command: u64,
    pub tags: Vec<TagSnapshot>,
}

/// One tag's kept state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TagSnapshot {
    pub tag: String,
    /// The expected value, if any.
    #[serde(default, with = "opt_value", skip_serializing_if = "Option::is_none")]
    pub expected: Option<Value>,
    /// `commanded`, `configured` or `learned`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basis: Option<String>,
    /// The command that set the expected value (`commanded`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<u64>,
    /// When the expected value was commanded or learned.
    #[serde(default, with = "opt_ts", skip_serializing_if = "Option::is_none")]
    pub since: Option<Timestamp>,
    #[serde(default, with = "opt_ts", skip_serializing_if = "Option::is_none")]
    pub last_write_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_write_value: Option<f64>,
    /// The value last reported as an unauthorised change.
    #[serde(default, with = "opt_value", skip_serializing_if = "Option::is_none")]
    pub flagged: Option<Value>,
}

/// Why a snapshot cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SnapshotError {
    #[error("command state version {0} is not known (this build reads version 1)")]
    Version(u32),
    #[error("command state: {0:?} is not a tag path")]
    Tag(String),
    #[error("command state of {tag}: unknown basis {basis:?} (commanded, configured or learned)")]
    Basis { tag: String, basis: String },
}

mod opt_value {
    use super::*;

    pub fn serialize<S: serde::Serializer>(v: &Option<Value>, s: S) -> Result<S::Ok, S::Error> {
        ValueJson(v.as_ref()).serialize(s)
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
        Ok(Option::<ValueIn>::deserialize(d)?.map(|v| v.0))
    }
}

mod opt_ts {
    use super::*;

    pub fn serialize<S: serde::Serializer>(t: &Option<Timestamp>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&t.to_rfc3339()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Timestamp>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(s) => parse_ts(&s).map(Some).map_err(serde::de::Error::custom),
        }
    }
}
