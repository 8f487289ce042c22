//! Writes in flight to Sparkplug edge nodes, sans-IO.
//!
//! Sparkplug B has no acknowledgement of a command: an edge node that applied an NCMD/DCMD
//! reports the metric's new value in its next NDATA/DDATA (or in a new birth). So a write is
//! confirmed when a report of that metric carries the written value (compared in the metric's
//! datatype: an f32 for Float), Good and current (not `is_historical`). Reports of other values
//! do not end it (they may predate the command, or the device may be ramping); the node or
//! device going offline does, and so does the deadline.
//!
//! The shell adds a [`Command`] with a deadline, feeds every [`HostAction`] that
//! [`crate::Host::handle`] returned to [`PendingWrites::observe`], and calls
//! [`PendingWrites::expire`] at [`PendingWrites::next_deadline`]. Time is a parameter.

use ironplant_core::{TagPath, Timestamp, Value};

use crate::host::{Command, HostAction, NodeId};
use crate::value::MetricValue;
use crate::DataType;

/// How a write ended.
#[derive(Debug, Clone, PartialEq)]
pub enum WriteOutcome {
    /// A report carried the written value: the value as recorded, and the report's timestamp.
    Confirmed { value: Value, ts: Timestamp },
    /// The node (NDEATH) or the device (DDEATH, or an NBIRTH that left it unborn) went offline
    /// before reporting the value.
    Offline { scope: String },
    /// No report carried the value before the deadline; the last reported value, if any.
    TimedOut { last_reported: Option<Value> },
}

#[derive(Debug)]
struct Pending<K> {
    key: K,
    path: TagPath,
    node: NodeId,
    device_id: Option<String>,
    datatype: DataType,
    expected: MetricValue,
    deadline: Timestamp,
    last_reported: Option<Value>,
}

/// Writes waiting for their confirmation; `K` is what the shell needs to answer (a reply
/// channel), handed back with the outcome.
#[derive(Debug)]
pub struct PendingWrites<K> {
    pending: Vec<Pending<K>>,
}

impl<K> Default for PendingWrites<K> {
    fn default() -> Self {
        PendingWrites {
            pending: Vec::new(),
        }
    }
}

impl<K> PendingWrites<K> {
    pub fn new() -> Self {
        PendingWrites::default()
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Starts waiting for `cmd`'s value (after publishing it) until `deadline`.
    pub fn add(&mut self, key: K, cmd: &Command, deadline: Timestamp) {
        self.pending.push(Pending {
            key,
            path: cmd.path.clone(),
            node: cmd.node.clone(),
            device_id: cmd.device_id.clone(),
            datatype: cmd.datatype,
            expected: cmd.value.clone(),
            deadline,
            last_reported: None,
        });
    }

    /// The earliest deadline, to wake up for [`PendingWrites::expire`].
    pub fn next_deadline(&self) -> Option<Timestamp> {
        self.pending.iter().map(|p| p.deadline).min()
    }

    /// Applies what the host made of one message; returns the writes it ended, in the order
    /// they were added.
    pub fn observe(&mut self, actions: &[HostAction]) -> Vec<(K, WriteOutcome)> {
        let mut ended = Vec::new();
        for action in actions {
            match action {
                HostAction::Sample(s) if !s.historical => {
                    let confirmed = |p: &mut Pending<K>| {
                        if p.path != s.path {
                            return false;
                        }
                        p.last_reported = Some(s.value.clone());
                        s.quality.is_good()
                            && MetricValue::from_value(p.datatype, &s.value).as_ref()
                                == Ok(&p.expected)
                    };
                    for p in self.take(confirmed) {
                        ended.push((
                            p.key,
                            WriteOutcome::Confirmed {
                                value: s.value.clone(),
                                ts: s.ts,
                            },
                        ));
                    }
                }
                HostAction::Status {
                    node,
                    device_id,
                    online: false,
                    ..
                } => {
                    // A node's death takes its devices with it.
                    let gone = |p: &mut Pending<K>| {
                        p.node == *node && (device_id.is_none() || *device_id == p.device_id)
                    };
                    for p in self.take(gone) {
                        let scope = match device_id {
                            None => format!("edge node {}/{}", node.group_id, node.edge_node_id),
                            Some(d) => format!(
                                "device {d} of edge node {}/{}",
                                node.group_id, node.edge_node_id
                            ),
                        };
                        ended.push((p.key, WriteOutcome::Offline { scope }));
                    }
                }
                _ => {}
            }
        }
        ended
    }

    /// Ends the writes whose deadline is at or before `now`.
    pub fn expire(&mut self, now: Timestamp) -> Vec<(K, WriteOutcome)> {
        self.take(|p| p.deadline <= now)
            .into_iter()
            .map(|p| {
                (
                    p.key,
                    WriteOutcome::TimedOut {
                        last_reported: p.last_reported,
                    },
                )
            })
            .collect()
    }

    /// Removes and returns the entries for which `f` is true, keeping the others in order.
    fn take(&mut self, mut f: impl FnMut(&mut Pending<K>) -> bool) -> Vec<Pending<K>> {
        let mut taken = Vec::new();
        let mut kept = Vec::with_capacity(self.pending.len());
        for mut p in self.pending.drain(..) {
            if f(&mut p) {
                taken.push(p);
            } else {
                kept.push(p);
            }
        }
        self.pending = kept;
        taken
    }
}
