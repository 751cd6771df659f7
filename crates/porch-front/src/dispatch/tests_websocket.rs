//! A link to an ASGI worker with WebSockets: a `101` turns a request into a socket that
//! frees its place, messages flow both ways, and a retiring worker's sockets are closed
//! with 1012 after the graceful time, a dead worker's with 1011.

use super::tests::*;
use super::*;
use porch_ipc::Kind;
use tokio::io::AsyncWriteExt;
use tokio::time::Instant as TokioInstant;

const GRACEFUL: Duration = Duration::from_secs(10);

fn asgi(tasks: usize) -> LinkConfig {
    LinkConfig {
        asgi: true,
        graceful: GRACEFUL,
        ..config(tasks, 0)
    }
}

fn handshake(target: &str) -> (Job, ReplyReceiver) {
    let (mut job, rx) = job(target);
    job.request.headers.push((
        Bytes::from_static(b"upgrade"),
        Bytes::from_static(b"websocket"),
    ));
    job.websocket = true;
    (job, rx)
}

/// Opens a socket: the handshake reaches the worker, which accepts it.
async fn open(s: &mut Setup, target: &str) -> (u32, ReplyReceiver, Uplink) {
    let (job, mut rx) = handshake(target);
    s.push(job).await;
    let (id, req) = s.worker.request().await;
    assert!(req.is_websocket());
    s.worker.head(id, 101).await;
    let uplink = match rx.recv().await {
        Some(Reply::Switched(head, uplink)) => {
            assert_eq!(head.status, 101);
            uplink
        }
        other => panic!("expected the switch, got {other:?}"),
    };
    (id, rx, uplink)
}

#[tokio::test(start_paused = true)]
async fn a_socket_frees_its_place_and_carries_messages_both_ways() {
    // One task at a time: the socket must not hold it.
    let mut s = Setup::new(asgi(1));
    let (id, mut rx, uplink) = open(&mut s, "/ws").await;

    let (next, mut rx_next) = job("/next");
    s.push(next).await;
    let (id_next, _) = s.worker.request().await;
    s.worker.respond(id_next, "ok").await;

    assert!(uplink.message(true, Bytes::from_static(b"hi")).await);
    let f = s.worker.frame_within(AT_ONCE).await.expect("the message");
    assert_eq!(f.kind, Kind::WsMessage);
    assert_eq!(f.id, id);
    let m = ipc::WsMessage::decode(&f.payload).unwrap();
    assert!(m.text && &m.data[..] == b"hi");

    let mut out = Vec::new();
    ipc::WsMessage::encode_vec(&mut out, id, true, b"hello");
    s.worker.conn.write_all(&out).await.unwrap();
    s.worker.end(id, true).await;
    settle().await;
    assert_eq!(replies(&mut rx), ["message hello", "end true"]);
    assert_eq!(replies(&mut rx_next), ["head 200", "body ok", "end true"]);

    // The socket is over: a late message from its client goes nowhere.
    uplink.closed(1000, String::new()).await;
    assert!(s
        .worker
        .frame_within(Duration::from_secs(1))
        .await
        .is_none());
    s.drain.send(true).unwrap();
    let (end, served, _) = s.ended_within(AT_ONCE).await;
    assert_eq!((end, served), (LinkEnd::Drained, 2));
}

#[tokio::test(start_paused = true)]
async fn a_timeout_never_closes_an_open_socket() {
    let mut s = Setup::new(asgi(4));
    let (_, mut rx, _uplink) = open(&mut s, "/ws").await;
    tokio::time::sleep(TIMEOUT * 3).await;
    assert!(
        replies(&mut rx).is_empty(),
        "a quiet socket is not a stuck request"
    );
    assert!(
        s.worker.frame_within(AT_ONCE).await.is_none(),
        "no cancel frame"
    );
    assert!(!s.link.is_finished());
}

#[tokio::test(start_paused = true)]
async fn a_retiring_worker_closes_its_sockets_with_1012_after_the_graceful_time() {
    let mut s = Setup::new(asgi(4));
    let (id, mut rx, uplink) = open(&mut s, "/ws").await;
    let t0 = TokioInstant::now();
    s.drain.send(true).unwrap();

    // Within the graceful time, the socket lives: messages still flow.
    tokio::time::sleep(GRACEFUL / 2).await;
    assert!(uplink.message(false, Bytes::from_static(b"\x01")).await);
    let f = s.worker.frame_within(AT_ONCE).await.expect("the message");
    assert_eq!((f.kind, f.id), (Kind::WsMessage, id));
    assert!(!s.link.is_finished());

    // At its end: 1012 to the client and to the app, and the link is done.
    let f = s
        .worker
        .frame_within(GRACEFUL)
        .await
        .expect("a close frame");
    assert_eq!((f.kind, f.id), (Kind::WsClose, id));
    assert_eq!(ipc::WsClose::decode(&f.payload).unwrap().code, 1012);
    assert_took(t0.elapsed(), GRACEFUL);
    let (end, _, _) = s.ended_within(AT_ONCE).await;
    assert_eq!(end, LinkEnd::Drained);
    assert_eq!(replies(&mut rx), ["close 1012 service restart"]);
}

#[tokio::test(start_paused = true)]
async fn a_client_that_closes_is_reported_once_and_a_dead_worker_closes_the_rest_with_1011() {
    let mut s = Setup::new(asgi(4));
    let (a, _rx_a, uplink_a) = open(&mut s, "/a").await;
    let (_, mut rx_b, _uplink_b) = open(&mut s, "/b").await;
    uplink_a.closed(1001, "going away".into()).await;
    uplink_a.closed(1001, "going away".into()).await;
    let f = s.worker.frame_within(AT_ONCE).await.expect("the close");
    assert_eq!((f.kind, f.id), (Kind::WsClose, a));
    let c = ipc::WsClose::decode(&f.payload).unwrap();
    assert_eq!((c.code, c.reason.as_str()), (1001, "going away"));
    assert!(s.worker.frame_within(AT_ONCE).await.is_none(), "told once");

    drop(s.worker);
    let (end, _, _) = ended_within(&mut s.link, AT_ONCE).await;
    assert_eq!(end, LinkEnd::WorkerGone);
    assert_eq!(replies(&mut rx_b), ["close 1011 the app's worker stopped"]);
}

#[tokio::test(start_paused = true)]
async fn a_refused_handshake_is_an_ordinary_response() {
    let mut s = Setup::new(asgi(4));
    let (job, mut rx) = handshake("/ws");
    s.push(job).await;
    let (id, _) = s.worker.request().await;
    s.worker.head(id, 403).await;
    s.worker.end(id, true).await;
    settle().await;
    assert_eq!(replies(&mut rx), ["head 403", "end true"]);
}
