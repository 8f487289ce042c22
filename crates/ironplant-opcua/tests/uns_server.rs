//! The OPC UA server of the UNS (`server`) against clients: our own
//! (`client`) and a third-party one, asyncua (PyPI), `tests/peers/opcua_client.py`. The asset
//! tree is browsed, values are read with their quality and timestamps, changes arrive through a
//! subscription, writes reach the backend typed and as the user, and unknown applications,
//! anonymous users and wrong passwords are refused; every offered policy signs and encrypts.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use ironplant_core::{BoxFuture, Quality, QualityReason, ScalarType, Timestamp, Value, ValueType};
use ironplant_opcua::client::{connect, ClientSettings, Connection, Identity, Policy};
use ironplant_opcua::pki::Pki;
use ironplant_opcua::server::{
    Backend, ServerSettings, ServerTag, ServerUser, UnsServer, WriteRefusal,
};
use opcua::crypto::{CertificateStore, SecurityPolicy, X509};
use opcua::types::{
    AttributeId, DataTypeId, DataValue, MessageSecurityMode, NodeClass, NodeId, ObjectId,
    ReadValueId, StatusCode, TimestampsToReturn, UserTokenType, Variant, WriteValue,
};

const SPEED: &str = "acme/plant1/line1/filler/speed";
const RUNNING: &str = "acme/plant1/line1/filler/running";
const COUNT: &str = "acme/plant1/line1/labeller/count";
const CLIENT_URI: &str = "urn:ironplant:test:client";

/// The platform, faked: users op (may write), viewer (may not) and guest (may not, and may
/// not read the labeller); writes recorded and accepted, except values above 100 (out of the
/// envelope); writes the server refused itself recorded apart.
#[derive(Default)]
struct FakeBackend {
    writes: Mutex<Vec<(String, String, Value)>>,
    refused: Mutex<Vec<(String, String, Value)>>,
}

impl FakeBackend {
    fn writes(&self) -> Vec<(String, String, Value)> {
        self.writes.lock().expect("not poisoned").clone()
    }
}

impl Backend for FakeBackend {
    fn authenticate(
        &self,
        user: &str,
        password: &str,
    ) -> BoxFuture<'static, Result<ServerUser, String>> {
        let r = match (user, password) {
            ("op", "op-password") => Ok(ServerUser {
                name: "op".into(),
                can_write: true,
            }),
            ("guest", "guest-password") => Ok(ServerUser {
                name: "guest".into(),
                can_write: false,
            }),
            ("viewer", "viewer-password") => Ok(ServerUser {
                name: "viewer".into(),
                can_write: false,
            }),
            _ => Err("wrong user name or password".into()),
        };
        Box::pin(async move { r })
    }

    fn write_refused(&self, user: &ServerUser, tag: &str, value: Value) {
        self.refused
            .lock()
            .expect("not poisoned")
            .push((user.name.clone(), tag.to_owned(), value));
    }

    fn can_read(&self, user: &ServerUser, tag: &str) -> bool {
        !(user.name == "guest" && tag == COUNT)
    }

    fn write(
        &self,
        user: &ServerUser,
        tag: &str,
        value: Value,
    ) -> BoxFuture<'static, Result<(), WriteRefusal>> {
        let r = if value.as_f64().is_some_and(|v| v > 100.0) {
            Err(WriteRefusal::OutOfRange(format!("{value} is above 100")))
        } else {
            self.writes.lock().expect("not poisoned").push((
                user.name.clone(),
                tag.to_owned(),
                value,
            ));
            Ok(())
        };
        Box::pin(async move { r })
    }
}

fn tags() -> Vec<ServerTag> {
    vec![
        ServerTag {
            path: SPEED.into(),
            value_type: ValueType::Float,
            unit: Some("bpm".into()),
            range: Some((0.0, 600.0)),
            writable: true,
            description: Some("Filler speed".into()),
        },
        ServerTag {
            path: RUNNING.into(),
            value_type: ValueType::Bool,
            unit: None,
            range: None,
            writable: false,
            description: None,
        },
        ServerTag {
            path: COUNT.into(),
            value_type: ValueType::Int,
            unit: None,
            range: None,
            writable: true,
            description: None,
        },
    ]
}

fn settings() -> ServerSettings {
    ServerSettings {
        host: "127.0.0.1".into(),
        port: 0,
        hostnames: vec!["localhost".into(), "127.0.0.1".into()],
        application_uri: "urn:ironplant:test:uns".into(),
        namespace_uri: "urn:ironplant:uns".into(),
        root: "Ironplant".into(),
        allow_none: false,
        sign_only: false,
        writes: true,
        max_sessions: 10,
    }
}

/// A running server and a client PKI (trusted both ways unless told otherwise).
struct Fixture {
    dir: tempfile::TempDir,
    server: UnsServer,
    server_pki: Pki,
    client_pki: Pki,
    backend: Arc<FakeBackend>,
}

async fn start(settings: ServerSettings, trusted: bool) -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let now = SystemTime::now();
    let server_pki = Pki::open_or_create(&dir.path().join("server-pki"), now).expect("server pki");
    let client_pki = Pki::open_or_create(&dir.path().join("client-pki"), now).expect("client pki");
    client_pki
        .application_certificate(CLIENT_URI, &["localhost".to_owned()], now)
        .expect("client certificate");
    let backend = Arc::new(FakeBackend::default());
    let server = UnsServer::start(&server_pki, settings, tags(), backend.clone())
        .await
        .expect("the server starts");
    if trusted {
        trust(&server_pki, &client_pki.dir().join("own/cert.der"));
        trust(&client_pki, &server_pki.dir().join("own/cert.der"));
    }
    Fixture {
        dir,
        server,
        server_pki,
        client_pki,
        backend,
    }
}

