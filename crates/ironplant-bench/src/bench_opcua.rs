//! `ironplant-bench opcua`: the notifications/s one OPC UA connection sustains, and the client's
//! CPU per 1,000 monitored items, for Ironplant's client and for asyncua's (the third-party
//! reference) under the same load in the same run.
//!
//! The load: our OPC UA server of the UNS ([`UnsServer`]) in this process with N Double tags,
//! every one of them changing every `--period` (a random walk at sensor precision, 0.01, that
//! moves at each tick), source timestamps on the nominal tick grid. Each client runs in its own
//! child process — ours as `ironplant-bench opcua-client` (hidden), asyncua through
//! `tests/peers/opcua_client.py count` — with the same security (Basic256Sha256,
//! SignAndEncrypt, user name and password), one subscription over all N items created in one
//! request, sampling = `--period`, publishing = `--publishing` and a queue of publishing /
//! period + 1, so that no change is lost by design: what does not arrive, the client (or the
//! server) did not keep up with. Each client measures its own CPU (user + system of the whole
//! process) and counts over the same window: from its monitored items' creation for
//! `--seconds`. A client that cannot subscribe or loses its connection is a FAILED row (with
//! its own words for why), not a benchmark error; the command fails at the end if ours did.
//!
//! With `taskset` and two CPUs or more, this process (server and source) runs on CPU 0 and each
//! client on CPU 1, so a client's "% of one core" is of a core it has to itself.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::str::FromStr as _;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context as _};
use ironplant_core::{BoxFuture, Quality, Timestamp, Value, ValueType};
use ironplant_opcua::client::{self, ClientSettings, Deadband, Identity, Monitor, Policy};
use ironplant_opcua::opcua::types::NodeId;
use ironplant_opcua::pki::Pki;
use ironplant_opcua::server::{
    Backend, ServerSettings, ServerTag, ServerUser, UnsServer, WriteRefusal,
};
use parking_lot::Mutex;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, BufReader};

/// The stack's sampling and publishing floor (its subscription timer): a shorter interval is
/// revised up by the server.
const FLOOR: Duration = Duration::from_millis(100);
const USER: &str = "bench";
const PASSWORD: &str = "bench-password-long-enough";
/// The CPUs of this process (server and source) and of the client, when pinned.
const SERVER_CPU: &str = "0";
const CLIENT_CPU: &str = "1";

/// What `ironplant-bench opcua` measures.
pub struct Options {
    /// Monitored items of each scenario.
    pub items: Vec<usize>,
    /// Every item changes once per period; also the sampling interval.
    pub period: Duration,
    /// The subscription's publishing interval.
    pub publishing: Duration,
    /// Seconds each client counts.
    pub seconds: u64,
    /// Run asyncua's client as the reference.
    pub asyncua: bool,
}

/// The platform, faked: one user who may read, and no writes.
struct BenchBackend;

impl Backend for BenchBackend {
    fn authenticate(
        &self,
        user: &str,
        password: &str,
    ) -> BoxFuture<'static, Result<ServerUser, String>> {
        let r = if user == USER && password == PASSWORD {
            Ok(ServerUser {
                name: USER.into(),
                can_write: false,
            })
        } else {
            Err("wrong user name or password".into())
        };
        Box::pin(async move { r })
    }

    fn write(
        &self,
        _user: &ServerUser,
        _tag: &str,
        _value: Value,
    ) -> BoxFuture<'static, Result<(), WriteRefusal>> {
        Box::pin(async {
            Err(WriteRefusal::Refused(
                "the benchmark takes no writes".into(),
            ))
        })
    }
}

/// The path of item `i`: 100 items per asset folder, as a PLC's tags under its machine.
fn item_path(i: usize) -> String {
    format!(
        "bench/area1/line{:02}/cell{:03}/value{:02}",
        i / 10_000,
        (i / 100) % 100,
        i % 100
    )
}

/// The run time of each live thread of this process, in ns, from
/// `/proc/self/task/*/schedstat` (the scheduler's count, the clock behind Python's
/// `time.process_time()`), by thread id.
fn thread_times() -> anyhow::Result<HashMap<String, u64>> {
    let mut out = HashMap::new();
    for task in
        std::fs::read_dir("/proc/self/task").context("cannot read /proc/self/task (Linux only)")?
    {
        let task = task?;
        // A thread may exit between listing and reading: skip it.
        let Ok(text) = std::fs::read_to_string(task.path().join("schedstat")) else {
            continue;
        };
        let ns = text
            .split_whitespace()
            .next()
            .and_then(|f| f.parse::<u64>().ok())
            .with_context(|| format!("unexpected schedstat: {text:?}"))?;
        out.insert(task.file_name().to_string_lossy().into_owned(), ns);
    }
    Ok(out)
}

