//! The Ironplant server as a library: the platform ([`ironplant_runtime::Platform`]) with its
//! listeners (HTTPS API, MQTT over TLS, plain MQTT, MQTT over WebSocket), the security
//! directory (CA, users, audit), bridges and the audit witness; the demo (platform +
//! simulator + enrolled edge node) and the standalone simulator. The `ironplant` binary is the
//! command line over this crate and the admin, query and import commands.

pub mod audit_witness;
pub mod datadir;
pub mod detection;
pub mod opcua;
pub mod platform;
pub mod private_dir;
pub mod secure;
