//! Test support shared by the crates' interop tests (a dev-dependency only).
//!
//! The test command (`.ci/test`) installs third-party peers into Python venvs under `target/`
//! and exports their interpreters. A test asks for the interpreter of a peer here: present, it
//! gets the path; missing, the test is skipped locally with a message, but under `CI=true` it
//! fails — a peer must never be silently missing there.

use std::path::PathBuf;
use std::process::Command;

/// Reports whether a peer is present: under `CI=true` a missing one panics, elsewhere it is
/// announced as `SKIPPED` and the caller returns early.
pub fn peer_available(what: &str, present: bool) -> bool {
    if !present {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{what} is required under CI=true; run the tests through .ci/test, which installs it"
        );
        eprintln!("SKIPPED: {what} not installed; run .ci/test to install the interop peers");
    }
    present
}

/// The Python interpreter that can `import module`: `$env_var`, else
/// `<workspace>/target/<venv>/bin/python`. `None` (after [`peer_available`]'s message) when
/// there is none.
pub fn python_with(env_var: &str, venv: &str, module: &str, peer: &str) -> Option<PathBuf> {
    let candidate = std::env::var_os(env_var).map(PathBuf::from).or_else(|| {
        let py = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../target")
            .join(venv)
            .join("bin/python");
        py.exists().then_some(py)
    });
    let ok = candidate.as_ref().is_some_and(|py| {
        Command::new(py)
            .args(["-c", &format!("import {module}")])
            .status()
            .is_ok_and(|s| s.success())
    });
    peer_available(peer, ok).then_some(candidate).flatten()
}

/// The interpreter of the main interop venv (`target/venv`: pymodbus, paho-mqtt) that can
/// `import module`.
pub fn python(module: &str, peer: &str) -> Option<PathBuf> {
    python_with("IRONPLANT_PYTHON", "venv", module, peer)
}

/// What a peer script printed (and both outputs, for failure messages).
pub struct ScriptRun {
    pub stdout: String,
    /// Stdout and stderr, labelled, to append to an assertion message.
    pub report: String,
}

/// Runs a peer script with `py`, draining both pipes on their own threads (a chatty script
/// cannot block on a full pipe). Panics, with both outputs, when it does not finish within
/// `deadline` or exits unsuccessfully; `what` names the scenario in those messages.
pub fn run_script(
    py: &std::path::Path,
    script: &std::path::Path,
    args: &[&str],
    deadline: std::time::Duration,
    what: &str,
) -> ScriptRun {
    use std::io::Read;
    use std::process::Stdio;
    let mut child = Command::new(py)
        .arg(script)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the peer script");
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("piped stdout")));
    let err = drain(Box::new(child.stderr.take().expect("piped stderr")));
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("poll the peer script") {
            break Some(status);
        }
        if start.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let stdout = out.join().expect("stdout reader");
    let stderr = err.join().expect("stderr reader");
    let report = format!("--- stdout\n{stdout}--- stderr\n{stderr}");
    let Some(status) = status else {
        panic!("{what} did not finish within {deadline:?}\n{report}");
    };
    assert!(status.success(), "{what} failed: {status}\n{report}");
    ScriptRun { stdout, report }
}

/// A real browser for end-to-end tests: playwright-core's `node_modules` directory (installed by
/// `.ci/test` under `target/browser`) and Debian's chromium (`$IRONPLANT_CHROMIUM`, else
/// `/usr/bin/chromium`), with node on the `PATH`. `None` (after [`peer_available`]'s message)
/// when one is missing.
pub fn browser() -> Option<(PathBuf, PathBuf)> {
    let modules =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/browser/node_modules");
    let chromium = std::env::var_os("IRONPLANT_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    let present = chromium.exists()
        && modules.join("playwright-core").exists()
        && Command::new("node")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
    peer_available("chromium, node and playwright-core", present).then_some((modules, chromium))
}

/// A node.js peer: the `node` binary (found on the `PATH`) and the `node_modules` directory that
/// `.ci/test` installs `module` into, `<workspace>/target/<dir>/node_modules` (e.g.
/// `node_module("opcua-node", "node-opcua", "node-opcua")`). Run the peer script with
/// `NODE_PATH` set to that directory. `None` (after [`peer_available`]'s message, which names
/// `what`) when node or the module is missing.
pub fn node_module(dir: &str, module: &str, what: &str) -> Option<(PathBuf, PathBuf)> {
    let modules = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../target")
        .join(dir)
        .join("node_modules");
    let node = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("node"))
            .find(|p| p.is_file())
    });
    let present = modules.join(module).join("package.json").is_file()
        && node.as_ref().is_some_and(|node| {
            Command::new(node)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        });
    if !peer_available(&format!("node and {what}"), present) {
        return None;
    }
    node.map(|node| (node, modules))
}

/// An HTTP `Authorization` value for Basic authentication (test-side encoder; the server's
/// decoder is checked against RFC 7617 vectors separately).
pub fn basic_auth(user: &str, password: &str) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let input = format!("{user}:{password}");
    let mut out = String::new();
    for chunk in input.as_bytes().chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    format!("Basic {out}")
}
