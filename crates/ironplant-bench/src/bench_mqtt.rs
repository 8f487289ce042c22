//! `ironplant-bench mqtt`: the same MQTT load against our broker and against Mosquitto in one
//! run, so the ratio between them is measured under the same conditions.
//!
//! Both brokers are child processes (ours is `ironplant-bench mqtt-server`); with `taskset`
//! they share CPU 0 and the load generator (this process) has the others. The load generator
//! drives them as field clients do: rumqttc by default (a third-party library, one PUBLISH per
//! request), or our own codec client (`--client ours`, `--batch N` PUBLISHes per write).
//! Scenarios: (a) max throughput in a closed loop, (b) fixed rates from many slow publishers,
//! (c) the plant regime (10,000 clients at 1 msg/s), (d) overload with a slow subscriber,
//! counting acknowledged messages that never arrive. Every row has the broker's CPU per
//! delivered message, read from `/proc`.

#[path = "bench_mqtt_client.rs"]
mod client;
#[path = "bench_mqtt_probe.rs"]
pub(crate) mod probe;
#[path = "bench_mqtt_scenarios.rs"]
mod scenarios;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use ironplant_mqtt::codec::QoS;
use tokio::net::TcpStream;
use tokio::process::Child;

pub use client::Library;
use client::{ClientKind, Conn, Endpoint, OURS_INFLIGHT, RUMQTTC_CAP};
use probe::{fmt_ns, fmt_us, Usage};
use scenarios::{Broker, Ctx, Figures, OpenFigures, OverloadFigures, Plan};

const MOSQUITTO: &str = "/usr/sbin/mosquitto";
/// Our broker's bounds (`BrokerConfig::default()`, which `mqtt-server` runs), given to
/// Mosquitto too.
#[derive(Clone, Copy)]
struct Bounds {
    /// QoS 1/2 messages in flight to one client.
    inflight: usize,
    /// Messages queued for one client beyond those in flight: `max_queue` (the connection's
    /// writer) plus `max_session_queue` (its session).
    queued: usize,
}

fn our_bounds() -> Bounds {
    let c = ironplant_mqtt::BrokerConfig::default();
    Bounds {
        inflight: usize::from(c.max_inflight),
        queued: c.max_queue + c.max_session_queue,
    }
}
/// File descriptors kept free for everything but the plant regime's connections.
const FD_RESERVE: usize = 256;

/// The flags of `ironplant-bench mqtt` beyond `--seconds`, `--idle` and `--policy`.
#[derive(clap::Args, Clone, Debug)]
pub struct Flags {
    /// Client library of the load generator.
    #[arg(long, value_enum, default_value_t = Library::Rumqttc)]
    pub client: Library,
    /// PUBLISHes our client (`--client ours`) packs into one write; 1 = one per write.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub batch: u16,
    /// Scenarios, comma-separated: a = max throughput (1->1, fan-in, fan-out; QoS 0/1/2),
    /// b = fixed 5k and 50k msgs/s with latency, c = the plant regime (--clients at 1 msg/s),
    /// d = overload (slow subscriber; acknowledged messages lost).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "a,b,c,d")]
    pub scenarios: Vec<Scenario>,
    /// Clients of the plant regime (c), each publishing 1 msg/s; also caps the publishers
    /// of the fixed-rate rows (b), whose total rate stays.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub clients: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    A,
    B,
    C,
    D,
}

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

/// A data directory with an engineer `bench` limited to the `bench` tag prefix, and its token.
fn policy_dir() -> anyhow::Result<(tempfile::TempDir, String)> {
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
    Ok((dir, token.token))
}

