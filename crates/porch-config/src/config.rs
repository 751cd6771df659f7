//! One validated configuration, whatever fed it.
//!
//! Layers, strongest first: command-line flags, `PORCH_*` environment variables (both
//! through [`crate::cli::Args`]), the `porch.toml` file, then defaults. Every error names
//! the key, the value and what was expected; file errors also carry the line.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::cli::Args;

pub use porch_ipc::spawn::AppSpec;

/// Reads `MODULE`, `MODULE:CALLABLE` or `MODULE:factory()`.
pub fn parse_app(s: &str) -> Result<AppSpec, ConfigError> {
    let bad = |why: &str| ConfigError::value("app", s, why);
    let (module, callable) = match s.split_once(':') {
        Some((m, c)) => (m, c),
        None => (s, "application"),
    };
    let (callable, factory) = match callable.strip_suffix("()") {
        Some(c) => (c, true),
        None => (callable, false),
    };
    let is_dotted_name = |x: &str| {
        !x.is_empty()
            && x.split('.').all(|part| {
                !part.is_empty()
                    && !part.starts_with(|c: char| c.is_ascii_digit())
                    && part.chars().all(|c| c.is_alphanumeric() || c == '_')
            })
    };
    if !is_dotted_name(module) {
        return Err(bad(
            "MODULE:CALLABLE with a dotted Python module name, e.g. mysite.wsgi:application",
        ));
    }
    if !is_dotted_name(callable) {
        return Err(bad(
            "a Python name after ':', e.g. application or create_app()",
        ));
    }
    Ok(AppSpec {
        module: module.into(),
        callable: callable.into(),
        factory,
    })
}

/// A listening address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindAddr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl BindAddr {
    pub fn parse(key: &str, s: &str) -> Result<BindAddr, ConfigError> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(ConfigError::value(key, s, "unix:PATH with a socket path"));
            }
            return Ok(BindAddr::Unix(path.into()));
        }
        let expected = "HOST:PORT, [::]:PORT or unix:PATH (e.g. 0.0.0.0:8000)";
        if let Ok(addr) = s.parse::<SocketAddr>() {
            return Ok(BindAddr::Tcp(addr));
        }
        // `localhost:8000` and a bare `:8000` are common in Gunicorn command lines.
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| ConfigError::value(key, s, expected))?;
        let port: u16 = port
            .parse()
            .map_err(|_| ConfigError::value(key, s, expected))?;
        let ip: IpAddr = match host {
            "" | "0.0.0.0" => IpAddr::from([0, 0, 0, 0]),
            "localhost" => IpAddr::from([127, 0, 0, 1]),
            _ => return Err(ConfigError::value(key, s, expected)),
        };
        Ok(BindAddr::Tcp(SocketAddr::new(ip, port)))
    }
}

impl std::fmt::Display for BindAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BindAddr::Tcp(a) => write!(f, "http://{a}"),
            BindAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// A folder served under a URL prefix (see `front::static_files` for what it answers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticMount {
    /// Always starts and ends with `/`.
    pub prefix: String,
    pub dir: PathBuf,
    /// `Cache-Control` for names without a content hash; `None` sends
    /// `public, max-age=60`. Content-hashed names (`app.3f2a9c1b7d4e.css`) always get
    /// `public, max-age=31536000, immutable`.
    pub cache_control: Option<String>,
    /// File served for a directory URL (e.g. `index.html`); `None`: directories are 404.
    pub index: Option<String>,
    /// Serve names starting with `.` (e.g. `.well-known/`); `.` and `..` never are.
    pub allow_dotfiles: bool,
    /// Only reachable through `X-Accel-Redirect` from the app; clients get 404.
    pub internal: bool,
}

impl StaticMount {
    pub fn parse(key: &str, s: &str) -> Result<StaticMount, ConfigError> {
        let (prefix, dir) = s
            .split_once('=')
            .ok_or_else(|| ConfigError::value(key, s, "PREFIX=DIR, e.g. /static/=staticfiles"))?;
        StaticMount::new(key, prefix, dir)
    }

    /// A mount with the defaults: no index, no dotfiles, public, default `Cache-Control`.
    pub fn new(key: &str, prefix: &str, dir: &str) -> Result<StaticMount, ConfigError> {
        if !prefix.starts_with('/') {
            return Err(ConfigError::value(
                key,
                prefix,
                "a URL prefix starting with '/'",
            ));
        }
        if dir.is_empty() {
            return Err(ConfigError::value(key, dir, "a directory path"));
        }
        let mut prefix = prefix.to_string();
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        Ok(StaticMount {
            prefix,
            dir: dir.into(),
            cache_control: None,
            index: None,
            allow_dotfiles: false,
            internal: false,
        })
    }

