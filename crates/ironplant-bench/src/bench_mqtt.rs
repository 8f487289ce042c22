//! `ironplant-bench mqtt`: the same MQTT load against our broker and against Mosquitto in one
//! run, so the ratio between them is measured under the same conditions.
//!
//! Both brokers are child processes (ours is `ironplant-bench mqtt-server`). When `taskset` is
//! available they share one CPU set and the load generator (this process) gets the rest.
//! The load generator is a small client on our own codec.
//!
//! Flow control: publishers never run ahead of the subscribers by more than [`WINDOW`]
//! messages (end to end, averaged over subscribers), so neither broker is measured by how fast
//! it can fill or drop its queues; at QoS 1 each publisher also keeps at most
//! [`QOS1_INFLIGHT`] PUBLISHes unacknowledged. Throughput is counted at the subscribers.

use std::net::SocketAddr;
use std::num::NonZeroU16;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use ironplant_mqtt::codec::{
    self, Connect, MqttString, Packet, ProtocolVersion, Publish, PublishResponse, QoS, ReasonCode,
    Subscribe, Subscription, SubscriptionOptions,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::process::Child;
use tokio::sync::Notify;

const VERSION: ProtocolVersion = ProtocolVersion::V311;
const PAYLOAD: usize = 64;
const MAX_PACKET: usize = 1 << 20;
/// Messages the publishers may be ahead of the (average) subscriber; divided by the number of
/// subscribers in fan-out, down to 20.
const WINDOW: u64 = 1000;
/// Unacknowledged QoS 1 PUBLISHes per publisher.
const QOS1_INFLIGHT: u64 = 100;
const WARMUP: Duration = Duration::from_millis(500);
const MOSQUITTO: &str = "/usr/sbin/mosquitto";

/// Runs our broker until killed (the child side of the benchmark); with `policy_dir`, behind
/// the platform's authorisation policy of that data directory.
pub async fn server(listen: SocketAddr, policy_dir: Option<&Path>) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let broker = match policy_dir {
        None => ironplant_mqtt::Broker::new(ironplant_mqtt::BrokerConfig::default()),
        Some(dir) => {
            // The platform's own `Auth`, as `ironplant serve` wires it (no reserved topics:
            // this broker has no namespace and no Sparkplug host).
            let sec = ironplant_server::secure::open(dir)?;
            let auth = Arc::new(ironplant_server::secure::BlockingAuth {
                inner: sec.mqtt.clone(),
                reserved: None,
            });
            ironplant_mqtt::Broker::open(ironplant_mqtt::BrokerConfig::default(), auth)?
        }
    };
    println!("listening on {}", listener.local_addr()?);
    broker.serve(listener).await?;
    Ok(())
}

/// The API token the load generator logs in with (`--policy`), and our broker's address.
static TOKEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
static OURS: std::sync::OnceLock<SocketAddr> = std::sync::OnceLock::new();

/// A data directory with an engineer `bench` limited to the `bench` tag prefix, and its token.
fn policy_dir() -> anyhow::Result<tempfile::TempDir> {
    let dir = tempfile::tempdir().context("cannot create a temporary data directory")?;
    let sec = ironplant_server::secure::open(dir.path())?;
    let password = "bench-password-long-enough";
    sec.users
        .create_user("bench", password, ironplant_security::Role::Engineer, None)
        .context("cannot create the bench user")?;
    let token = sec
        .users
        .create_token("bench", None, Duration::from_secs(3600), "bench", None)
        .context("cannot create the bench token")?;
    let rule = ironplant_security::PrefixRule {
        read: Some(vec!["bench".into()]),
        write: Some(vec!["bench".into()]),
    };
    ironplant_security::TagScopes::set_user_rule(
        &ironplant_security::TagScopes::path(&sec),
        "bench",
        &rule,
    )
    .map_err(|e| anyhow::anyhow!(e))?;
    let _ = TOKEN.set(token.token);
    Ok(dir)
}

