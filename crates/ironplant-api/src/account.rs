//! Endpoints of the security layer: `POST /api/v1/login`, API tokens (`/api/v1/tokens`),
//! users (`/api/v1/users`, admins) and the audit log (`GET /api/v1/audit`, admins).
//!
//! The store calls (argon2, fsynced files and audit records) run on blocking threads. A
//! response carries a secret only when it creates one (login, token creation), with
//! `Cache-Control: no-store`.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use ironplant_core::{TagPath, Timestamp};
use ironplant_security::users::MAX_TOKEN_TTL;
use ironplant_security::{AuditQuery, Permission, Role, Security};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::auth::{login_refused, within, Caller, ClientAddr, PrefixRule, TagScopes, SESSION_TTL};
use crate::{ApiError, ApiState, JsonBody};

/// Lifetime of an API token when the request names none.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(90 * 24 * 3600);

fn security(st: &ApiState) -> Result<Arc<Security>, ApiError> {
    st.security.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "security_disabled",
            "this server runs without users and tokens",
        )
    })
}

fn internal(what: &str) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        format!("{what} failed unexpectedly; see the server log"),
    )
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        tracing::error!(error = %e, "security task failed");
        internal("the request")
    })?
}

/// Reads a JSON body. The message names the expected shape and the position of the error but
/// never quotes the body: it may hold a password.
fn json_body<T: DeserializeOwned>(body: &Bytes, shape: &str) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!(
                "the body must be JSON like {shape} (problem at line {} column {})",
                e.line(),
                e.column()
            ),
        )
    })
}

/// Maps a store error. Its messages name users and token ids, never secrets.
fn store_error(e: ironplant_security::Error) -> ApiError {
    use ironplant_security::Error as E;
    let (status, code) = match &e {
        E::UserExists(_) => (StatusCode::CONFLICT, "user_exists"),
        E::UnknownUser(_) => (StatusCode::NOT_FOUND, "user_not_found"),
        E::UnknownToken(_) => (StatusCode::NOT_FOUND, "token_not_found"),
        E::WeakPassword { .. } => (StatusCode::BAD_REQUEST, "weak_password"),
        E::InvalidName { .. } => (StatusCode::BAD_REQUEST, "invalid_name"),
        E::DeviceRoleForUser => (StatusCode::BAD_REQUEST, "bad_role"),
        E::TokenRoleTooHigh { .. } => (StatusCode::BAD_REQUEST, "role_too_high"),
        _ => {
            tracing::error!(error = %e, "security store error");
            return ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "security_error",
                "the security store failed; see the server log",
            );
        }
    };
    ApiError::new(status, code, e.to_string())
}

fn query_error(e: QueryRejection) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "bad_request",
        format!("cannot read the query string: {e}"),
    )
}

pub(crate) fn rfc3339_secs(secs: u64) -> String {
    Timestamp::from_system_time(UNIX_EPOCH + Duration::from_secs(secs)).to_rfc3339()
}

pub(crate) fn rfc3339(t: SystemTime) -> String {
    Timestamp::from_system_time(t).to_rfc3339()
}

pub(crate) fn no_store(status: StatusCode, body: impl Serialize) -> Response {
    (status, [(header::CACHE_CONTROL, "no-store")], Json(body)).into_response()
}

fn parse_role(s: &str) -> Result<Role, ApiError> {
    match s.parse::<Role>() {
        Ok(Role::Device) | Err(_) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_role",
            format!("role {s:?} is not valid; use viewer, operator, engineer or admin"),
        )),
        Ok(r) => Ok(r),
    }
}

/// A newly created token: the only response that shows its secret.
#[derive(Serialize)]
struct NewTokenJson {
    id: String,
    token: String,
    user: String,
    role: Role,
    label: String,
    expires: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    read_prefixes: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    write_prefixes: Option<Vec<String>>,
}

// ---- login -----------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    user: String,
    password: String,
}

/// `POST /api/v1/login` `{"user","password"}` → a session token valid for [`SESSION_TTL`].
pub(crate) async fn login(
    State(st): State<Arc<ApiState>>,
    Extension(ClientAddr(source)): Extension<ClientAddr>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let (user, t) = start_session(&st, source, &body).await?;
    Ok(no_store(
        StatusCode::OK,
        NewTokenJson {
            id: t.id,
            token: t.token,
            user,
            role: t.role,
            label: "session".into(),
            expires: rfc3339(t.expires),
            read_prefixes: None,
            write_prefixes: None,
        },
    ))
}

