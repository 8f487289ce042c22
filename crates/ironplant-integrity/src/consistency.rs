//! Consistency across tags.
//!
//! - [`Redundant`]: sensors measuring the same thing must agree within `abs + rel × |median|`;
//!   a disagreement that lasts `for` is a finding naming the tags, the spread and (with three
//!   or more sensors) the one farthest from the others, whose samples become Uncertain.
//! - [`Balance`]: a physical relation over a sliding window, `Σ lhs ≈ Σ rhs`, each side a
//!   linear combination of terms: the change of a tag over the window (`delta`, roll-over
//!   aware for counters) or its time integral in unit·seconds (`integral`, trapezoidal).
//!   E.g. Δlevel × area ≈ ∫(inflow − outflow) dt; Δenergy ≈ ∫power dt / 3600.
//!
//! Relations are evaluated by [`Consistency::tick`] against checkpoints kept in a ring
//! preallocated for the window; a gap in any term's data (a Bad sample, no sample for
//! `max_gap`, the source clock going back) makes the relation unknown until the window has
//! moved past it, so a restart or an outage is never a violation.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use ironplant_core::{Quality, QualityLevel, QualityReason, Sample, TagId, TagPath, Timestamp};

use crate::{num, secs, stats, words, Change, Detector, Episode, Finding};

/// A group of redundant sensors.
#[derive(Debug, Clone, PartialEq)]
pub struct RedundantDef {
    pub id: String,
    pub tags: Vec<(TagId, TagPath)>,
    /// Allowed spread: `abs + rel × |median|`.
    pub abs: f64,
    pub rel: f64,
    /// How long the disagreement must last.
    pub hold: Duration,
    /// A value older than this is not compared.
    pub max_age: Duration,
}

/// How a term of a balance reads its tag.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TermOp {
    /// The change over the window; with `wrap`, a decrease of more than half of it is a roll-over.
    Delta { wrap: Option<f64> },
    /// ∫ value dt over the window, in value-unit × seconds.
    Integral,
}

/// `gain × op(tag)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Term {
    pub tag: TagId,
    pub path: TagPath,
    pub op: TermOp,
    pub gain: f64,
}

/// A relation `Σ lhs ≈ Σ rhs` over `window`.
#[derive(Debug, Clone, PartialEq)]
pub struct BalanceDef {
    pub id: String,
    pub lhs: Vec<Term>,
    pub rhs: Vec<Term>,
    pub window: Duration,
    /// Allowed disagreement: `abs + rel × max(|lhs|, |rhs|)`.
    pub abs: f64,
    pub rel: f64,
    pub hold: Duration,
    /// No sample of a term for longer than this is a gap.
    pub max_gap: Duration,
}

#[derive(Debug)]
struct RedundantState {
    def: RedundantDef,
    name: Arc<str>,
    subject: Option<TagPath>,
    last: Vec<Option<(Timestamp, f64)>>,
    /// Index of the current outlier (3+ sensors), whose samples are lowered.
    outlier: Option<usize>,
    pending: Option<Timestamp>,
    episode: Episode,
    values: Vec<f64>,
    scratch: Vec<f64>,
}

#[derive(Debug, Clone, Copy)]
struct TermState {
    /// Σ gain × contribution since start.
    cum: f64,
    last: Option<(Timestamp, f64)>,
}

#[derive(Debug)]
struct BalanceState {
    def: BalanceDef,
    name: Arc<str>,
    subject: Option<TagPath>,
    terms: Vec<TermState>,
    /// The latest gap of any term (arrival time).
    gap_at: Option<Timestamp>,
    /// (time, Σ lhs cum, Σ rhs cum), oldest first, one per `step`.
    checkpoints: VecDeque<(Timestamp, f64, f64)>,
    step: f64,
    pending: Option<Timestamp>,
    episode: Episode,
}

/// Checkpoints kept per window (the window's resolution).
const CHECKPOINTS: usize = 120;

/// Redundancy groups and balances, routed by tag through a flat index.
#[derive(Debug, Default)]
pub struct Consistency {
    redundant: Vec<RedundantState>,
    balances: Vec<BalanceState>,
    /// Per tag: (is a balance, index, member or term index).
    routes: Vec<Vec<(bool, usize, usize)>>,
}

