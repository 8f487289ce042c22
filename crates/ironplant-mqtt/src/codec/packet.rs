//! The control packets, one model for both versions.
//!
//! The model is MQTT 5.0's, which is a superset of 3.1.1's. A packet decoded from 3.1.1 has
//! empty properties and the reason codes 3.1.1's return codes correspond to. Encoding for
//! 3.1.1 drops properties (what a broker must do when it forwards a 5.0 message to a 3.1.1
//! subscriber) and refuses what 3.1.1 cannot say: AUTH, failure codes on acks, 5.0-only
//! subscription options, a password without a user name.

use bytes::Bytes;

use super::properties::{
    AckProperties, AuthProperties, ConnackProperties, ConnectProperties, DisconnectProperties,
    PublishProperties, SubscribeProperties, UnsubscribeProperties, WillProperties,
};
use super::reason::ReasonCode;
use super::types::{MqttString, PacketId, PacketType, ProtocolVersion, QoS, SubscriptionOptions};

/// An MQTT control packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// CONNECT (boxed: large and once per connection).
    Connect(Box<Connect>),
    /// CONNACK.
    Connack(Connack),
    /// PUBLISH.
    Publish(Publish),
    /// PUBACK.
    PubAck(PublishResponse),
    /// PUBREC.
    PubRec(PublishResponse),
    /// PUBREL.
    PubRel(PublishResponse),
    /// PUBCOMP.
    PubComp(PublishResponse),
    /// SUBSCRIBE.
    Subscribe(Subscribe),
    /// SUBACK.
    SubAck(SubAck),
    /// UNSUBSCRIBE.
    Unsubscribe(Unsubscribe),
    /// UNSUBACK.
    UnsubAck(UnsubAck),
    /// PINGREQ.
    PingReq,
    /// PINGRESP.
    PingResp,
    /// DISCONNECT.
    Disconnect(Disconnect),
    /// AUTH (MQTT 5.0 only).
    Auth(Auth),
}

impl Packet {
    /// The packet's type.
    pub fn packet_type(&self) -> PacketType {
        match self {
            Packet::Connect(_) => PacketType::Connect,
            Packet::Connack(_) => PacketType::Connack,
            Packet::Publish(_) => PacketType::Publish,
            Packet::PubAck(_) => PacketType::PubAck,
            Packet::PubRec(_) => PacketType::PubRec,
            Packet::PubRel(_) => PacketType::PubRel,
            Packet::PubComp(_) => PacketType::PubComp,
            Packet::Subscribe(_) => PacketType::Subscribe,
            Packet::SubAck(_) => PacketType::SubAck,
            Packet::Unsubscribe(_) => PacketType::Unsubscribe,
            Packet::UnsubAck(_) => PacketType::UnsubAck,
            Packet::PingReq => PacketType::PingReq,
            Packet::PingResp => PacketType::PingResp,
            Packet::Disconnect(_) => PacketType::Disconnect,
            Packet::Auth(_) => PacketType::Auth,
        }
    }
}

/// CONNECT: the first packet of a connection. It names its own protocol version, so it is
/// decoded and encoded per [`Connect::protocol_version`] whatever version the caller passes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// Protocol level 4 (3.1.1) or 5 (5.0).
    pub protocol_version: ProtocolVersion,
    /// Clean Start (5.0) / Clean Session (3.1.1).
    pub clean_start: bool,
    /// Keep alive in seconds; 0 turns it off.
    pub keep_alive: u16,
    /// Client identifier; may be empty (the server then assigns one or refuses).
    pub client_id: MqttString,
    /// The Will message, if any.
    pub will: Option<Will>,
    /// User name.
    pub username: Option<MqttString>,
    /// Password (binary data). 3.1.1 allows it only with a user name.
    pub password: Option<Bytes>,
    /// CONNECT properties (5.0).
    pub properties: ConnectProperties,
}

impl Connect {
    /// A CONNECT with clean start, no Will, no credentials, no properties.
    pub fn new(protocol_version: ProtocolVersion, client_id: MqttString, keep_alive: u16) -> Self {
        Connect {
            protocol_version,
            clean_start: true,
            keep_alive,
            client_id,
            will: None,
            username: None,
            password: None,
            properties: ConnectProperties::default(),
        }
    }
}

