//! The small value types every packet is made of.

use std::borrow::Borrow;
use std::fmt;
use std::num::NonZeroU16;
use std::ops::Deref;

use bytes::Bytes;
use bytestring::ByteString;
use thiserror::Error;

use crate::topic::has_nul;

/// The protocol version of a connection, fixed by its CONNECT packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProtocolVersion {
    /// MQTT 3.1.1 (protocol level 4).
    V311,
    /// MQTT 5.0 (protocol level 5).
    V5,
}

impl ProtocolVersion {
    /// The Protocol Level byte of CONNECT.
    pub const fn level(self) -> u8 {
        match self {
            ProtocolVersion::V311 => 4,
            ProtocolVersion::V5 => 5,
        }
    }

    /// The version for a Protocol Level byte, if it is one this codec speaks.
    pub const fn from_level(level: u8) -> Option<Self> {
        match level {
            4 => Some(ProtocolVersion::V311),
            5 => Some(ProtocolVersion::V5),
            _ => None,
        }
    }
}

impl fmt::Display for ProtocolVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProtocolVersion::V311 => "MQTT 3.1.1",
            ProtocolVersion::V5 => "MQTT 5.0",
        })
    }
}

/// Quality of service of a message or a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[repr(u8)]
pub enum QoS {
    /// QoS 0: at most once.
    #[default]
    AtMostOnce = 0,
    /// QoS 1: at least once.
    AtLeastOnce = 1,
    /// QoS 2: exactly once.
    ExactlyOnce = 2,
}

impl QoS {
    /// The QoS for its two-bit wire value; `None` for 3.
    pub const fn from_u8(value: u8) -> Option<Self> {
        match value {
            0 => Some(QoS::AtMostOnce),
            1 => Some(QoS::AtLeastOnce),
            2 => Some(QoS::ExactlyOnce),
            _ => None,
        }
    }
}

/// A packet identifier: never zero on the wire (MQTT-2.2.1-3), so never zero here.
pub type PacketId = NonZeroU16;

/// The fifteen control packet types (the high nibble of the first byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PacketType {
    /// Client request to connect.
    Connect = 1,
    /// Connect acknowledgment.
    Connack = 2,
    /// Publish message.
    Publish = 3,
    /// Publish acknowledgment (QoS 1).
    PubAck = 4,
    /// Publish received (QoS 2, part 1).
    PubRec = 5,
    /// Publish release (QoS 2, part 2).
    PubRel = 6,
    /// Publish complete (QoS 2, part 3).
    PubComp = 7,
    /// Subscribe request.
    Subscribe = 8,
    /// Subscribe acknowledgment.
    SubAck = 9,
    /// Unsubscribe request.
    Unsubscribe = 10,
    /// Unsubscribe acknowledgment.
    UnsubAck = 11,
    /// Ping request.
    PingReq = 12,
    /// Ping response.
    PingResp = 13,
    /// Disconnect notification.
    Disconnect = 14,
    /// Authentication exchange (MQTT 5.0 only).
    Auth = 15,
}

impl PacketType {
    /// The type for the high nibble of the first byte; `None` for the reserved 0.
    pub const fn from_nibble(nibble: u8) -> Option<Self> {
        Some(match nibble {
            1 => PacketType::Connect,
            2 => PacketType::Connack,
            3 => PacketType::Publish,
            4 => PacketType::PubAck,
            5 => PacketType::PubRec,
            6 => PacketType::PubRel,
            7 => PacketType::PubComp,
            8 => PacketType::Subscribe,
            9 => PacketType::SubAck,
            10 => PacketType::Unsubscribe,
            11 => PacketType::UnsubAck,
            12 => PacketType::PingReq,
            13 => PacketType::PingResp,
            14 => PacketType::Disconnect,
            15 => PacketType::Auth,
            _ => return None,
        })
    }

    /// The spec's name, e.g. `PUBACK`.
    pub const fn name(self) -> &'static str {
        match self {
            PacketType::Connect => "CONNECT",
            PacketType::Connack => "CONNACK",
            PacketType::Publish => "PUBLISH",
            PacketType::PubAck => "PUBACK",
            PacketType::PubRec => "PUBREC",
            PacketType::PubRel => "PUBREL",
            PacketType::PubComp => "PUBCOMP",
            PacketType::Subscribe => "SUBSCRIBE",
            PacketType::SubAck => "SUBACK",
            PacketType::Unsubscribe => "UNSUBSCRIBE",
            PacketType::UnsubAck => "UNSUBACK",
            PacketType::PingReq => "PINGREQ",
            PacketType::PingResp => "PINGRESP",
            PacketType::Disconnect => "DISCONNECT",
            PacketType::Auth => "AUTH",
        }
    }

    /// The fixed flags (low nibble of the first byte) of every type but PUBLISH.
    pub(crate) const fn fixed_flags(self) -> u8 {
        match self {
            PacketType::PubRel | PacketType::Subscribe | PacketType::Unsubscribe => 0b0010,
            _ => 0,
        }
    }
}

