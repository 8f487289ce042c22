//! A session's delivery state, apart from any connection: QoS 1/2 messages in flight to the
//! client (awaiting PUBACK / PUBREC / PUBCOMP), messages waiting for a free in-flight slot or for
//! the client to come back, and the QoS 2 packet ids received from the client that await their
//! PUBREL (exactly-once: a re-sent PUBLISH with such an id is acknowledged, not routed again).
//!
//! Pure logic, no I/O: the broker's writer task admits messages and the read loop acknowledges
//! them under the session's lock. Also the session's binary record for the persistence store.

use std::collections::{BTreeSet, VecDeque};
use std::num::NonZeroU16;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Buf, BufMut, Bytes};

use crate::codec::{self, Packet, ProtocolVersion, Publish, QoS};
use crate::spill::Spill;
use crate::tree::SubOptions;

/// Milliseconds since the Unix epoch (wall clock: message expiry and session expiry must hold
/// across restarts).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A message owed to the client, with the time it reached the broker (for message expiry).
#[derive(Debug, Clone)]
pub struct Queued {
    /// Topic, payload, properties (incl. subscription identifiers), delivery QoS and retain
    /// flag as it goes to this client; the packet id is assigned when it enters the window.
    pub publish: Publish,
    pub received_ms: u64,
}

impl Queued {
    pub fn new(publish: Publish) -> Queued {
        Queued {
            publish,
            received_ms: now_ms(),
        }
    }

    /// The message as it should go out at `now_ms`: the expiry interval counts down (MQTT 5,
    /// 3.3.2.3.3); `None` when it has expired and must not be delivered.
    fn current(&self, now_ms: u64) -> Option<Publish> {
        let mut p = self.publish.clone();
        if let Some(expiry) = p.properties.message_expiry_interval {
            let waited = now_ms.saturating_sub(self.received_ms) / 1000;
            let left = u64::from(expiry).checked_sub(waited).filter(|l| *l > 0)?;
            p.properties.message_expiry_interval = u32::try_from(left).ok();
        }
        Some(p)
    }

    fn expired(&self, now_ms: u64) -> bool {
        self.publish
            .properties
            .message_expiry_interval
            .is_some_and(|e| now_ms.saturating_sub(self.received_ms) / 1000 >= u64::from(e))
    }
}

/// A message in the client's window. (Nearly every entry is a `Publish`; boxing it would cost
/// an allocation per message for nothing.)
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)]
pub enum InFlight {
    /// Sent (QoS 1 or 2), waiting for PUBACK or PUBREC.
    Publish(Queued),
    /// QoS 2: PUBREC received and PUBREL sent, waiting for PUBCOMP.
    Released,
}

/// What became of a message offered to the session (returned, never stored).
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Admit {
    /// Send it now (its packet id is assigned).
    Send(Publish),
    /// Waiting for a free slot in the window (or for the client).
    Queued,
    /// Not delivered: the queue is full (counted as a drop) ...
    Overflow,
    /// ... or its message expiry interval passed.
    Expired,
}

/// The delivery state of one session.
#[derive(Debug)]
pub struct SessionState {
    /// Outgoing QoS 1/2 messages, in the order they were sent.
    inflight: VecDeque<(NonZeroU16, InFlight)>,
    /// Outgoing QoS 1/2 messages not yet sent, oldest first.
    pending: VecDeque<Queued>,
    /// Messages for a connection being closed because its queue overflowed (newer than what
    /// that queue holds; they join `pending` when it detaches).
    overflow: VecDeque<Queued>,
    /// QoS 2 packet ids received from the client, PUBREC sent, PUBREL not yet received.
    incoming_qos2: BTreeSet<u16>,
    next_pid: u16,
    /// Most messages in flight to the client (its Receive Maximum, capped by the broker).
    pub window: usize,
    /// Most messages waiting in `pending`.
    pub max_pending: usize,
    /// Set on every change; cleared by the persistence store when it saved the session.
    pub dirty: bool,
    /// Messages beyond `max_pending`, on disk (persistent sessions of a broker with a state
    /// directory): newer than everything in `pending`.
    spill: Option<Box<Spill>>,
}

