//! [`Switch`]: how the strict layer learns whether an Upgrade request switched protocols.
//!
//! Only the answer tells: an `Upgrade` header is a request, and the connection stays
//! HTTP/1 (and checked) unless a `101` goes out. Bytes after an Upgrade request are held
//! until then; this handle carries the answer from the request's handler to them.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;

const UNDECIDED: u8 = 0;
const DECLINED: u8 = 1;
const SWITCHED: u8 = 2;

/// Shared by a connection's `StrictIo` and the code that answers its requests.
#[derive(Clone, Default)]
pub struct Switch(Arc<Inner>);

#[derive(Default)]
struct Inner {
    decision: AtomicU8,
    waker: AtomicWaker,
}

impl Switch {
    /// Records the answer to the connection's Upgrade request: `switched` when it is a
    /// `101` (after which hyper hands the connection over or closes it).
    pub fn decide(&self, switched: bool) {
        let d = if switched { SWITCHED } else { DECLINED };
        self.0.decision.store(d, Ordering::Release);
        self.0.waker.wake();
    }

    /// The answer, taken (so the next Upgrade request waits for its own), or `Pending`
    /// until it comes.
    pub(super) fn poll_decision(&self, cx: &mut Context<'_>) -> Poll<bool> {
        self.0.waker.register(cx.waker());
        match self.0.decision.swap(UNDECIDED, Ordering::AcqRel) {
            UNDECIDED => Poll::Pending,
            d => Poll::Ready(d == SWITCHED),
        }
    }
}
