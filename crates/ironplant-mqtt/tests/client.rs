//! The MQTT client against our broker, against Debian's Mosquitto (a third-party broker), and
//! against a scripted server for what a real broker does not let us provoke (a lost PUBACK,
//! keep-alive).

mod support;

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use ironplant_mqtt::client::{Client, ClientOptions, Event};
use ironplant_mqtt::codec::{
    self, Connack, Packet, ProtocolVersion, PublishResponse, QoS, ReasonCode, Will,
};
use support::{mosquitto_available, next_event, our_broker, wait_event, Mosquitto};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn opts(id: &str, version: ProtocolVersion) -> ClientOptions {
    let mut o = ClientOptions::new(id);
    o.version = version;
    o.reconnect_min = Duration::from_millis(20);
    o.reconnect_max = Duration::from_millis(200);
    o
}

async fn connected(events: &mut tokio::sync::mpsc::Receiver<Event>) -> bool {
    wait_event(events, 10, "Connected", |e| match e {
        Event::Connected { session_present } => Some(*session_present),
        _ => None,
    })
    .await
}

async fn next_publish(events: &mut tokio::sync::mpsc::Receiver<Event>) -> codec::Publish {
    wait_event(events, 10, "a PUBLISH", |e| match e {
        Event::Publish(p) => Some(p.clone()),
        _ => None,
    })
    .await
}

/// Publishes at QoS 0, 1 and 2 to a QoS 2 subscription and checks what arrives.
async fn qos_round_trip(addr: &str, version: ProtocolVersion) {
    let (sub, mut sub_events) = Client::connect(addr, opts("rt-sub", version));
    connected(&mut sub_events).await;
    let codes = sub
        .subscribe(&[("rt/#", QoS::ExactlyOnce)])
        .await
        .expect("subscribe");
    assert_eq!(codes, vec![ReasonCode::GrantedQos2]);
    let (publ, mut pub_events) = Client::connect(addr, opts("rt-pub", version));
    connected(&mut pub_events).await;
    for (i, qos) in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
        .into_iter()
        .enumerate()
    {
        publ.publish(&format!("rt/{i}"), format!("payload {i}"), qos, false)
            .await
            .expect("publish completes");
        let p = next_publish(&mut sub_events).await;
        assert_eq!(p.topic, format!("rt/{i}").as_str());
        assert_eq!(p.payload, Bytes::from(format!("payload {i}")));
        assert_eq!(p.qos, qos, "delivered at the publication's QoS");
    }
    // Retained: a late subscriber gets it.
    publ.publish("rt/retained", "kept", QoS::AtLeastOnce, true)
        .await
        .expect("retained");
    let (late, mut late_events) = Client::connect(addr, opts("rt-late", version));
    connected(&mut late_events).await;
    late.subscribe(&[("rt/retained", QoS::AtLeastOnce)])
        .await
        .expect("subscribe");
    let p = next_publish(&mut late_events).await;
    assert!(p.retain);
    assert_eq!(p.payload, Bytes::from_static(b"kept"));
    late.unsubscribe(&["rt/retained"])
        .await
        .expect("unsubscribe");
    publ.publish("rt/retained", "", QoS::AtLeastOnce, true)
        .await
        .expect("clear retained");
    sub.disconnect().await;
    publ.disconnect().await;
    late.disconnect().await;
    assert!(
        publ.publish("rt/x", "late", QoS::AtMostOnce, false)
            .await
            .is_err(),
        "closed"
    );
}

#[tokio::test]
async fn qos_round_trip_with_our_broker() {
    let (_broker, addr) = our_broker().await;
    qos_round_trip(&addr.to_string(), ProtocolVersion::V311).await;
    qos_round_trip(&addr.to_string(), ProtocolVersion::V5).await;
}

#[tokio::test]
async fn qos_round_trip_with_mosquitto() {
    if !mosquitto_available() {
        return;
    }
    let m = Mosquitto::start();
    qos_round_trip(&m.addr(), ProtocolVersion::V311).await;
    qos_round_trip(&m.addr(), ProtocolVersion::V5).await;
}

