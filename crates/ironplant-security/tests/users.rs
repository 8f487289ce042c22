//! Users, first-start admin, login lockout (per user and per address, time-based unlock with
//! an injected clock), and API tokens.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use ironplant_security::audit::AuditQuery;
use ironplant_security::users::AuthMethod;
use ironplant_security::{LoginError, Role, TokenError};

use common::{admin_password, clock_now, mode, open};

const HMI: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 1, 0, 5));
const OTHER: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 1, 0, 6));

fn kinds(sec: &ironplant_security::Security) -> Vec<String> {
    sec.audit
        .query(&AuditQuery {
            limit: 1000,
            ..AuditQuery::default()
        })
        .expect("query")
        .records
        .into_iter()
        .map(|r| r.event.kind().to_owned())
        .filter(|k| k != "checkpoint")
        .collect()
}

#[test]
fn first_start_creates_admin_with_a_random_password_in_a_0600_file_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = clock_now();
    let sec = open(dir.path(), &clock);
    let admin = sec
        .users
        .initial_admin()
        .expect("created on first start")
        .clone();
    assert_eq!(mode(&admin.password_file), 0o600);
    let password = admin_password(&sec);
    assert_eq!(password.len(), 24);
    let id = sec
        .users
        .login("admin", password.as_bytes(), HMI, "api")
        .expect("login");
    assert_eq!(id.role, Role::Admin);
    assert_eq!(id.via, AuthMethod::Password);

    // The store holds an argon2id hash, not the password.
    let stored = std::fs::read_to_string(sec.dir().join("users.json")).expect("read");
    assert!(!stored.contains(&password));
    assert!(stored.contains("$argon2id$"));
    assert_eq!(mode(&sec.dir().join("users.json")), 0o600);

    // Reopening does not create another admin or touch the file.
    drop(sec);
    let again = open(dir.path(), &clock);
    assert!(again.users.initial_admin().is_none());
    assert_eq!(admin_password(&again), password);
    assert_eq!(again.users.list_users().expect("list").len(), 1);
}

