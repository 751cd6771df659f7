//! Layering: command-line flags, `PORCH_*` environment variables (both through
//! [`Args`]), the `porch.toml` file, then defaults, into one [`Config`].
//!
//! Each group of settings has its own function; `build` calls them in a fixed order so
//! that, of several mistakes, the same one is always reported first.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cli::Args;
use crate::file::Lines;
use crate::limits::{limits, rate_limit};
use crate::listener::{file_listeners, flag_listeners};
use crate::log::log_level;
use crate::process::{self, Process};
use crate::pyconfig::{self, Source};
use crate::upstream::upstreams;
use crate::users::run_as;
use crate::values::{positive, seconds, seconds_or, seconds_or_unlimited, seconds_or_zero};
use crate::{
    parse_app, AccessLogFormat, BindAddr, CertKey, Config, ConfigError, FileConfig, StaticMount,
    TlsConfig, TrustedProxies,
};

impl Config {
    /// Layers flags and environment (`args`) over the file named by `-c` over defaults.
    /// A Python (Gunicorn) configuration file is evaluated by the app's interpreter.
    pub fn from_args(args: &Args) -> Result<Config, ConfigError> {
        let (file, config_file, loaded) = match pyconfig::source(args) {
            None => (FileConfig::default(), None, None),
            Some(Source::Toml(p)) => match FileConfig::load(&p) {
                Ok(f) => (f, Some(p), None),
                // Gunicorn reads any `-c` file as Python (`-c gunicorn.conf`).
                Err(e) if p.extension().is_none_or(|x| x != "toml") => {
                    let source = p.display().to_string();
                    match pyconfig::load(args, &source, &args_python(args)?) {
                        Ok(l) => (FileConfig::default(), Some(p), Some(l)),
                        Err(_) => return Err(e),
                    }
                }
                Err(e) => return Err(e),
            },
            Some(Source::Python(s)) => {
                let loaded = pyconfig::load(args, &s, &args_python(args)?)?;
                let path = (!s.starts_with("python:")).then(|| PathBuf::from(&s));
                (FileConfig::default(), path, Some(loaded))
            }
        };
        let Some(loaded) = loaded else {
            return Self::build(args, file, config_file);
        };
        // The Python file's settings, and no line numbers (they are not TOML lines).
        let mut cfg = Self::build(args, loaded.file, None)?;
        cfg.config_file = config_file;
        cfg.notes.extend(loaded.notes);
        cfg.hooks = loaded.hooks;
        Ok(cfg)
    }

    pub(crate) fn build(
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
        let lines = Lines::read(config_file.as_deref());
        let binds = binds(args, &file)?;
        let listener_tables = std::mem::take(&mut file.listener);
        let upstream_tables = std::mem::take(&mut file.upstream);
        let workers = positive(
            "workers",
            args.workers
                .or(file.workers)
                .or(crate::env::web_concurrency()?),
            cores(),
        )?;
        let by_class = process::threads(args, &file)?;
        let mut notes = args.notes.clone();
        notes.extend(by_class.notes);
        let threads = positive("threads", by_class.threads, 1)?;
        let process = Process::new(args, &file, &mut notes)?;
        let tls = flag_tls(args, &file)?;
        let t = Timeouts::new(args, &file)?;
        let py = Python::new(args, &file)?;
        let log = Logging::new(args, &file)?;
        let forwarded_allow_ips = TrustedProxies::parse(
            args.forwarded_allow_ips
                .as_deref()
                .or(file.forwarded_allow_ips.as_deref())
                .unwrap_or("127.0.0.1,::1"),
        )?;
        let limits = limits(args, &file)?;
        let statics = statics(args, &file)?;
        let upstreams = upstreams(upstream_tables, &lines)?;
        let listeners = if listener_tables.is_empty() || !args.bind.is_empty() {
            flag_listeners(&binds, &statics, app.is_some(), tls)?
        } else {
            file_listeners(listener_tables, app.is_some(), &upstreams, &lines)?
        };
        let admin_bind = admin_bind(args, &file)?;
        let script_name = script_name(&file)?;
        let max_worker_memory = max_worker_memory(args, &file)?;
        let mut interface = crate::interface::interface(&args.interface, &file)?;
        if by_class.asgi {
            // `-k uvicorn.workers.UvicornWorker`: the app is ASGI.
            match interface.interface {
                porch_ipc::spawn::Interface::Wsgi => {
                    return Err(ConfigError::value(
                        "interface",
                        "wsgi",
                        "`asgi` or `auto` with an ASGI worker class (-k)",
                    ))
                }
                _ => interface.interface = porch_ipc::spawn::Interface::Asgi,
            }
        }
        let rate_limit = rate_limit(args, &file)?;
        let run_as = run_as(
            args.user.clone().or(file.user.clone()),
            args.group.clone().or(file.group.clone()),
        )?;

        Ok(Config {
            app,
            listeners,
            upstreams,
            workers,
            threads,
            prefetch: args.prefetch.or(file.prefetch).unwrap_or(16),
            timeout: t.timeout,
            boot_timeout: t.boot,
            queue_timeout: t.queue,
            graceful_timeout: t.graceful,
            shutdown_delay: t.shutdown_delay,
            keep_alive: t.keep_alive,
            header_timeout: t.header,
            body_timeout: t.body,
            send_timeout: t.send,
            max_requests: args.max_requests.or(file.max_requests).unwrap_or(0),
            max_requests_jitter: args
                .max_requests_jitter
                .or(file.max_requests_jitter)
                .unwrap_or(0),
            max_worker_memory,
            rate_limit,
            run_as,
            chdir: py.chdir,
            pythonpath: py.pythonpath,
            venv: py.venv,
            python: py.python,
            access_log: log.access_log,
            access_log_format: log.access_log_format,
            error_log: log.error_log,
            log_level: log.log_level,
            forwarded_allow_ips,
            limits,
            admin_bind,
            script_name,
            config_file,
            process,
            hooks: None,
            notes,
            interface,
        })
    }
}

