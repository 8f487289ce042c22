//! [`Integrity`]: validation, consistency and anomaly detection over one namespace, built from
//! the `[integrity]` section; the object the runtime wraps in a tag-bus processor.

use std::collections::HashMap;

use ironplant_core::{Namespace, Sample, TagId, TagMeta, TagPath, Timestamp, ValueType};
use serde::{Deserialize, Serialize};

use crate::anomaly::{Anomaly, Fit, GroupDef};
use crate::config::IntegrityConfig;
use crate::consistency::{BalanceDef, Consistency, RedundantDef, Term, TermOp};
use crate::validate::{default_wrap, Learnt, TagKind, TagRule, Validator};
use crate::Finding;

/// Version of [`Snapshot`]; a snapshot of another version is refused (training starts over).
pub const SNAPSHOT_VERSION: u32 = 1;

/// What was learnt, to survive a restart without learning again from possibly attacked data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub version: u32,
    /// Validation's learnt values by tag path.
    pub validation: Vec<(String, Learnt)>,
    /// The frozen models.
    pub models: Vec<Fit>,
}

impl Snapshot {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn from_json(text: &str) -> Result<Snapshot, String> {
        serde_json::from_str(text).map_err(|e| format!("integrity snapshot is not valid: {e}"))
    }
}

/// What [`Integrity::restore`] installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreReport {
    pub tags: usize,
    pub models: usize,
    /// Models of the snapshot not installed (their tags changed).
    pub dropped_models: usize,
}

/// Validation, consistency and anomaly detection together. Synchronous, deterministic and
/// driven by `now`: [`Integrity::process`] with every batch, [`Integrity::tick`] every second.
#[derive(Debug)]
pub struct Integrity {
    validator: Validator,
    consistency: Consistency,
    anomaly: Anomaly,
}

/// The ISA-95 line (depth 4) a tag belongs to, or its parent when the path is shorter.
fn default_asset(path: &TagPath) -> Option<TagPath> {
    let mut cur = path.parent()?;
    while cur.depth() > 4 {
        cur = cur.parent()?;
    }
    Some(cur)
}

fn numeric(t: ValueType) -> bool {
    matches!(t, ValueType::Bool | ValueType::Int | ValueType::Float)
}

impl Integrity {
    /// Builds the detectors for `ns`; every reference of `cfg` that is not in `ns` is an error.
    pub fn new(ns: &Namespace, cfg: &IntegrityConfig) -> Result<Integrity, Vec<String>> {
        let mut errors = Vec::new();
        let lookup = |p: &TagPath, errors: &mut Vec<String>, what: &str| -> Option<&TagMeta> {
            let m = ns.lookup(p.as_str());
            if m.is_none() {
                errors.push(format!("{what}: tag {p} is not in the namespace"));
            }
            m
        };
        let rules: HashMap<TagId, TagRule> = cfg
            .tags
            .iter()
            .filter_map(|o| {
                lookup(&o.tag, &mut errors, "[[integrity.tag]]").map(|m| (m.id, o.rule.clone()))
            })
            .collect();
        let validator = Validator::new(
            cfg.validation.clone(),
            cfg.training,
            ns.tags()
                .map(|m| (m, rules.get(&m.id).cloned().unwrap_or_default())),
        );

        let mut redundant = Vec::new();
        for r in &cfg.redundant {
            let what = format!("redundant group {:?}", r.id);
            let tags: Vec<(TagId, TagPath)> = r
                .tags
                .iter()
                .filter_map(|p| lookup(p, &mut errors, &what).map(|m| (m.id, m.path.clone())))
                .collect();
            redundant.push(RedundantDef {
                id: r.id.clone(),
                tags,
                abs: r.abs,
                rel: r.rel,
                hold: r.hold,
                max_age: r.max_age,
            });
        }
        let mut balances = Vec::new();
        for b in &cfg.balances {
            let what = format!("balance {:?}", b.id);
            let side =
                |terms: &[crate::config::TermConfig], errors: &mut Vec<String>| -> Vec<Term> {
                    terms
                        .iter()
                        .filter_map(|t| {
                            let m = lookup(&t.tag, errors, &what)?;
                            let op = if t.integral {
                                TermOp::Integral
                            } else {
                                TermOp::Delta {
                                    wrap: t.wrap.or_else(|| default_wrap(m.range)),
                                }
                            };
                            Some(Term {
                                tag: m.id,
                                path: m.path.clone(),
                                op,
                                gain: t.gain,
                            })
                        })
                        .collect()
                };
            let lhs = side(&b.lhs, &mut errors);
            let rhs = side(&b.rhs, &mut errors);
            balances.push(BalanceDef {
                id: b.id.clone(),
                lhs,
                rhs,
                window: b.window,
                abs: b.abs,
                rel: b.rel,
                hold: b.hold,
                max_gap: b.max_gap,
            });
        }
        let consistency = Consistency::new(redundant, balances);

        // Model groups: the configured ones, then one per line for the measurements left.
        let kind = |m: &TagMeta| validator.kind(m.id).unwrap_or(TagKind::Ignored);
        let member = |m: &TagMeta| {
            numeric(m.value_type)
                && matches!(
                    kind(m),
                    TagKind::Measurement | TagKind::Status | TagKind::Setpoint
                )
        };
        let settles = |m: &TagMeta| {
            (kind(m) == TagKind::Status && m.value_type == ValueType::Int)
                || kind(m) == TagKind::Setpoint
        };
        let mut groups: Vec<GroupDef> = Vec::new();
        let mut modelled: Vec<bool> = vec![false; ns.len()];
        for mc in &cfg.models {
            let excluded = |m: &TagMeta| mc.exclude.contains(&m.path);
            let tags: Vec<&TagMeta> = ns
                .tags()
                .filter(|m| m.path.is_under(&mc.asset) && member(m) && !excluded(m))
                .collect();
            let targets: Vec<usize> = tags
                .iter()
                .enumerate()
                .filter(|(_, m)| match &mc.tags {
                    Some(list) => list.contains(&m.path),
                    None => kind(m) == TagKind::Measurement,
                })
                .map(|(i, _)| i)
                .collect();
            let settle_on: Vec<usize> = tags
                .iter()
                .enumerate()
                .filter(|(_, m)| match &mc.settle_on {
                    Some(list) => list.contains(&m.path),
                    None => settles(m),
                })
                .map(|(i, _)| i)
                .collect();
            for &t in &targets {
                if let Some(slot) = modelled.get_mut(tags[t].id.index()) {
                    *slot = true;
                }
            }
            groups.push(GroupDef {
                asset: mc.asset.clone(),
                tags: tags.iter().map(|m| (m.id, m.path.clone())).collect(),
                targets,
                settle_on,
            });
        }
        if cfg.default_models {
            let mut lines: Vec<TagPath> = Vec::new();
            for m in ns.tags() {
                if kind(m) == TagKind::Measurement
                    && !modelled.get(m.id.index()).copied().unwrap_or(true)
                {
                    if let Some(a) = default_asset(&m.path) {
                        if !lines.contains(&a) && !cfg.models.iter().any(|mc| mc.asset == a) {
                            lines.push(a);
                        }
                    }
                }
            }
            for asset in lines {
                let tags: Vec<&TagMeta> = ns
                    .tags()
                    .filter(|m| default_asset(&m.path).as_ref() == Some(&asset) && member(m))
                    .collect();
                let targets = (0..tags.len())
                    .filter(|&i| {
                        kind(tags[i]) == TagKind::Measurement && !modelled[tags[i].id.index()]
                    })
                    .collect();
                let settle_on = (0..tags.len()).filter(|&i| settles(tags[i])).collect();
                groups.push(GroupDef {
                    asset,
                    tags: tags.iter().map(|m| (m.id, m.path.clone())).collect(),
                    targets,
                    settle_on,
                });
            }
        }
        let anomaly = Anomaly::new(cfg.anomaly.clone(), cfg.training, groups);
        if errors.is_empty() {
            Ok(Integrity {
                validator,
                consistency,
                anomaly,
            })
        } else {
            Err(errors)
        }
    }

