//! The OPC UA server of the Unified Namespace (issue 15): the platform's tags as an OPC UA
//! address space organised by the asset hierarchy, with values, quality and timestamps, read
//! and subscribed by any OPC UA client; users of the platform; writes through the platform's
//! command path. Generic: the runtime serves the UNS with it, the simulator a simulated machine.
//!
//! Address space (our namespace, `ns=<index of ServerSettings::namespace_uri>`):
//!
//! ```text
//! Objects/                                  (ns=0)
//!   <root>            FolderType            ns=<ns>;i=1
//!     acme            FolderType            ns=<ns>;s=acme
//!       plant1        FolderType            ns=<ns>;s=acme/plant1
//!         ...
//!           speed     AnalogItemType        ns=<ns>;s=acme/plant1/line1/filler/speed
//!             EURange           (ns=0 browse name, Range)       s=<tag path>#EURange
//!             EngineeringUnits  (ns=0 browse name, EUInformation) s=<tag path>#EngineeringUnits
//! ```
//!
//! A tag's browse name is its last level; every level above it is a folder. Data types: bool →
//! Boolean, int → Int64, float → Double, string → String, `array<T>` → the same with ValueRank 1.
//! Dataset tags are not served (an OPC UA structure for them is future work; a JSON string would
//! hide the table from clients). A numeric tag with a range is an AnalogItemType (whose EURange
//! is mandatory, and what percent deadbands read), with a unit only a BaseAnalogType.
//!
//! Values arrive through [`publish`](crate::server::UnsServer::publish) (one `set_values`
//! batch, which notifies the subscribed clients); until the first, a tag reads
//! `BadWaitingForInitialData`. Quality maps to the StatusCode of
//! [`status_code`](crate::server::status_code), the inverse of [`crate::map::quality`].
//!
//! Security, as in the client ([`crate::client`]):
//! - endpoints Basic256Sha256, Aes128_Sha256_RsaOaep and Aes256_Sha256_RsaPss with
//!   SignAndEncrypt (and Sign when `sign_only`); never Basic128Rsa15 nor Basic256 (PKCS#1 v1.5,
//!   see SECURITY.md on RUSTSEC-2023-0071); None only with `allow_none` (labs; the caller warns);
//! - the application instance certificate from the OPC UA CA
//!   ([`Pki::application_certificate`](crate::pki::Pki::application_certificate)); an unknown
//!   client application certificate is refused and put in `rejected/`, where the administrator
//!   trusts it with [`Pki::trust`](crate::pki::Pki::trust);
//! - users: anonymous is refused; user name and password are checked by
//!   [`Backend::authenticate`](crate::server::Backend::authenticate) (the platform's users). The
//!   token policies tell clients to encrypt the password with the server's certificate: with
//!   the endpoint's policy, and on a None endpoint with Basic256Sha256. (The stack still
//!   accepts a password a client sends unencrypted against that policy; on SignAndEncrypt the
//!   channel encrypts it anyway, on Sign and None it would be visible.)
//! - X.509 user tokens are not offered (the platform has no certificate-to-user mapping yet);
//! - a user who may not write (`can_write == false`) sees no CurrentWrite in UserAccessLevel.
//!
//! Writes (`writes` on and a writable tag): a Write of a variable's Value is typed to the
//! tag's value type (numeric widening only) and handed to
//! [`Backend::write`](crate::server::Backend::write) as the authenticated user; the service
//! waits for its answer (at most [`WRITE_TIMEOUT`](crate::server::WRITE_TIMEOUT) for the whole
//! request). The node keeps its value: the written value comes back through `publish` once the
//! device has been read back.
//!
//! Limits: `max_sessions`; 10,000 monitored items in one subscription and in one
//! CreateMonitoredItems call (the stack's default is 1,000); 100 values in one Write. The
//! stack samples and publishes at most every 100 ms (its timer), so a client asking for less
//! is revised up to 100 ms.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ironplant_core::{
    Array, BoxFuture, Elements, Quality, QualityLevel, QualityReason, ScalarType, TagMeta, TagPath,
    Timestamp, Value, ValueType,
};
use opcua::crypto::SecurityPolicy;
use opcua::server::address_space::{
    user_access_level, AccessLevel, AddressSpace, NodeType, ObjectBuilder, VariableBuilder,
};
use opcua::server::authenticator::{
    user_pass_security_policy_id, AuthManager, Password, UserToken,
};
use opcua::server::diagnostics::NamespaceMetadata;
use opcua::server::node_manager::memory::{
    InMemoryNodeManager, InMemoryNodeManagerBuilder, InMemoryNodeManagerImpl,
};
use opcua::server::node_manager::{RequestContext, ServerContext, WriteNode};
use opcua::server::{ServerBuilder, ServerEndpoint, ServerHandle};
use opcua::sync::RwLock;
use opcua::types::{
    AttributeId, BuildInfo, DataTypeId, DataValue, DateTime, EUInformation, ExtensionObject,
    Identifier, LocalizedText, MessageSecurityMode, NodeId, NumericRange, QualifiedName, Range,
    StatusCode, UAString, UserTokenPolicy, UserTokenType, VariableTypeId, Variant,
};
use tracing::{debug, info, warn};

use crate::pki::{Pki, PkiError};

/// Most monitored items in one subscription (the stack's default is 1,000).
pub const MAX_MONITORED_ITEMS_PER_SUBSCRIPTION: usize = 10_000;
/// Most values in one Write request: each is a command through the platform's command path.
pub const MAX_WRITES_PER_REQUEST: usize = 100;
/// How long a Write request waits for the command path (all its values together); the values
/// not answered by then get `BadTimeout`.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a session's activation waits for [`Backend::authenticate`].
pub const AUTHENTICATE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long [`UnsServer::stop`] waits for the sessions to close.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// The stack's sampling and publishing floor (its subscription timer), in milliseconds.
const MIN_INTERVAL_MS: f64 = 100.0;
/// The root folder's NodeId in our namespace (tags and folders have string ids, so it cannot
/// collide with one).
const ROOT_ID: u32 = 1;
/// The unit namespace of EUInformation when the unit has no UNECE code (`unit_id` -1).
const UNECE_UNITS: &str = "http://www.opcfoundation.org/UA/units/un/cefact";

