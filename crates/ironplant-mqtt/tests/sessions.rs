//! Sessions and the MQTT 5 delivery features, over real TCP with our codec as the client:
//! persistent sessions (queueing while away, re-sending what was in flight), exactly-once for
//! re-sent QoS 2, session expiry, state surviving a restart, topic aliases, receive maximum,
//! message expiry, will delay, `$SYS` and the authorisation hook.

mod raw_client;

use std::num::NonZeroU16;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ironplant_mqtt::auth::{Auth, ConnectInfo, Denied, Principal};
use ironplant_mqtt::codec::{
    Connect, Disconnect, Packet, ProtocolVersion, Publish, PublishResponse, QoS, ReasonCode, Will,
    WillProperties,
};
use ironplant_mqtt::{Broker, BrokerConfig};
use raw_client::{publish, s, start, Client};
use tokio::net::TcpListener;

fn connect(id: &str, version: ProtocolVersion, clean: bool, expiry: Option<u32>) -> Connect {
    let mut c = Connect::new(version, s(id), 30);
    c.clean_start = clean;
    c.properties.session_expiry_interval = expiry;
    c
}

fn pid(n: u16) -> NonZeroU16 {
    NonZeroU16::new(n).expect("non-zero packet id")
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

/// Polls `cond` every 10 ms until it holds or 5 s passed.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn persistent_session_queues_while_away_and_resends_what_was_in_flight() {
    for version in [ProtocolVersion::V311, ProtocolVersion::V5] {
        let (broker, addr) = start(BrokerConfig::default()).await;
        let expiry = (version == ProtocolVersion::V5).then_some(300);
        let (mut sub, ack) =
            Client::connect_with(addr, connect("sub", version, false, expiry)).await;
        assert!(!ack.session_present);
        sub.subscribe("q/#", QoS::AtLeastOnce).await;
        let mut publ = Client::connect(addr, "pub", version, None).await;
        publ.send(publish("q/1", "m1", QoS::AtLeastOnce, false, 1))
            .await;
        assert!(matches!(publ.recv().await, Some(Packet::PubAck(_))));
        let first = sub.next_publish().await;
        assert_eq!(&first.payload[..], b"m1");
        let first_pid = first.packet_id.expect("QoS 1 has a packet id");
        // The subscriber vanishes without acknowledging m1.
        drop(sub);
        eventually("the subscriber is gone", || {
            broker
                .stats()
                .connected
                .load(std::sync::atomic::Ordering::Relaxed)
                == 1
        })
        .await;
        for (i, body) in ["m2", "m3", "m4"].iter().enumerate() {
            let n = u16::try_from(i).expect("small") + 2;
            publ.send(publish("q/x", body, QoS::AtLeastOnce, false, n))
                .await;
            assert!(matches!(publ.recv().await, Some(Packet::PubAck(_))));
        }
        publ.send(publish("q/x", "qos0-lost", QoS::AtMostOnce, false, 0))
            .await;
        publ.drain().await;
        assert_eq!(broker.counts().queued, 3, "{version:?}");

        let (mut sub, ack) =
            Client::connect_with(addr, connect("sub", version, false, expiry)).await;
        assert!(ack.session_present, "{version:?}: the session was kept");
        let again = sub.next_publish().await;
        assert_eq!(&again.payload[..], b"m1");
        assert!(again.dup, "a re-sent message has DUP set");
        assert_eq!(again.packet_id, Some(first_pid), "and keeps its packet id");
        let mut got = vec![];
        for _ in 0..3 {
            let p = sub.next_publish().await;
            got.push(String::from_utf8_lossy(&p.payload).into_owned());
            sub.send(Packet::PubAck(PublishResponse::new(
                p.packet_id.expect("packet id"),
            )))
            .await;
        }
        assert_eq!(
            got,
            ["m2", "m3", "m4"],
            "{version:?}: in order, QoS 0 not kept"
        );
        sub.send(Packet::PubAck(PublishResponse::new(first_pid)))
            .await;
        assert!(sub.drain().await.is_empty());
        // The subscription survived too: live messages still arrive.
        publ.send(publish("q/live", "m5", QoS::AtMostOnce, false, 0))
            .await;
        assert_eq!(&sub.next_publish().await.payload[..], b"m5");
        sub.send(Packet::Disconnect(Disconnect::default())).await;
        drop(sub);

        // A clean start throws the session away.
        let (mut sub, ack) = Client::connect_with(addr, connect("sub", version, true, None)).await;
        assert!(!ack.session_present);
        publ.send(publish("q/x", "m6", QoS::AtLeastOnce, false, 9))
            .await;
        assert!(matches!(publ.recv().await, Some(Packet::PubAck(_))));
        assert!(sub.drain().await.is_empty(), "no subscription any more");
    }
}

