//! Golden vectors shared by the golden, malformed-input and round-trip tests.
//!
//! Every vector was assembled by hand, field by field, from the packet layouts of the OASIS
//! standards (MQTT 3.1.1, 29 October 2014, and MQTT 5.0, 7 March 2019); where a standard
//! gives a non-normative example of a variable header or payload, the vector embeds that
//! example byte for byte (noted as "spec example"). Section numbers refer to those documents.
//! [`captured`] adds packets recorded from a third-party peer (Eclipse Mosquitto 2.0.11).
#![allow(dead_code)]

use std::num::{NonZeroU16, NonZeroU32};

use bytes::Bytes;
use ironplant_mqtt::codec::*;

/// Generous limit for tests that are not about the size limit.
pub const MAX: usize = 1 << 20;

pub struct Vector {
    pub name: &'static str,
    pub version: ProtocolVersion,
    pub bytes: Vec<u8>,
    pub packet: Packet,
    /// Where the layout (or the example) comes from.
    pub source: &'static str,
    /// Decodes to `packet`, but `encode` writes the canonical (shorter) form instead.
    pub decode_only: bool,
}

/// Parses hex bytes, ignoring whitespace and `//` comments to the end of each line.
pub fn hex(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or_default();
        for tok in code.split_whitespace() {
            // A token is one byte ("4D") or a run of them ("4d515454").
            let digits = tok.as_bytes();
            assert!(digits.len() % 2 == 0, "odd hex token {tok:?}");
            for pair in digits.chunks(2) {
                let pair = std::str::from_utf8(pair).expect("ASCII hex");
                out.push(u8::from_str_radix(pair, 16).expect("hex byte in a test vector"));
            }
        }
    }
    out
}

pub fn s(text: &str) -> MqttString {
    MqttString::try_from(text).expect("valid test string")
}

pub fn pid(n: u16) -> PacketId {
    NonZeroU16::new(n).expect("non-zero test packet id")
}

pub fn b(bytes: &[u8]) -> Bytes {
    Bytes::copy_from_slice(bytes)
}

fn up(k: &str, v: &str) -> UserProperty {
    (s(k), s(v))
}

fn response(id: u16, reason_code: ReasonCode, properties: AckProperties) -> PublishResponse {
    PublishResponse {
        packet_id: pid(id),
        reason_code,
        properties,
    }
}

fn reason_string(text: &str) -> AckProperties {
    AckProperties {
        reason_string: Some(s(text)),
        user_properties: vec![],
    }
}

fn v(
    name: &'static str,
    version: ProtocolVersion,
    source: &'static str,
    bytes: &str,
    packet: Packet,
) -> Vector {
    Vector {
        name,
        version,
        bytes: hex(bytes),
        packet,
        source,
        decode_only: false,
    }
}

