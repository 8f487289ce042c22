//! PostgreSQL as the peer of `ironplant-bench historian`: a private cluster in a temp dir, the same
//! samples loaded with `COPY` through `psql`, on-disk size, and timed comparison queries.
//!
//! Durability matches the historian's (fsync and synchronous_commit on), so the ratio compares
//! like with like. No Rust PostgreSQL client: `psql` and `pg_ctl` run as child processes.

use std::io::Write as _;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::PathBuf;
use std::process::{ExitStatus, Output, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::process::{Child, ChildStdin, Command};

/// Where Debian puts each major version's binaries: `/usr/lib/postgresql/<major>/bin`.
const DEBIAN_PG_ROOT: &str = "/usr/lib/postgresql";
/// How long the server may take to accept connections after `pg_ctl start`.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Ports to try when another process takes the free port between our probe and the server's bind.
const START_ATTEMPTS: usize = 3;

/// Bytes PostgreSQL uses for the loaded samples, after a `CHECKPOINT`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PgSize {
    /// `pg_total_relation_size('samples')`: heap + TOAST + free-space/visibility maps + indexes.
    pub total_bytes: u64,
    /// `pg_table_size('samples')`: everything but the indexes.
    pub table_bytes: u64,
    /// `pg_indexes_size('samples')`: the (tag, ts) primary key.
    pub index_bytes: u64,
    /// WAL written since `create_schema` (or since start): `pg_current_wal_lsn()` difference.
    pub wal_bytes: u64,
}

/// A private PostgreSQL cluster on 127.0.0.1 and a free port, in a temp dir; stopped and deleted
/// on drop (or by [`Pg::stop`], which reports errors).
pub struct Pg {
    bin: PathBuf,
    /// Holds `data/`, `server.log` and the server's Unix socket.
    dir: PathBuf,
    port: u16,
    /// Server commands run through `runuser -u postgres --` (initdb refuses to run as root).
    as_postgres: bool,
    running: bool,
    server_version: String,
    /// The WAL position `PgSize::wal_bytes` counts from.
    wal_mark: parking_lot::Mutex<String>,
}

impl Pg {
    /// Finds PostgreSQL (installing Debian's `postgresql` package if it is missing and we are
    /// root), initdb's a cluster in a temp dir owned by the `postgres` user, starts it on
    /// 127.0.0.1 and a free port, and waits until it accepts connections.
    pub async fn start() -> anyhow::Result<Pg> {
        let bin = match find_bin_dir() {
            Some(bin) => bin,
            None => {
                install_from_debian().await?;
                find_bin_dir().with_context(|| {
                    format!(
                        "apt-get installed `postgresql` but there is no {DEBIAN_PG_ROOT}/<version>/bin/initdb"
                    )
                })?
            }
        };
        let as_postgres = is_root()?;
        if as_postgres {
            let user = Command::new("id").args(["-u", "postgres"]).output().await;
            if !user.is_ok_and(|o| o.status.success()) {
                bail!(
                    "PostgreSQL's server refuses to run as root and there is no `postgres` user to run it \
                     as; create one (`useradd --system --home /var/lib/postgresql postgres`) or \
                     reinstall the `postgresql` package"
                );
            }
        }
        let dir = make_temp_dir()?;
        let mut pg = Pg {
            bin,
            dir,
            port: 0,
            as_postgres,
            running: false,
            server_version: String::new(),
            wal_mark: parking_lot::Mutex::new("0/0".to_owned()),
        };
        if as_postgres {
            let out = Command::new("chown")
                .arg("postgres:")
                .arg(&pg.dir)
                .output()
                .await
                .context("cannot run chown")?;
            check(&out, &format!("chown postgres: {}", pg.dir.display()))?;
        }
        pg.initdb().await?;
        pg.start_server().await?;
        pg.server_version = pg.sql("SHOW server_version").await?.trim().to_owned();
        *pg.wal_mark.lock() = pg
            .sql("SELECT pg_current_wal_lsn()")
            .await?
            .trim()
            .to_owned();
        Ok(pg)
    }

    /// The TCP port on 127.0.0.1.
    #[cfg(test)]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// E.g. `15.14 (Debian 15.14-0+deb12u1)`.
    pub fn server_version(&self) -> &str {
        &self.server_version
    }

