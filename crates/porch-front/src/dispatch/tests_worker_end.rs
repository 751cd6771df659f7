//! A worker that dies, breaks the protocol, drains or retires; the signals it is sent.

use super::signal::one_process;
use super::tests::*;
use super::*;
use porch_ipc::Kind;
use tokio::io::AsyncWriteExt;
use tokio::time::timeout;

/// The worker dies with one request running and one sent ahead: the running one fails,
/// the other is served by the next worker.
async fn worker_dies_mid_request(head_sent: bool) {
    let mut s = Setup::new(config(1, 1));
    let (a, mut rx_a) = job("/a");
    let (b, mut rx_b) = job_with_body("/b", Bytes::from_static(b"payload"));
    s.push(a).await;
    s.push(b).await;
    let (id_a, _) = s.worker.request().await;
    s.worker.request().await;
    if head_sent {
        s.worker.head(id_a, 200).await;
        s.worker.body(id_a, b"part").await;
    }
    drop(s.worker);

    let (end, served, running) = ended_within(&mut s.link, AT_ONCE).await;
    assert_eq!(end, LinkEnd::WorkerGone);
    assert_eq!(served, 0);
    assert_eq!(running, [line("/a")]);
    let expected: &[&str] = if head_sent {
        &["head 200", "body part", "end false"]
    } else {
        &["fail 502"]
    };
    assert_eq!(replies(&mut rx_a), expected);
    assert!(rx_a.recv().await.is_none());
    assert!(replies(&mut rx_b).is_empty(), "b never reached the app");
    assert_eq!(s.queue_rx.len(), 1, "b is back in the shared queue");

    // The successor takes it from the queue and b's client gets that response.
    let mut next = Setup::on_queue(config(1, 1), s.queue.clone(), s.queue_rx.clone(), true);
    let (id, req) = next.worker.request().await;
    assert_eq!(req, request("/b", Bytes::from_static(b"payload")));
    next.worker.respond(id, "second worker").await;
    settle().await;
    assert_eq!(
        replies(&mut rx_b),
        ["head 200", "body second worker", "end true"]
    );
}

#[tokio::test(start_paused = true)]
async fn worker_gone_before_the_head_fails_502_and_requeues_the_waiting_job() {
    worker_dies_mid_request(false).await;
}

#[tokio::test(start_paused = true)]
async fn worker_gone_after_the_head_aborts_the_response_and_requeues_the_waiting_job() {
    worker_dies_mid_request(true).await;
}

#[tokio::test(start_paused = true)]
async fn a_requeued_job_that_finds_the_queue_full_fails_502() {
    let (queue, queue_rx) = async_channel::bounded(1);
    let mut s = Setup::on_queue(config(1, 1), queue, queue_rx, true);
    let (a, _rx_a) = job("/a");
    let (b, mut rx_b) = job("/b");
    s.push(a).await;
    s.push(b).await;
    s.worker.request().await;
    s.worker.request().await;
    let (c, _rx_c) = job("/c");
    s.push(c).await; // fills the queue: the link has no room to take it
    drop(s.worker);
    ended_within(&mut s.link, AT_ONCE).await;
    assert_eq!(replies(&mut rx_b), ["fail 502"]);
    assert_eq!(s.queue_rx.try_recv().unwrap().line, line("/c"));
}

#[tokio::test(start_paused = true)]
async fn a_protocol_breach_ends_the_link_and_fails_the_running_request() {
    let mut s = Setup::new(config(1, 0));
    let (a, mut rx) = job("/a");
    s.push(a).await;
    let (id, _) = s.worker.request().await;
    // Request frames only go to a worker, never come from one.
    s.worker.send(Kind::Request, id, b"").await;
    let (end, _, running) = s.ended_within(AT_ONCE).await;
    assert!(
        matches!(&end, LinkEnd::Corrupt(e) if e.contains("request")),
        "{end:?}"
    );
    assert_eq!(running, [line("/a")]);
    assert_eq!(replies(&mut rx), ["fail 502"]);
}

#[tokio::test(start_paused = true)]
async fn garbage_from_the_worker_ends_the_link() {
    let mut s = Setup::new(config(1, 0));
    s.worker
        .conn
        .write_all(&[5, 0, 0, 0, 99, 0, 0, 0, 0])
        .await
        .unwrap();
    let (end, _, _) = s.ended_within(AT_ONCE).await;
    assert_eq!(
        end,
        LinkEnd::Corrupt(ipc::DecodeError::UnknownKind(99).to_string())
    );
}

