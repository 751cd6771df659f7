//! Background upkeep of a pool: names resolved again, idle connections closed, active
//! health checks.

use std::sync::atomic::Ordering;
use std::sync::Weak;
use std::time::Duration;

use http::{header, HeaderValue, Method, Request};

use super::pool::{open, Pool, Server};
use super::ReqBody;

/// Runs while the pool exists: resolution every `resolve_interval`, idle connections
/// closed after `idle_timeout`.
pub(super) async fn upkeep(weak: Weak<Pool>) {
    let Some(pool) = weak.upgrade() else { return };
    let tick = pool
        .cfg
        .idle_timeout
        .min(pool.cfg.resolve_interval)
        .clamp(Duration::from_millis(100), Duration::from_secs(1));
    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_resolve = tokio::time::Instant::now();
    drop(pool);
    loop {
        ticker.tick().await;
        let Some(pool) = weak.upgrade() else { return };
        for s in pool.servers().iter() {
            s.reap_idle(pool.cfg.idle_timeout);
        }
        if pool.has_names() && last_resolve.elapsed() >= pool.cfg.resolve_interval {
            last_resolve = tokio::time::Instant::now();
            pool.resolve().await;
        }
    }
}

/// Runs while the pool exists: every server of the pool is checked each interval, all
/// at once. A check passes on a 2xx or 3xx answer within the header timeout.
pub(super) async fn checks(weak: Weak<Pool>) {
    let Some(hc) = weak.upgrade().and_then(|p| p.cfg.health_check.clone()) else {
        return;
    };
    let mut ticker = tokio::time::interval(hc.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Some(pool) = weak.upgrade() else { return };
        let servers = pool.servers();
        let checks = servers.iter().map(|s| {
            let pool = pool.clone();
            let path = hc.path.clone();
            async move {
                let result = check(&pool, s, &path).await;
                let was = s.healthy.swap(result.is_ok(), Ordering::Relaxed);
                match (was, result) {
                    (true, Err(why)) => tracing::warn!(
                        "upstream {}: server {} failed its health check ({why}); taken out",
                        pool.cfg.name,
                        s.target
                    ),
                    (false, Ok(())) => tracing::info!(
                        "upstream {}: server {} passed its health check; back in rotation",
                        pool.cfg.name,
                        s.target
                    ),
                    _ => {}
                }
            }
        });
        futures_util::future::join_all(checks).await;
    }
}

async fn check(pool: &Pool, server: &Server, path: &str) -> Result<(), String> {
    let cfg = &pool.cfg;
    let mut sender = open(&server.target, cfg.connect_timeout)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let mut req = Request::new(ReqBody::Empty);
    *req.method_mut() = Method::GET;
    *req.uri_mut() = path.parse().map_err(|e| format!("bad path: {e}"))?;
    let h = req.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&server.check_host) {
        h.insert(header::HOST, v);
    }
    h.insert(
        header::USER_AGENT,
        HeaderValue::from_static("porch-health-check"),
    );
    h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    let wait = cfg
        .header_timeout
        .min(
            cfg.health_check
                .as_ref()
                .map_or(cfg.header_timeout, |h| h.interval),
        )
        .max(Duration::from_millis(500));
    let resp = tokio::time::timeout(wait, sender.send_request(req))
        .await
        .map_err(|_| "no answer in time".to_string())?
        .map_err(|e| e.to_string())?;
    let status = resp.status();
    if status.is_success() || status.is_redirection() {
        Ok(())
    } else {
        Err(format!("status {}", status.as_u16()))
    }
}
