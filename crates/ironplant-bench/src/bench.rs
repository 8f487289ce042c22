//! `ironplant-bench modbus|bus|historian|mqtt|opcua`: performance figures printed as tables.
//!
//! Servers run in child processes (this same binary, through its hidden subcommands), so the
//! CPU figures count the platform's side only.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Subcommand;
use ironplant_core::config::{
    ByteOrder, DeviceConfig, ModbusDataType, ModbusPoint, ModbusTable, Protocol, WordOrder,
};
use ironplant_core::{Overflow, TagBus, TagId};
use ironplant_modbus::server::{RegisterBank, UnitImage};
use ironplant_modbus::{DevicePoller, PollObserver, PollPoint};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Modbus connector: register reads/s against the simulator, and CPU per 1,000 tags at 1 s polling.
    #[command(after_help = "Example:\n  ironplant-bench modbus --seconds 10")]
    Modbus {
        /// Seconds each scenario runs.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Tags polled in the CPU scenario.
        #[arg(long, default_value_t = 1000)]
        tags: usize,
    },
    /// Local logic: CPU of rules and alarms on a platform at a fixed rate of tag changes
    /// (against a baseline without logic, same run), and alarm events/s in a flood.
    #[command(
        after_help = "Examples:\n  ironplant-bench rules                                  # 10,000 rules, 1,000 alarms, 10,000 changes/s\n  ironplant-bench rules --rules 1000 --alarms 100 --seconds 3"
    )]
    Rules {
        /// `[[rule]]`s (two inputs each, half held for 5 s).
        #[arg(long, default_value_t = 10_000)]
        rules: usize,
        /// High `[[alarm]]`s with deadband.
        #[arg(long, default_value_t = 1_000)]
        alarms: usize,
        /// Tag changes a second, in 100 batches a second.
        #[arg(long, default_value_t = 10_000)]
        rate: u64,
        /// Seconds each scenario runs.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// Manipulation detection: models trained on each seed's simulated line (simulated time),
    /// then every attack scenario three times on lines of other seeds: detected or not, time
    /// to detect, detector; and false alarms per simulated day of normal operation. Fails if
    /// an attack run goes undetected.
    #[command(
        after_help = "Examples:\n  ironplant-bench detection                       # seeds 1-3 (tuned on), 24 simulated hours each\n  ironplant-bench detection --seeds 11,12,13      # seeds never tuned on\n  ironplant-bench detection --hours 4 --seeds 1"
    )]
    Detection {
        /// Seeds of the simulated plant, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
        seeds: Vec<u64>,
        /// Simulated hours of normal operation per seed (false alarms), after training.
        #[arg(long, default_value_t = 24.0)]
        hours: f64,
        /// Longest wait for a detection after an attack starts.
        #[arg(long, default_value = "30m")]
        limit: humantime::Duration,
    },
    /// Tag bus: samples/s from many publishers to a lossless and a lossy subscriber.
    #[command(after_help = "Example:\n  ironplant-bench bus --tags 100000 --seconds 5")]
    Bus {
        /// Seconds to run.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Tags in the namespace, split over publishers of 1,000 tags each.
        #[arg(long, default_value_t = 100_000)]
        tags: usize,
    },
    /// Historian: ingest a realistic mix with durability on, bytes per sample, query latency;
    /// the same data into PostgreSQL (COPY, narrow table) in the same run.
    #[command(
        after_help = "Examples:\n  ironplant-bench historian                      # 10,000 tags x 1 h, with PostgreSQL\n  ironplant-bench historian --seconds 86400      # a whole simulated day (slow; PostgreSQL needs ~80 GB)\n  ironplant-bench historian --no-postgres --tags 1000"
    )]
    Historian {
        /// Tags in the mix (half noisy analogs, setpoints, counters, state bits).
        #[arg(long, default_value_t = 10_000)]
        tags: usize,
        /// Simulated seconds of data at one sample per tag per second.
        #[arg(long, default_value_t = 3600)]
        seconds: u64,
        /// Skip the PostgreSQL comparison.
        #[arg(long)]
        no_postgres: bool,
    },
    /// MQTT broker: ours against Mosquitto in the same run, driven by rumqttc (or our own
    /// client): max throughput, fixed rates with p50/p99/p99.9 latency, 10,000 plant clients,
    /// overload losses; broker CPU per delivered message in every row.
    #[command(
        after_help = "Examples:\n  ironplant-bench mqtt --seconds 5                      # all scenarios, rumqttc clients\n  ironplant-bench mqtt --scenarios a --client ours --batch 100  # the old packing\n  ironplant-bench mqtt --scenarios c --clients 2000\n  ironplant-bench mqtt --seconds 1 --clients 200        # the CI smoke run\n  ironplant-bench mqtt --seconds 2 --idle 10000 --scenarios a\n  ironplant-bench mqtt --policy    # our broker behind the platform's authorisation policy\n\nThe plant regime needs one file descriptor per client (`ulimit -n`); fewer are capped with a note."
    )]
    Mqtt {
        /// Seconds each row is measured (after its warm-up); the overload publishes for twice that.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Idle connections to open to each broker to measure its RSS (0: skip).
        #[arg(long, default_value_t = 0)]
        idle: usize,
        /// Run our broker with the platform's authorisation policy (API tokens, the ACL and
        /// tag-prefix rules, as `ironplant serve` does); the load generator logs in with a
        /// token. Mosquitto still allows anonymous clients (a handicap for us).
        #[arg(long)]
        policy: bool,
        #[command(flatten)]
        flags: crate::bench_mqtt::Flags,
    },
    /// OPC UA client: notifications/s one connection sustains and CPU per 1,000 monitored
    /// items, ours and asyncua's (the reference) against our server in the same run.
    #[command(
        after_help = "Examples:\n  ironplant-bench opcua                              # 500, 1,000 and 3,000 items, each changing every 100 ms\n  ironplant-bench opcua --seconds 2 --items 100\n  ironplant-bench opcua --items 2000 --period 1000 --publishing 1000\n\nThe asyncua reference needs target/venv (`.ci/test` installs it) or IRONPLANT_PYTHON."
    )]
    Opcua {
        /// Monitored items of each scenario, comma-separated (all in one subscription).
        #[arg(long, value_delimiter = ',', default_value = "500,1000,3000")]
        items: Vec<usize>,
        /// Every item changes once per period (ms); also the sampling interval. At least 100.
        #[arg(long, default_value_t = 100)]
        period: u64,
        /// The subscription's publishing interval (ms); the queue holds publishing / period + 1.
        #[arg(long, default_value_t = 100)]
        publishing: u64,
        /// Seconds each client counts notifications.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Skip the asyncua reference.
        #[arg(long)]
        no_asyncua: bool,
    },
    /// Ironplant's OPC UA client counting notifications, with the command line and output of
    /// `tests/peers/opcua_client.py count`, for `opcua` (internal).
    #[command(hide = true)]
    OpcuaClient {
        url: String,
        #[arg(long)]
        pki: std::path::PathBuf,
        #[arg(long)]
        user: String,
        #[arg(long)]
        password: String,
        /// Publishing interval, ms.
        #[arg(long, default_value_t = 100.0)]
        interval: f64,
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// Sampling interval, ms (default: --interval).
        #[arg(long)]
        sampling: Option<f64>,
        #[arg(long, default_value_t = 1)]
        queue: u32,
        #[arg(required = true)]
        nodes: Vec<String>,
    },
    /// Our MQTT broker alone, for the benchmarks (internal).
    #[command(hide = true)]
    MqttServer {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// A data directory whose security state (users, tokens, rules) decides access.
        #[arg(long, value_name = "DIR")]
        policy_dir: Option<std::path::PathBuf>,
    },
    /// A Modbus server with changing registers, for the benchmarks (internal).
    #[command(hide = true)]
    RegisterServer {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
    },
    /// The simulated bottling line's Modbus side alone (`ironplant simulate --sparkplug-broker
    /// off`), for `modbus` (internal).
    #[command(hide = true)]
    SimServer {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// Random seed of the simulated plant.
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
}

