//! Static files under a URL prefix (`--static /static/=DIR`, or a `static` route).
//!
//! What a mount answers:
//! - `GET` and `HEAD` only (405 with `Allow: GET, HEAD` otherwise).
//! - `Content-Type` from the file name, `ETag` (from size and modification time),
//!   `Last-Modified`, `Accept-Ranges: bytes`, `X-Content-Type-Options: nosniff`.
//! - Conditional requests in the order RFC 9110 §13.2.2 gives: `If-Match` and
//!   `If-Unmodified-Since` (412), then `If-None-Match` (weak comparison, lists, `*`) or,
//!   only without it, `If-Modified-Since` (304).
//! - One `Range: bytes=` range (206 with `Content-Range`; 416 with `Content-Range:
//!   bytes */LEN` when it starts past the end); several ranges are answered with the whole
//!   file (200), as RFC 9110 allows; `If-Range` with an ETag or a date.
//! - Precompressed siblings: for a compressible type, `NAME.br` or `NAME.gz` next to
//!   `NAME` is sent instead when `Accept-Encoding` accepts it (highest q first, `br` on a
//!   tie) and the sibling is not older than `NAME`, with `Content-Encoding`.
//!   `Vary: Accept-Encoding` is on every response for a compressible type.
//! - `Cache-Control`: content-hashed names, as Django's `ManifestStaticFilesStorage`
//!   writes them (`app.3f2a9c1b7d4e.css`, `app.3f2a9c1b7d4e.css.gz`: a dot-separated part of
//!   exactly 12 hex digits after the first), get [`IMMUTABLE`]; other names get the
//!   mount's `cache_control`, [`DEFAULT_CACHE_CONTROL`] when unset. The short default
//!   bounds how long a browser keeps a changed unhashed file; revalidation with the ETag
//!   costs a 304.
//! - Directories: the mount's `index` file when one is configured (a directory URL
//!   without its trailing slash is redirected to it), otherwise 404. Never a listing.
//! - Names starting with `.` are 404 unless the mount allows dotfiles (`.` and `..`
//!   never are).
//! - Never a file outside the root: the URL path is split on `/` before it is
//!   percent-decoded, so `%2f` cannot add a separator; segments that decode to `..`, `.`,
//!   or hold `/` or `\` are refused (404); `%00` and malformed or non-UTF-8 escapes are a
//!   400. The file is then opened relative to the root directory with Linux's `openat2`
//!   and `RESOLVE_BENEATH`, so the kernel refuses any symlink (or race) leading out of
//!   the root (404); symlinks that stay inside work. Where `openat2` is missing, the
//!   opened file's real path is checked against the root's instead.
//!
//! Cost: a file served before is answered from the cache (see [`cache`]) after one
//! `fstatat` that proves it unchanged: no open, read or close. Otherwise one `openat2`,
//! one `statx`, and for a file up to [`SMALL_FILE`] one `read`, done inline on the
//! connection's task (page-cache work of a few microseconds, as nginx does it). Larger
//! files are streamed in [`CHUNK`]-sized reads, also inline while the data is in the
//! page cache (`preadv2` with `RWF_NOWAIT`); a read that would wait for the disk goes to
//! tokio's blocking pool. Each download holds one [`CHUNK`] buffer, reused from chunk to
//! chunk, and hyper takes the next chunk only once the previous one is written, so
//! memory per download stays bounded whatever the file size.
//! `sendfile(2)` cannot be used: hyper owns the socket and writes the body from `Bytes`
//! frames (and TLS has to encrypt them in user space anyway).

mod cache;
mod conditional;
mod encoding;
mod entry;
mod file_body;
mod open;
mod path;
mod range;
mod serve;
mod shared_fd;
mod types;

pub use cache::{configure as configure_cache, stats as cache_stats, CacheLimits};
pub use conditional::etag_list_matches;
pub use encoding::{accepted_encodings, Encoding};
pub use file_body::FileBody;
pub use path::{relative_path, PathError};
pub use range::{parse_range, ByteRange};
pub use serve::{serve, serve_path};
pub use types::{content_type, is_hashed_name};

/// `Cache-Control` for names without a content hash when the mount sets none.
pub const DEFAULT_CACHE_CONTROL: &str = "public, max-age=60";
/// `Cache-Control` for content-hashed names: their content never changes.
pub const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// Files up to this size are read in one go, inline, into one buffer.
pub const SMALL_FILE: u64 = 64 * 1024;
/// Larger files are streamed in reads of this size: the most one download holds in the
/// front. On loopback 256 KiB chunks served 10 MiB files slightly faster than 128 KiB ones
/// (fewer `preadv2`/`writev` pairs); past that the copies, not the system calls, dominate.
pub const CHUNK: usize = 256 * 1024;

#[cfg(test)]
fn headers(pairs: &[(&'static str, &str)]) -> http::HeaderMap {
    let mut h = http::HeaderMap::new();
    for (k, v) in pairs {
        h.append(*k, http::HeaderValue::from_str(v).unwrap());
    }
    h
}
