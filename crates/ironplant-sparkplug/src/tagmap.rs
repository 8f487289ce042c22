//! The deterministic, collision-free mapping from Sparkplug metric addresses to [`TagPath`]s.
//!
//! # Rule
//! ```text
//! [prefix/]<group>/<edge node>/<device or _node>/<metric level 1>/…/<metric level k>
//! ```
//! - Node-level metrics (NBIRTH/NDATA) go under the reserved level `_node`; device metrics under
//!   the device id. The reserved level keeps `g/n/Pump1/Speed` (device `Pump1`, metric `Speed`)
//!   apart from a node metric named `Pump1/Speed` (→ `g/n/_node/Pump1/Speed`).
//! - The metric name is split on `/` into folders. A `TagPath` has at most 7 levels, so the metric
//!   gets `7 - prefix levels - 3` of them (4 without a prefix); deeper names keep their tail in the
//!   last level, where each further `/` is escaped (`a/b/c/d/e/f` → `a/b/c/d_x2Fe_x2Ff`).
//! - Every level (group, node, device, folder) is escaped byte-wise over its UTF-8: ASCII letters,
//!   digits and `-` are kept; `.` is kept except as the first byte; `_` is kept except as the first
//!   byte or before an `x`; every other byte becomes `_xHH` (two upper-case hex digits). So
//!   `Node Control` → `Node_x20Control`, `_hidden` → `_x5Fhidden`, `ü` → `_xC3_xBC`.
//!
//! # Why it never collides
//! In an escaped level, `_x` always starts an escape, and an escape is the only way `_x` can
//! appear (a literal `_` before `x` is itself escaped), so each level decodes back to exactly one
//! string. Folder levels never contain a literal `/` (they were split on it), so joining the
//! decoded folders with `/` gives back the metric name. No escaped level starts with `_` followed
//! by anything but `x`, so no device can be mistaken for the reserved `_node`. [`TagMapper::address`]
//! is the inverse and the tests check it on random names.
//!
//! # Asset mappings
//! An edge node or device can be given a home in the ISA-95 asset tree instead ([`AssetMapping`],
//! `[[sparkplug.asset]]`). A mapping replaces the levels it names by its asset path `P`:
//! ```text
//! group/node/device  →  P/<metric levels…>                 (one device)
//! group/node/*       →  P/<device>/<metric levels…>        (every device not mapped exactly)
//! group/node         →  P/_node/<metric levels…>           (the node's own metrics)
//!                       P/<device>/<metric levels…>        (its devices not mapped otherwise)
//! ```
//! An exact device mapping wins over a wildcard, which wins over the node's mapping; a node or
//! device without any keeps the default rule. Under an asset, metric folders are never folded:
//! a metric with more folders than the levels left below `P` has no path
//! ([`MapError::TooDeep`]), so the asset path's depth is checked when the mapping is made (at
//! least one level must remain). Injectivity still holds: mapped assets never contain one
//! another ([`MappingError::Overlap`]), each one's subtree is built by the escaping rule above
//! (with `_node` apart from devices), and a path of the default rule that would land at, above
//! or below a mapped asset is refused ([`MapError::Reserved`]) instead of sharing its subtree.
//! [`TagMapper::address`] inverts both rules, so writes reach mapped tags too.
//!
//! # Unmappable names
//! An empty metric name or folder (`a//b`, a leading or trailing `/`), or a result longer than
//! 64 bytes in a level or 256 in all, has no path: [`MapError`]. Truncating or hashing would make
//! collisions possible, so such metrics are reported instead.

use std::collections::HashMap;
use std::fmt::{self, Write as _};

use ironplant_core::path::{MAX_DEPTH, MAX_LEVEL_LEN, MAX_PATH_LEN};
use ironplant_core::{PathError, TagPath};

use crate::topic::{validate_id, Element, TopicError};

/// The level standing for "the edge node itself" in place of a device id.
pub const NODE_LEVEL: &str = "_node";

/// Levels the fixed part takes: group, edge node, device (or `_node`).
const FIXED_LEVELS: usize = 3;