impl SessionState {
    pub fn new(window: usize, max_pending: usize) -> SessionState {
        SessionState {
            inflight: VecDeque::new(),
            pending: VecDeque::new(),
            overflow: VecDeque::new(),
            incoming_qos2: BTreeSet::new(),
            next_pid: 0,
            window: window.max(1),
            max_pending,
            dirty: false,
            spill: None,
        }
    }

    /// Keeps messages beyond `max_pending` in `spill` rather than dropping them.
    pub fn set_spill(&mut self, spill: Spill) {
        if let Some(old) = self.spill.replace(Box::new(spill)) {
            drop(old);
        }
    }

    /// Whether messages beyond the memory bound go to disk.
    pub fn spills(&self) -> bool {
        self.spill.is_some()
    }

    /// Messages waiting on disk.
    pub fn spilled_len(&self) -> u64 {
        self.spill.as_ref().map_or(0, |s| s.len())
    }

    /// Writes buffered spilled messages to their file (at each save of the broker's state).
    pub fn flush_spill(&mut self) {
        if let Some(s) = self.spill.as_mut() {
            if let Err(e) = s.flush() {
                tracing::warn!(error = %e, "cannot write a session's spill file");
            }
        }
    }

    /// The session ended: its spill file goes.
    pub fn remove_spill(&mut self) {
        if let Some(s) = self.spill.take() {
            s.remove();
        }
    }

    pub fn inflight_len(&self) -> usize {
        self.inflight.len()
    }

    /// Drops waiting messages whose topic `keep` refuses (a subscription the owner may no
    /// longer have); returns how many went. Messages already in flight stay: they were
    /// delivered under the rights of their time.
    pub fn retain_pending(&mut self, mut keep: impl FnMut(&str) -> bool) -> usize {
        let before = self.pending.len();
        self.pending.retain(|q| keep(q.publish.topic.as_str()));
        let mut gone = before - self.pending.len();
        if let Some(s) = self.spill.as_mut() {
            match s.retain(&mut keep) {
                Ok(n) => gone += usize::try_from(n).unwrap_or(usize::MAX),
                Err(e) => tracing::warn!(error = %e, "cannot filter a session's spill file"),
            }
        }
        if gone > 0 {
            self.dirty = true;
        }
        gone
    }

    /// Messages waiting (in memory and on disk).
    pub fn pending_len(&self) -> usize {
        self.pending.len() + usize::try_from(self.spilled_len()).unwrap_or(usize::MAX)
    }

    /// Messages waiting in memory (the writer stops taking new ones at `max_pending`).
    pub fn pending_in_memory(&self) -> usize {
        self.pending.len()
    }

    fn free_pid(&mut self) -> Option<NonZeroU16> {
        // At most 65,535 ids; the window is far smaller, so a free one is found quickly.
        for _ in 0..u16::MAX {
            self.next_pid = self.next_pid.wrapping_add(1).max(1);
            let pid = NonZeroU16::new(self.next_pid)?;
            if !self.inflight.iter().any(|(p, _)| *p == pid) {
                return Some(pid);
            }
        }
        None
    }

    /// Offers a QoS 1/2 message for delivery to a connected client: it is sent at once when
    /// the window has room and nothing older waits, else queued behind the older ones.
    pub fn admit(&mut self, q: Queued, now_ms: u64) -> Admit {
        if q.expired(now_ms) {
            return Admit::Expired;
        }
        if self.pending_len() == 0 && self.inflight.len() < self.window {
            if let Some(p) = self.start(q, now_ms) {
                return Admit::Send(p);
            }
            return Admit::Expired;
        }
        self.enqueue(q)
    }

