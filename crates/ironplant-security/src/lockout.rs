//! Login throttling: a sans-IO state machine counting failures per user name and per source
//! address, locking either out for a while once it reaches its limit. Time is passed in.
//!
//! Unknown user names are counted exactly like known ones, so the answers (and their timing,
//! see [`crate::users`]) do not reveal whether an account exists.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

/// How many failures lock out, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockoutPolicy {
    /// Failures of one user name (from anywhere) within `window` before it is locked.
    pub max_user_failures: u32,
    /// Failures from one source address (any user name) within `window` before it is locked.
    /// Higher than the per-user limit: several people may share a NAT address.
    pub max_address_failures: u32,
    /// Failures older than this are forgotten.
    pub window: Duration,
    /// How long a lockout lasts. It is time-based: it ends by itself.
    pub lockout: Duration,
    /// Bound on the user names and addresses tracked at once, so random names cannot exhaust
    /// memory. When full, entries neither locked nor in their window are dropped first; new
    /// user names beyond the bound are then only limited through their address.
    pub max_tracked: usize,
}

impl Default for LockoutPolicy {
    fn default() -> Self {
        LockoutPolicy {
            max_user_failures: 5,
            max_address_failures: 20,
            window: Duration::from_secs(15 * 60),
            lockout: Duration::from_secs(15 * 60),
            max_tracked: 10_000,
        }
    }
}

/// What was locked when a failure reached a limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockedSubject {
    User(String),
    Address(IpAddr),
}

#[derive(Debug, Clone, Copy)]
struct Counter {
    failures: u32,
    window_start: SystemTime,
    locked_until: Option<SystemTime>,
}

impl Counter {
    fn locked(&self, now: SystemTime) -> Option<SystemTime> {
        self.locked_until.filter(|&u| now < u)
    }
    fn stale(&self, now: SystemTime, p: &LockoutPolicy) -> bool {
        self.locked(now).is_none()
            && now
                .duration_since(self.window_start)
                .is_ok_and(|d| d >= p.window)
    }
    /// Counts one failure; returns the end of a lockout that this failure starts.
    fn fail(&mut self, now: SystemTime, max: u32, p: &LockoutPolicy) -> Option<SystemTime> {
        if self.stale(now, p) {
            *self = Counter::new(now);
        }
        self.failures = self.failures.saturating_add(1);
        if self.failures >= max && self.locked(now).is_none() {
            let until = now + p.lockout;
            self.locked_until = Some(until);
            // After the lockout the count starts again from zero.
            self.failures = 0;
            self.window_start = until;
            return Some(until);
        }
        None
    }
    fn new(now: SystemTime) -> Counter {
        Counter {
            failures: 0,
            window_start: now,
            locked_until: None,
        }
    }
}

#[derive(Debug, Default)]
pub struct Throttle {
    policy: LockoutPolicy,
    users: HashMap<String, Counter>,
    addresses: HashMap<IpAddr, Counter>,
}

impl Throttle {
    pub fn new(policy: LockoutPolicy) -> Self {
        Throttle {
            policy,
            users: HashMap::new(),
            addresses: HashMap::new(),
        }
    }

    pub fn policy(&self) -> &LockoutPolicy {
        &self.policy
    }

    /// `Err(until)` when the user name or the address is locked now (the later end if both).
    pub fn check(&self, user: &str, source: IpAddr, now: SystemTime) -> Result<(), SystemTime> {
        let u = self.users.get(user).and_then(|c| c.locked(now));
        let a = self.addresses.get(&source).and_then(|c| c.locked(now));
        match (u, a) {
            (None, None) => Ok(()),
            (Some(x), None) | (None, Some(x)) => Err(x),
            (Some(x), Some(y)) => Err(x.max(y)),
        }
    }

    /// Counts a failed attempt; returns the lockouts it started.
    pub fn record_failure(
        &mut self,
        user: &str,
        source: IpAddr,
        now: SystemTime,
    ) -> Vec<(LockedSubject, SystemTime)> {
        let p = self.policy;
        self.evict(now);
        let mut started = Vec::new();
        if let Some(c) = self.addresses.get_mut(&source) {
            if let Some(until) = c.fail(now, p.max_address_failures, &p) {
                started.push((LockedSubject::Address(source), until));
            }
        } else if self.addresses.len() < p.max_tracked {
            let mut c = Counter::new(now);
            if let Some(until) = c.fail(now, p.max_address_failures, &p) {
                started.push((LockedSubject::Address(source), until));
            }
            self.addresses.insert(source, c);
        }
        if let Some(c) = self.users.get_mut(user) {
            if let Some(until) = c.fail(now, p.max_user_failures, &p) {
                started.push((LockedSubject::User(user.to_owned()), until));
            }
        } else if self.users.len() < p.max_tracked {
            let mut c = Counter::new(now);
            if let Some(until) = c.fail(now, p.max_user_failures, &p) {
                started.push((LockedSubject::User(user.to_owned()), until));
            }
            self.users.insert(user.to_owned(), c);
        }
        started
    }

