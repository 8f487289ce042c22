//! The API's published description: an OpenAPI 3.1 document (`openapi.json` beside this file,
//! hand-written JSON) served without authentication at `GET /api/v1/openapi.json`.
//!
//! Its schemas are strict (`additionalProperties: false`, every field `required`) so that
//! `tests/openapi.rs`, which validates the real responses of a running platform against them
//! with a third-party JSON Schema validator, fails when a field is renamed on either side.
//! When you add or change an endpoint, change the document in the same commit.

use axum::http::header;
use axum::response::{IntoResponse, Response};

/// Where the document is served.
pub const PATH: &str = "/api/v1/openapi.json";

/// The document, as served.
pub const DOCUMENT: &str = include_str!("openapi.json");

/// `GET /api/v1/openapi.json`.
pub(crate) async fn get_openapi() -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        DOCUMENT,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_is_openapi_3_1_and_every_reference_resolves() {
        let doc: serde_json::Value = serde_json::from_str(DOCUMENT).expect("valid JSON");
        assert_eq!(doc["openapi"], "3.1.0");
        // Every `$ref` points at something that exists.
        fn walk(v: &serde_json::Value, doc: &serde_json::Value, n: &mut usize) {
            match v {
                serde_json::Value::Object(m) => {
                    if let Some(r) = m.get("$ref").and_then(|r| r.as_str()) {
                        let pointer = r.strip_prefix('#').expect("local reference");
                        assert!(doc.pointer(pointer).is_some(), "dangling {r}");
                        *n += 1;
                    }
                    m.values().for_each(|x| walk(x, doc, n));
                }
                serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, doc, n)),
                _ => {}
            }
        }
        let mut refs = 0;
        walk(&doc, &doc, &mut refs);
        assert!(refs > 50, "{refs} references");
        // Every operation has a unique id.
        let mut ids = std::collections::BTreeSet::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("path item") {
                let id = op["operationId"].as_str().expect("operationId");
                assert!(ids.insert(id.to_owned()), "{method} {path}: duplicate {id}");
            }
        }
    }
}
