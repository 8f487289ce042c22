//! Statistical anomaly detection with models that are learnt once and then frozen.
//!
//! Tags are grouped by asset (by default the ISA-95 *line* a tag belongs to). For every
//! measurement of a group the training window fits, by ridge least squares, a linear model
//! of its value on the current values of the group's other tags (measurements, states,
//! setpoints), with AR(1) errors: `e_t = y_t − μ_y − β·(z_t − μ)`, `u_t = e_t − φ·e_{t−1}`.
//! Only sums are kept while learning (`Σw`, `Σwwᵀ` and the lag-1 moments of consecutive pairs), so training allocates
//! nothing per sample and the fit is closed-form. After the window the model is frozen: an
//! attacker cannot slowly teach it a new normal. Restarts restore it from a snapshot.
//!
//! The models are fitted at 75 % of the training window; the rest of it calibrates each
//! model's long-run inflation of σ (the variance of 60-sample means of its innovation, 1 for
//! white noise), so slowly correlated misfits do not pile up in the CUSUM.
//!
//! Scoring: the standardised innovation `u/(σ_u × inflation)`, clipped to ±`z_clip`, feeds a two-sided
//! CUSUM per tag (slack `k`, threshold `h`). A tag's score is `max(S⁺, S⁻)/h`, an asset's the
//! largest of its tags'; at 1 the asset raises one finding that says which tags deviate, by how
//! many σ (the EWMA of their innovations) and since when; it clears below `clear_score`.
//!
//! Regime changes: a change of a *settle* tag (by default the group's state codes, integer
//! status tags such as `machine_state`, and its setpoints) holds the CUSUMs for `settle`, and
//! nothing is learnt during that time; discrete inputs that change often (a compressor on/off)
//! are ordinary regressors, so the linear model covers both of their states.

use std::sync::Arc;
use std::time::Duration;

use ironplant_core::{QualityLevel, Sample, TagId, TagPath, Timestamp};
use serde::{Deserialize, Serialize};

use crate::{num, secs, stats, words, Change, Detector, Episode, Finding};

/// Anomaly settings (`[integrity]`).
#[derive(Debug, Clone, PartialEq)]
pub struct AnomalySettings {
    /// CUSUM slack, in σ.
    pub cusum_k: f64,
    /// CUSUM threshold, in σ.
    pub cusum_h: f64,
    /// Standardised innovations are clipped to ± this before the CUSUM.
    pub z_clip: f64,
    /// Hold after a settle tag changes.
    pub settle: Duration,
    /// Ridge penalty on the standardised regressors.
    pub ridge: f64,
    /// A model needs at least this many training samples.
    pub min_samples: u64,
    /// An asset's finding clears below this score.
    pub clear_score: f64,
    /// A regressor older than this is unknown (no evaluation, no learning).
    pub max_age: Duration,
}

impl Default for AnomalySettings {
    fn default() -> AnomalySettings {
        AnomalySettings {
            cusum_k: 1.0,
            cusum_h: 20.0,
            z_clip: 4.0,
            settle: Duration::from_secs(60),
            ridge: 1e-3,
            min_samples: 600,
            clear_score: 0.5,
            max_age: Duration::from_secs(30),
        }
    }
}

/// Most tags in one model group (targets and regressors).
pub const MAX_GROUP: usize = 64;

/// One group to model: its asset, the tags to model and the tags they may depend on.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupDef {
    pub asset: TagPath,
    /// Every tag of the group with its path (targets first or not; order is the model's).
    pub tags: Vec<(TagId, TagPath)>,
    /// Indices into `tags` of the tags to model.
    pub targets: Vec<usize>,
    /// Indices into `tags` whose change starts a settle time.
    pub settle_on: Vec<usize>,
}

/// A frozen model, as stored in a snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fit {
    pub target: String,
    /// Regressor paths, in the order of `beta` and `mu`.
    pub regressors: Vec<String>,
    pub mu_y: f64,
    pub mu: Vec<f64>,
    pub beta: Vec<f64>,
    pub phi: f64,
    pub sigma_u: f64,
    /// Long-run inflation of σ (≥ 1), measured in the calibration part of the training
    /// window: how much more block means of the innovation wander than white noise's would.
    #[serde(default = "one")]
    pub inflation: f64,
    /// Training samples it was fitted on.
    pub n: u64,
}

