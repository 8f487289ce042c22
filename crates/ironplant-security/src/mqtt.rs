//! [`SecurityAuth`]: the broker's [`Auth`] hook, combining device certificates, user names
//! and passwords (or API tokens as the password), the ACL, lockout and the audit log.
//!
//! The `Principal` it returns carries `roles = [<role>, <kind>(, <token id>)]` where kind is
//! `user`, `device` or `token`, and `owner = "<kind>:<name>"` (`user:` for tokens too: a
//! token acts as its user); the policy reads them back on every decision.
//!
//! Decisions combine the ACL with the tag-prefix rules of [`crate::policy`] (the same rules
//! the REST API applies), so one user has the same rights over HTTP and MQTT. A device may
//! use only its own client ids (`device_client_ids`, default its name and `name-*`).
//! [`Auth::revalidate`] re-reads users, tokens, devices and the prefix rules: a revoked,
//! disabled, expired or lowered identity loses its live connections.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use ironplant_mqtt::auth::{Auth, ConnectInfo, Denied, Principal};
use ironplant_mqtt::codec::ReasonCode;
use parking_lot::{Mutex, RwLock};

use crate::acl::{Acl, AclIdentity};
use crate::audit::{bounded, AuditEvent, AuditLog};
use crate::ca::DeviceRegistry;
use crate::clock::Clock;
use crate::fsutil::{stamp, Stamp};
use crate::policy::{PrefixRule, TagAccess, TagScopes};
use crate::roles::Role;
use crate::users::{LoginError, UserStore, TOKEN_PREFIX};

const KIND_USER: &str = "user";
const KIND_DEVICE: &str = "device";
const KIND_TOKEN: &str = "token";

/// Options of [`SecurityAuth`].
#[derive(Debug, Clone)]
pub struct MqttAuthOptions {
    /// Let clients without certificate or credentials connect (with no role: they get only
    /// what `all` rules grant). Off by default.
    pub allow_anonymous: bool,
    /// Client ids a device may use: patterns where `%u` is the device name and a trailing
    /// `*` matches any rest. Default `["%u", "%u-*"]`.
    pub device_client_ids: Vec<String>,
    /// Topic prefix of the Unified Namespace (tag `a/b` is topic `<prefix>/a/b`), for the
    /// tag-prefix rules.
    pub uns_prefix: String,
    /// Per-user tag-prefix rules from the configuration file.
    pub tag_scopes: std::collections::BTreeMap<String, PrefixRule>,
}

impl Default for MqttAuthOptions {
    fn default() -> Self {
        MqttAuthOptions {
            allow_anonymous: false,
            device_client_ids: vec!["%u".into(), "%u-*".into()],
            uns_prefix: String::new(),
            tag_scopes: Default::default(),
        }
    }
}

/// Whether `client_id` fits one of `patterns` for device `name`.
pub fn device_client_id_allowed(patterns: &[String], name: &str, client_id: &str) -> bool {
    patterns.iter().any(|p| {
        let p = p.replace("%u", name);
        match p.strip_suffix('*') {
            Some(stem) => client_id.len() > stem.len() && client_id.starts_with(stem),
            None => client_id == p,
        }
    })
}

/// Audit records for refusals by a limit: at most one per limit and address per minute.
const LIMIT_AUDIT_EVERY: Duration = Duration::from_secs(60);

/// The tag-prefix rules file as last read.
struct ScopesCache {
    stamp: Option<Stamp>,
    scopes: Arc<TagScopes>,
    /// Set when the file cannot be read: refuse what the rules would decide.
    broken: bool,
}

/// Extra ACL rules kept in the security directory (`ironplant acl add|remove`), applied after
/// the configured (or built-in) ones; re-read when the file changes.
pub const ACL_FILE: &str = "acl.rules";

/// The rules of the rules file `path`, one each as written (blank and comment lines left
/// out); none when it does not exist. An invalid rule in it is an error naming the file.
pub fn read_acl_file(path: &Path) -> crate::Result<Vec<String>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(crate::Error::io("read", path, e)),
    };
    Acl::parse(&text).map_err(|e| {
        crate::Error::Acl(format!("{}: {e}; fix or remove the file", path.display()))
    })?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !(l.is_empty() || *l == "#" || l.starts_with("# ") || l.starts_with("//")))
        .map(str::to_owned)
        .collect())
}