/// How the server is reached and what it offers.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// The address to listen on, e.g. `127.0.0.1` or `0.0.0.0`.
    pub host: String,
    /// The TCP port; 0 takes any free port ([`UnsServer::port`] tells which).
    pub port: u16,
    /// The host names and IP addresses clients connect to: in the certificate (they check it)
    /// and, the first one, in the endpoint URLs. At least one.
    pub hostnames: Vec<String>,
    /// The server's ApplicationUri (e.g. `urn:ironplant:<site>:uns`), also the certificate's
    /// first subject alternative name; must differ from `namespace_uri`.
    pub application_uri: String,
    /// The namespace of the tags (e.g. `urn:ironplant:uns`).
    pub namespace_uri: String,
    /// The display and browse name of the root folder under Objects (e.g. `Ironplant`).
    pub root: String,
    /// Also a None/None endpoint (labs only; the caller warns). Clients are told to encrypt
    /// passwords there with Basic256Sha256.
    pub allow_none: bool,
    /// Also Sign endpoints besides SignAndEncrypt.
    pub sign_only: bool,
    /// Writes enabled; otherwise every Value attribute is read-only.
    pub writes: bool,
    /// Most sessions at once.
    pub max_sessions: usize,
}

/// A tag as the server shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerTag {
    /// Its path in the UNS: `a/b/c/tag`, 1–7 levels ([`TagPath`] rules).
    pub path: String,
    pub value_type: ValueType,
    pub unit: Option<String>,
    /// Engineering range (low, high).
    pub range: Option<(f64, f64)>,
    /// Writable by users who may write (when the server's writes are enabled).
    pub writable: bool,
    pub description: Option<String>,
}

impl From<&TagMeta> for ServerTag {
    fn from(m: &TagMeta) -> ServerTag {
        ServerTag {
            path: m.path.as_str().to_owned(),
            value_type: m.value_type,
            unit: m.unit.clone(),
            range: m.range,
            writable: m.writable,
            description: (!m.description.is_empty()).then(|| m.description.clone()),
        }
    }
}

/// An authenticated user of the platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerUser {
    pub name: String,
    /// May write (an operator); a viewer may only read and subscribe.
    pub can_write: bool,
}

/// Why the platform refused a write; the client gets the StatusCode of
/// [`WriteRefusal::status_code`], the message goes to the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteRefusal {
    /// The user may not write this tag: `BadUserAccessDenied`.
    #[error("not authorised: {0}")]
    NotAuthorised(String),
    /// The value is outside the tag's range or envelope: `BadOutOfRange`.
    #[error("out of range: {0}")]
    OutOfRange(String),
    /// Refused by a rule of the command path (interlock, select-before-operate, …):
    /// `BadRequestNotAllowed`.
    #[error("refused: {0}")]
    Refused(String),
    /// The device write or its read-back failed: `BadCommunicationError`.
    #[error("device failed: {0}")]
    DeviceFailed(String),
}

impl WriteRefusal {
    pub fn status_code(&self) -> StatusCode {
        match self {
            WriteRefusal::NotAuthorised(_) => StatusCode::BadUserAccessDenied,
            WriteRefusal::OutOfRange(_) => StatusCode::BadOutOfRange,
            WriteRefusal::Refused(_) => StatusCode::BadRequestNotAllowed,
            WriteRefusal::DeviceFailed(_) => StatusCode::BadCommunicationError,
        }
    }
}

/// What the server asks of the platform.
pub trait Backend: Send + Sync + 'static {
    /// Checks a user name and password (the platform's users, with their lockout rules);
    /// `Err(reason)` refuses (the reason is logged, the client gets `BadUserAccessDenied`).
    fn authenticate(
        &self,
        user: &str,
        password: &str,
    ) -> BoxFuture<'static, Result<ServerUser, String>>;

    /// A write from an OPC UA client, already typed to the tag's value type: goes through the
    /// platform's command path (authorisation, envelope, interlocks, audit, device write and
    /// read-back). `Ok` once done; the new value then arrives through [`UnsServer::publish`].
    fn write(
        &self,
        user: &ServerUser,
        tag: &str,
        value: Value,
    ) -> BoxFuture<'static, Result<(), WriteRefusal>>;

    /// A write the server refused itself because `user` may not write (a viewer): for the
    /// platform's audit. Nothing by default.
    fn write_refused(&self, user: &ServerUser, tag: &str, value: Value) {
        let _ = (user, tag, value);
    }

    /// Whether `user` may read `tag` (browse it, read and subscribe to its value). The
    /// platform answers from the user's read rules; everything by default.
    fn can_read(&self, user: &ServerUser, tag: &str) -> bool {
        let _ = (user, tag);
        true
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("OPC UA server settings: {0}")]
    Settings(String),
    #[error("OPC UA server certificate (in {}): {source}", dir.display())]
    Certificate { dir: PathBuf, source: PkiError },
    #[error("OPC UA server: cannot listen on {addr}: {source}; {hint}")]
    Listen {
        addr: String,
        source: std::io::Error,
        hint: &'static str,
    },
    #[error("OPC UA server configuration refused by the stack: {0}")]
    Stack(String),
}

/// What the address space knows of a served tag.
#[derive(Debug, Clone)]
struct TagEntry {
    node: NodeId,
    value_type: ValueType,
    writable: bool,
}

/// State shared by the server handle, the node manager and the authenticator.
struct Shared {
    backend: Arc<dyn Backend>,
    writes: bool,
    /// By tag path. Lock order: the address space first, then this (never the other way).
    tags: RwLock<HashMap<String, TagEntry>>,
    /// The users authenticated so far, by user token (bounded by the platform's users).
    users: RwLock<HashMap<String, ServerUser>>,
}

impl Shared {
    fn user(&self, token: &UserToken) -> Option<ServerUser> {
        self.users.read().get(&token.0).cloned()
    }
}

/// A running OPC UA server of the Unified Namespace; stopped by [`UnsServer::stop`] (or
/// cancelled when dropped).
pub struct UnsServer {
    handle: ServerHandle,
    nodes: Arc<InMemoryNodeManager<UnsNodes>>,
    shared: Arc<Shared>,
    ns: u16,
    root: NodeId,
    url: String,
    addr: SocketAddr,
    task: Option<tokio::task::JoinHandle<Result<(), String>>>,
}

