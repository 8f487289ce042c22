//! TLS on the platform's listeners (HTTPS for the API is `ironplant_api::listen` with a TLS
//! handshake), MQTT over TLS with optional, verified device certificates, the broker's `Auth`
//! hook kept off the async workers, and a TLS connector for the demo's Sparkplug edge node.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use ironplant_core::config::Config;
use ironplant_mqtt::auth::{Auth, ConnectInfo as MqttConnectInfo, Denied, Principal};
use ironplant_mqtt::codec::ReasonCode;
use ironplant_mqtt::settings::MqttSettings;
use ironplant_security::settings::SecuritySettings;
use ironplant_security::Security;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// The security options the configuration asks for: its ACL (else the defaults), device
/// client id patterns, the UNS prefix and per-user tag-prefix limits for the one policy.
pub fn options(config: &Config) -> anyhow::Result<ironplant_security::SecurityOptions> {
    let s = config.get::<SecuritySettings>();
    let acl = match &s.acl {
        Some(rules) => Some(
            ironplant_security::Acl::parse(&rules.join("\n"))
                .context("the [security] acl rules are invalid (run `ironplant check`)")?,
        ),
        None => None,
    };
    let mut mqtt = ironplant_security::MqttAuthOptions {
        uns_prefix: config.get::<MqttSettings>().uns_prefix.clone(),
        ..Default::default()
    };
    if let Some(ids) = &s.device_client_ids {
        mqtt.device_client_ids = ids.clone();
    }
    let list = |v: &Option<Vec<ironplant_core::TagPath>>| {
        v.as_ref()
            .map(|ps| ps.iter().map(ToString::to_string).collect::<Vec<_>>())
    };
    for (user, scope) in &s.tag_scopes {
        mqtt.tag_scopes.insert(
            user.clone(),
            ironplant_security::PrefixRule {
                read: list(&scope.read),
                write: list(&scope.write),
            },
        );
    }
    Ok(ironplant_security::SecurityOptions {
        mqtt,
        acl,
        ..Default::default()
    })
}

/// Opens the security state of `data_dir` for the CLI's administration commands (the
/// configuration's policy does not matter there).
pub fn open(data_dir: &Path) -> anyhow::Result<Arc<Security>> {
    open_with(data_dir, ironplant_security::SecurityOptions::default())
}

/// Opens the security state of `data_dir` (CA, users, audit log) with the policy `config`
/// asks for.
pub fn open_configured(data_dir: &Path, config: &Config) -> anyhow::Result<Arc<Security>> {
    open_with(data_dir, options(config)?)
}

fn open_with(
    data_dir: &Path,
    options: ironplant_security::SecurityOptions,
) -> anyhow::Result<Arc<Security>> {
    let sec = ironplant_security::Security::open(
        data_dir,
        Arc::new(ironplant_security::SystemClock),
        options,
    )
    .with_context(|| {
        format!(
            "cannot open the security state in {}; check its permissions (it must belong to this user)",
            data_dir.join("security").display()
        )
    })?;
    Ok(Arc::new(sec))
}

/// Path of the CA certificate clients trust.
pub fn ca_cert_path(sec: &Security) -> PathBuf {
    sec.ca.dir().join("ca.crt")
}

/// The host names and addresses the server certificate is issued for: loopback always, the
/// listen addresses when they are specific, and `extra` (`--tls-name`).
pub fn server_names(addrs: &[SocketAddr], extra: &[String]) -> Vec<String> {
    let mut names: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    for a in addrs {
        if !a.ip().is_unspecified() {
            names.push(a.ip().to_string());
        }
    }
    names.extend(extra.iter().cloned());
    names.sort();
    names.dedup();
    names
}

/// Topics only the platform publishes on: the Unified Namespace of its tags (a client's
/// message there would pass for the platform's own value), and its Sparkplug host's STATE.
pub struct Reserved {
    /// Set once the runtime exists (the broker is opened before it, and serves nobody until
    /// the listeners start, after it).
    pub namespace: Arc<std::sync::OnceLock<Arc<ironplant_core::LiveNamespace>>>,
    pub uns_prefix: String,
    pub host_state: String,
}

impl Reserved {
    fn owns(&self, topic: &str) -> bool {
        if topic == self.host_state {
            return true;
        }
        // Events (`<uns_prefix>/_events/...`): only the platform raises them, so a client can
        // never forge an alarm, a command record or a security finding.
        let events = ironplant_runtime::events::events_root(&self.uns_prefix);
        if topic
            .strip_prefix(events.as_str())
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        {
            return true;
        }
        // Command replies (`<uns_prefix>/_cmd_reply/...`): only the platform answers
        // commands, so a client can never forge "accepted" or "verified" for someone else's.
        let prefix = self.uns_prefix.trim_end_matches('/');
        let replies = if prefix.is_empty() {
            ironplant_control::command::mqtt::REPLY_LEVEL.to_owned()
        } else {
            format!("{prefix}/{}", ironplant_control::command::mqtt::REPLY_LEVEL)
        };
        if topic
            .strip_prefix(replies.as_str())
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        {
            return true;
        }
        let path = if prefix.is_empty() {
            Some(topic)
        } else {
            topic.strip_prefix(prefix).and_then(|t| t.strip_prefix('/'))
        };
        let Some(namespace) = self.namespace.get() else {
            return false;
        };
        path.is_some_and(|p| namespace.lookup(p).is_some())
    }
}