/// Mosquitto stops and comes back: the client reconnects by itself, renews its subscription
/// (the broker lost it: clean session) and messages flow again.
#[tokio::test]
async fn reconnects_and_resubscribes_after_a_broker_restart() {
    if !mosquitto_available() {
        return;
    }
    let mut m = Mosquitto::start();
    let addr = m.addr();
    for version in [ProtocolVersion::V311, ProtocolVersion::V5] {
        let (sub, mut sub_events) = Client::connect(&addr, opts("rc-sub", version));
        assert!(!connected(&mut sub_events).await);
        sub.subscribe(&[("rc/+", QoS::AtLeastOnce)])
            .await
            .expect("subscribe");
        m.stop();
        wait_event(&mut sub_events, 10, "Disconnected", |e| {
            matches!(e, Event::Disconnected { .. }).then_some(())
        })
        .await;
        m.restart();
        assert!(
            !connected(&mut sub_events).await,
            "clean session: nothing resumed"
        );
        let (publ, mut pub_events) = Client::connect(&addr, opts("rc-pub", version));
        connected(&mut pub_events).await;
        // The renewed SUBSCRIBE went out right after CONNACK, so it is in place by now
        // unless its SUBACK is still on the way: publish until one arrives.
        let got = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                publ.publish("rc/a", "again", QoS::AtLeastOnce, false)
                    .await
                    .expect("publish");
                if let Ok(Some(Event::Publish(p))) =
                    tokio::time::timeout(Duration::from_millis(200), sub_events.recv()).await
                {
                    return p;
                }
            }
        })
        .await
        .expect("a message after the restart");
        assert_eq!(got.topic, "rc/a");
        sub.disconnect().await;
        publ.disconnect().await;
    }
}

/// A client whose connection dies without DISCONNECT gets its Will published (what Sparkplug's
/// NDEATH relies on); a clean disconnect does not.
#[tokio::test]
async fn will_is_published_when_the_connection_dies() {
    if !mosquitto_available() {
        return;
    }
    let m = Mosquitto::start();
    let addr = m.addr();
    for version in [ProtocolVersion::V311, ProtocolVersion::V5] {
        let (watch, mut events) = Client::connect(&addr, opts("will-watch", version));
        connected(&mut events).await;
        watch
            .subscribe(&[("will/#", QoS::AtLeastOnce)])
            .await
            .expect("subscribe");

        let mut o = opts("will-clean", version);
        o.will = Some(will("will/clean"));
        let (clean, mut clean_events) = Client::connect(&addr, o);
        connected(&mut clean_events).await;
        clean.disconnect().await;

        // A runtime of its own, dropped with the connection open: the socket closes without
        // DISCONNECT, as when the process dies.
        let addr2 = addr.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let mut o = opts("will-dies", version);
                o.will = Some(will("will/died"));
                let (_c, mut ev) = Client::connect(&addr2, o);
                connected(&mut ev).await;
            });
            drop(rt);
        })
        .join()
        .expect("the dying client's thread");

        let p = next_publish(&mut events).await;
        assert_eq!(
            p.topic, "will/died",
            "only the Will of the connection that died"
        );
        assert_eq!(p.payload, Bytes::from_static(b"offline"));
        watch.disconnect().await;
    }
}

fn will(topic: &str) -> Will {
    Will {
        topic: topic.try_into().expect("topic"),
        payload: Bytes::from_static(b"offline"),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: Default::default(),
    }
}