/// Puts a peer's certificate in `pki`'s trust list, under the name the stack looks for.
fn trust(pki: &Pki, der_path: &Path) {
    let der = std::fs::read(der_path).expect("peer certificate");
    let x = X509::from_der(&der).expect("a certificate");
    let to = pki
        .dir()
        .join("trusted")
        .join(CertificateStore::cert_file_name(&x));
    std::fs::write(to, der).expect("trusted");
}

fn client(
    f: &Fixture,
    policy: Policy,
    encrypt: bool,
    user: Option<(&str, &str)>,
) -> ClientSettings {
    ClientSettings {
        url: f.server.url(),
        policy,
        encrypt,
        identity: match user {
            Some((name, password)) => Identity::User {
                name: name.into(),
                password: password.into(),
            },
            None => Identity::Anonymous,
        },
        application_uri: CLIENT_URI.into(),
        request_timeout: Duration::from_secs(10),
        retries: 0,
    }
}

async fn op(f: &Fixture) -> Connection {
    connect(
        &f.client_pki,
        &client(f, Policy::Basic256Sha256, true, Some(("op", "op-password"))),
    )
    .await
    .expect("op connects")
}

async fn read(conn: &Connection, nodes: &[&NodeId], attribute: AttributeId) -> Vec<DataValue> {
    let ids: Vec<ReadValueId> = nodes
        .iter()
        .map(|n| ReadValueId {
            node_id: (*n).clone(),
            attribute_id: attribute as u32,
            ..Default::default()
        })
        .collect();
    conn.session
        .read(&ids, TimestampsToReturn::Both, 0.0)
        .await
        .expect("read")
}

async fn write(conn: &Connection, node: &NodeId, value: Variant) -> StatusCode {
    let results = conn
        .session
        .write(&[WriteValue {
            node_id: node.clone(),
            attribute_id: AttributeId::Value as u32,
            value: DataValue::value_only(value),
            ..Default::default()
        }])
        .await
        .expect("write service");
    results[0]
}

/// The child of `node` named `name` (display name).
async fn child(conn: &Connection, node: &NodeId, name: &str) -> NodeId {
    let children = conn.browse(node).await.expect("browse");
    children
        .iter()
        .find(|c| c.display_name == name)
        .unwrap_or_else(|| panic!("{name} under {node}: {children:?}"))
        .node_id
        .clone()
}

/// The endpoints the server offers (over a None channel, as any client first asks).
async fn endpoints(f: &Fixture) -> Vec<opcua::types::EndpointDescription> {
    let client = opcua::client::ClientBuilder::new()
        .application_name("probe")
        .application_uri(CLIENT_URI)
        .pki_dir(f.client_pki.dir())
        .create_sample_keypair(false)
        .client()
        .expect("probe client");
    client
        .get_server_endpoints_from_url(f.server.url().as_str())
        .await
        .expect("GetEndpoints")
}

