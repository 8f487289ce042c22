//! Login throttling: a sans-IO state machine counting failures per (user name, source
//! address), per source address and per user name, locking each out for a while once it
//! reaches its limit. Time is passed in.
//!
//! The limits are ordered so that an attacker's own address is throttled first: a user name
//! from one address locks after a few failures (only there), an address after some more
//! (for every name), and the user name everywhere only after failures from many addresses.
//! A locked attempt is not counted, so one address cannot push an account into the global
//! lockout by itself, and the owner logging in from elsewhere is not locked out by it.
//! An administrator can lift a user's lockout at once with [`Throttle::unlock`]
//! (`ironplant user unlock NAME`, see [`crate::users`]).
//!
//! Unknown user names are counted exactly like known ones, so the answers (and their timing,
//! see [`crate::users`]) do not reveal whether an account exists.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

/// How many failures lock out, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockoutPolicy {
    /// Failures of one user name from one source address within `window` before that name
    /// is locked for that address only. The lowest limit: it bites first.
    pub max_user_address_failures: u32,
    /// Failures from one source address (any user name) within `window` before it is locked.
    /// Above the per-(user, address) limit (several people may share a NAT address), below
    /// the per-user one.
    pub max_address_failures: u32,
    /// Failures of one user name from anywhere within `window` before it is locked for
    /// everyone. The highest limit: reaching it takes several addresses.
    pub max_user_failures: u32,
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
            max_user_address_failures: 5,
            max_address_failures: 20,
            max_user_failures: 50,
            window: Duration::from_secs(15 * 60),
            lockout: Duration::from_secs(15 * 60),
            max_tracked: 10_000,
        }
    }
}

/// What was locked when a failure reached a limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockedSubject {
    /// The user name, from every address.
    User(String),
    /// The user name, from this address only.
    UserAtAddress(String, IpAddr),
    /// Every user name, from this address.
    Address(IpAddr),
}

impl std::fmt::Display for LockedSubject {
    /// As in the audit log's `lockout` records.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LockedSubject::User(u) => write!(f, "user:{u}"),
            LockedSubject::UserAtAddress(u, a) => write!(f, "user:{u}@address:{a}"),
            LockedSubject::Address(a) => write!(f, "address:{a}"),
        }
    }
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
    pairs: HashMap<(String, IpAddr), Counter>,
    addresses: HashMap<IpAddr, Counter>,
}

/// Counts one failure in `map` under `key` (a new entry only while the map is below
/// `max_tracked`); returns the end of a lockout this failure starts.
fn fail_in<K: std::hash::Hash + Eq>(
    map: &mut HashMap<K, Counter>,
    key: K,
    now: SystemTime,
    max: u32,
    p: &LockoutPolicy,
) -> Option<SystemTime> {
    if let Some(c) = map.get_mut(&key) {
        return c.fail(now, max, p);
    }
    if map.len() >= p.max_tracked {
        return None;
    }
    let mut c = Counter::new(now);
    let until = c.fail(now, max, p);
    map.insert(key, c);
    until
}

impl Throttle {
    pub fn new(policy: LockoutPolicy) -> Self {
        Throttle {
            policy,
            users: HashMap::new(),
            pairs: HashMap::new(),
            addresses: HashMap::new(),
        }
    }

    pub fn policy(&self) -> &LockoutPolicy {
        &self.policy
    }

