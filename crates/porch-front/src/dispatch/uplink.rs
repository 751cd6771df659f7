//! The way from a WebSocket's connection to its worker: the link writes what arrives here
//! to the worker's socket, after the frames already waiting there (so a client that
//! sends fast is held back by the worker's pace, through this bounded channel).

use bytes::Bytes;
use tokio::sync::mpsc;

use porch_ipc as ipc;

/// Messages a link's sockets may have waiting for it; past this, their readers wait.
pub(super) const UPLINK_DEPTH: usize = 256;

/// What a WebSocket's connection tells its worker.
#[derive(Debug)]
pub enum ToWorker {
    Message(u32, ipc::WsMessage),
    /// The client closed the socket or went away; the app gets `websocket.disconnect`.
    Closed(u32, ipc::WsClose),
}

/// One socket's sender to its link.
#[derive(Debug, Clone)]
pub struct Uplink {
    id: u32,
    tx: mpsc::Sender<ToWorker>,
}

impl Uplink {
    pub(super) fn new(id: u32, tx: mpsc::Sender<ToWorker>) -> Uplink {
        Uplink { id, tx }
    }

    /// Passes a client's message on, waiting while the link has too many; `false` once
    /// the worker is gone.
    pub async fn message(&self, text: bool, data: Bytes) -> bool {
        let m = ipc::WsMessage { text, data };
        self.tx.send(ToWorker::Message(self.id, m)).await.is_ok()
    }

    /// Tells the app the socket closed, with the client's code (1006: no close frame).
    pub async fn closed(&self, code: u16, reason: String) {
        let close = ipc::WsClose { code, reason };
        let _ = self.tx.send(ToWorker::Closed(self.id, close)).await;
    }
}
