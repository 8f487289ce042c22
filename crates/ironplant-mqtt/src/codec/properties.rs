//! MQTT 5.0 properties (§2.2.2, Table 2-4): identifiers, one typed struct per packet, and
//! their encoding.
//!
//! Each struct lists exactly the properties its packet may carry, so the broker cannot build a
//! packet with a property in the wrong place, and decoding rejects one (a Malformed Packet per
//! §2.2.2.2). A property that may appear once is an `Option`; User Property and (in PUBLISH)
//! Subscription Identifier are repeatable and keep their order in a `Vec`.

use std::fmt;
use std::num::{NonZeroU16, NonZeroU32};

use bytes::Bytes;

use super::error::{DecodeError, EncodeError};
use super::types::{MqttString, PacketType, PayloadFormat, QoS};
use super::wire::{put_binary, put_u16, put_u32, put_varint, varint_len, Reader, VARINT_MAX};
use crate::topic::validate_topic_name;

/// A User Property: a name and a value, both UTF-8 strings. The same name may appear more
/// than once; order is preserved.
pub type UserProperty = (MqttString, MqttString);

/// Every property identifier of MQTT 5.0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PropertyId {
    /// 0x01 Payload Format Indicator (byte).
    PayloadFormatIndicator = 0x01,
    /// 0x02 Message Expiry Interval (four-byte integer, seconds).
    MessageExpiryInterval = 0x02,
    /// 0x03 Content Type (string).
    ContentType = 0x03,
    /// 0x08 Response Topic (string).
    ResponseTopic = 0x08,
    /// 0x09 Correlation Data (binary).
    CorrelationData = 0x09,
    /// 0x0B Subscription Identifier (variable byte integer).
    SubscriptionIdentifier = 0x0B,
    /// 0x11 Session Expiry Interval (four-byte integer, seconds).
    SessionExpiryInterval = 0x11,
    /// 0x12 Assigned Client Identifier (string).
    AssignedClientIdentifier = 0x12,
    /// 0x13 Server Keep Alive (two-byte integer, seconds).
    ServerKeepAlive = 0x13,
    /// 0x15 Authentication Method (string).
    AuthenticationMethod = 0x15,
    /// 0x16 Authentication Data (binary).
    AuthenticationData = 0x16,
    /// 0x17 Request Problem Information (byte, 0 or 1).
    RequestProblemInformation = 0x17,
    /// 0x18 Will Delay Interval (four-byte integer, seconds).
    WillDelayInterval = 0x18,
    /// 0x19 Request Response Information (byte, 0 or 1).
    RequestResponseInformation = 0x19,
    /// 0x1A Response Information (string).
    ResponseInformation = 0x1A,
    /// 0x1C Server Reference (string).
    ServerReference = 0x1C,
    /// 0x1F Reason String (string).
    ReasonString = 0x1F,
    /// 0x21 Receive Maximum (two-byte integer, not 0).
    ReceiveMaximum = 0x21,
    /// 0x22 Topic Alias Maximum (two-byte integer).
    TopicAliasMaximum = 0x22,
    /// 0x23 Topic Alias (two-byte integer, not 0).
    TopicAlias = 0x23,
    /// 0x24 Maximum QoS (byte, 0 or 1).
    MaximumQos = 0x24,
    /// 0x25 Retain Available (byte, 0 or 1).
    RetainAvailable = 0x25,
    /// 0x26 User Property (string pair).
    UserProperty = 0x26,
    /// 0x27 Maximum Packet Size (four-byte integer, not 0).
    MaximumPacketSize = 0x27,
    /// 0x28 Wildcard Subscription Available (byte, 0 or 1).
    WildcardSubscriptionAvailable = 0x28,
    /// 0x29 Subscription Identifier Available (byte, 0 or 1).
    SubscriptionIdentifierAvailable = 0x29,
    /// 0x2A Shared Subscription Available (byte, 0 or 1).
    SharedSubscriptionAvailable = 0x2A,
}

/// How a property's value is encoded.
#[derive(Clone, Copy)]
enum Kind {
    Byte,
    U16,
    U32,
    VarInt,
    Str,
    Bin,
    Pair,
}

