//! Packets to bytes.
//!
//! Two passes over the packet: [`plan`] validates it and computes every length (the
//! Remaining Length and each Property Length precede what they measure), then the writer
//! appends the bytes into one reservation of `out`. No temporary buffer, no shifting.

use super::error::EncodeError;
use super::packet::{Connect, Packet, Publish, PublishResponse, SubAck, Subscribe, UnsubAck};
use super::properties::{properties_len, write_properties, PropertySet};
use super::reason::ReasonCode;
use super::types::{PacketType, ProtocolVersion, QoS};
use super::wire::{put_binary, put_u16, put_varint, varint_len, VARINT_MAX};
use crate::topic::{
    check_no_wildcards, validate_topic_filter, validate_topic_name, TopicError, SHARE_PREFIX,
};

/// Lengths computed by [`plan`]; property lengths exclude their own length prefix.
struct Plan {
    first_byte: u8,
    remaining: usize,
    props: usize,
    will_props: usize,
}

/// Appends the encoding of `packet` to `out`. On error nothing is appended.
///
/// A CONNECT is encoded per its own [`Connect::protocol_version`]. For MQTT 3.1.1,
/// properties are dropped and what 3.1.1 cannot express is an error
/// ([`EncodeError::NotInV311`]). Everything [`super::decode`] checks is checked here too, so
/// whatever this function writes decodes back to an equal packet.
pub fn encode(
    packet: &Packet,
    version: ProtocolVersion,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    let plan = plan(packet, version)?;
    let total = 1 + varint_len(plan.remaining) + plan.remaining;
    out.reserve(total);
    let start = out.len();
    out.push(plan.first_byte);
    put_varint(out, plan.remaining);
    write_body(packet, version, &plan, out);
    debug_assert_eq!(
        out.len() - start,
        total,
        "planned and written lengths differ"
    );
    Ok(())
}

/// The number of bytes [`encode`] would write, e.g. to check a peer's Maximum Packet Size
/// before encoding.
pub fn encoded_len(packet: &Packet, version: ProtocolVersion) -> Result<usize, EncodeError> {
    let plan = plan(packet, version)?;
    Ok(1 + varint_len(plan.remaining) + plan.remaining)
}

fn first_byte(packet_type: PacketType) -> u8 {
    ((packet_type as u8) << 4) | packet_type.fixed_flags()
}

/// Length of a property block with its length prefix, or 0 for 3.1.1.
fn props_field(props: usize, v5: bool) -> usize {
    if v5 {
        varint_len(props) + props
    } else {
        0
    }
}

fn props_of<P: PropertySet>(set: &P, packet: PacketType, v5: bool) -> Result<usize, EncodeError> {
    if v5 {
        properties_len(set, packet)
    } else {
        Ok(0)
    }
}

fn check_binary(field: &'static str, len: usize) -> Result<(), EncodeError> {
    if len > usize::from(u16::MAX) {
        return Err(EncodeError::FieldTooLong { field, len });
    }
    Ok(())
}

fn check_reason(rc: ReasonCode, packet: PacketType) -> Result<(), EncodeError> {
    if rc.is_valid_for(packet) {
        Ok(())
    } else {
        Err(EncodeError::ReasonCodeNotAllowed { packet, code: rc })
    }
}

