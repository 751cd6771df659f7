//! What a file name says: its media type, and whether it carries a content hash.

use std::borrow::Cow;

/// Whether a file name carries a content hash the way Django's
/// `ManifestStaticFilesStorage` writes one: a dot-separated part of exactly 12 lowercase
/// hex digits after the first part (`app.3f2a9c1b7d4e.css`, `app.3f2a9c1b7d4e.css.gz`,
/// `LICENSE.3f2a9c1b7d4e`).
pub fn is_hashed_name(name: &str) -> bool {
    let mut parts = name.split('.');
    if parts.next().is_none_or(str::is_empty) {
        return false;
    }
    parts.any(|p| p.len() == 12 && p.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

/// The `Content-Type` for a file name, and whether that type is worth compressing.
pub fn content_type(name: &str) -> (&'static str, bool) {
    let ext = match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => ext,
        _ => return ("application/octet-stream", false),
    };
    let lower: Cow<str> = if ext.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(ext.to_ascii_lowercase())
    } else {
        Cow::Borrowed(ext)
    };
    match lower.as_ref() {
        // text and code
        "html" | "htm" => ("text/html; charset=utf-8", true),
        "css" => ("text/css; charset=utf-8", true),
        "js" | "mjs" | "cjs" => ("text/javascript; charset=utf-8", true),
        "json" | "map" => ("application/json", true),
        "jsonld" => ("application/ld+json", true),
        "webmanifest" => ("application/manifest+json", true),
        "txt" | "text" | "log" => ("text/plain; charset=utf-8", true),
        "md" | "markdown" => ("text/markdown; charset=utf-8", true),
        "csv" => ("text/csv; charset=utf-8", true),
        "tsv" => ("text/tab-separated-values; charset=utf-8", true),
        "xml" | "xsl" | "xsd" => ("application/xml", true),
        "rss" => ("application/rss+xml", true),
        "atom" => ("application/atom+xml", true),
        "xhtml" => ("application/xhtml+xml", true),
        "ics" => ("text/calendar; charset=utf-8", true),
        "vtt" => ("text/vtt; charset=utf-8", true),
        "yaml" | "yml" => ("application/yaml", true),
        "toml" => ("application/toml", true),
        "wasm" => ("application/wasm", true),
        "svg" => ("image/svg+xml", true),
        // images
        "png" => ("image/png", false),
        "jpg" | "jpeg" | "jpe" => ("image/jpeg", false),
        "gif" => ("image/gif", false),
        "webp" => ("image/webp", false),
        "avif" => ("image/avif", false),
        "ico" => ("image/vnd.microsoft.icon", true),
        "bmp" => ("image/bmp", true),
        "tif" | "tiff" => ("image/tiff", false),
        "apng" => ("image/apng", false),
        // fonts
        "woff" => ("font/woff", false),
        "woff2" => ("font/woff2", false),
        "ttf" => ("font/ttf", true),
        "otf" => ("font/otf", true),
        "eot" => ("application/vnd.ms-fontobject", true),
        // audio and video
        "mp3" => ("audio/mpeg", false),
        "ogg" | "oga" => ("audio/ogg", false),
        "opus" => ("audio/opus", false),
        "wav" => ("audio/wav", false),
        "flac" => ("audio/flac", false),
        "m4a" => ("audio/mp4", false),
        "aac" => ("audio/aac", false),
        "mp4" | "m4v" => ("video/mp4", false),
        "webm" => ("video/webm", false),
        "ogv" => ("video/ogg", false),
        "mov" => ("video/quicktime", false),
        // documents and archives
        "pdf" => ("application/pdf", false),
        "zip" => ("application/zip", false),
        "gz" | "tgz" => ("application/gzip", false),
        "br" => ("application/octet-stream", false),
        "zst" => ("application/zstd", false),
        "tar" => ("application/x-tar", true),
        "bz2" => ("application/x-bzip2", false),
        "xz" => ("application/x-xz", false),
        "7z" => ("application/x-7z-compressed", false),
        "doc" => ("application/msword", false),
        "docx" => (
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
            false,
        ),
        "xls" => ("application/vnd.ms-excel", false),
        "xlsx" => (
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            false,
        ),
        "ppt" => ("application/vnd.ms-powerpoint", false),
        "pptx" => (
            "application/vnd.openxmlformats-officedocument.presentationml.presentation",
            false,
        ),
        "odt" => ("application/vnd.oasis.opendocument.text", false),
        "epub" => ("application/epub+zip", false),
        "rtf" => ("application/rtf", true),
        _ => ("application/octet-stream", false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashed_names() {
        assert!(is_hashed_name("app.3f2a9c1b7d4e.css"));
        assert!(is_hashed_name("app.3f2a9c1b7d4e.css.gz"));
        assert!(is_hashed_name("jquery.min.3f2a9c1b7d4e.js"));
        assert!(is_hashed_name("LICENSE.3f2a9c1b7d4e"));
        assert!(!is_hashed_name("app.css"));
        assert!(!is_hashed_name("app.3f2a9c1b7d4.css")); // 11
        assert!(!is_hashed_name("app.3f2a9c1b7d4e0.css")); // 13
        assert!(!is_hashed_name("app.3F2A9C1B7D4E.css")); // Django writes lowercase
        assert!(!is_hashed_name("app.3f2a9c1b7d4g.css"));
        assert!(!is_hashed_name("3f2a9c1b7d4e.css"));
        assert!(!is_hashed_name(".3f2a9c1b7d4e"));
    }

    #[test]
    fn content_types() {
        assert_eq!(content_type("app.css"), ("text/css; charset=utf-8", true));
        assert_eq!(
            content_type("APP.JS"),
            ("text/javascript; charset=utf-8", true)
        );
        assert_eq!(content_type("logo.png"), ("image/png", false));
        assert_eq!(content_type("app.css.gz"), ("application/gzip", false));
        assert_eq!(content_type("README"), ("application/octet-stream", false));
        assert_eq!(content_type(".bashrc"), ("application/octet-stream", false));
    }
}
