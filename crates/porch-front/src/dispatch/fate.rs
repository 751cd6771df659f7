//! Who decides what happens to a request: exactly one of the connection waiting for it
//! and the link that took it, so a request answered with an error never runs afterwards.

use std::sync::atomic::{AtomicU8, Ordering};

const WAITING: u8 = 0;
const TAKEN: u8 = 1;
const CANCELLED: u8 = 2;

/// A request's fate while it waits for a worker. While `WAITING` (in a queue), the
/// connection may cancel it (queue deadline, client gone) and answer at once; once a link
/// has `TAKEN` it, only the link answers it: it runs it, or gives it back to the queue,
/// or fails it, and the connection waits for that word.
#[derive(Debug, Default)]
pub struct Fate(AtomicU8);

impl Fate {
    /// A link takes the request; `false` if the connection cancelled it first.
    pub fn take(&self) -> bool {
        self.swap(WAITING, TAKEN)
    }

    /// The connection gives up on the request; `false` if a link holds it (then the link
    /// will answer).
    pub fn cancel(&self) -> bool {
        self.swap(WAITING, CANCELLED)
    }

    /// A link puts the request back in a queue, not started.
    pub fn release(&self) {
        let _ = self.swap(TAKEN, WAITING);
    }

    fn swap(&self, from: u8, to: u8) -> bool {
        self.0
            .compare_exchange(from, to, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_side_decides() {
        let f = Fate::default();
        assert!(f.take());
        assert!(!f.cancel(), "a taken request is the link's to answer");
        f.release();
        assert!(
            f.cancel(),
            "back in the queue, the connection may give up again"
        );
        assert!(!f.take(), "a cancelled request is never taken");
        f.release();
        assert!(!f.take(), "release does not revive a cancelled request");
    }
}
