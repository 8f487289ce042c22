//! Typed metric values: the wire form (`Metric.value` + `Metric.datatype`) ⇄ [`MetricValue`] ⇄
//! [`ironplant_core::Value`].
//!
//! # Wire rules (Sparkplug B 3.0, §6.4.16)
//! - Int8/Int16/Int32/UInt8/UInt16/UInt32 travel in `int_value` (uint32); Int64/UInt64/DateTime in
//!   `long_value` (uint64). Negative Int8/Int16 are *encoded* as two's complement in their own
//!   width (Int8 −1 → 255), which pysparkplug requires, and *decoded* from either that form or the
//!   32-bit sign-extended form Eclipse Tahu's Java encoder produces (Int8 −1 → 0xFFFF_FFFF). Any
//!   other out-of-range carrier is an error, never silently truncated.
//! - Arrays travel in `bytes_value`, little-endian packed; BooleanArray is a 4-byte little-endian
//!   count followed by the bits, most significant bit first; StringArray is NUL-terminated UTF-8.
//!   A length that does not fit the element size is an error.
//!
//! # Mapping to tag values ([`MetricValue::to_value`])
//! - Every integer type → `Value::Int`, except UInt64 above `i64::MAX` → `Value::U64` (exact;
//!   see [`Value::from_u64`]).
//! - Float/Double → `Value::Float`; Boolean → `Value::Bool`; String/Text/UUID → `Value::String`.
//! - DateTime → `Value::Int` of milliseconds since the Unix epoch (the Sparkplug unit, kept as is).
//! - Every array type → `Value::Array` with the element type of the scalar mapping (Int8Array …
//!   UInt64Array and DateTimeArray → `int` elements, kept exact: a UInt64Array with an element
//!   above `i64::MAX` is a `u64` array; FloatArray/DoubleArray → `float`; BooleanArray → `bool`;
//!   StringArray → `string`). FloatArray elements widen like Float (shortest decimal).
//! - DataSet → `Value::DataSet`: column names, column types mapped like scalars (Int32 → `int`,
//!   Double → `float`, …), cells mapped like scalar metrics, null cells `Value::Null`.
//! - Template *instances* stay `Value::String` holding compact JSON
//!   (`{"template_ref":…,"metrics":{name: value}}`): a template is a nested, typed structure
//!   that no tag value models yet.
//! - An array or DataSet beyond `ironplant_core::MAX_ELEMENTS` elements (or `MAX_TEXT_BYTES` of
//!   text) is an error ([`ValueError::TooLarge`]), never truncated.
//! - Bytes, File and Template *definitions* have no tag value (`None`): a binary blob is not a
//!   process value, and a definition is a type, not an instance.

use std::sync::Arc;

use ironplant_core::{Array, CompositeError, ScalarType, Value};

use crate::datatype::DataType;
use crate::proto::payload::{self, data_set, metric, Template};

/// A decoded, typed metric value.
#[derive(Debug, Clone, PartialEq)]
pub enum MetricValue {
    Int8(i8),
    Int16(i16),
    Int32(i32),
    Int64(i64),
    UInt8(u8),
    UInt16(u16),
    UInt32(u32),
    UInt64(u64),
    Float(f32),
    Double(f64),
    Boolean(bool),
    String(String),
    /// Milliseconds since the Unix epoch (UTC).
    DateTime(u64),
    Text(String),
    Uuid(String),
    DataSet(DataSet),
    Bytes(Vec<u8>),
    File(Vec<u8>),
    Template(Template),
    Int8Array(Vec<i8>),
    Int16Array(Vec<i16>),
    Int32Array(Vec<i32>),
    Int64Array(Vec<i64>),
    UInt8Array(Vec<u8>),
    UInt16Array(Vec<u16>),
    UInt32Array(Vec<u32>),
    UInt64Array(Vec<u64>),
    FloatArray(Vec<f32>),
    DoubleArray(Vec<f64>),
    BooleanArray(Vec<bool>),
    StringArray(Vec<String>),
    /// Milliseconds since the Unix epoch (UTC).
    DateTimeArray(Vec<u64>),
}

/// Why a metric value could not be decoded or built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ValueError {
    #[error("datatype {0} is not a Sparkplug B datatype (valid: 1..=34)")]
    UnknownDataType(u32),
    #[error("no datatype: births must declare one for every metric")]
    MissingDataType,
    #[error("datatype {0} cannot be the value of a metric")]
    NotAMetricType(DataType),
    #[error("a {datatype} metric carries {found}")]
    TypeMismatch {
        datatype: DataType,
        found: &'static str,
    },
    #[error("a {datatype} metric has no value and is not marked is_null")]
    MissingValue { datatype: DataType },
    #[error("value {value} is out of range for {datatype}")]
    OutOfRange { datatype: DataType, value: String },
    #[error("{datatype} takes whole numbers, not {value}")]
    NotIntegral { datatype: DataType, value: String },
    #[error("{datatype} payload of {len} bytes is malformed: {why}")]
    BadArray {
        datatype: DataType,
        len: usize,
        why: &'static str,
    },
    #[error("malformed DataSet: {0}")]
    BadDataSet(String),
    #[error("{datatype} value is too large: {error}")]
    TooLarge {
        datatype: DataType,
        #[source]
        error: CompositeError,
    },
    #[error("a {found} value cannot be written as {datatype}")]
    Unsupported {
        datatype: DataType,
        found: &'static str,
    },
}

/// A validated DataSet: one name and one scalar type per column, every row as wide as the header.
/// Cells are typed by their column; `None` is a null cell.
#[derive(Debug, Clone, PartialEq)]
pub struct DataSet {
    columns: Vec<String>,
    types: Vec<DataType>,
    rows: Vec<Vec<Option<MetricValue>>>,
}

impl DataSet {
    /// Builds a DataSet, checking column/type counts, that every type is a scalar one and that
    /// every cell matches its column's type.
    pub fn new(
        columns: Vec<String>,
        types: Vec<DataType>,
        rows: Vec<Vec<Option<MetricValue>>>,
    ) -> Result<DataSet, ValueError> {
        if columns.len() != types.len() {
            return Err(ValueError::BadDataSet(format!(
                "{} columns but {} types",
                columns.len(),
                types.len()
            )));
        }
        if let Some(t) = types.iter().find(|t| !is_scalar(**t)) {
            return Err(ValueError::BadDataSet(format!(
                "column type {t} is not a scalar type"
            )));
        }
        for (r, row) in rows.iter().enumerate() {
            if row.len() != columns.len() {
                return Err(ValueError::BadDataSet(format!(
                    "row {r} has {} cells for {} columns",
                    row.len(),
                    columns.len()
                )));
            }
            for (cell, t) in row.iter().zip(&types) {
                if let Some(v) = cell {
                    if v.datatype() != *t {
                        return Err(ValueError::BadDataSet(format!(
                            "row {r}: a {} cell in a {t} column",
                            v.datatype()
                        )));
                    }
                }
            }
        }
        Ok(DataSet {
            columns,
            types,
            rows,
        })
    }

    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    pub fn types(&self) -> &[DataType] {
        &self.types
    }

    pub fn rows(&self) -> &[Vec<Option<MetricValue>>] {
        &self.rows
    }

