//! The `[[computed]]` and `[[rule]]` sections: owned and validated here, reported with core's
//! diagnostics. Errors in an expression point *inside* it: the expression's own span is moved
//! by the string's position in the file (exact for a string without escapes; otherwise the
//! error points at the whole string).

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::str::FromStr;
use std::time::Duration;

use ironplant_core::config::{self, Config, ConfigError, Diagnostics, Section};
use ironplant_core::{Namespace, Severity, TagId, TagMeta, TagPath, ValueType};
use serde::Deserialize;
use toml::Spanned;

use super::check::{compile, fits, references};
use super::engine::{Computed, ComputedDef};
use super::rules::{ActionDef, RuleDef, Rules};
use super::template::Template;
use super::{
    closest, pattern_matches, ExprError, NameIndex, NamespaceResolver, Resolver, Span, Type,
};

/// The source recorded on computed tags (`TagMeta::device`).
pub use ironplant_core::namespace::COMPUTED_SOURCE;

/// An expression (or template) as written in the file: its text and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExprText {
    pub text: String,
    /// The whole TOML string, quotes included.
    pub span: Range<usize>,
    /// Where the text starts in the file, when the string has no escapes (so offsets map).
    pub start: Option<usize>,
}

impl ExprText {
    /// Reads a string value of the file, working out whether its content maps byte for byte.
    pub fn new(source: &str, raw: &Spanned<String>) -> ExprText {
        ExprText::at(source, raw.get_ref().clone(), raw.span())
    }

    /// The same from a string's parsed `text` and its span in `source` (quotes included).
    pub fn at(source: &str, text: String, span: Range<usize>) -> ExprText {
        let token = source.get(span.clone()).unwrap_or("");
        let start = ["\"\"\"", "'''", "\"", "'"].iter().find_map(|q| {
            let inner = token.strip_prefix(q)?.strip_suffix(q)?;
            // A multi-line string drops the newline right after its opening quotes.
            let (skip, inner) = if q.len() == 3 {
                match inner
                    .strip_prefix("\r\n")
                    .or_else(|| inner.strip_prefix('\n'))
                {
                    Some(rest) => (inner.len() - rest.len(), rest),
                    None => (0, inner),
                }
            } else {
                (0, inner)
            };
            (inner == text).then_some(span.start + q.len() + skip)
        });
        ExprText { text, span, start }
    }

    /// The file span of an expression span (the whole string if it has escapes).
    pub fn locate(&self, s: Span) -> Range<usize> {
        match self.start {
            Some(at) => at + s.start..at + s.end.max(s.start),
            None => self.span.clone(),
        }
    }

    /// Reports an expression error at its place in the file.
    pub fn report(&self, d: &mut Diagnostics, e: ExprError) {
        d.err(self.locate(e.span), e.message, e.hint);
    }
}

// ---- [[computed]] ------------------------------------------------------------------------------

/// Every `[[computed]]` of the file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ComputedSettings {
    pub tags: Vec<ComputedConfig>,
}

/// One validated `[[computed]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ComputedConfig {
    pub path: TagPath,
    pub expr: ExprText,
    /// Declared, or inferred from the expression.
    pub value_type: ValueType,
    pub unit: Option<String>,
    pub description: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawComputed {
    path: Spanned<String>,
    expr: Spanned<String>,
    unit: Option<String>,
    #[serde(default)]
    description: String,
    #[serde(rename = "type")]
    value_type: Option<Spanned<String>>,
}

/// Resolves names at config load: the plant's `[[tag]]`s and the `[[computed]]` paths (ids
/// are local to the check; types of computed tags are filled in as they are inferred). Same
/// rules as [`NamespaceResolver`].
struct LoadResolver<'a> {
    tags: &'a HashMap<String, (TagId, Option<ValueType>)>,
    /// Paths by last level.
    names: &'a HashMap<String, Vec<String>>,
    scope: Option<&'a TagPath>,
}

