//! Round trips of generated packets (a small deterministic PRNG, no proptest), the encoder's
//! refusals, and how 5.0 packets are projected onto 3.1.1.

mod common;

use std::num::{NonZeroU16, NonZeroU32};

use bytes::Bytes;
use common::{b, pid, s, MAX};
use ironplant_mqtt::codec::*;
use ironplant_mqtt::topic::{validate_topic_filter, validate_topic_name, TopicError};

use ProtocolVersion::{V311, V5};

/// xorshift64*: deterministic and good enough to pick shapes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn coin(&mut self) -> bool {
        self.next() & 1 == 1
    }
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
    fn maybe<T>(&mut self, f: impl FnOnce(&mut Self) -> T) -> Option<T> {
        if self.coin() {
            Some(f(self))
        } else {
            None
        }
    }
    fn text(&mut self, max: usize) -> MqttString {
        // ASCII, 2-, 3- and 4-byte UTF-8, and characters MQTT treats specially.
        const CHARS: [&str; 12] = [
            "a", "Z", "0", "_", "-", " ", "/", "$", "é", "温", "🌡", "\u{7F}",
        ];
        let n = self.below(max + 1);
        let text: String = (0..n).map(|_| self.pick(&CHARS)).collect();
        s(&text)
    }
    fn level(&mut self) -> String {
        const CHARS: [&str; 8] = ["a", "b", "Z", "9", "_", "é", "温", "$"];
        let n = self.below(4);
        (0..n).map(|_| self.pick(&CHARS)).collect()
    }
    fn topic_name(&mut self) -> MqttString {
        loop {
            let levels: Vec<String> = (0..1 + self.below(4)).map(|_| self.level()).collect();
            let name = levels.join("/");
            if validate_topic_name(&name).is_ok() {
                return s(&name);
            }
        }
    }
    fn topic_filter(&mut self) -> MqttString {
        loop {
            let mut levels: Vec<String> = (0..1 + self.below(4))
                .map(|_| match self.below(5) {
                    0 => "+".to_string(),
                    _ => self.level(),
                })
                .collect();
            if self.below(4) == 0 {
                levels.push("#".to_string());
            }
            let mut filter = levels.join("/");
            if self.below(5) == 0 {
                filter = format!("$share/g{}/{filter}", self.below(10));
            }
            if validate_topic_filter(&filter).is_ok() {
                return s(&filter);
            }
        }
    }
    fn bytes(&mut self, max: usize) -> Bytes {
        let n = self.below(max + 1);
        (0..n)
            .map(|_| self.next() as u8)
            .collect::<Vec<u8>>()
            .into()
    }
    fn u16_nz(&mut self) -> NonZeroU16 {
        NonZeroU16::new(self.next() as u16).unwrap_or(NonZeroU16::MIN)
    }
    fn sub_id(&mut self) -> NonZeroU32 {
        let v = (self.next() % u64::from(VARINT_MAX)) as u32 + 1;
        NonZeroU32::new(v).unwrap_or(NonZeroU32::MIN)
    }
    fn user_properties(&mut self) -> Vec<UserProperty> {
        (0..self.below(3))
            .map(|_| (self.text(4), self.text(4)))
            .collect()
    }
    fn qos(&mut self) -> QoS {
        self.pick(&[QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce])
    }
    fn reason(&mut self, packet: PacketType) -> ReasonCode {
        let valid: Vec<ReasonCode> = ReasonCode::ALL
            .into_iter()
            .filter(|rc| rc.is_valid_for(packet))
            .collect();
        self.pick(&valid)
    }
    fn ack_properties(&mut self) -> AckProperties {
        AckProperties {
            reason_string: self.maybe(|r| r.text(8)),
            user_properties: self.user_properties(),
        }
    }
}