/// Why a metric has no tag path (or a prefix cannot be used).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    #[error("metric name {metric:?} has an empty folder (leading, trailing or doubled '/')")]
    EmptyLevel { metric: String },
    #[error("escaped level {level:?} is {len} bytes long; the limit is {MAX_LEVEL_LEN}")]
    LevelTooLong { level: String, len: usize },
    #[error("tag path would be {len} bytes long; the limit is {MAX_PATH_LEN}")]
    TooLong { len: usize },
    #[error("prefix has {depth} levels; at most {} leave room for group/node/device/metric", MAX_DEPTH - FIXED_LEVELS - 1)]
    PrefixTooDeep { depth: usize },
    #[error("invalid tag path: {0}")]
    Invalid(#[from] PathError),
    /// Under a mapped asset, folders are not folded into the last level.
    #[error("metric {metric:?} has {levels} levels but the asset {asset} leaves room for {room} (tag paths have at most {MAX_DEPTH}); shorten the metric's folders or map it to a shallower asset")]
    TooDeep {
        metric: String,
        levels: usize,
        room: usize,
        asset: TagPath,
    },
    /// The default rule's path lies at, above or below an asset of a mapping.
    #[error("{path} would lie in the asset tree of {asset}, which is mapped to {mapping}; map this edge node too, or change the prefix")]
    Reserved {
        path: String,
        asset: TagPath,
        mapping: String,
    },
}

/// Which part of an edge node a mapping covers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DeviceSelector {
    /// The node's own metrics, and its devices no other mapping covers.
    Node,
    /// One device, by its exact id.
    Device(String),
    /// Every device of the node without an exact mapping (`device = "*"`).
    AnyDevice,
}

/// A group / edge node / device given a home in the asset tree (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AssetMapping {
    pub group_id: String,
    pub edge_node_id: String,
    pub device: DeviceSelector,
    /// The asset the metrics go under.
    pub path: TagPath,
}

impl AssetMapping {
    /// The deepest asset path that still leaves a level for the metric.
    pub fn max_depth(&self) -> usize {
        match self.device {
            DeviceSelector::Device(_) => MAX_DEPTH - 1,
            // One level for the device (or `_node`), one for the metric.
            DeviceSelector::Node | DeviceSelector::AnyDevice => MAX_DEPTH - 2,
        }
    }
}

impl fmt::Display for AssetMapping {
    /// `group/node` (the node), `group/node/device`, or `group/node/*`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.group_id, self.edge_node_id)?;
        match &self.device {
            DeviceSelector::Node => Ok(()),
            DeviceSelector::Device(d) => write!(f, "/{d}"),
            DeviceSelector::AnyDevice => f.write_str("/*"),
        }
    }
}

/// Why a set of asset mappings cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MappingError {
    #[error("{0}")]
    Id(TopicError),
    #[error("asset path {path} has {depth} levels; mapping {mapping} leaves no room for its metrics below it (at most {max} levels)")]
    TooDeep {
        mapping: String,
        path: TagPath,
        depth: usize,
        max: usize,
    },
    #[error("{mapping} is mapped twice (to {first} and to {second})")]
    Duplicate {
        mapping: String,
        first: TagPath,
        second: TagPath,
    },
    #[error("asset path {path} (mapping {mapping}) {relation} {other} (mapping {other_mapping}); mapped assets must not contain one another, or their metrics could share a path")]
    Overlap {
        mapping: String,
        path: TagPath,
        relation: &'static str,
        other: TagPath,
        other_mapping: String,
    },
}

/// A mapping that could not be used: its index in the list given, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("asset mapping #{}: {error}", index + 1)]
pub struct Rejected {
    pub index: usize,
    pub error: MappingError,
}

/// The mappings of one edge node.
#[derive(Debug, Clone, Default)]
struct NodeMappings {
    node: Option<usize>,
    any_device: Option<usize>,
    devices: HashMap<String, usize>,
}

/// Where the metrics of one node or device go under a mapped asset.
struct MappedBase<'a> {
    asset: &'a TagPath,
    /// The level between the asset and the metric: `_node`, or the escaped device id.
    level: Option<Level<'a>>,
}

enum Level<'a> {
    Node,
    Device(&'a str),
}

/// Where a metric lives in Sparkplug terms: the inverse of a tag path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MetricAddress {
    pub group_id: String,
    pub edge_node_id: String,
    pub device_id: Option<String>,
    pub metric: String,
}

/// Maps metric addresses to tag paths under an optional prefix, or under mapped assets (see
/// the module docs).
#[derive(Debug, Clone)]
pub struct TagMapper {
    prefix: Option<TagPath>,
    metric_levels: usize,
    mappings: Vec<AssetMapping>,
    /// group → node → its mappings.
    nodes: HashMap<String, HashMap<String, NodeMappings>>,
    /// Mapped asset path → mapping index.
    assets: HashMap<TagPath, usize>,
    /// Every strict ancestor of a mapped asset path → a mapping index below it.
    above_assets: HashMap<TagPath, usize>,
}

