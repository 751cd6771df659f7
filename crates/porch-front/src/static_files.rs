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
//! Cost: the common case is one `openat2`, one `statx`, and for a file up to
//! [`SMALL_FILE`] one `read`, done inline on the connection's task (page-cache work of a
//! few microseconds, as nginx does it). Larger files are streamed in [`CHUNK`]-sized
//! `pread`s on tokio's blocking pool, one chunk read ahead, so memory per download stays
//! bounded whatever the file size. `sendfile(2)` cannot be used: hyper owns the socket and
//! writes the body from `Bytes` frames (and TLS has to encrypt them in user space anyway).

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::File;
use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, OnceLock, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use tokio::task::JoinHandle;

use super::body::ResponseBody;
use super::error;
use porch_config::StaticMount;

/// `Cache-Control` for names without a content hash when the mount sets none.
pub const DEFAULT_CACHE_CONTROL: &str = "public, max-age=60";
/// `Cache-Control` for content-hashed names: their content never changes.
pub const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// Files up to this size are read in one go, inline, into one buffer.
pub const SMALL_FILE: u64 = 64 * 1024;
/// Larger files are streamed in reads of this size.
pub const CHUNK: usize = 128 * 1024;
/// How long an open handle on a mount's root directory is reused before the path is
/// opened again (so a root replaced by a deploy, e.g. a swapped symlink, is picked up).
const ROOT_REFRESH: Duration = Duration::from_secs(1);

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
        let mut r = error(
            StatusCode::METHOD_NOT_ALLOWED,
            "static files answer GET and HEAD",
        );
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
        Err(PathError::Invalid) => return error(StatusCode::BAD_REQUEST, "invalid path encoding"),
        Err(PathError::Refused) => return not_found(),
    };
    let root = match root_dir(&mount.dir) {
        Ok(root) => root,
        Err(e) => {
            tracing::warn!("static root {} cannot be opened: {e}", mount.dir.display());
            return not_found();
        }
    };
    let (mut file, mut meta) = match open_beneath(&root.fd, &rel) {
        Ok(x) => x,
        Err(e) => return open_failed(e),
    };
    let mut rel: Cow<str> = Cow::Borrowed(&rel);
    if meta.is_dir() {
        let Some(index) = &mount.index else {
            return not_found();
        };
        if !wants_dir {
            return redirect_to_dir(path, query);
        }
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
    let (content_type, compressible) = content_type(name);
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
    let len = meta.len();
    let etag = etag(&meta);
    let modified = meta.modified().ok();
    let last_modified = modified.map(httpdate::fmt_http_date);

    let mut out = HeaderMap::with_capacity(12);
    let cache_control = if is_hashed_name(name) {
        HeaderValue::from_static(IMMUTABLE)
    } else {
        match &mount.cache_control {
            None => HeaderValue::from_static(DEFAULT_CACHE_CONTROL),
            Some(cc) => HeaderValue::from_str(cc)
                .unwrap_or_else(|_| HeaderValue::from_static(DEFAULT_CACHE_CONTROL)),
        }
    };
    out.insert(header::CACHE_CONTROL, cache_control);
    if let Ok(v) = HeaderValue::from_str(&etag) {
        out.insert(header::ETAG, v);
    }
    if let Some(lm) = last_modified
        .as_deref()
        .and_then(|s| HeaderValue::from_str(s).ok())
    {
        out.insert(header::LAST_MODIFIED, lm);
    }
    if compressible {
        out.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    }

    match preconditions(headers, &etag, modified) {
        Precondition::Proceed => {}
        Precondition::Failed => {
            return error(StatusCode::PRECONDITION_FAILED, "precondition failed");
        }
        Precondition::NotModified => {
            let mut r = Response::new(ResponseBody::empty());
            *r.status_mut() = StatusCode::NOT_MODIFIED;
            *r.headers_mut() = out;
            return r;
        }
    }

    out.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Some(enc) = encoding {
        out.insert(
            header::CONTENT_ENCODING,
            HeaderValue::from_static(enc.token()),
        );
    }
    out.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    out.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );

    // Range only for GET (RFC 9110 §14.2), and only when If-Range still matches.
    let mut status = StatusCode::OK;
    let (mut start, mut count) = (0, len);
    if method == Method::GET {
        if let Some(range) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
            if if_range_holds(headers, &etag, modified) {
                match parse_range(range, len) {
                    ByteRange::Ignore => {}
                    ByteRange::Unsatisfiable => {
                        let mut r =
                            error(StatusCode::RANGE_NOT_SATISFIABLE, "range not satisfiable");
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
                        out.insert(
                            header::CONTENT_RANGE,
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
    } else if count <= SMALL_FILE {
        match read_at_most(&file, start, count as usize) {
            // A file cut short since the stat: send what is there, with its true length.
            Ok(data) => {
                count = data.len() as u64;
                ResponseBody::full(data)
            }
            Err(e) => {
                tracing::warn!("reading static file {rel}: {e}");
                return error(StatusCode::INTERNAL_SERVER_ERROR, "cannot read the file");
            }
        }
    } else {
        ResponseBody::File(FileBody::new(file, start, count))
    };
    out.insert(header::CONTENT_LENGTH, HeaderValue::from(count));
    let mut r = Response::new(body);
    *r.status_mut() = status;
    *r.headers_mut() = out;
    r
}

fn not_found() -> Response<ResponseBody> {
    error(StatusCode::NOT_FOUND, "not found")
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
            error(StatusCode::INTERNAL_SERVER_ERROR, "cannot open the file")
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
    let mut r = error(StatusCode::MOVED_PERMANENTLY, "moved");
    match HeaderValue::from_str(&location) {
        Ok(v) => {
            r.headers_mut().insert(header::LOCATION, v);
            r
        }
        Err(_) => not_found(),
    }
}

// ---------------------------------------------------------------------------------------
// Paths

/// Why a URL path names no file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// Malformed: a bad `%` escape, `%00`, or bytes that are not UTF-8 (400).
    Invalid,
    /// Well-formed but not servable: `..`, `.`, a dotfile, an encoded separator (404).
    Refused,
}

/// The path below the root that the percent-encoded URL path `rel` (what follows the
/// mount's prefix) names: plain segments joined by `/`, empty for the root itself. Each
/// segment is decoded on its own, so no escape can add a separator or climb out.
pub fn relative_path(rel: &str, allow_dotfiles: bool) -> Result<String, PathError> {
    let mut out = String::with_capacity(rel.len());
    for raw in rel.split('/') {
        if raw.is_empty() {
            continue; // `a//b` is `a/b`, as nginx merges slashes
        }
        let seg = percent_decode(raw)?;
        if seg == "." || seg == ".." || seg.contains(['/', '\\']) {
            return Err(PathError::Refused);
        }
        if seg.starts_with('.') && !allow_dotfiles {
            return Err(PathError::Refused);
        }
        if !out.is_empty() {
            out.push('/');
        }
        out.push_str(&seg);
    }
    Ok(out)
}

fn percent_decode(seg: &str) -> Result<Cow<'_, str>, PathError> {
    if !seg.contains('%') {
        return Ok(Cow::Borrowed(seg));
    }
    fn hex(b: Option<&u8>) -> Result<u8, PathError> {
        match b {
            Some(b @ b'0'..=b'9') => Ok(b - b'0'),
            Some(b @ b'a'..=b'f') => Ok(b - b'a' + 10),
            Some(b @ b'A'..=b'F') => Ok(b - b'A' + 10),
            _ => Err(PathError::Invalid),
        }
    }
    let b = seg.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let v = hex(b.get(i + 1))? << 4 | hex(b.get(i + 2))?;
            if v == 0 {
                return Err(PathError::Invalid);
            }
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out)
        .map(Cow::Owned)
        .map_err(|_| PathError::Invalid)
}