fn gen_packet(r: &mut Rng, version: ProtocolVersion) -> Packet {
    let v5 = version == V5;
    let types = if v5 { 15 } else { 14 };
    let t = PacketType::from_nibble(1 + r.below(types) as u8).expect("1-15");
    match t {
        PacketType::Connect => {
            let mut c = Connect::new(version, r.text(6), r.next() as u16);
            c.clean_start = r.coin();
            c.username = r.maybe(|r| r.text(6));
            if c.username.is_some() || v5 {
                c.password = r.maybe(|r| r.bytes(6));
            }
            c.will = r.maybe(|r| Will {
                topic: r.topic_name(),
                payload: r.bytes(10),
                qos: r.qos(),
                retain: r.coin(),
                properties: if v5 {
                    WillProperties {
                        will_delay_interval: r.maybe(|r| r.next() as u32),
                        payload_format_indicator: r
                            .maybe(|r| r.pick(&[PayloadFormat::Unspecified, PayloadFormat::Utf8])),
                        message_expiry_interval: r.maybe(|r| r.next() as u32),
                        content_type: r.maybe(|r| r.text(5)),
                        response_topic: r.maybe(|r| r.topic_name()),
                        correlation_data: r.maybe(|r| r.bytes(5)),
                        user_properties: r.user_properties(),
                    }
                } else {
                    WillProperties::default()
                },
            });
            if v5 {
                let method = r.maybe(|r| r.text(5));
                c.properties = ConnectProperties {
                    session_expiry_interval: r.maybe(|r| r.next() as u32),
                    receive_maximum: r.maybe(|r| r.u16_nz()),
                    maximum_packet_size: r
                        .maybe(|r| NonZeroU32::new(r.next() as u32).unwrap_or(NonZeroU32::MIN)),
                    topic_alias_maximum: r.maybe(|r| r.next() as u16),
                    request_response_information: r.maybe(|r| r.coin()),
                    request_problem_information: r.maybe(|r| r.coin()),
                    user_properties: r.user_properties(),
                    authentication_data: method.as_ref().and_then(|_| r.maybe(|r| r.bytes(8))),
                    authentication_method: method,
                };
            }
            Packet::Connect(Box::new(c))
        }
        PacketType::Connack => {
            let reason_code = if v5 {
                r.reason(t)
            } else {
                ReasonCode::from_v311_connack(r.below(6) as u8).expect("0-5")
            };
            let properties = if v5 {
                let method = r.maybe(|r| r.text(5));
                ConnackProperties {
                    session_expiry_interval: r.maybe(|r| r.next() as u32),
                    receive_maximum: r.maybe(|r| r.u16_nz()),
                    maximum_qos: r.maybe(|r| r.pick(&[QoS::AtMostOnce, QoS::AtLeastOnce])),
                    retain_available: r.maybe(|r| r.coin()),
                    maximum_packet_size: r.maybe(|r| r.sub_id()),
                    assigned_client_identifier: r.maybe(|r| r.text(8)),
                    topic_alias_maximum: r.maybe(|r| r.next() as u16),
                    reason_string: r.maybe(|r| r.text(8)),
                    user_properties: r.user_properties(),
                    wildcard_subscription_available: r.maybe(|r| r.coin()),
                    subscription_identifier_available: r.maybe(|r| r.coin()),
                    shared_subscription_available: r.maybe(|r| r.coin()),
                    server_keep_alive: r.maybe(|r| r.next() as u16),
                    response_information: r.maybe(|r| r.text(8)),
                    server_reference: r.maybe(|r| r.text(8)),
                    authentication_data: method.as_ref().and_then(|_| r.maybe(|r| r.bytes(8))),
                    authentication_method: method,
                }
            } else {
                ConnackProperties::default()
            };
            Packet::Connack(Connack {
                session_present: !reason_code.is_error() && r.coin(),
                reason_code,
                properties,
            })
        }
        PacketType::Publish => {
            let qos = r.qos();
            let mut properties = PublishProperties::default();
            if v5 {
                properties = PublishProperties {
                    payload_format_indicator: r
                        .maybe(|r| r.pick(&[PayloadFormat::Unspecified, PayloadFormat::Utf8])),
                    message_expiry_interval: r.maybe(|r| r.next() as u32),
                    topic_alias: r.maybe(|r| r.u16_nz()),
                    response_topic: r.maybe(|r| r.topic_name()),
                    correlation_data: r.maybe(|r| r.bytes(6)),
                    user_properties: r.user_properties(),
                    subscription_identifiers: (0..r.below(3)).map(|_| r.sub_id()).collect(),
                    content_type: r.maybe(|r| r.text(6)),
                };
            }
            let topic = if properties.topic_alias.is_some() && r.coin() {
                MqttString::new()
            } else {
                r.topic_name()
            };
            Packet::Publish(Publish {
                dup: qos != QoS::AtMostOnce && r.coin(),
                qos,
                retain: r.coin(),
                topic,
                packet_id: (qos != QoS::AtMostOnce).then(|| r.u16_nz()),
                properties,
                payload: {
                    let max = if r.below(10) == 0 { 300 } else { 20 };
                    r.bytes(max)
                },
            })
        }
        PacketType::PubAck | PacketType::PubRec | PacketType::PubRel | PacketType::PubComp => {
            let resp = PublishResponse {
                packet_id: r.u16_nz(),
                reason_code: if v5 { r.reason(t) } else { ReasonCode::Success },
                properties: if v5 {
                    r.ack_properties()
                } else {
                    AckProperties::default()
                },
            };
            match t {
                PacketType::PubAck => Packet::PubAck(resp),
                PacketType::PubRec => Packet::PubRec(resp),
                PacketType::PubRel => Packet::PubRel(resp),
                _ => Packet::PubComp(resp),
            }
        }
        PacketType::Subscribe => Packet::Subscribe(Subscribe {
            packet_id: r.u16_nz(),
            properties: if v5 {
                SubscribeProperties {
                    subscription_identifier: r.maybe(|r| r.sub_id()),
                    user_properties: r.user_properties(),
                }
            } else {
                SubscribeProperties::default()
            },
            subscriptions: (0..1 + r.below(3))
                .map(|_| {
                    let filter = r.topic_filter();
                    let mut options = SubscriptionOptions::qos(r.qos());
                    if v5 {
                        options.no_local = !filter.starts_with("$share/") && r.coin();
                        options.retain_as_published = r.coin();
                        options.retain_handling = r.pick(&[
                            RetainHandling::SendAtSubscribe,
                            RetainHandling::SendAtSubscribeIfNew,
                            RetainHandling::DoNotSend,
                        ]);
                    }
                    Subscription { filter, options }
                })
                .collect(),
        }),
        PacketType::SubAck => Packet::SubAck(SubAck {
            packet_id: r.u16_nz(),
            properties: if v5 {
                r.ack_properties()
            } else {
                AckProperties::default()
            },
            reason_codes: (0..1 + r.below(4))
                .map(|_| {
                    if v5 {
                        r.reason(t)
                    } else {
                        r.pick(&[
                            ReasonCode::GRANTED_QOS_0,
                            ReasonCode::GrantedQos1,
                            ReasonCode::GrantedQos2,
                            ReasonCode::UnspecifiedError,
                        ])
                    }
                })
                .collect(),
        }),
        PacketType::Unsubscribe => Packet::Unsubscribe(Unsubscribe {
            packet_id: r.u16_nz(),
            properties: UnsubscribeProperties {
                user_properties: if v5 { r.user_properties() } else { vec![] },
            },
            filters: (0..1 + r.below(3)).map(|_| r.topic_filter()).collect(),
        }),
        PacketType::UnsubAck => Packet::UnsubAck(UnsubAck {
            packet_id: r.u16_nz(),
            properties: if v5 {
                r.ack_properties()
            } else {
                AckProperties::default()
            },
            reason_codes: if v5 {
                (0..1 + r.below(4)).map(|_| r.reason(t)).collect()
            } else {
                vec![]
            },
        }),
        PacketType::PingReq => Packet::PingReq,
        PacketType::PingResp => Packet::PingResp,
        PacketType::Disconnect => Packet::Disconnect(if v5 {
            Disconnect {
                reason_code: r.reason(t),
                properties: DisconnectProperties {
                    session_expiry_interval: r.maybe(|r| r.next() as u32),
                    reason_string: r.maybe(|r| r.text(8)),
                    user_properties: r.user_properties(),
                    server_reference: r.maybe(|r| r.text(8)),
                },
            }
        } else {
            Disconnect::default()
        }),
        PacketType::Auth => {
            let method = r.maybe(|r| r.text(5));
            Packet::Auth(Auth {
                reason_code: r.reason(t),
                properties: AuthProperties {
                    authentication_data: method.as_ref().and_then(|_| r.maybe(|r| r.bytes(8))),
                    authentication_method: method,
                    reason_string: r.maybe(|r| r.text(8)),
                    user_properties: r.user_properties(),
                },
            })
        }
    }
}

