//! Backfill: history from a file into the historian (`ironplant import FILE`).
//!
//! Formats (chosen by the file's extension and header):
//! - **Long CSV**, exactly what `ironplant query --format csv` writes (and `GET
//!   /api/v1/history?format=csv`): header `tag,ts,value,quality`, `ts` RFC 3339 with an offset
//!   (`2026-12-07T10:00:00.000000Z`), `value` empty (no value), `true`/`false`, an integer, a
//!   number or text (quoted per RFC 4180 when it holds `,` `"` or a line break), `quality`
//!   `Good`, `Uncertain(REASON)` or `Bad(REASON)` (empty: Good).
//! - **Wide CSV**: header `ts,<tag path>,<tag path>,...`, one row per instant, one column per
//!   tag, every value Good; an empty cell is no sample.
//! - **Parquet** (`.parquet`), the schema `ironplant query --format parquet` writes: `tag`,
//!   `ts` (TIMESTAMP micros), `value` (DOUBLE), `value_text` (strings and booleans), `quality`.
//!
//! So export → import round-trips (Parquet's `value` is a DOUBLE, so integers above 2^53
//! come back rounded, as the export wrote them). A tag's value type is decided over the whole file (text
//! anywhere: string; only true/false: bool; any fraction: float; else int, or float when the
//! historian already holds floats for it): exports write a float 21.0 as `21`.
//!
//! Two passes: the first reads and checks every row (nothing is written), so a bad file is
//! refused whole with every bad row named as `FILE:LINE: what` (Parquet: row numbers), unless
//! `skip_bad`; the second writes. Rows go to the historian with `submit` in batches, each
//! acknowledged only once its WAL record is fsynced; the import reports success only after
//! every acknowledgement. The historian keeps samples in arrival order in memory and sorts at
//! query time, and chunks may overlap in time, so old and out-of-order data are stored and
//! queried correctly. Importing a range a tag already has data in is refused
//! (`allow_overlap` to force): the historian keeps duplicates, it does not replace.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ironplant_core::{Quality, QualityLevel, QualityReason, TagPath, Timestamp, Value};
use ironplant_historian::{Ack, Historian, HistorianError};

/// Samples per historian submission.
const BATCH: usize = 10_000;
/// Submissions waiting for their acknowledgement before the import waits for the oldest.
const IN_FLIGHT: usize = 32;
/// Bad rows kept for the report (all are counted).
const KEEP_BAD: usize = 20;
/// How far ahead of now an imported sample may be.
const MAX_FUTURE_US: i64 = 24 * 3600 * 1_000_000;

/// How to import.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Skip rows that fail the checks (reported) instead of refusing the file.
    pub skip_bad: bool,
    /// Import even where a tag already has data in the file's time range (duplicates).
    pub allow_overlap: bool,
    /// Draw a progress bar on stderr (indicatif hides it when stderr is not a terminal).
    pub progress: bool,
}

/// A row that failed a check: its line (CSV, 1-based, where the record starts) or row
/// (Parquet, 1-based) and what is wrong.
#[derive(Debug, Clone, PartialEq)]
pub struct BadRow {
    pub line: u64,
    pub message: String,
}

/// What an import did.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportReport {
    pub format: &'static str,
    /// Samples read from the file (a wide row gives one per non-empty cell).
    pub rows: u64,
    /// Samples stored (durable).
    pub imported: u64,
    /// Bad rows skipped (with `skip_bad`).
    pub skipped: u64,
    /// The first bad rows.
    pub bad: Vec<BadRow>,
    pub tags: usize,
    pub first: Option<Timestamp>,
    pub last: Option<Timestamp>,
    /// Time of the whole import, and of its first pass (reading and checking) alone.
    pub elapsed: Duration,
    pub checked: Duration,
}