/// The deepest asset all paths share.
fn common_asset(paths: &[&TagPath]) -> Option<TagPath> {
    let first = paths.first()?;
    let mut cur = first.parent();
    while let Some(p) = cur {
        if paths.iter().all(|x| x.is_under(&p)) {
            return Some(p);
        }
        cur = p.parent();
    }
    None
}

impl Consistency {
    pub fn new(redundant: Vec<RedundantDef>, balances: Vec<BalanceDef>) -> Consistency {
        let mut c = Consistency::default();
        for def in redundant {
            let n = def.tags.len();
            let paths: Vec<&TagPath> = def.tags.iter().map(|t| &t.1).collect();
            let subject = common_asset(&paths);
            let gi = c.redundant.len();
            for (mi, (id, _)) in def.tags.iter().enumerate() {
                c.route(*id, (false, gi, mi));
            }
            c.redundant.push(RedundantState {
                name: Arc::from(format!("redundant:{}", def.id)),
                subject,
                def,
                last: vec![None; n],
                outlier: None,
                pending: None,
                episode: Episode::default(),
                values: Vec::with_capacity(n),
                scratch: vec![0.0; n],
            });
        }
        for def in balances {
            let bi = c.balances.len();
            let terms: Vec<&Term> = def.lhs.iter().chain(&def.rhs).collect();
            let paths: Vec<&TagPath> = terms.iter().map(|t| &t.path).collect();
            let subject = common_asset(&paths);
            for (ti, t) in terms.iter().enumerate() {
                c.route(t.tag, (true, bi, ti));
            }
            let n = terms.len();
            let step = (def.window.as_secs_f64() / (CHECKPOINTS - 2) as f64).max(1e-3);
            c.balances.push(BalanceState {
                name: Arc::from(format!("balance:{}", def.id)),
                subject,
                def,
                terms: vec![
                    TermState {
                        cum: 0.0,
                        last: None
                    };
                    n
                ],
                gap_at: None,
                checkpoints: VecDeque::with_capacity(CHECKPOINTS),
                step,
                pending: None,
                episode: Episode::default(),
            });
        }
        c
    }

    fn route(&mut self, tag: TagId, r: (bool, usize, usize)) {
        let i = tag.index();
        if self.routes.len() <= i {
            self.routes.resize_with(i + 1, Vec::new);
        }
        self.routes[i].push(r);
    }

    /// Feeds one sample (after validation: Bad samples are gaps).
    pub fn observe(&mut self, sample: &mut Sample, now: Timestamp, out: &mut Vec<Finding>) {
        let Some(routes) = self.routes.get(sample.tag.index()) else {
            return;
        };
        let x = sample.value.as_f64().filter(|x| x.is_finite());
        let usable = sample.quality.level != QualityLevel::Bad;
        for &(is_balance, i, j) in routes {
            if is_balance {
                let Some(b) = self.balances.get_mut(i) else {
                    continue;
                };
                let (op, gain) = match b
                    .def
                    .lhs
                    .get(j)
                    .or_else(|| b.def.rhs.get(j - b.def.lhs.len()))
                {
                    Some(t) => (t.op, t.gain),
                    None => continue,
                };
                let max_gap = b.def.max_gap.as_secs_f64();
                let Some(ts) = b.terms.get_mut(j) else {
                    continue;
                };
                match (x, usable) {
                    (Some(x), true) => {
                        let t = sample.source_ts;
                        match ts.last {
                            Some((pt, px)) => {
                                let dt = secs(pt, t);
                                if dt <= 0.0 || dt > max_gap {
                                    b.gap_at = Some(now);
                                } else {
                                    ts.cum += gain
                                        * match op {
                                            TermOp::Integral => 0.5 * (x + px) * dt,
                                            TermOp::Delta { wrap } => {
                                                let d = x - px;
                                                match wrap {
                                                    Some(m) if d < -0.5 * m => d + m,
                                                    _ => d,
                                                }
                                            }
                                        };
                                }
                            }
                            None => b.gap_at = Some(now),
                        }
                        ts.last = Some((t, x));
                    }
                    _ => {
                        b.gap_at = Some(now);
                        ts.last = None;
                    }
                }
            } else {
                let Some(g) = self.redundant.get_mut(i) else {
                    continue;
                };
                if let Some(slot) = g.last.get_mut(j) {
                    *slot = match (x, usable) {
                        (Some(x), true) => Some((now, x)),
                        _ => None,
                    };
                }
                evaluate_redundant(g, now, out);
                if g.outlier == Some(j) && sample.quality.level < QualityLevel::Uncertain {
                    sample.quality = Quality::uncertain(QualityReason::Implausible);
                }
            }
        }
    }