/// An open handle on a mount's root directory, shared by requests for a short while.
struct RootDir {
    fd: OwnedFd,
    opened: Instant,
}

fn root_dir(dir: &Path) -> io::Result<Arc<RootDir>> {
    static ROOTS: OnceLock<RwLock<HashMap<PathBuf, Arc<RootDir>>>> = OnceLock::new();
    let roots = ROOTS.get_or_init(Default::default);
    if let Some(root) = roots.read().unwrap_or_else(|e| e.into_inner()).get(dir) {
        if root.opened.elapsed() < ROOT_REFRESH {
            return Ok(root.clone());
        }
    }
    let fd: OwnedFd = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(dir)?
        .into();
    let root = Arc::new(RootDir {
        fd,
        opened: Instant::now(),
    });
    roots
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .insert(dir.to_path_buf(), root.clone());
    Ok(root)
}

/// Flags for every file porch opens under a root: never block on a FIFO, never take a
/// controlling terminal, never leak into a child.
const OPEN_FLAGS: libc::c_int =
    libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NONBLOCK | libc::O_NOCTTY;

/// Opens `rel` (from [`relative_path`]) below `root` and stats it; fails for anything,
/// symlinks included, that resolves outside `root`.
fn open_beneath(root: &OwnedFd, rel: &str) -> io::Result<(File, std::fs::Metadata)> {
    let rel = if rel.is_empty() { "." } else { rel };
    let c_rel =
        std::ffi::CString::new(rel).map_err(|_| io::Error::from_raw_os_error(libc::ENOENT))?;
    let file = open_resolve_beneath(root, &c_rel)?;
    let meta = file.metadata()?;
    Ok((file, meta))
}

