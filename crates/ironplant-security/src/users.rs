//! Users (argon2id password hashes), API tokens (random, shown once, stored as SHA-256,
//! scoped to a role no higher than their user's, expiring, revocable), the first-start admin,
//! and login with throttling and lockout ([`crate::lockout`]).
//!
//! Stored in `users.json` (0600) in the security directory, written atomically under a lock
//! file so the server and CLI commands can both change it. Every change and every login
//! attempt is written to the audit log.
//!
//! Lockouts live in memory ([`crate::lockout`]); an administrator lifts one from another
//! process (`ironplant user unlock NAME`) through `unlocks.json` (0600) next to `users.json`:
//! [`UserStore::unlock`] bumps the user's entry there, and every login first applies entries
//! it has not applied yet (the file is re-read only when it changed on disk).
//!
//! Invariants:
//! - No password, token or hash is ever logged, put in an error, or shown after creation.
//! - A login for an unknown user costs one argon2 verification like a known one and is
//!   throttled the same way, so neither the answer nor its timing reveals whether it exists.
//! - Hash comparisons are constant-time (argon2's verifier; `subtle` for token hashes).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::audit::{bounded, AuditEvent, AuditLog};
use crate::clock::{from_unix_secs, unix_secs, Clock};
use crate::crypto::{ct_eq, hex, new_bearer, parse_bearer, random_bytes, random_password, unhex32};
use crate::error::{Error, Result};
use crate::fsutil::{self, JsonFile, PRIVATE};
use crate::lockout::{LockoutPolicy, Throttle};
use crate::roles::Role;

/// Prefix of API tokens (`ipt_<id>_<secret>`).
pub const TOKEN_PREFIX: &str = "ipt";
/// Name of the file holding the first-start admin password.
pub const INITIAL_ADMIN_FILE: &str = "initial-admin-password";
/// The label of the tokens `POST /api/v1/login` creates (login sessions, ended by a password
/// change).
pub const SESSION_LABEL: &str = "session";
/// Longest lifetime of an API token.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(2 * 365 * 24 * 3600);

#[derive(Debug, Clone)]
pub struct UserStoreOptions {
    pub lockout: LockoutPolicy,
    /// argon2id memory cost in KiB, iterations, parallelism. Defaults: OWASP's 19 MiB, 2, 1.
    pub argon2_m_kib: u32,
    pub argon2_t: u32,
    pub argon2_p: u32,
    pub min_password_len: usize,
}

impl Default for UserStoreOptions {
    fn default() -> Self {
        UserStoreOptions {
            lockout: LockoutPolicy::default(),
            argon2_m_kib: Params::DEFAULT_M_COST,
            argon2_t: Params::DEFAULT_T_COST,
            argon2_p: Params::DEFAULT_P_COST,
            min_password_len: 12,
        }
    }
}

#[derive(Clone, Default, Serialize, Deserialize)]
struct UsersFile {
    users: Vec<UserRecord>,
    tokens: Vec<TokenRecord>,
}

#[derive(Clone, Serialize, Deserialize)]
struct UserRecord {
    name: String,
    role: Role,
    /// PHC string: `$argon2id$v=19$m=...,t=...,p=...$salt$hash`.
    password_hash: String,
    created: u64,
    #[serde(default)]
    disabled: bool,
    /// When the password was last changed (ms since the epoch; 0: never): connections logged
    /// in with the password before that end.
    #[serde(default)]
    password_changed_ms: u64,
}

#[derive(Clone, Serialize, Deserialize)]
struct TokenRecord {
    id: String,
    user: String,
    role: Role,
    label: String,
    /// SHA-256 of the secret part, hex.
    hash: String,
    created: u64,
    expires: u64,
    revoked: Option<u64>,
}

/// `unlocks.json`: per user name, how many times it was unlocked (the server applies each
/// new count once), when and by whom.
#[derive(Clone, Default, Serialize, Deserialize)]
struct UnlocksFile {
    #[serde(default)]
    users: BTreeMap<String, Unlock>,
}