    pub fn from_proto(ds: &payload::DataSet) -> Result<DataSet, ValueError> {
        if let Some(n) = ds.num_of_columns {
            if usize::try_from(n).ok() != Some(ds.columns.len()) {
                return Err(ValueError::BadDataSet(format!(
                    "num_of_columns is {n} but {} columns are named",
                    ds.columns.len()
                )));
            }
        }
        let mut types = Vec::with_capacity(ds.types.len());
        for &t in &ds.types {
            let dt = DataType::from_u32(t).ok_or(ValueError::UnknownDataType(t))?;
            types.push(dt);
        }
        if ds.columns.len() != types.len() {
            return Err(ValueError::BadDataSet(format!(
                "{} columns but {} types",
                ds.columns.len(),
                types.len()
            )));
        }
        if let Some(t) = types.iter().find(|t| !is_scalar(**t)) {
            return Err(ValueError::BadDataSet(format!(
                "column type {t} is not a scalar type"
            )));
        }
        let mut rows = Vec::with_capacity(ds.rows.len());
        for (r, row) in ds.rows.iter().enumerate() {
            if row.elements.len() != types.len() {
                return Err(ValueError::BadDataSet(format!(
                    "row {r} has {} cells for {} columns",
                    row.elements.len(),
                    types.len()
                )));
            }
            let mut cells = Vec::with_capacity(types.len());
            for (cell, &t) in row.elements.iter().zip(&types) {
                let v = match &cell.value {
                    None => None,
                    Some(v) => Some(MetricValue::from_proto(t, &cell_to_metric(v))?),
                };
                cells.push(v);
            }
            rows.push(cells);
        }
        Ok(DataSet {
            columns: ds.columns.clone(),
            types,
            rows,
        })
    }

    pub fn to_proto(&self) -> payload::DataSet {
        payload::DataSet {
            num_of_columns: Some(self.columns.len() as u64),
            columns: self.columns.clone(),
            types: self.types.iter().map(|t| t.as_u32()).collect(),
            rows: self
                .rows
                .iter()
                .map(|row| data_set::Row {
                    elements: row
                        .iter()
                        .map(|cell| data_set::DataSetValue {
                            value: cell.as_ref().and_then(|v| metric_to_cell(v.to_proto())),
                        })
                        .collect(),
                })
                .collect(),
        }
    }

    /// The tag value's DataSet: columns typed by [`DataType::scalar_type`], cells mapped like
    /// scalar metrics. Checked against the core's size limits before the cells are copied.
    pub fn to_core(&self) -> Result<ironplant_core::DataSet, CompositeError> {
        let cells = self.rows.len().saturating_mul(self.columns.len());
        if cells > ironplant_core::MAX_ELEMENTS {
            return Err(CompositeError::TooManyElements { count: cells });
        }
        let types = self
            .types
            .iter()
            .map(|t| t.scalar_type().unwrap_or(ScalarType::String))
            .collect();
        let rows = self
            .rows
            .iter()
            .map(|row| {
                row.iter()
                    .map(|c| {
                        c.as_ref()
                            .and_then(MetricValue::scalar_value)
                            .unwrap_or(Value::Null)
                    })
                    .collect()
            })
            .collect();
        ironplant_core::DataSet::new(
            self.columns.iter().map(|c| Arc::from(c.as_str())).collect(),
            types,
            rows,
        )
    }

    /// A DataSet from a tag value's: `int` columns become Int64 (UInt64 when a cell is above
    /// `i64::MAX`), `float` Double, `bool` Boolean, `string` String. The core DataSet does not
    /// keep Sparkplug's narrower column types, so a DataSet decoded from Int32 columns comes back
    /// as Int64 columns with the same values.
    pub fn from_core(d: &ironplant_core::DataSet) -> Result<DataSet, ValueError> {
        let types: Vec<DataType> = d
            .types()
            .iter()
            .enumerate()
            .map(|(c, t)| match t {
                ScalarType::Bool => DataType::Boolean,
                ScalarType::Float => DataType::Double,
                ScalarType::String => DataType::String,
                ScalarType::Int
                    if d.rows()
                        .iter()
                        .any(|r| matches!(r.get(c), Some(Value::U64(_)))) =>
                {
                    DataType::UInt64
                }
                ScalarType::Int => DataType::Int64,
            })
            .collect();
        let mut rows = Vec::with_capacity(d.rows().len());
        for row in d.rows() {
            let mut cells = Vec::with_capacity(types.len());
            for (cell, t) in row.iter().zip(&types) {
                cells.push(match cell {
                    Value::Null => None,
                    v => Some(MetricValue::from_value(*t, v)?),
                });
            }
            rows.push(cells);
        }
        DataSet::new(
            d.columns().iter().map(|c| c.to_string()).collect(),
            types,
            rows,
        )
    }

    fn to_json(&self) -> serde_json::Value {
        let rows = self
            .rows
            .iter()
            .map(|row| {
                serde_json::Value::Array(
                    row.iter()
                        .map(|c| c.as_ref().map_or(serde_json::Value::Null, |v| v.to_json()))
                        .collect(),
                )
            })
            .collect();
        serde_json::json!({
            "columns": self.columns,
            "types": self.types.iter().map(|t| t.name()).collect::<Vec<_>>(),
            "rows": serde_json::Value::Array(rows),
        })
    }
}

/// Types a DataSet column (or a command written from a tag value) can have.
fn is_scalar(t: DataType) -> bool {
    matches!(
        t,
        DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64
            | DataType::Float
            | DataType::Double
            | DataType::Boolean
            | DataType::String
            | DataType::DateTime
            | DataType::Text
            | DataType::Uuid
    )
}

fn cell_to_metric(v: &data_set::data_set_value::Value) -> metric::Value {
    use data_set::data_set_value::Value as C;
    match v {
        C::IntValue(x) => metric::Value::IntValue(*x),
        C::LongValue(x) => metric::Value::LongValue(*x),
        C::FloatValue(x) => metric::Value::FloatValue(*x),
        C::DoubleValue(x) => metric::Value::DoubleValue(*x),
        C::BooleanValue(x) => metric::Value::BooleanValue(*x),
        C::StringValue(x) => metric::Value::StringValue(x.clone()),
        C::ExtensionValue(_) => metric::Value::ExtensionValue(metric::MetricValueExtension {}),
    }
}

fn metric_to_cell(v: metric::Value) -> Option<data_set::data_set_value::Value> {
    use data_set::data_set_value::Value as C;
    Some(match v {
        metric::Value::IntValue(x) => C::IntValue(x),
        metric::Value::LongValue(x) => C::LongValue(x),
        metric::Value::FloatValue(x) => C::FloatValue(x),
        metric::Value::DoubleValue(x) => C::DoubleValue(x),
        metric::Value::BooleanValue(x) => C::BooleanValue(x),
        metric::Value::StringValue(x) => C::StringValue(x),
        // Unreachable for validated (scalar) cells.
        _ => return None,
    })
}

fn carrier_name(v: &metric::Value) -> &'static str {
    match v {
        metric::Value::IntValue(_) => "int_value",
        metric::Value::LongValue(_) => "long_value",
        metric::Value::FloatValue(_) => "float_value",
        metric::Value::DoubleValue(_) => "double_value",
        metric::Value::BooleanValue(_) => "boolean_value",
        metric::Value::StringValue(_) => "string_value",
        metric::Value::BytesValue(_) => "bytes_value",
        metric::Value::DatasetValue(_) => "dataset_value",
        metric::Value::TemplateValue(_) => "template_value",
        metric::Value::ExtensionValue(_) => "extension_value",
    }
}

/// Widens an f32 to the f64 with the same shortest decimal form (`1.23f32` → `1.23`, not
/// `1.2300000190734863`): the edge node meant the decimal value, and JSON, the historian and alarm
/// limits downstream should see that. Narrowing back with `as f32` gives the same f32.
fn f32_as_f64(x: f32) -> f64 {
    use std::io::Write as _;
    if !x.is_finite() {
        return f64::from(x);
    }
    // `Display` never uses an exponent; the longest f32 (a subnormal) needs 47 bytes.
    let mut buf = [0u8; 64];
    let mut cur = std::io::Cursor::new(&mut buf[..]);
    if write!(cur, "{x}").is_err() {
        return f64::from(x);
    }
    let len = usize::try_from(cur.position()).unwrap_or(0);
    buf.get(..len)
        .and_then(|b| std::str::from_utf8(b).ok())
        .and_then(|s| s.parse().ok())
        .unwrap_or(f64::from(x))
}

/// Sign-extends the low `bits` bits of `v`.
fn sign_extend(v: u64, bits: u32) -> i64 {
    let shift = 64 - bits;
    ((v << shift) as i64) >> shift
}

