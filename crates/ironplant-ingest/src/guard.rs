//! Message-level protection of JSON ingest (issue 13), sans-IO: per mapping and topic (or
//! HTTP mapping), what was last accepted from whom.
//!
//! - **Replay**: for mappings whose payloads carry a timestamp, a payload stamped before the
//!   last one accepted on the same topic, or stamped the same and identical to one accepted
//!   at that time, is refused whole (`replayed`): a recorded message sent again, or an old one
//!   delayed by someone in the middle. (A device that resends after a reconnect sends a
//!   duplicate: refusing it keeps history exact too. Different payloads with one timestamp,
//!   a gateway splitting a reading, pass.) Without a timestamp
//!   in the payload a repeat cannot be told from a sensor whose value did not change: map the
//!   device's timestamp (`timestamp = { pointer = ... }`) to get replay protection.
//! - **Provenance**: the identity (the authenticated owner, e.g. `device:plug-7`) and the
//!   address that publish on a topic are remembered; a change of either is reported (stolen
//!   credentials used from elsewhere, another device writing a topic that was not its own).
//!   Both are reported, never refused: the ACL decides who may publish.
//! - **Timing**: the payloads accepted per [`RATE_WINDOW`] on a topic, against the median of
//!   its first [`RATE_LEARN`] windows (then frozen, so a slow change cannot teach it): more
//!   than [`RATE_FACTOR`] × that + [`RATE_SLACK`], or fewer than it / [`RATE_FACTOR`] −
//!   [`RATE_SLACK`], is reported once (a second publisher beside the device, a flood, a device
//!   that lost most of its messages), and again when the rate is back to normal.
//!
//! Memory: one entry per (mapping, topic) seen, at most [`MAX_TOPICS`]; the oldest entry is
//! forgotten beyond (so a flood of topics cannot grow it).

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use ironplant_core::Timestamp;

/// Topics remembered per platform.
pub const MAX_TOPICS: usize = 100_000;
/// Distinct payloads remembered per topic at its latest timestamp.
pub const SAME_TIME: usize = 8;
/// The window payloads are counted in, per topic.
pub const RATE_WINDOW: std::time::Duration = std::time::Duration::from_secs(60);
/// Windows learnt before a topic's rate is frozen.
pub const RATE_LEARN: usize = 10;
/// A window outside `baseline × RATE_FACTOR + RATE_SLACK` (or the reverse) is a change.
pub const RATE_FACTOR: f64 = 2.0;
pub const RATE_SLACK: f64 = 3.0;

/// Who sent a payload, as the broker or the API saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Provenance {
    /// The authenticated identity (`device:plug-7`, `user:alice`); `None`: anonymous or the
    /// platform itself (e.g. a retained message replayed at subscription).
    pub identity: Option<Arc<str>>,
    pub address: Option<SocketAddr>,
}

/// A payload as it arrived: on which topic (`http:<mapping>` over HTTP), its bytes, from whom.
#[derive(Debug, Clone, Copy)]
pub struct Received<'a> {
    pub topic: &'a str,
    pub payload: &'a [u8],
    pub from: &'a Provenance,
}

/// Something the guard noticed.
#[derive(Debug, Clone, PartialEq)]
pub enum Finding {
    /// A payload stamped no later than the last accepted one on its topic: refused.
    Replay {
        topic: String,
        identity: Option<Arc<str>>,
        got: Timestamp,
        last: Timestamp,
    },
    /// Another identity publishes on the topic.
    PublisherChanged {
        topic: String,
        from: Arc<str>,
        to: Arc<str>,
    },
    /// The same identity publishes from another address.
    AddressChanged {
        topic: String,
        identity: Option<Arc<str>>,
        from: IpAddr,
        to: IpAddr,
    },
    /// The payloads per [`RATE_WINDOW`] left (or came back to) the learnt rate.
    TimingChanged {
        topic: String,
        expected: f64,
        got: u32,
        normal: bool,
    },
}