#[tokio::test(start_paused = true)]
async fn draining_finishes_running_requests_and_takes_no_new_ones() {
    let mut s = Setup::new(config(1, 1));
    let (a, mut rx_a) = job("/a");
    s.push(a).await;
    let (id, _) = s.worker.request().await;
    s.drain.send(true).unwrap();
    settle().await; // the link has seen it
    let (b, _rx_b) = job("/b");
    s.push(b).await;
    assert!(s
        .worker
        .frame_within(Duration::from_secs(1))
        .await
        .is_none());
    assert!(
        !s.link.is_finished(),
        "a draining link waits for its running request"
    );

    s.worker.respond(id, "last").await;
    let (end, served, running) = s.ended_within(AT_ONCE).await;
    assert_eq!((end, served, running.len()), (LinkEnd::Drained, 1, 0));
    assert_eq!(replies(&mut rx_a), ["head 200", "body last", "end true"]);
    assert_eq!(s.queue_rx.len(), 1, "b stays queued for another worker");
    // The link closed its end: the worker sees end of stream and exits.
    assert!(s.worker.frame().await.is_none());
}

#[tokio::test(start_paused = true)]
async fn a_closed_queue_drains_the_link() {
    let mut s = Setup::new(config(1, 0));
    s.queue.close();
    let (end, _, _) = s.ended_within(AT_ONCE).await;
    assert_eq!(end, LinkEnd::Drained);
}

#[tokio::test(start_paused = true)]
async fn max_requests_notifies_retire_once_and_keeps_serving() {
    let mut cfg = config(1, 0);
    cfg.max_requests = Some(2);
    let mut s = Setup::new(cfg);
    let retired = |s: &Setup| {
        let retire = s.retire.clone();
        async move {
            timeout(Duration::from_secs(1), retire.notified())
                .await
                .is_ok()
        }
    };
    for i in 1..=3 {
        let (j, mut rx) = job(&format!("/{i}"));
        s.push(j).await;
        let (id, _) = s.worker.request().await;
        s.worker.respond(id, "x").await;
        settle().await;
        assert_eq!(replies(&mut rx).len(), 3, "request {i} is served");
        assert_eq!(
            retired(&s).await,
            i == 2,
            "retire notified after request {i}?"
        );
    }
    s.drain.send(true).unwrap();
    let (end, served, _) = s.ended_within(AT_ONCE).await;
    assert_eq!((end, served), (LinkEnd::Drained, 3));
}

/// A one-thread worker runs the request and writes its response without reading (that
/// is how `porch.worker` serves with `threads = 1`). A large request sent ahead to it at
/// that moment must not leave both sides blocked in a write.
#[tokio::test(start_paused = true)]
async fn a_large_request_sent_ahead_does_not_deadlock_with_a_large_response() {
    let mut s = Setup::new(config(1, 1));
    let (a, mut rx_a) = job("/download");
    s.push(a).await;
    let (id, _) = s.worker.request().await;
    let upload = Bytes::from(vec![b'u'; 1 << 20]);
    let (b, _rx_b) = job_with_body("/upload", upload.clone());
    s.push(b).await;

    let big = vec![b'd'; 4 << 20];
    let mut response = Vec::new();
    let mut head = Vec::new();
    ipc::Head {
        status: 200,
        headers: vec![],
        reason: Bytes::new(),
    }
    .encode_payload(&mut head);
    ipc::encode_vec(&mut response, Kind::Head, id, &head);
    ipc::encode_vec(&mut response, Kind::Body, id, &big);
    ipc::encode_vec(&mut response, Kind::End, id, &[1]);
    timeout(Duration::from_secs(10), s.worker.conn.write_all(&response))
        .await
        .expect("the link reads the response while it sends a request")
        .unwrap();

    let (_, req) = s.worker.request().await;
    assert_eq!(req, request("/upload", upload));
    settle().await;
    let got = replies(&mut rx_a);
    assert_eq!(got.len(), 3);
    assert_eq!(got[0], "head 200");
    assert_eq!(got[1].len(), "body ".len() + big.len());
    assert_eq!(got[2], "end true");
}

#[test]
fn signal_stack_dump_sends_sigusr1_to_the_worker_pid() {
    use std::os::unix::process::ExitStatusExt;
    let mut child = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .expect("spawn sleep");
    assert!(signal_stack_dump(child.id()));
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGUSR1));
}

#[test]
fn only_a_single_process_is_ever_signalled() {
    // Checked on the pure conversion: a test calling kill(2) with these would, on a
    // regression, signal the test's process group or every process.
    assert_eq!(one_process(4242), Some(4242));
    assert_eq!(one_process(i32::MAX as u32), Some(i32::MAX));
    assert_eq!(
        one_process(0),
        None,
        "kill(0) signals our own process group"
    );
    assert_eq!(
        one_process(u32::MAX),
        None,
        "kill(-1) signals every process"
    );
    assert_eq!(
        one_process(1 << 31),
        None,
        "kill(-n) signals a process group"
    );
}
