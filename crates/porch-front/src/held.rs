//! What an accepted connection holds: its place under `limit_connections` and its count
//! under `limit_connections_per_ip`. A connection that switches protocols (a WebSocket of
//! the app, a proxied tunnel) leaves hyper but is still open, so whatever serves it after
//! the switch takes a clone of the hold and the places are freed when the socket closes.
//! Each request of the connection is handed the hold beside it ([`Connection`]).

use std::any::Any;
use std::sync::Arc;

use crate::reject::{Rejection, Verdict};

#[derive(Clone)]
pub(crate) struct ConnectionHold(#[allow(dead_code)] Arc<dyn Any + Send + Sync>);

impl ConnectionHold {
    pub(crate) fn new(guards: impl Any + Send + Sync) -> ConnectionHold {
        ConnectionHold(Arc::new(guards))
    }
}

/// What every request of one connection shares: the connection's hold, and the strict
/// layer's verdict on the bodies it carries. Handed to each request beside it (not in its
/// extensions, which cost a map and two boxes per request).
pub(crate) struct Connection {
    hold: ConnectionHold,
    verdict: Verdict,
}

impl Connection {
    pub(crate) fn new(hold: ConnectionHold, verdict: Verdict) -> Connection {
        Connection { hold, verdict }
    }

    /// For whatever takes the connection over after a `101`, so it stays counted.
    pub(crate) fn hold(&self) -> ConnectionHold {
        self.hold.clone()
    }

    /// For a reader of a request body that must not trust a body the strict layer ended.
    pub(crate) fn verdict(&self) -> Verdict {
        self.verdict.clone()
    }

    /// The rejection of the body just read, if the strict layer ended it early.
    pub(crate) fn body_rejected(&self) -> Option<Rejection> {
        self.verdict.rejected().map(Rejection::from)
    }
}
