//! `ironplant`: the command-line entry point. Thin: parses arguments, sets up logging, and calls
//! into the library crates.

mod admin;
mod attack;
mod import;
mod opcua;
mod query;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use ironplant_server::platform;

/// Ironplant: an industrial IoT platform in one binary — connect PLCs and sensors, see live values.
#[derive(Parser)]
#[command(
    name = "ironplant",
    version,
    about,
    long_about = None,
    after_help = "Examples:\n  ironplant demo\n  ironplant serve --config ironplant.toml --http 0.0.0.0:8080 --tls-name plant.example\n  ironplant check --config ironplant.toml\n  ironplant device enroll press-4\n  ironplant token create --user admin --role viewer --expires 7d\n\n`ironplant COMMAND --help` shows a command's own flags and an example."
)]
struct Cli {
    /// Log output format (logs go to stderr; RUST_LOG sets the level, default info).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// Where the platform's data lives (every command that reads or writes it).
#[derive(Args, Clone)]
struct DataDir {
    /// Directory for the platform's data.
    #[arg(long, default_value = "ironplant-data", value_name = "DIR")]
    data_dir: PathBuf,
}

/// The data directory for a group of administration commands (given before or after the
/// subcommand: `ironplant device enroll NAME --data-dir DIR`).
#[derive(Args, Clone)]
struct AdminDataDir {
    /// Directory of the platform's data (its security state is in DIR/security).
    #[arg(
        long,
        global = true,
        default_value = "ironplant-data",
        value_name = "DIR"
    )]
    data_dir: PathBuf,
}

