//! Assets of the ISA-95 hierarchy and where they are.

use crate::path::TagPath;

/// The ISA-95 level of an asset, derived from its depth in the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AssetLevel {
    Enterprise,
    Site,
    Area,
    Line,
    Cell,
    Device,
}

impl AssetLevel {
    /// The level of an asset at `depth` (1 = enterprise); `None` for depth 7, which is a tag.
    pub fn from_depth(depth: usize) -> Option<AssetLevel> {
        Some(match depth {
            1 => AssetLevel::Enterprise,
            2 => AssetLevel::Site,
            3 => AssetLevel::Area,
            4 => AssetLevel::Line,
            5 => AssetLevel::Cell,
            6 => AssetLevel::Device,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AssetLevel::Enterprise => "enterprise",
            AssetLevel::Site => "site",
            AssetLevel::Area => "area",
            AssetLevel::Line => "line",
            AssetLevel::Cell => "cell",
            AssetLevel::Device => "device",
        }
    }
}

/// Where an asset is: a geographic position (normally given on the site) and, inside the site,
/// an optional zone and x/y in metres from the site's origin.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Location {
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    pub zone: Option<String>,
    pub x_m: Option<f64>,
    pub y_m: Option<f64>,
}

impl Location {
    pub fn is_empty(&self) -> bool {
        *self == Location::default()
    }

    /// Fills what `self` lacks from `parent`: an asset inherits its site's coordinates and its
    /// area's zone unless it states its own.
    pub fn inherit(&self, parent: &Location) -> Location {
        Location {
            latitude: self.latitude.or(parent.latitude),
            longitude: self.longitude.or(parent.longitude),
            zone: self.zone.clone().or_else(|| parent.zone.clone()),
            x_m: self.x_m.or(parent.x_m),
            y_m: self.y_m.or(parent.y_m),
        }
    }
}

/// A node of the asset hierarchy: an enterprise, site, area, line, cell or device.
#[derive(Debug, Clone, PartialEq)]
pub struct Asset {
    pub path: TagPath,
    pub level: AssetLevel,
    pub name: String,
    pub description: String,
    /// The location as configured on this asset.
    pub location: Location,
    /// The location after inheriting from ancestors.
    pub effective_location: Location,
}