fn one() -> f64 {
    1.0
}

/// Samples per block of the calibration's long-run variance.
const BLOCK: u32 = 60;

/// Share of the training window spent fitting; the rest calibrates the fitted models.
const FIT_SHARE: f64 = 0.75;

/// Training sums of one model, over w = [y, z...] shifted by the first sample seen (so the
/// raw moments do not cancel catastrophically for values far from zero, e.g. 400 V ± 0.3).
#[derive(Debug, Default)]
struct Sums {
    origin: Vec<f64>,
    n: u64,
    sum: Vec<f64>,
    /// Σ w wᵀ over all samples (upper triangle).
    s0: Vec<f64>,
    /// Over consecutive pairs: count, Σ w_t, Σ w_{t−1}, Σ w_t w_tᵀ, Σ w_{t−1} w_{t−1}ᵀ, Σ w_t w_{t−1}ᵀ.
    n1: u64,
    sum_c: Vec<f64>,
    sum_p: Vec<f64>,
    s_cc: Vec<f64>,
    s_pp: Vec<f64>,
    s_cp: Vec<f64>,
    prev: Vec<f64>,
    has_prev: bool,
}

impl Sums {
    fn new(d: usize) -> Sums {
        Sums {
            origin: Vec::new(),
            n: 0,
            sum: vec![0.0; d],
            s0: vec![0.0; d * d],
            n1: 0,
            sum_c: vec![0.0; d],
            sum_p: vec![0.0; d],
            s_cc: vec![0.0; d * d],
            s_pp: vec![0.0; d * d],
            s_cp: vec![0.0; d * d],
            prev: vec![0.0; d],
            has_prev: false,
        }
    }

    fn add(&mut self, w: &mut [f64]) {
        let d = w.len();
        if self.origin.is_empty() {
            self.origin = w.to_vec();
        }
        for (x, o) in w.iter_mut().zip(&self.origin) {
            *x -= o;
        }
        self.n += 1;
        for a in 0..d {
            self.sum[a] += w[a];
            for b in a..d {
                self.s0[a * d + b] += w[a] * w[b];
            }
        }
        if self.has_prev {
            self.n1 += 1;
            for a in 0..d {
                self.sum_c[a] += w[a];
                self.sum_p[a] += self.prev[a];
                for b in 0..d {
                    self.s_cc[a * d + b] += w[a] * w[b];
                    self.s_pp[a * d + b] += self.prev[a] * self.prev[b];
                    self.s_cp[a * d + b] += w[a] * self.prev[b];
                }
            }
        }
        self.prev.copy_from_slice(w);
        self.has_prev = true;
    }
}

#[derive(Debug)]
struct Model {
    target: usize,
    /// Local indices of its regressors (every other tag of the group).
    regs: Vec<usize>,
    sums: Sums,
    w: Vec<f64>,
    // Frozen.
    fit: Option<Fit>,
    /// Local regressor indices in the fit's order.
    fit_regs: Vec<usize>,
    // Scoring.
    prev_e: Option<(Timestamp, f64)>,
    pos: f64,
    neg: f64,
    pos_since: Timestamp,
    neg_since: Timestamp,
    ewma: f64,
    // Calibration: the current block and the sum of squared block means.
    block_sum: f64,
    block_n: u32,
    cal_sum2: f64,
    cal_blocks: u32,
}

impl Model {
    fn new(target: usize, n_tags: usize) -> Model {
        let regs: Vec<usize> = (0..n_tags).filter(|i| *i != target).collect();
        let d = regs.len() + 1;
        Model {
            target,
            regs,
            sums: Sums::new(d),
            w: vec![0.0; d],
            fit: None,
            fit_regs: Vec::new(),
            prev_e: None,
            pos: 0.0,
            neg: 0.0,
            pos_since: Timestamp(0),
            neg_since: Timestamp(0),
            ewma: 0.0,
            block_sum: 0.0,
            block_n: 0,
            cal_sum2: 0.0,
            cal_blocks: 0,
        }
    }

    fn calibrate(&mut self, z: f64) {
        self.block_sum += z;
        self.block_n += 1;
        if self.block_n == BLOCK {
            let mean = self.block_sum / f64::from(BLOCK);
            self.cal_sum2 += mean * mean;
            self.cal_blocks += 1;
            self.block_sum = 0.0;
            self.block_n = 0;
        }
    }