impl TagMapper {
    pub fn new(prefix: Option<TagPath>) -> Result<TagMapper, MapError> {
        let depth = prefix.as_ref().map_or(0, TagPath::depth);
        if depth + FIXED_LEVELS >= MAX_DEPTH {
            return Err(MapError::PrefixTooDeep { depth });
        }
        Ok(TagMapper {
            prefix,
            metric_levels: MAX_DEPTH - FIXED_LEVELS - depth,
            mappings: Vec::new(),
            nodes: HashMap::new(),
            assets: HashMap::new(),
            above_assets: HashMap::new(),
        })
    }

    /// Adds asset mappings. Every problem is reported (ids, depth, duplicates, assets that
    /// contain one another), each with the index of the mapping it is about; nothing is added
    /// then.
    pub fn with_assets(mut self, mappings: Vec<AssetMapping>) -> Result<TagMapper, Vec<Rejected>> {
        let mut errors = Vec::new();
        let mut reject = |index: usize, error: MappingError| errors.push(Rejected { index, error });
        let mut seen: HashMap<(&str, &str, &DeviceSelector), usize> = HashMap::new();
        for (i, m) in mappings.iter().enumerate() {
            let ids = [
                (Element::GroupId, m.group_id.as_str()),
                (Element::EdgeNodeId, m.edge_node_id.as_str()),
            ];
            let device = match &m.device {
                DeviceSelector::Device(d) => Some((Element::DeviceId, d.as_str())),
                _ => None,
            };
            for (element, id) in ids.into_iter().chain(device) {
                if let Err(e) = validate_id(element, id) {
                    reject(i, MappingError::Id(e));
                }
            }
            if m.path.depth() > m.max_depth() {
                reject(
                    i,
                    MappingError::TooDeep {
                        mapping: m.to_string(),
                        path: m.path.clone(),
                        depth: m.path.depth(),
                        max: m.max_depth(),
                    },
                );
            }
            let key = (m.group_id.as_str(), m.edge_node_id.as_str(), &m.device);
            if let Some(&first) = seen.get(&key) {
                reject(
                    i,
                    MappingError::Duplicate {
                        mapping: m.to_string(),
                        first: mappings[first].path.clone(),
                        second: m.path.clone(),
                    },
                );
                continue;
            }
            seen.insert(key, i);
            for other in mappings.iter().take(i) {
                let relation = if m.path == other.path {
                    "is also"
                } else if m.path.is_under(&other.path) {
                    "lies under"
                } else if other.path.is_under(&m.path) {
                    "contains"
                } else {
                    continue;
                };
                reject(
                    i,
                    MappingError::Overlap {
                        mapping: m.to_string(),
                        path: m.path.clone(),
                        relation,
                        other: other.path.clone(),
                        other_mapping: other.to_string(),
                    },
                );
                break;
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        for (i, m) in mappings.iter().enumerate() {
            let node = self
                .nodes
                .entry(m.group_id.clone())
                .or_default()
                .entry(m.edge_node_id.clone())
                .or_default();
            match &m.device {
                DeviceSelector::Node => node.node = Some(i),
                DeviceSelector::AnyDevice => node.any_device = Some(i),
                DeviceSelector::Device(d) => {
                    node.devices.insert(d.clone(), i);
                }
            }
            self.assets.insert(m.path.clone(), i);
            let mut up = m.path.parent();
            while let Some(p) = up {
                up = p.parent();
                self.above_assets.insert(p, i);
            }
        }
        self.mappings = mappings;
        Ok(self)
    }

    /// The asset mappings in use.
    pub fn mappings(&self) -> &[AssetMapping] {
        &self.mappings
    }

    /// The mapped asset `path` lies strictly under, with its mapping.
    pub fn asset_of(&self, path: &TagPath) -> Option<(&TagPath, &AssetMapping)> {
        let mut up = path.parent();
        while let Some(p) = up {
            if let Some(&i) = self.assets.get(&p) {
                let m = &self.mappings[i];
                return Some((&m.path, m));
            }
            up = p.parent();
        }
        None
    }

    /// The mapping (if any) that places `device_id` of the node (`None`: the node's own
    /// metrics), with the level between its asset and the metric.
    fn mapped_base<'a>(
        &'a self,
        group_id: &str,
        edge_node_id: &str,
        device_id: Option<&'a str>,
    ) -> Option<MappedBase<'a>> {
        let node = self.nodes.get(group_id)?.get(edge_node_id)?;
        let (i, level) = match device_id {
            None => (node.node?, Some(Level::Node)),
            Some(d) => match node.devices.get(d) {
                Some(&i) => (i, None),
                None => (node.any_device.or(node.node)?, Some(Level::Device(d))),
            },
        };
        Some(MappedBase {
            asset: &self.mappings[i].path,
            level,
        })
    }

