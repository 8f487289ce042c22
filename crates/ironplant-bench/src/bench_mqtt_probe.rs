//! What `ironplant-bench mqtt` reads from `/proc`: CPU time of a broker and of the load
//! generator, RSS, the open-file limit; and the small statistics the tables print.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::Context as _;

/// A generator using more than this share of its CPUs is the bottleneck, not the broker.
pub(super) const GENERATOR_BOUND: f64 = 0.90;

/// CPU time of one process as two clocks: every live thread's `schedstat` run time (ns
/// resolution) and `utime + stime` of `/proc/<pid>/stat` (clock ticks, but it keeps the time
/// of threads that have exited, which `schedstat` loses).
#[derive(Clone, Copy)]
struct CpuTime {
    sched_ns: u64,
    stat_ns: u64,
}

/// CPU time (ns) of the threads listed in `dir` (`/proc/<pid>/task`), summed from their
/// `schedstat`. A thread may exit between listing and reading: it is skipped.
pub(crate) fn schedstat_ns(dir: &str) -> anyhow::Result<u64> {
    let mut sched_ns = 0u64;
    for task in std::fs::read_dir(dir).with_context(|| format!("cannot read {dir} (Linux only)"))? {
        let path = task?.path().join("schedstat");
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let ns = text
            .split_whitespace()
            .next()
            .and_then(|f| f.parse::<u64>().ok());
        sched_ns += ns.with_context(|| format!("unexpected {}", path.display()))?;
    }
    Ok(sched_ns)
}

fn cpu_time(pid: u32) -> anyhow::Result<CpuTime> {
    // (The stat clock below still has the time of threads that exited.)
    let sched_ns = schedstat_ns(&format!("/proc/{pid}/task"))?;
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    let ticks = stat_ticks(&text).with_context(|| format!("unexpected {path}: {text:?}"))?;
    Ok(CpuTime {
        sched_ns,
        stat_ns: ticks.saturating_mul(1_000_000_000) / clock_ticks(),
    })
}

/// `utime + stime` of a `/proc/<pid>/stat` line (fields 14 and 15; the command name, field 2,
/// may hold spaces and parentheses, so fields are counted after its last `)`).
fn stat_ticks(line: &str) -> Option<u64> {
    let rest = &line[line.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// `sysconf(_SC_CLK_TCK)` through `getconf` (the workspace forbids `unsafe`); 100 on Linux.
fn clock_ticks() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .filter(|&t| t > 0)
            .unwrap_or(100)
    })
}

/// CPU used between two readings: the `schedstat` clock, unless threads that exited in
/// between make the coarser `stat` clock larger by more than two ticks.
fn cpu_between(a: CpuTime, b: CpuTime) -> Duration {
    let sched = b.sched_ns.saturating_sub(a.sched_ns);
    let stat = b.stat_ns.saturating_sub(a.stat_ns);
    let slack = 2 * 1_000_000_000 / clock_ticks();
    Duration::from_nanos(if stat > sched + slack { stat } else { sched })
}

/// A measured window: wall time and the CPU of one broker and of this process.
pub(super) struct Meter {
    pid: u32,
    broker: CpuTime,
    generator: Duration,
    start: Instant,
}

/// What a [`Meter`] saw.
#[derive(Clone, Copy, Default)]
pub(super) struct Usage {
    pub wall: Duration,
    pub broker_cpu: Duration,
    pub generator_cpu: Duration,
}

impl Meter {
    pub fn start(broker_pid: u32) -> anyhow::Result<Meter> {
        Ok(Meter {
            pid: broker_pid,
            broker: cpu_time(broker_pid)?,
            generator: crate::bench::process_cpu()?,
            start: Instant::now(),
        })
    }

    pub fn stop(&self) -> anyhow::Result<Usage> {
        let wall = self.start.elapsed();
        let broker = cpu_time(self.pid)?;
        let generator = crate::bench::process_cpu()?;
        Ok(Usage {
            wall,
            broker_cpu: cpu_between(self.broker, broker),
            generator_cpu: generator.saturating_sub(self.generator),
        })
    }
}

