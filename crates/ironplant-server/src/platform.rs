//! Running the platform, the demo and the simulator from the command line.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use ironplant_api::settings::HttpSettings;
use ironplant_api::ApiState;
use ironplant_core::config::Config;
use ironplant_mqtt::settings::{Bridges, MqttSettings};
use ironplant_security::Security;
use ironplant_sparkplug::settings::SparkplugSettings;
use tokio::net::TcpListener;

use crate::datadir;
use crate::secure;

/// How long a start waits for another process that is creating the security state.
const SETUP_PATIENCE: std::time::Duration = std::time::Duration::from_secs(60);

/// Opens (on first start, creates) the security state, one process at a time.
fn open_security(data_dir: &Path, config: &Config) -> anyhow::Result<Arc<Security>> {
    let _setup = datadir::lock_setup(data_dir, SETUP_PATIENCE)?;
    secure::open_configured(data_dir, config)
}

/// The plain MQTT listener's usual address (`--mqtt`; off unless given).
pub const DEFAULT_MQTT: &str = "127.0.0.1:1883";

/// The MQTT over TLS listener's default address (`--mqtts`).
pub const DEFAULT_MQTTS: &str = "127.0.0.1:8883";

/// The example configuration bundled into the binary; the demo points it at its simulator.
pub const BOTTLING_CONFIG: &str = include_str!("../../../examples/bottling.toml");

async fn bind(addr: &str, what: &str, flag: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        let why = match e.kind() {
            std::io::ErrorKind::AddrInUse => "the address is in use by another program".to_owned(),
            std::io::ErrorKind::AddrNotAvailable => {
                "no local interface has that address".to_owned()
            }
            std::io::ErrorKind::PermissionDenied => {
                "permission denied (ports below 1024 need privileges)".to_owned()
            }
            _ => e.to_string(),
        };
        anyhow::anyhow!(
            "cannot listen for {what} on {addr}: {why}; choose another address with {flag} ADDR"
        )
    })
}

fn prepare_data_dir(dir: &Path) -> anyhow::Result<()> {
    crate::private_dir::create(dir)?;
    crate::private_dir::make_private(dir)?;
    let probe = dir.join(".ironplant-write-test");
    std::fs::write(&probe, b"ok").with_context(|| {
        format!(
            "data directory {} is not writable; pick another with --data-dir DIR",
            dir.display()
        )
    })?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

/// Resolves when the process is asked to stop (Ctrl-C or SIGTERM).
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down");
}

/// Where the platform listens (flags of `serve` and `demo`).
pub struct Listen<'a> {
    /// The API: HTTPS unless `insecure_http`.
    pub http: &'a str,
    pub insecure_http: bool,
    /// MQTT over TLS (`--mqtts`).
    pub mqtts: Option<&'a str>,
    /// Plain-text MQTT (`--mqtt`), off unless asked for; authenticated like the others.
    pub mqtt: Option<&'a str>,
    /// The dedicated MQTT over WebSocket listener (`--mqtt-ws`).
    pub mqtt_ws: Option<&'a str>,
    /// Extra host names or addresses for the server certificate (`--tls-name`).
    pub tls_names: &'a [String],
    /// Bring-your-own server certificate and key (`--tls-cert`, `--tls-key`).
    pub tls_cert: Option<(&'a Path, &'a Path)>,
}

/// The listeners, bound.
struct Bound {
    http: TcpListener,
    mqtts: Option<TcpListener>,
    mqtt: Option<TcpListener>,
    ws: Option<TcpListener>,
}

async fn bind_all(listen: &Listen<'_>, demo: bool) -> anyhow::Result<Bound> {
    let http = bind(listen.http, "HTTP", "--http").await?;
    let mqtts = match listen.mqtts {
        Some(addr) if demo => {
            Some(bind_demo(addr, DEFAULT_MQTTS, "MQTT over TLS", "--mqtts").await?)
        }
        Some(addr) => Some(bind(addr, "MQTT over TLS", "--mqtts").await?),
        None => None,
    };
    let mqtt = match listen.mqtt {
        Some(addr) if demo => Some(bind_demo(addr, DEFAULT_MQTT, "MQTT", "--mqtt").await?),
        Some(addr) => Some(bind(addr, "MQTT", "--mqtt").await?),
        None => None,
    };
    let ws = match listen.mqtt_ws {
        Some(addr) => Some(bind(addr, "MQTT over WebSocket", "--mqtt-ws").await?),
        None => None,
    };
    Ok(Bound {
        http,
        mqtts,
        mqtt,
        ws,
    })
}

/// Binds one of the demo's MQTT listeners: the standard port if it is free, else (another
/// broker runs on this laptop, say) a free port, so the demo still starts with one command.
async fn bind_demo(
    addr: &str,
    standard: &str,
    what: &str,
    flag: &str,
) -> anyhow::Result<TcpListener> {
    match bind(addr, what, flag).await {
        Ok(l) => Ok(l),
        Err(e) if addr == standard => {
            tracing::warn!(error = %e, "the standard {what} port is taken; the demo uses a free port instead");
            bind("127.0.0.1:0", what, flag).await
        }
        Err(e) => Err(e),
    }
}

/// Runs the platform until Ctrl-C/SIGTERM. `banner` is printed once the HTTP port is bound.
pub async fn serve(
    config: Config,
    listen: &Listen<'_>,
    data_dir: &Path,
    banner: Option<String>,
) -> anyhow::Result<()> {
    let bound = bind_all(listen, false).await?;
    prepare_data_dir(data_dir)?;
    // Before anything opens a redb file (historian, broker state, bridge queues).
    let _lock = datadir::lock_process(data_dir, "serve")?;
    let sec = tokio::task::block_in_place(|| open_security(data_dir, &config))?;
    serve_with(config, bound, listen, sec, data_dir, banner, None).await
}

