//! `ironplant query`: history of tags from a running platform's API, or, when nothing answers
//! on `--http`, straight from `<data-dir>/historian` with the API's own query code.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::{Args, ValueEnum};
use ironplant_api::history::{self, HistoryQuery, HistoryResult, QueryKind, TagData};
use ironplant_core::{Timestamp, Value};
use ironplant_historian::{Aggregate, Historian};

pub const AFTER_HELP: &str = "\
Examples:
  ironplant query --tag acme/lyon/bottling/line1/filler/plc/speed_actual
  ironplant query --from now-2h --interval 1m --agg avg,max \\
      --tag acme/lyon/bottling/line1/filler/plc/speed_actual \\
      --tag acme/lyon/bottling/line1/filler/plc/motor_current
  ironplant query --at 2026-11-25T10:00:00Z --interp linear \\
      --tag acme/lyon/bottling/line1/tank/plc/tank_level
  ironplant query --from -1d --format parquet --output speed.parquet \\
      --tag acme/lyon/bottling/line1/filler/plc/speed_actual

Times are RFC 3339 (2026-11-25T10:00:00Z, or with an offset like +01:00) or relative to now
(now, now-1h, -15m, now-2d). Raw queries return every point in the range (fetched in pages,
with a progress bar) unless --limit is given. A platform running on --http is asked through
its API (GET /api/v1/history); if nothing listens there, <data-dir>/historian is read directly.
Parquet columns: tag, ts (TIMESTAMP micros UTC), value (DOUBLE; booleans as 0/1), value_text
(strings and booleans as text), quality; for aggregates: tag, start, one column per aggregate,
good, bad.";

/// Points asked for per request when paging through a raw range.
const PAGE: usize = 10_000;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const READ_TIMEOUT: Duration = Duration::from_secs(120);
/// Rows per Parquet row group.
const ROW_GROUP: usize = 1 << 20;

