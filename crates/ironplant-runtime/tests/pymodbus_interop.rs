//! Interop: our connector reads a pymodbus (PyPI) server whose registers Python encoded itself.
//!
//! The venv comes from the test command (`.ci/test`), which exports IRONPLANT_PYTHON. Without it
//! the test is skipped locally with a message, but fails under CI=true: a peer must never be
//! silently missing there.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ironplant_core::{QualityLevel, Value};
use ironplant_runtime::Runtime;
use tokio::time::Instant;

fn python() -> Option<PathBuf> {
    ironplant_testkit::python("pymodbus", "pymodbus")
}

struct Peer(Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_peer(py: &PathBuf) -> (Peer, u16) {
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/peers/modbus_server.py");
    let mut child = Command::new(py)
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the pymodbus server");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read the port line");
    let port = line
        .trim()
        .strip_prefix("PORT ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("bad line {line:?}"));
    (Peer(child), port)
}

fn tag(name: &str, writable: bool, modbus: &str) -> String {
    format!("[[tag]]\npath = \"acme/lab/test/bench/rig/py/{name}\"\ndevice = \"py\"\nwritable = {writable}\nmodbus = {{ {modbus} }}\n\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connector_reads_and_writes_a_pymodbus_server() {
    let Some(py) = python() else { return };
    let (_peer, port) = start_peer(&py);
    let mut cfg = format!(
        "[[device]]\nid = \"py\"\nprotocol = \"modbus-tcp\"\naddress = \"127.0.0.1:{port}\"\npoll_interval = \"100ms\"\ntimeout = \"1s\"\n\n"
    );
    for (name, writable, m) in [
        (
            "u16",
            true,
            r#"table = "holding", address = 0, type = "u16""#,
        ),
        (
            "i16",
            false,
            r#"table = "holding", address = 1, type = "i16""#,
        ),
        (
            "f32_abcd",
            true,
            r#"table = "holding", address = 10, type = "f32""#,
        ),
        (
            "f32_cdab",
            true,
            r#"table = "holding", address = 20, type = "f32", word_order = "little""#,
        ),
        (
            "scaled",
            false,
            r#"table = "holding", address = 30, type = "u16", scale = 0.1"#,
        ),
        (
            "u32",
            false,
            r#"table = "holding", address = 40, type = "u32""#,
        ),
        (
            "f64",
            false,
            r#"table = "holding", address = 50, type = "f64""#,
        ),
        (
            "in_f32",
            false,
            r#"table = "input", address = 0, type = "f32""#,
        ),
        ("in_u16", false, r#"table = "input", address = 5"#),
        (
            "in_bit2",
            false,
            r#"table = "input", address = 6, type = "bool", bit = 2"#,
        ),
        (
            "in_bit3",
            false,
            r#"table = "input", address = 6, type = "bool", bit = 3"#,
        ),
        (
            "in_i16x3",
            false,
            r#"table = "input", address = 8, type = "i16", count = 3"#,
        ),
        (
            "in_f32x2",
            false,
            r#"table = "input", address = 12, type = "f32", count = 2"#,
        ),
        ("coil0", true, r#"table = "coil", address = 0"#),
        ("coil1", true, r#"table = "coil", address = 1"#),
        ("coil3", false, r#"table = "coil", address = 3"#),
        ("di1", false, r#"table = "discrete_input", address = 1"#),
        ("di0", false, r#"table = "discrete_input", address = 0"#),
    ] {
        cfg.push_str(&tag(name, writable, m));
    }
    let cfg = ironplant_runtime::config::parse("interop.toml", &cfg).expect("valid config");
    let rt = Runtime::start(&cfg, None).expect("start");
    let path = |n: &str| format!("acme/lab/test/bench/rig/py/{n}");
    let value = |n: &str| {
        let id = rt.namespace.lookup(&path(n)).expect("tag").id;
        rt.bus
            .current(id)
            .filter(|s| s.quality.level == QualityLevel::Good)
            .map(|s| s.value)
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while value("di0").is_none() || value("u16").is_none() {
        assert!(Instant::now() < deadline, "no Good values from pymodbus");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let f = |n: &str| match value(n) {
        Some(Value::Float(x)) => x,
        other => panic!("{n}: expected a float, got {other:?}"),
    };
    assert_eq!(value("u16"), Some(Value::Int(1234)));
    assert_eq!(value("i16"), Some(Value::Int(-1234)));
    assert_eq!(f("f32_abcd"), 123.456);
    assert_eq!(f("f32_cdab"), -98.765);
    assert!(
        (f("scaled") - 234.5).abs() < 1e-9,
        "scaled = {}",
        f("scaled")
    );
    assert_eq!(value("u32"), Some(Value::Int(3_000_000_000)));
    assert_eq!(f("f64"), 6.02214076e23);
    assert_eq!(f("in_f32"), 21.5);
    assert_eq!(value("in_u16"), Some(Value::Int(777)));
    assert_eq!(value("in_bit2"), Some(Value::Bool(true)));
    assert_eq!(value("in_bit3"), Some(Value::Bool(false)));
    // `count` reads consecutive values as one array tag.
    assert_eq!(
        value("in_i16x3"),
        Some(Value::array(
            ironplant_core::Array::from_ints(vec![-5, 0, 300]).expect("small")
        ))
    );
    assert_eq!(
        value("in_f32x2"),
        Some(Value::array(
            ironplant_core::Array::from_floats(vec![1.5, -2.25]).expect("small")
        ))
    );
    assert_eq!(value("coil0"), Some(Value::Bool(true)));
    assert_eq!(value("coil1"), Some(Value::Bool(false)));
    assert_eq!(value("coil3"), Some(Value::Bool(true)));
    assert_eq!(value("di0"), Some(Value::Bool(false)));
    assert_eq!(value("di1"), Some(Value::Bool(true)));

    // Writes: pymodbus stores them and our next poll reads them back.
    rt.write(&path("f32_cdab"), Value::Float(-1.5))
        .await
        .expect("write f32");
    rt.write(&path("u16"), Value::Int(4321))
        .await
        .expect("write u16");
    rt.write(&path("coil1"), Value::Bool(true))
        .await
        .expect("write coil");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(value("f32_cdab") == Some(Value::Float(-1.5))
        && value("u16") == Some(Value::Int(4321))
        && value("coil1") == Some(Value::Bool(true)))
    {
        assert!(
            Instant::now() < deadline,
            "writes not read back: {:?} {:?} {:?}",
            value("f32_cdab"),
            value("u16"),
            value("coil1")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