    /// Checks the optional settings; `key` names the mount (e.g. `route.0`) in errors.
    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        if let Some(cc) = &self.cache_control {
            if cc.trim().is_empty() || http::HeaderValue::from_str(cc).is_err() {
                return Err(ConfigError::value(
                    &format!("{key}.cache_control"),
                    cc,
                    "a Cache-Control header value, e.g. \"public, max-age=3600\" or \"no-cache\"",
                ));
            }
        }
        if let Some(index) = &self.index {
            if index.is_empty() || index.starts_with('.') || index.contains(['/', '\\', '\0']) {
                return Err(ConfigError::value(
                    &format!("{key}.index"),
                    index,
                    "a plain file name, e.g. index.html",
                ));
            }
        }
        Ok(())
    }
}

/// Which peers may tell porch the client's address and scheme through `X-Forwarded-*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrustedProxies {
    All,
    Ips(Vec<IpAddr>),
}

impl TrustedProxies {
    fn parse(s: &str) -> Result<Self, ConfigError> {
        if s.trim() == "*" {
            return Ok(TrustedProxies::All);
        }
        let ips = s
            .split(',')
            .map(str::trim)
            .filter(|x| !x.is_empty())
            .map(|x| {
                x.parse().map_err(|_| {
                    ConfigError::value(
                        "forwarded_allow_ips",
                        x,
                        "comma-separated IP addresses or '*'",
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(TrustedProxies::Ips(ips))
    }

    pub fn trusts(&self, ip: IpAddr) -> bool {
        match self {
            TrustedProxies::All => true,
            TrustedProxies::Ips(ips) => ips.contains(&ip),
        }
    }
}

/// What a route does with the requests it matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteAction {
    /// Run the WSGI app.
    App,
    /// Serve files from a folder.
    Static(StaticMount),
    /// Forward to the named upstream pool.
    Proxy(String),
    /// Answer with a redirect to this URL (the request path is appended when it ends in `/`... never: fixed).
    Redirect { to: String, status: u16 },
    /// Answer with a fixed status and body.
    Return { status: u16, body: String },
}

/// A route: requests whose host matches (any host when `None`) and whose path starts
/// with `prefix`. The longest matching prefix wins; a route naming the host wins a tie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub host: Option<String>,
    pub prefix: String,
    pub action: RouteAction,
}

/// A certificate and its private key, PEM files.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertKey {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// TLS on a listener: one or more certificates (chosen by SNI), HTTP/2 offered by ALPN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    pub certs: Vec<CertKey>,
    /// `Strict-Transport-Security` max-age to send on TLS responses; `None` sends none.
    pub hsts_max_age: Option<u64>,
}

/// One listening address with its routes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerConfig {
    pub bind: BindAddr,
    pub tls: Option<TlsConfig>,
    /// Accept cleartext HTTP/2 with prior knowledge (for a trusted load balancer in front).
    pub h2c: bool,
    /// Answer every request with a redirect to this HTTPS port (plain listeners only).
    pub redirect_https: Option<u16>,
    pub routes: Vec<Route>,
}

impl ListenerConfig {
    /// The route for a request, by host and longest path prefix.
    pub fn route(&self, host: Option<&str>, path: &str) -> Option<&Route> {
        let host = host.map(strip_port);
        self.routes
            .iter()
            .filter(|r| path.starts_with(&r.prefix) || path == r.prefix.trim_end_matches('/'))
            .filter(|r| match (&r.host, host) {
                (None, _) => true,
                (Some(want), Some(got)) => want.eq_ignore_ascii_case(got),
                (Some(_), None) => false,
            })
            .max_by_key(|r| (r.prefix.len(), r.host.is_some()))
    }
}

/// `example.com:8080` → `example.com`, `[::1]:8080` → `[::1]`.
pub fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |i| &host[..=i]);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

/// How an upstream pool spreads requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    RoundRobin,
    LeastConnections,
}

/// Active health checks of an upstream pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub path: String,
    pub interval: Duration,
}

/// A pool of upstream servers for `proxy` routes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamConfig {
    pub name: String,
    /// `HOST:PORT` (a name resolving to several addresses counts as several servers) or `unix:PATH`.
    pub servers: Vec<String>,
    pub balance: Balance,
    pub connect_timeout: Duration,
    /// Time to wait for the response head.
    pub header_timeout: Duration,
    /// Time a pooled keep-alive connection may stay unused. Keep it below the
    /// upstream's own keep-alive timeout (porch and Gunicorn: 5 s and 2 s), so porch
    /// never sends on a connection the server is closing.
    pub idle_timeout: Duration,
    /// Longest pause while reading a response body before porch gives up on it.
    pub read_timeout: Duration,
    /// Failures in a row that take a server out, and for how long.
    pub max_fails: u32,
    pub fail_timeout: Duration,
    pub health_check: Option<HealthCheck>,
    /// How often hostnames are resolved again.
    pub resolve_interval: Duration,
}

/// A per-client-IP token bucket, like nginx's `limit_req`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: u32,
}