/// Browse, read (with quality and timestamps), properties, a subscription and tags added at
/// run time, with our client over Basic256Sha256 SignAndEncrypt as op.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_asset_tree_is_browsed_read_and_subscribed() {
    let f = start(
        ServerSettings {
            writes: false,
            ..settings()
        },
        true,
    )
    .await;
    assert!(
        f.server.url().starts_with("opc.tcp://localhost:"),
        "{}",
        f.server.url()
    );
    assert_ne!(f.server.port(), 0);
    // Only the secure endpoints, user names only.
    let offered = endpoints(&f).await;
    let mut pairs: Vec<(String, MessageSecurityMode)> = offered
        .iter()
        .map(|e| (e.security_policy_uri.to_string(), e.security_mode))
        .collect();
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        pairs,
        [
            SecurityPolicy::Aes128Sha256RsaOaep,
            SecurityPolicy::Aes256Sha256RsaPss,
            SecurityPolicy::Basic256Sha256
        ]
        .map(|p| (p.to_uri().to_owned(), MessageSecurityMode::SignAndEncrypt))
    );
    for e in &offered {
        let tokens = e.user_identity_tokens.clone().unwrap_or_default();
        assert!(
            !tokens.is_empty()
                && tokens
                    .iter()
                    .all(|t| t.token_type == UserTokenType::UserName),
            "{tokens:?}"
        );
    }

    let conn = op(&f).await;
    // Objects → Ironplant → acme → plant1 → line1 → filler → speed.
    let root = child(&conn, &ObjectId::ObjectsFolder.into(), "Ironplant").await;
    assert_eq!(root, f.server.root_node());
    let mut node = root;
    for level in ["acme", "plant1", "line1", "filler"] {
        node = child(&conn, &node, level).await;
    }
    assert_eq!(node, f.server.node_id("acme/plant1/line1/filler"));
    let filler = conn.browse(&node).await.expect("browse filler");
    let mut names: Vec<(&str, NodeClass)> = filler
        .iter()
        .map(|e| (e.browse_name.as_str(), e.node_class))
        .collect();
    names.sort_by_key(|(n, _)| *n);
    let ns = f.server.namespace_index();
    let (running_name, speed_name) = (format!("{ns}:running"), format!("{ns}:speed"));
    assert_eq!(
        names,
        [
            (running_name.as_str(), NodeClass::Variable),
            (speed_name.as_str(), NodeClass::Variable)
        ]
    );
    let (speed, running, count) = (
        f.server.node_id(SPEED),
        f.server.node_id(RUNNING),
        f.server.node_id(COUNT),
    );
    assert_eq!(
        conn.data_types(&[speed.clone(), running.clone(), count.clone()])
            .await
            .expect("data types"),
        [DataTypeId::Double, DataTypeId::Boolean, DataTypeId::Int64].map(|t| Some(t.into()))
    );
    // Writes are off: read-only for everybody.
    let access = read(&conn, &[&speed], AttributeId::UserAccessLevel).await;
    assert_eq!(access[0].value, Some(Variant::Byte(1)), "CurrentRead only");
    // EURange and EngineeringUnits, with namespace-0 browse names.
    let props = conn.browse(&speed).await.expect("browse speed");
    let find = |name: &str| {
        props
            .iter()
            .find(|p| p.browse_name == name)
            .unwrap_or_else(|| panic!("{name} in {props:?}"))
            .node_id
            .clone()
    };
    let (eurange, units) = (find("EURange"), find("EngineeringUnits"));
    let v = read(&conn, &[&eurange, &units], AttributeId::Value).await;
    let range = match &v[0].value {
        Some(Variant::ExtensionObject(o)) => o.inner_as::<opcua::types::Range>().cloned(),
        other => panic!("EURange {other:?}"),
    };
    assert_eq!(range.map(|r| (r.low, r.high)), Some((0.0, 600.0)));
    let unit = match &v[1].value {
        Some(Variant::ExtensionObject(o)) => o
            .inner_as::<opcua::types::EUInformation>()
            .map(|u| u.display_name.text.to_string()),
        other => panic!("EngineeringUnits {other:?}"),
    };
    assert_eq!(unit.as_deref(), Some("bpm"));

    // Before any value: waiting for initial data.
    let before = read(&conn, &[&speed], AttributeId::Value).await;
    assert_eq!(before[0].status(), StatusCode::BadWaitingForInitialData);
    assert!(
        matches!(before[0].value, None | Some(Variant::Empty)),
        "{before:?}"
    );

    let t0 = Timestamp(Timestamp::now().0 - 5_000_000);
    let published = f.server.publish([
        (SPEED, &Value::Float(120.5), Quality::GOOD, t0),
        (
            RUNNING,
            &Value::Bool(true),
            Quality::uncertain(QualityReason::Stale),
            t0,
        ),
        (
            COUNT,
            &Value::Int(7),
            Quality::bad(QualityReason::CommFailure),
            t0,
        ),
        ("acme/not/served", &Value::Int(1), Quality::GOOD, t0),
    ]);
    assert_eq!(published, 3);
    let after = read(&conn, &[&speed, &running, &count], AttributeId::Value).await;
    assert_eq!(after[0].value, Some(Variant::Double(120.5)));
    assert_eq!(after[0].status(), StatusCode::Good);
    assert_eq!(after[1].value, Some(Variant::Boolean(true)));
    assert_eq!(after[1].status(), StatusCode::UncertainLastUsableValue);
    assert_eq!(after[2].value, Some(Variant::Int64(7)));
    assert_eq!(after[2].status(), StatusCode::BadCommunicationError);
    // The qualities read back as they were published.
    assert_eq!(
        ironplant_opcua::map::quality(after[1].status()),
        Quality::uncertain(QualityReason::Stale)
    );
    assert_eq!(
        ironplant_opcua::map::quality(after[2].status()),
        Quality::bad(QualityReason::CommFailure)
    );
    for dv in &after {
        let source = dv.source_timestamp.as_ref().expect("source timestamp");
        assert_eq!(ironplant_opcua::map::timestamp(source), t0);
        let server = dv.server_timestamp.as_ref().expect("server timestamp");
        assert!(ironplant_opcua::map::timestamp(server) > t0);
    }

    // No value (a device that never answered): the status still says why.
    f.server.publish([(
        COUNT,
        &Value::Null,
        Quality::bad(QualityReason::DeviceFailure),
        t0,
    )]);
    let lost = read(&conn, &[&count], AttributeId::Value).await;
    assert_eq!(lost[0].status(), StatusCode::BadDeviceFailure);
    assert!(
        matches!(lost[0].value, None | Some(Variant::Empty)),
        "{lost:?}"
    );

    // A subscription: the current value first, then a published change.
    use ironplant_opcua::client::{Deadband, Monitor};
    let (_id, mut changes) = conn
        .subscribe(
            Duration::from_millis(100),
            &[Monitor {
                node: speed.clone(),
                sampling: Duration::from_millis(100),
                queue_size: 10,
                deadband: Deadband::None,
            }],
        )
        .await
        .expect("subscribe");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    let mut t1 = Timestamp::now();
    while !seen.contains(&Variant::Double(130.0)) {
        let left = deadline.saturating_duration_since(Instant::now());
        let change = tokio::time::timeout(left, changes.recv())
            .await
            .unwrap_or_else(|_| panic!("no change to 130 within 10 s: {seen:?}"))
            .expect("subscription open");
        assert_eq!(change.node, speed);
        let v = change.value.value.clone().expect("a value");
        if v == Variant::Double(120.5) && !seen.contains(&v) {
            t1 = Timestamp::now();
            f.server
                .publish([(SPEED, &Value::Float(130.0), Quality::GOOD, t1)]);
        }
        if v == Variant::Double(130.0) {
            assert_eq!(change.value.status(), StatusCode::Good);
            let at = change.value.source_timestamp.as_ref().expect("source time");
            assert_eq!(ironplant_opcua::map::timestamp(at), t1);
        }
        seen.push(v);
    }
    assert_eq!(seen.first(), Some(&Variant::Double(120.5)), "{seen:?}");

    // Tags born at run time: folders as needed, idempotent.
    let born = ServerTag {
        path: "acme/plant1/line1/labeller/rejects".into(),
        value_type: ValueType::Array(ScalarType::Float),
        unit: None,
        range: None,
        writable: false,
        description: None,
    };
    let packer = ServerTag {
        path: "acme/plant2/packer/state".into(),
        value_type: ValueType::String,
        ..born.clone()
    };
    assert_eq!(f.server.add_tags(&[born.clone(), packer.clone()]), 2);
    assert_eq!(f.server.add_tags(&[born, packer]), 0);
    let labeller = child(
        &conn,
        &child(&conn, &f.server.node_id("acme/plant1"), "line1").await,
        "labeller",
    )
    .await;
    let mut names: Vec<String> = conn
        .browse(&labeller)
        .await
        .expect("browse labeller")
        .into_iter()
        .map(|e| e.display_name)
        .collect();
    names.sort();
    assert_eq!(names, ["count", "rejects"]);
    let state = child(
        &conn,
        &child(&conn, &f.server.node_id("acme/plant2"), "packer").await,
        "state",
    )
    .await;
    assert_eq!(state, f.server.node_id("acme/plant2/packer/state"));
    f.server.publish([(
        "acme/plant1/line1/labeller/rejects",
        &Value::array(ironplant_core::Array::from_ints(vec![1, 2]).expect("array")),
        Quality::GOOD,
        t1,
    )]);
    let rejects = read(
        &conn,
        &[&f.server.node_id("acme/plant1/line1/labeller/rejects")],
        AttributeId::Value,
    )
    .await;
    assert_eq!(rejects[0].value, Some(Variant::from(vec![1.0f64, 2.0])));
    conn.close().await;
    f.server.stop().await;
}

