//! The `[sparkplug]` section of `ironplant.toml`: settings, defaults and validation, owned by
//! this crate and parsed through core's [`Section`] (errors at file:line:col like every other).

use std::time::Duration;

use ironplant_core::config::{parse_duration, section, Config, Diagnostics, Section};
use ironplant_core::path::MAX_DEPTH;
use ironplant_core::TagPath;
use serde::Deserialize;
use toml::Spanned;

impl Section for SparkplugSettings {
    const KEY: &'static str = "sparkplug";

    fn parse(source: &str, _plant: &Config, d: &mut Diagnostics) -> SparkplugSettings {
        match section::<RawSparkplug>(source, Self::KEY) {
            Ok(raw) => validate_sparkplug(d, raw),
            Err(e) => {
                d.errors.push(e);
                SparkplugSettings::default()
            }
        }
    }
}

/// The `[sparkplug]` section: the Sparkplug B host application on the embedded broker.
#[derive(Debug, Clone, PartialEq)]
pub struct SparkplugSettings {
    /// Run the host whenever the MQTT broker runs.
    pub enabled: bool,
    /// The host id: its STATE topic is `spBv1.0/STATE/<host_id>`.
    pub host_id: String,
    /// Levels in front of every Sparkplug tag path (`<prefix>/<group>/<node>/<device>/<metric>`);
    /// `None` puts the group at the root.
    pub prefix: Option<TagPath>,
    /// How long a write (NCMD/DCMD) waits for the edge node to report the written value.
    pub write_timeout: Duration,
}

impl Default for SparkplugSettings {
    fn default() -> Self {
        SparkplugSettings {
            enabled: true,
            host_id: "ironplant".to_owned(),
            prefix: None,
            write_timeout: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSparkplug {
    enabled: Option<bool>,
    host_id: Option<Spanned<String>>,
    prefix: Option<Spanned<String>>,
    write_timeout: Option<Spanned<String>>,
}

/// Sparkplug prefix levels at most: group, node, device and one metric level must still fit.
const SPARKPLUG_PREFIX_MAX: usize = MAX_DEPTH - 4;

fn validate_sparkplug(c: &mut Diagnostics, raw: Option<RawSparkplug>) -> SparkplugSettings {
    let d = SparkplugSettings::default();
    let Some(raw) = raw else { return d };
    let host_id = match raw.host_id {
        None => d.host_id,
        Some(h) => {
            let id = h.get_ref();
            // Sparkplug ids are UTF-8 without '/', '+' or '#'; we also keep them short and
            // printable so the STATE topic is easy to type.
            let ok = !id.is_empty()
                && id.len() <= 64
                && id
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '_' | '-' | '.'));
            if !ok {
                c.err(
                    h.span(),
                    format!("invalid Sparkplug host id {id:?}"),
                    Some(
                        "use 1-64 characters from A-Z a-z 0-9 _ - ., e.g. \"ironplant\"".to_owned(),
                    ),
                );
            }
            id.clone()
        }
    };
    let prefix = raw.prefix.and_then(|p| {
        let text = p.get_ref().trim_end_matches('/');
        if text.is_empty() {
            return None;
        }
        match TagPath::parse(text) {
            Ok(path) if path.depth() <= SPARKPLUG_PREFIX_MAX => Some(path),
            Ok(path) => {
                c.err(
                    p.span(),
                    format!(
                        "Sparkplug prefix {text:?} has {} levels; at most {SPARKPLUG_PREFIX_MAX} leave room for group/node/device/metric",
                        path.depth()
                    ),
                    Some("shorten it, e.g. \"acme/lyon/sparkplug\"".to_owned()),
                );
                None
            }
            Err(e) => {
                c.err(
                    p.span(),
                    format!("invalid Sparkplug prefix {text:?}: {e}"),
                    Some("use a path prefix such as \"acme/lyon/sparkplug\" (\"\" for none)".to_owned()),
                );
                None
            }
        }
    });
    SparkplugSettings {
        enabled: raw.enabled.unwrap_or(true),
        host_id,
        prefix,
        write_timeout: parse_duration(c, &raw.write_timeout, "write_timeout", d.write_timeout),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ironplant_core::config::{parse_with, ConfigErrors, Registry};

    fn parse(file: &str, source: &str) -> Result<Config, ConfigErrors> {
        parse_with(file, source, &Registry::new().with::<SparkplugSettings>())
    }

    #[test]
    fn sparkplug_section() {
        let d = parse("e.toml", "")
            .expect("empty config")
            .get::<SparkplugSettings>();
        assert_eq!(d, SparkplugSettings::default().into());
        assert!(d.enabled && d.host_id == "ironplant" && d.prefix.is_none());
        let cfg = parse(
            "s.toml",
            "[sparkplug]\nenabled = false\nhost_id = \"scada-1\"\nprefix = \"acme/lyon/sp/\"\nwrite_timeout = \"1500ms\"\n",
        )
        .expect("valid");
        assert!(!cfg.get::<SparkplugSettings>().enabled);
        assert_eq!(cfg.get::<SparkplugSettings>().host_id, "scada-1");
        assert_eq!(
            cfg.get::<SparkplugSettings>().write_timeout,
            Duration::from_millis(1500)
        );
        assert_eq!(
            cfg.get::<SparkplugSettings>()
                .prefix
                .as_ref()
                .map(TagPath::as_str),
            Some("acme/lyon/sp")
        );
        let err = parse(
            "s.toml",
            "[sparkplug]\nhost_id = \"a/b\"\nprefix = \"a/b/c/d\"\n",
        )
        .expect_err("invalid");
        let text = err.to_string();
        assert_eq!(err.errors.len(), 2, "{text}");
        assert!(text.contains("s.toml:2:11"), "{text}");
        assert!(text.contains("invalid Sparkplug host id \"a/b\""), "{text}");
        assert!(text.contains("s.toml:3:10"), "{text}");
        assert!(text.contains("has 4 levels; at most 3"), "{text}");
    }
}
