//! The broker over real TCP with a minimal client built on our codec. (Interop with paho-mqtt
//! and the Mosquitto clients comes with the rest of issue 5.)

use std::time::Duration;

use bytes::Bytes;
use ironplant_mqtt::codec::{self, Packet, ProtocolVersion, QoS, ReasonCode, Will, WillProperties};
use ironplant_mqtt::BrokerConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod raw_client;
use raw_client::{publish, s, start, Client};

#[tokio::test]
async fn routes_by_wildcard_with_qos_downgrade_and_acks() {
    for version in [ProtocolVersion::V311, ProtocolVersion::V5] {
        let (broker, addr) = start(BrokerConfig::default()).await;
        let mut sub = Client::connect(addr, "sub", version, None).await;
        sub.subscribe("plant/+/temp", QoS::AtLeastOnce).await;
        let mut sub0 = Client::connect(addr, "sub0", version, None).await;
        sub0.subscribe("plant/#", QoS::AtMostOnce).await;
        let mut publ = Client::connect(addr, "pub", version, None).await;
        publ.send(publish("plant/a/temp", "21.5", QoS::AtLeastOnce, false, 7))
            .await;
        match publ.recv().await {
            Some(Packet::PubAck(a)) => assert_eq!(a.packet_id.get(), 7),
            other => panic!("expected PUBACK, got {other:?}"),
        }
        match sub.recv().await {
            Some(Packet::Publish(p)) => {
                assert_eq!(
                    (p.topic.as_str(), &p.payload[..], p.qos),
                    ("plant/a/temp", &b"21.5"[..], QoS::AtLeastOnce)
                );
                assert!(p.packet_id.is_some());
            }
            other => panic!("expected PUBLISH, got {other:?}"),
        }
        match sub0.recv().await {
            Some(Packet::Publish(p)) => assert_eq!(
                (p.qos, p.packet_id),
                (QoS::AtMostOnce, None),
                "downgraded to the subscription's QoS"
            ),
            other => panic!("expected PUBLISH, got {other:?}"),
        }
        // Not matching: nothing arrives, and the next message does.
        publ.send(publish("other/a/temp", "x", QoS::AtMostOnce, false, 0))
            .await;
        publ.send(publish("plant/b/temp", "22", QoS::AtMostOnce, false, 0))
            .await;
        match sub.recv().await {
            Some(Packet::Publish(p)) => assert_eq!(p.topic.as_str(), "plant/b/temp"),
            other => panic!("expected PUBLISH, got {other:?}"),
        }
        assert!(
            broker
                .stats()
                .messages_in
                .load(std::sync::atomic::Ordering::Relaxed)
                >= 3
        );
    }
}

#[tokio::test]
async fn retained_messages_reach_later_subscribers_and_clear() {
    let (_broker, addr) = start(BrokerConfig::default()).await;
    let mut publ = Client::connect(addr, "pub", ProtocolVersion::V5, None).await;
    publ.send(publish("uns/line1/speed", "400", QoS::AtMostOnce, true, 0))
        .await;
    publ.send(publish(
        "uns/line1/state",
        "running",
        QoS::AtMostOnce,
        true,
        0,
    ))
    .await;
    publ.send(publish("uns/line1/state", "", QoS::AtMostOnce, true, 0))
        .await; // clears it
    publ.send(Packet::PingReq).await;
    assert_eq!(
        publ.recv().await,
        Some(Packet::PingResp),
        "the publishes before it were handled"
    );
    let mut sub = Client::connect(addr, "late", ProtocolVersion::V5, None).await;
    sub.subscribe("uns/#", QoS::AtMostOnce).await;
    match sub.recv().await {
        Some(Packet::Publish(p)) => assert_eq!(
            (p.topic.as_str(), &p.payload[..], p.retain),
            ("uns/line1/speed", &b"400"[..], true)
        ),
        other => panic!("expected the retained PUBLISH, got {other:?}"),
    }
    sub.send(Packet::PingReq).await;
    assert_eq!(
        sub.recv().await,
        Some(Packet::PingResp),
        "the cleared message is not sent"
    );
}

#[tokio::test]
async fn a_lost_connection_publishes_the_will_a_clean_one_does_not() {
    let (_broker, addr) = start(BrokerConfig::default()).await;
    let mut sub = Client::connect(addr, "watcher", ProtocolVersion::V311, None).await;
    sub.subscribe("devices/+/status", QoS::AtMostOnce).await;
    let will = |who: &str| Will {
        topic: s(&format!("devices/{who}/status")),
        payload: Bytes::from_static(b"offline"),
        qos: QoS::AtMostOnce,
        retain: false,
        properties: WillProperties::default(),
    };
    let polite = Client::connect(addr, "polite", ProtocolVersion::V311, Some(will("polite"))).await;
    let mut polite = polite;
    polite.send(Packet::Disconnect(Default::default())).await;
    let crashed = Client::connect(
        addr,
        "crashed",
        ProtocolVersion::V311,
        Some(will("crashed")),
    )
    .await;
    drop(crashed);
    match sub.recv().await {
        Some(Packet::Publish(p)) => assert_eq!(
            (p.topic.as_str(), &p.payload[..]),
            ("devices/crashed/status", &b"offline"[..])
        ),
        other => panic!("expected the will, got {other:?}"),
    }
}

