//! The admin listener: `/healthz` for load balancers and container health checks,
//! `/metrics` in Prometheus' text format. Kept off the public listeners.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::body::ResponseBody;
use crate::reject::Rejection;
use crate::Front;

pub async fn serve_admin(
    front: Arc<Front>,
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (stream, _) = tokio::select! {
            _ = shutdown.changed() => return,
            a = listener.accept() => match a { Ok(x) => x, Err(_) => continue },
        };
        let front = front.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let front = front.clone();
                async move { Ok::<_, Infallible>(admin(&front, req)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn admin(front: &Front, req: Request<Incoming>) -> Response<ResponseBody> {
    match req.uri().path() {
        "/healthz" => {
            let has_workers = front
                .workers
                .as_ref()
                .is_none_or(|w| w.alive.load(Ordering::Relaxed) > 0);
            if front.ready.load(Ordering::Relaxed) && has_workers {
                Response::new(ResponseBody::full("ok\n"))
            } else {
                Rejection::porch(StatusCode::SERVICE_UNAVAILABLE, "not ready").response()
            }
        }
        // Liveness: answered by the front's event loop whatever the workers do (busy,
        // being replaced, draining), so a busy pod is never restarted for it.
        "/livez" => Response::new(ResponseBody::full("ok\n")),
        "/metrics" => {
            let mut r = Response::new(ResponseBody::full(crate::metrics::render(front)));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            r
        }
        _ => Rejection::client(
            StatusCode::NOT_FOUND,
            "admin endpoints: /healthz, /livez, /metrics",
        )
        .response(),
    }
}
