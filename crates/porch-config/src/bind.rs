//! Listening addresses, in the forms Gunicorn command lines use.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use crate::ConfigError;

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
        let expected = "HOST:PORT, [::]:PORT or unix:PATH (e.g. 0.0.0.0:8000)";
        if let Ok(addr) = s.parse::<SocketAddr>() {
            return Ok(BindAddr::Tcp(addr));
        }
        // `localhost:8000` and a bare `:8000` are common in Gunicorn command lines.
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| ConfigError::value(key, s, expected))?;
        let port: u16 = port
            .parse()
            .map_err(|_| ConfigError::value(key, s, expected))?;
        let ip: IpAddr = match host {
            "" | "0.0.0.0" => IpAddr::from([0, 0, 0, 0]),
            "localhost" => IpAddr::from([127, 0, 0, 1]),
            _ => return Err(ConfigError::value(key, s, expected)),
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
        let err = BindAddr::parse("bind", "nonsense").unwrap_err().to_string();
        assert!(err.contains("`bind`") && err.contains("HOST:PORT"), "{err}");
    }
}
