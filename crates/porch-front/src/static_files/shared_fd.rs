//! One descriptor per file for every download of it in progress. A streamed file used to
//! hold its own descriptor until the client took the last byte, so a few connections
//! with hundreds of stalled HTTP/2 streams of one file could use up the open-files limit
//! and stop every listener's `accept()`. Downloads read with `pread` at their own
//! offsets, so they can share one open file: the one opened first, while it is the same
//! file (device, inode, size and modification time all unchanged).

use std::collections::HashMap;
use std::fs::File;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use super::entry::Stat;

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Identity {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: i64,
    mtime_nsec: i64,
}

impl Identity {
    fn of(st: &Stat) -> Identity {
        Identity {
            dev: st.dev,
            ino: st.ino,
            size: st.size,
            mtime: st.mtime,
            mtime_nsec: st.mtime_nsec,
        }
    }
}

/// The open file to stream from: an already open one for the same file if a download of
/// it is in progress (`file` is then closed at once), else `file` itself.
pub(super) fn shared(file: File, meta: &Stat) -> Arc<File> {
    static OPEN: OnceLock<Mutex<HashMap<Identity, Weak<File>>>> = OnceLock::new();
    let id = Identity::of(meta);
    let mut open = OPEN
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(existing) = open.get(&id).and_then(Weak::upgrade) {
        return existing;
    }
    if open.len() >= 64 {
        open.retain(|_, w| w.strong_count() > 0);
    }
    let file = Arc::new(file);
    open.insert(id, Arc::downgrade(&file));
    file
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downloads_of_one_file_share_a_descriptor_until_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, "one").unwrap();
        let open = || {
            let f = File::open(&path).unwrap();
            let m = f.metadata().unwrap();
            shared(f, &Stat::from_metadata(&m))
        };
        let (a, b) = (open(), open());
        assert!(Arc::ptr_eq(&a, &b));
        std::fs::write(&path, "changed").unwrap();
        let c = open();
        assert!(!Arc::ptr_eq(&a, &c), "a changed file is opened anew");
        drop((a, b));
        let d = open();
        assert!(Arc::ptr_eq(&c, &d));
    }
}
