//! How the front starts a worker, and what each side may expect of the other.
//!
//! A worker is the app's own Python interpreter running `python -m porch.worker`, with its
//! end of a socket pair on [`SOCKET_FD`] and a [`WorkerSpec`] as JSON in [`SPEC_ENV`]. It
//! answers with a `Ready` frame carrying its pid and [`PROTOCOL`], or exits with one of the
//! `EXIT_*` statuses.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The environment variable carrying a [`WorkerSpec`] as JSON.
pub const SPEC_ENV: &str = "PORCH_WORKER_SPEC";
/// The descriptor number of the worker's socket to the front.
pub const SOCKET_FD: i32 = 3;
/// Exit status of a worker whose app could not be imported (Gunicorn uses 3 as well).
pub const EXIT_IMPORT_FAILED: u8 = 3;
/// Exit status of a worker that cannot work with this front: a spec it cannot read, or
/// another protocol version.
pub const EXIT_MISMATCH: u8 = 4;
/// The Python module a worker interpreter runs (`python -m porch.worker`).
pub const WORKER_MODULE: &str = "porch.worker";
/// Bumped whenever frames or the spec change meaning; the front and the worker extension
/// must agree on it, so a front never talks to an extension from another release.
pub const PROTOCOL: u32 = 5;
/// porch's release; the front and the worker extension come from one.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The WSGI callable to import: `MODULE:CALLABLE` or `MODULE:factory()`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppSpec {
    pub module: String,
    pub callable: String,
    /// `MODULE:factory()`: call the attribute to get the app.
    pub factory: bool,
    /// `MODULE:factory("prod", debug=True)`: the text between the parentheses, Python
    /// literals only, evaluated by the worker.
    #[serde(default)]
    pub args: Option<String>,
}

impl fmt::Display for AppSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.module, self.callable)?;
        if self.factory {
            write!(f, "({})", self.args.as_deref().unwrap_or(""))?;
        }
        Ok(())
    }
}

/// Which calling convention the app speaks (`--interface`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Interface {
    /// Decided by the worker at import: a coroutine function (or an object whose
    /// `__call__` is one) is ASGI, anything else WSGI.
    #[default]
    Auto,
    Wsgi,
    Asgi,
}

/// The asyncio event loop an ASGI worker runs (`--loop`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventLoop {
    /// uvloop when it is installed, else asyncio's own.
    #[default]
    Auto,
    Asyncio,
    Uvloop,
}

/// What a worker needs to know, passed from the supervisor at exec time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerSpec {
    /// Must equal the worker's own [`PROTOCOL`].
    pub protocol: u32,
    pub app: AppSpec,
    pub threads: usize,
    pub multiprocess: bool,
    pub chdir: Option<PathBuf>,
    pub pythonpath: Vec<PathBuf>,
    pub script_name: String,
    /// A Gunicorn configuration whose worker hooks to call (a path or `python:MODULE`),
    /// with what the hooks' `server` object tells (JSON: `workers`, `binds`).
    #[serde(default)]
    pub hooks: Option<WorkerHooks>,
    #[serde(default)]
    pub interface: Interface,
    #[serde(default)]
    pub event_loop: EventLoop,
    /// Requests an ASGI worker runs at once (its tasks); WSGI workers run `threads`.
    #[serde(default = "default_asgi_concurrency")]
    pub asgi_concurrency: usize,
}

fn default_asgi_concurrency() -> usize {
    100
}

/// Where the worker finds its Gunicorn hooks (see `porch.hooks`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerHooks {
    pub source: String,
    pub info: String,
}

impl WorkerSpec {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a spec always serializes")
    }

    /// Reads a spec, refusing one from another protocol version by name.
    pub fn from_json(s: &str) -> Result<WorkerSpec, String> {
        #[derive(Deserialize)]
        struct Version {
            protocol: u32,
        }
        let v: Version = serde_json::from_str(s).map_err(|e| e.to_string())?;
        if v.protocol != PROTOCOL {
            return Err(format!(
                "the front speaks protocol {}, this worker extension (porch {VERSION}) speaks {PROTOCOL}",
                v.protocol
            ));
        }
        serde_json::from_str(s).map_err(|e| e.to_string())
    }
}

/// What a worker says when it is ready: who it is, and what it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ready {
    pub pid: u32,
    pub protocol: u32,
    /// The app is ASGI (decided by `--interface`, or by the worker at import).
    pub asgi: bool,
    /// Requests the worker runs at once: its threads (WSGI) or tasks (ASGI). The front
    /// sends it that many, plus `--prefetch` ahead when every worker is busy.
    pub capacity: u32,
}

/// The payload of a `Ready` frame: pid, protocol version, interface, capacity.
pub fn ready_payload(pid: u32, asgi: bool, capacity: u32) -> [u8; 13] {
    let mut out = [0u8; 13];
    out[..4].copy_from_slice(&pid.to_le_bytes());
    out[4..8].copy_from_slice(&PROTOCOL.to_le_bytes());
    out[8] = asgi as u8;
    out[9..].copy_from_slice(&capacity.to_le_bytes());
    out
}

/// Reads a `Ready` payload. The protocol comes first after the pid in every version, so
/// a worker of another release is recognised as such even when the rest differs.
pub fn parse_ready(payload: &[u8]) -> Option<Ready> {
    let pid = u32::from_le_bytes(payload.get(..4)?.try_into().ok()?);
    let protocol = u32::from_le_bytes(payload.get(4..8)?.try_into().ok()?);
    let (asgi, capacity) = match payload.get(8..13) {
        Some(rest) => (rest[0] != 0, u32::from_le_bytes(rest[1..].try_into().ok()?)),
        None => (false, 0),
    };
    Some(Ready {
        pid,
        protocol,
        asgi,
        capacity,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> WorkerSpec {
        WorkerSpec {
            protocol: PROTOCOL,
            app: AppSpec {
                module: "pkg.mod".into(),
                callable: "create".into(),
                factory: true,
                args: None,
            },
            threads: 2,
            multiprocess: true,
            chdir: Some("/srv".into()),
            pythonpath: vec!["/a".into()],
            script_name: "/site".into(),
            hooks: None,
            interface: Interface::Asgi,
            event_loop: EventLoop::Uvloop,
            asgi_concurrency: 50,
        }
    }

    #[test]
    fn spec_round_trips_without_reparsing_the_app() {
        let s = spec();
        assert_eq!(WorkerSpec::from_json(&s.to_json()).unwrap(), s);
        assert_eq!(s.app.to_string(), "pkg.mod:create()");
    }

    #[test]
    fn another_protocol_is_refused_by_name() {
        let mut s = spec();
        s.protocol = PROTOCOL + 1;
        let err = WorkerSpec::from_json(&s.to_json()).unwrap_err();
        assert!(err.contains("protocol"), "{err}");
    }

    #[test]
    fn ready_round_trips() {
        let ready = Ready {
            pid: 42,
            protocol: PROTOCOL,
            asgi: true,
            capacity: 100,
        };
        assert_eq!(parse_ready(&ready_payload(42, true, 100)), Some(ready));
        assert_eq!(parse_ready(&[1, 2, 3]), None);
        // An older worker's short payload still shows its protocol.
        assert_eq!(
            parse_ready(&[1, 0, 0, 0, 3, 0, 0, 0]).map(|r| r.protocol),
            Some(3)
        );
    }
}
