//! `GET /api/v1/history`: raw samples (paged), aggregates over fixed intervals, or the value at
//! an instant, for one or more tags, as JSON or CSV.
//!
//! Parsing ([`HistoryQuery::parse`]), querying ([`run_query`]) and rendering ([`render_json`],
//! [`render_csv`]) are plain functions without HTTP, so `ironplant query` runs the very same code
//! against a historian it opens itself when no platform is running; [`parse_json`] reads the JSON
//! back for that command's other output formats.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use ironplant_core::wire::{parse_ts, SampleIn, SampleJson};
use ironplant_core::{TagPath, Timestamp, Value};
use ironplant_historian::aggregate::Row;
use ironplant_historian::{
    Aggregate, Historian, HistorianError, Interpolation, Point, MAX_INTERVALS, MAX_POINTS,
};
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};

use crate::auth::Caller;
use crate::{ApiError, ApiState};
use ironplant_security::Permission;

/// Raw points per tag when the request gives no `limit` (less when many tags share the call).
pub const DEFAULT_LIMIT: usize = 10_000;
/// Most tags in one request. Tags share one call's budget of `MAX_POINTS` raw points or
/// `MAX_INTERVALS` aggregate rows, so a single request's memory stays bounded.
pub const MAX_TAGS: usize = 100;
/// The range when only `to` (or nothing) is given: the hour before it.
pub const DEFAULT_SPAN: Duration = Duration::from_secs(3600);

const PARAMS: &str = "tag, from, to, limit, interval, agg, at, interp, format";
const TIME_HINT: &str =
    "use RFC 3339 (2026-11-25T10:00:00Z, or with an offset like +01:00) or a time relative to now (now, now-1h, -15m, now-2d)";

/// A validated history request: which tags and what to compute.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryQuery {
    pub tags: Vec<TagPath>,
    pub kind: QueryKind,
}

/// What a history request computes.
#[derive(Debug, Clone, PartialEq)]
pub enum QueryKind {
    /// Raw samples with `from <= ts < to`, at most `limit` per tag.
    Raw {
        from: Timestamp,
        to: Timestamp,
        limit: usize,
    },
    /// `aggs` over `[from, to)` in intervals of `interval`.
    Aggregate {
        from: Timestamp,
        to: Timestamp,
        interval: Duration,
        aggs: Vec<Aggregate>,
    },
    /// The value at one instant.
    At {
        at: Timestamp,
        interp: Interpolation,
    },
}

/// How the HTTP endpoint renders a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Csv,
}

/// The answer to a [`HistoryQuery`]: one entry per requested tag, in request order.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryResult {
    pub query: HistoryQuery,
    pub tags: Vec<TagResult>,
    /// Corrupt chunks the historian skipped, with their tag and time range.
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TagResult {
    pub tag: TagPath,
    pub data: TagData,
}

/// One tag's answer; the variant matches the query's [`QueryKind`].
#[derive(Debug, Clone, PartialEq)]
pub enum TagData {
    /// `next` is the `from` of the next page, or `None` when the range is exhausted.
    Raw {
        points: Vec<Point>,
        next: Option<Timestamp>,
    },
    /// One row per interval; `values[i]` belongs to the query's `aggs[i]`.
    Aggregate { rows: Vec<Row> },
    /// `None` when the tag has no sample at or before the instant.
    At { point: Option<Point> },
}

impl ApiError {
    /// The stable machine-readable code, e.g. `tag_not_found`.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// What went wrong and how to fix it.
    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }
}

fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
}

/// The API error for a historian error, with its stable code.
pub fn historian_error(e: HistorianError) -> ApiError {
    let (status, code) = match &e {
        HistorianError::UnknownTag(_) => (StatusCode::NOT_FOUND, "tag_not_found"),
        HistorianError::BadRange { .. } => (StatusCode::BAD_REQUEST, "bad_range"),
        HistorianError::BadInterval(_) => (StatusCode::BAD_REQUEST, "bad_interval"),
        HistorianError::TooManyIntervals { .. } => (StatusCode::BAD_REQUEST, "too_many_intervals"),
        HistorianError::LimitTooLarge { .. } => (StatusCode::BAD_REQUEST, "limit_too_large"),
        HistorianError::Closed => (StatusCode::SERVICE_UNAVAILABLE, "historian_closed"),
        HistorianError::Storage(_) | HistorianError::Io { .. } => {
            (StatusCode::INTERNAL_SERVER_ERROR, "historian_error")
        }
    };
    ApiError::new(status, code, e.to_string())
}

