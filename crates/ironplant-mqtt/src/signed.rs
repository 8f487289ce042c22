//! Signed payloads (issue 13): an Ed25519 signature that travels with an MQTT payload, so the
//! receiver knows who produced the data whoever relayed it (a gateway, a bridge to the central
//! tier) and that nobody changed it on the way. Sans-IO; `ring` does the cryptography.
//!
//! The envelope is a JSON object that wraps the payload's exact bytes (a string, so no
//! canonical JSON is needed):
//!
//! ```json
//! {"signer":"plug-7","sig":"<128 hex digits>","payload":"{\"ts\":1796601600000,\"apower\":12.3}"}
//! ```
//!
//! (`payload_hex` instead of `payload` for binary payloads such as Sparkplug's.)
//!
//! `sig` is Ed25519 over `ironplant-signed-v1 NUL <topic> NUL <payload bytes>`: the topic is
//! signed too, so a signed reading of one device cannot be replayed onto another's topic (the
//! topic as the receiver sees it: for HTTP ingest `http:<mapping>`; for a bridge, the remote
//! topic). A signature does not make a message fresh: a copy sent again verifies; the receiver's
//! replay check (timestamps) refuses it.
//!
//! Keys: an enrolled device gets its key pair with its certificate bundle (`<name>.sign.key`,
//! PKCS#8, and `<name>.sign.pub`, hex); the platform keeps the public key with the device's
//! record and forgets it when the device is revoked.

use ring::rand::SystemRandom;
use ring::signature::{self, Ed25519KeyPair, KeyPair};

/// What a signature covers first (domain separation: a signature made for anything else does
/// not verify as a payload's).
pub const DOMAIN: &[u8] = b"ironplant-signed-v1";

/// Why a signed payload was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignedError {
    #[error("the signed envelope is malformed: {0}")]
    Malformed(String),
    #[error("signer {0:?} is not an enrolled device with a signing key (or it was revoked)")]
    UnknownSigner(String),
    #[error("the signature of {0:?} does not verify: the payload or its topic was changed, or it was signed with another key")]
    BadSignature(String),
}

impl SignedError {
    /// A short label (metrics, events).
    pub fn code(&self) -> &'static str {
        match self {
            SignedError::Malformed(_) => "malformed_envelope",
            SignedError::UnknownSigner(_) => "unknown_signer",
            SignedError::BadSignature(_) => "bad_signature",
        }
    }
}

/// A payload opened from its envelope (not verified yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub signer: String,
    pub sig: Vec<u8>,
    pub payload: Vec<u8>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    signer: String,
    sig: String,
    payload: Option<String>,
    payload_hex: Option<String>,
}

#[derive(serde::Serialize)]
struct WireOut<'a> {
    signer: &'a str,
    sig: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload_hex: Option<String>,
}

/// Opens `bytes` if it is an envelope: `Ok(None)` for any other payload (a plain JSON reading),
/// `Err` for an object with `signer` and `sig` that is not a well-formed envelope.
pub fn open(bytes: &[u8]) -> Result<Option<Envelope>, SignedError> {
    // Cheap test first: most payloads are plain.
    let looks = bytes.windows(5).any(|w| w == b"\"sig\"");
    if !looks {
        return Ok(None);
    }
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(bytes) else {
        return Ok(None);
    };
    // An envelope names its signer and its signature; a plain reading may well have a field
    // called `sig` (a radio's signal strength) and is not one.
    if value.get("sig").is_none() || value.get("signer").is_none() {
        return Ok(None);
    }
    let w: Wire =
        serde_json::from_value(value).map_err(|e| SignedError::Malformed(e.to_string()))?;
    let sig = unhex(&w.sig).filter(|s| s.len() == 64).ok_or_else(|| {
        SignedError::Malformed("sig must be 128 hex digits (an Ed25519 signature)".into())
    })?;
    if w.signer.is_empty() || w.signer.len() > 128 {
        return Err(SignedError::Malformed(
            "signer must be a device name (1 to 128 characters)".into(),
        ));
    }
    let payload = match (w.payload, w.payload_hex) {
        (Some(text), None) => text.into_bytes(),
        (None, Some(h)) => unhex(&h)
            .ok_or_else(|| SignedError::Malformed("payload_hex must be hex digits".into()))?,
        _ => {
            return Err(SignedError::Malformed(
                "exactly one of payload (text) and payload_hex (binary) is needed".into(),
            ))
        }
    };
    Ok(Some(Envelope {
        signer: w.signer,
        sig,
        payload,
    }))
}

fn message(topic: &str, payload: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(DOMAIN.len() + topic.len() + payload.len() + 2);
    m.extend_from_slice(DOMAIN);
    m.push(0);
    m.extend_from_slice(topic.as_bytes());
    m.push(0);
    m.extend_from_slice(payload);
    m
}

impl Envelope {
    /// Checks the signature with the signer's public key (32 bytes), for a payload received on
    /// `topic`.
    pub fn verify(&self, topic: &str, public_key: &[u8]) -> Result<(), SignedError> {
        signature::UnparsedPublicKey::new(&signature::ED25519, public_key)
            .verify(&message(topic, &self.payload), &self.sig)
            .map_err(|_| SignedError::BadSignature(self.signer.clone()))
    }
}