/// A signed integer of `bits` bits from a `carrier_bits`-wide unsigned carrier: either
/// zero-extended two's complement of the own width or sign-extended to the carrier width.
fn signed_from(carrier: u64, carrier_bits: u32, bits: u32) -> Option<i64> {
    if bits >= carrier_bits {
        return Some(sign_extend(carrier, carrier_bits));
    }
    let low = carrier & ((1u64 << bits) - 1);
    let high = carrier >> bits;
    let high_ones = (1u64 << (carrier_bits - bits)) - 1;
    let negative = (low >> (bits - 1)) & 1 == 1;
    if high == 0 || (high == high_ones && negative) {
        Some(sign_extend(low, bits))
    } else {
        None
    }
}

fn unsigned_from(carrier: u64, bits: u32) -> Option<u64> {
    if bits >= 64 || carrier < (1u64 << bits) {
        Some(carrier)
    } else {
        None
    }
}

fn chunks<const N: usize>(
    datatype: DataType,
    bytes: &[u8],
) -> Result<impl Iterator<Item = [u8; N]> + '_, ValueError> {
    if !bytes.len().is_multiple_of(N) {
        return Err(ValueError::BadArray {
            datatype,
            len: bytes.len(),
            why: "length is not a multiple of the element size",
        });
    }
    Ok(bytes.chunks_exact(N).map(|c| {
        let mut a = [0u8; N];
        a.copy_from_slice(c);
        a
    }))
}

fn decode_bool_array(bytes: &[u8]) -> Result<Vec<bool>, ValueError> {
    let bad = |why| ValueError::BadArray {
        datatype: DataType::BooleanArray,
        len: bytes.len(),
        why,
    };
    let (count, bits) = bytes
        .split_first_chunk::<4>()
        .ok_or_else(|| bad("shorter than its 4-byte count"))?;
    let count = u64::from(u32::from_le_bytes(*count));
    // Checked against the bytes actually present before anything is allocated.
    if count.div_ceil(8) != bits.len() as u64 {
        return Err(bad("count does not match the number of packed bytes"));
    }
    Ok((0..count)
        .map(|i| {
            let byte = bits[(i / 8) as usize];
            (byte >> (7 - (i % 8))) & 1 == 1
        })
        .collect())
}

fn encode_bool_array(v: &[bool]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + v.len().div_ceil(8));
    // A u32 count is the wire format; longer arrays cannot be represented and are cut.
    let n = u32::try_from(v.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&n.to_le_bytes());
    for chunk in v[..n as usize].chunks(8) {
        let mut byte = 0u8;
        for (i, b) in chunk.iter().enumerate() {
            if *b {
                byte |= 0x80 >> i;
            }
        }
        out.push(byte);
    }
    out
}

fn decode_string_array(bytes: &[u8]) -> Result<Vec<String>, ValueError> {
    let bad = |why| ValueError::BadArray {
        datatype: DataType::StringArray,
        len: bytes.len(),
        why,
    };
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let body = bytes
        .strip_suffix(&[0])
        .ok_or_else(|| bad("last string is not NUL-terminated"))?;
    body.split(|b| *b == 0)
        .map(|s| {
            std::str::from_utf8(s)
                .map(str::to_owned)
                .map_err(|_| bad("a string is not UTF-8"))
        })
        .collect()
}

fn encode_string_array(v: &[String]) -> Vec<u8> {
    let mut out = Vec::new();
    for s in v {
        // An interior NUL would split the string on the wire; drop it rather than corrupt the array.
        out.extend(s.bytes().filter(|b| *b != 0));
        out.push(0);
    }
    out
}

macro_rules! le_array {
    ($dt:expr, $bytes:expr, $ty:ty, $n:literal) => {
        chunks::<$n>($dt, $bytes)?
            .map(<$ty>::from_le_bytes)
            .collect::<Vec<$ty>>()
    };
}

fn le_bytes<T, const N: usize>(v: &[T], f: impl Fn(&T) -> [u8; N]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len() * N);
    for x in v {
        out.extend_from_slice(&f(x));
    }
    out
}

impl MetricValue {
    pub fn datatype(&self) -> DataType {
        match self {
            MetricValue::Int8(_) => DataType::Int8,
            MetricValue::Int16(_) => DataType::Int16,
            MetricValue::Int32(_) => DataType::Int32,
            MetricValue::Int64(_) => DataType::Int64,
            MetricValue::UInt8(_) => DataType::UInt8,
            MetricValue::UInt16(_) => DataType::UInt16,
            MetricValue::UInt32(_) => DataType::UInt32,
            MetricValue::UInt64(_) => DataType::UInt64,
            MetricValue::Float(_) => DataType::Float,
            MetricValue::Double(_) => DataType::Double,
            MetricValue::Boolean(_) => DataType::Boolean,
            MetricValue::String(_) => DataType::String,
            MetricValue::DateTime(_) => DataType::DateTime,
            MetricValue::Text(_) => DataType::Text,
            MetricValue::Uuid(_) => DataType::Uuid,
            MetricValue::DataSet(_) => DataType::DataSet,
            MetricValue::Bytes(_) => DataType::Bytes,
            MetricValue::File(_) => DataType::File,
            MetricValue::Template(_) => DataType::Template,
            MetricValue::Int8Array(_) => DataType::Int8Array,
            MetricValue::Int16Array(_) => DataType::Int16Array,
            MetricValue::Int32Array(_) => DataType::Int32Array,
            MetricValue::Int64Array(_) => DataType::Int64Array,
            MetricValue::UInt8Array(_) => DataType::UInt8Array,
            MetricValue::UInt16Array(_) => DataType::UInt16Array,
            MetricValue::UInt32Array(_) => DataType::UInt32Array,
            MetricValue::UInt64Array(_) => DataType::UInt64Array,
            MetricValue::FloatArray(_) => DataType::FloatArray,
            MetricValue::DoubleArray(_) => DataType::DoubleArray,
            MetricValue::BooleanArray(_) => DataType::BooleanArray,
            MetricValue::StringArray(_) => DataType::StringArray,
            MetricValue::DateTimeArray(_) => DataType::DateTimeArray,
        }
    }

