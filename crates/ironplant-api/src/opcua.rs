//! The OPC UA routes, for engineers mapping a server's variables to tags (change_config):
//!
//! - `POST /api/v1/opcua/browse` `{"url", "node"?, "depth"?, "policy"?, "mode"?, "user"?,
//!   "password"?, "config"?: {"connection", "prefix"}}`: the references under `node` (default
//!   the Objects folder), down to `depth` levels (1–5), with NodeIds, browse names, node classes
//!   and data types; with `config`, the `[[opcua.node]]` TOML of the variables found (as
//!   `ironplant opcua browse --config` prints it). An untrusted server answers 409
//!   `opcua_untrusted`, its thumbprint in the message.
//! - `POST /api/v1/opcua/trust` `{"thumbprint", "server"?}`: trusts a refused certificate (of a
//!   server the platform connects to, or with `"server": true` of a client of its own OPC UA
//!   server). Audited.
//!
//! Sessions use the platform's OPC UA client certificate in `<data-dir>/opcua/pki`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use ironplant_core::TagPath;
use ironplant_opcua::client::{self, ClientSettings, Identity, Policy};
use ironplant_opcua::opcua::types::{NodeId, ObjectId};
use ironplant_opcua::pki::Pki;
use ironplant_opcua::{browse, source};
use ironplant_security::Permission;
use serde::Deserialize;
use serde_json::json;

use crate::auth::Caller;
use crate::{ApiError, ApiState, JsonBody};

fn bad(message: String) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BrowseBody {
    url: String,
    node: Option<String>,
    depth: Option<u32>,
    policy: Option<String>,
    mode: Option<String>,
    user: Option<String>,
    password: Option<String>,
    config: Option<ConfigBody>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigBody {
    connection: String,
    prefix: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TrustBody {
    thumbprint: String,
    #[serde(default)]
    server: bool,
}

fn parse<T: for<'de> Deserialize<'de>>(body: &[u8], example: &str) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| bad(format!("the body must be JSON like {example}: {e}")))
}

/// `<data-dir>/opcua/<sub>`: the security directory is `<data-dir>/security`.
fn pki_dir(st: &ApiState, server: bool) -> Result<PathBuf, ApiError> {
    let sec = st.security.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_data_dir",
            "OPC UA needs the platform's data directory",
        )
    })?;
    let data = sec.dir().parent().map(PathBuf::from).unwrap_or_default();
    Ok(if server {
        ironplant_opcua::pki::server_dir(&data)
    } else {
        ironplant_opcua::pki::client_dir(&data)
    })
}

fn policy(text: Option<&str>) -> Result<Policy, ApiError> {
    let text = text.unwrap_or("Basic256Sha256");
    ironplant_opcua::settings::parse_policy(text).ok_or_else(|| {
        bad(format!(
            "unknown policy {text:?}: use {}",
            ironplant_opcua::settings::POLICIES
        ))
    })
}

