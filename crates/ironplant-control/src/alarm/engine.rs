//! [`AlarmEngine`]: samples in, [`Transition`]s out, plus the operator operations and queries.
//!
//! Per alarm, the value goes through three stages: the *raw* condition with its deadband (a
//! high alarm that is off turns on above the limit; one that is on turns off below
//! limit − deadband), the
//! *debounced* condition (raw must hold for the on-delay, or be gone for the off-delay), and
//! the ISA-18.2 state (alarm × acknowledgement, with shelving, suppression by design and out of
//! service laid over it). Only a change of the visible state is a transition.
//!
//! Samples are routed by dense [`TagId`] through a flat index built once (tags with no alarm
//! cost one bounds check), and the hot path allocates nothing except the transitions it emits
//! (and a rate alarm's window, which reaches its steady size and stays there).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use ironplant_core::{QualityLevel, Sample, TagId, Timestamp, Value};
use serde::Serialize;

use super::kpi::{self, KpiOptions, KpiReport};
use super::persist::{AlarmSnapshot, RestoreReport, Snapshot, VanishedAlarm, SNAPSHOT_VERSION};
use super::{
    check_operator, AlarmDef, AlarmError, AlarmId, AlarmState, Cause, Condition, Setpoint,
    Transition,
};

/// Samples kept per rate-of-change alarm at most (older ones are dropped first, which
/// shortens the window for tags updating faster than window / this).
const MAX_RATE_POINTS: usize = 1024;

/// An operation asked of an alarm by a person ([`AlarmEngine::operate`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Operation {
    Ack,
    Shelve(Duration),
    Unshelve,
    RemoveFromService,
    ReturnToService,
    Reset,
}

/// How the engine runs, from `[alarms]` ([`super::AlarmSettings::engine`]).
#[derive(Debug, Clone, PartialEq)]
pub struct EngineSettings {
    /// The longest shelve an operator may ask for.
    pub max_shelve: Duration,
    /// Transitions kept in memory for [`AlarmEngine::kpi`] (oldest dropped first).
    pub history: usize,
}

impl Default for EngineSettings {
    fn default() -> EngineSettings {
        EngineSettings {
            max_shelve: Duration::from_secs(8 * 3600),
            history: 10_000,
        }
    }
}

/// What a tag is to an alarm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Input,
    Setpoint,
    Suppress,
}

#[derive(Debug, Clone)]
struct Shelve {
    until: Timestamp,
    user: Arc<str>,
    comment: Arc<str>,
}

#[derive(Debug, Clone)]
struct OutOfService {
    user: Arc<str>,
    comment: Arc<str>,
}

#[derive(Debug)]
struct Slot {
    def: AlarmDef,
    /// The condition with its deadband, before delays.
    raw: bool,
    /// The condition after its on/off delays.
    cond: bool,
    /// Since when `raw` differs from `cond`.
    pending_since: Option<Timestamp>,
    /// In alarm: `cond`, or held by a latching alarm until reset.
    active: bool,
    acked: bool,
    shelve: Option<Shelve>,
    suppressed: bool,
    oos: Option<OutOfService>,
    /// The visible state and since when.
    state: AlarmState,
    since: Timestamp,
    active_since: Option<Timestamp>,
    value: Option<Value>,
    /// The quality of the input's last sample.
    quality: QualityLevel,
    /// The last Good numeric value of the input and of a tag setpoint.
    pv: Option<f64>,
    sp: Option<f64>,
    rate: VecDeque<(i64, f64)>,
}

impl Slot {
    fn new(def: AlarmDef) -> Slot {
        Slot {
            def,
            raw: false,
            cond: false,
            pending_since: None,
            active: false,
            acked: true,
            shelve: None,
            suppressed: false,
            oos: None,
            state: AlarmState::Normal,
            since: Timestamp(0),
            active_since: None,
            value: None,
            quality: QualityLevel::Good,
            pv: None,
            sp: None,
            rate: VecDeque::new(),
        }
    }

    fn overlaid(&self) -> bool {
        self.oos.is_some() || self.shelve.is_some() || self.suppressed
    }

