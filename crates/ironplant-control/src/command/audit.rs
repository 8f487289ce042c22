//! The audit record of a command: who, what, old and new value, why, by which path, and what
//! came of it. One record per step (selected, pending, accepted or refused, then verified,
//! failed or a device error), all carrying the command's id, so the audit log reads as a
//! story. Serialisable (serde; values in the one JSON form of `core::wire`), and convertible
//! to an `Event` of kind `command` for the event bus.

use ironplant_core::wire::{parse_ts, ValueIn, ValueJson};
use ironplant_core::{Event, EventKind, Severity, TagPath, Timestamp, Value};
use serde::{Deserialize, Serialize};

use super::types::{CommandId, CommandRequest, Requester};

/// One step of one command (or an unauthorised change found on a tag).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// The command's id (the same across its steps).
    pub command: u64,
    /// When this step happened.
    #[serde(with = "ts_text")]
    pub ts: Timestamp,
    /// When the command was made.
    #[serde(with = "ts_text")]
    pub requested_at: Timestamp,
    /// `user`, `rule`, `platform` (or `unknown` for an unauthorised change).
    pub actor_kind: String,
    /// The user name, `rule:<name>`, `platform` or `unknown`.
    pub actor: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// The second person of a two-person command (who confirmed or rejected it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirmer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirmer_role: Option<String>,
    pub tag: String,
    /// The tag's value when the command was made (null when unknown).
    #[serde(with = "value_json")]
    pub old_value: Value,
    /// The commanded value (null for a select without value).
    #[serde(with = "value_json")]
    pub new_value: Value,
    pub reason: String,
    /// `rest`, `mqtt`, `rule`, `hmi`, `platform`.
    pub origin: String,
    /// Flattened: `"result": "refused", "code": …, "message": …`.
    #[serde(flatten)]
    pub result: AuditResult,
}

/// What came of the step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum AuditResult {
    /// Select-before-operate: the session holds the tag until `expires_at`.
    Selected {
        #[serde(with = "ts_text")]
        expires_at: Timestamp,
    },
    SelectCancelled,
    /// Two-person rule: waiting for a second person.
    Pending {
        needs_role: String,
        #[serde(with = "ts_text")]
        expires_at: Timestamp,
    },
    /// Passed every check; handed to the device.
    Accepted,
    Refused {
        code: String,
        message: String,
    },
    /// The device shows the commanded value.
    Verified {
        #[serde(with = "value_json")]
        seen: Value,
        after_ms: u64,
    },
    /// No Good sample showed the commanded value before the deadline (or the device echoed
    /// another value).
    Failed {
        #[serde(with = "value_json")]
        last_seen: Value,
        message: String,
    },
    /// The write did not reach the device or the device refused it.
    DeviceError {
        message: String,
    },
    /// A newer command on the same tag took over before this one was verified.
    Superseded {
        by: u64,
    },
    /// A Good sample showed a value no authorised command explains (`old_value` is the
    /// expected value, `new_value` the one seen).
    UnauthorisedChange {
        message: String,
    },
}

impl AuditResult {
    /// The event code: `selected`, `refused`, `verified`...
    pub fn code(&self) -> &'static str {
        match self {
            AuditResult::Selected { .. } => "selected",
            AuditResult::SelectCancelled => "select_cancelled",
            AuditResult::Pending { .. } => "pending",
            AuditResult::Accepted => "accepted",
            AuditResult::Refused { .. } => "refused",
            AuditResult::Verified { .. } => "verified",
            AuditResult::Failed { .. } => "failed",
            AuditResult::DeviceError { .. } => "device_error",
            AuditResult::Superseded { .. } => "superseded",
            AuditResult::UnauthorisedChange { .. } => "unauthorised_change",
        }
    }

    fn severity(&self) -> Severity {
        match self {
            AuditResult::Refused { .. } => Severity::Warning,
            AuditResult::Failed { .. } | AuditResult::DeviceError { .. } => Severity::Error,
            AuditResult::UnauthorisedChange { .. } => Severity::Critical,
            _ => Severity::Info,
        }
    }
}

impl AuditRecord {
    pub(crate) fn from_request(
        id: CommandId,
        req: &CommandRequest,
        now: Timestamp,
        result: AuditResult,
    ) -> AuditRecord {
        let old_value = req
            .info
            .as_ref()
            .and_then(|i| i.current.as_ref())
            .map_or(Value::Null, |(v, _)| v.clone());
        AuditRecord {
            command: id.0,
            ts: now,
            requested_at: now,
            actor_kind: req.requester.actor.kind().to_owned(),
            actor: req.requester.actor.identity(),
            role: req.requester.actor.role().map(|r| r.as_str().to_owned()),
            session: req.requester.session.clone(),
            confirmer: None,
            confirmer_role: None,
            tag: req.tag.as_str().to_owned(),
            old_value,
            new_value: req.value.clone(),
            reason: req.reason.clone(),
            origin: req.origin.as_str().to_owned(),
            result,
        }
    }

