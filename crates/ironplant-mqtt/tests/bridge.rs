//! The bridge between our broker and Debian's Mosquitto (a real external broker): both
//! directions with prefixes, store-and-forward through a Mosquitto outage and through a
//! restart of the bridge during the outage, overflow (with the queue-full gauge), loop
//! prevention, and a restart that re-sends only the retained values that changed.

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use ironplant_mqtt::bridge::{Bridge, BridgeSettings, InRule, OutRule, Overflow, QueueLimits};
use ironplant_mqtt::client::{Client, ClientOptions, Event};
use ironplant_mqtt::codec::{MqttString, ProtocolVersion, Publish, QoS};
use ironplant_mqtt::Broker;
use support::{mosquitto_available, our_broker, wait_event, wait_until, Mosquitto};
use tokio::sync::mpsc;

fn settings(remote: &str, dir: &std::path::Path, version: ProtocolVersion) -> BridgeSettings {
    let mut client = ClientOptions::new("ironplant-bridge-site1");
    client.version = version;
    client.reconnect_min = Duration::from_millis(20);
    client.reconnect_max = Duration::from_millis(200);
    BridgeSettings {
        name: "site1".into(),
        address: remote.into(),
        client,
        out: vec![OutRule {
            local: "acme/#".into(),
            remote_prefix: "site1/".into(),
            qos: QoS::AtLeastOnce,
        }],
        inbound: vec![InRule {
            remote: "enterprise/cmd/#".into(),
            local_prefix: "acme/".into(),
            qos: QoS::AtLeastOnce,
        }],
        limits: QueueLimits {
            max_messages: 100_000,
            max_bytes: 64 << 20,
            overflow: Overflow::DropOldest,
        },
        queue_dir: dir.to_owned(),
        local_capacity: 65_536,
        window: 32,
        signer: None,
    }
}

fn local_publish(broker: &Broker, topic: &str, payload: impl Into<Bytes>) {
    broker.publish(Publish::new(
        MqttString::try_from(topic).expect("topic"),
        payload.into(),
    ));
}

/// A client on Mosquitto with a persistent session (QoS 1), so messages for it are kept by
/// Mosquitto across its own restarts and while the watcher reconnects.
async fn remote_watcher(addr: &str, filter: &str) -> (Client, mpsc::Receiver<Event>) {
    let mut o = ClientOptions::new("remote-watcher");
    o.clean_start = false;
    o.reconnect_min = Duration::from_millis(20);
    o.reconnect_max = Duration::from_millis(200);
    let (c, mut events) = Client::connect(addr, o);
    c.subscribe(&[(filter, QoS::AtLeastOnce)])
        .await
        .expect("subscribe on mosquitto");
    let _ = &mut events;
    (c, events)
}

async fn collect(events: &mut mpsc::Receiver<Event>, n: usize, secs: u64) -> Vec<Publish> {
    let mut got = Vec::new();
    while got.len() < n {
        let p = wait_event(
            events,
            secs,
            &format!("message {} of {n}", got.len() + 1),
            |e| match e {
                Event::Publish(p) => Some(p.clone()),
                _ => None,
            },
        )
        .await;
        got.push(p);
    }
    got
}

async fn connected(stats: &ironplant_mqtt::bridge::BridgeStats) {
    wait_until(10, "the bridge to connect", || {
        stats.connected.load(Ordering::Relaxed) == 1
    })
    .await;
}