/// Changes the rules file `path` under the security files' inter-process lock and writes it
/// atomically (0600); `change` returns false to leave it as it is.
pub fn update_acl_file<R>(
    path: &Path,
    change: impl FnOnce(&mut Vec<String>) -> crate::Result<(bool, R)>,
) -> crate::Result<R> {
    let _lock = crate::fsutil::FileLock::acquire(&path.with_extension("lock"))?;
    let mut rules = read_acl_file(path)?;
    let (changed, out) = change(&mut rules)?;
    if changed {
        let mut text = String::from(
            "# MQTT ACL rules added with `ironplant acl add`, applied after the configured ones.\n",
        );
        for r in &rules {
            text.push_str(r);
            text.push('\n');
        }
        crate::fsutil::write_atomic(path, text.as_bytes(), crate::fsutil::PRIVATE)?;
    }
    Ok(out)
}

/// The rules file as last read.
struct AclFileCache {
    stamp: Option<Stamp>,
    rules: Vec<crate::acl::AclRule>,
}

pub struct SecurityAuth {
    users: Arc<UserStore>,
    devices: Arc<DeviceRegistry>,
    /// The configured (or built-in) rules, and the effective ones (those plus the file's).
    base_acl: RwLock<Arc<Acl>>,
    acl: RwLock<Arc<Acl>>,
    acl_file: PathBuf,
    acl_cache: Mutex<AclFileCache>,
    audit: Arc<AuditLog>,
    options: MqttAuthOptions,
    clock: Arc<dyn Clock>,
    scopes_path: PathBuf,
    scopes: Mutex<ScopesCache>,
    epoch: AtomicU64,
    limit_audited: Mutex<HashMap<(&'static str, IpAddr), Instant>>,
}

impl std::fmt::Debug for SecurityAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecurityAuth")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl SecurityAuth {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        users: Arc<UserStore>,
        devices: Arc<DeviceRegistry>,
        acl: Acl,
        audit: Arc<AuditLog>,
        options: MqttAuthOptions,
        clock: Arc<dyn Clock>,
        scopes_path: PathBuf,
    ) -> SecurityAuth {
        let acl_file = scopes_path.with_file_name(ACL_FILE);
        let acl = Arc::new(acl);
        let auth = SecurityAuth {
            users,
            devices,
            base_acl: RwLock::new(acl.clone()),
            acl: RwLock::new(acl),
            acl_file,
            acl_cache: Mutex::new(AclFileCache {
                stamp: None,
                rules: Vec::new(),
            }),
            audit,
            options,
            clock,
            scopes_path,
            scopes: Mutex::new(ScopesCache {
                stamp: None,
                scopes: Arc::new(TagScopes::default()),
                broken: false,
            }),
            epoch: AtomicU64::new(1),
            limit_audited: Mutex::new(HashMap::new()),
        };
        auth.refresh_scopes();
        auth.refresh_acl();
        auth
    }

    /// Replaces the configured ACL (e.g. after a config reload); the rules file still applies
    /// after it. Applies to the next check.
    pub fn set_acl(&self, acl: Acl) {
        *self.base_acl.write() = Arc::new(acl);
        self.combine_acl();
    }

    /// The rules in force: the configured (or built-in) ones, then the rules file's.
    pub fn acl(&self) -> Arc<Acl> {
        self.refresh_acl();
        self.acl.read().clone()
    }

    fn combine_acl(&self) {
        let mut rules = self.base_acl.read().rules().to_vec();
        rules.extend(self.acl_cache.lock().rules.iter().cloned());
        // Every rule was checked when parsed; `new` cannot fail on them.
        if let Ok(acl) = Acl::new(rules) {
            *self.acl.write() = Arc::new(acl);
        }
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// Re-reads the rules file if it changed. A damaged file keeps the rules in force and is
    /// logged (the CLI checks rules before writing them, so only a hand edit can damage it).
    fn refresh_acl(&self) {
        let stamp = stamp(&self.acl_file).ok().flatten();
        {
            let mut c = self.acl_cache.lock();
            if c.stamp == stamp {
                return;
            }
            c.stamp = stamp;
            let rules = match std::fs::read_to_string(&self.acl_file) {
                Ok(text) => match Acl::parse(&text) {
                    Ok(acl) => acl.rules().to_vec(),
                    Err(e) => {
                        tracing::error!(file = %self.acl_file.display(), error = %e, "invalid ACL rules file; keeping the rules in force");
                        return;
                    }
                },
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                Err(e) => {
                    tracing::error!(file = %self.acl_file.display(), error = %e, "cannot read the ACL rules file; keeping the rules in force");
                    return;
                }
            };
            if rules == c.rules {
                return;
            }
            c.rules = rules;
        }
        self.combine_acl();
    }

    /// The tag-prefix rules in force: the file (re-read when it changed) and the configured
    /// ones. An unreadable file is an error: callers refuse rather than ignore rules.
    pub fn tag_scopes(&self) -> Result<Arc<TagScopes>, String> {
        self.refresh_scopes();
        let c = self.scopes.lock();
        if c.broken {
            return Err(format!(
                "cannot read the tag-prefix rules in {}",
                self.scopes_path.display()
            ));
        }
        Ok(c.scopes.clone())
    }

    /// Re-reads the rules file if its stamp changed; true when the rules changed.
    fn refresh_scopes(&self) -> bool {
        // The file is replaced by rename on every change: a new inode even within one mtime tick.
        let stamp = stamp(&self.scopes_path).ok().flatten();
        let mut c = self.scopes.lock();
        if c.stamp == stamp && c.stamp.is_some() {
            return false;
        }
        let (scopes, broken) = match TagScopes::load(&self.scopes_path) {
            Ok(mut s) => {
                s.configured = self.options.tag_scopes.clone();
                (Arc::new(s), false)
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot read the tag-prefix rules; refusing what they decide");
                (c.scopes.clone(), true)
            }
        };
        let changed = *scopes != *c.scopes || broken != c.broken;
        c.stamp = stamp;
        c.scopes = scopes;
        c.broken = broken;
        if changed {
            self.epoch.fetch_add(1, Ordering::AcqRel);
        }
        changed
    }

    /// The prefix rules of a user or token principal (`None`: a device or anonymous, which
    /// the rules do not name); `Err` when the rules cannot be read.
    fn access(&self, who: &Principal) -> Result<Option<TagAccess>, ()> {
        let kind = who.roles.get(1).map(|k| &**k);
        if !matches!(kind, Some(KIND_USER | KIND_TOKEN)) {
            return Ok(None);
        }
        let Some(user) = who.user.as_deref() else {
            return Ok(None);
        };
        let c = self.scopes.lock();
        if c.broken {
            return Err(());
        }
        Ok(Some(c.scopes.access(user, token_id(who))))
    }

    fn principal(
        client_id: &str,
        name: &str,
        role: Role,
        kind: &'static str,
        token: Option<&str>,
    ) -> Principal {
        let mut roles: Vec<Arc<str>> = vec![role.as_str().into(), kind.into()];
        roles.extend(token.map(Into::into));
        let owner_kind = if kind == KIND_DEVICE {
            "device"
        } else {
            "user"
        };
        Principal {
            client_id: client_id.into(),
            user: Some(name.into()),
            roles,
            owner: Some(format!("{owner_kind}:{name}").into()),
        }
    }

    fn now_unix(&self) -> u64 {
        self.clock
            .now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }
}