#[test]
fn lockout_bites_first_for_the_guessing_address_and_releases_after_the_lockout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = clock_now();
    let sec = open(dir.path(), &clock);
    sec.users
        .create_user(
            "olga",
            "correct horse battery",
            Role::Operator,
            Some("admin"),
        )
        .expect("create");
    for _ in 0..3 {
        assert_eq!(
            sec.users.login("olga", b"wrong password!", HMI, "api"),
            Err(LoginError::BadCredentials)
        );
    }
    let until = clock.now_for_test() + Duration::from_secs(300);
    // Locked from the guessing address: even the right password is refused there ...
    assert_eq!(
        sec.users
            .login("olga", b"correct horse battery", HMI, "api"),
        Err(LoginError::Locked { until })
    );
    // ... but olga from her own desk is not locked out by someone else's guesses.
    sec.users
        .login("olga", b"correct horse battery", OTHER, "api")
        .expect("another address");
    clock.advance(Duration::from_secs(299));
    assert!(matches!(
        sec.users
            .login("olga", b"correct horse battery", HMI, "api"),
        Err(LoginError::Locked { .. })
    ));
    clock.advance(Duration::from_secs(1));
    let id = sec
        .users
        .login("olga", b"correct horse battery", HMI, "api")
        .expect("released after the lockout");
    assert_eq!(id.role, Role::Operator);

    let k = kinds(&sec);
    assert_eq!(k.iter().filter(|k| *k == "lockout").count(), 1, "{k:?}");
    assert_eq!(
        k.iter().filter(|k| *k == "login_failed").count(),
        5,
        "{k:?}"
    );
    assert_eq!(k.last().map(String::as_str), Some("login"));
    let subjects: Vec<String> = sec
        .audit
        .query(&AuditQuery {
            kinds: vec!["lockout".into()],
            ..AuditQuery::default()
        })
        .expect("query")
        .records
        .into_iter()
        .map(|r| match r.event {
            ironplant_security::AuditEvent::Lockout { subject, .. } => subject,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(subjects, vec![format!("user:olga@address:{HMI}")]);
}

/// An attacker keeps the admin locked for everyone (failures from many addresses, renewed
/// before each lockout ends). An administrator on the host lifts it from another process
/// (`ironplant user unlock`), and the running server honours it at the next attempt, audited.
#[test]
fn a_locked_out_admin_is_unlocked_from_another_process_while_the_server_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = clock_now();
    let server = open(dir.path(), &clock);
    let password = admin_password(&server);
    for i in 0..9u8 {
        let from = IpAddr::V4(Ipv4Addr::new(192, 0, 2, i));
        let _ = server
            .users
            .login("admin", b"guess-guess-guess", from, "mqtt");
    }
    assert!(matches!(
        server.users.login("admin", password.as_bytes(), HMI, "api"),
        Err(LoginError::Locked { .. })
    ));
    // The CLI: its own store on the same directory.
    let cli = open(dir.path(), &clock);
    cli.users.unlock("admin", Some("cli:root")).expect("unlock");
    server
        .users
        .login("admin", password.as_bytes(), HMI, "api")
        .expect("unlocked without a restart");
    // Unlocking is per user name and needs one that exists.
    assert!(matches!(
        cli.users.unlock("nobody", None),
        Err(ironplant_security::Error::UnknownUser(_))
    ));
    assert_eq!(mode(&server.dir().join("unlocks.json")), 0o600);
    let changes: Vec<String> = server
        .audit
        .query(&AuditQuery {
            kinds: vec!["user_changed".into()],
            ..AuditQuery::default()
        })
        .expect("query")
        .records
        .into_iter()
        .map(|r| match r.event {
            ironplant_security::AuditEvent::UserChanged {
                user,
                change,
                actor,
            } => {
                format!("{user}: {change} by {}", actor.unwrap_or_default())
            }
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        changes,
        vec!["admin: lockout lifted (all addresses) by cli:root"]
    );
}

#[test]
fn unknown_users_get_the_same_answers_as_known_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = clock_now();
    let sec = open(dir.path(), &clock);
    sec.users
        .create_user("olga", "correct horse battery", Role::Operator, None)
        .expect("create");
    let mut known = Vec::new();
    let mut unknown = Vec::new();
    for _ in 0..4 {
        known.push(sec.users.login("olga", b"wrong password!", HMI, "api"));
        unknown.push(sec.users.login("nobody", b"wrong password!", OTHER, "api"));
    }
    let shape = |r: &Result<_, LoginError>| match r {
        Ok(_) => "ok",
        Err(LoginError::BadCredentials) => "bad",
        Err(LoginError::Locked { .. }) => "locked",
    };
    let known: Vec<_> = known.iter().map(shape).collect();
    let unknown: Vec<_> = unknown.iter().map(shape).collect();
    assert_eq!(known, vec!["bad", "bad", "bad", "locked"]);
    assert_eq!(known, unknown);
    // The error text does not mention the user either way.
    let msg = sec
        .users
        .login("nobody2", b"x", OTHER, "api")
        .expect_err("refused")
        .to_string();
    assert_eq!(msg, "user name or password is wrong");
}

#[test]
fn lockout_per_source_address_spans_user_names() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = clock_now();
    let sec = open(dir.path(), &clock);
    sec.users
        .create_user("olga", "correct horse battery", Role::Operator, None)
        .expect("create");
    // Six failures from one address, two per name: no user reaches its limit of three.
    for name in ["a", "b", "c"] {
        for _ in 0..2 {
            let _ = sec.users.login(name, b"guess-guess-guess", HMI, "mqtt");
        }
    }
    assert!(matches!(
        sec.users
            .login("olga", b"correct horse battery", HMI, "mqtt"),
        Err(LoginError::Locked { .. })
    ));
    // The same user from another address is fine.
    sec.users
        .login("olga", b"correct horse battery", OTHER, "mqtt")
        .expect("other address");
    clock.advance(Duration::from_secs(300));
    sec.users
        .login("olga", b"correct horse battery", HMI, "mqtt")
        .expect("address released");
}

