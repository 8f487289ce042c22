//! Rules: `when <cond> [for <duration>] then <actions>`, edge-triggered, actions as data.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ironplant_core::{QualityLevel, Sample, Severity, TagId, Timestamp, Value, ValueType};

use super::check::Expr;
use super::eval::{eval, Cx, ExprState, Store};
use super::template::Template;
use super::{Type, Val};

/// What a rule does when it fires, compiled.
#[derive(Debug, Clone)]
pub enum ActionDef {
    Write {
        tag: TagId,
        value_type: ValueType,
        value: Expr,
    },
    RaiseEvent {
        severity: Severity,
        message: Template,
    },
    Publish {
        topic: Template,
        payload: Template,
    },
}

/// One compiled rule.
#[derive(Debug, Clone)]
pub struct RuleDef {
    pub name: String,
    /// A bool expression.
    pub when: Expr,
    /// How long `when` must hold before the rule fires (zero: at once).
    pub hold: Duration,
    pub actions: Vec<ActionDef>,
}

/// An action for the caller to perform (through the command path, the event bus, the broker).
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Write through the command path, as the rule's own identity.
    Write {
        tag: TagId,
        value: Value,
    },
    RaiseEvent {
        severity: Severity,
        message: String,
    },
    Publish {
        topic: String,
        payload: String,
    },
}

/// What happened to a rule.
#[derive(Debug, Clone, PartialEq)]
pub enum RuleEvent {
    /// The condition rose and held: the actions, in order; `skipped` says which could not be
    /// built and why (e.g. a write whose value is Bad).
    Fired {
        actions: Vec<Action>,
        skipped: Vec<String>,
    },
    /// The condition's quality went Bad: the rule cannot fire until it is Good (or
    /// Uncertain) again. Reported once per Bad period.
    Blocked { reason: String },
}

