//! Validators (ETag, Last-Modified) and conditional requests (RFC 9110 §13).

use std::time::{SystemTime, UNIX_EPOCH};

use http::{header, HeaderMap};

fn unix_secs(t: SystemTime) -> Option<u64> {
    t.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs())
}

#[derive(Debug, PartialEq, Eq)]
pub(super) enum Precondition {
    Proceed,
    NotModified,
    Failed,
}

pub(super) fn header_values(
    headers: &HeaderMap,
    name: header::HeaderName,
) -> impl Iterator<Item = &str> {
    headers
        .get_all(name)
        .into_iter()
        .filter_map(|v| v.to_str().ok())
}

pub(super) fn preconditions(
    headers: &HeaderMap,
    etag: &str,
    modified: Option<SystemTime>,
) -> Precondition {
    let mtime = modified.and_then(unix_secs);
    if headers.contains_key(header::IF_MATCH) {
        if !header_values(headers, header::IF_MATCH).any(|v| etag_list_matches(v, etag, false)) {
            return Precondition::Failed;
        }
    } else if let Some(since) = headers
        .get(header::IF_UNMODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok())
        .and_then(unix_secs)
    {
        if mtime.is_none_or(|m| m > since) {
            return Precondition::Failed;
        }
    }
    if headers.contains_key(header::IF_NONE_MATCH) {
        if header_values(headers, header::IF_NONE_MATCH).any(|v| etag_list_matches(v, etag, true)) {
            return Precondition::NotModified;
        }
    } else if let Some(since) = headers
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok())
        .and_then(unix_secs)
    {
        if mtime.is_some_and(|m| m <= since) {
            return Precondition::NotModified;
        }
    }
    Precondition::Proceed
}

/// Whether the `If-Range` header (if any) lets the `Range` header apply: its ETag must
/// match strongly, or its date equal `Last-Modified`.
pub(super) fn if_range_holds(
    headers: &HeaderMap,
    etag: &str,
    modified: Option<SystemTime>,
) -> bool {
    let Some(v) = headers.get(header::IF_RANGE) else {
        return true;
    };
    let Ok(v) = v.to_str() else {
        return false;
    };
    let v = v.trim();
    if v.starts_with('"') || v.starts_with("W/") {
        return !v.starts_with("W/") && v == etag;
    }
    match (
        httpdate::parse_http_date(v).ok().and_then(unix_secs),
        modified.and_then(unix_secs),
    ) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// Whether an `If-Match`/`If-None-Match` value (`*` or a list of entity tags) matches
/// `etag` (always a strong tag here). `weak`: the weak comparison If-None-Match uses,
/// where `W/"x"` matches `"x"`; otherwise a weak tag in the list never matches.
pub fn etag_list_matches(value: &str, etag: &str, weak: bool) -> bool {
    let b = value.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b' ' | b'\t' | b',' => i += 1,
            b'*' => return true,
            _ => {
                let is_weak = b[i..].starts_with(b"W/");
                let start = if is_weak { i + 2 } else { i };
                if b.get(start) != Some(&b'"') {
                    // Not an entity tag: skip this list element.
                    while i < b.len() && b[i] != b',' {
                        i += 1;
                    }
                    continue;
                }
                let Some(len) = b[start + 1..].iter().position(|&c| c == b'"') else {
                    return false;
                };
                let end = start + 1 + len + 1;
                let tag = &value[start..end];
                if tag == etag && (weak || !is_weak) {
                    return true;
                }
                i = end;
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::super::headers;
    use super::*;
    use std::time::Duration;

    #[test]
    fn etag_lists() {
        let tag = "\"5f.1a-400\"";
        assert!(etag_list_matches(tag, tag, true));
        assert!(etag_list_matches("*", tag, true));
        assert!(etag_list_matches("W/\"5f.1a-400\"", tag, true));
        assert!(!etag_list_matches("W/\"5f.1a-400\"", tag, false));
        assert!(etag_list_matches("\"x\", \"5f.1a-400\"", tag, false));
        assert!(etag_list_matches("\"a,b\",W/\"5f.1a-400\"", tag, true));
        assert!(etag_list_matches("junk, \"5f.1a-400\"", tag, true));
        assert!(!etag_list_matches("\"5f.1a-401\"", tag, true));
        assert!(!etag_list_matches("5f.1a-400", tag, true));
        assert!(!etag_list_matches("\"5f.1a-400", tag, true));
        assert!(!etag_list_matches("", tag, true));
    }

    #[test]
    fn conditional_order() {
        let tag = "\"1.0-2\"";
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let at = |s| httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(s));
        let pre = |h: &[(&'static str, &str)]| preconditions(&headers(h), tag, Some(t));
        assert_eq!(pre(&[]), Precondition::Proceed);
        assert_eq!(pre(&[("if-none-match", tag)]), Precondition::NotModified);
        assert_eq!(
            pre(&[("if-none-match", "\"other\"")]),
            Precondition::Proceed
        );
        assert_eq!(
            pre(&[("if-modified-since", &at(1_700_000_000))]),
            Precondition::NotModified
        );
        assert_eq!(
            pre(&[("if-modified-since", &at(1_699_999_999))]),
            Precondition::Proceed
        );
        assert_eq!(
            pre(&[("if-modified-since", "garbage")]),
            Precondition::Proceed
        );
        // If-None-Match wins over If-Modified-Since.
        assert_eq!(
            pre(&[
                ("if-none-match", "\"other\""),
                ("if-modified-since", &at(1_800_000_000))
            ]),
            Precondition::Proceed
        );
        assert_eq!(pre(&[("if-match", "\"other\"")]), Precondition::Failed);
        assert_eq!(
            pre(&[("if-match", tag), ("if-none-match", tag)]),
            Precondition::NotModified
        );
        assert_eq!(
            pre(&[("if-unmodified-since", &at(1_600_000_000))]),
            Precondition::Failed
        );
        assert_eq!(
            pre(&[("if-unmodified-since", &at(1_700_000_000))]),
            Precondition::Proceed
        );

        let holds = |h: &[(&'static str, &str)]| if_range_holds(&headers(h), tag, Some(t));
        assert!(holds(&[]));
        assert!(holds(&[("if-range", tag)]));
        assert!(!holds(&[("if-range", "W/\"1.0-2\"")]));
        assert!(!holds(&[("if-range", "\"other\"")]));
        assert!(holds(&[("if-range", &at(1_700_000_000))]));
        assert!(!holds(&[("if-range", &at(1_700_000_001))]));
        assert!(!holds(&[("if-range", "yesterday")]));
    }
}
