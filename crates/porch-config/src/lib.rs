//! porch's one configuration model: command-line flags ([`cli`]), `PORCH_*` variables and
//! `porch.toml` become one validated [`Config`]. No Python and no sockets here: the same
//! checks serve `--check-config`, start-up and SIGHUP reloads.

pub mod cli;
mod config;

pub use config::*;