    /// Ends calibration: the inflation from the block means (white noise gives 1).
    fn end_calibration(&mut self) {
        if let Some(f) = &mut self.fit {
            if self.cal_blocks >= 5 {
                let var = self.cal_sum2 / f64::from(self.cal_blocks) * f64::from(BLOCK);
                f.inflation = var.sqrt().clamp(1.0, 10.0);
            }
        }
    }

    fn score(&self, h: f64) -> f64 {
        self.pos.max(self.neg) / h
    }

    fn since(&self) -> Timestamp {
        if self.pos >= self.neg {
            self.pos_since
        } else {
            self.neg_since
        }
    }

    fn learn(&mut self, values: &[f64]) {
        self.w[0] = values[self.target];
        for (k, &r) in self.regs.iter().enumerate() {
            self.w[k + 1] = values[r];
        }
        self.sums.add(&mut self.w);
    }

    /// Breaks the chain of consecutive samples (a gap, a settle time).
    fn gap(&mut self) {
        self.sums.has_prev = false;
    }

    /// Fits the model from the training sums and drops them; false if it cannot be fitted.
    fn freeze(&mut self, s: &AnomalySettings, paths: &[Arc<str>]) -> bool {
        let ok = self.sums.n >= s.min_samples.max(2) && self.sums.n1 >= 2;
        let fit = if ok { self.solve(s, paths) } else { None };
        // The sums are not needed any more.
        self.sums = Sums::default();
        match fit {
            Some(f) => {
                self.fit_regs = f
                    .regressors
                    .iter()
                    .filter_map(|p| paths.iter().position(|q| **q == **p))
                    .collect();
                self.fit = Some(f);
                true
            }
            None => false,
        }
    }

    fn solve(&self, s: &AnomalySettings, paths: &[Arc<str>]) -> Option<Fit> {
        let t = &self.sums;
        let d = self.w.len();
        let n = t.n as f64;
        let mu: Vec<f64> = t.sum.iter().map(|x| x / n).collect();
        let cov = |a: usize, b: usize| {
            let (i, j) = if a <= b { (a, b) } else { (b, a) };
            t.s0[i * d + j] / n - mu[i] * mu[j]
        };
        let origin = |a: usize| t.origin.get(a).copied().unwrap_or(0.0);
        let scale = |a: usize| 1.0 + (mu[a] + origin(a)).powi(2);
        let var_y = cov(0, 0);
        if var_y <= 1e-12 * scale(0) {
            return None;
        }
        // Regressors that varied in training.
        let used: Vec<usize> = (1..d).filter(|&a| cov(a, a) > 1e-12 * scale(a)).collect();
        let m = used.len();
        let sd: Vec<f64> = used.iter().map(|&a| cov(a, a).sqrt()).collect();
        let sd_y = var_y.sqrt();
        let mut r = vec![0.0; m * m];
        let mut rhs = vec![0.0; m];
        for (i, &a) in used.iter().enumerate() {
            for (j, &b) in used.iter().enumerate() {
                r[i * m + j] = cov(a, b) / (sd[i] * sd[j]) + if i == j { s.ridge } else { 0.0 };
            }
            rhs[i] = cov(0, a) / (sd[i] * sd_y);
        }
        if m > 0 && !stats::solve_spd(&mut r, &mut rhs, m) {
            return None;
        }
        let beta: Vec<f64> = (0..m).map(|i| rhs[i] * sd_y / sd[i]).collect();
        // c = [1, −β]: e = c·(w − μ).
        let mut c = vec![0.0; d];
        c[0] = 1.0;
        for (i, &a) in used.iter().enumerate() {
            c[a] = -beta[i];
        }
        // Over the consecutive pairs: Var(e_t), Var(e_{t−1}), Cov(e_t, e_{t−1}).
        let n1 = t.n1 as f64;
        let (mc, mp): (Vec<f64>, Vec<f64>) = (
            t.sum_c.iter().map(|x| x / n1).collect(),
            t.sum_p.iter().map(|x| x / n1).collect(),
        );
        let (mut vc, mut vp, mut cp) = (0.0, 0.0, 0.0);
        for a in 0..d {
            for b in 0..d {
                let k = c[a] * c[b];
                if k == 0.0 {
                    continue;
                }
                vc += k * (t.s_cc[a * d + b] / n1 - mc[a] * mc[b]);
                vp += k * (t.s_pp[a * d + b] / n1 - mp[a] * mp[b]);
                cp += k * (t.s_cp[a * d + b] / n1 - mc[a] * mp[b]);
            }
        }
        if !(vc.is_finite() && vp.is_finite() && cp.is_finite()) || vc <= 0.0 || vp <= 0.0 {
            return None;
        }
        let phi = (cp / (vc * vp).sqrt()).clamp(0.0, 0.995);
        // The innovation's variance as observed, Var(e_t − φ e_{t−1}): right even when the
        // errors are not a pure AR(1) (a slow wander plus white noise) or φ was clamped.
        let var_u = vc + phi * phi * vp - 2.0 * phi * cp;
        let sigma_u = var_u.max(1e-6 * vc).sqrt();
        let name = |a: usize| paths[self.regs[a - 1]].to_string();
        Some(Fit {
            target: paths[self.target].to_string(),
            regressors: used.iter().map(|&a| name(a)).collect(),
            mu_y: mu[0] + origin(0),
            mu: used.iter().map(|&a| mu[a] + origin(a)).collect(),
            beta,
            phi,
            sigma_u,
            inflation: 1.0,
            n: t.n,
        })
    }
}

