//! The platform's authorisation policy for `mqtt --policy`, wired from the library crates as
//! `ironplant serve` wires it: the security state of a data directory
//! (`ironplant_security::Security`) and its `SecurityAuth` behind the binary's `BlockingAuth`.
//!
//! `BlockingAuth` is binary-only code in `crates/ironplant/src/secure.rs`; this is a copy of it
//! without the reserved-topic check (the benchmark broker has no namespace and no Sparkplug
//! host), so the broker sees the same `Auth` as the platform's: keep the two in step.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use ironplant_mqtt::auth::{Auth, ConnectInfo as MqttConnectInfo, Denied, Principal};
use ironplant_mqtt::codec::ReasonCode;
use ironplant_security::Security;

/// Opens the security state of `data_dir` with the default policy, as `ironplant`'s
/// administration commands do.
pub fn open(data_dir: &Path) -> anyhow::Result<Arc<Security>> {
    let sec = Security::open(
        data_dir,
        Arc::new(ironplant_security::SystemClock),
        ironplant_security::SecurityOptions::default(),
    )
    .with_context(|| {
        format!(
            "cannot open the security state in {}; check its permissions (it must belong to this user)",
            data_dir.join("security").display()
        )
    })?;
    Ok(Arc::new(sec))
}

/// The broker's `Auth`, moving `connect` (argon2id password checks take tens of
/// milliseconds) off the async worker with `block_in_place`, so one login does not stall the
/// other connections served by that worker. Needs the multi-threaded runtime.
pub struct BlockingAuth<A> {
    pub inner: Arc<A>,
}

impl<A: Auth> Auth for BlockingAuth<A> {
    fn connect(&self, info: &MqttConnectInfo<'_>) -> Result<Principal, ReasonCode> {
        let quick = info.password.is_none()
            || info
                .password
                .is_some_and(|p| p.starts_with(ironplant_security::users::TOKEN_PREFIX.as_bytes()));
        if quick {
            // Certificates and tokens are a hash lookup: no need to leave the worker.
            return self.inner.connect(info);
        }
        tokio::task::block_in_place(|| self.inner.connect(info))
    }
    fn may_publish(&self, who: &Principal, topic: &str) -> bool {
        self.inner.may_publish(who, topic)
    }
    fn may_subscribe(&self, who: &Principal, filter: &str) -> bool {
        self.inner.may_subscribe(who, filter)
    }
    fn denied(&self, who: Option<&Principal>, peer: SocketAddr, what: Denied<'_>) {
        self.inner.denied(who, peer, what);
    }
    fn epoch(&self) -> u64 {
        self.inner.epoch()
    }
    fn revalidate(&self, who: &[&Principal]) -> Vec<bool> {
        // Reads the user store and the rules files: off the async worker.
        tokio::task::block_in_place(|| self.inner.revalidate(who))
    }
    fn is_privileged(&self, who: &Principal) -> bool {
        self.inner.is_privileged(who)
    }
    fn may_inject(&self, _source: &str, _topic: &str) -> bool {
        true
    }
}
