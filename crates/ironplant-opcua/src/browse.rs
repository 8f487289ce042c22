//! Finding the variables under a node and writing the `[[opcua.node]]` config that maps them to
//! tags: the NodeId with its namespace URI (`nsu=`, so a server that renumbers its namespaces
//! keeps the mapping), the tag type from DataType and ValueRank, unit from EngineeringUnits,
//! range from EURange, `writable` from the access level. Used by `ironplant opcua browse
//! --config` and the API.

use std::collections::HashMap;
use std::fmt::Write as _;

use ironplant_core::{TagPath, ValueType};
use opcua::types::{
    AttributeId, Identifier, NodeClass, NodeId, ReadValueId, TimestampsToReturn, Variant,
};

use crate::client::{ClientError, Connection};

/// A variable found under the start node.
#[derive(Debug, Clone, PartialEq)]
pub struct FoundVariable {
    pub node: NodeId,
    /// Browse names from below the start node down to the variable.
    pub names: Vec<String>,
    pub data_type: Option<NodeId>,
    pub value_type: Option<ValueType>,
    pub unit: Option<String>,
    pub range: Option<(f64, f64)>,
    pub writable: bool,
}

/// The tag type of a built-in data type (`value_rank` 1 = an array of it).
pub fn value_type(data_type: &NodeId, value_rank: i32) -> Option<ValueType> {
    use ironplant_core::ScalarType as S;
    let Identifier::Numeric(n) = data_type.identifier else {
        return None;
    };
    if data_type.namespace != 0 {
        return None;
    }
    let scalar = match n {
        1 => S::Bool,
        2..=9 => S::Int,
        10 | 11 => S::Float,
        12 | 13 | 21 => S::String,
        _ => return None,
    };
    Some(match (value_rank, scalar) {
        (1, s) => ValueType::Array(s),
        (r, _) if r > 1 || r == 0 => return None,
        (_, S::Bool) => ValueType::Bool,
        (_, S::Int) => ValueType::Int,
        (_, S::Float) => ValueType::Float,
        (_, S::String) => ValueType::String,
    })
}

/// The variables under `start`, down to `depth` levels of objects and folders, at most `max`.
pub async fn variables(
    conn: &Connection,
    start: &NodeId,
    depth: u32,
    max: usize,
) -> Result<Vec<FoundVariable>, ClientError> {
    let mut found = Vec::new();
    let mut stack = vec![(start.clone(), Vec::<String>::new())];
    let mut seen = std::collections::HashSet::new();
    while let Some((node, names)) = stack.pop() {
        if !seen.insert(node.clone()) {
            continue;
        }
        for child in conn.browse(&node).await?.into_iter().rev() {
            let name = child
                .browse_name
                .rsplit_once(':')
                .map_or(child.browse_name.as_str(), |(_, n)| n)
                .to_owned();
            // The standard namespace (the Server object, types) is not process data.
            if child.node_id.namespace == 0 {
                continue;
            }
            let mut path = names.clone();
            path.push(name);
            match child.node_class {
                NodeClass::Variable if found.len() < max => found.push(FoundVariable {
                    node: child.node_id,
                    names: path,
                    data_type: None,
                    value_type: None,
                    unit: None,
                    range: None,
                    writable: false,
                }),
                NodeClass::Object if (names.len() as u32) + 1 < depth => {
                    stack.push((child.node_id, path));
                }
                _ => {}
            }
        }
    }
    found.reverse();
    describe(conn, &mut found).await?;
    Ok(found)
}

/// Reads DataType, ValueRank, AccessLevel, EngineeringUnits and EURange of `vars`.
async fn describe(conn: &Connection, vars: &mut [FoundVariable]) -> Result<(), ClientError> {
    for chunk in vars.chunks_mut(200) {
        let ids: Vec<ReadValueId> = chunk
            .iter()
            .flat_map(|v| {
                [
                    AttributeId::DataType,
                    AttributeId::ValueRank,
                    AttributeId::UserAccessLevel,
                ]
                .map(|a| ReadValueId {
                    node_id: v.node.clone(),
                    attribute_id: a as u32,
                    ..Default::default()
                })
            })
            .collect();
        let values = conn
            .session
            .read(&ids, TimestampsToReturn::Neither, 0.0)
            .await
            .map_err(|e| ClientError::Server {
                url: conn.url().to_owned(),
                what: "read the variables' attributes",
                status: e.status(),
            })?;
        for (v, attrs) in chunk.iter_mut().zip(values.chunks(3)) {
            let get = |k: usize| attrs.get(k).and_then(|dv| dv.value.clone());
            v.data_type = match get(0) {
                Some(Variant::NodeId(id)) => Some(*id),
                _ => None,
            };
            let rank = match get(1) {
                Some(Variant::Int32(r)) => r,
                _ => -1,
            };
            v.value_type = v.data_type.as_ref().and_then(|t| value_type(t, rank));
            v.writable = matches!(get(2), Some(Variant::Byte(a)) if a & 0x02 != 0);
        }
        let eu = crate::source::read_eu(&conn.session, chunk.iter().map(|v| &v.node))
            .await
            .unwrap_or_default();
        for (v, (unit, range)) in chunk.iter_mut().zip(eu) {
            v.unit = unit;
            v.range = range;
        }
    }
    Ok(())
}

/// A tag path level from a browse name: characters outside `[A-Za-z0-9_.-]` become `_`.
fn level(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let s = s.trim_start_matches('.').to_owned();
    if s.is_empty() {
        "_".to_owned()
    } else {
        s.chars().take(64).collect()
    }
}

