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
//! # Unmappable names
//! An empty metric name or folder (`a//b`, a leading or trailing `/`), or a result longer than
//! 64 bytes in a level or 256 in all, has no path: [`MapError`]. Truncating or hashing would make
//! collisions possible, so such metrics are reported instead.

use std::fmt::Write as _;

use ironplant_core::path::{MAX_DEPTH, MAX_LEVEL_LEN, MAX_PATH_LEN};
use ironplant_core::{PathError, TagPath};

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
}

/// Where a metric lives in Sparkplug terms: the inverse of a tag path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MetricAddress {
    pub group_id: String,
    pub edge_node_id: String,
    pub device_id: Option<String>,
    pub metric: String,
}

/// Maps metric addresses to tag paths under an optional prefix (see the module docs).
#[derive(Debug, Clone)]
pub struct TagMapper {
    prefix: Option<TagPath>,
    metric_levels: usize,
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
        })
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
        Ok(TagPath::parse(&s)?)
    }

    /// The metric a tag path stands for, if it is one this mapper produces.
    pub fn address(&self, path: &TagPath) -> Option<MetricAddress> {
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
        let addr = MetricAddress {
            group_id: unescape_level(group)?,
            edge_node_id: unescape_level(node)?,
            device_id,
            metric,
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
}