/// Reads a time: RFC 3339 (`Z`, `+HH:MM` or `-HH:MM`; no offset means UTC) or relative to `now`
/// (`now`, `now-1h`, `now+5m`, `-15m`). A `+` that arrived as a space (an unencoded `+` in a
/// query string) is taken for the `+` it was.
pub fn parse_time(s: &str, now: Timestamp) -> Result<Timestamp, String> {
    let s = s.trim();
    let relative = if s == "now" {
        Some((1, ""))
    } else if let Some(rest) = s.strip_prefix("now-") {
        Some((-1, rest))
    } else if let Some(rest) = s.strip_prefix("now+").or_else(|| s.strip_prefix("now ")) {
        Some((1, rest))
    } else {
        s.strip_prefix('-').map(|rest| (-1, rest))
    };
    if let Some((sign, rest)) = relative {
        let offset = if rest.is_empty() {
            0
        } else {
            let d = humantime::parse_duration(rest.trim()).map_err(|e| e.to_string())?;
            i64::try_from(d.as_micros()).map_err(|_| "that duration is too long".to_owned())?
        };
        return now
            .0
            .checked_add(sign * offset)
            .map(Timestamp)
            .ok_or_else(|| "that time is out of range".to_owned());
    }
    // An explicit offset: parse the local time as UTC, then shift by the offset.
    let b = s.as_bytes();
    let (local, offset_s) = match b.len().checked_sub(6).map(|i| (i, &b[i..])) {
        Some((i, [sign @ (b'+' | b'-' | b' '), h1, h2, b':', m1, m2]))
            if i >= 19 && [h1, h2, m1, m2].iter().all(|c| c.is_ascii_digit()) =>
        {
            let hours = i64::from((h1 - b'0') * 10 + (h2 - b'0'));
            let minutes = i64::from((m1 - b'0') * 10 + (m2 - b'0'));
            let sign = if *sign == b'-' { -1 } else { 1 };
            (&s[..i], sign * (hours * 3600 + minutes * 60))
        }
        _ => (s, 0),
    };
    let t = humantime::parse_rfc3339_weak(local).map_err(|e| e.to_string())?;
    let us = Timestamp::from_system_time(t).0;
    us.checked_sub(offset_s * 1_000_000)
        .map(Timestamp)
        .ok_or_else(|| "that time is out of range".to_owned())
}

fn time_param(name: &str, value: &str, now: Timestamp) -> Result<Timestamp, ApiError> {
    parse_time(value, now)
        .map_err(|e| bad_request(format!("{name}={value:?} is not a time ({e}); {TIME_HINT}")))
}

/// Reads a comma-separated list of aggregate names (duplicates are dropped).
pub fn parse_aggs(list: &str) -> Result<Vec<Aggregate>, ApiError> {
    let mut aggs = Vec::new();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let agg = Aggregate::parse(&name.to_ascii_lowercase()).ok_or_else(|| {
            bad_request(format!(
                "agg: unknown aggregate {name:?}; use a comma-separated list of {}",
                all_aggs()
            ))
        })?;
        if !aggs.contains(&agg) {
            aggs.push(agg);
        }
    }
    if aggs.is_empty() {
        return Err(bad_request(format!(
            "agg is empty; use a comma-separated list of {}",
            all_aggs()
        )));
    }
    Ok(aggs)
}

fn all_aggs() -> String {
    Aggregate::ALL.map(Aggregate::as_str).join(",")
}

pub fn interp_str(i: Interpolation) -> &'static str {
    match i {
        Interpolation::Previous => "previous",
        Interpolation::Linear => "linear",
    }
}