impl UnsServer {
    /// Starts the server: its certificate from `pki` (issued for `application_uri` and the
    /// host names), the listener bound (an error says why not), the address space with `tags`.
    pub async fn start(
        pki: &Pki,
        settings: ServerSettings,
        tags: Vec<ServerTag>,
        backend: Arc<dyn Backend>,
    ) -> Result<UnsServer, ServerError> {
        check(&settings)?;
        pki.application_certificate(
            &settings.application_uri,
            &settings.hostnames,
            SystemTime::now(),
        )
        .map_err(|source| ServerError::Certificate {
            dir: pki.dir().to_owned(),
            source,
        })?;
        let addr = format!("{}:{}", settings.host, settings.port);
        let listener = tokio::net::TcpListener::bind((settings.host.as_str(), settings.port))
            .await
            .map_err(|source| ServerError::Listen {
                hint: listen_hint(&source),
                addr: addr.clone(),
                source,
            })?;
        let local = listener
            .local_addr()
            .map_err(|source| ServerError::Listen {
                hint: "the operating system did not say which port it gave",
                addr,
                source,
            })?;
        let shared = Arc::new(Shared {
            backend,
            writes: settings.writes,
            tags: RwLock::new(HashMap::new()),
            users: RwLock::new(HashMap::new()),
        });
        let first_host = settings.hostnames[0].clone();
        let dir = pki.dir();
        let mut builder = ServerBuilder::new()
            .max_array_length(crate::client::MAX_ARRAY_LENGTH)
            .max_message_size(crate::client::MAX_MESSAGE_SIZE)
            .max_chunk_count(crate::client::MAX_CHUNK_COUNT)
            .application_name("Ironplant UNS")
            .application_uri(settings.application_uri.clone())
            .product_uri("urn:ironplant")
            .build_info(BuildInfo {
                product_uri: "urn:ironplant".into(),
                manufacturer_name: "Ironplant".into(),
                product_name: "Ironplant".into(),
                software_version: env!("CARGO_PKG_VERSION").into(),
                build_number: UAString::null(),
                build_date: DateTime::null(),
            })
            .host(first_host.clone())
            .port(local.port())
            .pki_dir(dir)
            .certificate_path(dir.join("own/cert.der"))
            .private_key_path(dir.join("private/private.pem"))
            .create_sample_keypair(false)
            .trust_client_certs(false)
            .check_cert_time(true)
            .discovery_urls(vec!["/".to_owned()])
            .max_sessions(settings.max_sessions)
            .diagnostics_enabled(false)
            .with_authenticator(Arc::new(Authenticator {
                shared: shared.clone(),
            }));
        for (id, endpoint) in endpoints(&settings) {
            builder = builder.add_endpoint(id, endpoint);
        }
        {
            let limits = builder.limits_mut();
            limits.subscriptions.max_monitored_items_per_sub = MAX_MONITORED_ITEMS_PER_SUBSCRIPTION;
            limits.subscriptions.min_sampling_interval_ms = MIN_INTERVAL_MS;
            limits.subscriptions.min_publishing_interval_ms = MIN_INTERVAL_MS;
            limits.operational.max_monitored_items_per_call = MAX_MONITORED_ITEMS_PER_SUBSCRIPTION;
            limits.operational.max_nodes_per_write = MAX_WRITES_PER_REQUEST;
        }
        let namespace_uri = settings.namespace_uri.clone();
        let for_nodes = shared.clone();
        let builder = builder.with_node_manager(InMemoryNodeManagerBuilder::new(
            move |context: ServerContext, address_space: &mut AddressSpace| {
                let index = context
                    .type_tree
                    .write()
                    .namespaces_mut()
                    .add_namespace(&namespace_uri);
                address_space.add_namespace(&namespace_uri, index);
                UnsNodes {
                    shared: for_nodes,
                    namespace: NamespaceMetadata {
                        namespace_uri,
                        namespace_index: index,
                        ..Default::default()
                    },
                }
            },
        ));
        let (server, handle) = builder.build().map_err(ServerError::Stack)?;
        if handle.info().server_certificate.is_none() || handle.info().server_pkey.is_none() {
            return Err(ServerError::Certificate {
                dir: dir.to_owned(),
                source: PkiError::Certificate(
                    "the stack could not read own/cert.der or private/private.pem".into(),
                ),
            });
        }
        let nodes = handle
            .node_managers()
            .get_of_type::<InMemoryNodeManager<UnsNodes>>()
            .ok_or_else(|| ServerError::Stack("the UNS node manager is missing".into()))?;
        let ns = handle
            .get_namespace_index(&settings.namespace_uri)
            .ok_or_else(|| ServerError::Stack("the UNS namespace is not registered".into()))?;
        let root = NodeId::new(ns, ROOT_ID);
        {
            let mut space = nodes.address_space().write();
            ObjectBuilder::new(
                &root,
                QualifiedName::new(ns, settings.root.as_str()),
                settings.root.as_str(),
            )
            .description(format!("The Unified Namespace ({})", settings.namespace_uri).as_str())
            .is_folder()
            .organized_by(NodeId::objects_folder_id())
            .insert(&mut *space);
        }
        let task = tokio::spawn(server.run_with(listener));
        let url = format!("opc.tcp://{}:{}/", url_host(&first_host), local.port());
        let me = UnsServer {
            handle,
            nodes,
            shared,
            ns,
            root,
            url,
            addr: local,
            task: Some(task),
        };
        let added = me.add_tags(&tags);
        info!(
            url = %me.url,
            listen = %me.addr,
            tags = added,
            none = settings.allow_none,
            writes = settings.writes,
            "OPC UA server of the UNS started"
        );
        Ok(me)
    }

    /// The endpoint URL: `opc.tcp://<first host name>:<port>/`.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// The bound port (the real one when the settings said 0).
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The namespace index of the tags.
    pub fn namespace_index(&self) -> u16 {
        self.ns
    }

    /// The root folder (`ns=<ns>;i=1`, under Objects).
    pub fn root_node(&self) -> NodeId {
        self.root.clone()
    }

    /// The NodeId of a tag or asset folder: `ns=<ns>;s=<path>`.
    pub fn node_id(&self, path: &str) -> NodeId {
        NodeId::new(self.ns, path)
    }

