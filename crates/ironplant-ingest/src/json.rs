//! The JSON mapper: sans-IO. A payload (and the topic it came on, or the mapping's name for
//! HTTP) goes in with `now`; readings (tag path, value, quality, time) and the reasons for
//! what was left out come back. No socket, no clock, no task: the MQTT shell ([`crate::mqtt`])
//! and the HTTP handler (`ironplant_api::ingest`) are thin wrappers around it.
//!
//! Rules (documented in docs/config.md):
//! - A payload that is too large, not JSON, or whose timestamp is missing, unparsable or
//!   absurd (before 2000-01-01 or more than [`MAX_FUTURE_US`] ahead of `now`) is rejected
//!   whole: no sample, one count under its reason.
//! - A field that is missing (or `null`) yields **no sample**, counted as `missing_field`:
//!   cheap devices send partial payloads (a Tasmota SENSOR message carries only the sensors it
//!   has, a Shelly status only its component), and a Bad sample would overwrite a good value
//!   and punch holes into history for what is only a shorter message. The tag keeps its last
//!   value; its staleness is for the stale-value detection to judge, not for ingest.
//! - A field of the wrong type (an object where a number is expected, `"abc"` for an int, 12.5
//!   for an int) yields no sample either, counted as `wrong_type`; its neighbours still map.
//! - A value outside the field's min/max is kept with quality `Uncertain(OutOfRange)`, as
//!   Modbus tags do.
//! - Without a timestamp field, samples carry `now` (the receive time).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ironplant_core::{
    EventBus, LiveNamespace, Quality, QualityReason, RegisterError, Sample, TagId, TagMeta,
    TagPath, Timestamp, Value, ValueType,
};
use parking_lot::Mutex;
use serde_json::Value as Json;

use crate::config::SignedPolicy;
use crate::config::{FieldMapping, IngestSettings, JsonMapping, PathTemplate, TimeFormat};
use crate::guard::{Finding as GuardFinding, Guard, Provenance, Received};
use ironplant_mqtt::signed::{self, SignedError};

/// The `integrity` event of a refused signature.
pub fn signature_event(topic: &str, r: &SignatureRefused, now: Timestamp) -> ironplant_core::Event {
    use ironplant_core::{Event, EventKind, Severity};
    Event::new(
        now,
        EventKind::Integrity,
        "ingest_signature_refused",
        "ingest",
        r.message.as_str(),
    )
    .with_severity(Severity::Warning)
    .with_attribute("topic", Value::String(Arc::from(topic)))
    .with_attribute("reason", Value::String(Arc::from(r.reason.as_str())))
}

/// The `integrity` event of a guard finding (source `ingest`, subject-less: it names a topic).
pub fn guard_event(f: &GuardFinding, now: Timestamp) -> ironplant_core::Event {
    use ironplant_core::{Event, EventKind, Severity};
    Event::new(now, EventKind::Integrity, f.code(), "ingest", f.message())
        .with_severity(Severity::Warning)
        .with_attribute("topic", Value::String(Arc::from(f.topic())))
}

/// How far ahead of `now` a payload's timestamp may be (device clocks drift; a wrong time zone
/// is an hour or more off and is refused with a hint).
pub const MAX_FUTURE_US: i64 = 10 * 60 * 1_000_000;
/// 2000-01-01T00:00:00Z: a device without a clock often says 1970.
pub const MIN_TS_US: i64 = 946_684_800_000_000;

/// Why a payload or a field was not mapped (a label of `ironplant_ingest_rejected_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    TooLarge,
    NotJson,
    BadTimestamp,
    AbsurdTimestamp,
    MissingField,
    WrongType,
    /// A `+` level of the topic does not make a valid tag path level.
    BadTopicLevel,
    /// The tag's path belongs to another source (a configured or Sparkplug tag).
    TagRefused,
    /// The mapping created `max_tags` tags already.
    TagLimit,
    /// Stamped no later than the last payload accepted on its topic ([`crate::guard`]).
    Replayed,
    /// Not signed, on a mapping with `signed = "required"`.
    Unsigned,
    /// A signed envelope that is malformed, from an unknown signer, or does not verify.
    BadSignature,
}

impl Reason {
    pub const ALL: [Reason; 12] = [
        Reason::TooLarge,
        Reason::NotJson,
        Reason::BadTimestamp,
        Reason::AbsurdTimestamp,
        Reason::MissingField,
        Reason::WrongType,
        Reason::BadTopicLevel,
        Reason::TagRefused,
        Reason::TagLimit,
        Reason::Replayed,
        Reason::Unsigned,
        Reason::BadSignature,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::TooLarge => "too_large",
            Reason::NotJson => "not_json",
            Reason::BadTimestamp => "bad_timestamp",
            Reason::AbsurdTimestamp => "absurd_timestamp",
            Reason::MissingField => "missing_field",
            Reason::WrongType => "wrong_type",
            Reason::BadTopicLevel => "bad_topic_level",
            Reason::TagRefused => "tag_refused",
            Reason::TagLimit => "tag_limit",
            Reason::Replayed => "replayed",
            Reason::Unsigned => "unsigned",
            Reason::BadSignature => "bad_signature",
        }
    }

    fn index(self) -> usize {
        Reason::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

/// A payload rejected whole.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct IngestError {
    pub reason: Reason,
    pub message: String,
}

/// A field left out of an otherwise mapped payload.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    pub pointer: String,
    pub reason: Reason,
    pub message: String,
}

/// One value for one tag.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// Index of the field in its mapping.
    pub field: usize,
    pub path: TagPath,
    pub value: Value,
    pub quality: Quality,
    pub ts: Timestamp,
}

/// What one payload gave.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Mapped {
    pub readings: Vec<Reading>,
    pub rejected: Vec<FieldError>,
}

/// The last problem of a mapping, for diagnostics.
#[derive(Debug, Clone, PartialEq)]
pub struct LastError {
    pub at: Timestamp,
    pub reason: Reason,
    pub message: String,
}

