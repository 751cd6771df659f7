//! Gunicorn's settings about porch's own process rather than requests: the pid file,
//! the app's environment (`-e`/`raw_env`), running in the background, the file mode
//! mask, reloading on code changes, and the options accepted with a note.

use std::path::PathBuf;

use crate::cli::Args;
use crate::worker_class::WorkerClass;
use crate::{ConfigError, FileConfig};

/// Settings about the porch process and the workers' surroundings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Process {
    /// Written with porch's pid once listening, removed on exit (`--pid`).
    pub pidfile: Option<PathBuf>,
    /// Set in every worker's environment (`-e KEY=VALUE`, `raw_env`).
    pub worker_env: Vec<(String, String)>,
    /// Detach from the terminal and run in the background (`--daemon`).
    pub daemon: bool,
    /// `umask` for porch and its workers (`--umask`); Gunicorn's default, 0, leaves the
    /// inherited mask alone (Gunicorn applies it to its socket files only).
    pub umask: Option<u32>,
    /// Replace the workers when a source file changes (`--reload`).
    pub reload: bool,
    /// Files watched by `--reload` beside the app's Python files.
    pub reload_extra_files: Vec<PathBuf>,
    /// Send the workers' stdout to the error log too (`--capture-output`).
    pub capture_output: bool,
    /// Run the front's threads under `SCHED_BATCH` (`batch_scheduling`, on by default):
    /// its wake-ups do not preempt a worker that is running Python on the same core.
    pub batch_scheduling: bool,
}

/// Threads per worker after `-k`, and the notes `-k` and the accepted options give.
pub(crate) struct Threads {
    pub threads: Option<usize>,
    pub notes: Vec<String>,
    /// `-k` named an ASGI worker class.
    pub asgi: bool,
}

pub(crate) fn threads(args: &Args, file: &FileConfig) -> Result<Threads, ConfigError> {
    let threads = args.threads.or(file.threads);
    let mut notes = Vec::new();
    let Some(class) = args.worker_class.clone().or(file.worker_class.clone()) else {
        return Ok(Threads {
            threads,
            notes,
            asgi: false,
        });
    };
    let class =
        WorkerClass::parse(&class).map_err(|e| ConfigError::value("worker_class", &class, &e))?;
    let (threads, note) =
        class.threads(threads, args.worker_connections.or(file.worker_connections));
    notes.extend(note);
    Ok(Threads {
        threads,
        notes,
        asgi: class == WorkerClass::Asgi,
    })
}

impl Process {
    pub(crate) fn new(
        args: &Args,
        file: &FileConfig,
        notes: &mut Vec<String>,
    ) -> Result<Process, ConfigError> {
        let raw_env = if args.raw_env.is_empty() {
            &file.raw_env
        } else {
            &args.raw_env
        };
        let worker_env = raw_env
            .iter()
            .map(|kv| match kv.split_once('=') {
                Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
                _ => Err(ConfigError::value("raw_env", kv, "KEY=VALUE")),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let umask = args
            .umask
            .clone()
            .or(file.umask.clone())
            .map(|m| parse_umask(&m))
            .transpose()?
            .filter(|m| *m != 0);
        if args.preload || file.preload_app == Some(true) {
            notes.push(
                "`--preload` accepted: each worker imports the app itself; the first worker \
                 boots alone, so an app that fails to import stops start-up once"
                    .into(),
            );
        }
        if let Some(name) = args.name.as_ref().or(file.proc_name.as_ref()) {
            notes.push(format!(
                "`--name {name}` accepted: porch's processes keep their names (porch, python -m porch.worker)"
            ));
        }
        if args.worker_tmp_dir.is_some() || file.worker_tmp_dir.is_some() {
            notes.push(
                "`--worker-tmp-dir` accepted: porch's workers need no heartbeat files".into(),
            );
        }
        Ok(Process {
            pidfile: args
                .pid
                .clone()
                .or(file.pidfile.clone())
                .filter(|p| !p.is_empty())
                .map(PathBuf::from),
            worker_env,
            daemon: args.daemon || file.daemon == Some(true),
            umask,
            reload: args.reload || file.reload == Some(true),
            reload_extra_files: if args.reload_extra_files.is_empty() {
                &file.reload_extra_files
            } else {
                &args.reload_extra_files
            }
            .iter()
            .map(PathBuf::from)
            .collect(),
            capture_output: args.capture_output || file.capture_output == Some(true),
            batch_scheduling: file.batch_scheduling != Some(false),
        })
    }
}

/// Gunicorn's spelling: `0o22`, `0x12`, `022` (octal, leading zero) or decimal `18`.
fn parse_umask(s: &str) -> Result<u32, ConfigError> {
    let t = s.trim();
    let parsed = if let Some(o) = t.strip_prefix("0o").or(t.strip_prefix("0O")) {
        u32::from_str_radix(o, 8)
    } else if let Some(x) = t.strip_prefix("0x").or(t.strip_prefix("0X")) {
        u32::from_str_radix(x, 16)
    } else if t.len() > 1 && t.starts_with('0') {
        u32::from_str_radix(&t[1..], 8)
    } else {
        t.parse()
    };
    match parsed {
        Ok(m) if m <= 0o777 => Ok(m),
        _ => Err(ConfigError::value(
            "umask",
            s,
            "a mode mask such as 0o022, 022 or 18",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn umask_spellings() {
        assert_eq!(parse_umask("0o22").unwrap(), 0o22);
        assert_eq!(parse_umask("022").unwrap(), 0o22);
        assert_eq!(parse_umask("007").unwrap(), 0o7);
        assert_eq!(parse_umask("18").unwrap(), 18);
        assert_eq!(parse_umask("0").unwrap(), 0);
        assert!(parse_umask("0o999").is_err());
    }
}
