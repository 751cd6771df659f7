//! The file cache: per mount, the URL's file path → its prepared answer (validators,
//! header maps) and its bytes, so a request for a cached file costs one `fstatat` and
//! no open, read or close. nginx's `open_file_cache` keeps descriptors and metadata;
//! this keeps metadata and contents, and no descriptor at all.
//!
//! Validity: every request revalidates with one `fstatat` of the path below the mount's
//! root. The entry answers only if that stat names the same inode with the same size,
//! modification time and change time as when the bytes were read; anything else (the
//! file written in place, truncated, `touch`ed, `chmod`ed, replaced by a rename, deleted,
//! a directory on the way renamed or replaced by a symlink) changes one of them, and the
//! file is opened again with the usual `openat2(RESOLVE_BENEATH)` before anything is
//! sent. A deleted file is a 404 on the next request. So the cache never answers with
//! content the file no longer has — unlike nginx's `open_file_cache_valid` window,
//! which trusts an entry for 60 s by default. The stat follows symlinks without
//! `RESOLVE_BENEATH`; that is safe because its result is only compared with a file that
//! was itself opened beneath the root, and only the bytes read through that open are
//! ever sent. (If a cached file's directory is moved out of the root and a symlink to it
//! left in its place, the path keeps getting those same bytes until the file changes or
//! leaves the cache; never another file's.)
//!
//! The change time (`ctime`) is what makes a stat a proof: it moves on every write,
//! truncation, `chmod` and `utime`, and no user can set it. Timestamps are only as fine
//! as the kernel's clock tick, though, so a write in the same tick as an earlier one
//! may leave both times unchanged. Bytes are therefore kept only for a file whose
//! modification and change times are at least [`SETTLED`] old when the read ends: any
//! later write then gets a later time, and the next stat sees it. A file changed within
//! the last second is read afresh on every request until it settles.
//!
//! Precompressed siblings (`NAME.br`, `NAME.gz`) are cached with `NAME`, and checked
//! the same way (one more `fstatat` when one is sent). That a sibling is absent is
//! remembered for [`ABSENT_VALID`], so a file without siblings costs no probe per
//! request; a sibling added is used within that time, one deleted or changed is seen by
//! the next request.
//!
//! Bounds: at most `static_cache_entries` files and `static_cache_memory` bytes in all
//! mounts (the least recently used go first), and only files up to [`CACHED_FILE_MAX`].
//! Larger files, and requests the cache cannot answer (directories, index files,
//! unsettled files), take the uncached path; they share descriptors between downloads
//! in progress as before (`shared_fd`). Holding descriptors here would take them from
//! the limit that clients' connections need.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant, SystemTime};

use super::encoding::Encoding;
use super::entry::{FileEntry, Stat};
use super::file_body::read_at_most;
use super::open::open_file;
use porch_config::StaticMount;

/// Largest file whose bytes are kept. A 256 KiB response is written from the cached
/// buffer in a few `writev`s; past that, streaming from the page cache costs little
/// more per byte and keeps the memory for many more files.
pub const CACHED_FILE_MAX: u64 = 256 * 1024;
/// How old a file's modification and change times must be before its bytes are kept.
pub const SETTLED: Duration = Duration::from_secs(1);
/// How long a precompressed sibling found absent is not looked for again.
pub const ABSENT_VALID: Duration = Duration::from_secs(1);

/// Bounds on the cache, for all mounts together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheLimits {
    /// Files kept (0 turns the cache off).
    pub entries: usize,
    /// Bytes of file contents kept (0 turns the cache off).
    pub memory: usize,
}

impl Default for CacheLimits {
    fn default() -> Self {
        CacheLimits {
            entries: porch_config::DEFAULT_STATIC_CACHE_ENTRIES,
            memory: porch_config::DEFAULT_STATIC_CACHE_MEMORY,
        }
    }
}

static LIMITS: OnceLock<CacheLimits> = OnceLock::new();
/// A use counter, for least-recently-used eviction.
static TICK: AtomicU64 = AtomicU64::new(0);