/// Writes reach the backend typed and as the session's user; the node keeps its value until
/// the read-back is published; refusals map to their status codes; a viewer cannot write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_reach_the_backend_as_the_user() {
    let f = start(settings(), true).await;
    let (speed, running, count) = (
        f.server.node_id(SPEED),
        f.server.node_id(RUNNING),
        f.server.node_id(COUNT),
    );
    let conn = op(&f).await;
    let access = read(&conn, &[&speed, &running], AttributeId::UserAccessLevel).await;
    assert_eq!(
        access[0].value,
        Some(Variant::Byte(3)),
        "op may read and write speed"
    );
    assert_eq!(
        access[1].value,
        Some(Variant::Byte(1)),
        "running is not writable"
    );

    assert_eq!(
        write(&conn, &speed, Variant::Double(42.0)).await,
        StatusCode::Good
    );
    assert_eq!(
        write(&conn, &speed, Variant::Int32(50)).await,
        StatusCode::Good
    );
    assert_eq!(
        write(&conn, &count, Variant::UInt16(9)).await,
        StatusCode::Good
    );
    assert_eq!(
        f.backend.writes(),
        [
            ("op".to_owned(), SPEED.to_owned(), Value::Float(42.0)),
            ("op".to_owned(), SPEED.to_owned(), Value::Float(50.0)),
            ("op".to_owned(), COUNT.to_owned(), Value::Int(9)),
        ]
    );
    // The node still waits for the read-back.
    let now = read(&conn, &[&speed], AttributeId::Value).await;
    assert_eq!(now[0].status(), StatusCode::BadWaitingForInitialData);

    assert_eq!(
        write(&conn, &speed, Variant::Boolean(true)).await,
        StatusCode::BadTypeMismatch
    );
    assert_eq!(
        write(&conn, &count, Variant::Double(1.5)).await,
        StatusCode::BadTypeMismatch
    );
    assert_eq!(
        write(&conn, &speed, Variant::Double(150.0)).await,
        StatusCode::BadOutOfRange
    );
    assert_eq!(
        write(&conn, &running, Variant::Boolean(false)).await,
        StatusCode::BadNotWritable
    );
    assert_eq!(
        write(&conn, &f.server.node_id("acme/plant1"), Variant::Int32(1)).await,
        StatusCode::BadNotWritable
    );
    assert_eq!(
        write(&conn, &f.server.node_id("acme/nothing"), Variant::Int32(1)).await,
        StatusCode::BadNodeIdUnknown
    );
    assert_eq!(
        f.backend.writes().len(),
        3,
        "refused writes never reach the backend"
    );
    conn.close().await;

    let viewer = connect(
        &f.client_pki,
        &client(
            &f,
            Policy::Basic256Sha256,
            true,
            Some(("viewer", "viewer-password")),
        ),
    )
    .await
    .expect("viewer connects");
    let access = read(&viewer, &[&speed], AttributeId::UserAccessLevel).await;
    assert_eq!(
        access[0].value,
        Some(Variant::Byte(1)),
        "a viewer only reads"
    );
    let all = read(&viewer, &[&speed], AttributeId::AccessLevel).await;
    assert_eq!(
        all[0].value,
        Some(Variant::Byte(3)),
        "the node itself is writable"
    );
    assert_eq!(
        write(&viewer, &speed, Variant::Double(10.0)).await,
        StatusCode::BadUserAccessDenied
    );
    assert_eq!(f.backend.writes().len(), 3);
    assert_eq!(
        *f.backend.refused.lock().expect("not poisoned"),
        [("viewer".to_owned(), SPEED.to_owned(), Value::Float(10.0))],
        "the viewer's refused write is told to the platform (its audit)"
    );
    viewer.close().await;

    // A user outside a tag's read rules reads no value of it (the others as usual).
    f.server.publish([
        (COUNT, &Value::Int(7), Quality::GOOD, Timestamp::now()),
        (SPEED, &Value::Float(12.5), Quality::GOOD, Timestamp::now()),
    ]);
    let guest = connect(
        &f.client_pki,
        &client(
            &f,
            Policy::Basic256Sha256,
            true,
            Some(("guest", "guest-password")),
        ),
    )
    .await
    .expect("guest connects");
    let count = f.server.node_id(COUNT);
    let values = read(&guest, &[&count, &speed], AttributeId::Value).await;
    assert!(
        matches!(
            values[0].status,
            Some(s) if s == StatusCode::BadUserAccessDenied || s == StatusCode::BadNotReadable
        ) && values[0].value != Some(Variant::Int64(7)),
        "no value of a tag outside the read rules: {:?}",
        values[0]
    );
    assert_eq!(
        values[1].value,
        Some(Variant::Double(12.5)),
        "{:?}",
        values[1]
    );
    guest.close().await;
    let conn = op(&f).await;
    let values = read(&conn, &[&count], AttributeId::Value).await;
    assert_eq!(values[0].value, Some(Variant::Int64(7)), "op reads it");
    conn.close().await;
    f.server.stop().await;
}

