//! Prometheus text for the upstream pools.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use super::Upstreams;

impl Upstreams {
    /// Prometheus text for every pool's servers: up, active, requests, failures, idle
    /// connections.
    pub fn metrics(&self) -> String {
        let mut out = String::new();
        if self.pools.is_empty() {
            return out;
        }
        let now = std::time::Instant::now();
        let mut sections: [(&str, &str, String); 5] = [
            ("porch_upstream_up", "gauge", String::new()),
            ("porch_upstream_active", "gauge", String::new()),
            ("porch_upstream_requests_total", "counter", String::new()),
            ("porch_upstream_failures_total", "counter", String::new()),
            ("porch_upstream_idle_connections", "gauge", String::new()),
        ];
        for name in &self.order {
            let Some(pool) = self.pools.get(name) else {
                continue;
            };
            for s in pool.servers().iter() {
                let labels = format!(
                    "upstream=\"{}\",server=\"{}\"",
                    escape_label(name),
                    escape_label(&s.target.to_string())
                );
                let values = [
                    u64::from(s.available(now)),
                    s.active.load(Ordering::Relaxed) as u64,
                    s.requests.load(Ordering::Relaxed),
                    s.failures.load(Ordering::Relaxed),
                    s.idle_count() as u64,
                ];
                for ((metric, _, text), v) in sections.iter_mut().zip(values) {
                    let _ = writeln!(text, "{metric}{{{labels}}} {v}");
                }
            }
        }
        for (metric, kind, text) in sections {
            let _ = writeln!(out, "# TYPE {metric} {kind}");
            out.push_str(&text);
        }
        out
    }
}

fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use porch_config::UpstreamConfig;
    use std::time::Duration;

    #[test]
    fn metrics_name_each_server() {
        let cfg = UpstreamConfig {
            name: "web".into(),
            servers: vec![
                "127.0.0.1:1".parse().unwrap(),
                "unix:/tmp/x.sock".parse().unwrap(),
            ],
            balance: porch_config::Balance::RoundRobin,
            connect_timeout: Duration::from_secs(1),
            header_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
            read_timeout: Duration::from_secs(1),
            tunnel_idle_timeout: Duration::from_secs(60),
            max_fails: 1,
            fail_timeout: Duration::from_secs(10),
            health_check: None,
            resolve_interval: Duration::from_secs(10),
        };
        let u = Upstreams::new(&[cfg]).unwrap();
        let m = u.metrics();
        assert!(m.contains("# TYPE porch_upstream_up gauge\n"), "{m}");
        assert!(
            m.contains("porch_upstream_up{upstream=\"web\",server=\"127.0.0.1:1\"} 1\n"),
            "{m}"
        );
        assert!(m.contains(
            "porch_upstream_requests_total{upstream=\"web\",server=\"unix:/tmp/x.sock\"} 0\n"
        ));
        assert!(Upstreams::new(&[]).unwrap().metrics().is_empty());
    }
}
