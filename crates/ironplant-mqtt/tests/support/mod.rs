//! Test support for the client and bridge tests: Debian's Mosquitto broker (a third-party
//! peer) on a free port with its own config, stopped and restarted on the same port; and
//! waiting on a condition with a deadline.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use ironplant_mqtt::client::Event;

pub const MOSQUITTO: &str = "/usr/sbin/mosquitto";

/// Whether Mosquitto is installed: skipped locally with a message, but a failure under CI=true
/// (`.ci/test` installs it when run as root).
pub fn mosquitto_available() -> bool {
    if Path::new(MOSQUITTO).exists() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{MOSQUITTO} is required under CI=true; run the tests through .ci/test (apt-get install mosquitto)");
    }
    eprintln!(
        "SKIPPED: {MOSQUITTO} not installed; run .ci/test as root or apt-get install mosquitto"
    );
    false
}

/// A Mosquitto process on 127.0.0.1:`port`, with persistence in its own temp dir so a
/// restart keeps persistent sessions (it saves them on SIGTERM).
pub struct Mosquitto {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Mosquitto {
    pub fn start() -> Mosquitto {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let dir = tempfile::Builder::new()
            .prefix("ironplant-test-mosquitto-")
            .tempdir()
            .expect("temp dir");
        let mut m = Mosquitto {
            child: None,
            port,
            dir,
        };
        m.restart();
        m
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn conf(&self) -> PathBuf {
        let conf = self.dir.path().join("mosquitto.conf");
        // `user root`: when the tests run as root, keep root so Mosquitto can write its
        // database into our temp dir (it is ignored otherwise).
        let text = format!(
            "listener {} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}/\nautosave_interval 0\nmax_queued_messages 100000\nuser root\nlog_dest file {}/mosquitto.log\nlog_type all\n",
            self.port,
            self.dir.path().display(),
            self.dir.path().display()
        );
        std::fs::write(&conf, text).expect("write mosquitto.conf");
        conf
    }

    /// Starts it (again) on the same port and waits until it accepts connections.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "mosquitto is already running");
        let conf = self.conf();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let mut child = Command::new(MOSQUITTO)
                .arg("-c")
                .arg(&conf)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start mosquitto");
            // It may fail to bind while the old socket lingers; then try again.
            loop {
                if std::net::TcpStream::connect(self.addr()).is_ok() {
                    self.child = Some(child);
                    return;
                }
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "mosquitto did not accept connections on {} within 10 s; log: {}",
                    self.addr(),
                    self.log()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            assert!(
                std::time::Instant::now() < deadline,
                "mosquitto could not start on {}; log: {}",
                self.addr(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops it with SIGTERM (it saves its sessions) and waits for the process to end.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Polls `cond` until it holds or `secs` pass.
pub async fn wait_until(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The next event, within `secs`.
pub async fn next_event(events: &mut mpsc::Receiver<Event>, secs: u64) -> Event {
    tokio::time::timeout(Duration::from_secs(secs), events.recv())
        .await
        .expect("an event in time")
        .expect("the event channel is open")
}

/// Skips events until `pick` returns something, within `secs` in all.
pub async fn wait_event<T>(
    events: &mut mpsc::Receiver<Event>,
    secs: u64,
    what: &str,
    mut pick: impl FnMut(&Event) -> Option<T>,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, events.recv()).await {
            Ok(Some(e)) => {
                if let Some(t) = pick(&e) {
                    return t;
                }
            }
            Ok(None) => panic!("event channel closed while waiting for {what}"),
            Err(_) => panic!("timed out waiting for {what}"),
        }
    }
}

/// Our broker on an ephemeral port.
pub async fn our_broker() -> (ironplant_mqtt::Broker, SocketAddr) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let broker = ironplant_mqtt::Broker::new(ironplant_mqtt::BrokerConfig::default());
    let b = broker.clone();
    tokio::spawn(async move { b.serve(listener).await });
    (broker, addr)
}
