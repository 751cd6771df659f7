//! Turning an upstream's response into the client's: streamed, or a tunnel after `101`.

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use super::body::UpstreamBody;
use super::headers::{strip_hop_by_hop, switched_as_offered};
use super::pool::{Lease, Sender};
use super::tunnel::{splice, Ended};
use crate::body::ResponseBody;
use crate::reject::Rejection;
use porch_config::UpstreamConfig;

/// The client's answer: the upstream's status and headers (hop-by-hop ones removed) and
/// its body streamed; or, for `101 Switching Protocols`, a tunnel between both sides.
/// `client_upgrade`: the protocols offered upstream and the client's side of the switch,
/// when the client asked for one the route allows.
/// A client's offer to switch protocols, waiting for the upstream's answer.
pub(super) struct ClientUpgrade {
    pub offered: HeaderValue,
    pub on: hyper::upgrade::OnUpgrade,
    pub hold: Option<crate::held::ConnectionHold>,
}

pub(super) fn respond(
    mut resp: Response<Incoming>,
    sender: Sender,
    lease: Lease,
    client_upgrade: Option<ClientUpgrade>,
    cfg: &UpstreamConfig,
) -> Response<ResponseBody> {
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(ClientUpgrade {
            offered,
            on: client_upgrade,
            hold,
        }) = client_upgrade
        else {
            return Rejection::upstream(
                StatusCode::BAD_GATEWAY,
                "the upstream server switched protocols unasked",
            )
            .response();
        };
        if !switched_as_offered(resp.headers(), &offered) {
            return Rejection::upstream(
                StatusCode::BAD_GATEWAY,
                "the upstream server switched to a protocol not offered",
            )
            .response();
        }
        let upstream_upgrade = hyper::upgrade::on(&mut resp);
        let target = lease.server.target.to_string();
        let idle = cfg.tunnel_idle_timeout;
        tokio::spawn(async move {
            // The lease keeps the WebSocket counted as an active request until it closes;
            // the hold keeps the client's connection under the connection limits.
            let _lease = lease;
            let _hold = hold;
            let _sender = sender;
            match tokio::join!(client_upgrade, upstream_upgrade) {
                (Ok(client), Ok(upstream)) => {
                    match splice(TokioIo::new(client), TokioIo::new(upstream), idle).await {
                        Ok(Ended::Closed) => {}
                        Ok(Ended::Idle) => tracing::debug!(
                            "tunnel to {target} closed after {idle:?} without traffic"
                        ),
                        Err(e) => tracing::debug!("tunnel to {target} ended: {e}"),
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