    /// Takes checkpoints and evaluates the balances; call it every second or so.
    pub fn tick(&mut self, now: Timestamp, out: &mut Vec<Finding>) {
        for b in &mut self.balances {
            let lhs_n = b.def.lhs.len();
            let lhs: f64 = b.terms[..lhs_n].iter().map(|t| t.cum).sum();
            let rhs: f64 = b.terms[lhs_n..].iter().map(|t| t.cum).sum();
            // A clock going back: start over.
            if b.checkpoints.back().is_some_and(|c| c.0 > now) {
                b.checkpoints.clear();
                b.gap_at = Some(now);
            }
            if b.checkpoints
                .back()
                .is_none_or(|c| secs(c.0, now) >= b.step)
            {
                if b.checkpoints.len() == CHECKPOINTS {
                    b.checkpoints.pop_front();
                }
                b.checkpoints.push_back((now, lhs, rhs));
            }
            let window = b.def.window.as_secs_f64();
            // The newest checkpoint at least a window old.
            let Some(&(t0, l0, r0)) = b
                .checkpoints
                .iter()
                .rev()
                .find(|c| secs(c.0, now) >= window)
            else {
                continue;
            };
            if secs(t0, now) > window + 2.0 * b.step {
                continue;
            }
            if b.gap_at.is_some_and(|g| g >= t0) {
                // Unknown: neither a violation nor the end of one.
                b.pending = None;
                continue;
            }
            let (dl, dr) = (lhs - l0, rhs - r0);
            let diff = dl - dr;
            let tol = b.def.abs + b.def.rel * dl.abs().max(dr.abs());
            if diff.abs() > tol {
                let since = *b.pending.get_or_insert(now);
                if secs(since, now) >= b.def.hold.as_secs_f64() && b.episode.enter(since) {
                    let text = format!(
                        "{} does not hold: over the last {}, {} = {} but {} = {}; they disagree by {} (tolerance {})",
                        b.def.id,
                        words(window),
                        side(&b.def.lhs),
                        num(dl),
                        side(&b.def.rhs),
                        num(dr),
                        num(diff),
                        num(tol)
                    );
                    out.push(b.finding(Change::Raised, diff, tol, since, now, text));
                }
            } else {
                b.pending = None;
                if let Some(since) = b.episode.leave() {
                    let text = format!(
                        "{} holds again (disagreement {}, tolerance {})",
                        b.def.id,
                        num(diff),
                        num(tol)
                    );
                    out.push(b.finding(Change::Cleared, diff, tol, since, now, text));
                }
            }
        }
    }

    /// The assets the groups' findings name (the deepest asset holding all their tags).
    pub fn subjects(&self) -> impl Iterator<Item = &TagPath> + '_ {
        let r = self.redundant.iter().filter_map(|g| g.subject.as_ref());
        let b = self.balances.iter().filter_map(|g| g.subject.as_ref());
        r.chain(b)
    }

    /// Active consistency episodes: (id, since).
    pub fn active(&self) -> impl Iterator<Item = (&str, Timestamp)> + '_ {
        let r = self
            .redundant
            .iter()
            .filter(|g| g.episode.active)
            .map(|g| (&*g.name, g.episode.since));
        let b = self
            .balances
            .iter()
            .filter(|b| b.episode.active)
            .map(|b| (&*b.name, b.episode.since));
        r.chain(b)
    }
}

