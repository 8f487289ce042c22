//! The component model from the outside: a connector written in a test (a source implementing
//! the trait, one registration line), supervision (a panicking source, a failing sink and a
//! panicking processor are restarted and reported), processors on the publish path (derived
//! samples and events, no deadlock) and ordered shutdown (sinks drain after sources stop).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ironplant_core::{
    BoxFuture, Event, EventFilter, EventKind, Processor, ProcessorOutput, Quality, Sample,
    Severity, TagId, TagMeta, TagPath, Timestamp, Value, ValueType,
};
use ironplant_runtime::component::{
    ComponentError, RestartPolicy, Role, Sink, SinkContext, SinkQueue, Source, SourceContext,
    Status,
};
use ironplant_runtime::Platform;
use tokio::time::Instant;

/// No configured tags: the test's components bring their own.
const CONFIG: &str = "";

fn int_tag(path: &str) -> TagMeta {
    TagMeta {
        id: TagId(0),
        path: TagPath::parse(path).expect("path"),
        value_type: ValueType::Int,
        unit: None,
        description: String::new(),
        range: None,
        writable: false,
        device: Some("test".into()),
    }
}

fn fast() -> RestartPolicy {
    RestartPolicy {
        min: Duration::from_millis(20),
        max: Duration::from_millis(200),
        healthy_after: Duration::from_secs(60),
    }
}

async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A connector as a third party would write one: it registers its tag, then publishes a
/// counter every few milliseconds until told to stop. `panics_first` makes its first run
/// panic after two samples (a bug in a connector).
struct Counter {
    path: &'static str,
    runs: AtomicU32,
    panics_first: bool,
    next: AtomicU64,
}

impl Counter {
    fn new(path: &'static str, panics_first: bool) -> Counter {
        Counter {
            path,
            runs: AtomicU32::new(0),
            panics_first,
            next: AtomicU64::new(0),
        }
    }
}

impl Source for Counter {
    fn name(&self) -> String {
        format!("test:{}", self.path)
    }

    fn run(
        self: Arc<Self>,
        mut ctx: SourceContext,
    ) -> BoxFuture<'static, Result<(), ComponentError>> {
        Box::pin(async move {
            let run = self.runs.fetch_add(1, Ordering::SeqCst);
            let path = TagPath::parse(self.path).map_err(|e| ComponentError::new(e.to_string()))?;
            let tag = ctx
                .namespace
                .register(TagMeta {
                    id: TagId(0),
                    path,
                    value_type: ValueType::Int,
                    unit: None,
                    description: "test counter".into(),
                    range: None,
                    writable: false,
                    device: Some(self.name()),
                })
                .map_err(|e| ComponentError::new(e.to_string()))?;
            let mut sent = 0;
            loop {
                let n = self.next.fetch_add(1, Ordering::SeqCst);
                let now = Timestamp::now();
                ctx.bus
                    .publish(vec![Sample {
                        tag,
                        value: Value::from_u64(n),
                        quality: Quality::GOOD,
                        source_ts: now,
                        server_ts: now,
                    }])
                    .await;
                sent += 1;
                if self.panics_first && run == 0 && sent == 2 {
                    panic!("connector bug on purpose");
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(2)) => {}
                    _ = ctx.shutdown.requested() => return Ok(()),
                }
            }
        })
    }
}

/// A sink that records every sample of one tag path; it fails once on its first batch when
/// `fails_first`.
struct Recorder {
    seen: Arc<parking_lot::Mutex<Vec<(String, Value)>>>,
    fails_first: bool,
    runs: AtomicU32,
}

impl Sink for Recorder {
    fn name(&self) -> String {
        "test-recorder".into()
    }

    fn queue(&self) -> SinkQueue {
        SinkQueue {
            capacity: 1024,
            overflow: ironplant_core::Overflow::Block,
        }
    }

    fn run(
        self: Arc<Self>,
        mut ctx: SinkContext,
    ) -> BoxFuture<'static, Result<(), ComponentError>> {
        Box::pin(async move {
            let run = self.runs.fetch_add(1, Ordering::SeqCst);
            let mut batches = ctx.batches.lock().await;
            loop {
                let batch = tokio::select! {
                    b = batches.recv() => b,
                    _ = ctx.shutdown.requested() => {
                        // Drain what is queued, then stop.
                        while let Some(b) = batches.try_recv() {
                            self.record(&ctx, &b);
                        }
                        return Ok(());
                    }
                };
                let Some(batch) = batch else { return Ok(()) };
                self.record(&ctx, &batch);
                if self.fails_first && run == 0 {
                    return Err(ComponentError::new("disk full on purpose"));
                }
            }
        })
    }
}