/// The simulator's attacks for the API (`ironplant_api::simulator`).
struct Attacks(ironplant_sim::attack::AttackControl);

impl ironplant_api::simulator::SimulatorAttacks for Attacks {
    fn start(&self, scenario: serde_json::Value) -> Result<String, String> {
        let s: ironplant_sim::attack::Scenario = serde_json::from_value(scenario).map_err(|e| {
            format!("not a scenario: {e}; GET /api/v1/simulator/attacks shows one of each kind")
        })?;
        self.0.start(s).map_err(|e| e.to_string())
    }

    fn stop(&self, name: &str) -> Vec<String> {
        self.0.stop(name)
    }

    fn active(&self) -> serde_json::Value {
        serde_json::to_value(self.0.active()).unwrap_or(serde_json::Value::Null)
    }

    fn catalogue(&self) -> serde_json::Value {
        serde_json::to_value(ironplant_sim::attack::Scenario::catalogue())
            .unwrap_or(serde_json::Value::Null)
    }
}

fn local_addr(l: &TcpListener, what: &str) -> anyhow::Result<SocketAddr> {
    l.local_addr()
        .with_context(|| format!("cannot read the {what} listener's address"))
}

/// A listen address as clients reach it: 0.0.0.0 and :: are reached on loopback.
fn reachable(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), addr.port())
    } else {
        addr
    }
}

