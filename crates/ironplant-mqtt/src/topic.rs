//! Topic names, topic filters and matching (MQTT 3.1.1 §4.7, MQTT 5.0 §4.7 and §4.8.2).
//!
//! These are plain functions over `&str` so the broker's subscription tree, its ACLs and the
//! configuration loader all apply the same rules as the codec.

use thiserror::Error;

/// The longest topic the wire can carry: a UTF-8 string has a two-byte length.
pub const MAX_TOPIC_LEN: usize = u16::MAX as usize;

/// The prefix of a shared subscription's filter (MQTT 5.0 §4.8.2).
pub const SHARE_PREFIX: &str = "$share/";

/// Why a topic name or filter is not valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum TopicError {
    /// Topic names and filters are at least one character long (MQTT-4.7.3-1).
    #[error("topic is empty")]
    Empty,
    /// Longer than a UTF-8 string on the wire can be.
    #[error("topic is {len} bytes, over the 65,535 byte limit")]
    TooLong {
        /// Length in bytes.
        len: usize,
    },
    /// U+0000 is not allowed in any MQTT string (MQTT-4.7.3-2).
    #[error("topic contains U+0000")]
    NullCharacter,
    /// `+` or `#` in a topic name (MQTT-3.3.2-2).
    #[error("topic name contains the wildcard {wildcard:?} at byte {at}")]
    WildcardInName {
        /// The wildcard character found.
        wildcard: char,
        /// Its byte offset.
        at: usize,
    },
    /// `#` that is not a whole level or not the last level (MQTT-4.7.1-1).
    #[error("'#' must be the last level and alone in it (byte {at})")]
    MisplacedMultiLevelWildcard {
        /// Byte offset of the `#`.
        at: usize,
    },
    /// `+` sharing a level with other characters (MQTT-4.7.1-2).
    #[error("'+' must be alone in its level (byte {at})")]
    MisplacedSingleLevelWildcard {
        /// Byte offset of the `+`.
        at: usize,
    },
    /// `$share/` not followed by a non-empty share name free of `+` and `#` (MQTT-4.8.2-1, -2).
    #[error("shared subscription needs '$share/<name>/<filter>' with a non-empty name without '+' or '#'")]
    InvalidShareName,
    /// `$share/<name>/` not followed by a topic filter (MQTT-4.8.2-2).
    #[error("shared subscription has no topic filter after its share name")]
    EmptySharedFilter,
}

/// Checks a topic name as PUBLISH and the Will carry it: non-empty, no wildcards, no U+0000.
pub fn validate_topic_name(name: &str) -> Result<(), TopicError> {
    check_common(name)?;
    check_no_wildcards(name)
}

/// The wildcard part of [`validate_topic_name`], for a string already known to be a valid
/// MQTT string (the codec's hot path: every PUBLISH).
pub(crate) fn check_no_wildcards(name: &str) -> Result<(), TopicError> {
    let bytes = name.as_bytes();
    // A branch-free OR over every byte vectorises; the position is searched only on failure.
    // A byte scan is enough: '+' and '#' are ASCII, never part of a multi-byte sequence.
    if !bytes
        .iter()
        .fold(false, |acc, &b| acc | (b == b'+') | (b == b'#'))
    {
        return Ok(());
    }
    match bytes.iter().position(|&b| b == b'+' || b == b'#') {
        Some(at) => {
            let wildcard = if bytes.get(at) == Some(&b'#') {
                '#'
            } else {
                '+'
            };
            Err(TopicError::WildcardInName { wildcard, at })
        }
        None => Ok(()),
    }
}

/// Whether `bytes` contains U+0000, in one vectorisable pass.
pub(crate) fn has_nul(bytes: &[u8]) -> bool {
    bytes.iter().fold(false, |acc, &b| acc | (b == 0))
}

/// Checks a topic filter as SUBSCRIBE and UNSUBSCRIBE carry it, including the
/// `$share/{ShareName}/{filter}` form of a shared subscription.
pub fn validate_topic_filter(filter: &str) -> Result<(), TopicError> {
    check_common(filter)?;
    if filter.starts_with(SHARE_PREFIX) {
        let shared = parse_shared(filter)?;
        // Offsets in errors refer to the whole filter, so re-check with the prefix kept.
        let offset = filter.len() - shared.filter.len();
        return check_filter_levels(shared.filter)
            .map_err(|e| shift(e, offset))
            .map(|_| ());
    }
    check_filter_levels(filter)
}

/// A shared subscription's parts: `$share/{group}/{filter}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedFilter<'a> {
    /// The ShareName: which group of subscribers shares the messages.
    pub group: &'a str,
    /// The topic filter messages are matched against.
    pub filter: &'a str,
}

