//! The validated configuration every part of porch reads (built in `build.rs`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::{
    AccessLogFormat, AppSpec, Hooks, Limits, ListenerConfig, Process, RateLimit, TrustedProxies,
    UpstreamConfig,
};

/// The validated configuration every part of porch reads.
#[derive(Debug, Clone)]
pub struct Config {
    /// The WSGI app; `None` for a pure front (static files and proxying only).
    pub app: Option<AppSpec>,
    pub listeners: Vec<ListenerConfig>,
    pub upstreams: Vec<UpstreamConfig>,
    pub workers: usize,
    pub threads: usize,
    /// Requests queued inside a busy worker beyond its threads (see `dispatch`).
    pub prefetch: usize,
    /// Longest a request may run in a worker (504 and the worker replaced after).
    pub timeout: Duration,
    /// Longest a worker may take to import the app and report ready. Apart from
    /// `timeout` because imports are often far slower than any one request.
    pub boot_timeout: Duration,
    /// Longest a request may wait in the queue for a free worker (503 after), so a
    /// client is not held on to when no worker is coming.
    pub queue_timeout: Duration,
    pub graceful_timeout: Duration,
    /// On TERM: time /healthz answers 503 while porch still accepts and serves, before the
    /// listeners close (Kubernetes removes endpoints asynchronously).
    pub shutdown_delay: Duration,
    /// How long an idle connection stays open between requests; zero (`--keep-alive 0`)
    /// closes each HTTP/1 connection after its response.
    pub keep_alive: Duration,
    /// Time from a request head's first byte to its end (408 after).
    pub header_timeout: Duration,
    /// Longest pause while reading a request body (408 after).
    pub body_timeout: Duration,
    /// Longest time a client may leave a response unread before the connection is dropped.
    pub send_timeout: Duration,
    pub max_requests: u64,
    pub max_requests_jitter: u64,
    /// Replace a worker whose resident memory passes this many bytes.
    pub max_worker_memory: Option<u64>,
    /// Requests per second each client IP may make (token bucket), and its burst.
    pub rate_limit: Option<RateLimit>,
    /// Identity to switch to once the listening sockets are bound: (uid, gid).
    pub run_as: Option<(u32, u32)>,
    pub chdir: Option<PathBuf>,
    pub pythonpath: Vec<PathBuf>,
    /// The virtualenv whose interpreter runs the workers (`--venv`, `$VIRTUAL_ENV`).
    pub venv: Option<PathBuf>,
    /// The interpreter that runs the workers, when named (`--python`); it wins over `venv`.
    pub python: Option<PathBuf>,
    pub access_log: Option<String>,
    pub access_log_format: AccessLogFormat,
    pub error_log: Option<String>,
    pub log_level: tracing::Level,
    pub forwarded_allow_ips: TrustedProxies,
    pub limits: Limits,
    pub admin_bind: Option<SocketAddr>,
    /// `SCRIPT_NAME` the app is mounted under (from the environment or the file).
    pub script_name: String,
    pub config_file: Option<PathBuf>,
    /// The pid file, the workers' environment, daemon mode, umask, reload.
    pub process: Process,
    /// The Gunicorn hooks of a Python configuration file.
    pub hooks: Option<Hooks>,
    /// One line each about accepted Gunicorn options that porch treats differently,
    /// logged at start-up.
    pub notes: Vec<String>,
    /// WSGI or ASGI, and the ASGI worker's loop and concurrency.
    pub interface: crate::InterfaceConfig,
}

impl Config {
    /// The idle time allowed before a connection's next request (or its first): the
    /// keep-alive time, or the header time when keep-alive is off.
    pub fn idle_timeout(&self) -> Duration {
        if self.keep_alive.is_zero() {
            self.header_timeout
        } else {
            self.keep_alive
        }
    }
}