fn name_index(tags: &HashMap<String, (TagId, Option<ValueType>)>) -> HashMap<String, Vec<String>> {
    let mut m: HashMap<String, Vec<String>> = HashMap::new();
    for p in tags.keys() {
        let last = p.rsplit('/').next().unwrap_or(p);
        m.entry(last.to_owned()).or_default().push(p.clone());
    }
    m
}

impl LoadResolver<'_> {
    /// The path a name stands for, if any.
    fn path_of(&self, name: &str, quoted: bool) -> Option<String> {
        if quoted {
            return Some(name.to_owned());
        }
        let scope = self.scope?;
        let direct = format!("{}/{name}", scope.as_str());
        if self.tags.contains_key(&direct) {
            return Some(direct);
        }
        let prefix = format!("{}/", scope.as_str());
        let mut below = self
            .names
            .get(name)?
            .iter()
            .filter(|p| p.starts_with(&prefix));
        let first = below.next()?;
        below.next().is_none().then(|| first.clone())
    }
}

impl Resolver for LoadResolver<'_> {
    fn resolve(&self, name: &str, quoted: bool) -> Option<(TagId, ValueType)> {
        let (id, vt) = self.tags.get(&self.path_of(name, quoted)?)?;
        Some((*id, (*vt)?))
    }

    fn expand(&self, pattern: &str) -> Vec<(TagId, ValueType)> {
        let mut v: Vec<(TagId, ValueType)> = self
            .tags
            .iter()
            .filter(|(p, _)| pattern_matches(pattern, p))
            .filter_map(|(_, (id, vt))| Some((*id, (*vt)?)))
            .collect();
        v.sort_by_key(|(id, _)| *id);
        v
    }

    fn scope(&self) -> Option<String> {
        self.scope.map(|s| s.as_str().to_owned())
    }

    fn suggest(&self, name: &str, quoted: bool) -> Option<String> {
        if quoted {
            return closest(name, self.tags.keys().map(String::as_str)).map(|p| format!("`{p}`"));
        }
        let prefix = format!("{}/", self.scope?.as_str());
        closest(
            name,
            self.tags
                .keys()
                .filter(|p| p.starts_with(&prefix))
                .filter_map(|p| p.rsplit('/').next()),
        )
        .map(str::to_owned)
    }
}

/// Known tags by path: the plant's first, then the computed ones.
fn plant_tags(plant: &Config) -> HashMap<String, (TagId, Option<ValueType>)> {
    plant
        .tags
        .iter()
        .enumerate()
        .map(|(i, t)| {
            (
                t.path.as_str().to_owned(),
                (TagId(i as u32), Some(t.value_type)),
            )
        })
        .collect()
}

impl Section for ComputedSettings {
    const KEY: &'static str = "computed";

    fn parse(source: &str, plant: &Config, d: &mut Diagnostics) -> ComputedSettings {
        let mut tags = plant_tags(plant);
        parse_computed(source, &mut tags, d)
    }

    fn tags(&self) -> Vec<TagMeta> {
        self.tags
            .iter()
            .map(|c| TagMeta {
                id: TagId(0),
                path: c.path.clone(),
                value_type: c.value_type,
                unit: c.unit.clone(),
                description: c.description.clone(),
                range: None,
                writable: false,
                device: Some(COMPUTED_SOURCE.to_owned()),
            })
            .collect()
    }
}

