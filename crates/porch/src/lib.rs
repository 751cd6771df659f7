//! porch: one binary in front of and around a Python WSGI app.
//!
//! Layout, in the order a request meets it:
//! - [`cli`] and [`config`]: flags, `PORCH_*` variables and `porch.toml` become one
//!   validated [`config::Config`].
//! - [`front`]: listeners, HTTP with hyper, request checks, static files, the admin
//!   listener; app requests are read whole before anything else happens.
//! - [`dispatch`]: the bounded queue of ready requests and the link feeding each worker.
//! - [`ipc`]: the compact frames between the front and its workers.
//! - [`supervisor`]: starts, watches, replaces, recycles and reloads worker processes.
//! - [`worker`] and [`wsgi`]: the worker process embedding CPython and the PEP 3333 bridge.
//! - [`server`]: wires the above together and handles signals.

// A rejected request is answered with a whole `Response` on a cold path; boxing it would
// only add an allocation.
#![allow(clippy::result_large_err)]

pub mod cli;
pub mod config;
pub mod dispatch;
pub mod front;
pub mod ipc;
pub mod server;
pub mod supervisor;
pub mod worker;
pub mod wsgi;
