//! The `[[command]]` and `[[interlock]]` sections: owned and validated here, reported with
//! core's diagnostics (every error at file:line:col with a hint). See docs/commands.md.
//!
//! Two [`Section`]s because they are two top-level keys: register both
//! (`Registry::new().with::<CommandSettings>().with::<InterlockSettings>()`). `[[command]]`
//! reads the interlock names leniently to check its references; `[[interlock]]` validates
//! its own entries (the expressions are compiled by the expression engine, which gets their
//! text and span from here).

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::time::Duration;

use ironplant_core::config::{self, parse_duration, parse_path, Config, Diagnostics, Section};
use ironplant_core::{TagPath, Value, ValueType};
use serde::Deserialize;
use toml::Spanned;

use super::types::{admits, Role};

pub const DEFAULT_VERIFY_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_TWO_PERSON_TIMEOUT: Duration = Duration::from_secs(60);

/// Every `[[command]]`: the policy of each writable tag that has one. A writable tag without
/// one gets [`TagPolicy::default_for`]: authorisation, writability, value type and read-back
/// verification only.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CommandSettings {
    pub tags: Vec<TagPolicy>,
}

/// The command policy of one writable tag.
#[derive(Debug, Clone, PartialEq)]
pub struct TagPolicy {
    pub tag: TagPath,
    pub envelope: Envelope,
    /// Names of `[[interlock]]`s that must all hold for a write.
    pub interlocks: Vec<String>,
    /// Select-before-operate: how long a selection stays valid.
    pub select_before_operate: Option<Duration>,
    pub two_person: Option<TwoPerson>,
    pub verify: Verify,
    pub on_unauthorised_change: OnUnauthorisedChange,
    /// The value the tag should have before any command (else the first Good value seen is
    /// learned as the baseline).
    pub expected: Option<Value>,
    /// The tag is born at run time (a Sparkplug metric), so it is not checked against the
    /// plant's `[[tag]]`s; its writability is checked when a command is made.
    pub dynamic: bool,
}

impl TagPolicy {
    /// The policy of a writable tag without a `[[command]]`.
    pub fn default_for(tag: TagPath) -> TagPolicy {
        TagPolicy {
            tag,
            envelope: Envelope::default(),
            interlocks: Vec::new(),
            select_before_operate: None,
            two_person: None,
            verify: Verify::default(),
            on_unauthorised_change: OnUnauthorisedChange::Alarm,
            expected: None,
            dynamic: false,
        }
    }
}

/// The operating envelope: every limit is optional.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Envelope {
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// Largest change from the current value in one command.
    pub max_step: Option<f64>,
    /// Largest change per second since the last accepted command (units/s).
    pub max_rate: Option<f64>,
    /// Least time between two accepted commands.
    pub min_interval: Option<Duration>,
}

impl Envelope {
    pub fn is_numeric(&self) -> bool {
        self.min.is_some()
            || self.max.is_some()
            || self.max_step.is_some()
            || self.max_rate.is_some()
    }
}

/// Two-person rule: a second, different user of at least `role` confirms within `timeout`.
#[derive(Debug, Clone, PartialEq)]
pub struct TwoPerson {
    pub role: Role,
    pub timeout: Duration,
}

/// Read-back verification: a Good sample within `tolerance` of the commanded value before
/// `timeout` after the device's acknowledgement.
#[derive(Debug, Clone, PartialEq)]
pub struct Verify {
    pub timeout: Duration,
    pub tolerance: f64,
}

impl Default for Verify {
    fn default() -> Verify {
        Verify {
            timeout: DEFAULT_VERIFY_TIMEOUT,
            tolerance: 0.0,
        }
    }
}

/// What an unauthorised change of the tag leads to (always a finding: alarm and audit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnUnauthorisedChange {
    Alarm,
    /// Also a command restoring the expected value, as the platform, through the same checks.
    Restore,
}

/// Every `[[interlock]]`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InterlockSettings {
    pub interlocks: Vec<InterlockDef>,
}

/// One named condition that must hold for the writes of the tags that list it.
#[derive(Debug, Clone, PartialEq)]
pub struct InterlockDef {
    pub name: String,
    /// The expression's text, for the expression engine to compile.
    pub expr: String,
    /// Byte span of the expression's TOML string in the file (quotes included).
    pub expr_span: Range<usize>,
    /// Byte offset in the file of the expression's first character (after the opening quote
    /// or quotes): add it to an offset inside `expr` to report an error at file:line:col
    /// (exact for strings without escapes).
    pub expr_offset: usize,
    /// Shown in a refusal, e.g. "no recipe change while the filler runs".
    pub message: String,
}

