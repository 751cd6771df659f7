//! What a response for one file needs, prepared once: its identity on disk, validators,
//! and the header maps of a `304` and of a whole-file `200`, and for a cached file its
//! bytes. Built per request on the uncached path; kept by the file cache otherwise.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue};

use super::encoding::Encoding;
use super::types::{content_type, is_hashed_name};
use super::{DEFAULT_CACHE_CONTROL, IMMUTABLE};
use porch_config::StaticMount;

/// A file's identity and metadata, from `fstat` or `fstatat`. Two stats of one path
/// with equal [`Stat::same_file`] name the same, unchanged file: any write, truncation,
/// `chmod`, `utime` or rename onto the path changes the inode, the size, or the change
/// time (`ctime`, which no user can set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Stat {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mode: u32,
    pub mtime: i64,
    pub mtime_nsec: i64,
    pub ctime: i64,
    pub ctime_nsec: i64,
}

impl Stat {
    fn from_libc(st: &libc::stat) -> Stat {
        Stat {
            dev: st.st_dev,
            ino: st.st_ino,
            size: st.st_size as u64,
            mode: st.st_mode,
            mtime: st.st_mtime,
            mtime_nsec: st.st_mtime_nsec,
            ctime: st.st_ctime,
            ctime_nsec: st.st_ctime_nsec,
        }
    }

    pub fn from_metadata(m: &std::fs::Metadata) -> Stat {
        Stat {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mode: m.mode(),
            mtime: m.mtime(),
            mtime_nsec: m.mtime_nsec(),
            ctime: m.ctime(),
            ctime_nsec: m.ctime_nsec(),
        }
    }

