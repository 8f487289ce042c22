//! The `[mqtt]` and `[[bridge]]` section of `ironplant.toml`: settings, defaults and validation, owned by
//! this crate and parsed through core's [`Section`] (errors at file:line:col like every other).

use std::collections::HashSet;
use std::time::Duration;

use ironplant_core::config::{
    int_in, parse_duration, parse_size, section, Config, Diagnostics, Section,
};
use serde::Deserialize;
use toml::Spanned;

/// The `[[bridge]]` sections, in file order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Bridges(pub Vec<BridgeConfig>);

impl std::ops::Deref for Bridges {
    type Target = [BridgeConfig];

    fn deref(&self) -> &[BridgeConfig] {
        &self.0
    }
}

impl Section for Bridges {
    const KEY: &'static str = "bridge";

    fn parse(source: &str, _plant: &Config, d: &mut Diagnostics) -> Bridges {
        match section::<Vec<RawBridge>>(source, Self::KEY) {
            Ok(raw) => Bridges(validate_bridges(d, raw.unwrap_or_default())),
            Err(e) => {
                d.errors.push(e);
                Bridges::default()
            }
        }
    }
}

impl Section for MqttSettings {
    const KEY: &'static str = "mqtt";

    fn parse(source: &str, _plant: &Config, d: &mut Diagnostics) -> MqttSettings {
        match section::<RawMqtt>(source, Self::KEY) {
            Ok(raw) => validate_mqtt(d, raw),
            Err(e) => {
                d.errors.push(e);
                MqttSettings::default()
            }
        }
    }
}

/// An MQTT protocol version, as a bridge speaks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MqttVersion {
    V311,
    V5,
}

/// A `[[bridge]]`: topics forwarded between our broker and an external one.
#[derive(Debug, Clone, PartialEq)]
pub struct BridgeConfig {
    /// Unique; names the queue directory (`<data-dir>/bridge/<name>`) and the metrics.
    pub name: String,
    /// The remote broker, `host:port`.
    pub address: String,
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub protocol: MqttVersion,
    pub keep_alive: Duration,
    /// `false`: the remote keeps the bridge's session (and its inbound messages) while the
    /// bridge is away.
    pub clean_session: bool,
    /// Upper bound of the reconnect back-off.
    pub reconnect_max: Duration,
    pub out: Vec<BridgeOut>,
    pub inbound: Vec<BridgeIn>,
    pub queue: BridgeQueue,
    /// Sign what leaves the site (`crate::signed`): every outgoing message wrapped in an
    /// envelope signed for its remote topic.
    pub sign: Option<BridgeSign>,
}

/// `sign_key` (an enrolled device's `<name>.sign.key`, e.g. the central tier enrolled this
/// site as a device) and `sign_as` (the signer name, by default the file's `<name>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeSign {
    pub key: std::path::PathBuf,
    pub signer: String,
}

/// Local topics (an MQTT filter) sent to the remote as `remote_prefix + topic`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeOut {
    pub local: String,
    pub remote_prefix: String,
    pub qos: u8,
}

/// Remote topics (an MQTT filter) brought in as `local_prefix + topic`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeIn {
    pub remote: String,
    pub local_prefix: String,
    pub qos: u8,
}

/// Bounds of a bridge's store-and-forward queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BridgeQueue {
    pub max_messages: u64,
    pub max_bytes: u64,
    pub overflow: BridgeOverflow,
}

impl Default for BridgeQueue {
    fn default() -> Self {
        BridgeQueue {
            max_messages: 1_000_000,
            max_bytes: 1 << 30,
            overflow: BridgeOverflow::DropOldest,
        }
    }
}

/// What a full queue does with a new message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BridgeOverflow {
    /// Drop the oldest queued message (keep the freshest data).
    DropOldest,
    /// Drop the new message (keep the history from the start of the outage).
    DropNewest,
}

