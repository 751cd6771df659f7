//! Fair dispatch and one fate per request: several links share one queue and one
//! [`Capacity`], as a pool's links do, each over a real socket pair whose worker side the
//! test plays; paused tokio time.

use super::tests::{config, job, replies, settle, FakeWorker, Served, AT_ONCE};
use super::*;
use bytes::BytesMut;
use porch_ipc::Kind;
use tokio::net::UnixStream;
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;

struct Slot {
    worker: FakeWorker,
    /// The pids this link asked to give back unstarted requests (SIGUSR2 in production).
    asked: mpsc::UnboundedReceiver<u32>,
    _task: JoinHandle<Served>,
    _drain: watch::Sender<bool>,
}

struct Pool {
    queue: async_channel::Sender<Job>,
    slots: Vec<Slot>,
}

impl Pool {
    fn new(n: usize, mut cfg: LinkConfig) -> Pool {
        let (queue, queue_rx) = async_channel::bounded(64);
        let (requeue, returned) = async_channel::unbounded();
        cfg.capacity = Arc::default();
        cfg.returned = Some(returned);
        let slots = (0..n)
            .map(|i| {
                let (ours, theirs) = UnixStream::pair().expect("socketpair");
                let (asked_tx, asked) = mpsc::unbounded_channel();
                let link = Link::new(5000 + i as u32, ours, BytesMut::new(), requeue.clone())
                    .with_ask_stack(Box::new(|_| false))
                    .with_ask_return(Box::new(move |pid| {
                        let _ = asked_tx.send(pid);
                        true
                    }));
                let (drain, drain_rx) = watch::channel(false);
                let task = tokio::spawn(link.serve(
                    queue_rx.clone(),
                    cfg.clone(),
                    drain_rx,
                    Arc::new(Notify::new()),
                ));
                Slot {
                    worker: FakeWorker {
                        conn: theirs,
                        buf: BytesMut::new(),
                    },
                    asked,
                    _task: task,
                    _drain: drain,
                }
            })
            .collect();
        Pool { queue, slots }
    }

    async fn push(&self, target: &str) -> ReplyReceiver {
        let (j, rx) = job(target);
        self.queue.send(j).await.expect("queue open");
        settle().await;
        rx
    }

    /// Which slot's worker got a request frame now, with the frame's id and target.
    async fn who_got(&mut self) -> Vec<(usize, u32, String)> {
        let mut got = Vec::new();
        for (i, s) in self.slots.iter_mut().enumerate() {
            while let Some(f) = s.worker.frame_within(AT_ONCE).await {
                assert_eq!(f.kind, Kind::Request);
                let req = ipc::Request::decode(&f.payload).unwrap();
                got.push((i, f.id, String::from_utf8_lossy(&req.target).into_owned()));
            }
        }
        got
    }

    fn asked(&mut self, slot: usize) -> usize {
        std::iter::from_fn(|| self.slots[slot].asked.try_recv().ok()).count()
    }
}

#[tokio::test(start_paused = true)]
async fn a_request_goes_to_the_idle_worker_never_behind_a_busy_one() {
    let mut pool = Pool::new(2, config(1, 4));
    settle().await;
    let _long = pool.push("/long").await;
    let got = pool.who_got().await;
    assert_eq!(got.len(), 1, "{got:?}");
    let (busy, _, _) = got[0];
    let idle = 1 - busy;
    for n in 0..5 {
        let mut rx = pool.push(&format!("/short{n}")).await;
        let got = pool.who_got().await;
        assert_eq!(got.len(), 1, "{got:?}");
        let (slot, id, _) = got[0].clone();
        assert_eq!(slot, idle, "short request {n} was sent to the busy worker");
        pool.slots[idle].worker.respond(id, "ok").await;
        settle().await;
        assert_eq!(replies(&mut rx), ["head 200", "body ok", "end true"]);
    }
    assert_eq!(
        pool.asked(busy) + pool.asked(idle),
        0,
        "nothing was sent ahead to take back"
    );
}

