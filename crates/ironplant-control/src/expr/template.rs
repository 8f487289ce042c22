//! Message templates: text with `{expr}` substitutions (`{{` and `}}` are literal braces).

use std::fmt::Write as _;

use ironplant_core::{QualityLevel, TagId, Timestamp};

use super::check::{compile, Expr};
use super::eval::{eval, Cx, ExprState, Read};
use super::{ExprError, Resolver, Span};

#[derive(Debug, Clone)]
enum Part {
    Text(String),
    Expr(Box<Expr>, ExprState),
}

/// A compiled template: `"tank level {round(level, 1)} % at {`acme/lyon/utilities/tank1/temp`}"`.
#[derive(Debug, Clone)]
pub struct Template {
    parts: Vec<Part>,
}

impl Template {
    /// Compiles every `{…}`; errors have spans into `text`.
    pub fn compile(text: &str, resolver: &dyn Resolver) -> Result<Template, ExprError> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let b = text.as_bytes();
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'{' if b.get(i + 1) == Some(&b'{') => {
                    lit.push('{');
                    i += 2;
                }
                b'}' if b.get(i + 1) == Some(&b'}') => {
                    lit.push('}');
                    i += 2;
                }
                b'}' => {
                    return Err(ExprError {
                        span: Span::new(i, i + 1),
                        message: "`}` without an opening `{`".into(),
                        hint: Some("write `}}` for a literal brace".into()),
                    })
                }
                b'{' => {
                    let end = closing(text, i + 1).ok_or_else(|| ExprError {
                        span: Span::new(i, text.len()),
                        message: "`{` is not closed".into(),
                        hint: Some(
                            "close the expression with `}`, or write `{{` for a literal brace"
                                .into(),
                        ),
                    })?;
                    let inner = &text[i + 1..end];
                    let e = compile(inner, resolver).map_err(|mut e| {
                        e.span = e.span.offset(i + 1);
                        e
                    })?;
                    if !lit.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut lit)));
                    }
                    let st = e.new_state();
                    parts.push(Part::Expr(Box::new(e), st));
                    i = end + 1;
                }
                _ => {
                    let ch = text[i..].chars().next().unwrap_or(' ');
                    lit.push(ch);
                    i += ch.len_utf8();
                }
            }
        }
        if !lit.is_empty() {
            parts.push(Part::Text(lit));
        }
        Ok(Template { parts })
    }

    /// Tags the substitutions read.
    pub fn inputs(&self) -> impl Iterator<Item = TagId> + '_ {
        self.parts
            .iter()
            .flat_map(|p| match p {
                Part::Expr(e, _) => e.inputs(),
                Part::Text(_) => &[],
            })
            .copied()
    }

    pub(crate) fn exprs(&self) -> impl Iterator<Item = &Expr> {
        self.parts.iter().filter_map(|p| match p {
            Part::Expr(e, _) => Some(&**e),
            Part::Text(_) => None,
        })
    }

    /// The text with every substitution's value; a value that is not Good is followed by its
    /// quality, e.g. `12.5 (Uncertain)`.
    pub(crate) fn render<R: Read + ?Sized>(&mut self, read: &R, now: Timestamp) -> String {
        let mut s = String::new();
        for p in &mut self.parts {
            match p {
                Part::Text(t) => s.push_str(t),
                Part::Expr(e, st) => {
                    let mut cx = Cx {
                        read,
                        now,
                        states: &mut st.states,
                    };
                    let o = eval(e, e.root, &mut cx);
                    let _ = write!(s, "{}", o.v);
                    if o.q.level != QualityLevel::Good {
                        let _ = write!(s, " ({:?})", o.q.level);
                    }
                }
            }
        }
        s
    }
}

/// The `}` closing an expression that starts at `from`, skipping strings and tag paths.
fn closing(text: &str, from: usize) -> Option<usize> {
    let b = text.as_bytes();
    let mut i = from;
    let mut quote: Option<u8> = None;
    while i < b.len() {
        let c = b[i];
        match quote {
            Some(q) if c == b'\\' && q != b'`' => i += 1,
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == b'"' || c == b'\'' || c == b'`' => quote = Some(c),
            None if c == b'}' => return Some(i),
            None => {}
        }
        i += 1;
    }
    None
}