/// The `[mqtt]` section: the embedded broker's limits and the Unified Namespace topics.
#[derive(Debug, Clone, PartialEq)]
pub struct MqttSettings {
    /// Topic prefix of the UNS messages (`""`: the bare tag path).
    pub uns_prefix: String,
    pub max_packet_size: usize,
    /// Messages queued for a connection before the overflow policy applies.
    pub max_queue: usize,
    /// QoS 1/2 messages a session keeps in memory while its client is away or slow (a
    /// persistent session keeps more on disk, up to `max_session_disk` bytes).
    pub max_session_queue: usize,
    pub max_session_disk: u64,
    /// How long publishers wait for room in a slow subscriber's queue before it is
    /// disconnected.
    pub slow_consumer_timeout: Duration,
    /// `true`: disconnect a client whose queue is full (its session keeps QoS 1/2 messages);
    /// `false`: drop new messages for it.
    pub disconnect_slow_clients: bool,
    pub max_inflight: u16,
    pub max_session_expiry: Duration,
    /// `None`: no `$SYS` topics.
    pub sys_interval: Option<Duration>,
    /// Server Keep Alive imposed on clients (`None`: theirs).
    pub server_keep_alive: Option<u16>,
    /// Receive Maximum and Topic Alias Maximum announced to 5.0 clients.
    pub receive_maximum: u16,
    pub topic_alias_maximum: u16,
    /// Time a new connection has to send CONNECT.
    pub connect_timeout: Duration,
    /// Connection limits: total (with a reserve for administrators) and per address.
    pub max_connections: usize,
    pub privileged_reserve: usize,
    pub max_connections_per_address: usize,
    pub max_sessions: usize,
    pub max_subscriptions_per_client: usize,
    pub max_retained_per_owner: usize,
    pub max_retained_bytes_per_owner: usize,
}