impl ImportReport {
    pub fn rows_per_sec(&self) -> f64 {
        self.imported as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    Format { path: PathBuf, message: String },
    #[error("{}", bad_rows(path, rows, *total))]
    BadRows {
        path: PathBuf,
        rows: Vec<BadRow>,
        total: u64,
    },
    #[error("{tag} already has {count}+ sample(s) between {from} and {to}; importing again would store duplicates (the historian keeps every sample). Pass --allow-overlap to import anyway")]
    Overlap {
        tag: String,
        count: usize,
        from: Timestamp,
        to: Timestamp,
    },
    #[error("historian: {0} ({1} sample(s) were stored durably before the error)")]
    Historian(HistorianError, u64),
}

fn bad_rows(path: &Path, rows: &[BadRow], total: u64) -> String {
    let mut s = String::new();
    for r in rows {
        s.push_str(&format!("{}:{}: {}\n", path.display(), r.line, r.message));
    }
    if total > rows.len() as u64 {
        s.push_str(&format!("... and {} more\n", total - rows.len() as u64));
    }
    s.push_str(&format!(
        "{total} bad row(s) in {}: nothing was imported; fix them, or pass --skip-bad to import the good rows",
        path.display()
    ));
    s
}

/// One cell's value as written.
#[derive(Debug, Clone, PartialEq)]
enum Cell {
    Null,
    Bool(bool),
    Int(i64),
    U64(u64),
    Float(f64),
    Text(String),
}

/// One sample read from a file.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    line: u64,
    /// Index in the file's [`Tags`].
    tag: u32,
    ts: Timestamp,
    cell: Cell,
    quality: Quality,
}

/// The tags of a file, each path parsed once; rows carry indices. Files list a few tags over
/// and over, so a row's tag is looked up among the recently seen ones first.
#[derive(Default)]
struct Tags {
    paths: Vec<TagPath>,
    by_name: HashMap<String, u32>,
    recent: VecDeque<u32>,
}

impl Tags {
    fn intern(&mut self, name: &str) -> Result<u32, String> {
        if let Some(&i) = self
            .recent
            .iter()
            .find(|&&i| self.paths[i as usize].as_str() == name)
        {
            return Ok(i);
        }
        let i = match self.by_name.get(name) {
            Some(&i) => i,
            None => {
                let p = TagPath::parse(name)
                    .map_err(|e| format!("tag {name:?} is not a tag path: {e}"))?;
                let i = self.paths.len() as u32;
                self.paths.push(p);
                self.by_name.insert(name.to_owned(), i);
                i
            }
        };
        if self.recent.len() >= 16 {
            self.recent.pop_back();
        }
        self.recent.push_front(i);
        Ok(i)
    }
}

/// What the first pass learned of a tag.
#[derive(Debug, Default, Clone)]
struct TagInfo {
    bool: bool,
    int: bool,
    float: bool,
    text: bool,
    first: i64,
    last: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bool,
    Int,
    Float,
    Text,
}

impl TagInfo {
    fn kind(&self, stored_float: bool) -> Kind {
        if self.text || (self.bool && (self.int || self.float)) {
            Kind::Text
        } else if self.bool {
            Kind::Bool
        } else if self.float || stored_float {
            Kind::Float
        } else {
            Kind::Int
        }
    }
}