    /// Keeps a message that arrived while the connection's queue was full and the connection is
    /// being closed for it: it goes behind whatever that queue still holds ([`Self::absorb`]).
    pub fn enqueue_overflow(&mut self, q: Queued) -> Admit {
        // In memory only until the connection detaches (moments): with a spill behind, the
        // bound is the overflow's own.
        let held = if self.spill.is_some() {
            self.overflow.len()
        } else {
            self.pending.len() + self.overflow.len()
        };
        if held >= self.max_pending {
            return Admit::Overflow;
        }
        self.overflow.push_back(q);
        Admit::Queued
    }

    /// After the connection's leftovers were queued: the overflow follows them. Returns how
    /// many could not be kept.
    pub fn absorb_overflow(&mut self) -> u64 {
        let mut dropped = 0;
        while let Some(q) = self.overflow.pop_front() {
            if let Admit::Overflow = self.enqueue(q) {
                dropped += 1;
            }
        }
        dropped
    }

    /// Keeps a message for later (the client is away or its window is full): in memory up to
    /// `max_pending`, then in the spill file if the session has one.
    pub fn enqueue(&mut self, q: Queued) -> Admit {
        let spilling = self.spill.as_ref().is_some_and(|s| !s.is_empty());
        if !spilling && self.pending.len() < self.max_pending {
            self.pending.push_back(q);
            self.dirty = true;
            return Admit::Queued;
        }
        let Some(s) = self.spill.as_mut() else {
            return Admit::Overflow;
        };
        match s.push(&q) {
            Ok(true) => {
                self.dirty = true;
                Admit::Queued
            }
            Ok(false) => Admit::Overflow,
            Err(e) => {
                tracing::warn!(error = %e, "cannot write a session's spill file; message dropped");
                Admit::Overflow
            }
        }
    }

    /// Brings spilled messages back into memory when fewer than half the bound wait there.
    fn refill(&mut self) {
        let room = self.max_pending.saturating_sub(self.pending.len());
        if room < self.max_pending.div_ceil(2) && !self.pending.is_empty() {
            return;
        }
        let Some(s) = self.spill.as_mut().filter(|s| !s.is_empty()) else {
            return;
        };
        match s.take(room.max(1)) {
            Ok((back, damaged)) => {
                if damaged > 0 {
                    tracing::warn!(
                        damaged,
                        "unreadable messages in a session's spill file; skipped"
                    );
                }
                self.pending.extend(back);
                self.dirty = true;
            }
            Err(e) => tracing::warn!(error = %e, "cannot read a session's spill file"),
        }
    }

    fn start(&mut self, q: Queued, now_ms: u64) -> Option<Publish> {
        let mut p = q.current(now_ms)?;
        let pid = self.free_pid()?;
        p.packet_id = Some(pid);
        p.dup = false;
        self.inflight.push_back((pid, InFlight::Publish(q)));
        self.dirty = true;
        Some(p)
    }

    /// Moves waiting messages into the window while it has room; returns what to send, in
    /// order. `expired` counts messages dropped because their expiry passed while waiting.
    pub fn release(&mut self, now_ms: u64, expired: &mut u64) -> Vec<Publish> {
        let mut out = Vec::new();
        while self.inflight.len() < self.window {
            if self.pending.is_empty() {
                self.refill();
            }
            let Some(q) = self.pending.pop_front() else {
                break;
            };
            self.dirty = true;
            match self.start(q, now_ms) {
                Some(p) => out.push(p),
                None => *expired += 1,
            }
        }
        out
    }

    /// Everything to send again when the client resumes the session (MQTT 4.4): unacknowledged
    /// PUBLISH with DUP set and PUBREL for released ones, in their original order.
    pub fn resend(&self) -> Vec<Packet> {
        self.inflight
            .iter()
            .map(|(pid, f)| match f {
                InFlight::Publish(q) => {
                    let mut p = q.publish.clone();
                    p.packet_id = Some(*pid);
                    p.dup = true;
                    Packet::Publish(p)
                }
                InFlight::Released => Packet::PubRel(codec::PublishResponse::new(*pid)),
            })
            .collect()
    }