/// The CPU time of this whole process (user + system, every thread) since it was made, in ns
/// resolution. Added up per thread between readings, so a thread that exits loses only what it
/// ran since the previous reading: read it often (every 100 ms here) to make that nothing.
struct CpuClock {
    last: HashMap<String, u64>,
    total_ns: u64,
}

impl CpuClock {
    fn new() -> anyhow::Result<CpuClock> {
        Ok(CpuClock {
            last: thread_times()?,
            total_ns: 0,
        })
    }

    /// Seconds of CPU since [`CpuClock::new`].
    fn read(&mut self) -> anyhow::Result<f64> {
        let now = thread_times()?;
        for (tid, ns) in &now {
            self.total_ns += ns.saturating_sub(self.last.get(tid).copied().unwrap_or(0));
        }
        self.last = now;
        Ok(self.total_ns as f64 / 1e9)
    }
}

/// A reading at a time: this process's CPU seconds, or the changes published so far.
#[derive(Clone, Copy)]
struct Point {
    at: Instant,
    value: f64,
}

/// The value at `t`, interpolated between the readings around it; `None` past the last one.
fn interpolate(points: &[Point], t: Instant) -> Option<f64> {
    let after = points.iter().position(|p| p.at >= t)?;
    let b = points[after];
    let Some(a) = after.checked_sub(1).map(|i| points[i]) else {
        return Some(b.value);
    };
    let span = b.at.duration_since(a.at).as_secs_f64();
    let f = if span > 0.0 {
        t.duration_since(a.at).as_secs_f64() / span
    } else {
        1.0
    };
    Some(a.value + (b.value - a.value) * f)
}

/// This process's CPU (read every 100 ms) and the source's output (at each tick) over time,
/// to read them over any window.
struct Series {
    clock: Mutex<CpuClock>,
    cpu: Mutex<Vec<Point>>,
    published: Mutex<Vec<Point>>,
}

impl Series {
    fn new() -> anyhow::Result<Series> {
        Ok(Series {
            clock: Mutex::new(CpuClock::new()?),
            cpu: Mutex::default(),
            published: Mutex::default(),
        })
    }

    fn sample_cpu(&self) -> anyhow::Result<()> {
        let mut clock = self.clock.lock();
        let value = clock.read()?;
        self.cpu.lock().push(Point {
            at: Instant::now(),
            value,
        });
        Ok(())
    }

    fn published(&self, at: Instant, total: u64) {
        self.published.lock().push(Point {
            at,
            value: total as f64,
        });
    }

    /// This process's CPU (share of one core) and the changes published per second in
    /// `[from, to]`: `None` until there are readings after `to`. The source's ticks are
    /// regular, so interpolating between them gives its rate without the ± one tick a count
    /// of whole ticks would have.
    fn window(&self, from: Instant, to: Instant) -> Option<(f64, f64)> {
        let secs = to.duration_since(from).as_secs_f64().max(1e-9);
        let cpu = self.cpu.lock();
        let published = self.published.lock();
        let c = interpolate(&cpu, to)? - interpolate(&cpu, from)?;
        let p = interpolate(&published, to)? - interpolate(&published, from)?;
        Some((c / secs, p / secs))
    }

