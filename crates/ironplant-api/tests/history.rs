//! `GET /api/v1/history` through the real router, against a real historian in a temp dir:
//! raw pages followed through `next`, several tags, aggregates, `at`, CSV, and every error code.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use ironplant_api::ApiState;
use ironplant_core::{Quality, QualityReason, TagPath, Timestamp, Value};
use ironplant_runtime::Runtime;
use serde_json::Value as Json;
use tower::ServiceExt as _;

/// 2026-01-01T00:00:00Z.
const BASE: i64 = 1_767_225_600_000_000;
const SEC: i64 = 1_000_000;
const TEMP: &str = "plant/line1/oven/temp";
const COUNT: &str = "plant/line1/oven/count";
const STATE: &str = "plant/line1/oven/state";

fn at(offset_us: i64) -> String {
    Timestamp(BASE + offset_us).to_rfc3339()
}

struct Fixture {
    app: Router,
    runtime: Arc<Runtime>,
    _dir: tempfile::TempDir,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.runtime.shutdown();
    }
}

fn app(runtime: Arc<Runtime>) -> Router {
    ironplant_api::router(Arc::new(ApiState {
        runtime,
        started: Instant::now(),
        mqtt: None,
        security: None,
        http: ironplant_api::listen::Connections::new(Default::default(), None),
    }))
}

/// A platform without devices whose historian holds, for 100 s from BASE, one sample a second:
/// TEMP = i as float (Bad(CommFailure) at i = 55), COUNT = 10 * i as int, and STATE a string
/// every 10 s.
async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = ironplant_api::settings::parse("empty.toml", "").expect("an empty config is valid");
    let runtime = Runtime::start(&cfg, Some(dir.path())).expect("runtime starts");
    let h = runtime
        .historian
        .as_ref()
        .expect("historian enabled by default");
    let paths: Vec<TagPath> = [TEMP, COUNT, STATE]
        .iter()
        .map(|p| TagPath::parse(p).expect("valid path"))
        .collect();
    let ids = h.register(&paths).expect("register");
    let mut samples = Vec::new();
    for i in 0..100i64 {
        let ts = BASE + i * SEC;
        let q = if i == 55 {
            Quality::bad(QualityReason::CommFailure)
        } else {
            Quality::GOOD
        };
        samples.push((ids[0], ts, Value::Float(i as f64), q));
        samples.push((ids[1], ts, Value::Int(10 * i), Quality::GOOD));
        if i % 10 == 0 {
            samples.push((
                ids[2],
                ts,
                Value::String(format!("s{i}").into()),
                Quality::GOOD,
            ));
        }
    }
    h.submit(samples)
        .expect("submit")
        .wait()
        .await
        .expect("durable");
    Fixture {
        app: app(runtime.clone()),
        runtime,
        _dir: dir,
    }
}

async fn get(app: &Router, uri: &str) -> (StatusCode, String, String) {
    let resp = app
        .clone()
        .oneshot(
            Request::get(uri)
                .body(Body::empty())
                .expect("valid request"),
        )
        .await
        .expect("the router answers");
    let status = resp.status();
    let ctype = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .expect("body");
    (status, ctype, String::from_utf8_lossy(&body).into_owned())
}

async fn get_json(app: &Router, uri: &str) -> (StatusCode, Json) {
    let (status, ctype, body) = get(app, uri).await;
    let json =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{uri}: not JSON ({e}): {body}"));
    if status.is_success() {
        assert_eq!(ctype, "application/json", "{uri}");
    }
    (status, json)
}