/// Sets the bounds; the first call wins (the front calls it once at start).
pub fn configure(limits: CacheLimits) {
    let _ = LIMITS.set(limits);
}

/// For `/metrics`: files cached, bytes held, requests answered from the cache.
pub fn stats() -> (usize, usize, u64) {
    let b = Budget::global();
    (
        b.entries.load(Ordering::Relaxed),
        b.memory.load(Ordering::Relaxed),
        b.hits.load(Ordering::Relaxed),
    )
}

/// What all mounts' caches may hold, and what they hold now.
pub(super) struct Budget {
    limits: CacheLimits,
    /// Entries in the mounts' maps.
    entries: AtomicUsize,
    /// Bytes held by cached entries (released when the last request using one ends).
    memory: AtomicUsize,
    /// Requests answered from the cache.
    hits: AtomicU64,
}

impl Budget {
    pub fn new(limits: CacheLimits) -> Arc<Budget> {
        Arc::new(Budget {
            limits,
            entries: AtomicUsize::new(0),
            memory: AtomicUsize::new(0),
            hits: AtomicU64::new(0),
        })
    }

    /// The process's budget, from [`configure`].
    pub fn global() -> Arc<Budget> {
        static GLOBAL: OnceLock<Arc<Budget>> = OnceLock::new();
        GLOBAL
            .get_or_init(|| Budget::new(*LIMITS.get_or_init(CacheLimits::default)))
            .clone()
    }

    fn enabled(&self) -> bool {
        self.limits.entries > 0 && self.limits.memory > 0
    }

    /// Charges `n` bytes if they fit.
    fn charge(&self, n: usize) -> bool {
        let max = self.limits.memory;
        self.memory
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| {
                (held + n <= max).then_some(held + n)
            })
            .is_ok()
    }

    /// Whether a file of this size and age may have its bytes kept (checked again,
    /// with the time after the read, before they are).
    fn cacheable(&self, st: &Stat, now: SystemTime) -> bool {
        st.is_file()
            && st.size <= CACHED_FILE_MAX
            && st.size as usize <= self.limits.memory
            && settled(st, now)
    }
}

/// What the cache says about a path.
pub(super) enum Lookup {
    /// Nothing there (`ENOENT`, `ENOTDIR`): 404.
    Missing,
    /// The file, current.
    Hit(Arc<Cached>),
    /// Not for the cache (a directory, a large or just-changed file, an error): the
    /// uncached path decides.
    Uncached,
}

/// Which file answers a request for a cached file.
pub(super) enum Choice {
    Main,
    Sibling(Arc<FileEntry>),
    Uncached,
}

/// One mount's cached files.
pub(super) struct MountCache {
    files: RwLock<HashMap<Box<str>, Arc<Cached>>>,
    budget: Arc<Budget>,
}

/// A cached file and what is known of its precompressed siblings.
pub(super) struct Cached {
    pub main: FileEntry,
    compressible: bool,
    /// Indexed by [`slot`]: `br`, `gzip`.
    siblings: [RwLock<Sibling>; 2],
    last_used: AtomicU64,
    /// Bytes charged to the budget for this entry and its siblings.
    charged: AtomicUsize,
    budget: Arc<Budget>,
}

enum Sibling {
    Unknown,
    Absent(Instant),
    Present(Arc<FileEntry>),
}

fn slot(enc: Encoding) -> usize {
    match enc {
        Encoding::Br => 0,
        Encoding::Gzip => 1,
    }
}

impl Drop for Cached {
    fn drop(&mut self) {
        let charged = *self.charged.get_mut();
        self.budget.memory.fetch_sub(charged, Ordering::Relaxed);
    }
}

fn settled(st: &Stat, now: SystemTime) -> bool {
    st.changed().is_some_and(|t| t + SETTLED <= now)
}

fn gone(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR))
}

