//! `ironplant opcua browse|certificates|trust` against a third-party server (asyncua, PyPI:
//! `tests/peers/opcua_server.py`): an unknown server is refused with its thumbprint and the
//! command to trust it; once trusted, the tree shows the server's objects and variables with
//! their data types.

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_ironplant");

#[test]
fn browse_refuses_an_unknown_server_until_it_is_trusted() {
    let Some(py) = ironplant_testkit::python("asyncua", "asyncua (PyPI)") else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/peers/opcua_server.py");
    let mut server = Command::new(py)
        .arg(script)
        .arg(dir.path().join("server"))
        .args(["--count", "3"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the asyncua server");
    let mut line = String::new();
    BufReader::new(server.stdout.take().expect("piped"))
        .read_line(&mut line)
        .expect("the server's first line");
    let info: serde_json::Value = serde_json::from_str(&line).expect("json");
    let url = info["url"].as_str().expect("url").to_owned();
    let thumb = info["thumbprint"].as_str().expect("thumbprint").to_owned();
    let data = dir.path().join("data");
    let ironplant = |args: &[&str]| {
        let out = Command::new(BIN)
            .args(args)
            .arg("--data-dir")
            .arg(&data)
            .env("IRONPLANT_OPCUA_PASSWORD", "op-password")
            .env("NO_COLOR", "1")
            .output()
            .expect("run ironplant");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let browse = ["opcua", "browse", url.as_str(), "--user", "op"];
    let (ok, _, err) = ironplant(&browse);
    assert!(!ok, "{err}");
    assert!(
        err.contains(&format!("not trusted (thumbprint {thumb})"))
            && err.contains(&format!("ironplant opcua trust {}", &thumb[..16])),
        "{err}"
    );
    let (ok, out, err) = ironplant(&["opcua", "certificates"]);
    assert!(ok && out.contains(&thumb), "{out}{err}");
    let (ok, out, err) = ironplant(&["opcua", "trust", &thumb[..16]]);
    assert!(ok && out.contains(&thumb), "{out}{err}");
    let (ok, out, err) = ironplant(&browse);
    let _ = server.kill();
    let _ = server.wait();
    assert!(ok, "{out}{err}");
    assert!(out.contains("2:Line1  Object"), "{out}");
    assert!(out.contains("2:v0  Variable  Double"), "{out}");
}
