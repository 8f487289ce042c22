//! The one wire format of tags, samples and events, at every edge that speaks JSON: REST, the
//! live WebSocket API, UNS payloads on MQTT, events on MQTT, history exports. Everything that
//! leaves Ironplant as JSON is built from these types, so a field has one name everywhere
//! (`ts` is the source timestamp, `server_ts` when Ironplant received it; `quality` is
//! `Good`/`Uncertain`/`Bad` and `quality_reason` is set only when it is not Good).
//!
//! The OpenAPI document served by the API describes exactly these shapes.

use std::sync::Arc;

use serde::de::{self, Deserializer, Visitor};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Serialize, Serializer};

use crate::event::{Event, EventKind, Severity};
use crate::namespace::TagMeta;
use crate::path::TagPath;
use crate::sample::{Quality, QualityLevel, QualityReason, Sample, Timestamp, Value};

/// A value as JSON: null, bool, number (integers exact, u64 too) or string; an array is a JSON
/// array, a DataSet `{"columns":[..],"types":[..],"rows":[[..]]}` (types as in `value_type`).
/// Non-finite floats (NaN, ±inf) have no JSON form and become null, in arrays and cells too.
#[derive(Debug, Clone, Copy)]
pub struct ValueJson<'a>(pub Option<&'a Value>);

impl Serialize for ValueJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            None | Some(Value::Null) => s.serialize_none(),
            Some(Value::Bool(b)) => s.serialize_bool(*b),
            Some(Value::Int(i)) => s.serialize_i64(*i),
            Some(Value::U64(u)) => s.serialize_u64(*u),
            Some(Value::Float(f)) if f.is_finite() => s.serialize_f64(*f),
            Some(Value::Float(_)) => s.serialize_none(),
            Some(Value::String(v)) => s.serialize_str(v),
            Some(Value::Array(a)) => {
                let mut seq = s.serialize_seq(Some(a.len()))?;
                for v in a.iter() {
                    seq.serialize_element(&ValueJson(Some(&v)))?;
                }
                seq.end()
            }
            Some(Value::DataSet(d)) => {
                let mut m = s.serialize_map(Some(3))?;
                m.serialize_entry(
                    "columns",
                    &SeqJson(std::cell::Cell::new(Some(d.columns().iter().map(|c| &**c)))),
                )?;
                m.serialize_entry(
                    "types",
                    &SeqJson(std::cell::Cell::new(Some(
                        d.types().iter().map(|t| t.as_str()),
                    ))),
                )?;
                m.serialize_entry(
                    "rows",
                    &SeqJson(std::cell::Cell::new(Some(d.rows().iter().map(|row| {
                        SeqJson(std::cell::Cell::new(Some(
                            row.iter().map(|c| ValueJson(Some(c))),
                        )))
                    })))),
                )?;
                m.end()
            }
        }
    }
}

/// The level's name: `Good`, `Uncertain` or `Bad`.
pub fn quality_level(q: Quality) -> &'static str {
    match q.level {
        QualityLevel::Good => "Good",
        QualityLevel::Uncertain => "Uncertain",
        QualityLevel::Bad => "Bad",
    }
}

/// `(quality, quality_reason)`; a tag never sampled is `Bad`/`NotConnected` (there is no value to
/// vouch for).
pub fn quality_fields(q: Option<Quality>) -> (&'static str, Option<&'static str>) {
    match q {
        None => ("Bad", Some("NotConnected")),
        Some(q) => (
            quality_level(q),
            (q.level != QualityLevel::Good).then(|| q.reason.as_str()),
        ),
    }
}

/// One sample: what the UNS publishes, what the live API sends, one row of history.
#[derive(Debug, Serialize)]
pub struct SampleJson<'a> {
    /// Omitted where the path is implied (a UNS topic).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<&'a TagPath>,
    pub value: ValueJson<'a>,
    pub quality: &'static str,
    pub quality_reason: Option<&'static str>,
    /// When the value was measured (RFC 3339, µs, UTC).
    pub ts: String,
    /// When Ironplant received it; omitted where only the source time is kept (history).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_ts: Option<String>,
    /// Omitted where the tag's metadata travels separately.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit: Option<&'a str>,
}