pub async fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Modbus { seconds, tags } => {
            bench_modbus(Duration::from_secs(seconds.max(1)), tags).await
        }
        BenchCommand::RegisterServer { listen } => register_server(listen).await,
        BenchCommand::SimServer { listen, seed } => sim_server(listen, seed).await,
        BenchCommand::Mqtt {
            seconds,
            idle,
            policy,
            flags,
        } => crate::bench_mqtt::run(seconds, idle, policy, flags).await,
        BenchCommand::Opcua {
            items,
            period,
            publishing,
            seconds,
            no_asyncua,
        } => {
            crate::bench_opcua::run(crate::bench_opcua::Options {
                items,
                period: Duration::from_millis(period),
                publishing: Duration::from_millis(publishing),
                seconds,
                asyncua: !no_asyncua,
            })
            .await
        }
        BenchCommand::OpcuaClient {
            url,
            pki,
            user,
            password,
            interval,
            seconds,
            sampling,
            queue,
            nodes,
        } => {
            crate::bench_opcua::client(crate::bench_opcua::ClientArgs {
                url,
                pki,
                user,
                password,
                interval,
                seconds,
                sampling,
                queue,
                nodes,
            })
            .await
        }
        BenchCommand::MqttServer { listen, policy_dir } => {
            crate::bench_mqtt::server(listen, policy_dir.as_deref()).await
        }
        BenchCommand::Historian {
            tags,
            seconds,
            no_postgres,
        } => bench_historian(tags.max(1), seconds.max(1), !no_postgres).await,
        BenchCommand::Rules {
            rules,
            alarms,
            rate,
            seconds,
        } => crate::bench_rules::bench_rules(rules, alarms, rate.max(1), seconds.max(1)).await,
        BenchCommand::Detection {
            seeds,
            hours,
            limit,
        } => tokio::task::block_in_place(|| {
            ironplant_server::detection::report(&ironplant_server::detection::Options {
                seeds,
                hours: hours.max(0.0),
                limit: limit.into(),
            })
        }),
        BenchCommand::Bus { seconds, tags } => {
            bench_bus(Duration::from_secs(seconds.max(1)), tags.max(1000)).await
        }
    }
}

/// Registers per table in the register server.
const SERVER_ITEMS: usize = 20_000;

async fn register_server(listen: SocketAddr) -> anyhow::Result<()> {
    let bank = Arc::new(parking_lot::Mutex::new(RegisterBank::default()));
    bank.lock().units.insert(1, UnitImage::new(SERVER_ITEMS));
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    println!("listening on {}", listener.local_addr()?);
    let writer = bank.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        let mut n: u16 = 0;
        loop {
            tick.tick().await;
            n = n.wrapping_add(1);
            let mut b = writer.lock();
            if let Some(u) = b.units.get_mut(&1) {
                for (i, r) in u.holding.iter_mut().enumerate() {
                    *r = n.wrapping_add(i as u16);
                }
                for (i, r) in u.input.iter_mut().enumerate() {
                    *r = n.wrapping_mul(3).wrapping_add(i as u16);
                }
                for (i, c) in u.coils.iter_mut().enumerate() {
                    *c = (usize::from(n) + i) % 2 == 0;
                }
            }
        }
    });
    ironplant_modbus::serve(listener, bank).await?;
    Ok(())
}