fn plan(packet: &Packet, version: ProtocolVersion) -> Result<Plan, EncodeError> {
    let v5 = version == ProtocolVersion::V5;
    let packet_type = packet.packet_type();
    let mut plan = Plan {
        first_byte: first_byte(packet_type),
        remaining: 0,
        props: 0,
        will_props: 0,
    };
    plan.remaining = match packet {
        Packet::Connect(c) => plan_connect(c, &mut plan)?,
        Packet::Connack(c) => {
            if v5 {
                check_reason(c.reason_code, packet_type)?;
            } else if c.reason_code.to_v311_connack().is_none() {
                return Err(EncodeError::NotInV311 {
                    what: "a CONNACK reason code without a 3.1.1 return code",
                });
            }
            if c.session_present && c.reason_code.is_error() {
                return Err(EncodeError::SessionPresentOnFailure);
            }
            plan.props = props_of(&c.properties, packet_type, v5)?;
            2 + props_field(plan.props, v5)
        }
        Packet::Publish(p) => plan_publish(p, v5, &mut plan)?,
        Packet::PubAck(r) | Packet::PubRec(r) | Packet::PubRel(r) | Packet::PubComp(r) => {
            plan_response(r, packet_type, v5, &mut plan)?
        }
        Packet::Subscribe(s) => plan_subscribe(s, v5, &mut plan)?,
        Packet::SubAck(s) => plan_suback(s, v5, &mut plan)?,
        Packet::Unsubscribe(u) => {
            if u.filters.is_empty() {
                return Err(EncodeError::EmptyPayload {
                    packet: packet_type,
                });
            }
            let mut n = 0;
            for f in &u.filters {
                validate_topic_filter(f).map_err(EncodeError::InvalidTopicFilter)?;
                n += 2 + f.len();
            }
            plan.props = props_of(&u.properties, packet_type, v5)?;
            2 + props_field(plan.props, v5) + n
        }
        Packet::UnsubAck(u) => plan_unsuback(u, v5, &mut plan)?,
        Packet::PingReq | Packet::PingResp => 0,
        Packet::Disconnect(d) => {
            if !v5 && d.reason_code != ReasonCode::NORMAL_DISCONNECTION {
                return Err(EncodeError::NotInV311 {
                    what: "a DISCONNECT reason code",
                });
            }
            check_reason(d.reason_code, packet_type)?;
            plan.props = props_of(&d.properties, packet_type, v5)?;
            code_and_properties_len(d.reason_code, plan.props, v5)
        }
        Packet::Auth(a) => {
            if !v5 {
                return Err(EncodeError::NotInV311 { what: "AUTH" });
            }
            check_reason(a.reason_code, packet_type)?;
            plan.props = properties_len(&a.properties, packet_type)?;
            code_and_properties_len(a.reason_code, plan.props, v5)
        }
    };
    if plan.remaining > VARINT_MAX as usize {
        return Err(EncodeError::PacketTooLarge {
            remaining_length: plan.remaining,
        });
    }
    Ok(plan)
}

fn plan_connect(c: &Connect, plan: &mut Plan) -> Result<usize, EncodeError> {
    let v5 = c.protocol_version == ProtocolVersion::V5;
    if !v5 && c.password.is_some() && c.username.is_none() {
        return Err(EncodeError::NotInV311 {
            what: "a password without a user name",
        });
    }
    plan.props = props_of(&c.properties, PacketType::Connect, v5)?;
    // Protocol Name (6), Protocol Level, Connect Flags, Keep Alive.
    let mut n = 6 + 1 + 1 + 2 + props_field(plan.props, v5) + 2 + c.client_id.len();
    if let Some(w) = &c.will {
        validate_topic_name(&w.topic).map_err(EncodeError::InvalidTopicName)?;
        check_binary("Will Payload", w.payload.len())?;
        plan.will_props = props_of(&w.properties, PacketType::Connect, v5)?;
        n += props_field(plan.will_props, v5) + 2 + w.topic.len() + 2 + w.payload.len();
    }
    if let Some(u) = &c.username {
        n += 2 + u.len();
    }
    if let Some(p) = &c.password {
        check_binary("Password", p.len())?;
        n += 2 + p.len();
    }
    Ok(n)
}

fn plan_publish(p: &Publish, v5: bool, plan: &mut Plan) -> Result<usize, EncodeError> {
    match (p.qos, p.packet_id) {
        (QoS::AtMostOnce, Some(_)) => return Err(EncodeError::PacketIdOnQos0),
        (QoS::AtLeastOnce | QoS::ExactlyOnce, None) => {
            return Err(EncodeError::MissingPacketId { qos: p.qos })
        }
        _ => {}
    }
    if p.dup && p.qos == QoS::AtMostOnce {
        return Err(EncodeError::DupWithQos0);
    }
    if p.topic.is_empty() {
        match (v5, p.properties.topic_alias.is_some()) {
            (true, true) => {}
            (true, false) => return Err(EncodeError::MissingTopicName),
            (false, _) => return Err(EncodeError::InvalidTopicName(TopicError::Empty)),
        }
    } else {
        check_no_wildcards(&p.topic).map_err(EncodeError::InvalidTopicName)?;
    }
    plan.first_byte |= (u8::from(p.dup) << 3) | ((p.qos as u8) << 1) | u8::from(p.retain);
    plan.props = props_of(&p.properties, PacketType::Publish, v5)?;
    let id = if p.packet_id.is_some() { 2 } else { 0 };
    Ok(2 + p.topic.len() + id + props_field(plan.props, v5) + p.payload.len())
}