fn side(terms: &[Term]) -> String {
    let mut s = String::new();
    for (i, t) in terms.iter().enumerate() {
        if i > 0 {
            s.push_str(if t.gain < 0.0 { " − " } else { " + " });
        } else if t.gain < 0.0 {
            s.push('−');
        }
        let g = t.gain.abs();
        if g != 1.0 {
            s.push_str(&num(g));
            s.push('·');
        }
        match t.op {
            TermOp::Delta { .. } => s.push('Δ'),
            TermOp::Integral => s.push('∫'),
        }
        s.push_str(t.path.name());
        if t.op == TermOp::Integral {
            s.push_str(" dt");
        }
    }
    s
}

impl BalanceState {
    fn finding(
        &self,
        change: Change,
        value: f64,
        limit: f64,
        since: Timestamp,
        at: Timestamp,
        explanation: String,
    ) -> Finding {
        Finding {
            id: self.name.clone(),
            detector: Detector::Balance,
            change,
            subject: self.subject.clone(),
            tags: self
                .def
                .lhs
                .iter()
                .chain(&self.def.rhs)
                .map(|t| t.tag)
                .collect(),
            value,
            limit,
            since,
            at,
            explanation,
        }
    }
}

fn evaluate_redundant(g: &mut RedundantState, now: Timestamp, out: &mut Vec<Finding>) {
    let max_age = g.def.max_age.as_secs_f64();
    g.values.clear();
    for v in g.last.iter().flatten() {
        if secs(v.0, now) <= max_age {
            g.values.push(v.1);
        }
    }
    if g.values.len() < 2 || g.values.len() < g.last.len() {
        // Not all sensors known: no verdict (the stale and quality checks say why).
        return;
    }
    let med = stats::median(&g.values, &mut g.scratch).unwrap_or(0.0);
    let (lo, hi) = g
        .values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(*v), b.max(*v))
        });
    let spread = hi - lo;
    let tol = g.def.abs + g.def.rel * med.abs();
    if spread > tol {
        let outlier = if g.last.len() >= 3 {
            g.last
                .iter()
                .enumerate()
                .filter_map(|(i, v)| v.map(|v| (i, (v.1 - med).abs())))
                .max_by(|a, b| a.1.total_cmp(&b.1))
                .map(|(i, _)| i)
        } else {
            None
        };
        let since = *g.pending.get_or_insert(now);
        if secs(since, now) >= g.def.hold.as_secs_f64() {
            g.outlier = outlier;
            if g.episode.enter(since) {
                let names: Vec<String> = g
                    .def
                    .tags
                    .iter()
                    .zip(&g.last)
                    .map(|((_, p), v)| {
                        format!(
                            "{} = {}",
                            p.as_str(),
                            v.map_or_else(|| "?".into(), |v| num(v.1))
                        )
                    })
                    .collect();
                let odd = outlier
                    .and_then(|i| g.def.tags.get(i))
                    .map(|(_, p)| format!("; {} is the odd one out", p.as_str()))
                    .unwrap_or_default();
                let text = format!(
                    "redundant sensors {} disagree by {} (tolerance {}) since {since}: {}{odd}",
                    g.def.id,
                    num(spread),
                    num(tol),
                    names.join(", ")
                );
                out.push(g.finding(Change::Raised, spread, tol, since, now, text));
            }
        }
    } else {
        g.pending = None;
        g.outlier = None;
        if let Some(since) = g.episode.leave() {
            let text = format!(
                "redundant sensors {} agree again (spread {}, tolerance {})",
                g.def.id,
                num(spread),
                num(tol)
            );
            out.push(g.finding(Change::Cleared, spread, tol, since, now, text));
        }
    }
}

