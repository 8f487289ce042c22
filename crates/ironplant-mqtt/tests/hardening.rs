//! Issue 10's broker holes, each tried as an attacker would, over real TCP with our codec as
//! the client and an `Auth` whose rules the test changes while clients are connected:
//! wills on forbidden topics, client-id and session takeover by another identity, stored
//! subscriptions after the rules changed, revocation of live connections, stale expiry timers
//! of an older session, 3.1.1 clients refused in 3.1.1, and the resource limits.

mod raw_client;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ironplant_mqtt::auth::{Auth, ConnectInfo, Denied, Principal};
use ironplant_mqtt::codec::{
    Connect, Packet, ProtocolVersion, QoS, ReasonCode, Will, WillProperties,
};
use ironplant_mqtt::{Broker, BrokerConfig};
use raw_client::{publish, s, Client};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Rules the test changes at run time: topic prefixes nobody may publish or subscribe to,
/// and revoked user names. The user name is the owner; `admin` is privileged.
#[derive(Default)]
struct Rules {
    forbidden: Mutex<Vec<String>>,
    revoked: Mutex<HashSet<String>>,
    epoch: AtomicU64,
    denied: Mutex<Vec<String>>,
}

impl Rules {
    fn forbid(&self, prefix: &str) {
        self.forbidden.lock().expect("lock").push(prefix.into());
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }
    fn allowed(&self, topic: &str) -> bool {
        !self
            .forbidden
            .lock()
            .expect("lock")
            .iter()
            .any(|f| topic.starts_with(f.as_str()))
    }
    fn denied(&self) -> Vec<String> {
        self.denied.lock().expect("lock").clone()
    }
}

impl Auth for Rules {
    fn connect(&self, info: &ConnectInfo<'_>) -> Result<Principal, ReasonCode> {
        Ok(Principal {
            client_id: info.client_id.into(),
            user: info.username.map(Into::into),
            roles: Vec::new(),
            owner: info.username.map(Into::into),
        })
    }
    fn may_publish(&self, _who: &Principal, topic: &str) -> bool {
        self.allowed(topic)
    }
    fn may_subscribe(&self, _who: &Principal, filter: &str) -> bool {
        self.allowed(filter)
    }
    fn denied(&self, who: Option<&Principal>, _peer: SocketAddr, what: Denied<'_>) {
        let who = who
            .and_then(|p| p.user.as_deref())
            .unwrap_or("-")
            .to_owned();
        self.denied
            .lock()
            .expect("lock")
            .push(format!("{who} {what:?}"));
    }
    fn is_cheap(&self) -> bool {
        true
    }
    fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }
    fn revalidate(&self, who: &[&Principal]) -> Vec<bool> {
        let revoked = self.revoked.lock().expect("lock");
        who.iter()
            .map(|p| p.user.as_deref().is_none_or(|u| !revoked.contains(u)))
            .collect()
    }
    fn is_privileged(&self, who: &Principal) -> bool {
        who.user.as_deref() == Some("admin")
    }
}

/// A broker with `rules`; connections are served as if they came from `peer` (`None`: their
/// real loopback address), so per-address limits can be tried on one machine.
async fn start_with(
    cfg: BrokerConfig,
    rules: Arc<Rules>,
    peer: Option<SocketAddr>,
) -> (Broker, SocketAddr) {
    let broker = Broker::open(cfg, rules).expect("in-memory broker");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let b = broker.clone();
    tokio::spawn(async move {
        while let Ok((stream, real)) = listener.accept().await {
            let b = b.clone();
            tokio::spawn(async move {
                let _ = b.serve_connection(stream, peer.unwrap_or(real)).await;
            });
        }
    });
    (broker, addr)
}

fn connect(id: &str, user: &str, version: ProtocolVersion, clean: bool) -> Connect {
    let mut c = Connect::new(version, s(id), 30);
    c.username = Some(s(user));
    c.password = Some(bytes::Bytes::from_static(b"pw"));
    c.clean_start = clean;
    if version == ProtocolVersion::V5 && !clean {
        c.properties.session_expiry_interval = Some(600);
    }
    c
}

