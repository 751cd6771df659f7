//! The one grammar for an upstream server's address. It is checked while the
//! configuration is read, and the proxy only ever sees the parsed value, so
//! `--check-config` and start-up cannot disagree about what is valid.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;

use crate::ConfigError;

/// The forms, for error messages.
const FORMS: &str = "HOST:PORT, [IPv6]:PORT or unix:PATH, e.g. 10.0.0.5:8000, web:8000, \
                     [::1]:8000 or unix:/run/app.sock";

const PORT_RANGE: &str = "a port from 1 to 65535";

/// One entry of an upstream's `servers`, already checked.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum UpstreamAddr {
    /// An IP address and port (`10.0.0.5:8000`, `[::1]:8000`): exactly one server.
    Ip(SocketAddr),
    /// A host name and port (`web:8000`): resolved at start-up and again every
    /// `resolve_interval`, each address it resolves to being a server. Kept as written,
    /// since it is also the `Host` of active health checks.
    Name { host: String, port: u16 },
    /// `unix:PATH`: a Unix socket.
    Unix(PathBuf),
}

impl UpstreamAddr {
    /// Reads one entry; `key` (e.g. `upstream.web.servers`) names it in errors.
    pub fn parse(key: &str, s: &str) -> Result<UpstreamAddr, ConfigError> {
        let bad = |why: &str| ConfigError::value(key, s, &format!("{why}: {FORMS}"));
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(bad("a socket path after `unix:`"));
            }
            return Ok(UpstreamAddr::Unix(path.into()));
        }
        if s.contains("://") {
            return Err(bad("an address without a scheme"));
        }
        if let Ok(a) = s.parse::<SocketAddr>() {
            if a.port() == 0 {
                return Err(bad(PORT_RANGE));
            }
            return Ok(UpstreamAddr::Ip(a));
        }
        // Not an IP literal with a valid port: find out which part is wrong.
        if let Some(rest) = s.strip_prefix('[') {
            let (inside, after) = rest
                .split_once(']')
                .ok_or_else(|| bad("a `]` closing the IPv6 address"))?;
            let ip = inside.split_once('%').map_or(inside, |(ip, _scope)| ip);
            if ip.parse::<Ipv6Addr>().is_err() {
                return Err(bad("an IPv6 address between `[` and `]`"));
            }
            let p = after
                .strip_prefix(':')
                .ok_or_else(|| bad("a port after the `]`"))?;
            port(p).map_err(bad)?;
            // Only a scope id SocketAddr does not read can still be wrong here.
            return Err(bad("a numeric scope id after `%`"));
        }
        let (host, p) = s.rsplit_once(':').ok_or_else(|| bad("a port"))?;
        if host.contains(':') {
            return Err(bad("brackets around an IPv6 address"));
        }
        if host.is_empty() {
            return Err(bad("a host before the `:`"));
        }
        let port = port(p).map_err(bad)?;
        host_name(host).map_err(bad)?;
        Ok(UpstreamAddr::Name {
            host: host.to_string(),
            port,
        })
    }
}

/// A port from 1 to 65535, in plain digits (`u16::from_str` also takes `+80`).
fn port(p: &str) -> Result<u16, &'static str> {
    if p.is_empty() {
        return Err("a port after the `:`");
    }
    match p.parse::<u16>() {
        Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
        _ => Err(PORT_RANGE),
    }
}

/// A name the resolver can look up. Refused here rather than failing to resolve forever
/// after start-up: characters no host name has, empty labels, and dotted numbers that
/// are not an IPv4 address (`10.0.0.256`).
fn host_name(host: &str) -> Result<(), &'static str> {
    let name = host.strip_suffix('.').unwrap_or(host);
    let labels_ok = name.split('.').all(|label| {
        !label.is_empty()
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    });
    if !labels_ok {
        return Err("a host name (letters, digits, `-`, `_` and `.`), an IPv4 address or [IPv6]");
    }
    let last = name.rsplit('.').next().unwrap_or(name);
    if last.bytes().all(|b| b.is_ascii_digit()) && name.parse::<Ipv4Addr>().is_err() {
        return Err("an IPv4 address of four numbers from 0 to 255");
    }
    Ok(())
}