impl Finding {
    /// The event code.
    pub fn code(&self) -> &'static str {
        match self {
            Finding::Replay { .. } => "ingest_replay",
            Finding::PublisherChanged { .. } => "ingest_publisher_changed",
            Finding::AddressChanged { .. } => "ingest_address_changed",
            Finding::TimingChanged { normal: false, .. } => "ingest_timing_changed",
            Finding::TimingChanged { normal: true, .. } => "ingest_timing_normal",
        }
    }

    /// The topic (or HTTP mapping) concerned.
    pub fn topic(&self) -> &str {
        match self {
            Finding::Replay { topic, .. }
            | Finding::PublisherChanged { topic, .. }
            | Finding::AddressChanged { topic, .. }
            | Finding::TimingChanged { topic, .. } => topic,
        }
    }

    /// A sentence for people.
    pub fn message(&self) -> String {
        let who = |i: &Option<Arc<str>>| i.as_deref().unwrap_or("an anonymous client").to_owned();
        match self {
            Finding::Replay {
                topic,
                identity,
                got,
                last,
            } => format!(
                "payload on {topic} from {} refused as a replay: stamped {}, not after the last accepted one ({}); a recorded message sent again, or a duplicate",
                who(identity),
                got.to_rfc3339(),
                last.to_rfc3339()
            ),
            Finding::PublisherChanged { topic, from, to } => format!(
                "{topic} is now published by {to}, before by {from}: check that {to} should write it (stolen credentials, a misconfigured device)"
            ),
            Finding::AddressChanged {
                topic,
                identity,
                from,
                to,
            } => format!(
                "{} publishes {topic} from {to}, before from {from}: a moved device, or its credentials used elsewhere",
                who(identity)
            ),
            Finding::TimingChanged {
                topic,
                expected,
                got,
                normal: false,
            } => format!(
                "{topic} received {got} payloads in {} s where {expected:.1} were learnt: a second publisher beside the device, a flood, or a device losing messages",
                RATE_WINDOW.as_secs()
            ),
            Finding::TimingChanged {
                topic,
                expected,
                got,
                normal: true,
            } => format!(
                "{topic} is back to its learnt rate ({got} payloads in {} s, {expected:.1} learnt)",
                RATE_WINDOW.as_secs()
            ),
        }
    }
}

#[derive(Debug, Clone)]
struct Seen {
    last_ts: Option<Timestamp>,
    /// Digests of the payloads accepted at `last_ts` (at most [`SAME_TIME`]).
    at_last: Vec<u64>,
    identity: Option<Arc<str>>,
    address: Option<IpAddr>,
    rate: Rate,
}

/// Payloads per window of one topic.
#[derive(Debug, Clone, Default)]
struct Rate {
    start: Option<Timestamp>,
    count: u32,
    learnt: Vec<u32>,
    baseline: Option<f64>,
    changed: bool,
}

impl Rate {
    /// One accepted payload at `now` (the receive time).
    fn observe(&mut self, topic: &str, now: Timestamp, out: &mut Vec<Finding>) {
        let window = RATE_WINDOW.as_micros() as i64;
        let Some(start) = self.start else {
            self.start = Some(now);
            self.count = 1;
            return;
        };
        if now.as_micros() < start.as_micros() {
            // The clock went back: start again, nothing judged.
            self.start = Some(now);
            self.count = 1;
            return;
        }
        let elapsed = (now.as_micros() - start.as_micros()) / window;
        if elapsed > 0 {
            self.close(topic, out);
            // Windows without any payload in between count as empty ones (a long silence is
            // one judgement, not hundreds: staleness is the validators' business).
            for _ in 1..elapsed.min(3) {
                self.count = 0;
                self.close(topic, out);
            }
            self.start = Some(Timestamp(start.as_micros() + elapsed * window));
            self.count = 0;
        }
        self.count += 1;
    }

    fn close(&mut self, topic: &str, out: &mut Vec<Finding>) {
        let got = self.count;
        let Some(b) = self.baseline else {
            self.learnt.push(got);
            if self.learnt.len() >= RATE_LEARN {
                let mut v = self.learnt.clone();
                v.sort_unstable();
                self.baseline = Some(f64::from(v[v.len() / 2]));
                self.learnt = Vec::new();
            }
            return;
        };
        let g = f64::from(got);
        let off = g > b * RATE_FACTOR + RATE_SLACK || g < b / RATE_FACTOR - RATE_SLACK;
        if off != self.changed {
            self.changed = off;
            out.push(Finding::TimingChanged {
                topic: topic.to_owned(),
                expected: b,
                got,
                normal: !off,
            });
        }
    }
}

/// See the module docs.
#[derive(Debug, Default)]
pub struct Guard {
    seen: HashMap<(usize, String), Seen>,
    /// Keys in the order they were first seen, for forgetting the oldest in O(1).
    order: VecDeque<(usize, String)>,
}

impl Guard {
    pub fn new() -> Guard {
        Guard::default()
    }

