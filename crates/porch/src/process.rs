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
