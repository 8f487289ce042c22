//! Running the platform, the demo and the simulator from the command line.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use ironplant_api::ApiState;
use ironplant_core::config::Config;
use ironplant_runtime::Runtime;
use tokio::net::TcpListener;

/// The MQTT listener's default address (`--mqtt`).
pub const DEFAULT_MQTT: &str = "127.0.0.1:1883";

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
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create data directory {}", dir.display()))?;
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

/// Runs the platform until Ctrl-C/SIGTERM. `banner` is printed once the HTTP port is bound.
pub async fn serve(
    config: Config,
    http: &str,
    mqtt: Option<&str>,
    mqtt_ws: Option<&str>,
    data_dir: &Path,
    banner: Option<String>,
) -> anyhow::Result<()> {
    let listener = bind(http, "HTTP", "--http").await?;
    let mqtt_listener = match mqtt {
        Some(addr) => Some(bind(addr, "MQTT", "--mqtt").await?),
        None => None,
    };
    let ws_listener = bind_mqtt_ws(mqtt_ws).await?;
    serve_with(
        config,
        listener,
        mqtt_listener,
        ws_listener,
        data_dir,
        banner,
    )
    .await
}

async fn bind_mqtt_ws(addr: Option<&str>) -> anyhow::Result<Option<TcpListener>> {
    match addr {
        Some(addr) => Ok(Some(bind(addr, "MQTT over WebSocket", "--mqtt-ws").await?)),
        None => Ok(None),
    }
}

/// Binds the demo's MQTT listener: the standard port if it is free, else (another broker runs
/// on this laptop, say) a free port, so the demo still starts with one command.
async fn bind_demo_mqtt(addr: &str) -> anyhow::Result<TcpListener> {
    match bind(addr, "MQTT", "--mqtt").await {
        Ok(l) => Ok(l),
        Err(e) if addr == DEFAULT_MQTT => {
            tracing::warn!(error = %e, "the standard MQTT port is taken; the demo uses a free port instead");
            bind("127.0.0.1:0", "MQTT", "--mqtt").await
        }
        Err(e) => Err(e),
    }
}