#[derive(Clone, Serialize, Deserialize)]
struct Unlock {
    count: u64,
    at: u64,
    by: Option<String>,
}

/// A user as shown to administrators.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserInfo {
    pub name: String,
    pub role: Role,
    pub created: u64,
    pub disabled: bool,
    /// When the password was last changed (ms since the epoch; 0: never).
    pub password_changed_ms: u64,
}

/// A token as shown to administrators (never its secret or hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenInfo {
    pub id: String,
    pub user: String,
    pub role: Role,
    pub label: String,
    pub created: u64,
    pub expires: u64,
    pub revoked: Option<u64>,
}

/// A freshly created token. `token` is the only copy of the secret: show it once.
pub struct NewToken {
    pub id: String,
    pub token: String,
    pub role: Role,
    pub expires: SystemTime,
}

impl std::fmt::Debug for NewToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewToken")
            .field("id", &self.id)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// How an identity was established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthMethod {
    Password,
    Token { id: String },
    Certificate,
}

/// Who is acting, after authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    pub role: Role,
    pub via: AuthMethod,
}

/// Why a login was refused. Deliberately coarse: it never says whether the user exists.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    #[error("user name or password is wrong")]
    BadCredentials,
    #[error("too many failed attempts; try again after {}", humantime_secs(*until))]
    Locked { until: SystemTime },
}

/// Why a token was refused (all map to HTTP 401). Expired and revoked are only reported for
/// a token whose secret matched, so they reveal nothing to someone guessing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is not valid")]
    Invalid,
    #[error("the token has expired; create a new one")]
    Expired,
    #[error("the token was revoked")]
    Revoked,
}

fn humantime_secs(t: SystemTime) -> String {
    format!("{} (Unix seconds)", unix_secs(t))
}

/// The first-start admin account, created when the store had no user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitialAdmin {
    pub user: String,
    /// The 0600 file holding its password. Tell the operator where it is, never what is in it.
    pub password_file: PathBuf,
}

pub struct UserStore {
    file: JsonFile<UsersFile>,
    throttle: Mutex<Throttle>,
    unlocks: JsonFile<UnlocksFile>,
    /// The unlock count of each user name this process has applied to `throttle`.
    applied_unlocks: Mutex<HashMap<String, u64>>,
    clock: Arc<dyn Clock>,
    audit: Arc<AuditLog>,
    hasher: Argon2<'static>,
    /// A real hash of a random password, verified against for unknown users.
    dummy_hash: String,
    options: UserStoreOptions,
    initial_admin: Option<InitialAdmin>,
}

impl std::fmt::Debug for UserStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserStore")
            .field("path", &self.file.path())
            .finish_non_exhaustive()
    }
}

fn validate_user_name(name: &str) -> Result<()> {
    let why = if name.is_empty() || name.len() > 64 {
        Some("it must be 1 to 64 characters long")
    } else if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "._-@".contains(c))
    {
        Some("use only letters, digits and . _ - @")
    } else {
        None
    };
    match why {
        Some(why) => Err(Error::InvalidName {
            what: "user name",
            name: bounded(name),
            why,
        }),
        None => Ok(()),
    }
}

impl UserStore {
    /// Opens `dir/users.json`. When it holds no user, creates `admin` with a random password
    /// written once to `dir/initial-admin-password` (0600); see [`UserStore::initial_admin`].
    pub fn open(
        dir: &Path,
        clock: Arc<dyn Clock>,
        audit: Arc<AuditLog>,
        options: UserStoreOptions,
    ) -> Result<UserStore> {
        fsutil::ensure_private_dir(dir)?;
        let params = Params::new(
            options.argon2_m_kib,
            options.argon2_t,
            options.argon2_p,
            None,
        )
        .map_err(|_| Error::Crypto("invalid argon2 parameters"))?;
        let hasher = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let dummy = random_password(24)?;
        let dummy_hash = hash_password(&hasher, dummy.as_bytes())?;
        let file = JsonFile::open(dir.join("users.json"), PRIVATE)?;
        let unlocks: JsonFile<UnlocksFile> = JsonFile::open(dir.join("unlocks.json"), PRIVATE)?;
        // Unlocks from before this start have nothing to lift: the throttle starts empty.
        let applied_unlocks = unlocks
            .get()?
            .users
            .iter()
            .map(|(name, u)| (name.clone(), u.count))
            .collect();
        let mut store = UserStore {
            file,
            throttle: Mutex::new(Throttle::new(options.lockout)),
            unlocks,
            applied_unlocks: Mutex::new(applied_unlocks),
            clock,
            audit,
            hasher,
            dummy_hash,
            options,
            initial_admin: None,
        };
        store.initial_admin = store.ensure_admin(dir)?;
        Ok(store)
    }