#[tokio::test(start_paused = true)]
async fn a_request_sent_ahead_is_taken_back_when_another_worker_frees() {
    let mut pool = Pool::new(2, config(1, 4));
    settle().await;
    let _a = pool.push("/a").await;
    let _b = pool.push("/b").await;
    let got = pool.who_got().await;
    assert_eq!(got.len(), 2, "{got:?}");
    assert_ne!(got[0].0, got[1].0, "one each: {got:?}");
    // Every worker is busy: the next one is sent ahead to one of them.
    let mut rx_c = pool.push("/c").await;
    let got_c = pool.who_got().await;
    assert_eq!(got_c.len(), 1, "{got_c:?}");
    let (holder, c_id, _) = got_c[0].clone();
    let other = 1 - holder;
    let other_id = got.iter().find(|g| g.0 == other).unwrap().1;
    assert_eq!(pool.asked(holder), 0, "nobody idles yet");

    // The other worker frees: the holder is asked to give back what it has not started.
    pool.slots[other].worker.respond(other_id, "done").await;
    settle().await;
    assert_eq!(pool.asked(holder), 1);
    pool.slots[holder]
        .worker
        .send(Kind::Returned, c_id, &[])
        .await;
    pool.slots[holder].worker.send(Kind::Returned, 0, &[]).await;
    settle().await;
    let got = pool.who_got().await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        (got[0].0, got[0].2.as_str()),
        (other, "/c"),
        "the freed worker runs it"
    );
    pool.slots[other].worker.respond(got[0].1, "c").await;
    settle().await;
    assert_eq!(replies(&mut rx_c), ["head 200", "body c", "end true"]);
}

#[tokio::test(start_paused = true)]
async fn a_request_the_worker_started_meanwhile_is_not_given_back_nor_run_twice() {
    let mut pool = Pool::new(2, config(1, 4));
    settle().await;
    let mut rx_a = pool.push("/a").await;
    let _b = pool.push("/b").await;
    let got = pool.who_got().await;
    let mut rx_c = pool.push("/c").await;
    let (holder, c_id, _) = pool.who_got().await[0].clone();
    let other = 1 - holder;
    let holder_first = got.iter().find(|g| g.0 == holder).unwrap().1;
    let other_id = got.iter().find(|g| g.0 == other).unwrap().1;
    pool.slots[other].worker.respond(other_id, "done").await;
    settle().await;
    assert_eq!(pool.asked(holder), 1);
    // The holder's worker had finished its first request and started /c already: it
    // gives back nothing, and /c is answered by it alone.
    pool.slots[holder].worker.respond(holder_first, "a").await;
    pool.slots[holder].worker.send(Kind::Returned, 0, &[]).await;
    settle().await;
    assert!(pool.who_got().await.is_empty(), "nothing runs twice");
    pool.slots[holder].worker.respond(c_id, "c").await;
    settle().await;
    let a_or_b = replies(&mut rx_a);
    assert!(
        a_or_b.is_empty()
            || a_or_b == ["head 200", "body a", "end true"]
            || a_or_b == ["head 200", "body done", "end true"]
    );
    assert_eq!(replies(&mut rx_c), ["head 200", "body c", "end true"]);
}

#[tokio::test(start_paused = true)]
async fn a_request_whose_wait_ends_on_a_busy_worker_is_taken_back_and_answered_503_never_run() {
    let mut cfg = config(1, 4);
    cfg.queue_timeout = Duration::from_secs(5);
    let mut pool = Pool::new(1, cfg);
    settle().await;
    let _long = pool.push("/long").await;
    let mut rx_b = pool.push("/b").await;
    let got = pool.who_got().await;
    assert_eq!(
        got.len(),
        2,
        "the only worker is busy: /b is sent ahead: {got:?}"
    );
    let b_id = got[1].1;
    tokio::time::sleep(Duration::from_millis(4990)).await;
    settle().await;
    assert_eq!(pool.asked(0), 0, "its wait is not over yet");
    tokio::time::sleep(Duration::from_millis(20)).await;
    settle().await;
    assert_eq!(
        pool.asked(0),
        1,
        "at the queue deadline the link takes it back"
    );
    pool.slots[0].worker.send(Kind::Returned, b_id, &[]).await;
    pool.slots[0].worker.send(Kind::Returned, 0, &[]).await;
    settle().await;
    assert_eq!(replies(&mut rx_b), ["fail 503"]);
    assert!(pool.who_got().await.is_empty(), "never sent again");
}

#[tokio::test(start_paused = true)]
async fn a_request_its_connection_cancelled_is_never_sent() {
    let mut pool = Pool::new(1, config(1, 0));
    settle().await;
    let _long = pool.push("/long").await;
    assert_eq!(pool.who_got().await.len(), 1);
    let (j, mut rx) = job("/cancelled");
    let fate = j.fate.clone();
    pool.queue.send(j).await.unwrap();
    settle().await;
    assert!(
        fate.cancel(),
        "nobody took it: the connection answers it (503)"
    );
    // The worker frees: the cancelled request is dropped, not run.
    let (first_id, _) = (1, ());
    pool.slots[0].worker.respond(first_id, "long").await;
    settle().await;
    assert!(pool.who_got().await.is_empty());
    assert!(
        replies(&mut rx).is_empty(),
        "the link says nothing: the connection did"
    );
}
