//! The live WebSocket API (`/api/v1/live`) through the real HTTP server, with a real security
//! store and a runtime whose samples this test publishes on the bus (a test source), a real
//! historian on the same bus: a tokio-tungstenite client subscribes, gets the snapshot, the
//! changes and the births; a client that stops reading (tiny socket buffer) catches up with the
//! latest value of every tag while the bus and the historian never waited for it; events are
//! dropped oldest-first and announced; authentication, scopes, revocation, limits and pings.
//! The browser's side is in `live_browser.rs`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures_util::{SinkExt as _, StreamExt as _};
use ironplant_api::listen::Connections;
use ironplant_api::live::LiveSettings;
use ironplant_api::settings::HttpSettings;
use ironplant_api::ApiState;
use ironplant_core::{
    Event, EventKind, Quality, Sample, TagId, TagMeta, TagPath, Timestamp, Value, ValueType,
};
use ironplant_runtime::Runtime;
use ironplant_security::{
    ManualClock, PrefixRule, Role, Security, SecurityOptions, TagScopes, UserStoreOptions,
};
use serde_json::{json, Value as Json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

const WAIT: Duration = Duration::from_secs(10);

type Ws = WebSocketStream<TcpStream>;

struct Fx {
    addr: SocketAddr,
    sec: Arc<Security>,
    runtime: Arc<Runtime>,
    conns: Arc<Connections>,
    /// The tags under `acme/lyon/line1`, in id order.
    line1: Vec<TagId>,
    line10: TagId,
    paris: TagId,
    _dir: tempfile::TempDir,
}

impl Drop for Fx {
    fn drop(&mut self) {
        self.runtime.shutdown();
    }
}

fn register(rt: &Runtime, path: &str) -> TagId {
    rt.register_tag(TagMeta {
        id: TagId(0),
        path: TagPath::parse(path).expect("valid path"),
        value_type: ValueType::Int,
        unit: Some("bar".into()),
        description: format!("test tag {path}"),
        range: None,
        writable: false,
        device: None,
    })
    .expect("register")
}

fn sample(tag: TagId, v: i64) -> Sample {
    let now = Timestamp::now();
    Sample {
        tag,
        value: Value::Int(v),
        quality: Quality::GOOD,
        source_ts: now,
        server_ts: now,
    }
}

/// A platform with `line1_tags` tags under `acme/lyon/line1` (plus `acme/lyon/line10/...`,
/// which a subscription to `acme/lyon/line1` must not match, and one in Paris), a historian,
/// and the API with security on.
async fn fixture(live: LiveSettings, line1_tags: usize) -> Fx {
    let dir = tempfile::tempdir().expect("temp dir");
    let options = SecurityOptions {
        users: UserStoreOptions {
            argon2_m_kib: 64,
            argon2_t: 1,
            argon2_p: 1,
            ..UserStoreOptions::default()
        },
        ..SecurityOptions::default()
    };
    let clock = Arc::new(ManualClock::new(SystemTime::now()));
    let sec = Arc::new(
        Security::open(&dir.path().join("security"), clock, options).expect("security opens"),
    );
    let cfg = ironplant_api::settings::parse("t.toml", "").expect("an empty config is valid");
    let runtime = Runtime::start(&cfg, Some(&dir.path().join("data"))).expect("runtime starts");
    assert!(runtime.historian.is_some(), "the historian is on the bus");
    let line1: Vec<TagId> = (0..line1_tags)
        .map(|i| register(&runtime, &format!("acme/lyon/line1/filler/t{i}")))
        .collect();
    let line10 = register(&runtime, "acme/lyon/line10/mixer/m0");
    let paris = register(&runtime, "acme/paris/line2/press/p0");
    let http = HttpSettings {
        live,
        ..HttpSettings::default()
    };
    let conns = Connections::new(http, Some(sec.clone()));
    let state = Arc::new(ApiState {
        runtime: runtime.clone(),
        started: Instant::now(),
        mqtt: None,
        security: Some(sec.clone()),
        http: conns.clone(),
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
    Fx {
        addr,
        sec,
        runtime,
        conns,
        line1,
        line10,
        paris,
        _dir: dir,
    }
}

impl Fx {
    fn user_token(&self, name: &str, role: Role, read: Option<&[&str]>) -> (String, String) {
        if name != "admin" {
            self.sec
                .users
                .create_user(name, "a-long-enough-password", role, None)
                .expect("create user");
        }
        if let Some(read) = read {
            let rule = PrefixRule {
                read: Some(read.iter().map(|s| s.to_string()).collect()),
                write: None,
            };
            TagScopes::set_user_rule(&TagScopes::path(&self.sec), name, &rule).expect("scope");
        }
        let t = self
            .sec
            .users
            .create_token(name, None, Duration::from_secs(3600), "live", None)
            .expect("token");
        (t.id, t.token)
    }

    async fn publish(&self, samples: Vec<Sample>) {
        self.runtime.bus.publish(samples).await;
    }

    fn path(&self, t: TagId) -> String {
        self.runtime
            .namespace
            .tag(t)
            .expect("tag")
            .path
            .as_str()
            .to_owned()
    }
}

/// A WebSocket to the live API; `recv_buffer`: the client's socket receive buffer.
async fn connect(
    addr: SocketAddr,
    auth: Option<&str>,
    recv_buffer: Option<u32>,
) -> Result<Ws, String> {
    let socket = TcpSocket::new_v4().expect("socket");
    if let Some(size) = recv_buffer {
        socket.set_recv_buffer_size(size).expect("SO_RCVBUF");
    }
    let tcp = socket.connect(addr).await.expect("connect");
    let mut req = format!("ws://{addr}/api/v1/live")
        .into_client_request()
        .expect("valid URL");
    if let Some(a) = auth {
        req.headers_mut()
            .insert("authorization", a.parse().expect("header"));
    }
    req.headers_mut().insert(
        "sec-websocket-protocol",
        "ironplant.live.v1".parse().expect("header"),
    );
    match tokio_tungstenite::client_async(req, tcp).await {
        Ok((ws, resp)) => {
            assert_eq!(
                resp.headers()
                    .get("sec-websocket-protocol")
                    .map(|v| v.as_bytes()),
                Some(&b"ironplant.live.v1"[..])
            );
            Ok(ws)
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            let body = resp
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            Err(format!("{} {body}", resp.status().as_u16()))
        }
        Err(e) => Err(e.to_string()),
    }
}

async fn send(ws: &mut Ws, j: Json) {
    ws.send(Message::Text(j.to_string().into()))
        .await
        .expect("send");
}

/// The next JSON message (a close frame as `{"close": code, "reason": ...}`), within `WAIT`.
async fn next(ws: &mut Ws) -> Json {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let m = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("a message within the deadline");
        match m {
            Some(Ok(Message::Text(t))) => {
                return serde_json::from_str(&t).expect("the server sends JSON")
            }
            Some(Ok(Message::Close(f))) => {
                return json!({"close": f.as_ref().map(|f| u16::from(f.code)), "reason": f.map(|f| f.reason.to_string())})
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return json!({"error": e.to_string()}),
            None => return json!({"closed": true}),
        }
    }
}

/// Reads messages until one satisfies `pred`; returns it and the ones before it.
async fn until(ws: &mut Ws, pred: impl Fn(&Json) -> bool) -> (Json, Vec<Json>) {
    let mut before = Vec::new();
    loop {
        let m = next(ws).await;
        if pred(&m) {
            return (m, before);
        }
        assert!(
            m.get("close").is_none() && m.get("closed").is_none(),
            "closed while waiting: {m}; before: {before:?}"
        );
        before.push(m);
    }
}

fn is(t: &'static str) -> impl Fn(&Json) -> bool {
    move |m| m["type"] == t
}

async fn authed(fx: &Fx, token: &str) -> Ws {
    let mut ws = connect(fx.addr, None, None).await.expect("upgrade");
    send(&mut ws, json!({"op": "auth", "token": token})).await;
    let ready = next(&mut ws).await;
    assert_eq!(ready["type"], "ready", "{ready}");
    ws
}

/// Every sample path in a list of messages.
fn sample_paths(msgs: &[Json]) -> Vec<String> {
    msgs.iter()
        .filter(|m| m["type"] == "samples")
        .flat_map(|m| m["samples"].as_array().cloned().unwrap_or_default())
        .filter_map(|s| s["path"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_then_changes_births_and_unsubscribe() {
    let fx = fixture(LiveSettings::default(), 5).await;
    let (_, admin) = fx.user_token("admin", Role::Admin, None);
    let mut initial: Vec<Sample> = fx
        .line1
        .iter()
        .enumerate()
        .map(|(i, t)| sample(*t, i as i64 * 10))
        .collect();
    initial.push(sample(fx.line10, -1));
    initial.push(sample(fx.paris, -2));
    fx.publish(initial).await;

    let mut ws = authed(&fx, &admin).await;
    send(
        &mut ws,
        json!({"op": "subscribe", "id": 1, "tags": ["acme/lyon/line1/"]}),
    )
    .await;
    let snap = next(&mut ws).await;
    assert_eq!(snap["type"], "snapshot", "{snap}");
    assert_eq!(snap["id"], 1);
    assert_eq!(snap["more"], false);
    let tags = snap["tags"].as_array().expect("tags");
    let got: Vec<(String, i64)> = tags
        .iter()
        .map(|t| {
            (
                t["path"].as_str().expect("path").to_owned(),
                t["value"].as_i64().expect("value"),
            )
        })
        .collect();
    let want: Vec<(String, i64)> = fx
        .line1
        .iter()
        .enumerate()
        .map(|(i, t)| (fx.path(*t), i as i64 * 10))
        .collect();
    assert_eq!(got, want, "line1 only (not line10), with current values");
    // The wire format of TagJson, field by field.
    let t0 = &tags[0];
    assert_eq!(t0["quality"], "Good");
    assert_eq!(t0["quality_reason"], Json::Null);
    assert_eq!(t0["value_type"], "int");
    assert_eq!(t0["unit"], "bar");
    assert!(t0["ts"].as_str().is_some_and(|s| s.ends_with('Z')), "{t0}");
    assert!(t0["server_ts"].as_str().is_some(), "{t0}");

    // Changes: only subscribed tags, batched, latest value, SampleJson with its path.
    fx.publish(vec![
        sample(fx.line10, 7),
        sample(fx.paris, 7),
        sample(fx.line1[0], 100),
    ])
    .await;
    let (changes, before) = until(&mut ws, is("samples")).await;
    assert!(before.is_empty(), "{before:?}");
    let s = &changes["samples"][0];
    assert_eq!(s["path"], fx.path(fx.line1[0]));
    assert_eq!(s["value"], 100);
    assert_eq!(s["quality"], "Good");
    assert!(s["ts"].is_string() && s["server_ts"].is_string(), "{s}");
    assert_eq!(changes["samples"].as_array().map(Vec::len), Some(1));

    // A tag born later (a Sparkplug birth) under the prefix: announced with its metadata,
    // then its values.
    let born = register(&fx.runtime, "acme/lyon/line1/capper/torque");
    fx.publish(vec![sample(born, 42)]).await;
    let (tags_msg, _) = until(&mut ws, is("tags")).await;
    assert_eq!(tags_msg["tags"][0]["path"], "acme/lyon/line1/capper/torque");
    assert_eq!(
        tags_msg["tags"][0]["description"],
        "test tag acme/lyon/line1/capper/torque"
    );
    let (s, _) = until(&mut ws, |m| {
        sample_paths(std::slice::from_ref(m)).contains(&"acme/lyon/line1/capper/torque".into())
    })
    .await;
    assert_eq!(s["samples"][0]["value"], 42);

    send(&mut ws, json!({"op": "ping", "id": "p1"})).await;
    let (pong, _) = until(&mut ws, is("pong")).await;
    assert_eq!(pong["id"], "p1");

    // Unsubscribe: no more changes of line1; a later subscription's changes still come, and
    // they were published after the line1 change, so that one would have come first.
    send(&mut ws, json!({"op": "unsubscribe", "id": 2})).await;
    let (unsub, _) = until(&mut ws, is("unsubscribed")).await;
    assert_eq!(
        (unsub["id"].clone(), unsub["tags"].clone()),
        (json!(2), json!(0))
    );
    fx.publish(vec![sample(fx.line1[1], 555)]).await;
    send(
        &mut ws,
        json!({"op": "subscribe", "id": 3, "tags": ["acme/paris/line2/press/p0"]}),
    )
    .await;
    let (snap, _) = until(&mut ws, is("snapshot")).await;
    assert_eq!(snap["tags"][0]["value"], 7);
    fx.publish(vec![sample(fx.paris, 8)]).await;
    let (m, before) = until(&mut ws, |m| {
        sample_paths(std::slice::from_ref(m)).contains(&"acme/paris/line2/press/p0".into())
    })
    .await;
    let mut all = before;
    all.push(m);
    assert!(
        !sample_paths(&all).contains(&fx.path(fx.line1[1])),
        "an unsubscribed tag was sent: {all:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_catches_up_with_the_latest_values_without_slowing_the_bus() {
    const TAGS: usize = 300;
    const ROUNDS: i64 = 1_000;
    const EVENTS: usize = 100;
    let live = LiveSettings {
        max_events_queued: 10,
        ..LiveSettings::default()
    };
    let fx = fixture(live, TAGS).await;
    let (_, admin) = fx.user_token("admin", Role::Admin, None);
    fx.publish(fx.line1.iter().map(|t| sample(*t, -1)).collect())
        .await;
    // Authenticated by the header this time, with a 4 KiB receive buffer.
    let mut ws = connect(fx.addr, Some(&format!("Bearer {admin}")), Some(4096))
        .await
        .expect("upgrade");
    assert_eq!(next(&mut ws).await["type"], "ready");
    send(
        &mut ws,
        json!({"op": "subscribe", "id": 1, "tags": ["acme/lyon/line1"], "events": ["system"]}),
    )
    .await;
    let mut last: HashMap<String, i64> = HashMap::new();
    let mut samples_received = 0usize;
    let mut snapshot_done = false;
    while !snapshot_done {
        let m = next(&mut ws).await;
        assert_eq!(m["type"], "snapshot", "{m}");
        for t in m["tags"].as_array().expect("tags") {
            last.insert(
                t["path"].as_str().expect("path").into(),
                t["value"].as_i64().expect("int"),
            );
        }
        snapshot_done = m["more"] == false;
    }
    assert_eq!(last.len(), TAGS);

    // The client stops reading. The source publishes ROUNDS rounds (each tag skips some, so
    // tags end on different rounds); every publish must complete meanwhile.
    let started = Instant::now();
    let mut published = 0usize;
    for r in 0..ROUNDS {
        let batch: Vec<Sample> = fx
            .line1
            .iter()
            .enumerate()
            .filter(|(i, _)| (*i as i64 + r) % 7 != 0)
            .map(|(i, t)| sample(*t, r * 1_000 + i as i64))
            .collect();
        published += batch.len();
        tokio::time::timeout(WAIT, fx.publish(batch))
            .await
            .expect("a publish never waits for a live client");
    }
    for i in 0..EVENTS {
        fx.runtime.events.publish(Event::new(
            Timestamp::now(),
            EventKind::System,
            "test",
            "live-test",
            format!("e{i}"),
        ));
    }
    let publishing = started.elapsed();
    // The historian (a lossless `Block` subscriber) got every sample.
    let historian = fx.runtime.historian.as_ref().expect("historian");
    let initial = TAGS as u64;
    // fsyncs on a shared machine: a generous deadline.
    let deadline = Instant::now() + 3 * WAIT;
    while historian.stats().acked_samples < initial + published as u64 {
        assert!(
            Instant::now() < deadline,
            "historian acked {} of {}",
            historian.stats().acked_samples,
            initial + published as u64
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let deadline = Instant::now() + WAIT;
    while fx.conns.live().coalesced() == 0 {
        assert!(
            Instant::now() < deadline,
            "nothing was coalesced: the client was never behind ({published} samples in \
             {publishing:?})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The client reads again: it must end with the latest value of every tag.
    let want: HashMap<String, i64> = fx
        .line1
        .iter()
        .map(|t| {
            let v = match fx.runtime.bus.current(*t).map(|s| s.value) {
                Some(Value::Int(v)) => v,
                other => panic!("current value {other:?}"),
            };
            (fx.path(*t), v)
        })
        .collect();
    let mut events_received = Vec::new();
    let mut events_dropped = 0u64;
    let deadline = Instant::now() + WAIT;
    while last != want || events_received.len() as u64 + events_dropped < EVENTS as u64 {
        assert!(Instant::now() < deadline, "the client did not catch up");
        let m = next(&mut ws).await;
        match m["type"].as_str() {
            Some("samples") => {
                for s in m["samples"].as_array().expect("samples") {
                    samples_received += 1;
                    last.insert(
                        s["path"].as_str().expect("path").into(),
                        s["value"].as_i64().expect("int"),
                    );
                }
            }
            Some("event") => events_received.push(m["event"]["message"].clone()),
            Some("dropped") => events_dropped += m["events"].as_u64().expect("count"),
            _ => panic!("unexpected {m}"),
        }
    }
    assert!(
        samples_received < published,
        "received {samples_received} of {published}: nothing was coalesced"
    );
    assert!(events_dropped > 0, "events were not bounded");
    assert_eq!(
        events_received.last(),
        Some(&json!(format!("e{}", EVENTS - 1))),
        "the oldest events are the ones dropped"
    );
    let hub_dropped = fx
        .runtime
        .bus
        .stats()
        .subscribers
        .iter()
        .find(|s| s.0 == "live")
        .map_or(0, |s| s.1);
    // Every sample of a subscribed tag was either sent or superseded, once.
    let coalesced = fx.conns.live().coalesced();
    if hub_dropped == 0 {
        assert_eq!(samples_received as u64 + coalesced, published as u64);
    }
    let metrics = fx.conns.render();
    assert!(
        metrics.contains(&format!("ironplant_live_coalesced_total {coalesced}\n")),
        "{metrics}"
    );
    assert!(metrics.contains("ironplant_live_clients 1\n"), "{metrics}");
    assert!(
        !metrics.contains("ironplant_live_events_dropped_total 0\n"),
        "{metrics}"
    );
    eprintln!(
        "published {published} samples in {publishing:?}; the slow client received \
         {samples_received}, {coalesced} coalesced, {hub_dropped} dropped by the bus for the \
         hub (then re-read); events: {} received, {events_dropped} dropped",
        events_received.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication_is_required_and_checked() {
    let live = LiveSettings {
        auth_timeout: Duration::from_millis(300),
        ..LiveSettings::default()
    };
    let fx = fixture(live, 2).await;
    let (_, viewer) = fx.user_token("vera", Role::Viewer, None);

    // A plain GET without credentials: 401, as any API route.
    let mut tcp = TcpStream::connect(fx.addr).await.expect("connect");
    tcp.write_all(b"GET /api/v1/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut resp = String::new();
    tcp.read_to_string(&mut resp).await.expect("read");
    assert!(resp.starts_with("HTTP/1.1 401"), "{resp}");
    assert!(resp.contains("\"unauthenticated\""), "{resp}");

    // A password is not a way in (it could not be re-checked), even a right one.
    let basic = "Basic dmVyYTphLWxvbmctZW5vdWdoLXBhc3N3b3Jk"; // vera:a-long-enough-password
    let err = connect(fx.addr, Some(basic), None)
        .await
        .expect_err("refused");
    assert!(
        err.starts_with("401") && err.contains("bearer_required"),
        "{err}"
    );
    let err = connect(fx.addr, Some("Bearer ipt_forged"), None)
        .await
        .expect_err("refused");
    assert!(err.starts_with("401"), "{err}");

    // No auth message in time: told why, closed with 1008.
    let mut ws = connect(fx.addr, None, None).await.expect("upgrade");
    let m = next(&mut ws).await;
    assert_eq!(m["code"], "unauthenticated", "{m}");
    assert_eq!(next(&mut ws).await["close"], 1008);

    // A wrong token; then a subscribe before authenticating.
    for first in [
        json!({"op": "auth", "token": "ipt_notatoken"}),
        json!({"op": "subscribe", "tags": ["acme"]}),
    ] {
        let mut ws = connect(fx.addr, None, None).await.expect("upgrade");
        send(&mut ws, first.clone()).await;
        let m = next(&mut ws).await;
        assert_eq!(
            (m["type"].clone(), m["code"].clone()),
            (json!("error"), json!("unauthenticated")),
            "{first}: {m}"
        );
        assert_eq!(next(&mut ws).await["close"], 1008, "{first}");
    }

    // The right token in the first message.
    let mut ws = authed(&fx, &viewer).await;
    send(
        &mut ws,
        json!({"op": "subscribe", "id": 1, "tags": ["acme"]}),
    )
    .await;
    let (snap, _) = until(&mut ws, is("snapshot")).await;
    assert_eq!(snap["tags"].as_array().map(Vec::len), Some(4));
    // Security events need read_audit, which a viewer lacks.
    send(
        &mut ws,
        json!({"op": "subscribe", "id": 2, "events": ["security"]}),
    )
    .await;
    let (m, _) = until(&mut ws, is("error")).await;
    assert_eq!(
        (m["id"].clone(), m["code"].clone()),
        (json!(2), json!("forbidden")),
        "{m}"
    );
    let audit = fx.sec.audit.path().to_owned();
    assert!(
        wait_for_file(&audit, "subscribe security").await,
        "the refusal is in the audit log"
    );
    let metrics = fx.conns.render();
    assert!(
        metrics.contains("ironplant_live_refused_total{reason=\"unauthenticated\"} 5"),
        "{metrics}"
    );
}

/// A WebSocket to the live API with exactly these extra upgrade headers (a browser's cookie
/// and origin).
async fn connect_with(addr: SocketAddr, headers: &[(&'static str, String)]) -> Ws {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let mut req = format!("ws://{addr}/api/v1/live")
        .into_client_request()
        .expect("valid URL");
    for (k, v) in headers {
        req.headers_mut().insert(*k, v.parse().expect("header"));
    }
    tokio_tungstenite::client_async(req, tcp)
        .await
        .expect("upgrade")
        .0
}

/// The HMI's page authenticates its live socket with the session cookie the browser sends on
/// the upgrade, unlocked by the CSRF token in its first message; from another origin, with
/// another session's token, or with a token and no cookie, it is refused (1008).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hmi_cookie_authenticates_only_with_its_csrf_token_from_this_origin() {
    let fx = fixture(LiveSettings::default(), 2).await;
    let (_, session) = fx.user_token("olga", Role::Operator, None);
    let csrf = ironplant_api::session::csrf_for(&session);
    let cookie = format!("ironplant_session={session}");
    let here = format!("http://{}", fx.addr);
    let refused = [
        (
            "another origin",
            vec![
                ("cookie", cookie.clone()),
                ("origin", "https://evil.example".to_owned()),
            ],
            csrf.clone(),
        ),
        (
            "another session's token",
            vec![("cookie", cookie.clone()), ("origin", here.clone())],
            ironplant_api::session::csrf_for("ipt_other"),
        ),
        ("no cookie", vec![("origin", here.clone())], csrf.clone()),
    ];
    for (what, headers, token) in refused {
        let mut ws = connect_with(fx.addr, &headers).await;
        send(&mut ws, json!({"op": "auth", "csrf": token})).await;
        let m = next(&mut ws).await;
        assert_eq!(m["code"], "unauthenticated", "{what}: {m}");
        assert_eq!(next(&mut ws).await["close"], 1008, "{what}");
    }
    let mut ws = connect_with(fx.addr, &[("cookie", cookie), ("origin", here)]).await;
    send(&mut ws, json!({"op": "auth", "csrf": csrf})).await;
    let ready = next(&mut ws).await;
    assert_eq!(
        (ready["type"].clone(), ready["user"].clone()),
        (json!("ready"), json!("olga")),
        "{ready}"
    );
    send(
        &mut ws,
        json!({"op": "subscribe", "id": 1, "tags": ["acme/lyon/line1"]}),
    )
    .await;
    let (snap, _) = until(&mut ws, is("snapshot")).await;
    assert_eq!(snap["tags"].as_array().map(Vec::len), Some(2), "{snap}");
}

async fn wait_for_file(path: &std::path::Path, needle: &str) -> bool {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if std::fs::read_to_string(path).is_ok_and(|s| s.contains(needle)) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scopes_limit_tags_and_events_and_revocation_closes() {
    let live = LiveSettings {
        recheck_interval: Duration::from_millis(200),
        ..LiveSettings::default()
    };
    let fx = fixture(live, 3).await;
    let (token_id, token) = fx.user_token("lyon", Role::Viewer, Some(&["acme/lyon/line1"]));
    let mut ws = authed(&fx, &token).await;

    // Outside the scope: refused with what, why and how; inside a wider prefix: filtered.
    send(
        &mut ws,
        json!({"op": "subscribe", "id": 1, "tags": ["acme/paris"]}),
    )
    .await;
    let m = next(&mut ws).await;
    assert_eq!(
        (m["id"].clone(), m["code"].clone()),
        (json!(1), json!("forbidden")),
        "{m}"
    );
    assert!(
        m["message"]
            .as_str()
            .is_some_and(|s| s.contains("acme/paris") && s.contains("prefix")),
        "{m}"
    );
    send(
        &mut ws,
        json!({"op": "subscribe", "id": 2, "tags": ["acme"], "events": ["alarm"]}),
    )
    .await;
    let snap = next(&mut ws).await;
    let paths: Vec<&str> = snap["tags"]
        .as_array()
        .expect("tags")
        .iter()
        .filter_map(|t| t["path"].as_str())
        .collect();
    let want: Vec<String> = fx.line1.iter().map(|t| fx.path(*t)).collect();
    assert_eq!(paths, want, "only line1 (not line10, not paris): {snap}");

    // Bad requests: what, where, how to fix.
    for (req, code) in [
        (
            json!({"op": "subscribe", "id": 3, "tags": ["acme//x"]}),
            "bad_path",
        ),
        (
            json!({"op": "subscribe", "id": 4, "events": ["alarms"]}),
            "bad_event",
        ),
        (json!({"op": "subscrbe", "id": 5}), "unknown_op"),
        (json!({"op": "subscribe", "id": 6}), "bad_request"),
    ] {
        send(&mut ws, req.clone()).await;
        let m = next(&mut ws).await;
        assert_eq!(m["code"], code, "{req}: {m}");
        assert_eq!(m["id"], req["id"], "{m}");
    }
    ws.send(Message::Text("{not json".into()))
        .await
        .expect("send");
    let m = next(&mut ws).await;
    assert_eq!(m["code"], "bad_request", "{m}");
    assert!(
        m["message"].as_str().is_some_and(|s| s.contains("column")),
        "{m}"
    );

    // Events follow the scopes too.
    for (subject, msg) in [
        ("acme/paris/line2/press", "paris alarm"),
        ("acme/lyon/line1/filler", "lyon alarm"),
    ] {
        fx.runtime.events.publish(
            Event::new(Timestamp::now(), EventKind::Alarm, "raised", "test", msg)
                .with_subject(TagPath::parse(subject).expect("path")),
        );
    }
    let (e, before) = until(&mut ws, is("event")).await;
    assert!(before.is_empty(), "{before:?}");
    assert_eq!(e["event"]["message"], "lyon alarm");
    assert_eq!(e["event"]["kind"], "alarm");
    assert_eq!(e["event"]["subject"], "acme/lyon/line1/filler");

    // The scope narrows while connected: the next recheck stops the tags it no longer covers.
    let narrow = PrefixRule {
        read: Some(vec![fx.path(fx.line1[0])]),
        write: None,
    };
    TagScopes::set_user_rule(&TagScopes::path(&fx.sec), "lyon", &narrow).expect("scope");
    let (m, _) = until(&mut ws, |m| m["code"] == "scope_changed").await;
    assert!(
        m["message"]
            .as_str()
            .is_some_and(|s| s.contains("2 subscribed tag(s)")),
        "{m}"
    );
    fx.publish(vec![sample(fx.line1[1], 11), sample(fx.line1[0], 10)])
        .await;
    let (m, before) = until(&mut ws, is("samples")).await;
    assert!(before.iter().all(|m| m["type"] != "samples"), "{before:?}");
    assert_eq!(sample_paths(&[m]), vec![fx.path(fx.line1[0])]);

    // Widened again: the two tags come back, with a snapshot of their values.
    let wide = PrefixRule {
        read: Some(vec!["acme/lyon/line1".into()]),
        write: None,
    };
    TagScopes::set_user_rule(&TagScopes::path(&fx.sec), "lyon", &wide).expect("scope");
    let (snap, _) = until(&mut ws, is("snapshot")).await;
    assert_eq!(snap["id"], Json::Null, "{snap}");
    let back: Vec<&str> = snap["tags"]
        .as_array()
        .expect("tags")
        .iter()
        .filter_map(|t| t["path"].as_str())
        .collect();
    assert_eq!(back, [fx.path(fx.line1[1]), fx.path(fx.line1[2])]);
    assert_eq!(snap["tags"][0]["value"], 11, "the current value");
    let (m, _) = until(&mut ws, |m| m["code"] == "scope_changed").await;
    assert!(
        m["message"]
            .as_str()
            .is_some_and(|s| s.contains("2 are now included")),
        "{m}"
    );

    // The token is revoked: the connection is closed at the next recheck.
    fx.sec
        .users
        .revoke_token(&token_id, Some("admin"))
        .expect("revoke");
    let (m, _) = until(&mut ws, |m| m.get("close").is_some()).await;
    assert_eq!(m["close"], 1008, "{m}");
    assert!(
        m["reason"].as_str().is_some_and(|s| s.contains("revoked")),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_clients_and_closes_clients_that_do_not_answer_pings() {
    let live = LiveSettings {
        max_clients: 1,
        ping_interval: Duration::from_millis(100),
        ..LiveSettings::default()
    };
    let fx = fixture(live, 1).await;
    let (_, admin) = fx.user_token("admin", Role::Admin, None);
    let mut first = authed(&fx, &admin).await;
    let err = connect(fx.addr, None, None).await.expect_err("refused");
    assert!(
        err.starts_with("503") && err.contains("too_many_live_clients"),
        "{err}"
    );
    assert!(
        wait_for_file(fx.sec.audit.path(), "too_many_live_clients").await,
        "the refusal is in the audit log"
    );
    // `first` does not read, so its pings go unanswered: closed after two intervals.
    let deadline = Instant::now() + WAIT;
    while !fx
        .conns
        .render()
        .contains("ironplant_live_closed_total{reason=\"ping_timeout\"} 1")
    {
        assert!(Instant::now() < deadline, "{}", fx.conns.render());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (m, _) = until(&mut first, |m| m.get("close").is_some()).await;
    assert_eq!(m["close"], 1001, "{m}");
    // Its slot is free again.
    let deadline = Instant::now() + WAIT;
    while fx.conns.live().clients() != 0 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut second = authed(&fx, &admin).await;
    // A message over max_message_size: closed with 1009, saying why.
    let big = json!({"op": "subscribe", "tags": ["acme/".to_owned() + &"x".repeat(70_000)]});
    send(&mut second, big).await;
    let (m, _) = until(&mut second, |m| m.get("close").is_some()).await;
    assert_eq!(m["close"], 1009, "{m}");
    assert!(
        m["reason"].as_str().is_some_and(|r| r.contains("65536")),
        "{m}"
    );
}
