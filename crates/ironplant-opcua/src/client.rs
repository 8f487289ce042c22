//! The OPC UA client side (WIP, issue 15): a session to a server with the platform's
//! application instance certificate ([`crate::pki`]), a security policy and mode, a user
//! identity, and browsing. Subscriptions, the connector (`core::Source`) and writes come next.
//!
//! Unknown server certificates are refused (the stack puts them in `rejected/`): trust one with
//! [`crate::pki::Pki::trust`] (`ironplant opcua trust THUMBPRINT`).

use std::sync::Arc;
use std::time::Duration;

use opcua::client::{ClientBuilder, IdentityToken, Password, Session, SubscriptionCallbacks};
use opcua::types::{
    AttributeId, BrowseDescription, BrowseDirection, BrowseResultMask, DataChangeFilter,
    DataChangeTrigger, DataValue, DeadbandType, ExtensionObject, MessageSecurityMode,
    MonitoredItemCreateRequest, NodeClass, NodeId, ReadValueId, ReferenceTypeId, StatusCode,
    TimestampsToReturn, UserTokenPolicy, Variant,
};

use crate::pki::Pki;

/// Message limits of both sides (the stack's defaults, 1,000 array elements and 320 KiB a
/// message, cut off a publish of more than 1,000 notifications or a request for more than
/// 1,000 monitored items with BadDecodingError).
pub const MAX_ARRAY_LENGTH: usize = 100_000;
/// See [`MAX_ARRAY_LENGTH`].
pub const MAX_MESSAGE_SIZE: usize = 4 * 1024 * 1024;
/// See [`MAX_ARRAY_LENGTH`]: enough 64 KiB chunks for a [`MAX_MESSAGE_SIZE`] message.
pub const MAX_CHUNK_COUNT: usize = 128;
/// Most notifications the server puts in one publish (bounded messages, however many items
/// change at once).
pub const MAX_NOTIFICATIONS_PER_PUBLISH: u32 = 10_000;

/// Most references one browse of a node collects (a server paging without end is cut off).
pub const MAX_REFERENCES: usize = 100_000;

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
    User {
        name: String,
        password: String,
    },
    /// An X.509 user certificate (DER or PEM, by extension) and its private key (PEM): the
    /// session proves it holds the key by signing the server's nonce.
    Certificate {
        certificate: std::path::PathBuf,
        key: std::path::PathBuf,
    },
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Identity::Anonymous => f.write_str("Anonymous"),
            Identity::User { name, .. } => write!(f, "User({name})"),
            Identity::Certificate { certificate, .. } => {
                write!(f, "Certificate({})", certificate.display())
            }
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
    /// Connection attempts after the first failure before giving up (the connector retries
    /// for ever, with back-off; a command gives up at once).
    pub retries: i32,
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

impl ClientError {
    fn server(url: &str, what: &'static str, status: StatusCode) -> ClientError {
        ClientError::Server {
            url: url.to_owned(),
            what,
            status,
        }
    }
}

/// An open session and the task that drives it (reconnects included).
pub struct Connection {
    pub session: Arc<Session>,
    driver: tokio::task::JoinHandle<StatusCode>,
    url: String,
    events: Option<tokio::sync::mpsc::UnboundedReceiver<SessionEvent>>,
    events_tx: tokio::sync::mpsc::UnboundedSender<SessionEvent>,
    closed: bool,
}

impl Drop for Connection {
    /// A connection dropped without [`Connection::close`] (an error path, a cancelled task)
    /// still ends its session on the server and stops reconnecting.
    fn drop(&mut self) {
        if self.closed {
            return;
        }
        self.driver.abort();
        let session = self.session.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = tokio::time::timeout(Duration::from_secs(5), session.disconnect()).await;
            });
        }
    }
}

/// A node to monitor.
#[derive(Debug, Clone, PartialEq)]
pub struct Monitor {
    pub node: NodeId,
    pub sampling: Duration,
    pub queue_size: u32,
    pub deadband: Deadband,
}

/// A data-change filter's deadband (percent of the node's EURange).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Deadband {
    None,
    Absolute(f64),
    Percent(f64),
}

/// A notification: the node's new value, status and timestamps.
#[derive(Debug, Clone)]
pub struct Change {
    pub node: NodeId,
    pub value: DataValue,
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
    connect_with(pki, settings, &Tuning::default()).await
}