#[test]
fn generated_packets_round_trip_in_both_versions() {
    let mut r = Rng(0x00C0_FFEE_D00D_F00D);
    for version in [V311, V5] {
        let mut seen = std::collections::HashSet::new();
        for i in 0..4000 {
            let p = gen_packet(&mut r, version);
            seen.insert(p.packet_type());
            let mut out = Vec::new();
            encode(&p, version, &mut out).unwrap_or_else(|e| panic!("{p:?}: {e}"));
            assert_eq!(encoded_len(&p, version), Ok(out.len()));
            assert_eq!(
                decode(&out, version, MAX),
                Ok(Some((p.clone(), out.len()))),
                "{out:02X?}"
            );
            let bytes = Bytes::from(out.clone());
            assert_eq!(
                decode_bytes(&bytes, version, MAX),
                Ok(Some((p.clone(), out.len())))
            );
            // Streaming: every prefix asks for more (checked on a sample to keep it fast).
            if i % 16 == 0 {
                for cut in 0..out.len() {
                    assert_eq!(
                        decode(&out[..cut], version, MAX),
                        Ok(None),
                        "{p:?} at {cut}"
                    );
                }
            }
            // Appending to a non-empty buffer writes the same bytes after it.
            let mut appended = vec![0xAA];
            encode(&p, version, &mut appended).expect("encodes");
            assert_eq!(appended[1..], out[..]);
        }
        assert_eq!(seen.len(), if version == V5 { 15 } else { 14 }, "{version}");
    }
}

