//! Ironplant's security layer: the built-in CA and device certificates, users, roles and API
//! tokens with lockout, MQTT ACLs, and the hash-chained, signed audit log.
//!
//! Everything lives under `<data-dir>/security/` (directories 0700, secrets 0600). Open it
//! once with [`Security::open`]; the parts are shared `Arc`s the listeners, the API and the
//! CLI use directly. See ARCHITECTURE.md ("ironplant-security") for wiring and invariants,
//! and SECURITY.md for the threat model.

pub mod acl;
pub mod audit;
pub mod ca;
pub mod clock;
mod crypto;
mod der;
pub mod error;
mod fsutil;
pub mod lockout;
pub mod mqtt;
pub mod policy;
pub mod roles;
pub mod settings;
pub mod tls;
pub mod users;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use acl::{Acl, AclIdentity, AclRule};
pub use audit::{
    AuditEvent, AuditLog, AuditOptions, AuditPage, AuditQuery, AuditRecord, HeadStatement,
};
pub use ca::{CaOptions, CertificateAuthority, DeviceBundle, DeviceCertVerifier, DeviceRecord};
pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{Error, Result};
pub use lockout::LockoutPolicy;
pub use mqtt::{MqttAuthOptions, SecurityAuth};
pub use policy::{PrefixRule, TagAccess, TagScopes};
pub use roles::{Permission, Role};
pub use tls::{client_config, peer_subject, server_config, ServerIdentity};
pub use users::{Identity, LoginError, TokenError, UserStore, UserStoreOptions};

/// Options of [`Security::open`]; `Default` is the secure production setting.
#[derive(Debug, Clone, Default)]
pub struct SecurityOptions {
    pub ca: CaOptions,
    pub users: UserStoreOptions,
    pub audit: AuditOptions,
    pub mqtt: MqttAuthOptions,
    /// MQTT rules; [`acl::DEFAULT_RULES`] when `None`.
    pub acl: Option<Acl>,
}

/// Users exist, so the audit log recorded their creation: when the audit directory is gone
/// (an empty log over an intact directory is refused by [`AuditLog::open`]), the new log
/// starts by saying so, instead of looking like a first start.
fn audit_log_lost(dir: &Path) -> bool {
    let log = dir.join("audit").join("audit.log");
    dir.join("users.json").exists() && std::fs::metadata(log).map_or(true, |m| m.len() == 0)
}

/// The security state of one data directory.
#[derive(Debug)]
pub struct Security {
    dir: PathBuf,
    pub audit: Arc<AuditLog>,
    pub ca: Arc<CertificateAuthority>,
    pub users: Arc<UserStore>,
    pub mqtt: Arc<SecurityAuth>,
}

impl Security {
    /// Opens (creating on first start) `<data_dir>/security`: `audit/`, `ca/`, `users.json`.
    pub fn open(
        data_dir: &Path,
        clock: Arc<dyn Clock>,
        options: SecurityOptions,
    ) -> Result<Security> {
        let dir = data_dir.join("security");
        fsutil::ensure_private_dir(&dir)?;
        let lost = audit_log_lost(&dir);
        let audit = Arc::new(AuditLog::open(
            &dir.join("audit"),
            clock.clone(),
            options.audit,
        )?);
        if lost {
            tracing::error!(dir = %dir.join("audit").display(), "the audit log was missing although users exist: a new log was started; the earlier records are lost unless restored from a backup");
            audit.record(AuditEvent::LogRestarted {
                reason:
                    "the audit log was missing although users.json exists; earlier records are lost"
                        .into(),
            })?;
        }
        let ca = Arc::new(CertificateAuthority::open_or_create(
            &dir.join("ca"),
            clock.clone(),
            audit.clone(),
            options.ca,
        )?);
        let users = Arc::new(UserStore::open(
            &dir,
            clock.clone(),
            audit.clone(),
            options.users,
        )?);
        let mqtt = Arc::new(SecurityAuth::new(
            users.clone(),
            ca.devices().clone(),
            options.acl.unwrap_or_else(Acl::default_rules),
            audit.clone(),
            options.mqtt,
            clock,
            dir.join(policy::SCOPES_FILE),
        ));
        Ok(Security {
            dir,
            audit,
            ca,
            users,
            mqtt,
        })
    }

    /// The security directory (`<data-dir>/security`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn audit_dir(&self) -> PathBuf {
        self.dir.join("audit")
    }

    /// rustls config for the MQTT TLS listener: the CA-issued server certificate for
    /// `names` (or `byo` when given), device certificates checked on every handshake; with
    /// `require_client_cert` false, clients may instead log in with a password or a token.
    pub fn mqtt_tls_config(
        &self,
        names: &[String],
        byo: Option<&ServerIdentity>,
        require_client_cert: bool,
    ) -> Result<rustls::ServerConfig> {
        let identity = match byo {
            Some(id) => id.clone(),
            None => self.ca.server_identity(names)?,
        };
        let verifier: Arc<dyn rustls::server::danger::ClientCertVerifier> =
            self.ca.client_verifier(require_client_cert)?;
        server_config(&identity, Some(verifier))
    }

    /// rustls config for the HTTPS listener (no client certificates; users log in).
    pub fn https_tls_config(
        &self,
        names: &[String],
        byo: Option<&ServerIdentity>,
    ) -> Result<rustls::ServerConfig> {
        let identity = match byo {
            Some(id) => id.clone(),
            None => self.ca.server_identity(names)?,
        };
        let mut config = server_config(&identity, None)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }
}
