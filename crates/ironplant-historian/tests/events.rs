//! The event store: filters, paging in both orders, durability across close and reopen,
//! retention, and a burst of 100,000 events in few commits.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use ironplant_core::{Event, EventKind, Severity, TagPath, Timestamp, Value};
use ironplant_historian::events::{
    EventCursor, EventOrder, EventQuery, EventStore, EventStoreConfig, MAX_EVENTS,
};
use ironplant_historian::HistorianError;

fn path(s: &str) -> TagPath {
    TagPath::parse(s).expect("valid path")
}

fn open(dir: &std::path::Path) -> EventStore {
    let mut cfg = EventStoreConfig::new(dir.join("events.redb"));
    cfg.keep = None;
    EventStore::open(cfg).expect("open the event store")
}

/// 1,000 events, one every second from t = 1,000 s: kinds cycle, subjects alternate between
/// two lines (and none every 5th), codes `c0`..`c2`.
fn fixture() -> Vec<Event> {
    (0..1000i64)
        .map(|i| {
            let kind = EventKind::ALL[(i % 5) as usize];
            let mut e = Event::new(
                Timestamp((1000 + i) * 1_000_000),
                kind,
                &format!("c{}", i % 3),
                "test",
                format!("event {i}"),
            )
            .with_attribute("i", Value::Int(i));
            if i % 5 != 4 {
                let line = if i % 2 == 0 { "line1" } else { "line10" };
                e = e
                    .with_subject(path(&format!("acme/lyon/{line}/filler/temp")))
                    .with_severity(Severity::Warning);
            }
            e
        })
        .collect()
}

fn index(e: &Event) -> i64 {
    match e.attribute("i") {
        Some(Value::Int(i)) => *i,
        other => panic!("event without its index: {other:?}"),
    }
}

fn all_time() -> EventQuery {
    EventQuery::new(Timestamp(i64::MIN), Timestamp(i64::MAX))
}

fn run(store: &EventStore, q: &EventQuery) -> Vec<i64> {
    let page = store.query(q, &|_| true).expect("query");
    assert!(page.warnings.is_empty(), "{:?}", page.warnings);
    page.events.iter().map(|e| index(&e.event)).collect()
}

/// Every page of `q`, following `next`.
fn pages(store: &EventStore, mut q: EventQuery, budget: usize) -> (Vec<i64>, usize) {
    let mut out = Vec::new();
    let mut n = 0;
    loop {
        let page = store
            .query_with_budget(&q, &|_| true, budget)
            .expect("page");
        n += 1;
        out.extend(page.events.iter().map(|e| index(&e.event)));
        match page.next {
            Some(c) => q.after = Some(c),
            None => return (out, n),
        }
        assert!(n < 10_000, "paging does not end");
    }
}

