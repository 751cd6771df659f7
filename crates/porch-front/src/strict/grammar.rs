//! The grammar of single lines (RFC 9112): request line, header field, Content-Length,
//! chunk size. Stricter than httparse: token names, no obs-fold, no control characters.

use super::checker::{reject, Reject};

/// Byte classes of RFC 9110, looked up instead of compared: every byte of every header
/// line passes through here.
const TCHAR: u8 = 1;
/// Not allowed in a field value: controls other than HTAB, and DEL.
const CTL: u8 = 2;

const CLASSES: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        if c.is_ascii_alphanumeric() {
            t[b] |= TCHAR;
        }
        if (c < 0x20 && c != b'\t') || c == 0x7f {
            t[b] |= CTL;
        }
        b += 1;
    }
    let symbols = b"!#$%&'*+-.^_`|~";
    let mut i = 0;
    while i < symbols.len() {
        t[symbols[i] as usize] |= TCHAR;
        i += 1;
    }
    t
};

fn is_tchar(b: u8) -> bool {
    CLASSES[b as usize] & TCHAR != 0
}

/// Whether any byte is a control character; without an early exit, so it vectorises.
fn has_ctl(bytes: &[u8]) -> bool {
    bytes.iter().fold(0u8, |acc, &b| acc | CLASSES[b as usize]) & CTL != 0
}

pub(super) fn request_line(line: &[u8]) -> Result<(), Reject> {
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(reject(400, "malformed request line"));
    };
    if method.is_empty() || !method.iter().all(|&b| is_tchar(b)) {
        return Err(reject(400, "invalid method"));
    }
    // Visible ASCII only (RFC 3986 has no raw bytes past 0x7e; they arrive percent-encoded).
    if target.is_empty() || target.iter().any(|&b| b <= 0x20 || b >= 0x7f) {
        return Err(reject(400, "invalid request target"));
    }
    if !target_form_fits(method, target) {
        return Err(reject(400, "invalid request target form"));
    }
    if !(version == b"HTTP/1.1" || version == b"HTTP/1.0") {
        return Err(reject(
            if version.starts_with(b"HTTP/") {
                505
            } else {
                400
            },
            "unsupported HTTP version",
        ));
    }
    Ok(())
}

/// RFC 9112 §3.2: origin-form (`/path`) or absolute-form (`http://host/path`) for any
/// method, the asterisk only for OPTIONS, authority-form (`host:port`) only for CONNECT.
fn target_form_fits(method: &[u8], target: &[u8]) -> bool {
    if target[0] == b'/' {
        return true;
    }
    if target == b"*" {
        return method == b"OPTIONS";
    }
    if method == b"CONNECT" {
        return true;
    }
    let lower = |n: usize| target.get(..n).map(|p| p.to_ascii_lowercase());
    lower(7).as_deref() == Some(b"http://") || lower(8).as_deref() == Some(b"https://")
}

pub(super) fn header(line: &[u8]) -> Result<(&[u8], &[u8]), Reject> {
    if line[0] == b' ' || line[0] == b'\t' {
        return Err(reject(400, "obsolete line folding in header"));
    }
    let colon = memchr::memchr(b':', line).ok_or(reject(400, "header line without a colon"))?;
    let name = &line[..colon];
    if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
        return Err(reject(400, "invalid header name"));
    }
    let value = trim_ows(&line[colon + 1..]);
    if has_ctl(value) {
        return Err(reject(400, "control character in header value"));
    }
    Ok((name, value))
}

fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

pub(super) fn content_length_value(v: &[u8]) -> Result<u64, Reject> {
    if v.is_empty() || v.len() > 18 || !v.iter().all(u8::is_ascii_digit) {
        return Err(reject(400, "invalid Content-Length"));
    }
    Ok(std::str::from_utf8(v).unwrap().parse().unwrap())
}

pub(super) fn chunk_size(line: &[u8]) -> Result<u64, Reject> {
    let hex_end = line.iter().position(|&b| b == b';').unwrap_or(line.len());
    let hex = &line[..hex_end];
    if hex.is_empty() || hex.len() > 15 || !hex.iter().all(u8::is_ascii_hexdigit) {
        return Err(reject(400, "invalid chunk size"));
    }
    Ok(u64::from_str_radix(std::str::from_utf8(hex).unwrap(), 16).unwrap())
}

#[cfg(test)]
mod tests {
    use super::request_line;

    #[test]
    fn byte_classes_match_rfc_9110() {
        for b in 0..=255u8 {
            let tchar = b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
            assert_eq!(super::is_tchar(b), tchar, "{b:#x}");
            let ctl = (b < 0x20 && b != b'\t') || b == 0x7f;
            assert_eq!(super::has_ctl(&[b'a', b, b'z']), ctl, "{b:#x}");
        }
        assert!(!super::has_ctl(b""));
    }

    #[test]
    fn targets_take_one_of_the_four_forms_in_visible_ascii() {
        for ok in [
            &b"GET / HTTP/1.1"[..],
            b"GET /a?b=c HTTP/1.1",
            b"GET http://a.example/x HTTP/1.1",
            b"GET HTTPS://a.example HTTP/1.1",
            b"OPTIONS * HTTP/1.1",
            b"CONNECT a.example:443 HTTP/1.1",
        ] {
            assert!(request_line(ok).is_ok(), "{}", String::from_utf8_lossy(ok));
        }
        for bad in [
            &b"GET x HTTP/1.1"[..],
            b"GET * HTTP/1.1",
            b"GET a.example:80 HTTP/1.1",
            b"GET ftp://a.example/ HTTP/1.1",
            b"GET /\xc3\xa9 HTTP/1.1",
            b"GET /?q=\xff HTTP/1.1",
        ] {
            assert!(
                request_line(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
