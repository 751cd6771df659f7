//! `--reload`: the workers are replaced (successor first, as on SIGHUP) when a Python
//! source file of the app changes. porch checks file times once a second over the app's
//! directory (`--chdir` or the current one) and `--pythonpath`, plus
//! `--reload-extra-file`s; virtualenvs, `.git` and `__pycache__` are skipped.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Directories never searched: installed packages and tool state, not the app's code.
const SKIP: &[&str] = &[
    ".git",
    "__pycache__",
    "node_modules",
    "site-packages",
    ".venv",
    "venv",
    ".tox",
    ".mypy_cache",
    ".pytest_cache",
];

/// Deepest directory level searched, so a root of `/` cannot make one pass take minutes.
const MAX_DEPTH: usize = 8;

/// What the watched files look like: how many, and the newest change.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
struct Snapshot {
    files: usize,
    newest: Option<SystemTime>,
}

/// Watches until porch stops; each change calls `reload` (a reload of every worker).
pub async fn watch(roots: Vec<PathBuf>, extra: Vec<PathBuf>, reload: impl Fn()) {
    let scan = move || snapshot(&roots, &extra);
    let mut last = match tokio::task::spawn_blocking(scan.clone()).await {
        Ok(s) => s,
        Err(_) => return,
    };
    tracing::info!("--reload: watching {} file(s)", last.files);
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let Ok(now) = tokio::task::spawn_blocking(scan.clone()).await else {
            return;
        };
        if now != last {
            tracing::info!("--reload: source files changed; starting fresh workers");
            reload();
            last = now;
        }
    }
}

fn snapshot(roots: &[PathBuf], extra: &[PathBuf]) -> Snapshot {
    let mut s = Snapshot {
        files: 0,
        newest: None,
    };
    for root in roots {
        walk(root, 0, &mut s);
    }
    for f in extra {
        see(f, &mut s);
    }
    s
}

fn walk(dir: &Path, depth: usize, s: &mut Snapshot) {
    if depth > MAX_DEPTH || dir.join("pyvenv.cfg").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        let Ok(kind) = e.file_type() else { continue };
        if kind.is_dir() {
            let name = e.file_name();
            if !SKIP.iter().any(|n| name == *n) {
                walk(&path, depth + 1, s);
            }
        } else if path.extension().is_some_and(|x| x == "py") {
            see(&path, s);
        }
    }
}

fn see(path: &Path, s: &mut Snapshot) {
    if let Ok(m) = std::fs::metadata(path).and_then(|m| m.modified()) {
        s.files += 1;
        s.newest = s.newest.max(Some(m));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_or_new_source_file_changes_the_snapshot() {
        let dir = std::env::temp_dir().join(format!("porch-reload-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("pkg/__pycache__")).unwrap();
        std::fs::write(dir.join("pkg/app.py"), "x = 1\n").unwrap();
        std::fs::write(dir.join("pkg/__pycache__/app.py"), "").unwrap();
        std::fs::write(dir.join("notes.txt"), "").unwrap();
        let roots = [dir.clone()];
        let before = snapshot(&roots, &[]);
        assert_eq!(before.files, 1);
        std::fs::write(dir.join("pkg/views.py"), "y = 2\n").unwrap();
        assert_ne!(snapshot(&roots, &[]), before);
        let extra = [dir.join("notes.txt")];
        assert_eq!(snapshot(&roots, &extra).files, 3);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
