//! Evaluation: values, quality propagation and the state of time functions.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, OnceLock};

use ironplant_core::{Quality, QualityLevel, QualityReason, Sample, TagId, Timestamp, Value};

use super::check::{Agg, Arith, Cmp, Expr, Math, Node, Stateful, N};
use super::{Span, Type};

/// A value inside an expression (the scalar part of [`Value`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Arc<str>),
}

impl Val {
    pub(crate) fn f(&self) -> f64 {
        match *self {
            Val::Float(f) => f,
            Val::Int(i) => i as f64,
            Val::Bool(b) => f64::from(u8::from(b)),
            Val::Str(_) => f64::NAN,
        }
    }

    pub(crate) fn i(&self) -> i64 {
        match *self {
            Val::Int(i) => i,
            Val::Bool(b) => i64::from(b),
            Val::Float(f) => f as i64,
            Val::Str(_) => 0,
        }
    }

    pub(crate) fn b(&self) -> bool {
        matches!(self, Val::Bool(true))
    }

    /// The zero value of a type (what a missing input reads as, always with Bad quality).
    pub(crate) fn zero(ty: Type) -> Val {
        match ty {
            Type::Bool => Val::Bool(false),
            Type::Int => Val::Int(0),
            Type::Float => Val::Float(0.0),
            Type::String => Val::Str(empty()),
        }
    }

    /// As a sample value.
    pub fn to_value(&self) -> Value {
        match self {
            Val::Bool(b) => Value::Bool(*b),
            Val::Int(i) => Value::Int(*i),
            Val::Float(f) => Value::Float(*f),
            Val::Str(s) => Value::String(s.clone()),
        }
    }

    /// A sample value read as `ty` (ints widen to floats, integral floats narrow to ints,
    /// u64 above i64::MAX reads as a float); `None` if it is not one.
    pub fn from_value(v: &Value, ty: Type) -> Option<Val> {
        Some(match (ty, v) {
            (Type::Bool, Value::Bool(b)) => Val::Bool(*b),
            // A bool kept in a register or a 0/1 integer metric.
            (Type::Bool, Value::Int(i @ (0 | 1))) => Val::Bool(*i == 1),
            (Type::Int, Value::Int(i)) => Val::Int(*i),
            (Type::Int, Value::Float(f)) if f.fract() == 0.0 && *f >= -9.2e18 && *f <= 9.2e18 => {
                Val::Int(*f as i64)
            }
            (Type::Float, Value::Int(i)) => Val::Float(*i as f64),
            (Type::Float, Value::U64(u)) => Val::Float(*u as f64),
            (Type::Float, Value::Float(f)) => Val::Float(*f),
            (Type::String, Value::String(s)) => Val::Str(s.clone()),
            _ => return None,
        })
    }
}

impl fmt::Display for Val {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Val::Bool(b) => write!(f, "{b}"),
            Val::Int(i) => write!(f, "{i}"),
            Val::Float(x) => write!(f, "{x}"),
            Val::Str(s) => f.write_str(s),
        }
    }
}

fn empty() -> Arc<str> {
    static EMPTY: OnceLock<Arc<str>> = OnceLock::new();
    EMPTY.get_or_init(|| Arc::from("")).clone()
}

fn level_name(l: QualityLevel) -> Arc<str> {
    static NAMES: OnceLock<[Arc<str>; 3]> = OnceLock::new();
    let n = NAMES.get_or_init(|| [Arc::from("Good"), Arc::from("Uncertain"), Arc::from("Bad")]);
    n[l as usize].clone()
}

/// Why a result is not Good.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CauseKind {
    /// An input tag's own quality (its reason is carried over).
    Input,
    /// An input tag has no value yet.
    NoValue,
    /// An input tag sent a value of another type than declared.
    WrongType,
    DivByZero,
    /// NaN or infinity (e.g. `sqrt` of a negative number).
    NotFinite,
    /// Integer overflow, or a float too large for `int()`.
    Overflow,
    /// A time function has not seen enough samples yet (`rate`, `prev`).
    NotEnoughData,
    /// A window function's window is not covered by samples yet, or has Bad periods.
    PartialWindow,
    /// Some tags of an aggregate are Bad (left out of `avg`/`min`/`max`/`count`).
    SomeInputsBad,
}

/// The cause of a non-Good result: what, which input tag, where in the expression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cause {
    pub kind: CauseKind,
    pub tag: Option<TagId>,
    pub span: Span,
}