impl PropertyId {
    /// The identifier for a wire value, if the spec defines it.
    pub const fn from_u32(id: u32) -> Option<PropertyId> {
        use PropertyId::*;
        Some(match id {
            0x01 => PayloadFormatIndicator,
            0x02 => MessageExpiryInterval,
            0x03 => ContentType,
            0x08 => ResponseTopic,
            0x09 => CorrelationData,
            0x0B => SubscriptionIdentifier,
            0x11 => SessionExpiryInterval,
            0x12 => AssignedClientIdentifier,
            0x13 => ServerKeepAlive,
            0x15 => AuthenticationMethod,
            0x16 => AuthenticationData,
            0x17 => RequestProblemInformation,
            0x18 => WillDelayInterval,
            0x19 => RequestResponseInformation,
            0x1A => ResponseInformation,
            0x1C => ServerReference,
            0x1F => ReasonString,
            0x21 => ReceiveMaximum,
            0x22 => TopicAliasMaximum,
            0x23 => TopicAlias,
            0x24 => MaximumQos,
            0x25 => RetainAvailable,
            0x26 => UserProperty,
            0x27 => MaximumPacketSize,
            0x28 => WildcardSubscriptionAvailable,
            0x29 => SubscriptionIdentifierAvailable,
            0x2A => SharedSubscriptionAvailable,
            _ => return None,
        })
    }

    const fn kind(self) -> Kind {
        use PropertyId::*;
        match self {
            PayloadFormatIndicator
            | RequestProblemInformation
            | RequestResponseInformation
            | MaximumQos
            | RetainAvailable
            | WildcardSubscriptionAvailable
            | SubscriptionIdentifierAvailable
            | SharedSubscriptionAvailable => Kind::Byte,
            ServerKeepAlive | ReceiveMaximum | TopicAliasMaximum | TopicAlias => Kind::U16,
            MessageExpiryInterval
            | SessionExpiryInterval
            | WillDelayInterval
            | MaximumPacketSize => Kind::U32,
            SubscriptionIdentifier => Kind::VarInt,
            ContentType
            | ResponseTopic
            | AssignedClientIdentifier
            | AuthenticationMethod
            | ResponseInformation
            | ServerReference
            | ReasonString => Kind::Str,
            CorrelationData | AuthenticationData => Kind::Bin,
            UserProperty => Kind::Pair,
        }
    }

    /// Whether an integer value is in range for this property (a Protocol Error otherwise).
    const fn value_ok(self, v: u32) -> bool {
        use PropertyId::*;
        match self {
            PayloadFormatIndicator
            | RequestProblemInformation
            | RequestResponseInformation
            | MaximumQos
            | RetainAvailable
            | WildcardSubscriptionAvailable
            | SubscriptionIdentifierAvailable
            | SharedSubscriptionAvailable => v <= 1,
            ReceiveMaximum | TopicAlias | MaximumPacketSize => v != 0,
            SubscriptionIdentifier => v != 0 && v <= VARINT_MAX,
            _ => true,
        }
    }
}

impl fmt::Display for PropertyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?} (0x{:02X})", *self as u8)
    }
}

/// One decoded property. Strings and binary values are slices of the packet buffer.
pub(crate) enum Property {
    Int(PropertyId, u32),
    Str(PropertyId, MqttString),
    Bin(PropertyId, Bytes),
    Pair(MqttString, MqttString),
}

