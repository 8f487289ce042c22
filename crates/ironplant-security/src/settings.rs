//! The `[security]` section of `ironplant.toml`: settings, defaults and validation, owned by
//! this crate and parsed through core's [`Section`] (errors at file:line:col like every other).

use std::collections::BTreeMap;

use ironplant_core::config::{parse_path, section, Config, Diagnostics, Section};
use ironplant_core::TagPath;
use serde::Deserialize;
use toml::Spanned;

impl Section for SecuritySettings {
    const KEY: &'static str = "security";

    fn parse(source: &str, _plant: &Config, d: &mut Diagnostics) -> SecuritySettings {
        match section::<RawSecurity>(source, Self::KEY) {
            Ok(raw) => validate_security(d, raw),
            Err(e) => {
                d.errors.push(e);
                SecuritySettings::default()
            }
        }
    }
}

/// The `[security]` section: MQTT ACL rules, device client ids and per-user tag-prefix
/// limits (one policy for REST, MQTT and later the HMI and command path).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SecuritySettings {
    /// ACL rules (`<who> allow|deny publish|subscribe|both <filter>`), replacing the
    /// built-in defaults when given.
    pub acl: Option<Vec<String>>,
    /// Client id patterns a device may use (`%u` = its name, trailing `*`); `None`: the
    /// default `["%u", "%u-*"]`.
    pub device_client_ids: Option<Vec<String>>,
    /// Per-user tag-prefix limits: user → (read prefixes, write prefixes); `None`: no limit
    /// in that direction.
    pub tag_scopes: BTreeMap<String, ScopeSettings>,
}

/// One user's tag-prefix limits (`[security.tag_scopes.<user>]`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ScopeSettings {
    pub read: Option<Vec<TagPath>>,
    pub write: Option<Vec<TagPath>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSecurity {
    acl: Option<Vec<Spanned<String>>>,
    device_client_ids: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    tag_scopes: BTreeMap<String, RawScope>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScope {
    read: Option<Vec<Spanned<String>>>,
    write: Option<Vec<Spanned<String>>>,
}

fn validate_security(c: &mut Diagnostics, raw: Option<RawSecurity>) -> SecuritySettings {
    let Some(raw) = raw else {
        return SecuritySettings::default();
    };
    let acl = raw.acl.map(|rules| {
        rules
            .into_iter()
            .map(|r| {
                if let Err(e) = crate::Acl::parse(r.get_ref()) {
                    c.err(
                        r.span(),
                        format!("invalid ACL rule {:?}: {e}", r.get_ref()),
                        Some("write `<all|role:R|user:U|device:D> allow|deny publish|subscribe|both <topic filter>`, e.g. \"role:viewer allow subscribe acme/#\"".to_owned()),
                    );
                }
                r.into_inner()
            })
            .collect()
    });
    let device_client_ids = raw.device_client_ids.map(|ids| {
        ids.into_iter()
            .map(|p| {
                let v = p.get_ref();
                let stem = v.strip_suffix('*').unwrap_or(v);
                if !v.contains("%u") || stem.contains('*') || v.is_empty() {
                    c.err(
                        p.span(),
                        format!("device client id pattern {v:?} must contain %u (the device name) and may end with one *"),
                        Some("e.g. \"%u\" or \"%u-*\"".to_owned()),
                    );
                }
                p.into_inner()
            })
            .collect()
    });
    let mut tag_scopes = BTreeMap::new();
    for (user, scope) in raw.tag_scopes {
        let mut paths = |list: Option<Vec<Spanned<String>>>| {
            list.map(|l| {
                l.iter()
                    .filter_map(|p| parse_path(c, p, "tag prefix"))
                    .collect::<Vec<_>>()
            })
        };
        let read = paths(scope.read);
        let write = paths(scope.write);
        tag_scopes.insert(user, ScopeSettings { read, write });
    }
    SecuritySettings {
        acl,
        device_client_ids,
        tag_scopes,
    }
}
