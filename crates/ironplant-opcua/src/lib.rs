//! OPC UA for Ironplant (issue 15): a client connector (browse, subscriptions, writes through
//! the command path) and a server of the Unified Namespace.

pub mod browse;
pub mod client;
pub mod map;
pub mod pki;
pub mod server;
pub mod settings;
pub mod source;

/// The OPC UA stack (async-opcua), for the types of this crate's API (NodeId, Variant...).
pub use opcua;