/// The SHA-1 thumbprints of the certificates the server at `url` presents on its endpoints
/// (asked over an unsecured GetEndpoints, which every server answers): what a refused
/// connection was refused for.
pub async fn server_thumbprints(
    pki: &Pki,
    url: &str,
    timeout: Duration,
) -> Result<Vec<String>, ClientError> {
    let dir = pki.dir();
    let client = ClientBuilder::new()
        .application_name("Ironplant")
        .application_uri(crate::source::APPLICATION_URI)
        .product_uri("urn:ironplant")
        .pki_dir(dir)
        .certificate_path("own/cert.der")
        .private_key_path("private/private.pem")
        .create_sample_keypair(false)
        .trust_server_certs(false)
        .session_retry_limit(0)
        .request_timeout(timeout)
        .client()
        .map_err(|e| ClientError::Config(e.join("; ")))?;
    let endpoints = tokio::time::timeout(timeout, client.get_server_endpoints_from_url(url))
        .await
        .map_err(|_| ClientError::server(url, "get endpoints", StatusCode::BadTimeout))?
        .map_err(|e| ClientError::server(url, "get endpoints", e.status()))?;
    let mut out: Vec<String> = endpoints
        .iter()
        .filter(|e| !e.server_certificate.is_null_or_empty())
        .map(|e| crate::pki::thumbprint(e.server_certificate.as_ref()))
        .collect();
    out.sort();
    out.dedup();
    Ok(out)
}

/// When `e` is the refusal of the server's certificate, the thumbprint of the (not trusted)
/// certificate the server at `url` presents: what to show the engineer who must judge it.
pub async fn untrusted_thumbprint(
    pki: &Pki,
    url: &str,
    timeout: Duration,
    e: &ClientError,
) -> Option<String> {
    let status = match e {
        ClientError::Server { status, .. } | ClientError::NotConnected { status, .. } => *status,
        ClientError::Config(_) => return None,
    };
    if status != StatusCode::BadCertificateUntrusted
        && status != StatusCode::BadSecurityChecksFailed
    {
        return None;
    }
    let trusted: Vec<String> = pki
        .trusted()
        .unwrap_or_default()
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    server_thumbprints(pki, url, timeout)
        .await
        .ok()?
        .into_iter()
        .find(|t| !trusted.contains(t))
}

/// How a long-lived session (the connector's) watches and recovers its connection.
#[derive(Debug, Clone, PartialEq)]
pub struct Tuning {
    /// How often the session reads the server's state to know it is alive.
    pub keep_alive: Duration,
    /// Failed keep-alives in a row before the connection is dropped and re-opened.
    pub max_failed_keep_alives: u64,
    /// How long a publish request may wait for the server (long-polled).
    pub publish_timeout: Duration,
    /// Reconnection back-off: from 500 ms doubling up to this.
    pub reconnect_max: Duration,
    /// After a new session, let the stack transfer or re-create the subscriptions (`false`: the
    /// caller re-creates its own, e.g. to re-resolve namespace indexes first).
    pub recreate_subscriptions: bool,
}

impl Default for Tuning {
    fn default() -> Tuning {
        Tuning {
            keep_alive: Duration::from_secs(10),
            max_failed_keep_alives: 3,
            publish_timeout: Duration::from_secs(60),
            reconnect_max: Duration::from_secs(30),
            recreate_subscriptions: true,
        }
    }
}

/// What happened to a session's connection (from the stack's event loop).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEvent {
    /// The connection broke (the stack reconnects by itself).
    Lost(StatusCode),
    /// A reconnection attempt failed (another follows after the back-off).
    ReconnectFailed(StatusCode),
    /// Connected again: the old session re-activated (`new_session == false`, subscriptions
    /// intact) or a new one created (subscriptions transferred or re-created by the stack).
    Reconnected { new_session: bool },
    /// The server did not answer a keep-alive read (or said it is not running).
    KeepAliveFailed(StatusCode),
    /// The server reported a subscription gone (e.g. BadTimeout: its lifetime expired).
    SubscriptionLost(StatusCode),
}