async fn serve_with(
    config: Config,
    bound: Bound,
    listen: &Listen<'_>,
    sec: Arc<Security>,
    data_dir: &Path,
    banner: Option<String>,
    attacks: Option<ironplant_sim::attack::AttackControl>,
) -> anyhow::Result<()> {
    let Bound {
        http: listener,
        mqtts: mqtts_listener,
        mqtt: mqtt_listener,
        ws: ws_listener,
    } = bound;
    tokio::task::block_in_place(|| secure::audit_config(&sec, data_dir, &config))?;
    let local = local_addr(&listener, "HTTP")?;
    let mut addrs = vec![local];
    if let Some(l) = &mqtts_listener {
        addrs.push(local_addr(l, "MQTT over TLS")?);
    }
    let names = secure::server_names(&addrs, listen.tls_names);
    let byo = match listen.tls_cert {
        Some((cert, key)) => Some(
            ironplant_security::ServerIdentity::from_pem_files(cert, key).with_context(|| {
                format!(
                    "cannot use the server certificate {} with key {}; give PEM files (the full chain, then its private key)",
                    cert.display(),
                    key.display()
                )
            })?,
        ),
        None => None,
    };
    let ca_crt = secure::ca_cert_path(&sec);
    // The broker runs when any MQTT listener is on; it is also served at /mqtt over WebSocket.
    // Retained messages and persistent sessions live in <data-dir>/mqtt. Every client is
    // authenticated (certificate, password or API token) and checked against the ACL.
    let any_mqtt = mqtts_listener.is_some() || mqtt_listener.is_some() || ws_listener.is_some();
    let namespace_for_policy = Arc::new(std::sync::OnceLock::new());
    let broker = if any_mqtt {
        let m = config.get::<MqttSettings>();
        let broker_cfg = ironplant_mqtt::BrokerConfig {
            state_dir: Some(data_dir.join("mqtt")),
            max_packet_size: m.max_packet_size,
            max_queue: m.max_queue,
            max_session_queue: m.max_session_queue,
            max_session_disk: m.max_session_disk,
            slow_consumer_timeout: m.slow_consumer_timeout,
            overflow: if m.disconnect_slow_clients {
                ironplant_mqtt::Overflow::Disconnect
            } else {
                ironplant_mqtt::Overflow::DropNewest
            },
            max_inflight: m.max_inflight,
            max_session_expiry: u32::try_from(m.max_session_expiry.as_secs()).unwrap_or(u32::MAX),
            sys_interval: m.sys_interval,
            server_keep_alive: m.server_keep_alive,
            receive_maximum: m.receive_maximum,
            topic_alias_maximum: m.topic_alias_maximum,
            connect_timeout: m.connect_timeout,
            max_connections: m.max_connections,
            privileged_reserve: m.privileged_reserve,
            max_connections_per_address: m.max_connections_per_address,
            max_sessions: m.max_sessions,
            max_subscriptions_per_client: m.max_subscriptions_per_client,
            max_retained_per_owner: m.max_retained_per_owner,
            max_retained_bytes_per_owner: m.max_retained_bytes_per_owner,
            ..ironplant_mqtt::BrokerConfig::default()
        };
        let auth = Arc::new(secure::BlockingAuth {
            inner: sec.mqtt.clone(),
            reserved: Some(secure::Reserved {
                namespace: namespace_for_policy.clone(),
                uns_prefix: m.uns_prefix.clone(),
                host_state: format!(
                    "spBv1.0/STATE/{}",
                    config.get::<SparkplugSettings>().host_id
                ),
            }),
        });
        let broker = ironplant_mqtt::Broker::open(broker_cfg, auth)
            .context("cannot open the MQTT broker's state (retained messages and sessions)")?;
        Some(broker)
    } else {
        None
    };
    // The runtime, its consumers on the broker (UNS, Sparkplug host), then the sources: in
    // that order, so no consumer misses the first poll.
    let started = ironplant_runtime::start_platform(&config, Some(data_dir), broker.as_ref())
        .map_err(|e| match e {
            ironplant_runtime::StartError::Historian(e) => anyhow::Error::new(e).context(format!(
                "cannot start the historian in {}",
                data_dir.join("historian").display()
            )),
            e @ ironplant_runtime::StartError::Sparkplug(_) => anyhow::Error::new(e).context(
                "cannot start the Sparkplug host application; check [sparkplug] in the config",
            ),
            e @ ironplant_runtime::StartError::Alarms(_) => anyhow::Error::new(e)
                .context("cannot start the alarms; check the [[alarm]] sections of the config"),
            e @ ironplant_runtime::StartError::Logic(_) => anyhow::Error::new(e).context(
                "cannot start the local logic; check the [[computed]], [[rule]] and [[alarm]] sections",
            ),
            e @ ironplant_runtime::StartError::Integrity(_) => anyhow::Error::new(e)
                .context("cannot start the integrity checks; check [integrity] in the config"),
            e @ ironplant_runtime::StartError::Opcua(_) => anyhow::Error::new(e)
                .context("cannot start OPC UA; check [opcua] in the config"),
        })?;
    let mut platform = started;
    platform
        .runtime
        .ingest
        .set_signers(Arc::new(secure::SignerKeys(sec.clone())));
    let runtime = platform.runtime.clone();
    let sparkplug_state = platform.sparkplug_state.take();
    let _ = namespace_for_policy.set(runtime.namespace.clone());
    // Every step of every command into the security audit log; the role of MQTT requesters
    // (the two-person rule needs it) from the user store.
    let audit = sec.audit.clone();
    runtime.commands.set_audit_sink(Box::new(move |r| {
        audit.submit(ironplant_security::AuditEvent::Command {
            actor: Some(r.actor.clone()),
            target: r.tag.clone(),
            value: r.new_value.to_string(),
            outcome: ironplant_runtime::commands::audit_outcome(r),
        })
    }));
    let users = sec.users.clone();
    runtime.commands.set_role_resolver(Arc::new(move |name| {
        let user = users
            .list_users()
            .ok()?
            .into_iter()
            .find(|u| u.name == name)?;
        (!user.disabled).then(|| user.role.as_str().parse().ok())?
    }));
    if let Some(b) = &broker {
        runtime.metrics.attach_broker(b.clone());
    }
    let state = Arc::new(ApiState {
        runtime: runtime.clone(),
        started: Instant::now(),
        mqtt: broker.clone(),
        security: Some(sec.clone()),
        http: ironplant_api::listen::Connections::new(
            HttpSettings::clone(&config.get::<HttpSettings>()),
            Some(sec.clone()),
        ),
    });
    let conns = state.http.clone();
    if let Some(b) = banner {
        println!("{b}");
    }
    println!(
        "Ironplant is running: {} tags from {} device(s)",
        runtime.namespace.len(),
        config.devices.len()
    );
    let scheme = if listen.insecure_http {
        "http"
    } else {
        "https"
    };
    println!("  Web HMI:   {scheme}://{local}/  (log in with a user of the platform)");
    println!("  HTTP API:  {scheme}://{local}/api/v1/tags");
    println!("  Assets:    {scheme}://{local}/api/v1/assets");
    println!("  Metrics:   {scheme}://{local}/metrics");
    println!("  Health:    {scheme}://{local}/healthz");
    println!(
        "  CA:        {} (SHA-256 {}); clients trust this certificate",
        ca_crt.display(),
        sec.ca.fingerprint()
    );
    if let Some(admin) = sec.users.initial_admin() {
        // Shown once, on the terminal only (never in the log): the first start is the one moment
        // an operator needs it.
        let text = std::fs::read_to_string(&admin.password_file).unwrap_or_default();
        let password = text
            .lines()
            .find_map(|l| l.strip_prefix("password:"))
            .unwrap_or("(see the file)");
        println!(
            "  First start: created user `{}` with password `{}` (also in {}, 0600): log in, change it, delete the file",
            admin.user,
            password.trim(),
            admin.password_file.display()
        );
    }
    tracing::info!(fingerprint = %sec.ca.fingerprint(), ca = %ca_crt.display(), "certificate authority");
    // Kept until shutdown, then stopped cleanly (the queue stays on disk, the counters are
    // saved).
    let mut bridges = Vec::new();
    if let Some(broker) = &broker {
        bridges = ironplant_runtime::bridges::start(broker, &config.get::<Bridges>(), data_dir)
            .await
            .context("cannot start the MQTT bridges")?;
        runtime.metrics.attach_bridges(&bridges);
        for b in config.get::<Bridges>().iter() {
            println!(
                "  Bridge:    {} <-> mqtt://{} (queue in {})",
                b.name,
                b.address,
                data_dir.join("bridge").join(&b.name).display()
            );
        }
    } else if !config.get::<Bridges>().is_empty() {
        tracing::warn!(
            "[[bridge]] sections are ignored: the MQTT broker is off (no MQTT listener)"
        );
    }
    // The Unified Namespace over OPC UA, when `[opcua.server]` asks for it.
    let opcua_server = match &config
        .get::<ironplant_opcua::settings::OpcuaSettings>()
        .server
    {
        Some(cfg) => {
            let s = crate::opcua::start(cfg, runtime.clone(), sec.clone(), data_dir).await?;
            println!(
                "  OPC UA:    {} (SignAndEncrypt, users of the platform; client certificates to trust in {}){}",
                s.url(),
                ironplant_opcua::pki::server_dir(data_dir).join("rejected").display(),
                if cfg.writes { ", writes through the command path" } else { ", read-only" }
            );
            Some(s)
        }
        None => None,
    };
    // The signed audit head, for witnesses outside this host (rollback and wipe detection).
    let audit_head = crate::audit_witness::start(
        sec.audit.clone(),
        broker.clone(),
        crate::audit_witness::witness_from_env(data_dir)?,
        crate::audit_witness::EVERY,
    );
    if let (Some(l), Some(broker)) = (mqtts_listener, broker.clone()) {
        let addr = local_addr(&l, "MQTT over TLS")?;
        let tls = sec
            .mqtt_tls_config(&names, byo.as_ref(), false)
            .context("cannot set up TLS for the MQTT listener")?;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        tokio::spawn(async move {
            if let Err(e) = secure::serve_mqtts(l, acceptor, broker).await {
                tracing::error!(error = %e, "MQTT over TLS listener failed");
            }
        });
        let r = reachable(addr);
        println!(
            "  MQTT/TLS:  mqtts://{addr} (device certificate, or user name + password or API token; e.g. mosquitto_sub -h {} -p {} --cafile {} -u USER -P TOKEN -t 'acme/#' -v)",
            r.ip(),
            r.port(),
            ca_crt.display()
        );
        tracing::info!(mqtts = %addr, "MQTT over TLS listener: client certificates optional and verified; anonymous clients refused");
    }
    if let (Some(l), Some(broker)) = (mqtt_listener, broker.clone()) {
        let addr = local_addr(&l, "MQTT")?;
        tokio::spawn(async move {
            if let Err(e) = broker.serve(l).await {
                tracing::error!(error = %e, "MQTT listener failed");
            }
        });
        println!("  MQTT:      mqtt://{addr} (PLAIN TEXT; still authenticated)");
        tracing::warn!(mqtt = %addr, "plain-text MQTT listener (--mqtt): passwords, tokens and data cross the network in clear; use --mqtts, or keep this on loopback");
    }
    if let (Some(state), Some(_)) = (&sparkplug_state, &broker) {
        let under = config
            .get::<SparkplugSettings>()
            .prefix
            .as_ref()
            .map_or_else(
                || "<group>/<node>/<device>/<metric>".to_owned(),
                |p| format!("{p}/<group>/<node>/<device>/<metric>"),
            );
        println!("  Sparkplug: host application on spBv1.0/# (STATE {state}); edge nodes' metrics become tags {under}");
    }
    if let Some(broker) = broker.clone() {
        let ws = if listen.insecure_http { "ws" } else { "wss" };
        println!(
            "  MQTT/WS:   {ws}://{local}{} (browsers and web HMIs: MQTT over WebSocket, subprotocol mqtt)",
            ironplant_api::mqtt_ws::PATH
        );
        if let Some(l) = ws_listener {
            let addr = local_addr(&l, "MQTT over WebSocket")?;
            let conns = conns.clone();
            tokio::spawn(async move {
                let served = ironplant_api::mqtt_ws::serve_dedicated(
                    l,
                    broker,
                    conns,
                    std::future::pending(),
                )
                .await;
                if let Err(e) = served {
                    tracing::error!(error = %e, "MQTT over WebSocket listener failed");
                }
            });
            println!("  MQTT/WS:   ws://{addr}/ (dedicated listener, any path; PLAIN TEXT)");
            tracing::warn!(mqtt_ws = %addr, "the dedicated MQTT over WebSocket listener (--mqtt-ws) is plain text (still authenticated); prefer wss at /mqtt on the HTTPS listener");
        }
    }
    println!("Press Ctrl-C to stop.");
    let h = config.get::<HttpSettings>();
    tracing::info!(
        max_connections = h.max_connections,
        per_address = h.max_connections_per_address,
        reserved = h.reserved_connections,
        reserved_for = ?h.reserved_for,
        handshake_timeout = ?h.handshake_timeout,
        header_read_timeout = ?h.header_read_timeout,
        idle_timeout = ?h.idle_timeout,
        max_body_size = h.max_body_size,
        "HTTP limits ([http] in the config)"
    );
    // HTTP ingest, and the simulator's attacks when it runs in this process (the demo).
    let mut routes = ironplant_api::ingest::routes(state.runtime.ingest.clone());
    if let Some(control) = attacks {
        routes = routes.merge(ironplant_api::simulator::routes(Arc::new(Attacks(control))));
    }
    let served = if listen.insecure_http {
        tracing::warn!(http = %local, "plain-text HTTP (--insecure-http): passwords and tokens cross the network in clear; use it only on loopback or behind a TLS proxy");
        tracing::info!(http = %local, data_dir = %data_dir.display(), "platform started");
        ironplant_api::serve_with(listener, state, routes, shutdown_signal()).await
    } else {
        let tls = sec
            .https_tls_config(&names, byo.as_ref())
            .context("cannot set up TLS for the HTTP listener")?;
        tracing::info!(https = %local, names = ?names, "HTTPS listener");
        tracing::info!(http = %local, data_dir = %data_dir.display(), "platform started");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        ironplant_api::listen::serve(
            listener,
            "https",
            move |tcp| acceptor.accept(tcp),
            ironplant_api::router_with(state, routes),
            conns,
            shutdown_signal(),
        )
        .await
    };
    audit_head.stop().await;
    if let Some(s) = opcua_server {
        s.stop().await;
    }
    for b in bridges {
        b.shutdown().await;
    }
    // Flush the historian even if the HTTP server failed: acknowledged data is in the WAL
    // anyway, but a clean close leaves nothing to replay.
    // Sources, services and sinks in order, then the historian.
    platform.shutdown(std::time::Duration::from_secs(5)).await;
    tokio::task::block_in_place(|| {
        // Retained messages and persistent sessions are saved for the next start.
        if let Some(b) = &broker {
            b.close();
        }
    });
    served.context("HTTP server failed")?;
    Ok(())
}