impl fmt::Display for PacketType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// When the server sends retained messages for a new subscription (MQTT 5.0 §3.8.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(u8)]
pub enum RetainHandling {
    /// 0: send retained messages at the time of the subscribe.
    #[default]
    SendAtSubscribe = 0,
    /// 1: send them only if the subscription did not exist yet.
    SendAtSubscribeIfNew = 1,
    /// 2: do not send them.
    DoNotSend = 2,
}

/// The options byte after each topic filter of SUBSCRIBE. MQTT 3.1.1 has only `qos`; the
/// other fields keep their defaults there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SubscriptionOptions {
    /// Maximum QoS the server may use for this subscription.
    pub qos: QoS,
    /// MQTT 5.0: do not forward messages published by this client to it.
    pub no_local: bool,
    /// MQTT 5.0: keep the RETAIN flag of forwarded messages as published.
    pub retain_as_published: bool,
    /// MQTT 5.0: when to send retained messages.
    pub retain_handling: RetainHandling,
}

impl SubscriptionOptions {
    /// The options with this QoS and every MQTT 5.0 option at its default.
    pub const fn qos(qos: QoS) -> Self {
        SubscriptionOptions {
            qos,
            no_local: false,
            retain_as_published: false,
            retain_handling: RetainHandling::SendAtSubscribe,
        }
    }

    /// The wire byte (MQTT 5.0 layout; for 3.1.1 only the QoS bits can be set).
    pub const fn to_byte(self) -> u8 {
        (self.qos as u8)
            | ((self.no_local as u8) << 2)
            | ((self.retain_as_published as u8) << 3)
            | ((self.retain_handling as u8) << 4)
    }

    /// Whether only the QoS differs from the defaults, i.e. 3.1.1 can carry these options.
    pub const fn is_qos_only(self) -> bool {
        !self.no_local
            && !self.retain_as_published
            && matches!(self.retain_handling, RetainHandling::SendAtSubscribe)
    }
}

/// The Payload Format Indicator property (MQTT 5.0 §3.3.2.3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PayloadFormat {
    /// 0: unspecified bytes.
    Unspecified = 0,
    /// 1: UTF-8 encoded character data.
    Utf8 = 1,
}

/// Why a string cannot be an MQTT UTF-8 Encoded String.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum StringError {
    /// Not well-formed UTF-8 (MQTT-1.5.4-1).
    #[error("string is not valid UTF-8")]
    InvalidUtf8,
    /// Contains U+0000 (MQTT-1.5.4-2).
    #[error("string contains U+0000")]
    NullCharacter,
    /// Longer than the two-byte length prefix can express.
    #[error("string is {len} bytes, over the 65,535 byte limit")]
    TooLong {
        /// Length in bytes.
        len: usize,
    },
}

/// A UTF-8 Encoded String as MQTT defines it: valid UTF-8, no U+0000, at most 65,535 bytes.
///
/// Backed by [`Bytes`], so a decoded string is a slice of the packet's buffer and cloning it
/// (the broker does, per subscriber) copies a pointer, not the text.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MqttString(ByteString);

impl MqttString {
    /// The empty string.
    pub const fn new() -> Self {
        MqttString(ByteString::from_static(""))
    }

    /// A string from a `'static` literal, without copying.
    ///
    /// # Panics
    /// If `s` contains U+0000 or is longer than 65,535 bytes: a literal that breaks the rules
    /// is a bug in the calling code, like `HeaderValue::from_static` in `http`.
    pub fn from_static(s: &'static str) -> Self {
        if let Err(e) = check(s) {
            panic!("invalid MQTT string literal {s:?}: {e}");
        }
        MqttString(ByteString::from_static(s))
    }

    /// Validates bytes received or built elsewhere; no copy.
    pub fn from_utf8(bytes: Bytes) -> Result<Self, StringError> {
        if bytes.len() > u16::MAX as usize {
            return Err(StringError::TooLong { len: bytes.len() });
        }
        if has_nul(&bytes) {
            return Err(StringError::NullCharacter);
        }
        ByteString::try_from(bytes)
            .map(MqttString)
            .map_err(|_| StringError::InvalidUtf8)
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The underlying buffer.
    pub fn as_bytes(&self) -> &Bytes {
        self.0.as_bytes()
    }

    /// The underlying buffer, by value.
    pub fn into_bytes(self) -> Bytes {
        self.0.into_bytes()
    }
}

fn check(s: &str) -> Result<(), StringError> {
    if s.len() > u16::MAX as usize {
        return Err(StringError::TooLong { len: s.len() });
    }
    if has_nul(s.as_bytes()) {
        return Err(StringError::NullCharacter);
    }
    Ok(())
}

impl TryFrom<&str> for MqttString {
    type Error = StringError;
    fn try_from(s: &str) -> Result<Self, StringError> {
        check(s)?;
        Ok(MqttString(ByteString::from(s)))
    }
}

impl TryFrom<String> for MqttString {
    type Error = StringError;
    fn try_from(s: String) -> Result<Self, StringError> {
        check(&s)?;
        Ok(MqttString(ByteString::from(s)))
    }
}

impl Deref for MqttString {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for MqttString {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for MqttString {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for MqttString {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for MqttString {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl fmt::Debug for MqttString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for MqttString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