/// Validates `[[computed]]` against `tags` (the plant's), adding the computed tags to it.
fn parse_computed(
    source: &str,
    tags: &mut HashMap<String, (TagId, Option<ValueType>)>,
    d: &mut Diagnostics,
) -> ComputedSettings {
    let raws = match config::section::<Vec<Spanned<RawComputed>>>(source, ComputedSettings::KEY) {
        Ok(Some(r)) => r,
        Ok(None) => return ComputedSettings::default(),
        Err(e) => {
            d.errors.push(e);
            return ComputedSettings::default();
        }
    };
    struct Item {
        path: TagPath,
        expr: ExprText,
        declared: Option<ValueType>,
        unit: Option<String>,
        description: String,
        id: TagId,
    }
    let mut items: Vec<Item> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    for raw in raws {
        let raw = raw.into_inner();
        let Some(path) = config::parse_path(d, &raw.path, "computed tag") else {
            continue;
        };
        if tags.contains_key(path.as_str()) {
            d.err(
                raw.path.span(),
                format!("computed tag {path} is also a configured [[tag]]"),
                Some(
                    "a tag has one source: rename the computed tag or remove the [[tag]]"
                        .to_owned(),
                ),
            );
            continue;
        }
        if !seen.insert(path.as_str().to_owned()) {
            d.err(
                raw.path.span(),
                format!("computed tag {path} is defined twice"),
                Some("give each [[computed]] its own path".to_owned()),
            );
            continue;
        }
        let declared = match &raw.value_type {
            None => None,
            Some(t) => match ValueType::parse(t.get_ref()).filter(|v| Type::of(*v).is_some()) {
                Some(v) => Some(v),
                None => {
                    d.err(
                        t.span(),
                        format!("type {:?} is not a computed tag's type", t.get_ref()),
                        Some(
                            "use bool, int, float or string, or leave it out to infer it"
                                .to_owned(),
                        ),
                    );
                    continue;
                }
            },
        };
        let id = TagId(u32::try_from(tags.len()).unwrap_or(u32::MAX));
        tags.insert(path.as_str().to_owned(), (id, declared));
        items.push(Item {
            path,
            expr: ExprText::new(source, &raw.expr),
            declared,
            unit: raw.unit,
            description: raw.description,
            id,
        });
    }
    // Dependencies between computed tags, from the names each expression mentions.
    let index: HashMap<TagId, usize> = items.iter().enumerate().map(|(i, it)| (it.id, i)).collect();
    let mut deps: Vec<Vec<usize>> = vec![Vec::new(); items.len()];
    let names_ix = name_index(tags);
    let mut parsed = vec![true; items.len()];
    for (i, it) in items.iter().enumerate() {
        let (names, patterns) = match references(&it.expr.text) {
            Ok(r) => r,
            Err(e) => {
                it.expr.report(d, e);
                parsed[i] = false;
                continue;
            }
        };
        let scope = it.path.parent();
        let r = LoadResolver {
            tags,
            names: &names_ix,
            scope: scope.as_ref(),
        };
        for (name, quoted) in names {
            if let Some(&j) = r
                .path_of(&name, quoted)
                .and_then(|p| tags.get(&p))
                .and_then(|(id, _)| index.get(id))
            {
                deps[i].push(j);
            }
        }
        for p in patterns {
            for (path, (id, _)) in tags.iter() {
                if pattern_matches(&p, path) {
                    if let Some(&j) = index.get(id) {
                        deps[i].push(j);
                    }
                }
            }
        }
    }
    // Order: dependencies first; each cycle is reported once with all its members, and
    // what depends on a cycle is not checked further (the cycle is the error).
    let (order, cycles) = order_and_cycles(&deps);
    for cycle in cycles {
        let names: Vec<&str> = cycle
            .iter()
            .chain(cycle.first())
            .map(|i| items[*i].path.as_str())
            .collect();
        let first = &items[cycle[0]];
        d.err(
            first.expr.span.clone(),
            format!("computed tags form a cycle: {}", names.join(" → ")),
            Some(
                "a computed tag cannot depend on itself, even through others; break the cycle"
                    .to_owned(),
            ),
        );
    }
    let mut failed = vec![false; items.len()];
    let mut types: Vec<Option<ValueType>> = items.iter().map(|i| i.declared).collect();
    for i in order {
        let it = &items[i];
        if !parsed[i] || deps[i].iter().any(|j| failed[*j] && types[*j].is_none()) {
            failed[i] = true;
            continue;
        }
        let scope = it.path.parent();
        let r = LoadResolver {
            tags,
            names: &names_ix,
            scope: scope.as_ref(),
        };
        match compile(&it.expr.text, &r) {
            Err(e) => {
                it.expr.report(d, e);
                failed[i] = true;
            }
            Ok(e) => match it.declared {
                Some(vt) if !fits(e.ty(), vt) => {
                    d.err(
                        it.expr.locate(Span::new(0, it.expr.text.len())),
                        format!(
                            "the expression gives a {} but the computed tag's type is {}",
                            e.ty(),
                            vt.as_str()
                        ),
                        Some(match vt {
                            ValueType::Int => {
                                "convert it with int(…), or declare type = \"float\"".to_owned()
                            }
                            _ => format!("change type to \"{}\" or leave it out", e.ty()),
                        }),
                    );
                    failed[i] = true;
                }
                Some(_) => {}
                None => {
                    let vt = e.ty().value_type();
                    types[i] = Some(vt);
                    if let Some(entry) = tags.get_mut(it.path.as_str()) {
                        entry.1 = Some(vt);
                    }
                }
            },
        }
    }
    ComputedSettings {
        tags: items
            .into_iter()
            .zip(types)
            .map(|(it, t)| ComputedConfig {
                path: it.path,
                expr: it.expr,
                value_type: t.unwrap_or(ValueType::Float),
                unit: it.unit,
                description: it.description,
            })
            .collect(),
    }
}

