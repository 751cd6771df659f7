//! Listeners and their routes: what porch answers on each address, by host and path.
//! Flags give one shape (the app at `/`, `--static` mounts beside it); `[[listener]]`
//! tables in porch.toml give any other.

use std::path::PathBuf;

use serde::Deserialize;

use crate::file::Lines;
use crate::{BindAddr, ConfigError, ListenerFile, RouteFile, StaticMount, TlsFile, UpstreamConfig};

/// What a route does with the requests it matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteAction {
    /// Run the WSGI app.
    App,
    /// Serve files from a folder.
    Static(StaticMount),
    /// Forward to an upstream pool.
    Proxy(ProxyRoute),
    /// Answer with a redirect to this fixed URL (the request path is not appended).
    Redirect { to: String, status: u16 },
    /// Answer with a fixed status and body.
    Return { status: u16, body: String },
}

/// A `proxy = "NAME"` route: the `[upstream.NAME]` pool it forwards to, and the
/// protocols a client may switch to through it (`upgrades`, `["websocket"]` unless set).
/// An `Upgrade` naming no allowed protocol is not forwarded: the request goes on as plain
/// HTTP, as behind nginx unless it is told to pass `Upgrade` on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyRoute {
    upstream: String,
    /// Lower-case protocol names, without versions.
    upgrades: Vec<String>,
}

impl ProxyRoute {
    /// `upgrades`: `None` for the default (`websocket`). Each name must be a token.
    pub fn new(
        key: &str,
        upstream: String,
        upgrades: Option<Vec<String>>,
    ) -> Result<ProxyRoute, ConfigError> {
        let upgrades = upgrades.unwrap_or_else(|| vec!["websocket".into()]);
        for u in &upgrades {
            let token = !u.is_empty()
                && u.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            if !token {
                return Err(ConfigError::value(
                    &format!("{key}.upgrades"),
                    u,
                    "protocol names such as \"websocket\" (no version, no spaces or '/')",
                ));
            }
        }
        Ok(ProxyRoute {
            upstream,
            upgrades: upgrades.iter().map(|u| u.to_ascii_lowercase()).collect(),
        })
    }

    /// The name of the upstream pool.
    pub fn upstream(&self) -> &str {
        &self.upstream
    }

    /// Whether a client may switch to `protocol` (an `Upgrade` entry, `NAME[/VERSION]`).
    pub fn allows_upgrade(&self, protocol: &str) -> bool {
        let name = protocol.split('/').next().unwrap_or("").trim();
        self.upgrades.iter().any(|u| u.eq_ignore_ascii_case(name))
    }
}

/// A route: requests whose host matches (any host when `None`) and whose path starts
/// with `prefix`. The longest matching prefix wins; a route naming the host wins a tie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub host: Option<String>,
    pub prefix: String,
    pub action: RouteAction,
}

/// A certificate and its private key, PEM files.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertKey {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// TLS on a listener: one or more certificates (chosen by SNI), HTTP/2 offered by ALPN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    pub certs: Vec<CertKey>,
    /// `Strict-Transport-Security` max-age to send on TLS responses; `None` sends none.
    pub hsts_max_age: Option<u64>,
}

/// One listening address with its routes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerConfig {
    pub bind: BindAddr,
    pub tls: Option<TlsConfig>,
    /// Accept cleartext HTTP/2 with prior knowledge (for a trusted load balancer in front).
    pub h2c: bool,
    /// Answer every request with a redirect to this HTTPS port (plain listeners only).
    pub redirect_https: Option<u16>,
    pub routes: Vec<Route>,
}

impl ListenerConfig {
    /// The route for a request, by host and longest path prefix.
    pub fn route(&self, host: Option<&str>, path: &str) -> Option<&Route> {
        let host = host.map(strip_port);
        self.routes
            .iter()
            .filter(|r| path.starts_with(&r.prefix) || path == r.prefix.trim_end_matches('/'))
            .filter(|r| match (&r.host, host) {
                (None, _) => true,
                (Some(want), Some(got)) => want.eq_ignore_ascii_case(got),
                (Some(_), None) => false,
            })
            .max_by_key(|r| (r.prefix.len(), r.host.is_some()))
    }
}

/// `example.com:8080` → `example.com`, `[::1]:8080` → `[::1]`.
pub fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |i| &host[..=i]);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

