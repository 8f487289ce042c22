//! The one authorisation policy for tags, asked by every path that reads or writes them: the
//! REST API, MQTT (PUBLISH, SUBSCRIBE, wills, resumed sessions; over TCP, TLS and WebSocket)
//! and, later, the HMI and the command path. A user has the same rights everywhere.
//!
//! Two layers decide together (both must allow):
//! - the role's permissions ([`crate::Role`]) and, for MQTT topics, the ACL ([`crate::Acl`]);
//! - tag-prefix rules ([`TagScopes`]): per user (configured in the TOML `[security]` section,
//!   or with `ironplant user scope`, in `<security-dir>/api-scopes.json`) and per token
//!   (written when a scoped token is created). A tag is reachable only if *every* rule that
//!   applies to the caller allows it; prefixes match whole levels (`a/b` covers `a/b` and
//!   `a/b/c`, not `a/bc`).
//!
//! Over MQTT a tag is its Unified Namespace topic (`<uns_prefix>/<tag path>`): an identity
//! with read rules may subscribe only to filters that stay inside a readable prefix (no
//! wildcard before the prefix ends), and nothing outside the UNS (`spBv1.0/...` would carry
//! the same tags unfiltered); one with write rules may publish only inside a writable prefix.
//! A command request (`<uns_prefix>/_cmd/<tag path>`, [`command_tag`]) is a write: it needs the
//! role's write_setpoints permission and the write prefixes, whatever the topic ACL says.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ironplant_core::TagPath;
use serde::{Deserialize, Serialize};

use crate::fsutil::{write_atomic, FileLock, PRIVATE};
use crate::users::{AuthMethod, Identity};

/// The prefix rules, in the security directory next to `users.json`.
pub const SCOPES_FILE: &str = "api-scopes.json";

/// Tag path prefixes one user or token is limited to. `None` for a direction: no limit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrefixRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write: Option<Vec<String>>,
}

impl PrefixRule {
    pub fn is_unlimited(&self) -> bool {
        self.read.is_none() && self.write.is_none()
    }
}

/// The contents of `<data-dir>/security/api-scopes.json`:
/// `{"users": {"alice": {"read": ["site/area1"], "write": ["site/area1/line2"]}},
///   "tokens": {"<token id>": {"read": [...]}}}`, plus the rules of the configuration file
/// (`configured`, never written to the file). Users and tokens not named are limited by
/// their role only.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TagScopes {
    #[serde(default)]
    pub users: BTreeMap<String, PrefixRule>,
    #[serde(default)]
    pub tokens: BTreeMap<String, PrefixRule>,
    /// Per-user rules from the configuration file; they apply on top of `users`.
    #[serde(skip)]
    pub configured: BTreeMap<String, PrefixRule>,
}

impl TagScopes {
    pub fn path(sec: &crate::Security) -> PathBuf {
        sec.dir().join(SCOPES_FILE)
    }

    /// Checks every prefix of `rule` is a tag path; the error names the owner and prefix.
    pub fn check_rule(who: &str, rule: &PrefixRule) -> Result<(), String> {
        for p in rule.read.iter().chain(&rule.write).flatten() {
            TagPath::parse(p)
                .map_err(|e| format!("prefix {p:?} of {who:?} is not a tag path: {e}"))?;
        }
        Ok(())
    }