/// The canonical form: what `parse` reads back to the same value.
impl fmt::Display for UpstreamAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpstreamAddr::Ip(a) => write!(f, "{a}"),
            UpstreamAddr::Name { host, port } => write!(f, "{host}:{port}"),
            UpstreamAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// For code and tests that build an [`crate::UpstreamConfig`] by hand; errors name the
/// key `servers`.
impl FromStr for UpstreamAddr {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<UpstreamAddr, ConfigError> {
        UpstreamAddr::parse("servers", s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> UpstreamAddr {
        UpstreamAddr::parse("upstream.web.servers", s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn err(s: &str) -> String {
        match UpstreamAddr::parse("upstream.web.servers", s) {
            Ok(a) => panic!("{s:?} must be refused, got {a:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn the_accepted_forms() {
        assert_eq!(
            ok("127.0.0.1:80"),
            UpstreamAddr::Ip("127.0.0.1:80".parse().unwrap())
        );
        assert_eq!(
            ok("[::1]:80"),
            UpstreamAddr::Ip("[::1]:80".parse().unwrap())
        );
        assert_eq!(
            ok("unix:/run/a.sock"),
            UpstreamAddr::Unix("/run/a.sock".into())
        );
        assert_eq!(
            ok("web:8000"),
            UpstreamAddr::Name {
                host: "web".into(),
                port: 8000
            }
        );
        for name in [
            "localhost:65535",
            "my_app-1.internal:80",
            "example.com.:443",
            "Web:80",
        ] {
            assert!(matches!(ok(name), UpstreamAddr::Name { .. }), "{name}");
        }
        for canonical in ["127.0.0.1:80", "[::1]:80", "web:8000", "unix:/run/a.sock"] {
            assert_eq!(ok(canonical).to_string(), canonical);
        }
        assert_eq!(ok("web:080").to_string(), "web:80");
    }

    #[test]
    fn a_bracketed_host_must_be_an_ipv6_address_with_a_port() {
        let e = err("[x]:80");
        assert!(
            e.contains("`upstream.web.servers`") && e.contains("\"[x]:80\"") && e.contains("IPv6"),
            "{e}"
        );
        assert!(
            e.contains("HOST:PORT"),
            "the message names the expected form: {e}"
        );
        assert!(err("[::1]").contains("a port after the `]`"));
        assert!(err("[::1]:").contains("a port after the `:`"));
        assert!(err("[::1]80").contains("a port after the `]`"));
        assert!(err("[::1:80").contains("closing"));
        assert!(err("[]:80").contains("IPv6"));
        assert!(err("[127.0.0.1]:80").contains("IPv6"));
        assert!(err("[web]:80").contains("IPv6"));
        assert!(err("[::1]:0").contains("1 to 65535"));
    }

    #[test]
    fn ports_hosts_and_paths_that_cannot_work_are_refused() {
        for (bad, why) in [
            ("web", "a port"),
            ("10.0.0.5", "a port"),
            ("web:", "a port after"),
            (":80", "a host before"),
            ("web:0", "1 to 65535"),
            ("web:65536", "1 to 65535"),
            ("web:+80", "1 to 65535"),
            ("web:x", "1 to 65535"),
            ("127.0.0.1:0", "1 to 65535"),
            ("127.0.0.1:99999", "1 to 65535"),
            ("::1", "brackets"),
            ("::1:80", "brackets"),
            ("a/b:80", "host name"),
            ("a b:80", "host name"),
            ("a..b:80", "host name"),
            (".web:80", "host name"),
            ("10.0.0.256:80", "IPv4"),
            ("http://web:80", "scheme"),
            ("unix:", "socket path"),
            ("", "a port"),
        ] {
            let e = err(bad);
            assert!(e.contains(why), "{bad:?}: {e}");
            assert!(e.contains("`upstream.web.servers`"), "{bad:?}: {e}");
        }
    }
}
