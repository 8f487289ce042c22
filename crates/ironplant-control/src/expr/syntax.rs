//! Lexer and Pratt parser: expression text → untyped syntax tree with byte spans.
//!
//! Bounded by construction: the text is at most [`MAX_LEN`] bytes and the tree at most
//! [`MAX_DEPTH`] levels deep, so neither the parser, the checker nor the evaluator (all
//! recursive over the tree) can exhaust the stack, whatever the input.

use std::sync::Arc;

use super::{ExprError, Span};

/// Longest expression accepted, in bytes.
pub const MAX_LEN: usize = 8192;
/// Deepest nesting accepted (parentheses, operators, calls).
pub const MAX_DEPTH: usize = 64;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    Int(i64),
    Float(f64),
    /// A duration literal, in microseconds.
    Dur(i64),
    Str(Arc<str>),
    Ident(String),
    /// A backtick-quoted tag path.
    Path(String),
    LParen,
    RParen,
    Comma,
    Question,
    Colon,
    Plus,
    Minus,
    Star,
    Slash,
    Percent,
    Lt,
    Le,
    Gt,
    Ge,
    EqEq,
    Ne,
    AndAnd,
    OrOr,
    Bang,
    Eof,
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::Int(i) => format!("number {i}"),
            Tok::Float(f) => format!("number {f}"),
            Tok::Dur(_) => "a duration".into(),
            Tok::Str(_) => "a string".into(),
            Tok::Ident(s) => format!("`{s}`"),
            Tok::Path(p) => format!("tag `{p}`"),
            Tok::Eof => "the end of the expression".into(),
            t => format!("`{}`", t.symbol()),
        }
    }

    fn symbol(&self) -> &'static str {
        match self {
            Tok::LParen => "(",
            Tok::RParen => ")",
            Tok::Comma => ",",
            Tok::Question => "?",
            Tok::Colon => ":",
            Tok::Plus => "+",
            Tok::Minus => "-",
            Tok::Star => "*",
            Tok::Slash => "/",
            Tok::Percent => "%",
            Tok::Lt => "<",
            Tok::Le => "<=",
            Tok::Gt => ">",
            Tok::Ge => ">=",
            Tok::EqEq => "==",
            Tok::Ne => "!=",
            Tok::AndAnd => "&&",
            Tok::OrOr => "||",
            Tok::Bang => "!",
            _ => "",
        }
    }
}

fn err(span: Span, message: impl Into<String>, hint: Option<&str>) -> ExprError {
    ExprError {
        span,
        message: message.into(),
        hint: hint.map(str::to_owned),
    }
}