/// Like [`connect`], with the keep-alive, timeouts and reconnection of `tuning`; the session
/// reconnects by itself for ever (re-activating the session, else transferring or re-creating
/// its subscriptions), reporting on [`Connection::take_events`].
pub async fn connect_with(
    pki: &Pki,
    settings: &ClientSettings,
    tuning: &Tuning,
) -> Result<Connection, ClientError> {
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
        .session_retry_limit(settings.retries)
        .max_array_length(MAX_ARRAY_LENGTH)
        .max_message_size(MAX_MESSAGE_SIZE)
        .max_chunk_count(MAX_CHUNK_COUNT)
        .session_retry_initial(Duration::from_millis(500))
        .session_retry_max(tuning.reconnect_max)
        .request_timeout(settings.request_timeout)
        .keep_alive_interval(tuning.keep_alive)
        .max_failed_keep_alive_count(tuning.max_failed_keep_alives)
        .publish_timeout(tuning.publish_timeout)
        .recreate_subscriptions(tuning.recreate_subscriptions)
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
        Identity::Certificate { certificate, key } => (
            IdentityToken::new_x509_path(certificate, key).map_err(|e| {
                ClientError::Config(format!(
                    "the user certificate {} or its key {}: {e}",
                    certificate.display(),
                    key.display()
                ))
            })?,
            UserTokenPolicy {
                token_type: opcua::types::UserTokenType::Certificate,
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
        .map_err(|e| ClientError::server(&settings.url, "connect", e.status()))?;
    let (events_tx, mut events_rx) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(drive(event_loop, events_tx.clone()));
    // The first attempt decides: connected, or why not (the caller retries with its back-off;
    // the stack's own retries are for a connection that was up).
    let mut driver = driver;
    let first = tokio::time::timeout(settings.request_timeout.saturating_mul(2), async {
        tokio::select! {
            e = events_rx.recv() => (e, None),
            // The stack gave up (no retries left): how it ended.
            ended = &mut driver => (None, Some(ended.unwrap_or(StatusCode::BadUnexpectedError))),
        }
    })
    .await;
    let status = match &first {
        Ok((Some(SessionEvent::Reconnected { .. }), _)) => None,
        Ok((
            Some(
                SessionEvent::ReconnectFailed(s)
                | SessionEvent::Lost(s)
                | SessionEvent::KeepAliveFailed(s)
                | SessionEvent::SubscriptionLost(s),
            ),
            _,
        )) => Some(*s),
        Ok((None, Some(ended))) if ended.is_bad() => Some(*ended),
        Ok((None, _)) => Some(StatusCode::BadConnectionClosed),
        Err(_) => Some(StatusCode::BadTimeout),
    };
    if let Some(status) = status {
        let ended = matches!(first, Ok((None, Some(_))));
        let status = if ended {
            status
        } else {
            driver.abort();
            match driver.await {
                Ok(s) if s.is_bad() => s,
                _ => status,
            }
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
        events: Some(events_rx),
        events_tx,
        closed: false,
    })
}

/// Runs the stack's event loop, passing on what a connector acts on; returns how it ended.
async fn drive<T>(
    event_loop: opcua::client::SessionEventLoop<T>,
    events: tokio::sync::mpsc::UnboundedSender<SessionEvent>,
) -> StatusCode
where
    T: opcua::client::transport::Connector + Send + Sync + 'static,
{
    use futures_util::StreamExt as _;
    use opcua::client::{SessionActivity, SessionConnectMode, SessionPollResult};
    let stream = event_loop.enter();
    let mut stream = std::pin::pin!(stream);
    while let Some(next) = stream.next().await {
        let event = match next {
            Err(status) => return status,
            Ok(SessionPollResult::ConnectionLost(s)) => Some(SessionEvent::Lost(s)),
            Ok(SessionPollResult::ReconnectFailed(s)) => Some(SessionEvent::ReconnectFailed(s)),
            Ok(SessionPollResult::Reconnected(mode)) => Some(SessionEvent::Reconnected {
                new_session: matches!(mode, SessionConnectMode::NewSession(_)),
            }),
            Ok(SessionPollResult::SessionActivity(SessionActivity::KeepAliveFailed(s))) => {
                Some(SessionEvent::KeepAliveFailed(s))
            }
            Ok(_) => None,
        };
        if let Some(e) = event {
            // Nobody listening (a browse from the CLI) is fine.
            let _ = events.send(e);
        }
    }
    StatusCode::Good
}

impl Connection {
    /// The session's connection events (once; `None` after the first call).
    pub fn take_events(&mut self) -> Option<tokio::sync::mpsc::UnboundedReceiver<SessionEvent>> {
        self.events.take()
    }

    /// The server's endpoint URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether the stack's event loop has ended (closed, or gave up reconnecting).
    pub fn is_finished(&self) -> bool {
        self.driver.is_finished()
    }

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
        let err = |what, status| ClientError::server(&self.url, what, status);
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
            if r.continuation_point.is_null_or_empty() || out.len() >= MAX_REFERENCES {
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

    /// The DataType attribute of each node (`None` for a node that has none, e.g. an object).
    pub async fn data_types(&self, nodes: &[NodeId]) -> Result<Vec<Option<NodeId>>, ClientError> {
        if nodes.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<ReadValueId> = nodes
            .iter()
            .map(|n| ReadValueId {
                node_id: n.clone(),
                attribute_id: AttributeId::DataType as u32,
                ..Default::default()
            })
            .collect();
        let values = self
            .session
            .read(&ids, TimestampsToReturn::Neither, 0.0)
            .await
            .map_err(|e| ClientError::server(&self.url, "read data types", e.status()))?;
        Ok(values
            .into_iter()
            .map(|dv| match dv.value {
                Some(Variant::NodeId(id)) => Some(*id),
                _ => None,
            })
            .collect())
    }

    /// Subscribes to `items` with one subscription publishing every `publishing` (the server
    /// sends only changes, sampled at each item's interval, filtered by its deadband). Every
    /// notification arrives on the returned channel with the node it is about. Fails if any
    /// item is refused (see [`Connection::subscribe_items`] to go on without it).
    pub async fn subscribe(
        &self,
        publishing: Duration,
        items: &[Monitor],
    ) -> Result<(u32, tokio::sync::mpsc::UnboundedReceiver<Change>), ClientError> {
        let (id, rx, statuses) = self.subscribe_items(publishing, items).await?;
        if let Some(bad) = statuses.iter().find(|s| s.is_bad()) {
            return Err(ClientError::server(
                &self.url,
                "create a monitored item",
                *bad,
            ));
        }
        Ok((id, rx))
    }

    /// Like [`Connection::subscribe`], with each item's own result (an item the server
    /// refuses, e.g. an unknown node, does not stop the others). When the server reports the
    /// subscription itself gone (its lifetime expired), [`SessionEvent::SubscriptionLost`]
    /// comes on the session's events.
    pub async fn subscribe_items(
        &self,
        publishing: Duration,
        items: &[Monitor],
    ) -> Result<
        (
            u32,
            tokio::sync::mpsc::UnboundedReceiver<Change>,
            Vec<StatusCode>,
        ),
        ClientError,
    > {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let events = self.events_tx.clone();
        let callback = SubscriptionCallbacks::new(
            move |n: opcua::types::StatusChangeNotification| {
                if n.status.is_bad() {
                    let _ = events.send(SessionEvent::SubscriptionLost(n.status));
                }
            },
            move |value, item: &opcua::client::MonitoredItem| {
                let _ = tx.send(Change {
                    node: item.item_to_monitor().node_id.clone(),
                    value,
                });
            },
            |_, _: &opcua::client::MonitoredItem| {},
        );
        let err = |what, status| ClientError::server(&self.url, what, status);
        // Lifetime and keep-alive counts as the specification suggests (lifetime ≥ 3 × keep-alive),
        // with room for a reconnection: the server keeps the subscription 60 publishing
        // intervals without a publish request.
        let id = self
            .session
            .create_subscription(
                publishing,
                60,
                10,
                MAX_NOTIFICATIONS_PER_PUBLISH,
                0,
                true,
                callback,
            )
            .await
            .map_err(|e| err("create subscription", e.status()))?;
        let requests: Vec<MonitoredItemCreateRequest> = items
            .iter()
            .map(|m| {
                let mut r = MonitoredItemCreateRequest::from(m.node.clone());
                r.requested_parameters.sampling_interval = m.sampling.as_secs_f64() * 1000.0;
                r.requested_parameters.queue_size = m.queue_size;
                r.requested_parameters.discard_oldest = true;
                let (kind, value) = match m.deadband {
                    Deadband::None => (DeadbandType::None, 0.0),
                    Deadband::Absolute(v) => (DeadbandType::Absolute, v),
                    Deadband::Percent(v) => (DeadbandType::Percent, v),
                };
                r.requested_parameters.filter = ExtensionObject::from_message(DataChangeFilter {
                    trigger: DataChangeTrigger::StatusValue,
                    deadband_type: kind as u32,
                    deadband_value: value,
                });
                r
            })
            .collect();
        let created = self
            .session
            .create_monitored_items(id, TimestampsToReturn::Both, requests)
            .await
            .map_err(|e| err("create monitored items", e.status()))?;
        let mut statuses: Vec<StatusCode> = created.iter().map(|c| c.result.status_code).collect();
        statuses.resize(items.len(), StatusCode::BadUnexpectedError);
        Ok((id, rx, statuses))
    }

    /// Closes the session and stops its driver.
    pub async fn close(mut self) {
        self.closed = true;
        let _ = self.session.disconnect().await;
        self.driver.abort();
    }
}