impl<'a> SampleJson<'a> {
    pub fn new(path: Option<&'a TagPath>, s: &'a Sample) -> SampleJson<'a> {
        let (quality, quality_reason) = quality_fields(Some(s.quality));
        SampleJson {
            path,
            value: ValueJson(Some(&s.value)),
            quality,
            quality_reason,
            ts: s.source_ts.to_rfc3339(),
            server_ts: Some(s.server_ts.to_rfc3339()),
            unit: None,
        }
    }

    /// A stored sample (history): source time, value and quality only.
    pub fn stored(ts: Timestamp, value: &'a Value, quality: Quality) -> SampleJson<'a> {
        let (quality, quality_reason) = quality_fields(Some(quality));
        SampleJson {
            path: None,
            value: ValueJson(Some(value)),
            quality,
            quality_reason,
            ts: ts.to_rfc3339(),
            server_ts: None,
            unit: None,
        }
    }

    pub fn with_unit(mut self, unit: Option<&'a str>) -> SampleJson<'a> {
        self.unit = unit;
        self
    }
}

/// An engineering range.
#[derive(Debug, Serialize)]
pub struct RangeJson {
    pub min: f64,
    pub max: f64,
}

/// A tag with its metadata and current value (REST `/api/v1/tags`, live snapshots).
#[derive(Debug, Serialize)]
pub struct TagJson<'a> {
    pub path: &'a TagPath,
    pub value: ValueJson<'a>,
    pub value_type: &'static str,
    pub quality: &'static str,
    pub quality_reason: Option<&'static str>,
    pub ts: Option<String>,
    pub server_ts: Option<String>,
    pub unit: Option<&'a str>,
    pub description: &'a str,
    pub range: Option<RangeJson>,
    pub writable: bool,
    pub device: Option<&'a str>,
}

impl<'a> TagJson<'a> {
    pub fn new(meta: &'a TagMeta, sample: Option<&'a Sample>) -> TagJson<'a> {
        let (quality, quality_reason) = quality_fields(sample.map(|s| s.quality));
        TagJson {
            path: &meta.path,
            value: ValueJson(sample.map(|s| &s.value)),
            value_type: meta.value_type.as_str(),
            quality,
            quality_reason,
            ts: sample.map(|s| s.source_ts.to_rfc3339()),
            server_ts: sample.map(|s| s.server_ts.to_rfc3339()),
            unit: meta.unit.as_deref(),
            description: &meta.description,
            range: meta.range.map(|(min, max)| RangeJson { min, max }),
            writable: meta.writable,
            device: meta.device.as_deref(),
        }
    }
}

/// An event (REST `/api/v1/events`, the live API, MQTT `<events prefix>/<kind>/...`).
#[derive(Debug, Serialize)]
pub struct EventJson<'a> {
    pub ts: String,
    pub kind: &'static str,
    pub code: &'a str,
    pub severity: &'static str,
    pub subject: Option<&'a TagPath>,
    pub source: &'a str,
    pub actor: Option<&'a str>,
    pub message: &'a str,
    pub attributes: AttributesJson<'a>,
}

impl<'a> EventJson<'a> {
    pub fn new(e: &'a Event) -> EventJson<'a> {
        EventJson {
            ts: e.ts.to_rfc3339(),
            kind: e.kind.as_str(),
            code: &e.code,
            severity: e.severity.as_str(),
            subject: e.subject.as_ref(),
            source: &e.source,
            actor: e.actor.as_deref(),
            message: &e.message,
            attributes: AttributesJson(&e.attributes),
        }
    }
}

/// An event's attributes as a JSON object, in insertion order.
#[derive(Debug)]
pub struct AttributesJson<'a>(pub &'a [(std::sync::Arc<str>, Value)]);

impl Serialize for AttributesJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            m.serialize_entry(&**k, &ValueJson(Some(v)))?;
        }
        m.end()
    }
}

/// A list serialised lazily from an iterator (large REST answers without an intermediate Vec).
pub struct SeqJson<I>(pub std::cell::Cell<Option<I>>);

impl<I, T> Serialize for SeqJson<I>
where
    I: Iterator<Item = T>,
    T: Serialize,
{
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(None)?;
        if let Some(items) = self.0.take() {
            for item in items {
                seq.serialize_element(&item)?;
            }
        }
        seq.end()
    }
}

// ---- the reverse direction: reading the wire format (clients, the CLI, tests) ---------------

/// A JSON value read back: null, bool, integer (exact; above i64::MAX a `U64`), float, string.
#[derive(Debug, Clone, PartialEq)]
pub struct ValueIn(pub Value);