#[tokio::test]
async fn a_resent_qos2_publish_is_delivered_exactly_once() {
    let (_broker, addr) = start(BrokerConfig::default()).await;
    let mut sub = Client::connect(addr, "sub", ProtocolVersion::V5, None).await;
    sub.subscribe("once/#", QoS::ExactlyOnce).await;
    let v = ProtocolVersion::V5;
    let (mut publ, _) = Client::connect_with(addr, connect("pub", v, false, Some(60))).await;
    publ.send(publish("once/a", "x", QoS::ExactlyOnce, false, 5))
        .await;
    assert!(matches!(publ.recv().await, Some(Packet::PubRec(r)) if r.packet_id == pid(5)));
    // The publisher loses its connection before PUBREL and sends the PUBLISH again.
    drop(publ);
    let (mut publ, ack) = Client::connect_with(addr, connect("pub", v, false, Some(60))).await;
    assert!(ack.session_present);
    let mut again = publish("once/a", "x", QoS::ExactlyOnce, false, 5);
    if let Packet::Publish(p) = &mut again {
        p.dup = true;
    }
    publ.send(again).await;
    assert!(matches!(publ.recv().await, Some(Packet::PubRec(r)) if r.packet_id == pid(5)));
    publ.send(Packet::PubRel(PublishResponse::new(pid(5))))
        .await;
    match publ.recv().await {
        Some(Packet::PubComp(c)) => assert_eq!(c.reason_code, ReasonCode::Success),
        other => panic!("expected PUBCOMP, got {other:?}"),
    }
    // A PUBREL nobody waits for is answered with "not found".
    publ.send(Packet::PubRel(PublishResponse::new(pid(5))))
        .await;
    match publ.recv().await {
        Some(Packet::PubComp(c)) => {
            assert_eq!(c.reason_code, ReasonCode::PacketIdentifierNotFound)
        }
        other => panic!("expected PUBCOMP, got {other:?}"),
    }
    // The subscriber got it once; completes the QoS 2 flow outwards.
    let p = sub.next_publish().await;
    assert_eq!(p.qos, QoS::ExactlyOnce);
    let spid = p.packet_id.expect("packet id");
    sub.send(Packet::PubRec(PublishResponse::new(spid))).await;
    assert!(matches!(sub.recv().await, Some(Packet::PubRel(r)) if r.packet_id == spid));
    sub.send(Packet::PubComp(PublishResponse::new(spid))).await;
    assert!(sub.drain().await.is_empty(), "delivered exactly once");
}

#[tokio::test]
async fn sessions_expire_and_the_cap_is_announced() {
    let cfg = BrokerConfig {
        max_session_expiry: 1,
        ..BrokerConfig::default()
    };
    let (broker, addr) = start(cfg).await;
    let (mut c, ack) = Client::connect_with(
        addr,
        connect("brief", ProtocolVersion::V5, false, Some(3600)),
    )
    .await;
    assert_eq!(
        ack.properties.session_expiry_interval,
        Some(1),
        "the broker says it grants only 1 s"
    );
    c.subscribe("a", QoS::AtLeastOnce).await;
    drop(c);
    eventually("the session expires", || broker.counts().sessions == 0).await;
    let (_c, ack) =
        Client::connect_with(addr, connect("brief", ProtocolVersion::V5, false, Some(1))).await;
    assert!(!ack.session_present);
    // MQTT 5: a DISCONNECT may not raise the expiry from 0.
    let (mut c, _) =
        Client::connect_with(addr, connect("zero", ProtocolVersion::V5, false, None)).await;
    let mut d = Disconnect::default();
    d.properties.session_expiry_interval = Some(10);
    c.send(Packet::Disconnect(d)).await;
    match c.recv().await {
        Some(Packet::Disconnect(d)) => assert_eq!(d.reason_code, ReasonCode::ProtocolError),
        other => panic!("expected DISCONNECT 0x82, got {other:?}"),
    }
}

