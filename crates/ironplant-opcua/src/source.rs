//! The OPC UA connector: one [`OpcuaSource`] per `[[opcua.connection]]`, a platform source
//! (`core::Source`) and the device writer of its tags (`core::DeviceWriter`).
//!
//! It opens a session with the platform's application instance certificate ([`crate::pki`]),
//! resolves each configured node (a `nsu=` namespace URI to the server's current index), reads
//! their DataType (for typed writes) and, where the config leaves them out, EngineeringUnits
//! and EURange into the tag's unit and range, then subscribes: one subscription, a monitored
//! item per node with its sampling interval, queue size and deadband. Notifications become
//! samples (StatusCode → quality with its reason, source and server timestamps).
//!
//! Recovery: the stack reconnects by itself (back-off up to `reconnect_max`), re-activates the
//! session when the server still has it, else transfers or re-creates the subscription. While
//! the connection is down every tag is published Bad (CommFailure). After a new session the
//! namespace array is read again; if the server renumbered a namespace the monitored items
//! are made again with the new indexes. A session that cannot be opened (server down, its
//! certificate not trusted, a wrong password) is retried with back-off and reported once per
//! cause as a system (or security) event.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use ironplant_core::{
    BoxFuture, ComponentError, DeviceWriteError, DeviceWriter, Event, EventKind, Quality,
    QualityReason, Sample, Severity, SourceContext, TagId, TagMeta, Timestamp, Value, ValueType,
    WriteAck,
};
use opcua::client::Session;
use opcua::types::{
    AttributeId, BrowsePath, DataValue, EUInformation, NodeId, QualifiedName, Range, ReadValueId,
    ReferenceTypeId, RelativePath, RelativePathElement, StatusCode, TimestampsToReturn, Variant,
    VariantScalarTypeId, WriteValue,
};
use parking_lot::Mutex;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::client::{
    self, ClientError, ClientSettings, Connection, Deadband, Identity, Monitor, SessionEvent,
    Tuning,
};
use crate::map;
use crate::pki::Pki;
use crate::settings::{source_name, ConnectionConfig, DeadbandConfig, NodeConfig, Secret};

/// The application URI the platform presents as an OPC UA client (the first SAN entry of its
/// certificate, `<data-dir>/opcua/pki/own/cert.der`).
pub const APPLICATION_URI: &str = "urn:ironplant";

/// The host names in the client certificate.
pub fn client_names() -> Vec<String> {
    vec!["localhost".to_owned()]
}

/// How long a write's read-back waits for the node to show the written value.
const READ_BACK_WINDOW: Duration = Duration::from_secs(2);

/// One `[[opcua.connection]]` with its nodes: a source and the writer of its tags.
pub struct OpcuaSource {
    cfg: ConnectionConfig,
    nodes: Vec<NodeConfig>,
    pki_dir: PathBuf,
    shared: Arc<Shared>,
    /// Registered at every run (the same `Arc`, so a restart is not a second writer).
    writer: Arc<dyn DeviceWriter>,
}

/// What the writer needs of the current session.
#[derive(Default)]
struct Shared {
    live: Mutex<Option<Arc<Live>>>,
}

/// What [`OpcuaSource::setup`] made.
struct Setup {
    sub: u32,
    changes: UnboundedReceiver<client::Change>,
    /// Monitored node → config index.
    index: HashMap<NodeId, usize>,
    /// Config index and why, of the nodes not monitored.
    broken: Vec<(usize, String)>,
}

/// An open session's view of the nodes.
struct Live {
    session: Arc<Session>,
    url: String,
    /// Per configured node: its id on this session (namespace index resolved) and data type;
    /// `None` for a node that could not be resolved.
    nodes: Vec<Option<(NodeId, Option<VariantScalarTypeId>)>>,
    by_tag: HashMap<TagId, usize>,
    request_timeout: Duration,
}

impl OpcuaSource {
    /// The connector of `cfg` for `nodes` (those of `cfg.id`), with the platform's OPC UA
    /// certificates in `pki_dir` (`<data-dir>/opcua/pki`).
    pub fn new(cfg: ConnectionConfig, nodes: Vec<NodeConfig>, pki_dir: PathBuf) -> OpcuaSource {
        let shared: Arc<Shared> = Arc::default();
        let writer = Arc::new(OpcuaWriter {
            shared: shared.clone(),
            id: cfg.id.clone(),
        });
        OpcuaSource {
            cfg,
            nodes,
            pki_dir,
            shared,
            writer,
        }
    }
}

