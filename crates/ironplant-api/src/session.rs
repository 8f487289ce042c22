//! Browser sessions for the web HMI ([`crate::hmi`]): a login that puts the session token in a
//! cookie the page's scripts cannot read, and the CSRF token every state-changing request made
//! with that cookie must carry.
//!
//! - `POST /api/v1/session` `{"user","password"}`: the same login as `POST /api/v1/login`
//!   (throttled, lockout, audited; a 12 h session token of the user's role), answered with
//!   `Set-Cookie: ironplant_session=…; HttpOnly; Secure; SameSite=Strict; Path=/` and
//!   `{"user","role","permissions","csrf","expires"}`.
//! - `GET /api/v1/session`: who the cookie is, and its CSRF token (a page reloads it at start).
//! - `DELETE /api/v1/session`: revokes the session token and clears the cookie.
//!
//! Invariants (enforced by [`crate::auth::authenticate`] through [`check_cookie_request`]):
//! - The cookie is only a bearer token the browser adds by itself, so it counts only when no
//!   `Authorization` header is sent, and every request with it that is not GET/HEAD must carry
//!   `X-CSRF-Token` equal to [`csrf_for`] of that session (HMAC-SHA256 under a key drawn at
//!   process start: a page of another origin can neither read it nor derive it) and, when the
//!   browser says where it comes from (`Origin`), come from this server's origin. Otherwise 403
//!   `csrf`, audited. SameSite=Strict keeps the cookie off cross-site requests in the first
//!   place; the token is the second, independent lock.
//! - The live WebSocket takes the cookie only with the CSRF token in its first message
//!   (`{"op":"auth","csrf":"…"}`) and a same-origin `Origin` ([`crate::live`]): no cross-site
//!   WebSocket hijacking.
//! - The key lives in memory only: after a restart the page asks `GET /api/v1/session` again
//!   (its session token itself survives, it is in the user store).

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use ironplant_security::users::AuthMethod;
use ironplant_security::{Permission, Role};
use serde::Serialize;

use crate::account::{no_store, rfc3339, rfc3339_secs, start_session};
use crate::auth::{permission_name, Caller, ClientAddr, SESSION_TTL};
use crate::{ApiError, ApiState, JsonBody};

/// The session cookie's name.
pub const COOKIE: &str = "ironplant_session";
/// The header carrying the CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// Where the session endpoints live.
pub const PATH: &str = "/api/v1/session";

fn key() -> &'static ring::hmac::Key {
    static KEY: OnceLock<ring::hmac::Key> = OnceLock::new();
    KEY.get_or_init(|| {
        let rng = ring::rand::SystemRandom::new();
        // A failing system RNG leaves no safe way to run; the TLS stack needs it too.
        #[allow(clippy::expect_used)]
        ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &rng)
            .expect("the system random number generator works")
    })
}

/// The CSRF token of a session token: hex of HMAC-SHA256(process key, token).
pub fn csrf_for(session_token: &str) -> String {
    let tag = ring::hmac::sign(key(), session_token.as_bytes());
    tag.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `given` is the CSRF token of `session_token` (constant time).
pub fn csrf_matches(session_token: &str, given: &str) -> bool {
    let Some(bytes) = unhex(given) else {
        return false;
    };
    ring::hmac::verify(key(), session_token.as_bytes(), &bytes).is_ok()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || s.len() > 128 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The session token in the request's `Cookie` header(s), if any.
pub fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// Whether the request's `Origin`, when the browser sent one, is this server (its `Host`).
/// Browsers send `Origin` on every cross-origin request and on same-origin non-GET ones; a
/// request without it is not from another origin's page.
pub fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let (Ok(origin), Some(Ok(host))) = (
        origin.to_str(),
        headers.get(header::HOST).map(HeaderValue::to_str),
    ) else {
        return false;
    };
    let authority = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"));
    authority.is_some_and(|a| a.eq_ignore_ascii_case(host))
}

/// Why a request authenticated by the cookie is refused before it runs.
pub fn check_cookie_request(
    method: &Method,
    headers: &HeaderMap,
    token: &str,
) -> Result<(), String> {
    if !same_origin(headers) {
        return Err(
            "the request comes from another origin's page; the HMI's session cookie is accepted \
             only from the HMI itself"
                .into(),
        );
    }
    if matches!(*method, Method::GET | Method::HEAD) {
        return Ok(());
    }
    let given = headers
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if given.is_empty() {
        return Err(format!(
            "a request with the session cookie must send the {CSRF_HEADER} header (from GET \
             {PATH}); reload the page"
        ));
    }
    if !csrf_matches(token, given) {
        return Err(format!(
            "the {CSRF_HEADER} header does not match this session (the server may have \
             restarted); reload the page"
        ));
    }
    Ok(())
}

#[derive(Serialize)]
struct SessionJson {
    user: String,
    role: Role,
    permissions: Vec<&'static str>,
    /// `null` when the caller did not authenticate with the cookie (a bearer token needs none).
    csrf: Option<String>,
    expires: Option<String>,
}

fn permissions(role: Role) -> Vec<&'static str> {
    Permission::ALL
        .iter()
        .filter(|p| role.allows(**p))
        .map(|p| permission_name(*p))
        .collect()
}