/// Counters of one mapping (atomics, read by `/metrics`).
#[derive(Debug, Default)]
pub struct IngestStats {
    /// Payloads received.
    pub messages: AtomicU64,
    /// Samples put on the bus.
    pub samples: AtomicU64,
    /// Payloads rejected whole, or fields left out, by [`Reason`].
    rejected: [AtomicU64; Reason::ALL.len()],
    /// Tags created at run time by templated paths.
    pub tags_born: AtomicU64,
    last_error: Mutex<Option<LastError>>,
}

impl IngestStats {
    pub fn rejected(&self, reason: Reason) -> u64 {
        self.rejected[reason.index()].load(Ordering::Relaxed)
    }

    pub fn last_error(&self) -> Option<LastError> {
        self.last_error.lock().clone()
    }

    fn count(&self, reason: Reason, message: &str, now: Timestamp) {
        let first = self.rejected[reason.index()].fetch_add(1, Ordering::Relaxed) == 0;
        *self.last_error.lock() = Some(LastError {
            at: now,
            reason,
            message: message.to_owned(),
        });
        // The first of each kind is worth a warning; the rest are in the counters.
        if first {
            tracing::warn!(reason = reason.as_str(), error = %message, "ingest: payload or field not mapped (further ones are counted in ironplant_ingest_rejected_total)");
        } else {
            tracing::debug!(reason = reason.as_str(), error = %message, "ingest");
        }
    }
}

/// A mapping with its counters and the ids of the tags it feeds.
struct Mapping {
    cfg: JsonMapping,
    stats: Arc<IngestStats>,
    /// Path → id (or `None`: refused, reported once). Bounded by the fixed fields plus
    /// `max_tags`.
    ids: Mutex<HashMap<TagPath, Option<TagId>>>,
    /// When the last refusal event (replay, signature) of this mapping was raised.
    refusal_event: Mutex<Option<Timestamp>>,
}

impl Mapping {
    /// Whether to raise the event of a refusal now: a flood is one event per mapping per
    /// [`REFUSAL_EVENT_EVERY`]; the rest are counted.
    fn event_gate(&self, now: Timestamp) -> bool {
        let mut last = self.refusal_event.lock();
        let report = last.is_none_or(|t| {
            now.as_micros() - t.as_micros() >= REFUSAL_EVENT_EVERY.as_micros() as i64
        });
        if report {
            *last = Some(now);
        }
        report
    }
}

/// At most one refusal event (replay, signature) per mapping this often.
pub const REFUSAL_EVENT_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// A payload [`JsonIngest::admit`] refused.
#[derive(Debug, Clone, PartialEq)]
pub struct Refused {
    pub finding: GuardFinding,
    /// Whether to raise its event (the first of a flood).
    pub report: bool,
}

/// Every `[[ingest.json]]` mapping, shared (`Arc`) by the MQTT shell and the HTTP handler.
pub struct JsonIngest {
    mappings: Vec<Mapping>,
    guard: Mutex<Guard>,
    signers: parking_lot::RwLock<Option<Arc<dyn SignerKeys>>>,
}

/// Where signed payloads' public keys come from (the enrolled devices; the server gives the
/// security state), and who hears of refused signatures (the audit log).
pub trait SignerKeys: Send + Sync {
    /// The Ed25519 public key (32 bytes) of the active device `signer`.
    fn public_key(&self, signer: &str) -> Option<Vec<u8>>;
    /// A signed payload was refused (recorded in the audit log).
    fn refused(&self, topic: &str, signer: &str, why: &SignedError, from: &Provenance);
}

/// A payload refused before mapping: unsigned where a signature is required, or a signature
/// that does not hold.
#[derive(Debug, Clone, PartialEq)]
pub struct SignatureRefused {
    pub reason: Reason,
    pub signer: Option<String>,
    pub message: String,
    /// Whether to raise its event (the first of a flood).
    pub report: bool,
}

impl JsonIngest {
    pub fn new(settings: IngestSettings) -> JsonIngest {
        JsonIngest {
            mappings: settings
                .json
                .into_iter()
                .map(|cfg| Mapping {
                    cfg,
                    stats: Arc::default(),
                    ids: Mutex::default(),
                    refusal_event: Mutex::default(),
                })
                .collect(),
            guard: Mutex::default(),
            signers: parking_lot::RwLock::new(None),
        }
    }

    /// Gives the keys of signed payloads (until then, every envelope is from an unknown
    /// signer and refused).
    pub fn set_signers(&self, keys: Arc<dyn SignerKeys>) {
        *self.signers.write() = Some(keys);
    }

    /// Opens a signed envelope (`ironplant_mqtt::signed`) of mapping `index`: `Ok(None)` for a
    /// plain payload the mapping accepts, `Ok(Some((signer, payload)))` for a verified one (map
    /// `payload`), `Err` (counted, audited through [`SignerKeys::refused`], an `integrity`
    /// event on `events` as for [`JsonIngest::admit`]) otherwise.
    pub fn open_signed(
        &self,
        index: usize,
        msg: Received<'_>,
        now: Timestamp,
        events: &EventBus,
    ) -> Result<Option<(String, Vec<u8>)>, SignatureRefused> {
        let Some(m) = self.mappings.get(index) else {
            return Ok(None);
        };
        let refuse = |reason: Reason, signer: Option<&str>, message: String| {
            m.stats.messages.fetch_add(1, Ordering::Relaxed);
            m.stats.count(reason, &message, now);
            let r = SignatureRefused {
                reason,
                signer: signer.map(str::to_owned),
                message,
                report: m.event_gate(now),
            };
            if r.report {
                events.publish(signature_event(msg.topic, &r, now));
            }
            r
        };
        let keys = self.signers.read().clone();
        let audit = |signer: &str, why: &SignedError| {
            if let Some(k) = &keys {
                k.refused(msg.topic, signer, why, msg.from);
            }
        };
        match signed::open(msg.payload) {
            Ok(None) if m.cfg.signed == SignedPolicy::Required => Err(refuse(
                Reason::Unsigned,
                None,
                format!(
                    "payload on {} is not signed and mapping {:?} requires signed = \"required\": wrap it in a signed envelope with the device's key (docs/integrity.md)",
                    msg.topic, m.cfg.name
                ),
            )),
            Ok(None) => Ok(None),
            Err(e) => {
                audit("?", &e);
                Err(refuse(Reason::BadSignature, None, format!("payload on {}: {e}", msg.topic)))
            }
            Ok(Some(env)) => {
                let key = keys.as_ref().and_then(|k| k.public_key(&env.signer));
                let verdict = match key {
                    None => Err(SignedError::UnknownSigner(env.signer.clone())),
                    Some(k) => env.verify(msg.topic, &k),
                };
                match verdict {
                    Ok(()) => Ok(Some((env.signer, env.payload))),
                    Err(e) => {
                        audit(&env.signer, &e);
                        Err(refuse(
                            Reason::BadSignature,
                            Some(&env.signer),
                            format!("payload on {} refused: {e}", msg.topic),
                        ))
                    }
                }
            }
        }
    }

