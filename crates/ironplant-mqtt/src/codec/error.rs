//! What can go wrong decoding and encoding, and the reason code the broker answers with.

use thiserror::Error;

use super::properties::PropertyId;
use super::reason::ReasonCode;
use super::types::{PacketType, QoS, StringError};
use crate::topic::TopicError;

/// Why bytes from the wire are not an acceptable MQTT packet.
///
/// Every variant maps to the reason code a 5.0 broker sends in CONNACK or DISCONNECT before it
/// closes the connection ([`DecodeError::reason_code`]); a 3.1.1 broker closes the connection,
/// except for [`DecodeError::UnsupportedProtocolVersion`], which it answers with CONNACK
/// return code 0x01 ([`ReasonCode::to_v311_connack`]).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Packet type 0, or 15 (AUTH) on a 3.1.1 connection.
    #[error("packet type {0} is reserved")]
    ReservedPacketType(u8),
    /// The low nibble of the first byte is not what the packet type requires.
    #[error("{packet} has invalid fixed header flags {flags:#06b}")]
    InvalidFixedHeaderFlags {
        /// The packet.
        packet: PacketType,
        /// The low nibble received.
        flags: u8,
    },
    /// A Variable Byte Integer has a continuation bit on its fourth byte.
    #[error("variable byte integer is longer than 4 bytes")]
    VarIntTooLong,
    /// A Variable Byte Integer does not use the fewest bytes (MQTT-1.5.5-1).
    #[error("variable byte integer is not minimally encoded")]
    VarIntNotMinimal,
    /// The packet is larger than the receiver's maximum packet size; refused from the fixed
    /// header alone, before the body is buffered.
    #[error("packet of {size} bytes exceeds the maximum packet size of {max} bytes")]
    PacketTooLarge {
        /// Total size the fixed header announces.
        size: usize,
        /// The limit in force.
        max: usize,
    },
    /// The Remaining Length ends inside a field.
    #[error("{packet} ends inside a field")]
    Truncated {
        /// The packet.
        packet: PacketType,
    },
    /// Bytes left over after the last field of a packet that has no payload to hold them.
    #[error("{packet} has {count} bytes after its last field")]
    TrailingBytes {
        /// The packet.
        packet: PacketType,
        /// How many.
        count: usize,
    },
    /// A UTF-8 Encoded String that is not one.
    #[error("{packet}: {error}")]
    InvalidString {
        /// The packet.
        packet: PacketType,
        /// What is wrong with it.
        error: StringError,
    },
    /// The protocol name of CONNECT is not `MQTT` (nor 3.1's `MQIsdp`).
    #[error("CONNECT protocol name is not \"MQTT\"")]
    InvalidProtocolName,
    /// A protocol level other than 4 (3.1.1) or 5 (5.0).
    #[error("unsupported protocol level {level} (supported: 4 = MQTT 3.1.1, 5 = MQTT 5.0)")]
    UnsupportedProtocolVersion {
        /// The level received.
        level: u8,
    },
    /// The first packet of a connection is not CONNECT.
    #[error("expected CONNECT as the first packet, got {packet}")]
    ExpectedConnect {
        /// What arrived instead.
        packet: PacketType,
    },
    /// Reserved bit set, or Will QoS/Retain without the Will flag, or (3.1.1) a password
    /// without a user name.
    #[error("invalid CONNECT flags {0:#010b}")]
    InvalidConnectFlags(u8),
    /// CONNACK acknowledge flags with reserved bits set.
    #[error("invalid CONNACK flags {0:#010b}")]
    InvalidConnackFlags(u8),
    /// QoS 3.
    #[error("{packet} has QoS 3")]
    InvalidQos {
        /// The packet (PUBLISH, CONNECT for the Will, SUBSCRIBE).
        packet: PacketType,
    },
    /// DUP set on a QoS 0 PUBLISH (MQTT-3.3.1-2).
    #[error("PUBLISH has DUP set with QoS 0")]
    DupWithQos0,
    /// A zero packet identifier where one is required.
    #[error("{packet} has packet identifier 0")]
    ZeroPacketId {
        /// The packet.
        packet: PacketType,
    },
    /// A reason (or 3.1.1 return) code not defined for this packet.
    #[error("reason code {code:#04x} is not valid in {packet}")]
    InvalidReasonCode {
        /// The packet.
        packet: PacketType,
        /// The byte received.
        code: u8,
    },
    /// A property identifier the spec does not define.
    #[error("{packet} has unknown property identifier {id:#04x}")]
    UnknownProperty {
        /// The packet.
        packet: PacketType,
        /// The identifier received.
        id: u32,
    },
    /// A property this packet may not carry (malformed per MQTT 5.0 §2.2.2.2).
    #[error("property {property} is not allowed in {packet}")]
    PropertyNotAllowed {
        /// The packet (CONNECT for Will properties).
        packet: PacketType,
        /// The property.
        property: PropertyId,
    },
    /// A property that may appear only once appears again.
    #[error("property {property} appears more than once in {packet}")]
    DuplicateProperty {
        /// The packet.
        packet: PacketType,
        /// The property.
        property: PropertyId,
    },
    /// A property value outside its range (0 where it must be positive, not 0 or 1, ...).
    #[error("property {property} has invalid value {value}")]
    InvalidPropertyValue {
        /// The property.
        property: PropertyId,
        /// The value received.
        value: u32,
    },
    /// Authentication Data without Authentication Method.
    #[error("{packet} has Authentication Data without Authentication Method")]
    AuthDataWithoutMethod {
        /// The packet.
        packet: PacketType,
    },
    /// A Response Topic that is not a valid topic name (MQTT-3.3.2-14).
    #[error("invalid response topic: {0}")]
    InvalidResponseTopic(TopicError),
    /// A topic name that is empty, has wildcards, ...
    #[error("invalid topic name: {0}")]
    InvalidTopicName(TopicError),
    /// A 5.0 PUBLISH with an empty topic name and no Topic Alias (§3.3.2.1).
    #[error("PUBLISH has an empty topic name and no topic alias")]
    MissingTopicName,
    /// A topic filter that breaks the wildcard or shared subscription rules.
    #[error("invalid topic filter: {0}")]
    InvalidTopicFilter(TopicError),
    /// SUBSCRIBE options with reserved bits set.
    #[error("subscription options {0:#010b} have reserved bits set")]
    ReservedSubscriptionOptions(u8),
    /// Retain Handling 3.
    #[error("subscription options have retain handling 3")]
    InvalidRetainHandling,
    /// No Local on a shared subscription (MQTT-3.8.3-4).
    #[error("no local is set on a shared subscription")]
    NoLocalOnSharedSubscription,
    /// SUBSCRIBE, SUBACK, UNSUBSCRIBE or (5.0) UNSUBACK without a single entry.
    #[error("{packet} has an empty payload")]
    EmptyPayload {
        /// The packet.
        packet: PacketType,
    },
    /// CONNACK with Session Present and a failure code (MQTT-3.2.2-4 / -6).
    #[error("CONNACK has Session Present set with a failure code")]
    SessionPresentOnFailure,
}