    fn find(&self, pid: NonZeroU16, pred: impl Fn(&InFlight) -> bool) -> Option<usize> {
        self.inflight.iter().position(|(p, f)| *p == pid && pred(f))
    }

    fn remove_at(&mut self, i: Option<usize>) -> bool {
        let removed = i.and_then(|i| self.inflight.remove(i)).is_some();
        self.dirty |= removed;
        removed
    }

    /// PUBACK (QoS 1): the message is delivered. False when no QoS 1 message had that id.
    pub fn puback(&mut self, pid: NonZeroU16) -> bool {
        let i = self.find(
            pid,
            |f| matches!(f, InFlight::Publish(q) if q.publish.qos == QoS::AtLeastOnce),
        );
        self.remove_at(i)
    }

    /// PUBREC (QoS 2): the client has the message; we answer PUBREL. A PUBREC with an error
    /// reason code ends the exchange (`failed`). False when no QoS 2 message had that id.
    pub fn pubrec(&mut self, pid: NonZeroU16, failed: bool) -> bool {
        let i = self.find(
            pid,
            |f| matches!(f, InFlight::Publish(q) if q.publish.qos == QoS::ExactlyOnce),
        );
        match i {
            Some(_) if failed => self.remove_at(i),
            Some(i) => {
                self.inflight[i].1 = InFlight::Released;
                self.dirty = true;
                true
            }
            // A repeated PUBREC for a message already released: answer PUBREL again.
            None => self
                .find(pid, |f| matches!(f, InFlight::Released))
                .is_some(),
        }
    }

    /// PUBCOMP (QoS 2): done. False when no released message had that id.
    pub fn pubcomp(&mut self, pid: NonZeroU16) -> bool {
        let i = self.find(pid, |f| matches!(f, InFlight::Released));
        self.remove_at(i)
    }

    /// An incoming QoS 2 PUBLISH: true when it is new and must be routed, false when it is a
    /// re-send of one already received (PUBREC sent, PUBREL pending), which must not be routed
    /// again (exactly once).
    pub fn incoming_qos2(&mut self, pid: NonZeroU16) -> bool {
        let new = self.incoming_qos2.insert(pid.get());
        if new {
            self.dirty = true;
        }
        new
    }

    /// Whether a QoS 2 PUBLISH with this id was received and awaits its PUBREL.
    pub fn pubrel_pending(&self, pid: NonZeroU16) -> bool {
        self.incoming_qos2.contains(&pid.get())
    }

    pub fn incoming_qos2_len(&self) -> usize {
        self.incoming_qos2.len()
    }

    /// PUBREL from the client: forget the id. False when it was unknown.
    pub fn pubrel(&mut self, pid: NonZeroU16) -> bool {
        let known = self.incoming_qos2.remove(&pid.get());
        if known {
            self.dirty = true;
        }
        known
    }

    /// Forgets an in-flight message the client can never receive (larger than its maximum
    /// packet size: MQTT 5 says to discard it as if it had been delivered).
    pub fn forget(&mut self, pid: NonZeroU16) {
        let i = self.find(pid, |_| true);
        self.remove_at(i);
    }

    /// Drops every message whose expiry interval passed; returns how many.
    pub fn expire(&mut self, now_ms: u64) -> usize {
        let before = self.pending.len();
        self.pending.retain(|q| !q.expired(now_ms));
        let n = before - self.pending.len();
        if n > 0 {
            self.dirty = true;
        }
        n
    }
}

/// A persisted session: what survives a restart of the broker.
#[derive(Debug)]
pub struct Record {
    /// Session expiry interval in seconds (u32::MAX: never).
    pub expiry: u32,
    /// When the client was last seen (ms since the epoch); the expiry counts from there.
    pub last_seen_ms: u64,
    pub subscriptions: Vec<(String, SubOptions)>,
    pub state: SessionState,
    /// The identity that owns the session (`Principal::owner`); `None` in records written
    /// before owners were recorded (version 1), or for an anonymous owner.
    pub owner: Option<String>,
    /// False for version 1 records, whose owner is unknown.
    pub owner_known: bool,
}

