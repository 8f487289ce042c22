//! Reason codes (MQTT 5.0 §2.4, Table 2-6) and their 3.1.1 counterparts.

use std::fmt;

use super::types::{PacketType, QoS};

/// A Reason Code with the spec's value. Values below 0x80 report success, 0x80 and above
/// failure. The spec gives 0x00 three names (Success, Normal disconnection, Granted QoS 0):
/// they are one variant here, with the other names as constants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[repr(u8)]
pub enum ReasonCode {
    /// 0x00 Success / Normal disconnection / Granted QoS 0.
    #[default]
    Success = 0x00,
    /// 0x01 Granted QoS 1.
    GrantedQos1 = 0x01,
    /// 0x02 Granted QoS 2.
    GrantedQos2 = 0x02,
    /// 0x04 Disconnect with Will Message.
    DisconnectWithWillMessage = 0x04,
    /// 0x10 No matching subscribers.
    NoMatchingSubscribers = 0x10,
    /// 0x11 No subscription existed.
    NoSubscriptionExisted = 0x11,
    /// 0x18 Continue authentication.
    ContinueAuthentication = 0x18,
    /// 0x19 Re-authenticate.
    ReAuthenticate = 0x19,
    /// 0x80 Unspecified error.
    UnspecifiedError = 0x80,
    /// 0x81 Malformed Packet.
    MalformedPacket = 0x81,
    /// 0x82 Protocol Error.
    ProtocolError = 0x82,
    /// 0x83 Implementation specific error.
    ImplementationSpecificError = 0x83,
    /// 0x84 Unsupported Protocol Version.
    UnsupportedProtocolVersion = 0x84,
    /// 0x85 Client Identifier not valid.
    ClientIdentifierNotValid = 0x85,
    /// 0x86 Bad User Name or Password.
    BadUserNameOrPassword = 0x86,
    /// 0x87 Not authorized.
    NotAuthorized = 0x87,
    /// 0x88 Server unavailable.
    ServerUnavailable = 0x88,
    /// 0x89 Server busy.
    ServerBusy = 0x89,
    /// 0x8A Banned.
    Banned = 0x8A,
    /// 0x8B Server shutting down.
    ServerShuttingDown = 0x8B,
    /// 0x8C Bad authentication method.
    BadAuthenticationMethod = 0x8C,
    /// 0x8D Keep Alive timeout.
    KeepAliveTimeout = 0x8D,
    /// 0x8E Session taken over.
    SessionTakenOver = 0x8E,
    /// 0x8F Topic Filter invalid.
    TopicFilterInvalid = 0x8F,
    /// 0x90 Topic Name invalid.
    TopicNameInvalid = 0x90,
    /// 0x91 Packet Identifier in use.
    PacketIdentifierInUse = 0x91,
    /// 0x92 Packet Identifier not found.
    PacketIdentifierNotFound = 0x92,
    /// 0x93 Receive Maximum exceeded.
    ReceiveMaximumExceeded = 0x93,
    /// 0x94 Topic Alias invalid.
    TopicAliasInvalid = 0x94,
    /// 0x95 Packet too large.
    PacketTooLarge = 0x95,
    /// 0x96 Message rate too high.
    MessageRateTooHigh = 0x96,
    /// 0x97 Quota exceeded.
    QuotaExceeded = 0x97,
    /// 0x98 Administrative action.
    AdministrativeAction = 0x98,
    /// 0x99 Payload format invalid.
    PayloadFormatInvalid = 0x99,
    /// 0x9A Retain not supported.
    RetainNotSupported = 0x9A,
    /// 0x9B QoS not supported.
    QosNotSupported = 0x9B,
    /// 0x9C Use another server.
    UseAnotherServer = 0x9C,
    /// 0x9D Server moved.
    ServerMoved = 0x9D,
    /// 0x9E Shared Subscriptions not supported.
    SharedSubscriptionsNotSupported = 0x9E,
    /// 0x9F Connection rate exceeded.
    ConnectionRateExceeded = 0x9F,
    /// 0xA0 Maximum connect time.
    MaximumConnectTime = 0xA0,
    /// 0xA1 Subscription Identifiers not supported.
    SubscriptionIdentifiersNotSupported = 0xA1,
    /// 0xA2 Wildcard Subscriptions not supported.
    WildcardSubscriptionsNotSupported = 0xA2,
}