impl DecodeError {
    /// The MQTT 5.0 reason code for CONNACK or DISCONNECT that reports this error.
    pub fn reason_code(&self) -> ReasonCode {
        use DecodeError::*;
        match self {
            PacketTooLarge { .. } => ReasonCode::PacketTooLarge,
            // §3.1.2.1 and §3.1.2.2 both allow 0x84 for a name or level the server won't take.
            InvalidProtocolName | UnsupportedProtocolVersion { .. } => {
                ReasonCode::UnsupportedProtocolVersion
            }
            InvalidTopicName(_) => ReasonCode::TopicNameInvalid,
            InvalidTopicFilter(_) => ReasonCode::TopicFilterInvalid,
            InvalidQos {
                packet: PacketType::Subscribe,
            } => ReasonCode::ProtocolError,
            ExpectedConnect { .. }
            | ZeroPacketId { .. }
            | DuplicateProperty { .. }
            | InvalidPropertyValue { .. }
            | AuthDataWithoutMethod { .. }
            | InvalidResponseTopic(_)
            | MissingTopicName
            | InvalidRetainHandling
            | NoLocalOnSharedSubscription
            | EmptyPayload { .. }
            | SessionPresentOnFailure => ReasonCode::ProtocolError,
            ReservedPacketType(_)
            | InvalidFixedHeaderFlags { .. }
            | VarIntTooLong
            | VarIntNotMinimal
            | Truncated { .. }
            | TrailingBytes { .. }
            | InvalidString { .. }
            | InvalidConnectFlags(_)
            | InvalidConnackFlags(_)
            | InvalidQos { .. }
            | DupWithQos0
            | InvalidReasonCode { .. }
            | UnknownProperty { .. }
            | PropertyNotAllowed { .. }
            | ReservedSubscriptionOptions(_) => ReasonCode::MalformedPacket,
        }
    }
}

