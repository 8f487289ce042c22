//! A device that accepts TCP but never answers (a hung PLC, or one whose Modbus task died while
//! its TCP stack lives on). Real PLCs have a handful of connection slots: the poller must never
//! hold more than one connection to it, must back off while it stays silent, and must say why.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ironplant_core::{QualityReason, TagBus};
use ironplant_modbus::{DevicePoller, PollObserver};
use parking_lot::Mutex;
use support::{device, one_point};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::time::Instant;

/// What the fake device saw.
#[derive(Default)]
struct DeviceView {
    open: AtomicUsize,
    max_open: AtomicUsize,
    /// When each connection was accepted, relative to the start.
    accepted: Mutex<Vec<Duration>>,
}

/// Accepts every connection, reads (and discards) whatever arrives, never answers, and counts a
/// connection as closed only once its peer closed or reset it.
async fn silent_device(listener: TcpListener, view: Arc<DeviceView>, start: Instant) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            return;
        };
        view.accepted.lock().push(start.elapsed());
        let open = view.open.fetch_add(1, Ordering::SeqCst) + 1;
        view.max_open.fetch_max(open, Ordering::SeqCst);
        let view = view.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            while let Ok(n) = stream.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
            view.open.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

/// Records the reasons the poller gives for communication failures.
#[derive(Default)]
struct Reasons(Mutex<Vec<String>>);

impl PollObserver for Reasons {
    fn request(&self, _: &str, _: Duration, _: bool) {}
    fn connection(&self, _: &str, _: bool) {}
    fn comm_failure(&self, _: &str, why: &str) {
        self.0.lock().push(why.to_owned());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_device_gets_one_connection_at_a_time_and_exponential_back_off() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let view = Arc::new(DeviceView::default());
    let start = Instant::now();
    tokio::spawn(silent_device(listener, view.clone(), start));

    let bus = TagBus::new(1);
    let mut sub = bus.subscribe("test", 64, ironplant_core::Overflow::DropNewest);
    let reasons = Arc::new(Reasons::default());
    // Poll every 20 ms, give up on a request after 50 ms: without back-off that is a new
    // connection every ~70 ms, about 40 in the window below.
    let handle = DevicePoller {
        config: device(
            addr.to_string(),
            Duration::from_millis(20),
            Duration::from_millis(50),
        ),
        points: one_point(),
        bus: bus.clone(),
        observer: reasons.clone(),
    }
    .spawn();

    // The tag turns Bad(CommFailure) once the first request times out.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let batch = tokio::time::timeout_at(deadline, sub.recv())
            .await
            .expect("no Bad sample within 5 s")
            .expect("bus closed");
        if batch
            .iter()
            .any(|s| s.quality.reason == QualityReason::CommFailure)
        {
            break;
        }
    }

    // Observe the device for a fixed window from its first connection: this is the
    // measurement, not a synchronisation.
    let window = Duration::from_millis(3000);
    let first = view
        .accepted
        .lock()
        .first()
        .copied()
        .expect("a connection was accepted");
    tokio::time::sleep_until(start + first + window).await;
    drop(handle);

    let accepted: Vec<Duration> = view
        .accepted
        .lock()
        .iter()
        .map(|t| *t - first)
        .filter(|t| *t < window)
        .collect();
    let half = window / 2;
    let first_half = accepted.iter().filter(|t| **t < half).count();
    let second_half = accepted.len() - first_half;
    assert!(
        view.max_open.load(Ordering::SeqCst) <= 1,
        "the device saw {} connections open at once (accepts at {accepted:?})",
        view.max_open.load(Ordering::SeqCst)
    );
    // Back-off 100, 200, 400, 800, 1600 ms (plus 50 ms per timeout): 5 connects in 3 s.
    assert!(
        accepted.len() <= 10,
        "{} connections in {window:?}: no back-off on timeouts (accepts at {accepted:?})",
        accepted.len()
    );
    assert!(
        second_half < first_half,
        "connects must thin out over time: {first_half} then {second_half} (accepts at {accepted:?})"
    );

    let reasons = reasons.0.lock().clone();
    assert!(!reasons.is_empty(), "no failure was reported");
    // The first connection asks the device who it is (function 43/14), once for its life.
    assert_eq!(
        reasons[0], "no answer to device identification within 50ms (not asked again)",
        "all reasons: {reasons:?}"
    );
    for why in &reasons[1..] {
        assert_eq!(why, "no answer within 50ms", "all reasons: {reasons:?}");
    }
}