#[test]
fn filters_by_time_subject_kind_and_code() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let events = fixture();
    store
        .submit(events.clone())
        .expect("submit")
        .wait_blocking()
        .expect("durable");

    // Model: the same filters over the vector.
    let model = |f: &dyn Fn(&Event) -> bool, newest: bool| -> Vec<i64> {
        let mut v: Vec<i64> = events.iter().filter(|e| f(e)).map(index).collect();
        if newest {
            v.reverse();
        }
        v
    };

    let mut q = all_time();
    q.limit = MAX_EVENTS;
    assert_eq!(run(&store, &q), model(&|_| true, true));

    // Time range [from, to): from inclusive, to exclusive.
    q.from = Timestamp(1100 * 1_000_000);
    q.to = Timestamp(1200 * 1_000_000);
    q.order = EventOrder::OldestFirst;
    assert_eq!(run(&store, &q), (100..200).collect::<Vec<_>>());

    // Subject prefix: whole levels (line1 is not line10), at any depth, the subject itself too.
    let under = |p: &str| {
        let p = path(p);
        move |e: &Event| e.subject.as_ref().is_some_and(|s| s.is_under(&p))
    };
    for prefix in [
        "acme/lyon/line1",
        "acme/lyon/line10",
        "acme",
        "acme/lyon/line1/filler/temp",
        "acme/lyon/line",
    ] {
        let mut q = all_time();
        q.limit = MAX_EVENTS;
        q.subject = Some(path(prefix));
        let want = model(&under(prefix), true);
        assert_eq!(run(&store, &q), want, "subject {prefix}");
        if prefix == "acme/lyon/line" {
            assert!(want.is_empty());
        } else {
            assert!(!want.is_empty());
        }
    }

    // Kind (one: its index; two: a filtered scan), code, and all together.
    let mut q = all_time();
    q.limit = MAX_EVENTS;
    q.kinds = vec![EventKind::Security];
    assert_eq!(
        run(&store, &q),
        model(&|e| e.kind == EventKind::Security, true)
    );
    q.kinds = vec![EventKind::Security, EventKind::Alarm];
    assert_eq!(
        run(&store, &q),
        model(
            &|e| matches!(e.kind, EventKind::Security | EventKind::Alarm),
            true
        )
    );
    q.kinds = vec![EventKind::Alarm];
    q.code = Some("c1".into());
    q.subject = Some(path("acme/lyon/line1"));
    q.order = EventOrder::OldestFirst;
    let line1 = under("acme/lyon/line1");
    let want = model(
        &|e| e.kind == EventKind::Alarm && &*e.code == "c1" && line1(e),
        false,
    );
    assert!(!want.is_empty());
    assert_eq!(run(&store, &q), want);

    // The caller's own filter (what a user may see) applies too.
    let page = store
        .query(&all_time(), &|e| e.kind != EventKind::Security)
        .expect("query");
    assert!(page
        .events
        .iter()
        .all(|e| e.event.kind != EventKind::Security));
    assert_eq!(page.events.len(), 800);

    // Round trip of every field.
    let mut q = all_time();
    q.order = EventOrder::OldestFirst;
    q.limit = 1;
    let page = store.query(&q, &|_| true).expect("query");
    assert_eq!(page.events[0].event, events[0]);

    // Bounds.
    q.limit = MAX_EVENTS + 1;
    assert!(matches!(
        store.query(&q, &|_| true),
        Err(HistorianError::LimitTooLarge { .. })
    ));
    q.limit = 10;
    q.from = Timestamp(5);
    q.to = Timestamp(4);
    assert!(matches!(
        store.query(&q, &|_| true),
        Err(HistorianError::BadRange { .. })
    ));
    store.close();
}

#[test]
fn pages_cover_everything_once_in_both_orders() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let mut events = fixture();
    // Equal timestamps must not be split or repeated across pages.
    for e in events.iter_mut().skip(500).take(50) {
        e.ts = Timestamp(42);
    }
    store
        .submit(events.clone())
        .expect("submit")
        .wait_blocking()
        .expect("durable");
    for order in [EventOrder::OldestFirst, EventOrder::NewestFirst] {
        for (limit, budget) in [(7, usize::MAX), (1000, usize::MAX), (1000, 13), (3, 5)] {
            let mut q = all_time();
            q.order = order;
            q.limit = limit;
            let (got, n) = pages(&store, q.clone(), budget);
            let mut one = q.clone();
            one.limit = MAX_EVENTS;
            let want = run(&store, &one);
            assert_eq!(got, want, "{order:?} limit {limit} budget {budget}");
            assert_eq!(got.iter().collect::<BTreeSet<_>>().len(), 1000);
            assert!(n >= 1000 / limit.min(budget), "{n} pages");
        }
        // A selective filter with a small budget: pages may be empty but carry `next`.
        let mut q = all_time();
        q.order = order;
        q.subject = Some(path("acme/lyon/line10"));
        q.kinds = vec![EventKind::Command];
        let (got, n) = pages(&store, q.clone(), 20);
        q.limit = MAX_EVENTS;
        assert_eq!(got, run(&store, &q));
        assert!(n > 1);
    }
    // The last page says so: no `next`.
    let mut q = all_time();
    q.limit = 1000;
    assert_eq!(store.query(&q, &|_| true).expect("query").next, None);
    q.limit = 999;
    let page = store.query(&q, &|_| true).expect("query");
    let next: EventCursor = page.next.expect("one more");
    assert_eq!(next.to_string().parse::<EventCursor>(), Ok(next));
    store.close();
}