fn will(topic: &str, retain: bool) -> Will {
    Will {
        topic: s(topic),
        payload: bytes::Bytes::from_static(b"offline"),
        qos: QoS::AtLeastOnce,
        retain,
        properties: WillProperties::default(),
    }
}

async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn payloads(packets: &[Packet]) -> Vec<String> {
    packets
        .iter()
        .filter_map(|p| match p {
            Packet::Publish(p) => Some(String::from_utf8_lossy(&p.payload).into_owned()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_will_on_a_forbidden_topic_refuses_the_connect_in_both_versions() {
    let rules = Arc::new(Rules::default());
    rules.forbid("spBv1.0/STATE/");
    let (_b, addr) = start_with(BrokerConfig::default(), rules.clone(), None).await;
    let mut watcher = Client::connect(addr, "watcher", ProtocolVersion::V5, None).await;
    watcher.subscribe("#", QoS::AtLeastOnce).await;
    for (version, code) in [
        (ProtocolVersion::V5, ReasonCode::NotAuthorized),
        (ProtocolVersion::V311, ReasonCode::NotAuthorized),
    ] {
        let mut c = connect("sneaky", "viewer", version, true);
        c.will = Some(will("spBv1.0/STATE/host", true));
        let (mut client, ack) = Client::connect_with(addr, c).await;
        assert_eq!(ack.reason_code, code, "{version:?}");
        assert_eq!(client.recv().await, None, "the connection is closed");
    }
    assert!(watcher.drain().await.is_empty(), "no will was delivered");
    assert_eq!(
        rules.denied(),
        [
            "viewer Will(\"spBv1.0/STATE/host\")",
            "viewer Will(\"spBv1.0/STATE/host\")"
        ]
    );
}

#[tokio::test]
async fn a_will_is_checked_again_when_it_fires() {
    let rules = Arc::new(Rules::default());
    let (broker, addr) = start_with(BrokerConfig::default(), rules.clone(), None).await;
    let mut watcher = Client::connect(addr, "watcher", ProtocolVersion::V5, None).await;
    watcher.subscribe("plant/#", QoS::AtLeastOnce).await;
    let mut c = connect("edge", "edge", ProtocolVersion::V5, true);
    c.will = Some(will("plant/line1/status", true));
    let (client, ack) = Client::connect_with(addr, c).await;
    assert_eq!(ack.reason_code, ReasonCode::Success);
    // The rules change while it is connected: its will may no longer go there.
    rules.forbid("plant/line1/");
    drop(client); // unclean close: the will would fire
    eventually("the will was refused", || {
        broker.stats().wills_denied.load(Ordering::Relaxed) == 1
    })
    .await;
    assert!(
        watcher.drain().await.is_empty(),
        "the will was not delivered"
    );
    assert!(rules
        .denied()
        .contains(&"edge Will(\"plant/line1/status\")".to_owned()));
    // An allowed will still fires.
    let mut c = connect("edge2", "edge2", ProtocolVersion::V5, true);
    c.will = Some(will("plant/line2/status", false));
    let (client, _) = Client::connect_with(addr, c).await;
    drop(client);
    assert_eq!(
        String::from_utf8_lossy(&watcher.next_publish().await.payload),
        "offline"
    );
}

#[tokio::test]
async fn another_identity_can_neither_take_over_nor_resume_a_client_id() {
    let rules = Arc::new(Rules::default());
    let (_b, addr) = start_with(BrokerConfig::default(), rules.clone(), None).await;
    // The holder: a device with a persistent session and a will.
    let mut c = connect("press-4", "press-4", ProtocolVersion::V5, false);
    c.will = Some(will("plant/press-4/status", false));
    let (mut holder, ack) = Client::connect_with(addr, c).await;
    assert_eq!(ack.reason_code, ReasonCode::Success);
    holder
        .subscribe("plant/cmd/press-4", QoS::AtLeastOnce)
        .await;
    let mut watcher = Client::connect(addr, "watcher", ProtocolVersion::V5, None).await;
    watcher.subscribe("plant/press-4/#", QoS::AtLeastOnce).await;

    // An attacker logged in as someone else takes the id: refused, 3.1.1 and 5.
    for version in [ProtocolVersion::V5, ProtocolVersion::V311] {
        for clean in [true, false] {
            let (_, ack) =
                Client::connect_with(addr, connect("press-4", "mallory", version, clean)).await;
            assert_eq!(ack.reason_code, ReasonCode::NotAuthorized, "{version:?}");
        }
    }
    // The holder was not disturbed: still connected, no will fired, still receiving.
    let mut sender = Client::connect(addr, "sender", ProtocolVersion::V5, None).await;
    sender
        .send(publish(
            "plant/cmd/press-4",
            "go",
            QoS::AtLeastOnce,
            false,
            1,
        ))
        .await;
    assert_eq!(
        String::from_utf8_lossy(&holder.next_publish().await.payload),
        "go"
    );
    assert!(watcher.drain().await.is_empty(), "no will fired");
    assert_eq!(
        rules
            .denied()
            .iter()
            .filter(|d| d.as_str() == "mallory Takeover(\"press-4\")")
            .count(),
        4
    );

    // Away, its session waits; another identity still cannot resume it (no messages leak)...
    holder.send(Packet::Disconnect(Default::default())).await;
    assert_eq!(holder.recv().await, None);
    sender
        .send(publish(
            "plant/cmd/press-4",
            "queued",
            QoS::AtLeastOnce,
            false,
            2,
        ))
        .await;
    let (mut thief, ack) = Client::connect_with(
        addr,
        connect("press-4", "mallory", ProtocolVersion::V5, false),
    )
    .await;
    assert_eq!(ack.reason_code, ReasonCode::NotAuthorized);
    assert!(!ack.session_present);
    assert_eq!(thief.recv().await, None);
    // ...while its owner does, and finds what waited.
    let (mut back, ack) = Client::connect_with(
        addr,
        connect("press-4", "press-4", ProtocolVersion::V5, false),
    )
    .await;
    assert_eq!(ack.reason_code, ReasonCode::Success);
    assert!(ack.session_present);
    // What was in flight ("go", never acknowledged) comes again first, then what waited.
    assert_eq!(payloads(&back.drain().await), ["go", "queued"]);
    // The same identity may take over its own connection (a device reconnecting).
    let (_again, ack) = Client::connect_with(
        addr,
        connect("press-4", "press-4", ProtocolVersion::V5, false),
    )
    .await;
    assert_eq!(ack.reason_code, ReasonCode::Success);
}

#[tokio::test]
async fn stored_subscriptions_are_checked_again_on_resume() {
    let rules = Arc::new(Rules::default());
    let (_b, addr) = start_with(BrokerConfig::default(), rules.clone(), None).await;
    let (mut c, _) =
        Client::connect_with(addr, connect("dash", "dana", ProtocolVersion::V5, false)).await;
    c.subscribe("recipes/#", QoS::AtLeastOnce).await;
    c.subscribe("public/#", QoS::AtLeastOnce).await;
    c.send(Packet::Disconnect(Default::default())).await;
    assert_eq!(c.recv().await, None);
    let mut sender = Client::connect(addr, "sender", ProtocolVersion::V5, None).await;
    sender
        .send(publish("recipes/secret", "r1", QoS::AtLeastOnce, false, 1))
        .await;
    sender
        .send(publish("public/news", "n1", QoS::AtLeastOnce, false, 2))
        .await;
    sender.drain().await;
    // Dana loses the right to read recipes while away.
    rules.forbid("recipes/");
    let (mut c, ack) =
        Client::connect_with(addr, connect("dash", "dana", ProtocolVersion::V5, false)).await;
    assert!(ack.session_present);
    assert_eq!(
        payloads(&c.drain().await),
        ["n1"],
        "the queued recipe was dropped"
    );
    sender
        .send(publish("recipes/secret", "r2", QoS::AtLeastOnce, false, 3))
        .await;
    sender
        .send(publish("public/news", "n2", QoS::AtLeastOnce, false, 4))
        .await;
    sender.drain().await;
    assert_eq!(
        payloads(&c.drain().await),
        ["n2"],
        "the subscription is gone"
    );
    assert!(rules
        .denied()
        .contains(&"dana ResumedSubscription(\"recipes/#\")".to_owned()));
}

#[tokio::test]
async fn revocation_closes_live_connections_within_a_second() {
    let rules = Arc::new(Rules::default());
    let (broker, addr) = start_with(BrokerConfig::default(), rules.clone(), None).await;
    let (mut v5, _) =
        Client::connect_with(addr, connect("a", "olga", ProtocolVersion::V5, true)).await;
    let (mut v3, _) =
        Client::connect_with(addr, connect("b", "olga", ProtocolVersion::V311, true)).await;
    let (mut other, _) =
        Client::connect_with(addr, connect("c", "eve", ProtocolVersion::V5, true)).await;
    let t0 = Instant::now();
    rules.revoked.lock().expect("lock").insert("olga".into());
    match v5.recv().await {
        Some(Packet::Disconnect(d)) => assert_eq!(d.reason_code, ReasonCode::NotAuthorized),
        other => panic!("expected DISCONNECT 0x87, got {other:?}"),
    }
    assert_eq!(v5.recv().await, None);
    assert_eq!(v3.recv().await, None, "3.1.1: closed");
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(1), "took {took:?}");
    assert!(other.drain().await.is_empty(), "eve is still connected");
    assert_eq!(broker.stats().revoked.load(Ordering::Relaxed), 2);
    assert_eq!(
        rules
            .denied()
            .iter()
            .filter(|d| d.as_str() == "olga Revoked")
            .count(),
        2
    );
}

#[tokio::test]
async fn an_older_sessions_expiry_timer_does_not_end_a_newer_session() {
    let rules = Arc::new(Rules::default());
    let (_b, addr) = start_with(BrokerConfig::default(), rules, None).await;
    // Session 1: expires one second after its client leaves.
    let mut c1 = connect("x", "x", ProtocolVersion::V5, true);
    c1.properties.session_expiry_interval = Some(1);
    let (mut c, _) = Client::connect_with(addr, c1).await;
    c.send(Packet::Disconnect(Default::default())).await;
    assert_eq!(c.recv().await, None);
    // Session 2, same client id, started clean: ten minutes.
    let mut c2 = connect("x", "x", ProtocolVersion::V5, true);
    c2.properties.session_expiry_interval = Some(600);
    let (mut c, _) = Client::connect_with(addr, c2).await;
    c.subscribe("t", QoS::AtLeastOnce).await;
    c.send(Packet::Disconnect(Default::default())).await;
    assert_eq!(c.recv().await, None);
    // Session 1's timer comes due (real time: the behaviour under test is a timer).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut sender = Client::connect(addr, "sender", ProtocolVersion::V5, None).await;
    sender
        .send(publish("t", "kept", QoS::AtLeastOnce, false, 1))
        .await;
    sender.drain().await;
    let mut back = connect("x", "x", ProtocolVersion::V5, false);
    back.properties.session_expiry_interval = Some(600);
    let (mut c, ack) = Client::connect_with(addr, back).await;
    assert!(ack.session_present, "session 2 survived session 1's timer");
    assert_eq!(
        String::from_utf8_lossy(&c.next_publish().await.payload),
        "kept"
    );
}

#[tokio::test]
async fn a_malformed_3_1_1_connect_is_never_answered_in_5_0() {
    let (_b, addr) = start_with(BrokerConfig::default(), Arc::new(Rules::default()), None).await;
    // 3.1.1 CONNECT with the reserved flag bit set (a protocol violation).
    let bad_v4: &[u8] = &[
        0x10, 0x0d, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x03, 0x00, 0x1e, 0x00, 0x01, b'a',
    ];
    // 5.0 CONNECT with the same fault gets a 5.0 CONNACK with a reason code.
    let bad_v5: &[u8] = &[
        0x10, 0x0e, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x03, 0x00, 0x1e, 0x00, 0x00, 0x01,
        b'a',
    ];
    for (bytes, v5) in [(bad_v4, false), (bad_v5, true)] {
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        tcp.write_all(bytes).await.expect("write");
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut got))
            .await
            .expect("closed in time")
            .expect("read");
        if v5 {
            assert_eq!(got.first(), Some(&0x20), "a CONNACK");
            assert!(got.len() > 4, "5.0 CONNACK has properties: {got:?}");
            assert!(got[3] >= 0x80, "an error reason code: {got:?}");
        } else {
            // 3.1.1 has no return code for a malformed CONNECT: closed, or a 4-byte CONNACK.
            assert!(
                got.is_empty() || (got.len() == 4 && got[1] == 2 && got[3] <= 5),
                "not a 3.1.1 answer: {got:?}"
            );
        }
    }
}

#[tokio::test]
async fn server_keep_alive_is_announced_and_enforced() {
    let cfg = BrokerConfig {
        server_keep_alive: Some(1),
        ..BrokerConfig::default()
    };
    let (_b, addr) = start_with(cfg, Arc::new(Rules::default()), None).await;
    let (mut c, ack) =
        Client::connect_with(addr, connect("k", "k", ProtocolVersion::V5, true)).await;
    assert_eq!(ack.properties.server_keep_alive, Some(1));
    // Silent for longer than 1.5 × 1 s: closed with Keep Alive timeout.
    let t0 = Instant::now();
    match c.recv().await {
        Some(Packet::Disconnect(d)) => assert_eq!(d.reason_code, ReasonCode::KeepAliveTimeout),
        other => panic!("expected DISCONNECT 0x8D, got {other:?}"),
    }
    assert!(t0.elapsed() < Duration::from_secs(4));
}

#[tokio::test]
async fn limits_on_connections_per_address_with_a_reserve_for_administrators() {
    let cfg = BrokerConfig {
        max_connections: 3,
        privileged_reserve: 1,
        max_connections_per_address: 2,
        ..BrokerConfig::default()
    };
    let rules = Arc::new(Rules::default());
    let far: SocketAddr = "10.20.30.40:5555".parse().expect("addr");
    let (broker, addr) = start_with(cfg.clone(), rules.clone(), Some(far)).await;
    let (_a, ack) = Client::connect_with(addr, connect("a", "u", ProtocolVersion::V5, true)).await;
    assert_eq!(ack.reason_code, ReasonCode::Success);
    let (_b, ack) = Client::connect_with(addr, connect("b", "u", ProtocolVersion::V5, true)).await;
    assert_eq!(ack.reason_code, ReasonCode::Success);
    // A third from the same address: closed before CONNACK.
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut got))
        .await
        .expect("closed in time")
        .expect("read");
    assert!(got.is_empty());
    assert!(rules
        .denied()
        .contains(&"- Limit(\"connections_per_address\")".to_owned()));
    assert_eq!(broker.stats().limited.load(Ordering::Relaxed), 1);

    // The total: loopback is exempt from the per-address limit, not from the total; the
    // reserve above it is for administrators.
    let (_broker, addr) = start_with(cfg, rules.clone(), None).await;
    let mut held = Vec::new();
    for id in ["a", "b", "c"] {
        let (c, ack) =
            Client::connect_with(addr, connect(id, "u", ProtocolVersion::V5, true)).await;
        assert_eq!(ack.reason_code, ReasonCode::Success, "{id}");
        held.push(c);
    }
    let (mut d, ack) =
        Client::connect_with(addr, connect("d", "u", ProtocolVersion::V5, true)).await;
    assert_eq!(ack.reason_code, ReasonCode::QuotaExceeded);
    // Closed once its slot is given back.
    assert_eq!(d.recv().await, None);
    let (mut d, ack) =
        Client::connect_with(addr, connect("d", "u", ProtocolVersion::V311, true)).await;
    assert_eq!(ack.reason_code, ReasonCode::ServerUnavailable, "3.1.1 code");
    assert_eq!(d.recv().await, None);
    let (_admin, ack) = Client::connect_with(
        addr,
        connect("admin-console", "admin", ProtocolVersion::V5, true),
    )
    .await;
    assert_eq!(ack.reason_code, ReasonCode::Success, "the admin gets in");
}

