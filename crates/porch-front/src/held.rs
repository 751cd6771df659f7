//! What an accepted connection holds: its place under `limit_connections` and its count
//! under `limit_connections_per_ip`. A connection that switches protocols (a WebSocket of
//! the app, a proxied tunnel) leaves hyper but is still open, so whatever serves it after
//! the switch takes a clone of the hold and the places are freed when the socket closes.

use std::any::Any;
use std::sync::Arc;

#[derive(Clone)]
pub(crate) struct ConnectionHold(#[allow(dead_code)] Arc<dyn Any + Send + Sync>);

impl ConnectionHold {
    pub(crate) fn new(guards: impl Any + Send + Sync) -> ConnectionHold {
        ConnectionHold(Arc::new(guards))
    }

    /// The hold of the connection a request came on.
    pub(crate) fn of<B>(req: &http::Request<B>) -> Option<ConnectionHold> {
        req.extensions().get::<ConnectionHold>().cloned()
    }
}
