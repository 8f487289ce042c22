//! The `[[alarm]]` definitions and the `[alarms]` globals of `ironplant.toml`, owned here and
//! parsed through core's [`Section`] (errors at file:line:col with a hint, all at once).
//!
//! Tags are checked against the plant's `[[tag]]`s and the tags of the sections parsed before
//! this one ([`Config::section_tags`]: register the computed-tag section before
//! [`AlarmConfigs`]), or a caller's list ([`AlarmConfigs::parse_with_tags`]). Expressions
//! (`condition`, `suppress_when`) are kept as text with their span: the runtime compiles them
//! with the `expr` module and hands [`AlarmConfigs::build`] the bool input tag of each.

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use ironplant_core::config::{self, Config, ConfigError, Diagnostics, Registry, Section};
use ironplant_core::{Namespace, TagId, TagPath, Value, ValueType};
use serde::Deserialize;
use toml::Spanned;

use super::engine::EngineSettings;
use super::kpi::KpiOptions;
use super::{AlarmDef, Condition, Setpoint, KINDS};

/// Registers both alarm sections (`[[alarm]]` after whatever `registry` has, so computed tags
/// registered before are known).
pub fn register(registry: Registry) -> Registry {
    registry.with::<AlarmSettings>().with::<AlarmConfigs>()
}

/// Default longest shelve.
pub const DEFAULT_MAX_SHELVE: Duration = Duration::from_secs(8 * 3600);
/// Longest on/off delay accepted.
pub const MAX_DELAY: Duration = Duration::from_secs(3600);
/// Default window of a rate-of-change alarm.
pub const DEFAULT_RATE_WINDOW: Duration = Duration::from_secs(10);

/// `[alarms]`: settings of the whole alarm system.
#[derive(Debug, Clone, PartialEq)]
pub struct AlarmSettings {
    /// Operators sharing the alarm load, for the per-operator KPIs.
    pub operators: u32,
    /// The longest shelve an operator may ask for.
    pub max_shelve: Duration,
    /// More than this many alarms per operator in 10 minutes is a flood.
    pub flood_threshold: u32,
    /// Activations within `chatter_window` that make an alarm chattering.
    pub chatter_count: usize,
    pub chatter_window: Duration,
    /// In alarm longer than this is a standing (stale) alarm.
    pub stale_after: Duration,
    /// Transitions kept in memory for the KPIs.
    pub history: usize,
    /// The longest a changed alarm state waits before its snapshot is written (transitions
    /// meanwhile are in the event store, replayed over the snapshot after a crash).
    pub save_interval: Duration,
}

impl Default for AlarmSettings {
    fn default() -> AlarmSettings {
        let k = KpiOptions::default();
        AlarmSettings {
            operators: k.operators,
            max_shelve: DEFAULT_MAX_SHELVE,
            flood_threshold: k.flood_threshold,
            chatter_count: k.chatter_count,
            chatter_window: k.chatter_window,
            stale_after: k.stale_after,
            history: EngineSettings::default().history,
            save_interval: Duration::from_secs(1),
        }
    }
}

impl AlarmSettings {
    pub fn engine(&self) -> EngineSettings {
        EngineSettings {
            max_shelve: self.max_shelve,
            history: self.history,
        }
    }

    pub fn kpi(&self) -> KpiOptions {
        KpiOptions {
            operators: self.operators,
            flood_threshold: self.flood_threshold,
            chatter_count: self.chatter_count,
            chatter_window: self.chatter_window,
            stale_after: self.stale_after,
            ..KpiOptions::default()
        }
    }
}

/// Every `[[alarm]]` of the file, in file order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AlarmConfigs(pub Vec<AlarmConfig>);

/// An expression of the `expr` module as written, with its span in the file (for the
/// runtime to compile and report errors at the right place).
#[derive(Debug, Clone, PartialEq)]
pub struct ExprSource {
    pub text: String,
    pub span: Range<usize>,
    /// Where bare names are looked up: the asset of the alarm's tag (or the alarm's subject
    /// asset).
    pub scope: Option<TagPath>,
}