#[derive(Debug)]
struct Group {
    asset: TagPath,
    name: Arc<str>,
    ids: Vec<TagId>,
    paths: Vec<Arc<str>>,
    values: Vec<f64>,
    seen: Vec<Option<Timestamp>>,
    good: Vec<bool>,
    settle_on: Vec<usize>,
    settle_until: Option<Timestamp>,
    /// Model index by local tag index (targets only).
    model_of: Vec<Option<usize>>,
    models: Vec<Model>,
    episode: Episode,
    /// The tags named by the raised finding (its clear names the same).
    named: Vec<TagId>,
}

/// The anomaly detector: groups routed by tag through a flat index.
#[derive(Debug)]
pub struct Anomaly {
    settings: AnomalySettings,
    groups: Vec<Group>,
    routes: Vec<Vec<(usize, usize)>>,
    /// Models fitted (calibrating until `frozen`).
    fitted: bool,
    frozen: bool,
    training: Duration,
    started: Option<Timestamp>,
}

impl Anomaly {
    pub fn new(settings: AnomalySettings, training: Duration, defs: Vec<GroupDef>) -> Anomaly {
        let mut a = Anomaly {
            settings,
            groups: Vec::new(),
            routes: Vec::new(),
            fitted: false,
            frozen: false,
            training,
            started: None,
        };
        for def in defs {
            let gi = a.groups.len();
            let n = def.tags.len().min(MAX_GROUP);
            let tags = &def.tags[..n];
            for (li, (id, _)) in tags.iter().enumerate() {
                let i = id.index();
                if a.routes.len() <= i {
                    a.routes.resize_with(i + 1, Vec::new);
                }
                a.routes[i].push((gi, li));
            }
            let mut model_of = vec![None; n];
            let mut models = Vec::new();
            for &t in def.targets.iter().filter(|t| **t < n) {
                if model_of[t].is_none() {
                    model_of[t] = Some(models.len());
                    models.push(Model::new(t, n));
                }
            }
            a.groups.push(Group {
                name: Arc::from(format!("{}:anomaly", def.asset.as_str())),
                asset: def.asset,
                ids: tags.iter().map(|t| t.0).collect(),
                paths: tags.iter().map(|t| Arc::from(t.1.as_str())).collect(),
                values: vec![0.0; n],
                seen: vec![None; n],
                good: vec![false; n],
                settle_on: def.settle_on.into_iter().filter(|i| *i < n).collect(),
                settle_until: None,
                model_of,
                models,
                episode: Episode::default(),
                named: Vec::new(),
            });
        }
        a
    }

    pub fn is_frozen(&self) -> bool {
        self.frozen
    }

    /// Fits every model now and stops learning.
    pub fn freeze(&mut self) {
        self.fit();
        self.frozen = true;
        for g in &mut self.groups {
            for m in &mut g.models {
                m.end_calibration();
                m.pos = 0.0;
                m.neg = 0.0;
                m.ewma = 0.0;
            }
        }
    }

