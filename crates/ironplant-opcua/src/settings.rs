//! The `[opcua]` section of `ironplant.toml`: connections to OPC UA servers
//! (`[[opcua.connection]]`), the nodes mapped to tags (`[[opcua.node]]`) and the platform's own
//! OPC UA server of the Unified Namespace (`[opcua.server]`). Parsed through core's
//! [`Section`], errors at file:line:col like every other section.
//!
//! ```toml
//! [[opcua.connection]]
//! id = "labeller"
//! url = "opc.tcp://10.0.4.17:4840/"
//! user = "ironplant"
//! password_env = "LABELLER_OPCUA_PASSWORD"
//!
//! [[opcua.node]]
//! connection = "labeller"
//! node = "nsu=urn:acme:labeller;s=Labeller.Speed"
//! tag = "acme/lyon/packaging/line1/labeller/speed"
//! type = "float"
//! unit = "bpm"
//! range = [0, 600]
//! writable = true
//! ```

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use ironplant_core::config::{parse_duration, parse_path, section, Config, Diagnostics, Section};
use ironplant_core::{TagId, TagMeta, TagPath, ValueType};
use serde::Deserialize;
use toml::Spanned;

use crate::client::Policy;

/// The source name (and [`TagMeta::device`]) of a connection's tags: `opcua:<id>`.
pub fn source_name(connection: &str) -> String {
    format!("opcua:{connection}")
}

/// The `[opcua]` section.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct OpcuaSettings {
    pub connections: Vec<ConnectionConfig>,
    pub nodes: Vec<NodeConfig>,
    /// `[opcua.server]`, when enabled.
    pub server: Option<ServerConfig>,
}

impl OpcuaSettings {
    /// The nodes of connection `id`, in config order.
    pub fn nodes_of<'a>(&'a self, id: &'a str) -> impl Iterator<Item = &'a NodeConfig> + 'a {
        self.nodes.iter().filter(move |n| n.connection == id)
    }
}

/// Where a password comes from.
#[derive(Clone, PartialEq)]
pub enum Secret {
    /// Written in the file (readable by whoever reads the file).
    Inline(String),
    /// Read from this environment variable when the connection starts.
    Env(String),
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Secret::Inline(_) => f.write_str("Inline(..)"),
            Secret::Env(v) => write!(f, "Env({v})"),
        }
    }
}

/// One `[[opcua.connection]]`: a session to a server.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectionConfig {
    pub id: String,
    pub url: String,
    pub policy: Policy,
    /// SignAndEncrypt (the default) or Sign only.
    pub encrypt: bool,
    /// `None`: anonymous (unless `user_certificate`).
    pub user: Option<(String, Secret)>,
    /// An X.509 user token instead: the certificate (DER or PEM) and its private key (PEM).
    pub user_certificate: Option<(std::path::PathBuf, std::path::PathBuf)>,
    /// How often the server sends the changes of a subscription.
    pub publishing_interval: Duration,
    /// Default sampling interval of the monitored items.
    pub sampling_interval: Duration,
    /// Default queue size of the monitored items.
    pub queue_size: u32,
    /// How often the session checks the server is alive (reads its state).
    pub keep_alive: Duration,
    /// How long a request (and a write) may take.
    pub request_timeout: Duration,
    /// The longest wait between two reconnection attempts (they back off from 500 ms).
    pub reconnect_max: Duration,
}

/// How a node's data-change filter ignores small changes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DeadbandConfig {
    None,
    /// In the tag's unit.
    Absolute(f64),
    /// Percent of the node's EURange (the server computes it).
    Percent(f64),
}

/// A NodeId as written in the config: with a namespace URI (`nsu=`, resolved to the server's
/// index at every new session, so a server that reorders its namespaces after a restart keeps
/// the mapping) or an index (`ns=`).
#[derive(Debug, Clone, PartialEq)]
pub struct NodeRef {
    /// The namespace URI, for `nsu=` ids.
    pub namespace_uri: Option<String>,
    /// The id (its namespace index is replaced when `namespace_uri` is set).
    pub node: opcua::types::NodeId,
    /// As written.
    pub text: String,
}

