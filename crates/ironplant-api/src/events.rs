//! `GET /api/v1/events?from=&to=&kind=&subject=&code=&limit=&after=&order=`: the historised
//! events (alarms, commands, security and system events), newest first by default, paged by
//! `next`, in the one wire format (`core::wire::EventJson`).
//!
//! Who sees what: the route needs `read_tags`. An event about a subject is shown only if the
//! caller may read that path (its tag scopes, by whole levels); an event without a subject
//! (the platform's own) only to callers whose reads are not limited by scopes. Security events
//! only to `read_audit` holders: asking for `kind=security` without it is 403, otherwise they
//! are left out silently.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use ironplant_core::wire::EventJson;
use ironplant_core::{EventKind, TagPath, Timestamp};
use ironplant_historian::events::{EventCursor, EventOrder, EventQuery, MAX_EVENTS};
use ironplant_security::Permission;
use serde::{Deserialize, Serialize};

use crate::auth::Caller;
use crate::history::{historian_error, parse_time};
use crate::{ApiError, ApiState};

/// Events a page holds when the request gives no `limit`.
pub const DEFAULT_LIMIT: usize = 100;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventParams {
    from: Option<String>,
    to: Option<String>,
    /// Comma-separated kinds: alarm, command, security, system, integrity.
    kind: Option<String>,
    subject: Option<String>,
    code: Option<String>,
    limit: Option<usize>,
    after: Option<String>,
    order: Option<String>,
}

fn bad(message: String) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
}

/// The store query for `p` (times relative to `now`).
fn parse(p: &EventParams, now: Timestamp) -> Result<EventQuery, ApiError> {
    let time = |name: &str, v: &Option<String>, default: Timestamp| match v {
        None => Ok(default),
        Some(v) => parse_time(v, now).map_err(|e| bad(format!("{name}={v:?}: {e}"))),
    };
    let mut q = EventQuery::new(
        time("from", &p.from, Timestamp(i64::MIN))?,
        time("to", &p.to, Timestamp(i64::MAX))?,
    );
    if q.from > q.to {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_range",
            format!("from {} is after to {}", q.from, q.to),
        ));
    }
    for k in p.kind.iter().flat_map(|k| k.split(',')).map(str::trim) {
        if k.is_empty() {
            continue;
        }
        let kind: EventKind = k.parse().map_err(|e| bad(format!("kind: {e}")))?;
        if !q.kinds.contains(&kind) {
            q.kinds.push(kind);
        }
    }
    if let Some(s) = &p.subject {
        let s = s.trim_end_matches('/');
        q.subject = Some(TagPath::parse(s).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_path",
                format!("subject={s:?} is not an asset or tag path: {e}"),
            )
        })?);
    }
    q.code = p.code.clone().filter(|c| !c.is_empty());
    q.limit = p.limit.unwrap_or(DEFAULT_LIMIT);
    if q.limit == 0 || q.limit > MAX_EVENTS {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "limit_too_large",
            format!(
                "limit={} is out of range; use 1 to {MAX_EVENTS} and page with `after`",
                q.limit
            ),
        ));
    }
    q.order = match p.order.as_deref() {
        None | Some("newest") => EventOrder::NewestFirst,
        Some("oldest") => EventOrder::OldestFirst,
        Some(o) => return Err(bad(format!("order={o:?}: use newest (default) or oldest"))),
    };
    q.after = p
        .after
        .as_deref()
        .map(|a| {
            a.parse::<EventCursor>()
                .map_err(|e| bad(format!("after: {e}")))
        })
        .transpose()?;
    Ok(q)
}

/// The HTTP handler of `GET /api/v1/events`.
pub(crate) async fn get_events(
    State(st): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    p: Result<Query<EventParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    caller.require(Permission::ReadTags)?;
    let Query(p) = p.map_err(|e| bad(format!("cannot read the query string: {e}")))?;
    let q = parse(&p, Timestamp::now())?;
    let audit = caller.allows(Permission::ReadAudit);
    if q.kinds.contains(&EventKind::Security) {
        caller.require(Permission::ReadAudit)?;
    }
    let h = st.runtime.historian.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "historian_disabled",
            "this platform runs without a historian, so events are not kept: start it with a data directory (--data-dir) and [historian] enabled = true",
        )
    })?;
    let access = caller.access.clone();
    let page = tokio::task::spawn_blocking(move || {
        let unlimited = access.reads_unlimited();
        h.events().query(&q, &|e| {
            (audit || e.kind != EventKind::Security)
                && match &e.subject {
                    Some(s) => access.can_read(s.as_str()),
                    None => unlimited,
                }
        })
    })
    .await
    .map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("the event query failed: {e}"),
        )
    })?
    .map_err(historian_error)?;
    #[derive(Serialize)]
    struct Body<'a> {
        count: usize,
        events: Vec<EventJson<'a>>,
        next: Option<String>,
        warnings: Vec<String>,
    }
    let body = Body {
        count: page.events.len(),
        events: page
            .events
            .iter()
            .map(|e| EventJson::new(&e.event))
            .collect(),
        next: page.next.map(|c| c.to_string()),
        warnings: page.warnings.clone(),
    };
    Ok(Json(body).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> EventParams {
        let qs: String = pairs
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&");
        let Query(p) = Query::<EventParams>::try_from_uri(
            &format!("/api/v1/events?{qs}").parse().expect("uri"),
        )
        .expect("params");
        p
    }

    #[test]
    fn parameters_are_checked_and_name_the_fix() {
        let now = Timestamp(10_000_000_000);
        let q = parse(&params(&[]), now).expect("defaults");
        assert_eq!((q.from, q.to), (Timestamp(i64::MIN), Timestamp(i64::MAX)));
        assert_eq!((q.limit, q.order), (DEFAULT_LIMIT, EventOrder::NewestFirst));
        let q = parse(
            &params(&[
                ("from", "now-1h"),
                ("kind", "alarm,command,alarm"),
                ("subject", "acme/lyon/"),
                ("order", "oldest"),
                ("after", "5-2"),
                ("code", "raised"),
            ]),
            now,
        )
        .expect("valid");
        assert_eq!(q.from, Timestamp(10_000_000_000 - 3_600_000_000));
        assert_eq!(q.kinds, [EventKind::Alarm, EventKind::Command]);
        assert_eq!(q.subject.as_ref().map(TagPath::as_str), Some("acme/lyon"));
        assert_eq!(q.after, Some(EventCursor { ts: 5, seq: 2 }));
        assert_eq!(q.code.as_deref(), Some("raised"));
        for (pairs, code, needle) in [
            (
                vec![("kind", "alarms")],
                "bad_request",
                "expected one of alarm",
            ),
            (vec![("subject", "a//b")], "invalid_path", "subject="),
            (vec![("limit", "0")], "limit_too_large", "use 1 to 10000"),
            (
                vec![("limit", "10001")],
                "limit_too_large",
                "use 1 to 10000",
            ),
            (
                vec![("order", "up")],
                "bad_request",
                "newest (default) or oldest",
            ),
            (vec![("after", "x")], "bad_request", "not an event cursor"),
            (
                vec![("from", "now"), ("to", "now-1h")],
                "bad_range",
                "is after",
            ),
            (vec![("from", "yesterday")], "bad_request", "from="),
        ] {
            let e = parse(&params(&pairs), now).expect_err("invalid");
            assert_eq!(e.code(), code, "{pairs:?}");
            assert!(e.message().contains(needle), "{pairs:?}: {}", e.message());
        }
    }
}
