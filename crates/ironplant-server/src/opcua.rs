//! The platform's OPC UA server (`[opcua.server]`): the Unified Namespace, or the parts of it
//! under `paths`, served by `ironplant_opcua::server::UnsServer` with the platform's users
//! (password logins through the user store, with its throttling, lockout and audit) and, when
//! `writes = true`, writes through the command path as the logged-in user (role, per-tag write
//! rules, envelope, interlocks, two-person rule, audit, device read-back).
//!
//! Values follow the tag bus: every tag's current value at start, then every batch; tags born
//! at run time (Sparkplug births) are added to the address space as they first appear.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::Context as _;
use ironplant_control::command::{Authorisation, CommandRequest, Denial, Origin, Requester, Role};
use ironplant_core::{BoxFuture, Overflow, TagId, TagMeta, TagPath, Value};
use ironplant_opcua::pki::Pki;
use ironplant_opcua::server::{
    Backend, ServerSettings, ServerTag, ServerUser, UnsServer, WriteRefusal,
};
use ironplant_opcua::settings::ServerConfig;
use ironplant_runtime::commands::CommandResult;
use ironplant_runtime::Runtime;
use ironplant_security::{Permission, Security, TagAccess};
use parking_lot::Mutex;

/// The namespace URI of the served tags.
pub const NAMESPACE_URI: &str = "urn:ironplant:uns";

/// The server's application URI (its certificate's first SAN).
pub const APPLICATION_URI: &str = "urn:ironplant:server";

/// The running server and the task that feeds it.
pub struct OpcuaServer {
    server: Arc<UnsServer>,
    feeder: tokio::task::JoinHandle<()>,
}

impl OpcuaServer {
    /// `opc.tcp://host:port/`.
    pub fn url(&self) -> String {
        self.server.url()
    }

    pub async fn stop(self) {
        self.feeder.abort();
        // The feeder holds the other reference to the server.
        let _ = self.feeder.await;
        if let Ok(server) = Arc::try_unwrap(self.server) {
            server.stop().await;
        }
    }
}

/// Starts the server of `cfg` on `runtime`, users from `security`.
pub async fn start(
    cfg: &ServerConfig,
    runtime: Arc<Runtime>,
    security: Arc<Security>,
    data_dir: &Path,
) -> anyhow::Result<OpcuaServer> {
    let pki = Pki::open_or_create(
        &ironplant_opcua::pki::server_dir(data_dir),
        SystemTime::now(),
    )
    .context("open the OPC UA server's certificates")?;
    if cfg.allow_none {
        tracing::warn!(
            "the OPC UA server offers an endpoint without security (allow_none): anyone on the \
             network can read its traffic; labs only"
        );
    }
    let tags: Vec<ServerTag> = runtime
        .namespace
        .read()
        .tags()
        .filter(|t| served(&cfg.paths, &t.path))
        .map(ServerTag::from)
        .collect();
    let backend = Arc::new(PlatformBackend {
        runtime: runtime.clone(),
        security,
        users: Arc::default(),
    });
    let settings = ServerSettings {
        host: cfg.host.clone(),
        port: cfg.port,
        hostnames: cfg.hostnames.clone(),
        application_uri: APPLICATION_URI.to_owned(),
        namespace_uri: NAMESPACE_URI.to_owned(),
        root: "Ironplant".to_owned(),
        allow_none: cfg.allow_none,
        sign_only: cfg.sign_only,
        writes: cfg.writes,
        max_sessions: cfg.max_sessions,
    };
    let server = Arc::new(
        UnsServer::start(&pki, settings, tags, backend)
            .await
            .context("start the OPC UA server")?,
    );
    let mut sub = runtime
        .bus
        .subscribe("opcua-server", 1024, Overflow::DropNewest);
    let feed = server.clone();
    let rt = runtime.clone();
    let paths = cfg.paths.clone();
    let feeder = tokio::spawn(async move {
        // Path and whether served, by tag id (tags are never removed, ids never reused).
        let mut known: HashMap<TagId, Option<Arc<str>>> = HashMap::new();
        let mut lookup = |id: TagId| -> Option<Arc<str>> {
            known
                .entry(id)
                .or_insert_with(|| {
                    let meta: TagMeta = rt.namespace.tag(id)?;
                    if !served(&paths, &meta.path) {
                        return None;
                    }
                    feed.add_tags(&[ServerTag::from(&meta)]);
                    Some(Arc::from(meta.path.as_str()))
                })
                .clone()
        };
        // One batch of samples to the server (the tags it serves).
        let mut send = |samples: &[ironplant_core::Sample]| {
            let items: Vec<_> = samples
                .iter()
                .filter_map(|s| Some((lookup(s.tag)?, s)))
                .collect();
            feed.publish(
                items
                    .iter()
                    .map(|(p, s)| (&**p, &s.value, s.quality, s.source_ts)),
            );
        };
        let current = || {
            let mut all = Vec::new();
            rt.bus.for_each_current(|s| all.push(s.clone()));
            all
        };
        send(&current());
        let mut dropped = sub.dropped();
        while let Some(batch) = sub.recv().await {
            if sub.dropped() != dropped {
                // Batches were dropped while the server was behind: every tag's current value
                // again, so no client keeps an old value as Good.
                dropped = sub.dropped();
                send(&current());
            }
            send(&batch);
        }
    });
    Ok(OpcuaServer { server, feeder })
}

