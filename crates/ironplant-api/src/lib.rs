//! Ironplant HTTP API (axum): live tag values, the asset hierarchy, health and metrics, and
//! MQTT over WebSocket at `/mqtt` for browsers ([`mqtt_ws`]).
//!
//! With security on, every route but `/healthz`, `POST /api/v1/login` and `/mqtt` needs
//! credentials and the permission of its route ([`auth`]); users, tokens and the audit log
//! are served by [`account`].
//!
//! JSON only at this edge: internal types are turned into response structs here. Every error has
//! the shape `{ "error": { "code": "...", "message": "..." } }` with a stable `code`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Extension, Json, Router};
use ironplant_core::wire::TagJson;
use ironplant_core::{Asset, Location, Sample, TagMeta, TagPath};
use ironplant_runtime::Runtime;
use serde::{Deserialize, Serialize};

pub mod account;
pub mod alarms;
pub mod auth;
pub mod commands;
pub mod events;
pub mod history;
pub mod hmi;
pub mod ingest;
pub mod listen;
pub mod live;
pub mod mqtt_ws;
pub mod opcua;
pub mod openapi;
pub mod session;
pub mod settings;
pub mod simulator;
pub mod system;

use auth::Caller;
use ironplant_security::Permission;

/// Shared state of the HTTP server.
pub struct ApiState {
    pub runtime: Arc<Runtime>,
    pub started: Instant,
    /// The embedded broker, served over WebSocket at `/mqtt`; `None` when MQTT is off.
    pub mqtt: Option<ironplant_mqtt::Broker>,
    /// Users, tokens, certificates and the audit log. The platform always sets it; `None`
    /// only in tests of the router itself.
    pub security: Option<Arc<ironplant_security::Security>>,
    /// Connection limits and counters of the HTTP listeners, and the request body limit.
    pub http: Arc<listen::Connections>,
}

/// The router with every route of the API.
pub fn router(state: Arc<ApiState>) -> Router {
    let ingest = ingest::routes(state.runtime.ingest.clone());
    router_with(state, ingest)
}

/// [`router`] plus `extra` routes (e.g. [`ingest::routes`]), behind the same authentication
/// and body limits as every route.
pub fn router_with(state: Arc<ApiState>, extra: Router<Arc<ApiState>>) -> Router {
    let max_body = state.http.settings().max_body_size;
    Router::new()
        .merge(extra)
        .route("/api/v1/tags", get(list_tags))
        .route(
            "/api/v1/tags/{*path}",
            get(get_tag)
                .post(commands::post_tag)
                .delete(commands::delete_tag),
        )
        .route("/api/v1/assets", get(list_assets))
        .route("/api/v1/history", get(history::get_history))
        .route("/api/v1/events", get(events::get_events))
        .route("/api/v1/alarms", get(alarms::list))
        .route("/api/v1/alarms/kpi", get(alarms::kpi))
        .route("/api/v1/alarms/{id}/{operation}", post(alarms::operate))
        .route("/api/v1/commands", get(commands::list))
        .route("/api/v1/commands/{id}/{action}", post(commands::decide))
        .route(openapi::PATH, get(openapi::get_openapi))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route(mqtt_ws::PATH, get(mqtt_ws::upgrade_api))
        .route(live::PATH, get(live::upgrade))
        .route("/api/v1/login", post(account::login))
        .route(
            session::PATH,
            post(session::login)
                .get(session::get)
                .delete(session::logout),
        )
        .route("/", get(hmi::index))
        .route("/hmi/{*file}", get(hmi::file))
        .route(hmi::FAVICON, get(hmi::favicon))
        .route("/api/v1/system", get(system::get_system))
        .route("/api/v1/opcua/browse", post(opcua::post_browse))
        .route("/api/v1/opcua/trust", post(opcua::post_trust))
        .route("/api/v1/commands/points", get(commands::points))
        .route(
            "/api/v1/tokens",
            get(account::list_tokens).post(account::create_token),
        )
        .route("/api/v1/tokens/{id}", delete(account::revoke_token))
        .route(
            "/api/v1/users",
            get(account::list_users).post(account::create_user),
        )
        .route("/api/v1/users/{name}", delete(account::delete_user))
        .route("/api/v1/users/{name}/password", put(account::set_password))
        .route("/api/v1/users/{name}/role", put(account::set_role))
        .route("/api/v1/audit", get(account::get_audit))
        .fallback(not_found)
        // On every route and the fallback, so an unknown path answers 401 before 404 and
        // does not reveal which endpoints exist.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ))
        .layer(axum::middleware::from_fn(
            session::no_basic_prompt_for_scripts,
        ))
        // Outermost: a body announced too large is refused before authentication (a Basic
        // login costs an argon2 hash); one sent chunked is cut by the extractors' limit.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            refuse_large_bodies,
        ))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}

/// Serves the API over plain HTTP on `listener` until `shutdown` resolves, then finishes
/// open requests; with the limits of [`listen`].
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<ApiState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let ingest = ingest::routes(state.runtime.ingest.clone());
    serve_with(listener, state, ingest, shutdown).await
}

