//! The configuration model (`ironplant.toml`) and its validation.
//!
//! Parsing is two steps: serde reads the TOML into `Raw*` structs that keep every value's byte
//! span, then [`validate`] checks meaning (paths, references, register overlaps, types) and
//! collects *every* problem with its position and a hint, instead of stopping at the first.

use std::any::{Any, TypeId};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::asset::{Asset, AssetLevel, Location};
use crate::namespace::{Namespace, TagId, TagMeta};
use crate::path::{TagPath, MAX_DEPTH};
use crate::sample::{ScalarType, ValueType};

// ---------------------------------------------------------------------------------------------
// Validated model

/// A validated configuration: the plant (assets, devices, tags), which core owns, and the
/// sections other crates own ([`Section`]), parsed by the [`Registry`] given to [`parse_with`].
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub assets: Vec<AssetConfig>,
    pub devices: Vec<DeviceConfig>,
    pub tags: Vec<TagConfig>,
    sections: Sections,
}

/// A top-level section of `ironplant.toml` owned by a domain crate (`[mqtt]` by the broker,
/// `[historian]` by the historian...): its types and validation live in that crate, so a new
/// domain never edits core. Register it in a [`Registry`]; read it with [`Config::get`].
pub trait Section: Any + Send + Sync + fmt::Debug + Default + PartialEq + Clone {
    /// The top-level key it is written under, e.g. `"mqtt"`, or `"bridge"` for `[[bridge]]`.
    const KEY: &'static str;

    /// Parses and validates the section from the whole file's text (use [`section`] to read
    /// the key with absolute spans), reporting every problem into `d`; the plant part is
    /// already parsed for cross-checks. Absent from the file: the defaults.
    fn parse(source: &str, plant: &Config, d: &mut Diagnostics) -> Self;

    /// Assets the section adds to the plant's tree (e.g. where the Sparkplug section puts an
    /// edge node), built by [`Config::namespace`] like `[[asset]]`s. None by default; the
    /// section's `parse` checks them against the plant's assets and tags.
    fn assets(&self) -> Vec<AssetConfig> {
        Vec::new()
    }

    /// Tags the section defines besides the `[[tag]]`s (e.g. computed tags), added to the
    /// namespace after them, with their assets implied like a `[[tag]]`'s. None by default;
    /// the section's `parse` checks their paths against the plant's tags and assets.
    fn tags(&self) -> Vec<TagMeta> {
        Vec::new()
    }
}

type ParseFn = fn(&str, &Config, &mut Diagnostics) -> SectionValue;

/// One parsed section, type-erased (compared through its own `PartialEq`).
#[derive(Clone)]
struct SectionValue {
    value: Arc<dyn Any + Send + Sync>,
    eq: fn(&SectionValue, &SectionValue) -> bool,
    debug: fn(&SectionValue, &mut fmt::Formatter<'_>) -> fmt::Result,
    assets: fn(&SectionValue) -> Vec<AssetConfig>,
    tags: fn(&SectionValue) -> Vec<TagMeta>,
}

impl SectionValue {
    fn new<T: Section>(t: T) -> SectionValue {
        SectionValue {
            value: Arc::new(t),
            eq: |a, b| a.value.downcast_ref::<T>() == b.value.downcast_ref::<T>(),
            debug: |a, f| fmt::Debug::fmt(&a.value.downcast_ref::<T>(), f),
            assets: |a| {
                a.value
                    .downcast_ref::<T>()
                    .map(T::assets)
                    .unwrap_or_default()
            },
            tags: |a| a.value.downcast_ref::<T>().map(T::tags).unwrap_or_default(),
        }
    }
}

#[derive(Clone, Default)]
struct Sections(BTreeMap<&'static str, (TypeId, SectionValue)>);

impl PartialEq for Sections {
    fn eq(&self, other: &Sections) -> bool {
        self.0.len() == other.0.len()
            && self
                .0
                .iter()
                .zip(other.0.iter())
                .all(|((ka, (_, a)), (kb, (_, b)))| ka == kb && (a.eq)(a, b))
    }
}

impl fmt::Debug for Sections {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut m = f.debug_map();
        for (k, (_, v)) in &self.0 {
            m.entry(k, &DebugVia(v));
        }
        m.finish()
    }
}

struct DebugVia<'a>(&'a SectionValue);

