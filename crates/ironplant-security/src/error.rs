//! The one error type of the crate. Every message says what failed, on which file or name, and
//! how to fix it where there is something to fix. No message ever contains a secret.

use std::path::PathBuf;

use thiserror::Error;

use crate::roles::Role;

#[derive(Debug, Error)]
pub enum Error {
    #[error("could not {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is damaged ({detail}); restore it from a backup or remove it to start afresh")]
    Corrupt { path: PathBuf, detail: String },
    #[error("certificate: {0}")]
    Certificate(String),
    #[error("TLS configuration: {0}")]
    Tls(String),
    #[error("invalid {what} {name:?}: {why}")]
    InvalidName {
        what: &'static str,
        name: String,
        why: &'static str,
    },
    #[error("device {0:?} is already enrolled; revoke it first (`ironplant device revoke {0}`)")]
    DeviceExists(String),
    #[error("no enrolled device named {0:?} (see `ironplant device list`)")]
    UnknownDevice(String),
    #[error("device {0:?} is already revoked")]
    DeviceAlreadyRevoked(String),
    #[error("role `device` is for enrolled devices, not for users or API tokens")]
    DeviceRoleForUser,
    #[error("the enrolment token is not valid (unknown, already used or expired); ask an administrator for a new one")]
    EnrolmentTokenRejected,
    #[error("user {0:?} already exists")]
    UserExists(String),
    #[error("no user named {0:?}")]
    UnknownUser(String),
    #[error("no API token with id {0:?}")]
    UnknownToken(String),
    #[error("a password needs at least {min} characters")]
    WeakPassword { min: usize },
    #[error("a token cannot have role {requested}: its user {user:?} only has role {user_role}")]
    TokenRoleTooHigh {
        user: String,
        user_role: Role,
        requested: Role,
    },
    #[error("a token lifetime of {requested_days} days is too long: the maximum is {max_days} days (2 years); give a shorter one, e.g. 365d")]
    TokenLifetimeTooLong { requested_days: u64, max_days: u64 },
    #[error("{0}")]
    Acl(String),
    #[error("cryptography failed: {0}")]
    Crypto(&'static str),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }
}