/// The nodes that do not depend on a cycle, dependencies first (`deps[v]`: what `v` reads),
/// and every cycle (each member reads the next), each once.
fn order_and_cycles(deps: &[Vec<usize>]) -> (Vec<usize>, Vec<Vec<usize>>) {
    let n = deps.len();
    let mut readers: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut missing: Vec<usize> = vec![0; n];
    for (v, ds) in deps.iter().enumerate() {
        let mut ds = ds.clone();
        ds.sort_unstable();
        ds.dedup();
        missing[v] = ds.len();
        for u in ds {
            readers[u].push(v);
        }
    }
    let mut ready: Vec<usize> = (0..n).filter(|v| missing[*v] == 0).rev().collect();
    let mut order = Vec::with_capacity(n);
    while let Some(u) = ready.pop() {
        order.push(u);
        for &v in &readers[u] {
            missing[v] -= 1;
            if missing[v] == 0 {
                ready.push(v);
            }
        }
    }
    // Each node left reads at least one node left: walking what it reads comes back.
    let mut cycles = Vec::new();
    let mut done = vec![false; n];
    for start in 0..n {
        if missing[start] == 0 || done[start] {
            continue;
        }
        let mut path: Vec<usize> = Vec::new();
        let mut cur = start;
        loop {
            if done[cur] {
                break;
            }
            if let Some(at) = path.iter().position(|x| *x == cur) {
                let mut cycle = path[at..].to_vec();
                let k = (0..cycle.len()).min_by_key(|k| cycle[*k]).unwrap_or(0);
                cycle.rotate_left(k);
                cycles.push(cycle);
                break;
            }
            path.push(cur);
            match deps[cur].iter().find(|u| missing[**u] > 0) {
                Some(&u) => cur = u,
                None => break,
            }
        }
        for p in path {
            done[p] = true;
        }
    }
    (order, cycles)
}

impl ComputedSettings {
    /// The engine for a running platform: every expression compiled against `ns` (which holds
    /// the computed tags, [`Config::namespace`]). Errors say which computed tag and why.
    pub fn build(&self, ns: &Namespace) -> Result<Computed, Vec<String>> {
        let defs = self.defs(ns, &NameIndex::new(ns))?;
        Computed::new(defs).map_err(|e| vec![e.to_string()])
    }

