//! The one wire format of tags, samples and events, at every edge that speaks JSON: REST, the
//! live WebSocket API, UNS payloads on MQTT, events on MQTT, history exports. Everything that
//! leaves Ironplant as JSON is built from these types, so a field has one name everywhere
//! (`ts` is the source timestamp, `server_ts` when Ironplant received it; `quality` is
//! `Good`/`Uncertain`/`Bad` and `quality_reason` is set only when it is not Good).
//!
//! The OpenAPI document served by the API describes exactly these shapes.

use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};

use crate::event::Event;
use crate::namespace::TagMeta;
use crate::path::TagPath;
use crate::sample::{Quality, QualityLevel, Sample, Value};

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
    }
}
