//! End to end: an edge node (ours, sans-IO, its messages injected on the in-process broker)
//! births a FloatArray and a DataSet metric; the Sparkplug host puts them on the bus as an
//! array and a DataSet value, the historian stores them and gives them back equal, and the REST
//! API shows them as a JSON array and a DataSet object (`/api/v1/tags`, `/api/v1/history`, CSV).
//! The pysparkplug interop test (crates/ironplant/tests/sparkplug_interop.rs) checks arrays
//! from a third-party encoder.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use ironplant_api::ApiState;
use ironplant_core::{Array, DataSet, ScalarType, Timestamp, Value};
use ironplant_mqtt::codec::{MqttString, Publish as MqttPublish};
use ironplant_mqtt::{Broker, BrokerConfig};
use ironplant_runtime::Runtime;
use ironplant_sparkplug::{DataType, EdgeNode, MetricValue, Publish};
use tower::ServiceExt as _;

const CONFIG: &str = "[sparkplug]\nhost_id = \"arrays\"\nprefix = \"plant\"\n";
const SPECTRUM: &str = "plant/g1/n1/analyser/Spectrum";
const BATCHES: &str = "plant/g1/n1/analyser/Batches";

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

async fn wait_until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn send(broker: &Broker, p: &Publish) {
    let topic = MqttString::from_utf8(bytes::Bytes::from(p.topic.clone())).expect("topic");
    broker.publish(MqttPublish::new(topic, p.payload.clone().into()));
}

fn batches_metric(second_ok: bool) -> MetricValue {
    MetricValue::DataSet(
        ironplant_sparkplug::DataSet::new(
            vec!["batch".into(), "litres".into(), "ok".into()],
            vec![DataType::String, DataType::Int32, DataType::Boolean],
            vec![
                vec![
                    Some(MetricValue::String("B-1".into())),
                    Some(MetricValue::Int32(-40)),
                    Some(MetricValue::Boolean(true)),
                ],
                vec![
                    Some(MetricValue::String("B-2".into())),
                    None,
                    Some(MetricValue::Boolean(second_ok)),
                ],
            ],
        )
        .expect("valid DataSet"),
    )
}

fn batches_value(second_ok: bool) -> Value {
    Value::dataset(
        DataSet::new(
            vec!["batch".into(), "litres".into(), "ok".into()],
            vec![ScalarType::String, ScalarType::Int, ScalarType::Bool],
            vec![
                vec![
                    Value::String("B-1".into()),
                    Value::Int(-40),
                    Value::Bool(true),
                ],
                vec![
                    Value::String("B-2".into()),
                    Value::Null,
                    Value::Bool(second_ok),
                ],
            ],
        )
        .expect("valid"),
    )
}