impl HistoryQuery {
    /// Validates the query-string pairs of a request; relative times are resolved against `now`.
    pub fn parse(
        pairs: &[(String, String)],
        now: Timestamp,
    ) -> Result<(HistoryQuery, Format), ApiError> {
        let mut tags: Vec<TagPath> = Vec::new();
        let mut one: BTreeMap<&str, &str> = BTreeMap::new();
        for (k, v) in pairs {
            match k.as_str() {
                "tag" => {
                    // Paths never contain ',', so `tag=a,b` is two tags.
                    for part in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                        let path = TagPath::parse(part).map_err(|e| {
                            ApiError::new(
                                StatusCode::BAD_REQUEST,
                                "invalid_path",
                                format!("tag={part:?} is not a valid tag path: {e}"),
                            )
                        })?;
                        if !tags.contains(&path) {
                            if tags.len() == MAX_TAGS {
                                return Err(bad_request(format!(
                                    "more than {MAX_TAGS} tags requested; at most {MAX_TAGS} per call: split the request"
                                )));
                            }
                            tags.push(path);
                        }
                    }
                }
                "from" | "to" | "limit" | "interval" | "agg" | "at" | "interp" | "format" => {
                    if one.insert(k.as_str(), v.as_str()).is_some() {
                        return Err(bad_request(format!(
                            "{k} is given more than once; give it once (only tag repeats)"
                        )));
                    }
                }
                other => {
                    return Err(bad_request(format!(
                        "unknown parameter {other:?}; the parameters are {PARAMS}"
                    )))
                }
            }
        }
        if tags.is_empty() {
            return Err(bad_request(
                "no tag given: add ?tag=PATH (repeat tag=... for several tags); list tags with GET /api/v1/tags",
            ));
        }
        let format = match one.get("format").copied() {
            None | Some("json") => Format::Json,
            Some("csv") => Format::Csv,
            Some(f) => {
                return Err(bad_request(format!(
                    "format={f:?} is not supported; use format=json (the default) or format=csv"
                )))
            }
        };
        let kind = if let Some(at) = one.get("at") {
            if let Some(k) = ["from", "to", "limit", "interval", "agg"]
                .into_iter()
                .find(|k| one.contains_key(k))
            {
                return Err(bad_request(format!(
                    "at= asks for the value at one instant and cannot be combined with {k}=; drop one of them"
                )));
            }
            let interp = match one.get("interp").copied() {
                None | Some("previous") => Interpolation::Previous,
                Some("linear") => Interpolation::Linear,
                Some(i) => {
                    return Err(bad_request(format!(
                        "interp={i:?} is not supported; use interp=previous (the default) or interp=linear"
                    )))
                }
            };
            QueryKind::At {
                at: time_param("at", at, now)?,
                interp,
            }
        } else {
            if one.contains_key("interp") {
                return Err(bad_request(
                    "interp= applies only to at= queries; add at=TIME or drop interp",
                ));
            }
            let to = match one.get("to") {
                Some(t) => time_param("to", t, now)?,
                None => now,
            };
            let from = match one.get("from") {
                Some(f) => time_param("from", f, now)?,
                None => Timestamp(to.0.saturating_sub(DEFAULT_SPAN.as_micros() as i64)),
            };
            if from > to {
                return Err(historian_error(HistorianError::BadRange { from, to }));
            }
            if let Some(interval) = one.get("interval") {
                if one.contains_key("limit") {
                    return Err(bad_request(
                        "limit= applies only to raw queries; aggregates return one row per interval (drop limit, or interval for raw samples)",
                    ));
                }
                let interval = humantime::parse_duration(interval.trim()).map_err(|e| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "bad_interval",
                        format!("interval={interval:?} is not a duration ({e}); use e.g. interval=15s, 1m or 1h"),
                    )
                })?;
                let aggs = match one.get("agg") {
                    Some(list) => parse_aggs(list)?,
                    None => vec![Aggregate::Avg],
                };
                // Per tag the historian bounds the intervals; across tags, this call does.
                let step = interval.as_micros().max(1);
                let rows = ((to.0 - from.0) as u128).div_ceil(step) * tags.len() as u128;
                if tags.len() > 1
                    && interval >= Duration::from_millis(1)
                    && rows > u128::from(MAX_INTERVALS)
                {
                    return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "too_many_intervals",
                        format!(
                            "{rows} intervals requested over {} tags; at most {MAX_INTERVALS} per call: use a longer interval, a shorter range or fewer tags per call",
                            tags.len()
                        ),
                    ));
                }
                QueryKind::Aggregate {
                    from,
                    to,
                    interval,
                    aggs,
                }
            } else {
                if one.contains_key("agg") {
                    return Err(bad_request(
                        "agg= needs interval= (e.g. interval=1m&agg=avg,max)",
                    ));
                }
                // At most MAX_POINTS points per call, shared by the tags.
                let budget = MAX_POINTS / tags.len();
                let limit = match one.get("limit") {
                    None => DEFAULT_LIMIT.min(budget),
                    Some(l) => match l.trim().parse::<usize>() {
                        Ok(0) => {
                            return Err(bad_request(
                                "limit=0: ask for at least 1 point (page with `next`)",
                            ))
                        }
                        Ok(n) if n > MAX_POINTS => {
                            return Err(historian_error(HistorianError::LimitTooLarge {
                                limit: n,
                                max: MAX_POINTS,
                            }))
                        }
                        Ok(n) if n > budget => {
                            return Err(ApiError::new(
                                StatusCode::BAD_REQUEST,
                                "limit_too_large",
                                format!(
                                    "limit {n} for {} tags is more than {MAX_POINTS} points per call; use limit={budget} or less (page with `next`)",
                                    tags.len()
                                ),
                            ))
                        }
                        Ok(n) => n,
                        Err(_) => {
                            return Err(bad_request(format!(
                                "limit={l:?} is not a number; use 1..={MAX_POINTS} points per tag (default {DEFAULT_LIMIT})"
                            )))
                        }
                    },
                };
                QueryKind::Raw { from, to, limit }
            }
        };
        Ok((HistoryQuery { tags, kind }, format))
    }

    /// The query-string pairs that ask for exactly this query (times absolute, µs precise).
    pub fn to_params(&self) -> Vec<(String, String)> {
        let mut p: Vec<(String, String)> = self
            .tags
            .iter()
            .map(|t| ("tag".to_owned(), t.as_str().to_owned()))
            .collect();
        let mut add = |k: &str, v: String| p.push((k.to_owned(), v));
        match &self.kind {
            QueryKind::Raw { from, to, limit } => {
                add("from", from.to_rfc3339());
                add("to", to.to_rfc3339());
                add("limit", limit.to_string());
            }
            QueryKind::Aggregate {
                from,
                to,
                interval,
                aggs,
            } => {
                add("from", from.to_rfc3339());
                add("to", to.to_rfc3339());
                add(
                    "interval",
                    humantime::format_duration(*interval).to_string(),
                );
                add(
                    "agg",
                    aggs.iter()
                        .map(|a| a.as_str())
                        .collect::<Vec<_>>()
                        .join(","),
                );
            }
            QueryKind::At { at, interp } => {
                add("at", at.to_rfc3339());
                add("interp", interp_str(*interp).to_owned());
            }
        }
        p
    }
}

/// Runs `q` against the historian, tag by tag (blocking: it reads from disk).
pub fn run_query(h: &Historian, q: &HistoryQuery) -> Result<HistoryResult, ApiError> {
    let mut tags = Vec::with_capacity(q.tags.len());
    let mut warnings = Vec::new();
    for tag in &q.tags {
        let path = tag.as_str();
        let data = match &q.kind {
            QueryKind::Raw { from, to, limit } => {
                let page = h.raw(path, *from, *to, *limit).map_err(historian_error)?;
                warnings.extend(page.warnings);
                TagData::Raw {
                    points: page.points,
                    next: page.next,
                }
            }
            QueryKind::Aggregate {
                from,
                to,
                interval,
                aggs,
            } => {
                let r = h
                    .aggregate(path, *from, *to, *interval, aggs)
                    .map_err(historian_error)?;
                warnings.extend(r.warnings);
                TagData::Aggregate { rows: r.rows }
            }
            QueryKind::At { at, interp } => {
                let r = h.at(path, *at, *interp).map_err(historian_error)?;
                warnings.extend(r.warnings);
                TagData::At { point: r.point }
            }
        };
        tags.push(TagResult {
            tag: tag.clone(),
            data,
        });
    }
    Ok(HistoryResult {
        query: q.clone(),
        tags,
        warnings,
    })
}

