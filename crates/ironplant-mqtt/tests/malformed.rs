//! Malformed input: every error is typed, nothing panics, nothing big is allocated.

mod common;

use bytes::Bytes;
use common::{hex, vectors, MAX};
use ironplant_mqtt::codec::*;
use ironplant_mqtt::topic::TopicError;

use ProtocolVersion::{V311, V5};

/// If `bytes` decode, the packet must survive encode → decode unchanged.
fn decodes_consistently(bytes: &[u8], version: ProtocolVersion) -> Result<bool, String> {
    match decode(bytes, version, MAX) {
        Ok(Some((packet, used))) => {
            if used > bytes.len() {
                return Err(format!("consumed {used} of {} bytes", bytes.len()));
            }
            // A CONNECT decodes per its own level; everything after uses the connection's.
            let mut out = Vec::new();
            encode(&packet, version, &mut out)
                .map_err(|e| format!("decoded {packet:?} but cannot re-encode: {e}"))?;
            let again = decode(&out, version, MAX)
                .map_err(|e| format!("re-encoded {packet:?} does not decode: {e}"))?;
            if again != Some((packet.clone(), out.len())) {
                return Err(format!("{packet:?} re-decoded as {again:?}"));
            }
            Ok(true)
        }
        Ok(None) | Err(_) => Ok(false),
    }
}

#[test]
fn every_prefix_of_every_vector_asks_for_more_bytes() {
    for v in vectors() {
        for cut in 0..v.bytes.len() {
            let prefix = v.bytes.get(..cut).expect("in range");
            assert_eq!(
                decode(prefix, v.version, MAX),
                Ok(None),
                "{} cut at {cut}",
                v.name
            );
            let bytes = Bytes::copy_from_slice(prefix);
            assert_eq!(decode_bytes(&bytes, v.version, MAX), Ok(None), "{}", v.name);
        }
    }
}

#[test]
fn every_body_truncation_with_a_matching_remaining_length_is_an_error_or_consistent() {
    // Cut the body and fix up the Remaining Length, so the decoder sees a complete packet
    // whose fields end early.
    let mut errors = 0;
    for v in vectors() {
        let (_, body) = split_fixed_header(&v.bytes);
        if body.len() >= 128 {
            continue; // keep the Remaining Length a single byte
        }
        for keep in 0..body.len() {
            let mut packet = vec![v.bytes.first().copied().expect("non-empty")];
            packet.push(u8::try_from(keep).expect("under 128"));
            packet.extend_from_slice(body.get(..keep).expect("in range"));
            match decodes_consistently(&packet, v.version) {
                Ok(true) => {}
                Ok(false) => errors += 1,
                Err(e) => panic!("{} body cut to {keep}: {e}", v.name),
            }
        }
    }
    assert!(errors > 500, "only {errors} truncated bodies were refused");
}

fn split_fixed_header(bytes: &[u8]) -> (&[u8], &[u8]) {
    let len = 1
        + bytes
            .iter()
            .skip(1)
            .position(|b| b & 0x80 == 0)
            .expect("valid varint")
        + 1;
    bytes.split_at(len)
}

#[test]
fn every_single_bit_flip_of_every_vector_is_handled() {
    let (mut refused, mut accepted) = (0, 0);
    for v in vectors() {
        for i in 0..v.bytes.len() * 8 {
            let mut bytes = v.bytes.clone();
            if let Some(byte) = bytes.get_mut(i / 8) {
                *byte ^= 1 << (i % 8);
            }
            for version in [V311, V5] {
                match decodes_consistently(&bytes, version) {
                    Ok(true) => accepted += 1,
                    Ok(false) => refused += 1,
                    Err(e) => panic!("{} bit {i} ({version}): {e}", v.name),
                }
            }
        }
    }
    // Flips in payloads and names give other valid packets; flips in lengths, flags, codes
    // and property identifiers must be refused. Both kinds must occur.
    assert!(
        refused > 1000 && accepted > 1000,
        "{refused} refused, {accepted} accepted"
    );
}