/// One property to encode, borrowed from a properties struct.
pub(crate) enum PropRef<'a> {
    Int(PropertyId, u32),
    Str(PropertyId, &'a MqttString),
    Bin(PropertyId, &'a Bytes),
    Pair(&'a MqttString, &'a MqttString),
}

/// A packet's (or the Will's) property set.
pub(crate) trait PropertySet: Default {
    /// Stores one decoded property, or says why it is not acceptable here.
    fn apply(&mut self, p: Property, packet: PacketType) -> Result<(), DecodeError>;
    /// Calls `f` for every present property, in a fixed order.
    fn visit<'a>(&'a self, f: &mut impl FnMut(PropRef<'a>));
    /// Whether the Authentication Data / Method pair is consistent (only for sets with both).
    fn auth_data_without_method(&self) -> bool {
        false
    }
}

fn read_property(r: &mut Reader<'_>) -> Result<Property, DecodeError> {
    let raw = r.varint()?;
    let id = PropertyId::from_u32(raw).ok_or(DecodeError::UnknownProperty {
        packet: r.packet(),
        id: raw,
    })?;
    let int = |v: u32| {
        if id.value_ok(v) {
            Ok(Property::Int(id, v))
        } else {
            Err(DecodeError::InvalidPropertyValue {
                property: id,
                value: v,
            })
        }
    };
    match id.kind() {
        Kind::Byte => int(u32::from(r.u8()?)),
        Kind::U16 => int(u32::from(r.u16()?)),
        Kind::U32 => int(r.u32()?),
        Kind::VarInt => int(r.varint()?),
        Kind::Str => {
            let s = r.string()?;
            if id == PropertyId::ResponseTopic {
                validate_topic_name(&s).map_err(DecodeError::InvalidResponseTopic)?;
            }
            Ok(Property::Str(id, s))
        }
        Kind::Bin => Ok(Property::Bin(id, r.binary()?)),
        Kind::Pair => Ok(Property::Pair(r.string()?, r.string()?)),
    }
}

/// Reads a Property Length and the properties it covers.
pub(crate) fn read_properties<P: PropertySet>(r: &mut Reader<'_>) -> Result<P, DecodeError> {
    let len = r.varint()?;
    let mut block = r.split(usize::try_from(len).unwrap_or(usize::MAX))?;
    let packet = r.packet();
    let mut set = P::default();
    while !block.is_empty() {
        let p = read_property(&mut block)?;
        set.apply(p, packet)?;
    }
    if set.auth_data_without_method() {
        return Err(DecodeError::AuthDataWithoutMethod { packet });
    }
    Ok(set)
}

/// The bytes of a property block without its length prefix; validates values.
pub(crate) fn properties_len<P: PropertySet>(
    set: &P,
    packet: PacketType,
) -> Result<usize, EncodeError> {
    if set.auth_data_without_method() {
        return Err(EncodeError::AuthDataWithoutMethod { packet });
    }
    let mut len = 0usize;
    let mut err = None;
    set.visit(&mut |p| {
        let r = prop_len(&p);
        match r {
            Ok(n) => len += n,
            Err(e) => {
                err.get_or_insert(e);
            }
        }
    });
    match err {
        Some(e) => Err(e),
        None => Ok(len),
    }
}

fn prop_len(p: &PropRef<'_>) -> Result<usize, EncodeError> {
    Ok(match *p {
        PropRef::Int(id, v) => {
            if !id.value_ok(v) {
                return Err(EncodeError::InvalidPropertyValue {
                    property: id,
                    value: v,
                });
            }
            1 + match id.kind() {
                Kind::Byte => 1,
                Kind::U16 => 2,
                Kind::U32 => 4,
                _ => varint_len(v as usize),
            }
        }
        PropRef::Str(id, s) => {
            if id == PropertyId::ResponseTopic {
                validate_topic_name(s).map_err(EncodeError::InvalidResponseTopic)?;
            }
            3 + s.len()
        }
        PropRef::Bin(id, b) => {
            if b.len() > usize::from(u16::MAX) {
                return Err(EncodeError::FieldTooLong {
                    field: match id {
                        PropertyId::AuthenticationData => "Authentication Data",
                        _ => "Correlation Data",
                    },
                    len: b.len(),
                });
            }
            3 + b.len()
        }
        PropRef::Pair(k, v) => 5 + k.len() + v.len(),
    })
}

/// Writes Property Length `len` (from [`properties_len`]) and the properties.
pub(crate) fn write_properties<P: PropertySet>(set: &P, len: usize, out: &mut Vec<u8>) {
    put_varint(out, len);
    set.visit(&mut |p| match p {
        PropRef::Int(id, v) => {
            out.push(id as u8);
            match id.kind() {
                Kind::Byte => out.push(v as u8),
                Kind::U16 => put_u16(out, v as u16),
                Kind::U32 => put_u32(out, v),
                _ => put_varint(out, v as usize),
            }
        }
        PropRef::Str(id, s) => {
            out.push(id as u8);
            put_binary(out, s.as_bytes());
        }
        PropRef::Bin(id, b) => {
            out.push(id as u8);
            put_binary(out, b);
        }
        PropRef::Pair(k, v) => {
            out.push(PropertyId::UserProperty as u8);
            put_binary(out, k.as_bytes());
            put_binary(out, v.as_bytes());
        }
    });
}

fn once<T>(
    slot: &mut Option<T>,
    value: T,
    property: PropertyId,
    packet: PacketType,
) -> Result<(), DecodeError> {
    if slot.is_some() {
        return Err(DecodeError::DuplicateProperty { packet, property });
    }
    *slot = Some(value);
    Ok(())
}

fn not_allowed(p: &Property, packet: PacketType) -> DecodeError {
    let property = match p {
        Property::Int(id, _) | Property::Str(id, _) | Property::Bin(id, _) => *id,
        Property::Pair(..) => PropertyId::UserProperty,
    };
    DecodeError::PropertyNotAllowed { packet, property }
}

// Narrowing conversions for values `read_property` has range-checked (`value_ok` and the wire
// width); the fallbacks are unreachable but keep decoding panic-free.
fn bool_of(v: u32) -> bool {
    v != 0
}
fn u16_of(v: u32) -> u16 {
    u16::try_from(v).unwrap_or(u16::MAX)
}
fn nz16_of(v: u32) -> NonZeroU16 {
    NonZeroU16::new(u16_of(v)).unwrap_or(NonZeroU16::MIN)
}
fn nz32_of(v: u32) -> NonZeroU32 {
    NonZeroU32::new(v).unwrap_or(NonZeroU32::MIN)
}
fn format_of(v: u32) -> PayloadFormat {
    if v == 0 {
        PayloadFormat::Unspecified
    } else {
        PayloadFormat::Utf8
    }
}
fn qos_of(v: u32) -> QoS {
    if v == 0 {
        QoS::AtMostOnce
    } else {
        QoS::AtLeastOnce
    }
}

/// Visits the optional fields of a property struct in declaration order.
macro_rules! visit_fields {
    ($self:ident, $f:ident; $($kind:ident $field:ident = $id:ident $(as $conv:expr)?;)*) => {
        $(visit_fields!(@one $self, $f, $kind, $field, $id $(, $conv)?);)*
    };
    (@one $self:ident, $f:ident, int, $field:ident, $id:ident, $conv:expr) => {
        if let Some(v) = &$self.$field {
            $f(PropRef::Int(PropertyId::$id, $conv(*v)));
        }
    };
    (@one $self:ident, $f:ident, str, $field:ident, $id:ident) => {
        if let Some(v) = &$self.$field {
            $f(PropRef::Str(PropertyId::$id, v));
        }
    };
    (@one $self:ident, $f:ident, bin, $field:ident, $id:ident) => {
        if let Some(v) = &$self.$field {
            $f(PropRef::Bin(PropertyId::$id, v));
        }
    };
}

fn user_properties<'a>(list: &'a [UserProperty], f: &mut impl FnMut(PropRef<'a>)) {
    for (k, v) in list {
        f(PropRef::Pair(k, v));
    }
}

const fn u32_id(v: u32) -> u32 {
    v
}
fn u32_of_u16(v: u16) -> u32 {
    u32::from(v)
}
fn u32_of_nz16(v: NonZeroU16) -> u32 {
    u32::from(v.get())
}
fn u32_of_nz32(v: NonZeroU32) -> u32 {
    v.get()
}
fn u32_of_bool(v: bool) -> u32 {
    u32::from(v)
}
fn u32_of_format(v: PayloadFormat) -> u32 {
    v as u32
}
fn u32_of_qos(v: QoS) -> u32 {
    v as u32
}

/// CONNECT properties (§3.1.2.11).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnectProperties {
    /// Seconds the session outlives the connection; absent means 0.
    pub session_expiry_interval: Option<u32>,
    /// QoS 1/2 publications the client processes at once; absent means 65,535.
    pub receive_maximum: Option<NonZeroU16>,
    /// Largest packet the client accepts; absent means no limit.
    pub maximum_packet_size: Option<NonZeroU32>,
    /// Highest topic alias the client accepts; absent means 0.
    pub topic_alias_maximum: Option<u16>,
    /// Whether the server may send Response Information in CONNACK.
    pub request_response_information: Option<bool>,
    /// Whether the server may send Reason Strings and User Properties on failures.
    pub request_problem_information: Option<bool>,
    /// User Properties, in order.
    pub user_properties: Vec<UserProperty>,
    /// Extended authentication method.
    pub authentication_method: Option<MqttString>,
    /// Extended authentication data.
    pub authentication_data: Option<Bytes>,
}

impl PropertySet for ConnectProperties {
    fn apply(&mut self, p: Property, packet: PacketType) -> Result<(), DecodeError> {
        use PropertyId as I;
        match p {
            Property::Int(id @ I::SessionExpiryInterval, v) => {
                once(&mut self.session_expiry_interval, v, id, packet)
            }
            Property::Int(id @ I::ReceiveMaximum, v) => {
                once(&mut self.receive_maximum, nz16_of(v), id, packet)
            }
            Property::Int(id @ I::MaximumPacketSize, v) => {
                once(&mut self.maximum_packet_size, nz32_of(v), id, packet)
            }
            Property::Int(id @ I::TopicAliasMaximum, v) => {
                once(&mut self.topic_alias_maximum, u16_of(v), id, packet)
            }
            Property::Int(id @ I::RequestResponseInformation, v) => once(
                &mut self.request_response_information,
                bool_of(v),
                id,
                packet,
            ),
            Property::Int(id @ I::RequestProblemInformation, v) => once(
                &mut self.request_problem_information,
                bool_of(v),
                id,
                packet,
            ),
            Property::Str(id @ I::AuthenticationMethod, v) => {
                once(&mut self.authentication_method, v, id, packet)
            }
            Property::Bin(id @ I::AuthenticationData, v) => {
                once(&mut self.authentication_data, v, id, packet)
            }
            Property::Pair(k, v) => {
                self.user_properties.push((k, v));
                Ok(())
            }
            other => Err(not_allowed(&other, packet)),
        }
    }

    fn visit<'a>(&'a self, f: &mut impl FnMut(PropRef<'a>)) {
        visit_fields!(self, f;
            int session_expiry_interval = SessionExpiryInterval as u32_id;
            int receive_maximum = ReceiveMaximum as u32_of_nz16;
            int maximum_packet_size = MaximumPacketSize as u32_of_nz32;
            int topic_alias_maximum = TopicAliasMaximum as u32_of_u16;
            int request_response_information = RequestResponseInformation as u32_of_bool;
            int request_problem_information = RequestProblemInformation as u32_of_bool;
        );
        user_properties(&self.user_properties, f);
        visit_fields!(self, f;
            str authentication_method = AuthenticationMethod;
            bin authentication_data = AuthenticationData;
        );
    }

    fn auth_data_without_method(&self) -> bool {
        self.authentication_data.is_some() && self.authentication_method.is_none()
    }
}

/// Will properties (§3.1.3.2).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WillProperties {
    /// Seconds to wait after the connection closes before publishing the Will.
    pub will_delay_interval: Option<u32>,
    /// Whether the Will payload is UTF-8.
    pub payload_format_indicator: Option<PayloadFormat>,
    /// Lifetime of the Will message in seconds.
    pub message_expiry_interval: Option<u32>,
    /// Content type of the Will payload.
    pub content_type: Option<MqttString>,
    /// Topic for a response to the Will message.
    pub response_topic: Option<MqttString>,
    /// Correlation data for a response.
    pub correlation_data: Option<Bytes>,
    /// User Properties, in order.
    pub user_properties: Vec<UserProperty>,
}

