//! Who publishes as an edge node: the host binds each node to the MQTT connection that sent
//! its NBIRTH (client id, owner, address) and checks every later message of the node against
//! it, and watches the node's message rate. Sans-IO: [`PublisherWatch::observe`] takes the
//! message's origin and `now`, and returns what it found.
//!
//! - **Foreign publisher**: NDATA/DDATA/DBIRTH/DDEATH/NDEATH of a born node from a connection
//!   other than the one that birthed it (another client id, or the same id from another
//!   address, i.e. another connection). Sparkplug requires a new NBIRTH on every connection, so
//!   this is never legitimate: stolen credentials, or a second node configured with the same
//!   ids. The message is refused ([`Verdict::Refuse`]). Messages the broker publishes itself
//!   (a will: the NDEATH of a dropped connection) have no client id and are accepted.
//! - **Duplicate birth**: an NBIRTH from another connection while the connection that birthed
//!   the node is still connected (the caller says so: `bound_alive`). A node has one
//!   connection; a second one claiming it is a forger with stolen credentials (or a clone).
//!   Refused, so the node stays bound to its real connection.
//! - **Publisher changed**: an NBIRTH from another owner (identity) or IP address than the
//!   node's previous birth. Legitimate after a re-commissioning, suspicious otherwise: reported
//!   (the birth is accepted).
//! - **Timing changed**: the node's data messages per [`TimingOptions::window`] compared with
//!   the median of the windows learnt after its first birth (frozen once learnt, so a slow
//!   change cannot teach it): more than `factor` × + `slack` messages, e.g. a forger
//!   publishing beside the real node, or far fewer. Reported once per episode.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use ironplant_core::Timestamp;

use crate::host::NodeId;
use crate::topic::MessageType;

/// Who sent a message, as the broker authenticated it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Sender {
    /// `None` for messages the broker or the platform published (wills).
    pub client_id: Option<String>,
    pub owner: Option<String>,
    pub address: Option<std::net::SocketAddr>,
}

impl Sender {
    fn ip(&self) -> Option<IpAddr> {
        self.address.map(|a| a.ip())
    }

    fn describe(&self) -> String {
        format!(
            "client {} of {} from {}",
            self.client_id.as_deref().unwrap_or("-"),
            self.owner.as_deref().unwrap_or("anonymous"),
            self.address.map_or("-".to_owned(), |a| a.to_string())
        )
    }
}

/// Tunables of the timing watch.
#[derive(Debug, Clone, PartialEq)]
pub struct TimingOptions {
    pub window: Duration,
    /// Windows learnt before the baseline is frozen.
    pub learn: usize,
    /// A window with more than `factor` × baseline + `slack` messages, or fewer than
    /// baseline / `factor` − `slack`, is a change.
    pub factor: f64,
    pub slack: f64,
}

impl Default for TimingOptions {
    fn default() -> TimingOptions {
        TimingOptions {
            window: Duration::from_secs(30),
            learn: 10,
            factor: 1.6,
            slack: 4.0,
        }
    }
}

/// What the watch found about one message.
#[derive(Debug, Clone, PartialEq)]
pub enum Finding {
    ForeignPublisher {
        node: NodeId,
        born_by: Sender,
        sent_by: Sender,
    },
    DuplicateBirth {
        node: NodeId,
        born_by: Sender,
        sent_by: Sender,
    },
    PublisherChanged {
        node: NodeId,
        was: Sender,
        now: Sender,
    },
    TimingChanged {
        node: NodeId,
        /// Messages in the last window.
        count: u64,
        /// The learnt messages per window.
        baseline: f64,
        window: Duration,
    },
    TimingNormal {
        node: NodeId,
        count: u64,
        baseline: f64,
    },
}