/// Limits on what a client may send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub request_line: usize,
    pub request_fields: usize,
    pub request_field_size: usize,
    pub request_body: u64,
    /// Request bodies larger than this go to a temporary file instead of memory.
    pub body_memory: usize,
    /// Requests waiting for a worker before porch answers 503.
    pub backlog: usize,
    /// Open client connections per listener; more wait in the kernel's accept queue.
    pub connections: usize,
    /// Open connections per client IP; more are answered 429 and closed. 0 = no limit.
    pub connections_per_ip: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessLogFormat {
    Combined,
    Json,
}

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
    pub timeout: Duration,
    pub graceful_timeout: Duration,
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
}

/// A configuration mistake, phrased for the person who made it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid value {value:?} for `{key}`: expected {expected}")]
    Value {
        key: String,
        value: String,
        expected: String,
    },
    #[error("missing `{key}`: {hint}")]
    Missing {
        key: &'static str,
        hint: &'static str,
    },
    #[error("{path}: {message}")]
    File { path: String, message: String },
}

impl ConfigError {
    pub fn value(key: &str, value: impl std::fmt::Display, expected: &str) -> ConfigError {
        ConfigError::Value {
            key: key.to_string(),
            value: value.to_string(),
            expected: expected.to_string(),
        }
    }
}

/// `porch.toml`: the same settings as the flags, named with underscores.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub app: Option<String>,
    #[serde(default)]
    pub bind: Vec<String>,
    pub workers: Option<usize>,
    pub threads: Option<usize>,
    pub prefetch: Option<usize>,
    pub timeout: Option<f64>,
    pub graceful_timeout: Option<f64>,
    pub keep_alive: Option<f64>,
    pub header_timeout: Option<f64>,
    pub body_timeout: Option<f64>,
    pub send_timeout: Option<f64>,
    pub limit_connections: Option<usize>,
    pub limit_connections_per_ip: Option<usize>,
    pub max_requests: Option<u64>,
    pub max_requests_jitter: Option<u64>,
    pub max_worker_memory: Option<u64>,
    pub user: Option<String>,
    pub group: Option<String>,
    pub limit_rate: Option<f64>,
    pub limit_burst: Option<u32>,
    pub chdir: Option<String>,
    #[serde(default)]
    pub pythonpath: Vec<String>,
    pub venv: Option<String>,
    pub python: Option<String>,
    pub access_logfile: Option<String>,
    pub access_logformat: Option<String>,
    pub error_logfile: Option<String>,
    pub log_level: Option<String>,
    pub forwarded_allow_ips: Option<String>,
    pub limit_request_line: Option<usize>,
    pub limit_request_fields: Option<usize>,
    pub limit_request_field_size: Option<usize>,
    pub limit_request_body: Option<u64>,
    pub body_memory: Option<usize>,
    pub backlog: Option<usize>,
    pub admin_bind: Option<String>,
    pub script_name: Option<String>,
    /// `[static]` table: URL prefix → directory.
    #[serde(default, rename = "static")]
    pub statics: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub listener: Vec<toml::Spanned<ListenerFile>>,
    #[serde(default)]
    pub upstream: std::collections::BTreeMap<String, toml::Spanned<UpstreamFile>>,
}

/// `[[listener]]` in porch.toml.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerFile {
    pub bind: String,
    pub tls: Option<TlsFile>,
    #[serde(default)]
    pub h2c: bool,
    pub redirect_https: Option<u16>,
    #[serde(default)]
    pub route: Vec<toml::Spanned<RouteFile>>,
}

/// `tls = { cert = "...", key = "..." }` or `tls = { certs = [{cert, key}, ...] }`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFile {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    #[serde(default)]
    pub certs: Vec<CertKey>,
    pub hsts_max_age: Option<u64>,
}

/// `[[listener.route]]` in porch.toml: `path` (and `host`) plus exactly one action.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteFile {
    pub host: Option<String>,
    pub path: Option<String>,
    pub app: Option<bool>,
    #[serde(rename = "static")]
    pub static_dir: Option<String>,
    pub proxy: Option<String>,
    pub redirect: Option<String>,
    #[serde(rename = "return")]
    pub return_status: Option<u16>,
    pub status: Option<u16>,
    pub body: Option<String>,
    /// Static routes: `Cache-Control` for names without a content hash.
    pub cache_control: Option<String>,
    /// Static routes: file served for directory URLs, e.g. `index.html`.
    pub index: Option<String>,
    /// Static routes: serve names starting with `.`.
    pub allow_dotfiles: Option<bool>,
    /// Static routes: only reachable through `X-Accel-Redirect` from the app.
    pub internal: Option<bool>,
}