#[test]
fn huge_declared_length_is_refused_from_the_header_alone() {
    // PUBLISH announcing 268,435,455 bytes; only the 5-byte fixed header has arrived.
    let header = hex("30 FF FF FF 7F");
    for version in [V311, V5] {
        assert_eq!(
            decode(&header, version, 1024),
            Err(DecodeError::PacketTooLarge {
                size: 268_435_460,
                max: 1024
            })
        );
        let h = decode_header(&header, version, usize::MAX)
            .expect("valid header")
            .expect("complete header");
        assert_eq!(h.remaining_length, 268_435_455);
        assert_eq!(h.header_len, 5);
    }
    // The limit counts the whole packet, header included (MQTT 5.0 §3.1.2.11.4).
    let pingreq = hex("C0 00");
    assert_eq!(
        decode(&pingreq, V5, 1),
        Err(DecodeError::PacketTooLarge { size: 2, max: 1 })
    );
    assert_eq!(decode(&pingreq, V5, 2), Ok(Some((Packet::PingReq, 2))));
    assert_eq!(
        DecodeError::PacketTooLarge { size: 2, max: 1 }.reason_code(),
        ReasonCode::PacketTooLarge
    );
}

#[test]
fn five_byte_remaining_length_is_malformed() {
    for version in [V311, V5] {
        assert_eq!(
            decode(&hex("30 FF FF FF FF 01"), version, usize::MAX),
            Err(DecodeError::VarIntTooLong)
        );
        // Known as soon as the fourth length byte has its continuation bit.
        assert_eq!(
            decode(&hex("30 80 80 80 80"), version, usize::MAX),
            Err(DecodeError::VarIntTooLong)
        );
        assert_eq!(
            decode(&hex("C0 80 00"), version, MAX),
            Err(DecodeError::VarIntNotMinimal)
        );
    }
    assert_eq!(
        DecodeError::VarIntTooLong.reason_code(),
        ReasonCode::MalformedPacket
    );
}

fn expect_err(bytes: &str, version: ProtocolVersion, expected: DecodeError, code: ReasonCode) {
    let got = decode(&hex(bytes), version, MAX);
    assert_eq!(got, Err(expected.clone()), "{bytes}");
    assert_eq!(expected.reason_code(), code, "{expected}");
}

#[test]
fn invalid_utf8_and_null_characters() {
    // Topic "a" followed by 0xFF.
    expect_err(
        "30 06 00 02 61 FF 68 69",
        V311,
        DecodeError::InvalidString {
            packet: PacketType::Publish,
            error: StringError::InvalidUtf8,
        },
        ReasonCode::MalformedPacket,
    );
    // UTF-16 surrogate half encoded in UTF-8 (ED A0 80): not valid UTF-8 (MQTT-1.5.4-1).
    expect_err(
        "30 05 00 03 ED A0 80",
        V5,
        DecodeError::InvalidString {
            packet: PacketType::Publish,
            error: StringError::InvalidUtf8,
        },
        ReasonCode::MalformedPacket,
    );
    // U+0000 in a client id (MQTT-1.5.4-2).
    expect_err(
        "10 0E 00 04 4D 51 54 54 04 02 00 3C 00 02 61 00",
        V311,
        DecodeError::InvalidString {
            packet: PacketType::Connect,
            error: StringError::NullCharacter,
        },
        ReasonCode::MalformedPacket,
    );
    // Invalid UTF-8 in a user property value.
    expect_err(
        "40 0B 00 0A 00 07 26 00 01 6B 00 01 C0",
        V5,
        DecodeError::InvalidString {
            packet: PacketType::PubAck,
            error: StringError::InvalidUtf8,
        },
        ReasonCode::MalformedPacket,
    );
}

#[test]
fn wildcards_in_publish_and_will_topics() {
    expect_err(
        "30 07 00 03 61 2F 2B 68 69",
        V311,
        DecodeError::InvalidTopicName(TopicError::WildcardInName {
            wildcard: '+',
            at: 2,
        }),
        ReasonCode::TopicNameInvalid,
    );
    expect_err(
        "30 06 00 01 23 00 68 69",
        V5,
        DecodeError::InvalidTopicName(TopicError::WildcardInName {
            wildcard: '#',
            at: 0,
        }),
        ReasonCode::TopicNameInvalid,
    );
    // Will topic "w/#".
    expect_err(
        "10 17 00 04 4D 51 54 54 04 0E 00 0A 00 01 61 00 03 77 2F 23 00 03 62 79 65",
        V311,
        DecodeError::InvalidTopicName(TopicError::WildcardInName {
            wildcard: '#',
            at: 2,
        }),
        ReasonCode::TopicNameInvalid,
    );
    // Empty topic: 3.1.1 never allows it, 5.0 only with a topic alias.
    expect_err(
        "30 04 00 00 68 69",
        V311,
        DecodeError::InvalidTopicName(TopicError::Empty),
        ReasonCode::TopicNameInvalid,
    );
    expect_err(
        "30 05 00 00 00 68 69",
        V5,
        DecodeError::MissingTopicName,
        ReasonCode::ProtocolError,
    );
    // Response topic with a wildcard (MQTT-3.3.2-14).
    expect_err(
        "30 09 00 01 74 05 08 00 02 61 2B",
        V5,
        DecodeError::InvalidResponseTopic(TopicError::WildcardInName {
            wildcard: '+',
            at: 1,
        }),
        ReasonCode::ProtocolError,
    );
}