#[derive(Args)]
pub struct QueryArgs {
    /// Tag path to query; repeat for several tags.
    #[arg(long = "tag", value_name = "PATH", required = true)]
    tags: Vec<String>,
    /// Start of the range (default: one hour before --to).
    #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
    from: Option<String>,
    /// End of the range, exclusive (default: now).
    #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
    to: Option<String>,
    /// At most N raw points per tag (default: every point in the range).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    limit: Option<u64>,
    /// Aggregate over fixed intervals of this length (e.g. 15s, 1m, 1h) instead of raw points.
    #[arg(long, value_name = "DURATION", conflicts_with = "limit")]
    interval: Option<String>,
    /// Aggregates, comma-separated: min,max,avg,twa,first,last,count,stddev,delta (default avg).
    #[arg(long, value_name = "LIST", requires = "interval")]
    agg: Option<String>,
    /// The value of each tag at this instant instead of a range.
    #[arg(long, value_name = "TIME", allow_hyphen_values = true,
          conflicts_with_all = ["from", "to", "limit", "interval"])]
    at: Option<String>,
    /// How --at finds a value between samples.
    #[arg(long, value_enum, requires = "at")]
    interp: Option<Interp>,
    /// Output format; parquet needs --output.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    format: OutputFormat,
    /// Write the output to FILE instead of stdout.
    #[arg(long, short, value_name = "FILE")]
    output: Option<PathBuf>,
    /// API token for the platform (`ironplant token create --user NAME --role viewer`), sent
    /// as `Authorization: Bearer`. Prefer the environment variable or --token-file: a token on
    /// the command line shows in `ps` and in `cargo run`'s "Running" line.
    #[arg(
        long,
        env = "IRONPLANT_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,
    /// Read the API token from FILE (its first line), e.g. one written by
    /// `ironplant token create ... > token && chmod 600 token`.
    #[arg(long, value_name = "FILE", conflicts_with = "token")]
    token_file: Option<PathBuf>,
    /// The platform's API address (HOST:PORT, or an http:// / https:// URL); when nothing
    /// answers there, <data-dir>/historian is read directly.
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    http: String,
    /// The platform serves plain HTTP (started with --insecure-http).
    #[arg(long)]
    insecure_http: bool,
    /// The platform's data directory (its CA, or its historian when no platform runs).
    #[arg(long, default_value = "ironplant-data", value_name = "DIR")]
    data_dir: PathBuf,
    /// CA certificate to verify the platform's HTTPS certificate with (default: the built-in
    /// CA of --data-dir, <data-dir>/security/ca/ca.crt).
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Points per request when paging (for tests of the paging itself).
    #[arg(long, hide = true, default_value_t = PAGE as u64,
          value_parser = clap::value_parser!(u64).range(1..=ironplant_historian::MAX_POINTS as u64))]
    page_size: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Interp {
    /// The last sample at or before the instant (the default).
    Previous,
    /// Linear between the good samples around the instant.
    Linear,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum OutputFormat {
    /// Aligned columns, for people.
    Table,
    Csv,
    Json,
    /// Apache Parquet (needs --output FILE).
    Parquet,
}

/// Where answers come from.
enum Source {
    Api {
        addr: SocketAddr,
        host: String,
        client: ApiClient,
    },
    /// The historian of the data directory, with its process lock held while it is open.
    Local {
        historian: Historian,
        _lock: ironplant_server::datadir::DirLock,
    },
}

/// How requests reach the API: TLS (unless the platform runs with --insecure-http) and the
/// token, if any.
pub(crate) struct ApiClient {
    tls: Option<Arc<rustls::ClientConfig>>,
    token: Option<String>,
}

impl ApiClient {
    fn new(args: &QueryArgs, plain: bool, data_dir: &Path) -> anyhow::Result<ApiClient> {
        ApiClient::with(args.ca.clone(), token(args)?, plain, data_dir)
    }

    /// TLS trusting `ca` (default: the built-in CA of `data_dir`) unless `plain`, and `token`.
    pub(crate) fn with(
        ca: Option<PathBuf>,
        token: Option<String>,
        plain: bool,
        data_dir: &Path,
    ) -> anyhow::Result<ApiClient> {
        let tls = if plain {
            None
        } else {
            let ca = ca.unwrap_or_else(|| data_dir.join("security").join("ca").join("ca.crt"));
            let pem = std::fs::read_to_string(&ca).with_context(|| {
                format!(
                    "cannot read the CA certificate {} to verify the platform's HTTPS certificate; give it with --ca FILE (or --data-dir of the platform)",
                    ca.display()
                )
            })?;
            let config = ironplant_security::client_config(&pem, None)
                .with_context(|| format!("{} is not a usable CA certificate", ca.display()))?;
            Some(Arc::new(config))
        };
        Ok(ApiClient { tls, token })
    }
}

/// The API's address from `--http` (HOST:PORT or an http:// / https:// URL): (address, host,
/// plain text).
pub(crate) fn api_address(
    http: &str,
    insecure_http: bool,
) -> anyhow::Result<(SocketAddr, String, bool)> {
    let plain = insecure_http || http.starts_with("http://");
    let host = http
        .trim_start_matches("http://")
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .to_owned();
    let addr = host
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve --http {http}; give HOST:PORT"))?
        .next()
        .with_context(|| format!("--http {http} resolves to no address; give HOST:PORT"))?;
    // A listen address such as 0.0.0.0:8080 is reached on loopback.
    let addr = if addr.ip().is_unspecified() {
        SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), addr.port())
    } else {
        addr
    };
    Ok((addr, host, plain))
}

/// The token from --token, IRONPLANT_TOKEN or --token-file.
fn token(args: &QueryArgs) -> anyhow::Result<Option<String>> {
    let Some(path) = &args.token_file else {
        return Ok(args.token.clone());
    };
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "cannot read the token file {}; write one with `ironplant token create --user NAME --role viewer > {}`",
            path.display(),
            path.display()
        )
    })?;
    match text.lines().map(str::trim).find(|l| !l.is_empty()) {
        Some(t) => Ok(Some(t.to_owned())),
        None => bail!(
            "the token file {} is empty; write one with `ironplant token create --user NAME --role viewer > {}`",
            path.display(),
            path.display()
        ),
    }
}

fn api_error(e: ironplant_api::ApiError) -> anyhow::Error {
    anyhow::anyhow!("{} [{}]", e.message(), e.code())
}

impl Source {
    /// Answers one resolved query (absolute times), from the API or the local historian.
    fn fetch(&self, q: &HistoryQuery) -> anyhow::Result<HistoryResult> {
        match self {
            Source::Api { addr, host, client } => {
                let target = format!("/api/v1/history?{}", encode_query(&q.to_params()));
                let (status, body) = http_get(*addr, host, client, &target)?;
                if status == 200 {
                    return history::parse_json(&body).map_err(|e| {
                        anyhow::anyhow!("the platform at {host} answered oddly: {e}")
                    });
                }
                let err: Option<(String, String)> =
                    serde_json::from_str::<serde_json::Value>(&body)
                        .ok()
                        .and_then(|j| {
                            let e = j.get("error")?;
                            Some((
                                e.get("code")?.as_str()?.to_owned(),
                                e.get("message")?.as_str()?.to_owned(),
                            ))
                        });
                match err {
                    Some((code, message)) => bail!("{message} [{code}]"),
                    None => bail!(
                        "the server at {host} is not an Ironplant platform (HTTP {status}: {}); point --http at the platform's API",
                        body.chars().take(120).collect::<String>()
                    ),
                }
            }
            Source::Local { historian, .. } => history::run_query(historian, q).map_err(api_error),
        }
    }
}

