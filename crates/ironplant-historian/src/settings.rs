//! The `[historian]` section of `ironplant.toml`: settings, defaults and validation, owned by
//! this crate and parsed through core's [`Section`] (errors at file:line:col like every other).

use std::time::Duration;

use ironplant_core::config::{parse_duration, section, Config, Diagnostics, Section};
use ironplant_core::TagPath;
use serde::Deserialize;
use toml::Spanned;

impl Section for HistorianSettings {
    const KEY: &'static str = "historian";

    fn parse(source: &str, _plant: &Config, d: &mut Diagnostics) -> HistorianSettings {
        match section::<RawHistorian>(source, Self::KEY) {
            Ok(raw) => validate_historian(d, raw),
            Err(e) => {
                d.errors.push(e);
                HistorianSettings::default()
            }
        }
    }
}

/// The `[historian]` section.
#[derive(Debug, Clone, PartialEq)]
pub struct HistorianSettings {
    pub enabled: bool,
    /// Group-commit window of the WAL (one fsync per window).
    pub commit_interval: Duration,
    /// How often samples in memory are compressed into chunks (at the latest).
    pub flush_interval: Duration,
    /// Samples in memory that trigger compression into chunks.
    pub flush_samples: usize,
    /// Raw-data retention by tag prefix (longest prefix wins).
    pub retention: Vec<RetentionRule>,
    /// Lossy compression by tag prefix (longest prefix wins); lossless otherwise.
    pub lossy: Vec<LossyRule>,
}