/// `POST /api/v1/opcua/browse`.
pub(crate) async fn post_browse(
    State(st): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    caller.require(Permission::ChangeConfig)?;
    let b: BrowseBody = parse(
        &body,
        r#"{"url": "opc.tcp://plc-7:4840/", "node": "ns=2;s=Line1", "depth": 2, "user": "ironplant", "password": "..."}"#,
    )?;
    if !b.url.starts_with("opc.tcp://") {
        return Err(bad(format!(
            "{:?} is not an OPC UA endpoint URL: write opc.tcp://HOST:PORT/",
            b.url
        )));
    }
    let depth = b.depth.unwrap_or(1);
    if !(1..=5).contains(&depth) {
        return Err(bad(format!("depth {depth} is out of range: use 1 to 5")));
    }
    let start: NodeId = match &b.node {
        None => NodeId::from(ObjectId::ObjectsFolder),
        Some(text) => text.parse().map_err(|_| {
            bad(format!(
                "{text:?} is not a NodeId (e.g. i=85, ns=2;s=Line1, ns=3;i=1001)"
            ))
        })?,
    };
    let policy = policy(b.policy.as_deref())?;
    let encrypt = match b.mode.as_deref() {
        None | Some("SignAndEncrypt") => policy != Policy::None,
        Some("Sign") => false,
        Some(other) => {
            return Err(bad(format!(
                "unknown mode {other:?}: use SignAndEncrypt or Sign"
            )))
        }
    };
    let identity = match (b.user, b.password) {
        (None, _) => Identity::Anonymous,
        (Some(name), Some(password)) => Identity::User { name, password },
        (Some(_), None) => return Err(bad("\"user\" needs \"password\"".to_owned())),
    };
    let generate = match b.config {
        None => None,
        Some(c) => Some((
            c.connection,
            TagPath::parse(c.prefix.trim_end_matches('/')).map_err(|e| {
                bad(format!(
                    "config.prefix {:?} is not an asset path ({e}); e.g. \
                     acme/lyon/packaging/line1/labeller",
                    c.prefix
                ))
            })?,
        )),
    };
    let pki = Pki::open_or_create(&pki_dir(&st, false)?, SystemTime::now())
        .map_err(|e| internal(format!("the OPC UA certificates: {e}")))?;
    pki.application_certificate(
        source::APPLICATION_URI,
        &source::client_names(),
        SystemTime::now(),
    )
    .map_err(|e| internal(format!("the OPC UA client certificate: {e}")))?;
    let settings = ClientSettings {
        url: b.url.clone(),
        policy,
        encrypt,
        identity,
        application_uri: source::APPLICATION_URI.into(),
        request_timeout: Duration::from_secs(10),
        retries: 0,
    };
    let conn = match client::connect(&pki, &settings).await {
        Ok(c) => c,
        Err(e) => {
            if let Some(thumb) =
                client::untrusted_thumbprint(&pki, &settings.url, settings.request_timeout, &e)
                    .await
            {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "opcua_untrusted",
                    format!(
                        "{}: the server's certificate is not trusted (thumbprint {thumb}); check \
                         it with the server's administrator, then trust it with POST \
                         /api/v1/opcua/trust {{\"thumbprint\": \"{thumb}\"}}",
                        b.url
                    ),
                ));
            }
            return Err(ApiError::new(
                StatusCode::BAD_GATEWAY,
                "opcua_connect_failed",
                e.to_string(),
            ));
        }
    };
    let failed = |e: client::ClientError| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "opcua_browse_failed",
            e.to_string(),
        )
    };
    let result = async {
        if let Some((id, prefix)) = generate {
            let vars = browse::variables(&conn, &start, depth, 10_000)
                .await
                .map_err(failed)?;
            let namespaces = browse::namespaces(&conn).await.map_err(failed)?;
            return Ok(json!({
                "url": b.url,
                "variables": vars.len(),
                "config": browse::config(&vars, &id, &prefix, &namespaces),
            }));
        }
        let mut nodes = Vec::new();
        let mut stack = vec![(start.clone(), 0u32)];
        while let Some((node, level)) = stack.pop() {
            if level >= depth || nodes.len() >= 10_000 {
                continue;
            }
            let children = conn.browse(&node).await.map_err(failed)?;
            let ids: Vec<_> = children.iter().map(|c| c.node_id.clone()).collect();
            let types = conn.data_types(&ids).await.map_err(failed)?;
            for (c, t) in children.into_iter().zip(types) {
                nodes.push(json!({
                    "node_id": c.node_id.to_string(),
                    "browse_name": c.browse_name,
                    "display_name": c.display_name,
                    "node_class": format!("{:?}", c.node_class),
                    "data_type": t.map(|t| t.to_string()),
                    "parent": node.to_string(),
                }));
                stack.push((c.node_id, level + 1));
            }
        }
        Ok(json!({ "url": b.url, "nodes": nodes }))
    }
    .await;
    conn.close().await;
    result.map(|v| Json(v).into_response())
}

fn internal(message: String) -> ApiError {
    tracing::error!("{message}");
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
}

/// `POST /api/v1/opcua/trust`.
pub(crate) async fn post_trust(
    State(st): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    caller.require(Permission::ChangeConfig)?;
    let b: TrustBody = parse(&body, r#"{"thumbprint": "5246F240C1D2E3F4..."}"#)?;
    let pki = Pki::open_or_create(&pki_dir(&st, b.server)?, SystemTime::now())
        .map_err(|e| internal(format!("the OPC UA certificates: {e}")))?;
    let full = pki
        .trust(&b.thumbprint)
        .map_err(|e| ApiError::new(StatusCode::NOT_FOUND, "unknown_thumbprint", e.to_string()))?;
    let what = if b.server {
        "OPC UA server: trusted client certificate"
    } else {
        "OPC UA client: trusted server certificate"
    };
    if let Some(sec) = &st.security {
        sec.audit
            .submit(ironplant_security::AuditEvent::ConfigChanged {
                actor: caller.identity.as_ref().map(|i| i.user.clone()),
                what: format!("{what} {full}"),
            });
    }
    Ok(Json(json!({ "trusted": full, "server": b.server })).into_response())
}
