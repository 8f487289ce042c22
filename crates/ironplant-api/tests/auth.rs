//! Authentication and authorisation of the API through the real router, with a real security
//! store in a temp dir and a manual clock: 401/403 and their codes, roles, lockout and its end,
//! expired and revoked tokens, tag-prefix rules, the audit log (denials included), and that
//! no secret leaks into any response but the one that creates it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Request, StatusCode};
use axum::Router;
use ironplant_api::ApiState;
use ironplant_core::{TagId, TagMeta, TagPath, ValueType};
use ironplant_runtime::Runtime;
use ironplant_security::{ManualClock, Security, SecurityOptions, UserStoreOptions};
use serde_json::{json, Value as Json};
use tower::ServiceExt as _;

const TAGS: [&str; 3] = ["site/area1/temp", "site/area10/temp", "site/area2/flow"];

struct Fx {
    app: Router,
    sec: Arc<Security>,
    clock: Arc<ManualClock>,
    runtime: Arc<Runtime>,
    admin_password: String,
    /// Every response body, for the secrets check.
    bodies: Mutex<Vec<(String, String)>>,
    _dir: tempfile::TempDir,
}

impl Drop for Fx {
    fn drop(&mut self) {
        self.runtime.shutdown();
    }
}

struct Resp {
    status: StatusCode,
    headers: HeaderMap,
    json: Json,
}

impl Resp {
    fn code(&self) -> &str {
        self.json["error"]["code"].as_str().unwrap_or("")
    }
}

