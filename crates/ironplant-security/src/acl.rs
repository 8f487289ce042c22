//! MQTT access control lists.
//!
//! A rule is `<who> allow|deny publish|subscribe|both <topic filter>`, where `<who>` is
//! `all`, `role:<role>`, `user:<name>` or `device:<name>`, and the filter may use `%c` (the
//! client id) and `%u` (the user or device name) as whole or partial topic levels.
//!
//! Decisions:
//! - Default deny. A deny rule that applies wins over any allow rule, whatever the order.
//! - PUBLISH to topic `t`: allowed when an allow rule's filter matches `t` and no deny rule's
//!   filter matches `t`.
//! - SUBSCRIBE to filter `s`: allowed only when *every* topic `s` can match is allowed: one
//!   allow rule's filter must contain `s` (each topic matching `s` matches it) and no deny
//!   rule's filter may overlap `s` (share any topic). So `#` or `+` in a request can never
//!   reach beyond what the rules grant. (An `s` covered only by the union of several allow
//!   rules is refused: conservative, and simple to reason about.)
//! - `%c`/`%u` substituted with a value containing `/`, `+`, `#`, NUL, starting with `$`, or
//!   empty would change the filter's shape: such an allow rule is skipped and such a deny
//!   rule applies to everything (fail closed).
//! - Topics starting with `$` are matched as MQTT does: a filter starting with a wildcard
//!   does not reach them.

use std::fmt;

use crate::error::{Error, Result};
use crate::roles::Role;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Allow,
    Deny,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Publish,
    Subscribe,
    Both,
}

impl Access {
    fn covers(self, a: Access) -> bool {
        self == Access::Both || self == a
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    All,
    Role(Role),
    User(String),
    Device(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclRule {
    pub subject: Subject,
    pub effect: Effect,
    pub access: Access,
    pub filter: String,
}

/// Who is asking: from the broker's `Principal`.
#[derive(Debug, Clone, Copy)]
pub struct AclIdentity<'a> {
    pub client_id: &'a str,
    /// User or device name; `None` for an anonymous client.
    pub name: Option<&'a str>,
    pub role: Option<Role>,
    /// True when authenticated by a device certificate.
    pub is_device: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Acl {
    rules: Vec<AclRule>,
}

impl fmt::Display for AclRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let who = match &self.subject {
            Subject::All => "all".to_owned(),
            Subject::Role(r) => format!("role:{r}"),
            Subject::User(u) => format!("user:{u}"),
            Subject::Device(d) => format!("device:{d}"),
        };
        let effect = match self.effect {
            Effect::Allow => "allow",
            Effect::Deny => "deny",
        };
        let access = match self.access {
            Access::Publish => "publish",
            Access::Subscribe => "subscribe",
            Access::Both => "both",
        };
        write!(f, "{who} {effect} {access} {}", self.filter)
    }
}

/// The rules used when none are configured: people read everything (engineers and admins
/// also write), devices publish only under their own Sparkplug node and receive only its
/// commands and the host state, and `$SYS` is for admins.
pub const DEFAULT_RULES: &str = "\
role:admin allow both #
role:admin allow subscribe $SYS/#
role:engineer allow both #
role:operator allow subscribe #
role:viewer allow subscribe #
role:device allow publish spBv1.0/+/+/%u
role:device allow publish spBv1.0/+/+/%u/#
role:device allow subscribe spBv1.0/+/NCMD/%u
role:device allow subscribe spBv1.0/+/DCMD/%u/#
role:device allow subscribe spBv1.0/STATE/+
role:device allow both devices/%u/#
";

impl Acl {
    pub fn new(rules: Vec<AclRule>) -> Result<Acl> {
        for r in &rules {
            check_filter(&r.filter).map_err(|why| Error::Acl(format!("rule `{r}`: {why}")))?;
        }
        Ok(Acl { rules })
    }

    pub fn rules(&self) -> &[AclRule] {
        &self.rules
    }

    pub fn default_rules() -> Acl {
        // DEFAULT_RULES is a constant checked by a test; parsing cannot fail.
        Acl::parse(DEFAULT_RULES).unwrap_or_default()
    }

    /// Parses one rule a line; blank lines and lines starting with `#` followed by a space
    /// (or alone) are comments. All errors are reported together, with line numbers.
    pub fn parse(text: &str) -> Result<Acl> {
        let mut rules = Vec::new();
        let mut errors = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line == "#" || line.starts_with("# ") || line.starts_with("//") {
                continue;
            }
            match parse_rule(line) {
                Ok(r) => rules.push(r),
                Err(why) => errors.push(format!("line {}: {why}: `{line}`", i + 1)),
            }
        }
        if errors.is_empty() {
            Ok(Acl { rules })
        } else {
            Err(Error::Acl(format!(
                "ACL rules are not valid:\n  {}",
                errors.join("\n  ")
            )))
        }
    }