/// The device name of the demo's Sparkplug edge node (its Sparkplug edge node id, which the
/// default ACL lets a device publish as).
const DEMO_EDGE_DEVICE: &str = "sim-edge";

/// The simulator edge node's certificate bundle in `<data-dir>/demo-edge/` (used by `demo`
/// and by `simulate` without `--sparkplug-bundle`): reused while it is the device's active
/// certificate, else (first start, revoked, or the device enrolled again elsewhere) enrolled
/// anew. Call with the setup lock held: two processes must not enrol it at once.
fn demo_edge_bundle(sec: &Security, data_dir: &Path) -> anyhow::Result<(String, String, PathBuf)> {
    use rustls::pki_types::pem::PemObject as _;
    let dir = data_dir.join("demo-edge");
    let crt = dir.join(format!("{DEMO_EDGE_DEVICE}.crt"));
    let key = dir.join(format!("{DEMO_EDGE_DEVICE}.key"));
    let kept = match (std::fs::read_to_string(&crt), std::fs::read_to_string(&key)) {
        (Ok(c), Ok(k)) => Some((c, k)),
        _ => None,
    };
    let kept_is_active = kept.as_ref().is_some_and(|(c, _)| {
        rustls::pki_types::CertificateDer::from_pem_slice(c.as_bytes()).is_ok_and(|der| {
            matches!(
                sec.ca.devices().status(&der),
                ironplant_security::ca::CertStatus::Active(_)
            )
        })
    });
    if let (true, Some((c, k))) = (kept_is_active, kept) {
        return Ok((c, k, dir));
    }
    if sec.ca.devices().active(DEMO_EDGE_DEVICE).is_some() {
        // Enrolled with another certificate (`ironplant device enroll sim-edge` after a revoke,
        // say) whose key is not here: the simulator's edge node needs one it can present.
        tracing::warn!(device = DEMO_EDGE_DEVICE, dir = %dir.display(), "the simulator's edge node is enrolled with a certificate that is not in its bundle directory; enrolling it again there (the other certificate is revoked)");
        sec.ca
            .revoke(DEMO_EDGE_DEVICE, Some("demo"))
            .context("cannot revoke the simulator edge node's other certificate")?;
    }
    let bundle = sec
        .ca
        .enroll(
            DEMO_EDGE_DEVICE,
            ironplant_security::Role::Device,
            Some("demo"),
        )
        .context("cannot enrol the demo's Sparkplug edge node")?;
    bundle.write_to(&dir).with_context(|| {
        format!(
            "cannot write the edge node's certificate to {}",
            dir.display()
        )
    })?;
    Ok((bundle.certificate_pem, bundle.private_key_pem, dir))
}