/// The broker's `Auth`, moving `connect` (argon2id password checks take tens of
/// milliseconds) off the async worker with `block_in_place`, so one login does not stall the
/// other connections served by that worker, and keeping the platform's own topics
/// ([`Reserved`]) for the platform. Needs the multi-threaded runtime (the binary's).
pub struct BlockingAuth<A> {
    pub inner: Arc<A>,
    pub reserved: Option<Reserved>,
}

impl<A: Auth> Auth for BlockingAuth<A> {
    fn connect(&self, info: &MqttConnectInfo<'_>) -> Result<Principal, ReasonCode> {
        let quick = info.password.is_none()
            || info
                .password
                .is_some_and(|p| p.starts_with(ironplant_security::users::TOKEN_PREFIX.as_bytes()));
        if quick {
            // Certificates and tokens are a hash lookup: no need to leave the worker.
            return self.inner.connect(info);
        }
        tokio::task::block_in_place(|| self.inner.connect(info))
    }
    fn may_publish(&self, who: &Principal, topic: &str) -> bool {
        !self.reserved.as_ref().is_some_and(|r| r.owns(topic)) && self.inner.may_publish(who, topic)
    }
    fn may_subscribe(&self, who: &Principal, filter: &str) -> bool {
        self.inner.may_subscribe(who, filter)
    }
    fn denied(&self, who: Option<&Principal>, peer: SocketAddr, what: Denied<'_>) {
        self.inner.denied(who, peer, what);
    }
    fn epoch(&self) -> u64 {
        // A new tag (a Sparkplug birth) reserves its UNS topic: decisions cached before it
        // must be made again. Two atomic loads.
        let tags = self
            .reserved
            .as_ref()
            .and_then(|r| r.namespace.get())
            .map_or(0, |n| n.len() as u64);
        self.inner.epoch().wrapping_add(tags << 32)
    }
    fn revalidate(&self, who: &[&Principal]) -> Vec<bool> {
        // Reads the user store and the rules files: off the async worker.
        tokio::task::block_in_place(|| self.inner.revalidate(who))
    }
    fn is_privileged(&self, who: &Principal) -> bool {
        self.inner.is_privileged(who)
    }
    fn may_inject(&self, _source: &str, topic: &str) -> bool {
        !self.reserved.as_ref().is_some_and(|r| r.owns(topic))
    }
}

/// Serves MQTT over TLS on `listener` until the task is dropped: each connection's handshake
/// is bounded in time; a verified client certificate's subject becomes its identity.
pub async fn serve_mqtts(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    broker: ironplant_mqtt::Broker,
) -> std::io::Result<()> {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning; the listener stays up.
                broker
                    .stats()
                    .accept_errors
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(error = %e, "MQTT/TLS listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // The connection limits apply before the handshake: half-open TLS connections hold
        // a slot, so a flood of them is refused (and audited) like any other.
        let Some(slot) = broker.admit(peer) else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let broker = broker.clone();
        tokio::spawn(async move {
            let handshake = broker.config().connect_timeout;
            let tls = match tokio::time::timeout(handshake, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::info!(%peer, error = %e, "MQTT/TLS handshake refused");
                    return;
                }
                Err(_) => {
                    tracing::info!(%peer, "MQTT/TLS handshake timed out");
                    return;
                }
            };
            let subject = ironplant_security::peer_subject(tls.get_ref().1.peer_certificates());
            let stream = ironplant_mqtt::broker::Generic(tls);
            if let Err(e) = broker.serve_admitted(stream, peer, subject, slot).await {
                tracing::debug!(%peer, error = %e, "mqtt/tls connection ended");
            }
        });
    }
}

/// TLS to the broker with a device certificate, for the demo's Sparkplug edge node.
#[derive(Clone)]
pub struct TlsConnector {
    pub address: SocketAddr,
    pub server_name: rustls::pki_types::ServerName<'static>,
    pub connector: tokio_rustls::TlsConnector,
}

impl ironplant_mqtt::client::Connector for TlsConnector {
    type Stream = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;
    fn connect(&self) -> impl std::future::Future<Output = std::io::Result<Self::Stream>> + Send {
        let this = self.clone();
        async move {
            let tcp = tokio::net::TcpStream::connect(this.address).await?;
            tcp.set_nodelay(true)?;
            this.connector.connect(this.server_name, tcp).await
        }
    }
    fn describe(&self) -> String {
        format!("mqtts://{}", self.address)
    }
}

