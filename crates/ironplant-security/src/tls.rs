//! rustls configuration for the listeners (and for clients in tests and tools), always on
//! the `ring` provider with rustls' safe defaults (TLS 1.2 and 1.3, no legacy suites).

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::danger::ClientCertVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::der;
use crate::error::{Error, Result};

pub fn ring_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate chain and its private key for a TLS server.
pub struct ServerIdentity {
    pub cert_chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl std::fmt::Debug for ServerIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerIdentity")
            .field("certificates", &self.cert_chain.len())
            .finish_non_exhaustive()
    }
}

impl Clone for ServerIdentity {
    fn clone(&self) -> Self {
        ServerIdentity {
            cert_chain: self.cert_chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

pub(crate) fn pem_to_certs(pem: &[u8], path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    CertificateDer::pem_slice_iter(pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Corrupt {
            path: path.to_owned(),
            detail: format!("not PEM certificates: {e}"),
        })
}

impl ServerIdentity {
    /// Loads a PEM certificate chain (server certificate first) and a PEM private key
    /// (PKCS#8, PKCS#1 or SEC1): bring-your-own certificates from a corporate CA.
    pub fn from_pem_files(cert_path: &Path, key_path: &Path) -> Result<ServerIdentity> {
        let pem = std::fs::read(cert_path).map_err(|e| Error::io("read", cert_path, e))?;
        let cert_chain = pem_to_certs(&pem, cert_path)?;
        if cert_chain.is_empty() {
            return Err(Error::Corrupt {
                path: cert_path.to_owned(),
                detail: "no CERTIFICATE section; expected a PEM certificate chain".into(),
            });
        }
        let key_pem = std::fs::read(key_path).map_err(|e| Error::io("read", key_path, e))?;
        // The error of a key parser may quote key material; say only what kind of file it is not.
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| Error::Corrupt {
            path: key_path.to_owned(),
            detail: "no PEM private key (PKCS#8, PKCS#1 or SEC1) in it".into(),
        })?;
        Ok(ServerIdentity { cert_chain, key })
    }
}

/// A server config with `identity`; with `client_auth`, clients are asked for certificates
/// checked by that verifier (see `CertificateAuthority::client_verifier`). Set
/// `alpn_protocols` on the result as the listener needs.
pub fn server_config(
    identity: &ServerIdentity,
    client_auth: Option<Arc<dyn ClientCertVerifier>>,
) -> Result<ServerConfig> {
    let builder = ServerConfig::builder_with_provider(ring_provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?;
    let with_client_auth = client_auth.is_some();
    let builder = match client_auth {
        Some(v) => builder.with_client_cert_verifier(v),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(identity.cert_chain.clone(), identity.key.clone_key())
        .map_err(|e| {
            Error::Tls(format!(
                "server certificate and key do not fit together: {e}"
            ))
        })?;
    if with_client_auth {
        // A resumed session skips client-certificate verification, so a revoked device
        // could come back on a ticket from before its revocation. Every handshake of a
        // listener that accepts device certificates is a full one.
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
    }
    Ok(config)
}

/// A client config trusting `ca_pem` and, when given, presenting a client certificate
/// (`cert_pem`, `key_pem`): what a device does with its enrolment bundle.
pub fn client_config(ca_pem: &str, client: Option<(&str, &str)>) -> Result<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in pem_to_certs(ca_pem.as_bytes(), Path::new("<CA PEM>"))? {
        roots
            .add(cert)
            .map_err(|e| Error::Tls(format!("CA certificate: {e}")))?;
    }
    let builder = ClientConfig::builder_with_provider(ring_provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_root_certificates(roots);
    match client {
        None => Ok(builder.with_no_client_auth()),
        Some((cert_pem, key_pem)) => {
            let chain = pem_to_certs(cert_pem.as_bytes(), Path::new("<client certificate PEM>"))?;
            let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
                .map_err(|_| Error::Tls("the client key is not a PEM private key".into()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| Error::Tls(format!("client certificate: {e}")))
        }
    }
}

/// The server name to use when connecting to `host` (a DNS name or an IP address).
pub fn server_name(host: &str) -> Result<ServerName<'static>> {
    ServerName::try_from(host.to_owned())
        .map_err(|_| Error::Tls(format!("{host:?} is not a valid DNS name or IP address")))
}

/// The identity a listener passes as `ConnectInfo::certificate_subject`: the Common Name of
/// the verified client certificate (the device name we enrolled). `None` without a
/// certificate. Call it with `ServerConnection::peer_certificates()` after the handshake.
pub fn peer_subject(peer_certificates: Option<&[CertificateDer<'_>]>) -> Option<String> {
    let end_entity = peer_certificates?.first()?;
    der::subject_common_name(end_entity)
}