/// A signing bridge: what reaches the remote (Mosquitto) is an envelope signed for its remote
/// topic, which verifies with the site's public key there and nowhere else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_leaves_the_site_is_signed() {
    use ironplant_mqtt::signed::{open, unhex, Signer};
    if !mosquitto_available() {
        return;
    }
    let m = Mosquitto::start();
    let (broker, _local_addr) = our_broker().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let (_w, mut remote) = remote_watcher(&m.addr(), "site1/#").await;
    let (site, _) = Signer::generate("site-lyon").expect("key");
    let public = unhex(&site.public_key_hex()).expect("hex");
    let mut s = settings(&m.addr(), dir.path(), ProtocolVersion::V311);
    s.signer = Some(std::sync::Arc::new(site));
    let bridge = Bridge::start(broker.clone(), s)
        .await
        .expect("bridge starts");
    connected(bridge.stats()).await;
    local_publish(&broker, "acme/line1/speed", r#"{"v":12.5}"#);
    local_publish(&broker, "acme/line1/raw", Bytes::from_static(&[0x08, 0xff]));
    let got = collect(&mut remote, 2, 10).await;
    let by_topic = |t: &str| {
        got.iter()
            .find(|p| p.topic == t)
            .unwrap_or_else(|| panic!("no {t} in {got:?}"))
    };
    let speed = by_topic("site1/acme/line1/speed");
    let env = open(&speed.payload).expect("well formed").expect("signed");
    assert_eq!(env.signer, "site-lyon");
    assert_eq!(env.payload, br#"{"v":12.5}"#);
    env.verify("site1/acme/line1/speed", &public)
        .expect("verifies on its topic");
    assert!(env.verify("site1/acme/line2/speed", &public).is_err());
    let raw = by_topic("site1/acme/line1/raw");
    let env = open(&raw.payload).expect("well formed").expect("signed");
    assert_eq!(env.payload, [0x08, 0xff]);
    env.verify("site1/acme/line1/raw", &public)
        .expect("verifies");
}

/// Both directions, with prefixes, and nothing loops back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_flow_both_ways_with_prefixes() {
    if !mosquitto_available() {
        return;
    }
    let m = Mosquitto::start();
    for version in [ProtocolVersion::V311, ProtocolVersion::V5] {
        let (broker, local_addr) = our_broker().await;
        let dir = tempfile::tempdir().expect("temp dir");
        let (_w, mut remote) = remote_watcher(&m.addr(), "#").await;
        let bridge = Bridge::start(broker.clone(), settings(&m.addr(), dir.path(), version))
            .await
            .expect("bridge starts");
        connected(bridge.stats()).await;

        // Local → remote.
        local_publish(&broker, "acme/line1/speed", "12.5");
        let p = &collect(&mut remote, 1, 10).await[0];
        assert_eq!(p.topic, "site1/acme/line1/speed");
        assert_eq!(p.payload, Bytes::from_static(b"12.5"));

        // Remote → local, seen by a local client on our broker.
        let (local, mut local_events) =
            Client::connect(&local_addr.to_string(), ClientOptions::new("local-watch"));
        local
            .subscribe(&[("acme/#", QoS::AtLeastOnce)])
            .await
            .expect("local subscribe");
        let (enterprise, _ev) = Client::connect(&m.addr(), ClientOptions::new("enterprise"));
        // The bridge's remote subscription is renewed asynchronously: publish until it lands.
        let got = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                enterprise
                    .publish("enterprise/cmd/line1/stop", "1", QoS::AtLeastOnce, false)
                    .await
                    .expect("publish on mosquitto");
                if let Ok(Some(Event::Publish(p))) =
                    tokio::time::timeout(Duration::from_millis(300), local_events.recv()).await
                {
                    return p;
                }
            }
        })
        .await
        .expect("the command arrives locally");
        assert_eq!(got.topic, "acme/enterprise/cmd/line1/stop");
        assert_eq!(got.payload, Bytes::from_static(b"1"));

        // That local message matches the out rule (acme/#) but must not go back out.
        local_publish(&broker, "acme/marker", "end");
        let mut seen = Vec::new();
        loop {
            let p = &collect(&mut remote, 1, 10).await[0];
            seen.push(p.topic.to_string());
            if p.topic == "site1/acme/marker" {
                break;
            }
        }
        assert!(
            !seen.iter().any(|t| t.starts_with("site1/acme/enterprise")),
            "an inbound message was sent back out: {seen:?}"
        );
        assert!(bridge.stats().looped.load(Ordering::Relaxed) >= 1);
        assert!(bridge.stats().received.load(Ordering::Relaxed) >= 1);
        bridge.shutdown().await;
        local.disconnect().await;
        enterprise.disconnect().await;
        _w.disconnect().await;
    }
}

