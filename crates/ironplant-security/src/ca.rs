//! The built-in certificate authority: one ECDSA P-256 CA per data directory, the server
//! certificate it issues for the listeners, device enrolment (client certificate bundles),
//! revocation, and one-time enrolment tokens.
//!
//! Files in the CA directory: `ca.key` (0600), `ca.crt` (0644), `ca.json` (its name),
//! `server.key` (0600), `server.crt` (0644), `server.json` (names and expiry), `devices.json`
//! (0600: enrolled devices and enrolment-token hashes; never a device's private key).
//!
//! Revocation: every enrolled certificate is recorded by its SHA-256 fingerprint. The
//! listeners' [`DeviceCertVerifier`] first lets webpki check chain, signature, key usage and
//! expiry, then accepts only fingerprints recorded as active in `devices.json`, re-read when
//! it changes on disk, so `ironplant device revoke` in another process takes effect on the
//! next handshake without a restart. We chose this allow-list over CRLs because we issue
//! every client certificate ourselves and know each one; a CRL would need re-signing on every
//! change and a rebuilt verifier, and would not refuse a certificate missing from our records.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SerialNumber,
};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName as TlsName, RootCertStore,
    SignatureScheme,
};
use serde::{Deserialize, Serialize};

use crate::audit::{bounded, AuditEvent, AuditLog};
use crate::clock::{unix_secs, Clock};
use crate::crypto::{ct_eq, hex, new_bearer, parse_bearer, random_bytes, sha256, unhex32};
use crate::error::{Error, Result};
use crate::fsutil::{self, JsonFile, PRIVATE, PUBLIC};
use crate::roles::Role;
use crate::tls::{pem_to_certs, ring_provider, ServerIdentity};

/// Prefix of enrolment tokens (`ipe_<id>_<secret>`).
pub const ENROLMENT_TOKEN_PREFIX: &str = "ipe";

#[derive(Debug, Clone)]
pub struct CaOptions {
    pub ca_validity: Duration,
    pub server_validity: Duration,
    pub device_validity: Duration,
    /// A server certificate is re-issued when it expires within this.
    pub renew_before: Duration,
    /// Certificates start this long before their issue time, for clocks slightly behind.
    pub backdate: Duration,
}

const DAY: u64 = 24 * 3600;