    /// The message-level checks ([`crate::guard`]) of a mapped payload of mapping `index`
    /// received on `msg.topic` (`http:<mapping>` for HTTP): `Err` (counted as `replayed`) if it
    /// must be refused. What was noticed is an `integrity` event on `events` ([`guard_event`];
    /// a flood of refusals is one event per mapping per [`REFUSAL_EVENT_EVERY`]).
    pub fn admit(
        &self,
        index: usize,
        msg: Received<'_>,
        mapped: &Mapped,
        now: Timestamp,
        events: &EventBus,
    ) -> Result<(), Refused> {
        let Some(m) = self.mappings.get(index) else {
            return Ok(());
        };
        // Only a device's own clock makes a replay recognisable.
        let ts = match m.cfg.timestamp {
            Some(_) => mapped.readings.first().map(|r| r.ts),
            None => None,
        };
        let digest = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            msg.payload.hash(&mut h);
            h.finish()
        };
        let mut noticed = Vec::new();
        let verdict = {
            let mut guard = self.guard.lock();
            let v = guard.check(index, msg.topic, ts, digest, msg.from, &mut noticed);
            if v.is_ok() {
                guard.count(index, msg.topic, now, &mut noticed);
            }
            v
        };
        for f in &noticed {
            events.publish(guard_event(f, now));
        }
        match verdict {
            Ok(()) => Ok(()),
            Err(f) => {
                m.stats.count(Reason::Replayed, &f.message(), now);
                let report = m.event_gate(now);
                if report {
                    events.publish(guard_event(&f, now));
                }
                Err(Refused { finding: f, report })
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.mappings.is_empty()
    }

    pub fn mappings(&self) -> impl Iterator<Item = &JsonMapping> {
        self.mappings.iter().map(|m| &m.cfg)
    }

    /// The index of the mapping called `name`.
    pub fn index(&self, name: &str) -> Option<usize> {
        self.mappings.iter().position(|m| m.cfg.name == name)
    }

    pub fn mapping(&self, index: usize) -> Option<&JsonMapping> {
        self.mappings.get(index).map(|m| &m.cfg)
    }

    pub fn stats(&self, index: usize) -> Option<Arc<IngestStats>> {
        self.mappings.get(index).map(|m| m.stats.clone())
    }

    /// The metadata of every tag known at load time (fields with a fixed path), to register in
    /// the namespace before the first payload. Templated paths (`{n}`) are registered at first
    /// sight by [`JsonIngest::resolve`].
    pub fn tags(&self) -> Vec<TagMeta> {
        self.mappings
            .iter()
            .flat_map(|m| fixed_tags(&m.cfg))
            .collect()
    }

    /// Registers [`JsonIngest::tags`] in `namespace` (remembering their ids); returns the
    /// refusals (a path owned by another source), which are also counted as `tag_refused`.
    pub fn register_tags(&self, namespace: &LiveNamespace) -> Vec<RegisterError> {
        let mut errors = Vec::new();
        for m in &self.mappings {
            for f in &m.cfg.fields {
                if let PathTemplate::Fixed(p) = &f.path {
                    let r = namespace.register(meta(&m.cfg, f, p.clone()));
                    if let Err(e) = &r {
                        m.stats
                            .count(Reason::TagRefused, &e.to_string(), Timestamp::now());
                        errors.push(e.clone());
                    }
                    m.ids.lock().insert(p.clone(), r.ok());
                }
            }
        }
        errors
    }

    /// Maps a payload received on MQTT `topic` with every mapping whose filter matches it.
    pub fn handle_topic(
        &self,
        topic: &str,
        payload: &[u8],
        now: Timestamp,
    ) -> Vec<(usize, Result<Mapped, IngestError>)> {
        let mut out = Vec::new();
        for (i, m) in self.mappings.iter().enumerate() {
            let Some(filter) = &m.cfg.topic else { continue };
            if let Some(levels) = captures(filter, topic) {
                out.push((i, self.handle_mapping(i, &levels, payload, now)));
            }
        }
        out
    }

    /// Maps a payload for mapping `index`; `levels` are the topic's `+` levels (empty for HTTP).
    /// Counts the payload and every rejection in the mapping's [`IngestStats`].
    pub fn handle_mapping(
        &self,
        index: usize,
        levels: &[&str],
        payload: &[u8],
        now: Timestamp,
    ) -> Result<Mapped, IngestError> {
        let Some(m) = self.mappings.get(index) else {
            return Ok(Mapped::default());
        };
        m.stats.messages.fetch_add(1, Ordering::Relaxed);
        let r = map_payload(&m.cfg, levels, payload, now);
        match &r {
            Err(e) => m.stats.count(e.reason, &e.message, now),
            Ok(mapped) => {
                for f in &mapped.rejected {
                    m.stats.count(f.reason, &f.message, now);
                }
            }
        }
        r
    }

    /// Turns readings of mapping `index` into samples: tag ids from the cache, or registered in
    /// `namespace` at first sight (templated paths; the rule: source `ingest:<name>`, metadata
    /// from the field, at most `max_tags` per mapping, a path of another source refused once
    /// and remembered). Readings left out are added to `mapped.rejected` and counted.
    pub fn resolve(
        &self,
        index: usize,
        namespace: &LiveNamespace,
        mapped: &mut Mapped,
        now: Timestamp,
    ) -> Vec<Sample> {
        let Some(m) = self.mappings.get(index) else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(mapped.readings.len());
        let mut ids = m.ids.lock();
        for r in &mapped.readings {
            let id = match ids.get(&r.path) {
                Some(id) => *id,
                None => {
                    let Some(f) = m.cfg.fields.get(r.field) else {
                        continue;
                    };
                    if !f.path.is_fixed()
                        && m.stats.tags_born.load(Ordering::Relaxed) >= m.cfg.max_tags as u64
                    {
                        let message = format!(
                            "tag {} not created: mapping {:?} has created its max_tags = {} tags already",
                            r.path, m.cfg.name, m.cfg.max_tags
                        );
                        m.stats.count(Reason::TagLimit, &message, now);
                        mapped.rejected.push(FieldError {
                            pointer: f.pointer.clone(),
                            reason: Reason::TagLimit,
                            message,
                        });
                        continue;
                    }
                    let before = namespace.len();
                    let id = match namespace.register(meta(&m.cfg, f, r.path.clone())) {
                        Ok(id) => {
                            if !f.path.is_fixed() && namespace.len() > before {
                                m.stats.tags_born.fetch_add(1, Ordering::Relaxed);
                            }
                            Some(id)
                        }
                        Err(e) => {
                            tracing::error!(mapping = %m.cfg.name, error = %e, "ingest: tag not recorded");
                            None
                        }
                    };
                    ids.insert(r.path.clone(), id);
                    id
                }
            };
            match id {
                Some(tag) => out.push(Sample {
                    tag,
                    value: r.value.clone(),
                    quality: r.quality,
                    source_ts: r.ts,
                    server_ts: now,
                }),
                None => {
                    let message = format!(
                        "tag {} belongs to another source; mapping {:?} may not feed it",
                        r.path, m.cfg.name
                    );
                    m.stats.count(Reason::TagRefused, &message, now);
                    mapped.rejected.push(FieldError {
                        pointer: m
                            .cfg
                            .fields
                            .get(r.field)
                            .map(|f| f.pointer.clone())
                            .unwrap_or_default(),
                        reason: Reason::TagRefused,
                        message,
                    });
                }
            }
        }
        drop(ids);
        m.stats
            .samples
            .fetch_add(out.len() as u64, Ordering::Relaxed);
        out
    }

    /// Prometheus text (format 0.0.4) of every mapping's counters.
    pub fn render_metrics(&self) -> String {
        let mut s = String::new();
        if self.mappings.is_empty() {
            return s;
        }
        let each = |s: &mut String, name: &str, help: &str, f: &dyn Fn(&IngestStats) -> u64| {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} counter");
            for m in &self.mappings {
                let _ = writeln!(s, "{name}{{mapping=\"{}\"}} {}", m.cfg.name, f(&m.stats));
            }
        };
        each(
            &mut s,
            "ironplant_ingest_messages_total",
            "JSON payloads received per ingest mapping.",
            &|st| st.messages.load(Ordering::Relaxed),
        );
        each(
            &mut s,
            "ironplant_ingest_samples_total",
            "Samples put on the tag bus per ingest mapping.",
            &|st| st.samples.load(Ordering::Relaxed),
        );
        each(
            &mut s,
            "ironplant_ingest_tags_born_total",
            "Tags created at run time by templated paths per ingest mapping.",
            &|st| st.tags_born.load(Ordering::Relaxed),
        );
        let _ = writeln!(s, "# HELP ironplant_ingest_rejected_total Payloads rejected whole, or fields left out, per ingest mapping and reason.\n# TYPE ironplant_ingest_rejected_total counter");
        for m in &self.mappings {
            for r in Reason::ALL {
                let _ = writeln!(
                    s,
                    "ironplant_ingest_rejected_total{{mapping=\"{}\",reason=\"{}\"}} {}",
                    m.cfg.name,
                    r.as_str(),
                    m.stats.rejected(r)
                );
            }
        }
        s
    }
}

