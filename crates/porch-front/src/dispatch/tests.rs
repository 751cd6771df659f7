//! The link's lifecycle over a real socket pair, under paused tokio time. The test plays
//! the worker: it reads the Request frames the link writes and answers with real
//! Head/Body/End/Stack frames, exactly as `porch.worker` does.

use super::*;
use std::sync::atomic::Ordering;
use tokio::io::AsyncWriteExt;

use tokio::task::JoinHandle;
use tokio::time::{timeout, Instant as TokioInstant};

const TIMEOUT: Duration = Duration::from_secs(30);
/// Within the timer's resolution: without any wait in the link.
pub(super) const AT_ONCE: Duration = Duration::from_millis(1);
/// Never signalled: the tests' links record stack requests instead of calling kill(2).
const PID: u32 = 4242;

pub(super) fn config(threads: usize, prefetch: usize) -> LinkConfig {
    LinkConfig {
        threads,
        prefetch,
        timeout: TIMEOUT,
        // Longer than any test: only the tests about the queue deadline set it.
        queue_timeout: Duration::from_secs(3600),
        max_requests: None,
        queue_stats: Arc::default(),
        capacity: Arc::default(),
        returned: None,
    }
}

pub(super) fn request(target: &str, body: Bytes) -> ipc::Request {
    ipc::Request {
        method: "GET".into(),
        target: Bytes::copy_from_slice(target.as_bytes()),
        protocol: "HTTP/1.1",
        https: false,
        remote_addr: "127.0.0.1".into(),
        remote_port: 40000,
        server_name: "localhost".into(),
        server_port: 8000,
        headers: vec![(
            Bytes::from_static(b"host"),
            Bytes::from_static(b"localhost"),
        )],
        body: ipc::RequestBody::Inline(body),
    }
}

fn line(target: &str) -> String {
    format!("GET {target} HTTP/1.1")
}

pub(super) fn job_with_body(target: &str, body: Bytes) -> (Job, mpsc::UnboundedReceiver<Reply>) {
    let (reply, rx) = mpsc::unbounded_channel();
    let job = Job {
        request: request(target, body),
        line: line(target),
        reply,
        queued_at: Instant::now(),
        body_file: None,
        fate: Arc::default(),
    };
    (job, rx)
}

pub(super) fn job(target: &str) -> (Job, mpsc::UnboundedReceiver<Reply>) {
    job_with_body(target, Bytes::new())
}

/// A reply as a short comparable string.
fn show(r: &Reply) -> String {
    match r {
        Reply::Head(h) => format!("head {}", h.status),
        Reply::Body(b) => format!("body {}", String::from_utf8_lossy(b)),
        Reply::End(ok) => format!("end {ok}"),
        Reply::Fail(code) => format!("fail {code}"),
    }
}

/// Every reply that has arrived so far, without waiting.
pub(super) fn replies(rx: &mut mpsc::UnboundedReceiver<Reply>) -> Vec<String> {
    std::iter::from_fn(|| rx.try_recv().ok())
        .map(|r| show(&r))
        .collect()
}

/// The test's end of a worker's socket.
pub(super) struct FakeWorker {
    pub(super) conn: UnixStream,
    pub(super) buf: BytesMut,
}

impl FakeWorker {
    /// The next frame from the front; `None` once the front closed the socket.
    pub(super) async fn frame(&mut self) -> Option<ipc::Frame> {
        loop {
            if let Some(f) = Decoder::next(&mut self.buf).expect("the front sends valid frames") {
                return Some(f);
            }
            if self.conn.read_buf(&mut self.buf).await.expect("read") == 0 {
                return None;
            }
        }
    }

    /// The next frame, if one comes within `d` (of paused time).
    pub(super) async fn frame_within(&mut self, d: Duration) -> Option<ipc::Frame> {
        timeout(d, self.frame()).await.ok().flatten()
    }