impl ReasonCode {
    /// 0x00 as DISCONNECT names it.
    pub const NORMAL_DISCONNECTION: ReasonCode = ReasonCode::Success;
    /// 0x00 as SUBACK names it.
    pub const GRANTED_QOS_0: ReasonCode = ReasonCode::Success;

    /// Every reason code, in value order.
    pub const ALL: [ReasonCode; 43] = {
        use ReasonCode::*;
        [
            Success,
            GrantedQos1,
            GrantedQos2,
            DisconnectWithWillMessage,
            NoMatchingSubscribers,
            NoSubscriptionExisted,
            ContinueAuthentication,
            ReAuthenticate,
            UnspecifiedError,
            MalformedPacket,
            ProtocolError,
            ImplementationSpecificError,
            UnsupportedProtocolVersion,
            ClientIdentifierNotValid,
            BadUserNameOrPassword,
            NotAuthorized,
            ServerUnavailable,
            ServerBusy,
            Banned,
            ServerShuttingDown,
            BadAuthenticationMethod,
            KeepAliveTimeout,
            SessionTakenOver,
            TopicFilterInvalid,
            TopicNameInvalid,
            PacketIdentifierInUse,
            PacketIdentifierNotFound,
            ReceiveMaximumExceeded,
            TopicAliasInvalid,
            PacketTooLarge,
            MessageRateTooHigh,
            QuotaExceeded,
            AdministrativeAction,
            PayloadFormatInvalid,
            RetainNotSupported,
            QosNotSupported,
            UseAnotherServer,
            ServerMoved,
            SharedSubscriptionsNotSupported,
            ConnectionRateExceeded,
            MaximumConnectTime,
            SubscriptionIdentifiersNotSupported,
            WildcardSubscriptionsNotSupported,
        ]
    };

    /// The reason code with this value, if the spec defines one.
    pub const fn from_u8(value: u8) -> Option<ReasonCode> {
        use ReasonCode::*;
        Some(match value {
            0x00 => Success,
            0x01 => GrantedQos1,
            0x02 => GrantedQos2,
            0x04 => DisconnectWithWillMessage,
            0x10 => NoMatchingSubscribers,
            0x11 => NoSubscriptionExisted,
            0x18 => ContinueAuthentication,
            0x19 => ReAuthenticate,
            0x80 => UnspecifiedError,
            0x81 => MalformedPacket,
            0x82 => ProtocolError,
            0x83 => ImplementationSpecificError,
            0x84 => UnsupportedProtocolVersion,
            0x85 => ClientIdentifierNotValid,
            0x86 => BadUserNameOrPassword,
            0x87 => NotAuthorized,
            0x88 => ServerUnavailable,
            0x89 => ServerBusy,
            0x8A => Banned,
            0x8B => ServerShuttingDown,
            0x8C => BadAuthenticationMethod,
            0x8D => KeepAliveTimeout,
            0x8E => SessionTakenOver,
            0x8F => TopicFilterInvalid,
            0x90 => TopicNameInvalid,
            0x91 => PacketIdentifierInUse,
            0x92 => PacketIdentifierNotFound,
            0x93 => ReceiveMaximumExceeded,
            0x94 => TopicAliasInvalid,
            0x95 => PacketTooLarge,
            0x96 => MessageRateTooHigh,
            0x97 => QuotaExceeded,
            0x98 => AdministrativeAction,
            0x99 => PayloadFormatInvalid,
            0x9A => RetainNotSupported,
            0x9B => QosNotSupported,
            0x9C => UseAnotherServer,
            0x9D => ServerMoved,
            0x9E => SharedSubscriptionsNotSupported,
            0x9F => ConnectionRateExceeded,
            0xA0 => MaximumConnectTime,
            0xA1 => SubscriptionIdentifiersNotSupported,
            0xA2 => WildcardSubscriptionsNotSupported,
            _ => return None,
        })
    }

    /// The wire value.
    pub const fn value(self) -> u8 {
        self as u8
    }

