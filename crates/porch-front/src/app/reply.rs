//! A worker's reply as the client's response: its head with hop-by-hop headers dropped
//! and its body streamed, or the file it named in `X-Accel-Redirect`.

use http::header::{self, HeaderName, HeaderValue};
use http::{Response, StatusCode};

use crate::body::{ResponseBody, WorkerBody};
use crate::dispatch::ReplyReceiver;
use crate::log::AccessRecord;
use crate::reject::Rejection;
use crate::static_files;
use porch_config::RouteAction;
use porch_ipc as ipc;

/// The path an app named in `X-Accel-Redirect`, if any.
pub(super) fn accel_redirect(head: &ipc::Head) -> Option<String> {
    head.headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(b"x-accel-redirect"))
        .and_then(|(_, v)| std::str::from_utf8(v).ok())
        .map(|v| v.trim().to_string())
}

/// Serves the file an app named in `X-Accel-Redirect` from a static route (usually an
/// `internal = true` one), with ranges and conditional requests, so the Python worker
/// never streams the file. The app's body is dropped; the headers nginx keeps from such a
/// response (`Content-Disposition`, `Set-Cookie`, `Cache-Control`, `Expires`) are kept.
pub(super) fn x_accel_redirect(
    listener: &porch_config::ListenerConfig,
    parts: &http::request::Parts,
    head: &ipc::Head,
    target: &str,
) -> Response<ResponseBody> {
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let mount = listener.routes.iter().find_map(|r| match &r.action {
        RouteAction::Static(m) if path.starts_with(&m.prefix) => Some(m),
        _ => None,
    });
    let Some(mount) = mount else {
        tracing::error!("X-Accel-Redirect to {target:?} matches no static route");
        return Rejection::app(
            StatusCode::INTERNAL_SERVER_ERROR,
            "X-Accel-Redirect names no static route",
        )
        .response();
    };
    let mut resp = static_files::serve_path(mount, &parts.method, &parts.headers, path, query);
    const KEPT: [&[u8]; 4] = [
        b"content-disposition",
        b"set-cookie",
        b"cache-control",
        b"expires",
    ];
    if resp.status().is_success() || resp.status() == StatusCode::NOT_MODIFIED {
        for (k, v) in &head.headers {
            if KEPT.iter().any(|h| k.eq_ignore_ascii_case(h)) {
                if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(k), HeaderValue::from_bytes(v)) {
                    if n == header::CACHE_CONTROL || n == header::EXPIRES {
                        resp.headers_mut().insert(n, v);
                    } else {
                        resp.headers_mut().append(n, v);
                    }
                }
            }
        }
    }
    resp
}

/// Hop-by-hop headers belong to one connection; an app's are dropped (PEP 3333 forbids
/// them, and hyper does its own framing). `Trailer` is end-to-end (RFC 9110 section
/// 6.6.2): it names the trailer fields, and hyper sends only the ones it names.
pub(super) fn is_hop_by_hop(name: &[u8]) -> bool {
    [
        &b"connection"[..],
        b"keep-alive",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-connection",
        b"te",
    ]
    .iter()
    .any(|h| name.eq_ignore_ascii_case(h))
}

/// The app's reason phrase when it differs from the standard one (HTTP/1 carries it;
/// HTTP/2 has none). One that is not valid on the wire is replaced by the standard one.
fn own_reason(status: u16, reason: &bytes::Bytes) -> Option<hyper::ext::ReasonPhrase> {
    let standard = StatusCode::from_u16(status).ok()?.canonical_reason();
    if reason.is_empty() || standard.is_some_and(|s| s.as_bytes() == &reason[..]) {
        return None;
    }
    hyper::ext::ReasonPhrase::try_from(reason.clone()).ok()
}

pub(super) fn build_response(
    head: ipc::Head,
    rx: ReplyReceiver,
    record: Option<AccessRecord>,
    is_head: bool,
) -> Response<ResponseBody> {
    let mut declared = None;
    let mut builder = Response::builder().status(head.status);
    if let Some(reason) = own_reason(head.status, &head.reason) {
        builder = builder.extension(reason);
    }
    let headers = builder.headers_mut().expect("fresh builder");
    for (name, value) in head.headers {
        if is_hop_by_hop(&name) {
            continue;
        }
        let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(&name),
            HeaderValue::from_maybe_shared(value),
        ) else {
            continue; // the worker validated these; nothing invalid reaches here
        };
        if n == header::CONTENT_LENGTH {
            declared = v.to_str().ok().and_then(|s| s.trim().parse::<u64>().ok());
        }
        headers.append(n, v);
    }
    let body = WorkerBody {
        rx,
        declared: if is_head { None } else { declared },
        sent: 0,
        record: record.map(Box::new),
        failed: false,
    };
    builder
        .body(ResponseBody::Worker(body))
        .unwrap_or_else(|_| {
            Rejection::app(StatusCode::BAD_GATEWAY, "invalid status from the app").response()
        })
}
