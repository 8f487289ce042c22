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
use ironplant_api::settings::HttpSettings;
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
    text: String,
}

impl Resp {
    fn code(&self) -> &str {
        self.json["error"]["code"].as_str().unwrap_or("")
    }
}

fn basic(user: &str, password: &str) -> String {
    ironplant_testkit::basic_auth(user, password)
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

async fn fixture() -> Fx {
    fixture_with("", HttpSettings::default()).await
}

/// A fixture on the config `config` (devices whose health `/healthz` reports) and with the
/// HTTP limits `http`.
async fn fixture_with(config: &str, http: HttpSettings) -> Fx {
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
    let cfg = ironplant_api::settings::parse("t.toml", config).expect("a valid config");
    let runtime = Runtime::start(&cfg, None).expect("runtime starts");
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
        http: ironplant_api::listen::Connections::new(http, Some(sec.clone())),
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
            text,
        }
    }

    /// A request with exactly these headers and body bytes.
    async fn call_raw(
        &self,
        method: &str,
        uri: &str,
        headers: &[(&str, &str)],
        body: impl Into<Body>,
    ) -> Resp {
        let mut req = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let mut req = req.body(body.into()).expect("request");
        req.extensions_mut()
            .insert(ConnectInfo(SocketAddr::from(([192, 0, 2, 10], 40000))));
        let resp = self.app.clone().oneshot(req).await.expect("response");
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .expect("body");
        Resp {
            status,
            headers,
            json: serde_json::from_slice(&bytes).unwrap_or(Json::Null),
            text: String::from_utf8_lossy(&bytes).into_owned(),
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
        http: ironplant_api::listen::Connections::new(Default::default(), None),
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

/// Every endpoint that changes state and takes a JSON body, with a valid body for it.
fn json_endpoints() -> Vec<(&'static str, &'static str, Json)> {
    vec![
        (
            "POST",
            "/api/v1/login",
            json!({"user": "admin", "password": "whatever-it-is"}),
        ),
        ("POST", "/api/v1/tokens", json!({"label": "x", "ttl": "1h"})),
        (
            "POST",
            "/api/v1/users",
            json!({"name": "eve", "password": "a-long-enough-password", "role": "viewer"}),
        ),
        (
            "PUT",
            "/api/v1/users/admin/password",
            json!({"password": "a-long-enough-password"}),
        ),
        ("PUT", "/api/v1/users/vera/role", json!({"role": "viewer"})),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_endpoints_refuse_other_content_types_with_415() {
    let fx = fixture().await;
    fx.add_user("vera", "viewer-password-1", "viewer").await;
    let admin = fx.admin();
    // A cross-site HTML form can send these without a CORS preflight; none may get through.
    for ct in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        None,
    ] {
        for (method, uri, body) in json_endpoints() {
            let mut headers = vec![("authorization", admin.as_str())];
            if let Some(ct) = ct {
                headers.push(("content-type", ct));
            }
            let r = fx.call_raw(method, uri, &headers, body.to_string()).await;
            assert_eq!(
                (r.status, r.code()),
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
                "{method} {uri} with {ct:?}: {}",
                r.json
            );
            assert!(
                r.json["error"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("application/json")),
                "{}",
                r.json
            );
        }
    }
    assert_eq!(
        fx.audit("kind=user_created").await.len(),
        2,
        "admin and vera only: no user was created by a form"
    );
    // With the right type (parameters and case do not matter) they are served.
    let r = fx
        .call_raw(
            "POST",
            "/api/v1/tokens",
            &[
                ("authorization", admin.as_str()),
                ("content-type", "Application/JSON; charset=utf-8"),
            ],
            json!({"label": "x", "ttl": "1h"}).to_string(),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    let m = fx
        .call_raw("GET", "/metrics", &[("authorization", admin.as_str())], "")
        .await;
    assert!(
        m.text.contains(
            "ironplant_http_requests_refused_total{reason=\"unsupported_media_type\"} 20\n"
        ),
        "{}",
        m.text
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_limit_get_413_in_the_error_shape() {
    let fx = fixture_with(
        "",
        HttpSettings {
            max_body_size: 4096,
            ..HttpSettings::default()
        },
    )
    .await;
    let admin = fx.admin();
    let big = json!({"label": "x".repeat(5000), "ttl": "1h"}).to_string();
    // Announced with Content-Length (as hyper passes it on): refused before authentication.
    let length = big.len().to_string();
    for auth in [Some(admin.as_str()), None] {
        let mut headers = vec![
            ("content-type", "application/json"),
            ("content-length", length.as_str()),
        ];
        if let Some(a) = auth {
            headers.push(("authorization", a));
        }
        let r = fx
            .call_raw("POST", "/api/v1/tokens", &headers, big.clone())
            .await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
            "{}",
            r.json
        );
        assert!(
            r.json["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("4096") && m.contains("max_body_size")),
            "{}",
            r.json
        );
    }
    // Streamed without a length: cut by the extractor's limit, same answer.
    let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = big
        .as_bytes()
        .chunks(1000)
        .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
        .collect();
    let stream = Body::from_stream(futures_util::stream::iter(chunks));
    let r = fx
        .call_raw(
            "POST",
            "/api/v1/tokens",
            &[
                ("content-type", "application/json"),
                ("authorization", admin.as_str()),
            ],
            stream,
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
        "{}",
        r.json
    );
    // Just under the limit is fine, and the refusals are counted in /metrics.
    let ok = json!({"label": "x".repeat(3000), "ttl": "1h"}).to_string();
    let r = fx
        .call_raw(
            "POST",
            "/api/v1/tokens",
            &[
                ("content-type", "application/json"),
                ("authorization", admin.as_str()),
            ],
            ok,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    let m = fx
        .call_raw(
            "GET",
            "/metrics",
            &[("authorization", admin.as_str())],
            Body::empty(),
        )
        .await;
    assert_eq!(m.status, StatusCode::OK);
    assert!(
        m.text
            .contains("ironplant_http_requests_refused_total{reason=\"body_too_large\"} 3\n"),
        "{}",
        m.text
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cookie_never_authenticates() {
    let fx = fixture().await;
    fx.add_user("vera", "viewer-password-1", "viewer").await;
    let token = fx.login("vera", "viewer-password-1").await;
    for cookie in [
        format!("session={token}"),
        format!("token={token}"),
        format!("Authorization=Bearer {token}"),
    ] {
        let r = fx
            .call_raw("GET", "/api/v1/tags", &[("cookie", cookie.as_str())], "")
            .await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::UNAUTHORIZED, "unauthenticated"),
            "{cookie}"
        );
    }
    // The API never sets one either.
    let r = fx
        .call_raw(
            "POST",
            "/api/v1/login",
            &[("content-type", "application/json")],
            json!({"user": "vera", "password": "viewer-password-1"}).to_string(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.headers.get("set-cookie").is_none(), "{:?}", r.headers);
}

/// The HMI's session: a cookie the page cannot read (HttpOnly, Secure, SameSite=Strict), that
/// authenticates reads, and state changes only with the session's CSRF token and from this
/// origin; logout revokes it. Every refusal is audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hmi_session_cookie_needs_its_csrf_token_and_this_origin() {
    let fx = fixture().await;
    fx.add_user("olga", "operator-password-1", "operator").await;
    let host = ("host", "plant.example:8080");
    let json_ct = ("content-type", "application/json");
    let login = json!({"user": "olga", "password": "operator-password-1"}).to_string();
    // A login posted by another origin's page (login CSRF) is refused.
    let r = fx
        .call_raw(
            "POST",
            "/api/v1/session",
            &[host, json_ct, ("origin", "https://evil.example")],
            login.clone(),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::FORBIDDEN, "csrf"),
        "{}",
        r.text
    );
    let r = fx
        .call_raw(
            "POST",
            "/api/v1/session",
            &[host, json_ct, ("origin", "https://plant.example:8080")],
            login,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["user"], "olga");
    assert_eq!(r.json["role"], "operator");
    let perms = r.json["permissions"].as_array().expect("permissions");
    assert!(perms.contains(&json!("write_setpoints")) && !perms.contains(&json!("manage_users")));
    let csrf = r.json["csrf"].as_str().expect("csrf").to_owned();
    let set = r.headers["set-cookie"].to_str().expect("ascii").to_owned();
    for attr in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(attr), "{set}");
    }
    assert!(
        !r.text.contains("ipt_"),
        "the token is only in the cookie: {}",
        r.text
    );
    let token = set
        .strip_prefix("ironplant_session=")
        .and_then(|s| s.split(';').next())
        .expect("cookie value")
        .to_owned();
    let cookie = format!("ironplant_session={token}");
    let cookie = ("cookie", cookie.as_str());

    // Reads with the cookie alone; the session answers with the same CSRF token.
    let r = fx
        .call_raw("GET", "/api/v1/tags", &[host, cookie], "")
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = fx
        .call_raw("GET", "/api/v1/session", &[host, cookie], "")
        .await;
    assert_eq!(
        (r.status, r.json["csrf"].as_str()),
        (StatusCode::OK, Some(csrf.as_str()))
    );

    // A state change without the token, with another session's, or from another origin even
    // with the right one: 403 csrf before any handler runs.
    let ack = json!({"comment": "x"}).to_string();
    let other = ironplant_api::session::csrf_for("ipt_someone_else");
    for (what, headers) in [
        ("no token", vec![host, cookie, json_ct]),
        (
            "another session's token",
            vec![host, cookie, json_ct, ("x-csrf-token", other.as_str())],
        ),
        (
            "another origin",
            vec![
                host,
                cookie,
                json_ct,
                ("x-csrf-token", csrf.as_str()),
                ("origin", "https://evil.example"),
            ],
        ),
        (
            "a sandboxed page",
            vec![
                host,
                cookie,
                json_ct,
                ("x-csrf-token", csrf.as_str()),
                ("origin", "null"),
            ],
        ),
    ] {
        let r = fx
            .call_raw("POST", "/api/v1/alarms/any/ack", &headers, ack.clone())
            .await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::FORBIDDEN, "csrf"),
            "{what}: {}",
            r.text
        );
    }
    // With the token from this origin the request reaches its handler (no alarms configured).
    let r = fx
        .call_raw(
            "POST",
            "/api/v1/alarms/any/ack",
            &[
                host,
                cookie,
                json_ct,
                ("x-csrf-token", csrf.as_str()),
                ("origin", "https://plant.example:8080"),
            ],
            ack.clone(),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
    let denied = fx.audit("kind=acl_denied").await;
    assert!(
        denied
            .iter()
            .filter(|d| d.to_string().contains("api:csrf"))
            .count()
            >= 5,
        "{denied:#?}"
    );

    // Logout revokes the session: the cookie is cleared and no longer works.
    let r = fx
        .call_raw(
            "DELETE",
            "/api/v1/session",
            &[host, cookie, ("x-csrf-token", csrf.as_str())],
            "",
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(r.headers["set-cookie"]
        .to_str()
        .expect("ascii")
        .contains("Max-Age=0"));
    let r = fx
        .call_raw("GET", "/api/v1/tags", &[host, cookie], "")
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);

    // A script's 401 (fetch: Sec-Fetch-Mode) carries no Basic challenge, which would open the
    // browser's own password prompt in front of the HMI; curl still gets both.
    let challenges = |r: &Resp| -> Vec<String> {
        r.headers
            .get_all("www-authenticate")
            .iter()
            .map(|v| v.to_str().expect("ascii").to_owned())
            .collect()
    };
    let r = fx
        .call_raw(
            "GET",
            "/api/v1/session",
            &[host, ("sec-fetch-mode", "cors")],
            "",
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(challenges(&r), [r#"Bearer realm="ironplant""#]);
    let r = fx.call_raw("GET", "/api/v1/session", &[host], "").await;
    assert_eq!(challenges(&r).len(), 2, "{:?}", challenges(&r));
    // The login screen asking whether anyone is logged in is no refused access (a wrong
    // credential there is); nor is the browser's own request for an icon.
    let r = fx
        .call_raw(
            "GET",
            "/api/v1/session",
            &[host, ("cookie", "ironplant_session=ipt_forged")],
            "",
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = fx.call_raw("GET", "/favicon.ico", &[host], "").await;
    assert_eq!(r.status, StatusCode::OK);
    let denied = fx.audit("kind=acl_denied").await;
    let session_denials = denied
        .iter()
        .filter(|d| d.to_string().contains("GET /api/v1/session"))
        .count();
    assert_eq!(session_denials, 1, "only the forged cookie: {denied:#?}");
    assert!(!denied.iter().any(|d| d.to_string().contains("favicon")));

    // The HMI's files are public, with a strict content policy; unknown ones are 404.
    let r = fx.call_raw("GET", "/", &[host], "").await;
    assert_eq!(r.status, StatusCode::OK);
    let csp = r.headers["content-security-policy"]
        .to_str()
        .expect("ascii");
    assert!(
        csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert!(
        r.text.contains("<html"),
        "{}",
        &r.text[..r.text.len().min(200)]
    );
    let r = fx.call_raw("GET", "/hmi/app.js", &[host], "").await;
    assert_eq!(r.status, StatusCode::OK);
    let r = fx.call_raw("GET", "/hmi/nope.js", &[host], "").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_shows_device_names_only_to_authenticated_callers() {
    let fx = fixture_with(
        r#"
[[device]]
id = "press-4"
protocol = "modbus-tcp"
address = "127.0.0.1:1"
poll_interval = "1s"
timeout = "200ms"

[[tag]]
path = "site/area9/press/speed"
device = "press-4"
modbus = { table = "holding", address = 0, type = "u16" }
"#,
        HttpSettings::default(),
    )
    .await;
    let r = fx.call("GET", "/healthz", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.json,
        json!({"status": "degraded"}),
        "no names, counts or uptime for an anonymous caller"
    );
    let r = fx.call("GET", "/healthz", Some(&fx.admin()), None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json["status"], "degraded");
    assert_eq!(r.json["devices"]["press-4"], "down", "{}", r.json);
    // Wrong credentials on the probe are refused like anywhere else.
    let r = fx
        .call("GET", "/healthz", Some(&basic("admin", "wrong")), None)
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_deleting_or_lowering_a_user_takes_effect_on_the_next_request() {
    let fx = fixture().await;
    fx.add_user("bob", "admin-password-12", "admin").await;
    fx.add_user("carl", "admin-password-34", "admin").await;
    let bob_session = bearer(&fx.login("bob", "admin-password-12").await);
    let r = fx
        .call(
            "POST",
            "/api/v1/tokens",
            Some(&bob_session),
            Some(json!({"label": "ci", "ttl": "1d"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    assert_eq!(r.json["role"], "admin");
    let bob_token = bearer(r.json["token"].as_str().expect("token"));
    for cred in [&bob_session, &bob_token] {
        let r = fx.call("GET", "/api/v1/users", Some(cred), None).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    }

    // Lowered to viewer: the session and the admin token he made act as a viewer at once.
    let r = fx
        .call(
            "PUT",
            "/api/v1/users/bob/role",
            Some(&fx.admin()),
            Some(json!({"role": "viewer"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.json);
    for cred in [&bob_session, &bob_token] {
        let r = fx.call("GET", "/api/v1/users", Some(cred), None).await;
        assert_eq!((r.status, r.code()), (StatusCode::FORBIDDEN, "forbidden"));
        let r = fx.call("GET", "/api/v1/tags", Some(cred), None).await;
        assert_eq!(r.status, StatusCode::OK, "still a viewer");
    }
    let changed = fx.audit("kind=user_changed").await;
    assert!(
        changed.iter().any(|r| r["user"] == "bob"
            && r["change"] == "role set to viewer"
            && r["actor"] == "admin"),
        "{changed:?}"
    );
    // An administrator may not change their own role (nor lock themselves out that way), and
    // a role must be one users can have.
    let r = fx
        .call(
            "PUT",
            "/api/v1/users/admin/role",
            Some(&fx.admin()),
            Some(json!({"role": "viewer"})),
        )
        .await;
    assert_eq!(r.code(), "cannot_change_self");
    let r = fx
        .call(
            "PUT",
            "/api/v1/users/bob/role",
            Some(&fx.admin()),
            Some(json!({"role": "device"})),
        )
        .await;
    assert_eq!(r.code(), "bad_role");
    // Raised again: at most the token's own role comes back.
    let r = fx
        .call(
            "PUT",
            "/api/v1/users/bob/role",
            Some(&fx.admin()),
            Some(json!({"role": "admin"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = fx
        .call("GET", "/api/v1/users", Some(&bob_token), None)
        .await;
    assert_eq!(r.status, StatusCode::OK);

    // Revoking the session ends it on the next request; the token lives on.
    let sessions = fx
        .call("GET", "/api/v1/tokens?user=bob", Some(&fx.admin()), None)
        .await;
    let session_id = sessions.json["tokens"]
        .as_array()
        .expect("tokens")
        .iter()
        .find(|t| t["label"] == "session")
        .and_then(|t| t["id"].as_str())
        .expect("bob's session")
        .to_owned();
    let r = fx
        .call(
            "DELETE",
            &format!("/api/v1/tokens/{session_id}"),
            Some(&fx.admin()),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = fx
        .call("GET", "/api/v1/tags", Some(&bob_session), None)
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::UNAUTHORIZED, "unauthenticated")
    );
    assert_eq!(
        fx.call("GET", "/api/v1/tags", Some(&bob_token), None)
            .await
            .status,
        StatusCode::OK
    );

    // Deleting the user ends every credential of his, and each refusal is audited.
    let carl_session = bearer(&fx.login("carl", "admin-password-34").await);
    let r = fx
        .call("DELETE", "/api/v1/users/carl", Some(&bob_token), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.json);
    let r = fx
        .call("GET", "/api/v1/tags", Some(&carl_session), None)
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = fx
        .call("DELETE", "/api/v1/users/bob", Some(&fx.admin()), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = fx.call("GET", "/api/v1/tags", Some(&bob_token), None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = fx
        .call(
            "GET",
            "/api/v1/tags",
            Some(&basic("bob", "admin-password-12")),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let deleted = fx.audit("kind=user_deleted").await;
    assert_eq!(deleted.len(), 2, "{deleted:?}");
    let denied = fx.audit("kind=acl_denied").await;
    assert!(
        denied
            .iter()
            .filter(|r| r["action"] == "api:unauthenticated" && r["topic"] == "GET /api/v1/tags")
            .count()
            >= 3,
        "{denied:?}"
    );
}