/// Imports `path` into `historian`; see the module docs.
pub fn import_file(
    historian: &Historian,
    path: &Path,
    opts: &ImportOptions,
) -> Result<ImportReport, ImportError> {
    let started = Instant::now();
    let now = Timestamp::now();
    let format = if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("parquet"))
    {
        "parquet"
    } else {
        "csv"
    };
    let size = std::fs::metadata(path).map_err(|e| io(path, e))?.len();

    // Pass 1: check everything, learn the tags.
    let bar = progress_bar(
        opts.progress,
        size,
        "checking",
        "{msg:>10} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
    );
    let mut names = Tags::default();
    let mut tags: Vec<TagInfo> = Vec::new();
    let mut bad = Vec::new();
    let mut bad_total = 0u64;
    let mut good_rows = 0u64;
    for_each_row(path, format, now, &bar, &mut names, |r| match r {
        Ok(row) => {
            good_rows += 1;
            let i = row.tag as usize;
            if tags.len() <= i {
                tags.resize(
                    i + 1,
                    TagInfo {
                        first: i64::MAX,
                        last: i64::MIN,
                        ..TagInfo::default()
                    },
                );
            }
            let t = &mut tags[i];
            match row.cell {
                Cell::Null => {}
                Cell::Bool(_) => t.bool = true,
                Cell::Int(_) | Cell::U64(_) => t.int = true,
                Cell::Float(x) if x.fract() == 0.0 && x.abs() < 9.0e15 && format == "parquet" => {
                    t.int = true
                }
                Cell::Float(_) => t.float = true,
                Cell::Text(_) => t.text = true,
            }
            t.first = t.first.min(row.ts.0);
            t.last = t.last.max(row.ts.0);
        }
        Err(b) => {
            bad_total += 1;
            if bad.len() < KEEP_BAD {
                bad.push(b);
            }
        }
    })?;
    bar.finish_and_clear();
    let checked = started.elapsed();
    if bad_total > 0 && !opts.skip_bad {
        return Err(ImportError::BadRows {
            path: path.to_owned(),
            rows: bad,
            total: bad_total,
        });
    }

    // Types, overlaps, registration (tags whose every row was bad are not registered).
    let used: Vec<usize> = (0..tags.len())
        .filter(|&i| tags[i].first <= tags[i].last)
        .collect();
    let mut kinds = vec![Kind::Float; tags.len()];
    for &i in &used {
        let (p, info) = (&names.paths[i], &tags[i]);
        let mut stored_float = false;
        if historian.hid(p.as_str()).is_some() {
            stored_float = matches!(
                historian.last(&[p.as_str()]).first(),
                Some(Some(pt)) if matches!(pt.value, Value::Float(_))
            );
            if !opts.allow_overlap {
                let to = Timestamp(info.last.saturating_add(1));
                let page = historian
                    .raw(p.as_str(), Timestamp(info.first), to, 1)
                    .map_err(|e| ImportError::Historian(e, 0))?;
                if !page.points.is_empty() {
                    return Err(ImportError::Overlap {
                        tag: p.to_string(),
                        count: page.points.len(),
                        from: Timestamp(info.first),
                        to: Timestamp(info.last),
                    });
                }
            }
        }
        kinds[i] = info.kind(stored_float);
    }
    let mut hids = vec![u32::MAX; tags.len()];
    if !used.is_empty() {
        let paths: Vec<TagPath> = used.iter().map(|&i| names.paths[i].clone()).collect();
        let ids = historian
            .register(&paths)
            .map_err(|e| ImportError::Historian(e, 0))?;
        for (&i, id) in used.iter().zip(ids) {
            hids[i] = id;
        }
    }

    // Pass 2: write.
    let bar = progress_bar(
        opts.progress,
        good_rows,
        "importing",
        "{msg:>10} [{bar:40}] {human_pos}/{human_len} rows {per_sec} ETA {eta}",
    );
    let mut pending: VecDeque<(Ack, u64)> = VecDeque::new();
    let mut batch = Vec::with_capacity(BATCH);
    let mut imported = 0u64;
    let mut failure: Option<ImportError> = None;
    let mut changed = false;
    let (mut first, mut last) = (i64::MAX, i64::MIN);
    let submit = |batch: &mut Vec<(u32, i64, Value, Quality)>,
                  pending: &mut VecDeque<(Ack, u64)>,
                  imported: &mut u64|
     -> Result<(), ImportError> {
        let n = batch.len() as u64;
        let ack = historian
            .submit(std::mem::take(batch))
            .map_err(|e| ImportError::Historian(e, *imported))?;
        pending.push_back((ack, n));
        while pending.len() > IN_FLIGHT {
            if let Some((ack, n)) = pending.pop_front() {
                ack.wait_blocking()
                    .map_err(|e| ImportError::Historian(e, *imported))?;
                *imported += n;
            }
        }
        Ok(())
    };
    for_each_row(path, format, now, &hidden_bar(), &mut names, |r| {
        if failure.is_some() {
            return;
        }
        let Ok(row) = r else { return };
        let (Some(&hid), Some(&kind)) = (hids.get(row.tag as usize), kinds.get(row.tag as usize))
        else {
            changed = true;
            return;
        };
        if hid == u32::MAX {
            changed = true;
            return;
        }
        first = first.min(row.ts.0);
        last = last.max(row.ts.0);
        batch.push((hid, row.ts.0, convert(row.cell, kind), row.quality));
        bar.inc(1);
        if batch.len() >= BATCH {
            if let Err(e) = submit(&mut batch, &mut pending, &mut imported) {
                failure = Some(e);
            }
        }
    })?;
    if let Some(e) = failure {
        return Err(e);
    }
    if !batch.is_empty() {
        submit(&mut batch, &mut pending, &mut imported)?;
    }
    for (ack, n) in pending {
        ack.wait_blocking()
            .map_err(|e| ImportError::Historian(e, imported))?;
        imported += n;
    }
    bar.finish_and_clear();
    if changed || imported != good_rows {
        return Err(ImportError::Format {
            path: path.to_owned(),
            message: format!(
                "the file changed while it was imported ({imported} of {good_rows} checked rows stored); import a copy that nothing writes to"
            ),
        });
    }
    Ok(ImportReport {
        format,
        rows: good_rows + bad_total,
        imported,
        skipped: bad_total,
        bad,
        tags: used.len(),
        first: (imported > 0).then_some(Timestamp(first)),
        last: (imported > 0).then_some(Timestamp(last)),
        elapsed: started.elapsed(),
        checked,
    })
}