    /// Judges a payload of mapping `mapping` on `topic`, stamped `ts` (`None`: the mapping has
    /// no timestamp), whose bytes hash to `digest`, sent by `from`. `Err` if it must be refused
    /// (a replay); findings go to `out`. A refused payload changes nothing remembered.
    pub fn check(
        &mut self,
        mapping: usize,
        topic: &str,
        ts: Option<Timestamp>,
        digest: u64,
        from: &Provenance,
        out: &mut Vec<Finding>,
    ) -> Result<(), Finding> {
        let key = (mapping, topic.to_owned());
        let address = from.address.map(|a| a.ip());
        let Some(seen) = self.seen.get_mut(&key) else {
            if self.seen.len() >= MAX_TOPICS {
                if let Some(oldest) = self.order.pop_front() {
                    self.seen.remove(&oldest);
                }
            }
            self.order.push_back(key.clone());
            self.seen.insert(
                key,
                Seen {
                    last_ts: ts,
                    at_last: vec![digest],
                    identity: from.identity.clone(),
                    address,
                    rate: Rate::default(),
                },
            );
            return Ok(());
        };
        if let (Some(got), Some(last)) = (ts, seen.last_ts) {
            if got < last || (got == last && seen.at_last.contains(&digest)) {
                return Err(Finding::Replay {
                    topic: topic.to_owned(),
                    identity: from.identity.clone(),
                    got,
                    last,
                });
            }
        }
        // The platform's own messages (no identity, no address) say nothing about who
        // publishes the topic.
        if from.identity.is_some() || from.address.is_some() {
            match (&seen.identity, &from.identity) {
                (Some(before), Some(now)) if before != now => {
                    out.push(Finding::PublisherChanged {
                        topic: topic.to_owned(),
                        from: before.clone(),
                        to: now.clone(),
                    });
                }
                _ => {
                    if let (Some(before), Some(now)) = (seen.address, address) {
                        if before != now {
                            out.push(Finding::AddressChanged {
                                topic: topic.to_owned(),
                                identity: from.identity.clone(),
                                from: before,
                                to: now,
                            });
                        }
                    }
                }
            }
            if from.identity.is_some() {
                seen.identity.clone_from(&from.identity);
            }
            if address.is_some() {
                seen.address = address;
            }
        }
        if let Some(got) = ts {
            if seen.last_ts == Some(got) {
                if seen.at_last.len() >= SAME_TIME {
                    seen.at_last.remove(0);
                }
                seen.at_last.push(digest);
            } else {
                seen.last_ts = Some(got);
                seen.at_last.clear();
                seen.at_last.push(digest);
            }
        }
        Ok(())
    }