#[tokio::test]
async fn limits_on_sessions_subscriptions_and_retained_messages_per_owner() {
    let cfg = BrokerConfig {
        max_sessions: 2,
        max_subscriptions_per_client: 2,
        max_retained_per_owner: 2,
        max_retained_bytes_per_owner: 1_000,
        sys_interval: None,
        ..BrokerConfig::default()
    };
    let rules = Arc::new(Rules::default());
    let (broker, addr) = start_with(cfg, rules.clone(), None).await;
    let (mut c, _) =
        Client::connect_with(addr, connect("a", "dev", ProtocolVersion::V5, true)).await;
    // Subscriptions: the third is refused, re-subscribing an existing one is not.
    c.subscribe("x/1", QoS::AtMostOnce).await;
    c.subscribe("x/2", QoS::AtMostOnce).await;
    c.send(Packet::Subscribe(ironplant_mqtt::codec::Subscribe {
        packet_id: std::num::NonZeroU16::new(9).expect("pid"),
        properties: Default::default(),
        subscriptions: vec![
            ironplant_mqtt::codec::Subscription {
                filter: s("x/3"),
                options: ironplant_mqtt::codec::SubscriptionOptions::qos(QoS::AtMostOnce),
            },
            ironplant_mqtt::codec::Subscription {
                filter: s("x/1"),
                options: ironplant_mqtt::codec::SubscriptionOptions::qos(QoS::AtLeastOnce),
            },
        ],
    }))
    .await;
    match c.recv().await {
        Some(Packet::SubAck(a)) => assert_eq!(
            a.reason_codes,
            [ReasonCode::QuotaExceeded, ReasonCode::GrantedQos1]
        ),
        other => panic!("expected SUBACK, got {other:?}"),
    }
    // Retained messages: two topics, then the third is refused (0x97) and not stored;
    // replacing one of its own is fine; so is deleting one to make room.
    for (i, topic) in ["r/1", "r/2", "r/1"].iter().enumerate() {
        c.send(publish(topic, "v", QoS::AtLeastOnce, true, 10 + i as u16))
            .await;
        match c.recv().await {
            Some(Packet::PubAck(a)) => assert_eq!(a.reason_code, ReasonCode::Success, "{topic}"),
            other => panic!("expected PUBACK, got {other:?}"),
        }
    }
    c.send(publish("r/3", "v", QoS::AtLeastOnce, true, 20))
        .await;
    match c.recv().await {
        Some(Packet::PubAck(a)) => assert_eq!(a.reason_code, ReasonCode::QuotaExceeded),
        other => panic!("expected PUBACK 0x97, got {other:?}"),
    }
    assert_eq!(broker.counts().retained, 2);
    c.send(publish("r/2", "", QoS::AtLeastOnce, true, 21)).await;
    c.recv().await;
    c.send(publish("r/3", "v", QoS::AtLeastOnce, true, 22))
        .await;
    match c.recv().await {
        Some(Packet::PubAck(a)) => assert_eq!(a.reason_code, ReasonCode::Success),
        other => panic!("expected PUBACK, got {other:?}"),
    }
    // Bytes count too: one large message over the byte quota.
    let big = "z".repeat(1_200);
    c.send(publish("r/1", &big, QoS::AtLeastOnce, true, 23))
        .await;
    match c.recv().await {
        Some(Packet::PubAck(a)) => assert_eq!(a.reason_code, ReasonCode::QuotaExceeded),
        other => panic!("expected PUBACK 0x97, got {other:?}"),
    }
    // Another owner has a quota of its own.
    let (mut o, _) =
        Client::connect_with(addr, connect("b", "other", ProtocolVersion::V5, true)).await;
    o.send(publish("o/1", "v", QoS::AtLeastOnce, true, 1)).await;
    match o.recv().await {
        Some(Packet::PubAck(a)) => assert_eq!(a.reason_code, ReasonCode::Success),
        other => panic!("expected PUBACK, got {other:?}"),
    }
    // Sessions: a third is refused.
    let (_, ack) =
        Client::connect_with(addr, connect("c", "third", ProtocolVersion::V5, true)).await;
    assert_eq!(ack.reason_code, ReasonCode::QuotaExceeded);
    assert!(rules
        .denied()
        .iter()
        .any(|d| d.contains("Limit(\"sessions\")")));
    assert!(rules
        .denied()
        .iter()
        .any(|d| d.contains("Limit(\"retained_per_owner\")")));
}

