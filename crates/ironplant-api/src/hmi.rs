//! The web HMI: static files embedded in the binary (`crates/ironplant-api/hmi/`, hand-written
//! JS modules and CSS plus vendored uPlot), served at `/` and `/hmi/<file>` without
//! authentication (they hold no plant data: every value comes from the API after login, see
//! [`crate::session`]). No build step and nothing from the internet: plant networks are often
//! air-gapped.
//!
//! Every answer carries a strict Content-Security-Policy (scripts only from this origin, no
//! inline script, no eval, no framing), `X-Content-Type-Options: nosniff`, and an ETag so a
//! reload costs a 304 per file.

use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::ApiError;

/// Where the HMI's files are served.
pub const PREFIX: &str = "/hmi/";

/// The Content-Security-Policy of the HMI's pages. uPlot sizes its canvas with inline style
/// attributes, hence `style-src 'unsafe-inline'` (styles only; scripts stay strict).
pub const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self' \
                       'unsafe-inline'; connect-src 'self'; frame-ancestors 'none'; \
                       base-uri 'none'; form-action 'self'";

/// One embedded file: its name under [`PREFIX`], media type and bytes.
struct Asset {
    name: &'static str,
    mime: &'static str,
    bytes: &'static [u8],
}

macro_rules! assets {
    ($($name:literal => $mime:literal),* $(,)?) => {
        &[$(Asset { name: $name, mime: $mime, bytes: include_bytes!(concat!("../hmi/", $name)) }),*]
    };
}

/// Every file of `hmi/` (a test checks that none is left out).
static ASSETS: &[Asset] = assets! {
    "index.html" => "text/html; charset=utf-8",
    "style.css" => "text/css; charset=utf-8",
    "app.js" => "text/javascript; charset=utf-8",
    "api.js" => "text/javascript; charset=utf-8",
    "live.js" => "text/javascript; charset=utf-8",
    "plant.js" => "text/javascript; charset=utf-8",
    "trends.js" => "text/javascript; charset=utf-8",
    "alarms.js" => "text/javascript; charset=utf-8",
    "commands.js" => "text/javascript; charset=utf-8",
    "integrity.js" => "text/javascript; charset=utf-8",
    "system.js" => "text/javascript; charset=utf-8",
    "vendor/uPlot.iife.min.js" => "text/javascript; charset=utf-8",
    "vendor/uPlot.min.css" => "text/css; charset=utf-8",
    "vendor/uPlot.LICENSE" => "text/plain; charset=utf-8",
    "favicon.svg" => "image/svg+xml",
};

/// Whether `path` is one of the HMI's public paths (the page or a file under [`PREFIX`]).
pub fn is_asset(path: &str) -> bool {
    path == "/" || path == FAVICON || path.starts_with(PREFIX)
}

/// Where browsers look for an icon by themselves (the page names `/hmi/favicon.svg`; older
/// ones ask here anyway): public, so it never lands in the audit log as a refused request.
pub const FAVICON: &str = "/favicon.ico";

/// `GET /favicon.ico`: the HMI's icon.
pub(crate) async fn favicon(headers: HeaderMap) -> Response {
    serve("favicon.svg", &headers)
}

/// The ETag of each asset, in [`ASSETS`] order: a hash of its bytes, computed once.
fn etags() -> &'static [String] {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    TAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| {
                let d = ring::digest::digest(&ring::digest::SHA256, a.bytes);
                let hex: String = d.as_ref()[..12]
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                format!("\"{hex}\"")
            })
            .collect()
    })
}

fn serve(name: &str, headers: &HeaderMap) -> Response {
    let Some(i) = ASSETS.iter().position(|a| a.name == name) else {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("the HMI has no file {name:?}; open / for the HMI"),
        )
        .into_response();
    };
    let asset = &ASSETS[i];
    let etag = &etags()[i];
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut res = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, asset.mime)], asset.bytes).into_response()
    };
    let h = res.headers_mut();
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
    // Revalidate every time: a new binary must never run yesterday's scripts.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    res
}

/// `GET /`: the HMI's page.
pub(crate) async fn index(headers: HeaderMap) -> Response {
    serve("index.html", &headers)
}

/// `GET /hmi/{*file}`.
pub(crate) async fn file(Path(name): Path<String>, headers: HeaderMap) -> Response {
    serve(&name, &headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file under `hmi/` is embedded, and every embedded file exists: adding a module
    /// without listing it here would fail in the browser only.
    #[test]
    fn every_hmi_file_is_embedded() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("hmi");
        let mut on_disk = Vec::new();
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(&dir).expect("read hmi/") {
                let p = e.expect("entry").path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    let rel = p.strip_prefix(&root).expect("under hmi/");
                    on_disk.push(rel.to_string_lossy().replace('\\', "/"));
                }
            }
        }
        on_disk.sort();
        let mut listed: Vec<String> = ASSETS.iter().map(|a| a.name.to_owned()).collect();
        listed.sort();
        assert_eq!(on_disk, listed);
        for a in ASSETS {
            assert!(!a.bytes.is_empty(), "{} is empty", a.name);
        }
    }

    #[test]
    fn assets_revalidate_and_carry_the_policy() {
        let res = serve("index.html", &HeaderMap::new());
        assert_eq!(res.status(), StatusCode::OK);
        let etag = res.headers()[header::ETAG].clone();
        assert_eq!(res.headers()[header::CONTENT_SECURITY_POLICY], CSP);
        let mut h = HeaderMap::new();
        h.insert(header::IF_NONE_MATCH, etag);
        assert_eq!(serve("index.html", &h).status(), StatusCode::NOT_MODIFIED);
        assert_eq!(
            serve("../Cargo.toml", &HeaderMap::new()).status(),
            StatusCode::NOT_FOUND
        );
    }
}
