//! End-to-end tests of the `ironplant-bench` binary: each command's `--help`, and short real
//! runs of `bus` (in-process) and `modbus` (which re-execs this binary as its simulator and
//! register server, the hidden subcommands).

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_ironplant-bench");

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("run ironplant-bench")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Each command's `--help` shows its own flags and an example of itself, none of the
/// product's server flags; the internal peers stay hidden.
#[test]
fn help_shows_each_command_its_own_flags_and_an_example() {
    for (cmd, flag) in [
        ("modbus", "--tags"),
        ("bus", "--tags"),
        ("historian", "--no-postgres"),
        ("mqtt", "--policy"),
    ] {
        let out = run(&[cmd, "--help"]);
        assert!(out.status.success(), "{cmd} --help: {out:?}");
        let h = stdout(&out);
        assert!(
            h.contains(flag)
                && h.contains("Example")
                && h.contains(&format!("ironplant-bench {cmd}"))
                && !h.contains("--mqtts")
                && !h.contains("--data-dir"),
            "{cmd} --help:\n{h}"
        );
    }
    let top = stdout(&run(&["--help"]));
    for cmd in ["modbus", "bus", "historian", "mqtt"] {
        assert!(top.contains(cmd), "{cmd} missing from --help:\n{top}");
    }
    for hidden in ["sim-server", "register-server", "mqtt-server"] {
        assert!(!top.contains(hidden), "{hidden} shown in --help:\n{top}");
    }
}

#[test]
fn an_unknown_command_is_refused() {
    let out = run(&["serve"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unrecognized subcommand"),
        "{out:?}"
    );
}

/// The simulator peer (`sim-server`) prints its address and serves Modbus TCP there: a read of
/// the filler PLC's first holding register is answered.
#[test]
fn sim_server_serves_the_simulated_plant_over_modbus() {
    let mut child = Command::new(BIN)
        .args(["sim-server", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start sim-server");
    let result = (|| -> Result<Vec<u8>, String> {
        let mut line = String::new();
        let stdout = child.stdout.take().ok_or("no stdout")?;
        BufReader::new(stdout)
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        let addr: SocketAddr = line
            .split_whitespace()
            .find_map(|w| w.parse().ok())
            .ok_or(format!("no address in {line:?}"))?;
        let mut s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        // MBAP: transaction 7, protocol 0, length 6, unit 1; read holding registers 0, count 2.
        std::io::Write::write_all(&mut s, &[0, 7, 0, 0, 0, 6, 1, 3, 0, 0, 0, 2])
            .map_err(|e| e.to_string())?;
        let mut answer = [0u8; 13];
        std::io::Read::read_exact(&mut s, &mut answer).map_err(|e| e.to_string())?;
        Ok(answer.to_vec())
    })();
    let _ = child.kill();
    let _ = child.wait();
    let answer = result.expect("modbus answer");
    // Same transaction, unit 1, function 3 (no exception), 4 bytes of data.
    assert_eq!(&answer[..9], &[0, 7, 0, 0, 0, 7, 1, 3, 4], "{answer:?}");
}

/// The value column of the table row whose first column is `name` (tables are Markdown:
/// `| name | value |`).
fn cell(text: &str, name: &str) -> String {
    text.lines()
        .find_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            (cells.len() == 4 && cells[1] == name).then(|| cells[2].to_owned())
        })
        .unwrap_or_else(|| panic!("no row {name:?} in:\n{text}"))
}

/// The leading number of a figure such as `1234 req/s`.
fn number(figure: &str) -> f64 {
    figure
        .split_whitespace()
        .next()
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("no number in {figure:?}"))
}

/// `bus` runs in-process and prints its table: everything published reaches the lossless
/// subscriber.
#[test]
fn bus_prints_its_figures() {
    let out = run(&["bus", "--seconds", "1", "--tags", "2000"]);
    let text = stdout(&out);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.starts_with("ironplant bench bus: 2000 tags, 2 publishers"),
        "{text}"
    );
    let published = number(&cell(&text, "samples published/s"));
    let received = number(&cell(&text, "samples received/s (lossless subscriber)"));
    assert!(published > 0.0, "{text}");
    assert!(received > 0.0 && received <= published, "{text}");
}

/// `modbus` re-execs this binary as the simulator and the register server, polls both and
/// fails on any failed request; its table counts what was read.
#[test]
fn modbus_polls_its_own_peers() {
    let out = run(&["modbus", "--seconds", "1", "--tags", "100"]);
    let text = stdout(&out);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(cell(&text, "simulator: failed requests"), "0", "{text}");
    assert!(
        number(&cell(&text, "simulator: requests/s, one connection")) > 0.0,
        "{text}"
    );
    assert!(
        number(&cell(&text, "1 s polling: samples published")) > 0.0,
        "{text}"
    );
}