    fn visible(&self) -> AlarmState {
        if self.oos.is_some() {
            AlarmState::OutOfService
        } else if self.shelve.is_some() {
            AlarmState::Shelved
        } else if self.suppressed {
            AlarmState::SuppressedByDesign
        } else {
            match (self.active, self.acked) {
                (false, true) => AlarmState::Normal,
                (true, false) => AlarmState::Unacknowledged,
                (true, true) => AlarmState::Acknowledged,
                (false, false) => AlarmState::ReturnToNormalUnacknowledged,
            }
        }
    }

    /// After an overlay ends: re-evaluated from Normal, so an alarm still in alarm is
    /// annunciated again (ISA-18.2 Figure 5: E/F/G → A → B).
    fn leave_overlay(&mut self) {
        if !self.overlaid() {
            self.acked = !self.active;
        }
    }

    fn value_f64(&self) -> Option<f64> {
        self.pv
    }

    /// The raw condition after a change of its inputs, or `None` to keep it (no usable value).
    fn evaluate(&self, quality: QualityLevel) -> Option<bool> {
        let db = self.def.deadband;
        // The deadband holds an alarm that is on (after its delays): it turns on above the
        // limit (for the on-delay) and off below limit - deadband (for the off-delay).
        let on = self.cond;
        let above = |x: f64, limit: f64| if on { x > limit - db } else { x > limit };
        let below = |x: f64, limit: f64| if on { x < limit + db } else { x < limit };
        match &self.def.condition {
            Condition::BadQuality => Some(quality == QualityLevel::Bad),
            _ if quality == QualityLevel::Bad => None,
            Condition::High { limit } | Condition::HighHigh { limit } => {
                Some(above(self.value_f64()?, *limit))
            }
            Condition::Low { limit } | Condition::LowLow { limit } => {
                Some(below(self.value_f64()?, *limit))
            }
            Condition::Deviation { setpoint, band } => {
                let sp = match setpoint {
                    Setpoint::Constant(c) => *c,
                    Setpoint::Tag(_) => self.sp?,
                };
                Some(above((self.value_f64()? - sp).abs(), *band))
            }
            Condition::Rate { rate, window } => {
                let &(t1, x1) = self.rate.back()?;
                let &(t0, x0) = self.rate.front()?;
                // Not enough history yet to span the window: keep the state.
                if t1 <= t0 || t1 - t0 < micros(*window) / 2 {
                    return None;
                }
                let r = (x1 - x0) / ((t1 - t0) as f64 / 1e6);
                Some(above(r.abs(), *rate))
            }
            Condition::State { state, equal } => {
                let v = self.value.as_ref()?;
                Some(same(v, state) == *equal)
            }
            Condition::Condition => match self.value.as_ref()? {
                Value::Bool(b) => Some(*b),
                _ => None,
            },
        }
    }
}

/// Equality of a tag's value and a configured state (numbers compare by value).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::String(x), Value::String(y)) => x == y,
        (Value::Bool(x), Value::Bool(y)) => x == y,
        (Value::String(_), _) | (_, Value::String(_)) => false,
        _ => match (a.as_f64(), b.as_f64()) {
            (Some(x), Some(y)) => x == y,
            _ => a == b,
        },
    }
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

fn elapsed(since: Timestamp, now: Timestamp) -> i64 {
    now.0.saturating_sub(since.0)
}

/// One alarm as queried (the alarm summary of the API and HMI).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlarmView {
    pub id: String,
    pub tag: String,
    pub kind: &'static str,
    pub state: &'static str,
    pub priority: u8,
    pub message: String,
    pub consequence: String,
    pub response: String,
    pub class: String,
    #[serde(serialize_with = "value_json")]
    pub value: Option<Value>,
    pub limit: Option<f64>,
    /// The condition (after delays) holds now, whatever the visible state.
    pub condition: bool,
    pub acknowledged: bool,
    /// When the visible state was entered (µs since the epoch).
    pub since: i64,
    /// When the alarm became active, while it is (µs since the epoch).
    pub active_since: Option<i64>,
    pub shelved_until: Option<i64>,
    pub shelved_by: Option<String>,
    pub out_of_service_by: Option<String>,
    /// The comment of the shelve or removal from service in force.
    pub comment: Option<String>,
    pub latching: bool,
}

