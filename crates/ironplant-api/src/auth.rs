//! Who is calling and what they may do: the authentication middleware, the [`Caller`] every
//! handler receives, and per-tag-prefix rules ([`TagScopes`]) on top of the role's permissions.
//!
//! Credentials (checked by `ironplant-security`, which owns hashing, constant-time comparison,
//! throttling and lockout):
//! - `Authorization: Bearer ipt_…`: an API token, or a session token from `POST /api/v1/login`;
//! - `Authorization: Basic …`: user name and password, a full login each request (argon2id,
//!   counted by the lockout like any login).
//!
//! Invariants:
//! - With security on, nothing but [`is_public`] paths reaches a handler without an identity.
//! - Every 401 and 403 leaves an audit record (password failures are recorded by the library's
//!   `login`; the rest here through the non-blocking `submit`), except `GET /api/v1/session`
//!   sent with no credential at all: the HMI's login screen asking whether anyone is logged in.
//! - No credential is logged, echoed in an error, or put in an audit record.
//! - A tag is reachable only if *every* prefix rule of the caller (its user's, its token's)
//!   allows it; prefixes match whole levels (`a/b` covers `a/b` and `a/b/c`, not `a/bc`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ironplant_security::audit::bounded;
use ironplant_security::users::AuthMethod;
use ironplant_security::{
    AuditEvent, Identity, LoginError, Permission, Role, Security, TokenError,
};

use crate::{ApiError, ApiState};

/// Lifetime of a session token from `POST /api/v1/login`: one working day and a bit, so a
/// shift never has to log in twice, and a token left in a browser is useless by the next day.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

/// Paths served without HTTP authentication: the health probe, the login itself, the API's
/// published description, MQTT over WebSocket (the broker authenticates at CONNECT through
/// its `Auth` hook) and the live API (a browser cannot set `Authorization` on a WebSocket, so
/// its first message carries the token; credentials sent in the header are checked here as for
/// any route, see [`crate::live`]).
pub fn is_public(path: &str) -> bool {
    crate::hmi::is_asset(path)
        || path == "/healthz"
        || path == "/api/v1/login"
        || path == crate::openapi::PATH
        || path == crate::mqtt_ws::PATH
        || path == crate::live::PATH
}

/// The peer address of the request (unspecified when the server was not started with
/// connect info, as in router tests). Never taken from `X-Forwarded-For`: that is the client's
/// word, and lockout per address must not be that easy to dodge.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub IpAddr);

// ---- prefix rules ----------------------------------------------------------------------------

// The one policy lives in `ironplant-security` (MQTT asks it too); re-exported for handlers.
pub use ironplant_security::policy::{within, PrefixRule, TagAccess, TagScopes, SCOPES_FILE};

// ---- the caller ------------------------------------------------------------------------------

/// The authenticated caller, put in the request's extensions by [`authenticate`].
#[derive(Clone)]
pub struct Caller {
    /// `None` only when the API runs without security (router tests): everything is allowed.
    pub identity: Option<Identity>,
    pub access: TagAccess,
    /// The token's own prefix rule (a token made by this caller may not exceed it).
    pub token_rule: Option<PrefixRule>,
    pub source: IpAddr,
    method: Method,
    path: String,
    security: Option<Arc<Security>>,
}

impl std::fmt::Debug for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caller")
            .field("identity", &self.identity)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

pub fn permission_name(p: Permission) -> &'static str {
    match p {
        Permission::ReadTags => "read_tags",
        Permission::AckAlarms => "ack_alarms",
        Permission::WriteSetpoints => "write_setpoints",
        Permission::ChangeConfig => "change_config",
        Permission::ManageUsers => "manage_users",
        Permission::ManageDevices => "manage_devices",
        Permission::ReadAudit => "read_audit",
    }
}

impl Caller {
    fn unrestricted(source: IpAddr, method: Method, path: String) -> Caller {
        Caller {
            identity: None,
            access: TagAccess::unrestricted(),
            token_rule: None,
            source,
            method,
            path,
            security: None,
        }
    }

    /// The user name (`None` without security).
    pub fn user(&self) -> Option<&str> {
        self.identity.as_ref().map(|i| i.user.as_str())
    }

    /// The effective role (`Admin` without security, where everything is allowed).
    pub fn role(&self) -> Role {
        self.identity.as_ref().map_or(Role::Admin, |i| i.role)
    }