/// The benchmark: every scenario against both brokers, then the optional idle-connection test.
pub async fn run(seconds: u64, idle: usize, policy: bool) -> anyhow::Result<()> {
    let duration = Duration::from_secs(seconds.max(1));
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let taskset = Path::new("/usr/bin/taskset").exists() && cpus >= 2;

    let policy_dir = policy.then(policy_dir).transpose()?;
    let mut server_args = vec!["mqtt-server"];
    if let Some(d) = &policy_dir {
        server_args.push("--policy-dir");
        server_args.push(d.path().to_str().context("temporary dir is not UTF-8")?);
    }
    let (ours_child, ours_addr) = crate::bench::spawn_server(&server_args).await?;
    let ours_addr: SocketAddr = ours_addr.parse()?;
    let _ = OURS.set(ours_addr);
    let mosq = Mosquitto::start().await?;
    let ours_pid = ours_child.id().context("our broker exited")?;
    let mosq_pid = mosq.child.id().context("mosquitto exited")?;
    let placement = if taskset {
        pin(ours_pid, "0")?;
        pin(mosq_pid, "0")?;
        pin(std::process::id(), &format!("1-{}", cpus - 1))?;
        format!(
            "brokers pinned to CPU 0, load generator to CPUs 1-{}",
            cpus - 1
        )
    } else {
        "no CPU pinning (taskset missing or one CPU)".to_owned()
    };
    println!(
        "ironplant bench mqtt: {} s per scenario after {} ms warm-up, {PAYLOAD}-byte payloads, MQTT 3.1.1",
        duration.as_secs(),
        WARMUP.as_millis()
    );
    println!(
        "both brokers in child processes; {placement}; {}",
        mosq.version
    );
    if policy {
        println!(
            "ours runs the platform's policy (token login, ACL, tag-prefix rules for `bench`); Mosquitto allows anonymous clients"
        );
    }
    println!(
        "flow control: <= {WINDOW} messages ahead of the subscribers (fan-out: 20); QoS 1: <= {QOS1_INFLIGHT} unacked per publisher; Mosquitto keeps its default max_inflight_messages (20) towards subscribers"
    );

    if idle > 0 {
        idle_rss(idle, ours_addr, ours_pid, mosq.addr, mosq_pid).await?;
    }

    let scenarios: [(&str, usize, usize); 3] = [
        ("1 -> 1", 1, 1),
        ("100 -> 1 (fan-in)", 100, 1),
        ("1 -> 100 (fan-out)", 1, 100),
    ];
    let mut rows = Vec::new();
    let mut verdicts = Vec::new();
    let mut notes = Vec::new();
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce] {
        for (i, &(name, pubs, subs)) in scenarios.iter().enumerate() {
            let label = format!("{name}, QoS {}", qos as u8);
            let tag = format!("{}-{i}", qos as u8);
            let ours = scenario(
                &label,
                "ironplant",
                ours_addr,
                pubs,
                subs,
                qos,
                duration,
                &tag,
            )
            .await
            .with_context(|| format!("ironplant: {label}"))?;
            let theirs = scenario(
                &label,
                "Mosquitto",
                mosq.addr,
                pubs,
                subs,
                qos,
                duration,
                &tag,
            )
            .await
            .with_context(|| format!("Mosquitto: {label}"))?;
            let ratio = ours.rate / theirs.rate.max(1e-9);
            let met = ratio >= 1.5 && ours.p99 <= theirs.p99;
            verdicts.push(format!("{label}: {}", if met { "met" } else { "MISSED" }));
            for (who, f) in [("ironplant", &ours), ("Mosquitto", &theirs)] {
                if f.lost > 0 || f.stalls > 0 {
                    notes.push(format!(
                        "{label}, {who}: {} deliveries missing after the run, {} waits of 50 ms for progress",
                        f.lost, f.stalls
                    ));
                }
            }
            rows.push([
                label,
                format!("{:.0}", ours.rate),
                format!("{:.0}", theirs.rate),
                format!("{ratio:.2}x"),
                format!("{} / {}", fmt_ns(ours.p50), fmt_ns(ours.p99)),
                format!("{} / {}", fmt_ns(theirs.p50), fmt_ns(theirs.p99)),
            ]);
        }
    }
    println!();
    crate::bench::print_table(
        [
            "scenario",
            "ironplant msgs/s",
            "Mosquitto msgs/s",
            "ratio",
            "ironplant p50/p99",
            "Mosquitto p50/p99",
        ],
        &rows,
    );
    println!();
    println!("msgs/s = messages delivered per second, summed over subscribers");
    println!(
        "latency = publish to delivery under saturating closed-loop load, so mostly queueing: about (messages in flight) / (msgs/s)"
    );
    println!("target: >= 1.5x Mosquitto's msgs/s in every scenario, with p99 no worse");
    for v in &verdicts {
        println!("  {v}");
    }
    for n in &notes {
        println!("note: {n}");
    }

    // Kill and reap both brokers (a dropped child is killed but left unreaped).
    let mut ours_child = ours_child;
    let mut mosq = mosq;
    let _ = ours_child.kill().await;
    let _ = mosq.child.kill().await;
    Ok(())
}

