//! The data directory is private whatever the umask: `ironplant serve` creates it and
//! everything under it 0700/0600 (historian, broker state, security files, the first-start
//! admin password), and makes an existing world-readable one private at start, saying so.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ironplant");

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

struct Serve {
    child: Child,
    stderr: mpsc::Receiver<String>,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `ironplant serve` on ephemeral ports with `dir/data`, once it says it is running.
fn serve(dir: &Path) -> Serve {
    std::fs::write(dir.join("p.toml"), "[sparkplug]\nhost_id = \"perm\"\n").expect("config");
    let mut child = Command::new(BIN)
        .args(["serve", "--config", "p.toml", "--http", "127.0.0.1:0"])
        .args(["--mqtts", "127.0.0.1:0", "--data-dir", "data"])
        .env("NO_COLOR", "1")
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ironplant serve");
    let pump = |pipe: Box<dyn std::io::Read + Send>| {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        rx
    };
    let stdout = pump(Box::new(child.stdout.take().expect("stdout")));
    let stderr = pump(Box::new(child.stderr.take().expect("stderr")));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let line = stdout
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("`Press Ctrl-C` from ironplant serve");
        if line.starts_with("Press Ctrl-C") {
            break;
        }
    }
    Serve { child, stderr }
}

#[test]
fn serve_creates_the_data_directory_private() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = tmp.path();
    let _s = serve(d);
    let data = d.join("data");
    for dir in [
        "",
        "security",
        "security/audit",
        "security/ca",
        "historian",
        "historian/wal",
        "mqtt",
    ] {
        assert_eq!(mode(&data.join(dir)), 0o700, "{dir:?}");
    }
    for file in [
        "historian/chunks.redb",
        "security/users.json",
        "security/initial-admin-password",
        "security/audit/audit.log",
        "security/audit/checkpoint.key",
        "security/ca/ca.key",
    ] {
        assert_eq!(mode(&data.join(file)), 0o600, "{file}");
    }
    let mqtt: Vec<_> = std::fs::read_dir(data.join("mqtt"))
        .expect("mqtt dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "redb"))
        .collect();
    assert!(!mqtt.is_empty(), "the broker's store");
    for f in mqtt.iter().chain(
        std::fs::read_dir(data.join("historian/wal"))
            .expect("wal")
            .map(|e| e.expect("entry").path())
            .collect::<Vec<_>>()
            .iter(),
    ) {
        assert_eq!(mode(f), 0o600, "{}", f.display());
    }
}

#[test]
fn serve_makes_an_existing_world_readable_data_directory_private_and_says_so() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = tmp.path();
    let data = d.join("data");
    std::fs::create_dir_all(data.join("old/deeper")).expect("mkdir");
    std::fs::write(data.join("old/samples.csv"), "x\n").expect("write");
    for (p, m) in [
        ("", 0o755),
        ("old", 0o755),
        ("old/deeper", 0o777),
        ("old/samples.csv", 0o644),
    ] {
        std::fs::set_permissions(data.join(p), std::fs::Permissions::from_mode(m)).expect("chmod");
    }
    let s = serve(d);
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("old")), 0o700);
    assert_eq!(mode(&data.join("old/deeper")), 0o700);
    assert_eq!(mode(&data.join("old/samples.csv")), 0o600);
    // Certificates stay readable (public by design).
    assert_eq!(mode(&data.join("security/ca/ca.crt")), 0o644);
    let deadline = Instant::now() + Duration::from_secs(10);
    let said = std::iter::from_fn(|| {
        s.stderr
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .ok()
    })
    .find(|l| l.contains("made the data directory private"))
    .expect("a log line saying what was changed");
    assert!(
        said.contains("3 directories") && said.contains("1 files"),
        "{said}"
    );
}
