//! How many worker threads of the whole pool are idle right now.
//!
//! Links send requests ahead to a busy worker only while no thread anywhere is idle, and
//! take back the ones not started as soon as one is: a request never waits behind a long
//! one while a worker idles.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use tokio::sync::watch;

pub struct Capacity {
    idle: AtomicUsize,
    /// Changes only when `idle` crosses zero, so links are woken on what they act on,
    /// not on every request's end.
    any_idle: watch::Sender<bool>,
    crossing: Mutex<()>,
}

impl Default for Capacity {
    fn default() -> Capacity {
        Capacity {
            idle: AtomicUsize::new(0),
            any_idle: watch::channel(false).0,
            crossing: Mutex::new(()),
        }
    }
}

impl Capacity {
    pub fn idle(&self) -> usize {
        self.idle.load(Ordering::Acquire)
    }

    pub fn watch(&self) -> watch::Receiver<bool> {
        self.any_idle.subscribe()
    }

    /// Moves one link's count of idle threads from `from` to `to`.
    pub fn adjust(&self, from: usize, to: usize) {
        if from == to {
            return;
        }
        // Serialised so the zero-crossings are published in the order they happen.
        let _order = self.crossing.lock().unwrap_or_else(|e| e.into_inner());
        let now = if to > from {
            self.idle.fetch_add(to - from, Ordering::AcqRel) + (to - from)
        } else {
            self.idle.fetch_sub(from - to, Ordering::AcqRel) - (from - to)
        };
        self.any_idle.send_if_modified(|any| {
            let changed = *any != (now > 0);
            *any = now > 0;
            changed
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchers_see_only_zero_crossings() {
        let c = Capacity::default();
        let mut rx = c.watch();
        c.adjust(0, 2);
        assert!(rx.has_changed().unwrap() && *rx.borrow_and_update());
        c.adjust(2, 1);
        assert!(
            !rx.has_changed().unwrap(),
            "still idle threads: nothing to act on"
        );
        c.adjust(1, 0);
        assert!(rx.has_changed().unwrap() && !*rx.borrow_and_update());
        assert_eq!(c.idle(), 0);
    }
}
