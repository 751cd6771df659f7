//! What Gunicorn's process settings do to porch's own process: `--umask`, `--daemon`,
//! `--pid`.

use std::path::{Path, PathBuf};

/// Sets the file mode mask; workers inherit it.
pub fn set_umask(mask: u32) {
    // SAFETY: umask only changes this process's mask.
    unsafe {
        libc::umask(mask as libc::mode_t);
    }
}

/// Puts the calling thread, and every thread it starts afterwards, under `SCHED_BATCH`.
/// Its wake-ups then wait for the running task's turn instead of preempting it: a front
/// sharing a core with a worker stops interrupting the worker's Python for each packet,
/// and handles the events that gathered meanwhile in one go. On an idle core nothing
/// changes; the front's share of CPU time stays the same (docs/operations.md).
/// A policy chosen from outside (`chrt`) is left as it is, for the front and its workers.
pub fn batch_scheduling() -> std::io::Result<()> {
    // SAFETY: sched_getscheduler reads the calling thread's policy; no memory involved.
    if unsafe { libc::sched_getscheduler(0) } != libc::SCHED_OTHER {
        return Ok(());
    }
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 is the calling thread; `param` is a valid, initialised sched_param.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    BATCH_SET.store(true, std::sync::atomic::Ordering::Relaxed);
    Ok(())
}

static BATCH_SET: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether porch itself put the front under `SCHED_BATCH`, so its workers must be set
/// back (a policy the user chose, as with `chrt`, is theirs to keep).
pub fn batch_set_by_porch() -> bool {
    BATCH_SET.load(std::sync::atomic::Ordering::Relaxed)
}

/// Detaches from the terminal as Gunicorn's `--daemon` does: fork (the parent exits 0),
/// new session, fork again (no controlling terminal can come back), standard input,
/// output and error on /dev/null. Called before any thread starts, so fork is safe.
pub fn daemonize() -> std::io::Result<()> {
    // SAFETY: the process is single-threaded here (no runtime yet); fork, setsid, _exit,
    // open and dup2 are plain system calls on descriptors this process owns.
    unsafe {
        for round in 0..2 {
            match libc::fork() {
                -1 => return Err(std::io::Error::last_os_error()),
                0 => {}
                _ => libc::_exit(0),
            }
            if round == 0 && libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null < 0 {
            return Err(std::io::Error::last_os_error());
        }
        for fd in 0..3 {
            libc::dup2(null, fd);
        }
        if null > 2 {
            libc::close(null);
        }
    }
    Ok(())
}

/// The pid file: written once porch listens, removed when it stops.
pub struct PidFile(PathBuf);

impl PidFile {
    pub fn write(path: &Path) -> std::io::Result<PidFile> {
        std::fs::write(path, format!("{}\n", std::process::id()))?;
        Ok(PidFile(path.to_path_buf()))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        // Only our own pid file: another porch may have taken the path since.
        let ours = std::fs::read_to_string(&self.0)
            .is_ok_and(|s| s.trim() == std::process::id().to_string());
        if ours {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}
