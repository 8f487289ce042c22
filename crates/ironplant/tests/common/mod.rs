//! Shared by the tests of the binary: an HTTPS client for the platform's API that trusts the
//! CA of its data directory and sends an API token, as a real client must.

#![allow(dead_code)]

use std::io::{BufRead as _, BufReader, Read, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::sync::{mpsc, Arc};
use std::time::Duration;

/// The platform's HTTPS API as a client sees it.
pub struct Api {
    pub addr: String,
    pub tls: Arc<rustls::ClientConfig>,
    pub token: String,
}

/// Trusts the CA in `data_dir` and makes a token for `admin` with `role`, through the
/// security library (the same files `ironplant token create` writes; safe while the
/// platform runs).
pub fn api_for(addr: &str, data_dir: &Path, role: ironplant_security::Role) -> Api {
    let sec = ironplant_security::Security::open(
        data_dir,
        Arc::new(ironplant_security::SystemClock),
        Default::default(),
    )
    .expect("open the platform's security state");
    let token = sec
        .users
        .create_token("admin", Some(role), Duration::from_secs(3600), "test", None)
        .expect("create a token")
        .token;
    let tls = ironplant_security::client_config(sec.ca.ca_pem(), None).expect("client config");
    Api {
        addr: addr.to_owned(),
        tls: Arc::new(tls),
        token,
    }
}

/// GET over TLS with the token: (status, body), or status 0 when the exchange failed.
pub fn try_get(api: &Api, path: &str) -> (u16, String) {
    try_request(api, "GET", path, None)
}

/// `method` over TLS with the token and an optional JSON body: (status, body), or status 0
/// when the exchange failed.
pub fn try_request(api: &Api, method: &str, path: &str, json: Option<&str>) -> (u16, String) {
    let exchange = || -> std::io::Result<Vec<u8>> {
        let s = TcpStream::connect(&api.addr)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        let name =
            rustls::pki_types::ServerName::try_from("127.0.0.1").map_err(std::io::Error::other)?;
        let conn =
            rustls::ClientConnection::new(api.tls.clone(), name).map_err(std::io::Error::other)?;
        let mut s = rustls::StreamOwned::new(conn, s);
        let body = match json {
            Some(j) => format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{j}",
                j.len()
            ),
            None => "\r\n".to_owned(),
        };
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nConnection: close\r\n{body}",
            api.addr, api.token
        )?;
        let mut raw = Vec::new();
        match s.read_to_end(&mut raw) {
            Ok(_) => Ok(raw),
            // Some servers close without close_notify after a complete response.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => Ok(raw),
            Err(e) => Err(e),
        }
    };
    let raw = match exchange() {
        Ok(raw) => String::from_utf8_lossy(&raw).into_owned(),
        Err(e) => return (0, e.to_string()),
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

/// Is a third-party peer there? Under CI=true a missing peer fails the test, else it is
/// skipped with a note.
pub fn peer_available(what: &str, present: bool) -> bool {
    ironplant_testkit::peer_available(what, present)
}

/// Forwards the lines of a pipe to a channel, from a thread, so reads never block a test.
pub fn pump(pipe: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}