impl ironplant_core::Source for OpcuaSource {
    fn name(&self) -> String {
        source_name(&self.cfg.id)
    }

    fn run(self: Arc<Self>, ctx: SourceContext) -> BoxFuture<'static, Result<(), ComponentError>> {
        Box::pin(async move { self.run_inner(ctx).await })
    }
}

/// Why a session could not be used, kept to report each cause once.
#[derive(Debug, Clone, PartialEq)]
struct Failure {
    code: &'static str,
    message: String,
    security: bool,
}

impl OpcuaSource {
    async fn run_inner(self: Arc<Self>, mut ctx: SourceContext) -> Result<(), ComponentError> {
        let name = source_name(&self.cfg.id);
        ctx.writers
            .register(&name, self.writer.clone())
            .map_err(|e| ComponentError::new(e.to_string()))?;
        let tags: Vec<Option<TagMeta>> = self
            .nodes
            .iter()
            .map(|n| ctx.namespace.lookup(n.tag.as_str()))
            .collect();
        let mut state = TagState::new(&tags);
        let mut backoff = Duration::from_millis(500);
        let mut last_failure: Option<Failure> = None;
        loop {
            let started = Instant::now();
            let mut stop = ctx.shutdown.clone();
            let result = tokio::select! {
                r = self.session(&ctx, &tags, &mut state) => r,
                () = stop.requested() => Ok(()),
            };
            *self.shared.live.lock() = None;
            match result {
                Ok(()) => return Ok(()),
                Err(f) => {
                    let mut out = Vec::new();
                    state.mark_all(Quality::bad(QualityReason::CommFailure), &mut out);
                    ctx.bus.publish(out).await;
                    if last_failure.as_ref() != Some(&f) {
                        tracing::warn!(connection = %self.cfg.id, "{}", f.message);
                        let kind = if f.security {
                            EventKind::Security
                        } else {
                            EventKind::System
                        };
                        ctx.events.publish(
                            Event::new(Timestamp::now(), kind, f.code, &name, f.message.clone())
                                .with_severity(Severity::Warning)
                                .with_attribute("url", Value::String(self.cfg.url.as_str().into())),
                        );
                        last_failure = Some(f);
                    }
                }
            }
            if started.elapsed() > Duration::from_secs(60) {
                backoff = Duration::from_millis(500);
            }
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = ctx.shutdown.requested() => return Ok(()),
            }
            backoff = (backoff * 2).min(self.cfg.reconnect_max);
        }
    }

    fn client_settings(&self) -> Result<ClientSettings, Failure> {
        let identity = match &self.cfg.user {
            None => match &self.cfg.user_certificate {
                Some((certificate, key)) => Identity::Certificate {
                    certificate: certificate.clone(),
                    key: key.clone(),
                },
                None => Identity::Anonymous,
            },
            Some((name, secret)) => Identity::User {
                name: name.clone(),
                password: match secret {
                    Secret::Inline(p) => p.clone(),
                    Secret::Env(var) => std::env::var(var).map_err(|_| Failure {
                        code: "opcua_no_password",
                        message: format!(
                            "OPC UA connection {}: the environment variable {var} (password_env) \
                             is not set; set it in the platform's environment and restart",
                            self.cfg.id
                        ),
                        security: false,
                    })?,
                },
            },
        };
        Ok(ClientSettings {
            url: self.cfg.url.clone(),
            policy: self.cfg.policy,
            encrypt: self.cfg.encrypt,
            identity,
            application_uri: APPLICATION_URI.into(),
            request_timeout: self.cfg.request_timeout,
            retries: -1,
        })
    }

    /// One session: open, set up, stream notifications until it fails for good (`Err`) or the
    /// platform stops (`Ok`, by the caller's select).
    async fn session(
        &self,
        ctx: &SourceContext,
        tags: &[Option<TagMeta>],
        state: &mut TagState,
    ) -> Result<(), Failure> {
        let settings = self.client_settings()?;
        let pki = Pki::open_or_create(&self.pki_dir, SystemTime::now()).map_err(|e| Failure {
            code: "opcua_certificates",
            message: format!("OPC UA connection {}: {e}", self.cfg.id),
            security: false,
        })?;
        pki.application_certificate(APPLICATION_URI, &client_names(), SystemTime::now())
            .map_err(|e| Failure {
                code: "opcua_certificates",
                message: format!("OPC UA connection {}: {e}", self.cfg.id),
                security: false,
            })?;
        let tuning = Tuning {
            keep_alive: self.cfg.keep_alive,
            max_failed_keep_alives: 3,
            publish_timeout: self
                .cfg
                .request_timeout
                .max(self.cfg.publishing_interval * 4),
            reconnect_max: self.cfg.reconnect_max,
            // A new session means a restarted server (or an expired session): the subscription
            // is made again here, after resolving the namespaces again.
            recreate_subscriptions: false,
        };
        let mut conn = match client::connect_with(&pki, &settings, &tuning).await {
            Ok(c) => c,
            Err(e) => return Err(self.explain(&pki, e).await),
        };
        let mut events = conn.take_events().ok_or_else(|| Failure {
            code: "opcua_session",
            message: "the session's events were taken".into(),
            security: false,
        })?;
        let fail = |what: &str, e: ClientError| Failure {
            code: "opcua_session",
            message: format!(
                "OPC UA connection {} ({}): {what}: {e}",
                self.cfg.id, self.cfg.url
            ),
            security: false,
        };
        let mut setup = self
            .setup(ctx, &conn, tags)
            .await
            .map_err(|e| fail("set up", e))?;
        self.adopt(ctx, state, &mut setup).await;
        tracing::info!(connection = %self.cfg.id, url = %self.cfg.url, nodes = self.nodes.len(), "OPC UA session open");
        self.event(
            ctx,
            "opcua_connected",
            Severity::Info,
            format!(
                "OPC UA connection {} to {}: session open, {} of {} nodes subscribed",
                self.cfg.id,
                self.cfg.url,
                setup.index.len(),
                self.nodes.len()
            ),
        );
        let result = loop {
            tokio::select! {
                // Notifications first: those received before a connection loss are published
                // before the tags are marked Bad, never after.
                biased;
                change = setup.changes.recv() => {
                    let Some(first) = change else {
                        break Err(fail("subscription", ClientError::Config("the notification channel closed".into())));
                    };
                    let mut out = Vec::new();
                    state.push(first, &mut out);
                    // A publish response delivers its notifications together: one batch.
                    while out.len() < 10_000 {
                        match setup.changes.try_recv() {
                            Ok(c) => state.push(c, &mut out),
                            Err(_) => break,
                        }
                    }
                    ctx.bus.publish(out).await;
                }
                event = events.recv() => match event {
                    None => break Err(Failure {
                        code: "opcua_disconnected",
                        message: format!("OPC UA connection {} ({}): the session ended", self.cfg.id, self.cfg.url),
                        security: false,
                    }),
                    Some(SessionEvent::Lost(status)) => {
                        tracing::warn!(connection = %self.cfg.id, %status, "OPC UA connection lost; reconnecting");
                        self.event(
                            ctx,
                            "opcua_connection_lost",
                            Severity::Warning,
                            format!(
                                "OPC UA connection {} to {} lost ({status}); its tags are Bad \
                                 (CommFailure) until it is back",
                                self.cfg.id, self.cfg.url
                            ),
                        );
                        let mut out = Vec::new();
                        while let Ok(c) = setup.changes.try_recv() {
                            state.push(c, &mut out);
                        }
                        state.mark_all(Quality::bad(QualityReason::CommFailure), &mut out);
                        ctx.bus.publish(out).await;
                    }
                    Some(SessionEvent::Reconnected { new_session }) => {
                        tracing::info!(connection = %self.cfg.id, new_session, "OPC UA session back");
                        self.event(
                            ctx,
                            "opcua_reconnected",
                            Severity::Info,
                            format!(
                                "OPC UA connection {} to {} is back ({})",
                                self.cfg.id,
                                self.cfg.url,
                                if new_session {
                                    "a new session: subscribed again"
                                } else {
                                    "the session re-activated: its subscription carries on"
                                }
                            ),
                        );
                        if new_session {
                            // The server lost our session (restarted, or it expired): the old
                            // subscription is gone with it. Resolve the namespaces again (a
                            // restarted server may number them differently) and subscribe.
                            let _ = conn.session.delete_subscriptions(&[setup.sub]).await;
                            setup = self
                                .setup(ctx, &conn, tags)
                                .await
                                .map_err(|e| fail("subscribe again", e))?;
                            self.adopt(ctx, state, &mut setup).await;
                        } else {
                            // The subscription carries on, but sends only changes: values
                            // that did not change while the tags were Bad are read once.
                            self.refresh(ctx, &conn, state).await;
                        }
                    }
                    Some(SessionEvent::SubscriptionLost(status)) => {
                        tracing::warn!(connection = %self.cfg.id, %status, "the server dropped the subscription: subscribing again");
                        let _ = conn.session.delete_subscriptions(&[setup.sub]).await;
                        setup = self
                            .setup(ctx, &conn, tags)
                            .await
                            .map_err(|e| fail("subscribe again", e))?;
                        self.adopt(ctx, state, &mut setup).await;
                    }
                    Some(SessionEvent::ReconnectFailed(status)) => {
                        tracing::debug!(connection = %self.cfg.id, %status, "OPC UA reconnection failed; retrying");
                    }
                    Some(SessionEvent::KeepAliveFailed(status)) => {
                        tracing::debug!(connection = %self.cfg.id, %status, "OPC UA keep-alive failed");
                    }
                },
            }
        };
        conn.close().await;
        result
    }

    /// Takes a new subscription's node index, and reports (once per setup) and marks Bad the
    /// nodes it could not monitor.
    async fn adopt(&self, ctx: &SourceContext, state: &mut TagState, setup: &mut Setup) {
        state.index = std::mem::take(&mut setup.index);
        if setup.broken.is_empty() {
            return;
        }
        let mut out = Vec::new();
        for (i, why) in &setup.broken {
            tracing::warn!(connection = %self.cfg.id, "{why}");
            state.mark_one(*i, Quality::bad(QualityReason::ConfigError), &mut out);
            self.event(
                ctx,
                "opcua_node_unavailable",
                Severity::Warning,
                format!(
                    "OPC UA connection {}: {why}; {} stays Bad (ConfigError)",
                    self.cfg.id, self.nodes[*i].tag
                ),
            );
        }
        ctx.bus.publish(out).await;
    }

    /// Reads every monitored node once and publishes what it shows (after a re-activated
    /// session, whose subscription sends only later changes).
    async fn refresh(&self, ctx: &SourceContext, conn: &Connection, state: &mut TagState) {
        let nodes: Vec<NodeId> = state.index.keys().cloned().collect();
        let mut out = Vec::new();
        for chunk in nodes.chunks(500) {
            let reads: Vec<ReadValueId> = chunk.iter().cloned().map(ReadValueId::from).collect();
            match conn
                .session
                .read(&reads, TimestampsToReturn::Both, 0.0)
                .await
            {
                Ok(values) => {
                    for (node, value) in chunk.iter().zip(values) {
                        state.push(
                            client::Change {
                                node: node.clone(),
                                value,
                            },
                            &mut out,
                        );
                    }
                }
                Err(e) => {
                    tracing::warn!(connection = %self.cfg.id, "reading the values after reconnecting failed: {e}");
                    break;
                }
            }
        }
        ctx.bus.publish(out).await;
    }

    /// A system event about this connection.
    fn event(&self, ctx: &SourceContext, code: &str, severity: Severity, message: String) {
        ctx.events.publish(
            Event::new(
                Timestamp::now(),
                EventKind::System,
                code,
                &source_name(&self.cfg.id),
                message,
            )
            .with_severity(severity)
            .with_attribute("url", Value::String(self.cfg.url.as_str().into())),
        );
    }

    /// Why the session did not open, in words an engineer can act on.
    async fn explain(&self, pki: &Pki, e: ClientError) -> Failure {
        let status = match &e {
            ClientError::Server { status, .. } | ClientError::NotConnected { status, .. } => {
                Some(*status)
            }
            ClientError::Config(_) => None,
        };
        let untrusted = matches!(
            status,
            Some(s) if s == StatusCode::BadCertificateUntrusted
                || s == StatusCode::BadSecurityChecksFailed
        );
        if untrusted {
            // The certificate this server presents (not merely one found in rejected/): the
            // one an engineer must check before trusting.
            let presented =
                client::untrusted_thumbprint(pki, &self.cfg.url, self.cfg.request_timeout, &e)
                    .await;
            if let Some(thumb) = presented {
                return Failure {
                    code: "opcua_untrusted_server",
                    message: format!(
                        "OPC UA connection {}: the server {} presented a certificate that is \
                         not trusted (thumbprint {thumb}); check it with the server's \
                         administrator, then run `ironplant opcua trust {}` (the connection \
                         retries by itself)",
                        self.cfg.id,
                        self.cfg.url,
                        thumb.get(..16).unwrap_or(&thumb)
                    ),
                    security: true,
                };
            }
        }
        let denied = matches!(
            status,
            Some(s) if s == StatusCode::BadUserAccessDenied
                || s == StatusCode::BadIdentityTokenInvalid
                || s == StatusCode::BadIdentityTokenRejected
        );
        if denied {
            return Failure {
                code: "opcua_login_refused",
                message: format!(
                    "OPC UA connection {}: the server {} refused the user ({e}); check user and \
                     password of the connection",
                    self.cfg.id, self.cfg.url
                ),
                security: true,
            };
        }
        Failure {
            code: "opcua_connect_failed",
            message: format!("OPC UA connection {}: {e}", self.cfg.id),
            security: false,
        }
    }

    /// The configured nodes' ids on this session (`nsu=` resolved); a node whose namespace
    /// the server does not have is an `Err` with why.
    async fn resolve(&self, session: &Session) -> Result<Vec<Result<NodeId, String>>, ClientError> {
        let needs_ns = self.nodes.iter().any(|n| n.node.namespace_uri.is_some());
        let namespaces = if needs_ns {
            Some(
                session
                    .read_namespace_array()
                    .await
                    .map_err(|e| ClientError::Server {
                        url: self.cfg.url.clone(),
                        what: "read the namespace array",
                        status: e.status(),
                    })?,
            )
        } else {
            None
        };
        let mut out: Vec<Result<NodeId, String>> = Vec::with_capacity(self.nodes.len());
        let mut seen: HashMap<NodeId, usize> = HashMap::new();
        for (i, n) in self.nodes.iter().enumerate() {
            let mut id = n.node.node.clone();
            if let (Some(uri), Some(map)) = (&n.node.namespace_uri, &namespaces) {
                match map.get_index(uri) {
                    Some(ns) => id.namespace = ns,
                    None => {
                        out.push(Err(format!(
                            "node {}: the server has no namespace {uri:?}",
                            n.node.text
                        )));
                        continue;
                    }
                }
            }
            // Two config entries naming one node (`nsu=` and `ns=` forms): the first keeps it.
            if let Some(&first) = seen.get(&id) {
                out.push(Err(format!(
                    "node {} is the same node as {} (mapped to {}); map each node once",
                    n.node.text, self.nodes[first].node.text, self.nodes[first].tag
                )));
                continue;
            }
            seen.insert(id.clone(), i);
            out.push(Ok(id));
        }
        Ok(out)
    }

    /// Resolves the nodes, reads their data types (and units and ranges the config leaves
    /// out), publishes the session for writes and subscribes. A node that cannot be resolved
    /// or monitored is reported in `broken` (its tag goes Bad, ConfigError); the others go on.
    async fn setup(
        &self,
        ctx: &SourceContext,
        conn: &Connection,
        tags: &[Option<TagMeta>],
    ) -> Result<Setup, ClientError> {
        let resolved = self.resolve(&conn.session).await?;
        let mut broken: Vec<(usize, String)> = Vec::new();
        let mut live_nodes: Vec<Option<(NodeId, Option<VariantScalarTypeId>)>> =
            vec![None; self.nodes.len()];
        let ok: Vec<usize> = resolved
            .iter()
            .enumerate()
            .filter_map(|(i, r)| match r {
                Ok(_) => Some(i),
                Err(why) => {
                    broken.push((i, why.clone()));
                    None
                }
            })
            .collect();
        let ids: Vec<NodeId> = ok
            .iter()
            .filter_map(|&i| resolved[i].as_ref().ok().cloned())
            .collect();
        let types = conn.data_types(&ids).await?;
        for (k, &i) in ok.iter().enumerate() {
            let t = types
                .get(k)
                .and_then(|t| t.as_ref())
                .and_then(|t| VariantScalarTypeId::try_from(t).ok());
            live_nodes[i] = Some((ids[k].clone(), t));
        }
        self.adopt_units(ctx, conn, &ok, &ids, tags).await;
        let by_tag = tags
            .iter()
            .enumerate()
            .filter_map(|(i, t)| t.as_ref().map(|t| (t.id, i)))
            .collect();
        *self.shared.live.lock() = Some(Arc::new(Live {
            session: conn.session.clone(),
            url: self.cfg.url.clone(),
            nodes: live_nodes,
            by_tag,
            request_timeout: self.cfg.request_timeout,
        }));
        let monitors: Vec<Monitor> = ok
            .iter()
            .zip(&ids)
            .map(|(&i, id)| {
                let n = &self.nodes[i];
                Monitor {
                    node: id.clone(),
                    sampling: n.sampling_interval,
                    queue_size: n.queue_size,
                    deadband: match n.deadband {
                        DeadbandConfig::None => Deadband::None,
                        DeadbandConfig::Absolute(v) => Deadband::Absolute(v),
                        DeadbandConfig::Percent(v) => Deadband::Percent(v),
                    },
                }
            })
            .collect();
        let (sub, rx, statuses) = conn
            .subscribe_items(self.cfg.publishing_interval, &monitors)
            .await?;
        let mut index = HashMap::new();
        for ((&i, id), status) in ok.iter().zip(&ids).zip(&statuses) {
            if status.is_bad() {
                broken.push((
                    i,
                    format!(
                        "node {} cannot be monitored: {status}",
                        self.nodes[i].node.text
                    ),
                ));
            } else {
                index.insert(id.clone(), i);
            }
        }
        Ok(Setup {
            sub,
            changes: rx,
            index,
            broken,
        })
    }

    /// Units and ranges from the server's EngineeringUnits and EURange properties, for the
    /// tags whose config leaves them out (the tag's metadata is updated in place).
    async fn adopt_units(
        &self,
        ctx: &SourceContext,
        conn: &Connection,
        ok: &[usize],
        ids: &[NodeId],
        tags: &[Option<TagMeta>],
    ) {
        // (config index, position in `ids`)
        let wanted: Vec<(usize, usize)> = ok
            .iter()
            .enumerate()
            .filter(|&(_, &i)| {
                matches!(self.nodes[i].value_type, ValueType::Int | ValueType::Float)
                    && (self.nodes[i].unit.is_none() || self.nodes[i].range.is_none())
            })
            .map(|(k, &i)| (i, k))
            .collect();
        if wanted.is_empty() {
            return;
        }
        let found = match read_eu(&conn.session, wanted.iter().map(|&(_, k)| &ids[k])).await {
            Ok(f) => f,
            Err(status) => {
                tracing::debug!(connection = %self.cfg.id, %status, "no engineering units read");
                return;
            }
        };
        for (&(i, _), (unit, range)) in wanted.iter().zip(found) {
            let Some(meta) = tags[i].as_ref() else {
                continue;
            };
            let current = ctx.namespace.tag(meta.id);
            let Some(mut m) = current else { continue };
            let mut changed = false;
            if self.nodes[i].unit.is_none() && unit.is_some() && m.unit != unit {
                m.unit = unit;
                changed = true;
            }
            if self.nodes[i].range.is_none() && range.is_some() && m.range != range {
                m.range = range;
                changed = true;
            }
            if changed {
                if let Err(e) = ctx.namespace.register(m) {
                    tracing::warn!(connection = %self.cfg.id, "cannot update {}: {e}", meta.path);
                }
            }
        }
    }
}