fn plan_response(
    r: &PublishResponse,
    packet_type: PacketType,
    v5: bool,
    plan: &mut Plan,
) -> Result<usize, EncodeError> {
    check_reason(r.reason_code, packet_type)?;
    if !v5 {
        if r.reason_code.is_error() {
            return Err(EncodeError::NotInV311 {
                what: "a failure reason code on PUBACK, PUBREC, PUBREL or PUBCOMP",
            });
        }
        return Ok(2);
    }
    plan.props = properties_len(&r.properties, packet_type)?;
    Ok(match (r.reason_code, plan.props) {
        (ReasonCode::Success, 0) => 2,
        (_, 0) => 3,
        (_, props) => 3 + varint_len(props) + props,
    })
}

fn plan_subscribe(s: &Subscribe, v5: bool, plan: &mut Plan) -> Result<usize, EncodeError> {
    if s.subscriptions.is_empty() {
        return Err(EncodeError::EmptyPayload {
            packet: PacketType::Subscribe,
        });
    }
    let mut n = 0;
    for sub in &s.subscriptions {
        validate_topic_filter(&sub.filter).map_err(EncodeError::InvalidTopicFilter)?;
        if !v5 && !sub.options.is_qos_only() {
            return Err(EncodeError::NotInV311 {
                what: "subscription options other than QoS",
            });
        }
        if v5 && sub.options.no_local && sub.filter.starts_with(SHARE_PREFIX) {
            return Err(EncodeError::NoLocalOnSharedSubscription);
        }
        n += 2 + sub.filter.len() + 1;
    }
    plan.props = props_of(&s.properties, PacketType::Subscribe, v5)?;
    Ok(2 + props_field(plan.props, v5) + n)
}

fn plan_suback(s: &SubAck, v5: bool, plan: &mut Plan) -> Result<usize, EncodeError> {
    if s.reason_codes.is_empty() {
        return Err(EncodeError::EmptyPayload {
            packet: PacketType::SubAck,
        });
    }
    for rc in &s.reason_codes {
        check_reason(*rc, PacketType::SubAck)?;
    }
    plan.props = props_of(&s.properties, PacketType::SubAck, v5)?;
    Ok(2 + props_field(plan.props, v5) + s.reason_codes.len())
}

fn plan_unsuback(u: &UnsubAck, v5: bool, plan: &mut Plan) -> Result<usize, EncodeError> {
    for rc in &u.reason_codes {
        check_reason(*rc, PacketType::UnsubAck)?;
    }
    if !v5 {
        if u.reason_codes.iter().any(|rc| rc.is_error()) {
            return Err(EncodeError::NotInV311 {
                what: "a failure reason code on UNSUBACK",
            });
        }
        return Ok(2);
    }
    if u.reason_codes.is_empty() {
        return Err(EncodeError::EmptyPayload {
            packet: PacketType::UnsubAck,
        });
    }
    plan.props = properties_len(&u.properties, PacketType::UnsubAck)?;
    Ok(2 + varint_len(plan.props) + plan.props + u.reason_codes.len())
}

/// DISCONNECT and AUTH in 5.0: nothing for Success without properties, the code alone
/// without properties, else code and properties.
fn code_and_properties_len(rc: ReasonCode, props: usize, v5: bool) -> usize {
    match (v5, rc, props) {
        (false, _, _) | (true, ReasonCode::Success, 0) => 0,
        (true, _, 0) => 1,
        (true, _, props) => 1 + varint_len(props) + props,
    }
}