impl Cause {
    /// A sentence for operators: names the input tag through `name` and quotes the part of
    /// `text` (the expression) at fault.
    pub fn describe(&self, text: &str, quality: Quality, name: &dyn Fn(TagId) -> String) -> String {
        let tag = self.tag.map(name).unwrap_or_else(|| "?".into());
        let part = text.get(self.span.range()).unwrap_or(text);
        match self.kind {
            CauseKind::Input => format!("input {tag} is {quality}"),
            CauseKind::NoValue => format!("input {tag} has no value yet"),
            CauseKind::WrongType => {
                format!("input {tag} sent a value that is not of its declared type")
            }
            CauseKind::DivByZero => format!("division by zero in `{part}`"),
            CauseKind::NotFinite if self.tag.is_some() => {
                format!("input {tag} is not a finite number")
            }
            CauseKind::NotFinite => format!("`{part}` is not a finite number"),
            CauseKind::Overflow => format!("`{part}` overflows"),
            CauseKind::NotEnoughData => format!("`{part}` has not seen enough samples yet"),
            CauseKind::PartialWindow => {
                format!("the window of `{part}` is not fully covered by Good samples")
            }
            CauseKind::SomeInputsBad => {
                format!("`{part}` left out Bad inputs, e.g. {tag}")
            }
        }
    }
}

/// One evaluation's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub value: Val,
    /// The worst quality of the inputs that determined the value, or Bad for a calculation
    /// error (division by zero, NaN, overflow).
    pub quality: Quality,
    pub cause: Option<Cause>,
    /// The newest source timestamp among the inputs that determined the value.
    pub source_ts: Timestamp,
}

#[derive(Debug, Clone)]
pub(crate) struct Out {
    pub v: Val,
    pub q: Quality,
    pub cause: Option<Cause>,
    pub ts: Timestamp,
}

impl Out {
    fn good(v: Val) -> Out {
        Out {
            v,
            q: Quality::GOOD,
            cause: None,
            ts: Timestamp(0),
        }
    }

    /// Takes `o`'s quality if worse, and the newer timestamp.
    fn merge(&mut self, o: &Out) {
        if o.q.level > self.q.level {
            self.q = o.q;
            self.cause = o.cause;
        }
        self.ts = self.ts.max(o.ts);
    }

    /// Lowers the quality to `level` for `kind` (keeping a worse cause already there).
    fn degrade(&mut self, level: QualityLevel, kind: CauseKind, tag: Option<TagId>, span: Span) {
        if level > self.q.level {
            let reason = match kind {
                CauseKind::DivByZero | CauseKind::NotFinite | CauseKind::Overflow => {
                    QualityReason::CalculationFailed
                }
                CauseKind::WrongType => QualityReason::ConfigError,
                CauseKind::NotEnoughData | CauseKind::PartialWindow | CauseKind::SomeInputsBad => {
                    QualityReason::InsufficientData
                }
                CauseKind::Input | CauseKind::NoValue => QualityReason::NotConnected,
            };
            self.q = Quality { level, reason };
            self.cause = Some(Cause { kind, tag, span });
        }
    }

    pub(crate) fn outcome(self) -> Outcome {
        Outcome {
            value: self.v,
            quality: self.q,
            cause: self.cause,
            source_ts: self.ts,
        }
    }
}

/// Where evaluation reads tags.
pub(crate) trait Read {
    fn read(&self, id: TagId, ty: Type) -> Out;
}

/// Current values by dense tag id, converted to each tag's expression type on arrival.
#[derive(Debug, Default)]
pub(crate) struct Store {
    slots: Vec<Slot>,
}

#[derive(Debug, Clone)]
struct Slot {
    ty: Option<Type>,
    v: Val,
    q: Quality,
    wrong_type: bool,
    ts: Timestamp,
    has: bool,
    /// For a computed tag: the input tag that made it not Good.
    root: Option<Cause>,
}

impl Store {
    /// Declares that `id` is read as `ty`.
    pub(crate) fn declare(&mut self, id: TagId, ty: Type) {
        let i = id.index();
        if self.slots.len() <= i {
            self.slots.resize(
                i + 1,
                Slot {
                    ty: None,
                    v: Val::Bool(false),
                    q: Quality::GOOD,
                    wrong_type: false,
                    ts: Timestamp(0),
                    has: false,
                    root: None,
                },
            );
        }
        self.slots[i].ty = Some(ty);
        self.slots[i].v = Val::zero(ty);
    }