/// `[upstream.NAME]` in porch.toml.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamFile {
    pub servers: Vec<String>,
    pub balance: Option<String>,
    pub connect_timeout: Option<f64>,
    pub header_timeout: Option<f64>,
    pub idle_timeout: Option<f64>,
    pub read_timeout: Option<f64>,
    pub max_fails: Option<u32>,
    pub fail_timeout: Option<f64>,
    pub health_check_path: Option<String>,
    pub health_check_interval: Option<f64>,
    pub resolve_interval: Option<f64>,
}

impl FileConfig {
    pub fn load(path: &std::path::Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
            path: path.display().to_string(),
            message: format!("cannot read: {e}"),
        })?;
        Self::parse(&text).map_err(|message| ConfigError::File {
            path: path.display().to_string(),
            message,
        })
    }

    /// Parses TOML text; the error says the line, the key and what was expected.
    pub fn parse(text: &str) -> Result<FileConfig, String> {
        toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            let Some(l) = line else {
                return e.message().to_string();
            };
            // Name the key written on that line, so "expected usize" reads as a fix.
            let key = text
                .lines()
                .nth(l - 1)
                .and_then(|t| t.split_once('='))
                .map(|(k, v)| (k.trim().trim_matches('"'), v.trim()))
                .filter(|(k, _)| !k.is_empty() && !k.starts_with('['));
            match key {
                Some((k, v)) if !e.message().contains(k) => {
                    format!("line {l}: `{k}` = {v}: {}", e.message())
                }
                _ => format!("line {l}: {}", e.message()),
            }
        })
    }
}

fn positive(key: &str, v: Option<usize>, default: usize) -> Result<usize, ConfigError> {
    match v {
        None => Ok(default),
        Some(0) => Err(ConfigError::value(key, 0, "a whole number of at least 1")),
        Some(n) => Ok(n),
    }
}

fn seconds(key: &str, v: Option<f64>, default: f64) -> Result<Duration, ConfigError> {
    let v = v.unwrap_or(default);
    if !(v.is_finite() && v > 0.0 && v < 1e9) {
        return Err(ConfigError::value(key, v, "a positive number of seconds"));
    }
    Ok(Duration::from_secs_f64(v))
}

fn log_level(s: &str) -> Result<tracing::Level, ConfigError> {
    Ok(match s.to_ascii_lowercase().as_str() {
        "debug" | "trace" => tracing::Level::DEBUG,
        "info" => tracing::Level::INFO,
        "warning" | "warn" => tracing::Level::WARN,
        "error" | "critical" => tracing::Level::ERROR,
        _ => {
            return Err(ConfigError::value(
                "log_level",
                s,
                "one of debug, info, warning, error, critical",
            ))
        }
    })
}

fn route(key: &str, r: RouteFile) -> Result<Route, ConfigError> {
    let prefix = r.path.unwrap_or_else(|| "/".into());
    if !prefix.starts_with('/') {
        return Err(ConfigError::value(
            &format!("{key}.path"),
            &prefix,
            "a URL path prefix starting with '/'",
        ));
    }
    let mut actions = Vec::new();
    if r.app == Some(true) {
        actions.push(RouteAction::App);
    }
    if let Some(dir) = &r.static_dir {
        let mut mount = StaticMount::new(&format!("{key}.static"), &prefix, dir)?;
        mount.cache_control = r.cache_control.clone();
        mount.index = r.index.clone();
        mount.allow_dotfiles = r.allow_dotfiles.unwrap_or(false);
        mount.internal = r.internal.unwrap_or(false);
        mount.validate(key)?;
        actions.push(RouteAction::Static(mount));
    } else if r.cache_control.is_some()
        || r.index.is_some()
        || r.allow_dotfiles.is_some()
        || r.internal.is_some()
    {
        return Err(ConfigError::value(
            key,
            "cache_control/index/allow_dotfiles/internal",
            "these options only on a `static = DIR` route",
        ));
    }
    if let Some(p) = r.proxy {
        actions.push(RouteAction::Proxy(p));
    }
    if let Some(to) = r.redirect {
        let status = r.status.unwrap_or(301);
        if !matches!(status, 301 | 302 | 303 | 307 | 308) {
            return Err(ConfigError::value(
                &format!("{key}.status"),
                status,
                "301, 302, 303, 307 or 308 for a redirect",
            ));
        }
        actions.push(RouteAction::Redirect { to, status });
    }
    if let Some(status) = r.return_status {
        if !(200..=599).contains(&status) {
            return Err(ConfigError::value(
                &format!("{key}.return"),
                status,
                "an HTTP status from 200 to 599",
            ));
        }
        actions.push(RouteAction::Return {
            status,
            body: r.body.unwrap_or_default(),
        });
    }
    if actions.len() != 1 {
        return Err(ConfigError::value(
            key,
            format!("{} actions", actions.len()),
            "exactly one of `app = true`, `static = DIR`, `proxy = UPSTREAM`, `redirect = URL`, `return = STATUS`",
        ));
    }
    Ok(Route {
        host: r.host.map(|h| h.to_ascii_lowercase()),
        prefix,
        action: actions.pop().unwrap(),
    })
}