async fn serve_with(
    config: Config,
    listener: TcpListener,
    mqtt_listener: Option<TcpListener>,
    ws_listener: Option<TcpListener>,
    data_dir: &Path,
    banner: Option<String>,
) -> anyhow::Result<()> {
    prepare_data_dir(data_dir)?;
    let local = listener
        .local_addr()
        .context("cannot read the HTTP listener's address")?;
    let runtime = Arc::new(Runtime::start(&config, Some(data_dir)).with_context(|| {
        format!(
            "cannot start the historian in {}",
            data_dir.join("historian").display()
        )
    })?);
    // The broker runs when any MQTT listener is on; it is also served at /mqtt over WebSocket.
    // Retained messages and persistent sessions live in <data-dir>/mqtt.
    let broker = if mqtt_listener.is_some() || ws_listener.is_some() {
        let m = &config.mqtt;
        let broker_cfg = ironplant_mqtt::BrokerConfig {
            state_dir: Some(data_dir.join("mqtt")),
            max_packet_size: m.max_packet_size,
            max_queue: m.max_queue,
            max_session_queue: m.max_session_queue,
            overflow: if m.disconnect_slow_clients {
                ironplant_mqtt::Overflow::Disconnect
            } else {
                ironplant_mqtt::Overflow::DropNewest
            },
            max_inflight: m.max_inflight,
            max_session_expiry: u32::try_from(m.max_session_expiry.as_secs()).unwrap_or(u32::MAX),
            sys_interval: m.sys_interval,
            ..ironplant_mqtt::BrokerConfig::default()
        };
        let broker =
            ironplant_mqtt::Broker::open(broker_cfg, Arc::new(ironplant_mqtt::auth::AllowAll))
                .context("cannot open the MQTT broker's state (retained messages and sessions)")?;
        runtime.metrics.attach_broker(broker.clone());
        Some(broker)
    } else {
        None
    };
    let state = Arc::new(ApiState {
        runtime: runtime.clone(),
        started: Instant::now(),
        mqtt: broker.clone(),
        security: None,
    });
    if let Some(b) = banner {
        println!("{b}");
    }
    println!(
        "Ironplant is running: {} tags from {} device(s)",
        runtime.namespace.len(),
        config.devices.len()
    );
    println!("  HTTP API:  http://{local}/api/v1/tags");
    println!("  Assets:    http://{local}/api/v1/assets");
    println!("  Metrics:   http://{local}/metrics");
    println!("  Health:    http://{local}/healthz");
    // Kept until shutdown; dropping a bridge stops it (its queue stays on disk).
    let mut _bridges = Vec::new();
    let mut sparkplug = None;
    if let Some(broker) = &broker {
        if config.sparkplug.enabled {
            let host =
                ironplant_runtime::sparkplug::start(broker.clone(), &runtime, &config.sparkplug)
                    .context(
                    "cannot start the Sparkplug host application; check [sparkplug] in the config",
                )?;
            sparkplug = Some(host);
        }
        ironplant_runtime::uns::attach(
            broker.clone(),
            &runtime.bus,
            runtime.namespace.clone(),
            &config.mqtt.uns_prefix,
        );
        _bridges = ironplant_runtime::bridges::start(broker, &config.bridges, data_dir)
            .await
            .context("cannot start the MQTT bridges")?;
        runtime.metrics.attach_bridges(&_bridges);
        for b in &config.bridges {
            println!(
                "  Bridge:    {} <-> mqtt://{} (queue in {})",
                b.name,
                b.address,
                data_dir.join("bridge").join(&b.name).display()
            );
        }
    } else if !config.bridges.is_empty() {
        tracing::warn!("[[bridge]] sections are ignored: the MQTT broker is off (--mqtt off)");
    }
    if let (Some(l), Some(broker)) = (mqtt_listener, broker.clone()) {
        let addr = l
            .local_addr()
            .context("cannot read the MQTT listener's address")?;
        tokio::spawn(async move {
            if let Err(e) = broker.serve(l).await {
                tracing::error!(error = %e, "MQTT listener failed");
            }
        });
        println!("  MQTT:      mqtt://{addr} (live values on each tag path, e.g. mosquitto_sub -h {} -p {} -t 'acme/#' -v)", addr.ip(), addr.port());
        if let Some(host) = &sparkplug {
            let under = config.sparkplug.prefix.as_ref().map_or_else(
                || "<group>/<node>/<device>/<metric>".to_owned(),
                |p| format!("{p}/<group>/<node>/<device>/<metric>"),
            );
            println!("  Sparkplug: host application on spBv1.0/# (STATE {}); edge nodes' metrics become tags {under}", host.state_topic());
        }
        tracing::warn!(mqtt = %addr, "MQTT listener is plain TCP without authentication (TLS and ACLs come with the security work); keep it on a trusted interface");
    }
    if let Some(broker) = broker.clone() {
        println!(
            "  MQTT/WS:   ws://{local}{} (browsers and web HMIs: MQTT over WebSocket, subprotocol mqtt)",
            ironplant_api::mqtt_ws::PATH
        );
        if let Some(l) = ws_listener {
            let addr = l
                .local_addr()
                .context("cannot read the MQTT over WebSocket listener's address")?;
            tokio::spawn(async move {
                let served =
                    ironplant_api::mqtt_ws::serve_dedicated(l, broker, std::future::pending())
                        .await;
                if let Err(e) = served {
                    tracing::error!(error = %e, "MQTT over WebSocket listener failed");
                }
            });
            println!("  MQTT/WS:   ws://{addr}/ (dedicated listener, any path)");
        }
    }
    println!("Press Ctrl-C to stop.");
    tracing::info!(http = %local, data_dir = %data_dir.display(), "platform started");
    let served = ironplant_api::serve(listener, state, shutdown_signal()).await;
    if let Some(host) = sparkplug {
        host.shutdown();
    }
    // Flush the historian even if the HTTP server failed: acknowledged data is in the WAL
    // anyway, but a clean close leaves nothing to replay.
    tokio::task::block_in_place(|| {
        // Retained messages and persistent sessions are saved for the next start.
        if let Some(b) = &broker {
            b.close();
        }
        runtime.shutdown();
    });
    served.context("HTTP server failed")?;
    Ok(())
}