    /// The temp dir holding the cluster; deleted on drop.
    #[cfg(test)]
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// Creates the narrow `samples` table the issue asks for.
    pub async fn create_schema(&self) -> anyhow::Result<()> {
        // The primary key's (tag, ts) B-tree is what any real deployment needs to answer "tag X
        // between t1 and t2" without scanning the table, so it is part of what we measure (its
        // size and its cost during COPY), not left out to flatter PostgreSQL.
        self.sql(
            "CREATE TABLE samples (\
               tag integer NOT NULL, \
               ts timestamptz NOT NULL, \
               value double precision, \
               PRIMARY KEY (tag, ts))",
        )
        .await?;
        *self.wal_mark.lock() = self
            .sql("SELECT pg_current_wal_lsn()")
            .await?
            .trim()
            .to_owned();
        Ok(())
    }

    /// Starts a `COPY samples FROM STDIN` through a `psql` child; feed it with
    /// [`CopyWriter::write_batch`] and commit with [`CopyWriter::finish`]. All rows are one
    /// transaction: nothing is visible until `finish` returns.
    pub async fn copy_writer(&self) -> anyhow::Result<CopyWriter> {
        let mut child = self
            .psql()
            .arg("-c")
            .arg("COPY samples (tag, ts, value) FROM STDIN (FORMAT text)")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot run {}", self.bin.join("psql").display()))?;
        let stdin = child.stdin.take().context("psql's stdin is not piped")?;
        Ok(CopyWriter {
            child,
            stdin: Some(stdin),
            buf: Vec::with_capacity(1 << 20),
            encoder: RowEncoder::default(),
            rows: 0,
        })
    }

    /// `CHECKPOINT`, then the bytes on disk for the table and its index, and the WAL written.
    pub async fn size(&self) -> anyhow::Result<PgSize> {
        self.sql("CHECKPOINT").await?;
        let mark = self.wal_mark.lock().clone();
        let sql = format!(
            "SELECT pg_total_relation_size('samples'), pg_table_size('samples'), \
             pg_indexes_size('samples'), pg_wal_lsn_diff(pg_current_wal_lsn(), '{mark}')::bigint"
        );
        let out = self.sql(&sql).await?;
        let fields: Vec<u64> = out
            .trim()
            .split('|')
            .map(str::parse)
            .collect::<Result<_, _>>()
            .with_context(|| format!("unexpected answer {out:?} to {sql}"))?;
        match fields[..] {
            [total_bytes, table_bytes, index_bytes, wal_bytes] => Ok(PgSize {
                total_bytes,
                table_bytes,
                index_bytes,
                wal_bytes,
            }),
            _ => bail!("unexpected answer {out:?} to {sql}"),
        }
    }

    /// Runs one SQL statement; returns the time psql measured for it (`\timing`: the round trip
    /// of the statement, without psql's start-up and connection, which would swamp fast queries)
    /// and the first row of the answer, columns separated by `|` ("" when there is no row).
    pub async fn timed_query(&self, sql: &str) -> anyhow::Result<(Duration, String)> {
        let out = self
            .psql()
            .args(["-q", "-c", "\\timing on", "-c", sql])
            .output()
            .await
            .context("cannot run psql")?;
        check(&out, &format!("psql -c {sql:?}"))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        parse_timed(&stdout)
            .with_context(|| format!("no timing in psql's answer to {sql:?}: {stdout:?}"))
    }

