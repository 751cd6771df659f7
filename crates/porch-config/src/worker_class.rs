//! Gunicorn's worker classes (`-k`), mapped onto porch's workers: a process running a
//! WSGI app on `threads` Python threads, or an ASGI app on an event loop.

/// Greenlet workers become this many threads at most: each thread holds a real stack
/// and competes for the GIL, so thousands (gevent's default) would only cost memory.
pub const GREEN_THREADS_CAP: usize = 32;

/// Gunicorn's default `--worker-connections`.
pub const DEFAULT_WORKER_CONNECTIONS: usize = 1000;

/// A worker class porch can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerClass {
    /// `sync`: one request at a time per thread (`--threads`, default 1).
    Sync,
    /// `gthread`: `--threads` per worker.
    Gthread,
    /// `gevent`/`eventlet`: threads instead of greenlets.
    Green(&'static str),
    /// Uvicorn's Gunicorn workers: porch's ASGI workers (`--interface asgi`).
    Asgi,
}

impl WorkerClass {
    /// Reads `-k` in Gunicorn's spellings (`gevent`, `egg:gunicorn#gevent`,
    /// `gunicorn.workers.ggevent.GeventWorker`); the error names the class.
    pub fn parse(s: &str) -> Result<WorkerClass, String> {
        let short = s.strip_prefix("egg:gunicorn#").unwrap_or(s);
        Ok(match short {
            "sync" | "gunicorn.workers.sync.SyncWorker" => WorkerClass::Sync,
            "gthread" | "gunicorn.workers.gthread.ThreadWorker" => WorkerClass::Gthread,
            "gevent"
            | "gunicorn.workers.ggevent.GeventWorker"
            | "gevent_wsgi"
            | "gevent_pywsgi"
            | "gunicorn.workers.ggevent.GeventPyWSGIWorker" => WorkerClass::Green("gevent"),
            "eventlet" | "gunicorn.workers.geventlet.EventletWorker" => {
                WorkerClass::Green("eventlet")
            }
            "uvicorn.workers.UvicornWorker"
            | "uvicorn.workers.UvicornH11Worker"
            | "uvicorn_worker.UvicornWorker"
            | "uvicorn_worker.UvicornH11Worker" => WorkerClass::Asgi,
            asgi if is_asgi(asgi) => {
                return Err(format!(
                    "worker class `{s}` is not supported: for an ASGI app, drop -k (porch tells \
                     ASGI from WSGI at import) or use --interface asgi"
                ))
            }
            "tornado" | "gunicorn.workers.gtornado.TornadoWorker" => {
                return Err(format!(
                    "worker class `{s}` is not supported: porch runs WSGI apps on threads; \
                     drop -k (or use -k gthread --threads N)"
                ))
            }
            _ => {
                return Err(format!(
                    "unknown worker class `{s}`: porch runs sync (the default), gthread \
                     (--threads N), gevent and eventlet (as threads)"
                ))
            }
        })
    }

    /// Threads per worker for this class, with the note to log when porch differs.
    pub fn threads(
        self,
        threads: Option<usize>,
        worker_connections: Option<usize>,
    ) -> (Option<usize>, Option<String>) {
        match self {
            WorkerClass::Sync | WorkerClass::Gthread | WorkerClass::Asgi => (threads, None),
            WorkerClass::Green(name) => {
                let n = worker_connections
                    .unwrap_or(DEFAULT_WORKER_CONNECTIONS)
                    .clamp(1, GREEN_THREADS_CAP);
                let note = format!(
                    "-k {name}: porch runs each worker's requests on {n} Python threads \
                     (min(--worker-connections, {GREEN_THREADS_CAP})) instead of greenlets; \
                     the app is not monkey-patched"
                );
                (Some(n), Some(note))
            }
        }
    }
}

fn is_asgi(class: &str) -> bool {
    let lower = class.to_ascii_lowercase();
    lower.contains("uvicorn") || lower.contains("asgi") || lower.starts_with("aiohttp.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_in_gunicorn_spellings() {
        assert_eq!(WorkerClass::parse("sync").unwrap(), WorkerClass::Sync);
        assert_eq!(
            WorkerClass::parse("egg:gunicorn#gevent").unwrap(),
            WorkerClass::Green("gevent")
        );
        assert_eq!(
            WorkerClass::parse("gunicorn.workers.gthread.ThreadWorker").unwrap(),
            WorkerClass::Gthread
        );
        for asgi in [
            "uvicorn.workers.UvicornWorker",
            "uvicorn_worker.UvicornWorker",
        ] {
            assert_eq!(WorkerClass::parse(asgi).unwrap(), WorkerClass::Asgi);
        }
        let err = WorkerClass::parse("aiohttp.GunicornWebWorker").unwrap_err();
        assert!(err.contains("--interface asgi"), "{err}");
        let err = WorkerClass::parse("meinheld.gmeinheld.MeinheldWorker").unwrap_err();
        assert!(err.contains("unknown worker class `meinheld"), "{err}");
    }

    #[test]
    fn green_workers_become_capped_threads() {
        let (t, note) = WorkerClass::Green("gevent").threads(None, None);
        assert_eq!(t, Some(GREEN_THREADS_CAP));
        assert!(note.unwrap().contains("gevent"));
        assert_eq!(
            WorkerClass::Green("eventlet").threads(None, Some(8)).0,
            Some(8)
        );
        assert_eq!(WorkerClass::Gthread.threads(Some(4), None), (Some(4), None));
    }
}