    fn applicable<'s>(
        &'s self,
        who: &'s AclIdentity<'_>,
        access: Access,
    ) -> impl Iterator<Item = &'s AclRule> + 's {
        self.rules.iter().filter(move |r| {
            r.access.covers(access)
                && match &r.subject {
                    Subject::All => true,
                    Subject::Role(role) => who.role == Some(*role),
                    Subject::User(u) => !who.is_device && who.name == Some(u.as_str()),
                    Subject::Device(d) => who.is_device && who.name == Some(d.as_str()),
                }
        })
    }

    /// May `who` publish on topic name `topic`?
    pub fn may_publish(&self, who: &AclIdentity<'_>, topic: &str) -> bool {
        self.decide(
            who,
            Access::Publish,
            |filter| ironplant_mqtt::topic::topic_matches(filter, topic),
            |filter| ironplant_mqtt::topic::topic_matches(filter, topic),
        )
    }

    /// May `who` subscribe to `filter` (shared-subscription prefix already removed)?
    pub fn may_subscribe(&self, who: &AclIdentity<'_>, filter: &str) -> bool {
        if ironplant_mqtt::topic::validate_topic_filter(filter).is_err() {
            return false;
        }
        self.decide(
            who,
            Access::Subscribe,
            |rule| filter_contains(rule, filter),
            |rule| filters_overlap(rule, filter),
        )
    }

    fn decide(
        &self,
        who: &AclIdentity<'_>,
        access: Access,
        allow_hit: impl Fn(&str) -> bool,
        deny_hit: impl Fn(&str) -> bool,
    ) -> bool {
        let mut allowed = false;
        for rule in self.applicable(who, access) {
            let filter = substitute(&rule.filter, who);
            match (rule.effect, filter) {
                (Effect::Deny, None) => return false,
                (Effect::Deny, Some(f)) if deny_hit(&f) => return false,
                (Effect::Allow, Some(f)) if !allowed && allow_hit(&f) => allowed = true,
                _ => {}
            }
        }
        allowed
    }
}

fn parse_rule(line: &str) -> Result<AclRule, String> {
    let mut parts = line.split_whitespace();
    let (Some(who), Some(effect), Some(access), Some(filter), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err("expected `<who> allow|deny publish|subscribe|both <topic filter>`".into());
    };
    let subject = match who.split_once(':') {
        None if who == "all" => Subject::All,
        Some(("role", r)) => Subject::Role(r.parse()?),
        Some(("user", u)) if !u.is_empty() => Subject::User(u.into()),
        Some(("device", d)) if !d.is_empty() => Subject::Device(d.into()),
        _ => {
            return Err(format!(
                "unknown subject {who:?}; use all, role:<role>, user:<name> or device:<name>"
            ))
        }
    };
    let effect = match effect {
        "allow" => Effect::Allow,
        "deny" => Effect::Deny,
        other => return Err(format!("expected allow or deny, found {other:?}")),
    };
    let access = match access {
        "publish" | "pub" => Access::Publish,
        "subscribe" | "sub" => Access::Subscribe,
        "both" | "pubsub" => Access::Both,
        other => {
            return Err(format!(
                "expected publish, subscribe or both, found {other:?}"
            ))
        }
    };
    check_filter(filter)?;
    Ok(AclRule {
        subject,
        effect,
        access,
        filter: filter.into(),
    })
}

fn check_filter(filter: &str) -> Result<(), String> {
    if filter.starts_with(ironplant_mqtt::topic::SHARE_PREFIX) {
        return Err("rules apply to the filter inside `$share/<group>/`; write that".into());
    }
    // Placeholders stand for one safe level fragment; validate with a stand-in.
    let probe = filter.replace("%c", "x").replace("%u", "x");
    ironplant_mqtt::topic::validate_topic_filter(&probe).map_err(|e| e.to_string())
}

/// A substitution value must not change the filter's shape.
fn safe_value(v: &str) -> bool {
    !v.is_empty() && !v.starts_with('$') && !v.contains(['/', '+', '#', '\0'])
}

fn substitute<'f>(filter: &'f str, who: &AclIdentity<'_>) -> Option<std::borrow::Cow<'f, str>> {
    if !filter.contains('%') {
        return Some(std::borrow::Cow::Borrowed(filter));
    }
    let mut out = filter.to_owned();
    if out.contains("%c") {
        if !safe_value(who.client_id) {
            return None;
        }
        out = out.replace("%c", who.client_id);
    }
    if out.contains("%u") {
        let name = who.name.filter(|n| safe_value(n))?;
        out = out.replace("%u", name);
    }
    Some(std::borrow::Cow::Owned(out))
}