fn hidden_bar() -> indicatif::ProgressBar {
    indicatif::ProgressBar::hidden()
}

fn progress_bar(show: bool, len: u64, msg: &'static str, template: &str) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(msg);
    bar
}

fn io(path: &Path, source: std::io::Error) -> ImportError {
    ImportError::Io {
        path: path.to_owned(),
        source,
    }
}

fn convert(cell: Cell, kind: Kind) -> Value {
    match (cell, kind) {
        (Cell::Null, _) => Value::Null,
        (Cell::Bool(b), Kind::Bool) => Value::Bool(b),
        (Cell::Int(i), Kind::Int) => Value::Int(i),
        (Cell::U64(u), Kind::Int) => Value::from_u64(u),
        (Cell::Float(x), Kind::Int) => Value::Int(x as i64),
        (Cell::Int(i), Kind::Float) => Value::Float(i as f64),
        (Cell::U64(u), Kind::Float) => Value::Float(u as f64),
        (Cell::Float(x), _) if kind != Kind::Text => Value::Float(x),
        (cell, _) => Value::String(
            match cell {
                Cell::Bool(b) => b.to_string(),
                Cell::Int(i) => i.to_string(),
                Cell::U64(u) => u.to_string(),
                Cell::Float(x) => x.to_string(),
                Cell::Text(t) => t,
                Cell::Null => String::new(),
            }
            .into(),
        ),
    }
}