fn value_json<S: serde::Serializer>(v: &Option<Value>, s: S) -> Result<S::Ok, S::Error> {
    ironplant_core::wire::ValueJson(v.as_ref()).serialize(s)
}

/// The alarms of a site, evaluated from samples. Synchronous; every method takes `now`.
#[derive(Debug)]
pub struct AlarmEngine {
    slots: Vec<Slot>,
    by_id: HashMap<AlarmId, usize>,
    /// `index[start[tag]..start[tag + 1]]`: the alarms a tag feeds (CSR layout).
    start: Vec<u32>,
    index: Vec<(u32, Role)>,
    settings: EngineSettings,
    history: VecDeque<Transition>,
}

impl AlarmEngine {
    /// An engine over `defs`. Ids must be unique (config validation guarantees it); a
    /// duplicate keeps the first definition.
    pub fn new(defs: Vec<AlarmDef>, settings: EngineSettings) -> AlarmEngine {
        let mut slots = Vec::with_capacity(defs.len());
        let mut by_id = HashMap::with_capacity(defs.len());
        for def in defs {
            if by_id.contains_key(&def.id) {
                continue;
            }
            by_id.insert(def.id.clone(), slots.len());
            slots.push(Slot::new(def));
        }
        let mut pairs: Vec<(TagId, u32, Role)> = Vec::new();
        for (i, s) in slots.iter().enumerate() {
            let i = u32::try_from(i).expect("fewer than 2^32 alarms");
            pairs.push((s.def.tag, i, Role::Input));
            if let Condition::Deviation {
                setpoint: Setpoint::Tag(t),
                ..
            } = s.def.condition
            {
                pairs.push((t, i, Role::Setpoint));
            }
            if let Some(t) = s.def.suppress {
                pairs.push((t, i, Role::Suppress));
            }
        }
        pairs.sort_by_key(|p| (p.0, p.1));
        let tags = pairs.last().map_or(0, |p| p.0.index() + 1);
        let mut start = vec![0u32; tags + 1];
        for p in &pairs {
            start[p.0.index() + 1] += 1;
        }
        for i in 1..start.len() {
            start[i] += start[i - 1];
        }
        let index = pairs.into_iter().map(|(_, i, r)| (i, r)).collect();
        AlarmEngine {
            slots,
            by_id,
            start,
            index,
            settings,
            history: VecDeque::new(),
        }
    }

    pub fn settings(&self) -> &EngineSettings {
        &self.settings
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Feeds samples; returns the transitions they cause, in order.
    pub fn on_samples(&mut self, samples: &[Sample], now: Timestamp) -> Vec<Transition> {
        let mut out = Vec::new();
        self.on_samples_into(samples, now, &mut out);
        out
    }

    /// [`AlarmEngine::on_samples`] appending to `out` (a processor reuses one buffer).
    pub fn on_samples_into(
        &mut self,
        samples: &[Sample],
        now: Timestamp,
        out: &mut Vec<Transition>,
    ) {
        let first = out.len();
        for s in samples {
            let t = s.tag.index();
            let (Some(&a), Some(&b)) = (self.start.get(t), self.start.get(t + 1)) else {
                continue;
            };
            for k in a as usize..b as usize {
                let (slot, role) = self.index[k];
                self.feed(slot as usize, role, s, now, out);
            }
        }
        self.remember(&out[first..]);
    }

    /// Runs the timers: on/off delays that have elapsed and shelves that have expired.
    pub fn tick(&mut self, now: Timestamp) -> Vec<Transition> {
        let mut out = Vec::new();
        self.tick_into(now, &mut out);
        out
    }

    /// When [`AlarmEngine::tick`] next has something to do (the earliest on/off delay or shelve
    /// end), if anything is pending: a runtime may tick on a fixed interval, or sleep until
    /// this.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        self.slots
            .iter()
            .flat_map(|s| {
                let delay = s.pending_since.map(|since| {
                    let d = if s.raw {
                        s.def.on_delay
                    } else {
                        s.def.off_delay
                    };
                    Timestamp(since.0.saturating_add(micros(d)))
                });
                [delay, s.shelve.as_ref().map(|sh| sh.until)]
            })
            .flatten()
            .min()
    }