async fn start_persistent(
    dir: &std::path::Path,
) -> (Broker, std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let cfg = BrokerConfig {
        state_dir: Some(dir.to_owned()),
        persist_interval: Duration::from_millis(50),
        ..BrokerConfig::default()
    };
    let broker =
        Broker::open(cfg, Arc::new(ironplant_mqtt::auth::AllowAll)).expect("open the state");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let b = broker.clone();
    let task = tokio::spawn(async move {
        let _ = b.serve(listener).await;
    });
    (broker, addr, task)
}

#[tokio::test]
async fn retained_messages_and_sessions_survive_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let v = ProtocolVersion::V311;
    let (broker, addr, task) = start_persistent(dir.path()).await;
    let (mut sub, _) = Client::connect_with(addr, connect("keeper", v, false, None)).await;
    sub.subscribe("plant/#", QoS::AtLeastOnce).await;
    sub.send(Packet::Disconnect(Disconnect::default())).await;
    drop(sub);
    let mut publ = Client::connect(addr, "pub", v, None).await;
    publ.send(publish(
        "plant/line1/speed",
        "412",
        QoS::AtLeastOnce,
        true,
        1,
    ))
    .await;
    assert!(matches!(publ.recv().await, Some(Packet::PubAck(_))));
    publ.send(publish(
        "plant/line1/alarm",
        "high",
        QoS::AtLeastOnce,
        false,
        2,
    ))
    .await;
    assert!(matches!(publ.recv().await, Some(Packet::PubAck(_))));
    publ.send(Packet::Disconnect(Disconnect::default())).await;
    drop(publ);
    eventually("both clients left", || {
        broker
            .stats()
            .connected
            .load(std::sync::atomic::Ordering::Relaxed)
            == 0
    })
    .await;
    task.abort();
    broker.close();
    drop(broker);

    let (broker, addr, _task) = start_persistent(dir.path()).await;
    let c = broker.counts();
    assert_eq!((c.retained, c.persistent_sessions, c.queued), (1, 1, 2));
    let (mut sub, ack) = Client::connect_with(addr, connect("keeper", v, false, None)).await;
    assert!(ack.session_present, "the session came back from disk");
    let got = payloads(&sub.drain().await);
    assert_eq!(got, ["412", "high"], "queued messages, in order");
    let mut late = Client::connect(addr, "late", v, None).await;
    late.subscribe("plant/+/speed", QoS::AtMostOnce).await;
    let p = late.next_publish().await;
    assert_eq!((&p.payload[..], p.retain), (&b"412"[..], true));
}

#[tokio::test]
async fn topic_aliases_both_ways() {
    let (_broker, addr) = start(BrokerConfig::default()).await;
    let v = ProtocolVersion::V5;
    let mut c = connect("aliased-sub", v, true, None);
    c.properties.topic_alias_maximum = Some(4);
    let (mut sub, _) = Client::connect_with(addr, c).await;
    sub.subscribe("al/#", QoS::AtMostOnce).await;
    let mut publ = Client::connect(addr, "aliaser", v, None).await;
    let with_alias = |topic: &str, body: &str, alias: u16| {
        let mut p = Publish::new(s(topic), Bytes::copy_from_slice(body.as_bytes()));
        p.properties.topic_alias = NonZeroU16::new(alias);
        Packet::Publish(p)
    };
    publ.send(with_alias("al/long/topic/name", "1", 1)).await;
    publ.send(with_alias("", "2", 1)).await;
    // Outbound: the first message sets the alias up, the second uses it.
    let a = sub.next_publish().await;
    let b = sub.next_publish().await;
    assert_eq!(a.topic.as_str(), "al/long/topic/name");
    let alias = a
        .properties
        .topic_alias
        .expect("the broker assigns an alias");
    assert_eq!(
        b.topic.as_str(),
        "",
        "the second one travels without its topic"
    );
    assert_eq!(b.properties.topic_alias, Some(alias));
    assert_eq!(&b.payload[..], b"2");
    // An alias over the maximum we announced, or an unknown one, ends the connection.
    publ.send(with_alias("al/x", "3", 65)).await;
    match publ.recv().await {
        Some(Packet::Disconnect(d)) => assert_eq!(d.reason_code, ReasonCode::TopicAliasInvalid),
        other => panic!("expected DISCONNECT 0x94, got {other:?}"),
    }
    let mut other = Client::connect(addr, "unknown-alias", v, None).await;
    other.send(with_alias("", "4", 3)).await;
    match other.recv().await {
        Some(Packet::Disconnect(d)) => assert_eq!(d.reason_code, ReasonCode::ProtocolError),
        other => panic!("expected DISCONNECT 0x82, got {other:?}"),
    }
}

