//! Just enough DER to read the subject Common Name of an X.509 certificate, which is how a
//! device is identified once rustls has verified its chain. Bounds-checked at every step:
//! malformed input gives `None`, never a panic.

/// One TLV: (tag, content, rest). Only single-byte tags (all that X.509 uses here) and
/// definite lengths up to 4 bytes.
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    if tag & 0x1f == 0x1f {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const OID_COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];

/// The first Common Name (2.5.4.3) in the certificate's subject, if it is a UTF8String,
/// PrintableString or IA5String.
pub fn subject_common_name(cert_der: &[u8]) -> Option<String> {
    let (tag, cert, _) = tlv(cert_der)?;
    if tag != SEQUENCE {
        return None;
    }
    let (tag, mut tbs, _) = tlv(cert)?;
    if tag != SEQUENCE {
        return None;
    }
    // [0] version (optional), serialNumber, signature, issuer, validity, subject.
    let mut fields = Vec::with_capacity(6);
    while fields.len() < 6 && !tbs.is_empty() {
        let (tag, content, rest) = tlv(tbs)?;
        if !(fields.is_empty() && tag == 0xa0) {
            fields.push((tag, content));
        }
        tbs = rest;
    }
    let &(tag, mut subject) = fields.get(4)?;
    if tag != SEQUENCE {
        return None;
    }
    while !subject.is_empty() {
        let (tag, mut rdn, rest) = tlv(subject)?;
        subject = rest;
        if tag != SET {
            return None;
        }
        while !rdn.is_empty() {
            let (tag, atv, rest) = tlv(rdn)?;
            rdn = rest;
            if tag != SEQUENCE {
                return None;
            }
            let (tag, oid, value) = tlv(atv)?;
            if tag == OID && oid == OID_COMMON_NAME {
                let (vtag, v, _) = tlv(value)?;
                return match vtag {
                    0x0c | 0x13 | 0x16 => std::str::from_utf8(v).ok().map(str::to_owned),
                    _ => None,
                };
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert_with_cn(cn: &str) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Ironplant");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let key = rcgen::KeyPair::generate().expect("key");
        params.self_signed(&key).expect("cert").der().to_vec()
    }

    #[test]
    fn reads_the_common_name() {
        let der = cert_with_cn("pump-7");
        assert_eq!(subject_common_name(&der).as_deref(), Some("pump-7"));
    }

    #[test]
    fn malformed_input_gives_none_never_a_panic() {
        let der = cert_with_cn("pump-7");
        for cut in 0..der.len() {
            // Any prefix either still parses (the subject is early) or yields None.
            let r = subject_common_name(&der[..cut]);
            assert!(r.is_none() || r.as_deref() == Some("pump-7"));
        }
        let mut flipped = der.clone();
        for i in 0..flipped.len() {
            flipped[i] ^= 0xff;
            let _ = subject_common_name(&flipped);
            flipped[i] ^= 0xff;
        }
        assert_eq!(subject_common_name(&[]), None);
        assert_eq!(
            subject_common_name(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]),
            None
        );
    }
}