// One `push` per vector keeps each annotated byte string next to its packet.
#[allow(clippy::vec_init_then_push)]
pub fn vectors() -> Vec<Vector> {
    use ProtocolVersion::{V311, V5};
    let mut out = Vec::new();

    // ----------------------------------------------------------------- MQTT 3.1.1 -----

    out.push(v(
        "3.1.1 CONNECT minimal",
        V311,
        "3.1.1 §3.1 (Figure 3.2, 3.3, 3.4, 3.5)",
        "10 0D                 // CONNECT, remaining length 13
         00 04 4D 51 54 54     // protocol name \"MQTT\"
         04                    // protocol level 4
         02                    // flags: clean session
         00 3C                 // keep alive 60
         00 01 61              // client id \"a\"",
        Packet::Connect(Box::new(Connect::new(V311, s("a"), 60))),
    ));

    out.push(v(
        "3.1.1 CONNECT with will, user name and password",
        V311,
        "3.1.1 §3.1.2.10 spec example variable header (flags 0xCE, keep alive 10); payload §3.1.3",
        "10 25                 // CONNECT, remaining length 37
         00 04 4D 51 54 54 04  // \"MQTT\", level 4
         CE                    // user name, password, will QoS 1, will, clean session
         00 0A                 // keep alive 10
         00 03 63 69 64        // client id \"cid\"
         00 03 77 2F 74        // will topic \"w/t\"
         00 03 62 79 65        // will message \"bye\"
         00 04 75 73 65 72     // user name \"user\"
         00 04 70 61 73 73     // password \"pass\"",
        Packet::Connect(Box::new(Connect {
            protocol_version: V311,
            clean_start: true,
            keep_alive: 10,
            client_id: s("cid"),
            will: Some(Will {
                topic: s("w/t"),
                payload: b(b"bye"),
                qos: QoS::AtLeastOnce,
                retain: false,
                properties: WillProperties::default(),
            }),
            username: Some(s("user")),
            password: Some(b(b"pass")),
            properties: ConnectProperties::default(),
        })),
    ));

    out.push(v(
        "3.1.1 CONNACK accepted",
        V311,
        "3.1.1 §3.2 (Figure 3.8, 3.9)",
        "20 02 00 00",
        Packet::Connack(Connack {
            session_present: false,
            reason_code: ReasonCode::Success,
            properties: ConnackProperties::default(),
        }),
    ));
    out.push(v(
        "3.1.1 CONNACK session present",
        V311,
        "3.1.1 §3.2.2.2",
        "20 02 01 00",
        Packet::Connack(Connack {
            session_present: true,
            reason_code: ReasonCode::Success,
            properties: ConnackProperties::default(),
        }),
    ));
    out.push(v(
        "3.1.1 CONNACK unacceptable protocol version",
        V311,
        "3.1.1 §3.2.2.3 Table 3.1 (return code 0x01)",
        "20 02 00 01",
        Packet::Connack(Connack {
            session_present: false,
            reason_code: ReasonCode::UnsupportedProtocolVersion,
            properties: ConnackProperties::default(),
        }),
    ));
    out.push(v(
        "3.1.1 CONNACK not authorized",
        V311,
        "3.1.1 §3.2.2.3 Table 3.1 (return code 0x05)",
        "20 02 00 05",
        Packet::Connack(Connack {
            session_present: false,
            reason_code: ReasonCode::NotAuthorized,
            properties: ConnackProperties::default(),
        }),
    ));

    out.push(v(
        "3.1.1 PUBLISH QoS 0",
        V311,
        "3.1.1 §3.3 (Figure 3.10, 3.11)",
        "30 07                 // PUBLISH QoS 0, remaining length 7
         00 03 61 2F 62        // topic \"a/b\"
         68 69                 // payload \"hi\"",
        Packet::Publish(Publish::new(s("a/b"), b(b"hi"))),
    ));
    out.push(v(
        "3.1.1 PUBLISH QoS 1",
        V311,
        "3.1.1 §3.3.2.3 spec example variable header (topic a/b, packet id 10)",
        "32 09                 // PUBLISH QoS 1
         00 03 61 2F 62        // topic \"a/b\"
         00 0A                 // packet id 10
         68 69                 // payload \"hi\"",
        Packet::Publish(Publish {
            qos: QoS::AtLeastOnce,
            packet_id: Some(pid(10)),
            ..Publish::new(s("a/b"), b(b"hi"))
        }),
    ));
    out.push(v(
        "3.1.1 PUBLISH QoS 2 DUP RETAIN, empty payload",
        V311,
        "3.1.1 §3.3.1 (Figure 3.10 flags), §3.3.3 (zero-length payload)",
        "3D 07                 // PUBLISH DUP=1 QoS=2 RETAIN=1
         00 03 61 2F 62        // topic \"a/b\"
         12 34                 // packet id 0x1234",
        Packet::Publish(Publish {
            dup: true,
            qos: QoS::ExactlyOnce,
            retain: true,
            packet_id: Some(pid(0x1234)),
            ..Publish::new(s("a/b"), Bytes::new())
        }),
    ));
    let mut long = hex(
        "30 CB 01              // PUBLISH QoS 0, remaining length 203 (two-byte varint)
         00 01 74              // topic \"t\"",
    );
    let payload: Vec<u8> = (0..200u8).collect();
    long.extend_from_slice(&payload);
    out.push(Vector {
        name: "3.1.1 PUBLISH with a two-byte remaining length",
        version: V311,
        bytes: long,
        packet: Packet::Publish(Publish::new(s("t"), b(&payload))),
        source: "3.1.1 §2.2.3 Table 2.4 (remaining length encoding)",
        decode_only: false,
    });

    for (name, first, ctor) in [
        (
            "3.1.1 PUBACK",
            "40",
            Packet::PubAck as fn(PublishResponse) -> Packet,
        ),
        ("3.1.1 PUBREC", "50", Packet::PubRec),
        ("3.1.1 PUBREL", "62", Packet::PubRel),
        ("3.1.1 PUBCOMP", "70", Packet::PubComp),
    ] {
        out.push(Vector {
            name,
            version: V311,
            bytes: hex(&format!("{first} 02 00 0A")),
            packet: ctor(PublishResponse::new(pid(10))),
            source: "3.1.1 §3.4-§3.7 (Figures 3.12-3.19; PUBREL flags 0010)",
            decode_only: false,
        });
    }

    out.push(v(
        "3.1.1 SUBSCRIBE",
        V311,
        "3.1.1 §3.8.3 spec example payload (a/b QoS 1, c/d QoS 2) with packet id 10 (§3.8.2)",
        "82 0E                 // SUBSCRIBE (flags 0010), remaining length 14
         00 0A                 // packet id 10
         00 03 61 2F 62 01     // \"a/b\" QoS 1
         00 03 63 2F 64 02     // \"c/d\" QoS 2",
        Packet::Subscribe(Subscribe {
            packet_id: pid(10),
            properties: SubscribeProperties::default(),
            subscriptions: vec![
                Subscription {
                    filter: s("a/b"),
                    options: SubscriptionOptions::qos(QoS::AtLeastOnce),
                },
                Subscription {
                    filter: s("c/d"),
                    options: SubscriptionOptions::qos(QoS::ExactlyOnce),
                },
            ],
        }),
    ));
    out.push(v(
        "3.1.1 SUBACK",
        V311,
        "3.1.1 §3.9.3 spec example payload (0x00, 0x02, 0x80) plus 0x01",
        "90 06 00 0A 00 01 02 80",
        Packet::SubAck(SubAck {
            packet_id: pid(10),
            properties: AckProperties::default(),
            reason_codes: vec![
                ReasonCode::GRANTED_QOS_0,
                ReasonCode::GrantedQos1,
                ReasonCode::GrantedQos2,
                ReasonCode::UnspecifiedError,
            ],
        }),
    ));
    out.push(v(
        "3.1.1 UNSUBSCRIBE",
        V311,
        "3.1.1 §3.10.3 spec example payload (a/b, c/d) with packet id 10",
        "A2 0C                 // UNSUBSCRIBE (flags 0010), remaining length 12
         00 0A                 // packet id 10
         00 03 61 2F 62        // \"a/b\"
         00 03 63 2F 64        // \"c/d\"",
        Packet::Unsubscribe(Unsubscribe {
            packet_id: pid(10),
            properties: UnsubscribeProperties::default(),
            filters: vec![s("a/b"), s("c/d")],
        }),
    ));
    out.push(v(
        "3.1.1 UNSUBACK",
        V311,
        "3.1.1 §3.11 (Figures 3.31, 3.32)",
        "B0 02 00 0A",
        Packet::UnsubAck(UnsubAck {
            packet_id: pid(10),
            properties: AckProperties::default(),
            reason_codes: vec![],
        }),
    ));
    out.push(v(
        "3.1.1 PINGREQ",
        V311,
        "3.1.1 §3.12 (Figure 3.33)",
        "C0 00",
        Packet::PingReq,
    ));
    out.push(v(
        "3.1.1 PINGRESP",
        V311,
        "3.1.1 §3.13 (Figure 3.34)",
        "D0 00",
        Packet::PingResp,
    ));
    out.push(v(
        "3.1.1 DISCONNECT",
        V311,
        "3.1.1 §3.14 (Figure 3.35)",
        "E0 00",
        Packet::Disconnect(Disconnect::default()),
    ));

    // -------------------------------------------------------------------- MQTT 5.0 -----

    let mut minimal5 = Connect::new(V5, s("a"), 10);
    minimal5.properties.session_expiry_interval = Some(10);
    out.push(v(
        "5.0 CONNECT minimal",
        V5,
        "5.0 §3.1.2.12 spec example variable header (session expiry 10), flags reduced to clean start",
        "10 13                 // CONNECT, remaining length 19
         00 04 4D 51 54 54 05  // \"MQTT\", version 5
         02                    // flags: clean start
         00 0A                 // keep alive 10
         05                    // property length 5
         11 00 00 00 0A        //   session expiry interval 10
         00 01 61              // client id \"a\"",
        Packet::Connect(Box::new(minimal5)),
    ));

    out.push(v(
        "5.0 CONNECT with will, will properties, user name, password and every CONNECT property",
        V5,
        "5.0 §3.1.2.12 spec example (flags 0xCE, keep alive 10, session expiry 10); §3.1.2.11, §3.1.3",
        "10 6A                 // CONNECT, remaining length 106
         00 04 4D 51 54 54 05  // \"MQTT\", version 5
         CE                    // user name, password, will QoS 1, will, clean start
         00 0A                 // keep alive 10
         24                    // property length 36
         11 00 00 00 0A        //   session expiry interval 10
         21 00 14              //   receive maximum 20
         27 00 00 04 00        //   maximum packet size 1024
         22 00 0A              //   topic alias maximum 10
         19 01                 //   request response information 1
         17 00                 //   request problem information 0
         26 00 01 6B 00 01 76  //   user property k=v
         15 00 01 6D           //   authentication method \"m\"
         16 00 02 01 02        //   authentication data 01 02
         00 03 63 69 64        // client id \"cid\"
         1F                    // will property length 31
         18 00 00 00 05        //   will delay interval 5
         01 01                 //   payload format indicator UTF-8
         02 00 00 00 3C        //   message expiry interval 60
         03 00 01 74           //   content type \"t\"
         08 00 01 72           //   response topic \"r\"
         09 00 01 AB           //   correlation data AB
         26 00 01 6B 00 01 76  //   user property k=v
         00 03 77 2F 74        // will topic \"w/t\"
         00 03 62 79 65        // will payload \"bye\"
         00 04 75 73 65 72     // user name \"user\"
         00 04 70 61 73 73     // password \"pass\"",
        Packet::Connect(Box::new(Connect {
            protocol_version: V5,
            clean_start: true,
            keep_alive: 10,
            client_id: s("cid"),
            will: Some(Will {
                topic: s("w/t"),
                payload: b(b"bye"),
                qos: QoS::AtLeastOnce,
                retain: false,
                properties: WillProperties {
                    will_delay_interval: Some(5),
                    payload_format_indicator: Some(PayloadFormat::Utf8),
                    message_expiry_interval: Some(60),
                    content_type: Some(s("t")),
                    response_topic: Some(s("r")),
                    correlation_data: Some(b(&[0xAB])),
                    user_properties: vec![up("k", "v")],
                },
            }),
            username: Some(s("user")),
            password: Some(b(b"pass")),
            properties: ConnectProperties {
                session_expiry_interval: Some(10),
                receive_maximum: NonZeroU16::new(20),
                maximum_packet_size: NonZeroU32::new(1024),
                topic_alias_maximum: Some(10),
                request_response_information: Some(true),
                request_problem_information: Some(false),
                user_properties: vec![up("k", "v")],
                authentication_method: Some(s("m")),
                authentication_data: Some(b(&[1, 2])),
            },
        })),
    ));

    let mut password_only = Connect::new(V5, s("a"), 0);
    password_only.clean_start = false;
    password_only.password = Some(b(&[0x00, 0x01]));
    out.push(v(
        "5.0 CONNECT with a password and no user name",
        V5,
        "5.0 §3.1.2.9 (password without user name is allowed in 5.0)",
        "10 12                 // CONNECT, remaining length 18
         00 04 4D 51 54 54 05  // \"MQTT\", version 5
         40                    // flags: password only
         00 00                 // keep alive 0
         00                    // property length 0
         00 01 61              // client id \"a\"
         00 02 00 01           // password 00 01",
        Packet::Connect(Box::new(password_only)),
    ));

    out.push(v(
        "5.0 CONNACK with every CONNACK property",
        V5,
        "5.0 §3.2 (Figure 3-8), §3.2.2.3",
        "20 43                 // CONNACK, remaining length 67
         00                    // no session present
         00                    // reason code Success
         40                    // property length 64
         11 00 00 00 78        //   session expiry interval 120
         21 00 0A              //   receive maximum 10
         24 01                 //   maximum QoS 1
         25 00                 //   retain available 0
         27 00 01 00 00        //   maximum packet size 65536
         12 00 02 69 64        //   assigned client identifier \"id\"
         22 00 05              //   topic alias maximum 5
         1F 00 02 6F 6B        //   reason string \"ok\"
         26 00 01 61 00 01 62  //   user property a=b
         28 01                 //   wildcard subscription available 1
         29 00                 //   subscription identifiers available 0
         2A 01                 //   shared subscription available 1
         13 00 1E              //   server keep alive 30
         1A 00 02 72 69        //   response information \"ri\"
         1C 00 02 73 72        //   server reference \"sr\"
         15 00 01 6D           //   authentication method \"m\"
         16 00 01 07           //   authentication data 07",
        Packet::Connack(Connack {
            session_present: false,
            reason_code: ReasonCode::Success,
            properties: ConnackProperties {
                session_expiry_interval: Some(120),
                receive_maximum: NonZeroU16::new(10),
                maximum_qos: Some(QoS::AtLeastOnce),
                retain_available: Some(false),
                maximum_packet_size: NonZeroU32::new(65536),
                assigned_client_identifier: Some(s("id")),
                topic_alias_maximum: Some(5),
                reason_string: Some(s("ok")),
                user_properties: vec![up("a", "b")],
                wildcard_subscription_available: Some(true),
                subscription_identifier_available: Some(false),
                shared_subscription_available: Some(true),
                server_keep_alive: Some(30),
                response_information: Some(s("ri")),
                server_reference: Some(s("sr")),
                authentication_method: Some(s("m")),
                authentication_data: Some(b(&[7])),
            },
        }),
    ));
    out.push(v(
        "5.0 CONNACK unsupported protocol version",
        V5,
        "5.0 §3.2.2.2 (reason code 0x84)",
        "20 03 00 84 00",
        Packet::Connack(Connack {
            session_present: false,
            reason_code: ReasonCode::UnsupportedProtocolVersion,
            properties: ConnackProperties::default(),
        }),
    ));
    out.push(v(
        "5.0 CONNACK session present",
        V5,
        "5.0 §3.2.2.1.1",
        "20 03 01 00 00",
        Packet::Connack(Connack {
            session_present: true,
            reason_code: ReasonCode::Success,
            properties: ConnackProperties::default(),
        }),
    ));

    out.push(v(
        "5.0 PUBLISH QoS 0",
        V5,
        "5.0 §3.3 (Figure 3-9), property length 0",
        "30 08                 // PUBLISH QoS 0
         00 03 61 2F 62        // topic \"a/b\"
         00                    // property length 0
         68 69                 // payload \"hi\"",
        Packet::Publish(Publish::new(s("a/b"), b(b"hi"))),
    ));
    out.push(v(
        "5.0 PUBLISH QoS 1 without properties",
        V5,
        "5.0 §3.3.2.3 spec example variable header (a/b, packet id 10, property length 0)",
        "32 0A 00 03 61 2F 62 00 0A 00 68 69",
        Packet::Publish(Publish {
            qos: QoS::AtLeastOnce,
            packet_id: Some(pid(10)),
            ..Publish::new(s("a/b"), b(b"hi"))
        }),
    ));
    out.push(v(
        "5.0 PUBLISH QoS 1 with every PUBLISH property",
        V5,
        "5.0 §3.3.2.3 (properties), §1.5.5 (subscription identifier varint)",
        "32 40                 // PUBLISH QoS 1, remaining length 64
         00 03 61 2F 62        // topic \"a/b\"
         00 0A                 // packet id 10
         36                    // property length 54
         01 01                 //   payload format indicator UTF-8
         02 00 00 0E 10        //   message expiry interval 3600
         23 00 03              //   topic alias 3
         08 00 03 72 2F 74     //   response topic \"r/t\"
         09 00 03 01 02 03     //   correlation data 01 02 03
         26 00 01 61 00 01 31  //   user property a=1
         26 00 01 61 00 01 32  //   user property a=2 (same name again, order kept)
         0B 01                 //   subscription identifier 1
         0B AC 02              //   subscription identifier 300
         03 00 0A 74 65 78 74 2F 70 6C 61 69 6E  // content type \"text/plain\"
         68 69                 // payload \"hi\"",
        Packet::Publish(Publish {
            qos: QoS::AtLeastOnce,
            packet_id: Some(pid(10)),
            properties: PublishProperties {
                payload_format_indicator: Some(PayloadFormat::Utf8),
                message_expiry_interval: Some(3600),
                topic_alias: NonZeroU16::new(3),
                response_topic: Some(s("r/t")),
                correlation_data: Some(b(&[1, 2, 3])),
                user_properties: vec![up("a", "1"), up("a", "2")],
                subscription_identifiers: vec![
                    NonZeroU32::new(1).expect("1"),
                    NonZeroU32::new(300).expect("300"),
                ],
                content_type: Some(s("text/plain")),
            },
            ..Publish::new(s("a/b"), b(b"hi"))
        }),
    ));
    out.push(v(
        "5.0 PUBLISH QoS 2 with a topic alias instead of a topic",
        V5,
        "5.0 §3.3.2.1 (zero-length topic name with topic alias), §3.3.2.3.4",
        "34 0A                 // PUBLISH QoS 2
         00 00                 // topic \"\" (alias in use)
         00 01                 // packet id 1
         03 23 00 01           // property length 3: topic alias 1
         00 FF                 // payload",
        Packet::Publish(Publish {
            qos: QoS::ExactlyOnce,
            packet_id: Some(pid(1)),
            properties: PublishProperties {
                topic_alias: NonZeroU16::new(1),
                ..PublishProperties::default()
            },
            ..Publish::new(MqttString::new(), b(&[0x00, 0xFF]))
        }),
    ));

    out.push(v(
        "5.0 PUBACK short form (remaining length 2)",
        V5,
        "5.0 §3.4.2.1 (reason code and property length omitted for Success)",
        "40 02 00 0A",
        Packet::PubAck(PublishResponse::new(pid(10))),
    ));
    out.push(v(
        "5.0 PUBACK reason code only (remaining length 3)",
        V5,
        "5.0 §3.4.2.2.1 (remaining length < 4: no property length)",
        "40 03 00 0A 10        // No matching subscribers",
        Packet::PubAck(response(
            10,
            ReasonCode::NoMatchingSubscribers,
            AckProperties::default(),
        )),
    ));
    out.push(v(
        "5.0 PUBACK with reason code and reason string",
        V5,
        "5.0 §3.4.2 (Figure 3-12), §3.4.2.2.2",
        "40 0A 00 0A           // PUBACK, packet id 10
         87                    // Not authorized
         06 1F 00 03 62 61 64  // property length 6: reason string \"bad\"",
        Packet::PubAck(response(
            10,
            ReasonCode::NotAuthorized,
            reason_string("bad"),
        )),
    ));
    out.push(v(
        "5.0 PUBACK Success with a user property",
        V5,
        "5.0 §3.4.2.2.3 (properties force the long form even for Success)",
        "40 0B 00 0A 00 07 26 00 01 6B 00 01 76",
        Packet::PubAck(response(
            10,
            ReasonCode::Success,
            AckProperties {
                reason_string: None,
                user_properties: vec![up("k", "v")],
            },
        )),
    ));
    out.push(Vector {
        decode_only: true,
        ..v(
            "5.0 PUBACK long form of Success without properties",
            V5,
            "5.0 §3.4.2.2.1 (a property length of 0 may be sent; we encode the short form)",
            "40 04 00 0A 00 00",
            Packet::PubAck(PublishResponse::new(pid(10))),
        )
    });
    out.push(v(
        "5.0 PUBREC short form",
        V5,
        "5.0 §3.5.2.1",
        "50 02 00 0B",
        Packet::PubRec(PublishResponse::new(pid(11))),
    ));
    out.push(v(
        "5.0 PUBREC reason code only",
        V5,
        "5.0 §3.5.2.1 (0x80 Unspecified error)",
        "50 03 00 0B 80",
        Packet::PubRec(response(
            11,
            ReasonCode::UnspecifiedError,
            AckProperties::default(),
        )),
    ));
    out.push(v(
        "5.0 PUBREL short form",
        V5,
        "5.0 §3.6 (flags 0010), §3.6.2.1",
        "62 02 00 0C",
        Packet::PubRel(PublishResponse::new(pid(12))),
    ));
    out.push(v(
        "5.0 PUBREL packet identifier not found",
        V5,
        "5.0 §3.6.2.1 (0x92)",
        "62 03 00 0C 92",
        Packet::PubRel(response(
            12,
            ReasonCode::PacketIdentifierNotFound,
            AckProperties::default(),
        )),
    ));
    out.push(v(
        "5.0 PUBCOMP short form",
        V5,
        "5.0 §3.7.2.1",
        "70 02 00 0D",
        Packet::PubComp(PublishResponse::new(pid(13))),
    ));
    out.push(v(
        "5.0 PUBCOMP with reason code and reason string",
        V5,
        "5.0 §3.7.2",
        "70 08 00 0D 92 04 1F 00 01 78",
        Packet::PubComp(response(
            13,
            ReasonCode::PacketIdentifierNotFound,
            reason_string("x"),
        )),
    ));

    out.push(v(
        "5.0 SUBSCRIBE with subscription identifier, user property and all options",
        V5,
        "5.0 §3.8.2.1 (properties), §3.8.3.1 (Figure 3-21 options byte), §4.8.2 ($share)",
        "82 22                 // SUBSCRIBE, remaining length 34
         00 0A                 // packet id 10
         0C                    // property length 12
         0B FF FF FF 7F        //   subscription identifier 268,435,455
         26 00 01 6B 00 01 76  //   user property k=v
         00 03 61 2F 2B        // \"a/+\"
         2D                    //   QoS 1, no local, retain as published, retain handling 2
         00 0A 24 73 68 61 72 65 2F 67 2F 23  // \"$share/g/#\"
         12                    //   QoS 2, retain handling 1",
        Packet::Subscribe(Subscribe {
            packet_id: pid(10),
            properties: SubscribeProperties {
                subscription_identifier: NonZeroU32::new(268_435_455),
                user_properties: vec![up("k", "v")],
            },
            subscriptions: vec![
                Subscription {
                    filter: s("a/+"),
                    options: SubscriptionOptions {
                        qos: QoS::AtLeastOnce,
                        no_local: true,
                        retain_as_published: true,
                        retain_handling: RetainHandling::DoNotSend,
                    },
                },
                Subscription {
                    filter: s("$share/g/#"),
                    options: SubscriptionOptions {
                        qos: QoS::ExactlyOnce,
                        no_local: false,
                        retain_as_published: false,
                        retain_handling: RetainHandling::SendAtSubscribeIfNew,
                    },
                },
            ],
        }),
    ));
    out.push(v(
        "5.0 SUBACK with reason string",
        V5,
        "5.0 §3.9 (Figure 3-25), §3.9.3",
        "90 0A 00 0A           // SUBACK, packet id 10
         04 1F 00 01 72        // property length 4: reason string \"r\"
         01 8F A2              // Granted QoS 1, Topic Filter invalid, Wildcards not supported",
        Packet::SubAck(SubAck {
            packet_id: pid(10),
            properties: reason_string("r"),
            reason_codes: vec![
                ReasonCode::GrantedQos1,
                ReasonCode::TopicFilterInvalid,
                ReasonCode::WildcardSubscriptionsNotSupported,
            ],
        }),
    ));
    out.push(v(
        "5.0 SUBACK minimal",
        V5,
        "5.0 §3.9.2",
        "90 04 00 0A 00 00",
        Packet::SubAck(SubAck {
            packet_id: pid(10),
            properties: AckProperties::default(),
            reason_codes: vec![ReasonCode::GRANTED_QOS_0],
        }),
    ));
    out.push(v(
        "5.0 UNSUBSCRIBE with user property and a shared filter",
        V5,
        "5.0 §3.10 (Figure 3-28), §3.10.3",
        "A2 1D 00 0B           // UNSUBSCRIBE, packet id 11
         07 26 00 01 6B 00 01 76  // property length 7: user property k=v
         00 03 61 2F 62        // \"a/b\"
         00 0C 24 73 68 61 72 65 2F 67 2F 63 2F 23  // \"$share/g/c/#\"",
        Packet::Unsubscribe(Unsubscribe {
            packet_id: pid(11),
            properties: UnsubscribeProperties {
                user_properties: vec![up("k", "v")],
            },
            filters: vec![s("a/b"), s("$share/g/c/#")],
        }),
    ));
    out.push(v(
        "5.0 UNSUBACK",
        V5,
        "5.0 §3.11 (Figure 3-31), §3.11.3",
        "B0 06 00 0B 00 00 11 87  // Success, No subscription existed, Not authorized",
        Packet::UnsubAck(UnsubAck {
            packet_id: pid(11),
            properties: AckProperties::default(),
            reason_codes: vec![
                ReasonCode::Success,
                ReasonCode::NoSubscriptionExisted,
                ReasonCode::NotAuthorized,
            ],
        }),
    ));
    out.push(v("5.0 PINGREQ", V5, "5.0 §3.12", "C0 00", Packet::PingReq));
    out.push(v(
        "5.0 PINGRESP",
        V5,
        "5.0 §3.13",
        "D0 00",
        Packet::PingResp,
    ));
    out.push(v(
        "5.0 DISCONNECT short form (remaining length 0)",
        V5,
        "5.0 §3.14.2.1 (reason code omitted for Normal disconnection)",
        "E0 00",
        Packet::Disconnect(Disconnect::default()),
    ));
    out.push(v(
        "5.0 DISCONNECT reason code only",
        V5,
        "5.0 §3.14.2.2.1 (remaining length < 2: no property length)",
        "E0 01 8B              // Server shutting down",
        Packet::Disconnect(Disconnect {
            reason_code: ReasonCode::ServerShuttingDown,
            properties: DisconnectProperties::default(),
        }),
    ));
    out.push(v(
        "5.0 DISCONNECT with reason code and every DISCONNECT property",
        V5,
        "5.0 §3.14.2 (Figure 3-33), §3.14.2.2",
        "E0 19                 // DISCONNECT, remaining length 25
         04                    // Disconnect with Will Message
         17                    // property length 23
         11 00 00 00 00        //   session expiry interval 0
         1F 00 03 62 79 65     //   reason string \"bye\"
         26 00 01 6B 00 01 76  //   user property k=v
         1C 00 02 73 32        //   server reference \"s2\"",
        Packet::Disconnect(Disconnect {
            reason_code: ReasonCode::DisconnectWithWillMessage,
            properties: DisconnectProperties {
                session_expiry_interval: Some(0),
                reason_string: Some(s("bye")),
                user_properties: vec![up("k", "v")],
                server_reference: Some(s("s2")),
            },
        }),
    ));
    out.push(v(
        "5.0 AUTH short form",
        V5,
        "5.0 §3.15.2.1 (remaining length 0 means Success, no properties)",
        "F0 00",
        Packet::Auth(Auth::default()),
    ));
    out.push(v(
        "5.0 AUTH reason code only",
        V5,
        "5.0 §3.15.2.2.1",
        "F0 01 19              // Re-authenticate",
        Packet::Auth(Auth {
            reason_code: ReasonCode::ReAuthenticate,
            properties: AuthProperties::default(),
        }),
    ));
    out.push(v(
        "5.0 AUTH continue with every AUTH property",
        V5,
        "5.0 §3.15 (Figure 3-35), §3.15.2.2",
        "F0 21                 // AUTH, remaining length 33
         18                    // Continue authentication
         1F                    // property length 31
         15 00 0B 53 43 52 41 4D 2D 53 48 41 2D 31  // authentication method \"SCRAM-SHA-1\"
         16 00 03 61 62 63     //   authentication data \"abc\"
         1F 00 01 72           //   reason string \"r\"
         26 00 01 6B 00 01 76  //   user property k=v",
        Packet::Auth(Auth {
            reason_code: ReasonCode::ContinueAuthentication,
            properties: AuthProperties {
                authentication_method: Some(s("SCRAM-SHA-1")),
                authentication_data: Some(b(b"abc")),
                reason_string: Some(s("r")),
                user_properties: vec![up("k", "v")],
            },
        }),
    ));
    out.extend(captured());
    out
}

