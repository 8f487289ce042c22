//! The `[integrity]` section of `ironplant.toml`: global settings, per-tag overrides
//! (`[[integrity.tag]]`), redundant groups (`[[integrity.redundant]]`), physical relations
//! (`[[integrity.balance]]`) and model groups (`[[integrity.model]]`). Parsed through core's
//! [`Section`] so every problem is reported at file:line:col with a hint, all at once. See
//! docs/integrity.md.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use ironplant_core::config::{self, Config, Diagnostics, Section};
use ironplant_core::{TagPath, ValueType};
use serde::Deserialize;
use toml::Spanned;

use crate::anomaly::AnomalySettings;
use crate::validate::{TagKind, TagRule, ValidationSettings, MAX_SPIKE_WINDOW};

/// Default training window.
pub const DEFAULT_TRAINING: Duration = Duration::from_secs(2 * 3600);

/// The whole `[integrity]` section, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct IntegrityConfig {
    /// Integrity checks run at all (`enabled = false` turns the processor off).
    pub enabled: bool,
    /// How long the detectors learn before their models freeze.
    pub training: Duration,
    pub validation: ValidationSettings,
    pub anomaly: AnomalySettings,
    /// Model every line's measurements by default (besides the `[[integrity.model]]`s).
    pub default_models: bool,
    pub tags: Vec<TagOverride>,
    pub redundant: Vec<RedundantConfig>,
    pub balances: Vec<BalanceConfig>,
    pub models: Vec<ModelConfig>,
}

impl Default for IntegrityConfig {
    fn default() -> IntegrityConfig {
        IntegrityConfig {
            enabled: true,
            training: DEFAULT_TRAINING,
            validation: ValidationSettings::default(),
            anomaly: AnomalySettings::default(),
            default_models: true,
            tags: Vec::new(),
            redundant: Vec::new(),
            balances: Vec::new(),
            models: Vec::new(),
        }
    }
}

/// `[[integrity.tag]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct TagOverride {
    pub tag: TagPath,
    pub rule: TagRule,
}

/// `[[integrity.redundant]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct RedundantConfig {
    pub id: String,
    pub tags: Vec<TagPath>,
    pub abs: f64,
    pub rel: f64,
    pub hold: Duration,
    pub max_age: Duration,
}

/// One term of a balance side.
#[derive(Debug, Clone, PartialEq)]
pub struct TermConfig {
    pub tag: TagPath,
    /// `delta` or `integral`.
    pub integral: bool,
    pub gain: f64,
    pub wrap: Option<f64>,
}

/// `[[integrity.balance]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct BalanceConfig {
    pub id: String,
    pub lhs: Vec<TermConfig>,
    pub rhs: Vec<TermConfig>,
    pub window: Duration,
    pub abs: f64,
    pub rel: f64,
    pub hold: Duration,
    pub max_gap: Duration,
}

/// `[[integrity.model]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub asset: TagPath,
    /// Tags to model (default: the measurements under the asset).
    pub tags: Option<Vec<TagPath>>,
    /// Tags left out of the group altogether.
    pub exclude: Vec<TagPath>,
    /// Tags whose change starts a settle time (default: state codes and setpoints).
    pub settle_on: Option<Vec<TagPath>>,
}

impl Section for IntegrityConfig {
    const KEY: &'static str = "integrity";

    fn parse(source: &str, plant: &Config, d: &mut Diagnostics) -> IntegrityConfig {
        match config::section::<RawIntegrity>(source, Self::KEY) {
            Ok(Some(raw)) => validate(raw, plant, d),
            Ok(None) => IntegrityConfig::default(),
            Err(e) => {
                d.errors.push(e);
                IntegrityConfig::default()
            }
        }
    }
}

