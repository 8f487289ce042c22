//! The HTTPS listener of the real binary under a resource-exhaustion attack: 250 idle TCP
//! connections and half-open TLS handshakes from several source addresses (127.0.0.2…,
//! all loopback on Linux), slow request headers, a body that never arrives, a kept-alive
//! connection left idle. Each is closed after its timeout from `[http]`; while the attack
//! holds every unreserved slot, the administrator on 127.0.0.1 is still served; afterwards a
//! legitimate client is too; refusals are counted in `/metrics` and audited once per address.
//! Also: the `curl` line the demo prints for the first-start admin works as printed.

mod common;

use common::pump;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value as Json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};

const BIN: &str = env!("CARGO_BIN_EXE_ironplant");

/// Unreserved slots: `max_connections` - `reserved_connections`.
const MAX: usize = 210;
const RESERVED: usize = 10;
const PER_ADDRESS: usize = 50;
const ATTACKERS: [&str; 5] = [
    "127.0.0.2",
    "127.0.0.3",
    "127.0.0.4",
    "127.0.0.5",
    "127.0.0.6",
];
/// A legitimate client that is not on the reserve list.
const LEGIT: &str = "127.0.0.8";

struct Proc {
    child: Child,
    lines: mpsc::Receiver<String>,
    _errs: mpsc::Receiver<String>,
}

impl Proc {
    fn start(args: &[&str], dir: &Path) -> Proc {
        let mut child = Command::new(BIN)
            .env("IRONPLANT_MQTTS", "127.0.0.1:0")
            .env("IRONPLANT_OPCUA", "127.0.0.1:0")
            .args(args)
            .current_dir(dir)
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start ironplant");
        let lines = pump(child.stdout.take().expect("stdout"));
        let errs = pump(child.stderr.take().expect("stderr"));
        Proc {
            child,
            lines,
            _errs: errs,
        }
    }

    fn line_with(&self, marker: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no line with {marker:?}"));
            if line.contains(marker) {
                return line;
            }
        }
    }

    fn address_after(&self, marker: &str) -> SocketAddr {
        let line = self.line_with(marker);
        let word = line
            .split_whitespace()
            .find(|w| w.contains("127.0.0.1:"))
            .expect("an address");
        let addr = word.rsplit("://").next().unwrap_or(word);
        addr.split('/')
            .next()
            .and_then(|a| a.parse().ok())
            .expect("host:port")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn connect_from(src: &str, to: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpSocket::new_v4()?;
    s.bind(SocketAddr::new(src.parse().expect("address"), 0))?;
    s.connect(to).await
}

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

async fn tls_from(api: &common::Api, src: &str, to: SocketAddr) -> std::io::Result<Tls> {
    let tcp = connect_from(src, to).await?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
    tokio_rustls::TlsConnector::from(api.tls.clone())
        .connect(name, tcp)
        .await
}

/// GET `path` with the API's token from source address `src`: (status, body), or status 0
/// when the connection was refused or failed.
async fn get_from(api: &common::Api, src: &str, to: SocketAddr, path: &str) -> (u16, String) {
    let exchange = async {
        let mut s = tls_from(api, src, to).await?;
        s.write_all(
            format!(
                "GET {path} HTTP/1.1\r\nHost: {to}\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
                api.token
            )
            .as_bytes(),
        )
        .await?;
        let mut raw = Vec::new();
        match s.read_to_end(&mut raw).await {
            Ok(_) => Ok(raw),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => Ok(raw),
            Err(e) => Err(e),
        }
    };
    let raw = match tokio::time::timeout(Duration::from_secs(10), exchange).await {
        Ok(Ok(raw)) => String::from_utf8_lossy(&raw).into_owned(),
        Ok(Err(e)) => return (0, e.to_string()),
        Err(_) => return (0, "timed out".into()),
    };
    let Some((head, body)) = raw.split_once("\r\n\r\n") else {
        return (0, raw);
    };
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, body.to_owned())
}

/// Waits until the server closes `s` (EOF or reset), at most until `deadline`; any bytes it
/// sends before (a TLS alert, an HTTP error) are skipped. Returns when it closed.
async fn closed_by_server<S: tokio::io::AsyncRead + Unpin>(
    s: &mut S,
    deadline: Instant,
) -> Option<Instant> {
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return Some(Instant::now()),
            Ok(Ok(_)) => continue,
            Err(_) => return None,
        }
    }
}