impl Default for CaOptions {
    fn default() -> Self {
        CaOptions {
            ca_validity: Duration::from_secs(20 * 365 * DAY),
            server_validity: Duration::from_secs(397 * DAY),
            device_validity: Duration::from_secs(2 * 365 * DAY),
            renew_before: Duration::from_secs(30 * DAY),
            backdate: Duration::from_secs(3600),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct CaMeta {
    common_name: String,
    created: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ServerMeta {
    names: Vec<String>,
    not_after: u64,
}

/// An enrolled device certificate (active or revoked).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRecord {
    pub name: String,
    pub role: Role,
    /// Certificate serial number, hex.
    pub serial: String,
    /// SHA-256 of the certificate DER, hex.
    pub fingerprint: String,
    pub enrolled: u64,
    pub not_after: u64,
    pub revoked: Option<u64>,
    /// The device's Ed25519 public key for signed payloads, hex (`ironplant_mqtt::signed`);
    /// absent on records enrolled before signing existed (enrol again to get one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_key: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct EnrolmentTokenRecord {
    id: String,
    hash: String,
    device: String,
    role: Role,
    created: u64,
    expires: u64,
    used: Option<u64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct DevicesFile {
    devices: Vec<DeviceRecord>,
    enrolment_tokens: Vec<EnrolmentTokenRecord>,
}

/// What a device needs to connect: its certificate and key, and the CA to trust (PEM).
pub struct DeviceBundle {
    pub name: String,
    pub role: Role,
    pub certificate_pem: String,
    pub private_key_pem: String,
    pub ca_pem: String,
    pub fingerprint: String,
    /// The device's Ed25519 key for signed payloads (PKCS#8), and its public key (hex).
    pub signing_pkcs8: Vec<u8>,
    pub signing_public: String,
}

impl std::fmt::Debug for DeviceBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceBundle")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl DeviceBundle {
    /// Writes `<name>.crt` (0644), `<name>.key` (0600), `ca.crt` (0644), and the signing key
    /// pair `<name>.sign.key` (PKCS#8, 0600) and `<name>.sign.pub` (hex, 0644) into `dir`.
    pub fn write_to(&self, dir: &Path) -> Result<Vec<PathBuf>> {
        fsutil::ensure_private_dir(dir)?;
        let crt = dir.join(format!("{}.crt", self.name));
        let key = dir.join(format!("{}.key", self.name));
        let ca = dir.join("ca.crt");
        let sign = dir.join(format!("{}.sign.key", self.name));
        let sign_pub = dir.join(format!("{}.sign.pub", self.name));
        fsutil::write_atomic(&crt, self.certificate_pem.as_bytes(), PUBLIC)?;
        fsutil::write_atomic(&key, self.private_key_pem.as_bytes(), PRIVATE)?;
        fsutil::write_atomic(&ca, self.ca_pem.as_bytes(), PUBLIC)?;
        fsutil::write_atomic(&sign, &self.signing_pkcs8, PRIVATE)?;
        fsutil::write_atomic(
            &sign_pub,
            format!("{}\n", self.signing_public).as_bytes(),
            PUBLIC,
        )?;
        Ok(vec![crt, key, ca, sign, sign_pub])
    }
}

/// A freshly created enrolment token: `token` is shown once and then only its hash is kept.
pub struct NewEnrolmentToken {
    pub id: String,
    pub token: String,
    pub device: String,
    pub expires: u64,
}

impl std::fmt::Debug for NewEnrolmentToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewEnrolmentToken")
            .field("id", &self.id)
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

/// Whether a presented certificate belongs to an active enrolled device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertStatus {
    Active(DeviceRecord),
    Revoked(DeviceRecord),
    /// Not issued by us to any device we know (or the registry cannot be read).
    Unknown,
}

/// The device registry (`devices.json`), shared by the CA, the TLS verifier and the broker's
/// authoriser. Reads are served from memory and refreshed when the file changes.
#[derive(Debug)]
pub struct DeviceRegistry {
    file: JsonFile<DevicesFile>,
}

impl DeviceRegistry {
    fn open(path: PathBuf) -> Result<Self> {
        Ok(DeviceRegistry {
            file: JsonFile::open(path, PRIVATE)?,
        })
    }

    /// Status of a certificate by its fingerprint. A registry that cannot be read gives
    /// `Unknown` (fail closed) and an error in the log.
    pub fn status(&self, cert_der: &[u8]) -> CertStatus {
        let fp = hex(&sha256(cert_der));
        match self.file.get() {
            Ok(f) => match f.devices.iter().find(|d| d.fingerprint == fp) {
                Some(d) if d.revoked.is_none() => CertStatus::Active(d.clone()),
                Some(d) => CertStatus::Revoked(d.clone()),
                None => CertStatus::Unknown,
            },
            Err(e) => {
                tracing::error!(error = %e, "cannot read the device registry; refusing device certificates");
                CertStatus::Unknown
            }
        }
    }

    /// True unless `cert_der` is the certificate of an active enrolled device.
    pub fn is_revoked(&self, cert_der: &[u8]) -> bool {
        !matches!(self.status(cert_der), CertStatus::Active(_))
    }

    /// The Ed25519 public key (32 bytes) of the active device `name`, for signed payloads;
    /// `None` if there is no such device, it was revoked, or it has no signing key.
    pub fn signing_key(&self, name: &str) -> Option<Vec<u8>> {
        let d = self.active(name)?;
        ironplant_mqtt::signed::unhex(d.signing_key.as_deref()?).filter(|k| k.len() == 32)
    }

    /// The active device of that name.
    pub fn active(&self, name: &str) -> Option<DeviceRecord> {
        let f = self.file.get().ok()?;
        f.devices
            .iter()
            .find(|d| d.name == name && d.revoked.is_none())
            .cloned()
    }

    pub fn list(&self) -> Result<Vec<DeviceRecord>> {
        Ok(self.file.get()?.devices.clone())
    }
}

pub struct CertificateAuthority {
    dir: PathBuf,
    issuer: Issuer<'static, KeyPair>,
    ca_der: CertificateDer<'static>,
    ca_pem: String,
    devices: Arc<DeviceRegistry>,
    clock: Arc<dyn Clock>,
    audit: Arc<AuditLog>,
    options: CaOptions,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("dir", &self.dir)
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

fn ca_params(common_name: &str) -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Ironplant");
    dn.push(DnType::CommonName, common_name);
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p
}

fn random_serial() -> Result<SerialNumber> {
    let mut b = random_bytes::<16>()?;
    b[0] &= 0x7f; // positive
    b[0] |= 0x01; // and 16 bytes long
    Ok(SerialNumber::from_slice(&b))
}

fn to_offset(t: SystemTime) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(i64::try_from(unix_secs(t)).unwrap_or(i64::MAX))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

fn cert_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Certificate(format!("{what}: {e}"))
}

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| Error::io("read", path, e))
}