#[tokio::test]
async fn tightened_rules_withdraw_live_subscriptions() {
    let rules = Arc::new(Rules::default());
    let (_b, addr) = start_with(BrokerConfig::default(), rules.clone(), None).await;
    let (mut c, _) =
        Client::connect_with(addr, connect("dash", "dana", ProtocolVersion::V5, true)).await;
    c.subscribe("recipes/#", QoS::AtMostOnce).await;
    c.subscribe("public/#", QoS::AtMostOnce).await;
    rules.forbid("recipes/");
    eventually("the subscription withdrawn", || {
        rules
            .denied()
            .contains(&"dana WithdrawnSubscription(\"recipes/#\")".to_owned())
    })
    .await;
    let mut sender = Client::connect(addr, "sender", ProtocolVersion::V5, None).await;
    sender
        .send(publish("recipes/secret", "r", QoS::AtMostOnce, false, 0))
        .await;
    sender
        .send(publish("public/news", "n", QoS::AtMostOnce, false, 0))
        .await;
    sender.drain().await;
    assert_eq!(payloads(&c.drain().await), ["n"]);
}

/// Rules that reserve `uns/` for the platform: a bridge may not bring messages there.
struct Reserving(Rules);

impl Auth for Reserving {
    fn connect(&self, info: &ConnectInfo<'_>) -> Result<Principal, ReasonCode> {
        self.0.connect(info)
    }
    fn may_publish(&self, who: &Principal, topic: &str) -> bool {
        self.0.may_publish(who, topic)
    }
    fn may_subscribe(&self, who: &Principal, filter: &str) -> bool {
        self.0.may_subscribe(who, filter)
    }
    fn denied(&self, who: Option<&Principal>, peer: SocketAddr, what: Denied<'_>) {
        Auth::denied(&self.0, who, peer, what);
    }
    fn is_cheap(&self) -> bool {
        true
    }
    fn may_inject(&self, _source: &str, topic: &str) -> bool {
        !topic.starts_with("uns/")
    }
}

