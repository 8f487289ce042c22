//! OPC UA values to Ironplant's: `Variant` → [`Value`], `StatusCode` → [`Quality`] with its
//! reason, `DateTime` → [`Timestamp`]. Pure functions (sans-IO), used by the connector on every
//! notification.

use ironplant_core::{Array, Quality, QualityReason, ScalarType, Timestamp, Value};
use opcua::types::{DateTime, StatusCode, SubStatusCode, Variant, VariantScalarTypeId};

/// A value Ironplant has no form for (e.g. a structure, a node id, a matrix).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "an OPC UA {0} value has no Ironplant form (bool, integer, float, string or an array of them)"
)]
pub struct Unsupported(pub String);

/// The value of a variant. Integers stay exact (a UInt64 above i64::MAX is [`Value::U64`]),
/// Float widens to f64, DateTime becomes its RFC 3339 text, arrays of one scalar type are
/// [`Value::Array`]; Empty is [`Value::Null`].
pub fn value(v: &Variant) -> Result<Value, Unsupported> {
    Ok(match v {
        Variant::Empty => Value::Null,
        Variant::Boolean(b) => Value::Bool(*b),
        Variant::SByte(x) => Value::Int(i64::from(*x)),
        Variant::Byte(x) => Value::Int(i64::from(*x)),
        Variant::Int16(x) => Value::Int(i64::from(*x)),
        Variant::UInt16(x) => Value::Int(i64::from(*x)),
        Variant::Int32(x) => Value::Int(i64::from(*x)),
        Variant::UInt32(x) => Value::Int(i64::from(*x)),
        Variant::Int64(x) => Value::Int(*x),
        Variant::UInt64(x) => Value::from_u64(*x),
        Variant::Float(x) => Value::Float(f64::from(*x)),
        Variant::Double(x) => Value::Float(*x),
        Variant::String(s) => Value::String(s.as_ref().into()),
        Variant::DateTime(d) => Value::String(timestamp(d).to_rfc3339().into()),
        Variant::Array(a) => {
            let scalars: Vec<Value> = a.values.iter().map(value).collect::<Result<_, _>>()?;
            let empty_as = match a.value_type {
                VariantScalarTypeId::Boolean => ScalarType::Bool,
                VariantScalarTypeId::Float | VariantScalarTypeId::Double => ScalarType::Float,
                VariantScalarTypeId::String | VariantScalarTypeId::DateTime => ScalarType::String,
                _ => ScalarType::Int,
            };
            match Array::from_values(&scalars, empty_as) {
                Ok(Some(array)) => Value::Array(std::sync::Arc::new(array)),
                _ => return Err(Unsupported("array".into())),
            }
        }
        other => return Err(Unsupported(format!("{:?}", other.type_id()))),
    })
}

/// The quality of a status code: Good is Good; Uncertain and Bad keep a reason from their
/// sub-code (communication, device, configuration, range, staleness); a sub-code without a
/// closer match is a device's own judgement (`DeviceFailure`).
pub fn quality(s: StatusCode) -> Quality {
    use SubStatusCode as S;
    if s.is_good() {
        return Quality::GOOD;
    }
    let reason = match s.sub_code() {
        S::Uncertain | S::Bad => QualityReason::None,
        S::UncertainNoCommunicationLastUsableValue => QualityReason::CommFailure,
        S::UncertainConfigurationError => QualityReason::ConfigError,
        S::UncertainInitialValue => QualityReason::NotConnected,
        S::BadAggregateInvalidInputs => QualityReason::InsufficientData,
        S::BadDataLost => QualityReason::SequenceGap,
        S::UncertainSensorCalibration => QualityReason::Implausible,
        S::BadCommunicationError
        | S::BadNotConnected
        | S::BadServerNotConnected
        | S::BadNoCommunication
        | S::BadTimeout
        | S::BadConnectionClosed
        | S::BadSecureChannelClosed
        | S::BadSessionClosed => QualityReason::CommFailure,
        S::BadWaitingForInitialData => QualityReason::NotConnected,
        S::BadNodeIdUnknown
        | S::BadNodeIdInvalid
        | S::BadAttributeIdInvalid
        | S::BadTypeMismatch
        | S::BadConfigurationError
        | S::BadUserAccessDenied
        | S::BadNotReadable => QualityReason::ConfigError,
        S::BadOutOfRange | S::UncertainEngineeringUnitsExceeded => QualityReason::OutOfRange,
        S::UncertainLastUsableValue | S::BadNoDataAvailable => QualityReason::Stale,
        S::UncertainSubNormal => QualityReason::InsufficientData,
        _ => QualityReason::DeviceFailure,
    };
    if s.is_uncertain() {
        Quality::uncertain(reason)
    } else {
        Quality::bad(reason)
    }
}