    /// A successful login clears the user's failures. The address's failures stay: one valid
    /// account must not let an address go on guessing others' passwords.
    pub fn record_success(&mut self, user: &str) {
        self.users.remove(user);
    }

    fn evict(&mut self, now: SystemTime) {
        let p = self.policy;
        if self.users.len() >= p.max_tracked {
            self.users.retain(|_, c| !c.stale(now, &p));
        }
        if self.addresses.len() >= p.max_tracked {
            self.addresses.retain(|_, c| !c.stale(now, &p));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use std::time::UNIX_EPOCH;

    const A: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));

    fn policy() -> LockoutPolicy {
        LockoutPolicy {
            max_user_failures: 3,
            max_address_failures: 5,
            window: Duration::from_secs(60),
            lockout: Duration::from_secs(300),
            max_tracked: 100,
        }
    }

    #[test]
    fn user_locks_after_n_failures_and_unlocks_after_the_lockout() {
        let mut t = Throttle::new(policy());
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert!(t.record_failure("alice", A, t0).is_empty());
        assert!(t.record_failure("alice", B, t0).is_empty());
        assert_eq!(t.check("alice", A, t0), Ok(()));
        let started = t.record_failure("alice", A, t0 + Duration::from_secs(1));
        let until = t0 + Duration::from_secs(301);
        assert_eq!(started, vec![(LockedSubject::User("alice".into()), until)]);
        // Locked from any address, other users unaffected.
        assert_eq!(t.check("alice", B, t0 + Duration::from_secs(2)), Err(until));
        assert_eq!(t.check("bob", B, t0 + Duration::from_secs(2)), Ok(()));
        // One second before the end still locked; at the end free.
        assert_eq!(
            t.check("alice", A, until - Duration::from_secs(1)),
            Err(until)
        );
        assert_eq!(t.check("alice", A, until), Ok(()));
        // And counting starts again from zero.
        assert!(t.record_failure("alice", B, until).is_empty());
        assert_eq!(t.check("alice", B, until), Ok(()));
    }

    #[test]
    fn failures_outside_the_window_are_forgotten() {
        let mut t = Throttle::new(policy());
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000);
        t.record_failure("alice", A, t0);
        t.record_failure("alice", A, t0 + Duration::from_secs(30));
        // The window (60 s from the first failure) has passed: this is failure 1 again.
        assert!(t
            .record_failure("alice", A, t0 + Duration::from_secs(61))
            .is_empty());
        assert_eq!(t.check("alice", A, t0 + Duration::from_secs(61)), Ok(()));
    }

    #[test]
    fn address_locks_across_user_names() {
        let mut t = Throttle::new(policy());
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000);
        for i in 0..4 {
            assert!(t.record_failure(&format!("user{i}"), A, t0).is_empty());
        }
        let started = t.record_failure("user4", A, t0);
        assert_eq!(
            started,
            vec![(LockedSubject::Address(A), t0 + Duration::from_secs(300))]
        );
        assert!(t.check("someone-else", A, t0).is_err());
        assert_eq!(t.check("someone-else", B, t0), Ok(()));
    }

    #[test]
    fn success_clears_the_user_but_not_the_address() {
        let mut t = Throttle::new(policy());
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000);
        t.record_failure("alice", A, t0);
        t.record_failure("alice", A, t0);
        t.record_success("alice");
        assert!(t.record_failure("alice", A, t0).is_empty());
        t.record_failure("bob", A, t0);
        // Five failures from A in all: the address is locked although alice logged in.
        let started = t.record_failure("carol", A, t0);
        assert!(started.contains(&(LockedSubject::Address(A), t0 + Duration::from_secs(300))));
    }

    #[test]
    fn tracking_is_bounded() {
        let mut t = Throttle::new(LockoutPolicy {
            max_tracked: 10,
            ..policy()
        });
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000);
        for i in 0..1000 {
            t.record_failure(&format!("random{i}"), B, t0);
        }
        assert!(t.users.len() <= 10);
        assert!(t.addresses.len() <= 10);
    }
}