/// The HTTP handler of `GET /api/v1/history`.
pub(crate) async fn get_history(
    State(st): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    caller.require(Permission::ReadTags)?;
    let Query(pairs) =
        query.map_err(|e| bad_request(format!("cannot read the query string: {e}")))?;
    let (q, format) = HistoryQuery::parse(&pairs, Timestamp::now())?;
    for tag in &q.tags {
        caller.require_read(tag.as_str())?;
    }
    let h = st.runtime.historian.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "historian_disabled",
            "this platform runs without a historian: start it with a data directory (--data-dir) and [historian] enabled = true",
        )
    })?;
    // Reading chunks and rendering 100k-point pages is blocking work: keep it off async workers.
    let rendered = tokio::task::spawn_blocking(move || {
        run_query(&h, &q).map(|r| match format {
            Format::Json => (render_json(&r), r.warnings),
            Format::Csv => (render_csv(&r), r.warnings),
        })
    })
    .await
    .map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("the history query failed: {e}"),
        )
    })??;
    let (body, warnings) = rendered;
    let mut resp = match format {
        Format::Json => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Format::Csv => ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], body).into_response(),
    };
    if format == Format::Csv {
        // CSV has no place for them: corrupt-chunk warnings travel as headers.
        let name = HeaderName::from_static("x-ironplant-warning");
        for w in warnings {
            let text: String = w
                .chars()
                .map(|c| {
                    if c.is_ascii_graphic() || c == ' ' {
                        c
                    } else {
                        '?'
                    }
                })
                .collect();
            if let Ok(v) = HeaderValue::from_str(&text) {
                resp.headers_mut().append(name.clone(), v);
            }
        }
    }
    Ok(resp)
}

// ---- JSON ----------------------------------------------------------------------------------

#[derive(Serialize)]
struct BodyJson<'a> {
    mode: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    from: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    to: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    interval: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aggregates: Option<Vec<&'static str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    interp: Option<&'static str>,
    tags: Vec<TagJson<'a>>,
    warnings: &'a [String],
}

#[derive(Serialize)]
#[serde(untagged)]
enum TagJson<'a> {
    Raw {
        tag: &'a TagPath,
        points: Vec<PointJson<'a>>,
        next: Option<String>,
    },
    Aggregate {
        tag: &'a TagPath,
        rows: Vec<RowJson<'a>>,
    },
    At {
        tag: &'a TagPath,
        point: Option<PointJson<'a>>,
    },
}

/// A stored point in the one wire format (`core::wire::SampleJson` without `path`,
/// `server_ts` and `unit`, which the history does not keep per point).
type PointJson<'a> = SampleJson<'a>;

fn point_json(p: &Point) -> PointJson<'_> {
    SampleJson::stored(p.ts, &p.value, p.quality)
}

struct RowJson<'a> {
    row: &'a Row,
    aggs: &'a [Aggregate],
}

impl Serialize for RowJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.aggs.len() + 3))?;
        m.serialize_entry("start", &self.row.start.to_rfc3339())?;
        for (agg, v) in self.aggs.iter().zip(&self.row.values) {
            match v.filter(|x| x.is_finite()) {
                None => m.serialize_entry(agg.as_str(), &())?,
                // A count is a whole number: say so in the JSON.
                Some(x) if *agg == Aggregate::Count => {
                    m.serialize_entry(agg.as_str(), &(x as u64))?
                }
                Some(x) => m.serialize_entry(agg.as_str(), &x)?,
            }
        }
        m.serialize_entry("good", &self.row.good)?;
        m.serialize_entry("bad", &self.row.bad)?;
        m.end()
    }
}

/// The JSON body: `{"mode", <the resolved query>, "tags": [{"tag", ...}], "warnings": [...]}`.
pub fn render_json(r: &HistoryResult) -> String {
    let mut body = BodyJson {
        mode: "raw",
        from: None,
        to: None,
        interval: None,
        aggregates: None,
        at: None,
        interp: None,
        tags: Vec::with_capacity(r.tags.len()),
        warnings: &r.warnings,
    };
    let mut aggs: &[Aggregate] = &[];
    match &r.query.kind {
        QueryKind::Raw { from, to, .. } => {
            body.from = Some(from.to_rfc3339());
            body.to = Some(to.to_rfc3339());
        }
        QueryKind::Aggregate {
            from,
            to,
            interval,
            aggs: a,
        } => {
            body.mode = "aggregate";
            body.from = Some(from.to_rfc3339());
            body.to = Some(to.to_rfc3339());
            body.interval = Some(humantime::format_duration(*interval).to_string());
            body.aggregates = Some(a.iter().map(|a| a.as_str()).collect());
            aggs = a;
        }
        QueryKind::At { at, interp } => {
            body.mode = "at";
            body.at = Some(at.to_rfc3339());
            body.interp = Some(interp_str(*interp));
        }
    }
    body.tags = r
        .tags
        .iter()
        .map(|t| match &t.data {
            TagData::Raw { points, next } => TagJson::Raw {
                tag: &t.tag,
                points: points.iter().map(point_json).collect(),
                next: next.map(Timestamp::to_rfc3339),
            },
            TagData::Aggregate { rows } => TagJson::Aggregate {
                tag: &t.tag,
                rows: rows.iter().map(|row| RowJson { row, aggs }).collect(),
            },
            TagData::At { point } => TagJson::At {
                tag: &t.tag,
                point: point.as_ref().map(point_json),
            },
        })
        .collect();
    serde_json::to_string(&body)
        .expect("history JSON has string keys only, so it always serializes")
}