pub fn run(args: QueryArgs) -> anyhow::Result<ExitCode> {
    if args.format == OutputFormat::Parquet && args.output.is_none() {
        bail!("parquet output is binary: give the file to write with --output FILE");
    }
    // Validated and resolved here (relative times against this machine's clock, once for all
    // tags), with the API's own rules and messages, before anything is asked.
    let (mut q, _) = HistoryQuery::parse(&request(&args), Timestamp::now()).map_err(api_error)?;
    if let QueryKind::Raw { limit, .. } = &mut q.kind {
        // Tags are asked one at a time, so each may have a whole page.
        *limit = page_limit(&args, 0);
    }
    let source = pick_source(&args, &args.http, args.insecure_http, &args.data_dir)?;
    let result = collect(&source, &args, q);
    if let Source::Local { historian, .. } = &source {
        historian.close();
    }
    let result = result?;
    for w in &result.warnings {
        eprintln!("warning: {w}");
    }
    let rows = write_output(&result, args.format, args.output.as_deref())?;
    for t in &result.tags {
        if let TagData::Raw {
            next: Some(next), ..
        } = &t.data
        {
            eprintln!(
                "{}: stopped at --limit; continue with --from {}",
                t.tag,
                next.to_rfc3339()
            );
        }
    }
    if let Some(path) = &args.output {
        eprintln!("Wrote {rows} row(s) to {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// The platform's API if something listens on `http`, else the historian in `data_dir`.
fn pick_source(
    args: &QueryArgs,
    http: &str,
    insecure_http: bool,
    data_dir: &Path,
) -> anyhow::Result<Source> {
    // HTTPS unless the address says http:// or the platform was started with --insecure-http.
    let (addr, host, plain) = api_address(http, insecure_http)?;
    let why = if addr.port() == 0 {
        "port 0".to_owned()
    } else {
        match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(_) => {
                let client = ApiClient::new(args, plain, data_dir)?;
                let scheme = if plain { "http" } else { "https" };
                eprintln!("Querying the platform at {scheme}://{host}");
                return Ok(Source::Api { addr, host, client });
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                "connection refused".to_owned()
            }
            Err(e) => e.to_string(),
        }
    };
    let dir = data_dir.join("historian");
    if !dir.join("chunks.redb").exists() && !dir.join("wal").exists() {
        bail!(
            "no platform answers on {host} ({why}) and {} holds no historian data; start the platform (ironplant serve or demo), or point --http or --data-dir at it",
            dir.display()
        );
    }
    // A platform on this data directory that does not answer on --http holds it: say so
    // rather than fail on the historian's file lock.
    let lock = ironplant_server::datadir::lock_process(data_dir, "query").with_context(|| {
        format!("no platform answers on {host} ({why}); point --http at the one that uses the data directory")
    })?;
    eprintln!(
        "No platform answers on {host} ({why}); reading {} directly",
        dir.display()
    );
    let cfg = ironplant_runtime::historian_config(data_dir, &Default::default());
    let h = Historian::open(cfg).with_context(|| {
        format!(
            "cannot open the historian in {} (if a platform is using it, reach it with --http ADDR)",
            dir.display()
        )
    })?;
    Ok(Source::Local {
        historian: h,
        _lock: lock,
    })
}

/// The query as the user wrote it, in the API's terms (--limit is the CLI's own: a total per
/// tag, reached page by page).
fn request(args: &QueryArgs) -> Vec<(String, String)> {
    let mut p: Vec<(String, String)> = args
        .tags
        .iter()
        .map(|t| ("tag".to_owned(), t.clone()))
        .collect();
    let mut add = |k: &str, v: &Option<String>| {
        if let Some(v) = v {
            p.push((k.to_owned(), v.clone()));
        }
    };
    add("from", &args.from);
    add("to", &args.to);
    add("at", &args.at);
    add("interval", &args.interval);
    add("agg", &args.agg);
    if let Some(interp) = args.interp {
        let interp = match interp {
            Interp::Previous => "previous",
            Interp::Linear => "linear",
        };
        p.push(("interp".to_owned(), interp.to_owned()));
    }
    p
}

/// Points to ask for next, given `have` points of a tag so far.
fn page_limit(args: &QueryArgs, have: usize) -> usize {
    let page = usize::try_from(args.page_size).unwrap_or(PAGE);
    match args.limit {
        Some(n) => usize::try_from(n)
            .unwrap_or(usize::MAX)
            .saturating_sub(have)
            .min(page),
        None => page,
    }
}

/// Runs `q` one tag at a time (each tag gets a whole call's budget) and, for raw ranges,
/// follows each tag's `next` until the range or --limit is exhausted.
fn collect(source: &Source, args: &QueryArgs, q: HistoryQuery) -> anyhow::Result<HistoryResult> {
    let mut result = HistoryResult {
        query: q.clone(),
        tags: Vec::with_capacity(q.tags.len()),
        warnings: Vec::new(),
    };
    let limit = args.limit.map(|n| usize::try_from(n).unwrap_or(usize::MAX));
    let mut bar: Option<indicatif::ProgressBar> = None;
    for (i, tag) in q.tags.iter().enumerate() {
        let one = HistoryQuery {
            tags: vec![tag.clone()],
            kind: q.kind.clone(),
        };
        let mut r = source.fetch(&one)?;
        result.warnings.append(&mut r.warnings);
        let mut t = r
            .tags
            .pop()
            .with_context(|| format!("the answer has no data for {tag}"))?;
        if let (TagData::Raw { points, next }, QueryKind::Raw { from, to, .. }) =
            (&mut t.data, &q.kind)
        {
            let span = (to.0 - from.0).max(1) as f64;
            while let Some(cursor) = *next {
                let want = page_limit(args, points.len());
                if want == 0 {
                    break;
                }
                // Only exports that take several pages get a progress bar.
                let bar = bar.get_or_insert_with(|| progress_bar(q.tags.len()));
                let done = ((cursor.0 - from.0) as f64 / span).clamp(0.0, 1.0);
                bar.set_position(i as u64 * 1000 + (done * 1000.0) as u64);
                bar.set_message(format!(
                    "tag {}/{}: {} points",
                    i + 1,
                    q.tags.len(),
                    points.len()
                ));
                let page = HistoryQuery {
                    tags: vec![tag.clone()],
                    kind: QueryKind::Raw {
                        from: cursor,
                        to: *to,
                        limit: want,
                    },
                };
                let mut r = source.fetch(&page)?;
                result.warnings.append(&mut r.warnings);
                match r.tags.pop().map(|t| t.data) {
                    Some(TagData::Raw {
                        points: mut got,
                        next: n,
                    }) => {
                        points.append(&mut got);
                        *next = n;
                    }
                    _ => bail!("the answer for {tag} from {cursor} has no raw points"),
                }
            }
            // A page never splits equal timestamps, so the last one may overshoot --limit.
            if let Some(limit) = limit {
                if points.len() > limit {
                    *next = Some(points[limit].ts);
                    points.truncate(limit);
                }
            }
        }
        if let Some(bar) = &bar {
            bar.set_position((i as u64 + 1) * 1000);
        }
        result.tags.push(t);
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    Ok(result)
}

/// A bar on stderr (hidden when stderr is not a terminal), a thousand steps per tag.
fn progress_bar(tags: usize) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(tags as u64 * 1000);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{msg:>24} [{bar:40}] {percent:>3}% {elapsed}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// Writes the result; returns the number of data rows.
fn write_output(
    r: &HistoryResult,
    format: OutputFormat,
    output: Option<&Path>,
) -> anyhow::Result<usize> {
    let rows = row_count(r);
    let text = match format {
        OutputFormat::Parquet => {
            let path = output.context("parquet output needs --output FILE")?;
            write_parquet(r, path)?;
            return Ok(rows);
        }
        OutputFormat::Table => render_table(r),
        OutputFormat::Csv => history::render_csv(r),
        OutputFormat::Json => {
            let mut s = history::render_json(r);
            s.push('\n');
            s
        }
    };
    match output {
        Some(path) => std::fs::write(path, text)
            .with_context(|| format!("cannot write {}", path.display()))?,
        None => {
            let mut out = std::io::stdout().lock();
            match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
                Ok(()) => {}
                // `ironplant query ... | head` is fine.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
                Err(e) => return Err(e).context("cannot write to stdout"),
            }
        }
    }
    Ok(rows)
}

fn row_count(r: &HistoryResult) -> usize {
    r.tags
        .iter()
        .map(|t| match &t.data {
            TagData::Raw { points, .. } => points.len(),
            TagData::Aggregate { rows } => rows.len(),
            TagData::At { point } => usize::from(point.is_some()),
        })
        .sum()
}

// ---- table -------------------------------------------------------------------------------

/// A number for people: at most 6 decimals, without trailing zeros.
fn human(x: f64) -> String {
    if !x.is_finite() {
        return String::new();
    }
    if x != 0.0 && x.abs() < 1e-4 {
        return format!("{x:e}");
    }
    let s = format!("{x:.6}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".to_owned()
    } else {
        s.to_owned()
    }
}

fn value_text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::U64(u) => u.to_string(),
        Value::Float(f) => human(*f),
        Value::String(s) => s.to_string(),
        Value::Array(_) | Value::DataSet(_) => json_text(v),
    }
}

