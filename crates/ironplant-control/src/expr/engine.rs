//! Computed tags: a dependency graph of compiled expressions, evaluated incrementally.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use std::time::Duration;

use ironplant_core::{
    Processor, ProcessorOutput, Quality, Sample, TagId, Timestamp, Value, ValueType,
};

use super::check::Expr;
use super::eval::{eval, Cause, Cx, ExprState, Out, Store, Val};
use super::Type;

/// One computed tag: its output tag, a name for messages (its path), and its compiled
/// expression.
#[derive(Debug, Clone)]
pub struct ComputedDef {
    pub output: TagId,
    pub name: String,
    /// The output tag's declared type (an int expression may feed a float tag).
    pub value_type: ValueType,
    pub expr: Expr,
}

/// Why a set of computed tags cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ComputedError {
    /// The names, each reading the next, the first repeated at the end: `a → b → a`.
    #[error("computed tags form a cycle: {}", .names.join(" → "))]
    Cycle {
        /// Indices of the definitions on the cycle, in order.
        defs: Vec<usize>,
        names: Vec<String>,
    },
    #[error("computed tag {name} is defined twice")]
    Duplicate { def: usize, name: String },
    #[error("computed tag {name} is {value_type} but its expression gives {expr_type}")]
    Type {
        def: usize,
        name: String,
        value_type: &'static str,
        expr_type: &'static str,
    },
}

/// Counters for tests and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ComputedStats {
    /// Expression evaluations since creation.
    pub evaluations: u64,
    /// Samples returned.
    pub samples_out: u64,
}

#[derive(Debug)]
struct Node {
    def: ComputedDef,
    /// The output's expression type as read by dependents.
    out_ty: Type,
    state: ExprState,
    time_dependent: bool,
    /// Last value and quality returned (a tick emits only a change).
    last: Option<(Val, Quality)>,
    last_good: Option<Value>,
    cause: Option<Cause>,
}

const BY_INPUT: u8 = 1;
const BY_TICK: u8 = 2;

/// N computed tags compiled into one dependency graph, evaluated incrementally: a batch of
/// samples re-evaluates only the computed tags it affects (transitively), each once, in
/// topological order. Synchronous and clock-free: time comes in as `now`.
///
/// Invariants: no cycle between computed tags (refused by [`Computed::new`]); node `i` reads
/// only inputs and nodes `< i` (nodes are stored in topological order); the hot path
/// allocates only for the output samples (and a string input's `Arc` clone).
#[derive(Debug)]
pub struct Computed {
    nodes: Vec<Node>,
    /// CSR by tag id: dependents of tag `t` are `dep_list[dep_start[t]..dep_start[t+1]]`.
    dep_start: Vec<u32>,
    dep_list: Vec<u32>,
    store: Store,
    by_output: HashMap<TagId, u32>,
    /// By tag id: whether it is a computed tag of this engine.
    outputs: Vec<bool>,
    dirty: Vec<u8>,
    queue: BinaryHeap<Reverse<u32>>,
    stats: ComputedStats,
    /// For the [`Processor`] impl: derived samples before they join the batch.
    scratch: Vec<Sample>,
    tick_every: Duration,
}