    /// Adds tags born at run time (e.g. Sparkplug births), with the asset folders they need;
    /// a tag already served is left as it is. Returns how many were added; a tag that cannot
    /// be served (invalid path, a dataset, a path taken by a folder or a folder path taken by
    /// a tag) is skipped with a warning.
    pub fn add_tags(&self, tags: &[ServerTag]) -> usize {
        let mut new = Vec::new();
        {
            let mut space = self.nodes.address_space().write();
            let known = self.shared.tags.read();
            for tag in tags {
                if known.contains_key(&tag.path) {
                    continue;
                }
                match add_tag(&mut space, self.ns, &self.root, tag, self.shared.writes) {
                    Ok(entry) => new.push((tag.path.clone(), entry)),
                    Err(why) => warn!(tag = %tag.path, "not served over OPC UA: {why}"),
                }
            }
        }
        let added = new.len();
        self.shared.tags.write().extend(new);
        added
    }

    /// Publishes samples (path, value, quality, source time) in one batch: the nodes take them
    /// and the subscribed clients are notified (at their sampling and publishing intervals).
    /// Samples of tags not served are skipped. Returns how many were published.
    pub fn publish<'a>(
        &self,
        samples: impl IntoIterator<Item = (&'a str, &'a Value, Quality, Timestamp)>,
    ) -> usize {
        let now = DateTime::now();
        let batch: Vec<(NodeId, DataValue)> = {
            let tags = self.shared.tags.read();
            samples
                .into_iter()
                .filter_map(|(path, value, quality, at)| {
                    let tag = tags.get(path)?;
                    Some((
                        tag.node.clone(),
                        DataValue {
                            // Empty, not none, for no value: the stack reads the status only
                            // beside a value.
                            value: Some(variant(value, tag.value_type).unwrap_or_default()),
                            status: Some(status_code(quality)),
                            source_timestamp: Some(date_time(at)),
                            server_timestamp: Some(now),
                            ..Default::default()
                        },
                    ))
                })
                .collect()
        };
        let n = batch.len();
        if n == 0 {
            return 0;
        }
        if let Err(status) = self.nodes.set_values(
            self.handle.subscriptions(),
            batch.iter().map(|(id, dv)| (id, None, dv.clone())),
        ) {
            // Every node of the batch was checked above; a tag removed meanwhile is the only way.
            warn!(%status, "OPC UA publish of {n} samples failed");
            return 0;
        }
        n
    }

    /// Stops the server: closes the sessions (waiting a few seconds for them) and the listener.
    pub async fn stop(mut self) {
        self.handle.cancel();
        if let Some(task) = self.task.take() {
            let abort = task.abort_handle();
            match tokio::time::timeout(STOP_TIMEOUT, task).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => warn!("OPC UA server stopped with an error: {e}"),
                Ok(Err(e)) => warn!("OPC UA server task failed: {e}"),
                Err(_) => {
                    warn!("OPC UA server sessions did not close in {STOP_TIMEOUT:?}; aborted");
                    abort.abort();
                }
            }
        }
        info!(url = %self.url, "OPC UA server stopped");
    }
}

impl Drop for UnsServer {
    fn drop(&mut self) {
        self.handle.cancel();
    }
}

impl std::fmt::Debug for UnsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnsServer")
            .field("url", &self.url)
            .field("listen", &self.addr)
            .field("namespace_index", &self.ns)
            .finish_non_exhaustive()
    }
}

/// The settings' own errors, all of them.
fn check(s: &ServerSettings) -> Result<(), ServerError> {
    let mut errors = Vec::new();
    if s.hostnames.is_empty() {
        errors.push("`hostnames` is empty; list the names clients connect to, e.g. [\"localhost\", \"127.0.0.1\"]".to_owned());
    }
    if s.hostnames.iter().any(|h| h.trim().is_empty()) {
        errors.push("`hostnames` has an empty name".to_owned());
    }
    if s.application_uri.trim().is_empty() || s.namespace_uri.trim().is_empty() {
        errors.push("`application_uri` and `namespace_uri` must be set, e.g. \"urn:ironplant:site1:uns\" and \"urn:ironplant:uns\"".to_owned());
    } else if s.application_uri == s.namespace_uri {
        errors.push(format!(
            "`application_uri` and `namespace_uri` are both {:?}; they must differ (the server's own diagnostics use the application URI)",
            s.application_uri
        ));
    }
    if s.root.trim().is_empty() || s.root.len() > 64 {
        errors.push("`root` must be a name of 1 to 64 bytes, e.g. \"Ironplant\"".to_owned());
    }
    if s.max_sessions == 0 {
        errors.push("`max_sessions` is 0; allow at least one session".to_owned());
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ServerError::Settings(errors.join("; ")))
    }
}

fn listen_hint(e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::AddrInUse => {
            "another program (or another Ironplant) uses this port: stop it or choose another port"
        }
        std::io::ErrorKind::PermissionDenied => {
            "ports below 1024 need privileges: use 4840, OPC UA's registered port"
        }
        std::io::ErrorKind::AddrNotAvailable => {
            "this host has no such address: listen on one of its addresses, or 0.0.0.0"
        }
        _ => "check the host and port",
    }
}

/// An IPv6 address in a URL is bracketed.
fn url_host(h: &str) -> String {
    if h.contains(':') && !h.starts_with('[') {
        format!("[{h}]")
    } else {
        h.to_owned()
    }
}

/// The endpoints, by id: the three RSA-OAEP/PSS policies with SignAndEncrypt, with Sign when
/// asked, None when allowed (its user names encrypted with Basic256Sha256).
fn endpoints(s: &ServerSettings) -> Vec<(String, ServerEndpoint)> {
    let mut out = Vec::new();
    for (name, policy) in [
        ("basic256sha256", SecurityPolicy::Basic256Sha256),
        ("aes128sha256rsaoaep", SecurityPolicy::Aes128Sha256RsaOaep),
        ("aes256sha256rsapss", SecurityPolicy::Aes256Sha256RsaPss),
    ] {
        out.push((
            format!("{name}-sign-encrypt"),
            ServerEndpoint::new("/", policy, MessageSecurityMode::SignAndEncrypt, &[]),
        ));
        if s.sign_only {
            out.push((
                format!("{name}-sign"),
                ServerEndpoint::new("/", policy, MessageSecurityMode::Sign, &[]),
            ));
        }
    }
    if s.allow_none {
        let mut none = ServerEndpoint::new_none("/", &[]);
        none.password_security_policy = Some(SecurityPolicy::Basic256Sha256.to_string());
        out.push(("none".to_owned(), none));
    }
    out
}