/// Opens `idle` connections to each broker and reports its RSS before and after. Runs before
/// the load scenarios, whose freed buffers a broker's allocator may keep and reuse.
async fn idle_rss(
    idle: usize,
    ours_addr: SocketAddr,
    ours_pid: u32,
    mosq_addr: SocketAddr,
    mosq_pid: u32,
) -> anyhow::Result<()> {
    let limit = fd_limit().unwrap_or(1024);
    let n = idle.min(limit.saturating_sub(256));
    if n < idle {
        println!("idle: open-file limit is {limit}; capped at {n} connections (raise `ulimit -n` for more)");
    }
    println!();
    let mut idle_rows = Vec::new();
    let mut verdict = String::new();
    for (who, addr, pid) in [
        ("ironplant", ours_addr, ours_pid),
        ("Mosquitto", mosq_addr, mosq_pid),
    ] {
        let before = rss_kb(pid)?;
        let conns = idle_connections(who, addr, n).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let after = rss_kb(pid)?;
        drop(conns);
        let per = (after.saturating_sub(before)) as f64 * 1024.0 / n.max(1) as f64;
        idle_rows.push([
            who.to_owned(),
            format!("{:.1} MB", before as f64 / 1024.0),
            format!("{:.1} MB", after as f64 / 1024.0),
            format!("{:.1} kB", per / 1024.0),
        ]);
        if who == "ironplant" {
            let projected = before as f64 / 1024.0 + per * 10_000.0 / (1024.0 * 1024.0);
            verdict = format!(
                "target: 10,000 idle connections under 200 MB RSS (ironplant, projected from {n}): {projected:.1} MB — {}",
                if projected < 200.0 { "met" } else { "MISSED" }
            );
        }
    }
    crate::bench::print_table(
        [
            &format!("broker ({n} idle connections)"),
            "RSS before",
            "RSS after",
            "per connection",
        ],
        &idle_rows,
    );
    println!("{verdict}");
    Ok(())
}

/// Pins every thread of `pid` to `cpus` (a taskset CPU list).
fn pin(pid: u32, cpus: &str) -> anyhow::Result<()> {
    let status = std::process::Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &pid.to_string()])
        .stdout(Stdio::null())
        .status()
        .context("cannot run taskset")?;
    if !status.success() {
        bail!("taskset -a -p -c {cpus} {pid} failed: {status}");
    }
    Ok(())
}

fn rss_kb(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("no VmRSS in {path}"))
}

/// The soft open-file limit of this process (the brokers inherit it).
fn fd_limit() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

async fn idle_connections(
    who: &str,
    addr: SocketAddr,
    n: usize,
) -> anyhow::Result<Vec<(Reader, OwnedWriteHalf)>> {
    let bar = indicatif::ProgressBar::new(n as u64);
    bar.set_message(format!("{who}: idle connections"));
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        conns.push(
            connect(addr, &format!("idle-{i}"))
                .await
                .with_context(|| format!("{who}: idle connection {i}"))?,
        );
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(conns)
}

/// Mosquitto on a free port with its own config, in a temp dir.
struct Mosquitto {
    child: Child,
    addr: SocketAddr,
    version: String,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    async fn start() -> anyhow::Result<Mosquitto> {
        if !Path::new(MOSQUITTO).exists() {
            eprintln!("{MOSQUITTO} missing: apt-get install -y mosquitto");
            for args in [&["update"][..], &["install", "-y", "mosquitto"][..]] {
                let status = tokio::process::Command::new("apt-get")
                    .args(args)
                    .stdout(Stdio::null())
                    .status()
                    .await
                    .context("cannot run apt-get")?;
                if !status.success() {
                    bail!("apt-get {} failed: {status}", args.join(" "));
                }
            }
        }
        let version = std::process::Command::new(MOSQUITTO)
            .arg("-h")
            .output()
            .ok()
            .and_then(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .next()
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| "mosquitto (version unknown)".to_owned());
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let dir = tempfile::Builder::new()
            .prefix("ironplant-bench-mosquitto-")
            .tempdir()?;
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest none\nmax_queued_messages 100000\n"
            ),
        )?;
        let child = tokio::process::Command::new(MOSQUITTO)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start mosquitto")?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).await.is_err() {
            if Instant::now() > deadline {
                bail!("mosquitto did not accept connections on {addr} within 10 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Mosquitto {
            child,
            addr,
            version,
            _dir: dir,
        })
    }
}