impl PropertySet for WillProperties {
    fn apply(&mut self, p: Property, packet: PacketType) -> Result<(), DecodeError> {
        use PropertyId as I;
        match p {
            Property::Int(id @ I::WillDelayInterval, v) => {
                once(&mut self.will_delay_interval, v, id, packet)
            }
            Property::Int(id @ I::PayloadFormatIndicator, v) => {
                once(&mut self.payload_format_indicator, format_of(v), id, packet)
            }
            Property::Int(id @ I::MessageExpiryInterval, v) => {
                once(&mut self.message_expiry_interval, v, id, packet)
            }
            Property::Str(id @ I::ContentType, v) => once(&mut self.content_type, v, id, packet),
            Property::Str(id @ I::ResponseTopic, v) => {
                once(&mut self.response_topic, v, id, packet)
            }
            Property::Bin(id @ I::CorrelationData, v) => {
                once(&mut self.correlation_data, v, id, packet)
            }
            Property::Pair(k, v) => {
                self.user_properties.push((k, v));
                Ok(())
            }
            other => Err(not_allowed(&other, packet)),
        }
    }

    fn visit<'a>(&'a self, f: &mut impl FnMut(PropRef<'a>)) {
        visit_fields!(self, f;
            int will_delay_interval = WillDelayInterval as u32_id;
            int payload_format_indicator = PayloadFormatIndicator as u32_of_format;
            int message_expiry_interval = MessageExpiryInterval as u32_id;
            str content_type = ContentType;
            str response_topic = ResponseTopic;
            bin correlation_data = CorrelationData;
        );
        user_properties(&self.user_properties, f);
    }
}