/// The EngineeringUnits display name and EURange of each node, where it has them.
pub async fn read_eu<'a>(
    session: &Session,
    ids: impl Iterator<Item = &'a NodeId>,
) -> Result<Vec<(Option<String>, Option<(f64, f64)>)>, StatusCode> {
    let ids: Vec<&NodeId> = ids.collect();
    let paths: Vec<BrowsePath> = ids
        .iter()
        .flat_map(|id| {
            ["EngineeringUnits", "EURange"].map(|name| BrowsePath {
                starting_node: (*id).clone(),
                relative_path: RelativePath {
                    elements: Some(vec![RelativePathElement {
                        reference_type_id: ReferenceTypeId::HasProperty.into(),
                        is_inverse: false,
                        include_subtypes: true,
                        target_name: QualifiedName::new(0, name),
                    }]),
                },
            })
        })
        .collect();
    let mut out = vec![(None, None); ids.len()];
    if paths.is_empty() {
        return Ok(out);
    }
    let results = session
        .translate_browse_paths_to_node_ids(&paths)
        .await
        .map_err(|e| e.status())?;
    let mut reads = Vec::new();
    let mut at = Vec::new();
    for (k, r) in results.iter().enumerate().take(paths.len()) {
        let target = r
            .targets
            .as_ref()
            .and_then(|t| t.first())
            .filter(|_| r.status_code.is_good());
        if let Some(t) = target {
            reads.push(ReadValueId::from(t.target_id.node_id.clone()));
            at.push(k);
        }
    }
    if reads.is_empty() {
        return Ok(out);
    }
    let values = session
        .read(&reads, TimestampsToReturn::Neither, 0.0)
        .await
        .map_err(|e| e.status())?;
    for (k, dv) in at.into_iter().zip(values) {
        let Some(Variant::ExtensionObject(eo)) = dv.value else {
            continue;
        };
        let (node, is_range) = (k / 2, k % 2 == 1);
        let Some(slot) = out.get_mut(node) else {
            continue;
        };
        if is_range {
            if let Some(r) = eo.inner_as::<Range>() {
                if r.low < r.high && r.low.is_finite() && r.high.is_finite() {
                    slot.1 = Some((r.low, r.high));
                }
            }
        } else if let Some(eu) = eo.inner_as::<EUInformation>() {
            let name: String = eu
                .display_name
                .text
                .as_ref()
                .trim()
                .chars()
                .take(32)
                .collect();
            if !name.is_empty() && !name.chars().any(char::is_control) {
                slot.0 = Some(name);
            }
        }
    }
    Ok(out)
}