/// The read side of a client connection: bytes in, packets out.
struct Reader {
    rd: OwnedReadHalf,
    buf: Vec<u8>,
    start: usize,
}

impl Reader {
    /// Reads once more from the socket; false at end of stream. Cancel-safe (callers wrap it
    /// in timeouts): bytes land in the buffer's spare capacity only when a read completes.
    async fn fill(&mut self) -> anyhow::Result<bool> {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.reserve(64 * 1024);
        Ok(self.rd.read_buf(&mut self.buf).await? > 0)
    }

    /// The next complete packet already read, if any.
    fn try_next(&mut self) -> anyhow::Result<Option<Packet>> {
        match codec::decode(&self.buf[self.start..], VERSION, MAX_PACKET)? {
            Some((p, used)) => {
                self.start += used;
                Ok(Some(p))
            }
            None => Ok(None),
        }
    }

    async fn next(&mut self) -> anyhow::Result<Packet> {
        loop {
            if let Some(p) = self.try_next()? {
                return Ok(p);
            }
            if !tokio::time::timeout(Duration::from_secs(10), self.fill())
                .await
                .context("no answer from the broker within 10 s")??
            {
                bail!("broker closed the connection");
            }
        }
    }
}

async fn connect(addr: SocketAddr, client_id: &str) -> anyhow::Result<(Reader, OwnedWriteHalf)> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("cannot connect to {addr}"))?;
    stream.set_nodelay(true)?;
    let (rd, mut wr) = stream.into_split();
    let mut out = Vec::new();
    let mut connect = Connect::new(VERSION, MqttString::try_from(client_id)?, 0);
    // The token goes to our broker only (Mosquitto runs anonymous).
    if let Some(token) = TOKEN.get().filter(|_| OURS.get() == Some(&addr)) {
        connect.username = Some(MqttString::try_from("bench")?);
        connect.password = Some(token.clone().into_bytes().into());
    }
    codec::encode(&Packet::Connect(Box::new(connect)), VERSION, &mut out)?;
    wr.write_all(&out).await?;
    let mut reader = Reader {
        rd,
        buf: Vec::with_capacity(1024),
        start: 0,
    };
    match reader.next().await? {
        Packet::Connack(c) if c.reason_code == ReasonCode::Success => Ok((reader, wr)),
        p => bail!("expected a successful CONNACK, got {p:?}"),
    }
}

async fn subscribe(
    reader: &mut Reader,
    wr: &mut OwnedWriteHalf,
    filter: &str,
    qos: QoS,
) -> anyhow::Result<()> {
    let sub = Subscribe {
        packet_id: NonZeroU16::MIN,
        properties: Default::default(),
        subscriptions: vec![Subscription {
            filter: MqttString::try_from(filter)?,
            options: SubscriptionOptions::qos(qos),
        }],
    };
    let mut out = Vec::new();
    codec::encode(&Packet::Subscribe(sub), VERSION, &mut out)?;
    wr.write_all(&out).await?;
    match reader.next().await? {
        Packet::SubAck(a) if a.reason_codes.iter().all(|c| (*c as u8) < 0x80) => Ok(()),
        p => bail!("expected a successful SUBACK, got {p:?}"),
    }
}

/// State shared by the publishers and subscribers of one scenario.
struct Shared {
    start: Instant,
    subs: u64,
    /// Messages the publishers may be ahead of the average subscriber.
    window: u64,
    /// Messages published.
    sent: AtomicU64,
    /// Messages received, summed over subscribers.
    delivered: AtomicU64,
    /// Delivered while `measuring`.
    measured: AtomicU64,
    measuring: AtomicBool,
    stop: AtomicBool,
    done: AtomicBool,
    /// Times a publisher saw no progress for 50 ms and sent anyway.
    stalls: AtomicU64,
    progress: Notify,
}

