//! The MQTT wire format, sans-IO: [`decode`] bytes into a [`Packet`], [`encode`] a packet into
//! bytes. No sockets, no clocks, no session state; the broker's connection task feeds bytes in
//! and writes bytes out.
//!
//! One packet model serves MQTT 3.1.1 and 5.0 (see [`packet`] for how they differ). The
//! version is a parameter of every call except for CONNECT, which carries its own protocol
//! level: a connection starts with [`decode_connect`] and uses the version it returns from
//! then on.
//!
//! Every error says which rule the input broke and maps to the reason code the broker answers
//! with ([`DecodeError::reason_code`]).

mod decode;
mod encode;
mod error;
pub mod packet;
pub mod properties;
mod reason;
mod types;
mod wire;

pub use decode::{decode, decode_bytes, decode_connect, decode_header, FixedHeader};
pub use encode::{encode, encoded_len};
pub use error::{DecodeError, EncodeError};
pub use packet::{
    Auth, Connack, Connect, Disconnect, Packet, Publish, PublishResponse, SubAck, Subscribe,
    Subscription, UnsubAck, Unsubscribe, Will,
};
pub use properties::{
    AckProperties, AuthProperties, ConnackProperties, ConnectProperties, DisconnectProperties,
    PropertyId, PublishProperties, SubscribeProperties, UnsubscribeProperties, UserProperty,
    WillProperties,
};
pub use reason::ReasonCode;
pub use types::{
    MqttString, PacketId, PacketType, PayloadFormat, ProtocolVersion, QoS, RetainHandling,
    StringError, SubscriptionOptions,
};
pub use wire::VARINT_MAX;