    /// The mapping whose asset tree `path` (of the default rule) would share, if any.
    fn reserved_by(&self, path: &TagPath) -> Option<&AssetMapping> {
        if let Some(&i) = self.above_assets.get(path) {
            return Some(&self.mappings[i]);
        }
        let mut cur = Some(path.clone());
        while let Some(p) = cur {
            if let Some(&i) = self.assets.get(&p) {
                return Some(&self.mappings[i]);
            }
            cur = p.parent();
        }
        None
    }

    pub fn prefix(&self) -> Option<&TagPath> {
        self.prefix.as_ref()
    }

    /// The tag path of a metric.
    pub fn path(
        &self,
        group_id: &str,
        edge_node_id: &str,
        device_id: Option<&str>,
        metric: &str,
    ) -> Result<TagPath, MapError> {
        if metric.split('/').any(str::is_empty) {
            return Err(MapError::EmptyLevel {
                metric: metric.to_owned(),
            });
        }
        if let Some(base) = self.mapped_base(group_id, edge_node_id, device_id) {
            return mapped_path(&base, metric);
        }
        let mut s = String::new();
        if let Some(p) = &self.prefix {
            s.push_str(p.as_str());
            s.push('/');
        }
        push_level(&mut s, group_id)?;
        s.push('/');
        push_level(&mut s, edge_node_id)?;
        s.push('/');
        match device_id {
            Some(d) => push_level(&mut s, d)?,
            None => s.push_str(NODE_LEVEL),
        }
        for folder in metric.splitn(self.metric_levels, '/') {
            s.push('/');
            push_level(&mut s, folder)?;
        }
        if s.len() > MAX_PATH_LEN {
            return Err(MapError::TooLong { len: s.len() });
        }
        let path = TagPath::parse(&s)?;
        if let Some(m) = self.reserved_by(&path) {
            return Err(MapError::Reserved {
                path: s,
                asset: m.path.clone(),
                mapping: m.to_string(),
            });
        }
        Ok(path)
    }

    /// The metric a tag path stands for, if it is one this mapper produces.
    pub fn address(&self, path: &TagPath) -> Option<MetricAddress> {
        let addr = match self.asset_of(path) {
            Some((asset, m)) => mapped_address(asset, m, path)?,
            None => self.default_address(path)?,
        };
        // Only canonical spellings are accepted, so the inverse is exact.
        let again = self
            .path(
                &addr.group_id,
                &addr.edge_node_id,
                addr.device_id.as_deref(),
                &addr.metric,
            )
            .ok()?;
        (again == *path).then_some(addr)
    }

    fn default_address(&self, path: &TagPath) -> Option<MetricAddress> {
        let rest = match &self.prefix {
            Some(p) => path.as_str().strip_prefix(p.as_str())?.strip_prefix('/')?,
            None => path.as_str(),
        };
        let levels: Vec<&str> = rest.split('/').collect();
        let [group, node, device, folders @ ..] = levels.as_slice() else {
            return None;
        };
        if folders.is_empty() {
            return None;
        }
        let device_id = match *device {
            NODE_LEVEL => None,
            d => Some(unescape_level(d)?),
        };
        let metric = folders
            .iter()
            .map(|f| unescape_level(f))
            .collect::<Option<Vec<_>>>()?
            .join("/");
        Some(MetricAddress {
            group_id: unescape_level(group)?,
            edge_node_id: unescape_level(node)?,
            device_id,
            metric,
        })
    }
}

/// The path of a metric under a mapped asset: no folding, a metric too deep is an error.
fn mapped_path(base: &MappedBase<'_>, metric: &str) -> Result<TagPath, MapError> {
    let mut s = base.asset.as_str().to_owned();
    let mut depth = base.asset.depth();
    match base.level {
        None => {}
        Some(Level::Node) => {
            s.push('/');
            s.push_str(NODE_LEVEL);
            depth += 1;
        }
        Some(Level::Device(d)) => {
            s.push('/');
            push_level(&mut s, d)?;
            depth += 1;
        }
    }
    let levels = metric.split('/').count();
    let room = MAX_DEPTH.saturating_sub(depth);
    if levels > room {
        return Err(MapError::TooDeep {
            metric: metric.to_owned(),
            levels,
            room,
            asset: base.asset.clone(),
        });
    }
    for folder in metric.split('/') {
        s.push('/');
        push_level(&mut s, folder)?;
    }
    if s.len() > MAX_PATH_LEN {
        return Err(MapError::TooLong { len: s.len() });
    }
    Ok(TagPath::parse(&s)?)
}