/// The benchmark: the chosen scenarios against both brokers, then how they could be biased.
pub async fn run(seconds: u64, idle: usize, policy: bool, flags: Flags) -> anyhow::Result<()> {
    if flags.client == Library::Rumqttc && flags.batch > 1 {
        bail!("--batch packs PUBLISHes of our own client: add --client ours");
    }
    let ctx_kind = ClientKind {
        lib: flags.client,
        batch: usize::from(flags.batch),
    };
    let measure = Duration::from_secs(seconds.max(1));
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let taskset = Path::new("/usr/bin/taskset").exists() && cpus >= 2;

    let policy = policy.then(policy_dir).transpose()?;
    let mut server_args = vec!["mqtt-server"];
    if let Some((d, _)) = &policy {
        server_args.push("--policy-dir");
        server_args.push(d.path().to_str().context("temporary dir is not UTF-8")?);
    }
    let (mut ours_child, ours_addr) = crate::bench::spawn_server(&server_args).await?;
    let mut mosq = Mosquitto::start().await?;
    let ours = Broker {
        name: "ironplant",
        ep: Endpoint {
            addr: ours_addr.parse()?,
            login: policy
                .as_ref()
                .map(|(_, t)| ("bench".to_owned(), t.clone())),
        },
        pid: ours_child.id().context("our broker exited")?,
    };
    let theirs = Broker {
        name: "Mosquitto",
        ep: Endpoint {
            addr: mosq.addr,
            login: None,
        },
        pid: mosq.child.id().context("mosquitto exited")?,
    };
    let (placement, generator_cores) = if taskset {
        pin(ours.pid, "0")?;
        pin(theirs.pid, "0")?;
        pin(std::process::id(), &format!("1-{}", cpus - 1))?;
        (
            if cpus > 2 {
                format!(
                    "both brokers pinned to CPU 0, the load generator to CPUs 1-{}",
                    cpus - 1
                )
            } else {
                "both brokers pinned to CPU 0, the load generator to CPU 1".to_owned()
            },
            cpus - 1,
        )
    } else {
        (
            "no CPU pinning (taskset missing or one CPU)".to_owned(),
            cpus,
        )
    };
    let ctx = Ctx {
        kind: ctx_kind,
        measure,
        generator_cores,
    };
    print_header(&ctx, &placement, &mosq, policy.is_some());

    if idle > 0 {
        idle_rss(idle, &ours, &theirs).await?;
    }
    let brokers = [&ours, &theirs];
    let fds = probe::fd_limit().unwrap_or(1024);
    let want = |s| flags.scenarios.contains(&s);
    let client_cap = fds.saturating_sub(FD_RESERVE).max(1);
    // The plant regime first: its RSS figures are then not inflated by what the brokers'
    // allocators kept from the queues of the other scenarios.
    if want(Scenario::C) {
        let n = (flags.clients as usize).min(client_cap);
        if n < flags.clients as usize {
            println!(
                "\nnote: the open-file limit is {fds}; the plant regime is capped at {n} clients (raise `ulimit -n` for {})",
                flags.clients
            );
        }
        plant(&ctx, brokers, n).await?;
    }
    if want(Scenario::A) {
        max_throughput(&ctx, brokers).await?;
    }
    if want(Scenario::B) {
        fixed_rate(&ctx, brokers, (flags.clients as usize).min(client_cap)).await?;
    }
    if want(Scenario::D) {
        overload(&ctx, brokers).await?;
    }
    print_biases(&ctx, &flags);

    // Kill and reap both brokers (a dropped child is killed but left unreaped).
    let _ = ours_child.kill().await;
    let _ = mosq.child.kill().await;
    Ok(())
}

fn qos_name(qos: QoS) -> u8 {
    qos as u8
}

