//! Interop: Debian's `mosquitto_pub` and `mosquitto_sub` (third-party clients) against our broker:
//! QoS 2 retained publish read back by a later subscriber, and a persistent session that
//! collects QoS 1 messages while its client is away, in both protocol versions.
//!
//! `.ci/test` installs `mosquitto-clients`; without them the test is skipped locally with a
//! message and fails under CI=true.

use std::process::{Command, Output};

use ironplant_mqtt::{Broker, BrokerConfig};

fn have_clients() -> bool {
    let have = Command::new("mosquitto_pub").arg("--help").output().is_ok();
    if !have {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "mosquitto_pub/mosquitto_sub are required under CI=true; run the tests through .ci/test"
        );
        eprintln!("SKIPPED: mosquitto-clients not installed; run .ci/test to install the peers");
    }
    have
}

/// Runs a mosquitto client (bounded by `timeout` so a broker bug cannot hang the test).
fn run(tool: &str, port: u16, args: &[&str]) -> Output {
    let out = Command::new("timeout")
        .arg("10")
        .arg(tool)
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("run the mosquitto client");
    assert!(
        out.status.success(),
        "{tool} {args:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn start() -> (tokio::runtime::Runtime, u16) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind an ephemeral port");
    let port = listener.local_addr().expect("local address").port();
    let broker = Broker::new(BrokerConfig::default());
    rt.spawn(async move { broker.serve(listener).await });
    (rt, port)
}

#[test]
fn retained_qos2_publish_reaches_a_later_subscriber() {
    if !have_clients() {
        return;
    }
    let (_rt, port) = start();
    for (version, topic) in [("mqttv311", "plant/v3/speed"), ("mqttv5", "plant/v5/speed")] {
        run(
            "mosquitto_pub",
            port,
            &["-V", version, "-q", "2", "-r", "-t", topic, "-m", "412.5"],
        );
        let out = run(
            "mosquitto_sub",
            port,
            &["-V", version, "-q", "1", "-t", topic, "-C", "1", "-v"],
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            format!("{topic} 412.5"),
            "{version}"
        );
    }
}

#[test]
fn a_persistent_session_collects_messages_while_away() {
    if !have_clients() {
        return;
    }
    let (_rt, port) = start();
    for version in ["mqttv311", "mqttv5"] {
        let id = format!("keeper-{version}");
        let filter = format!("away/{version}/#");
        // Subscribe with a persistent session (-c; for 5.0 a session expiry), then leave (-E).
        let mut session = vec!["-V", version, "-c", "-i", &id, "-q", "1", "-t", &filter];
        if version == "mqttv5" {
            session.extend(["-x", "300"]);
        }
        let mut first = session.clone();
        first.push("-E");
        run("mosquitto_sub", port, &first);
        let topics: Vec<String> = (1..=3).map(|i| format!("away/{version}/m{i}")).collect();
        for (i, t) in topics.iter().enumerate() {
            let body = format!("m{}", i + 1);
            run(
                "mosquitto_pub",
                port,
                &["-V", version, "-q", "1", "-t", t, "-m", &body],
            );
        }
        let mut back = session.clone();
        back.extend(["-C", "3", "-v"]);
        let out = run("mosquitto_sub", port, &back);
        let got: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect();
        let want: Vec<String> = topics
            .iter()
            .enumerate()
            .map(|(i, t)| format!("{t} m{}", i + 1))
            .collect();
        assert_eq!(got, want, "{version}: queued while away, in order");
    }
}
