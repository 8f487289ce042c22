//! Ironplant's embedded MQTT broker, starting with its wire format: a sans-IO codec for every
//! control packet of MQTT 3.1.1 and 5.0, and the topic rules the broker routes by.
//!
//! # Shape
//! - [`codec`]: `decode(&[u8], version, max_packet_size) -> Result<Option<(Packet, consumed)>,
//!   DecodeError>` (`None`: need more bytes) and `encode(&Packet, version, &mut Vec<u8>)`,
//!   pure functions. CONNECT is self-describing and read with [`codec::decode_connect`]
//!   before the version is known.
//! - [`topic`]: `validate_topic_name`, `validate_topic_filter` (incl. `$share/{group}/{filter}`)
//!   and `topic_matches`.
//! - [`client`]: an async client on the same codec (reconnects, re-subscribes, re-sends
//!   in-flight QoS 1/2), for the bridge and the simulator's Sparkplug edge node.
//!
//! # Invariants
//! - **Input never panics the codec.** Every length from the wire is checked before use; reads
//!   go through a bounds-checked cursor; malformed input is a typed [`codec::DecodeError`].
//! - **Bounded memory.** The fixed header is checked against `max_packet_size` before the body
//!   is waited for, so a 256 MB Remaining Length is refused after at most five bytes and
//!   nothing is allocated for it. Decoding allocates at most the packet's own size (plus the
//!   `Vec`s of subscriptions, codes and user properties, each bounded by the packet size).
//! - **What `encode` writes, `decode` reads back as an equal packet.** The encoder checks
//!   every rule the decoder enforces (the round-trip tests and the fuzz target hold it to that).
//!
//! # Why `bytes`
//! Payloads are [`bytes::Bytes`] and strings [`codec::MqttString`] (a `Bytes` known to be valid
//! UTF-8, via `bytestring`). The broker's fan-out clones each PUBLISH once per subscriber;
//! with `Bytes` that is a reference-count increment instead of a copy of topic and payload.
//! [`codec::decode_bytes`] slices every field out of the caller's buffer with no copy at all;
//! [`codec::decode`] on a plain `&[u8]` copies the body once, into one allocation that all the
//! packet's fields share. A slice keeps its whole buffer alive, so the connection task should
//! `split_to` each packet off its read buffer (and a retained-message store that keeps
//! payloads for long may want `Bytes::copy_from_slice`).

pub mod auth;
pub mod bridge;
pub mod broker;
pub mod client;
pub mod codec;
pub mod persist;
pub mod private_fs;
pub mod retained;
pub mod session;
pub mod settings;
pub mod signed;
pub mod spill;
pub mod topic;
pub mod transport;
pub mod tree;
pub mod ws;

pub use broker::{Broker, BrokerConfig, BrokerStats, ClientInfo, Origin, Overflow, Transport};