fn print_header(ctx: &Ctx, placement: &str, mosq: &Mosquitto, policy: bool) {
    println!(
        "ironplant bench mqtt: MQTT 3.1.1 over loopback, {} s measured per row; payloads are ~85-byte JSON readings carrying send time, publisher and sequence number",
        ctx.measure.as_secs()
    );
    let c = ironplant_mqtt::BrokerConfig::default();
    println!(
        "brokers: ours (`ironplant-bench mqtt-server`, BrokerConfig::default(): max_inflight {}, max_queue {} + max_session_queue {} per client, slow_consumer_timeout {} s, no state directory, TCP_NODELAY on) and {}, each a child process; {placement}",
        c.max_inflight,
        c.max_queue,
        c.max_session_queue,
        c.slow_consumer_timeout.as_secs_f64(),
        mosq.version
    );
    println!(
        "Mosquitto config: {}  (all else default; max_queued_bytes 0 = no byte limit)",
        mosq.config.trim_end().replace('\n', " | ")
    );
    match ctx.kind.lib {
        Library::Rumqttc => println!(
            "client: rumqttc 0.25, as a device uses it: one AsyncClient + EventLoop per connection (request channel {RUMQTTC_CAP}), its event loop polled by its own task; MqttOptions defaults (keep_alive 60 s, inflight 100 outgoing QoS 1/2, clean_session true; only the overload subscriber sets clean_session false) and NetworkOptions defaults but TCP_NODELAY on (rumqttc: off); each PUBLISH one request, written and flushed on its own"
        ),
        Library::Ours => println!(
            "client: ours (Ironplant's codec), {} PUBLISH{} per write, <= {OURS_INFLIGHT} unacknowledged QoS 1/2 PUBLISHes per connection, keep alive off, TCP_NODELAY on",
            ctx.kind.batch,
            if ctx.kind.batch == 1 { "" } else { "es" }
        ),
    }
    if policy {
        println!(
            "ours runs the platform's policy (token login, ACL, tag-prefix rules for `bench`); Mosquitto allows anonymous clients"
        );
    }
    println!(
        "msgs/s = messages delivered per second, summed over subscribers; CPU % = broker CPU time / wall time (100 % = one core; /proc/<pid>/task/*/schedstat); µs/msg = broker CPU per delivered message; ratio = ours / Mosquitto"
    );
}

/// The load generator's CPU in a row, flagged when it was the bottleneck.
fn generator_cell(ctx: &Ctx, usage: &Usage) -> String {
    let pct = usage.generator_pct(ctx.generator_cores);
    if usage.generator_bound(ctx.generator_cores) {
        format!("{pct:.0} % generator-bound")
    } else {
        format!("{pct:.0} %")
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
        _ => "-".to_owned(),
    }
}

fn print_notes(notes: &[String]) {
    for n in notes {
        println!("note: {n}");
    }
}

async fn max_throughput(ctx: &Ctx, brokers: [&Broker; 2]) -> anyhow::Result<()> {
    let shapes: [(&str, usize, usize); 3] = [
        ("1 -> 1", 1, 1),
        ("100 -> 1 (fan-in)", 100, 1),
        ("1 -> 100 (fan-out)", 1, 100),
    ];
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
        for (i, &(name, pubs, subs)) in shapes.iter().enumerate() {
            let label = format!("{name}, QoS {}", qos_name(qos));
            let tag = format!("{}-{i}", qos_name(qos));
            let mut figs: Vec<Figures> = Vec::new();
            for b in brokers {
                let f = scenarios::closed_loop(ctx, b, &label, (pubs, subs), qos, &tag)
                    .await
                    .with_context(|| format!("{}: {label}", b.name))?;
                notes.extend(f.notes.iter().map(|n| format!("{label}, {}: {n}", b.name)));
                figs.push(f);
            }
            let [o, m] = [&figs[0], &figs[1]];
            rows.push([
                label,
                format!("{:.0}", o.rate()),
                format!("{:.0}", m.rate()),
                ratio(Some(o.rate()), Some(m.rate())),
                format!("{} / {}", fmt_ns(o.latency.p50), fmt_ns(o.latency.p99)),
                format!("{} / {}", fmt_ns(m.latency.p50), fmt_ns(m.latency.p99)),
                format!("{:.0} / {:.0}", o.usage.broker_pct(), m.usage.broker_pct()),
                format!("{} / {}", fmt_us(o.us_per_msg()), fmt_us(m.us_per_msg())),
                ratio(o.us_per_msg(), m.us_per_msg()),
                format!(
                    "{} / {}",
                    generator_cell(ctx, &o.usage),
                    generator_cell(ctx, &m.usage)
                ),
            ]);
        }
    }
    println!(
        "\n(a) max throughput, closed loop: each publisher stays <= {} messages ahead of the average subscriber (fan-in: {} each, fan-out: {}), {} ms warm-up",
        scenarios::window(1, 1),
        scenarios::window(100, 1),
        scenarios::window(1, 100),
        ctx.warmup().as_millis()
    );
    crate::bench::print_table(
        [
            "scenario",
            "ironplant msgs/s",
            "Mosquitto msgs/s",
            "ratio",
            "ironplant p50 / p99",
            "Mosquitto p50 / p99",
            "CPU % ours / Mosq",
            "CPU µs/msg ours / Mosq",
            "µs/msg ratio",
            "generator CPU ours / Mosq",
        ],
        &rows,
    );
    println!("latency here is publish-to-delivery under saturating load, so mostly queueing: about (messages in flight) / (msgs/s)");
    print_notes(&notes);
    Ok(())
}

