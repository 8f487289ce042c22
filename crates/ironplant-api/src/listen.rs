//! Serving the router on a listener, with the limits that keep outsiders from holding what
//! legitimate clients need (`[http]` in the config): a TLS handshake timeout, hyper's
//! request-header timeout (which also ends a kept-alive connection that sends no next
//! request), an idle timeout (no byte either way: a slowly sent body, an unread response),
//! and connection limits in total and per source address, with a share of the total that only
//! reserved addresses (loopback by default) may use, so an administrator on the host can still
//! log in while the rest is taken. Request bodies are limited by the router ([`crate::router`]).
//!
//! Every HTTP listener goes through [`serve`]: the API over HTTPS (the binary passes a TLS
//! handshake), the API over plain HTTP (`--insecure-http`), and the dedicated MQTT over
//! WebSocket listener. They share one [`Connections`], so the limits count all of them.
//!
//! Invariants:
//! - A connection is admitted (counted) before anything is read from it, and released when its
//!   task ends, whatever the reason; a refused one is closed at once, before any TLS work.
//! - Each refusal is counted; at most one audit record (and one warning) per source address
//!   per [`REPORT_INTERVAL`] says how many were refused since the last one.
//! - After an upgrade (WebSocket) the connection leaves hyper and these timeouts; MQTT's
//!   keep-alive governs it. It still counts against the limits until it closes (the slot is
//!   held by the stream, [`Tracked`]).

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::settings::HttpSettings;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use ironplant_security::{AuditEvent, Security};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// At most one audit record and warning per source address this often for refused
/// connections (the rest are counted, and the next record says how many).
pub const REPORT_INTERVAL: Duration = Duration::from_secs(60);

/// Addresses remembered for the report rate limit before old entries are dropped.
const REPORT_TABLE_MAX: usize = 4096;

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `max_connections` (or all but the reserved share, for an unreserved address).
    Total,
    /// `max_connections_per_address`.
    PerAddress,
}

impl Refusal {
    pub fn code(self) -> &'static str {
        match self {
            Refusal::Total => "too_many_connections",
            Refusal::PerAddress => "too_many_connections_from_address",
        }
    }
}

/// The admission rules, without I/O or clock: counts of open connections and when each
/// address was last reported. Time is a parameter.
#[derive(Debug)]
pub struct Admission {
    max: usize,
    per_address: usize,
    reserved: usize,
    reserved_for: Vec<IpAddr>,
    open: usize,
    by_address: HashMap<IpAddr, usize>,
    /// Per address: when its last refusal was reported, and refusals since.
    reports: HashMap<IpAddr, (Instant, u64)>,
}

/// What to do about a refusal: report it now (with how many were refused since the previous
/// report, this one included), or only count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Report {
    Now { refused: u64 },
    Later,
}

impl Admission {
    pub fn new(s: &HttpSettings) -> Admission {
        Admission {
            max: s.max_connections,
            per_address: s.max_connections_per_address,
            reserved: s.reserved_connections.min(s.max_connections),
            reserved_for: s.reserved_for.clone(),
            open: 0,
            by_address: HashMap::new(),
            reports: HashMap::new(),
        }
    }

    pub fn open(&self) -> usize {
        self.open
    }

    /// Admits a connection from `ip` (and counts it) or says why not. An IPv4 peer seen on a
    /// dual-stack socket (`::ffff:a.b.c.d`) counts as its IPv4 address.
    pub fn admit(&mut self, ip: IpAddr) -> Result<(), Refusal> {
        let ip = ip.to_canonical();
        let mine = self.by_address.get(&ip).copied().unwrap_or(0);
        if mine >= self.per_address {
            return Err(Refusal::PerAddress);
        }
        let ceiling = if self.reserved_for.contains(&ip) {
            self.max
        } else {
            self.max - self.reserved
        };
        if self.open >= ceiling {
            return Err(Refusal::Total);
        }
        self.open += 1;
        *self.by_address.entry(ip).or_insert(0) += 1;
        Ok(())
    }

    /// A connection from `ip` closed.
    pub fn release(&mut self, ip: IpAddr) {
        let ip = ip.to_canonical();
        if let Some(n) = self.by_address.get_mut(&ip) {
            self.open -= 1;
            *n -= 1;
            if *n == 0 {
                self.by_address.remove(&ip);
            }
        }
    }