/// The inverse of [`mapped_path`] for a path strictly under `asset` (not yet checked for being
/// canonical).
fn mapped_address(asset: &TagPath, m: &AssetMapping, path: &TagPath) -> Option<MetricAddress> {
    let rest = path
        .as_str()
        .strip_prefix(asset.as_str())?
        .strip_prefix('/')?;
    let levels: Vec<&str> = rest.split('/').collect();
    let (device_id, folders) = match (&m.device, levels.as_slice()) {
        (DeviceSelector::Device(d), all) => (Some(d.clone()), all),
        (DeviceSelector::Node, [NODE_LEVEL, folders @ ..]) => (None, folders),
        (DeviceSelector::Node | DeviceSelector::AnyDevice, [device, folders @ ..]) => {
            (Some(unescape_level(device)?), folders)
        }
        (_, []) => return None,
    };
    if folders.is_empty() {
        return None;
    }
    let metric = folders
        .iter()
        .map(|f| unescape_level(f))
        .collect::<Option<Vec<_>>>()?
        .join("/");
    Some(MetricAddress {
        group_id: m.group_id.clone(),
        edge_node_id: m.edge_node_id.clone(),
        device_id,
        metric,
    })
}

fn push_level(out: &mut String, raw: &str) -> Result<(), MapError> {
    let start = out.len();
    escape_level_into(out, raw);
    let len = out.len() - start;
    if len > MAX_LEVEL_LEN {
        return Err(MapError::LevelTooLong {
            level: out[start..].to_owned(),
            len,
        });
    }
    Ok(())
}

/// Escapes one level (see the module docs). An empty input gives an empty output, which no
/// `TagPath` accepts.
pub fn escape_level(raw: &str) -> String {
    let mut s = String::with_capacity(raw.len());
    escape_level_into(&mut s, raw);
    s
}

fn escape_level_into(out: &mut String, raw: &str) {
    let bytes = raw.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        let keep = match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' => true,
            b'.' => i > 0,
            b'_' => i > 0 && bytes.get(i + 1) != Some(&b'x'),
            _ => false,
        };
        if keep {
            out.push(char::from(b));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(out, "_x{b:02X}");
        }
    }
}

