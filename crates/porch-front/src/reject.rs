//! Answers porch makes itself when a request cannot be served, and who caused them.
//!
//! Every error response goes through a [`Rejection`], so its status, its text and the
//! party at fault are decided here rather than at each call site. Rejections found where
//! no response can be written reach the handler through two channels, both kept here:
//! - a head rejected by the strict layer (`strict`) is replaced by a stand-in request
//!   carrying [`IN_BAND_HEADER`], because hyper must answer it in order after any
//!   pipelined requests before it;
//! - a body rejected mid-stream is recorded in a [`Verdict`] the requests of the
//!   connection share (`held::Connection`), because the body then ends well-formed and
//!   its reader must ask.

use std::borrow::Cow;
use std::sync::{Arc, Mutex, OnceLock};

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};

use crate::body::ResponseBody;
use crate::strict::Reject;

/// Who caused an error: what to fix, and what a 5xx says about porch's own health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The request is malformed, too large, too fast, or asks for what is not there.
    Client,
    /// The app (or its worker process) failed, hung or answered nonsense.
    App,
    /// An upstream server of a proxy route failed or hung.
    Upstream,
    /// porch itself: configuration, capacity, shutdown, local I/O.
    Porch,
}

/// An error answer: a short plain-text response from porch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub status: StatusCode,
    pub fault: Fault,
    pub reason: Cow<'static, str>,
    /// The connection cannot be trusted for another request.
    close: bool,
    /// Seconds for `Retry-After`.
    retry_after: Option<u64>,
    /// A 426 to a WebSocket handshake of another version: the one porch speaks.
    websocket_version: bool,
}

impl Rejection {
    pub fn new(status: StatusCode, fault: Fault, reason: impl Into<Cow<'static, str>>) -> Self {
        Rejection {
            status,
            fault,
            reason: reason.into(),
            close: false,
            retry_after: None,
            websocket_version: false,
        }
    }
    pub fn client(status: StatusCode, reason: impl Into<Cow<'static, str>>) -> Self {
        Self::new(status, Fault::Client, reason)
    }
    pub fn app(status: StatusCode, reason: impl Into<Cow<'static, str>>) -> Self {
        Self::new(status, Fault::App, reason)
    }
    pub fn upstream(status: StatusCode, reason: impl Into<Cow<'static, str>>) -> Self {
        Self::new(status, Fault::Upstream, reason)
    }
    pub fn porch(status: StatusCode, reason: impl Into<Cow<'static, str>>) -> Self {
        Self::new(status, Fault::Porch, reason)
    }

    /// Asks the client to close: what it sends next on this connection is not trusted.
    pub fn closing(mut self) -> Self {
        self.close = true;
        self
    }

    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    /// A worker gave no (complete) response: `dispatch` says 504 for a timeout, and
    /// anything else means the worker died.
    pub fn worker_failed(code: Option<u16>) -> Self {
        match code {
            Some(504) => Self::app(
                StatusCode::GATEWAY_TIMEOUT,
                "the app did not answer in time",
            ),
            // Not the app's doing: every worker stayed busy for the whole queue wait.
            Some(503) => Self::porch(
                StatusCode::SERVICE_UNAVAILABLE,
                "no worker became free in time",
            )
            .retry_after(1),
            _ => Self::app(
                StatusCode::BAD_GATEWAY,
                "the worker running this request died",
            ),
        }
    }

    /// A WebSocket handshake that is not RFC 6455's.
    pub fn bad_handshake(why: &'static str) -> Self {
        Self::client(StatusCode::BAD_REQUEST, why)
    }

    /// A WebSocket handshake of a version other than 13 (RFC 6455 section 4.4).
    pub fn websocket_version() -> Self {
        let mut r = Self::client(
            StatusCode::UPGRADE_REQUIRED,
            "unsupported WebSocket version (porch speaks 13)",
        );
        r.websocket_version = true;
        r
    }

    /// A request body past `limit_request_body`, whatever its framing. The rest of it is
    /// never read, so the connection closes.
    pub fn body_too_large() -> Self {
        Self::client(StatusCode::PAYLOAD_TOO_LARGE, "request body too large").closing()
    }

    /// A request body that paused longer than `body_timeout`.
    pub fn body_timed_out() -> Self {
        Self::client(
            StatusCode::REQUEST_TIMEOUT,
            "request body not received in time",
        )
        .closing()
    }

    /// A request body the client cut short or broke: the client's doing, never the
    /// upstream's or the app's.
    pub fn body_incomplete() -> Self {
        Self::client(
            StatusCode::BAD_REQUEST,
            "request body incomplete or malformed",
        )
        .closing()
    }