#[derive(Debug, Clone, PartialEq)]
pub struct RuleOutput {
    /// Index of the rule in the definitions given to [`Rules::new`].
    pub rule: usize,
    pub name: Arc<str>,
    pub at: Timestamp,
    pub event: RuleEvent,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RulesError {
    #[error("rule {name:?}: its condition is a {ty}, not a bool")]
    NotBool {
        rule: usize,
        name: String,
        ty: &'static str,
    },
    #[error("rule {name:?}: action {action} writes a {value} value to a {tag} tag")]
    WriteType {
        rule: usize,
        name: String,
        action: usize,
        value: &'static str,
        tag: &'static str,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the condition to become true.
    Armed,
    /// True since `since`, waiting for the hold time.
    Pending { since: Timestamp },
    /// Fired; re-arms when the condition is false.
    Fired,
}

#[derive(Debug)]
struct Rule {
    def: RuleDef,
    name: Arc<str>,
    state: ExprState,
    phase: Phase,
    blocked: bool,
    time_dependent: bool,
}

/// The rule engine: tracks each rule's condition on the samples it is given and on `now`.
#[derive(Debug)]
pub struct Rules {
    rules: Vec<Rule>,
    store: Store,
    /// Rules whose condition reads a tag.
    by_tag: HashMap<TagId, Vec<u32>>,
    names: HashMap<TagId, String>,
    dirty: Vec<bool>,
    queue: Vec<u32>,
    evaluations: u64,
}

impl Rules {
    /// Checks and indexes the rules; `name` gives tag paths for messages.
    pub fn new(defs: Vec<RuleDef>, name: &dyn Fn(TagId) -> String) -> Result<Rules, RulesError> {
        let mut store = Store::default();
        let mut by_tag: HashMap<TagId, Vec<u32>> = HashMap::new();
        let mut names = HashMap::new();
        let mut rules = Vec::with_capacity(defs.len());
        for (i, def) in defs.into_iter().enumerate() {
            if def.when.ty() != Type::Bool {
                return Err(RulesError::NotBool {
                    rule: i,
                    name: def.name,
                    ty: def.when.ty().as_str(),
                });
            }
            let mut exprs: Vec<&Expr> = vec![&def.when];
            for (k, a) in def.actions.iter().enumerate() {
                match a {
                    ActionDef::Write {
                        value, value_type, ..
                    } => {
                        if !super::check::fits(value.ty(), *value_type) {
                            return Err(RulesError::WriteType {
                                rule: i,
                                name: def.name.clone(),
                                action: k + 1,
                                value: value.ty().as_str(),
                                tag: value_type.as_str(),
                            });
                        }
                        exprs.push(value);
                    }
                    ActionDef::RaiseEvent { message, .. } => exprs.extend(message.exprs()),
                    ActionDef::Publish { topic, payload } => {
                        exprs.extend(topic.exprs());
                        exprs.extend(payload.exprs());
                    }
                }
            }
            for e in exprs {
                for &(id, ty) in e.tag_types() {
                    store.declare(id, ty);
                    names.entry(id).or_insert_with(|| name(id));
                }
            }
            for a in &def.actions {
                if let ActionDef::Write { tag, .. } = a {
                    names.entry(*tag).or_insert_with(|| name(*tag));
                }
            }
            for t in def.when.inputs() {
                by_tag.entry(*t).or_default().push(i as u32);
            }
            rules.push(Rule {
                name: Arc::from(def.name.as_str()),
                state: def.when.new_state(),
                phase: Phase::Armed,
                blocked: false,
                time_dependent: def.when.is_time_dependent(),
                def,
            });
        }
        Ok(Rules {
            dirty: vec![false; rules.len()],
            rules,
            store,
            by_tag,
            names,
            queue: Vec::new(),
            evaluations: 0,
        })
    }

    /// Condition evaluations since creation.
    pub fn evaluations(&self) -> u64 {
        self.evaluations
    }

    /// Whether some rule needs [`Rules::tick`] (a `for` duration or a time function).
    pub fn needs_tick(&self) -> bool {
        self.rules
            .iter()
            .any(|r| r.time_dependent || !r.def.hold.is_zero())
    }

    /// Takes a batch (including the computed tags' samples) and evaluates the rules whose
    /// condition reads a tag of it; appends what happened to `out`.
    pub fn process(&mut self, batch: &[Sample], now: Timestamp, out: &mut Vec<RuleOutput>) {
        for s in batch {
            self.store.update(s);
            if let Some(rs) = self.by_tag.get(&s.tag) {
                for &r in rs {
                    if !std::mem::replace(&mut self.dirty[r as usize], true) {
                        self.queue.push(r);
                    }
                }
            }
        }
        self.queue.sort_unstable();
        let queue = std::mem::take(&mut self.queue);
        for &r in &queue {
            self.dirty[r as usize] = false;
            self.evaluate(r as usize, now, out);
        }
        self.queue = queue;
        self.queue.clear();
    }

    /// The earliest time a rule waiting for its `for` duration would fire if its condition
    /// holds: a runtime may tick then rather than on a fixed period.
    pub fn next_due(&self) -> Option<Timestamp> {
        self.rules
            .iter()
            .filter_map(|r| match r.phase {
                Phase::Pending { since } => {
                    Some(Timestamp(since.0.saturating_add(
                        i64::try_from(r.def.hold.as_micros()).unwrap_or(i64::MAX),
                    )))
                }
                _ => None,
            })
            .min()
    }

    /// Re-evaluates the rules waiting for their `for` duration and those with time functions.
    pub fn tick(&mut self, now: Timestamp, out: &mut Vec<RuleOutput>) {
        for i in 0..self.rules.len() {
            let r = &self.rules[i];
            if r.time_dependent || matches!(r.phase, Phase::Pending { .. }) {
                self.evaluate(i, now, out);
            }
        }
    }

    fn evaluate(&mut self, i: usize, now: Timestamp, out: &mut Vec<RuleOutput>) {
        self.evaluations += 1;
        let rule = &mut self.rules[i];
        let mut cx = Cx {
            read: &self.store,
            now,
            states: &mut rule.state.states,
        };
        let o = eval(&rule.def.when, rule.def.when.root, &mut cx);
        if o.q.level == QualityLevel::Bad {
            // A Bad condition never fires, and breaks a hold in progress.
            if matches!(rule.phase, Phase::Pending { .. }) {
                rule.phase = Phase::Armed;
            }
            if !rule.blocked {
                rule.blocked = true;
                let names = &self.names;
                let reason = o.cause.map_or_else(
                    || format!("the condition is {}", o.q),
                    |c| {
                        c.describe(rule.def.when.text(), o.q, &|t| {
                            names
                                .get(&t)
                                .cloned()
                                .unwrap_or_else(|| format!("#{}", t.0))
                        })
                    },
                );
                out.push(RuleOutput {
                    rule: i,
                    name: rule.name.clone(),
                    at: now,
                    event: RuleEvent::Blocked { reason },
                });
            }
            return;
        }
        rule.blocked = false;
        if !o.v.b() {
            rule.phase = Phase::Armed;
            return;
        }
        let hold = i64::try_from(rule.def.hold.as_micros()).unwrap_or(i64::MAX);
        let fire = match rule.phase {
            Phase::Fired => false,
            Phase::Armed if hold == 0 => true,
            Phase::Armed => {
                rule.phase = Phase::Pending { since: now };
                false
            }
            Phase::Pending { since } => now.0.saturating_sub(since.0) >= hold,
        };
        if fire {
            rule.phase = Phase::Fired;
            let event = self.fire(i, now);
            out.push(RuleOutput {
                rule: i,
                name: self.rules[i].name.clone(),
                at: now,
                event,
            });
        }
    }

    fn fire(&mut self, i: usize, now: Timestamp) -> RuleEvent {
        let (mut actions, mut skipped) = (Vec::new(), Vec::new());
        let names = &self.names;
        let store = &self.store;
        let rule = &mut self.rules[i];
        for (k, a) in rule.def.actions.iter_mut().enumerate() {
            match a {
                ActionDef::Write {
                    tag,
                    value_type,
                    value,
                } => {
                    let mut st = value.new_state();
                    let mut cx = Cx {
                        read: store,
                        now,
                        states: &mut st.states,
                    };
                    let o = eval(value, value.root, &mut cx);
                    if o.q.level == QualityLevel::Bad {
                        let why = o.cause.map_or_else(
                            || "its value is Bad".to_owned(),
                            |c| {
                                c.describe(value.text(), o.q, &|t| {
                                    names
                                        .get(&t)
                                        .cloned()
                                        .unwrap_or_else(|| format!("#{}", t.0))
                                })
                            },
                        );
                        skipped.push(format!(
                            "action {}: no write to {}: {why}",
                            k + 1,
                            names
                                .get(tag)
                                .cloned()
                                .unwrap_or_else(|| format!("#{}", tag.0))
                        ));
                        continue;
                    }
                    let v = match (o.v, value_type) {
                        (Val::Int(x), ValueType::Float) => Value::Float(x as f64),
                        (v, _) => v.to_value(),
                    };
                    actions.push(Action::Write {
                        tag: *tag,
                        value: v,
                    });
                }
                ActionDef::RaiseEvent { severity, message } => actions.push(Action::RaiseEvent {
                    severity: *severity,
                    message: message.render(store, now),
                }),
                ActionDef::Publish { topic, payload } => actions.push(Action::Publish {
                    topic: topic.render(store, now),
                    payload: payload.render(store, now),
                }),
            }
        }
        RuleEvent::Fired { actions, skipped }
    }
}
