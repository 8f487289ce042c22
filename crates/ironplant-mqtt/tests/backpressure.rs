//! No acknowledged message is lost to a slow subscriber: QoS 1 messages that find a
//! subscriber's queue full hold their publisher back (no PUBACK, its connection not read)
//! instead of being dropped; a subscriber that stays starved is disconnected after
//! `slow_consumer_timeout`, and its persistent session keeps every message (on disk beyond its
//! memory bound) until it comes back.

mod raw_client;

use std::collections::BTreeSet;
use std::num::NonZeroU16;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ironplant_mqtt::codec::{
    self, Connect, Packet, ProtocolVersion, Publish, PublishResponse, QoS, ReasonCode,
};
use ironplant_mqtt::{Broker, BrokerConfig};
use raw_client::{s, Client};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn connect(id: &str, expiry: Option<u32>) -> Connect {
    let mut c = Connect::new(ProtocolVersion::V5, s(id), 30);
    c.clean_start = false;
    c.properties.session_expiry_interval = expiry;
    c
}

/// Polls `cond` every 10 ms until it holds or `within` passed.
async fn eventually(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Publishes `n` numbered QoS 1 messages of `size` bytes as fast as the broker reads them
/// (writing and reading PUBACKs at once, like any client with a large in-flight window);
/// returns the numbers the broker acknowledged.
async fn firehose(addr: std::net::SocketAddr, n: u16, size: usize) -> BTreeSet<u16> {
    let mut c = Client::connect(addr, "firehose", ProtocolVersion::V5, None).await;
    c.stream.set_nodelay(true).expect("nodelay");
    let pending = std::mem::take(&mut c.buf);
    let (mut rd, mut wr) = c.stream.into_split();
    let writer = tokio::spawn(async move {
        let body = "x".repeat(size);
        for i in 1..=n {
            let mut p = Publish::new(
                s("plant/line1/t"),
                Bytes::from(format!("{i:05}{body}").into_bytes()),
            );
            p.qos = QoS::AtLeastOnce;
            p.packet_id = NonZeroU16::new(i);
            let mut out = Vec::new();
            codec::encode(&Packet::Publish(p), ProtocolVersion::V5, &mut out).expect("encode");
            wr.write_all(&out).await.expect("write");
        }
        wr
    });
    let mut acked = BTreeSet::new();
    let mut buf = pending;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        while let Some((p, used)) =
            codec::decode(&buf, ProtocolVersion::V5, 1 << 20).expect("valid packet")
        {
            buf.drain(..used);
            match p {
                Packet::PubAck(a) => {
                    assert_eq!(a.reason_code, ReasonCode::Success);
                    acked.insert(a.packet_id.get());
                }
                other => panic!("publisher got {other:?}"),
            }
        }
        if acked.len() == usize::from(n) {
            break;
        }
        let mut chunk = [0u8; 4096];
        let left = deadline.saturating_duration_since(Instant::now());
        let got = tokio::time::timeout(left, rd.read(&mut chunk))
            .await
            .expect("every message acknowledged in time")
            .expect("read");
        assert!(got > 0, "the broker closed the publisher's connection");
        buf.extend_from_slice(&chunk[..got]);
    }
    drop(writer.await.expect("writer"));
    acked
}

fn number(p: &Publish) -> u16 {
    std::str::from_utf8(&p.payload[..5])
        .ok()
        .and_then(|s| s.parse().ok())
        .expect("numbered payload")
}