impl Computed {
    /// Builds the graph: refuses two definitions of one output, an output type the
    /// expression cannot feed, and cycles (the error names the whole cycle).
    pub fn new(defs: Vec<ComputedDef>) -> Result<Computed, ComputedError> {
        let mut by_output: HashMap<TagId, usize> = HashMap::new();
        for (i, d) in defs.iter().enumerate() {
            if by_output.insert(d.output, i).is_some() {
                return Err(ComputedError::Duplicate {
                    def: i,
                    name: d.name.clone(),
                });
            }
            if !super::check::fits(d.expr.ty(), d.value_type) {
                return Err(ComputedError::Type {
                    def: i,
                    name: d.name.clone(),
                    value_type: d.value_type.as_str(),
                    expr_type: d.expr.ty().as_str(),
                });
            }
        }
        // Edges u → v when v reads u's output; Kahn's algorithm for the order.
        let n = defs.len();
        let mut succ: Vec<Vec<usize>> = vec![Vec::new(); n];
        let mut indeg = vec![0usize; n];
        for (v, d) in defs.iter().enumerate() {
            for t in d.expr.inputs() {
                if let Some(&u) = by_output.get(t) {
                    succ[u].push(v);
                    indeg[v] += 1;
                }
            }
        }
        let mut order = Vec::with_capacity(n);
        let mut ready: Vec<usize> = (0..n).filter(|i| indeg[*i] == 0).rev().collect();
        while let Some(u) = ready.pop() {
            order.push(u);
            for &v in &succ[u] {
                indeg[v] -= 1;
                if indeg[v] == 0 {
                    ready.push(v);
                }
            }
        }
        if order.len() < n {
            let cycle = find_cycle(&succ, &indeg);
            let mut names: Vec<String> = cycle.iter().map(|i| defs[*i].name.clone()).collect();
            if let Some(first) = names.first().cloned() {
                names.push(first);
            }
            return Err(ComputedError::Cycle { defs: cycle, names });
        }
        let mut slots: Vec<Option<ComputedDef>> = defs.into_iter().map(Some).collect();
        let mut nodes = Vec::with_capacity(n);
        for i in order {
            let Some(def) = slots[i].take() else { continue };
            let out_ty = Type::of(def.value_type).unwrap_or(def.expr.ty());
            nodes.push(Node {
                state: def.expr.new_state(),
                time_dependent: def.expr.is_time_dependent(),
                out_ty,
                def,
                last: None,
                last_good: None,
                cause: None,
            });
        }
        let mut store = Store::default();
        let mut edges: Vec<(TagId, u32)> = Vec::new();
        for (i, node) in nodes.iter().enumerate() {
            store.declare(node.def.output, node.out_ty);
            for &(id, ty) in node.def.expr.tag_types() {
                store.declare(id, ty);
            }
            for t in node.def.expr.inputs() {
                edges.push((*t, i as u32));
            }
        }
        let max_tag = edges.iter().map(|e| e.0.index()).max().map_or(0, |m| m + 1);
        let mut dep_start = vec![0u32; max_tag + 1];
        for (t, _) in &edges {
            dep_start[t.index() + 1] += 1;
        }
        for i in 1..dep_start.len() {
            dep_start[i] += dep_start[i - 1];
        }
        let mut fill = dep_start.clone();
        let mut dep_list = vec![0u32; edges.len()];
        for (t, v) in edges {
            let at = &mut fill[t.index()];
            dep_list[*at as usize] = v;
            *at += 1;
        }
        let by_output: HashMap<TagId, u32> = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.def.output, i as u32))
            .collect();
        let mut outputs = vec![false; by_output.keys().map(|t| t.index() + 1).max().unwrap_or(0)];
        for t in by_output.keys() {
            outputs[t.index()] = true;
        }
        Ok(Computed {
            dirty: vec![0; nodes.len()],
            nodes,
            dep_start,
            dep_list,
            store,
            by_output,
            outputs,
            queue: BinaryHeap::new(),
            stats: ComputedStats::default(),
            scratch: Vec::new(),
            tick_every: Duration::from_secs(1),
        })
    }

    /// The computed tags, in evaluation (topological) order.
    pub fn outputs(&self) -> impl Iterator<Item = &ComputedDef> {
        self.nodes.iter().map(|n| &n.def)
    }

    /// Whether some computed tag changes with time alone, so the caller should call
    /// [`Computed::tick`] periodically (e.g. every second).
    pub fn needs_tick(&self) -> bool {
        self.nodes.iter().any(|n| n.time_dependent)
    }

    pub fn stats(&self) -> ComputedStats {
        self.stats
    }

    fn is_output(&self, tag: TagId) -> bool {
        self.outputs.get(tag.index()).copied().unwrap_or(false)
    }

    fn mark_dependents(&mut self, tag: TagId, why: u8) {
        let t = tag.index();
        if t + 1 >= self.dep_start.len() {
            return;
        }
        let (s, e) = (self.dep_start[t] as usize, self.dep_start[t + 1] as usize);
        for k in s..e {
            let v = self.dep_list[k];
            self.mark(v, why);
        }
    }

    fn mark(&mut self, v: u32, why: u8) {
        let d = &mut self.dirty[v as usize];
        if *d == 0 {
            self.queue.push(Reverse(v));
        }
        *d |= why;
    }

    /// Takes a batch of samples and appends to `out` a new sample for every computed tag they
    /// affect (directly or through other computed tags), each evaluated once, with
    /// `source_ts` the newest input's (and `server_ts` = `now`). Samples of tags no
    /// expression reads are ignored.
    pub fn process(&mut self, batch: &[Sample], now: Timestamp, out: &mut Vec<Sample>) {
        for s in batch {
            // Our own outputs coming back (a caller passing the extended batch) are known.
            if self.is_output(s.tag) {
                continue;
            }
            if self.store.update(s) {
                self.mark_dependents(s.tag, BY_INPUT);
            }
        }
        self.run(now, out);
    }

    /// Re-evaluates the time-dependent computed tags (`time_in_state`, `avg_over`,
    /// `delta_over`) at `now`; appends a sample for each whose value or quality changed, and
    /// for the computed tags depending on those.
    pub fn tick(&mut self, now: Timestamp, out: &mut Vec<Sample>) {
        for i in 0..self.nodes.len() {
            if self.nodes[i].time_dependent {
                self.mark(i as u32, BY_TICK);
            }
        }
        self.run(now, out);
    }

    fn run(&mut self, now: Timestamp, out: &mut Vec<Sample>) {
        while let Some(Reverse(i)) = self.queue.pop() {
            let why = std::mem::take(&mut self.dirty[i as usize]);
            let node = &mut self.nodes[i as usize];
            let mut cx = Cx {
                read: &self.store,
                now,
                states: &mut node.state.states,
            };
            let mut o: Out = eval(&node.def.expr, node.def.expr.root, &mut cx);
            self.stats.evaluations += 1;
            if node.out_ty == Type::Float {
                if let Val::Int(v) = o.v {
                    o.v = Val::Float(v as f64);
                }
            }
            let same = node
                .last
                .as_ref()
                .is_some_and(|(v, q)| *v == o.v && *q == o.q);
            if why == BY_TICK && same {
                continue;
            }
            node.last = Some((o.v.clone(), o.q));
            node.cause = o.cause;
            let value = if o.q.level == ironplant_core::QualityLevel::Bad {
                node.last_good.clone().unwrap_or(Value::Null)
            } else {
                let v = o.v.to_value();
                node.last_good = Some(v.clone());
                v
            };
            let source_ts = if o.ts.0 == 0 { now } else { o.ts };
            let sample = Sample {
                tag: node.def.output,
                value,
                quality: o.q,
                source_ts,
                server_ts: now,
            };
            let output = node.def.output;
            // Dependents read the computed value itself, with its quality.
            self.store.put(output, o.v, o.q, source_ts, o.cause);
            out.push(sample);
            self.stats.samples_out += 1;
            self.mark_dependents(output, BY_INPUT);
        }
    }

    /// Why the computed tag `tag` is not Good, in words naming the input tag (through
    /// `name`), or `None` when it is Good or unknown.
    pub fn explain(&self, tag: TagId, name: &dyn Fn(TagId) -> String) -> Option<String> {
        let node = &self.nodes[*self.by_output.get(&tag)? as usize];
        let (_, q) = node.last.as_ref()?;
        let cause = node.cause?;
        Some(format!(
            "{} is {q}: {}",
            node.def.name,
            cause.describe(node.def.expr.text(), *q, name)
        ))
    }
}