    /// `fstatat(dir, "REL.SUFFIX")` (just `REL` for an empty suffix), following
    /// symlinks, with no allocation for paths up to 255 bytes. Resolution is not
    /// confined to `dir`: callers only compare the result with a file that was opened
    /// beneath it.
    pub fn at(dir: BorrowedFd<'_>, rel: &str, suffix: &str) -> io::Result<Stat> {
        let len = if suffix.is_empty() {
            rel.len()
        } else {
            rel.len() + 1 + suffix.len()
        };
        let mut buf = [0u8; 256];
        let owned;
        let path: &std::ffi::CStr = if len < buf.len() {
            buf[..rel.len()].copy_from_slice(rel.as_bytes());
            if !suffix.is_empty() {
                buf[rel.len()] = b'.';
                buf[rel.len() + 1..len].copy_from_slice(suffix.as_bytes());
            }
            std::ffi::CStr::from_bytes_until_nul(&buf)
                .map_err(|_| io::Error::from_raw_os_error(libc::ENOENT))?
        } else {
            let joined = if suffix.is_empty() {
                rel.to_string()
            } else {
                format!("{rel}.{suffix}")
            };
            owned = std::ffi::CString::new(joined)
                .map_err(|_| io::Error::from_raw_os_error(libc::ENOENT))?;
            &owned
        };
        if path.to_bytes().len() != len {
            return Err(io::Error::from_raw_os_error(libc::ENOENT)); // a NUL inside
        }
        let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: valid descriptor, NUL-terminated path, and `st` is written by the kernel
        // before it is read (only when the call succeeds).
        let rc = unsafe { libc::fstatat(dir.as_raw_fd(), path.as_ptr(), st.as_mut_ptr(), 0) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fstatat succeeded, so `st` is initialised.
        Ok(Stat::from_libc(unsafe { st.assume_init_ref() }))
    }

    /// `fstat` of an open file.
    pub fn of(fd: BorrowedFd<'_>) -> io::Result<Stat> {
        let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: valid descriptor; `st` is read only when the call succeeds.
        let rc = unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fstat succeeded, so `st` is initialised.
        Ok(Stat::from_libc(unsafe { st.assume_init_ref() }))
    }

    pub fn is_file(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFREG
    }

    /// The same inode, unchanged since the other stat.
    pub fn same_file(&self, other: &Stat) -> bool {
        self == other
    }

    fn time(secs: i64, nsec: i64) -> Option<SystemTime> {
        if secs >= 0 {
            UNIX_EPOCH.checked_add(Duration::new(secs as u64, nsec as u32))
        } else {
            UNIX_EPOCH
                .checked_sub(Duration::from_secs(secs.unsigned_abs()))?
                .checked_add(Duration::from_nanos(nsec as u64))
        }
    }

    pub fn modified(&self) -> Option<SystemTime> {
        Stat::time(self.mtime, self.mtime_nsec)
    }

    /// The later of the modification and change times.
    pub fn changed(&self) -> Option<SystemTime> {
        Stat::time(self.ctime, self.ctime_nsec).max(self.modified())
    }
}

/// A strong ETag from size and modification time (to the nanosecond), like nginx's.
/// A precompressed sibling is another file, so it gets another tag.
pub(super) fn etag(stat: &Stat) -> String {
    format!("\"{:x}.{:x}-{:x}\"", stat.mtime, stat.mtime_nsec, stat.size)
}

/// One file ready to answer from: `NAME` itself, or its precompressed sibling (whose
/// headers still carry `NAME`'s type and cache policy).
pub(super) struct FileEntry {
    pub stat: Stat,
    pub etag: HeaderValue,
    pub modified: Option<SystemTime>,
    /// The headers of a `304`: `Cache-Control`, `ETag`, `Last-Modified`, `Vary`.
    pub not_modified: HeaderMap,
    /// The headers of a whole-file `200`: the above, the content headers, and
    /// `Content-Length` of the whole file.
    pub ok: HeaderMap,
    /// The whole file, when the cache holds it.
    pub bytes: Option<Bytes>,
}

impl FileEntry {
    /// `name` is the requested file's name (not the sibling's), `compressible` whether
    /// its type gets `Vary: Accept-Encoding`.
    pub fn new(
        stat: Stat,
        mount: &StaticMount,
        name: &str,
        encoding: Option<Encoding>,
        bytes: Option<Bytes>,
    ) -> FileEntry {
        let (content_type, compressible) = content_type(name);
        let etag = HeaderValue::from_str(&etag(&stat)).expect("hex digits");
        let modified = stat.modified();
        let mut not_modified = HeaderMap::with_capacity(12);
        let cache_control = if is_hashed_name(name) {
            HeaderValue::from_static(IMMUTABLE)
        } else {
            match &mount.cache_control {
                None => HeaderValue::from_static(DEFAULT_CACHE_CONTROL),
                Some(cc) => HeaderValue::from_str(cc)
                    .unwrap_or_else(|_| HeaderValue::from_static(DEFAULT_CACHE_CONTROL)),
            }
        };
        not_modified.insert(header::CACHE_CONTROL, cache_control);
        not_modified.insert(header::ETAG, etag.clone());
        if let Some(lm) = modified
            .map(httpdate::fmt_http_date)
            .and_then(|s| HeaderValue::from_str(&s).ok())
        {
            not_modified.insert(header::LAST_MODIFIED, lm);
        }
        if compressible {
            not_modified.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
        }
        let mut ok = not_modified.clone();
        ok.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        if let Some(enc) = encoding {
            ok.insert(
                header::CONTENT_ENCODING,
                HeaderValue::from_static(enc.token()),
            );
        }
        ok.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        ok.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        ok.insert(header::CONTENT_LENGTH, HeaderValue::from(stat.size));
        FileEntry {
            stat,
            etag,
            modified,
            not_modified,
            ok,
            bytes,
        }
    }

    pub fn etag_str(&self) -> &str {
        self.etag.to_str().expect("built from ASCII")
    }

    /// Bytes this entry keeps in memory.
    pub fn held(&self) -> usize {
        self.bytes.as_ref().map_or(0, Bytes::len)
    }
}
