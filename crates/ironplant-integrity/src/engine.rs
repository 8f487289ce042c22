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

    /// Validates a tag that appeared at run time (a Sparkplug birth) with the default rules;
    /// it joins no model group (models are built from the configured namespace).
    pub fn add_tag(&mut self, meta: &TagMeta) {
        self.validator.add_tag(meta, TagRule::default());
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

    /// Everything a finding can name as its subject, once each: the checked tags (not the
    /// ignored ones), the assets of the consistency groups and of the anomaly models.
    pub fn subjects(&self, ns: &Namespace) -> Vec<TagPath> {
        let mut seen = std::collections::BTreeSet::new();
        for m in ns.tags() {
            if self
                .validator
                .kind(m.id)
                .is_some_and(|k| k != TagKind::Ignored)
            {
                seen.insert(m.path.clone());
            }
        }
        seen.extend(self.consistency.subjects().cloned());
        seen.extend(self.anomaly.groups().map(|(a, ..)| a.clone()));
        seen.into_iter().collect()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Change, Detector};
    use ironplant_core::config::{parse_with, Registry};
    use ironplant_core::{Quality, QualityReason, Value};

    const PLANT: &str = r#"
[[tag]]
path = "a/s/r/l1/tank/plc/level"
unit = "%"
min = 0.0
max = 100.0
[[tag]]
path = "a/s/r/l1/tank/plc/temp"
unit = "°C"
min = -20.0
max = 60.0
[[tag]]
path = "a/s/r/l1/tank/plc/count"
unit = "L"
min = 0.0
max = 4294967295.0

[integrity]
training = "10m"

[[integrity.tag]]
tag = "a/s/r/l1/tank/plc/temp"
max_rate = 0.5
"#;

    fn build() -> (Namespace, Integrity) {
        let config = parse_with("t.toml", PLANT, &Registry::new().with::<IntegrityConfig>())
            .unwrap_or_else(|e| panic!("{e}"));
        let ns = config.namespace();
        let i = Integrity::new(&ns, &config.get::<IntegrityConfig>()).expect("valid");
        (ns, i)
    }

    fn batch(ns: &Namespace, t: i64) -> Vec<Sample> {
        let ts = Timestamp(t * 1_000_000);
        let wobble = ((t * 7919) % 13) as f64 / 13.0;
        [
            ("level", 50.0 + wobble),
            ("temp", 20.0 + 0.1 * wobble),
            ("count", (t * 10) as f64),
        ]
        .into_iter()
        .filter_map(|(name, x)| {
            let m = ns.lookup(&format!("a/s/r/l1/tank/plc/{name}"))?;
            Some(Sample {
                tag: m.id,
                value: Value::Float(x),
                quality: Quality::GOOD,
                source_ts: ts,
                server_ts: ts,
            })
        })
        .collect()
    }

    #[test]
    fn groups_kinds_and_overrides_come_from_metadata_and_config() {
        let (ns, i) = build();
        let id = |n: &str| ns.lookup(&format!("a/s/r/l1/tank/plc/{n}")).map(|m| m.id);
        let kind = |n: &str| id(n).and_then(|t| i.validator().kind(t));
        assert_eq!(kind("level"), Some(TagKind::Measurement));
        assert_eq!(kind("count"), Some(TagKind::Counter));
        let temp = id("temp")
            .and_then(|t| i.validator().describe(t))
            .unwrap_or_default();
        assert!(temp.contains("max_rate Some(0.5)"), "{temp}");
        let groups: Vec<_> = i
            .anomaly()
            .groups()
            .map(|(a, t, _)| (a.to_string(), t.len()))
            .collect();
        assert_eq!(groups, vec![("a/s/r/l1".to_owned(), 2)]);
    }

    #[test]
    fn snapshots_exist_once_trained_and_restore_into_a_fresh_engine() {
        let (ns, mut i) = build();
        let mut out = Vec::new();
        assert!(
            i.snapshot().is_none(),
            "nothing to keep before training ends"
        );
        for t in 0..=600 {
            let mut b = batch(&ns, t);
            i.process(&mut b, Timestamp(t * 1_000_000), &mut out);
            i.tick(Timestamp(t * 1_000_000), &mut out);
        }
        assert!(i.is_trained());
        let snap = i.snapshot().expect("trained");
        assert_eq!(snap.validation.len(), 3);
        let back = Snapshot::from_json(&snap.to_json()).expect("round trip");
        assert_eq!(back, snap);

        let (_, mut fresh) = build();
        let report = fresh.restore(&back).expect("same version");
        assert_eq!(report.tags, 3);
        assert_eq!(report.models, snap.models.len());
        assert!(fresh.is_trained());
        // The restored engine checks at once: temp jumps 5 °C in a second (limit 0.5/s).
        let mut b = batch(&ns, 700);
        fresh.process(&mut b, Timestamp(700_000_000), &mut out);
        let mut b = batch(&ns, 701);
        if let Some(s) = b
            .iter_mut()
            .find(|s| Some(s.tag) == ns.lookup("a/s/r/l1/tank/plc/temp").map(|m| m.id))
        {
            s.value = Value::Float(25.0);
        }
        fresh.process(&mut b, Timestamp(701_000_000), &mut out);
        assert!(
            out.iter()
                .any(|f| f.detector == Detector::RateOfChange && f.change == Change::Raised),
            "{out:?}"
        );
        assert!(b
            .iter()
            .any(|s| s.quality == Quality::uncertain(QualityReason::Implausible)));

        let mut old = snap.clone();
        old.version = 0;
        let err = fresh.restore(&old).expect_err("another version");
        assert!(err.contains("delete it to train again"), "{err}");
        assert!(Snapshot::from_json("{").is_err());
    }

    #[test]
    fn unknown_tags_in_the_config_are_errors_naming_them() {
        let (ns, _) = build();
        let mut cfg = IntegrityConfig::default();
        cfg.tags.push(crate::config::TagOverride {
            tag: TagPath::parse("a/s/r/l1/tank/plc/nope").expect("path"),
            rule: TagRule::default(),
        });
        let err = Integrity::new(&ns, &cfg).expect_err("unknown tag");
        assert_eq!(
            err,
            vec![
                "[[integrity.tag]]: tag a/s/r/l1/tank/plc/nope is not in the namespace".to_owned()
            ]
        );
    }
}