    /// `Err(until)` when the user name, the user name from this address, or the address is
    /// locked now (the latest end if several are).
    pub fn check(&self, user: &str, source: IpAddr, now: SystemTime) -> Result<(), SystemTime> {
        let u = self.users.get(user).and_then(|c| c.locked(now));
        let pair = self
            .pairs
            .get(&(user.to_owned(), source))
            .and_then(|c| c.locked(now));
        let a = self.addresses.get(&source).and_then(|c| c.locked(now));
        match u.max(pair).max(a) {
            None => Ok(()),
            Some(until) => Err(until),
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
        let key = (user.to_owned(), source);
        if let Some(until) = fail_in(&mut self.pairs, key, now, p.max_user_address_failures, &p) {
            started.push((LockedSubject::UserAtAddress(user.to_owned(), source), until));
        }
        if let Some(until) = fail_in(&mut self.addresses, source, now, p.max_address_failures, &p) {
            started.push((LockedSubject::Address(source), until));
        }
        if let Some(until) = fail_in(
            &mut self.users,
            user.to_owned(),
            now,
            p.max_user_failures,
            &p,
        ) {
            started.push((LockedSubject::User(user.to_owned()), until));
        }
        started
    }

    /// A successful login clears the user's failures (everywhere, and from this address).
    /// The address's failures stay: one valid account must not let an address go on guessing
    /// others' passwords.
    pub fn record_success(&mut self, user: &str, source: IpAddr) {
        self.users.remove(user);
        self.pairs.remove(&(user.to_owned(), source));
    }

    /// Lifts every lockout and forgets every failure of `user` (from all addresses); returns
    /// whether there was anything to lift. Address lockouts stay.
    pub fn unlock(&mut self, user: &str) -> bool {
        let before = self.users.len() + self.pairs.len();
        self.users.remove(user);
        self.pairs.retain(|(u, _), _| u != user);
        before != self.users.len() + self.pairs.len()
    }

    fn evict(&mut self, now: SystemTime) {
        let p = self.policy;
        if self.users.len() >= p.max_tracked {
            self.users.retain(|_, c| !c.stale(now, &p));
        }
        if self.pairs.len() >= p.max_tracked {
            self.pairs.retain(|_, c| !c.stale(now, &p));
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

    fn addr(i: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 0, 1, i))
    }

    fn policy() -> LockoutPolicy {
        LockoutPolicy {
            max_user_address_failures: 3,
            max_address_failures: 5,
            max_user_failures: 9,
            window: Duration::from_secs(60),
            lockout: Duration::from_secs(300),
            max_tracked: 100,
        }
    }

    #[test]
    fn a_user_name_locks_first_for_the_guessing_address_only() {
        let mut t = Throttle::new(policy());
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert!(t.record_failure("alice", A, t0).is_empty());
        assert!(t.record_failure("alice", A, t0).is_empty());
        let started = t.record_failure("alice", A, t0 + Duration::from_secs(1));
        let until = t0 + Duration::from_secs(301);
        assert_eq!(
            started,
            vec![(LockedSubject::UserAtAddress("alice".into(), A), until)]
        );
        assert_eq!(started[0].0.to_string(), "user:alice@address:10.0.0.1");
        // Locked from A only; alice from B and others from A are fine.
        assert_eq!(t.check("alice", A, t0 + Duration::from_secs(2)), Err(until));
        assert_eq!(t.check("alice", B, t0 + Duration::from_secs(2)), Ok(()));
        assert_eq!(t.check("bob", A, t0 + Duration::from_secs(2)), Ok(()));
        // One second before the end still locked; at the end free, counting from zero.
        assert_eq!(
            t.check("alice", A, until - Duration::from_secs(1)),
            Err(until)
        );
        assert_eq!(t.check("alice", A, until), Ok(()));
        assert!(t.record_failure("alice", A, until).is_empty());
    }

    /// The attack of issue 10: an attacker who retries before each lockout ends cannot keep
    /// the account locked for its owner, because its attempts stop counting once its own
    /// address is locked.
    #[test]
    fn one_address_retrying_every_lockout_never_locks_the_account_for_others() {
        let mut t = Throttle::new(policy());
        let mut now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        for _round in 0..20 {
            for _ in 0..10 {
                if t.check("admin", A, now).is_ok() {
                    t.record_failure("admin", A, now);
                }
            }
            assert_eq!(t.check("admin", B, now), Ok(()), "the owner elsewhere");
            now += Duration::from_secs(301);
        }
    }

    #[test]
    fn the_user_name_locks_everywhere_only_after_failures_from_many_addresses() {
        let mut t = Throttle::new(policy());
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000);
        // Two failures from each of four addresses: no pair, no address reaches its limit.
        for i in 0..4 {
            for _ in 0..2 {
                assert!(t.record_failure("alice", addr(i), t0).is_empty());
            }
        }
        let started = t.record_failure("alice", addr(9), t0);
        assert_eq!(
            started,
            vec![(
                LockedSubject::User("alice".into()),
                t0 + Duration::from_secs(300)
            )]
        );
        assert!(t.check("alice", B, t0).is_err());
        assert_eq!(t.check("bob", B, t0), Ok(()));
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
        t.record_success("alice", A);
        assert!(t.record_failure("alice", A, t0).is_empty());
        t.record_failure("bob", A, t0);
        // Five failures from A in all: the address is locked although alice logged in.
        let started = t.record_failure("carol", A, t0);
        assert!(started.contains(&(LockedSubject::Address(A), t0 + Duration::from_secs(300))));
    }

    #[test]
    fn unlock_lifts_the_user_everywhere_but_not_an_address() {
        let mut t = Throttle::new(policy());
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000);
        for i in 0..9 {
            t.record_failure("admin", addr(i), t0);
        }
        for _ in 0..3 {
            t.record_failure("admin", A, t0);
        }
        for i in 0..5 {
            t.record_failure(&format!("x{i}"), B, t0);
        }
        assert!(t.check("admin", addr(20), t0).is_err());
        assert!(t.unlock("admin"));
        assert_eq!(t.check("admin", addr(20), t0), Ok(()));
        assert_eq!(t.check("admin", A, t0), Ok(()));
        assert!(
            t.check("admin", B, t0).is_err(),
            "B is locked as an address"
        );
        assert!(!t.unlock("admin"), "nothing left to lift");
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
        assert!(t.pairs.len() <= 10);
        assert!(t.addresses.len() <= 10);
    }
}
