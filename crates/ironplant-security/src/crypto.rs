//! Randomness, hashing and encodings shared by tokens, certificates and the audit log.

use ring::digest;
use ring::rand::{SecureRandom, SystemRandom};
use subtle::ConstantTimeEq;

use crate::error::{Error, Result};

pub fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut b = [0u8; N];
    SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| Error::Crypto("the system random generator failed"))?;
    Ok(b)
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    s
}

pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    s.as_bytes()
        .chunks(2)
        .map(|pair| {
            let hi = (pair[0] as char).to_digit(16)?;
            let lo = (pair[1] as char).to_digit(16)?;
            u8::try_from(hi * 16 + lo).ok()
        })
        .collect()
}

pub fn unhex32(s: &str) -> Option<[u8; 32]> {
    unhex(s)?.try_into().ok()
}

/// Constant-time equality of two digests (or any equal-length secrets).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// A bearer secret of the form `<prefix>_<id>_<secret>`: the id (8 random bytes, hex) finds
/// the stored record, the secret (32 random bytes, hex) is checked against its SHA-256. With
/// 256 bits of entropy a fast hash suffices (no dictionary to guess from); only the hash is
/// stored, so a stolen store yields no usable token.
pub struct BearerSecret {
    pub id: String,
    pub token: String,
    pub hash: [u8; 32],
}

pub fn new_bearer(prefix: &str) -> Result<BearerSecret> {
    let id = hex(&random_bytes::<8>()?);
    let secret = hex(&random_bytes::<32>()?);
    let hash = sha256(secret.as_bytes());
    Ok(BearerSecret {
        token: format!("{prefix}_{id}_{secret}"),
        id,
        hash,
    })
}

/// Splits a presented bearer token into (id, SHA-256 of its secret).
pub fn parse_bearer<'a>(prefix: &str, token: &'a str) -> Option<(&'a str, [u8; 32])> {
    let rest = token.strip_prefix(prefix)?.strip_prefix('_')?;
    let (id, secret) = rest.split_once('_')?;
    if id.len() != 16 || secret.len() != 64 {
        return None;
    }
    Some((id, sha256(secret.as_bytes())))
}

/// A random password of `len` characters from an alphabet without look-alikes (0/O, 1/l/I).
pub fn random_password(len: usize) -> Result<String> {
    const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut out = String::with_capacity(len);
    while out.len() < len {
        for b in random_bytes::<64>()? {
            // Rejection sampling keeps every character equally likely.
            let limit = 256 - 256 % ALPHABET.len();
            if usize::from(b) < limit && out.len() < len {
                out.push(ALPHABET[usize::from(b) % ALPHABET.len()] as char);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_rejects_garbage() {
        assert_eq!(hex(&[0x00, 0xab, 0xff]), "00abff");
        assert_eq!(unhex("00abff"), Some(vec![0x00, 0xab, 0xff]));
        assert_eq!(unhex("0g"), None);
        assert_eq!(unhex("abc"), None);
    }

    #[test]
    fn bearer_parses_only_its_own_shape() {
        let b = new_bearer("ipt").expect("random");
        let (id, hash) = parse_bearer("ipt", &b.token).expect("parses");
        assert_eq!(id, b.id);
        assert_eq!(hash, b.hash);
        assert!(parse_bearer("ipe", &b.token).is_none());
        assert!(parse_bearer("ipt", "ipt_short_secret").is_none());
        let mut wrong = b.token.clone();
        wrong.pop();
        wrong.push('x');
        assert!(parse_bearer("ipt", &wrong).is_some_and(|(_, h)| h != b.hash));
    }

    #[test]
    fn passwords_use_the_alphabet() {
        let p = random_password(24).expect("random");
        assert_eq!(p.len(), 24);
        assert!(p
            .chars()
            .all(|c| c.is_ascii_alphanumeric() && !"0O1lI".contains(c)));
        assert_ne!(p, random_password(24).expect("random"));
    }
}
