//! Bounds on what clients may send and how fast, so one client cannot exhaust the
//! memory, connections or workers every other client needs.

use crate::cli::Args;
use crate::values::{count_or_max, positive};

/// What `0` ("unlimited" in Gunicorn) means for the request line and a header field:
/// 1 MiB, far past anything a browser or client library sends.
pub(crate) const UNLIMITED_HEAD_PART: usize = 1 << 20;
use crate::{ConfigError, FileConfig};

/// Request-body bytes the front holds in memory by default, across all bodies: 64
/// uploads of 1 MiB in flight at once, then temporary files.
pub const DEFAULT_BODY_MEMORY_TOTAL: usize = 64 << 20;
const MAX_BODY_MEMORY: usize = 32 << 20;
/// Files the static-file cache keeps by default, in all mounts.
pub const DEFAULT_STATIC_CACHE_ENTRIES: usize = 4096;
/// Bytes of file contents the static-file cache keeps by default, in all mounts.
pub const DEFAULT_STATIC_CACHE_MEMORY: usize = 32 << 20;
const MAX_STATIC_CACHE_ENTRIES: usize = 1 << 24;
const MAX_STATIC_CACHE_MEMORY: usize = 1 << 40;

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
    /// The same bound across all request bodies in the front.
    pub body_memory_total: usize,
    /// Response bytes one response may hold in memory while its client is slower than
    /// the app; more go to a temporary file.
    pub response_memory: usize,
    /// The same bound across all responses in the front.
    pub response_memory_total: usize,
    /// Requests waiting for a worker before porch answers 503.
    pub backlog: usize,
    /// Open client connections per listener; more wait in the kernel's accept queue.
    pub connections: usize,
    /// Open connections per client IP; more are answered 429 and closed. 0 = no limit.
    pub connections_per_ip: usize,
    /// TLS handshakes in progress per client IP; more are closed at once. 0 = no limit.
    pub handshakes_per_ip: usize,
    /// Static files whose answers and bytes are kept in memory (0: no cache).
    pub static_cache_entries: usize,
    /// Bytes of static file contents kept in memory (0: no cache).
    pub static_cache_memory: usize,
}

pub(crate) fn limits(args: &Args, file: &FileConfig) -> Result<Limits, ConfigError> {
    let limits = Limits {
        request_line: count_or_max(
            "limit_request_line",
            args.limit_request_line.or(file.limit_request_line),
            4094,
            UNLIMITED_HEAD_PART,
        )?,
        request_fields: count_or_max(
            "limit_request_fields",
            args.limit_request_fields.or(file.limit_request_fields),
            100,
            32768,
        )?,
        request_field_size: count_or_max(
            "limit_request_field_size",
            args.limit_request_field_size
                .or(file.limit_request_field_size),
            8190,
            UNLIMITED_HEAD_PART,
        )?,
        request_body: args
            .limit_request_body
            .or(file.limit_request_body)
            .unwrap_or(1 << 30),
        body_memory: file.body_memory.unwrap_or(1 << 20),
        body_memory_total: file.body_memory_total.unwrap_or(DEFAULT_BODY_MEMORY_TOTAL),
        response_memory: positive("response_memory", file.response_memory, 1 << 20)?,
        response_memory_total: positive(
            "response_memory_total",
            file.response_memory_total,
            256 << 20,
        )?,
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
        handshakes_per_ip: file.limit_handshakes_per_ip.unwrap_or(32),
        static_cache_entries: file
            .static_cache_entries
            .unwrap_or(DEFAULT_STATIC_CACHE_ENTRIES),
        static_cache_memory: file
            .static_cache_memory
            .unwrap_or(DEFAULT_STATIC_CACHE_MEMORY),
    };
    // An in-memory body travels to its worker in one frame, which has a size limit.
    if limits.body_memory > MAX_BODY_MEMORY {
        return Err(ConfigError::value(
            "body_memory",
            limits.body_memory,
            "a size in bytes up to 32 MiB (33554432); larger bodies go to a temporary file",
        ));
    }
    if limits.static_cache_entries > MAX_STATIC_CACHE_ENTRIES {
        return Err(ConfigError::value(
            "static_cache_entries",
            limits.static_cache_entries,
            "a number of files up to 16777216, or 0 to turn the static-file cache off",
        ));
    }
    if limits.static_cache_memory > MAX_STATIC_CACHE_MEMORY {
        return Err(ConfigError::value(
            "static_cache_memory",
            limits.static_cache_memory,
            "a size in bytes up to 1 TiB (1099511627776), or 0 to turn the static-file cache off",
        ));
    }
    if limits.request_fields > 32768 {
        return Err(ConfigError::value(
            "limit_request_fields",
            limits.request_fields,
            "at most 32768",
        ));
    }
    Ok(limits)
}

/// `None` without `limit_rate`; the burst defaults to one second's worth.
pub(crate) fn rate_limit(args: &Args, file: &FileConfig) -> Result<Option<RateLimit>, ConfigError> {
    match args.limit_rate.or(file.limit_rate) {
        None => Ok(None),
        Some(r) if r.is_finite() && r > 0.0 => Ok(Some(RateLimit {
            per_second: r,
            burst: args
                .limit_burst
                .or(file.limit_burst)
                .unwrap_or((r.ceil() as u32).max(1))
                .max(1),
        })),
        Some(r) => Err(ConfigError::value(
            "limit_rate",
            r,
            "a positive number of requests per second",
        )),
    }
}