/// Splits `text` into tokens with their spans; the last is [`Tok::Eof`].
pub(crate) fn lex(text: &str) -> Result<Vec<(Tok, Span)>, ExprError> {
    if text.len() > MAX_LEN {
        return Err(err(
            Span::new(0, text.len()),
            format!(
                "the expression is {} bytes long; the limit is {MAX_LEN}",
                text.len()
            ),
            Some("split it into several computed tags"),
        ));
    }
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let start = i;
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if c.is_ascii_digit() || (c == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit)) {
            let (tok, end) = lex_number(text, i)?;
            out.push((tok, Span::new(start, end)));
            i = end;
            continue;
        }
        if c.is_ascii_alphabetic() || c == b'_' {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            out.push((Tok::Ident(text[start..i].to_owned()), Span::new(start, i)));
            continue;
        }
        if c == b'`' {
            let Some(len) = text[i + 1..].find('`') else {
                return Err(err(
                    Span::new(start, b.len()),
                    "unterminated tag path: no closing backtick",
                    Some("write a tag path between backticks, e.g. `acme/lyon/bottling/line1/filler/speed`"),
                ));
            };
            i = i + 1 + len + 1;
            out.push((
                Tok::Path(text[start + 1..i - 1].to_owned()),
                Span::new(start, i),
            ));
            continue;
        }
        if c == b'"' || c == b'\'' {
            let (s, end) = lex_string(text, i, c)?;
            out.push((Tok::Str(Arc::from(s)), Span::new(start, end)));
            i = end;
            continue;
        }
        let two = b.get(i + 1).copied();
        let (tok, len) = match (c, two) {
            (b'<', Some(b'=')) => (Tok::Le, 2),
            (b'>', Some(b'=')) => (Tok::Ge, 2),
            (b'=', Some(b'=')) => (Tok::EqEq, 2),
            (b'!', Some(b'=')) => (Tok::Ne, 2),
            (b'&', Some(b'&')) => (Tok::AndAnd, 2),
            (b'|', Some(b'|')) => (Tok::OrOr, 2),
            (b'(', _) => (Tok::LParen, 1),
            (b')', _) => (Tok::RParen, 1),
            (b',', _) => (Tok::Comma, 1),
            (b'?', _) => (Tok::Question, 1),
            (b':', _) => (Tok::Colon, 1),
            (b'+', _) => (Tok::Plus, 1),
            (b'-', _) => (Tok::Minus, 1),
            (b'*', _) => (Tok::Star, 1),
            (b'/', _) => (Tok::Slash, 1),
            (b'%', _) => (Tok::Percent, 1),
            (b'<', _) => (Tok::Lt, 1),
            (b'>', _) => (Tok::Gt, 1),
            (b'!', _) => (Tok::Bang, 1),
            (b'=', _) => {
                return Err(err(
                    Span::new(start, start + 1),
                    "`=` is not an operator",
                    Some("compare with `==`; expressions never assign"),
                ))
            }
            (b'&', _) | (b'|', _) => {
                return Err(err(
                    Span::new(start, start + 1),
                    format!("`{}` is not an operator", c as char),
                    Some("write `&&` (and) or `||` (or)"),
                ))
            }
            _ => {
                let ch = text[start..].chars().next().unwrap_or('?');
                return Err(err(
                    Span::new(start, start + ch.len_utf8()),
                    format!("unexpected character {ch:?}"),
                    Some("a tag path with '/' or '-' goes between backticks: `a/b/c`"),
                ));
            }
        };
        out.push((tok, Span::new(start, start + len)));
        i += len;
    }
    out.push((Tok::Eof, Span::new(b.len(), b.len())));
    Ok(out)
}

fn lex_number(text: &str, start: usize) -> Result<(Tok, usize), ExprError> {
    let b = text.as_bytes();
    let mut i = start;
    let mut float = false;
    while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'_') {
        i += 1;
    }
    if i < b.len() && b[i] == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit) {
        float = true;
        i += 1;
        while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'_') {
            i += 1;
        }
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        let mut j = i + 1;
        if j < b.len() && (b[j] == b'+' || b[j] == b'-') {
            j += 1;
        }
        if j < b.len() && b[j].is_ascii_digit() {
            float = true;
            i = j;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
        }
    }
    let digits: String = text[start..i].chars().filter(|c| *c != '_').collect();
    // A unit right after the number makes a duration: 500ms, 30s, 5m, 1h, 2d.
    let unit_end = {
        let mut j = i;
        while j < b.len() && b[j].is_ascii_alphanumeric() {
            j += 1;
        }
        j
    };
    let unit = &text[i..unit_end];
    let span = Span::new(start, unit_end);
    if !unit.is_empty() {
        let per: f64 = match unit {
            "us" => 1.0,
            "ms" => 1e3,
            "s" => 1e6,
            "m" | "min" => 60e6,
            "h" => 3600e6,
            "d" => 86_400e6,
            _ => {
                return Err(err(
                    span,
                    format!("unknown unit `{unit}` after a number"),
                    Some("durations are written 500ms, 30s, 5m, 1h or 2d"),
                ))
            }
        };
        let n: f64 = digits
            .parse()
            .map_err(|_| err(span, "not a number", None))?;
        let micros = n * per;
        if !(micros.is_finite() && micros <= 365.0 * 86_400e6) {
            return Err(err(
                span,
                "duration is longer than a year",
                Some("windows and delays are at most 365d"),
            ));
        }
        return Ok((Tok::Dur(micros.round() as i64), unit_end));
    }
    if float {
        match digits.parse::<f64>() {
            Ok(f) if f.is_finite() => Ok((Tok::Float(f), i)),
            _ => Err(err(span, "number out of range", None)),
        }
    } else {
        digits
            .parse::<i64>()
            .map(|n| (Tok::Int(n), i))
            .map_err(|_| {
                err(
                    span,
                    format!("integer {digits} does not fit 64 bits"),
                    Some("write it as a float, e.g. 1.0e19"),
                )
            })
    }
}