fn cookie(value: &str, max_age: u64) -> HeaderValue {
    let text =
        format!("{COOKIE}={value}; Path=/; Max-Age={max_age}; HttpOnly; Secure; SameSite=Strict");
    // The token is `ipt_` plus hex: always a valid header value.
    HeaderValue::from_str(&text)
        .unwrap_or_else(|_| HeaderValue::from_static("ironplant_session=; Max-Age=0"))
}

/// Leaves only the Bearer challenge on a 401 answered to a script in a browser (a `fetch` sends
/// `Sec-Fetch-Mode` other than `navigate`) or to a request with the session cookie: a Basic
/// challenge makes browsers open their own password prompt even for a script's request (and
/// a headless one wait for it), which would stand in front of the HMI's login form and hang
/// its calls. Other clients (curl, scripts) keep both challenges.
pub(crate) async fn no_basic_prompt_for_scripts(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let h = req.headers();
    let script = h
        .get("sec-fetch-mode")
        .is_some_and(|m| m.as_bytes() != b"navigate")
        || cookie_token(h).is_some();
    let mut res = next.run(req).await;
    if script && res.status() == StatusCode::UNAUTHORIZED {
        let h = res.headers_mut();
        let bearer: Vec<HeaderValue> = h
            .get_all(header::WWW_AUTHENTICATE)
            .iter()
            .filter(|v| !v.as_bytes().starts_with(b"Basic"))
            .cloned()
            .collect();
        h.remove(header::WWW_AUTHENTICATE);
        for v in bearer {
            h.append(header::WWW_AUTHENTICATE, v);
        }
    }
    res
}

/// `POST /api/v1/session` `{"user","password"}`.
pub(crate) async fn login(
    State(st): State<Arc<ApiState>>,
    Extension(ClientAddr(source)): Extension<ClientAddr>,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    if !same_origin(&headers) {
        return Err(refused(
            st.security.as_deref(),
            source,
            &Method::POST,
            PATH,
            "refused: a login from another origin's page; log in from the HMI itself".into(),
        ));
    }
    let (user, t) = start_session(&st, source, &body).await?;
    let json = SessionJson {
        user,
        role: t.role,
        permissions: permissions(t.role),
        csrf: Some(csrf_for(&t.token)),
        expires: Some(rfc3339(t.expires)),
    };
    let mut res = no_store(StatusCode::OK, json);
    res.headers_mut()
        .insert(header::SET_COOKIE, cookie(&t.token, SESSION_TTL.as_secs()));
    Ok(res)
}

/// `GET /api/v1/session`: the caller, its permissions and (with the cookie) its CSRF token.
pub(crate) async fn get(
    State(st): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Some(identity) = caller.identity.clone() else {
        return Ok(no_store(
            StatusCode::OK,
            SessionJson {
                user: "anonymous".into(),
                role: Role::Admin,
                permissions: permissions(Role::Admin),
                csrf: None,
                expires: None,
            },
        ));
    };
    let from_cookie = headers
        .get(header::AUTHORIZATION)
        .is_none()
        .then(|| cookie_token(&headers))
        .flatten();
    let expires = match (&identity.via, &st.security) {
        (AuthMethod::Token { id }, Some(sec)) => {
            let (sec, id, user) = (sec.clone(), id.clone(), identity.user.clone());
            tokio::task::spawn_blocking(move || {
                sec.users
                    .list_tokens(Some(&user))
                    .ok()
                    .and_then(|ts| ts.into_iter().find(|t| t.id == id))
                    .map(|t| rfc3339_secs(t.expires))
            })
            .await
            .ok()
            .flatten()
        }
        _ => None,
    };
    Ok(no_store(
        StatusCode::OK,
        SessionJson {
            user: identity.user.clone(),
            role: identity.role,
            permissions: permissions(identity.role),
            csrf: from_cookie.as_deref().map(csrf_for),
            expires,
        },
    ))
}