/// An array or DataSet as its JSON text (the API's form).
fn json_text(v: &Value) -> String {
    serde_json::to_string(&ironplant_core::wire::ValueJson(Some(v))).unwrap_or_default()
}

/// Columns aligned to their widest cell; `right[i]` right-aligns column i.
fn table(header: &[&str], rows: &[Vec<String>], right: &[bool], out: &mut String) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut l = String::new();
        for (i, cell) in cells.enumerate() {
            let w = widths.get(i).copied().unwrap_or(0);
            let pad = w.saturating_sub(cell.chars().count());
            if i > 0 {
                l.push_str("  ");
            }
            if right.get(i).copied().unwrap_or(false) {
                l.extend(std::iter::repeat_n(' ', pad));
                l.push_str(cell);
            } else {
                l.push_str(cell);
                l.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
}

fn render_table(r: &HistoryResult) -> String {
    let mut out = String::new();
    match &r.query.kind {
        QueryKind::At { at, .. } => {
            let rows: Vec<Vec<String>> = r
                .tags
                .iter()
                .map(|t| match &t.data {
                    TagData::At { point: Some(p) } => vec![
                        t.tag.to_string(),
                        value_text(&p.value),
                        p.quality.to_string(),
                    ],
                    _ => vec![t.tag.to_string(), String::new(), "no data".to_owned()],
                })
                .collect();
            out.push_str(&format!("At {at}\n"));
            table(
                &["TAG", "VALUE", "QUALITY"],
                &rows,
                &[false, true, false],
                &mut out,
            );
        }
        QueryKind::Raw { .. } => {
            for (i, t) in r.tags.iter().enumerate() {
                let TagData::Raw { points, .. } = &t.data else {
                    continue;
                };
                if i > 0 {
                    out.push('\n');
                }
                out.push_str(&format!("{} ({} points)\n", t.tag, points.len()));
                let rows: Vec<Vec<String>> = points
                    .iter()
                    .map(|p| {
                        vec![
                            p.ts.to_rfc3339(),
                            value_text(&p.value),
                            p.quality.to_string(),
                        ]
                    })
                    .collect();
                table(
                    &["TIME (UTC)", "VALUE", "QUALITY"],
                    &rows,
                    &[false, true, false],
                    &mut out,
                );
            }
        }
        QueryKind::Aggregate { aggs, interval, .. } => {
            let mut header = vec!["START (UTC)"];
            header.extend(aggs.iter().map(|a| a.as_str()));
            header.extend(["GOOD", "BAD"]);
            let mut right = vec![true; header.len()];
            right[0] = false;
            for (i, t) in r.tags.iter().enumerate() {
                let TagData::Aggregate { rows } = &t.data else {
                    continue;
                };
                if i > 0 {
                    out.push('\n');
                }
                out.push_str(&format!(
                    "{} (every {})\n",
                    t.tag,
                    humantime::format_duration(*interval)
                ));
                let cells: Vec<Vec<String>> = rows
                    .iter()
                    .map(|row| {
                        let mut c = vec![row.start.to_rfc3339()];
                        c.extend(row.values.iter().map(|v| v.map(human).unwrap_or_default()));
                        c.push(row.good.to_string());
                        c.push(row.bad.to_string());
                        c
                    })
                    .collect();
                table(&header, &cells, &right, &mut out);
            }
        }
    }
    out
}

// ---- parquet -----------------------------------------------------------------------------

fn write_parquet(r: &HistoryResult, path: &Path) -> anyhow::Result<()> {
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;

    let aggs: &[Aggregate] = match &r.query.kind {
        QueryKind::Aggregate { aggs, .. } => aggs,
        _ => &[],
    };
    let schema = match &r.query.kind {
        QueryKind::Aggregate { .. } => {
            let mut s = String::from(
                "message ironplant_aggregates {\n  REQUIRED BYTE_ARRAY tag (STRING);\n  REQUIRED INT64 start (TIMESTAMP(MICROS,true));\n",
            );
            for a in aggs {
                let ty = if *a == Aggregate::Count {
                    "INT64"
                } else {
                    "DOUBLE"
                };
                s.push_str(&format!("  OPTIONAL {ty} {};\n", a.as_str()));
            }
            s.push_str("  REQUIRED INT64 good;\n  REQUIRED INT64 bad;\n}");
            s
        }
        _ => "message ironplant_history {
  REQUIRED BYTE_ARRAY tag (STRING);
  REQUIRED INT64 ts (TIMESTAMP(MICROS,true));
  OPTIONAL DOUBLE value;
  OPTIONAL BYTE_ARRAY value_text (STRING);
  REQUIRED BYTE_ARRAY quality (STRING);
}"
        .to_owned(),
    };
    let schema = Arc::new(
        parquet::schema::parser::parse_message_type(&schema)
            .context("the Parquet schema is invalid")?,
    );
    let props = Arc::new(
        WriterProperties::builder()
            .set_created_by(format!("ironplant {}", env!("CARGO_PKG_VERSION")))
            .build(),
    );
    let file =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut w = SerializedFileWriter::new(file, schema, props)
        .with_context(|| format!("cannot start the Parquet file {}", path.display()))?;
    let context = || format!("cannot write the Parquet file {}", path.display());
    match &r.query.kind {
        QueryKind::Aggregate { .. } => {
            let rows: Vec<(&str, &ironplant_historian::aggregate::Row)> = r
                .tags
                .iter()
                .flat_map(|t| match &t.data {
                    TagData::Aggregate { rows } => {
                        rows.iter().map(|row| (t.tag.as_str(), row)).collect()
                    }
                    _ => Vec::new(),
                })
                .collect();
            for group in rows.chunks(ROW_GROUP) {
                write_agg_group(&mut w, group, aggs).with_context(context)?;
            }
        }
        _ => {
            let points: Vec<(&str, &ironplant_historian::Point)> = r
                .tags
                .iter()
                .flat_map(|t| match &t.data {
                    TagData::Raw { points, .. } => {
                        points.iter().map(|p| (t.tag.as_str(), p)).collect()
                    }
                    TagData::At { point } => point.iter().map(|p| (t.tag.as_str(), p)).collect(),
                    TagData::Aggregate { .. } => Vec::new(),
                })
                .collect();
            for group in points.chunks(ROW_GROUP) {
                write_point_group(&mut w, group).with_context(context)?;
            }
        }
    }
    w.close().with_context(context)?;
    Ok(())
}