/// Splits a shared subscription filter. `Ok(None)` for an ordinary filter; an error when it
/// starts with `$share/` but has no valid share name or no filter. The inner filter is not
/// validated here (see [`validate_topic_filter`]).
pub fn split_shared(filter: &str) -> Result<Option<SharedFilter<'_>>, TopicError> {
    if filter.starts_with(SHARE_PREFIX) {
        parse_shared(filter).map(Some)
    } else {
        Ok(None)
    }
}

fn parse_shared(filter: &str) -> Result<SharedFilter<'_>, TopicError> {
    let rest = filter
        .strip_prefix(SHARE_PREFIX)
        .ok_or(TopicError::InvalidShareName)?;
    let (group, inner) = rest.split_once('/').ok_or(TopicError::InvalidShareName)?;
    if group.is_empty() || group.contains(['+', '#']) {
        return Err(TopicError::InvalidShareName);
    }
    if inner.is_empty() {
        return Err(TopicError::EmptySharedFilter);
    }
    Ok(SharedFilter {
        group,
        filter: inner,
    })
}

fn check_common(topic: &str) -> Result<(), TopicError> {
    if topic.is_empty() {
        return Err(TopicError::Empty);
    }
    if topic.len() > MAX_TOPIC_LEN {
        return Err(TopicError::TooLong { len: topic.len() });
    }
    if has_nul(topic.as_bytes()) {
        return Err(TopicError::NullCharacter);
    }
    Ok(())
}

fn check_filter_levels(filter: &str) -> Result<(), TopicError> {
    let bytes = filter.as_bytes();
    for (at, &b) in bytes.iter().enumerate() {
        let before_ok = at == 0 || bytes.get(at - 1) == Some(&b'/');
        let next = bytes.get(at + 1);
        let after_ok = next.is_none() || next == Some(&b'/');
        match b {
            b'#' if !before_ok || next.is_some() => {
                return Err(TopicError::MisplacedMultiLevelWildcard { at });
            }
            b'+' if !before_ok || !after_ok => {
                return Err(TopicError::MisplacedSingleLevelWildcard { at });
            }
            _ => {}
        }
    }
    Ok(())
}

fn shift(e: TopicError, by: usize) -> TopicError {
    match e {
        TopicError::MisplacedMultiLevelWildcard { at } => {
            TopicError::MisplacedMultiLevelWildcard { at: at + by }
        }
        TopicError::MisplacedSingleLevelWildcard { at } => {
            TopicError::MisplacedSingleLevelWildcard { at: at + by }
        }
        other => other,
    }
}