/// The tags of `m`'s fields with a fixed path (templated ones are born at first sight).
pub(crate) fn fixed_tags(m: &JsonMapping) -> Vec<TagMeta> {
    m.fields
        .iter()
        .filter_map(|f| match &f.path {
            PathTemplate::Fixed(p) => Some(meta(m, f, p.clone())),
            PathTemplate::Template(_) => None,
        })
        .collect()
}

fn meta(m: &JsonMapping, f: &FieldMapping, path: TagPath) -> TagMeta {
    TagMeta {
        id: TagId(0),
        path,
        value_type: f.value_type,
        unit: f.unit.clone(),
        description: if f.description.is_empty() {
            format!("{} of ingest mapping {:?}", f.pointer, m.name)
        } else {
            f.description.clone()
        },
        range: f.range,
        writable: false,
        device: Some(m.source()),
    }
}

/// The `+` levels of `topic` if `filter` matches it (MQTT rules: `#` matches the parent and
/// everything below; wildcards at the first level never match `$` topics).
pub fn captures<'t>(filter: &str, topic: &'t str) -> Option<Vec<&'t str>> {
    if topic.starts_with('$') && filter.starts_with(['+', '#']) {
        return None;
    }
    let mut out = Vec::new();
    let mut t = topic.split('/');
    for f in filter.split('/') {
        match f {
            "#" => return Some(out),
            "+" => out.push(t.next()?),
            lit => {
                if t.next()? != lit {
                    return None;
                }
            }
        }
    }
    t.next().is_none().then_some(out)
}