type Writer = parquet::file::writer::SerializedFileWriter<std::fs::File>;

/// Values and definition levels (1 = present, 0 = null) of an OPTIONAL column.
fn optional<T, U: Clone>(items: &[T], f: impl Fn(&T) -> Option<U>) -> (Vec<U>, Vec<i16>) {
    let mut values = Vec::with_capacity(items.len());
    let mut defs = Vec::with_capacity(items.len());
    for it in items {
        match f(it) {
            Some(v) => {
                values.push(v);
                defs.push(1);
            }
            None => defs.push(0),
        }
    }
    (values, defs)
}

fn text(s: &str) -> parquet::data_type::ByteArray {
    parquet::data_type::ByteArray::from(s)
}

fn write_point_group(
    w: &mut Writer,
    group: &[(&str, &ironplant_historian::Point)],
) -> parquet::errors::Result<()> {
    use parquet::data_type::{ByteArrayType, DoubleType, Int64Type};
    let tags: Vec<_> = group.iter().map(|(t, _)| text(t)).collect();
    let ts: Vec<i64> = group.iter().map(|(_, p)| p.ts.0).collect();
    let (values, value_defs) = optional(group, |(_, p)| p.value.as_f64().filter(|x| x.is_finite()));
    let (texts, text_defs) = optional(group, |(_, p)| match &p.value {
        Value::String(s) => Some(text(s)),
        Value::Bool(b) => Some(text(if *b { "true" } else { "false" })),
        Value::Array(_) | Value::DataSet(_) => Some(text(&json_text(&p.value))),
        _ => None,
    });
    let quality: Vec<_> = group
        .iter()
        .map(|(_, p)| text(&p.quality.to_string()))
        .collect();
    let mut rg = w.next_row_group()?;
    let mut i = 0;
    while let Some(mut col) = rg.next_column()? {
        match i {
            0 => col
                .typed::<ByteArrayType>()
                .write_batch(&tags, None, None)?,
            1 => col.typed::<Int64Type>().write_batch(&ts, None, None)?,
            2 => col
                .typed::<DoubleType>()
                .write_batch(&values, Some(&value_defs), None)?,
            3 => col
                .typed::<ByteArrayType>()
                .write_batch(&texts, Some(&text_defs), None)?,
            _ => col
                .typed::<ByteArrayType>()
                .write_batch(&quality, None, None)?,
        };
        col.close()?;
        i += 1;
    }
    rg.close()?;
    Ok(())
}