    /// The same command at a later step.
    pub(crate) fn step(&self, now: Timestamp, result: AuditResult) -> AuditRecord {
        AuditRecord {
            ts: now,
            result,
            ..self.clone()
        }
    }

    pub(crate) fn with_confirmer(mut self, by: &Requester) -> AuditRecord {
        self.confirmer = Some(by.actor.identity());
        self.confirmer_role = by.actor.role().map(|r| r.as_str().to_owned());
        self
    }

    /// One line for people, e.g. `alice (operator) wrote 320 to …/speed_sp (was 300): accepted`.
    pub fn message(&self) -> String {
        let who = match &self.role {
            Some(r) => format!("{} ({r})", self.actor),
            None => self.actor.clone(),
        };
        let confirmer = self
            .confirmer
            .as_ref()
            .map(|c| format!(", second person {c}"))
            .unwrap_or_default();
        let what = format!(
            "{who} commanded {} = {} (was {}){confirmer}",
            self.tag, self.new_value, self.old_value
        );
        match &self.result {
            AuditResult::Selected { expires_at } => {
                format!("{who} selected {} until {expires_at}", self.tag)
            }
            AuditResult::SelectCancelled => {
                format!("{who} cancelled the selection of {}", self.tag)
            }
            AuditResult::Pending {
                needs_role,
                expires_at,
            } => format!(
                "{what}: waiting for a second person ({needs_role} or above) until {expires_at}"
            ),
            AuditResult::Accepted => format!("{what}: accepted"),
            AuditResult::Refused { message, .. } => format!("{what}: refused: {message}"),
            AuditResult::Verified { seen, after_ms } => {
                format!("{what}: verified, the device shows {seen} after {after_ms} ms")
            }
            AuditResult::Failed { message, .. } => format!("{what}: failed: {message}"),
            AuditResult::DeviceError { message } => format!("{what}: device error: {message}"),
            AuditResult::Superseded { by } => format!("{what}: superseded by command {by}"),
            AuditResult::UnauthorisedChange { message } => message.clone(),
        }
    }

    /// The record as an event of kind `command` (an unauthorised change: kind `security`,
    /// critical), subject the tag, actor the requester, every field as an attribute.
    pub fn to_event(&self) -> Event {
        let kind = match self.result {
            AuditResult::UnauthorisedChange { .. } => EventKind::Security,
            _ => EventKind::Command,
        };
        let mut e = Event::new(self.ts, kind, self.result.code(), "command", self.message())
            .with_severity(self.result.severity())
            .with_actor(&self.actor)
            .with_attribute("command", Value::from_u64(self.command))
            .with_attribute("actor_kind", text(&self.actor_kind))
            .with_attribute("old_value", self.old_value.clone())
            .with_attribute("new_value", self.new_value.clone())
            .with_attribute("reason", text(&self.reason))
            .with_attribute("origin", text(&self.origin))
            .with_attribute("requested_at", text(&self.requested_at.to_rfc3339()));
        if let Ok(p) = TagPath::parse(&self.tag) {
            e = e.with_subject(p);
        }
        for (name, v) in [
            ("role", &self.role),
            ("session", &self.session),
            ("confirmer", &self.confirmer),
            ("confirmer_role", &self.confirmer_role),
        ] {
            if let Some(v) = v {
                e = e.with_attribute(name, text(v));
            }
        }
        match &self.result {
            AuditResult::Selected { expires_at } | AuditResult::Pending { expires_at, .. } => {
                e = e.with_attribute("expires_at", text(&expires_at.to_rfc3339()));
            }
            AuditResult::Refused { code, message } => {
                e = e
                    .with_attribute("refusal", text(code))
                    .with_attribute("refusal_message", text(message));
            }
            AuditResult::Verified { seen, after_ms } => {
                e = e
                    .with_attribute("seen", seen.clone())
                    .with_attribute("after_ms", Value::from_u64(*after_ms));
            }
            AuditResult::Failed { last_seen, .. } => {
                e = e.with_attribute("last_seen", last_seen.clone());
            }
            AuditResult::DeviceError { message } => {
                e = e.with_attribute("device_error", text(message));
            }
            AuditResult::Superseded { by } => {
                e = e.with_attribute("superseded_by", Value::from_u64(*by));
            }
            AuditResult::SelectCancelled
            | AuditResult::Accepted
            | AuditResult::UnauthorisedChange { .. } => {}
        }
        e
    }
}

fn text(s: &str) -> Value {
    Value::String(s.into())
}

/// Values in the one JSON form (`core::wire::ValueJson` / `ValueIn`).
mod value_json {
    use super::*;

    pub fn serialize<S: serde::Serializer>(v: &Value, s: S) -> Result<S::Ok, S::Error> {
        ValueJson(Some(v)).serialize(s)
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
        ValueIn::deserialize(d).map(|v| v.0)
    }
}

/// Timestamps as RFC 3339 text with microseconds, as everywhere on the wire.
mod ts_text {
    use super::*;

    pub fn serialize<S: serde::Serializer>(t: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.to_rfc3339())
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        let s = String::deserialize(d)?;
        parse_ts(&s).map_err(serde::de::Error::custom)
    }
}