/// Reads one packet from a scripted server's socket.
async fn read(stream: &mut TcpStream, buf: &mut BytesMut, version: ProtocolVersion) -> Packet {
    loop {
        if let Some(h) = codec::decode_header(buf, version, 1 << 20).expect("header") {
            if buf.len() >= h.packet_len() {
                let frame = buf.split_to(h.packet_len()).freeze();
                if h.packet_type == codec::PacketType::Connect {
                    let (c, _) = codec::decode_connect(&frame, 1 << 20)
                        .expect("connect")
                        .expect("whole");
                    return Packet::Connect(Box::new(c));
                }
                let (p, _) = codec::decode_bytes(&frame, version, 1 << 20)
                    .expect("decode")
                    .expect("whole");
                return p;
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read_buf(buf))
            .await
            .expect("a packet in time")
            .expect("read");
        assert!(n > 0, "the client closed the connection");
    }
}

async fn write(stream: &mut TcpStream, p: Packet, version: ProtocolVersion) {
    let mut out = Vec::new();
    codec::encode(&p, version, &mut out).expect("encode");
    stream.write_all(&out).await.expect("write");
}

async fn accept_connect(
    listener: &TcpListener,
    version: ProtocolVersion,
) -> (TcpStream, BytesMut, codec::Connect) {
    let (mut s, _) = tokio::time::timeout(Duration::from_secs(10), listener.accept())
        .await
        .expect("a connection in time")
        .expect("accept");
    let mut buf = BytesMut::new();
    let Packet::Connect(c) = read(&mut s, &mut buf, version).await else {
        panic!("expected CONNECT first");
    };
    write(
        &mut s,
        Packet::Connack(Connack {
            session_present: false,
            reason_code: ReasonCode::Success,
            properties: Default::default(),
        }),
        version,
    )
    .await;
    (s, buf, *c)
}

/// A QoS 1 message whose PUBACK is lost with the connection is sent again, with DUP, the same
/// packet identifier and payload, before anything queued after it; its Delivery resolves only
/// when the PUBACK finally arrives.
#[tokio::test]
async fn in_flight_qos1_is_resent_with_dup_after_reconnect() {
    let version = ProtocolVersion::V5;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let mut o = opts("dup", version);
    o.username = Some("user".into());
    o.password = Some(Bytes::from_static(b"secret"));
    o.clean_start = false;
    o.session_expiry = 3600;
    let (client, mut events) = Client::connect(&addr, o);

    let (mut s, mut buf, c) = accept_connect(&listener, version).await;
    assert_eq!(c.username.as_deref(), Some("user"));
    assert_eq!(c.password, Some(Bytes::from_static(b"secret")));
    assert!(!c.clean_start);
    assert_eq!(c.properties.session_expiry_interval, Some(3600));
    connected(&mut events).await;

    let first = client
        .start_publish(codec::Publish {
            qos: QoS::AtLeastOnce,
            ..codec::Publish::new("a/b".try_into().expect("topic"), Bytes::from_static(b"one"))
        })
        .await
        .expect("queued");
    let Packet::Publish(p1) = read(&mut s, &mut buf, version).await else {
        panic!("expected PUBLISH");
    };
    assert!(!p1.dup);
    drop(s); // the PUBACK never comes
    wait_event(&mut events, 10, "Disconnected", |e| {
        matches!(e, Event::Disconnected { .. }).then_some(())
    })
    .await;
    let second = client
        .start_publish(codec::Publish {
            qos: QoS::AtLeastOnce,
            ..codec::Publish::new("a/b".try_into().expect("topic"), Bytes::from_static(b"two"))
        })
        .await
        .expect("queued");

    let (mut s, mut buf, _) = accept_connect(&listener, version).await;
    let Packet::Publish(again) = read(&mut s, &mut buf, version).await else {
        panic!("expected the re-sent PUBLISH");
    };
    assert!(again.dup, "re-sent with DUP");
    assert_eq!(
        (again.packet_id, &again.payload),
        (p1.packet_id, &p1.payload)
    );
    let Packet::Publish(next) = read(&mut s, &mut buf, version).await else {
        panic!("expected the second PUBLISH");
    };
    assert!(!next.dup);
    assert_eq!(next.payload, Bytes::from_static(b"two"));
    let mut first = Box::pin(first);
    assert!(
        tokio::time::timeout(Duration::from_millis(100), &mut first)
            .await
            .is_err(),
        "not acknowledged before the PUBACK"
    );
    let id1 = again.packet_id.expect("QoS 1 has an id");
    let id2 = next.packet_id.expect("QoS 1 has an id");
    write(&mut s, Packet::PubAck(PublishResponse::new(id1)), version).await;
    let mut refused = PublishResponse::new(id2);
    refused.reason_code = ReasonCode::NotAuthorized;
    write(&mut s, Packet::PubAck(refused), version).await;
    first.await.expect("acknowledged");
    assert_eq!(
        second.await,
        Err(ironplant_mqtt::client::ClientError::Refused(
            ReasonCode::NotAuthorized
        ))
    );
}

/// An idle client pings within its keep-alive, and gives the connection up (and reconnects)
/// when no PINGRESP comes back.
#[tokio::test]
async fn keep_alive_pings_and_detects_a_dead_server() {
    let version = ProtocolVersion::V311;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let mut o = opts("ka", version);
    o.keep_alive = Duration::from_secs(1);
    let (_client, mut events) = Client::connect(&addr, o);
    let (mut s, mut buf, c) = accept_connect(&listener, version).await;
    assert_eq!(c.keep_alive, 1);
    connected(&mut events).await;
    assert_eq!(read(&mut s, &mut buf, version).await, Packet::PingReq);
    write(&mut s, Packet::PingResp, version).await;
    assert_eq!(read(&mut s, &mut buf, version).await, Packet::PingReq);
    // No answer this time: the client must drop the connection and come back.
    let e = next_event(&mut events, 5).await;
    assert!(
        matches!(&e, Event::Disconnected { error } if error.contains("PINGRESP")),
        "{e:?}"
    );
    let (_s, _buf, _) = accept_connect(&listener, version).await;
    connected(&mut events).await;
}

/// A server that refuses the connection is retried with growing delays, and the refusal is
/// reported.
#[tokio::test]
async fn refused_connection_is_reported_and_retried() {
    let version = ProtocolVersion::V5;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let (_client, mut events) = Client::connect(&addr, opts("refused", version));
    for _ in 0..3 {
        let (mut s, _) = listener.accept().await.expect("accept");
        let mut buf = BytesMut::new();
        let _ = read(&mut s, &mut buf, version).await;
        write(
            &mut s,
            Packet::Connack(Connack {
                session_present: false,
                reason_code: ReasonCode::BadUserNameOrPassword,
                properties: Default::default(),
            }),
            version,
        )
        .await;
        let e = next_event(&mut events, 5).await;
        assert!(
            matches!(&e, Event::Disconnected { error } if error.contains("BadUserNameOrPassword")),
            "{e:?}"
        );
    }
}
