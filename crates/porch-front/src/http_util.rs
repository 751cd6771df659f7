//! Small facts about a request that routing, logging and the app environ all need.

use http::header::{self, HeaderName};
use http::{Request, Version};

/// A header's value as text, empty when absent or not visible ASCII (for the access log).
/// A header's value as text for the access log, whatever bytes it holds (the log
/// escapes what is not printable ASCII).
pub(crate) fn header_str(h: &http::HeaderMap, name: HeaderName) -> String {
    h.get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default()
}

/// The protocol as CGI's `SERVER_PROTOCOL` and the access log spell it.
pub fn protocol(v: Version) -> &'static str {
    match v {
        Version::HTTP_10 | Version::HTTP_09 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2",
        _ => "HTTP/1.1",
    }
}

/// The host a request is for: its Host header, or the authority of an HTTP/2 request.
pub fn request_host<B>(req: &Request<B>) -> Option<&str> {
    // An absolute-form target's authority (HTTP/2's `:authority`) wins over the Host
    // header (RFC 9112 §3.2.2, RFC 9113 §8.3.1).
    req.uri().authority().map(|a| a.as_str()).or_else(|| {
        req.headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
    })
}

/// `IpAddr::to_string` goes through the formatting machinery, a visible share of a
/// small request's cost; IPv4, the common case, is written directly.
pub(crate) fn ip_string(ip: std::net::IpAddr) -> String {
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
