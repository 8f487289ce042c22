//! The OPC UA certificates of the platform: an RSA certificate authority of its own (OPC UA's
//! security policies need RSA keys; the platform's main CA is ECDSA) that issues the
//! application instance certificate, and the trust list of peer certificates in the directory
//! layout the OPC UA stack reads (`own/cert.der`, `private/private.pem`, `trusted/`,
//! `rejected/`).
//!
//! Rules (OPC UA Part 6 §6.2.2, and what asyncua and node-opcua check):
//! - RSA 2048-bit keys (the three policies we allow take 2048–4096);
//! - the subject alternative name's *first* entry is the URI equal to the ApplicationUri,
//!   followed by the DNS names and IP addresses peers connect to;
//! - key usage digitalSignature, nonRepudiation, keyEncipherment, dataEncipherment; extended
//!   key usage serverAuth and clientAuth (one certificate serves the client and the server).
//! - Trust is per certificate: a peer certificate is trusted when its DER file is in
//!   `trusted/`; an unknown one is put in `rejected/` by the stack, and [`Pki::trust`] moves it
//!   (by its SHA-1 thumbprint, as OPC UA tools show it).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, PKCS_RSA_SHA256,
};

/// RSA key size of the CA and the application instance certificate.
pub const KEY_BITS: u32 = 2048;
/// Validity of the application instance certificate.
pub const APP_VALIDITY: Duration = Duration::from_secs(2 * 365 * 86_400);
/// Validity of the OPC UA CA.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 86_400);
/// An application certificate this close to its end is renewed at start.
pub const RENEW_BEFORE: Duration = Duration::from_secs(30 * 86_400);

/// Why the OPC UA certificates cannot be made or read.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("OPC UA certificate: {0}")]
    Certificate(String),
    #[error(
        "no rejected certificate has the thumbprint {0:?} (give at least its first 16 hex digits); `ironplant opcua certificates` lists them"
    )]
    UnknownThumbprint(String),
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> PkiError + 'a {
    move |source| PkiError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

fn cert_err(what: &str, e: impl std::fmt::Display) -> PkiError {
    PkiError::Certificate(format!("{what}: {e}"))
}

/// A new RSA key, as rcgen's key pair (signing with ring) and as PKCS#8 PEM (for the stack).
fn rsa_key() -> Result<(KeyPair, String), PkiError> {
    let key = opcua::crypto::PrivateKey::new(KEY_BITS).map_err(|e| cert_err("RSA key", e))?;
    let der = key
        .to_der()
        .map_err(|e| cert_err("encode the RSA key", e))?;
    let pair = KeyPair::from_pkcs8_der_and_sign_algo(
        &rustls_pki_types::PrivatePkcs8KeyDer::from(der.as_bytes()),
        &PKCS_RSA_SHA256,
    )
    .map_err(|e| cert_err("load the RSA key", e))?;
    let pem = pair.serialize_pem();
    Ok((pair, pem))
}

/// The OPC UA CA's name and constraints (also how an issuer is rebuilt from its key: the
/// subject must be the same).
fn ca_params() -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Ironplant");
    dn.push(DnType::CommonName, "Ironplant OPC UA CA");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p
}

fn to_offset(t: SystemTime) -> time::OffsetDateTime {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    time::OffsetDateTime::from_unix_timestamp(secs).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

fn serial() -> Result<rcgen::SerialNumber, PkiError> {
    let mut b = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
        .map_err(|_| cert_err("serial number", "the system RNG failed"))?;
    b[0] = (b[0] & 0x7f) | 0x01;
    Ok(rcgen::SerialNumber::from_slice(&b))
}

/// The platform's client certificates and the servers it trusts: `<data-dir>/opcua/pki`.
pub fn client_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("opcua").join("pki")
}

/// The platform's OPC UA server's certificates and the clients it trusts:
/// `<data-dir>/opcua/server`.
pub fn server_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("opcua").join("server")
}

/// The SHA-1 thumbprint of a DER certificate, upper-case hex (as OPC UA tools show it).
pub fn thumbprint(der: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, der);
    d.as_ref().iter().map(|b| format!("{b:02X}")).collect()
}