    /// [`Series::window`], waiting (up to 2 s) for the readings after `to`.
    async fn window_after(&self, from: Instant, to: Instant) -> anyhow::Result<(f64, f64)> {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            if let Some(w) = self.window(from, to) {
                return Ok(w);
            }
            if Instant::now() > deadline {
                bail!("the value source or the CPU sampler stopped");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A value source: `paths` change every `period` (a random walk in steps of 0.01 to 0.05, never
/// zero), stamped with the nominal tick time, published in one batch per tick.
fn start_source(
    server: Arc<UnsServer>,
    paths: Vec<String>,
    period: Duration,
    series: Arc<Series>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        // splitmix64: reproducible, no dependency.
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        // Hundredths: temperatures, pressures and flows of 20.00 to 99.00 at the start.
        let mut centi: Vec<i64> = (0..paths.len())
            .map(|i| 2_000 + (i as i64 % 80) * 100)
            .collect();
        let mut values: Vec<Value> = vec![Value::Null; paths.len()];
        let t0 = Instant::now();
        let wall0 = SystemTime::now();
        let mut total: u64 = 0;
        let mut tick = tokio::time::interval(period);
        // A late tick is skipped, not bunched: the offered rate is what was published.
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            let at = tick.tick().await.into_std();
            let ts = Timestamp::from_system_time(wall0 + at.saturating_duration_since(t0));
            for (c, v) in centi.iter_mut().zip(values.iter_mut()) {
                let r = next();
                let step = 1 + (r % 5) as i64;
                *c += if r & (1 << 32) == 0 { step } else { -step };
                *v = Value::Float(*c as f64 / 100.0);
            }
            let n = server.publish(
                paths
                    .iter()
                    .zip(values.iter())
                    .map(|(p, v)| (p.as_str(), v, Quality::GOOD, ts)),
            );
            total += n as u64;
            series.published(at, total);
        }
    })
}

/// The asyncua interpreter: `IRONPLANT_PYTHON`, else `target/venv/bin/python` (what `.ci/test`
/// installs), if it imports asyncua; with asyncua's version.
fn asyncua_python() -> Option<(PathBuf, String)> {
    let py = std::env::var_os("IRONPLANT_PYTHON")
        .map(PathBuf::from)
        .or_else(|| {
            let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/venv/bin/python");
            p.exists().then_some(p)
        })?;
    let out = std::process::Command::new(&py)
        .args(["-c", "import asyncua; print(asyncua.__version__)"])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| (py, String::from_utf8_lossy(&out.stdout).trim().to_owned()))
}

fn peer_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/peers/opcua_client.py")
}

/// What a client child reported, and when its counting window was.
struct ClientRun {
    count: u64,
    cpu_seconds: f64,
    elapsed: f64,
    /// When the report line arrived (the end of the window; the start is `elapsed` before).
    done_at: Instant,
    stderr: String,
}

/// How a client child ended: with its count, or failed (why, in its own words).
enum Outcome {
    Done(ClientRun),
    Failed(String),
}

/// The first error a client logged (ours through tracing, asyncua through logging), to say
/// why it failed.
fn first_error(stderr: &str) -> Option<&str> {
    stderr.lines().find_map(|l| {
        l.split_once(" ERROR ")
            .map(|(_, m)| m)
            .or_else(|| l.strip_prefix("ERROR:"))
            .map(str::trim)
    })
}

/// Runs a client child (`program args…`, pinned to [`CLIENT_CPU`] when `pin`) and waits for
/// its `{"done": true, …}` line, within `limit`; the progress spinner shows `label`.
async fn run_client(
    label: &str,
    program: &Path,
    args: &[OsString],
    pin: bool,
    limit: Duration,
    series: &Series,
) -> anyhow::Result<Outcome> {
    let mut cmd = if pin {
        let mut c = tokio::process::Command::new("taskset");
        c.args(["-c", CLIENT_CPU]).arg(program);
        c
    } else {
        tokio::process::Command::new(program)
    };
    let mut child = cmd
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("{label}: cannot start {}", program.display()))?;
    let mut stderr = child.stderr.take().context("no stderr")?;
    let err_task = tokio::spawn(async move {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s).await;
        s
    });
    let mut lines = BufReader::new(child.stdout.take().context("no stdout")?).lines();
    let bar = indicatif::ProgressBar::new_spinner();
    if let Ok(style) = indicatif::ProgressStyle::with_template("{spinner} {msg} {elapsed}") {
        bar.set_style(style);
    }
    bar.set_message(label.to_owned());
    let deadline = Instant::now() + limit;
    let mut report = None;
    let mut timed_out = false;
    loop {
        let line = tokio::select! {
            l = lines.next_line() => l?,
            () = tokio::time::sleep(Duration::from_millis(100)) => {
                bar.tick();
                if Instant::now() > deadline {
                    timed_out = true;
                    let _ = child.kill().await;
                    break;
                }
                continue;
            }
        };
        let Some(line) = line else { break };
        let at = Instant::now();
        // The end of the window: this process's CPU right now.
        series.sample_cpu()?;
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
            if v["done"] == true || v.get("error").is_some() {
                report = Some((v, at));
                break;
            }
        }
    }
    bar.finish_and_clear();
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
    let stderr = err_task.await.unwrap_or_default();
    let why = |what: String| {
        let cause = first_error(&stderr).map_or(String::new(), |c| {
            // The stack's service faults run to a screenful: the start says what failed.
            let mut c: String = c.chars().take(200).collect();
            if c.len() < first_error(&stderr).map_or(0, str::len) {
                c.push('…');
            }
            format!(": {c}")
        });
        Ok(Outcome::Failed(format!("{what}{cause}")))
    };
    let (v, done_at) = match report {
        Some(r) => r,
        None if timed_out => return why(format!("no result within {} s", limit.as_secs())),
        None => return why(format!("ended without a result ({status:?})")),
    };
    if let Some(e) = v.get("error") {
        let status = v["status"].as_str().unwrap_or("no status");
        return why(format!("{} ({status})", e.as_str().unwrap_or_default()));
    }
    let number = |k: &str| {
        v[k].as_f64()
            .with_context(|| format!("{label}: no {k:?} in {v}"))
    };
    Ok(Outcome::Done(ClientRun {
        count: number("count")? as u64,
        cpu_seconds: number("cpu_seconds")?,
        elapsed: number("elapsed")?,
        done_at,
        stderr,
    }))
}