/// An unknown client application is refused and its certificate kept in rejected/ until the
/// administrator trusts it; then anonymous users and wrong passwords are still refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_applications_and_users_are_refused() {
    let f = start(settings(), false).await;
    let op_settings = client(
        &f,
        Policy::Basic256Sha256,
        true,
        Some(("op", "op-password")),
    );
    let client_thumb = f
        .client_pki
        .application_certificate(CLIENT_URI, &["localhost".to_owned()], SystemTime::now())
        .expect("client certificate")
        .thumbprint;
    let err = connect(&f.client_pki, &op_settings)
        .await
        .err()
        .expect("an unknown client certificate is refused");
    let rejected: Vec<String> = f
        .server_pki
        .rejected()
        .expect("rejected list")
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    assert_eq!(rejected, std::slice::from_ref(&client_thumb), "{err}");
    assert_eq!(
        f.server_pki.trust(&client_thumb[..16]).expect("trusted"),
        client_thumb
    );
    // The client, in turn, refuses the server until it trusts it.
    assert!(connect(&f.client_pki, &op_settings).await.is_err());
    let server_thumb = f.client_pki.rejected().expect("rejected list")[0].0.clone();
    f.client_pki.trust(&server_thumb).expect("trusted");

    let anonymous = connect(
        &f.client_pki,
        &client(&f, Policy::Basic256Sha256, true, None),
    )
    .await;
    assert!(anonymous.is_err(), "anonymous refused");
    let wrong = connect(
        &f.client_pki,
        &client(&f, Policy::Basic256Sha256, true, Some(("op", "nope"))),
    )
    .await;
    let Err(wrong) = wrong else {
        panic!("a wrong password is refused");
    };
    assert!(
        format!("{wrong}").contains("BadUserAccessDenied"),
        "{wrong}"
    );
    let conn = connect(&f.client_pki, &op_settings)
        .await
        .expect("op connects");
    conn.close().await;
    f.server.stop().await;
}

/// Every offered policy and mode works: SignAndEncrypt with the three policies, Sign, and
/// (labs) None, where the password is still encrypted with Basic256Sha256.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_offered_policy_and_mode_connects() {
    let f = start(
        ServerSettings {
            allow_none: true,
            sign_only: true,
            ..settings()
        },
        true,
    )
    .await;
    let offered = endpoints(&f).await;
    assert_eq!(offered.len(), 7, "3 policies × 2 modes + None");
    let none = offered
        .iter()
        .find(|e| e.security_mode == MessageSecurityMode::None)
        .expect("a None endpoint");
    let tokens = none.user_identity_tokens.clone().unwrap_or_default();
    assert_eq!(tokens.len(), 1);
    assert_eq!(tokens[0].token_type, UserTokenType::UserName);
    assert_eq!(
        tokens[0].security_policy_uri.as_ref(),
        SecurityPolicy::Basic256Sha256.to_uri(),
        "passwords are encrypted even on None"
    );
    f.server
        .publish([(SPEED, &Value::Float(1.5), Quality::GOOD, Timestamp::now())]);
    for (policy, encrypt) in [
        (Policy::Aes128Sha256RsaOaep, true),
        (Policy::Aes256Sha256RsaPss, true),
        (Policy::Basic256Sha256, false),
        (Policy::None, false),
    ] {
        let conn = connect(
            &f.client_pki,
            &client(&f, policy, encrypt, Some(("op", "op-password"))),
        )
        .await
        .unwrap_or_else(|e| panic!("{policy:?} encrypt={encrypt}: {e}"));
        let v = read(&conn, &[&f.server.node_id(SPEED)], AttributeId::Value).await;
        assert_eq!(v[0].value, Some(Variant::Double(1.5)), "{policy:?}");
        conn.close().await;
    }
    f.server.stop().await;
}

/// A second server on a port in use: a clear error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_in_use_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let dir = tempfile::tempdir().expect("temp dir");
    let pki = Pki::open_or_create(dir.path(), SystemTime::now()).expect("pki");
    let err = UnsServer::start(
        &pki,
        ServerSettings { port, ..settings() },
        tags(),
        Arc::new(FakeBackend::default()),
    )
    .await
    .expect_err("the port is taken");
    let text = err.to_string();
    assert!(
        text.contains(&format!("127.0.0.1:{port}")) && text.contains("another program"),
        "{text}"
    );
}

// ---- asyncua, a third-party client -------------------------------------------------------

/// The asyncua client script (`tests/peers/opcua_client.py`) against our server.
struct Peer {
    python: PathBuf,
    url: String,
}

/// What one run of the peer printed: its exit code and JSON lines.
struct PeerRun {
    code: Option<i32>,
    lines: Vec<serde_json::Value>,
    report: String,
}

impl PeerRun {
    fn ok(&self) -> &serde_json::Value {
        assert_eq!(self.code, Some(0), "{}", self.report);
        self.lines
            .last()
            .unwrap_or_else(|| panic!("no output\n{}", self.report))
    }

    fn refused(&self) -> &serde_json::Value {
        assert_eq!(self.code, Some(2), "{}", self.report);
        let last = self
            .lines
            .last()
            .unwrap_or_else(|| panic!("no output\n{}", self.report));
        assert!(last.get("error").is_some(), "{}", self.report);
        last
    }
}

impl Peer {
    /// Runs the script with `pki` and `args` (`--user`… and the command), at most 60 s.
    async fn run(&self, pki: &Path, args: &[&str]) -> PeerRun {
        self.spawn(pki, args).await.expect("the peer runner")
    }

    /// The same in the background.
    fn spawn(&self, pki: &Path, args: &[&str]) -> tokio::task::JoinHandle<PeerRun> {
        let mut argv = vec![
            peer_script().display().to_string(),
            self.url.clone(),
            "--pki".into(),
            pki.display().to_string(),
        ];
        argv.extend(args.iter().map(|a| (*a).to_owned()));
        let python = self.python.clone();
        tokio::task::spawn_blocking(move || run_blocking(&python, &argv, Duration::from_secs(60)))
    }
}

