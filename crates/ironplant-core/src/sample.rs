//! Typed values, OPC UA style quality, timestamps and the one internal sample representation.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::namespace::TagId;

/// A UTC instant with microsecond resolution: microseconds since the Unix epoch.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// The current wall-clock time. Call it at the edges (adapters), never deep inside logic.
    pub fn now() -> Timestamp {
        Timestamp::from_system_time(SystemTime::now())
    }

    pub fn from_system_time(t: SystemTime) -> Timestamp {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Timestamp(i64::try_from(d.as_micros()).unwrap_or(i64::MAX)),
            Err(e) => Timestamp(-i64::try_from(e.duration().as_micros()).unwrap_or(i64::MAX)),
        }
    }

    pub fn as_micros(self) -> i64 {
        self.0
    }

    /// RFC 3339 in UTC with microseconds, e.g. `2026-11-25T11:33:27.123456Z`.
    pub fn to_rfc3339(self) -> String {
        let t = if self.0 >= 0 {
            UNIX_EPOCH + Duration::from_micros(self.0.unsigned_abs())
        } else {
            UNIX_EPOCH - Duration::from_micros(self.0.unsigned_abs())
        };
        humantime::format_rfc3339_micros(t).to_string()
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

/// The declared type of a tag's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueType {
    Bool,
    Int,
    Float,
    String,
}

impl ValueType {
    pub fn as_str(self) -> &'static str {
        match self {
            ValueType::Bool => "bool",
            ValueType::Int => "int",
            ValueType::Float => "float",
            ValueType::String => "string",
        }
    }
}

/// A typed value. `Null` is only carried by samples whose quality is not Good and for which no
/// earlier value is known (e.g. a device that never answered).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    /// An unsigned integer above `i64::MAX` (a u64 register or Sparkplug UInt64), exact. Smaller
    /// unsigned values are `Int`: build it with [`Value::from_u64`], which keeps one form per
    /// number. Its value type is `int`; it renders as a JSON integer.
    U64(u64),
    Float(f64),
    String(Arc<str>),
}

impl Value {
    /// An unsigned integer, exact: `Int` up to `i64::MAX`, `U64` above.
    pub fn from_u64(u: u64) -> Value {
        match i64::try_from(u) {
            Ok(i) => Value::Int(i),
            Err(_) => Value::U64(u),
        }
    }

    pub fn value_type(&self) -> Option<ValueType> {
        match self {
            Value::Null => None,
            Value::Bool(_) => Some(ValueType::Bool),
            Value::Int(_) | Value::U64(_) => Some(ValueType::Int),
            Value::Float(_) => Some(ValueType::Float),
            Value::String(_) => Some(ValueType::String),
        }
    }

    /// The value as a number, if it is one (booleans count as 0/1).
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::Bool(b) => Some(if b { 1.0 } else { 0.0 }),
            Value::Int(i) => Some(i as f64),
            Value::U64(u) => Some(u as f64),
            Value::Float(f) => Some(f),
            Value::Null | Value::String(_) => None,
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("null"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::U64(u) => write!(f, "{u}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::String(s) => write!(f, "{s:?}"),
        }
    }
}

/// The top level of an OPC UA status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum QualityLevel {
    Good,
    Uncertain,
    Bad,
}

/// Why a sample is not Good (OPC UA sub-status names where one fits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QualityReason {
    None,
    /// The device could not be reached or stopped answering.
    CommFailure,
    /// The device answered with an error (e.g. a Modbus exception other than a bad address).
    DeviceFailure,
    /// The value lies outside the tag's engineering range.
    OutOfRange,
    /// The tag's configuration does not match the device (e.g. an illegal register address).
    ConfigError,
    /// The value has not been refreshed when it should have been.
    Stale,
    /// No connection has been established yet.
    NotConnected,
}

impl QualityReason {
    pub fn as_str(self) -> &'static str {
        match self {
            QualityReason::None => "None",
            QualityReason::CommFailure => "CommFailure",
            QualityReason::DeviceFailure => "DeviceFailure",
            QualityReason::OutOfRange => "OutOfRange",
            QualityReason::ConfigError => "ConfigError",
            QualityReason::Stale => "Stale",
            QualityReason::NotConnected => "NotConnected",
        }
    }
}

/// OPC UA style quality: a level and, when not Good, the reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quality {
    pub level: QualityLevel,
    pub reason: QualityReason,
}

impl Quality {
    pub const GOOD: Quality = Quality {
        level: QualityLevel::Good,
        reason: QualityReason::None,
    };

    pub fn bad(reason: QualityReason) -> Quality {
        Quality {
            level: QualityLevel::Bad,
            reason,
        }
    }

    pub fn uncertain(reason: QualityReason) -> Quality {
        Quality {
            level: QualityLevel::Uncertain,
            reason,
        }
    }

    pub fn is_good(self) -> bool {
        self.level == QualityLevel::Good
    }
}

impl fmt::Display for Quality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.level {
            QualityLevel::Good => f.write_str("Good"),
            QualityLevel::Uncertain => write!(f, "Uncertain({})", self.reason.as_str()),
            QualityLevel::Bad => write!(f, "Bad({})", self.reason.as_str()),
        }
    }
}

/// One observation of one tag. The only sample type inside Ironplant: adapters produce it, the
/// bus carries it, consumers read it; it is serialised only at the edges.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub tag: TagId,
    pub value: Value,
    pub quality: Quality,
    /// When the value was measured (the device's time if it reports one, else the read time).
    pub source_ts: Timestamp,
    /// When Ironplant received it.
    pub server_ts: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_format_with_microseconds() {
        assert_eq!(
            Timestamp(1_000_000_000_123_456).to_rfc3339(),
            "2001-09-09T01:46:40.123456Z"
        );
        assert_eq!(Timestamp(0).to_rfc3339(), "1970-01-01T00:00:00.000000Z");
    }

    #[test]
    fn quality_displays_reason() {
        assert_eq!(
            Quality::bad(QualityReason::CommFailure).to_string(),
            "Bad(CommFailure)"
        );
        assert_eq!(Quality::GOOD.to_string(), "Good");
    }
}