#[test]
fn acknowledged_events_survive_close_and_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let events = fixture();
    {
        let store = open(dir.path());
        for chunk in events.chunks(100) {
            store
                .submit(chunk.to_vec())
                .expect("submit")
                .wait_blocking()
                .expect("durable");
        }
        // Dropped without close: the writer thread ends when the last handle goes.
        drop(store);
    }
    // Wait for the first store's writer to release the file (redb refuses a second opener).
    let deadline = Instant::now() + Duration::from_secs(10);
    let store = loop {
        let mut cfg = EventStoreConfig::new(dir.path().join("events.redb"));
        cfg.keep = None;
        match EventStore::open(cfg) {
            Ok(s) => break s,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => panic!("reopen: {e}"),
        }
    };
    let mut q = all_time();
    q.order = EventOrder::OldestFirst;
    q.limit = MAX_EVENTS;
    assert_eq!(run(&store, &q), (0..1000).collect::<Vec<_>>());
    // Sequence numbers go on after a reopen: new events never collide with stored ones.
    store
        .submit(vec![events[0].clone()])
        .expect("submit")
        .wait_blocking()
        .expect("durable");
    let mut q = all_time();
    q.subject = Some(path("acme/lyon/line1/filler/temp"));
    q.kinds = vec![events[0].kind];
    q.code = Some(events[0].code.to_string());
    q.to = Timestamp(events[0].ts.0 + 1);
    let page = store.query(&q, &|_| true).expect("query");
    assert_eq!(page.events.len(), 2);
    assert_ne!(page.events[0].cursor, page.events[1].cursor);
    store.close();
    // A closed store says so.
    assert!(matches!(store.submit(vec![]), Err(HistorianError::Closed)));
}

#[test]
fn retention_deletes_old_events_and_their_index_entries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    store
        .submit(fixture())
        .expect("submit")
        .wait_blocking()
        .expect("durable");
    let cutoff = Timestamp(1600 * 1_000_000);
    assert_eq!(store.expire_before(cutoff).expect("expire"), 600);
    assert_eq!(store.stats().expired, 600);
    let mut q = all_time();
    q.limit = MAX_EVENTS;
    q.order = EventOrder::OldestFirst;
    assert_eq!(run(&store, &q), (600..1000).collect::<Vec<_>>());
    // The indexes hold nothing older either (a stale entry would be skipped silently, so ask
    // with a budget equal to what remains: a stale entry would use it up and leave `next`).
    q.subject = Some(path("acme"));
    let page = store.query_with_budget(&q, &|_| true, 320).expect("query");
    assert_eq!(page.events.len(), 320);
    assert_eq!(page.next, None);
    q.subject = None;
    q.kinds = vec![EventKind::Alarm];
    let page = store.query_with_budget(&q, &|_| true, 80).expect("query");
    assert_eq!(page.events.len(), 80);
    assert_eq!(page.next, None);
    store.close();

    // Retention by age at open: with keep = 1 day, events from 1970 are gone.
    let mut cfg = EventStoreConfig::new(dir.path().join("events.redb"));
    cfg.keep = Some(Duration::from_secs(86_400));
    let store = EventStore::open(cfg).expect("reopen");
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.stats().expired < 400 {
        assert!(Instant::now() < deadline, "retention did not run at open");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(run(&store, &all_time()).is_empty());
    store.close();
}

#[test]
fn a_burst_of_100k_events_is_stored_in_few_commits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let n = 100_000i64;
    let started = Instant::now();
    let mut acks = Vec::new();
    // As the runtime's sink does: batches of what arrived, no waiting in between.
    for chunk in 0..(n / 500) {
        let batch: Vec<Event> = (0..500)
            .map(|j| {
                let i = chunk * 500 + j;
                Event::new(
                    Timestamp(i),
                    EventKind::Alarm,
                    "raised",
                    "burst",
                    "high level",
                )
                .with_subject(path(&format!("acme/lyon/line{}/tank/level", i % 4)))
                .with_attribute("i", Value::Int(i))
            })
            .collect();
        acks.push(store.submit(batch).expect("submit"));
    }
    for a in acks {
        a.wait_blocking().expect("durable");
    }
    let took = started.elapsed();
    let stats = store.stats();
    assert_eq!(stats.stored, n as u64);
    assert!(
        stats.commits <= 200,
        "{} commits for {n} events: not group-committed",
        stats.commits
    );
    eprintln!(
        "100k events stored in {took:?} ({:.0} events/s), {} commits, {} bytes",
        n as f64 / took.as_secs_f64(),
        stats.commits,
        stats.file_bytes
    );
    // Everything is there, in order, and one line is a quarter of it.
    let mut q = all_time();
    q.order = EventOrder::OldestFirst;
    q.limit = MAX_EVENTS;
    let (got, _) = pages(&store, q.clone(), usize::MAX);
    assert_eq!(got, (0..n).collect::<Vec<_>>());
    q.subject = Some(path("acme/lyon/line2"));
    let (got, _) = pages(&store, q, usize::MAX);
    assert_eq!(got, (0..n).filter(|i| i % 4 == 2).collect::<Vec<_>>());
    store.close();
}
