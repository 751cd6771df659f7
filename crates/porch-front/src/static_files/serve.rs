//! Answering a request for a file: method, mount prefix, directory index, then the
//! validators, conditional requests, the range and the body.

use std::borrow::Cow;
use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;

use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};

use super::cache::{Choice, Lookup};
use super::conditional::{if_range_holds, preconditions, Precondition};
use super::encoding::accepted_encodings;
use super::entry::{FileEntry, Stat};
use super::file_body::{read_at_most, FileBody};
use super::open::{mount_state, open_beneath};
use super::path::{relative_path, PathError};
use super::range::{parse_range, ByteRange};
use super::shared_fd;
use super::types::content_type;
use super::SMALL_FILE;
use crate::body::ResponseBody;
use crate::reject::{plain, Rejection};
use porch_config::StaticMount;

/// Serves a request routed to `mount`. Internal mounts (reachable only through
/// `X-Accel-Redirect` from the app) answer clients 404.
pub async fn serve<B>(mount: &StaticMount, req: &Request<B>) -> Response<ResponseBody> {
    if mount.internal {
        return not_found();
    }
    serve_path(
        mount,
        req.method(),
        req.headers(),
        req.uri().path(),
        req.uri().query(),
    )
}

/// Serves the file the URL `path` (percent-encoded, starting with the mount's prefix)
/// names, honouring the conditional, range and encoding headers in `headers`. This is
/// also the entry point for an internal redirect, where `path` comes from the app.
pub fn serve_path(
    mount: &StaticMount,
    method: &Method,
    headers: &HeaderMap,
    path: &str,
    query: Option<&str>,
) -> Response<ResponseBody> {
    if method != Method::GET && method != Method::HEAD {
        let mut r = Rejection::client(
            StatusCode::METHOD_NOT_ALLOWED,
            "static files answer GET and HEAD",
        )
        .response();
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let raw_rel = match path.strip_prefix(mount.prefix.as_str()) {
        Some(rel) => rel,
        // `/static` routed to the `/static/` mount: the root directory without its slash.
        None if path == mount.prefix.trim_end_matches('/') => "",
        None => return not_found(),
    };
    let wants_dir = path.ends_with('/');
    let rel = match relative_path(raw_rel, mount.allow_dotfiles) {
        Ok(rel) => rel,
        Err(PathError::Invalid) => {
            return Rejection::client(StatusCode::BAD_REQUEST, "invalid path encoding").response()
        }
        Err(PathError::Refused) => return not_found(),
    };
    let (state, root) = match mount_state(&mount.dir).and_then(|m| {
        let root = m.root(&mount.dir)?;
        Ok((m, root))
    }) {
        Ok(x) => x,
        Err(e) => {
            tracing::warn!("static root {} cannot be opened: {e}", mount.dir.display());
            return not_found();
        }
    };

    if !wants_dir {
        let name = rel.rsplit('/').next().unwrap_or(&rel);
        match state.cache.lookup(root.fd.as_fd(), mount, &rel, name) {
            Lookup::Missing => return not_found(),
            Lookup::Hit(cached) => {
                let accepted = if cached.compressible() {
                    accepted_encodings(headers)
                } else {
                    [None, None]
                };
                if accepted[0].is_none() {
                    return respond(method, headers, &cached.main, None, &rel);
                }
                match cached.choose(root.fd.as_fd(), mount, &rel, name, accepted) {
                    Choice::Main => return respond(method, headers, &cached.main, None, &rel),
                    Choice::Sibling(entry) => return respond(method, headers, &entry, None, &rel),
                    Choice::Uncached => {}
                }
            }
            Lookup::Uncached => {}
        }
    }

    let (mut file, mut meta) = match open_beneath(&root.fd, &rel) {
        Ok(x) => x,
        Err(e) => return open_failed(e),
    };
    let mut rel: Cow<str> = rel;
    if meta.is_dir() {
        // As nginx does: a directory is named with its trailing slash (so relative links
        // in its index resolve), whether or not it has an index.
        if !wants_dir {
            return redirect_to_dir(path, query);
        }
        let Some(index) = &mount.index else {
            return not_found();
        };
        let index_rel = if rel.is_empty() {
            index.clone()
        } else {
            format!("{rel}/{index}")
        };
        (file, meta) = match open_beneath(&root.fd, &index_rel) {
            Ok(x) => x,
            Err(e) => return open_failed(e),
        };
        rel = Cow::Owned(index_rel);
    } else if wants_dir {
        return not_found(); // `file.css/`
    }
    if !meta.is_file() {
        return not_found(); // devices, sockets, FIFOs, a directory as index
    }

    let name = rel.rsplit('/').next().unwrap_or(&rel);
    let (_, compressible) = content_type(name);
    let mut encoding = None;
    if compressible {
        for enc in accepted_encodings(headers).into_iter().flatten() {
            let sibling = format!("{rel}.{}", enc.suffix());
            if let Ok((f, m)) = open_beneath(&root.fd, &sibling) {
                if m.is_file() && m.mtime() >= meta.mtime() {
                    (file, meta, encoding) = (f, m, Some(enc));
                    break;
                }
            }
        }
    }
    let entry = FileEntry::new(Stat::from_metadata(&meta), mount, name, encoding, None);
    respond(method, headers, &entry, Some(file), &rel)
}

/// The answer from `entry`: its bytes when cached, else read from `file`.
fn respond(
    method: &Method,
    headers: &HeaderMap,
    entry: &FileEntry,
    file: Option<File>,
    rel: &str,
) -> Response<ResponseBody> {
    let etag = entry.etag_str();
    match preconditions(headers, etag, entry.modified) {
        Precondition::Proceed => {}
        Precondition::Failed => {
            return Rejection::client(StatusCode::PRECONDITION_FAILED, "precondition failed")
                .response();
        }
        Precondition::NotModified => {
            let mut r = Response::new(ResponseBody::empty());
            *r.status_mut() = StatusCode::NOT_MODIFIED;
            *r.headers_mut() = entry.not_modified.clone();
            return r;
        }
    }

    // Range only for GET (RFC 9110 §14.2), and only when If-Range still matches.
    let len = entry.stat.size;
    let mut status = StatusCode::OK;
    let mut content_range = None;
    let (mut start, mut count) = (0, len);
    if method == Method::GET {
        if let Some(range) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
            if if_range_holds(headers, etag, entry.modified) {
                match parse_range(range, len) {
                    ByteRange::Ignore => {}
                    ByteRange::Unsatisfiable => {
                        let mut r = Rejection::client(
                            StatusCode::RANGE_NOT_SATISFIABLE,
                            "range not satisfiable",
                        )
                        .response();
                        r.headers_mut()
                            .insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
                        r.headers_mut().insert(
                            header::CONTENT_RANGE,
                            HeaderValue::from_str(&format!("bytes */{len}")).expect("digits"),
                        );
                        return r;
                    }
                    ByteRange::Single(first, last) => {
                        status = StatusCode::PARTIAL_CONTENT;
                        start = first;
                        count = last - first + 1;
                        content_range = Some(
                            HeaderValue::from_str(&format!("bytes {first}-{last}/{len}"))
                                .expect("digits"),
                        );
                    }
                }
            }
        }
    }

    let body = if method == Method::HEAD || count == 0 {
        ResponseBody::empty()
    } else if let Some(bytes) = &entry.bytes {
        if count == len {
            ResponseBody::full(bytes.clone())
        } else {
            ResponseBody::full(bytes.slice(start as usize..(start + count) as usize))
        }
    } else {
        let Some(file) = file else {
            return Rejection::porch(StatusCode::INTERNAL_SERVER_ERROR, "cannot read the file")
                .response();
        };
        if count <= SMALL_FILE {
            match read_at_most(&file, start, count as usize) {
                // A file cut short since the stat: send what is there, with its true length.
                Ok(data) => {
                    count = data.len() as u64;
                    ResponseBody::full(data)
                }
                Err(e) => {
                    tracing::warn!("reading static file {rel}: {e}");
                    return Rejection::porch(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "cannot read the file",
                    )
                    .response();
                }
            }
        } else {
            ResponseBody::File(FileBody::new(
                shared_fd::shared(file, &entry.stat),
                start,
                count,
            ))
        }
    };
    let mut out = entry.ok.clone();
    if count != len {
        out.insert(header::CONTENT_LENGTH, HeaderValue::from(count));
    }
    if let Some(cr) = content_range {
        out.insert(header::CONTENT_RANGE, cr);
    }
    let mut r = Response::new(body);
    *r.status_mut() = status;
    *r.headers_mut() = out;
    r
}

