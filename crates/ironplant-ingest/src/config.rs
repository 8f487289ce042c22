//! The `[[ingest.json]]` section: owned and validated here, reported with core's diagnostics
//! (every error has a span of the file and a hint). See docs/config.md.

use std::collections::{HashMap, HashSet};

use ironplant_core::config::{self, Config, ConfigError, Diagnostics, Section};
use ironplant_core::{TagPath, ValueType};
use serde::Deserialize;
use toml::Spanned;

/// Default and largest payload a mapping accepts.
pub const DEFAULT_MAX_PAYLOAD: usize = 64 * 1024;
pub const MAX_PAYLOAD_LIMIT: usize = 16 << 20;
/// Default and largest number of tags a templated mapping may create at run time.
pub const DEFAULT_MAX_TAGS: usize = 1000;
pub const MAX_TAGS_LIMIT: usize = 100_000;

/// Every JSON mapping of the file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IngestSettings {
    pub json: Vec<JsonMapping>,
}

/// One `[[ingest.json]]`: where payloads come from and how they become samples.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonMapping {
    /// `[A-Za-z0-9_-]{1,64}`, unique; the tags' source is `ingest:<name>`.
    pub name: String,
    /// The MQTT filter it listens on (on the embedded broker).
    pub topic: Option<String>,
    /// Reachable at `POST /api/v1/ingest/<name>`.
    pub http: bool,
    pub max_payload: usize,
    /// Tags a templated path may create at run time.
    pub max_tags: usize,
    pub timestamp: Option<TimestampField>,
    pub fields: Vec<FieldMapping>,
    /// Signed payloads (`ironplant_mqtt::signed`): always verified when they come; with
    /// `Required`, unsigned ones are refused.
    pub signed: SignedPolicy,
}

/// `signed = "optional" | "required"` of a mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SignedPolicy {
    /// Envelopes are verified (a bad one refused); plain payloads pass.
    #[default]
    Optional,
    /// Only payloads signed by an enrolled device's key are accepted.
    Required,
}

impl JsonMapping {
    /// The source recorded on the mapping's tags (`TagMeta::device`).
    pub fn source(&self) -> String {
        format!("ingest:{}", self.name)
    }
}

/// Where a payload's own time is and how it is written.
#[derive(Debug, Clone, PartialEq)]
pub struct TimestampField {
    pub pointer: String,
    pub format: TimeFormat,
    /// Offset (seconds east of UTC) for RFC 3339 text without one (device local time).
    pub assume_offset: Option<i32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeFormat {
    Rfc3339,
    UnixSeconds,
    UnixMillis,
}

/// One JSON value → one tag.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldMapping {
    /// RFC 6901 JSON pointer, e.g. `/ENERGY/Power`.
    pub pointer: String,
    pub path: PathTemplate,
    pub value_type: ValueType,
    pub unit: Option<String>,
    pub description: String,
    pub range: Option<(f64, f64)>,
    /// `value * scale + offset` (floats only).
    pub scale: f64,
    pub offset: f64,
}

/// A tag path, possibly with `{n}`: the n-th `+` level of the topic the payload came on.
#[derive(Debug, Clone, PartialEq)]
pub enum PathTemplate {
    Fixed(TagPath),
    Template(Vec<Part>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    Text(String),
    /// 1-based index of a `+` level of the filter.
    Level(usize),
}

impl PathTemplate {
    /// The path with `{n}` replaced by `levels[n-1]`; `Err` says why it is not a tag path.
    pub fn expand(&self, levels: &[&str]) -> Result<TagPath, String> {
        match self {
            PathTemplate::Fixed(p) => Ok(p.clone()),
            PathTemplate::Template(parts) => {
                let mut s = String::new();
                for part in parts {
                    match part {
                        Part::Text(t) => s.push_str(t),
                        Part::Level(n) => {
                            let level = levels
                                .get(n - 1)
                                .ok_or_else(|| format!("the topic has no level for {{{n}}}"))?;
                            if level.contains('/') {
                                return Err(format!("topic level {level:?} contains '/'"));
                            }
                            s.push_str(level);
                        }
                    }
                }
                TagPath::parse(&s).map_err(|e| format!("{s:?} is not a tag path: {e}"))
            }
        }
    }

