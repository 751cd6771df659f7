//! The send clock for responses whose client stopped taking data although its socket is
//! fine: an HTTP/2 stream the peer grants no flow-control credit. hyper then stops
//! polling the body and no write ever blocks, so the socket-level send clock of the
//! strict layer (HTTP/1) cannot see it. Each response body notes when it handed out a
//! piece and whether hyper came back for the next one; a piece not taken within
//! `send_timeout` is a stall, and the listener closes the connection, as it drops an
//! HTTP/1 client that leaves its writes unread (nginx's `send_timeout` for both).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// One per connection: the clocks of its response bodies.
#[derive(Clone)]
pub struct StallWatch(Arc<Inner>);

struct Inner {
    epoch: Instant,
    /// One per response body that has handed out a piece; dead entries are pruned.
    clocks: Mutex<Vec<Weak<AtomicU64>>>,
}

impl Default for StallWatch {
    fn default() -> Self {
        StallWatch(Arc::new(Inner {
            epoch: Instant::now(),
            clocks: Mutex::new(Vec::new()),
        }))
    }
}

impl StallWatch {
    /// The clock for one response body.
    pub fn clock(&self) -> SendClock {
        SendClock {
            watch: self.clone(),
            handed: None,
        }
    }

    /// How long the oldest piece still not taken has waited (zero if none waits).
    pub fn stalled_for(&self) -> Duration {
        let now = self.now_ms();
        let mut clocks = self.0.clocks.lock().unwrap_or_else(|e| e.into_inner());
        let mut longest = 0;
        clocks.retain(|c| match c.upgrade() {
            Some(c) => {
                let since = c.load(Ordering::Relaxed);
                if since != 0 {
                    longest = longest.max(now.saturating_sub(since));
                }
                true
            }
            None => false,
        });
        Duration::from_millis(longest)
    }

    /// Milliseconds since the connection began, never 0 (0 means "nothing waits").
    fn now_ms(&self) -> u64 {
        self.0.epoch.elapsed().as_millis() as u64 + 1
    }
}

/// One response body's clock.
pub struct SendClock {
    watch: StallWatch,
    handed: Option<Arc<AtomicU64>>,
}

impl SendClock {
    /// The body gave hyper a piece to send: the clock runs until hyper asks for more.
    pub fn handed(&mut self) {
        let now = self.watch.now_ms();
        match &self.handed {
            Some(h) => h.store(now, Ordering::Relaxed),
            None => {
                let h = Arc::new(AtomicU64::new(now));
                let mut clocks = self
                    .watch
                    .0
                    .clocks
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                clocks.push(Arc::downgrade(&h));
                self.handed = Some(h);
            }
        }
    }

    /// hyper came back for the next piece: the last one went out (or into the socket).
    pub fn taken(&mut self) {
        if let Some(h) = &self.handed {
            h.store(0, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_piece_not_taken_is_a_stall_until_taken_or_dropped() {
        let watch = StallWatch::default();
        let mut clock = watch.clock();
        assert_eq!(watch.stalled_for(), Duration::ZERO);
        clock.handed();
        std::thread::sleep(Duration::from_millis(30));
        assert!(watch.stalled_for() >= Duration::from_millis(25));
        clock.taken();
        assert_eq!(watch.stalled_for(), Duration::ZERO);
        clock.handed();
        std::thread::sleep(Duration::from_millis(10));
        drop(clock);
        assert_eq!(watch.stalled_for(), Duration::ZERO);
    }
}
