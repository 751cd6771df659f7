//! The front: accepts connections, speaks HTTP with hyper, checks each request, and
//! either answers it itself (static files, proxy, redirects, health) or reads it whole
//! and queues it for a Python worker.
//!
//! How a request flows:
//! 1. `listener` accepts a connection (TLS in `tls`); for HTTP/1 every byte first passes
//!    the framing checks of `strict`, so hyper never parses what porch would refuse.
//! 2. `route` (on [`Front`]) counts it, answers a rejection `strict` sent in band,
//!    applies `admission` (sizes, Host, framing headers, rate limit) and picks the
//!    listener's route.
//! 3. The route acts: `static_files`, `proxy`, a redirect or fixed answer, or `app`,
//!    which reads the body whole (spilling to a file), queues a job for `dispatch`, and
//!    turns the worker's reply into the response.
//! 4. Errors anywhere are a [`reject::Rejection`]; `metrics` and `log` record the answer.
//!    `admin` serves `/healthz` and `/metrics` on a separate listener.

mod admin;
mod admission;
mod app;
pub mod body;
pub mod body_memory;
mod descriptors;
pub mod dispatch;
mod front;
mod held;
mod http_util;
pub mod listener;
pub mod log;
mod memory_budget;
mod metrics;
mod per_ip;
mod percent;
pub mod proxy;
pub mod reject;
mod route;
pub mod route_path;
mod sniff;
mod stall;
pub mod static_files;
pub mod strict;
pub mod tls;

pub use admin::serve_admin;
pub use front::Front;
pub use http_util::{protocol, request_host};
pub use listener::{Listener, Peer};
