//! OPC UA for Ironplant (issue 15): a client connector (browse, subscriptions, writes through
//! the command path) and a server of the Unified Namespace. Work in progress.

pub mod client;
pub mod map;
pub mod pki;
