//! systemd socket activation: with `LISTEN_FDS` (and `LISTEN_PID` naming this process)
//! porch serves on the sockets it inherited, from descriptor 3 on, instead of binding its
//! own, as Gunicorn does. systemd keeps the sockets open across restarts, so clients
//! connecting meanwhile wait instead of being refused.

use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::io::AsRawFd;
use std::path::PathBuf;

use porch_config::{BindAddr, Config};
use porch_front::Listener;

/// The first inherited descriptor (`SD_LISTEN_FDS_START`).
const FIRST_FD: RawFd = 3;

/// The inherited descriptors, when systemd passed some to this process.
pub fn inherited() -> Option<Vec<RawFd>> {
    let pid: u32 = std::env::var("LISTEN_PID").ok()?.trim().parse().ok()?;
    if pid != std::process::id() {
        return None;
    }
    let n: RawFd = std::env::var("LISTEN_FDS").ok()?.trim().parse().ok()?;
    (n > 0).then(|| (FIRST_FD..FIRST_FD + n).collect())
}

/// Points the listeners at the inherited sockets: one socket per configured listener in
/// order; with more sockets than listeners (the usual case: flags give one), the extra
/// sockets serve what the last listener serves. Each listener's address becomes the
/// socket's own. The descriptors are closed on exec, so workers never hold them.
pub fn adopt(cfg: &mut Config, fds: &[RawFd]) -> std::io::Result<Vec<Listener>> {
    let template = cfg.listeners.last().cloned();
    let mut listeners = Vec::new();
    for (i, &fd) in fds.iter().enumerate() {
        // SAFETY: fcntl on a descriptor number systemd handed to this process.
        unsafe {
            libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
        }
        let (listener, bind) = from_fd(fd)?;
        match cfg.listeners.get_mut(i) {
            Some(l) => l.bind = bind,
            None => {
                let Some(mut l) = template.clone() else {
                    break;
                };
                l.bind = bind;
                cfg.listeners.push(l);
            }
        }
        listeners.push(listener);
    }
    cfg.listeners.truncate(listeners.len());
    Ok(listeners)
}

/// A listening socket of either family from its descriptor.
fn from_fd(fd: RawFd) -> std::io::Result<(Listener, BindAddr)> {
    // SAFETY: the descriptor was passed to this process by systemd for it to own; it is
    // wrapped once and owned by the returned listener from here on.
    let std_sock = unsafe { std::os::unix::net::UnixListener::from_raw_fd(fd) };
    // A TCP socket fails this (getsockname gives another family).
    if let Ok(addr) = std_sock.local_addr() {
        std_sock.set_nonblocking(true)?;
        let path = addr.as_pathname().map(PathBuf::from).unwrap_or_default();
        let l = tokio::net::UnixListener::from_std(std_sock)?;
        // An empty path: the socket file is systemd's, never removed by porch.
        return Ok((Listener::Unix(l, PathBuf::new()), BindAddr::Unix(path)));
    }
    let raw = std_sock.as_raw_fd();
    std::mem::forget(std_sock);
    // SAFETY: the same descriptor, released from the Unix wrapper above.
    let tcp = unsafe { std::net::TcpListener::from_raw_fd(raw) };
    let addr = tcp.local_addr()?;
    tcp.set_nonblocking(true)?;
    Ok((
        Listener::Tcp(tokio::net::TcpListener::from_std(tcp)?),
        BindAddr::Tcp(addr),
    ))
}