    /// Reads the rules; a missing file means no prefix limits. A damaged file is an error
    /// (callers refuse access rather than ignore rules they cannot read).
    pub fn load(path: &Path) -> Result<TagScopes, String> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(TagScopes::default()),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        let scopes: TagScopes = serde_json::from_slice(&bytes)
            .map_err(|e| format!("{} is not valid: {e}", path.display()))?;
        for (who, rule) in scopes.users.iter().chain(&scopes.tokens) {
            Self::check_rule(who, rule).map_err(|e| format!("{}: {e}", path.display()))?;
        }
        Ok(scopes)
    }

    /// Read-modify-write under the inter-process lock the other security files use, so the
    /// API and the CLI (`user scope`) never lose each other's change; written atomically, 0600.
    fn update(path: &Path, change: impl FnOnce(&mut TagScopes) -> bool) -> Result<(), String> {
        let _lock = FileLock::acquire(&path.with_extension("lock")).map_err(|e| e.to_string())?;
        let mut scopes = TagScopes::load(path)?;
        if !change(&mut scopes) {
            return Ok(());
        }
        let json = serde_json::to_vec_pretty(&scopes)
            .map_err(|e| format!("cannot encode the tag scopes: {e}"))?;
        write_atomic(path, &json, PRIVATE).map_err(|e| e.to_string())
    }

    /// Sets (or with an unlimited rule, removes) the rule of token `id`, atomically.
    pub fn set_token_rule(path: &Path, id: &str, rule: &PrefixRule) -> Result<(), String> {
        Self::check_rule(id, rule)?;
        Self::update(path, |s| {
            if rule.is_unlimited() {
                s.tokens.remove(id).is_some()
            } else {
                s.tokens.insert(id.to_owned(), rule.clone());
                true
            }
        })
    }

    /// Sets (or with an unlimited rule, removes) the rule of user `name`, atomically.
    pub fn set_user_rule(path: &Path, name: &str, rule: &PrefixRule) -> Result<(), String> {
        Self::check_rule(name, rule)?;
        Self::update(path, |s| {
            if rule.is_unlimited() {
                s.users.remove(name).is_some()
            } else {
                s.users.insert(name.to_owned(), rule.clone());
                true
            }
        })
    }

    /// The rules that apply to a user, and for a token, to the token too.
    pub fn access(&self, user: &str, token: Option<&str>) -> TagAccess {
        let mut rules: Vec<PrefixRule> = Vec::new();
        rules.extend(self.users.get(user).cloned());
        rules.extend(self.configured.get(user).cloned());
        rules.extend(token.and_then(|t| self.tokens.get(t)).cloned());
        TagAccess { rules }
    }

    /// The rules that apply to `identity`, and the token's own rule.
    pub fn access_for(&self, identity: &Identity) -> (TagAccess, Option<PrefixRule>) {
        let token = match &identity.via {
            AuthMethod::Token { id } => Some(id.as_str()),
            _ => None,
        };
        let token_rule = token.and_then(|t| self.tokens.get(t)).cloned();
        (self.access(&identity.user, token), token_rule)
    }
}

/// Whether `path` is `prefix` or below it, on whole levels.
pub fn within(path: &str, prefix: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    prefix.is_empty()
        || path == prefix
        || (path.starts_with(prefix) && path.as_bytes().get(prefix.len()) == Some(&b'/'))
}

/// Whether every topic an MQTT `filter` can match is `prefix` or below it: the filter's first
/// levels are the prefix's, literally (a wildcard there could reach elsewhere).
pub fn filter_within(filter: &str, prefix: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    if prefix.is_empty() {
        return true;
    }
    let mut f = filter.split('/');
    prefix.split('/').all(|p| f.next() == Some(p))
}

/// The prefix rules of one caller. Empty: no limits beyond the role.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TagAccess {
    rules: Vec<PrefixRule>,
}

impl TagAccess {
    pub fn unrestricted() -> TagAccess {
        TagAccess::default()
    }

    pub fn new(rules: Vec<PrefixRule>) -> TagAccess {
        TagAccess { rules }
    }

    /// No read rule applies (reads are limited by the role only).
    pub fn reads_unlimited(&self) -> bool {
        self.rules.iter().all(|r| r.read.is_none())
    }

    pub fn writes_unlimited(&self) -> bool {
        self.rules.iter().all(|r| r.write.is_none())
    }

    pub fn can_read(&self, tag: &str) -> bool {
        self.rules.iter().all(|r| {
            r.read
                .as_ref()
                .is_none_or(|ps| ps.iter().any(|p| within(tag, p)))
        })
    }

    pub fn can_write(&self, tag: &str) -> bool {
        self.rules.iter().all(|r| {
            r.write
                .as_ref()
                .is_none_or(|ps| ps.iter().any(|p| within(tag, p)))
        })
    }

    /// An asset is shown if it is readable or on the way to something readable.
    pub fn can_see_asset(&self, asset: &str) -> bool {
        self.rules.iter().all(|r| {
            r.read
                .as_ref()
                .is_none_or(|ps| ps.iter().any(|p| within(asset, p) || within(p, asset)))
        })
    }