/// Pins every thread of this process to `cpus`.
fn pin_self(cpus: &str) -> anyhow::Result<()> {
    let status = std::process::Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &std::process::id().to_string()])
        .stdout(Stdio::null())
        .status()
        .context("cannot run taskset")?;
    if !status.success() {
        bail!("taskset -a -p -c {cpus} failed: {status}");
    }
    Ok(())
}

/// The benchmark.
pub async fn run(opts: Options) -> anyhow::Result<()> {
    let Options {
        items,
        period,
        publishing,
        seconds,
        asyncua,
    } = opts;
    let duration = Duration::from_secs(seconds.max(1));
    if period < FLOOR || publishing < FLOOR {
        bail!(
            "--period and --publishing must be at least {} ms: the stack samples and publishes at most every 100 ms (a faster request is revised up)",
            FLOOR.as_millis()
        );
    }
    // Room for every sample of a publishing interval, plus one: the stack's 100 ms timer lets
    // an interval run a tick late now and then (it publishes when a tick finds the interval
    // elapsed), and with no spare room those cycles would drop a change per item.
    let queue = publishing.as_millis().div_ceil(period.as_millis()) as usize + 1;
    let max_items = ironplant_opcua::server::MAX_MONITORED_ITEMS_PER_SUBSCRIPTION;
    for &n in &items {
        if n == 0 || n > max_items {
            bail!("--items {n}: each scenario needs 1 to {max_items} items (the server's limit per subscription)");
        }
    }
    let most = items.iter().copied().max().unwrap_or(0);
    let exe = std::env::current_exe().context("cannot locate the ironplant-bench binary")?;

    // The reference: asyncua, or why not.
    let python = if asyncua {
        match asyncua_python() {
            Some(p) => Some(p),
            None if std::env::var("CI").as_deref() == Ok("true") => bail!(
                "asyncua (target/venv or IRONPLANT_PYTHON) is required under CI=true: run .ci/test, which installs it"
            ),
            None => {
                println!(
                    "asyncua reference SKIPPED: no target/venv/bin/python with asyncua (run .ci/test to install it, or set IRONPLANT_PYTHON)"
                );
                None
            }
        }
    } else {
        None
    };
    if python.is_some() && !peer_script().exists() {
        bail!("{} is missing", peer_script().display());
    }

    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pin = Path::new("/usr/bin/taskset").exists() && cpus >= 2;
    if pin {
        pin_self(SERVER_CPU)?;
    }

    // Certificates: the server's, our client's and asyncua's, trusted both ways.
    let dir = tempfile::Builder::new()
        .prefix("ironplant-bench-opcua-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    let now = SystemTime::now();
    let server_pki = Pki::open_or_create(&dir.path().join("server-pki"), now)?;
    let client_pki = Pki::open_or_create(&dir.path().join("client-pki"), now)?;
    let ours_cert = client_pki.application_certificate(
        ironplant_opcua::source::APPLICATION_URI,
        &ironplant_opcua::source::client_names(),
        now,
    )?;
    let tags: Vec<ServerTag> = (0..most)
        .map(|i| ServerTag {
            path: item_path(i),
            value_type: ValueType::Float,
            unit: Some("degC".into()),
            range: None,
            writable: false,
            description: None,
        })
        .collect();
    let settings = ServerSettings {
        host: "127.0.0.1".into(),
        port: 0,
        hostnames: vec!["localhost".into(), "127.0.0.1".into()],
        application_uri: "urn:ironplant:bench:uns".into(),
        namespace_uri: "urn:ironplant:uns".into(),
        root: "Ironplant".into(),
        allow_none: false,
        sign_only: false,
        writes: false,
        max_sessions: 4,
    };
    let server = Arc::new(
        UnsServer::start(&server_pki, settings, tags, Arc::new(BenchBackend))
            .await
            .context("cannot start our OPC UA server")?,
    );
    let url = server.url();
    server_pki.trust_der(&ours_cert.der)?;
    let server_der = std::fs::read(server_pki.dir().join("own/cert.der"))
        .context("cannot read the server's certificate")?;
    client_pki.trust_der(&server_der)?;
    let asyncua_pki = dir.path().join("asyncua-pki");
    if let Some((py, _)) = &python {
        let out = tokio::process::Command::new(py)
            .arg(peer_script())
            .arg(&url)
            .arg("--pki")
            .arg(&asyncua_pki)
            .arg("cert")
            .output()
            .await
            .context("cannot run the asyncua client")?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).with_context(|| {
            format!(
                "asyncua client `cert`: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
        let path = v["certificate"]
            .as_str()
            .with_context(|| format!("asyncua client `cert` printed {v}"))?;
        server_pki
            .trust_der(&std::fs::read(path).with_context(|| format!("cannot read {path}"))?)?;
    }

    let series = Arc::new(Series::new()?);
    let sampler = {
        let series = series.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tick.tick().await;
                if series.sample_cpu().is_err() {
                    return;
                }
            }
        })
    };

    let profile = if cfg!(debug_assertions) {
        "DEBUG build (figures not worth comparing; use --release)"
    } else {
        "release build"
    };
    println!(
        "ironplant bench opcua: one connection, one subscription; every item changes every {} ms; {} s counted per client; {profile}",
        period.as_millis(),
        duration.as_secs()
    );
    println!(
        "server: ours (async-opcua 0.19) in this process, {url}; clients: Basic256Sha256 SignAndEncrypt, user name + password; sampling {} ms, publishing {} ms, queue {queue}, no deadband",
        period.as_millis(),
        publishing.as_millis()
    );
    println!(
        "clients: ironplant (`ironplant-bench opcua-client`, async-opcua 0.19){}, each in its own process, one after the other",
        match &python {
            Some((_, v)) => format!(" and asyncua {v} (tests/peers/opcua_client.py count)"),
            None => String::new(),
        }
    );
    println!(
        "{}",
        if pin {
            format!("server + source pinned to CPU {SERVER_CPU}, each client to CPU {CLIENT_CPU}")
        } else {
            "no CPU pinning (taskset missing or one CPU): server, source and client share the CPUs"
                .to_owned()
        }
    );

    let mut rows = Vec::new();
    let mut notes = Vec::new();
    // (client, notifications/s, offered/s, kept up)
    let mut runs: Vec<(&str, f64, f64, bool)> = Vec::new();
    let mut ours_failed = 0usize;
    let secs_arg = duration.as_secs().to_string();
    for (scenario, &n) in items.iter().enumerate() {
        let paths: Vec<String> = (0..n).map(item_path).collect();
        let nodes: Vec<OsString> = paths
            .iter()
            .map(|p| server.node_id(p).to_string().into())
            .collect();
        let source = start_source(server.clone(), paths, period, series.clone());
        // The source alone (nobody subscribed): what the server side costs before any client.
        let idle = duration.min(Duration::from_secs(2));
        tokio::time::sleep(Duration::from_millis(300)).await;
        let t0 = Instant::now();
        crate::bench::wait_with_progress(&format!("{n} items, no client"), idle).await;
        let (cpu, offered) = series.window_after(t0, Instant::now()).await?;
        rows.push([
            "(source only, no client)".to_owned(),
            n.to_string(),
            format!("{offered:.0}"),
            "-".into(),
            "-".into(),
            "-".into(),
            "-".into(),
            "-".into(),
            format!("{:.1}", cpu * 100.0),
        ]);

        let common: Vec<OsString> = [
            "--interval".to_owned(),
            publishing.as_millis().to_string(),
            "--sampling".into(),
            period.as_millis().to_string(),
            "--queue".into(),
            queue.to_string(),
            "--seconds".into(),
            secs_arg.clone(),
        ]
        .into_iter()
        .map(OsString::from)
        .collect();
        let mut clients: Vec<(&str, PathBuf, Vec<OsString>)> = Vec::new();
        let mut ours_args: Vec<OsString> = vec![
            "opcua-client".into(),
            url.clone().into(),
            "--pki".into(),
            client_pki.dir().into(),
            "--user".into(),
            USER.into(),
            "--password".into(),
            PASSWORD.into(),
        ];
        ours_args.extend(common.iter().cloned());
        ours_args.extend(nodes.iter().cloned());
        clients.push(("ironplant", exe.clone(), ours_args));
        if let Some((py, _)) = &python {
            let mut args: Vec<OsString> = vec![
                peer_script().into(),
                url.clone().into(),
                "--pki".into(),
                asyncua_pki.clone().into(),
                "--user".into(),
                USER.into(),
                "--password".into(),
                PASSWORD.into(),
                "count".into(),
            ];
            args.extend(nodes.iter().cloned());
            args.extend(common.iter().cloned());
            clients.push(("asyncua", py.clone(), args));
        }
        // Who goes first alternates, so that neither always meets a server fresh from the
        // other's session.
        if scenario % 2 == 1 {
            clients.reverse();
        }
        for (who, program, args) in &clients {
            let label = format!("{who}: {n} items, {} s", duration.as_secs());
            let outcome = run_client(
                &label,
                program,
                args,
                pin,
                duration + Duration::from_secs(60),
                &series,
            )
            .await?;
            let r = match outcome {
                Outcome::Done(r) => r,
                Outcome::Failed(why) => {
                    let mut row: [String; 9] = std::array::from_fn(|_| "-".to_owned());
                    row[0] = (*who).to_owned();
                    row[1] = n.to_string();
                    row[2] = format!("{:.0}", n as f64 / period.as_secs_f64());
                    row[3] = "FAILED".to_owned();
                    rows.push(row);
                    notes.push(format!("{who}, {n} items: FAILED: {why}"));
                    if *who == "ironplant" {
                        ours_failed += 1;
                    }
                    continue;
                }
            };
            let from = r
                .done_at
                .checked_sub(Duration::from_secs_f64(r.elapsed.max(0.0)))
                .unwrap_or(r.done_at);
            let (server_cpu, offered) = series.window_after(from, r.done_at).await?;
            let elapsed = r.elapsed.max(1e-9);
            let rate = r.count as f64 / elapsed;
            let share = r.cpu_seconds / elapsed;
            rows.push([
                (*who).to_owned(),
                n.to_string(),
                format!("{offered:.0}"),
                format!("{rate:.0}"),
                format!("{:.1} %", rate / offered.max(1e-9) * 100.0),
                format!("{:.1}", share * 100.0),
                format!("{:.2}", share * 100.0 * 1000.0 / n as f64),
                format!(
                    "{:.1}",
                    r.cpu_seconds * 1000.0 / (r.count as f64 / 1000.0).max(1e-9)
                ),
                format!("{:.1}", server_cpu * 100.0),
            ]);
            // A window's ends cut through a Publish cycle (whose notifications arrive at once):
            // short of one cycle and a half is counting, not loss.
            let slack = 1.5 * n as f64 / elapsed.max(1.0) + offered * 0.01;
            let kept_up = rate >= offered - slack;
            if !kept_up {
                notes.push(format!(
                    "{who}, {n} items: received {:.1} % of the changes offered ({rate:.0} of {offered:.0}/s){}",
                    rate / offered.max(1e-9) * 100.0,
                    if share > 0.9 {
                        " — the client used its whole core: it cannot keep up"
                    } else if server_cpu > 0.9 {
                        " — the server used its whole core: bounded by the server, not the client"
                    } else {
                        ""
                    }
                ));
            }
            let refused = r.stderr.lines().filter(|l| l.contains("refused")).count();
            if refused > 0 {
                notes.push(format!(
                    "{who}, {n} items: {refused} monitored items refused (see its stderr)"
                ));
            }
            runs.push((*who, rate, offered, kept_up));
        }
        source.abort();
        let _ = source.await;
    }
    sampler.abort();

    println!();
    crate::bench::print_table(
        [
            "client",
            "items",
            "offered changes/s",
            "notifications/s",
            "of offered",
            "client CPU %",
            "CPU % per 1,000 items",
            "CPU ms per 1,000 notif.",
            "server CPU %",
        ],
        &rows,
    );
    println!();
    println!(
        "offered = changes the source published per second during the client's window; notifications/s = what the client received (the first Publish brings each item's current value)"
    );
    println!(
        "client CPU % = user + system time of the client's whole process over its counting window, in % of one core; per 1,000 items: at {:.0} changes/s per 1,000 items",
        1000.0 / period.as_secs_f64()
    );
    println!(
        "server CPU % = this process (our server, the value source and the CPU sampler) over the same window"
    );
    for who in ["ironplant", "asyncua"] {
        let mine: Vec<_> = runs.iter().filter(|r| r.0 == who).collect();
        let kept = mine
            .iter()
            .filter(|r| r.3)
            .map(|r| r.2)
            .max_by(f64::total_cmp);
        let best = mine.iter().max_by(|a, b| a.1.total_cmp(&b.1));
        let Some(best) = best else { continue };
        let kept = kept.map_or("none of the scenarios".to_owned(), |k| {
            format!("every scenario up to {k:.0} changes/s")
        });
        println!(
            "{who}, one connection: received all that was offered in {kept}; at most {:.0} notifications/s (of {:.0} offered)",
            best.1, best.2
        );
    }
    for n in &notes {
        println!("note: {n}");
    }
    println!();
    println!("How these figures could be biased:");
    for b in [
        "loopback TCP: no network latency or loss; a real network adds a round trip to every Publish the client has not sent ahead",
        "our own server (async-opcua 0.19) is the source for both clients: another server would batch notifications differently; both clients see the same one",
        "the stack samples and publishes at most every 100 ms, so an item changes at most 10 times a second; more notifications need more items, and the stack's default decoding limits (1,000 elements per array, 327,675 bytes per message, on either side unless raised) cap the items created in one request and the notifications in one Publish",
        "every item changes at every period: a worst case; field data behind deadbands changes far less often",
        "the queue holds one sample more than a publishing interval needs: the server's 100 ms timer now and then publishes a tick late, and a smaller queue would drop changes there",
        "CPU is the client process's own count from its monitored items' creation (ours: every thread's run time in /proc, read every 100 ms; asyncua: time.process_time(); the same kernel clock); start-up, imports, connection and item creation are excluded for both",
        "the window's ends cut through a Publish cycle, whose notifications arrive together: ± one cycle (±1 % at 10 s, ±5 % at 2 s)",
        "ours is measured through `Connection::subscribe` (a callback into an unbounded channel, what the connector reads); asyncua's through its handler callback, which only counts",
        "the server runs in the benchmark's own process; its CPU includes generating the values",
        "the clients run one after the other (the first alternating between scenarios), never at once: one connection each",
    ] {
        println!("  - {b}");
    }

    if let Ok(server) = Arc::try_unwrap(server) {
        server.stop().await;
    }
    if ours_failed > 0 {
        bail!("ironplant's client failed {ours_failed} scenario(s): see the notes above");
    }
    Ok(())
}