fn write_agg_group(
    w: &mut Writer,
    group: &[(&str, &ironplant_historian::aggregate::Row)],
    aggs: &[Aggregate],
) -> parquet::errors::Result<()> {
    use parquet::data_type::{ByteArrayType, DoubleType, Int64Type};
    let mut rg = w.next_row_group()?;
    let mut i = 0;
    while let Some(mut col) = rg.next_column()? {
        if i == 0 {
            let tags: Vec<_> = group.iter().map(|(t, _)| text(t)).collect();
            col.typed::<ByteArrayType>()
                .write_batch(&tags, None, None)?;
        } else if i == 1 {
            let starts: Vec<i64> = group.iter().map(|(_, r)| r.start.0).collect();
            col.typed::<Int64Type>().write_batch(&starts, None, None)?;
        } else if let Some(agg) = aggs.get(i - 2) {
            let k = i - 2;
            let value = |(_, r): &(&str, &ironplant_historian::aggregate::Row)| {
                r.values.get(k).copied().flatten().filter(|x| x.is_finite())
            };
            if *agg == Aggregate::Count {
                let (v, d) = optional(group, |r| value(r).map(|x| x as i64));
                col.typed::<Int64Type>().write_batch(&v, Some(&d), None)?;
            } else {
                let (v, d) = optional(group, value);
                col.typed::<DoubleType>().write_batch(&v, Some(&d), None)?;
            }
        } else {
            let good = i == aggs.len() + 2;
            let counts: Vec<i64> = group
                .iter()
                .map(|(_, r)| i64::try_from(if good { r.good } else { r.bad }).unwrap_or(i64::MAX))
                .collect();
            col.typed::<Int64Type>().write_batch(&counts, None, None)?;
        }
        col.close()?;
        i += 1;
    }
    rg.close()?;
    Ok(())
}