    /// Decodes the wire value of a metric declared as `datatype`.
    pub fn from_proto(
        datatype: DataType,
        value: &metric::Value,
    ) -> Result<MetricValue, ValueError> {
        use metric::Value as W;
        let mismatch = || ValueError::TypeMismatch {
            datatype,
            found: carrier_name(value),
        };
        let out_of_range = |v: u64| ValueError::OutOfRange {
            datatype,
            value: v.to_string(),
        };
        let int_carrier = || match *value {
            W::IntValue(v) => Ok((u64::from(v), 32)),
            W::LongValue(v) => Ok((v, 64)),
            _ => Err(mismatch()),
        };
        let signed = |bits: u32| -> Result<i64, ValueError> {
            let (c, cb) = int_carrier()?;
            signed_from(c, cb, bits).ok_or_else(|| out_of_range(c))
        };
        let unsigned = |bits: u32| -> Result<u64, ValueError> {
            let (c, _) = int_carrier()?;
            unsigned_from(c, bits).ok_or_else(|| out_of_range(c))
        };
        let string = || match value {
            W::StringValue(s) => Ok(s.clone()),
            _ => Err(mismatch()),
        };
        let bytes = || match value {
            W::BytesValue(b) => Ok(b.as_slice()),
            _ => Err(mismatch()),
        };
        // The `as` casts below are exact: `signed_from`/`unsigned_from` checked the width.
        Ok(match datatype {
            DataType::Int8 => MetricValue::Int8(signed(8)? as i8),
            DataType::Int16 => MetricValue::Int16(signed(16)? as i16),
            DataType::Int32 => MetricValue::Int32(signed(32)? as i32),
            DataType::Int64 => MetricValue::Int64(signed(64)?),
            DataType::UInt8 => MetricValue::UInt8(unsigned(8)? as u8),
            DataType::UInt16 => MetricValue::UInt16(unsigned(16)? as u16),
            DataType::UInt32 => MetricValue::UInt32(unsigned(32)? as u32),
            DataType::UInt64 => MetricValue::UInt64(unsigned(64)?),
            DataType::DateTime => MetricValue::DateTime(unsigned(64)?),
            DataType::Float => match *value {
                W::FloatValue(f) => MetricValue::Float(f),
                _ => return Err(mismatch()),
            },
            DataType::Double => match *value {
                W::DoubleValue(f) => MetricValue::Double(f),
                // Some encoders send a Double in float_value; widening is exact.
                W::FloatValue(f) => MetricValue::Double(f64::from(f)),
                _ => return Err(mismatch()),
            },
            DataType::Boolean => match *value {
                W::BooleanValue(b) => MetricValue::Boolean(b),
                _ => return Err(mismatch()),
            },
            DataType::String => MetricValue::String(string()?),
            DataType::Text => MetricValue::Text(string()?),
            DataType::Uuid => MetricValue::Uuid(string()?),
            DataType::Bytes => MetricValue::Bytes(bytes()?.to_vec()),
            DataType::File => MetricValue::File(bytes()?.to_vec()),
            DataType::DataSet => match value {
                W::DatasetValue(ds) => MetricValue::DataSet(DataSet::from_proto(ds)?),
                _ => return Err(mismatch()),
            },
            DataType::Template => match value {
                W::TemplateValue(t) => MetricValue::Template(t.clone()),
                _ => return Err(mismatch()),
            },
            DataType::Int8Array => MetricValue::Int8Array(le_array!(datatype, bytes()?, i8, 1)),
            DataType::Int16Array => MetricValue::Int16Array(le_array!(datatype, bytes()?, i16, 2)),
            DataType::Int32Array => MetricValue::Int32Array(le_array!(datatype, bytes()?, i32, 4)),
            DataType::Int64Array => MetricValue::Int64Array(le_array!(datatype, bytes()?, i64, 8)),
            DataType::UInt8Array => MetricValue::UInt8Array(bytes()?.to_vec()),
            DataType::UInt16Array => {
                MetricValue::UInt16Array(le_array!(datatype, bytes()?, u16, 2))
            }
            DataType::UInt32Array => {
                MetricValue::UInt32Array(le_array!(datatype, bytes()?, u32, 4))
            }
            DataType::UInt64Array => {
                MetricValue::UInt64Array(le_array!(datatype, bytes()?, u64, 8))
            }
            DataType::FloatArray => MetricValue::FloatArray(le_array!(datatype, bytes()?, f32, 4)),
            DataType::DoubleArray => {
                MetricValue::DoubleArray(le_array!(datatype, bytes()?, f64, 8))
            }
            DataType::BooleanArray => MetricValue::BooleanArray(decode_bool_array(bytes()?)?),
            DataType::StringArray => MetricValue::StringArray(decode_string_array(bytes()?)?),
            DataType::DateTimeArray => {
                MetricValue::DateTimeArray(le_array!(datatype, bytes()?, u64, 8))
            }
            DataType::Unknown | DataType::PropertySet | DataType::PropertySetList => {
                return Err(ValueError::NotAMetricType(datatype))
            }
        })
    }

    /// The wire value (the datatype goes in `Metric.datatype`: see [`MetricValue::datatype`]).
    pub fn to_proto(&self) -> metric::Value {
        use metric::Value as W;
        match self {
            // Two's complement in the type's own width, zero-extended (see the module docs).
            MetricValue::Int8(v) => W::IntValue(u32::from(*v as u8)),
            MetricValue::Int16(v) => W::IntValue(u32::from(*v as u16)),
            MetricValue::Int32(v) => W::IntValue(*v as u32),
            MetricValue::Int64(v) => W::LongValue(*v as u64),
            MetricValue::UInt8(v) => W::IntValue(u32::from(*v)),
            MetricValue::UInt16(v) => W::IntValue(u32::from(*v)),
            MetricValue::UInt32(v) => W::IntValue(*v),
            MetricValue::UInt64(v) | MetricValue::DateTime(v) => W::LongValue(*v),
            MetricValue::Float(v) => W::FloatValue(*v),
            MetricValue::Double(v) => W::DoubleValue(*v),
            MetricValue::Boolean(v) => W::BooleanValue(*v),
            MetricValue::String(s) | MetricValue::Text(s) | MetricValue::Uuid(s) => {
                W::StringValue(s.clone())
            }
            MetricValue::DataSet(ds) => W::DatasetValue(ds.to_proto()),
            MetricValue::Bytes(b) | MetricValue::File(b) | MetricValue::UInt8Array(b) => {
                W::BytesValue(b.clone())
            }
            MetricValue::Template(t) => W::TemplateValue(t.clone()),
            MetricValue::Int8Array(v) => W::BytesValue(v.iter().map(|x| *x as u8).collect()),
            MetricValue::Int16Array(v) => W::BytesValue(le_bytes(v, |x| x.to_le_bytes())),
            MetricValue::Int32Array(v) => W::BytesValue(le_bytes(v, |x| x.to_le_bytes())),
            MetricValue::Int64Array(v) => W::BytesValue(le_bytes(v, |x| x.to_le_bytes())),
            MetricValue::UInt16Array(v) => W::BytesValue(le_bytes(v, |x| x.to_le_bytes())),
            MetricValue::UInt32Array(v) => W::BytesValue(le_bytes(v, |x| x.to_le_bytes())),
            MetricValue::UInt64Array(v) | MetricValue::DateTimeArray(v) => {
                W::BytesValue(le_bytes(v, |x| x.to_le_bytes()))
            }
            MetricValue::FloatArray(v) => W::BytesValue(le_bytes(v, |x| x.to_le_bytes())),
            MetricValue::DoubleArray(v) => W::BytesValue(le_bytes(v, |x| x.to_le_bytes())),
            MetricValue::BooleanArray(v) => W::BytesValue(encode_bool_array(v)),
            MetricValue::StringArray(v) => W::BytesValue(encode_string_array(v)),
        }
    }

    /// The tag value of a scalar metric value (`None` for every other kind).
    fn scalar_value(&self) -> Option<Value> {
        Some(match self {
            MetricValue::Int8(v) => Value::Int(i64::from(*v)),
            MetricValue::Int16(v) => Value::Int(i64::from(*v)),
            MetricValue::Int32(v) => Value::Int(i64::from(*v)),
            MetricValue::Int64(v) => Value::Int(*v),
            MetricValue::UInt8(v) => Value::Int(i64::from(*v)),
            MetricValue::UInt16(v) => Value::Int(i64::from(*v)),
            MetricValue::UInt32(v) => Value::Int(i64::from(*v)),
            MetricValue::UInt64(v) | MetricValue::DateTime(v) => Value::from_u64(*v),
            MetricValue::Float(v) => Value::Float(f32_as_f64(*v)),
            MetricValue::Double(v) => Value::Float(*v),
            MetricValue::Boolean(v) => Value::Bool(*v),
            MetricValue::String(s) | MetricValue::Text(s) | MetricValue::Uuid(s) => {
                Value::String(Arc::from(s.as_str()))
            }
            _ => return None,
        })
    }