impl<'de> Deserialize<'de> for ValueIn {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ValueIn, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ValueIn;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("null, a boolean, a number or a string")
            }
            fn visit_unit<E>(self) -> Result<ValueIn, E> {
                Ok(ValueIn(Value::Null))
            }
            fn visit_none<E>(self) -> Result<ValueIn, E> {
                Ok(ValueIn(Value::Null))
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<ValueIn, D::Error> {
                ValueIn::deserialize(d)
            }
            fn visit_bool<E>(self, b: bool) -> Result<ValueIn, E> {
                Ok(ValueIn(Value::Bool(b)))
            }
            fn visit_i64<E>(self, i: i64) -> Result<ValueIn, E> {
                Ok(ValueIn(Value::Int(i)))
            }
            fn visit_u64<E>(self, u: u64) -> Result<ValueIn, E> {
                Ok(ValueIn(Value::from_u64(u)))
            }
            fn visit_f64<E>(self, f: f64) -> Result<ValueIn, E> {
                Ok(ValueIn(Value::Float(f)))
            }
            fn visit_str<E>(self, s: &str) -> Result<ValueIn, E> {
                Ok(ValueIn(Value::String(s.into())))
            }
            // An array of scalars of one type (an empty one reads as `array<float>`; `null`
            // among floats is a non-finite float, as `ValueJson` writes it).
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<ValueIn, A::Error> {
                let mut items = Vec::new();
                while let Some(ValueIn(v)) = seq.next_element::<ValueIn>()? {
                    items.push(v);
                }
                array_from(items).map(ValueIn).map_err(de::Error::custom)
            }
            // A DataSet: `{"columns":[..],"types":[..],"rows":[[..]]}`.
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<ValueIn, A::Error> {
                let (mut columns, mut types, mut rows) = (None, None, None);
                while let Some(k) = map.next_key::<String>()? {
                    match k.as_str() {
                        "columns" => columns = Some(map.next_value::<Vec<String>>()?),
                        "types" => types = Some(map.next_value::<Vec<String>>()?),
                        "rows" => rows = Some(map.next_value::<Vec<Vec<ValueIn>>>()?),
                        other => {
                            return Err(de::Error::custom(format!(
                                "unknown DataSet field {other:?}; expected columns, types, rows"
                            )))
                        }
                    }
                }
                let (Some(columns), Some(types), Some(rows)) = (columns, types, rows) else {
                    return Err(de::Error::custom("a DataSet needs columns, types and rows"));
                };
                dataset_from(columns, types, rows)
                    .map(ValueIn)
                    .map_err(de::Error::custom)
            }
        }
        d.deserialize_any(V)
    }
}

fn array_from(mut items: Vec<Value>) -> Result<Value, String> {
    use crate::{Array, ScalarType};
    if items
        .iter()
        .all(|v| matches!(v, Value::Float(_) | Value::Null))
    {
        for v in &mut items {
            if *v == Value::Null {
                *v = Value::Float(f64::NAN);
            }
        }
    }
    match Array::from_values(&items, ScalarType::Float) {
        Ok(Some(a)) => Ok(Value::array(a)),
        Ok(None) => Err("an array whose elements are not all scalars of one type".to_owned()),
        Err(e) => Err(e.to_string()),
    }
}

fn dataset_from(
    columns: Vec<String>,
    types: Vec<String>,
    rows: Vec<Vec<ValueIn>>,
) -> Result<Value, String> {
    use crate::{DataSet, ScalarType};
    let types = types
        .iter()
        .map(|t| ScalarType::parse(t).ok_or_else(|| format!("unknown DataSet column type {t:?}")))
        .collect::<Result<Vec<_>, _>>()?;
    let columns = columns.into_iter().map(Arc::from).collect();
    let rows = rows
        .into_iter()
        .map(|r| r.into_iter().map(|c| c.0).collect())
        .collect();
    DataSet::new(columns, types, rows)
        .map(Value::dataset)
        .map_err(|e| e.to_string())
}

/// An RFC 3339 timestamp of the wire format (`Z` or an offset) back to µs.
pub fn parse_ts(s: &str) -> Result<Timestamp, String> {
    humantime::parse_rfc3339_weak(s)
        .map(Timestamp::from_system_time)
        .map_err(|e| {
            format!(
                "bad timestamp {s:?}: {e} (expected RFC 3339, e.g. 2026-11-25T10:00:00.000000Z)"
            )
        })
}

