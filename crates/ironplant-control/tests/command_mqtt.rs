//! The MQTT command convention, sans-IO: topics, request bodies (every mode and every mistake),
//! response bodies rendered from decisions and outcomes.

mod command_support;

use command_support::*;
use ironplant_control::command::mqtt::{
    command_filter, command_topic, parse_command_topic, parse_request, reply_topic, MqttCommand,
    MqttCommandError, MqttResponse, MAX_BODY,
};
use ironplant_control::command::{CommandId, Decision, Outcome};
use ironplant_core::{Quality, Value, WriteAck};

#[test]
fn topics_name_the_tag_under_the_uns_prefix() {
    let speed = path(SPEED);
    assert_eq!(command_filter("plant/"), "plant/_cmd/#");
    assert_eq!(
        command_topic("plant", &speed),
        format!("plant/_cmd/{SPEED}")
    );
    assert_eq!(
        reply_topic("plant", &speed),
        format!("plant/_cmd_reply/{SPEED}")
    );
    assert_eq!(command_topic("", &speed), format!("_cmd/{SPEED}"));
    assert_eq!(
        parse_command_topic("plant", &format!("plant/_cmd/{SPEED}")),
        Ok(speed)
    );
    assert_eq!(
        parse_command_topic("plant", &format!("plant/{SPEED}")),
        Err(MqttCommandError::NotCommandTopic {
            topic: format!("plant/{SPEED}"),
            prefix: "plant".to_owned()
        })
    );
    let e = parse_command_topic("plant", "plant/_cmd/acme//x").expect_err("empty level");
    assert!(matches!(e, MqttCommandError::BadTagPath { .. }), "{e:?}");
    assert!(parse_command_topic("plant", "plant/_cmdx/acme").is_err());
}