/// The interpreter for a Python configuration: the workers' own, as far as the flags and
/// variables name it (the file cannot name it, being Python).
fn args_python(args: &Args) -> Result<PathBuf, ConfigError> {
    let python = args
        .python
        .as_deref()
        .filter(|p| !p.is_empty())
        .map(Path::new);
    let venv = args
        .venv
        .as_deref()
        .filter(|p| !p.is_empty())
        .map(Path::new);
    crate::resolve_python(python, venv)
        .map(|(p, _)| p)
        .map_err(|e| ConfigError::value("config", args.config.as_deref().unwrap_or(""), &e))
}

fn cores() -> usize {
    crate::cpus::available_cpus()
}

/// Parsed even when `[[listener]]` tables will be used instead, so a bad `bind` in the
/// file never goes unnoticed.
fn binds(args: &Args, file: &FileConfig) -> Result<Vec<BindAddr>, ConfigError> {
    let port;
    let strings = if !args.bind.is_empty() {
        &args.bind
    } else if !file.bind.is_empty() {
        &file.bind
    } else if let Some(p) = crate::env::port_bind()? {
        port = [p];
        &port[..]
    } else {
        return Ok(vec![BindAddr::Tcp(SocketAddr::from((
            [127, 0, 0, 1],
            8000,
        )))]);
    };
    strings.iter().map(|b| BindAddr::parse("bind", b)).collect()
}

struct Timeouts {
    timeout: Duration,
    boot: Duration,
    queue: Duration,
    graceful: Duration,
    shutdown_delay: Duration,
    keep_alive: Duration,
    header: Duration,
    body: Duration,
    send: Duration,
}

impl Timeouts {
    fn new(args: &Args, file: &FileConfig) -> Result<Timeouts, ConfigError> {
        let timeout = seconds_or_unlimited("timeout", args.timeout.or(file.timeout), 30.0)?;
        Ok(Timeouts {
            timeout,
            // Unset, these keep what `timeout` alone used to give: a boot time of at
            // least 120 s, and a queue wait of the run time (the front gives up on an
            // answer after queue wait + run time: 60 s by default).
            boot: seconds_or(
                "boot_timeout",
                args.boot_timeout.or(file.boot_timeout),
                timeout.max(Duration::from_secs(120)),
            )?,
            queue: seconds_or(
                "queue_timeout",
                args.queue_timeout.or(file.queue_timeout),
                timeout,
            )?,
            graceful: seconds_or_zero(
                "graceful_timeout",
                args.graceful_timeout.or(file.graceful_timeout),
                30.0,
            )?,
            shutdown_delay: match args.shutdown_delay.or(file.shutdown_delay) {
                None => Duration::ZERO,
                v => seconds_or_zero("shutdown_delay", v, 1.0)?,
            },
            keep_alive: seconds_or_zero("keep_alive", args.keep_alive.or(file.keep_alive), 5.0)?,
            header: seconds(
                "header_timeout",
                args.header_timeout.or(file.header_timeout),
                30.0,
            )?,
            body: seconds(
                "body_timeout",
                args.body_timeout.or(file.body_timeout),
                60.0,
            )?,
            send: seconds(
                "send_timeout",
                args.send_timeout.or(file.send_timeout),
                60.0,
            )?,
        })
    }
}

/// Where the workers' Python comes from. Paths are checked now: a missing one would
/// otherwise surface as an import error in every worker.
struct Python {
    chdir: Option<PathBuf>,
    pythonpath: Vec<PathBuf>,
    venv: Option<PathBuf>,
    python: Option<PathBuf>,
}

