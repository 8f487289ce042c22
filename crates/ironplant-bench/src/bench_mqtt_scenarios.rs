//! The scenarios of `ironplant-bench mqtt`. Each runs against one broker, from connect to
//! disconnect of every client, and returns its figures; `bench_mqtt` runs each against ours,
//! then Mosquitto, and prints them side by side.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use ironplant_mqtt::codec::QoS;
use rand::rngs::SmallRng;
use rand::{Rng as _, SeedableRng as _};
use tokio::sync::{watch, Semaphore};
use tokio::time::MissedTickBehavior;

use super::client::{
    payload, ClientKind, Endpoint, Publisher, Received, Sink, SubSpec, Subscriber,
};
use super::probe::{rss_kb, Latency, Meter, Usage};

/// Messages the publishers together may be ahead of the (average) subscriber in the closed
/// loop; see [`window`].
pub(super) const WINDOW: u64 = 1000;

/// Messages one of `pubs` publishers may be ahead: [`WINDOW`] shared by the publishers, and
/// divided by the subscribers (fan-out multiplies what is queued), but at least 10.
pub(super) fn window(pubs: usize, subs: usize) -> u64 {
    (WINDOW / (pubs * subs).max(1) as u64).max(10)
}
/// Time before a measured window, at most: a quarter of the window below that.
pub(super) const WARMUP: Duration = Duration::from_millis(500);
/// Connections opened at once.
pub(super) const CONNECT_CONCURRENCY: usize = 200;
/// Overload: publishers x rate each, and what the slow subscriber handles at most.
pub(super) const OVERLOAD_PUBLISHERS: usize = 10;
pub(super) const OVERLOAD_RATE: u32 = 500;
pub(super) const OVERLOAD_SUB_RATE: u32 = 1000;
/// Overload: the drain ends after this long without a delivery, or at most after DRAIN_MAX.
pub(super) const DRAIN_QUIET: Duration = Duration::from_secs(3);
pub(super) const DRAIN_MAX: Duration = Duration::from_secs(30);

/// One broker under test.
pub(super) struct Broker {
    pub name: &'static str,
    pub ep: Endpoint,
    pub pid: u32,
}

/// What every scenario needs to know.
pub(super) struct Ctx {
    pub kind: ClientKind,
    /// Length of a measured window.
    pub measure: Duration,
    /// CPUs the load generator runs on.
    pub generator_cores: usize,
}

/// Figures of one measured window.
#[derive(Default)]
pub(super) struct Figures {
    /// Messages delivered in the window, summed over subscribers.
    pub delivered: u64,
    /// Messages published in the window (open loop).
    pub published: u64,
    pub usage: Usage,
    pub latency: Latency,
    /// Things worth a line under the table.
    pub notes: Vec<String>,
}

impl Ctx {
    pub fn warmup(&self) -> Duration {
        WARMUP.min(self.measure / 4)
    }
}

impl Figures {
    pub fn rate(&self) -> f64 {
        self.delivered as f64 / self.usage.wall.as_secs_f64().max(1e-9)
    }

    pub fn published_rate(&self) -> f64 {
        self.published as f64 / self.usage.wall.as_secs_f64().max(1e-9)
    }

    pub fn us_per_msg(&self) -> Option<f64> {
        self.usage.us_per(self.delivered)
    }
}

fn reading(rng: &mut SmallRng) -> f64 {
    20.0 + rng.random::<f64>() * 5.0
}