    pub fn allows(&self, p: Permission) -> bool {
        self.identity.as_ref().is_none_or(|i| i.role.allows(p))
    }

    /// 403 (recorded) unless the caller's role has `p`.
    pub fn require(&self, p: Permission) -> Result<(), ApiError> {
        if self.allows(p) {
            return Ok(());
        }
        Err(self.deny(format!(
            "your role {} does not have the permission {} that {} {} needs",
            self.role(),
            permission_name(p),
            self.method,
            self.path
        )))
    }

    /// 403 (recorded) unless the caller may read `tag`.
    pub fn require_read(&self, tag: &str) -> Result<(), ApiError> {
        if self.access.can_read(tag) {
            return Ok(());
        }
        Err(self.deny(format!(
            "you may not read {tag:?}: it is outside the tag prefixes you are limited to"
        )))
    }

    /// 403 (recorded) unless the caller may write `tag` (for the command path).
    pub fn require_write(&self, tag: &str) -> Result<(), ApiError> {
        self.require(Permission::WriteSetpoints)?;
        if self.access.can_write(tag) {
            return Ok(());
        }
        Err(self.deny(format!(
            "you may not write {tag:?}: it is outside the tag prefixes you may write"
        )))
    }

    /// A 403 `forbidden`, recorded in the audit log.
    pub fn deny(&self, message: String) -> ApiError {
        if let Some(sec) = &self.security {
            let client = match self.identity.as_ref().map(|i| &i.via) {
                Some(AuthMethod::Token { id }) => format!("http-api token:{id}"),
                _ => "http-api".to_owned(),
            };
            record_denial(
                sec,
                self.user().map(str::to_owned),
                client,
                self.source,
                "forbidden",
                &self.method,
                &self.path,
            );
        }
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }
}

/// API denials are written as `acl_denied` records (the library's event for refused access):
/// `client_id` "http-api" (with the token id when a token was used), `action`
/// "api:<error code>", `topic` "<METHOD> <path>" (no query string: it is the client's text).
pub(crate) fn record_denial(
    sec: &Security,
    principal: Option<String>,
    client_id: String,
    source: IpAddr,
    code: &str,
    method: &Method,
    path: &str,
) {
    sec.audit.submit(AuditEvent::AclDenied {
        principal,
        client_id,
        source: Some(source.to_string()),
        action: format!("api:{code}"),
        topic: bounded(&format!("{method} {path}")),
    });
}

// ---- authentication --------------------------------------------------------------------------

enum Credentials {
    Bearer(String),
    Basic { user: String, password: Vec<u8> },
}

impl Credentials {
    fn parse(headers: &HeaderMap) -> Result<Option<Credentials>, &'static str> {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Ok(None);
        };
        let value = value
            .to_str()
            .map_err(|_| "the Authorization header is not ASCII")?;
        let (scheme, rest) = value
            .trim()
            .split_once(' ')
            .ok_or("the Authorization header must be `Bearer <token>` or `Basic <base64>`")?;
        let rest = rest.trim();
        if scheme.eq_ignore_ascii_case("bearer") {
            Ok(Some(Credentials::Bearer(rest.to_owned())))
        } else if scheme.eq_ignore_ascii_case("basic") {
            let decoded = base64_decode(rest).ok_or("the Basic credentials are not base64")?;
            let colon = decoded
                .iter()
                .position(|&b| b == b':')
                .ok_or("the Basic credentials must be `user:password`")?;
            let user = String::from_utf8(decoded[..colon].to_vec())
                .map_err(|_| "the user name is not UTF-8")?;
            Ok(Some(Credentials::Basic {
                user,
                password: decoded[colon + 1..].to_vec(),
            }))
        } else {
            Err("unsupported authorization scheme: use `Bearer <token>` or `Basic <base64>`")
        }
    }
}

/// Standard base64 (RFC 4648 §4) with optional padding.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let data = s.trim_end_matches('=');
    if s.len() - data.len() > 2 {
        return None;
    }
    let mut out = Vec::with_capacity(data.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0u32;
    for c in data.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // One character left over (length 1 mod 4) cannot encode a byte.
    (bits < 6).then_some(out)
}

enum Failure {
    Token(TokenError),
    Login(LoginError),
    Scopes(String),
}

