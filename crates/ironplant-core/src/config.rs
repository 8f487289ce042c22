//! The configuration model (`ironplant.toml`) and its validation.
//!
//! Parsing is two steps: serde reads the TOML into `Raw*` structs that keep every value's byte
//! span, then [`validate`] checks meaning (paths, references, register overlaps, types) and
//! collects *every* problem with its position and a hint, instead of stopping at the first.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::ops::Range;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::asset::{Asset, AssetLevel, Location};
use crate::namespace::{Namespace, TagId, TagMeta};
use crate::path::{TagPath, MAX_DEPTH};
use crate::sample::ValueType;

// ---------------------------------------------------------------------------------------------
// Validated model

/// A validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub assets: Vec<AssetConfig>,
    pub devices: Vec<DeviceConfig>,
    pub tags: Vec<TagConfig>,
    pub historian: HistorianSettings,
    pub mqtt: MqttSettings,
    pub bridges: Vec<BridgeConfig>,
    pub sparkplug: SparkplugSettings,
    pub security: SecuritySettings,
    pub http: HttpSettings,
}

/// The `[security]` section: MQTT ACL rules, device client ids and per-user tag-prefix
/// limits (one policy for REST, MQTT and later the HMI and command path).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SecuritySettings {
    /// ACL rules (`<who> allow|deny publish|subscribe|both <filter>`), replacing the
    /// built-in defaults when given.
    pub acl: Option<Vec<String>>,
    /// Client id patterns a device may use (`%u` = its name, trailing `*`); `None`: the
    /// default `["%u", "%u-*"]`.
    pub device_client_ids: Option<Vec<String>>,
    /// Per-user tag-prefix limits: user → (read prefixes, write prefixes); `None`: no limit
    /// in that direction.
    pub tag_scopes: BTreeMap<String, ScopeSettings>,
}

/// One user's tag-prefix limits (`[security.tag_scopes.<user>]`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ScopeSettings {
    pub read: Option<Vec<TagPath>>,
    pub write: Option<Vec<TagPath>>,
}

/// Checks one ACL rule; the security crate provides it (see [`parse_with`]).
pub type AclRuleCheck = fn(&str) -> Result<(), String>;

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
    /// QoS 1/2 messages a session keeps while its client is away.
    pub max_session_queue: usize,
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

/// The `[sparkplug]` section: the Sparkplug B host application on the embedded broker.
#[derive(Debug, Clone, PartialEq)]
pub struct SparkplugSettings {
    /// Run the host whenever the MQTT broker runs.
    pub enabled: bool,
    /// The host id: its STATE topic is `spBv1.0/STATE/<host_id>`.
    pub host_id: String,
    /// Levels in front of every Sparkplug tag path (`<prefix>/<group>/<node>/<device>/<metric>`);
    /// `None` puts the group at the root.
    pub prefix: Option<TagPath>,
}

impl Default for SparkplugSettings {
    fn default() -> Self {
        SparkplugSettings {
            enabled: true,
            host_id: "ironplant".to_owned(),
            prefix: None,
        }
    }
}

/// The `[historian]` section.
#[derive(Debug, Clone, PartialEq)]
pub struct HistorianSettings {
    pub enabled: bool,
    /// Group-commit window of the WAL (one fsync per window).
    pub commit_interval: Duration,
    /// How often samples in memory are compressed into chunks (at the latest).
    pub flush_interval: Duration,
    /// Samples in memory that trigger compression into chunks.
    pub flush_samples: usize,
    /// Raw-data retention by tag prefix (longest prefix wins).
    pub retention: Vec<RetentionRule>,
    /// Lossy compression by tag prefix (longest prefix wins); lossless otherwise.
    pub lossy: Vec<LossyRule>,
}

impl Default for HistorianSettings {
    fn default() -> Self {
        HistorianSettings {
            enabled: true,
            commit_interval: Duration::from_millis(2),
            flush_interval: Duration::from_secs(600),
            flush_samples: 4_000_000,
            retention: Vec::new(),
            lossy: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct RetentionRule {
    pub prefix: String,
    pub keep: Duration,
}

/// A lossy compression rule, as historians offer it.
#[derive(Debug, Clone, PartialEq)]
pub struct LossyRule {
    pub prefix: String,
    pub method: LossyMethod,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LossyMethod {
    /// Store a value only when it moved more than this from the last stored one.
    Deadband(f64),
    /// Swinging-door trending with this compression deviation; a point at least every
    /// `max_interval` if set.
    SwingingDoor {
        deviation: f64,
        max_interval: Option<Duration>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct AssetConfig {
    pub path: TagPath,
    pub name: Option<String>,
    pub description: String,
    pub location: Location,
}

/// Protocols a device can speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    ModbusTcp,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DeviceConfig {
    pub id: String,
    pub protocol: Protocol,
    /// `host:port`.
    pub address: String,
    /// Default Modbus unit id for this device's tags.
    pub unit_id: u8,
    pub poll_interval: Duration,
    /// Per request.
    pub timeout: Duration,
    /// Upper bound of the reconnect back-off.
    pub reconnect_max: Duration,
    /// Unused registers a read may span to join two neighbouring blocks into one request.
    pub max_gap: u16,
    pub description: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TagConfig {
    pub path: TagPath,
    pub device: Option<String>,
    pub value_type: ValueType,
    pub unit: Option<String>,
    pub description: String,
    pub range: Option<(f64, f64)>,
    pub writable: bool,
    pub modbus: Option<ModbusPoint>,
}

/// The four Modbus data tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ModbusTable {
    Coil,
    DiscreteInput,
    Holding,
    Input,
}

impl ModbusTable {
    pub fn is_bits(self) -> bool {
        matches!(self, ModbusTable::Coil | ModbusTable::DiscreteInput)
    }
    pub fn is_writable(self) -> bool {
        matches!(self, ModbusTable::Coil | ModbusTable::Holding)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            ModbusTable::Coil => "coil",
            ModbusTable::DiscreteInput => "discrete_input",
            ModbusTable::Holding => "holding",
            ModbusTable::Input => "input",
        }
    }
    /// Most items one request may read (Modbus application protocol v1.1b3, 6.1-6.4).
    pub fn max_per_request(self) -> u16 {
        if self.is_bits() {
            2000
        } else {
            125
        }
    }
}

/// How register contents are interpreted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModbusDataType {
    Bool,
    U16,
    I16,
    U32,
    I32,
    U64,
    I64,
    F32,
    F64,
}

impl ModbusDataType {
    const NAMES: &'static str = "bool, u16, i16, u32, i32, u64, i64, f32, f64";

    fn parse(s: &str) -> Option<ModbusDataType> {
        use ModbusDataType::*;
        Some(match s {
            "bool" => Bool,
            "u16" | "uint16" => U16,
            "i16" | "int16" => I16,
            "u32" | "uint32" => U32,
            "i32" | "int32" => I32,
            "u64" | "uint64" => U64,
            "i64" | "int64" => I64,
            "f32" | "float32" | "float" => F32,
            "f64" | "float64" | "double" => F64,
            _ => return None,
        })
    }

    /// The name used in configuration files.
    pub fn as_str(self) -> &'static str {
        use ModbusDataType::*;
        match self {
            Bool => "bool",
            U16 => "u16",
            I16 => "i16",
            U32 => "u32",
            I32 => "i32",
            U64 => "u64",
            I64 => "i64",
            F32 => "f32",
            F64 => "f64",
        }
    }

    /// Registers it occupies (1 for bools, which use a bit or a coil).
    pub fn registers(self) -> u16 {
        use ModbusDataType::*;
        match self {
            Bool | U16 | I16 => 1,
            U32 | I32 | F32 => 2,
            U64 | I64 | F64 => 4,
        }
    }

    pub fn is_float(self) -> bool {
        matches!(self, ModbusDataType::F32 | ModbusDataType::F64)
    }
}

/// Order of the 16-bit words of a multi-register value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WordOrder {
    /// Most significant word first (the Modbus convention, "ABCD").
    BigEndian,
    /// Least significant word first ("CDAB", common on many PLCs).
    LittleEndian,
}

/// Order of the two bytes inside each register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteOrder {
    BigEndian,
    LittleEndian,
}