    /// Stores a computed value (already of the declared type). A cause naming an input tag
    /// is kept, so what reads the computed tag names the root input; a calculation error
    /// (its span is in another expression) is seen as this tag's own quality.
    pub(crate) fn put(
        &mut self,
        id: TagId,
        v: Val,
        q: Quality,
        ts: Timestamp,
        cause: Option<Cause>,
    ) {
        if let Some(slot) = self.slots.get_mut(id.index()) {
            slot.root = cause.filter(|c| {
                c.tag.is_some()
                    && matches!(
                        c.kind,
                        CauseKind::Input | CauseKind::NoValue | CauseKind::WrongType
                    )
            });
            slot.v = v;
            slot.q = q;
            slot.ts = ts;
            slot.has = true;
            slot.wrong_type = false;
        }
    }

    /// Stores a sample of a declared tag; false (and nothing stored) for any other tag.
    pub(crate) fn update(&mut self, s: &Sample) -> bool {
        let Some(slot) = self.slots.get_mut(s.tag.index()) else {
            return false;
        };
        let Some(ty) = slot.ty else { return false };
        slot.has = true;
        slot.root = None;
        slot.ts = s.source_ts;
        slot.q = s.quality;
        match Val::from_value(&s.value, ty) {
            Some(v) => {
                slot.v = v;
                slot.wrong_type = false;
            }
            None => {
                // Null carries no value (a Bad sample before any value): keep the last one.
                slot.wrong_type = !matches!(s.value, Value::Null) || s.quality.is_good();
            }
        }
        true
    }
}

impl Read for Store {
    fn read(&self, id: TagId, ty: Type) -> Out {
        let missing = || {
            let mut o = Out::good(Val::zero(ty));
            o.degrade(
                QualityLevel::Bad,
                CauseKind::NoValue,
                Some(id),
                Span::default(),
            );
            o
        };
        let Some(s) = self.slots.get(id.index()).filter(|s| s.has) else {
            return missing();
        };
        let mut o = Out {
            v: s.v.clone(),
            q: s.q,
            cause: (!s.q.is_good()).then_some(s.root.unwrap_or(Cause {
                kind: CauseKind::Input,
                tag: Some(id),
                span: Span::default(),
            })),
            ts: s.ts,
        };
        if s.wrong_type {
            o.degrade(
                QualityLevel::Bad,
                CauseKind::WrongType,
                Some(id),
                Span::default(),
            );
        }
        nonfinite_input(&mut o, id);
        o
    }
}

/// A NaN or infinite input is Bad whatever its own quality: nothing computed from it means
/// anything.
fn nonfinite_input(o: &mut Out, id: TagId) {
    if matches!(o.v, Val::Float(f) if !f.is_finite()) {
        o.degrade(
            QualityLevel::Bad,
            CauseKind::NotFinite,
            Some(id),
            Span::default(),
        );
    }
}

/// Current samples for [`Expr::eval`].
pub trait Inputs {
    fn sample(&self, tag: TagId) -> Option<&Sample>;
}

impl Inputs for HashMap<TagId, Sample> {
    fn sample(&self, tag: TagId) -> Option<&Sample> {
        self.get(&tag)
    }
}

impl Inputs for [Option<Sample>] {
    fn sample(&self, tag: TagId) -> Option<&Sample> {
        self.get(tag.index()).and_then(Option::as_ref)
    }
}

struct ViaInputs<'a>(&'a dyn Inputs);

impl Read for ViaInputs<'_> {
    fn read(&self, id: TagId, ty: Type) -> Out {
        let mut o = Out::good(Val::zero(ty));
        let Some(s) = self.0.sample(id) else {
            o.degrade(
                QualityLevel::Bad,
                CauseKind::NoValue,
                Some(id),
                Span::default(),
            );
            return o;
        };
        o.ts = s.source_ts;
        o.q = s.quality;
        if !s.quality.is_good() {
            o.cause = Some(Cause {
                kind: CauseKind::Input,
                tag: Some(id),
                span: Span::default(),
            });
        }
        match Val::from_value(&s.value, ty) {
            Some(v) => o.v = v,
            None => o.degrade(
                QualityLevel::Bad,
                CauseKind::WrongType,
                Some(id),
                Span::default(),
            ),
        }
        nonfinite_input(&mut o, id);
        o
    }
}

/// The state of an expression's time functions (one per call site); create it with
/// [`Expr::new_state`] and pass it to every evaluation of that expression.
#[derive(Debug, Clone, Default)]
pub struct ExprState {
    pub(crate) states: Vec<FnState>,
}