fn upstream(name: &str, u: UpstreamFile) -> Result<UpstreamConfig, ConfigError> {
    let key = format!("upstream.{name}");
    if u.servers.is_empty() {
        return Err(ConfigError::value(
            &format!("{key}.servers"),
            "[]",
            "at least one HOST:PORT or unix:PATH",
        ));
    }
    for s in &u.servers {
        let ok = s.strip_prefix("unix:").map_or_else(
            || {
                s.rsplit_once(':')
                    .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
            },
            |p| !p.is_empty(),
        );
        if !ok {
            return Err(ConfigError::value(
                &format!("{key}.servers"),
                s,
                "HOST:PORT or unix:PATH",
            ));
        }
    }
    let balance = match u.balance.as_deref() {
        None | Some("round_robin") => Balance::RoundRobin,
        Some("least_conn") | Some("least_connections") => Balance::LeastConnections,
        Some(other) => {
            return Err(ConfigError::value(
                &format!("{key}.balance"),
                other,
                "round_robin or least_conn",
            ))
        }
    };
    let secs = |field: &str, v: Option<f64>, d: f64| seconds(&format!("{key}.{field}"), v, d);
    let health_check = match u.health_check_path {
        None => None,
        Some(path) if path.starts_with('/') => Some(HealthCheck {
            path,
            interval: secs("health_check_interval", u.health_check_interval, 5.0)?,
        }),
        Some(path) => {
            return Err(ConfigError::value(
                &format!("{key}.health_check_path"),
                path,
                "a URL path starting with '/'",
            ))
        }
    };
    Ok(UpstreamConfig {
        name: name.to_string(),
        servers: u.servers,
        balance,
        connect_timeout: secs("connect_timeout", u.connect_timeout, 5.0)?,
        header_timeout: secs("header_timeout", u.header_timeout, 60.0)?,
        idle_timeout: secs("idle_timeout", u.idle_timeout, 4.0)?,
        read_timeout: secs("read_timeout", u.read_timeout, 60.0)?,
        max_fails: u.max_fails.unwrap_or(1),
        fail_timeout: secs("fail_timeout", u.fail_timeout, 10.0)?,
        health_check,
        resolve_interval: secs("resolve_interval", u.resolve_interval, 10.0)?,
    })
}

/// Resolves `user`/`group` (names or numbers) to ids through the system's databases.
fn run_as(user: Option<String>, group: Option<String>) -> Result<Option<(u32, u32)>, ConfigError> {
    let Some(user) = user else {
        if group.is_some() {
            return Err(ConfigError::value(
                "group",
                group.unwrap_or_default(),
                "a `user` to go with it",
            ));
        }
        return Ok(None);
    };
    let (uid, user_gid) = match user.parse::<u32>() {
        Ok(uid) => (uid, lookup_user_gid_by_uid(uid).unwrap_or(uid)),
        Err(_) => lookup_user(&user)
            .ok_or_else(|| ConfigError::value("user", &user, "an existing user name or a uid"))?,
    };
    let gid = match group {
        None => user_gid,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => lookup_group(&g).ok_or_else(|| {
                ConfigError::value("group", &g, "an existing group name or a gid")
            })?,
        },
    };
    Ok(Some((uid, gid)))
}

fn lookup_user(name: &str) -> Option<(u32, u32)> {
    let name = std::ffi::CString::new(name).ok()?;
    // SAFETY: getpwnam returns a pointer to static storage or null; we copy the two ids
    // out at once, before any other call could overwrite it (config is built on one thread).
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    (!pw.is_null()).then(|| unsafe { ((*pw).pw_uid, (*pw).pw_gid) })
}

fn lookup_user_gid_by_uid(uid: u32) -> Option<u32> {
    // SAFETY: as in `lookup_user`.
    let pw = unsafe { libc::getpwuid(uid) };
    (!pw.is_null()).then(|| unsafe { (*pw).pw_gid })
}