#[cfg(target_os = "linux")]
fn open_resolve_beneath(root: &OwnedFd, rel: &std::ffi::CStr) -> io::Result<File> {
    use std::sync::atomic::{AtomicBool, Ordering};
    static NO_OPENAT2: AtomicBool = AtomicBool::new(false);
    if !NO_OPENAT2.load(Ordering::Relaxed) {
        match openat2_beneath(root, rel) {
            Err(e)
                if matches!(e.raw_os_error(), Some(libc::ENOSYS) | Some(libc::EPERM))
                    && !openat2_works() =>
            {
                tracing::info!("openat2 is unavailable; static files use a path check instead");
                NO_OPENAT2.store(true, Ordering::Relaxed);
            }
            other => return other,
        }
    }
    open_checked(root, rel)
}

#[cfg(not(target_os = "linux"))]
fn open_resolve_beneath(root: &OwnedFd, rel: &std::ffi::CStr) -> io::Result<File> {
    open_checked(root, rel)
}

/// `openat2(root, rel, RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)`: the kernel refuses any
/// resolution that leaves `root` (EXDEV), including through symlinks and `..` in them.
#[cfg(target_os = "linux")]
fn openat2_beneath(root: &OwnedFd, rel: &std::ffi::CStr) -> io::Result<File> {
    // SAFETY: open_how is plain data; zeroed is its documented default.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = OPEN_FLAGS as u64;
    how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS;
    for _ in 0..4 {
        // SAFETY: valid fd, NUL-terminated path, and `how` sized as passed.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                root.as_raw_fd(),
                rel.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if fd >= 0 {
            // SAFETY: the kernel just gave us this descriptor.
            return Ok(unsafe { File::from_raw_fd(fd as libc::c_int) });
        }
        let e = io::Error::last_os_error();
        // EAGAIN: a concurrent rename made the kernel unsure; trying again is the remedy.
        if e.raw_os_error() != Some(libc::EAGAIN) {
            return Err(e);
        }
    }
    Err(io::Error::from_raw_os_error(libc::EAGAIN))
}

/// Whether `openat2` works here at all (a seccomp filter may refuse it with EPERM).
#[cfg(target_os = "linux")]
fn openat2_works() -> bool {
    static WORKS: OnceLock<bool> = OnceLock::new();
    *WORKS.get_or_init(|| match File::open("/") {
        Ok(f) => {
            let fd: OwnedFd = f.into();
            openat2_beneath(&fd, c".").is_ok()
        }
        Err(_) => false,
    })
}