// ---- raw (as written) --------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIntegrity {
    enabled: Option<bool>,
    training: Option<Spanned<String>>,
    stale_factor: Option<Spanned<f64>>,
    min_stale: Option<Spanned<String>>,
    rate_span_time: Option<Spanned<String>>,
    flatline_probability: Option<Spanned<f64>>,
    flatline_min: Option<Spanned<i64>>,
    flatline_max: Option<Spanned<i64>>,
    spike_window: Option<Spanned<i64>>,
    spike_k: Option<Spanned<f64>>,
    clock_jump: Option<Spanned<String>>,
    cusum_k: Option<Spanned<f64>>,
    cusum_h: Option<Spanned<f64>>,
    settle: Option<Spanned<String>>,
    models: Option<bool>,
    #[serde(default)]
    tag: Vec<Spanned<RawTag>>,
    #[serde(default)]
    redundant: Vec<Spanned<RawRedundant>>,
    #[serde(default)]
    balance: Vec<Spanned<RawBalance>>,
    #[serde(default)]
    model: Vec<Spanned<RawModel>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTag {
    tag: Spanned<String>,
    kind: Option<Spanned<String>>,
    min: Option<Spanned<f64>>,
    max: Option<Spanned<f64>>,
    max_rate: Option<Spanned<f64>>,
    stale_after: Option<Spanned<String>>,
    flatline_samples: Option<Spanned<i64>>,
    noise_band: Option<Spanned<f64>>,
    spike: Option<bool>,
    wrap: Option<Spanned<f64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRedundant {
    id: Spanned<String>,
    tags: Spanned<Vec<Spanned<String>>>,
    abs: Option<Spanned<f64>>,
    rel: Option<Spanned<f64>>,
    #[serde(rename = "for")]
    hold: Option<Spanned<String>>,
    max_age: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTerm {
    tag: Spanned<String>,
    op: Spanned<String>,
    gain: Option<Spanned<f64>>,
    wrap: Option<Spanned<f64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBalance {
    id: Spanned<String>,
    lhs: Spanned<Vec<Spanned<RawTerm>>>,
    rhs: Spanned<Vec<Spanned<RawTerm>>>,
    window: Option<Spanned<String>>,
    abs: Option<Spanned<f64>>,
    rel: Option<Spanned<f64>>,
    #[serde(rename = "for")]
    hold: Option<Spanned<String>>,
    max_gap: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    asset: Spanned<String>,
    tags: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    exclude: Vec<Spanned<String>>,
    settle_on: Option<Vec<Spanned<String>>>,
}

// ---- validation --------------------------------------------------------------------------------

/// The plant's tags and assets, to check references.
struct Known {
    tags: HashMap<String, ValueType>,
    assets: HashSet<String>,
}

impl Known {
    fn of(plant: &Config) -> Known {
        let mut k = Known {
            tags: HashMap::new(),
            assets: plant
                .assets
                .iter()
                .map(|a| a.path.as_str().to_owned())
                .collect(),
        };
        let mut add = |p: &TagPath, t: ValueType| {
            let mut cur = p.parent();
            while let Some(a) = cur {
                cur = a.parent();
                k.assets.insert(a.as_str().to_owned());
            }
            k.tags.insert(p.as_str().to_owned(), t);
        };
        for t in &plant.tags {
            add(&t.path, t.value_type);
        }
        for t in plant.section_tags() {
            add(&t.path, t.value_type);
        }
        k
    }

    fn tag(&self, d: &mut Diagnostics, raw: &Spanned<String>, numeric: bool) -> Option<TagPath> {
        let p = config::parse_path(d, raw, "tag")?;
        match self.tags.get(p.as_str()) {
            None => {
                d.err(
                    raw.span(),
                    format!("tag {p} is not defined"),
                    Some("name a [[tag]] of this file (or a computed tag)".to_owned()),
                );
                None
            }
            Some(t)
                if numeric && !matches!(t, ValueType::Int | ValueType::Float | ValueType::Bool) =>
            {
                d.err(
                    raw.span(),
                    format!("tag {p} is {}, not a number", t.as_str()),
                    Some("integrity checks need numeric tags".to_owned()),
                );
                None
            }
            Some(_) => Some(p),
        }
    }
}

fn duration(
    d: &mut Diagnostics,
    raw: &Option<Spanned<String>>,
    field: &str,
    default: Duration,
) -> Duration {
    config::parse_duration(d, raw, field, default)
}

/// A delay that may be zero (`for = "0s"`), at most a day.
fn delay(
    d: &mut Diagnostics,
    raw: &Option<Spanned<String>>,
    field: &str,
    default: Duration,
) -> Duration {
    config::parse_delay(d, raw, field, default, Duration::from_secs(24 * 3600))
}

/// A finite number, optionally > 0 or ≥ 0.
fn number(
    d: &mut Diagnostics,
    raw: &Option<Spanned<f64>>,
    field: &str,
    min: f64,
    strict: bool,
    default: f64,
) -> f64 {
    let Some(v) = raw else { return default };
    let x = *v.get_ref();
    let ok = x.is_finite() && if strict { x > min } else { x >= min };
    if ok {
        x
    } else {
        d.err(
            v.span(),
            format!(
                "{field} {x} must be a finite number {} {min}",
                if strict { "above" } else { "of at least" }
            ),
            None,
        );
        default
    }
}

fn opt_number(
    d: &mut Diagnostics,
    raw: &Option<Spanned<f64>>,
    field: &str,
    min: f64,
    strict: bool,
) -> Option<f64> {
    raw.as_ref()
        .map(|_| number(d, raw, field, min, strict, f64::NAN))
        .filter(|x| !x.is_nan())
}

fn validate(raw: RawIntegrity, plant: &Config, d: &mut Diagnostics) -> IntegrityConfig {
    let def = IntegrityConfig::default();
    let (dv, da) = (&def.validation, &def.anomaly);
    let known = Known::of(plant);
    let training = duration(d, &raw.training, "training", def.training);
    let flatline_min = config::int_in(
        d,
        &raw.flatline_min,
        "flatline_min",
        2..=100_000,
        dv.flatline_min as usize,
    ) as u32;
    let flatline_max = config::int_in(
        d,
        &raw.flatline_max,
        "flatline_max",
        2..=1_000_000,
        dv.flatline_max as usize,
    ) as u32;
    if flatline_max < flatline_min {
        if let Some(r) = &raw.flatline_max {
            d.err(
                r.span(),
                format!("flatline_max {flatline_max} is below flatline_min {flatline_min}"),
                None,
            );
        }
    }
    let p = number(
        d,
        &raw.flatline_probability,
        "flatline_probability",
        0.0,
        true,
        dv.flatline_probability,
    );
    if p >= 1.0 {
        if let Some(r) = &raw.flatline_probability {
            d.err(
                r.span(),
                "flatline_probability must be below 1",
                Some("e.g. 1e-9".to_owned()),
            );
        }
    }
    let validation = ValidationSettings {
        stale_factor: number(
            d,
            &raw.stale_factor,
            "stale_factor",
            1.0,
            false,
            dv.stale_factor,
        ),
        min_stale: duration(d, &raw.min_stale, "min_stale", dv.min_stale),
        rate_span_time: duration(d, &raw.rate_span_time, "rate_span_time", dv.rate_span_time),
        flatline_probability: p.min(0.5),
        flatline_min,
        flatline_max: flatline_max.max(flatline_min),
        flatline_run_factor: dv.flatline_run_factor,
        spike_window: config::int_in(
            d,
            &raw.spike_window,
            "spike_window",
            3..=MAX_SPIKE_WINDOW as i64,
            dv.spike_window,
        ),
        spike_k: number(d, &raw.spike_k, "spike_k", 1.0, false, dv.spike_k),
        clock_jump: duration(d, &raw.clock_jump, "clock_jump", dv.clock_jump),
    };
    let anomaly = AnomalySettings {
        cusum_k: number(d, &raw.cusum_k, "cusum_k", 0.0, false, da.cusum_k),
        cusum_h: number(d, &raw.cusum_h, "cusum_h", 0.0, true, da.cusum_h),
        settle: delay(d, &raw.settle, "settle", da.settle),
        ..da.clone()
    };

    let mut tags = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    for t in raw.tag {
        let span = t.span();
        let t = t.into_inner();
        let Some(path) = known.tag(d, &t.tag, true) else {
            continue;
        };
        if !seen.insert(path.as_str().to_owned()) {
            d.err(
                t.tag.span(),
                format!("tag {path} has two [[integrity.tag]] entries"),
                Some("merge them into one".to_owned()),
            );
            continue;
        }
        let kind = t.kind.as_ref().and_then(|k| {
            let parsed = TagKind::parse(k.get_ref());
            if parsed.is_none() {
                d.err(
                    k.span(),
                    format!("unknown kind {:?}", k.get_ref()),
                    Some("use measurement, counter, status, setpoint or ignored".to_owned()),
                );
            }
            parsed
        });
        let min = opt_number(d, &t.min, "min", f64::NEG_INFINITY, true);
        let max = opt_number(d, &t.max, "max", f64::NEG_INFINITY, true);
        if let (Some(lo), Some(hi)) = (min, max) {
            if lo >= hi {
                d.err(
                    span.clone(),
                    format!("min {lo} is not below max {hi}"),
                    None,
                );
            }
        }
        let flatline_samples = t.flatline_samples.as_ref().map(|_| {
            config::int_in(d, &t.flatline_samples, "flatline_samples", 0..=1_000_000, 0) as u32
        });
        tags.push(TagOverride {
            tag: path,
            rule: TagRule {
                kind,
                min,
                max,
                max_rate: opt_number(d, &t.max_rate, "max_rate", 0.0, true),
                stale_after: t
                    .stale_after
                    .as_ref()
                    .map(|_| duration(d, &t.stale_after, "stale_after", Duration::from_secs(1))),
                flatline_samples,
                noise_band: opt_number(d, &t.noise_band, "noise_band", 0.0, false),
                spike: t.spike,
                wrap: opt_number(d, &t.wrap, "wrap", 1.0, false),
            },
        });
    }

    let mut ids: HashSet<String> = HashSet::new();
    let mut check_id = |d: &mut Diagnostics, id: &Spanned<String>, what: &str| -> bool {
        let s = id.get_ref();
        if s.is_empty()
            || !s
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
        {
            d.err(
                id.span(),
                format!("{what} id {s:?} must be letters, digits, '_', '-' or '.'"),
                None,
            );
            return false;
        }
        if !ids.insert(format!("{what}:{s}")) {
            d.err(
                id.span(),
                format!("{what} id {s:?} is used twice"),
                Some("give each its own id".to_owned()),
            );
            return false;
        }
        true
    };

    let mut redundant = Vec::new();
    for r in raw.redundant {
        let r = r.into_inner();
        let ok = check_id(d, &r.id, "redundant");
        let list_span = r.tags.span();
        let paths: Vec<TagPath> = r
            .tags
            .into_inner()
            .iter()
            .filter_map(|t| known.tag(d, t, true))
            .collect();
        if paths.len() < 2 {
            d.err(list_span, "a redundant group needs at least two tags", None);
            continue;
        }
        if r.abs.is_none() && r.rel.is_none() {
            d.err(
                r.id.span(),
                format!("redundant group {:?} needs a tolerance", r.id.get_ref()),
                Some("give abs = ... (in the tags' unit) and/or rel = ... (a fraction)".to_owned()),
            );
        }
        let cfg = RedundantConfig {
            id: r.id.get_ref().clone(),
            tags: paths,
            abs: number(d, &r.abs, "abs", 0.0, false, 0.0),
            rel: number(d, &r.rel, "rel", 0.0, false, 0.0),
            hold: delay(d, &r.hold, "for", Duration::from_secs(10)),
            max_age: duration(d, &r.max_age, "max_age", Duration::from_secs(10)),
        };
        if ok {
            redundant.push(cfg);
        }
    }

    let mut balances = Vec::new();
    for b in raw.balance {
        let b = b.into_inner();
        let ok = check_id(d, &b.id, "balance");
        let side = |d: &mut Diagnostics,
                    terms: Spanned<Vec<Spanned<RawTerm>>>,
                    which: &str|
         -> Vec<TermConfig> {
            let span = terms.span();
            let mut out = Vec::new();
            for t in terms.into_inner() {
                let t = t.into_inner();
                let Some(tag) = known.tag(d, &t.tag, true) else {
                    continue;
                };
                let integral = match t.op.get_ref().as_str() {
                    "integral" => true,
                    "delta" => false,
                    other => {
                        d.err(t.op.span(), format!("unknown op {other:?}"), Some("use \"delta\" (change over the window) or \"integral\" (∫ value dt, in unit·seconds)".to_owned()));
                        continue;
                    }
                };
                let gain = t.gain.as_ref().map_or(1.0, |g| {
                    let x = *g.get_ref();
                    if !x.is_finite() || x == 0.0 {
                        d.err(
                            g.span(),
                            format!("gain {x} must be a finite number other than 0"),
                            None,
                        );
                    }
                    x
                });
                if integral && t.wrap.is_some() {
                    if let Some(w) = &t.wrap {
                        d.err(w.span(), "wrap applies to delta terms only", None);
                    }
                }
                out.push(TermConfig {
                    tag,
                    integral,
                    gain,
                    wrap: opt_number(d, &t.wrap, "wrap", 1.0, false),
                });
            }
            if out.is_empty() {
                d.err(
                    span,
                    format!("{which} needs at least one term"),
                    Some("e.g. [{ tag = \"...\", op = \"delta\" }]".to_owned()),
                );
            }
            out
        };
        let lhs = side(d, b.lhs, "lhs");
        let rhs = side(d, b.rhs, "rhs");
        if b.abs.is_none() && b.rel.is_none() {
            d.err(
                b.id.span(),
                format!("balance {:?} needs a tolerance", b.id.get_ref()),
                Some(
                    "give abs = ... (in the relation's unit) and/or rel = ... (a fraction)"
                        .to_owned(),
                ),
            );
        }
        let cfg = BalanceConfig {
            id: b.id.get_ref().clone(),
            lhs,
            rhs,
            window: duration(d, &b.window, "window", Duration::from_secs(300)),
            abs: number(d, &b.abs, "abs", 0.0, false, 0.0),
            rel: number(d, &b.rel, "rel", 0.0, false, 0.0),
            hold: delay(d, &b.hold, "for", Duration::from_secs(30)),
            max_gap: duration(d, &b.max_gap, "max_gap", Duration::from_secs(10)),
        };
        if ok && !cfg.lhs.is_empty() && !cfg.rhs.is_empty() {
            balances.push(cfg);
        }
    }

    let mut models = Vec::new();
    let mut model_assets: HashSet<String> = HashSet::new();
    for m in raw.model {
        let m = m.into_inner();
        let Some(asset) = config::parse_path(d, &m.asset, "asset") else {
            continue;
        };
        if !known.assets.contains(asset.as_str()) {
            d.err(
                m.asset.span(),
                format!("asset {asset} has no tags"),
                Some("name an asset of this file, e.g. the line".to_owned()),
            );
            continue;
        }
        if !model_assets.insert(asset.as_str().to_owned()) {
            d.err(
                m.asset.span(),
                format!("asset {asset} has two [[integrity.model]] entries"),
                None,
            );
            continue;
        }
        let under = |d: &mut Diagnostics, list: &[Spanned<String>]| -> Vec<TagPath> {
            list.iter()
                .filter_map(|t| {
                    let p = known.tag(d, t, true)?;
                    if !p.is_under(&asset) {
                        d.err(
                            t.span(),
                            format!("tag {p} is not under asset {asset}"),
                            None,
                        );
                        return None;
                    }
                    Some(p)
                })
                .collect()
        };
        let tags = m.tags.as_deref().map(|l| under(d, l));
        let exclude = under(d, &m.exclude);
        let settle_on = m.settle_on.as_deref().map(|l| under(d, l));
        models.push(ModelConfig {
            asset,
            tags,
            exclude,
            settle_on,
        });
    }

    IntegrityConfig {
        enabled: raw.enabled.unwrap_or(true),
        training,
        validation,
        anomaly,
        default_models: raw.models.unwrap_or(true),
        tags,
        redundant,
        balances,
        models,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ironplant_core::config::Registry;

    const PLANT: &str = r#"
[[tag]]
path = "a/s/r/l1/tank/plc/level"
unit = "%"
min = 0.0
max = 100.0
[[tag]]
path = "a/s/r/l1/tank/plc/inflow"
unit = "L/min"
min = 0.0
max = 700.0
[[tag]]
path = "a/s/r/l1/tank/plc/t1"
unit = "°C"
[[tag]]
path = "a/s/r/l1/tank/plc/t2"
unit = "°C"
"#;

    fn parse(extra: &str) -> Result<IntegrityConfig, String> {
        let src = format!("{PLANT}\n{extra}");
        config::parse_with(
            "plant.toml",
            &src,
            &Registry::new().with::<IntegrityConfig>(),
        )
        .map(|c| (*c.get::<IntegrityConfig>()).clone())
        .map_err(|e| e.to_string())
    }

    #[test]
    fn absent_means_defaults() {
        assert_eq!(parse(""), Ok(IntegrityConfig::default()));
    }

    #[test]
    fn a_full_section_parses() {
        let c = parse(
            r#"
[integrity]
training = "30m"
cusum_h = 12
settle = "0s"

[[integrity.tag]]
tag = "a/s/r/l1/tank/plc/level"
max_rate = 0.5
flatline_samples = 0

[[integrity.redundant]]
id = "temps"
tags = ["a/s/r/l1/tank/plc/t1", "a/s/r/l1/tank/plc/t2"]
abs = 0.5
for = "20s"

[[integrity.balance]]
id = "tank"
lhs = [{ tag = "a/s/r/l1/tank/plc/level", op = "delta", gain = 100.0 }]
rhs = [{ tag = "a/s/r/l1/tank/plc/inflow", op = "integral", gain = 0.0166667 }]
window = "5m"
abs = 30

[[integrity.model]]
asset = "a/s/r/l1"
exclude = ["a/s/r/l1/tank/plc/t2"]
"#,
        )
        .expect("valid");
        assert_eq!(c.training, Duration::from_secs(1800));
        assert_eq!(c.anomaly.cusum_h, 12.0);
        assert_eq!(c.anomaly.settle, Duration::ZERO);
        assert_eq!(c.tags[0].rule.max_rate, Some(0.5));
        assert_eq!(c.tags[0].rule.flatline_samples, Some(0));
        assert_eq!(c.redundant[0].hold, Duration::from_secs(20));
        assert!(c.balances[0].rhs[0].integral);
        assert_eq!(c.models[0].exclude.len(), 1);
    }

    #[test]
    fn every_mistake_is_reported_at_its_place() {
        let err = parse(
            r#"
[integrity]
training = "soon"

[[integrity.tag]]
tag = "a/s/r/l1/tank/plc/nope"

[[integrity.redundant]]
id = "temps"
tags = ["a/s/r/l1/tank/plc/t1"]
abs = 0.5

[[integrity.balance]]
id = "tank"
lhs = [{ tag = "a/s/r/l1/tank/plc/level", op = "diff" }]
rhs = [{ tag = "a/s/r/l1/tank/plc/inflow", op = "integral" }]
"#,
        )
        .expect_err("invalid");
        for want in [
            "plant.toml:21:12: error: training \"soon\" is not a duration",
            "plant.toml:24:7: error: tag a/s/r/l1/tank/plc/nope is not defined",
            "a redundant group needs at least two tags",
            "plant.toml:33:48: error: unknown op \"diff\"",
            "lhs needs at least one term",
            "balance \"tank\" needs a tolerance",
        ] {
            assert!(err.contains(want), "missing {want:?} in:\n{err}");
        }
    }
}