/// The API token a principal logged in with (`roles[2]` of a token principal).
fn token_id(who: &Principal) -> Option<&str> {
    match who.roles.get(1).map(|k| &**k) {
        Some(KIND_TOKEN) => who.roles.get(2).map(|t| &**t),
        _ => None,
    }
}

fn identity(who: &Principal) -> AclIdentity<'_> {
    let role = who.roles.first().and_then(|r| r.parse::<Role>().ok());
    let is_device = who.roles.get(1).is_some_and(|k| &**k == KIND_DEVICE);
    AclIdentity {
        client_id: &who.client_id,
        name: who.user.as_deref(),
        role,
        is_device,
    }
}

impl Auth for SecurityAuth {
    fn connect(&self, info: &ConnectInfo<'_>) -> Result<Principal, ReasonCode> {
        // The rules a new connection is decided by are the current ones.
        self.refresh_scopes();
        self.refresh_acl();
        // 1. A verified client certificate: the device it was issued to. The TLS verifier
        //    already refused revoked and unknown certificates; checking the registry again
        //    covers a revocation between handshake and CONNECT.
        if let Some(subject) = info.certificate_subject {
            return match self.devices.active(subject) {
                Some(d)
                    if !info.client_id_assigned
                        && !device_client_id_allowed(
                            &self.options.device_client_ids,
                            &d.name,
                            info.client_id,
                        ) =>
                {
                    // A device speaks only as itself: another client's id would let it kick
                    // that client off and fire its will.
                    tracing::info!(device = %d.name, client_id = %info.client_id, "device used a client id that is not its own; refused");
                    self.audit.submit(AuditEvent::AclDenied {
                        principal: Some(bounded(&d.name)),
                        client_id: bounded(info.client_id),
                        source: Some(info.peer.ip().to_string()),
                        action: "client_id".into(),
                        topic: String::new(),
                    });
                    Err(ReasonCode::ClientIdentifierNotValid)
                }
                Some(d) => {
                    tracing::debug!(device = %d.name, client_id = %info.client_id, "device connected");
                    Ok(Self::principal(
                        info.client_id,
                        &d.name,
                        d.role,
                        KIND_DEVICE,
                        None,
                    ))
                }
                None => {
                    self.audit.submit(AuditEvent::LoginFailed {
                        user: bounded(subject),
                        source: Some(info.peer.ip().to_string()),
                        via: "certificate/mqtt".into(),
                        reason: "device_not_active".into(),
                    });
                    Err(ReasonCode::NotAuthorized)
                }
            };
        }
        // 2. A password, which may be an API token.
        if let Some(password) = info.password {
            if password.starts_with(TOKEN_PREFIX.as_bytes()) {
                let token = std::str::from_utf8(password).unwrap_or_default();
                return match self.users.verify_token(token) {
                    Ok(id) if info.username.is_none_or(|u| u == id.user) => {
                        let token = match &id.via {
                            crate::users::AuthMethod::Token { id } => Some(id.as_str()),
                            _ => None,
                        };
                        Ok(Self::principal(
                            info.client_id,
                            &id.user,
                            id.role,
                            KIND_TOKEN,
                            token,
                        ))
                    }
                    _ => {
                        self.audit.submit(AuditEvent::LoginFailed {
                            user: bounded(info.username.unwrap_or_default()),
                            source: Some(info.peer.ip().to_string()),
                            via: "token/mqtt".into(),
                            reason: "bad_credentials".into(),
                        });
                        Err(ReasonCode::BadUserNameOrPassword)
                    }
                };
            }
            let user = info.username.unwrap_or_default();
            return match self.users.login(user, password, info.peer.ip(), "mqtt") {
                Ok(id) => {
                    // roles[2]: when the password was checked (ms), so a later password change
                    // ends this connection.
                    let at = self
                        .clock
                        .now()
                        .duration_since(UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis());
                    Ok(Self::principal(
                        info.client_id,
                        &id.user,
                        id.role,
                        KIND_USER,
                        Some(&at.to_string()),
                    ))
                }
                Err(LoginError::BadCredentials) => Err(ReasonCode::BadUserNameOrPassword),
                Err(LoginError::Locked { .. }) => Err(ReasonCode::Banned),
            };
        }
        if info.username.is_some() {
            return Err(ReasonCode::BadUserNameOrPassword);
        }
        if self.options.allow_anonymous {
            return Ok(Principal {
                client_id: info.client_id.into(),
                user: None,
                roles: Vec::new(),
                owner: None,
            });
        }
        Err(ReasonCode::NotAuthorized)
    }