/// Reads every row of the file, checked, calling `f` with the row or why it is bad.
fn for_each_row(
    path: &Path,
    format: &str,
    now: Timestamp,
    bar: &indicatif::ProgressBar,
    names: &mut Tags,
    mut f: impl FnMut(Result<Row, BadRow>),
) -> Result<(), ImportError> {
    if format == "parquet" {
        return parquet_rows(path, now, bar, names, f);
    }
    let file = File::open(path).map_err(|e| io(path, e))?;
    let mut csv = CsvReader::new(BufReader::with_capacity(1 << 16, file));
    let mut fields = Vec::new();
    let Some((_, header)) = csv.next_record(&mut fields).map_err(|e| io(path, e))? else {
        return Err(ImportError::Format {
            path: path.to_owned(),
            message: "the file is empty; expected a header `tag,ts,value,quality` (or `ts,<tag>,<tag>...`)".to_owned(),
        });
    };
    header.map_err(|message| ImportError::Format {
        path: path.to_owned(),
        message: format!("line 1: {message}"),
    })?;
    let header = fields.clone();
    let columns: Vec<&str> = header.iter().map(|h| h.trim()).collect();
    enum Layout {
        Long,
        Wide(Vec<u32>),
    }
    let layout = match columns.as_slice() {
        ["tag", "ts", "value", "quality"] => Layout::Long,
        [first, rest @ ..] if matches!(*first, "ts" | "time" | "timestamp") && !rest.is_empty() => {
            let mut cols = Vec::new();
            for c in rest {
                cols.push(names.intern(c).map_err(|e| ImportError::Format {
                    path: path.to_owned(),
                    message: format!("line 1: column {c:?}: {e}"),
                })?);
            }
            Layout::Wide(cols)
        }
        _ => {
            return Err(ImportError::Format {
                path: path.to_owned(),
                message: format!(
                    "line 1: header {:?} is neither `tag,ts,value,quality` (what `ironplant query --format csv` writes) nor `ts,<tag path>,<tag path>,...` (one column per tag)",
                    header.join(",")
                ),
            })
        }
    };
    let mut last_pos = 0;
    while let Some((line, rec)) = csv.next_record(&mut fields).map_err(|e| io(path, e))? {
        if csv.bytes - last_pos >= 1 << 20 {
            bar.set_position(csv.bytes);
            last_pos = csv.bytes;
        }
        if let Err(message) = rec {
            f(Err(BadRow { line, message }));
            continue;
        }
        match &layout {
            Layout::Long => f(long_row(line, &fields, now, names)),
            Layout::Wide(cols) => {
                if fields.len() != cols.len() + 1 {
                    f(Err(BadRow {
                        line,
                        message: format!(
                            "{} field(s), the header has {}",
                            fields.len(),
                            cols.len() + 1
                        ),
                    }));
                    continue;
                }
                let ts = match check_ts(&fields[0], now) {
                    Ok(ts) => ts,
                    Err(message) => {
                        f(Err(BadRow { line, message }));
                        continue;
                    }
                };
                for (&tag, text) in cols.iter().zip(fields.iter().skip(1)) {
                    let cell = classify(text);
                    if cell != Cell::Null {
                        f(Ok(Row {
                            line,
                            tag,
                            ts,
                            cell,
                            quality: Quality::GOOD,
                        }));
                    }
                }
            }
        }
    }
    bar.set_position(csv.bytes);
    Ok(())
}

fn long_row(line: u64, fields: &[String], now: Timestamp, names: &mut Tags) -> Result<Row, BadRow> {
    let bad = |message: String| BadRow { line, message };
    let [tag, ts, value, quality] = fields else {
        return Err(bad(format!(
            "{} field(s); expected 4: tag,ts,value,quality",
            fields.len()
        )));
    };
    let tag = names.intern(tag).map_err(bad)?;
    let ts = check_ts(ts, now).map_err(bad)?;
    let quality = parse_quality(quality).ok_or_else(|| {
        bad(format!(
            "quality {quality:?} is not Good, Uncertain(REASON) or Bad(REASON)"
        ))
    })?;
    let cell = classify(value);
    if cell == Cell::Null && quality.is_good() {
        return Err(bad(
            "a Good sample needs a value (the value is empty)".to_owned()
        ));
    }
    Ok(Row {
        line,
        tag,
        ts,
        cell,
        quality,
    })
}

fn check_ts(text: &str, now: Timestamp) -> Result<Timestamp, String> {
    let dt = crate::time::parse_rfc3339(text.trim()).ok_or_else(|| {
        format!("ts {text:?} is not an RFC 3339 time such as 2026-12-07T10:00:00Z")
    })?;
    let ts = dt
        .resolve(None)
        .ok_or_else(|| format!("ts {text:?} has no UTC offset; add Z or +01:00"))?;
    if ts.0 < 0 {
        return Err(format!("ts {text:?} is before 1970"));
    }
    if ts.0 > now.0.saturating_add(MAX_FUTURE_US) {
        return Err(format!("ts {text:?} is more than a day in the future"));
    }
    Ok(ts)
}

fn classify(text: &str) -> Cell {
    match text {
        "" => Cell::Null,
        "true" => Cell::Bool(true),
        "false" => Cell::Bool(false),
        t => {
            let numeric = t
                .bytes()
                .all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E'))
                && t.bytes().any(|b| b.is_ascii_digit());
            if numeric {
                if let Ok(i) = t.parse::<i64>() {
                    return Cell::Int(i);
                }
                if let Ok(u) = t.parse::<u64>() {
                    return Cell::U64(u);
                }
                if let Ok(x) = t.parse::<f64>() {
                    if x.is_finite() {
                        return Cell::Float(x);
                    }
                }
            }
            Cell::Text(text.to_owned())
        }
    }
}