#[test]
fn projecting_5_0_packets_onto_3_1_1_is_stable() {
    // Whatever the 3.1.1 encoder accepts from a 5.0 packet decodes as 3.1.1 and re-encodes to
    // the same bytes; whatever it refuses is refused as not expressible in 3.1.1.
    let mut r = Rng(42);
    let (mut ok, mut refused) = (0, 0);
    for _ in 0..4000 {
        let p = gen_packet(&mut r, V5);
        let mut out = Vec::new();
        match encode(&p, V311, &mut out) {
            Ok(()) => {
                ok += 1;
                let (p3, _) = decode(&out, V311, MAX)
                    .unwrap_or_else(|e| panic!("{p:?} as 3.1.1 does not decode: {e}"))
                    .expect("complete");
                let mut again = Vec::new();
                encode(&p3, V311, &mut again).expect("re-encodes");
                assert_eq!(again, out, "{p:?}");
            }
            Err(e) => {
                refused += 1;
                assert!(out.is_empty(), "nothing is written on error");
                assert!(
                    matches!(
                        e,
                        EncodeError::NotInV311 { .. }
                            | EncodeError::InvalidTopicName(TopicError::Empty)
                    ),
                    "{p:?}: {e}"
                );
            }
        }
    }
    assert!(ok > 1000 && refused > 100, "{ok} ok, {refused} refused");
}

#[test]
fn properties_are_dropped_for_3_1_1() {
    let mut p = Publish::new(s("a/b"), b(b"hi"));
    p.properties.user_properties.push((s("k"), s("v")));
    p.properties.message_expiry_interval = Some(5);
    let mut out = Vec::new();
    encode(&Packet::Publish(p), V311, &mut out).expect("encodes");
    assert_eq!(out, [0x30, 0x07, 0x00, 0x03, b'a', b'/', b'b', b'h', b'i']);

    // Every 5.0 SUBACK failure becomes 3.1.1's single failure code.
    let suback = Packet::SubAck(SubAck {
        packet_id: pid(1),
        properties: AckProperties::default(),
        reason_codes: vec![ReasonCode::NotAuthorized, ReasonCode::GrantedQos2],
    });
    let mut out = Vec::new();
    encode(&suback, V311, &mut out).expect("encodes");
    assert_eq!(out, [0x90, 0x04, 0x00, 0x01, 0x80, 0x02]);

    // Success-class codes on acks need no 3.1.1 form.
    let mut puback = PublishResponse::new(pid(7));
    puback.reason_code = ReasonCode::NoMatchingSubscribers;
    let mut out = Vec::new();
    encode(&Packet::PubAck(puback), V311, &mut out).expect("encodes");
    assert_eq!(out, [0x40, 0x02, 0x00, 0x07]);
}

