//! A front-wide count of bytes held in memory against a bound, shared by the request
//! bodies waiting for workers and the responses waiting for slow clients: past the
//! bound, both go to temporary files.

use std::sync::atomic::{AtomicUsize, Ordering};

#[derive(Debug)]
pub struct MemoryBudget {
    total: usize,
    used: AtomicUsize,
}

impl MemoryBudget {
    pub fn new(total: usize) -> MemoryBudget {
        MemoryBudget {
            total,
            used: AtomicUsize::new(0),
        }
    }

    /// Bytes held now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Takes `len` bytes if the total allows it.
    pub fn take(&self, len: usize) -> bool {
        self.used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |now| {
                (now + len <= self.total).then_some(now + len)
            })
            .is_ok()
    }

    /// Takes `len` bytes whatever the total (when there is nowhere else to put them).
    pub fn take_over_bound(&self, len: usize) {
        self.used.fetch_add(len, Ordering::Relaxed);
    }

    pub fn give_back(&self, len: usize) {
        self.used.fetch_sub(len, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_up_to_the_total() {
        let b = MemoryBudget::new(10);
        assert!(b.take(6));
        assert!(!b.take(5));
        assert!(b.take(4));
        b.give_back(6);
        assert_eq!(b.used(), 4);
        b.take_over_bound(20);
        assert_eq!(b.used(), 24);
    }
}