/// Last value and quality per node, so a Bad notification without a value keeps the last one
/// and a connection loss is published once.
struct TagState {
    tags: Vec<Option<(TagId, ValueType)>>,
    last: Vec<(Value, Option<Quality>)>,
    index: HashMap<NodeId, usize>,
}

impl TagState {
    fn new(tags: &[Option<TagMeta>]) -> TagState {
        TagState {
            tags: tags
                .iter()
                .map(|t| t.as_ref().map(|t| (t.id, t.value_type)))
                .collect(),
            last: vec![(Value::Null, None); tags.len()],
            index: HashMap::new(),
        }
    }

    fn push(&mut self, c: client::Change, out: &mut Vec<Sample>) {
        let Some(&i) = self.index.get(&c.node) else {
            return;
        };
        let Some((tag, value_type)) = self.tags[i] else {
            return;
        };
        let now = Timestamp::now();
        let dv: DataValue = c.value;
        let mut quality = map::quality(dv.status.unwrap_or(StatusCode::Good));
        let value = match dv.value.as_ref().map(map::value) {
            None => None,
            Some(Ok(Value::Null)) => None,
            Some(Ok(v)) => match map::coerce(v, value_type) {
                Ok(v) => Some(v),
                Err(why) => {
                    tracing::warn!(node = %c.node, "{why}");
                    quality = Quality::bad(QualityReason::ConfigError);
                    None
                }
            },
            Some(Err(e)) => {
                tracing::warn!(node = %c.node, "{e}");
                quality = Quality::bad(QualityReason::ConfigError);
                None
            }
        };
        if value.is_none() && quality == Quality::GOOD {
            return;
        }
        let (last_value, last_quality) = &mut self.last[i];
        if let Some(v) = value {
            *last_value = v;
        }
        *last_quality = Some(quality);
        // A missing, null (1601) or far-future timestamp is not a time: the server's, else now.
        let plausible = |d: &&opcua::types::DateTime| {
            let t = map::timestamp(d);
            t.0 > 0 && t.0 < now.0.saturating_add(86_400_000_000)
        };
        let source_ts = dv
            .source_timestamp
            .as_ref()
            .filter(plausible)
            .or(dv.server_timestamp.as_ref().filter(plausible))
            .map_or(now, map::timestamp);
        out.push(Sample {
            tag,
            value: last_value.clone(),
            quality,
            source_ts,
            server_ts: now,
        });
    }

