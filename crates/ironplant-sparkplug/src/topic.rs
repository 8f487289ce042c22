//! Sparkplug B topics: `spBv1.0/{group_id}/{message_type}/{edge_node_id}[/{device_id}]` and the
//! 3.0 host state topic `spBv1.0/STATE/{host_id}`.

use std::fmt;

/// The topic namespace of Sparkplug B.
pub const NAMESPACE: &str = "spBv1.0";

/// The message types of edge node and device topics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    NBirth,
    NDeath,
    DBirth,
    DDeath,
    NData,
    DData,
    NCmd,
    DCmd,
}

impl MessageType {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageType::NBirth => "NBIRTH",
            MessageType::NDeath => "NDEATH",
            MessageType::DBirth => "DBIRTH",
            MessageType::DDeath => "DDEATH",
            MessageType::NData => "NDATA",
            MessageType::DData => "DDATA",
            MessageType::NCmd => "NCMD",
            MessageType::DCmd => "DCMD",
        }
    }

    fn parse(s: &str) -> Option<MessageType> {
        Some(match s {
            "NBIRTH" => MessageType::NBirth,
            "NDEATH" => MessageType::NDeath,
            "DBIRTH" => MessageType::DBirth,
            "DDEATH" => MessageType::DDeath,
            "NDATA" => MessageType::NData,
            "DDATA" => MessageType::DData,
            "NCMD" => MessageType::NCmd,
            "DCMD" => MessageType::DCmd,
            _ => return None,
        })
    }

    /// Whether topics of this type name a device (DBIRTH, DDEATH, DDATA, DCMD).
    pub fn is_device(self) -> bool {
        matches!(
            self,
            MessageType::DBirth | MessageType::DDeath | MessageType::DData | MessageType::DCmd
        )
    }
}

impl fmt::Display for MessageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A parsed, validated Sparkplug topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Topic {
    /// An edge node or device message; `device_id` is `Some` exactly for the device types.
    Edge {
        group_id: String,
        message_type: MessageType,
        edge_node_id: String,
        device_id: Option<String>,
    },
    /// `spBv1.0/STATE/{host_id}`: a host application's birth/death (JSON payload).
    State { host_id: String },
}

/// Which element of a topic an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Element {
    GroupId,
    EdgeNodeId,
    DeviceId,
    HostId,
}

impl fmt::Display for Element {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Element::GroupId => "group_id",
            Element::EdgeNodeId => "edge_node_id",
            Element::DeviceId => "device_id",
            Element::HostId => "host_id",
        })
    }
}

/// Why a string is not a valid Sparkplug topic (or id).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("topic {topic:?} is not in the {NAMESPACE} namespace")]
    NotSparkplug { topic: String },
    #[error("topic {topic:?} has {levels} levels; expected {NAMESPACE}/group/TYPE/node[/device] or {NAMESPACE}/STATE/host")]
    WrongLevelCount { topic: String, levels: usize },
    #[error("topic {topic:?}: unknown message type {found:?} (expected NBIRTH, NDEATH, DBIRTH, DDEATH, NDATA, DDATA, NCMD or DCMD)")]
    UnknownMessageType { topic: String, found: String },
    #[error("topic {topic:?}: {message_type} needs a device_id level")]
    MissingDevice {
        topic: String,
        message_type: MessageType,
    },
    #[error("topic {topic:?}: {message_type} must not have a device_id level")]
    UnexpectedDevice {
        topic: String,
        message_type: MessageType,
    },
    #[error("{element} is empty")]
    EmptyId { element: Element },
    #[error("{element} {id:?} contains {ch:?}; '+', '/', '#' and NUL are reserved")]
    ReservedChar {
        element: Element,
        id: String,
        ch: char,
    },
}

/// Checks a group, edge node, device or host id: non-empty UTF-8 without `+`, `/`, `#` (the
/// specification's reserved characters) or NUL (not allowed in MQTT topics).
pub fn validate_id(element: Element, id: &str) -> Result<(), TopicError> {
    if id.is_empty() {
        return Err(TopicError::EmptyId { element });
    }
    if let Some(ch) = id.chars().find(|c| matches!(c, '+' | '/' | '#' | '\0')) {
        return Err(TopicError::ReservedChar {
            element,
            id: id.to_owned(),
            ch,
        });
    }
    Ok(())
}

impl Topic {
    /// Parses and validates a topic.
    pub fn parse(topic: &str) -> Result<Topic, TopicError> {
        let levels: Vec<&str> = topic.split('/').collect();
        if levels.first() != Some(&NAMESPACE) {
            return Err(TopicError::NotSparkplug {
                topic: topic.to_owned(),
            });
        }
        let wrong_count = || TopicError::WrongLevelCount {
            topic: topic.to_owned(),
            levels: levels.len(),
        };
        match levels.as_slice() {
            [_, "STATE", host_id] => {
                validate_id(Element::HostId, host_id)?;
                Ok(Topic::State {
                    host_id: (*host_id).to_owned(),
                })
            }
            [_, "STATE", ..] => Err(wrong_count()),
            [_, group_id, message_type, edge_node_id, rest @ ..] if rest.len() <= 1 => {
                let mt = MessageType::parse(message_type).ok_or_else(|| {
                    TopicError::UnknownMessageType {
                        topic: topic.to_owned(),
                        found: (*message_type).to_owned(),
                    }
                })?;
                validate_id(Element::GroupId, group_id)?;
                validate_id(Element::EdgeNodeId, edge_node_id)?;
                let device_id = match (mt.is_device(), rest.first()) {
                    (true, Some(d)) => {
                        validate_id(Element::DeviceId, d)?;
                        Some((*d).to_owned())
                    }
                    (true, None) => {
                        return Err(TopicError::MissingDevice {
                            topic: topic.to_owned(),
                            message_type: mt,
                        })
                    }
                    (false, Some(_)) => {
                        return Err(TopicError::UnexpectedDevice {
                            topic: topic.to_owned(),
                            message_type: mt,
                        })
                    }
                    (false, None) => None,
                };
                Ok(Topic::Edge {
                    group_id: (*group_id).to_owned(),
                    message_type: mt,
                    edge_node_id: (*edge_node_id).to_owned(),
                    device_id,
                })
            }
            _ => Err(wrong_count()),
        }
    }