#[tokio::test]
async fn receive_maximum_limits_what_is_in_flight() {
    let (_broker, addr) = start(BrokerConfig::default()).await;
    let v = ProtocolVersion::V5;
    let mut c = connect("slow", v, true, None);
    c.properties.receive_maximum = NonZeroU16::new(2);
    let (mut sub, _) = Client::connect_with(addr, c).await;
    sub.subscribe("fc/#", QoS::AtLeastOnce).await;
    let mut publ = Client::connect(addr, "fast", v, None).await;
    for i in 1..=5u16 {
        publ.send(publish(
            "fc/t",
            &format!("m{i}"),
            QoS::AtLeastOnce,
            false,
            i,
        ))
        .await;
    }
    publ.drain().await;
    let first = sub.drain().await;
    assert_eq!(
        payloads(&first),
        ["m1", "m2"],
        "only two unacknowledged at a time"
    );
    let mut seen = payloads(&first);
    let mut unacked: Vec<NonZeroU16> = first
        .iter()
        .filter_map(|p| match p {
            Packet::Publish(p) => p.packet_id,
            _ => None,
        })
        .collect();
    while seen.len() < 5 {
        let next = unacked.remove(0);
        sub.send(Packet::PubAck(PublishResponse::new(next))).await;
        let p = sub.next_publish().await;
        seen.push(String::from_utf8_lossy(&p.payload).into_owned());
        unacked.push(p.packet_id.expect("packet id"));
    }
    assert_eq!(seen, ["m1", "m2", "m3", "m4", "m5"]);
}