/// The variant to write `v` as, typed to the node's data type `to`: integers to any integer
/// type they fit, to Float or Double; floats to Float or Double (to an integer type only when
/// whole and in range); bool to Boolean; text to String. Anything lossy or out of range is
/// refused with why, never cast.
pub fn to_variant(v: &Value, to: VariantScalarTypeId) -> Result<Variant, String> {
    use VariantScalarTypeId as T;
    let range = |what: &str| format!("{v} is out of the range of {what}");
    let int = |i: i128| -> Result<Variant, String> {
        let fit = |ok: bool, what: &str| if ok { Ok(()) } else { Err(range(what)) };
        Ok(match to {
            T::SByte => fit(i8::try_from(i).is_ok(), "SByte").map(|_| Variant::SByte(i as i8))?,
            T::Byte => fit(u8::try_from(i).is_ok(), "Byte").map(|_| Variant::Byte(i as u8))?,
            T::Int16 => fit(i16::try_from(i).is_ok(), "Int16").map(|_| Variant::Int16(i as i16))?,
            T::UInt16 => {
                fit(u16::try_from(i).is_ok(), "UInt16").map(|_| Variant::UInt16(i as u16))?
            }
            T::Int32 => fit(i32::try_from(i).is_ok(), "Int32").map(|_| Variant::Int32(i as i32))?,
            T::UInt32 => {
                fit(u32::try_from(i).is_ok(), "UInt32").map(|_| Variant::UInt32(i as u32))?
            }
            T::Int64 => fit(i64::try_from(i).is_ok(), "Int64").map(|_| Variant::Int64(i as i64))?,
            T::UInt64 => {
                fit(u64::try_from(i).is_ok(), "UInt64").map(|_| Variant::UInt64(i as u64))?
            }
            T::Float if (i as f32) as i128 == i => Variant::Float(i as f32),
            T::Double if (i as f64) as i128 == i => Variant::Double(i as f64),
            T::Float | T::Double => {
                return Err(format!("{v} has no exact {to:?} form (too many digits)"))
            }
            other => return Err(format!("an integer cannot be written to a {other:?} node")),
        })
    };
    if matches!(v, Value::Float(f) if !f.is_finite()) {
        return Err(format!("{v} is not a finite number"));
    }
    match (v, to) {
        (Value::Bool(b), T::Boolean) => Ok(Variant::Boolean(*b)),
        (Value::Int(i), _) => int(i128::from(*i)),
        (Value::U64(u), _) => int(i128::from(*u)),
        (Value::Float(f), T::Double) => Ok(Variant::Double(*f)),
        (Value::Float(f), T::Float) => {
            if f.abs() > f64::from(f32::MAX) {
                Err(range("Float"))
            } else {
                Ok(Variant::Float(*f as f32))
            }
        }
        (Value::Float(f), _) if f.fract() == 0.0 && f.is_finite() && f.abs() < 1e38 => {
            int(*f as i128)
        }
        (Value::String(s), T::String) => Ok(Variant::String(s.as_ref().into())),
        (v, to) => Err(format!(
            "a {} value cannot be written to a {to:?} node",
            v.kind()
        )),
    }
}

/// `v` as a tag of type `t` wants it: an integer widens to a float tag; anything else must
/// already be of the tag's type.
pub fn coerce(v: Value, t: ironplant_core::ValueType) -> Result<Value, String> {
    use ironplant_core::ValueType as V;
    match (v, t) {
        (Value::Int(i), V::Float) => Ok(Value::Float(i as f64)),
        (Value::U64(u), V::Float) => Ok(Value::Float(u as f64)),
        (v @ Value::Null, _) => Ok(v),
        (v, t) if v.value_type() == Some(t) => Ok(v),
        (v, t) => Err(format!(
            "the node sends {} values, the tag is {}",
            v.kind(),
            t.as_str()
        )),
    }
}

