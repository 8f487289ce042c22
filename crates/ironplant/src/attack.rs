//! `ironplant attack ...`: attacks on the simulated plant, to see what the platform detects.
//! Each runs stand-alone against a running `ironplant simulate` (or the simulator `ironplant
//! demo` starts): a rogue Modbus write, a Modbus TCP proxy that bends values on the wire
//! between the simulator and the platform, or a forged Sparkplug B node; `--demo` switches a
//! data-level attack inside a running `ironplant demo` through its API, `attack stop` ends it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use ironplant_server::platform;
use ironplant_sim::attack::{AttackControl, ForgeSettings, Scenario};

/// How the proxy attacks sit between the simulator and the platform.
const PROXY_HELP: &str = "The attack runs as a Modbus TCP proxy between the simulator and the platform (a man in the middle), so the platform must poll the proxy. examples/bottling.toml polls 127.0.0.1:5020: move the simulator to 127.0.0.1:5021 and the proxy takes its place (the defaults of --listen and --upstream):\n  ironplant simulate --listen 127.0.0.1:5021 &\n  ironplant serve --config examples/bottling.toml &\n  ironplant attack ...\nThe attack's clock starts with the proxy, which runs until Ctrl-C.\n\nWith --demo the attack is switched on inside a running `ironplant demo` through its API instead (no proxy; an engineer or admin token in IRONPLANT_TOKEN), until `ironplant attack stop`:\n  IRONPLANT_TOKEN=$(ironplant token create --user admin --role admin --expires 1h) \\\n      ironplant attack drift tank_level --amount 8 --demo";