fn refuses(packet: Packet, version: ProtocolVersion, expected: EncodeError) {
    let mut out = vec![1, 2, 3];
    assert_eq!(encode(&packet, version, &mut out), Err(expected.clone()));
    assert_eq!(out, [1, 2, 3], "nothing appended on error");
    assert_eq!(encoded_len(&packet, version), Err(expected));
}

#[test]
fn the_encoder_refuses_what_the_decoder_would() {
    let publish = Publish::new(s("a/b"), Bytes::new());
    refuses(
        Packet::Publish(Publish {
            packet_id: Some(pid(1)),
            ..publish.clone()
        }),
        V5,
        EncodeError::PacketIdOnQos0,
    );
    refuses(
        Packet::Publish(Publish {
            qos: QoS::AtLeastOnce,
            ..publish.clone()
        }),
        V311,
        EncodeError::MissingPacketId {
            qos: QoS::AtLeastOnce,
        },
    );
    refuses(
        Packet::Publish(Publish {
            dup: true,
            ..publish.clone()
        }),
        V5,
        EncodeError::DupWithQos0,
    );
    refuses(
        Packet::Publish(Publish {
            topic: s("a/+"),
            ..publish.clone()
        }),
        V5,
        EncodeError::InvalidTopicName(TopicError::WildcardInName {
            wildcard: '+',
            at: 2,
        }),
    );
    refuses(
        Packet::Publish(Publish {
            topic: MqttString::new(),
            ..publish.clone()
        }),
        V5,
        EncodeError::MissingTopicName,
    );
    let mut with_bad_response_topic = publish.clone();
    with_bad_response_topic.properties.response_topic = Some(s("r/#"));
    refuses(
        Packet::Publish(with_bad_response_topic),
        V5,
        EncodeError::InvalidResponseTopic(TopicError::WildcardInName {
            wildcard: '#',
            at: 2,
        }),
    );
    refuses(
        Packet::Auth(Auth::default()),
        V311,
        EncodeError::NotInV311 { what: "AUTH" },
    );
    let mut failed = PublishResponse::new(pid(1));
    failed.reason_code = ReasonCode::NotAuthorized;
    refuses(
        Packet::PubAck(failed.clone()),
        V311,
        EncodeError::NotInV311 {
            what: "a failure reason code on PUBACK, PUBREC, PUBREL or PUBCOMP",
        },
    );
    refuses(
        Packet::PubRel(failed),
        V5,
        EncodeError::ReasonCodeNotAllowed {
            packet: PacketType::PubRel,
            code: ReasonCode::NotAuthorized,
        },
    );
    let mut c = Connect::new(V311, s("c"), 0);
    c.password = Some(b(b"p"));
    refuses(
        Packet::Connect(Box::new(c)),
        V311,
        EncodeError::NotInV311 {
            what: "a password without a user name",
        },
    );
    refuses(
        Packet::Connack(Connack {
            session_present: false,
            reason_code: ReasonCode::ServerBusy,
            properties: ConnackProperties::default(),
        }),
        V311,
        EncodeError::NotInV311 {
            what: "a CONNACK reason code without a 3.1.1 return code",
        },
    );
    refuses(
        Packet::Connack(Connack {
            session_present: true,
            reason_code: ReasonCode::NotAuthorized,
            properties: ConnackProperties::default(),
        }),
        V5,
        EncodeError::SessionPresentOnFailure,
    );
    let mut connack = ConnackProperties {
        maximum_qos: Some(QoS::ExactlyOnce),
        ..ConnackProperties::default()
    };
    refuses(
        Packet::Connack(Connack {
            session_present: false,
            reason_code: ReasonCode::Success,
            properties: connack.clone(),
        }),
        V5,
        EncodeError::InvalidPropertyValue {
            property: PropertyId::MaximumQos,
            value: 2,
        },
    );
    connack.maximum_qos = None;
    connack.authentication_data = Some(b(b"x"));
    refuses(
        Packet::Connack(Connack {
            session_present: false,
            reason_code: ReasonCode::Success,
            properties: connack,
        }),
        V5,
        EncodeError::AuthDataWithoutMethod {
            packet: PacketType::Connack,
        },
    );
    let subscribe = Subscribe {
        packet_id: pid(1),
        properties: SubscribeProperties::default(),
        subscriptions: vec![],
    };
    refuses(
        Packet::Subscribe(subscribe.clone()),
        V5,
        EncodeError::EmptyPayload {
            packet: PacketType::Subscribe,
        },
    );
    let sub = |filter: &str, options| Subscription {
        filter: s(filter),
        options,
    };
    refuses(
        Packet::Subscribe(Subscribe {
            subscriptions: vec![sub("a/#/b", SubscriptionOptions::default())],
            ..subscribe.clone()
        }),
        V5,
        EncodeError::InvalidTopicFilter(TopicError::MisplacedMultiLevelWildcard { at: 2 }),
    );
    let no_local = SubscriptionOptions {
        no_local: true,
        ..SubscriptionOptions::default()
    };
    refuses(
        Packet::Subscribe(Subscribe {
            subscriptions: vec![sub("a", no_local)],
            ..subscribe.clone()
        }),
        V311,
        EncodeError::NotInV311 {
            what: "subscription options other than QoS",
        },
    );
    refuses(
        Packet::Subscribe(Subscribe {
            subscriptions: vec![sub("$share/g/a", no_local)],
            ..subscribe.clone()
        }),
        V5,
        EncodeError::NoLocalOnSharedSubscription,
    );
    let mut big_id = subscribe;
    big_id.subscriptions = vec![sub("a", SubscriptionOptions::default())];
    big_id.properties.subscription_identifier = NonZeroU32::new(VARINT_MAX + 1);
    refuses(
        Packet::Subscribe(big_id),
        V5,
        EncodeError::InvalidPropertyValue {
            property: PropertyId::SubscriptionIdentifier,
            value: VARINT_MAX + 1,
        },
    );
    let mut will_connect = Connect::new(V5, s("c"), 0);
    will_connect.will = Some(Will {
        topic: s("w"),
        payload: Bytes::from(vec![0u8; 70_000]),
        qos: QoS::AtMostOnce,
        retain: false,
        properties: WillProperties::default(),
    });
    refuses(
        Packet::Connect(Box::new(will_connect)),
        V5,
        EncodeError::FieldTooLong {
            field: "Will Payload",
            len: 70_000,
        },
    );
    refuses(
        Packet::Disconnect(Disconnect {
            reason_code: ReasonCode::ServerShuttingDown,
            properties: DisconnectProperties::default(),
        }),
        V311,
        EncodeError::NotInV311 {
            what: "a DISCONNECT reason code",
        },
    );
}