impl fmt::Debug for DebugVia<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        (self.0.debug)(self.0, f)
    }
}

/// The sections a parser knows, beyond the plant. Each layer adds its own: the runtime the
/// platform's (historian, broker, bridges, Sparkplug, ingest), the API its own and security's.
#[derive(Clone, Default)]
pub struct Registry {
    entries: Vec<(&'static str, TypeId, ParseFn)>,
}

impl Registry {
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Adds a section (a second registration of the same type is ignored).
    pub fn with<T: Section>(mut self) -> Registry {
        if !self.entries.iter().any(|e| e.1 == TypeId::of::<T>()) {
            self.entries
                .push((T::KEY, TypeId::of::<T>(), |src, plant, d| {
                    SectionValue::new(T::parse(src, plant, d))
                }));
        }
        self
    }

    /// Every section of `other` too.
    pub fn merge(mut self, other: &Registry) -> Registry {
        for e in &other.entries {
            if !self.entries.iter().any(|x| x.1 == e.1) {
                self.entries.push(*e);
            }
        }
        self
    }

    /// The top-level keys this registry parses.
    pub fn keys(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.entries.iter().map(|e| e.0)
    }
}

impl Config {
    /// A section's settings: as parsed, or its defaults when the parser's registry did not
    /// know it (a library used on its own).
    pub fn get<T: Section>(&self) -> Arc<T> {
        self.sections
            .0
            .get(T::KEY)
            .filter(|(id, _)| *id == TypeId::of::<T>())
            .and_then(|(_, v)| v.value.clone().downcast::<T>().ok())
            .unwrap_or_default()
    }

    /// The assets the sections add ([`Section::assets`]), in section order.
    pub fn section_assets(&self) -> Vec<AssetConfig> {
        self.sections
            .0
            .values()
            .flat_map(|(_, v)| (v.assets)(v))
            .collect()
    }

    /// Tags every section defines ([`Section::tags`]), in section order.
    pub fn section_tags(&self) -> Vec<TagMeta> {
        self.sections
            .0
            .values()
            .flat_map(|(_, v)| (v.tags)(v))
            .collect()
    }

