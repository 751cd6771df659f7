//! Turning an upstream's response into the client's: streamed, or a tunnel after `101`.

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use super::body::UpstreamBody;
use super::headers::strip_hop_by_hop;
use super::pool::{Lease, Sender};
use crate::body::ResponseBody;
use crate::reject::Rejection;
use porch_config::UpstreamConfig;

/// The client's answer: the upstream's status and headers (hop-by-hop ones removed) and
/// its body streamed; or, for `101 Switching Protocols`, a tunnel between both sides.
pub(super) fn respond(
    mut resp: Response<Incoming>,
    sender: Sender,
    lease: Lease,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    cfg: &UpstreamConfig,
) -> Response<ResponseBody> {
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client_upgrade) = client_upgrade else {
            return Rejection::upstream(
                StatusCode::BAD_GATEWAY,
                "the upstream server switched protocols unasked",
            )
            .response();
        };
        let upstream_upgrade = hyper::upgrade::on(&mut resp);
        let target = lease.server.target.to_string();
        tokio::spawn(async move {
            // The lease keeps the WebSocket counted as an active request until it closes.
            let _lease = lease;
            let _sender = sender;
            match tokio::join!(client_upgrade, upstream_upgrade) {
                (Ok(client), Ok(upstream)) => {
                    let mut client = TokioIo::new(client);
                    let mut upstream = TokioIo::new(upstream);
                    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await
                    {
                        tracing::debug!("tunnel to {target} ended: {e}");
                    }
                }
                (Err(e), _) => tracing::warn!("client connection could not switch protocols: {e}"),
                (_, Err(e)) => tracing::warn!("upstream {target} could not switch protocols: {e}"),
            }
        });
        let (mut parts, _) = resp.into_parts();
        let upgrade_to = parts.headers.get(header::UPGRADE).cloned();
        strip_hop_by_hop(&mut parts.headers);
        if let Some(u) = upgrade_to {
            parts.headers.insert(header::UPGRADE, u);
        }
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        return Response::from_parts(parts, ResponseBody::empty());
    }
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    let body = UpstreamBody::new(body, sender, lease, cfg);
    Response::from_parts(parts, ResponseBody::Upstream(body))
}