/// Adds one tag's folders (those missing), variable and properties.
fn add_tag(
    space: &mut AddressSpace,
    ns: u16,
    root: &NodeId,
    tag: &ServerTag,
    writes: bool,
) -> Result<TagEntry, String> {
    let path = TagPath::parse(&tag.path).map_err(|e| format!("invalid path: {e}"))?;
    let (data_type, rank) = match tag.value_type {
        ValueType::Bool => (DataTypeId::Boolean, -1),
        ValueType::Int => (DataTypeId::Int64, -1),
        ValueType::Float => (DataTypeId::Double, -1),
        ValueType::String => (DataTypeId::String, -1),
        ValueType::Array(t) => (scalar_data_type(t), 1),
        ValueType::DataSet => return Err("dataset tags are not served yet".into()),
    };
    let levels: Vec<&str> = path.levels().collect();
    let Some((name, assets)) = levels.split_last() else {
        return Err("empty path".into());
    };
    // The asset folders, created where missing.
    let mut parent = root.clone();
    let mut asset = String::new();
    for level in assets {
        if !asset.is_empty() {
            asset.push('/');
        }
        asset.push_str(level);
        let id = NodeId::new(ns, asset.as_str());
        match space.find(&id) {
            Some(NodeType::Object(_)) => {}
            Some(_) => return Err(format!("{asset:?} is a tag, not an asset folder")),
            None => {
                ObjectBuilder::new(&id, QualifiedName::new(ns, *level), *level)
                    .is_folder()
                    .organized_by(parent.clone())
                    .insert(space);
            }
        }
        parent = id;
    }
    let id = NodeId::new(ns, path.as_str());
    if space.find(&id).is_some() {
        return Err("the path is an asset folder of other tags".into());
    }
    let numeric = matches!(
        tag.value_type,
        ValueType::Int
            | ValueType::Float
            | ValueType::Array(ScalarType::Int)
            | ValueType::Array(ScalarType::Float)
    );
    let range = tag.range.filter(|_| numeric);
    let unit = tag.unit.as_deref().filter(|u| numeric && !u.is_empty());
    let type_definition = match (range, unit) {
        (Some(_), _) => VariableTypeId::AnalogItemType,
        (None, Some(_)) => VariableTypeId::BaseAnalogType,
        (None, None) => VariableTypeId::BaseDataVariableType,
    };
    let writable = writes && tag.writable;
    let mut var = VariableBuilder::new(&id, QualifiedName::new(ns, *name), *name)
        .data_type(data_type)
        .value_rank(rank)
        .minimum_sampling_interval(MIN_INTERVAL_MS)
        .has_type_definition(type_definition)
        .organized_by(parent);
    if rank == 1 {
        var = var.array_dimensions(&[0]);
    }
    if let Some(d) = tag.description.as_deref() {
        var = var.description(d);
    }
    if writable {
        var = var.writable();
    }
    var.insert(space);
    if let Some(NodeType::Variable(v)) = space.find_mut(&id) {
        v.set_data_value(DataValue {
            // An empty variant, not none: the stack reads the status only beside a value.
            value: Some(Variant::Empty),
            status: Some(StatusCode::BadWaitingForInitialData),
            server_timestamp: Some(DateTime::now()),
            ..Default::default()
        });
    }
    if let Some((low, high)) = range {
        property(
            space,
            &id,
            "EURange",
            DataTypeId::Range,
            ExtensionObject::from_message(Range { low, high }),
        );
    }
    if let Some(unit) = unit {
        property(
            space,
            &id,
            "EngineeringUnits",
            DataTypeId::EUInformation,
            ExtensionObject::from_message(EUInformation {
                namespace_uri: UNECE_UNITS.into(),
                unit_id: -1,
                display_name: LocalizedText::new("", unit),
                description: LocalizedText::new("", unit),
            }),
        );
    }
    Ok(TagEntry {
        node: id,
        value_type: tag.value_type,
        writable,
    })
}

/// A property with a namespace-0 browse name (what clients and percent deadbands look for),
/// NodeId `s=<tag path>#<name>` (`#` is never in a tag path).
fn property(
    space: &mut AddressSpace,
    of: &NodeId,
    name: &str,
    data_type: DataTypeId,
    value: ExtensionObject,
) {
    let path = match &of.identifier {
        Identifier::String(s) => s.as_ref().to_owned(),
        other => other.to_string(),
    };
    let id = NodeId::new(of.namespace, format!("{path}#{name}"));
    VariableBuilder::new(&id, QualifiedName::new(0, name), name)
        .data_type(data_type)
        .value(value)
        .has_type_definition(VariableTypeId::PropertyType)
        .property_of(of.clone())
        .insert(space);
}

fn scalar_data_type(t: ScalarType) -> DataTypeId {
    match t {
        ScalarType::Bool => DataTypeId::Boolean,
        ScalarType::Int => DataTypeId::Int64,
        ScalarType::Float => DataTypeId::Double,
        ScalarType::String => DataTypeId::String,
    }
}

/// The StatusCode of a quality: the closest OPC UA sub-code for each reason, chosen so that
/// [`crate::map::quality`] gives the level and reason back where OPC UA has a code for it.
pub fn status_code(q: Quality) -> StatusCode {
    use QualityReason as R;
    match q.level {
        QualityLevel::Good => StatusCode::Good,
        QualityLevel::Uncertain => match q.reason {
            R::None | R::CalculationFailed => StatusCode::Uncertain,
            R::CommFailure => StatusCode::UncertainNoCommunicationLastUsableValue,
            R::DeviceFailure => StatusCode::UncertainSensorNotAccurate,
            R::OutOfRange => StatusCode::UncertainEngineeringUnitsExceeded,
            R::ConfigError => StatusCode::UncertainConfigurationError,
            R::Stale | R::SequenceGap => StatusCode::UncertainLastUsableValue,
            R::NotConnected => StatusCode::UncertainInitialValue,
            R::InsufficientData => StatusCode::UncertainSubNormal,
            R::Implausible => StatusCode::UncertainSensorCalibration,
        },
        QualityLevel::Bad => match q.reason {
            R::None | R::CalculationFailed => StatusCode::Bad,
            R::CommFailure => StatusCode::BadCommunicationError,
            R::DeviceFailure => StatusCode::BadDeviceFailure,
            R::OutOfRange => StatusCode::BadOutOfRange,
            R::ConfigError => StatusCode::BadConfigurationError,
            R::Stale => StatusCode::BadNoDataAvailable,
            R::NotConnected => StatusCode::BadWaitingForInitialData,
            R::InsufficientData => StatusCode::BadAggregateInvalidInputs,
            R::SequenceGap => StatusCode::BadDataLost,
            R::Implausible => StatusCode::BadSensorFailure,
        },
    }
}