    fn may_publish(&self, who: &Principal, topic: &str) -> bool {
        if let Some(tag) = crate::policy::command_tag(&self.options.uns_prefix, topic) {
            // A command is a write: the one policy for writes decides (the role's
            // write_setpoints permission and the write prefixes), as for the REST API; the
            // topic ACL does not (operators write setpoints but publish nowhere else).
            let who_is = identity(who);
            return !who_is.is_device
                && who_is
                    .role
                    .is_some_and(|r| r.allows(crate::Permission::WriteSetpoints))
                && match self.access(who) {
                    Ok(None) => true,
                    Ok(Some(a)) => a.can_write(tag),
                    Err(()) => false,
                };
        }
        let acl = self.acl.read().clone();
        acl.may_publish(&identity(who), topic)
            && match self.access(who) {
                Ok(None) => true,
                Ok(Some(a)) => a.can_publish(&self.options.uns_prefix, topic),
                Err(()) => false,
            }
    }

    fn may_subscribe(&self, who: &Principal, filter: &str) -> bool {
        let acl = self.acl.read().clone();
        acl.may_subscribe(&identity(who), filter)
            && match self.access(who) {
                Ok(None) => true,
                Ok(Some(a)) => a.can_subscribe(&self.options.uns_prefix, filter),
                Err(()) => false,
            }
    }

    fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    fn is_privileged(&self, who: &Principal) -> bool {
        who.roles
            .first()
            .is_some_and(|r| &**r == Role::Admin.as_str())
    }