fn write_body(packet: &Packet, version: ProtocolVersion, plan: &Plan, out: &mut Vec<u8>) {
    let v5 = version == ProtocolVersion::V5;
    match packet {
        Packet::Connect(c) => write_connect(c, plan, out),
        Packet::Connack(c) => {
            out.push(u8::from(c.session_present));
            if v5 {
                out.push(c.reason_code as u8);
                write_properties(&c.properties, plan.props, out);
            } else {
                // `plan` checked that a 3.1.1 return code exists.
                out.push(c.reason_code.to_v311_connack().unwrap_or(0x03));
            }
        }
        Packet::Publish(p) => {
            put_binary(out, p.topic.as_bytes());
            if let Some(id) = p.packet_id {
                put_u16(out, id.get());
            }
            if v5 {
                write_properties(&p.properties, plan.props, out);
            }
            out.extend_from_slice(&p.payload);
        }
        Packet::PubAck(r) | Packet::PubRec(r) | Packet::PubRel(r) | Packet::PubComp(r) => {
            put_u16(out, r.packet_id.get());
            if v5 && (r.reason_code != ReasonCode::Success || plan.props > 0) {
                out.push(r.reason_code as u8);
                if plan.props > 0 {
                    write_properties(&r.properties, plan.props, out);
                }
            }
        }
        Packet::Subscribe(s) => {
            put_u16(out, s.packet_id.get());
            if v5 {
                write_properties(&s.properties, plan.props, out);
            }
            for sub in &s.subscriptions {
                put_binary(out, sub.filter.as_bytes());
                out.push(sub.options.to_byte());
            }
        }
        Packet::SubAck(s) => {
            put_u16(out, s.packet_id.get());
            if v5 {
                write_properties(&s.properties, plan.props, out);
                out.extend(s.reason_codes.iter().map(|rc| *rc as u8));
            } else {
                out.extend(s.reason_codes.iter().map(|rc| match rc {
                    ReasonCode::GrantedQos1 => 0x01,
                    ReasonCode::GrantedQos2 => 0x02,
                    rc if rc.is_error() => 0x80,
                    _ => 0x00,
                }));
            }
        }
        Packet::Unsubscribe(u) => {
            put_u16(out, u.packet_id.get());
            if v5 {
                write_properties(&u.properties, plan.props, out);
            }
            for f in &u.filters {
                put_binary(out, f.as_bytes());
            }
        }
        Packet::UnsubAck(u) => {
            put_u16(out, u.packet_id.get());
            if v5 {
                write_properties(&u.properties, plan.props, out);
                out.extend(u.reason_codes.iter().map(|rc| *rc as u8));
            }
        }
        Packet::PingReq | Packet::PingResp => {}
        Packet::Disconnect(d) => {
            if v5 {
                write_code_and_properties(d.reason_code, &d.properties, plan.props, out);
            }
        }
        Packet::Auth(a) => write_code_and_properties(a.reason_code, &a.properties, plan.props, out),
    }
}

fn write_code_and_properties<P: PropertySet>(
    rc: ReasonCode,
    set: &P,
    props: usize,
    out: &mut Vec<u8>,
) {
    if rc == ReasonCode::Success && props == 0 {
        return;
    }
    out.push(rc as u8);
    if props > 0 {
        write_properties(set, props, out);
    }
}

fn write_connect(c: &Connect, plan: &Plan, out: &mut Vec<u8>) {
    let v5 = c.protocol_version == ProtocolVersion::V5;
    put_binary(out, b"MQTT");
    out.push(c.protocol_version.level());
    let mut flags = 0u8;
    if c.username.is_some() {
        flags |= 0x80;
    }
    if c.password.is_some() {
        flags |= 0x40;
    }
    if let Some(w) = &c.will {
        flags |= 0x04 | ((w.qos as u8) << 3);
        if w.retain {
            flags |= 0x20;
        }
    }
    if c.clean_start {
        flags |= 0x02;
    }
    out.push(flags);
    put_u16(out, c.keep_alive);
    if v5 {
        write_properties(&c.properties, plan.props, out);
    }
    put_binary(out, c.client_id.as_bytes());
    if let Some(w) = &c.will {
        if v5 {
            write_properties(&w.properties, plan.will_props, out);
        }
        put_binary(out, w.topic.as_bytes());
        put_binary(out, &w.payload);
    }
    if let Some(u) = &c.username {
        put_binary(out, u.as_bytes());
    }
    if let Some(p) = &c.password {
        put_binary(out, p);
    }
}