/// Without `openat2`: opens with `openat` and then checks that the file actually opened
/// lies inside the root, comparing real paths (the opened descriptor's, so a symlink
/// swapped in between the check and the open cannot fool it).
fn open_checked(root: &OwnedFd, rel: &std::ffi::CStr) -> io::Result<File> {
    // SAFETY: valid fd and NUL-terminated path.
    let fd = unsafe { libc::openat(root.as_raw_fd(), rel.as_ptr(), OPEN_FLAGS) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just gave us this descriptor.
    let file = unsafe { File::from_raw_fd(fd) };
    let real_root = fd_path(root.as_raw_fd())?;
    let real = fd_path(file.as_raw_fd())?;
    if real == real_root || real.starts_with(&real_root) {
        Ok(file)
    } else {
        Err(io::Error::from_raw_os_error(libc::EXDEV))
    }
}

fn fd_path(fd: std::os::fd::RawFd) -> io::Result<PathBuf> {
    std::fs::read_link(format!("/proc/self/fd/{fd}"))
}

/// Reads up to `len` bytes at `offset` into one buffer (fewer only at end of file).
fn read_at_most(file: &File, offset: u64, len: usize) -> io::Result<Bytes> {
    let mut buf = BytesMut::with_capacity(len);
    while buf.len() < len {
        let filled = buf.len();
        let spare = buf.spare_capacity_mut();
        let want = spare.len().min(len - filled);
        // SAFETY: pread writes at most `want` bytes into the spare capacity, and we only
        // extend the length by what it reports written.
        let n = unsafe {
            libc::pread(
                file.as_raw_fd(),
                spare.as_mut_ptr().cast(),
                want,
                (offset + filled as u64) as libc::off_t,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            break;
        }
        // SAFETY: see above.
        unsafe { buf.set_len(filled + n as usize) };
    }
    Ok(buf.freeze())
}

// ---------------------------------------------------------------------------------------
// Streaming body

/// A byte range of a file, read in [`CHUNK`]s on the blocking pool with one chunk read
/// ahead while the previous one is being written to the client.
pub struct FileBody {
    file: Arc<File>,
    /// Where the next chunk starts.
    offset: u64,
    /// Bytes not yet handed to hyper.
    remaining: u64,
    pending: Option<JoinHandle<io::Result<Bytes>>>,
}

impl FileBody {
    pub fn new(file: File, offset: u64, len: u64) -> FileBody {
        FileBody {
            file: Arc::new(file),
            offset,
            remaining: len,
            pending: None,
        }
    }

    fn start_read(&mut self) {
        let file = self.file.clone();
        let (offset, len) = (self.offset, (self.remaining.min(CHUNK as u64)) as usize);
        self.pending = Some(tokio::task::spawn_blocking(move || {
            read_at_most(&file, offset, len)
        }));
    }

    /// The next chunk; an error when the file ends early (it shrank while being sent),
    /// so the connection is closed rather than a short body passed off as whole.
    pub fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        if self.pending.is_none() {
            self.start_read();
        }
        let handle = self.pending.as_mut().expect("read started");
        let result = match Pin::new(handle).poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(r) => r,
        };
        self.pending = None;
        let data = match result {
            Ok(Ok(data)) if !data.is_empty() => data,
            Ok(Ok(_)) => {
                self.remaining = 0;
                return Poll::Ready(Some(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the file shrank while being sent",
                ))));
            }
            Ok(Err(e)) => {
                self.remaining = 0;
                return Poll::Ready(Some(Err(e)));
            }
            Err(join) => {
                self.remaining = 0;
                return Poll::Ready(Some(Err(io::Error::other(join))));
            }
        };
        let n = (data.len() as u64).min(self.remaining);
        self.offset += n;
        self.remaining -= n;
        if self.remaining > 0 {
            self.start_read();
        }
        Poll::Ready(Some(Ok(data.slice(..n as usize))))
    }

    pub fn is_end(&self) -> bool {
        self.remaining == 0
    }

    /// Bytes still to come.
    pub fn remaining(&self) -> u64 {
        self.remaining
    }
}

// ---------------------------------------------------------------------------------------
// Validators and conditional requests

/// A strong ETag from size and modification time (to the nanosecond), like nginx's.
/// A precompressed sibling is another file, so it gets another tag.
fn etag(meta: &std::fs::Metadata) -> String {
    format!(
        "\"{:x}.{:x}-{:x}\"",
        meta.mtime(),
        meta.mtime_nsec(),
        meta.len()
    )
}

fn unix_secs(t: SystemTime) -> Option<u64> {
    t.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs())
}

#[derive(Debug, PartialEq, Eq)]
enum Precondition {
    Proceed,
    NotModified,
    Failed,
}

fn header_values(headers: &HeaderMap, name: header::HeaderName) -> impl Iterator<Item = &str> {
    headers
        .get_all(name)
        .into_iter()
        .filter_map(|v| v.to_str().ok())
}

fn preconditions(headers: &HeaderMap, etag: &str, modified: Option<SystemTime>) -> Precondition {
    let mtime = modified.and_then(unix_secs);
    if headers.contains_key(header::IF_MATCH) {
        if !header_values(headers, header::IF_MATCH).any(|v| etag_list_matches(v, etag, false)) {
            return Precondition::Failed;
        }
    } else if let Some(since) = headers
        .get(header::IF_UNMODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok())
        .and_then(unix_secs)
    {
        if mtime.is_none_or(|m| m > since) {
            return Precondition::Failed;
        }
    }
    if headers.contains_key(header::IF_NONE_MATCH) {
        if header_values(headers, header::IF_NONE_MATCH).any(|v| etag_list_matches(v, etag, true)) {
            return Precondition::NotModified;
        }
    } else if let Some(since) = headers
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok())
        .and_then(unix_secs)
    {
        if mtime.is_some_and(|m| m <= since) {
            return Precondition::NotModified;
        }
    }
    Precondition::Proceed
}