    /// May subscribe to MQTT `filter`, where tags are published under `uns_prefix`.
    pub fn can_subscribe(&self, uns_prefix: &str, filter: &str) -> bool {
        if self.reads_unlimited() {
            return true;
        }
        let Some(rest) = strip_uns(uns_prefix, filter) else {
            return false;
        };
        self.rules.iter().all(|r| {
            r.read
                .as_ref()
                .is_none_or(|ps| ps.iter().any(|p| filter_within(rest, p)))
        })
    }

    /// May publish on MQTT `topic`, where tags are published under `uns_prefix`.
    pub fn can_publish(&self, uns_prefix: &str, topic: &str) -> bool {
        if self.writes_unlimited() {
            return true;
        }
        strip_uns(uns_prefix, topic).is_some_and(|tag| self.can_write(tag))
    }
}

/// The topic level under the UNS prefix where commands are requested:
/// `<uns_prefix>/_cmd/<tag path>` asks to write the tag (the command path's MQTT side).
pub const COMMAND_LEVEL: &str = "_cmd";

/// The tag a command topic asks to write (`<uns_prefix>/_cmd/<tag path>`); `None` for any
/// other topic.
pub fn command_tag<'a>(uns_prefix: &str, topic: &'a str) -> Option<&'a str> {
    let prefix = uns_prefix.trim_end_matches('/');
    let rest = if prefix.is_empty() {
        topic
    } else {
        topic.strip_prefix(prefix)?.strip_prefix('/')?
    };
    rest.strip_prefix(COMMAND_LEVEL)?
        .strip_prefix('/')
        .filter(|t| !t.is_empty())
}

/// The tag part of a UNS topic or filter; `None` outside the UNS.
fn strip_uns<'a>(uns_prefix: &str, topic: &'a str) -> Option<&'a str> {
    let prefix = uns_prefix.trim_end_matches('/');
    if prefix.is_empty() {
        return (!topic.starts_with('$') && !topic.starts_with("spBv1.0/")).then_some(topic);
    }
    topic.strip_prefix(prefix)?.strip_prefix('/')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(read: &[&str], write: &[&str]) -> TagAccess {
        let v = |x: &[&str]| (!x.is_empty()).then(|| x.iter().map(|s| s.to_string()).collect());
        TagAccess::new(vec![PrefixRule {
            read: v(read),
            write: v(write),
        }])
    }

    #[test]
    fn mqtt_filters_stay_inside_the_readable_prefixes() {
        let a = access(&["acme/lyon/line1"], &[]);
        for ok in [
            "acme/lyon/line1",
            "acme/lyon/line1/#",
            "acme/lyon/line1/+/speed",
            "acme/lyon/line1/filler/speed",
        ] {
            assert!(a.can_subscribe("", ok), "{ok}");
        }
        for no in [
            "#",
            "acme/#",
            "acme/+/line1/#",
            "acme/lyon/line10/#",
            "acme/lyon/+",
            "spBv1.0/#",
            "$SYS/#",
        ] {
            assert!(!a.can_subscribe("", no), "{no}");
        }
        assert!(a.can_subscribe("uns", "uns/acme/lyon/line1/#"));
        assert!(!a.can_subscribe("uns", "acme/lyon/line1/#"));
        assert!(!a.can_subscribe("uns", "uns/#"));
        // Unlimited reads: the ACL alone decides.
        assert!(access(&[], &["x"]).can_subscribe("", "#"));
    }

    #[test]
    fn mqtt_publish_stays_inside_the_writable_prefixes() {
        let a = access(&[], &["acme/lyon/line1/filler"]);
        assert!(a.can_publish("", "acme/lyon/line1/filler/setpoint"));
        assert!(!a.can_publish("", "acme/lyon/line1/capper/setpoint"));
        assert!(!a.can_publish("", "spBv1.0/g/NCMD/n"));
        assert!(access(&["x"], &[]).can_publish("", "anything"));
    }

    #[test]
    fn every_rule_must_allow() {
        let mut s = TagScopes::default();
        s.users.insert(
            "alice".into(),
            PrefixRule {
                read: Some(vec!["acme".into()]),
                write: None,
            },
        );
        s.configured.insert(
            "alice".into(),
            PrefixRule {
                read: Some(vec!["acme/lyon".into()]),
                write: None,
            },
        );
        let a = s.access("alice", None);
        assert!(a.can_read("acme/lyon/x"));
        assert!(!a.can_read("acme/paris/x"));
        assert!(s.access("bob", None).can_read("anything"));
    }
}
