//! The Unified Namespace: every tag's metadata and the asset tree, indexed for fast lookup.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::{RwLock, RwLockReadGuard};

use crate::asset::{Asset, AssetLevel, Location};
use crate::bus::MAX_TAGS;
use crate::path::TagPath;
use crate::sample::ValueType;

/// A dense index of a tag in its [`Namespace`]; samples carry it instead of the path so that the
/// hot path never hashes or copies strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TagId(pub u32);

impl TagId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// The `device` of tags the platform computes from other tags (computed tags): their inputs
/// are what a detector or a connector looks at, not them.
pub const COMPUTED_SOURCE: &str = "computed";

/// What is known about a tag besides its values.
#[derive(Debug, Clone, PartialEq)]
pub struct TagMeta {
    pub id: TagId,
    pub path: TagPath,
    pub value_type: ValueType,
    pub unit: Option<String>,
    pub description: String,
    /// Engineering range (min, max), if declared.
    pub range: Option<(f64, f64)>,
    pub writable: bool,
    /// The device that produces it, if any.
    pub device: Option<String>,
}

/// All tags and assets, built from the configuration; a running platform wraps it in a
/// [`LiveNamespace`] to add tags as they appear.
///
/// Invariant: `tags[i].id == TagId(i)`, and every path appears once.
#[derive(Debug, Default)]
pub struct Namespace {
    tags: Vec<TagMeta>,
    by_path: HashMap<TagPath, TagId>,
    assets: BTreeMap<TagPath, Asset>,
}

impl Namespace {
    pub fn new() -> Namespace {
        Namespace::default()
    }

    /// Adds a tag and returns its id; `None` if the path is taken or the namespace is full.
    pub fn add_tag(&mut self, mut meta: TagMeta) -> Option<TagId> {
        if self.by_path.contains_key(&meta.path) || self.tags.len() >= MAX_TAGS {
            return None;
        }
        let id = TagId(u32::try_from(self.tags.len()).ok()?);
        meta.id = id;
        self.by_path.insert(meta.path.clone(), id);
        self.tags.push(meta);
        Some(id)
    }

    /// Adds a tag, or updates the metadata of the tag with the same path and source (`device`),
    /// keeping its id. A path owned by another source is refused, so a Sparkplug metric can
    /// never feed a configured Modbus tag.
    pub fn upsert_tag(&mut self, mut meta: TagMeta) -> Result<TagId, RegisterError> {
        if let Some(&id) = self.by_path.get(&meta.path) {
            let existing = &mut self.tags[id.index()];
            if existing.device != meta.device {
                return Err(RegisterError::Taken {
                    path: meta.path,
                    owner: existing.device.clone(),
                });
            }
            meta.id = id;
            *existing = meta;
            return Ok(id);
        }
        let path = meta.path.clone();
        self.add_tag(meta).ok_or(RegisterError::Full { path })
    }

    pub fn add_asset(&mut self, asset: Asset) {
        self.assets.insert(asset.path.clone(), asset);
    }

    /// Adds an implied asset (named after its last level, no location of its own, inheriting
    /// its parent's) for every ancestor of `path` strictly below `below` that is not an asset
    /// yet, as [`crate::config::Config::namespace`] does for configured tags. Returns how many
    /// were added.
    pub fn imply_assets(&mut self, path: &TagPath, below: &TagPath) -> usize {
        let mut missing = Vec::new();
        let mut cur = path.parent();
        while let Some(p) = cur {
            if p == *below || !p.is_under(below) || self.assets.contains_key(&p) {
                break;
            }
            cur = p.parent();
            missing.push(p);
        }
        let added = missing.len();
        // Parents first, so each inherits from the one above.
        for p in missing.into_iter().rev() {
            let Some(level) = AssetLevel::from_depth(p.depth()) else {
                continue;
            };
            let inherited = p
                .parent()
                .and_then(|parent| self.assets.get(&parent))
                .map(|a| a.effective_location.clone())
                .unwrap_or_default();
            self.add_asset(Asset {
                level,
                name: p.name().to_owned(),
                description: String::new(),
                location: Location::default(),
                effective_location: inherited,
                path: p,
            });
        }
        added
    }

    pub fn len(&self) -> usize {
        self.tags.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tags.is_empty()
    }

    pub fn tag(&self, id: TagId) -> Option<&TagMeta> {
        self.tags.get(id.index())
    }

    pub fn lookup(&self, path: &str) -> Option<&TagMeta> {
        let path = TagPath::parse(path).ok()?;
        self.by_path.get(&path).and_then(|id| self.tag(*id))
    }

    pub fn tags(&self) -> impl Iterator<Item = &TagMeta> {
        self.tags.iter()
    }

    /// Assets in path order (a parent always before its children).
    pub fn assets(&self) -> impl Iterator<Item = &Asset> {
        self.assets.values()
    }

    pub fn asset(&self, path: &TagPath) -> Option<&Asset> {
        self.assets.get(path)
    }
}

/// Why a tag could not be added to a running namespace.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    #[error("tag {path} already exists with another source ({}); rename one of them or change the prefix", owner.as_deref().unwrap_or("the configuration"))]
    Taken {
        path: TagPath,
        owner: Option<String>,
    },
    #[error("cannot add tag {path}: the namespace holds its maximum of {MAX_TAGS} tags")]
    Full { path: TagPath },
}

/// The namespace of a running platform: the configured tags, plus tags that appear while it
/// runs (Sparkplug births). Append-only: ids stay dense and continue after the configured ones,
/// a tag is never removed, and a path keeps its id for the life of the process.
///
/// Readers take a shared lock ([`LiveNamespace::read`]) for as long as they look at tags; adding
/// a tag takes the exclusive lock briefly. Nothing on the tag bus's hot path touches it: samples
/// carry ids, and consumers that index by id grow their tables when they meet a new one.
#[derive(Debug, Default)]
pub struct LiveNamespace {
    inner: RwLock<Namespace>,
    /// Mirrors `inner.len()` for lock-free readers (metrics, sizing tables).
    len: AtomicUsize,
}

