//! WebSockets for ASGI apps. porch checks the handshake, the app answers it in its worker
//! (accept, refuse, or its own HTTP response), and after a `101` porch speaks RFC 6455
//! with the client itself (tungstenite): framing, masking, fragments, UTF-8 checks, pings
//! and the closing handshake stay in the front, and the worker sees whole messages only.
//!
//! A socket's messages to the worker go through its link ([`Uplink`], bounded: a client
//! that sends faster than the app reads is held back); the worker's go through the reply
//! channel, which spills to a file past its memory bounds, so a client that stops
//! reading costs disk pages until `send_timeout` closes it.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::time::{sleep_until, timeout, Instant};
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::body::ResponseBody;
use crate::dispatch::{Reply, ReplyReceiver, Uplink};
use crate::reject::Rejection;
use crate::Front;
use porch_ipc as ipc;

/// How long porch waits for the client's answer to its close frame before it drops the
/// connection (RFC 6455 leaves the time to the endpoint).
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// A checked RFC 6455 handshake, waiting for the app's answer.
pub(super) struct Handshake {
    accept: HeaderValue,
}

/// `Some` when the request asks for a WebSocket; a [`Rejection`] when it asks wrongly.
pub(super) fn handshake<B>(req: &Request<B>) -> Result<Option<Handshake>, Rejection> {
    let headers = req.headers();
    if !has_token(headers, header::UPGRADE, "websocket") {
        return Ok(None);
    }
    if req.method() != Method::GET || req.version() != Version::HTTP_11 {
        return Err(Rejection::bad_handshake(
            "a WebSocket handshake is a GET over HTTP/1.1",
        ));
    }
    if !has_token(headers, header::CONNECTION, "upgrade") {
        return Err(Rejection::bad_handshake(
            "a WebSocket handshake needs `Connection: Upgrade`",
        ));
    }
    let version = headers.get(header::SEC_WEBSOCKET_VERSION);
    if version.is_none_or(|v| v.as_bytes().trim_ascii() != b"13") {
        return Err(Rejection::websocket_version());
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .map(|k| k.as_bytes().trim_ascii())
        .filter(|k| is_nonce(k))
        .ok_or(Rejection::bad_handshake(
            "a WebSocket handshake needs a Sec-WebSocket-Key of 16 bytes in base64",
        ))?;
    let accept = HeaderValue::from_str(&derive_accept_key(key)).expect("base64 is a valid value");
    Ok(Some(Handshake { accept }))
}

/// Whether a comma-separated header holds `token` (case-insensitive).
fn has_token(headers: &http::HeaderMap, name: HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

/// 16 bytes in base64: 22 characters of the alphabet, then `==`.
fn is_nonce(key: &[u8]) -> bool {
    key.len() == 24
        && key.ends_with(b"==")
        && key[..22]
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

/// The `101` for an accepted handshake: the app's headers (its subprotocol, cookies) and
/// the ones RFC 6455 asks for, which only porch sets.
pub(super) fn switching(head: ipc::Head, handshake: &Handshake) -> Response<ResponseBody> {
    let mut resp = Response::new(ResponseBody::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = resp.headers_mut();
    for (name, value) in head.headers {
        let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(&name),
            HeaderValue::from_maybe_shared(value),
        ) else {
            continue; // the worker validated these
        };
        if super::reply::is_hop_by_hop(n.as_str().as_bytes()) || n == header::SEC_WEBSOCKET_ACCEPT {
            continue;
        }
        headers.append(n, v);
    }
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::SEC_WEBSOCKET_ACCEPT, handshake.accept.clone());
    resp
}

/// One accepted WebSocket, from the switch to the close.
pub(super) struct Session {
    pub replies: ReplyReceiver,
    pub uplink: Uplink,
    pub cfg: porch_config::WebSocketConfig,
    /// Longest a message may wait for the client to take it.
    pub send_timeout: Duration,
    pub front: Arc<Front>,
}

/// How a session ended, for the app's `websocket.disconnect`.
struct Ended {
    code: u16,
    reason: String,
}

impl Ended {
    fn abnormal() -> Ended {
        Ended {
            code: 1006,
            reason: String::new(),
        }
    }
}

impl Session {
    /// Runs the socket once hyper hands the connection over.
    pub(super) async fn run(mut self, upgrade: OnUpgrade) {
        let Ok(upgraded) = upgrade.await else {
            self.uplink.closed(1006, String::new()).await;
            return;
        };
        let metrics = &self.front.metrics;
        metrics.websockets_open.fetch_add(1, Ordering::Relaxed);
        metrics.websockets.fetch_add(1, Ordering::Relaxed);
        let config = WebSocketConfig::default()
            .max_message_size(Some(self.cfg.max_message))
            .max_frame_size(Some(self.cfg.max_message));
        let ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config))
                .await;
        let ended = self.serve(ws).await;
        let metrics = &self.front.metrics;
        metrics.websockets_open.fetch_sub(1, Ordering::Relaxed);
        self.uplink.closed(ended.code, ended.reason).await;
    }

    async fn serve<S>(&mut self, ws: WebSocketStream<S>) -> Ended
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let (mut to_client, mut from_client) = ws.split();
        let mut next_ping = self.cfg.ping_interval.map(|i| Instant::now() + i);
        let mut pong_due: Option<Instant> = None;
        loop {
            tokio::select! {
                incoming = from_client.next() => {
                    // Anything from the client shows it is alive.
                    pong_due = None;
                    match incoming {
                        Some(Ok(Message::Text(text))) => {
                            if !self.uplink.message(true, Bytes::from(text)).await {
                                return close(to_client, from_client, 1011, "the app's worker stopped").await;
                            }
                        }
                        Some(Ok(Message::Binary(data))) => {
                            if !self.uplink.message(false, data).await {
                                return close(to_client, from_client, 1011, "the app's worker stopped").await;
                            }
                        }
                        Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                        Some(Ok(Message::Close(frame))) => {
                            // tungstenite answers the close; reading on sends the answer.
                            let _ = timeout(CLOSE_WAIT, async {
                                while from_client.next().await.is_some() {}
                            })
                            .await;
                            return match frame {
                                Some(f) => Ended { code: f.code.into(), reason: f.reason.to_string() },
                                None => Ended { code: 1005, reason: String::new() },
                            };
                        }
                        Some(Err(e)) => {
                            let Some((code, why)) = refusal(&e) else {
                                return Ended::abnormal();
                            };
                            let _ = close(to_client, from_client, code, why).await;
                            return Ended { code, reason: why.to_owned() };
                        }
                        None => return Ended::abnormal(),
                    }
                }
                reply = self.replies.recv() => match reply {
                    Some(Reply::Message(m)) => {
                        let message = if m.text {
                            match String::from_utf8(m.data.to_vec()) {
                                Ok(text) => Message::text(text),
                                Err(_) => return close(to_client, from_client, 1011, "the app sent invalid text").await,
                            }
                        } else {
                            Message::Binary(m.data)
                        };
                        match timeout(self.send_timeout, to_client.send(message)).await {
                            Ok(Ok(())) => {}
                            Ok(Err(_)) => return Ended::abnormal(),
                            Err(_) => {
                                self.front.metrics.send_timeouts.fetch_add(1, Ordering::Relaxed);
                                return Ended::abnormal();
                            }
                        }
                    }
                    Some(Reply::Close(c)) => return close(to_client, from_client, c.code, &c.reason).await,
                    // The app's task ended with the socket open.
                    Some(Reply::End(true)) => return close(to_client, from_client, 1000, "").await,
                    Some(Reply::End(false)) => return close(to_client, from_client, 1011, "the app failed").await,
                    _ => return close(to_client, from_client, 1011, "the app's worker stopped").await,
                },
                _ = sleep_until_opt(next_ping), if pong_due.is_none() => {
                    let interval = self.cfg.ping_interval.expect("pings are on");
                    next_ping = Some(Instant::now() + interval);
                    pong_due = Some(Instant::now() + self.cfg.ping_timeout);
                    if timeout(self.send_timeout, to_client.send(Message::Ping(Bytes::new()))).await.is_err() {
                        return Ended::abnormal();
                    }
                }
                _ = sleep_until_opt(pong_due) => {
                    return close(to_client, from_client, 1011, "ping timeout").await;
                }
            }
        }
    }
}

