//! Hooks for authentication and per-topic authorisation. The broker asks an [`Auth`] at CONNECT,
//! before routing each PUBLISH and before adding each subscription; the security layer of the
//! platform implements it (users, device certificates, ACLs, audit). [`AllowAll`] is the
//! default for tests and embedded use.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::codec::{ProtocolVersion, ReasonCode};

/// What a client presented when it connected.
#[derive(Debug)]
pub struct ConnectInfo<'a> {
    pub peer: SocketAddr,
    pub protocol: ProtocolVersion,
    pub client_id: &'a str,
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
}

/// What a client asked for and was refused (for logs and the audit trail).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied<'a> {
    Connect(ReasonCode),
    Publish(&'a str),
    Subscribe(&'a str),
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