/// Rows of an open-loop table: one per broker, the ratio of CPU per message on ours.
fn open_rows(
    ctx: &Ctx,
    label: &str,
    figs: &[OpenFigures; 2],
    brokers: [&Broker; 2],
) -> Vec<[String; 11]> {
    let theirs = figs[1].figures.us_per_msg();
    figs.iter()
        .zip(brokers)
        .enumerate()
        .map(|(i, (of, b))| {
            let f = &of.figures;
            [
                label.to_owned(),
                b.name.to_owned(),
                format!("{:.0}", f.published_rate()),
                format!("{:.0}", f.rate()),
                fmt_ns(f.latency.p50),
                fmt_ns(f.latency.p99),
                fmt_ns(f.latency.p999),
                format!("{:.1}", f.usage.broker_pct()),
                fmt_us(f.us_per_msg()),
                if i == 0 {
                    ratio(f.us_per_msg(), theirs)
                } else {
                    String::new()
                },
                generator_cell(ctx, &f.usage),
            ]
        })
        .collect()
}

async fn run_open(
    ctx: &Ctx,
    brokers: [&Broker; 2],
    plan: &Plan,
    notes: &mut Vec<String>,
) -> anyhow::Result<[OpenFigures; 2]> {
    let mut out = Vec::new();
    for b in brokers {
        let f = scenarios::open_loop(ctx, b, plan)
            .await
            .with_context(|| format!("{}: {}", b.name, plan.label))?;
        notes.extend(
            f.figures
                .notes
                .iter()
                .map(|n| format!("{}, {}: {n}", plan.label, b.name)),
        );
        out.push(f);
    }
    out.try_into()
        .map_err(|_| anyhow::anyhow!("internal: two brokers, two results"))
}

async fn fixed_rate(ctx: &Ctx, brokers: [&Broker; 2], cap: usize) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    for (total, clients) in [(5_000.0, 500usize), (50_000.0, 1_000)] {
        let clients = clients.min(cap);
        let rate = total / clients as f64;
        let plan = Plan {
            label: format!("{:.0}k/s = {clients} x {rate:.0}/s", total / 1000.0),
            root: format!("bench/fixed{:.0}k", total / 1000.0),
            clients,
            rate,
            subs: 1,
        };
        let figs = run_open(ctx, brokers, &plan, &mut notes).await?;
        rows.extend(open_rows(ctx, &plan.label, &figs, brokers));
    }
    println!("\n(b) fixed rate: publishers at a fixed slow rate each on their own topic, start times spread over one period (the window opens {} ms after the last start), QoS 1; 1 subscriber on the wildcard (QoS 1); tokio interval ticks with MissedTickBehavior::Delay (a held-back client does not burst to catch up)", ctx.warmup().as_millis());
    crate::bench::print_table(
        [
            "fixed rate",
            "broker",
            "published/s",
            "delivered/s",
            "p50",
            "p99",
            "p99.9",
            "CPU %",
            "CPU µs/msg",
            "µs/msg ratio",
            "generator CPU",
        ],
        &rows,
    );
    print_notes(&notes);
    Ok(())
}

