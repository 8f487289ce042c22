//! The platform's configuration: the plant (core) and the sections of the crates the runtime
//! composes, each owned and validated by its crate. Layers above add theirs
//! ([`registry`] + their own sections, e.g. the API's `[http]` and `[security]`).

use ironplant_control::command::{CommandSettings, InterlockSettings};
use ironplant_core::config::{Config, ConfigErrors, Registry};
use ironplant_historian::settings::HistorianSettings;
use ironplant_ingest::IngestSettings;
use ironplant_mqtt::settings::{Bridges, MqttSettings};
use ironplant_sparkplug::settings::SparkplugSettings;

/// The sections the runtime's components read. A new domain adds one line here (and its
/// component one registration line in the platform builder).
pub fn registry() -> Registry {
    let r = Registry::new()
        .with::<HistorianSettings>()
        .with::<MqttSettings>()
        .with::<Bridges>()
        .with::<SparkplugSettings>()
        .with::<IngestSettings>()
        // OPC UA connections define tags (their nodes): before the sections that name tags.
        .with::<ironplant_opcua::settings::OpcuaSettings>()
        .with::<ironplant_control::expr::ComputedSettings>()
        .with::<ironplant_control::expr::RuleSettings>()
        // The command path's sections (after the tags, before the alarms).
        .with::<CommandSettings>()
        .with::<InterlockSettings>()
        // After every section that defines tags (its relations name them).
        .with::<ironplant_integrity::IntegrityConfig>();
    // After the sections that define tags, so alarms on them pass the unknown-tag check.
    ironplant_control::alarm::config::register(r)
}

/// Parses `source` (named `file` in errors) with the runtime's sections.
pub fn parse(file: &str, source: &str) -> Result<Config, ConfigErrors> {
    ironplant_core::config::parse_with(file, source, &registry())
}
