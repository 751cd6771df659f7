//! Listening sockets and the HTTP connections they accept.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;

use super::Front;
use crate::config::BindAddr;

/// Who is on the other end of a connection and which listener took it.
#[derive(Clone, Copy)]
pub struct Peer {
    pub remote: Option<SocketAddr>,
    pub local: Option<SocketAddr>,
}

/// A listening socket of either kind.
pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener, PathBuf),
}

impl Listener {
    /// Binds every address before any worker starts, so a taken port fails fast.
    pub async fn bind(addr: &BindAddr) -> std::io::Result<Listener> {
        match addr {
            BindAddr::Tcp(a) => {
                let sock = match a {
                    SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
                    SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
                };
                sock.set_reuseaddr(true)?;
                sock.bind(*a)?;
                Ok(Listener::Tcp(sock.listen(2048)?))
            }
            BindAddr::Unix(p) => {
                if p.exists() {
                    // A stale socket from a previous run; refuse anything that is not one.
                    use std::os::unix::fs::FileTypeExt;
                    if std::fs::metadata(p)?.file_type().is_socket() {
                        std::fs::remove_file(p)?;
                    }
                }
                Ok(Listener::Unix(UnixListener::bind(p)?, p.clone()))
            }
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix(_, p) = self {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl Front {
    /// Accepts connections until `shutdown` turns true, then lets open connections finish
    /// their current request (up to the graceful timeout).
    pub async fn serve(
        self: Arc<Self>,
        index: usize,
        listener: Listener,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                accepted = accept(&listener) => {
                    let (io, peer) = match accepted {
                        Ok(x) => x,
                        Err(e) => {
                            // Out of descriptors and the like: pause instead of spinning.
                            tracing::warn!("accept failed: {e}");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    self.clone().spawn_connection(index, io, peer, &graceful);
                }
            }
        }
        drop(listener);
        if tokio::time::timeout(self.cfg.graceful_timeout, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("connections still open after the graceful timeout; closing them");
        }
    }

    fn spawn_connection(
        self: Arc<Self>,
        index: usize,
        io: Box<dyn Io>,
        peer: Peer,
        graceful: &hyper_util::server::graceful::GracefulShutdown,
    ) {
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .keep_alive(true)
            .half_close(false)
            .pipeline_flush(true)
            .max_headers(self.cfg.limits.request_fields)
            .header_read_timeout(Duration::from_secs(30))
            .max_buf_size(
                (self.cfg.limits.request_line + self.cfg.limits.request_field_size * 4)
                    .max(16 * 1024),
            );
        let front = self.clone();
        let svc = service_fn(move |req| {
            let front = front.clone();
            async move { Ok::<_, Infallible>(front.handle(index, req, peer).await) }
        });
        let conn = http.serve_connection(TokioIo::new(io), svc);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
}

pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

async fn accept(listener: &Listener) -> std::io::Result<(Box<dyn Io>, Peer)> {
    match listener {
        Listener::Tcp(l) => {
            let (s, remote) = l.accept().await?;
            let _ = s.set_nodelay(true);
            let local = s.local_addr().ok();
            Ok((
                Box::new(s),
                Peer {
                    remote: Some(remote),
                    local,
                },
            ))
        }
        Listener::Unix(l, _) => {
            let (s, _) = l.accept().await?;
            Ok((
                Box::new(s),
                Peer {
                    remote: None,
                    local: None,
                },
            ))
        }
    }
}