    pub(super) async fn request(&mut self) -> (u32, ipc::Request) {
        let f = self
            .frame_within(Duration::from_secs(1))
            .await
            .expect("a request frame");
        assert_eq!(f.kind, Kind::Request);
        (
            f.id,
            ipc::Request::decode(&f.payload).expect("a valid request"),
        )
    }

    pub(super) async fn send(&mut self, kind: Kind, id: u32, payload: &[u8]) {
        let mut out = Vec::new();
        ipc::encode_vec(&mut out, kind, id, payload);
        self.conn.write_all(&out).await.expect("write");
    }

    pub(super) async fn head(&mut self, id: u32, status: u16) {
        let mut payload = Vec::new();
        ipc::Head {
            status,
            headers: vec![(
                Bytes::from_static(b"content-type"),
                Bytes::from_static(b"text/plain"),
            )],
        }
        .encode_payload(&mut payload);
        self.send(Kind::Head, id, &payload).await;
    }

    pub(super) async fn body(&mut self, id: u32, data: &[u8]) {
        self.send(Kind::Body, id, data).await;
    }

    pub(super) async fn end(&mut self, id: u32, ok: bool) {
        self.send(Kind::End, id, &[ok as u8]).await;
    }

    pub(super) async fn respond(&mut self, id: u32, body: &str) {
        self.head(id, 200).await;
        self.body(id, body.as_bytes()).await;
        self.end(id, true).await;
    }
}

pub(super) type Served = (LinkEnd, u64, Vec<String>);

/// One link serving a fake worker from a queue, as `run_slot` runs it.
struct Setup {
    queue: async_channel::Sender<Job>,
    queue_rx: Queue,
    worker: FakeWorker,
    drain: watch::Sender<bool>,
    retire: Arc<Notify>,
    /// The pids the link asked for stacks.
    asked: mpsc::UnboundedReceiver<u32>,
    link: JoinHandle<Served>,
    stats: Arc<QueueStats>,
}

impl Setup {
    fn new(cfg: LinkConfig) -> Setup {
        let (queue, queue_rx) = async_channel::bounded(64);
        Setup::on_queue(cfg, queue, queue_rx, true)
    }

    /// A link on an existing queue (the queue's own sender requeues, as in production).
    /// `answer_ask`: what asking for a stack reports (whether a signal went out).
    fn on_queue(
        cfg: LinkConfig,
        queue: async_channel::Sender<Job>,
        queue_rx: Queue,
        answer_ask: bool,
    ) -> Setup {
        let (ours, theirs) = UnixStream::pair().expect("socketpair");
        let (asked_tx, asked) = mpsc::unbounded_channel();
        let link = Link::new(PID, ours, BytesMut::new(), queue.clone())
            .with_ask_stack(Box::new(move |pid| {
                let _ = asked_tx.send(pid);
                answer_ask
            }))
            .with_ask_return(Box::new(|_| panic!("a single link never gives back")));
        let (drain, drain_rx) = watch::channel(false);
        let retire = Arc::new(Notify::new());
        let stats = cfg.queue_stats.clone();
        let link = tokio::spawn(link.serve(queue_rx.clone(), cfg, drain_rx, retire.clone()));
        Setup {
            queue,
            queue_rx,
            worker: FakeWorker {
                conn: theirs,
                buf: BytesMut::new(),
            },
            drain,
            retire,
            asked,
            link,
            stats,
        }
    }

    async fn push(&self, job: Job) {
        self.queue.send(job).await.expect("queue open");
    }

    /// The link's result, which must come within `d`.
    async fn ended_within(&mut self, d: Duration) -> Served {
        ended_within(&mut self.link, d).await
    }
}

async fn ended_within(link: &mut JoinHandle<Served>, d: Duration) -> Served {
    timeout(d, link)
        .await
        .expect("the link ended in time")
        .expect("the link task does not panic")
}

/// `elapsed` is `expected`, give or take the timer's millisecond rounding.
fn assert_took(elapsed: Duration, expected: Duration) {
    let slack = Duration::from_millis(5);
    assert!(
        elapsed >= expected && elapsed <= expected + slack,
        "took {elapsed:?}, expected {expected:?}"
    );
}