fn lex_string(text: &str, start: usize, quote: u8) -> Result<(String, usize), ExprError> {
    let mut out = String::new();
    let mut chars = text[start + 1..].char_indices();
    while let Some((off, ch)) = chars.next() {
        let at = start + 1 + off;
        match ch {
            c if c as u32 == u32::from(quote) => return Ok((out, at + 1)),
            '\\' => match chars.next() {
                Some((_, 'n')) => out.push('\n'),
                Some((_, 't')) => out.push('\t'),
                Some((_, '\\')) => out.push('\\'),
                Some((_, '"')) => out.push('"'),
                Some((_, '\'')) => out.push('\''),
                Some((o, c)) => {
                    return Err(err(
                        Span::new(at, start + 1 + o + c.len_utf8()),
                        format!("unknown escape `\\{c}` in a string"),
                        Some("known escapes: \\n \\t \\\\ \\\" \\'"),
                    ))
                }
                None => break,
            },
            c => out.push(c),
        }
    }
    Err(err(
        Span::new(start, text.len()),
        "unterminated string",
        Some("close it with the same quote it opens with"),
    ))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UnOp {
    Neg,
    Not,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
    And,
    Or,
}

impl BinOp {
    pub(crate) fn symbol(self) -> &'static str {
        match self {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Rem => "%",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::And => "&&",
            BinOp::Or => "||",
        }
    }

    /// Left binding power (higher binds tighter).
    fn power(tok: &Tok) -> Option<(BinOp, u8)> {
        Some(match tok {
            Tok::OrOr => (BinOp::Or, 2),
            Tok::AndAnd => (BinOp::And, 3),
            Tok::EqEq => (BinOp::Eq, 4),
            Tok::Ne => (BinOp::Ne, 4),
            Tok::Lt => (BinOp::Lt, 5),
            Tok::Le => (BinOp::Le, 5),
            Tok::Gt => (BinOp::Gt, 5),
            Tok::Ge => (BinOp::Ge, 5),
            Tok::Plus => (BinOp::Add, 6),
            Tok::Minus => (BinOp::Sub, 6),
            Tok::Star => (BinOp::Mul, 7),
            Tok::Slash => (BinOp::Div, 7),
            Tok::Percent => (BinOp::Rem, 7),
            _ => return None,
        })
    }
}

/// The untyped syntax tree.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Ast {
    pub kind: AstKind,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum AstKind {
    Int(i64),
    Float(f64),
    Dur(i64),
    Bool(bool),
    Str(Arc<str>),
    /// A bare identifier: a tag in the caller's scope.
    Ident(String),
    /// A backtick-quoted tag path.
    Path(String),
    Unary(UnOp, Box<Ast>),
    Binary(BinOp, Box<Ast>, Box<Ast>),
    Cond(Box<Ast>, Box<Ast>, Box<Ast>),
    Call {
        name: String,
        name_span: Span,
        args: Vec<Ast>,
    },
}

/// Parses a whole expression.
pub(crate) fn parse(text: &str) -> Result<Ast, ExprError> {
    let toks = lex(text)?;
    let mut p = Parser { toks, pos: 0 };
    if p.peek() == &Tok::Eof {
        return Err(err(
            Span::new(0, text.len()),
            "the expression is empty",
            Some("write e.g. `speed_actual / speed_setpoint`"),
        ));
    }
    let ast = p.expr(0, 0)?;
    let (tok, span) = p.next();
    if tok != Tok::Eof {
        return Err(err(
            span,
            format!("unexpected {} after a complete expression", tok.describe()),
            Some("is an operator missing?"),
        ));
    }
    Ok(ast)
}

struct Parser {
    toks: Vec<(Tok, Span)>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> &Tok {
        self.toks.get(self.pos).map_or(&Tok::Eof, |t| &t.0)
    }

    fn next(&mut self) -> (Tok, Span) {
        let t = self
            .toks
            .get(self.pos)
            .cloned()
            .unwrap_or((Tok::Eof, Span::new(0, 0)));
        if self.pos < self.toks.len() - 1 {
            self.pos += 1;
        }
        t
    }