/// The platform's OPC UA certificate directory.
#[derive(Debug)]
pub struct Pki {
    dir: PathBuf,
}

/// What the application instance certificate was issued for (kept beside it, to renew it
/// when the names change).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppCertificate {
    pub der: Vec<u8>,
    pub thumbprint: String,
}

impl Pki {
    /// Opens `dir` (created with its sub-directories when missing) and the RSA CA in `ca/`
    /// (created at the first call).
    pub fn open_or_create(dir: &Path, now: SystemTime) -> Result<Pki, PkiError> {
        // Absolute: the stack joins our certificate paths onto its PKI directory, so a relative
        // one (a relative --data-dir) would be doubled.
        let dir = &std::path::absolute(dir).map_err(io("resolve", dir))?;
        for sub in ["ca", "own", "private", "trusted", "rejected"] {
            let p = dir.join(sub);
            std::fs::create_dir_all(&p).map_err(io("create", &p))?;
        }
        let pki = Pki {
            dir: dir.to_owned(),
        };
        if !pki.ca_key_path().exists() {
            let (key, key_pem) = rsa_key()?;
            let mut p = ca_params();
            p.serial_number = Some(serial()?);
            p.not_before = to_offset(now - Duration::from_secs(3600));
            p.not_after = to_offset(now + CA_VALIDITY);
            let cert = p
                .self_signed(&key)
                .map_err(|e| cert_err("make the OPC UA CA", e))?;
            write_private(&pki.ca_key_path(), key_pem.as_bytes())?;
            let crt = pki.dir.join("ca/ca.der");
            std::fs::write(&crt, cert.der()).map_err(io("write", &crt))?;
        }
        Ok(pki)
    }

    fn ca_key_path(&self) -> PathBuf {
        self.dir.join("ca/ca.key")
    }

    /// The OPC UA CA's certificate (DER): what a peer may trust instead of each certificate.
    pub fn ca_der(&self) -> Result<Vec<u8>, PkiError> {
        let p = self.dir.join("ca/ca.der");
        std::fs::read(&p).map_err(io("read", &p))
    }

