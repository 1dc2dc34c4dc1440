//! The storefront's static files (stylesheet, logo, product pictures), embedded in the binary. Each is
//! served under two names:
//! - `/static/<path with its content hash>` (`css/shop.3f9a0c1d2e.css`), cached for a year: the pages
//!   link these, so a new build's file has a new name and no visitor keeps a stale one;
//! - `/static/<path>`, cached for an hour and revalidated with its ETag: the stable name that product
//!   records keep in their `picture` (the demo catalog's `/static/images/products/<slug>.svg`).

use std::collections::HashMap;
use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rust_embed::Embed;

#[derive(Embed)]
#[folder = "assets/"]
struct Files;

/// Where a request for a static file is answered from.
struct Asset {
    /// The path inside `assets/`.
    path: String,
    /// The path with the content hash in its name.
    hashed: String,
    etag: HeaderValue,
    content_type: &'static str,
}

struct Catalog {
    by_path: HashMap<String, usize>,
    by_hashed: HashMap<String, usize>,
    assets: Vec<Asset>,
}

static CATALOG: LazyLock<Catalog> = LazyLock::new(|| {
    let mut catalog = Catalog { by_path: HashMap::new(), by_hashed: HashMap::new(), assets: Vec::new() };
    for path in Files::iter() {
        let Some(file) = Files::get(&path) else { continue };
        let hash: String = file.metadata.sha256_hash()[..5].iter().map(|b| format!("{b:02x}")).collect();
        let hashed = match path.rsplit_once('.') {
            Some((stem, ext)) => format!("{stem}.{hash}.{ext}"),
            None => format!("{path}.{hash}"),
        };
        let etag = HeaderValue::try_from(format!("\"{hash}\"")).expect("hex is a valid header value");
        let index = catalog.assets.len();
        catalog.by_path.insert(path.to_string(), index);
        catalog.by_hashed.insert(hashed.clone(), index);
        catalog.assets.push(Asset {
            path: path.to_string(),
            hashed,
            etag,
            content_type: content_type(&path),
        });
    }
    catalog
});

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("css") => "text/css; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("webp") => "image/webp",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// The URL under which the pages link the file at `path` inside `assets/` (its hashed name).
///
/// # Panics
/// When no such file is embedded: the pages name their assets in code, so this is a build mistake.
pub fn url(path: &str) -> String {
    let catalog = &*CATALOG;
    let index = catalog.by_path.get(path).unwrap_or_else(|| panic!("no embedded asset {path}"));
    format!("/static/{}", catalog.assets[*index].hashed)
}

/// A product's `picture` as a page links it: an embedded file by its hashed name, anything else (an
/// admin's URL) as it is.
pub fn picture_url(picture: &str) -> std::borrow::Cow<'_, str> {
    let embedded = picture.strip_prefix("/static/").and_then(|p| CATALOG.by_path.get(p));
    match embedded {
        Some(index) => format!("/static/{}", CATALOG.assets[*index].hashed).into(),
        None => picture.into(),
    }
}

/// `GET /static/{*path}`.
pub async fn serve(Path(path): Path<String>, headers: HeaderMap) -> Response {
    let catalog = &*CATALOG;
    let (index, immutable) = match (catalog.by_hashed.get(&path), catalog.by_path.get(&path)) {
        (Some(i), _) => (*i, true),
        (None, Some(i)) => (*i, false),
        (None, None) => return (StatusCode::NOT_FOUND, "no such file").into_response(),
    };
    let asset = &catalog.assets[index];
    let cache = if immutable { "public, max-age=31536000, immutable" } else { "public, max-age=3600" };
    let fresh = headers.get(header::IF_NONE_MATCH).is_some_and(|tag| tag == asset.etag);
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let Some(file) = Files::get(&asset.path) else {
            return (StatusCode::NOT_FOUND, "no such file").into_response();
        };
        ([(header::CONTENT_TYPE, asset.content_type)], file.data).into_response()
    };
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(header::ETAG, asset.etag.clone());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashed_names_keep_the_extension_and_differ_from_the_path() {
        let css = url("css/shop.css");
        assert!(css.starts_with("/static/css/shop.") && css.ends_with(".css"), "{css}");
        assert_ne!(css, "/static/css/shop.css");
        assert_eq!(picture_url("https://img.example/x.png"), "https://img.example/x.png");
        assert_eq!(picture_url("/static/css/shop.css"), css);
        assert_eq!(picture_url("/static/nope.svg"), "/static/nope.svg");
    }
}
