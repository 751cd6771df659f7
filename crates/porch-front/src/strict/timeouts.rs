//! The clocks the strict layer runs for HTTP/1 connections, and what they need to know:
//! whether the connection is idle between requests.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

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

/// How many requests of a connection are being answered, and since when none is. Zero
/// means the connection is idle, which is when the keep-alive timeout runs (HTTP/1 in the
/// strict layer, HTTP/2 in the listener).
#[derive(Clone)]
pub struct Activity(Arc<Inner>);

struct Inner {
    busy: AtomicUsize,
    /// The last time a request started or ended, on [`Activity`]'s own clock.
    last_change_ms: AtomicU64,
    epoch: Instant,
}

impl Default for Activity {
    fn default() -> Self {
        Activity(Arc::new(Inner {
            busy: AtomicUsize::new(0),
            last_change_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        }))
    }
}

impl Activity {
    /// Counts a request until the returned guard (kept with its response body) is dropped.
    pub fn start(&self) -> ActivityGuard {
        self.0.busy.fetch_add(1, Ordering::Relaxed);
        self.touch();
        ActivityGuard(self.clone())
    }

    pub(crate) fn is_idle(&self) -> bool {
        self.0.busy.load(Ordering::Relaxed) == 0
    }

    /// How long the connection has had no request in progress (zero while one is).
    pub(crate) fn idle_for(&self) -> Duration {
        if !self.is_idle() {
            return Duration::ZERO;
        }
        let last = Duration::from_millis(self.0.last_change_ms.load(Ordering::Relaxed));
        self.0.epoch.elapsed().saturating_sub(last)
    }

    fn touch(&self) {
        let now = self.0.epoch.elapsed().as_millis() as u64;
        self.0.last_change_ms.store(now, Ordering::Relaxed);
    }
}

pub struct ActivityGuard(Activity);

impl Drop for ActivityGuard {
    fn drop(&mut self) {
        self.0.touch();
        self.0 .0.busy.fetch_sub(1, Ordering::Relaxed);
    }
}
