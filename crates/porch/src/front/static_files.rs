//! Static files under a URL prefix (`--static /static/=DIR`).

use http::{header, HeaderValue, Method, Request, Response, StatusCode};

use super::body::ResponseBody;
use super::error;
use crate::config::StaticMount;

/// Serves `GET`/`HEAD` for a file under the mount's folder; never a file outside it.
pub async fn serve<B>(mount: &StaticMount, req: &Request<B>) -> Response<ResponseBody> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = error(StatusCode::METHOD_NOT_ALLOWED, "static files answer GET and HEAD");
        r.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let rel = &req.uri().path()[mount.prefix.len()..];
    let Some(path) = resolve(&mount.dir, rel) else {
        return error(StatusCode::NOT_FOUND, "not found");
    };
    match tokio::fs::read(&path).await {
        Ok(data) => {
            let mut r = Response::new(ResponseBody::full(data));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(content_type(&path)),
            );
            r
        }
        Err(_) => error(StatusCode::NOT_FOUND, "not found"),
    }
}

/// The file a URL path names under `root`, or `None` for anything that could leave it:
/// `..`, percent-encoded separators, NUL, hidden files, symlinks pointing outside.
pub fn resolve(root: &std::path::Path, rel: &str) -> Option<std::path::PathBuf> {
    let decoded = percent_encoding::percent_decode_str(rel).decode_utf8().ok()?;
    let mut path = root.to_path_buf();
    for part in decoded.split('/') {
        if part.is_empty() || part == "." {
            continue;
        }
        if part == ".." || part.starts_with('.') || part.contains('\0') || part.contains('\\') {
            return None;
        }
        path.push(part);
    }
    let real = path.canonicalize().ok()?;
    let real_root = root.canonicalize().ok()?;
    (real.starts_with(&real_root) && real.is_file()).then_some(real)
}

fn content_type(path: &std::path::Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" | "map" => "application/json",
        "txt" => "text/plain; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "ico" => "image/x-icon",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "ttf" => "font/ttf",
        "pdf" => "application/pdf",
        "wasm" => "application/wasm",
        _ => "application/octet-stream",
    }
}
