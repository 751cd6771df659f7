//! From a URL path to a path below the root: split on `/` first, then decode each
//! segment, so no escape adds a separator or climbs out.

use std::borrow::Cow;

/// Why a URL path names no file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// Malformed: a bad `%` escape, `%00`, or bytes that are not UTF-8 (400).
    Invalid,
    /// Well-formed but not servable: `..` above the mount, a dotfile, an encoded
    /// separator (404).
    Refused,
}

/// The path below the root that the percent-encoded URL path `rel` (what follows the
/// mount's prefix) names: plain segments joined by `/`, empty for the root itself. Each
/// segment is decoded on its own, so no escape can add a separator; dot segments are
/// removed as RFC 3986 (5.2.4) does, and one that would climb above the mount is refused.
pub fn relative_path(rel: &str, allow_dotfiles: bool) -> Result<Cow<'_, str>, PathError> {
    // The common case: already plain (no escape, no empty or dot-led segment, no
    // backslash, no trailing slash), so it is its own answer.
    if !rel.is_empty()
        && !rel.ends_with('/')
        && !rel.starts_with(['.', '/'])
        && !rel.contains(['%', '\\'])
        && !rel.contains("//")
        && !rel.contains("/.")
    {
        return Ok(Cow::Borrowed(rel));
    }
    let mut segments: Vec<Cow<'_, str>> = Vec::new();
    for raw in rel.split('/') {
        if raw.is_empty() {
            continue; // `a//b` is `a/b`, as nginx merges slashes
        }
        let seg = percent_decode(raw)?;
        if seg.contains(['/', '\\']) {
            return Err(PathError::Refused);
        }
        match &*seg {
            "." => continue,
            ".." => {
                if segments.pop().is_none() {
                    return Err(PathError::Refused);
                }
                continue;
            }
            _ => {}
        }
        if seg.starts_with('.') && !allow_dotfiles {
            return Err(PathError::Refused);
        }
        segments.push(seg);
    }
    Ok(Cow::Owned(segments.join("/")))
}

fn percent_decode(seg: &str) -> Result<Cow<'_, str>, PathError> {
    match crate::percent::decode(seg).map_err(|_| PathError::Invalid)? {
        Cow::Borrowed(_) => Ok(Cow::Borrowed(seg)),
        Cow::Owned(bytes) => String::from_utf8(bytes)
            .map(Cow::Owned)
            .map_err(|_| PathError::Invalid),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_split_before_decoding() {
        assert_eq!(
            relative_path("css/app.css", false),
            Ok("css/app.css".into())
        );
        assert_eq!(relative_path("", false), Ok("".into()));
        assert_eq!(relative_path("a//b/", false), Ok("a/b".into()));
        assert_eq!(relative_path("caf%C3%A9.txt", false), Ok("café.txt".into()));
        assert_eq!(relative_path("a%20b", false), Ok("a b".into()));
        // Dot segments are resolved within the mount, as RFC 3986 does.
        assert_eq!(relative_path("./a", false), Ok("a".into()));
        assert_eq!(relative_path("%2e/a", false), Ok("a".into()));
        assert_eq!(relative_path("a/./b/.", false), Ok("a/b".into()));
        assert_eq!(relative_path("a/b/../c", false), Ok("a/c".into()));
        assert_eq!(relative_path("a/%2e%2e/c", false), Ok("c".into()));
        assert_eq!(relative_path("a/..", false), Ok("".into()));
        for refused in [
            "../secret",
            "a/../../secret",
            "%2e%2e/secret",
            "%2E%2E/secret",
            ".%2e/secret",
            "..%2fsecret",
            "a%2f..%2f..%2fsecret",
            "a%5c..%5csecret",
            "a\\..\\secret",
            "a/../../..",
            "a/../.env",
            ".env",
            "a/.git/config",
            "%2egit/config",
        ] {
            assert_eq!(
                relative_path(refused, false),
                Err(PathError::Refused),
                "{refused}"
            );
        }
        for invalid in ["a%00b", "%00", "a%zz", "a%2", "a%", "%ff%fe", "%c3"] {
            assert_eq!(
                relative_path(invalid, false),
                Err(PathError::Invalid),
                "{invalid}"
            );
        }
        assert_eq!(
            relative_path(".well-known/x", true),
            Ok(".well-known/x".into())
        );
        assert_eq!(relative_path("..", true), Err(PathError::Refused));
        assert_eq!(
            relative_path("a/%2e%2e/%2e%2e/b", true),
            Err(PathError::Refused)
        );
    }
}