    /// Fits every model not fitted yet (calibration follows until frozen).
    fn fit(&mut self) {
        self.fitted = true;
        let s = &self.settings;
        for g in &mut self.groups {
            for m in &mut g.models {
                if m.fit.is_none() && !m.sums.s0.is_empty() {
                    m.freeze(s, &g.paths);
                }
            }
        }
    }

    /// The frozen models (for a snapshot).
    pub fn fits(&self) -> impl Iterator<Item = &Fit> {
        self.groups
            .iter()
            .flat_map(|g| g.models.iter().filter_map(|m| m.fit.as_ref()))
    }

    /// Installs frozen models from a snapshot and stops learning. Returns how many were
    /// installed; a model whose target or a regressor is no longer in its group is dropped.
    pub fn restore(&mut self, fits: &[Fit]) -> usize {
        let mut n = 0;
        for g in &mut self.groups {
            for m in &mut g.models {
                let target = &g.paths[m.target];
                let Some(f) = fits.iter().find(|f| *f.target == **target) else {
                    continue;
                };
                let regs: Vec<usize> = f
                    .regressors
                    .iter()
                    .filter_map(|p| g.paths.iter().position(|q| **q == **p))
                    .collect();
                if regs.len() != f.regressors.len()
                    || f.beta.len() != regs.len()
                    || f.mu.len() != regs.len()
                {
                    continue;
                }
                m.fit = Some(f.clone());
                m.fit_regs = regs;
                m.pos = 0.0;
                m.neg = 0.0;
                m.sums = Sums::default();
                n += 1;
            }
        }
        self.fitted = true;
        self.frozen = true;
        n
    }

    /// Where training stands at `now`: fitting (learning sums), calibrating, or frozen.
    fn phase(&mut self, now: Timestamp) -> Phase {
        if self.frozen {
            return Phase::Frozen;
        }
        let started = *self.started.get_or_insert(now);
        let elapsed = secs(started, now);
        let window = self.training.as_secs_f64();
        if elapsed >= window {
            self.freeze();
            return Phase::Frozen;
        }
        if elapsed >= FIT_SHARE * window && !self.fitted {
            self.fit();
        }
        if self.fitted {
            Phase::Calibrating
        } else {
            Phase::Fitting
        }
    }

    /// Feeds one sample (after validation: only Good samples are learnt, Bad ones are unknown).
    pub fn observe(&mut self, sample: &Sample, now: Timestamp, out: &mut Vec<Finding>) {
        let phase = self.phase(now);
        let learning = phase == Phase::Fitting;
        let Some(routes) = self.routes.get(sample.tag.index()) else {
            return;
        };
        let s = &self.settings;
        let x = sample.value.as_f64().filter(|x| x.is_finite());
        for &(gi, li) in routes {
            let Some(g) = self.groups.get_mut(gi) else {
                continue;
            };
            let usable = sample.quality.level != QualityLevel::Bad;
            let Some(x) = x.filter(|_| usable) else {
                g.seen[li] = None;
                continue;
            };
            let changed = g.seen[li].is_some() && g.values[li] != x;
            g.values[li] = x;
            g.seen[li] = Some(now);
            g.good[li] = sample.quality.is_good();
            if changed && g.settle_on.contains(&li) {
                g.settle_until = Some(Timestamp(now.0.saturating_add(s.settle.as_micros() as i64)));
                for m in &mut g.models {
                    m.gap();
                    m.prev_e = None;
                }
            }
            // A settle end further away than one settle time: the clock went back; forget it.
            let settling = g
                .settle_until
                .is_some_and(|u| now < u && secs(now, u) <= s.settle.as_secs_f64());
            let Some(mi) = g.model_of[li] else { continue };
            let max_age = s.max_age.as_secs_f64();
            let fresh = |g: &Group, i: usize| g.seen[i].is_some_and(|t| secs(t, now) <= max_age);
            // Transients are learnt (the model must know how the plant recovers) but not scored.
            if learning {
                let m = &g.models[mi];
                let all_good = g.good[li] && m.regs.iter().all(|&r| fresh(g, r) && g.good[r]);
                let m = &mut g.models[mi];
                if all_good {
                    m.learn(&g.values);
                } else {
                    m.gap();
                }
                continue;
            }
            if settling {
                continue;
            }
            let Some(fit) = &g.models[mi].fit else {
                continue;
            };
            if !g.models[mi].fit_regs.iter().all(|&r| fresh(g, r)) {
                g.models[mi].prev_e = None;
                continue;
            }
            let mut e = x - fit.mu_y;
            for (k, &r) in g.models[mi].fit_regs.iter().enumerate() {
                e -= fit.beta[k] * (g.values[r] - fit.mu[k]);
            }
            let (phi, sigma_u, inflation) = (fit.phi, fit.sigma_u, fit.inflation.max(1.0));
            let m = &mut g.models[mi];
            let z = match m.prev_e {
                Some((t, pe)) if secs(t, now) > 0.0 && secs(t, now) <= max_age => {
                    (e - phi * pe) / sigma_u
                }
                // No previous innovation: the stationary deviation of e.
                _ => e * (1.0 - phi * phi).sqrt() / sigma_u,
            };
            m.prev_e = Some((now, e));
            if phase == Phase::Calibrating {
                m.calibrate(z.clamp(-s.z_clip, s.z_clip));
                continue;
            }
            let z = (z / inflation).clamp(-s.z_clip, s.z_clip);
            if m.pos == 0.0 {
                m.pos_since = now;
            }
            if m.neg == 0.0 {
                m.neg_since = now;
            }
            // Capped at twice the threshold, so a finding clears soon after the cause ends.
            let cap = 2.0 * s.cusum_h;
            m.pos = (m.pos + z - s.cusum_k).clamp(0.0, cap);
            m.neg = (m.neg - z - s.cusum_k).clamp(0.0, cap);
            m.ewma = 0.9 * m.ewma + 0.1 * z;
            evaluate(g, s, now, out);
        }
    }