/// The `[[opcua.node]]` entries mapping `vars` of connection `connection` to tags under
/// `prefix` (one level per object below the start node; extra levels joined with `.` when the
/// path would be deeper than a tag path may be). `namespaces` is the server's namespace array
/// (URI by index). Variables of a type Ironplant cannot read are listed as comments.
pub fn config(
    vars: &[FoundVariable],
    connection: &str,
    prefix: &TagPath,
    namespaces: &HashMap<u16, String>,
) -> String {
    let mut out = String::new();
    let room = ironplant_core::path::MAX_DEPTH
        .saturating_sub(prefix.depth())
        .max(1);
    for v in vars {
        let mut levels: Vec<String> = v.names.iter().map(|n| level(n)).collect();
        if levels.len() > room {
            let extra = levels.len() - room + 1;
            let joined = levels[..extra].join(".");
            levels.splice(..extra, [joined]);
        }
        let tag = format!("{prefix}/{}", levels.join("/"));
        let node = match namespaces.get(&v.node.namespace) {
            Some(uri) if v.node.namespace != 0 => {
                let uri = uri.replace('%', "%25").replace(';', "%3b");
                format!("nsu={uri};{}", v.node.identifier)
            }
            _ => v.node.to_string(),
        };
        let Some(value_type) = v.value_type else {
            // Browse names come from the server: one comment line, whatever they hold.
            let names: String = v
                .names
                .join("/")
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect();
            let node: String = node
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect();
            let _ = writeln!(
                out,
                "# {node} ({names}): data type {} has no Ironplant form; not mapped\n",
                v.data_type
                    .as_ref()
                    .map_or("unknown".into(), ToString::to_string)
            );
            continue;
        };
        let _ = writeln!(out, "[[opcua.node]]");
        let _ = writeln!(out, "connection = {}", toml_str(connection));
        let _ = writeln!(out, "node = {}", toml_str(&node));
        let _ = writeln!(out, "tag = {}", toml_str(&tag));
        let _ = writeln!(out, "type = {}", toml_str(value_type.as_str()));
        if let Some(u) = &v.unit {
            let _ = writeln!(out, "unit = {}", toml_str(u));
        }
        if let Some((lo, hi)) = v.range {
            let _ = writeln!(out, "range = [{lo:?}, {hi:?}]");
        }
        if v.writable {
            let _ = writeln!(out, "writable = true");
        }
        out.push('\n');
    }
    out
}

/// A TOML basic string.
fn toml_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The server's namespace array, URI by index.
pub async fn namespaces(conn: &Connection) -> Result<HashMap<u16, String>, ClientError> {
    let map = conn
        .session
        .read_namespace_array()
        .await
        .map_err(|e| ClientError::Server {
            url: conn.url().to_owned(),
            what: "read the namespace array",
            status: e.status(),
        })?;
    Ok(map
        .known_namespaces()
        .iter()
        .map(|(uri, &i)| (i, uri.clone()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_config_parses_and_keeps_the_namespace_uri() {
        let vars = vec![
            FoundVariable {
                node: NodeId::new(3, "Line 1.Speed"),
                names: vec!["Line 1".into(), "Speed".into()],
                data_type: Some(NodeId::new(0, 11u32)),
                value_type: Some(ValueType::Float),
                unit: Some("bpm".into()),
                range: Some((0.0, 600.0)),
                writable: true,
            },
            FoundVariable {
                node: NodeId::new(3, 99u32),
                names: vec!["Blob".into()],
                data_type: Some(NodeId::new(0, 15u32)),
                value_type: None,
                unit: None,
                range: None,
                writable: false,
            },
        ];
        let ns = HashMap::from([(3u16, "urn:acme;plc".to_owned())]);
        let prefix = TagPath::parse("acme/lyon/pack/line1/labeller").expect("path");
        let text = format!(
            "[[opcua.connection]]\nid = \"plc\"\nurl = \"opc.tcp://x:4840/\"\n\n{}",
            config(&vars, "plc", &prefix, &ns)
        );
        assert!(text.contains("# nsu=urn:acme%3bplc;i=99 (Blob)"), "{text}");
        let registry =
            ironplant_core::config::Registry::new().with::<crate::settings::OpcuaSettings>();
        let c = ironplant_core::config::parse_with("gen.toml", &text, &registry)
            .unwrap_or_else(|e| panic!("{e:?}\n{text}"));
        let s = c.get::<crate::settings::OpcuaSettings>();
        assert_eq!(s.nodes.len(), 1);
        let n = &s.nodes[0];
        assert_eq!(n.node.namespace_uri.as_deref(), Some("urn:acme;plc"));
        assert_eq!(n.node.node, NodeId::new(0, "Line 1.Speed"));
        assert_eq!(n.tag.as_str(), "acme/lyon/pack/line1/labeller/Line_1/Speed");
        assert_eq!(
            (n.unit.as_deref(), n.range, n.writable),
            (Some("bpm"), Some((0.0, 600.0)), true)
        );
    }

    #[test]
    fn data_types_map_to_tag_types() {
        assert_eq!(value_type(&NodeId::new(0, 1u32), -1), Some(ValueType::Bool));
        assert_eq!(value_type(&NodeId::new(0, 6u32), -1), Some(ValueType::Int));
        assert_eq!(
            value_type(&NodeId::new(0, 11u32), 1),
            Some(ValueType::Array(ironplant_core::ScalarType::Float))
        );
        assert_eq!(value_type(&NodeId::new(0, 22u32), -1), None);
        assert_eq!(value_type(&NodeId::new(2, 11u32), -1), None);
    }
}
