//! Gunicorn's Python configuration files: `-c gunicorn.conf.py`, `-c python:MODULE`, and
//! `./gunicorn.conf.py` when no `-c` is given, as Gunicorn reads them.
//!
//! A Python file can only be evaluated by Python, and this side of porch links none: the
//! app's interpreter runs `python -m porch.pyconfig SOURCE`, which prints the names the
//! file defines as JSON. Here the Gunicorn names porch knows become [`FileConfig`] keys;
//! names with no meaning in porch get a note (or a refusal), unknown names are ignored,
//! as Gunicorn ignores them. Flags and variables still win over the file.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use crate::cli::Args;
use crate::gunicorn::setting_note;
use crate::{ConfigError, FileConfig};

/// The file Gunicorn reads when no `-c` is given.
pub const DEFAULT_FILE: &str = "gunicorn.conf.py";

/// How long a configuration file may take to evaluate.
const EVAL_TIMEOUT: Duration = Duration::from_secs(60);

/// Where the configuration comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Toml(PathBuf),
    /// A Python file (absolute path) or `python:MODULE`.
    Python(String),
}

/// The hooks a Python configuration defines, and where to read them again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hooks {
    /// An absolute path or `python:MODULE`.
    pub source: String,
    pub names: Vec<String>,
}

impl Hooks {
    pub fn has(&self, name: &str) -> bool {
        self.names.iter().any(|n| n == name)
    }
}

/// What a Python configuration gave: settings as file keys, notes, hooks.
pub(crate) struct Loaded {
    pub file: FileConfig,
    pub notes: Vec<String>,
    pub hooks: Option<Hooks>,
}

/// `-c` as given, else `./gunicorn.conf.py` (in `--chdir` when given) if it exists.
pub(crate) fn source(args: &Args) -> Option<Source> {
    let base = args.chdir.as_deref().map(Path::new);
    let absolute = |p: &str| match base {
        Some(dir) if Path::new(p).is_relative() => dir.join(p),
        _ => PathBuf::from(p),
    };
    match args.config.as_deref() {
        Some(module) if module.starts_with("python:") => Some(Source::Python(module.into())),
        Some(p) if p.ends_with(".py") => Some(Source::Python(absolute(p).display().to_string())),
        Some(p) => Some(Source::Toml(PathBuf::from(p))),
        None => {
            let default = absolute(DEFAULT_FILE);
            default
                .is_file()
                .then(|| Source::Python(default.display().to_string()))
        }
    }
}

/// Evaluates a Python configuration with `python` (the workers' interpreter).
pub(crate) fn load(args: &Args, source: &str, python: &Path) -> Result<Loaded, ConfigError> {
    let json = evaluate(args, source, python)?;
    from_json(source, &json)
}

fn evaluate(args: &Args, source: &str, python: &Path) -> Result<String, ConfigError> {
    let fail = |message: String| ConfigError::File {
        path: source.to_string(),
        message,
    };
    let mut cmd = Command::new(python);
    cmd.args(["-m", "porch.pyconfig", source])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(dir) = &args.chdir {
        cmd.current_dir(dir);
    }
    if !args.pythonpath.is_empty() {
        let mut paths: Vec<String> = args.pythonpath.clone();
        paths.extend(std::env::var("PYTHONPATH").ok().filter(|p| !p.is_empty()));
        cmd.env("PYTHONPATH", paths.join(":"));
    }
    let mut child = cmd.spawn().map_err(|e| {
        fail(format!(
            "cannot run {} to read this Gunicorn configuration: {e}",
            python.display()
        ))
    })?;
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if started.elapsed() > EVAL_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(fail(format!(
                    "took more than {} s to evaluate",
                    EVAL_TIMEOUT.as_secs()
                )));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(fail(e.to_string())),
        }
    }
    let out = child.wait_with_output().map_err(|e| fail(e.to_string()))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(fail(format!(
            "the Gunicorn configuration failed to load with {}:\n{}",
            python.display(),
            stderr.trim_end()
        )));
    }
    // What the file printed goes to porch's error log, as it would under Gunicorn.
    eprint!("{stderr}");
    String::from_utf8(out.stdout).map_err(|e| fail(e.to_string()))
}