impl InterlockSettings {
    pub fn get(&self, name: &str) -> Option<&InterlockDef> {
        self.interlocks.iter().find(|i| i.name == name)
    }
}

// ---- raw (as written) ---------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCommand {
    tag: Spanned<String>,
    min: Option<Spanned<f64>>,
    max: Option<Spanned<f64>>,
    max_step: Option<Spanned<f64>>,
    max_rate: Option<Spanned<f64>>,
    min_interval: Option<Spanned<String>>,
    #[serde(default)]
    interlocks: Vec<Spanned<String>>,
    select_before_operate: Option<Spanned<String>>,
    two_person: Option<Spanned<RawTwoPerson>>,
    verify: Option<Spanned<RawVerify>>,
    on_unauthorised_change: Option<Spanned<String>>,
    expected: Option<Spanned<toml::Value>>,
    dynamic: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTwoPerson {
    role: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVerify {
    timeout: Option<Spanned<String>>,
    tolerance: Option<Spanned<f64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInterlock {
    name: Spanned<String>,
    expr: Spanned<String>,
    message: Option<String>,
}

/// Only the names of `[[interlock]]` (its own section validates the rest).
#[derive(Debug, Deserialize)]
struct RawInterlockName {
    name: String,
}

// ---- validation -----------------------------------------------------------------------------------

impl Section for CommandSettings {
    const KEY: &'static str = "command";

    fn parse(source: &str, plant: &Config, d: &mut Diagnostics) -> CommandSettings {
        let raw = match config::section::<Vec<Spanned<RawCommand>>>(source, Self::KEY) {
            Ok(Some(raw)) => raw,
            Ok(None) => return CommandSettings::default(),
            Err(e) => {
                d.errors.push(e);
                return CommandSettings::default();
            }
        };
        let mut interlocks: Vec<String> =
            config::section::<Vec<RawInterlockName>>(source, InterlockSettings::KEY)
                .ok()
                .flatten()
                .unwrap_or_default()
                .into_iter()
                .map(|i| i.name)
                .collect();
        interlocks.sort_unstable();
        interlocks.dedup();
        let tags: HashMap<&str, (bool, ValueType)> = plant
            .tags
            .iter()
            .map(|t| (t.path.as_str(), (t.writable, t.value_type)))
            .collect();
        validate_commands(raw, &tags, &interlocks, d)
    }
}

impl Section for InterlockSettings {
    const KEY: &'static str = "interlock";

    fn parse(source: &str, _plant: &Config, d: &mut Diagnostics) -> InterlockSettings {
        let raw = match config::section::<Vec<Spanned<RawInterlock>>>(source, Self::KEY) {
            Ok(Some(raw)) => raw,
            Ok(None) => return InterlockSettings::default(),
            Err(e) => {
                d.errors.push(e);
                return InterlockSettings::default();
            }
        };
        validate_interlocks(source, raw, d)
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn validate_interlocks(
    source: &str,
    raw: Vec<Spanned<RawInterlock>>,
    d: &mut Diagnostics,
) -> InterlockSettings {
    let mut out = Vec::new();
    let mut names = HashSet::new();
    for i in raw {
        let i = i.into_inner();
        let name = i.name.get_ref().clone();
        if !valid_name(&name) {
            d.err(
                i.name.span(),
                format!("interlock name {name:?} is not usable"),
                Some("use 1-64 letters, digits, '_' or '-'".to_owned()),
            );
            continue;
        }
        if !names.insert(name.clone()) {
            d.err(
                i.name.span(),
                format!("interlock {name:?} is defined twice"),
                Some("give each [[interlock]] its own name".to_owned()),
            );
            continue;
        }
        if i.expr.get_ref().trim().is_empty() {
            d.err(
                i.expr.span(),
                format!("interlock {name:?} has an empty expression"),
                Some(
                    "write the condition that must hold, e.g. expr = \"filler/state != 'running'\""
                        .to_owned(),
                ),
            );
            continue;
        }
        let span = i.expr.span();
        let lit = source.get(span.start..).unwrap_or("");
        let expr_offset = if lit.starts_with("\"\"\"") || lit.starts_with("'''") {
            // A newline right after the opening quotes is not part of the string.
            let after = span.start + 3;
            match source.get(after..) {
                Some(rest) if rest.starts_with("\r\n") => after + 2,
                Some(rest) if rest.starts_with('\n') => after + 1,
                _ => after,
            }
        } else {
            span.start + 1
        };
        let expr = i.expr.into_inner();
        out.push(InterlockDef {
            message: i.message.unwrap_or_else(|| expr.clone()),
            name,
            expr,
            expr_span: span,
            expr_offset,
        });
    }
    InterlockSettings { interlocks: out }
}

fn validate_commands(
    raw: Vec<Spanned<RawCommand>>,
    tags: &HashMap<&str, (bool, ValueType)>,
    interlocks: &[String],
    d: &mut Diagnostics,
) -> CommandSettings {
    let mut out = Vec::new();
    let mut seen: HashSet<TagPath> = HashSet::new();
    for c in raw {
        let c = c.into_inner();
        let Some(path) = parse_path(d, &c.tag, "command tag") else {
            continue;
        };
        let dynamic = c.dynamic.unwrap_or(false);
        let mut value_type = None;
        if !dynamic {
            match tags.get(path.as_str()) {
                None => {
                    let mut known: Vec<&str> = tags
                        .iter()
                        .filter(|(_, (w, _))| *w)
                        .map(|(p, _)| *p)
                        .collect();
                    known.sort_unstable();
                    known.truncate(10);
                    d.err(
                        c.tag.span(),
                        format!("[[command]] names an unknown tag {path}"),
                        Some(if known.is_empty() {
                            "declare it as a writable [[tag]]; a Sparkplug metric born at run time needs `dynamic = true`".to_owned()
                        } else {
                            format!(
                                "writable tags: {}; a Sparkplug metric born at run time needs `dynamic = true`",
                                known.join(", ")
                            )
                        }),
                    );
                    continue;
                }
                Some((false, _)) => {
                    d.err(
                        c.tag.span(),
                        format!("tag {path} is not writable in the plant config"),
                        Some("set `writable = true` on its [[tag]] (and use a coil or holding register), or remove this [[command]]".to_owned()),
                    );
                    continue;
                }
                Some((true, t)) => value_type = Some(*t),
            }
        }
        if !seen.insert(path.clone()) {
            d.err(
                c.tag.span(),
                format!("tag {path} has two [[command]] entries"),
                Some("merge them into one".to_owned()),
            );
            continue;
        }
        let finite =
            |d: &mut Diagnostics, v: &Option<Spanned<f64>>, field: &str, positive: bool| {
                let v = v.as_ref()?;
                let x = *v.get_ref();
                if !x.is_finite() || (positive && x <= 0.0) {
                    d.err(
                        v.span(),
                        format!("{field} {x} is not usable"),
                        Some(if positive {
                            format!("{field} is a finite number greater than zero")
                        } else {
                            format!("{field} is a finite number")
                        }),
                    );
                    return None;
                }
                Some(x)
            };
        let envelope = Envelope {
            min: finite(d, &c.min, "min", false),
            max: finite(d, &c.max, "max", false),
            max_step: finite(d, &c.max_step, "max_step", true),
            max_rate: finite(d, &c.max_rate, "max_rate", true),
            min_interval: c
                .min_interval
                .as_ref()
                .map(|_| parse_duration(d, &c.min_interval, "min_interval", Duration::ZERO)),
        };
        if let (Some(min), Some(max)) = (envelope.min, envelope.max) {
            if min > max {
                let span = c.min.as_ref().map_or(c.tag.span(), |m| m.span());
                d.err(
                    span,
                    format!("min {min} is above max {max} for {path}"),
                    Some("swap them: min is the lowest value a command may write".to_owned()),
                );
            }
        }
        if let Some(t) = value_type {
            if envelope.is_numeric() && !matches!(t, ValueType::Int | ValueType::Float) {
                d.err(
                    c.tag.span(),
                    format!(
                        "tag {path} is of type {}; min, max, max_step and max_rate need a number (int or float)",
                        t.as_str()
                    ),
                    Some("remove the numeric limits, or use min_interval and interlocks only".to_owned()),
                );
            }
        }
        let mut names = Vec::new();
        for i in &c.interlocks {
            let name = i.get_ref();
            if !interlocks.iter().any(|n| n == name) {
                d.err(
                    i.span(),
                    format!("unknown interlock {name:?}"),
                    Some(if interlocks.is_empty() {
                        "define it in an [[interlock]] with name, expr and message".to_owned()
                    } else {
                        format!("known interlocks: {}", interlocks.join(", "))
                    }),
                );
            } else if names.contains(name) {
                d.err(
                    i.span(),
                    format!("interlock {name:?} is listed twice"),
                    Some("list each interlock once".to_owned()),
                );
            } else {
                names.push(name.clone());
            }
        }
        let select_before_operate = c.select_before_operate.as_ref().map(|_| {
            parse_duration(
                d,
                &c.select_before_operate,
                "select_before_operate",
                Duration::from_secs(10),
            )
        });
        let two_person = c.two_person.map(|tp| {
            let tp = tp.into_inner();
            let role = match &tp.role {
                None => Role::Engineer,
                Some(r) => match r.get_ref().parse::<Role>() {
                    Ok(Role::Device) | Err(_) => {
                        d.err(
                            r.span(),
                            format!("two_person role {:?} is not a person's role", r.get_ref()),
                            Some("use operator, engineer or admin".to_owned()),
                        );
                        Role::Engineer
                    }
                    Ok(role) => role,
                },
            };
            TwoPerson {
                role,
                timeout: parse_duration(
                    d,
                    &tp.timeout,
                    "two_person timeout",
                    DEFAULT_TWO_PERSON_TIMEOUT,
                ),
            }
        });
        let verify = match c.verify {
            None => Verify::default(),
            Some(v) => {
                let v = v.into_inner();
                let tolerance = match &v.tolerance {
                    None => 0.0,
                    Some(t) if t.get_ref().is_finite() && *t.get_ref() >= 0.0 => *t.get_ref(),
                    Some(t) => {
                        d.err(
                            t.span(),
                            format!("verify tolerance {} is not usable", t.get_ref()),
                            Some("a finite number >= 0, in the tag's unit".to_owned()),
                        );
                        0.0
                    }
                };
                Verify {
                    timeout: parse_duration(
                        d,
                        &v.timeout,
                        "verify timeout",
                        DEFAULT_VERIFY_TIMEOUT,
                    ),
                    tolerance,
                }
            }
        };
        let on_unauthorised_change = match &c.on_unauthorised_change {
            None => OnUnauthorisedChange::Alarm,
            Some(s) => match s.get_ref().as_str() {
                "alarm" => OnUnauthorisedChange::Alarm,
                "restore" => OnUnauthorisedChange::Restore,
                other => {
                    d.err(
                        s.span(),
                        format!("on_unauthorised_change {other:?} is not known"),
                        Some("use \"alarm\" (raise and audit) or \"restore\" (also write the expected value back)".to_owned()),
                    );
                    OnUnauthorisedChange::Alarm
                }
            },
        };
        let expected = c.expected.as_ref().and_then(|e| {
            let v = match e.get_ref() {
                toml::Value::Integer(i) if value_type == Some(ValueType::Float) => {
                    Value::Float(*i as f64)
                }
                toml::Value::Integer(i) => Value::Int(*i),
                toml::Value::Float(f) => Value::Float(*f),
                toml::Value::Boolean(b) => Value::Bool(*b),
                toml::Value::String(s) => Value::String(s.as_str().into()),
                other => {
                    d.err(
                        e.span(),
                        format!(
                            "expected value of type {} is not supported",
                            other.type_str()
                        ),
                        Some("give a number, a boolean or a string".to_owned()),
                    );
                    return None;
                }
            };
            if let Some(t) = value_type {
                if !admits(t, &v) {
                    d.err(
                        e.span(),
                        format!(
                            "expected value {v} is {}, the tag {path} is {}",
                            v.kind(),
                            t.as_str()
                        ),
                        Some("give a value of the tag's type".to_owned()),
                    );
                    return None;
                }
            }
            Some(v)
        });
        out.push(TagPolicy {
            tag: path,
            envelope,
            interlocks: names,
            select_before_operate,
            two_person,
            verify,
            on_unauthorised_change,
            expected,
            dynamic,
        });
    }
    CommandSettings { tags: out }
}