/// Starts the simulator, then the platform on the bundled config pointed at it.
pub async fn demo(
    sim_listen: SocketAddr,
    seed: u64,
    opcua: Option<&str>,
    listen: &Listen<'_>,
    data_dir: &Path,
) -> anyhow::Result<()> {
    let sim = bind(&sim_listen.to_string(), "the simulator", "--sim-listen").await?;
    let sim_addr = sim
        .local_addr()
        .context("cannot read the simulator's address")?;
    let (readings_tx, readings) = tokio::sync::watch::channel(ironplant_sim::Readings::default());
    // Switched at run time through the API (`/api/v1/simulator/attacks`).
    let attacks = ironplant_sim::attack::AttackControl::new();
    let control = attacks.clone();
    tokio::spawn(async move {
        if let Err(e) = ironplant_sim::run_attacked(sim, seed, Some(readings_tx), control).await {
            tracing::error!(error = %e, "simulator stopped");
        }
    });
    let mut text = BOTTLING_CONFIG.replace("127.0.0.1:5020", &sim_addr.to_string());
    // The labeller speaks OPC UA: the simulator's own server, which the platform connects to
    // like any machine's (its certificate trusted here, as an engineer would on site).
    let labeller = start_demo_labeller(data_dir, seed, readings.clone()).await?;
    text.push_str(&labeller.1);
    let labeller = labeller.0;
    if let Some(addr) = opcua {
        // The Unified Namespace over OPC UA, writable through the command path.
        text.push_str(&format!(
            "\n# The Unified Namespace served over OPC UA (users of the platform).\n[opcua.server]\nlisten = \"{addr}\"\nwrites = true\n"
        ));
    }
    let config = ironplant_api::settings::parse("examples/bottling.toml (bundled)", &text)
        .map_err(|e| anyhow::anyhow!("the bundled demo config is invalid:\n{e}"))?;
    prepare_data_dir(data_dir)?;
    // Before anything opens a redb file (historian, broker state, bridge queues).
    let _lock = datadir::lock_process(data_dir, "demo")?;
    learn_demo_models(data_dir, seed).await?;
    let saved = data_dir.join("demo.toml");
    std::fs::write(&saved, &text).with_context(|| format!("cannot write {}", saved.display()))?;
    let mut banner = format!(
        "Simulated bottling line (Modbus TCP) on {sim_addr}, its labeller (OPC UA) on {}; its config is saved in {}",
        labeller.url(),
        saved.display()
    );
    let bound = bind_all(listen, true).await?;
    let (sec, edge_bundle) = tokio::task::block_in_place(|| {
        let _setup = datadir::lock_setup(data_dir, SETUP_PATIENCE)?;
        let sec = secure::open_configured(data_dir, &config)?;
        let bundle = match &bound.mqtts {
            Some(_) => Some(demo_edge_bundle(&sec, data_dir)?),
            None => None,
        };
        anyhow::Ok((sec, bundle))
    })?;
    if let (Some(l), Some((cert, key, dir))) = (&bound.mqtts, edge_bundle) {
        let addr = reachable(local_addr(l, "MQTT over TLS")?);
        let client = ironplant_security::client_config(sec.ca.ca_pem(), Some((&cert, &key)))
            .context("cannot set up TLS for the demo's edge node")?;
        let connector = secure::TlsConnector {
            address: addr,
            server_name: rustls::pki_types::ServerName::IpAddress(addr.ip().into()),
            connector: tokio_rustls::TlsConnector::from(Arc::new(client)),
        };
        let edge = ironplant_sim::sparkplug::EdgeSettings {
            broker: addr.to_string(),
            ..Default::default()
        };
        banner.push_str(&sparkplug_banner(
            &edge,
            "mqtts",
            config.get::<SparkplugSettings>().prefix.as_ref(),
        ));
        banner.push_str(&format!(
            " as enrolled device `{DEMO_EDGE_DEVICE}` (certificate in {})",
            dir.display()
        ));
        tokio::spawn(async move {
            if let Err(e) =
                ironplant_sim::sparkplug::run_with(edge, readings, connector, None).await
            {
                tracing::error!(error = %e, "sparkplug edge node stopped");
            }
        });
    } else {
        tracing::warn!("the simulator's Sparkplug edge node is not started: it connects over MQTT/TLS with a device certificate, and --mqtts is off");
    }
    let password_file = sec
        .dir()
        .join(ironplant_security::users::INITIAL_ADMIN_FILE);
    if password_file.exists() {
        let http = reachable(local_addr(&bound.http, "HTTP")?);
        banner.push_str(&format!(
            "\nLog in as `admin` with the password in {} (0600), e.g.\n  {}",
            password_file.display(),
            login_example(
                &password_file,
                (!listen.insecure_http).then(|| secure::ca_cert_path(&sec)),
                http
            )
        ));
    }
    serve_with(
        config,
        bound,
        listen,
        sec,
        data_dir,
        Some(banner),
        Some(attacks),
    )
    .await
}