    /// The application instance certificate for `application_uri` reachable at `names` (DNS
    /// names or IP addresses), issued by the OPC UA CA into `own/cert.der` with its key in
    /// `private/private.pem`; kept while it was issued for the same URI and names and is not
    /// close to its end, else issued again.
    pub fn application_certificate(
        &self,
        application_uri: &str,
        names: &[String],
        now: SystemTime,
    ) -> Result<AppCertificate, PkiError> {
        let cert_path = self.dir.join("own/cert.der");
        let key_path = self.dir.join("private/private.pem");
        let meta_path = self.dir.join("own/cert.issued-for");
        let wanted = std::iter::once(application_uri.to_owned())
            .chain(names.iter().cloned())
            .collect::<Vec<_>>()
            .join("\n");
        let renew_after = now + RENEW_BEFORE;
        let current = std::fs::read_to_string(&meta_path).ok();
        if let (Some(meta), Ok(der)) = (current, std::fs::read(&cert_path)) {
            let (issued_for, not_after) = meta.rsplit_once("\nnot_after=").unwrap_or(("", "0"));
            let not_after: u64 = not_after.trim().parse().unwrap_or(0);
            let renew_at = renew_after
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(u64::MAX, |d| d.as_secs());
            if issued_for == wanted && not_after > renew_at && key_path.exists() {
                return Ok(AppCertificate {
                    thumbprint: thumbprint(&der),
                    der,
                });
            }
        }
        let ca_pem =
            std::fs::read_to_string(self.ca_key_path()).map_err(io("read", &self.ca_key_path()))?;
        let ca_key = KeyPair::from_pem_and_sign_algo(&ca_pem, &PKCS_RSA_SHA256)
            .map_err(|e| cert_err("load the OPC UA CA key", e))?;
        let issuer = Issuer::new(ca_params(), ca_key);
        let (key, key_pem) = rsa_key()?;
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Ironplant");
        dn.push(DnType::CommonName, "Ironplant");
        p.distinguished_name = dn;
        let uri = application_uri
            .try_into()
            .map_err(|e| cert_err("the application URI", e))?;
        p.subject_alt_names = vec![SanType::URI(uri)];
        for n in names {
            p.subject_alt_names
                .push(match n.parse::<std::net::IpAddr>() {
                    Ok(ip) => SanType::IpAddress(ip),
                    Err(_) => SanType::DnsName(
                        n.as_str()
                            .try_into()
                            .map_err(|e| cert_err("a host name", e))?,
                    ),
                });
        }
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::ContentCommitment,
            KeyUsagePurpose::KeyEncipherment,
            KeyUsagePurpose::DataEncipherment,
        ];
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        p.serial_number = Some(serial()?);
        p.not_before = to_offset(now - Duration::from_secs(3600));
        let not_after = now + APP_VALIDITY;
        p.not_after = to_offset(not_after);
        p.use_authority_key_identifier_extension = true;
        let cert = p
            .signed_by(&key, &issuer)
            .map_err(|e| cert_err("issue the application certificate", e))?;
        write_private(&key_path, key_pem.as_bytes())?;
        std::fs::write(&cert_path, cert.der()).map_err(io("write", &cert_path))?;
        let secs = not_after
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        std::fs::write(&meta_path, format!("{wanted}\nnot_after={secs}"))
            .map_err(io("write", &meta_path))?;
        Ok(AppCertificate {
            thumbprint: thumbprint(cert.der()),
            der: cert.der().to_vec(),
        })
    }

    /// The peer certificates refused so far (the stack puts unknown ones in `rejected/`):
    /// thumbprint and file.
    pub fn rejected(&self) -> Result<Vec<(String, PathBuf)>, PkiError> {
        self.certificates_in("rejected")
    }

    /// The trusted peer certificates: thumbprint and file.
    pub fn trusted(&self) -> Result<Vec<(String, PathBuf)>, PkiError> {
        self.certificates_in("trusted")
    }

    fn certificates_in(&self, sub: &str) -> Result<Vec<(String, PathBuf)>, PkiError> {
        let dir = self.dir.join(sub);
        let mut out = Vec::new();
        for e in std::fs::read_dir(&dir).map_err(io("read", &dir))? {
            let path = e.map_err(io("read", &dir))?.path();
            if path.extension().is_some_and(|x| x == "der") {
                let der = std::fs::read(&path).map_err(io("read", &path))?;
                out.push((thumbprint(&der), path));
            }
        }
        out.sort();
        Ok(out)
    }

    /// Trusts the rejected certificate whose thumbprint starts with `prefix` (at least 16 hex
    /// digits, any case: a short prefix is cheap to forge): moved to `trusted/` (the stack checks `rejected/` first, so a copy
    /// would not do). Returns its full thumbprint.
    pub fn trust(&self, prefix: &str) -> Result<String, PkiError> {
        let prefix = prefix.trim().to_ascii_uppercase().replace(':', "");
        if prefix.len() < 16 || !prefix.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(PkiError::UnknownThumbprint(prefix));
        }
        let found: Vec<_> = self
            .rejected()?
            .into_iter()
            .filter(|(t, _)| t.starts_with(&prefix))
            .collect();
        let [(thumb, path)] = found.as_slice() else {
            return Err(PkiError::UnknownThumbprint(prefix));
        };
        let name = path.file_name().map(PathBuf::from).unwrap_or_default();
        let to = self.dir.join("trusted").join(name);
        std::fs::rename(path, &to).map_err(io("move", path))?;
        Ok(thumb.clone())
    }

    /// Trusts the certificate `der` directly (for a peer the platform itself runs, e.g. the
    /// demo's simulated machine): written to `trusted/` under the stack's file name, and any
    /// copy in `rejected/` removed. Returns its thumbprint.
    pub fn trust_der(&self, der: &[u8]) -> Result<String, PkiError> {
        let cert = opcua::crypto::X509::from_der(der)
            .map_err(|e| PkiError::Certificate(format!("not an X.509 certificate: {e}")))?;
        let name = opcua::crypto::CertificateStore::cert_file_name(&cert);
        let rejected = self.dir.join("rejected").join(&name);
        if rejected.exists() {
            std::fs::remove_file(&rejected).map_err(io("remove", &rejected))?;
        }
        let to = self.dir.join("trusted").join(&name);
        std::fs::write(&to, der).map_err(io("write", &to))?;
        Ok(thumbprint(der))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Writes a private key readable by the owner only.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), PkiError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io("write", path))?;
    f.write_all(bytes).map_err(io("write", path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use opcua::crypto::X509;

    /// The application certificate is what the OPC UA stack (the one we use, and the rules
    /// asyncua and node-opcua check) accepts: RSA 2048, the URI first in the SAN, the host
    /// names after it, valid now; kept across calls, issued again for other names.
    #[test]
    fn the_application_certificate_follows_the_opc_ua_rules() {
        let dir = tempfile::tempdir().expect("temp dir");
        let now = SystemTime::now();
        let pki = Pki::open_or_create(dir.path(), now).expect("pki");
        let uri = "urn:ironplant:test-site";
        let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let app = pki
            .application_certificate(uri, &names, now)
            .expect("issued");
        let x = X509::from_der(&app.der).expect("the stack reads it");
        assert_eq!(x.key_length().expect("RSA key"), 2048);
        x.is_application_uri_valid(uri)
            .expect("the URI is the first SAN entry");
        x.is_hostname_valid("localhost").expect("a DNS name");
        x.is_hostname_valid("127.0.0.1").expect("an IP address");
        assert!(x.is_hostname_valid("plc.example").is_err());
        let now_utc = opcua::types::DateTime::now().as_chrono();
        x.is_time_valid(&now_utc).expect("valid now");
        assert_eq!(app.thumbprint, thumbprint(&app.der));
        assert_eq!(app.thumbprint.len(), 40);
        let key = std::fs::read(dir.path().join("private/private.pem")).expect("key");
        opcua::crypto::PrivateKey::from_pem(&key).expect("the stack reads the key");
        // Same URI and names: the same certificate; other names: a new one.
        let again = pki.application_certificate(uri, &names, now).expect("kept");
        assert_eq!(again, app);
        let other = pki
            .application_certificate(uri, &["plc-gw".to_owned()], now)
            .expect("reissued");
        assert_ne!(other.thumbprint, app.thumbprint);
        // Close to its end: renewed.
        let later = now + APP_VALIDITY - RENEW_BEFORE / 2;
        let renewed = pki
            .application_certificate(uri, &["plc-gw".to_owned()], later)
            .expect("renewed");
        assert_ne!(renewed.thumbprint, other.thumbprint);
    }

    #[test]
    fn a_rejected_certificate_is_trusted_by_its_thumbprint() {
        let dir = tempfile::tempdir().expect("temp dir");
        let now = SystemTime::now();
        let pki = Pki::open_or_create(dir.path(), now).expect("pki");
        let peer = Pki::open_or_create(&dir.path().join("peer"), now).expect("peer pki");
        let cert = peer
            .application_certificate("urn:peer", &["localhost".to_owned()], now)
            .expect("peer certificate");
        std::fs::write(dir.path().join("rejected/peer.der"), &cert.der).expect("reject");
        assert_eq!(pki.rejected().expect("list").len(), 1);
        assert!(matches!(
            pki.trust("0000"),
            Err(PkiError::UnknownThumbprint(_))
        ));
        assert!(
            matches!(
                pki.trust(&cert.thumbprint[..12]),
                Err(PkiError::UnknownThumbprint(_))
            ),
            "a 12-digit prefix is too easy to forge"
        );
        let lower = cert.thumbprint[..16].to_ascii_lowercase();
        assert_eq!(pki.trust(&lower).expect("trusted"), cert.thumbprint);
        assert!(pki.rejected().expect("list").is_empty());
        assert_eq!(pki.trusted().expect("list")[0].0, cert.thumbprint);
    }
}
