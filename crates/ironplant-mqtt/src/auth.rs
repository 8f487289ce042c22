//! Hooks for authentication and per-topic authorisation. The broker asks an [`Auth`] at CONNECT
//! (for the identity and for the will's topic), before routing a PUBLISH to a topic it has not
//! decided yet for that connection, before adding each subscription, when a will fires, when a
//! session is resumed (its stored subscriptions), and periodically for every live connection
//! ([`Auth::revalidate`]: revoked or lowered identities are disconnected). The security layer
//! of the platform implements it (users, device certificates, ACLs, audit). [`AllowAll`] is
//! the default for tests and embedded use.
//!
//! Decisions may be cached by the broker per connection and topic until [`Auth::epoch`]
//! changes, so an implementation must bump the epoch whenever a decision could change.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::codec::{ProtocolVersion, ReasonCode};

/// What a client presented when it connected.
#[derive(Debug)]
pub struct ConnectInfo<'a> {
    pub peer: SocketAddr,
    pub protocol: ProtocolVersion,
    pub client_id: &'a str,
    /// The client sent an empty client id and the broker assigned `client_id` (unique, so it
    /// cannot be anyone else's).
    pub client_id_assigned: bool,
    pub username: Option<&'a str>,
    pub password: Option<&'a [u8]>,
    /// The subject of the client's TLS certificate, when the transport verified one.
    pub certificate_subject: Option<&'a str>,
}

/// Who a connection is, as the [`Auth`] decided at CONNECT; passed back on every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub client_id: Arc<str>,
    /// The authenticated user or device name (`None`: anonymous).
    pub user: Option<Arc<str>>,
    /// Roles or groups, for the authoriser's own use.
    pub roles: Vec<Arc<str>>,
    /// The identity that owns what this connection creates: its client id's session (another
    /// owner can neither take over the connection nor resume the session) and the retained
    /// messages it stores (counted against this owner's quota). `None`: anonymous.
    pub owner: Option<Arc<str>>,
}

/// What a client asked for and was refused (for logs and the audit trail).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied<'a> {
    Connect(ReasonCode),
    Publish(&'a str),
    Subscribe(&'a str),
    /// The will's topic at CONNECT (the CONNECT was refused), or when the will fired (dropped).
    Will(&'a str),
    /// Took over, or resumed, a client id whose session another identity owns (refused; the
    /// holder is not disturbed). The client id.
    Takeover(&'a str),
    /// A stored subscription the identity may no longer have, removed when its session resumed.
    ResumedSubscription(&'a str),
    /// A live subscription withdrawn because the rules changed while connected.
    WithdrawnSubscription(&'a str),
    /// The identity was revoked or lowered while connected: the connection was closed.
    Revoked,
    /// A resource limit refused the request (the limit's name, e.g. `connections_per_address`).
    Limit(&'static str),
}

pub trait Auth: Send + Sync + 'static {
    /// Accepts the connection as a [`Principal`], or refuses it with a CONNACK reason code
    /// (e.g. `BadUserNameOrPassword`, `NotAuthorized`, `Banned`).
    fn connect(&self, info: &ConnectInfo<'_>) -> Result<Principal, ReasonCode>;
    /// May `who` publish on `topic`?
    fn may_publish(&self, who: &Principal, topic: &str) -> bool;
    /// May `who` subscribe to `filter` (shared-subscription prefix removed)?
    fn may_subscribe(&self, who: &Principal, filter: &str) -> bool;
    /// Called for every refusal, after the client was answered.
    fn denied(&self, _who: Option<&Principal>, _peer: SocketAddr, _what: Denied<'_>) {}
    /// Whether `connect` is cheap enough to run on a runtime thread. When false (the default:
    /// password hashing), the broker runs it on a blocking thread.
    fn is_cheap(&self) -> bool {
        false
    }
    /// Changes whenever a decision of `may_publish`/`may_subscribe` could change (new rules,
    /// a revoked identity): the broker caches decisions per connection until it does.
    fn epoch(&self) -> u64 {
        0
    }
    /// For each live connection's principal, whether it is still valid (not revoked, role not
    /// lowered). Called about every 250 ms with all live connections; `false` closes the
    /// connection (reason 0x87) and reports [`Denied::Revoked`].
    fn revalidate(&self, who: &[&Principal]) -> Vec<bool> {
        vec![true; who.len()]
    }
    /// Whether this principal may use the connections kept in reserve once the general
    /// connection limit is reached (so an administrator can still get in).
    fn is_privileged(&self, _who: &Principal) -> bool {
        false
    }
    /// May a message from outside the broker's clients, brought in by the platform's bridge
    /// `source`, land on `topic`? (Topics the platform itself owns must not be forged from a
    /// remote broker either.)
    fn may_inject(&self, _source: &str, _topic: &str) -> bool {
        true
    }
}

/// Everyone may connect, publish and subscribe.
#[derive(Debug, Default, Clone, Copy)]
pub struct AllowAll;

impl Auth for AllowAll {
    fn connect(&self, info: &ConnectInfo<'_>) -> Result<Principal, ReasonCode> {
        Ok(Principal {
            client_id: info.client_id.into(),
            user: info.username.map(Into::into),
            roles: Vec::new(),
            owner: info.username.map(Into::into),
        })
    }
    fn may_publish(&self, _who: &Principal, _topic: &str) -> bool {
        true
    }
    fn may_subscribe(&self, _who: &Principal, _filter: &str) -> bool {
        true
    }
    fn is_cheap(&self) -> bool {
        true
    }
}