    /// [`AlarmEngine::tick`] appending to `out`.
    pub fn tick_into(&mut self, now: Timestamp, out: &mut Vec<Transition>) {
        let first = out.len();
        for i in 0..self.slots.len() {
            let s = &self.slots[i];
            if s.pending_since.is_some() {
                self.debounce(i, now, out);
            }
            let s = &mut self.slots[i];
            if s.shelve.as_ref().is_some_and(|sh| sh.until <= now) {
                s.shelve = None;
                s.leave_overlay();
                out.extend(self.emit(i, Cause::ShelveExpired, None, None, now));
            }
        }
        self.remember(&out[first..]);
    }

    fn feed(
        &mut self,
        i: usize,
        role: Role,
        s: &Sample,
        now: Timestamp,
        out: &mut Vec<Transition>,
    ) {
        let slot = &mut self.slots[i];
        match role {
            Role::Input => {
                slot.quality = s.quality.level;
                if s.quality.level != QualityLevel::Bad {
                    slot.value = Some(s.value.clone());
                    slot.pv = s.value.as_f64();
                    if let (Condition::Rate { window, .. }, Some(x)) =
                        (&slot.def.condition, slot.pv)
                    {
                        let ts = s.source_ts.0;
                        if slot.rate.back().is_none_or(|b| b.0 < ts) {
                            if slot.rate.len() >= MAX_RATE_POINTS {
                                slot.rate.pop_front();
                            }
                            slot.rate.push_back((ts, x));
                            let from = ts.saturating_sub(micros(*window));
                            while slot.rate.len() >= 2 && slot.rate[1].0 <= from {
                                slot.rate.pop_front();
                            }
                        }
                    }
                }
                if let Some(raw) = slot.evaluate(s.quality.level) {
                    slot.raw = raw;
                }
                self.debounce(i, now, out);
            }
            Role::Setpoint => {
                if s.quality.level != QualityLevel::Bad {
                    slot.sp = s.value.as_f64();
                }
                if let Some(raw) = slot.evaluate(slot.quality) {
                    slot.raw = raw;
                }
                self.debounce(i, now, out);
            }
            Role::Suppress => {
                // A Bad suppression input keeps the last known state.
                if s.quality.level == QualityLevel::Bad {
                    return;
                }
                let on = match &s.value {
                    Value::Bool(b) => *b,
                    v => v.as_f64().is_some_and(|x| x != 0.0),
                };
                if on == slot.suppressed {
                    return;
                }
                slot.suppressed = on;
                let cause = if on {
                    Cause::Suppressed
                } else {
                    slot.leave_overlay();
                    Cause::Unsuppressed
                };
                out.extend(self.emit(i, cause, None, None, now));
            }
        }
    }

    /// Applies the on/off delay between the raw and the debounced condition.
    fn debounce(&mut self, i: usize, now: Timestamp, out: &mut Vec<Transition>) {
        let s = &mut self.slots[i];
        if s.raw == s.cond {
            s.pending_since = None;
            return;
        }
        let delay = if s.raw {
            s.def.on_delay
        } else {
            s.def.off_delay
        };
        let since = *s.pending_since.get_or_insert(now);
        if elapsed(since, now) < micros(delay) {
            return;
        }
        s.pending_since = None;
        s.cond = s.raw;
        let cause = if s.cond {
            if !s.active {
                s.active = true;
                s.active_since = Some(now);
                s.acked = false;
            }
            Cause::Raised
        } else {
            if !s.def.latching || s.overlaid() {
                s.active = false;
                s.active_since = None;
            }
            Cause::Cleared
        };
        if s.overlaid() {
            // Hidden from the operator: tracked, re-evaluated when the overlay ends.
            s.acked = !s.active;
        }
        out.extend(self.emit(i, cause, None, None, now));
    }