    fn ensure_admin(&self, dir: &Path) -> Result<Option<InitialAdmin>> {
        if !self.file.get()?.users.is_empty() {
            return Ok(None);
        }
        let password_file = dir.join(INITIAL_ADMIN_FILE);
        let created = self.file.update(|f| {
            if !f.users.is_empty() {
                return Ok(false); // another process was first
            }
            let password = random_password(24)?;
            let hash = hash_password(&self.hasher, password.as_bytes())?;
            fsutil::write_new(
                &password_file,
                format!("user: admin\npassword: {password}\n").as_bytes(),
                PRIVATE,
            )
            .map_err(|e| match e {
                Error::Io { source, path, .. }
                    if source.kind() == std::io::ErrorKind::AlreadyExists =>
                {
                    Error::Io {
                        action: "create the first-start admin password file (it already exists but no user does; remove it to create a new admin)",
                        path,
                        source,
                    }
                }
                other => other,
            })?;
            f.users.push(UserRecord {
                name: "admin".into(),
                role: Role::Admin,
                password_hash: hash,
                created: unix_secs(self.clock.now()),
                disabled: false,
                password_changed_ms: 0,
            });
            Ok(true)
        })?;
        if !created {
            return Ok(None);
        }
        self.audit_record(AuditEvent::UserCreated {
            user: "admin".into(),
            role: Role::Admin.to_string(),
            actor: Some("first start".into()),
        });
        tracing::warn!(path = %password_file.display(), "created user `admin` with a random password; read it from the file, log in, change it, then delete the file");
        Ok(Some(InitialAdmin {
            user: "admin".into(),
            password_file,
        }))
    }

    /// Set when this `open` created the first-start admin.
    pub fn initial_admin(&self) -> Option<&InitialAdmin> {
        self.initial_admin.as_ref()
    }

    fn audit_record(&self, event: AuditEvent) {
        if let Err(e) = self.audit.record(event) {
            tracing::error!(error = %e, "audit log: could not write a record");
        }
    }

    fn check_password_policy(&self, password: &str) -> Result<()> {
        if password.chars().count() < self.options.min_password_len {
            return Err(Error::WeakPassword {
                min: self.options.min_password_len,
            });
        }
        Ok(())
    }

    pub fn create_user(
        &self,
        name: &str,
        password: &str,
        role: Role,
        actor: Option<&str>,
    ) -> Result<()> {
        validate_user_name(name)?;
        if role == Role::Device {
            return Err(Error::DeviceRoleForUser);
        }
        self.check_password_policy(password)?;
        let hash = hash_password(&self.hasher, password.as_bytes())?;
        let now = unix_secs(self.clock.now());
        self.file.update(|f| {
            if f.users.iter().any(|u| u.name == name) {
                return Err(Error::UserExists(name.into()));
            }
            f.users.push(UserRecord {
                name: name.into(),
                role,
                password_hash: hash,
                created: now,
                disabled: false,
                password_changed_ms: 0,
            });
            Ok(())
        })?;
        self.audit_record(AuditEvent::UserCreated {
            user: name.into(),
            role: role.to_string(),
            actor: actor.map(Into::into),
        });
        Ok(())
    }