// ---- a minimal HTTP/1.1 client -------------------------------------------------------------

/// Percent-encodes query pairs (unreserved characters, `/` and `:` stay as they are).
fn encode_query(pairs: &[(String, String)]) -> String {
    fn enc(s: &str, out: &mut String) {
        for b in s.bytes() {
            if b.is_ascii_alphanumeric() || b"-._~/:".contains(&b) {
                out.push(char::from(b));
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
    let mut out = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        enc(k, &mut out);
        out.push('=');
        enc(v, &mut out);
    }
    out
}

/// GET `target` with `Connection: close`: (status, body).
fn http_get(
    addr: SocketAddr,
    host: &str,
    client: &ApiClient,
    target: &str,
) -> anyhow::Result<(u16, String)> {
    http_request(addr, host, client, "GET", target, None)
}

/// `method` `target` with an optional JSON body and `Connection: close`: (status, body).
pub(crate) fn http_request(
    addr: SocketAddr,
    host: &str,
    client: &ApiClient,
    method: &str,
    target: &str,
    json: Option<&str>,
) -> anyhow::Result<(u16, String)> {
    let ctx = || format!("cannot query the platform at {host}");
    let s = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).with_context(ctx)?;
    s.set_read_timeout(Some(READ_TIMEOUT)).with_context(ctx)?;
    s.set_write_timeout(Some(READ_TIMEOUT)).with_context(ctx)?;
    let auth = client
        .token
        .as_ref()
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let body = json.map_or(String::new(), |j| {
        format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{j}",
            j.len()
        )
    });
    let request = format!(
        "{method} {target} HTTP/1.1\r\nHost: {host}\r\nAccept: application/json\r\nUser-Agent: ironplant/{}\r\n{auth}Connection: close\r\n{}",
        env!("CARGO_PKG_VERSION"),
        if json.is_some() { body } else { "\r\n".to_owned() }
    );
    let mut raw = Vec::new();
    match &client.tls {
        None => {
            let mut s = s;
            s.write_all(request.as_bytes()).with_context(ctx)?;
            s.read_to_end(&mut raw).with_context(ctx)?;
        }
        Some(config) => {
            let name = host.rsplit_once(':').map_or(host, |(h, _)| h);
            let name = name.trim_start_matches('[').trim_end_matches(']');
            let server = ironplant_security::tls::server_name(name).with_context(ctx)?;
            let conn = rustls::ClientConnection::new(config.clone(), server).with_context(ctx)?;
            let mut tls = rustls::StreamOwned::new(conn, s);
            tls.write_all(request.as_bytes()).with_context(|| {
                format!("TLS with the platform at {host} failed; is it the platform's CA (--ca), or does it run with --insecure-http (then use --http http://{host})?")
            })?;
            match tls.read_to_end(&mut raw) {
                Ok(_) => {}
                // The server may close without close_notify after a complete response.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => {}
                Err(e) => return Err(e).with_context(ctx),
            }
        }
    }
    let (status, body) = parse_response(&raw).with_context(ctx)?;
    if status == 401 {
        anyhow::bail!(
            "the platform at {host} wants credentials (HTTP 401): create a token with `ironplant token create --user NAME --role viewer` and pass it in IRONPLANT_TOKEN or with --token-file FILE"
        );
    }
    Ok((status, body))
}

