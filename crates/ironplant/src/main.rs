//! `ironplant`: the command-line entry point. Thin: parses arguments, sets up logging, and calls
//! into the library crates.

mod bench;
mod bench_mix;
mod bench_mqtt;
mod bench_pg;
mod platform;
mod query;

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
    after_help = "Examples:\n  ironplant demo\n  ironplant serve --config ironplant.toml --http 0.0.0.0:8080\n  ironplant check --config ironplant.toml"
)]
struct Cli {
    /// Address of the HTTP API (port 0 picks a free port).
    #[arg(
        long,
        global = true,
        default_value = "127.0.0.1:8080",
        value_name = "ADDR"
    )]
    http: String,
    /// Address of the MQTT listener (the Unified Namespace: every tag's value, retained, on its
    /// path); `off` disables it; port 0 picks a free port.
    #[arg(
        long,
        global = true,
        env = "IRONPLANT_MQTT",
        default_value = platform::DEFAULT_MQTT,
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
        after_help = "Example:\n  ironplant demo --http 127.0.0.1:18080\n  curl -s 127.0.0.1:18080/api/v1/tags"
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
        after_help = "Example:\n  ironplant simulate --listen 127.0.0.1:5020 --sparkplug-broker 127.0.0.1:1883\n  # then, in another shell: ironplant serve --config examples/bottling.toml\n  # Sparkplug tags: curl -s '127.0.0.1:8080/api/v1/tags?prefix=bottling/sim-edge'"
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
        #[arg(long, default_value = platform::DEFAULT_MQTT, value_name = "ADDR")]
        sparkplug_broker: String,
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
        Command::Serve { config } => {
            let Some(cfg) = load_config(&config)? else {
                return Ok(ExitCode::FAILURE);
            };
            let mqtt = (cli.mqtt != "off").then_some(cli.mqtt.as_str());
            let mqtt_ws = (cli.mqtt_ws != "off").then_some(cli.mqtt_ws.as_str());
            runtime()?.block_on(platform::serve(
                cfg,
                &cli.http,
                mqtt,
                mqtt_ws,
                &cli.data_dir,
                None,
            ))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo { sim_listen, seed } => {
            let mqtt = (cli.mqtt != "off").then_some(cli.mqtt.as_str());
            let mqtt_ws = (cli.mqtt_ws != "off").then_some(cli.mqtt_ws.as_str());
            runtime()?.block_on(platform::demo(
                sim_listen,
                seed,
                &cli.http,
                mqtt,
                mqtt_ws,
                &cli.data_dir,
            ))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Simulate {
            listen,
            seed,
            sparkplug_broker,
        } => {
            let broker = (sparkplug_broker != "off").then_some(sparkplug_broker.as_str());
            runtime()?.block_on(platform::simulate(listen, seed, broker))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Query(args) => query::run(args, &cli.http, &cli.data_dir),
        Command::Bench(cmd) => {
            runtime()?.block_on(bench::run(cmd))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Reads and validates a config file. `Ok(None)` means it was invalid and the errors were printed.
fn load_config(path: &Path) -> anyhow::Result<Option<ironplant_core::config::Config>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    match ironplant_core::config::parse(&path.display().to_string(), &text) {
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