    /// Tag `i` at `quality` (a node that cannot be monitored), once.
    fn mark_one(&mut self, i: usize, quality: Quality, out: &mut Vec<Sample>) {
        let Some(Some((tag, _))) = self.tags.get(i) else {
            return;
        };
        let (value, last) = &mut self.last[i];
        if *last == Some(quality) {
            return;
        }
        *last = Some(quality);
        let now = Timestamp::now();
        out.push(Sample {
            tag: *tag,
            value: value.clone(),
            quality,
            source_ts: now,
            server_ts: now,
        });
    }

    /// Every tag at `quality` (a lost connection), once: tags already at it are left alone.
    fn mark_all(&mut self, quality: Quality, out: &mut Vec<Sample>) {
        for i in 0..self.tags.len() {
            self.mark_one(i, quality, out);
        }
    }
}

/// Writes to the nodes of one connection, typed to each node's DataType, then reads the value
/// back.
struct OpcuaWriter {
    shared: Arc<Shared>,
    id: String,
}

impl DeviceWriter for OpcuaWriter {
    fn write(
        &self,
        tag: &TagMeta,
        value: Value,
    ) -> BoxFuture<'static, Result<WriteAck, DeviceWriteError>> {
        let live = self.shared.live.lock().clone();
        let id = self.id.clone();
        let tag_id = tag.id;
        let path = tag.path.to_string();
        Box::pin(async move {
            let live = live.ok_or_else(|| {
                DeviceWriteError::NotConnected(format!("OPC UA connection {id} has no session"))
            })?;
            let &i = live.by_tag.get(&tag_id).ok_or_else(|| {
                DeviceWriteError::UnknownTag(format!("connection {id} maps no node to {path}"))
            })?;
            let (node, data_type) = live.nodes.get(i).cloned().flatten().ok_or_else(|| {
                DeviceWriteError::UnknownTag(format!(
                    "connection {id}: the node of {path} is not known on the server"
                ))
            })?;
            let node = &node;
            let data_type = data_type.ok_or_else(|| {
                DeviceWriteError::Refused(format!(
                    "node {node} has no built-in data type Ironplant can write"
                ))
            })?;
            let variant =
                map::to_variant(&value, data_type).map_err(|why| DeviceWriteError::BadValue {
                    value: value.to_string(),
                    why,
                })?;
            let started = Instant::now();
            let write = WriteValue {
                node_id: node.clone(),
                attribute_id: AttributeId::Value as u32,
                // Value only: many servers refuse a write carrying timestamps or a status.
                value: DataValue::value_only(variant.clone()),
                ..Default::default()
            };
            let timeout = live.request_timeout;
            let answer = tokio::time::timeout(timeout, live.session.write(&[write]))
                .await
                .map_err(|_| DeviceWriteError::Timeout(timeout))?
                .map_err(|e| DeviceWriteError::Comm(format!("{}: {e}", live.url)))?;
            let status = answer
                .first()
                .copied()
                .unwrap_or(StatusCode::BadUnexpectedError);
            if status == StatusCode::BadNotWritable || status == StatusCode::BadUserAccessDenied {
                return Err(DeviceWriteError::ReadOnly(format!("{node}: {status}")));
            }
            if !status.is_good() {
                return Err(DeviceWriteError::Refused(format!("{node}: {status}")));
            }
            let written_ms = started.elapsed().as_millis();
            // Read back until the node shows the written value: a server may apply a write
            // after answering it (a PLC at its next scan, a gateway at its next poll).
            let expected = map::value(&variant).ok();
            let deadline = Instant::now() + READ_BACK_WINDOW.min(timeout);
            let echoed = loop {
                let read = tokio::time::timeout(
                    timeout,
                    live.session.read(
                        &[ReadValueId::from(node.clone())],
                        TimestampsToReturn::Neither,
                        0.0,
                    ),
                )
                .await
                .map_err(|_| DeviceWriteError::Timeout(timeout))?
                .map_err(|e| DeviceWriteError::Comm(format!("read back: {e}")))?;
                // Only a Good read-back counts: a gateway answering Bad with its cached
                // value has not shown that the device took it.
                let echoed = read
                    .first()
                    .filter(|dv| dv.status.is_none_or(|s| s.is_good()))
                    .and_then(|dv| dv.value.as_ref())
                    .and_then(|v| map::value(v).ok());
                if echoed == expected || Instant::now() >= deadline {
                    break echoed;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            let shown = echoed
                .as_ref()
                .map_or("nothing".to_owned(), Value::to_string);
            let read_ms = started.elapsed().as_millis();
            Ok(WriteAck {
                detail: format!(
                    "OPC UA Write {node} = {value} as {data_type:?} answered Good in {written_ms} ms; read back {shown} after {read_ms} ms"
                ),
                echoed,
            })
        })
    }
}
