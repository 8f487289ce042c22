//! The cost of MQTT over WebSocket against plain TCP: one publisher to one subscriber at QoS 0,
//! 64-byte payloads, through one in-process broker (TCP listener and dedicated WebSocket
//! listener), with clients on our codec (tokio-tungstenite for the WebSocket side).
//!
//! Run: `cargo run --release -p ironplant-api --example mqtt_ws_overhead -- [SECONDS]`
//!
//! Publishers stay at most WINDOW messages ahead of the subscriber, so the figure is the rate
//! the broker delivers, not how fast it fills its queues. "batched" writes up to 64 packets per
//! TCP write / WebSocket message; "1 per message" is how browser clients (MQTT.js, Paho JS)
//! send: one WebSocket message per packet. Everything shares this process's cores, so compare
//! the figures with each other, not with `ironplant-bench mqtt`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use ironplant_mqtt::codec::{
    self, Connect, MqttString, Packet, ProtocolVersion, Publish, QoS, Subscribe,
    SubscribeProperties, Subscription, SubscriptionOptions,
};
use ironplant_mqtt::{Broker, BrokerConfig};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::Message;

const V: ProtocolVersion = ProtocolVersion::V311;
const WINDOW: u64 = 1000;
const BATCH: usize = 64;
const WARMUP: Duration = Duration::from_millis(500);

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

enum Conn {
    Tcp(TcpStream),
    Ws(Box<Ws>),
}

impl Conn {
    async fn send(&mut self, packets: &[Vec<u8>], one_per_message: bool) -> anyhow::Result<()> {
        match self {
            Conn::Tcp(t) => t.write_all(&packets.concat()).await?,
            Conn::Ws(w) if one_per_message => {
                for p in packets {
                    w.feed(Message::Binary(Bytes::copy_from_slice(p))).await?;
                }
                w.flush().await?;
            }
            Conn::Ws(w) => w.send(Message::Binary(packets.concat().into())).await?,
        }
        Ok(())
    }

    async fn recv(&mut self, buf: &mut Vec<u8>) -> anyhow::Result<()> {
        match self {
            Conn::Tcp(t) => {
                let mut chunk = [0u8; 16 * 1024];
                let n = t.read(&mut chunk).await?;
                anyhow::ensure!(n > 0, "broker closed the connection");
                buf.extend_from_slice(&chunk[..n]);
            }
            Conn::Ws(w) => match w.next().await {
                Some(Ok(Message::Binary(b))) => buf.extend_from_slice(&b),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
                None => anyhow::bail!("broker closed the connection"),
            },
        }
        Ok(())
    }
}

fn s(text: &str) -> MqttString {
    MqttString::from_utf8(Bytes::copy_from_slice(text.as_bytes())).expect("valid string")
}

fn encode(p: &Packet) -> Vec<u8> {
    let mut out = Vec::new();
    codec::encode(p, V, &mut out).expect("encode");
    out
}

/// Connects, and reads until `count` packets arrived (CONNACK, SUBACK).
async fn handshake(conn: &mut Conn, id: &str, extra: Option<Packet>) -> anyhow::Result<()> {
    let mut packets = vec![encode(&Packet::Connect(Box::new(Connect::new(
        V,
        s(id),
        60,
    ))))];
    packets.extend(extra.as_ref().map(encode));
    let want = packets.len();
    conn.send(&packets, false).await?;
    let mut buf = Vec::new();
    let mut got = 0;
    while got < want {
        conn.recv(&mut buf).await?;
        while let Some((_, used)) = codec::decode(&buf, V, 1 << 20)? {
            buf.drain(..used);
            got += 1;
        }
    }
    Ok(())
}

async fn open(
    kind: &str,
    tcp: std::net::SocketAddr,
    ws: std::net::SocketAddr,
) -> anyhow::Result<Conn> {
    Ok(if kind == "tcp" {
        let t = TcpStream::connect(tcp).await?;
        t.set_nodelay(true)?;
        Conn::Tcp(t)
    } else {
        let mut req = format!("ws://{ws}/mqtt").into_client_request()?;
        req.headers_mut()
            .insert("sec-websocket-protocol", "mqtt".parse()?);
        let (w, _) = tokio_tungstenite::connect_async_with_config(req, None, true).await?;
        Conn::Ws(Box::new(w))
    })
}