/// `Good`, `Uncertain(REASON)`, `Bad(REASON)` as [`Quality`]'s `Display` writes them.
fn parse_quality(text: &str) -> Option<Quality> {
    let t = text.trim();
    if t.is_empty() || t == "Good" {
        return Some(Quality::GOOD);
    }
    let (level, rest) = if let Some(r) = t.strip_prefix("Uncertain") {
        (QualityLevel::Uncertain, r)
    } else if let Some(r) = t.strip_prefix("Bad") {
        (QualityLevel::Bad, r)
    } else {
        return None;
    };
    let reason = if rest.is_empty() {
        QualityReason::None
    } else {
        let name = rest.strip_prefix('(')?.strip_suffix(')')?;
        [
            QualityReason::None,
            QualityReason::CommFailure,
            QualityReason::DeviceFailure,
            QualityReason::OutOfRange,
            QualityReason::ConfigError,
            QualityReason::Stale,
            QualityReason::NotConnected,
            QualityReason::CalculationFailed,
            QualityReason::InsufficientData,
            QualityReason::SequenceGap,
            QualityReason::Implausible,
        ]
        .into_iter()
        .find(|r| r.as_str() == name)?
    };
    Some(Quality { level, reason })
}

// ---- CSV ---------------------------------------------------------------------------------------

/// RFC 4180 records: quoted fields may hold separators, `""` and line breaks; CRLF or LF.
struct CsvReader<R> {
    r: R,
    line: u64,
    bytes: u64,
    buf: Vec<u8>,
}

impl<R: BufRead> CsvReader<R> {
    fn new(r: R) -> CsvReader<R> {
        CsvReader {
            r,
            line: 0,
            bytes: 0,
            buf: Vec::new(),
        }
    }

    /// Reads the next non-empty record into `fields` and returns the line it starts on, with
    /// `Err(message)` for a malformed one.
    fn next_record(
        &mut self,
        fields: &mut Vec<String>,
    ) -> std::io::Result<Option<(u64, Result<(), String>)>> {
        loop {
            self.buf.clear();
            let n = self.r.read_until(b'\n', &mut self.buf)?;
            if n == 0 {
                return Ok(None);
            }
            self.bytes += n as u64;
            self.line += 1;
            let start = self.line;
            let mut end = self.buf.len();
            while end > 0 && matches!(self.buf[end - 1], b'\n' | b'\r') {
                end -= 1;
            }
            if end == 0 {
                continue;
            }
            fields.clear();
            if !self.buf.contains(&b'"') {
                // The common case: no quoting, split on commas.
                let Ok(text) = std::str::from_utf8(&self.buf[..end]) else {
                    return Ok(Some((start, Err("not UTF-8 text".to_owned()))));
                };
                fields.extend(text.split(',').map(str::to_owned));
                return Ok(Some((start, Ok(()))));
            }
            let mut raw: Vec<Vec<u8>> = Vec::new();
            let mut field = Vec::new();
            let mut quoted = false;
            let mut was_quoted = false;
            let mut i = 0;
            loop {
                let Some(&b) = self.buf.get(i) else {
                    if quoted {
                        // The quoted field goes on on the next line.
                        let more = self.r.read_until(b'\n', &mut self.buf)?;
                        if more == 0 {
                            return Ok(Some((
                                start,
                                Err("a quoted field is not closed before the end of the file"
                                    .to_owned()),
                            )));
                        }
                        self.bytes += more as u64;
                        self.line += 1;
                        continue;
                    }
                    break;
                };
                i += 1;
                if quoted {
                    if b == b'"' {
                        if self.buf.get(i) == Some(&b'"') {
                            field.push(b'"');
                            i += 1;
                        } else {
                            quoted = false;
                        }
                    } else {
                        field.push(b);
                    }
                    continue;
                }
                match b {
                    b'"' if field.is_empty() && !was_quoted => {
                        quoted = true;
                        was_quoted = true;
                    }
                    b'"' => {
                        return Ok(Some((start, Err("a '\"' inside an unquoted field; quote the field and double the quote".to_owned()))));
                    }
                    b',' => {
                        raw.push(std::mem::take(&mut field));
                        was_quoted = false;
                    }
                    b'\n' => break,
                    b'\r' if matches!(self.buf.get(i), Some(b'\n') | None) => {}
                    _ if was_quoted => {
                        return Ok(Some((
                            start,
                            Err("text after a closing quote; separate fields with ','".to_owned()),
                        )));
                    }
                    _ => field.push(b),
                }
            }
            raw.push(field);
            for f in raw {
                match String::from_utf8(f) {
                    Ok(s) => fields.push(s),
                    Err(_) => return Ok(Some((start, Err("not UTF-8 text".to_owned())))),
                }
            }
            return Ok(Some((start, Ok(()))));
        }
    }
}

