//! Stored MQTT session records are read back from disk at start: whatever the bytes, decoding
//! returns a record or an error, never panics; a record that decodes re-encodes to the same
//! bytes' meaning (decode(encode(r)) succeeds).
#![no_main]

use ironplant_mqtt::session::Record;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(rec) = Record::decode(data, 16, 64) {
        let again = rec.encode();
        let back = Record::decode(&again, 16, 64).expect("a re-encoded record decodes");
        assert_eq!(back.subscriptions, rec.subscriptions);
        assert_eq!(back.expiry, rec.expiry);
    }
});
