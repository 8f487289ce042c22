//! Bytes to packets.

use bytes::Bytes;

use super::error::DecodeError;
use super::packet::{
    Auth, Connack, Connect, Disconnect, Packet, Publish, PublishResponse, SubAck, Subscribe,
    Subscription, UnsubAck, Unsubscribe, Will,
};
use super::properties::{read_properties, PropertySet, PublishProperties};
use super::reason::ReasonCode;
use super::types::{
    MqttString, PacketId, PacketType, ProtocolVersion, QoS, RetainHandling, SubscriptionOptions,
};
use super::wire::{read_varint, Reader, VarInt};
use crate::topic::{
    check_no_wildcards, validate_topic_filter, validate_topic_name, TopicError, SHARE_PREFIX,
};

/// A packet's fixed header: type, flags and Remaining Length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedHeader {
    /// Packet type.
    pub packet_type: PacketType,
    /// Low nibble of the first byte (checked against the type's rules).
    pub flags: u8,
    /// Bytes after the fixed header.
    pub remaining_length: usize,
    /// Bytes of the fixed header itself (2 to 5).
    pub header_len: usize,
}

impl FixedHeader {
    /// Total bytes of the packet.
    pub fn packet_len(&self) -> usize {
        self.header_len + self.remaining_length
    }
}

/// Reads and checks the fixed header at the start of `buf`.
///
/// `Ok(None)` means `buf` ends inside the header. The type, the flags and the size limit are
/// checked as soon as the bytes that hold them have arrived, so a connection that announces a
/// packet larger than `max_packet_size` (total size, as MQTT 5.0's Maximum Packet Size
/// counts it) is refused before any of its body is buffered.
pub fn decode_header(
    buf: &[u8],
    version: ProtocolVersion,
    max_packet_size: usize,
) -> Result<Option<FixedHeader>, DecodeError> {
    header(buf, Some(version), max_packet_size)
}

/// `version == None`: before CONNECT, when only CONNECT is acceptable.
fn header(
    buf: &[u8],
    version: Option<ProtocolVersion>,
    max_packet_size: usize,
) -> Result<Option<FixedHeader>, DecodeError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let nibble = first >> 4;
    let flags = first & 0x0F;
    let packet_type = PacketType::from_nibble(nibble).ok_or(DecodeError::ReservedPacketType(0))?;
    match version {
        None if packet_type != PacketType::Connect => {
            return Err(DecodeError::ExpectedConnect {
                packet: packet_type,
            })
        }
        Some(ProtocolVersion::V311) if packet_type == PacketType::Auth => {
            return Err(DecodeError::ReservedPacketType(nibble))
        }
        _ => {}
    }
    check_flags(packet_type, flags)?;
    let rest = buf.get(1..).unwrap_or_default();
    let (remaining, len) = match read_varint(rest)? {
        VarInt::Value(v, n) => (v as usize, n),
        VarInt::Incomplete => return Ok(None),
    };
    let h = FixedHeader {
        packet_type,
        flags,
        remaining_length: remaining,
        header_len: 1 + len,
    };
    if h.packet_len() > max_packet_size {
        return Err(DecodeError::PacketTooLarge {
            size: h.packet_len(),
            max: max_packet_size,
        });
    }
    Ok(Some(h))
}

fn check_flags(packet_type: PacketType, flags: u8) -> Result<(), DecodeError> {
    if packet_type == PacketType::Publish {
        let qos = (flags >> 1) & 0b11;
        if qos == 3 {
            return Err(DecodeError::InvalidQos {
                packet: packet_type,
            });
        }
        if qos == 0 && flags & 0b1000 != 0 {
            return Err(DecodeError::DupWithQos0);
        }
        return Ok(());
    }
    if flags != packet_type.fixed_flags() {
        return Err(DecodeError::InvalidFixedHeaderFlags {
            packet: packet_type,
            flags,
        });
    }
    Ok(())
}

/// Decodes one packet from the start of `buf`.
///
/// Returns `Ok(None)` when more bytes are needed, else the packet and the bytes it took.
/// Strings and payloads are copied once, into one buffer for the whole packet body; use
/// [`decode_bytes`] to slice them from the caller's buffer without any copy. A CONNECT is
/// decoded per its own protocol level, whatever `version` says.
pub fn decode(
    buf: &[u8],
    version: ProtocolVersion,
    max_packet_size: usize,
) -> Result<Option<(Packet, usize)>, DecodeError> {
    let Some(h) = header(buf, Some(version), max_packet_size)? else {
        return Ok(None);
    };
    let Some(body) = buf.get(h.header_len..h.packet_len()) else {
        return Ok(None);
    };
    let body = Bytes::copy_from_slice(body);
    let packet = decode_body(&h, &body, version)?;
    Ok(Some((packet, h.packet_len())))
}

