//! The path routes are matched on: the request's path percent-decoded, with dot segments
//! removed (RFC 3986, 5.2.4) and repeated slashes merged, as nginx matches its locations
//! on `$uri`. So a route (a `return = 403` deny route above all) holds for every spelling
//! of its prefix: `/files/%69nternal/`, `/files/internal%2Fx`, `//files/internal/`,
//! `/files/x/../internal/`. The request itself goes on unchanged (the app decodes its
//! own PATH_INFO, an upstream gets the target the client sent, as nginx's `proxy_pass`
//! without a URI part does).

use std::borrow::Cow;

use crate::percent::Malformed;

/// Why a path cannot be routed (400): a bad `%` escape, an encoded NUL, or `..` above
/// the root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadPath(pub &'static str);

/// The routing form of `path` (which starts with `/`, or is `*`).
pub fn routing_path(path: &str) -> Result<Cow<'_, str>, BadPath> {
    let plain = !path.contains('%') && !path.contains("//") && !path.contains("/.");
    if plain {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode(path)?;
    let mut segments: Vec<&str> = Vec::new();
    let trailing = decoded.ends_with('/');
    for seg in decoded.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if segments.pop().is_none() {
                    return Err(BadPath("path climbs above the root"));
                }
            }
            s => segments.push(s),
        }
    }
    let last_is_dot = decoded.ends_with("/.") || decoded.ends_with("/..");
    let mut out = String::with_capacity(decoded.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() || ((trailing || last_is_dot) && !out.ends_with('/')) {
        out.push('/');
    }
    Ok(Cow::Owned(out))
}

fn decode(path: &str) -> Result<String, BadPath> {
    let bytes = crate::percent::decode(path).map_err(|e| match e {
        Malformed::BadEscape => BadPath("invalid percent-encoding in the path"),
        Malformed::Nul => BadPath("encoded NUL in the path"),
    })?;
    // Bytes that are not UTF-8 cannot spell a configured prefix; keep them comparable.
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(p: &str) -> String {
        routing_path(p).unwrap().into_owned()
    }

    #[test]
    fn every_spelling_of_a_prefix_routes_alike() {
        for spelling in [
            "/files/internal/x",
            "/files/%69nternal/x",
            "/files/%69%6E%74ernal/x",
            "/files/internal%2fx",
            "/files/internal%2Fx",
            "//files/internal/x",
            "/files//internal/x",
            "/files/./internal/x",
            "/files/public/../internal/x",
            "/files/public/%2e%2e/internal/x",
            "/files/public/%2E%2E%2Finternal/x",
            "/./files/internal/./x",
        ] {
            assert_eq!(r(spelling), "/files/internal/x", "{spelling}");
        }
        assert_eq!(r("/files/internal/"), "/files/internal/");
        assert_eq!(r("/files/internal/."), "/files/internal/");
        assert_eq!(r("/files/internal/x/.."), "/files/internal/");
        assert_eq!(r("/"), "/");
        assert_eq!(r("//"), "/");
        assert_eq!(r("/%65cho"), "/echo");
        assert_eq!(r("/a%20b"), "/a b");
    }

    #[test]
    fn malformed_paths_are_refused() {
        for bad in [
            "/../x",
            "/a/../../x",
            "/%2e%2e/x",
            "/a%zz",
            "/a%2",
            "/a%00b",
        ] {
            assert!(routing_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn plain_paths_are_not_copied() {
        assert!(matches!(
            routing_path("/api/books/?x"),
            Ok(Cow::Borrowed(_))
        ));
    }
}
