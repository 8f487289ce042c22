//! The OPC UA client side (WIP, issue 15): a session to a server with the platform's
//! application instance certificate ([`crate::pki`]), a security policy and mode, a user
//! identity, and browsing. Subscriptions, the connector (`core::Source`) and writes come next.
//!
//! Unknown server certificates are refused (the stack puts them in `rejected/`): trust one with
//! [`crate::pki::Pki::trust`] (`ironplant opcua trust THUMBPRINT`).

use std::sync::Arc;
use std::time::Duration;

use opcua::client::{ClientBuilder, IdentityToken, Password, Session};
use opcua::types::{
    BrowseDescription, BrowseDirection, BrowseResultMask, MessageSecurityMode, NodeClass, NodeId,
    ReferenceTypeId, StatusCode, UserTokenPolicy,
};

use crate::pki::Pki;

/// The security policies Ironplant offers (never the deprecated Basic128Rsa15 nor Basic256,
/// which use PKCS#1 v1.5: see SECURITY.md on RUSTSEC-2023-0071).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// No security: labs only (warned about at start).
    None,
    Basic256Sha256,
    Aes128Sha256RsaOaep,
    Aes256Sha256RsaPss,
}

impl Policy {
    fn uri_name(self) -> &'static str {
        match self {
            Policy::None => "None",
            Policy::Basic256Sha256 => "Basic256Sha256",
            Policy::Aes128Sha256RsaOaep => "Aes128-Sha256-RsaOaep",
            Policy::Aes256Sha256RsaPss => "Aes256-Sha256-RsaPss",
        }
    }
}

/// Who the platform is on the server.
#[derive(Clone)]
pub enum Identity {
    Anonymous,
    User { name: String, password: String },
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Identity::Anonymous => f.write_str("Anonymous"),
            Identity::User { name, .. } => write!(f, "User({name})"),
        }
    }
}

/// A connection's settings.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    pub url: String,
    pub policy: Policy,
    /// `Sign` or `SignAndEncrypt` (the default); `None` only with [`Policy::None`].
    pub encrypt: bool,
    pub identity: Identity,
    pub application_uri: String,
    pub request_timeout: Duration,
}

/// Why a session could not be opened or a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("OPC UA client configuration: {0}")]
    Config(String),
    #[error("{url}: {what}: {status}")]
    Server {
        url: String,
        what: &'static str,
        status: StatusCode,
    },
    #[error("{url}: the session did not connect ({status})")]
    NotConnected { url: String, status: StatusCode },
}

/// An open session and the task that drives it (reconnects included).
pub struct Connection {
    pub session: Arc<Session>,
    driver: tokio::task::JoinHandle<StatusCode>,
    url: String,
}

/// One reference found by [`Connection::browse`].
#[derive(Debug, Clone, PartialEq)]
pub struct BrowseEntry {
    pub node_id: NodeId,
    pub browse_name: String,
    pub display_name: String,
    pub node_class: NodeClass,
}

/// Opens a session as `settings` says, with the application instance certificate of `pki`.
pub async fn connect(pki: &Pki, settings: &ClientSettings) -> Result<Connection, ClientError> {
    let dir = pki.dir();
    let mut client = ClientBuilder::new()
        .application_name("Ironplant")
        .application_uri(settings.application_uri.clone())
        .product_uri("urn:ironplant")
        .pki_dir(dir)
        .certificate_path(dir.join("own/cert.der"))
        .private_key_path(dir.join("private/private.pem"))
        .create_sample_keypair(false)
        .trust_server_certs(false)
        .verify_server_certs(true)
        .session_retry_limit(3)
        .request_timeout(settings.request_timeout)
        .max_failed_keep_alive_count(3)
        .client()
        .map_err(|e| ClientError::Config(e.join("; ")))?;
    let mode = match (settings.policy, settings.encrypt) {
        (Policy::None, _) => MessageSecurityMode::None,
        (_, true) => MessageSecurityMode::SignAndEncrypt,
        (_, false) => MessageSecurityMode::Sign,
    };
    let (token, token_policy) = match &settings.identity {
        Identity::Anonymous => (IdentityToken::Anonymous, UserTokenPolicy::anonymous()),
        Identity::User { name, password } => (
            IdentityToken::UserName(name.clone(), Password::new(password.clone())),
            UserTokenPolicy {
                token_type: opcua::types::UserTokenType::UserName,
                ..UserTokenPolicy::anonymous()
            },
        ),
    };
    let endpoint = (
        settings.url.as_str(),
        settings.policy.uri_name(),
        mode,
        token_policy,
    );
    let (session, event_loop) = client
        .connect_to_matching_endpoint(endpoint, token)
        .await
        .map_err(|e| ClientError::Server {
            url: settings.url.clone(),
            what: "connect",
            status: e.status(),
        })?;
    let driver = event_loop.spawn();
    let connected =
        tokio::time::timeout(settings.request_timeout, session.wait_for_connection()).await;
    if connected != Ok(true) {
        driver.abort();
        let status = match driver.await {
            Ok(s) => s,
            Err(_) => StatusCode::BadTimeout,
        };
        return Err(ClientError::NotConnected {
            url: settings.url.clone(),
            status,
        });
    }
    Ok(Connection {
        session,
        driver,
        url: settings.url.clone(),
    })
}

impl Connection {
    /// The nodes `node` organises (hierarchical references, forward), all pages.
    pub async fn browse(&self, node: &NodeId) -> Result<Vec<BrowseEntry>, ClientError> {
        let desc = BrowseDescription {
            node_id: node.clone(),
            browse_direction: BrowseDirection::Forward,
            reference_type_id: ReferenceTypeId::HierarchicalReferences.into(),
            include_subtypes: true,
            node_class_mask: 0,
            result_mask: BrowseResultMask::All as u32,
        };
        let err = |what, status| ClientError::Server {
            url: self.url.clone(),
            what,
            status,
        };
        let mut results = self
            .session
            .browse(&[desc], 1000, None)
            .await
            .map_err(|e| err("browse", e.status()))?;
        let mut out = Vec::new();
        while let Some(r) = results.pop() {
            if r.status_code.is_bad() {
                return Err(err("browse", r.status_code));
            }
            for rd in r.references.unwrap_or_default() {
                out.push(BrowseEntry {
                    node_id: rd.node_id.node_id,
                    browse_name: rd.browse_name.to_string(),
                    display_name: rd.display_name.to_string(),
                    node_class: rd.node_class,
                });
            }
            if r.continuation_point.is_null_or_empty() {
                break;
            }
            results = self
                .session
                .browse_next(false, &[r.continuation_point])
                .await
                .map_err(|e| err("browse next", e.status()))?;
        }
        Ok(out)
    }

    /// Closes the session and stops its driver.
    pub async fn close(self) {
        let _ = self.session.disconnect().await;
        self.driver.abort();
    }
}