    /// The transition to the slot's current visible state, if it changed (recorded in the
    /// slot; the caller records it in the history).
    fn emit(
        &mut self,
        i: usize,
        cause: Cause,
        user: Option<&str>,
        comment: Option<&str>,
        now: Timestamp,
    ) -> Option<Transition> {
        let s = &mut self.slots[i];
        let to = s.visible();
        if to == s.state {
            return None;
        }
        let from = s.state;
        s.state = to;
        s.since = now;
        Some(Transition {
            alarm: s.def.id.clone(),
            tag: s.def.path.clone(),
            kind: s.def.condition.kind(),
            from,
            to,
            cause,
            value: s.value.clone(),
            limit: s.def.condition.limit(),
            priority: s.def.priority,
            class: s.def.class.clone(),
            message: s.def.message.clone(),
            user: user.map(Arc::from),
            comment: comment.map(Arc::from),
            shelved_until: s.shelve.as_ref().map(|sh| sh.until),
            ts: now,
        })
    }

    fn remember(&mut self, ts: &[Transition]) {
        if self.settings.history == 0 {
            return;
        }
        for t in ts {
            if self.history.len() >= self.settings.history {
                self.history.pop_front();
            }
            self.history.push_back(t.clone());
        }
    }

    fn slot_of(&self, id: &str) -> Result<usize, AlarmError> {
        self.by_id
            .get(id)
            .copied()
            .ok_or_else(|| AlarmError::UnknownAlarm(id.to_owned()))
    }

    /// Records an operator's transition in the history and returns it.
    fn operated(
        &mut self,
        i: usize,
        cause: Cause,
        user: &str,
        comment: &str,
        now: Timestamp,
    ) -> Option<Transition> {
        let t = self.emit(i, cause, Some(user.trim()), Some(comment.trim()), now);
        if let Some(t) = &t {
            self.remember(std::slice::from_ref(t));
        }
        t
    }

    /// Performs an operator's [`Operation`] (the one entry point for APIs): the same as the
    /// method of each operation.
    pub fn operate(
        &mut self,
        id: &str,
        op: &Operation,
        user: &str,
        comment: &str,
        now: Timestamp,
    ) -> Result<Transition, AlarmError> {
        match op {
            Operation::Ack => self.ack(id, user, comment, now),
            Operation::Shelve(d) => self.shelve(id, *d, user, comment, now),
            Operation::Unshelve => self.unshelve(id, user, comment, now),
            Operation::RemoveFromService => self.remove_from_service(id, user, comment, now),
            Operation::ReturnToService => self.return_to_service(id, user, comment, now),
            Operation::Reset => self.reset(id, user, comment, now),
        }
    }

    /// Acknowledges an unacknowledged alarm (in alarm → acknowledged; returned to normal →
    /// normal).
    pub fn ack(
        &mut self,
        id: &str,
        user: &str,
        comment: &str,
        now: Timestamp,
    ) -> Result<Transition, AlarmError> {
        check_operator("acknowledging", user, comment)?;
        let i = self.slot_of(id)?;
        let s = &mut self.slots[i];
        if !matches!(
            s.state,
            AlarmState::Unacknowledged | AlarmState::ReturnToNormalUnacknowledged
        ) {
            return Err(AlarmError::NotUnacknowledged {
                alarm: id.to_owned(),
                state: s.state,
            });
        }
        s.acked = true;
        Ok(self
            .operated(i, Cause::Acknowledged, user, comment, now)
            .expect("acknowledging an unacknowledged alarm changes its state"))
    }