    /// Whether the refusal of a connection from `ip` at `now` is reported now.
    pub fn report(&mut self, ip: IpAddr, now: Instant) -> Report {
        if self.reports.len() >= REPORT_TABLE_MAX && !self.reports.contains_key(&ip) {
            self.reports
                .retain(|_, (at, _)| now.saturating_duration_since(*at) < REPORT_INTERVAL);
        }
        match self.reports.get_mut(&ip) {
            Some((at, since)) if now.saturating_duration_since(*at) < REPORT_INTERVAL => {
                *since += 1;
                Report::Later
            }
            Some((at, since)) => {
                let refused = *since + 1;
                *at = now;
                *since = 0;
                Report::Now { refused }
            }
            None => {
                self.reports.insert(ip, (now, 0));
                Report::Now { refused: 1 }
            }
        }
    }
}

#[derive(Default)]
struct Counters {
    accepted: AtomicU64,
    refused_total: AtomicU64,
    refused_address: AtomicU64,
    handshake_timeouts: AtomicU64,
    handshake_failures: AtomicU64,
    header_timeouts: AtomicU64,
    idle_timeouts: AtomicU64,
    body_too_large: AtomicU64,
    unsupported_media_type: AtomicU64,
}

/// The connections of every HTTP listener: limits, counters for `/metrics`, and the audit log
/// for refusals. One per platform, shared by its listeners and the router.
pub struct Connections {
    settings: HttpSettings,
    admission: parking_lot::Mutex<Admission>,
    counters: Counters,
    security: Option<Arc<Security>>,
    /// The live WebSocket API's limits, counters and hub: its clients are long-lived
    /// connections of these listeners, and one hub serves every router of the platform.
    live: crate::live::Live,
}

impl std::fmt::Debug for Connections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connections")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Connections {
    pub fn new(settings: HttpSettings, security: Option<Arc<Security>>) -> Arc<Connections> {
        Arc::new(Connections {
            admission: parking_lot::Mutex::new(Admission::new(&settings)),
            live: crate::live::Live::new(settings.live.clone()),
            settings,
            counters: Counters::default(),
            security,
        })
    }

    /// The live WebSocket API ([`crate::live`]).
    pub fn live(&self) -> &crate::live::Live {
        &self.live
    }

    pub fn settings(&self) -> &HttpSettings {
        &self.settings
    }

    /// Open connections now.
    pub fn open(&self) -> usize {
        self.admission.lock().open()
    }

    /// Admits a connection from `peer` on `listener`, or counts, reports and refuses it.
    pub fn admit(self: &Arc<Self>, peer: SocketAddr, listener: &str) -> Option<Admitted> {
        let ip = peer.ip().to_canonical();
        let mut a = self.admission.lock();
        match a.admit(ip) {
            Ok(()) => {
                drop(a);
                self.counters.accepted.fetch_add(1, Ordering::Relaxed);
                Some(Admitted {
                    conns: self.clone(),
                    ip,
                })
            }
            Err(why) => {
                let report = a.report(ip, Instant::now());
                drop(a);
                let counter = match why {
                    Refusal::Total => &self.counters.refused_total,
                    Refusal::PerAddress => &self.counters.refused_address,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                if let Report::Now { refused } = report {
                    tracing::warn!(%ip, listener, reason = why.code(), refused, "HTTP connection refused: limit reached (see [http] in the config)");
                    if let Some(sec) = &self.security {
                        sec.audit.submit(AuditEvent::AclDenied {
                            principal: None,
                            client_id: format!("{listener}-listener"),
                            source: Some(ip.to_string()),
                            action: format!("http:{}", why.code()),
                            topic: format!("{refused} connection(s) refused since the last record"),
                        });
                    }
                }
                None
            }
        }
    }

    pub(crate) fn count_body_too_large(&self) {
        self.counters.body_too_large.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_unsupported_media_type(&self) {
        self.counters
            .unsupported_media_type
            .fetch_add(1, Ordering::Relaxed);
    }

    /// The counters in Prometheus text format, for `/metrics`.
    pub fn render(&self) -> String {
        let c = &self.counters;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let s = &self.settings;
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, lines: &[(&str, u64)]| {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
            for (labels, v) in lines {
                out.push_str(&format!("{name}{labels} {v}\n"));
            }
        };
        metric(
            "ironplant_http_connections_open",
            "gauge",
            "Open connections of the HTTP listeners.",
            &[("", self.open() as u64)],
        );
        metric(
            "ironplant_http_connections_max",
            "gauge",
            "Limits on HTTP connections ([http] in the config).",
            &[
                ("{scope=\"total\"}", s.max_connections as u64),
                (
                    "{scope=\"per_address\"}",
                    s.max_connections_per_address as u64,
                ),
                ("{scope=\"reserved\"}", s.reserved_connections as u64),
            ],
        );
        metric(
            "ironplant_http_connections_accepted_total",
            "counter",
            "HTTP connections admitted.",
            &[("", g(&c.accepted))],
        );
        metric(
            "ironplant_http_connections_refused_total",
            "counter",
            "HTTP connections refused by a limit.",
            &[
                ("{reason=\"total\"}", g(&c.refused_total)),
                ("{reason=\"per_address\"}", g(&c.refused_address)),
            ],
        );
        metric(
            "ironplant_http_connections_closed_total",
            "counter",
            "HTTP connections closed by the server for a timeout or a failed handshake.",
            &[
                ("{reason=\"handshake_timeout\"}", g(&c.handshake_timeouts)),
                ("{reason=\"handshake_failed\"}", g(&c.handshake_failures)),
                ("{reason=\"header_timeout\"}", g(&c.header_timeouts)),
                ("{reason=\"idle_timeout\"}", g(&c.idle_timeouts)),
            ],
        );
        metric(
            "ironplant_http_requests_refused_total",
            "counter",
            "HTTP requests refused before a handler read them.",
            &[
                ("{reason=\"body_too_large\"}", g(&c.body_too_large)),
                (
                    "{reason=\"unsupported_media_type\"}",
                    g(&c.unsupported_media_type),
                ),
            ],
        );
        out.push_str(&self.live.render());
        out
    }
}

/// An admitted connection: released when dropped.
pub struct Admitted {
    conns: Arc<Connections>,
    ip: IpAddr,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.conns.admission.lock().release(self.ip);
    }
}