/// `quality` and `quality_reason` back to a [`Quality`].
pub fn parse_quality(level: &str, reason: Option<&str>) -> Result<Quality, String> {
    let level = match level {
        "Good" => QualityLevel::Good,
        "Uncertain" => QualityLevel::Uncertain,
        "Bad" => QualityLevel::Bad,
        other => {
            return Err(format!(
                "unknown quality {other:?}; expected Good, Uncertain or Bad"
            ))
        }
    };
    let reason = match reason {
        None | Some("None") => QualityReason::None,
        Some("CommFailure") => QualityReason::CommFailure,
        Some("DeviceFailure") => QualityReason::DeviceFailure,
        Some("OutOfRange") => QualityReason::OutOfRange,
        Some("ConfigError") => QualityReason::ConfigError,
        Some("Stale") => QualityReason::Stale,
        Some("NotConnected") => QualityReason::NotConnected,
        Some("CalculationFailed") => QualityReason::CalculationFailed,
        Some("InsufficientData") => QualityReason::InsufficientData,
        Some("SequenceGap") => QualityReason::SequenceGap,
        Some("Implausible") => QualityReason::Implausible,
        Some(other) => return Err(format!("unknown quality reason {other:?}")),
    };
    Ok(Quality { level, reason })
}

/// A [`SampleJson`] read back.
#[derive(Debug, Clone, Deserialize)]
pub struct SampleIn {
    #[serde(default)]
    pub path: Option<String>,
    pub value: ValueIn,
    pub quality: String,
    #[serde(default)]
    pub quality_reason: Option<String>,
    pub ts: String,
    #[serde(default)]
    pub server_ts: Option<String>,
    #[serde(default)]
    pub unit: Option<String>,
}

impl SampleIn {
    pub fn quality(&self) -> Result<Quality, String> {
        parse_quality(&self.quality, self.quality_reason.as_deref())
    }

    pub fn ts(&self) -> Result<Timestamp, String> {
        parse_ts(&self.ts)
    }
}

/// An [`EventJson`] read back.
#[derive(Debug, Clone, Deserialize)]
pub struct EventIn {
    pub ts: String,
    pub kind: String,
    pub code: String,
    pub severity: String,
    #[serde(default)]
    pub subject: Option<String>,
    pub source: String,
    #[serde(default)]
    pub actor: Option<String>,
    pub message: String,
    #[serde(default)]
    pub attributes: AttributesIn,
}

/// An event's attributes read back, in document order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AttributesIn(pub Vec<(String, ValueIn)>);

impl<'de> Deserialize<'de> for AttributesIn {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<AttributesIn, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = AttributesIn;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object of attributes")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut m: A) -> Result<AttributesIn, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = m.next_entry::<String, ValueIn>()? {
                    out.push((k, v));
                }
                Ok(AttributesIn(out))
            }
        }
        d.deserialize_map(V)
    }
}