/// The bundled example configuration, whose filler PLC `modbus` polls on the simulator.
const BOTTLING_CONFIG: &str = include_str!("../../../examples/bottling.toml");

/// Serves the simulated plant's Modbus side until killed, as `ironplant simulate
/// --sparkplug-broker off` does (the plant's readings channel included, nobody reading it).
async fn sim_server(listen: SocketAddr, seed: u64) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    println!("listening on {}", listener.local_addr()?);
    let (readings_tx, _readings) = tokio::sync::watch::channel(ironplant_sim::Readings::default());
    ironplant_sim::run_with(listener, seed, Some(readings_tx))
        .await
        .context("simulator failed")?;
    Ok(())
}

/// Starts `ironplant-bench ARGS…` (a hidden server subcommand) and returns it with the
/// address it printed.
pub(crate) async fn spawn_server(args: &[&str]) -> anyhow::Result<(Child, String)> {
    let exe = std::env::current_exe().context("cannot locate the ironplant-bench binary")?;
    let mut child = Command::new(exe)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("cannot start the benchmark server")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .context("benchmark server did not start within 10 s")??
        .context("benchmark server exited")?;
    let Some(addr) = line
        .split_whitespace()
        .find(|w| w.parse::<SocketAddr>().is_ok())
    else {
        bail!("benchmark server printed no address: {line:?}");
    };
    Ok((child, addr.to_owned()))
}

#[derive(Default)]
struct Counter {
    requests: AtomicU64,
    errors: AtomicU64,
}

impl PollObserver for Counter {
    fn request(&self, _: &str, _: Duration, ok: bool) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
    fn connection(&self, _: &str, _: bool) {}
}

/// CPU time of this process so far, in nanoseconds of precision: the sum of every live
/// thread's `/proc/self/task/*/schedstat` run time. (`/proc/self/stat` counts in 10 ms ticks,
/// too coarse for a poll loop that needs a few ms a second.) Threads that exited before the
/// call are not counted; the tokio workers that do the polling live for the whole run.
pub(crate) fn process_cpu() -> anyhow::Result<Duration> {
    Ok(Duration::from_nanos(
        crate::bench_mqtt::probe::schedstat_ns("/proc/self/task")?,
    ))
}

fn device(id: &str, address: &str, unit_id: u8, poll: Duration) -> DeviceConfig {
    DeviceConfig {
        id: id.to_owned(),
        protocol: Protocol::ModbusTcp,
        address: address.to_owned(),
        unit_id,
        poll_interval: poll,
        timeout: Duration::from_secs(1),
        reconnect_max: Duration::from_secs(1),
        max_gap: 0,
        description: String::new(),
    }
}

/// A realistic mix, each kind laid out contiguously as PLC programmers do: half u16 holding
/// registers, a quarter f32 input registers, a quarter coils.
fn tag_mix(n: usize) -> Vec<PollPoint> {
    let mut next = [0usize; 3];
    (0..n)
        .map(|i| {
            let (kind, table, data_type) = match i % 4 {
                0 | 1 => (0, ModbusTable::Holding, ModbusDataType::U16),
                2 => (1, ModbusTable::Input, ModbusDataType::F32),
                _ => (2, ModbusTable::Coil, ModbusDataType::Bool),
            };
            let address = next[kind] % (SERVER_ITEMS - 4);
            next[kind] += usize::from(data_type.registers());
            let point = ModbusPoint {
                unit_id: 1,
                table,
                address: address as u16,
                data_type,
                word_order: WordOrder::BigEndian,
                byte_order: ByteOrder::BigEndian,
                bit: None,
                scale: 1.0,
                offset: 0.0,
                count: 1,
            };
            PollPoint {
                tag: TagId(i as u32),
                point,
                range: None,
            }
        })
        .collect()
}