/// Waits until `done` holds, at most `limit`.
async fn settle(limit: Duration, done: impl Fn() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn stop_subscribers(subs: Vec<Subscriber>, notes: &mut Vec<String>) -> Received {
    let mut all = Received::default();
    for s in subs {
        match s.stop().await {
            Ok(r) => {
                all.latencies.extend(r.latencies);
                all.seen.extend(r.seen);
                all.malformed += r.malformed;
            }
            Err(e) => notes.push(format!("a subscriber failed: {e:#}")),
        }
    }
    if all.malformed > 0 {
        notes.push(format!("{} deliveries carried no stamp", all.malformed));
    }
    all
}

// ---------------------------------------------------------------------------------------------
// a. Max throughput (closed loop)

/// Flow control of the closed loop: no publisher runs ahead of the average subscriber by more
/// than `window` messages, so neither broker is measured by how fast it fills or drops its
/// queues. Progress is the highest sequence number delivered, so a lost message does not
/// close the window for good.
struct Flow {
    sink: Arc<Sink>,
    pubs: usize,
    subs: usize,
    window: u64,
    /// Messages each publisher has sent (its last sequence number).
    sent: Vec<AtomicU64>,
    stop: AtomicBool,
    /// Times a publisher saw none of its messages delivered for a second and sent anyway.
    stalls: AtomicU64,
}

impl Flow {
    fn open(&self, src: usize) -> bool {
        let upto: u64 = (0..self.subs)
            .filter_map(|s| self.sink.upto.get(s * self.pubs + src))
            .map(|u| u.load(Ordering::Relaxed))
            .sum();
        let sent = self.sent.get(src).map_or(0, |s| s.load(Ordering::Relaxed));
        sent.saturating_sub(upto / self.subs as u64) < self.window
    }

    /// Waits until publisher `src`'s window opens; after a second without any of its
    /// messages delivered, gives up waiting (and counts it) so that a stalled broker cannot
    /// hang the run.
    async fn wait(&self, src: usize) {
        let Some(wake) = self.sink.wake.get(src) else {
            return;
        };
        loop {
            let notified = wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.open(src) || self.stop.load(Ordering::Relaxed) {
                return;
            }
            if tokio::time::timeout(Duration::from_secs(1), notified)
                .await
                .is_err()
            {
                self.stalls.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
    }

    fn sent(&self) -> u64 {
        self.sent.iter().map(|s| s.load(Ordering::Relaxed)).sum()
    }
}

/// `pubs` publishers to `subs` subscribers on one topic, as fast as the window allows.
pub(super) async fn closed_loop(
    ctx: &Ctx,
    b: &Broker,
    label: &str,
    (pubs, subs): (usize, usize),
    qos: QoS,
    tag: &str,
) -> anyhow::Result<Figures> {
    let topic = format!("bench/max/{tag}");
    let sink = Arc::new(Sink::closed_loop(pubs, subs));
    let mut subscribers = Vec::with_capacity(subs);
    for i in 0..subs {
        let spec = SubSpec {
            id: format!("max-sub-{tag}-{i}"),
            index: i,
            filter: topic.clone(),
            qos,
            clean: true,
            max_rate: None,
            track: false,
        };
        subscribers.push(Subscriber::start(ctx.kind, &b.ep, spec, sink.clone()).await?);
    }
    let flow = Arc::new(Flow {
        sink: sink.clone(),
        pubs,
        subs,
        window: window(pubs, subs),
        sent: (0..pubs).map(|_| AtomicU64::new(0)).collect(),
        stop: AtomicBool::new(false),
        stalls: AtomicU64::new(0),
    });
    let mut tasks = Vec::with_capacity(pubs);
    for i in 0..pubs {
        let id = format!("max-pub-{tag}-{i}");
        let p = Publisher::connect(ctx.kind, &b.ep, &id, &topic, qos, false).await?;
        tasks.push(tokio::spawn(closed_publisher(p, flow.clone(), i as u32)));
    }
    tokio::time::sleep(ctx.warmup()).await;
    let meter = Meter::start(b.pid)?;
    let measured0 = sink.measured.load(Ordering::Relaxed);
    sink.measuring.store(true, Ordering::Relaxed);
    crate::bench::wait_with_progress(&format!("{}: {label}", b.name), ctx.measure).await;
    sink.measuring.store(false, Ordering::Relaxed);
    let usage = meter.stop()?;
    let delivered = sink.measured.load(Ordering::Relaxed) - measured0;

    flow.stop.store(true, Ordering::Relaxed);
    let mut notes = Vec::new();
    let mut unacked = 0;
    for t in tasks {
        match t.await.context("publisher task failed")? {
            Ok(true) => {}
            Ok(false) => unacked += 1,
            Err(e) => notes.push(format!("a publisher failed: {e:#}")),
        }
    }
    if unacked > 0 {
        notes.push(format!("{unacked} publishers left messages unacknowledged"));
    }
    // Let what is still queued arrive, so that only real losses count as missing.
    let expected = flow.sent() * subs as u64;
    let missing = || expected.saturating_sub(sink.delivered.load(Ordering::Relaxed));
    settle(Duration::from_secs(2), || missing() == 0).await;
    let missing_2s = missing();
    if missing_2s > 0 && qos != QoS::AtMostOnce {
        // Late or lost? QoS 1/2 must arrive: give the broker longer to tell.
        settle(Duration::from_secs(3), || missing() == 0).await;
        notes.push(format!(
            "{missing_2s} of {expected} QoS {} deliveries missing 2 s after the last publish, {} after 5 s",
            qos as u8,
            missing()
        ));
    } else if missing_2s > 0 {
        notes.push(format!(
            "{missing_2s} of {expected} deliveries missing (QoS 0 may drop)"
        ));
    }
    let got = stop_subscribers(subscribers, &mut notes).await;
    let stalls = flow.stalls.load(Ordering::Relaxed);
    if stalls > 0 {
        notes.push(format!(
            "{stalls} times a publisher saw nothing of its delivered for 1 s and sent anyway"
        ));
    }
    Ok(Figures {
        delivered,
        published: 0,
        usage,
        latency: Latency::of(got.latencies),
        notes,
    })
}

async fn closed_publisher(mut p: Publisher, flow: Arc<Flow>, src: u32) -> anyhow::Result<bool> {
    let mut rng = SmallRng::seed_from_u64(u64::from(src));
    let mut seq = 0;
    let i = src as usize;
    while !flow.stop.load(Ordering::Relaxed) {
        if !flow.open(i) {
            p.flush().await?;
            flow.wait(i).await;
        }
        seq += 1;
        p.publish(payload(src, seq, reading(&mut rng)), seq).await?;
        if let Some(sent) = flow.sent.get(i) {
            sent.store(seq, Ordering::Relaxed);
        }
    }
    p.finish(Duration::from_secs(5)).await
}

// ---------------------------------------------------------------------------------------------
// b, c. Fixed rate from many clients (open loop)

/// Many publishers at a fixed rate each, on their own topics under `root`, and a few
/// subscribers on `root/#`.
pub(super) struct Plan {
    pub label: String,
    pub root: String,
    pub clients: usize,
    /// Messages a second per client.
    pub rate: f64,
    pub subs: usize,
}

/// Figures of an open-loop run, with what connecting cost the broker.
pub(super) struct OpenFigures {
    pub figures: Figures,
    pub connected: usize,
    pub connect_time: Duration,
    pub rss_before_kb: u64,
    pub rss_after_kb: u64,
}

pub(super) async fn open_loop(ctx: &Ctx, b: &Broker, plan: &Plan) -> anyhow::Result<OpenFigures> {
    let sink = Arc::new(Sink::default());
    let mut notes = Vec::new();
    let mut subscribers = Vec::with_capacity(plan.subs);
    for i in 0..plan.subs {
        let spec = SubSpec {
            id: format!("{}-sub-{i}", plan.root.replace('/', "-")),
            index: i,
            filter: format!("{}/#", plan.root),
            qos: QoS::AtLeastOnce,
            clean: true,
            max_rate: None,
            track: false,
        };
        subscribers.push(Subscriber::start(ctx.kind, &b.ep, spec, sink.clone()).await?);
    }

    let rss_before_kb = rss_kb(b.pid)?;
    let t0 = Instant::now();
    let (publishers, failed) = connect_publishers(ctx.kind, b, plan).await?;
    let connect_time = t0.elapsed();
    // Let the broker finish what the last CONNACKs started before reading its RSS.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss_after_kb = rss_kb(b.pid)?;
    if let Some((n, first)) = failed {
        notes.push(format!(
            "{n} of {} connections failed (first: {first})",
            plan.clients
        ));
    }
    let connected = publishers.len();

    let period = Duration::from_secs_f64(1.0 / plan.rate);
    let published = Arc::new(AtomicU64::new(0));
    let (stop, stop_rx) = watch::channel(false);
    let mut tasks = Vec::with_capacity(connected);
    let mut rng = SmallRng::seed_from_u64(7);
    for (i, p) in publishers.into_iter().enumerate() {
        // Start times spread over one period, as devices that booted at random times.
        let jitter = period.mul_f64(rng.random::<f64>());
        tasks.push(tokio::spawn(paced_publisher(
            p,
            i as u32,
            period,
            jitter,
            published.clone(),
            stop_rx.clone(),
        )));
    }
    // Every client has started (the jitter) before the window opens.
    tokio::time::sleep(period + ctx.warmup()).await;
    let meter = Meter::start(b.pid)?;
    let measured0 = sink.measured.load(Ordering::Relaxed);
    let published0 = published.load(Ordering::Relaxed);
    sink.measuring.store(true, Ordering::Relaxed);
    crate::bench::wait_with_progress(&format!("{}: {}", b.name, plan.label), ctx.measure).await;
    sink.measuring.store(false, Ordering::Relaxed);
    let usage = meter.stop()?;
    let delivered = sink.measured.load(Ordering::Relaxed) - measured0;
    let published_in_window = published.load(Ordering::Relaxed) - published0;

    let _ = stop.send(true);
    let (mut unacked, mut failed, mut first) = (0, 0, None);
    for t in tasks {
        match t.await.context("publisher task failed")? {
            Ok(true) => {}
            Ok(false) => unacked += 1,
            Err(e) => {
                failed += 1;
                first.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }
    if unacked > 0 {
        notes.push(format!("{unacked} publishers left messages unacknowledged"));
    }
    if let Some(first) = first {
        notes.push(format!("{failed} publishers failed (first: {first})"));
    }
    let expected = published.load(Ordering::Relaxed) * plan.subs as u64;
    settle(Duration::from_secs(3), || {
        sink.delivered.load(Ordering::Relaxed) >= expected
    })
    .await;
    let missing = expected.saturating_sub(sink.delivered.load(Ordering::Relaxed));
    if missing > 0 {
        notes.push(format!(
            "{missing} of {expected} deliveries missing 3 s after the last publish"
        ));
    }
    let got = stop_subscribers(subscribers, &mut notes).await;
    Ok(OpenFigures {
        figures: Figures {
            delivered,
            published: published_in_window,
            usage,
            latency: Latency::of(got.latencies),
            notes,
        },
        connected,
        connect_time,
        rss_before_kb,
        rss_after_kb,
    })
}

/// Connects `plan.clients` publishers, [`CONNECT_CONCURRENCY`] at a time, with a progress
/// bar; also how many failed and the first error.
async fn connect_publishers(
    kind: ClientKind,
    b: &Broker,
    plan: &Plan,
) -> anyhow::Result<(Vec<Publisher>, Option<(usize, String)>)> {
    let bar = indicatif::ProgressBar::new(plan.clients as u64);
    bar.set_message(format!("{}: connecting", b.name));
    let sem = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
    let mut set = tokio::task::JoinSet::new();
    for i in 0..plan.clients {
        let permit = sem.clone().acquire_owned().await?;
        let ep = b.ep.clone();
        let (id, topic) = (
            format!("{}-{i}", plan.root.replace('/', "-")),
            format!("{}/{i}/value", plan.root),
        );
        let bar = bar.clone();
        set.spawn(async move {
            let r = Publisher::connect(kind, &ep, &id, &topic, QoS::AtLeastOnce, false).await;
            drop(permit);
            bar.inc(1);
            (i, r)
        });
    }
    let mut slots: Vec<Option<Publisher>> = (0..plan.clients).map(|_| None).collect();
    let (mut failed, mut first) = (0, None);
    while let Some(joined) = set.join_next().await {
        let (i, r) = joined.context("connect task failed")?;
        match r {
            Ok(p) => slots[i] = Some(p),
            Err(e) => {
                failed += 1;
                first.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }
    bar.finish_and_clear();
    Ok((
        slots.into_iter().flatten().collect(),
        first.map(|f| (failed, f)),
    ))
}

/// Publishes once per `period` (after `jitter`) until stopped. Ticks missed while the
/// client was held back are not made up (`MissedTickBehavior::Delay`): a device sampling at
/// a fixed rate sends its next sample, not a burst of old ones.
async fn paced_publisher(
    mut p: Publisher,
    src: u32,
    period: Duration,
    jitter: Duration,
    published: Arc<AtomicU64>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<bool> {
    let mut rng = SmallRng::seed_from_u64(u64::from(src));
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + jitter, period);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut seq = 0;
    loop {
        tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => break,
            _ = ticks.tick() => {}
        }
        seq += 1;
        p.publish(payload(src, seq, reading(&mut rng)), seq).await?;
        p.flush().await?;
        published.fetch_add(1, Ordering::Relaxed);
    }
    p.finish(Duration::from_secs(5)).await
}

// ---------------------------------------------------------------------------------------------
// d. Overload

/// Figures of the overload scenario.
pub(super) struct OverloadFigures {
    pub publish_for: Duration,
    /// Messages handed to the clients while publishing.
    pub sent: u64,
    /// Messages PUBACKed to the publishers.
    pub acked: u64,
    /// Distinct messages the subscriber received.
    pub delivered: u64,
    /// PUBACKed and never delivered.
    pub lost: u64,
    pub duplicates: u64,
    /// Delivered but never PUBACKed (a publisher gave up waiting).
    pub unacked_delivered: u64,
    pub drain: Duration,
    pub reconnects: u64,
    /// Publishing and draining.
    pub usage: Usage,
    /// Deliveries in all, duplicates included (for CPU per message).
    pub deliveries: u64,
    pub notes: Vec<String>,
}

/// Publishers at [`OVERLOAD_PUBLISHERS`] x [`OVERLOAD_RATE`] msgs/s for `publish_for`, QoS 1,
/// to one persistent-session subscriber that handles [`OVERLOAD_SUB_RATE`] msgs/s; then the
/// subscriber drains. Every message is numbered, so losses and duplicates are counted exactly.
pub(super) async fn overload(
    ctx: &Ctx,
    b: &Broker,
    tag: &str,
    publish_for: Duration,
) -> anyhow::Result<OverloadFigures> {
    let root = format!("bench/overload/{tag}");
    let sink = Arc::new(Sink::default());
    let spec = SubSpec {
        id: format!("overload-sub-{tag}"),
        index: 0,
        filter: format!("{root}/#"),
        qos: QoS::AtLeastOnce,
        clean: false,
        max_rate: Some(OVERLOAD_SUB_RATE),
        track: true,
    };
    let subscriber = Subscriber::start(ctx.kind, &b.ep, spec, sink.clone()).await?;
    let mut publishers = Vec::with_capacity(OVERLOAD_PUBLISHERS);
    for i in 0..OVERLOAD_PUBLISHERS {
        let (id, topic) = (format!("overload-pub-{tag}-{i}"), format!("{root}/{i}"));
        publishers
            .push(Publisher::connect(ctx.kind, &b.ep, &id, &topic, QoS::AtLeastOnce, true).await?);
    }
    let acks: Vec<_> = publishers.iter().map(|p| p.acks.clone()).collect();

    let meter = Meter::start(b.pid)?;
    let published = Arc::new(AtomicU64::new(0));
    let (stop, stop_rx) = watch::channel(false);
    let period = Duration::from_secs(1) / OVERLOAD_RATE;
    let tasks: Vec<_> = publishers
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            let jitter = period.mul_f64(i as f64 / OVERLOAD_PUBLISHERS as f64);
            tokio::spawn(paced_publisher(
                p,
                i as u32,
                period,
                jitter,
                published.clone(),
                stop_rx.clone(),
            ))
        })
        .collect();
    crate::bench::wait_with_progress(&format!("{}: overload", b.name), publish_for).await;
    let _ = stop.send(true);
    let sent = published.load(Ordering::Relaxed);

    let mut notes = Vec::new();
    let drain_start = Instant::now();
    // What a broker dropped it dropped on arrival: the drain need not be slow to count it.
    sink.unthrottled.store(true, Ordering::Relaxed);
    // Publishers wait for their acknowledgements while the subscriber drains.
    for t in tasks {
        if let Err(e) = t.await.context("publisher task failed")? {
            notes.push(format!("a publisher failed: {e:#}"));
        }
    }
    let acked_total: u64 = acks.iter().map(|a| a.count.load(Ordering::Relaxed)).sum();
    let quiet_ns = DRAIN_QUIET.as_nanos() as u64;
    settle(DRAIN_MAX.saturating_sub(drain_start.elapsed()), || {
        sink.delivered.load(Ordering::Relaxed) >= acked_total
            || super::client::now_ns().saturating_sub(sink.last_ns.load(Ordering::Relaxed))
                > quiet_ns
    })
    .await;
    let drain = drain_start.elapsed();
    let usage = meter.stop()?;
    let got = stop_subscribers(vec![subscriber], &mut notes).await;

    let mut acked = HashSet::new();
    for (src, a) in acks.iter().enumerate() {
        acked.extend(a.acked().into_iter().map(|seq| (src as u32, seq)));
    }
    let lost = acked.iter().filter(|k| !got.seen.contains_key(k)).count() as u64;
    let unacked_delivered = got.seen.keys().filter(|k| !acked.contains(k)).count() as u64;
    let duplicates = got
        .seen
        .values()
        .map(|&n| u64::from(n.saturating_sub(1)))
        .sum();
    Ok(OverloadFigures {
        publish_for,
        sent,
        acked: acked_total,
        delivered: got.seen.len() as u64,
        lost,
        duplicates,
        unacked_delivered,
        drain,
        reconnects: sink.reconnects.load(Ordering::Relaxed),
        usage,
        deliveries: sink.delivered.load(Ordering::Relaxed),
        notes,
    })
}
