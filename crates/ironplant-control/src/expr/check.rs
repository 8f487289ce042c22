//! Name resolution and type checking: syntax tree → [`Expr`], a flat, typed program.

use std::sync::Arc;

use ironplant_core::{TagId, ValueType};

use super::eval::Val;
use super::syntax::{self, Ast, AstKind, BinOp, UnOp};
use super::{ExprError, Resolver, Span, Type};

pub(crate) type N = u32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Arith {
    Add,
    Sub,
    Mul,
    Rem,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cmp {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Math {
    Abs,
    Floor,
    Ceil,
    Round,
    Sqrt,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Agg {
    Sum,
    Avg,
    Min,
    Max,
    Count,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stateful {
    Rate,
    AvgOver { window: i64 },
    DeltaOver { window: i64 },
    TimeInState,
    Changed,
    Prev,
}

/// One node of a compiled program; children are indices into [`Expr::nodes`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Node {
    Const(Val),
    Tag {
        id: TagId,
        ty: Type,
    },
    Neg {
        ty: Type,
        x: N,
        span: Span,
    },
    Not(N),
    ToFloat(N),
    ToInt {
        x: N,
        span: Span,
    },
    BoolToNum {
        x: N,
        float: bool,
    },
    Arith {
        op: Arith,
        ty: Type,
        l: N,
        r: N,
        span: Span,
    },
    Div {
        l: N,
        r: N,
        span: Span,
    },
    Cmp {
        op: Cmp,
        l: N,
        r: N,
    },
    And(N, N),
    Or(N, N),
    Cond(N, N, N),
    Math {
        f: Math,
        ty: Type,
        x: N,
        digits: i32,
        span: Span,
    },
    MinMax {
        max: bool,
        args: (u32, u32),
    },
    Clamp {
        x: N,
        lo: N,
        hi: N,
    },
    /// An aggregate over a tag set (`tags[start..start+len]`), elements of `elem` type.
    Agg {
        f: Agg,
        elem: Type,
        tags: (u32, u32),
        span: Span,
    },
    Quality(N),
    IsGood(N),
    Stateful {
        f: Stateful,
        slot: u32,
        x: N,
        span: Span,
    },
}

/// A compiled, type-checked expression: evaluate it with an [`super::ExprState`] (which holds
/// the state of its time functions) or inside a [`super::Computed`] or [`super::Rules`].
#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    pub(crate) nodes: Vec<Node>,
    /// Arguments of variadic nodes (`min`, `max`).
    pub(crate) args: Vec<N>,
    /// Tag sets of aggregates, with each tag's type.
    pub(crate) sets: Vec<(TagId, Type)>,
    pub(crate) root: N,
    pub(crate) ty: Type,
    /// Every tag read, once each, in order of first use.
    pub(crate) inputs: Vec<TagId>,
    /// Time functions, in slot order.
    pub(crate) stateful: Vec<Stateful>,
    pub(crate) text: Arc<str>,
    pub(crate) tag_types: Vec<(TagId, Type)>,
}

impl Expr {
    /// The type of the expression's value.
    pub fn ty(&self) -> Type {
        self.ty
    }

    /// Every tag it reads (its dependencies), each once.
    pub fn inputs(&self) -> &[TagId] {
        &self.inputs
    }

    /// Whether its value can change with time alone (`time_in_state`, `avg_over`,
    /// `delta_over`), so it must be re-evaluated on a tick.
    pub fn is_time_dependent(&self) -> bool {
        self.stateful.iter().any(|s| {
            matches!(
                s,
                Stateful::TimeInState | Stateful::AvgOver { .. } | Stateful::DeltaOver { .. }
            )
        })
    }

    /// Every tag read with the type it is read as (tag references and tag sets).
    pub(crate) fn tag_types(&self) -> &[(TagId, Type)] {
        &self.tag_types
    }

    /// The text it was compiled from.
    pub fn text(&self) -> &str {
        &self.text
    }
}

fn err(span: Span, message: impl Into<String>, hint: Option<String>) -> ExprError {
    ExprError {
        span,
        message: message.into(),
        hint,
    }
}

/// Parses, resolves and type-checks `text`: the first problem, at its span.
pub fn compile(text: &str, resolver: &dyn Resolver) -> Result<Expr, ExprError> {
    let ast = syntax::parse(text)?;
    let mut c = Checker {
        resolver,
        e: Expr {
            nodes: Vec::new(),
            args: Vec::new(),
            sets: Vec::new(),
            root: 0,
            ty: Type::Bool,
            inputs: Vec::new(),
            stateful: Vec::new(),
            text: Arc::from(text),
            tag_types: Vec::new(),
        },
    };
    let (root, ty) = c.check(&ast)?;
    c.e.root = root;
    c.e.ty = ty;
    Ok(c.e)
}

/// Tag names an expression mentions: `(name, quoted)` and the patterns of `tags("…")`.
pub type References = (Vec<(String, bool)>, Vec<String>);

/// Parses `text` and lists the tag names it mentions: `(name, quoted)` for each tag reference
/// and the patterns of `tags("…")`, for callers that order definitions before compiling them.
pub fn references(text: &str) -> Result<References, ExprError> {
    fn walk(a: &Ast, names: &mut Vec<(String, bool)>, pats: &mut Vec<String>) {
        match &a.kind {
            AstKind::Ident(n) => names.push((n.clone(), false)),
            AstKind::Path(p) => names.push((p.clone(), true)),
            AstKind::Unary(_, x) => walk(x, names, pats),
            AstKind::Binary(_, l, r) => {
                walk(l, names, pats);
                walk(r, names, pats);
            }
            AstKind::Cond(c, x, y) => {
                walk(c, names, pats);
                walk(x, names, pats);
                walk(y, names, pats);
            }
            AstKind::Call { name, args, .. } => {
                if name == "tags" {
                    if let Some(AstKind::Str(s)) = args.first().map(|a| &a.kind) {
                        pats.push(s.to_string());
                    }
                }
                for x in args {
                    walk(x, names, pats);
                }
            }
            _ => {}
        }
    }
    let ast = syntax::parse(text)?;
    let (mut names, mut pats) = (Vec::new(), Vec::new());
    walk(&ast, &mut names, &mut pats);
    Ok((names, pats))
}

struct Checker<'r> {
    resolver: &'r dyn Resolver,
    e: Expr,
}

const FUNCTIONS: &str = "abs, min, max, clamp, round, floor, ceil, sqrt, int, float, sum, avg, count, tags, rate, avg_over, delta_over, time_in_state, changed, prev, quality, is_good";

impl Checker<'_> {
    fn push(&mut self, n: Node) -> N {
        self.e.nodes.push(n);
        (self.e.nodes.len() - 1) as N
    }

    /// `x` as a float (an int is widened).
    fn widen(&mut self, (x, t): (N, Type)) -> N {
        if t == Type::Int {
            self.push(Node::ToFloat(x))
        } else {
            x
        }
    }

    fn numeric(&mut self, a: &Ast, what: &str) -> Result<(N, Type), ExprError> {
        let (n, t) = self.check(a)?;
        if !t.is_numeric() {
            return Err(err(
                a.span,
                format!("{what} needs a number, but this is a {t}"),
                (t == Type::Bool).then(|| "convert a bool with `x ? 1 : 0` or int(x)".to_owned()),
            ));
        }
        Ok((n, t))
    }

    fn boolean(&mut self, a: &Ast, what: &str) -> Result<N, ExprError> {
        let (n, t) = self.check(a)?;
        if t != Type::Bool {
            return Err(err(
                a.span,
                format!("{what} needs a bool, but this is a {t}"),
                t.is_numeric()
                    .then(|| "compare it, e.g. `x > 0`".to_owned()),
            ));
        }
        Ok(n)
    }

    fn tag(&mut self, name: &str, quoted: bool, span: Span) -> Result<(N, Type), ExprError> {
        let Some((id, vt)) = self.resolver.resolve(name, quoted) else {
            let suggestion = self.resolver.suggest(name, quoted);
            let hint = match (&suggestion, quoted, self.resolver.scope()) {
                (Some(s), _, _) => format!("did you mean {s}?"),
                (None, false, Some(scope)) => format!(
                    "a bare name is the tag {scope}/<name>, or the only tag of that name below {scope}; otherwise write the full path between backticks, e.g. `{scope}/{name}`"
                ),
                (None, false, None) => "write the tag's full path between backticks, e.g. `acme/lyon/bottling/line1/filler/speed`".to_owned(),
                (None, true, _) => "check the path against the [[tag]]s and [[computed]] tags of the configuration".to_owned(),
            };
            let what = if quoted {
                format!("unknown tag `{name}`")
            } else {
                match self.resolver.scope() {
                    Some(scope) => format!("unknown tag `{name}` (no tag {scope}/{name})"),
                    None => format!("unknown tag `{name}`"),
                }
            };
            return Err(err(span, what, Some(hint)));
        };
        let Some(ty) = Type::of(vt) else {
            return Err(err(
                span,
                format!(
                    "tag `{name}` holds {} values; expressions read bool, int, float and string tags",
                    vt.as_str()
                ),
                None,
            ));
        };
        if !self.e.inputs.contains(&id) {
            self.e.inputs.push(id);
            self.e.tag_types.push((id, ty));
        }
        Ok((self.push(Node::Tag { id, ty }), ty))
    }

    fn check(&mut self, a: &Ast) -> Result<(N, Type), ExprError> {
        Ok(match &a.kind {
            AstKind::Int(i) => (self.push(Node::Const(Val::Int(*i))), Type::Int),
            AstKind::Float(f) => (self.push(Node::Const(Val::Float(*f))), Type::Float),
            // A duration used as a value is a number of seconds (`time_in_state(x) > 5m`).
            AstKind::Dur(d) => (
                self.push(Node::Const(Val::Float(*d as f64 / 1e6))),
                Type::Float,
            ),
            AstKind::Bool(b) => (self.push(Node::Const(Val::Bool(*b))), Type::Bool),
            AstKind::Str(s) => (self.push(Node::Const(Val::Str(s.clone()))), Type::String),
            AstKind::Ident(name) => self.tag(name, false, a.span)?,
            AstKind::Path(p) => self.tag(p, true, a.span)?,
            AstKind::Unary(UnOp::Neg, x) => {
                let (x, ty) = self.numeric(x, "`-`")?;
                (
                    self.push(Node::Neg {
                        ty,
                        x,
                        span: a.span,
                    }),
                    ty,
                )
            }
            AstKind::Unary(UnOp::Not, x) => {
                let x = self.boolean(x, "`!`")?;
                (self.push(Node::Not(x)), Type::Bool)
            }
            AstKind::Binary(op, l, r) => self.binary(*op, l, r, a.span)?,
            AstKind::Cond(c, x, y) => {
                let c = self.boolean(c, "the condition of `? :`")?;
                let (xn, xt) = self.check(x)?;
                let (yn, yt) = self.check(y)?;
                match (xt, yt) {
                    (a, b) if a == b => (self.push(Node::Cond(c, xn, yn)), a),
                    (a, b) if a.is_numeric() && b.is_numeric() => {
                        let xn = self.widen((xn, xt));
                        let yn = self.widen((yn, yt));
                        (self.push(Node::Cond(c, xn, yn)), Type::Float)
                    }
                    _ => {
                        return Err(err(
                            x.span.to(y.span),
                            format!(
                                "the two branches of `? :` have different types: {xt} and {yt}"
                            ),
                            Some(
                                "both branches must be of one type (int and float mix as float)"
                                    .to_owned(),
                            ),
                        ))
                    }
                }
            }
            AstKind::Call {
                name,
                name_span,
                args,
            } => self.call(name, *name_span, args, a.span)?,
        })
    }

    fn binary(&mut self, op: BinOp, l: &Ast, r: &Ast, span: Span) -> Result<(N, Type), ExprError> {
        let sym = op.symbol();
        match op {
            BinOp::And | BinOp::Or => {
                let ln = self.boolean(l, &format!("`{sym}`"))?;
                let rn = self.boolean(r, &format!("`{sym}`"))?;
                let n = if op == BinOp::And {
                    Node::And(ln, rn)
                } else {
                    Node::Or(ln, rn)
                };
                Ok((self.push(n), Type::Bool))
            }
            BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Rem | BinOp::Div => {
                let lx = self.numeric(l, &format!("`{sym}`"))?;
                let rx = self.numeric(r, &format!("`{sym}`"))?;
                if op == BinOp::Div {
                    // `/` always divides as floats: speed / setpoint of two int tags is a ratio.
                    let ln = self.widen(lx);
                    let rn = self.widen(rx);
                    return Ok((self.push(Node::Div { l: ln, r: rn, span }), Type::Float));
                }
                let aop = match op {
                    BinOp::Add => Arith::Add,
                    BinOp::Sub => Arith::Sub,
                    BinOp::Mul => Arith::Mul,
                    _ => Arith::Rem,
                };
                let (ln, rn, ty) = if lx.1 == Type::Int && rx.1 == Type::Int {
                    (lx.0, rx.0, Type::Int)
                } else {
                    (self.widen(lx), self.widen(rx), Type::Float)
                };
                Ok((
                    self.push(Node::Arith {
                        op: aop,
                        ty,
                        l: ln,
                        r: rn,
                        span,
                    }),
                    ty,
                ))
            }
            BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge | BinOp::Eq | BinOp::Ne => {
                let cmp = match op {
                    BinOp::Lt => Cmp::Lt,
                    BinOp::Le => Cmp::Le,
                    BinOp::Gt => Cmp::Gt,
                    BinOp::Ge => Cmp::Ge,
                    BinOp::Eq => Cmp::Eq,
                    _ => Cmp::Ne,
                };
                let lx = self.check(l)?;
                let rx = self.check(r)?;
                let ordered = !matches!(cmp, Cmp::Eq | Cmp::Ne);
                let (ln, rn) = match (lx.1, rx.1) {
                    (Type::Int, Type::Int) => (lx.0, rx.0),
                    (a, b) if a.is_numeric() && b.is_numeric() => (self.widen(lx), self.widen(rx)),
                    (Type::String, Type::String) => (lx.0, rx.0),
                    (Type::Bool, Type::Bool) if !ordered => (lx.0, rx.0),
                    (a, b) => {
                        return Err(err(
                            span,
                            if a == b {
                                format!("`{sym}` does not order {a} values")
                            } else {
                                format!("`{sym}` compares a {a} with a {b}")
                            },
                            Some("compare numbers with numbers, strings with strings; bools only with == and !=".to_owned()),
                        ))
                    }
                };
                Ok((
                    self.push(Node::Cmp {
                        op: cmp,
                        l: ln,
                        r: rn,
                    }),
                    Type::Bool,
                ))
            }
        }
    }

    fn arity(
        &self,
        name: &str,
        args: &[Ast],
        span: Span,
        min: usize,
        max: usize,
        usage: &str,
    ) -> Result<(), ExprError> {
        if args.len() < min || args.len() > max {
            let want = if min == max {
                format!("{min}")
            } else if max == usize::MAX {
                format!("at least {min}")
            } else {
                format!("{min} or {max}")
            };
            return Err(err(
                span,
                format!(
                    "{name}() takes {want} argument{}, but {} {} given",
                    if min == 1 && max == 1 { "" } else { "s" },
                    args.len(),
                    if args.len() == 1 { "was" } else { "were" }
                ),
                Some(format!("usage: {usage}")),
            ));
        }
        Ok(())
    }

    /// The tag set of `tags("pattern")`, if `a` is one.
    fn tag_set(&mut self, a: &Ast, func: &str) -> Result<Option<(u32, u32, Type)>, ExprError> {
        let AstKind::Call { name, args, .. } = &a.kind else {
            return Ok(None);
        };
        if name != "tags" {
            return Ok(None);
        }
        let [pat] = args.as_slice() else {
            return Err(err(
                a.span,
                format!("tags() takes 1 argument, but {} were given", args.len()),
                Some("usage: tags(\"acme/lyon/bottling/line1/*/power\")".to_owned()),
            ));
        };
        let AstKind::Str(pattern) = &pat.kind else {
            return Err(err(
                pat.span,
                "tags() needs a pattern as a string literal",
                Some("usage: tags(\"acme/lyon/bottling/line1/*/power\")".to_owned()),
            ));
        };
        let found = self.resolver.expand(pattern);
        if found.is_empty() {
            return Err(err(
                pat.span,
                format!("the pattern {pattern:?} matches no tag"),
                Some(
                    "`*` matches one whole level; check the path against the configured tags"
                        .to_owned(),
                ),
            ));
        }
        let start = self.e.sets.len() as u32;
        let mut elem: Option<Type> = None;
        for (id, vt) in &found {
            let t = Type::of(*vt).filter(|t| {
                if func == "count" {
                    *t == Type::Bool
                } else {
                    t.is_numeric()
                }
            });
            let Some(t) = t else {
                return Err(err(
                    pat.span,
                    format!(
                        "the pattern {pattern:?} matches a tag of type {} (tag id {}); {func}() needs {} tags",
                        vt.as_str(),
                        id.0,
                        if func == "count" { "bool" } else { "numeric" }
                    ),
                    Some("narrow the pattern".to_owned()),
                ));
            };
            elem = Some(match elem {
                Some(e) if e != t => Type::Float,
                _ => t,
            });
            self.e.sets.push((*id, t));
            if !self.e.inputs.contains(id) {
                self.e.inputs.push(*id);
                self.e.tag_types.push((*id, t));
            }
        }
        Ok(Some((
            start,
            found.len() as u32,
            elem.unwrap_or(Type::Float),
        )))
    }

    fn stateful(&mut self, f: Stateful, x: N, span: Span) -> N {
        let slot = self.e.stateful.len() as u32;
        self.e.stateful.push(f);
        self.push(Node::Stateful { f, slot, x, span })
    }

    fn window(&self, a: &Ast, name: &str) -> Result<i64, ExprError> {
        match a.kind {
            AstKind::Dur(d) if d > 0 => Ok(d),
            _ => Err(err(
                a.span,
                format!("the window of {name}() must be a duration literal greater than zero"),
                Some(format!("e.g. {name}(x, 5m)")),
            )),
        }
    }

    fn call(
        &mut self,
        name: &str,
        name_span: Span,
        args: &[Ast],
        span: Span,
    ) -> Result<(N, Type), ExprError> {
        match name {
            "abs" | "floor" | "ceil" | "sqrt" | "round" => {
                let (f, max, usage) = match name {
                    "abs" => (Math::Abs, 1, "abs(x)"),
                    "floor" => (Math::Floor, 1, "floor(x)"),
                    "ceil" => (Math::Ceil, 1, "ceil(x)"),
                    "sqrt" => (Math::Sqrt, 1, "sqrt(x)"),
                    _ => (Math::Round, 2, "round(x) or round(x, digits)"),
                };
                self.arity(name, args, span, 1, max, usage)?;
                let x = self.numeric(&args[0], &format!("{name}()"))?;
                let digits = match args.get(1) {
                    None => 0,
                    Some(a) => match a.kind {
                        AstKind::Int(d) if (-15..=15).contains(&d) => d as i32,
                        _ => {
                            return Err(err(
                                a.span,
                                "the digits of round() must be an integer literal in -15..=15",
                                Some("e.g. round(x, 2)".to_owned()),
                            ))
                        }
                    },
                };
                // abs keeps the type; the others are float functions.
                let (x, ty) = if f == Math::Abs {
                    x
                } else {
                    (self.widen(x), Type::Float)
                };
                Ok((
                    self.push(Node::Math {
                        f,
                        ty,
                        x,
                        digits,
                        span,
                    }),
                    ty,
                ))
            }
            "int" | "float" => {
                self.arity(name, args, span, 1, 1, &format!("{name}(x)"))?;
                let (x, t) = self.check(&args[0])?;
                Ok(match (name, t) {
                    ("int", Type::Int) | ("float", Type::Float) => (x, t),
                    ("int", Type::Float) => (self.push(Node::ToInt { x, span }), Type::Int),
                    ("float", Type::Int) => (self.push(Node::ToFloat(x)), Type::Float),
                    ("int", Type::Bool) => {
                        (self.push(Node::BoolToNum { x, float: false }), Type::Int)
                    }
                    ("float", Type::Bool) => {
                        (self.push(Node::BoolToNum { x, float: true }), Type::Float)
                    }
                    _ => {
                        return Err(err(
                            args[0].span,
                            format!("{name}() converts numbers and bools, not a {t}"),
                            None,
                        ))
                    }
                })
            }
            "min" | "max" => {
                let usage = format!("{name}(a, b, …) or {name}(tags(\"pattern\"))");
                self.arity(name, args, span, 1, usize::MAX, &usage)?;
                if args.len() == 1 {
                    let Some((s, n, elem)) = self.tag_set(&args[0], name)? else {
                        return Err(err(
                            span,
                            format!("{name}() of one value needs a tag set"),
                            Some(format!("usage: {usage}")),
                        ));
                    };
                    let f = if name == "min" { Agg::Min } else { Agg::Max };
                    return Ok((
                        self.push(Node::Agg {
                            f,
                            elem,
                            tags: (s, n),
                            span,
                        }),
                        elem,
                    ));
                }
                let mut xs = Vec::with_capacity(args.len());
                for a in args {
                    xs.push(self.numeric(a, &format!("{name}()"))?);
                }
                let all_int = xs.iter().all(|x| x.1 == Type::Int);
                let ty = if all_int { Type::Int } else { Type::Float };
                let ns: Vec<N> = xs
                    .into_iter()
                    .map(|x| if all_int { x.0 } else { self.widen(x) })
                    .collect();
                let start = self.e.args.len() as u32;
                self.e.args.extend_from_slice(&ns);
                Ok((
                    self.push(Node::MinMax {
                        max: name == "max",
                        args: (start, ns.len() as u32),
                    }),
                    ty,
                ))
            }
            "clamp" => {
                self.arity(name, args, span, 3, 3, "clamp(x, lo, hi)")?;
                let x = self.numeric(&args[0], "clamp()")?;
                let lo = self.numeric(&args[1], "clamp()")?;
                let hi = self.numeric(&args[2], "clamp()")?;
                if [x.1, lo.1, hi.1].iter().all(|t| *t == Type::Int) {
                    Ok((
                        self.push(Node::Clamp {
                            x: x.0,
                            lo: lo.0,
                            hi: hi.0,
                        }),
                        Type::Int,
                    ))
                } else {
                    let (x, lo, hi) = (self.widen(x), self.widen(lo), self.widen(hi));
                    Ok((self.push(Node::Clamp { x, lo, hi }), Type::Float))
                }
            }
            "sum" | "avg" | "count" => {
                let usage = format!("{name}(tags(\"acme/lyon/bottling/line1/*/power\"))");
                self.arity(name, args, span, 1, 1, &usage)?;
                let Some((s, n, elem)) = self.tag_set(&args[0], name)? else {
                    return Err(err(
                        args[0].span,
                        format!("{name}() needs a tag set"),
                        Some(format!("usage: {usage}")),
                    ));
                };
                let (f, ty) = match name {
                    "sum" => (Agg::Sum, elem),
                    "avg" => (Agg::Avg, Type::Float),
                    _ => (Agg::Count, Type::Int),
                };
                Ok((
                    self.push(Node::Agg {
                        f,
                        elem,
                        tags: (s, n),
                        span,
                    }),
                    ty,
                ))
            }
            "tags" => Err(err(
                span,
                "tags() is a set of tags, not a value",
                Some("aggregate it: sum(tags(\"…\")), avg, min, max or count".to_owned()),
            )),
            "rate" => {
                self.arity(name, args, span, 1, 1, "rate(x)")?;
                let x = self.numeric(&args[0], "rate()")?;
                let x = self.widen(x);
                Ok((self.stateful(Stateful::Rate, x, span), Type::Float))
            }
            "avg_over" | "delta_over" => {
                let usage = format!("{name}(x, 5m)");
                self.arity(name, args, span, 2, 2, &usage)?;
                let x = self.numeric(&args[0], &format!("{name}()"))?;
                let x = self.widen(x);
                let window = self.window(&args[1], name)?;
                let f = if name == "avg_over" {
                    Stateful::AvgOver { window }
                } else {
                    Stateful::DeltaOver { window }
                };
                Ok((self.stateful(f, x, span), Type::Float))
            }
            "time_in_state" => {
                self.arity(name, args, span, 1, 1, "time_in_state(running)")?;
                let x = self.boolean(&args[0], "time_in_state()")?;
                Ok((self.stateful(Stateful::TimeInState, x, span), Type::Float))
            }
            "changed" | "prev" => {
                self.arity(name, args, span, 1, 1, &format!("{name}(x)"))?;
                let (x, t) = self.check(&args[0])?;
                if name == "changed" {
                    Ok((self.stateful(Stateful::Changed, x, span), Type::Bool))
                } else {
                    Ok((self.stateful(Stateful::Prev, x, span), t))
                }
            }
            "quality" | "is_good" => {
                self.arity(name, args, span, 1, 1, &format!("{name}(x)"))?;
                let (x, _) = self.check(&args[0])?;
                Ok(if name == "quality" {
                    (self.push(Node::Quality(x)), Type::String)
                } else {
                    (self.push(Node::IsGood(x)), Type::Bool)
                })
            }
            _ => Err(err(
                name_span,
                format!("unknown function `{name}`"),
                Some(format!("the functions are: {FUNCTIONS}")),
            )),
        }
    }
}

/// Whether a tag of type `vt` can hold values of `ty` (an int expression feeds a float tag).
pub(crate) fn fits(ty: Type, vt: ValueType) -> bool {
    Type::of(vt) == Some(ty) || (ty == Type::Int && vt == ValueType::Float)
}