impl Expr {
    pub fn new_state(&self) -> ExprState {
        ExprState {
            states: self.stateful.iter().map(|f| FnState::new(*f)).collect(),
        }
    }

    /// Evaluates against the current samples `inputs` at `now` (for interlocks, one-off
    /// checks; computed tags and rules evaluate inside their engines).
    pub fn eval(&self, state: &mut ExprState, inputs: &dyn Inputs, now: Timestamp) -> Outcome {
        if state.states.len() != self.stateful.len() {
            *state = self.new_state();
        }
        let mut cx = Cx {
            read: &ViaInputs(inputs),
            now,
            states: &mut state.states,
        };
        eval(self, self.root, &mut cx).outcome()
    }
}

impl Expr {
    /// The current values of its inputs for people (an interlock's detail, a log line):
    /// `path = value`, with the quality when not Good, or `no value`.
    pub fn describe_inputs(&self, inputs: &dyn Inputs, name: &dyn Fn(TagId) -> String) -> String {
        let mut parts = Vec::with_capacity(self.inputs.len());
        for id in &self.inputs {
            let p = name(*id);
            parts.push(match inputs.sample(*id) {
                None => format!("{p}: no value"),
                Some(s) if s.quality.is_good() => format!("{p} = {}", s.value),
                Some(s) => format!("{p} = {} ({})", s.value, s.quality),
            });
        }
        parts.join(", ")
    }
}

/// Most samples a window function keeps; beyond, the oldest two inside the window are merged
/// into one with the same integral, so memory is bounded whatever the sample rate.
pub const MAX_WINDOW_SAMPLES: usize = 1024;

#[derive(Debug, Clone)]
pub(crate) enum FnState {
    Rate {
        last: Option<(f64, Timestamp)>,
        rate: Option<f64>,
        seen: Timestamp,
    },
    Window {
        /// (time, value, good), oldest first; the first may lie before the window start.
        samples: VecDeque<(Timestamp, f64, bool)>,
        seen: Timestamp,
    },
    TimeInState {
        since: Option<Timestamp>,
    },
    Changed {
        last: Option<Val>,
        changed: bool,
        seen: Timestamp,
    },
    Prev {
        last: Option<(Val, Quality, Timestamp)>,
        prev: Option<(Val, Quality, Timestamp)>,
        seen: Timestamp,
    },
}

impl FnState {
    pub(crate) fn new(f: Stateful) -> FnState {
        match f {
            Stateful::Rate => FnState::Rate {
                last: None,
                rate: None,
                seen: Timestamp(0),
            },
            Stateful::AvgOver { .. } | Stateful::DeltaOver { .. } => FnState::Window {
                samples: VecDeque::new(),
                seen: Timestamp(0),
            },
            Stateful::TimeInState => FnState::TimeInState { since: None },
            Stateful::Changed => FnState::Changed {
                last: None,
                changed: false,
                seen: Timestamp(0),
            },
            Stateful::Prev => FnState::Prev {
                last: None,
                prev: None,
                seen: Timestamp(0),
            },
        }
    }
}

pub(crate) struct Cx<'a, R: Read + ?Sized> {
    pub read: &'a R,
    pub now: Timestamp,
    pub states: &'a mut [FnState],
}

fn secs(micros: i64) -> f64 {
    micros as f64 / 1e6
}

fn finite(mut o: Out, span: Span) -> Out {
    if let Val::Float(f) = o.v {
        if !f.is_finite() {
            o.degrade(QualityLevel::Bad, CauseKind::NotFinite, None, span);
        }
    }
    o
}