/// Maps the evaluated names onto porch's settings.
pub(crate) fn from_json(source: &str, json: &str) -> Result<Loaded, ConfigError> {
    let bad = |key: &str, v: &Value, expected: &str| ConfigError::File {
        path: source.to_string(),
        message: format!("`{key}` = {v}: expected {expected}"),
    };
    let root: Value = serde_json::from_str(json).map_err(|e| ConfigError::File {
        path: source.to_string(),
        message: format!("unreadable result from porch.pyconfig: {e}"),
    })?;
    let empty = Map::new();
    let settings = root
        .get("settings")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let mut out = Map::new();
    let mut notes = Vec::new();
    let mut refusals = Vec::new();
    for (name, v) in settings {
        let Some((key, kind)) = mapping(name) else {
            if is_set(v) {
                match setting_note(name) {
                    Ok(Some(note)) => notes.push(note),
                    Ok(None) => {}
                    Err(refusal) => refusals.push(refusal),
                }
            }
            continue;
        };
        if v.is_null() {
            continue;
        }
        let value = match kind {
            Kind::Str => text(v).map(Value::String),
            Kind::Uint => uint(v),
            Kind::Float => float(v),
            Kind::Bool => v.as_bool().map(Value::Bool),
            Kind::List => list(v, None),
            Kind::CommaList => list(v, Some(',')),
            Kind::Joined => match v {
                Value::Array(items) => items
                    .iter()
                    .map(text)
                    .collect::<Option<Vec<_>>>()
                    .map(|s| Value::String(s.join(","))),
                _ => text(v).map(Value::String),
            },
        }
        .ok_or_else(|| bad(name, v, kind.expected()))?;
        out.insert(key.to_string(), value);
    }
    if !refusals.is_empty() {
        return Err(ConfigError::File {
            path: source.to_string(),
            message: refusals.join("; "),
        });
    }
    let file: FileConfig =
        serde_json::from_value(Value::Object(out)).map_err(|e| ConfigError::File {
            path: source.to_string(),
            message: e.to_string(),
        })?;
    let names: Vec<String> = root
        .get("hooks")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|n| n.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    for name in names
        .iter()
        .filter(|n| !FRONT_HOOKS.contains(&n.as_str()) && !WORKER_HOOKS.contains(&n.as_str()))
    {
        notes.push(format!(
            "hook `{name}` is never called: porch has no such moment (it never re-executes \
             itself, and its TLS is set up by porch)"
        ));
    }
    let hooks = (!names.is_empty()).then(|| Hooks {
        source: source.to_string(),
        names,
    });
    Ok(Loaded { file, notes, hooks })
}

/// The hooks porch calls (in the workers or the front, see `porch.hooks`).
/// The hooks the front calls at its moments (crates/porch/src/hooks.rs).
pub const FRONT_HOOKS: &[&str] = &[
    "on_starting",
    "when_ready",
    "on_reload",
    "on_exit",
    "pre_fork",
    "child_exit",
    "nworkers_changed",
];

/// The hooks the workers call themselves (python/porch/hooks.py).
pub const WORKER_HOOKS: &[&str] = &[
    "post_fork",
    "post_worker_init",
    "pre_request",
    "post_request",
    "worker_int",
    "worker_abort",
    "worker_exit",
];

#[derive(Clone, Copy)]
enum Kind {
    Str,
    Uint,
    Float,
    Bool,
    /// A list, or one string as a list of one.
    List,
    /// A list, or one comma-separated string.
    CommaList,
    /// One comma-separated string, or a list joined with commas.
    Joined,
}

impl Kind {
    fn expected(self) -> &'static str {
        match self {
            Kind::Str => "a string",
            Kind::Uint => "a whole number",
            Kind::Float => "a number of seconds",
            Kind::Bool => "True or False",
            Kind::List | Kind::CommaList | Kind::Joined => "a string or a list of strings",
        }
    }
}

