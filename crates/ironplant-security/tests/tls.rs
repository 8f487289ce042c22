//! Real rustls handshakes (tokio-rustls over an in-memory duplex) against the verifier the
//! listeners use: enrolled, revoked, expired, foreign-CA and unenrolled certificates.

mod common;

use std::sync::Arc;
use std::time::Duration;

use ironplant_security::{client_config, peer_subject, Role, ServerIdentity};
use rustls::{ClientConfig, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use common::{clock_now, mode, open};

/// Runs one handshake; returns the server's view: the peer subject, or the error.
async fn handshake(server: ServerConfig, client: ClientConfig) -> Result<Option<String>, String> {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let acceptor = TlsAcceptor::from(Arc::new(server));
    let connector = TlsConnector::from(Arc::new(client));
    let srv = async move {
        let mut s = acceptor.accept(a).await.map_err(|e| e.to_string())?;
        let subject = peer_subject(s.get_ref().1.peer_certificates());
        s.write_all(b"ok").await.map_err(|e| e.to_string())?;
        s.flush().await.map_err(|e| e.to_string())?;
        Ok(subject)
    };
    let cli = async move {
        let name = ironplant_security::tls::server_name("localhost").map_err(|e| e.to_string())?;
        let mut c = connector
            .connect(name, b)
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = [0u8; 2];
        // In TLS 1.3 the client learns of a refused certificate only when it reads.
        c.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
        Ok::<_, String>(buf)
    };
    let (s, c) = tokio::join!(srv, cli);
    match (&s, &c) {
        (Ok(_), Ok(buf)) => assert_eq!(buf, b"ok"),
        (Ok(_), Err(e)) => panic!("server accepted but the client failed: {e}"),
        (Err(_), Ok(_)) => panic!("server refused but the client read data"),
        (Err(_), Err(_)) => {}
    }
    s
}

fn names() -> Vec<String> {
    vec!["localhost".into(), "127.0.0.1".into()]
}

#[tokio::test]
async fn enrolled_device_is_identified_and_revocation_applies_without_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = clock_now();
    let sec = open(dir.path(), &clock);
    let bundle = sec
        .ca
        .enroll("pump-7", Role::Device, Some("admin"))
        .expect("enroll");
    // One server config for the whole test: revocation must not need a new one.
    let server = sec
        .mqtt_tls_config(&names(), None, true)
        .expect("server config");
    let client = client_config(
        &bundle.ca_pem,
        Some((&bundle.certificate_pem, &bundle.private_key_pem)),
    )
    .expect("client config");

    let subject = handshake(server.clone(), client.clone()).await;
    assert_eq!(subject, Ok(Some("pump-7".to_owned())));

    // Revoke through a second CA handle on the same directory, as the CLI in another
    // process would.
    let other = open(dir.path(), &clock);
    other.ca.revoke("pump-7", Some("admin")).expect("revoke");
    let refused = handshake(server.clone(), client.clone()).await;
    let err = refused.expect_err("revoked certificate must be refused");
    assert!(err.contains("Revoked"), "{err}");
    assert!(sec
        .ca
        .devices()
        .is_revoked(&rustls::pki_types::CertificateDer::from(
            rustls::pki_types::pem::PemObject::from_pem_slice(bundle.certificate_pem.as_bytes())
                .map(|c: rustls::pki_types::CertificateDer<'static>| c.to_vec())
                .expect("pem")
        )));

    // Re-enrolled under the same name: the new certificate works, the old one stays refused.
    let again = sec
        .ca
        .enroll("pump-7", Role::Device, None)
        .expect("re-enroll");
    let client2 = client_config(
        &again.ca_pem,
        Some((&again.certificate_pem, &again.private_key_pem)),
    )
    .expect("client config");
    assert_eq!(
        handshake(server.clone(), client2).await,
        Ok(Some("pump-7".to_owned()))
    );
    assert!(handshake(server, client).await.is_err());
}

#[tokio::test]
async fn expired_certificate_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = clock_now();
    let sec = open(dir.path(), &clock);
    // Issued three years ago with the default two-year validity: expired a year ago.
    let now = std::time::SystemTime::now();
    clock.set(now - Duration::from_secs(3 * 365 * 24 * 3600));
    let old = sec
        .ca
        .enroll("old-plc", Role::Device, None)
        .expect("enroll");
    clock.set(now);
    let server = sec
        .mqtt_tls_config(&names(), None, true)
        .expect("server config");
    let client = client_config(
        &old.ca_pem,
        Some((&old.certificate_pem, &old.private_key_pem)),
    )
    .expect("client config");
    let err = handshake(server, client).await.expect_err("expired");
    assert!(err.contains("expired"), "{err}");
}