/// Checks `{"user","password"}` (throttled, lockout, audited by the library) and makes a
/// session token of the user's role valid for [`SESSION_TTL`]: the one login of the API and
/// the HMI ([`crate::session`]).
pub(crate) async fn start_session(
    st: &ApiState,
    source: std::net::IpAddr,
    body: &Bytes,
) -> Result<(String, ironplant_security::users::NewToken), ApiError> {
    let sec = security(st)?;
    let b: LoginBody = json_body(body, r#"{"user": "...", "password": "..."}"#)?;
    blocking(move || {
        let id = sec
            .users
            .login(&b.user, b.password.as_bytes(), source, "api")
            .map_err(|e| login_refused(&e))?;
        // A session never has more than the user's role, and no prefix rule beyond the user's.
        sec.users
            .create_token(
                &id.user,
                Some(id.role),
                SESSION_TTL,
                ironplant_security::users::SESSION_LABEL,
                Some(&id.user),
            )
            .map(|t| (id.user, t))
            .map_err(store_error)
    })
    .await
}

// ---- tokens ----------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateTokenBody {
    label: Option<String>,
    /// A duration like `90d`, `12h`; default [`DEFAULT_TOKEN_TTL`], at most 2 years.
    ttl: Option<String>,
    role: Option<String>,
    /// Another user's name (needs manage_users).
    user: Option<String>,
    read_prefixes: Option<Vec<String>>,
    write_prefixes: Option<Vec<String>>,
}

/// Checks requested prefixes and fits them inside the caller's own token rule (a token may
/// not be used to make a wider one). `None` requested inherits the caller's limit.
fn narrow(
    caller: &Caller,
    requested: Option<Vec<String>>,
    limit: Option<&Vec<String>>,
    what: &str,
) -> Result<Option<Vec<String>>, ApiError> {
    let Some(requested) = requested else {
        return Ok(limit.cloned());
    };
    for p in &requested {
        TagPath::parse(p).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_path",
                format!("{what} prefix {p:?} is not a tag path: {e}"),
            )
        })?;
        if let Some(limit) = limit {
            if !limit.iter().any(|l| within(p, l)) {
                return Err(caller.deny(format!(
                    "{what} prefix {p:?} is outside the prefixes of the token you called with"
                )));
            }
        }
    }
    Ok(Some(requested))
}