fn run_blocking(python: &Path, argv: &[String], deadline: Duration) -> PeerRun {
    use std::io::Read as _;
    use std::process::{Command, Stdio};
    let mut child = Command::new(python)
        .args(argv)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the asyncua client");
    let drain = |mut r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("piped")));
    let err = drain(Box::new(child.stderr.take().expect("piped")));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("poll the client") {
            break Some(status);
        }
        if start.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = out.join().expect("stdout");
    let stderr = err.join().expect("stderr");
    let report = format!("{argv:?}\n--- stdout\n{stdout}--- stderr\n{stderr}");
    let status = status.unwrap_or_else(|| panic!("no answer within {deadline:?}: {report}"));
    let lines = stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}\n{report}")))
        .collect();
    PeerRun {
        code: status.code(),
        lines,
        report,
    }
}

/// asyncua browses the asset tree, reads values with their quality and timestamps, receives
/// published changes, writes as op (not as viewer), signs and encrypts with each policy, and
/// is refused without credentials, with a wrong password and with an untrusted certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asyncua_browses_reads_subscribes_and_writes() {
    let Some(python) = ironplant_testkit::python("asyncua", "asyncua (PyPI)") else {
        return;
    };
    let f = start(settings(), true).await;
    let peer = Peer {
        python,
        url: f.server.url(),
    };
    let pki = f.dir.path().join("asyncua");
    let cert = peer.run(&pki, &["cert"]).await;
    let cert = cert.ok();
    trust(
        &f.server_pki,
        Path::new(cert["certificate"].as_str().expect("a path")),
    );
    let ns = f.server.namespace_index();
    let id = |path: &str| format!("ns={ns};s={path}");
    let viewer = ["--user", "viewer", "--password", "viewer-password"];

    // The asset tree, with the data types and the ns=0 properties.
    let root = format!("ns={ns};i=1");
    let browse = peer
        .run(
            &pki,
            &[&viewer[..], &["browse", root.as_str(), "--depth", "6"]].concat(),
        )
        .await;
    let nodes = browse.ok()["nodes"].as_array().expect("nodes").clone();
    let node = |id: &str| {
        nodes
            .iter()
            .find(|n| n["node_id"] == id)
            .unwrap_or_else(|| panic!("{id} in {}", browse.report))
    };
    let mut parent = root.clone();
    for path in [
        "acme",
        "acme/plant1",
        "acme/plant1/line1",
        "acme/plant1/line1/filler",
        SPEED,
    ] {
        let n = node(&id(path));
        assert_eq!(n["parent"], parent.as_str(), "{n}");
        assert_eq!(n["browse_ns"], ns, "{n}");
        parent = id(path);
    }
    assert_eq!(node(&id(SPEED))["data_type"], "i=11", "Double");
    assert_eq!(node(&id(SPEED))["node_class"], "Variable");
    assert_eq!(node(&id(RUNNING))["data_type"], "i=1", "Boolean");
    assert_eq!(node(&id(COUNT))["data_type"], "i=8", "Int64");
    assert_eq!(node(&id("acme/plant1"))["node_class"], "Object");
    let eurange = node(&format!("{}#EURange", id(SPEED)));
    assert_eq!(
        (&eurange["browse_name"], &eurange["browse_ns"]),
        (&"EURange".into(), &0.into())
    );

    // Values, quality and timestamps.
    let t0 = Timestamp(Timestamp::now().0 - 2_000_000);
    f.server.publish([
        (SPEED, &Value::Float(120.5), Quality::GOOD, t0),
        (
            RUNNING,
            &Value::Bool(true),
            Quality::uncertain(QualityReason::Stale),
            t0,
        ),
    ]);
    let (speed_id, running_id, count_id) = (id(SPEED), id(RUNNING), id(COUNT));
    let read = peer
        .run(
            &pki,
            &[&viewer[..], &["read", &speed_id, &running_id, &count_id]].concat(),
        )
        .await;
    let values = read.ok()["values"].as_array().expect("values").clone();
    assert_eq!(values[0]["value"], 120.5, "{}", read.report);
    assert_eq!(values[0]["status"], "Good");
    let source = values[0]["source_timestamp"]
        .as_str()
        .expect("a source time");
    assert!(
        source.starts_with(&t0.to_rfc3339()[..19]),
        "{source} vs {t0}"
    );
    assert!(values[0]["server_timestamp"].is_string());
    assert_eq!(values[1]["value"], true);
    assert_eq!(values[1]["status"], "UncertainLastUsableValue");
    assert_eq!(values[2]["status"], "BadWaitingForInitialData");

    // A subscription receives what is published meanwhile (every 300 ms, one in two
    // uncertain), until the client has listened for 4 s.
    let listen = peer.spawn(
        &pki,
        &[
            &viewer[..],
            &[
                "subscribe",
                &speed_id,
                "--interval",
                "100",
                "--seconds",
                "4",
            ],
        ]
        .concat(),
    );
    let mut i = 0u32;
    while !listen.is_finished() {
        let q = if i.is_multiple_of(2) {
            Quality::GOOD
        } else {
            Quality::uncertain(QualityReason::OutOfRange)
        };
        f.server.publish([(
            SPEED,
            &Value::Float(200.0 + f64::from(i)),
            q,
            Timestamp::now(),
        )]);
        i += 1;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let sub = listen.await.expect("the subscriber");
    let done = sub.ok();
    assert_eq!(done["done"], true, "{}", sub.report);
    let changes = &sub.lines[..sub.lines.len() - 1];
    assert_eq!(done["count"].as_u64(), Some(changes.len() as u64));
    let published = |status: &str| {
        changes.iter().any(|c| {
            c["node_id"] == speed_id.as_str()
                && c["status"] == status
                && c["value"].as_f64().is_some_and(|v| v >= 200.0)
        })
    };
    assert!(published("Good"), "{}", sub.report);
    assert!(
        published("UncertainEngineeringUnitsExceeded"),
        "{}",
        sub.report
    );

    // Writes: op through the backend, typed; a viewer refused.
    let op = ["--user", "op", "--password", "op-password"];
    let w = peer
        .run(
            &pki,
            &[&op[..], &["write", &speed_id, "42", "--type", "Int32"]].concat(),
        )
        .await;
    assert_eq!(w.ok()["status"], "Good", "{}", w.report);
    assert_eq!(
        f.backend.writes(),
        [("op".to_owned(), SPEED.to_owned(), Value::Float(42.0))]
    );
    let w = peer
        .run(
            &pki,
            &[&op[..], &["write", &speed_id, "420", "--type", "Double"]].concat(),
        )
        .await;
    assert_eq!(w.ok()["status"], "BadOutOfRange", "{}", w.report);
    let w = peer
        .run(
            &pki,
            &[&viewer[..], &["write", &speed_id, "42", "--type", "Double"]].concat(),
        )
        .await;
    assert_eq!(w.ok()["status"], "BadUserAccessDenied", "{}", w.report);
    assert_eq!(f.backend.writes().len(), 1);

    // The other two policies.
    for policy in ["Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss"] {
        let r = peer
            .run(
                &pki,
                &[&viewer[..], &["--policy", policy, "read", &speed_id]].concat(),
            )
            .await;
        let v = &r.ok()["values"][0];
        assert!(
            v["value"].as_f64().is_some_and(|v| v >= 200.0),
            "{policy}: {}",
            r.report
        );
    }

    // Refused: without credentials, with a wrong password, with an unknown certificate.
    let anonymous = peer.run(&pki, &["read", &speed_id]).await;
    // The stack refuses an anonymous token at its policy check (no anonymous policy is
    // offered) or, with the anonymous policy id, at our authenticator.
    let status = anonymous.refused()["status"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        ["BadIdentityTokenInvalid", "BadIdentityTokenRejected"].contains(&status.as_str()),
        "{}",
        anonymous.report
    );
    let wrong = peer
        .run(
            &pki,
            &["--user", "op", "--password", "nope", "read", &speed_id],
        )
        .await;
    assert_eq!(
        wrong.refused()["status"],
        "BadUserAccessDenied",
        "{}",
        wrong.report
    );
    let stranger = f.dir.path().join("stranger");
    let thumb = peer.run(&stranger, &["cert"]).await.ok()["thumbprint"]
        .as_str()
        .expect("thumbprint")
        .to_owned();
    peer.run(&stranger, &[&viewer[..], &["read", &speed_id]].concat())
        .await
        .refused();
    let rejected: Vec<String> = f
        .server_pki
        .rejected()
        .expect("rejected")
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    assert_eq!(rejected, [thumb]);
    f.server.stop().await;
}