#[derive(Subcommand)]
pub enum AttackCommand {
    /// Write a command point of the simulator from a second Modbus connection, as a rogue
    /// engineering station would: a change no authorised command explains.
    #[command(
        after_help = "Example:\n  ironplant attack rogue-write speed_setpoint 550 --modbus 127.0.0.1:5020\n\nPoints: run_enable, fault_reset, speed_setpoint, pump_enable, level_setpoint."
    )]
    RogueWrite {
        /// The command point, by its name in the simulator's register map.
        point: String,
        /// The value in engineering units: true/false for a coil, a number for a register.
        value: String,
        /// The simulator's Modbus TCP address.
        #[arg(long, default_value = "127.0.0.1:5020", value_name = "ADDR")]
        modbus: SocketAddr,
    },
    /// False-data injection, slow: add an offset to a sensor that grows from 0 to --amount
    /// over --ramp, keeping the sensor's noise and range (a range check alone sees nothing).
    #[command(after_help = format!("Example:\n  ironplant attack drift tank_level --amount 8 --ramp 10m\n\n{PROXY_HELP}\n\n{}", signals()))]
    Drift {
        /// The sensor, by its name in the simulator's register map.
        signal: String,
        /// The final offset, in the sensor's engineering unit (at most half its range).
        #[arg(long, allow_negative_numbers = true)]
        amount: f64,
        /// Time to reach the full offset.
        #[arg(long, default_value = "10m")]
        ramp: humantime::Duration,
        #[command(flatten)]
        common: ProxyArgs,
    },
    /// False-data injection, sudden: add --amount to a sensor from --start on.
    #[command(after_help = format!("Example:\n  ironplant attack step line_pressure --amount 0.3 --start 30s\n\n{PROXY_HELP}\n\n{}", signals()))]
    Step {
        /// The sensor, by its name in the simulator's register map.
        signal: String,
        /// The offset, in the sensor's engineering unit (at most half its range).
        #[arg(long, allow_negative_numbers = true)]
        amount: f64,
        #[command(flatten)]
        common: ProxyArgs,
    },
    /// Replay: record --record of the signals as the platform polls them, then play the
    /// recording back in a loop instead of the live values.
    #[command(after_help = format!("Examples:\n  ironplant attack replay all --record 60s\n  ironplant attack replay tank_level inflow outflow --record 2m\n\n{PROXY_HELP}\n\n{}", signals()))]
    Replay {
        /// The signals to replay, or `all`.
        #[arg(required = true)]
        signals: Vec<String>,
        /// How long to record before the replay starts (at most 1h).
        #[arg(long, default_value = "60s")]
        record: humantime::Duration,
        #[command(flatten)]
        common: ProxyArgs,
    },
    /// Sensor freeze: from --start on, the last value shown holds, bit for bit.
    #[command(after_help = format!("Example:\n  ironplant attack freeze motor_current\n\n{PROXY_HELP}\n\n{}", signals()))]
    Freeze {
        /// The sensor, by its name in the simulator's register map.
        signal: String,
        #[command(flatten)]
        common: ProxyArgs,
    },
    /// Man in the middle: a Modbus TCP proxy that multiplies a register's value by --factor in
    /// every read answer; writes and everything else pass unchanged.
    #[command(after_help = format!("Example:\n  ironplant attack mitm active_power --factor 0.8\n\n{PROXY_HELP}\n\n{}", signals()))]
    Mitm {
        /// The point, by its name in the simulator's register map.
        point: String,
        /// The scale applied (0.8 shows 80 % of the true value).
        #[arg(long)]
        factor: f64,
        #[command(flatten)]
        common: ProxyArgs,
    },
    /// Stop an attack running inside `ironplant demo` (by its label, e.g. `step:line_pressure`,
    /// by its kind, e.g. `step`, or `all`), through its API.
    #[command(
        after_help = "Example:\n  IRONPLANT_TOKEN=$(ironplant token create --user admin --role admin --expires 1h)\n  ironplant attack step line_pressure --amount 0.3 --demo\n  ironplant attack stop step:line_pressure"
    )]
    Stop {
        /// The attack's label, its kind, or `all`.
        name: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// A forged Sparkplug B node: connect to the broker with another node's stolen credentials
    /// and publish data in its name (its group, node and device) with plausible values but a
    /// fresh seq (and, with --birth-bd-seq, a forged birth with a guessed bdSeq).
    #[command(
        after_help = "Examples:\n  # the simulator's edge node certificate, as `ironplant demo` or `simulate` keeps it:\n  ironplant attack forge-sparkplug --bundle ironplant-data/demo-edge --broker 127.0.0.1:8883\n  # a plain broker with a stolen user name and password:\n  ironplant attack forge-sparkplug --plain --broker 127.0.0.1:1883 --user sim-edge --password s3cret --messages 20 --interval 100ms"
    )]
    ForgeSparkplug {
        /// The MQTT broker, `host:port`.
        #[arg(long, default_value = platform::DEFAULT_MQTTS, value_name = "ADDR")]
        broker: String,
        /// The stolen certificate bundle of the node (`sim-edge.crt`, `sim-edge.key`,
        /// `ca.crt`), presented over TLS.
        #[arg(long, value_name = "DIR", conflicts_with = "plain")]
        bundle: Option<PathBuf>,
        /// Connect in plain text (a broker without TLS).
        #[arg(long)]
        plain: bool,
        /// A stolen user name (with --password).
        #[arg(long, requires = "password")]
        user: Option<String>,
        #[arg(long, requires = "user")]
        password: Option<String>,
        /// The impersonated node's Sparkplug group, node and device.
        #[arg(long, default_value = "bottling")]
        group: String,
        #[arg(long, default_value = "sim-edge")]
        node: String,
        #[arg(long, default_value = "line1")]
        device: String,
        /// MQTT client id (default `<node>-<group>-2`).
        #[arg(long)]
        client_id: Option<String>,
        /// DDATA messages to publish.
        #[arg(long, default_value_t = 10)]
        messages: usize,
        /// Time between them.
        #[arg(long, default_value = "200ms")]
        interval: humantime::Duration,
        /// First publish a forged NBIRTH + DBIRTH with this guessed bdSeq.
        #[arg(long, value_name = "N")]
        birth_bd_seq: Option<u8>,
        /// Seed of the forger's own simulated plant (where its values come from).
        #[arg(long, default_value_t = 666)]
        seed: u64,
    },
}

/// The signals a data-level attack can bend, for the help texts.
fn signals() -> String {
    let names: Vec<&str> = ironplant_sim::attack::scenario::attackable()
        .map(|d| d.name)
        .collect();
    format!("Signals: {}.", names.join(", "))
}