// ---- CSV -----------------------------------------------------------------------------------

/// CSV with a header line: `tag,ts,value,quality` for raw and `at` queries (an `at` without
/// data has empty value and quality), `tag,start,<aggs...>,good,bad` for aggregates.
pub fn render_csv(r: &HistoryResult) -> String {
    let mut out = String::new();
    match &r.query.kind {
        QueryKind::Raw { .. } | QueryKind::At { .. } => out.push_str("tag,ts,value,quality\n"),
        QueryKind::Aggregate { aggs, .. } => {
            out.push_str("tag,start");
            for a in aggs {
                out.push(',');
                out.push_str(a.as_str());
            }
            out.push_str(",good,bad\n");
        }
    }
    let aggs: &[Aggregate] = match &r.query.kind {
        QueryKind::Aggregate { aggs, .. } => aggs,
        _ => &[],
    };
    for t in &r.tags {
        let tag = t.tag.as_str();
        match &t.data {
            TagData::Raw { points, .. } => {
                for p in points {
                    csv_point(&mut out, tag, p);
                }
            }
            TagData::At { point: Some(p) } => csv_point(&mut out, tag, p),
            TagData::At { point: None } => {
                if let QueryKind::At { at, .. } = &r.query.kind {
                    let _ = writeln!(out, "{tag},{at},,");
                }
            }
            TagData::Aggregate { rows } => {
                for row in rows {
                    let _ = write!(out, "{tag},{}", row.start);
                    for (agg, v) in aggs.iter().zip(&row.values) {
                        out.push(',');
                        if let Some(x) = v.filter(|x| x.is_finite()) {
                            if *agg == Aggregate::Count {
                                let _ = write!(out, "{}", x as u64);
                            } else {
                                let _ = write!(out, "{x}");
                            }
                        }
                    }
                    let _ = writeln!(out, ",{},{}", row.good, row.bad);
                }
            }
        }
    }
    out
}

fn csv_point(out: &mut String, tag: &str, p: &Point) {
    let _ = write!(out, "{tag},{},", p.ts);
    match &p.value {
        Value::Null => {}
        Value::Bool(b) => {
            let _ = write!(out, "{b}");
        }
        Value::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Value::U64(u) => {
            let _ = write!(out, "{u}");
        }
        Value::Float(f) if f.is_finite() => {
            let _ = write!(out, "{f}");
        }
        Value::Float(_) => {}
        Value::String(s) => csv_field(out, s),
        // A JSON text in one field, always quoted.
        Value::Array(_) | Value::DataSet(_) => {
            let json = serde_json::to_string(&ironplant_core::wire::ValueJson(Some(&p.value)))
                .unwrap_or_default();
            out.push('"');
            out.push_str(&json.replace('"', "\"\""));
            out.push('"');
        }
    }
    let _ = writeln!(out, ",{}", p.quality);
}

/// A CSV field, quoted when it holds a separator, a quote or a line break.
fn csv_field(out: &mut String, s: &str) {
    if s.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&s.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(s);
    }
}

// ---- reading the JSON back (for clients such as `ironplant query`) -------------------------

#[derive(Deserialize)]
struct BodyIn {
    mode: String,
    from: Option<String>,
    to: Option<String>,
    interval: Option<String>,
    aggregates: Option<Vec<String>>,
    at: Option<String>,
    interp: Option<String>,
    tags: Vec<TagIn>,
    #[serde(default)]
    warnings: Vec<String>,
}

#[derive(Deserialize)]
struct TagIn {
    tag: String,
    points: Option<Vec<PointIn>>,
    next: Option<String>,
    rows: Option<Vec<BTreeMap<String, serde_json::Value>>>,
    point: Option<PointIn>,
}

/// A point is a `core::wire::SampleIn`.
type PointIn = SampleIn;

fn rfc3339(s: &str) -> Result<Timestamp, String> {
    parse_ts(s)
}

fn field<'a>(v: &'a Option<String>, name: &str) -> Result<&'a str, String> {
    v.as_deref()
        .ok_or_else(|| format!("the answer has no {name:?}"))
}

fn point_from(p: PointIn) -> Result<Point, String> {
    Ok(Point {
        ts: p.ts()?,
        quality: p.quality()?,
        value: p.value.0,
    })
}

