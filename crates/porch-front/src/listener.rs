//! Listening sockets and the HTTP connections they accept: HTTP/1.1 everywhere, HTTP/2
//! on TLS listeners (by ALPN) and on plain listeners with `h2c = true` (prior knowledge).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;

use super::body::ResponseBody;
use super::descriptors::{Registered, Room};
use super::sniff::{sniff, Prefixed, Sniffed};
use super::stall::{SendClock, StallWatch};
use super::strict::{Activity, ActivityGuard, HeadLimits, StrictIo, Switch, Timeouts};
use crate::held::{Connection, ConnectionHold};
use crate::http_util::request_host;
use crate::reject::{Rejection, Verdict};
use crate::Front;
use porch_config::{strip_port, BindAddr};

/// How long a client may take to complete the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Who is on the other end of a connection and which listener took it.
#[derive(Clone, Copy)]
pub struct Peer {
    pub remote: Option<SocketAddr>,
    pub local: Option<SocketAddr>,
    /// The connection came over TLS.
    pub tls: bool,
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
    /// their current request (up to the graceful timeout). `tls` is the listener's TLS
    /// acceptor (from [`super::tls::load_all`]); `None` serves plain HTTP.
    pub async fn serve(
        self: Arc<Self>,
        index: usize,
        listener: Listener,
        tls: Option<TlsAcceptor>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let conns = Arc::new(Connections::new(self.clone(), index, tls));
        // Every connection task holds a clone; `recv` returns once all of them are gone.
        let (open_tx, mut open_rx) = mpsc::channel::<()>(1);
        // At the connection limit porch stops accepting: new clients wait in the kernel's
        // queue instead of being refused.
        let limit = Arc::new(tokio::sync::Semaphore::new(self.cfg.limits.connections));
        loop {
            let permit = tokio::select! {
                _ = shutdown.changed() => break,
                p = limit.clone().acquire_owned() => p.expect("semaphore is never closed"),
            };
            tokio::select! {
                _ = shutdown.changed() => break,
                accepted = accept(&listener) => {
                    let (io, peer) = match accepted {
                        Ok(x) => x,
                        Err(e) => {
                            match self.descriptors.out_of_descriptors(&e, accept(&listener)).await {
                                Room::Made => continue,
                                Room::Refused(peer, status) => {
                                    self.log_refused(peer, status);
                                    continue;
                                }
                                Room::None => {}
                            }
                            // Another failure: pause instead of spinning.
                            tracing::warn!("accept failed: {e}");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let per_ip = match self.per_ip.admit(peer) {
                        Ok(guard) => guard,
                        Err(()) => {
                            let answer = too_many_connections();
                            self.log_refused(peer, answer.status.as_u16());
                            tokio::spawn(async move {
                                refuse(io, &answer, Duration::from_secs(5)).await
                            });
                            continue;
                        }
                    };
                    let conns = conns.clone();
                    let stop = shutdown.clone();
                    let open = open_tx.clone();
                    let hold = ConnectionHold::new((permit, per_ip));
                    tokio::spawn(async move {
                        conns.run(io, peer, stop, hold).await;
                        drop(open);
                    });
                }
            }
        }
        drop(listener);
        drop(open_tx);
        if tokio::time::timeout(self.cfg.graceful_timeout, open_rx.recv())
            .await
            .is_err()
        {
            tracing::warn!("connections still open after the graceful timeout; closing them");
        }
    }
}

/// What the connections of one listener share: the protocol settings and what the
/// listener adds around the routes (TLS, HSTS, the redirect to HTTPS).
struct Connections {
    front: Arc<Front>,
    index: usize,
    tls: Option<TlsAcceptor>,
    /// Cleartext HTTP/2 with prior knowledge, besides HTTP/1.1.
    h2c: bool,
    /// `Strict-Transport-Security` value for responses on a TLS listener.
    hsts: Option<HeaderValue>,
    /// Answer everything with a redirect to HTTPS on this port.
    redirect_https: Option<u16>,
    http1: hyper::server::conn::http1::Builder,
    http2: hyper::server::conn::http2::Builder<TokioExecutor>,
}

/// Which protocol a connection speaks.
#[derive(Clone, Copy)]
enum Proto {
    Http1,
    Http2,
}

/// The HTTP/1.1 settings.
macro_rules! http1_settings {
    ($b:expr, $cfg:expr) => {
        $b.timer(TokioTimer::new())
            .keep_alive(!$cfg.keep_alive.is_zero())
            .half_close(false)
            // Not `pipeline_flush`: it makes hyper copy every body frame into one write
            // buffer and never wait for the socket before taking the next frame, so a
            // body that is always ready (a large file from the page cache, an app's
            // buffered response) was gathered whole in memory, and that buffer kept its
            // size for the rest of the connection. Without it hyper queues the body's
            // `Bytes` and `writev`s them after the head, without a copy, and takes a new
            // frame only once the previous ones are written (see `docs/performance.md`).
            .max_headers($cfg.limits.request_fields)
            // Every HTTP/1 connection hyper serves reads through the strict layer, which
            // runs the keep-alive and header clocks (with a 408); a second clock here
            // cost a timer-wheel entry per request and never fired first.
            .header_read_timeout(None)
            .max_buf_size(head_size(&$cfg.limits))
    };
}

/// The most a request head may take: its line and fields within the configured limits.
fn head_size(limits: &porch_config::Limits) -> usize {
    (limits.request_line + limits.request_field_size * 4).max(16 * 1024)
}

impl Connections {
    fn new(front: Arc<Front>, index: usize, tls: Option<TlsAcceptor>) -> Connections {
        let listener = &front.cfg.listeners[index];
        let limits = &front.cfg.limits;
        let hsts = match (&tls, listener.tls.as_ref().and_then(|t| t.hsts_max_age)) {
            (Some(_), Some(age)) => HeaderValue::from_str(&format!("max-age={age}")).ok(),
            _ => None,
        };
        let redirect_https = if tls.is_none() {
            listener.redirect_https
        } else {
            None
        };
        if tls.is_some() && (listener.redirect_https.is_some() || listener.h2c) {
            tracing::warn!(
                "{}: `redirect_https` and `h2c` apply to plain listeners; ignored with TLS",
                listener.bind
            );
        }

        let mut http1 = hyper::server::conn::http1::Builder::new();
        http1_settings!(http1, front.cfg);
        let mut http2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(head_size(limits)).unwrap_or(u32::MAX));

        Connections {
            h2c: listener.h2c && tls.is_none(),
            front,
            index,
            tls,
            hsts,
            redirect_https,
            http1,
            http2,
        }
    }

    /// Serves one accepted connection until it closes, or until shutdown lets it finish
    /// the request in progress.
    async fn run(
        self: Arc<Self>,
        io: Box<dyn Io>,
        mut peer: Peer,
        mut stop: watch::Receiver<bool>,
        hold: ConnectionHold,
    ) {
        let Some(acceptor) = &self.tls else {
            if !self.h2c {
                return self
                    .clone()
                    .serve_io(io, peer, Proto::Http1, stop, hold)
                    .await;
            }
            // h2c: the first bytes tell HTTP/2 prior knowledge from HTTP/1, within the
            // head clock (a connection that sends nothing is closed like any other).
            let mut io = io;
            let sniffed = tokio::select! {
                r = tokio::time::timeout(self.front.cfg.header_timeout, sniff(&mut io)) => r,
                _ = stopping(&mut stop) => return,
            };
            let Ok(Some((kind, seen))) = sniffed else {
                return;
            };
            let proto = match kind {
                Sniffed::Http2 => Proto::Http2,
                Sniffed::Http1 => Proto::Http1,
            };
            return self
                .clone()
                .serve_io(Prefixed::new(seen, io), peer, proto, stop, hold)
                .await;
        };
        // Closed at once past the per-IP bound: the client may retry when one of its
        // other handshakes is done.
        let Ok(_handshaking) = self.front.handshakes.admit(peer) else {
            tracing::debug!(
                "{:?}: too many TLS handshakes from this address",
                peer.remote
            );
            return;
        };
        let handshake = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(io));
        let stream = tokio::select! {
            r = handshake => match r {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!("TLS handshake with {:?} failed: {e}", peer.remote);
                    return;
                }
                Err(_) => {
                    tracing::debug!("TLS handshake with {:?} timed out", peer.remote);
                    return;
                }
            },
            _ = stopping(&mut stop) => return,
        };
        peer.tls = true;
        let proto = match stream.get_ref().1.alpn_protocol() {
            Some(p) if p == super::tls::ALPN_H2 => Proto::Http2,
            _ => Proto::Http1,
        };
        self.clone().serve_io(stream, peer, proto, stop, hold).await
    }

    async fn serve_io<I: Io>(
        self: Arc<Self>,
        io: I,
        peer: Peer,
        proto: Proto,
        mut stop: watch::Receiver<bool>,
        hold: ConnectionHold,
    ) {
        let verdict = Verdict::default();
        let activity = Activity::default();
        let switch = Switch::default();
        let conns = self.clone();
        // HTTP/1's send clock is the strict layer's (a blocked write); HTTP/2 needs these.
        let stalls = matches!(proto, Proto::Http2).then(StallWatch::default);
        let registered = self.front.descriptors.register(activity.clone());
        let (active, watch) = (activity.clone(), stalls.clone());
        let connection = Arc::new(Connection::new(hold, verdict.clone()));
        let switching = switch.clone();
        let svc = service_fn(move |req: Request<Incoming>| {
            let conns = conns.clone();
            let connection = connection.clone();
            // The connection counts as busy until hyper is done with the response body.
            let guard = active.start();
            let clock = watch.as_ref().map(StallWatch::clock);
            let switching = switching.clone();
            async move {
                let asks_upgrade = req.headers().contains_key(header::UPGRADE);
                let resp = conns.respond(req, peer, &connection).await;
                if asks_upgrade {
                    // The strict layer holds what follows until it knows the protocol.
                    switching.decide(resp.status() == StatusCode::SWITCHING_PROTOCOLS);
                }
                Ok::<_, Infallible>(resp.map(|body| Tracked {
                    body,
                    clock,
                    _guard: guard,
                }))
            }
        });
        match proto {
            Proto::Http1 => {
                // Every byte is checked by the strict framing rules before hyper parses it.
                let limits = &self.front.cfg.limits;
                let io = TokioIo::new(StrictIo::new(
                    io,
                    HeadLimits {
                        request_line: limits.request_line,
                        fields: limits.request_fields,
                        field_size: limits.request_field_size,
                    },
                    verdict,
                    switch,
                    Timeouts {
                        keep_alive: self.front.cfg.idle_timeout(),
                        header: self.front.cfg.header_timeout,
                        send: self.front.cfg.send_timeout,
                    },
                    activity,
                ));
                // With upgrades, so proxied WebSockets can take over the connection.
                let conn = self.http1.serve_connection(io, svc).with_upgrades();
                drive(
                    conn,
                    &mut stop,
                    |c| c.graceful_shutdown(),
                    None,
                    &registered,
                )
                .await
            }
            Proto::Http2 => {
                let conn = self.http2.serve_connection(TokioIo::new(io), svc);
                let idle = IdleLimit {
                    activity,
                    keep_alive: self.front.cfg.idle_timeout(),
                    graceful: self.front.cfg.graceful_timeout,
                    stalls: stalls.unwrap_or_default(),
                    send: self.front.cfg.send_timeout,
                    front: self.front.clone(),
                };
                drive(
                    conn,
                    &mut stop,
                    |c| c.graceful_shutdown(),
                    Some(idle),
                    &registered,
                )
                .await
            }
        }
    }

    async fn respond(
        &self,
        req: Request<Incoming>,
        peer: Peer,
        connection: &Connection,
    ) -> Response<ResponseBody> {
        if let Some(port) = self.redirect_https {
            // A malformed head is answered as such, never redirected.
            if crate::reject::carried_by(&req).is_some() {
                return self.front.handle(self.index, req, peer, connection).await;
            }
            return self.redirect(&req, port, peer);
        }
        let mut resp = self.front.handle(self.index, req, peer, connection).await;
        if let Some(v) = &self.hsts {
            // An app that sets its own policy (Django's SECURE_HSTS_SECONDS) keeps it.
            resp.headers_mut()
                .entry(header::STRICT_TRANSPORT_SECURITY)
                .or_insert_with(|| v.clone());
        }
        resp
    }

    /// `301` to the same host, path and query over HTTPS on `port`.
    fn redirect(&self, req: &Request<Incoming>, port: u16, peer: Peer) -> Response<ResponseBody> {
        let metrics = &self.front.metrics;
        metrics.requests.fetch_add(1, Ordering::Relaxed);
        let resp = match self.front.check(req) {
            Err(rejection) => rejection.response(),
            Ok(()) => {
                let host = request_host(req)
                    .filter(|h| !h.is_empty())
                    .map(|h| strip_port(h).to_string())
                    .or_else(|| {
                        peer.local.map(|a| match a {
                            SocketAddr::V4(a) => a.ip().to_string(),
                            SocketAddr::V6(a) => format!("[{}]", a.ip()),
                        })
                    })
                    .unwrap_or_else(|| "localhost".to_string());
                let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
                let location = if port == 443 {
                    format!("https://{host}{target}")
                } else {
                    format!("https://{host}:{port}{target}")
                };
                match HeaderValue::from_str(&location) {
                    Ok(v) => {
                        let mut r = Response::new(ResponseBody::empty());
                        *r.status_mut() = StatusCode::MOVED_PERMANENTLY;
                        r.headers_mut().insert(header::LOCATION, v);
                        r
                    }
                    Err(_) => {
                        Rejection::client(StatusCode::BAD_REQUEST, "invalid Host header").response()
                    }
                }
            }
        };
        metrics.count_status(resp.status().as_u16());
        resp
    }
}