#[test]
fn bad_topic_filters() {
    for (filter_hex, err) in [
        (
            "00 05 61 2F 23 2F 62", // "a/#/b"
            TopicError::MisplacedMultiLevelWildcard { at: 2 },
        ),
        (
            "00 02 61 23", // "a#"
            TopicError::MisplacedMultiLevelWildcard { at: 1 },
        ),
        (
            "00 03 61 2B 62", // "a+b"
            TopicError::MisplacedSingleLevelWildcard { at: 1 },
        ),
        ("00 00", TopicError::Empty),
        (
            "00 09 24 73 68 61 72 65 2F 2F 61", // "$share//a"
            TopicError::InvalidShareName,
        ),
        (
            "00 08 24 73 68 61 72 65 2F 67", // "$share/g"
            TopicError::InvalidShareName,
        ),
        (
            "00 09 24 73 68 61 72 65 2F 67 2F", // "$share/g/"
            TopicError::EmptySharedFilter,
        ),
    ] {
        let filter = hex(filter_hex);
        for version in [V311, V5] {
            let mut body = vec![0x00, 0x0A];
            if version == V5 {
                body.push(0x00);
            }
            body.extend_from_slice(&filter);
            body.push(0x01);
            let mut packet = vec![0x82, u8::try_from(body.len()).expect("small")];
            packet.extend_from_slice(&body);
            assert_eq!(
                decode(&packet, version, MAX),
                Err(DecodeError::InvalidTopicFilter(err)),
                "SUBSCRIBE {filter_hex} {version}"
            );
            // Same filter in UNSUBSCRIBE (no options byte).
            body.pop();
            let mut packet = vec![0xA2, u8::try_from(body.len()).expect("small")];
            packet.extend_from_slice(&body);
            assert_eq!(
                decode(&packet, version, MAX),
                Err(DecodeError::InvalidTopicFilter(err)),
                "UNSUBSCRIBE {filter_hex} {version}"
            );
        }
    }
    assert_eq!(
        DecodeError::InvalidTopicFilter(TopicError::Empty).reason_code(),
        ReasonCode::TopicFilterInvalid
    );
}

#[test]
fn qos_3_everywhere() {
    for version in [V311, V5] {
        // PUBLISH with both QoS bits set: refused from the first byte.
        assert_eq!(
            decode(&[0x36], version, MAX),
            Err(DecodeError::InvalidQos {
                packet: PacketType::Publish
            })
        );
        // Will QoS 3 (flags 0x1E: will QoS bits 11, will flag, clean session).
        let connect = match version {
            V311 => "10 17 00 04 4D 51 54 54 04 1E 00 0A 00 01 61 00 03 77 2F 74 00 03 62 79 65",
            V5 => {
                "10 19 00 04 4D 51 54 54 05 1E 00 0A 00 00 01 61 00 00 03 77 2F 74 00 03 62 79 65"
            }
        };
        assert_eq!(
            decode(&hex(connect), version, MAX),
            Err(DecodeError::InvalidQos {
                packet: PacketType::Connect
            }),
            "{version}"
        );
    }
    // Subscription option QoS 3.
    expect_err(
        "82 08 00 0A 00 03 61 2F 62 03",
        V311,
        DecodeError::InvalidQos {
            packet: PacketType::Subscribe,
        },
        ReasonCode::ProtocolError,
    );
    assert_eq!(
        DecodeError::InvalidQos {
            packet: PacketType::Publish
        }
        .reason_code(),
        ReasonCode::MalformedPacket
    );
}

#[test]
fn zero_packet_identifiers() {
    for (bytes, packet) in [
        ("32 07 00 03 61 2F 62 00 00", PacketType::Publish),
        ("40 02 00 00", PacketType::PubAck),
        ("50 02 00 00", PacketType::PubRec),
        ("62 02 00 00", PacketType::PubRel),
        ("70 02 00 00", PacketType::PubComp),
        ("82 08 00 00 00 03 61 2F 62 01", PacketType::Subscribe),
        ("90 03 00 00 00", PacketType::SubAck),
        ("A2 07 00 00 00 03 61 2F 62", PacketType::Unsubscribe),
        ("B0 02 00 00", PacketType::UnsubAck),
    ] {
        expect_err(
            bytes,
            V311,
            DecodeError::ZeroPacketId { packet },
            ReasonCode::ProtocolError,
        );
    }
}