/// The pure mapping of one payload.
pub fn map_payload(
    m: &JsonMapping,
    levels: &[&str],
    payload: &[u8],
    now: Timestamp,
) -> Result<Mapped, IngestError> {
    let fail = |reason, message: String| Err(IngestError { reason, message });
    if payload.len() > m.max_payload {
        return fail(
            Reason::TooLarge,
            format!(
                "payload of {} bytes is larger than max_payload = {} bytes of mapping {:?}",
                payload.len(),
                m.max_payload,
                m.name
            ),
        );
    }
    let doc: Json = match serde_json::from_slice(payload) {
        Ok(d) => d,
        Err(e) => {
            return fail(
                Reason::NotJson,
                format!(
                    "payload is not JSON ({e}); it starts with {:?}",
                    String::from_utf8_lossy(&payload[..payload.len().min(40)])
                ),
            )
        }
    };
    let ts = match &m.timestamp {
        None => now,
        Some(t) => {
            let ts = match doc.pointer(&t.pointer).filter(|v| !v.is_null()) {
                None => {
                    return fail(
                        Reason::BadTimestamp,
                        format!("payload has no timestamp at {}", t.pointer),
                    )
                }
                Some(v) => {
                    parse_time(v, t.format, t.assume_offset).map_err(|message| IngestError {
                        reason: Reason::BadTimestamp,
                        message: format!("timestamp at {}: {message}", t.pointer),
                    })?
                }
            };
            if ts.0 < MIN_TS_US {
                return fail(
                    Reason::AbsurdTimestamp,
                    format!(
                        "timestamp {ts} at {} is before 2000: the device's clock is not set",
                        t.pointer
                    ),
                );
            }
            if ts.0 > now.0.saturating_add(MAX_FUTURE_US) {
                return fail(
                    Reason::AbsurdTimestamp,
                    format!(
                        "timestamp {ts} at {} is {} min ahead of the server's clock ({now}); check the device's clock and assume_offset",
                        t.pointer,
                        (ts.0 - now.0) / 60_000_000
                    ),
                );
            }
            ts
        }
    };
    let mut out = Mapped::default();
    for (i, f) in m.fields.iter().enumerate() {
        let reject = |reason, message: String| FieldError {
            pointer: f.pointer.clone(),
            reason,
            message,
        };
        let path = match f.path.expand(levels) {
            Ok(p) => p,
            Err(e) => {
                out.rejected.push(reject(
                    Reason::BadTopicLevel,
                    format!("field {}: {e}", f.pointer),
                ));
                continue;
            }
        };
        let raw = match doc.pointer(&f.pointer) {
            None => {
                out.rejected.push(reject(
                    Reason::MissingField,
                    format!("payload has no value at {}", f.pointer),
                ));
                continue;
            }
            Some(Json::Null) => {
                out.rejected.push(reject(
                    Reason::MissingField,
                    format!("value at {} is null", f.pointer),
                ));
                continue;
            }
            Some(v) => v,
        };
        let value = match convert(raw, f) {
            Ok(v) => v,
            Err(e) => {
                out.rejected.push(reject(
                    Reason::WrongType,
                    format!("value at {}: {e}", f.pointer),
                ));
                continue;
            }
        };
        let quality = match (f.range, value.as_f64()) {
            (Some((lo, hi)), Some(x))
                if f.value_type != ValueType::Bool && !(lo..=hi).contains(&x) =>
            {
                Quality::uncertain(QualityReason::OutOfRange)
            }
            _ => Quality::GOOD,
        };
        out.readings.push(Reading {
            field: i,
            path,
            value,
            quality,
            ts,
        });
    }
    Ok(out)
}

fn describe(v: &Json) -> String {
    let text = v.to_string();
    let short: String = text.chars().take(40).collect();
    if short.len() < text.len() {
        format!("{short}…")
    } else {
        short
    }
}

/// A JSON value as the field's type. Cheap devices are lenient writers: numbers may come as
/// strings ("23.5"), switches as "ON"/"OFF" (Tasmota) or 0/1.
fn convert(v: &Json, f: &FieldMapping) -> Result<Value, String> {
    let number = |v: &Json| -> Option<f64> {
        match v {
            Json::Number(n) => n.as_f64(),
            Json::String(s) => s.trim().parse::<f64>().ok().filter(|x| x.is_finite()),
            _ => None,
        }
    };
    match f.value_type {
        ValueType::Float => {
            let x = number(v).ok_or_else(|| format!("expected a number, got {}", describe(v)))?;
            let y = x * f.scale + f.offset;
            if !y.is_finite() {
                return Err(format!("{x} scaled is not a finite number"));
            }
            Ok(Value::Float(y))
        }
        ValueType::Int => {
            if let Json::Number(n) = v {
                if let Some(i) = n.as_i64() {
                    return Ok(Value::Int(i));
                }
                if let Some(u) = n.as_u64() {
                    return Ok(Value::from_u64(u));
                }
            }
            if let Json::String(s) = v {
                if let Ok(i) = s.trim().parse::<i64>() {
                    return Ok(Value::Int(i));
                }
            }
            match number(v) {
                Some(x) if x.fract() == 0.0 && x.abs() < 9.0e15 => Ok(Value::Int(x as i64)),
                Some(x) => Err(format!("expected an integer, got {x}")),
                None => Err(format!("expected an integer, got {}", describe(v))),
            }
        }
        ValueType::Bool => match v {
            Json::Bool(b) => Ok(Value::Bool(*b)),
            Json::Number(n) if n.as_u64() == Some(0) => Ok(Value::Bool(false)),
            Json::Number(n) if n.as_u64() == Some(1) => Ok(Value::Bool(true)),
            Json::String(s) => match s.trim().to_ascii_lowercase().as_str() {
                "on" | "true" | "1" => Ok(Value::Bool(true)),
                "off" | "false" | "0" => Ok(Value::Bool(false)),
                _ => Err(format!(
                    "expected a boolean (true/false, 1/0, \"ON\"/\"OFF\"), got {}",
                    describe(v)
                )),
            },
            _ => Err(format!(
                "expected a boolean (true/false, 1/0, \"ON\"/\"OFF\"), got {}",
                describe(v)
            )),
        },
        ValueType::String => match v {
            Json::String(s) => Ok(Value::String(s.as_str().into())),
            Json::Number(_) | Json::Bool(_) => Ok(Value::String(v.to_string().into())),
            _ => Err(format!("expected text, got {}", describe(v))),
        },
        // The config accepts only scalar types for a JSON field (see `config.rs`).
        ValueType::Array(_) | ValueType::DataSet => Err(format!(
            "a field of type {} cannot be mapped from JSON",
            f.value_type.as_str()
        )),
    }
}

