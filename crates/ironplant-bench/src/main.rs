//! `ironplant-bench`: the benchmarks of Ironplant (Modbus connector, tag bus, historian against
//! PostgreSQL, MQTT broker against Mosquitto, OPC UA client against asyncua), in their own
//! binary so the product does not ship the harness. The servers they measure (and the OPC UA
//! clients) run in child processes of this same binary (hidden subcommands), built from the
//! library crates.

mod bench;

mod bench_mix;
mod bench_mqtt;
mod bench_opcua;
mod bench_pg;
mod bench_rules;

use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, ValueEnum};

/// Ironplant's benchmarks: measure performance and print the figures.
#[derive(Parser)]
#[command(
    name = "ironplant-bench",
    version,
    about,
    long_about = None,
    after_help = "Examples:\n  ironplant-bench modbus --seconds 10\n  ironplant-bench bus\n  ironplant-bench historian --no-postgres --tags 1000\n  ironplant-bench mqtt --seconds 5\n  ironplant-bench opcua --seconds 5\n\nBuild it with --release for figures worth comparing (`cargo run --release -p ironplant-bench -- mqtt`).\n`ironplant-bench COMMAND --help` shows a command's own flags and an example."
)]
struct Cli {
    /// Log output format (logs go to stderr; RUST_LOG sets the level, default info).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: bench::BenchCommand,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    // The OPC UA stack (in process for `opcua`) logs every connection and endpoint at info.
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new("info,opcua_server=warn,opcua_client=warn,opcua_core=warn")
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
    let run = || -> anyhow::Result<()> {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?
            .block_on(bench::run(cli.command))
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
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
        walk(&root, "ironplant-bench".into(), &mut all);
        let shown: Vec<&str> = all
            .iter()
            .filter(|(p, c)| !c.is_hide_set() && !p.split(' ').any(|w| w == "help"))
            .map(|(p, _)| p.as_str())
            .collect();
        assert_eq!(
            shown,
            [
                "ironplant-bench modbus",
                "ironplant-bench rules",
                "ironplant-bench detection",
                "ironplant-bench bus",
                "ironplant-bench historian",
                "ironplant-bench mqtt",
                "ironplant-bench opcua"
            ]
        );
        // The commands' own flags (besides `--log-format` and clap's `--help`).
        let own = |path: &str| -> &[&str] {
            match path {
                "ironplant-bench modbus" | "ironplant-bench bus" => &["seconds", "tags"],
                "ironplant-bench historian" => &["tags", "seconds", "no-postgres"],
                "ironplant-bench rules" => &["rules", "alarms", "rate", "seconds"],
                "ironplant-bench detection" => &["seeds", "hours", "limit"],
                "ironplant-bench mqtt" => &[
                    "seconds",
                    "idle",
                    "policy",
                    "client",
                    "batch",
                    "scenarios",
                    "clients",
                ],
                "ironplant-bench opcua" => {
                    &["items", "period", "publishing", "seconds", "no-asyncua"]
                }
                // Hidden: the peers this binary starts as its own child processes.
                "ironplant-bench mqtt-server" => &["listen", "policy-dir"],
                "ironplant-bench register-server" => &["listen"],
                "ironplant-bench sim-server" => &["listen", "seed"],
                "ironplant-bench opcua-client" => &[
                    "pki", "user", "password", "interval", "seconds", "sampling", "queue",
                ],
                _ => &[],
            }
        };
        for (path, cmd) in &all {
            if path.split(' ').any(|w| w == "help") {
                continue;
            }
            let mut flags = long_flags(cmd);
            flags.retain(|f| f != "log-format" && f != "help");
            let mut want: Vec<String> = own(path).iter().map(|f| (*f).to_owned()).collect();
            flags.sort();
            want.sort();
            assert_eq!(flags, want, "{path}: flags");
            if cmd.is_hide_set() {
                continue;
            }
            let help = cmd
                .get_after_help()
                .map(ToString::to_string)
                .unwrap_or_default();
            let name = path.trim_start_matches("ironplant-bench ");
            assert!(
                help.contains("Example") && help.contains(&format!("ironplant-bench {name}")),
                "{path} has no example of itself in its --help:\n{help}"
            );
        }
    }
}