    /// Sets a new password. What was opened with the old one ends: the user's login sessions
    /// (tokens labelled `session`) are revoked, and live connections that logged in with the
    /// password before now are closed by the broker's next check (`password_changed_ms`). API
    /// tokens the user created on purpose stay valid.
    pub fn set_password(&self, name: &str, password: &str, actor: Option<&str>) -> Result<()> {
        self.check_password_policy(password)?;
        let hash = hash_password(&self.hasher, password.as_bytes())?;
        let now = self.clock.now();
        let now_ms = now
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let ended = self.file.update(|file| {
            let u = file
                .users
                .iter_mut()
                .find(|u| u.name == name)
                .ok_or_else(|| Error::UnknownUser(bounded(name)))?;
            u.password_hash = hash;
            u.password_changed_ms = now_ms;
            let mut ended = 0;
            for t in file
                .tokens
                .iter_mut()
                .filter(|t| t.user == name && t.label == SESSION_LABEL && t.revoked.is_none())
            {
                t.revoked = Some(unix_secs(now));
                ended += 1;
            }
            Ok(ended)
        })?;
        self.audit_record(AuditEvent::UserChanged {
            user: name.into(),
            change: format!("password changed; {ended} login session(s) ended"),
            actor: actor.map(Into::into),
        });
        Ok(())
    }

    pub fn set_role(&self, name: &str, role: Role, actor: Option<&str>) -> Result<()> {
        if role == Role::Device {
            return Err(Error::DeviceRoleForUser);
        }
        self.change_user(name, &format!("role set to {role}"), actor, |u| {
            u.role = role;
            Ok(())
        })
    }

    pub fn set_disabled(&self, name: &str, disabled: bool, actor: Option<&str>) -> Result<()> {
        let what = if disabled { "disabled" } else { "enabled" };
        self.change_user(name, what, actor, |u| {
            u.disabled = disabled;
            Ok(())
        })
    }

    fn change_user(
        &self,
        name: &str,
        change: &str,
        actor: Option<&str>,
        f: impl FnOnce(&mut UserRecord) -> Result<()>,
    ) -> Result<()> {
        self.file.update(|file| {
            let u = file
                .users
                .iter_mut()
                .find(|u| u.name == name)
                .ok_or_else(|| Error::UnknownUser(bounded(name)))?;
            f(u)
        })?;
        self.audit_record(AuditEvent::UserChanged {
            user: name.into(),
            change: change.into(),
            actor: actor.map(Into::into),
        });
        Ok(())
    }

    /// Deletes a user and revokes its tokens.
    pub fn delete_user(&self, name: &str, actor: Option<&str>) -> Result<()> {
        let now = unix_secs(self.clock.now());
        self.file.update(|f| {
            let before = f.users.len();
            f.users.retain(|u| u.name != name);
            if f.users.len() == before {
                return Err(Error::UnknownUser(bounded(name)));
            }
            for t in f.tokens.iter_mut().filter(|t| t.user == name) {
                t.revoked.get_or_insert(now);
            }
            Ok(())
        })?;
        self.audit_record(AuditEvent::UserDeleted {
            user: name.into(),
            actor: actor.map(Into::into),
        });
        Ok(())
    }

    pub fn list_users(&self) -> Result<Vec<UserInfo>> {
        Ok(self
            .file
            .get()?
            .users
            .iter()
            .map(|u| UserInfo {
                name: u.name.clone(),
                role: u.role,
                created: u.created,
                disabled: u.disabled,
                password_changed_ms: u.password_changed_ms,
            })
            .collect())
    }