/// CONNACK properties (§3.2.2.3).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnackProperties {
    /// Session expiry the server uses, if it differs from the client's.
    pub session_expiry_interval: Option<u32>,
    /// QoS 1/2 publications the server processes at once; absent means 65,535.
    pub receive_maximum: Option<NonZeroU16>,
    /// Highest QoS the server supports (0 or 1); absent means 2.
    pub maximum_qos: Option<QoS>,
    /// Whether the server supports retained messages; absent means yes.
    pub retain_available: Option<bool>,
    /// Largest packet the server accepts; absent means no limit.
    pub maximum_packet_size: Option<NonZeroU32>,
    /// Client identifier the server assigned to a client that sent an empty one.
    pub assigned_client_identifier: Option<MqttString>,
    /// Highest topic alias the server accepts; absent means 0.
    pub topic_alias_maximum: Option<u16>,
    /// Human-readable diagnostic.
    pub reason_string: Option<MqttString>,
    /// User Properties, in order.
    pub user_properties: Vec<UserProperty>,
    /// Whether wildcard subscriptions are supported; absent means yes.
    pub wildcard_subscription_available: Option<bool>,
    /// Whether subscription identifiers are supported; absent means yes.
    pub subscription_identifier_available: Option<bool>,
    /// Whether shared subscriptions are supported; absent means yes.
    pub shared_subscription_available: Option<bool>,
    /// Keep alive the client must use instead of its own.
    pub server_keep_alive: Option<u16>,
    /// Basis for response topics (when the client requested it).
    pub response_information: Option<MqttString>,
    /// Another server to use.
    pub server_reference: Option<MqttString>,
    /// Extended authentication method.
    pub authentication_method: Option<MqttString>,
    /// Extended authentication data.
    pub authentication_data: Option<Bytes>,
}

