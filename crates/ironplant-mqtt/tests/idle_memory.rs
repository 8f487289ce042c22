//! Memory of idle connections: the broker's RSS grows by at most 2 kB per connected, idle
//! client (a device that connected and subscribed, then sends nothing for a while).
//!
//! Not run by CI (it needs one file descriptor per connection on each side and a quiet
//! process): `cargo test --release -p ironplant-mqtt --test idle_memory -- --ignored --nocapture`
//! (`IDLE_CONNECTIONS=N` to choose how many; capped by the open-file limit).

use std::io::{Read, Write};
use std::time::Duration;

use bytes::Bytes;
use ironplant_mqtt::codec::{
    self, Connect, MqttString, Packet, ProtocolVersion, QoS, Subscribe, SubscribeProperties,
    Subscription, SubscriptionOptions,
};
use ironplant_mqtt::{Broker, BrokerConfig};

fn rss_kb() -> u64 {
    let text = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS")
}

fn open_files_limit() -> usize {
    let text = std::fs::read_to_string("/proc/self/limits").expect("/proc/self/limits");
    text.lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3)?.parse().ok())
        .expect("open-file limit")
}

fn s(t: &str) -> MqttString {
    MqttString::from_utf8(Bytes::copy_from_slice(t.as_bytes())).expect("string")
}

/// Connects, subscribes to its own command topic, reads CONNACK and SUBACK; the socket stays
/// open and idle.
fn device(addr: std::net::SocketAddr, i: usize) -> std::net::TcpStream {
    let mut c = std::net::TcpStream::connect(addr).expect("connect");
    let mut out = Vec::new();
    let mut connect = Connect::new(ProtocolVersion::V311, s(&format!("device-{i}")), 600);
    connect.clean_start = true;
    codec::encode(
        &Packet::Connect(Box::new(connect)),
        ProtocolVersion::V311,
        &mut out,
    )
    .expect("encode");
    let sub = Subscribe {
        packet_id: std::num::NonZeroU16::new(1).expect("non-zero"),
        properties: SubscribeProperties::default(),
        subscriptions: vec![Subscription {
            filter: s(&format!("plant/device-{i}/cmd")),
            options: SubscriptionOptions::qos(QoS::AtLeastOnce),
        }],
    };
    let subscribe = std::env::var("IDLE_SUBSCRIBE").map_or(true, |v| v != "0");
    if subscribe {
        codec::encode(&Packet::Subscribe(sub), ProtocolVersion::V311, &mut out).expect("encode");
    }
    c.write_all(&out).expect("write");
    // CONNACK (4 bytes) and SUBACK (5 bytes).
    let mut got = [0u8; 9];
    let got = &mut got[..if subscribe { 9 } else { 4 }];
    if let Err(e) = c.read_exact(got) {
        panic!("device {i}: no CONNACK and SUBACK ({e}); got {got:?}");
    }
    c
}

#[test]
#[ignore = "measures RSS with thousands of sockets; run by hand (see the module docs)"]
fn idle_connections_cost_at_most_2_kb_each() {
    let limit = open_files_limit();
    // Both ends of every connection are in this process.
    let n = std::env::var("IDLE_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
        .min(limit.saturating_sub(200) / 2);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let cfg = BrokerConfig {
        max_connections: n + 1_000,
        sys_interval: None,
        ..BrokerConfig::default()
    };
    let broker = Broker::new(cfg);
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let b = broker.clone();
    rt.spawn(async move { b.serve(listener).await });
    // Warm up: the runtime, the allocator's arenas, the tree's first levels.
    let warm: Vec<_> = (0..200).map(|i| device(addr, n + i)).collect();
    std::thread::sleep(Duration::from_millis(300));
    let before = rss_kb();
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        conns.push(device(addr, i));
    }
    std::thread::sleep(Duration::from_secs(1));
    let after = rss_kb();
    let per = (after.saturating_sub(before)) as f64 * 1024.0 / n as f64;
    println!(
        "{n} idle connections (open-file limit {limit}): RSS {:.1} MB -> {:.1} MB, {:.0} bytes per connection; projected for 100,000: {:.0} MB",
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        per,
        (before as f64 * 1024.0 + per * 100_000.0) / 1e6
    );
    assert_eq!(broker.counts().sessions, n + warm.len());
    assert!(per <= 2048.0, "{per:.0} bytes per idle connection");
    drop(conns);
    drop(warm);
}