    /// Replaces a section (tests and embedders build configs in code).
    pub fn set<T: Section>(&mut self, value: T) {
        self.sections
            .0
            .insert(T::KEY, (TypeId::of::<T>(), SectionValue::new(value)));
    }
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
    /// Consecutive values read as one array tag (1: a scalar tag). Register tables only;
    /// `count × registers` fits one request (125 registers); not writable.
    pub count: u16,
}

impl ModbusPoint {
    /// Number of coils or registers the point occupies.
    pub fn len(&self) -> u16 {
        if self.table.is_bits() {
            1
        } else {
            self.data_type.registers() * self.count.max(1)
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
    /// Builds the namespace: declared assets (`[[asset]]` and those of sections), implied
    /// assets for every ancestor of a tag or asset that was not declared, and the tags. Tag ids
    /// follow config order.
    pub fn namespace(&self) -> Namespace {
        let mut ns = Namespace::new();
        let from_sections = self.section_assets();
        let section_tags = self.section_tags();
        let declared_assets = || self.assets.iter().chain(&from_sections);
        let declared: HashMap<&TagPath, &AssetConfig> =
            declared_assets().map(|a| (&a.path, a)).collect();
        let mut all: BTreeMap<TagPath, Option<&AssetConfig>> = BTreeMap::new();
        let starts = declared_assets().map(|a| a.path.clone());
        let starts = starts.chain(self.tags.iter().filter_map(|t| t.path.parent()));
        let starts = starts.chain(section_tags.iter().filter_map(|t| t.path.parent()));
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
        for t in section_tags {
            // A path taken already is the section's own validation error.
            let _ = ns.add_tag(t);
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

/// The plant part of the file; other top-level keys are checked against the registry.
#[derive(Debug, Deserialize)]
struct RawConfig {
    #[serde(default, rename = "asset")]
    assets: Vec<RawAsset>,
    #[serde(default, rename = "device")]
    devices: Vec<RawDevice>,
    #[serde(default, rename = "tag")]
    tags: Vec<RawTag>,
}

/// The top-level keys core owns.
const PLANT_KEYS: [&str; 3] = ["asset", "device", "tag"];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAsset {
    path: Spanned<String>,
    name: Option<String>,
    #[serde(default)]
    description: String,
    location: Option<Spanned<RawLocation>>,
}

/// A location as written (`location = { ... }`); [`parse_location`] checks it. Other sections
/// that place assets use it too.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLocation {
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
    count: Option<Spanned<i64>>,
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
}

impl Default for Diagnostics {
    fn default() -> Diagnostics {
        Diagnostics::new()
    }
}

impl Diagnostics {
    pub fn new() -> Diagnostics {
        Diagnostics { errors: Vec::new() }
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
    parse_with(file, source, &Registry::new())
}

/// Parses and validates a configuration: the plant, then every section of `registry`; a
/// top-level key neither knows is an error. Every problem of the file is reported at once.
pub fn parse_with(file: &str, source: &str, registry: &Registry) -> Result<Config, ConfigErrors> {
    let fail = |errors| ConfigErrors {
        file: file.to_owned(),
        source: source.to_owned(),
        errors,
    };
    let raw: RawConfig = match toml::from_str(source) {
        Ok(raw) => raw,
        Err(e) => return Err(fail(vec![toml_error(e)])),
    };
    let mut c = Diagnostics::new();
    // Unknown top-level keys (each section checks its own fields).
    let keys: BTreeMap<Spanned<String>, serde::de::IgnoredAny> =
        toml::from_str(source).map_err(|e| fail(vec![toml_error(e)]))?;
    let mut known: Vec<&str> = PLANT_KEYS.to_vec();
    known.extend(registry.keys());
    for k in keys.keys() {
        if !known.contains(&k.get_ref().as_str()) {
            let mut names = known.clone();
            names.sort_unstable();
            c.err(
                k.span(),
                format!("unknown section `{}`", k.get_ref()),
                Some(format!(
                    "known sections: {}; the config reference is in docs/config.md",
                    names.join(", ")
                )),
            );
        }
    }
    let mut config = validate(raw, &mut c);
    for (key, type_id, parse) in &registry.entries {
        let value = parse(source, &config, &mut c);
        config.sections.0.insert(key, (*type_id, value));
    }
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

/// A `location = { ... }` (as in `[[asset]]`), checked: latitude and longitude in range and
/// given together, x and y given together. Problems are reported at their spans.
pub fn parse_location(c: &mut Diagnostics, l: Spanned<RawLocation>) -> Location {
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
    Location {
        latitude: l.latitude.map(Spanned::into_inner),
        longitude: l.longitude.map(Spanned::into_inner),
        zone: l.zone,
        x_m: l.x,
        y_m: l.y,
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

/// A delay such as "5s" or "0s" (zero allowed, unlike [`parse_duration`]), at most `max`.
pub fn parse_delay(
    d: &mut Diagnostics,
    raw: &Option<Spanned<String>>,
    field: &str,
    default: Duration,
    max: Duration,
) -> Duration {
    let Some(raw) = raw else { return default };
    match humantime::parse_duration(raw.get_ref().trim()) {
        Ok(v) if v <= max => v,
        Ok(_) => {
            d.err(
                raw.span(),
                format!(
                    "{field} {:?} is longer than {}",
                    raw.get_ref(),
                    humantime::format_duration(max)
                ),
                Some(format!("use at most {}", humantime::format_duration(max))),
            );
            default
        }
        Err(e) => {
            d.err(
                raw.span(),
                format!("{field} {:?} is not a duration: {e}", raw.get_ref()),
                Some("write a number with a unit, e.g. \"0s\", \"5s\", \"2m\"".to_owned()),
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
        let location = a.location.map(|l| parse_location(c, l)).unwrap_or_default();
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
                if let (Some(p), Some(w)) = (&point, &t.writable) {
                    if *w.get_ref() && p.count > 1 {
                        c.err(
                            w.span(),
                            "an array tag (count > 1) cannot be writable",
                            Some("declare one writable tag per register value".to_owned()),
                        );
                        writable = false;
                    }
                }
                if let Some(p) = &point {
                    let scalar = if p.data_type == ModbusDataType::Bool {
                        ScalarType::Bool
                    } else if p.data_type.is_float() || p.scale != 1.0 || p.offset != 0.0 {
                        ScalarType::Float
                    } else {
                        ScalarType::Int
                    };
                    value_type = if p.count > 1 {
                        ValueType::Array(scalar)
                    } else {
                        scalar.into()
                    };
                    if let (true, Some(lo)) = (p.count > 1, &t.min) {
                        c.err(
                            lo.span(),
                            "an array tag (count > 1) has no engineering range",
                            Some("remove min and max, or declare one tag per value".to_owned()),
                        );
                    }
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

    Config {
        assets,
        devices,
        tags,
        sections: Sections::default(),
    }
}

/// An integer option within `range` (`default` when absent), or an error at its span.
pub fn int_in(
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
    let count = match &m.count {
        None => 1,
        Some(n) => {
            let most = ModbusTable::Holding.max_per_request() / data_type.registers();
            match u16::try_from(*n.get_ref())
                .ok()
                .filter(|n| (1..=most).contains(n))
            {
                Some(k) if k > 1 && (table.is_bits() || bit.is_some()) => {
                    c.err(
                        n.span(),
                        "count applies to values in holding or input registers",
                        Some("read coils and bits as one tag each".to_owned()),
                    );
                    1
                }
                Some(k) => k,
                None => {
                    c.err(
                        n.span(),
                        format!(
                            "count {} is out of range for a {}",
                            n.get_ref(),
                            data_type.as_str()
                        ),
                        Some(format!(
                            "use 1..={most}: one request reads at most 125 registers"
                        )),
                    );
                    1
                }
            }
        }
    };
    let len = if table.is_bits() {
        1
    } else {
        u32::from(data_type.registers()) * u32::from(count)
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
        count,
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

    #[test]
    fn a_count_makes_an_array_tag() {
        let head =
            "[[device]]\nid = \"plc1\"\nprotocol = \"modbus-tcp\"\naddress = \"127.0.0.1:502\"\n";
        let cfg = parse(
            "count.toml",
            &format!(
                "{head}[[tag]]\npath = \"a/b/profile\"\ndevice = \"plc1\"\n\
                 modbus = {{ table = \"holding\", address = 10, type = \"f32\", count = 8 }}\n\
                 [[tag]]\npath = \"a/b/next\"\ndevice = \"plc1\"\n\
                 modbus = {{ table = \"holding\", address = 26, type = \"i16\", count = 3 }}\n"
            ),
        )
        .expect("valid");
        let m = cfg.tags[0].modbus.as_ref().expect("mapping");
        assert_eq!((m.count, m.len(), m.last_address()), (8, 16, 25));
        assert_eq!(cfg.tags[0].value_type, ValueType::Array(ScalarType::Float));
        assert_eq!(cfg.tags[1].value_type, ValueType::Array(ScalarType::Int));
        let err = |tag: &str| {
            parse(
                "count.toml",
                &format!("{head}[[tag]]\npath = \"a/b/c\"\ndevice = \"plc1\"\n{tag}\n"),
            )
            .expect_err(tag)
            .to_string()
        };
        let e = err("modbus = { table = \"holding\", address = 0, type = \"f64\", count = 32 }");
        assert!(
            e.contains("count 32 is out of range for a f64") && e.contains("1..=31"),
            "{e}"
        );
        let e = err("modbus = { table = \"holding\", address = 0, count = 0 }");
        assert!(e.contains("count 0 is out of range"), "{e}");
        let e = err("modbus = { table = \"coil\", address = 0, count = 4 }");
        assert!(
            e.contains("count applies to values in holding or input registers"),
            "{e}"
        );
        let e = err("writable = true\nmodbus = { table = \"holding\", address = 0, count = 4 }");
        assert!(
            e.contains("an array tag (count > 1) cannot be writable"),
            "{e}"
        );
        // The registers of an array overlap a neighbour like any multi-register value.
        let e = err("modbus = { table = \"holding\", address = 65534, type = \"u16\", count = 3 }");
        assert!(e.contains("address 65534 is out of range"), "{e}");
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

#[cfg(test)]
mod registry_tests {
    use super::*;

    /// A section a domain crate would own.
    #[derive(Debug, Clone, PartialEq, Default)]
    struct Pump {
        speed: usize,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct RawPump {
        speed: Option<Spanned<i64>>,
    }

    impl Section for Pump {
        const KEY: &'static str = "pump";

        fn parse(source: &str, _plant: &Config, d: &mut Diagnostics) -> Pump {
            match section::<RawPump>(source, Self::KEY) {
                Ok(raw) => Pump {
                    speed: int_in(d, &raw.and_then(|r| r.speed), "speed", 0..=3000, 1500),
                },
                Err(e) => {
                    d.errors.push(e);
                    Pump::default()
                }
            }
        }

        fn assets(&self) -> Vec<AssetConfig> {
            let path = TagPath::parse("acme/lyon/pumps/p1").expect("path");
            vec![AssetConfig {
                path,
                name: Some(format!("Pump at {} rpm", self.speed)),
                description: String::new(),
                location: Location {
                    zone: Some("cellar".into()),
                    ..Location::default()
                },
            }]
        }

        fn tags(&self) -> Vec<TagMeta> {
            vec![TagMeta {
                id: TagId(0),
                path: TagPath::parse("acme/lyon/pumps/p2/efficiency").expect("path"),
                value_type: ValueType::Float,
                unit: Some("%".into()),
                description: format!("computed at {} rpm", self.speed),
                range: None,
                writable: false,
                device: Some("computed".into()),
            }]
        }
    }

    #[test]
    fn a_sections_tags_join_the_namespace_after_the_configured_ones() {
        let reg = Registry::new().with::<Pump>();
        let cfg = parse_with(
            "p.toml",
            "[[tag]]
path = \"acme/lyon/pumps/p1/speed\"\n\n[pump]\nspeed = 900\n",
            &reg,
        )
        .expect("valid");
        let ns = cfg.namespace();
        let eff = ns
            .lookup("acme/lyon/pumps/p2/efficiency")
            .expect("the section's tag");
        assert_eq!(eff.id, TagId(1), "after the configured tag");
        assert_eq!(eff.unit.as_deref(), Some("%"));
        assert_eq!(eff.device.as_deref(), Some("computed"));
        assert!(
            ns.asset(&TagPath::parse("acme/lyon/pumps/p2").expect("path"))
                .is_some(),
            "its asset is implied"
        );
    }

    #[test]
    fn a_sections_assets_join_the_tree() {
        let reg = Registry::new().with::<Pump>();
        let cfg = parse_with(
            "p.toml",
            "[[asset]]\npath = \"acme/lyon\"\nlocation = { latitude = 45.0, longitude = 4.0 }\n\n[pump]\nspeed = 900\n",
            &reg,
        )
        .expect("valid");
        assert_eq!(cfg.section_assets().len(), 1);
        let ns = cfg.namespace();
        let p1 = ns
            .asset(&TagPath::parse("acme/lyon/pumps/p1").expect("path"))
            .expect("the section's asset");
        assert_eq!(p1.name, "Pump at 900 rpm");
        assert_eq!(p1.level, AssetLevel::Line);
        assert_eq!(p1.location.zone.as_deref(), Some("cellar"));
        assert_eq!(p1.effective_location.latitude, Some(45.0), "inherited");
        assert!(
            ns.asset(&TagPath::parse("acme/lyon/pumps").expect("path"))
                .is_some(),
            "its ancestors are implied"
        );
        assert!(parse("p.toml", "")
            .expect("valid")
            .section_assets()
            .is_empty());
    }

    #[test]
    fn a_registered_section_is_parsed_validated_and_read_back() {
        let reg = Registry::new().with::<Pump>();
        let cfg = parse_with("p.toml", "[pump]\nspeed = 900\n", &reg).expect("valid");
        assert_eq!(cfg.get::<Pump>().speed, 900);
        let absent = parse_with("p.toml", "", &reg).expect("valid");
        assert_eq!(absent.get::<Pump>().speed, 1500, "defaults when absent");
        assert_ne!(cfg, absent, "configs compare their sections");
        let err = parse_with("p.toml", "[pump]\nspeed = 9000\n", &reg).expect_err("range");
        assert!(err.to_string().starts_with("p.toml:2:9: error:"), "{err}");
    }

    #[test]
    fn an_unknown_section_is_named_with_the_known_ones() {
        let err = parse_with(
            "p.toml",
            "[[tag]]\npath = \"a/b\"\n\n[pmup]\nspeed = 1\n",
            &Registry::new().with::<Pump>(),
        )
        .expect_err("unknown section");
        let text = err.to_string();
        assert!(
            text.contains("p.toml:4:2: error: unknown section `pmup`"),
            "{text}"
        );
        assert!(
            text.contains("known sections: asset, device, pump, tag"),
            "{text}"
        );
        // Without the registry the section is unknown too: core knows only the plant.
        assert!(parse("p.toml", "[pump]\nspeed = 1\n").is_err());
    }
}