/// A signing identity: a name (the device's) and its Ed25519 key.
pub struct Signer {
    name: String,
    key: Ed25519KeyPair,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("name", &self.name)
            .field("public_key", &self.public_key_hex())
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// A new key pair: the signer and its PKCS#8 document (to store, 0600).
    pub fn generate(name: &str) -> Result<(Signer, Vec<u8>), SignedError> {
        let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .map_err(|_| SignedError::Malformed("cannot generate an Ed25519 key".into()))?;
        let signer = Signer::from_pkcs8(name, doc.as_ref())?;
        Ok((signer, doc.as_ref().to_vec()))
    }

    /// From a stored PKCS#8 document (`<name>.sign.key`).
    pub fn from_pkcs8(name: &str, pkcs8: &[u8]) -> Result<Signer, SignedError> {
        let key = Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8)
            .map_err(|e| SignedError::Malformed(format!("not an Ed25519 PKCS#8 key: {e}")))?;
        Ok(Signer {
            name: name.to_owned(),
            key,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The public key, 64 hex digits (what the platform stores with the device).
    pub fn public_key_hex(&self) -> String {
        hex(self.key.public_key().as_ref())
    }

    /// The envelope of `payload` to be published on `topic` (`payload` for UTF-8 text such
    /// as JSON, `payload_hex` for binary such as Sparkplug's protobuf).
    pub fn seal(&self, topic: &str, payload: &[u8]) -> Vec<u8> {
        let sig = hex(self.key.sign(&message(topic, payload)).as_ref());
        let text = std::str::from_utf8(payload).ok();
        let out = WireOut {
            signer: &self.name,
            sig: &sig,
            payload: text,
            payload_hex: text.is_none().then(|| hex(payload)),
        };
        // Serialising strings cannot fail.
        serde_json::to_vec(&out).unwrap_or_default()
    }
}

/// The signer a key file names, as bundles write them: `<name>.sign.key` → `name`.
pub fn signer_of(key: &std::path::Path) -> Option<&str> {
    key.file_name()?
        .to_str()?
        .strip_suffix(".sign.key")
        .filter(|n| !n.is_empty())
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

/// Parses hex (either case); `None` if it is not.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    s.as_bytes()
        .chunks(2)
        .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_payload_verifies_on_its_topic_only() {
        let (signer, pkcs8) = Signer::generate("plug-7").expect("key");
        let public = unhex(&signer.public_key_hex()).expect("hex");
        let payload = br#"{"ts":1796601600000,"apower":12.3}"#;
        let sealed = signer.seal("plugs/7", payload);
        let env = open(&sealed).expect("well formed").expect("an envelope");
        assert_eq!(env.signer, "plug-7");
        assert_eq!(env.payload, payload);
        env.verify("plugs/7", &public).expect("verifies");
        // Another topic, another payload, another key: refused.
        assert_eq!(
            env.verify("plugs/8", &public),
            Err(SignedError::BadSignature("plug-7".into()))
        );
        let mut changed = env.clone();
        changed.payload = br#"{"ts":1796601600000,"apower":99.9}"#.to_vec();
        assert!(changed.verify("plugs/7", &public).is_err());
        let (other, _) = Signer::generate("plug-8").expect("key");
        let other_public = unhex(&other.public_key_hex()).expect("hex");
        assert!(env.verify("plugs/7", &other_public).is_err());
        // Binary payloads travel as hex.
        let binary = signer.seal("spBv1.0/g/NDATA/n", &[0x08, 0xff, 0x00]);
        let env = open(&binary).expect("well formed").expect("an envelope");
        assert_eq!(env.payload, [0x08, 0xff, 0x00]);
        env.verify("spBv1.0/g/NDATA/n", &public).expect("verifies");
        // The stored key signs the same way.
        let again = Signer::from_pkcs8("plug-7", &pkcs8).expect("stored key");
        assert_eq!(again.public_key_hex(), signer.public_key_hex());
    }

    #[test]
    fn plain_payloads_are_not_envelopes_and_bad_envelopes_say_why() {
        assert_eq!(open(br#"{"apower":12.3}"#), Ok(None));
        assert_eq!(open(b"not json \"sig\""), Ok(None));
        assert_eq!(open(b"\xff\xfe"), Ok(None));
        assert_eq!(
            open(br#"{"sig":-71,"temp":21.5}"#),
            Ok(None),
            "a radio's signal strength"
        );
        let short = open(br#"{"signer":"a","sig":"abcd","payload":"{}"}"#);
        assert!(
            matches!(short, Err(SignedError::Malformed(ref m)) if m.contains("128 hex")),
            "{short:?}"
        );
        let extra = open(br#"{"signer":"a","sig":"00","payload":"{}","x":1}"#);
        assert!(matches!(extra, Err(SignedError::Malformed(_))), "{extra:?}");
        let nosigner = open(
            format!(
                r#"{{"signer":"","sig":"{}","payload":"{{}}"}}"#,
                "0".repeat(128)
            )
            .as_bytes(),
        );
        assert!(
            matches!(nosigner, Err(SignedError::Malformed(_))),
            "{nosigner:?}"
        );
    }

    #[test]
    fn hex_round_trips_and_refuses_garbage() {
        assert_eq!(
            unhex(&hex(&[0, 1, 0xab, 0xff])),
            Some(vec![0, 1, 0xab, 0xff])
        );
        assert_eq!(unhex("0g"), None);
        assert_eq!(unhex("abc"), None);
    }
}