/// [`serve`] with `extra` routes ([`router_with`]).
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    state: Arc<ApiState>,
    extra: Router<Arc<ApiState>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let conns = state.http.clone();
    listen::serve(
        listener,
        "http",
        listen::plain,
        router_with(state, extra),
        conns,
        shutdown,
    )
    .await
}

fn body_too_large(st: &ApiState) -> ApiError {
    st.http.count_body_too_large();
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        format!(
            "the request body is larger than {} bytes (max_body_size in [http] of the config)",
            st.http.settings().max_body_size
        ),
    )
}

/// 413 for a request whose `Content-Length` exceeds the limit, before anything reads it.
async fn refuse_large_bodies(
    State(st): State<Arc<ApiState>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let announced = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let max = st.http.settings().max_body_size as u64;
    if announced.is_some_and(|n| n > max) {
        return body_too_large(&st).into_response();
    }
    next.run(req).await
}

/// The body of a JSON request: refused with 415 unless `Content-Type` is `application/json`
/// (a browser sends that cross-site only after a CORS preflight, which this API never
/// grants, so a page elsewhere cannot make a logged-in browser post here), and with 413 when
/// larger than `max_body_size`.
pub(crate) struct JsonBody(pub axum::body::Bytes);

/// `application/json`, with parameters (`; charset=utf-8`) or not, in any case.
fn is_json(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
}

impl axum::extract::FromRequest<Arc<ApiState>> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(
        req: axum::extract::Request,
        st: &Arc<ApiState>,
    ) -> Result<Self, ApiError> {
        if !is_json(req.headers()) {
            st.http.count_unsupported_media_type();
            let got = req
                .headers()
                .get(header::CONTENT_TYPE)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!(
                    "this endpoint takes a JSON body with `Content-Type: application/json` \
                     (got {}); e.g. curl -H 'Content-Type: application/json' -d '{{...}}'",
                    got.map_or("none".to_owned(), |g| format!("{:?}", clip(&g)))
                ),
            ));
        }
        match axum::body::Bytes::from_request(req, st).await {
            Ok(b) => Ok(JsonBody(b)),
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(body_too_large(st)),
            Err(e) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("cannot read the request body: {e}"),
            )),
        }
    }
}

/// At most 64 characters of a client's text, for an error message.
fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}

/// An API error with a stable machine-readable code.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// Seconds, for `Retry-After` (a locked login).
    retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    code: &'a str,
    message: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: &self.message,
            },
        };
        let mut resp = (self.status, Json(body)).into_response();
        let h = resp.headers_mut();
        if self.status == StatusCode::UNAUTHORIZED {
            // Both schemes the API accepts (RFC 9110 §11.6.1: one challenge per value).
            h.append(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static(r#"Bearer realm="ironplant""#),
            );
            h.append(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static(r#"Basic realm="ironplant", charset="UTF-8""#),
            );
        }
        if let Some(secs) = self.retry_after {
            h.insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
        }
        resp
    }
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint; see /api/v1/openapi.json for all of them: /api/v1/tags, /api/v1/assets, \
         /api/v1/history, /api/v1/events, /healthz, /metrics, \
         /api/v1/login, /api/v1/tokens, /api/v1/users, /api/v1/audit (and /mqtt for MQTT over \
         WebSocket)",
    )
}

fn tag_json<'a>(meta: &'a TagMeta, sample: Option<&'a Sample>) -> TagJson<'a> {
    TagJson::new(meta, sample)
}

#[derive(Deserialize)]
struct TagsQuery {
    prefix: Option<String>,
}

async fn list_tags(
    State(st): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<TagsQuery>,
) -> Result<Response, ApiError> {
    caller.require(Permission::ReadTags)?;
    let rt = &st.runtime;
    // Tags born while running (Sparkplug) are listed once the namespace has them; the snapshot
    // is taken before the current values so every value has its tag.
    let ns = rt.namespace.read();
    let mut current: Vec<Option<Sample>> = vec![None; ns.len()];
    rt.bus.for_each_current(|s| {
        if let Some(slot) = current.get_mut(s.tag.index()) {
            *slot = Some(s.clone());
        }
    });
    let prefix = q.prefix.as_deref().unwrap_or("");
    let tags: Vec<TagJson<'_>> = ns
        .tags()
        .filter(|m| m.path.has_prefix(prefix) && caller.access.can_read(m.path.as_str()))
        .map(|m| tag_json(m, current.get(m.id.index()).and_then(Option::as_ref)))
        .collect();
    #[derive(Serialize)]
    struct Body<'a> {
        count: usize,
        tags: Vec<TagJson<'a>>,
    }
    Ok(Json(Body {
        count: tags.len(),
        tags,
    })
    .into_response())
}