    /// Whether this code reports a failure (0x80 and above).
    pub const fn is_error(self) -> bool {
        self as u8 >= 0x80
    }

    /// The SUBACK code granting `qos`.
    pub const fn granted(qos: QoS) -> ReasonCode {
        match qos {
            QoS::AtMostOnce => ReasonCode::Success,
            QoS::AtLeastOnce => ReasonCode::GrantedQos1,
            QoS::ExactlyOnce => ReasonCode::GrantedQos2,
        }
    }

    /// Whether MQTT 5.0 allows this code in `packet` (the per-packet lists of §3.2.2.2,
    /// §3.4.2.1, §3.5.2.1, §3.6.2.1, §3.7.2.1, §3.9.3, §3.11.3, §3.14.2.1 and §3.15.2.1).
    pub const fn is_valid_for(self, packet: PacketType) -> bool {
        use ReasonCode::*;
        match packet {
            PacketType::Connack => matches!(
                self,
                Success
                    | UnspecifiedError
                    | MalformedPacket
                    | ProtocolError
                    | ImplementationSpecificError
                    | UnsupportedProtocolVersion
                    | ClientIdentifierNotValid
                    | BadUserNameOrPassword
                    | NotAuthorized
                    | ServerUnavailable
                    | ServerBusy
                    | Banned
                    | BadAuthenticationMethod
                    | TopicNameInvalid
                    | PacketTooLarge
                    | QuotaExceeded
                    | PayloadFormatInvalid
                    | RetainNotSupported
                    | QosNotSupported
                    | UseAnotherServer
                    | ServerMoved
                    | ConnectionRateExceeded
            ),
            PacketType::PubAck | PacketType::PubRec => matches!(
                self,
                Success
                    | NoMatchingSubscribers
                    | UnspecifiedError
                    | ImplementationSpecificError
                    | NotAuthorized
                    | TopicNameInvalid
                    | PacketIdentifierInUse
                    | QuotaExceeded
                    | PayloadFormatInvalid
            ),
            PacketType::PubRel | PacketType::PubComp => {
                matches!(self, Success | PacketIdentifierNotFound)
            }
            PacketType::SubAck => matches!(
                self,
                Success
                    | GrantedQos1
                    | GrantedQos2
                    | UnspecifiedError
                    | ImplementationSpecificError
                    | NotAuthorized
                    | TopicFilterInvalid
                    | PacketIdentifierInUse
                    | QuotaExceeded
                    | SharedSubscriptionsNotSupported
                    | SubscriptionIdentifiersNotSupported
                    | WildcardSubscriptionsNotSupported
            ),
            PacketType::UnsubAck => matches!(
                self,
                Success
                    | NoSubscriptionExisted
                    | UnspecifiedError
                    | ImplementationSpecificError
                    | NotAuthorized
                    | TopicFilterInvalid
                    | PacketIdentifierInUse
            ),
            PacketType::Disconnect => matches!(
                self,
                Success
                    | DisconnectWithWillMessage
                    | UnspecifiedError
                    | MalformedPacket
                    | ProtocolError
                    | ImplementationSpecificError
                    | NotAuthorized
                    | ServerBusy
                    | ServerShuttingDown
                    | BadAuthenticationMethod
                    | KeepAliveTimeout
                    | SessionTakenOver
                    | TopicFilterInvalid
                    | TopicNameInvalid
                    | ReceiveMaximumExceeded
                    | TopicAliasInvalid
                    | PacketTooLarge
                    | MessageRateTooHigh
                    | QuotaExceeded
                    | AdministrativeAction
                    | PayloadFormatInvalid
                    | RetainNotSupported
                    | QosNotSupported
                    | UseAnotherServer
                    | ServerMoved
                    | SharedSubscriptionsNotSupported
                    | ConnectionRateExceeded
                    | MaximumConnectTime
                    | SubscriptionIdentifiersNotSupported
                    | WildcardSubscriptionsNotSupported
            ),
            PacketType::Auth => matches!(self, Success | ContinueAuthentication | ReAuthenticate),
            PacketType::Connect
            | PacketType::Publish
            | PacketType::Subscribe
            | PacketType::Unsubscribe
            | PacketType::PingReq
            | PacketType::PingResp => false,
        }
    }