/// Device names appear in certificate subjects and, through `%u`, in MQTT topics.
pub fn validate_device_name(name: &str) -> Result<()> {
    let why = if name.is_empty() || name.len() > 64 {
        Some("it must be 1 to 64 characters long")
    } else if name.starts_with('.') {
        Some("it must not start with '.'")
    } else if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    {
        Some("use only letters, digits and . _ - (it becomes an MQTT topic level)")
    } else {
        None
    };
    match why {
        Some(why) => Err(Error::InvalidName {
            what: "device name",
            name: bounded(name),
            why,
        }),
        None => Ok(()),
    }
}

impl CertificateAuthority {
    /// Opens the CA in `dir`, creating it (key 0600, certificate 0644) on first use.
    pub fn open_or_create(
        dir: &Path,
        clock: Arc<dyn Clock>,
        audit: Arc<AuditLog>,
        options: CaOptions,
    ) -> Result<CertificateAuthority> {
        fsutil::ensure_private_dir(dir)?;
        let key_path = dir.join("ca.key");
        let cert_path = dir.join("ca.crt");
        let meta_path = dir.join("ca.json");
        let (issuer, ca_pem) = if key_path.exists() || cert_path.exists() {
            let key = KeyPair::from_pem(&read_text(&key_path)?).map_err(|e| Error::Corrupt {
                path: key_path.clone(),
                detail: format!("not a PEM private key: {e}"),
            })?;
            let meta: CaMeta =
                serde_json::from_str(&read_text(&meta_path)?).map_err(|e| Error::Corrupt {
                    path: meta_path.clone(),
                    detail: e.to_string(),
                })?;
            let pem = read_text(&cert_path)?;
            (Issuer::new(ca_params(&meta.common_name), key), pem)
        } else {
            let key = KeyPair::generate().map_err(|e| cert_err("generate the CA key", e))?;
            let now = clock.now();
            let common_name = format!("Ironplant CA {}", hex(&random_bytes::<4>()?));
            let mut params = ca_params(&common_name);
            params.serial_number = Some(random_serial()?);
            params.not_before = to_offset(now - options.backdate);
            params.not_after = to_offset(now + options.ca_validity);
            let cert = params
                .self_signed(&key)
                .map_err(|e| cert_err("create the CA certificate", e))?;
            fsutil::write_new(&key_path, key.serialize_pem().as_bytes(), PRIVATE)?;
            fsutil::write_atomic(&cert_path, cert.pem().as_bytes(), PUBLIC)?;
            let meta = CaMeta {
                common_name,
                created: unix_secs(now),
            };
            let meta_json =
                serde_json::to_vec_pretty(&meta).map_err(|e| cert_err("CA metadata", e))?;
            fsutil::write_atomic(&meta_path, &meta_json, PUBLIC)?;
            tracing::info!(dir = %dir.display(), "created a new certificate authority");
            (Issuer::new(ca_params(&meta.common_name), key), cert.pem())
        };
        let ca_der = pem_to_certs(ca_pem.as_bytes(), &cert_path)?
            .into_iter()
            .next()
            .ok_or_else(|| Error::Corrupt {
                path: cert_path.clone(),
                detail: "no certificate in it".into(),
            })?;
        let devices = Arc::new(DeviceRegistry::open(dir.join("devices.json"))?);
        Ok(CertificateAuthority {
            dir: dir.to_owned(),
            issuer,
            ca_der,
            ca_pem,
            devices,
            clock,
            audit,
            options,
        })
    }