fn parse_time(
    v: &Json,
    format: TimeFormat,
    assume_offset: Option<i32>,
) -> Result<Timestamp, String> {
    match format {
        TimeFormat::Rfc3339 => {
            let Json::String(s) = v else {
                return Err(format!("expected RFC 3339 text, got {}", describe(v)));
            };
            let dt = crate::time::parse_rfc3339(s)
                .ok_or_else(|| format!("{s:?} is not an RFC 3339 date-time"))?;
            dt.resolve(assume_offset).ok_or_else(|| {
                format!("{s:?} has no UTC offset; set assume_offset = \"+01:00\" (the device's) in the mapping's timestamp")
            })
        }
        TimeFormat::UnixSeconds | TimeFormat::UnixMillis => {
            let x = match v {
                Json::Number(n) => n.as_f64(),
                Json::String(s) => s.trim().parse::<f64>().ok(),
                _ => None,
            }
            .filter(|x| x.is_finite())
            .ok_or_else(|| format!("expected a Unix time (a number), got {}", describe(v)))?;
            let us = if format == TimeFormat::UnixSeconds {
                x * 1e6
            } else {
                x * 1e3
            };
            if us.abs() > 9.0e18 {
                return Err(format!("{x} is out of range"));
            }
            Ok(Timestamp(us.round() as i64))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ironplant_core::Namespace;

    const NOW: Timestamp = Timestamp(1_796_637_600_000_000); // 2026-12-07T10:00:00Z

    pub const CONFIG: &str = r#"
[[ingest.json]]
name = "shelly"
topic = "shellies/+/status/switch:0"

[[ingest.json.field]]
pointer = "/apower"
path = "acme/lyon/office/{1}/power"
unit = "W"
min = 0.0
max = 3680.0

[[ingest.json.field]]
pointer = "/voltage"
path = "acme/lyon/office/{1}/voltage"
unit = "V"

[[ingest.json.field]]
pointer = "/aenergy/total"
path = "acme/lyon/office/{1}/energy"
unit = "kWh"
scale = 0.001

[[ingest.json]]
name = "tasmota"
topic = "tele/tasmota_kitchen/SENSOR"
http = true
timestamp = { pointer = "/Time", format = "rfc3339", assume_offset = "+01:00" }

[[ingest.json.field]]
pointer = "/ENERGY/Power"
path = "acme/lyon/kitchen/fridge/power"
type = "int"
unit = "W"

[[ingest.json.field]]
pointer = "/ENERGY/Total"
path = "acme/lyon/kitchen/fridge/energy"
unit = "kWh"

[[ingest.json.field]]
pointer = "/POWER"
path = "acme/lyon/kitchen/fridge/on"
type = "bool"

[[ingest.json]]
name = "gateway"
http = true
max_payload = 200
timestamp = { pointer = "/ts", format = "unix_ms" }

[[ingest.json.field]]
pointer = "/d/temp"
path = "acme/lyon/lab/gw/temp"
unit = "°C"

[[ingest.json.field]]
pointer = "/d/fw"
path = "acme/lyon/lab/gw/firmware"
type = "string"
"#;

    fn ingest() -> JsonIngest {
        let (s, errors) = IngestSettings::from_source(CONFIG);
        assert!(errors.is_empty(), "{errors:?}");
        JsonIngest::new(s)
    }

    fn only(r: Vec<(usize, Result<Mapped, IngestError>)>) -> Result<Mapped, IngestError> {
        assert_eq!(r.len(), 1, "{r:?}");
        r.into_iter().next().map(|x| x.1).expect("one")
    }

    #[test]
    fn a_shelly_plug_status_maps_with_the_topic_level_in_the_path() {
        let ing = ingest();
        let m = only(ing.handle_topic(
            "shellies/plug-7/status/switch:0",
            br#"{"id":0,"source":"timer","output":true,"apower":12.3,"voltage":230.1,"current":0.07,"aenergy":{"total":1234.5,"by_minute":[0,0,0]},"temperature":{"tC":41.2}}"#,
            NOW,
        ))
        .expect("maps");
        assert!(m.rejected.is_empty(), "{:?}", m.rejected);
        let got: Vec<(&str, &Value, Quality, Timestamp)> = m
            .readings
            .iter()
            .map(|r| (r.path.as_str(), &r.value, r.quality, r.ts))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "acme/lyon/office/plug-7/power",
                    &Value::Float(12.3),
                    Quality::GOOD,
                    NOW
                ),
                (
                    "acme/lyon/office/plug-7/voltage",
                    &Value::Float(230.1),
                    Quality::GOOD,
                    NOW
                ),
                (
                    "acme/lyon/office/plug-7/energy",
                    &Value::Float(1.2345),
                    Quality::GOOD,
                    NOW
                ),
            ]
        );
        assert!(ing
            .handle_topic("shellies/plug-7/status/switch:1", b"{}", NOW)
            .is_empty());
        assert!(ing
            .handle_topic("shellies/plug-7/status", b"{}", NOW)
            .is_empty());
    }

    #[test]
    fn a_tasmota_sensor_payload_keeps_the_device_time() {
        let ing = ingest();
        let payload = br#"{"Time":"2026-12-07T10:55:00","ENERGY":{"TotalStartTime":"2026-01-03T11:00:00","Total":153.442,"Yesterday":1.201,"Today":0.774,"Power":42,"ApparentPower":58,"ReactivePower":40,"Factor":0.72,"Voltage":231,"Current":0.252},"POWER":"ON"}"#;
        let m = only(ing.handle_topic("tele/tasmota_kitchen/SENSOR", payload, NOW)).expect("maps");
        let device_time = Timestamp(NOW.0 - 5 * 60 * 1_000_000); // 10:55 at +01:00
        assert_eq!(
            m.readings
                .iter()
                .map(|r| (r.path.as_str(), r.value.clone(), r.ts))
                .collect::<Vec<_>>(),
            vec![
                (
                    "acme/lyon/kitchen/fridge/power",
                    Value::Int(42),
                    device_time
                ),
                (
                    "acme/lyon/kitchen/fridge/energy",
                    Value::Float(153.442),
                    device_time
                ),
                (
                    "acme/lyon/kitchen/fridge/on",
                    Value::Bool(true),
                    device_time
                ),
            ]
        );
        // The same mapping over HTTP (no topic levels).
        let i = ing.index("tasmota").expect("mapping");
        let again = ing.handle_mapping(i, &[], payload, NOW).expect("maps");
        assert_eq!(again.readings, m.readings);
        assert_eq!(
            ing.stats(i)
                .expect("stats")
                .messages
                .load(Ordering::Relaxed),
            2
        );
    }

    #[test]
    fn every_error_class_is_counted_and_never_panics() {
        let ing = ingest();
        let gw = ing.index("gateway").expect("gateway");
        let tas = ing.index("tasmota").expect("tasmota");
        let st = ing.stats(gw).expect("stats");
        let cases: [(usize, &[u8], Reason); 9] = [
            (gw, b"not json at all", Reason::NotJson),
            (
                gw,
                b"{\"ts\": 1796637600000, \"d\": {\"temp\": 21.5",
                Reason::NotJson,
            ),
            (gw, &[0xff, 0xfe, 0x00], Reason::NotJson),
            (gw, &[b' '; 201], Reason::TooLarge),
            (gw, br#"{"d":{"temp":21.5}}"#, Reason::BadTimestamp),
            (
                gw,
                br#"{"ts":"soon","d":{"temp":21.5}}"#,
                Reason::BadTimestamp,
            ),
            (
                gw,
                br#"{"ts":0,"d":{"temp":21.5}}"#,
                Reason::AbsurdTimestamp,
            ),
            (
                gw,
                br#"{"ts":1796641200000,"d":{"temp":21.5}}"#,
                Reason::AbsurdTimestamp,
            ),
            (
                tas,
                br#"{"Time":"2026-12-07T10:00:00Z junk","ENERGY":{}}"#,
                Reason::BadTimestamp,
            ),
        ];
        for (i, payload, reason) in cases {
            let e = ing
                .handle_mapping(i, &[], payload, NOW)
                .expect_err("rejected");
            assert_eq!(e.reason, reason, "{e}");
        }
        assert_eq!(st.rejected(Reason::NotJson), 3);
        assert_eq!(st.rejected(Reason::TooLarge), 1);
        assert_eq!(st.rejected(Reason::BadTimestamp), 2);
        assert_eq!(st.rejected(Reason::AbsurdTimestamp), 2);
        let last = st.last_error().expect("kept");
        assert!(last.message.contains("60 min ahead"), "{}", last.message);
        // Local time without an offset and none assumed is refused with the fix.
        let no_offset = crate::config::TimestampField {
            pointer: "/t".into(),
            format: TimeFormat::Rfc3339,
            assume_offset: None,
        };
        let e = parse_time(
            &Json::String("2026-12-07T10:00:00".into()),
            no_offset.format,
            None,
        )
        .expect_err("no offset");
        assert!(e.contains("assume_offset"), "{e}");

        // Field-level: missing, null and wrong types leave the other fields mapped.
        let m = ing
            .handle_mapping(
                gw,
                &[],
                br#"{"ts":1796637600000,"d":{"temp":{"v":1},"fw":"1.4.2"}}"#,
                NOW,
            )
            .expect("payload accepted");
        assert_eq!(m.readings.len(), 1);
        assert_eq!(m.readings[0].value, Value::String("1.4.2".into()));
        assert_eq!(m.rejected[0].reason, Reason::WrongType);
        let m = ing
            .handle_mapping(gw, &[], br#"{"ts":1796637600000,"d":{"temp":null}}"#, NOW)
            .expect("payload accepted");
        assert!(m.readings.is_empty());
        assert_eq!(
            m.rejected.iter().map(|r| r.reason).collect::<Vec<_>>(),
            vec![Reason::MissingField, Reason::MissingField]
        );
        assert_eq!(st.rejected(Reason::WrongType), 1);
        assert_eq!(st.rejected(Reason::MissingField), 2);
        let m = ing
            .handle_mapping(tas, &[], br#"{"Time":"2026-12-07T10:00:00","ENERGY":{"Power":12.5,"Total":"n/a"},"POWER":"maybe"}"#, NOW)
            .expect("payload accepted");
        assert!(m.readings.is_empty());
        assert!(
            m.rejected.iter().all(|r| r.reason == Reason::WrongType),
            "{:?}",
            m.rejected
        );
        assert!(
            m.rejected[0]
                .message
                .contains("expected an integer, got 12.5"),
            "{:?}",
            m.rejected
        );
        let metrics = ing.render_metrics();
        assert!(
            metrics.contains(
                "ironplant_ingest_rejected_total{mapping=\"gateway\",reason=\"not_json\"} 3"
            ),
            "{metrics}"
        );
        assert!(
            metrics.contains("ironplant_ingest_messages_total{mapping=\"tasmota\"} 2"),
            "{metrics}"
        );
    }

    #[test]
    fn out_of_range_is_uncertain_and_numbers_in_strings_are_read() {
        let ing = ingest();
        let m = only(ing.handle_topic(
            "shellies/p1/status/switch:0",
            br#"{"apower":"4000.5","voltage":-1,"aenergy":{"total":10}}"#,
            NOW,
        ))
        .expect("maps");
        assert_eq!(
            m.readings[0].quality,
            Quality::uncertain(QualityReason::OutOfRange)
        );
        assert_eq!(m.readings[0].value, Value::Float(4000.5));
        assert_eq!(m.readings[1].quality, Quality::GOOD, "no range on voltage");
        assert_eq!(m.readings[2].value, Value::Float(0.01));
    }

    #[test]
    fn registration_fixed_up_front_templated_at_first_sight_within_limits() {
        let src = format!("{CONFIG}\n[[ingest.json]]\nname = \"limited\"\ntopic = \"lab/+/t\"\nmax_tags = 2\n[[ingest.json.field]]\npointer = \"/t\"\npath = \"acme/lyon/lab/{{1}}/t\"\n");
        let (s, errors) = IngestSettings::from_source(&src);
        assert!(errors.is_empty(), "{errors:?}");
        let ing = JsonIngest::new(s);
        let mut ns = Namespace::new();
        // Another source owns the Tasmota fridge's power tag.
        ns.add_tag(TagMeta {
            id: TagId(0),
            path: TagPath::parse("acme/lyon/kitchen/fridge/power").expect("path"),
            value_type: ValueType::Float,
            unit: None,
            description: String::new(),
            range: None,
            writable: false,
            device: Some("plc1".into()),
        });
        let ns = LiveNamespace::new(ns);
        let fixed = ing.tags();
        assert_eq!(fixed.len(), 5, "the fixed fields of tasmota and gateway");
        let refused = ing.register_tags(&ns);
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert_eq!(ns.len(), 5);
        let meta = ns.lookup("acme/lyon/lab/gw/temp").expect("registered");
        assert_eq!(
            (meta.unit.as_deref(), meta.device.as_deref()),
            (Some("°C"), Some("ingest:gateway"))
        );

        let lim = ing.index("limited").expect("limited");
        for (dev, expect) in [
            ("a", 1usize),
            ("b", 1),
            ("a", 1),
            ("c", 0),
            ("bad level!", 0),
        ] {
            let now = NOW;
            let mut r = only(ing.handle_topic(&format!("lab/{dev}/t"), br#"{"t":1.5}"#, now))
                .expect("payload ok");
            let samples = ing.resolve(lim, &ns, &mut r, now);
            assert_eq!(samples.len(), expect, "{dev}: {:?}", r.rejected);
        }
        let st = ing.stats(lim).expect("stats");
        assert_eq!(st.tags_born.load(Ordering::Relaxed), 2);
        assert_eq!(st.rejected(Reason::TagLimit), 1);
        assert_eq!(st.rejected(Reason::BadTopicLevel), 1);
        assert_eq!(ns.lookup("acme/lyon/lab/a/t").map(|m| m.id), Some(TagId(5)));

        // The refused fixed tag stays refused: counted, never fed.
        let tas = ing.index("tasmota").expect("tasmota");
        let mut r = ing
            .handle_mapping(
                tas,
                &[],
                br#"{"Time":"2026-12-07T10:00:00","ENERGY":{"Power":5,"Total":1.0},"POWER":"OFF"}"#,
                NOW,
            )
            .expect("maps");
        let samples = ing.resolve(tas, &ns, &mut r, NOW);
        assert_eq!(samples.len(), 2);
        assert_eq!(r.rejected.len(), 1);
        assert_eq!(r.rejected[0].reason, Reason::TagRefused);
        assert!(samples
            .iter()
            .all(|s| s.server_ts == NOW && s.source_ts.0 == NOW.0 - 3_600_000_000));
    }

    /// Every prefix and many byte-flipped copies of the example payloads: never a panic, and
    /// each either rejected whole or mapped (the fuzz target `ingest_json` does this at scale).
    #[test]
    fn truncated_and_corrupted_payloads_never_panic() {
        let ing = ingest();
        let payloads: [&[u8]; 3] = [
            br#"{"id":0,"apower":12.3,"voltage":230.1,"aenergy":{"total":1234.5}}"#,
            br#"{"Time":"2026-12-07T10:55:00","ENERGY":{"Total":153.442,"Power":42},"POWER":"ON"}"#,
            br#"{"ts":1796637600000,"d":{"temp":21.5,"fw":"1.4.2"}}"#,
        ];
        let topics = ["shellies/p/status/switch:0", "tele/tasmota_kitchen/SENSOR"];
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut outcomes = 0;
        for p in payloads {
            let mut inputs: Vec<Vec<u8>> = (0..=p.len()).map(|n| p[..n].to_vec()).collect();
            for _ in 0..500 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let mut v = p.to_vec();
                let i = (seed as usize) % v.len();
                v[i] = (seed >> 32) as u8;
                inputs.push(v);
            }
            for input in &inputs {
                for t in topics {
                    outcomes += ing.handle_topic(t, input, NOW).len();
                }
                outcomes += usize::from(ing.handle_mapping(2, &[], input, NOW).is_ok());
            }
        }
        assert!(outcomes > 3000, "{outcomes}");
    }

    #[test]
    fn topic_captures_follow_mqtt_rules() {
        assert_eq!(captures("a/+/c", "a/b/c"), Some(vec!["b"]));
        assert_eq!(captures("a/+/c", "a/b/d"), None);
        assert_eq!(captures("a/#", "a"), Some(vec![]));
        assert_eq!(captures("+/+/#", "x/y/z/w"), Some(vec!["x", "y"]));
        assert_eq!(captures("a/+", "a/b/c"), None);
        assert_eq!(captures("a/+", "a/"), Some(vec![""]));
        assert_eq!(captures("#", "$SYS/x"), None);
    }
}