/// Whether the topic `name` matches the (non-shared) topic `filter` (MQTT 5.0 §4.7).
///
/// `#` matches its parent level and any number of levels below; `+` matches exactly one level,
/// which may be empty. A filter that starts with a wildcard does not match a name that starts
/// with `$` (MQTT-4.7.2-1), so `#` does not see `$SYS/...`. For a shared subscription pass the
/// inner filter ([`SharedFilter::filter`]). Both arguments are expected to be valid; invalid
/// ones give an unspecified answer, never a panic.
pub fn topic_matches(filter: &str, name: &str) -> bool {
    if name.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut n = name.split('/');
    loop {
        match (f.next(), n.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(fl), Some(nl)) if fl == nl => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(validate_topic_name("a/b/c"), Ok(()));
        assert_eq!(validate_topic_name("/"), Ok(()));
        assert_eq!(validate_topic_name("$SYS/broker"), Ok(()));
        assert_eq!(validate_topic_name(""), Err(TopicError::Empty));
        assert_eq!(
            validate_topic_name("a/+/c"),
            Err(TopicError::WildcardInName {
                wildcard: '+',
                at: 2
            })
        );
        assert_eq!(
            validate_topic_name("a/#"),
            Err(TopicError::WildcardInName {
                wildcard: '#',
                at: 2
            })
        );
        assert_eq!(validate_topic_name("a\0b"), Err(TopicError::NullCharacter));
        let long = "a".repeat(MAX_TOPIC_LEN + 1);
        assert_eq!(
            validate_topic_name(&long),
            Err(TopicError::TooLong {
                len: MAX_TOPIC_LEN + 1
            })
        );
    }

    #[test]
    fn filters() {
        for ok in [
            "#",
            "+",
            "a/#",
            "a/+/b",
            "+/+",
            "/+",
            "+/",
            "a//b",
            "sport/tennis/+",
            "$SYS/#",
            "//",
        ] {
            assert_eq!(validate_topic_filter(ok), Ok(()), "{ok}");
        }
        assert_eq!(
            validate_topic_filter("a/#/b"),
            Err(TopicError::MisplacedMultiLevelWildcard { at: 2 })
        );
        assert_eq!(
            validate_topic_filter("a#"),
            Err(TopicError::MisplacedMultiLevelWildcard { at: 1 })
        );
        assert_eq!(
            validate_topic_filter("a/b#"),
            Err(TopicError::MisplacedMultiLevelWildcard { at: 3 })
        );
        assert_eq!(
            validate_topic_filter("a+"),
            Err(TopicError::MisplacedSingleLevelWildcard { at: 1 })
        );
        assert_eq!(
            validate_topic_filter("a/+b"),
            Err(TopicError::MisplacedSingleLevelWildcard { at: 2 })
        );
        assert_eq!(
            validate_topic_filter("++"),
            Err(TopicError::MisplacedSingleLevelWildcard { at: 0 })
        );
        assert_eq!(validate_topic_filter(""), Err(TopicError::Empty));
    }

    #[test]
    fn shared() {
        assert_eq!(
            split_shared("$share/g1/a/+/c"),
            Ok(Some(SharedFilter {
                group: "g1",
                filter: "a/+/c"
            }))
        );
        assert_eq!(split_shared("a/b"), Ok(None));
        assert_eq!(split_shared("$shared/x"), Ok(None));
        assert_eq!(validate_topic_filter("$share/g/#"), Ok(()));
        assert_eq!(validate_topic_filter("$share/g//"), Ok(()));
        assert_eq!(
            validate_topic_filter("$share//a"),
            Err(TopicError::InvalidShareName)
        );
        assert_eq!(
            validate_topic_filter("$share/g"),
            Err(TopicError::InvalidShareName)
        );
        assert_eq!(
            validate_topic_filter("$share/g+/a"),
            Err(TopicError::InvalidShareName)
        );
        assert_eq!(
            validate_topic_filter("$share/#/a"),
            Err(TopicError::InvalidShareName)
        );
        assert_eq!(
            validate_topic_filter("$share/g/"),
            Err(TopicError::EmptySharedFilter)
        );
        // Offsets point into the whole filter.
        assert_eq!(
            validate_topic_filter("$share/g/a#"),
            Err(TopicError::MisplacedMultiLevelWildcard { at: 10 })
        );
    }

    #[test]
    fn matching_spec_examples() {
        // MQTT 5.0 §4.7.1.2 and §4.7.1.3 non-normative examples.
        let hash = "sport/tennis/player1/#";
        assert!(topic_matches(hash, "sport/tennis/player1"));
        assert!(topic_matches(hash, "sport/tennis/player1/ranking"));
        assert!(topic_matches(hash, "sport/tennis/player1/score/wimbledon"));
        assert!(topic_matches("sport/#", "sport"));
        assert!(!topic_matches("sport/#", "sports"));
        let plus = "sport/tennis/+";
        assert!(topic_matches(plus, "sport/tennis/player1"));
        assert!(topic_matches(plus, "sport/tennis/player2"));
        assert!(!topic_matches(plus, "sport/tennis/player1/ranking"));
        assert!(!topic_matches("sport/+", "sport"));
        assert!(topic_matches("sport/+", "sport/"));
        assert!(topic_matches("+/+", "/finance"));
        assert!(topic_matches("/+", "/finance"));
        assert!(!topic_matches("+", "/finance"));
        assert!(topic_matches("+/tennis/#", "sport/tennis/x"));
        assert!(topic_matches("#", "a/b/c"));
        assert!(topic_matches("a/b", "a/b"));
        assert!(!topic_matches("a/b", "a/b/c"));
        assert!(!topic_matches("a/b/c", "a/b"));
        assert!(!topic_matches("a/B", "a/b"));
    }

    #[test]
    fn dollar_topics_not_matched_by_leading_wildcards() {
        // MQTT 5.0 §4.7.2.
        assert!(!topic_matches("#", "$SYS/monitor/Clients"));
        assert!(!topic_matches("+/monitor/Clients", "$SYS/monitor/Clients"));
        assert!(topic_matches("$SYS/#", "$SYS/monitor/Clients"));
        assert!(topic_matches("$SYS/monitor/+", "$SYS/monitor/Clients"));
        assert!(topic_matches("$SYS/#", "$SYS"));
        // `$` only matters as the first character of the name.
        assert!(topic_matches("#", "a/$SYS"));
        assert!(topic_matches("+/+", "a/$b"));
    }
}