/// When bytes last moved on a connection, in milliseconds since it was accepted.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn deadline(&self, idle: Duration) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed)) + idle
    }
}

/// A stream that records in [`Activity`] when bytes move, and holds its connection's slot:
/// the slot is released when the stream is dropped, which for an upgraded (WebSocket)
/// connection is when the WebSocket closes, not when hyper hands it over.
pub struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
    _admitted: Admitted,
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        res
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(res, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        res
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A plain-text listener: no handshake.
pub async fn plain(stream: Tracked<TcpStream>) -> io::Result<Tracked<TcpStream>> {
    Ok(stream)
}

/// Serves `router` on `listener` (named `name` in logs, metrics and the audit log) until
/// `shutdown` resolves, then lets open requests finish (WebSocket upgrades included, like
/// `axum::serve`). `handshake` turns an accepted TCP stream into the stream HTTP is spoken
/// on (TLS, or [`plain`]); it is bounded by `handshake_timeout`.
pub async fn serve<H, F, S>(
    listener: TcpListener,
    name: &'static str,
    handshake: H,
    router: axum::Router,
    conns: Arc<Connections>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()>
where
    H: Fn(Tracked<TcpStream>) -> F + Clone + Send + 'static,
    F: Future<Output = io::Result<S>> + Send,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(());
    let (open_tx, open_rx) = tokio::sync::watch::channel(());
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning; the listener stays up.
                    tracing::warn!(listener = name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Some(admitted) = conns.admit(peer, name) else {
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let handshake = handshake.clone();
        let router = router.clone();
        let conns = conns.clone();
        let mut stop = stop_rx.clone();
        let open = open_rx.clone();
        tokio::spawn(async move {
            let _open = open;
            let s = conns.settings();
            let activity = Arc::new(Activity {
                start: Instant::now(),
                last_ms: AtomicU64::new(0),
            });
            let tracked = Tracked {
                inner: tcp,
                activity: activity.clone(),
                _admitted: admitted,
            };
            let stream = match tokio::time::timeout(s.handshake_timeout, handshake(tracked)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    conns
                        .counters
                        .handshake_failures
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(listener = name, %peer, error = %e, "handshake refused");
                    return;
                }
                Err(_) => {
                    conns
                        .counters
                        .handshake_timeouts
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(listener = name, %peer, "handshake timed out");
                    return;
                }
            };
            // The peer address reaches handlers as axum's ConnectInfo, as with axum::serve.
            let svc = tower::ServiceExt::map_request(
                router,
                move |mut req: axum::http::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(ConnectInfo(peer));
                    req
                },
            );
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(s.header_read_timeout)
                .serve_connection(TokioIo::new(stream), TowerToHyperService::new(svc))
                .with_upgrades();
            tokio::pin!(conn);
            let idle = s.idle_timeout;
            loop {
                let deadline = tokio::time::Instant::from_std(activity.deadline(idle));
                tokio::select! {
                    res = conn.as_mut() => {
                        if let Err(e) = res {
                            if e.is_timeout() {
                                conns.counters.header_timeouts.fetch_add(1, Ordering::Relaxed);
                            }
                            tracing::debug!(listener = name, %peer, error = %e, "connection ended");
                        }
                        break;
                    }
                    _ = stop.changed() => {
                        conn.as_mut().graceful_shutdown();
                        let _ = conn.as_mut().await;
                        break;
                    }
                    () = tokio::time::sleep_until(deadline) => {
                        // Bytes may have moved since the deadline was computed.
                        if Instant::now() >= activity.deadline(idle) {
                            conns.counters.idle_timeouts.fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(listener = name, %peer, "idle connection closed");
                            break;
                        }
                    }
                }
            }
        });
    }
    drop(listener);
    drop(open_rx);
    let _ = stop_tx.send(());
    // Every connection task holds a receiver of `open`; they are all gone when it closes.
    open_tx.closed().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    fn settings() -> HttpSettings {
        HttpSettings {
            max_connections: 10,
            max_connections_per_address: 4,
            reserved_connections: 3,
            reserved_for: vec![ip("127.0.0.1")],
            ..HttpSettings::default()
        }
    }

    #[test]
    fn the_per_address_limit_bites_first_and_the_reserve_stays_for_reserved_addresses() {
        let mut a = Admission::new(&settings());
        for _ in 0..4 {
            a.admit(ip("10.0.0.1"))
                .expect("under the per-address limit");
        }
        assert_eq!(a.admit(ip("10.0.0.1")), Err(Refusal::PerAddress));
        for _ in 0..3 {
            a.admit(ip("10.0.0.2")).expect("another address");
        }
        // 7 open = 10 - 3 reserved: everyone but the reserved addresses is refused.
        assert_eq!(a.admit(ip("10.0.0.3")), Err(Refusal::Total));
        for _ in 0..3 {
            a.admit(ip("127.0.0.1")).expect("the reserve");
        }
        assert_eq!(a.admit(ip("127.0.0.1")), Err(Refusal::Total), "max is max");
        a.release(ip("10.0.0.1"));
        assert_eq!(a.admit(ip("10.0.0.3")), Err(Refusal::Total), "still 9 open");
        for _ in 0..3 {
            a.release(ip("127.0.0.1"));
        }
        a.admit(ip("10.0.0.3")).expect("6 open before");
        assert_eq!(a.open(), 7);
        for _ in 0..4 {
            a.release(ip("10.0.0.9")); // never admitted: changes nothing
        }
        assert_eq!(a.open(), 7);
        assert!(!a.by_address.contains_key(&ip("10.0.0.9")));
        // Loopback on a dual-stack listener is still the reserved 127.0.0.1.
        assert_eq!(a.admit(ip("::ffff:10.0.0.4")), Err(Refusal::Total));
        a.admit(ip("::ffff:127.0.0.1")).expect("reserved");
        assert_eq!(a.by_address.get(&ip("127.0.0.1")), Some(&1));
        a.release(ip("::ffff:127.0.0.1"));
        assert_eq!(a.open(), 7);
    }

    #[test]
    fn refusals_are_reported_once_a_minute_per_address_with_the_count() {
        let mut a = Admission::new(&settings());
        let t0 = Instant::now();
        let x = ip("10.0.0.1");
        assert_eq!(a.report(x, t0), Report::Now { refused: 1 });
        for i in 1..=5 {
            assert_eq!(a.report(x, t0 + Duration::from_secs(i)), Report::Later);
        }
        assert_eq!(
            a.report(ip("10.0.0.2"), t0 + Duration::from_secs(5)),
            Report::Now { refused: 1 },
            "per address"
        );
        assert_eq!(
            a.report(x, t0 + REPORT_INTERVAL),
            Report::Now { refused: 6 },
            "the five held back and this one"
        );
        assert_eq!(a.report(x, t0 + REPORT_INTERVAL), Report::Later);
    }
}
