//! `GET /api/v1/system`: what the HMI's system page shows — the platform's components, its
//! connections (Modbus devices, MQTT clients, bridges), the historian's and the broker's
//! statistics and the disk the data takes. The same counters as `/metrics`, as JSON.
//!
//! Needs read_tags with reads not limited by tag scopes (it names devices and clients across
//! the whole plant, like events without a subject). The broker's client list (client ids,
//! users, addresses) also needs change_config; others see the counts only.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use ironplant_runtime::component::Status;
use ironplant_security::Permission;
use serde_json::json;

use crate::auth::Caller;
use crate::{ApiError, ApiState};

/// A counter's value now.
fn g(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

pub(crate) async fn get_system(
    State(st): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
) -> Result<Response, ApiError> {
    caller.require(Permission::ReadTags)?;
    if !caller.access.reads_unlimited() {
        return Err(caller.deny(
            "the system page names devices and clients across the plant: it needs reads not \
             limited by tag prefixes"
                .into(),
        ));
    }
    let rt = &st.runtime;
    let components: Vec<_> = rt
        .components()
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "role": c.role.as_str(),
                "status": match c.status() {
                    Status::Running => "running",
                    Status::Restarting => "restarting",
                    Status::Stopped => "stopped",
                },
                "restarts": c.restarts(),
                "last_error": c.last_error(),
            })
        })
        .collect();
    let devices: Vec<_> = rt
        .metrics
        .device_ids()
        .map(|d| {
            json!({
                "id": d,
                "protocol": "modbus",
                "connected": rt.metrics.device_connected(d).unwrap_or(false),
                "poll_errors": rt.metrics.poll_errors(d),
            })
        })
        .collect();
    let bridges: Vec<_> = rt
        .metrics
        .bridges()
        .iter()
        .map(|(name, b)| {
            json!({
                "name": name,
                "connected": g(&b.connected) == 1,
                "queued": g(&b.queued),
                "queued_bytes": g(&b.queued_bytes),
                "in_flight": g(&b.in_flight),
                "sent": g(&b.sent),
                "received": g(&b.received),
                "dropped": g(&b.dropped),
                "connects": g(&b.connects),
            })
        })
        .collect();
    let broker = st.mqtt.as_ref().map(|b| {
        let s = b.stats();
        let c = b.counts();
        let clients: Vec<_> = b.clients();
        let listed = caller.allows(Permission::ChangeConfig);
        json!({
            "connected": clients.len(),
            "clients": listed.then(|| clients.iter().map(|c| json!({
                "client_id": c.client_id,
                "user": c.user,
                "address": c.peer.to_string(),
                "subscriptions": c.subscriptions,
                "persistent": c.persistent,
            })).collect::<Vec<_>>()),
            "stats": {
                "connections_total": g(&s.connections),
                "messages_in": g(&s.messages_in),
                "messages_out": g(&s.messages_out),
                "dropped": g(&s.dropped),
                "denied": g(&s.denied),
                "protocol_errors": g(&s.protocol_errors),
                "sessions": c.sessions,
                "persistent_sessions": c.persistent_sessions,
                "subscriptions": c.subscriptions,
                "retained": c.retained,
                "queued": c.queued,
            },
        })
    });
    let events = rt.metrics.event_store();
    let historian = rt.historian.as_ref().map(|h| {
        let s = h.stats();
        json!({
            "tags": s.tags,
            "acked_samples": s.acked_samples,
            "stored_samples": s.stored_samples,
            "memtable_samples": s.memtable_samples,
            "chunks_written": s.chunks_written,
            "wal_bytes": s.wal_bytes,
            "chunk_bytes": s.chunk_bytes,
            "corrupt_chunks_seen": s.corrupt_chunks_seen,
            "events_stored": events.as_ref().map(|e| e.stored),
            "events_bytes": events.as_ref().map(|e| e.file_bytes),
        })
    });
    let disk = rt.historian.as_ref().map(|h| {
        let s = h.stats();
        let events = events.as_ref().map_or(0, |e| e.file_bytes);
        json!({
            "historian_bytes": s.wal_bytes + s.chunk_bytes,
            "events_bytes": events,
            "total_bytes": s.wal_bytes + s.chunk_bytes + events,
        })
    });
    let body = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": st.started.elapsed().as_secs(),
        "components": components,
        "devices": devices,
        "broker": broker,
        "bridges": bridges,
        "historian": historian,
        "disk": disk,
    });
    Ok((StatusCode::OK, Json(body)).into_response())
}