    fn expect(&mut self, want: Tok, what: &str) -> Result<Span, ExprError> {
        let (tok, span) = self.next();
        if tok == want {
            Ok(span)
        } else {
            Err(err(
                span,
                format!(
                    "expected `{}` {what}, found {}",
                    want.symbol(),
                    tok.describe()
                ),
                None,
            ))
        }
    }

    /// Pratt loop: a prefix term, then binary operators binding tighter than `min`.
    fn expr(&mut self, min: u8, depth: usize) -> Result<Ast, ExprError> {
        if depth > MAX_DEPTH {
            let span = self.toks.get(self.pos).map_or(Span::new(0, 0), |t| t.1);
            return Err(err(
                span,
                format!("the expression nests more than {MAX_DEPTH} levels deep"),
                Some("split it into several computed tags"),
            ));
        }
        let mut lhs = self.prefix(depth)?;
        loop {
            let tok = self.peek().clone();
            if tok == Tok::Question {
                // Conditional: lowest precedence, right-associative.
                if min > 1 {
                    break;
                }
                self.next();
                let then = self.expr(1, depth + 1)?;
                self.expect(Tok::Colon, "in `cond ? a : b`")?;
                let other = self.expr(1, depth + 1)?;
                let span = lhs.span.to(other.span);
                lhs = Ast {
                    kind: AstKind::Cond(Box::new(lhs), Box::new(then), Box::new(other)),
                    span,
                };
                continue;
            }
            let Some((op, power)) = BinOp::power(&tok) else {
                break;
            };
            if power <= min {
                break;
            }
            self.next();
            let rhs = self.expr(power, depth + 1)?;
            let span = lhs.span.to(rhs.span);
            lhs = Ast {
                kind: AstKind::Binary(op, Box::new(lhs), Box::new(rhs)),
                span,
            };
        }
        Ok(lhs)
    }