    /// The tag value for this metric value, `Ok(None)` when it has none (Bytes, File, a Template
    /// definition), an error when an array or DataSet is over the core's size limits: see the
    /// module docs for the mapping.
    pub fn to_value(&self) -> Result<Option<Value>, ValueError> {
        let too_large = |error| ValueError::TooLarge {
            datatype: self.datatype(),
            error,
        };
        let ints = |v: Vec<i64>| Array::from_ints(v).map(Value::array).map_err(too_large);
        Ok(Some(match self {
            MetricValue::Bytes(_) | MetricValue::File(_) => return Ok(None),
            MetricValue::Template(t) if t.is_definition == Some(true) => return Ok(None),
            MetricValue::Template(_) => Value::String(Arc::from(self.to_json().to_string())),
            MetricValue::DataSet(ds) => Value::dataset(ds.to_core().map_err(too_large)?),
            MetricValue::Int8Array(v) => ints(v.iter().map(|x| i64::from(*x)).collect())?,
            MetricValue::Int16Array(v) => ints(v.iter().map(|x| i64::from(*x)).collect())?,
            MetricValue::Int32Array(v) => ints(v.iter().map(|x| i64::from(*x)).collect())?,
            MetricValue::Int64Array(v) => ints(v.clone())?,
            MetricValue::UInt8Array(v) => ints(v.iter().map(|x| i64::from(*x)).collect())?,
            MetricValue::UInt16Array(v) => ints(v.iter().map(|x| i64::from(*x)).collect())?,
            MetricValue::UInt32Array(v) => ints(v.iter().map(|x| i64::from(*x)).collect())?,
            MetricValue::UInt64Array(v) | MetricValue::DateTimeArray(v) => {
                Value::array(Array::from_u64s(v.clone()).map_err(too_large)?)
            }
            MetricValue::FloatArray(v) => Value::array(
                Array::from_floats(v.iter().map(|x| f32_as_f64(*x)).collect())
                    .map_err(too_large)?,
            ),
            MetricValue::DoubleArray(v) => {
                Value::array(Array::from_floats(v.clone()).map_err(too_large)?)
            }
            MetricValue::BooleanArray(v) => {
                Value::array(Array::from_bools(v.clone()).map_err(too_large)?)
            }
            MetricValue::StringArray(v) => Value::array(
                Array::from_strings(v.iter().map(|s| Arc::from(s.as_str())).collect())
                    .map_err(too_large)?,
            ),
            scalar => match scalar.scalar_value() {
                Some(v) => v,
                None => return Ok(None),
            },
        }))
    }

    /// A JSON rendering (used for arrays, DataSets and templates as tag values).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            MetricValue::Int8(v) => J::from(*v),
            MetricValue::Int16(v) => J::from(*v),
            MetricValue::Int32(v) => J::from(*v),
            MetricValue::Int64(v) => J::from(*v),
            MetricValue::UInt8(v) => J::from(*v),
            MetricValue::UInt16(v) => J::from(*v),
            MetricValue::UInt32(v) => J::from(*v),
            MetricValue::UInt64(v) | MetricValue::DateTime(v) => J::from(*v),
            MetricValue::Float(v) => J::from(f32_as_f64(*v)),
            MetricValue::Double(v) => J::from(*v),
            MetricValue::Boolean(v) => J::from(*v),
            MetricValue::String(s) | MetricValue::Text(s) | MetricValue::Uuid(s) => {
                J::from(s.as_str())
            }
            MetricValue::Bytes(b) | MetricValue::File(b) => {
                J::from(b.iter().map(|x| format!("{x:02x}")).collect::<String>())
            }
            MetricValue::DataSet(ds) => ds.to_json(),
            MetricValue::Template(t) => template_json(t),
            MetricValue::Int8Array(v) => J::from(v.clone()),
            MetricValue::Int16Array(v) => J::from(v.clone()),
            MetricValue::Int32Array(v) => J::from(v.clone()),
            MetricValue::Int64Array(v) => J::from(v.clone()),
            MetricValue::UInt8Array(v) => J::from(v.clone()),
            MetricValue::UInt16Array(v) => J::from(v.clone()),
            MetricValue::UInt32Array(v) => J::from(v.clone()),
            MetricValue::UInt64Array(v) | MetricValue::DateTimeArray(v) => J::from(v.clone()),
            MetricValue::FloatArray(v) => {
                J::Array(v.iter().map(|x| J::from(f32_as_f64(*x))).collect())
            }
            MetricValue::DoubleArray(v) => J::Array(v.iter().map(|x| J::from(*x)).collect()),
            MetricValue::BooleanArray(v) => J::from(v.clone()),
            MetricValue::StringArray(v) => J::from(v.clone()),
        }
    }

    /// Builds the value to send for a metric declared as `datatype` (commands, edge data) from a
    /// tag value. Integers accept `Int`, integral `Float` and `Bool` (0/1) within the type's range;
    /// floats accept any number; Boolean accepts `Bool` or `Int` 0/1; the string types accept
    /// `String`; DateTime accepts non-negative `Int` milliseconds. An array type accepts an array
    /// value whose every element its element type accepts (an error names the first that does
    /// not); DataSet accepts a DataSet value ([`DataSet::from_core`]). Templates, Bytes and
    /// Files cannot be built from a tag value.
    pub fn from_value(datatype: DataType, value: &Value) -> Result<MetricValue, ValueError> {
        let unsupported = || ValueError::Unsupported {
            datatype,
            found: value.kind(),
        };
        let out_of_range = || ValueError::OutOfRange {
            datatype,
            value: value.to_string(),
        };
        let int = || -> Result<i128, ValueError> {
            match *value {
                Value::Int(i) => Ok(i128::from(i)),
                Value::U64(u) => Ok(i128::from(u)),
                Value::Bool(b) => Ok(i128::from(b)),
                // 2^64 is exactly representable; anything at or beyond it fits no Sparkplug integer.
                Value::Float(f)
                    if f.is_finite()
                        && f.fract() == 0.0
                        && f.abs() < 18_446_744_073_709_551_616.0 =>
                {
                    Ok(f as i128)
                }
                Value::Float(f) if f.is_finite() && f.fract() != 0.0 => {
                    Err(ValueError::NotIntegral {
                        datatype,
                        value: value.to_string(),
                    })
                }
                Value::Float(_) => Err(out_of_range()),
                Value::Null | Value::String(_) | Value::Array(_) | Value::DataSet(_) => {
                    Err(unsupported())
                }
            }
        };
        let float = || value.as_f64().ok_or_else(unsupported);
        let string = || match value {
            Value::String(s) => Ok(s.to_string()),
            _ => Err(unsupported()),
        };
        macro_rules! ranged {
            ($variant:ident, $ty:ty) => {
                MetricValue::$variant(<$ty>::try_from(int()?).map_err(|_| out_of_range())?)
            };
        }
        // Each element through the scalar rules of the element type.
        macro_rules! array_of {
            ($array:ident, $scalar:ident) => {{
                let Value::Array(a) = value else {
                    return Err(unsupported());
                };
                let mut out = Vec::with_capacity(a.len());
                for e in a.iter() {
                    match MetricValue::from_value(DataType::$scalar, &e)? {
                        MetricValue::$scalar(x) => out.push(x),
                        _ => return Err(unsupported()),
                    }
                }
                MetricValue::$array(out)
            }};
        }
        Ok(match datatype {
            DataType::Int8Array => array_of!(Int8Array, Int8),
            DataType::Int16Array => array_of!(Int16Array, Int16),
            DataType::Int32Array => array_of!(Int32Array, Int32),
            DataType::Int64Array => array_of!(Int64Array, Int64),
            DataType::UInt8Array => array_of!(UInt8Array, UInt8),
            DataType::UInt16Array => array_of!(UInt16Array, UInt16),
            DataType::UInt32Array => array_of!(UInt32Array, UInt32),
            DataType::UInt64Array => array_of!(UInt64Array, UInt64),
            DataType::DateTimeArray => array_of!(DateTimeArray, DateTime),
            DataType::FloatArray => array_of!(FloatArray, Float),
            DataType::DoubleArray => array_of!(DoubleArray, Double),
            DataType::BooleanArray => array_of!(BooleanArray, Boolean),
            DataType::StringArray => array_of!(StringArray, String),
            DataType::DataSet => match value {
                Value::DataSet(d) => MetricValue::DataSet(DataSet::from_core(d)?),
                _ => return Err(unsupported()),
            },
            DataType::Int8 => ranged!(Int8, i8),
            DataType::Int16 => ranged!(Int16, i16),
            DataType::Int32 => ranged!(Int32, i32),
            DataType::Int64 => ranged!(Int64, i64),
            DataType::UInt8 => ranged!(UInt8, u8),
            DataType::UInt16 => ranged!(UInt16, u16),
            DataType::UInt32 => ranged!(UInt32, u32),
            DataType::UInt64 => ranged!(UInt64, u64),
            DataType::DateTime => ranged!(DateTime, u64),
            DataType::Float => {
                let f = float()?;
                let narrow = f as f32;
                if f.is_finite() && !narrow.is_finite() {
                    return Err(out_of_range());
                }
                MetricValue::Float(narrow)
            }
            DataType::Double => MetricValue::Double(float()?),
            DataType::Boolean => match *value {
                Value::Bool(b) => MetricValue::Boolean(b),
                Value::Int(0) => MetricValue::Boolean(false),
                Value::Int(1) => MetricValue::Boolean(true),
                Value::Int(_) | Value::U64(_) => return Err(out_of_range()),
                _ => return Err(unsupported()),
            },
            DataType::String => MetricValue::String(string()?),
            DataType::Text => MetricValue::Text(string()?),
            DataType::Uuid => MetricValue::Uuid(string()?),
            _ => return Err(unsupported()),
        })
    }
}