#[test]
fn tokens_are_stored_hashed_scoped_expiring_and_revocable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = clock_now();
    let sec = open(dir.path(), &clock);
    sec.users
        .create_user("eve", "engineering-pass", Role::Engineer, None)
        .expect("create");
    let t = sec
        .users
        .create_token(
            "eve",
            Some(Role::Viewer),
            Duration::from_secs(3600),
            "grafana",
            None,
        )
        .expect("token");
    assert!(!format!("{t:?}").contains(&t.token));
    let stored = std::fs::read_to_string(sec.dir().join("users.json")).expect("read");
    let secret = t.token.rsplit('_').next().expect("secret part");
    assert!(!stored.contains(secret), "token secret stored in clear");
    assert!(stored.contains(&t.id));

    let id = sec.users.verify_token(&t.token).expect("valid");
    assert_eq!((id.user.as_str(), id.role), ("eve", Role::Viewer));
    assert_eq!(id.via, AuthMethod::Token { id: t.id.clone() });

    // One changed character of the secret: refused.
    let mut forged = t.token.clone();
    let last = forged.pop().expect("char");
    forged.push(if last == '0' { '1' } else { '0' });
    assert_eq!(sec.users.verify_token(&forged), Err(TokenError::Invalid));
    assert_eq!(
        sec.users.verify_token("ipt_garbage"),
        Err(TokenError::Invalid)
    );

    // Scope: never above the user's role.
    let err = sec
        .users
        .create_token("eve", Some(Role::Admin), Duration::from_secs(60), "", None)
        .expect_err("above the user's role");
    assert!(err.to_string().contains("only has role engineer"), "{err}");
    // A token keeps at most its user's current role.
    let full = sec
        .users
        .create_token("eve", None, Duration::from_secs(3600), "cli", None)
        .expect("token");
    assert_eq!(full.role, Role::Engineer);
    sec.users
        .set_role("eve", Role::Viewer, Some("admin"))
        .expect("downgrade");
    assert_eq!(
        sec.users.verify_token(&full.token).expect("valid").role,
        Role::Viewer
    );

    // Revocation.
    sec.users
        .revoke_token(&t.id, Some("admin"))
        .expect("revoke");
    assert_eq!(sec.users.verify_token(&t.token), Err(TokenError::Revoked));

    // Expiry.
    clock.advance(Duration::from_secs(3600));
    assert_eq!(
        sec.users.verify_token(&full.token),
        Err(TokenError::Expired)
    );

    // Deleting the user revokes the rest.
    let late = sec
        .users
        .create_token("eve", None, Duration::from_secs(60), "", None)
        .expect("token");
    sec.users.delete_user("eve", Some("admin")).expect("delete");
    assert_eq!(
        sec.users.verify_token(&late.token),
        Err(TokenError::Revoked)
    );

    let k = kinds(&sec);
    for kind in [
        "token_created",
        "token_revoked",
        "user_changed",
        "user_deleted",
    ] {
        assert!(k.iter().any(|x| x == kind), "{kind} missing from {k:?}");
    }
    let log = std::fs::read_to_string(sec.audit.path()).expect("read audit");
    assert!(!log.contains(secret), "token secret in the audit log");
}

#[test]
fn user_management_errors_are_clear() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = clock_now();
    let sec = open(dir.path(), &clock);
    let short = sec
        .users
        .create_user("bob", "short", Role::Viewer, None)
        .expect_err("short password");
    assert_eq!(short.to_string(), "a password needs at least 12 characters");
    let bad = sec
        .users
        .create_user("bob/x", "long enough pass", Role::Viewer, None)
        .expect_err("bad name")
        .to_string();
    assert!(
        bad.contains("bob/x") && bad.contains("letters, digits"),
        "{bad}"
    );
    sec.users
        .create_user("bob", "long enough pass", Role::Viewer, None)
        .expect("create");
    assert!(sec
        .users
        .create_user("bob", "long enough pass", Role::Viewer, None)
        .is_err());
    assert!(sec
        .users
        .create_user("dev", "long enough pass", Role::Device, None)
        .is_err());
    sec.users
        .set_password("bob", "another long one", None)
        .expect("set");
    assert!(sec
        .users
        .login("bob", b"long enough pass", HMI, "api")
        .is_err());
    sec.users
        .login("bob", b"another long one", HMI, "api")
        .expect("new password");
    sec.users.set_disabled("bob", true, None).expect("disable");
    assert_eq!(
        sec.users.login("bob", b"another long one", OTHER, "api"),
        Err(LoginError::BadCredentials)
    );
}