    /// Checks a batch in place (qualities lowered where a check fails) and pushes findings.
    pub fn process(&mut self, batch: &mut [Sample], now: Timestamp, out: &mut Vec<Finding>) {
        for s in batch.iter_mut() {
            self.validator.check(s, now, out);
            self.consistency.observe(s, now, out);
            self.anomaly.observe(s, now, out);
        }
    }

    /// Timers: staleness and the windowed relations. Call it every second or so.
    pub fn tick(&mut self, now: Timestamp, out: &mut Vec<Finding>) {
        self.validator.tick(now, out);
        self.consistency.tick(now, out);
    }

    /// Whether training is over (models and learnt limits frozen).
    pub fn is_trained(&self) -> bool {
        self.validator.is_frozen() && self.anomaly.is_frozen()
    }

    /// Ends training now (e.g. an operator who knows the plant ran normally so far).
    pub fn freeze(&mut self) {
        self.validator.freeze();
        self.anomaly.freeze();
    }

    /// Anomaly score per asset (1 = alarm threshold), for publishing as tags.
    pub fn scores(&self) -> impl Iterator<Item = (&TagPath, f64)> {
        self.anomaly.scores()
    }

    pub fn validator(&self) -> &Validator {
        &self.validator
    }

    pub fn consistency(&self) -> &Consistency {
        &self.consistency
    }

    pub fn anomaly(&self) -> &Anomaly {
        &self.anomaly
    }

    /// What was learnt, once training is over (`None` before: nothing worth keeping).
    pub fn snapshot(&self) -> Option<Snapshot> {
        if !self.is_trained() {
            return None;
        }
        Some(Snapshot {
            version: SNAPSHOT_VERSION,
            validation: self
                .validator
                .learnt()
                .map(|(p, l)| (p.as_str().to_owned(), l.clone()))
                .collect(),
            models: self.anomaly.fits().cloned().collect(),
        })
    }

    /// Installs a snapshot and freezes: a restart does not learn again.
    pub fn restore(&mut self, snap: &Snapshot) -> Result<RestoreReport, String> {
        if snap.version != SNAPSHOT_VERSION {
            return Err(format!(
                "integrity snapshot version {} is not {SNAPSHOT_VERSION}; delete it to train again",
                snap.version
            ));
        }
        let learnt: Vec<(TagPath, Learnt)> = snap
            .validation
            .iter()
            .filter_map(|(p, l)| TagPath::parse(p).ok().map(|p| (p, l.clone())))
            .collect();
        let tags = self.validator.restore(&learnt);
        let models = self.anomaly.restore(&snap.models);
        Ok(RestoreReport {
            tags,
            models,
            dropped_models: snap.models.len().saturating_sub(models),
        })
    }
}