async fn error(app: &Router, uri: &str) -> (StatusCode, String, String) {
    let (status, json) = get_json(app, uri).await;
    let code = json["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("{uri}: no error code in {json}"));
    let message = json["error"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("{uri}: no message in {json}"));
    (status, code.to_owned(), message.to_owned())
}

fn values(points: &Json) -> Vec<f64> {
    points
        .as_array()
        .expect("points array")
        .iter()
        .map(|p| p["value"].as_f64().expect("numeric value"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_pages_follow_next_to_the_end() {
    let f = fixture().await;
    let mut from = at(0);
    let to = at(100 * SEC);
    let mut all = Vec::new();
    let mut pages = 0;
    loop {
        let uri = format!("/api/v1/history?tag={TEMP}&from={from}&to={to}&limit=30");
        let (status, json) = get_json(&f.app, &uri).await;
        assert_eq!(status, StatusCode::OK, "{json}");
        assert_eq!(json["mode"], "raw");
        assert_eq!(json["from"], from.as_str());
        assert_eq!(json["warnings"], serde_json::json!([]));
        let tag = &json["tags"][0];
        assert_eq!(tag["tag"], TEMP);
        all.extend(values(&tag["points"]));
        pages += 1;
        match tag["next"].as_str() {
            Some(next) => {
                assert_eq!(tag["points"].as_array().map(Vec::len), Some(30));
                from = next.to_owned();
            }
            None => break,
        }
        assert!(pages < 10, "paging does not end");
    }
    assert_eq!(pages, 4);
    assert_eq!(all, (0..100).map(|i| i as f64).collect::<Vec<_>>());

    // Point shape: time, typed value, quality and its reason.
    let (_, json) = get_json(
        &f.app,
        &format!(
            "/api/v1/history?tag={TEMP}&from={}&to={}",
            at(54 * SEC),
            at(56 * SEC)
        ),
    )
    .await;
    assert_eq!(
        json["tags"][0],
        serde_json::json!({
            "tag": TEMP,
            "points": [
                {"ts": at(54 * SEC), "value": 54.0, "quality": "Good", "quality_reason": null},
                {"ts": at(55 * SEC), "value": 55.0, "quality": "Bad", "quality_reason": "CommFailure"},
            ],
            "next": null,
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_tags_in_one_call_keep_their_types() {
    let f = fixture().await;
    let uri = format!(
        "/api/v1/history?tag={COUNT}&tag={STATE}&from={}&to={}",
        at(0),
        at(21 * SEC)
    );
    let (status, json) = get_json(&f.app, &uri).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    let tags = json["tags"].as_array().expect("tags");
    assert_eq!(tags.len(), 2);
    assert_eq!(tags[0]["tag"], COUNT);
    assert_eq!(tags[0]["points"].as_array().map(Vec::len), Some(21));
    assert_eq!(tags[0]["points"][20]["value"], serde_json::json!(200));
    assert_eq!(tags[1]["tag"], STATE);
    let states: Vec<&str> = tags[1]["points"]
        .as_array()
        .expect("points")
        .iter()
        .filter_map(|p| p["value"].as_str())
        .collect();
    assert_eq!(states, ["s0", "s10", "s20"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relative_times_default_to_the_last_hour() {
    let f = fixture().await;
    // Only `to` given: `from` is an hour before it, and both come back resolved.
    let (status, json) = get_json(&f.app, &format!("/api/v1/history?tag={TEMP}&to=now")).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    let from = json["from"].as_str().expect("from");
    let to = json["to"].as_str().expect("to");
    let secs = |s: &str| {
        humantime::parse_rfc3339(s)
            .expect("rfc3339")
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after epoch")
            .as_secs_f64()
    };
    assert!(
        (secs(to) - secs(from) - 3600.0).abs() < 1e-6,
        "{from} .. {to}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregates_per_interval() {
    let f = fixture().await;
    let uri = format!(
        "/api/v1/history?tag={TEMP}&from={}&to={}&interval=10s&agg=min,max,avg,count",
        at(0),
        at(100 * SEC)
    );
    let (status, json) = get_json(&f.app, &uri).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(json["mode"], "aggregate");
    assert_eq!(json["interval"], "10s");
    assert_eq!(
        json["aggregates"],
        serde_json::json!(["min", "max", "avg", "count"])
    );
    let rows = json["tags"][0]["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 10);
    assert_eq!(
        rows[0],
        serde_json::json!({"start": at(0), "min": 0.0, "max": 9.0, "avg": 4.5, "count": 10, "good": 10, "bad": 0})
    );
    // The Bad sample at 55 s is left out of the values and counted.
    assert_eq!(rows[5]["good"], 9);
    assert_eq!(rows[5]["bad"], 1);
    assert_eq!(rows[5]["count"], 9);
    let avg5 = rows[5]["avg"].as_f64().expect("avg");
    assert!((avg5 - (50 + 51 + 52 + 53 + 54 + 56 + 57 + 58 + 59) as f64 / 9.0).abs() < 1e-9);

    // Default aggregate is avg; an interval with no data has null values.
    let uri = format!(
        "/api/v1/history?tag={TEMP}&from={}&to={}&interval=1m",
        at(60 * SEC),
        at(180 * SEC)
    );
    let (_, json) = get_json(&f.app, &uri).await;
    let rows = json["tags"][0]["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 2);
    assert_eq!(
        rows[0]["avg"].as_f64(),
        Some((60..100).sum::<i64>() as f64 / 40.0)
    );
    assert_eq!(rows[1]["avg"], Json::Null);
    assert_eq!(rows[1]["good"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn value_at_an_instant() {
    let f = fixture().await;
    let between = at(10 * SEC + SEC / 2);
    let (status, json) = get_json(
        &f.app,
        &format!("/api/v1/history?tag={TEMP}&tag={COUNT}&at={between}&interp=linear"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(json["mode"], "at");
    assert_eq!(json["interp"], "linear");
    assert_eq!(json["tags"][0]["point"]["value"].as_f64(), Some(10.5));
    assert_eq!(json["tags"][0]["point"]["ts"], between.as_str());
    assert_eq!(json["tags"][1]["point"]["value"].as_f64(), Some(105.0));

    let (_, json) = get_json(&f.app, &format!("/api/v1/history?tag={TEMP}&at={between}")).await;
    assert_eq!(json["interp"], "previous");
    assert_eq!(json["tags"][0]["point"]["value"].as_f64(), Some(10.0));

    // Before the first sample there is nothing to report.
    let (_, json) = get_json(
        &f.app,
        &format!("/api/v1/history?tag={TEMP}&at={}", at(-SEC)),
    )
    .await;
    assert_eq!(json["tags"][0]["point"], Json::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_for_raw_at_and_aggregates() {
    let f = fixture().await;
    let (status, ctype, body) = get(
        &f.app,
        &format!(
            "/api/v1/history?tag={TEMP}&tag={STATE}&from={}&to={}&format=csv",
            at(9 * SEC),
            at(11 * SEC)
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(ctype, "text/csv; charset=utf-8");
    assert_eq!(
        body,
        format!(
            "tag,ts,value,quality\n{TEMP},{},9,Good\n{TEMP},{},10,Good\n{STATE},{},s10,Good\n",
            at(9 * SEC),
            at(10 * SEC),
            at(10 * SEC)
        )
    );

    let (_, _, body) = get(
        &f.app,
        &format!(
            "/api/v1/history?tag={TEMP}&from={}&to={}&interval=10s&agg=max,count&format=csv",
            at(50 * SEC),
            at(70 * SEC)
        ),
    )
    .await;
    assert_eq!(
        body,
        format!(
            "tag,start,max,count,good,bad\n{TEMP},{},59,9,9,1\n{TEMP},{},69,10,10,0\n",
            at(50 * SEC),
            at(60 * SEC)
        )
    );

    let (_, _, body) = get(
        &f.app,
        &format!("/api/v1/history?tag={COUNT}&at={}&format=csv", at(99 * SEC)),
    )
    .await;
    assert_eq!(
        body,
        format!("tag,ts,value,quality\n{COUNT},{},990,Good\n", at(99 * SEC))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_has_its_code() {
    let f = fixture().await;
    let range = format!("from={}&to={}", at(0), at(100 * SEC));
    let cases: Vec<(String, StatusCode, &str, &str)> = vec![
        ("".into(), StatusCode::BAD_REQUEST, "bad_request", "no tag"),
        (
            format!("tag={TEMP}&from=yesterday"),
            StatusCode::BAD_REQUEST,
            "bad_request",
            "from=\"yesterday\"",
        ),
        (
            format!("tag={TEMP}&{range}&limit=lots"),
            StatusCode::BAD_REQUEST,
            "bad_request",
            "limit=\"lots\"",
        ),
        (
            format!("tag={TEMP}&{range}&interval=1m&agg=median"),
            StatusCode::BAD_REQUEST,
            "bad_request",
            "median",
        ),
        (
            format!("tag={TEMP}&at=now&interp=cubic"),
            StatusCode::BAD_REQUEST,
            "bad_request",
            "interp=\"cubic\"",
        ),
        (
            format!("tag={TEMP}&frm=now"),
            StatusCode::BAD_REQUEST,
            "bad_request",
            "\"frm\"",
        ),
        (
            format!("tag={TEMP}&from={}&to={}", at(SEC), at(0)),
            StatusCode::BAD_REQUEST,
            "bad_range",
            "after",
        ),
        (
            format!(
                "tag={TEMP}&from={}&to={}&interval=1ms",
                at(0),
                at(86_400 * SEC)
            ),
            StatusCode::BAD_REQUEST,
            "too_many_intervals",
            "longer interval",
        ),
        (
            format!("tag={TEMP}&{range}&limit=100001"),
            StatusCode::BAD_REQUEST,
            "limit_too_large",
            "100000",
        ),
        (
            format!("tag={TEMP}&{range}&interval=0s"),
            StatusCode::BAD_REQUEST,
            "bad_interval",
            "1ms",
        ),
        (
            format!("tag={TEMP}&{range}&interval=soon"),
            StatusCode::BAD_REQUEST,
            "bad_interval",
            "interval=\"soon\"",
        ),
        (
            format!("tag={TEMP}&tag=plant/line1/oven/nope&{range}"),
            StatusCode::NOT_FOUND,
            "tag_not_found",
            "plant/line1/oven/nope",
        ),
        (
            "tag=plant/nope&at=now".into(),
            StatusCode::NOT_FOUND,
            "tag_not_found",
            "plant/nope",
        ),
        (
            "tag=plant//x".into(),
            StatusCode::BAD_REQUEST,
            "invalid_path",
            "plant//x",
        ),
    ];
    for (query, status, code, needle) in cases {
        let uri = format!("/api/v1/history?{query}");
        let (s, c, message) = error(&f.app, &uri).await;
        assert_eq!((s, c.as_str()), (status, code), "{uri}: {message}");
        assert!(
            message.contains(needle),
            "{uri}: {message:?} lacks {needle:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_historian_the_endpoint_says_so() {
    let cfg = ironplant_api::settings::parse("empty.toml", "").expect("an empty config is valid");
    let runtime = Runtime::start(&cfg, None).expect("runtime starts");
    assert!(runtime.historian.is_none());
    let (status, code, message) =
        error(&app(runtime), &format!("/api/v1/history?tag={TEMP}")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(code, "historian_disabled");
    assert!(message.contains("--data-dir"), "{message}");
}
