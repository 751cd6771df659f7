//! Static path resolution: `relative_path` on arbitrary URL paths, then `serve_path` on a
//! real directory tree whose root has symlinks pointing out of it.
//!
//! Properties: never panics; a resolved path is plain segments below the root (no `.`,
//! `..`, empty, separator or NUL segments; no dotfiles unless allowed); a successful
//! answer never carries a byte of a file outside the root (those files are all `X`,
//! files inside never contain one), and its `Content-Length` and `Content-Range` agree
//! with the body.

use std::path::{Component, Path, PathBuf};
use std::sync::OnceLock;

use http::{header, HeaderMap, HeaderName, HeaderValue, Method};
use porch_config::StaticMount;
use porch_front::body::ResponseBody;
use porch_front::static_files::{relative_path, serve_path};

const SECRET: &[u8] = b"XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX";

/// `BASE/www` is the root; everything else under `BASE` is outside it.
fn tree() -> &'static PathBuf {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let base = std::env::temp_dir().join(format!("porch-fuzz-static-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let www = base.join("www");
        let w = |p: &str, body: &[u8]| {
            let p = base.join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, body).unwrap();
        };
        w("outside.txt", SECRET);
        w("www-evil/secret.txt", SECRET);
        w("www/index.html", b"<p>inside index</p>");
        w("www/a.css", b"body { color: red }");
        w("www/a.css.gz", b"gzip of a.css, inside");
        w("www/a.css.br", b"brotli of a.css, inside");
        w("www/app.3f2a9c1b7d4e.js", b"hashed js inside");
        w("www/sub/ok.txt", b"ok inside");
        w("www/sub/index.html", b"sub index inside");
        w("www/.env", b"dotfile inside");
        w("www/.well-known/a.txt", b"well known inside");
        w("www/caf\u{e9}.txt", b"cafe inside");
        w("www/a b.txt", b"space inside");
        w("www/empty.txt", b"");
        let big: Vec<u8> = (0..70_000u32).map(|i| b'a' + (i % 23) as u8).collect();
        w("www/big.bin", &big);
        std::fs::create_dir_all(www.join("emptydir")).unwrap();
        use std::os::unix::fs::symlink;
        symlink("../outside.txt", www.join("link-out")).unwrap();
        symlink("../../outside.txt", www.join("sub/rel-out")).unwrap();
        symlink("..", www.join("dir-out")).unwrap();
        symlink("../www-evil", www.join("evil")).unwrap();
        symlink(base.join("outside.txt"), www.join("abs-out")).unwrap();
        symlink("sub/ok.txt", www.join("inside")).unwrap();
        symlink("../sub/ok.txt", www.join("sub/up-and-in")).unwrap();
        symlink("loop", www.join("loop")).unwrap();
        symlink("/proc/self/root/etc/passwd", www.join("magic")).unwrap();
        www
    })
}

fn check_relative(rel: &str, allow_dotfiles: bool) {
    let Ok(out) = relative_path(rel, allow_dotfiles) else {
        return;
    };
    assert!(!out.contains('\\'), "{rel:?} -> {out:?}");
    // `%00` is refused; a NUL already in the path (never from hyper, which rejects it)
    // passes through and fails to open.
    assert!(!out.contains('\0') || rel.contains('\0'), "{rel:?} -> {out:?}");
    if out.is_empty() {
        return;
    }
    for seg in out.split('/') {
        assert!(!seg.is_empty() && seg != "." && seg != "..", "{rel:?} -> {out:?}");
        assert!(allow_dotfiles || !seg.starts_with('.'), "{rel:?} -> {out:?}");
    }
    let root = Path::new("/srv/root");
    let joined = root.join(&*out);
    assert!(joined.starts_with(root), "{rel:?} -> {out:?}");
    assert!(
        Path::new(&*out).components().all(|c| matches!(c, Component::Normal(_))),
        "{rel:?} -> {out:?}"
    );
}

pub fn run(data: &[u8]) {
    // Input: a flags byte, then lines: the URL path, then values for the headers below
    // in order (a missing line: no such header), then the query string.
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let mut lines = text.split('\n');
    let path = lines.next().unwrap_or("");
    let allow_dotfiles = flags & 1 != 0;
    check_relative(path, allow_dotfiles);

    let mount = StaticMount {
        prefix: "/static/".into(),
        dir: tree().clone(),
        cache_control: (flags & 2 != 0).then(|| "no-cache".into()),
        index: (flags & 4 != 0).then(|| "index.html".into()),
        allow_dotfiles,
        internal: false,
    };
    let method = match (flags >> 3) & 3 {
        0 | 1 => Method::GET,
        2 => Method::HEAD,
        _ => Method::POST,
    };
    let url = if flags & 0x20 != 0 {
        path.to_string()
    } else {
        format!("/static/{path}")
    };
    let mut headers = HeaderMap::new();
    for name in [
        header::RANGE,
        header::IF_RANGE,
        header::ACCEPT_ENCODING,
        header::IF_NONE_MATCH,
        header::IF_MATCH,
        header::IF_MODIFIED_SINCE,
        header::IF_UNMODIFIED_SINCE,
    ] {
        match lines.next() {
            None => break,
            Some("") => {}
            Some(v) => {
                if let Ok(v) = HeaderValue::from_str(v) {
                    headers.append::<HeaderName>(name, v);
                }
            }
        }
    }
    let query = lines.next();

    let resp = serve_path(&mount, &method, &headers, &url, query);
    let status = resp.status();
    if !status.is_success() {
        return;
    }
    let declared: Option<u64> = resp
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse().ok());
    let body = match resp.body() {
        ResponseBody::Full(b) => b.clone().unwrap_or_default(),
        ResponseBody::File(f) => {
            assert_eq!(Some(f.remaining()), declared);
            return; // only big.bin streams, and it is inside
        }
        _ => panic!("static answer with a worker or upstream body"),
    };
    assert!(!body.contains(&b'X'), "{url:?} served a file outside the root");
    if method == Method::HEAD {
        assert!(body.is_empty());
    } else {
        assert_eq!(declared, Some(body.len() as u64), "{url:?}");
    }
    if status == http::StatusCode::PARTIAL_CONTENT {
        let cr = resp.headers()[header::CONTENT_RANGE].to_str().unwrap();
        let (range, len) = cr.strip_prefix("bytes ").unwrap().split_once('/').unwrap();
        let (first, last) = range.split_once('-').unwrap();
        let (first, last, len): (u64, u64, u64) =
            (first.parse().unwrap(), last.parse().unwrap(), len.parse().unwrap());
        assert!(first <= last && last < len, "{cr}");
        assert_eq!(last - first + 1, body.len() as u64, "{cr}");
    }
}