#[test]
fn duplicate_and_misplaced_properties() {
    // Two session expiry intervals in CONNECT.
    expect_err(
        "10 18 00 04 4D 51 54 54 05 02 00 0A 0A 11 00 00 00 0A 11 00 00 00 0B 00 01 61",
        V5,
        DecodeError::DuplicateProperty {
            packet: PacketType::Connect,
            property: PropertyId::SessionExpiryInterval,
        },
        ReasonCode::ProtocolError,
    );
    // Two reason strings in PUBACK.
    expect_err(
        "40 0C 00 0A 80 08 1F 00 01 61 1F 00 01 62",
        V5,
        DecodeError::DuplicateProperty {
            packet: PacketType::PubAck,
            property: PropertyId::ReasonString,
        },
        ReasonCode::ProtocolError,
    );
    // Two subscription identifiers in SUBSCRIBE (only PUBLISH may repeat it).
    expect_err(
        "82 0B 00 0A 04 0B 01 0B 02 00 01 61 00",
        V5,
        DecodeError::DuplicateProperty {
            packet: PacketType::Subscribe,
            property: PropertyId::SubscriptionIdentifier,
        },
        ReasonCode::ProtocolError,
    );
    // User properties may repeat anywhere: PUBACK with two of the same name is fine.
    assert!(matches!(
        decode(
            &hex("40 12 00 0A 00 0E 26 00 01 6B 00 01 31 26 00 01 6B 00 01 32"),
            V5,
            MAX
        ),
        Ok(Some((Packet::PubAck(_), 20)))
    ));
    // Topic alias in SUBSCRIBE: not valid for the packet, a Malformed Packet (§2.2.2.2).
    expect_err(
        "82 0A 00 0A 03 23 00 01 00 01 61 00",
        V5,
        DecodeError::PropertyNotAllowed {
            packet: PacketType::Subscribe,
            property: PropertyId::TopicAlias,
        },
        ReasonCode::MalformedPacket,
    );
    // Will delay interval in PUBLISH.
    expect_err(
        "30 09 00 01 74 05 18 00 00 00 01",
        V5,
        DecodeError::PropertyNotAllowed {
            packet: PacketType::Publish,
            property: PropertyId::WillDelayInterval,
        },
        ReasonCode::MalformedPacket,
    );
    // Unknown identifier 0x05.
    expect_err(
        "30 06 00 01 74 02 05 00",
        V5,
        DecodeError::UnknownProperty {
            packet: PacketType::Publish,
            id: 5,
        },
        ReasonCode::MalformedPacket,
    );
    // Values out of range: topic alias 0, receive maximum 0, maximum QoS 2.
    expect_err(
        "30 07 00 01 74 03 23 00 00",
        V5,
        DecodeError::InvalidPropertyValue {
            property: PropertyId::TopicAlias,
            value: 0,
        },
        ReasonCode::ProtocolError,
    );
    expect_err(
        "20 06 00 00 03 21 00 00",
        V5,
        DecodeError::InvalidPropertyValue {
            property: PropertyId::ReceiveMaximum,
            value: 0,
        },
        ReasonCode::ProtocolError,
    );
    expect_err(
        "20 05 00 00 02 24 02",
        V5,
        DecodeError::InvalidPropertyValue {
            property: PropertyId::MaximumQos,
            value: 2,
        },
        ReasonCode::ProtocolError,
    );
    // Authentication data without a method.
    expect_err(
        "F0 06 18 04 16 00 01 61",
        V5,
        DecodeError::AuthDataWithoutMethod {
            packet: PacketType::Auth,
        },
        ReasonCode::ProtocolError,
    );
    // Property length running past the end of the packet.
    expect_err(
        "30 07 00 01 74 09 01 01 00",
        V5,
        DecodeError::Truncated {
            packet: PacketType::Publish,
        },
        ReasonCode::MalformedPacket,
    );
}

