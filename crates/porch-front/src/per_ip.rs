//! Per-client-IP counts of connections, with a limit.

use std::sync::Arc;

use crate::Peer;

/// Connections per client IP in some state: open (`limit_connections_per_ip`), or in
/// their TLS handshake (`limit_handshakes_per_ip`, so one address refilling half-done
/// handshakes cannot hold a listener's connection slots).
pub struct PerIp {
    limit: usize,
    open: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
}

impl PerIp {
    pub fn new(limit: usize) -> Arc<PerIp> {
        Arc::new(PerIp {
            limit,
            open: Default::default(),
        })
    }

    /// Counts the connection, or refuses it when its IP already has `limit` open.
    pub(crate) fn admit(self: &Arc<Self>, peer: Peer) -> Result<Option<PerIpGuard>, ()> {
        let (Some(remote), true) = (peer.remote, self.limit > 0) else {
            return Ok(None);
        };
        let ip = remote.ip();
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(ip).or_insert(0);
        if *n >= self.limit {
            return Err(());
        }
        *n += 1;
        Ok(Some(PerIpGuard {
            table: self.clone(),
            ip,
        }))
    }
}

pub struct PerIpGuard {
    table: Arc<PerIp>,
    ip: std::net::IpAddr,
}

impl Drop for PerIpGuard {
    fn drop(&mut self) {
        let mut open = self.table.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}