    /// Stops the server and deletes its directory, reporting failures (drop does the same silently).
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let out = self
            .server_cmd("pg_ctl")
            .arg("stop")
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "fast", "-w"])
            .output()
            .await
            .context("cannot run pg_ctl stop")?;
        check(&out, "pg_ctl stop")?;
        self.running = false;
        std::fs::remove_dir_all(&self.dir)
            .with_context(|| format!("cannot delete {}", self.dir.display()))
    }

    async fn initdb(&self) -> anyhow::Result<()> {
        // Trust authentication: the cluster listens on loopback only, lives for one benchmark run
        // and holds synthetic data. --no-sync: initdb's own files need no durability; the server
        // still fsyncs everything it writes.
        let out = self
            .server_cmd("initdb")
            .arg("-D")
            .arg(self.dir.join("data"))
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ])
            .output()
            .await
            .context("cannot run initdb")?;
        check(&out, "initdb").with_context(|| {
            format!(
                "cannot create a PostgreSQL cluster in {}; if the postgres user cannot enter that \
                 directory, point TMPDIR at one it can (e.g. /tmp)",
                self.dir.display()
            )
        })
    }

    async fn start_server(&mut self) -> anyhow::Result<()> {
        let data = self.dir.join("data");
        let log = self.dir.join("server.log");
        let base_conf = std::fs::read_to_string(data.join("postgresql.conf"))
            .with_context(|| format!("cannot read {}", data.join("postgresql.conf").display()))?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.port = free_port()?;
            // Settings go into postgresql.conf rather than `pg_ctl -o`, which passes them through
            // a shell. fsync, synchronous_commit and full_page_writes are spelled out: they are
            // the defaults, and the comparison is only fair with them on.
            let conf = format!(
                "{base_conf}\n# ironplant bench\n\
                 listen_addresses = '127.0.0.1'\n\
                 port = {port}\n\
                 unix_socket_directories = '{socket}'\n\
                 fsync = on\n\
                 synchronous_commit = on\n\
                 full_page_writes = on\n\
                 shared_buffers = '512MB'\n\
                 max_wal_size = '4GB'\n\
                 checkpoint_timeout = '30min'\n\
                 max_connections = 20\n\
                 timezone = 'UTC'\n\
                 logging_collector = off\n",
                port = self.port,
                socket = self.dir.display().to_string().replace('\'', "''"),
            );
            std::fs::write(data.join("postgresql.conf"), conf).with_context(|| {
                format!("cannot write {}", data.join("postgresql.conf").display())
            })?;
            // pg_ctl -w polls until the server accepts connections or exits, within -t seconds.
            let out = self
                .server_cmd("pg_ctl")
                .arg("start")
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(&log)
                .args(["-w", "-t", &START_TIMEOUT.as_secs().to_string()])
                .output()
                .await
                .context("cannot run pg_ctl start")?;
            if out.status.success() {
                self.running = true;
                return self.wait_ready().await;
            }
            let log_text = std::fs::read_to_string(&log).unwrap_or_default();
            let port_taken = log_text.contains("could not bind") || log_text.contains("in use");
            if !(port_taken && attempt < START_ATTEMPTS) {
                bail!(
                    "PostgreSQL did not start (pg_ctl: {}); the server log below says why (lower \
                     shared_buffers in bench_pg.rs if shared memory is short).\n{}\nServer log {}:\n{}",
                    out.status,
                    output_text(&out),
                    log.display(),
                    tail(&log_text, 30)
                );
            }
        }
    }

    /// Confirms the server answers on 127.0.0.1:port over TCP, polling with a deadline.
    async fn wait_ready(&self) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            let out = Command::new(self.bin.join("pg_isready"))
                .args([
                    "-q",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "-t",
                    "5",
                ])
                .output()
                .await
                .context("cannot run pg_isready")?;
            if out.status.success() {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
                bail!(
                    "PostgreSQL started but does not accept connections on 127.0.0.1:{} after {:?}.\nServer log:\n{}",
                    self.port,
                    START_TIMEOUT,
                    tail(&log, 30)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn server_cmd(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        let mut cmd = if self.as_postgres {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(program);
            cmd
        } else {
            Command::new(program)
        };
        // The caller's working directory may not be readable by the postgres user.
        cmd.current_dir(&self.dir).kill_on_drop(true);
        cmd
    }

    /// psql connected to the cluster; without -q, which would also hide COPY's row count.
    fn psql(&self) -> Command {
        let mut cmd = Command::new(self.bin.join("psql"));
        cmd.args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1"])
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-U", "postgres", "-d", "postgres"])
            .env("PGCONNECT_TIMEOUT", "10")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    /// Runs one statement; returns its unaligned, tuples-only output.
    async fn sql(&self, sql: &str) -> anyhow::Result<String> {
        let out = self
            .psql()
            .args(["-q", "-c", sql])
            .output()
            .await
            .context("cannot run psql")?;
        check(&out, &format!("psql -c {sql:?}"))?;
        String::from_utf8(out.stdout)
            .with_context(|| format!("psql's answer to {sql:?} is not UTF-8"))
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        // A pid file without `running`: pg_ctl gave up waiting but the server may still be up.
        if self.running || self.dir.join("data/postmaster.pid").exists() {
            // Immediate: the cluster is thrown away, no need for a shutdown checkpoint.
            let data = self.dir.join("data");
            let pg_ctl = self.bin.join("pg_ctl");
            let mut cmd = if self.as_postgres {
                let mut cmd = std::process::Command::new("runuser");
                cmd.args(["-u", "postgres", "--"]).arg(pg_ctl);
                cmd
            } else {
                std::process::Command::new(pg_ctl)
            };
            let _ = cmd
                .arg("stop")
                .arg("-D")
                .arg(&data)
                .args(["-m", "immediate", "-w"])
                .current_dir(&self.dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One `COPY samples FROM STDIN` in progress; see [`Pg::copy_writer`].
///
/// Dropped without [`CopyWriter::finish`], psql is killed and the server rolls the COPY back.
pub struct CopyWriter {
    // Declared before `stdin`, so it is dropped (psql killed) before stdin closes: closing stdin
    // first would end the COPY normally and commit a partial load.
    child: Child,
    stdin: Option<ChildStdin>,
    buf: Vec<u8>,
    encoder: RowEncoder,
    rows: u64,
}

impl CopyWriter {
    /// Encodes `(tag, timestamp in µs since the Unix epoch, value)` rows and sends them to psql.
    pub async fn write_batch(&mut self, rows: &[(u32, i64, f64)]) -> anyhow::Result<()> {
        self.buf.clear();
        for &(tag, ts_us, value) in rows {
            self.encoder.row(&mut self.buf, tag, ts_us, value)?;
        }
        let Some(stdin) = self.stdin.as_mut() else {
            bail!("write_batch after a failed write");
        };
        if let Err(e) = stdin.write_all(&self.buf).await {
            self.stdin = None;
            let (status, stdout, stderr) = collect(&mut self.child).await;
            bail!(
                "psql stopped reading the COPY stream ({e}; psql {status:?}): {}{}",
                stderr.trim(),
                stdout.trim()
            );
        }
        self.rows += rows.len() as u64;
        Ok(())
    }

    /// Rows sent so far.
    #[cfg(test)]
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Ends the COPY and waits until it has committed; returns the rows PostgreSQL reports.
    pub async fn finish(mut self) -> anyhow::Result<u64> {
        // Closing stdin is psql's end of data.
        if let Some(mut stdin) = self.stdin.take() {
            stdin.flush().await.context("cannot flush psql's stdin")?;
        }
        let (status, stdout, stderr) = collect(&mut self.child).await;
        if !matches!(status, Ok(s) if s.success()) {
            bail!(
                "COPY into PostgreSQL failed (psql {status:?}): {}",
                stderr.trim()
            );
        }
        let copied: u64 = stdout
            .lines()
            .find_map(|l| l.strip_prefix("COPY "))
            .and_then(|n| n.trim().parse().ok())
            .with_context(|| {
                format!("psql did not report the COPY count: {stdout:?} {stderr:?}")
            })?;
        if copied != self.rows {
            bail!(
                "PostgreSQL copied {copied} rows but {} were sent",
                self.rows
            );
        }
        Ok(copied)
    }
}

/// Reads a finished (or failing) child's output, then waits for it.
async fn collect(child: &mut Child) -> (Result<ExitStatus, String>, String, String) {
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let (out_pipe, err_pipe) = (child.stdout.take(), child.stderr.take());
    // Both pipes at once: a child blocked on a full stderr pipe would never close stdout.
    let read_out = async {
        if let Some(mut pipe) = out_pipe {
            let _ = pipe.read_to_end(&mut stdout).await;
        }
    };
    let read_err = async {
        if let Some(mut pipe) = err_pipe {
            let _ = pipe.read_to_end(&mut stderr).await;
        }
    };
    tokio::join!(read_out, read_err);
    let status = child.wait().await.map_err(|e| e.to_string());
    (
        status,
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

/// Encodes rows in COPY text format, caching the date part of the timestamp (it changes once a day).
#[derive(Default)]
struct RowEncoder {
    day: Option<i64>,
    date: [u8; 10],
}

const MICROS_PER_DAY: i64 = 86_400_000_000;

impl RowEncoder {
    /// Appends `tag \t timestamp \t value \n`, e.g. `7\t2026-01-01 00:00:01.5+00\t21.3\n`.
    fn row(&mut self, buf: &mut Vec<u8>, tag: u32, ts_us: i64, value: f64) -> anyhow::Result<()> {
        write_u64(buf, u64::from(tag));
        buf.push(b'\t');
        self.timestamp(buf, ts_us)?;
        buf.push(b'\t');
        write_f64(buf, value);
        buf.push(b'\n');
        Ok(())
    }

    /// `YYYY-MM-DD HH:MM:SS[.ffffff]+00`, which PostgreSQL reads as a timestamptz in UTC.
    fn timestamp(&mut self, buf: &mut Vec<u8>, ts_us: i64) -> anyhow::Result<()> {
        let day = ts_us.div_euclid(MICROS_PER_DAY);
        if self.day != Some(day) {
            let (y, m, d) = civil_from_days(day);
            if !(1..=9999).contains(&y) {
                bail!("timestamp {ts_us} µs since 1970 is outside the years 1-9999 this encoder writes");
            }
            let mut date = [0u8; 10];
            put_digits(&mut date[0..4], y as u64);
            date[4] = b'-';
            put_digits(&mut date[5..7], u64::from(m));
            date[7] = b'-';
            put_digits(&mut date[8..10], u64::from(d));
            self.date = date;
            self.day = Some(day);
        }
        let micros = ts_us.rem_euclid(MICROS_PER_DAY) as u64;
        let secs = micros / 1_000_000;
        let frac = micros % 1_000_000;
        let mut time = [b' ', 0, 0, b':', 0, 0, b':', 0, 0];
        put_digits(&mut time[1..3], secs / 3600);
        put_digits(&mut time[4..6], secs / 60 % 60);
        put_digits(&mut time[7..9], secs % 60);
        buf.extend_from_slice(&self.date);
        buf.extend_from_slice(&time);
        if frac != 0 {
            let mut f = [b'.', 0, 0, 0, 0, 0, 0];
            put_digits(&mut f[1..], frac);
            // Trailing zeros are noise: ".500000" -> ".5".
            let len = f.iter().rposition(|&c| c != b'0').map_or(1, |i| i + 1);
            buf.extend_from_slice(&f[..len]);
        }
        buf.extend_from_slice(b"+00");
        Ok(())
    }
}

/// Writes `n` as exactly `out.len()` zero-padded decimal digits.
fn put_digits(out: &mut [u8], mut n: u64) {
    for c in out.iter_mut().rev() {
        *c = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

fn write_u64(buf: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.extend_from_slice(&digits[i..]);
}

/// The shortest text that PostgreSQL's float8 input reads back as the same f64.
fn write_f64(buf: &mut Vec<u8>, v: f64) {
    // Integral values (counters, booleans, round setpoints) are the common case: no float formatting.
    if v.fract() == 0.0 && v.abs() < 1e15 && !(v == 0.0 && v.is_sign_negative()) {
        if v < 0.0 {
            buf.push(b'-');
        }
        write_u64(buf, v.abs() as u64);
    } else if v.is_nan() {
        buf.extend_from_slice(b"NaN");
    } else if v.is_infinite() {
        buf.extend_from_slice(if v > 0.0 { b"Infinity" } else { b"-Infinity" });
    } else {
        // Debug is Rust's shortest round-trip form, with an exponent for very small or large
        // values ("1e-300"), which PostgreSQL accepts; Display would print 300 zeros.
        let _ = write!(buf, "{v:?}");
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Splits psql's `\timing` output into the elapsed time and the first row.
fn parse_timed(stdout: &str) -> Option<(Duration, String)> {
    let mut first_row = None;
    let mut elapsed = None;
    for line in stdout.lines() {
        if let Some(rest) = line.strip_prefix("Time: ") {
            // "Time: 12.345 ms" or "Time: 61234.567 ms (01:01.235)"
            let ms: f64 = rest.split(' ').next()?.parse().ok()?;
            elapsed = Some(Duration::from_secs_f64(ms / 1_000.0));
        } else if first_row.is_none() {
            first_row = Some(line.to_owned());
        }
    }
    Some((elapsed?, first_row.unwrap_or_default()))
}

/// The highest `/usr/lib/postgresql/<major>/bin` that has initdb.
fn find_bin_dir() -> Option<PathBuf> {
    let version = |name: &str| -> Option<(u32, u32)> {
        let mut parts = name.split('.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next().map_or(Some(0), |m| m.parse().ok())?;
        Some((major, minor))
    };
    std::fs::read_dir(DEBIAN_PG_ROOT)
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = version(entry.file_name().to_str()?)?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .max_by_key(|(version, _)| *version)
        .map(|(_, bin)| bin)
}

async fn install_from_debian() -> anyhow::Result<()> {
    if !is_root()? {
        bail!(
            "PostgreSQL is not installed (no {DEBIAN_PG_ROOT}/<version>/bin/initdb) and only root can \
             install it; run `apt-get install postgresql` as root"
        );
    }
    for args in [
        &["update"][..],
        &["install", "-y", "--no-install-recommends", "postgresql"][..],
    ] {
        let out = Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .output()
            .await
            .context("PostgreSQL is not installed and apt-get cannot be run to install it")?;
        check(&out, &format!("apt-get {}", args.join(" "))).context(
            "PostgreSQL is not installed and installing Debian's `postgresql` failed; \
             check the network to the Debian mirror, or install PostgreSQL 15 by hand",
        )?;
    }
    Ok(())
}

fn is_root() -> anyhow::Result<bool> {
    // /proc/self belongs to the process's effective user.
    let meta =
        std::fs::metadata("/proc/self").context("cannot read /proc/self to find our user id")?;
    Ok(meta.uid() == 0)
}

fn make_temp_dir() -> anyhow::Result<PathBuf> {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir = std::env::temp_dir().join(format!("ironplant-pg-{}-{nanos}", std::process::id()));
    // The Unix socket lives here too: its path must fit in sun_path (107 bytes).
    if dir.as_os_str().len() > 80 {
        bail!(
            "the temp dir path {} is too long for PostgreSQL's Unix socket; set TMPDIR to a short path",
            dir.display()
        );
    }
    std::fs::create_dir(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot set permissions on {}", dir.display()))?;
    Ok(dir)
}

fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("cannot bind 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

fn check(out: &Output, what: &str) -> anyhow::Result<()> {
    if out.status.success() {
        Ok(())
    } else {
        bail!("{what} failed ({}):\n{}", out.status, output_text(out))
    }
}

fn output_text(out: &Output) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    tail(&text, 30)
}

/// The last `lines` lines of `text`.
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.trim_end().lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench_mix::{Mix, START_2026_US};
    use std::time::Instant;

    fn encode(rows: &[(u32, i64, f64)]) -> String {
        let mut encoder = RowEncoder::default();
        let mut buf = Vec::new();
        for &(tag, ts, v) in rows {
            encoder.row(&mut buf, tag, ts, v).expect("in range");
        }
        String::from_utf8(buf).expect("ASCII")
    }

    #[test]
    fn copy_text_rows() {
        const S: i64 = 1_000_000;
        let rows = [
            (7, START_2026_US + S, 21.3),
            (0, START_2026_US, 0.0),
            (u32::MAX, START_2026_US + 500_000, -0.5),
            (1, START_2026_US + 1, 1e-300),
            (2, 0, 1.797_693_134_862_315_7e308),
            (3, -S / 2, -2.5e-7),
            (4, 1_709_251_199_999_999, 5e-324),
            (5, START_2026_US + 86_399 * S, 42.0),
            (6, START_2026_US, -7.0),
            (8, START_2026_US, f64::NAN),
            (9, START_2026_US, f64::INFINITY),
            (10, START_2026_US, f64::NEG_INFINITY),
            (11, START_2026_US, -0.0),
            (12, START_2026_US, 123_456_789_012.345),
            (13, START_2026_US, 1e15),
            (14, START_2026_US, 519_027_359.0),
            (15, -62_135_596_800 * S, 0.1),
            (16, 253_402_300_799 * S, 0.1),
        ];
        let expected = "\
7\t2026-01-01 00:00:01+00\t21.3
0\t2026-01-01 00:00:00+00\t0
4294967295\t2026-01-01 00:00:00.5+00\t-0.5
1\t2026-01-01 00:00:00.000001+00\t1e-300
2\t1970-01-01 00:00:00+00\t1.7976931348623157e308
3\t1969-12-31 23:59:59.5+00\t-2.5e-7
4\t2024-02-29 23:59:59.999999+00\t5e-324
5\t2026-01-01 23:59:59+00\t42
6\t2026-01-01 00:00:00+00\t-7
8\t2026-01-01 00:00:00+00\tNaN
9\t2026-01-01 00:00:00+00\tInfinity
10\t2026-01-01 00:00:00+00\t-Infinity
11\t2026-01-01 00:00:00+00\t-0.0
12\t2026-01-01 00:00:00+00\t123456789012.345
13\t2026-01-01 00:00:00+00\t1000000000000000.0
14\t2026-01-01 00:00:00+00\t519027359
15\t0001-01-01 00:00:00+00\t0.1
16\t9999-12-31 23:59:59+00\t0.1
";
        assert_eq!(encode(&rows), expected);
        // Every value reads back as the same f64 (PostgreSQL's strtod does what Rust's parse does).
        for (line, &(_, _, v)) in expected.lines().zip(&rows) {
            let text = line.rsplit('\t').next().expect("three fields");
            let back: f64 = match text {
                "Infinity" => f64::INFINITY,
                "-Infinity" => f64::NEG_INFINITY,
                t => t.parse().expect("a float"),
            };
            assert!(
                back.to_bits() == v.to_bits() || (v.is_nan() && back.is_nan()),
                "{line}"
            );
        }
    }

    #[test]
    fn timestamps_outside_years_1_to_9999_are_refused() {
        let mut encoder = RowEncoder::default();
        let mut buf = Vec::new();
        for ts in [
            -62_135_596_800_000_001,
            253_402_300_800_000_000,
            i64::MIN,
            i64::MAX,
        ] {
            let err = encoder.row(&mut buf, 1, ts, 1.0).expect_err("out of range");
            assert!(err.to_string().contains("years 1-9999"), "{err}");
        }
    }

    #[test]
    fn dates_match_a_day_by_day_calendar() {
        let (mut y, mut m, mut d) = (1970, 1, 1);
        for days in 0..=(200 * 366) {
            assert_eq!(civil_from_days(days), (y, m, d), "day {days}");
            let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
            let month_len = match m {
                2 if leap => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            d += 1;
            if d > month_len {
                (d, m) = (1, m + 1);
                if m > 12 {
                    (m, y) = (1, y + 1);
                }
            }
        }
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(-719_162), (1, 1, 1));
    }

    #[test]
    fn psql_timing_output_parses() {
        let (t, row) =
            parse_timed("3|2026-01-01 00:00:00+00|1.5\n4|x|y\nTime: 12.500 ms\n").expect("timed");
        assert_eq!(
            (t, row.as_str()),
            (
                Duration::from_micros(12_500),
                "3|2026-01-01 00:00:00+00|1.5"
            )
        );
        let (t, row) = parse_timed("Time: 61234.567 ms (01:01.235)\n").expect("timed");
        assert_eq!((t.as_millis(), row.as_str()), (61_234, ""));
        assert!(parse_timed("1\n").is_none());
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
    }

    fn env_usize(name: &str, default: usize) -> usize {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    }

    /// Starts a real PostgreSQL (Debian's `postgresql`, which `.ci/test` installs) in a temp dir.
    /// Without it the test is skipped locally with a message, and fails under CI=true: it must
    /// never pass without running. IRONPLANT_TEST_POSTGRES=1 lets the test install it itself (as
    /// root). IRONPLANT_TEST_POSTGRES_TAGS / _SECONDS size the load (default 200 tags × 600 s).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_start_copy_size_query() -> anyhow::Result<()> {
        let may_install = std::env::var("IRONPLANT_TEST_POSTGRES").as_deref() == Ok("1");
        if !may_install
            && !ironplant_testkit::peer_available(
                "PostgreSQL (Debian's postgresql package)",
                find_bin_dir().is_some(),
            )
        {
            return Ok(());
        }
        let tags = env_usize("IRONPLANT_TEST_POSTGRES_TAGS", 200);
        let seconds = env_usize("IRONPLANT_TEST_POSTGRES_SECONDS", 600) as u64;

        let started = Instant::now();
        let pg = Pg::start().await?;
        eprintln!(
            "PostgreSQL {} on port {} started in {:?}",
            pg.server_version(),
            pg.port(),
            started.elapsed()
        );
        assert!(pg.server_version().starts_with(char::is_numeric));
        pg.create_schema().await?;

        let mut mix = Mix::new(tags, START_2026_US, 1_000_000, 42);
        let mut samples = Vec::new();
        let mut rows = Vec::with_capacity(tags * 10);
        let mut writer = pg.copy_writer().await?;
        let started = Instant::now();
        for step in 0..seconds {
            mix.step(step, &mut samples);
            rows.extend(samples.iter().map(|&(tag, ts, v)| (tag, ts, v.as_f64())));
            if rows.len() >= tags * 10 || step + 1 == seconds {
                writer.write_batch(&rows).await?;
                rows.clear();
            }
        }
        assert_eq!(writer.rows(), tags as u64 * seconds);
        let copied = writer.finish().await?;
        let copy_time = started.elapsed();
        assert_eq!(copied, tags as u64 * seconds);
        let size = pg.size().await?;
        eprintln!(
            "COPY {copied} rows in {copy_time:?}: {:.0} rows/s; {size:?}: {:.1} bytes/row on disk \
             ({:.1} table + {:.1} index), {:.1} WAL bytes/row",
            copied as f64 / copy_time.as_secs_f64(),
            size.total_bytes as f64 / copied as f64,
            size.table_bytes as f64 / copied as f64,
            size.index_bytes as f64 / copied as f64,
            size.wal_bytes as f64 / copied as f64,
        );
        assert_eq!(size.total_bytes, size.table_bytes + size.index_bytes);
        assert!(
            size.index_bytes > 0 && size.wal_bytes > size.table_bytes / 2,
            "{size:?}"
        );

        let (took, row) = pg.timed_query("SELECT count(*) FROM samples").await?;
        eprintln!("count(*) in {took:?}");
        assert_eq!(row, copied.to_string());

        // 1-minute averages of one tag over a day (the load is shorter: all of it).
        let tag = 3; // an analog
        let (took, row) = pg
            .timed_query(&format!(
                "SELECT date_bin('1 minute', ts, TIMESTAMPTZ '2026-01-01'), avg(value), count(*) \
                 FROM samples WHERE tag = {tag} \
                 AND ts >= TIMESTAMPTZ '2026-01-01' AND ts < TIMESTAMPTZ '2026-01-02' \
                 GROUP BY 1 ORDER BY 1"
            ))
            .await?;
        eprintln!("1-minute averages of one tag over a day in {took:?}: first {row}");
        let mut check_mix = Mix::new(tags, START_2026_US, 1_000_000, 42);
        let mut first_minute = 0.0;
        for step in 0..60.min(seconds) {
            check_mix.step(step, &mut samples);
            first_minute += samples[tag].2.as_f64();
        }
        let fields: Vec<&str> = row.split('|').collect();
        assert_eq!(fields[0], "2026-01-01 00:00:00+00");
        assert_eq!(fields[2], 60.min(seconds).to_string());
        let avg: f64 = fields[1].parse()?;
        assert!(
            (avg - first_minute / 60.min(seconds) as f64).abs() < 1e-9,
            "{row}"
        );

        // Last value of every tag.
        let (took, row) = pg
            .timed_query(
                "SELECT DISTINCT ON (tag) tag, ts, value FROM samples ORDER BY tag, ts DESC",
            )
            .await?;
        eprintln!("last value of every tag in {took:?}: first {row}");
        check_mix.step(seconds - 1, &mut samples);
        let fields: Vec<&str> = row.split('|').collect();
        assert_eq!(fields[0], "0");
        assert_eq!(fields[2].parse::<f64>()?, samples[0].2.as_f64(), "{row}");

        // Extreme floats and timestamps survive the round trip (tags beyond the mix).
        let extremes = [
            (1_000_000, START_2026_US + 1, 1e-300),
            (1_000_001, -500_000, -1.797_693_134_862_315_7e308),
            (1_000_002, START_2026_US, 5e-324),
            (1_000_003, START_2026_US, -2.5e-7),
            (1_000_004, START_2026_US, f64::NEG_INFINITY),
        ];
        let mut writer = pg.copy_writer().await?;
        writer.write_batch(&extremes).await?;
        assert_eq!(writer.finish().await?, extremes.len() as u64);
        for (tag, ts, v) in extremes {
            let (_, row) = pg
                .timed_query(&format!(
                    "SELECT value, (extract(epoch FROM ts) * 1000000)::bigint FROM samples WHERE tag = {tag}"
                ))
                .await?;
            let (value, micros) = row.split_once('|').expect("two columns");
            let value = if value == "-Infinity" {
                f64::NEG_INFINITY
            } else {
                value.parse()?
            };
            assert_eq!((value, micros.parse::<i64>()?), (v, ts), "tag {tag}");
        }

        // A failing COPY reports PostgreSQL's error and commits nothing.
        let mut writer = pg.copy_writer().await?;
        writer
            .write_batch(&[(2_000_000, START_2026_US, 1.0)])
            .await?;
        writer
            .write_batch(&[(2_000_000, START_2026_US, 2.0)])
            .await?;
        let err = writer.finish().await.expect_err("duplicate key");
        assert!(format!("{err:#}").contains("duplicate key"), "{err:#}");
        let (_, row) = pg
            .timed_query("SELECT count(*) FROM samples WHERE tag = 2000000")
            .await?;
        assert_eq!(row, "0");

        let dir = pg.dir().to_owned();
        assert!(dir.join("data").is_dir());
        pg.stop().await?;
        assert!(!dir.exists());

        // Drop stops the server and deletes the directory too.
        let pg = Pg::start().await?;
        let (dir, port) = (pg.dir().to_owned(), pg.port());
        drop(pg);
        assert!(!dir.exists());
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
        Ok(())
    }
}