/// Mosquitto goes away; N local messages are queued; the bridge itself is restarted on the
/// same data directory during the outage; Mosquitto returns on the same port: all N arrive in
/// order, exactly once each, and the queue empties.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_and_forward_across_an_outage_and_a_bridge_restart() {
    if !mosquitto_available() {
        return;
    }
    const N: usize = 500;
    let mut m = Mosquitto::start();
    let (broker, _) = our_broker().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let (watcher, mut remote) = remote_watcher(&m.addr(), "site1/#").await;
    let s = settings(&m.addr(), dir.path(), ProtocolVersion::V5);
    let bridge = Bridge::start(broker.clone(), s.clone())
        .await
        .expect("bridge");
    connected(bridge.stats()).await;
    local_publish(&broker, "acme/before", "0");
    assert_eq!(
        collect(&mut remote, 1, 10).await[0].topic,
        "site1/acme/before"
    );

    m.stop();
    wait_until(10, "the bridge to notice the outage", || {
        bridge.stats().connected.load(Ordering::Relaxed) == 0
    })
    .await;
    for i in 0..N / 2 {
        local_publish(&broker, "acme/seq", format!("{i}"));
    }
    wait_until(10, "the first half to be queued", || {
        bridge.stats().queued.load(Ordering::Relaxed) == (N / 2) as u64
    })
    .await;
    // Restart the bridge during the outage: nothing queued may be lost.
    drop(bridge);
    // Let the old tasks finish with the queue file before it is opened again.
    let bridge = loop {
        match Bridge::start(broker.clone(), s.clone()).await {
            Ok(b) => break b,
            Err(e) => {
                assert!(e.to_string().contains("queue"), "{e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    assert_eq!(
        bridge.stats().queued.load(Ordering::Relaxed),
        (N / 2) as u64
    );
    for i in N / 2..N {
        local_publish(&broker, "acme/seq", format!("{i}"));
    }
    wait_until(10, "all N to be queued", || {
        bridge.stats().queued.load(Ordering::Relaxed) == N as u64
    })
    .await;
    assert_eq!(bridge.stats().dropped.load(Ordering::Relaxed), 0);

    m.restart();
    let got = collect(&mut remote, N, 30).await;
    let payloads: Vec<String> = got
        .iter()
        .map(|p| String::from_utf8_lossy(&p.payload).into_owned())
        .collect();
    let expected: Vec<String> = (0..N).map(|i| i.to_string()).collect();
    assert_eq!(payloads, expected, "all N, in order, once each");
    assert!(got.iter().all(|p| p.topic == "site1/acme/seq"));
    wait_until(10, "the queue to empty", || {
        bridge.stats().queued.load(Ordering::Relaxed) == 0
    })
    .await;
    // N, and "before" from the first run: counters survive the restart.
    assert_eq!(bridge.stats().sent.load(Ordering::Relaxed), N as u64 + 1);
    // Nothing more arrives (no duplicates) within a short grace period.
    local_publish(&broker, "acme/after", "x");
    assert_eq!(
        collect(&mut remote, 1, 10).await[0].topic,
        "site1/acme/after"
    );
    bridge.shutdown().await;
    watcher.disconnect().await;
}

/// With the remote unreachable, a queue of 10 messages (one of them in flight) keeps the
/// newest (drop-oldest) or the first (drop-newest) of 25 more, counts every drop, and delivers
/// exactly the kept ones, in order, when the remote returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overflow_drops_per_policy_and_counts() {
    if !mosquitto_available() {
        return;
    }
    for (overflow, kept) in [(Overflow::DropOldest, 16..25), (Overflow::DropNewest, 0..9)] {
        let mut m = Mosquitto::start();
        // The watcher's persistent session survives Mosquitto's restart, so it receives what
        // the bridge delivers as soon as Mosquitto is back.
        let (watcher, mut remote) = remote_watcher(&m.addr(), "site1/#").await;
        m.stop();
        let (broker, _) = our_broker().await;
        let dir = tempfile::tempdir().expect("temp dir");
        let mut s = settings(&m.addr(), dir.path(), ProtocolVersion::V311);
        s.limits = QueueLimits {
            max_messages: 10,
            max_bytes: 1 << 20,
            overflow,
        };
        s.window = 1;
        let bridge = Bridge::start(broker.clone(), s).await.expect("bridge");
        let st = bridge.stats().clone();
        // The first message is taken by the sender (in flight to nowhere): never dropped.
        local_publish(&broker, "acme/q", "first");
        wait_until(10, "the first message to be in flight", || {
            st.in_flight.load(Ordering::Relaxed) == 1
        })
        .await;
        for i in 0..25 {
            local_publish(&broker, "acme/q", format!("{i}"));
        }
        wait_until(10, "all 26 to be handled", || {
            st.enqueued.load(Ordering::Relaxed) + st.dropped.load(Ordering::Relaxed) >= 26
                && st.queued.load(Ordering::Relaxed) == 10
        })
        .await;
        // 26 messages into room for 10; under drop-oldest, 9 accepted ones were dropped later.
        assert_eq!(st.queued.load(Ordering::Relaxed), 10, "{overflow:?}");
        assert_eq!(st.dropped.load(Ordering::Relaxed), 16, "{overflow:?}");
        assert_eq!(st.queue_full.load(Ordering::Relaxed), 1, "{overflow:?}");
        m.restart();
        let got: Vec<String> = collect(&mut remote, 10, 30)
            .await
            .iter()
            .map(|p| String::from_utf8_lossy(&p.payload).into_owned())
            .collect();
        let mut expected = vec!["first".to_owned()];
        expected.extend(kept.map(|i| i.to_string()));
        assert_eq!(got, expected, "{overflow:?}");
        wait_until(10, "the queue to drain", || {
            st.queued.load(Ordering::Relaxed) == 0
        })
        .await;
        assert_eq!(
            st.queue_full.load(Ordering::Relaxed),
            0,
            "room again: {overflow:?}"
        );
        bridge.shutdown().await;
        watcher.disconnect().await;
    }
}

fn retained_publish(broker: &Broker, topic: &str, payload: &str) {
    let mut p = Publish::new(
        MqttString::try_from(topic).expect("topic"),
        Bytes::from(payload.to_owned()),
    );
    p.retain = true;
    broker.publish(p);
}

/// Starts a bridge on `dir`, retrying while the previous one still holds the queue file.
async fn start_again(broker: &Broker, s: &BridgeSettings) -> Bridge {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match Bridge::start(broker.clone(), s.clone()).await {
            Ok(b) => return b,
            Err(e) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the bridge does not start again: {e}"
                );
                tokio::task::yield_now().await;
            }
        }
    }
}