/// Opens `rel` (plus `suffix`) beneath the root and reads it whole, if it is a regular
/// file that may be cached. `Err` only when nothing is there.
fn load(
    budget: &Budget,
    root: BorrowedFd<'_>,
    rel: &str,
    suffix: &str,
    mount: &StaticMount,
    name: &str,
    encoding: Option<Encoding>,
) -> io::Result<Option<FileEntry>> {
    let path;
    let path = if suffix.is_empty() {
        rel
    } else {
        path = format!("{rel}.{suffix}");
        &path
    };
    let file = open_file(root, path)?;
    let st = Stat::of(file.as_fd())?;
    if !budget.cacheable(&st, SystemTime::now()) {
        return Ok(None);
    }
    let Ok(data) = read_at_most(&file, 0, st.size as usize) else {
        return Ok(None);
    };
    if data.len() as u64 != st.size || !settled(&st, SystemTime::now()) {
        return Ok(None);
    }
    Ok(Some(FileEntry::new(st, mount, name, encoding, Some(data))))
}

impl MountCache {
    pub fn new(budget: Arc<Budget>) -> MountCache {
        MountCache {
            files: RwLock::default(),
            budget,
        }
    }

    /// The cached answer for `rel` (from `relative_path`, a file, not a directory URL),
    /// after checking it is current; `name` is its last segment.
    pub fn lookup(
        &self,
        root: BorrowedFd<'_>,
        mount: &StaticMount,
        rel: &str,
        name: &str,
    ) -> Lookup {
        if !self.budget.enabled() || rel.is_empty() {
            return Lookup::Uncached;
        }
        let st = match Stat::at(root, rel, "") {
            Ok(st) => st,
            Err(e) if gone(&e) => {
                self.forget(rel);
                return Lookup::Missing;
            }
            Err(_) => return Lookup::Uncached,
        };
        let cached = self
            .files
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(rel)
            .cloned();
        if let Some(c) = cached {
            if c.main.stat.same_file(&st) {
                c.last_used
                    .store(TICK.fetch_add(1, Ordering::Relaxed), Ordering::Relaxed);
                self.budget.hits.fetch_add(1, Ordering::Relaxed);
                return Lookup::Hit(c);
            }
        }
        if !self.budget.cacheable(&st, SystemTime::now()) {
            self.forget(rel);
            return Lookup::Uncached;
        }
        match load(&self.budget, root, rel, "", mount, name, None) {
            Ok(Some(main)) => {
                let (_, compressible) = super::types::content_type(name);
                let c = Arc::new(Cached {
                    main,
                    compressible,
                    siblings: [RwLock::new(Sibling::Unknown), RwLock::new(Sibling::Unknown)],
                    last_used: AtomicU64::new(TICK.fetch_add(1, Ordering::Relaxed)),
                    charged: AtomicUsize::new(0),
                    budget: self.budget.clone(),
                });
                self.insert(rel, &c);
                Lookup::Hit(c)
            }
            Ok(None) | Err(_) => {
                self.forget(rel);
                Lookup::Uncached
            }
        }
    }