fn not_found() -> Response<ResponseBody> {
    Rejection::client(StatusCode::NOT_FOUND, "not found").response()
}

fn open_failed(e: io::Error) -> Response<ResponseBody> {
    match e.raw_os_error() {
        Some(
            libc::ENOENT
            | libc::ENOTDIR
            | libc::EXDEV
            | libc::ELOOP
            | libc::EACCES
            | libc::EPERM
            | libc::ENAMETOOLONG
            | libc::ENXIO
            | libc::ENODEV,
        ) => not_found(),
        _ => {
            tracing::warn!("opening a static file failed: {e}");
            Rejection::porch(StatusCode::INTERNAL_SERVER_ERROR, "cannot open the file").response()
        }
    }
}

/// `301` to the directory URL with its trailing slash (query kept), so the index file's
/// relative links resolve.
fn redirect_to_dir(path: &str, query: Option<&str>) -> Response<ResponseBody> {
    let mut location = String::with_capacity(path.len() + 2);
    location.push_str(path);
    location.push('/');
    if let Some(q) = query {
        location.push('?');
        location.push_str(q);
    }
    let mut r = plain(StatusCode::MOVED_PERMANENTLY, "moved");
    match HeaderValue::from_str(&location) {
        Ok(v) => {
            r.headers_mut().insert(header::LOCATION, v);
            r
        }
        Err(_) => not_found(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::DEFAULT_CACHE_CONTROL;
    use super::*;
    use bytes::Bytes;

    fn body_of(r: Response<ResponseBody>) -> (StatusCode, HeaderMap, Bytes) {
        let (parts, body) = r.into_parts();
        let bytes = match body {
            ResponseBody::Full(b) => b.unwrap_or_default(),
            _ => panic!("a small file is sent whole"),
        };
        (parts.status, parts.headers, bytes)
    }

    #[tokio::test]
    async fn mount_options() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("docs/.well-known")).unwrap();
        std::fs::write(root.path().join("index.html"), "top").unwrap();
        std::fs::write(root.path().join("docs/index.html"), "docs").unwrap();
        std::fs::write(root.path().join("docs/.well-known/x"), "dot").unwrap();
        let dir = root.path().to_str().unwrap();
        let plain = StaticMount::new("static", "/s/", dir).unwrap();
        let get = |m: &StaticMount, path: &str, query: Option<&str>| {
            body_of(serve_path(m, &Method::GET, &HeaderMap::new(), path, query))
        };

        // Defaults: no index, no dotfiles, the default Cache-Control.
        assert_eq!(get(&plain, "/s/docs/", None).0, StatusCode::NOT_FOUND);
        assert_eq!(get(&plain, "/s/", None).0, StatusCode::NOT_FOUND);
        assert_eq!(get(&plain, "/s", None).1[header::LOCATION], "/s/");
        assert_eq!(
            get(&plain, "/s/docs", None).0,
            StatusCode::MOVED_PERMANENTLY
        );
        assert_eq!(
            get(&plain, "/elsewhere/index.html", None).0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            get(&plain, "/s/docs/.well-known/x", None).0,
            StatusCode::NOT_FOUND
        );
        let (status, headers, body) = get(&plain, "/s/docs/index.html", None);
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"docs"[..]));
        assert_eq!(headers[header::CACHE_CONTROL], DEFAULT_CACHE_CONTROL);

        let mut opts = plain.clone();
        opts.index = Some("index.html".into());
        opts.allow_dotfiles = true;
        opts.cache_control = Some("no-cache".into());
        opts.validate("route.0").unwrap();
        let (status, headers, body) = get(&opts, "/s/docs/", None);
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"docs"[..]));
        assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
        assert_eq!(headers[header::CACHE_CONTROL], "no-cache");
        assert_eq!(get(&opts, "/s/", None).2, &b"top"[..]);
        let (status, headers, _) = get(&opts, "/s/docs", Some("a=1"));
        assert_eq!(status, StatusCode::MOVED_PERMANENTLY);
        assert_eq!(headers[header::LOCATION], "/s/docs/?a=1");
        assert_eq!(get(&opts, "/s", None).1[header::LOCATION], "/s/");
        assert_eq!(get(&opts, "/s/docs/.well-known/x", None).2, &b"dot"[..]);
        assert_eq!(get(&opts, "/s/docs/../index.html", None).2, &b"top"[..]);
        assert_eq!(get(&opts, "/s/./docs/./", None).2, &b"docs"[..]);
        assert_eq!(
            get(&opts, "/s/docs/../../index.html", None).0,
            StatusCode::NOT_FOUND
        );

        let mut internal = plain.clone();
        internal.internal = true;
        let req = Request::get("/s/docs/index.html").body(()).unwrap();
        assert_eq!(serve(&internal, &req).await.status(), StatusCode::NOT_FOUND);
        assert_eq!(serve(&plain, &req).await.status(), StatusCode::OK);
        let path = "/s/docs/index.html";
        assert_eq!(get(&internal, path, None).0, StatusCode::OK);

        let mut bad = plain.clone();
        bad.index = Some("../x".into());
        assert!(bad
            .validate("route.0")
            .unwrap_err()
            .to_string()
            .contains("route.0.index"));
        let mut bad = plain.clone();
        bad.cache_control = Some("a\nb".into());
        assert!(bad.validate("route.0").is_err());
    }
}