/// Evaluates node `n`. Every branch is evaluated (no short circuit), so time functions see
/// every sample whatever the other operands are; the cost stays bounded by the program size.
pub(crate) fn eval<R: Read + ?Sized>(e: &Expr, n: N, cx: &mut Cx<'_, R>) -> Out {
    let Some(node) = e.nodes.get(n as usize) else {
        // Unreachable for a compiled program: its indices are built by the checker.
        return Out::good(Val::Bool(false));
    };
    match node {
        Node::Const(v) => Out::good(v.clone()),
        Node::Tag { id, ty } => cx.read.read(*id, *ty),
        Node::Neg { ty, x, span } => {
            let mut o = eval(e, *x, cx);
            match ty {
                Type::Int => match o.v.i().checked_neg() {
                    Some(i) => o.v = Val::Int(i),
                    None => o.degrade(QualityLevel::Bad, CauseKind::Overflow, None, *span),
                },
                _ => o.v = Val::Float(-o.v.f()),
            }
            o
        }
        Node::Not(x) => {
            let mut o = eval(e, *x, cx);
            o.v = Val::Bool(!o.v.b());
            o
        }
        Node::ToFloat(x) => {
            let mut o = eval(e, *x, cx);
            o.v = Val::Float(o.v.f());
            o
        }
        Node::BoolToNum { x, float } => {
            let mut o = eval(e, *x, cx);
            o.v = if *float {
                Val::Float(o.v.f())
            } else {
                Val::Int(o.v.i())
            };
            o
        }
        Node::ToInt { x, span } => {
            let mut o = eval(e, *x, cx);
            let f = o.v.f();
            if !f.is_finite() {
                o.degrade(QualityLevel::Bad, CauseKind::NotFinite, None, *span);
                o.v = Val::Int(0);
            } else if !(-9.223_372_036_854_775e18..9.223_372_036_854_775e18).contains(&f) {
                o.degrade(QualityLevel::Bad, CauseKind::Overflow, None, *span);
                o.v = Val::Int(if f < 0.0 { i64::MIN } else { i64::MAX });
            } else {
                o.v = Val::Int(f.trunc() as i64);
            }
            o
        }
        Node::Arith { op, ty, l, r, span } => {
            let mut o = eval(e, *l, cx);
            let b = eval(e, *r, cx);
            o.merge(&b);
            if *ty == Type::Int {
                let (x, y) = (o.v.i(), b.v.i());
                let res = match op {
                    Arith::Add => x.checked_add(y),
                    Arith::Sub => x.checked_sub(y),
                    Arith::Mul => x.checked_mul(y),
                    Arith::Rem => {
                        if y == 0 {
                            o.degrade(QualityLevel::Bad, CauseKind::DivByZero, None, *span);
                            Some(0)
                        } else {
                            x.checked_rem(y)
                        }
                    }
                };
                match res {
                    Some(v) => o.v = Val::Int(v),
                    None => {
                        o.degrade(QualityLevel::Bad, CauseKind::Overflow, None, *span);
                        o.v = Val::Int(0);
                    }
                }
                o
            } else {
                let (x, y) = (o.v.f(), b.v.f());
                o.v = Val::Float(match op {
                    Arith::Add => x + y,
                    Arith::Sub => x - y,
                    Arith::Mul => x * y,
                    Arith::Rem => {
                        if y == 0.0 {
                            o.degrade(QualityLevel::Bad, CauseKind::DivByZero, None, *span);
                        }
                        x % y
                    }
                });
                finite(o, *span)
            }
        }
        Node::Div { l, r, span } => {
            let mut o = eval(e, *l, cx);
            let b = eval(e, *r, cx);
            o.merge(&b);
            let y = b.v.f();
            if y == 0.0 {
                o.degrade(QualityLevel::Bad, CauseKind::DivByZero, None, *span);
            }
            o.v = Val::Float(o.v.f() / y);
            finite(o, *span)
        }
        Node::Cmp { op, l, r } => {
            let mut o = eval(e, *l, cx);
            let b = eval(e, *r, cx);
            o.merge(&b);
            let ord = match (&o.v, &b.v) {
                (Val::Int(x), Val::Int(y)) => x.partial_cmp(y),
                (Val::Str(x), Val::Str(y)) => x.partial_cmp(y),
                (Val::Bool(x), Val::Bool(y)) => x.partial_cmp(y),
                (x, y) => x.f().partial_cmp(&y.f()),
            };
            use std::cmp::Ordering::*;
            let res = match (op, ord) {
                (_, None) => matches!(op, Cmp::Ne),
                (Cmp::Lt, Some(o)) => o == Less,
                (Cmp::Le, Some(o)) => o != Greater,
                (Cmp::Gt, Some(o)) => o == Greater,
                (Cmp::Ge, Some(o)) => o != Less,
                (Cmp::Eq, Some(o)) => o == Equal,
                (Cmp::Ne, Some(o)) => o != Equal,
            };
            o.v = Val::Bool(res);
            o
        }
        Node::And(l, r) | Node::Or(l, r) => {
            let is_and = matches!(node, Node::And(..));
            let a = eval(e, *l, cx);
            let b = eval(e, *r, cx);
            // A Good operand that decides alone (false for &&, true for ||) decides the
            // quality too: `running && speed > 10` is Good false while running is Good false.
            let decides = |o: &Out| o.q.is_good() && o.v.b() != is_and;
            if decides(&a) {
                let mut a = a;
                a.ts = a.ts.max(b.ts);
                return a;
            }
            if decides(&b) {
                let mut b = b;
                b.ts = b.ts.max(a.ts);
                return b;
            }
            let mut o = a;
            let v = if is_and {
                o.v.b() && b.v.b()
            } else {
                o.v.b() || b.v.b()
            };
            o.merge(&b);
            o.v = Val::Bool(v);
            o
        }
        Node::Cond(c, x, y) => {
            let c = eval(e, *c, cx);
            let a = eval(e, *x, cx);
            let b = eval(e, *y, cx);
            let mut o = if c.v.b() { a } else { b };
            o.merge(&c);
            o
        }
        Node::Math {
            f,
            ty,
            x,
            digits,
            span,
        } => {
            let mut o = eval(e, *x, cx);
            if *ty == Type::Int {
                // Only abs keeps ints.
                match o.v.i().checked_abs() {
                    Some(v) => o.v = Val::Int(v),
                    None => o.degrade(QualityLevel::Bad, CauseKind::Overflow, None, *span),
                }
                return o;
            }
            let v = o.v.f();
            o.v = Val::Float(match f {
                Math::Abs => v.abs(),
                Math::Floor => v.floor(),
                Math::Ceil => v.ceil(),
                Math::Sqrt => v.sqrt(),
                Math::Round => {
                    let p = 10f64.powi(*digits);
                    (v * p).round() / p
                }
            });
            finite(o, *span)
        }
        Node::MinMax { max, args } => {
            let (s, len) = (args.0 as usize, args.1 as usize);
            let mut best: Option<Out> = None;
            for i in s..s + len {
                let Some(&a) = e.args.get(i) else { continue };
                let x = eval(e, a, cx);
                best = Some(match best {
                    None => x,
                    Some(mut b) => {
                        let take = match (&b.v, &x.v) {
                            (Val::Int(p), Val::Int(q)) => (q > p) == *max && q != p,
                            (p, q) => (q.f() > p.f()) == *max && q.f() != p.f() || q.f().is_nan(),
                        };
                        b.merge(&x);
                        if take {
                            b.v = x.v;
                        }
                        b
                    }
                });
            }
            best.unwrap_or_else(|| Out::good(Val::Int(0)))
        }
        Node::Clamp { x, lo, hi } => {
            let mut o = eval(e, *x, cx);
            let l = eval(e, *lo, cx);
            let h = eval(e, *hi, cx);
            o.merge(&l);
            o.merge(&h);
            o.v = match (&o.v, &l.v, &h.v) {
                (Val::Int(v), Val::Int(a), Val::Int(b)) => Val::Int((*v).max(*a).min(*b)),
                (v, a, b) => Val::Float(v.f().max(a.f()).min(b.f())),
            };
            o
        }
        Node::Agg {
            f,
            elem,
            tags,
            span,
        } => aggregate(e, *f, *elem, *tags, *span, cx),
        Node::Quality(x) => {
            let x = eval(e, *x, cx);
            let mut o = Out::good(Val::Str(level_name(x.q.level)));
            o.ts = x.ts;
            o
        }
        Node::IsGood(x) => {
            let x = eval(e, *x, cx);
            let mut o = Out::good(Val::Bool(x.q.is_good()));
            o.ts = x.ts;
            o
        }
        Node::Stateful { f, slot, x, span } => {
            let x = eval(e, *x, cx);
            let now = cx.now;
            match cx.states.get_mut(*slot as usize) {
                Some(st) => stateful(*f, st, x, now, *span),
                None => x,
            }
        }
    }
}