/// Lets every task run until all wait (no time passes).
pub(super) async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn queued_job_reaches_the_worker_and_its_frames_come_back_in_order() {
    let mut s = Setup::new(config(1, 0));
    let (job, mut rx) = job_with_body("/hello?x=1", Bytes::from_static(b"ping"));
    s.push(job).await;

    let (id, req) = s.worker.request().await;
    assert_eq!(req, request("/hello?x=1", Bytes::from_static(b"ping")));
    assert_eq!(s.stats.taken.load(Ordering::Relaxed), 1);

    s.worker.head(id, 201).await;
    s.worker.body(id, b"hel").await;
    s.worker.body(id, b"lo").await;
    s.worker.end(id, true).await;
    settle().await;
    assert_eq!(
        replies(&mut rx),
        ["head 201", "body hel", "body lo", "end true"]
    );

    s.drain.send(true).unwrap();
    let (end, served, running) = s.ended_within(AT_ONCE).await;
    assert_eq!(end, LinkEnd::Drained);
    assert_eq!(served, 1);
    assert!(running.is_empty());
    // The finished request's channel is released: the connection sees the end.
    assert!(rx.recv().await.is_none());
}

#[tokio::test(start_paused = true)]
async fn frames_are_routed_by_id_when_a_threaded_worker_answers_out_of_order() {
    let mut s = Setup::new(config(2, 0));
    let (a, mut rx_a) = job("/a");
    let (b, mut rx_b) = job("/b");
    s.push(a).await;
    s.push(b).await;
    let (id_a, req_a) = s.worker.request().await;
    let (id_b, req_b) = s.worker.request().await;
    assert_eq!(
        (&req_a.target[..], &req_b.target[..]),
        (&b"/a"[..], &b"/b"[..])
    );
    assert_ne!(id_a, id_b);

    s.worker.head(id_b, 404).await;
    s.worker.head(id_a, 200).await;
    s.worker.body(id_b, b"bee").await;
    s.worker.body(id_a, b"ay").await;
    s.worker.end(id_b, true).await;
    s.worker.end(id_a, false).await;
    settle().await;
    assert_eq!(replies(&mut rx_a), ["head 200", "body ay", "end false"]);
    assert_eq!(replies(&mut rx_b), ["head 404", "body bee", "end true"]);
}