/// Records in the audit log when the configuration in effect differs from the last start's
/// (the config is a file edited outside the platform, so a change shows up at the next start):
/// its SHA-256 is kept in `<data-dir>/security/config.sha256`. Returns whether it changed.
pub fn audit_config(sec: &Security, data_dir: &Path, config: &Config) -> anyhow::Result<bool> {
    let digest = ring::digest::digest(&ring::digest::SHA256, format!("{config:?}").as_bytes());
    let now: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    let file = data_dir.join("security").join("config.sha256");
    let before = std::fs::read_to_string(&file).ok();
    let before = before.as_deref().map(str::trim);
    if before == Some(now.as_str()) {
        return Ok(false);
    }
    let what = match before {
        Some(old) => format!("configuration changed since the last start: sha256 {old} -> {now}"),
        None => format!("first configuration recorded: sha256 {now}"),
    };
    sec.audit
        .record(ironplant_security::AuditEvent::ConfigChanged { actor: None, what })
        .context("cannot record the configuration change in the audit log")?;
    std::fs::write(&file, format!("{now}\n"))
        .with_context(|| format!("cannot write {}", file.display()))?;
    Ok(true)
}

/// The keys of signed ingest payloads: the enrolled devices' signing keys (a revoked device's
/// are gone), and refusals recorded in the audit log.
pub struct SignerKeys(pub Arc<Security>);

impl ironplant_ingest::json::SignerKeys for SignerKeys {
    fn public_key(&self, signer: &str) -> Option<Vec<u8>> {
        self.0.ca.devices().signing_key(signer)
    }

    fn refused(
        &self,
        topic: &str,
        signer: &str,
        why: &ironplant_mqtt::signed::SignedError,
        from: &ironplant_ingest::guard::Provenance,
    ) {
        self.0
            .audit
            .submit(ironplant_security::AuditEvent::SignatureRefused {
                signer: ironplant_security::audit::bounded(signer),
                topic: ironplant_security::audit::bounded(topic),
                principal: from.identity.as_deref().map(str::to_owned),
                source: from.address.map(|a| a.ip().to_string()),
                reason: why.to_string(),
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_and_command_reply_topics_belong_to_the_platform() {
        for (prefix, root) in [("site1/uns/", "site1/uns/_events"), ("", "_events")] {
            let auth = BlockingAuth {
                inner: Arc::new(ironplant_mqtt::auth::AllowAll),
                reserved: Some(Reserved {
                    namespace: Arc::new(std::sync::OnceLock::new()),
                    uns_prefix: prefix.to_owned(),
                    host_state: "spBv1.0/STATE/h".to_owned(),
                }),
            };
            let who = Principal {
                client_id: Arc::from("c"),
                user: Some(Arc::from("engineer")),
                roles: Vec::new(),
                owner: Some(Arc::from("engineer")),
            };
            let replies = format!("{prefix}_cmd_reply");
            for forged in [
                format!("{root}/security/_platform"),
                format!("{root}/alarm/acme/lyon/line1/filler/temp"),
                root.to_owned(),
                // Command replies are the platform's too: no forged "verified".
                format!("{replies}/acme/lyon/line1/filler/speed_setpoint"),
                replies.clone(),
            ] {
                assert!(!auth.may_publish(&who, &forged), "{forged}");
                assert!(!auth.may_inject("bridge", &forged), "{forged}");
            }
            for free in [
                format!("{root}x/alarm/a"),
                format!("{prefix}acme/_events/a"),
                format!("{prefix}_cmd_replyx/a"),
            ] {
                assert!(auth.may_publish(&who, &free), "{free}");
            }
        }
    }

    #[test]
    fn a_changed_config_is_audited_once() {
        let dir = tempfile::tempdir().expect("temp dir");
        let sec = open(dir.path()).expect("security state");
        let parse = |text: &str| ironplant_api::settings::parse("t.toml", text).expect("config");
        let a = parse("[mqtt]\nuns_prefix = \"a\"\n");
        let b = parse("[mqtt]\nuns_prefix = \"b\"\n");
        assert!(audit_config(&sec, dir.path(), &a).expect("first"));
        assert!(
            !audit_config(&sec, dir.path(), &a).expect("same"),
            "unchanged: nothing"
        );
        assert!(audit_config(&sec, dir.path(), &b).expect("changed"));
        let page = sec
            .audit
            .query(&ironplant_security::AuditQuery {
                kinds: vec!["config_changed".into()],
                ..Default::default()
            })
            .expect("query");
        assert_eq!(page.records.len(), 2, "{:?}", page.records);
    }
}