/// The demo's labeller: the simulator's OPC UA server with its own certificates in
/// `<data-dir>/opcua/sim-labeller`, a user `ironplant` with a password made at each start, the
/// platform's client certificate trusted by it and its certificate trusted by the platform.
/// Returns it and the `[opcua]` config that maps it.
async fn start_demo_labeller(
    data_dir: &Path,
    seed: u64,
    readings: tokio::sync::watch::Receiver<ironplant_sim::Readings>,
) -> anyhow::Result<(ironplant_sim::opcua::LabellerServer, String)> {
    use ring::rand::SecureRandom as _;
    let mut secret = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut secret)
        .map_err(|_| anyhow::anyhow!("no system randomness for the labeller's password"))?;
    let password: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    let machine_pki = data_dir.join("opcua").join("sim-labeller");
    let labeller = ironplant_sim::opcua::start(
        ironplant_sim::opcua::LabellerSettings {
            pki_dir: machine_pki.clone(),
            host: "127.0.0.1".to_owned(),
            port: 0,
            user: "ironplant".to_owned(),
            password: password.clone(),
            seed,
        },
        readings,
    )
    .await
    .context("cannot start the simulated labeller's OPC UA server")?;
    let now = std::time::SystemTime::now();
    let platform_pki =
        ironplant_opcua::pki::Pki::open_or_create(&ironplant_opcua::pki::client_dir(data_dir), now)
            .context("cannot open the platform's OPC UA certificates")?;
    platform_pki
        .trust_der(&labeller.certificate)
        .context("cannot trust the simulated labeller's certificate")?;
    let client = platform_pki
        .application_certificate(
            ironplant_opcua::source::APPLICATION_URI,
            &ironplant_opcua::source::client_names(),
            now,
        )
        .context("cannot make the platform's OPC UA client certificate")?;
    ironplant_opcua::pki::Pki::open_or_create(&machine_pki, now)
        .and_then(|p| p.trust_der(&client.der))
        .context("cannot make the simulated labeller trust the platform")?;
    let config = ironplant_sim::opcua::demo_config(
        &labeller.url(),
        "ironplant",
        &password,
        "acme/lyon/bottling/line1/labeller",
    );
    Ok((labeller, config))
}

/// At the demo's first start, learns its integrity models on the simulator in simulated time
/// (`detection::demo_models`), so the detectors judge from the first minute; later starts
/// restore what is saved (and never learn again from data an attack may be bending).
async fn learn_demo_models(data_dir: &Path, seed: u64) -> anyhow::Result<()> {
    let path = ironplant_runtime::integrity::models_path(data_dir);
    if path.exists() {
        return Ok(());
    }
    let spinner = indicatif::ProgressBar::new_spinner()
        .with_message("learning the integrity models on 2 simulated hours of the bottling line");
    spinner.enable_steady_tick(std::time::Duration::from_millis(120));
    let started = std::time::Instant::now();
    let snapshot = tokio::task::spawn_blocking(move || crate::detection::demo_models(seed))
        .await
        .context("the integrity models' training stopped")??;
    let dir = data_dir.to_owned();
    let saved = tokio::task::spawn_blocking(move || {
        ironplant_runtime::integrity::install_models(&dir, &snapshot)
    })
    .await
    .context("saving the integrity models stopped")?
    .with_context(|| format!("cannot save the integrity models in {}", path.display()))?;
    spinner.finish_and_clear();
    tracing::info!(
        file = %saved.display(),
        seconds = started.elapsed().as_secs_f64(),
        "integrity models learnt on the simulator in simulated time"
    );
    Ok(())
}

/// `path` absolute (so a line printed for copying works from any directory) and quoted for a
/// POSIX shell.
fn shell_path(path: &Path) -> String {
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    format!("'{}'", abs.display().to_string().replace('\'', r"'\''"))
}

/// The `curl` line the demo prints for the first-start admin. The password file holds
/// `user: admin` and `password: …` lines, so the password is taken from its line (a plain
/// `$(cat FILE)` would send both lines as the password: 401, counted by the lockout).
fn login_example(password_file: &Path, ca: Option<PathBuf>, http: SocketAddr) -> String {
    let (scheme, cacert) = match ca {
        Some(ca) => ("https", format!("--cacert {} ", shell_path(&ca))),
        None => ("http", String::new()),
    };
    format!(
        "curl {cacert}-u \"admin:$(sed -n 's/^password: //p' {})\" {scheme}://{http}/api/v1/tags",
        shell_path(password_file)
    )
}