/// Starts the simulator, then the platform on the bundled config pointed at it.
pub async fn demo(
    sim_listen: SocketAddr,
    seed: u64,
    http: &str,
    mqtt: Option<&str>,
    mqtt_ws: Option<&str>,
    data_dir: &Path,
) -> anyhow::Result<()> {
    let sim = bind(&sim_listen.to_string(), "the simulator", "--sim-listen").await?;
    let sim_addr = sim
        .local_addr()
        .context("cannot read the simulator's address")?;
    let (readings_tx, readings) = tokio::sync::watch::channel(ironplant_sim::Readings::default());
    tokio::spawn(async move {
        if let Err(e) = ironplant_sim::run_with(sim, seed, Some(readings_tx)).await {
            tracing::error!(error = %e, "simulator stopped");
        }
    });
    let text = BOTTLING_CONFIG.replace("127.0.0.1:5020", &sim_addr.to_string());
    let config = ironplant_core::config::parse("examples/bottling.toml (bundled)", &text)
        .map_err(|e| anyhow::anyhow!("the bundled demo config is invalid:\n{e}"))?;
    prepare_data_dir(data_dir)?;
    let saved = data_dir.join("demo.toml");
    std::fs::write(&saved, &text).with_context(|| format!("cannot write {}", saved.display()))?;
    let mut banner = format!(
        "Simulated bottling line (Modbus TCP) on {sim_addr}; its config is saved in {}",
        saved.display()
    );
    let listener = bind(http, "HTTP", "--http").await?;
    let mqtt_listener = match mqtt {
        Some(addr) => Some(bind_demo_mqtt(addr).await?),
        None => None,
    };
    let ws_listener = bind_mqtt_ws(mqtt_ws).await?;
    if let Some(l) = &mqtt_listener {
        let addr = l
            .local_addr()
            .context("cannot read the MQTT listener's address")?;
        let edge = ironplant_sim::sparkplug::EdgeSettings {
            broker: addr.to_string(),
            ..Default::default()
        };
        banner.push_str(&sparkplug_banner(&edge, config.sparkplug.prefix.as_ref()));
        spawn_edge_node(edge, readings);
    }
    serve_with(
        config,
        listener,
        mqtt_listener,
        ws_listener,
        data_dir,
        Some(banner),
    )
    .await
}

/// The banner line about the simulator's Sparkplug edge node.
fn sparkplug_banner(
    edge: &ironplant_sim::sparkplug::EdgeSettings,
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
        "\nSparkplug B edge node {}/{} (device {}) publishes to mqtt://{}; its tags appear under {under} (e.g. GET /api/v1/tags?prefix={under})",
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

/// Runs the simulator alone until Ctrl-C; with `sparkplug_broker`, also its Sparkplug B edge
/// node, connected to that broker (retrying until it is up).
pub async fn simulate(
    listen: SocketAddr,
    seed: u64,
    sparkplug_broker: Option<&str>,
) -> anyhow::Result<()> {
    let listener = bind(&listen.to_string(), "the simulator", "--listen").await?;
    let addr = listener
        .local_addr()
        .context("cannot read the simulator's address")?;
    println!("Simulated bottling line listening on {addr} (Modbus TCP, units 1 and 2)");
    let (readings_tx, readings) = tokio::sync::watch::channel(ironplant_sim::Readings::default());
    if let Some(broker) = sparkplug_broker {
        let edge = ironplant_sim::sparkplug::EdgeSettings {
            broker: broker.to_owned(),
            ..Default::default()
        };
        println!(
            "{}",
            sparkplug_banner(&edge, None).trim_start().replace(
                "its tags appear under",
                "(retrying until the broker is up); with `ironplant serve` its tags appear under"
            )
        );
        spawn_edge_node(edge, readings);
    }
    tokio::select! {
        res = ironplant_sim::run_with(listener, seed, Some(readings_tx)) => res.context("simulator failed")?,
        () = shutdown_signal() => {},
    }
    Ok(())
}