/// Decodes one escaped level; `None` if it is not valid escaped text.
pub fn unescape_level(level: &str) -> Option<String> {
    let b = level.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'_' && b.get(i + 1) == Some(&b'x') {
            let hex = level.get(i + 2..i + 4)?;
            if !hex.bytes().all(|h| matches!(h, b'0'..=b'9' | b'A'..=b'F')) {
                return None;
            }
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 4;
        } else {
            out.push(c);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapper() -> TagMapper {
        TagMapper::new(None).expect("no prefix")
    }

    #[test]
    fn maps_node_and_device_metrics() {
        let m = mapper();
        assert_eq!(
            m.path("Plant1", "edge-1", Some("Pump1"), "Speed")
                .expect("ok")
                .as_str(),
            "Plant1/edge-1/Pump1/Speed"
        );
        assert_eq!(
            m.path("Plant1", "edge-1", None, "Node Control/Rebirth")
                .expect("ok")
                .as_str(),
            "Plant1/edge-1/_node/Node_x20Control/Rebirth"
        );
        assert_eq!(
            m.path("g", "n", None, "Pump1/Speed").expect("ok").as_str(),
            "g/n/_node/Pump1/Speed"
        );
        assert_eq!(
            m.path("g", "n", Some("_node"), "x").expect("ok").as_str(),
            "g/n/_x5Fnode/x"
        );
        assert_eq!(
            m.path("g", "n", Some("d"), "a/b/c/d/e/f")
                .expect("ok")
                .as_str(),
            "g/n/d/a/b/c/d_x2Fe_x2Ff"
        );
        assert_eq!(
            m.path("g", "n", Some("d"), ".hidden/v1.2/speed_x/ü")
                .expect("ok")
                .as_str(),
            "g/n/d/_x2Ehidden/v1.2/speed_x5Fx/_xC3_xBC"
        );
        let p = TagMapper::new(Some(TagPath::parse("acme/lyon/sp").expect("valid")))
            .expect("3 levels fit");
        assert_eq!(
            p.path("g", "n", Some("d"), "a/b").expect("ok").as_str(),
            "acme/lyon/sp/g/n/d/a_x2Fb"
        );
    }

    #[test]
    fn unmappable_names_are_errors() {
        let m = mapper();
        for bad in ["", "/a", "a/", "a//b"] {
            assert!(
                matches!(
                    m.path("g", "n", None, bad),
                    Err(MapError::EmptyLevel { .. })
                ),
                "{bad:?}"
            );
        }
        assert!(matches!(
            m.path("g", "n", None, &"x".repeat(65)),
            Err(MapError::LevelTooLong { len: 65, .. })
        ));
        // 22 non-ASCII chars: 44 bytes, 176 escaped.
        assert!(matches!(
            m.path("g", "n", None, &"é".repeat(22)),
            Err(MapError::LevelTooLong { .. })
        ));
        let long = vec!["y".repeat(60); 4].join("/");
        assert!(matches!(
            m.path("group", "node", Some("dev"), &long),
            Err(MapError::TooLong { .. })
        ));
        assert!(matches!(
            TagMapper::new(Some(TagPath::parse("a/b/c/d").expect("valid"))),
            Err(MapError::PrefixTooDeep { depth: 4 })
        ));
    }

    #[test]
    fn escaping_is_injective_and_inverse_on_random_names() {
        // A small deterministic generator over an alphabet full of troublemakers.
        let alphabet: Vec<char> = "aZ09._-x/ +#é_\u{1F600}".chars().collect();
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let m = mapper();
        let mut seen = std::collections::HashMap::new();
        let mut mapped = 0;
        for _ in 0..20_000 {
            let len = 1 + (next() % 12) as usize;
            let name: String = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            let device = if next() % 2 == 0 {
                None
            } else {
                Some(if next() % 4 == 0 { "_node" } else { "Pump_x1" })
            };
            let path = match m.path("g", "n", device, &name) {
                Ok(p) => p,
                Err(MapError::EmptyLevel { .. }) => {
                    assert!(name.split('/').any(str::is_empty), "{name:?}");
                    continue;
                }
                Err(MapError::LevelTooLong { .. } | MapError::TooLong { .. }) => continue,
                Err(e) => panic!("{name:?}: {e}"),
            };
            mapped += 1;
            let addr = m.address(&path).expect("inverse exists");
            assert_eq!(addr.metric, name);
            assert_eq!(addr.device_id.as_deref(), device);
            let key = (device, name.clone());
            if let Some(prev) = seen.insert(path.clone(), key.clone()) {
                assert_eq!(prev, key, "collision on {path}");
            }
        }
        assert!(mapped > 5_000, "only {mapped} names mapped");
        // Non-canonical spellings are not addresses.
        assert_eq!(
            m.address(&TagPath::parse("g/n/d/_x41").expect("valid")),
            None
        );
        assert_eq!(
            m.address(&TagPath::parse("g/n/d/_xZZ").expect("valid")),
            None
        );
        assert_eq!(m.address(&TagPath::parse("g/n/d").expect("valid")), None);
    }

    fn path(p: &str) -> TagPath {
        TagPath::parse(p).expect("valid path")
    }

    fn mapping(group: &str, node: &str, device: DeviceSelector, asset: &str) -> AssetMapping {
        AssetMapping {
            group_id: group.into(),
            edge_node_id: node.into(),
            device,
            path: path(asset),
        }
    }

    /// Node `g/n` placed in a line, its device `filler` in a cell beside the Modbus PLC, every
    /// device of `g/w` under a gateway; node `g/other` keeps the default rule.
    fn mapped() -> TagMapper {
        use DeviceSelector::*;
        TagMapper::new(None)
            .expect("no prefix")
            .with_assets(vec![
                mapping(
                    "g",
                    "n",
                    Device("filler".into()),
                    "acme/lyon/hall/line1/filler/edge",
                ),
                mapping("g", "n", Node, "acme/lyon/hall/gw"),
                mapping("g", "w", AnyDevice, "acme/lyon/hall/line2"),
            ])
            .expect("valid mappings")
    }

    #[test]
    fn mapped_nodes_and_devices_go_under_their_assets() {
        let m = mapped();
        let p = |d: Option<&str>, metric: &str| m.path("g", "n", d, metric).map(|p| p.to_string());
        // The exact device: metrics right under the asset.
        assert_eq!(
            p(Some("filler"), "Speed").as_deref(),
            Ok("acme/lyon/hall/line1/filler/edge/Speed")
        );
        // The node's own metrics under `_node`, its other devices under their id.
        assert_eq!(
            p(None, "Uptime").as_deref(),
            Ok("acme/lyon/hall/gw/_node/Uptime")
        );
        assert_eq!(
            p(Some("Tank 2"), "Level").as_deref(),
            Ok("acme/lyon/hall/gw/Tank_x202/Level")
        );
        assert_eq!(
            p(Some("capper"), "Motor/Temp").as_deref(),
            Ok("acme/lyon/hall/gw/capper/Motor/Temp")
        );
        // The wildcard: every device of g/w under its id; g/w's node metrics keep the default.
        assert_eq!(
            m.path("g", "w", Some("p1"), "Flow/Total")
                .expect("fits")
                .as_str(),
            "acme/lyon/hall/line2/p1/Flow/Total"
        );
        assert_eq!(
            m.path("g", "w", None, "Uptime").expect("default").as_str(),
            "g/w/_node/Uptime"
        );
        // An unmapped node: today's rule, folding included.
        assert_eq!(
            m.path("g", "other", Some("d"), "a/b/c/d/e")
                .expect("default")
                .as_str(),
            "g/other/d/a/b/c/d_x2Fe"
        );
        // Every mapped path goes back to its metric (writes find their node and device).
        for (device, metric) in [
            (Some("filler"), "Speed"),
            (None, "Uptime"),
            (Some("Tank 2"), "Level"),
            (Some("capper"), "Motor/Temp"),
        ] {
            let tag = m.path("g", "n", device, metric).expect("mapped");
            let addr = m.address(&tag).expect("an inverse");
            assert_eq!(
                (addr.group_id.as_str(), addr.edge_node_id.as_str()),
                ("g", "n")
            );
            assert_eq!(
                (addr.device_id.as_deref(), addr.metric.as_str()),
                (device, metric)
            );
        }
        let (asset, which) = m
            .asset_of(&path("acme/lyon/hall/gw/capper/Motor/Temp"))
            .expect("mapped");
        assert_eq!(asset.as_str(), "acme/lyon/hall/gw");
        assert_eq!(which.to_string(), "g/n");
        // Non-canonical or foreign spellings under an asset have no inverse.
        for foreign in [
            "acme/lyon/hall/gw/filler/Speed", // filler is mapped exactly, not here
            "acme/lyon/hall/gw/_x41/x",       // "A" spelled as an escape
            "acme/lyon/hall/gw/capper",       // no metric level
            "acme/lyon/hall/line2/_node/Uptime", // the wildcard covers devices only
            "acme/lyon/hall/gw/_node",        // no metric level
            "g/n/filler/Speed",               // the default spelling of a mapped device
        ] {
            assert_eq!(m.address(&path(foreign)), None, "{foreign}");
        }
    }

    #[test]
    fn folders_that_do_not_fit_under_an_asset_are_refused_not_folded() {
        let m = mapped();
        // filler/edge is at depth 6: one level left.
        assert_eq!(
            m.path("g", "n", Some("filler"), "Motor/Temp"),
            Err(MapError::TooDeep {
                metric: "Motor/Temp".into(),
                levels: 2,
                room: 1,
                asset: path("acme/lyon/hall/line1/filler/edge"),
            })
        );
        // gw is at depth 4, plus `_node`: two levels left for a node metric.
        assert!(m.path("g", "n", None, "Node Control/Rebirth").is_ok());
        let err = m
            .path("g", "n", None, "Node Control/Scan/Rate")
            .expect_err("too deep");
        assert!(
            err.to_string().contains(
                "metric \"Node Control/Scan/Rate\" has 3 levels but the asset acme/lyon/hall/gw leaves room for 2"
            ),
            "{err}"
        );
    }

    #[test]
    fn default_paths_never_enter_a_mapped_asset_tree() {
        // A node whose default path would land under, at or above a mapped asset.
        let m = TagMapper::new(None)
            .expect("no prefix")
            .with_assets(vec![mapping(
                "g",
                "n",
                DeviceSelector::Device("d".into()),
                "acme/lyon/hall/edge",
            )])
            .expect("valid");
        for (device, metric) in [
            ("hall", "edge/x"), // under the asset
            ("hall", "edge"),   // at the asset
        ] {
            let err = m
                .path("acme", "lyon", Some(device), metric)
                .expect_err("reserved");
            assert!(
                matches!(&err, MapError::Reserved { mapping, .. } if mapping == "g/n/d"),
                "{err}"
            );
        }
        // Above it: the tag acme/lyon/x/y vs... an ancestor of the asset.
        let m = TagMapper::new(None)
            .expect("no prefix")
            .with_assets(vec![mapping(
                "g",
                "n",
                DeviceSelector::Device("d".into()),
                "a/b/c/d/e/f",
            )])
            .expect("valid");
        assert!(matches!(
            m.path("a", "b", Some("c"), "d/e"),
            Err(MapError::Reserved { .. })
        ));
        assert!(
            m.path("a", "b", Some("c"), "x").is_ok(),
            "a neighbour is fine"
        );
        assert_eq!(m.address(&path("a/b/c/d/e")), None);
    }

    #[test]
    fn bad_mapping_sets_are_refused_with_every_problem() {
        use DeviceSelector::*;
        let errors = TagMapper::new(None)
            .expect("no prefix")
            .with_assets(vec![
                mapping("g", "n", Device("d".into()), "a/b/c/d/e/f"),
                mapping("g", "n", Node, "a/b/c/d/e/f"),
                mapping("g", "n", Device("d".into()), "x/y"),
                mapping("g", "m", AnyDevice, "a/b/c"),
                mapping("g", "k", Node, "q/r"),
                mapping("g", "k", AnyDevice, "q/r/s"),
                mapping("g+", "k", Device("".into()), "z"),
            ])
            .expect_err("bad");
        let got: Vec<(usize, String)> = errors
            .iter()
            .map(|r| (r.index, r.error.to_string()))
            .collect();
        let has = |index: usize, text: &str| {
            assert!(
                got.iter().any(|(i, e)| *i == index && e.contains(text)),
                "#{index} {text:?} in {got:#?}"
            );
        };
        has(
            1,
            "has 6 levels; mapping g/n leaves no room for its metrics below it (at most 5 levels)",
        );
        has(1, "is also a/b/c/d/e/f (mapping g/n/d)");
        has(2, "g/n/d is mapped twice (to a/b/c/d/e/f and to x/y)");
        has(
            3,
            "asset path a/b/c (mapping g/m/*) contains a/b/c/d/e/f (mapping g/n/d)",
        );
        has(5, "lies under q/r (mapping g/k)");
        has(6, "group_id \"g+\" contains '+'");
        has(6, "device_id is empty");
        assert_eq!(got.len(), 7, "{got:#?}");
    }

    #[test]
    fn mapped_and_default_paths_never_collide_on_random_names() {
        // Names full of troublemakers on three nodes: one mapped by node and wildcard, one by
        // node only, one unmapped whose group and node spell the mapped assets' levels.
        let m = TagMapper::new(None)
            .expect("no prefix")
            .with_assets(vec![
                mapping("g", "n", DeviceSelector::Node, "a/b/n"),
                mapping("g", "n", DeviceSelector::AnyDevice, "a/b/any"),
                mapping(
                    "g",
                    "n",
                    DeviceSelector::Device("_node".into()),
                    "a/b/exact",
                ),
                mapping("g", "k", DeviceSelector::Node, "a/c"),
            ])
            .expect("valid");
        let alphabet: Vec<char> = "abcn_x/ .".chars().collect();
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut word = |len: u64| -> String {
            let n = 1 + (next() % len) as usize;
            (0..n)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect()
        };
        let nodes = [("g", "n"), ("g", "k"), ("a", "b"), ("a", "c")];
        let mut seen = std::collections::HashMap::new();
        let mut mapped = 0;
        for i in 0..20_000 {
            let (g, n) = nodes[i % nodes.len()];
            let device = match (i / nodes.len()) % 4 {
                0 => None,
                1 => Some("_node".to_owned()),
                _ => Some(word(3).replace('/', "")).filter(|d| !d.is_empty()),
            };
            let metric = word(6);
            let Ok(p) = m.path(g, n, device.as_deref(), &metric) else {
                continue;
            };
            mapped += 1;
            let key = (g, n, device.clone(), metric.clone());
            let addr = m
                .address(&p)
                .unwrap_or_else(|| panic!("no inverse for {p}"));
            assert_eq!(
                (
                    addr.group_id.as_str(),
                    addr.edge_node_id.as_str(),
                    addr.device_id.clone(),
                    addr.metric.clone()
                ),
                key,
                "{p}"
            );
            if let Some(prev) = seen.insert(p.clone(), key.clone()) {
                assert_eq!(prev, key, "collision on {p}");
            }
        }
        assert!(mapped > 5_000, "only {mapped} names mapped");
        assert!(
            seen.keys().any(|p| p.as_str().starts_with("a/b/any/")),
            "the wildcard was exercised"
        );
    }
}
