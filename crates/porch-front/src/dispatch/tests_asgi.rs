//! A link to an ASGI worker: a request past `--timeout` is cancelled in the worker's
//! event loop (which lives on) unless the loop is blocked, and a client that leaves a
//! streamed response is reported to the worker.

use super::tests::*;
use super::*;
use porch_ipc::Kind;
use tokio::time::Instant as TokioInstant;

fn asgi(tasks: usize) -> LinkConfig {
    LinkConfig {
        asgi: true,
        ..config(tasks, 0)
    }
}

#[tokio::test(start_paused = true)]
async fn a_timed_out_task_is_cancelled_and_the_worker_keeps_serving() {
    let mut s = Setup::new(asgi(4));
    let (slow, mut rx_slow) = job("/slow");
    s.push(slow).await;
    let (id, _) = s.worker.request().await;

    // At the timeout: 504 at once, and a Cancel frame for that request, not a signal.
    let cancel = s
        .worker
        .frame_within(TIMEOUT + Duration::from_millis(5))
        .await
        .expect("a cancel frame");
    assert_eq!((cancel.kind, cancel.id), (Kind::Cancel, id));
    assert_eq!(replies(&mut rx_slow), ["fail 504"]);
    s.worker
        .send(Kind::Stack, id, b"  File \"app.py\", line 3, in slow\n")
        .await;
    settle().await;
    assert!(
        s.asked.try_recv().is_err(),
        "no signal to a responsive loop"
    );

    // The worker lives on: the next request is served by the same link.
    let (next, mut rx_next) = job("/next");
    s.push(next).await;
    let (id_next, _) = s.worker.request().await;
    s.worker.respond(id_next, "ok").await;
    settle().await;
    assert_eq!(replies(&mut rx_next), ["head 200", "body ok", "end true"]);
    s.drain.send(true).unwrap();
    let (end, served, _) = s.ended_within(AT_ONCE).await;
    assert_eq!(end, LinkEnd::Drained);
    assert_eq!(served, 1);
}

#[tokio::test(start_paused = true)]
async fn a_blocked_loop_gets_its_worker_killed_after_asking_for_its_stack() {
    let mut s = Setup::new(asgi(4));
    let (slow, mut rx) = job("/block");
    s.push(slow).await;
    s.worker.request().await;
    let t0 = TokioInstant::now();
    // The loop never reads the Cancel frame: after 2 s the link asks for the thread's
    // stack by signal, waits up to 2 s more, and gives up on the worker.
    let pid = s.asked.recv().await.expect("the link signals for a stack");
    assert_eq!(pid, PID);
    assert_took(t0.elapsed(), TIMEOUT + Duration::from_secs(2));
    let (end, _, _) = s.ended_within(Duration::from_secs(3)).await;
    assert_eq!(
        end,
        LinkEnd::TimedOut {
            line: line("/block")
        }
    );
    assert_eq!(replies(&mut rx), ["fail 504"]);
}

#[tokio::test(start_paused = true)]
async fn a_client_that_left_a_stream_is_reported_once() {
    let mut s = Setup::new(asgi(4));
    let (stream, rx) = job("/events");
    s.push(stream).await;
    let (id, _) = s.worker.request().await;
    s.worker.head(id, 200).await;
    s.worker.body(id, b"data: 1\n\n").await;
    drop(rx); // the client went away
    s.worker.body(id, b"data: 2\n\n").await;
    s.worker.body(id, b"data: 3\n\n").await;
    let f = s
        .worker
        .frame_within(Duration::from_secs(1))
        .await
        .expect("a disconnect frame");
    assert_eq!((f.kind, f.id), (Kind::Disconnect, id));
    assert!(
        s.worker
            .frame_within(Duration::from_secs(1))
            .await
            .is_none(),
        "told once"
    );
}

#[tokio::test(start_paused = true)]
async fn a_stream_that_keeps_sending_is_not_timed_out_but_a_silent_one_is() {
    let mut s = Setup::new(asgi(4));
    let (stream, mut rx) = job("/events");
    s.push(stream).await;
    let (id, _) = s.worker.request().await;
    s.worker.head(id, 200).await;
    // Three timeouts' worth of streaming, a piece every half timeout: no cancel.
    for _ in 0..6 {
        tokio::time::sleep(TIMEOUT / 2).await;
        s.worker.body(id, b"data: tick\n\n").await;
    }
    settle().await;
    assert_eq!(replies(&mut rx).len(), 7, "head and six pieces");
    let t0 = TokioInstant::now();
    // Then silence: cancelled a timeout after the last piece, the stream cut.
    let cancel = s
        .worker
        .frame_within(TIMEOUT + Duration::from_millis(5))
        .await
        .expect("a cancel frame");
    assert_eq!((cancel.kind, cancel.id), (Kind::Cancel, id));
    assert_took(t0.elapsed(), TIMEOUT);
    assert_eq!(replies(&mut rx), ["end false"]);
}

#[tokio::test(start_paused = true)]
async fn a_client_that_left_a_silent_request_is_reported_within_a_second() {
    let mut s = Setup::new(asgi(4));
    let (poll, rx) = job("/long-poll");
    s.push(poll).await;
    let (id, _) = s.worker.request().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        s.worker.frame_within(AT_ONCE).await.is_none(),
        "nothing while the client waits"
    );
    drop(rx);
    let f = s
        .worker
        .frame_within(GONE_SWEEP_BOUND)
        .await
        .expect("a disconnect frame");
    assert_eq!((f.kind, f.id), (Kind::Disconnect, id));
}

const GONE_SWEEP_BOUND: Duration = Duration::from_millis(1001);