/// Reads a body produced by [`render_json`] back into a [`HistoryResult`].
pub fn parse_json(text: &str) -> Result<HistoryResult, String> {
    let b: BodyIn = serde_json::from_str(text).map_err(|e| format!("not a history answer: {e}"))?;
    let tags_paths = b
        .tags
        .iter()
        .map(|t| TagPath::parse(&t.tag).map_err(|e| format!("tag {:?}: {e}", t.tag)))
        .collect::<Result<Vec<_>, _>>()?;
    let kind = match b.mode.as_str() {
        "raw" => QueryKind::Raw {
            from: rfc3339(field(&b.from, "from")?)?,
            to: rfc3339(field(&b.to, "to")?)?,
            limit: DEFAULT_LIMIT,
        },
        "aggregate" => QueryKind::Aggregate {
            from: rfc3339(field(&b.from, "from")?)?,
            to: rfc3339(field(&b.to, "to")?)?,
            interval: humantime::parse_duration(field(&b.interval, "interval")?)
                .map_err(|e| format!("bad interval: {e}"))?,
            aggs: b
                .aggregates
                .as_deref()
                .unwrap_or_default()
                .iter()
                .map(|a| Aggregate::parse(a).ok_or_else(|| format!("unknown aggregate {a:?}")))
                .collect::<Result<_, _>>()?,
        },
        "at" => QueryKind::At {
            at: rfc3339(field(&b.at, "at")?)?,
            interp: match b.interp.as_deref() {
                Some("linear") => Interpolation::Linear,
                _ => Interpolation::Previous,
            },
        },
        other => return Err(format!("unknown mode {other:?}")),
    };
    let mut tags = Vec::with_capacity(b.tags.len());
    for (t, tag) in b.tags.into_iter().zip(&tags_paths) {
        let data = match &kind {
            QueryKind::Raw { .. } => TagData::Raw {
                points: t
                    .points
                    .unwrap_or_default()
                    .into_iter()
                    .map(point_from)
                    .collect::<Result<_, _>>()?,
                next: t.next.as_deref().map(rfc3339).transpose()?,
            },
            QueryKind::At { .. } => TagData::At {
                point: t.point.map(point_from).transpose()?,
            },
            QueryKind::Aggregate { aggs, .. } => {
                let mut rows = Vec::new();
                for m in t.rows.unwrap_or_default() {
                    let start = m
                        .get("start")
                        .and_then(|v| v.as_str())
                        .ok_or("a row has no start")?;
                    let count = |k: &str| m.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0);
                    rows.push(Row {
                        start: rfc3339(start)?,
                        values: aggs
                            .iter()
                            .map(|a| m.get(a.as_str()).and_then(serde_json::Value::as_f64))
                            .collect(),
                        good: count("good"),
                        bad: count("bad"),
                    });
                }
                TagData::Aggregate { rows }
            }
        };
        tags.push(TagResult {
            tag: tag.clone(),
            data,
        });
    }
    Ok(HistoryResult {
        query: HistoryQuery {
            tags: tags_paths,
            kind,
        },
        tags,
        warnings: b.warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ironplant_core::{Quality, QualityReason};

    const NOW: Timestamp = Timestamp(1_795_000_000_000_000);

    fn pairs(q: &str) -> Vec<(String, String)> {
        q.split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    #[test]
    fn times_absolute_with_offsets_and_relative() {
        let t = |s| parse_time(s, NOW);
        assert_eq!(t("1970-01-01T00:00:01Z"), Ok(Timestamp(1_000_000)));
        assert_eq!(t("1970-01-01T00:00:01.5Z"), Ok(Timestamp(1_500_000)));
        assert_eq!(t("1970-01-01T01:00:01+01:00"), Ok(Timestamp(1_000_000)));
        assert_eq!(t("1970-01-01T01:00:01 01:00"), Ok(Timestamp(1_000_000)));
        assert_eq!(t("1970-01-01T00:00:01-00:30"), Ok(Timestamp(1_801_000_000)));
        assert_eq!(t("now"), Ok(NOW));
        assert_eq!(t("now-1h"), Ok(Timestamp(NOW.0 - 3_600_000_000)));
        assert_eq!(t("-15m"), Ok(Timestamp(NOW.0 - 900_000_000)));
        assert_eq!(t("now+2d"), Ok(Timestamp(NOW.0 + 172_800_000_000)));
        assert!(t("yesterday").is_err());
        assert!(t("now-1parsec").is_err());
        assert!(t("2026-13-01T00:00:00Z").is_err());
    }

    #[test]
    fn rfc3339_round_trips_through_the_parser() {
        let ts = Timestamp(1_795_000_000_123_456);
        assert_eq!(parse_time(&ts.to_rfc3339(), NOW), Ok(ts));
    }

    #[test]
    fn defaults_are_the_last_hour_raw_avg_previous() {
        let (q, f) = HistoryQuery::parse(&pairs("tag=a/b&tag=c,a/b"), NOW).expect("valid");
        assert_eq!(f, Format::Json);
        assert_eq!(q.tags.len(), 2, "duplicates dropped, commas split");
        assert_eq!(
            q.kind,
            QueryKind::Raw {
                from: Timestamp(NOW.0 - 3_600_000_000),
                to: NOW,
                limit: DEFAULT_LIMIT
            }
        );
        let (q, _) = HistoryQuery::parse(&pairs("tag=a&interval=1m"), NOW).expect("valid");
        assert!(
            matches!(q.kind, QueryKind::Aggregate { ref aggs, .. } if aggs == &[Aggregate::Avg])
        );
        let (q, _) = HistoryQuery::parse(&pairs("tag=a&at=now"), NOW).expect("valid");
        assert_eq!(
            q.kind,
            QueryKind::At {
                at: NOW,
                interp: Interpolation::Previous
            }
        );
    }

    #[test]
    fn to_params_parses_back_to_the_same_query() {
        for s in [
            "tag=a/b&tag=c&from=-2h&to=now-1h&limit=7",
            "tag=a&from=-2h&interval=90s&agg=max,count",
            "tag=a&at=-5m&interp=linear",
        ] {
            let (q, _) = HistoryQuery::parse(&pairs(s), NOW).expect(s);
            let (back, _) = HistoryQuery::parse(&q.to_params(), Timestamp(0)).expect(s);
            assert_eq!(back, q, "{s}");
        }
    }

    #[test]
    fn parameter_errors_name_the_parameter() {
        let err = |s: &str| {
            let e = HistoryQuery::parse(&pairs(s), NOW).expect_err(s);
            (e.code(), e.message().to_owned())
        };
        assert_eq!(err("from=-1h").0, "bad_request");
        assert!(err("from=-1h").1.contains("no tag"));
        let (code, msg) = err("tag=a&from=soon");
        assert_eq!(code, "bad_request");
        assert!(
            msg.contains("from=\"soon\"") && msg.contains("RFC 3339"),
            "{msg}"
        );
        assert_eq!(err("tag=a&from=now&to=-1h").0, "bad_range");
        assert_eq!(err("tag=a&limit=100001").0, "limit_too_large");
        assert_eq!(err("tag=a&limit=ten").0, "bad_request");
        assert_eq!(err("tag=a&interval=fast").0, "bad_interval");
        let (code, msg) = err("tag=a&interval=1m&agg=median");
        assert_eq!(code, "bad_request");
        assert!(msg.contains("median") && msg.contains("stddev"), "{msg}");
        assert_eq!(err("tag=a&interp=cubic&at=now").0, "bad_request");
        assert_eq!(err("tag=a&at=now&from=-1h").0, "bad_request");
        assert_eq!(err("tag=a&agg=avg").0, "bad_request");
        assert_eq!(err("tag=a&form=-1h").0, "bad_request");
        assert_eq!(err("tag=a&from=-1h&from=-2h").0, "bad_request");
        assert_eq!(err("tag=a//b").0, "invalid_path");
        assert_eq!(err("tag=a&format=xml").0, "bad_request");
        // Tags share one call's budget.
        let (code, msg) = err("tag=a&tag=b&limit=60000");
        assert_eq!(code, "limit_too_large");
        assert!(msg.contains("limit=50000"), "{msg}");
        let (code, msg) = err("tag=a&tag=b&from=-1d&interval=1s");
        assert_eq!(code, "too_many_intervals");
        assert!(msg.contains("172800 intervals"), "{msg}");
        let many: String = (0..=MAX_TAGS).map(|i| format!("tag=t{i}&")).collect();
        assert_eq!(err(&many).0, "bad_request");
        let tags: String = (0..MAX_TAGS).map(|i| format!("tag=t{i}&")).collect();
        let (q, _) = HistoryQuery::parse(&pairs(&tags), NOW).expect("100 tags are fine");
        assert!(
            matches!(q.kind, QueryKind::Raw { limit: 1000, .. }),
            "{:?}",
            q.kind
        );
    }

    fn sample_result() -> HistoryResult {
        let tag = TagPath::parse("a/b").expect("valid");
        HistoryResult {
            query: HistoryQuery {
                tags: vec![tag.clone()],
                kind: QueryKind::Raw {
                    from: Timestamp(0),
                    to: Timestamp(10_000_000),
                    limit: 2,
                },
            },
            tags: vec![TagResult {
                tag,
                data: TagData::Raw {
                    points: vec![
                        Point {
                            ts: Timestamp(1_000_000),
                            value: Value::Float(1.5),
                            quality: Quality::GOOD,
                        },
                        Point {
                            ts: Timestamp(2_000_000),
                            value: Value::String("a,\"b\"".into()),
                            quality: Quality::bad(QualityReason::CommFailure),
                        },
                        Point {
                            ts: Timestamp(3_000_000),
                            value: Value::Float(f64::NAN),
                            quality: Quality::GOOD,
                        },
                        Point {
                            ts: Timestamp(4_000_000),
                            value: Value::Int(7),
                            quality: Quality::GOOD,
                        },
                    ],
                    next: Some(Timestamp(5_000_000)),
                },
            }],
            warnings: vec!["chunk x is corrupt".to_owned()],
        }
    }

    #[test]
    fn raw_json_and_csv_shapes() {
        let r = sample_result();
        let json = render_json(&r);
        assert_eq!(
            json,
            concat!(
                r#"{"mode":"raw","from":"1970-01-01T00:00:00.000000Z","to":"1970-01-01T00:00:10.000000Z","tags":[{"tag":"a/b","points":["#,
                r#"{"value":1.5,"quality":"Good","quality_reason":null,"ts":"1970-01-01T00:00:01.000000Z"},"#,
                r#"{"value":"a,\"b\"","quality":"Bad","quality_reason":"CommFailure","ts":"1970-01-01T00:00:02.000000Z"},"#,
                r#"{"value":null,"quality":"Good","quality_reason":null,"ts":"1970-01-01T00:00:03.000000Z"},"#,
                r#"{"value":7,"quality":"Good","quality_reason":null,"ts":"1970-01-01T00:00:04.000000Z"}],"#,
                r#""next":"1970-01-01T00:00:05.000000Z"}],"warnings":["chunk x is corrupt"]}"#
            )
        );
        assert_eq!(
            render_csv(&r),
            "tag,ts,value,quality\n\
             a/b,1970-01-01T00:00:01.000000Z,1.5,Good\n\
             a/b,1970-01-01T00:00:02.000000Z,\"a,\"\"b\"\"\",Bad(CommFailure)\n\
             a/b,1970-01-01T00:00:03.000000Z,,Good\n\
             a/b,1970-01-01T00:00:04.000000Z,7,Good\n"
        );
        // Reading the JSON back gives the same result (NaN became null on the way).
        let back = parse_json(&json).expect("parses");
        let mut expected = r.clone();
        if let TagData::Raw { points, .. } = &mut expected.tags[0].data {
            points[2].value = Value::Null;
        }
        if let QueryKind::Raw { limit, .. } = &mut expected.query.kind {
            *limit = DEFAULT_LIMIT;
        }
        assert_eq!(back, expected);
    }

    #[test]
    fn arrays_and_datasets_in_json_and_csv() {
        use ironplant_core::{Array, DataSet, ScalarType};
        let mut r = sample_result();
        let values = vec![
            Value::array(Array::from_floats(vec![1.5, -2.0]).expect("small")),
            Value::array(Array::from_u64s(vec![1, u64::MAX]).expect("small")),
            Value::array(Array::from_strings(vec!["x,\"y".into()]).expect("small")),
            Value::dataset(
                DataSet::new(
                    vec!["n".into(), "ok".into()],
                    vec![ScalarType::Int, ScalarType::Bool],
                    vec![vec![Value::Int(3), Value::Null]],
                )
                .expect("valid"),
            ),
        ];
        if let TagData::Raw { points, .. } = &mut r.tags[0].data {
            for (p, v) in points.iter_mut().zip(&values) {
                p.value = v.clone();
            }
        }
        let json = render_json(&r);
        assert!(
            json.contains(r#""value":[1.5,-2.0],"#)
                && json.contains(r#""value":[1,18446744073709551615],"#)
                && json.contains(
                    r#""value":{"columns":["n","ok"],"types":["int","bool"],"rows":[[3,null]]},"#
                ),
            "{json}"
        );
        assert_eq!(
            render_csv(&r),
            "tag,ts,value,quality\n\
             a/b,1970-01-01T00:00:01.000000Z,\"[1.5,-2.0]\",Good\n\
             a/b,1970-01-01T00:00:02.000000Z,\"[1,18446744073709551615]\",Bad(CommFailure)\n\
             a/b,1970-01-01T00:00:03.000000Z,\"[\"\"x,\\\"\"y\"\"]\",Good\n\
             a/b,1970-01-01T00:00:04.000000Z,\"{\"\"columns\"\":[\"\"n\"\",\"\"ok\"\"],\"\"types\"\":[\"\"int\"\",\"\"bool\"\"],\"\"rows\"\":[[3,null]]}\",Good\n"
        );
        // The JSON reads back to the same values.
        let back = parse_json(&json).expect("parses");
        let TagData::Raw { points, .. } = &back.tags[0].data else {
            panic!("raw");
        };
        let got: Vec<Value> = points.iter().map(|p| p.value.clone()).collect();
        assert_eq!(got, values);
        // NaN elements come back as NaN, an empty array as array<float>, and mixed arrays are
        // refused with a reason (the wire format's reader, `core::wire::ValueIn`).
        let value_from = |j: serde_json::Value| {
            serde_json::from_value::<ironplant_core::wire::ValueIn>(j)
                .map(|v| v.0)
                .map_err(|e| e.to_string())
        };
        let nan = value_from(serde_json::json!([1.0, null])).expect("valid");
        let Value::Array(a) = &nan else {
            panic!("array");
        };
        assert!(matches!(a.get(1), Some(Value::Float(f)) if f.is_nan()));
        assert_eq!(
            value_from(serde_json::json!([])).map(|v| v.value_type()),
            Ok(Some(ironplant_core::ValueType::Array(ScalarType::Float)))
        );
        assert!(value_from(serde_json::json!([1, "a"]))
            .expect_err("mixed")
            .contains("not all scalars of one type"));
        assert!(value_from(
            serde_json::json!({"columns": ["a"], "types": ["int"], "rows": [["x"]]})
        )
        .expect_err("a string in an int column")
        .contains("column \"a\""));
        assert!(
            value_from(serde_json::json!({"columns": ["a"], "rows": []}))
                .expect_err("no types")
                .contains("columns, types and rows")
        );
    }

    #[test]
    fn aggregate_json_and_csv_shapes() {
        let tag = TagPath::parse("a").expect("valid");
        let r = HistoryResult {
            query: HistoryQuery {
                tags: vec![tag.clone()],
                kind: QueryKind::Aggregate {
                    from: Timestamp(0),
                    to: Timestamp(120_000_000),
                    interval: Duration::from_secs(60),
                    aggs: vec![Aggregate::Avg, Aggregate::Count],
                },
            },
            tags: vec![TagResult {
                tag,
                data: TagData::Aggregate {
                    rows: vec![
                        Row {
                            start: Timestamp(0),
                            values: vec![Some(2.5), Some(4.0)],
                            good: 4,
                            bad: 1,
                        },
                        Row {
                            start: Timestamp(60_000_000),
                            values: vec![None, Some(0.0)],
                            good: 0,
                            bad: 0,
                        },
                    ],
                },
            }],
            warnings: vec![],
        };
        let json = render_json(&r);
        assert_eq!(
            json,
            concat!(
                r#"{"mode":"aggregate","from":"1970-01-01T00:00:00.000000Z","to":"1970-01-01T00:02:00.000000Z","interval":"1m","aggregates":["avg","count"],"tags":[{"tag":"a","rows":["#,
                r#"{"start":"1970-01-01T00:00:00.000000Z","avg":2.5,"count":4,"good":4,"bad":1},"#,
                r#"{"start":"1970-01-01T00:01:00.000000Z","avg":null,"count":0,"good":0,"bad":0}]}],"warnings":[]}"#
            )
        );
        assert_eq!(
            render_csv(&r),
            "tag,start,avg,count,good,bad\n\
             a,1970-01-01T00:00:00.000000Z,2.5,4,4,1\n\
             a,1970-01-01T00:01:00.000000Z,,0,0,0\n"
        );
        assert_eq!(parse_json(&json).expect("parses"), r);
    }
}