/// `{"template_ref": …, "version": …, "metrics": {name: value, …}}` for an instance; member
/// metrics that cannot be decoded render as `null`.
fn template_json(t: &Template) -> serde_json::Value {
    let mut metrics = serde_json::Map::new();
    for (i, m) in t.metrics.iter().enumerate() {
        let name = m.name.clone().unwrap_or_else(|| format!("#{i}"));
        let v = decode_metric_value(m)
            .ok()
            .flatten()
            .map_or(serde_json::Value::Null, |v| v.to_json());
        metrics.insert(name, v);
    }
    let mut obj = serde_json::Map::new();
    if let Some(r) = &t.template_ref {
        obj.insert("template_ref".into(), r.as_str().into());
    }
    if let Some(v) = &t.version {
        obj.insert("version".into(), v.as_str().into());
    }
    obj.insert("metrics".into(), serde_json::Value::Object(metrics));
    serde_json::Value::Object(obj)
}

/// Decodes a metric that carries its own datatype: `Ok(None)` when it is null.
pub fn decode_metric_value(m: &payload::Metric) -> Result<Option<MetricValue>, ValueError> {
    let raw = m.datatype.ok_or(ValueError::MissingDataType)?;
    let dt = DataType::from_u32(raw).ok_or(ValueError::UnknownDataType(raw))?;
    decode_typed(dt, m)
}