impl Usage {
    /// Broker CPU in % of one core.
    pub fn broker_pct(&self) -> f64 {
        100.0 * self.broker_cpu.as_secs_f64() / self.wall.as_secs_f64().max(1e-9)
    }

    /// Broker CPU per message, µs.
    pub fn us_per(&self, messages: u64) -> Option<f64> {
        (messages > 0).then(|| self.broker_cpu.as_secs_f64() * 1e6 / messages as f64)
    }

    /// Whether the load generator used more than [`GENERATOR_BOUND`] of its `cores`.
    pub fn generator_bound(&self, cores: usize) -> bool {
        self.generator_cpu.as_secs_f64()
            > GENERATOR_BOUND * cores.max(1) as f64 * self.wall.as_secs_f64()
    }

    /// The generator's CPU in % of its `cores`.
    pub fn generator_pct(&self, cores: usize) -> f64 {
        100.0 * self.generator_cpu.as_secs_f64()
            / (cores.max(1) as f64 * self.wall.as_secs_f64().max(1e-9))
    }
}

pub(super) fn rss_kb(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("no VmRSS in {path}"))
}

/// The soft open-file limit of this process (the brokers inherit it).
pub(super) fn fd_limit() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Latency percentiles, ns.
#[derive(Clone, Copy, Default)]
pub(super) struct Latency {
    pub p50: u64,
    pub p99: u64,
    pub p999: u64,
}

impl Latency {
    pub fn of(mut ns: Vec<u64>) -> Latency {
        ns.sort_unstable();
        Latency {
            p50: percentile(&ns, 0.50),
            p99: percentile(&ns, 0.99),
            p999: percentile(&ns, 0.999),
        }
    }
}

/// The nearest-rank percentile of sorted values (0 when there are none).
pub(super) fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub(super) fn fmt_ns(ns: u64) -> String {
    if ns < 1_000_000 {
        format!("{:.0} µs", ns as f64 / 1e3)
    } else if ns < 10_000_000_000 {
        format!("{:.1} ms", ns as f64 / 1e6)
    } else {
        format!("{:.1} s", ns as f64 / 1e9)
    }
}

pub(super) fn fmt_us(us: Option<f64>) -> String {
    us.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_ticks_counts_fields_after_the_command_name() {
        // A command name with spaces and a parenthesis, as a thread can name itself.
        let line =
            "4242 (tokio (w) 1) S 1 4242 4242 0 -1 4194560 1522 0 0 0 37 12 0 0 20 0 3 0 1234 0 0";
        assert_eq!(stat_ticks(line), Some(37 + 12));
        assert_eq!(stat_ticks("4242 (x) S 1"), None);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<u64> = (1..=1000).collect();
        assert_eq!(percentile(&v, 0.5), 500);
        assert_eq!(percentile(&v, 0.99), 990);
        assert_eq!(percentile(&v, 0.999), 999);
        assert_eq!(percentile(&[7], 0.999), 7);
        assert_eq!(percentile(&[], 0.5), 0);
    }

    #[test]
    fn exited_threads_are_counted_through_the_stat_clock() {
        let tick = 1_000_000_000 / clock_ticks();
        let a = CpuTime {
            sched_ns: 1_000,
            stat_ns: 0,
        };
        // Live threads ran 5 ticks; the process as a whole (with an exited thread) 20.
        let b = CpuTime {
            sched_ns: 1_000 + 5 * tick,
            stat_ns: 20 * tick,
        };
        assert_eq!(cpu_between(a, b), Duration::from_nanos(20 * tick));
        // Within the stat clock's resolution, the finer clock wins.
        let c = CpuTime {
            sched_ns: 1_000 + 19 * tick,
            stat_ns: 20 * tick,
        };
        assert_eq!(cpu_between(a, c), Duration::from_nanos(19 * tick));
    }

    #[test]
    fn this_process_has_cpu_time_and_rss() {
        let pid = std::process::id();
        let t = cpu_time(pid).expect("own /proc entries");
        assert!(t.sched_ns > 0);
        assert!(rss_kb(pid).expect("own status") > 0);
    }
}