    /// Shelves an alarm for `duration` (at most `max_shelve`); it comes back by itself at the
    /// end, annunciated again if still in alarm.
    pub fn shelve(
        &mut self,
        id: &str,
        duration: Duration,
        user: &str,
        comment: &str,
        now: Timestamp,
    ) -> Result<Transition, AlarmError> {
        check_operator("shelving", user, comment)?;
        let i = self.slot_of(id)?;
        if duration.is_zero() {
            return Err(AlarmError::ShelveZero);
        }
        if duration > self.settings.max_shelve {
            return Err(AlarmError::ShelveTooLong {
                requested: duration,
                max: self.settings.max_shelve,
            });
        }
        let s = &mut self.slots[i];
        if s.oos.is_some() {
            return Err(AlarmError::OutOfService {
                alarm: id.to_owned(),
            });
        }
        if let Some(sh) = &s.shelve {
            return Err(AlarmError::AlreadyShelved {
                alarm: id.to_owned(),
                until: sh.until,
            });
        }
        s.shelve = Some(Shelve {
            until: Timestamp(now.0.saturating_add(micros(duration))),
            user: Arc::from(user.trim()),
            comment: Arc::from(comment.trim()),
        });
        Ok(self
            .operated(i, Cause::Shelved, user, comment, now)
            .expect("shelving changes the state"))
    }

    /// Ends a shelve early; the alarm is re-evaluated (annunciated again if in alarm).
    pub fn unshelve(
        &mut self,
        id: &str,
        user: &str,
        comment: &str,
        now: Timestamp,
    ) -> Result<Transition, AlarmError> {
        check_operator("unshelving", user, comment)?;
        let i = self.slot_of(id)?;
        let s = &mut self.slots[i];
        if s.shelve.take().is_none() {
            return Err(AlarmError::NotShelved {
                alarm: id.to_owned(),
            });
        }
        s.leave_overlay();
        Ok(self
            .operated(i, Cause::Unshelved, user, comment, now)
            .expect("unshelving changes the state"))
    }

    /// Removes an alarm from service (maintenance); it stays out until returned. A shelve in
    /// force ends.
    pub fn remove_from_service(
        &mut self,
        id: &str,
        user: &str,
        comment: &str,
        now: Timestamp,
    ) -> Result<Transition, AlarmError> {
        check_operator("removing from service", user, comment)?;
        let i = self.slot_of(id)?;
        let s = &mut self.slots[i];
        if s.oos.is_some() {
            return Err(AlarmError::AlreadyOutOfService {
                alarm: id.to_owned(),
            });
        }
        s.shelve = None;
        s.oos = Some(OutOfService {
            user: Arc::from(user.trim()),
            comment: Arc::from(comment.trim()),
        });
        Ok(self
            .operated(i, Cause::RemovedFromService, user, comment, now)
            .expect("removing from service changes the state"))
    }

    /// Returns an alarm to service; it is re-evaluated (annunciated if in alarm).
    pub fn return_to_service(
        &mut self,
        id: &str,
        user: &str,
        comment: &str,
        now: Timestamp,
    ) -> Result<Transition, AlarmError> {
        check_operator("returning to service", user, comment)?;
        let i = self.slot_of(id)?;
        let s = &mut self.slots[i];
        if s.oos.take().is_none() {
            return Err(AlarmError::NotOutOfService {
                alarm: id.to_owned(),
            });
        }
        s.leave_overlay();
        Ok(self
            .operated(i, Cause::ReturnedToService, user, comment, now)
            .expect("returning to service changes the state"))
    }

    /// Resets a latching alarm that has cleared and been acknowledged.
    pub fn reset(
        &mut self,
        id: &str,
        user: &str,
        comment: &str,
        now: Timestamp,
    ) -> Result<Transition, AlarmError> {
        check_operator("resetting", user, comment)?;
        let i = self.slot_of(id)?;
        let s = &mut self.slots[i];
        let alarm = id.to_owned();
        if !s.def.latching {
            return Err(AlarmError::NotLatching { alarm });
        }
        let why = if s.overlaid() {
            Some("it is shelved, suppressed or out of service")
        } else if s.cond {
            Some("its condition is still active")
        } else if !s.active {
            Some("it is not latched in alarm")
        } else if !s.acked {
            Some("acknowledge it first")
        } else {
            None
        };
        if let Some(why) = why {
            return Err(AlarmError::CannotReset { alarm, why });
        }
        s.active = false;
        s.active_since = None;
        Ok(self
            .operated(i, Cause::Reset, user, comment, now)
            .expect("resetting a latched alarm changes its state"))
    }