/// µs since the Unix epoch to OPC UA time (100 ns ticks since 1601), clamped to what OPC UA
/// can say (1601 to the end of 9999).
fn date_time(t: Timestamp) -> DateTime {
    const UNIX_EPOCH_TICKS: i64 = 116_444_736_000_000_000;
    const MAX_TICKS: i64 = 2_650_467_743_999_999_999;
    let ticks =
        t.0.saturating_mul(10)
            .saturating_add(UNIX_EPOCH_TICKS)
            .clamp(0, MAX_TICKS);
    DateTime::from(ticks)
}

/// The variant of a published value: as the tag's data type says (an integer of a float tag
/// is widened). An unsigned integer above i64::MAX stays exact as a UInt64, against the
/// declared Int64: exactness first.
fn variant(v: &Value, t: ValueType) -> Option<Variant> {
    let float_tag = matches!(t, ValueType::Float | ValueType::Array(ScalarType::Float));
    Some(match v {
        Value::Null | Value::DataSet(_) => return None,
        Value::Bool(b) => Variant::Boolean(*b),
        Value::Int(i) if float_tag => Variant::Double(*i as f64),
        Value::Int(i) => Variant::Int64(*i),
        Value::U64(u) if float_tag => Variant::Double(*u as f64),
        Value::U64(u) => Variant::UInt64(*u),
        Value::Float(f) => Variant::Double(*f),
        Value::String(s) => Variant::String(UAString::from(&**s)),
        Value::Array(a) => match a.elements() {
            Elements::Bool(v) => Variant::from(v.to_vec()),
            Elements::Int(v) if float_tag => {
                Variant::from(v.iter().map(|i| *i as f64).collect::<Vec<f64>>())
            }
            Elements::Int(v) => Variant::from(v.to_vec()),
            Elements::U64(v) if float_tag => {
                Variant::from(v.iter().map(|u| *u as f64).collect::<Vec<f64>>())
            }
            Elements::U64(v) => Variant::from(v.to_vec()),
            Elements::Float(v) => Variant::from(v.to_vec()),
            Elements::String(v) => Variant::from(
                v.iter()
                    .map(|s| UAString::from(&**s))
                    .collect::<Vec<UAString>>(),
            ),
        },
    })
}

/// The value a client wrote, typed to the tag: the same type, or a numeric widening (any
/// integer to an int tag, any integer or Float to a float tag); else `BadTypeMismatch`.
pub fn written_value(v: &Variant, t: ValueType) -> Result<Value, StatusCode> {
    match t {
        ValueType::Bool => scalar_written(v, ScalarType::Bool),
        ValueType::Int => scalar_written(v, ScalarType::Int),
        ValueType::Float => scalar_written(v, ScalarType::Float),
        ValueType::String => scalar_written(v, ScalarType::String),
        ValueType::Array(e) => {
            let Variant::Array(a) = v else {
                return Err(StatusCode::BadTypeMismatch);
            };
            if a.dimensions.as_ref().is_some_and(|d| d.len() > 1) {
                return Err(StatusCode::BadTypeMismatch);
            }
            let values = a
                .values
                .iter()
                .map(|x| scalar_written(x, e))
                .collect::<Result<Vec<Value>, StatusCode>>()?;
            match Array::from_values(&values, e) {
                Ok(Some(array)) => Ok(Value::array(array)),
                Ok(None) => Err(StatusCode::BadTypeMismatch),
                Err(_) => Err(StatusCode::BadOutOfRange),
            }
        }
        ValueType::DataSet => Err(StatusCode::BadNotWritable),
    }
}

fn scalar_written(v: &Variant, t: ScalarType) -> Result<Value, StatusCode> {
    let integer = matches!(
        v,
        Variant::SByte(_)
            | Variant::Byte(_)
            | Variant::Int16(_)
            | Variant::UInt16(_)
            | Variant::Int32(_)
            | Variant::UInt32(_)
            | Variant::Int64(_)
            | Variant::UInt64(_)
    );
    let ok = match t {
        ScalarType::Bool => matches!(v, Variant::Boolean(_)),
        ScalarType::Int => integer,
        ScalarType::Float => integer || matches!(v, Variant::Float(_) | Variant::Double(_)),
        ScalarType::String => matches!(v, Variant::String(s) if !s.is_null()),
    };
    if !ok {
        return Err(StatusCode::BadTypeMismatch);
    }
    let value = crate::map::value(v).map_err(|_| StatusCode::BadTypeMismatch)?;
    if matches!(value, Value::Float(f) if !f.is_finite()) {
        // NaN or an infinity is no setpoint.
        return Err(StatusCode::BadOutOfRange);
    }
    Ok(match (t, value) {
        (ScalarType::Float, Value::Int(i)) => Value::Float(i as f64),
        (ScalarType::Float, Value::U64(u)) => Value::Float(u as f64),
        (_, value) => value,
    })
}

/// The user token of a platform user (prefixed, so that no user name can be taken for the
/// stack's anonymous token).
fn user_token(name: &str) -> UserToken {
    UserToken(format!("user:{name}"))
}

/// Anonymous refused; user names checked by the backend; X.509 user tokens not offered.
struct Authenticator {
    shared: Arc<Shared>,
}

