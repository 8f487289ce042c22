//! The MQTT command convention (docs/commands.md), sans-IO: topics, request bodies in,
//! response bodies out. The broker-side shell (subscribe, ask the policy, submit, publish the
//! response on the MQTT 5 Response Topic with the Correlation Data) is the runtime's.
//!
//! - Request: PUBLISH on `<uns_prefix>/_cmd/<tag path>`, JSON body
//!   `{"value": 320, "reason": "…"}` (operate), with `"select": true` (select only),
//!   `{"confirm": 17}` / `{"reject": 17}` (two-person), `{"cancel": true}` (drop a selection).
//! - Response: on the request's Response Topic (MQTT 5), else on
//!   `<uns_prefix>/_cmd_reply/<tag path>`, with the request's Correlation Data, JSON body
//!   `{"result": "accepted|pending|selected|cancelled|refused|verified|failed|device_error|error",
//!   "command": 17, "code": "envelope_max", "reason": "…", "echoed": …}`.

use ironplant_core::wire::{ValueIn, ValueJson};
use ironplant_core::{TagPath, Value};
use serde::{Deserialize, Serialize};

use super::engine::{Outcome, SelectToken};
use super::types::{CommandId, Decision, Refusal};

/// The topic level after the UNS prefix that carries commands.
pub const COMMAND_LEVEL: &str = "_cmd";
/// The topic level of responses for clients without a Response Topic (MQTT 3.1.1).
pub const REPLY_LEVEL: &str = "_cmd_reply";
/// The largest request body accepted.
pub const MAX_BODY: usize = 16 * 1024;

/// Why a command topic or body is not usable, said for the client.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MqttCommandError {
    #[error(
        "topic {topic:?} is not a command topic; publish to {prefix}/{COMMAND_LEVEL}/<tag path>"
    )]
    NotCommandTopic { topic: String, prefix: String },
    #[error("topic {topic:?} does not name a tag: {why}")]
    BadTagPath { topic: String, why: String },
    #[error("the body is {len} bytes; a command body is at most {MAX_BODY} bytes")]
    TooLarge { len: usize },
    #[error("the body is not UTF-8 JSON: {0}")]
    NotJson(String),
    #[error("the body is not a command: {0}; e.g. {{\"value\": 42, \"reason\": \"…\"}}")]
    BadBody(String),
}

/// The filter the runtime subscribes to for commands.
pub fn command_filter(uns_prefix: &str) -> String {
    join(uns_prefix, &format!("{COMMAND_LEVEL}/#"))
}

/// The topic a client publishes a command for `tag` on.
pub fn command_topic(uns_prefix: &str, tag: &TagPath) -> String {
    join(uns_prefix, &format!("{COMMAND_LEVEL}/{tag}"))
}

/// Where the response goes when the request had no Response Topic.
pub fn reply_topic(uns_prefix: &str, tag: &TagPath) -> String {
    join(uns_prefix, &format!("{REPLY_LEVEL}/{tag}"))
}

fn join(prefix: &str, rest: &str) -> String {
    let prefix = prefix.trim_end_matches('/');
    if prefix.is_empty() {
        rest.to_owned()
    } else {
        format!("{prefix}/{rest}")
    }
}

/// The tag a command topic addresses.
pub fn parse_command_topic(uns_prefix: &str, topic: &str) -> Result<TagPath, MqttCommandError> {
    let head = join(uns_prefix, COMMAND_LEVEL);
    let rest = topic
        .strip_prefix(head.as_str())
        .and_then(|r| r.strip_prefix('/'))
        .ok_or_else(|| MqttCommandError::NotCommandTopic {
            topic: topic.to_owned(),
            prefix: uns_prefix.trim_end_matches('/').to_owned(),
        })?;
    TagPath::parse(rest).map_err(|e| MqttCommandError::BadTagPath {
        topic: topic.to_owned(),
        why: e.to_string(),
    })
}

/// What a request body asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum MqttCommand {
    /// Write `value` (through every check).
    Operate { value: Value, reason: String },
    /// Select-before-operate: select, with the value to operate with if given.
    Select {
        value: Option<Value>,
        reason: String,
    },
    /// Two-person rule: confirm the pending command.
    Confirm { id: CommandId, reason: String },
    /// Two-person rule: reject (or withdraw) the pending command.
    Reject { id: CommandId, reason: String },
    /// Drop this session's selection of the tag.
    Cancel,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequest {
    value: Option<ValueIn>,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    select: bool,
    confirm: Option<IdIn>,
    reject: Option<IdIn>,
    #[serde(default)]
    cancel: bool,
}

/// A command id as a number or a string of digits (clients that treat ids as opaque text).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum IdIn {
    Num(u64),
    Text(String),
}

impl IdIn {
    fn get(self, field: &str) -> Result<CommandId, MqttCommandError> {
        match self {
            IdIn::Num(n) => Ok(CommandId(n)),
            IdIn::Text(t) => t.trim().parse::<u64>().map(CommandId).map_err(|_| {
                MqttCommandError::BadBody(format!(
                    "{field} {t:?} is not a command id (the number in a pending response)"
                ))
            }),
        }
    }
}