impl Shared {
    fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    /// Waits until the publishers are less than [`WINDOW`] messages ahead of the subscribers.
    /// A lost message would stall the run for good, so after 50 ms without progress this
    /// gives up waiting (and counts it).
    async fn wait_window(&self) {
        loop {
            let notified = self.progress.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let ahead = self
                .sent
                .load(Ordering::Relaxed)
                .saturating_sub(self.delivered.load(Ordering::Relaxed) / self.subs);
            if ahead < self.window || self.stop.load(Ordering::Relaxed) {
                return;
            }
            if tokio::time::timeout(Duration::from_millis(50), notified)
                .await
                .is_err()
            {
                self.stalls.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
    }
}

struct Figures {
    rate: f64,
    p50: u64,
    p99: u64,
    lost: u64,
    stalls: u64,
}

#[allow(clippy::too_many_arguments)]
async fn scenario(
    label: &str,
    who: &str,
    addr: SocketAddr,
    pubs: usize,
    subs: usize,
    qos: QoS,
    duration: Duration,
    tag: &str,
) -> anyhow::Result<Figures> {
    let topic = format!("bench/{tag}");
    let sh = Arc::new(Shared {
        start: Instant::now(),
        subs: subs as u64,
        // Fan-out multiplies what is queued: keep the deliveries in flight near WINDOW too.
        window: (WINDOW / subs as u64).max(20),
        sent: AtomicU64::new(0),
        delivered: AtomicU64::new(0),
        measured: AtomicU64::new(0),
        measuring: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        done: AtomicBool::new(false),
        stalls: AtomicU64::new(0),
        progress: Notify::new(),
    });
    let mut sub_tasks = Vec::with_capacity(subs);
    for i in 0..subs {
        let (mut rd, mut wr) = connect(addr, &format!("sub-{tag}-{i}")).await?;
        subscribe(&mut rd, &mut wr, &topic, qos).await?;
        sub_tasks.push(tokio::spawn(subscriber(sh.clone(), rd, wr)));
    }
    // Bursts small enough that all publishers together overshoot the window by at most 2x.
    let burst = (sh.window / pubs as u64).clamp(1, 100);
    let topic = MqttString::try_from(topic)?;
    let mut pub_tasks = Vec::with_capacity(pubs);
    for i in 0..pubs {
        let (rd, wr) = connect(addr, &format!("pub-{tag}-{i}")).await?;
        pub_tasks.push(tokio::spawn(publisher(
            sh.clone(),
            rd,
            wr,
            topic.clone(),
            qos,
            burst,
        )));
    }
    tokio::time::sleep(WARMUP).await;
    sh.measuring.store(true, Ordering::Relaxed);
    let t0 = Instant::now();
    crate::bench::wait_with_progress(&format!("{who}: {label}"), duration).await;
    sh.measuring.store(false, Ordering::Relaxed);
    let wall = t0.elapsed();
    sh.stop.store(true, Ordering::Relaxed);
    for t in pub_tasks {
        t.await??;
    }
    // Let what is still queued arrive, so that only real losses count as lost.
    let deadline = Instant::now() + Duration::from_secs(2);
    let expected = sh.sent.load(Ordering::Relaxed) * subs as u64;
    while sh.delivered.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    sh.done.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for t in sub_tasks {
        latencies.extend(t.await??);
    }
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    Ok(Figures {
        rate: sh.measured.load(Ordering::Relaxed) as f64 / wall.as_secs_f64(),
        p50: pct(0.50),
        p99: pct(0.99),
        lost: expected.saturating_sub(sh.delivered.load(Ordering::Relaxed)),
        stalls: sh.stalls.load(Ordering::Relaxed),
    })
}

async fn publisher(
    sh: Arc<Shared>,
    mut rd: Reader,
    mut wr: OwnedWriteHalf,
    topic: MqttString,
    qos: QoS,
    burst: u64,
) -> anyhow::Result<()> {
    let qos1 = qos != QoS::AtMostOnce;
    let mut out = Vec::with_capacity(burst as usize * (PAYLOAD + 32));
    let mut inflight = 0u64;
    let mut pid: u16 = 0;
    let mut payload = [0u8; PAYLOAD];
    while !sh.stop.load(Ordering::Relaxed) {
        sh.wait_window().await;
        out.clear();
        let mut n = 0;
        while n < burst && (!qos1 || inflight < QOS1_INFLIGHT) {
            payload[..8].copy_from_slice(&sh.now_ns().to_le_bytes());
            let mut p = Publish::new(topic.clone(), payload.to_vec().into());
            if qos1 {
                pid = pid.wrapping_add(1).max(1);
                p.qos = qos;
                p.packet_id = NonZeroU16::new(pid);
                inflight += 1;
            }
            codec::encode(&Packet::Publish(p), VERSION, &mut out)?;
            n += 1;
        }
        if n > 0 {
            sh.sent.fetch_add(n, Ordering::Relaxed);
            wr.write_all(&out).await?;
        }
        if qos1 {
            // Block for PUBACKs only when the window is full; take whatever has arrived.
            if inflight >= QOS1_INFLIGHT {
                match tokio::time::timeout(Duration::from_millis(200), rd.fill()).await {
                    Ok(Ok(true)) | Err(_) => {}
                    Ok(Ok(false)) => bail!("broker closed a publisher's connection"),
                    Ok(Err(e)) => return Err(e),
                }
            }
            while let Some(p) = rd.try_next()? {
                if let Packet::PubAck(_) = p {
                    inflight = inflight.saturating_sub(1);
                }
            }
        }
    }
    // Closing with PUBACKs unread would reset the connection, and a broker may then discard
    // PUBLISHes it has not read yet: wait for every ack first.
    let deadline = Instant::now() + Duration::from_secs(5);
    while inflight > 0 && Instant::now() < deadline {
        while let Some(p) = rd.try_next()? {
            if let Packet::PubAck(_) = p {
                inflight = inflight.saturating_sub(1);
            }
        }
        if inflight > 0
            && !matches!(
                tokio::time::timeout(Duration::from_millis(200), rd.fill()).await,
                Ok(Ok(true)) | Err(_)
            )
        {
            break;
        }
    }
    disconnect(&mut wr).await
}

/// Sends DISCONNECT and closes the write side, so the broker sees a normal end of session.
async fn disconnect(wr: &mut OwnedWriteHalf) -> anyhow::Result<()> {
    let mut out = Vec::new();
    codec::encode(&Packet::Disconnect(Default::default()), VERSION, &mut out)?;
    wr.write_all(&out).await?;
    wr.shutdown().await?;
    Ok(())
}

/// Receives until told to stop; returns the latencies (ns) of what arrived while measuring.
async fn subscriber(
    sh: Arc<Shared>,
    mut rd: Reader,
    mut wr: OwnedWriteHalf,
) -> anyhow::Result<Vec<u64>> {
    let mut latencies = Vec::new();
    let mut acks = Vec::new();
    while !sh.done.load(Ordering::Relaxed) {
        match tokio::time::timeout(Duration::from_millis(100), rd.fill()).await {
            Err(_) => continue,
            Ok(r) => {
                if !r? {
                    bail!("broker closed a subscriber's connection");
                }
            }
        }
        let now = sh.now_ns();
        let measuring = sh.measuring.load(Ordering::Relaxed);
        let mut n = 0u64;
        acks.clear();
        while let Some(p) = rd.try_next()? {
            let Packet::Publish(p) = p else { continue };
            n += 1;
            if measuring {
                if let Some(ts) = p.payload.get(..8) {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(ts);
                    latencies.push(now.saturating_sub(u64::from_le_bytes(b)));
                }
            }
            if let Some(id) = p.packet_id {
                codec::encode(
                    &Packet::PubAck(PublishResponse::new(id)),
                    VERSION,
                    &mut acks,
                )?;
            }
        }
        if !acks.is_empty() {
            wr.write_all(&acks).await?;
        }
        sh.delivered.fetch_add(n, Ordering::Relaxed);
        if measuring {
            sh.measured.fetch_add(n, Ordering::Relaxed);
        }
        sh.progress.notify_waiters();
    }
    Ok(latencies)
}

fn fmt_ns(ns: u64) -> String {
    if ns < 1_000_000 {
        format!("{:.0} µs", ns as f64 / 1e3)
    } else {
        format!("{:.2} ms", ns as f64 / 1e6)
    }
}