// The stack's traits are `#[async_trait]`; their methods are written here in the form that
// macro produces (this crate does not depend on async-trait).
impl AuthManager for Authenticator {
    fn authenticate_username_identity_token<'life0, 'life1, 'life2, 'life3, 'async_trait>(
        &'life0 self,
        _endpoint: &'life1 ServerEndpoint,
        username: &'life2 str,
        password: &'life3 Password,
    ) -> BoxFuture<'async_trait, Result<UserToken, opcua::types::Error>>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        'life2: 'async_trait,
        'life3: 'async_trait,
        Self: 'async_trait,
    {
        let check = self.shared.backend.authenticate(username, password.get());
        let name = username.to_owned();
        Box::pin(async move {
            let refused = |why: String| {
                warn!(user = %name, "OPC UA session refused: {why}");
                opcua::types::Error::new(
                    StatusCode::BadUserAccessDenied,
                    format!("user {name:?} refused"),
                )
            };
            match tokio::time::timeout(AUTHENTICATE_TIMEOUT, check).await {
                Ok(Ok(user)) => {
                    let token = user_token(&user.name);
                    debug!(user = %user.name, can_write = user.can_write, "OPC UA user authenticated");
                    self.shared.users.write().insert(token.0.clone(), user);
                    Ok(token)
                }
                Ok(Err(why)) => Err(refused(why)),
                Err(_) => Err(refused(format!(
                    "the user check did not answer within {AUTHENTICATE_TIMEOUT:?}"
                ))),
            }
        })
    }

    fn effective_user_access_level(
        &self,
        token: &UserToken,
        user_access_level: AccessLevel,
        node_id: &NodeId,
    ) -> AccessLevel {
        let Some(user) = self.shared.user(token) else {
            return AccessLevel::empty();
        };
        let mut level = user_access_level;
        if !user.can_write {
            level -= AccessLevel::CURRENT_WRITE;
        }
        // A tag (or one of its properties, `s=<path>#EURange`) outside the user's read rules:
        // nothing to read or subscribe to.
        if let Identifier::String(id) = &node_id.identifier {
            let path = id.as_ref().split('#').next().unwrap_or_default();
            if self.shared.tags.read().contains_key(path)
                && !self.shared.backend.can_read(&user, path)
            {
                level -= AccessLevel::CURRENT_READ
                    | AccessLevel::CURRENT_WRITE
                    | AccessLevel::HISTORY_READ;
            }
        }
        level
    }

    fn user_token_policies(&self, endpoint: &ServerEndpoint) -> Vec<UserTokenPolicy> {
        // Empty security policy: the password is encrypted with the endpoint's policy. On a
        // None endpoint the policy says Basic256Sha256 (and the endpoint's password policy
        // matches), so that clients encrypt the password there too.
        let security_policy_uri = if endpoint.security_policy() == SecurityPolicy::None {
            UAString::from(SecurityPolicy::Basic256Sha256.to_uri())
        } else {
            UAString::null()
        };
        vec![UserTokenPolicy {
            policy_id: user_pass_security_policy_id(endpoint),
            token_type: UserTokenType::UserName,
            issued_token_type: UAString::null(),
            issuer_endpoint_url: UAString::null(),
            security_policy_uri,
        }]
    }
}

/// The node manager of our namespace: the stack's in-memory address space, with writes sent
/// to the backend as the session's user.
struct UnsNodes {
    shared: Arc<Shared>,
    namespace: NamespaceMetadata,
}

/// A write checked and typed, waiting for the backend.
struct PendingWrite {
    index: usize,
    user: ServerUser,
    path: String,
    value: Value,
}

impl UnsNodes {
    /// Checks one write against the node, the tag and the user; the typed value, or the
    /// status to answer.
    fn check_write(
        &self,
        context: &RequestContext,
        space: &AddressSpace,
        write: &WriteNode,
    ) -> Result<(ServerUser, String, Value), StatusCode> {
        let w = write.value();
        let node = space.find(&w.node_id).ok_or(StatusCode::BadNodeIdUnknown)?;
        if w.attribute_id != AttributeId::Value || !matches!(node, NodeType::Variable(_)) {
            return Err(StatusCode::BadNotWritable);
        }
        if w.index_range != NumericRange::None {
            return Err(StatusCode::BadWriteNotSupported);
        }
        let Identifier::String(path) = &w.node_id.identifier else {
            return Err(StatusCode::BadNotWritable);
        };
        let path = path.as_ref().to_owned();
        let tag = self
            .shared
            .tags
            .read()
            .get(&path)
            .cloned()
            .ok_or(StatusCode::BadNotWritable)?;
        if !tag.writable {
            return Err(StatusCode::BadNotWritable);
        }
        let user = self
            .shared
            .user(&context.token)
            .ok_or(StatusCode::BadUserAccessDenied)?;
        let variant = w.value.value.as_ref().ok_or(StatusCode::BadTypeMismatch)?;
        let value = written_value(variant, tag.value_type)?;
        if !user_access_level(context, node).contains(AccessLevel::CURRENT_WRITE) {
            // Refused here, but the platform hears of it (its audit records refused commands).
            self.shared.backend.write_refused(&user, &path, value);
            return Err(StatusCode::BadUserAccessDenied);
        }
        Ok((user, path, value))
    }
}

