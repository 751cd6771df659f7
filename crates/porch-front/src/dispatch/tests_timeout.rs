//! A request past `--timeout`: 504, its Python stack, and what happens to the others.

use super::tests::*;
use super::*;
use porch_ipc::Kind;
use tokio::time::timeout;
use tokio::time::Instant as TokioInstant;

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