fn aggregate<R: Read + ?Sized>(
    e: &Expr,
    f: Agg,
    elem: Type,
    (start, len): (u32, u32),
    span: Span,
    cx: &mut Cx<'_, R>,
) -> Out {
    let set = e
        .sets
        .get(start as usize..(start + len) as usize)
        .unwrap_or(&[]);
    let mut o = Out::good(Val::Int(0));
    if f == Agg::Sum {
        // Every term matters: a Bad one makes the sum Bad.
        let (mut si, mut sf, mut overflow) = (0i64, 0f64, false);
        for (id, ty) in set {
            let x = cx.read.read(*id, *ty);
            o.merge(&x);
            match x.v {
                Val::Int(i) if elem == Type::Int => match si.checked_add(i) {
                    Some(s) => si = s,
                    None => overflow = true,
                },
                ref v => sf += v.f(),
            }
        }
        o.v = if elem == Type::Int {
            Val::Int(si)
        } else {
            Val::Float(sf)
        };
        if overflow {
            o.degrade(QualityLevel::Bad, CauseKind::Overflow, None, span);
        }
        return finite(o, span);
    }
    // avg/min/max/count leave Bad inputs out: Uncertain if some are, Bad if all are.
    let (mut n, mut acc, mut trues) = (0usize, 0f64, 0i64);
    let mut best: Option<Val> = None;
    let mut left_out: Option<TagId> = None;
    for (id, ty) in set {
        let x = cx.read.read(*id, *ty);
        o.ts = o.ts.max(x.ts);
        if x.q.level == QualityLevel::Bad {
            left_out = left_out.or(Some(*id));
            continue;
        }
        if x.q.level > o.q.level {
            o.q = x.q;
            o.cause = x.cause;
        }
        n += 1;
        acc += x.v.f();
        trues += i64::from(x.v.b());
        best = Some(match best {
            None => x.v,
            Some(b) => {
                let better = match (&b, &x.v) {
                    (Val::Int(p), Val::Int(q)) => (q < p) == (f == Agg::Min) && q != p,
                    (p, q) => (q.f() < p.f()) == (f == Agg::Min) && q.f() != p.f(),
                };
                if better {
                    x.v
                } else {
                    b
                }
            }
        });
    }
    if let Some(tag) = left_out {
        let level = if n == 0 {
            QualityLevel::Bad
        } else {
            QualityLevel::Uncertain
        };
        let keep_reason = o.q.level;
        o.degrade(level, CauseKind::SomeInputsBad, Some(tag), span);
        if keep_reason < level {
            // The reason of the first Bad input, which a reader will look for.
            if let Some(r) = set
                .iter()
                .find(|(id, _)| *id == tag)
                .map(|(id, ty)| cx.read.read(*id, *ty).q.reason)
            {
                o.q.reason = r;
            }
        }
    }
    o.v = match f {
        Agg::Avg => Val::Float(if n == 0 { 0.0 } else { acc / n as f64 }),
        Agg::Count => Val::Int(trues),
        _ => best.unwrap_or_else(|| Val::zero(elem)),
    };
    finite(o, span)
}

