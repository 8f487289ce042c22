//! Time enters the crate through a [`Clock`], so lockout windows, expiry and the audit
//! timestamps can be driven by tests without sleeping.

use std::fmt::Debug;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

pub trait Clock: Send + Sync + Debug + 'static {
    fn now(&self) -> SystemTime;
}

/// The wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that moves only when told to (tests, simulations).
#[derive(Debug)]
pub struct ManualClock(Mutex<SystemTime>);

impl ManualClock {
    pub fn new(start: SystemTime) -> Self {
        ManualClock(Mutex::new(start))
    }
    /// A clock at a fixed, recent instant (2026-01-01T00:00:00Z).
    pub fn at_2026() -> Self {
        Self::new(UNIX_EPOCH + Duration::from_secs(1_767_225_600))
    }
    pub fn advance(&self, by: Duration) {
        let mut t = self.0.lock();
        *t += by;
    }
    pub fn set(&self, to: SystemTime) {
        *self.0.lock() = to;
    }
    /// The current instant (same as [`Clock::now`], without importing the trait).
    pub fn now_for_test(&self) -> SystemTime {
        *self.0.lock()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        *self.0.lock()
    }
}

/// Seconds since the Unix epoch (0 for instants before it).
pub fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Microseconds since the Unix epoch (0 for instants before it).
pub fn unix_micros(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

pub fn from_unix_secs(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}
