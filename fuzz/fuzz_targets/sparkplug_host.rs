//! Arbitrary Sparkplug traffic into the Host Application state machine, as edge nodes on the
//! broker could send it: never a panic, never unbounded growth, and every payload that decodes
//! re-encodes to something that decodes equal.
#![no_main]

use ironplant_core::Timestamp;
use ironplant_sparkplug::{Host, Payload};
use libfuzzer_sys::fuzz_target;

/// Topics a fuzz input can pick from (the first byte chooses), so the fuzzer spends its effort
/// on payloads and message order rather than on topic spelling.
const TOPICS: [&str; 9] = [
    "spBv1.0/g/NBIRTH/n",
    "spBv1.0/g/NDATA/n",
    "spBv1.0/g/NDEATH/n",
    "spBv1.0/g/DBIRTH/n/d",
    "spBv1.0/g/DDATA/n/d",
    "spBv1.0/g/DDEATH/n/d",
    "spBv1.0/g/NCMD/n",
    "spBv1.0/STATE/host",
    "spBv1.0/g/NDATA/other",
];

fuzz_target!(|data: &[u8]| {
    // Round trip of the payload codec.
    // (Compared as bytes: NaN metrics make the messages unequal to themselves.)
    if let Ok(p) = Payload::decode_bytes(data) {
        let bytes = p.to_bytes();
        let again = Payload::decode_bytes(&bytes).expect("re-encoded payload decodes");
        assert_eq!(again.to_bytes(), bytes);
    }
    // A sequence of messages: [topic selector, len hi, len lo, payload...]*
    let Ok(mut host) = Host::new("host") else { return };
    let mut rest = data;
    let mut now = 1_700_000_000_000_000i64;
    while rest.len() >= 3 {
        let topic = TOPICS[usize::from(rest[0]) % TOPICS.len()];
        let len = usize::from(u16::from_be_bytes([rest[1], rest[2]])).min(rest.len() - 3);
        let payload = &rest[3..3 + len];
        rest = &rest[3 + len..];
        now += 1_000;
        let _ = host.handle(topic, payload, Timestamp(now));
    }
});
