//! The Sparkplug B 3.0 protobuf messages (`sparkplug_b.proto`, package `org.eclipse.tahu.protobuf`),
//! written by hand with `prost` derives so the build needs no `protoc` and no build script.
//!
//! Field numbers, wire types and `oneof`s follow the specification's proto file exactly (proto2:
//! every scalar is `optional`, so presence is kept with `Option`, and repeated scalars are not
//! packed). The `extensions N to max` ranges are not modelled: unknown fields are skipped when
//! decoding, as any protobuf decoder does, and are not re-encoded.
//!
//! Decoding is bounded: prost rejects truncated or malformed input with a `DecodeError` and stops
//! nesting (templates inside templates, property sets inside property sets) at depth 100.

/// The top-level message of every Sparkplug B MQTT payload.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Payload {
    /// When the message was published, in milliseconds since the Unix epoch (UTC).
    #[prost(uint64, optional, tag = "1")]
    pub timestamp: Option<u64>,
    #[prost(message, repeated, tag = "2")]
    pub metrics: Vec<payload::Metric>,
    /// 0..=255, incremented by one for every message of an edge node session (not NDEATH/commands).
    #[prost(uint64, optional, tag = "3")]
    pub seq: Option<u64>,
    #[prost(string, optional, tag = "4")]
    pub uuid: Option<String>,
    #[prost(bytes = "vec", optional, tag = "5")]
    pub body: Option<Vec<u8>>,
}