/// The banner line about the simulator's Sparkplug edge node.
fn sparkplug_banner(
    edge: &ironplant_sim::sparkplug::EdgeSettings,
    scheme: &str,
    prefix: Option<&ironplant_core::TagPath>,
) -> String {
    let under = match prefix {
        Some(p) => format!(
            "{p}/{}/{}/{}/",
            edge.group_id, edge.edge_node_id, edge.device_id
        ),
        None => format!(
            "{}/{}/{}/",
            edge.group_id, edge.edge_node_id, edge.device_id
        ),
    };
    format!(
        "\nSparkplug B edge node {}/{} (device {}) publishes to {scheme}://{}; its tags appear under {under} (e.g. GET /api/v1/tags?prefix={under})",
        edge.group_id, edge.edge_node_id, edge.device_id, edge.broker
    )
}

fn spawn_edge_node(
    edge: ironplant_sim::sparkplug::EdgeSettings,
    readings: tokio::sync::watch::Receiver<ironplant_sim::Readings>,
) {
    tokio::spawn(async move {
        if let Err(e) = ironplant_sim::sparkplug::run(edge, readings).await {
            tracing::error!(error = %e, "sparkplug edge node stopped");
        }
    });
}

/// TLS to `broker` with the enrolled bundle in `dir` (`sim-edge.crt`, `sim-edge.key`,
/// `ca.crt`). Also what `ironplant attack forge-sparkplug --bundle` presents as stolen.
pub fn bundle_connector(dir: &Path, broker: &str) -> anyhow::Result<secure::TlsConnector> {
    let read = |name: String| {
        let path = dir.join(&name);
        std::fs::read_to_string(&path).with_context(|| {
            format!(
                "cannot read {}; enrol the edge node first: ironplant device enroll {DEMO_EDGE_DEVICE} --role device --out {}",
                path.display(),
                dir.display()
            )
        })
    };
    let cert = read(format!("{DEMO_EDGE_DEVICE}.crt"))?;
    let key = read(format!("{DEMO_EDGE_DEVICE}.key"))?;
    let ca = read("ca.crt".to_owned())?;
    tls_connector(&ca, &cert, &key, broker)
}

/// TLS to `broker` trusting `ca`, presenting `cert` and `key` (PEM).
fn tls_connector(
    ca: &str,
    cert: &str,
    key: &str,
    broker: &str,
) -> anyhow::Result<secure::TlsConnector> {
    let address: SocketAddr = broker.parse().with_context(|| {
        format!("--sparkplug-broker {broker:?} is not an IP address and port, e.g. 127.0.0.1:8883")
    })?;
    let client = ironplant_security::client_config(ca, Some((cert, key)))
        .context("cannot set up TLS with the edge node's bundle")?;
    Ok(secure::TlsConnector {
        address,
        server_name: rustls::pki_types::ServerName::IpAddress(address.ip().into()),
        connector: tokio_rustls::TlsConnector::from(Arc::new(client)),
    })
}

/// The simulator's Sparkplug B edge node (`simulate`).
pub enum SimEdge {
    /// No edge node (`--sparkplug-broker off`).
    Off,
    /// TLS to the broker with an enrolled bundle (`--sparkplug-bundle DIR`).
    Bundle(String, PathBuf),
    /// TLS with the bundle the platform keeps for the simulator in `<data-dir>/demo-edge`
    /// (enrolled on first use, shared with `demo`).
    DataDir(String, PathBuf),
    /// Plain text and anonymous (`--sparkplug-plain`), for a third-party test broker.
    Plain(String),
}

/// What a broker answered to an anonymous MQTT 3.1.1 CONNECT in plain text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Probe {
    /// CONNACK 0: the edge node can publish there.
    Accepted,
    /// CONNACK with this return code (5: not authorised, 4: bad user name or password, ...).
    Refused(u8),
    /// The connection closed, or the answer is not MQTT (a TLS listener sends an alert).
    NotMqtt,
}

/// An anonymous MQTT 3.1.1 CONNECT (clean session, keep-alive 10 s).
fn probe_connect() -> Vec<u8> {
    let id = b"ironplant-simulate-probe";
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 10];
    body.extend_from_slice(&u16::try_from(id.len()).unwrap_or(0).to_be_bytes());
    body.extend_from_slice(id);
    let mut out = vec![0x10, u8::try_from(body.len()).unwrap_or(0)];
    out.extend_from_slice(&body);
    out
}

/// Classifies the first bytes a broker sent back to [`probe_connect`] (sans-IO).
fn classify_probe(answer: &[u8]) -> Probe {
    match answer {
        [0x20, 0x02, _, 0] => Probe::Accepted,
        [0x20, 0x02, _, rc] => Probe::Refused(*rc),
        _ => Probe::NotMqtt,
    }
}