async fn plant(ctx: &Ctx, brokers: [&Broker; 2], clients: usize) -> anyhow::Result<()> {
    let plan = Plan {
        label: format!("plant: {clients} x 1/s"),
        root: "bench/plant".to_owned(),
        clients,
        rate: 1.0,
        subs: 3,
    };
    let mut notes = Vec::new();
    // One broker after the other: each has all its clients disconnected before the next.
    let figs = run_open(ctx, brokers, &plan, &mut notes).await?;
    let theirs = figs[1].figures.us_per_msg();
    let rows: Vec<[String; 12]> = figs
        .iter()
        .zip(brokers)
        .enumerate()
        .map(|(i, (of, b))| {
            let f = &of.figures;
            [
                b.name.to_owned(),
                format!(
                    "{} in {}",
                    of.connected,
                    fmt_ns(of.connect_time.as_nanos() as u64)
                ),
                format!(
                    "{:.1} -> {:.1} MB",
                    of.rss_before_kb as f64 / 1024.0,
                    of.rss_after_kb as f64 / 1024.0
                ),
                format!("{:.0}", f.published_rate()),
                format!("{:.0}", f.rate()),
                fmt_ns(f.latency.p50),
                fmt_ns(f.latency.p99),
                fmt_ns(f.latency.p999),
                format!("{:.1}", f.usage.broker_pct()),
                fmt_us(f.us_per_msg()),
                if i == 0 {
                    ratio(f.us_per_msg(), theirs)
                } else {
                    String::new()
                },
                generator_cell(ctx, &f.usage),
            ]
        })
        .collect();
    println!("\n(c) the plant regime (run first, so that RSS is not inflated by the other scenarios' queues):");
    println!("    {clients} clients each publishing 1 msg/s (QoS 1) on bench/plant/<i>/value, start times spread over the first second; 3 subscribers on bench/plant/# (QoS 1); connected {} at a time", scenarios::CONNECT_CONCURRENCY);
    crate::bench::print_table(
        [
            "broker",
            "connected",
            "RSS before -> after connect",
            "published/s",
            "delivered/s",
            "p50",
            "p99",
            "p99.9",
            "CPU %",
            "CPU µs/msg",
            "µs/msg ratio",
            "generator CPU",
        ],
        &rows,
    );
    print_notes(&notes);
    Ok(())
}