/// The flags of a running platform (`serve`, `demo`).
#[derive(Args)]
struct ServerArgs {
    /// Address of the HTTP API, served over HTTPS with a certificate from the built-in CA
    /// (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    http: String,
    /// Serve the API over plain HTTP instead of HTTPS (passwords and tokens then cross the
    /// network in clear: only on loopback or behind a TLS-terminating proxy).
    #[arg(long)]
    insecure_http: bool,
    /// Extra host name or IP address clients use to reach this platform, for the server
    /// certificate (loopback and the listen addresses are always in it); repeatable.
    /// Example: --tls-name plant.example --tls-name 10.0.0.5
    #[arg(long, value_name = "NAME")]
    tls_name: Vec<String>,
    /// Your own server certificate chain (PEM) for HTTPS and MQTT over TLS, instead of one
    /// issued by the built-in CA; needs --tls-key. Device certificates are still checked
    /// against the built-in CA.
    /// Example: --tls-cert /etc/ironplant/server.crt --tls-key /etc/ironplant/server.key
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Address of the MQTT over TLS listener (the Unified Namespace: every tag's value,
    /// retained, on its path). Clients log in with a device certificate, or a user name and
    /// password or API token. `off` disables it; port 0 picks a free port.
    #[arg(
        long,
        env = "IRONPLANT_MQTTS",
        default_value = platform::DEFAULT_MQTTS,
        value_name = "ADDR"
    )]
    mqtts: String,
    /// Address of a plain-text MQTT listener, off by default (e.g. 127.0.0.1:1883 for an old
    /// device on loopback). Clients still log in; their credentials travel in clear.
    #[arg(
        long,
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
        env = "IRONPLANT_MQTT_WS",
        default_value = "off",
        value_name = "ADDR"
    )]
    mqtt_ws: String,
    #[command(flatten)]
    data: DataDir,
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
        after_help = "Example:\n  ironplant demo --http 127.0.0.1:18080\n  # then follow the printed login line, e.g.\n  curl --cacert ironplant-data/security/ca/ca.crt \\\n      -u \"admin:$(sed -n 's/^password: //p' ironplant-data/security/initial-admin-password)\" https://127.0.0.1:18080/api/v1/tags"
    )]
    Demo {
        /// Address for the simulator's Modbus TCP server (port 0 picks a free port).
        #[arg(long, default_value = "127.0.0.1:0", value_name = "ADDR")]
        sim_listen: SocketAddr,
        /// Random seed of the simulated plant.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Address of the platform's OPC UA server: the Unified Namespace over OPC UA
        /// (SignAndEncrypt, users of the platform, writes through the command path). `off`
        /// disables it; port 0 picks a free port.
        #[arg(
            long,
            default_value = "127.0.0.1:4840",
            value_name = "ADDR",
            env = "IRONPLANT_OPCUA"
        )]
        opcua: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Run the platform with a configuration file.
    #[command(
        after_help = "Example:\n  ironplant serve --config ironplant.toml --http 0.0.0.0:8080"
    )]
    Serve {
        /// The configuration file (TOML).
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Run the simulated bottling line as a Modbus TCP server (units 1 and 2) and a Sparkplug B
    /// edge node (group bottling, node sim-edge, device line1) publishing to an MQTT broker.
    #[command(
        after_help = "Examples (the platform on this machine, same data directory):\n  ironplant simulate &\n  ironplant serve --config examples/bottling.toml\n  # its Sparkplug tags appear under acme/lyon/bottling/line1/edge in GET /api/v1/tags\n\n  ironplant simulate --sparkplug-broker off            # Modbus only\n  ironplant simulate --sparkplug-bundle edge           # a bundle from `ironplant device enroll sim-edge --out edge`\n  ironplant simulate --sparkplug-broker 127.0.0.1:1883 --sparkplug-plain   # a test broker without TLS"
    )]
    Simulate {
        /// Address to listen on (port 0 picks a free port; the bound address is printed).
        #[arg(long, default_value = "127.0.0.1:5020", value_name = "ADDR")]
        listen: SocketAddr,
        /// Random seed of the simulated plant.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// MQTT broker (`host:port`) the simulator's Sparkplug B edge node publishes to, by
        /// default the platform's MQTT over TLS listener; it reconnects until the broker is up.
        /// `off` disables the edge node.
        #[arg(long, default_value = platform::DEFAULT_MQTTS, value_name = "ADDR")]
        sparkplug_broker: String,
        /// Directory with the edge node's enrolled certificate bundle (`sim-edge.crt`,
        /// `sim-edge.key`, `ca.crt`, as written by `ironplant device enroll sim-edge --out DIR`).
        /// Without it, the edge node uses the certificate the platform keeps for the simulator
        /// in <data-dir>/demo-edge (shared with `ironplant demo`; enrolled on first use).
        #[arg(long, value_name = "DIR", conflicts_with = "sparkplug_plain")]
        sparkplug_bundle: Option<PathBuf>,
        /// Connect the edge node in plain text and anonymously (a third-party test broker); a
        /// secured Ironplant platform refuses that.
        #[arg(long)]
        sparkplug_plain: bool,
        #[command(flatten)]
        data: DataDir,
    },
    /// Validate a configuration file and report every error with line and column.
    #[command(after_help = "Example:\n  ironplant check --config ironplant.toml")]
    Check {
        /// The configuration file (TOML).
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
    },
    /// Query the historian: raw samples, aggregates over intervals, or the value at an instant.
    #[command(after_help = query::AFTER_HELP)]
    Query(query::QueryArgs),
    /// Import history into the historian: CSV or Parquet as `query` exports it, or wide CSV.
    #[command(after_help = import::AFTER_HELP)]
    Import(import::ImportArgs),
    /// Enrol, revoke and list devices (client certificates from the built-in CA).
    #[command(
        after_help = "Examples:\n  ironplant device enroll press-4 --out ./press-4\n  ironplant device revoke press-4\n  ironplant device list --data-dir /var/lib/ironplant"
    )]
    Device {
        #[command(flatten)]
        data: AdminDataDir,
        #[command(subcommand)]
        command: admin::DeviceCommand,
    },
    /// Browse OPC UA servers and decide which server certificates to trust.
    #[command(
        after_help = "Examples:\n  ironplant opcua browse opc.tcp://plc-7:4840/\n  ironplant opcua certificates\n  ironplant opcua trust 5246F240C1D2E3F4"
    )]
    Opcua {
        #[command(flatten)]
        data: AdminDataDir,
        #[command(subcommand)]
        command: opcua::OpcuaCommand,
    },
    /// Add users, set their passwords, list them.
    #[command(
        after_help = "Examples:\n  ironplant user add alice --role operator\n  ironplant user passwd alice\n  ironplant user list"
    )]
    User {
        #[command(flatten)]
        data: AdminDataDir,
        #[command(subcommand)]
        command: admin::UserCommand,
    },
    /// Create, revoke and list API tokens.
    #[command(
        after_help = "Examples:\n  ironplant token create --user alice --role viewer --expires 30d\n  ironplant token list\n  ironplant token revoke 3f2a9c0d"
    )]
    Token {
        #[command(flatten)]
        data: AdminDataDir,
        #[command(subcommand)]
        command: admin::TokenCommand,
    },
    /// Check the audit log.
    #[command(after_help = "Example:\n  ironplant audit verify --data-dir /var/lib/ironplant")]
    Audit {
        #[command(flatten)]
        data: AdminDataDir,
        #[command(subcommand)]
        command: admin::AuditCommand,
    },
    /// Attack the simulated plant, to see what the platform detects.
    #[command(
        after_help = "Examples (against `ironplant simulate`, or the address `ironplant demo` prints):\n  ironplant attack rogue-write speed_setpoint 550\n  ironplant attack rogue-write run_enable false --modbus 127.0.0.1:5020\n  ironplant attack drift tank_level --amount 8 --ramp 10m\n  ironplant attack mitm active_power --factor 0.8\n  ironplant attack forge-sparkplug --bundle ironplant-data/demo-edge\n\nrogue-write and forge-sparkplug act once; drift, step, replay, freeze and mitm run as a Modbus TCP proxy between the simulator and the platform (see their --help)."
    )]
    Attack {
        #[command(subcommand)]
        command: attack::AttackCommand,
    },
    /// List, add and remove MQTT access rules (the running platform applies changes within a
    /// second).
    #[command(
        after_help = "Examples:\n  ironplant acl list --config ironplant.toml\n  ironplant acl add 'role:viewer deny subscribe acme/lyon/recipes/#'"
    )]
    Acl {
        #[command(flatten)]
        data: AdminDataDir,
        #[command(subcommand)]
        command: admin::AclCommand,
    },
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    // The OPC UA stack logs every refused certificate and retry at warn/error; Ironplant
    // reports those itself, in one line that says what to do.
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new("info,opcua_client=off,opcua_crypto=off,opcua_core=off")
    });
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
        Command::Serve { config, server } => {
            let Some(cfg) = load_config(&config)? else {
                return Ok(ExitCode::FAILURE);
            };
            let listen = listen(&server);
            runtime()?.block_on(platform::serve(cfg, &listen, &server.data.data_dir, None))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo {
            sim_listen,
            seed,
            opcua,
            server,
        } => {
            let listen = listen(&server);
            let opcua = (opcua != "off").then_some(opcua);
            runtime()?.block_on(platform::demo(
                sim_listen,
                seed,
                opcua.as_deref(),
                &listen,
                &server.data.data_dir,
            ))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Simulate {
            listen,
            seed,
            sparkplug_broker,
            sparkplug_bundle,
            sparkplug_plain,
            data,
        } => {
            let edge = match (off(&sparkplug_broker), sparkplug_bundle, sparkplug_plain) {
                (None, _, _) => platform::SimEdge::Off,
                (Some(b), Some(dir), _) => platform::SimEdge::Bundle(b.to_owned(), dir),
                (Some(b), None, true) => platform::SimEdge::Plain(b.to_owned()),
                (Some(b), None, false) => platform::SimEdge::DataDir(b.to_owned(), data.data_dir),
            };
            runtime()?.block_on(platform::simulate(listen, seed, edge))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Query(args) => query::run(args),
        Command::Import(args) => import::run(args),
        Command::Device { data, command } => admin::device(command, &data.data_dir),
        Command::User { data, command } => admin::user(command, &data.data_dir),
        Command::Token { data, command } => admin::token(command, &data.data_dir),
        Command::Audit { data, command } => admin::audit(command, &data.data_dir),
        Command::Acl { data, command } => admin::acl(command, &data.data_dir),
        Command::Attack { command } => attack::run(command),
        Command::Opcua { data, command } => opcua::run(command, &data.data_dir),
    }
}

fn off(addr: &str) -> Option<&str> {
    (addr != "off").then_some(addr)
}

fn listen(server: &ServerArgs) -> platform::Listen<'_> {
    platform::Listen {
        http: &server.http,
        insecure_http: server.insecure_http,
        mqtts: off(&server.mqtts),
        mqtt: off(&server.mqtt),
        mqtt_ws: off(&server.mqtt_ws),
        tls_names: &server.tls_name,
        tls_cert: server.tls_cert.as_deref().zip(server.tls_key.as_deref()),
    }
}