async fn run(
    kind: &str,
    one_per_message: bool,
    tcp: std::net::SocketAddr,
    ws: std::net::SocketAddr,
    seconds: u64,
) -> anyhow::Result<f64> {
    let mut sub = open(kind, tcp, ws).await?;
    let subscribe = Packet::Subscribe(Subscribe {
        packet_id: std::num::NonZeroU16::new(1).expect("non-zero"),
        properties: SubscribeProperties::default(),
        subscriptions: vec![Subscription {
            filter: s("bench/t"),
            options: SubscriptionOptions::qos(QoS::AtMostOnce),
        }],
    });
    handshake(
        &mut sub,
        &format!("sub-{kind}-{one_per_message}"),
        Some(subscribe),
    )
    .await?;
    let mut publ = open(kind, tcp, ws).await?;
    handshake(&mut publ, &format!("pub-{kind}-{one_per_message}"), None).await?;

    let received = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (received, stop) = (received.clone(), stop.clone());
        tokio::spawn(async move {
            let mut buf = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                if sub.recv(&mut buf).await.is_err() {
                    break;
                }
                let mut off = 0;
                let mut n = 0;
                while let Ok(Some((_, used))) = codec::decode(&buf[off..], V, 1 << 20) {
                    off += used;
                    n += 1;
                }
                buf.drain(..off);
                received.fetch_add(n, Ordering::Relaxed);
            }
        })
    };
    let packet = encode(&Packet::Publish(Publish::new(
        s("bench/t"),
        Bytes::from(vec![b'x'; 64]),
    )));
    let batch: Vec<Vec<u8>> = vec![packet; BATCH];
    let mut sent = 0u64;
    let start = Instant::now();
    let mut measured_from = None;
    let end = WARMUP + Duration::from_secs(seconds);
    while start.elapsed() < end {
        if measured_from.is_none() && start.elapsed() >= WARMUP {
            measured_from = Some((Instant::now(), received.load(Ordering::Relaxed)));
        }
        if sent.saturating_sub(received.load(Ordering::Relaxed)) > WINDOW {
            tokio::task::yield_now().await;
            continue;
        }
        publ.send(&batch, one_per_message).await?;
        sent += BATCH as u64;
    }
    let (t0, r0) = measured_from.unwrap_or((start, 0));
    let rate = (received.load(Ordering::Relaxed) - r0) as f64 / t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    drop(publ);
    reader.abort();
    Ok(rate)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let seconds: u64 = match std::env::args().nth(1) {
        Some(a) => a
            .parse()
            .map_err(|_| anyhow::anyhow!("SECONDS must be a whole number, got {a:?}; e.g. 5"))?,
        None => 3,
    };
    let broker = Broker::new(BrokerConfig::default());
    let tcp_l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let ws_l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let (tcp, ws) = (tcp_l.local_addr()?, ws_l.local_addr()?);
    let b = broker.clone();
    tokio::spawn(async move { b.serve(tcp_l).await });
    tokio::spawn(ironplant_api::mqtt_ws::serve_dedicated(
        ws_l,
        broker,
        ironplant_api::listen::Connections::new(Default::default(), None),
        std::future::pending(),
    ));
    println!("MQTT 3.1.1, QoS 0, 1 publisher -> 1 subscriber, 64-byte payloads, {seconds} s each");
    let tcp_rate = run("tcp", false, tcp, ws, seconds).await?;
    println!("  TCP                      {tcp_rate:>10.0} msg/s");
    for (label, one) in [
        ("WebSocket batched", false),
        ("WebSocket 1 per message", true),
    ] {
        let rate = run("ws", one, tcp, ws, seconds).await?;
        println!(
            "  {label:<24} {rate:>10.0} msg/s  ({:.0}% of TCP)",
            100.0 * rate / tcp_rate
        );
    }
    Ok(())
}