impl NodeRef {
    /// Parses `ns=2;s=Line1.Speed`, `i=2258`, `nsu=urn:x;s=Line1.Speed`.
    pub fn parse(text: &str) -> Result<NodeRef, String> {
        let t = text.trim();
        if let Some(rest) = t.strip_prefix("nsu=") {
            let (uri, id) = rest
                .split_once(';')
                .ok_or_else(|| format!("{t:?} has no identifier after the namespace URI"))?;
            if uri.is_empty() {
                return Err(format!("{t:?} has an empty namespace URI"));
            }
            let node: opcua::types::NodeId = id
                .parse()
                .map_err(|_| format!("{id:?} is not a NodeId identifier (i=, s=, g= or b=)"))?;
            if node.namespace != 0 {
                return Err(format!("{t:?} gives both a namespace URI and an index"));
            }
            return Ok(NodeRef {
                namespace_uri: Some(
                    uri.replace("%3b", ";")
                        .replace("%3B", ";")
                        .replace("%25", "%"),
                ),
                node,
                text: t.to_owned(),
            });
        }
        let node = t.parse().map_err(|_| format!("{t:?} is not a NodeId"))?;
        Ok(NodeRef {
            namespace_uri: None,
            node,
            text: t.to_owned(),
        })
    }
}

/// One `[[opcua.node]]`: a node mapped to a tag.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeConfig {
    pub connection: String,
    pub node: NodeRef,
    pub tag: TagPath,
    pub value_type: ValueType,
    /// `None`: taken from the node's EngineeringUnits when the connection starts.
    pub unit: Option<String>,
    /// `None`: taken from the node's EURange when the connection starts.
    pub range: Option<(f64, f64)>,
    pub description: String,
    pub writable: bool,
    pub deadband: DeadbandConfig,
    pub sampling_interval: Duration,
    pub queue_size: u32,
}

/// `[opcua.server]`: the Unified Namespace served over OPC UA.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// Address to listen on (default 127.0.0.1).
    pub host: String,
    pub port: u16,
    /// Host names and addresses clients use to reach it (in its certificate).
    pub hostnames: Vec<String>,
    /// The parts of the namespace served (path prefixes); empty = all of it.
    pub paths: Vec<TagPath>,
    /// Writes from OPC UA clients (through the command path) allowed.
    pub writes: bool,
    /// Also an endpoint without security (labs only).
    pub allow_none: bool,
    /// Also Sign-only endpoints.
    pub sign_only: bool,
    pub max_sessions: usize,
}

impl Section for OpcuaSettings {
    const KEY: &'static str = "opcua";

    fn parse(source: &str, plant: &Config, d: &mut Diagnostics) -> OpcuaSettings {
        match section::<RawOpcua>(source, Self::KEY) {
            Ok(None) => OpcuaSettings::default(),
            Ok(Some(raw)) => validate(d, raw, plant),
            Err(e) => {
                d.errors.push(e);
                OpcuaSettings::default()
            }
        }
    }

