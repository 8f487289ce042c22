//! Arbitrary payloads and topics into the JSON ingest mapper, as devices on the broker or HTTP
//! clients could send them: never a panic, every payload either rejected whole or mapped, and
//! every reading's path one a templated mapping could produce.
#![no_main]

use ironplant_core::Timestamp;
use ironplant_ingest::{IngestSettings, JsonIngest};
use libfuzzer_sys::fuzz_target;

const CONFIG: &str = r#"
[[ingest.json]]
name = "shelly"
topic = "shellies/+/status/#"
[[ingest.json.field]]
pointer = "/apower"
path = "site/plugs/{1}/power"
min = 0.0
max = 3680.0
[[ingest.json.field]]
pointer = "/aenergy/total"
path = "site/plugs/{1}/energy"
scale = 0.001
[[ingest.json.field]]
pointer = "/output"
path = "site/plugs/{1}/on"
type = "bool"

[[ingest.json]]
name = "tasmota"
topic = "tele/+/SENSOR"
timestamp = { pointer = "/Time", assume_offset = "+01:00" }
[[ingest.json.field]]
pointer = "/ENERGY/Power"
path = "site/kitchen/{1}/power"
type = "int"
[[ingest.json.field]]
pointer = "/Name"
path = "site/kitchen/{1}/name"
type = "string"

[[ingest.json]]
name = "gw"
topic = "gw/data"
max_payload = 4096
timestamp = { pointer = "/ts", format = "unix_ms" }
[[ingest.json.field]]
pointer = "/d/0/v"
path = "site/gw/v"
"#;

fuzz_target!(|data: &[u8]| {
    let (settings, errors) = IngestSettings::from_source(CONFIG);
    assert!(errors.is_empty());
    let ingest = JsonIngest::new(settings);
    // First line: the topic; the rest: the payload.
    let split = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
    let topic = String::from_utf8_lossy(&data[..split]);
    let payload = data.get(split + 1..).unwrap_or_default();
    let now = Timestamp(1_796_637_600_000_000);
    for (_, r) in ingest.handle_topic(&topic, payload, now) {
        if let Ok(m) = r {
            for reading in &m.readings {
                assert!(reading.path.as_str().starts_with("site/"));
            }
        }
    }
});