#[tokio::test]
async fn foreign_ca_and_unenrolled_certificates_are_refused() {
    let clock = clock_now();
    let ours = tempfile::tempdir().expect("tempdir");
    let sec = open(ours.path(), &clock);
    let server = sec
        .mqtt_tls_config(&names(), None, true)
        .expect("server config");

    // A certificate from another Ironplant's CA, with a name we also know.
    sec.ca.enroll("pump-7", Role::Device, None).expect("enroll");
    let theirs = tempfile::tempdir().expect("tempdir");
    let foreign = open(theirs.path(), &clock)
        .ca
        .enroll("pump-7", Role::Device, None)
        .expect("enroll");
    let client = client_config(
        sec.ca.ca_pem(),
        Some((&foreign.certificate_pem, &foreign.private_key_pem)),
    )
    .expect("client config");
    let err = handshake(server.clone(), client)
        .await
        .expect_err("foreign CA");
    assert!(err.contains("UnknownIssuer"), "{err}");

    // Signed by our CA key but absent from our registry (a copied CA directory, a
    // registry restored from an old backup): refused too, the registry is an allow-list.
    let copy = tempfile::tempdir().expect("tempdir");
    let copy_ca = copy.path().join("security/ca");
    std::fs::create_dir_all(&copy_ca).expect("mkdir");
    for f in ["ca.key", "ca.crt", "ca.json"] {
        std::fs::copy(sec.ca.dir().join(f), copy_ca.join(f)).expect("copy");
    }
    let rogue = open(copy.path(), &clock)
        .ca
        .enroll("rogue", Role::Device, None)
        .expect("enroll");
    let client = client_config(
        sec.ca.ca_pem(),
        Some((&rogue.certificate_pem, &rogue.private_key_pem)),
    )
    .expect("client config");
    let err = handshake(server, client).await.expect_err("unenrolled");
    assert!(err.contains("ApplicationVerificationFailure"), "{err}");
}

#[tokio::test]
async fn client_certificate_optional_or_mandatory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = clock_now();
    let sec = open(dir.path(), &clock);
    let anonymous = client_config(sec.ca.ca_pem(), None).expect("client config");
    let optional = sec.mqtt_tls_config(&names(), None, false).expect("server");
    assert_eq!(handshake(optional, anonymous.clone()).await, Ok(None));
    let mandatory = sec.mqtt_tls_config(&names(), None, true).expect("server");
    let err = handshake(mandatory, anonymous)
        .await
        .expect_err("no certificate");
    assert!(
        err.contains("NoCertificatesPresented") || err.contains("certificate"),
        "{err}"
    );
}

#[tokio::test]
async fn https_listener_with_our_ca_and_with_bring_your_own_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = clock_now();
    let sec = open(dir.path(), &clock);
    let client = client_config(sec.ca.ca_pem(), None).expect("client");
    let server = sec.https_tls_config(&names(), None).expect("server");
    assert_eq!(handshake(server, client).await, Ok(None));

    // Bring your own: a certificate from another CA, loaded from PEM files.
    let byo_dir = tempfile::tempdir().expect("tempdir");
    let corp = open(byo_dir.path(), &clock);
    corp.ca.server_identity(&names()).expect("issue");
    let byo = ServerIdentity::from_pem_files(
        &corp.ca.dir().join("server.crt"),
        &corp.ca.dir().join("server.key"),
    )
    .expect("load PEM");
    let server = sec.https_tls_config(&names(), Some(&byo)).expect("server");
    let trusting_corp = client_config(corp.ca.ca_pem(), None).expect("client");
    assert_eq!(handshake(server.clone(), trusting_corp).await, Ok(None));
    // A client that trusts only our CA refuses the corporate certificate.
    let trusting_ours = client_config(sec.ca.ca_pem(), None).expect("client");
    let (a, b) = tokio::io::duplex(64 * 1024);
    let srv = TlsAcceptor::from(Arc::new(server)).accept(a);
    let cli = TlsConnector::from(Arc::new(trusting_ours)).connect(
        ironplant_security::tls::server_name("localhost").expect("name"),
        b,
    );
    let (_, c) = tokio::join!(srv, cli);
    let err = c.expect_err("untrusted server").to_string();
    assert!(err.contains("UnknownIssuer"), "{err}");

    // Broken files give errors naming the file, without quoting key material.
    let bad = byo_dir.path().join("bad.key");
    std::fs::write(&bad, "not a key").expect("write");
    let err = ServerIdentity::from_pem_files(&corp.ca.dir().join("server.crt"), &bad)
        .expect_err("bad key")
        .to_string();
    assert!(err.contains("bad.key"), "{err}");
}