/// One validated `[[alarm]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct AlarmConfig {
    pub id: String,
    /// The tag it watches (for `condition` alarms with an expression: its subject, a tag or
    /// an asset).
    pub tag: TagPath,
    pub condition: Condition,
    /// The setpoint tag of a `deviation` alarm (its [`Setpoint::Tag`] is resolved by `build`).
    pub setpoint_tag: Option<TagPath>,
    /// The expression of a `condition` alarm (none: the tag itself is the bool input).
    pub condition_expr: Option<ExprSource>,
    pub suppress_when: Option<ExprSource>,
    pub deadband: f64,
    pub on_delay: Duration,
    pub off_delay: Duration,
    pub priority: u8,
    pub message: String,
    pub consequence: String,
    pub response: String,
    /// None: the tag's asset path.
    pub class: Option<String>,
    pub latching: bool,
    /// Where the `[[alarm]]` is, for errors found later (e.g. by the expression compiler).
    pub span: Range<usize>,
}

impl AlarmConfig {
    /// The engine's definition: tags resolved in `ns`, expressions turned into bool input
    /// tags by `input` (the runtime compiles them into computed tags). Errors name the alarm.
    pub fn build(
        &self,
        ns: &Namespace,
        input: &mut dyn FnMut(&ExprSource) -> Result<TagId, String>,
    ) -> Result<AlarmDef, String> {
        let lookup = |p: &TagPath, what: &str| {
            ns.lookup(p.as_str())
                .map(|m| m.id)
                .ok_or_else(|| format!("alarm {:?}: {what} {p} is not in the namespace", self.id))
        };
        let mut condition = self.condition.clone();
        if let (Condition::Deviation { setpoint, .. }, Some(sp)) =
            (&mut condition, &self.setpoint_tag)
        {
            *setpoint = Setpoint::Tag(lookup(sp, "setpoint tag")?);
        }
        let tag = match &self.condition_expr {
            Some(e) => input(e).map_err(|why| format!("alarm {:?}: condition: {why}", self.id))?,
            None => lookup(&self.tag, "tag")?,
        };
        let suppress = self
            .suppress_when
            .as_ref()
            .map(|e| input(e).map_err(|why| format!("alarm {:?}: suppress_when: {why}", self.id)))
            .transpose()?;
        let mut def = AlarmDef::new(&self.id, tag, self.tag.clone(), condition);
        def.deadband = self.deadband;
        def.on_delay = self.on_delay;
        def.off_delay = self.off_delay;
        def.priority = self.priority;
        def.message = Arc::from(self.message.as_str());
        def.consequence = Arc::from(self.consequence.as_str());
        def.response = Arc::from(self.response.as_str());
        def.suppress = suppress;
        if let Some(c) = &self.class {
            def.class = Arc::from(c.as_str());
        }
        def.latching = self.latching;
        Ok(def)
    }
}

impl AlarmConfigs {
    /// Every definition, or every problem.
    pub fn build(
        &self,
        ns: &Namespace,
        input: &mut dyn FnMut(&ExprSource) -> Result<TagId, String>,
    ) -> Result<Vec<AlarmDef>, Vec<String>> {
        let mut defs = Vec::new();
        let mut errors = Vec::new();
        for a in &self.0 {
            match a.build(ns, input) {
                Ok(d) => defs.push(d),
                Err(e) => errors.push(e),
            }
        }
        if errors.is_empty() {
            Ok(defs)
        } else {
            Err(errors)
        }
    }

    /// Parses `[[alarm]]` with `extra` tags known besides the plant's and the sections' (e.g.
    /// computed tags whose section is parsed after this one).
    pub fn parse_with_tags(
        source: &str,
        plant: &Config,
        extra: &[(TagPath, ValueType)],
        d: &mut Diagnostics,
    ) -> AlarmConfigs {
        let mut known = Known::of(plant);
        for (p, t) in extra {
            known.add(p, *t);
        }
        parse_alarms(source, &known, d)
    }
}