    /// Counts an accepted payload of `topic` received at `now` towards its rate (after
    /// [`Guard::check`] accepted it); a change of rate goes to `out`.
    pub fn count(&mut self, mapping: usize, topic: &str, now: Timestamp, out: &mut Vec<Finding>) {
        if let Some(seen) = self.seen.get_mut(&(mapping, topic.to_owned())) {
            seen.rate.observe(topic, now, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(identity: &str, addr: &str) -> Provenance {
        Provenance {
            identity: Some(Arc::from(identity)),
            address: addr.parse().ok(),
        }
    }

    fn t(s: i64) -> Option<Timestamp> {
        Some(Timestamp(s * 1_000_000))
    }

    #[test]
    fn a_payload_not_newer_than_the_last_accepted_is_a_replay() {
        let mut g = Guard::new();
        let mut out = Vec::new();
        let plug = from("device:plug-7", "10.0.0.7:5000");
        assert!(g.check(0, "plugs/7", t(100), 1, &plug, &mut out).is_ok());
        assert!(g.check(0, "plugs/7", t(101), 1, &plug, &mut out).is_ok());
        // The same message again, and an older one.
        let again = g.check(0, "plugs/7", t(101), 1, &plug, &mut out);
        assert!(matches!(again, Err(Finding::Replay { .. })), "{again:?}");
        let older = g
            .check(0, "plugs/7", t(50), 1, &plug, &mut out)
            .expect_err("a replay");
        assert_eq!(older.code(), "ingest_replay");
        assert!(
            older.message().contains("device:plug-7"),
            "{}",
            older.message()
        );
        // A refused payload does not move the mark; other topics and mappings are separate.
        assert!(g.check(0, "plugs/7", t(102), 1, &plug, &mut out).is_ok());
        assert!(g.check(0, "plugs/8", t(1), 1, &plug, &mut out).is_ok());
        assert!(g.check(1, "plugs/7", t(1), 1, &plug, &mut out).is_ok());
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn different_payloads_with_one_timestamp_pass_the_same_one_again_does_not() {
        let mut g = Guard::new();
        let mut out = Vec::new();
        let gw = from("user:gateway", "10.0.0.9:5000");
        assert!(g.check(0, "http:gw", t(100), 1, &gw, &mut out).is_ok());
        assert!(g.check(0, "http:gw", t(100), 2, &gw, &mut out).is_ok());
        assert!(g.check(0, "http:gw", t(100), 1, &gw, &mut out).is_err());
        assert!(g.check(0, "http:gw", t(100), 2, &gw, &mut out).is_err());
        // A newer time forgets the older payloads.
        assert!(g.check(0, "http:gw", t(101), 1, &gw, &mut out).is_ok());
        assert!(g.check(0, "http:gw", t(100), 3, &gw, &mut out).is_err());
    }

    #[test]
    fn without_timestamps_repeats_pass() {
        let mut g = Guard::new();
        let mut out = Vec::new();
        let plug = from("device:plug-7", "10.0.0.7:5000");
        for _ in 0..3 {
            assert!(g.check(0, "plugs/7", None, 1, &plug, &mut out).is_ok());
        }
        assert!(out.is_empty());
    }

    #[test]
    fn another_publisher_or_address_is_reported_not_refused() {
        let mut g = Guard::new();
        let mut out = Vec::new();
        let plug = from("device:plug-7", "10.0.0.7:5000");
        g.check(0, "plugs/7", t(1), 1, &plug, &mut out)
            .expect("accepted");
        // A new source port is the same device reconnecting: nothing.
        g.check(
            0,
            "plugs/7",
            t(2),
            1,
            &from("device:plug-7", "10.0.0.7:6000"),
            &mut out,
        )
        .expect("accepted");
        assert!(out.is_empty(), "{out:?}");
        g.check(
            0,
            "plugs/7",
            t(3),
            1,
            &from("device:plug-7", "10.9.9.9:6000"),
            &mut out,
        )
        .expect("accepted");
        assert!(
            matches!(&out[..], [Finding::AddressChanged { from, to, .. }] if from.to_string() == "10.0.0.7" && to.to_string() == "10.9.9.9"),
            "{out:?}"
        );
        out.clear();
        g.check(
            0,
            "plugs/7",
            t(4),
            1,
            &from("device:plug-8", "10.9.9.9:6000"),
            &mut out,
        )
        .expect("accepted");
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].code(), "ingest_publisher_changed");
        assert!(
            out[0].message().contains("device:plug-8"),
            "{}",
            out[0].message()
        );
        // The platform's own (retained at subscription) says nothing about the publisher.
        out.clear();
        g.check(0, "plugs/7", t(5), 1, &Provenance::default(), &mut out)
            .expect("accepted");
        g.check(
            0,
            "plugs/7",
            t(6),
            1,
            &from("device:plug-8", "10.9.9.9:6000"),
            &mut out,
        )
        .expect("accepted");
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn a_rate_far_from_the_learnt_one_is_reported_once_and_its_return_too() {
        let mut g = Guard::new();
        let mut out = Vec::new();
        let plug = from("device:plug-7", "10.0.0.7:5000");
        // One payload every 10 s (6 a minute) with some jitter, for 15 minutes.
        let mut t = 0_i64;
        let send = |g: &mut Guard, t: i64, out: &mut Vec<Finding>| {
            g.check(0, "plugs/7", None, 1, &plug, out)
                .expect("accepted");
            g.count(0, "plugs/7", Timestamp(t * 1_000), out);
        };
        for i in 0..90 {
            t += 10_000 + (i % 3) * 400 - 400;
            send(&mut g, t, &mut out);
        }
        assert!(out.is_empty(), "{out:?}");
        // A second publisher beside it: 4 × the rate for 3 minutes.
        for _ in 0..72 {
            t += 2_500;
            send(&mut g, t, &mut out);
        }
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].code(), "ingest_timing_changed");
        assert!(out[0].message().contains("plugs/7"), "{}", out[0].message());
        // Back to normal: reported once more.
        for _ in 0..30 {
            t += 10_000;
            send(&mut g, t, &mut out);
        }
        assert_eq!(out.len(), 2, "{out:?}");
        assert_eq!(out[1].code(), "ingest_timing_normal");
    }

    #[test]
    fn memory_is_bounded() {
        let mut g = Guard::new();
        let mut out = Vec::new();
        let p = Provenance::default();
        for i in 0..(MAX_TOPICS + 10) {
            g.check(0, &format!("t/{i}"), t(1), 1, &p, &mut out)
                .expect("accepted");
        }
        assert_eq!(g.seen.len(), MAX_TOPICS);
        // The oldest were forgotten, the newest are remembered.
        assert!(!g.seen.contains_key(&(0, "t/0".to_owned())));
        assert!(g
            .check(0, &format!("t/{}", MAX_TOPICS + 9), t(1), 1, &p, &mut out)
            .is_err());
    }
}