    /// Checks a user name and password from `source`, with throttling and lockout.
    /// `channel` names where it came from ("api", "mqtt", "cli") for the audit log.
    pub fn login(
        &self,
        name: &str,
        password: &[u8],
        source: IpAddr,
        channel: &str,
    ) -> Result<Identity, LoginError> {
        let now = self.clock.now();
        let user_key = bounded(name);
        self.apply_unlocks();
        if let Err(until) = self.throttle.lock().check(&user_key, source, now) {
            self.audit_record(AuditEvent::LoginFailed {
                user: user_key,
                source: Some(source.to_string()),
                via: format!("password/{channel}"),
                reason: "locked".into(),
            });
            return Err(LoginError::Locked { until });
        }
        let users = self.file.get().map_err(|e| {
            tracing::error!(error = %e, "cannot read the user store; refusing logins");
            LoginError::BadCredentials
        })?;
        let user = users.users.iter().find(|u| u.name == name);
        // Always one argon2 verification, against a dummy hash when there is no such user.
        let hash = user.map_or(self.dummy_hash.as_str(), |u| u.password_hash.as_str());
        let password_ok = PasswordHash::new(hash)
            .is_ok_and(|h| self.hasher.verify_password(password, &h).is_ok());
        match user {
            Some(u) if password_ok && !u.disabled => {
                self.throttle.lock().record_success(&user_key, source);
                self.audit_record(AuditEvent::Login {
                    user: u.name.clone(),
                    source: Some(source.to_string()),
                    via: format!("password/{channel}"),
                });
                Ok(Identity {
                    user: u.name.clone(),
                    role: u.role,
                    via: AuthMethod::Password,
                })
            }
            _ => {
                let started = self.throttle.lock().record_failure(&user_key, source, now);
                self.audit_record(AuditEvent::LoginFailed {
                    user: user_key,
                    source: Some(source.to_string()),
                    via: format!("password/{channel}"),
                    reason: "bad_credentials".into(),
                });
                for (subject, until) in started {
                    let subject = subject.to_string();
                    tracing::warn!(%subject, until = unix_secs(until), "login lockout");
                    self.audit_record(AuditEvent::Lockout {
                        subject,
                        until: unix_secs(until),
                    });
                }
                Err(LoginError::BadCredentials)
            }
        }
    }

    /// Lifts every lockout of user `name` (from all addresses; address lockouts stay), in
    /// this process and, through `unlocks.json`, in a running server from its next login
    /// attempt on. Audited. The recovery path for an administrator kept locked out.
    pub fn unlock(&self, name: &str, actor: Option<&str>) -> Result<()> {
        validate_user_name(name)?;
        if !self.file.get()?.users.iter().any(|u| u.name == name) {
            return Err(Error::UnknownUser(bounded(name)));
        }
        let at = unix_secs(self.clock.now());
        self.unlocks.update(|f| {
            let entry = f.users.entry(name.to_owned()).or_insert(Unlock {
                count: 0,
                at,
                by: None,
            });
            entry.count += 1;
            entry.at = at;
            entry.by = actor.map(Into::into);
            Ok(())
        })?;
        self.apply_unlocks();
        self.audit_record(AuditEvent::UserChanged {
            user: name.into(),
            change: "lockout lifted (all addresses)".into(),
            actor: actor.map(Into::into),
        });
        Ok(())
    }