/// The proxy attacks' addresses and start.
#[derive(Args)]
pub struct ProxyArgs {
    /// Address the proxy listens on (the address the platform polls).
    #[arg(long, default_value = "127.0.0.1:5020", value_name = "ADDR")]
    listen: SocketAddr,
    /// The simulator's (the PLC's) Modbus TCP address.
    #[arg(long, default_value = "127.0.0.1:5021", value_name = "ADDR")]
    upstream: SocketAddr,
    /// Delay before the attack takes effect (a replay starts recording then).
    #[arg(long, default_value = "0s")]
    start: humantime::Duration,
    /// Switch the attack on inside a running `ironplant demo` instead, through its API (its
    /// simulator bends the values; no proxy): needs an engineer or admin token.
    #[arg(long)]
    demo: bool,
    #[command(flatten)]
    api: ApiArgs,
}

/// How `--demo` and `attack stop` reach the demo's API.
#[derive(Args)]
pub struct ApiArgs {
    /// The demo's API address (HOST:PORT, or an http:// / https:// URL).
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    http: String,
    /// The demo serves plain HTTP (started with --insecure-http).
    #[arg(long)]
    insecure_http: bool,
    /// An engineer or admin API token (`ironplant token create --user admin --role admin`).
    #[arg(
        long,
        env = "IRONPLANT_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,
    /// The demo's data directory (its CA certificate, to verify the API's).
    #[arg(long, default_value = "ironplant-data", value_name = "DIR")]
    data_dir: PathBuf,
}

impl ApiArgs {
    /// `method` on the demo's attacks API: the answer's JSON, or an error saying why.
    fn call(
        &self,
        method: &str,
        target: &str,
        json: Option<&str>,
    ) -> anyhow::Result<serde_json::Value> {
        let (addr, host, plain) = crate::query::api_address(&self.http, self.insecure_http)?;
        let token = self.token.clone().context(
            "no API token: create one with `ironplant token create --user admin --role admin` and pass it in IRONPLANT_TOKEN",
        )?;
        let client = crate::query::ApiClient::with(None, Some(token), plain, &self.data_dir)?;
        let (status, body) =
            crate::query::http_request(addr, &host, &client, method, target, json)?;
        let value: serde_json::Value =
            serde_json::from_str(&body).unwrap_or(serde_json::Value::Null);
        if !(200..300).contains(&status) {
            let why = value["error"]["message"].as_str().unwrap_or(body.as_str());
            anyhow::bail!(
                "the demo at {host} refused ({status}): {why}{}",
                if status == 404 {
                    " (only `ironplant demo` has a simulator to switch; against `simulate` + `serve` use the proxy, without --demo)"
                } else {
                    ""
                }
            );
        }
        Ok(value)
    }
}

pub fn run(command: AttackCommand) -> anyhow::Result<ExitCode> {
    let secs = |d: humantime::Duration| std::time::Duration::from(d).as_secs_f64();
    let (scenario, common) = match command {
        AttackCommand::RogueWrite {
            point,
            value,
            modbus,
        } => return rogue_write(point, value, modbus),
        AttackCommand::Stop { name, api } => {
            let v = api.call(
                "DELETE",
                &format!("/api/v1/simulator/attacks/{}", encode_segment(&name)),
                None,
            )?;
            println!("stopped in the demo: {}", v);
            return Ok(ExitCode::SUCCESS);
        }
        AttackCommand::ForgeSparkplug {
            broker,
            bundle,
            plain,
            user,
            password,
            group,
            node,
            device,
            client_id,
            messages,
            interval,
            birth_bd_seq,
            seed,
        } => {
            let settings = ForgeSettings {
                broker,
                group_id: group,
                edge_node_id: node,
                device_id: device,
                client_id,
                messages,
                interval: interval.into(),
                birth: birth_bd_seq,
                seed,
            };
            let credentials = user.zip(password);
            return forge(&settings, bundle, plain, credentials);
        }
        AttackCommand::Drift {
            signal,
            amount,
            ramp,
            common,
        } => (
            Scenario::Drift {
                signal,
                amount,
                ramp_s: secs(ramp),
                start_s: secs(common.start),
            },
            common,
        ),
        AttackCommand::Step {
            signal,
            amount,
            common,
        } => (
            Scenario::Step {
                signal,
                amount,
                start_s: secs(common.start),
            },
            common,
        ),
        AttackCommand::Replay {
            signals,
            record,
            common,
        } => (
            Scenario::Replay {
                signals,
                record_s: secs(record),
                start_s: secs(common.start),
            },
            common,
        ),
        AttackCommand::Freeze { signal, common } => (
            Scenario::Freeze {
                signal,
                start_s: secs(common.start),
            },
            common,
        ),
        AttackCommand::Mitm {
            point,
            factor,
            common,
        } => (
            Scenario::Mitm {
                signal: point,
                factor,
                start_s: secs(common.start),
            },
            common,
        ),
    };
    if common.demo {
        let json = serde_json::to_string(&scenario).context("the scenario as JSON")?;
        let v = common
            .api
            .call("POST", "/api/v1/simulator/attacks", Some(&json))?;
        println!(
            "attack {} switched on in the demo's simulator (stop it with `ironplant attack stop {}`)",
            v["label"].as_str().unwrap_or("?"),
            v["label"].as_str().unwrap_or("all")
        );
        return Ok(ExitCode::SUCCESS);
    }
    proxy(scenario, &common)
}

