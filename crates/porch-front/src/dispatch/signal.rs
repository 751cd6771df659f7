//! The two signals the front sends a worker: SIGUSR1 (stack dump of a stuck request) and
//! SIGUSR2 (give back the requests sent ahead and not started).

/// How a link asks its worker for the Python stacks of its running requests: SIGUSR1
/// to the worker process ([`signal_stack_dump`]); tests watch the asking instead.
pub type AskStack = Box<dyn Fn(u32) -> bool + Send>;

/// Sends SIGUSR1 to worker `pid`, which answers with a [`Kind::Stack`] frame for each
/// running request. Returns whether the signal was sent.
pub fn signal_stack_dump(pid: u32) -> bool {
    signal(pid, libc::SIGUSR1)
}

/// Sends SIGUSR2 to worker `pid`, which answers with a [`Kind::Returned`] frame for each
/// request it has not started, then one with id 0.
pub fn signal_give_back(pid: u32) -> bool {
    signal(pid, libc::SIGUSR2)
}

fn signal(pid: u32, sig: libc::c_int) -> bool {
    let Some(pid) = one_process(pid) else {
        return false;
    };
    // SAFETY: kill(2) with a pid this link started; a stale pid at worst signals
    // nothing (the worker is ours until its link reaps it).
    unsafe { libc::kill(pid, sig) == 0 }
}

/// `pid` as a kill(2) target naming one process: not 0 (our own process group, as an
/// unknown pid is reported) nor one that wraps to -1 (every process) or to -n (a group).
pub(super) fn one_process(pid: u32) -> Option<libc::pid_t> {
    libc::pid_t::try_from(pid).ok().filter(|&p| p > 0)
}