/// `POST /api/v1/tokens`: a token for oneself (or, with manage_users, for another user).
pub(crate) async fn create_token(
    State(st): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let sec = security(&st)?;
    let b: CreateTokenBody = json_body(
        &body,
        r#"{"label": "grafana", "ttl": "90d", "role": "viewer", "read_prefixes": ["site/area1"]}"#,
    )?;
    let me = caller.user().unwrap_or_default().to_owned();
    let target = b.user.clone().unwrap_or_else(|| me.clone());
    if target != me {
        caller.require(Permission::ManageUsers)?;
    }
    let ttl = match b.ttl.as_deref() {
        None => DEFAULT_TOKEN_TTL,
        Some(s) => humantime::parse_duration(s).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("ttl {s:?} is not a duration like 90d or 12h: {e}"),
            )
        })?,
    };
    if ttl.is_zero() || ttl > MAX_TOKEN_TTL {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "ttl must be more than 0 and at most 2 years (730d)",
        ));
    }
    let role = match b.role.as_deref().map(parse_role).transpose()? {
        Some(r) if !r.within(caller.role()) => {
            return Err(caller.deny(format!(
                "a token cannot have role {r}: you are acting with role {}",
                caller.role()
            )))
        }
        Some(r) => Some(r),
        // For oneself, the role of the credentials in use (a viewer token of an admin makes
        // viewer tokens); for another user, theirs.
        None if target == me => Some(caller.role()),
        None => None,
    };
    let limit = caller.token_rule.clone().unwrap_or_default();
    let rule = PrefixRule {
        read: narrow(&caller, b.read_prefixes, limit.read.as_ref(), "read")?,
        write: narrow(&caller, b.write_prefixes, limit.write.as_ref(), "write")?,
    };
    let label = b.label.unwrap_or_else(|| "api".into());
    let (t, user, label, rule) = blocking(move || {
        let t = sec
            .users
            .create_token(&target, role, ttl, &label, Some(&me))
            .map_err(store_error)?;
        if let Err(e) = TagScopes::set_token_rule(&TagScopes::path(&sec), &t.id, &rule) {
            // Never leave a token alive without the limits it was created with.
            tracing::error!(error = %e, token = %t.id, "cannot store the token's prefix rule; revoking it");
            let _ = sec.users.revoke_token(&t.id, Some(&me));
            return Err(internal("storing the token's prefix rule"));
        }
        Ok((t, target, label, rule))
    })
    .await?;
    Ok(no_store(
        StatusCode::CREATED,
        NewTokenJson {
            id: t.id,
            token: t.token,
            user,
            role: t.role,
            label,
            expires: rfc3339(t.expires),
            read_prefixes: rule.read,
            write_prefixes: rule.write,
        },
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListTokensQuery {
    user: Option<String>,
    #[serde(default)]
    all: bool,
}

#[derive(Serialize)]
struct TokenJson {
    id: String,
    user: String,
    role: Role,
    label: String,
    created: String,
    expires: String,
    revoked: Option<String>,
    #[serde(flatten)]
    rule: PrefixRule,
}

/// `GET /api/v1/tokens[?user=NAME|?all=true]`: one's own tokens (others' with manage_users).
pub(crate) async fn list_tokens(
    State(st): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    q: Result<Query<ListTokensQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let sec = security(&st)?;
    let Query(q) = q.map_err(query_error)?;
    let me = caller.user().unwrap_or_default().to_owned();
    let who = if q.all {
        caller.require(Permission::ManageUsers)?;
        None
    } else {
        let u = q.user.unwrap_or(me.clone());
        if u != me {
            caller.require(Permission::ManageUsers)?;
        }
        Some(u)
    };
    let tokens = blocking(move || {
        let list = sec.users.list_tokens(who.as_deref()).map_err(store_error)?;
        let scopes = TagScopes::load(&TagScopes::path(&sec)).map_err(|e| {
            tracing::error!(error = %e, "cannot read the API tag scopes");
            internal("reading the tag scopes")
        })?;
        Ok(list
            .into_iter()
            .map(|t| TokenJson {
                rule: scopes.tokens.get(&t.id).cloned().unwrap_or_default(),
                created: rfc3339_secs(t.created),
                expires: rfc3339_secs(t.expires),
                revoked: t.revoked.map(rfc3339_secs),
                id: t.id,
                user: t.user,
                role: t.role,
                label: t.label,
            })
            .collect::<Vec<_>>())
    })
    .await?;
    #[derive(Serialize)]
    struct Body {
        count: usize,
        tokens: Vec<TokenJson>,
    }
    Ok(Json(Body {
        count: tokens.len(),
        tokens,
    })
    .into_response())
}

/// `DELETE /api/v1/tokens/{id}`: revokes one's own token (anyone's with manage_users).
pub(crate) async fn revoke_token(
    State(st): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let sec = security(&st)?;
    let me = caller.user().unwrap_or_default().to_owned();
    let s = sec.clone();
    let (id, owner) = blocking(move || {
        let owner = s
            .users
            .list_tokens(None)
            .map_err(store_error)?
            .into_iter()
            .find(|t| t.id == id)
            .map(|t| t.user);
        Ok((id, owner))
    })
    .await?;
    let Some(owner) = owner else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "token_not_found",
            format!(
                "no API token with id {:?}",
                ironplant_security::audit::bounded(&id)
            ),
        ));
    };
    if owner != me {
        caller.require(Permission::ManageUsers)?;
    }
    blocking(move || sec.users.revoke_token(&id, Some(&me)).map_err(store_error)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---- users -----------------------------------------------------------------------------------

/// `GET /api/v1/users` (manage_users).
pub(crate) async fn list_users(
    State(st): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
) -> Result<Response, ApiError> {
    let sec = security(&st)?;
    caller.require(Permission::ManageUsers)?;
    let users = blocking(move || sec.users.list_users().map_err(store_error)).await?;
    #[derive(Serialize)]
    struct UserJson {
        name: String,
        role: Role,
        created: String,
        disabled: bool,
    }
    #[derive(Serialize)]
    struct Body {
        users: Vec<UserJson>,
    }
    Ok(Json(Body {
        users: users
            .into_iter()
            .map(|u| UserJson {
                name: u.name,
                role: u.role,
                created: rfc3339_secs(u.created),
                disabled: u.disabled,
            })
            .collect(),
    })
    .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateUserBody {
    name: String,
    password: String,
    role: String,
}

/// `POST /api/v1/users` `{"name","password","role"}` (manage_users).
pub(crate) async fn create_user(
    State(st): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let sec = security(&st)?;
    caller.require(Permission::ManageUsers)?;
    let b: CreateUserBody = json_body(
        &body,
        r#"{"name": "alice", "password": "at least 12 characters", "role": "operator"}"#,
    )?;
    let role = parse_role(&b.role)?;
    let actor = caller.user().map(str::to_owned);
    let name = b.name.clone();
    blocking(move || {
        sec.users
            .create_user(&b.name, &b.password, role, actor.as_deref())
            .map_err(store_error)
    })
    .await?;
    #[derive(Serialize)]
    struct Body {
        name: String,
        role: Role,
    }
    Ok((StatusCode::CREATED, Json(Body { name, role })).into_response())
}

/// `DELETE /api/v1/users/{name}` (manage_users; not oneself, so the last admin cannot
/// remove the way back in by accident). Revokes the user's tokens.
pub(crate) async fn delete_user(
    State(st): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let sec = security(&st)?;
    caller.require(Permission::ManageUsers)?;
    if caller.user() == Some(name.as_str()) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "cannot_delete_self",
            "you cannot delete the account you are logged in with; ask another administrator",
        ));
    }
    let actor = caller.user().map(str::to_owned);
    blocking(move || {
        sec.users
            .delete_user(&name, actor.as_deref())
            .map_err(store_error)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleBody {
    role: String,
}

/// `PUT /api/v1/users/{name}/role` `{"role"}` (manage_users; not one's own). Takes effect on
/// the user's next request: every request re-reads the user's role, and a token or session
/// never acts above it.
pub(crate) async fn set_role(
    State(st): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let sec = security(&st)?;
    caller.require(Permission::ManageUsers)?;
    let b: RoleBody = json_body(&body, r#"{"role": "viewer"}"#)?;
    let role = parse_role(&b.role)?;
    if caller.user() == Some(name.as_str()) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "cannot_change_self",
            "you cannot change the role of the account you are logged in with; ask another \
             administrator",
        ));
    }
    let actor = caller.user().map(str::to_owned);
    blocking(move || {
        sec.users
            .set_role(&name, role, actor.as_deref())
            .map_err(store_error)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordBody {
    password: String,
}

/// `PUT /api/v1/users/{name}/password` `{"password"}` (manage_users).
pub(crate) async fn set_password(
    State(st): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let sec = security(&st)?;
    caller.require(Permission::ManageUsers)?;
    let b: PasswordBody = json_body(&body, r#"{"password": "at least 12 characters"}"#)?;
    let actor = caller.user().map(str::to_owned);
    blocking(move || {
        sec.users
            .set_password(&name, &b.password, actor.as_deref())
            .map_err(store_error)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---- audit -----------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditParams {
    from: Option<String>,
    to: Option<String>,
    /// Comma-separated kinds, e.g. `login_failed,acl_denied`.
    kind: Option<String>,
    after: Option<u64>,
    limit: Option<usize>,
}

/// `GET /api/v1/audit?from&to&kind&after&limit` (read_audit): oldest first, paged by `next`.
pub(crate) async fn get_audit(
    State(st): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    p: Result<Query<AuditParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let sec = security(&st)?;
    caller.require(Permission::ReadAudit)?;
    let Query(p) = p.map_err(query_error)?;
    let now = Timestamp::now();
    let time = |name: &str, v: Option<&str>| -> Result<Option<i64>, ApiError> {
        v.map(|v| {
            crate::history::parse_time(v, now)
                .map(|t| t.0)
                .map_err(|e| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "bad_request",
                        format!("{name}={v:?} is not a time ({e}); use RFC 3339 or now-1h"),
                    )
                })
        })
        .transpose()
    };
    let limit = p.limit.unwrap_or(100);
    if limit == 0 || limit > AuditQuery::MAX_LIMIT {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "limit_too_large",
            format!(
                "limit={limit} is out of range; use 1 to {}",
                AuditQuery::MAX_LIMIT
            ),
        ));
    }
    let q = AuditQuery {
        from_us: time("from", p.from.as_deref())?,
        to_us: time("to", p.to.as_deref())?,
        kinds: p
            .kind
            .iter()
            .flat_map(|k| k.split(','))
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(str::to_owned)
            .collect(),
        after: p.after,
        limit,
    };
    let page = blocking(move || {
        // Read what was submitted before this request (denials included) too.
        sec.audit.sync();
        sec.audit.query(&q).map_err(store_error)
    })
    .await?;
    Ok(Json(page).into_response())
}