impl Recorder {
    fn record(&self, ctx: &SinkContext, batch: &[Sample]) {
        let ns = ctx.namespace.read();
        let mut seen = self.seen.lock();
        for s in batch {
            if let Some(meta) = ns.tag(s.tag) {
                seen.push((meta.path.to_string(), s.value.clone()));
            }
        }
    }
}

/// A processor: doubles every counter value into a derived tag, raises an event on every
/// 10th value, and panics when it sees the value 5 (once per build).
struct Doubler {
    source: TagId,
    derived: TagId,
}

impl Processor for Doubler {
    fn name(&self) -> &str {
        "doubler"
    }

    fn process(&mut self, batch: &mut Vec<Sample>, now: Timestamp, out: &mut ProcessorOutput) {
        let mut derived = Vec::new();
        for s in batch.iter().filter(|s| s.tag == self.source) {
            let Value::Int(v) = s.value else { continue };
            if v == 5 {
                panic!("processor bug on purpose");
            }
            derived.push(Sample {
                tag: self.derived,
                value: Value::Int(v * 2),
                quality: s.quality,
                source_ts: s.source_ts,
                server_ts: now,
            });
            if v % 10 == 0 {
                out.events.push(
                    Event::new(
                        now,
                        EventKind::System,
                        "tenth",
                        "doubler",
                        format!("value {v}"),
                    )
                    .with_severity(Severity::Info),
                );
            }
        }
        batch.extend(derived);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_connector_is_one_registration_and_a_panicking_one_is_restarted_and_reported() {
    let config = ironplant_runtime::config::parse("test.toml", CONFIG).expect("config");
    let seen = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let platform = Platform::builder(config, None)
        .restart_policy(fast())
        .sink(Recorder {
            seen: seen.clone(),
            fails_first: true,
            runs: AtomicU32::new(0),
        })
        // The one registration line of a new connector:
        .source(Counter::new("acme/lyon/utilities/meter/pulses", true))
        .start()
        .expect("start");
    let mut events = platform
        .runtime
        .events
        .subscribe("test", 64, EventFilter::all());

    until("samples after the restart", || {
        seen.lock()
            .iter()
            .filter(|(p, _)| p == "acme/lyon/utilities/meter/pulses")
            .count()
            > 10
    })
    .await;
    let components = platform.components();
    let source = components
        .iter()
        .find(|c| c.role == Role::Source)
        .expect("the source is listed");
    assert_eq!(source.name, "test:acme/lyon/utilities/meter/pulses");
    assert_eq!(source.restarts(), 1, "the panicking run was restarted once");
    assert_eq!(source.status(), Status::Running);
    assert!(
        source
            .last_error()
            .is_some_and(|e| e.contains("connector bug on purpose")),
        "{:?}",
        source.last_error()
    );
    let sink = components
        .iter()
        .find(|c| c.role == Role::Sink)
        .expect("sink");
    assert_eq!(sink.restarts(), 1, "the failing sink was restarted once");
    assert!(sink.last_error().is_some_and(|e| e.contains("disk full")));
    // And in /metrics.
    let text = platform.runtime.render_metrics();
    for line in [
        "ironplant_component_restarts_total{component=\"test:acme/lyon/utilities/meter/pulses\",role=\"source\"} 1",
        "ironplant_component_status{component=\"test:acme/lyon/utilities/meter/pulses\",role=\"source\"} 0",
        "ironplant_component_restarts_total{component=\"test-recorder\",role=\"sink\"} 1",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
    }

    // Reported as system events.
    let mut codes = Vec::new();
    until("failure and restart events", || {
        while let Some(e) = events.try_recv() {
            if e.kind == EventKind::System {
                let c = e
                    .attribute("component")
                    .map(|v| v.to_string())
                    .unwrap_or_default();
                codes.push(format!("{} {}", e.code, c.trim_matches('"')));
            }
        }
        codes
            .iter()
            .any(|c| c == "component_failed test:acme/lyon/utilities/meter/pulses")
            && codes
                .iter()
                .any(|c| c == "component_restarted test:acme/lyon/utilities/meter/pulses")
            && codes
                .iter()
                .any(|c| c == "component_restarted test-recorder")
    })
    .await;

    // The sink resumed on its own subscription: no sample is missing between the restarts.
    let values: Vec<i64> = seen
        .lock()
        .iter()
        .filter_map(|(_, v)| match v {
            Value::Int(i) => Some(*i),
            _ => None,
        })
        .collect();
    for (i, v) in values.iter().enumerate() {
        assert_eq!(
            *v, i as i64,
            "the sink saw every sample in order: {values:?}"
        );
    }

    // Ordered shutdown: the source stops first, the sink drains everything it was sent.
    let runtime = platform.runtime.clone();
    platform.shutdown(Duration::from_secs(5)).await;
    let published = runtime.bus.stats().published_samples;
    assert_eq!(
        seen.lock().len() as u64,
        published,
        "the sink drained the queue"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processors_derive_samples_and_events_and_a_panicking_one_is_rebuilt() {
    let config = ironplant_runtime::config::parse("test.toml", CONFIG).expect("config");
    let seen = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let builds = Arc::new(AtomicU32::new(0));
    let b = builds.clone();
    let platform = Platform::builder(config, None)
        .restart_policy(fast())
        .processor(move || {
            b.fetch_add(1, Ordering::SeqCst);
            Doubler {
                source: TagId(0),
                derived: TagId(1),
            }
        })
        .sink(Recorder {
            seen: seen.clone(),
            fails_first: false,
            runs: AtomicU32::new(0),
        })
        .start()
        .expect("start");
    let mut events = platform.runtime.events.subscribe(
        "test",
        256,
        EventFilter {
            kinds: vec![EventKind::System],
            subjects: vec![],
        },
    );
    let ns = &platform.runtime.namespace;
    assert_eq!(
        ns.register(int_tag("acme/lyon/utilities/meter/pulses")),
        Ok(TagId(0))
    );
    assert_eq!(
        ns.register(int_tag("acme/lyon/utilities/meter/pulses_x2")),
        Ok(TagId(1))
    );
    let bus = platform.runtime.bus.clone();
    for v in 0..40i64 {
        let now = Timestamp::now();
        bus.publish(vec![Sample {
            tag: TagId(0),
            value: Value::Int(v),
            quality: Quality::GOOD,
            source_ts: now,
            server_ts: now,
        }])
        .await;
        // Let the rebuilt processor's back-off pass for later values.
        if v == 5 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    until("all 40 samples", || {
        seen.lock()
            .iter()
            .filter(|(p, _)| p == "acme/lyon/utilities/meter/pulses")
            .count()
            == 40
    })
    .await;
    let derived: Vec<Value> = seen
        .lock()
        .iter()
        .filter(|(p, _)| p.ends_with("pulses_x2"))
        .map(|(_, v)| v.clone())
        .collect();
    // 0..=4 doubled, 5 panicked (passes undoubled), 6..40 doubled by the rebuilt processor.
    assert_eq!(derived.len(), 39, "{derived:?}");
    assert_eq!(derived.last(), Some(&Value::Int(78)));
    assert_eq!(bus.current(TagId(1)).map(|s| s.value), Some(Value::Int(78)));
    assert_eq!(builds.load(Ordering::SeqCst), 2, "built, then rebuilt once");
    let stats = platform.components();
    let p = stats
        .iter()
        .find(|c| c.role == Role::Processor)
        .expect("processor listed");
    assert_eq!((p.name.as_str(), p.restarts()), ("doubler", 1));
    let mut got = Vec::new();
    until("the processor's events", || {
        while let Some(e) = events.try_recv() {
            got.push(e.code.to_string());
        }
        got.iter().filter(|c| *c == "tenth").count() == 4
            && got.iter().any(|c| c == "component_failed")
            && got.iter().any(|c| c == "component_restarted")
    })
    .await;
    platform.shutdown(Duration::from_secs(5)).await;
}

/// The Sparkplug host application is one of the platform's supervised sources: listed with
/// its role, online on STATE while it runs, and `online:false` once the platform stops it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sparkplug_host_is_a_supervised_source() {
    use ironplant_mqtt::{Broker, BrokerConfig};
    let cfg = ironplant_runtime::config::parse("sp.toml", "[sparkplug]\nhost_id = \"h1\"\n")
        .expect("valid config");
    let broker = Broker::new(BrokerConfig::default());
    let platform = Platform::builder(cfg, None)
        .broker(broker.clone())
        .restart_policy(fast())
        .start()
        .expect("platform starts");
    assert_eq!(
        platform.sparkplug_state.as_deref(),
        Some("spBv1.0/STATE/h1")
    );
    let host = platform
        .components()
        .into_iter()
        .find(|c| c.name == "sparkplug-host:h1")
        .expect("the host is a component");
    assert_eq!(host.role, Role::Source);
    let mut state = broker
        .subscribe_internal("observer", "spBv1.0/STATE/h1", 16)
        .expect("subscribe");
    let online = |p: &ironplant_mqtt::codec::Publish| {
        serde_json::from_slice::<serde_json::Value>(&p.payload).expect("STATE is JSON")["online"]
            .as_bool()
    };
    let first = tokio::time::timeout(Duration::from_secs(10), state.recv())
        .await
        .expect("STATE within 10 s")
        .expect("subscription open");
    assert_eq!(online(&first), Some(true));
    assert_eq!(host.status(), Status::Running);
    platform.shutdown(Duration::from_secs(5)).await;
    let last = tokio::time::timeout(Duration::from_secs(10), state.recv())
        .await
        .expect("STATE within 10 s")
        .expect("subscription open");
    assert_eq!(online(&last), Some(false));
    assert_eq!(host.status(), Status::Stopped);
}
