//! Alarm system performance (ISA-18.2 §16, EEMUA 191): a pure function of transitions, so it
//! works on the engine's in-memory history and on transitions read back from the event store
//! ([`super::Transition::from_event`]) alike.
//!
//! An *alarm* (an annunciation) is a transition into `unacknowledged`: a raise, or a
//! re-annunciation when a shelve, a suppression or a removal from service ends on an alarm
//! still in alarm. Periods are 10 minutes from the start of the report.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use ironplant_core::Timestamp;
use serde::Serialize;

use super::{AlarmState, Cause, Transition};

/// What the report counts against (from `[alarms]`, [`super::AlarmSettings::kpi`]).
#[derive(Debug, Clone, PartialEq)]
pub struct KpiOptions {
    /// Operators sharing the alarm load (≥ 1).
    pub operators: u32,
    /// More than this many alarms per operator in a period is a flood (EEMUA 191: 10).
    pub flood_threshold: u32,
    /// The period length (10 minutes).
    pub period: Duration,
    /// This many activations of one alarm ...
    pub chatter_count: usize,
    /// ... within this window make it chattering (ISA-18.2: 3 in 60 s).
    pub chatter_window: Duration,
    /// In alarm longer than this is standing (stale): 24 h.
    pub stale_after: Duration,
    /// Length of the most-frequent list.
    pub top: usize,
}

impl Default for KpiOptions {
    fn default() -> KpiOptions {
        KpiOptions {
            operators: 1,
            flood_threshold: 10,
            period: Duration::from_secs(600),
            chatter_count: 3,
            chatter_window: Duration::from_secs(60),
            stale_after: Duration::from_secs(24 * 3600),
            top: 10,
        }
    }
}