/// Version 2 appends the owner after the version 1 layout.
const RECORD_VERSION: u8 = 2;

/// Why a stored record could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("session record is truncated")]
    Truncated,
    #[error("session record has version {0}, this build reads versions 1 to {RECORD_VERSION}")]
    Version(u8),
    #[error("session record holds an invalid {0}")]
    Invalid(&'static str),
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.put_u32(u32::try_from(b.len()).unwrap_or(u32::MAX));
    out.extend_from_slice(b);
}

fn get_bytes(buf: &mut Bytes) -> Result<Bytes, RecordError> {
    if buf.remaining() < 4 {
        return Err(RecordError::Truncated);
    }
    let n = buf.get_u32() as usize;
    if buf.remaining() < n {
        return Err(RecordError::Truncated);
    }
    Ok(buf.split_to(n))
}

fn need(buf: &Bytes, n: usize) -> Result<(), RecordError> {
    if buf.remaining() < n {
        Err(RecordError::Truncated)
    } else {
        Ok(())
    }
}

/// A message as an MQTT 5 PUBLISH packet (topic, payload, QoS, retain and every property).
pub fn encode_publish(p: &Publish, out: &mut Vec<u8>) {
    let mut p = p.clone();
    p.properties.topic_alias = None;
    p.dup = false;
    if p.qos != QoS::AtMostOnce && p.packet_id.is_none() {
        p.packet_id = NonZeroU16::new(1);
    }
    let mut packet = Vec::new();
    if codec::encode(&Packet::Publish(p), ProtocolVersion::V5, &mut packet).is_ok() {
        put_bytes(out, &packet);
    } else {
        put_bytes(out, &[]);
    }
}

pub fn decode_publish(buf: &mut Bytes) -> Result<Option<Publish>, RecordError> {
    let packet = get_bytes(buf)?;
    if packet.is_empty() {
        return Ok(None);
    }
    match codec::decode_bytes(&packet, ProtocolVersion::V5, usize::MAX) {
        Ok(Some((Packet::Publish(p), _))) => Ok(Some(p)),
        _ => Err(RecordError::Invalid("message")),
    }
}

impl Record {
    pub fn encode(&self) -> Vec<u8> {
        encode_record(
            self.expiry,
            self.last_seen_ms,
            &self.subscriptions,
            &self.state,
            match (&self.owner, self.owner_known) {
                (_, false) => OwnerField::Unknown,
                (None, true) => OwnerField::Anonymous,
                (Some(o), true) => OwnerField::Known(o),
            },
        )
    }
}

/// Who owns a stored session.
#[derive(Debug, Clone, Copy)]
pub enum OwnerField<'a> {
    Anonymous,
    Known(&'a str),
    /// Restored from a record written before owners were kept.
    Unknown,
}

/// A session's record from its parts (the broker keeps them apart).
pub fn encode_record(
    expiry: u32,
    last_seen_ms: u64,
    subscriptions: &[(String, SubOptions)],
    state: &SessionState,
    owner: OwnerField<'_>,
) -> Vec<u8> {
    {
        let mut out = Vec::new();
        out.put_u8(RECORD_VERSION);
        out.put_u32(expiry);
        out.put_u64(last_seen_ms);
        out.put_u16(state.next_pid);
        out.put_u32(u32::try_from(subscriptions.len()).unwrap_or(u32::MAX));
        for (filter, o) in subscriptions {
            put_bytes(&mut out, filter.as_bytes());
            out.put_u8(
                o.qos | (u8::from(o.no_local) << 2) | (u8::from(o.retain_as_published) << 3),
            );
            out.put_u32(o.identifier);
        }
        let s = state;
        out.put_u32(u32::try_from(s.inflight.len()).unwrap_or(u32::MAX));
        for (pid, f) in &s.inflight {
            out.put_u16(pid.get());
            match f {
                InFlight::Publish(q) => {
                    out.put_u8(0);
                    out.put_u64(q.received_ms);
                    encode_publish(&q.publish, &mut out);
                }
                InFlight::Released => out.put_u8(1),
            }
        }
        out.put_u32(u32::try_from(s.pending.len()).unwrap_or(u32::MAX));
        for q in &s.pending {
            out.put_u64(q.received_ms);
            encode_publish(&q.publish, &mut out);
        }
        out.put_u32(u32::try_from(s.incoming_qos2.len()).unwrap_or(u32::MAX));
        for pid in &s.incoming_qos2 {
            out.put_u16(*pid);
        }
        match owner {
            OwnerField::Anonymous => out.put_u8(0),
            OwnerField::Known(o) => {
                out.put_u8(1);
                put_bytes(&mut out, o.as_bytes());
            }
            OwnerField::Unknown => out.put_u8(2),
        }
        out
    }
}