/// The Gunicorn shape: every bind serves the `--static` mounts and the app at `/`.
pub(crate) fn flag_listeners(
    binds: &[BindAddr],
    statics: &[StaticMount],
    has_app: bool,
    tls: Option<TlsConfig>,
) -> Result<Vec<ListenerConfig>, ConfigError> {
    let mut routes: Vec<Route> = statics
        .iter()
        .map(|m| Route {
            host: None,
            prefix: m.prefix.clone(),
            action: RouteAction::Static(m.clone()),
        })
        .collect();
    if !has_app {
        return Err(ConfigError::Missing {
            key: "app",
            hint: "give the WSGI app as MODULE:CALLABLE, e.g. `porch mysite.wsgi:application`",
        });
    }
    routes.push(Route {
        host: None,
        prefix: "/".into(),
        action: RouteAction::App,
    });
    Ok(binds
        .iter()
        .map(|b| ListenerConfig {
            bind: b.clone(),
            tls: tls.clone(),
            h2c: false,
            redirect_https: None,
            routes: routes.clone(),
        })
        .collect())
}

/// `[[listener]]` tables; routes may only name the app when there is one, and only
/// upstreams that exist.
pub(crate) fn file_listeners(
    tables: Vec<toml::Spanned<ListenerFile>>,
    has_app: bool,
    upstreams: &[UpstreamConfig],
    lines: &Lines,
) -> Result<Vec<ListenerConfig>, ConfigError> {
    let mut out = Vec::new();
    for (i, spanned) in tables.into_iter().enumerate() {
        let span = spanned.span();
        let l = spanned.into_inner();
        let key = format!("listener[{i}]");
        let bind = BindAddr::parse(&format!("{key}.bind"), &l.bind)
            .map_err(|e| lines.at(span.clone(), e))?;
        let tls = l
            .tls
            .map(|t| tls(&key, t))
            .transpose()
            .map_err(|e| lines.at(span.clone(), e))?;
        let mut routes = Vec::new();
        for (j, r) in l.route.into_iter().enumerate() {
            let rspan = r.span();
            let rkey = format!("{key}.route[{j}]");
            let route = checked_route(&rkey, r.into_inner(), has_app, upstreams)
                .map_err(|e| lines.at(rspan, e))?;
            routes.push(route);
        }
        if routes.is_empty() {
            return Err(lines.at(
                span,
                ConfigError::Missing {
                    key: "listener.route",
                    hint: "each [[listener]] needs at least one [[listener.route]]",
                },
            ));
        }
        out.push(ListenerConfig {
            bind,
            tls,
            h2c: l.h2c,
            redirect_https: l.redirect_https,
            routes,
        });
    }
    Ok(out)
}

/// `cert`/`key` shorthand first, then `certs`: the first certificate is the default
/// when SNI matches none.
fn tls(key: &str, t: TlsFile) -> Result<TlsConfig, ConfigError> {
    let mut certs = t.certs;
    match (t.cert, t.key) {
        (Some(cert), Some(key)) => certs.insert(0, CertKey { cert, key }),
        (None, None) => {}
        _ => {
            return Err(ConfigError::value(
                &format!("{key}.tls"),
                "cert without key",
                "both `cert` and `key` PEM paths",
            ))
        }
    }
    if certs.is_empty() {
        return Err(ConfigError::value(
            &format!("{key}.tls"),
            "{}",
            "`cert` and `key`, or `certs = [{ cert, key }, ...]`",
        ));
    }
    Ok(TlsConfig {
        certs,
        hsts_max_age: t.hsts_max_age,
    })
}

/// A route whose action can run with this configuration.
fn checked_route(
    key: &str,
    r: RouteFile,
    has_app: bool,
    upstreams: &[UpstreamConfig],
) -> Result<Route, ConfigError> {
    let route = route(key, r)?;
    match &route.action {
        RouteAction::App if !has_app => Err(ConfigError::Missing {
            key: "app",
            hint: "a route uses `app = true`: give the WSGI app as MODULE:CALLABLE or `app = \"module:callable\"` at the top of porch.toml",
        }),
        RouteAction::Proxy(p) if !upstreams.iter().any(|u| u.name == p.upstream()) => {
            Err(ConfigError::value(
                &format!("{key}.proxy"),
                p.upstream(),
                "the name of an [upstream.NAME] table",
            ))
        }
        _ => Ok(route),
    }
}

