//! Supervision logic that needs no Python: the boot handshake over a real socket pair
//! under paused time (the test plays the starting worker), exit descriptions, back-off
//! and the spread of recycling.

use super::*;
use std::os::unix::process::ExitStatusExt;

use porch_ipc::{encode_vec, spawn::ready_payload};
use tokio::io::AsyncWriteExt;
use tokio::time::{timeout, Instant as TokioInstant};

const BOOT: Duration = Duration::from_secs(120);

/// The wait status of a process that exited with `code`.
fn exited(code: i32) -> ExitStatus {
    ExitStatus::from_raw(code << 8)
}

fn killed(signal: i32) -> ExitStatus {
    ExitStatus::from_raw(signal)
}

fn frame(kind: Kind, id: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_vec(&mut out, kind, id, payload);
    out
}

fn ready(protocol: u32) -> Vec<u8> {
    let mut payload = ready_payload(1234, false, 1);
    payload[4..8].copy_from_slice(&protocol.to_le_bytes());
    frame(Kind::Ready, 0, &payload)
}

/// Runs the front's side of the handshake on a socket pair; `worker` plays the worker on
/// the other end. The worker "exits" with `status` once it closed its socket.
async fn handshake<F, Fut>(
    status: ExitStatus,
    worker: F,
) -> (Result<spawn::Ready, BootError>, BytesMut)
where
    F: FnOnce(UnixStream) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (mut ours, theirs) = UnixStream::pair().unwrap();
    let worker = tokio::spawn(worker(theirs));
    let mut buf = BytesMut::new();
    let result = await_ready(&mut ours, &mut buf, BOOT, async move { Ok(status) }).await;
    worker.abort();
    (result, buf)
}

