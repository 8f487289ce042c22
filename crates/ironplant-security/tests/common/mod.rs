#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ironplant_security::{
    AuditOptions, LockoutPolicy, ManualClock, Security, SecurityOptions, UserStoreOptions,
};

/// Cheap argon2 (the production cost is tested to be the default, not here) and small
/// lockout numbers.
pub fn options() -> SecurityOptions {
    SecurityOptions {
        users: UserStoreOptions {
            lockout: LockoutPolicy {
                max_user_address_failures: 3,
                max_address_failures: 6,
                max_user_failures: 9,
                window: Duration::from_secs(60),
                lockout: Duration::from_secs(300),
                max_tracked: 1000,
            },
            argon2_m_kib: 256,
            argon2_t: 1,
            argon2_p: 1,
            min_password_len: 12,
        },
        audit: AuditOptions {
            checkpoint_every: 5,
            queue: 64,
        },
        ..SecurityOptions::default()
    }
}

pub fn clock_now() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(SystemTime::now()))
}

pub fn open(dir: &Path, clock: &Arc<ManualClock>) -> Security {
    Security::open(dir, clock.clone(), options()).expect("open security")
}

/// The first-start admin password, read from its file.
pub fn admin_password(security: &Security) -> String {
    let path = security
        .dir()
        .join(ironplant_security::users::INITIAL_ADMIN_FILE);
    let text = std::fs::read_to_string(path).expect("admin password file");
    text.lines()
        .find_map(|l| l.strip_prefix("password: "))
        .expect("password line")
        .to_owned()
}

pub fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

/// A client's address on the plant network, for MQTT CONNECT tests.
pub fn peer() -> std::net::SocketAddr {
    "10.2.0.9:50000".parse().expect("addr")
}

/// A CONNECT as the broker's hook sees it (MQTT 5, from [`peer`]).
pub fn info<'a>(
    client_id: &'a str,
    username: Option<&'a str>,
    password: Option<&'a [u8]>,
    subject: Option<&'a str>,
) -> ironplant_mqtt::auth::ConnectInfo<'a> {
    ironplant_mqtt::auth::ConnectInfo {
        peer: peer(),
        protocol: ironplant_mqtt::codec::ProtocolVersion::V5,
        client_id,
        client_id_assigned: false,
        username,
        password,
        certificate_subject: subject,
    }
}