/// Like [`decode`], but every string and payload of the packet is a zero-copy slice of `buf`.
pub fn decode_bytes(
    buf: &Bytes,
    version: ProtocolVersion,
    max_packet_size: usize,
) -> Result<Option<(Packet, usize)>, DecodeError> {
    let Some(h) = header(buf, Some(version), max_packet_size)? else {
        return Ok(None);
    };
    if buf.len() < h.packet_len() {
        return Ok(None);
    }
    let body = buf.slice(h.header_len..h.packet_len());
    let packet = decode_body(&h, &body, version)?;
    Ok(Some((packet, h.packet_len())))
}

/// Decodes the first packet of a connection, which must be CONNECT; its protocol level
/// decides the version of everything after it ([`Connect::protocol_version`]).
///
/// Anything else first is [`DecodeError::ExpectedConnect`]; a level other than 4 or 5 is
/// [`DecodeError::UnsupportedProtocolVersion`] (answer: CONNACK 0x01 in 3.1.1 form, or
/// reason code 0x84).
pub fn decode_connect(
    buf: &[u8],
    max_packet_size: usize,
) -> Result<Option<(Connect, usize)>, DecodeError> {
    let Some(h) = header(buf, None, max_packet_size)? else {
        return Ok(None);
    };
    let Some(body) = buf.get(h.header_len..h.packet_len()) else {
        return Ok(None);
    };
    let body = Bytes::copy_from_slice(body);
    let mut r = Reader::new(&body, PacketType::Connect);
    let connect = connect(&mut r)?;
    r.finish()?;
    Ok(Some((connect, h.packet_len())))
}

fn decode_body(
    h: &FixedHeader,
    body: &Bytes,
    version: ProtocolVersion,
) -> Result<Packet, DecodeError> {
    let mut r = Reader::new(body, h.packet_type);
    let v5 = version == ProtocolVersion::V5;
    let packet = match h.packet_type {
        PacketType::Connect => Packet::Connect(Box::new(connect(&mut r)?)),
        PacketType::Connack => Packet::Connack(connack(&mut r, version)?),
        PacketType::Publish => Packet::Publish(publish(&mut r, h.flags, v5)?),
        PacketType::PubAck => Packet::PubAck(publish_response(&mut r, v5)?),
        PacketType::PubRec => Packet::PubRec(publish_response(&mut r, v5)?),
        PacketType::PubRel => Packet::PubRel(publish_response(&mut r, v5)?),
        PacketType::PubComp => Packet::PubComp(publish_response(&mut r, v5)?),
        PacketType::Subscribe => Packet::Subscribe(subscribe(&mut r, v5)?),
        PacketType::SubAck => Packet::SubAck(suback(&mut r, v5)?),
        PacketType::Unsubscribe => Packet::Unsubscribe(unsubscribe(&mut r, v5)?),
        PacketType::UnsubAck => Packet::UnsubAck(unsuback(&mut r, v5)?),
        PacketType::PingReq => Packet::PingReq,
        PacketType::PingResp => Packet::PingResp,
        PacketType::Disconnect => {
            let (reason_code, properties) = code_and_properties(&mut r, v5)?;
            Packet::Disconnect(Disconnect {
                reason_code,
                properties,
            })
        }
        PacketType::Auth => {
            let (reason_code, properties) = code_and_properties(&mut r, v5)?;
            Packet::Auth(Auth {
                reason_code,
                properties,
            })
        }
    };
    r.finish()?;
    Ok(packet)
}

fn properties<P: PropertySet>(r: &mut Reader<'_>, v5: bool) -> Result<P, DecodeError> {
    if v5 {
        read_properties(r)
    } else {
        Ok(P::default())
    }
}

fn packet_id(r: &mut Reader<'_>) -> Result<PacketId, DecodeError> {
    let v = r.u16()?;
    PacketId::new(v).ok_or(DecodeError::ZeroPacketId { packet: r.packet() })
}

fn reason_code(r: &mut Reader<'_>) -> Result<ReasonCode, DecodeError> {
    let packet = r.packet();
    let code = r.u8()?;
    ReasonCode::from_u8(code)
        .filter(|rc| rc.is_valid_for(packet))
        .ok_or(DecodeError::InvalidReasonCode { packet, code })
}