impl LiveNamespace {
    pub fn new(namespace: Namespace) -> LiveNamespace {
        LiveNamespace {
            len: AtomicUsize::new(namespace.len()),
            inner: RwLock::new(namespace),
        }
    }

    /// A consistent view of every tag and asset. Do not hold it across `.await` (it is not
    /// `Send`, so the compiler says so) or while publishing on the bus.
    pub fn read(&self) -> RwLockReadGuard<'_, Namespace> {
        self.inner.read()
    }

    /// Tags in the namespace, without taking the lock.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A copy of a tag's metadata.
    pub fn tag(&self, id: TagId) -> Option<TagMeta> {
        self.inner.read().tag(id).cloned()
    }

    /// A copy of the metadata of the tag at `path`.
    pub fn lookup(&self, path: &str) -> Option<TagMeta> {
        self.inner.read().lookup(path).cloned()
    }

    /// Adds the implied assets between `below` and the tag at `path` (a run-time source's
    /// folders); see [`Namespace::imply_assets`].
    pub fn imply_assets(&self, path: &TagPath, below: &TagPath) -> usize {
        self.inner.write().imply_assets(path, below)
    }

    /// Adds a tag (or updates the metadata of the same source's tag at that path) and returns
    /// its id; see [`Namespace::upsert_tag`].
    pub fn register(&self, meta: TagMeta) -> Result<TagId, RegisterError> {
        let mut ns = self.inner.write();
        let id = ns.upsert_tag(meta)?;
        self.len.store(ns.len(), Ordering::Release);
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::ValueType;

    fn meta(path: &str, device: Option<&str>, value_type: ValueType) -> TagMeta {
        TagMeta {
            id: TagId(0),
            path: TagPath::parse(path).expect("path"),
            value_type,
            unit: None,
            description: String::new(),
            range: None,
            writable: false,
            device: device.map(str::to_owned),
        }
    }

    #[test]
    fn live_namespace_appends_dense_ids_and_reuses_a_path() {
        let mut ns = Namespace::new();
        ns.add_tag(meta("a/b/configured", Some("plc1"), ValueType::Float));
        let live = LiveNamespace::new(ns);
        assert_eq!(live.len(), 1);
        let sp = Some("sparkplug:g/n");
        let x = live
            .register(meta("sp/g/n/_node/x", sp, ValueType::Int))
            .expect("new tag");
        let y = live
            .register(meta("sp/g/n/_node/y", sp, ValueType::Bool))
            .expect("new tag");
        assert_eq!(
            (x, y),
            (TagId(1), TagId(2)),
            "ids continue after the configured ones"
        );
        assert_eq!(live.len(), 3);
        // A rebirth with another datatype and a unit: same id, new metadata.
        let mut again = meta("sp/g/n/_node/x", sp, ValueType::Float);
        again.unit = Some("bar".into());
        assert_eq!(live.register(again), Ok(TagId(1)));
        assert_eq!(live.len(), 3);
        let now = live.tag(TagId(1)).expect("tag");
        assert_eq!(
            (now.value_type, now.unit.as_deref()),
            (ValueType::Float, Some("bar"))
        );
        assert_eq!(live.lookup("sp/g/n/_node/y").map(|m| m.id), Some(TagId(2)));
        let ns = live.read();
        assert!(ns.tags().enumerate().all(|(i, t)| t.id.index() == i));
    }

    #[test]
    fn a_path_of_another_source_is_refused() {
        let mut ns = Namespace::new();
        ns.add_tag(meta("a/b/c", None, ValueType::Float));
        let live = LiveNamespace::new(ns);
        let err = live
            .register(meta("a/b/c", Some("sparkplug:g/n"), ValueType::Float))
            .expect_err("taken");
        assert!(matches!(err, RegisterError::Taken { owner: None, .. }));
        assert!(err.to_string().contains("a/b/c already exists"), "{err}");
        assert_eq!(live.len(), 1);
    }

    #[test]
    fn implied_assets_fill_the_levels_below_a_given_asset() {
        let path = |p: &str| TagPath::parse(p).expect("path");
        let mut ns = Namespace::new();
        let root = path("a/b/c");
        let located = Location {
            zone: Some("hall".into()),
            ..Location::default()
        };
        ns.add_asset(Asset {
            path: root.clone(),
            level: AssetLevel::Area,
            name: "C".into(),
            description: String::new(),
            location: located.clone(),
            effective_location: located.clone(),
        });
        let live = LiveNamespace::new(ns);
        assert_eq!(live.imply_assets(&path("a/b/c/d/e/t"), &root), 2);
        assert_eq!(live.imply_assets(&path("a/b/c/d/e/u"), &root), 0, "once");
        assert_eq!(live.imply_assets(&path("a/b/c/t"), &root), 0, "no folder");
        assert_eq!(
            live.imply_assets(&path("x/y/t"), &root),
            0,
            "nothing outside `below`"
        );
        let ns = live.read();
        let paths: Vec<&str> = ns.assets().map(|a| a.path.as_str()).collect();
        assert_eq!(paths, ["a/b/c", "a/b/c/d", "a/b/c/d/e"]);
        let e = ns.asset(&path("a/b/c/d/e")).expect("implied");
        assert_eq!((e.level, e.name.as_str()), (AssetLevel::Cell, "e"));
        assert!(e.location.is_empty());
        assert_eq!(e.effective_location, located, "inherited");
    }
}