    /// The MQTT 3.1.1 CONNACK return code with the same meaning (§3.2.2.3): 0x00 accepted,
    /// 0x01 unacceptable protocol version, 0x02 identifier rejected, 0x03 server unavailable,
    /// 0x04 bad user name or password, 0x05 not authorized. `None` for codes 3.1.1 has no
    /// word for; the broker then picks the nearest one or closes the connection.
    pub const fn to_v311_connack(self) -> Option<u8> {
        Some(match self {
            ReasonCode::Success => 0x00,
            ReasonCode::UnsupportedProtocolVersion => 0x01,
            ReasonCode::ClientIdentifierNotValid => 0x02,
            ReasonCode::ServerUnavailable => 0x03,
            ReasonCode::BadUserNameOrPassword => 0x04,
            ReasonCode::NotAuthorized => 0x05,
            _ => return None,
        })
    }

    /// The reason code for a 3.1.1 CONNACK return code; `None` for the reserved 6–255.
    pub const fn from_v311_connack(code: u8) -> Option<ReasonCode> {
        Some(match code {
            0x00 => ReasonCode::Success,
            0x01 => ReasonCode::UnsupportedProtocolVersion,
            0x02 => ReasonCode::ClientIdentifierNotValid,
            0x03 => ReasonCode::ServerUnavailable,
            0x04 => ReasonCode::BadUserNameOrPassword,
            0x05 => ReasonCode::NotAuthorized,
            _ => return None,
        })
    }
}

impl fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?} (0x{:02X})", *self as u8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_only_spec_values_exist() {
        let mut defined = 0;
        for v in 0..=255u8 {
            if let Some(rc) = ReasonCode::from_u8(v) {
                assert_eq!(rc.value(), v);
                defined += 1;
            }
        }
        assert_eq!(defined, ReasonCode::ALL.len());
        for rc in ReasonCode::ALL {
            assert_eq!(ReasonCode::from_u8(rc.value()), Some(rc));
        }
    }

    #[test]
    fn table_2_6_spot_checks() {
        use PacketType::*;
        assert!(ReasonCode::Success.is_valid_for(Auth));
        assert!(ReasonCode::NoMatchingSubscribers.is_valid_for(PubRec));
        assert!(!ReasonCode::NoMatchingSubscribers.is_valid_for(PubRel));
        assert!(ReasonCode::PacketIdentifierNotFound.is_valid_for(PubComp));
        assert!(!ReasonCode::PacketIdentifierNotFound.is_valid_for(PubAck));
        assert!(ReasonCode::TopicNameInvalid.is_valid_for(Connack));
        assert!(!ReasonCode::TopicFilterInvalid.is_valid_for(Connack));
        assert!(ReasonCode::PacketIdentifierInUse.is_valid_for(UnsubAck));
        assert!(!ReasonCode::QuotaExceeded.is_valid_for(UnsubAck));
        assert!(!ReasonCode::ServerShuttingDown.is_valid_for(Connack));
        assert!(!ReasonCode::ContinueAuthentication.is_valid_for(Disconnect));
        // Number of codes each packet allows, counted from Table 2-6.
        let count = |p| {
            ReasonCode::ALL
                .iter()
                .filter(|rc| rc.is_valid_for(p))
                .count()
        };
        assert_eq!(count(Connack), 22);
        assert_eq!(count(PubAck), 9);
        assert_eq!(count(PubRel), 2);
        assert_eq!(count(SubAck), 12);
        assert_eq!(count(UnsubAck), 7);
        assert_eq!(count(Disconnect), 30);
        assert_eq!(count(Auth), 3);
    }

    #[test]
    fn v311_connack_codes() {
        for code in 0..=5u8 {
            let rc = ReasonCode::from_v311_connack(code).expect("0-5 are defined");
            assert_eq!(rc.to_v311_connack(), Some(code));
        }
        assert_eq!(ReasonCode::from_v311_connack(6), None);
        assert_eq!(ReasonCode::ServerBusy.to_v311_connack(), None);
    }
}