fn parse_response(raw: &[u8]) -> anyhow::Result<(u16, String)> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("the answer is not HTTP (no end of headers)")?;
    let head = std::str::from_utf8(&raw[..split]).context("the HTTP headers are not text")?;
    let body = &raw[split + 4..];
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .context("the answer has no HTTP status line")?;
    let mut chunked = false;
    let mut length = None;
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
            if k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked") {
                chunked = true;
            } else if k == "content-length" {
                length = v.parse::<usize>().ok();
            }
        }
    }
    let body = if chunked {
        dechunk(body)?
    } else if let Some(n) = length {
        body.get(..n)
            .context("the answer ended before its Content-Length")?
            .to_vec()
    } else {
        body.to_vec()
    };
    let text = String::from_utf8(body).context("the answer's body is not UTF-8")?;
    Ok((status, text))
}

fn dechunk(mut b: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = b
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("a chunk size line does not end")?;
        let size_text = std::str::from_utf8(&b[..eol]).context("a chunk size is not text")?;
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16)
            .with_context(|| format!("bad chunk size {size_text:?}"))?;
        b = &b[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        let chunk = b.get(..size).context("the answer ended inside a chunk")?;
        out.extend_from_slice(chunk);
        b = b
            .get(size + 2..)
            .context("the answer ended after a chunk")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_are_encoded() {
        let pairs = vec![
            ("tag".to_owned(), "a/b.c".to_owned()),
            ("from".to_owned(), "2026-01-01T10:00:00+01:00".to_owned()),
            ("agg".to_owned(), "avg,max".to_owned()),
        ];
        assert_eq!(
            encode_query(&pairs),
            "tag=a/b.c&from=2026-01-01T10:00:00%2B01:00&agg=avg%2Cmax"
        );
    }

    #[test]
    fn responses_with_length_or_chunks() {
        let r = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello, extra";
        assert_eq!(
            parse_response(r).expect("parses"),
            (200, "hello".to_owned())
        );
        let r = b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n";
        assert_eq!(
            parse_response(r).expect("parses"),
            (404, "abcde".to_owned())
        );
        assert!(
            parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nff\r\nabc")
                .is_err()
        );
        assert!(parse_response(b"garbage").is_err());
    }

    #[test]
    fn numbers_for_people() {
        assert_eq!(human(4.5), "4.5");
        assert_eq!(human(10.0), "10");
        assert_eq!(human(0.1 + 0.2), "0.3");
        assert_eq!(human(-0.0), "0");
        assert_eq!(human(1.5e-7), "1.5e-7");
        assert_eq!(human(f64::NAN), "");
    }

    #[test]
    fn arrays_and_datasets_show_as_json_text() {
        use ironplant_core::{Array, DataSet, ScalarType};
        let a = Value::array(Array::from_floats(vec![1.5, -2.0]).expect("small"));
        assert_eq!(value_text(&a), "[1.5,-2.0]");
        let d = Value::dataset(
            DataSet::new(
                vec!["n".into()],
                vec![ScalarType::String],
                vec![vec![Value::String("x".into())]],
            )
            .expect("valid"),
        );
        assert_eq!(
            value_text(&d),
            r#"{"columns":["n"],"types":["string"],"rows":[["x"]]}"#
        );
    }

    #[test]
    fn tables_align_columns() {
        let mut out = String::new();
        table(
            &["A", "VALUE"],
            &[
                vec!["xx".into(), "1".into()],
                vec!["y".into(), "100".into()],
            ],
            &[false, true],
            &mut out,
        );
        assert_eq!(out, "A   VALUE\nxx      1\ny     100\n");
    }
}
