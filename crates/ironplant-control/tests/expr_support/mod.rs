//! Shared helpers of the expression tests: a resolver over a list of tags, samples, time.
#![allow(dead_code)]

use ironplant_control::expr::{pattern_matches, Resolver};
use ironplant_core::{Quality, QualityReason, Sample, TagId, Timestamp, Value, ValueType};

/// Tags by path; tag i has id i. Bare names are tags of `scope`.
pub struct Tags {
    pub tags: Vec<(String, ValueType)>,
    pub scope: Option<String>,
}

pub const LINE: &str = "acme/lyon/bottling/line1";

impl Tags {
    /// The bottling line's tags, bare names in `acme/lyon/bottling/line1`.
    pub fn line() -> Tags {
        let f = ValueType::Float;
        let list = [
            ("speed_actual", f),
            ("speed_setpoint", f),
            ("bottles", ValueType::Int),
            ("rejects", ValueType::Int),
            ("running", ValueType::Bool),
            ("filler/power", f),
            ("capper/power", f),
            ("labeler/power", f),
            ("recipe", ValueType::String),
            ("filler/running", ValueType::Bool),
            ("capper/running", ValueType::Bool),
            ("counts", ValueType::Array(ironplant_core::ScalarType::Int)),
            ("energy", f),
        ];
        Tags {
            tags: list
                .iter()
                .map(|(n, t)| (format!("{LINE}/{n}"), *t))
                .collect(),
            scope: Some(LINE.to_owned()),
        }
    }

    pub fn id(&self, name: &str) -> TagId {
        let path = if name.contains('/') && name.starts_with("acme") {
            name.to_owned()
        } else {
            format!("{LINE}/{name}")
        };
        let i = self
            .tags
            .iter()
            .position(|(p, _)| *p == path)
            .unwrap_or_else(|| panic!("test tag {path}"));
        TagId(i as u32)
    }

    /// Adds a tag and returns its id.
    pub fn add(&mut self, path: &str, t: ValueType) -> TagId {
        self.tags.push((path.to_owned(), t));
        TagId(self.tags.len() as u32 - 1)
    }

    pub fn name(&self, id: TagId) -> String {
        self.tags
            .get(id.index())
            .map_or_else(|| format!("#{}", id.0), |t| t.0.clone())
    }
}

impl Resolver for Tags {
    fn resolve(&self, name: &str, quoted: bool) -> Option<(TagId, ValueType)> {
        let path = if quoted {
            name.to_owned()
        } else {
            format!("{}/{name}", self.scope.as_deref()?)
        };
        let i = self.tags.iter().position(|(p, _)| *p == path)?;
        Some((TagId(i as u32), self.tags[i].1))
    }

    fn expand(&self, pattern: &str) -> Vec<(TagId, ValueType)> {
        self.tags
            .iter()
            .enumerate()
            .filter(|(_, (p, _))| pattern_matches(pattern, p))
            .map(|(i, (_, t))| (TagId(i as u32), *t))
            .collect()
    }

    fn scope(&self) -> Option<String> {
        self.scope.clone()
    }
}

/// `secs` seconds after an arbitrary epoch.
pub fn t(secs: f64) -> Timestamp {
    Timestamp(1_800_000_000_000_000 + (secs * 1e6).round() as i64)
}

pub fn good(tag: TagId, value: Value, at: f64) -> Sample {
    Sample {
        tag,
        value,
        quality: Quality::GOOD,
        source_ts: t(at),
        server_ts: t(at),
    }
}

pub fn bad(tag: TagId, reason: QualityReason, at: f64) -> Sample {
    Sample {
        tag,
        value: Value::Null,
        quality: Quality::bad(reason),
        source_ts: t(at),
        server_ts: t(at),
    }
}

pub fn f(x: f64) -> Value {
    Value::Float(x)
}