    /// The compiled definitions, for a caller that adds its own (e.g. alarm conditions as
    /// hidden computed tags) before [`Computed::new`].
    pub fn defs(&self, ns: &Namespace, index: &NameIndex) -> Result<Vec<ComputedDef>, Vec<String>> {
        let mut defs = Vec::new();
        let mut errors = Vec::new();
        for c in &self.tags {
            let Some(meta) = ns.lookup(c.path.as_str()) else {
                errors.push(format!("computed tag {} is not in the namespace", c.path));
                continue;
            };
            let r = NamespaceResolver {
                namespace: ns,
                index,
                scope: c.path.parent(),
            };
            match compile(&c.expr.text, &r) {
                Ok(expr) => defs.push(ComputedDef {
                    output: meta.id,
                    name: c.path.as_str().to_owned(),
                    value_type: meta.value_type,
                    expr,
                }),
                Err(e) => errors.push(format!("computed tag {}: {e}", c.path)),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(defs)
    }

    /// Reads and validates `[[computed]]` of a file on its own (tests, tools): the settings
    /// and every problem, with spans of `source`.
    pub fn from_source(source: &str) -> (ComputedSettings, Vec<ConfigError>) {
        let mut tags = lenient_plant(source)
            .into_iter()
            .enumerate()
            .map(|(i, (p, vt))| (p, (TagId(i as u32), Some(vt))))
            .collect();
        let mut d = Diagnostics::new();
        let s = parse_computed(source, &mut tags, &mut d);
        (s, d.errors)
    }
}

/// The `[[tag]]`s of a file (path, type, writable), read leniently (core validates them).
fn lenient_plant_full(source: &str) -> Vec<(String, ValueType, bool)> {
    #[derive(Deserialize)]
    struct RawTag {
        path: String,
        #[serde(default)]
        writable: bool,
        modbus: Option<RawPoint>,
    }
    #[derive(Deserialize)]
    struct RawPoint {
        #[serde(rename = "type")]
        data_type: Option<String>,
        table: Option<String>,
        scale: Option<f64>,
        offset: Option<f64>,
    }
    config::section::<Vec<RawTag>>(source, "tag")
        .ok()
        .flatten()
        .unwrap_or_default()
        .into_iter()
        .map(|t| {
            let vt = match t.modbus {
                Some(p) => match (p.table.as_deref(), p.data_type.as_deref()) {
                    (Some("coil" | "discrete_input"), _) | (_, Some("bool")) => ValueType::Bool,
                    _ if p.scale.is_some_and(|s| s != 1.0)
                        || p.offset.is_some_and(|o| o != 0.0) =>
                    {
                        ValueType::Float
                    }
                    (_, Some(t)) if t.starts_with('f') || t == "double" => ValueType::Float,
                    (_, Some(_)) | (_, None) => ValueType::Int,
                },
                None => ValueType::Float,
            };
            (t.path, vt, t.writable)
        })
        .collect()
}

fn lenient_plant(source: &str) -> Vec<(String, ValueType)> {
    lenient_plant_full(source)
        .into_iter()
        .map(|(p, t, _)| (p, t))
        .collect()
}

// ---- expressions of other sections ---------------------------------------------------------

/// The names an expression of any section may read at config load (the `[[tag]]`s and the
/// `[[computed]]` tags, with their types), for sections that hold expressions (alarm
/// conditions, interlocks): build it once per file, check each expression with
/// [`ConfigScope::check`] so errors point inside the expression like ours.
pub struct ConfigScope {
    tags: HashMap<String, (TagId, Option<ValueType>)>,
    names: HashMap<String, Vec<String>>,
}

impl ConfigScope {
    pub fn new(source: &str, plant: &Config) -> ConfigScope {
        let mut tags = plant_tags(plant);
        parse_computed(source, &mut tags, &mut Diagnostics::new());
        let names = name_index(&tags);
        ConfigScope { tags, names }
    }

    /// Compiles `expr` (bare names are tags of `asset`, or the one tag of that name below it),
    /// reporting a problem into `d` at its place in the file; `want`: the type it must have.
    /// Returns its type when it is valid.
    pub fn check(
        &self,
        expr: &ExprText,
        asset: Option<&TagPath>,
        want: Option<Type>,
        d: &mut Diagnostics,
    ) -> Option<Type> {
        let r = LoadResolver {
            tags: &self.tags,
            names: &self.names,
            scope: asset,
        };
        match compile(&expr.text, &r) {
            Err(e) => {
                expr.report(d, e);
                None
            }
            Ok(e) => match want {
                Some(w) if !fits(e.ty(), w.value_type()) => {
                    d.err(
                        expr.locate(Span::new(0, expr.text.len())),
                        format!("the expression is a {}, but a {w} is needed", e.ty()),
                        (w == Type::Bool).then(|| "compare it, e.g. `level > 90`".to_owned()),
                    );
                    None
                }
                _ => Some(e.ty()),
            },
        }
    }
}

// ---- [[rule]] ----------------------------------------------------------------------------------

/// Every `[[rule]]` of the file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RuleSettings {
    pub rules: Vec<RuleConfig>,
}

/// One validated `[[rule]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleConfig {
    pub name: String,
    /// Bare names in the rule's expressions are tags of this asset.
    pub asset: Option<TagPath>,
    pub when: ExprText,
    /// `for`: how long the condition must hold (zero: fire at once).
    pub hold: Duration,
    pub then: Vec<RuleAction>,
}