    /// SHA-256 of the CA certificate, as `AB:CD:...` (what browsers and `openssl x509
    /// -fingerprint -sha256` show). Print it so clients can pin or check it.
    pub fn fingerprint(&self) -> String {
        sha256(&self.ca_der)
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":")
    }

    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    pub fn ca_der(&self) -> &CertificateDer<'static> {
        &self.ca_der
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn devices(&self) -> &Arc<DeviceRegistry> {
        &self.devices
    }

    fn audit_record(&self, event: AuditEvent) {
        if let Err(e) = self.audit.record(event) {
            tracing::error!(error = %e, "audit log: could not write a record");
        }
    }

    /// The listeners' certificate for `names` (DNS names or IP addresses), loaded from the
    /// CA directory or issued when missing, issued for other names, or close to expiry.
    pub fn server_identity(&self, names: &[String]) -> Result<ServerIdentity> {
        if names.is_empty() {
            return Err(Error::Certificate(
                "a server certificate needs at least one host name or IP address".into(),
            ));
        }
        let mut wanted: Vec<String> = names.to_vec();
        wanted.sort();
        wanted.dedup();
        let key_path = self.dir.join("server.key");
        let cert_path = self.dir.join("server.crt");
        let meta_path = self.dir.join("server.json");
        let now = self.clock.now();
        let current: Option<ServerMeta> = std::fs::read(&meta_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let fresh = current.as_ref().is_some_and(|m| {
            m.names == wanted && unix_secs(now + self.options.renew_before) < m.not_after
        });
        if fresh && key_path.exists() && cert_path.exists() {
            return ServerIdentity::from_pem_files(&cert_path, &key_path);
        }
        let key = KeyPair::generate().map_err(|e| cert_err("generate the server key", e))?;
        let mut params = CertificateParams::new(wanted.clone())
            .map_err(|e| cert_err("server certificate names", e))?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Ironplant");
        dn.push(DnType::CommonName, wanted[0].as_str());
        params.distinguished_name = dn;
        params.serial_number = Some(random_serial()?);
        params.not_before = to_offset(now - self.options.backdate);
        let not_after = now + self.options.server_validity;
        params.not_after = to_offset(not_after);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| cert_err("issue the server certificate", e))?;
        fsutil::write_atomic(&key_path, key.serialize_pem().as_bytes(), PRIVATE)?;
        fsutil::write_atomic(
            &cert_path,
            format!("{}{}", cert.pem(), self.ca_pem).as_bytes(),
            PUBLIC,
        )?;
        let meta = ServerMeta {
            names: wanted,
            not_after: unix_secs(not_after),
        };
        let meta_json =
            serde_json::to_vec_pretty(&meta).map_err(|e| cert_err("server metadata", e))?;
        fsutil::write_atomic(&meta_path, &meta_json, PUBLIC)?;
        tracing::info!(names = ?meta.names, "issued a server certificate");
        ServerIdentity::from_pem_files(&cert_path, &key_path)
    }

    /// Issues a client certificate for device `name` (subject `CN=<name>, OU=<role>,
    /// O=Ironplant`). The private key is generated here and returned only in the bundle.
    pub fn enroll(&self, name: &str, role: Role, actor: Option<&str>) -> Result<DeviceBundle> {
        validate_device_name(name)?;
        let now = self.clock.now();
        let key = KeyPair::generate().map_err(|e| cert_err("generate a device key", e))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Ironplant");
        dn.push(DnType::OrganizationalUnitName, role.as_str());
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        let serial = random_serial()?;
        params.serial_number = Some(serial.clone());
        params.not_before = to_offset(now - self.options.backdate);
        let not_after = now + self.options.device_validity;
        params.not_after = to_offset(not_after);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| cert_err("issue the device certificate", e))?;
        let fingerprint = hex(&sha256(cert.der()));
        let serial = hex(&serial.to_bytes());
        let (signer, signing_pkcs8) = ironplant_mqtt::signed::Signer::generate(name)
            .map_err(|_| Error::Crypto("could not generate the device's signing key"))?;
        let signing_public = signer.public_key_hex();
        let record = DeviceRecord {
            name: name.into(),
            role,
            serial: serial.clone(),
            fingerprint: fingerprint.clone(),
            enrolled: unix_secs(now),
            not_after: unix_secs(not_after),
            revoked: None,
            signing_key: Some(signing_public.clone()),
        };
        self.devices.file.update(|f| {
            if f.devices
                .iter()
                .any(|d| d.name == name && d.revoked.is_none())
            {
                return Err(Error::DeviceExists(name.into()));
            }
            f.devices.push(record);
            Ok(())
        })?;
        self.audit_record(AuditEvent::DeviceEnrolled {
            device: name.into(),
            role: role.to_string(),
            serial,
            fingerprint: fingerprint.clone(),
            actor: actor.map(Into::into),
        });
        Ok(DeviceBundle {
            name: name.into(),
            role,
            certificate_pem: cert.pem(),
            private_key_pem: key.serialize_pem(),
            ca_pem: self.ca_pem.clone(),
            fingerprint,
            signing_pkcs8,
            signing_public,
        })
    }

    /// Revokes the active certificate of device `name`; refused from the next handshake on.
    pub fn revoke(&self, name: &str, actor: Option<&str>) -> Result<DeviceRecord> {
        let now = unix_secs(self.clock.now());
        let record = self.devices.file.update(|f| {
            let d = f
                .devices
                .iter_mut()
                .rfind(|d| d.name == name)
                .ok_or_else(|| Error::UnknownDevice(bounded(name)))?;
            if d.revoked.is_some() {
                return Err(Error::DeviceAlreadyRevoked(name.into()));
            }
            d.revoked = Some(now);
            Ok(d.clone())
        })?;
        self.audit_record(AuditEvent::DeviceRevoked {
            device: name.into(),
            serial: record.serial.clone(),
            actor: actor.map(Into::into),
        });
        Ok(record)
    }

    /// Every certificate ever enrolled, active and revoked, oldest first.
    pub fn list(&self) -> Result<Vec<DeviceRecord>> {
        self.devices.list()
    }

    /// A single-use token with which device `name` can fetch its certificate bundle once,
    /// before `ttl` runs out. Only the token's hash is stored.
    pub fn create_enrolment_token(
        &self,
        name: &str,
        role: Role,
        ttl: Duration,
        actor: Option<&str>,
    ) -> Result<NewEnrolmentToken> {
        validate_device_name(name)?;
        let bearer = new_bearer(ENROLMENT_TOKEN_PREFIX)?;
        let now = unix_secs(self.clock.now());
        let expires = now.saturating_add(ttl.as_secs());
        self.devices.file.update(|f| {
            if f.devices
                .iter()
                .any(|d| d.name == name && d.revoked.is_none())
            {
                return Err(Error::DeviceExists(name.into()));
            }
            f.enrolment_tokens.push(EnrolmentTokenRecord {
                id: bearer.id.clone(),
                hash: hex(&bearer.hash),
                device: name.into(),
                role,
                created: now,
                expires,
                used: None,
            });
            Ok(())
        })?;
        self.audit_record(AuditEvent::EnrolmentTokenCreated {
            id: bearer.id.clone(),
            device: name.into(),
            role: role.to_string(),
            expires,
            actor: actor.map(Into::into),
        });
        Ok(NewEnrolmentToken {
            id: bearer.id,
            token: bearer.token,
            device: name.into(),
            expires,
        })
    }

    /// Exchanges an enrolment token for the device's certificate bundle. The token is spent
    /// before the certificate is issued, so it can never be used twice.
    pub fn redeem_enrolment_token(&self, token: &str) -> Result<DeviceBundle> {
        let (id, hash) =
            parse_bearer(ENROLMENT_TOKEN_PREFIX, token).ok_or(Error::EnrolmentTokenRejected)?;
        let now = unix_secs(self.clock.now());
        let (device, role) = self.devices.file.update(|f| {
            let t = f
                .enrolment_tokens
                .iter_mut()
                .find(|t| t.id == id)
                .ok_or(Error::EnrolmentTokenRejected)?;
            let stored = unhex32(&t.hash).ok_or(Error::EnrolmentTokenRejected)?;
            if !ct_eq(&stored, &hash) || t.used.is_some() || now >= t.expires {
                return Err(Error::EnrolmentTokenRejected);
            }
            t.used = Some(now);
            Ok((t.device.clone(), t.role))
        })?;
        self.enroll(&device, role, Some(&format!("enrolment token {id}")))
    }

    /// The verifier for listeners that accept device certificates. With `mandatory`, a
    /// client without a certificate is refused at the handshake; otherwise it may go on to
    /// authenticate with a user name and password or a token.
    pub fn client_verifier(&self, mandatory: bool) -> Result<Arc<DeviceCertVerifier>> {
        let mut roots = RootCertStore::empty();
        roots
            .add(self.ca_der.clone())
            .map_err(|e| Error::Tls(format!("the CA certificate is not a usable root: {e}")))?;
        let mut builder =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), ring_provider());
        if !mandatory {
            builder = builder.allow_unauthenticated();
        }
        let inner = builder
            .build()
            .map_err(|e| Error::Tls(format!("client verifier: {e}")))?;
        Ok(Arc::new(DeviceCertVerifier {
            inner,
            devices: self.devices.clone(),
        }))
    }
}

/// A rustls client-certificate verifier: webpki's checks (chain to our CA, signatures, expiry
/// at the handshake's time, client-auth key usage), then "is this an active enrolled device"
/// against the registry, on every handshake.
#[derive(Debug)]
pub struct DeviceCertVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    devices: Arc<DeviceRegistry>,
}

impl ClientCertVerifier for DeviceCertVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[TlsName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> std::result::Result<ClientCertVerified, rustls::Error> {
        self.inner
            .verify_client_cert(end_entity, intermediates, now)?;
        match self.devices.status(end_entity) {
            CertStatus::Active(_) => Ok(ClientCertVerified::assertion()),
            CertStatus::Revoked(d) => {
                tracing::warn!(device = %d.name, serial = %d.serial, "refused a revoked device certificate");
                Err(rustls::Error::InvalidCertificate(CertificateError::Revoked))
            }
            CertStatus::Unknown => {
                tracing::warn!("refused a certificate from our CA that no enrolled device holds");
                Err(rustls::Error::InvalidCertificate(
                    CertificateError::ApplicationVerificationFailure,
                ))
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
