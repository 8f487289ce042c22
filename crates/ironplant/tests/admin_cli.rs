//! The administration CLI as a new user meets it (the real binary): where `device enroll`
//! puts a private key, what `token create --expires` and `user add --role` accept, and
//! `user scope` writing the tag-prefix limits the API reads, `user unlock`.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_ironplant");

fn cli(cwd: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .args(["--data-dir", "data"])
        .current_dir(cwd)
        .env("NO_COLOR", "1")
        .output()
        .expect("run ironplant")
}

fn ok(cwd: &Path, args: &[&str]) -> String {
    let out = cli(cwd, args);
    assert!(
        out.status.success(),
        "ironplant {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn fails(cwd: &Path, args: &[&str]) -> String {
    let out = cli(cwd, args);
    assert!(!out.status.success(), "ironplant {args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777
}

fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("data")).expect("data dir");
    dir
}

#[test]
fn device_enroll_without_out_keeps_the_key_in_a_private_directory_of_the_data_dir() {
    let dir = setup();
    let d = dir.path();
    let out = ok(d, &["device", "enroll", "press-4"]);
    let bundle = d.join("data/security/bundles/press-4");
    assert!(
        !d.join("press-4").exists(),
        "nothing in the current directory"
    );
    assert_eq!(mode(&d.join("data/security/bundles")), 0o700);
    assert_eq!(mode(&bundle), 0o700);
    assert_eq!(mode(&bundle.join("press-4.key")), 0o600);
    assert!(bundle.join("press-4.crt").exists() && bundle.join("ca.crt").exists());
    assert!(
        out.contains("wrote data/security/bundles/press-4/press-4.key"),
        "says where: {out}"
    );
    // --out still works, and is made private too.
    ok(d, &["device", "enroll", "press-5", "--out", "p5"]);
    assert_eq!(mode(&d.join("p5")), 0o700);
    assert_eq!(mode(&d.join("p5/press-5.key")), 0o600);
}

#[test]
fn token_create_refuses_a_lifetime_above_the_maximum_instead_of_cutting_it() {
    let dir = setup();
    let d = dir.path();
    ok(d, &["user", "add", "alice", "--role", "operator"]);
    let err = fails(
        d,
        &["token", "create", "--user", "alice", "--expires", "5y"],
    );
    assert!(err.contains("maximum is 730 days"), "{err}");
    let list = ok(d, &["token", "list"]);
    assert_eq!(list.lines().count(), 1, "no token was made: {list}");
    ok(
        d,
        &["token", "create", "--user", "alice", "--expires", "730d"],
    );
}

#[test]
fn user_add_offers_and_accepts_only_the_human_roles() {
    let dir = setup();
    let d = dir.path();
    let err = fails(d, &["user", "add", "bot", "--role", "device"]);
    assert!(
        err.contains("invalid value 'device'")
            && err.contains("[possible values: viewer, operator, engineer, admin]"),
        "{err}"
    );
    let out = Command::new(BIN)
        .args(["user", "add", "--help"])
        .output()
        .expect("help");
    let help = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        help.contains("[possible values: viewer, operator, engineer, admin]"),
        "{help}"
    );
    let err = fails(
        d,
        &["token", "create", "--user", "admin", "--role", "device"],
    );
    assert!(err.contains("invalid value 'device'"), "{err}");
    ok(d, &["user", "add", "eve", "--role", "engineer"]);
}

#[test]
fn user_scope_writes_the_limits_the_api_reads_and_audits_them() {
    let dir = setup();
    let d = dir.path();
    ok(d, &["user", "add", "alice", "--role", "operator"]);
    let file = d.join("data/security/api-scopes.json");
    let read = |f: &Path| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(f).expect("read")).expect("json")
    };

    let out = ok(
        d,
        &[
            "user",
            "scope",
            "alice",
            "--read",
            "acme/lyon",
            "acme/paris/",
            "--write",
            "acme/lyon/line2",
        ],
    );
    assert!(
        out.contains("read acme/lyon acme/paris; write acme/lyon/line2"),
        "{out}"
    );
    assert_eq!(
        read(&file),
        serde_json::json!({"users": {"alice": {"read": ["acme/lyon", "acme/paris"], "write": ["acme/lyon/line2"]}}, "tokens": {}})
    );
    assert_eq!(mode(&file), 0o600);
    // The API's own reader accepts it as written.
    let scopes = ironplant_api::auth::TagScopes::load(&file).expect("the API reads it");
    assert_eq!(
        scopes.users["alice"].write.as_deref(),
        Some(&["acme/lyon/line2".to_owned()][..])
    );

    // One direction replaced, the other kept; shown without options.
    ok(d, &["user", "scope", "alice", "--write", "acme/lyon/line3"]);
    let shown = ok(d, &["user", "scope", "alice"]);
    assert_eq!(
        shown.trim(),
        "alice: read acme/lyon acme/paris; write acme/lyon/line3"
    );

    // Refusals say what and how.
    let err = fails(d, &["user", "scope", "alice", "--read", "acme/+/x"]);
    assert!(err.contains("\"acme/+/x\" is not a tag path"), "{err}");
    let err = fails(d, &["user", "scope", "nobody", "--read", "acme"]);
    assert!(err.contains("no user named \"nobody\""), "{err}");
    let err = fails(d, &["user", "scope", "alice", "--clear", "--read", "x"]);
    assert!(err.contains("cannot be used with"), "{err}");

    ok(d, &["user", "scope", "alice", "--clear"]);
    assert_eq!(read(&file), serde_json::json!({"users": {}, "tokens": {}}));
    assert_eq!(
        ok(d, &["user", "scope", "alice"]).trim(),
        "alice: read unlimited; write unlimited"
    );

    let log = std::fs::read_to_string(d.join("data/security/audit/audit.log")).expect("log");
    let changes: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("\"user_changed\"") && l.contains("tag scope"))
        .collect();
    assert_eq!(changes.len(), 3, "{log}");
    assert!(changes[0].contains("\"actor\":\"cli:"), "{}", changes[0]);
    ok(d, &["audit", "verify"]);
}

#[test]
fn user_unlock_lifts_a_lockout_and_is_audited() {
    let dir = setup();
    let d = dir.path();
    ok(d, &["user", "add", "alice", "--role", "operator"]);
    let out = ok(d, &["user", "unlock", "alice"]);
    assert!(out.contains("Lifted the lockout of `alice`"), "{out}");
    let err = fails(d, &["user", "unlock", "nobody"]);
    assert!(
        err.starts_with("error: cannot unlock \"nobody\"") && err.contains("no user named"),
        "{err}"
    );
    let log = std::fs::read_to_string(d.join("data/security/audit/audit.log")).expect("log");
    assert!(
        log.lines()
            .any(|l| l.contains("\"user\":\"alice\"") && l.contains("lockout lifted")),
        "{log}"
    );
}