    fn revalidate(&self, who: &[&Principal]) -> Vec<bool> {
        self.refresh_acl();
        let old_scopes = self.scopes.lock().scopes.clone();
        let scopes_changed = self.refresh_scopes();
        // One read of each store per sweep, indexed: a sweep over 10,000 connections costs
        // 10,000 lookups. A store that cannot be read keeps the connections this round (a
        // transient I/O error must not disconnect the plant); the next sweep tries again.
        let (users, tokens, devices) = match (
            self.users.list_users(),
            self.users.list_tokens(None),
            self.devices.list(),
        ) {
            (Ok(u), Ok(t), Ok(d)) => (u, t, d),
            (u, t, d) => {
                let why = [u.err(), t.err(), d.err()]
                    .into_iter()
                    .flatten()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("; ");
                tracing::error!(error = %why, "cannot read the identity stores; live connections are re-checked at the next sweep");
                return vec![true; who.len()];
            }
        };
        let users: HashMap<&str, (Role, u64)> = users
            .iter()
            .filter(|u| !u.disabled)
            .map(|u| (u.name.as_str(), (u.role, u.password_changed_ms)))
            .collect();
        let tokens: HashMap<&str, &crate::users::TokenInfo> =
            tokens.iter().map(|t| (t.id.as_str(), t)).collect();
        let devices: HashMap<&str, Role> = devices
            .iter()
            .filter(|d| d.revoked.is_none())
            .map(|d| (d.name.as_str(), d.role))
            .collect();
        let now = self.now_unix();
        let user_role = |name: &str| users.get(name).map(|(r, _)| *r);
        who.iter()
            .map(|p| {
                let Some(name) = p.user.as_deref() else {
                    return true; // anonymous: nothing to revoke
                };
                let Some(role) = p.roles.first().and_then(|r| r.parse::<Role>().ok()) else {
                    return false;
                };
                let current = match p.roles.get(1).map(|k| &**k) {
                    Some(KIND_DEVICE) => devices.get(name).copied(),
                    Some(KIND_USER) => {
                        // Logged in with a password that has been changed since: ended.
                        let at: u64 = p.roles.get(2).and_then(|t| t.parse().ok()).unwrap_or(0);
                        users
                            .get(name)
                            .filter(|(_, changed)| *changed <= at)
                            .map(|(r, _)| *r)
                    }
                    Some(KIND_TOKEN) => {
                        let id = p.roles.get(2).map(|t| &**t);
                        let t = id.and_then(|id| tokens.get(id)).copied();
                        match (t, user_role(name)) {
                            (Some(t), Some(u)) if t.revoked.is_none() && now < t.expires => {
                                Some(if t.role.within(u) { t.role } else { u })
                            }
                            _ => None,
                        }
                    }
                    _ => None,
                };
                // Still there, and not lowered below what the connection was granted.
                let valid = current.is_some_and(|c| role.within(c));
                // Narrowed tag-prefix rules also end the connection (its subscriptions were
                // granted under the old ones); the client may reconnect under the new.
                let narrowed = scopes_changed
                    && matches!(p.roles.get(1).map(|k| &**k), Some(KIND_USER | KIND_TOKEN))
                    && {
                        let token = token_id(p);
                        let new = self.scopes.lock().scopes.clone();
                        old_scopes.access(name, token) != new.access(name, token)
                    };
                valid && !narrowed
            })
            .collect()
    }

    fn denied(&self, who: Option<&Principal>, peer: SocketAddr, what: Denied<'_>) {
        let (action, topic) = match what {
            // Failed logins were recorded by `connect` (with the user name it saw).
            Denied::Connect(_) => return,
            Denied::Publish(t) => ("publish", t),
            Denied::Subscribe(f) => ("subscribe", f),
            Denied::Will(t) => ("will", t),
            Denied::Takeover(c) => ("takeover", c),
            Denied::ResumedSubscription(f) => ("resume_subscription", f),
            Denied::WithdrawnSubscription(f) => ("subscription_withdrawn", f),
            Denied::Revoked => ("revoked_disconnect", ""),
            Denied::Limit(limit) => {
                // Floods of refusals must not flood the audit log: one record per limit and
                // address a minute (the broker counts every refusal).
                let now = Instant::now();
                let mut seen = self.limit_audited.lock();
                if seen.len() > 10_000 {
                    seen.retain(|_, t| now.duration_since(*t) < LIMIT_AUDIT_EVERY);
                }
                match seen.get(&(limit, peer.ip())) {
                    Some(t) if now.duration_since(*t) < LIMIT_AUDIT_EVERY => return,
                    _ => {
                        seen.insert((limit, peer.ip()), now);
                    }
                }
                ("limit", limit)
            }
        };
        tracing::info!(
            client_id = who.map_or("", |p| &*p.client_id),
            %peer,
            action,
            topic,
            "MQTT access denied"
        );
        // Non-blocking: this runs on the broker's connection task.
        self.audit.submit(AuditEvent::AclDenied {
            principal: who.and_then(|p| p.user.as_deref()).map(bounded),
            client_id: who.map_or_else(String::new, |p| bounded(&p.client_id)),
            source: Some(peer.ip().to_string()),
            action: action.into(),
            topic: bounded(topic),
        });
    }
}