#[test]
fn ca_files_have_private_keys_0600_and_certificates_0644() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = clock_now();
    let sec = open(dir.path(), &clock);
    sec.ca.server_identity(&names()).expect("server identity");
    let ca = sec.ca.dir();
    assert_eq!(mode(&ca.join("ca.key")), 0o600);
    assert_eq!(mode(&ca.join("server.key")), 0o600);
    assert_eq!(mode(&ca.join("ca.crt")), 0o644);
    assert_eq!(mode(&ca.join("server.crt")), 0o644);
    assert_eq!(mode(ca), 0o700);
    let out = tempfile::tempdir().expect("tempdir");
    let bundle = sec.ca.enroll("hmi-1", Role::Viewer, None).expect("enroll");
    assert_eq!(mode(&ca.join("devices.json")), 0o600);
    let files = bundle.write_to(out.path()).expect("write bundle");
    assert_eq!(mode(&files[0]), 0o644);
    assert_eq!(mode(&files[1]), 0o600);
    assert!(!format!("{bundle:?}").contains("PRIVATE KEY"));
    // The signing key pair: private 0600, public 0644, the public one kept by the platform
    // until the device is revoked.
    assert!(files[3].ends_with("hmi-1.sign.key"), "{files:?}");
    assert_eq!(mode(&files[3]), 0o600);
    assert_eq!(mode(&files[4]), 0o644);
    let stored = sec
        .ca
        .devices()
        .signing_key("hmi-1")
        .expect("a signing key");
    let signer = ironplant_mqtt::signed::Signer::from_pkcs8(
        "hmi-1",
        &std::fs::read(&files[3]).expect("key"),
    )
    .expect("PKCS#8");
    assert_eq!(
        ironplant_mqtt::signed::hex(&stored),
        signer.public_key_hex()
    );
    sec.ca.revoke("hmi-1", None).expect("revoke");
    assert_eq!(sec.ca.devices().signing_key("hmi-1"), None);

    // The fingerprint is the SHA-256 of the CA certificate, stable across reopening.
    let fp = sec.ca.fingerprint();
    assert_eq!(fp.len(), 32 * 3 - 1);
    assert!(fp
        .split(':')
        .all(|b| b.len() == 2 && u8::from_str_radix(b, 16).is_ok()));
    assert_eq!(open(dir.path(), &clock).ca.fingerprint(), fp);
}

#[test]
fn server_certificate_is_reused_then_reissued_for_new_names_or_near_expiry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = clock_now();
    let sec = open(dir.path(), &clock);
    let first = sec.ca.server_identity(&names()).expect("issue");
    let same = sec.ca.server_identity(&names()).expect("reuse");
    assert_eq!(first.cert_chain[0], same.cert_chain[0]);
    let other = sec
        .ca
        .server_identity(&["plant.example".to_owned()])
        .expect("reissue");
    assert_ne!(other.cert_chain[0], first.cert_chain[0]);
    clock.advance(Duration::from_secs(390 * 24 * 3600));
    let renewed = sec
        .ca
        .server_identity(&["plant.example".to_owned()])
        .expect("renew");
    assert_ne!(renewed.cert_chain[0], other.cert_chain[0]);
}

#[test]
fn enrolment_tokens_are_single_use_expiring_and_stored_hashed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = clock_now();
    let sec = open(dir.path(), &clock);
    let t = sec
        .ca
        .create_enrolment_token(
            "pump-9",
            Role::Device,
            Duration::from_secs(600),
            Some("admin"),
        )
        .expect("token");
    let stored = std::fs::read_to_string(sec.ca.dir().join("devices.json")).expect("read");
    let secret = t.token.rsplit('_').next().expect("secret");
    assert!(!stored.contains(secret), "the secret must not be stored");
    assert_eq!(mode(&sec.ca.dir().join("devices.json")), 0o600);

    // A wrong secret with the right id is refused and does not spend the token.
    let mut wrong = t.token.clone();
    let last = wrong.pop().expect("char");
    wrong.push(if last == 'a' { 'b' } else { 'a' });
    assert!(sec.ca.redeem_enrolment_token(&wrong).is_err());

    let bundle = sec.ca.redeem_enrolment_token(&t.token).expect("redeem");
    assert_eq!(bundle.name, "pump-9");
    let err = sec
        .ca
        .redeem_enrolment_token(&t.token)
        .expect_err("second use");
    assert!(matches!(
        err,
        ironplant_security::Error::EnrolmentTokenRejected
    ));

    let late = sec
        .ca
        .create_enrolment_token("pump-10", Role::Device, Duration::from_secs(600), None)
        .expect("token");
    clock.advance(Duration::from_secs(601));
    assert!(sec.ca.redeem_enrolment_token(&late.token).is_err());
    let names: Vec<String> = sec
        .ca
        .list()
        .expect("list")
        .into_iter()
        .map(|d| d.name)
        .collect();
    assert_eq!(names, vec!["pump-9".to_owned()]);
}

#[test]
fn device_names_that_would_change_topics_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = clock_now();
    let sec = open(dir.path(), &clock);
    for bad in ["", "a/b", "+", "#", "$SYS", ".hidden", "x y"] {
        assert!(sec.ca.enroll(bad, Role::Device, None).is_err(), "{bad:?}");
    }
    sec.ca
        .enroll("ok-name_1.2", Role::Device, None)
        .expect("valid name");
    let err = sec
        .ca
        .enroll("ok-name_1.2", Role::Device, None)
        .expect_err("twice");
    assert!(err.to_string().contains("revoke it first"), "{err}");
}
