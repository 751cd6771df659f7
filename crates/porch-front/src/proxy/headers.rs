//! What crosses the proxy: hop-by-hop headers stripped, `X-Forwarded-*` set.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Uri, Version};
use porch_config::ProxyRoute;

use crate::Peer;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
static HTTP2_SETTINGS: HeaderName = HeaderName::from_static("http2-settings");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// What an HTTP/1.1 request asking to switch protocols (`Connection: upgrade` +
/// `Upgrade`) may pass on: the protocols it offers that the route allows, in its order.
/// `None` when it asks for none of them: the request then goes on as plain HTTP.
pub(super) fn upgrade_offer<B>(req: &Request<B>, route: &ProxyRoute) -> Option<HeaderValue> {
    if req.version() != Version::HTTP_11 || !has_token(req.headers(), "upgrade") {
        return None;
    }
    let allowed: Vec<&str> = protocols(req.headers())
        .filter(|p| route.allows_upgrade(p))
        .collect();
    if allowed.is_empty() {
        return None;
    }
    HeaderValue::from_str(&allowed.join(", ")).ok()
}

/// The protocols an `Upgrade` header lists (`NAME[/VERSION]`).
fn protocols(h: &HeaderMap) -> impl Iterator<Item = &str> {
    h.get_all(header::UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
}

/// Whether an upstream's `101` switched to a protocol that was offered.
pub(super) fn switched_as_offered(upstream: &HeaderMap, offered: &HeaderValue) -> bool {
    let name = |p: &str| {
        p.split('/')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    };
    let offered: Vec<String> = offered
        .to_str()
        .unwrap_or("")
        .split(',')
        .map(name)
        .collect();
    let mut chosen = protocols(upstream).peekable();
    chosen.peek().is_some() && chosen.all(|p| offered.contains(&name(p)))
}

fn has_token(h: &HeaderMap, token: &str) -> bool {
    h.get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Headers of one connection, never forwarded (RFC 9110 7.6.1), plus any the
/// `Connection` header names (except the ones framing or routing depend on).
pub(super) fn strip_hop_by_hop(h: &mut HeaderMap) {
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .filter(|n| {
            *n != header::HOST && *n != header::CONTENT_LENGTH && *n != header::CONTENT_TYPE
        })
        .collect();
    for n in named {
        h.remove(n);
    }
    // Names, not strings: a `&str` key is parsed into a name on every call.
    for n in [
        &header::CONNECTION,
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &header::TE,
        &header::TRAILER,
        &header::TRANSFER_ENCODING,
        &header::UPGRADE,
        // HTTP/2's settings for an `h2c` upgrade: connection-specific (RFC 9113 3.2.1).
        &HTTP2_SETTINGS,
    ] {
        h.remove(n);
    }
}

/// The headers the upstream gets: the client's without hop-by-hop ones, `Host` as the
/// client sent it, and `X-Forwarded-For` (the peer appended), `X-Forwarded-Proto`,
/// `X-Forwarded-Host`, `X-Real-IP` set by porch. `upgrade`: the protocols passed on
/// from [`upgrade_offer`], if any.
pub(super) fn upstream_headers(
    client: &HeaderMap,
    uri: &Uri,
    peer: Peer,
    tls: bool,
    upgrade: Option<&HeaderValue>,
) -> HeaderMap {
    let mut h = client.clone();
    strip_hop_by_hop(&mut h);
    // Names with underscores are dropped, as nginx does by default and as the app route
    // does: upstreams that fold `_` into `-` (WSGI servers, Django behind them) would
    // otherwise take a client's `X-Forwarded_Proto` for the one porch sets.
    let underscored: Vec<_> = h
        .keys()
        .filter(|n| n.as_str().contains('_'))
        .cloned()
        .collect();
    for name in underscored {
        h.remove(name);
    }
    // porch already answered `100 Continue` when it started reading the body.
    h.remove(header::EXPECT);
    if let Some(u) = upgrade {
        h.insert(header::UPGRADE, u.clone());
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        let h2c = u
            .to_str()
            .unwrap_or("")
            .split(',')
            .any(|p| p.trim().eq_ignore_ascii_case("h2c"));
        if let (true, Some(settings)) = (h2c, client.get(&HTTP2_SETTINGS)) {
            h.insert(HTTP2_SETTINGS.clone(), settings.clone());
            h.insert(
                header::CONNECTION,
                HeaderValue::from_static("upgrade, http2-settings"),
            );
        }
    }
    if !h.contains_key(header::HOST) {
        // HTTP/2 carries the host in the request target.
        if let Some(v) = uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        {
            h.insert(header::HOST, v);
        }
    }
    match h.get(header::HOST).cloned() {
        Some(host) => {
            h.insert(X_FORWARDED_HOST.clone(), host);
        }
        None => {
            h.remove(&X_FORWARDED_HOST);
        }
    }
    if let Some(ip) = peer.remote.map(|a| a.ip().to_canonical()) {
        let ip = crate::http_util::ip_string(ip);
        let prior: Vec<&str> = client
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .collect();
        let xff = if prior.is_empty() {
            ip.clone()
        } else {
            format!("{}, {ip}", prior.join(", "))
        };
        if let Ok(v) = HeaderValue::from_str(&xff) {
            h.insert(X_FORWARDED_FOR.clone(), v);
        }
        if let Ok(v) = HeaderValue::from_str(&ip) {
            h.insert(X_REAL_IP.clone(), v);
        }
    }
    h.insert(
        X_FORWARDED_PROTO.clone(),
        HeaderValue::from_static(if tls { "https" } else { "http" }),
    );
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(ip: &str) -> Peer {
        Peer {
            remote: Some(format!("{ip}:5555").parse().unwrap()),
            local: None,
            tls: false,
        }
    }

    #[test]
    fn forwarded_headers() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("example.com:8080"));
        h.append(&X_FORWARDED_FOR, HeaderValue::from_static("10.0.0.1"));
        h.append(&X_FORWARDED_FOR, HeaderValue::from_static("10.0.0.2"));
        h.insert(&X_REAL_IP, HeaderValue::from_static("6.6.6.6"));
        h.insert(&X_FORWARDED_PROTO, HeaderValue::from_static("https"));
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::EXPECT, HeaderValue::from_static("100-continue"));
        h.insert("x-app", HeaderValue::from_static("kept"));
        let out = upstream_headers(
            &h,
            &Uri::from_static("/p?q"),
            peer("192.0.2.7"),
            false,
            None,
        );
        assert_eq!(out[header::HOST], "example.com:8080");
        assert_eq!(out[&X_FORWARDED_HOST], "example.com:8080");
        assert_eq!(out[&X_FORWARDED_FOR], "10.0.0.1, 10.0.0.2, 192.0.2.7");
        assert_eq!(out.get_all(&X_FORWARDED_FOR).iter().count(), 1);
        assert_eq!(out[&X_REAL_IP], "192.0.2.7");
        assert_eq!(out[&X_FORWARDED_PROTO], "http");
        assert_eq!(out["x-app"], "kept");
        for gone in ["connection", "x-secret", "keep-alive", "te", "expect"] {
            assert!(!out.contains_key(gone), "{gone} must not be forwarded");
        }
    }

    #[test]
    fn http2_authority_becomes_host_and_mapped_addresses_are_plain() {
        let out = upstream_headers(
            &HeaderMap::new(),
            &Uri::from_static("https://example.org/x"),
            peer("[::ffff:192.0.2.9]"),
            true,
            None,
        );
        assert_eq!(out[header::HOST], "example.org");
        assert_eq!(out[&X_FORWARDED_FOR], "192.0.2.9");
        assert_eq!(out[&X_FORWARDED_PROTO], "https");
    }

    #[test]
    fn names_with_underscores_never_reach_the_upstream() {
        let mut client = HeaderMap::new();
        client.insert("x-forwarded_proto", HeaderValue::from_static("https"));
        client.insert("x_real_ip", HeaderValue::from_static("1.2.3.4"));
        client.insert("x-fine", HeaderValue::from_static("kept"));
        let uri: Uri = "/".parse().unwrap();
        let h = upstream_headers(&client, &uri, peer("10.0.0.9"), false, None);
        assert!(h.keys().all(|n| !n.as_str().contains('_')), "{h:?}");
        assert_eq!(h["x-fine"], "kept");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-real-ip"], "10.0.0.9");
    }

    fn route(upgrades: Option<Vec<&str>>) -> ProxyRoute {
        let upgrades = upgrades.map(|u| u.into_iter().map(String::from).collect());
        ProxyRoute::new("r", "pool".into(), upgrades).unwrap()
    }

    fn asking(upgrade: &str) -> Request<()> {
        Request::get("/ws")
            .header(header::HOST, "a")
            .header(header::CONNECTION, "Upgrade, HTTP2-Settings")
            .header(header::UPGRADE, upgrade)
            .header(&HTTP2_SETTINGS, "AAMAAABkAAQAAP__")
            .body(())
            .unwrap()
    }

    #[test]
    fn only_the_upgrades_a_route_allows_are_passed_on() {
        let websocket_only = route(None);
        let offer = upgrade_offer(&asking("websocket"), &websocket_only).unwrap();
        assert_eq!(offer, "websocket");
        let out = upstream_headers(
            asking("websocket").headers(),
            &Uri::from_static("/ws"),
            peer("127.0.0.1"),
            false,
            Some(&offer),
        );
        assert_eq!(out[header::UPGRADE], "websocket");
        assert_eq!(out[header::CONNECTION], "upgrade");
        assert!(!out.contains_key(&HTTP2_SETTINGS));

        // h2c, or anything else the route does not allow, is stripped: plain HTTP.
        for other in ["h2c", "foo", "TLS/1.0"] {
            assert!(
                upgrade_offer(&asking(other), &websocket_only).is_none(),
                "{other}"
            );
        }
        let out = upstream_headers(
            asking("h2c").headers(),
            &Uri::from_static("/ws"),
            peer("127.0.0.1"),
            false,
            None,
        );
        for gone in ["upgrade", "connection", "http2-settings"] {
            assert!(!out.contains_key(gone), "{gone}: {out:?}");
        }
        // A list keeps only what is allowed.
        let offer = upgrade_offer(&asking("h2c, WebSocket"), &websocket_only).unwrap();
        assert_eq!(offer, "WebSocket");
        // HTTP/1.0, or no `Connection: upgrade`: not an upgrade request at all.
        let mut old = asking("websocket");
        *old.version_mut() = Version::HTTP_10;
        assert!(upgrade_offer(&old, &websocket_only).is_none());
        let mut bare = asking("websocket");
        bare.headers_mut().remove(header::CONNECTION);
        assert!(upgrade_offer(&bare, &websocket_only).is_none());
    }

    #[test]
    fn an_allowed_h2c_upgrade_keeps_its_settings() {
        let offer = upgrade_offer(&asking("h2c"), &route(Some(vec!["h2c"]))).unwrap();
        let out = upstream_headers(
            asking("h2c").headers(),
            &Uri::from_static("/"),
            peer("127.0.0.1"),
            false,
            Some(&offer),
        );
        assert_eq!(out[header::UPGRADE], "h2c");
        assert_eq!(out[&HTTP2_SETTINGS], "AAMAAABkAAQAAP__");
        assert_eq!(out[header::CONNECTION], "upgrade, http2-settings");
    }

    #[test]
    fn a_101_must_switch_to_an_offered_protocol() {
        let offered = HeaderValue::from_static("websocket");
        let mut h = HeaderMap::new();
        assert!(!switched_as_offered(&h, &offered));
        h.insert(header::UPGRADE, HeaderValue::from_static("WebSocket"));
        assert!(switched_as_offered(&h, &offered));
        h.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
        assert!(!switched_as_offered(&h, &offered));
    }
}