impl Section for AlarmConfigs {
    const KEY: &'static str = "alarm";

    fn parse(source: &str, plant: &Config, d: &mut Diagnostics) -> AlarmConfigs {
        let alarms = parse_alarms(source, &Known::of(plant), d);
        check_expressions(source, plant, &alarms, d);
        alarms
    }
}

/// Checks every `condition` and `suppress_when` expression at load, at its place in the file:
/// syntax, names (bare names are tags of the alarm's scope), a bool result.
fn check_expressions(source: &str, plant: &Config, alarms: &AlarmConfigs, d: &mut Diagnostics) {
    if alarms
        .0
        .iter()
        .all(|a| a.condition_expr.is_none() && a.suppress_when.is_none())
    {
        return;
    }
    let scope = crate::expr::ConfigScope::new(source, plant);
    for a in &alarms.0 {
        for e in [&a.condition_expr, &a.suppress_when].into_iter().flatten() {
            let text = crate::expr::ExprText::at(source, e.text.clone(), e.span.clone());
            scope.check(&text, e.scope.as_ref(), Some(crate::expr::Type::Bool), d);
        }
    }
}

impl Section for AlarmSettings {
    const KEY: &'static str = "alarms";

    fn parse(source: &str, _plant: &Config, d: &mut Diagnostics) -> AlarmSettings {
        match config::section::<RawSettings>(source, Self::KEY) {
            Ok(Some(raw)) => validate_settings(raw, d),
            Ok(None) => AlarmSettings::default(),
            Err(e) => {
                d.errors.push(e);
                AlarmSettings::default()
            }
        }
    }
}

/// The tags (and their assets) an alarm may name.
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
        for t in &plant.tags {
            k.add(&t.path, t.value_type);
        }
        for t in plant.section_tags() {
            k.add(&t.path, t.value_type);
        }
        k
    }

    fn add(&mut self, p: &TagPath, t: ValueType) {
        let mut cur = p.parent();
        while let Some(a) = cur {
            cur = a.parent();
            self.assets.insert(a.as_str().to_owned());
        }
        self.tags.insert(p.as_str().to_owned(), t);
    }
}