    pub fn is_fixed(&self) -> bool {
        matches!(self, PathTemplate::Fixed(_))
    }
}

impl std::fmt::Display for PathTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PathTemplate::Fixed(p) => f.write_str(p.as_str()),
            PathTemplate::Template(parts) => {
                for part in parts {
                    match part {
                        Part::Text(t) => f.write_str(t)?,
                        Part::Level(n) => write!(f, "{{{n}}}")?,
                    }
                }
                Ok(())
            }
        }
    }
}

// ---- raw (as written) --------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIngest {
    #[serde(default)]
    json: Vec<Spanned<RawJson>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJson {
    name: Spanned<String>,
    topic: Option<Spanned<String>>,
    http: Option<Spanned<bool>>,
    max_payload: Option<Spanned<RawSize>>,
    max_tags: Option<Spanned<i64>>,
    timestamp: Option<Spanned<RawTimestamp>>,
    signed: Option<Spanned<String>>,
    #[serde(default, rename = "field")]
    fields: Vec<Spanned<RawField>>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawSize {
    Int(i64),
    Text(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTimestamp {
    pointer: Spanned<String>,
    format: Option<Spanned<String>>,
    assume_offset: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawField {
    pointer: Spanned<String>,
    path: Spanned<String>,
    #[serde(rename = "type")]
    value_type: Option<Spanned<String>>,
    unit: Option<String>,
    #[serde(default)]
    description: String,
    min: Option<Spanned<f64>>,
    max: Option<Spanned<f64>>,
    scale: Option<Spanned<f64>>,
    offset: Option<Spanned<f64>>,
}

/// Only what ingest needs to know of `[mqtt]` (core validates the rest).
#[derive(Debug, Deserialize)]
struct RawMqttPrefix {
    uns_prefix: Option<String>,
}

/// Only the paths of `[[tag]]` (core validates the rest), for [`IngestSettings::from_source`].
#[derive(Debug, Deserialize)]
struct RawTagPath {
    path: String,
}

// ---- validation --------------------------------------------------------------------------------

impl Section for IngestSettings {
    const KEY: &'static str = "ingest";

    /// `[[ingest.json]]`, checked against the plant's `[[tag]]` paths (a tag has one source).
    fn parse(source: &str, plant: &Config, d: &mut Diagnostics) -> IngestSettings {
        let configured = plant
            .tags
            .iter()
            .map(|t| t.path.as_str().to_owned())
            .collect();
        parse_section(source, &configured, d)
    }

    /// The fixed-path tags of every mapping, so the sections after this one (alarms,
    /// computed tags, commands) know them.
    fn tags(&self) -> Vec<ironplant_core::TagMeta> {
        self.json.iter().flat_map(crate::json::fixed_tags).collect()
    }
}

impl IngestSettings {
    /// Reads and validates `[[ingest.json]]` of a config file on its own (without the
    /// platform's registry, e.g. in tests): every problem is returned with its span of
    /// `source`, and the settings keep the mappings that are valid. Render the errors with
    /// [`config::ConfigErrors`].
    pub fn from_source(source: &str) -> (IngestSettings, Vec<ConfigError>) {
        let configured: HashSet<String> = config::section::<Vec<RawTagPath>>(source, "tag")
            .ok()
            .flatten()
            .unwrap_or_default()
            .into_iter()
            .map(|t| t.path)
            .collect();
        let mut d = Diagnostics::new();
        let settings = parse_section(source, &configured, &mut d);
        let mut errors = d.errors;
        errors.sort_by_key(|e| e.span.start);
        (settings, errors)
    }
}

fn parse_section(
    source: &str,
    configured: &HashSet<String>,
    d: &mut Diagnostics,
) -> IngestSettings {
    let raw = match config::section::<RawIngest>(source, IngestSettings::KEY) {
        Ok(Some(raw)) => raw,
        Ok(None) => return IngestSettings::default(),
        Err(e) => {
            d.errors.push(e);
            return IngestSettings::default();
        }
    };
    // `[mqtt]` is the broker's section: read leniently, only for the UNS prefix.
    let uns_prefix = config::section::<RawMqttPrefix>(source, "mqtt")
        .ok()
        .flatten()
        .and_then(|m| m.uns_prefix)
        .map(|p| p.trim_end_matches('/').to_owned())
        .unwrap_or_default();
    validate(raw, &uns_prefix, configured, d)
}

fn validate(
    raw: RawIngest,
    uns_prefix: &str,
    configured: &HashSet<String>,
    d: &mut Diagnostics,
) -> IngestSettings {
    let mut out = Vec::new();
    let mut names = HashSet::new();
    // Fixed tag path → the mapping that feeds it.
    let mut owners: HashMap<TagPath, String> = HashMap::new();
    for m in raw.json {
        let span = m.span();
        let m = m.into_inner();
        let name = m.name.get_ref().clone();
        let name_ok = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !name_ok {
            d.err(
                m.name.span(),
                format!("ingest mapping name {name:?} is not usable"),
                Some("use 1-64 letters, digits, '_' or '-'; it is part of the URL /api/v1/ingest/<name>".to_owned()),
            );
        } else if !names.insert(name.clone()) {
            d.err(
                m.name.span(),
                format!("ingest mapping name {name:?} is used twice"),
                Some("give each [[ingest.json]] its own name".to_owned()),
            );
        }
        let http = m.http.as_ref().is_some_and(|h| *h.get_ref());
        let mut pluses = 0;
        let topic = match &m.topic {
            None => None,
            Some(t) => {
                let filter = t.get_ref();
                if let Err(e) = ironplant_mqtt::topic::validate_topic_filter(filter) {
                    d.err(
                        t.span(),
                        format!("topic {filter:?} is not an MQTT topic filter: {e}"),
                        Some("e.g. \"shellies/+/status/switch:0\" or \"tele/+/SENSOR\"".to_owned()),
                    );
                } else if filter.starts_with('$') {
                    d.err(
                        t.span(),
                        format!("topic {filter:?} starts with '$'"),
                        Some("$-topics are the broker's ($SYS) or shared subscriptions; listen on the device's own topic".to_owned()),
                    );
                }
                pluses = filter.split('/').filter(|l| *l == "+").count();
                Some(filter.clone())
            }
        };
        if topic.is_none() && !http {
            d.err(
                m.name.span(),
                format!("ingest mapping {name:?} has neither a topic nor http = true"),
                Some("add topic = \"devices/+/telemetry\" to listen on MQTT, or http = true for POST /api/v1/ingest/<name>".to_owned()),
            );
        }
        let max_payload = match &m.max_payload {
            None => DEFAULT_MAX_PAYLOAD,
            Some(s) => {
                let n = match s.get_ref() {
                    RawSize::Int(i) => u64::try_from(*i).ok(),
                    RawSize::Text(t) => config::parse_size(t),
                };
                match n.and_then(|n| usize::try_from(n).ok()) {
                    Some(n) if n > 0 && n <= MAX_PAYLOAD_LIMIT => n,
                    _ => {
                        d.err(
                            s.span(),
                            "max_payload must be a size between 1 byte and 16MiB",
                            Some("e.g. max_payload = \"64KiB\"".to_owned()),
                        );
                        DEFAULT_MAX_PAYLOAD
                    }
                }
            }
        };
        let max_tags = match &m.max_tags {
            None => DEFAULT_MAX_TAGS,
            Some(n) => match usize::try_from(*n.get_ref()) {
                Ok(v) if (1..=MAX_TAGS_LIMIT).contains(&v) => v,
                _ => {
                    d.err(
                        n.span(),
                        format!("max_tags {} is out of range", n.get_ref()),
                        Some(format!("use 1..={MAX_TAGS_LIMIT}")),
                    );
                    DEFAULT_MAX_TAGS
                }
            },
        };
        let timestamp = m.timestamp.as_ref().and_then(|t| validate_timestamp(d, t));
        let signed = match m.signed.as_ref().map(|s| (s.get_ref().as_str(), s.span())) {
            None | Some(("optional", _)) => SignedPolicy::Optional,
            Some(("required", _)) => SignedPolicy::Required,
            Some((other, span)) => {
                d.err(
                    span,
                    format!("signed = {other:?} is not a policy"),
                    Some("use \"optional\" (verify envelopes when they come, the default) or \"required\" (only payloads signed by an enrolled device)".to_owned()),
                );
                SignedPolicy::Optional
            }
        };
        if m.fields.is_empty() {
            d.err(
                span.clone(),
                format!("ingest mapping {name:?} maps no field"),
                Some("add [[ingest.json.field]] tables with pointer, path and type".to_owned()),
            );
        }
        let mut fields = Vec::new();
        for f in m.fields {
            let Some(field) = validate_field(d, f.get_ref(), pluses, http) else {
                continue;
            };
            let f = f.into_inner();
            check_loop(
                d,
                &f.path,
                &field.path,
                topic.as_deref(),
                uns_prefix,
                pluses,
            );
            if let PathTemplate::Fixed(p) = &field.path {
                if configured.contains(p.as_str()) {
                    d.err(
                        f.path.span(),
                        format!("tag {p} is also a configured [[tag]]"),
                        Some(
                            "a tag has one source: rename the ingested tag or remove the [[tag]]"
                                .to_owned(),
                        ),
                    );
                } else if let Some(other) = owners.insert(p.clone(), name.clone()) {
                    d.err(
                        f.path.span(),
                        format!("tag {p} is mapped twice (also by ingest mapping {other:?})"),
                        Some("a tag has one source: give each field its own path".to_owned()),
                    );
                }
            }
            fields.push(field);
        }
        out.push(JsonMapping {
            name,
            topic,
            http,
            max_payload,
            max_tags,
            timestamp,
            fields,
            signed,
        });
    }
    IngestSettings { json: out }
}

fn validate_timestamp(d: &mut Diagnostics, t: &Spanned<RawTimestamp>) -> Option<TimestampField> {
    let raw = t.get_ref();
    let pointer_ok = check_pointer(d, &raw.pointer);
    let format = match &raw.format {
        None => TimeFormat::Rfc3339,
        Some(f) => match f.get_ref().as_str() {
            "rfc3339" => TimeFormat::Rfc3339,
            "unix_s" | "unix" => TimeFormat::UnixSeconds,
            "unix_ms" => TimeFormat::UnixMillis,
            other => {
                d.err(
                    f.span(),
                    format!("unknown timestamp format {other:?}"),
                    Some("use \"rfc3339\", \"unix_s\" or \"unix_ms\"".to_owned()),
                );
                return None;
            }
        },
    };
    let assume_offset = match &raw.assume_offset {
        None => None,
        Some(o) if format != TimeFormat::Rfc3339 => {
            d.err(
                o.span(),
                "assume_offset applies to rfc3339 timestamps only",
                Some("Unix times are UTC: remove assume_offset".to_owned()),
            );
            None
        }
        Some(o) => match crate::time::parse_offset(o.get_ref()) {
            Some(s) => Some(s),
            None => {
                d.err(
                    o.span(),
                    format!("assume_offset {:?} is not a UTC offset", o.get_ref()),
                    Some("write it as \"+01:00\", \"-05:00\" or \"Z\"".to_owned()),
                );
                None
            }
        },
    };
    pointer_ok.then(|| TimestampField {
        pointer: raw.pointer.get_ref().clone(),
        format,
        assume_offset,
    })
}

/// RFC 6901: empty (the whole document) or `/`-separated tokens where `~` is only `~0`/`~1`.
fn pointer_error(p: &str) -> Option<&'static str> {
    if !p.is_empty() && !p.starts_with('/') {
        return Some("a JSON pointer starts with '/'");
    }
    let b = p.as_bytes();
    for (i, &c) in b.iter().enumerate() {
        if c == b'~' && !matches!(b.get(i + 1), Some(b'0' | b'1')) {
            return Some("'~' must be written ~0 and '/' inside a key ~1");
        }
    }
    None
}

fn check_pointer(d: &mut Diagnostics, p: &Spanned<String>) -> bool {
    match pointer_error(p.get_ref()) {
        None => true,
        Some(why) => {
            d.err(
                p.span(),
                format!("{:?} is not a JSON pointer (RFC 6901): {why}", p.get_ref()),
                Some("e.g. \"/ENERGY/Power\" for {\"ENERGY\": {\"Power\": 42.5}}".to_owned()),
            );
            false
        }
    }
}

fn parse_template(text: &str) -> Result<PathTemplate, String> {
    if !text.contains(['{', '}']) {
        return TagPath::parse(text)
            .map(PathTemplate::Fixed)
            .map_err(|e| e.to_string());
    }
    let mut parts = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        if rest[..open].contains('}') {
            return Err("'}' without '{'".to_owned());
        }
        if open > 0 {
            parts.push(Part::Text(rest[..open].to_owned()));
        }
        let close = rest[open..]
            .find('}')
            .ok_or_else(|| "'{' without '}'".to_owned())?
            + open;
        let n: usize = rest[open + 1..close]
            .parse()
            .map_err(|_| format!("{:?} is not {{n}} with a number n", &rest[open..=close]))?;
        if n == 0 {
            return Err("levels are counted from {1}".to_owned());
        }
        parts.push(Part::Level(n));
        rest = &rest[close + 1..];
    }
    if rest.contains('}') {
        return Err("'}' without '{'".to_owned());
    }
    if !rest.is_empty() {
        parts.push(Part::Text(rest.to_owned()));
    }
    Ok(PathTemplate::Template(parts))
}

fn validate_field(
    d: &mut Diagnostics,
    f: &RawField,
    pluses: usize,
    http: bool,
) -> Option<FieldMapping> {
    let mut ok = check_pointer(d, &f.pointer);
    let path = match parse_template(f.path.get_ref()) {
        Ok(p) => Some(p),
        Err(e) => {
            d.err(
                f.path.span(),
                format!("invalid tag path {:?}: {e}", f.path.get_ref()),
                Some("paths look like \"enterprise/site/area/line/cell/device/tag\"; {1} is the first '+' level of the topic".to_owned()),
            );
            None
        }
    };
    if let Some(PathTemplate::Template(parts)) = &path {
        let max = parts
            .iter()
            .filter_map(|p| match p {
                Part::Level(n) => Some(*n),
                Part::Text(_) => None,
            })
            .max()
            .unwrap_or(0);
        if http {
            d.err(
                f.path.span(),
                format!("path {:?} uses a topic level, but the mapping is reachable over HTTP, which has no topic", f.path.get_ref()),
                Some("use a fixed path, or a separate [[ingest.json]] without http for the MQTT side".to_owned()),
            );
            ok = false;
        } else if max > pluses {
            d.err(
                f.path.span(),
                format!("path {:?} uses {{{max}}} but the topic has {pluses} '+' level(s)", f.path.get_ref()),
                Some("{n} is the n-th '+' of the topic filter, e.g. topic \"shellies/+/status\" and path \"site/plugs/{1}/power\"".to_owned()),
            );
            ok = false;
        } else {
            // The template must give a valid path for a plain level value.
            let sample = vec!["x"; pluses];
            if let Some(Err(e)) = path.as_ref().map(|p| p.expand(&sample)) {
                d.err(
                    f.path.span(),
                    format!("invalid tag path {:?}: {e}", f.path.get_ref()),
                    Some("paths look like \"enterprise/site/area/{1}/tag\"".to_owned()),
                );
                ok = false;
            }
        }
    }
    let value_type = match f.value_type.as_ref().map(|t| (t, t.get_ref().as_str())) {
        None => ValueType::Float,
        Some((_, "float")) => ValueType::Float,
        Some((_, "int")) => ValueType::Int,
        Some((_, "bool")) => ValueType::Bool,
        Some((_, "string")) => ValueType::String,
        Some((t, other)) => {
            d.err(
                t.span(),
                format!("unknown type {other:?}"),
                Some("use \"float\" (the default), \"int\", \"bool\" or \"string\"".to_owned()),
            );
            return None;
        }
    };
    for (key, v) in [("scale", &f.scale), ("offset", &f.offset)] {
        if let Some(v) = v {
            if value_type != ValueType::Float {
                d.err(
                    v.span(),
                    format!(
                        "{key} applies to float fields only (this one is {})",
                        value_type.as_str()
                    ),
                    Some("set type = \"float\", or remove it".to_owned()),
                );
                ok = false;
            } else if !v.get_ref().is_finite() {
                d.err(v.span(), format!("{key} must be a finite number"), None);
                ok = false;
            }
        }
    }
    let numeric = matches!(value_type, ValueType::Float | ValueType::Int);
    let range = match (&f.min, &f.max) {
        (None, None) => None,
        (min, max) => {
            let span = min
                .as_ref()
                .or(max.as_ref())
                .map(Spanned::span)
                .unwrap_or(0..0);
            let lo = min.as_ref().map_or(f64::NEG_INFINITY, |v| *v.get_ref());
            let hi = max.as_ref().map_or(f64::INFINITY, |v| *v.get_ref());
            if !numeric {
                d.err(
                    span,
                    format!(
                        "min/max apply to numbers only (this field is {})",
                        value_type.as_str()
                    ),
                    Some("remove min and max".to_owned()),
                );
                ok = false;
                None
            } else if lo.is_nan() || hi.is_nan() || lo > hi {
                d.err(
                    span,
                    format!("min {lo} is above max {hi}"),
                    Some("swap them".to_owned()),
                );
                ok = false;
                None
            } else {
                Some((lo, hi))
            }
        }
    };
    let path = path?;
    ok.then(|| FieldMapping {
        pointer: f.pointer.get_ref().clone(),
        path,
        value_type,
        unit: f.unit.clone(),
        description: f.description.clone(),
        range,
        scale: f.scale.as_ref().map_or(1.0, |s| *s.get_ref()),
        offset: f.offset.as_ref().map_or(0.0, |s| *s.get_ref()),
    })
}

/// A mapping whose topic filter matches the UNS topic of a tag it writes would read its own
/// output back (the UNS publishes every tag on `<uns_prefix>/<path>`).
fn check_loop(
    d: &mut Diagnostics,
    raw: &Spanned<String>,
    path: &PathTemplate,
    topic: Option<&str>,
    uns_prefix: &str,
    pluses: usize,
) {
    let Some(filter) = topic else { return };
    let Ok(p) = path.expand(&vec!["x"; pluses]) else {
        return;
    };
    let uns = if uns_prefix.is_empty() {
        p.as_str().to_owned()
    } else {
        format!("{uns_prefix}/{}", p.as_str())
    };
    if ironplant_mqtt::topic::topic_matches(filter, &uns) {
        d.err(
            raw.span(),
            format!("tag {p} is published on the UNS topic {uns:?}, which the mapping's topic {filter:?} matches: it would read its own output"),
            Some("listen on the device's topic (e.g. \"shellies/+/status/#\"), not on the UNS".to_owned()),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ironplant_core::config::ConfigErrors;

    fn errors(src: &str) -> String {
        let (_, errors) = IngestSettings::from_source(src);
        ConfigErrors {
            file: "plant.toml".into(),
            source: src.into(),
            errors,
        }
        .to_string()
    }

    pub const SHELLY: &str = r#"
[[ingest.json]]
name = "shelly-plugs"
topic = "shellies/+/status/switch:0"

[[ingest.json.field]]
pointer = "/apower"
path = "acme/lyon/office/{1}/power"
unit = "W"
min = 0.0
max = 3680.0

[[ingest.json.field]]
pointer = "/aenergy/total"
path = "acme/lyon/office/{1}/energy"
unit = "kWh"
scale = 0.001
"#;

    #[test]
    fn a_valid_mapping_reads_back() {
        let (s, errors) = IngestSettings::from_source(SHELLY);
        assert!(errors.is_empty(), "{errors:?}");
        let m = &s.json[0];
        assert_eq!(m.topic.as_deref(), Some("shellies/+/status/switch:0"));
        assert!(!m.http);
        assert_eq!(m.max_payload, DEFAULT_MAX_PAYLOAD);
        assert_eq!(m.fields[0].range, Some((0.0, 3680.0)));
        assert_eq!(m.fields[1].scale, 0.001);
        assert_eq!(
            m.fields[0]
                .path
                .expand(&["plug-7"])
                .expect("expands")
                .as_str(),
            "acme/lyon/office/plug-7/power"
        );
        assert_eq!(m.fields[0].path.to_string(), "acme/lyon/office/{1}/power");
        assert!(m.fields[0].path.expand(&[".hidden"]).is_err());
    }

    #[test]
    fn every_error_has_a_position_and_a_hint() {
        let src = r#"
[mqtt]
uns_prefix = "uns"

[[tag]]
path = "acme/lyon/office/meter/power"

[[ingest.json]]
name = "bad name!"
topic = "meters/#/x"
max_payload = "lots"
timestamp = { pointer = "Time", format = "iso", assume_offset = "CET" }

[[ingest.json.field]]
pointer = "/a~2b"
path = "acme/lyon/{2}/power"
type = "int"
scale = 2.0

[[ingest.json]]
name = "meter"
http = true
max_tags = 0

[[ingest.json.field]]
pointer = "/power"
path = "acme/lyon/office/meter/power"
type = "bool"
min = 1.0

[[ingest.json.field]]
pointer = "/p"
path = "acme/lyon/{1}/p"
type = "decimal"

[[ingest.json]]
name = "loop"
topic = "uns/acme/#"

[[ingest.json.field]]
pointer = "/v"
path = "acme/x/v"

[[ingest.json]]
name = "nothing"
"#;
        let text = errors(src);
        for expected in [
            "plant.toml:9:8: error: ingest mapping name \"bad name!\" is not usable",
            "plant.toml:10:9: error: topic \"meters/#/x\" is not an MQTT topic filter",
            "plant.toml:11:15: error: max_payload must be a size",
            "plant.toml:12:25: error: \"Time\" is not a JSON pointer",
            "plant.toml:12:42: error: unknown timestamp format \"iso\"",
            "plant.toml:15:11: error: \"/a~2b\" is not a JSON pointer",
            "plant.toml:16:8: error: path \"acme/lyon/{2}/power\" uses {2} but the topic has 0 '+' level(s)",
            "plant.toml:18:9: error: scale applies to float fields only",
            "plant.toml:23:12: error: max_tags 0 is out of range",
            "plant.toml:29:7: error: min/max apply to numbers only",
            "plant.toml:33:8: error: path \"acme/lyon/{1}/p\" uses a topic level, but the mapping is reachable over HTTP",
            "plant.toml:34:8: error: unknown type \"decimal\"",
            "plant.toml:42:8: error: tag acme/x/v is published on the UNS topic \"uns/acme/x/v\"",
            "plant.toml:45:8: error: ingest mapping \"nothing\" has neither a topic nor http = true",
            "plant.toml:44:1: error: ingest mapping \"nothing\" maps no field",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
        let (_, errs) = IngestSettings::from_source(src);
        assert!(
            errs.iter()
                .all(|e| e.hint.is_some() && e.span.end > e.span.start),
            "{errs:#?}"
        );
    }

    #[test]
    fn unknown_keys_and_duplicates() {
        let text = errors("[[ingest.json]]\nname = \"a\"\nhttp = true\ncolour = 1\n");
        assert!(
            text.starts_with("plant.toml:4:1: error: unknown field `colour`"),
            "{text}"
        );
        let dup = "[[ingest.json]]\nname = \"a\"\nhttp = true\n[[ingest.json.field]]\npointer = \"/x\"\npath = \"a/b\"\n\
                   [[ingest.json]]\nname = \"a\"\nhttp = true\n[[ingest.json.field]]\npointer = \"/y\"\npath = \"a/b\"\n";
        let text = errors(dup);
        assert!(
            text.contains("plant.toml:8:8: error: ingest mapping name \"a\" is used twice"),
            "{text}"
        );
        assert!(
            text.contains("plant.toml:12:8: error: tag a/b is mapped twice"),
            "{text}"
        );
        assert_eq!(
            IngestSettings::from_source("[mqtt]\n").0,
            IngestSettings::default()
        );
        let taken = "[[tag]]\npath = \"a/b\"\n[[ingest.json]]\nname = \"a\"\nhttp = true\n[[ingest.json.field]]\npointer = \"/x\"\npath = \"a/b\"\n";
        let text = errors(taken);
        assert!(
            text.contains("plant.toml:8:8: error: tag a/b is also a configured [[tag]]"),
            "{text}"
        );
    }
}
