//! Arbitrary bytes as historian tagged values (the WAL's and chunks' value encoding, including
//! arrays and DataSets): never a panic, never an allocation beyond the size limits, and every
//! value that decodes re-encodes to bytes that decode to a value encoding the same again
//! (compared as bytes: NaN is unequal to itself; varints may arrive non-canonical).
#![no_main]

use ironplant_historian::codec::{get_value, put_value, Reader};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut r = Reader::new(data);
    while let Ok(v) = get_value(&mut r) {
        let mut once = Vec::new();
        put_value(&mut once, &v);
        let back = get_value(&mut Reader::new(&once)).expect("re-encoded value decodes");
        let mut twice = Vec::new();
        put_value(&mut twice, &back);
        assert_eq!(once, twice, "{v}");
        if r.is_empty() {
            break;
        }
    }
});