impl Finding {
    /// A stable code for events.
    pub fn code(&self) -> &'static str {
        match self {
            Finding::ForeignPublisher { .. } => "sparkplug_foreign_publisher",
            Finding::DuplicateBirth { .. } => "sparkplug_duplicate_birth",
            Finding::PublisherChanged { .. } => "sparkplug_publisher_changed",
            Finding::TimingChanged { .. } => "sparkplug_timing_changed",
            Finding::TimingNormal { .. } => "sparkplug_timing_normal",
        }
    }

    pub fn node(&self) -> &NodeId {
        match self {
            Finding::ForeignPublisher { node, .. }
            | Finding::DuplicateBirth { node, .. }
            | Finding::PublisherChanged { node, .. }
            | Finding::TimingChanged { node, .. }
            | Finding::TimingNormal { node, .. } => node,
        }
    }

    /// What an operator reads.
    pub fn message(&self) -> String {
        match self {
            Finding::ForeignPublisher {
                node,
                born_by,
                sent_by,
            } => format!(
                "edge node {}/{} published by {} but born by {}: refused (stolen credentials or a duplicate node)",
                node.group_id,
                node.edge_node_id,
                sent_by.describe(),
                born_by.describe()
            ),
            Finding::DuplicateBirth {
                node,
                born_by,
                sent_by,
            } => format!(
                "edge node {}/{} born again by {} while {}, which birthed it, is still connected: refused (stolen credentials or a cloned node)",
                node.group_id,
                node.edge_node_id,
                sent_by.describe(),
                born_by.describe()
            ),
            Finding::PublisherChanged { node, was, now } => format!(
                "edge node {}/{} was born by {} (before: {})",
                node.group_id,
                node.edge_node_id,
                now.describe(),
                was.describe()
            ),
            Finding::TimingChanged {
                node,
                count,
                baseline,
                window,
            } => format!(
                "edge node {}/{} sent {count} data messages in {} s, usually {baseline:.1}",
                node.group_id,
                node.edge_node_id,
                window.as_secs()
            ),
            Finding::TimingNormal {
                node,
                count,
                baseline,
            } => format!(
                "edge node {}/{} is back to its usual rate ({count} messages a window, usually {baseline:.1})",
                node.group_id, node.edge_node_id
            ),
        }
    }
}

/// Whether the host should handle the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    Refuse,
}

#[derive(Debug, Default)]
struct NodeWatch {
    born_by: Option<Sender>,
    window_start: Option<Timestamp>,
    count: u64,
    learnt: Vec<u64>,
    baseline: Option<f64>,
    abnormal: bool,
}

/// See the module docs.
#[derive(Debug, Default)]
pub struct PublisherWatch {
    nodes: HashMap<NodeId, NodeWatch>,
    timing: TimingOptions,
}

impl PublisherWatch {
    pub fn new(timing: TimingOptions) -> PublisherWatch {
        PublisherWatch {
            nodes: HashMap::new(),
            timing,
        }
    }

    /// The connection that birthed `node`, if any.
    pub fn born_by(&self, node: &NodeId) -> Option<&Sender> {
        self.nodes.get(node)?.born_by.as_ref()
    }

    /// Checks one message of `node` sent by `sender`; findings go to `out`. `bound_alive`:
    /// whether the connection that birthed the node ([`PublisherWatch::born_by`]) is still
    /// connected (asked of the broker; only looked at for an NBIRTH from another connection).
    pub fn observe(
        &mut self,
        node: &NodeId,
        kind: MessageType,
        sender: &Sender,
        bound_alive: bool,
        now: Timestamp,
        out: &mut Vec<Finding>,
    ) -> Verdict {
        let w = self.nodes.entry(node.clone()).or_default();
        // The broker's own messages (a will) and the platform's carry no client id.
        let Some(_) = &sender.client_id else {
            return Verdict::Accept;
        };
        match kind {
            MessageType::NBirth => {
                if let Some(was) = &w.born_by {
                    let other = was.client_id != sender.client_id || was.address != sender.address;
                    if other && bound_alive {
                        out.push(Finding::DuplicateBirth {
                            node: node.clone(),
                            born_by: was.clone(),
                            sent_by: sender.clone(),
                        });
                        return Verdict::Refuse;
                    }
                    if was.owner != sender.owner || was.ip() != sender.ip() {
                        out.push(Finding::PublisherChanged {
                            node: node.clone(),
                            was: was.clone(),
                            now: sender.clone(),
                        });
                    }
                }
                w.born_by = Some(sender.clone());
                Verdict::Accept
            }
            MessageType::NData
            | MessageType::DData
            | MessageType::DBirth
            | MessageType::DDeath
            | MessageType::NDeath => {
                if let Some(born) = &w.born_by {
                    if born.client_id != sender.client_id || born.address != sender.address {
                        out.push(Finding::ForeignPublisher {
                            node: node.clone(),
                            born_by: born.clone(),
                            sent_by: sender.clone(),
                        });
                        return Verdict::Refuse;
                    }
                }
                if matches!(kind, MessageType::NData | MessageType::DData) {
                    count(w, node, &self.timing, now, out);
                }
                Verdict::Accept
            }
            _ => Verdict::Accept,
        }
    }