    fn view(&self, s: &Slot) -> AlarmView {
        AlarmView {
            id: s.def.id.to_string(),
            tag: s.def.path.as_str().to_owned(),
            kind: s.def.condition.kind(),
            state: s.state.as_str(),
            priority: s.def.priority,
            message: s.def.message.to_string(),
            consequence: s.def.consequence.to_string(),
            response: s.def.response.to_string(),
            class: s.def.class.to_string(),
            value: s.value.clone(),
            limit: s.def.condition.limit(),
            condition: s.cond,
            acknowledged: s.acked,
            since: s.since.0,
            active_since: s.active_since.map(|t| t.0),
            shelved_until: s.shelve.as_ref().map(|sh| sh.until.0),
            shelved_by: s.shelve.as_ref().map(|sh| sh.user.to_string()),
            out_of_service_by: s.oos.as_ref().map(|o| o.user.to_string()),
            comment: s
                .oos
                .as_ref()
                .map(|o| o.comment.to_string())
                .or_else(|| s.shelve.as_ref().map(|sh| sh.comment.to_string())),
            latching: s.def.latching,
        }
    }

    /// The alarm summary: alarms in alarm or waiting for an acknowledgement, by priority
    /// (1 first), then newest first.
    pub fn active(&self) -> Vec<AlarmView> {
        let mut v: Vec<&Slot> = self
            .slots
            .iter()
            .filter(|s| s.state.is_annunciated())
            .collect();
        v.sort_by(|a, b| {
            a.def
                .priority
                .cmp(&b.def.priority)
                .then(b.since.cmp(&a.since))
                .then(a.def.id.cmp(&b.def.id))
        });
        v.into_iter().map(|s| self.view(s)).collect()
    }

    /// One alarm.
    pub fn get(&self, id: &str) -> Option<AlarmView> {
        self.by_id.get(id).map(|&i| self.view(&self.slots[i]))
    }

    /// One alarm's state.
    pub fn state(&self, id: &str) -> Option<AlarmState> {
        self.by_id.get(id).map(|&i| self.slots[i].state)
    }

    /// Every alarm, in definition order.
    pub fn all(&self) -> Vec<AlarmView> {
        self.slots.iter().map(|s| self.view(s)).collect()
    }

    pub fn definitions(&self) -> impl Iterator<Item = &AlarmDef> {
        self.slots.iter().map(|s| &s.def)
    }

    /// The transitions kept in memory, oldest first.
    pub fn history(&self) -> impl Iterator<Item = &Transition> {
        self.history.iter()
    }

    /// The KPI report over `[from, to)` from the history kept in memory, with the standing,
    /// shelved and out-of-service figures taken from the live state at `to`.
    pub fn kpi(&self, from: Timestamp, to: Timestamp, opts: &KpiOptions) -> KpiReport {
        let (a, b) = self.history.as_slices();
        self.kpi_over(a.iter().chain(b), from, to, opts)
    }