/// Reads and validates a config file. `Ok(None)` means it was invalid and the errors were printed.
fn load_config(path: &Path) -> anyhow::Result<Option<ironplant_core::config::Config>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    match ironplant_api::settings::parse(&path.display().to_string(), &text) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    /// Every command and subcommand, with its path.
    fn walk(cmd: &clap::Command, path: String, out: &mut Vec<(String, clap::Command)>) {
        for sub in cmd.get_subcommands() {
            let p = format!("{path} {}", sub.get_name());
            walk(sub, p.clone(), out);
            out.push((p, sub.clone()));
        }
    }

    /// The attacks that can be switched inside a running demo through its API (`--demo`,
    /// `attack stop`): API clients, with the demo's address and data directory.
    fn demo_attack(path: &str) -> bool {
        path.strip_prefix("ironplant attack ")
            .is_some_and(|a| matches!(a, "drift" | "step" | "replay" | "freeze" | "mitm" | "stop"))
    }

    fn long_flags(cmd: &clap::Command) -> Vec<String> {
        cmd.get_arguments()
            .filter_map(|a| a.get_long().map(str::to_owned))
            .collect()
    }

    #[test]
    fn every_command_has_an_example_and_only_its_own_flags() {
        let mut root = Cli::command();
        root.build(); // propagates global flags into the subcommands

        let mut all = Vec::new();
        walk(&root, "ironplant".into(), &mut all);
        assert!(all.len() > 20, "{}", all.len());
        for (path, cmd) in &all {
            // `help` is clap's; hidden commands are internal.
            if path.split(' ').any(|w| w == "help") || cmd.is_hide_set() {
                continue;
            }
            let help = cmd
                .get_after_help()
                .map(ToString::to_string)
                .unwrap_or_default();
            assert!(
                help.contains("Example") && help.contains("ironplant "),
                "{path} has no example in its --help"
            );
            let flags = long_flags(cmd);
            let server = path == "ironplant serve" || path == "ironplant demo";
            let client = server || path == "ironplant query" || demo_attack(path);
            for (f, owners) in [
                ("mqtts", server),
                ("mqtt", server),
                ("mqtt-ws", server),
                ("tls-cert", server),
                ("tls-name", server),
                ("http", client),
                ("insecure-http", client),
            ] {
                assert_eq!(
                    flags.iter().any(|x| x == f),
                    owners,
                    "{path}: --{f} {}",
                    if owners {
                        "missing"
                    } else {
                        "shown but not used"
                    }
                );
            }
        }
        // Only the commands that use a data directory offer one.
        for (path, cmd) in &all {
            let has = long_flags(cmd).iter().any(|f| f == "data-dir");
            let top = path.split(' ').nth(1).unwrap_or_default();
            let uses = matches!(
                top,
                "serve"
                    | "demo"
                    | "simulate"
                    | "query"
                    | "import"
                    | "device"
                    | "user"
                    | "token"
                    | "audit"
                    | "acl"
                    | "opcua"
            );
            let uses = uses || demo_attack(path);
            if !path.split(' ').any(|w| w == "help") && !cmd.has_subcommands() {
                assert_eq!(has, uses, "{path}: --data-dir");
            }
        }
    }
}