/// The close code for a client that broke the protocol, if it can still be told.
fn refusal(e: &WsError) -> Option<(u16, &'static str)> {
    match e {
        WsError::Capacity(CapacityError::MessageTooLong { .. }) => Some((1009, "message too big")),
        WsError::Capacity(_) => Some((1009, "frame too big")),
        WsError::Utf8(_) => Some((1007, "invalid UTF-8 in a text message")),
        WsError::Protocol(_) => Some((1002, "protocol error")),
        _ => None,
    }
}

/// Sends a close frame and waits (briefly) for the client's; returns what the app hears.
async fn close<S>(
    mut to_client: futures_util::stream::SplitSink<WebSocketStream<S>, Message>,
    mut from_client: futures_util::stream::SplitStream<WebSocketStream<S>>,
    code: u16,
    reason: &str,
) -> Ended
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: reason.to_owned().into(),
    };
    let _ = timeout(CLOSE_WAIT, to_client.send(Message::Close(Some(frame)))).await;
    let answered = timeout(CLOSE_WAIT, async {
        loop {
            match from_client.next().await {
                Some(Ok(Message::Close(f))) => return f,
                Some(Ok(_)) => continue, // messages in flight before the close are dropped
                _ => return None,
            }
        }
    })
    .await;
    let _ = timeout(CLOSE_WAIT, to_client.close()).await;
    match answered {
        Ok(Some(f)) => Ended {
            code: f.code.into(),
            reason: f.reason.to_string(),
        },
        _ => Ended {
            code,
            reason: reason.to_owned(),
        },
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder().method("GET").uri("/ws");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    const GOOD: [(&str, &str); 4] = [
        ("upgrade", "websocket"),
        ("connection", "keep-alive, Upgrade"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];

    #[test]
    fn rfc_6455_handshake_is_checked_and_answered() {
        let hs = handshake(&request(&GOOD)).unwrap().expect("a handshake");
        // RFC 6455 section 1.3's example.
        assert_eq!(hs.accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert!(handshake(&request(&[])).unwrap().is_none());
        let status = |h: &[(&str, &str)]| handshake(&request(h)).err().map(|r| r.status);
        let mut old = GOOD;
        old[2] = ("sec-websocket-version", "8");
        assert_eq!(status(&old), Some(StatusCode::UPGRADE_REQUIRED));
        let mut keyless = GOOD;
        keyless[3] = ("sec-websocket-key", "short");
        assert_eq!(status(&keyless), Some(StatusCode::BAD_REQUEST));
        let mut no_connection = GOOD;
        no_connection[1] = ("connection", "keep-alive");
        assert_eq!(status(&no_connection), Some(StatusCode::BAD_REQUEST));
    }

    #[test]
    fn the_switch_keeps_the_apps_headers_and_sets_rfc_6455s() {
        let hs = handshake(&request(&GOOD)).unwrap().unwrap();
        let head = ipc::Head {
            status: 101,
            headers: vec![
                ("sec-websocket-protocol".into(), "chat".into()),
                ("sec-websocket-accept".into(), "forged".into()),
                ("connection".into(), "close".into()),
            ],
            reason: Bytes::new(),
        };
        let resp = switching(head, &hs);
        let h = resp.headers();
        assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(h["sec-websocket-protocol"], "chat");
        assert_eq!(h["sec-websocket-accept"], "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert_eq!(h["connection"], "Upgrade");
        assert_eq!(h.get_all("sec-websocket-accept").iter().count(), 1);
    }
}