#[tokio::test]
async fn bridged_messages_cannot_land_on_the_platforms_own_topics() {
    let rules = Arc::new(Reserving(Rules::default()));
    let broker = Broker::open(BrokerConfig::default(), rules.clone()).expect("broker");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let b = broker.clone();
    tokio::spawn(async move { b.serve(listener).await });
    let mut watcher = Client::connect(addr, "watcher", ProtocolVersion::V5, None).await;
    watcher.subscribe("#", QoS::AtMostOnce).await;
    let msg = |topic: &str, payload: &'static str| {
        ironplant_mqtt::codec::Publish::new(s(topic), bytes::Bytes::from_static(payload.as_bytes()))
    };
    assert!(!broker.publish_bridged("enterprise", msg("uns/acme/speed", "forged")));
    assert!(!broker.publish_bridged("enterprise", msg("$SYS/broker/uptime", "forged")));
    assert!(broker.publish_bridged("enterprise", msg("enterprise/orders", "ok")));
    assert_eq!(payloads(&watcher.drain().await), ["ok"]);
    assert!(rules
        .0
        .denied()
        .contains(&"bridge:enterprise Publish(\"uns/acme/speed\")".to_owned()));
}

/// An in-process subscriber that must know who asked (the command path) gets each message
/// with the identity the broker authenticated: the client id and owner of a client's
/// publish, the owner of a retained message replayed, nothing for the platform's own.
#[tokio::test]
async fn an_internal_subscriber_learns_who_published() {
    use ironplant_mqtt::Origin;
    let rules = Arc::new(Rules::default());
    let (broker, addr) = start_with(BrokerConfig::default(), rules, None).await;
    let (mut bob, ack) =
        Client::connect_with(addr, connect("bob-hmi", "bob", ProtocolVersion::V5, true)).await;
    assert_eq!(ack.reason_code, ReasonCode::Success);
    bob.send(publish("cmd/retained", "kept", QoS::AtLeastOnce, true, 1))
        .await;
    let acked = bob.drain().await;
    assert!(
        acked.iter().any(|p| matches!(p, Packet::PubAck(_))),
        "{acked:?}"
    );

    let mut rx = broker
        .subscribe_internal_with_origin("commands", "cmd/#", 16)
        .expect("subscribe");
    let (p, origin) = rx.recv().await.expect("the retained message first");
    assert_eq!(p.topic.as_str(), "cmd/retained");
    assert!(p.retain);
    assert_eq!(
        origin,
        Origin {
            client_id: None,
            owner: Some("bob".into()),
            peer: None,
        }
    );

    let (mut alice, _) = Client::connect_with(
        addr,
        connect("alice-laptop", "alice", ProtocolVersion::V311, true),
    )
    .await;
    alice
        .send(publish("cmd/line1/speed", "42", QoS::AtLeastOnce, false, 7))
        .await;
    let (p, origin) = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("within 5 s")
        .expect("open");
    assert_eq!(p.topic.as_str(), "cmd/line1/speed");
    assert_eq!(&p.payload[..], b"42");
    assert_eq!(p.qos, QoS::AtMostOnce, "in-process delivery");
    assert_eq!(
        (origin.client_id, origin.owner),
        (Some("alice-laptop".into()), Some("alice".into()))
    );
    let peer = origin.peer.expect("the publisher's address");
    assert!(peer.ip().is_loopback() && peer.port() != 0, "{peer}");

    broker.publish(ironplant_mqtt::codec::Publish::new(
        s("cmd/platform"),
        bytes::Bytes::from_static(b"x"),
    ));
    let (_, origin) = rx.recv().await.expect("open");
    assert_eq!(origin, Origin::default(), "the platform's own message");

    // Dropping the receiver ends the subscription: a message then goes nowhere (neither
    // delivered nor dropped for it).
    drop(rx);
    let st = broker.stats();
    eventually("the internal subscription is gone", || {
        let before = (
            st.messages_out.load(Ordering::Relaxed),
            st.dropped.load(Ordering::Relaxed),
        );
        broker.publish(ironplant_mqtt::codec::Publish::new(
            s("cmd/after"),
            bytes::Bytes::from_static(b"x"),
        ));
        before
            == (
                st.messages_out.load(Ordering::Relaxed),
                st.dropped.load(Ordering::Relaxed),
            )
    })
    .await;
}
