//! Listening addresses, in the forms Gunicorn command lines use.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use crate::ConfigError;

/// Gunicorn's port for a bind with none (`-b 0.0.0.0`).
const DEFAULT_PORT: u16 = 8000;

/// A listening address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindAddr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl BindAddr {
    pub fn parse(key: &str, s: &str) -> Result<BindAddr, ConfigError> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(ConfigError::value(key, s, "unix:PATH with a socket path"));
            }
            return Ok(BindAddr::Unix(path.into()));
        }
        let expected = "HOST:PORT, HOST, [::]:PORT or unix:PATH (e.g. 0.0.0.0:8000)";
        if let Ok(addr) = s.parse::<SocketAddr>() {
            return Ok(BindAddr::Tcp(addr));
        }
        // A host alone gets Gunicorn's default port, 8000.
        let (host, port) = match s.rsplit_once(':') {
            Some((h, p))
                if !h.ends_with(':') && !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) =>
            {
                let port: u16 = p
                    .parse()
                    .map_err(|_| ConfigError::value(key, s, expected))?;
                (h, port)
            }
            _ => (s, DEFAULT_PORT),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let ip: IpAddr = match host {
            // `:8000` is common in Gunicorn command lines.
            "" | "0.0.0.0" => IpAddr::from([0, 0, 0, 0]),
            "localhost" => IpAddr::from([127, 0, 0, 1]),
            _ => match host.parse::<IpAddr>() {
                Ok(ip) => ip,
                // A name (`web`, `myhost.internal`): its first address, as Gunicorn binds.
                Err(_) => (host, port)
                    .to_socket_addrs()
                    .ok()
                    .and_then(|mut a| a.next())
                    .map(|a| a.ip())
                    .ok_or_else(|| ConfigError::value(key, s, expected))?,
            },
        };
        Ok(BindAddr::Tcp(SocketAddr::new(ip, port)))
    }
}

impl std::fmt::Display for BindAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BindAddr::Tcp(a) => write!(f, "http://{a}"),
            BindAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds() {
        assert_eq!(
            BindAddr::parse("bind", "[::]:80").unwrap(),
            BindAddr::Tcp("[::]:80".parse().unwrap())
        );
        assert_eq!(
            BindAddr::parse("bind", ":8000").unwrap(),
            BindAddr::Tcp("0.0.0.0:8000".parse().unwrap())
        );
        assert_eq!(
            BindAddr::parse("bind", "unix:/run/p.sock").unwrap(),
            BindAddr::Unix("/run/p.sock".into())
        );
        for (host_only, addr) in [
            ("0.0.0.0", "0.0.0.0:8000"),
            ("127.0.0.1", "127.0.0.1:8000"),
            ("[::]", "[::]:8000"),
            ("::1", "[::1]:8000"),
            ("localhost", "127.0.0.1:8000"),
        ] {
            assert_eq!(
                BindAddr::parse("bind", host_only).unwrap(),
                BindAddr::Tcp(addr.parse().unwrap()),
                "{host_only}"
            );
        }
        let err = BindAddr::parse("bind", "no-such-host.invalid:80")
            .unwrap_err()
            .to_string();
        assert!(err.contains("`bind`") && err.contains("HOST:PORT"), "{err}");
    }
}