/// The messages nested in `Payload`, as `protoc` would name them.
pub mod payload {
    /// A user-defined type (`DataType::Template`): a definition (in NBIRTH) or an instance.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Template {
        #[prost(string, optional, tag = "1")]
        pub version: Option<String>,
        #[prost(message, repeated, tag = "2")]
        pub metrics: Vec<Metric>,
        #[prost(message, repeated, tag = "3")]
        pub parameters: Vec<template::Parameter>,
        /// For an instance, the name of its definition.
        #[prost(string, optional, tag = "4")]
        pub template_ref: Option<String>,
        #[prost(bool, optional, tag = "5")]
        pub is_definition: Option<bool>,
    }

    pub mod template {
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct Parameter {
            #[prost(string, optional, tag = "1")]
            pub name: Option<String>,
            #[prost(uint32, optional, tag = "2")]
            pub r#type: Option<u32>,
            #[prost(oneof = "parameter::Value", tags = "3, 4, 5, 6, 7, 8, 9")]
            pub value: Option<parameter::Value>,
        }

        pub mod parameter {
            #[derive(Clone, PartialEq, prost::Oneof)]
            pub enum Value {
                #[prost(uint32, tag = "3")]
                IntValue(u32),
                #[prost(uint64, tag = "4")]
                LongValue(u64),
                #[prost(float, tag = "5")]
                FloatValue(f32),
                #[prost(double, tag = "6")]
                DoubleValue(f64),
                #[prost(bool, tag = "7")]
                BooleanValue(bool),
                #[prost(string, tag = "8")]
                StringValue(String),
                #[prost(message, tag = "9")]
                ExtensionValue(ParameterValueExtension),
            }

            /// Only third-party extensions, which are not modelled.
            #[derive(Clone, Copy, PartialEq, prost::Message)]
            pub struct ParameterValueExtension {}
        }
    }

    /// A table (`DataType::DataSet`): column names and types, then rows of cells.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct DataSet {
        #[prost(uint64, optional, tag = "1")]
        pub num_of_columns: Option<u64>,
        #[prost(string, repeated, tag = "2")]
        pub columns: Vec<String>,
        #[prost(uint32, repeated, packed = "false", tag = "3")]
        pub types: Vec<u32>,
        #[prost(message, repeated, tag = "4")]
        pub rows: Vec<data_set::Row>,
    }

    pub mod data_set {
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct DataSetValue {
            #[prost(oneof = "data_set_value::Value", tags = "1, 2, 3, 4, 5, 6, 7")]
            pub value: Option<data_set_value::Value>,
        }

        pub mod data_set_value {
            #[derive(Clone, PartialEq, prost::Oneof)]
            pub enum Value {
                #[prost(uint32, tag = "1")]
                IntValue(u32),
                #[prost(uint64, tag = "2")]
                LongValue(u64),
                #[prost(float, tag = "3")]
                FloatValue(f32),
                #[prost(double, tag = "4")]
                DoubleValue(f64),
                #[prost(bool, tag = "5")]
                BooleanValue(bool),
                #[prost(string, tag = "6")]
                StringValue(String),
                #[prost(message, tag = "7")]
                ExtensionValue(DataSetValueExtension),
            }

            /// Only third-party extensions, which are not modelled.
            #[derive(Clone, Copy, PartialEq, prost::Message)]
            pub struct DataSetValueExtension {}
        }

        #[derive(Clone, PartialEq, prost::Message)]
        pub struct Row {
            #[prost(message, repeated, tag = "1")]
            pub elements: Vec<DataSetValue>,
        }
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PropertyValue {
        #[prost(uint32, optional, tag = "1")]
        pub r#type: Option<u32>,
        #[prost(bool, optional, tag = "2")]
        pub is_null: Option<bool>,
        #[prost(oneof = "property_value::Value", tags = "3, 4, 5, 6, 7, 8, 9, 10, 11")]
        pub value: Option<property_value::Value>,
    }

    pub mod property_value {
        #[derive(Clone, PartialEq, prost::Oneof)]
        pub enum Value {
            #[prost(uint32, tag = "3")]
            IntValue(u32),
            #[prost(uint64, tag = "4")]
            LongValue(u64),
            #[prost(float, tag = "5")]
            FloatValue(f32),
            #[prost(double, tag = "6")]
            DoubleValue(f64),
            #[prost(bool, tag = "7")]
            BooleanValue(bool),
            #[prost(string, tag = "8")]
            StringValue(String),
            #[prost(message, tag = "9")]
            PropertysetValue(super::PropertySet),
            #[prost(message, tag = "10")]
            PropertysetsValue(super::PropertySetList),
            #[prost(message, tag = "11")]
            ExtensionValue(PropertyValueExtension),
        }

        /// Only third-party extensions, which are not modelled.
        #[derive(Clone, Copy, PartialEq, prost::Message)]
        pub struct PropertyValueExtension {}
    }

    /// A map given as two parallel arrays (keys and values of equal length).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PropertySet {
        #[prost(string, repeated, tag = "1")]
        pub keys: Vec<String>,
        #[prost(message, repeated, tag = "2")]
        pub values: Vec<PropertyValue>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PropertySetList {
        #[prost(message, repeated, tag = "1")]
        pub propertyset: Vec<PropertySet>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct MetaData {
        #[prost(bool, optional, tag = "1")]
        pub is_multi_part: Option<bool>,
        #[prost(string, optional, tag = "2")]
        pub content_type: Option<String>,
        #[prost(uint64, optional, tag = "3")]
        pub size: Option<u64>,
        #[prost(uint64, optional, tag = "4")]
        pub seq: Option<u64>,
        #[prost(string, optional, tag = "5")]
        pub file_name: Option<String>,
        #[prost(string, optional, tag = "6")]
        pub file_type: Option<String>,
        #[prost(string, optional, tag = "7")]
        pub md5: Option<String>,
        #[prost(string, optional, tag = "8")]
        pub description: Option<String>,
    }

    /// One tag: a name (births) and/or an alias (data), a datatype (births) and a value.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Metric {
        #[prost(string, optional, tag = "1")]
        pub name: Option<String>,
        #[prost(uint64, optional, tag = "2")]
        pub alias: Option<u64>,
        /// When the value was acquired, in milliseconds since the Unix epoch (UTC).
        #[prost(uint64, optional, tag = "3")]
        pub timestamp: Option<u64>,
        #[prost(uint32, optional, tag = "4")]
        pub datatype: Option<u32>,
        #[prost(bool, optional, tag = "5")]
        pub is_historical: Option<bool>,
        #[prost(bool, optional, tag = "6")]
        pub is_transient: Option<bool>,
        #[prost(bool, optional, tag = "7")]
        pub is_null: Option<bool>,
        #[prost(message, optional, tag = "8")]
        pub metadata: Option<MetaData>,
        #[prost(message, optional, tag = "9")]
        pub properties: Option<PropertySet>,
        #[prost(
            oneof = "metric::Value",
            tags = "10, 11, 12, 13, 14, 15, 16, 17, 18, 19"
        )]
        pub value: Option<metric::Value>,
    }

    pub mod metric {
        #[derive(Clone, PartialEq, prost::Oneof)]
        pub enum Value {
            /// Int8, Int16, Int32, UInt8, UInt16, UInt32.
            #[prost(uint32, tag = "10")]
            IntValue(u32),
            /// Int64, UInt64, DateTime.
            #[prost(uint64, tag = "11")]
            LongValue(u64),
            #[prost(float, tag = "12")]
            FloatValue(f32),
            #[prost(double, tag = "13")]
            DoubleValue(f64),
            #[prost(bool, tag = "14")]
            BooleanValue(bool),
            /// String, Text, UUID.
            #[prost(string, tag = "15")]
            StringValue(String),
            /// Bytes, File and every array type (little-endian packed).
            #[prost(bytes = "vec", tag = "16")]
            BytesValue(Vec<u8>),
            #[prost(message, tag = "17")]
            DatasetValue(super::DataSet),
            #[prost(message, tag = "18")]
            TemplateValue(super::Template),
            #[prost(message, tag = "19")]
            ExtensionValue(MetricValueExtension),
        }

        /// Only third-party extensions, which are not modelled.
        #[derive(Clone, Copy, PartialEq, prost::Message)]
        pub struct MetricValueExtension {}
    }
}

pub use payload::Metric;

impl Payload {
    /// Decodes a payload; any malformed input is an error, never a panic.
    pub fn decode_bytes(bytes: &[u8]) -> Result<Payload, prost::DecodeError> {
        <Payload as prost::Message>::decode(bytes)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        prost::Message::encode_to_vec(self)
    }
}
