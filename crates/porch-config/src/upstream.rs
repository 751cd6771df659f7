//! `[upstream.NAME]` pools for `proxy` routes: their servers and how porch treats them.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::file::Lines;
use crate::values::seconds;
use crate::{ConfigError, UpstreamAddr, UpstreamFile};

/// How an upstream pool spreads requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    RoundRobin,
    LeastConnections,
}

/// Active health checks of an upstream pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub path: String,
    pub interval: Duration,
}

/// A pool of upstream servers for `proxy` routes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamConfig {
    pub name: String,
    /// Never empty. A name resolving to several addresses counts as several servers.
    pub servers: Vec<UpstreamAddr>,
    pub balance: Balance,
    pub connect_timeout: Duration,
    /// Time to wait for the response head.
    pub header_timeout: Duration,
    /// Time a pooled keep-alive connection may stay unused. Keep it below the
    /// upstream's own keep-alive timeout (porch and Gunicorn: 5 s and 2 s), so porch
    /// never sends on a connection the server is closing.
    pub idle_timeout: Duration,
    /// Longest pause while reading a response body before porch gives up on it.
    pub read_timeout: Duration,
    /// Longest time a tunnel (after `101 Switching Protocols`) may carry no byte either
    /// way before porch closes both sides, as nginx's `proxy_read_timeout` does.
    pub tunnel_idle_timeout: Duration,
    /// Failures in a row that take a server out, and for how long.
    pub max_fails: u32,
    pub fail_timeout: Duration,
    pub health_check: Option<HealthCheck>,
    /// How often hostnames are resolved again.
    pub resolve_interval: Duration,
}

/// Every `[upstream.NAME]` table, errors placed on their line of the file.
pub(crate) fn upstreams(
    tables: BTreeMap<String, toml::Spanned<UpstreamFile>>,
    lines: &Lines,
) -> Result<Vec<UpstreamConfig>, ConfigError> {
    tables
        .into_iter()
        .map(|(name, spanned)| {
            let span = spanned.span();
            upstream(&name, spanned.into_inner()).map_err(|e| lines.at(span, e))
        })
        .collect()
}

fn upstream(name: &str, u: UpstreamFile) -> Result<UpstreamConfig, ConfigError> {
    let key = format!("upstream.{name}");
    let servers_key = format!("{key}.servers");
    if u.servers.is_empty() {
        return Err(ConfigError::value(
            &servers_key,
            "[]",
            "at least one HOST:PORT or unix:PATH",
        ));
    }
    let servers = u
        .servers
        .iter()
        .map(|s| UpstreamAddr::parse(&servers_key, s))
        .collect::<Result<Vec<_>, _>>()?;
    let balance = match u.balance.as_deref() {
        None | Some("round_robin") => Balance::RoundRobin,
        Some("least_conn") | Some("least_connections") => Balance::LeastConnections,
        Some(other) => {
            return Err(ConfigError::value(
                &format!("{key}.balance"),
                other,
                "round_robin or least_conn",
            ))
        }
    };
    let secs = |field: &str, v: Option<f64>, d: f64| seconds(&format!("{key}.{field}"), v, d);
    let health_check = match u.health_check_path {
        None => None,
        Some(path) if path.starts_with('/') => Some(HealthCheck {
            path,
            interval: secs("health_check_interval", u.health_check_interval, 5.0)?,
        }),
        Some(path) => {
            return Err(ConfigError::value(
                &format!("{key}.health_check_path"),
                path,
                "a URL path starting with '/'",
            ))
        }
    };
    Ok(UpstreamConfig {
        name: name.to_string(),
        servers,
        balance,
        connect_timeout: secs("connect_timeout", u.connect_timeout, 5.0)?,
        header_timeout: secs("header_timeout", u.header_timeout, 60.0)?,
        idle_timeout: secs("idle_timeout", u.idle_timeout, 4.0)?,
        read_timeout: secs("read_timeout", u.read_timeout, 60.0)?,
        tunnel_idle_timeout: secs("tunnel_idle_timeout", u.tunnel_idle_timeout, 60.0)?,
        max_fails: u.max_fails.unwrap_or(1),
        fail_timeout: secs("fail_timeout", u.fail_timeout, 10.0)?,
        health_check,
        resolve_interval: secs("resolve_interval", u.resolve_interval, 10.0)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FileConfig;

    fn build(toml: &str) -> Result<Vec<UpstreamConfig>, ConfigError> {
        let file = FileConfig::parse(toml).unwrap();
        upstreams(file.upstream, &Lines::new("porch.toml".into(), toml.into()))
    }

    #[test]
    fn servers_are_parsed_once_here() {
        let u = build("[upstream.web]\nservers = ['web:8000', '[::1]:81', 'unix:/run/a.sock']\n")
            .unwrap();
        assert_eq!(
            u[0].servers,
            [
                UpstreamAddr::Name {
                    host: "web".into(),
                    port: 8000
                },
                UpstreamAddr::Ip("[::1]:81".parse().unwrap()),
                UpstreamAddr::Unix("/run/a.sock".into()),
            ]
        );
    }

    #[test]
    fn a_bad_server_is_a_configuration_error_naming_key_value_and_line() {
        let e = build("\n[upstream.web]\nservers = ['10.0.0.5:80', '[x]:80']\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2"), "{e}");
        assert!(
            e.contains("`upstream.web.servers`") && e.contains("\"[x]:80\""),
            "{e}"
        );
        assert!(e.contains("HOST:PORT"), "{e}");
        let e = build("[upstream.web]\nservers = []\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`upstream.web.servers`"), "{e}");
    }
}
