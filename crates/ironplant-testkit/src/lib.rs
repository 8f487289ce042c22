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