impl PropertySet for ConnackProperties {
    fn apply(&mut self, p: Property, packet: PacketType) -> Result<(), DecodeError> {
        use PropertyId as I;
        match p {
            Property::Int(id @ I::SessionExpiryInterval, v) => {
                once(&mut self.session_expiry_interval, v, id, packet)
            }
            Property::Int(id @ I::ReceiveMaximum, v) => {
                once(&mut self.receive_maximum, nz16_of(v), id, packet)
            }
            Property::Int(id @ I::MaximumQos, v) => {
                once(&mut self.maximum_qos, qos_of(v), id, packet)
            }
            Property::Int(id @ I::RetainAvailable, v) => {
                once(&mut self.retain_available, bool_of(v), id, packet)
            }
            Property::Int(id @ I::MaximumPacketSize, v) => {
                once(&mut self.maximum_packet_size, nz32_of(v), id, packet)
            }
            Property::Str(id @ I::AssignedClientIdentifier, v) => {
                once(&mut self.assigned_client_identifier, v, id, packet)
            }
            Property::Int(id @ I::TopicAliasMaximum, v) => {
                once(&mut self.topic_alias_maximum, u16_of(v), id, packet)
            }
            Property::Str(id @ I::ReasonString, v) => once(&mut self.reason_string, v, id, packet),
            Property::Pair(k, v) => {
                self.user_properties.push((k, v));
                Ok(())
            }
            Property::Int(id @ I::WildcardSubscriptionAvailable, v) => once(
                &mut self.wildcard_subscription_available,
                bool_of(v),
                id,
                packet,
            ),
            Property::Int(id @ I::SubscriptionIdentifierAvailable, v) => once(
                &mut self.subscription_identifier_available,
                bool_of(v),
                id,
                packet,
            ),
            Property::Int(id @ I::SharedSubscriptionAvailable, v) => once(
                &mut self.shared_subscription_available,
                bool_of(v),
                id,
                packet,
            ),
            Property::Int(id @ I::ServerKeepAlive, v) => {
                once(&mut self.server_keep_alive, u16_of(v), id, packet)
            }
            Property::Str(id @ I::ResponseInformation, v) => {
                once(&mut self.response_information, v, id, packet)
            }
            Property::Str(id @ I::ServerReference, v) => {
                once(&mut self.server_reference, v, id, packet)
            }
            Property::Str(id @ I::AuthenticationMethod, v) => {
                once(&mut self.authentication_method, v, id, packet)
            }
            Property::Bin(id @ I::AuthenticationData, v) => {
                once(&mut self.authentication_data, v, id, packet)
            }
            other => Err(not_allowed(&other, packet)),
        }
    }

    fn visit<'a>(&'a self, f: &mut impl FnMut(PropRef<'a>)) {
        visit_fields!(self, f;
            int session_expiry_interval = SessionExpiryInterval as u32_id;
            int receive_maximum = ReceiveMaximum as u32_of_nz16;
            int maximum_qos = MaximumQos as u32_of_qos;
            int retain_available = RetainAvailable as u32_of_bool;
            int maximum_packet_size = MaximumPacketSize as u32_of_nz32;
            str assigned_client_identifier = AssignedClientIdentifier;
            int topic_alias_maximum = TopicAliasMaximum as u32_of_u16;
            str reason_string = ReasonString;
        );
        user_properties(&self.user_properties, f);
        visit_fields!(self, f;
            int wildcard_subscription_available = WildcardSubscriptionAvailable as u32_of_bool;
            int subscription_identifier_available = SubscriptionIdentifierAvailable as u32_of_bool;
            int shared_subscription_available = SharedSubscriptionAvailable as u32_of_bool;
            int server_keep_alive = ServerKeepAlive as u32_of_u16;
            str response_information = ResponseInformation;
            str server_reference = ServerReference;
            str authentication_method = AuthenticationMethod;
            bin authentication_data = AuthenticationData;
        );
    }

    fn auth_data_without_method(&self) -> bool {
        self.authentication_data.is_some() && self.authentication_method.is_none()
    }
}

/// PUBLISH properties (§3.3.2.3).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PublishProperties {
    /// Whether the payload is UTF-8.
    pub payload_format_indicator: Option<PayloadFormat>,
    /// Lifetime of the message in seconds.
    pub message_expiry_interval: Option<u32>,
    /// Topic alias used instead of (or set up with) the topic name.
    pub topic_alias: Option<NonZeroU16>,
    /// Topic for a response.
    pub response_topic: Option<MqttString>,
    /// Correlation data for a response.
    pub correlation_data: Option<Bytes>,
    /// User Properties, in order.
    pub user_properties: Vec<UserProperty>,
    /// Identifiers of the matching subscriptions (server to client only), in order.
    /// Values are 1 to 268,435,455.
    pub subscription_identifiers: Vec<NonZeroU32>,
    /// Content type of the payload.
    pub content_type: Option<MqttString>,
}

