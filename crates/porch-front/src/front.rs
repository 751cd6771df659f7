//! The state every connection of every listener shares.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::admission::{rate_limiter, RateLimiter};
use crate::body_memory::BodyMemory;
use crate::descriptors::Descriptors;
use crate::dispatch::{Job, QueueStats, ResponseMemory, WorkerStats};
use crate::log::AccessLog;
use crate::metrics::Metrics;
use crate::per_ip::PerIp;
use crate::proxy::Upstreams;
use porch_config::Config;

/// One per process; `serve` (listener.rs) runs it on each listening socket.
pub struct Front {
    pub(crate) cfg: Arc<Config>,
    pub(crate) queue: async_channel::Sender<Job>,
    pub(crate) access_log: Option<Arc<AccessLog>>,
    pub(crate) metrics: Metrics,
    /// False while draining: /healthz answers 503 so load balancers stop sending.
    pub ready: AtomicBool,
    pub(crate) workers: Option<Arc<WorkerStats>>,
    pub(crate) upstreams: Upstreams,
    pub(crate) rate_limiter: Option<RateLimiter>,
    pub(crate) per_ip: Arc<PerIp>,
    /// TLS handshakes in progress per client IP.
    pub(crate) handshakes: Arc<PerIp>,
    pub(crate) spill_dir: PathBuf,
    /// Bounds the worker replies waiting for slow clients.
    pub(crate) response_memory: Arc<ResponseMemory>,
    /// Bounds the request bodies held in memory until their workers take them.
    pub(crate) body_memory: Arc<BodyMemory>,
    pub(crate) descriptors: Arc<Descriptors>,
}

impl Front {
    pub fn new(
        cfg: Arc<Config>,
        queue: async_channel::Sender<Job>,
        workers: Option<Arc<WorkerStats>>,
        queue_stats: Arc<QueueStats>,
    ) -> std::io::Result<Arc<Front>> {
        let access_log = match &cfg.access_log {
            Some(t) => Some(AccessLog::open(t, cfg.access_log_format.clone())?),
            None => None,
        };
        let spill_dir = std::env::temp_dir();
        crate::static_files::configure_cache(crate::static_files::CacheLimits {
            entries: cfg.limits.static_cache_entries,
            memory: cfg.limits.static_cache_memory,
        });
        Ok(Arc::new(Front {
            cfg: cfg.clone(),
            queue,
            access_log,
            metrics: Metrics::new(queue_stats),
            ready: AtomicBool::new(true),
            workers,
            upstreams: Upstreams::new(&cfg.upstreams)?,
            rate_limiter: cfg.rate_limit.as_ref().map(rate_limiter),
            per_ip: PerIp::new(cfg.limits.connections_per_ip),
            handshakes: PerIp::new(cfg.limits.handshakes_per_ip),
            response_memory: ResponseMemory::new(
                cfg.limits.response_memory,
                cfg.limits.response_memory_total,
                spill_dir.clone(),
            ),
            body_memory: BodyMemory::new(cfg.limits.body_memory, cfg.limits.body_memory_total),
            spill_dir,
            descriptors: Descriptors::new(),
        }))
    }
}