/// Gunicorn's setting names porch implements, with porch's key and the value's kind.
fn mapping(name: &str) -> Option<(&'static str, Kind)> {
    Some(match name {
        "wsgi_app" => ("app", Kind::Str),
        "bind" => ("bind", Kind::List),
        "workers" => ("workers", Kind::Uint),
        "threads" => ("threads", Kind::Uint),
        "worker_class" => ("worker_class", Kind::Str),
        "worker_connections" => ("worker_connections", Kind::Uint),
        "timeout" => ("timeout", Kind::Float),
        "graceful_timeout" => ("graceful_timeout", Kind::Float),
        "keepalive" => ("keep_alive", Kind::Float),
        "max_requests" => ("max_requests", Kind::Uint),
        "max_requests_jitter" => ("max_requests_jitter", Kind::Uint),
        "limit_request_line" => ("limit_request_line", Kind::Uint),
        "limit_request_fields" => ("limit_request_fields", Kind::Uint),
        "limit_request_field_size" => ("limit_request_field_size", Kind::Uint),
        "backlog" => ("backlog", Kind::Uint),
        "chdir" => ("chdir", Kind::Str),
        "pythonpath" => ("pythonpath", Kind::CommaList),
        "user" => ("user", Kind::Str),
        "group" => ("group", Kind::Str),
        "umask" => ("umask", Kind::Str),
        "raw_env" => ("raw_env", Kind::List),
        "pidfile" => ("pidfile", Kind::Str),
        "daemon" => ("daemon", Kind::Bool),
        "reload" => ("reload", Kind::Bool),
        "reload_extra_files" => ("reload_extra_files", Kind::List),
        "capture_output" => ("capture_output", Kind::Bool),
        "preload_app" => ("preload_app", Kind::Bool),
        "proc_name" => ("proc_name", Kind::Str),
        "worker_tmp_dir" => ("worker_tmp_dir", Kind::Str),
        "accesslog" => ("access_logfile", Kind::Str),
        "errorlog" | "logfile" => ("error_logfile", Kind::Str),
        "loglevel" => ("log_level", Kind::Str),
        "access_log_format" => ("access_logformat", Kind::Str),
        "forwarded_allow_ips" => ("forwarded_allow_ips", Kind::Joined),
        "certfile" => ("certfile", Kind::Str),
        "keyfile" => ("keyfile", Kind::Str),
        "ca_certs" => ("ca_certs", Kind::Str),
        "cert_reqs" => ("cert_reqs", Kind::Uint),
        _ => return None,
    })
}

/// Only a value that asks for something earns a note: `daemon = False` or
/// `statsd_host = None` in a file asks for nothing.
fn is_set(v: &Value) -> bool {
    match v {
        Value::Null | Value::Bool(false) => false,
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::Bool(true) => true,
    }
}

/// Strings as they are; numbers as their decimal text (`user = 1000`, `umask = 0o22`).
fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A whole number, also written as a string (`os.environ.get("WORKERS", "4")`).
fn uint(v: &Value) -> Option<Value> {
    match v {
        Value::Number(n) => n.as_u64().map(Value::from),
        Value::String(s) => s.trim().parse::<u64>().ok().map(Value::from),
        _ => None,
    }
}

fn float(v: &Value) -> Option<Value> {
    match v {
        Value::Number(n) => n.as_f64().map(Value::from),
        Value::String(s) => s.trim().parse::<f64>().ok().map(Value::from),
        _ => None,
    }
}

fn list(v: &Value, split: Option<char>) -> Option<Value> {
    match v {
        Value::Array(items) => items
            .iter()
            .map(|i| text(i).map(Value::String))
            .collect::<Option<Vec<_>>>()
            .map(Value::Array),
        _ => {
            let s = text(v)?;
            Some(Value::Array(match split {
                Some(c) => s
                    .split(c)
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(|p| Value::String(p.into()))
                    .collect(),
                None => vec![Value::String(s)],
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gunicorn_names_become_porch_settings() {
        let json = r#"{"settings": {
            "bind": "0.0.0.0:5000", "workers": "3", "threads": 2, "keepalive": 5,
            "accesslog": "-", "errorlog": "-", "loglevel": "info", "timeout": 0,
            "raw_env": "A=1", "forwarded_allow_ips": ["10.0.0.1", "10.0.0.2"],
            "preload_app": true, "daemon": false, "spew": false, "statsd_host": "x:8125",
            "pythonpath": "/a,/b", "some_unknown_name": 3, "user": 1000
        }, "hooks": ["post_fork", "when_ready"]}"#;
        let l = from_json("g.py", json).unwrap();
        assert_eq!(l.file.bind, ["0.0.0.0:5000"]);
        assert_eq!(l.file.workers, Some(3));
        assert_eq!(l.file.keep_alive, Some(5.0));
        assert_eq!(l.file.timeout, Some(0.0));
        assert_eq!(l.file.raw_env, ["A=1"]);
        assert_eq!(l.file.pythonpath, ["/a", "/b"]);
        assert_eq!(l.file.user.as_deref(), Some("1000"));
        assert_eq!(
            l.file.forwarded_allow_ips.as_deref(),
            Some("10.0.0.1,10.0.0.2")
        );
        assert_eq!(l.notes.len(), 1, "{:?}", l.notes);
        assert!(l.notes[0].contains("statsd_host"));
        assert!(l.hooks.unwrap().has("when_ready"));
    }

    #[test]
    fn refused_settings_and_bad_values_name_the_key() {
        let err = from_json("g.py", r#"{"settings": {"paste": "x.ini"}, "hooks": []}"#)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("g.py") && err.contains("paste"), "{err}");
        let err = from_json("g.py", r#"{"settings": {"workers": "many"}, "hooks": []}"#)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("`workers`") && err.contains("whole number"),
            "{err}"
        );
    }
}