fn starts_dollar(level: &str) -> bool {
    level.starts_with('$')
}

/// Whether every topic matched by `inner` is matched by `outer` (both valid filters).
pub fn filter_contains(outer: &str, inner: &str) -> bool {
    let o: Vec<&str> = outer.split('/').collect();
    let i: Vec<&str> = inner.split('/').collect();
    // `$` topics: a wildcard first level of `outer` matches none of them, so `inner` must
    // not be able to produce one (a wildcard first level of `inner` cannot).
    if let (Some(&o0), Some(&i0)) = (o.first(), i.first()) {
        if (o0 == "#" || o0 == "+") && starts_dollar(i0) {
            return false;
        }
    }
    let mut k = 0;
    loop {
        match (o.get(k), i.get(k)) {
            (Some(&"#"), _) => return true,
            // A first-level `#` matches one or more levels, exactly like `+/#`; deeper, it
            // also matches its parent, which no filter but `#` at the same level does.
            (_, Some(&"#")) => return k == 0 && o.len() == 2 && o[0] == "+" && o[1] == "#",
            (Some(&"+"), Some(_)) => {}
            (Some(ol), Some(il)) if ol == il => {}
            (None, None) => return true,
            // `a/#` also matches `a`: `outer` ending in `/#` contains `inner` ending one
            // level before it (handled by the first arm once k reaches the `#`).
            _ => return false,
        }
        k += 1;
    }
}

/// Whether some topic is matched by both filters.
pub fn filters_overlap(a: &str, b: &str) -> bool {
    let x: Vec<&str> = a.split('/').collect();
    let y: Vec<&str> = b.split('/').collect();
    if let (Some(&x0), Some(&y0)) = (x.first(), y.first()) {
        let xw = x0 == "#" || x0 == "+";
        let yw = y0 == "#" || y0 == "+";
        if (xw && starts_dollar(y0)) || (yw && starts_dollar(x0)) {
            return false;
        }
    }
    let mut k = 0;
    loop {
        match (x.get(k), y.get(k)) {
            (Some(&"#"), _) | (_, Some(&"#")) => return true,
            (Some(&"+"), Some(_)) | (Some(_), Some(&"+")) => {}
            (Some(p), Some(q)) if p == q => {}
            (None, None) => return true,
            _ => return false,
        }
        k += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_rules_parse() {
        assert_eq!(
            Acl::parse(DEFAULT_RULES).expect("valid").rules().len(),
            DEFAULT_RULES.lines().count()
        );
    }

    #[test]
    fn containment() {
        assert!(filter_contains("#", "a/b"));
        assert!(filter_contains("a/#", "a"));
        assert!(filter_contains("a/#", "a/+/c"));
        assert!(filter_contains("a/+/c", "a/b/c"));
        assert!(filter_contains("a/+/c", "a/+/c"));
        assert!(!filter_contains("a/+/c", "a/#"));
        assert!(!filter_contains("a/b", "a/+"));
        assert!(!filter_contains("a/b/#", "a/#"));
        assert!(!filter_contains("a/b/#", "+/b/c"));
        assert!(!filter_contains("a/+", "a/+/c"));
        assert!(!filter_contains("a/+", "a"));
        assert!(!filter_contains("#", "$SYS/x"));
        assert!(!filter_contains("+/x", "$SYS/x"));
        assert!(filter_contains("$SYS/#", "$SYS/broker/+"));
        assert!(filter_contains("#", "#"));
    }

    #[test]
    fn overlap() {
        assert!(filters_overlap("a/#", "#"));
        assert!(filters_overlap("a/+/c", "+/b/#"));
        assert!(filters_overlap("a/#", "a"));
        assert!(!filters_overlap("a/b", "a/c"));
        assert!(!filters_overlap("a/+", "a/b/c"));
        assert!(!filters_overlap("#", "$SYS/#"));
        assert!(filters_overlap("$SYS/#", "$SYS/+"));
        assert!(!filters_overlap("a", "a/+"));
    }

    #[test]
    fn parse_errors_are_collected_with_line_numbers() {
        let err = Acl::parse("all allow publish a/#\nrole:root allow publish x\nall permit both y\nall allow both a/#/b\n")
            .expect_err("invalid")
            .to_string();
        assert!(err.contains("line 2"), "{err}");
        assert!(err.contains("unknown role"), "{err}");
        assert!(err.contains("line 3"), "{err}");
        assert!(err.contains("line 4"), "{err}");
        assert!(!err.contains("line 1"), "{err}");
    }
}