/// Sends [`probe_connect`] to `broker`; `None` when nothing listens there (yet).
async fn probe_plain(broker: &str) -> Option<Probe> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let limit = std::time::Duration::from_secs(5);
    let mut s = match tokio::time::timeout(limit, tokio::net::TcpStream::connect(broker)).await {
        Ok(Ok(s)) => s,
        _ => return None,
    };
    if s.write_all(&probe_connect()).await.is_err() {
        return Some(Probe::NotMqtt);
    }
    let mut answer = Vec::with_capacity(4);
    let mut buf = [0u8; 4];
    while answer.len() < 4 {
        match tokio::time::timeout(limit, s.read(&mut buf[..4 - answer.len()])).await {
            Ok(Ok(n)) if n > 0 => answer.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    let probe = classify_probe(&answer);
    if probe == Probe::Accepted {
        let _ = s.write_all(&[0xE0, 0]).await; // DISCONNECT
    }
    Some(probe)
}

/// Checks that a plain-text, anonymous edge node can talk to `broker`, with an error that says
/// what to do instead when it cannot.
async fn check_plain_broker(broker: &str) -> anyhow::Result<()> {
    let alternatives = "leave out --sparkplug-plain (the edge node then connects over TLS with the certificate the platform keeps for it in <data-dir>/demo-edge), pass --sparkplug-bundle DIR (from `ironplant device enroll sim-edge --role device --out DIR`), or --sparkplug-broker off";
    let tls_port = DEFAULT_MQTTS.rsplit(':').next().unwrap_or("8883");
    if broker.rsplit(':').next() == Some(tls_port) {
        anyhow::bail!(
            "--sparkplug-broker {broker} is the platform's MQTT over TLS port, which plain MQTT (--sparkplug-plain) cannot talk to: {alternatives}"
        );
    }
    match probe_plain(broker).await {
        None => {
            tracing::warn!(broker, "no MQTT broker answers yet; the edge node retries until one does");
            Ok(())
        }
        Some(Probe::Accepted) => Ok(()),
        Some(Probe::Refused(rc)) => anyhow::bail!(
            "the MQTT broker at {broker} refuses an anonymous client (CONNACK return code {rc}); an Ironplant platform admits only enrolled devices and users: {alternatives}"
        ),
        Some(Probe::NotMqtt) => anyhow::bail!(
            "the broker at {broker} closed the connection on a plain-text MQTT CONNECT (it speaks TLS, like the platform's --mqtts listener, or is not MQTT): {alternatives}"
        ),
    }
}

/// Runs the simulator alone until Ctrl-C, with its Sparkplug B edge node as `edge` says
/// (retrying until the broker is up).
pub async fn simulate(listen: SocketAddr, seed: u64, edge: SimEdge) -> anyhow::Result<()> {
    let listener = bind(&listen.to_string(), "the simulator", "--listen").await?;
    let addr = listener
        .local_addr()
        .context("cannot read the simulator's address")?;
    println!("Simulated bottling line listening on {addr} (Modbus TCP, units 1 and 2)");
    let (readings_tx, readings) = tokio::sync::watch::channel(ironplant_sim::Readings::default());
    let settings = |broker: &str| ironplant_sim::sparkplug::EdgeSettings {
        broker: broker.to_owned(),
        ..Default::default()
    };
    let announce = |edge: &ironplant_sim::sparkplug::EdgeSettings, scheme: &str, how: String| {
        println!(
            "{}{how}",
            sparkplug_banner(edge, scheme, None).trim_start().replace(
                "its tags appear under",
                "(retrying until the broker is up); with `ironplant serve` its tags appear under"
            )
        );
    };
    let spawn_tls = |edge: ironplant_sim::sparkplug::EdgeSettings,
                     readings,
                     connector: secure::TlsConnector| {
        tokio::spawn(async move {
            if let Err(e) =
                ironplant_sim::sparkplug::run_with(edge, readings, connector, None).await
            {
                tracing::error!(error = %e, "sparkplug edge node stopped");
            }
        });
    };
    match edge {
        SimEdge::Off => {}
        SimEdge::Bundle(broker, dir) => {
            let connector = bundle_connector(&dir, &broker)?;
            let edge = settings(&broker);
            announce(
                &edge,
                "mqtts",
                format!("; certificate from {}", dir.display()),
            );
            spawn_tls(edge, readings, connector);
        }
        SimEdge::DataDir(broker, data_dir) => {
            prepare_data_dir(&data_dir)?;
            let (ca, (cert, key, dir)) = tokio::task::block_in_place(|| {
                let _setup = datadir::lock_setup(&data_dir, SETUP_PATIENCE)?;
                let sec = secure::open(&data_dir)?;
                let bundle = demo_edge_bundle(&sec, &data_dir)?;
                anyhow::Ok((sec.ca.ca_pem().to_owned(), bundle))
            })
            .with_context(|| {
                format!(
                    "cannot get the simulator edge node's certificate from {}; pass --sparkplug-bundle DIR, or --sparkplug-broker off",
                    data_dir.display()
                )
            })?;
            let connector = tls_connector(&ca, &cert, &key, &broker)?;
            let edge = settings(&broker);
            announce(
                &edge,
                "mqtts",
                format!(
                    "; enrolled device `{DEMO_EDGE_DEVICE}`, certificate in {} (shared with `ironplant demo`)",
                    dir.display()
                ),
            );
            spawn_tls(edge, readings, connector);
        }
        SimEdge::Plain(broker) => {
            check_plain_broker(&broker).await?;
            let edge = settings(&broker);
            announce(&edge, "mqtt", " (plain text, anonymous)".to_owned());
            spawn_edge_node(edge, readings);
        }
    }
    tokio::select! {
        res = ironplant_sim::run_with(listener, seed, Some(readings_tx)) => res.context("simulator failed")?,
        () = shutdown_signal() => {},
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_answers_are_classified() {
        // Golden bytes of a 3.1.1 CONNECT: fixed header, "MQTT", level 4, clean session,
        // keep-alive 10, client id.
        let c = probe_connect();
        assert_eq!(
            &c[..12],
            &[0x10, 36, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 10]
        );
        assert_eq!(usize::from(c[1]), c.len() - 2);
        assert_eq!(classify_probe(&[0x20, 2, 0, 0]), Probe::Accepted);
        assert_eq!(classify_probe(&[0x20, 2, 0, 5]), Probe::Refused(5));
        assert_eq!(classify_probe(&[]), Probe::NotMqtt, "closed on CONNECT");
        assert_eq!(
            classify_probe(&[0x15, 3, 3, 0]),
            Probe::NotMqtt,
            "a TLS alert"
        );
    }
}