    fn tags(&self) -> Vec<TagMeta> {
        self.nodes
            .iter()
            .map(|n| TagMeta {
                id: TagId(0),
                path: n.tag.clone(),
                value_type: n.value_type,
                unit: n.unit.clone(),
                description: n.description.clone(),
                range: n.range,
                writable: n.writable,
                device: Some(source_name(&n.connection)),
            })
            .collect()
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOpcua {
    #[serde(default)]
    connection: Vec<RawConnection>,
    #[serde(default)]
    node: Vec<RawNode>,
    server: Option<RawServer>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConnection {
    id: Spanned<String>,
    url: Spanned<String>,
    policy: Option<Spanned<String>>,
    mode: Option<Spanned<String>>,
    user: Option<Spanned<String>>,
    password: Option<Spanned<String>>,
    password_env: Option<Spanned<String>>,
    user_certificate: Option<Spanned<String>>,
    user_key: Option<Spanned<String>>,
    publishing_interval: Option<Spanned<String>>,
    sampling_interval: Option<Spanned<String>>,
    queue_size: Option<Spanned<i64>>,
    keep_alive: Option<Spanned<String>>,
    request_timeout: Option<Spanned<String>>,
    reconnect_max: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    connection: Spanned<String>,
    node: Spanned<String>,
    tag: Spanned<String>,
    #[serde(rename = "type")]
    value_type: Spanned<String>,
    unit: Option<String>,
    range: Option<Spanned<Vec<f64>>>,
    #[serde(default)]
    description: String,
    #[serde(default)]
    writable: bool,
    deadband: Option<Spanned<f64>>,
    deadband_percent: Option<Spanned<f64>>,
    sampling_interval: Option<Spanned<String>>,
    queue_size: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    enabled: Option<bool>,
    listen: Option<Spanned<String>>,
    hostnames: Option<Vec<String>>,
    #[serde(default)]
    paths: Vec<Spanned<String>>,
    writes: Option<bool>,
    allow_none: Option<bool>,
    sign_only: Option<bool>,
    max_sessions: Option<Spanned<i64>>,
}

/// The policies a connection may name, for messages.
pub const POLICIES: &str =
    "\"Basic256Sha256\" (the default), \"Aes128_Sha256_RsaOaep\", \"Aes256_Sha256_RsaPss\" or \"None\" (labs only)";

/// A security policy by its name (the OPC UA spelling, or the stack's with dashes).
pub fn parse_policy(s: &str) -> Option<Policy> {
    Some(match s {
        "Basic256Sha256" => Policy::Basic256Sha256,
        "Aes128_Sha256_RsaOaep" | "Aes128-Sha256-RsaOaep" => Policy::Aes128Sha256RsaOaep,
        "Aes256_Sha256_RsaPss" | "Aes256-Sha256-RsaPss" => Policy::Aes256Sha256RsaPss,
        "None" => Policy::None,
        _ => return None,
    })
}

/// Bounds of sampling and publishing intervals.
const INTERVALS: (Duration, Duration, &str) = (
    Duration::from_millis(10),
    Duration::from_secs(3600),
    "use 10ms to 1h",
);

/// A duration field (`parse_duration`) that must also lie in `(low, high, hint)`.
fn duration_in(
    d: &mut Diagnostics,
    raw: &Option<Spanned<String>>,
    field: &str,
    default: Duration,
    (low, high, hint): (Duration, Duration, &str),
) -> Duration {
    let value = parse_duration(d, raw, field, default);
    if let Some(r) = raw {
        if value < low || value > high {
            d.err(
                r.span(),
                format!("{field} {} is out of range", r.get_ref()),
                Some(hint.to_owned()),
            );
        }
    }
    value
}

fn queue_size(d: &mut Diagnostics, raw: &Option<Spanned<i64>>, default: u32) -> u32 {
    match raw {
        None => default,
        Some(q) if (1..=10_000).contains(q.get_ref()) => *q.get_ref() as u32,
        Some(q) => {
            d.err(
                q.span(),
                format!("queue_size {} is out of range", q.get_ref()),
                Some("use 1 to 10000 values kept per item between two publishes".to_owned()),
            );
            default
        }
    }
}

fn validate(d: &mut Diagnostics, raw: RawOpcua, plant: &Config) -> OpcuaSettings {
    let mut connections: Vec<ConnectionConfig> = Vec::new();
    for c in raw.connection {
        if let Some(conn) = validate_connection(d, c, &connections) {
            connections.push(conn);
        }
    }
    let by_id: HashMap<&str, &ConnectionConfig> =
        connections.iter().map(|c| (c.id.as_str(), c)).collect();
    let plant_tags: HashSet<&TagPath> = plant.tags.iter().map(|t| &t.path).collect();
    let mut seen_tags: HashSet<TagPath> = HashSet::new();
    let mut seen_nodes: HashSet<(String, String)> = HashSet::new();
    let mut nodes = Vec::new();
    for n in raw.node {
        let Some(conn) = by_id.get(n.connection.get_ref().as_str()).copied() else {
            let known: Vec<&str> = by_id.keys().copied().collect();
            d.err(
                n.connection.span(),
                format!(
                    "no [[opcua.connection]] has the id {:?}",
                    n.connection.get_ref()
                ),
                Some(if known.is_empty() {
                    "add an [[opcua.connection]] with that id".to_owned()
                } else {
                    format!("known connections: {}", known.join(", "))
                }),
            );
            continue;
        };
        let node = match NodeRef::parse(n.node.get_ref()) {
            Ok(r) => Some(r),
            Err(e) => {
                d.err(
                    n.node.span(),
                    format!("invalid OPC UA node: {e}"),
                    Some(
                        "write a NodeId such as \"ns=2;s=Line1.Speed\", \"ns=3;i=1001\" or, to \
                         survive a server reordering its namespaces, \
                         \"nsu=urn:vendor:plc;s=Line1.Speed\""
                            .to_owned(),
                    ),
                );
                None
            }
        };
        if let Some(r) = &node {
            if !seen_nodes.insert((conn.id.clone(), r.text.clone())) {
                d.err(
                    n.node.span(),
                    format!("node {} of {} is mapped twice", r.text, conn.id),
                    Some("map each node to one tag".to_owned()),
                );
            }
        }
        let tag = parse_path(d, &n.tag, "OPC UA tag");
        if let Some(t) = &tag {
            if plant_tags.contains(t) || !seen_tags.insert(t.clone()) {
                d.err(
                    n.tag.span(),
                    format!("tag {t} is defined twice"),
                    Some("each tag path is produced by one source".to_owned()),
                );
            }
        }
        let value_type = ValueType::parse(n.value_type.get_ref());
        match value_type {
            None => d.err(
                n.value_type.span(),
                format!("unknown tag type {:?}", n.value_type.get_ref()),
                Some(
                    "use bool, int, float, string or array<bool|int|float|string> (`ironplant \
                     opcua browse --config` writes it from the node's DataType)"
                        .to_owned(),
                ),
            ),
            Some(ValueType::DataSet) => d.err(
                n.value_type.span(),
                "OPC UA nodes cannot be read as datasets",
                Some("use a scalar or array type".to_owned()),
            ),
            Some(_) => {}
        }
        let range = n.range.as_ref().and_then(|r| match r.get_ref().as_slice() {
            [lo, hi] if lo < hi && lo.is_finite() && hi.is_finite() => Some((*lo, *hi)),
            _ => {
                d.err(
                    r.span(),
                    "range must be [low, high] with low < high",
                    Some("e.g. range = [0, 600]".to_owned()),
                );
                None
            }
        });
        let deadband = match (&n.deadband, &n.deadband_percent) {
            (Some(a), Some(_)) => {
                d.err(
                    a.span(),
                    "give deadband or deadband_percent, not both",
                    Some("deadband is in the tag's unit, deadband_percent in % of the node's EURange".to_owned()),
                );
                DeadbandConfig::None
            }
            (Some(a), None) if *a.get_ref() >= 0.0 && a.get_ref().is_finite() => {
                DeadbandConfig::Absolute(*a.get_ref())
            }
            (None, Some(p)) if (0.0..=100.0).contains(p.get_ref()) => {
                DeadbandConfig::Percent(*p.get_ref())
            }
            (Some(x), None) | (None, Some(x)) => {
                d.err(
                    x.span(),
                    format!("deadband {} is out of range", x.get_ref()),
                    Some("use a value ≥ 0 (deadband_percent: 0 to 100)".to_owned()),
                );
                DeadbandConfig::None
            }
            (None, None) => DeadbandConfig::None,
        };
        if !matches!(deadband, DeadbandConfig::None)
            && !matches!(value_type, Some(ValueType::Int | ValueType::Float))
        {
            d.err(
                n.tag.span(),
                "a deadband needs a numeric tag (int or float)",
                Some("remove the deadband".to_owned()),
            );
        }
        let sampling_interval = duration_in(
            d,
            &n.sampling_interval,
            "sampling_interval",
            conn.sampling_interval,
            INTERVALS,
        );
        let queue_size = queue_size(d, &n.queue_size, conn.queue_size);
        if let (Some(node), Some(tag), Some(value_type)) = (node, tag, value_type) {
            nodes.push(NodeConfig {
                connection: conn.id.clone(),
                node,
                tag,
                value_type,
                unit: n.unit,
                range,
                description: n.description,
                writable: n.writable,
                deadband,
                sampling_interval,
                queue_size,
            });
        }
    }
    let server = raw.server.and_then(|s| validate_server(d, s));
    OpcuaSettings {
        connections,
        nodes,
        server,
    }
}

fn validate_connection(
    d: &mut Diagnostics,
    c: RawConnection,
    before: &[ConnectionConfig],
) -> Option<ConnectionConfig> {
    let id = c.id.get_ref().clone();
    let id_ok = !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '_' | '-' | '.'));
    if !id_ok {
        d.err(
            c.id.span(),
            format!("invalid OPC UA connection id {id:?}"),
            Some("use 1-64 characters from A-Z a-z 0-9 _ - ., e.g. \"labeller\"".to_owned()),
        );
    } else if before.iter().any(|b| b.id == id) {
        d.err(
            c.id.span(),
            format!("OPC UA connection id {id:?} is used twice"),
            Some("give each connection its own id".to_owned()),
        );
    }
    let url = c.url.get_ref().trim().to_owned();
    let url_ok = url
        .strip_prefix("opc.tcp://")
        .is_some_and(|rest| !rest.is_empty() && !rest.starts_with('/'));
    if !url_ok {
        d.err(
            c.url.span(),
            format!("{url:?} is not an OPC UA endpoint URL"),
            Some("write opc.tcp://HOST:PORT/[PATH], e.g. \"opc.tcp://10.0.4.17:4840/\"".to_owned()),
        );
    }
    let policy = match &c.policy {
        None => Policy::Basic256Sha256,
        Some(p) => parse_policy(p.get_ref()).unwrap_or_else(|| {
            d.err(
                p.span(),
                format!("unknown security policy {:?}", p.get_ref()),
                Some(format!("use {POLICIES}")),
            );
            Policy::Basic256Sha256
        }),
    };
    let encrypt = match (&c.mode, policy) {
        (None, _) => true,
        (Some(m), Policy::None) if m.get_ref() == "None" => false,
        (Some(m), _) if m.get_ref() == "SignAndEncrypt" => true,
        (Some(m), p) if m.get_ref() == "Sign" && p != Policy::None => false,
        (Some(m), _) => {
            d.err(
                m.span(),
                format!(
                    "security mode {:?} does not fit the policy {policy:?}",
                    m.get_ref()
                ),
                Some(
                    "use \"SignAndEncrypt\" (the default) or \"Sign\"; policy \"None\" has no mode"
                        .to_owned(),
                ),
            );
            true
        }
    };
    let secret = match (&c.password, &c.password_env) {
        (Some(p), None) => Some((p.span(), Secret::Inline(p.get_ref().clone()))),
        (None, Some(e)) => Some((e.span(), Secret::Env(e.get_ref().clone()))),
        (None, None) => None,
        (Some(p), Some(_)) => {
            d.err(
                p.span(),
                "give password or password_env, not both",
                Some("password_env names an environment variable holding it".to_owned()),
            );
            None
        }
    };
    let user = match (&c.user, secret) {
        (Some(u), Some((_, s))) => Some((u.get_ref().clone(), s)),
        (Some(u), None) => {
            d.err(
                u.span(),
                format!("user {:?} has no password", u.get_ref()),
                Some(
                    "add password_env = \"VARIABLE\" (or password = \"...\"), or remove user to \
                     connect anonymously"
                        .to_owned(),
                ),
            );
            None
        }
        (None, Some((span, _))) => {
            d.err(
                span,
                "a password without a user",
                Some("add user = \"...\"".to_owned()),
            );
            None
        }
        (None, None) => None,
    };
    let user_certificate = match (&c.user_certificate, &c.user_key) {
        (Some(cert), Some(key)) => {
            if user.is_some() {
                d.err(
                    cert.span(),
                    "give a user (with its password) or a user certificate, not both",
                    Some("the session has one identity".to_owned()),
                );
            }
            Some((cert.get_ref().into(), key.get_ref().into()))
        }
        (Some(x), None) | (None, Some(x)) => {
            d.err(
                x.span(),
                "user_certificate and user_key go together",
                Some("give the user certificate (DER or PEM) and its private key (PEM)".to_owned()),
            );
            None
        }
        (None, None) => None,
    };
    if user.is_some() && policy == Policy::None {
        d.err(
            c.user.as_ref().map(Spanned::span).unwrap_or(c.id.span()),
            "a password over a connection without security would travel in clear",
            Some(format!("use a secure policy: {POLICIES}")),
        );
    }
    let publishing_interval = duration_in(
        d,
        &c.publishing_interval,
        "publishing_interval",
        Duration::from_millis(500),
        INTERVALS,
    );
    let sampling_interval = duration_in(
        d,
        &c.sampling_interval,
        "sampling_interval",
        Duration::from_millis(250),
        INTERVALS,
    );
    let minutes = |m: u64| Duration::from_secs(60 * m);
    let keep_alive = duration_in(
        d,
        &c.keep_alive,
        "keep_alive",
        Duration::from_secs(5),
        (Duration::from_secs(1), minutes(10), "use 1s to 10m"),
    );
    let request_timeout = duration_in(
        d,
        &c.request_timeout,
        "request_timeout",
        Duration::from_secs(10),
        (Duration::from_secs(1), minutes(5), "use 1s to 5m"),
    );
    let reconnect_max = duration_in(
        d,
        &c.reconnect_max,
        "reconnect_max",
        Duration::from_secs(10),
        (Duration::from_secs(1), minutes(10), "use 1s to 10m"),
    );
    if user_certificate.is_some() && policy == Policy::None {
        d.err(
            c.id.span(),
            "a user certificate needs a secure policy (the session signs with it)",
            Some(format!("use {POLICIES}")),
        );
    }
    let conn = ConnectionConfig {
        id,
        url,
        policy,
        encrypt,
        user,
        user_certificate,
        publishing_interval,
        sampling_interval,
        queue_size: queue_size(d, &c.queue_size, 10),
        keep_alive,
        request_timeout,
        reconnect_max,
    };
    Some(conn)
}

fn validate_server(d: &mut Diagnostics, s: RawServer) -> Option<ServerConfig> {
    if s.enabled == Some(false) {
        return None;
    }
    let (host, port) = match &s.listen {
        // Loopback unless asked: an OPC UA server on the plant network is a decision.
        None => ("127.0.0.1".to_owned(), 4840),
        Some(l) => match l.get_ref().rsplit_once(':') {
            Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok() => (
                h.trim_matches(['[', ']']).to_owned(),
                p.parse().unwrap_or(4840),
            ),
            _ => {
                d.err(
                    l.span(),
                    format!("listen {:?} is not HOST:PORT", l.get_ref()),
                    Some("e.g. \"0.0.0.0:4840\" or \"127.0.0.1:4840\"".to_owned()),
                );
                ("127.0.0.1".to_owned(), 4840)
            }
        },
    };
    let mut paths = Vec::new();
    for p in &s.paths {
        if let Some(path) = parse_path(d, p, "OPC UA server") {
            paths.push(path);
        }
    }
    let max_sessions = match &s.max_sessions {
        None => 50,
        Some(m) if (1..=10_000).contains(m.get_ref()) => *m.get_ref() as usize,
        Some(m) => {
            d.err(
                m.span(),
                format!("max_sessions {} is out of range", m.get_ref()),
                Some("use 1 to 10000".to_owned()),
            );
            50
        }
    };
    let hostnames = s
        .hostnames
        .unwrap_or_else(|| vec!["localhost".to_owned(), "127.0.0.1".to_owned()]);
    if hostnames.is_empty() || hostnames.iter().any(|h| h.trim().is_empty()) {
        d.err(
            s.listen.as_ref().map_or(0..0, Spanned::span),
            "[opcua.server] hostnames must name how clients reach the server",
            Some("e.g. hostnames = [\"plant-gw.example\", \"10.0.0.5\"] (they go into its certificate)".to_owned()),
        );
    }
    Some(ServerConfig {
        host,
        port,
        hostnames,
        paths,
        writes: s.writes.unwrap_or(false),
        allow_none: s.allow_none.unwrap_or(false),
        sign_only: s.sign_only.unwrap_or(false),
        max_sessions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<OpcuaSettings, Vec<String>> {
        let registry = ironplant_core::config::Registry::new().with::<OpcuaSettings>();
        match ironplant_core::config::parse_with("t.toml", text, &registry) {
            Ok(c) => Ok((*c.get::<OpcuaSettings>()).clone()),
            Err(e) => Err(e.errors.iter().map(|e| e.message.clone()).collect()),
        }
    }

    const GOOD: &str = r#"
[[opcua.connection]]
id = "labeller"
url = "opc.tcp://localhost:4841/"
user = "ironplant"
password_env = "PW"
publishing_interval = "200ms"

[[opcua.node]]
connection = "labeller"
node = "nsu=urn:acme:labeller;s=Labeller.Speed"
tag = "acme/lyon/pack/line1/labeller/speed"
type = "float"
deadband_percent = 1.0
writable = true

[[opcua.node]]
connection = "labeller"
node = "ns=2;i=7"
tag = "acme/lyon/pack/line1/labeller/count"
type = "int"
range = [0, 1000000]
"#;

    #[test]
    fn a_connection_and_its_nodes_become_tags_of_its_source() {
        let s = parse(GOOD).expect("valid");
        assert_eq!(s.connections.len(), 1);
        let c = &s.connections[0];
        assert_eq!(c.policy, Policy::Basic256Sha256);
        assert!(c.encrypt, "SignAndEncrypt by default");
        assert_eq!(c.publishing_interval, Duration::from_millis(200));
        assert_eq!(c.user, Some(("ironplant".into(), Secret::Env("PW".into()))));
        let speed = &s.nodes[0];
        assert_eq!(
            speed.node.namespace_uri.as_deref(),
            Some("urn:acme:labeller")
        );
        assert_eq!(speed.deadband, DeadbandConfig::Percent(1.0));
        assert_eq!(s.nodes[1].range, Some((0.0, 1_000_000.0)));
        let tags = s.tags();
        assert_eq!(tags.len(), 2);
        assert_eq!(tags[0].device.as_deref(), Some("opcua:labeller"));
        assert!(tags[0].writable);
        assert!(s.server.is_none(), "the server is off unless configured");
    }

    #[test]
    fn mistakes_are_reported_with_what_and_how() {
        let bad = r#"
[[opcua.connection]]
id = "l"
url = "http://x/"
policy = "Basic128Rsa15"
user = "u"

[[opcua.node]]
connection = "nope"
node = "ns=2;s=x"
tag = "a/b/c"
type = "float"

[[opcua.node]]
connection = "l"
node = "s=;;x"
tag = "a/b/c"
type = "real"
"#;
        let errs = parse(bad).expect_err("invalid");
        let all = errs.join("\n");
        for want in [
            "is not an OPC UA endpoint URL",
            "unknown security policy \"Basic128Rsa15\"",
            "user \"u\" has no password",
            "no [[opcua.connection]] has the id \"nope\"",
            "unknown tag type \"real\"",
        ] {
            assert!(all.contains(want), "{want:?} missing from:\n{all}");
        }
    }

    #[test]
    fn node_refs_keep_the_namespace_uri() {
        let r = NodeRef::parse("nsu=urn:a%3bb;s=X.Y").expect("nsu");
        assert_eq!(r.namespace_uri.as_deref(), Some("urn:a;b"));
        assert_eq!(r.node.to_string(), "s=X.Y");
        let r = NodeRef::parse("ns=3;i=1001").expect("ns");
        assert_eq!(r.namespace_uri, None);
        assert_eq!(r.node.namespace, 3);
        assert!(NodeRef::parse("nsu=;i=1").is_err());
        assert!(NodeRef::parse("hello").is_err());
    }

    #[test]
    fn the_server_is_served_only_when_configured() {
        let s = parse("[opcua.server]\nlisten = \"127.0.0.1:4855\"\npaths = [\"acme/lyon\"]\n")
            .expect("valid");
        let srv = s.server.expect("server");
        assert_eq!((srv.host.as_str(), srv.port), ("127.0.0.1", 4855));
        assert!(!srv.writes && !srv.allow_none);
        assert_eq!(srv.paths.len(), 1);
        let s = parse("[opcua.server]\nenabled = false\n").expect("valid");
        assert!(s.server.is_none());
    }
}