impl EventIn {
    /// The event, or what is wrong with it.
    pub fn into_event(self) -> Result<Event, String> {
        Ok(Event {
            ts: parse_ts(&self.ts)?,
            kind: self.kind.parse::<EventKind>()?,
            code: Arc::from(self.code),
            severity: self.severity.parse::<Severity>()?,
            subject: self
                .subject
                .map(|s| TagPath::parse(&s).map_err(|e| format!("subject {s:?}: {e}")))
                .transpose()?,
            source: Arc::from(self.source),
            actor: self.actor.map(Arc::from),
            message: Arc::from(self.message),
            attributes: self
                .attributes
                .0
                .into_iter()
                .map(|(k, v)| (Arc::from(k), v.0))
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventKind, Severity};
    use crate::namespace::TagId;
    use crate::sample::{QualityReason, Timestamp};

    #[test]
    fn quality_fields_name_the_reason_only_when_not_good() {
        assert_eq!(quality_fields(Some(Quality::GOOD)), ("Good", None));
        assert_eq!(
            quality_fields(Some(Quality::uncertain(QualityReason::OutOfRange))),
            ("Uncertain", Some("OutOfRange"))
        );
        assert_eq!(quality_fields(None), ("Bad", Some("NotConnected")));
        let s = Sample {
            tag: TagId(0),
            value: Value::Float(f64::NAN),
            quality: Quality::GOOD,
            source_ts: Timestamp(0),
            server_ts: Timestamp(1),
        };
        let j = SampleJson::new(None, &s);
        assert_eq!(j.ts, "1970-01-01T00:00:00.000000Z");
        assert!(matches!(j.value, ValueJson(Some(Value::Float(f))) if f.is_nan()));
        let e = Event::new(Timestamp(0), EventKind::System, "started", "runtime", "up")
            .with_severity(Severity::Warning);
        let ej = EventJson::new(&e);
        assert_eq!((ej.kind, ej.severity), ("system", "warning"));
    }

    #[test]
    fn samples_and_events_read_back_what_was_written() {
        let s = Sample {
            tag: TagId(0),
            value: Value::U64(u64::MAX),
            quality: Quality::uncertain(QualityReason::OutOfRange),
            source_ts: Timestamp(1_700_000_000_123_456),
            server_ts: Timestamp(1_700_000_000_200_000),
        };
        let path = TagPath::parse("acme/lyon/line1/filler/temp").expect("path");
        let text = serde_json::to_string(&SampleJson::new(Some(&path), &s).with_unit(Some("°C")))
            .expect("json");
        assert_eq!(
            text,
            r#"{"path":"acme/lyon/line1/filler/temp","value":18446744073709551615,"quality":"Uncertain","quality_reason":"OutOfRange","ts":"2023-11-14T22:13:20.123456Z","server_ts":"2023-11-14T22:13:20.200000Z","unit":"°C"}"#
        );
        let back: SampleIn = serde_json::from_str(&text).expect("read back");
        assert_eq!(back.value, ValueIn(Value::U64(u64::MAX)));
        assert_eq!(back.quality(), Ok(s.quality));
        assert_eq!(back.ts(), Ok(s.source_ts));
        assert_eq!(
            back.server_ts.as_deref().map(parse_ts),
            Some(Ok(s.server_ts))
        );
        for (json, v) in [
            ("-3", Value::Int(-3)),
            ("7", Value::Int(7)),
            ("7.0", Value::Float(7.0)),
            ("null", Value::Null),
            ("true", Value::Bool(true)),
            (r#""x""#, Value::String("x".into())),
        ] {
            let got: ValueIn = serde_json::from_str(json).expect(json);
            assert_eq!(got.0, v, "{json}");
        }
        assert!(parse_quality("Fine", None).is_err());
        let implausible = Quality::uncertain(QualityReason::Implausible);
        assert_eq!(
            parse_quality("Uncertain", Some(implausible.reason.as_str())),
            Ok(implausible)
        );
        assert!(parse_ts("yesterday").is_err());

        let e = Event::new(Timestamp(5), EventKind::Command, "write", "api", "set")
            .with_subject(path.clone())
            .with_actor("alice")
            .with_attribute("old", Value::Float(1.5))
            .with_attribute("new", Value::Int(2))
            .with_attribute("a_first", Value::Bool(false));
        let text = serde_json::to_string(&EventJson::new(&e)).expect("json");
        let back: EventIn = serde_json::from_str(&text).expect("read back");
        assert_eq!(back.into_event(), Ok(e));
    }

    #[test]
    fn arrays_and_datasets_render_as_json_structures() {
        use crate::sample::{Array, DataSet, ScalarType};
        let json = |v: &Value| serde_json::to_string(&ValueJson(Some(v))).expect("serialises");
        let floats = Value::array(Array::from_floats(vec![1.5, f64::NAN, -2.0]).expect("small"));
        assert_eq!(json(&floats), "[1.5,null,-2.0]");
        let big = Value::array(Array::from_u64s(vec![0, u64::MAX]).expect("small"));
        assert_eq!(json(&big), "[0,18446744073709551615]");
        let strings =
            Value::array(Array::from_strings(vec!["a\"b".into(), "".into()]).expect("small"));
        assert_eq!(json(&strings), r#"["a\"b",""]"#);
        let empty = Value::array(Array::from_bools(vec![]).expect("small"));
        assert_eq!(json(&empty), "[]");
        let ds = Value::dataset(
            DataSet::new(
                vec!["n".into(), "ok".into()],
                vec![ScalarType::Int, ScalarType::Bool],
                vec![
                    vec![Value::Int(-5), Value::Bool(true)],
                    vec![Value::Null, Value::Bool(false)],
                ],
            )
            .expect("valid"),
        );
        assert_eq!(
            json(&ds),
            r#"{"columns":["n","ok"],"types":["int","bool"],"rows":[[-5,true],[null,false]]}"#
        );
        // And they read back as what was written (a NaN element stays a non-finite float).
        for v in [&big, &strings, &ds] {
            let back: ValueIn = serde_json::from_str(&json(v)).expect("reads back");
            assert_eq!(&back.0, v);
        }
        let back: ValueIn = serde_json::from_str(&json(&floats)).expect("reads back");
        assert_eq!(json(&back.0), "[1.5,null,-2.0]");
        assert!(
            serde_json::from_str::<ValueIn>("[1,\"x\"]").is_err(),
            "mixed types"
        );
        assert!(
            serde_json::from_str::<ValueIn>("[[1]]").is_err(),
            "nested arrays"
        );
        assert!(serde_json::from_str::<ValueIn>(r#"{"columns":["a"]}"#).is_err());
    }
}
