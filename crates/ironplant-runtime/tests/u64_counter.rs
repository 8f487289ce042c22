//! A u64 register at u64::MAX, from the wire to every rendering: the poller decodes it exactly
//! (not as the float 1.8446744073709552e19 under `value_type: int`), the UNS payload carries the
//! exact integer, and the historian stores and returns it bit for bit, in memory and in chunks.

use std::sync::Arc;
use std::time::Duration;

use ironplant_core::{Timestamp, Value, ValueType};
use ironplant_modbus::server::{serve, RegisterBank, UnitImage};
use ironplant_runtime::Runtime;
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::time::Instant;

const TOTAL: &str = "acme/site/area/line/cell/meter/total";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_u64_register_at_its_maximum_is_exact_everywhere() {
    let bank = Arc::new(Mutex::new(RegisterBank::default()));
    let mut image = UnitImage::new(8);
    image.input[0..4].copy_from_slice(&[0xFFFF; 4]);
    bank.lock().units.insert(1, image);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(serve(listener, bank));

    let config = format!(
        r#"
[[device]]
id = "meter"
protocol = "modbus-tcp"
address = "{addr}"
poll_interval = "50ms"

[[tag]]
path = "{TOTAL}"
device = "meter"
modbus = {{ table = "input", address = 0, type = "u64" }}
"#
    );
    let cfg = ironplant_runtime::config::parse("meter.toml", &config).expect("valid config");
    assert_eq!(cfg.tags[0].value_type, ValueType::Int);
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = Runtime::start(&cfg, Some(dir.path())).expect("start");
    let meta = rt.namespace.lookup(TOTAL).expect("tag");
    assert_eq!(meta.value_type, ValueType::Int);

    let end = Instant::now() + Duration::from_secs(5);
    let sample = loop {
        if let Some(s) = rt.bus.current(meta.id).filter(|s| s.quality.is_good()) {
            break s;
        }
        assert!(Instant::now() < end, "no Good sample within 5 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(sample.value, Value::U64(u64::MAX));
    assert_eq!(sample.value.value_type(), Some(ValueType::Int));

    // The UNS message: an exact JSON integer.
    let payload = ironplant_runtime::uns::payload(&sample, None);
    let text = String::from_utf8(payload).expect("UTF-8");
    assert!(text.contains(r#""value":18446744073709551615"#), "{text}");

    // The historian: from the memtable, then from a chunk.
    let h = rt.historian.clone().expect("historian");
    let end = Instant::now() + Duration::from_secs(5);
    let read = |h: &ironplant_historian::Historian| {
        h.raw(TOTAL, Timestamp(0), Timestamp::now(), 1000)
            .expect("raw")
            .points
    };
    while read(&h).is_empty() {
        assert!(Instant::now() < end, "nothing historised within 5 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(read(&h).iter().all(|p| p.value == Value::U64(u64::MAX)));
    let h2 = h.clone();
    tokio::task::spawn_blocking(move || h2.flush_blocking())
        .await
        .expect("join")
        .expect("flush");
    let points = read(&h);
    assert!(!points.is_empty());
    assert!(
        points.iter().all(|p| p.value == Value::U64(u64::MAX)),
        "{:?}",
        points.first()
    );
    rt.shutdown();
    server.abort();
}
