//! Golden vectors: each hand-assembled byte string decodes to its packet and the packet
//! encodes to exactly those bytes (see `common/mod.rs` for the sources).

mod common;

use bytes::Bytes;
use common::{vectors, MAX};
use ironplant_mqtt::codec::*;

#[test]
fn every_golden_vector_decodes_to_its_packet() {
    for v in vectors() {
        let decoded = decode(&v.bytes, v.version, MAX)
            .unwrap_or_else(|e| panic!("{}: decode failed: {e}", v.name));
        assert_eq!(
            decoded,
            Some((v.packet.clone(), v.bytes.len())),
            "{} ({})",
            v.name,
            v.source
        );
        // The zero-copy path gives the same packet.
        let bytes = Bytes::from(v.bytes.clone());
        let zero_copy = decode_bytes(&bytes, v.version, MAX)
            .unwrap_or_else(|e| panic!("{}: decode_bytes failed: {e}", v.name));
        assert_eq!(
            zero_copy,
            Some((v.packet.clone(), v.bytes.len())),
            "{}",
            v.name
        );
    }
}

#[test]
fn every_golden_vector_encodes_to_its_bytes() {
    let mut encoded_some = 0;
    for v in vectors().into_iter().filter(|v| !v.decode_only) {
        let mut out = Vec::new();
        encode(&v.packet, v.version, &mut out)
            .unwrap_or_else(|e| panic!("{}: encode failed: {e}", v.name));
        assert_eq!(out, v.bytes, "{} ({})", v.name, v.source);
        assert_eq!(
            encoded_len(&v.packet, v.version),
            Ok(v.bytes.len()),
            "{}",
            v.name
        );
        encoded_some += 1;
    }
    assert!(encoded_some >= 50, "only {encoded_some} vectors encoded");
}

#[test]
fn decode_only_vectors_re_encode_to_equivalent_bytes() {
    let mut seen = 0;
    for v in vectors().into_iter().filter(|v| v.decode_only) {
        let mut out = Vec::new();
        encode(&v.packet, v.version, &mut out).expect("encodes");
        assert_ne!(
            out, v.bytes,
            "{}: encodes identically, drop decode_only",
            v.name
        );
        assert_eq!(
            decode(&out, v.version, MAX),
            Ok(Some((v.packet.clone(), out.len()))),
            "{}",
            v.name
        );
        seen += 1;
    }
    assert_eq!(seen, 3);
    // The 5.0 short form: Success without properties is 2 bytes, however it arrived.
    let long_form = vectors()
        .into_iter()
        .find(|v| v.name == "5.0 PUBACK long form of Success without properties")
        .expect("vector exists");
    let mut out = Vec::new();
    encode(&long_form.packet, long_form.version, &mut out).expect("encodes");
    assert_eq!(out, [0x40, 0x02, 0x00, 0x0A]);
}

#[test]
fn every_packet_type_has_vectors_in_both_versions() {
    let all = vectors();
    for version in [ProtocolVersion::V311, ProtocolVersion::V5] {
        for nibble in 1..=15u8 {
            let t = PacketType::from_nibble(nibble).expect("1-15 are packet types");
            if t == PacketType::Auth && version == ProtocolVersion::V311 {
                continue;
            }
            assert!(
                all.iter()
                    .any(|v| v.version == version && v.packet.packet_type() == t),
                "no {version} vector for {t}"
            );
        }
    }
}

#[test]
fn a_stream_of_vectors_decodes_packet_by_packet() {
    for version in [ProtocolVersion::V311, ProtocolVersion::V5] {
        let vs: Vec<_> = vectors()
            .into_iter()
            .filter(|v| v.version == version)
            .collect();
        let stream: Vec<u8> = vs.iter().flat_map(|v| v.bytes.clone()).collect();
        let mut at = 0;
        for v in &vs {
            let rest = stream.get(at..).expect("in range");
            let (packet, used) = decode(rest, version, MAX)
                .expect("valid")
                .expect("complete");
            assert_eq!(packet, v.packet, "{}", v.name);
            at += used;
        }
        assert_eq!(at, stream.len());
        assert_eq!(decode(&[], version, MAX), Ok(None));
    }
}

#[test]
fn decode_bytes_slices_payloads_out_of_the_input_buffer() {
    let v = vectors()
        .into_iter()
        .find(|v| v.name == "3.1.1 PUBLISH with a two-byte remaining length")
        .expect("vector exists");
    let input = Bytes::from(v.bytes.clone());
    let Some((Packet::Publish(p), _)) = decode_bytes(&input, v.version, MAX).expect("valid") else {
        panic!("not a PUBLISH");
    };
    let input_range = input.as_ptr() as usize..input.as_ptr() as usize + input.len();
    assert!(
        input_range.contains(&(p.payload.as_ptr() as usize)),
        "payload was copied"
    );
    assert!(
        input_range.contains(&(p.topic.as_ptr() as usize)),
        "topic was copied"
    );
}

#[test]
fn connect_is_self_describing() {
    // A 5.0 CONNECT decodes as 5.0 even on a connection the caller believes is 3.1.1, and
    // decode_connect reports the version.
    let v = vectors()
        .into_iter()
        .find(|v| v.name == "5.0 CONNECT minimal")
        .expect("vector exists");
    let (packet, _) = decode(&v.bytes, ProtocolVersion::V311, MAX)
        .expect("valid")
        .expect("complete");
    assert_eq!(packet, v.packet);
    let (connect, used) = decode_connect(&v.bytes, MAX)
        .expect("valid")
        .expect("complete");
    assert_eq!(connect.protocol_version, ProtocolVersion::V5);
    assert_eq!(used, v.bytes.len());
    let mut out = Vec::new();
    encode(&v.packet, ProtocolVersion::V311, &mut out).expect("encodes");
    assert_eq!(out, v.bytes, "CONNECT encodes per its own protocol version");
}