/// Checks credentials and loads the caller's prefix rules (blocking: file reads, argon2).
fn resolve(
    sec: &Security,
    creds: Credentials,
    source: IpAddr,
) -> Result<(Identity, TagAccess, Option<PrefixRule>), Failure> {
    let identity = match creds {
        Credentials::Bearer(token) => sec.users.verify_token(&token).map_err(Failure::Token)?,
        Credentials::Basic { user, password } => sec
            .users
            .login(&user, &password, source, "api")
            .map_err(Failure::Login)?,
    };
    let scopes = sec.mqtt.tag_scopes().map_err(Failure::Scopes)?;
    let (access, token_rule) = scopes.access_for(&identity);
    Ok((identity, access, token_rule))
}

/// Why a bearer token is refused (for connections that outlive a request: the live API).
pub(crate) enum BearerError {
    Token(TokenError),
    Scopes(String),
}

/// Checks a bearer token and loads the caller's prefix rules, as the middleware does for a
/// request (blocking: file reads).
pub(crate) fn verify_bearer(
    sec: &Security,
    token: &str,
) -> Result<(Identity, TagAccess), BearerError> {
    match resolve(
        sec,
        Credentials::Bearer(token.to_owned()),
        IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    ) {
        Ok((identity, access, _)) => Ok((identity, access)),
        Err(Failure::Token(e)) => Err(BearerError::Token(e)),
        Err(Failure::Scopes(e)) => Err(BearerError::Scopes(e)),
        // A bearer token never goes through a password login.
        Err(Failure::Login(_)) => Err(BearerError::Token(TokenError::Invalid)),
    }
}

/// The bearer token of a request, if it carries one.
pub(crate) fn bearer_token(headers: &HeaderMap) -> Option<String> {
    match Credentials::parse(headers) {
        Ok(Some(Credentials::Bearer(t))) => Some(t),
        _ => None,
    }
}

/// Seconds from now until `until`, at least 1 (for `Retry-After`).
pub fn retry_after_secs(until: SystemTime) -> u64 {
    until
        .duration_since(SystemTime::now())
        .map_or(1, |d| d.as_secs() + u64::from(d.subsec_nanos() > 0))
        .max(1)
}

/// A 401 for a refused login (the library has recorded it).
pub fn login_refused(e: &LoginError) -> ApiError {
    match e {
        LoginError::BadCredentials => {
            ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", e.to_string())
        }
        LoginError::Locked { until } => {
            let mut err = ApiError::new(StatusCode::UNAUTHORIZED, "locked", e.to_string());
            err.retry_after = Some(retry_after_secs(*until));
            err
        }
    }
}