/// A persistent broker in `dir` with small bounds, so that a few MB overflow every queue in
/// memory: a subscriber's queue (16), its session's memory (64), its window (16); the rest
/// must go to disk.
async fn start_small(dir: &std::path::Path, slow: Duration) -> (Broker, std::net::SocketAddr) {
    let cfg = BrokerConfig {
        max_queue: 16,
        max_session_queue: 64,
        max_inflight: 16,
        slow_consumer_timeout: slow,
        state_dir: Some(dir.to_owned()),
        ..BrokerConfig::default()
    };
    let broker = Broker::open(cfg, Arc::new(ironplant_mqtt::auth::AllowAll)).expect("open");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let b = broker.clone();
    tokio::spawn(async move { b.serve(listener).await });
    (broker, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_starved_subscriber_loses_no_acknowledged_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (broker, addr) = start_small(dir.path(), Duration::from_millis(500)).await;

    // The subscriber subscribes at QoS 1, then stops reading altogether.
    let (mut sub, _) = Client::connect_with(addr, connect("starved", Some(3600))).await;
    sub.subscribe("plant/#", QoS::AtLeastOnce).await;

    // 3,000 messages of 8 KB (24 MB): far more than the socket buffers, queues and memory
    // bound hold.
    const N: u16 = 3_000;
    let acked = firehose(addr, N, 8 * 1024).await;
    assert_eq!(acked.len(), usize::from(N));
    let stats = broker.stats();
    assert_eq!(stats.slow_disconnects.load(Ordering::Relaxed), 1);
    // The session kept what did not fit in memory on disk.
    let spilled: u64 = std::fs::read_dir(dir.path().join("spill"))
        .expect("the spill directory")
        .flatten()
        .map(|f| f.metadata().map_or(0, |m| m.len()))
        .sum();
    assert!(spilled > 1 << 20, "spill files hold {spilled} bytes");
    drop(sub);

    // Back, it gets every acknowledged message, in order (those in flight when it was
    // disconnected may come twice).
    let (mut sub, ack) = Client::connect_with(addr, connect("starved", Some(3600))).await;
    assert!(ack.session_present);
    sub.stream.set_nodelay(true).expect("nodelay");
    let mut firsts: Vec<u16> = Vec::new();
    let mut seen = BTreeSet::new();
    while seen.len() < usize::from(N) {
        let p = tokio::time::timeout(Duration::from_secs(10), sub.next_publish())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "stuck after {} messages; dropped {}",
                    seen.len(),
                    stats.dropped.load(Ordering::Relaxed)
                )
            });
        let i = number(&p);
        if seen.insert(i) {
            firsts.push(i);
        }
        sub.send(Packet::PubAck(PublishResponse::new(
            p.packet_id.expect("packet id"),
        )))
        .await;
    }
    assert_eq!(firsts, (1..=N).collect::<Vec<_>>(), "in order, none lost");
    assert_eq!(stats.dropped.load(Ordering::Relaxed), 0);
    // Everything delivered: the spill file is back to its header.
    eventually("the spill emptied", Duration::from_secs(5), || {
        std::fs::read_dir(dir.path().join("spill"))
            .map(|d| {
                d.flatten()
                    .all(|f| f.metadata().map_or(0, |m| m.len()) <= 16)
            })
            .unwrap_or(true)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_subscriber_slows_its_publisher_instead_of_losing_messages() {
    // A clean session that reads, slowly: the publisher is held back, nobody is disconnected
    // and nothing is dropped, without any state directory.
    let cfg = BrokerConfig {
        max_queue: 8,
        max_session_queue: 8,
        max_inflight: 4,
        slow_consumer_timeout: Duration::from_secs(10),
        ..BrokerConfig::default()
    };
    let (broker, addr) = raw_client::start(cfg).await;
    let mut sub = Client::connect(addr, "slow", ProtocolVersion::V5, None).await;
    sub.stream.set_nodelay(true).expect("nodelay");
    sub.subscribe("plant/#", QoS::AtLeastOnce).await;
    const N: u16 = 2_000;
    let publisher = tokio::spawn(firehose(addr, N, 4 * 1024));
    let mut seen = BTreeSet::new();
    let mut order = Vec::new();
    while seen.len() < usize::from(N) {
        let p = sub.next_publish().await;
        let i = number(&p);
        if seen.insert(i) {
            order.push(i);
        }
        sub.send(Packet::PubAck(PublishResponse::new(
            p.packet_id.expect("packet id"),
        )))
        .await;
        if i.is_multiple_of(100) {
            // A consumer that stops now and then (a slow database behind it, say).
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let acked = publisher.await.expect("publisher");
    assert_eq!(acked.len(), usize::from(N));
    assert_eq!(order, (1..=N).collect::<Vec<_>>());
    let stats = broker.stats();
    assert_eq!(stats.dropped.load(Ordering::Relaxed), 0);
    assert_eq!(stats.slow_disconnects.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn qos0_to_a_full_queue_is_dropped_and_counted_without_holding_the_publisher() {
    let cfg = BrokerConfig {
        max_queue: 4,
        slow_consumer_timeout: Duration::from_secs(30),
        ..BrokerConfig::default()
    };
    let (broker, addr) = raw_client::start(cfg).await;
    let (mut sub, _) = Client::connect_with(addr, connect("idle", None)).await;
    sub.subscribe("plant/#", QoS::AtMostOnce).await;
    let mut publ = Client::connect(addr, "p", ProtocolVersion::V5, None).await;
    let body = "y".repeat(16 * 1024);
    // 2,000 × 16 KB at QoS 0 with nobody reading: the publisher is never held back (its
    // PINGREQ is answered at once, well within the 30 s a held publisher would wait).
    for _ in 0..2_000 {
        let mut p = Publish::new(s("plant/x"), Bytes::from(body.clone().into_bytes()));
        p.qos = QoS::AtMostOnce;
        let mut out = Vec::new();
        codec::encode(&Packet::Publish(p), ProtocolVersion::V5, &mut out).expect("encode");
        publ.stream.write_all(&out).await.expect("write");
    }
    assert!(publ.drain().await.is_empty());
    let stats = broker.stats();
    assert!(stats.dropped.load(Ordering::Relaxed) > 0);
    assert_eq!(stats.slow_disconnects.load(Ordering::Relaxed), 0);
    drop(sub);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_leaving_while_its_publisher_waits_loses_nothing() {
    // The publisher waits for room in a full queue; the subscriber goes away meanwhile (its
    // queue drains into its session). What the publisher then hands over must land in the
    // session too, not in the queue of a connection nobody reads any more.
    let dir = tempfile::tempdir().expect("tempdir");
    let (broker, addr) = start_small(dir.path(), Duration::from_secs(30)).await;
    let (mut sub, _) = Client::connect_with(addr, connect("leaver", Some(3600))).await;
    sub.subscribe("plant/#", QoS::AtLeastOnce).await;
    const N: u16 = 2_000;
    let publisher = tokio::spawn(firehose(addr, N, 8 * 1024));
    // Once the session's memory is full, the publisher is being held back.
    eventually(
        "the subscriber's session is full",
        Duration::from_secs(20),
        || broker.counts().queued >= 64,
    )
    .await;
    drop(sub);
    let acked = publisher.await.expect("publisher");
    assert_eq!(acked.len(), usize::from(N));
    assert_eq!(broker.stats().slow_disconnects.load(Ordering::Relaxed), 0);
    let (mut sub, ack) = Client::connect_with(addr, connect("leaver", Some(3600))).await;
    assert!(ack.session_present);
    sub.stream.set_nodelay(true).expect("nodelay");
    let mut seen = BTreeSet::new();
    while seen.len() < usize::from(N) {
        let p = tokio::time::timeout(Duration::from_secs(10), sub.next_publish())
            .await
            .unwrap_or_else(|_| panic!("stuck after {} messages", seen.len()));
        seen.insert(number(&p));
        sub.send(Packet::PubAck(PublishResponse::new(
            p.packet_id.expect("packet id"),
        )))
        .await;
    }
    assert_eq!(broker.stats().dropped.load(Ordering::Relaxed), 0);
}
