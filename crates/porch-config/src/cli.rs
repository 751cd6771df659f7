//! The command line, shaped like Gunicorn's so `gunicorn ARGS` becomes `porch ARGS`.
//!
//! Values here are "as typed": every field is optional so that [`crate::Config`] can layer
//! flags over `PORCH_*` variables over `porch.toml` over defaults, and validate once.

use clap::Parser;

#[derive(Parser, Debug, Default, Clone)]
#[command(
    name = "porch",
    version,
    about = "Web server and WSGI application server in one binary.",
    args_override_self = true,
    allow_negative_numbers = true
)]
pub struct Args {
    /// The WSGI app: `MODULE:CALLABLE`, `MODULE` (callable `application`) or `MODULE:factory()`.
    #[arg(value_name = "APP", env = "PORCH_APP")]
    pub app: Option<String>,

    /// Address to listen on: `HOST:PORT`, `[::]:PORT` or `unix:PATH`. Repeatable.
    #[arg(
        short = 'b',
        long = "bind",
        value_name = "ADDRESS",
        env = "PORCH_BIND",
        value_delimiter = ','
    )]
    pub bind: Vec<String>,

    /// Worker processes [default: number of cores].
    #[arg(short = 'w', long, env = "PORCH_WORKERS")]
    pub workers: Option<usize>,

    /// Python threads per worker: requests one worker runs at once [default: 1].
    #[arg(long, env = "PORCH_THREADS")]
    pub threads: Option<usize>,

    /// Requests sent ahead to a busy worker beyond its threads; higher gives more
    /// throughput under load, lower spreads slow requests more evenly [default: 16].
    #[arg(long, env = "PORCH_PREFETCH")]
    pub prefetch: Option<usize>,

    /// Seconds a request may run in the app before it gets 504 and its worker is replaced [default: 30].
    #[arg(short = 't', long, env = "PORCH_TIMEOUT")]
    pub timeout: Option<f64>,

    /// Seconds a worker may take to import the app and be ready [default: --timeout, at least 120].
    #[arg(long = "boot-timeout", env = "PORCH_BOOT_TIMEOUT")]
    pub boot_timeout: Option<f64>,

    /// Seconds a request may wait for a free worker; with no answer begun after this plus
    /// --timeout it gets 503 [default: --timeout].
    #[arg(long = "queue-timeout", env = "PORCH_QUEUE_TIMEOUT")]
    pub queue_timeout: Option<f64>,

    /// Seconds to finish in-flight requests on TERM/INT or when a worker is retired [default: 30].
    #[arg(long, env = "PORCH_GRACEFUL_TIMEOUT")]
    pub graceful_timeout: Option<f64>,

    /// Seconds between TERM and closing the listeners, while /healthz already answers 503
    /// so load balancers (Kubernetes endpoints) stop sending [default: 0].
    #[arg(long = "shutdown-delay", env = "PORCH_SHUTDOWN_DELAY")]
    pub shutdown_delay: Option<f64>,

    /// Seconds an idle keep-alive connection stays open [default: 5].
    #[arg(long = "keep-alive", env = "PORCH_KEEP_ALIVE")]
    pub keep_alive: Option<f64>,

    /// Seconds from a request head's first byte to its end; slower gets 408 [default: 30].
    #[arg(long = "header-timeout", env = "PORCH_HEADER_TIMEOUT")]
    pub header_timeout: Option<f64>,

    /// Longest pause in seconds while a request body arrives; longer gets 408 [default: 60].
    #[arg(long = "body-timeout", env = "PORCH_BODY_TIMEOUT")]
    pub body_timeout: Option<f64>,

    /// Seconds a client may leave a response unread before porch drops it [default: 60].
    #[arg(long = "send-timeout", env = "PORCH_SEND_TIMEOUT")]
    pub send_timeout: Option<f64>,

    /// Open client connections per listener; more wait to be accepted [default: 10000].
    #[arg(long = "limit-connections", env = "PORCH_LIMIT_CONNECTIONS")]
    pub limit_connections: Option<usize>,

    /// Open connections per client IP; more get 429 [default: no limit].
    #[arg(
        long = "limit-connections-per-ip",
        env = "PORCH_LIMIT_CONNECTIONS_PER_IP"
    )]
    pub limit_connections_per_ip: Option<usize>,

    /// Requests a worker serves before it is replaced; 0 = never [default: 0].
    #[arg(long, env = "PORCH_MAX_REQUESTS")]
    pub max_requests: Option<u64>,

    /// Random extra added to --max-requests per worker, so workers do not recycle together.
    #[arg(long, env = "PORCH_MAX_REQUESTS_JITTER")]
    pub max_requests_jitter: Option<u64>,

    /// Replace a worker (after its current requests) once its resident memory passes this many MiB.
    #[arg(
        long = "max-worker-memory",
        value_name = "MIB",
        env = "PORCH_MAX_WORKER_MEMORY"
    )]
    pub max_worker_memory: Option<u64>,

    /// Requests per second each client IP may make; over it gets 429 [default: unlimited].
    #[arg(long = "limit-rate", env = "PORCH_LIMIT_RATE")]
    pub limit_rate: Option<f64>,

    /// Requests a client IP may make at once above --limit-rate [default: the rate].
    #[arg(long = "limit-burst", env = "PORCH_LIMIT_BURST")]
    pub limit_burst: Option<u32>,

    /// After binding, run as this user (name or uid): bind port 80/443 as root, serve as nobody.
    #[arg(short = 'u', long, env = "PORCH_USER")]
    pub user: Option<String>,

    /// After binding, run as this group (name or gid) [default: the user's group].
    #[arg(short = 'g', long, env = "PORCH_GROUP")]
    pub group: Option<String>,

    /// Directory to change into before importing the app.
    #[arg(long, env = "PORCH_CHDIR")]
    pub chdir: Option<String>,

    /// Extra directories on the Python path (comma separated, repeatable).
    #[arg(long, env = "PORCH_PYTHONPATH", value_delimiter = ',')]
    pub pythonpath: Vec<String>,

    /// Virtualenv whose interpreter runs the workers [default: $VIRTUAL_ENV].
    #[arg(long, env = "VIRTUAL_ENV")]
    pub venv: Option<String>,

    /// Python interpreter that runs the workers [default: the --venv's, else the python3
    /// beside porch, else python3 on PATH].
    #[arg(long, env = "PORCH_PYTHON")]
    pub python: Option<String>,

    /// Access log file, `-` for stdout [default: none].
    #[arg(long = "access-logfile", env = "PORCH_ACCESS_LOGFILE")]
    pub access_logfile: Option<String>,

    /// Access log format: `combined` or `json` [default: combined].
    #[arg(long = "access-logformat", env = "PORCH_ACCESS_LOGFORMAT")]
    pub access_logformat: Option<String>,

    /// Error log file, `-` for stderr [default: -].
    #[arg(
        long = "error-logfile",
        alias = "log-file",
        env = "PORCH_ERROR_LOGFILE"
    )]
    pub error_logfile: Option<String>,

    /// debug, info, warning, error or critical [default: info].
    #[arg(long = "log-level", env = "PORCH_LOG_LEVEL")]
    pub log_level: Option<String>,

    /// Peers trusted to set X-Forwarded-For/-Proto: comma-separated IPs or `*` [default: 127.0.0.1,::1].
    #[arg(long = "forwarded-allow-ips", env = "FORWARDED_ALLOW_IPS")]
    pub forwarded_allow_ips: Option<String>,

    /// Longest request line in bytes; longer gets 414 [default: 4094].
    #[arg(long = "limit-request-line", env = "PORCH_LIMIT_REQUEST_LINE")]
    pub limit_request_line: Option<usize>,

    /// Most header fields in a request; more gets 431 [default: 100].
    #[arg(long = "limit-request-fields", env = "PORCH_LIMIT_REQUEST_FIELDS")]
    pub limit_request_fields: Option<usize>,

    /// Largest header field in bytes; larger gets 431 [default: 8190].
    #[arg(
        long = "limit-request-field_size",
        alias = "limit-request-field-size",
        env = "PORCH_LIMIT_REQUEST_FIELD_SIZE"
    )]
    pub limit_request_field_size: Option<usize>,

    /// Largest request body in bytes; larger gets 413 [default: 1 GiB].
    #[arg(long = "limit-request-body", env = "PORCH_LIMIT_REQUEST_BODY")]
    pub limit_request_body: Option<u64>,

    /// Requests waiting for a free worker before porch answers 503 [default: 1024].
    #[arg(long = "backlog", env = "PORCH_BACKLOG")]
    pub backlog: Option<usize>,

    /// Serve a folder under a URL prefix: `PREFIX=DIR`, e.g. `/static/=staticfiles`. Repeatable.
    #[arg(
        long = "static",
        value_name = "PREFIX=DIR",
        env = "PORCH_STATIC",
        value_delimiter = ','
    )]
    pub statics: Vec<String>,

    /// Admin listener for `/healthz` and `/metrics` [default: none].
    #[arg(long = "admin-bind", env = "PORCH_ADMIN_BIND")]
    pub admin_bind: Option<String>,

    /// Configuration file: porch.toml, or a Gunicorn gunicorn.conf.py (or python:MODULE)
    /// [default: ./gunicorn.conf.py when it exists].
    #[arg(short = 'c', long = "config", env = "PORCH_CONFIG")]
    pub config: Option<String>,

    /// Validate the configuration and the app import, then exit.
    #[arg(long = "check-config")]
    pub check_config: bool,

    /// Gunicorn worker class: sync (default), gthread (= --threads), gevent or eventlet
    /// (threads instead of greenlets, see --worker-connections).
    #[arg(
        short = 'k',
        long = "worker-class",
        env = "PORCH_WORKER_CLASS",
        help_heading = GUNICORN
    )]
    pub worker_class: Option<String>,

    /// With -k gevent/eventlet: threads per worker, at most 32 [default: 1000, so 32].
    #[arg(long = "worker-connections", help_heading = GUNICORN)]
    pub worker_connections: Option<usize>,

    /// Write porch's process id to this file (removed on exit).
    #[arg(short = 'p', long = "pid", value_name = "FILE", env = "PORCH_PID", help_heading = GUNICORN)]
    pub pid: Option<String>,

    /// Set an environment variable for the app: `KEY=VALUE`. Repeatable.
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE", help_heading = GUNICORN)]
    pub raw_env: Vec<String>,

    /// TLS certificate (PEM) for the --bind addresses.
    #[arg(long, help_heading = GUNICORN)]
    pub certfile: Option<String>,

    /// TLS private key (PEM) for the --bind addresses.
    #[arg(long, help_heading = GUNICORN)]
    pub keyfile: Option<String>,

    /// CA certificates for client certificates; accepted only with --cert-reqs 0.
    #[arg(long = "ca-certs", help_heading = GUNICORN)]
    pub ca_certs: Option<String>,

    /// Whether to ask clients for a certificate: 0 (no, the default) only.
    #[arg(long = "cert-reqs", help_heading = GUNICORN)]
    pub cert_reqs: Option<u8>,

    /// Run in the background (detached from the terminal); logs go to --error-logfile.
    #[arg(short = 'D', long, help_heading = GUNICORN)]
    pub daemon: bool,

    /// Replace the workers when a Python source file under the app's directory changes.
    #[arg(long, help_heading = GUNICORN)]
    pub reload: bool,

    /// Another file to watch with --reload. Repeatable.
    #[arg(long = "reload-extra-file", value_name = "FILE", help_heading = GUNICORN)]
    pub reload_extra_files: Vec<String>,

    /// File mode mask for porch and its workers, e.g. 0o007 or 7 [default: inherited].
    #[arg(short = 'm', long, help_heading = GUNICORN)]
    pub umask: Option<String>,

    /// Also send the workers' stdout to --error-logfile (stderr always goes there).
    #[arg(long = "capture-output", help_heading = GUNICORN)]
    pub capture_output: bool,

    /// Accepted for Gunicorn command lines; each worker imports the app itself.
    #[arg(long = "preload", help_heading = GUNICORN)]
    pub preload: bool,

    /// Accepted for Gunicorn command lines (porch's processes keep their names).
    #[arg(short = 'n', long = "name", help_heading = GUNICORN)]
    pub name: Option<String>,

    /// Accepted for Gunicorn command lines (porch's workers need no heartbeat files).
    #[arg(long = "worker-tmp-dir", value_name = "DIR", help_heading = GUNICORN)]
    pub worker_tmp_dir: Option<String>,

    /// Notes about accepted Gunicorn options, gathered before parsing (see `gunicorn`).
    #[arg(skip)]
    pub notes: Vec<String>,
    #[command(flatten)]
    pub interface: crate::interface::InterfaceArgs,
}

const GUNICORN: &str = "Gunicorn compatibility";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_timeout_has_its_own_flag() {
        let args = Args::try_parse_from([
            "porch",
            "-t",
            "10",
            "--boot-timeout",
            "300",
            "--queue-timeout=2.5",
            "a:b",
        ])
        .unwrap();
        assert_eq!(args.timeout, Some(10.0));
        assert_eq!(args.boot_timeout, Some(300.0));
        assert_eq!(args.queue_timeout, Some(2.5));
    }

    #[test]
    fn gunicorn_command_lines_parse() {
        let args = Args::try_parse_from([
            "porch",
            "-w",
            "4",
            "-b",
            "0.0.0.0:8000",
            "-b",
            "unix:/tmp/s",
            "--limit-request-field_size",
            "100",
            "mysite.wsgi:application",
        ])
        .unwrap();
        assert_eq!(args.workers, Some(4));
        assert_eq!(args.bind, ["0.0.0.0:8000", "unix:/tmp/s"]);
        assert_eq!(args.limit_request_field_size, Some(100));
        assert_eq!(args.app.as_deref(), Some("mysite.wsgi:application"));
    }
}