/// Whether the `If-Range` header (if any) lets the `Range` header apply: its ETag must
/// match strongly, or its date equal `Last-Modified`.
fn if_range_holds(headers: &HeaderMap, etag: &str, modified: Option<SystemTime>) -> bool {
    let Some(v) = headers.get(header::IF_RANGE) else {
        return true;
    };
    let Ok(v) = v.to_str() else {
        return false;
    };
    let v = v.trim();
    if v.starts_with('"') || v.starts_with("W/") {
        return !v.starts_with("W/") && v == etag;
    }
    match (
        httpdate::parse_http_date(v).ok().and_then(unix_secs),
        modified.and_then(unix_secs),
    ) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// Whether an `If-Match`/`If-None-Match` value (`*` or a list of entity tags) matches
/// `etag` (always a strong tag here). `weak`: the weak comparison If-None-Match uses,
/// where `W/"x"` matches `"x"`; otherwise a weak tag in the list never matches.
pub fn etag_list_matches(value: &str, etag: &str, weak: bool) -> bool {
    let b = value.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b' ' | b'\t' | b',' => i += 1,
            b'*' => return true,
            _ => {
                let is_weak = b[i..].starts_with(b"W/");
                let start = if is_weak { i + 2 } else { i };
                if b.get(start) != Some(&b'"') {
                    // Not an entity tag: skip this list element.
                    while i < b.len() && b[i] != b',' {
                        i += 1;
                    }
                    continue;
                }
                let Some(len) = b[start + 1..].iter().position(|&c| c == b'"') else {
                    return false;
                };
                let end = start + 1 + len + 1;
                let tag = &value[start..end];
                if tag == etag && (weak || !is_weak) {
                    return true;
                }
                i = end;
            }
        }
    }
    false
}

// ---------------------------------------------------------------------------------------
// Ranges

/// What a `Range` header asks of a representation `len` bytes long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// Not a single byte range porch understands (another unit, several ranges, bad
    /// syntax): answer with the whole representation.
    Ignore,
    /// Starts at or past the end (or a zero-length suffix): 416.
    Unsatisfiable,
    /// First and last byte, inclusive, both within the representation.
    Single(u64, u64),
}

pub fn parse_range(value: &str, len: u64) -> ByteRange {
    let Some((unit, spec)) = value.trim().split_once('=') else {
        return ByteRange::Ignore;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return ByteRange::Ignore;
    }
    let mut ranges = spec.split(',').map(str::trim).filter(|r| !r.is_empty());
    let (Some(range), None) = (ranges.next(), ranges.next()) else {
        return ByteRange::Ignore;
    };
    let Some((first, last)) = range.split_once('-') else {
        return ByteRange::Ignore;
    };
    let (first, last) = (first.trim(), last.trim());
    // Digits only (no sign, no spaces inside); too large to fit saturates.
    let number = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().unwrap_or(u64::MAX))
    };
    if first.is_empty() {
        let Some(suffix) = number(last) else {
            return ByteRange::Ignore;
        };
        if suffix == 0 || len == 0 {
            return ByteRange::Unsatisfiable;
        }
        return ByteRange::Single(len.saturating_sub(suffix), len - 1);
    }
    let Some(first) = number(first) else {
        return ByteRange::Ignore;
    };
    let last = if last.is_empty() {
        u64::MAX
    } else {
        match number(last) {
            Some(l) if l >= first => l,
            _ => return ByteRange::Ignore,
        }
    };
    if first >= len {
        return ByteRange::Unsatisfiable;
    }
    ByteRange::Single(first, last.min(len - 1))
}

// ---------------------------------------------------------------------------------------
// Content negotiation and names

/// A precompressed sibling's coding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Br,
    Gzip,
}

impl Encoding {
    fn suffix(self) -> &'static str {
        match self {
            Encoding::Br => "br",
            Encoding::Gzip => "gz",
        }
    }
    fn token(self) -> &'static str {
        match self {
            Encoding::Br => "br",
            Encoding::Gzip => "gzip",
        }
    }
}