impl PropertySet for PublishProperties {
    fn apply(&mut self, p: Property, packet: PacketType) -> Result<(), DecodeError> {
        use PropertyId as I;
        match p {
            Property::Int(id @ I::PayloadFormatIndicator, v) => {
                once(&mut self.payload_format_indicator, format_of(v), id, packet)
            }
            Property::Int(id @ I::MessageExpiryInterval, v) => {
                once(&mut self.message_expiry_interval, v, id, packet)
            }
            Property::Int(id @ I::TopicAlias, v) => {
                once(&mut self.topic_alias, nz16_of(v), id, packet)
            }
            Property::Str(id @ I::ResponseTopic, v) => {
                once(&mut self.response_topic, v, id, packet)
            }
            Property::Bin(id @ I::CorrelationData, v) => {
                once(&mut self.correlation_data, v, id, packet)
            }
            Property::Pair(k, v) => {
                self.user_properties.push((k, v));
                Ok(())
            }
            Property::Int(I::SubscriptionIdentifier, v) => {
                self.subscription_identifiers.push(nz32_of(v));
                Ok(())
            }
            Property::Str(id @ I::ContentType, v) => once(&mut self.content_type, v, id, packet),
            other => Err(not_allowed(&other, packet)),
        }
    }

    fn visit<'a>(&'a self, f: &mut impl FnMut(PropRef<'a>)) {
        visit_fields!(self, f;
            int payload_format_indicator = PayloadFormatIndicator as u32_of_format;
            int message_expiry_interval = MessageExpiryInterval as u32_id;
            int topic_alias = TopicAlias as u32_of_nz16;
            str response_topic = ResponseTopic;
            bin correlation_data = CorrelationData;
        );
        user_properties(&self.user_properties, f);
        for id in &self.subscription_identifiers {
            f(PropRef::Int(PropertyId::SubscriptionIdentifier, id.get()));
        }
        visit_fields!(self, f;
            str content_type = ContentType;
        );
    }
}

/// Properties of PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK and UNSUBACK: a Reason String and
/// User Properties.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AckProperties {
    /// Human-readable diagnostic.
    pub reason_string: Option<MqttString>,
    /// User Properties, in order.
    pub user_properties: Vec<UserProperty>,
}

impl AckProperties {
    /// Whether there are no properties (PUBACK & co. can then use their short forms).
    pub fn is_empty(&self) -> bool {
        self.reason_string.is_none() && self.user_properties.is_empty()
    }
}

impl PropertySet for AckProperties {
    fn apply(&mut self, p: Property, packet: PacketType) -> Result<(), DecodeError> {
        match p {
            Property::Str(id @ PropertyId::ReasonString, v) => {
                once(&mut self.reason_string, v, id, packet)
            }
            Property::Pair(k, v) => {
                self.user_properties.push((k, v));
                Ok(())
            }
            other => Err(not_allowed(&other, packet)),
        }
    }

    fn visit<'a>(&'a self, f: &mut impl FnMut(PropRef<'a>)) {
        visit_fields!(self, f;
            str reason_string = ReasonString;
        );
        user_properties(&self.user_properties, f);
    }
}

/// SUBSCRIBE properties (§3.8.2.1).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SubscribeProperties {
    /// Identifier the server attaches to messages matching these subscriptions
    /// (1 to 268,435,455).
    pub subscription_identifier: Option<NonZeroU32>,
    /// User Properties, in order.
    pub user_properties: Vec<UserProperty>,
}

impl PropertySet for SubscribeProperties {
    fn apply(&mut self, p: Property, packet: PacketType) -> Result<(), DecodeError> {
        match p {
            Property::Int(id @ PropertyId::SubscriptionIdentifier, v) => {
                once(&mut self.subscription_identifier, nz32_of(v), id, packet)
            }
            Property::Pair(k, v) => {
                self.user_properties.push((k, v));
                Ok(())
            }
            other => Err(not_allowed(&other, packet)),
        }
    }

    fn visit<'a>(&'a self, f: &mut impl FnMut(PropRef<'a>)) {
        visit_fields!(self, f;
            int subscription_identifier = SubscriptionIdentifier as u32_of_nz32;
        );
        user_properties(&self.user_properties, f);
    }
}

/// UNSUBSCRIBE properties (§3.10.2.1): User Properties only.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UnsubscribeProperties {
    /// User Properties, in order.
    pub user_properties: Vec<UserProperty>,
}