fn stateful(f: Stateful, st: &mut FnState, x: Out, now: Timestamp, span: Span) -> Out {
    let fresh = |seen: Timestamp| x.ts > seen;
    match (f, st) {
        (Stateful::Rate, FnState::Rate { last, rate, seen }) => {
            if fresh(*seen) && x.q.level != QualityLevel::Bad {
                let v = x.v.f();
                if let Some((lv, lt)) = *last {
                    *rate = Some((v - lv) / secs(x.ts.0.saturating_sub(lt.0)));
                }
                *last = Some((v, x.ts));
                *seen = x.ts;
            }
            let mut o = x;
            match *rate {
                Some(r) => o.v = Val::Float(r),
                None => {
                    o.v = Val::Float(0.0);
                    o.degrade(QualityLevel::Bad, CauseKind::NotEnoughData, None, span);
                }
            }
            finite(o, span)
        }
        (
            Stateful::AvgOver { window } | Stateful::DeltaOver { window },
            FnState::Window { samples, seen },
        ) => {
            if fresh(*seen) {
                samples.push_back((x.ts, x.v.f(), x.q.level != QualityLevel::Bad));
                *seen = x.ts;
            }
            let start = Timestamp(now.0.saturating_sub(window));
            // Keep one sample at or before the window start (the value held into it).
            while samples.len() > 1 && samples.get(1).is_some_and(|s| s.0 <= start) {
                samples.pop_front();
            }
            if samples.len() > MAX_WINDOW_SAMPLES {
                compact(samples);
            }
            let mut o = x;
            if matches!(f, Stateful::AvgOver { .. }) {
                window_avg(samples, start, now, &mut o, span);
            } else {
                window_delta(samples, start, &mut o, span);
            }
            o.ts = o.ts.max(now);
            finite(o, span)
        }
        (Stateful::TimeInState, FnState::TimeInState { since }) => {
            let mut o = x;
            if o.v.b() {
                let at = if o.ts.0 == 0 { now } else { o.ts.min(now) };
                let since = *since.get_or_insert(at);
                o.v = Val::Float(secs(now.0.saturating_sub(since.0).max(0)));
            } else {
                *since = None;
                o.v = Val::Float(0.0);
            }
            o.ts = o.ts.max(now);
            o
        }
        (
            Stateful::Changed,
            FnState::Changed {
                last,
                changed,
                seen,
            },
        ) => {
            if fresh(*seen) {
                *changed = last.as_ref().is_some_and(|l| *l != x.v);
                *last = Some(x.v.clone());
                *seen = x.ts;
            }
            let mut o = x;
            o.v = Val::Bool(*changed);
            o
        }
        (Stateful::Prev, FnState::Prev { last, prev, seen }) => {
            if fresh(*seen) {
                *prev = last.take();
                *last = Some((x.v.clone(), x.q, x.ts));
                *seen = x.ts;
            }
            let mut o = x;
            match prev {
                Some((v, q, ts)) => {
                    o.v = v.clone();
                    o.q = *q;
                    o.cause = None;
                    o.ts = *ts;
                    if !q.is_good() {
                        o.cause = Some(Cause {
                            kind: CauseKind::Input,
                            tag: None,
                            span,
                        });
                    }
                }
                None => o.degrade(QualityLevel::Bad, CauseKind::NotEnoughData, None, span),
            }
            o
        }
        // A state of another kind than its call site: unreachable (built from the same list).
        (_, st) => {
            *st = FnState::new(f);
            x
        }
    }
}