/// Where and how a tag lives in a Modbus device.
#[derive(Debug, Clone, PartialEq)]
pub struct ModbusPoint {
    pub unit_id: u8,
    pub table: ModbusTable,
    pub address: u16,
    pub data_type: ModbusDataType,
    pub word_order: WordOrder,
    pub byte_order: ByteOrder,
    /// For a bool stored in one bit of a register.
    pub bit: Option<u8>,
    pub scale: f64,
    pub offset: f64,
}

impl ModbusPoint {
    /// Number of coils or registers the point occupies.
    pub fn len(&self) -> u16 {
        if self.table.is_bits() {
            1
        } else {
            self.data_type.registers()
        }
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    /// Last address occupied, inclusive.
    pub fn last_address(&self) -> u32 {
        u32::from(self.address) + u32::from(self.len()) - 1
    }
}

impl Config {
    /// Builds the namespace: declared assets, implied assets for every ancestor of a tag that was
    /// not declared, and the tags. Tag ids follow config order.
    pub fn namespace(&self) -> Namespace {
        let mut ns = Namespace::new();
        let declared: HashMap<&TagPath, &AssetConfig> =
            self.assets.iter().map(|a| (&a.path, a)).collect();
        let mut all: BTreeMap<TagPath, Option<&AssetConfig>> = BTreeMap::new();
        let starts = self.assets.iter().map(|a| a.path.clone());
        let starts = starts.chain(self.tags.iter().filter_map(|t| t.path.parent()));
        for p in starts {
            let mut cur = Some(p);
            while let Some(c) = cur {
                cur = c.parent();
                let cfg = declared.get(&c).copied();
                all.entry(c).or_insert(cfg);
            }
        }
        // BTreeMap order puts a parent before its children, so effective locations inherit.
        let mut effective: HashMap<TagPath, Location> = HashMap::new();
        for (path, cfg) in &all {
            let Some(level) = AssetLevel::from_depth(path.depth()) else {
                continue;
            };
            let own = cfg.map(|c| c.location.clone()).unwrap_or_default();
            let parent_loc = path
                .parent()
                .and_then(|p| effective.get(&p).cloned())
                .unwrap_or_default();
            let eff = own.inherit(&parent_loc);
            effective.insert(path.clone(), eff.clone());
            ns.add_asset(Asset {
                path: path.clone(),
                level,
                name: cfg
                    .and_then(|c| c.name.clone())
                    .unwrap_or_else(|| path.name().to_owned()),
                description: cfg.map(|c| c.description.clone()).unwrap_or_default(),
                location: own,
                effective_location: eff,
            });
        }
        for t in &self.tags {
            // Duplicates were rejected by validation.
            let _ = ns.add_tag(TagMeta {
                id: TagId(0),
                path: t.path.clone(),
                value_type: t.value_type,
                unit: t.unit.clone(),
                description: t.description.clone(),
                range: t.range,
                writable: t.writable,
                device: t.device.clone(),
            });
        }
        ns
    }
}

// ---------------------------------------------------------------------------------------------
// Errors

/// One problem in a configuration file, at a byte span of its text.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    pub span: Range<usize>,
    pub message: String,
    pub hint: Option<String>,
}

/// Every problem found in one file, renderable as `file:line:col: error: ...` lines.
#[derive(Debug, Clone)]
pub struct ConfigErrors {
    pub file: String,
    pub source: String,
    pub errors: Vec<ConfigError>,
}

impl ConfigErrors {
    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        line_col(&self.source, offset)
    }
}

fn line_col(source: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(source.len());
    let before = source.get(..offset).unwrap_or(source);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before
        .get(line_start..)
        .map_or(1, |s| s.chars().count() + 1);
    (line, col)
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            let (line, col) = self.line_col(e.span.start);
            writeln!(f, "{}:{line}:{col}: error: {}", self.file, e.message)?;
            if let Some(text) = self.source.lines().nth(line - 1) {
                let width = e
                    .span
                    .len()
                    .clamp(1, text.chars().count().saturating_sub(col - 1).max(1));
                writeln!(f, "{line:>5} | {text}")?;
                writeln!(f, "      | {}{}", " ".repeat(col - 1), "^".repeat(width))?;
            }
            if let Some(hint) = &e.hint {
                writeln!(f, "      = hint: {hint}")?;
            }
        }
        write!(f, "{} error(s) in {}", self.errors.len(), self.file)
    }
}

impl std::error::Error for ConfigErrors {}

// ---------------------------------------------------------------------------------------------
// Sections owned by other crates

/// Deserialises the top-level key `key` of a config document into `T` (`None` when absent).
/// Spans inside `T` (`toml::Spanned`) are byte offsets of the whole file, so a domain crate
/// validates its own section and reports errors that render as `file:line:col` like core's.
pub fn section<T: serde::de::DeserializeOwned>(
    source: &str,
    key: &str,
) -> Result<Option<T>, ConfigError> {
    use serde::de::DeserializeSeed;
    let de = toml::de::Deserializer::parse(source).map_err(toml_error)?;
    Pick::<T> {
        key,
        _t: std::marker::PhantomData,
    }
    .deserialize(de)
    .map_err(toml_error)
}

/// A TOML or serde error as a config error at its span.
pub fn toml_error(e: toml::de::Error) -> ConfigError {
    let span = e.span().unwrap_or(0..0);
    let message = e.message().trim().to_owned();
    let hint = if message.contains("unknown field") {
        Some("check the spelling; the config reference is in docs/config.md".to_owned())
    } else {
        None
    };
    ConfigError {
        span,
        message,
        hint,
    }
}

/// Picks one key of the top-level table, skipping the others.
struct Pick<'k, T> {
    key: &'k str,
    _t: std::marker::PhantomData<T>,
}