fn connect(r: &mut Reader<'_>) -> Result<Connect, DecodeError> {
    let name = r.binary_ref()?;
    let level = r.u8()?;
    // MQTT 3.1 ("MQIsdp", level 3) understands CONNACK return code 0x01, so report it as an
    // unsupported version rather than as a foreign protocol.
    if name == b"MQIsdp" {
        return Err(DecodeError::UnsupportedProtocolVersion { level });
    }
    if name != b"MQTT" {
        return Err(DecodeError::InvalidProtocolName);
    }
    let protocol_version = ProtocolVersion::from_level(level)
        .ok_or(DecodeError::UnsupportedProtocolVersion { level })?;
    let v5 = protocol_version == ProtocolVersion::V5;

    let flags = r.u8()?;
    let has_username = flags & 0x80 != 0;
    let has_password = flags & 0x40 != 0;
    let will_retain = flags & 0x20 != 0;
    let will_qos = (flags >> 3) & 0b11;
    let has_will = flags & 0x04 != 0;
    let clean_start = flags & 0x02 != 0;
    let bad_flags = flags & 0x01 != 0
        || (!has_will && (will_qos != 0 || will_retain))
        || (!v5 && has_password && !has_username);
    if bad_flags {
        return Err(DecodeError::InvalidConnectFlags(flags));
    }
    let will_qos = QoS::from_u8(will_qos).ok_or(DecodeError::InvalidQos {
        packet: PacketType::Connect,
    })?;

    let keep_alive = r.u16()?;
    let properties = properties(r, v5)?;
    let client_id = r.string()?;
    let will = if has_will {
        let properties = self::properties(r, v5)?;
        let topic = r.string()?;
        validate_topic_name(&topic).map_err(DecodeError::InvalidTopicName)?;
        let payload = r.binary()?;
        Some(Will {
            topic,
            payload,
            qos: will_qos,
            retain: will_retain,
            properties,
        })
    } else {
        None
    };
    let username = if has_username {
        Some(r.string()?)
    } else {
        None
    };
    let password = if has_password {
        Some(r.binary()?)
    } else {
        None
    };
    Ok(Connect {
        protocol_version,
        clean_start,
        keep_alive,
        client_id,
        will,
        username,
        password,
        properties,
    })
}

fn connack(r: &mut Reader<'_>, version: ProtocolVersion) -> Result<Connack, DecodeError> {
    let flags = r.u8()?;
    if flags & 0xFE != 0 {
        return Err(DecodeError::InvalidConnackFlags(flags));
    }
    let session_present = flags & 0x01 != 0;
    let reason_code = match version {
        ProtocolVersion::V311 => {
            let code = r.u8()?;
            ReasonCode::from_v311_connack(code).ok_or(DecodeError::InvalidReasonCode {
                packet: PacketType::Connack,
                code,
            })?
        }
        ProtocolVersion::V5 => reason_code(r)?,
    };
    if session_present && reason_code.is_error() {
        return Err(DecodeError::SessionPresentOnFailure);
    }
    let properties = properties(r, version == ProtocolVersion::V5)?;
    Ok(Connack {
        session_present,
        reason_code,
        properties,
    })
}

fn publish(r: &mut Reader<'_>, flags: u8, v5: bool) -> Result<Publish, DecodeError> {
    // `check_flags` has already refused QoS 3 and DUP on QoS 0.
    let qos = QoS::from_u8((flags >> 1) & 0b11).ok_or(DecodeError::InvalidQos {
        packet: PacketType::Publish,
    })?;
    let topic = r.string()?;
    let packet_id = match qos {
        QoS::AtMostOnce => None,
        QoS::AtLeastOnce | QoS::ExactlyOnce => Some(packet_id(r)?),
    };
    let properties: PublishProperties = properties(r, v5)?;
    check_publish_topic(&topic, &properties, v5)?;
    Ok(Publish {
        dup: flags & 0b1000 != 0,
        qos,
        retain: flags & 0b0001 != 0,
        topic,
        packet_id,
        properties,
        payload: r.rest(),
    })
}

fn check_publish_topic(
    topic: &MqttString,
    properties: &PublishProperties,
    v5: bool,
) -> Result<(), DecodeError> {
    if topic.is_empty() {
        return match (v5, properties.topic_alias.is_some()) {
            (true, true) => Ok(()),
            (true, false) => Err(DecodeError::MissingTopicName),
            (false, _) => Err(DecodeError::InvalidTopicName(TopicError::Empty)),
        };
    }
    // `topic` is a valid MQTT string (length, U+0000), so only wildcards are left to check.
    check_no_wildcards(topic).map_err(DecodeError::InvalidTopicName)
}

fn publish_response(r: &mut Reader<'_>, v5: bool) -> Result<PublishResponse, DecodeError> {
    let packet_id = packet_id(r)?;
    // 5.0 short forms: Remaining Length 2 means Success without properties, 3 means a reason
    // code without properties (§3.4.2.1, §3.4.2.2.1).
    let (reason_code, properties) = if v5 && !r.is_empty() {
        let rc = reason_code(r)?;
        let props = if r.is_empty() {
            Default::default()
        } else {
            read_properties(r)?
        };
        (rc, props)
    } else {
        (ReasonCode::Success, Default::default())
    };
    Ok(PublishResponse {
        packet_id,
        reason_code,
        properties,
    })
}

