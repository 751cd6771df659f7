//! The ipc request a worker turns into a WSGI environ: headers joined as CGI wants them,
//! server name and port, the client's address, the body inline or as a file.

use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};
use http::header;

use super::read::Body;
use crate::body_memory::BodyHold;
use crate::http_util::protocol;
use crate::{Front, Peer};
use porch_ipc as ipc;

impl Front {
    pub(super) fn ipc_request(
        &self,
        parts: &http::request::Parts,
        peer: Peer,
        body: Body,
    ) -> (ipc::Request, BodyHold) {
        // Every name and joined value is written once into one buffer the frame's fields
        // then share: one allocation for all the headers, not two per header.
        let mut arena = BytesMut::with_capacity(header_bytes(&parts.headers));
        let mut spans: Vec<(usize, usize, usize)> =
            Vec::with_capacity(parts.headers.keys_len() + 1);
        let mut forwarded_https = false;
        let trusted = peer
            .remote
            .is_none_or(|a| self.cfg.forwarded_allow_ips.trusts(a.ip()));
        let authority = parts.uri.authority();
        // `iter` yields each name once per value, a name's values one after another.
        let mut last: Option<&header::HeaderName> = None;
        for (name, value) in parts.headers.iter() {
            if last == Some(name) {
                // A repeated field: joined to the value before it, as CGI wants.
                let sep: &[u8] = if name == header::COOKIE { b"; " } else { b", " };
                arena.extend_from_slice(sep);
                arena.extend_from_slice(value.as_bytes());
                spans.last_mut().expect("the first value was kept").2 = arena.len();
                continue;
            }
            last = None;
            // The target's authority is the host (RFC 9112 §3.2.2): it replaces the header.
            if authority.is_some() && name == header::HOST {
                continue;
            }
            // Underscores would alias dashes in the environ (X_Auth vs X-Auth): drop them,
            // as nginx and Gunicorn do, so a client cannot spoof a header a proxy set.
            if name.as_str().contains('_') {
                continue;
            }
            // The body is read whole and its framing removed: the app sees its length as
            // CONTENT_LENGTH, never a Transfer-Encoding that no longer holds (a proxy that
            // de-chunks forwards only the length too). Other hop-by-hop headers
            // (Connection, Keep-Alive, TE, Upgrade) reach the app as they do on Gunicorn.
            if name == header::TRANSFER_ENCODING {
                continue;
            }
            last = Some(name);
            let at = arena.len();
            arena.extend_from_slice(name.as_str().as_bytes());
            arena.extend_from_slice(value.as_bytes());
            spans.push((at, at + name.as_str().len(), arena.len()));
        }
        if let Some(auth) = authority {
            let at = arena.len();
            arena.extend_from_slice(b"host");
            arena.extend_from_slice(auth.as_str().as_bytes());
            spans.push((at, at + 4, arena.len()));
        }
        let arena = arena.freeze();
        let headers: Vec<(Bytes, Bytes)> = spans
            .into_iter()
            .map(|(at, value, end)| (arena.slice(at..value), arena.slice(value..end)))
            .collect();
        if trusted {
            if let Some((_, v)) = headers.iter().find(|(k, _)| &k[..] == b"x-forwarded-proto") {
                forwarded_https = v.eq_ignore_ascii_case(b"https");
            }
        }
        let local = peer.local;
        let (server_name, server_port) = host_and_port(&parts.headers, &parts.uri, local);
        let (remote_addr, remote_port) = match peer.remote {
            Some(a) => (crate::http_util::ip_string(a.ip()), a.port()),
            None => (String::new(), 0),
        };
        let (body, hold) = match body {
            Body::Memory(b, hold) => (ipc::RequestBody::Inline(b), BodyHold::Memory(hold)),
            Body::File(path, len) => (
                ipc::RequestBody::File {
                    path: path.to_string_lossy().into_owned(),
                    len,
                },
                BodyHold::File(path),
            ),
        };
        let target = parts
            .uri
            .path_and_query()
            .map_or(Bytes::from_static(b"/"), |p| {
                Bytes::copy_from_slice(p.as_str().as_bytes())
            });
        (
            ipc::Request {
                method: parts.method.to_string(),
                target,
                protocol: protocol(parts.version),
                https: peer.tls || forwarded_https,
                remote_addr,
                remote_port,
                server_name,
                server_port,
                headers,
                body,
            },
            hold,
        )
    }
}

/// The bytes of all header names and values, with room for the separators of joined
/// values.
fn header_bytes(headers: &http::HeaderMap) -> usize {
    headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 2)
        .sum::<usize>()
        + 64
}

fn host_and_port(
    headers: &http::HeaderMap,
    uri: &http::Uri,
    local: Option<SocketAddr>,
) -> (String, u16) {
    let default_port = local.map_or(80, |a| a.port());
    // HTTP/2 carries the host in `:authority` (the URI); an absolute-form HTTP/1 target
    // carries it too, and then it wins over the Host header.
    if let Some(auth) = uri.authority() {
        return (
            auth.host().trim_matches(['[', ']']).to_string(),
            auth.port_u16().unwrap_or(default_port),
        );
    }
    // The Host header passed admission as a valid authority (host, then `:port`): split
    // without parsing it a second time.
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    if let Some(host) = host.filter(|h| !h.is_empty()) {
        let (name, port) = match host.strip_prefix('[') {
            Some(v6) => match v6.split_once(']') {
                Some((addr, rest)) => (addr, rest.strip_prefix(':')),
                None => (v6, None),
            },
            None => match host.rsplit_once(':') {
                Some((name, port)) => (name, Some(port)),
                None => (host, None),
            },
        };
        let port = port.and_then(|p| p.parse().ok()).unwrap_or(default_port);
        return (name.to_string(), port);
    }
    (
        local.map_or("localhost".to_string(), |a| a.ip().to_string()),
        default_port,
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn server_name_and_port_from_the_host_header_or_the_target() {
        let local: Option<std::net::SocketAddr> = Some("10.0.0.1:8000".parse().unwrap());
        let mut headers = http::HeaderMap::new();
        let plain: http::Uri = "/x".parse().unwrap();
        for (host, want) in [
            ("example.com", ("example.com", 8000)),
            ("example.com:8080", ("example.com", 8080)),
            ("example.com:", ("example.com", 8000)),
            ("[::1]:9000", ("::1", 9000)),
            ("[::1]", ("::1", 8000)),
            ("127.0.0.1:81", ("127.0.0.1", 81)),
        ] {
            headers.insert(http::header::HOST, host.parse().unwrap());
            let got = super::host_and_port(&headers, &plain, local);
            assert_eq!((got.0.as_str(), got.1), want, "{host}");
            // The same answer http's own authority parser gives.
            let auth: http::uri::Authority = host.parse().unwrap();
            assert_eq!(got.0, auth.host().trim_matches(['[', ']']));
            assert_eq!(got.1, auth.port_u16().unwrap_or(8000));
        }
        let absolute: http::Uri = "http://other.test:7000/x".parse().unwrap();
        assert_eq!(
            super::host_and_port(&headers, &absolute, local),
            ("other.test".into(), 7000)
        );
        headers.clear();
        assert_eq!(
            super::host_and_port(&headers, &plain, local),
            ("10.0.0.1".into(), 8000)
        );
    }
}
