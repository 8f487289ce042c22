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
    /// `[http.live]`: the live WebSocket API.
    pub live: LiveSettings,
}

/// The `[http.live]` section: limits and timers of the live WebSocket API (`/api/v1/live`).
#[derive(Debug, Clone, PartialEq)]
pub struct LiveSettings {
    /// Live clients connected at once (more: 503 `too_many_live_clients`).
    pub max_clients: usize,
    /// Tags one connection may follow (more: error `too_many_tags`).
    pub max_tags_per_client: usize,
    /// Tag and event subscriptions (patterns) one connection may hold.
    pub max_subscriptions_per_client: usize,
    /// Events waiting for a slow client; beyond it the oldest are dropped, counted and
    /// announced to the client.
    pub max_events_queued: usize,
    /// Largest message a client may send (close 1009 beyond).
    pub max_message_size: usize,
    /// Samples (or snapshot tags) per message sent.
    pub max_samples_per_message: usize,
    /// At most one `samples` message per interval: changes in between are batched, and a tag
    /// that changed twice is sent once, with its latest value.
    pub flush_interval: Duration,
    /// A WebSocket ping is sent this often; a client silent for two intervals is closed.
    pub ping_interval: Duration,
    /// A send that cannot complete within this time (the client stopped reading and the
    /// socket buffers are full) closes the client.
    pub write_timeout: Duration,
    /// Time to send the `auth` message when the upgrade carried no credentials.
    pub auth_timeout: Duration,
    /// How often a connection's token is re-verified and its tag scopes re-read (also on
    /// every subscribe).
    pub recheck_interval: Duration,
}

impl Default for LiveSettings {
    fn default() -> Self {
        LiveSettings {
            max_clients: 256,
            max_tags_per_client: 100_000,
            max_subscriptions_per_client: 256,
            max_events_queued: 1_000,
            max_message_size: 64 * 1024,
            max_samples_per_message: 2_000,
            flush_interval: Duration::from_millis(50),
            ping_interval: Duration::from_secs(20),
            write_timeout: Duration::from_secs(30),
            auth_timeout: Duration::from_secs(10),
            recheck_interval: Duration::from_secs(10),
        }
    }
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
            live: LiveSettings::default(),
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
    live: Option<RawLive>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLive {
    max_clients: Option<Spanned<i64>>,
    max_tags_per_client: Option<Spanned<i64>>,
    max_subscriptions_per_client: Option<Spanned<i64>>,
    max_events_queued: Option<Spanned<i64>>,
    max_message_size: Option<Spanned<i64>>,
    max_samples_per_message: Option<Spanned<i64>>,
    flush_interval: Option<Spanned<String>>,
    ping_interval: Option<Spanned<String>>,
    write_timeout: Option<Spanned<String>>,
    auth_timeout: Option<Spanned<String>>,
    recheck_interval: Option<Spanned<String>>,
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
        live: validate_live(c, h.live),
    }
}

fn validate_live(c: &mut Diagnostics, raw: Option<RawLive>) -> LiveSettings {
    let d = LiveSettings::default();
    let Some(l) = raw else { return d };
    let max_tags = i64::try_from(ironplant_core::MAX_TAGS).unwrap_or(i64::MAX);
    LiveSettings {
        max_clients: int_in(c, &l.max_clients, "max_clients", 1..=100_000, d.max_clients),
        max_tags_per_client: int_in(
            c,
            &l.max_tags_per_client,
            "max_tags_per_client",
            1..=max_tags,
            d.max_tags_per_client,
        ),
        max_subscriptions_per_client: int_in(
            c,
            &l.max_subscriptions_per_client,
            "max_subscriptions_per_client",
            1..=100_000,
            d.max_subscriptions_per_client,
        ),
        max_events_queued: int_in(
            c,
            &l.max_events_queued,
            "max_events_queued",
            1..=1_000_000,
            d.max_events_queued,
        ),
        max_message_size: int_in(
            c,
            &l.max_message_size,
            "max_message_size",
            1024..=16 << 20,
            d.max_message_size,
        ),
        max_samples_per_message: int_in(
            c,
            &l.max_samples_per_message,
            "max_samples_per_message",
            1..=100_000,
            d.max_samples_per_message,
        ),
        flush_interval: parse_duration(c, &l.flush_interval, "flush_interval", d.flush_interval),
        ping_interval: parse_duration(c, &l.ping_interval, "ping_interval", d.ping_interval),
        write_timeout: parse_duration(c, &l.write_timeout, "write_timeout", d.write_timeout),
        auth_timeout: parse_duration(c, &l.auth_timeout, "auth_timeout", d.auth_timeout),
        recheck_interval: parse_duration(
            c,
            &l.recheck_interval,
            "recheck_interval",
            d.recheck_interval,
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
        assert_eq!(h.live, LiveSettings::default(), "[http.live] not given");
        let live = parse(
            "l.toml",
            "[http.live]\nmax_clients = 3\nmax_events_queued = 7\nping_interval = \"5s\"\n",
        )
        .expect("valid [http.live]")
        .get::<HttpSettings>()
        .live
        .clone();
        assert_eq!(
            (live.max_clients, live.max_events_queued, live.ping_interval),
            (3, 7, Duration::from_secs(5))
        );
        assert_eq!(
            live.max_tags_per_client,
            LiveSettings::default().max_tags_per_client
        );
        let errs = parse(
            "l.toml",
            "[http.live]\nmax_clients = 0\nflush_interval = \"0s\"\n",
        )
        .expect_err("two errors")
        .to_string();
        assert!(errs.contains("max_clients 0 is out of range"), "{errs}");
        assert!(
            errs.contains("flush_interval must be greater than zero"),
            "{errs}"
        );
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