/// The middleware in front of every route: establishes the [`Caller`] or answers 401.
pub(crate) async fn authenticate(
    State(st): State<Arc<ApiState>>,
    mut req: Request,
    next: Next,
) -> Response {
    let source = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
    req.extensions_mut().insert(ClientAddr(source));
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let Some(sec) = st.security.clone() else {
        req.extensions_mut()
            .insert(Caller::unrestricted(source, method, path));
        return next.run(req).await;
    };
    // `/healthz` is public, but credentials sent with it are checked: they unlock its details
    // (and on the live API they authenticate the upgrade itself).
    let health_with_credentials = (path == "/healthz" || path == crate::live::PATH)
        && req.headers().contains_key(header::AUTHORIZATION);
    // The HMI's login sets the cookie; it is public like `/api/v1/login` (GET and DELETE of
    // the session need one).
    let hmi_login = method == Method::POST && path == crate::session::PATH;
    if (is_public(&path) || hmi_login) && !health_with_credentials {
        return next.run(req).await;
    }
    let unauthenticated = |message: &str| {
        record_denial(
            &sec,
            None,
            "http-api".into(),
            source,
            "unauthenticated",
            &method,
            &path,
        );
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", message).into_response()
    };
    let cookie = crate::session::cookie_token(req.headers());
    let creds = match Credentials::parse(req.headers()) {
        Ok(Some(c)) => c,
        // The HMI's session cookie, only without an Authorization header, and only for a
        // request that shows it comes from the HMI (its origin, the CSRF token).
        Ok(None) if cookie.is_some() => {
            let token = cookie.unwrap_or_default();
            if let Err(why) = crate::session::check_cookie_request(&method, req.headers(), &token) {
                return crate::session::refused(Some(&sec), source, &method, &path, why)
                    .into_response();
            }
            Credentials::Bearer(token)
        }
        // The HMI asking "is anyone logged in?" when its page loads: no credentials at all is
        // the login screen, not a refused access; not recorded (a wrong credential is).
        Ok(None) if method == Method::GET && path == crate::session::PATH => {
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "not logged in: POST /api/v1/session with a user and password",
            )
            .into_response();
        }
        Ok(None) => {
            return unauthenticated(
                "authentication required: send `Authorization: Bearer <token>` (an API token, or \
                 a session token from POST /api/v1/login) or HTTP Basic credentials",
            )
        }
        Err(why) => return unauthenticated(why),
    };
    let s = sec.clone();
    let resolved = tokio::task::spawn_blocking(move || resolve(&s, creds, source)).await;
    let (identity, access, token_rule) = match resolved {
        Ok(Ok(r)) => r,
        Ok(Err(Failure::Token(e))) => return unauthenticated(&e.to_string()),
        Ok(Err(Failure::Login(e))) => return login_refused(&e).into_response(),
        Ok(Err(Failure::Scopes(e))) => {
            tracing::error!(error = %e, "cannot read the API tag scopes; refusing requests");
            return ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "security_error",
                "the access rules cannot be read; see the server log",
            )
            .into_response();
        }
        Err(e) => {
            tracing::error!(error = %e, "authentication task failed");
            return ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "authentication failed unexpectedly; see the server log",
            )
            .into_response();
        }
    };
    req.extensions_mut().insert(Caller {
        identity: Some(identity),
        access,
        token_rule,
        source,
        method,
        path,
        security: Some(sec),
    });
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_vectors() {
        // RFC 4648 §10 and RFC 7617's example.
        for (enc, dec) in [
            ("", ""),
            ("Zg==", "f"),
            ("Zm8=", "fo"),
            ("Zm9v", "foo"),
            ("Zm9vYg==", "foob"),
            ("Zm9vYmE=", "fooba"),
            ("Zm9vYmFy", "foobar"),
            ("Zm9vYmFy", "foobar"),
            ("QWxhZGRpbjpvcGVuIHNlc2FtZQ==", "Aladdin:open sesame"),
        ] {
            assert_eq!(base64_decode(enc).as_deref(), Some(dec.as_bytes()), "{enc}");
        }
        assert_eq!(base64_decode("Zm9vYmFy").as_deref(), Some(&b"foobar"[..]));
        for bad in ["Z", "Zm9vY", "Zm9v!", "Zg===", "Zm 9v"] {
            assert_eq!(base64_decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn prefixes_match_whole_levels() {
        assert!(within("site/area1", "site/area1"));
        assert!(within("site/area1/pump", "site/area1"));
        assert!(within("site/area1/pump", "site/area1/"));
        assert!(!within("site/area10/pump", "site/area1"));
        assert!(!within("site", "site/area1"));
        let access = TagAccess::new(vec![
            PrefixRule {
                read: Some(vec!["site/area1".into(), "site/area2".into()]),
                write: Some(vec![]),
            },
            PrefixRule {
                read: Some(vec!["site/area1".into()]),
                write: None,
            },
        ]);
        assert!(access.can_read("site/area1/x"));
        assert!(!access.can_read("site/area2/x"), "the second rule narrows");
        assert!(
            !access.can_write("site/area1/x"),
            "an empty write list allows none"
        );
        assert!(access.can_see_asset("site"));
        assert!(!access.can_see_asset("other"));
        assert!(TagAccess::unrestricted().can_write("anything/at/all"));
    }

    #[test]
    fn credentials_are_parsed_without_echoing_them() {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            "basic YWxpY2U6czNjcjp3aXRoOmNvbG9ucw=="
                .parse()
                .expect("ascii"),
        );
        match Credentials::parse(&h) {
            Ok(Some(Credentials::Basic { user, password })) => {
                assert_eq!(user, "alice");
                assert_eq!(password, b"s3cr:with:colons");
            }
            _ => panic!("Basic credentials expected"),
        }
        h.insert(
            header::AUTHORIZATION,
            "Digest c2VjcmV0".parse().expect("ascii"),
        );
        let err = Credentials::parse(&h).err().expect("unsupported scheme");
        assert!(!err.contains("c2VjcmV0"));
    }
}
