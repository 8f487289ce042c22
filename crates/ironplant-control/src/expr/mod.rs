//! The expression language of computed tags, rules, alarm conditions and interlocks: a small,
//! typed, always-terminating language, parsed and type-checked at config load and evaluated
//! incrementally on the tag bus.
//!
//! # Why our own language and not CEL (the `cel` crate)
//! The issue allows "CEL through the `cel` crate, or equal". We wrote our own (about the size
//! of one module: Pratt parser → typed program → evaluator) because what we need is exactly
//! what a general CEL interpreter does not give:
//! - **static checking at config load with precise spans**: an unknown tag, a type error or a
//!   wrong argument count is reported at `file:line:col` *inside* the expression; the `cel`
//!   crate type-checks at run time, over dynamic values;
//! - **tags as first-class, typed inputs** resolved once to dense [`TagId`]s (no map lookups by
//!   name on the hot path), with **quality propagation** (a Bad input makes the result Bad, with
//!   the input that caused it) which CEL has no notion of;
//! - **stateful time functions per call site** (`rate`, `avg_over`, `time_in_state`, …) on a
//!   clock passed in (`now`), so tests drive hours of behaviour in microseconds;
//! - **bounded cost**: no loops, no recursion, no user functions, no comprehensions; the text is
//!   at most [`syntax::MAX_LEN`] bytes and [`syntax::MAX_DEPTH`] levels deep, so every evaluation
//!   terminates in time linear in the expression's size (aggregates over a tag set are linear in
//!   the set, fixed at compile time).
//!
//! The syntax is CEL-like (`a && b`, `c ? x : y`, `min(a, b)`), so it reads familiar; the
//! reference is `docs/expressions.md`.
//!
//! # Layers
//! - [`syntax`]: lexer and parser → untyped tree with byte spans.
//! - [`compile`] (`check`): names resolved through a [`Resolver`], types checked → [`Expr`].
//! - `eval`: values, quality propagation and the per-call-site state of time functions.
//! - [`Computed`] (`engine`): N computed tags, dependency graph, cycle check, incremental
//!   evaluation in topological order, `tick(now)` for time-dependent ones.
//! - [`Rules`] (`rules`): `when <cond> [for <d>] then <actions>`, edge-triggered, actions as data.
//! - `config`: the `[[computed]]` and `[[rule]]` sections.

mod check;
pub mod config;
mod engine;
mod eval;
mod rules;
pub mod syntax;
mod template;

use std::fmt;
use std::ops::Range;

use ironplant_core::{TagId, ValueType};

pub use check::{compile, references, Expr};
pub use config::{
    ComputedConfig, ComputedSettings, ConfigScope, ExprText, RuleAction, RuleConfig, RuleSettings,
    COMPUTED_SOURCE,
};
pub use engine::{Computed, ComputedDef, ComputedError, ComputedStats};
pub use eval::{Cause, CauseKind, ExprState, Inputs, Outcome, Val, MAX_WINDOW_SAMPLES};
pub use rules::{Action, ActionDef, RuleDef, RuleEvent, RuleOutput, Rules, RulesError};
pub use template::Template;

/// A byte range of the expression text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    pub fn new(start: usize, end: usize) -> Span {
        Span { start, end }
    }

    /// From the start of `self` to the end of `other`.
    pub fn to(self, other: Span) -> Span {
        Span::new(self.start, other.end.max(self.start))
    }

    pub fn range(self) -> Range<usize> {
        self.start..self.end
    }

    /// The span moved `by` bytes to the right (into an enclosing text).
    pub fn offset(self, by: usize) -> Span {
        Span::new(self.start + by, self.end + by)
    }
}

/// A problem with an expression, at a byte span of its text, with a hint how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExprError {
    pub span: Span,
    pub message: String,
    pub hint: Option<String>,
}

impl fmt::Display for ExprError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "at {}..{}: {}",
            self.span.start, self.span.end, self.message
        )?;
        if let Some(h) = &self.hint {
            write!(f, " (hint: {h})")?;
        }
        Ok(())
    }
}

impl std::error::Error for ExprError {}

/// The type of an expression or of a tag it reads. Tags of array or DataSet type cannot be
/// read by expressions (a type error at compile time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Type {
    Bool,
    Int,
    Float,
    String,
}

impl Type {
    pub fn as_str(self) -> &'static str {
        match self {
            Type::Bool => "bool",
            Type::Int => "int",
            Type::Float => "float",
            Type::String => "string",
        }
    }

    pub fn value_type(self) -> ValueType {
        match self {
            Type::Bool => ValueType::Bool,
            Type::Int => ValueType::Int,
            Type::Float => ValueType::Float,
            Type::String => ValueType::String,
        }
    }

    /// The expression type of a tag's value type; `None` for arrays and DataSets.
    pub fn of(t: ValueType) -> Option<Type> {
        match t {
            ValueType::Bool => Some(Type::Bool),
            ValueType::Int => Some(Type::Int),
            ValueType::Float => Some(Type::Float),
            ValueType::String => Some(Type::String),
            ValueType::Array(_) | ValueType::DataSet => None,
        }
    }

    pub(crate) fn is_numeric(self) -> bool {
        matches!(self, Type::Int | Type::Float)
    }
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How an expression's names become tags; the caller implements it for its scope (the
/// namespace, an asset, aliases). Called only at compile time.
pub trait Resolver {
    /// The tag a name stands for: a bare identifier (`quoted == false`, e.g. `speed` in the
    /// scope of the computed tag's asset) or a backtick-quoted path (`quoted == true`).
    fn resolve(&self, name: &str, quoted: bool) -> Option<(TagId, ValueType)>;