/// The retained store (the UNS) is replayed into the bridge at every start: a restart sends
/// upstream only the retained values that changed meanwhile, not the whole snapshot again;
/// and the counters continue where they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_sends_only_changed_retained_values_and_keeps_counters() {
    if !mosquitto_available() {
        return;
    }
    const TAGS: usize = 20;
    let m = Mosquitto::start();
    let (broker, _) = our_broker().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let (watcher, mut remote) = remote_watcher(&m.addr(), "site1/#").await;
    for i in 0..TAGS {
        retained_publish(&broker, &format!("acme/tag{i}"), "v1");
    }
    let s = settings(&m.addr(), dir.path(), ProtocolVersion::V5);
    let bridge = Bridge::start(broker.clone(), s.clone())
        .await
        .expect("bridge");
    connected(bridge.stats()).await;
    let first = collect(&mut remote, TAGS, 10).await;
    assert!(first.iter().all(|p| p.payload == Bytes::from_static(b"v1")));
    // A live retained change while the bridge runs goes up once, and is not a change at the
    // next start either (the live copy and the replayed one are the same message).
    retained_publish(&broker, "acme/tag0", "live");
    let live = collect(&mut remote, 1, 10).await.remove(0);
    assert_eq!(
        (live.topic.as_str(), &live.payload[..]),
        ("site1/acme/tag0", &b"live"[..])
    );
    wait_until(10, "the snapshot to be acknowledged", || {
        bridge.stats().sent.load(Ordering::Relaxed) == TAGS as u64 + 1
    })
    .await;
    bridge.shutdown().await;

    // While the bridge is down, two values change.
    retained_publish(&broker, "acme/tag3", "v2");
    retained_publish(&broker, "acme/tag7", "v2");
    let bridge = start_again(&broker, &s).await;
    let st = bridge.stats().clone();
    assert_eq!(
        st.sent.load(Ordering::Relaxed),
        TAGS as u64 + 1,
        "counters continue after a restart"
    );
    assert_eq!(st.enqueued.load(Ordering::Relaxed), TAGS as u64 + 1);
    assert_eq!(st.connects.load(Ordering::Relaxed), 1);
    connected(&st).await;
    // A marker after the replay: everything the restart sent arrives before it.
    local_publish(&broker, "acme/marker", "end");
    let mut after = Vec::new();
    loop {
        let p = collect(&mut remote, 1, 10).await.remove(0);
        if p.topic == "site1/acme/marker" {
            break;
        }
        after.push(format!(
            "{}={}",
            p.topic,
            String::from_utf8_lossy(&p.payload)
        ));
    }
    after.sort();
    assert_eq!(
        after,
        ["site1/acme/tag3=v2", "site1/acme/tag7=v2"],
        "only the changed retained values go upstream again"
    );
    assert_eq!(st.unchanged.load(Ordering::Relaxed), (TAGS - 2) as u64);
    wait_until(10, "the counters to count the second run", || {
        st.sent.load(Ordering::Relaxed) == TAGS as u64 + 4
            && st.connects.load(Ordering::Relaxed) == 2
    })
    .await;
    assert_eq!(st.enqueued.load(Ordering::Relaxed), TAGS as u64 + 4);
    bridge.shutdown().await;
    watcher.disconnect().await;
}
