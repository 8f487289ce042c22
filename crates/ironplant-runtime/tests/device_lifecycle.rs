//! A device goes away and comes back: its tags go Bad(CommFailure) and recover without a restart.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ironplant_core::{QualityLevel, QualityReason, Value};
use ironplant_modbus::server::{serve, RegisterBank, UnitImage};
use ironplant_runtime::Runtime;
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::time::Instant;

fn config(addr: SocketAddr) -> String {
    format!(
        r#"
[[device]]
id = "plc"
protocol = "modbus-tcp"
address = "{addr}"
poll_interval = "300ms"
timeout = "200ms"
reconnect_max = "200ms"

[[tag]]
path = "acme/site/area/line/cell/plc/level"
device = "plc"
min = 0.0
max = 100.0
modbus = {{ table = "holding", address = 0, type = "u16", scale = 0.1 }}

[[tag]]
path = "acme/site/area/line/cell/plc/running"
device = "plc"
writable = true
modbus = {{ table = "coil", address = 0 }}

[[device]]
id = "ghost"
protocol = "modbus-tcp"
address = "127.0.0.1:1"
poll_interval = "200ms"

[[tag]]
path = "acme/site/area/line/cell/ghost/x"
device = "ghost"
modbus = {{ table = "input", address = 0 }}
"#
    )
}

async fn wait_until(what: &str, deadline: Duration, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + deadline;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_go_bad_when_the_device_dies_and_recover_when_it_returns() {
    let bank = Arc::new(Mutex::new(RegisterBank::default()));
    let mut image = UnitImage::new(16);
    image.holding[0] = 425;
    bank.lock().units.insert(1, image);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(serve(listener, bank.clone()));

    let cfg = ironplant_runtime::config::parse("test.toml", &config(addr)).expect("valid config");
    let rt = Runtime::start(&cfg, None).expect("start");
    let level = rt
        .namespace
        .lookup("acme/site/area/line/cell/plc/level")
        .expect("tag")
        .id;
    let ghost = rt
        .namespace
        .lookup("acme/site/area/line/cell/ghost/x")
        .expect("tag")
        .id;
    let bus = rt.bus.clone();

    let good_value = |v: f64| {
        let bus = bus.clone();
        move || {
            bus.current(level)
                .is_some_and(|s| s.quality.is_good() && s.value == Value::Float(v))
        }
    };
    wait_until(
        "level = 42.5 Good",
        Duration::from_secs(5),
        good_value(42.5),
    )
    .await;

    // The unreachable device is Bad and does not hold up the other one.
    let s = bus.current(ghost).expect("ghost has a sample");
    assert_eq!(
        (s.quality.level, s.quality.reason),
        (QualityLevel::Bad, QualityReason::CommFailure)
    );

    // Writes reach the device.
    rt.write("acme/site/area/line/cell/plc/running", Value::Bool(true))
        .await
        .expect("write");
    assert!(bank.lock().units[&1].coils[0]);
    assert!(
        rt.write("acme/site/area/line/cell/plc/level", Value::Float(1.0))
            .await
            .is_err(),
        "not writable"
    );

    // Kill the device: Bad(CommFailure) within two poll intervals, keeping the last value.
    server.abort();
    let _ = server.await;
    let killed = Instant::now();
    wait_until("level Bad", Duration::from_secs(5), || {
        bus.current(level)
            .is_some_and(|s| s.quality.reason == QualityReason::CommFailure)
    })
    .await;
    // Two poll intervals, plus slack for a loaded 2-core machine.
    assert!(
        killed.elapsed() <= Duration::from_millis(2 * 300 + 200),
        "took {:?}",
        killed.elapsed()
    );
    let s = bus.current(level).expect("sample");
    assert_eq!(
        (s.quality.level, s.value),
        (QualityLevel::Bad, Value::Float(42.5))
    );

    // Bring it back on the same port with a new value: Good again, no restart.
    bank.lock().units.get_mut(&1).expect("unit").holding[0] = 500;
    let listener = TcpListener::bind(addr).await.expect("rebind");
    let _server = tokio::spawn(serve(listener, bank.clone()));
    wait_until(
        "level = 50 Good again",
        Duration::from_secs(5),
        good_value(50.0),
    )
    .await;
    assert!(rt.metrics.poll_errors("plc") >= 1);
    assert_eq!(rt.metrics.device_connected("plc"), Some(true));
}