    pub fn response(&self) -> Response<ResponseBody> {
        let mut r = plain(self.status, &self.reason);
        if self.close {
            r.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if let Some(secs) = self.retry_after {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.websocket_version {
            r.headers_mut().insert(
                header::SEC_WEBSOCKET_VERSION,
                HeaderValue::from_static("13"),
            );
        }
        r
    }
}

impl Rejection {
    /// The same answer as raw HTTP/1.1 bytes, closing, for connections porch answers
    /// before hyper has them (past the per-IP limit, out of descriptors).
    pub fn wire_bytes(&self) -> Vec<u8> {
        let text = plain_text(self.status, &self.reason);
        let retry = self
            .retry_after
            .map_or(String::new(), |s| format!("Retry-After: {s}\r\n"));
        format!(
            "HTTP/1.1 {} {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n{retry}Connection: close\r\n\r\n{text}",
            self.status.as_u16(),
            self.status.canonical_reason().unwrap_or(""),
            text.len()
        )
        .into_bytes()
    }
}

impl From<Rejection> for Response<ResponseBody> {
    fn from(r: Rejection) -> Self {
        r.response()
    }
}

impl From<Reject> for Rejection {
    fn from(r: Reject) -> Self {
        let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::BAD_REQUEST);
        Rejection::client(status, r.reason).closing()
    }
}

/// A short plain-text answer from porch. A 400 always closes: the framing of what
/// follows is in doubt.
fn plain_text(status: StatusCode, why: &str) -> String {
    format!(
        "{} {}: {why}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    )
}

pub(crate) fn plain(status: StatusCode, why: &str) -> Response<ResponseBody> {
    let mut r = Response::new(ResponseBody::full(plain_text(status, why)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if status == StatusCode::BAD_REQUEST {
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    r
}

// ---------------------------------------------------------------------------------------
// In band: a stand-in request for a rejected head

/// The header that carries a rejection to the handler, with this process's random token
/// so no client can forge it.
pub const IN_BAND_HEADER: &str = "x-porch-reject";

fn token() -> &'static str {
    static TOKEN: OnceLock<String> = OnceLock::new();
    TOKEN.get_or_init(|| {
        use std::hash::{BuildHasher, Hasher};
        let mut token = String::new();
        for _ in 0..2 {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u128(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos()),
            );
            token.push_str(&format!("{:016x}", h.finish()));
        }
        token
    })
}

/// A request standing in for a rejected head. hyper answers it in order, after any
/// responses it still owes for earlier pipelined requests.
pub(crate) fn stand_in_request(r: Reject) -> String {
    format!(
        "GET / HTTP/1.1\r\nHost: porch\r\n{IN_BAND_HEADER}: {} {} {}\r\n\r\n",
        token(),
        r.status,
        r.reason
    )
}

/// The rejection a stand-in request carries, if `req` is one.
pub(crate) fn carried_by<B>(req: &Request<B>) -> Option<Rejection> {
    let value = std::str::from_utf8(req.headers().get(IN_BAND_HEADER)?.as_bytes()).ok()?;
    let mut parts = value.splitn(3, ' ');
    if parts.next()? != token() {
        return None;
    }
    let status: u16 = parts.next()?.parse().ok()?;
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    let reason = parts.next().unwrap_or("").to_string();
    Some(Rejection::client(status, reason).closing())
}

// ---------------------------------------------------------------------------------------
// Out of band: a body rejected mid-stream

/// Shared between a connection's `StrictIo` and the requests it carries (handed to each
/// beside it): set when a body broke the framing rules. The body then ends early but
/// well-formed for hyper, so whoever reads it must check here before trusting it as
/// complete: the app route answers instead of dispatching, the proxy aborts the upstream
/// request.
#[derive(Clone, Default)]
pub struct Verdict(Arc<Mutex<Option<Reject>>>);

impl Verdict {
    pub fn rejected(&self) -> Option<Reject> {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
    pub(crate) fn set(&self, r: Reject) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stand_in_requests_carry_their_rejection_and_cannot_be_forged() {
        let reject = Reject {
            status: 431,
            reason: "too many header fields",
        };
        let text = stand_in_request(reject);
        let value = text
            .lines()
            .find_map(|l| l.strip_prefix("x-porch-reject: "))
            .unwrap();
        let req = Request::get("/")
            .header(IN_BAND_HEADER, value)
            .body(())
            .unwrap();
        let r = carried_by(&req).unwrap();
        assert_eq!(r, Rejection::from(reject));
        assert_eq!(r.fault, Fault::Client);
        let resp = r.response();
        assert_eq!(resp.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        assert_eq!(resp.headers()[header::CONNECTION], "close");

        let forged = Request::get("/")
            .header(IN_BAND_HEADER, "0123 400 forged")
            .body(())
            .unwrap();
        assert!(carried_by(&forged).is_none());
    }

    #[test]
    fn worker_failures() {
        assert_eq!(
            Rejection::worker_failed(Some(504)).status,
            StatusCode::GATEWAY_TIMEOUT
        );
        for code in [Some(502), None] {
            let r = Rejection::worker_failed(code);
            assert_eq!((r.status, r.fault), (StatusCode::BAD_GATEWAY, Fault::App));
        }
        for r in [
            Rejection::body_too_large(),
            Rejection::body_timed_out(),
            Rejection::body_incomplete(),
        ] {
            assert_eq!(r.fault, Fault::Client);
            assert_eq!(r.response().headers()[header::CONNECTION], "close");
        }
        let r = Rejection::porch(StatusCode::SERVICE_UNAVAILABLE, "busy").retry_after(1);
        assert_eq!(r.response().headers()[header::RETRY_AFTER], "1");
    }
}