async fn overload(ctx: &Ctx, brokers: [&Broker; 2]) -> anyhow::Result<()> {
    let publish_for = ctx.measure * 2;
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    let mut figs: Vec<OverloadFigures> = Vec::new();
    for (i, b) in brokers.into_iter().enumerate() {
        let f = scenarios::overload(ctx, b, &i.to_string(), publish_for)
            .await
            .with_context(|| format!("{}: overload", b.name))?;
        notes.extend(f.notes.iter().map(|n| format!("overload, {}: {n}", b.name)));
        figs.push(f);
    }
    let theirs = figs.get(1).and_then(|f| f.usage.us_per(f.deliveries));
    for (i, (f, b)) in figs.iter().zip(brokers).enumerate() {
        let us = f.usage.us_per(f.deliveries);
        rows.push([
            b.name.to_owned(),
            format!("{:.0}", f.sent as f64 / f.publish_for.as_secs_f64()),
            f.acked.to_string(),
            f.delivered.to_string(),
            f.lost.to_string(),
            f.duplicates.to_string(),
            f.unacked_delivered.to_string(),
            fmt_ns(f.drain.as_nanos() as u64),
            f.reconnects.to_string(),
            format!("{:.1}", f.usage.broker_pct()),
            fmt_us(us),
            if i == 0 {
                ratio(us, theirs)
            } else {
                String::new()
            },
            generator_cell(ctx, &f.usage),
        ]);
    }
    let surplus = scenarios::OVERLOAD_PUBLISHERS as u32 * scenarios::OVERLOAD_RATE
        - scenarios::OVERLOAD_SUB_RATE;
    println!(
        "\n(d) overload: {} publishers x {} msgs/s (QoS 1) for {} s to one subscriber (persistent session, QoS 1) that handles at most {} msgs/s; then publishing stops and the subscriber drains at full speed (until all PUBACKed messages arrived, {} s without a delivery, or {} s)",
        scenarios::OVERLOAD_PUBLISHERS,
        scenarios::OVERLOAD_RATE,
        publish_for.as_secs(),
        scenarios::OVERLOAD_SUB_RATE,
        scenarios::DRAIN_QUIET.as_secs(),
        scenarios::DRAIN_MAX.as_secs(),
    );
    let bounds = our_bounds();
    println!(
        "both brokers hold {} queued + {} in flight for the subscriber; at the {surplus} msgs/s surplus that fills in {:.1} s",
        bounds.queued,
        bounds.inflight,
        (bounds.queued + bounds.inflight) as f64 / f64::from(surplus)
    );
    crate::bench::print_table(
        [
            "broker",
            "published/s",
            "PUBACKed",
            "delivered (distinct)",
            "acknowledged but lost",
            "duplicates",
            "delivered, never acked",
            "drain",
            "sub reconnects",
            "CPU %",
            "CPU µs/msg",
            "µs/msg ratio",
            "generator CPU",
        ],
        &rows,
    );
    println!("published/s = messages the publishers got out (a broker applying back-pressure holds them back); CPU over publishing + drain, per delivery");
    print_notes(&notes);
    Ok(())
}

fn print_biases(ctx: &Ctx, flags: &Flags) {
    let bounds = our_bounds();
    println!("\nHow these figures could be biased:");
    let lines = [
        "loopback only: no network latency, loss or bandwidth limit, and a 64 kB MSS; a real network adds round trips that QoS 1/2 flows feel and a closed loop hides".to_owned(),
        format!("CPU placement: both brokers share CPU 0 (the idle one costs ~0) and the load generator has {} CPU(s); our broker's tokio workers get no parallelism on one CPU, Mosquitto is single-threaded anyway. A row flagged generator-bound had the generator above {:.0} % of its CPU(s): it measures the client side, not the broker (latency then includes the generator's own queueing)", ctx.generator_cores, probe::GENERATOR_BOUND * 100.0),
        "rumqttc write batching: each request (a PUBLISH) is encoded into its Framed buffer and flushed on its own, one write per PUBLISH, however many requests are queued; acks it sends are batched: it reads up to 10 already-buffered packets per poll, feeds their PUBACK/PUBREC/PUBCOMP into the buffer and flushes once".to_owned(),
        "TCP_NODELAY is on for every client here, though rumqttc's default is off: with Nagle on loopback (64 kB MSS, delayed ACKs) Mosquitto's closed-loop rows dropped to about half and its 50k/s row collapsed (1.4k msgs/s delivered) while ours lost less, which flattered ours 3-8x. Over a real network (1460-byte MSS) Nagle costs far less".to_owned(),
        format!("our client writes one PUBLISH per write by default (--batch {}); --batch 100 reproduces the old benchmark's packing, which flattered our broker ~10x", flags.batch),
        format!("Mosquitto: max_inflight_messages and max_queued_messages raised from their defaults (20, 1000) to our bounds ({}, {}), set_tcp_nodelay on (default off) as ours, persistence off as ours (no state directory); other defaults kept. It is Debian's build", bounds.inflight, bounds.queued),
        "closed-loop latency is queueing by construction; the open-loop rows (b, c) are the latency a device sees. Send and receive stamps come from one clock in this process, so there is no skew, but generator scheduling delay is included".to_owned(),
        "CPU per message divides all broker CPU in the window (acks, keep-alives, $SYS every 10 s) by deliveries summed over subscribers; fan-in and fan-out weigh per-publish and per-delivery work differently".to_owned(),
        "short windows on a noisy 2-core machine: expect 10-20 % run-to-run variation; compare ratios of the same run".to_owned(),
    ];
    for l in lines {
        println!("- {l}");
    }
}