/// The report (`GET /api/v1/alarms/kpi`). Times are µs since the epoch.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KpiReport {
    pub from: i64,
    pub to: i64,
    pub operators: u32,
    /// Alarms annunciated in the report's span.
    pub alarms: usize,
    /// 10-minute periods in the span.
    pub periods: usize,
    /// Alarms per operator per period: mean over the periods.
    pub per_operator_per_period_avg: f64,
    /// Alarms per operator in the busiest period.
    pub per_operator_per_period_peak: f64,
    pub flood_threshold: u32,
    /// Periods with more than `flood_threshold` alarms per operator.
    pub flood_periods: usize,
    pub flood_percent: f64,
    /// Consecutive flood periods merged.
    pub floods: Vec<Flood>,
    /// The most frequent alarms, most first.
    pub top: Vec<Frequent>,
    pub chattering: Vec<Chattering>,
    /// In alarm for longer than the stale limit at the end of the span, oldest first.
    pub standing: Vec<Standing>,
    /// Annunciated alarms by priority 1..=4.
    pub priorities: Vec<PriorityShare>,
    /// Operations in the span.
    pub acknowledged: usize,
    pub shelved: usize,
    pub removed_from_service: usize,
    /// At the end of the span.
    pub shelved_now: usize,
    pub out_of_service_now: usize,
    pub suppressed_now: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Flood {
    pub start: i64,
    pub end: i64,
    pub alarms: usize,
    /// The most alarms in one of its periods.
    pub peak: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Frequent {
    pub alarm: String,
    pub tag: String,
    pub count: usize,
    /// Share of all alarms of the span.
    pub percent: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Chattering {
    pub alarm: String,
    pub tag: String,
    /// Activations in the span.
    pub activations: usize,
    /// The most activations within one chatter window.
    pub max_in_window: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Standing {
    pub alarm: String,
    pub tag: String,
    pub priority: u8,
    pub state: &'static str,
    pub active_since: i64,
    pub hours: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PriorityShare {
    pub priority: u8,
    pub count: usize,
    pub percent: f64,
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX).max(1)
}

fn percent(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        0.0
    } else {
        100.0 * part as f64 / whole as f64
    }
}

/// The KPI report over `[from, to)`. Pass transitions from before `from` too (e.g. the day
/// before) so alarms raised earlier and still standing are seen; they are not counted as
/// alarms of the span. Order does not matter.
pub fn report<'a>(
    transitions: impl IntoIterator<Item = &'a Transition>,
    from: Timestamp,
    to: Timestamp,
    opts: &KpiOptions,
) -> KpiReport {
    let mut all: Vec<&Transition> = transitions.into_iter().filter(|t| t.ts < to).collect();
    all.sort_by_key(|t| t.ts);
    let operators = opts.operators.max(1);
    let period = micros(opts.period);
    let span = to.0.saturating_sub(from.0).max(0);
    let periods = usize::try_from((span + period - 1) / period).unwrap_or(0);
    let mut per_period = vec![0usize; periods];
    let mut per_alarm: BTreeMap<&str, (&str, Vec<i64>)> = BTreeMap::new();
    let mut by_priority = [0usize; 4];
    let (mut acknowledged, mut shelved, mut removed) = (0, 0, 0);
    let mut last: HashMap<&str, (&Transition, Option<i64>)> = HashMap::new();
    let mut alarms = 0;
    for t in &all {
        // Activation tracking for standing alarms, over the whole history given.
        let entry = last.entry(&*t.alarm).or_insert((t, None));
        let since = match t.to {
            AlarmState::Unacknowledged | AlarmState::Acknowledged => entry.1.or(Some(t.ts.0)),
            AlarmState::Normal | AlarmState::ReturnToNormalUnacknowledged => None,
            // Hidden: whether it is in alarm is not known from transitions; keep the last.
            _ => entry.1,
        };
        *entry = (t, since);
        if t.ts < from {
            continue;
        }
        match t.cause {
            Cause::Acknowledged => acknowledged += 1,
            Cause::Shelved => shelved += 1,
            Cause::RemovedFromService => removed += 1,
            _ => {}
        }
        if t.to != AlarmState::Unacknowledged {
            continue;
        }
        alarms += 1;
        let k = usize::try_from((t.ts.0 - from.0) / period).unwrap_or(0);
        if let Some(c) = per_period.get_mut(k) {
            *c += 1;
        }
        if let Some(c) = by_priority.get_mut(usize::from(t.priority.clamp(1, 4)) - 1) {
            *c += 1;
        }
        per_alarm
            .entry(&t.alarm)
            .or_insert((t.tag.as_str(), Vec::new()))
            .1
            .push(t.ts.0);
    }
    let ops = f64::from(operators);
    let flood_limit = u64::from(opts.flood_threshold) * u64::from(operators);
    let is_flood = |c: usize| c as u64 > flood_limit;
    let mut floods: Vec<Flood> = Vec::new();
    let mut prev_flood = false;
    for (k, &c) in per_period.iter().enumerate() {
        let start = from.0 + period * k as i64;
        let end = (start + period).min(to.0);
        if !is_flood(c) {
            prev_flood = false;
            continue;
        }
        match floods.last_mut() {
            Some(f) if prev_flood => {
                f.end = end;
                f.alarms += c;
                f.peak = f.peak.max(c);
            }
            _ => floods.push(Flood {
                start,
                end,
                alarms: c,
                peak: c,
            }),
        }
        prev_flood = true;
    }
    let flood_periods = per_period.iter().filter(|&&c| is_flood(c)).count();
    let mut top: Vec<Frequent> = per_alarm
        .iter()
        .map(|(id, (tag, ts))| Frequent {
            alarm: (*id).to_owned(),
            tag: (*tag).to_owned(),
            count: ts.len(),
            percent: percent(ts.len(), alarms),
        })
        .collect();
    top.sort_by(|a, b| b.count.cmp(&a.count).then(a.alarm.cmp(&b.alarm)));
    top.truncate(opts.top);
    let window = micros(opts.chatter_window);
    let chattering = per_alarm
        .iter()
        .filter_map(|(id, (tag, ts))| {
            let mut max = 0;
            let mut i = 0;
            for j in 0..ts.len() {
                while ts[j] - ts[i] > window {
                    i += 1;
                }
                max = max.max(j - i + 1);
            }
            (max >= opts.chatter_count.max(2)).then(|| Chattering {
                alarm: (*id).to_owned(),
                tag: (*tag).to_owned(),
                activations: ts.len(),
                max_in_window: max,
            })
        })
        .collect();
    let stale = micros(opts.stale_after);
    let mut standing: Vec<Standing> = last
        .values()
        .filter(|(t, _)| t.to.is_annunciated())
        .filter_map(|(t, since)| {
            let since = (*since)?;
            let age = to.0 - since;
            (age > stale).then(|| Standing {
                alarm: t.alarm.to_string(),
                tag: t.tag.as_str().to_owned(),
                priority: t.priority,
                state: t.to.as_str(),
                active_since: since,
                hours: age as f64 / 3.6e9,
            })
        })
        .collect();
    standing.sort_by(|a, b| {
        a.active_since
            .cmp(&b.active_since)
            .then(a.alarm.cmp(&b.alarm))
    });
    let now_in = |s: AlarmState| last.values().filter(|(t, _)| t.to == s).count();
    let peak = per_period.iter().copied().max().unwrap_or(0);
    KpiReport {
        from: from.0,
        to: to.0,
        operators,
        alarms,
        periods,
        per_operator_per_period_avg: if periods == 0 {
            0.0
        } else {
            alarms as f64 / periods as f64 / ops
        },
        per_operator_per_period_peak: peak as f64 / ops,
        flood_threshold: opts.flood_threshold,
        flood_periods,
        flood_percent: percent(flood_periods, periods),
        floods,
        top,
        chattering,
        standing,
        priorities: (1..=4u8)
            .map(|p| {
                let count = by_priority[usize::from(p) - 1];
                PriorityShare {
                    priority: p,
                    count,
                    percent: percent(count, alarms),
                }
            })
            .collect(),
        acknowledged,
        shelved,
        removed_from_service: removed,
        shelved_now: now_in(AlarmState::Shelved),
        out_of_service_now: now_in(AlarmState::OutOfService),
        suppressed_now: now_in(AlarmState::SuppressedByDesign),
    }
}
