//! The OPC UA client against a third-party server: asyncua (PyPI), `tests/peers/opcua_server.py`
//! (Basic256Sha256 and the two RSA-OAEP/PSS policies, user/password, 100 variables). An
//! unknown server certificate is refused and put in `rejected/`; trusted by its thumbprint,
//! the session opens with SignAndEncrypt and browses the server's address space.

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime};

use ironplant_opcua::client::{connect, ClientError, ClientSettings, Identity, Policy};
use ironplant_opcua::pki::Pki;
use opcua::types::{NodeId, ObjectId};

struct Server {
    child: Child,
    url: String,
    thumbprint: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(dir: &std::path::Path) -> Option<Server> {
    start_server_with(dir, &[])
}

fn start_server_with(dir: &std::path::Path, extra: &[&std::ffi::OsStr]) -> Option<Server> {
    let py = ironplant_testkit::python("asyncua", "asyncua (PyPI)")?;
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/peers/opcua_server.py");
    let mut child = Command::new(py)
        .arg(script)
        .arg(dir)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the asyncua server");
    let stdout = child.stdout.take().expect("piped");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("the server's first line");
    let v: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
    Some(Server {
        child,
        url: v["url"].as_str().expect("url").to_owned(),
        thumbprint: v["thumbprint"].as_str().expect("thumbprint").to_owned(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_server_is_refused_then_trusted_browsed_with_sign_and_encrypt() {
    let dir = tempfile::tempdir().expect("temp dir");
    let Some(server) = start_server(&dir.path().join("server")) else {
        return;
    };
    let pki = Pki::open_or_create(&dir.path().join("pki"), SystemTime::now()).expect("pki");
    let uri = "urn:ironplant:test";
    pki.application_certificate(uri, &["localhost".to_owned()], SystemTime::now())
        .expect("our certificate");
    let settings = ClientSettings {
        url: server.url.clone(),
        policy: Policy::Basic256Sha256,
        encrypt: true,
        identity: Identity::User {
            name: "op".into(),
            password: "op-password".into(),
        },
        application_uri: uri.into(),
        request_timeout: Duration::from_secs(10),
        retries: 0,
    };
    // Unknown server: refused, its certificate kept for the administrator to judge.
    let err = connect(&pki, &settings).await.err().expect("refused");
    let rejected = pki.rejected().expect("rejected list");
    assert_eq!(
        rejected.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>(),
        [server.thumbprint.as_str()],
        "{err}"
    );
    pki.trust(&server.thumbprint[..16]).expect("trust it");

    // A wrong password is refused.
    let wrong = ClientSettings {
        identity: Identity::User {
            name: "op".into(),
            password: "nope".into(),
        },
        ..settings.clone()
    };
    assert!(matches!(
        connect(&pki, &wrong).await,
        Err(ClientError::Server { .. } | ClientError::NotConnected { .. })
    ));

    for policy in [
        Policy::Basic256Sha256,
        Policy::Aes128Sha256RsaOaep,
        Policy::Aes256Sha256RsaPss,
    ] {
        let s = ClientSettings {
            policy,
            ..settings.clone()
        };
        let conn = connect(&pki, &s)
            .await
            .unwrap_or_else(|e| panic!("{policy:?}: {e}"));
        let objects = conn
            .browse(&NodeId::from(ObjectId::ObjectsFolder))
            .await
            .expect("browse Objects");
        let line = objects
            .iter()
            .find(|e| e.display_name == "Line1")
            .unwrap_or_else(|| panic!("Line1 in {objects:?}"));
        let vars = conn.browse(&line.node_id).await.expect("browse Line1");
        let names: Vec<&str> = vars.iter().map(|v| v.display_name.as_str()).collect();
        assert_eq!(names.len(), 100, "{names:?}");
        assert!(names.contains(&"v0") && names.contains(&"v99"), "{names:?}");
        if policy == Policy::Basic256Sha256 {
            subscribe_to_all(&conn, &vars).await;
        }
        conn.close().await;
    }
}

/// 100 monitored items in one subscription (publishing every 500 ms, sampling 100 ms): every
/// node's value arrives, with a Good status and a source timestamp, and then changes keep
/// coming (the server changes every variable every 100 ms).
async fn subscribe_to_all(
    conn: &ironplant_opcua::client::Connection,
    vars: &[ironplant_opcua::client::BrowseEntry],
) {
    use ironplant_opcua::client::{Deadband, Monitor};
    let publishing = Duration::from_millis(500);
    let items: Vec<Monitor> = vars
        .iter()
        .map(|v| Monitor {
            node: v.node_id.clone(),
            sampling: Duration::from_millis(100),
            queue_size: 1,
            deadband: Deadband::Absolute(0.0),
        })
        .collect();
    let t0 = std::time::Instant::now();
    let (_id, mut rx) = conn.subscribe(publishing, &items).await.expect("subscribe");
    let created = t0.elapsed();
    let mut seen = std::collections::HashSet::new();
    let mut changes = 0usize;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while seen.len() < items.len() || changes < 2 * items.len() {
        let c = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{} of {} nodes seen, {changes} changes",
                    seen.len(),
                    items.len()
                )
            })
            .expect("the subscription's channel is open");
        assert!(c.value.status.is_none_or(|s| s.is_good()), "{c:?}");
        assert!(c.value.source_timestamp.is_some(), "{c:?}");
        assert!(c.value.value.is_some(), "{c:?}");
        seen.insert(c.node);
        changes += 1;
    }
    eprintln!(
        "100 monitored items: created in {} ms, every value within {} ms of creation, {changes} notifications in {} ms",
        created.as_millis(),
        t0.elapsed().as_millis() - created.as_millis(),
        t0.elapsed().as_millis()
    );
}

/// An X.509 user token: the session signs the server's nonce with the user's key; the server
/// (asyncua, told which certificate to accept) lets that user in and no other certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_certificate_is_an_identity() {
    let dir = tempfile::tempdir().expect("temp dir");
    let now = SystemTime::now();
    // Two user certificates (from a PKI of their own): alice's is the one the server accepts.
    let user = |name: &str| {
        let p = Pki::open_or_create(&dir.path().join(name), now).expect("user pki");
        p.application_certificate(
            &format!("urn:ironplant:user:{name}"),
            &[name.to_owned()],
            now,
        )
        .expect("user certificate");
        (
            p.dir().join("own/cert.der"),
            p.dir().join("private/private.pem"),
        )
    };
    let (alice_cert, alice_key) = user("alice");
    let (mallory_cert, mallory_key) = user("mallory");
    let Some(server) = start_server_with(
        &dir.path().join("server"),
        &[
            "--count".as_ref(),
            "3".as_ref(),
            "--user-cert".as_ref(),
            alice_cert.as_os_str(),
        ],
    ) else {
        return;
    };
    let pki = Pki::open_or_create(&dir.path().join("pki"), now).expect("pki");
    let uri = "urn:ironplant:test";
    pki.application_certificate(uri, &["localhost".to_owned()], now)
        .expect("our certificate");
    let settings = |certificate: &std::path::Path, key: &std::path::Path| ClientSettings {
        url: server.url.clone(),
        policy: Policy::Basic256Sha256,
        encrypt: true,
        identity: Identity::Certificate {
            certificate: certificate.to_owned(),
            key: key.to_owned(),
        },
        application_uri: uri.into(),
        request_timeout: Duration::from_secs(10),
        retries: 0,
    };
    assert!(connect(&pki, &settings(&alice_cert, &alice_key))
        .await
        .is_err());
    pki.trust(&server.thumbprint).expect("trust");
    let conn = connect(&pki, &settings(&alice_cert, &alice_key))
        .await
        .expect("alice's certificate is accepted");
    let objects = conn
        .browse(&NodeId::from(ObjectId::ObjectsFolder))
        .await
        .expect("browse");
    assert!(objects.iter().any(|e| e.display_name == "Line1"));
    conn.close().await;
    assert!(
        connect(&pki, &settings(&mallory_cert, &mallory_key))
            .await
            .is_err(),
        "another certificate is refused"
    );
}