    /// Closes the timing windows that ended by `now` (call it now and then, e.g. every
    /// second, so a node that falls silent is seen).
    pub fn tick(&mut self, now: Timestamp, out: &mut Vec<Finding>) {
        let timing = self.timing.clone();
        for (node, w) in &mut self.nodes {
            roll(w, node, &timing, now, out);
        }
    }
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

fn count(
    w: &mut NodeWatch,
    node: &NodeId,
    t: &TimingOptions,
    now: Timestamp,
    out: &mut Vec<Finding>,
) {
    roll(w, node, t, now, out);
    if w.window_start.is_none() {
        w.window_start = Some(now);
    }
    w.count += 1;
    // A burst shows before the window ends.
    if let Some(b) = w.baseline {
        if !w.abnormal && w.count as f64 > b * t.factor + t.slack {
            w.abnormal = true;
            out.push(Finding::TimingChanged {
                node: node.clone(),
                count: w.count,
                baseline: b,
                window: t.window,
            });
        }
    }
}

/// Ends the current window if `now` is past it (a clock going back restarts it).
fn roll(
    w: &mut NodeWatch,
    node: &NodeId,
    t: &TimingOptions,
    now: Timestamp,
    out: &mut Vec<Finding>,
) {
    let Some(start) = w.window_start else {
        return;
    };
    let len = micros(t.window);
    if now.0 < start.0 {
        w.window_start = Some(now);
        w.count = 0;
        return;
    }
    if now.0 - start.0 < len {
        return;
    }
    let c = w.count;
    match w.baseline {
        None => {
            w.learnt.push(c);
            if w.learnt.len() >= t.learn.max(1) {
                let mut v = w.learnt.clone();
                v.sort_unstable();
                w.baseline = Some(v[v.len() / 2] as f64);
            }
        }
        Some(b) => {
            let high = c as f64 > b * t.factor + t.slack;
            let low = (c as f64) < b / t.factor - t.slack;
            if (high || low) && !w.abnormal {
                w.abnormal = true;
                out.push(Finding::TimingChanged {
                    node: node.clone(),
                    count: c,
                    baseline: b,
                    window: t.window,
                });
            } else if !high && !low && w.abnormal {
                w.abnormal = false;
                out.push(Finding::TimingNormal {
                    node: node.clone(),
                    count: c,
                    baseline: b,
                });
            }
        }
    }
    // Windows with no message at all count as empty ones.
    let skipped = (now.0 - start.0) / len;
    w.window_start = Some(Timestamp(start.0 + skipped * len));
    w.count = 0;
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000;

    fn node() -> NodeId {
        NodeId::new("bottling", "sim-edge")
    }

    fn sender(id: &str, owner: &str, addr: &str) -> Sender {
        Sender {
            client_id: Some(id.to_owned()),
            owner: Some(owner.to_owned()),
            address: Some(addr.parse().expect("addr")),
        }
    }

    #[test]
    fn data_from_another_connection_than_the_birth_is_refused() {
        let mut w = PublisherWatch::default();
        let real = sender("sim-edge-bottling", "device:sim-edge", "10.0.0.5:40000");
        let mut out = Vec::new();
        let n = node();
        assert_eq!(
            w.observe(
                &n,
                MessageType::NBirth,
                &real,
                false,
                Timestamp(0),
                &mut out
            ),
            Verdict::Accept
        );
        assert_eq!(
            w.observe(&n, MessageType::DData, &real, false, Timestamp(S), &mut out),
            Verdict::Accept
        );
        assert!(out.is_empty());
        // The same credentials and client id from another machine: another connection.
        let forger = sender("sim-edge-bottling", "device:sim-edge", "10.0.0.66:50000");
        assert_eq!(
            w.observe(
                &n,
                MessageType::NData,
                &forger,
                false,
                Timestamp(2 * S),
                &mut out
            ),
            Verdict::Refuse
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].code(), "sparkplug_foreign_publisher");
        assert!(
            out[0].message().contains("10.0.0.66:50000"),
            "{}",
            out[0].message()
        );
        // A will published by the broker for the real node's dropped connection is accepted.
        let will = Sender::default();
        assert_eq!(
            w.observe(
                &n,
                MessageType::NDeath,
                &will,
                false,
                Timestamp(3 * S),
                &mut out
            ),
            Verdict::Accept
        );
        // A node never born: nothing to compare with (the host asks for a rebirth).
        let other = NodeId::new("bottling", "other");
        assert_eq!(
            w.observe(
                &other,
                MessageType::NData,
                &forger,
                false,
                Timestamp(3 * S),
                &mut out
            ),
            Verdict::Accept
        );
    }