/// Why a packet cannot be encoded. On error nothing has been written.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The Remaining Length would exceed 268,435,455 bytes.
    #[error("remaining length of {remaining_length} bytes exceeds the MQTT limit of 268,435,455")]
    PacketTooLarge {
        /// The remaining length the packet would have.
        remaining_length: usize,
    },
    /// Binary data longer than its two-byte length prefix allows.
    #[error("{field} is {len} bytes, over the 65,535 byte limit")]
    FieldTooLong {
        /// Which field.
        field: &'static str,
        /// Its length.
        len: usize,
    },
    /// A QoS 0 PUBLISH with a packet identifier.
    #[error("a QoS 0 PUBLISH cannot carry a packet identifier")]
    PacketIdOnQos0,
    /// A QoS 1 or 2 PUBLISH without a packet identifier.
    #[error("a PUBLISH with {qos:?} needs a packet identifier")]
    MissingPacketId {
        /// The QoS of the PUBLISH.
        qos: QoS,
    },
    /// DUP set on a QoS 0 PUBLISH (MQTT-3.3.1-2).
    #[error("PUBLISH has DUP set with QoS 0")]
    DupWithQos0,
    /// A reason code the packet may not carry.
    #[error("reason code {code} is not valid in {packet}")]
    ReasonCodeNotAllowed {
        /// The packet.
        packet: PacketType,
        /// The code.
        code: ReasonCode,
    },
    /// Something MQTT 3.1.1 cannot express (properties are dropped silently instead).
    #[error("{what} cannot be expressed in MQTT 3.1.1")]
    NotInV311 {
        /// What.
        what: &'static str,
    },
    /// A property value outside its range.
    #[error("property {property} has invalid value {value}")]
    InvalidPropertyValue {
        /// The property.
        property: PropertyId,
        /// The value.
        value: u32,
    },
    /// Authentication Data without Authentication Method.
    #[error("{packet} has Authentication Data without Authentication Method")]
    AuthDataWithoutMethod {
        /// The packet.
        packet: PacketType,
    },
    /// A Response Topic that is not a valid topic name.
    #[error("invalid response topic: {0}")]
    InvalidResponseTopic(TopicError),
    /// An invalid topic name.
    #[error("invalid topic name: {0}")]
    InvalidTopicName(TopicError),
    /// A 5.0 PUBLISH with an empty topic name and no Topic Alias.
    #[error("PUBLISH has an empty topic name and no topic alias")]
    MissingTopicName,
    /// An invalid topic filter.
    #[error("invalid topic filter: {0}")]
    InvalidTopicFilter(TopicError),
    /// No Local on a shared subscription.
    #[error("no local is set on a shared subscription")]
    NoLocalOnSharedSubscription,
    /// A list that must have at least one entry is empty.
    #[error("{packet} needs at least one entry")]
    EmptyPayload {
        /// The packet.
        packet: PacketType,
    },
    /// CONNACK with Session Present and a failure code.
    #[error("CONNACK cannot have Session Present with a failure code")]
    SessionPresentOnFailure,
}