    fn forget(&self, rel: &str) {
        if !self
            .files
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(rel)
        {
            return;
        }
        let mut files = self.files.write().unwrap_or_else(|e| e.into_inner());
        if files.remove(rel).is_some() {
            self.budget.entries.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Keeps `c` if it fits, evicting this mount's least recently used entries for room.
    fn insert(&self, rel: &str, c: &Arc<Cached>) {
        let held = c.main.held();
        let b = &*self.budget;
        let mut files = self.files.write().unwrap_or_else(|e| e.into_inner());
        if files.remove(rel).is_some() {
            b.entries.fetch_sub(1, Ordering::Relaxed);
        }
        let full = |extra: usize| {
            b.entries.load(Ordering::Relaxed) >= b.limits.entries
                || b.memory.load(Ordering::Relaxed) + extra > b.limits.memory
        };
        if full(held) && !files.is_empty() {
            // Evict the oldest eighth (at least what makes room), so eviction's sort is
            // paid once per many inserts.
            let mut by_age: Vec<(u64, Box<str>)> = files
                .iter()
                .map(|(k, v)| (v.last_used.load(Ordering::Relaxed), k.clone()))
                .collect();
            by_age.sort_unstable_by_key(|(t, _)| *t);
            let batch = (files.len() / 8).max(1);
            for (i, (_, key)) in by_age.into_iter().enumerate() {
                if i >= batch && !full(held) {
                    break;
                }
                files.remove(&key);
                b.entries.fetch_sub(1, Ordering::Relaxed);
            }
            // Entries still in use elsewhere release their bytes when that use ends.
        }
        if b.entries.load(Ordering::Relaxed) >= b.limits.entries || !b.charge(held) {
            return;
        }
        c.charged.fetch_add(held, Ordering::Relaxed);
        b.entries.fetch_add(1, Ordering::Relaxed);
        files.insert(rel.into(), c.clone());
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.files.read().unwrap().len()
    }
}

impl Cached {
    /// Whether the file's type gets precompressed siblings.
    pub fn compressible(&self) -> bool {
        self.compressible
    }

    /// Replaces what is known of a sibling, releasing the bytes charged for the old one.
    fn set_sibling(&self, slot: &RwLock<Sibling>, new: Sibling) {
        let old = std::mem::replace(&mut *slot.write().unwrap_or_else(|e| e.into_inner()), new);
        if let Sibling::Present(old) = old {
            let held = old.held();
            self.charged.fetch_sub(held, Ordering::Relaxed);
            self.budget.memory.fetch_sub(held, Ordering::Relaxed);
        }
    }

    /// The file to answer with, given the codings the client accepts (best first): a
    /// current precompressed sibling, or the file itself.
    pub fn choose(
        &self,
        root: BorrowedFd<'_>,
        mount: &StaticMount,
        rel: &str,
        name: &str,
        accepted: [Option<Encoding>; 2],
    ) -> Choice {
        for enc in accepted.into_iter().flatten() {
            let slot = &self.siblings[slot(enc)];
            let known = match &*slot.read().unwrap_or_else(|e| e.into_inner()) {
                Sibling::Absent(at) if at.elapsed() < ABSENT_VALID => continue,
                Sibling::Present(entry) => Some(entry.clone()),
                _ => None,
            };
            if let Some(entry) = known {
                match Stat::at(root, rel, enc.suffix()) {
                    Ok(st) if st.same_file(&entry.stat) => return Choice::Sibling(entry),
                    Err(e) if gone(&e) => {
                        self.set_sibling(slot, Sibling::Absent(Instant::now()));
                        continue;
                    }
                    _ => {}
                }
            }
            // Unknown, changed, or absent long enough to look again.
            match load(
                &self.budget,
                root,
                rel,
                enc.suffix(),
                mount,
                name,
                Some(enc),
            ) {
                Err(_) => self.set_sibling(slot, Sibling::Absent(Instant::now())),
                // Older than the file itself: not a sibling.
                Ok(Some(entry)) if entry.stat.mtime < self.main.stat.mtime => {
                    self.set_sibling(slot, Sibling::Absent(Instant::now()))
                }
                Ok(Some(entry)) => {
                    let entry = Arc::new(entry);
                    let held = entry.held();
                    if self.budget.charge(held) {
                        self.charged.fetch_add(held, Ordering::Relaxed);
                        self.set_sibling(slot, Sibling::Present(entry.clone()));
                    } else {
                        self.set_sibling(slot, Sibling::Unknown);
                    }
                    return Choice::Sibling(entry);
                }
                // There, but not for the cache (large, just changed, or not a file):
                // the uncached path looks at it.
                Ok(None) => {
                    self.set_sibling(slot, Sibling::Unknown);
                    return Choice::Uncached;
                }
            }
        }
        Choice::Main
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::os::fd::OwnedFd;
    use std::time::UNIX_EPOCH;

    fn age(path: &std::path::Path) {
        // Old enough to be settled: an hour ago.
        let t = SystemTime::now() - Duration::from_secs(3600);
        File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(t)
            .unwrap();
    }

    fn hit(l: Lookup) -> Arc<Cached> {
        match l {
            Lookup::Hit(c) => c,
            Lookup::Missing => panic!("missing"),
            Lookup::Uncached => panic!("uncached"),
        }
    }

    /// ctime cannot be set back, so "settled" is tested with the check itself, and the
    /// cache with files whose ctime is in the past by waiting out [`SETTLED`] once.
    #[test]
    fn revalidation_sees_every_change() {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n);
        std::fs::write(p("a.txt"), "one").unwrap();
        std::fs::write(p("b.txt"), "bee").unwrap();
        std::fs::write(p("big.bin"), vec![0u8; CACHED_FILE_MAX as usize + 1]).unwrap();
        age(&p("a.txt"));
        age(&p("b.txt"));
        let root: OwnedFd = File::open(dir.path()).unwrap().into();
        let root = root.as_fd();
        let mount = StaticMount::new("static", "/s/", dir.path().to_str().unwrap()).unwrap();
        let cache = MountCache::new(Budget::new(CacheLimits::default()));

        // Just written: ctime is now, so not cached yet.
        assert!(matches!(
            cache.lookup(root, &mount, "a.txt", "a.txt"),
            Lookup::Uncached
        ));
        std::thread::sleep(SETTLED + Duration::from_millis(50));
        let a = hit(cache.lookup(root, &mount, "a.txt", "a.txt"));
        assert_eq!(a.main.bytes.as_deref(), Some(&b"one"[..]));
        let again = hit(cache.lookup(root, &mount, "a.txt", "a.txt"));
        assert!(Arc::ptr_eq(&a, &again), "a current entry is reused");
        assert_eq!(cache.len(), 1);

        // Large files are not cached; missing ones are 404 and dropped.
        assert!(matches!(
            cache.lookup(root, &mount, "big.bin", "big.bin"),
            Lookup::Uncached
        ));
        assert!(matches!(
            cache.lookup(root, &mount, "nope", "nope"),
            Lookup::Missing
        ));
        assert!(matches!(
            cache.lookup(root, &mount, "a.txt/x", "x"),
            Lookup::Missing
        ));

        // Modified in place, same size, mtime put back: ctime still moves.
        let mtime = std::fs::metadata(p("a.txt")).unwrap().modified().unwrap();
        std::fs::write(p("a.txt"), "two").unwrap();
        File::options()
            .write(true)
            .open(p("a.txt"))
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        assert!(matches!(
            cache.lookup(root, &mount, "a.txt", "a.txt"),
            Lookup::Uncached
        ));
        assert_eq!(cache.len(), 0, "a changed file leaves the cache");

        // Replaced by a rename: another inode.
        std::fs::rename(p("b.txt"), p("a.txt")).unwrap();
        assert!(matches!(
            cache.lookup(root, &mount, "a.txt", "a.txt"),
            Lookup::Uncached
        ));
        std::thread::sleep(SETTLED + Duration::from_millis(50));
        let b = hit(cache.lookup(root, &mount, "a.txt", "a.txt"));
        assert_eq!(b.main.bytes.as_deref(), Some(&b"bee"[..]));

        // Deleted: 404 at once.
        std::fs::remove_file(p("a.txt")).unwrap();
        assert!(matches!(
            cache.lookup(root, &mount, "a.txt", "a.txt"),
            Lookup::Missing
        ));
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn settled_means_both_times_a_second_old() {
        let st = |m: i64, c: i64| Stat {
            dev: 1,
            ino: 1,
            size: 1,
            mode: libc::S_IFREG | 0o644,
            mtime: m,
            mtime_nsec: 0,
            ctime: c,
            ctime_nsec: 0,
        };
        let now = UNIX_EPOCH + Duration::from_secs(1000);
        assert!(settled(&st(990, 999), now));
        assert!(!settled(&st(990, 999).clone_with_ctime_nsec(1), now));
        assert!(!settled(&st(999, 990).clone_with_mtime_nsec(1), now));
        assert!(!settled(&st(1000, 990), now));
        assert!(!settled(&st(990, 2000), now), "a change time in the future");
    }

    impl Stat {
        fn clone_with_ctime_nsec(mut self, n: i64) -> Stat {
            self.ctime_nsec = n;
            self
        }
        fn clone_with_mtime_nsec(mut self, n: i64) -> Stat {
            self.mtime_nsec = n;
            self
        }
    }

    #[test]
    fn siblings_appear_and_disappear() {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n);
        std::fs::write(p("app.css"), "body{}").unwrap();
        std::fs::write(p("app.css.gz"), "gz").unwrap();
        age(&p("app.css"));
        std::thread::sleep(SETTLED + Duration::from_millis(50));
        let root: OwnedFd = File::open(dir.path()).unwrap().into();
        let root = root.as_fd();
        let mount = StaticMount::new("static", "/s/", dir.path().to_str().unwrap()).unwrap();
        let budget = Budget::new(CacheLimits::default());
        let cache = MountCache::new(budget.clone());
        let both = [Some(Encoding::Br), Some(Encoding::Gzip)];
        let c = hit(cache.lookup(root, &mount, "app.css", "app.css"));
        assert!(c.compressible());
        let chosen = |c: &Cached| match c.choose(root, &mount, "app.css", "app.css", both) {
            Choice::Main => "main".to_string(),
            Choice::Sibling(e) => String::from_utf8(e.bytes.as_deref().unwrap().to_vec()).unwrap(),
            Choice::Uncached => "uncached".to_string(),
        };
        assert_eq!(chosen(&c), "gz");
        assert_eq!(chosen(&c), "gz");
        let held = || budget.memory.load(Ordering::Relaxed);
        assert_eq!(held(), "body{}".len() + "gz".len());
        // A new br sibling is found once the absence has expired.
        std::fs::write(p("app.css.br"), "br").unwrap();
        assert_eq!(chosen(&c), "gz", "absence remembered");
        std::thread::sleep(ABSENT_VALID.max(SETTLED) + Duration::from_millis(50));
        assert_eq!(chosen(&c), "br");
        // Removed: the next request falls back at once.
        std::fs::remove_file(p("app.css.br")).unwrap();
        assert_eq!(chosen(&c), "gz");
        std::fs::remove_file(p("app.css.gz")).unwrap();
        assert_eq!(chosen(&c), "main");
        assert_eq!(
            held(),
            "body{}".len(),
            "a sibling gone is no longer counted"
        );
        // Changed in place: read again (uncached while it settles).
        std::fs::write(p("app.css.gz"), "new").unwrap();
        std::thread::sleep(ABSENT_VALID + Duration::from_millis(50));
        assert_eq!(chosen(&c), "new");
    }

    #[test]
    fn bounded_by_entries_and_memory() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..20 {
            std::fs::write(dir.path().join(format!("f{i}")), "0123456789").unwrap();
        }
        std::thread::sleep(SETTLED + Duration::from_millis(50));
        let root: OwnedFd = File::open(dir.path()).unwrap().into();
        let mount = StaticMount::new("static", "/s/", dir.path().to_str().unwrap()).unwrap();
        let lookup_all = |cache: &MountCache| {
            for i in 0..20 {
                let n = format!("f{i}");
                hit(cache.lookup(root.as_fd(), &mount, &n, &n));
            }
        };

        let budget = Budget::new(CacheLimits {
            entries: 8,
            memory: 1 << 20,
        });
        let cache = MountCache::new(budget.clone());
        lookup_all(&cache);
        assert!(cache.len() <= 8);
        assert_eq!(budget.entries.load(Ordering::Relaxed), cache.len());
        // The most recently used stay.
        assert!(cache.files.read().unwrap().contains_key("f19"));
        assert!(!cache.files.read().unwrap().contains_key("f0"));

        let budget = Budget::new(CacheLimits {
            entries: 100,
            memory: 55,
        });
        let cache = MountCache::new(budget.clone());
        lookup_all(&cache);
        assert!(cache.len() <= 5);
        assert!(budget.memory.load(Ordering::Relaxed) <= 55);
        drop(cache);
        assert_eq!(
            budget.memory.load(Ordering::Relaxed),
            0,
            "freed with the entries"
        );

        let off = MountCache::new(Budget::new(CacheLimits {
            entries: 0,
            memory: 1 << 20,
        }));
        assert!(matches!(
            off.lookup(root.as_fd(), &mount, "f1", "f1"),
            Lookup::Uncached
        ));
    }
}