impl Default for MqttSettings {
    fn default() -> Self {
        MqttSettings {
            uns_prefix: String::new(),
            max_packet_size: 1 << 20,
            max_queue: 10_000,
            max_session_queue: 10_000,
            max_session_disk: 256 << 20,
            slow_consumer_timeout: Duration::from_secs(5),
            disconnect_slow_clients: false,
            max_inflight: 1_000,
            max_session_expiry: Duration::from_secs(7 * 24 * 3600),
            sys_interval: Some(Duration::from_secs(10)),
            server_keep_alive: None,
            receive_maximum: 1_024,
            topic_alias_maximum: 64,
            connect_timeout: Duration::from_secs(5),
            max_connections: 15_000,
            privileged_reserve: 16,
            max_connections_per_address: 500,
            max_sessions: 100_000,
            max_subscriptions_per_client: 1_000,
            max_retained_per_owner: 10_000,
            max_retained_bytes_per_owner: 16 << 20,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMqtt {
    uns_prefix: Option<Spanned<String>>,
    max_packet_size: Option<Spanned<i64>>,
    max_queue: Option<Spanned<i64>>,
    max_session_queue: Option<Spanned<i64>>,
    max_session_disk: Option<Spanned<RawSize>>,
    slow_consumer_timeout: Option<Spanned<String>>,
    overflow: Option<Spanned<String>>,
    max_inflight: Option<Spanned<i64>>,
    max_session_expiry: Option<Spanned<String>>,
    sys_interval: Option<Spanned<String>>,
    server_keep_alive: Option<Spanned<i64>>,
    receive_maximum: Option<Spanned<i64>>,
    topic_alias_maximum: Option<Spanned<i64>>,
    connect_timeout: Option<Spanned<String>>,
    max_connections: Option<Spanned<i64>>,
    privileged_reserve: Option<Spanned<i64>>,
    max_connections_per_address: Option<Spanned<i64>>,
    max_sessions: Option<Spanned<i64>>,
    max_subscriptions_per_client: Option<Spanned<i64>>,
    max_retained_per_owner: Option<Spanned<i64>>,
    max_retained_bytes_per_owner: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBridge {
    name: Spanned<String>,
    address: Spanned<String>,
    client_id: Option<Spanned<String>>,
    username: Option<String>,
    password: Option<Spanned<String>>,
    protocol: Option<Spanned<String>>,
    keep_alive: Option<Spanned<String>>,
    clean_session: Option<bool>,
    reconnect_max: Option<Spanned<String>>,
    #[serde(default)]
    out: Vec<RawBridgeOut>,
    #[serde(default, rename = "in")]
    inbound: Vec<RawBridgeIn>,
    queue: Option<RawBridgeQueue>,
    sign_key: Option<Spanned<String>>,
    sign_as: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBridgeOut {
    local: Spanned<String>,
    remote_prefix: Option<Spanned<String>>,
    qos: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBridgeIn {
    remote: Spanned<String>,
    local_prefix: Option<Spanned<String>>,
    qos: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBridgeQueue {
    max_messages: Option<Spanned<i64>>,
    max_bytes: Option<Spanned<RawSize>>,
    overflow: Option<Spanned<String>>,
}

/// A size: a number of bytes or a string with a unit ("512MB", "1GiB").
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawSize {
    Bytes(i64),
    Text(String),
}

fn validate_mqtt(c: &mut Diagnostics, raw: Option<RawMqtt>) -> MqttSettings {
    let d = MqttSettings::default();
    let Some(m) = raw else { return d };
    let uns_prefix = match &m.uns_prefix {
        None => d.uns_prefix.clone(),
        Some(p) => {
            let v = p.get_ref().trim_end_matches('/');
            let bad = v.contains(['+', '#', '\0']) || v.starts_with('$') || v.contains("//");
            if bad {
                c.err(
                    p.span(),
                    format!("uns_prefix {:?} is not a usable topic prefix", p.get_ref()),
                    Some(
                        "use plain topic levels without wildcards, e.g. \"uns\" or \"site1/uns\""
                            .to_owned(),
                    ),
                );
            }
            v.to_owned()
        }
    };
    let disconnect_slow_clients = match &m.overflow {
        None => d.disconnect_slow_clients,
        Some(o) => match o.get_ref().as_str() {
            "drop_newest" => false,
            "disconnect" => true,
            other => {
                c.err(
                    o.span(),
                    format!("unknown overflow policy {other:?}"),
                    Some("use \"drop_newest\" (keep what is queued, drop new messages) or \"disconnect\" (close the slow client; its persistent session keeps QoS 1/2 messages)".to_owned()),
                );
                d.disconnect_slow_clients
            }
        },
    };
    let sys_interval = match &m.sys_interval {
        Some(s) if s.get_ref() == "off" => None,
        Some(_) => Some(parse_duration(
            c,
            &m.sys_interval,
            "sys_interval",
            Duration::from_secs(10),
        )),
        None => d.sys_interval,
    };
    MqttSettings {
        uns_prefix,
        max_packet_size: int_in(
            c,
            &m.max_packet_size,
            "max_packet_size",
            64..=268_435_455,
            d.max_packet_size,
        ),
        max_queue: int_in(c, &m.max_queue, "max_queue", 1..=10_000_000, d.max_queue),
        max_session_queue: int_in(
            c,
            &m.max_session_queue,
            "max_session_queue",
            0..=10_000_000,
            d.max_session_queue,
        ),
        max_session_disk: match &m.max_session_disk {
            None => d.max_session_disk,
            Some(v) => {
                let n = match v.get_ref() {
                    RawSize::Bytes(n) => u64::try_from(*n).ok(),
                    RawSize::Text(t) => parse_size(t),
                };
                n.unwrap_or_else(|| {
                    c.err(
                        v.span(),
                        "max_session_disk must be a size",
                        Some("a number of bytes or a string like \"256MiB\"; 0 keeps nothing on disk".to_owned()),
                    );
                    d.max_session_disk
                })
            }
        },
        slow_consumer_timeout: {
            let t = parse_duration(
                c,
                &m.slow_consumer_timeout,
                "slow_consumer_timeout",
                d.slow_consumer_timeout,
            );
            if let (Some(v), false) = (
                &m.slow_consumer_timeout,
                (Duration::from_millis(10)..=Duration::from_secs(600)).contains(&t),
            ) {
                c.err(
                    v.span(),
                    format!("slow_consumer_timeout {:?} is out of range", v.get_ref()),
                    Some("between \"10ms\" and \"10min\", e.g. \"5s\"".to_owned()),
                );
            }
            t.clamp(Duration::from_millis(10), Duration::from_secs(600))
        },
        disconnect_slow_clients,
        max_inflight: u16::try_from(int_in(
            c,
            &m.max_inflight,
            "max_inflight",
            1..=65_535,
            1_000,
        ))
        .unwrap_or(1_000),
        max_session_expiry: parse_duration(
            c,
            &m.max_session_expiry,
            "max_session_expiry",
            d.max_session_expiry,
        ),
        sys_interval,
        server_keep_alive: m.server_keep_alive.as_ref().map(|_| {
            u16::try_from(int_in(
                c,
                &m.server_keep_alive,
                "server_keep_alive",
                0..=65_535,
                60,
            ))
            .unwrap_or(60)
        }),
        receive_maximum: u16::try_from(int_in(
            c,
            &m.receive_maximum,
            "receive_maximum",
            1..=65_535,
            usize::from(d.receive_maximum),
        ))
        .unwrap_or(d.receive_maximum),
        topic_alias_maximum: u16::try_from(int_in(
            c,
            &m.topic_alias_maximum,
            "topic_alias_maximum",
            0..=65_535,
            usize::from(d.topic_alias_maximum),
        ))
        .unwrap_or(d.topic_alias_maximum),
        connect_timeout: parse_duration(
            c,
            &m.connect_timeout,
            "connect_timeout",
            d.connect_timeout,
        ),
        max_connections: int_in(
            c,
            &m.max_connections,
            "max_connections",
            1..=10_000_000,
            d.max_connections,
        ),
        privileged_reserve: int_in(
            c,
            &m.privileged_reserve,
            "privileged_reserve",
            0..=10_000,
            d.privileged_reserve,
        ),
        max_connections_per_address: int_in(
            c,
            &m.max_connections_per_address,
            "max_connections_per_address",
            1..=10_000_000,
            d.max_connections_per_address,
        ),
        max_sessions: int_in(
            c,
            &m.max_sessions,
            "max_sessions",
            1..=100_000_000,
            d.max_sessions,
        ),
        max_subscriptions_per_client: int_in(
            c,
            &m.max_subscriptions_per_client,
            "max_subscriptions_per_client",
            1..=10_000_000,
            d.max_subscriptions_per_client,
        ),
        max_retained_per_owner: int_in(
            c,
            &m.max_retained_per_owner,
            "max_retained_per_owner",
            0..=100_000_000,
            d.max_retained_per_owner,
        ),
        max_retained_bytes_per_owner: int_in(
            c,
            &m.max_retained_bytes_per_owner,
            "max_retained_bytes_per_owner",
            0..=(1 << 40),
            d.max_retained_bytes_per_owner,
        ),
    }
}

/// Checks an MQTT topic filter: non-empty, `#` only as the whole last level, `+` only as a
/// whole level, no U+0000.
fn check_topic_filter(f: &str) -> Result<(), String> {
    if f.is_empty() {
        return Err("a filter cannot be empty".into());
    }
    if f.len() > usize::from(u16::MAX) {
        return Err("a filter is at most 65535 bytes".into());
    }
    if f.contains('\0') {
        return Err("a filter cannot contain U+0000".into());
    }
    let levels: Vec<&str> = f.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        if level.contains('#') && (*level != "#" || i + 1 != levels.len()) {
            return Err("'#' must be a whole level and the last one, as in \"acme/#\"".into());
        }
        if level.contains('+') && *level != "+" {
            return Err("'+' must be a whole level, as in \"acme/+/speed\"".into());
        }
    }
    Ok(())
}

fn check_topic_prefix(p: &str) -> Result<(), String> {
    if p.contains(['+', '#']) {
        return Err("a prefix cannot contain the wildcards '+' or '#'".into());
    }
    if p.contains('\0') {
        return Err("a prefix cannot contain U+0000".into());
    }
    Ok(())
}

fn bridge_sign(
    c: &mut Diagnostics,
    key: Option<&Spanned<String>>,
    name: Option<&Spanned<String>>,
) -> Option<BridgeSign> {
    let Some(key) = key else {
        if let Some(n) = name {
            c.err(
                n.span(),
                "sign_as without sign_key".to_owned(),
                Some("add sign_key = \"site-lyon.sign.key\" (the key of the device the central tier enrolled for this site)".to_owned()),
            );
        }
        return None;
    };
    let path = std::path::PathBuf::from(key.get_ref());
    let signer = match name {
        Some(n) => n.get_ref().clone(),
        None => crate::signed::signer_of(&path)
            .unwrap_or_default()
            .to_owned(),
    };
    if signer.is_empty() {
        c.err(
            key.span(),
            format!("cannot tell the signer's name from {:?}", key.get_ref()),
            Some(
                "name the key <device>.sign.key as the bundle does, or add sign_as = \"<device>\""
                    .to_owned(),
            ),
        );
        return None;
    }
    Some(BridgeSign { key: path, signer })
}

fn validate_bridges(c: &mut Diagnostics, raw: Vec<RawBridge>) -> Vec<BridgeConfig> {
    let mut out = Vec::new();
    let mut names = HashSet::new();
    for b in raw {
        let name = b.name.get_ref().clone();
        if name.is_empty()
            || !name
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '_' | '-' | '.'))
            || name.starts_with('.')
        {
            c.err(
                b.name.span(),
                format!("bridge name {name:?} is not valid"),
                Some("use letters, digits, '_', '-' and '.' (it names a directory)".to_owned()),
            );
        } else if !names.insert(name.clone()) {
            c.err(
                b.name.span(),
                format!("bridge {name:?} is declared twice"),
                Some("give every [[bridge]] its own name".to_owned()),
            );
        }
        let addr = b.address.get_ref();
        let port_ok = addr
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !port_ok {
            c.err(
                b.address.span(),
                format!("address {addr:?} is not host:port"),
                Some("e.g. \"mqtt.example.com:1883\"".to_owned()),
            );
        }
        let protocol = match b
            .protocol
            .as_ref()
            .map(|p| (p.get_ref().as_str(), p.span()))
        {
            None | Some(("3.1.1" | "311" | "v3.1.1", _)) => MqttVersion::V311,
            Some(("5" | "5.0" | "v5", _)) => MqttVersion::V5,
            Some((other, span)) => {
                c.err(
                    span,
                    format!("unknown MQTT protocol {other:?}"),
                    Some("use \"3.1.1\" or \"5\"".to_owned()),
                );
                MqttVersion::V311
            }
        };
        let client_id = match &b.client_id {
            None => format!("ironplant-{name}"),
            Some(id) => {
                if id.get_ref().is_empty() || id.get_ref().len() > 65_535 {
                    c.err(
                        id.span(),
                        "client_id cannot be empty",
                        Some("leave it out to use \"ironplant-<name>\"".to_owned()),
                    );
                }
                id.get_ref().clone()
            }
        };
        if let (Some(p), None) = (&b.password, &b.username) {
            if protocol == MqttVersion::V311 {
                c.err(
                    p.span(),
                    "MQTT 3.1.1 sends a password only with a username",
                    Some("add username = \"...\" or use protocol = \"5\"".to_owned()),
                );
            }
        }
        let qos = |c: &mut Diagnostics, q: &Option<Spanned<i64>>| match q {
            None => 1,
            Some(q) => match u8::try_from(*q.get_ref()) {
                Ok(v @ 0..=2) => v,
                _ => {
                    c.err(
                        q.span(),
                        format!("qos {} is not an MQTT QoS", q.get_ref()),
                        Some("use 0, 1 or 2 (1 is the default)".to_owned()),
                    );
                    1
                }
            },
        };
        let prefix = |c: &mut Diagnostics, p: &Option<Spanned<String>>| match p {
            None => String::new(),
            Some(p) => {
                if let Err(e) = check_topic_prefix(p.get_ref()) {
                    c.err(
                        p.span(),
                        format!("invalid prefix {:?}: {e}", p.get_ref()),
                        Some("e.g. \"site1/\" (the prefix is prepended as is)".to_owned()),
                    );
                }
                p.get_ref().clone()
            }
        };
        let filter = |c: &mut Diagnostics, f: &Spanned<String>| {
            if let Err(e) = check_topic_filter(f.get_ref()) {
                c.err(
                    f.span(),
                    format!("invalid topic filter {:?}: {e}", f.get_ref()),
                    Some("e.g. \"acme/#\" or \"acme/+/speed\"".to_owned()),
                );
            }
            f.get_ref().clone()
        };
        let outs: Vec<BridgeOut> = b
            .out
            .iter()
            .map(|o| BridgeOut {
                local: filter(c, &o.local),
                remote_prefix: prefix(c, &o.remote_prefix),
                qos: qos(c, &o.qos),
            })
            .collect();
        let ins: Vec<BridgeIn> = b
            .inbound
            .iter()
            .map(|i| BridgeIn {
                remote: filter(c, &i.remote),
                local_prefix: prefix(c, &i.local_prefix),
                qos: qos(c, &i.qos),
            })
            .collect();
        if outs.is_empty() && ins.is_empty() {
            c.err(
                b.name.span(),
                format!("bridge {name:?} forwards nothing"),
                Some(
                    "add out = [{ local = \"acme/#\", remote_prefix = \"site1/\" }] or in = [...]"
                        .to_owned(),
                ),
            );
        }
        let mut queue = BridgeQueue::default();
        if let Some(q) = &b.queue {
            if let Some(m) = &q.max_messages {
                match u64::try_from(*m.get_ref()) {
                    Ok(v) if v > 0 => queue.max_messages = v,
                    _ => c.err(
                        m.span(),
                        format!("max_messages {} must be positive", m.get_ref()),
                        Some("e.g. max_messages = 1000000".to_owned()),
                    ),
                }
            }
            if let Some(m) = &q.max_bytes {
                let v = match m.get_ref() {
                    RawSize::Bytes(n) => u64::try_from(*n).ok(),
                    RawSize::Text(t) => parse_size(t),
                };
                match v {
                    Some(v) if v > 0 => queue.max_bytes = v,
                    _ => c.err(
                        m.span(),
                        "max_bytes must be a positive size",
                        Some("a number of bytes or a string like \"512MB\" or \"1GiB\"".to_owned()),
                    ),
                }
            }
            if let Some(o) = &q.overflow {
                queue.overflow = match o.get_ref().as_str() {
                    "drop_oldest" => BridgeOverflow::DropOldest,
                    "drop_newest" => BridgeOverflow::DropNewest,
                    other => {
                        c.err(
                            o.span(),
                            format!("unknown overflow policy {other:?}"),
                            Some("use \"drop_oldest\" (default) or \"drop_newest\"".to_owned()),
                        );
                        BridgeOverflow::DropOldest
                    }
                };
            }
        }
        out.push(BridgeConfig {
            client_id,
            address: addr.clone(),
            username: b.username,
            password: b.password.map(Spanned::into_inner),
            protocol,
            keep_alive: parse_duration(c, &b.keep_alive, "keep_alive", Duration::from_secs(30)),
            clean_session: b.clean_session.unwrap_or(false),
            reconnect_max: parse_duration(
                c,
                &b.reconnect_max,
                "reconnect_max",
                Duration::from_secs(30),
            ),
            out: outs,
            inbound: ins,
            queue,
            sign: bridge_sign(c, b.sign_key.as_ref(), b.sign_as.as_ref()),
            name,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ironplant_core::config::{parse_with, ConfigErrors, Registry};

    fn parse(file: &str, source: &str) -> Result<Config, ConfigErrors> {
        parse_with(
            file,
            source,
            &Registry::new().with::<MqttSettings>().with::<Bridges>(),
        )
    }

    #[test]
    fn mqtt_section() {
        let cfg = parse(
            "m.toml",
            r#"
[mqtt]
uns_prefix = "site1/uns/"
max_queue = 500
overflow = "disconnect"
max_session_expiry = "1day"
sys_interval = "off"
slow_consumer_timeout = "2s"
max_session_disk = "1GiB"
"#,
        )
        .expect("valid [mqtt]");
        let m = cfg.get::<MqttSettings>();
        assert_eq!(m.uns_prefix, "site1/uns");
        assert_eq!(m.max_queue, 500);
        assert!(m.disconnect_slow_clients);
        assert_eq!(m.max_session_expiry, Duration::from_secs(86_400));
        assert_eq!(m.sys_interval, None);
        assert_eq!(m.max_inflight, 1_000);
        assert_eq!(m.slow_consumer_timeout, Duration::from_secs(2));
        assert_eq!(m.max_session_disk, 1 << 30);
        let errs = parse(
            "m.toml",
            "[mqtt]\nuns_prefix = \"a/#\"\nmax_queue = 0\noverflow = \"block\"\nmax_inflight = 70000\nslow_consumer_timeout = \"2h\"\nmax_session_disk = \"lots\"\n",
        )
        .expect_err("six errors");
        let text = errs.to_string();
        for what in [
            "uns_prefix",
            "max_queue 0",
            "unknown overflow policy",
            "max_inflight 70000",
            "slow_consumer_timeout \"2h\" is out of range",
            "max_session_disk must be a size",
        ] {
            assert!(text.contains(what), "{what} missing from:\n{text}");
        }
    }

    #[test]
    fn bridge_section() {
        let text = r#"
[[bridge]]
name = "enterprise"
address = "mqtt.example.com:1883"
username = "site1"
password = "secret"
protocol = "5"
out = [{ local = "acme/#", remote_prefix = "site1/" }]
in = [{ remote = "enterprise/cmd/#", local_prefix = "acme/cmd/", qos = 0 }]
queue = { max_messages = 5000, max_bytes = "64MiB", overflow = "drop_newest" }

[[bridge]]
name = "enterprise"
address = "nohost"
protocol = "4"
out = [{ local = "acme/#/x", remote_prefix = "a/+/", qos = 3 }]
queue = { max_bytes = "12 parsecs", overflow = "drop_middle" }
"#;
        let errs = parse("b.toml", text).expect_err("second bridge is broken");
        let rendered = errs.to_string();
        let messages: Vec<&str> = errs.errors.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(
            messages,
            vec![
                "bridge \"enterprise\" is declared twice",
                "address \"nohost\" is not host:port",
                "unknown MQTT protocol \"4\"",
                "invalid topic filter \"acme/#/x\": '#' must be a whole level and the last one, as in \"acme/#\"",
                "invalid prefix \"a/+/\": a prefix cannot contain the wildcards '+' or '#'",
                "qos 3 is not an MQTT QoS",
                "max_bytes must be a positive size",
                "unknown overflow policy \"drop_middle\"",
            ],
            "{rendered}"
        );
        assert_eq!(
            errs.line_col(errs.errors[0].span.start),
            (13, 8),
            "{rendered}"
        );
        assert!(
            rendered.contains("b.toml:14:11: error: address"),
            "{rendered}"
        );

        let good = text
            .split("\n[[bridge]]\nname = \"enterprise\"\naddress = \"nohost\"")
            .next()
            .expect("first");
        let cfg = parse("b.toml", good).expect("valid");
        let b = &cfg.get::<Bridges>()[0];
        assert_eq!(b.client_id, "ironplant-enterprise");
        assert_eq!(b.protocol, MqttVersion::V5);
        assert!(!b.clean_session);
        assert_eq!(b.password.as_deref(), Some("secret"));
        assert_eq!(
            b.out,
            vec![BridgeOut {
                local: "acme/#".into(),
                remote_prefix: "site1/".into(),
                qos: 1
            }]
        );
        assert_eq!(
            b.inbound,
            vec![BridgeIn {
                remote: "enterprise/cmd/#".into(),
                local_prefix: "acme/cmd/".into(),
                qos: 0
            }]
        );
        assert_eq!(
            b.queue,
            BridgeQueue {
                max_messages: 5000,
                max_bytes: 64 << 20,
                overflow: BridgeOverflow::DropNewest
            }
        );
        let none =
            parse("n.toml", "[[bridge]]\nname = \"x\"\naddress = \"h:1\"\n").expect_err("no rules");
        assert!(
            none.errors[0].message.contains("forwards nothing"),
            "{none}"
        );
    }
}