    /// Applies unlocks written (by any process) since the last call.
    fn apply_unlocks(&self) {
        let unlocks = match self.unlocks.get() {
            Ok(u) => u,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the unlock file; lockouts are not lifted until it is fixed");
                return;
            }
        };
        let mut applied = self.applied_unlocks.lock();
        for (name, u) in &unlocks.users {
            if applied.get(name) != Some(&u.count) {
                applied.insert(name.clone(), u.count);
                if self.throttle.lock().unlock(name) {
                    tracing::warn!(user = %name, by = ?u.by, "lockout lifted by an administrator");
                }
            }
        }
    }

    /// Creates an API token for `user` with `role` (default: the user's role; never more),
    /// valid for `ttl` (at most [`MAX_TOKEN_TTL`]; a longer one is refused, never cut
    /// silently).
    pub fn create_token(
        &self,
        user: &str,
        role: Option<Role>,
        ttl: Duration,
        label: &str,
        actor: Option<&str>,
    ) -> Result<NewToken> {
        if ttl > MAX_TOKEN_TTL {
            return Err(Error::TokenLifetimeTooLong {
                requested_days: ttl.as_secs() / 86_400,
                max_days: MAX_TOKEN_TTL.as_secs() / 86_400,
            });
        }
        let now = self.clock.now();
        let expires = now + ttl;
        let bearer = new_bearer(TOKEN_PREFIX)?;
        let role = self.file.update(|f| {
            let u = f
                .users
                .iter()
                .find(|u| u.name == user)
                .ok_or_else(|| Error::UnknownUser(bounded(user)))?;
            let role = role.unwrap_or(u.role);
            if role == Role::Device {
                return Err(Error::DeviceRoleForUser);
            }
            if !role.within(u.role) {
                return Err(Error::TokenRoleTooHigh {
                    user: user.into(),
                    user_role: u.role,
                    requested: role,
                });
            }
            f.tokens.push(TokenRecord {
                id: bearer.id.clone(),
                user: user.into(),
                role,
                label: bounded(label),
                hash: hex(&bearer.hash),
                created: unix_secs(now),
                expires: unix_secs(expires),
                revoked: None,
            });
            Ok(role)
        })?;
        self.audit_record(AuditEvent::TokenCreated {
            id: bearer.id.clone(),
            user: user.into(),
            role: role.to_string(),
            expires: unix_secs(expires),
            actor: actor.map(Into::into),
        });
        Ok(NewToken {
            id: bearer.id,
            token: bearer.token,
            role,
            expires: from_unix_secs(unix_secs(expires)),
        })
    }

    /// Authenticates a bearer token. The effective role is the token's, lowered to the
    /// user's current role if that was reduced since.
    pub fn verify_token(&self, token: &str) -> Result<Identity, TokenError> {
        let (id, hash) = parse_bearer(TOKEN_PREFIX, token).ok_or(TokenError::Invalid)?;
        let f = self.file.get().map_err(|e| {
            tracing::error!(error = %e, "cannot read the user store; refusing tokens");
            TokenError::Invalid
        })?;
        let t = f
            .tokens
            .iter()
            .find(|t| t.id == id)
            .ok_or(TokenError::Invalid)?;
        let stored = unhex32(&t.hash).ok_or(TokenError::Invalid)?;
        if !ct_eq(&stored, &hash) {
            return Err(TokenError::Invalid);
        }
        if t.revoked.is_some() {
            return Err(TokenError::Revoked);
        }
        if unix_secs(self.clock.now()) >= t.expires {
            return Err(TokenError::Expired);
        }
        let u = f
            .users
            .iter()
            .find(|u| u.name == t.user && !u.disabled)
            .ok_or(TokenError::Revoked)?;
        let role = if t.role.within(u.role) {
            t.role
        } else {
            u.role
        };
        Ok(Identity {
            user: t.user.clone(),
            role,
            via: AuthMethod::Token { id: t.id.clone() },
        })
    }

    pub fn revoke_token(&self, id: &str, actor: Option<&str>) -> Result<()> {
        let now = unix_secs(self.clock.now());
        self.file.update(|f| {
            let t = f
                .tokens
                .iter_mut()
                .find(|t| t.id == id)
                .ok_or_else(|| Error::UnknownToken(bounded(id)))?;
            t.revoked.get_or_insert(now);
            Ok(())
        })?;
        self.audit_record(AuditEvent::TokenRevoked {
            id: id.into(),
            actor: actor.map(Into::into),
        });
        Ok(())
    }

    /// Tokens, of one user or of all.
    pub fn list_tokens(&self, user: Option<&str>) -> Result<Vec<TokenInfo>> {
        Ok(self
            .file
            .get()?
            .tokens
            .iter()
            .filter(|t| user.is_none_or(|u| t.user == u))
            .map(|t| TokenInfo {
                id: t.id.clone(),
                user: t.user.clone(),
                role: t.role,
                label: t.label.clone(),
                created: t.created,
                expires: t.expires,
                revoked: t.revoked,
            })
            .collect())
    }
}

fn hash_password(hasher: &Argon2<'_>, password: &[u8]) -> Result<String> {
    let salt = SaltString::encode_b64(&random_bytes::<16>()?)
        .map_err(|_| Error::Crypto("could not encode a salt"))?;
    hasher
        .hash_password(password, &salt)
        .map(|h| h.to_string())
        .map_err(|_| Error::Crypto("argon2 hashing failed"))
}
