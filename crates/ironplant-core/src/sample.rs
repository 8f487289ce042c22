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

/// The type of one element of an array value or of one DataSet column: the scalar value types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScalarType {
    Bool,
    Int,
    Float,
    String,
}

impl ScalarType {
    pub fn as_str(self) -> &'static str {
        match self {
            ScalarType::Bool => "bool",
            ScalarType::Int => "int",
            ScalarType::Float => "float",
            ScalarType::String => "string",
        }
    }

    /// The inverse of [`ScalarType::as_str`].
    pub fn parse(s: &str) -> Option<ScalarType> {
        Some(match s {
            "bool" => ScalarType::Bool,
            "int" => ScalarType::Int,
            "float" => ScalarType::Float,
            "string" => ScalarType::String,
            _ => return None,
        })
    }

    /// Whether `v` is a value of this type (`Int` and `U64` are both `int`).
    pub fn admits(self, v: &Value) -> bool {
        matches!(
            (self, v),
            (ScalarType::Bool, Value::Bool(_))
                | (ScalarType::Int, Value::Int(_) | Value::U64(_))
                | (ScalarType::Float, Value::Float(_))
                | (ScalarType::String, Value::String(_))
        )
    }
}

/// The declared type of a tag's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueType {
    Bool,
    Int,
    Float,
    String,
    /// A homogeneous array of the element type (`array<float>`).
    Array(ScalarType),
    /// A table: named, typed columns and rows ([`DataSet`]).
    DataSet,
}

impl ValueType {
    pub fn as_str(self) -> &'static str {
        match self {
            ValueType::Bool => "bool",
            ValueType::Int => "int",
            ValueType::Float => "float",
            ValueType::String => "string",
            ValueType::Array(ScalarType::Bool) => "array<bool>",
            ValueType::Array(ScalarType::Int) => "array<int>",
            ValueType::Array(ScalarType::Float) => "array<float>",
            ValueType::Array(ScalarType::String) => "array<string>",
            ValueType::DataSet => "dataset",
        }
    }

    /// The inverse of [`ValueType::as_str`].
    pub fn parse(s: &str) -> Option<ValueType> {
        if s == "dataset" {
            return Some(ValueType::DataSet);
        }
        if let Some(inner) = s.strip_prefix("array<").and_then(|r| r.strip_suffix('>')) {
            return ScalarType::parse(inner).map(ValueType::Array);
        }
        ScalarType::parse(s).map(ValueType::from)
    }
}

impl From<ScalarType> for ValueType {
    fn from(t: ScalarType) -> ValueType {
        match t {
            ScalarType::Bool => ValueType::Bool,
            ScalarType::Int => ValueType::Int,
            ScalarType::Float => ValueType::Float,
            ScalarType::String => ValueType::String,
        }
    }
}

/// At most this many elements in one array value, or cells in one DataSet (rows × columns).
/// Every decoder that builds an array or a DataSet from outside input (Sparkplug payloads, WAL
/// and chunk bytes, JSON) goes through the checked constructors below, so a hostile length can
/// never make Ironplant allocate more than about `MAX_ELEMENTS` × 24 bytes for one value.
pub const MAX_ELEMENTS: usize = 65_536;

/// At most this many bytes of text in one array or DataSet: its strings and column names.
pub const MAX_TEXT_BYTES: usize = 1 << 20;

/// Why an array or DataSet value could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompositeError {
    #[error("{count} elements is more than the limit of {MAX_ELEMENTS} per array or DataSet")]
    TooManyElements { count: usize },
    #[error(
        "{bytes} bytes of text is more than the limit of {MAX_TEXT_BYTES} per array or DataSet"
    )]
    TooMuchText { bytes: usize },
    #[error("DataSet has {columns} column names but {types} column types")]
    ColumnCount { columns: usize, types: usize },
    #[error("DataSet row {row} has {cells} cells for {columns} columns")]
    RowWidth {
        row: usize,
        cells: usize,
        columns: usize,
    },
    #[error("DataSet row {row}, column {column:?} (of type {expected}) holds a {found} value")]
    CellType {
        row: usize,
        column: String,
        expected: &'static str,
        found: &'static str,
    },
}