/// Reads a request body.
pub fn parse_request(body: &[u8]) -> Result<MqttCommand, MqttCommandError> {
    if body.len() > MAX_BODY {
        return Err(MqttCommandError::TooLarge { len: body.len() });
    }
    let raw: RawRequest = serde_json::from_slice(body).map_err(|e| {
        if e.is_data() {
            MqttCommandError::BadBody(e.to_string())
        } else {
            MqttCommandError::NotJson(e.to_string())
        }
    })?;
    let modes = [
        raw.select,
        raw.confirm.is_some(),
        raw.reject.is_some(),
        raw.cancel,
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if modes > 1 {
        return Err(MqttCommandError::BadBody(
            "give one of select, confirm, reject or cancel".to_owned(),
        ));
    }
    let value = raw.value.map(|v| v.0);
    if let Some(id) = raw.confirm {
        return Ok(MqttCommand::Confirm {
            id: id.get("confirm")?,
            reason: raw.reason,
        });
    }
    if let Some(id) = raw.reject {
        return Ok(MqttCommand::Reject {
            id: id.get("reject")?,
            reason: raw.reason,
        });
    }
    if raw.cancel {
        return Ok(MqttCommand::Cancel);
    }
    if raw.select {
        return Ok(MqttCommand::Select {
            value,
            reason: raw.reason,
        });
    }
    match value {
        None | Some(Value::Null) => Err(MqttCommandError::BadBody(
            "missing \"value\": the value to write".to_owned(),
        )),
        Some(value) => Ok(MqttCommand::Operate {
            value,
            reason: raw.reason,
        }),
    }
}

/// A response body.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MqttResponse {
    /// `accepted`, `pending`, `selected`, `cancelled`, `refused`, `verified`, `failed`,
    /// `device_error` or `error` (the request itself was unusable).
    pub result: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<u64>,
    /// The refusal's machine code (`envelope_max`, `interlock`...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<&'static str>,
    /// Why, in words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "opt_value")]
    pub echoed: Option<Value>,
    /// Until when a selection or a pending two-person command holds (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
}

fn opt_value<S: serde::Serializer>(v: &Option<Value>, s: S) -> Result<S::Ok, S::Error> {
    ValueJson(v.as_ref()).serialize(s)
}

impl MqttResponse {
    fn new(result: &'static str) -> MqttResponse {
        MqttResponse {
            result,
            command: None,
            code: None,
            reason: None,
            echoed: None,
            expires: None,
        }
    }

    pub fn from_decision(d: &Decision) -> MqttResponse {
        match d {
            Decision::Accepted(a) => MqttResponse {
                command: Some(a.id.0),
                ..MqttResponse::new("accepted")
            },
            Decision::AwaitingConfirmation(p) => MqttResponse {
                command: Some(p.id.0),
                reason: Some(format!(
                    "waiting for a second person ({} or above) to confirm command {}",
                    p.needs_role, p.id
                )),
                expires: Some(p.expires_at.to_rfc3339()),
                ..MqttResponse::new("pending")
            },
            Decision::Refused(r) => MqttResponse::refused(r),
        }
    }

    pub fn refused(r: &Refusal) -> MqttResponse {
        MqttResponse {
            code: Some(r.code()),
            reason: Some(r.to_string()),
            ..MqttResponse::new("refused")
        }
    }

    pub fn selected(t: &SelectToken) -> MqttResponse {
        MqttResponse {
            command: Some(t.id.0),
            expires: Some(t.expires_at.to_rfc3339()),
            ..MqttResponse::new("selected")
        }
    }

    pub fn cancelled(held: bool) -> MqttResponse {
        MqttResponse {
            reason: (!held).then(|| "this session held no selection of the tag".to_owned()),
            ..MqttResponse::new("cancelled")
        }
    }

    /// A final outcome (verified or failed); `None` for findings that are not a command's.
    pub fn from_outcome(o: &Outcome) -> Option<MqttResponse> {
        match o {
            Outcome::Verified { id, value, .. } => Some(MqttResponse {
                command: Some(id.0),
                echoed: Some(value.clone()),
                ..MqttResponse::new("verified")
            }),
            Outcome::Failed {
                id, last_seen, why, ..
            } => Some(MqttResponse {
                command: Some(id.0),
                reason: Some(why.clone()),
                echoed: last_seen.clone(),
                ..MqttResponse::new("failed")
            }),
            Outcome::ConfirmationExpired { id, refusal } => Some(MqttResponse {
                command: Some(id.0),
                code: Some(refusal.code()),
                reason: Some(refusal.to_string()),
                ..MqttResponse::new("refused")
            }),
            Outcome::UnauthorisedChange(_) | Outcome::ChangeReverted { .. } => None,
        }
    }

    pub fn device_error(id: CommandId, message: &str) -> MqttResponse {
        MqttResponse {
            command: Some(id.0),
            reason: Some(message.to_owned()),
            ..MqttResponse::new("device_error")
        }
    }

    /// The request could not be read (bad topic or body).
    pub fn error(e: &MqttCommandError) -> MqttResponse {
        MqttResponse {
            code: Some("bad_request"),
            reason: Some(e.to_string()),
            ..MqttResponse::new("error")
        }
    }

    /// The JSON body.
    pub fn render(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_else(|_| br#"{"result":"error"}"#.to_vec())
    }
}