// ---- raw (as written) --------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    operators: Option<Spanned<i64>>,
    max_shelve: Option<Spanned<String>>,
    flood_threshold: Option<Spanned<i64>>,
    chatter_count: Option<Spanned<i64>>,
    chatter_window: Option<Spanned<String>>,
    stale_after: Option<Spanned<String>>,
    history: Option<Spanned<i64>>,
    save_interval: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAlarm {
    id: Option<Spanned<String>>,
    tag: Spanned<String>,
    kind: Spanned<String>,
    limit: Option<Spanned<f64>>,
    setpoint: Option<Spanned<RawSetpoint>>,
    band: Option<Spanned<f64>>,
    rate: Option<Spanned<f64>>,
    window: Option<Spanned<String>>,
    state: Option<Spanned<RawState>>,
    #[serde(rename = "match")]
    matches: Option<Spanned<String>>,
    condition: Option<Spanned<String>>,
    deadband: Option<Spanned<f64>>,
    on_delay: Option<Spanned<String>>,
    off_delay: Option<Spanned<String>>,
    priority: Option<Spanned<i64>>,
    message: Option<String>,
    #[serde(default)]
    consequence: String,
    #[serde(default)]
    response: String,
    suppress_when: Option<Spanned<String>>,
    class: Option<Spanned<String>>,
    #[serde(default)]
    latching: bool,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawSetpoint {
    Number(f64),
    Tag(String),
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawState {
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
}

// ---- validation --------------------------------------------------------------------------------

fn int_field(
    d: &mut Diagnostics,
    raw: &Option<Spanned<i64>>,
    field: &str,
    range: std::ops::RangeInclusive<i64>,
    default: usize,
) -> usize {
    config::int_in(d, raw, field, range, default)
}

fn validate_settings(raw: RawSettings, d: &mut Diagnostics) -> AlarmSettings {
    let def = AlarmSettings::default();
    let positive = |d: &mut Diagnostics, raw: &Option<Spanned<String>>, field: &str, default| {
        config::parse_duration(d, raw, field, default)
    };
    let max_shelve = positive(d, &raw.max_shelve, "max_shelve", def.max_shelve);
    if max_shelve > Duration::from_secs(30 * 24 * 3600) {
        if let Some(r) = &raw.max_shelve {
            d.err(
                r.span(),
                "max_shelve is longer than 30 days",
                Some(
                    "a shelve is temporary; take a long-lived alarm out of service instead"
                        .to_owned(),
                ),
            );
        }
    }
    AlarmSettings {
        operators: u32::try_from(int_field(d, &raw.operators, "operators", 1..=1000, 1))
            .unwrap_or(1),
        max_shelve,
        flood_threshold: u32::try_from(int_field(
            d,
            &raw.flood_threshold,
            "flood_threshold",
            1..=100_000,
            10,
        ))
        .unwrap_or(10),
        chatter_count: int_field(d, &raw.chatter_count, "chatter_count", 2..=1000, 3),
        chatter_window: positive(d, &raw.chatter_window, "chatter_window", def.chatter_window),
        stale_after: positive(d, &raw.stale_after, "stale_after", def.stale_after),
        history: int_field(d, &raw.history, "history", 0..=10_000_000, def.history),
        save_interval: positive(d, &raw.save_interval, "save_interval", def.save_interval),
    }
}

fn parse_alarms(source: &str, known: &Known, d: &mut Diagnostics) -> AlarmConfigs {
    let raw = match config::section::<Vec<Spanned<RawAlarm>>>(source, AlarmConfigs::KEY) {
        Ok(Some(raw)) => raw,
        Ok(None) => return AlarmConfigs::default(),
        Err(e) => {
            d.errors.push(e);
            return AlarmConfigs::default();
        }
    };
    let mut out = Vec::new();
    let mut ids: HashSet<String> = HashSet::new();
    // Limits per tag, to check high > low across alarms: (kind, limit, span).
    let mut limits: HashMap<TagPath, Vec<Limit>> = HashMap::new();
    for a in raw {
        let span = a.span();
        let a = a.into_inner();
        if let Some(cfg) = validate_alarm(a, span, known, d) {
            if !ids.insert(cfg.id.clone()) {
                d.err(
                    cfg.span.clone(),
                    format!("alarm id {:?} is used twice", cfg.id),
                    Some("give one of them its own `id = \"...\"`".to_owned()),
                );
                continue;
            }
            if let Some(l) = cfg.condition.limit() {
                if matches!(
                    cfg.condition,
                    Condition::High { .. }
                        | Condition::HighHigh { .. }
                        | Condition::Low { .. }
                        | Condition::LowLow { .. }
                ) {
                    limits.entry(cfg.tag.clone()).or_default().push((
                        cfg.condition.kind(),
                        l,
                        cfg.span.clone(),
                    ));
                }
            }
            out.push(cfg);
        }
    }
    for (tag, ls) in &limits {
        check_limit_order(tag, ls, d);
    }
    AlarmConfigs(out)
}

/// A limit alarm's kind, limit and span.
type Limit = (&'static str, f64, Range<usize>);

/// high_high ≥ high > low ≥ low_low on one tag.
fn check_limit_order(tag: &TagPath, ls: &[Limit], d: &mut Diagnostics) {
    let rank = |k: &str| match k {
        "low_low" => 0,
        "low" => 1,
        "high" => 2,
        _ => 3,
    };
    for (i, (ka, la, _)) in ls.iter().enumerate() {
        for (kb, lb, sb) in &ls[i + 1..] {
            let (lo, hi, lo_l, hi_l) = if rank(ka) <= rank(kb) {
                (*ka, *kb, *la, *lb)
            } else {
                (*kb, *ka, *lb, *la)
            };
            let crosses = rank(lo) < 2 && rank(hi) >= 2;
            let bad = if crosses {
                hi_l <= lo_l
            } else if rank(lo) < rank(hi) {
                hi_l < lo_l
            } else {
                false
            };
            if bad {
                d.err(
                    sb.clone(),
                    format!(
                        "inconsistent limits on {tag}: {hi} limit {hi_l} is not above {lo} limit {lo_l}"
                    ),
                    Some("expect low_low ≤ low < high ≤ high_high on one tag".to_owned()),
                );
            }
        }
    }
}

fn numeric(t: ValueType) -> bool {
    matches!(t, ValueType::Int | ValueType::Float)
}

fn validate_alarm(
    a: RawAlarm,
    span: Range<usize>,
    known: &Known,
    d: &mut Diagnostics,
) -> Option<AlarmConfig> {
    let errors_before = d.errors.len();
    let tag = config::parse_path(d, &a.tag, "alarm tag");
    let kind_text = a.kind.get_ref().as_str();
    let Some(kind) = KINDS.iter().copied().find(|k| *k == kind_text) else {
        d.err(
            a.kind.span(),
            format!("unknown alarm kind {kind_text:?}"),
            Some(format!("use one of {}", KINDS.join(", "))),
        );
        return None;
    };
    let tag = tag?;
    let tag_type = known.tags.get(tag.as_str()).copied();
    let has_expr = kind == "condition" && a.condition.is_some();
    if tag_type.is_none() {
        let subject_ok = has_expr && known.assets.contains(tag.as_str());
        if !subject_ok {
            d.err(
                a.tag.span(),
                format!("alarm on unknown tag {tag}"),
                Some(if has_expr {
                    "name a configured tag or asset as the subject of a condition alarm".to_owned()
                } else {
                    "declare it as a [[tag]] (or a computed tag), or check the spelling".to_owned()
                }),
            );
        }
    }
    // The fields each kind uses; any other given is a mistake worth reporting.
    let uses: &[&str] = match kind {
        "high" | "high_high" | "low" | "low_low" => &["limit", "deadband"],
        "deviation" => &["setpoint", "band", "deadband"],
        "rate" => &["rate", "window", "deadband"],
        "state" => &["state", "match"],
        "condition" => &["condition"],
        _ => &[],
    };
    let given: [(&str, Option<Range<usize>>); 9] = [
        ("limit", a.limit.as_ref().map(Spanned::span)),
        ("setpoint", a.setpoint.as_ref().map(Spanned::span)),
        ("band", a.band.as_ref().map(Spanned::span)),
        ("rate", a.rate.as_ref().map(Spanned::span)),
        ("window", a.window.as_ref().map(Spanned::span)),
        ("state", a.state.as_ref().map(Spanned::span)),
        ("match", a.matches.as_ref().map(Spanned::span)),
        ("condition", a.condition.as_ref().map(Spanned::span)),
        ("deadband", a.deadband.as_ref().map(Spanned::span)),
    ];
    for (field, sp) in &given {
        if let Some(sp) = sp {
            if !uses.contains(field) {
                d.err(
                    sp.clone(),
                    format!("`{field}` does not apply to a {kind} alarm"),
                    Some(if uses.is_empty() {
                        format!("a {kind} alarm takes no parameter; remove it")
                    } else {
                        format!("a {kind} alarm takes {}", uses.join(", "))
                    }),
                );
            }
        }
    }
    let need_numeric = matches!(
        kind,
        "high" | "high_high" | "low" | "low_low" | "deviation" | "rate"
    );
    if let Some(t) = tag_type {
        if need_numeric && !numeric(t) {
            d.err(
                a.tag.span(),
                format!(
                    "a {kind} alarm needs a numeric tag; {tag} is {}",
                    t.as_str()
                ),
                Some("use a state alarm for a bool or string tag".to_owned()),
            );
        }
        if kind == "condition" && !has_expr && t != ValueType::Bool {
            d.err(
                a.tag.span(),
                format!(
                    "a condition alarm without `condition` needs a bool tag; {tag} is {}",
                    t.as_str()
                ),
                Some("write condition = \"<expression>\", or name a bool tag".to_owned()),
            );
        }
    }
    let finite = |d: &mut Diagnostics, v: &Spanned<f64>, field: &str, positive: bool| {
        let x = *v.get_ref();
        if !x.is_finite() || (positive && x <= 0.0) {
            d.err(
                v.span(),
                format!(
                    "{field} {x} must be a finite number{}",
                    if positive { " above zero" } else { "" }
                ),
                None,
            );
        }
        x
    };
    let required = |d: &mut Diagnostics, field: &str, example: &str| {
        d.err(
            span.clone(),
            format!("a {kind} alarm needs `{field}`"),
            Some(format!("e.g. {field} = {example}")),
        );
    };
    let mut setpoint_tag = None;
    let condition = match kind {
        "high" | "high_high" | "low" | "low_low" => {
            let limit = match &a.limit {
                Some(l) => finite(d, l, "limit", false),
                None => {
                    required(d, "limit", "90.0");
                    0.0
                }
            };
            match kind {
                "high" => Condition::High { limit },
                "high_high" => Condition::HighHigh { limit },
                "low" => Condition::Low { limit },
                _ => Condition::LowLow { limit },
            }
        }
        "deviation" => {
            let band = match &a.band {
                Some(b) => finite(d, b, "band", true),
                None => {
                    required(d, "band", "5.0");
                    1.0
                }
            };
            let setpoint = match a.setpoint.as_ref().map(|s| (s.span(), s.get_ref())) {
                Some((_, RawSetpoint::Number(x))) => Setpoint::Constant(*x),
                Some((sp, RawSetpoint::Tag(p))) => {
                    let raw = Spanned::new(sp.clone(), p.clone());
                    if let Some(path) = config::parse_path(d, &raw, "setpoint tag") {
                        match known.tags.get(path.as_str()) {
                            Some(t) if numeric(*t) => {}
                            Some(t) => d.err(
                                sp,
                                format!("setpoint tag {path} is {}, not a number", t.as_str()),
                                None,
                            ),
                            None => d.err(
                                sp,
                                format!("unknown setpoint tag {path}"),
                                Some("name a configured numeric tag, or give a number".to_owned()),
                            ),
                        }
                        setpoint_tag = Some(path);
                    }
                    Setpoint::Tag(TagId(0))
                }
                None => {
                    required(d, "setpoint", "50.0 (or a tag path)");
                    Setpoint::Constant(0.0)
                }
            };
            Condition::Deviation { setpoint, band }
        }
        "rate" => {
            let rate = match &a.rate {
                Some(r) => finite(d, r, "rate", true),
                None => {
                    required(d, "rate", "2.5 (units per second)");
                    1.0
                }
            };
            let window = match &a.window {
                None => DEFAULT_RATE_WINDOW,
                Some(_) => config::parse_duration(d, &a.window, "window", DEFAULT_RATE_WINDOW),
            };
            Condition::Rate { rate, window }
        }
        "state" => {
            let state = match a.state.as_ref().map(Spanned::get_ref) {
                Some(RawState::Bool(b)) => Value::Bool(*b),
                Some(RawState::Int(i)) => Value::Int(*i),
                Some(RawState::Float(x)) => Value::Float(*x),
                Some(RawState::Text(s)) => Value::String(Arc::from(s.as_str())),
                None => {
                    required(d, "state", "true");
                    Value::Bool(true)
                }
            };
            if let (Some(t), Some(s)) = (tag_type, &a.state) {
                let fits = match state {
                    Value::Bool(_) => t == ValueType::Bool,
                    Value::String(_) => t == ValueType::String,
                    _ => numeric(t),
                };
                if !fits {
                    d.err(
                        s.span(),
                        format!("state {} cannot match {tag}, a {} tag", state, t.as_str()),
                        Some(format!("give a {} value", t.as_str())),
                    );
                }
            }
            let equal = match a.matches.as_ref().map(|m| m.get_ref().as_str()) {
                None | Some("equal") => true,
                Some("not_equal") => false,
                Some(other) => {
                    if let Some(m) = &a.matches {
                        d.err(
                            m.span(),
                            format!("match {other:?} is not known"),
                            Some("use \"equal\" or \"not_equal\"".to_owned()),
                        );
                    }
                    true
                }
            };
            Condition::State { state, equal }
        }
        "bad_quality" => Condition::BadQuality,
        _ => Condition::Condition,
    };
    // Bare names in the expressions are tags of the tag's asset (or of the subject asset).
    let scope = if tag_type.is_some() {
        tag.parent()
    } else {
        Some(tag.clone())
    };
    let expr = |d: &mut Diagnostics, raw: &Option<Spanned<String>>, field: &str| {
        let raw = raw.as_ref()?;
        if raw.get_ref().trim().is_empty() {
            d.err(
                raw.span(),
                format!("{field} is empty"),
                Some("write a boolean expression, e.g. \"line.running == false\"".to_owned()),
            );
            return None;
        }
        Some(ExprSource {
            text: raw.get_ref().clone(),
            span: raw.span(),
            scope: scope.clone(),
        })
    };
    let condition_expr = expr(d, &a.condition, "condition");
    let suppress_when = expr(d, &a.suppress_when, "suppress_when");
    let deadband = match &a.deadband {
        Some(v) => {
            let x = finite(d, v, "deadband", false);
            if x < 0.0 {
                d.err(
                    v.span(),
                    "deadband must not be negative",
                    Some("e.g. deadband = 2.0".to_owned()),
                );
            }
            x.max(0.0)
        }
        None => 0.0,
    };
    let on_delay = config::parse_delay(d, &a.on_delay, "on_delay", Duration::ZERO, MAX_DELAY);
    let off_delay = config::parse_delay(d, &a.off_delay, "off_delay", Duration::ZERO, MAX_DELAY);
    let priority = match &a.priority {
        None => 3,
        Some(p) => match u8::try_from(*p.get_ref()) {
            Ok(v @ 1..=4) => v,
            _ => {
                d.err(
                    p.span(),
                    format!("priority {} is out of range", p.get_ref()),
                    Some("use 1 (highest, urgent) to 4 (lowest)".to_owned()),
                );
                3
            }
        },
    };
    let id = match &a.id {
        Some(id) => {
            let s = id.get_ref();
            let ok = !s.is_empty()
                && s.len() <= 300
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-./:".contains(c));
            if !ok {
                d.err(
                    id.span(),
                    format!("alarm id {s:?} is not usable"),
                    Some("use 1-300 letters, digits, '_', '-', '.', '/' or ':'".to_owned()),
                );
            }
            s.clone()
        }
        None => format!("{tag}:{kind}"),
    };
    let class = match &a.class {
        Some(c) if c.get_ref().trim().is_empty() => {
            d.err(
                c.span(),
                "class is empty",
                Some("omit it to use the tag's asset path".to_owned()),
            );
            None
        }
        Some(c) => Some(c.get_ref().clone()),
        None => None,
    };
    let message = a
        .message
        .unwrap_or_else(|| format!("{} {}", tag.name(), kind.replace('_', " ")));
    if d.errors.len() > errors_before {
        return None;
    }
    Some(AlarmConfig {
        id,
        tag,
        condition,
        setpoint_tag,
        condition_expr,
        suppress_when,
        deadband,
        on_delay,
        off_delay,
        priority,
        message,
        consequence: a.consequence,
        response: a.response,
        class,
        latching: a.latching,
        span,
    })
}

/// Parses a config file's `[[alarm]]` and `[alarms]` with the plant, for tools and tests:
/// the sections and every error with its span.
pub fn from_source(source: &str) -> (AlarmConfigs, AlarmSettings, Vec<ConfigError>) {
    match config::parse_with("ironplant.toml", source, &register(Registry::new())) {
        Ok(c) => (
            (*c.get::<AlarmConfigs>()).clone(),
            (*c.get::<AlarmSettings>()).clone(),
            Vec::new(),
        ),
        Err(e) => (AlarmConfigs::default(), AlarmSettings::default(), e.errors),
    }
}