async fn get_tag(
    State(st): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path(path): Path<String>,
) -> Result<Response, ApiError> {
    caller.require(Permission::ReadTags)?;
    let path = path.trim_end_matches('/');
    if let Err(e) = TagPath::parse(path) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_path",
            format!("{path:?} is not a valid tag path: {e}"),
        ));
    }
    // Before the lookup, so the answer does not reveal whether an out-of-scope tag exists.
    caller.require_read(path)?;
    let rt = &st.runtime;
    let meta = rt.namespace.lookup(path).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "tag_not_found",
            format!("no tag {path:?}; list tags with GET /api/v1/tags?prefix=..."),
        )
    })?;
    let sample = rt.bus.current(meta.id);
    Ok(Json(tag_json(&meta, sample.as_ref())).into_response())
}

#[derive(Serialize)]
struct LocationJson<'a> {
    latitude: Option<f64>,
    longitude: Option<f64>,
    zone: Option<&'a str>,
    x_m: Option<f64>,
    y_m: Option<f64>,
}

impl<'a> From<&'a Location> for LocationJson<'a> {
    fn from(l: &'a Location) -> Self {
        LocationJson {
            latitude: l.latitude,
            longitude: l.longitude,
            zone: l.zone.as_deref(),
            x_m: l.x_m,
            y_m: l.y_m,
        }
    }
}

#[derive(Serialize)]
struct AssetJson<'a> {
    path: &'a TagPath,
    name: &'a str,
    level: &'static str,
    description: &'a str,
    /// As configured on this asset.
    location: LocationJson<'a>,
    /// After inheriting from its ancestors.
    effective_location: LocationJson<'a>,
    tags: Vec<&'a TagPath>,
    children: Vec<AssetJson<'a>>,
}

async fn list_assets(
    State(st): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
) -> Result<Response, ApiError> {
    caller.require(Permission::ReadTags)?;
    let ns = st.runtime.namespace.read();
    let mut tags_by_parent: BTreeMap<TagPath, Vec<&TagPath>> = BTreeMap::new();
    for t in ns
        .tags()
        .filter(|t| caller.access.can_read(t.path.as_str()))
    {
        if let Some(parent) = t.path.parent() {
            tags_by_parent.entry(parent).or_default().push(&t.path);
        }
    }
    let assets: Vec<&Asset> = ns
        .assets()
        .filter(|a| caller.access.can_see_asset(a.path.as_str()))
        .collect();
    fn build<'a>(
        a: &'a Asset,
        all: &[&'a Asset],
        tags: &mut BTreeMap<TagPath, Vec<&'a TagPath>>,
    ) -> AssetJson<'a> {
        let children = all
            .iter()
            .filter(|c| c.path.parent().as_ref() == Some(&a.path))
            .map(|c| build(c, all, tags))
            .collect();
        AssetJson {
            path: &a.path,
            name: &a.name,
            level: a.level.as_str(),
            description: &a.description,
            location: (&a.location).into(),
            effective_location: (&a.effective_location).into(),
            tags: tags.remove(&a.path).unwrap_or_default(),
            children,
        }
    }
    let roots: Vec<AssetJson<'_>> = assets
        .iter()
        .filter(|a| a.path.parent().is_none())
        .map(|a| build(a, &assets, &mut tags_by_parent))
        .collect();
    #[derive(Serialize)]
    struct Body<'a> {
        assets: Vec<AssetJson<'a>>,
    }
    Ok(Json(Body { assets: roots }).into_response())
}

/// `GET /healthz`: without credentials only whether the platform is up and every device is
/// connected (`ok`) or not (`degraded`), so an outsider learns no device names; with
/// credentials allowed to read tags, also the uptime, the tag count and each device's state.
async fn healthz(State(st): State<Arc<ApiState>>, caller: Option<Extension<Caller>>) -> Response {
    let rt = &st.runtime;
    let devices: BTreeMap<&str, &str> = rt
        .metrics
        .device_ids()
        .map(|id| {
            (
                id,
                if rt.metrics.device_connected(id) == Some(true) {
                    "up"
                } else {
                    "down"
                },
            )
        })
        .collect();
    let all_up = devices.values().all(|s| *s == "up");
    let details = caller.is_some_and(|Extension(c)| c.allows(Permission::ReadTags));
    if !details {
        #[derive(Serialize)]
        struct Short {
            status: &'static str,
        }
        let status = if all_up { "ok" } else { "degraded" };
        return Json(Short { status }).into_response();
    }
    #[derive(Serialize)]
    struct Body<'a> {
        status: &'static str,
        uptime_s: u64,
        tags: usize,
        devices: BTreeMap<&'a str, &'a str>,
    }
    let body = Body {
        status: if all_up { "ok" } else { "degraded" },
        uptime_s: st.started.elapsed().as_secs(),
        tags: rt.namespace.len(),
        devices,
    };
    Json(body).into_response()
}

async fn metrics(
    State(st): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
) -> Result<Response, ApiError> {
    caller.require(Permission::ReadTags)?;
    let mut text = st.runtime.render_metrics();
    text.push_str(&st.http.render());
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}