fn metric(text: &str, line_prefix: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(line_prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {line_prefix:?} in /metrics:\n{text}"))
}

/// The start of a TLS ClientHello that announces 512 bytes and sends 6: a handshake that
/// never completes.
const HALF_HELLO: [u8; 11] = [
    0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_half_open_connections_are_closed_and_the_admin_is_still_served() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    std::fs::write(
        d.join("p.toml"),
        format!(
            r#"[sparkplug]
host_id = "limits"

[http]
handshake_timeout = "5s"
header_read_timeout = "1500ms"
idle_timeout = "3s"
max_connections = {MAX}
max_connections_per_address = {PER_ADDRESS}
reserved_connections = {RESERVED}
reserved_for = ["127.0.0.1"]
max_body_size = 65536
"#
        ),
    )
    .expect("config");
    let p = Proc::start(
        &[
            "serve",
            "--config",
            "p.toml",
            "--http",
            "127.0.0.1:0",
            "--data-dir",
            "data",
        ],
        d,
    );
    let http = p.address_after("HTTP API:");
    let admin = common::api_for(
        &http.to_string(),
        &d.join("data"),
        ironplant_security::Role::Admin,
    );
    let (status, _) = get_from(&admin, LEGIT, http, "/api/v1/tags").await;
    assert_eq!(status, 200, "a legitimate client before the attack");

    // The attack: 5 addresses × 50 connections, alternately idle TCP and half-open TLS.
    let mut attack = Vec::new();
    for src in ATTACKERS {
        for i in 0..PER_ADDRESS {
            let mut s = connect_from(src, http).await.expect("connect");
            if i % 2 == 1 {
                // The server may already have closed a refused one.
                let _ = s.write_all(&HALF_HELLO).await;
            }
            attack.push(s);
        }
    }
    // One more from the first address: over its own limit.
    let mut over = connect_from(ATTACKERS[0], http).await.expect("connect");
    let attacked = Instant::now();

    // While every unreserved slot is held: the administrator on 127.0.0.1 is served...
    let admitted = MAX - RESERVED;
    let deadline = Instant::now() + Duration::from_secs(4);
    let metrics = loop {
        let (status, text) = get_from(&admin, "127.0.0.1", http, "/metrics").await;
        assert_eq!(status, 200, "the admin is served during the attack: {text}");
        // The admin's connection is accepted after every attacking one (one accept loop), so
        // these counts are final; the probes before may still hold a slot or two.
        if metric(&text, "ironplant_http_connections_open ") as usize >= admitted {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "the server never held {admitted} connections:\n{text}"
        );
    };
    assert_eq!(
        metric(
            &metrics,
            "ironplant_http_connections_refused_total{reason=\"per_address\"} "
        ),
        1
    );
    let refused = metric(
        &metrics,
        "ironplant_http_connections_refused_total{reason=\"total\"} ",
    ) as usize;
    let attack_total = ATTACKERS.len() * PER_ADDRESS;
    assert!(
        (attack_total - admitted..=attack_total - admitted + 2).contains(&refused),
        "{refused} refused of {attack_total}, {admitted} slots"
    );
    // ... and anyone else is refused at once, without TLS work.
    let (status, why) = get_from(&admin, LEGIT, http, "/api/v1/tags").await;
    assert_eq!(status, 0, "refused while the attack holds the slots: {why}");
    assert!(
        attacked.elapsed() < Duration::from_secs(5),
        "the checks above must run within the handshake timeout; the machine is too slow"
    );
    assert!(
        closed_by_server(&mut over, Instant::now() + Duration::from_secs(1))
            .await
            .is_some(),
        "over the per-address limit: closed at once"
    );

    // Every attacking connection is closed by the handshake timeout (or was refused).
    let deadline = attacked + Duration::from_secs(15);
    for (i, s) in attack.iter_mut().enumerate() {
        assert!(
            closed_by_server(s, deadline).await.is_some(),
            "attack connection {i} still open after 15 s"
        );
    }
    // Then the legitimate client is served again.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = get_from(&admin, LEGIT, http, "/api/v1/tags").await;
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the legitimate client is still refused: {status} {body}"
        );
    }

    // Slow clients after the TLS handshake, from one more address.
    let src = "127.0.0.9";
    // (a) sends nothing; (b) half a request head; (c) a kept-alive connection, idle after one
    // answered request: all ended by header_read_timeout.
    let mut silent = tls_from(&admin, src, http).await.expect("tls");
    let mut half_head = tls_from(&admin, src, http).await.expect("tls");
    half_head
        .write_all(format!("GET /api/v1/tags HTTP/1.1\r\nHost: {http}\r\n").as_bytes())
        .await
        .expect("write");
    half_head.flush().await.expect("flush");
    let mut kept = tls_from(&admin, src, http).await.expect("tls");
    kept.write_all(
        format!(
            "GET /healthz HTTP/1.1\r\nHost: {http}\r\nAuthorization: Bearer {}\r\n\r\n",
            admin.token
        )
        .as_bytes(),
    )
    .await
    .expect("write");
    kept.flush().await.expect("flush");
    let mut first = vec![0u8; 4096];
    let n = kept.read(&mut first).await.expect("a response");
    assert!(
        String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&first[..n])
    );
    // (d) a body announced and never sent: ended by idle_timeout.
    let mut no_body = tls_from(&admin, src, http).await.expect("tls");
    no_body
        .write_all(
            format!(
                "POST /api/v1/tokens HTTP/1.1\r\nHost: {http}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"label\"",
                admin.token
            )
            .as_bytes(),
        )
        .await
        .expect("write");
    no_body.flush().await.expect("flush");
    let slow_start = Instant::now();
    let deadline = slow_start + Duration::from_secs(15);
    for (what, s) in [
        ("silent", &mut silent),
        ("half a head", &mut half_head),
        ("kept alive", &mut kept),
        ("no body", &mut no_body),
    ] {
        assert!(
            closed_by_server(s, deadline).await.is_some(),
            "{what}: still open after 15 s"
        );
    }

    let (status, text) = get_from(&admin, "127.0.0.1", http, "/metrics").await;
    assert_eq!(status, 200);
    let closed = |reason: &str| {
        metric(
            &text,
            &format!("ironplant_http_connections_closed_total{{reason=\"{reason}\"}} "),
        )
    };
    assert_eq!(
        closed("handshake_timeout") as usize,
        attack_total - refused,
        "every admitted attacking connection, closed by the handshake timeout"
    );
    assert_eq!(closed("header_timeout"), 3, "{text}");
    assert_eq!(closed("idle_timeout"), 1, "{text}");

    // Refusals are audited at most once per address and minute.
    let (status, body) = get_from(
        &admin,
        "127.0.0.1",
        http,
        "/api/v1/audit?kind=acl_denied&limit=1000",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let audit: Json = serde_json::from_str(&body).expect("JSON");
    let records: Vec<&Json> = audit["records"]
        .as_array()
        .expect("records")
        .iter()
        .filter(|r| {
            r["action"]
                .as_str()
                .is_some_and(|a| a.starts_with("http:too_many_connections"))
        })
        .collect();
    let mut sources: Vec<&str> = records
        .iter()
        .filter_map(|r| r["source"].as_str())
        .collect();
    let n = sources.len();
    sources.sort_unstable();
    sources.dedup();
    assert_eq!(n, sources.len(), "one record per address: {records:?}");
    assert!(sources.contains(&LEGIT), "{records:?}");
    assert!(
        records.iter().any(|r| r["source"] == "127.0.0.2"
            && r["action"] == "http:too_many_connections_from_address"),
        "{records:?}"
    );
}

#[test]
fn the_printed_first_start_curl_line_works() {
    let have = Command::new("curl").arg("--version").output().is_ok();
    if !common::peer_available("curl", have) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let demo = Proc::start(
        &["demo", "--http", "127.0.0.1:0", "--data-dir", "data"],
        dir.path(),
    );
    let line = demo.line_with("curl ");
    let line = line.trim();
    assert!(line.starts_with("curl "), "{line}");
    // From another directory: the printed paths must not depend on where the demo runs.
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let out = Command::new("sh")
        .args(["-c", line])
        .current_dir(elsewhere.path())
        .output()
        .expect("run sh");
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{line}\n{body}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: Json = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert!(
        json["count"].as_u64().is_some_and(|n| n > 0),
        "the tags, not an error: {body}"
    );
}