/// The link sends at most `threads + prefetch` requests ahead, and one more per response.
async fn outstanding_requests_are_bounded(threads: usize, prefetch: usize) {
    let limit = threads + prefetch;
    let mut s = Setup::new(config(threads, prefetch));
    let mut rxs = Vec::new();
    for i in 0..limit + 2 {
        let (j, rx) = job(&format!("/{i}"));
        rxs.push(rx);
        s.push(j).await;
    }
    let mut ids = Vec::new();
    for i in 0..limit {
        let (id, req) = s.worker.request().await;
        assert_eq!(&req.target[..], format!("/{i}").as_bytes());
        ids.push(id);
    }
    assert!(
        s.worker
            .frame_within(Duration::from_secs(1))
            .await
            .is_none(),
        "no more than threads + prefetch = {limit} requests on one worker"
    );
    assert_eq!(s.queue_rx.len(), 2, "the rest wait in the shared queue");

    s.worker.respond(ids[0], "done").await;
    let (_, req) = s.worker.request().await;
    assert_eq!(&req.target[..], format!("/{limit}").as_bytes());
    assert!(s
        .worker
        .frame_within(Duration::from_secs(1))
        .await
        .is_none());
    assert_eq!(s.queue_rx.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn prefetch_bounds_requests_sent_ahead_to_a_busy_worker() {
    outstanding_requests_are_bounded(1, 2).await;
}

#[tokio::test(start_paused = true)]
async fn threads_bound_requests_without_prefetch() {
    outstanding_requests_are_bounded(3, 0).await;
}

#[tokio::test(start_paused = true)]
async fn a_job_whose_client_left_while_queued_is_never_sent() {
    let mut s = Setup::new(config(1, 4));
    let (gone, rx_gone) = job("/gone");
    drop(rx_gone);
    let (kept, _rx_kept) = job("/kept");
    s.push(gone).await;
    s.push(kept).await;
    let (_, req) = s.worker.request().await;
    assert_eq!(&req.target[..], b"/kept");
    assert!(s
        .worker
        .frame_within(Duration::from_secs(1))
        .await
        .is_none());
    assert_eq!(s.stats.taken.load(Ordering::Relaxed), 1);
}

#[tokio::test(start_paused = true)]
async fn a_request_past_the_timeout_gets_504_and_its_stack_is_asked_for() {
    let mut s = Setup::new(config(1, 0));
    let (slow, mut rx) = job("/slow");
    s.push(slow).await;
    let (id, _) = s.worker.request().await;
    let t0 = TokioInstant::now();

    // Not a moment early.
    let early = timeout(TIMEOUT - Duration::from_millis(1), s.asked.recv()).await;
    assert!(early.is_err(), "asked for a stack before the timeout");
    assert!(replies(&mut rx).is_empty());

    let pid = s.asked.recv().await.expect("the link asks for the stack");
    assert_eq!(pid, PID);
    assert_took(t0.elapsed(), TIMEOUT);
    assert_eq!(replies(&mut rx), ["fail 504"]);

    // The worker answers with the stack: the link stops waiting for it at once.
    s.worker
        .send(Kind::Stack, id, b"  File \"app.py\", line 3, in slow\n")
        .await;
    let (end, served, running) = s.ended_within(Duration::from_millis(100)).await;
    assert_eq!(
        end,
        LinkEnd::TimedOut {
            line: line("/slow")
        }
    );
    assert_eq!(served, 0);
    assert!(
        running.is_empty(),
        "the timed-out request was already answered"
    );
    assert!(rx.recv().await.is_none(), "nothing after the 504");
}

#[tokio::test(start_paused = true)]
async fn a_stack_for_another_request_does_not_end_the_wait() {
    let mut s = Setup::new(config(1, 0));
    let (slow, _rx) = job("/slow");
    s.push(slow).await;
    let (id, _) = s.worker.request().await;
    let t0 = TokioInstant::now();
    s.asked.recv().await.unwrap();
    s.worker
        .send(Kind::Stack, id + 1, b"someone else's stack")
        .await;
    s.ended_within(Duration::from_secs(5)).await;
    assert_took(t0.elapsed(), TIMEOUT + Duration::from_secs(2));
}

#[tokio::test(start_paused = true)]
async fn a_timed_out_request_after_its_head_ends_aborted() {
    let mut s = Setup::new(config(1, 0));
    let (slow, mut rx) = job("/stream");
    s.push(slow).await;
    let (id, _) = s.worker.request().await;
    s.worker.head(id, 200).await;
    s.worker.body(id, b"partial").await;
    s.asked.recv().await.unwrap();
    assert_eq!(replies(&mut rx), ["head 200", "body partial", "end false"]);
}

#[tokio::test(start_paused = true)]
async fn a_worker_that_never_sends_the_stack_is_waited_for_two_seconds() {
    let mut s = Setup::new(config(1, 0));
    let (slow, _rx) = job("/stuck");
    s.push(slow).await;
    s.worker.request().await;
    let t0 = TokioInstant::now();
    let (end, _, _) = s.ended_within(Duration::from_secs(60)).await;
    assert_eq!(
        end,
        LinkEnd::TimedOut {
            line: line("/stuck")
        }
    );
    assert_took(t0.elapsed(), TIMEOUT + Duration::from_secs(2));
}

#[tokio::test(start_paused = true)]
async fn no_wait_for_a_stack_when_the_signal_could_not_be_sent() {
    let (queue, queue_rx) = async_channel::bounded(8);
    let mut s = Setup::on_queue(config(1, 0), queue, queue_rx, false);
    let (slow, mut rx) = job("/stuck");
    s.push(slow).await;
    s.worker.request().await;
    let t0 = TokioInstant::now();
    let (end, _, _) = s.ended_within(Duration::from_secs(60)).await;
    assert_eq!(
        end,
        LinkEnd::TimedOut {
            line: line("/stuck")
        }
    );
    assert_took(t0.elapsed(), TIMEOUT);
    assert_eq!(s.asked.recv().await, Some(PID));
    assert_eq!(replies(&mut rx), ["fail 504"]);
}

#[tokio::test(start_paused = true)]
async fn a_request_sent_ahead_starts_its_clock_when_the_one_before_it_ends() {
    let (queue, queue_rx) = async_channel::bounded(8);
    let mut s = Setup::on_queue(config(1, 1), queue, queue_rx, false);
    let (a, _rx_a) = job("/a");
    let (b, mut rx_b) = job("/b");
    s.push(a).await;
    s.push(b).await;
    let (id_a, _) = s.worker.request().await;
    s.worker.request().await;
    // b waits inside the worker while a runs: its clock has not started.
    tokio::time::sleep(Duration::from_secs(20)).await;
    s.worker.respond(id_a, "a").await;
    let t1 = TokioInstant::now();
    // Now b runs and hangs: it times out a full timeout after a ended.
    let (end, served, _) = s.ended_within(Duration::from_secs(60)).await;
    assert_eq!(end, LinkEnd::TimedOut { line: line("/b") });
    assert_eq!(served, 1);
    assert_took(t1.elapsed(), TIMEOUT);
    assert_eq!(replies(&mut rx_b), ["fail 504"]);
    assert!(
        s.queue_rx.is_empty(),
        "b ran: it is not given to another worker"
    );
}

#[tokio::test(start_paused = true)]
async fn other_requests_keep_flowing_while_the_stack_is_awaited() {
    let mut s = Setup::new(config(2, 0));
    let (slow, mut rx_slow) = job("/slow");
    s.push(slow).await;
    let (id_slow, _) = s.worker.request().await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (fast, mut rx_fast) = job("/fast");
    s.push(fast).await;
    let (id_fast, _) = s.worker.request().await;

    s.asked.recv().await.unwrap();
    // Meanwhile the other thread finishes its request.
    s.worker.respond(id_fast, "ok").await;
    settle().await;
    assert_eq!(replies(&mut rx_fast), ["head 200", "body ok", "end true"]);
    s.worker.send(Kind::Stack, id_slow, b"stack").await;
    let (end, served, running) = s.ended_within(Duration::from_millis(100)).await;
    assert_eq!(
        end,
        LinkEnd::TimedOut {
            line: line("/slow")
        }
    );
    assert_eq!(served, 1, "the other response counts as served");
    assert!(running.is_empty());
    assert_eq!(replies(&mut rx_slow), ["fail 504"]);
}

#[tokio::test(start_paused = true)]
async fn on_timeout_the_other_running_request_fails_and_a_waiting_one_is_requeued() {
    let mut s = Setup::new(config(2, 1));
    let (slow, mut rx_slow) = job("/slow");
    s.push(slow).await;
    s.worker.request().await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (other, mut rx_other) = job("/other");
    let (waiting, mut rx_waiting) = job("/waiting");
    s.push(other).await;
    s.push(waiting).await;
    s.worker.request().await;
    s.worker.request().await;

    let (end, _, running) = s.ended_within(Duration::from_secs(60)).await;
    assert_eq!(
        end,
        LinkEnd::TimedOut {
            line: line("/slow")
        }
    );
    assert_eq!(running, [line("/other")]);
    assert_eq!(replies(&mut rx_slow), ["fail 504"]);
    assert_eq!(replies(&mut rx_other), ["fail 502"]);
    assert!(replies(&mut rx_waiting).is_empty());
    let requeued = s
        .queue_rx
        .try_recv()
        .expect("the waiting request is back in the queue");
    assert_eq!(requeued.line, line("/waiting"));
}

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
