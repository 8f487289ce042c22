//! MQTT over WebSocket through the real HTTP server: a tokio-tungstenite client at `/mqtt`
//! (and on the dedicated listener) talking to a TCP client through the same broker, the
//! subprotocol negotiation, and the refusals (text message, oversized message, plain HTTP,
//! broker off). Interop with a third-party client is in `mqtt_ws_paho.rs`.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use ironplant_api::ApiState;
use ironplant_mqtt::codec::{
    self, Connect, MqttString, Packet, ProtocolVersion, Publish, QoS, ReasonCode, Subscribe,
    SubscribeProperties, Subscription, SubscriptionOptions,
};
use ironplant_mqtt::{Broker, BrokerConfig};
use ironplant_runtime::Runtime;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const WAIT: Duration = Duration::from_secs(5);

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The platform's HTTP server with a broker (also on TCP) and no devices.
struct Platform {
    http: SocketAddr,
    mqtt: SocketAddr,
    broker: Broker,
    runtime: Arc<Runtime>,
}

impl Drop for Platform {
    fn drop(&mut self) {
        self.runtime.shutdown();
    }
}

async fn platform(with_broker: bool) -> Platform {
    let cfg = ironplant_api::settings::parse("empty.toml", "").expect("an empty config is valid");
    let runtime = Runtime::start(&cfg, None).expect("runtime starts");
    let broker = Broker::new(BrokerConfig::default());
    let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let mqtt = tcp.local_addr().expect("address");
    let b = broker.clone();
    tokio::spawn(async move { b.serve(tcp).await });
    let state = Arc::new(ApiState {
        runtime: runtime.clone(),
        started: std::time::Instant::now(),
        mqtt: with_broker.then(|| broker.clone()),
        security: None,
        http: ironplant_api::listen::Connections::new(Default::default(), None),
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let http = listener.local_addr().expect("address");
    tokio::spawn(ironplant_api::serve(
        listener,
        state,
        std::future::pending::<()>(),
    ));
    Platform {
        http,
        mqtt,
        broker,
        runtime,
    }
}

async fn ws_connect(url: &str, protocols: &str) -> Result<(Ws, Option<String>), String> {
    let mut req = url.into_client_request().expect("valid URL");
    if !protocols.is_empty() {
        req.headers_mut().insert(
            "sec-websocket-protocol",
            protocols.parse().expect("valid header"),
        );
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, resp)) => {
            let chosen = resp
                .headers()
                .get("sec-websocket-protocol")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            Ok((ws, chosen))
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

fn s(text: &str) -> MqttString {
    MqttString::from_utf8(Bytes::copy_from_slice(text.as_bytes())).expect("valid string")
}

fn encode(p: &Packet, v: ProtocolVersion) -> Vec<u8> {
    let mut out = Vec::new();
    codec::encode(p, v, &mut out).expect("encode");
    out
}

enum Conn {
    Tcp(TcpStream),
    Ws(Box<Ws>),
}

/// A minimal MQTT client on our codec, over TCP or WebSocket.
struct Client {
    conn: Conn,
    buf: Vec<u8>,
    v: ProtocolVersion,
}

impl Client {
    async fn connect(conn: Conn, id: &str, v: ProtocolVersion) -> Client {
        let mut c = Client {
            conn,
            buf: Vec::new(),
            v,
        };
        // Split CONNECT over two messages on WebSocket: packets and messages are unrelated.
        let bytes = encode(&Packet::Connect(Box::new(Connect::new(v, s(id), 30))), v);
        c.send_raw(&bytes[..3]).await;
        c.send_raw(&bytes[3..]).await;
        match c.recv().await {
            Some(Packet::Connack(a)) => assert_eq!(a.reason_code, ReasonCode::Success),
            other => panic!("expected CONNACK, got {other:?}"),
        }
        c
    }

    async fn send_raw(&mut self, bytes: &[u8]) {
        match &mut self.conn {
            Conn::Tcp(t) => t.write_all(bytes).await.expect("write"),
            Conn::Ws(w) => w
                .send(Message::Binary(Bytes::copy_from_slice(bytes)))
                .await
                .expect("send"),
        }
    }

    async fn subscribe(&mut self, filter: &str) {
        let sub = Subscribe {
            packet_id: std::num::NonZeroU16::new(1).expect("non-zero"),
            properties: SubscribeProperties::default(),
            subscriptions: vec![Subscription {
                filter: s(filter),
                options: SubscriptionOptions::qos(QoS::AtLeastOnce),
            }],
        };
        self.send_raw(&encode(&Packet::Subscribe(sub), self.v))
            .await;
        match self.recv().await {
            Some(Packet::SubAck(a)) => assert_eq!(a.reason_codes.len(), 1),
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    /// Two QoS 1 PUBLISHes in one WebSocket message (one write on TCP); both PUBACKs come back.
    async fn publish_two(&mut self, topic: &str, a: &[u8], b: &[u8]) {
        let mut bytes = Vec::new();
        for (i, payload) in [a, b].into_iter().enumerate() {
            let mut p = Publish::new(s(topic), Bytes::copy_from_slice(payload));
            p.qos = QoS::AtLeastOnce;
            p.packet_id = std::num::NonZeroU16::new(10 + i as u16);
            codec::encode(&Packet::Publish(p), self.v, &mut bytes).expect("encode");
        }
        self.send_raw(&bytes).await;
        for _ in 0..2 {
            match self.recv().await {
                Some(Packet::PubAck(_)) => {}
                other => panic!("expected PUBACK, got {other:?}"),
            }
        }
    }

    /// The next packet, or None when the server closed the connection.
    async fn recv(&mut self) -> Option<Packet> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some((p, used)) =
                codec::decode(&self.buf, self.v, 1 << 24).expect("valid packet from the broker")
            {
                self.buf.drain(..used);
                return Some(p);
            }
            let more = tokio::time::timeout_at(deadline, async {
                match &mut self.conn {
                    Conn::Tcp(t) => {
                        let mut chunk = [0u8; 4096];
                        match t.read(&mut chunk).await {
                            Ok(0) | Err(_) => None,
                            Ok(n) => Some(chunk[..n].to_vec()),
                        }
                    }
                    Conn::Ws(w) => loop {
                        match w.next().await {
                            Some(Ok(Message::Binary(b))) => break Some(b.to_vec()),
                            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                            Some(Ok(m)) => panic!("unexpected WebSocket message {m:?}"),
                            Some(Err(_)) | None => break None,
                        }
                    },
                }
            })
            .await
            .expect("a packet within 5 s");
            self.buf.extend_from_slice(&more?);
        }
    }

    async fn expect_publish(&mut self) -> (String, Vec<u8>) {
        match self.recv().await {
            Some(Packet::Publish(p)) => (p.topic.as_str().to_owned(), p.payload.to_vec()),
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }
}

/// Waits until the broker counts `n` connected clients.
async fn wait_connected(broker: &Broker, n: u64) {
    let start = Instant::now();
    while broker.stats().connected.load(Ordering::Relaxed) != n {
        assert!(
            start.elapsed() < WAIT,
            "broker still has {} connected clients, expected {n}",
            broker.stats().connected.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_and_tcp_clients_exchange_messages_both_ways() {
    let p = platform(true).await;
    for v in [ProtocolVersion::V311, ProtocolVersion::V5] {
        let (ws, chosen) = ws_connect(&format!("ws://{}/mqtt", p.http), "mqtt")
            .await
            .expect("upgrade");
        assert_eq!(chosen.as_deref(), Some("mqtt"));
        let mut web = Client::connect(Conn::Ws(Box::new(ws)), "browser", v).await;
        let tcp = TcpStream::connect(p.mqtt).await.expect("connect");
        let mut plc = Client::connect(Conn::Tcp(tcp), "plc", v).await;
        web.subscribe("line/+/cmd").await;
        plc.subscribe("line/+/state").await;

        // A payload larger than one read of either side, so it spans reads and frames.
        let big = vec![b'x'; 200_000];
        plc.publish_two("line/1/cmd", b"start", &big).await;
        assert_eq!(
            web.expect_publish().await,
            ("line/1/cmd".to_owned(), b"start".to_vec())
        );
        assert_eq!(
            web.expect_publish().await,
            ("line/1/cmd".to_owned(), big.clone())
        );
        web.publish_two("line/1/state", b"running", &big).await;
        assert_eq!(
            plc.expect_publish().await,
            ("line/1/state".to_owned(), b"running".to_vec())
        );
        assert_eq!(plc.expect_publish().await, ("line/1/state".to_owned(), big));
        web.send_raw(&encode(&Packet::PingReq, v)).await;
        assert!(matches!(web.recv().await, Some(Packet::PingResp)));
    }
    assert_eq!(p.broker.stats().protocol_errors.load(Ordering::Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subprotocols_mqtt_and_mqttv31_none_accepted_others_refused() {
    let p = platform(true).await;
    let url = format!("ws://{}/mqtt", p.http);
    for (offered, expected) in [
        ("mqtt", Some("mqtt")),
        ("mqttv3.1", Some("mqttv3.1")),
        ("foo, mqtt", Some("mqtt")),
        ("", None),
    ] {
        let (ws, chosen) = ws_connect(&url, offered)
            .await
            .unwrap_or_else(|e| panic!("offering {offered:?}: {e}"));
        assert_eq!(chosen.as_deref(), expected, "offering {offered:?}");
        let mut c = Client::connect(Conn::Ws(Box::new(ws)), "sp", ProtocolVersion::V311).await;
        c.send_raw(&encode(&Packet::PingReq, ProtocolVersion::V311))
            .await;
        assert!(matches!(c.recv().await, Some(Packet::PingResp)));
    }
    let err = ws_connect(&url, "wamp")
        .await
        .map(|_| ())
        .expect_err("refused");
    assert!(
        err.starts_with("400 ") && err.contains("unsupported_subprotocol"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_message_is_closed_with_1003() {
    let p = platform(true).await;
    let (mut ws, _) = ws_connect(&format!("ws://{}/mqtt", p.http), "mqtt")
        .await
        .expect("upgrade");
    ws.send(Message::Text("CONNECT".into()))
        .await
        .expect("send");
    let close = next_close(&mut ws).await;
    assert_eq!(close.code, CloseCode::Unsupported);
    assert!(close.reason.contains("binary"), "{}", close.reason);
}

/// The server's close frame, skipping MQTT data before it.
async fn next_close(ws: &mut Ws) -> CloseFrame {
    tokio::time::timeout(WAIT, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => break frame,
                Some(Ok(Message::Binary(_))) => {}
                Some(Ok(other)) => panic!("expected a close frame, got {other:?}"),
                Some(Err(e)) => panic!("expected a close frame, got {e}"),
                None => panic!("closed without a close frame"),
            }
        }
    })
    .await
    .expect("a close frame within 5 s")
    .expect("with a code")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_message_is_closed_with_1009() {
    let p = platform(true).await;
    let (ws, _) = ws_connect(&format!("ws://{}/mqtt", p.http), "mqtt")
        .await
        .expect("upgrade");
    let mut c = Client::connect(Conn::Ws(Box::new(ws)), "big", ProtocolVersion::V5).await;
    wait_connected(&p.broker, 1).await;
    let too_big = vec![0u8; ironplant_api::mqtt_ws::MAX_MESSAGE + 1];
    let Conn::Ws(ws) = &mut c.conn else {
        unreachable!("a WebSocket client")
    };
    // The server refuses the message from its frame header, sends 1009 and closes while the
    // client may still be writing the megabyte: the kernel then resets the connection, and
    // the client's write (or its read of the close frame) can fail with a reset instead. Seen
    // on a loaded 2-core CI machine. Either way the message never reaches the broker and the
    // connection ends; when the close frame does arrive, its code must be 1009.
    let is_reset = |e: &tokio_tungstenite::tungstenite::Error| {
        matches!(e, tokio_tungstenite::tungstenite::Error::Io(io)
            if matches!(io.kind(), std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe))
    };
    match ws.send(Message::Binary(Bytes::from(too_big))).await {
        Ok(()) => {
            let frame = tokio::time::timeout(WAIT, async {
                loop {
                    match ws.next().await {
                        Some(Ok(Message::Close(frame))) => break frame.map(|f| f.code),
                        Some(Ok(Message::Binary(_))) => {}
                        Some(Ok(other)) => panic!("expected a close frame, got {other:?}"),
                        Some(Err(e)) if is_reset(&e) => break None,
                        Some(Err(e)) => panic!("expected a close frame, got {e}"),
                        None => panic!("closed without a close frame"),
                    }
                }
            })
            .await
            .expect("a close frame (or a reset) within the deadline");
            if let Some(code) = frame {
                assert_eq!(code, CloseCode::Size);
            }
        }
        Err(e) => assert!(is_reset(&e), "send: {e}"),
    }
    wait_connected(&p.broker, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_and_disabled_broker_get_clear_errors() {
    let p = platform(true).await;
    let http = |addr: SocketAddr| async move {
        let mut t = TcpStream::connect(addr).await.expect("connect");
        t.write_all(b"GET /mqtt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        let mut out = String::new();
        t.read_to_string(&mut out).await.expect("read");
        out
    };
    let resp = http(p.http).await;
    assert!(resp.starts_with("HTTP/1.1 426"), "{resp}");
    assert!(resp.contains(r#""code":"websocket_required""#), "{resp}");

    let off = platform(false).await;
    let err = ws_connect(&format!("ws://{}/mqtt", off.http), "mqtt")
        .await
        .map(|_| ())
        .expect_err("refused");
    assert!(
        err.starts_with("404 ") && err.contains("mqtt_disabled"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedicated_listener_serves_any_path() {
    let broker = Broker::new(BrokerConfig::default());
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(ironplant_api::mqtt_ws::serve_dedicated(
        listener,
        broker.clone(),
        ironplant_api::listen::Connections::new(Default::default(), None),
        std::future::pending::<()>(),
    ));
    let (ws, _) = ws_connect(&format!("ws://{addr}/"), "mqtt")
        .await
        .expect("upgrade at /");
    let mut a = Client::connect(Conn::Ws(Box::new(ws)), "a", ProtocolVersion::V5).await;
    let (ws, _) = ws_connect(&format!("ws://{addr}/mqtt"), "mqtt")
        .await
        .expect("upgrade at /mqtt");
    let mut b = Client::connect(Conn::Ws(Box::new(ws)), "b", ProtocolVersion::V311).await;
    a.subscribe("t").await;
    b.publish_two("t", b"1", b"2").await;
    assert_eq!(a.expect_publish().await.1, b"1");
    assert_eq!(a.expect_publish().await.1, b"2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dedicated_listener_keeps_the_http_limits_while_a_websocket_is_open() {
    let broker = Broker::new(BrokerConfig::default());
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let conns = ironplant_api::listen::Connections::new(
        ironplant_api::settings::HttpSettings {
            max_connections_per_address: 1,
            reserved_for: vec![],
            ..Default::default()
        },
        None,
    );
    tokio::spawn(ironplant_api::mqtt_ws::serve_dedicated(
        listener,
        broker.clone(),
        conns.clone(),
        std::future::pending::<()>(),
    ));
    let (ws, _) = ws_connect(&format!("ws://{addr}/"), "mqtt")
        .await
        .expect("upgrade");
    let a = Client::connect(Conn::Ws(Box::new(ws)), "a", ProtocolVersion::V5).await;
    // Upgraded, the WebSocket has left hyper but still holds its address's one slot.
    assert_eq!(conns.open(), 1);
    assert!(
        ws_connect(&format!("ws://{addr}/"), "mqtt").await.is_err(),
        "a second connection from the same address is refused"
    );
    assert!(conns
        .render()
        .contains("ironplant_http_connections_refused_total{reason=\"per_address\"} 1\n"));
    // Closed, it frees the slot.
    drop(a);
    let deadline = Instant::now() + WAIT;
    while conns.open() != 0 {
        assert!(Instant::now() < deadline, "the slot was never released");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    ws_connect(&format!("ws://{addr}/"), "mqtt")
        .await
        .expect("served again");
}
