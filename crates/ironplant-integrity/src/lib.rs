//! Data integrity: tells when the numbers can be trusted and, when not, names the evidence.
//! Synchronous detectors over samples that take `now` (no clock, thread or I/O inside).
//!
//! - [`validate`]: per-tag signal validation (not finite, out of range, rate of change,
//!   flatline, stale, spike, counter going backwards), defaults from the tag's metadata and
//!   what was learnt in the training window; lowers a sample's quality with the reason.
//! - [`consistency`]: redundant sensors that must agree, and physical relations over a window
//!   (a level change against the integral of the flows, a counter against a speed).
//! - [`anomaly`]: per-tag linear models over an asset's tags, learnt on a training window and
//!   then frozen, with two-sided CUSUM on the standardised innovations and a per-asset score.
//! - [`config`]: the `[integrity]` section of `ironplant.toml`.
//! - [`Integrity`]: the three together, the object the runtime wraps in a processor.
//!
//! Every detector reports episodes: a [`Finding`] with [`Change::Raised`] when a condition
//! starts and one with [`Change::Cleared`] when it ends, never one per sample.

pub mod anomaly;
pub mod config;
pub mod consistency;
mod engine;
mod stats;
pub mod validate;

use std::fmt;
use std::sync::Arc;

use ironplant_core::event::{Event, EventKind, Severity};
use ironplant_core::{TagId, TagPath, Timestamp, Value};

pub use config::IntegrityConfig;
pub use engine::{Integrity, RestoreReport, Snapshot, SNAPSHOT_VERSION};

/// The `source` of every integrity event.
pub const EVENT_SOURCE: &str = "integrity";

/// Which check found something.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Detector {
    /// NaN or ±infinity.
    NotFinite,
    OutOfRange,
    RateOfChange,
    /// No change beyond the noise band for longer than noise allows.
    Flatline,
    /// No update within k × the tag's usual interval.
    Stale,
    /// An isolated outlier that came back.
    Spike,
    /// A counter decreased (not a roll-over).
    CounterBackwards,
    /// Redundant sensors disagree.
    Redundancy,
    /// A physical relation over a window does not hold.
    Balance,
    /// A frozen model's residuals drifted (CUSUM over its threshold).
    Anomaly,
}

impl Detector {
    pub const ALL: [Detector; 10] = [
        Detector::NotFinite,
        Detector::OutOfRange,
        Detector::RateOfChange,
        Detector::Flatline,
        Detector::Stale,
        Detector::Spike,
        Detector::CounterBackwards,
        Detector::Redundancy,
        Detector::Balance,
        Detector::Anomaly,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Detector::NotFinite => "not_finite",
            Detector::OutOfRange => "out_of_range",
            Detector::RateOfChange => "rate_of_change",
            Detector::Flatline => "flatline",
            Detector::Stale => "stale",
            Detector::Spike => "spike",
            Detector::CounterBackwards => "counter_backwards",
            Detector::Redundancy => "redundancy",
            Detector::Balance => "balance",
            Detector::Anomaly => "anomaly",
        }
    }
}

impl fmt::Display for Detector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether an episode starts or ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Change {
    Raised,
    Cleared,
}

impl Change {
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Raised => "raised",
            Change::Cleared => "cleared",
        }
    }
}

/// One start or end of an integrity episode, with its evidence. The runtime publishes it as
/// an event ([`Finding::to_event`]) and may raise an alarm keyed by [`Finding::id`].
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// Stable name of the condition: `<tag path>:<detector>` for validation,
    /// `redundant:<id>` / `balance:<id>` for consistency, `<asset path>:anomaly` for models.
    pub id: Arc<str>,
    pub detector: Detector,
    pub change: Change,
    /// The tag (validation) or asset (anomaly, consistency: the deepest common asset).
    pub subject: Option<TagPath>,
    /// The tags involved.
    pub tags: Vec<TagId>,
    /// What was observed: the value, the disagreement, the score.
    pub value: f64,
    /// What it was compared with.
    pub limit: f64,
    /// When the episode started (for a clear: when the raised episode had started).
    pub since: Timestamp,
    /// When this finding was made.
    pub at: Timestamp,
    /// One or two sentences for people: what, by how much, since when.
    pub explanation: String,
}