fn check_len(n: usize) -> Result<(), CompositeError> {
    if n > MAX_ELEMENTS {
        return Err(CompositeError::TooManyElements { count: n });
    }
    Ok(())
}

fn check_text<'a>(strings: impl Iterator<Item = &'a str>) -> Result<(), CompositeError> {
    let bytes = strings.fold(0usize, |acc, s| acc.saturating_add(s.len()));
    if bytes > MAX_TEXT_BYTES {
        return Err(CompositeError::TooMuchText { bytes });
    }
    Ok(())
}

/// A homogeneous array value, built only through the checked constructors (element count and
/// text size within [`MAX_ELEMENTS`]/[`MAX_TEXT_BYTES`]). Integer arrays keep one form, like
/// scalars: [`Elements::U64`] only when some element is above `i64::MAX`, else [`Elements::Int`].
#[derive(Debug, Clone, PartialEq)]
pub struct Array(Repr);

#[derive(Debug, Clone, PartialEq)]
enum Repr {
    Bool(Box<[bool]>),
    Int(Box<[i64]>),
    U64(Box<[u64]>),
    Float(Box<[f64]>),
    String(Box<[Arc<str>]>),
}

/// A borrowed view of an array's elements, by element type.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Elements<'a> {
    Bool(&'a [bool]),
    Int(&'a [i64]),
    /// Only when some element is above `i64::MAX` (see [`Array::from_u64s`]).
    U64(&'a [u64]),
    Float(&'a [f64]),
    String(&'a [Arc<str>]),
}

impl Array {
    pub fn from_bools(v: Vec<bool>) -> Result<Array, CompositeError> {
        check_len(v.len())?;
        Ok(Array(Repr::Bool(v.into())))
    }

    pub fn from_ints(v: Vec<i64>) -> Result<Array, CompositeError> {
        check_len(v.len())?;
        Ok(Array(Repr::Int(v.into())))
    }

    /// Unsigned integers, exact: an `Int` array when every element fits `i64`, else a `U64` one.
    pub fn from_u64s(v: Vec<u64>) -> Result<Array, CompositeError> {
        check_len(v.len())?;
        if v.iter().all(|u| i64::try_from(*u).is_ok()) {
            Ok(Array(Repr::Int(v.into_iter().map(|u| u as i64).collect())))
        } else {
            Ok(Array(Repr::U64(v.into())))
        }
    }

    pub fn from_floats(v: Vec<f64>) -> Result<Array, CompositeError> {
        check_len(v.len())?;
        Ok(Array(Repr::Float(v.into())))
    }

    pub fn from_strings(v: Vec<Arc<str>>) -> Result<Array, CompositeError> {
        check_len(v.len())?;
        check_text(v.iter().map(|s| &**s))?;
        Ok(Array(Repr::String(v.into())))
    }

    /// An array from scalar values of one type (`Int` and `U64` mix as `int`); `None` when the
    /// values are of different types or not scalars. An empty list gives an empty array of
    /// `empty_as`.
    pub fn from_values(
        values: &[Value],
        empty_as: ScalarType,
    ) -> Result<Option<Array>, CompositeError> {
        check_len(values.len())?;
        let t = match values.first() {
            None => empty_as,
            Some(Value::Bool(_)) => ScalarType::Bool,
            Some(Value::Int(_) | Value::U64(_)) => ScalarType::Int,
            Some(Value::Float(_)) => ScalarType::Float,
            Some(Value::String(_)) => ScalarType::String,
            Some(_) => return Ok(None),
        };
        if !values.iter().all(|v| t.admits(v)) {
            return Ok(None);
        }
        let a = match t {
            ScalarType::Bool => Array::from_bools(
                values
                    .iter()
                    .map(|v| matches!(v, Value::Bool(true)))
                    .collect(),
            )?,
            ScalarType::Int => {
                if values.iter().any(|v| matches!(v, Value::U64(_))) {
                    let unsigned: Option<Vec<u64>> = values
                        .iter()
                        .map(|v| match *v {
                            Value::U64(u) => Some(u),
                            Value::Int(i) => u64::try_from(i).ok(),
                            _ => None,
                        })
                        .collect();
                    match unsigned {
                        Some(v) => Array::from_u64s(v)?,
                        // A negative number beside one above i64::MAX: no exact element type.
                        None => return Ok(None),
                    }
                } else {
                    Array::from_ints(
                        values
                            .iter()
                            .map(|v| if let Value::Int(i) = v { *i } else { 0 })
                            .collect(),
                    )?
                }
            }
            ScalarType::Float => Array::from_floats(
                values
                    .iter()
                    .map(|v| if let Value::Float(f) = v { *f } else { 0.0 })
                    .collect(),
            )?,
            ScalarType::String => Array::from_strings(
                values
                    .iter()
                    .map(|v| {
                        if let Value::String(s) = v {
                            s.clone()
                        } else {
                            Arc::from("")
                        }
                    })
                    .collect(),
            )?,
        };
        Ok(Some(a))
    }

    pub fn elements(&self) -> Elements<'_> {
        match &self.0 {
            Repr::Bool(v) => Elements::Bool(v),
            Repr::Int(v) => Elements::Int(v),
            Repr::U64(v) => Elements::U64(v),
            Repr::Float(v) => Elements::Float(v),
            Repr::String(v) => Elements::String(v),
        }
    }

    pub fn element_type(&self) -> ScalarType {
        match &self.0 {
            Repr::Bool(_) => ScalarType::Bool,
            Repr::Int(_) | Repr::U64(_) => ScalarType::Int,
            Repr::Float(_) => ScalarType::Float,
            Repr::String(_) => ScalarType::String,
        }
    }

    pub fn len(&self) -> usize {
        match &self.0 {
            Repr::Bool(v) => v.len(),
            Repr::Int(v) => v.len(),
            Repr::U64(v) => v.len(),
            Repr::Float(v) => v.len(),
            Repr::String(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Element `i` as a scalar value.
    pub fn get(&self, i: usize) -> Option<Value> {
        Some(match &self.0 {
            Repr::Bool(v) => Value::Bool(*v.get(i)?),
            Repr::Int(v) => Value::Int(*v.get(i)?),
            Repr::U64(v) => Value::from_u64(*v.get(i)?),
            Repr::Float(v) => Value::Float(*v.get(i)?),
            Repr::String(v) => Value::String(v.get(i)?.clone()),
        })
    }

    /// The elements as scalar values.
    pub fn iter(&self) -> impl Iterator<Item = Value> + '_ {
        (0..self.len()).filter_map(|i| self.get(i))
    }
}

/// A table value (a Sparkplug DataSet; later OPC UA structures and matrices): named columns of
/// one scalar type each and rows as wide as the header, every cell of its column's type or
/// `Null`. Built only through [`DataSet::new`], which checks all of that and the size limits.
#[derive(Debug, Clone, PartialEq)]
pub struct DataSet {
    columns: Box<[Arc<str>]>,
    types: Box<[ScalarType]>,
    rows: Box<[Box<[Value]>]>,
}

impl DataSet {
    pub fn new(
        columns: Vec<Arc<str>>,
        types: Vec<ScalarType>,
        rows: Vec<Vec<Value>>,
    ) -> Result<DataSet, CompositeError> {
        if columns.len() != types.len() {
            return Err(CompositeError::ColumnCount {
                columns: columns.len(),
                types: types.len(),
            });
        }
        check_len(
            rows.len()
                .saturating_mul(columns.len())
                .max(columns.len())
                .max(rows.len()),
        )?;
        let mut text: Vec<&str> = columns.iter().map(|c| &**c).collect();
        for (r, row) in rows.iter().enumerate() {
            if row.len() != columns.len() {
                return Err(CompositeError::RowWidth {
                    row: r,
                    cells: row.len(),
                    columns: columns.len(),
                });
            }
            for ((cell, t), name) in row.iter().zip(&types).zip(&columns) {
                match cell {
                    Value::Null => {}
                    Value::String(s) if *t == ScalarType::String => text.push(s),
                    v if t.admits(v) => {}
                    v => {
                        return Err(CompositeError::CellType {
                            row: r,
                            column: name.to_string(),
                            expected: t.as_str(),
                            found: v.kind(),
                        })
                    }
                }
            }
        }
        check_text(text.into_iter())?;
        Ok(DataSet {
            columns: columns.into(),
            types: types.into(),
            rows: rows.into_iter().map(Vec::into_boxed_slice).collect(),
        })
    }

    pub fn columns(&self) -> &[Arc<str>] {
        &self.columns
    }

    pub fn types(&self) -> &[ScalarType] {
        &self.types
    }

    pub fn rows(&self) -> &[Box<[Value]>] {
        &self.rows
    }
}

/// A typed value. `Null` is only carried by samples whose quality is not Good and for which no
/// earlier value is known (e.g. a device that never answered).
///
/// Composite values (arrays, DataSets) sit behind an `Arc`: a sample stays 24 bytes and cloning
/// one onto every bus subscriber copies a pointer, not the elements.
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
    /// A homogeneous array (value type `array<T>`); it renders as a JSON array.
    Array(Arc<Array>),
    /// A table (value type `dataset`); it renders as `{"columns":[..],"types":[..],"rows":[[..]]}`.
    DataSet(Arc<DataSet>),
}

impl Value {
    /// An unsigned integer, exact: `Int` up to `i64::MAX`, `U64` above.
    pub fn from_u64(u: u64) -> Value {
        match i64::try_from(u) {
            Ok(i) => Value::Int(i),
            Err(_) => Value::U64(u),
        }
    }

    pub fn array(a: Array) -> Value {
        Value::Array(Arc::new(a))
    }

    pub fn dataset(d: DataSet) -> Value {
        Value::DataSet(Arc::new(d))
    }

    pub fn value_type(&self) -> Option<ValueType> {
        match self {
            Value::Null => None,
            Value::Bool(_) => Some(ValueType::Bool),
            Value::Int(_) | Value::U64(_) => Some(ValueType::Int),
            Value::Float(_) => Some(ValueType::Float),
            Value::String(_) => Some(ValueType::String),
            Value::Array(a) => Some(ValueType::Array(a.element_type())),
            Value::DataSet(_) => Some(ValueType::DataSet),
        }
    }

    /// The value's type name for messages (`null`, `int`, `array<float>`, …).
    pub fn kind(&self) -> &'static str {
        self.value_type().map_or("null", ValueType::as_str)
    }

    /// The value as a number, if it is one (booleans count as 0/1; arrays and DataSets are not).
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::Bool(b) => Some(if b { 1.0 } else { 0.0 }),
            Value::Int(i) => Some(i as f64),
            Value::U64(u) => Some(u as f64),
            Value::Float(f) => Some(f),
            Value::Null | Value::String(_) | Value::Array(_) | Value::DataSet(_) => None,
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
            Value::Array(a) => {
                f.write_str("[")?;
                for (i, v) in a.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{v}")?;
                }
                f.write_str("]")
            }
            Value::DataSet(d) => write!(
                f,
                "dataset({} columns × {} rows)",
                d.columns().len(),
                d.rows().len()
            ),
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
    /// A computed value could not be calculated (division by zero, a result that is not a
    /// finite number, an overflow).
    CalculationFailed,
    /// A computed value lacks the data it needs: a time function has not seen enough samples,
    /// its window is not covered, or some inputs of an aggregate are Bad.
    InsufficientData,
    /// Messages from the source were lost or are out of order (e.g. a Sparkplug seq gap):
    /// the value arrived before the source re-established its state, so it may be out of date
    /// or not what the source last meant.
    SequenceGap,
    /// The value failed a plausibility check of data validation (rate of change, flatline,
    /// spike, disagreement with redundant sensors): the integrity finding says which.
    Implausible,
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
            QualityReason::CalculationFailed => "CalculationFailed",
            QualityReason::InsufficientData => "InsufficientData",
            QualityReason::SequenceGap => "SequenceGap",
            QualityReason::Implausible => "Implausible",
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

    #[test]
    fn value_types_parse_back_from_their_names() {
        let all = [
            ValueType::Bool,
            ValueType::Int,
            ValueType::Float,
            ValueType::String,
            ValueType::Array(ScalarType::Bool),
            ValueType::Array(ScalarType::Int),
            ValueType::Array(ScalarType::Float),
            ValueType::Array(ScalarType::String),
            ValueType::DataSet,
        ];
        for t in all {
            assert_eq!(ValueType::parse(t.as_str()), Some(t), "{}", t.as_str());
        }
        assert_eq!(ValueType::Array(ScalarType::Float).as_str(), "array<float>");
        for bad in ["array<>", "array<array<int>>", "array<float", "Float", ""] {
            assert_eq!(ValueType::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn arrays_keep_one_form_and_are_not_numbers() {
        let small = Array::from_u64s(vec![1, 2]).expect("small");
        assert_eq!(small, Array::from_ints(vec![1, 2]).expect("small"));
        assert_eq!(small.elements(), Elements::Int(&[1, 2]));
        let big = Array::from_u64s(vec![1, u64::MAX]).expect("small");
        assert_eq!(big.elements(), Elements::U64(&[1, u64::MAX]));
        assert_eq!(big.get(0), Some(Value::Int(1)));
        assert_eq!(big.get(1), Some(Value::U64(u64::MAX)));
        let v = Value::array(big);
        assert_eq!(v.value_type(), Some(ValueType::Array(ScalarType::Int)));
        assert_eq!(v.as_f64(), None);
        assert_eq!(v.to_string(), "[1, 18446744073709551615]");
        assert_eq!(
            Array::from_values(&[Value::Int(-1), Value::U64(u64::MAX)], ScalarType::Int),
            Ok(None)
        );
        assert_eq!(
            Array::from_values(&[Value::Int(1), Value::Float(1.0)], ScalarType::Int),
            Ok(None)
        );
        assert_eq!(
            Array::from_values(&[], ScalarType::String).map(|a| a.map(|a| a.element_type())),
            Ok(Some(ScalarType::String))
        );
        assert_eq!(std::mem::size_of::<Value>(), 24);
    }

    #[test]
    fn sizes_are_bounded() {
        assert_eq!(
            Array::from_bools(vec![false; MAX_ELEMENTS + 1]),
            Err(CompositeError::TooManyElements {
                count: MAX_ELEMENTS + 1
            })
        );
        assert!(Array::from_bools(vec![false; MAX_ELEMENTS]).is_ok());
        let long: Arc<str> = Arc::from("x".repeat(MAX_TEXT_BYTES / 2 + 1));
        assert!(matches!(
            Array::from_strings(vec![long.clone(), long.clone()]),
            Err(CompositeError::TooMuchText { .. })
        ));
        // 300 rows × 300 columns = 90 000 cells.
        let cols: Vec<Arc<str>> = (0..300).map(|i| Arc::from(i.to_string())).collect();
        let rows = vec![vec![Value::Null; 300]; 300];
        assert!(matches!(
            DataSet::new(cols, vec![ScalarType::Int; 300], rows),
            Err(CompositeError::TooManyElements { count: 90_000 })
        ));
    }

    #[test]
    fn datasets_check_their_shape() {
        let cols = || vec![Arc::from("a"), Arc::from("b")];
        let types = || vec![ScalarType::Int, ScalarType::String];
        let ok = DataSet::new(
            cols(),
            types(),
            vec![
                vec![Value::Int(1), Value::String("x".into())],
                vec![Value::U64(u64::MAX), Value::Null],
            ],
        )
        .expect("valid");
        assert_eq!(ok.rows().len(), 2);
        assert_eq!(
            DataSet::new(cols(), vec![ScalarType::Int], vec![]),
            Err(CompositeError::ColumnCount {
                columns: 2,
                types: 1
            })
        );
        assert_eq!(
            DataSet::new(cols(), types(), vec![vec![Value::Int(1)]]),
            Err(CompositeError::RowWidth {
                row: 0,
                cells: 1,
                columns: 2
            })
        );
        let err = DataSet::new(cols(), types(), vec![vec![Value::Float(1.0), Value::Null]])
            .expect_err("float in an int column");
        assert_eq!(
            err.to_string(),
            "DataSet row 0, column \"a\" (of type int) holds a float value"
        );
    }
}