    fn prefix(&mut self, depth: usize) -> Result<Ast, ExprError> {
        let (tok, span) = self.next();
        let kind = match tok {
            Tok::Int(i) => AstKind::Int(i),
            Tok::Float(f) => AstKind::Float(f),
            Tok::Dur(d) => AstKind::Dur(d),
            Tok::Str(s) => AstKind::Str(s),
            Tok::Path(p) => AstKind::Path(p),
            Tok::Ident(name) => match name.as_str() {
                "true" => AstKind::Bool(true),
                "false" => AstKind::Bool(false),
                _ if self.peek() == &Tok::LParen => {
                    self.next();
                    let mut args = Vec::new();
                    if self.peek() != &Tok::RParen {
                        loop {
                            args.push(self.expr(0, depth + 1)?);
                            if self.peek() == &Tok::Comma {
                                self.next();
                                continue;
                            }
                            break;
                        }
                    }
                    let close = self.expect(Tok::RParen, "to close the argument list")?;
                    return Ok(Ast {
                        kind: AstKind::Call {
                            name,
                            name_span: span,
                            args,
                        },
                        span: span.to(close),
                    });
                }
                _ => AstKind::Ident(name),
            },
            Tok::LParen => {
                let inner = self.expr(0, depth + 1)?;
                let close = self.expect(Tok::RParen, "to close `(`")?;
                return Ok(Ast {
                    kind: inner.kind,
                    span: span.to(close),
                });
            }
            Tok::Minus | Tok::Bang => {
                let operand = self.expr(8, depth + 1)?;
                let op = if tok == Tok::Minus {
                    UnOp::Neg
                } else {
                    UnOp::Not
                };
                // Fold `-literal` into the literal (a constant, not an operation).
                let kind = match (&op, &operand.kind) {
                    (UnOp::Neg, AstKind::Float(f)) => AstKind::Float(-f),
                    (UnOp::Neg, AstKind::Int(i)) if i.checked_neg().is_some() => AstKind::Int(-i),
                    _ => AstKind::Unary(op, Box::new(operand.clone())),
                };
                return Ok(Ast {
                    kind,
                    span: span.to(operand.span),
                });
            }
            other => {
                return Err(err(
                    span,
                    format!("expected a value, found {}", other.describe()),
                    Some("a value is a number, a string, a tag, a function call or `( … )`"),
                ))
            }
        };
        Ok(Ast { kind, span })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn show(a: &Ast) -> String {
        match &a.kind {
            AstKind::Int(i) => i.to_string(),
            AstKind::Float(f) => format!("{f:?}"),
            AstKind::Dur(d) => format!("{d}us"),
            AstKind::Bool(b) => b.to_string(),
            AstKind::Str(s) => format!("{s:?}"),
            AstKind::Ident(s) => s.clone(),
            AstKind::Path(p) => format!("`{p}`"),
            AstKind::Unary(UnOp::Neg, x) => format!("(-{})", show(x)),
            AstKind::Unary(UnOp::Not, x) => format!("(!{})", show(x)),
            AstKind::Binary(op, l, r) => format!("({} {} {})", show(l), op.symbol(), show(r)),
            AstKind::Cond(c, a, b) => format!("({} ? {} : {})", show(c), show(a), show(b)),
            AstKind::Call { name, args, .. } => {
                let a: Vec<String> = args.iter().map(show).collect();
                format!("{name}({})", a.join(", "))
            }
        }
    }

    fn p(s: &str) -> String {
        parse(s)
            .map(|a| show(&a))
            .unwrap_or_else(|e| format!("error {e:?}"))
    }

    #[test]
    fn precedence_and_associativity() {
        assert_eq!(p("1 + 2 * 3"), "(1 + (2 * 3))");
        assert_eq!(p("1 - 2 - 3"), "((1 - 2) - 3)");
        assert_eq!(p("a || b && !c"), "(a || (b && (!c)))");
        assert_eq!(p("a < b == c"), "((a < b) == c)");
        assert_eq!(p("a ? b : c ? d : e"), "(a ? b : (c ? d : e))");
        assert_eq!(p("x > 1 ? 2 : 3"), "((x > 1) ? 2 : 3)");
        assert_eq!(p("-x * 2"), "((-x) * 2)");
        assert_eq!(p("-9223372036854775807 - 1"), "(-9223372036854775807 - 1)");
        assert_eq!(p("max(a, 2.5, `x/y-z`)"), "max(a, 2.5, `x/y-z`)");
        assert_eq!(
            p("avg_over(x, 5m) + 1.5e3"),
            "(avg_over(x, 300000000us) + 1500.0)"
        );
        assert!(
            p("'it''s'").contains("unexpected a string after"),
            "{}",
            p("'it''s'")
        );
        assert_eq!(p("\"a\\\"b\""), "\"a\\\"b\"");
    }

    #[test]
    fn errors_point_at_the_offending_bytes() {
        let e = |s: &str| parse(s).expect_err(s);
        let x = e("a + * b");
        assert_eq!((x.span.start, x.span.end), (4, 5));
        assert!(x.message.contains("expected a value, found `*`"), "{x:?}");
        let x = e("(a + b");
        assert_eq!((x.span.start, x.span.end), (6, 6));
        assert!(x.message.contains("expected `)`"), "{x:?}");
        let x = e("a = 1");
        assert_eq!((x.span.start, x.span.end), (2, 3));
        let x = e("5 parsecs");
        assert_eq!((x.span.start, x.span.end), (2, 9));
        let x = e("5x");
        assert!(x.message.contains("unknown unit `x`"), "{x:?}");
        let x = e("`a/b");
        assert!(x.message.contains("unterminated tag path"), "{x:?}");
        let x = e("99999999999999999999");
        assert!(x.message.contains("does not fit 64 bits"), "{x:?}");
        let x = e("   ");
        assert!(x.message.contains("empty"), "{x:?}");
    }

    #[test]
    fn depth_and_length_are_bounded() {
        let deep = format!("{}1{}", "(".repeat(10_000), ")".repeat(10_000));
        assert!(parse(&deep).is_err());
        let minus = format!("{}1", "-".repeat(10_000));
        assert!(parse(&minus).is_err());
        let long = "1+".repeat(MAX_LEN);
        assert!(parse(&long).expect_err("long").message.contains("limit"));
        let ok = format!("{}1{}", "(".repeat(20), ")".repeat(20));
        assert_eq!(p(&ok), "1");
    }
}
