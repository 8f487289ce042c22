//! The `[sparkplug]` section of `ironplant.toml`: settings, defaults and validation, owned by
//! this crate and parsed through core's [`Section`] (errors at file:line:col like every other).

use std::ops::Range;
use std::time::Duration;

use ironplant_core::config::{
    parse_duration, parse_location, parse_path, section, AssetConfig, Config, Diagnostics,
    RawLocation, Section,
};
use ironplant_core::path::MAX_DEPTH;
use ironplant_core::{Location, TagPath};
use serde::Deserialize;
use toml::Spanned;

use crate::tagmap::{AssetMapping, DeviceSelector, MappingError, TagMapper};
use crate::topic::TopicError;

impl Section for SparkplugSettings {
    const KEY: &'static str = "sparkplug";

    fn parse(source: &str, plant: &Config, d: &mut Diagnostics) -> SparkplugSettings {
        match section::<RawSparkplug>(source, Self::KEY) {
            Ok(raw) => validate_sparkplug(d, raw, plant),
            Err(e) => {
                d.errors.push(e);
                SparkplugSettings::default()
            }
        }
    }

    /// The mapped assets join the plant's tree, with their names and locations.
    fn assets(&self) -> Vec<AssetConfig> {
        self.assets
            .iter()
            .map(|a| AssetConfig {
                path: a.mapping.path.clone(),
                name: a.name.clone(),
                description: a.description.clone(),
                location: a.location.clone(),
            })
            .collect()
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
    /// How long a write (NCMD/DCMD) waits for the edge node to report the written value.
    pub write_timeout: Duration,
    /// `[[sparkplug.asset]]`: edge nodes and devices placed in the ISA-95 asset tree.
    pub assets: Vec<SparkplugAsset>,
}

/// One `[[sparkplug.asset]]`: where a group / node / device's metrics go, and the asset they
/// go under (which appears in the asset tree like an `[[asset]]`).
#[derive(Debug, Clone, PartialEq)]
pub struct SparkplugAsset {
    pub mapping: AssetMapping,
    pub name: Option<String>,
    pub description: String,
    pub location: Location,
}

impl Default for SparkplugSettings {
    fn default() -> Self {
        SparkplugSettings {
            enabled: true,
            host_id: "ironplant".to_owned(),
            prefix: None,
            write_timeout: Duration::from_secs(5),
            assets: Vec::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSparkplug {
    enabled: Option<bool>,
    host_id: Option<Spanned<String>>,
    prefix: Option<Spanned<String>>,
    write_timeout: Option<Spanned<String>>,
    #[serde(default)]
    asset: Vec<RawAsset>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAsset {
    group: Spanned<String>,
    node: Spanned<String>,
    device: Option<Spanned<String>>,
    path: Spanned<String>,
    name: Option<String>,
    #[serde(default)]
    description: String,
    location: Option<Spanned<RawLocation>>,
}

/// Sparkplug prefix levels at most: group, node, device and one metric level must still fit.
const SPARKPLUG_PREFIX_MAX: usize = MAX_DEPTH - 4;

fn validate_sparkplug(
    c: &mut Diagnostics,
    raw: Option<RawSparkplug>,
    plant: &Config,
) -> SparkplugSettings {
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
        write_timeout: parse_duration(c, &raw.write_timeout, "write_timeout", d.write_timeout),
        assets: validate_assets(c, raw.asset, &prefix, plant),
        prefix,
    }
}

/// Where to point a mapping's problem.
struct AssetSpans {
    group: Range<usize>,
    node: Range<usize>,
    device: Option<Range<usize>>,
    path: Range<usize>,
}

/// `[[sparkplug.asset]]`: each entry's ids and path, then the set as the tag mapper sees it
/// (depth, duplicates, nesting), then against the plant (its assets and tags).
fn validate_assets(
    c: &mut Diagnostics,
    raw: Vec<RawAsset>,
    prefix: &Option<TagPath>,
    plant: &Config,
) -> Vec<SparkplugAsset> {
    let mut assets = Vec::new();
    let mut spans = Vec::new();
    for a in raw {
        let path = parse_path(c, &a.path, "Sparkplug asset");
        let device = match &a.device {
            None => DeviceSelector::Node,
            Some(d) if d.get_ref() == "*" => DeviceSelector::AnyDevice,
            Some(d) => DeviceSelector::Device(d.get_ref().clone()),
        };
        let location = a.location.map(|l| parse_location(c, l)).unwrap_or_default();
        let Some(path) = path else { continue };
        spans.push(AssetSpans {
            group: a.group.span(),
            node: a.node.span(),
            device: a.device.as_ref().map(Spanned::span),
            path: a.path.span(),
        });
        assets.push(SparkplugAsset {
            mapping: AssetMapping {
                group_id: a.group.into_inner(),
                edge_node_id: a.node.into_inner(),
                device,
                path,
            },
            name: a.name,
            description: a.description,
            location,
        });
    }
    let mappings = assets.iter().map(|a| a.mapping.clone()).collect();
    // The prefix was checked above; without a usable one the mappings are checked alone.
    let mapper = TagMapper::new(prefix.clone())
        .or_else(|_| TagMapper::new(None))
        .map(|m| m.with_assets(mappings));
    if let Ok(Err(rejected)) = mapper {
        for r in rejected {
            let Some(s) = spans.get(r.index) else {
                continue;
            };
            let (span, hint) = match &r.error {
                MappingError::Id(TopicError::EmptyId { element } | TopicError::ReservedChar { element, .. }) => {
                    let span = match element {
                        crate::topic::Element::GroupId => s.group.clone(),
                        crate::topic::Element::EdgeNodeId => s.node.clone(),
                        _ => s.device.clone().unwrap_or(s.node.clone()),
                    };
                    (span, "Sparkplug ids are the group, edge node and device ids of the topics (spBv1.0/<group>/NBIRTH/<node>); use device = \"*\" for every device".to_owned())
                }
                MappingError::Id(_) => (s.group.clone(), "check the ids".to_owned()),
                MappingError::TooDeep { max, .. } => (s.path.clone(), format!("use an asset path of at most {max} levels; a device's metrics go right below its asset, a node's under <path>/_node and <path>/<device>")),
                MappingError::Duplicate { .. } => (s.device.clone().unwrap_or(s.node.clone()), "remove one of the two [[sparkplug.asset]] entries".to_owned()),
                MappingError::Overlap { .. } => (s.path.clone(), "give each mapping its own asset, side by side (e.g. .../filler/edge and .../capper/edge)".to_owned()),
            };
            c.err(span, r.error.to_string(), Some(hint));
        }
    }
    // Against the plant: the asset's subtree belongs to the metrics.
    for (a, s) in assets.iter().zip(&spans) {
        let p = &a.mapping.path;
        let mapping = a.mapping.to_string();
        if plant.assets.iter().any(|x| x.path == *p) {
            c.err(
                s.path.clone(),
                format!("{p} is declared by an [[asset]] and mapped to Sparkplug {mapping}"),
                Some("describe the asset in one place: move its name, description and location into this [[sparkplug.asset]] and remove the [[asset]]".to_owned()),
            );
        } else if let Some(x) = plant.assets.iter().find(|x| x.path.is_under(p)) {
            c.err(
                s.path.clone(),
                format!("[[asset]] {} lies under {p}, the asset of Sparkplug {mapping}, whose levels belong to its metrics", x.path),
                Some("map the Sparkplug metrics to an asset of their own, beside the configured ones".to_owned()),
            );
        }
        if let Some(t) = plant
            .tags
            .iter()
            .find(|t| t.path.is_under(p) || p.is_under(&t.path))
        {
            let relation = if t.path == *p {
                "is"
            } else if t.path.is_under(p) {
                "lies under"
            } else {
                "is an ancestor of"
            };
            c.err(
                s.path.clone(),
                format!("configured tag {} {relation} {p}, the asset of Sparkplug {mapping}", t.path),
                Some("a configured tag and a Sparkplug metric must never share a path: map the Sparkplug metrics to an asset of their own".to_owned()),
            );
        }
    }
    assets
}

#[cfg(test)]
mod tests {
    use super::*;
    use ironplant_core::config::{parse_with, ConfigErrors, Registry};

    fn parse(file: &str, source: &str) -> Result<Config, ConfigErrors> {
        parse_with(file, source, &Registry::new().with::<SparkplugSettings>())
    }

    #[test]
    fn sparkplug_section() {
        let d = parse("e.toml", "")
            .expect("empty config")
            .get::<SparkplugSettings>();
        assert_eq!(d, SparkplugSettings::default().into());
        assert!(d.enabled && d.host_id == "ironplant" && d.prefix.is_none());
        let cfg = parse(
            "s.toml",
            "[sparkplug]\nenabled = false\nhost_id = \"scada-1\"\nprefix = \"acme/lyon/sp/\"\nwrite_timeout = \"1500ms\"\n",
        )
        .expect("valid");
        assert!(!cfg.get::<SparkplugSettings>().enabled);
        assert_eq!(cfg.get::<SparkplugSettings>().host_id, "scada-1");
        assert_eq!(
            cfg.get::<SparkplugSettings>().write_timeout,
            Duration::from_millis(1500)
        );
        assert_eq!(
            cfg.get::<SparkplugSettings>()
                .prefix
                .as_ref()
                .map(TagPath::as_str),
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

    const PLANT: &str = r#"
[[asset]]
path = "acme/lyon"
location = { latitude = 45.7, longitude = 4.8 }

[[asset]]
path = "acme/lyon/bottling/line1/filler"

[[tag]]
path = "acme/lyon/bottling/line1/filler/plc/speed"
"#;

    #[test]
    fn asset_mappings_are_read_and_join_the_tree() {
        let cfg = parse(
            "a.toml",
            &format!(
                "{PLANT}
[[sparkplug.asset]]
group = \"bottling\"
node = \"sim-edge\"
device = \"line1\"
path = \"acme/lyon/bottling/line1/filler/edge\"
name = \"Filler edge gateway\"
location = {{ zone = \"hall-b\", x = 14.0, y = 40.0 }}

[[sparkplug.asset]]
group = \"bottling\"
node = \"sim-edge\"
path = \"acme/lyon/bottling/gw\"

[[sparkplug.asset]]
group = \"bottling\"
node = \"other\"
device = \"*\"
path = \"acme/lyon/bottling/other\"
"
            ),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let sp = cfg.get::<SparkplugSettings>();
        let kinds: Vec<(String, &DeviceSelector)> = sp
            .assets
            .iter()
            .map(|a| (a.mapping.to_string(), &a.mapping.device))
            .collect();
        assert_eq!(
            kinds,
            [
                (
                    "bottling/sim-edge/line1".to_owned(),
                    &DeviceSelector::Device("line1".into())
                ),
                ("bottling/sim-edge".to_owned(), &DeviceSelector::Node),
                ("bottling/other/*".to_owned(), &DeviceSelector::AnyDevice),
            ]
        );
        let ns = cfg.namespace();
        let edge = ns
            .asset(&TagPath::parse("acme/lyon/bottling/line1/filler/edge").expect("path"))
            .expect("the mapped asset is in the tree");
        assert_eq!(edge.name, "Filler edge gateway");
        assert_eq!(edge.level, ironplant_core::AssetLevel::Device);
        assert_eq!(
            (
                edge.location.zone.as_deref(),
                edge.location.x_m,
                edge.location.y_m
            ),
            (Some("hall-b"), Some(14.0), Some(40.0))
        );
        assert_eq!(
            edge.effective_location.latitude,
            Some(45.7),
            "inherits the site's"
        );
        assert!(ns
            .asset(&TagPath::parse("acme/lyon/bottling/other").expect("path"))
            .is_some_and(|a| a.name == "other"));
    }

    #[test]
    fn bad_asset_mappings_are_reported_with_positions_and_hints() {
        let src = format!(
            "{PLANT}
[[sparkplug.asset]]
group = \"g\"
node = \"n\"
path = \"acme/lyon/bottling/line1/filler/deep\"

[[sparkplug.asset]]
group = \"g\"
node = \"n\"
device = \"d\"
path = \"acme/lyon/sp/d\"

[[sparkplug.asset]]
group = \"g\"
node = \"n\"
device = \"d\"
path = \"acme/lyon/sp/e\"

[[sparkplug.asset]]
group = \"g\"
node = \"m\"
device = \"*\"
path = \"acme/lyon/sp\"

[[sparkplug.asset]]
group = \"g\"
node = \"k\"
path = \"acme/lyon/bottling/line1/filler\"

[[sparkplug.asset]]
group = \"g\"
node = \"k\"
device = \"x\"
path = \"acme/lyon/bottling/line1/filler/plc\"

[[sparkplug.asset]]
group = \"g/h\"
node = \"j\"
path = \"acme//x\"
location = {{ x = 1.0 }}
"
        );
        let err = parse("b.toml", &src).expect_err("invalid");
        let text = err.to_string();
        let at = |needle: &str, what: &str| {
            // In the Sparkplug part, after the plant.
            let skip = PLANT.lines().count();
            let line = src
                .lines()
                .skip(skip)
                .position(|l| l.contains(needle))
                .expect("needle in the source")
                + skip
                + 1;
            assert!(
                err.errors
                    .iter()
                    .any(|e| err.line_col(e.span.start).0 == line && e.message.contains(what)),
                "{what:?} at line {line} ({needle}):\n{text}"
            );
        };
        at(
            "filler/deep",
            "asset path acme/lyon/bottling/line1/filler/deep has 6 levels; mapping g/n leaves no room for its metrics below it (at most 5 levels)",
        );
        // The second "d" mapping of g/n: at its device key.
        let second_d = src.match_indices("device = \"d\"").nth(1).expect("two").0;
        assert!(
            err.errors.iter().any(|e| e.span.start == second_d + 9
                && e.message
                    .contains("g/n/d is mapped twice (to acme/lyon/sp/d and to acme/lyon/sp/e)")),
            "{text}"
        );
        at(
            "\"acme/lyon/sp\"",
            "contains acme/lyon/sp/d (mapping g/n/d)",
        );
        at(
            "path = \"acme/lyon/bottling/line1/filler\"",
            "acme/lyon/bottling/line1/filler is declared by an [[asset]] and mapped to Sparkplug g/k",
        );
        at(
            "path = \"acme/lyon/bottling/line1/filler\"",
            "configured tag acme/lyon/bottling/line1/filler/plc/speed lies under acme/lyon/bottling/line1/filler",
        );
        at(
            "filler/plc\"",
            "configured tag acme/lyon/bottling/line1/filler/plc/speed lies under",
        );
        at("acme//x", "invalid Sparkplug asset path \"acme//x\"");
        at("location = { x = 1.0 }", "needs both x and y");
        assert!(
            text.contains("hint: use an asset path of at most 5 levels"),
            "{text}"
        );
        assert!(
            text.contains("hint: describe the asset in one place"),
            "{text}"
        );
        // An unknown key, with the known ones.
        let err = parse(
            "c.toml",
            "[[sparkplug.asset]]\ngroup = \"g\"\nnode = \"n\"\ndevise = \"d\"\npath = \"a/b\"\n",
        )
        .expect_err("unknown key");
        let text = err.to_string();
        assert!(
            text.contains("c.toml:4:1: error: unknown field `devise`"),
            "{text}"
        );
        assert!(text.contains("`device`"), "{text}");
        // A bad id, at the id.
        let err = parse(
            "d.toml",
            "[[sparkplug.asset]]\ngroup = \"g\"\nnode = \"n+1\"\npath = \"a/b\"\n",
        )
        .expect_err("bad id");
        let text = err.to_string();
        assert!(
            text.contains("d.toml:3:8: error: edge_node_id \"n+1\" contains '+'"),
            "{text}"
        );
    }
}
