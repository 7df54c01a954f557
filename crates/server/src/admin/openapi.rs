//! The OpenAPI 3 description of the admin API, written by hand and embedded.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

/// The document served at `/v1/openapi.json`.
pub(crate) const DOCUMENT: &str = include_str!("openapi.json");

/// `GET /v1/openapi.json`.
pub(crate) async fn document() -> Response {
    let mut response = DOCUMENT.into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::admin::routes;

    fn documented() -> BTreeSet<(String, String)> {
        let document: serde_json::Value = serde_json::from_str(DOCUMENT).expect("the document is JSON");
        assert!(document["openapi"].as_str().unwrap().starts_with("3."));
        let paths = document["paths"].as_object().expect("paths");
        paths
            .iter()
            .flat_map(|(path, item)| {
                item.as_object().unwrap().keys().map(move |method| (method.to_uppercase(), path.clone()))
            })
            .collect()
    }

    #[test]
    fn documents_exactly_the_routes_of_the_router() {
        let routed: BTreeSet<(String, String)> =
            routes::table().iter().map(|route| (route.method.to_string(), route.path.to_owned())).collect();
        assert_eq!(documented(), routed);
    }

    #[test]
    fn every_reference_resolves() {
        let document: serde_json::Value = serde_json::from_str(DOCUMENT).unwrap();
        let mut references = Vec::new();
        collect_references(&document, &mut references);
        assert!(!references.is_empty());
        for reference in references {
            let pointer = reference.strip_prefix('#').expect("local reference");
            assert!(document.pointer(pointer).is_some(), "{reference} resolves");
        }
    }

    fn collect_references(value: &serde_json::Value, into: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                if let Some(serde_json::Value::String(reference)) = map.get("$ref") {
                    into.push(reference.clone());
                }
                map.values().for_each(|value| collect_references(value, into));
            }
            serde_json::Value::Array(items) => items.iter().for_each(|value| collect_references(value, into)),
            _ => {}
        }
    }
}