    /// The score of every asset (1 = the alarm threshold), for publishing as tags.
    pub fn scores(&self) -> impl Iterator<Item = (&TagPath, f64)> {
        let h = self.settings.cusum_h;
        self.groups.iter().map(move |g| {
            (
                &g.asset,
                g.models.iter().map(|m| m.score(h)).fold(0.0, f64::max),
            )
        })
    }

    /// Per-tag scores of an asset's models: (tag, score, EWMA of the innovation in σ).
    pub fn tag_scores(&self, asset: &TagPath) -> Vec<(TagId, f64, f64)> {
        let h = self.settings.cusum_h;
        self.groups
            .iter()
            .filter(|g| g.asset == *asset)
            .flat_map(|g| {
                g.models
                    .iter()
                    .map(move |m| (g.ids[m.target], m.score(h), m.ewma))
            })
            .collect()
    }

    /// The groups as built: (asset, modelled tags, tags that start a settle time).
    pub fn groups(&self) -> impl Iterator<Item = (&TagPath, Vec<&str>, Vec<&str>)> {
        self.groups.iter().map(|g| {
            (
                &g.asset,
                g.models.iter().map(|m| &*g.paths[m.target]).collect(),
                g.settle_on.iter().map(|&i| &*g.paths[i]).collect(),
            )
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Fitting,
    Calibrating,
    Frozen,
}

fn evaluate(g: &mut Group, s: &AnomalySettings, now: Timestamp, out: &mut Vec<Finding>) {
    let h = s.cusum_h;
    let score = g.models.iter().map(|m| m.score(h)).fold(0.0, f64::max);
    if score >= 1.0 && !g.episode.active {
        let since = g
            .models
            .iter()
            .filter(|m| m.score(h) >= 1.0)
            .map(Model::since)
            .min()
            .unwrap_or(now);
        g.episode.enter(since);
        let text = explain(g, h, score, now);
        g.named = deviating(g, h).iter().map(|m| g.ids[m.target]).collect();
        out.push(finding(g, Change::Raised, score, since, now, text));
    } else if score < s.clear_score && g.episode.active {
        if let Some(since) = g.episode.leave() {
            let text = format!(
                "{}: the data fits the learnt model again (score {}) after {}",
                g.asset.as_str(),
                num(score),
                words(secs(since, now))
            );
            out.push(finding(g, Change::Cleared, score, since, now, text));
        }
    }
}

/// The models whose score is at least 0.3, highest first: the tags a finding names.
fn deviating(g: &Group, h: f64) -> Vec<&Model> {
    let mut d: Vec<&Model> = g.models.iter().filter(|m| m.score(h) >= 0.3).collect();
    d.sort_by(|a, b| b.score(h).total_cmp(&a.score(h)));
    d
}

fn explain(g: &Group, h: f64, score: f64, now: Timestamp) -> String {
    let parts: Vec<String> = deviating(g, h)
        .iter()
        .take(5)
        .map(|m| {
            let dir = if m.pos >= m.neg { "above" } else { "below" };
            format!(
                "{} reads {}σ {dir} its model (score {}) since {} ago",
                g.paths[m.target],
                num(m.ewma.abs()),
                num(m.score(h)),
                words(secs(m.since(), now))
            )
        })
        .collect();
    format!(
        "{}: anomaly score {} (alarm at 1): {}",
        g.asset.as_str(),
        num(score),
        parts.join("; ")
    )
}

fn finding(
    g: &Group,
    change: Change,
    score: f64,
    since: Timestamp,
    at: Timestamp,
    explanation: String,
) -> Finding {
    Finding {
        id: g.name.clone(),
        detector: Detector::Anomaly,
        change,
        subject: Some(g.asset.clone()),
        tags: g.named.clone(),
        value: score,
        limit: 1.0,
        since,
        at,
        explanation,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ironplant_core::{Quality, QualityReason, Value};

    const S: i64 = 1_000_000;

    fn p(s: &str) -> TagPath {
        TagPath::parse(s).expect("valid path")
    }

    fn noise(i: i64) -> f64 {
        let h = (i as u64)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .rotate_left(29);
        (h >> 11) as f64 / (1u64 << 53) as f64 - 0.5
    }

    /// y = 2 + 0.5·x + noise; x wanders; state 0/1 switches every 300 s.
    fn group() -> Anomaly {
        let tags = vec![
            (TagId(0), p("a/l/y")),
            (TagId(1), p("a/l/x")),
            (TagId(2), p("a/l/state")),
        ];
        let settings = AnomalySettings {
            min_samples: 100,
            settle: Duration::from_secs(90),
            ..AnomalySettings::default()
        };
        Anomaly::new(
            settings,
            Duration::from_secs(1800),
            vec![GroupDef {
                asset: p("a/l"),
                tags,
                targets: vec![0],
                settle_on: vec![2],
            }],
        )
    }

    fn step(a: &mut Anomaly, t: i64, bias: f64, q: Quality, out: &mut Vec<Finding>) {
        let x = 10.0 + 5.0 * (t as f64 / 200.0).sin();
        let state = ((t / 300) % 2) as f64;
        let y = 2.0 + 0.5 * x + 0.1 * noise(t) + bias;
        for (id, v) in [(1, x), (2, state), (0, y)] {
            let s = Sample {
                tag: TagId(id),
                value: Value::Float(v),
                quality: if id == 0 { q } else { Quality::GOOD },
                source_ts: Timestamp(t * S),
                server_ts: Timestamp(t * S),
            };
            a.observe(&s, Timestamp(t * S), out);
        }
    }

    #[test]
    fn learns_the_relation_then_flags_a_step_and_names_the_tag() {
        let mut a = group();
        let mut out = Vec::new();
        for t in 0..7200 {
            step(&mut a, t, 0.0, Quality::GOOD, &mut out);
        }
        assert!(a.is_frozen());
        assert!(out.is_empty(), "{out:?}");
        let fit = a.fits().next().cloned().expect("fitted");
        assert_eq!(
            fit.regressors,
            vec!["a/l/x".to_owned(), "a/l/state".to_owned()]
        );
        assert!((fit.beta[0] - 0.5).abs() < 0.01, "{fit:?}");
        // uniform ±0.05 noise: σ ≈ 0.029.
        assert!((fit.sigma_u - 0.0289).abs() < 0.005, "{fit:?}");
        // A step of 0.1 (3.5σ) at t = 7300, after the settle time of the change at 7200.
        for t in 7200..7300 {
            step(&mut a, t, 0.0, Quality::GOOD, &mut out);
        }
        for t in 7300..7350 {
            step(&mut a, t, 0.1, Quality::GOOD, &mut out);
        }
        assert_eq!(out.len(), 1, "{out:?}");
        let f = &out[0];
        assert_eq!((f.detector, f.change), (Detector::Anomaly, Change::Raised));
        assert!(
            f.at.0 - 7300 * S <= 10 * S,
            "detected in {} s",
            (f.at.0 - 7300 * S) / S
        );
        assert!(
            f.explanation.contains("a/l/y reads") && f.explanation.contains("above"),
            "{}",
            f.explanation
        );
        assert_eq!(f.tags, vec![TagId(0)]);
        let score = a.scores().next().map(|s| s.1).unwrap_or(0.0);
        assert!(score >= 1.0);
        for t in 7350..7490 {
            step(&mut a, t, 0.0, Quality::GOOD, &mut out);
        }
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].change, Change::Cleared);
    }

    #[test]
    fn the_frozen_model_does_not_learn_a_slow_drift() {
        let mut a = group();
        let mut out = Vec::new();
        for t in 0..1800 {
            step(&mut a, t, 0.0, Quality::GOOD, &mut out);
        }
        // A drift that would be absorbed by an adaptive model: +0.0005 per second.
        let mut detected = None;
        for t in 1800..5400 {
            step(
                &mut a,
                t,
                0.0005 * (t - 1800) as f64,
                Quality::GOOD,
                &mut out,
            );
            if detected.is_none() && !out.is_empty() {
                detected = Some(t - 1800);
            }
        }
        let d = detected.expect("the drift is detected");
        assert!(d < 300, "after {d} s");
        assert_eq!(out.len(), 1, "still one episode: {out:?}");
    }

    #[test]
    fn bad_samples_are_not_learnt_and_a_restored_model_scores_at_once() {
        let mut a = group();
        let mut out = Vec::new();
        // Bad-quality training data with a huge offset: never learnt.
        for t in 0..300 {
            step(
                &mut a,
                t,
                50.0,
                Quality::bad(QualityReason::CommFailure),
                &mut out,
            );
        }
        for t in 300..=1800 {
            step(&mut a, t, 0.0, Quality::GOOD, &mut out);
        }
        assert!(a.is_frozen());
        let fits: Vec<Fit> = a.fits().cloned().collect();
        assert_eq!(fits.len(), 1);
        assert!(
            (fits[0].mu_y - 7.0).abs() < 3.0,
            "the +50 of the Bad samples is not in: {:?}",
            fits[0]
        );
        // Restart: a fresh detector restored from the snapshot is frozen at once...
        let mut b = group();
        assert_eq!(b.restore(&fits), 1);
        assert!(b.is_frozen());
        // ...so an attack right after the restart is scored, not learnt.
        for t in 0..60 {
            step(&mut b, 10_000 + t, 0.2, Quality::GOOD, &mut out);
        }
        assert_eq!(out.len(), 1, "{out:?}");
    }

    #[test]
    fn a_state_change_holds_the_cusum_for_the_settle_time() {
        let mut a = group();
        let mut out = Vec::new();
        for t in 0..1800 {
            step(&mut a, t, 0.0, Quality::GOOD, &mut out);
        }
        // A transient of 1.0 (35σ) for 60 s right after every state change (t % 300 == 0).
        for t in 1800..7200 {
            let bias = if t % 300 < 60 { 1.0 } else { 0.0 };
            step(&mut a, t, bias, Quality::GOOD, &mut out);
        }
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn nan_and_clock_jumps_do_not_score() {
        let mut a = group();
        let mut out = Vec::new();
        for t in 0..1800 {
            step(&mut a, t, 0.0, Quality::GOOD, &mut out);
        }
        for (t, v) in [
            (1800, f64::NAN),
            (1801, f64::INFINITY),
            (1802, f64::NEG_INFINITY),
        ] {
            let s = Sample {
                tag: TagId(0),
                value: Value::Float(v),
                quality: Quality::GOOD,
                source_ts: Timestamp(t * S),
                server_ts: Timestamp(t * S),
            };
            a.observe(&s, Timestamp(t * S), &mut out);
        }
        // Back a day, then forward three hours.
        for t in 0..100 {
            step(&mut a, 1803 - 86_400 + t, 0.0, Quality::GOOD, &mut out);
        }
        for t in 0..100 {
            step(&mut a, 3 * 3600 + t, 0.0, Quality::GOOD, &mut out);
        }
        assert!(out.is_empty(), "{out:?}");
        assert!(a.scores().all(|(_, s)| s < 0.5));
    }
}