fn peer_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/peers/opcua_client.py")
}

// ---- node-opcua, a second third-party client ----------------------------------------------

/// The node-opcua client script (`tests/peers/opcua_node_client.js`, same command line and
/// output as the asyncua one) against our server.
struct NodePeer {
    node: PathBuf,
    modules: PathBuf,
    url: String,
}

impl NodePeer {
    /// Runs the script with `pki` and `args`, at most 60 s.
    async fn run(&self, pki: &Path, args: &[&str]) -> PeerRun {
        self.spawn(pki, args).await.expect("the peer runner")
    }

    /// The same in the background. `env` sets `NODE_PATH` (node-opcua's modules) for node, so
    /// that the runner of the asyncua client serves as it is.
    fn spawn(&self, pki: &Path, args: &[&str]) -> tokio::task::JoinHandle<PeerRun> {
        let mut argv = vec![
            format!("NODE_PATH={}", self.modules.display()),
            self.node.display().to_string(),
            node_script().display().to_string(),
            self.url.clone(),
            "--pki".into(),
            pki.display().to_string(),
        ];
        argv.extend(args.iter().map(|a| (*a).to_owned()));
        tokio::task::spawn_blocking(move || {
            run_blocking(Path::new("env"), &argv, Duration::from_secs(60))
        })
    }
}