/// Opens `idle` connections to each broker and reports its RSS before and after. Runs before
/// the load scenarios, whose freed buffers a broker's allocator may keep and reuse.
async fn idle_rss(idle: usize, ours: &Broker, theirs: &Broker) -> anyhow::Result<()> {
    let limit = probe::fd_limit().unwrap_or(1024);
    let n = idle.min(limit.saturating_sub(FD_RESERVE));
    if n < idle {
        println!("idle: open-file limit is {limit}; capped at {n} connections (raise `ulimit -n` for more)");
    }
    println!();
    let mut idle_rows = Vec::new();
    let mut verdict = String::new();
    for b in [ours, theirs] {
        let before = probe::rss_kb(b.pid)?;
        let conns = idle_connections(b, n).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let after = probe::rss_kb(b.pid)?;
        for mut c in conns {
            let _ = c.disconnect().await;
        }
        let per = (after.saturating_sub(before)) as f64 * 1024.0 / n.max(1) as f64;
        idle_rows.push([
            b.name.to_owned(),
            format!("{:.1} MB", before as f64 / 1024.0),
            format!("{:.1} MB", after as f64 / 1024.0),
            format!("{:.1} kB", per / 1024.0),
        ]);
        if std::ptr::eq(b, ours) {
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

async fn idle_connections(b: &Broker, n: usize) -> anyhow::Result<Vec<Conn>> {
    let bar = indicatif::ProgressBar::new(n as u64);
    bar.set_message(format!("{}: idle connections", b.name));
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        let (c, _) = Conn::connect(&b.ep, &format!("idle-{i}"), true)
            .await
            .with_context(|| format!("{}: idle connection {i}", b.name))?;
        conns.push(c);
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(conns)
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

/// Mosquitto's configuration: our broker's bounds ([`our_bounds`]) and socket options, no
/// persistence and no logging, as ours runs.
fn mosquitto_conf(port: u16) -> String {
    let Bounds { inflight, queued } = our_bounds();
    format!(
        "listener {port} 127.0.0.1\n\
         max_connections -1\n\
         allow_anonymous true\n\
         persistence false\n\
         log_dest none\n\
         set_tcp_nodelay true\n\
         max_inflight_messages {inflight}\n\
         max_queued_messages {queued}\n"
    )
}

/// Mosquitto on a free port with its own config, in a temp dir.
struct Mosquitto {
    child: Child,
    addr: SocketAddr,
    version: String,
    config: String,
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
        let config = mosquitto_conf(port);
        std::fs::write(&conf, &config)?;
        let log = dir.path().join("stderr.log");
        let mut child = tokio::process::Command::new(MOSQUITTO)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .kill_on_drop(true)
            .spawn()
            .context("cannot start mosquitto")?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).await.is_err() {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "mosquitto exited ({status}) with this config:\n{config}{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                bail!("mosquitto did not accept connections on {addr} within 10 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Mosquitto {
            child,
            addr,
            version,
            config,
            _dir: dir,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mosquitto_gets_our_bounds() {
        // BrokerConfig::default() today: max_inflight 1000, max_queue + max_session_queue
        // 10000 + 10000. A change there must show here (and in the printed config).
        let conf = mosquitto_conf(1883);
        for line in [
            "listener 1883 127.0.0.1",
            "max_inflight_messages 1000",
            "max_queued_messages 20000",
            "set_tcp_nodelay true",
            "persistence false",
            "max_connections -1",
        ] {
            assert!(conf.lines().any(|l| l == line), "{line} missing:\n{conf}");
        }
    }
}