#[tokio::test(start_paused = true)]
async fn a_ready_frame_with_this_protocol_boots_even_in_short_reads() {
    let (result, buf) = handshake(exited(0), |mut s| async move {
        for b in ready(spawn::PROTOCOL) {
            s.write_all(&[b]).await.unwrap();
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        std::future::pending::<()>().await;
    })
    .await;
    result.expect("booted");
    assert!(buf.is_empty());
}

#[tokio::test(start_paused = true)]
async fn bytes_read_past_the_ready_frame_are_left_for_the_link() {
    let after = frame(Kind::Head, 9, b"early");
    let sent = [ready(spawn::PROTOCOL), after.clone()].concat();
    let (result, mut buf) = handshake(exited(0), |mut s| async move {
        s.write_all(&sent).await.unwrap();
        std::future::pending::<()>().await;
    })
    .await;
    result.expect("booted");
    let next = Decoder::next(&mut buf).unwrap();
    let mut rest = BytesMut::from(&after[..]);
    assert_eq!(next, Decoder::next(&mut rest).unwrap());
    assert!(next.is_some());
}

#[tokio::test(start_paused = true)]
async fn a_ready_frame_with_another_protocol_is_a_mismatch() {
    let other = spawn::PROTOCOL + 1;
    let (result, _) = handshake(exited(0), |mut s| async move {
        s.write_all(&ready(other)).await.unwrap();
        std::future::pending::<()>().await;
    })
    .await;
    match result {
        Err(BootError::Mismatch(m)) => {
            assert!(m.contains(&format!("Some({other})")), "{m}");
            assert!(
                m.contains(&format!("this porch {}", spawn::PROTOCOL)),
                "{m}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_short_ready_payload_is_a_mismatch() {
    let (result, _) = handshake(exited(0), |mut s| async move {
        s.write_all(&frame(Kind::Ready, 0, &[1, 2, 3]))
            .await
            .unwrap();
        std::future::pending::<()>().await;
    })
    .await;
    assert!(
        matches!(&result, Err(BootError::Mismatch(m)) if m.contains("None")),
        "{result:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn another_frame_before_ready_is_refused() {
    let (result, _) = handshake(exited(0), |mut s| async move {
        s.write_all(&frame(Kind::End, 1, &[1])).await.unwrap();
        std::future::pending::<()>().await;
    })
    .await;
    assert!(
        matches!(&result, Err(BootError::Exited(m)) if m == "unexpected End frame"),
        "{result:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn garbage_before_ready_is_refused() {
    let (result, _) = handshake(exited(0), |mut s| async move {
        s.write_all(b"Traceback (most recent call last):\n")
            .await
            .unwrap();
        std::future::pending::<()>().await;
    })
    .await;
    assert!(matches!(&result, Err(BootError::Exited(_))), "{result:?}");
}

/// The worker closes its socket without a Ready frame and exits with `status`.
async fn closed_then(status: ExitStatus) -> BootError {
    let (result, _) = handshake(status, |s| async move { drop(s) }).await;
    result.expect_err("no worker without a Ready frame")
}

#[tokio::test(start_paused = true)]
async fn a_closed_socket_reports_why_the_worker_exited() {
    let import = exited(EXIT_IMPORT_FAILED as i32);
    assert!(matches!(closed_then(import).await, BootError::ImportFailed));
    assert!(matches!(
        closed_then(exited(EXIT_MISMATCH as i32)).await,
        BootError::Mismatch(_)
    ));
    match closed_then(exited(1)).await {
        BootError::Exited(m) => assert_eq!(m, "exited with status 1"),
        other => panic!("{other:?}"),
    }
    match closed_then(killed(libc::SIGKILL)).await {
        BootError::Exited(m) => {
            assert!(m.contains("SIGKILL") && m.contains("out-of-memory"), "{m}")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn the_exit_status_is_awaited_only_once_the_socket_closed() {
    let (mut ours, theirs) = UnixStream::pair().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let status = async move {
        // Polled only after end of stream: the worker then tells the test.
        let _ = tx.send(());
        Ok(exited(1))
    };
    let mut buf = BytesMut::new();
    let boot = tokio::spawn(async move { await_ready(&mut ours, &mut buf, BOOT, status).await });
    let mut rx = rx;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        rx.try_recv().is_err(),
        "exit status awaited while the socket is open"
    );
    drop(theirs);
    let result = boot.await.unwrap();
    assert!(rx.try_recv().is_ok());
    assert!(matches!(result, Err(BootError::Exited(_))));
}

#[tokio::test(start_paused = true)]
async fn a_worker_silent_past_the_boot_timeout_is_slow() {
    let t0 = TokioInstant::now();
    let (result, _) = handshake(exited(0), |s| async move {
        let _keep_open = s;
        std::future::pending::<()>().await;
    })
    .await;
    assert!(
        matches!(result, Err(BootError::Slow(d)) if d == BOOT),
        "{result:?}"
    );
    let took = t0.elapsed();
    assert!(
        took >= BOOT && took <= BOOT + Duration::from_millis(5),
        "{took:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_ready_frame_just_before_the_boot_timeout_boots() {
    let (result, _) = handshake(exited(0), |mut s| async move {
        tokio::time::sleep(BOOT - Duration::from_millis(10)).await;
        s.write_all(&ready(spawn::PROTOCOL)).await.unwrap();
        std::future::pending::<()>().await;
    })
    .await;
    result.expect("booted in time");
}

#[tokio::test(start_paused = true)]
async fn the_boot_timeout_bounds_waiting_for_the_exit_status_too() {
    // The socket closed (a child that forked and kept running, say): waiting for the
    // exit status is still bounded by the boot timeout.
    let (mut ours, theirs) = UnixStream::pair().unwrap();
    drop(theirs);
    let mut buf = BytesMut::new();
    let never = std::future::pending::<std::io::Result<ExitStatus>>();
    let result = timeout(BOOT * 2, await_ready(&mut ours, &mut buf, BOOT, never))
        .await
        .expect("await_ready returns by itself");
    assert!(matches!(result, Err(BootError::Slow(_))), "{result:?}");
}

#[test]
fn describe_exit_names_signals_and_hints_at_their_cause() {
    assert_eq!(describe_exit(exited(0)), "exited with status 0");
    assert_eq!(describe_exit(exited(3)), "exited with status 3");
    assert_eq!(
        describe_exit(killed(libc::SIGKILL)),
        "killed by signal 9 (SIGKILL) (killed from outside, possibly by the out-of-memory killer)"
    );
    assert_eq!(
        describe_exit(killed(libc::SIGSEGV)),
        "killed by signal 11 (SIGSEGV) (crashed)"
    );
    // A core dump sets a flag beside the signal number; the signal is still named.
    assert_eq!(
        describe_exit(ExitStatus::from_raw(libc::SIGABRT | 0x80)),
        "killed by signal 6 (SIGABRT) (crashed)"
    );
    assert_eq!(
        describe_exit(killed(libc::SIGTERM)),
        "killed by signal 15 (SIGTERM)"
    );
    assert_eq!(
        describe_exit(killed(libc::SIGBUS)),
        "killed by signal 7 (SIGBUS)"
    );
    assert_eq!(
        describe_exit(killed(libc::SIGINT)),
        "killed by signal 2 (SIGINT)"
    );
    assert_eq!(
        describe_exit(killed(libc::SIGUSR1)),
        "killed by signal 10 (signal)"
    );
}

#[test]
fn backoff_doubles_from_a_tenth_of_a_second_up_to_ten() {
    let delays: Vec<u64> = (0..10).map(|n| backoff(n).as_millis() as u64).collect();
    assert_eq!(
        delays,
        [100, 200, 400, 800, 1600, 3200, 6400, 10_000, 10_000, 10_000]
    );
    // No overflow however long a crash loop lasts.
    assert_eq!(backoff(u32::MAX), Duration::from_secs(10));
}

#[test]
fn max_requests_jitter_stays_within_its_bounds() {
    assert_eq!(max_requests_limit(0, 50, 3, 12345), None, "recycling off");
    for slot in 0..64 {
        for noise in [0, 1, 7, 1 << 20, u64::MAX / 3, u64::MAX] {
            assert_eq!(max_requests_limit(1000, 0, slot, noise), Some(1000));
            let n = max_requests_limit(1000, 50, slot, noise).unwrap();
            assert!((1000..=1050).contains(&n), "{n}");
        }
    }
    // Slots get different limits, so workers started together do not recycle together.
    let limits: std::collections::HashSet<u64> = (0..8)
        .map(|slot| max_requests_limit(1000, 50, slot, 42).unwrap())
        .collect();
    assert!(limits.len() > 4, "{limits:?}");
    // Every value of the range can be drawn.
    let all: std::collections::HashSet<u64> = (0..1000)
        .map(|noise| max_requests_limit(10, 3, 0, noise).unwrap())
        .collect();
    assert_eq!(all, (10..=13).collect());
}

#[test]
fn max_requests_jitter_at_the_limits_of_u64_does_not_panic() {
    assert!(max_requests_limit(1, u64::MAX, 0, 77).is_some());
    assert_eq!(max_requests_limit(u64::MAX, 10, 5, 77), Some(u64::MAX));
}