impl RedundantState {
    fn finding(
        &self,
        change: Change,
        value: f64,
        limit: f64,
        since: Timestamp,
        at: Timestamp,
        explanation: String,
    ) -> Finding {
        Finding {
            id: self.name.clone(),
            detector: Detector::Redundancy,
            change,
            subject: self.subject.clone(),
            tags: self.def.tags.iter().map(|t| t.0).collect(),
            value,
            limit,
            since,
            at,
            explanation,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ironplant_core::Value;

    const S: i64 = 1_000_000;

    fn p(s: &str) -> TagPath {
        TagPath::parse(s).expect("valid path")
    }

    fn sample(id: u32, t: i64, v: Value) -> Sample {
        Sample {
            tag: TagId(id),
            value: v,
            quality: Quality::GOOD,
            source_ts: Timestamp(t * S),
            server_ts: Timestamp(t * S),
        }
    }

    fn redundant3() -> Consistency {
        Consistency::new(
            vec![RedundantDef {
                id: "tt".into(),
                tags: (0..3)
                    .map(|i| (TagId(i), p(&format!("a/tank/t{i}"))))
                    .collect(),
                abs: 0.5,
                rel: 0.0,
                hold: Duration::from_secs(5),
                max_age: Duration::from_secs(10),
            }],
            vec![],
        )
    }

    #[test]
    fn redundant_sensors_that_disagree_for_long_enough_name_the_odd_one() {
        let mut c = redundant3();
        let mut out = Vec::new();
        let mut quality = Vec::new();
        for t in 0..20 {
            for i in 0..3 {
                let x = if i == 2 && t >= 5 {
                    21.0
                } else {
                    20.0 + 0.1 * f64::from(i)
                };
                let mut s = sample(i, t, Value::Float(x));
                c.observe(&mut s, Timestamp(t * S), &mut out);
                if i == 2 {
                    quality.push(s.quality);
                }
            }
        }
        assert_eq!(out.len(), 1, "{out:?}");
        let f = &out[0];
        assert_eq!(
            (f.detector, f.change),
            (Detector::Redundancy, Change::Raised)
        );
        assert_eq!(f.since, Timestamp(5 * S));
        assert_eq!(f.at, Timestamp(10 * S));
        assert!((f.value - 1.0).abs() < 1e-9);
        assert!(
            f.explanation.contains("a/tank/t2 is the odd one out"),
            "{}",
            f.explanation
        );
        assert_eq!(f.subject, Some(p("a/tank")));
        // The odd sensor's samples are Uncertain once the finding stands.
        assert!(
            quality[9].is_good() && !quality[10].is_good(),
            "{quality:?}"
        );
        // Back in line: cleared once.
        for t in 20..25 {
            for i in 0..3 {
                let mut s = sample(i, t, Value::Float(20.0));
                c.observe(&mut s, Timestamp(t * S), &mut out);
            }
        }
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].change, Change::Cleared);
    }

    #[test]
    fn a_short_disagreement_or_a_missing_sensor_is_not_a_violation() {
        let mut c = redundant3();
        let mut out = Vec::new();
        for t in 0..4 {
            for i in 0..3 {
                let mut s = sample(i, t, Value::Float(if i == 0 { 30.0 } else { 20.0 }));
                c.observe(&mut s, Timestamp(t * S), &mut out);
            }
        }
        // One sensor Bad (or NaN) from now on: no verdict.
        for t in 4..30 {
            for i in 0..3 {
                let mut s = sample(
                    i,
                    t,
                    Value::Float(if i == 0 {
                        f64::NAN
                    } else {
                        20.0 + f64::from(i)
                    }),
                );
                c.observe(&mut s, Timestamp(t * S), &mut out);
            }
        }
        assert!(out.is_empty(), "{out:?}");
    }

    fn tank() -> Consistency {
        // Δlevel [%] × 100 L/% ≈ ∫(inflow − outflow) [L/min] dt / 60.
        let term = |id, name: &str, op, gain| Term {
            tag: TagId(id),
            path: p(&format!("a/tank/{name}")),
            op,
            gain,
        };
        Consistency::new(
            vec![],
            vec![BalanceDef {
                id: "tank".into(),
                lhs: vec![term(0, "level", TermOp::Delta { wrap: None }, 100.0)],
                rhs: vec![
                    term(1, "inflow", TermOp::Integral, 1.0 / 60.0),
                    term(2, "outflow", TermOp::Integral, -1.0 / 60.0),
                ],
                window: Duration::from_secs(120),
                abs: 20.0,
                rel: 0.05,
                hold: Duration::from_secs(10),
                max_gap: Duration::from_secs(5),
            }],
        )
    }