/// node-opcua browses the asset tree, reads values with their quality and timestamps,
/// receives published changes, writes typed as op (not as viewer, not out of the envelope),
/// and is refused with a wrong password and with an untrusted certificate. (node-opcua does
/// not even try an anonymous session when no endpoint offers one: asyncua covers that.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_opcua_browses_reads_subscribes_and_writes() {
    let Some((node, modules)) =
        ironplant_testkit::node_module("opcua-node", "node-opcua", "node-opcua (npm)")
    else {
        return;
    };
    let f = start(settings(), true).await;
    let peer = NodePeer {
        node,
        modules,
        url: f.server.url(),
    };
    let pki = f.dir.path().join("node-opcua");
    let cert = peer.run(&pki, &["cert"]).await;
    let cert = cert.ok();
    trust(
        &f.server_pki,
        Path::new(cert["certificate"].as_str().expect("a path")),
    );
    let ns = f.server.namespace_index();
    let id = |path: &str| format!("ns={ns};s={path}");
    let viewer = ["--user", "viewer", "--password", "viewer-password"];

    // The asset tree, with the data types and the ns=0 properties.
    let root = format!("ns={ns};i=1");
    let browse = peer
        .run(
            &pki,
            &[&viewer[..], &["browse", root.as_str(), "--depth", "6"]].concat(),
        )
        .await;
    let nodes = browse.ok()["nodes"].as_array().expect("nodes").clone();
    let node = |id: &str| {
        nodes
            .iter()
            .find(|n| n["node_id"] == id)
            .unwrap_or_else(|| panic!("{id} in {}", browse.report))
    };
    let mut parent = root.clone();
    for (path, name) in [
        ("acme", "acme"),
        ("acme/plant1", "plant1"),
        ("acme/plant1/line1", "line1"),
        ("acme/plant1/line1/filler", "filler"),
        (SPEED, "speed"),
    ] {
        let n = node(&id(path));
        assert_eq!(n["parent"], parent.as_str(), "{n}");
        assert_eq!(n["browse_name"], name, "{n}");
        assert_eq!(n["browse_ns"], ns, "{n}");
        parent = id(path);
    }
    assert_eq!(node(&id(SPEED))["data_type"], "i=11", "Double");
    assert_eq!(node(&id(SPEED))["node_class"], "Variable");
    assert_eq!(node(&id(RUNNING))["data_type"], "i=1", "Boolean");
    assert_eq!(node(&id(COUNT))["data_type"], "i=8", "Int64");
    assert_eq!(node(&id("acme/plant1"))["node_class"], "Object");
    let units = node(&format!("{}#EngineeringUnits", id(SPEED)));
    assert_eq!(
        (&units["browse_name"], &units["browse_ns"]),
        (&"EngineeringUnits".into(), &0.into())
    );

    // Values, quality and timestamps.
    let t0 = Timestamp(Timestamp::now().0 - 2_000_000);
    f.server.publish([
        (SPEED, &Value::Float(120.5), Quality::GOOD, t0),
        (
            RUNNING,
            &Value::Bool(true),
            Quality::uncertain(QualityReason::Stale),
            t0,
        ),
    ]);
    let (speed_id, running_id, count_id) = (id(SPEED), id(RUNNING), id(COUNT));
    let read = peer
        .run(
            &pki,
            &[&viewer[..], &["read", &speed_id, &running_id, &count_id]].concat(),
        )
        .await;
    let values = read.ok()["values"].as_array().expect("values").clone();
    assert_eq!(values[0]["value"], 120.5, "{}", read.report);
    assert_eq!(values[0]["status"], "Good");
    assert_eq!(values[0]["status_code"], 0);
    let source = values[0]["source_timestamp"]
        .as_str()
        .expect("a source time");
    assert!(
        source.starts_with(&t0.to_rfc3339()[..19]),
        "{source} vs {t0}"
    );
    let server = values[0]["server_timestamp"]
        .as_str()
        .expect("a server time");
    assert!(server > source, "{server} after {source}");
    assert_eq!(values[1]["value"], true);
    assert_eq!(values[1]["status"], "UncertainLastUsableValue");
    assert_eq!(values[2]["status"], "BadWaitingForInitialData");

    // A subscription receives what is published meanwhile (every 300 ms, one in two
    // uncertain), until the client has listened for 4 s.
    let listen = peer.spawn(
        &pki,
        &[
            &viewer[..],
            &[
                "subscribe",
                &speed_id,
                "--interval",
                "100",
                "--seconds",
                "4",
            ],
        ]
        .concat(),
    );
    let mut i = 0u32;
    while !listen.is_finished() {
        let q = if i.is_multiple_of(2) {
            Quality::GOOD
        } else {
            Quality::uncertain(QualityReason::OutOfRange)
        };
        f.server.publish([(
            SPEED,
            &Value::Float(200.0 + f64::from(i)),
            q,
            Timestamp::now(),
        )]);
        i += 1;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let sub = listen.await.expect("the subscriber");
    let done = sub.ok();
    assert_eq!(done["done"], true, "{}", sub.report);
    let changes = &sub.lines[..sub.lines.len() - 1];
    assert_eq!(done["count"].as_u64(), Some(changes.len() as u64));
    let published = |status: &str| {
        changes.iter().any(|c| {
            c["node_id"] == speed_id.as_str()
                && c["status"] == status
                && c["value"].as_f64().is_some_and(|v| v >= 200.0)
        })
    };
    assert!(published("Good"), "{}", sub.report);
    assert!(
        published("UncertainEngineeringUnitsExceeded"),
        "{}",
        sub.report
    );

    // Writes: op through the backend, typed as the node's data type; refusals by status.
    let op = ["--user", "op", "--password", "op-password"];
    for (who, node, value, ty, expected) in [
        (&op, &speed_id, "42", "Int32", "Good"),
        (&op, &count_id, "9", "UInt16", "Good"),
        (&op, &speed_id, "420", "Double", "BadOutOfRange"),
        (&op, &count_id, "1.5", "Double", "BadTypeMismatch"),
        (&op, &running_id, "false", "Boolean", "BadNotWritable"),
        (&viewer, &speed_id, "42", "Double", "BadUserAccessDenied"),
    ] {
        let w = peer
            .run(
                &pki,
                &[&who[..], &["write", node, value, "--type", ty]].concat(),
            )
            .await;
        assert_eq!(w.ok()["status"], expected, "{}", w.report);
    }
    assert_eq!(
        f.backend.writes(),
        [
            ("op".to_owned(), SPEED.to_owned(), Value::Float(42.0)),
            ("op".to_owned(), COUNT.to_owned(), Value::Int(9)),
        ],
        "typed as the nodes' data types; refusals never reach the backend"
    );

    // Refused: with a wrong password, with an unknown certificate.
    let wrong = peer
        .run(
            &pki,
            &["--user", "op", "--password", "nope", "read", &speed_id],
        )
        .await;
    assert_eq!(
        wrong.refused()["status"],
        "BadUserAccessDenied",
        "{}",
        wrong.report
    );
    let stranger = f.dir.path().join("stranger");
    let thumb = peer.run(&stranger, &["cert"]).await.ok()["thumbprint"]
        .as_str()
        .expect("thumbprint")
        .to_owned();
    let refused = peer
        .run(&stranger, &[&viewer[..], &["read", &speed_id]].concat())
        .await;
    assert_eq!(
        refused.refused()["status"],
        "BadCertificateUntrusted",
        "{}",
        refused.report
    );
    let rejected: Vec<String> = f
        .server_pki
        .rejected()
        .expect("rejected")
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    assert_eq!(rejected, [thumb]);
    f.server.stop().await;
}

fn node_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/peers/opcua_node_client.js")
}