impl Default for HistorianSettings {
    fn default() -> Self {
        HistorianSettings {
            enabled: true,
            commit_interval: Duration::from_millis(2),
            flush_interval: Duration::from_secs(600),
            flush_samples: 4_000_000,
            retention: Vec::new(),
            lossy: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct RetentionRule {
    pub prefix: String,
    pub keep: Duration,
}

/// A lossy compression rule, as historians offer it.
#[derive(Debug, Clone, PartialEq)]
pub struct LossyRule {
    pub prefix: String,
    pub method: LossyMethod,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LossyMethod {
    /// Store a value only when it moved more than this from the last stored one.
    Deadband(f64),
    /// Swinging-door trending with this compression deviation; a point at least every
    /// `max_interval` if set.
    SwingingDoor {
        deviation: f64,
        max_interval: Option<Duration>,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHistorian {
    enabled: Option<bool>,
    commit_interval: Option<Spanned<String>>,
    flush_interval: Option<Spanned<String>>,
    flush_samples: Option<Spanned<i64>>,
    #[serde(default)]
    retention: Vec<RawRetention>,
    #[serde(default)]
    lossy: Vec<RawLossy>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetention {
    prefix: Spanned<String>,
    keep: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLossy {
    prefix: Spanned<String>,
    deadband: Option<Spanned<f64>>,
    swinging_door: Option<Spanned<f64>>,
    max_interval: Option<Spanned<String>>,
}

fn validate_prefix(c: &mut Diagnostics, raw: &Spanned<String>) -> String {
    let p = raw.get_ref().trim_end_matches('/');
    if p.is_empty() {
        return String::new();
    }
    if let Err(e) = TagPath::parse(p) {
        c.err(
            raw.span(),
            format!("invalid prefix {:?}: {e}", raw.get_ref()),
            Some("use a path prefix such as \"acme/lyon\" (\"\" matches every tag)".to_owned()),
        );
    }
    p.to_owned()
}

fn validate_historian(c: &mut Diagnostics, raw: Option<RawHistorian>) -> HistorianSettings {
    let d = HistorianSettings::default();
    let Some(h) = raw else { return d };
    let flush_samples = match &h.flush_samples {
        None => d.flush_samples,
        Some(n) => usize::try_from(*n.get_ref())
            .ok()
            .filter(|n| (1_000..=100_000_000).contains(n))
            .unwrap_or_else(|| {
                c.err(
                    n.span(),
                    format!("flush_samples {} is out of range", n.get_ref()),
                    Some("use 1000..=100000000".to_owned()),
                );
                d.flush_samples
            }),
    };
    let retention = h
        .retention
        .iter()
        .map(|r| RetentionRule {
            prefix: validate_prefix(c, &r.prefix),
            keep: parse_duration(c, &Some(r.keep.clone()), "keep", Duration::MAX),
        })
        .collect();
    let lossy = h
        .lossy
        .iter()
        .filter_map(|l| {
            let prefix = validate_prefix(c, &l.prefix);
            let positive = |c: &mut Diagnostics, x: &Spanned<f64>, what: &str| {
                let ok = x.get_ref().is_finite() && *x.get_ref() > 0.0;
                if !ok {
                    c.err(
                        x.span(),
                        format!("{what} {} must be a positive number", x.get_ref()),
                        Some("give it in the tag's engineering units, e.g. 0.5".to_owned()),
                    );
                }
                ok
            };
            let method = match (&l.deadband, &l.swinging_door) {
                (Some(db), None) => {
                    positive(c, db, "deadband").then_some(LossyMethod::Deadband(*db.get_ref()))
                }
                (None, Some(sd)) => {
                    positive(c, sd, "swinging_door").then(|| LossyMethod::SwingingDoor {
                        deviation: *sd.get_ref(),
                        max_interval: l.max_interval.as_ref().map(|m| {
                            parse_duration(
                                c,
                                &Some(m.clone()),
                                "max_interval",
                                Duration::from_secs(600),
                            )
                        }),
                    })
                }
                _ => {
                    c.err(
                        l.prefix.span(),
                        "a lossy rule needs exactly one of deadband or swinging_door",
                        Some("e.g. swinging_door = 0.5 (engineering units)".to_owned()),
                    );
                    None
                }
            };
            method.map(|method| LossyRule { prefix, method })
        })
        .collect();
    HistorianSettings {
        enabled: h.enabled.unwrap_or(true),
        commit_interval: parse_duration(
            c,
            &h.commit_interval,
            "commit_interval",
            d.commit_interval,
        ),
        flush_interval: parse_duration(c, &h.flush_interval, "flush_interval", d.flush_interval),
        flush_samples,
        retention,
        lossy,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ironplant_core::config::{parse_with, ConfigErrors, Registry};

    fn parse(file: &str, source: &str) -> Result<Config, ConfigErrors> {
        parse_with(file, source, &Registry::new().with::<HistorianSettings>())
    }

    #[test]
    fn historian_section() {
        let text = r#"
[historian]
commit_interval = "5ms"

[[historian.retention]]
prefix = "acme/lyon"
keep = "90days"

[[historian.lossy]]
prefix = "acme/lyon/x"
swinging_door = 0.5
max_interval = "10m"

[[historian.lossy]]
prefix = "acme/lyon/y"
deadband = -1.0
"#;
        let errs = parse("h.toml", text).expect_err("negative deadband");
        assert_eq!(errs.errors.len(), 1, "{errs}");
        assert!(errs.errors[0]
            .message
            .contains("deadband -1 must be a positive number"));
        let cfg = parse("h.toml", &text.replace("-1.0", "0.1")).expect("valid");
        let h = cfg.get::<HistorianSettings>();
        assert_eq!(h.commit_interval, Duration::from_millis(5));
        assert_eq!(
            h.retention,
            vec![RetentionRule {
                prefix: "acme/lyon".into(),
                keep: Duration::from_secs(90 * 86400)
            }]
        );
        assert_eq!(
            h.lossy[0].method,
            LossyMethod::SwingingDoor {
                deviation: 0.5,
                max_interval: Some(Duration::from_secs(600))
            }
        );
        assert_eq!(h.lossy[1].method, LossyMethod::Deadband(0.1));
        assert_eq!(
            parse("e.toml", "")
                .expect("empty config")
                .get::<HistorianSettings>(),
            HistorianSettings::default().into()
        );
    }
}