// ---- Parquet -----------------------------------------------------------------------------------

fn parquet_rows(
    path: &Path,
    now: Timestamp,
    bar: &indicatif::ProgressBar,
    names: &mut Tags,
    mut f: impl FnMut(Result<Row, BadRow>),
) -> Result<(), ImportError> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::Field;

    let perr = |e: parquet::errors::ParquetError| ImportError::Format {
        path: path.to_owned(),
        message: format!("not a readable Parquet file: {e}"),
    };
    let file = File::open(path).map_err(|e| io(path, e))?;
    let reader = SerializedFileReader::new(file).map_err(perr)?;
    let schema = reader.metadata().file_metadata().schema_descr();
    let columns: Vec<String> = schema
        .columns()
        .iter()
        .map(|c| c.name().to_owned())
        .collect();
    let expected = ["tag", "ts", "value", "value_text", "quality"];
    if columns != expected {
        return Err(ImportError::Format {
            path: path.to_owned(),
            message: format!(
                "columns {columns:?}; expected {expected:?} (what `ironplant query --format parquet` writes)"
            ),
        });
    }
    let total = reader.metadata().file_metadata().num_rows().max(0) as u64;
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    for (i, row) in reader.into_iter().enumerate() {
        let line = i as u64 + 1;
        if line.is_multiple_of(65_536) && total > 0 {
            bar.set_position(size * line / total);
        }
        let row = row.map_err(perr)?;
        let mut tag = None;
        let mut ts = None;
        let mut value = None;
        let mut text = None;
        let mut quality = None;
        for (name, field) in row.get_column_iter() {
            match (name.as_str(), field) {
                ("tag", Field::Str(s)) => tag = Some(s.clone()),
                ("ts", Field::TimestampMicros(t) | Field::Long(t)) => ts = Some(*t),
                ("value", Field::Double(x)) => value = Some(*x),
                ("value_text", Field::Str(s)) => text = Some(s.clone()),
                ("quality", Field::Str(s)) => quality = Some(s.clone()),
                _ => {}
            }
        }
        let bad = |message: String| BadRow { line, message };
        let r = (|| {
            let tag = tag.ok_or_else(|| bad("no tag".to_owned()))?;
            let tag = names.intern(&tag).map_err(bad)?;
            let ts = ts.ok_or_else(|| bad("no ts".to_owned()))?;
            if ts < 0 || ts > now.0.saturating_add(MAX_FUTURE_US) {
                return Err(bad(format!(
                    "ts {ts} µs is before 1970 or more than a day ahead"
                )));
            }
            let q = quality.unwrap_or_default();
            let quality = parse_quality(&q).ok_or_else(|| {
                bad(format!(
                    "quality {q:?} is not Good, Uncertain(REASON) or Bad(REASON)"
                ))
            })?;
            let cell = match (text, value) {
                (Some(t), _) if t == "true" => Cell::Bool(true),
                (Some(t), _) if t == "false" => Cell::Bool(false),
                (Some(t), _) => Cell::Text(t),
                (None, Some(x)) if x.is_finite() => Cell::Float(x),
                (None, _) => Cell::Null,
            };
            if cell == Cell::Null && quality.is_good() {
                return Err(bad(
                    "a Good sample needs a value (value and value_text are null)".to_owned(),
                ));
            }
            Ok(Row {
                line,
                tag,
                ts: Timestamp(ts),
                cell,
                quality,
            })
        })();
        f(r);
    }
    Ok(())
}

