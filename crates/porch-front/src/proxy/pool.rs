//! An upstream pool: its servers (resolved from the configured names), their health, the
//! choice of a server for each request, and the keep-alive connections kept for reuse.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};

use super::ReqBody;
use porch_config::{Balance, UpstreamAddr, UpstreamConfig};

/// Idle keep-alive connections kept per server at most; more are closed.
const MAX_IDLE_PER_SERVER: usize = 256;

pub(super) type Sender = SendRequest<ReqBody>;

/// Where a server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Target {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Tcp(a) => write!(f, "{a}"),
            Target::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// The `Host` header health checks send: the address as configured (a name, not what it
/// resolves to).
fn host_header(addr: &UpstreamAddr) -> String {
    match addr {
        UpstreamAddr::Unix(_) => "localhost".into(),
        ip_or_name => ip_or_name.to_string(),
    }
}

/// One upstream server (one address) and what porch knows about it.
pub(super) struct Server {
    pub(super) target: Target,
    /// `Host` for active health checks: the configured name, not the address.
    pub(super) check_host: String,
    /// Requests being served (a WebSocket counts until it closes); least_conn reads it.
    pub(super) active: AtomicUsize,
    /// Failures in a row (passive health).
    fails: AtomicU32,
    /// Out of rotation until then after `max_fails` failures in a row.
    down_until: Mutex<Option<Instant>>,
    /// The last active health check passed (true when there are none).
    pub(super) healthy: AtomicBool,
    idle: Mutex<Vec<Idle>>,
    pub(super) requests: AtomicU64,
    pub(super) failures: AtomicU64,
}

struct Idle {
    sender: Sender,
    since: Instant,
}

impl Server {
    fn new(target: Target, check_host: String) -> Server {
        Server {
            target,
            check_host,
            active: AtomicUsize::new(0),
            fails: AtomicU32::new(0),
            down_until: Mutex::new(None),
            healthy: AtomicBool::new(true),
            idle: Mutex::new(Vec::new()),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        }
    }

    fn down_until(&self) -> Option<Instant> {
        *self.down_until.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Neither taken out by failures nor by a failed health check.
    pub(super) fn available(&self, now: Instant) -> bool {
        self.healthy.load(Ordering::Relaxed) && self.down_until().is_none_or(|t| t <= now)
    }

    /// A connect error, a timeout or a broken exchange: `max_fails` in a row take the
    /// server out for `fail_timeout` (0 disables this).
    pub(super) fn failed(&self, pool: &str, cfg: &UpstreamConfig, why: &dyn std::fmt::Display) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        tracing::warn!("upstream {pool}: server {} failed: {why}", self.target);
        if cfg.max_fails == 0 {
            return;
        }
        let n = self.fails.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= cfg.max_fails {
            self.fails.store(0, Ordering::Relaxed);
            *self.down_until.lock().unwrap_or_else(|e| e.into_inner()) =
                Some(Instant::now() + cfg.fail_timeout);
            self.idle.lock().unwrap_or_else(|e| e.into_inner()).clear();
            tracing::warn!(
                "upstream {pool}: server {} taken out for {:?} after {n} failure(s) in a row",
                self.target,
                cfg.fail_timeout
            );
        }
    }

    pub(super) fn succeeded(&self) {
        self.fails.store(0, Ordering::Relaxed);
        let mut down = self.down_until.lock().unwrap_or_else(|e| e.into_inner());
        if down.is_some() {
            *down = None;
        }
    }

    /// Keeps a connection whose last exchange ended cleanly for the next request.
    pub(super) fn put_idle(self: &Arc<Self>, mut sender: Sender, idle_timeout: Duration) {
        if sender.is_ready() {
            self.push_idle(sender);
            return;
        }
        if sender.is_closed() {
            return;
        }
        // The connection finishes its bookkeeping (or the rest of the request body) first.
        let server = self.clone();
        tokio::spawn(async move {
            let wait = idle_timeout.min(Duration::from_secs(5));
            if let Ok(Ok(())) = tokio::time::timeout(wait, sender.ready()).await {
                server.push_idle(sender);
            }
        });
    }