impl Finding {
    /// The event to publish: kind `integrity`, code `raised`/`cleared`, subject the tag or
    /// asset, attributes `id`, `detector`, `value`, `limit`, `since` (µs since the epoch).
    pub fn to_event(&self) -> Event {
        let severity = match self.change {
            Change::Raised => Severity::Warning,
            Change::Cleared => Severity::Info,
        };
        let mut e = Event::new(
            self.at,
            EventKind::Integrity,
            self.change.as_str(),
            EVENT_SOURCE,
            self.explanation.as_str(),
        )
        .with_severity(severity)
        .with_attribute("id", Value::String(self.id.clone()))
        .with_attribute("detector", Value::String(Arc::from(self.detector.as_str())))
        .with_attribute("value", Value::Float(self.value))
        .with_attribute("limit", Value::Float(self.limit))
        .with_attribute("since", Value::Int(self.since.0));
        if let Some(s) = &self.subject {
            e = e.with_subject(s.clone());
        }
        e
    }
}

/// One condition's episode: raised once when it starts, cleared once when it ends.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Episode {
    pub active: bool,
    pub since: Timestamp,
}

impl Episode {
    /// Starts the episode; true if it was not active (the caller raises a finding).
    pub fn enter(&mut self, since: Timestamp) -> bool {
        if self.active {
            return false;
        }
        self.active = true;
        self.since = since;
        true
    }

    /// Ends the episode; `Some(since)` if it was active (the caller clears the finding).
    pub fn leave(&mut self) -> Option<Timestamp> {
        if !self.active {
            return None;
        }
        self.active = false;
        Some(self.since)
    }
}

/// Seconds between two instants (negative if `b` is before `a`).
pub(crate) fn secs(a: Timestamp, b: Timestamp) -> f64 {
    (b.0.saturating_sub(a.0)) as f64 / 1e6
}

/// A duration in words for explanations, e.g. `2m 5s`.
pub(crate) fn words(seconds: f64) -> String {
    if !seconds.is_finite() || seconds < 0.0 {
        return "?".to_owned();
    }
    let d = std::time::Duration::from_millis((seconds * 1000.0).round() as u64);
    let d = if d.as_secs() >= 10 {
        std::time::Duration::from_secs(d.as_secs())
    } else {
        d
    };
    humantime::format_duration(d).to_string()
}

/// A number with about four significant digits, for explanations.
pub(crate) fn num(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return format!("{x}");
    }
    let digits = (4 - 1 - x.abs().log10().floor() as i32).clamp(0, 9) as usize;
    let s = format!("{x:.digits$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_durations_read_well() {
        assert_eq!(num(2.512345), "2.512");
        assert_eq!(num(0.000123456), "0.0001235");
        assert_eq!(num(12345.6), "12346");
        assert_eq!(num(-3.0), "-3");
        assert_eq!(num(f64::NAN), "NaN");
        assert_eq!(words(125.4), "2m 5s");
        assert_eq!(words(1.5), "1s 500ms");
        assert_eq!(words(-1.0), "?");
    }

    #[test]
    fn an_episode_raises_and_clears_once() {
        let mut e = Episode::default();
        assert!(e.enter(Timestamp(5)));
        assert!(!e.enter(Timestamp(6)));
        assert_eq!(e.leave(), Some(Timestamp(5)));
        assert_eq!(e.leave(), None);
    }

    #[test]
    fn findings_become_integrity_events() {
        let f = Finding {
            id: Arc::from("a/b:flatline"),
            detector: Detector::Flatline,
            change: Change::Raised,
            subject: TagPath::parse("a/b").ok(),
            tags: vec![TagId(1)],
            value: 2.5,
            limit: 30.0,
            since: Timestamp(1_000_000),
            at: Timestamp(31_000_000),
            explanation: "frozen".into(),
        };
        let e = f.to_event();
        assert_eq!(e.kind, EventKind::Integrity);
        assert_eq!(&*e.code, "raised");
        assert_eq!(e.severity, Severity::Warning);
        assert_eq!(
            e.attribute("detector"),
            Some(&Value::String("flatline".into()))
        );
        assert_eq!(e.attribute("since"), Some(&Value::Int(1_000_000)));
        assert_eq!(e.subject.as_ref().map(|p| p.as_str()), Some("a/b"));
    }
}