#[tokio::test]
async fn expired_messages_are_not_delivered_and_the_rest_count_down() {
    let (_broker, addr) = start(BrokerConfig::default()).await;
    let v = ProtocolVersion::V5;
    let (mut sub, _) = Client::connect_with(addr, connect("away", v, false, Some(60))).await;
    sub.subscribe("exp/#", QoS::AtLeastOnce).await;
    drop(sub);
    let mut publ = Client::connect(addr, "pub", v, None).await;
    let with_expiry = |body: &str, secs: u32, pid: u16| {
        let mut p = Publish::new(s("exp/t"), Bytes::copy_from_slice(body.as_bytes()));
        p.qos = QoS::AtLeastOnce;
        p.packet_id = NonZeroU16::new(pid);
        p.properties.message_expiry_interval = Some(secs);
        Packet::Publish(p)
    };
    publ.send(with_expiry("short", 1, 1)).await;
    publ.send(with_expiry("long", 100, 2)).await;
    publ.drain().await;
    // Message expiry counts in whole seconds: let more than one pass.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (mut sub, ack) = Client::connect_with(addr, connect("away", v, false, Some(60))).await;
    assert!(ack.session_present);
    let got = sub.drain().await;
    assert_eq!(payloads(&got), ["long"]);
    match &got[0] {
        Packet::Publish(p) => {
            let left = p
                .properties
                .message_expiry_interval
                .expect("still has an expiry");
            assert!((97..=99).contains(&left), "counted down to {left}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_delayed_will_waits_and_is_cancelled_by_a_quick_return() {
    let (_broker, addr) = start(BrokerConfig::default()).await;
    let v = ProtocolVersion::V5;
    let mut watcher = Client::connect(addr, "watcher", v, None).await;
    watcher.subscribe("wills/#", QoS::AtMostOnce).await;
    let will = |who: &str, delay: u32| Will {
        topic: s(&format!("wills/{who}")),
        payload: Bytes::from_static(b"gone"),
        qos: QoS::AtMostOnce,
        retain: false,
        properties: WillProperties {
            will_delay_interval: Some(delay),
            ..WillProperties::default()
        },
    };
    // Comes back within its will delay: no will.
    let mut c = connect("flaky", v, false, Some(60));
    c.will = Some(will("flaky", 5));
    let (flaky, _) = Client::connect_with(addr, c.clone()).await;
    drop(flaky);
    let (_flaky, ack) = Client::connect_with(addr, c).await;
    assert!(ack.session_present);
    // Stays away: the will goes out after its delay, not before.
    let mut c = connect("dead", v, false, Some(60));
    c.will = Some(will("dead", 1));
    let (dead, _) = Client::connect_with(addr, c).await;
    let lost = Instant::now();
    drop(dead);
    let p = watcher.next_publish().await;
    assert_eq!(p.topic.as_str(), "wills/dead");
    assert!(
        lost.elapsed() >= Duration::from_millis(900),
        "the will waited for its delay ({:?})",
        lost.elapsed()
    );
    assert!(
        watcher.drain().await.is_empty(),
        "no will from the client that came back"
    );
}

#[tokio::test]
async fn sys_topics_report_the_broker() {
    let cfg = BrokerConfig {
        sys_interval: Some(Duration::from_millis(50)),
        ..BrokerConfig::default()
    };
    let (_broker, addr) = start(cfg).await;
    let mut c = Client::connect(addr, "ops", ProtocolVersion::V311, None).await;
    c.subscribe("$SYS/broker/clients/connected", QoS::AtMostOnce)
        .await;
    let p = c.next_publish().await;
    assert_eq!(p.topic.as_str(), "$SYS/broker/clients/connected");
    let n: u64 = String::from_utf8_lossy(&p.payload)
        .parse()
        .expect("a number");
    assert_eq!(n, 1);
    // `#` does not match `$SYS` topics (MQTT 4.7.2).
    let mut all = Client::connect(addr, "all", ProtocolVersion::V311, None).await;
    all.subscribe("#", QoS::AtMostOnce).await;
    let next = tokio::time::timeout(Duration::from_millis(300), all.recv()).await;
    assert!(next.is_err(), "nothing for '#': {next:?}");
}

/// Denies user "intruder", publishing under `secret/` and subscribing to `secret/#`; records
/// every denial.
#[derive(Default)]
struct Strict {
    denied: Mutex<Vec<String>>,
}

impl Auth for Strict {
    fn connect(&self, info: &ConnectInfo<'_>) -> Result<Principal, ReasonCode> {
        if info.username == Some("intruder") {
            return Err(ReasonCode::BadUserNameOrPassword);
        }
        Ok(Principal {
            client_id: info.client_id.into(),
            user: info.username.map(Into::into),
            roles: Vec::new(),
            owner: info.username.map(Into::into),
        })
    }
    fn may_publish(&self, _who: &Principal, topic: &str) -> bool {
        !topic.starts_with("secret/")
    }
    fn may_subscribe(&self, _who: &Principal, filter: &str) -> bool {
        !filter.starts_with("secret")
    }
    fn denied(&self, _who: Option<&Principal>, _peer: std::net::SocketAddr, what: Denied<'_>) {
        if let Ok(mut d) = self.denied.lock() {
            d.push(format!("{what:?}"));
        }
    }
}

#[tokio::test]
async fn the_auth_hook_refuses_with_the_right_reason_codes() {
    let auth = Arc::new(Strict::default());
    let broker = Broker::open(BrokerConfig::default(), auth.clone()).expect("in-memory broker");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let b = broker.clone();
    tokio::spawn(async move { b.serve(listener).await });
    for (version, code) in [
        (ProtocolVersion::V5, ReasonCode::BadUserNameOrPassword),
        (ProtocolVersion::V311, ReasonCode::BadUserNameOrPassword),
    ] {
        let mut c = connect("x", version, true, None);
        c.username = Some(s("intruder"));
        let (_c, ack) = Client::connect_with(addr, c).await;
        assert_eq!(ack.reason_code, code, "{version:?}");
    }
    let mut c = Client::connect(addr, "dev", ProtocolVersion::V5, None).await;
    c.send(publish("secret/x", "1", QoS::AtLeastOnce, false, 1))
        .await;
    match c.recv().await {
        Some(Packet::PubAck(a)) => assert_eq!(a.reason_code, ReasonCode::NotAuthorized),
        other => panic!("expected PUBACK 0x87, got {other:?}"),
    }
    let sub = ironplant_mqtt::codec::Subscribe {
        packet_id: pid(3),
        properties: Default::default(),
        subscriptions: vec![
            ironplant_mqtt::codec::Subscription {
                filter: s("secret/#"),
                options: ironplant_mqtt::codec::SubscriptionOptions::qos(QoS::AtMostOnce),
            },
            ironplant_mqtt::codec::Subscription {
                filter: s("open/#"),
                options: ironplant_mqtt::codec::SubscriptionOptions::qos(QoS::AtLeastOnce),
            },
        ],
    };
    c.send(Packet::Subscribe(sub)).await;
    match c.recv().await {
        Some(Packet::SubAck(a)) => assert_eq!(
            a.reason_codes,
            [ReasonCode::NotAuthorized, ReasonCode::GrantedQos1]
        ),
        other => panic!("expected SUBACK, got {other:?}"),
    }
    let denied = auth.denied.lock().map(|d| d.clone()).unwrap_or_default();
    assert_eq!(denied.len(), 4, "{denied:?}");
    assert!(denied.iter().any(|d| d.contains("secret/x")));
    assert_eq!(
        broker
            .stats()
            .denied
            .load(std::sync::atomic::Ordering::Relaxed),
        4
    );
}

#[tokio::test]
async fn takeover_moves_the_session_to_the_new_connection() {
    let (_broker, addr) = start(BrokerConfig::default()).await;
    let v = ProtocolVersion::V5;
    let (mut old, _) = Client::connect_with(addr, connect("twin", v, false, Some(60))).await;
    old.subscribe("tw/#", QoS::AtLeastOnce).await;
    let (mut new, ack) = Client::connect_with(addr, connect("twin", v, false, Some(60))).await;
    assert!(ack.session_present);
    match old.recv().await {
        Some(Packet::Disconnect(d)) => assert_eq!(d.reason_code, ReasonCode::SessionTakenOver),
        other => panic!("expected DISCONNECT 0x8E, got {other:?}"),
    }
    let mut publ = Client::connect(addr, "pub", v, None).await;
    publ.send(publish("tw/a", "hello", QoS::AtLeastOnce, false, 1))
        .await;
    assert_eq!(&new.next_publish().await.payload[..], b"hello");
}

#[tokio::test]
async fn a_slow_consumer_is_disconnected_and_catches_up_without_loss() {
    let cfg = BrokerConfig {
        max_queue: 8,
        max_session_queue: 1_000,
        overflow: ironplant_mqtt::Overflow::Disconnect,
        ..BrokerConfig::default()
    };
    let (broker, addr) = start(cfg).await;
    let v = ProtocolVersion::V5;
    let (mut sub, _) = Client::connect_with(addr, connect("slow", v, false, Some(60))).await;
    sub.subscribe("big/#", QoS::AtLeastOnce).await;
    // The subscriber stops reading; 300 messages of 32 KB fill its socket and its queue.
    const N: usize = 300;
    let body = "x".repeat(32 * 1024);
    let mut publ = Client::connect(addr, "firehose", v, None).await;
    for i in 0..N {
        let n = u16::try_from(i % 60_000 + 1).expect("small");
        publ.send(publish(
            "big/t",
            &format!("{i:04}{body}"),
            QoS::AtLeastOnce,
            false,
            n,
        ))
        .await;
    }
    eventually("the slow consumer is disconnected", || {
        broker
            .stats()
            .slow_disconnects
            .load(std::sync::atomic::Ordering::Relaxed)
            == 1
    })
    .await;
    // What reached the old connection, then everything else after reconnecting.
    let mut seen: Vec<usize> = Vec::new();
    let id = |p: &Publish| -> usize {
        std::str::from_utf8(&p.payload[..4])
            .ok()
            .and_then(|s| s.parse().ok())
            .expect("numbered payload")
    };
    while let Some(p) = sub.recv().await {
        match p {
            Packet::Publish(p) => seen.push(id(&p)),
            Packet::Disconnect(d) => assert_eq!(d.reason_code, ReasonCode::QuotaExceeded),
            other => panic!("unexpected {other:?}"),
        }
    }
    publ.drain().await;
    let (mut sub, ack) = Client::connect_with(addr, connect("slow", v, false, Some(60))).await;
    assert!(ack.session_present);
    while seen.iter().filter(|i| **i == N - 1).count() == 0 {
        let p = match tokio::time::timeout(Duration::from_secs(3), sub.next_publish()).await {
            Ok(p) => p,
            Err(_) => panic!(
                "stuck after {:?}; dropped {}",
                &seen,
                broker
                    .stats()
                    .dropped
                    .load(std::sync::atomic::Ordering::Relaxed)
            ),
        };
        seen.push(id(&p));
        sub.send(Packet::PubAck(PublishResponse::new(
            p.packet_id.expect("packet id"),
        )))
        .await;
    }
    // Every message, in order; re-sent ones (in flight when the connection ended) may repeat.
    let mut firsts = Vec::new();
    for i in &seen {
        if !firsts.contains(i) {
            firsts.push(*i);
        }
    }
    assert_eq!(
        firsts,
        (0..N).collect::<Vec<_>>(),
        "nothing lost or reordered"
    );
    assert_eq!(
        broker
            .stats()
            .dropped
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}
