//! Tag and asset paths in the ISA-95 hierarchy: `enterprise/site/area/line/cell/device/tag`.

use std::fmt;
use std::sync::Arc;

/// Most levels a path may have: enterprise, site, area, line, cell, device, tag.
pub const MAX_DEPTH: usize = 7;
/// Longest allowed whole path, in bytes.
pub const MAX_PATH_LEN: usize = 256;
/// Longest allowed single level, in bytes.
pub const MAX_LEVEL_LEN: usize = 64;

/// A validated path in the Unified Namespace, e.g. `acme/lyon/bottling/line1/filler/plc/speed`.
///
/// Invariant: 1..=7 non-empty levels separated by `/`, each made of ASCII letters, digits, `_`, `-`
/// and `.` (not starting with `.`), at most 64 bytes a level and 256 bytes in all. These characters
/// are safe as MQTT topic levels, URL path segments and file names, which later layers rely on.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TagPath(Arc<str>);

/// Why a string is not a valid [`TagPath`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path is empty; write levels separated by '/', e.g. \"acme/lyon/bottling/line1\"")]
    Empty,
    #[error("path is {len} bytes long; the limit is {MAX_PATH_LEN}")]
    TooLong { len: usize },
    #[error("path has {depth} levels; ISA-95 allows at most {MAX_DEPTH} (enterprise/site/area/line/cell/device/tag)")]
    TooDeep { depth: usize },
    #[error("level {level} is empty (a leading, trailing or doubled '/'); remove the extra '/'")]
    EmptyLevel { level: usize },
    #[error("level {level} ({name:?}) is {len} bytes long; the limit is {MAX_LEVEL_LEN}")]
    LevelTooLong {
        level: usize,
        name: String,
        len: usize,
    },
    #[error(
        "level {level} ({name:?}) contains {ch:?}; use only letters, digits, '_', '-' and '.'"
    )]
    BadChar {
        level: usize,
        name: String,
        ch: char,
    },
    #[error("level {level} ({name:?}) starts with '.'; start it with a letter, digit, '_' or '-'")]
    LeadingDot { level: usize, name: String },
}

impl TagPath {
    /// Parses and validates a path.
    pub fn parse(s: &str) -> Result<TagPath, PathError> {
        if s.is_empty() {
            return Err(PathError::Empty);
        }
        if s.len() > MAX_PATH_LEN {
            return Err(PathError::TooLong { len: s.len() });
        }
        let depth = s.split('/').count();
        if depth > MAX_DEPTH {
            return Err(PathError::TooDeep { depth });
        }
        for (i, name) in s.split('/').enumerate() {
            let level = i + 1;
            if name.is_empty() {
                return Err(PathError::EmptyLevel { level });
            }
            if name.len() > MAX_LEVEL_LEN {
                return Err(PathError::LevelTooLong {
                    level,
                    name: name.to_owned(),
                    len: name.len(),
                });
            }
            if let Some(ch) = name
                .chars()
                .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
            {
                return Err(PathError::BadChar {
                    level,
                    name: name.to_owned(),
                    ch,
                });
            }
            if name.starts_with('.') {
                return Err(PathError::LeadingDot {
                    level,
                    name: name.to_owned(),
                });
            }
        }
        Ok(TagPath(Arc::from(s)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Number of levels (1 for `acme`, 7 for a full tag path).
    pub fn depth(&self) -> usize {
        self.0.split('/').count()
    }

    pub fn levels(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    /// The last level, e.g. `speed` for `acme/.../plc/speed`.
    pub fn name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }

    /// The path one level up, or `None` at the root.
    pub fn parent(&self) -> Option<TagPath> {
        self.0.rfind('/').map(|i| TagPath(Arc::from(&self.0[..i])))
    }

    /// Whether `self` equals `ancestor` or lies below it (level-wise, so `a/bc` is not under `a/b`).
    pub fn is_under(&self, ancestor: &TagPath) -> bool {
        let (me, anc) = (self.as_str(), ancestor.as_str());
        me == anc
            || (me.len() > anc.len() && me.starts_with(anc) && me.as_bytes()[anc.len()] == b'/')
    }

    /// Whether the path starts with the textual prefix `prefix` at a level boundary or inside the
    /// last level given (`acme/ly` matches `acme/lyon/...`): what users expect of `?prefix=`.
    pub fn has_prefix(&self, prefix: &str) -> bool {
        self.0.starts_with(prefix.trim_end_matches('/'))
    }
}

impl fmt::Display for TagPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TagPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}

impl std::str::FromStr for TagPath {
    type Err = PathError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TagPath::parse(s)
    }
}

impl serde::Serialize for TagPath {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_full_isa95_path() {
        let p =
            TagPath::parse("acme/lyon/bottling/line1/filler/plc-1/speed_actual").expect("valid");
        assert_eq!(p.depth(), 7);
        assert_eq!(p.name(), "speed_actual");
        assert_eq!(
            p.parent().expect("has parent").as_str(),
            "acme/lyon/bottling/line1/filler/plc-1"
        );
    }

    #[test]
    fn rejects_bad_paths_with_reason() {
        assert_eq!(TagPath::parse(""), Err(PathError::Empty));
        assert_eq!(
            TagPath::parse("a//b"),
            Err(PathError::EmptyLevel { level: 2 })
        );
        assert_eq!(
            TagPath::parse("a/b/"),
            Err(PathError::EmptyLevel { level: 3 })
        );
        assert_eq!(
            TagPath::parse("a/b/c/d/e/f/g/h"),
            Err(PathError::TooDeep { depth: 8 })
        );
        assert!(matches!(
            TagPath::parse("a/b c"),
            Err(PathError::BadChar {
                level: 2,
                ch: ' ',
                ..
            })
        ));
        assert!(matches!(
            TagPath::parse("a/+/c"),
            Err(PathError::BadChar { ch: '+', .. })
        ));
        assert!(matches!(
            TagPath::parse("a/#"),
            Err(PathError::BadChar { ch: '#', .. })
        ));
        assert!(matches!(
            TagPath::parse("a/.."),
            Err(PathError::LeadingDot { level: 2, .. })
        ));
        assert!(matches!(
            TagPath::parse(&"x".repeat(65)),
            Err(PathError::LevelTooLong { .. })
        ));
        let long = vec!["x".repeat(60); 5].join("/");
        assert!(matches!(
            TagPath::parse(&long),
            Err(PathError::TooLong { .. })
        ));
    }

    #[test]
    fn ancestry_is_level_wise() {
        let p = TagPath::parse("a/bc/d").expect("valid");
        assert!(p.is_under(&TagPath::parse("a/bc").expect("valid")));
        assert!(p.is_under(&TagPath::parse("a/bc/d").expect("valid")));
        assert!(!p.is_under(&TagPath::parse("a/b").expect("valid")));
    }
}