/// Whether the server serves `path`: under one of `paths` (all when none), and not a
/// platform-internal tag (a level starting with `_`).
fn served(paths: &[TagPath], path: &TagPath) -> bool {
    (paths.is_empty() || paths.iter().any(|p| path.is_under(p)))
        && !path.levels().any(|l| l.starts_with('_'))
}

/// A command from an OPC UA client's user.
fn request(
    path: TagPath,
    value: Value,
    name: &str,
    role: Role,
    authorisation: Authorisation,
) -> CommandRequest {
    CommandRequest {
        tag: path,
        info: None,
        value,
        requester: Requester::user(name, role, &format!("opcua:{name}")),
        authorisation,
        reason: "OPC UA write".to_owned(),
        origin: Origin::Opcua,
    }
}

/// The platform's side of the server: its users and its command path.
struct PlatformBackend {
    runtime: Arc<Runtime>,
    security: Arc<Security>,
    /// What each logged-in user may read, as of their last login, by name (writes look the user
    /// up again each time).
    users: Arc<Mutex<HashMap<String, Grant>>>,
}

/// A logged-in user's role and tag rules, as of their login.
type Grant = (Role, TagAccess);

impl Backend for PlatformBackend {
    fn authenticate(
        &self,
        user: &str,
        password: &str,
    ) -> BoxFuture<'static, Result<ServerUser, String>> {
        let sec = self.security.clone();
        let (user, password) = (user.to_owned(), password.to_owned());
        let cache = self.users.clone();
        Box::pin(async move {
            let checked = tokio::task::spawn_blocking(move || {
                // OPC UA gives the stack's session no peer address here: lockouts count per
                // user (and for the unspecified address).
                let identity = sec
                    .users
                    .login(
                        &user,
                        password.as_bytes(),
                        IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                        "opcua",
                    )
                    .map_err(|e| e.to_string())?;
                let scopes = sec.mqtt.tag_scopes().map_err(|e| e.to_string())?;
                let (access, _) = scopes.access_for(&identity);
                Ok::<_, String>((identity, access))
            })
            .await
            .map_err(|e| format!("authentication task failed: {e}"))??;
            let (identity, access) = checked;
            let can_write = identity.role.allows(Permission::WriteSetpoints);
            let role = identity
                .role
                .as_str()
                .parse::<Role>()
                .unwrap_or(Role::Viewer);
            cache.lock().insert(identity.user.clone(), (role, access));
            Ok(ServerUser {
                name: identity.user,
                can_write,
            })
        })
    }

    fn write_refused(&self, user: &ServerUser, tag: &str, value: Value) {
        // Through the command path with the refusal, so it is audited like any refused write.
        let Ok(path) = TagPath::parse(tag) else {
            return;
        };
        let role = self
            .users
            .lock()
            .get(&user.name)
            .map_or(Role::Viewer, |(role, _)| *role);
        let runtime = self.runtime.clone();
        let name = user.name.clone();
        tokio::spawn(async move {
            let _ = runtime
                .commands
                .submit(request(
                    path,
                    value,
                    &name,
                    role,
                    Authorisation::Denied(Denial::Role {
                        role: role.as_str().to_owned(),
                        permission: "write_setpoints".to_owned(),
                    }),
                ))
                .await;
        });
    }

    fn can_read(&self, user: &ServerUser, tag: &str) -> bool {
        // The read rules as of the user's login (browsing is frequent; a rule change reaches
        // a session at its next login).
        self.users
            .lock()
            .get(&user.name)
            .is_some_and(|(_, access)| access.can_read(tag))
    }

    fn write(
        &self,
        user: &ServerUser,
        tag: &str,
        value: Value,
    ) -> BoxFuture<'static, Result<(), WriteRefusal>> {
        let runtime = self.runtime.clone();
        let sec = self.security.clone();
        let name = user.name.clone();
        let tag = tag.to_owned();
        Box::pin(async move {
            let path =
                TagPath::parse(&tag).map_err(|e| WriteRefusal::Refused(format!("{tag}: {e}")))?;
            // Who the user is *now*: a user disabled, deleted or given another role since the
            // session's login writes with what they are now (or not at all).
            let who = name.clone();
            let current = tokio::task::spawn_blocking(move || {
                let user = sec
                    .users
                    .list_users()
                    .map_err(|e| e.to_string())?
                    .into_iter()
                    .find(|u| u.name == who && !u.disabled)
                    .ok_or_else(|| format!("{who} is no longer an active user"))?;
                let identity = ironplant_security::users::Identity {
                    user: user.name.clone(),
                    role: user.role,
                    via: ironplant_security::users::AuthMethod::Password,
                };
                let scopes = sec.mqtt.tag_scopes().map_err(|e| e.to_string())?;
                let (access, _) = scopes.access_for(&identity);
                Ok::<_, String>((user.role, access))
            })
            .await
            .map_err(|e| WriteRefusal::Refused(format!("authorisation task failed: {e}")))?
            .map_err(WriteRefusal::NotAuthorised)?;
            let (sec_role, access) = current;
            let can_write = sec_role.allows(Permission::WriteSetpoints);
            let role = sec_role.as_str().parse::<Role>().unwrap_or(Role::Viewer);
            let authorisation = if !can_write {
                Authorisation::Denied(Denial::Role {
                    role: role.as_str().to_owned(),
                    permission: "write_setpoints".to_owned(),
                })
            } else if !access.can_write(&tag) {
                Authorisation::Denied(Denial::Other(
                    "the tag is outside the tag prefixes you may write".to_owned(),
                ))
            } else {
                Authorisation::Allowed
            };
            let result = runtime
                .commands
                .submit(request(path, value, &name, role, authorisation))
                .await;
            match result {
                CommandResult::Verified { .. } => Ok(()),
                CommandResult::Refused(r) => Err(match r.code() {
                    "not_authorised" => WriteRefusal::NotAuthorised(r.to_string()),
                    c if c.starts_with("envelope_") => WriteRefusal::OutOfRange(r.to_string()),
                    _ => WriteRefusal::Refused(r.to_string()),
                }),
                CommandResult::Pending(p) => Err(WriteRefusal::Refused(format!(
                    "two-person rule: command {} waits for a second person's confirmation \
                     (HMI or API)",
                    p.id.0
                ))),
                other => Err(WriteRefusal::DeviceFailed(format!("{other:?}"))),
            }
        })
    }
}