/// A path segment with the characters a URL cannot carry as such percent-encoded.
fn encode_segment(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b':') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn rogue_write(point: String, value: String, modbus: SocketAddr) -> anyhow::Result<ExitCode> {
    let value = match value.as_str() {
        "true" | "on" => ironplant_core::Value::Bool(true),
        "false" | "off" => ironplant_core::Value::Bool(false),
        v => {
            if let Ok(i) = v.parse::<i64>() {
                ironplant_core::Value::Int(i)
            } else if let Ok(f) = v.parse::<f64>() {
                ironplant_core::Value::Float(f)
            } else {
                anyhow::bail!(
                    "the value {v:?} is neither a number nor true/false; e.g. `ironplant attack rogue-write speed_setpoint 550`"
                );
            }
        }
    };
    let done =
        crate::runtime()?.block_on(ironplant_sim::attack::rogue_write(modbus, &point, value))?;
    println!(
        "rogue write from a second Modbus master: {} = {} at {modbus} (reads back {})",
        done.point, done.value, done.read_back
    );
    Ok(ExitCode::SUCCESS)
}

/// Runs `scenario` in a Modbus TCP proxy until Ctrl-C.
fn proxy(scenario: Scenario, common: &ProxyArgs) -> anyhow::Result<ExitCode> {
    let attacks = AttackControl::new();
    let label = attacks
        .start(scenario.clone())
        .with_context(|| format!("cannot start the {} attack", scenario.name()))?;
    crate::runtime()?.block_on(async {
        let listener = tokio::net::TcpListener::bind(common.listen)
            .await
            .with_context(|| {
                format!(
                    "cannot listen on --listen {}; is the simulator still there? Move it with `ironplant simulate --listen 127.0.0.1:5021` (the proxy's default --upstream), or pick a free address",
                    common.listen
                )
            })?;
        let addr = listener.local_addr().context("cannot read the proxy's address")?;
        println!(
            "attack {label} on the wire: Modbus TCP proxy on {addr} -> {} (scenario {})",
            common.upstream,
            serde_json::to_string(&scenario).unwrap_or_default()
        );
        tokio::select! {
            res = ironplant_sim::attack::attack_proxy(listener, common.upstream, attacks) => {
                res.context("the attack proxy stopped")?;
            }
            _ = tokio::signal::ctrl_c() => println!("attack {label} stopped"),
        }
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

fn forge(
    settings: &ForgeSettings,
    bundle: Option<PathBuf>,
    plain: bool,
    credentials: Option<(String, String)>,
) -> anyhow::Result<ExitCode> {
    let report = match (bundle, plain) {
        (Some(dir), _) => {
            let connector = platform::bundle_connector(&dir, &settings.broker)?;
            crate::runtime()?.block_on(ironplant_sim::attack::forge_sparkplug(
                settings,
                connector,
                credentials,
            ))?
        }
        (None, true) => crate::runtime()?.block_on(
            ironplant_sim::attack::forge_sparkplug_plain(settings, credentials),
        )?,
        (None, false) => anyhow::bail!(
            "say which stolen identity to use: --bundle DIR (the node's certificate bundle, e.g. ironplant-data/demo-edge for the simulator's edge node), or --plain --user NAME --password SECRET for a broker without TLS"
        ),
    };
    for m in &report.messages {
        let seq = m.seq.map_or_else(|| "-".to_owned(), |s| s.to_string());
        println!("forged {} seq {seq}", m.topic);
    }
    println!(
        "{} forged messages published to {} as client {} in the name of {}/{}",
        report.messages.len(),
        settings.broker,
        report.client_id,
        settings.group_id,
        settings.edge_node_id
    );
    Ok(ExitCode::SUCCESS)
}