    /// Runs the tank for `secs` from `t0` with `level_bias(t)` added to the level reading.
    fn run_tank(
        c: &mut Consistency,
        t0: i64,
        secs: i64,
        level: &mut f64,
        bias: impl Fn(i64) -> f64,
        out: &mut Vec<Finding>,
    ) {
        for t in t0..t0 + secs {
            let (inflow, outflow) = (360.0, 300.0);
            *level += (inflow - outflow) / 60.0 / 100.0;
            for (id, x) in [(0, *level + bias(t)), (1, inflow), (2, outflow)] {
                let mut s = sample(id, t, Value::Float(x));
                c.observe(&mut s, Timestamp(t * S), out);
            }
            c.tick(Timestamp(t * S), out);
        }
    }

    #[test]
    fn a_level_that_drifts_from_its_flows_breaks_the_balance() {
        let mut c = tank();
        let mut out = Vec::new();
        let mut level = 50.0;
        run_tank(&mut c, 0, 600, &mut level, |_| 0.0, &mut out);
        assert!(out.is_empty(), "{out:?}");
        // The level reading drifts 0.01 %/s (1 L/s) from t = 600.
        run_tank(
            &mut c,
            600,
            600,
            &mut level,
            |t| 0.01 * (t - 600) as f64,
            &mut out,
        );
        assert_eq!(out.len(), 1, "{out:?}");
        let f = &out[0];
        assert_eq!(f.detector, Detector::Balance);
        assert!(f.explanation.contains("100·Δlevel"), "{}", f.explanation);
        assert!(
            f.explanation.contains("1/60") || f.explanation.contains("0.01667·∫inflow dt"),
            "{}",
            f.explanation
        );
        assert_eq!(f.subject, Some(p("a/tank")));
        assert_eq!(f.tags, vec![TagId(0), TagId(1), TagId(2)]);
        // The drift is 120 L per 2 min window at full speed; tolerance 20 + 5 % of ~120.
        assert!(f.value > 20.0, "{}", f.value);
    }

    #[test]
    fn an_outage_or_a_clock_jump_is_a_gap_not_a_violation() {
        let mut c = tank();
        let mut out = Vec::new();
        let mut level = 50.0;
        run_tank(&mut c, 0, 300, &mut level, |_| 0.0, &mut out);
        // A minute without samples (the timers still tick), during which the tank was drained
        // by 10 % by hand: the flows say nothing about the gap, so windows over it are
        // unknown, not violations.
        for t in 300..360 {
            c.tick(Timestamp(t * S), &mut out);
        }
        level -= 10.0;
        run_tank(&mut c, 360, 540, &mut level, |_| 0.0, &mut out);
        // The clock goes back a day.
        run_tank(&mut c, 900 - 86_400, 300, &mut level, |_| 0.0, &mut out);
        // And jumps forward three hours.
        run_tank(&mut c, 3 * 3600, 300, &mut level, |_| 0.0, &mut out);
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn counter_deltas_roll_over() {
        let term = |id, name: &str, op, gain| Term {
            tag: TagId(id),
            path: p(&format!("a/f/{name}")),
            op,
            gain,
        };
        let mut c = Consistency::new(
            vec![],
            vec![BalanceDef {
                id: "bottles".into(),
                lhs: vec![term(
                    0,
                    "count",
                    TermOp::Delta {
                        wrap: Some(4_294_967_296.0),
                    },
                    1.0,
                )],
                rhs: vec![term(1, "speed", TermOp::Integral, 1.0 / 60.0)],
                window: Duration::from_secs(60),
                abs: 5.0,
                rel: 0.02,
                hold: Duration::ZERO,
                max_gap: Duration::from_secs(5),
            }],
        );
        let mut out = Vec::new();
        let mut count: u64 = 4_294_967_000;
        for t in 0..300i64 {
            count = (count + 10) % 4_294_967_296;
            for (id, v) in [(0, Value::Int(count as i64)), (1, Value::Float(600.0))] {
                let mut s = sample(id, t, v);
                c.observe(&mut s, Timestamp(t * S), &mut out);
            }
            c.tick(Timestamp(t * S), &mut out);
        }
        assert!(
            out.is_empty(),
            "the wrap at t≈30 is +10, not −4294967286: {out:?}"
        );
    }
}
