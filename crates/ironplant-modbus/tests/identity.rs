//! Device identification (function 43/14) at every connection: a PLC that identifies itself is
//! reported to the observer, one that answers Illegal Function is polled as before and never
//! asked again.

mod support;

use std::sync::Arc;
use std::time::Duration;

use ironplant_core::{TagBus, Value};
use ironplant_modbus::ident::DeviceIdentity;
use ironplant_modbus::{DevicePoller, PollObserver, RegisterBank, UnitImage};
use parking_lot::Mutex;
use support::{device, one_point};
use tokio::net::TcpListener;

#[derive(Default)]
struct Seen(Mutex<Vec<DeviceIdentity>>);

impl PollObserver for Seen {
    fn request(&self, _: &str, _: Duration, _: bool) {}
    fn connection(&self, _: &str, _: bool) {}
    fn identity(&self, _: &str, identity: &DeviceIdentity) {
        self.0.lock().push(identity.clone());
    }
}

async fn poll_one(identity: Option<DeviceIdentity>) -> (Arc<Seen>, Value) {
    let mut image = UnitImage::new(8);
    image.holding[0] = 4242;
    image.identity = identity;
    let mut bank = RegisterBank::default();
    bank.units.insert(1, image);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(ironplant_modbus::serve(
        listener,
        Arc::new(Mutex::new(bank)),
    ));
    let bus = TagBus::new(1);
    let mut sub = bus.subscribe("test", 64, ironplant_core::Overflow::DropNewest);
    let seen = Arc::new(Seen::default());
    let _handle = DevicePoller {
        config: device(
            addr.to_string(),
            Duration::from_millis(50),
            Duration::from_secs(1),
        ),
        points: one_point(),
        bus: bus.clone(),
        observer: seen.clone(),
    }
    .spawn();
    // The first Good value: identification (if any) came before the first read.
    let value = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let batch = sub.recv().await.expect("bus open");
            if let Some(s) = batch.iter().find(|s| s.quality.is_good()) {
                return s.value.clone();
            }
        }
    })
    .await
    .expect("a Good value within 10 s");
    (seen, value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plc_that_identifies_itself_is_reported_before_the_first_read() {
    let id = DeviceIdentity {
        vendor: "Acme".into(),
        product_code: "PLC-9".into(),
        revision: "2.1".into(),
    };
    let (seen, value) = poll_one(Some(id.clone())).await;
    assert_eq!(value, Value::Int(4242));
    assert_eq!(*seen.0.lock(), [id]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plc_without_identification_is_polled_as_before() {
    let (seen, value) = poll_one(None).await;
    assert_eq!(value, Value::Int(4242));
    assert!(seen.0.lock().is_empty());
}