fn spectrum_value(x: &[f64]) -> Value {
    Value::array(Array::from_floats(x.to_vec()).expect("small"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sparkplug_arrays_and_datasets_reach_bus_historian_and_rest() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = ironplant_api::settings::parse("arrays.toml", CONFIG).expect("valid config");
    let runtime = Runtime::start(&cfg, Some(dir.path())).expect("runtime starts");
    let broker = Broker::new(BrokerConfig::default());
    let _host = ironplant_runtime::sparkplug::start(
        broker.clone(),
        &runtime,
        &cfg.get::<ironplant_sparkplug::settings::SparkplugSettings>(),
    )
    .expect("host");
    let app = ironplant_api::router(Arc::new(ApiState {
        runtime: runtime.clone(),
        started: Instant::now(),
        mqtt: None,
        security: None,
        http: ironplant_api::listen::Connections::new(Default::default(), None),
    }));

    let mut edge = EdgeNode::new("g1", "n1").expect("ids");
    edge.add_device("analyser").expect("new");
    edge.add_device_metric(
        "analyser",
        "Spectrum",
        MetricValue::FloatArray(vec![1.25, -0.5, 3.0e-3]),
    )
    .expect("new");
    edge.add_device_metric("analyser", "Batches", batches_metric(false))
        .expect("new");
    // Whole milliseconds: Sparkplug timestamps are in ms.
    let t0 = Timestamp(Timestamp::now().0 / 1000 * 1000);
    for m in edge.birth(t0) {
        send(&broker, &m);
    }
    let current = |path: &str| {
        let meta = runtime.namespace.lookup(path)?;
        runtime.bus.current(meta.id).map(|s| s.value)
    };
    // On the bus: typed values, not JSON strings.
    let born = spectrum_value(&[1.25, -0.5, 3.0e-3]);
    wait_until("the birth's array on the bus", || {
        (current(SPECTRUM)? == born).then_some(())
    })
    .await;
    assert_eq!(current(BATCHES), Some(batches_value(false)));
    // Then data: a new array and a new DataSet.
    let t1 = Timestamp(t0.0 + 1_000_000);
    send(
        &broker,
        &edge
            .device_data(
                "analyser",
                &[
                    ("Spectrum", MetricValue::FloatArray(vec![2.5, 0.1])),
                    ("Batches", batches_metric(true)),
                ],
                t1,
            )
            .expect("declared"),
    );
    let updated = spectrum_value(&[2.5, 0.1]);
    wait_until("the data's array on the bus", || {
        (current(SPECTRUM)? == updated && current(BATCHES)? == batches_value(true)).then_some(())
    })
    .await;

    // REST: the current values as JSON structures, with their value types.
    let (status, body) = get(&app, "/api/v1/tags?prefix=plant/g1/n1/analyser").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).expect("json");
    let tag = |path: &str| {
        json["tags"]
            .as_array()
            .expect("tags")
            .iter()
            .find(|t| t["path"] == path)
            .unwrap_or_else(|| panic!("{path} in {body}"))
            .clone()
    };
    let spectrum = tag(SPECTRUM);
    assert_eq!(spectrum["value"], serde_json::json!([2.5, 0.1]), "{body}");
    assert_eq!(spectrum["value_type"], "array<float>");
    let batches = tag(BATCHES);
    assert_eq!(
        batches["value"],
        serde_json::json!({
            "columns": ["batch", "litres", "ok"],
            "types": ["string", "int", "bool"],
            "rows": [["B-1", -40, true], ["B-2", null, true]],
        }),
        "{body}"
    );
    assert_eq!(batches["value_type"], "dataset");

    // The historian: both samples of each tag, read back equal.
    let h = runtime.historian.clone().expect("historian");
    let (from, to) = (Timestamp(t0.0 - 1_000_000), Timestamp(t1.0 + 1_000_000));
    let stored = |path: &str| {
        h.raw(path, from, to, 100)
            .ok()
            .map(|p| p.points.into_iter().map(|p| p.value).collect::<Vec<_>>())
    };
    let spectra = wait_until("both spectra stored", || {
        stored(SPECTRUM).filter(|v| v.len() == 2)
    })
    .await;
    assert_eq!(spectra, vec![born, updated]);
    let tables = wait_until("both DataSets stored", || {
        stored(BATCHES).filter(|v| v.len() == 2)
    })
    .await;
    assert_eq!(tables, vec![batches_value(false), batches_value(true)]);
    // Aggregates skip them (no number), raw history returns them as JSON and CSV.
    let (status, body) = get(
        &app,
        &format!(
            "/api/v1/history?tag={SPECTRUM}&from={}&to={}",
            from.to_rfc3339(),
            to.to_rfc3339()
        ),
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
    assert_eq!(
        values,
        [
            &serde_json::json!([1.25, -0.5, 0.003]),
            &serde_json::json!([2.5, 0.1])
        ],
        "{body}"
    );
    // `ironplant query` reads that JSON back to the same values.
    let back = ironplant_api::history::parse_json(&body).expect("parses");
    assert!(matches!(
        &back.tags[0].data,
        ironplant_api::history::TagData::Raw { points, .. }
            if points.iter().map(|p| p.value.clone()).collect::<Vec<_>>() == spectra
    ));
    let (status, body) = get(
        &app,
        &format!(
            "/api/v1/history?tag={BATCHES}&from={}&to={}&format=csv",
            from.to_rfc3339(),
            to.to_rfc3339()
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body.contains(&format!(
            "{BATCHES},{},\"{{\"\"columns\"\":[\"\"batch\"\",\"\"litres\"\",\"\"ok\"\"],",
            t0.to_rfc3339()
        )),
        "{body}"
    );
    // An array metric can be written (DCMD), a DataSet cannot (its column types would be guessed).
    assert_eq!(
        runtime.namespace.lookup(SPECTRUM).map(|m| m.writable),
        Some(true)
    );
    assert_eq!(
        runtime.namespace.lookup(BATCHES).map(|m| m.writable),
        Some(false)
    );
    runtime.shutdown();
    // Reopened from disk (WAL replay and chunks, not the memtable): still equal.
    drop(h);
    let h = ironplant_historian::Historian::open(ironplant_historian::HistorianConfig::new(
        dir.path().join("historian"),
    ))
    .expect("reopen the historian");
    let values = |path: &str| {
        h.raw(path, from, to, 100)
            .expect("raw")
            .points
            .into_iter()
            .map(|p| p.value)
            .collect::<Vec<_>>()
    };
    assert_eq!(values(SPECTRUM), spectra);
    assert_eq!(values(BATCHES), tables);
    h.close();
}
