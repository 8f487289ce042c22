//! Start-up order: every bus subscriber (historian, UNS) exists before the first source starts,
//! so the first poll's samples reach the UNS as well as the historian, on every start.

use std::sync::Arc;
use std::time::Duration;

use ironplant_core::Timestamp;
use ironplant_modbus::server::{serve, RegisterBank, UnitImage};
use ironplant_mqtt::{Broker, BrokerConfig};
use ironplant_runtime::start_platform;
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::time::Instant;

const LEVEL: &str = "acme/site/area/line/cell/plc/level";
const RUNNING: &str = "acme/site/area/line/cell/plc/running";

fn config(addr: std::net::SocketAddr) -> String {
    format!(
        r#"
[[device]]
id = "plc"
protocol = "modbus-tcp"
address = "{addr}"
poll_interval = "5ms"

[[tag]]
path = "{LEVEL}"
device = "plc"
modbus = {{ table = "holding", address = 0, type = "u16" }}

[[tag]]
path = "{RUNNING}"
device = "plc"
modbus = {{ table = "coil", address = 0 }}
"#
    )
}

/// The `ts` of a UNS message's JSON payload.
fn uns_ts(payload: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(payload).expect("UNS payload is JSON");
    v["ts"].as_str().expect("ts").to_owned()
}

/// The values never change, so the UNS publishes each tag once: on the first sample it sees.
/// That sample must be the first poll's, the one the historian stored first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_uns_publishes_the_first_poll_on_every_start() {
    let bank = Arc::new(Mutex::new(RegisterBank::default()));
    let mut image = UnitImage::new(16);
    image.holding[0] = 425;
    image.coils[0] = true;
    bank.lock().units.insert(1, image);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(serve(listener, bank.clone()));
    let cfg = ironplant_runtime::config::parse("test.toml", &config(addr)).expect("valid config");

    for run in 0..20 {
        let dir = tempfile::tempdir().expect("temp dir");
        let broker = Broker::new(BrokerConfig::default());
        let mut watch = broker
            .subscribe_internal("watch", "acme/#", 1024)
            .expect("subscribe");
        let started = start_platform(&cfg, Some(dir.path()), Some(&broker)).expect("start");
        for name in ["historian", "uns"] {
            assert!(
                started.subscribers_at_start.iter().any(|s| s == name),
                "run {run}: {name} subscribed after the sources started: {:?}",
                started.subscribers_at_start
            );
        }
        let rt = started.runtime.clone();
        let historian = rt.historian.clone().expect("historian enabled");
        let mut first_uns = std::collections::HashMap::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while first_uns.len() < 2 {
            let left = deadline.saturating_duration_since(Instant::now());
            let p = tokio::time::timeout(left, watch.recv())
                .await
                .unwrap_or_else(|_| panic!("run {run}: no UNS message for every tag"))
                .expect("broker alive");
            first_uns
                .entry(p.topic.to_string())
                .or_insert_with(|| uns_ts(&p.payload));
        }
        for path in [LEVEL, RUNNING] {
            let first_stored = loop {
                let page = historian
                    .raw(
                        path,
                        Timestamp(0),
                        Timestamp(Timestamp::now().0 + 3_600_000_000),
                        1,
                    )
                    .expect("query");
                if let Some(p) = page.points.first() {
                    break p.ts;
                }
                assert!(Instant::now() < deadline, "run {run}: nothing stored");
                tokio::time::sleep(Duration::from_millis(5)).await;
            };
            assert_eq!(
                first_uns[path],
                first_stored.to_rfc3339(),
                "run {run}: {path}: the UNS did not publish the first poll's sample"
            );
        }
        drop(rt);
        started.shutdown(Duration::from_secs(5)).await;
    }
    server.abort();
}
