//! [`SecurityAuth`]: the broker's [`Auth`] hook, combining device certificates, user names
//! and passwords (or API tokens as the password), the ACL, lockout and the audit log.
//!
//! The `Principal` it returns carries `roles = [<role>, <kind>]` where kind is `user`,
//! `device` or `token`; the ACL reads them back on every PUBLISH and SUBSCRIBE.

use std::net::SocketAddr;
use std::sync::Arc;

use ironplant_mqtt::auth::{Auth, ConnectInfo, Denied, Principal};
use ironplant_mqtt::codec::ReasonCode;
use parking_lot::RwLock;

use crate::acl::{Acl, AclIdentity};
use crate::audit::{bounded, AuditEvent, AuditLog};
use crate::ca::DeviceRegistry;
use crate::roles::Role;
use crate::users::{LoginError, UserStore, TOKEN_PREFIX};

const KIND_USER: &str = "user";
const KIND_DEVICE: &str = "device";
const KIND_TOKEN: &str = "token";

/// Options of [`SecurityAuth`].
#[derive(Debug, Clone, Copy, Default)]
pub struct MqttAuthOptions {
    /// Let clients without certificate or credentials connect (with no role: they get only
    /// what `all` rules grant). Off by default.
    pub allow_anonymous: bool,
}

pub struct SecurityAuth {
    users: Arc<UserStore>,
    devices: Arc<DeviceRegistry>,
    acl: RwLock<Arc<Acl>>,
    audit: Arc<AuditLog>,
    options: MqttAuthOptions,
}

impl std::fmt::Debug for SecurityAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecurityAuth")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl SecurityAuth {
    pub fn new(
        users: Arc<UserStore>,
        devices: Arc<DeviceRegistry>,
        acl: Acl,
        audit: Arc<AuditLog>,
        options: MqttAuthOptions,
    ) -> SecurityAuth {
        SecurityAuth {
            users,
            devices,
            acl: RwLock::new(Arc::new(acl)),
            audit,
            options,
        }
    }

    /// Replaces the ACL (e.g. after a config reload); applies to the next check.
    pub fn set_acl(&self, acl: Acl) {
        *self.acl.write() = Arc::new(acl);
    }

    fn principal(client_id: &str, name: &str, role: Role, kind: &'static str) -> Principal {
        Principal {
            client_id: client_id.into(),
            user: Some(name.into()),
            roles: vec![role.as_str().into(), kind.into()],
        }
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
        // 1. A verified client certificate: the device it was issued to. The TLS verifier
        //    already refused revoked and unknown certificates; checking the registry again
        //    covers a revocation between handshake and CONNECT.
        if let Some(subject) = info.certificate_subject {
            return match self.devices.active(subject) {
                Some(d) => {
                    tracing::debug!(device = %d.name, client_id = %info.client_id, "device connected");
                    Ok(Self::principal(
                        info.client_id,
                        &d.name,
                        d.role,
                        KIND_DEVICE,
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
                    Ok(id) if info.username.is_none_or(|u| u == id.user) => Ok(Self::principal(
                        info.client_id,
                        &id.user,
                        id.role,
                        KIND_TOKEN,
                    )),
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
                Ok(id) => Ok(Self::principal(
                    info.client_id,
                    &id.user,
                    id.role,
                    KIND_USER,
                )),
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
            });
        }
        Err(ReasonCode::NotAuthorized)
    }

    fn may_publish(&self, who: &Principal, topic: &str) -> bool {
        let acl = self.acl.read().clone();
        acl.may_publish(&identity(who), topic)
    }

    fn may_subscribe(&self, who: &Principal, filter: &str) -> bool {
        let acl = self.acl.read().clone();
        acl.may_subscribe(&identity(who), filter)
    }

    fn denied(&self, who: Option<&Principal>, peer: SocketAddr, what: Denied<'_>) {
        let (action, topic) = match what {
            // Failed logins were recorded by `connect` (with the user name it saw).
            Denied::Connect(_) => return,
            Denied::Publish(t) => ("publish", t),
            Denied::Subscribe(f) => ("subscribe", f),
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