/// Resolves once shutdown has begun (or its sender is gone, which also means stopping).
async fn stopping(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// The keep-alive clock for HTTP/2, which hyper does not run itself: a connection with no
/// request in progress for `keep_alive` (the HTTP/1 setting, as nginx's
/// `keepalive_timeout` serves both) is told GOAWAY and closed; so are connections that
/// never complete a request (a preface and nothing else, a HEADERS never finished).
/// Its send clock: a connection with a response piece the peer has not taken for
/// `send_timeout` (no flow-control credit) is closed, freeing what its streams hold.
struct IdleLimit {
    activity: Activity,
    keep_alive: Duration,
    graceful: Duration,
    stalls: StallWatch,
    send: Duration,
    front: Arc<Front>,
}

/// Runs a connection until it ends; on shutdown it is told to finish gracefully. With an
/// [`IdleLimit`] (HTTP/2, whose keep-alive clock hyper does not run), a connection idle
/// for `keep_alive` is told so too, and dropped if the peer does not close within the
/// same time again.
async fn drive<C, E>(
    conn: C,
    stop: &mut watch::Receiver<bool>,
    graceful: fn(Pin<&mut C>),
    idle: Option<IdleLimit>,
    registered: &Registered,
) where
    C: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let mut conn = std::pin::pin!(conn);
    let tick = idle.as_ref().map_or(Duration::MAX, |i| {
        (i.keep_alive.min(i.send) / 4).clamp(Duration::from_millis(50), Duration::from_secs(1))
    });
    let result = loop {
        tokio::select! {
            r = conn.as_mut() => break r,
            // Idle while the process is out of descriptors: closed to make room.
            _ = registered.closing() => return,
            _ = stopping(stop) => {
                graceful(conn.as_mut());
                break conn.await;
            }
            _ = tokio::time::sleep(tick), if idle.is_some() => {
                let Some(idle) = &idle else { continue };
                if idle.stalls.stalled_for() >= idle.send {
                    idle.front.metrics.send_timeouts.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(
                        "a response waited {:?} for the client to take it (send_timeout); connection closed",
                        idle.send
                    );
                    return;
                }
                if idle.activity.idle_for() >= idle.keep_alive {
                    graceful(conn.as_mut());
                    let wait = idle.keep_alive.min(idle.graceful);
                    match tokio::time::timeout(wait, conn.as_mut()).await {
                        Ok(r) => break r,
                        Err(_) => return,
                    }
                }
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!("connection ended with an error: {e}");
    }
}

/// A response body that keeps its connection counted as busy until hyper drops it.
/// Its send clock runs from each piece handed to hyper until hyper asks for the next.
pub struct Tracked {
    body: ResponseBody,
    clock: Option<SendClock>,
    _guard: ActivityGuard,
}

impl http_body::Body for Tracked {
    type Data = bytes::Bytes;
    type Error = super::body::BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let Some(clock) = &mut this.clock else {
            return Pin::new(&mut this.body).poll_frame(cx);
        };
        clock.taken();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        if let std::task::Poll::Ready(Some(Ok(frame))) = &polled {
            if frame.data_ref().is_some_and(|d| !d.is_empty()) {
                clock.handed();
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Answers a connection over its IP's limit with 429 and closes it.
/// Writes `answer` to a connection hyper never saw, within `within`, and closes it.
pub(crate) async fn refuse(mut io: Box<dyn Io>, answer: &Rejection, within: Duration) {
    use tokio::io::AsyncWriteExt;
    let _ = tokio::time::timeout(within, io.write_all(&answer.wire_bytes())).await;
    let _ = io.shutdown().await;
}

/// The answer past `limit_connections_per_ip`.
fn too_many_connections() -> Rejection {
    Rejection::client(
        StatusCode::TOO_MANY_REQUESTS,
        "too many connections from this address",
    )
    .retry_after(1)
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
                    tls: false,
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
                    tls: false,
                },
            ))
        }
    }
}