#[test]
fn remaining_length_limit() {
    // One byte over the largest Remaining Length. `vec![0; n]` is calloc'd, so the pages
    // are never touched and the test stays cheap.
    let payload_len = VARINT_MAX as usize - 4; // topic "t" (3 bytes) + property length (1)
    let mut p = Publish::new(s("t"), Bytes::from(vec![0u8; payload_len]));
    assert_eq!(
        encoded_len(&Packet::Publish(p.clone()), V5),
        Ok(1 + 4 + VARINT_MAX as usize)
    );
    p.payload = Bytes::from(vec![0u8; payload_len + 1]);
    assert_eq!(
        encoded_len(&Packet::Publish(p), V5),
        Err(EncodeError::PacketTooLarge {
            remaining_length: VARINT_MAX as usize + 1
        })
    );
}

#[test]
fn mqtt_string_rules() {
    assert_eq!(
        MqttString::try_from("a\0b"),
        Err(StringError::NullCharacter)
    );
    assert_eq!(
        MqttString::try_from("x".repeat(65_536)),
        Err(StringError::TooLong { len: 65_536 })
    );
    assert!(MqttString::try_from("x".repeat(65_535)).is_ok());
    assert_eq!(
        MqttString::from_utf8(Bytes::from_static(&[0xC3, 0x28])),
        Err(StringError::InvalidUtf8)
    );
    let t = MqttString::from_static("sensors/温度");
    assert_eq!(t.as_str(), "sensors/温度");
    assert_eq!(t, "sensors/温度");
}