impl fmt::Display for ImportReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Imported {} sample(s) of {} tag(s) from {} in {:.1} s (checked in {:.1} s; {:.0} rows/s)",
            self.imported,
            self.tags,
            self.format,
            self.elapsed.as_secs_f64(),
            self.checked.as_secs_f64(),
            self.rows_per_sec()
        )?;
        if let (Some(a), Some(b)) = (self.first, self.last) {
            write!(f, ", {a} .. {b}")?;
        }
        if self.skipped > 0 {
            write!(f, "; skipped {} bad row(s)", self.skipped)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(text: &str) -> Vec<(u64, Result<Vec<String>, String>)> {
        let mut r = CsvReader::new(text.as_bytes());
        let mut out = Vec::new();
        let mut fields = Vec::new();
        while let Some((line, rec)) = r.next_record(&mut fields).expect("in memory") {
            out.push((line, rec.map(|()| fields.clone())));
        }
        out
    }

    #[test]
    fn csv_records_with_quotes_line_breaks_and_crlf() {
        let recs = records("a,b\r\n\"x,1\",\"say \"\"hi\"\"\"\n\n\"two\nlines\",3\nlast,\n");
        let ok: Vec<(u64, Vec<String>)> = recs
            .into_iter()
            .map(|(l, r)| (l, r.expect("valid")))
            .collect();
        assert_eq!(
            ok,
            vec![
                (1, vec!["a".into(), "b".into()]),
                (2, vec!["x,1".into(), "say \"hi\"".into()]),
                (4, vec!["two\nlines".into(), "3".into()]),
                (6, vec!["last".into(), String::new()]),
            ]
        );
        let bad = records("a\"b,c\n\"open,d\n");
        assert!(bad[0]
            .1
            .as_ref()
            .is_err_and(|e| e.contains("inside an unquoted")));
        assert!(bad[1].1.as_ref().is_err_and(|e| e.contains("not closed")));
    }

    #[test]
    fn cells_qualities_and_kinds() {
        assert_eq!(classify("21"), Cell::Int(21));
        assert_eq!(classify("-21.5"), Cell::Float(-21.5));
        assert_eq!(classify("18446744073709551615"), Cell::U64(u64::MAX));
        assert_eq!(classify("inf"), Cell::Text("inf".into()));
        assert_eq!(classify("1e3"), Cell::Float(1000.0));
        assert_eq!(classify("true"), Cell::Bool(true));
        assert_eq!(
            parse_quality("Uncertain(OutOfRange)"),
            Some(Quality::uncertain(QualityReason::OutOfRange))
        );
        assert_eq!(
            parse_quality("Bad(CommFailure)"),
            Some(Quality::bad(QualityReason::CommFailure))
        );
        assert_eq!(parse_quality("Bad(Sunspots)"), None);
        for q in [
            Quality::GOOD,
            Quality::bad(QualityReason::Stale),
            Quality::uncertain(QualityReason::None),
        ] {
            assert_eq!(parse_quality(&q.to_string()), Some(q), "{q}");
        }
        let floats = TagInfo {
            int: true,
            float: true,
            ..TagInfo::default()
        };
        assert_eq!(floats.kind(false), Kind::Float);
        let ints = TagInfo {
            int: true,
            ..TagInfo::default()
        };
        assert_eq!(
            (ints.kind(false), ints.kind(true)),
            (Kind::Int, Kind::Float)
        );
        let mixed = TagInfo {
            int: true,
            bool: true,
            ..TagInfo::default()
        };
        assert_eq!(mixed.kind(false), Kind::Text);
        assert_eq!(convert(Cell::Int(21), Kind::Float), Value::Float(21.0));
        assert_eq!(
            convert(Cell::Int(21), Kind::Text),
            Value::String("21".into())
        );
    }
}