impl Record {
    pub fn decode(bytes: &[u8], window: usize, max_pending: usize) -> Result<Record, RecordError> {
        let mut buf = Bytes::copy_from_slice(bytes);
        need(&buf, 1)?;
        let v = buf.get_u8();
        if v != 1 && v != RECORD_VERSION {
            return Err(RecordError::Version(v));
        }
        need(&buf, 4 + 8 + 2 + 4)?;
        let expiry = buf.get_u32();
        let last_seen_ms = buf.get_u64();
        let mut state = SessionState::new(window, max_pending);
        state.next_pid = buf.get_u16();
        let n = buf.get_u32();
        let mut subscriptions = Vec::new();
        for _ in 0..n {
            let f = get_bytes(&mut buf)?;
            let filter =
                String::from_utf8(f.to_vec()).map_err(|_| RecordError::Invalid("filter"))?;
            need(&buf, 5)?;
            let bits = buf.get_u8();
            let identifier = buf.get_u32();
            if bits & 3 == 3 || crate::topic::validate_topic_filter(&filter).is_err() {
                return Err(RecordError::Invalid("subscription"));
            }
            subscriptions.push((
                filter,
                SubOptions {
                    qos: bits & 3,
                    no_local: bits & 4 != 0,
                    retain_as_published: bits & 8 != 0,
                    identifier,
                },
            ));
        }
        need(&buf, 4)?;
        for _ in 0..buf.get_u32() {
            need(&buf, 3)?;
            let pid = NonZeroU16::new(buf.get_u16()).ok_or(RecordError::Invalid("packet id"))?;
            match buf.get_u8() {
                0 => {
                    need(&buf, 8)?;
                    let received_ms = buf.get_u64();
                    let Some(mut publish) = decode_publish(&mut buf)? else {
                        continue;
                    };
                    publish.packet_id = None;
                    state.inflight.push_back((
                        pid,
                        InFlight::Publish(Queued {
                            publish,
                            received_ms,
                        }),
                    ));
                }
                1 => state.inflight.push_back((pid, InFlight::Released)),
                _ => return Err(RecordError::Invalid("in-flight state")),
            }
        }
        need(&buf, 4)?;
        for _ in 0..buf.get_u32() {
            need(&buf, 8)?;
            let received_ms = buf.get_u64();
            if let Some(mut publish) = decode_publish(&mut buf)? {
                publish.packet_id = None;
                state.pending.push_back(Queued {
                    publish,
                    received_ms,
                });
            }
        }
        need(&buf, 4)?;
        for _ in 0..buf.get_u32() {
            need(&buf, 2)?;
            state.incoming_qos2.insert(buf.get_u16());
        }
        let (owner, owner_known) = if v == 1 {
            (None, false)
        } else {
            need(&buf, 1)?;
            match buf.get_u8() {
                0 => (None, true),
                2 => (None, false),
                1 => {
                    let o = get_bytes(&mut buf)?;
                    let o =
                        String::from_utf8(o.to_vec()).map_err(|_| RecordError::Invalid("owner"))?;
                    (Some(o), true)
                }
                _ => return Err(RecordError::Invalid("owner")),
            }
        };
        Ok(Record {
            expiry,
            last_seen_ms,
            subscriptions,
            state,
            owner,
            owner_known,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::MqttString;

    fn msg(n: u32, qos: QoS) -> Queued {
        let mut p = Publish::new(
            MqttString::from_utf8(Bytes::from(format!("t/{n}"))).expect("utf-8"),
            Bytes::from(n.to_string()),
        );
        p.qos = qos;
        Queued {
            publish: p,
            received_ms: 1_000_000,
        }
    }

    fn topic(p: &Publish) -> &str {
        p.topic.as_str()
    }

    #[test]
    fn window_holds_back_and_releases_in_order() {
        let mut s = SessionState::new(2, 10);
        let now = 1_000_000;
        let a = match s.admit(msg(1, QoS::AtLeastOnce), now) {
            Admit::Send(p) => p,
            other => panic!("{other:?}"),
        };
        assert!(matches!(
            s.admit(msg(2, QoS::ExactlyOnce), now),
            Admit::Send(_)
        ));
        assert!(matches!(
            s.admit(msg(3, QoS::AtLeastOnce), now),
            Admit::Queued
        ));
        assert!(matches!(
            s.admit(msg(4, QoS::AtLeastOnce), now),
            Admit::Queued
        ));
        let pid = a.packet_id.expect("pid");
        assert!(s.puback(pid));
        assert!(!s.puback(pid), "a second PUBACK finds nothing");
        let mut expired = 0;
        let out = s.release(now, &mut expired);
        assert_eq!(out.iter().map(topic).collect::<Vec<_>>(), ["t/3"]);
        assert_eq!(s.pending_len(), 1);
    }

    #[test]
    fn qos2_outgoing_flow_and_resend_after_reconnect() {
        let mut s = SessionState::new(10, 10);
        let now = 1_000_000;
        let p1 = match s.admit(msg(1, QoS::ExactlyOnce), now) {
            Admit::Send(p) => p,
            other => panic!("{other:?}"),
        };
        let p2 = match s.admit(msg(2, QoS::AtLeastOnce), now) {
            Admit::Send(p) => p,
            other => panic!("{other:?}"),
        };
        let pid1 = p1.packet_id.expect("pid");
        assert!(!s.puback(pid1), "PUBACK does not complete a QoS 2 message");
        assert!(s.pubrec(pid1, false));
        let again = s.resend();
        assert_eq!(again.len(), 2);
        assert!(matches!(&again[0], Packet::PubRel(r) if r.packet_id == pid1));
        match &again[1] {
            Packet::Publish(p) => {
                assert!(p.dup);
                assert_eq!(p.packet_id, p2.packet_id);
                assert_eq!(topic(p), "t/2");
            }
            other => panic!("{other:?}"),
        }
        assert!(s.pubrec(pid1, false), "a repeated PUBREC is answered again");
        assert!(s.pubcomp(pid1));
        assert!(!s.pubcomp(pid1));
        assert_eq!(s.inflight_len(), 1);
    }

    #[test]
    fn incoming_qos2_is_routed_once() {
        let mut s = SessionState::new(10, 10);
        let pid = NonZeroU16::new(7).expect("non-zero");
        assert!(s.incoming_qos2(pid));
        assert!(
            !s.incoming_qos2(pid),
            "a re-sent PUBLISH is not routed again"
        );
        assert!(s.pubrel(pid));
        assert!(!s.pubrel(pid));
        assert!(s.incoming_qos2(pid), "after PUBREL the id is new again");
    }

    #[test]
    fn expiry_counts_down_and_drops() {
        let mut s = SessionState::new(1, 10);
        let mut m = msg(1, QoS::AtLeastOnce);
        m.publish.properties.message_expiry_interval = Some(10);
        let mut blocker = msg(0, QoS::AtLeastOnce);
        blocker.publish.properties.message_expiry_interval = None;
        assert!(matches!(s.admit(blocker, 1_000_000), Admit::Send(_)));
        assert!(matches!(s.admit(m.clone(), 1_000_000), Admit::Queued));
        // 4 s later, after the window frees: 6 s left.
        assert!(s.puback(NonZeroU16::new(1).expect("non-zero")));
        let mut expired = 0;
        let out = s.release(1_004_000, &mut expired);
        assert_eq!(out[0].properties.message_expiry_interval, Some(6));
        assert!(matches!(s.admit(m.clone(), 1_010_000), Admit::Expired));
        let mut s2 = SessionState::new(1, 10);
        assert!(matches!(s2.enqueue(m), Admit::Queued));
        assert_eq!(s2.expire(1_020_000), 1);
        assert_eq!(s2.pending_len(), 0);
    }

    #[test]
    fn overflow_is_reported() {
        let mut s = SessionState::new(1, 1);
        assert!(matches!(
            s.admit(msg(1, QoS::AtLeastOnce), 0),
            Admit::Send(_)
        ));
        assert!(matches!(
            s.admit(msg(2, QoS::AtLeastOnce), 0),
            Admit::Queued
        ));
        assert!(matches!(
            s.admit(msg(3, QoS::AtLeastOnce), 0),
            Admit::Overflow
        ));
    }

    #[test]
    fn record_round_trips_and_rejects_damage() {
        let mut s = SessionState::new(1, 10);
        let mut m = msg(1, QoS::ExactlyOnce);
        m.publish.properties.user_properties.push((
            MqttString::from_utf8(Bytes::from_static(b"k")).expect("utf-8"),
            MqttString::from_utf8(Bytes::from_static(b"v")).expect("utf-8"),
        ));
        let sent = match s.admit(m, 0) {
            Admit::Send(p) => p,
            other => panic!("{other:?}"),
        };
        assert!(matches!(
            s.admit(msg(2, QoS::AtLeastOnce), 0),
            Admit::Queued
        ));
        assert!(s.incoming_qos2(NonZeroU16::new(9).expect("non-zero")));
        let rec = Record {
            expiry: 3600,
            last_seen_ms: 42,
            subscriptions: vec![(
                "a/+/c".into(),
                SubOptions {
                    qos: 2,
                    no_local: true,
                    retain_as_published: false,
                    identifier: 5,
                },
            )],
            state: s,
            owner: Some("device:press-4".into()),
            owner_known: true,
        };
        let bytes = rec.encode();
        let back = Record::decode(&bytes, 1, 10).expect("decodes");
        assert_eq!(back.owner.as_deref(), Some("device:press-4"));
        assert!(back.owner_known);
        // A version 1 record (no owner trailer) still reads, with an unknown owner.
        let mut v1 = bytes.clone();
        v1[0] = 1;
        v1.truncate(v1.len() - (1 + 4 + "device:press-4".len()));
        let old = Record::decode(&v1, 1, 10).expect("version 1 decodes");
        assert!(!old.owner_known);
        assert_eq!(old.subscriptions, rec.subscriptions);
        assert_eq!(back.expiry, 3600);
        assert_eq!(back.last_seen_ms, 42);
        assert_eq!(back.subscriptions, rec.subscriptions);
        let again = back.state.resend();
        match &again[0] {
            Packet::Publish(p) => {
                assert_eq!(p.packet_id, sent.packet_id);
                assert_eq!(p.properties.user_properties.len(), 1);
                assert_eq!(p.qos, QoS::ExactlyOnce);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(back.state.pending_len(), 1);
        assert_eq!(back.state.incoming_qos2_len(), 1);
        for cut in 0..bytes.len() {
            assert!(
                Record::decode(&bytes[..cut], 1, 10).is_err(),
                "cut at {cut}"
            );
        }
        let mut wrong = bytes.clone();
        wrong[0] = 9;
        assert!(matches!(
            Record::decode(&wrong, 1, 10),
            Err(RecordError::Version(9))
        ));
    }
}
