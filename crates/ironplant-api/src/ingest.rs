//! `POST /api/v1/ingest/{name}`: a JSON payload mapped by the `[[ingest.json]]` mapping `name`
//! (with `http = true`) into tags, the HTTP twin of the MQTT side (`ironplant_ingest::mqtt`).
//! The mapping itself is `ironplant_ingest::JsonIngest` (sans-IO); this is the thin shell.
//!
//! Authorisation is the API's write policy, asked for every tag the mapping feeds (all of them,
//! before the body is read, so a payload cannot pick which checks apply):
//! `Caller::require_write` = the role's `write_setpoints` and the caller's write prefixes.
//! Devices (role `device`) speak MQTT only and are refused here like any caller without
//! `write_setpoints`; an operator or engineer token limited with `write_prefixes` to the
//! device's tags is the way to let a gateway post.
//!
//! Answers: 202 `{"accepted": N, "rejected": M, "errors": [{"pointer","reason","message"}]}`
//! (accepted = samples put on the bus, rejected = fields left out: missing, wrong type, ...);
//! 400 `bad_payload` for a payload rejected whole (not JSON, timestamp missing or absurd),
//! 413 `body_too_large` above the mapping's `max_payload`, 404 `ingest_not_found` for a name
//! that no mapping with `http = true` has.
//!
//! `GET /api/v1/ingest` (`change_config`) lists every mapping with its counters by reason and
//! its last error, for diagnosing a device whose values do not arrive.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use ironplant_core::Timestamp;
use ironplant_ingest::config::PathTemplate;
use ironplant_ingest::{JsonIngest, Reason};
use ironplant_security::Permission;
use serde::Serialize;

use crate::auth::Caller;
use crate::{ApiError, ApiState, JsonBody};

/// The route of HTTP ingest.
pub const PATH: &str = "/api/v1/ingest/{name}";

/// **The registration point of HTTP ingest**: the route, to pass to
/// [`crate::router_with`] (so it sits behind the authentication middleware like every route):
/// `ironplant_api::router_with(state, ironplant_api::ingest::routes(ingest))`.
pub fn routes(ingest: Arc<JsonIngest>) -> Router<Arc<ApiState>> {
    Router::new()
        .route(PATH, post(post_ingest))
        .route("/api/v1/ingest", get(list_ingest))
        .layer(Extension(ingest))
}

#[derive(Serialize)]
struct MappingJson<'a> {
    name: &'a str,
    topic: Option<&'a str>,
    http: bool,
    fields: usize,
    messages: u64,
    samples: u64,
    tags_born: u64,
    rejected: std::collections::BTreeMap<&'static str, u64>,
    last_error: Option<LastErrorJson>,
}

#[derive(Serialize)]
struct LastErrorJson {
    at: String,
    reason: &'static str,
    message: String,
}

/// `GET /api/v1/ingest`: every mapping with its counters and last error (diagnostics for
/// whoever configures devices: `change_config`, since errors quote payloads).
async fn list_ingest(
    Extension(caller): Extension<Caller>,
    Extension(ingest): Extension<Arc<JsonIngest>>,
) -> Result<Response, ApiError> {
    caller.require(Permission::ChangeConfig)?;
    let mut out = Vec::new();
    for (i, m) in ingest.mappings().enumerate() {
        let Some(st) = ingest.stats(i) else { continue };
        let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        out.push(MappingJson {
            name: &m.name,
            topic: m.topic.as_deref(),
            http: m.http,
            fields: m.fields.len(),
            messages: load(&st.messages),
            samples: load(&st.samples),
            tags_born: load(&st.tags_born),
            rejected: Reason::ALL
                .iter()
                .map(|r| (r.as_str(), st.rejected(*r)))
                .filter(|(_, n)| *n > 0)
                .collect(),
            last_error: st.last_error().map(|e| LastErrorJson {
                at: e.at.to_rfc3339(),
                reason: e.reason.as_str(),
                message: e.message,
            }),
        });
    }
    Ok(Json(serde_json::json!({ "mappings": out })).into_response())
}

#[derive(Serialize)]
struct Accepted<'a> {
    accepted: usize,
    rejected: usize,
    errors: Vec<FieldErrorJson<'a>>,
}

#[derive(Serialize)]
struct FieldErrorJson<'a> {
    pointer: &'a str,
    reason: &'static str,
    message: &'a str,
}

async fn post_ingest(
    State(st): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Extension(ingest): Extension<Arc<JsonIngest>>,
    Path(name): Path<String>,
    body: JsonBody,
) -> Result<Response, ApiError> {
    // The role first, so callers who may write nothing learn nothing about mapping names.
    caller.require(Permission::WriteSetpoints)?;
    let index = ingest
        .index(&name)
        .filter(|&i| ingest.mapping(i).is_some_and(|m| m.http))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "ingest_not_found",
                format!(
                    "no ingest mapping {:?} with http = true; declare it in [[ingest.json]] of the config",
                    crate::clip(&name)
                ),
            )
        })?;
    if let Some(m) = ingest.mapping(index) {
        for f in &m.fields {
            if let PathTemplate::Fixed(p) = &f.path {
                caller.require_write(p.as_str())?;
            }
        }
    }
    let now = Timestamp::now();
    // The message-level checks, with the caller as the publisher of the mapping's "topic".
    let from = ironplant_ingest::guard::Provenance {
        identity: caller
            .identity
            .as_ref()
            .map(|i| Arc::from(format!("user:{}", i.user))),
        address: Some(std::net::SocketAddr::new(caller.source, 0)),
    };
    let topic = format!("http:{name}");
    let received = ironplant_ingest::guard::Received {
        topic: &topic,
        payload: &body.0,
        from: &from,
    };
    let opened = ingest
        .open_signed(index, received, now, &st.runtime.events)
        .map_err(|refused| {
            ApiError::new(
                StatusCode::FORBIDDEN,
                refused.reason.as_str(),
                refused.message,
            )
        })?;
    let payload: &[u8] = opened.as_ref().map_or(&body.0[..], |(_, p)| p);
    let mut mapped = match ingest.handle_mapping(index, &[], payload, now) {
        Ok(m) => m,
        Err(e) if e.reason == Reason::TooLarge => {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                e.message,
            ))
        }
        Err(e) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_payload",
                format!("{} ({})", e.message, e.reason.as_str()),
            ))
        }
    };
    let admitted = ingest.admit(
        index,
        ironplant_ingest::guard::Received {
            payload,
            ..received
        },
        &mapped,
        now,
        &st.runtime.events,
    );
    if let Err(refused) = admitted {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "replayed",
            refused.finding.message(),
        ));
    }
    let samples = ingest.resolve(index, &st.runtime.namespace, &mut mapped, now);
    let accepted = samples.len();
    st.runtime.bus.publish(samples).await;
    let body = Accepted {
        accepted,
        rejected: mapped.rejected.len(),
        errors: mapped
            .rejected
            .iter()
            .map(|r| FieldErrorJson {
                pointer: &r.pointer,
                reason: r.reason.as_str(),
                message: &r.message,
            })
            .collect(),
    };
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}
