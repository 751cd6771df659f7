//! What crosses the proxy: hop-by-hop headers stripped, `X-Forwarded-*` set.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Uri, Version};
use hyper::body::Incoming;

use crate::Peer;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// An HTTP/1.1 request asking to switch protocols (`Connection: upgrade` + `Upgrade`).
pub(super) fn wants_upgrade(req: &Request<Incoming>) -> bool {
    req.version() == Version::HTTP_11
        && req.headers().contains_key(header::UPGRADE)
        && has_token(req.headers(), "upgrade")
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
    for n in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ] {
        h.remove(n);
    }
}

/// The headers the upstream gets: the client's without hop-by-hop ones, `Host` as the
/// client sent it, and `X-Forwarded-For` (the peer appended), `X-Forwarded-Proto`,
/// `X-Forwarded-Host`, `X-Real-IP` set by porch.
pub(super) fn upstream_headers(
    client: &HeaderMap,
    uri: &Uri,
    peer: Peer,
    tls: bool,
    upgrade: bool,
) -> HeaderMap {
    let mut h = client.clone();
    let upgrade_to = client.get(header::UPGRADE).cloned();
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
    if upgrade {
        if let Some(u) = upgrade_to {
            h.insert(header::UPGRADE, u);
            h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
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
        let ip = ip.to_string();
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
            false,
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
            false,
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
        let h = upstream_headers(&client, &uri, peer("10.0.0.9"), false, false);
        assert!(h.keys().all(|n| !n.as_str().contains('_')), "{h:?}");
        assert_eq!(h["x-fine"], "kept");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-real-ip"], "10.0.0.9");
    }

    #[test]
    fn upgrades_keep_their_headers() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("a"));
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        let out = upstream_headers(&h, &Uri::from_static("/ws"), peer("127.0.0.1"), false, true);
        assert_eq!(out[header::UPGRADE], "websocket");
        assert_eq!(out[header::CONNECTION], "upgrade");
        let out = upstream_headers(
            &h,
            &Uri::from_static("/ws"),
            peer("127.0.0.1"),
            false,
            false,
        );
        assert!(!out.contains_key(header::UPGRADE));
    }
}