/// Packets captured from third-party peers on 127.0.0.1: the Debian 12 builds of Eclipse
/// Mosquitto 2.0.11 (`mosquitto_pub`/`mosquitto_sub` talking to a recording stub, and the
/// `mosquitto` broker answering a raw socket). Byte strings are as captured; the commands are
/// in each vector's source. `decode_only` marks captures whose properties Mosquitto orders
/// differently from our encoder (order has no meaning, §2.2.2.2).
fn captured() -> Vec<Vector> {
    use ProtocolVersion::{V311, V5};
    let cap = |name, version, source, bytes: &str, packet, decode_only| Vector {
        name,
        version,
        bytes: hex(bytes),
        packet,
        source,
        decode_only,
    };
    const PUB311: &str = "mosquitto_pub -V mqttv311 -i pub311 -u user -P pass --will-topic w/t \
        --will-payload bye --will-qos 1 -t a/b -m hi -q 1";
    const PUB5: &str = "mosquitto_pub -V mqttv5 -i pub5 -u user -P pass --will-topic w/t \
        --will-payload bye --will-qos 2 --will-retain -t a/b -m hi -q 2 \
        -D connect session-expiry-interval 60 -D connect receive-maximum 20 \
        -D connect user-property k v -D will will-delay-interval 5 -D will content-type text \
        -D publish user-property a 1 -D publish content-type text/plain \
        -D publish message-expiry-interval 3600 -D publish response-topic r/t \
        -D publish correlation-data abc -D publish payload-format-indicator 1";
    const SUB311: &str = "mosquitto_sub -V mqttv311 -i sub311 -t a/b -t 'c/#' -q 1 -E";
    const SUB5: &str = "mosquitto_sub -V mqttv5 -i sub5 -t 'a/+' -t '$share/g/x/#' -q 2 -E \
        -D subscribe subscription-identifier 7 -D subscribe user-property k v";
    const UNSUB5: &str = "mosquitto_sub -V mqttv5 -i unsub5 -t a/b -U a/b -U '$share/g/c' -E \
        -D unsubscribe user-property k v";
    const BROKER: &str = "mosquitto 2.0.11 broker answering a raw-socket client";
    let mut pub311 = Connect::new(V311, s("pub311"), 60);
    pub311.will = Some(Will {
        topic: s("w/t"),
        payload: b(b"bye"),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: WillProperties::default(),
    });
    pub311.username = Some(s("user"));
    pub311.password = Some(b(b"pass"));
    let mut pub5 = Connect::new(V5, s("pub5"), 60);
    pub5.will = Some(Will {
        topic: s("w/t"),
        payload: b(b"bye"),
        qos: QoS::ExactlyOnce,
        retain: true,
        properties: WillProperties {
            will_delay_interval: Some(5),
            content_type: Some(s("text")),
            ..WillProperties::default()
        },
    });
    pub5.username = Some(s("user"));
    pub5.password = Some(b(b"pass"));
    pub5.properties = ConnectProperties {
        session_expiry_interval: Some(60),
        receive_maximum: NonZeroU16::new(20),
        user_properties: vec![up("k", "v")],
        ..ConnectProperties::default()
    };
    vec![
        cap(
            "mosquitto_pub 3.1.1 CONNECT with will and credentials",
            V311,
            PUB311,
            "102800044d51545404ce003c00067075623331310003772f740003627965000475736572000470617373",
            Packet::Connect(Box::new(pub311)),
            false,
        ),
        cap(
            "mosquitto_pub 3.1.1 PUBLISH QoS 1",
            V311,
            PUB311,
            "32090003612f6200016869",
            Packet::Publish(Publish {
                qos: QoS::AtLeastOnce,
                packet_id: Some(pid(1)),
                ..Publish::new(s("a/b"), b(b"hi"))
            }),
            false,
        ),
        cap(
            "mosquitto_pub 5.0 CONNECT with will properties and CONNECT properties",
            V5,
            PUB5,
            "104300044d51545405f6003c0f110000003c2100142600016b0001760004707562350c18000000050300\
             04746578740003772f740003627965000475736572000470617373",
            Packet::Connect(Box::new(pub5)),
            false,
        ),
        cap(
            "mosquitto_pub 5.0 PUBLISH QoS 2 with properties",
            V5,
            PUB5,
            "34310003612f620001272600016100013103000a746578742f706c61696e0200000e10080003722f74\
             09000361626301016869",
            Packet::Publish(Publish {
                qos: QoS::ExactlyOnce,
                packet_id: Some(pid(1)),
                properties: PublishProperties {
                    payload_format_indicator: Some(PayloadFormat::Utf8),
                    message_expiry_interval: Some(3600),
                    response_topic: Some(s("r/t")),
                    correlation_data: Some(b(b"abc")),
                    user_properties: vec![up("a", "1")],
                    content_type: Some(s("text/plain")),
                    ..PublishProperties::default()
                },
                ..Publish::new(s("a/b"), b(b"hi"))
            }),
            true,
        ),
        cap(
            "mosquitto_pub 5.0 PUBREL",
            V5,
            PUB5,
            "62020001",
            Packet::PubRel(PublishResponse::new(pid(1))),
            false,
        ),
        cap(
            "mosquitto_sub 3.1.1 SUBSCRIBE",
            V311,
            SUB311,
            "820e00010003612f62010003632f2301",
            Packet::Subscribe(Subscribe {
                packet_id: pid(1),
                properties: SubscribeProperties::default(),
                subscriptions: vec![
                    Subscription {
                        filter: s("a/b"),
                        options: SubscriptionOptions::qos(QoS::AtLeastOnce),
                    },
                    Subscription {
                        filter: s("c/#"),
                        options: SubscriptionOptions::qos(QoS::AtLeastOnce),
                    },
                ],
            }),
            false,
        ),
        cap(
            "mosquitto_sub 5.0 SUBSCRIBE with subscription identifier and shared filter",
            V5,
            SUB5,
            "82210001090b072600016b0001760003612f2b02000c2473686172652f672f782f2302",
            Packet::Subscribe(Subscribe {
                packet_id: pid(1),
                properties: SubscribeProperties {
                    subscription_identifier: NonZeroU32::new(7),
                    user_properties: vec![up("k", "v")],
                },
                subscriptions: vec![
                    Subscription {
                        filter: s("a/+"),
                        options: SubscriptionOptions::qos(QoS::ExactlyOnce),
                    },
                    Subscription {
                        filter: s("$share/g/x/#"),
                        options: SubscriptionOptions::qos(QoS::ExactlyOnce),
                    },
                ],
            }),
            false,
        ),
        cap(
            "mosquitto_sub 5.0 UNSUBSCRIBE of a shared filter",
            V5,
            UNSUB5,
            "a2160003072600016b000176000a2473686172652f672f63",
            Packet::Unsubscribe(Unsubscribe {
                packet_id: pid(3),
                properties: UnsubscribeProperties {
                    user_properties: vec![up("k", "v")],
                },
                filters: vec![s("$share/g/c")],
            }),
            false,
        ),
        cap(
            "mosquitto 5.0 CONNACK assigning a client identifier",
            V5,
            BROKER,
            "203500003222000a1200296175746f2d34363037463342462d333738442d453044362d413134342d42\
             3741423137433443443438210014",
            Packet::Connack(Connack {
                session_present: false,
                reason_code: ReasonCode::Success,
                properties: ConnackProperties {
                    topic_alias_maximum: Some(10),
                    assigned_client_identifier: Some(s(
                        "auto-4607F3BF-378D-E0D6-A144-B7AB17C4CD48",
                    )),
                    receive_maximum: NonZeroU16::new(20),
                    ..ConnackProperties::default()
                },
            }),
            true,
        ),
        cap(
            "mosquitto 5.0 SUBACK",
            V5,
            BROKER,
            "900400010002",
            Packet::SubAck(SubAck {
                packet_id: pid(1),
                properties: AckProperties::default(),
                reason_codes: vec![ReasonCode::GrantedQos2],
            }),
            false,
        ),
        cap(
            "mosquitto 5.0 UNSUBACK no subscription existed",
            V5,
            BROKER,
            "b00400060011",
            Packet::UnsubAck(UnsubAck {
                packet_id: pid(6),
                properties: AckProperties::default(),
                reason_codes: vec![ReasonCode::NoSubscriptionExisted],
            }),
            false,
        ),
        cap(
            "mosquitto 5.0 DISCONNECT after a SUBSCRIBE with QoS 3",
            V5,
            BROKER,
            "e00181",
            Packet::Disconnect(Disconnect {
                reason_code: ReasonCode::MalformedPacket,
                properties: DisconnectProperties::default(),
            }),
            false,
        ),
        cap(
            "mosquitto 3.1.1 SUBACK",
            V311,
            BROKER,
            "900400010102",
            Packet::SubAck(SubAck {
                packet_id: pid(1),
                properties: AckProperties::default(),
                reason_codes: vec![ReasonCode::GrantedQos1, ReasonCode::GrantedQos2],
            }),
            false,
        ),
        cap(
            "mosquitto 3.1.1 CONNACK for protocol level 6",
            V311,
            BROKER,
            "20020001",
            Packet::Connack(Connack {
                session_present: false,
                reason_code: ReasonCode::UnsupportedProtocolVersion,
                properties: ConnackProperties::default(),
            }),
            false,
        ),
        cap(
            "mosquitto 3.1.1 UNSUBACK",
            V311,
            BROKER,
            "b0020003",
            Packet::UnsubAck(UnsubAck {
                packet_id: pid(3),
                properties: AckProperties::default(),
                reason_codes: vec![],
            }),
            false,
        ),
    ]
}
