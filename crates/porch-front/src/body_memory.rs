//! The front-wide budget of request-body bytes held in memory. A body is read whole
//! before it is queued; past `body_memory` for one body, or past `body_memory_total`
//! across all of them, it goes to a temporary file instead. So 64 uploads in flight
//! cost the front what the setting allows, not the sum of their sizes (nginx bounds
//! each body with `client_body_buffer_size`, and nothing bounds their sum).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::memory_budget::MemoryBudget;

#[derive(Debug)]
pub struct BodyMemory {
    per_body: usize,
    budget: MemoryBudget,
    spilled: AtomicU64,
}

impl BodyMemory {
    pub fn new(per_body: usize, total: usize) -> Arc<BodyMemory> {
        Arc::new(BodyMemory {
            per_body,
            budget: MemoryBudget::new(total),
            spilled: AtomicU64::new(0),
        })
    }

    /// Request-body bytes held in memory across the front.
    pub fn in_memory(&self) -> usize {
        self.budget.used()
    }

    /// Request-body bytes ever written to temporary files (a counter).
    pub fn spilled(&self) -> u64 {
        self.spilled.load(Ordering::Relaxed)
    }

    pub(crate) fn count_spilled(&self, len: usize) {
        self.spilled.fetch_add(len as u64, Ordering::Relaxed);
    }

    /// An empty hold on this budget, for one body.
    pub fn hold(self: &Arc<Self>) -> MemoryHold {
        MemoryHold {
            memory: self.clone(),
            len: 0,
        }
    }
}

/// The bytes one body holds in memory; given back when it is dropped (its job done).
#[derive(Debug)]
pub struct MemoryHold {
    memory: Arc<BodyMemory>,
    len: usize,
}

impl MemoryHold {
    /// Takes `more` bytes if both bounds allow it; `false` means the body must spill.
    pub fn grow(&mut self, more: usize) -> bool {
        if self.len + more > self.memory.per_body || !self.memory.budget.take(more) {
            return false;
        }
        self.len += more;
        true
    }

    /// Gives back all the bytes held (the body moved to a file).
    pub fn release(&mut self) {
        self.memory.budget.give_back(std::mem::take(&mut self.len));
    }
}

impl Drop for MemoryHold {
    fn drop(&mut self) {
        self.release();
    }
}

/// What keeps a read body accounted for until its job is done: its place in the memory
/// budget, or its temporary file (removed on drop).
#[derive(Debug)]
pub enum BodyHold {
    Memory(MemoryHold),
    File(tempfile::TempPath),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_share_the_total_and_give_it_back() {
        let memory = BodyMemory::new(100, 150);
        let mut a = memory.hold();
        let mut b = memory.hold();
        assert!(a.grow(60));
        assert!(a.grow(40));
        assert!(!a.grow(1), "past the per-body bound");
        assert!(b.grow(50));
        assert!(!b.grow(1), "past the total");
        assert_eq!(memory.in_memory(), 150);
        drop(a);
        assert_eq!(memory.in_memory(), 50);
        assert!(b.grow(50));
        b.release();
        assert_eq!(memory.in_memory(), 0);
        drop(b);
        assert_eq!(memory.in_memory(), 0);
    }
}