/// The client side: what `ironplant-bench opcua-client` was asked.
pub struct ClientArgs {
    pub url: String,
    pub pki: PathBuf,
    pub user: String,
    pub password: String,
    /// Publishing interval, ms.
    pub interval: f64,
    pub seconds: f64,
    /// Sampling interval, ms (default: `interval`).
    pub sampling: Option<f64>,
    pub queue: u32,
    pub nodes: Vec<String>,
}

/// Ironplant's client counting notifications, with the command line and output of
/// `opcua_client.py count`: `{"done": true, "count": N, "cpu_seconds": s, "elapsed": s}`, or
/// `{"error": message, "status": StatusCode or null}` when it cannot connect, subscribe or
/// keep its connection (a reconnection would void the count).
pub async fn client(a: ClientArgs) -> anyhow::Result<()> {
    match count(a).await {
        Ok(report) => {
            println!("{report}");
            Ok(())
        }
        Err((error, status)) => {
            println!(
                "{}",
                serde_json::json!({ "error": format!("{error:#}"), "status": status })
            );
            Err(error)
        }
    }
}

type Failure = (anyhow::Error, Option<String>);

async fn count(a: ClientArgs) -> Result<serde_json::Value, Failure> {
    let plain = |e: anyhow::Error| (e, None);
    let pki = Pki::open_or_create(&a.pki, SystemTime::now()).map_err(|e| plain(e.into()))?;
    let settings = ClientSettings {
        url: a.url.clone(),
        policy: Policy::Basic256Sha256,
        encrypt: true,
        identity: Identity::User {
            name: a.user,
            password: a.password,
        },
        application_uri: ironplant_opcua::source::APPLICATION_URI.into(),
        request_timeout: Duration::from_secs(10),
        retries: 0,
    };
    let sampling = Duration::from_secs_f64(a.sampling.unwrap_or(a.interval).max(0.0) / 1000.0);
    let monitors = a
        .nodes
        .iter()
        .map(|n| {
            Ok(Monitor {
                node: NodeId::from_str(n)
                    .map_err(|e| anyhow::anyhow!("bad node id {n:?}: {e:?}"))?,
                sampling,
                queue_size: a.queue,
                deadband: Deadband::None,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()
        .map_err(plain)?;
    let status = |e: &client::ClientError| match e {
        client::ClientError::Server { status, .. }
        | client::ClientError::NotConnected { status, .. } => Some(format!("{status}")),
        client::ClientError::Config(_) => None,
    };
    let mut conn = client::connect(&pki, &settings)
        .await
        .map_err(|e| (status(&e), e))
        .map_err(|(s, e)| (anyhow::Error::from(e), s))?;
    let mut events = conn
        .take_events()
        .context("no connection events")
        .map_err(plain)?;
    let (_id, mut rx) = conn
        .subscribe(
            Duration::from_secs_f64(a.interval.max(0.0) / 1000.0),
            &monitors,
        )
        .await
        .map_err(|e| (status(&e), e))
        .map_err(|(s, e)| (anyhow::Error::from(e), s))?;
    // Counted from here, once the monitored items exist, as `opcua_client.py count` does.
    let mut clock = CpuClock::new().map_err(plain)?;
    let t0 = Instant::now();
    let end = tokio::time::sleep_until(tokio::time::Instant::from_std(
        t0 + Duration::from_secs_f64(a.seconds.max(0.0)),
    ));
    tokio::pin!(end);
    let mut read_clock = tokio::time::interval(Duration::from_millis(100));
    let mut count: u64 = 0;
    loop {
        tokio::select! {
            change = rx.recv() => match change {
                Some(_) => count += 1,
                None => return Err(plain(anyhow::anyhow!(
                    "the subscription ended after {count} notifications"
                ))),
            },
            event = events.recv() => match event {
                Some(client::SessionEvent::Lost(s)
                    | client::SessionEvent::KeepAliveFailed(s)
                    | client::SessionEvent::SubscriptionLost(s)) => {
                    return Err((
                        anyhow::anyhow!("connection lost after {count} notifications"),
                        Some(format!("{s}")),
                    ));
                }
                Some(_) => {}
                None => return Err(plain(anyhow::anyhow!(
                    "the session ended after {count} notifications"
                ))),
            },
            _ = read_clock.tick() => {
                clock.read().map_err(plain)?;
            }
            () = &mut end => break,
        }
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu = clock.read().map_err(plain)?;
    conn.close().await;
    Ok(serde_json::json!({
        "done": true,
        "count": count,
        "cpu_seconds": (cpu * 1000.0).round() / 1000.0,
        "elapsed": (elapsed * 1000.0).round() / 1000.0,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Spins until this thread has run 200 ms (by its own clock, whatever the machine's load).
    fn spin() {
        let own = || -> u64 {
            std::fs::read_to_string("/proc/thread-self/schedstat")
                .expect("readable")
                .split_whitespace()
                .next()
                .and_then(|f| f.parse().ok())
                .expect("a number")
        };
        let start = own();
        let mut x: u64 = 1;
        while own() - start < 200_000_000 {
            for _ in 0..10_000 {
                x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1));
            }
        }
    }

    #[test]
    fn the_cpu_clock_counts_every_thread() {
        let mut clock = CpuClock::new().expect("readable");
        let other = std::thread::spawn(spin);
        spin();
        other.join().expect("spun");
        // Other tests of this binary run in the same process meanwhile, so only lower bounds
        // hold: the main thread's 0.2 s at least (the exited thread's share since the previous
        // reading is lost, hence a reading every 100 ms in the benchmark).
        let spent = clock.read().expect("readable");
        assert!(
            spent >= 0.2,
            "{spent} s of CPU: at least the main thread's 0.2 s"
        );
        let mut clock = CpuClock::new().expect("readable");
        let other = std::thread::spawn(|| {
            spin();
            std::thread::sleep(Duration::from_millis(300));
        });
        spin();
        std::thread::sleep(Duration::from_millis(100));
        let spent = clock.read().expect("readable");
        other.join().expect("spun");
        assert!(
            spent >= 0.4,
            "{spent} s of CPU: both live threads' 0.2 s are counted"
        );
    }

    #[test]
    fn the_series_interpolates_between_readings() {
        let s = Series::new().expect("readable");
        let t0 = Instant::now();
        let points = |a: f64, b: f64| {
            vec![
                Point { at: t0, value: a },
                Point {
                    at: t0 + Duration::from_secs(2),
                    value: b,
                },
            ]
        };
        *s.cpu.lock() = points(1.0, 2.0);
        *s.published.lock() = points(0.0, 2000.0);
        let (cpu, rate) = s
            .window(
                t0 + Duration::from_millis(500),
                t0 + Duration::from_millis(1500),
            )
            .expect("inside");
        assert!(
            (cpu - 0.5).abs() < 1e-9 && (rate - 1000.0).abs() < 1e-6,
            "{cpu} {rate}"
        );
        assert!(s.window(t0, t0 + Duration::from_secs(3)).is_none());
    }
}