/// Decodes a metric's value given its (birth-declared) datatype: `Ok(None)` when it is null.
pub fn decode_typed(
    datatype: DataType,
    m: &payload::Metric,
) -> Result<Option<MetricValue>, ValueError> {
    if m.is_null == Some(true) {
        return Ok(None);
    }
    match &m.value {
        None => Err(ValueError::MissingValue { datatype }),
        Some(v) => MetricValue::from_proto(datatype, v).map(Some),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(v: MetricValue) {
        let dt = v.datatype();
        let wire = v.to_proto();
        let back = MetricValue::from_proto(dt, &wire).expect("decodes");
        assert_eq!(back, v, "{dt}");
    }

    #[test]
    fn negative_small_ints_accept_both_encodings() {
        use metric::Value::IntValue;
        assert_eq!(MetricValue::Int8(-1).to_proto(), IntValue(255));
        assert_eq!(MetricValue::Int16(-87).to_proto(), IntValue(0xFFA9));
        assert_eq!(
            MetricValue::from_proto(DataType::Int8, &IntValue(255)),
            Ok(MetricValue::Int8(-1))
        );
        assert_eq!(
            MetricValue::from_proto(DataType::Int8, &IntValue(0xFFFF_FFFF)),
            Ok(MetricValue::Int8(-1))
        );
        assert_eq!(
            MetricValue::from_proto(DataType::Int16, &IntValue(0xFFFF_FFA9)),
            Ok(MetricValue::Int16(-87))
        );
        // 0x1FF is neither form of an 8-bit number.
        assert!(matches!(
            MetricValue::from_proto(DataType::Int8, &IntValue(0x1FF)),
            Err(ValueError::OutOfRange { .. })
        ));
        // Sign-extended but with a positive low byte: not a valid encoding either.
        assert!(matches!(
            MetricValue::from_proto(DataType::Int8, &IntValue(0xFFFF_FF05)),
            Err(ValueError::OutOfRange { .. })
        ));
        assert!(matches!(
            MetricValue::from_proto(DataType::UInt8, &IntValue(256)),
            Err(ValueError::OutOfRange { .. })
        ));
        assert_eq!(
            MetricValue::from_proto(DataType::Int64, &metric::Value::LongValue(u64::MAX)),
            Ok(MetricValue::Int64(-1))
        );
    }

    #[test]
    fn arrays_match_the_specification_examples() {
        // Sparkplug 3.0 §6.4.16 examples (integer, boolean and string arrays).
        let cases: Vec<(MetricValue, Vec<u8>)> = vec![
            (MetricValue::Int8Array(vec![-23, 123]), vec![0xE9, 0x7B]),
            (
                MetricValue::Int16Array(vec![-30000, 30000]),
                vec![0xD0, 0x8A, 0x30, 0x75],
            ),
            (
                MetricValue::Int32Array(vec![-1, 315338746]),
                vec![0xFF, 0xFF, 0xFF, 0xFF, 0xFA, 0xAF, 0xCB, 0x12],
            ),
            (
                MetricValue::Int64Array(vec![-4270929666821191986, -3601064768563266876]),
                vec![
                    0xCE, 0x06, 0x72, 0xAC, 0x18, 0x9C, 0xBA, 0xC4, 0xC4, 0xBA, 0x9C, 0x18, 0xAC,
                    0x72, 0x06, 0xCE,
                ],
            ),
            (MetricValue::UInt8Array(vec![23, 250]), vec![0x17, 0xFA]),
            (
                MetricValue::UInt16Array(vec![30, 52360]),
                vec![0x1E, 0x00, 0x88, 0xCC],
            ),
            (
                MetricValue::UInt32Array(vec![52, 3293969225]),
                vec![0x34, 0x00, 0x00, 0x00, 0x49, 0xFB, 0x55, 0xC4],
            ),
            (
                MetricValue::UInt64Array(vec![52, 16444743074749521625]),
                vec![
                    0x34, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xD9, 0x9E, 0x02, 0xD1, 0xB2,
                    0x76, 0x37, 0xE4,
                ],
            ),
            (
                MetricValue::BooleanArray(vec![
                    false, false, true, true, false, true, false, false, true, true, false, true,
                ]),
                vec![0x0C, 0x00, 0x00, 0x00, 0x34, 0xD0],
            ),
            (
                MetricValue::StringArray(vec!["ABC".into(), "hello".into()]),
                vec![0x41, 0x42, 0x43, 0x00, 0x68, 0x65, 0x6c, 0x6c, 0x6f, 0x00],
            ),
            (
                MetricValue::DateTimeArray(vec![1256102875335, 1656107875000]),
                [
                    1256102875335u64.to_le_bytes(),
                    1656107875000u64.to_le_bytes(),
                ]
                .concat(),
            ),
            (
                MetricValue::FloatArray(vec![1.23, 89.341]),
                [1.23f32.to_le_bytes(), 89.341f32.to_le_bytes()].concat(),
            ),
        ];
        for (v, bytes) in cases {
            assert_eq!(
                v.to_proto(),
                metric::Value::BytesValue(bytes.clone()),
                "{}",
                v.datatype()
            );
            assert_eq!(
                MetricValue::from_proto(v.datatype(), &metric::Value::BytesValue(bytes)),
                Ok(v.clone())
            );
            roundtrip(v);
        }
        // The spec's Int8 example prints -23 as 0xEF, which is wrong (-23 is 0xE9); we follow
        // two's complement, as every implementation does.
        assert_eq!((-23i8) as u8, 0xE9);
    }

    #[test]
    fn malformed_arrays_are_errors() {
        let b = |v: Vec<u8>| metric::Value::BytesValue(v);
        assert!(matches!(
            MetricValue::from_proto(DataType::Int32Array, &b(vec![1, 2, 3])),
            Err(ValueError::BadArray { .. })
        ));
        // A count claiming 4 billion booleans in two bytes: rejected before any allocation.
        assert!(matches!(
            MetricValue::from_proto(
                DataType::BooleanArray,
                &b(vec![0xFF, 0xFF, 0xFF, 0xFF, 1, 2])
            ),
            Err(ValueError::BadArray { .. })
        ));
        assert!(matches!(
            MetricValue::from_proto(DataType::BooleanArray, &b(vec![1, 0])),
            Err(ValueError::BadArray { .. })
        ));
        assert!(matches!(
            MetricValue::from_proto(DataType::StringArray, &b(b"abc".to_vec())),
            Err(ValueError::BadArray { .. })
        ));
        assert!(matches!(
            MetricValue::from_proto(DataType::StringArray, &b(vec![0xFF, 0])),
            Err(ValueError::BadArray { .. })
        ));
        assert_eq!(
            MetricValue::from_proto(DataType::StringArray, &b(vec![])),
            Ok(MetricValue::StringArray(vec![]))
        );
        assert!(matches!(
            MetricValue::from_proto(DataType::Int32, &b(vec![])),
            Err(ValueError::TypeMismatch { .. })
        ));
        assert!(matches!(
            MetricValue::from_proto(DataType::PropertySet, &b(vec![])),
            Err(ValueError::NotAMetricType(DataType::PropertySet))
        ));
    }

    #[test]
    fn value_roundtrip_for_every_scalar_datatype() {
        let cases = [
            (MetricValue::Int8(-128), Value::Int(-128)),
            (MetricValue::Int8(127), Value::Int(127)),
            (MetricValue::Int16(-32768), Value::Int(-32768)),
            (
                MetricValue::Int32(i32::MIN),
                Value::Int(i64::from(i32::MIN)),
            ),
            (MetricValue::Int64(i64::MIN), Value::Int(i64::MIN)),
            (MetricValue::UInt8(255), Value::Int(255)),
            (MetricValue::UInt16(65535), Value::Int(65535)),
            (
                MetricValue::UInt32(u32::MAX),
                Value::Int(i64::from(u32::MAX)),
            ),
            (MetricValue::UInt64(1 << 40), Value::Int(1 << 40)),
            (MetricValue::Float(1.5), Value::Float(1.5)),
            (MetricValue::Double(-2.25e300), Value::Float(-2.25e300)),
            (MetricValue::Boolean(true), Value::Bool(true)),
            (MetricValue::Boolean(false), Value::Bool(false)),
            (
                MetricValue::String("héllo".into()),
                Value::String("héllo".into()),
            ),
            (
                MetricValue::DateTime(1_700_000_000_123),
                Value::Int(1_700_000_000_123),
            ),
            (
                MetricValue::Text("a\nb".into()),
                Value::String("a\nb".into()),
            ),
            (
                MetricValue::Uuid("123e4567-e89b-12d3-a456-426614174000".into()),
                Value::String("123e4567-e89b-12d3-a456-426614174000".into()),
            ),
        ];
        for (mv, value) in cases {
            let dt = mv.datatype();
            // Through the protobuf bytes of a whole metric.
            let metric = payload::Metric {
                name: Some("m".into()),
                datatype: Some(dt.as_u32()),
                value: Some(mv.to_proto()),
                ..Default::default()
            };
            let bytes = prost::Message::encode_to_vec(&metric);
            let decoded: payload::Metric =
                prost::Message::decode(bytes.as_slice()).expect("decodes");
            let back = decode_metric_value(&decoded)
                .expect("valid")
                .expect("not null");
            assert_eq!(back, mv, "{dt}");
            assert_eq!(back.to_value(), Ok(Some(value.clone())), "{dt}");
            assert_eq!(MetricValue::from_value(dt, &value), Ok(mv.clone()), "{dt}");
        }
    }

    #[test]
    fn floats_widen_to_their_shortest_decimal() {
        for x in [
            0.1f32,
            1.23,
            -89.341,
            f32::MAX,
            f32::MIN_POSITIVE,
            1e-45,
            3.0e38,
        ] {
            let Ok(Some(Value::Float(wide))) = MetricValue::Float(x).to_value() else {
                panic!("float maps to Value::Float");
            };
            assert_eq!(wide.to_string(), x.to_string());
            assert_eq!(wide as f32, x);
            assert_eq!(
                MetricValue::from_value(DataType::Float, &Value::Float(wide)),
                Ok(MetricValue::Float(x))
            );
        }
        assert_eq!(
            MetricValue::Float(0.1).to_value(),
            Ok(Some(Value::Float(0.1)))
        );
        let Ok(Some(Value::Float(nan))) = MetricValue::Float(f32::NAN).to_value() else {
            panic!("float maps to Value::Float");
        };
        assert!(nan.is_nan());
    }

    #[test]
    fn from_value_checks_ranges_and_kinds() {
        assert!(matches!(
            MetricValue::from_value(DataType::Int8, &Value::Int(128)),
            Err(ValueError::OutOfRange { .. })
        ));
        assert!(matches!(
            MetricValue::from_value(DataType::UInt32, &Value::Int(-1)),
            Err(ValueError::OutOfRange { .. })
        ));
        assert_eq!(
            MetricValue::from_value(DataType::UInt64, &Value::Float(3.0)),
            Ok(MetricValue::UInt64(3))
        );
        assert_eq!(
            MetricValue::from_value(DataType::Int16, &Value::Float(3.5)).map_err(|e| e.to_string()),
            Err("Int16 takes whole numbers, not 3.5".to_owned())
        );
        assert!(matches!(
            MetricValue::from_value(DataType::Int32, &Value::Float(1e300)),
            Err(ValueError::OutOfRange { .. })
        ));
        assert!(matches!(
            MetricValue::from_value(DataType::Float, &Value::Float(1e300)),
            Err(ValueError::OutOfRange { .. })
        ));
        assert!(matches!(
            MetricValue::from_value(DataType::Boolean, &Value::Int(2)),
            Err(ValueError::OutOfRange { .. })
        ));
        assert!(matches!(
            MetricValue::from_value(DataType::String, &Value::Int(2)),
            Err(ValueError::Unsupported { .. })
        ));
        assert!(matches!(
            MetricValue::from_value(DataType::Int32Array, &Value::Int(2)),
            Err(ValueError::Unsupported { .. })
        ));
        assert!(matches!(
            MetricValue::from_value(DataType::Int32, &Value::Null),
            Err(ValueError::Unsupported { .. })
        ));
    }

    /// Every array datatype: the spec's packed bytes ⇄ the typed array value, exactly.
    #[test]
    fn arrays_map_to_array_values_exactly() {
        let ints = |v: &[i64]| Value::array(Array::from_ints(v.to_vec()).expect("small"));
        let cases: Vec<(MetricValue, Value)> = vec![
            (MetricValue::Int8Array(vec![-128, 127]), ints(&[-128, 127])),
            (
                MetricValue::Int16Array(vec![-30000, 30000]),
                ints(&[-30000, 30000]),
            ),
            (
                MetricValue::Int32Array(vec![i32::MIN, 315338746]),
                ints(&[i64::from(i32::MIN), 315338746]),
            ),
            (
                MetricValue::Int64Array(vec![i64::MIN, -3601064768563266876]),
                ints(&[i64::MIN, -3601064768563266876]),
            ),
            (MetricValue::UInt8Array(vec![0, 255]), ints(&[0, 255])),
            (
                MetricValue::UInt16Array(vec![30, 65535]),
                ints(&[30, 65535]),
            ),
            (
                MetricValue::UInt32Array(vec![52, u32::MAX]),
                ints(&[52, i64::from(u32::MAX)]),
            ),
            (
                MetricValue::UInt64Array(vec![52, 1 << 40]),
                ints(&[52, 1 << 40]),
            ),
            (
                MetricValue::UInt64Array(vec![52, 16444743074749521625]),
                Value::array(Array::from_u64s(vec![52, 16444743074749521625]).expect("small")),
            ),
            (
                MetricValue::DateTimeArray(vec![1256102875335, 1656107875000]),
                ints(&[1256102875335, 1656107875000]),
            ),
            (
                MetricValue::FloatArray(vec![1.23, -89.341, f32::MAX]),
                Value::array(Array::from_floats(vec![1.23, -89.341, 3.4028235e38]).expect("small")),
            ),
            (
                MetricValue::DoubleArray(vec![-2.25e300, 0.1]),
                Value::array(Array::from_floats(vec![-2.25e300, 0.1]).expect("small")),
            ),
            (
                MetricValue::BooleanArray(vec![true, false, false, true, true]),
                Value::array(
                    Array::from_bools(vec![true, false, false, true, true]).expect("small"),
                ),
            ),
            (
                MetricValue::StringArray(vec!["ABC".into(), "".into(), "héllo".into()]),
                Value::array(
                    Array::from_strings(vec!["ABC".into(), "".into(), "héllo".into()])
                        .expect("small"),
                ),
            ),
            (
                MetricValue::FloatArray(vec![]),
                Value::array(Array::from_floats(vec![]).expect("empty")),
            ),
        ];
        for (mv, value) in cases {
            let dt = mv.datatype();
            assert_eq!(value.value_type(), Some(dt.value_type()), "{dt}");
            // Wire bytes → metric value → tag value.
            let back = MetricValue::from_proto(dt, &mv.to_proto()).expect("decodes");
            assert_eq!(back.to_value(), Ok(Some(value.clone())), "{dt}");
            // Tag value → metric value → the same wire bytes.
            let built = MetricValue::from_value(dt, &value).expect("encodes");
            assert_eq!(built, mv, "{dt}");
            assert_eq!(built.to_proto(), mv.to_proto(), "{dt}");
        }
    }

    #[test]
    fn array_values_are_checked_element_by_element() {
        let ints = |v: &[i64]| Value::array(Array::from_ints(v.to_vec()).expect("small"));
        assert_eq!(
            MetricValue::from_value(DataType::Int8Array, &ints(&[1, 128]))
                .map_err(|e| e.to_string()),
            Err("value 128 is out of range for Int8".to_owned())
        );
        assert!(matches!(
            MetricValue::from_value(DataType::UInt32Array, &ints(&[-1])),
            Err(ValueError::OutOfRange { .. })
        ));
        // A scalar is not an array, and an array is not a scalar.
        assert!(matches!(
            MetricValue::from_value(DataType::Int32Array, &Value::Int(2)),
            Err(ValueError::Unsupported { .. })
        ));
        assert!(matches!(
            MetricValue::from_value(DataType::Int32, &ints(&[2])),
            Err(ValueError::Unsupported { .. })
        ));
        let strings = Value::array(Array::from_strings(vec!["a".into()]).expect("small"));
        assert!(matches!(
            MetricValue::from_value(DataType::FloatArray, &strings),
            Err(ValueError::Unsupported { .. })
        ));
        // Integral floats are accepted by integer arrays, like scalars.
        let floats = Value::array(Array::from_floats(vec![3.0]).expect("small"));
        assert_eq!(
            MetricValue::from_value(DataType::Int16Array, &floats),
            Ok(MetricValue::Int16Array(vec![3]))
        );
        // Over the core's element limit: an error, not a truncated array.
        let huge = MetricValue::UInt8Array(vec![0; ironplant_core::MAX_ELEMENTS + 1]);
        assert!(matches!(
            huge.to_value(),
            Err(ValueError::TooLarge {
                datatype: DataType::UInt8Array,
                ..
            })
        ));
    }

    #[test]
    fn datasets_and_templates_map_to_tag_values() {
        assert_eq!(MetricValue::Bytes(vec![1, 2]).to_value(), Ok(None));
        assert_eq!(MetricValue::File(vec![1, 2]).to_value(), Ok(None));

        let ds = DataSet::new(
            vec!["a".into(), "b".into(), "c".into()],
            vec![DataType::Int32, DataType::String, DataType::Float],
            vec![
                vec![
                    Some(MetricValue::Int32(-5)),
                    Some(MetricValue::String("x".into())),
                    Some(MetricValue::Float(1.23)),
                ],
                vec![None, Some(MetricValue::String("y".into())), None],
            ],
        )
        .expect("valid");
        let mv = MetricValue::DataSet(ds.clone());
        let expected = ironplant_core::DataSet::new(
            vec!["a".into(), "b".into(), "c".into()],
            vec![ScalarType::Int, ScalarType::String, ScalarType::Float],
            vec![
                vec![
                    Value::Int(-5),
                    Value::String("x".into()),
                    Value::Float(1.23),
                ],
                vec![Value::Null, Value::String("y".into()), Value::Null],
            ],
        )
        .expect("valid");
        assert_eq!(mv.to_value(), Ok(Some(Value::dataset(expected.clone()))));
        assert_eq!(
            DataType::DataSet.value_type(),
            ironplant_core::ValueType::DataSet
        );
        roundtrip(mv);
        // Back to Sparkplug: the same values, in the widest column types.
        let back = DataSet::from_core(&expected).expect("valid");
        assert_eq!(
            back.types(),
            &[DataType::Int64, DataType::String, DataType::Double]
        );
        assert_eq!(
            MetricValue::DataSet(back).to_value(),
            Ok(Some(Value::dataset(expected)))
        );
        let big = ironplant_core::DataSet::new(
            vec!["n".into()],
            vec![ScalarType::Int],
            vec![vec![Value::U64(u64::MAX)], vec![Value::Int(1)]],
        )
        .expect("valid");
        let back = DataSet::from_core(&big).expect("valid");
        assert_eq!(back.types(), &[DataType::UInt64]);
        assert_eq!(back.rows()[0][0], Some(MetricValue::UInt64(u64::MAX)));

        // Templates stay compact JSON strings.
        let instance = Template {
            template_ref: Some("Motor".into()),
            metrics: vec![payload::Metric {
                name: Some("Speed".into()),
                datatype: Some(DataType::Double.as_u32()),
                value: Some(metric::Value::DoubleValue(1.5)),
                ..Default::default()
            }],
            is_definition: Some(false),
            ..Default::default()
        };
        assert_eq!(
            MetricValue::Template(instance.clone()).to_value(),
            Ok(Some(Value::String(
                r#"{"metrics":{"Speed":1.5},"template_ref":"Motor"}"#.into()
            )))
        );
        let definition = Template {
            is_definition: Some(true),
            ..instance
        };
        assert_eq!(MetricValue::Template(definition).to_value(), Ok(None));
    }

    #[test]
    fn datasets_are_validated() {
        let bad_width = payload::DataSet {
            num_of_columns: Some(2),
            columns: vec!["a".into(), "b".into()],
            types: vec![3, 3],
            rows: vec![data_set::Row {
                elements: vec![data_set::DataSetValue {
                    value: Some(data_set::data_set_value::Value::IntValue(1)),
                }],
            }],
        };
        assert!(matches!(
            DataSet::from_proto(&bad_width),
            Err(ValueError::BadDataSet(_))
        ));
        let bad_type = payload::DataSet {
            num_of_columns: Some(1),
            columns: vec!["a".into()],
            types: vec![99],
            rows: vec![],
        };
        assert_eq!(
            DataSet::from_proto(&bad_type),
            Err(ValueError::UnknownDataType(99))
        );
        let bad_count = payload::DataSet {
            num_of_columns: Some(3),
            columns: vec!["a".into()],
            types: vec![3],
            rows: vec![],
        };
        assert!(DataSet::from_proto(&bad_count).is_err());
    }

    #[test]
    fn null_and_missing_values() {
        let null = payload::Metric {
            datatype: Some(DataType::Int32.as_u32()),
            is_null: Some(true),
            ..Default::default()
        };
        assert_eq!(decode_metric_value(&null), Ok(None));
        let missing = payload::Metric {
            datatype: Some(DataType::Int32.as_u32()),
            ..Default::default()
        };
        assert_eq!(
            decode_metric_value(&missing),
            Err(ValueError::MissingValue {
                datatype: DataType::Int32
            })
        );
        let untyped = payload::Metric::default();
        assert_eq!(
            decode_metric_value(&untyped),
            Err(ValueError::MissingDataType)
        );
    }
}
