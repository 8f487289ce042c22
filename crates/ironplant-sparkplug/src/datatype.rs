//! The Sparkplug B `DataType` enumeration with the specification's numeric values.

use std::fmt;

/// A metric's (or property's, or data set column's) declared type, as sent in `Metric.datatype`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum DataType {
    Unknown = 0,
    Int8 = 1,
    Int16 = 2,
    Int32 = 3,
    Int64 = 4,
    UInt8 = 5,
    UInt16 = 6,
    UInt32 = 7,
    UInt64 = 8,
    Float = 9,
    Double = 10,
    Boolean = 11,
    String = 12,
    /// Milliseconds since the Unix epoch (UTC), carried in `long_value`.
    DateTime = 13,
    Text = 14,
    Uuid = 15,
    DataSet = 16,
    Bytes = 17,
    File = 18,
    Template = 19,
    PropertySet = 20,
    PropertySetList = 21,
    Int8Array = 22,
    Int16Array = 23,
    Int32Array = 24,
    Int64Array = 25,
    UInt8Array = 26,
    UInt16Array = 27,
    UInt32Array = 28,
    UInt64Array = 29,
    FloatArray = 30,
    DoubleArray = 31,
    BooleanArray = 32,
    StringArray = 33,
    DateTimeArray = 34,
}

impl DataType {
    /// Every type, in numeric order (index == value).
    pub const ALL: [DataType; 35] = [
        DataType::Unknown,
        DataType::Int8,
        DataType::Int16,
        DataType::Int32,
        DataType::Int64,
        DataType::UInt8,
        DataType::UInt16,
        DataType::UInt32,
        DataType::UInt64,
        DataType::Float,
        DataType::Double,
        DataType::Boolean,
        DataType::String,
        DataType::DateTime,
        DataType::Text,
        DataType::Uuid,
        DataType::DataSet,
        DataType::Bytes,
        DataType::File,
        DataType::Template,
        DataType::PropertySet,
        DataType::PropertySetList,
        DataType::Int8Array,
        DataType::Int16Array,
        DataType::Int32Array,
        DataType::Int64Array,
        DataType::UInt8Array,
        DataType::UInt16Array,
        DataType::UInt32Array,
        DataType::UInt64Array,
        DataType::FloatArray,
        DataType::DoubleArray,
        DataType::BooleanArray,
        DataType::StringArray,
        DataType::DateTimeArray,
    ];

    pub fn from_u32(v: u32) -> Option<DataType> {
        usize::try_from(v)
            .ok()
            .and_then(|i| DataType::ALL.get(i).copied())
    }

    pub fn as_u32(self) -> u32 {
        self as u32
    }

    /// The tag value type of a scalar metric of this type (DataSet columns too): integers and
    /// DateTime are `int`, Float/Double `float`, Boolean `bool`, String/Text/UUID `string`.
    pub fn scalar_type(self) -> Option<ironplant_core::ScalarType> {
        use ironplant_core::ScalarType;
        Some(match self {
            DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64
            | DataType::DateTime => ScalarType::Int,
            DataType::Float | DataType::Double => ScalarType::Float,
            DataType::Boolean => ScalarType::Bool,
            DataType::String | DataType::Text | DataType::Uuid => ScalarType::String,
            _ => return None,
        })
    }

    /// The element type of an array type, as a tag value (`Int8Array` → `int`, …).
    pub fn array_element(self) -> Option<ironplant_core::ScalarType> {
        use ironplant_core::ScalarType;
        Some(match self {
            DataType::Int8Array
            | DataType::Int16Array
            | DataType::Int32Array
            | DataType::Int64Array
            | DataType::UInt8Array
            | DataType::UInt16Array
            | DataType::UInt32Array
            | DataType::UInt64Array
            | DataType::DateTimeArray => ScalarType::Int,
            DataType::FloatArray | DataType::DoubleArray => ScalarType::Float,
            DataType::BooleanArray => ScalarType::Bool,
            DataType::StringArray => ScalarType::String,
            _ => return None,
        })
    }

    /// The type of the tag values a metric of this type becomes (see `MetricValue::to_value`):
    /// scalars as [`DataType::scalar_type`], arrays `array<element>`, DataSet `dataset`;
    /// templates are compact JSON strings. `Bytes`/`File` have no tag value; they are typed
    /// `string` so the tag can still be listed.
    pub fn value_type(self) -> ironplant_core::ValueType {
        use ironplant_core::ValueType;
        if let Some(t) = self.scalar_type() {
            return t.into();
        }
        if let Some(e) = self.array_element() {
            return ValueType::Array(e);
        }
        match self {
            DataType::DataSet => ValueType::DataSet,
            _ => ValueType::String,
        }
    }

    /// Whether a tag value can be written to a metric of this type ([`crate::MetricValue::from_value`]
    /// builds it): the scalar types and the arrays. DataSets (their column types would be
    /// guessed, see `DataSet::from_core`), Templates, Bytes and Files cannot.
    pub fn is_writable(self) -> bool {
        self.scalar_type().is_some() || self.array_element().is_some()
    }

    /// The specification's name, e.g. `Int32`, `UUID`, `DateTimeArray`.
    pub fn name(self) -> &'static str {
        match self {
            DataType::Unknown => "Unknown",
            DataType::Int8 => "Int8",
            DataType::Int16 => "Int16",
            DataType::Int32 => "Int32",
            DataType::Int64 => "Int64",
            DataType::UInt8 => "UInt8",
            DataType::UInt16 => "UInt16",
            DataType::UInt32 => "UInt32",
            DataType::UInt64 => "UInt64",
            DataType::Float => "Float",
            DataType::Double => "Double",
            DataType::Boolean => "Boolean",
            DataType::String => "String",
            DataType::DateTime => "DateTime",
            DataType::Text => "Text",
            DataType::Uuid => "UUID",
            DataType::DataSet => "DataSet",
            DataType::Bytes => "Bytes",
            DataType::File => "File",
            DataType::Template => "Template",
            DataType::PropertySet => "PropertySet",
            DataType::PropertySetList => "PropertySetList",
            DataType::Int8Array => "Int8Array",
            DataType::Int16Array => "Int16Array",
            DataType::Int32Array => "Int32Array",
            DataType::Int64Array => "Int64Array",
            DataType::UInt8Array => "UInt8Array",
            DataType::UInt16Array => "UInt16Array",
            DataType::UInt32Array => "UInt32Array",
            DataType::UInt64Array => "UInt64Array",
            DataType::FloatArray => "FloatArray",
            DataType::DoubleArray => "DoubleArray",
            DataType::BooleanArray => "BooleanArray",
            DataType::StringArray => "StringArray",
            DataType::DateTimeArray => "DateTimeArray",
        }
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_values_match_the_specification() {
        for (i, dt) in DataType::ALL.iter().enumerate() {
            assert_eq!(dt.as_u32() as usize, i, "{dt}");
            assert_eq!(DataType::from_u32(i as u32), Some(*dt));
        }
        assert_eq!(DataType::Int8.as_u32(), 1);
        assert_eq!(DataType::Template.as_u32(), 19);
        assert_eq!(DataType::PropertySetList.as_u32(), 21);
        assert_eq!(DataType::Int8Array.as_u32(), 22);
        assert_eq!(DataType::StringArray.as_u32(), 33);
        assert_eq!(DataType::DateTimeArray.as_u32(), 34);
        assert_eq!(DataType::from_u32(35), None);
        assert_eq!(DataType::from_u32(u32::MAX), None);
    }
}
