//! Running out of descriptors without going deaf. When `accept()` fails with EMFILE the
//! pending client would wait in the kernel's queue, and every listener would spin on the
//! same error, for as long as other clients hold their connections open. Instead porch
//! closes the connection that has been idle the longest (between requests, or sending a
//! head too slowly) so the new client gets its slot, as a busy nginx reuses idle
//! keep-alive connections; with none idle, it answers the new client 503 through one
//! spare descriptor kept for that moment, and closes it.

use std::collections::HashMap;
use std::fs::File;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;

use http::StatusCode;

use crate::listener::refuse;
use crate::reject::Rejection;
use crate::strict::Activity;
use crate::Peer;

/// One per front: the open client connections and the spare descriptor.
pub struct Descriptors {
    spare: Mutex<Option<File>>,
    conns: Mutex<HashMap<u64, Conn>>,
    next_id: AtomicU64,
    /// Idle connections closed to make room, for /metrics.
    pub(crate) shed_idle: AtomicU64,
    /// Clients answered 503 because no descriptor was left.
    pub(crate) shed_new: AtomicU64,
}

struct Conn {
    activity: Activity,
    close: Arc<Notify>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Descriptors {
    pub fn new() -> Arc<Descriptors> {
        Arc::new(Descriptors {
            spare: Mutex::new(open_spare()),
            conns: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            shed_idle: AtomicU64::new(0),
            shed_new: AtomicU64::new(0),
        })
    }

    /// Counts a connection as one that may be closed for room while idle; it is told so
    /// through [`Registered::closing`].
    pub fn register(self: &Arc<Self>, activity: Activity) -> Registered {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let close = Arc::new(Notify::new());
        lock(&self.conns).insert(
            id,
            Conn {
                activity,
                close: close.clone(),
            },
        );
        Registered {
            owner: self.clone(),
            id,
            close,
        }
    }

    /// `accept()` failed with `e`. Makes room if it is the descriptor limit.
    pub async fn out_of_descriptors(
        &self,
        e: &std::io::Error,
        accept_one: impl std::future::Future<
            Output = std::io::Result<(Box<dyn crate::listener::Io>, Peer)>,
        >,
    ) -> Room {
        if !matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE)) {
            return Room::None;
        }
        if self.close_oldest_idle() {
            self.shed_idle.fetch_add(1, Ordering::Relaxed);
            // Let the closed connection's task run and give its descriptor back.
            tokio::time::sleep(Duration::from_millis(5)).await;
            return Room::Made;
        }
        let Some(spare) = lock(&self.spare).take() else {
            return Room::None;
        };
        drop(spare);
        let mut refused = None;
        let accepted = tokio::time::timeout(Duration::from_millis(100), accept_one).await;
        if let Ok(Ok((io, peer))) = accepted {
            self.shed_new.fetch_add(1, Ordering::Relaxed);
            let answer = Rejection::porch(
                StatusCode::SERVICE_UNAVAILABLE,
                "the server is out of connections",
            )
            .retry_after(1);
            // A fresh socket's send buffer takes this at once (the spare descriptor must
            // come back quickly); a TLS client reads it as a failed handshake, which is
            // still an answer rather than a hang.
            refuse(io, &answer, Duration::from_millis(100)).await;
            refused = Some((peer, answer.status.as_u16()));
        }
        *lock(&self.spare) = open_spare();
        match refused {
            Some((peer, status)) => Room::Refused(peer, status),
            None => Room::Made,
        }
    }

    fn close_oldest_idle(&self) -> bool {
        let mut conns = lock(&self.conns);
        let oldest = conns
            .iter()
            .filter(|(_, c)| c.activity.is_idle())
            .max_by_key(|(_, c)| c.activity.idle_for())
            .map(|(id, _)| *id);
        // Out of the table at once, so the next EMFILE picks another connection even if
        // this one's task has not run yet.
        match oldest.and_then(|id| conns.remove(&id)) {
            Some(c) => {
                c.close.notify_one();
                true
            }
            None => false,
        }
    }
}

/// What [`Descriptors::out_of_descriptors`] did.
pub enum Room {
    /// Accepting again may succeed at once.
    Made,
    /// A new client was answered (this status) and closed.
    Refused(Peer, u16),
    /// Not a descriptor shortage, or nothing could be done: wait before accepting again.
    None,
}

fn open_spare() -> Option<File> {
    File::open("/dev/null").ok()
}

/// A connection's entry; dropping it (the connection ended) removes it.
pub struct Registered {
    owner: Arc<Descriptors>,
    id: u64,
    close: Arc<Notify>,
}

impl Registered {
    /// Resolves when the connection should close to make room for a new client.
    pub async fn closing(&self) {
        self.close.notified().await
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        lock(&self.owner.conns).remove(&self.id);
    }
}