    fn push_idle(&self, sender: Sender) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE_PER_SERVER {
            idle.push(Idle {
                sender,
                since: Instant::now(),
            });
        }
    }

    /// The most recently used idle connection still open, if any.
    fn take_idle(&self, idle_timeout: Duration) -> Option<Sender> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(i) = idle.pop() {
            if i.since.elapsed() < idle_timeout && i.sender.is_ready() {
                return Some(i.sender);
            }
        }
        None
    }

    /// Closes connections unused for longer than `idle_timeout` (or closed by the server).
    pub(super) fn reap_idle(&self, idle_timeout: Duration) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.retain(|i| i.since.elapsed() < idle_timeout && !i.sender.is_closed());
    }

    pub(super) fn idle_count(&self) -> usize {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// Holds a server's "active" count while a request (or a WebSocket) uses it.
pub(super) struct Lease {
    pub(super) server: Arc<Server>,
}

impl Lease {
    pub(super) fn new(server: Arc<Server>) -> Lease {
        server.active.fetch_add(1, Ordering::Relaxed);
        Lease { server }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.server.active.fetch_sub(1, Ordering::Relaxed);
    }
}

pub(super) struct Pool {
    /// `cfg.servers` were checked with the configuration: nothing is parsed here.
    pub(super) cfg: UpstreamConfig,
    /// The current servers, in a stable order; replaced whole when names resolve anew.
    servers: RwLock<Arc<Vec<Arc<Server>>>>,
    rr: AtomicUsize,
    /// The background upkeep runs (see `Upstreams::start`).
    pub(super) started: AtomicBool,
}

impl Pool {
    /// Resolves the names once (a name that does not resolve yet is tried again later).
    pub(super) fn new(cfg: &UpstreamConfig) -> Pool {
        let pool = Pool {
            cfg: cfg.clone(),
            servers: RwLock::new(Arc::new(Vec::new())),
            rr: AtomicUsize::new(0),
            started: AtomicBool::new(false),
        };
        let resolved = pool
            .cfg
            .servers
            .iter()
            .map(|addr| match addr {
                UpstreamAddr::Ip(a) => Some(vec![Target::Tcp(*a)]),
                UpstreamAddr::Unix(p) => Some(vec![Target::Unix(p.clone())]),
                UpstreamAddr::Name { host, port } => match (host.as_str(), *port).to_socket_addrs()
                {
                    Ok(addrs) => Some(addrs.map(Target::Tcp).collect()),
                    Err(e) => {
                        tracing::warn!(
                            "upstream {}: cannot resolve {host}:{port} yet: {e}",
                            cfg.name
                        );
                        None
                    }
                },
            })
            .collect();
        pool.update(resolved);
        pool
    }

    pub(super) fn servers(&self) -> Arc<Vec<Arc<Server>>> {
        self.servers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(super) fn has_names(&self) -> bool {
        self.cfg
            .servers
            .iter()
            .any(|a| matches!(a, UpstreamAddr::Name { .. }))
    }

    /// Resolves every name again, keeping the state of servers whose address stays.
    pub(super) async fn resolve(&self) {
        let mut resolved = Vec::with_capacity(self.cfg.servers.len());
        for addr in &self.cfg.servers {
            resolved.push(match addr {
                UpstreamAddr::Ip(a) => Some(vec![Target::Tcp(*a)]),
                UpstreamAddr::Unix(p) => Some(vec![Target::Unix(p.clone())]),
                UpstreamAddr::Name { host, port } => {
                    match tokio::net::lookup_host((host.as_str(), *port)).await {
                        Ok(addrs) => Some(addrs.map(Target::Tcp).collect()),
                        Err(e) => {
                            tracing::warn!(
                                "upstream {}: cannot resolve {host}:{port}: {e}; keeping its previous addresses",
                                self.cfg.name
                            );
                            None
                        }
                    }
                }
            });
        }
        self.update(resolved);
    }

    /// `resolved[i]`: the targets of `cfg.servers[i]`, or `None` to keep what it had.
    fn update(&self, resolved: Vec<Option<Vec<Target>>>) {
        let old = self.servers();
        let mut next: Vec<Arc<Server>> = Vec::new();
        for (addr, targets) in self.cfg.servers.iter().zip(resolved) {
            let check_host = host_header(addr);
            let targets: Vec<Target> = match targets {
                Some(mut t) => {
                    // Stable order whatever order the resolver answers in.
                    t.sort_by_key(|t| t.to_string());
                    t
                }
                None => old
                    .iter()
                    .filter(|s| s.check_host == check_host)
                    .map(|s| s.target.clone())
                    .collect(),
            };
            for t in targets {
                if next.iter().any(|s| s.target == t) {
                    continue;
                }
                let server = old
                    .iter()
                    .find(|s| s.target == t)
                    .cloned()
                    .unwrap_or_else(|| Arc::new(Server::new(t, check_host.clone())));
                next.push(server);
            }
        }
        let changed =
            next.len() != old.len() || next.iter().zip(old.iter()).any(|(a, b)| !Arc::ptr_eq(a, b));
        if changed {
            let list: Vec<String> = next.iter().map(|s| s.target.to_string()).collect();
            tracing::info!("upstream {}: servers {}", self.cfg.name, list.join(", "));
            *self.servers.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(next);
        }
    }

    /// The server for the next attempt, never one in `tried`. Servers out of rotation are
    /// only chosen when no other is left (they may be back before their time is up).
    pub(super) fn pick(&self, tried: &[Arc<Server>]) -> Option<Arc<Server>> {
        let servers = self.servers();
        let n = servers.len();
        if n == 0 {
            return None;
        }
        let now = Instant::now();
        let start = self.rr.fetch_add(1, Ordering::Relaxed) % n;
        let untried = |s: &&Arc<Server>| !tried.iter().any(|t| Arc::ptr_eq(t, s));
        let rotation = (0..n).map(|i| &servers[(start + i) % n]).filter(untried);
        let up = rotation.clone().filter(|s| s.available(now));
        let chosen = match self.cfg.balance {
            Balance::RoundRobin => up.into_iter().next(),
            // The first of the least busy in rotation order: ties go round-robin.
            Balance::LeastConnections => up.min_by_key(|s| s.active.load(Ordering::Relaxed)),
        };
        chosen
            .or_else(|| {
                rotation
                    .filter(|s| s.healthy.load(Ordering::Relaxed))
                    .min_by_key(|s| s.down_until())
            })
            .cloned()
    }

    /// A connection to `server`: a kept one that is ready, else a new one.
    /// `Ok((sender, reused))`.
    pub(super) async fn checkout(&self, server: &Server) -> io::Result<(Sender, bool)> {
        if let Some(s) = server.take_idle(self.cfg.idle_timeout) {
            return Ok((s, true));
        }
        let sender = open(&server.target, self.cfg.connect_timeout).await?;
        Ok((sender, false))
    }
}

pub(super) trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// Connects (within `timeout`) and starts an HTTP/1.1 client connection on it.
pub(super) async fn open(target: &Target, timeout: Duration) -> io::Result<Sender> {
    let connect = async {
        Ok::<Box<dyn Io>, io::Error>(match target {
            Target::Tcp(a) => {
                let s = TcpStream::connect(a).await?;
                let _ = s.set_nodelay(true);
                Box::new(s)
            }
            Target::Unix(p) => Box::new(UnixStream::connect(p).await?),
        })
    };
    let io = tokio::time::timeout(timeout, connect)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
    let (sender, conn) = http1::Builder::new()
        .max_buf_size(1 << 20)
        .handshake(TokioIo::new(io))
        .await
        .map_err(io::Error::other)?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!("upstream connection ended: {e}");
        }
    });
    Ok(sender)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(servers: &[&str], balance: Balance) -> UpstreamConfig {
        UpstreamConfig {
            name: "t".into(),
            servers: servers.iter().map(|s| s.parse().unwrap()).collect(),
            balance,
            connect_timeout: Duration::from_secs(1),
            header_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
            read_timeout: Duration::from_secs(1),
            tunnel_idle_timeout: Duration::from_secs(60),
            max_fails: 2,
            fail_timeout: Duration::from_secs(60),
            health_check: None,
            resolve_interval: Duration::from_secs(1),
        }
    }

    #[test]
    fn addresses_become_servers_as_configured() {
        let pool = Pool::new(&cfg(
            &["127.0.0.1:80", "[::1]:80", "unix:/run/a.sock"],
            Balance::RoundRobin,
        ));
        let servers: Vec<(String, String)> = pool
            .servers()
            .iter()
            .map(|s| (s.target.to_string(), s.check_host.clone()))
            .collect();
        assert_eq!(
            servers,
            [
                ("127.0.0.1:80".into(), "127.0.0.1:80".into()),
                ("[::1]:80".into(), "[::1]:80".into()),
                ("unix:/run/a.sock".into(), "localhost".into()),
            ]
        );
        assert!(!pool.has_names());
    }

    #[test]
    fn a_name_counts_as_each_of_its_addresses() {
        let pool = Pool::new(&cfg(&["localhost:9", "127.0.0.1:9"], Balance::RoundRobin));
        let servers = pool.servers();
        // localhost gives 127.0.0.1 (and maybe ::1); the literal duplicate is not added twice.
        assert!(servers
            .iter()
            .any(|s| s.target == Target::Tcp("127.0.0.1:9".parse().unwrap())));
        let mut seen: Vec<String> = servers.iter().map(|s| s.target.to_string()).collect();
        seen.dedup();
        assert_eq!(seen.len(), servers.len());
        assert_eq!(servers[0].check_host, "localhost:9");
    }

    #[test]
    fn round_robin_turns_and_skips_servers_taken_out() {
        let c = cfg(
            &["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"],
            Balance::RoundRobin,
        );
        let pool = Pool::new(&c);
        let picks: Vec<String> = (0..6)
            .map(|_| pool.pick(&[]).unwrap().target.to_string())
            .collect();
        assert_eq!(&picks[..3], &picks[3..]);
        let mut distinct = picks[..3].to_vec();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), 3);

        let s2 = pool.servers()[1].clone();
        s2.failed("t", &c, &"test");
        assert!(s2.available(Instant::now()), "one failure of max_fails=2");
        s2.failed("t", &c, &"test");
        assert!(!s2.available(Instant::now()));
        for _ in 0..6 {
            assert!(!Arc::ptr_eq(&pool.pick(&[]).unwrap(), &s2));
        }
        // Tried servers are skipped; when only servers taken out are left, they are used.
        let all_but_s2: Vec<_> = pool
            .servers()
            .iter()
            .filter(|s| !Arc::ptr_eq(s, &s2))
            .cloned()
            .collect();
        assert!(Arc::ptr_eq(&pool.pick(&all_but_s2).unwrap(), &s2));
        s2.succeeded();
        assert!(s2.available(Instant::now()));
        let everything = pool.servers().to_vec();
        assert!(pool.pick(&everything).is_none());
    }

    #[test]
    fn least_connections_prefers_the_idlest() {
        let c = cfg(&["127.0.0.1:1", "127.0.0.1:2"], Balance::LeastConnections);
        let pool = Pool::new(&c);
        let a = pool.servers()[0].clone();
        let b = pool.servers()[1].clone();
        let _l1 = Lease::new(a.clone());
        let _l2 = Lease::new(a.clone());
        for _ in 0..4 {
            assert!(Arc::ptr_eq(&pool.pick(&[]).unwrap(), &b));
        }
        let _l3 = Lease::new(b.clone());
        let _l4 = Lease::new(b.clone());
        let _l5 = Lease::new(b.clone());
        assert!(Arc::ptr_eq(&pool.pick(&[]).unwrap(), &a));
        drop(_l3);
        drop(_l4);
        // Tied at 2 and 1... now b has 1: b wins.
        assert!(Arc::ptr_eq(&pool.pick(&[]).unwrap(), &b));
    }

    #[test]
    fn failing_health_checks_take_a_server_out() {
        let c = cfg(&["127.0.0.1:1", "127.0.0.1:2"], Balance::RoundRobin);
        let pool = Pool::new(&c);
        let a = pool.servers()[0].clone();
        a.healthy.store(false, Ordering::Relaxed);
        for _ in 0..4 {
            assert!(!Arc::ptr_eq(&pool.pick(&[]).unwrap(), &a));
        }
        // Unhealthy servers are not a last resort.
        let b = pool.servers()[1].clone();
        assert!(pool.pick(&[b]).is_none());
    }
}