impl InMemoryNodeManagerImpl for UnsNodes {
    fn init<'life0, 'life1, 'async_trait>(
        &'life0 self,
        _address_space: &'life1 mut AddressSpace,
        _context: ServerContext,
    ) -> BoxFuture<'async_trait, ()>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(async {})
    }

    fn name(&self) -> &str {
        "ironplant-uns"
    }

    fn namespaces(&self) -> Vec<NamespaceMetadata> {
        vec![self.namespace.clone()]
    }

    fn write<'life0, 'life1, 'life2, 'life3, 'life4, 'async_trait>(
        &'life0 self,
        context: &'life1 RequestContext,
        address_space: &'life2 RwLock<AddressSpace>,
        nodes_to_write: &'life3 mut [&'life4 mut WriteNode],
    ) -> BoxFuture<'async_trait, Result<(), StatusCode>>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        'life2: 'async_trait,
        'life3: 'async_trait,
        'life4: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(async move {
            let mut pending = Vec::new();
            {
                let space = address_space.read();
                for (index, write) in nodes_to_write.iter_mut().enumerate() {
                    match self.check_write(context, &space, write) {
                        Ok((user, path, value)) => pending.push(PendingWrite {
                            index,
                            user,
                            path,
                            value,
                        }),
                        Err(status) => write.set_status(status),
                    }
                }
            }
            // One after the other, in the client's order (they are commands); one deadline for
            // the request.
            let deadline = tokio::time::Instant::now() + WRITE_TIMEOUT;
            for p in pending {
                // Past the deadline nothing more is submitted; a command already submitted
                // runs to its end (audited, verified) even when the client is told BadTimeout.
                if tokio::time::Instant::now() >= deadline {
                    if let Some(write) = nodes_to_write.get_mut(p.index) {
                        write.set_status(StatusCode::BadTimeout);
                    }
                    continue;
                }
                let submitted = tokio::spawn(self.shared.backend.write(&p.user, &p.path, p.value));
                let status = match tokio::time::timeout_at(deadline, submitted).await {
                    Ok(Err(joined)) => {
                        warn!(user = %p.user.name, tag = %p.path, "OPC UA write task failed: {joined}");
                        StatusCode::BadInternalError
                    }
                    Ok(Ok(Ok(()))) => {
                        debug!(user = %p.user.name, tag = %p.path, "OPC UA write done");
                        StatusCode::Good
                    }
                    Ok(Ok(Err(refusal))) => {
                        info!(user = %p.user.name, tag = %p.path, "OPC UA write refused: {refusal}");
                        refusal.status_code()
                    }
                    Err(_) => {
                        warn!(user = %p.user.name, tag = %p.path, "OPC UA write not answered within {WRITE_TIMEOUT:?}");
                        StatusCode::BadTimeout
                    }
                };
                if let Some(write) = nodes_to_write.get_mut(p.index) {
                    write.set_status(status);
                }
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every quality maps to a StatusCode of its level; where OPC UA has a code for the reason,
    /// `map::quality` gives the same quality back.
    #[test]
    fn quality_round_trips_through_status_codes() {
        use QualityReason as R;
        let reasons = [
            R::None,
            R::CommFailure,
            R::DeviceFailure,
            R::OutOfRange,
            R::ConfigError,
            R::Stale,
            R::NotConnected,
            R::CalculationFailed,
            R::InsufficientData,
            R::SequenceGap,
            R::Implausible,
        ];
        assert_eq!(status_code(Quality::GOOD), StatusCode::Good);
        assert_eq!(
            crate::map::quality(status_code(Quality::GOOD)),
            Quality::GOOD
        );
        for r in reasons {
            let u = status_code(Quality::uncertain(r));
            assert!(u.is_uncertain(), "{r:?}: {u}");
            let b = status_code(Quality::bad(r));
            assert!(b.is_bad(), "{r:?}: {b}");
            assert_eq!(crate::map::quality(u).level, QualityLevel::Uncertain);
            assert_eq!(crate::map::quality(b).level, QualityLevel::Bad);
        }
        // The reasons map.rs reads back today.
        for q in [
            Quality::uncertain(R::DeviceFailure),
            Quality::uncertain(R::OutOfRange),
            Quality::uncertain(R::Stale),
            Quality::uncertain(R::InsufficientData),
            Quality::bad(R::CommFailure),
            Quality::bad(R::DeviceFailure),
            Quality::bad(R::OutOfRange),
            Quality::bad(R::ConfigError),
            Quality::bad(R::Stale),
            Quality::bad(R::NotConnected),
        ] {
            assert_eq!(crate::map::quality(status_code(q)), q, "{q:?}");
        }
    }

    #[test]
    fn written_values_are_typed_with_numeric_widening_only() {
        assert_eq!(
            written_value(&Variant::Int32(7), ValueType::Int),
            Ok(Value::Int(7))
        );
        assert_eq!(
            written_value(&Variant::UInt64(u64::MAX), ValueType::Int),
            Ok(Value::U64(u64::MAX))
        );
        assert_eq!(
            written_value(&Variant::Int16(-3), ValueType::Float),
            Ok(Value::Float(-3.0))
        );
        assert_eq!(
            written_value(&Variant::Float(0.5), ValueType::Float),
            Ok(Value::Float(0.5))
        );
        assert_eq!(
            written_value(&Variant::Double(1.5), ValueType::Int),
            Err(StatusCode::BadTypeMismatch)
        );
        assert_eq!(
            written_value(&Variant::Boolean(true), ValueType::Float),
            Err(StatusCode::BadTypeMismatch)
        );
        assert_eq!(
            written_value(&Variant::Int32(1), ValueType::Bool),
            Err(StatusCode::BadTypeMismatch)
        );
        assert_eq!(
            written_value(&Variant::Empty, ValueType::String),
            Err(StatusCode::BadTypeMismatch)
        );
        assert_eq!(
            written_value(&Variant::from("run"), ValueType::String),
            Ok(Value::String("run".into()))
        );
        let a = written_value(
            &Variant::from(vec![1i32, 2]),
            ValueType::Array(ScalarType::Float),
        )
        .expect("ints widen into a float array");
        assert_eq!(a.kind(), "array<float>");
        assert_eq!(
            written_value(
                &Variant::from(vec![1.5f64]),
                ValueType::Array(ScalarType::Int)
            ),
            Err(StatusCode::BadTypeMismatch)
        );
        assert_eq!(
            written_value(&Variant::Double(1.0), ValueType::Array(ScalarType::Float)),
            Err(StatusCode::BadTypeMismatch)
        );
    }

    #[test]
    fn published_values_follow_the_tag_type() {
        assert_eq!(
            variant(&Value::Int(3), ValueType::Float),
            Some(Variant::Double(3.0))
        );
        assert_eq!(
            variant(&Value::Int(3), ValueType::Int),
            Some(Variant::Int64(3))
        );
        assert_eq!(variant(&Value::Null, ValueType::Int), None);
        let t = Timestamp(1_765_000_000_123_456);
        assert_eq!(crate::map::timestamp(&date_time(t)), t);
        // Out of OPC UA's range: clamped, no panic.
        let _ = date_time(Timestamp(i64::MAX));
        let _ = date_time(Timestamp(i64::MIN));
    }

    #[test]
    fn settings_errors_are_collected() {
        let s = ServerSettings {
            host: "127.0.0.1".into(),
            port: 0,
            hostnames: vec![],
            application_uri: "urn:x".into(),
            namespace_uri: "urn:x".into(),
            root: String::new(),
            allow_none: false,
            sign_only: false,
            writes: false,
            max_sessions: 0,
        };
        let Err(ServerError::Settings(e)) = check(&s) else {
            panic!("refused");
        };
        for part in ["hostnames", "must differ", "root", "max_sessions"] {
            assert!(e.contains(part), "{part} in {e}");
        }
    }
}
