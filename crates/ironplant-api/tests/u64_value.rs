//! An unsigned 64-bit value above i64::MAX (a u64 register or Sparkplug UInt64 at its maximum)
//! renders as the exact JSON integer in the current value and the raw history (JSON and CSV),
//! never as a rounded float. (That a u64 register's tag is `value_type: "int"` is checked from
//! the register up in ironplant-runtime's tests/u64_counter.rs.)

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use ironplant_api::ApiState;
use ironplant_core::{Quality, Sample, TagPath, Timestamp, Value};
use ironplant_runtime::Runtime;
use tower::ServiceExt as _;

const TOTAL: &str = "plant/line1/meter/total";
/// 2026-01-01T00:00:00Z.
const BASE: i64 = 1_767_225_600_000_000;

async fn get(app: &axum::Router, uri: &str) -> (StatusCode, String) {
    let resp = app
        .clone()
        .oneshot(Request::get(uri).body(Body::empty()).expect("request"))
        .await
        .expect("the router answers");
    let status = resp.status();
    let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .expect("body");
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn u64_max_is_an_exact_int_in_current_values_and_history() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = ironplant_api::settings::parse(
        "meter.toml",
        &format!("[[tag]]\npath = \"{TOTAL}\"\ndescription = \"water meter\"\n"),
    )
    .expect("valid config");
    let runtime = Runtime::start(&cfg, Some(dir.path())).expect("runtime starts");
    let app = ironplant_api::router(Arc::new(ApiState {
        runtime: runtime.clone(),
        started: Instant::now(),
        mqtt: None,
        security: None,
        http: ironplant_api::listen::Connections::new(Default::default(), None),
    }));
    let id = runtime.namespace.lookup(TOTAL).expect("tag").id;
    runtime
        .bus
        .publish(vec![Sample {
            tag: id,
            value: Value::U64(u64::MAX),
            quality: Quality::GOOD,
            source_ts: Timestamp(BASE),
            server_ts: Timestamp(BASE),
        }])
        .await;
    let h = runtime.historian.clone().expect("historian");
    let hid = h
        .register(&[TagPath::parse(TOTAL).expect("path")])
        .expect("register")[0];
    h.submit(vec![
        (hid, BASE, Value::U64(u64::MAX), Quality::GOOD),
        (hid, BASE + 1_000_000, Value::Int(5), Quality::GOOD),
    ])
    .expect("submit")
    .wait()
    .await
    .expect("durable");

    let (status, body) = get(&app, &format!("/api/v1/tags/{TOTAL}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains(r#""value":18446744073709551615,"#), "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(json["value"].as_u64(), Some(u64::MAX));

    let from = Timestamp(BASE).to_rfc3339();
    let to = Timestamp(BASE + 2_000_000).to_rfc3339();
    let (status, body) = get(
        &app,
        &format!("/api/v1/history?tag={TOTAL}&from={from}&to={to}"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).expect("json");
    let values: Vec<&serde_json::Value> = json["tags"][0]["points"]
        .as_array()
        .expect("points")
        .iter()
        .map(|p| &p["value"])
        .collect();
    // The bus sample is historised too (by the runtime): one or two points at BASE, then 5.
    let (last, first) = values.split_last().expect("points");
    assert_eq!(last.as_i64(), Some(5), "{body}");
    assert!(!first.is_empty(), "{body}");
    for v in first {
        assert_eq!(v.as_u64(), Some(u64::MAX), "{body}");
    }

    let (status, body) = get(
        &app,
        &format!("/api/v1/history?tag={TOTAL}&from={from}&to={to}&format=csv"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body.contains(&format!("{TOTAL},{from},18446744073709551615,Good")),
        "{body}"
    );
    runtime.shutdown();
}