/// `DELETE /api/v1/session`: logs out (the session token is revoked, the cookie cleared).
pub(crate) async fn logout(
    State(st): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
) -> Result<Response, ApiError> {
    if let (Some(identity), Some(sec)) = (caller.identity.clone(), st.security.clone()) {
        if let AuthMethod::Token { id } = identity.via {
            let user = identity.user.clone();
            let revoked =
                tokio::task::spawn_blocking(move || sec.users.revoke_token(&id, Some(&user))).await;
            if !matches!(revoked, Ok(Ok(()))) {
                return Err(ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "security_error",
                    "the session could not be revoked; see the server log",
                ));
            }
        }
    }
    let mut res = (
        StatusCode::OK,
        [(header::CACHE_CONTROL, "no-store")],
        Json(serde_json::json!({"logged_out": true})),
    )
        .into_response();
    res.headers_mut().insert(header::SET_COOKIE, cookie("", 0));
    Ok(res)
}

/// A 403 `csrf` saying `why`, recorded in the audit log (`api:csrf`, `<METHOD> <path>`): the
/// one answer to a request with the session cookie that does not come from the HMI.
pub(crate) fn refused(
    sec: Option<&ironplant_security::Security>,
    source: IpAddr,
    method: &Method,
    path: &str,
    why: String,
) -> ApiError {
    if let Some(sec) = sec {
        crate::auth::record_denial(sec, None, "http-api".into(), source, "csrf", method, path);
    }
    ApiError::new(StatusCode::FORBIDDEN, "csrf", why)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).expect("header value"));
        }
        h
    }

    #[test]
    fn csrf_token_is_bound_to_its_session() {
        let a = csrf_for("ipt_aaaa");
        assert_eq!(a.len(), 64);
        assert!(csrf_matches("ipt_aaaa", &a));
        assert!(!csrf_matches("ipt_bbbb", &a), "another session's token");
        assert!(!csrf_matches("ipt_aaaa", &a[..62]), "cut short");
        assert!(!csrf_matches("ipt_aaaa", "zz"), "not hex");
        assert!(!csrf_matches("ipt_aaaa", ""));
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let h = headers(&[("cookie", "a=1; ironplant_session=ipt_x_y ; b=2")]);
        assert_eq!(cookie_token(&h).as_deref(), Some("ipt_x_y"));
        let h = headers(&[("cookie", "a=1"), ("cookie", "ironplant_session=ipt_z")]);
        assert_eq!(cookie_token(&h).as_deref(), Some("ipt_z"));
        assert_eq!(
            cookie_token(&headers(&[("cookie", "ironplant_sessionx=1")])),
            None
        );
        assert_eq!(
            cookie_token(&headers(&[("cookie", "ironplant_session=")])),
            None
        );
    }

    #[test]
    fn state_changes_need_the_token_and_the_origin() {
        let tok = "ipt_session";
        let csrf = csrf_for(tok);
        let ok = headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "https://127.0.0.1:8080"),
            ("x-csrf-token", &csrf),
        ]);
        assert!(check_cookie_request(&Method::POST, &ok, tok).is_ok());
        let no_token = headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "https://127.0.0.1:8080"),
        ]);
        assert!(check_cookie_request(&Method::POST, &no_token, tok).is_err());
        assert!(
            check_cookie_request(&Method::GET, &no_token, tok).is_ok(),
            "reads need no token"
        );
        let wrong = headers(&[
            ("host", "127.0.0.1:8080"),
            ("x-csrf-token", &csrf_for("ipt_other")),
        ]);
        assert!(check_cookie_request(&Method::DELETE, &wrong, tok).is_err());
        let foreign = headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "https://evil.example"),
            ("x-csrf-token", &csrf),
        ]);
        assert!(
            check_cookie_request(&Method::POST, &foreign, tok).is_err(),
            "even with the token"
        );
        assert!(
            check_cookie_request(&Method::GET, &foreign, tok).is_err(),
            "reads too"
        );
        let null = headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "null"),
            ("x-csrf-token", &csrf),
        ]);
        assert!(
            check_cookie_request(&Method::POST, &null, tok).is_err(),
            "a sandboxed page"
        );
    }
}