fn basic(user: &str, password: &str) -> String {
    // Test-side encoder (the server's decoder is checked against RFC vectors separately).
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let input = format!("{user}:{password}");
    let mut out = String::new();
    for chunk in input.as_bytes().chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    format!("Basic {out}")
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

async fn fixture() -> Fx {
    let dir = tempfile::tempdir().expect("temp dir");
    // The lockout's Retry-After is computed against the wall clock (see the report on a
    // `Security::clock()`), so the manual clock starts at the real now.
    let clock = Arc::new(ManualClock::new(SystemTime::now()));
    let options = SecurityOptions {
        users: UserStoreOptions {
            // Cheap hashes: the tests log in dozens of times.
            argon2_m_kib: 64,
            argon2_t: 1,
            argon2_p: 1,
            ..UserStoreOptions::default()
        },
        ..SecurityOptions::default()
    };
    let sec = Arc::new(Security::open(dir.path(), clock.clone(), options).expect("security opens"));
    let file = std::fs::read_to_string(sec.dir().join("initial-admin-password"))
        .expect("initial admin password file");
    let admin_password = file
        .lines()
        .find_map(|l| l.strip_prefix("password: "))
        .expect("password line")
        .to_owned();
    let cfg = ironplant_core::config::parse("empty.toml", "").expect("an empty config is valid");
    let runtime = Arc::new(Runtime::start(&cfg, None).expect("runtime starts"));
    for path in TAGS {
        runtime
            .register_tag(TagMeta {
                id: TagId(0),
                path: TagPath::parse(path).expect("valid path"),
                value_type: ValueType::Float,
                unit: None,
                description: String::new(),
                range: None,
                writable: false,
                device: None,
            })
            .expect("register");
    }
    let app = ironplant_api::router(Arc::new(ApiState {
        runtime: runtime.clone(),
        started: Instant::now(),
        mqtt: None,
        security: Some(sec.clone()),
    }));
    Fx {
        app,
        sec,
        clock,
        runtime,
        admin_password,
        bodies: Mutex::new(Vec::new()),
        _dir: dir,
    }
}

impl Fx {
    async fn call(&self, method: &str, uri: &str, auth: Option<&str>, body: Option<Json>) -> Resp {
        self.call_from("192.0.2.10", method, uri, auth, body).await
    }

    async fn call_from(
        &self,
        ip: &str,
        method: &str,
        uri: &str,
        auth: Option<&str>,
        body: Option<Json>,
    ) -> Resp {
        let addr: SocketAddr = format!("{ip}:40000").parse().expect("address");
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let body = match body {
            Some(b) => {
                req = req.header("content-type", "application/json");
                Body::from(b.to_string())
            }
            None => Body::empty(),
        };
        let mut req = req.body(body).expect("request");
        req.extensions_mut().insert(ConnectInfo(addr));
        let resp = self.app.clone().oneshot(req).await.expect("response");
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .expect("body");
        let text = String::from_utf8_lossy(&bytes).into_owned();
        self.bodies
            .lock()
            .expect("lock")
            .push((format!("{method} {uri}"), text.clone()));
        let json = serde_json::from_str(&text).unwrap_or(Json::Null);
        Resp {
            status,
            headers,
            json,
        }
    }

    fn admin(&self) -> String {
        basic("admin", &self.admin_password)
    }

    async fn add_user(&self, name: &str, password: &str, role: &str) {
        let r = self
            .call(
                "POST",
                "/api/v1/users",
                Some(&self.admin()),
                Some(json!({"name": name, "password": password, "role": role})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    }

    async fn login(&self, user: &str, password: &str) -> String {
        let r = self
            .call(
                "POST",
                "/api/v1/login",
                None,
                Some(json!({"user": user, "password": password})),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.json);
        assert_eq!(
            r.headers.get("cache-control").map(|v| v.as_bytes()),
            Some(&b"no-store"[..])
        );
        r.json["token"].as_str().expect("token").to_owned()
    }

    async fn audit(&self, query: &str) -> Vec<Json> {
        let r = self
            .call(
                "GET",
                &format!("/api/v1/audit?{query}"),
                Some(&self.admin()),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.json);
        r.json["records"].as_array().cloned().unwrap_or_default()
    }
}

fn tag_paths(r: &Resp) -> Vec<String> {
    r.json["tags"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| t["path"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_and_bad_credentials_get_401() {
    let fx = fixture().await;
    for uri in [
        "/api/v1/tags",
        "/metrics",
        "/api/v1/audit",
        "/no/such/endpoint",
    ] {
        let r = fx.call("GET", uri, None, None).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{uri}");
        assert_eq!(r.code(), "unauthenticated", "{uri}");
        let challenges: Vec<&str> = r
            .headers
            .get_all("www-authenticate")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        assert!(
            challenges.iter().any(|c| c.starts_with("Bearer ")),
            "{challenges:?}"
        );
        assert!(
            challenges.iter().any(|c| c.starts_with("Basic ")),
            "{challenges:?}"
        );
    }
    let forged = format!("ipt_{}_{}", "0".repeat(16), "1".repeat(64));
    for auth in [
        bearer(&forged),
        bearer("not-a-token"),
        "Digest abc".to_owned(),
        "Basic !!!".to_owned(),
        basic("admin", "wrong password"),
    ] {
        let r = fx.call("GET", "/api/v1/tags", Some(&auth), None).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{auth}");
        assert_eq!(r.code(), "unauthenticated", "{auth}");
    }
    // Public: the probe and the login.
    assert_eq!(
        fx.call("GET", "/healthz", None, None).await.status,
        StatusCode::OK
    );
    let r = fx
        .call(
            "POST",
            "/api/v1/login",
            None,
            Some(json!({"user": "admin", "password": "nope"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // And the right credentials work.
    let r = fx.call("GET", "/metrics", Some(&fx.admin()), None).await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_decide_what_each_may_do_and_denials_are_audited() {
    let fx = fixture().await;
    fx.add_user("vera", "viewer-password-1", "viewer").await;
    fx.add_user("otto", "operator-password-1", "operator").await;
    let viewer = bearer(&fx.login("vera", "viewer-password-1").await);
    let operator = bearer(&fx.login("otto", "operator-password-1").await);

    let r = fx.call("GET", "/api/v1/tags", Some(&viewer), None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(tag_paths(&r).len(), TAGS.len());
    let r = fx
        .call("GET", "/api/v1/tags/site/area1/temp", Some(&viewer), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert_eq!(
        fx.call("GET", "/metrics", Some(&viewer), None).await.status,
        StatusCode::OK
    );

    let new_user = json!({"name": "mallory", "password": "long-enough-pass", "role": "admin"});
    for who in [&viewer, &operator] {
        let r = fx
            .call("POST", "/api/v1/users", Some(who), Some(new_user.clone()))
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.json);
        assert_eq!(r.code(), "forbidden");
        let r = fx
            .call("DELETE", "/api/v1/users/admin", Some(who), None)
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        let r = fx
            .call(
                "PUT",
                "/api/v1/users/admin/password",
                Some(who),
                Some(json!({"password": "taken-over-now"})),
            )
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        let r = fx.call("GET", "/api/v1/audit", Some(who), None).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        let r = fx
            .call("GET", "/api/v1/tokens?all=true", Some(who), None)
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
    }
    // A viewer cannot mint a token above its role.
    let r = fx
        .call(
            "POST",
            "/api/v1/tokens",
            Some(&viewer),
            Some(json!({"role": "operator"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.json);

    // The admin can manage users: change a password, delete a user (whose session dies).
    let r = fx
        .call(
            "PUT",
            "/api/v1/users/otto/password",
            Some(&fx.admin()),
            Some(json!({"password": "new-operator-pw"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.json);
    let r = fx
        .call("DELETE", "/api/v1/users/otto", Some(&fx.admin()), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.json);
    let r = fx.call("GET", "/api/v1/tags", Some(&operator), None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = fx
        .call("DELETE", "/api/v1/users/admin", Some(&fx.admin()), None)
        .await;
    assert_eq!(r.code(), "cannot_delete_self");

    // The admin reads the audit log: logins, user changes and every denial, paged.
    let denials = fx.audit("kind=acl_denied&limit=1000").await;
    let forbidden: Vec<&Json> = denials
        .iter()
        .filter(|d| d["action"] == "api:forbidden")
        .collect();
    assert!(
        forbidden
            .iter()
            .any(|d| d["principal"] == "vera" && d["topic"] == "POST /api/v1/users"),
        "{denials:?}"
    );
    assert!(forbidden
        .iter()
        .any(|d| d["principal"] == "otto" && d["topic"] == "GET /api/v1/audit"));
    assert!(denials
        .iter()
        .any(|d| d["action"] == "api:unauthenticated" && d["topic"] == "GET /api/v1/tags"));
    let kinds: Vec<String> = fx
        .audit("limit=1000")
        .await
        .iter()
        .filter_map(|r| r["kind"].as_str().map(str::to_owned))
        .collect();
    for k in [
        "login",
        "user_created",
        "user_changed",
        "user_deleted",
        "token_created",
    ] {
        assert!(kinds.iter().any(|x| x == k), "no {k} in {kinds:?}");
    }
    let page = fx
        .call("GET", "/api/v1/audit?limit=2", Some(&fx.admin()), None)
        .await;
    let next = page.json["next"].as_u64().expect("a next cursor");
    let page2 = fx.audit(&format!("limit=2&after={next}")).await;
    assert!(page2[0]["seq"].as_u64().expect("seq") > next);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lockout_refuses_even_the_right_password_until_the_window_ends() {
    let fx = fixture().await;
    fx.add_user("otto", "operator-password-1", "operator").await;
    let right = basic("otto", "operator-password-1");
    let wrong = basic("otto", "wrong-password!");
    for _ in 0..5 {
        let r = fx.call("GET", "/api/v1/tags", Some(&wrong), None).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert_eq!(r.code(), "unauthenticated");
    }
    for attempt in [
        fx.call("GET", "/api/v1/tags", Some(&right), None).await,
        fx.call(
            "POST",
            "/api/v1/login",
            None,
            Some(json!({"user": "otto", "password": "operator-password-1"})),
        )
        .await,
    ] {
        assert_eq!(attempt.status, StatusCode::UNAUTHORIZED, "{}", attempt.json);
        assert_eq!(attempt.code(), "locked");
        let secs: u64 = attempt
            .headers
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .expect("Retry-After in seconds");
        assert!((1..=15 * 60).contains(&secs), "{secs}");
    }
    let lockouts = fx.audit("kind=lockout").await;
    assert!(
        // From one address the user name locks for that address first.
        lockouts.iter().any(|r| r["subject"]
            .as_str()
            .is_some_and(|s| s.starts_with("user:otto@"))),
        "{lockouts:?}"
    );

    fx.clock.advance(Duration::from_secs(15 * 60 + 1));
    let r = fx.call("GET", "/api/v1/tags", Some(&right), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_and_revoked_tokens_are_refused() {
    let fx = fixture().await;
    fx.add_user("vera", "viewer-password-1", "viewer").await;
    let session = bearer(&fx.login("vera", "viewer-password-1").await);

    let r = fx
        .call(
            "POST",
            "/api/v1/tokens",
            Some(&session),
            Some(json!({"label": "grafana", "ttl": "1h"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    assert_eq!(r.json["role"], "viewer");
    let short = bearer(r.json["token"].as_str().expect("token"));
    let r = fx
        .call(
            "POST",
            "/api/v1/tokens",
            Some(&session),
            Some(json!({"ttl": "30d"})),
        )
        .await;
    let long_id = r.json["id"].as_str().expect("id").to_owned();
    let long = bearer(r.json["token"].as_str().expect("token"));

    assert_eq!(
        fx.call("GET", "/api/v1/tags", Some(&short), None)
            .await
            .status,
        StatusCode::OK
    );
    // Listing shows ids and labels, never secrets.
    let r = fx.call("GET", "/api/v1/tokens", Some(&session), None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json["count"], 3, "{}", r.json); // the session and two API tokens
    assert!(r.json["tokens"]
        .as_array()
        .expect("tokens")
        .iter()
        .all(|t| t.get("token").is_none() && t["user"] == "vera"));

    // Someone else's token: only with manage_users.
    fx.add_user("otto", "operator-password-1", "operator").await;
    let otto = basic("otto", "operator-password-1");
    let r = fx
        .call(
            "DELETE",
            &format!("/api/v1/tokens/{long_id}"),
            Some(&otto),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(
        fx.call("GET", "/api/v1/tags", Some(&long), None)
            .await
            .status,
        StatusCode::OK
    );
    let r = fx
        .call(
            "DELETE",
            &format!("/api/v1/tokens/{long_id}"),
            Some(&session),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = fx.call("GET", "/api/v1/tags", Some(&long), None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.json["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("revoked")));

    fx.clock.advance(Duration::from_secs(2 * 3600));
    let r = fx.call("GET", "/api/v1/tags", Some(&short), None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.json["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("expired")));
    // The session (12 h) outlives the one-hour token, and then expires too.
    assert_eq!(
        fx.call("GET", "/api/v1/tags", Some(&session), None)
            .await
            .status,
        StatusCode::OK
    );
    fx.clock.advance(Duration::from_secs(11 * 3600));
    assert_eq!(
        fx.call("GET", "/api/v1/tags", Some(&session), None)
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    let revoked = fx.audit("kind=token_revoked").await;
    assert!(revoked.iter().any(|r| r["id"] == long_id.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefix_rules_forbid_single_tags_and_filter_lists() {
    let fx = fixture().await;
    // A token limited to site/area1 (whole levels: site/area10 is outside).
    let r = fx
        .call(
            "POST",
            "/api/v1/tokens",
            Some(&fx.admin()),
            Some(json!({"role": "viewer", "read_prefixes": ["site/area1"]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    let scoped = bearer(r.json["token"].as_str().expect("token"));

    let r = fx.call("GET", "/api/v1/tags", Some(&scoped), None).await;
    assert_eq!(tag_paths(&r), vec!["site/area1/temp".to_owned()]);
    let r = fx
        .call("GET", "/api/v1/tags/site/area1/temp", Some(&scoped), None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    for tag in [
        "site/area2/flow",
        "site/area10/temp",
        "site/area2/does-not-exist",
    ] {
        let r = fx
            .call("GET", &format!("/api/v1/tags/{tag}"), Some(&scoped), None)
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{tag}");
        assert_eq!(r.code(), "forbidden");
    }
    let r = fx
        .call(
            "GET",
            "/api/v1/history?tag=site/area1/temp&tag=site/area2/flow",
            Some(&scoped),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // A token made with a scoped token cannot widen its scope.
    let r = fx
        .call(
            "POST",
            "/api/v1/tokens",
            Some(&scoped),
            Some(json!({"read_prefixes": ["site"]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.json);
    let r = fx
        .call("POST", "/api/v1/tokens", Some(&scoped), Some(json!({})))
        .await;
    assert_eq!(r.json["read_prefixes"], json!(["site/area1"]), "inherited");
    // Nor raise its role above the token's, although its user is an admin.
    let r = fx
        .call(
            "POST",
            "/api/v1/tokens",
            Some(&scoped),
            Some(json!({"role": "admin"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    // A user-level rule, written by the platform/CLI into api-scopes.json.
    fx.add_user("ula", "limited-password", "viewer").await;
    std::fs::write(
        fx.sec.dir().join(ironplant_api::auth::SCOPES_FILE),
        r#"{"users": {"ula": {"read": ["site/area2"]}}}"#,
    )
    .expect("write scopes");
    let ula = basic("ula", "limited-password");
    let r = fx.call("GET", "/api/v1/tags", Some(&ula), None).await;
    assert_eq!(tag_paths(&r), vec!["site/area2/flow".to_owned()]);
    let r = fx
        .call("GET", "/api/v1/tags/site/area1/temp", Some(&ula), None)
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let denied = fx.audit("kind=acl_denied").await;
    assert!(denied
        .iter()
        .any(|d| d["principal"] == "ula" && d["topic"] == "GET /api/v1/tags/site/area1/temp"));
    // A damaged rules file refuses access rather than ignore it.
    std::fs::write(fx.sec.dir().join(ironplant_api::auth::SCOPES_FILE), "{oops")
        .expect("write scopes");
    let r = fx.call("GET", "/api/v1/tags", Some(&ula), None).await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(r.code(), "security_error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_appears_in_any_response_but_its_creation() {
    let fx = fixture().await;
    let password = "viewer-password-1";
    fx.add_user("vera", password, "viewer").await;
    let session = fx.login("vera", password).await;
    let r = fx
        .call(
            "POST",
            "/api/v1/tokens",
            Some(&bearer(&session)),
            Some(json!({"label": "x"})),
        )
        .await;
    let token = r.json["token"].as_str().expect("token").to_owned();
    // Exercise lists, errors with odd bodies, denials and the audit log.
    fx.call("GET", "/api/v1/tokens", Some(&bearer(&token)), None)
        .await;
    fx.call("GET", "/api/v1/tokens?all=true", Some(&fx.admin()), None)
        .await;
    fx.call("GET", "/api/v1/users", Some(&fx.admin()), None)
        .await;
    fx.call(
        "POST",
        "/api/v1/login",
        None,
        Some(json!({"user": "vera", "password": 12345, "extra": password})),
    )
    .await;
    fx.call(
        "POST",
        "/api/v1/users",
        Some(&fx.admin()),
        Some(json!({"name": "weak", "password": "short", "role": "viewer"})),
    )
    .await;
    fx.call("GET", "/api/v1/users", Some(&bearer(&token)), None)
        .await;
    fx.call(
        "GET",
        "/api/v1/tags",
        Some(&basic("vera", "typo-of-password")),
        None,
    )
    .await;
    fx.audit("limit=1000").await;

    let bodies = fx.bodies.lock().expect("lock").clone();
    let secret_of = |t: &str| t.rsplit('_').next().unwrap_or(t).to_owned();
    for secret in [secret_of(&session), secret_of(&token)] {
        let shown: Vec<&String> = bodies
            .iter()
            .filter(|(_, b)| b.contains(&secret))
            .map(|(what, _)| what)
            .collect();
        assert_eq!(shown.len(), 1, "a token secret was shown by {shown:?}");
    }
    for pw in [
        password,
        "typo-of-password",
        fx.admin_password.as_str(),
        "short",
    ] {
        let shown: Vec<&String> = bodies
            .iter()
            .filter(|(_, b)| b.contains(pw))
            .map(|(what, _)| what)
            .collect();
        assert!(shown.is_empty(), "a password was shown by {shown:?}");
    }
    // The library's own log of the audit file holds no secret either.
    let log = std::fs::read_to_string(fx.sec.audit.path()).expect("audit log");
    assert!(!log.contains(&secret_of(&token)) && !log.contains(password));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_over_websocket_needs_no_http_credentials() {
    use ironplant_mqtt::{Broker, BrokerConfig};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    let fx = fixture().await;
    let state = Arc::new(ApiState {
        runtime: fx.runtime.clone(),
        started: Instant::now(),
        mqtt: Some(Broker::new(BrokerConfig::default())),
        security: Some(fx.sec.clone()),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(ironplant_api::serve(
        listener,
        state,
        std::future::pending(),
    ));
    let mut req = format!("ws://{addr}/mqtt")
        .into_client_request()
        .expect("valid URL");
    req.headers_mut()
        .insert("sec-websocket-protocol", "mqtt".parse().expect("header"));
    let (_ws, resp) = tokio_tungstenite::connect_async(req)
        .await
        .expect("the upgrade succeeds without HTTP credentials");
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
}