impl<'de, T: serde::de::DeserializeOwned> serde::de::DeserializeSeed<'de> for Pick<'_, T> {
    type Value = Option<T>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Option<T>, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, T: serde::de::DeserializeOwned> serde::de::Visitor<'de> for Pick<'_, T> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a TOML document")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Option<T>, A::Error> {
        let mut found = None;
        while let Some(k) = map.next_key::<String>()? {
            if k == self.key {
                found = Some(map.next_value::<T>()?);
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

// ---------------------------------------------------------------------------------------------
// Raw (as written) model

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default, rename = "asset")]
    assets: Vec<RawAsset>,
    #[serde(default, rename = "device")]
    devices: Vec<RawDevice>,
    #[serde(default, rename = "tag")]
    tags: Vec<RawTag>,
    historian: Option<RawHistorian>,
    mqtt: Option<RawMqtt>,
    #[serde(default, rename = "bridge")]
    bridges: Vec<RawBridge>,
    sparkplug: Option<RawSparkplug>,
    security: Option<RawSecurity>,
    http: Option<RawHttp>,
    /// `[[ingest.json]]`: owned and validated by ironplant-ingest (`IngestSettings::from_source`).
    #[allow(dead_code)]
    ingest: Option<serde::de::IgnoredAny>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSecurity {
    acl: Option<Vec<Spanned<String>>>,
    device_client_ids: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    tag_scopes: BTreeMap<String, RawScope>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScope {
    read: Option<Vec<Spanned<String>>>,
    write: Option<Vec<Spanned<String>>>,
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMqtt {
    uns_prefix: Option<Spanned<String>>,
    max_packet_size: Option<Spanned<i64>>,
    max_queue: Option<Spanned<i64>>,
    max_session_queue: Option<Spanned<i64>>,
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSparkplug {
    enabled: Option<bool>,
    host_id: Option<Spanned<String>>,
    prefix: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHistorian {
    enabled: Option<bool>,
    commit_interval: Option<Spanned<String>>,
    flush_interval: Option<Spanned<String>>,
    flush_samples: Option<Spanned<i64>>,
    #[serde(default)]
    retention: Vec<RawRetention>,
    #[serde(default)]
    lossy: Vec<RawLossy>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetention {
    prefix: Spanned<String>,
    keep: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLossy {
    prefix: Spanned<String>,
    deadband: Option<Spanned<f64>>,
    swinging_door: Option<Spanned<f64>>,
    max_interval: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAsset {
    path: Spanned<String>,
    name: Option<String>,
    #[serde(default)]
    description: String,
    location: Option<Spanned<RawLocation>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLocation {
    latitude: Option<Spanned<f64>>,
    longitude: Option<Spanned<f64>>,
    zone: Option<String>,
    x: Option<f64>,
    y: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDevice {
    id: Spanned<String>,
    protocol: Spanned<String>,
    address: Spanned<String>,
    unit_id: Option<Spanned<i64>>,
    poll_interval: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    reconnect_max: Option<Spanned<String>>,
    max_gap: Option<Spanned<i64>>,
    #[serde(default)]
    description: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTag {
    path: Spanned<String>,
    device: Option<Spanned<String>>,
    unit: Option<String>,
    #[serde(default)]
    description: String,
    min: Option<Spanned<f64>>,
    max: Option<Spanned<f64>>,
    writable: Option<Spanned<bool>>,
    modbus: Option<Spanned<RawModbus>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModbus {
    unit_id: Option<Spanned<i64>>,
    table: Spanned<String>,
    address: Spanned<i64>,
    #[serde(rename = "type")]
    data_type: Option<Spanned<String>>,
    word_order: Option<Spanned<String>>,
    byte_order: Option<Spanned<String>>,
    bit: Option<Spanned<i64>>,
    scale: Option<f64>,
    offset: Option<f64>,
}

// ---------------------------------------------------------------------------------------------
// Validation

const DEFAULT_POLL: Duration = Duration::from_secs(1);
const DEFAULT_TIMEOUT: Duration = Duration::from_millis(1000);
const DEFAULT_RECONNECT_MAX: Duration = Duration::from_secs(5);

/// Collects every problem of a config file (each domain crate validates its own section into
/// it), so a user sees all of them at once.
pub struct Diagnostics {
    pub errors: Vec<ConfigError>,
    acl_check: Option<AclRuleCheck>,
}

impl Default for Diagnostics {
    fn default() -> Diagnostics {
        Diagnostics::new()
    }
}

impl Diagnostics {
    pub fn new() -> Diagnostics {
        Diagnostics {
            errors: Vec::new(),
            acl_check: None,
        }
    }

    /// Whether nothing was reported.
    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    /// Reports a problem at `span` (a byte range of the file) with an optional hint.
    pub fn err(
        &mut self,
        span: Range<usize>,
        message: impl Into<String>,
        hint: impl Into<Option<String>>,
    ) {
        self.errors.push(ConfigError {
            span,
            message: message.into(),
            hint: hint.into(),
        });
    }
}

/// Parses and validates a configuration. `file` names the source in error messages. ACL rules
/// in `[security]` are checked only for syntax errors TOML itself sees; use [`parse_with`]
/// with the security crate's rule parser to check them fully.
pub fn parse(file: &str, source: &str) -> Result<Config, ConfigErrors> {
    parse_with(file, source, None)
}

/// [`parse`], checking each `[security] acl` rule with `acl_check` (errors positioned on the
/// rule's string).
pub fn parse_with(
    file: &str,
    source: &str,
    acl_check: Option<AclRuleCheck>,
) -> Result<Config, ConfigErrors> {
    let fail = |errors| ConfigErrors {
        file: file.to_owned(),
        source: source.to_owned(),
        errors,
    };
    let raw: RawConfig = match toml::from_str(source) {
        Ok(raw) => raw,
        Err(e) => {
            let span = e.span().unwrap_or(0..0);
            let message = e.message().trim().to_owned();
            let hint = if message.contains("unknown field") {
                Some("check the spelling; the config reference is in docs/config.md".to_owned())
            } else {
                None
            };
            return Err(fail(vec![ConfigError {
                span,
                message,
                hint,
            }]));
        }
    };
    let mut c = Diagnostics::new();
    c.acl_check = acl_check;
    let config = validate(raw, &mut c);
    if c.errors.is_empty() {
        Ok(config)
    } else {
        c.errors.sort_by_key(|e| e.span.start);
        Err(fail(c.errors))
    }
}

/// A tag or asset path, or an error at its span.
pub fn parse_path(c: &mut Diagnostics, raw: &Spanned<String>, what: &str) -> Option<TagPath> {
    match TagPath::parse(raw.get_ref()) {
        Ok(p) => Some(p),
        Err(e) => {
            c.err(
                raw.span(),
                format!("invalid {what} path {:?}: {e}", raw.get_ref()),
                Some("paths look like \"enterprise/site/area/line/cell/device/tag\"".to_owned()),
            );
            None
        }
    }
}

/// A duration such as "500ms" or "5s" (`default` when absent), or an error at its span.
pub fn parse_duration(
    c: &mut Diagnostics,
    raw: &Option<Spanned<String>>,
    field: &str,
    default: Duration,
) -> Duration {
    let Some(raw) = raw else { return default };
    match humantime::parse_duration(raw.get_ref()) {
        Ok(d) if !d.is_zero() => d,
        Ok(_) => {
            c.err(
                raw.span(),
                format!("{field} must be greater than zero"),
                Some("e.g. \"500ms\" or \"1s\"".to_owned()),
            );
            default
        }
        Err(e) => {
            c.err(
                raw.span(),
                format!("{field} {:?} is not a duration: {e}", raw.get_ref()),
                Some("write a number with a unit, e.g. \"250ms\", \"1s\", \"2m\"".to_owned()),
            );
            default
        }
    }
}

/// A small integer 0-255, or an error at its span.
pub fn parse_u8(c: &mut Diagnostics, raw: &Spanned<i64>, field: &str) -> u8 {
    u8::try_from(*raw.get_ref()).unwrap_or_else(|_| {
        c.err(
            raw.span(),
            format!("{field} {} is out of range", raw.get_ref()),
            Some("use 0..=255".to_owned()),
        );
        0
    })
}

fn validate(raw: RawConfig, c: &mut Diagnostics) -> Config {
    // Assets.
    let mut assets = Vec::new();
    let mut asset_paths = HashSet::new();
    for a in raw.assets {
        let Some(path) = parse_path(c, &a.path, "asset") else {
            continue;
        };
        if path.depth() >= MAX_DEPTH {
            c.err(
                a.path.span(),
                format!(
                    "asset path {path} has {} levels; assets stop at the device level (6)",
                    path.depth()
                ),
                Some("the 7th level is a tag; declare it as a [[tag]]".to_owned()),
            );
            continue;
        }
        if !asset_paths.insert(path.clone()) {
            c.err(
                a.path.span(),
                format!("asset {path} is declared twice"),
                Some("remove one of the [[asset]] entries".to_owned()),
            );
            continue;
        }
        let mut location = Location::default();
        if let Some(l) = a.location {
            let span = l.span();
            let l = l.into_inner();
            if let Some(lat) = &l.latitude {
                if !(-90.0..=90.0).contains(lat.get_ref()) {
                    c.err(
                        lat.span(),
                        format!("latitude {} is outside -90..=90", lat.get_ref()),
                        Some("give degrees in WGS 84, e.g. 45.76".to_owned()),
                    );
                }
            }
            if let Some(lon) = &l.longitude {
                if !(-180.0..=180.0).contains(lon.get_ref()) {
                    c.err(
                        lon.span(),
                        format!("longitude {} is outside -180..=180", lon.get_ref()),
                        Some("give degrees in WGS 84, e.g. 4.84".to_owned()),
                    );
                }
            }
            if l.latitude.is_some() != l.longitude.is_some() {
                c.err(
                    span.clone(),
                    "a location needs both latitude and longitude, or neither",
                    None,
                );
            }
            if l.x.is_some() != l.y.is_some() {
                c.err(
                    span,
                    "a location needs both x and y (metres inside the site), or neither",
                    None,
                );
            }
            location = Location {
                latitude: l.latitude.map(Spanned::into_inner),
                longitude: l.longitude.map(Spanned::into_inner),
                zone: l.zone,
                x_m: l.x,
                y_m: l.y,
            };
        }
        assets.push(AssetConfig {
            path,
            name: a.name,
            description: a.description,
            location,
        });
    }

    // Devices.
    let mut devices = Vec::new();
    let mut device_ids: HashMap<String, usize> = HashMap::new();
    for d in raw.devices {
        let id = d.id.get_ref().clone();
        if id.is_empty()
            || !id
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '_' | '-' | '.'))
        {
            c.err(
                d.id.span(),
                format!("device id {id:?} is not valid"),
                Some("use letters, digits, '_', '-' and '.'".to_owned()),
            );
        }
        if device_ids.contains_key(&id) {
            c.err(
                d.id.span(),
                format!("device {id:?} is declared twice"),
                Some("give every [[device]] its own id".to_owned()),
            );
            continue;
        }
        let protocol = match d.protocol.get_ref().as_str() {
            "modbus-tcp" | "modbus" => Protocol::ModbusTcp,
            other => {
                c.err(
                    d.protocol.span(),
                    format!("unknown protocol {other:?}"),
                    Some("supported: \"modbus-tcp\"".to_owned()),
                );
                Protocol::ModbusTcp
            }
        };
        let addr = d.address.get_ref();
        let port_ok = addr
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !port_ok {
            c.err(
                d.address.span(),
                format!("address {addr:?} is not host:port"),
                Some("e.g. \"192.168.1.10:502\" or \"plc1.local:502\"".to_owned()),
            );
        }
        let unit_id = d.unit_id.as_ref().map_or(1, |u| parse_u8(c, u, "unit_id"));
        let poll_interval = parse_duration(c, &d.poll_interval, "poll_interval", DEFAULT_POLL);
        let timeout = parse_duration(c, &d.timeout, "timeout", DEFAULT_TIMEOUT.min(poll_interval));
        let reconnect_max =
            parse_duration(c, &d.reconnect_max, "reconnect_max", DEFAULT_RECONNECT_MAX);
        let max_gap = match &d.max_gap {
            None => 0,
            Some(g) => u16::try_from(*g.get_ref())
                .ok()
                .filter(|g| *g <= 124)
                .unwrap_or_else(|| {
                    c.err(
                        g.span(),
                        format!("max_gap {} is out of range", g.get_ref()),
                        Some("use 0..=124 registers".to_owned()),
                    );
                    0
                }),
        };
        device_ids.insert(id.clone(), devices.len());
        devices.push(DeviceConfig {
            id,
            protocol,
            address: addr.clone(),
            unit_id,
            poll_interval,
            timeout,
            reconnect_max,
            max_gap,
            description: d.description,
        });
    }

    // Tags.
    let mut tags = Vec::new();
    let mut tag_paths = HashSet::new();
    // (device, unit, table) -> [(first, last, bit, tag index, span)]
    type Occupant = (u32, u32, Option<u8>, usize, Range<usize>);
    let mut occupancy: BTreeMap<(String, u8, ModbusTable), Vec<Occupant>> = BTreeMap::new();
    for t in raw.tags {
        let path = parse_path(c, &t.path, "tag");
        if let Some(p) = &path {
            if asset_paths.contains(p) {
                c.err(
                    t.path.span(),
                    format!("{p} is declared as an asset and as a tag"),
                    Some("a tag path must end below its asset".to_owned()),
                );
            } else if !tag_paths.insert(p.clone()) {
                c.err(
                    t.path.span(),
                    format!("tag {p} is declared twice"),
                    Some("remove one of the [[tag]] entries".to_owned()),
                );
            }
        }
        let device = match &t.device {
            None => None,
            Some(d) => match device_ids.get(d.get_ref()) {
                Some(i) => Some(&devices[*i]),
                None => {
                    let mut known: Vec<_> = device_ids.keys().map(String::as_str).collect();
                    known.sort_unstable();
                    let hint = if known.is_empty() {
                        "declare it in a [[device]] section".to_owned()
                    } else {
                        format!("known devices: {}", known.join(", "))
                    };
                    c.err(
                        d.span(),
                        format!("unknown device {:?}", d.get_ref()),
                        Some(hint),
                    );
                    None
                }
            },
        };
        let range = match (&t.min, &t.max) {
            (Some(lo), Some(hi)) => {
                if lo.get_ref() >= hi.get_ref() {
                    c.err(
                        lo.span(),
                        format!("min {} is not below max {}", lo.get_ref(), hi.get_ref()),
                        None,
                    );
                }
                Some((*lo.get_ref(), *hi.get_ref()))
            }
            (Some(x), None) | (None, Some(x)) => {
                c.err(
                    x.span(),
                    "give both min and max for the engineering range",
                    None,
                );
                None
            }
            (None, None) => None,
        };
        let mut writable = t.writable.as_ref().is_some_and(|w| *w.get_ref());
        let mut value_type = ValueType::Float;
        let modbus = match (&t.modbus, &t.device) {
            (Some(m), None) => {
                c.err(
                    m.span(),
                    "a tag with a modbus mapping needs a device",
                    Some("add device = \"<device id>\"".to_owned()),
                );
                None
            }
            (None, Some(d)) => {
                c.err(
                    d.span(),
                    "a tag of a Modbus device needs a modbus mapping",
                    Some(
                        "add modbus = { table = \"holding\", address = 0, type = \"u16\" }"
                            .to_owned(),
                    ),
                );
                None
            }
            (Some(m), Some(_)) => {
                let point = validate_modbus(c, m, device.map_or(1, |d| d.unit_id));
                if let (Some(p), Some(w)) = (&point, &t.writable) {
                    if *w.get_ref() && !p.table.is_writable() {
                        c.err(
                            w.span(),
                            format!("a tag in the {} table cannot be writable", p.table.as_str()),
                            Some("only coil and holding tables accept writes".to_owned()),
                        );
                        writable = false;
                    }
                }
                if let Some(p) = &point {
                    value_type = if p.data_type == ModbusDataType::Bool {
                        ValueType::Bool
                    } else if p.data_type.is_float() || p.scale != 1.0 || p.offset != 0.0 {
                        ValueType::Float
                    } else {
                        ValueType::Int
                    };
                    if let (Some(dev), Some(_)) = (device, &path) {
                        let first = u32::from(p.address);
                        let entry = occupancy
                            .entry((dev.id.clone(), p.unit_id, p.table))
                            .or_default();
                        entry.push((
                            first,
                            p.last_address(),
                            p.bit,
                            tags.len(),
                            m.get_ref().address.span(),
                        ));
                    }
                }
                point
            }
            (None, None) => None,
        };
        let Some(path) = path else { continue };
        tags.push(TagConfig {
            path,
            device: device.map(|d| d.id.clone()),
            value_type,
            unit: t.unit,
            description: t.description,
            range,
            writable,
            modbus,
        });
    }

    // Register overlaps, per device, unit and table.
    for ((dev, unit, table), mut occ) in occupancy {
        occ.sort_by_key(|o| (o.0, o.3));
        for i in 1..occ.len() {
            for j in 0..i {
                let (a, b) = (&occ[j], &occ[i]);
                let overlap = b.0 <= a.1 && a.0 <= b.1;
                let distinct_bits =
                    matches!((a.2, b.2), (Some(x), Some(y)) if x != y) && a.0 == a.1 && b.0 == b.1;
                if overlap && !distinct_bits {
                    c.err(
                        b.4.clone(),
                        format!(
                            "{} {}..={} of tag {} overlaps tag {} ({} {}..={}) on device {dev:?} unit {unit}",
                            table.as_str(), b.0, b.1, tags[b.3].path, tags[a.3].path, table.as_str(), a.0, a.1
                        ),
                        Some(format!("move one of the two tags; a {} needs {} register(s)", tags[b.3].modbus.as_ref().map_or("value", |m| m.data_type.as_str()), b.1 - b.0 + 1)),
                    );
                }
            }
        }
    }

    let historian = validate_historian(c, raw.historian);
    let mqtt = validate_mqtt(c, raw.mqtt);
    let bridges = validate_bridges(c, raw.bridges);
    let sparkplug = validate_sparkplug(c, raw.sparkplug);
    let security = validate_security(c, raw.security);
    let http = validate_http(c, raw.http);
    Config {
        assets,
        devices,
        tags,
        historian,
        mqtt,
        bridges,
        sparkplug,
        security,
        http,
    }
}

fn validate_security(c: &mut Diagnostics, raw: Option<RawSecurity>) -> SecuritySettings {
    let Some(raw) = raw else {
        return SecuritySettings::default();
    };
    let acl = raw.acl.map(|rules| {
        rules
            .into_iter()
            .map(|r| {
                if let Some(check) = c.acl_check {
                    if let Err(e) = check(r.get_ref()) {
                        c.err(
                            r.span(),
                            format!("invalid ACL rule {:?}: {e}", r.get_ref()),
                            Some("write `<all|role:R|user:U|device:D> allow|deny publish|subscribe|both <topic filter>`, e.g. \"role:viewer allow subscribe acme/#\"".to_owned()),
                        );
                    }
                }
                r.into_inner()
            })
            .collect()
    });
    let device_client_ids = raw.device_client_ids.map(|ids| {
        ids.into_iter()
            .map(|p| {
                let v = p.get_ref();
                let stem = v.strip_suffix('*').unwrap_or(v);
                if !v.contains("%u") || stem.contains('*') || v.is_empty() {
                    c.err(
                        p.span(),
                        format!("device client id pattern {v:?} must contain %u (the device name) and may end with one *"),
                        Some("e.g. \"%u\" or \"%u-*\"".to_owned()),
                    );
                }
                p.into_inner()
            })
            .collect()
    });
    let mut tag_scopes = BTreeMap::new();
    for (user, scope) in raw.tag_scopes {
        let mut paths = |list: Option<Vec<Spanned<String>>>| {
            list.map(|l| {
                l.iter()
                    .filter_map(|p| parse_path(c, p, "tag prefix"))
                    .collect::<Vec<_>>()
            })
        };
        let read = paths(scope.read);
        let write = paths(scope.write);
        tag_scopes.insert(user, ScopeSettings { read, write });
    }
    SecuritySettings {
        acl,
        device_client_ids,
        tag_scopes,
    }
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

/// Sparkplug prefix levels at most: group, node, device and one metric level must still fit.
const SPARKPLUG_PREFIX_MAX: usize = MAX_DEPTH - 4;

fn validate_sparkplug(c: &mut Diagnostics, raw: Option<RawSparkplug>) -> SparkplugSettings {
    let d = SparkplugSettings::default();
    let Some(raw) = raw else { return d };
    let host_id = match raw.host_id {
        None => d.host_id,
        Some(h) => {
            let id = h.get_ref();
            // Sparkplug ids are UTF-8 without '/', '+' or '#'; we also keep them short and
            // printable so the STATE topic is easy to type.
            let ok = !id.is_empty()
                && id.len() <= 64
                && id
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '_' | '-' | '.'));
            if !ok {
                c.err(
                    h.span(),
                    format!("invalid Sparkplug host id {id:?}"),
                    Some(
                        "use 1-64 characters from A-Z a-z 0-9 _ - ., e.g. \"ironplant\"".to_owned(),
                    ),
                );
            }
            id.clone()
        }
    };
    let prefix = raw.prefix.and_then(|p| {
        let text = p.get_ref().trim_end_matches('/');
        if text.is_empty() {
            return None;
        }
        match TagPath::parse(text) {
            Ok(path) if path.depth() <= SPARKPLUG_PREFIX_MAX => Some(path),
            Ok(path) => {
                c.err(
                    p.span(),
                    format!(
                        "Sparkplug prefix {text:?} has {} levels; at most {SPARKPLUG_PREFIX_MAX} leave room for group/node/device/metric",
                        path.depth()
                    ),
                    Some("shorten it, e.g. \"acme/lyon/sparkplug\"".to_owned()),
                );
                None
            }
            Err(e) => {
                c.err(
                    p.span(),
                    format!("invalid Sparkplug prefix {text:?}: {e}"),
                    Some("use a path prefix such as \"acme/lyon/sparkplug\" (\"\" for none)".to_owned()),
                );
                None
            }
        }
    });
    SparkplugSettings {
        enabled: raw.enabled.unwrap_or(true),
        host_id,
        prefix,
    }
}

fn int_in(
    c: &mut Diagnostics,
    raw: &Option<Spanned<i64>>,
    field: &str,
    range: std::ops::RangeInclusive<i64>,
    default: usize,
) -> usize {
    let Some(n) = raw else { return default };
    match usize::try_from(*n.get_ref()) {
        Ok(v) if range.contains(n.get_ref()) => v,
        _ => {
            c.err(
                n.span(),
                format!("{field} {} is out of range", n.get_ref()),
                Some(format!("use {}..={}", range.start(), range.end())),
            );
            default
        }
    }
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

/// A size in bytes: a number or a string with a unit ("512MB", "1GiB").
pub fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|ch: char| !ch.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult)
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
            name,
        });
    }
    out
}

fn validate_prefix(c: &mut Diagnostics, raw: &Spanned<String>) -> String {
    let p = raw.get_ref().trim_end_matches('/');
    if p.is_empty() {
        return String::new();
    }
    if let Err(e) = TagPath::parse(p) {
        c.err(
            raw.span(),
            format!("invalid prefix {:?}: {e}", raw.get_ref()),
            Some("use a path prefix such as \"acme/lyon\" (\"\" matches every tag)".to_owned()),
        );
    }
    p.to_owned()
}

fn validate_historian(c: &mut Diagnostics, raw: Option<RawHistorian>) -> HistorianSettings {
    let d = HistorianSettings::default();
    let Some(h) = raw else { return d };
    let flush_samples = match &h.flush_samples {
        None => d.flush_samples,
        Some(n) => usize::try_from(*n.get_ref())
            .ok()
            .filter(|n| (1_000..=100_000_000).contains(n))
            .unwrap_or_else(|| {
                c.err(
                    n.span(),
                    format!("flush_samples {} is out of range", n.get_ref()),
                    Some("use 1000..=100000000".to_owned()),
                );
                d.flush_samples
            }),
    };
    let retention = h
        .retention
        .iter()
        .map(|r| RetentionRule {
            prefix: validate_prefix(c, &r.prefix),
            keep: parse_duration(c, &Some(r.keep.clone()), "keep", Duration::MAX),
        })
        .collect();
    let lossy = h
        .lossy
        .iter()
        .filter_map(|l| {
            let prefix = validate_prefix(c, &l.prefix);
            let positive = |c: &mut Diagnostics, x: &Spanned<f64>, what: &str| {
                let ok = x.get_ref().is_finite() && *x.get_ref() > 0.0;
                if !ok {
                    c.err(
                        x.span(),
                        format!("{what} {} must be a positive number", x.get_ref()),
                        Some("give it in the tag's engineering units, e.g. 0.5".to_owned()),
                    );
                }
                ok
            };
            let method = match (&l.deadband, &l.swinging_door) {
                (Some(db), None) => {
                    positive(c, db, "deadband").then_some(LossyMethod::Deadband(*db.get_ref()))
                }
                (None, Some(sd)) => {
                    positive(c, sd, "swinging_door").then(|| LossyMethod::SwingingDoor {
                        deviation: *sd.get_ref(),
                        max_interval: l.max_interval.as_ref().map(|m| {
                            parse_duration(
                                c,
                                &Some(m.clone()),
                                "max_interval",
                                Duration::from_secs(600),
                            )
                        }),
                    })
                }
                _ => {
                    c.err(
                        l.prefix.span(),
                        "a lossy rule needs exactly one of deadband or swinging_door",
                        Some("e.g. swinging_door = 0.5 (engineering units)".to_owned()),
                    );
                    None
                }
            };
            method.map(|method| LossyRule { prefix, method })
        })
        .collect();
    HistorianSettings {
        enabled: h.enabled.unwrap_or(true),
        commit_interval: parse_duration(
            c,
            &h.commit_interval,
            "commit_interval",
            d.commit_interval,
        ),
        flush_interval: parse_duration(c, &h.flush_interval, "flush_interval", d.flush_interval),
        flush_samples,
        retention,
        lossy,
    }
}

fn validate_modbus(
    c: &mut Diagnostics,
    m: &Spanned<RawModbus>,
    default_unit: u8,
) -> Option<ModbusPoint> {
    let m = m.get_ref();
    let errors_before = c.errors.len();
    let table = match m.table.get_ref().as_str() {
        "coil" | "coils" => ModbusTable::Coil,
        "discrete_input" | "discrete_inputs" | "discrete" => ModbusTable::DiscreteInput,
        "holding" | "holding_register" | "holding_registers" => ModbusTable::Holding,
        "input" | "input_register" | "input_registers" => ModbusTable::Input,
        other => {
            c.err(
                m.table.span(),
                format!("unknown Modbus table {other:?}"),
                Some("use coil, discrete_input, holding or input".to_owned()),
            );
            ModbusTable::Holding
        }
    };
    let data_type = match &m.data_type {
        None if table.is_bits() => ModbusDataType::Bool,
        None => ModbusDataType::U16,
        Some(dt) => match ModbusDataType::parse(dt.get_ref()) {
            Some(t) => {
                if table.is_bits() && t != ModbusDataType::Bool {
                    c.err(
                        dt.span(),
                        format!(
                            "a {} holds single bits, not {}",
                            table.as_str(),
                            dt.get_ref()
                        ),
                        Some("use type = \"bool\" or a register table".to_owned()),
                    );
                }
                t
            }
            None => {
                c.err(
                    dt.span(),
                    format!("unknown data type {:?}", dt.get_ref()),
                    Some(format!("use one of: {}", ModbusDataType::NAMES)),
                );
                ModbusDataType::U16
            }
        },
    };
    let bit = match &m.bit {
        None => None,
        Some(b) => {
            if table.is_bits() || data_type != ModbusDataType::Bool {
                c.err(
                    b.span(),
                    "bit applies only to type = \"bool\" in a holding or input register",
                    None,
                );
            }
            match u8::try_from(*b.get_ref()).ok().filter(|b| *b < 16) {
                Some(b) => Some(b),
                None => {
                    c.err(
                        b.span(),
                        format!("bit {} is out of range", b.get_ref()),
                        Some("use 0..=15 (0 is the least significant bit)".to_owned()),
                    );
                    None
                }
            }
        }
    };
    if !table.is_bits() && data_type == ModbusDataType::Bool && m.bit.is_none() {
        c.err(
            m.table.span(),
            format!("a bool in the {} table needs a bit number", table.as_str()),
            Some("add bit = 0..15, or use a coil/discrete_input table".to_owned()),
        );
    }
    let order = |c: &mut Diagnostics, raw: &Option<Spanned<String>>, what: &str| match raw
        .as_ref()
        .map(|r| (r.get_ref().as_str(), r.span()))
    {
        None | Some(("big", _)) => true,
        Some(("little", _)) => false,
        Some((other, span)) => {
            c.err(
                span,
                format!("unknown {what} {other:?}"),
                Some("use \"big\" or \"little\"".to_owned()),
            );
            true
        }
    };
    let word_order = if order(c, &m.word_order, "word_order") {
        WordOrder::BigEndian
    } else {
        WordOrder::LittleEndian
    };
    let byte_order = if order(c, &m.byte_order, "byte_order") {
        ByteOrder::BigEndian
    } else {
        ByteOrder::LittleEndian
    };
    let unit_id = m
        .unit_id
        .as_ref()
        .map_or(default_unit, |u| parse_u8(c, u, "unit_id"));
    let scale = m.scale.unwrap_or(1.0);
    let offset = m.offset.unwrap_or(0.0);
    if !scale.is_finite() || scale == 0.0 || !offset.is_finite() {
        c.err(
            m.address.span(),
            "scale must be a finite non-zero number and offset finite",
            None,
        );
    }
    let len = if table.is_bits() {
        1
    } else {
        u32::from(data_type.registers())
    };
    let address = match u16::try_from(*m.address.get_ref()) {
        Ok(a) if u32::from(a) + len - 1 <= 0xFFFF => a,
        _ => {
            c.err(
                m.address.span(),
                format!(
                    "address {} is out of range for a {}",
                    m.address.get_ref(),
                    data_type.as_str()
                ),
                Some(format!(
                    "use 0..={} (0-based protocol addresses, not 4xxxx numbers)",
                    0x1_0000 - len
                )),
            );
            return None;
        }
    };
    if c.errors.len() > errors_before {
        return None;
    }
    Some(ModbusPoint {
        unit_id,
        table,
        address,
        data_type,
        word_order,
        byte_order,
        bit,
        scale,
        offset,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[[asset]]
path = "acme/lyon"
name = "Lyon plant"
location = { latitude = 45.76, longitude = 4.84 }

[[asset]]
path = "acme/lyon/bottling/line1/filler"
location = { zone = "hall-b", x = 12.5, y = 40.0 }

[[device]]
id = "plc1"
protocol = "modbus-tcp"
address = "127.0.0.1:5020"
unit_id = 1
poll_interval = "500ms"

[[tag]]
path = "acme/lyon/bottling/line1/filler/plc1/speed"
device = "plc1"
unit = "bpm"
min = 0.0
max = 600.0
modbus = { table = "input", address = 0, type = "f32", word_order = "little" }

[[tag]]
path = "acme/lyon/bottling/line1/filler/plc1/running"
device = "plc1"
modbus = { table = "discrete_input", address = 0 }

[[tag]]
path = "acme/lyon/bottling/line1/filler/plc1/temp"
device = "plc1"
modbus = { table = "input", address = 2, type = "i16", scale = 0.1 }

[[tag]]
path = "acme/lyon/bottling/line1/filler/plc1/flag"
device = "plc1"
modbus = { table = "input", address = 3, type = "bool", bit = 4 }

[[tag]]
path = "acme/lyon/bottling/line1/filler/plc1/flag2"
device = "plc1"
modbus = { table = "input", address = 3, type = "bool", bit = 5 }
"#;

    #[test]
    fn parses_a_good_config() {
        let cfg = parse("good.toml", GOOD).expect("valid config");
        assert_eq!(cfg.devices.len(), 1);
        assert_eq!(cfg.devices[0].poll_interval, Duration::from_millis(500));
        assert_eq!(cfg.tags.len(), 5);
        let speed = &cfg.tags[0];
        assert_eq!(speed.value_type, ValueType::Float);
        assert_eq!(speed.range, Some((0.0, 600.0)));
        let m = speed.modbus.as_ref().expect("mapping");
        assert_eq!(
            (m.table, m.address, m.word_order, m.len()),
            (ModbusTable::Input, 0, WordOrder::LittleEndian, 2)
        );
        assert_eq!(cfg.tags[1].value_type, ValueType::Bool);
        assert_eq!(
            cfg.tags[2].value_type,
            ValueType::Float,
            "scaled ints are floats"
        );

        let ns = cfg.namespace();
        assert_eq!(ns.len(), 5);
        let filler = ns
            .asset(&TagPath::parse("acme/lyon/bottling/line1/filler").expect("path"))
            .expect("asset");
        assert_eq!(filler.level, AssetLevel::Cell);
        assert_eq!(
            filler.effective_location.latitude,
            Some(45.76),
            "inherits the site's coordinates"
        );
        assert_eq!(filler.effective_location.zone.as_deref(), Some("hall-b"));
        let plc = ns
            .asset(&TagPath::parse("acme/lyon/bottling/line1/filler/plc1").expect("path"))
            .expect("implied asset");
        assert_eq!(plc.level, AssetLevel::Device);
        assert_eq!(plc.effective_location.x_m, Some(12.5));
        assert!(
            ns.asset(&TagPath::parse("acme").expect("path")).is_some(),
            "implied enterprise"
        );
    }

    const BROKEN: &str = r#"[[device]]
id = "plc1"
protocol = "modbus-tcp"
address = "127.0.0.1:502"

[[tag]]
path = "acme/lyon/line1/speed"
device = "plc9"
modbus = { table = "holding", address = 0 }

[[tag]]
path = "acme/lyon//bad path"
device = "plc1"
modbus = { table = "holding", address = 10 }

[[tag]]
path = "acme/lyon/line1/a"
device = "plc1"
modbus = { table = "holding", address = 20, type = "f32" }

[[tag]]
path = "acme/lyon/line1/b"
device = "plc1"
modbus = { table = "holding", address = 21, type = "u16" }

[[tag]]
path = "acme/lyon/line1/c"
device = "plc1"
modbus = { table = "holding", address = 30, type = "float128" }
"#;

    #[test]
    fn reports_every_error_with_position() {
        let errs = parse("broken.toml", BROKEN).expect_err("broken config");
        let rendered = errs.to_string();
        let positions: Vec<_> = errs
            .errors
            .iter()
            .map(|e| errs.line_col(e.span.start))
            .collect();
        assert_eq!(errs.errors.len(), 4, "{rendered}");
        assert!(
            errs.errors[0].message.contains("unknown device \"plc9\""),
            "{rendered}"
        );
        assert_eq!(positions[0], (8, 10));
        assert!(
            errs.errors[1].message.contains("invalid tag path"),
            "{rendered}"
        );
        assert_eq!(positions[1], (12, 8));
        assert!(
            errs.errors[2]
                .message
                .contains("overlaps tag acme/lyon/line1/a"),
            "{rendered}"
        );
        assert_eq!(positions[2].0, 24);
        assert!(
            errs.errors[3]
                .message
                .contains("unknown data type \"float128\""),
            "{rendered}"
        );
        assert_eq!(positions[3].0, 29);
        assert!(
            rendered.contains("broken.toml:8:10: error: unknown device \"plc9\""),
            "{rendered}"
        );
        assert!(rendered.contains("hint: known devices: plc1"), "{rendered}");
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
        let h = cfg.http;
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
            parse("e.toml", "").expect("empty").http,
            HttpSettings::default()
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
"#,
        )
        .expect("valid [mqtt]");
        let m = cfg.mqtt;
        assert_eq!(m.uns_prefix, "site1/uns");
        assert_eq!(m.max_queue, 500);
        assert!(m.disconnect_slow_clients);
        assert_eq!(m.max_session_expiry, Duration::from_secs(86_400));
        assert_eq!(m.sys_interval, None);
        assert_eq!(m.max_inflight, 1_000);
        let errs = parse(
            "m.toml",
            "[mqtt]\nuns_prefix = \"a/#\"\nmax_queue = 0\noverflow = \"block\"\nmax_inflight = 70000\n",
        )
        .expect_err("four errors");
        let text = errs.to_string();
        for what in [
            "uns_prefix",
            "max_queue 0",
            "unknown overflow policy",
            "max_inflight 70000",
        ] {
            assert!(text.contains(what), "{what} missing from:\n{text}");
        }
    }

    #[test]
    fn historian_section() {
        let text = r#"
[historian]
commit_interval = "5ms"

[[historian.retention]]
prefix = "acme/lyon"
keep = "90days"

[[historian.lossy]]
prefix = "acme/lyon/x"
swinging_door = 0.5
max_interval = "10m"

[[historian.lossy]]
prefix = "acme/lyon/y"
deadband = -1.0
"#;
        let errs = parse("h.toml", text).expect_err("negative deadband");
        assert_eq!(errs.errors.len(), 1, "{errs}");
        assert!(errs.errors[0]
            .message
            .contains("deadband -1 must be a positive number"));
        let cfg = parse("h.toml", &text.replace("-1.0", "0.1")).expect("valid");
        let h = cfg.historian;
        assert_eq!(h.commit_interval, Duration::from_millis(5));
        assert_eq!(
            h.retention,
            vec![RetentionRule {
                prefix: "acme/lyon".into(),
                keep: Duration::from_secs(90 * 86400)
            }]
        );
        assert_eq!(
            h.lossy[0].method,
            LossyMethod::SwingingDoor {
                deviation: 0.5,
                max_interval: Some(Duration::from_secs(600))
            }
        );
        assert_eq!(h.lossy[1].method, LossyMethod::Deadband(0.1));
        assert_eq!(
            parse("e.toml", "").expect("empty config").historian,
            HistorianSettings::default()
        );
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
        let b = &cfg.bridges[0];
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

    #[test]
    fn sparkplug_section() {
        let d = parse("e.toml", "").expect("empty config").sparkplug;
        assert_eq!(d, SparkplugSettings::default());
        assert!(d.enabled && d.host_id == "ironplant" && d.prefix.is_none());
        let cfg = parse(
            "s.toml",
            "[sparkplug]\nenabled = false\nhost_id = \"scada-1\"\nprefix = \"acme/lyon/sp/\"\n",
        )
        .expect("valid");
        assert!(!cfg.sparkplug.enabled);
        assert_eq!(cfg.sparkplug.host_id, "scada-1");
        assert_eq!(
            cfg.sparkplug.prefix.as_ref().map(TagPath::as_str),
            Some("acme/lyon/sp")
        );
        let err = parse(
            "s.toml",
            "[sparkplug]\nhost_id = \"a/b\"\nprefix = \"a/b/c/d\"\n",
        )
        .expect_err("invalid");
        let text = err.to_string();
        assert_eq!(err.errors.len(), 2, "{text}");
        assert!(text.contains("s.toml:2:11"), "{text}");
        assert!(text.contains("invalid Sparkplug host id \"a/b\""), "{text}");
        assert!(text.contains("s.toml:3:10"), "{text}");
        assert!(text.contains("has 4 levels; at most 3"), "{text}");
    }

    #[test]
    fn syntax_errors_have_a_position() {
        let errs =
            parse("x.toml", "[[device]]\nid = \"a\"\nprotocoll = 1\n").expect_err("unknown field");
        assert_eq!(errs.errors.len(), 1);
        assert_eq!(errs.line_col(errs.errors[0].span.start).0, 3);
        assert!(errs.errors[0].message.contains("unknown field"), "{}", errs);
    }

    #[test]
    fn line_col_counts_characters() {
        assert_eq!(line_col("ab\ncdé\nf", 0), (1, 1));
        assert_eq!(line_col("ab\ncdé\nf", 3), (2, 1));
        assert_eq!(line_col("ab\ncdé\nf", 8), (3, 1));
        assert_eq!(line_col("ab\ncdé\nf", 7), (2, 4));
    }
}

#[cfg(test)]
mod section_tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Raw {
        name: Spanned<String>,
        every: Option<Spanned<String>>,
    }

    const DOC: &str = "[[tag]]\npath = \"a/b\"\n\n[thing]\nname = \"x\"\nevery = \"fast\"\n";

    #[test]
    fn a_section_keeps_file_offsets_and_ignores_other_keys() {
        let raw: Raw = section(DOC, "thing").expect("parses").expect("present");
        assert_eq!(&DOC[raw.name.span()], "\"x\"");
        let mut d = Diagnostics::new();
        let _ = parse_duration(&mut d, &raw.every, "every", Duration::from_secs(1));
        let errors = ConfigErrors {
            file: "plant.toml".into(),
            source: DOC.into(),
            errors: d.errors,
        };
        assert!(
            errors.to_string().starts_with("plant.toml:6:9: error:"),
            "{errors}"
        );
        assert!(section::<Raw>(DOC, "other").expect("parses").is_none());
    }

    #[test]
    fn a_section_error_points_into_the_file() {
        let e =
            section::<Raw>("[thing]\nname = \"x\"\ncolour = 1\n", "thing").expect_err("unknown");
        assert_eq!(e.span.start, 19, "{e:?}");
        assert!(e.message.contains("unknown field"), "{e:?}");
    }
}
