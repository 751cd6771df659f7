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
        let mut headers: Vec<(Bytes, Bytes)> = Vec::with_capacity(parts.headers.keys_len());
        let mut forwarded_https = false;
        let trusted = peer
            .remote
            .is_none_or(|a| self.cfg.forwarded_allow_ips.trusts(a.ip()));
        let authority = parts.uri.authority();
        for name in parts.headers.keys() {
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
            let mut values = parts.headers.get_all(name).iter();
            let first = values.next().expect("a key has a value");
            let mut joined = Bytes::copy_from_slice(first.as_bytes());
            let sep: &[u8] = if name == header::COOKIE { b"; " } else { b", " };
            for v in values {
                let mut b = BytesMut::from(&joined[..]);
                b.extend_from_slice(sep);
                b.extend_from_slice(v.as_bytes());
                joined = b.freeze();
            }
            if trusted && name.as_str() == "x-forwarded-proto" {
                forwarded_https = joined.eq_ignore_ascii_case(b"https");
            }
            headers.push((Bytes::copy_from_slice(name.as_str().as_bytes()), joined));
        }
        if let Some(auth) = authority {
            headers.push((
                Bytes::from_static(b"host"),
                Bytes::copy_from_slice(auth.as_str().as_bytes()),
            ));
        }
        let local = peer.local;
        let (server_name, server_port) = host_and_port(&parts.headers, &parts.uri, local);
        let (remote_addr, remote_port) = match peer.remote {
            Some(a) => (ip_string(a.ip()), a.port()),
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

/// `IpAddr::to_string` goes through the formatting machinery, a visible share of a
/// small request's cost; IPv4, the common case, is written directly.
fn ip_string(ip: std::net::IpAddr) -> String {
    let std::net::IpAddr::V4(v4) = ip else {
        return ip.to_string();
    };
    let mut s = String::with_capacity(15);
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            s.push('.');
        }
        if octet >= 100 {
            s.push(char::from(b'0' + octet / 100));
        }
        if octet >= 10 {
            s.push(char::from(b'0' + octet / 10 % 10));
        }
        s.push(char::from(b'0' + octet % 10));
    }
    s
}

fn host_and_port(
    headers: &http::HeaderMap,
    uri: &http::Uri,
    local: Option<SocketAddr>,
) -> (String, u16) {
    let default_port = local.map_or(80, |a| a.port());
    // HTTP/2 carries the host in `:authority` (the URI); an absolute-form HTTP/1 target
    // carries it too, and then it wins over the Host header.
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    if let Some(host) = uri.authority().map(|a| a.as_str()).or(host) {
        if let Ok(auth) = host.parse::<http::uri::Authority>() {
            return (
                auth.host().trim_matches(['[', ']']).to_string(),
                auth.port_u16().unwrap_or(default_port),
            );
        }
    }
    (
        local.map_or("localhost".to_string(), |a| a.ip().to_string()),
        default_port,
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn ipv4_addresses_are_written_as_display_writes_them() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.30.40",
            "255.255.255.255",
            "1.100.9.199",
        ] {
            let ip: std::net::IpAddr = ip.parse().unwrap();
            assert_eq!(super::ip_string(ip), ip.to_string());
        }
        let v6: std::net::IpAddr = "::1".parse().unwrap();
        assert_eq!(super::ip_string(v6), "::1");
    }
}
