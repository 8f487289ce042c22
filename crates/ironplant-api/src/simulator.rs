//! The simulated plant's attacks, switched at run time (`ironplant demo`; issue 13): routes
//! registered only when the platform runs the simulator in-process.
//!
//! - `GET /api/v1/simulator/attacks`: `{"active": [...], "catalogue": [...]}`, the running
//!   attacks and one example of each kind. Needs read_tags.
//! - `POST /api/v1/simulator/attacks` with a scenario (`{"kind":"drift","signal":"tank_level",
//!   "amount":8,"ramp_s":600}`, see docs/attacks.md): starts it, `201 {"label": ...}`. Needs
//!   change_config (an attack is an engineer's test). A bad scenario is a 400 saying why.
//! - `DELETE /api/v1/simulator/attacks/{name}`: stops by label (`drift:tank_level`), by kind
//!   (`drift`), or `all`: `{"stopped": [...]}`.
//!
//! Every start and stop is a `system` event naming the user, so the detection has a witness.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Extension, Json, Router};
use ironplant_core::{Event, EventKind, Severity, Timestamp, Value};
use ironplant_security::Permission;

use crate::auth::Caller;
use crate::{ApiError, ApiState};

/// What the routes need of the simulator (implemented by `ironplant-server` over
/// `ironplant_sim::attack::AttackControl`, so this crate does not depend on the simulator).
pub trait SimulatorAttacks: Send + Sync + 'static {
    /// Starts the scenario given as JSON; its label, or why not (for people).
    fn start(&self, scenario: serde_json::Value) -> Result<String, String>;
    /// Stops by label, kind or `all`; the labels stopped.
    fn stop(&self, name: &str) -> Vec<String>;
    /// The running attacks as JSON.
    fn active(&self) -> serde_json::Value;
    /// One example scenario of each kind, as JSON.
    fn catalogue(&self) -> serde_json::Value;
}

/// The routes, to pass to [`crate::router_with`] next to the others.
pub fn routes(sim: Arc<dyn SimulatorAttacks>) -> Router<Arc<ApiState>> {
    Router::new()
        .route("/api/v1/simulator/attacks", get(list).post(start))
        .route("/api/v1/simulator/attacks/{name}", delete(stop))
        .layer(Extension(sim))
}

async fn list(
    Extension(caller): Extension<Caller>,
    Extension(sim): Extension<Arc<dyn SimulatorAttacks>>,
) -> Result<Response, ApiError> {
    caller.require(Permission::ReadTags)?;
    Ok(Json(serde_json::json!({
        "active": sim.active(),
        "catalogue": sim.catalogue(),
    }))
    .into_response())
}

fn witness(st: &ApiState, caller: &Caller, code: &str, message: String, label: &str) {
    let user = caller
        .identity
        .as_ref()
        .map_or_else(|| "anonymous".to_owned(), |i| i.user.clone());
    st.runtime.events.publish(
        Event::new(
            Timestamp::now(),
            EventKind::System,
            code,
            "simulator",
            message,
        )
        .with_severity(Severity::Warning)
        .with_actor(user.as_str())
        .with_attribute("attack", Value::String(label.into())),
    );
}

async fn start(
    State(st): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Extension(sim): Extension<Arc<dyn SimulatorAttacks>>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    caller.require(Permission::ChangeConfig)?;
    let scenario: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!(
                "the body is not JSON ({e}); send a scenario, e.g. {{\"kind\":\"drift\",\"signal\":\"tank_level\",\"amount\":8,\"ramp_s\":600}}"
            ),
        )
    })?;
    let label = sim
        .start(scenario)
        .map_err(|why| ApiError::new(StatusCode::BAD_REQUEST, "bad_scenario", why))?;
    witness(
        &st,
        &caller,
        "simulator_attack_started",
        format!("simulated attack {label} started"),
        &label,
    );
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({ "label": label })),
    )
        .into_response())
}

async fn stop(
    State(st): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Extension(sim): Extension<Arc<dyn SimulatorAttacks>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    caller.require(Permission::ChangeConfig)?;
    let stopped = sim.stop(&name);
    if stopped.is_empty() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "no running attack is called {name:?}; GET /api/v1/simulator/attacks lists them"
            ),
        ));
    }
    for label in &stopped {
        witness(
            &st,
            &caller,
            "simulator_attack_stopped",
            format!("simulated attack {label} stopped"),
            label,
        );
    }
    Ok(Json(serde_json::json!({ "stopped": stopped })).into_response())
}