/// A device that hangs up on a request (its slots are full, or its server task restarts):
/// the reason given is that, not a stale OS error such as `EINPROGRESS`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_hangs_up_is_reported_as_closing_the_connection() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            // Take the request (so the close is a FIN, not a reset for unread data), then hang up.
            let mut buf = [0u8; 512];
            let _ = stream.read(&mut buf).await;
            drop(stream);
        }
    });
    let reasons = Arc::new(Reasons::default());
    let bus = TagBus::new(1);
    let handle = DevicePoller {
        config: device(
            addr.to_string(),
            Duration::from_millis(20),
            Duration::from_millis(500),
        ),
        points: one_point(),
        bus,
        observer: reasons.clone(),
    }
    .spawn();
    let deadline = Instant::now() + Duration::from_secs(5);
    while reasons.0.lock().is_empty() {
        assert!(Instant::now() < deadline, "no failure reported within 5 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(handle);
    let first = reasons.0.lock()[0].clone();
    assert_eq!(first, "the device closed the connection");
}

/// Nothing listens on the port: "connection refused", then back-off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_says_so() {
    // Bind and drop to get a port nobody listens on.
    let addr = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .local_addr()
        .expect("local addr");
    let reasons = Arc::new(Reasons::default());
    let handle = DevicePoller {
        config: device(
            addr.to_string(),
            Duration::from_millis(20),
            Duration::from_millis(500),
        ),
        points: one_point(),
        bus: TagBus::new(1),
        observer: reasons.clone(),
    }
    .spawn();
    let deadline = Instant::now() + Duration::from_secs(5);
    while reasons.0.lock().is_empty() {
        assert!(Instant::now() < deadline, "no failure reported within 5 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(handle);
    let first = reasons.0.lock()[0].clone();
    assert!(
        first.starts_with(&format!("connection refused by {addr}")),
        "{first}"
    );
}

/// Our sockets to `port` on 127.0.0.1, by local port and TCP state (Linux `/proc/net/tcp`),
/// except those in TIME_WAIT (a closed socket the kernel remembers, holding nothing).
fn sockets_to(port: u16) -> Vec<(u16, u8)> {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let local = f.nth(1)?;
            let remote = f.next()?;
            let state = u8::from_str_radix(f.next()?, 16).ok()?;
            let port_of = |a: &str| u16::from_str_radix(a.rsplit(':').next()?, 16).ok();
            (port_of(remote)? == port && state != 0x06).then_some((port_of(local)?, state))
        })
        .collect()
}

/// A device whose TCP stack no longer completes handshakes (its accept queue is full): every
/// connect times out, and none may leave a half-open socket behind while the next is tried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_connect_leaves_no_socket_behind() {
    // A listener that never accepts, its queue filled by two connections of ours: further SYNs
    // are dropped, so connects hang until our timeout.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind("127.0.0.1:0".parse().expect("addr"))
        .expect("bind");
    let listener = socket.listen(0).expect("listen");
    let addr = listener.local_addr().expect("local addr");
    let mut fillers = Vec::new();
    for _ in 0..3 {
        let connect = tokio::time::timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(addr),
        )
        .await;
        if let Ok(Ok(s)) = connect {
            fillers.push(s);
        }
    }
    let filler_ports: Vec<u16> = fillers
        .iter()
        .filter_map(|s| s.local_addr().ok().map(|a| a.port()))
        .collect();
    assert!(!fillers.is_empty(), "could not fill the accept queue");

    let reasons = Arc::new(Reasons::default());
    let handle = DevicePoller {
        config: device(
            addr.to_string(),
            Duration::from_millis(20),
            Duration::from_millis(50),
        ),
        points: one_point(),
        bus: TagBus::new(1),
        observer: reasons.clone(),
    }
    .spawn();
    // Sample our sockets to the device while the poller retries (the measurement window).
    let mut most = 0;
    let end = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < end {
        let ours = sockets_to(addr.port())
            .into_iter()
            .filter(|(local, _)| !filler_ports.contains(local))
            .count();
        most = most.max(ours);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    drop(handle);
    let reasons = reasons.0.lock().clone();
    assert!(
        reasons.len() >= 3,
        "expected several timed-out connects: {reasons:?}"
    );
    for why in &reasons {
        assert_eq!(why, "no answer to connect within 50ms", "{reasons:?}");
    }
    assert!(
        most <= 1,
        "{most} of our sockets to the device at once: a timed-out connect was left behind"
    );
    drop(listener);
}
