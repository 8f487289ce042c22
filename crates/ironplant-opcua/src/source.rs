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

/// An open session's view of the nodes.
struct Live {
    session: Arc<Session>,
    url: String,
    /// Per configured node: its id on this session (namespace index resolved) and data type.
    nodes: Vec<(NodeId, Option<VariantScalarTypeId>)>,
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
        let before = pki.rejected().unwrap_or_default();
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
            Err(e) => return Err(self.explain(&pki, &before, e)),
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
        let (mut sub, mut changes, ids) = self
            .setup(ctx, &conn, tags)
            .await
            .map_err(|e| fail("set up", e))?;
        state.index(&ids);
        tracing::info!(connection = %self.cfg.id, url = %self.cfg.url, nodes = self.nodes.len(), "OPC UA session open");
        self.event(
            ctx,
            "opcua_connected",
            Severity::Info,
            format!(
                "OPC UA connection {} to {}: session open, {} nodes subscribed",
                self.cfg.id,
                self.cfg.url,
                self.nodes.len()
            ),
        );
        let result = loop {
            tokio::select! {
                change = changes.recv() => {
                    let Some(first) = change else {
                        break Err(fail("subscription", ClientError::Config("the notification channel closed".into())));
                    };
                    let mut out = Vec::new();
                    state.push(first, &mut out);
                    // A publish response delivers its notifications together: one batch.
                    while out.len() < 10_000 {
                        match changes.try_recv() {
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
                            let _ = conn.session.delete_subscription(sub).await;
                            let ids;
                            (sub, changes, ids) = self
                                .setup(ctx, &conn, tags)
                                .await
                                .map_err(|e| fail("subscribe again", e))?;
                            state.index(&ids);
                        }
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
    fn explain(&self, pki: &Pki, before: &[(String, PathBuf)], e: ClientError) -> Failure {
        let new_rejected = pki
            .rejected()
            .unwrap_or_default()
            .into_iter()
            .find(|r| !before.contains(r))
            .or_else(|| pki.rejected().ok().and_then(|r| r.into_iter().next()));
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
        if let (true, Some((thumb, _))) = (untrusted, new_rejected) {
            return Failure {
                code: "opcua_untrusted_server",
                message: format!(
                    "OPC UA connection {}: the server {} presented a certificate that is not \
                     trusted (thumbprint {thumb}); check it with the server's administrator, \
                     then run `ironplant opcua trust {}` (the connection retries by itself)",
                    self.cfg.id,
                    self.cfg.url,
                    &thumb[..16.min(thumb.len())]
                ),
                security: true,
            };
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

    /// The configured nodes' ids on this session (`nsu=` resolved).
    async fn resolve(&self, session: &Session) -> Result<Vec<NodeId>, ClientError> {
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
        let mut out = Vec::with_capacity(self.nodes.len());
        for n in &self.nodes {
            let mut id = n.node.node.clone();
            if let (Some(uri), Some(map)) = (&n.node.namespace_uri, &namespaces) {
                id.namespace = map.get_index(uri).ok_or_else(|| {
                    ClientError::Config(format!(
                        "node {}: the server has no namespace {uri:?}",
                        n.node.text
                    ))
                })?;
            }
            out.push(id);
        }
        Ok(out)
    }

    /// Resolves the nodes, reads their data types (and units and ranges the config leaves
    /// out), publishes the session for writes and subscribes.
    async fn setup(
        &self,
        ctx: &SourceContext,
        conn: &Connection,
        tags: &[Option<TagMeta>],
    ) -> Result<(u32, UnboundedReceiver<client::Change>, Vec<NodeId>), ClientError> {
        let ids = self.resolve(&conn.session).await?;
        let types = conn.data_types(&ids).await?;
        let types: Vec<Option<VariantScalarTypeId>> = types
            .iter()
            .map(|t| {
                t.as_ref()
                    .and_then(|t| VariantScalarTypeId::try_from(t).ok())
            })
            .collect();
        self.adopt_units(ctx, conn, &ids, tags).await;
        let by_tag = tags
            .iter()
            .enumerate()
            .filter_map(|(i, t)| t.as_ref().map(|t| (t.id, i)))
            .collect();
        *self.shared.live.lock() = Some(Arc::new(Live {
            session: conn.session.clone(),
            url: self.cfg.url.clone(),
            nodes: ids.iter().cloned().zip(types).collect(),
            by_tag,
            request_timeout: self.cfg.request_timeout,
        }));
        let monitors: Vec<Monitor> = self
            .nodes
            .iter()
            .zip(&ids)
            .map(|(n, id)| Monitor {
                node: id.clone(),
                sampling: n.sampling_interval,
                queue_size: n.queue_size,
                deadband: match n.deadband {
                    DeadbandConfig::None => Deadband::None,
                    DeadbandConfig::Absolute(v) => Deadband::Absolute(v),
                    DeadbandConfig::Percent(v) => Deadband::Percent(v),
                },
            })
            .collect();
        let (sub, rx) = conn
            .subscribe(self.cfg.publishing_interval, &monitors)
            .await?;
        Ok((sub, rx, ids))
    }

    /// Units and ranges from the server's EngineeringUnits and EURange properties, for the
    /// tags whose config leaves them out (the tag's metadata is updated in place).
    async fn adopt_units(
        &self,
        ctx: &SourceContext,
        conn: &Connection,
        ids: &[NodeId],
        tags: &[Option<TagMeta>],
    ) {
        let wanted: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| {
                matches!(self.nodes[i].value_type, ValueType::Int | ValueType::Float)
                    && (self.nodes[i].unit.is_none() || self.nodes[i].range.is_none())
            })
            .collect();
        if wanted.is_empty() {
            return;
        }
        let found = match read_eu(&conn.session, wanted.iter().map(|&i| &ids[i])).await {
            Ok(f) => f,
            Err(status) => {
                tracing::debug!(connection = %self.cfg.id, %status, "no engineering units read");
                return;
            }
        };
        for (&i, (unit, range)) in wanted.iter().zip(found) {
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
    for (k, r) in results.iter().enumerate() {
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
        if is_range {
            if let Some(r) = eo.inner_as::<Range>() {
                if r.low < r.high {
                    out[node].1 = Some((r.low, r.high));
                }
            }
        } else if let Some(eu) = eo.inner_as::<EUInformation>() {
            let name = eu.display_name.text.as_ref().trim().to_owned();
            if !name.is_empty() {
                out[node].0 = Some(name);
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

    /// The node ids of this session, in config order.
    fn index(&mut self, ids: &[NodeId]) {
        self.index = ids
            .iter()
            .cloned()
            .enumerate()
            .map(|(i, id)| (id, i))
            .collect();
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
        let source_ts = dv
            .source_timestamp
            .as_ref()
            .or(dv.server_timestamp.as_ref())
            .map_or(now, map::timestamp);
        out.push(Sample {
            tag,
            value: last_value.clone(),
            quality,
            source_ts,
            server_ts: now,
        });
    }

    /// Every tag at `quality` (a lost connection), once: tags already at it are left alone.
    fn mark_all(&mut self, quality: Quality, out: &mut Vec<Sample>) {
        let now = Timestamp::now();
        for (i, t) in self.tags.iter().enumerate() {
            let Some((tag, _)) = t else { continue };
            let (value, last) = &mut self.last[i];
            if *last == Some(quality) {
                continue;
            }
            *last = Some(quality);
            out.push(Sample {
                tag: *tag,
                value: value.clone(),
                quality,
                source_ts: now,
                server_ts: now,
            });
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
            let (node, data_type) = &live.nodes[i];
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
                let echoed = read
                    .first()
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