/// 100 ns ticks since 1601-01-01 (OPC UA) to µs since the Unix epoch.
pub fn timestamp(d: &DateTime) -> Timestamp {
    const UNIX_EPOCH_TICKS: i64 = 116_444_736_000_000_000;
    Timestamp(d.ticks().saturating_sub(UNIX_EPOCH_TICKS) / 10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_typed_exactly_or_refused() {
        use VariantScalarTypeId as T;
        assert_eq!(
            to_variant(&Value::Int(300), T::Int16),
            Ok(Variant::Int16(300))
        );
        assert!(to_variant(&Value::Int(70_000), T::Int16).is_err());
        assert!(to_variant(&Value::Int(-1), T::UInt32).is_err());
        assert_eq!(
            to_variant(&Value::Float(21.5), T::Float),
            Ok(Variant::Float(21.5))
        );
        assert_eq!(
            to_variant(&Value::Float(42.0), T::Int32),
            Ok(Variant::Int32(42))
        );
        assert!(to_variant(&Value::Float(42.5), T::Int32).is_err());
        assert!(to_variant(&Value::Float(f64::NAN), T::Double).is_err());
        assert!(to_variant(&Value::Float(f64::INFINITY), T::Float).is_err());
        assert!(to_variant(&Value::Float(1e39), T::Float).is_err());
        assert!(
            to_variant(&Value::Int(16_777_217), T::Float).is_err(),
            "not exact in f32"
        );
        assert_eq!(
            to_variant(&Value::Int(16_777_216), T::Float),
            Ok(Variant::Float(16_777_216.0))
        );
        assert_eq!(
            to_variant(&Value::U64(u64::MAX), T::UInt64),
            Ok(Variant::UInt64(u64::MAX))
        );
        assert!(to_variant(&Value::String("x".into()), T::Double).is_err());
    }

    #[test]
    fn integers_stay_exact_and_arrays_keep_their_type() {
        assert_eq!(value(&Variant::UInt64(u64::MAX)), Ok(Value::U64(u64::MAX)));
        assert_eq!(value(&Variant::UInt64(7)), Ok(Value::Int(7)));
        assert_eq!(value(&Variant::Int64(i64::MIN)), Ok(Value::Int(i64::MIN)));
        assert_eq!(value(&Variant::Float(0.5)), Ok(Value::Float(0.5)));
        assert_eq!(value(&Variant::Empty), Ok(Value::Null));
        assert_eq!(
            value(&Variant::from("run")),
            Ok(Value::String("run".into()))
        );
        let a = value(&Variant::from(vec![1.5f64, 2.5])).expect("an array");
        assert_eq!(a.value_type().map(|t| t.as_str()), Some("array<float>"));
        let big = value(&Variant::from(vec![u64::MAX, 1])).expect("a u64 array");
        assert_eq!(big.value_type().map(|t| t.as_str()), Some("array<int>"));
        let empty = value(&Variant::from(Vec::<f64>::new())).expect("an empty array");
        assert_eq!(empty.value_type().map(|t| t.as_str()), Some("array<float>"));
        assert!(value(&Variant::from(opcua::types::NodeId::new(1, 5))).is_err());
    }

    #[test]
    fn status_codes_map_to_quality_with_a_reason() {
        assert_eq!(quality(StatusCode::Good), Quality::GOOD);
        assert_eq!(
            quality(StatusCode::BadCommunicationError),
            Quality::bad(QualityReason::CommFailure)
        );
        assert_eq!(
            quality(StatusCode::BadWaitingForInitialData),
            Quality::bad(QualityReason::NotConnected)
        );
        assert_eq!(
            quality(StatusCode::UncertainLastUsableValue),
            Quality::uncertain(QualityReason::Stale)
        );
        assert_eq!(
            quality(StatusCode::UncertainEngineeringUnitsExceeded),
            Quality::uncertain(QualityReason::OutOfRange)
        );
        assert_eq!(
            quality(StatusCode::BadSensorFailure),
            Quality::bad(QualityReason::DeviceFailure)
        );
    }

    #[test]
    fn timestamps_convert_between_epochs() {
        let t = Timestamp(1_765_000_000_123_456);
        let d = DateTime::from(ticks_of(t.0));
        assert_eq!(timestamp(&d), t);
    }

    /// The OPC UA ticks (100 ns since 1601) of µs since the Unix epoch.
    fn ticks_of(us: i64) -> i64 {
        us * 10 + 116_444_736_000_000_000
    }
}
