//! A minimal MQTT client on our codec, for the broker's tests.
#![allow(dead_code)]

use std::time::Duration;

use bytes::Bytes;
use ironplant_mqtt::codec::{
    self, Connack, Connect, MqttString, Packet, ProtocolVersion, Publish, QoS, ReasonCode,
    Subscribe, SubscribeProperties, Subscription, SubscriptionOptions, Will,
};
use ironplant_mqtt::{Broker, BrokerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub struct Client {
    pub stream: TcpStream,
    pub buf: Vec<u8>,
    pub version: ProtocolVersion,
}

pub fn s(text: &str) -> MqttString {
    MqttString::from_utf8(Bytes::copy_from_slice(text.as_bytes())).expect("valid string")
}

impl Client {
    pub async fn connect(
        addr: std::net::SocketAddr,
        id: &str,
        version: ProtocolVersion,
        will: Option<Will>,
    ) -> Client {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let mut c = Client {
            stream,
            buf: Vec::new(),
            version,
        };
        let mut connect = Connect::new(version, s(id), 30);
        connect.will = will;
        c.send(Packet::Connect(Box::new(connect))).await;
        match c.recv().await {
            Some(Packet::Connack(a)) => assert_eq!(a.reason_code, ReasonCode::Success),
            other => panic!("expected CONNACK, got {other:?}"),
        }
        c
    }

    /// Connects with a CONNECT of the caller's making; returns the CONNACK whatever it says.
    pub async fn connect_with(addr: std::net::SocketAddr, connect: Connect) -> (Client, Connack) {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let mut c = Client {
            stream,
            buf: Vec::new(),
            version: connect.protocol_version,
        };
        c.send(Packet::Connect(Box::new(connect))).await;
        match c.recv().await {
            Some(Packet::Connack(a)) => (c, a),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    /// The next PUBLISH (panics on anything else).
    pub async fn next_publish(&mut self) -> Publish {
        match self.recv().await {
            Some(Packet::Publish(p)) => p,
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }

    /// Sends PINGREQ and returns everything that arrives before PINGRESP.
    pub async fn drain(&mut self) -> Vec<Packet> {
        self.send(Packet::PingReq).await;
        let mut got = Vec::new();
        loop {
            match self.recv().await {
                Some(Packet::PingResp) => return got,
                Some(p) => got.push(p),
                None => panic!("connection closed while draining"),
            }
        }
    }

    pub async fn send(&mut self, p: Packet) {
        let mut out = Vec::new();
        codec::encode(&p, self.version, &mut out).expect("encode");
        self.stream.write_all(&out).await.expect("write");
    }

    /// The next packet, or None when the server closed the connection (5 s deadline).
    pub async fn recv(&mut self) -> Option<Packet> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            if let Some((p, used)) = codec::decode(&self.buf, self.version, 1 << 20)
                .expect("valid packet from the broker")
            {
                self.buf.drain(..used);
                return Some(p);
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout_at(deadline, self.stream.read(&mut chunk))
                .await
                .expect("broker answered in time")
                .ok()?;
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    pub async fn subscribe(&mut self, filter: &str, qos: QoS) {
        let sub = Subscribe {
            packet_id: std::num::NonZeroU16::new(1).expect("non-zero"),
            properties: SubscribeProperties::default(),
            subscriptions: vec![Subscription {
                filter: s(filter),
                options: SubscriptionOptions::qos(qos),
            }],
        };
        self.send(Packet::Subscribe(sub)).await;
        match self.recv().await {
            Some(Packet::SubAck(a)) => assert_eq!(a.reason_codes.len(), 1),
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }
}

pub fn publish(topic: &str, payload: &str, qos: QoS, retain: bool, pid: u16) -> Packet {
    let mut p = Publish::new(s(topic), Bytes::copy_from_slice(payload.as_bytes()));
    p.qos = qos;
    p.retain = retain;
    p.packet_id = std::num::NonZeroU16::new(pid);
    Packet::Publish(p)
}

pub async fn start(cfg: BrokerConfig) -> (Broker, std::net::SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let broker = Broker::new(cfg);
    let b = broker.clone();
    tokio::spawn(async move { b.serve(listener).await });
    (broker, addr)
}