impl Python {
    fn new(args: &Args, file: &FileConfig) -> Result<Python, ConfigError> {
        let pythonpath = if args.pythonpath.is_empty() {
            &file.pythonpath
        } else {
            &args.pythonpath
        };
        let chdir = args.chdir.clone().or(file.chdir.clone()).map(PathBuf::from);
        if let Some(dir) = &chdir {
            if !dir.is_dir() {
                return Err(ConfigError::value(
                    "chdir",
                    dir.display(),
                    "an existing directory",
                ));
            }
        }
        let venv = non_empty_path(&args.venv, &file.venv);
        if let Some(v) = &venv {
            if !v.join("bin/python").is_file() {
                return Err(ConfigError::value(
                    "venv",
                    v.display(),
                    "a virtualenv directory (with bin/python)",
                ));
            }
        }
        let python = non_empty_path(&args.python, &file.python);
        if let Some(p) = &python {
            if !p.is_file() {
                return Err(ConfigError::value(
                    "python",
                    p.display(),
                    "the path of a Python interpreter (e.g. /srv/venv/bin/python)",
                ));
            }
        }
        Ok(Python {
            chdir,
            pythonpath: pythonpath.iter().map(PathBuf::from).collect(),
            venv,
            python,
        })
    }
}

/// An empty value (e.g. `VIRTUAL_ENV=`) means unset, as shells treat it.
fn non_empty_path(flag: &Option<String>, file: &Option<String>) -> Option<PathBuf> {
    flag.clone()
        .or(file.clone())
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

struct Logging {
    access_log: Option<String>,
    access_log_format: AccessLogFormat,
    error_log: Option<String>,
    log_level: tracing::Level,
}

impl Logging {
    fn new(args: &Args, file: &FileConfig) -> Result<Logging, ConfigError> {
        Ok(Logging {
            access_log_format: AccessLogFormat::parse(
                args.access_logformat
                    .as_deref()
                    .or(file.access_logformat.as_deref()),
            )?,
            log_level: log_level(
                args.log_level
                    .as_deref()
                    .or(file.log_level.as_deref())
                    .unwrap_or("info"),
            )?,
            access_log: args.access_logfile.clone().or(file.access_logfile.clone()),
            error_log: args.error_logfile.clone().or(file.error_logfile.clone()),
        })
    }
}

/// `--static` mounts, then the file's `[static]` table.
fn statics(args: &Args, file: &FileConfig) -> Result<Vec<StaticMount>, ConfigError> {
    let mut statics = args
        .statics
        .iter()
        .map(|s| StaticMount::parse("static", s))
        .collect::<Result<Vec<_>, _>>()?;
    for (prefix, dir) in &file.statics {
        statics.push(StaticMount::new("static", prefix, dir)?);
    }
    Ok(statics)
}

/// `--certfile`/`--keyfile`: TLS on every `--bind` address, as Gunicorn does.
fn flag_tls(args: &Args, file: &FileConfig) -> Result<Option<TlsConfig>, ConfigError> {
    let cert = args.certfile.clone().or(file.certfile.clone());
    let key = args.keyfile.clone().or(file.keyfile.clone());
    if let Some(reqs) = args.cert_reqs.or(file.cert_reqs).filter(|r| *r != 0) {
        return Err(ConfigError::value(
            "cert_reqs",
            reqs,
            "0: porch does not ask clients for certificates (terminate mutual TLS at a proxy in front)",
        ));
    }
    match (cert, key) {
        (None, None) => Ok(None),
        (Some(cert), Some(key)) => Ok(Some(TlsConfig {
            certs: vec![CertKey {
                cert: cert.into(),
                key: key.into(),
            }],
            hsts_max_age: None,
        })),
        (Some(_), None) => Err(ConfigError::Missing {
            key: "keyfile",
            hint: "--certfile needs --keyfile with the certificate's private key",
        }),
        (None, Some(_)) => Err(ConfigError::Missing {
            key: "certfile",
            hint: "--keyfile needs --certfile with the certificate",
        }),
    }
}

/// TCP only: the admin endpoints are for probes and scrapers on the network.
fn admin_bind(args: &Args, file: &FileConfig) -> Result<Option<SocketAddr>, ConfigError> {
    let Some(s) = args.admin_bind.clone().or(file.admin_bind.clone()) else {
        return Ok(None);
    };
    match BindAddr::parse("admin_bind", &s)? {
        BindAddr::Tcp(a) => Ok(Some(a)),
        BindAddr::Unix(_) => Err(ConfigError::value("admin_bind", s, "HOST:PORT")),
    }
}

/// `SCRIPT_NAME` from the environment, as Gunicorn reads it, else from the file.
fn script_name(file: &FileConfig) -> Result<String, ConfigError> {
    let script_name = std::env::var("SCRIPT_NAME")
        .ok()
        .or(file.script_name.clone())
        .unwrap_or_default();
    let script_name = script_name.trim_end_matches('/').to_string();
    if !script_name.is_empty() && !script_name.starts_with('/') {
        return Err(ConfigError::value(
            "script_name",
            &script_name,
            "a URL path starting with '/'",
        ));
    }
    Ok(script_name)
}

/// MiB as typed, bytes as used; a value that would wrap is refused, not shrunk.
fn max_worker_memory(args: &Args, file: &FileConfig) -> Result<Option<u64>, ConfigError> {
    args.max_worker_memory
        .or(file.max_worker_memory)
        .map(|mib| {
            mib.checked_mul(1 << 20).ok_or_else(|| {
                ConfigError::value("max_worker_memory", mib, "a size in MiB below 2^44")
            })
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RouteAction;
    use clap::Parser;

    fn args(v: &[&str]) -> Args {
        Args::try_parse_from(std::iter::once("porch").chain(v.iter().copied())).unwrap()
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

    #[test]
    fn static_cache_settings() {
        let c = Config::build(&args(&["a:b"]), FileConfig::default(), None).unwrap();
        assert_eq!(c.limits.static_cache_entries, 4096);
        assert_eq!(c.limits.static_cache_memory, 32 << 20);
        let file: FileConfig =
            toml::from_str("static_cache_entries = 0\nstatic_cache_memory = 1024").unwrap();
        let c = Config::build(&args(&["a:b"]), file, None).unwrap();
        assert_eq!(
            (c.limits.static_cache_entries, c.limits.static_cache_memory),
            (0, 1024)
        );
        for (text, key) in [
            ("static_cache_entries = 16777217", "`static_cache_entries`"),
            (
                "static_cache_memory = 1099511627777",
                "`static_cache_memory`",
            ),
        ] {
            let file: FileConfig = toml::from_str(text).unwrap();
            let err = Config::build(&args(&["a:b"]), file, None)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(key) && err.contains("0 to turn the static-file cache off"),
                "{err}"
            );
        }
        assert!(toml::from_str::<FileConfig>("static_cache_memory = -1").is_err());
    }

    #[test]
    fn boot_and_queue_timeouts_default_to_what_timeout_alone_gave() {
        let c = Config::build(&args(&["a:b"]), FileConfig::default(), None).unwrap();
        assert_eq!(c.boot_timeout, Duration::from_secs(120));
        assert_eq!(c.queue_timeout, Duration::from_secs(30));
        let c = Config::build(&args(&["-t", "200", "a:b"]), FileConfig::default(), None).unwrap();
        assert_eq!(c.boot_timeout, Duration::from_secs(200));
        assert_eq!(c.queue_timeout, Duration::from_secs(200));
        // Near the largest timeout the derived defaults are not refused.
        let c = Config::build(&args(&["-t", "9e8", "a:b"]), FileConfig::default(), None).unwrap();
        assert_eq!(c.queue_timeout, Duration::from_secs(900_000_000));
    }

    #[test]
    fn boot_and_queue_timeouts_are_their_own_settings() {
        let file = FileConfig::parse("boot_timeout = 300\nqueue_timeout = 5.5\n").unwrap();
        let c = Config::build(&args(&["-t", "10", "a:b"]), file, None).unwrap();
        assert_eq!(c.timeout, Duration::from_secs(10));
        assert_eq!(c.boot_timeout, Duration::from_secs(300));
        assert_eq!(c.queue_timeout, Duration::from_millis(5500));
        let file = FileConfig::parse("boot_timeout = 300\n").unwrap();
        let c = Config::build(&args(&["--boot-timeout", "7", "a:b"]), file, None).unwrap();
        assert_eq!(c.boot_timeout, Duration::from_secs(7));
        for (flag, key) in [
            ("--boot-timeout", "`boot_timeout`"),
            ("--queue-timeout", "`queue_timeout`"),
        ] {
            for bad in ["0", "-1", "inf"] {
                let err = Config::build(&args(&[flag, bad, "a:b"]), FileConfig::default(), None)
                    .unwrap_err()
                    .to_string();
                assert!(
                    err.contains(key) && err.contains("positive"),
                    "{flag} {bad}: {err}"
                );
            }
        }
    }

    #[test]
    fn a_bad_upstream_server_fails_the_whole_configuration() {
        let file = FileConfig::parse(
            "app = 'a:b'\n[upstream.web]\nservers = ['[x]:80']\n[[listener]]\nbind = ':80'\n\
             [[listener.route]]\nproxy = 'web'\n",
        )
        .unwrap();
        let err = Config::build(&args(&[]), file, None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`upstream.web.servers`") && err.contains("[x]:80"),
            "{err}"
        );
    }
}
