//! The Unified Namespace: every tag's metadata and the asset tree, indexed for fast lookup.

use std::collections::{BTreeMap, HashMap};

use crate::asset::Asset;
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

/// All tags and assets. Built once from the configuration and then shared read-only.
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

    /// Adds a tag and returns its id; `None` if the path is taken.
    pub fn add_tag(&mut self, mut meta: TagMeta) -> Option<TagId> {
        if self.by_path.contains_key(&meta.path) {
            return None;
        }
        let id = TagId(u32::try_from(self.tags.len()).ok()?);
        meta.id = id;
        self.by_path.insert(meta.path.clone(), id);
        self.tags.push(meta);
        Some(id)
    }

    pub fn add_asset(&mut self, asset: Asset) {
        self.assets.insert(asset.path.clone(), asset);
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