fn subscription_options(byte: u8, v5: bool) -> Result<SubscriptionOptions, DecodeError> {
    let reserved = if v5 { 0b1100_0000 } else { 0b1111_1100 };
    if byte & reserved != 0 {
        return Err(DecodeError::ReservedSubscriptionOptions(byte));
    }
    let qos = QoS::from_u8(byte & 0b11).ok_or(DecodeError::InvalidQos {
        packet: PacketType::Subscribe,
    })?;
    let retain_handling = match (byte >> 4) & 0b11 {
        0 => RetainHandling::SendAtSubscribe,
        1 => RetainHandling::SendAtSubscribeIfNew,
        2 => RetainHandling::DoNotSend,
        _ => return Err(DecodeError::InvalidRetainHandling),
    };
    Ok(SubscriptionOptions {
        qos,
        no_local: byte & 0b0100 != 0,
        retain_as_published: byte & 0b1000 != 0,
        retain_handling,
    })
}

fn subscribe(r: &mut Reader<'_>, v5: bool) -> Result<Subscribe, DecodeError> {
    let packet_id = packet_id(r)?;
    let properties = properties(r, v5)?;
    let mut subscriptions = Vec::new();
    while !r.is_empty() {
        let filter = r.string()?;
        let options = subscription_options(r.u8()?, v5)?;
        validate_topic_filter(&filter).map_err(DecodeError::InvalidTopicFilter)?;
        if v5 && options.no_local && filter.starts_with(SHARE_PREFIX) {
            return Err(DecodeError::NoLocalOnSharedSubscription);
        }
        subscriptions.push(Subscription { filter, options });
    }
    if subscriptions.is_empty() {
        return Err(DecodeError::EmptyPayload {
            packet: PacketType::Subscribe,
        });
    }
    Ok(Subscribe {
        packet_id,
        properties,
        subscriptions,
    })
}

fn suback(r: &mut Reader<'_>, v5: bool) -> Result<SubAck, DecodeError> {
    let packet_id = packet_id(r)?;
    let properties = properties(r, v5)?;
    let mut reason_codes = Vec::with_capacity(r.remaining());
    while !r.is_empty() {
        let rc = if v5 {
            reason_code(r)?
        } else {
            let code = r.u8()?;
            match code {
                0x00 => ReasonCode::Success,
                0x01 => ReasonCode::GrantedQos1,
                0x02 => ReasonCode::GrantedQos2,
                0x80 => ReasonCode::UnspecifiedError,
                _ => {
                    return Err(DecodeError::InvalidReasonCode {
                        packet: PacketType::SubAck,
                        code,
                    })
                }
            }
        };
        reason_codes.push(rc);
    }
    if reason_codes.is_empty() {
        return Err(DecodeError::EmptyPayload {
            packet: PacketType::SubAck,
        });
    }
    Ok(SubAck {
        packet_id,
        properties,
        reason_codes,
    })
}

fn unsubscribe(r: &mut Reader<'_>, v5: bool) -> Result<Unsubscribe, DecodeError> {
    let packet_id = packet_id(r)?;
    let properties = properties(r, v5)?;
    let mut filters = Vec::new();
    while !r.is_empty() {
        let filter = r.string()?;
        validate_topic_filter(&filter).map_err(DecodeError::InvalidTopicFilter)?;
        filters.push(filter);
    }
    if filters.is_empty() {
        return Err(DecodeError::EmptyPayload {
            packet: PacketType::Unsubscribe,
        });
    }
    Ok(Unsubscribe {
        packet_id,
        properties,
        filters,
    })
}

fn unsuback(r: &mut Reader<'_>, v5: bool) -> Result<UnsubAck, DecodeError> {
    let packet_id = packet_id(r)?;
    let properties = properties(r, v5)?;
    let mut reason_codes = Vec::new();
    if v5 {
        reason_codes.reserve(r.remaining());
        while !r.is_empty() {
            reason_codes.push(reason_code(r)?);
        }
        if reason_codes.is_empty() {
            return Err(DecodeError::EmptyPayload {
                packet: PacketType::UnsubAck,
            });
        }
    }
    Ok(UnsubAck {
        packet_id,
        properties,
        reason_codes,
    })
}

/// DISCONNECT and AUTH: in 5.0 a Remaining Length of 0 means Success without properties and
/// 1 a reason code without properties (§3.14.2.1, §3.15.2.1); 3.1.1 DISCONNECT is empty.
fn code_and_properties<P: PropertySet>(
    r: &mut Reader<'_>,
    v5: bool,
) -> Result<(ReasonCode, P), DecodeError> {
    if !v5 || r.is_empty() {
        return Ok((ReasonCode::Success, P::default()));
    }
    let rc = reason_code(r)?;
    let props = if r.is_empty() {
        P::default()
    } else {
        read_properties(r)?
    };
    Ok((rc, props))
}