fn route(key: &str, r: RouteFile) -> Result<Route, ConfigError> {
    let prefix = r.path.unwrap_or_else(|| "/".into());
    if !prefix.starts_with('/') {
        return Err(ConfigError::value(
            &format!("{key}.path"),
            &prefix,
            "a URL path prefix starting with '/'",
        ));
    }
    let mut actions = Vec::new();
    if r.app == Some(true) {
        actions.push(RouteAction::App);
    }
    if let Some(dir) = &r.static_dir {
        let mut mount = StaticMount::new(&format!("{key}.static"), &prefix, dir)?;
        mount.cache_control = r.cache_control.clone();
        mount.index = r.index.clone();
        mount.allow_dotfiles = r.allow_dotfiles.unwrap_or(false);
        mount.internal = r.internal.unwrap_or(false);
        mount.validate(key)?;
        actions.push(RouteAction::Static(mount));
    } else if r.cache_control.is_some()
        || r.index.is_some()
        || r.allow_dotfiles.is_some()
        || r.internal.is_some()
    {
        return Err(ConfigError::value(
            key,
            "cache_control/index/allow_dotfiles/internal",
            "these options only on a `static = DIR` route",
        ));
    }
    match (r.proxy, r.upgrades) {
        (Some(p), upgrades) => actions.push(RouteAction::Proxy(ProxyRoute::new(key, p, upgrades)?)),
        (None, Some(_)) => {
            return Err(ConfigError::value(
                &format!("{key}.upgrades"),
                "upgrades",
                "`upgrades` only on a `proxy = UPSTREAM` route",
            ))
        }
        (None, None) => {}
    }
    if let Some(to) = r.redirect {
        let status = r.status.unwrap_or(301);
        if !matches!(status, 301 | 302 | 303 | 307 | 308) {
            return Err(ConfigError::value(
                &format!("{key}.status"),
                status,
                "301, 302, 303, 307 or 308 for a redirect",
            ));
        }
        actions.push(RouteAction::Redirect { to, status });
    }
    if let Some(status) = r.return_status {
        if !(200..=599).contains(&status) {
            return Err(ConfigError::value(
                &format!("{key}.return"),
                status,
                "an HTTP status from 200 to 599",
            ));
        }
        actions.push(RouteAction::Return {
            status,
            body: r.body.unwrap_or_default(),
        });
    }
    if actions.len() != 1 {
        return Err(ConfigError::value(
            key,
            format!("{} actions", actions.len()),
            "exactly one of `app = true`, `static = DIR`, `proxy = UPSTREAM`, `redirect = URL`, `return = STATUS`",
        ));
    }
    Ok(Route {
        host: r.host.map(|h| h.to_ascii_lowercase()),
        prefix,
        action: actions.pop().unwrap(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxy_route(upgrades: Option<Vec<&str>>) -> Result<Route, ConfigError> {
        route(
            "listener[0].route[0]",
            RouteFile {
                proxy: Some("web".into()),
                upgrades: upgrades.map(|u| u.into_iter().map(String::from).collect()),
                ..Default::default()
            },
        )
    }

    fn allowed(r: &Route, protocol: &str) -> bool {
        match &r.action {
            RouteAction::Proxy(p) => p.allows_upgrade(protocol),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn proxy_routes_allow_websocket_unless_told_otherwise() {
        let r = proxy_route(None).unwrap();
        assert!(allowed(&r, "websocket") && allowed(&r, "WebSocket/13"));
        assert!(!allowed(&r, "h2c") && !allowed(&r, "foo"));
        let r = proxy_route(Some(vec!["h2c", "Foo"])).unwrap();
        assert!(allowed(&r, "h2c") && allowed(&r, "foo/2"));
        assert!(!allowed(&r, "websocket"));
        let r = proxy_route(Some(vec![])).unwrap();
        assert!(!allowed(&r, "websocket"));
    }

    #[test]
    fn bad_upgrades_name_the_key() {
        for bad in ["", "web socket", "HTTP/2.0"] {
            let e = proxy_route(Some(vec![bad])).unwrap_err().to_string();
            assert!(e.contains("`listener[0].route[0].upgrades`"), "{e}");
        }
        let e = route(
            "r",
            RouteFile {
                app: Some(true),
                upgrades: Some(vec!["websocket".into()]),
                ..Default::default()
            },
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("`r.upgrades`") && e.contains("proxy"), "{e}");
    }
}