#[test]
fn request_bodies_are_read_in_every_mode() {
    assert_eq!(
        parse_request(br#"{"value": 320, "reason": "speed up for the 33cl run"}"#),
        Ok(MqttCommand::Operate {
            value: Value::Int(320),
            reason: "speed up for the 33cl run".to_owned()
        })
    );
    assert_eq!(
        parse_request(br#"{"value": 21.5}"#),
        Ok(MqttCommand::Operate {
            value: Value::Float(21.5),
            reason: String::new()
        })
    );
    assert_eq!(
        parse_request(br#"{"value": 4, "select": true, "reason": "recipe 4"}"#),
        Ok(MqttCommand::Select {
            value: Some(Value::Int(4)),
            reason: "recipe 4".to_owned()
        })
    );
    assert_eq!(
        parse_request(br#"{"select": true}"#),
        Ok(MqttCommand::Select {
            value: None,
            reason: String::new()
        })
    );
    assert_eq!(
        parse_request(br#"{"confirm": 17, "reason": "checked on site"}"#),
        Ok(MqttCommand::Confirm {
            id: CommandId(17),
            reason: "checked on site".to_owned()
        })
    );
    assert_eq!(
        parse_request(br#"{"confirm": "17"}"#),
        Ok(MqttCommand::Confirm {
            id: CommandId(17),
            reason: String::new()
        })
    );
    assert_eq!(
        parse_request(br#"{"reject": 17}"#),
        Ok(MqttCommand::Reject {
            id: CommandId(17),
            reason: String::new()
        })
    );
    assert_eq!(
        parse_request(br#"{"cancel": true}"#),
        Ok(MqttCommand::Cancel)
    );
}

#[test]
fn bad_request_bodies_say_what_is_wrong() {
    let err = |b: &[u8]| parse_request(b).expect_err("bad body").to_string();
    assert!(
        err(b"320").contains("the body is not a command"),
        "{}",
        err(b"320")
    );
    assert!(err(b"{\"value\": ").starts_with("the body is not UTF-8 JSON"));
    assert_eq!(
        err(br#"{"reason": "x"}"#),
        "the body is not a command: missing \"value\": the value to write; e.g. {\"value\": 42, \"reason\": \"…\"}"
    );
    assert!(err(br#"{"value": null}"#).contains("missing \"value\""));
    assert!(err(br#"{"valeu": 3}"#).contains("unknown field `valeu`"));
    assert!(err(br#"{"value": 3, "select": true, "cancel": true}"#)
        .contains("give one of select, confirm, reject or cancel"));
    assert!(
        err(br#"{"confirm": "seventeen"}"#).contains("confirm \"seventeen\" is not a command id")
    );
    let big = vec![b' '; MAX_BODY + 1];
    assert_eq!(
        parse_request(&big),
        Err(MqttCommandError::TooLarge { len: MAX_BODY + 1 })
    );
}

fn json(r: &MqttResponse) -> serde_json::Value {
    serde_json::from_slice(&r.render()).expect("a response renders as JSON")
}

#[test]
fn responses_render_decisions_and_outcomes() {
    let mut cp = bottling();
    let d = cp.submit(
        req(SPEED, Value::Int(650), alice(), Some(Value::Int(580))),
        &none(),
        t(0.0),
    );
    assert_eq!(
        json(&MqttResponse::from_decision(&d)),
        serde_json::json!({
            "result": "refused",
            "code": "envelope_max",
            "reason": format!("write to {SPEED} refused: outside the operating envelope: 650 is above the maximum 600"),
        })
    );
    let d = cp.submit(
        req(SPEED, Value::Int(350), alice(), Some(Value::Int(300))),
        &none(),
        t(0.0),
    );
    let Decision::Accepted(a) = &d else {
        panic!("{d:?}")
    };
    assert_eq!(
        json(&MqttResponse::from_decision(&d)),
        serde_json::json!({"result": "accepted", "command": a.id.0})
    );
    cp.device_acknowledged(
        a.id,
        &WriteAck {
            detail: String::new(),
            echoed: None,
        },
        t(0.1),
    );
    let out = cp.observe(&path(SPEED), &Value::Int(350), Quality::GOOD, t(0.5));
    let [o @ Outcome::Verified { .. }] = out.as_slice() else {
        panic!("{out:?}")
    };
    assert_eq!(
        json(&MqttResponse::from_outcome(o).expect("a command's outcome")),
        serde_json::json!({"result": "verified", "command": a.id.0, "echoed": 350})
    );
    let d = cp.submit(
        req(CIP, Value::Bool(true), erin(), Some(Value::Bool(false))),
        &none(),
        t(0.0),
    );
    let Decision::AwaitingConfirmation(p) = &d else {
        panic!("{d:?}")
    };
    assert_eq!(
        json(&MqttResponse::from_decision(&d)),
        serde_json::json!({
            "result": "pending",
            "command": p.id.0,
            "reason": format!("waiting for a second person (engineer or above) to confirm command {}", p.id),
            "expires": t(60.0).to_rfc3339(),
        })
    );
    let token = cp
        .select(
            req(RECIPE, Value::Null, alice(), Some(Value::Int(3))),
            &holds(),
            t(0.0),
        )
        .expect("select");
    assert_eq!(
        json(&MqttResponse::selected(&token)),
        serde_json::json!({"result": "selected", "command": token.id.0, "expires": t(10.0).to_rfc3339()})
    );
    assert_eq!(
        json(&MqttResponse::device_error(
            CommandId(9),
            "the device is not connected: refused"
        )),
        serde_json::json!({"result": "device_error", "command": 9, "reason": "the device is not connected: refused"})
    );
    let e = parse_request(b"{").expect_err("bad");
    assert_eq!(json(&MqttResponse::error(&e))["code"], "bad_request");
}

/// Mutations of valid bodies and topics (a cheap stand-in for the `command_mqtt` fuzz target
/// in every test run): never a panic, and every error renders as a JSON response.
#[test]
fn mutated_bodies_and_topics_never_panic() {
    let seeds: [&[u8]; 6] = [
        br#"{"value": 320, "reason": "33cl"}"#,
        br#"{"value": [1.5, 2.5], "select": true}"#,
        br#"{"confirm": "17"}"#,
        br#"{"reject": 17, "reason": "no"}"#,
        br#"{"cancel": true}"#,
        br#"{"value": {"columns": ["a"], "types": ["int"], "rows": [[1]]}}"#,
    ];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut parsed = 0;
    for i in 0..20_000 {
        let mut body = seeds[i % seeds.len()].to_vec();
        for _ in 0..(next() % 4) {
            let at = (next() as usize) % (body.len() + 1);
            match next() % 3 {
                0 if at < body.len() => body[at] = next() as u8,
                1 => body.insert(at, b"{}[]\",:0e-9\\u"[(next() % 13) as usize]),
                _ if at < body.len() => {
                    body.remove(at);
                }
                _ => {}
            }
        }
        match parse_request(&body) {
            Ok(_) => parsed += 1,
            Err(e) => {
                let r = MqttResponse::error(&e).render();
                assert!(serde_json::from_slice::<serde_json::Value>(&r).is_ok());
            }
        }
        let topic = format!(
            "plant/_cmd/{}",
            String::from_utf8_lossy(&body[..body.len().min(40)])
        );
        let _ = parse_command_topic("plant", &topic);
    }
    // The mutations leave some bodies valid: the loop exercised both paths.
    assert!(parsed > 1000 && parsed < 20_000, "{parsed}");
}