#[test]
fn wrong_protocol_name_and_level() {
    let connect = |name: &str, level: u8| {
        let mut bytes = vec![0x10, 0x00];
        bytes.extend_from_slice(&u16::try_from(name.len()).expect("short").to_be_bytes());
        bytes.extend_from_slice(name.as_bytes());
        bytes.extend_from_slice(&[level, 0x02, 0x00, 0x0A, 0x00, 0x01, 0x61]);
        bytes[1] = u8::try_from(bytes.len() - 2).expect("short");
        bytes
    };
    for level in [0, 3, 6, 255] {
        let bytes = connect("MQTT", level);
        let err = DecodeError::UnsupportedProtocolVersion { level };
        assert_eq!(
            decode_connect(&bytes, MAX),
            Err(err.clone()),
            "level {level}"
        );
        assert_eq!(err.reason_code(), ReasonCode::UnsupportedProtocolVersion);
        // The 3.1.1 answer is CONNACK return code 0x01.
        assert_eq!(err.reason_code().to_v311_connack(), Some(0x01));
    }
    // MQTT 3.1 says "MQIsdp", level 3: also an unsupported version, so it gets CONNACK 0x01.
    assert_eq!(
        decode_connect(&connect("MQIsdp", 3), MAX),
        Err(DecodeError::UnsupportedProtocolVersion { level: 3 })
    );
    for name in ["MQTX", "mqtt", "HTTP", ""] {
        assert_eq!(
            decode_connect(&connect(name, 4), MAX),
            Err(DecodeError::InvalidProtocolName),
            "{name:?}"
        );
    }
    // Anything but CONNECT first.
    assert_eq!(
        decode_connect(&hex("C0 00"), MAX),
        Err(DecodeError::ExpectedConnect {
            packet: PacketType::PingReq
        })
    );
    assert_eq!(
        DecodeError::ExpectedConnect {
            packet: PacketType::PingReq
        }
        .reason_code(),
        ReasonCode::ProtocolError
    );
}

#[test]
fn reserved_flags_and_types() {
    for version in [V311, V5] {
        assert_eq!(
            decode(&[0x00, 0x00], version, MAX),
            Err(DecodeError::ReservedPacketType(0))
        );
        // PUBREL, SUBSCRIBE and UNSUBSCRIBE need flags 0010; the others 0000.
        for (first, packet) in [
            (0x60, PacketType::PubRel),
            (0x80, PacketType::Subscribe),
            (0xA3, PacketType::Unsubscribe),
            (0x41, PacketType::PubAck),
            (0xC8, PacketType::PingReq),
            (0xE2, PacketType::Disconnect),
            (0x12, PacketType::Connect),
        ] {
            assert_eq!(
                decode(&[first], version, MAX),
                Err(DecodeError::InvalidFixedHeaderFlags {
                    packet,
                    flags: first & 0x0F
                }),
                "{first:#04x}"
            );
        }
        // DUP on a QoS 0 PUBLISH (MQTT-3.3.1-2).
        assert_eq!(decode(&[0x38], version, MAX), Err(DecodeError::DupWithQos0));
    }
    // AUTH does not exist in 3.1.1.
    assert_eq!(
        decode(&hex("F0 00"), V311, MAX),
        Err(DecodeError::ReservedPacketType(15))
    );
    // CONNECT reserved flag bit 0; will QoS without will flag; 3.1.1 password without user.
    for flags in [0x03, 0x0A, 0x22, 0x42] {
        let bytes = [
            0x10, 0x0D, 0x00, 0x04, 0x4D, 0x51, 0x54, 0x54, 0x04, flags, 0x00, 0x0A, 0x00, 0x01,
            0x61,
        ];
        assert_eq!(
            decode(&bytes, V311, MAX),
            Err(DecodeError::InvalidConnectFlags(flags)),
            "{flags:#04x}"
        );
    }
    // CONNACK reserved flag bits.
    expect_err(
        "20 02 02 00",
        V311,
        DecodeError::InvalidConnackFlags(0x02),
        ReasonCode::MalformedPacket,
    );
    // Session present with a failure code.
    expect_err(
        "20 02 01 05",
        V311,
        DecodeError::SessionPresentOnFailure,
        ReasonCode::ProtocolError,
    );
    // Subscription options: reserved bits (5.0 bits 6-7, 3.1.1 bits 2-7), retain handling 3,
    // no local on a shared subscription.
    expect_err(
        "82 09 00 0A 00 00 03 61 2F 62 41",
        V5,
        DecodeError::ReservedSubscriptionOptions(0x41),
        ReasonCode::MalformedPacket,
    );
    expect_err(
        "82 08 00 0A 00 03 61 2F 62 05",
        V311,
        DecodeError::ReservedSubscriptionOptions(0x05),
        ReasonCode::MalformedPacket,
    );
    expect_err(
        "82 09 00 0A 00 00 03 61 2F 62 31",
        V5,
        DecodeError::InvalidRetainHandling,
        ReasonCode::ProtocolError,
    );
    expect_err(
        "82 10 00 0A 00 00 0A 24 73 68 61 72 65 2F 67 2F 61 04",
        V5,
        DecodeError::NoLocalOnSharedSubscription,
        ReasonCode::ProtocolError,
    );
}

