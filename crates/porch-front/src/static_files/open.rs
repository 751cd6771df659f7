//! Opening a file below a mount's root so that nothing, symlinks and races included,
//! resolves outside it.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use super::cache::{Budget, MountCache};

/// How long an open handle on a mount's root directory is reused before the path is
/// opened again (so a root replaced by a deploy, e.g. a swapped symlink, is picked up).
const ROOT_REFRESH: Duration = Duration::from_secs(1);

/// An open handle on a mount's root directory, shared by requests for a short while.
pub(super) struct RootDir {
    pub(super) fd: OwnedFd,
    opened: Instant,
}

/// What porch keeps per mount directory: the root's handle and the file cache.
pub(super) struct MountState {
    root: RwLock<Arc<RootDir>>,
    pub(super) cache: MountCache,
}

impl MountState {
    /// The root's handle, opened again after [`ROOT_REFRESH`].
    pub(super) fn root(&self, dir: &Path) -> io::Result<Arc<RootDir>> {
        {
            let root = self.root.read().unwrap_or_else(|e| e.into_inner());
            if root.opened.elapsed() < ROOT_REFRESH {
                return Ok(root.clone());
            }
        }
        let root = Arc::new(open_root(dir)?);
        *self.root.write().unwrap_or_else(|e| e.into_inner()) = root.clone();
        Ok(root)
    }
}

fn open_root(dir: &Path) -> io::Result<RootDir> {
    let fd: OwnedFd = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(dir)?
        .into();
    Ok(RootDir {
        fd,
        opened: Instant::now(),
    })
}

/// The state of the mount serving `dir` (keyed by the path's bytes, which hash faster
/// than a `Path`'s components).
pub(super) fn mount_state(dir: &Path) -> io::Result<Arc<MountState>> {
    type Mounts = RwLock<HashMap<Box<[u8]>, Arc<MountState>>>;
    static MOUNTS: OnceLock<Mounts> = OnceLock::new();
    let mounts = MOUNTS.get_or_init(Default::default);
    let key = dir.as_os_str().as_bytes();
    if let Some(m) = mounts.read().unwrap_or_else(|e| e.into_inner()).get(key) {
        return Ok(m.clone());
    }
    let state = Arc::new(MountState {
        root: RwLock::new(Arc::new(open_root(dir)?)),
        cache: MountCache::new(Budget::global()),
    });
    Ok(mounts
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .entry(key.into())
        .or_insert(state)
        .clone())
}

/// Flags for every file porch opens under a root: never block on a FIFO, never take a
/// controlling terminal, never leak into a child.
const OPEN_FLAGS: libc::c_int =
    libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NONBLOCK | libc::O_NOCTTY;

/// Opens `rel` (from [`relative_path`]) below `root` and stats it; fails for anything,
/// symlinks included, that resolves outside `root`.
pub(super) fn open_beneath(root: &OwnedFd, rel: &str) -> io::Result<(File, std::fs::Metadata)> {
    let file = open_file(root.as_fd(), rel)?;
    let meta = file.metadata()?;
    Ok((file, meta))
}

/// Opens `rel` below `root` as [`open_beneath`] does, without the stat.
pub(super) fn open_file(root: BorrowedFd<'_>, rel: &str) -> io::Result<File> {
    let rel = if rel.is_empty() { "." } else { rel };
    let c_rel =
        std::ffi::CString::new(rel).map_err(|_| io::Error::from_raw_os_error(libc::ENOENT))?;
    open_resolve_beneath(root, &c_rel)
}

#[cfg(target_os = "linux")]
fn open_resolve_beneath(root: BorrowedFd<'_>, rel: &std::ffi::CStr) -> io::Result<File> {
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
fn open_resolve_beneath(root: BorrowedFd<'_>, rel: &std::ffi::CStr) -> io::Result<File> {
    open_checked(root, rel)
}

/// `openat2(root, rel, RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)`: the kernel refuses any
/// resolution that leaves `root` (EXDEV), including through symlinks and `..` in them.
#[cfg(target_os = "linux")]
fn openat2_beneath(root: BorrowedFd<'_>, rel: &std::ffi::CStr) -> io::Result<File> {
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
            openat2_beneath(fd.as_fd(), c".").is_ok()
        }
        Err(_) => false,
    })
}

/// Without `openat2`: opens with `openat` and then checks that the file actually opened
/// lies inside the root, comparing real paths (the opened descriptor's, so a symlink
/// swapped in between the check and the open cannot fool it).
fn open_checked(root: BorrowedFd<'_>, rel: &std::ffi::CStr) -> io::Result<File> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

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

        type Open = fn(BorrowedFd<'_>, &std::ffi::CStr) -> io::Result<File>;
        for open in [open_resolve_beneath as Open, open_checked as Open] {
            let ok = |rel: &str| {
                let c = std::ffi::CString::new(rel).unwrap();
                open(fd.as_fd(), &c).map(|f| {
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
}
