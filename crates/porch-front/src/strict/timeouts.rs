//! The clocks the strict layer runs for HTTP/1 connections, and what they need to know:
//! whether the connection is idle between requests.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Which read clock runs: between requests (`keep_alive`) or while a head arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ReadTimer {
    Idle,
    Head,
}

/// The connection timeouts this layer enforces for HTTP/1.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Idle time between requests before porch closes the connection.
    pub keep_alive: std::time::Duration,
    /// Time from a head's first byte to its end; past it the client gets 408.
    pub header: std::time::Duration,
    /// Time a client may leave porch's writes unread before the connection is dropped.
    pub send: std::time::Duration,
}

/// How many requests of a connection are being answered. Zero means the connection is
/// idle, which is when the keep-alive timeout runs.
#[derive(Clone, Default)]
pub struct Activity(Arc<AtomicUsize>);

impl Activity {
    /// Counts a request until the returned guard (kept with its response body) is dropped.
    pub fn start(&self) -> ActivityGuard {
        self.0.fetch_add(1, Ordering::Relaxed);
        ActivityGuard(self.clone())
    }
    pub(super) fn is_idle(&self) -> bool {
        self.0.load(Ordering::Relaxed) == 0
    }
}

pub struct ActivityGuard(Activity);

impl Drop for ActivityGuard {
    fn drop(&mut self) {
        self.0 .0.fetch_sub(1, Ordering::Relaxed);
    }
}
