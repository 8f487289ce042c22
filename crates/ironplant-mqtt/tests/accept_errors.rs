//! The plain MQTT listener outlives running out of file descriptors (a connection flood): the
//! failed accepts are counted and retried, and once descriptors are free again a client gets
//! its CONNACK. Its own test binary: it lowers this process's descriptor limit (`prlimit`).

mod raw_client;

use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ironplant_mqtt::codec::ProtocolVersion;
use ironplant_mqtt::BrokerConfig;
use raw_client::Client;
use tokio::net::TcpStream;

fn set_nofile(soft: u64, hard: &str) {
    let status = Command::new("prlimit")
        .arg(format!("--pid={}", std::process::id()))
        .arg(format!("--nofile={soft}:{hard}"))
        .status()
        .expect("prlimit (util-linux) runs");
    assert!(status.success(), "prlimit --nofile={soft}:{hard} failed");
}

fn nofile() -> (u64, String) {
    let limits = std::fs::read_to_string("/proc/self/limits").expect("/proc/self/limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("a nofile line");
    let mut fields = line.split_whitespace().skip(3);
    let soft = fields
        .next()
        .and_then(|f| f.parse().ok())
        .expect("soft limit");
    let hard = fields.next().expect("hard limit").to_owned();
    (soft, hard)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_survives_running_out_of_file_descriptors() {
    let (broker, addr) = raw_client::start(BrokerConfig::default()).await;
    let (soft, hard) = nofile();
    let open = std::fs::read_dir("/proc/self/fd").expect("fds").count() as u64;
    set_nofile(open + 20, &hard);

    // Connect until the process has no descriptor left; the broker's accepts then fail.
    let mut held = Vec::new();
    while let Ok(s) = TcpStream::connect(addr).await {
        held.push(s);
        assert!(held.len() < 1000, "the lowered limit did not apply");
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while broker.stats().accept_errors.load(Ordering::Relaxed) == 0 {
        assert!(Instant::now() < deadline, "no failed accept was counted");
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // Descriptors free again: the same listener serves a new client.
    drop(held);
    set_nofile(soft, &hard);
    let client = tokio::time::timeout(
        Duration::from_secs(10),
        Client::connect(addr, "after-the-flood", ProtocolVersion::V311, None),
    )
    .await
    .expect("CONNACK after the flood: the listener is still up");
    drop(client);
}