/// Halves the samples after the first by merging neighbours pairwise, each pair into one
/// sample holding the pair's time-weighted mean until the next sample: the integral over the
/// window is unchanged. Amortised O(1) per sample.
fn compact(samples: &mut VecDeque<(Timestamp, f64, bool)>) {
    let old: Vec<(Timestamp, f64, bool)> = samples.drain(..).collect();
    let Some(first) = old.first() else { return };
    samples.push_back(*first);
    let mut i = 1;
    while i + 2 < old.len() {
        let ((t1, v1, g1), (t2, v2, g2), t3) = (old[i], old[i + 1], old[i + 2].0);
        let span = t3.0.saturating_sub(t1.0) as f64;
        let v = if span > 0.0 {
            (v1 * t2.0.saturating_sub(t1.0) as f64 + v2 * t3.0.saturating_sub(t2.0) as f64) / span
        } else {
            v2
        };
        samples.push_back((t1, v, g1 && g2));
        i += 2;
    }
    samples.extend(old.get(i..).unwrap_or(&[]).iter().copied());
}

fn window_avg(
    samples: &VecDeque<(Timestamp, f64, bool)>,
    start: Timestamp,
    now: Timestamp,
    o: &mut Out,
    span: Span,
) {
    let (mut area, mut good_time, mut covered_from) = (0f64, 0i64, None);
    let mut gaps = false;
    for (i, &(t, v, good)) in samples.iter().enumerate() {
        let end = samples.get(i + 1).map_or(now, |n| n.0).min(now);
        let from = t.max(start);
        if end <= from {
            continue;
        }
        covered_from.get_or_insert(from);
        let dt = end.0.saturating_sub(from.0);
        if good {
            area += v * dt as f64;
            good_time += dt;
        } else {
            gaps = true;
        }
    }
    if good_time > 0 {
        o.v = Val::Float(area / good_time as f64);
        if gaps || covered_from.is_none_or(|c| c > start) {
            o.degrade(
                QualityLevel::Uncertain,
                CauseKind::PartialWindow,
                None,
                span,
            );
        }
    } else {
        // No Good time in the window yet: the latest Good value, if any, Uncertain.
        match samples.iter().rev().find(|s| s.2) {
            Some(&(_, v, _)) => {
                o.v = Val::Float(v);
                o.degrade(
                    QualityLevel::Uncertain,
                    CauseKind::PartialWindow,
                    None,
                    span,
                );
            }
            None => {
                o.v = Val::Float(0.0);
                o.degrade(QualityLevel::Bad, CauseKind::NotEnoughData, None, span);
            }
        }
    }
}

fn window_delta(
    samples: &VecDeque<(Timestamp, f64, bool)>,
    start: Timestamp,
    o: &mut Out,
    span: Span,
) {
    let (Some(first), Some(last)) = (samples.front(), samples.back()) else {
        o.v = Val::Float(0.0);
        o.degrade(QualityLevel::Bad, CauseKind::NotEnoughData, None, span);
        return;
    };
    o.v = Val::Float(last.1 - first.1);
    if !(first.2 && last.2) {
        o.degrade(QualityLevel::Bad, CauseKind::PartialWindow, None, span);
    } else if first.0 > start {
        o.degrade(
            QualityLevel::Uncertain,
            CauseKind::PartialWindow,
            None,
            span,
        );
    }
}
