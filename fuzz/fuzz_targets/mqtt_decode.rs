//! Arbitrary bytes into the MQTT codec, as a peer would send them, in both versions.
//!
//! Checks, beyond "no panic, no unbounded allocation": the copying and zero-copy decoders
//! agree; a decoded packet re-encodes (`encoded_len` predicting the size) and decodes back to
//! an equal packet; a stream of packets is consumed packet by packet without overrunning.
#![no_main]

use bytes::Bytes;
use ironplant_mqtt::codec::{
    decode, decode_bytes, decode_connect, encode, encoded_len, Packet, ProtocolVersion,
};
use ironplant_mqtt::topic::{split_shared, topic_matches, validate_topic_filter, validate_topic_name};
use libfuzzer_sys::fuzz_target;

/// Small enough that libFuzzer explores the "packet too large" path too.
const MAX_PACKET_SIZE: usize = 64 * 1024;

fn round_trip(packet: &Packet, version: ProtocolVersion) {
    let mut out = Vec::new();
    if let Err(e) = encode(packet, version, &mut out) {
        panic!("decoded {packet:?} does not re-encode ({version}): {e}");
    }
    assert_eq!(encoded_len(packet, version), Ok(out.len()));
    match decode(&out, version, usize::MAX) {
        Ok(Some((again, used))) => {
            assert_eq!(&again, packet, "re-decoded packet differs ({version})");
            assert_eq!(used, out.len());
        }
        other => panic!("re-encoded {packet:?} decodes as {other:?} ({version})"),
    }
}

fuzz_target!(|data: &[u8]| {
    let shared = Bytes::copy_from_slice(data);
    for version in [ProtocolVersion::V311, ProtocolVersion::V5] {
        let mut at = 0;
        // Decode a stream: each packet after the other until more bytes are needed.
        while let Some(rest) = data.get(at..) {
            let copied = decode(rest, version, MAX_PACKET_SIZE);
            let sliced = decode_bytes(&shared.slice(at..), version, MAX_PACKET_SIZE);
            assert_eq!(copied, sliced, "decode and decode_bytes disagree");
            match copied {
                Ok(Some((packet, used))) => {
                    assert!(used > 0 && used <= rest.len(), "consumed {used} of {}", rest.len());
                    round_trip(&packet, version);
                    at += used;
                }
                Ok(None) | Err(_) => break,
            }
        }
    }
    if let Ok(Some((connect, used))) = decode_connect(data, MAX_PACKET_SIZE) {
        assert!(used <= data.len());
        let version = connect.protocol_version;
        round_trip(&Packet::Connect(Box::new(connect)), version);
    }
    // Topic utilities on arbitrary text: never panic; a valid name matches itself.
    if let Ok(text) = std::str::from_utf8(data) {
        let (filter, name) = text.split_once('\u{1}').unwrap_or((text, text));
        let _ = validate_topic_filter(filter);
        let _ = split_shared(filter);
        let _ = topic_matches(filter, name);
        if validate_topic_name(name).is_ok() && validate_topic_filter(name).is_ok() {
            assert!(topic_matches(name, name), "{name:?} does not match itself");
        }
    }
});