/// One action of a rule as configured.
#[derive(Debug, Clone, PartialEq)]
pub enum RuleAction {
    Write {
        tag: TagPath,
        value: ExprText,
    },
    Event {
        message: ExprText,
        severity: Severity,
    },
    Publish {
        topic: ExprText,
        payload: ExprText,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: Spanned<String>,
    asset: Option<Spanned<String>>,
    when: Spanned<String>,
    #[serde(rename = "for")]
    hold: Option<Spanned<String>>,
    then: Spanned<Vec<Spanned<RawAction>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAction {
    write: Option<Spanned<String>>,
    value: Option<Spanned<String>>,
    event: Option<Spanned<String>>,
    severity: Option<Spanned<String>>,
    publish: Option<Spanned<String>>,
    payload: Option<Spanned<String>>,
}

impl Section for RuleSettings {
    const KEY: &'static str = "rule";

    fn parse(source: &str, plant: &Config, d: &mut Diagnostics) -> RuleSettings {
        let writable: HashSet<String> = plant
            .tags
            .iter()
            .filter(|t| t.writable)
            .map(|t| t.path.as_str().to_owned())
            .collect();
        let mut tags = plant_tags(plant);
        parse_rules(source, &mut tags, &writable, d)
    }
}

impl RuleSettings {
    /// Reads and validates `[[rule]]` (and the `[[computed]]` it may read) of a file on its
    /// own: the settings and every problem of the rules, with spans of `source`.
    pub fn from_source(source: &str) -> (RuleSettings, Vec<ConfigError>) {
        let plant = lenient_plant_full(source);
        let writable = plant.iter().filter(|t| t.2).map(|t| t.0.clone()).collect();
        let mut tags = plant
            .into_iter()
            .enumerate()
            .map(|(i, (p, vt, _))| (p, (TagId(i as u32), Some(vt))))
            .collect();
        let mut d = Diagnostics::new();
        let s = parse_rules(source, &mut tags, &writable, &mut d);
        (s, d.errors)
    }

    /// The engine for a running platform, compiled against `ns`.
    pub fn build(&self, ns: &Namespace) -> Result<Rules, Vec<String>> {
        let index = NameIndex::new(ns);
        let mut defs = Vec::new();
        let mut errors = Vec::new();
        for r in &self.rules {
            let res = NamespaceResolver {
                namespace: ns,
                index: &index,
                scope: r.asset.clone(),
            };
            let mut fail =
                |what: &str, e: String| errors.push(format!("rule {:?}: {what}: {e}", r.name));
            let when = match compile(&r.when.text, &res) {
                Ok(w) => w,
                Err(e) => {
                    fail("when", e.to_string());
                    continue;
                }
            };
            let mut actions = Vec::new();
            for a in &r.then {
                match a {
                    RuleAction::Write { tag, value } => {
                        let Some(meta) = ns.lookup(tag.as_str()) else {
                            fail("write", format!("tag {tag} is not in the namespace"));
                            continue;
                        };
                        match compile(&value.text, &res) {
                            Ok(v) => actions.push(ActionDef::Write {
                                tag: meta.id,
                                value_type: meta.value_type,
                                value: v,
                            }),
                            Err(e) => fail("value", e.to_string()),
                        }
                    }
                    RuleAction::Event { message, severity } => {
                        match Template::compile(&message.text, &res) {
                            Ok(m) => actions.push(ActionDef::RaiseEvent {
                                severity: *severity,
                                message: m,
                            }),
                            Err(e) => fail("event", e.to_string()),
                        }
                    }
                    RuleAction::Publish { topic, payload } => {
                        match (
                            Template::compile(&topic.text, &res),
                            Template::compile(&payload.text, &res),
                        ) {
                            (Ok(t), Ok(p)) => actions.push(ActionDef::Publish {
                                topic: t,
                                payload: p,
                            }),
                            (Err(e), _) | (_, Err(e)) => fail("publish", e.to_string()),
                        }
                    }
                }
            }
            defs.push(RuleDef {
                name: r.name.clone(),
                when,
                hold: r.hold,
                actions,
            });
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let name = |t: TagId| {
            ns.tag(t)
                .map_or_else(|| format!("#{}", t.0), |m| m.path.as_str().to_owned())
        };
        Rules::new(defs, &name).map_err(|e| vec![e.to_string()])
    }
}

fn parse_rules(
    source: &str,
    tags: &mut HashMap<String, (TagId, Option<ValueType>)>,
    writable: &HashSet<String>,
    d: &mut Diagnostics,
) -> RuleSettings {
    let raws = match config::section::<Vec<Spanned<RawRule>>>(source, RuleSettings::KEY) {
        Ok(Some(r)) => r,
        Ok(None) => return RuleSettings::default(),
        Err(e) => {
            d.errors.push(e);
            return RuleSettings::default();
        }
    };
    // The computed tags (and their types) are names rules may read; their own errors are
    // reported by the [[computed]] section.
    parse_computed(source, tags, &mut Diagnostics::new());
    let names_ix = name_index(tags);
    let mut names = HashSet::new();
    let mut out = Vec::new();
    for raw in raws {
        let span = raw.span();
        let raw = raw.into_inner();
        let name = raw.name.get_ref().clone();
        let name_ok = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !name_ok {
            d.err(
                raw.name.span(),
                format!("rule name {name:?} is not usable"),
                Some(
                    "use 1-64 letters, digits, '_' or '-'; it names the rule in events and logs"
                        .to_owned(),
                ),
            );
        } else if !names.insert(name.clone()) {
            d.err(
                raw.name.span(),
                format!("rule {name:?} is defined twice"),
                Some("give each [[rule]] its own name".to_owned()),
            );
        }
        let asset = raw
            .asset
            .as_ref()
            .and_then(|a| config::parse_path(d, a, "asset"));
        let resolver = LoadResolver {
            tags,
            names: &names_ix,
            scope: asset.as_ref(),
        };
        let check =
            |d: &mut Diagnostics, t: &ExprText, want: Option<(ValueType, &str)>| match compile(
                &t.text, &resolver,
            ) {
                Err(e) => t.report(d, e),
                Ok(e) => {
                    if let Some((vt, what)) = want {
                        if !fits(e.ty(), vt) {
                            d.err(
                                t.locate(Span::new(0, t.text.len())),
                                format!("{what} is a {}, but a {} is needed", e.ty(), vt.as_str()),
                                Some(match vt {
                                    ValueType::Bool => "compare it, e.g. `level > 90`".to_owned(),
                                    ValueType::Int => "convert it with int(…)".to_owned(),
                                    _ => format!("give a {} expression", vt.as_str()),
                                }),
                            );
                        }
                    }
                }
            };
        let when = ExprText::new(source, &raw.when);
        check(d, &when, Some((ValueType::Bool, "the condition")));
        let hold = config::parse_duration(d, &raw.hold, "for", Duration::ZERO);
        if raw.then.get_ref().is_empty() {
            d.err(
                raw.then.span(),
                format!("rule {name:?} has no action"),
                Some(
                    "e.g. then = [{ event = \"tank level high\", severity = \"warning\" }]"
                        .to_owned(),
                ),
            );
        }
        let mut then = Vec::new();
        for a in raw.then.into_inner() {
            let aspan = a.span();
            let a = a.into_inner();
            let kinds = [a.write.is_some(), a.event.is_some(), a.publish.is_some()];
            if kinds.iter().filter(|k| **k).count() != 1 {
                d.err(
                    aspan,
                    "an action has exactly one of write, event or publish",
                    Some("{ write = \"path\", value = \"expr\" }, { event = \"message\", severity = \"warning\" } or { publish = \"topic\", payload = \"…\" }".to_owned()),
                );
                continue;
            }
            let stray =
                |d: &mut Diagnostics, f: &Option<Spanned<String>>, key: &str, with: &str| {
                    if let Some(f) = f {
                        d.err(
                            f.span(),
                            format!("`{key}` belongs to a {with} action"),
                            None,
                        );
                    }
                };
            if let Some(w) = &a.write {
                stray(d, &a.severity, "severity", "event");
                stray(d, &a.payload, "payload", "publish");
                let Some(path) = config::parse_path(d, w, "tag") else {
                    continue;
                };
                let Some(value) = &a.value else {
                    d.err(
                        aspan,
                        format!("the write to {path} has no value"),
                        Some("add value = \"<expression>\"".to_owned()),
                    );
                    continue;
                };
                let value = ExprText::new(source, value);
                let target = resolver.tags.get(path.as_str()).copied();
                match target {
                    None => d.err(
                        w.span(),
                        format!("rule writes unknown tag {path}"),
                        Some("write a configured [[tag]] with writable = true".to_owned()),
                    ),
                    Some(_) if !writable.contains(path.as_str()) => d.err(
                        w.span(),
                        format!("rule writes tag {path}, which is not writable"),
                        Some(
                            "set writable = true on the [[tag]] (computed tags are never writable)"
                                .to_owned(),
                        ),
                    ),
                    Some((_, vt)) => {
                        check(d, &value, vt.map(|vt| (vt, "the value")));
                    }
                }
                then.push(RuleAction::Write { tag: path, value });
            } else if let Some(m) = &a.event {
                stray(d, &a.value, "value", "write");
                stray(d, &a.payload, "payload", "publish");
                let severity = match &a.severity {
                    None => Severity::Warning,
                    Some(s) => match Severity::from_str(s.get_ref()) {
                        Ok(v) => v,
                        Err(e) => {
                            d.err(s.span(), e, None);
                            Severity::Warning
                        }
                    },
                };
                let message = ExprText::new(source, m);
                if let Err(e) = Template::compile(&message.text, &resolver) {
                    message.report(d, e);
                }
                then.push(RuleAction::Event { message, severity });
            } else if let Some(t) = &a.publish {
                stray(d, &a.value, "value", "write");
                stray(d, &a.severity, "severity", "event");
                let topic = ExprText::new(source, t);
                let payload = a
                    .payload
                    .as_ref()
                    .map(|p| ExprText::new(source, p))
                    .unwrap_or(ExprText {
                        text: String::new(),
                        span: aspan.clone(),
                        start: None,
                    });
                if topic.text.is_empty() || topic.text.contains(['#', '+']) {
                    d.err(
                        t.span(),
                        format!("publish topic {:?} is not a topic name", topic.text),
                        Some("a non-empty topic without the wildcards + and #, e.g. \"plant/line1/alerts\"".to_owned()),
                    );
                }
                for x in [&topic, &payload] {
                    if let Err(e) = Template::compile(&x.text, &resolver) {
                        x.report(d, e);
                    }
                }
                then.push(RuleAction::Publish { topic, payload });
            }
        }
        let _ = span;
        out.push(RuleConfig {
            name,
            asset,
            when,
            hold,
            then,
        });
    }
    RuleSettings { rules: out }
}