impl PropertySet for UnsubscribeProperties {
    fn apply(&mut self, p: Property, packet: PacketType) -> Result<(), DecodeError> {
        match p {
            Property::Pair(k, v) => {
                self.user_properties.push((k, v));
                Ok(())
            }
            other => Err(not_allowed(&other, packet)),
        }
    }

    fn visit<'a>(&'a self, f: &mut impl FnMut(PropRef<'a>)) {
        user_properties(&self.user_properties, f);
    }
}

/// DISCONNECT properties (§3.14.2.2).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DisconnectProperties {
    /// New session expiry (client to server only).
    pub session_expiry_interval: Option<u32>,
    /// Human-readable diagnostic.
    pub reason_string: Option<MqttString>,
    /// User Properties, in order.
    pub user_properties: Vec<UserProperty>,
    /// Another server to use.
    pub server_reference: Option<MqttString>,
}

impl DisconnectProperties {
    /// Whether there are no properties.
    pub fn is_empty(&self) -> bool {
        self.session_expiry_interval.is_none()
            && self.reason_string.is_none()
            && self.user_properties.is_empty()
            && self.server_reference.is_none()
    }
}

impl PropertySet for DisconnectProperties {
    fn apply(&mut self, p: Property, packet: PacketType) -> Result<(), DecodeError> {
        use PropertyId as I;
        match p {
            Property::Int(id @ I::SessionExpiryInterval, v) => {
                once(&mut self.session_expiry_interval, v, id, packet)
            }
            Property::Str(id @ I::ReasonString, v) => once(&mut self.reason_string, v, id, packet),
            Property::Pair(k, v) => {
                self.user_properties.push((k, v));
                Ok(())
            }
            Property::Str(id @ I::ServerReference, v) => {
                once(&mut self.server_reference, v, id, packet)
            }
            other => Err(not_allowed(&other, packet)),
        }
    }

    fn visit<'a>(&'a self, f: &mut impl FnMut(PropRef<'a>)) {
        visit_fields!(self, f;
            int session_expiry_interval = SessionExpiryInterval as u32_id;
            str reason_string = ReasonString;
        );
        user_properties(&self.user_properties, f);
        visit_fields!(self, f;
            str server_reference = ServerReference;
        );
    }
}

/// AUTH properties (§3.15.2.2).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AuthProperties {
    /// Extended authentication method.
    pub authentication_method: Option<MqttString>,
    /// Extended authentication data.
    pub authentication_data: Option<Bytes>,
    /// Human-readable diagnostic.
    pub reason_string: Option<MqttString>,
    /// User Properties, in order.
    pub user_properties: Vec<UserProperty>,
}

impl AuthProperties {
    /// Whether there are no properties.
    pub fn is_empty(&self) -> bool {
        self.authentication_method.is_none()
            && self.authentication_data.is_none()
            && self.reason_string.is_none()
            && self.user_properties.is_empty()
    }
}

impl PropertySet for AuthProperties {
    fn apply(&mut self, p: Property, packet: PacketType) -> Result<(), DecodeError> {
        use PropertyId as I;
        match p {
            Property::Str(id @ I::AuthenticationMethod, v) => {
                once(&mut self.authentication_method, v, id, packet)
            }
            Property::Bin(id @ I::AuthenticationData, v) => {
                once(&mut self.authentication_data, v, id, packet)
            }
            Property::Str(id @ I::ReasonString, v) => once(&mut self.reason_string, v, id, packet),
            Property::Pair(k, v) => {
                self.user_properties.push((k, v));
                Ok(())
            }
            other => Err(not_allowed(&other, packet)),
        }
    }

    fn visit<'a>(&'a self, f: &mut impl FnMut(PropRef<'a>)) {
        visit_fields!(self, f;
            str authentication_method = AuthenticationMethod;
            bin authentication_data = AuthenticationData;
            str reason_string = ReasonString;
        );
        user_properties(&self.user_properties, f);
    }

    fn auth_data_without_method(&self) -> bool {
        self.authentication_data.is_some() && self.authentication_method.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_identifier_of_table_2_4() {
        let ids: Vec<u32> = (0..=0xFF)
            .filter(|&v| PropertyId::from_u32(v).is_some())
            .collect();
        assert_eq!(
            ids,
            [
                0x01, 0x02, 0x03, 0x08, 0x09, 0x0B, 0x11, 0x12, 0x13, 0x15, 0x16, 0x17, 0x18, 0x19,
                0x1A, 0x1C, 0x1F, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2A
            ]
        );
        for v in ids {
            let id = PropertyId::from_u32(v).expect("listed above");
            assert_eq!(id as u32, v);
        }
    }
}
