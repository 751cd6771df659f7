//! Reverse proxy to upstream pools.

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use super::body::ResponseBody;
use super::{error, Peer};
use crate::config::UpstreamConfig;

/// Every upstream pool of the configuration, ready to forward requests.
pub struct Upstreams {
    names: Vec<String>,
}

impl Upstreams {
    pub fn new(cfg: &[UpstreamConfig]) -> std::io::Result<Upstreams> {
        Ok(Upstreams {
            names: cfg.iter().map(|u| u.name.clone()).collect(),
        })
    }

    /// Forwards `req` to a server of pool `name` and streams its answer back.
    pub async fn forward(
        &self,
        name: &str,
        req: Request<Incoming>,
        peer: Peer,
        tls: bool,
    ) -> Response<ResponseBody> {
        let _ = (req, peer, tls, &self.names, name);
        error(StatusCode::BAD_GATEWAY, "proxying is not available yet")
    }
}