#[tokio::test]
async fn bad_clients_are_disconnected_with_the_right_reason() {
    let cfg = BrokerConfig {
        connect_timeout: Duration::from_millis(300),
        ..BrokerConfig::default()
    };
    let (_broker, addr) = start(cfg).await;
    // Slow loris: connects and says nothing.
    let mut idle = TcpStream::connect(addr).await.expect("connect");
    let mut b = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut b))
        .await
        .expect("closed in time")
        .expect("read");
    assert_eq!(n, 0, "closed without a word");
    // An unsupported protocol level: CONNACK 0x01 (3.1.1 form), then close.
    let mut old = TcpStream::connect(addr).await.expect("connect");
    old.write_all(&[0x10, 0x0C, 0, 4, b'M', b'Q', b'T', b'T', 6, 2, 0, 30, 0, 0])
        .await
        .expect("write");
    let mut b = [0u8; 4];
    old.read_exact(&mut b).await.expect("connack");
    assert_eq!(b, [0x20, 0x02, 0x00, 0x01]);
    // A malformed packet after CONNECT (QoS 3 PUBLISH): DISCONNECT 0x81 for a 5.0 client.
    let mut c = Client::connect(addr, "broken", ProtocolVersion::V5, None).await;
    c.stream
        .write_all(&[0x36, 0x05, 0x00, 0x01, b'a', 0x00, 0x01])
        .await
        .expect("write");
    match c.recv().await {
        Some(Packet::Disconnect(d)) => assert_eq!(d.reason_code, ReasonCode::MalformedPacket),
        other => panic!("expected DISCONNECT, got {other:?}"),
    }
    assert_eq!(c.recv().await, None, "then the connection is closed");
    // Others are unaffected.
    let mut ok = Client::connect(addr, "fine", ProtocolVersion::V5, None).await;
    ok.send(Packet::PingReq).await;
    assert_eq!(ok.recv().await, Some(Packet::PingResp));
}

#[tokio::test]
async fn many_pipelined_publishes_all_arrive_in_order() {
    let (broker, addr) = start(BrokerConfig::default()).await;
    let mut sub = Client::connect(addr, "sink", ProtocolVersion::V5, None).await;
    sub.subscribe("load/#", QoS::AtMostOnce).await;
    let mut publ = Client::connect(addr, "source", ProtocolVersion::V5, None).await;
    let mut bytes = Vec::new();
    for i in 0..2000 {
        codec::encode(
            &publish(
                &format!("load/{}", i % 7),
                &i.to_string(),
                QoS::AtMostOnce,
                false,
                0,
            ),
            ProtocolVersion::V5,
            &mut bytes,
        )
        .expect("encode");
    }
    publ.stream.write_all(&bytes).await.expect("one big write");
    for i in 0..2000 {
        match sub.recv().await {
            Some(Packet::Publish(p)) => {
                assert_eq!(&p.payload[..], i.to_string().as_bytes(), "message {i}")
            }
            other => panic!("message {i}: expected PUBLISH, got {other:?}"),
        }
    }
    assert_eq!(
        broker
            .stats()
            .dropped
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}

#[tokio::test]
async fn internal_subscriber_gets_retained_then_live_and_can_publish() {
    let (broker, addr) = start(BrokerConfig::default()).await;
    let mut c = Client::connect(addr, "dev", ProtocolVersion::V5, None).await;
    c.send(publish(
        "spBv1.0/g/NBIRTH/n",
        "birth",
        QoS::AtLeastOnce,
        true,
        1,
    ))
    .await;
    assert!(matches!(c.recv().await, Some(Packet::PubAck(_))));
    let mut rx = broker
        .subscribe_internal("host", "spBv1.0/#", 16)
        .expect("valid filter");
    let first = rx.recv().await.expect("retained message");
    assert_eq!(first.topic.as_str(), "spBv1.0/g/NBIRTH/n");
    assert!(first.retain);
    c.send(publish(
        "spBv1.0/g/NDATA/n",
        "data",
        QoS::AtMostOnce,
        false,
        0,
    ))
    .await;
    let live = rx.recv().await.expect("live message");
    assert_eq!(live.topic.as_str(), "spBv1.0/g/NDATA/n");
    assert_eq!(&live.payload[..], b"data");
    assert!(!live.retain);
    // Messages from inside the platform reach MQTT clients.
    c.subscribe("spBv1.0/g/NCMD/#", QoS::AtMostOnce).await;
    broker.publish(
        match publish("spBv1.0/g/NCMD/n", "rebirth", QoS::AtMostOnce, false, 0) {
            Packet::Publish(p) => p,
            _ => unreachable!(),
        },
    );
    match c.recv().await {
        Some(Packet::Publish(p)) => assert_eq!(p.topic.as_str(), "spBv1.0/g/NCMD/n"),
        other => panic!("expected the command, got {other:?}"),
    }
    assert!(broker.subscribe_internal("bad", "a/#/b", 1).is_err());
}