    /// The topic of a node message (`device_id = None`) or device message.
    pub fn edge(
        group_id: &str,
        message_type: MessageType,
        edge_node_id: &str,
        device_id: Option<&str>,
    ) -> String {
        match device_id {
            Some(d) => format!("{NAMESPACE}/{group_id}/{message_type}/{edge_node_id}/{d}"),
            None => format!("{NAMESPACE}/{group_id}/{message_type}/{edge_node_id}"),
        }
    }

    pub fn state(host_id: &str) -> String {
        format!("{NAMESPACE}/STATE/{host_id}")
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Topic::Edge {
                group_id,
                message_type,
                edge_node_id,
                device_id,
            } => f.write_str(&Topic::edge(
                group_id,
                *message_type,
                edge_node_id,
                device_id.as_deref(),
            )),
            Topic::State { host_id } => f.write_str(&Topic::state(host_id)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_message_type() {
        for mt in [
            MessageType::NBirth,
            MessageType::NDeath,
            MessageType::NData,
            MessageType::NCmd,
        ] {
            let s = format!("spBv1.0/Plant 1/{mt}/edge-1");
            let t = Topic::parse(&s).expect("valid");
            assert_eq!(
                t,
                Topic::Edge {
                    group_id: "Plant 1".into(),
                    message_type: mt,
                    edge_node_id: "edge-1".into(),
                    device_id: None
                }
            );
            assert_eq!(t.to_string(), s);
        }
        for mt in [
            MessageType::DBirth,
            MessageType::DDeath,
            MessageType::DData,
            MessageType::DCmd,
        ] {
            let s = format!("spBv1.0/g/{mt}/n/Pump ü");
            let t = Topic::parse(&s).expect("valid");
            assert_eq!(
                t,
                Topic::Edge {
                    group_id: "g".into(),
                    message_type: mt,
                    edge_node_id: "n".into(),
                    device_id: Some("Pump ü".into())
                }
            );
            assert_eq!(t.to_string(), s);
        }
        assert_eq!(
            Topic::parse("spBv1.0/STATE/scada-1"),
            Ok(Topic::State {
                host_id: "scada-1".into()
            })
        );
    }

    #[test]
    fn rejects_malformed_topics_with_reason() {
        let err = |s: &str| Topic::parse(s).expect_err(s);
        assert!(matches!(
            err("spAv1.0/g/NDATA/n"),
            TopicError::NotSparkplug { .. }
        ));
        assert!(matches!(err("STATE/host"), TopicError::NotSparkplug { .. }));
        assert!(matches!(err(""), TopicError::NotSparkplug { .. }));
        assert!(matches!(
            err("spBv1.0"),
            TopicError::WrongLevelCount { levels: 1, .. }
        ));
        assert!(matches!(
            err("spBv1.0/g/NDATA"),
            TopicError::WrongLevelCount { levels: 3, .. }
        ));
        assert!(matches!(
            err("spBv1.0/g/DDATA/n/d/extra"),
            TopicError::WrongLevelCount { levels: 6, .. }
        ));
        assert!(matches!(
            err("spBv1.0/STATE/a/b"),
            TopicError::WrongLevelCount { levels: 4, .. }
        ));
        assert!(matches!(
            err("spBv1.0/STATE"),
            TopicError::WrongLevelCount { levels: 2, .. }
        ));
        assert!(matches!(
            err("spBv1.0/g/NDATUM/n"),
            TopicError::UnknownMessageType { .. }
        ));
        assert!(matches!(
            err("spBv1.0/g/ndata/n"),
            TopicError::UnknownMessageType { .. }
        ));
        assert!(matches!(
            err("spBv1.0/g/DDATA/n"),
            TopicError::MissingDevice {
                message_type: MessageType::DData,
                ..
            }
        ));
        assert!(matches!(
            err("spBv1.0/g/NBIRTH/n/d"),
            TopicError::UnexpectedDevice {
                message_type: MessageType::NBirth,
                ..
            }
        ));
        assert_eq!(
            err("spBv1.0//NDATA/n"),
            TopicError::EmptyId {
                element: Element::GroupId
            }
        );
        assert_eq!(
            err("spBv1.0/g/NDATA/"),
            TopicError::EmptyId {
                element: Element::EdgeNodeId
            }
        );
        assert_eq!(
            err("spBv1.0/g/DDATA/n/"),
            TopicError::EmptyId {
                element: Element::DeviceId
            }
        );
        assert!(matches!(
            err("spBv1.0/g+/NDATA/n"),
            TopicError::ReservedChar { ch: '+', .. }
        ));
        assert!(matches!(
            err("spBv1.0/g/NDATA/#"),
            TopicError::ReservedChar { ch: '#', .. }
        ));
        assert!(matches!(
            err("spBv1.0/g/DDATA/n/a\0b"),
            TopicError::ReservedChar { ch: '\0', .. }
        ));
        assert_eq!(
            err("spBv1.0/STATE/"),
            TopicError::EmptyId {
                element: Element::HostId
            }
        );
    }
}