    /// The tags a pattern of `tags("…")` matches (`*` matches one whole level), in a stable
    /// order.
    fn expand(&self, pattern: &str) -> Vec<(TagId, ValueType)>;

    /// Where bare names are looked up, for error messages (e.g. an asset path).
    fn scope(&self) -> Option<String> {
        None
    }

    /// A close existing name for an unknown one (a typo), written as it should be.
    fn suggest(&self, name: &str, quoted: bool) -> Option<String> {
        let _ = (name, quoted);
        None
    }
}

/// Levenshtein distance, bounded: `None` when above `max` (names are short; only on errors).
pub(crate) fn distance(a: &str, b: &str, max: usize) -> Option<usize> {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    if a.len().abs_diff(b.len()) > max {
        return None;
    }
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev.last().copied().filter(|d| *d <= max)
}

/// The closest of `candidates` to `name` within a small distance.
pub(crate) fn closest<'a>(
    name: &str,
    candidates: impl Iterator<Item = &'a str>,
) -> Option<&'a str> {
    let max = (name.chars().count() / 3).clamp(1, 3);
    candidates
        .filter_map(|c| distance(name, c, max).map(|d| (d, c)))
        .min()
        .map(|(_, c)| c)
}

/// Whether `path` matches `pattern` level by level (`*` matches exactly one level).
pub fn pattern_matches(pattern: &str, path: &str) -> bool {
    let mut p = pattern.split('/');
    let mut t = path.split('/');
    loop {
        match (p.next(), t.next()) {
            (None, None) => return true,
            (Some(a), Some(b)) if a == "*" || a == b => {}
            _ => return false,
        }
    }
}

/// Tags by their last level, for resolving bare names below a scope.
#[derive(Debug, Default)]
pub struct NameIndex(std::collections::HashMap<String, Vec<TagId>>);

impl NameIndex {
    pub fn new(ns: &ironplant_core::Namespace) -> NameIndex {
        let mut m: std::collections::HashMap<String, Vec<TagId>> = Default::default();
        for t in ns.tags() {
            m.entry(t.path.name().to_owned()).or_default().push(t.id);
        }
        NameIndex(m)
    }
}

/// A [`Resolver`] over a [`ironplant_core::Namespace`]: backtick paths are absolute; a bare
/// name is the tag `<scope>/<name>`, else the one tag of that name anywhere below the scope
/// (e.g. `speed_actual` in the scope `…/line1/filler` finds `…/line1/filler/plc/speed_actual`;
/// two such tags make the name unknown: write the path).
pub struct NamespaceResolver<'a> {
    pub namespace: &'a ironplant_core::Namespace,
    pub index: &'a NameIndex,
    pub scope: Option<ironplant_core::TagPath>,
}

impl Resolver for NamespaceResolver<'_> {
    fn resolve(&self, name: &str, quoted: bool) -> Option<(TagId, ValueType)> {
        if quoted {
            let meta = self.namespace.lookup(name)?;
            return Some((meta.id, meta.value_type));
        }
        let scope = self.scope.as_ref()?;
        if let Some(meta) = self.namespace.lookup(&format!("{}/{name}", scope.as_str())) {
            return Some((meta.id, meta.value_type));
        }
        let mut below = self
            .index
            .0
            .get(name)?
            .iter()
            .filter_map(|id| self.namespace.tag(*id))
            .filter(|m| m.path.is_under(scope));
        let first = below.next()?;
        if below.next().is_some() {
            return None;
        }
        Some((first.id, first.value_type))
    }

    fn expand(&self, pattern: &str) -> Vec<(TagId, ValueType)> {
        self.namespace
            .tags()
            .filter(|t| pattern_matches(pattern, t.path.as_str()))
            .map(|t| (t.id, t.value_type))
            .collect()
    }

    fn scope(&self) -> Option<String> {
        self.scope.as_ref().map(|s| s.as_str().to_owned())
    }

    fn suggest(&self, name: &str, quoted: bool) -> Option<String> {
        if quoted {
            return closest(name, self.namespace.tags().map(|t| t.path.as_str()))
                .map(|p| format!("`{p}`"));
        }
        let scope = self.scope.as_ref()?;
        closest(
            name,
            self.namespace
                .tags()
                .filter(|t| t.path.is_under(scope))
                .map(|t| t.path.name()),
        )
        .map(str::to_owned)
    }
}