fn lookup_group(name: &str) -> Option<u32> {
    let name = std::ffi::CString::new(name).ok()?;
    // SAFETY: as in `lookup_user`, for the group database.
    let gr = unsafe { libc::getgrnam(name.as_ptr()) };
    (!gr.is_null()).then(|| unsafe { (*gr).gr_gid })
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl Config {
    /// Layers flags and environment (`args`) over the file named by `-c` over defaults.
    pub fn from_args(args: &Args) -> Result<Config, ConfigError> {
        let config_file = args.config.as_ref().map(PathBuf::from);
        let file = match &config_file {
            Some(p) => FileConfig::load(p)?,
            None => FileConfig::default(),
        };
        Self::build(args, file, config_file)
    }

    fn build(
        args: &Args,
        mut file: FileConfig,
        config_file: Option<PathBuf>,
    ) -> Result<Config, ConfigError> {
        let app = args
            .app
            .clone()
            .or(file.app.take())
            .map(|a| parse_app(&a))
            .transpose()?;
        let source = config_file
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "porch.toml".into());
        let file_text = config_file
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default();
        let line_of = |span: std::ops::Range<usize>| -> usize {
            file_text[..span.start.min(file_text.len())]
                .matches('\n')
                .count()
                + 1
        };
        let at = |span: std::ops::Range<usize>, e: ConfigError| ConfigError::File {
            path: source.clone(),
            message: format!("line {}: {e}", line_of(span)),
        };

        let bind_strings = if !args.bind.is_empty() {
            args.bind.clone()
        } else if !file.bind.is_empty() {
            file.bind
        } else {
            vec!["127.0.0.1:8000".to_string()]
        };
        let binds = bind_strings
            .iter()
            .map(|b| BindAddr::parse("bind", b))
            .collect::<Result<Vec<_>, _>>()?;
        let file_listeners = std::mem::take(&mut file.listener);
        let file_upstreams = std::mem::take(&mut file.upstream);

        let workers = positive("workers", args.workers.or(file.workers), cores())?;
        let threads = positive("threads", args.threads.or(file.threads), 1)?;
        let timeout = seconds("timeout", args.timeout.or(file.timeout), 30.0)?;
        let graceful_timeout = seconds(
            "graceful_timeout",
            args.graceful_timeout.or(file.graceful_timeout),
            30.0,
        )?;
        let keep_alive = seconds("keep_alive", args.keep_alive.or(file.keep_alive), 5.0)?;
        let header_timeout = seconds(
            "header_timeout",
            args.header_timeout.or(file.header_timeout),
            30.0,
        )?;
        let body_timeout = seconds(
            "body_timeout",
            args.body_timeout.or(file.body_timeout),
            60.0,
        )?;
        let send_timeout = seconds(
            "send_timeout",
            args.send_timeout.or(file.send_timeout),
            60.0,
        )?;

        let pythonpath: Vec<PathBuf> = if args.pythonpath.is_empty() {
            file.pythonpath.iter().map(PathBuf::from).collect()
        } else {
            args.pythonpath.iter().map(PathBuf::from).collect()
        };
        let chdir = args.chdir.clone().or(file.chdir).map(PathBuf::from);
        if let Some(dir) = &chdir {
            if !dir.is_dir() {
                return Err(ConfigError::value(
                    "chdir",
                    dir.display(),
                    "an existing directory",
                ));
            }
        }
        let venv = args
            .venv
            .clone()
            .or(file.venv)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from);
        if let Some(v) = &venv {
            if !v.join("bin/python").is_file() {
                return Err(ConfigError::value(
                    "venv",
                    v.display(),
                    "a virtualenv directory (with bin/python)",
                ));
            }
        }
        let python = args
            .python
            .clone()
            .or(file.python)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from);
        if let Some(p) = &python {
            if !p.is_file() {
                return Err(ConfigError::value(
                    "python",
                    p.display(),
                    "the path of a Python interpreter (e.g. /srv/venv/bin/python)",
                ));
            }
        }

        let access_log_format = match args
            .access_logformat
            .clone()
            .or(file.access_logformat)
            .as_deref()
        {
            None | Some("combined") => AccessLogFormat::Combined,
            Some("json") => AccessLogFormat::Json,
            Some(other) => {
                return Err(ConfigError::value(
                    "access_logformat",
                    other,
                    "combined or json",
                ))
            }
        };
        let log_level = log_level(
            args.log_level
                .as_deref()
                .or(file.log_level.as_deref())
                .unwrap_or("info"),
        )?;

        let forwarded_allow_ips = TrustedProxies::parse(
            args.forwarded_allow_ips
                .as_deref()
                .or(file.forwarded_allow_ips.as_deref())
                .unwrap_or("127.0.0.1,::1"),
        )?;

        let limits = Limits {
            request_line: positive(
                "limit_request_line",
                args.limit_request_line.or(file.limit_request_line),
                4094,
            )?,
            request_fields: positive(
                "limit_request_fields",
                args.limit_request_fields.or(file.limit_request_fields),
                100,
            )?,
            request_field_size: positive(
                "limit_request_field_size",
                args.limit_request_field_size
                    .or(file.limit_request_field_size),
                8190,
            )?,
            request_body: args
                .limit_request_body
                .or(file.limit_request_body)
                .unwrap_or(1 << 30),
            body_memory: file.body_memory.unwrap_or(1 << 20),
            backlog: positive("backlog", args.backlog.or(file.backlog), 1024)?,
            connections: positive(
                "limit_connections",
                args.limit_connections.or(file.limit_connections),
                10_000,
            )?,
            connections_per_ip: args
                .limit_connections_per_ip
                .or(file.limit_connections_per_ip)
                .unwrap_or(0),
        };
        if limits.request_fields > 32768 {
            return Err(ConfigError::value(
                "limit_request_fields",
                limits.request_fields,
                "at most 32768",
            ));
        }

        let mut statics = args
            .statics
            .iter()
            .map(|s| StaticMount::parse("static", s))
            .collect::<Result<Vec<_>, _>>()?;
        for (prefix, dir) in &file.statics {
            statics.push(StaticMount::new("static", prefix, dir)?);
        }

        let mut upstreams = Vec::new();
        for (name, spanned) in file_upstreams {
            let span = spanned.span();
            upstreams.push(upstream(&name, spanned.into_inner()).map_err(|e| at(span, e))?);
        }

        let listeners = if file_listeners.is_empty() || !args.bind.is_empty() {
            // Flags (or the flat file keys): the app at `/`, `--static` mounts beside it.
            let mut routes: Vec<Route> = statics
                .iter()
                .map(|m| Route {
                    host: None,
                    prefix: m.prefix.clone(),
                    action: RouteAction::Static(m.clone()),
                })
                .collect();
            if app.is_none() {
                return Err(ConfigError::Missing {
                    key: "app",
                    hint:
                        "give the WSGI app as MODULE:CALLABLE, e.g. `porch mysite.wsgi:application`",
                });
            }
            routes.push(Route {
                host: None,
                prefix: "/".into(),
                action: RouteAction::App,
            });
            binds
                .iter()
                .map(|b| ListenerConfig {
                    bind: b.clone(),
                    tls: None,
                    h2c: false,
                    redirect_https: None,
                    routes: routes.clone(),
                })
                .collect()
        } else {
            let mut out = Vec::new();
            for (i, spanned) in file_listeners.into_iter().enumerate() {
                let span = spanned.span();
                let l = spanned.into_inner();
                let key = format!("listener[{i}]");
                let bind = BindAddr::parse(&format!("{key}.bind"), &l.bind)
                    .map_err(|e| at(span.clone(), e))?;
                let tls = match l.tls {
                    None => None,
                    Some(t) => {
                        let mut certs = t.certs;
                        match (t.cert, t.key) {
                            (Some(cert), Some(key)) => certs.insert(0, CertKey { cert, key }),
                            (None, None) => {}
                            _ => {
                                return Err(at(
                                    span,
                                    ConfigError::value(
                                        &format!("{key}.tls"),
                                        "cert without key",
                                        "both `cert` and `key` PEM paths",
                                    ),
                                ))
                            }
                        }
                        if certs.is_empty() {
                            return Err(at(
                                span,
                                ConfigError::value(
                                    &format!("{key}.tls"),
                                    "{}",
                                    "`cert` and `key`, or `certs = [{ cert, key }, ...]`",
                                ),
                            ));
                        }
                        Some(TlsConfig {
                            certs,
                            hsts_max_age: t.hsts_max_age,
                        })
                    }
                };
                let mut routes = Vec::new();
                for (j, r) in l.route.into_iter().enumerate() {
                    let rspan = r.span();
                    let rkey = format!("{key}.route[{j}]");
                    let route = route(&rkey, r.into_inner()).map_err(|e| at(rspan.clone(), e))?;
                    match &route.action {
                        RouteAction::App if app.is_none() => {
                            return Err(at(rspan, ConfigError::Missing { key: "app", hint: "a route uses `app = true`: give the WSGI app as MODULE:CALLABLE or `app = \"module:callable\"` at the top of porch.toml" }))
                        }
                        RouteAction::Proxy(name) if !upstreams.iter().any(|u: &UpstreamConfig| &u.name == name) => {
                            return Err(at(rspan, ConfigError::value(&format!("{rkey}.proxy"), name, "the name of an [upstream.NAME] table")))
                        }
                        _ => {}
                    }
                    routes.push(route);
                }
                if routes.is_empty() {
                    return Err(at(
                        span,
                        ConfigError::Missing {
                            key: "listener.route",
                            hint: "each [[listener]] needs at least one [[listener.route]]",
                        },
                    ));
                }
                out.push(ListenerConfig {
                    bind,
                    tls,
                    h2c: l.h2c,
                    redirect_https: l.redirect_https,
                    routes,
                });
            }
            out
        };

        let admin_bind = match args.admin_bind.clone().or(file.admin_bind) {
            None => None,
            Some(s) => match BindAddr::parse("admin_bind", &s)? {
                BindAddr::Tcp(a) => Some(a),
                BindAddr::Unix(_) => return Err(ConfigError::value("admin_bind", s, "HOST:PORT")),
            },
        };

        let script_name = std::env::var("SCRIPT_NAME")
            .ok()
            .or(file.script_name)
            .unwrap_or_default();
        let script_name = script_name.trim_end_matches('/').to_string();
        if !script_name.is_empty() && !script_name.starts_with('/') {
            return Err(ConfigError::value(
                "script_name",
                &script_name,
                "a URL path starting with '/'",
            ));
        }

        Ok(Config {
            app,
            listeners,
            upstreams,
            workers,
            threads,
            prefetch: args.prefetch.or(file.prefetch).unwrap_or(16),
            timeout,
            graceful_timeout,
            keep_alive,
            header_timeout,
            body_timeout,
            send_timeout,
            max_requests: args.max_requests.or(file.max_requests).unwrap_or(0),
            max_requests_jitter: args
                .max_requests_jitter
                .or(file.max_requests_jitter)
                .unwrap_or(0),
            max_worker_memory: args
                .max_worker_memory
                .or(file.max_worker_memory)
                .map(|mib| {
                    mib.checked_mul(1 << 20).ok_or_else(|| {
                        ConfigError::value("max_worker_memory", mib, "a size in MiB below 2^44")
                    })
                })
                .transpose()?,
            rate_limit: match args.limit_rate.or(file.limit_rate) {
                None => None,
                Some(r) if r.is_finite() && r > 0.0 => Some(RateLimit {
                    per_second: r,
                    burst: args
                        .limit_burst
                        .or(file.limit_burst)
                        .unwrap_or((r.ceil() as u32).max(1))
                        .max(1),
                }),
                Some(r) => {
                    return Err(ConfigError::value(
                        "limit_rate",
                        r,
                        "a positive number of requests per second",
                    ))
                }
            },
            run_as: run_as(
                args.user.clone().or(file.user.clone()),
                args.group.clone().or(file.group.clone()),
            )?,
            chdir,
            pythonpath,
            venv,
            python,
            access_log: args.access_logfile.clone().or(file.access_logfile),
            access_log_format,
            error_log: args.error_logfile.clone().or(file.error_logfile),
            log_level,
            forwarded_allow_ips,
            limits,
            admin_bind,
            script_name,
            config_file,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn args(v: &[&str]) -> Args {
        Args::try_parse_from(std::iter::once("porch").chain(v.iter().copied())).unwrap()
    }

    #[test]
    fn app_specs() {
        assert_eq!(parse_app("a.b").unwrap().callable, "application");
        let f = parse_app("pkg.mod:create_app()").unwrap();
        assert!(f.factory);
        assert_eq!(f.callable, "create_app");
        assert_eq!(f.to_arg(), "pkg.mod:create_app()");
        for bad in ["", ":app", "a:", "a b:app", "a:1x", "a..b:app"] {
            assert!(parse_app(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn binds() {
        assert_eq!(
            BindAddr::parse("bind", "[::]:80").unwrap(),
            BindAddr::Tcp("[::]:80".parse().unwrap())
        );
        assert_eq!(
            BindAddr::parse("bind", ":8000").unwrap(),
            BindAddr::Tcp("0.0.0.0:8000".parse().unwrap())
        );
        assert_eq!(
            BindAddr::parse("bind", "unix:/run/p.sock").unwrap(),
            BindAddr::Unix("/run/p.sock".into())
        );
        let err = BindAddr::parse("bind", "nonsense").unwrap_err().to_string();
        assert!(err.contains("`bind`") && err.contains("HOST:PORT"), "{err}");
    }

    #[test]
    fn flags_win_over_the_file_and_defaults_fill_the_rest() {
        let file =
            FileConfig::parse("app = 'x:y'\nworkers = 3\nthreads = 2\n[static]\n'/media' = 'm'\n")
                .unwrap();
        let c = Config::build(&args(&["-w", "5"]), file, None).unwrap();
        assert_eq!(c.workers, 5);
        assert_eq!(c.threads, 2);
        assert_eq!(c.app.unwrap().module, "x");
        let l = &c.listeners[0];
        assert_eq!(l.bind, BindAddr::Tcp("127.0.0.1:8000".parse().unwrap()));
        assert!(
            matches!(&l.route(None, "/media/a.png").unwrap().action, RouteAction::Static(m) if m.prefix == "/media/")
        );
        assert_eq!(l.route(None, "/api").unwrap().action, RouteAction::App);
        assert_eq!(c.timeout, Duration::from_secs(30));
    }

    #[test]
    fn file_errors_name_line_and_key() {
        let err = FileConfig::parse("app = 'x'\nworkerz = 3\n").unwrap_err();
        assert!(err.contains("line 2") && err.contains("workerz"), "{err}");
        let err = FileConfig::parse("workers = 'many'\n").unwrap_err();
        assert!(err.contains("line 1"), "{err}");
    }

    #[test]
    fn bad_values_name_key_and_expectation() {
        let err = Config::build(&args(&["-w", "0", "a:b"]), FileConfig::default(), None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`workers`") && err.contains("at least 1"),
            "{err}"
        );
        let err = Config::build(
            &args(&["--timeout", "-1", "a:b"]),
            FileConfig::default(),
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("`timeout`"), "{err}");
        let err = Config::build(&args(&[]), FileConfig::default(), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`app`"), "{err}");
    }
}