#[test]
fn reason_codes_outside_the_packet_s_list_and_empty_lists() {
    // 0x92 is for PUBREL/PUBCOMP, not PUBACK; 0x03 is no reason code at all.
    for (bytes, packet, code) in [
        ("40 03 00 0A 92", PacketType::PubAck, 0x92),
        ("62 03 00 0A 10", PacketType::PubRel, 0x10),
        ("20 03 00 03 00", PacketType::Connack, 0x03),
        ("E0 01 84", PacketType::Disconnect, 0x84),
        ("F0 01 04", PacketType::Auth, 0x04),
        ("90 04 00 0A 00 11", PacketType::SubAck, 0x11),
        ("B0 04 00 0A 00 01", PacketType::UnsubAck, 0x01),
    ] {
        expect_err(
            bytes,
            V5,
            DecodeError::InvalidReasonCode { packet, code },
            ReasonCode::MalformedPacket,
        );
    }
    // 3.1.1 return codes 6-255 are reserved; SUBACK knows only 0, 1, 2 and 0x80.
    expect_err(
        "20 02 00 06",
        V311,
        DecodeError::InvalidReasonCode {
            packet: PacketType::Connack,
            code: 6,
        },
        ReasonCode::MalformedPacket,
    );
    expect_err(
        "90 03 00 0A 87",
        V311,
        DecodeError::InvalidReasonCode {
            packet: PacketType::SubAck,
            code: 0x87,
        },
        ReasonCode::MalformedPacket,
    );
    for (bytes, version, packet) in [
        ("82 02 00 0A", V311, PacketType::Subscribe),
        ("82 03 00 0A 00", V5, PacketType::Subscribe),
        ("A2 02 00 0A", V311, PacketType::Unsubscribe),
        ("90 02 00 0A", V311, PacketType::SubAck),
        ("B0 03 00 0A 00", V5, PacketType::UnsubAck),
    ] {
        expect_err(
            bytes,
            version,
            DecodeError::EmptyPayload { packet },
            ReasonCode::ProtocolError,
        );
    }
}

#[test]
fn trailing_bytes_after_fixed_size_packets() {
    for (bytes, version, packet) in [
        ("C0 01 00", V311, PacketType::PingReq),
        ("D0 01 00", V5, PacketType::PingResp),
        ("E0 01 00", V311, PacketType::Disconnect),
        ("40 03 00 0A 00", V311, PacketType::PubAck),
        ("B0 03 00 0A 00", V311, PacketType::UnsubAck),
        ("20 03 00 00 00", V311, PacketType::Connack),
        ("40 05 00 0A 00 00 00", V5, PacketType::PubAck),
    ] {
        expect_err(
            bytes,
            version,
            DecodeError::TrailingBytes { packet, count: 1 },
            ReasonCode::MalformedPacket,
        );
    }
}

#[test]
fn arbitrary_garbage_never_panics() {
    // A tiny xorshift PRNG: deterministic, no dependency.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut complete = 0;
    for _ in 0..20_000 {
        let len = (next() % 64) as usize;
        let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        // Give most inputs a valid first byte (type and flags) and remaining length.
        if let Some(first) = bytes.get_mut(0) {
            let packet_type = *first >> 4;
            let flags = match packet_type {
                3 => *first & 0b1011, // DUP, QoS 0 or 1, RETAIN
                6 | 8 | 10 => 0b0010,
                _ => 0,
            };
            *first = (packet_type << 4) | flags;
        }
        if let Some(rl) = bytes.get_mut(1) {
            *rl = u8::try_from(len.saturating_sub(2)).unwrap_or(0);
        }
        for version in [V311, V5] {
            if decodes_consistently(&bytes, version).expect("consistent") {
                complete += 1;
            }
            let _ = decode_connect(&bytes, MAX);
        }
    }
    assert!(complete > 100, "only {complete} random inputs decoded");
}