/// The Will message of CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    /// Topic name (no wildcards).
    pub topic: MqttString,
    /// Payload.
    pub payload: Bytes,
    /// QoS to publish it with.
    pub qos: QoS,
    /// Whether to publish it retained.
    pub retain: bool,
    /// Will properties (5.0).
    pub properties: WillProperties,
}

/// CONNACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connack {
    /// Whether the server resumed a session. Must be false with a failure code.
    pub session_present: bool,
    /// Outcome. For 3.1.1 only the codes with a 3.1.1 return code are allowed
    /// ([`ReasonCode::to_v311_connack`]).
    pub reason_code: ReasonCode,
    /// CONNACK properties (5.0).
    pub properties: ConnackProperties,
}

/// PUBLISH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// Re-delivery flag (QoS 1 and 2 only).
    pub dup: bool,
    /// Delivery QoS.
    pub qos: QoS,
    /// Retain flag.
    pub retain: bool,
    /// Topic name; empty only in 5.0 with a topic alias.
    pub topic: MqttString,
    /// Present exactly when `qos` is 1 or 2.
    pub packet_id: Option<PacketId>,
    /// PUBLISH properties (5.0).
    pub properties: PublishProperties,
    /// Application message; a slice of the received buffer when decoded.
    pub payload: Bytes,
}

impl Publish {
    /// A QoS 0, non-retained PUBLISH without properties.
    pub fn new(topic: MqttString, payload: Bytes) -> Self {
        Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic,
            packet_id: None,
            properties: PublishProperties::default(),
            payload,
        }
    }
}

/// PUBACK, PUBREC, PUBREL and PUBCOMP, which share one layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishResponse {
    /// The PUBLISH (or PUBREL) being answered.
    pub packet_id: PacketId,
    /// Outcome (5.0); 3.1.1 always means success.
    pub reason_code: ReasonCode,
    /// Reason string and user properties (5.0).
    pub properties: AckProperties,
}

impl PublishResponse {
    /// A successful response without properties.
    pub fn new(packet_id: PacketId) -> Self {
        PublishResponse {
            packet_id,
            reason_code: ReasonCode::Success,
            properties: AckProperties::default(),
        }
    }
}

/// One topic filter of SUBSCRIBE with its options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// Topic filter, possibly `$share/{group}/{filter}`.
    pub filter: MqttString,
    /// QoS and (5.0) the other options.
    pub options: SubscriptionOptions,
}

/// SUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    /// Packet identifier.
    pub packet_id: PacketId,
    /// SUBSCRIBE properties (5.0).
    pub properties: SubscribeProperties,
    /// At least one subscription.
    pub subscriptions: Vec<Subscription>,
}

/// SUBACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck {
    /// Packet identifier of the SUBSCRIBE.
    pub packet_id: PacketId,
    /// Reason string and user properties (5.0).
    pub properties: AckProperties,
    /// One code per subscription, in order. 3.1.1 knows Granted QoS 0/1/2 and failure
    /// (0x80); every 5.0 failure is sent to 3.1.1 as 0x80.
    pub reason_codes: Vec<ReasonCode>,
}

/// UNSUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    /// Packet identifier.
    pub packet_id: PacketId,
    /// UNSUBSCRIBE properties (5.0).
    pub properties: UnsubscribeProperties,
    /// At least one topic filter.
    pub filters: Vec<MqttString>,
}

/// UNSUBACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsubAck {
    /// Packet identifier of the UNSUBSCRIBE.
    pub packet_id: PacketId,
    /// Reason string and user properties (5.0).
    pub properties: AckProperties,
    /// One code per filter (5.0); 3.1.1 UNSUBACK has none, so this is empty when decoded
    /// from 3.1.1 and only success codes may be passed to the 3.1.1 encoder.
    pub reason_codes: Vec<ReasonCode>,
}

/// DISCONNECT.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Disconnect {
    /// Why (5.0); 3.1.1 only has the normal disconnection.
    pub reason_code: ReasonCode,
    /// DISCONNECT properties (5.0).
    pub properties: DisconnectProperties,
}

/// AUTH (5.0).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Auth {
    /// Success, Continue authentication or Re-authenticate.
    pub reason_code: ReasonCode,
    /// AUTH properties.
    pub properties: AuthProperties,
}