/// The codings `Accept-Encoding` accepts (q > 0), best first, `br` first on a tie. An
/// absent header accepts none of them (identity only); `*` stands for codings not named.
pub fn accepted_encodings(headers: &HeaderMap) -> [Option<Encoding>; 2] {
    let (mut br, mut gzip, mut star) = (None::<u16>, None::<u16>, None::<u16>);
    for value in header_values(headers, header::ACCEPT_ENCODING) {
        for item in value.split(',') {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim();
            let mut q = 1000;
            for p in parts {
                if let Some((k, v)) = p.split_once('=') {
                    if k.trim().eq_ignore_ascii_case("q") {
                        q = parse_qvalue(v.trim()).unwrap_or(0);
                    }
                }
            }
            let slot = if coding.eq_ignore_ascii_case("br") {
                &mut br
            } else if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
                &mut gzip
            } else if coding == "*" {
                &mut star
            } else {
                continue;
            };
            *slot = Some(slot.map_or(q, |old: u16| old.max(q)));
        }
    }
    let br = br.or(star).unwrap_or(0);
    let gzip = gzip.or(star).unwrap_or(0);
    match (br > 0, gzip > 0) {
        (true, true) if gzip > br => [Some(Encoding::Gzip), Some(Encoding::Br)],
        (true, true) => [Some(Encoding::Br), Some(Encoding::Gzip)],
        (true, false) => [Some(Encoding::Br), None],
        (false, true) => [Some(Encoding::Gzip), None],
        (false, false) => [None, None],
    }
}