    #[test]
    fn a_second_birth_while_the_first_connection_lives_is_refused() {
        let mut w = PublisherWatch::default();
        let mut out = Vec::new();
        let n = node();
        let real = sender("sim-edge-bottling", "device:sim-edge", "127.0.0.1:40000");
        let forger = sender("sim-edge-bottling-2", "device:sim-edge", "127.0.0.1:40001");
        w.observe(
            &n,
            MessageType::NBirth,
            &real,
            false,
            Timestamp(0),
            &mut out,
        );
        assert_eq!(
            w.observe(
                &n,
                MessageType::NBirth,
                &forger,
                true,
                Timestamp(S),
                &mut out
            ),
            Verdict::Refuse
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].code(), "sparkplug_duplicate_birth");
        assert_eq!(w.born_by(&n), Some(&real), "still bound to the real node");
        // Its data after the refused birth is foreign too.
        assert_eq!(
            w.observe(
                &n,
                MessageType::NData,
                &forger,
                true,
                Timestamp(2 * S),
                &mut out
            ),
            Verdict::Refuse
        );
        assert_eq!(
            w.observe(
                &n,
                MessageType::NData,
                &real,
                true,
                Timestamp(3 * S),
                &mut out
            ),
            Verdict::Accept
        );
        // Once the real connection is gone, a new connection's birth is an ordinary reconnect.
        out.clear();
        let back = sender("sim-edge-bottling", "device:sim-edge", "127.0.0.1:40002");
        assert_eq!(
            w.observe(
                &n,
                MessageType::NBirth,
                &back,
                false,
                Timestamp(4 * S),
                &mut out
            ),
            Verdict::Accept
        );
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn a_birth_from_another_identity_or_address_is_reported() {
        let mut w = PublisherWatch::default();
        let mut out = Vec::new();
        let n = node();
        let a = sender("c1", "device:sim-edge", "10.0.0.5:40000");
        w.observe(&n, MessageType::NBirth, &a, false, Timestamp(0), &mut out);
        // Reconnecting from the same host (new port, new client id) is ordinary.
        let b = sender("c2", "device:sim-edge", "10.0.0.5:40001");
        w.observe(&n, MessageType::NBirth, &b, false, Timestamp(S), &mut out);
        assert!(out.is_empty(), "{out:?}");
        let c = sender("c2", "device:sim-edge", "192.168.1.9:40001");
        w.observe(
            &n,
            MessageType::NBirth,
            &c,
            false,
            Timestamp(2 * S),
            &mut out,
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].code(), "sparkplug_publisher_changed");
        // Now bound to the new connection: its data is accepted.
        out.clear();
        assert_eq!(
            w.observe(
                &n,
                MessageType::DData,
                &c,
                false,
                Timestamp(3 * S),
                &mut out
            ),
            Verdict::Accept
        );
        assert!(out.is_empty());
    }

    #[test]
    fn a_doubled_rate_is_seen_and_its_end_too() {
        let mut w = PublisherWatch::new(TimingOptions::default());
        let mut out = Vec::new();
        let n = node();
        let a = sender("c1", "o", "10.0.0.5:1");
        w.observe(&n, MessageType::NBirth, &a, false, Timestamp(0), &mut out);
        // 1 message a second with jitter, for 10 learning windows and 10 more.
        let mut t = 0i64;
        for i in 0..600 {
            t = i * S + (i * 7919 % 200_000);
            w.observe(&n, MessageType::DData, &a, false, Timestamp(t), &mut out);
            w.tick(Timestamp(t), &mut out);
        }
        assert!(out.is_empty(), "normal operation: {out:?}");
        // A forger's messages beside the real ones (as the real connection cannot be told
        // apart here, e.g. through a compromised edge gateway): twice the rate.
        for i in 600..660 {
            t = i * S;
            w.observe(&n, MessageType::DData, &a, false, Timestamp(t), &mut out);
            w.observe(
                &n,
                MessageType::DData,
                &a,
                false,
                Timestamp(t + S / 2),
                &mut out,
            );
        }
        assert!(
            out.iter().any(|f| f.code() == "sparkplug_timing_changed"),
            "{out:?}"
        );
        let changes = out.len();
        for i in 660..760 {
            t = i * S;
            w.observe(&n, MessageType::DData, &a, false, Timestamp(t), &mut out);
        }
        assert_eq!(out.len(), changes + 1, "{out:?}");
        assert_eq!(out[changes].code(), "sparkplug_timing_normal");
        // Silence is a change too (seen by the tick).
        w.tick(Timestamp(t + 120 * S), &mut out);
        assert_eq!(
            out.last().map(Finding::code),
            Some("sparkplug_timing_changed")
        );
        // Clock going back: no panic, no finding.
        let before = out.len();
        w.observe(&n, MessageType::DData, &a, false, Timestamp(0), &mut out);
        w.tick(Timestamp(0), &mut out);
        assert_eq!(out.len(), before);
    }
}
