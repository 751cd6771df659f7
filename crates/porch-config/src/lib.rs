//! porch's one configuration model: command-line flags ([`cli`]), `PORCH_*` variables and
//! `porch.toml` become one validated [`Config`]. No Python and no sockets here: the same
//! checks serve `--check-config`, start-up and SIGHUP reloads.
//!
//! Every error names the key, the value and what was expected; file errors also carry
//! the line.

// Only the user database lookups need `unsafe` (see `users`).
#![deny(unsafe_code)]

mod app;
mod bind;
mod build;
pub mod cli;
mod config;
mod cpus;
mod env;
mod error;
mod file;
mod forwarded;
pub mod gunicorn;
mod interface;
mod limits;
mod listener;
mod log;
mod process;
mod pyconfig;
mod python;
mod static_mount;
mod upstream;
mod upstream_addr;
#[allow(unsafe_code)]
mod users;
mod values;
pub mod worker_class;

pub use app::{parse_app, AppSpec};
pub use bind::BindAddr;
pub use config::Config;
pub use cpus::available_cpus;
pub use env::effective_args;
pub use error::ConfigError;
pub use file::{FileConfig, ListenerFile, RouteFile, TlsFile, UpstreamFile};
pub use forwarded::TrustedProxies;
pub use interface::{InterfaceArgs, InterfaceConfig, WebSocketConfig};
pub use limits::{Limits, RateLimit, DEFAULT_STATIC_CACHE_ENTRIES, DEFAULT_STATIC_CACHE_MEMORY};
pub use listener::{
    strip_port, CertKey, ListenerConfig, ProxyRoute, Route, RouteAction, TlsConfig,
};
pub use log::{AccessLogFormat, Atom, Piece};
pub use process::Process;
pub use pyconfig::{Hooks, DEFAULT_FILE as DEFAULT_PYTHON_CONFIG, FRONT_HOOKS, WORKER_HOOKS};
pub use python::resolve_python;
pub use static_mount::StaticMount;
pub use upstream::{Balance, HealthCheck, UpstreamConfig};
pub use upstream_addr::UpstreamAddr;