/// A q-value in thousandths: `0`, `0.5`, `1`, `1.000`.
fn parse_qvalue(s: &str) -> Option<u16> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut thousandths: u16 = match int {
        "0" => 0,
        "1" => 1000,
        _ => return None,
    };
    for (i, d) in frac.bytes().enumerate() {
        thousandths += u16::from(d - b'0') * [100, 10, 1][i];
    }
    (thousandths <= 1000).then_some(thousandths)
}

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
    use std::os::unix::fs::symlink;

    #[test]
    fn paths_are_split_before_decoding() {
        assert_eq!(
            relative_path("css/app.css", false),
            Ok("css/app.css".into())
        );
        assert_eq!(relative_path("", false), Ok("".into()));
        assert_eq!(relative_path("a//b/", false), Ok("a/b".into()));
        assert_eq!(relative_path("caf%C3%A9.txt", false), Ok("café.txt".into()));
        assert_eq!(relative_path("a%20b", false), Ok("a b".into()));
        for refused in [
            "../secret",
            "a/../../secret",
            "%2e%2e/secret",
            "%2E%2E/secret",
            ".%2e/secret",
            "..%2fsecret",
            "a%2f..%2f..%2fsecret",
            "a%5c..%5csecret",
            "a\\..\\secret",
            "./a",
            "%2e/a",
            ".env",
            "a/.git/config",
            "%2egit/config",
        ] {
            assert_eq!(
                relative_path(refused, false),
                Err(PathError::Refused),
                "{refused}"
            );
        }
        for invalid in ["a%00b", "%00", "a%zz", "a%2", "a%", "%ff%fe", "%c3"] {
            assert_eq!(
                relative_path(invalid, false),
                Err(PathError::Invalid),
                "{invalid}"
            );
        }
        assert_eq!(
            relative_path(".well-known/x", true),
            Ok(".well-known/x".into())
        );
        assert_eq!(relative_path("..", true), Err(PathError::Refused));
        assert_eq!(relative_path("a/%2e%2e/b", true), Err(PathError::Refused));
    }

    #[test]
    fn opening_stays_beneath_the_root() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "secret").unwrap();
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("sub")).unwrap();
        std::fs::write(root.path().join("sub/ok.txt"), "ok").unwrap();
        symlink(outside.path().join("secret"), root.path().join("abs-out")).unwrap();
        symlink("../../secret", root.path().join("sub/rel-out")).unwrap();
        symlink(outside.path(), root.path().join("dir-out")).unwrap();
        symlink("sub/ok.txt", root.path().join("inside")).unwrap();
        symlink("../sub/ok.txt", root.path().join("sub/up-and-in")).unwrap();
        let fd: OwnedFd = File::open(root.path()).unwrap().into();

        type Open = fn(&OwnedFd, &std::ffi::CStr) -> io::Result<File>;
        for open in [open_resolve_beneath as Open, open_checked as Open] {
            let ok = |rel: &str| {
                let c = std::ffi::CString::new(rel).unwrap();
                open(&fd, &c).map(|f| {
                    let mut s = String::new();
                    io::Read::read_to_string(&mut &f, &mut s).unwrap();
                    s
                })
            };
            assert_eq!(ok("sub/ok.txt").unwrap(), "ok");
            assert_eq!(ok("inside").unwrap(), "ok");
            assert_eq!(ok("sub/up-and-in").unwrap(), "ok");
            for out in ["abs-out", "sub/rel-out", "dir-out/secret", "../secret"] {
                assert!(ok(out).is_err(), "{out} must not open");
            }
        }
        let (_, meta) = open_beneath(&fd, "").unwrap();
        assert!(meta.is_dir());
    }

    #[test]
    fn ranges() {
        use ByteRange::*;
        assert_eq!(parse_range("bytes=0-99", 1000), Single(0, 99));
        assert_eq!(parse_range("bytes=500-", 1000), Single(500, 999));
        assert_eq!(parse_range("bytes=-100", 1000), Single(900, 999));
        assert_eq!(parse_range("bytes=-5000", 1000), Single(0, 999));
        assert_eq!(parse_range("bytes=990-5000", 1000), Single(990, 999));
        assert_eq!(parse_range("Bytes = 1-1 ", 1000), Single(1, 1));
        assert_eq!(parse_range("bytes=0-0,", 1000), Single(0, 0));
        assert_eq!(parse_range("bytes=999-", 1000), Single(999, 999));
        assert_eq!(
            parse_range("bytes=99999999999999999999-", 1000),
            Unsatisfiable
        );
        assert_eq!(
            parse_range("bytes=0-99999999999999999999", 10),
            Single(0, 9)
        );
        assert_eq!(parse_range("bytes=1000-", 1000), Unsatisfiable);
        assert_eq!(parse_range("bytes=1000-2000", 1000), Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 1000), Unsatisfiable);
        assert_eq!(parse_range("bytes=0-", 0), Unsatisfiable);
        assert_eq!(parse_range("bytes=-1", 0), Unsatisfiable);
        for ignored in [
            "bytes=0-1,5-6",
            "bytes=5-1",
            "bytes=a-b",
            "bytes=-",
            "bytes=+1-2",
            "bytes=1",
            "items=0-1",
            "bytes",
            "",
            "bytes=0x1-2",
        ] {
            assert_eq!(parse_range(ignored, 1000), Ignore, "{ignored}");
        }
    }

    #[test]
    fn etag_lists() {
        let tag = "\"5f.1a-400\"";
        assert!(etag_list_matches(tag, tag, true));
        assert!(etag_list_matches("*", tag, true));
        assert!(etag_list_matches("W/\"5f.1a-400\"", tag, true));
        assert!(!etag_list_matches("W/\"5f.1a-400\"", tag, false));
        assert!(etag_list_matches("\"x\", \"5f.1a-400\"", tag, false));
        assert!(etag_list_matches("\"a,b\",W/\"5f.1a-400\"", tag, true));
        assert!(etag_list_matches("junk, \"5f.1a-400\"", tag, true));
        assert!(!etag_list_matches("\"5f.1a-401\"", tag, true));
        assert!(!etag_list_matches("5f.1a-400", tag, true));
        assert!(!etag_list_matches("\"5f.1a-400", tag, true));
        assert!(!etag_list_matches("", tag, true));
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn conditional_order() {
        let tag = "\"1.0-2\"";
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let at = |s| httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(s));
        let pre = |h: &[(&'static str, &str)]| preconditions(&headers(h), tag, Some(t));
        assert_eq!(pre(&[]), Precondition::Proceed);
        assert_eq!(pre(&[("if-none-match", tag)]), Precondition::NotModified);
        assert_eq!(
            pre(&[("if-none-match", "\"other\"")]),
            Precondition::Proceed
        );
        assert_eq!(
            pre(&[("if-modified-since", &at(1_700_000_000))]),
            Precondition::NotModified
        );
        assert_eq!(
            pre(&[("if-modified-since", &at(1_699_999_999))]),
            Precondition::Proceed
        );
        assert_eq!(
            pre(&[("if-modified-since", "garbage")]),
            Precondition::Proceed
        );
        // If-None-Match wins over If-Modified-Since.
        assert_eq!(
            pre(&[
                ("if-none-match", "\"other\""),
                ("if-modified-since", &at(1_800_000_000))
            ]),
            Precondition::Proceed
        );
        assert_eq!(pre(&[("if-match", "\"other\"")]), Precondition::Failed);
        assert_eq!(
            pre(&[("if-match", tag), ("if-none-match", tag)]),
            Precondition::NotModified
        );
        assert_eq!(
            pre(&[("if-unmodified-since", &at(1_600_000_000))]),
            Precondition::Failed
        );
        assert_eq!(
            pre(&[("if-unmodified-since", &at(1_700_000_000))]),
            Precondition::Proceed
        );

        let holds = |h: &[(&'static str, &str)]| if_range_holds(&headers(h), tag, Some(t));
        assert!(holds(&[]));
        assert!(holds(&[("if-range", tag)]));
        assert!(!holds(&[("if-range", "W/\"1.0-2\"")]));
        assert!(!holds(&[("if-range", "\"other\"")]));
        assert!(holds(&[("if-range", &at(1_700_000_000))]));
        assert!(!holds(&[("if-range", &at(1_700_000_001))]));
        assert!(!holds(&[("if-range", "yesterday")]));
    }

    #[test]
    fn accept_encoding_choice() {
        use Encoding::*;
        let pick = |v: &str| accepted_encodings(&headers(&[("accept-encoding", v)]));
        assert_eq!(accepted_encodings(&HeaderMap::new()), [None, None]);
        assert_eq!(pick("gzip, deflate, br, zstd"), [Some(Br), Some(Gzip)]);
        assert_eq!(pick("gzip"), [Some(Gzip), None]);
        assert_eq!(pick("x-gzip"), [Some(Gzip), None]);
        assert_eq!(pick("BR"), [Some(Br), None]);
        assert_eq!(pick("br;q=0.5, gzip;q=0.8"), [Some(Gzip), Some(Br)]);
        assert_eq!(pick("br;q=0, gzip"), [Some(Gzip), None]);
        assert_eq!(pick("br; q=0.000, gzip;q=0.001"), [Some(Gzip), None]);
        assert_eq!(pick("*"), [Some(Br), Some(Gzip)]);
        assert_eq!(pick("*;q=0.5, gzip"), [Some(Gzip), Some(Br)]);
        assert_eq!(pick("*;q=0"), [None, None]);
        assert_eq!(pick("identity"), [None, None]);
        assert_eq!(pick("br;q=2"), [None, None]);
        assert_eq!(pick("gzip;q=1.0, br;q=1"), [Some(Br), Some(Gzip)]);
        assert_eq!(pick(""), [None, None]);
        let two = headers(&[("accept-encoding", "gzip"), ("accept-encoding", "br;q=0.1")]);
        assert_eq!(accepted_encodings(&two), [Some(Gzip), Some(Br)]);
    }

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
        assert_eq!(get(&plain, "/s", None).0, StatusCode::NOT_FOUND);
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
        assert_eq!(
            get(&opts, "/s/docs/../index.html", None).0,
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

    #[tokio::test]
    async fn large_files_stream_in_chunks() {
        let root = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..(CHUNK * 3 + 123)).map(|i| (i % 251) as u8).collect();
        std::fs::write(root.path().join("big.bin"), &data).unwrap();
        let mount = StaticMount::new("static", "/s/", root.path().to_str().unwrap()).unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(header::RANGE, HeaderValue::from_static("bytes=10-"));
        let r = serve_path(&mount, &Method::GET, &headers, "/s/big.bin", None);
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
        let ResponseBody::File(mut body) = r.into_body() else {
            panic!("a large file is streamed");
        };
        let mut got = Vec::new();
        let mut chunks = 0;
        while let Some(chunk) = std::future::poll_fn(|cx| body.poll_chunk(cx)).await {
            let chunk = chunk.unwrap();
            assert!(chunk.len() <= CHUNK);
            got.extend_from_slice(&chunk);
            chunks += 1;
        }
        assert_eq!(got, &data[10..]);
        assert_eq!(chunks, 4);
        assert!(body.is_end());
    }

    #[test]
    fn qvalues() {
        assert_eq!(parse_qvalue("1"), Some(1000));
        assert_eq!(parse_qvalue("1.000"), Some(1000));
        assert_eq!(parse_qvalue("0.5"), Some(500));
        assert_eq!(parse_qvalue("0.125"), Some(125));
        assert_eq!(parse_qvalue("0"), Some(0));
        assert_eq!(parse_qvalue("1.5"), None);
        assert_eq!(parse_qvalue("0.1234"), None);
        assert_eq!(parse_qvalue("-1"), None);
    }
}
