//! The configuration as the server reads it: the runtime's sections plus `[http]` (here) and
//! `[security]` (the security crate's) — [`registry`] and [`parse`].
//!
//! The `[http]` section of `ironplant.toml`: settings, defaults and validation, owned by
//! this crate and parsed through core's [`Section`] (errors at file:line:col like every other).

use std::time::Duration;

use ironplant_core::config::{int_in, parse_duration, section, Config, Diagnostics, Section};
use serde::Deserialize;
use toml::Spanned;

/// Every section the server knows: the runtime's, `[http]` and `[security]`.
pub fn registry() -> ironplant_core::config::Registry {
    ironplant_runtime::config::registry()
        .with::<HttpSettings>()
        .with::<ironplant_security::settings::SecuritySettings>()
}

/// Parses a whole `ironplant.toml` (named `file` in errors).
pub fn parse(file: &str, source: &str) -> Result<Config, ironplant_core::config::ConfigErrors> {
    ironplant_core::config::parse_with(file, source, &registry())
}

impl Section for HttpSettings {
    const KEY: &'static str = "http";

    fn parse(source: &str, _plant: &Config, d: &mut Diagnostics) -> HttpSettings {
        match section::<RawHttp>(source, Self::KEY) {
            Ok(raw) => validate_http(d, raw),
            Err(e) => {
                d.errors.push(e);
                HttpSettings::default()
            }
        }
    }
}

/// The `[http]` section: what one client may hold on the HTTP listeners (the API, and the
/// dedicated MQTT over WebSocket listener), so idle or half-open connections cannot exhaust
/// file descriptors and lock everyone out.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpSettings {
    /// A TLS handshake that takes longer is dropped.
    pub handshake_timeout: Duration,
    /// From the moment the server waits for a request (a new connection, or after the
    /// previous response on a kept-alive one) until its headers are complete.
    pub header_read_timeout: Duration,
    /// A connection on which no byte moves either way for this long is closed (a request
    /// body sent slowly, a response not read).
    pub idle_timeout: Duration,
    /// Open connections in all, reserved ones included.
    pub max_connections: usize,
    /// Open connections from one source address.
    pub max_connections_per_address: usize,
    /// Of `max_connections`, how many only `reserved_for` addresses may use (so an
    /// administrator on the host can still log in when the rest is taken).
    pub reserved_connections: usize,
    pub reserved_for: Vec<std::net::IpAddr>,
    /// Largest request body in bytes (larger: 413 `body_too_large`).
    pub max_body_size: usize,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(60),
            max_connections: 512,
            max_connections_per_address: 32,
            reserved_connections: 32,
            reserved_for: vec![
                std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
                std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
            ],
            max_body_size: 1 << 20,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    handshake_timeout: Option<Spanned<String>>,
    header_read_timeout: Option<Spanned<String>>,
    idle_timeout: Option<Spanned<String>>,
    max_connections: Option<Spanned<i64>>,
    max_connections_per_address: Option<Spanned<i64>>,
    reserved_connections: Option<Spanned<i64>>,
    reserved_for: Option<Vec<Spanned<String>>>,
    max_body_size: Option<Spanned<i64>>,
}

fn validate_http(c: &mut Diagnostics, raw: Option<RawHttp>) -> HttpSettings {
    let d = HttpSettings::default();
    let Some(h) = raw else { return d };
    let max_connections = int_in(
        c,
        &h.max_connections,
        "max_connections",
        1..=1_000_000,
        d.max_connections,
    );
    let reserved_connections = int_in(
        c,
        &h.reserved_connections,
        "reserved_connections",
        0..=1_000_000,
        d.reserved_connections.min(max_connections / 2),
    );
    if let Some(r) = &h.reserved_connections {
        if reserved_connections >= max_connections {
            c.err(
                r.span(),
                format!(
                    "reserved_connections {reserved_connections} leaves none of max_connections {max_connections} to other clients"
                ),
                Some("make it smaller than max_connections, e.g. a tenth of it".to_owned()),
            );
        }
    }
    let reserved_for = match h.reserved_for {
        None => d.reserved_for,
        Some(list) => list
            .iter()
            .filter_map(|a| match a.get_ref().parse::<std::net::IpAddr>() {
                Ok(ip) => Some(ip),
                Err(_) => {
                    c.err(
                        a.span(),
                        format!("reserved_for entry {:?} is not an IP address", a.get_ref()),
                        Some(
                            "write single addresses, e.g. [\"127.0.0.1\", \"::1\", \"10.0.0.5\"]"
                                .to_owned(),
                        ),
                    );
                    None
                }
            })
            .collect(),
    };
    HttpSettings {
        handshake_timeout: parse_duration(
            c,
            &h.handshake_timeout,
            "handshake_timeout",
            d.handshake_timeout,
        ),
        header_read_timeout: parse_duration(
            c,
            &h.header_read_timeout,
            "header_read_timeout",
            d.header_read_timeout,
        ),
        idle_timeout: parse_duration(c, &h.idle_timeout, "idle_timeout", d.idle_timeout),
        max_connections,
        max_connections_per_address: int_in(
            c,
            &h.max_connections_per_address,
            "max_connections_per_address",
            1..=1_000_000,
            d.max_connections_per_address,
        ),
        reserved_connections,
        reserved_for,
        max_body_size: int_in(
            c,
            &h.max_body_size,
            "max_body_size",
            1024..=1 << 30,
            d.max_body_size,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ironplant_core::config::{parse_with, ConfigErrors, Registry};

    fn parse(file: &str, source: &str) -> Result<Config, ConfigErrors> {
        parse_with(file, source, &Registry::new().with::<HttpSettings>())
    }

    #[test]
    fn http_section() {
        let cfg = parse(
            "h.toml",
            r#"
[http]
handshake_timeout = "2s"
header_read_timeout = "3s"
idle_timeout = "4s"
max_connections = 100
max_connections_per_address = 10
reserved_connections = 5
reserved_for = ["127.0.0.1", "10.0.0.5"]
max_body_size = 4096
"#,
        )
        .expect("valid [http]");
        let h = cfg.get::<HttpSettings>();
        assert_eq!(h.handshake_timeout, Duration::from_secs(2));
        assert_eq!(h.header_read_timeout, Duration::from_secs(3));
        assert_eq!(h.idle_timeout, Duration::from_secs(4));
        assert_eq!(
            (
                h.max_connections,
                h.max_connections_per_address,
                h.reserved_connections
            ),
            (100, 10, 5)
        );
        assert_eq!(h.reserved_for.len(), 2);
        assert_eq!(h.max_body_size, 4096);
        assert_eq!(
            parse("e.toml", "").expect("empty").get::<HttpSettings>(),
            HttpSettings::default().into()
        );
        let errs = parse(
            "h.toml",
            "[http]\nmax_connections = 10\nreserved_connections = 10\nreserved_for = [\"localhost\"]\nidle_timeout = \"soon\"\nmax_body_size = 1\n",
        )
        .expect_err("four errors");
        let text = errs.to_string();
        for what in [
            "reserved_connections 10 leaves none",
            "\"localhost\" is not an IP address",
            "idle_timeout \"soon\"",
            "max_body_size 1 is out of range",
        ] {
            assert!(text.contains(what), "{what} missing from:\n{text}");
        }
    }
}
