//! A request path → the path routes match on (`porch_front::route_path`). Properties: the
//! result is an absolute path with no empty, `.` or `..` segment (so no spelling of a
//! prefix escapes the route it names), and it is stable once decoded (routing it again
//! changes nothing unless it still holds a `%`, which was an encoded `%`).

use porch_front::route_path::routing_path;

pub fn run(data: &[u8]) {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(out) = routing_path(path) else {
        return;
    };
    if out == path && !path.starts_with('/') {
        return; // `*` and other non-paths hyper would refuse: passed through untouched
    }
    assert!(out.starts_with('/'), "{path:?} -> {out:?}");
    let body = out.strip_suffix('/').unwrap_or(&out);
    for seg in body.split('/').skip(1) {
        assert!(
            !seg.is_empty() && seg != "." && seg != "..",
            "{path:?} -> {out:?}"
        );
    }
    if !out.contains('%') {
        assert_eq!(routing_path(&out).unwrap(), out, "{path:?} is not stable");
    }
}