impl Computed {
    /// How often the [`Processor`] impl asks for a tick when some computed tag is
    /// time-dependent (default 1 s): the resolution of `time_in_state` and the windows.
    pub fn set_tick_interval(&mut self, every: Duration) {
        self.tick_every = every.max(Duration::from_millis(10));
    }
}

/// The computed tags as a processor on the tag bus: each batch gets the computed samples it
/// causes appended (so every sink sees them with it); ticks publish time-dependent changes.
impl Processor for Computed {
    fn name(&self) -> &str {
        "computed"
    }

    fn process(&mut self, batch: &mut Vec<Sample>, now: Timestamp, _out: &mut ProcessorOutput) {
        let mut derived = std::mem::take(&mut self.scratch);
        derived.clear();
        Computed::process(self, batch, now, &mut derived);
        batch.append(&mut derived);
        self.scratch = derived;
    }

    fn tick_interval(&self) -> Option<Duration> {
        self.needs_tick().then_some(self.tick_every)
    }

    fn tick(&mut self, now: Timestamp, batch: &mut Vec<Sample>, _out: &mut ProcessorOutput) {
        Computed::tick(self, now, batch);
    }
}

/// A cycle among the nodes Kahn's algorithm left: each has a predecessor that is left too,
/// so walking predecessors must come back to a node already seen.
fn find_cycle(succ: &[Vec<usize>], indeg: &[usize]) -> Vec<usize> {
    let mut pred: Vec<Vec<usize>> = vec![Vec::new(); succ.len()];
    for (u, vs) in succ.iter().enumerate() {
        for &v in vs {
            pred[v].push(u);
        }
    }
    let Some(start) = (0..indeg.len()).find(|i| indeg[*i] > 0) else {
        return Vec::new();
    };
    let mut seen: HashMap<usize, usize> = HashMap::new();
    let mut path = Vec::new();
    let mut cur = start;
    loop {
        if let Some(&at) = seen.get(&cur) {
            // Predecessors are what a node reads: each member reads the next.
            let mut cycle = path[at..].to_vec();
            // Start at the first definition in file order, for a stable message.
            if let Some(k) = cycle
                .iter()
                .enumerate()
                .min_by_key(|(_, v)| **v)
                .map(|(k, _)| k)
            {
                cycle.rotate_left(k);
            }
            return cycle;
        }
        seen.insert(cur, path.len());
        path.push(cur);
        match pred[cur].iter().find(|u| indeg[**u] > 0) {
            Some(&u) => cur = u,
            None => return path,
        }
    }
}
