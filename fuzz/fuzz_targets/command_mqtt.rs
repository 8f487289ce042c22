//! Arbitrary topics and bodies into the MQTT command convention's parsers, as any client on the
//! broker could send them: never a panic; a parsed request names a tag under the prefix, and
//! every response renders as JSON.
#![no_main]

use ironplant_control::command::mqtt::{
    command_topic, parse_command_topic, parse_request, MqttResponse,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // First line: the topic; the rest: the body.
    let split = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
    let topic = String::from_utf8_lossy(&data[..split]);
    let body = data.get(split + 1..).unwrap_or_default();
    if let Ok(tag) = parse_command_topic("plant", &topic) {
        assert_eq!(command_topic("plant", &tag), topic);
    }
    let response = match parse_request(body) {
        Ok(_) => MqttResponse::cancelled(true),
        Err(e) => MqttResponse::error(&e),
    };
    assert!(serde_json::from_slice::<serde_json::Value>(&response.render()).is_ok());
});
