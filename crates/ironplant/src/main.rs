//! `ironplant`: the command-line entry point. Thin: parses arguments, sets up logging, and calls
//! into the library crates.

mod admin;
mod bench;
mod bench_mix;
mod bench_mqtt;
mod bench_pg;
mod platform;
mod query;
mod secure;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};

/// Ironplant: an industrial IoT platform in one binary — connect PLCs and sensors, see live values.
#[derive(Parser)]
#[command(
    name = "ironplant",
    version,
    about,
    long_about = None,
    after_help = "Examples:\n  ironplant demo\n  ironplant serve --config ironplant.toml --http 0.0.0.0:8080 --tls-name plant.example\n  ironplant check --config ironplant.toml\n  ironplant device enroll press-4\n  ironplant token create --user admin --role viewer --expires 7d"
)]
struct Cli {
    /// Address of the HTTP API, served over HTTPS with a certificate from the built-in CA
    /// (port 0 picks a free port).
    #[arg(
        long,
        global = true,
        default_value = "127.0.0.1:8080",
        value_name = "ADDR"
    )]
    http: String,
    /// Serve the API over plain HTTP instead of HTTPS (passwords and tokens then cross the
    /// network in clear: only on loopback or behind a TLS-terminating proxy).
    #[arg(long, global = true)]
    insecure_http: bool,
    /// Extra host name or IP address clients use to reach this platform, for the server
    /// certificate (loopback and the listen addresses are always in it); repeatable.
    /// Example: --tls-name plant.example --tls-name 10.0.0.5
    #[arg(long, global = true, value_name = "NAME")]
    tls_name: Vec<String>,
    /// Your own server certificate chain (PEM) for HTTPS and MQTT over TLS, instead of one
    /// issued by the built-in CA; needs --tls-key. Device certificates are still checked
    /// against the built-in CA.
    /// Example: --tls-cert /etc/ironplant/server.crt --tls-key /etc/ironplant/server.key
    #[arg(long, global = true, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, global = true, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Address of the MQTT over TLS listener (the Unified Namespace: every tag's value,
    /// retained, on its path). Clients log in with a device certificate, or a user name and
    /// password or API token. `off` disables it; port 0 picks a free port.
    #[arg(
        long,
        global = true,
        env = "IRONPLANT_MQTTS",
        default_value = platform::DEFAULT_MQTTS,
        value_name = "ADDR"
    )]
    mqtts: String,
    /// Address of a plain-text MQTT listener, off by default (e.g. 127.0.0.1:1883 for an old
    /// device on loopback). Clients still log in; their credentials travel in clear.
    #[arg(
        long,
        global = true,
        env = "IRONPLANT_MQTT",
        default_value = "off",
        value_name = "ADDR"
    )]
    mqtt: String,
    /// Address of a dedicated MQTT over WebSocket listener (any path, subprotocol mqtt), for
    /// browsers that cannot reach the HTTP port; `off` (the default) disables it. MQTT over
    /// WebSocket is always served at /mqtt on the HTTP listener while the broker runs.
    /// Example: --mqtt-ws 127.0.0.1:8083
    #[arg(
        long,
        global = true,
        env = "IRONPLANT_MQTT_WS",
        default_value = "off",
        value_name = "ADDR"
    )]
    mqtt_ws: String,
    /// Directory for the platform's data.
    #[arg(
        long,
        global = true,
        default_value = "ironplant-data",
        value_name = "DIR"
    )]
    data_dir: PathBuf,
    /// Log output format (logs go to stderr; RUST_LOG sets the level, default info).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Start the simulated bottling line and the platform with the bundled config.
    #[command(
        after_help = "Example:\n  ironplant demo --http 127.0.0.1:18080\n  # then follow the printed login line, e.g.\n  curl --cacert ironplant-data/security/ca/ca.crt \\\n      -u \"admin:$(cat ironplant-data/security/initial-admin-password)\" https://127.0.0.1:18080/api/v1/tags"
    )]
    Demo {
        /// Address for the simulator's Modbus TCP server (port 0 picks a free port).
        #[arg(long, default_value = "127.0.0.1:0", value_name = "ADDR")]
        sim_listen: SocketAddr,
        /// Random seed of the simulated plant.
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
    /// Run the platform with a configuration file.
    #[command(
        after_help = "Example:\n  ironplant serve --config ironplant.toml --http 0.0.0.0:8080"
    )]
    Serve {
        /// The configuration file (TOML).
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
    },
    /// Run the simulated bottling line as a Modbus TCP server (units 1 and 2) and a Sparkplug B
    /// edge node (group bottling, node sim-edge, device line1) publishing to an MQTT broker.
    #[command(
        after_help = "Example (the platform on this machine, its edge node enrolled once):\n  ironplant device enroll sim-edge --role device --out edge\n  ironplant simulate --listen 127.0.0.1:5020 --sparkplug-broker 127.0.0.1:8883 --sparkplug-bundle edge\n  # then, in another shell: ironplant serve --config examples/bottling.toml\n  # its Sparkplug tags appear under bottling/sim-edge in GET /api/v1/tags"
    )]
    Simulate {
        /// Address to listen on (port 0 picks a free port; the bound address is printed).
        #[arg(long, default_value = "127.0.0.1:5020", value_name = "ADDR")]
        listen: SocketAddr,
        /// Random seed of the simulated plant.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// MQTT broker (`host:port`) the simulator's Sparkplug B edge node publishes to, e.g.
        /// the platform's `--mqtt` address; it reconnects until the broker is up. `off`
        /// disables the edge node.
        #[arg(long, default_value = platform::DEFAULT_MQTTS, value_name = "ADDR")]
        sparkplug_broker: String,
        /// Directory with the edge node's enrolled certificate bundle (`sim-edge.crt`,
        /// `sim-edge.key`, `ca.crt`, as written by `ironplant device enroll sim-edge --out DIR`):
        /// the edge node then connects over TLS with it. Without it, it connects in plain text
        /// and anonymously, which a secured platform refuses.
        #[arg(long, value_name = "DIR")]
        sparkplug_bundle: Option<PathBuf>,
    },
    /// Validate a configuration file and report every error with line and column.
    #[command(after_help = "Example:\n  ironplant check --config ironplant.toml")]
    Check {
        /// The configuration file (TOML).
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
    },
    /// Measure performance and print the figures.
    #[command(
        subcommand,
        after_help = "Examples:\n  ironplant bench modbus --seconds 10\n  ironplant bench bus"
    )]
    Bench(bench::BenchCommand),
    /// Query the historian: raw samples, aggregates over intervals, or the value at an instant.
    #[command(after_help = query::AFTER_HELP)]
    Query(query::QueryArgs),
    /// Enrol, revoke and list devices (client certificates from the built-in CA).
    #[command(subcommand)]
    Device(admin::DeviceCommand),
    /// Add users, set their passwords, list them.
    #[command(subcommand)]
    User(admin::UserCommand),
    /// Create, revoke and list API tokens.
    #[command(subcommand)]
    Token(admin::TokenCommand),
    /// Check the audit log.
    #[command(subcommand)]
    Audit(admin::AuditCommand),
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only for a person at a terminal; never in files, pipes or under NO_COLOR.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Check { config } => Ok(check(&config)),
        Command::Serve { ref config } => {
            let Some(cfg) = load_config(config)? else {
                return Ok(ExitCode::FAILURE);
            };
            let listen = listen(&cli);
            runtime()?.block_on(platform::serve(cfg, &listen, &cli.data_dir, None))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo { sim_listen, seed } => {
            let listen = listen(&cli);
            runtime()?.block_on(platform::demo(sim_listen, seed, &listen, &cli.data_dir))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Simulate {
            listen,
            seed,
            sparkplug_broker,
            sparkplug_bundle,
        } => {
            let broker = (sparkplug_broker != "off").then_some(sparkplug_broker.as_str());
            runtime()?.block_on(platform::simulate(
                listen,
                seed,
                broker,
                sparkplug_bundle.as_deref(),
            ))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Query(args) => query::run(args, &cli.http, cli.insecure_http, &cli.data_dir),
        Command::Device(cmd) => admin::device(cmd, &cli.data_dir),
        Command::User(cmd) => admin::user(cmd, &cli.data_dir),
        Command::Token(cmd) => admin::token(cmd, &cli.data_dir),
        Command::Audit(cmd) => admin::audit(cmd, &cli.data_dir),
        Command::Bench(cmd) => {
            runtime()?.block_on(bench::run(cmd))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn off(addr: &str) -> Option<&str> {
    (addr != "off").then_some(addr)
}

fn listen(cli: &Cli) -> platform::Listen<'_> {
    platform::Listen {
        http: &cli.http,
        insecure_http: cli.insecure_http,
        mqtts: off(&cli.mqtts),
        mqtt: off(&cli.mqtt),
        mqtt_ws: off(&cli.mqtt_ws),
        tls_names: &cli.tls_name,
        tls_cert: cli.tls_cert.as_deref().zip(cli.tls_key.as_deref()),
    }
}

/// Reads and validates a config file. `Ok(None)` means it was invalid and the errors were printed.
fn load_config(path: &Path) -> anyhow::Result<Option<ironplant_core::config::Config>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    match ironplant_core::config::parse_with(
        &path.display().to_string(),
        &text,
        Some(secure::check_acl_rule),
    ) {
        Ok(cfg) => Ok(Some(cfg)),
        Err(errors) => {
            eprintln!("{errors}");
            Ok(None)
        }
    }
}

fn check(path: &Path) -> ExitCode {
    match load_config(path) {
        Ok(Some(cfg)) => {
            println!(
                "{}: ok — {} asset(s), {} device(s), {} tag(s)",
                path.display(),
                cfg.namespace().assets().count(),
                cfg.devices.len(),
                cfg.tags.len()
            );
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