/// Prints rows as a Markdown table: the first column left-aligned, the others right-aligned.
pub(crate) fn print_table<const N: usize>(header: [&str; N], rows: &[[String; N]]) {
    let widths: Vec<usize> = (0..N)
        .map(|c| {
            rows.iter()
                .map(|r| r[c].chars().count())
                .chain([header[c].chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<&str>| {
        let mut out = String::from("|");
        for (c, cell) in cells.iter().enumerate() {
            let w = widths[c];
            out += &if c == 0 {
                format!(" {cell:<w$} |")
            } else {
                format!(" {cell:>w$} |")
            };
        }
        println!("{out}");
    };
    line(header.to_vec());
    println!(
        "|{}",
        widths
            .iter()
            .map(|w| "-".repeat(w + 2) + "|")
            .collect::<String>()
    );
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

/// Waits `duration` while a progress bar on stderr (hidden when stderr is not a terminal) shows it.
pub(crate) async fn wait_with_progress(label: &str, duration: Duration) {
    let bar = indicatif::ProgressBar::new(duration.as_millis() as u64);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{msg:>24} [{bar:40}] {elapsed}/{duration}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(label.to_owned());
    let start = Instant::now();
    while start.elapsed() < duration {
        tokio::time::sleep(
            Duration::from_millis(100).min(duration.saturating_sub(start.elapsed())),
        )
        .await;
        bar.set_position(start.elapsed().as_millis() as u64);
    }
    bar.finish_and_clear();
}

struct RunFigures {
    requests: u64,
    errors: u64,
    samples: u64,
    wall: Duration,
    cpu: Duration,
}

/// Polls `points` from `config` for `duration`, counting requests and samples.
async fn drive(
    label: &str,
    config: DeviceConfig,
    points: Vec<PollPoint>,
    duration: Duration,
) -> anyhow::Result<RunFigures> {
    let bus = TagBus::new(points.len());
    let mut sub = bus.subscribe("bench", 1024, Overflow::Block);
    let samples = Arc::new(AtomicU64::new(0));
    let counted = samples.clone();
    let drain = tokio::spawn(async move {
        while let Some(b) = sub.recv().await {
            counted.fetch_add(b.len() as u64, Ordering::Relaxed);
        }
    });
    let counter = Arc::new(Counter::default());
    let cpu0 = process_cpu()?;
    let t0 = Instant::now();
    let handle = DevicePoller {
        config,
        points,
        bus,
        observer: counter.clone(),
    }
    .spawn();
    wait_with_progress(label, duration).await;
    drop(handle);
    let wall = t0.elapsed();
    let cpu = process_cpu()?.saturating_sub(cpu0);
    drain.abort();
    Ok(RunFigures {
        requests: counter.requests.load(Ordering::Relaxed),
        errors: counter.errors.load(Ordering::Relaxed),
        samples: samples.load(Ordering::Relaxed),
        wall,
        cpu,
    })
}

async fn bench_modbus(duration: Duration, tags: usize) -> anyhow::Result<()> {
    println!(
        "ironplant bench modbus: {} s per scenario, servers in child processes",
        duration.as_secs()
    );

    // 1. Throughput against the simulator: the bundled config's filler PLC, polled back to back.
    let (_sim, sim_addr) = spawn_server(&["sim-server", "--listen", "127.0.0.1:0"]).await?;
    let text = BOTTLING_CONFIG.replace("127.0.0.1:5020", &sim_addr);
    let cfg = ironplant_core::config::parse_with(
        "bottling.toml",
        &text,
        &ironplant_control::register(
            ironplant_core::config::Registry::new()
                .with::<ironplant_sparkplug::settings::SparkplugSettings>()
                .with::<ironplant_integrity::IntegrityConfig>(),
        ),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let ns = cfg.namespace();
    let dev = cfg
        .devices
        .first()
        .context("bundled config has no device")?
        .clone();
    let points: Vec<PollPoint> = cfg
        .tags
        .iter()
        .filter(|t| t.device.as_deref() == Some(dev.id.as_str()))
        .filter_map(|t| {
            Some(PollPoint {
                tag: ns.lookup(t.path.as_str())?.id,
                point: t.modbus.clone()?,
                range: t.range,
            })
        })
        .collect();
    let regs_per_cycle: u64 = ironplant_modbus::plan_reads(
        &points.iter().map(|p| p.point.clone()).collect::<Vec<_>>(),
        0,
    )
    .iter()
    .map(|r| u64::from(r.count))
    .sum();
    let sim_tags = points.len();
    let fast = device(&dev.id, &sim_addr, dev.unit_id, Duration::ZERO);
    let sim = drive("simulator, back to back", fast, points, duration).await?;
    let secs = sim.wall.as_secs_f64();
    let cycles = sim.samples as f64 / sim_tags.max(1) as f64;

    // 2. CPU cost of 1 s polling of `tags` tags against a plain register server.
    let (_srv, srv_addr) = spawn_server(&["register-server"]).await?;
    let mix = tag_mix(tags);
    let requests_per_cycle =
        ironplant_modbus::plan_reads(&mix.iter().map(|p| p.point.clone()).collect::<Vec<_>>(), 0)
            .len();
    let slow = drive(
        "1 s polling",
        device("bench", &srv_addr, 1, Duration::from_secs(1)),
        mix,
        duration,
    )
    .await?;
    let core_pct = slow.cpu.as_secs_f64() / slow.wall.as_secs_f64() * 100.0;
    let per_1000 = core_pct * 1000.0 / tags.max(1) as f64;

    println!();
    let rows = vec![
        (
            "simulator (filler PLC): tags per poll cycle".to_owned(),
            format!("{sim_tags} tags, {regs_per_cycle} items"),
        ),
        (
            "simulator: requests per poll cycle".to_owned(),
            format!("{:.0}", sim.requests as f64 / cycles.max(1.0)),
        ),
        (
            "simulator: requests/s, one connection".to_owned(),
            format!("{:.0} req/s", sim.requests as f64 / secs),
        ),
        (
            "simulator: registers + bits read/s".to_owned(),
            format!("{:.0} /s", cycles * regs_per_cycle as f64 / secs),
        ),
        (
            "simulator: samples published/s".to_owned(),
            format!("{:.0} /s", sim.samples as f64 / secs),
        ),
        (
            "simulator: failed requests".to_owned(),
            sim.errors.to_string(),
        ),
        (
            format!("1 s polling of {tags} tags: requests per cycle"),
            requests_per_cycle.to_string(),
        ),
        (
            "1 s polling: samples published".to_owned(),
            format!("{} in {:.1} s", slow.samples, slow.wall.as_secs_f64()),
        ),
        (
            "1 s polling: CPU of the whole process".to_owned(),
            format!("{core_pct:.2} % of one core"),
        ),
        (
            "1 s polling: CPU per 1,000 tags".to_owned(),
            format!("{per_1000:.2} % of one core"),
        ),
    ];
    let rows: Vec<[String; 2]> = rows.into_iter().map(|(a, b)| [a, b]).collect();
    print_table(["scenario", "figure"], &rows);
    println!();
    let verdict = if per_1000 < 1.0 { "meets" } else { "misses" };
    println!("target: under 1% of one core per 1,000 tags at 1 s polling — {verdict} it ({per_1000:.2}%)");
    if sim.errors > 0 || slow.errors > 0 {
        bail!(
            "requests failed during the benchmark ({} + {}); figures are not trustworthy",
            sim.errors,
            slow.errors
        );
    }
    Ok(())
}

/// Publishers of 1,000 tags each publish whole batches as fast as they can; a lossless
/// (`Block`) subscriber counts everything, a lossy one (`DropNewest`, small queue) stands in for
/// a slow API stream.
async fn bench_bus(duration: Duration, tags: usize) -> anyhow::Result<()> {
    use ironplant_core::{Quality, Sample, Timestamp, Value};
    const PER_PUBLISHER: usize = 1000;
    let bus = TagBus::new(tags);
    let mut lossless = bus.subscribe("lossless", 64, Overflow::Block);
    let mut lossy = bus.subscribe("lossy", 4, Overflow::DropNewest);
    let received = Arc::new(AtomicU64::new(0));
    let counted = received.clone();
    let consumer = tokio::spawn(async move {
        while let Some(b) = lossless.recv().await {
            counted.fetch_add(b.len() as u64, Ordering::Relaxed);
        }
    });
    let slow = tokio::spawn(async move {
        while lossy.recv().await.is_some() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let t0 = Instant::now();
    let cpu0 = process_cpu()?;
    let mut publishers = Vec::new();
    for p in 0..tags / PER_PUBLISHER {
        let (bus, stop) = (bus.clone(), stop.clone());
        publishers.push(tokio::spawn(async move {
            let mut n = 0i64;
            while !stop.load(Ordering::Relaxed) {
                let now = Timestamp::now();
                let batch: Vec<Sample> = (0..PER_PUBLISHER)
                    .map(|i| Sample {
                        tag: TagId((p * PER_PUBLISHER + i) as u32),
                        value: Value::Float(n as f64 * 0.5),
                        quality: Quality::GOOD,
                        source_ts: now,
                        server_ts: now,
                    })
                    .collect();
                bus.publish(batch).await;
                n += 1;
                tokio::task::yield_now().await;
            }
        }));
    }
    wait_with_progress("tag bus", duration).await;
    stop.store(true, Ordering::Relaxed);
    for p in publishers {
        p.await?;
    }
    let wall = t0.elapsed().as_secs_f64();
    let cpu = process_cpu()?.saturating_sub(cpu0).as_secs_f64();
    let stats = bus.stats();
    drop(bus);
    consumer.abort();
    slow.abort();
    let got = received.load(Ordering::Relaxed);
    let lossy_dropped = stats
        .subscribers
        .iter()
        .find(|s| s.0 == "lossy")
        .map_or(0, |s| s.1);
    println!(
        "ironplant bench bus: {tags} tags, {} publishers of {PER_PUBLISHER} tags, {wall:.1} s",
        tags / PER_PUBLISHER
    );
    println!();
    let rows = vec![
        (
            "samples published/s".to_owned(),
            format!("{:.0}", stats.published_samples as f64 / wall),
        ),
        (
            "samples received/s (lossless subscriber)".to_owned(),
            format!("{:.0}", got as f64 / wall),
        ),
        (
            "samples dropped (lossy subscriber)".to_owned(),
            lossy_dropped.to_string(),
        ),
        (
            "CPU (building batches + bus), cores".to_owned(),
            format!("{:.2}", cpu / wall),
        ),
    ];
    let rows: Vec<[String; 2]> = rows.into_iter().map(|(a, b)| [a, b]).collect();
    print_table(["figure", "value"], &rows);
    println!();
    println!(
        "target: 1,000,000 samples/s — {}",
        if stats.published_samples as f64 / wall >= 1e6 {
            "met"
        } else {
            "missed"
        }
    );
    Ok(())
}

/// Samples per tag in the "one day of one tag" query data set.
const DAY: u64 = 86_400;
/// The long tag of the historian bench: 30 days at 1 s (for the rollup query).
const MONTH: u64 = 30 * DAY;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn mix_value(v: crate::bench_mix::MixValue) -> ironplant_core::Value {
    use crate::bench_mix::MixValue;
    match v {
        MixValue::Float(x) => ironplant_core::Value::Float(x),
        MixValue::Int(i) => ironplant_core::Value::Int(i),
        MixValue::Bool(b) => ironplant_core::Value::Bool(b),
    }
}

fn fmt_bytes(b: f64) -> String {
    if b >= 1e9 {
        format!("{:.2} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.1} MB", b / 1e6)
    } else {
        format!("{:.1} kB", b / 1e3)
    }
}

fn fmt_ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// Median time of 21 runs of an average over `[from, to)` in `interval`s, which must give
/// `rows` rows.
fn time_aggregate(
    h: &ironplant_historian::Historian,
    tag: &str,
    from: ironplant_core::Timestamp,
    to: ironplant_core::Timestamp,
    interval: Duration,
    rows: usize,
) -> anyhow::Result<Duration> {
    let mut times = Vec::new();
    for _ in 0..21 {
        let t = Instant::now();
        let r = h.aggregate(
            tag,
            from,
            to,
            interval,
            &[ironplant_historian::Aggregate::Avg],
        )?;
        times.push(t.elapsed());
        anyhow::ensure!(
            r.rows.len() == rows,
            "expected {rows} rows of {interval:?}, got {}",
            r.rows.len()
        );
    }
    Ok(median(times))
}

/// The field regime's storage: `tags` × `seconds` of the mix with each device's poll
/// jittered by ±5 ms (µs resolution), ingested, flushed and merged like the main run.
fn field_storage(
    tags: usize,
    seconds: u64,
) -> anyhow::Result<ironplant_historian::StorageBreakdown> {
    use ironplant_core::{Quality, TagPath};
    use ironplant_historian::{Historian, HistorianConfig};
    let dir = tempfile::Builder::new()
        .prefix("ironplant-bench-historian-field-")
        .tempdir()
        .context("cannot create a temp dir")?;
    let h =
        Historian::open(HistorianConfig::new(dir.path())).context("cannot open the historian")?;
    let mut mix = crate::bench_mix::Mix::new(tags, crate::bench_mix::START_2026_US, 1_000_000, 7)
        .with_jitter(5_000);
    let paths: Vec<TagPath> = mix
        .tags()
        .iter()
        .map(|t| TagPath::parse(&t.name))
        .collect::<Result<_, _>>()?;
    let hids = h.register(&paths)?;
    let bar = indicatif::ProgressBar::new(seconds);
    bar.set_message("field regime ingest");
    let mut rows = Vec::with_capacity(tags);
    let mut acks = std::collections::VecDeque::new();
    for step in 0..seconds {
        mix.step(step, &mut rows);
        let batch = rows
            .iter()
            .map(|&(i, ts, v)| (hids[i as usize], ts, mix_value(v), Quality::GOOD))
            .collect();
        acks.push_back(h.submit(batch)?);
        while acks.len() > 16 {
            if let Some(a) = acks.pop_front() {
                a.wait_blocking()?;
            }
        }
        bar.inc(1);
    }
    for a in acks {
        a.wait_blocking()?;
    }
    bar.finish_and_clear();
    h.compact_blocking()?;
    let b = h.storage_breakdown()?;
    h.close();
    Ok(b)
}

/// Ingests `tags` × `seconds` of the mix (plus one tag with a full day, for the aggregate query)
/// into a fresh historian with durability on, then the same rows into PostgreSQL.
async fn bench_historian(tags: usize, seconds: u64, postgres: bool) -> anyhow::Result<()> {
    use crate::bench_mix::Mix;
    use ironplant_core::{Quality, TagPath, Timestamp};
    use ironplant_historian::{Historian, HistorianConfig};

    let total = tags as u64 * seconds;
    println!("ironplant bench historian: {tags} tags x {seconds} s at 1 s = {total} samples, plus 1 tag x 30 days ({MONTH} samples)");
    let dir = tempfile::Builder::new()
        .prefix("ironplant-bench-historian-")
        .tempdir()
        .context("cannot create a temp dir")?;
    let h =
        Historian::open(HistorianConfig::new(dir.path())).context("cannot open the historian")?;
    let mut mix = Mix::new(tags, crate::bench_mix::START_2026_US, 1_000_000, 7);
    let paths: Vec<TagPath> = mix
        .tags()
        .iter()
        .map(|t| TagPath::parse(&t.name))
        .collect::<Result<_, _>>()?;
    let hids = h.register(&paths)?;
    let day_path = TagPath::parse("acme/plant1/area00/line00/cell00/dev00/day_temp")?;
    let day_hid = h.register(std::slice::from_ref(&day_path))?[0];

    // 1. Ingest, durability on: a sample counts once its WAL group commit is fsynced.
    let bar = indicatif::ProgressBar::new(seconds);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{msg:>24} [{bar:40}] {pos}/{len} s {eta}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message("ironplant ingest");
    let mut rows = Vec::with_capacity(tags);
    let mut acks = std::collections::VecDeque::new();
    let cpu0 = process_cpu()?;
    let t0 = Instant::now();
    for step in 0..seconds {
        mix.step(step, &mut rows);
        let batch = rows
            .iter()
            .map(|&(i, ts, v)| (hids[i as usize], ts, mix_value(v), Quality::GOOD))
            .collect();
        acks.push_back(h.submit(batch)?);
        // Bounded pipelining: a few batches in flight, like adapters feeding the bus.
        while acks.len() > 16 {
            if let Some(a) = acks.pop_front() {
                a.wait().await?;
            }
        }
        bar.inc(1);
    }
    for a in acks {
        a.wait().await?;
    }
    let ingest = t0.elapsed();
    let ingest_cpu = process_cpu()?.saturating_sub(cpu0);
    bar.finish_and_clear();
    let fsyncs = h.stats().wal_fsyncs;

    // The one-day tag for the aggregate query (not timed as ingest).
    let mut day_mix = Mix::new(1, crate::bench_mix::START_2026_US, 1_000_000, 11);
    let mut day_rows = Vec::new();
    let mut day_batch = Vec::new();
    let mut day_pg: Vec<(u32, i64, f64)> = Vec::with_capacity(MONTH as usize);
    for step in 0..MONTH {
        day_mix.step(step, &mut day_rows);
        for &(_, ts, v) in &day_rows {
            day_batch.push((day_hid, ts, mix_value(v), Quality::GOOD));
            day_pg.push((tags as u32, ts, v.as_f64()));
        }
        if day_batch.len() >= 10_000 {
            h.submit(std::mem::take(&mut day_batch))?.wait().await?;
        }
    }
    h.submit(day_batch)?.wait().await?;

    // Compress everything into chunks, then measure the disk.
    let t1 = Instant::now();
    tokio::task::block_in_place(|| h.flush_blocking())?;
    let compress = t1.elapsed();
    let stats = h.stats();
    let bytes_before = (stats.chunk_bytes + stats.wal_bytes) as f64;
    // What the background merge does over time, done now: full-size chunks, file shrunk.
    let t2 = Instant::now();
    tokio::task::block_in_place(|| h.compact_blocking())?;
    let merge = t2.elapsed();
    let stats = h.stats();
    let bytes = (stats.chunk_bytes + stats.wal_bytes) as f64;
    let stored = (total + MONTH) as f64;
    let regular = h.storage_breakdown()?;

    // 2. Queries: 1 day of one tag into 1-minute averages; last value of every tag.
    let from = Timestamp(crate::bench_mix::START_2026_US);
    let to = Timestamp(crate::bench_mix::START_2026_US + DAY as i64 * 1_000_000);
    let day_name = day_path.to_string();
    let agg_ms = time_aggregate(&h, &day_name, from, to, Duration::from_secs(60), 1440)?;
    // 30 days of the same tag into 1-hour averages: answered by the hourly rollups.
    let month_to = Timestamp(crate::bench_mix::START_2026_US + MONTH as i64 * 1_000_000);
    let rollups_before = h.stats().rollup_hours_read;
    let month_ms = time_aggregate(
        &h,
        &day_name,
        from,
        month_to,
        Duration::from_secs(3600),
        720,
    )?;
    let month_rollups = h.stats().rollup_hours_read > rollups_before;
    let names: Vec<String> = paths.iter().map(|p| p.to_string()).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut last_times = Vec::new();
    for _ in 0..21 {
        let t = Instant::now();
        let last = h.last(&refs);
        last_times.push(t.elapsed());
        anyhow::ensure!(last.iter().all(Option::is_some), "a tag has no last value");
    }
    let last_ms = median(last_times);
    h.close();

    let ours_rate = total as f64 / ingest.as_secs_f64();
    let mut table = vec![
        (
            "ingest, durability on (samples/s)".to_owned(),
            format!("{ours_rate:.0}"),
            String::new(),
            String::new(),
        ),
        (
            "ingest CPU (cores busy)".to_owned(),
            format!("{:.2}", ingest_cpu.as_secs_f64() / ingest.as_secs_f64()),
            String::new(),
            String::new(),
        ),
        (
            "WAL group commits (fsyncs)".to_owned(),
            fsyncs.to_string(),
            String::new(),
            String::new(),
        ),
        (
            "compression into chunks (after ingest)".to_owned(),
            format!("{:.2} s", compress.as_secs_f64()),
            String::new(),
            String::new(),
        ),
        (
            "bytes on disk".to_owned(),
            fmt_bytes(bytes),
            String::new(),
            String::new(),
        ),
        (
            "bytes per sample".to_owned(),
            format!("{:.3}", bytes / stored),
            String::new(),
            String::new(),
        ),
        (
            "  before merging checkpoint chunks".to_owned(),
            format!("{:.3}", bytes_before / stored),
            String::new(),
            String::new(),
        ),
        (
            "  merge + file compaction took".to_owned(),
            format!("{:.2} s", merge.as_secs_f64()),
            String::new(),
            String::new(),
        ),
        (
            "1 day of 1 tag -> 1-min avg (median of 21)".to_owned(),
            fmt_ms(agg_ms),
            String::new(),
            String::new(),
        ),
        (
            format!("last value of {tags} tags (median of 21)"),
            fmt_ms(last_ms),
            String::new(),
            String::new(),
        ),
        (
            format!(
                "30 days of 1 tag -> 1-h avg ({}; median of 21)",
                if month_rollups {
                    "hourly rollups"
                } else {
                    "raw"
                }
            ),
            fmt_ms(month_ms),
            String::new(),
            String::new(),
        ),
    ];

    if postgres {
        let pg = crate::bench_pg::Pg::start().await?;
        println!("PostgreSQL {} (narrow table: tag, ts, value; primary key (tag, ts); fsync and synchronous_commit on)", pg.server_version());
        pg.create_schema().await?;
        let mut mix = Mix::new(tags, crate::bench_mix::START_2026_US, 1_000_000, 7);
        let bar = indicatif::ProgressBar::new(seconds);
        if let Ok(style) =
            indicatif::ProgressStyle::with_template("{msg:>24} [{bar:40}] {pos}/{len} s {eta}")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message("PostgreSQL COPY");
        let t0 = Instant::now();
        let mut w = pg.copy_writer().await?;
        let mut pg_rows = Vec::with_capacity(tags);
        for step in 0..seconds {
            mix.step(step, &mut rows);
            pg_rows.clear();
            pg_rows.extend(rows.iter().map(|&(i, ts, v)| (i, ts, v.as_f64())));
            w.write_batch(&pg_rows).await?;
            bar.inc(1);
        }
        w.finish().await?;
        let pg_ingest = t0.elapsed();
        bar.finish_and_clear();
        let mut w = pg.copy_writer().await?;
        for part in day_pg.chunks(10_000) {
            w.write_batch(part).await?;
        }
        w.finish().await?;
        let _ = pg.timed_query("VACUUM ANALYZE samples").await?;
        let size = pg.size().await?;
        let pg_rate = total as f64 / pg_ingest.as_secs_f64();
        let pg_bps = size.total_bytes as f64 / stored;
        let agg_sql = format!(
            "SELECT count(*) FROM (SELECT date_bin('1 minute', ts, timestamptz '2000-01-01'), avg(value) FROM samples WHERE tag = {tags} AND ts >= to_timestamp({}) AND ts < to_timestamp({}) GROUP BY 1) q",
            from.0 / 1_000_000,
            to.0 / 1_000_000
        );
        let last_sql = format!(
            "SELECT count(*) FROM generate_series(0, {}) AS t(tag), LATERAL (SELECT value FROM samples s WHERE s.tag = t.tag ORDER BY ts DESC LIMIT 1) l",
            tags - 1
        );
        let month_sql = format!(
            "SELECT count(*) FROM (SELECT date_bin('1 hour', ts, timestamptz '2000-01-01'), avg(value) FROM samples WHERE tag = {tags} AND ts >= to_timestamp({}) AND ts < to_timestamp({}) GROUP BY 1) q",
            from.0 / 1_000_000,
            month_to.0 / 1_000_000
        );
        let mut pg_agg = Vec::new();
        let mut pg_last = Vec::new();
        let mut pg_month = Vec::new();
        for _ in 0..5 {
            pg_agg.push(pg.timed_query(&agg_sql).await?.0);
            pg_last.push(pg.timed_query(&last_sql).await?.0);
            pg_month.push(pg.timed_query(&month_sql).await?.0);
        }
        let (pg_agg, pg_last, pg_month) = (median(pg_agg), median(pg_last), median(pg_month));
        pg.stop().await?;
        let ratio = |ours: f64, theirs: f64| format!("{:.1}x", ours / theirs);
        table[10].2 = fmt_ms(pg_month);
        table[10].3 = ratio(pg_month.as_secs_f64(), month_ms.as_secs_f64()) + " faster";
        table[0].2 = format!("{pg_rate:.0}");
        table[0].3 = ratio(ours_rate, pg_rate);
        table[4].2 = fmt_bytes(size.total_bytes as f64);
        table[5].2 = format!("{pg_bps:.1}");
        table[5].3 = format!("{:.0}x smaller", pg_bps / (bytes / stored));
        table[8].2 = fmt_ms(pg_agg);
        table[8].3 = ratio(pg_agg.as_secs_f64(), agg_ms.as_secs_f64()) + " faster";
        table[9].2 = fmt_ms(pg_last);
        table[9].3 = ratio(pg_last.as_secs_f64(), last_ms.as_secs_f64()) + " faster";
        table.push((
            "PostgreSQL WAL written (bytes/sample)".to_owned(),
            String::new(),
            format!("{:.1}", size.wal_bytes as f64 / stored),
            String::new(),
        ));
    }

    // Where the bytes go, on the regular mix and on the field regime (each device's poll
    // stamped with ±5 ms of jitter at µs resolution, shared by its 20 tags).
    let field = tokio::task::block_in_place(|| field_storage(tags, seconds))?;
    println!();
    let rows: Vec<[String; 4]> = table.into_iter().map(|(a, b, c, d)| [a, b, c, d]).collect();
    print_table(["figure", "ironplant", "PostgreSQL", "ratio"], &rows);
    println!();
    let split = |b: &ironplant_historian::StorageBreakdown| {
        let n = b.samples.max(1) as f64;
        [
            format!("{:.3}", b.file_bytes as f64 / n),
            format!("{:.3}", b.timestamp_bytes as f64 / n),
            format!("{:.3}", b.value_bytes as f64 / n),
            format!("{:.3}", (b.quality_bytes + b.header_bytes) as f64 / n),
            format!(
                "{:.3} ({:.0} %)",
                b.overhead_bytes() as f64 / n,
                100.0 * b.overhead_bytes() as f64 / b.file_bytes.max(1) as f64
            ),
        ]
    };
    let [a0, a1, a2, a3, a4] = split(&regular);
    let [b0, b1, b2, b3, b4] = split(&field);
    print_table(
        [
            "bytes per sample (after merge)",
            "total",
            "timestamps",
            "values",
            "quality + headers",
            "storage engine overhead",
        ],
        &[
            [
                format!("regular 1 s polling ({} samples)", regular.samples),
                a0,
                a1,
                a2,
                a3,
                a4,
            ],
            [
                format!("jittered ±5 ms per device ({} samples)", field.samples),
                b0,
                b1,
                b2,
                b3,
                b4,
            ],
        ],
    );
    println!(
        "field regime: {} shared timestamp columns for {} chunks; overhead = the redb file minus the chunk bytes (pages, B-tree, free space)",
        field.shared_columns, field.chunks
    );
    for (name, b) in [("regular", &regular), ("jittered", &field)] {
        let n = b.samples.max(1) as f64;
        println!(
            "  {name}: of the overhead, B-tree metadata {:.3} B/sample, unused room in pages {:.3}, free pages {:.3}",
            b.engine_metadata_bytes as f64 / n,
            b.engine_fragmented_bytes as f64 / n,
            b.file_bytes.saturating_sub(b.engine_allocated_bytes) as f64 / n
        );
    }
    println!();
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    let field_bps = field.file_bytes as f64 / field.samples.max(1) as f64;
    println!(
        "targets: >= 2,000,000 samples/s ingest (durable): {}; <= 0.8 byte/sample on the jittered mix: {} ({field_bps:.3}); 1-day/1-min aggregate < 1 ms: {}; 30-day/1-h aggregate < 5 ms: {}",
        verdict(ours_rate >= 2e6),
        verdict(field_bps <= 0.8),
        verdict(agg_ms < Duration::from_millis(1)),
        verdict(month_ms < Duration::from_millis(5))
    );
    Ok(())
}