    /// [`AlarmEngine::kpi`] over transitions from elsewhere (e.g. the event store, for spans
    /// longer than the history kept in memory, or across restarts).
    pub fn kpi_over<'a>(
        &self,
        transitions: impl IntoIterator<Item = &'a Transition>,
        from: Timestamp,
        to: Timestamp,
        opts: &KpiOptions,
    ) -> KpiReport {
        let mut report = kpi::report(transitions, from, to, opts);
        let stale_after = micros(opts.stale_after);
        report.standing = self
            .slots
            .iter()
            .filter(|s| s.state.is_annunciated() || s.overlaid())
            .filter_map(|s| {
                let since = s.active_since?;
                (elapsed(since, to) > stale_after).then(|| kpi::Standing {
                    alarm: s.def.id.to_string(),
                    tag: s.def.path.as_str().to_owned(),
                    priority: s.def.priority,
                    state: s.state.as_str(),
                    active_since: since.0,
                    hours: elapsed(since, to) as f64 / 3.6e9,
                })
            })
            .collect();
        report.standing.sort_by_key(|s| s.active_since);
        report.shelved_now = self.slots.iter().filter(|s| s.shelve.is_some()).count();
        report.out_of_service_now = self.slots.iter().filter(|s| s.oos.is_some()).count();
        report.suppressed_now = self
            .slots
            .iter()
            .filter(|s| s.state == AlarmState::SuppressedByDesign)
            .count();
        report
    }

    /// The state to persist (see [`super::persist`]): every alarm's conditions, acknowledgement
    /// and operator overlays, keyed by id with the definition's fingerprint.
    pub fn snapshot(&self, now: Timestamp) -> Snapshot {
        Snapshot {
            version: SNAPSHOT_VERSION,
            taken_at: now.0,
            alarms: self
                .slots
                .iter()
                .map(|s| AlarmSnapshot {
                    id: s.def.id.to_string(),
                    definition: s.def.fingerprint(),
                    state: s.state.as_str().to_owned(),
                    condition: s.cond,
                    active: s.active,
                    acknowledged: s.acked,
                    since: s.since.0,
                    active_since: s.active_since.map(|t| t.0),
                    suppressed: s.suppressed,
                    shelved_until: s.shelve.as_ref().map(|sh| sh.until.0),
                    shelved_by: s.shelve.as_ref().map(|sh| sh.user.to_string()),
                    shelve_comment: s.shelve.as_ref().map(|sh| sh.comment.to_string()),
                    out_of_service_by: s.oos.as_ref().map(|o| o.user.to_string()),
                    out_of_service_comment: s.oos.as_ref().map(|o| o.comment.to_string()),
                })
                .collect(),
        }
    }

    /// Restores a snapshot taken before a restart, silently: an alarm in alarm stays in alarm
    /// with its acknowledgement (the first sample that confirms it raises nothing; one that
    /// does not clears it normally), shelves and removals from service stay, and a shelve that
    /// ran out meanwhile ends now (the returned report's `transitions`: publish them). Alarms
    /// whose definition changed are restored the same way and listed; alarms of the snapshot
    /// that no longer exist are listed in `vanished`; new alarms start normal. Call it on a
    /// fresh engine, before the first sample.
    pub fn restore(&mut self, snapshot: &Snapshot, now: Timestamp) -> RestoreReport {
        let mut report = RestoreReport::default();
        let mut seen = vec![false; self.slots.len()];
        for a in &snapshot.alarms {
            let Some(&i) = self.by_id.get(a.id.as_str()) else {
                report.vanished.push(VanishedAlarm {
                    id: a.id.clone(),
                    state: a.state.clone(),
                    acknowledged: a.acknowledged,
                });
                continue;
            };
            if std::mem::replace(&mut seen[i], true) {
                continue;
            }
            let s = &mut self.slots[i];
            if !a.definition.is_empty() && s.def.fingerprint() != a.definition {
                report.changed.push(a.id.clone());
            }
            s.cond = a.condition;
            s.raw = a.condition;
            s.pending_since = None;
            // A latched alarm whose definition stopped latching is active only by condition.
            s.active = a.active && (s.def.latching || a.condition);
            s.acked = a.acknowledged;
            s.active_since = if s.active {
                a.active_since.map(Timestamp)
            } else {
                None
            };
            s.suppressed = a.suppressed && s.def.suppress.is_some();
            s.shelve = match (a.shelved_until, &a.shelved_by) {
                (Some(until), Some(user)) => Some(Shelve {
                    until: Timestamp(until),
                    user: Arc::from(user.as_str()),
                    comment: Arc::from(a.shelve_comment.as_deref().unwrap_or("")),
                }),
                _ => None,
            };
            s.oos = a.out_of_service_by.as_ref().map(|u| OutOfService {
                user: Arc::from(u.as_str()),
                comment: Arc::from(a.out_of_service_comment.as_deref().unwrap_or("")),
            });
            s.state = s.visible();
            s.since = Timestamp(a.since);
            report.restored += 1;
        }
        for (i, seen) in seen.iter().enumerate() {
            if !seen {
                report.new.push(self.slots[i].def.id.to_string());
            }
        }
        // Shelves that ran out while the platform was down end now.
        self.tick_into(now, &mut report.transitions);
        report
    }
}
