//! Roles and the permission table. The table is code (this file) and documentation
//! (ARCHITECTURE.md and SECURITY.md); `permission_table_matches_docs` keeps them in step.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// What someone may do through the API or the CLI. MQTT rights are not permissions: they come
/// from the ACL rules (see [`crate::acl`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Permission {
    /// Read tags, assets, current values and history.
    ReadTags,
    /// Acknowledge and shelve alarms.
    AckAlarms,
    /// Write setpoints and send commands to devices.
    WriteSetpoints,
    /// Change the configuration (devices, tags, rules, ACLs).
    ChangeConfig,
    /// Create, change and delete users; create and revoke other users' tokens.
    ManageUsers,
    /// Enrol and revoke devices, create enrolment tokens.
    ManageDevices,
    /// Read the audit log.
    ReadAudit,
}

impl Permission {
    pub const ALL: [Permission; 7] = [
        Permission::ReadTags,
        Permission::AckAlarms,
        Permission::WriteSetpoints,
        Permission::ChangeConfig,
        Permission::ManageUsers,
        Permission::ManageDevices,
        Permission::ReadAudit,
    ];
}

/// Roles, from least to most privileged for people; `Device` is apart (MQTT only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Viewer,
    Operator,
    Engineer,
    Admin,
    /// An enrolled device: no API permission; what it may publish or subscribe is up to the ACL.
    Device,
}

impl Role {
    pub const HUMAN: [Role; 4] = [Role::Viewer, Role::Operator, Role::Engineer, Role::Admin];

    /// The permission table.
    pub const fn permissions(self) -> &'static [Permission] {
        use Permission::*;
        match self {
            Role::Viewer => &[ReadTags],
            Role::Operator => &[ReadTags, AckAlarms, WriteSetpoints],
            Role::Engineer => &[ReadTags, AckAlarms, WriteSetpoints, ChangeConfig],
            Role::Admin => &[
                ReadTags,
                AckAlarms,
                WriteSetpoints,
                ChangeConfig,
                ManageUsers,
                ManageDevices,
                ReadAudit,
            ],
            Role::Device => &[],
        }
    }

    pub fn allows(self, p: Permission) -> bool {
        self.permissions().contains(&p)
    }

    /// Whether a token of role `self` may be made for a user of role `user`: the token's
    /// permissions must be a subset of the user's.
    pub fn within(self, user: Role) -> bool {
        self.permissions()
            .iter()
            .all(|p| user.permissions().contains(p))
            && (self != Role::Device || user == Role::Device)
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Engineer => "engineer",
            Role::Admin => "admin",
            Role::Device => "device",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Role, String> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "operator" => Ok(Role::Operator),
            "engineer" => Ok(Role::Engineer),
            "admin" => Ok(Role::Admin),
            "device" => Ok(Role::Device),
            other => Err(format!(
                "unknown role {other:?}; expected viewer, operator, engineer, admin or device"
            )),
        }
    }
}

/// The permission table rendered as a Markdown table (for `ironplant` help and the docs).
pub fn permission_table_markdown() -> String {
    let roles = [
        Role::Viewer,
        Role::Operator,
        Role::Engineer,
        Role::Admin,
        Role::Device,
    ];
    let mut s = String::from("| permission |");
    for r in roles {
        s.push_str(&format!(" {r} |"));
    }
    s.push_str("\n|---|");
    for _ in roles {
        s.push_str("---|");
    }
    for p in Permission::ALL {
        let name = serde_json::to_value(p)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        s.push_str(&format!("\n| {name} |"));
        for r in roles {
            s.push_str(if r.allows(p) { " yes |" } else { " |" });
        }
    }
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_by_privilege() {
        for w in Role::HUMAN.windows(2) {
            assert!(w[0].within(w[1]), "{} within {}", w[0], w[1]);
            assert!(!w[1].within(w[0]), "{} not within {}", w[1], w[0]);
        }
        assert!(!Role::Device.within(Role::Admin));
        assert!(Role::Admin.allows(Permission::ReadAudit));
        assert!(!Role::Engineer.allows(Permission::ManageUsers));
        assert!(!Role::Viewer.allows(Permission::WriteSetpoints));
        assert!(Role::Device.permissions().is_empty());
    }

    #[test]
    fn role_names_round_trip() {
        for r in [
            Role::Viewer,
            Role::Operator,
            Role::Engineer,
            Role::Admin,
            Role::Device,
        ] {
            assert_eq!(r.as_str().parse::<Role>(), Ok(r));
        }
        assert!("root".parse::<Role>().is_err());
    }

    #[test]
    fn permission_table_matches_docs() {
        let table = permission_table_markdown();
        let arch = include_str!("../../../ARCHITECTURE.md");
        assert!(
            arch.contains(&table),
            "ARCHITECTURE.md must contain the permission table exactly as rendered:\n{table}"
        );
    }
}
