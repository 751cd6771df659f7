//! Gunicorn's front-side server hooks (`on_starting`, `when_ready`, `on_reload`,
//! `on_exit`, `pre_fork`, `child_exit`, `nworkers_changed`) from a Python configuration
//! file. porch's front links no Python, so each runs in a short-lived interpreter started
//! at that moment: `python -m porch.hooks NAME SOURCE JSON` (the workers' interpreter, in
//! the app's directory). porch waits for it (at most [`HOOK_TIMEOUT`]), as Gunicorn's
//! arbiter waits for its hooks; a failing hook is logged and porch goes on.

use std::process::Stdio;
use std::time::Duration;

use porch_config::{Config, Hooks};
use serde_json::{json, Value};

use crate::interpreter::Interpreter;

pub use porch_config::WORKER_HOOKS;

/// Longest a front-side hook may run before porch goes on without it.
const HOOK_TIMEOUT: Duration = Duration::from_secs(30);

/// What the hooks' `server` object tells: porch's pid, the workers, the binds.
pub fn server_info(cfg: &Config) -> Value {
    json!({
        "pid": std::process::id(),
        "workers": cfg.workers,
        "binds": cfg.listeners.iter().map(|l| l.bind.to_string()).collect::<Vec<_>>(),
    })
}

/// The front-side hooks of one configuration, ready to run.
#[derive(Clone)]
pub struct FrontHooks {
    hooks: Hooks,
    interpreter: Interpreter,
    info: Value,
    chdir: Option<std::path::PathBuf>,
    pythonpath: Vec<std::path::PathBuf>,
}

impl FrontHooks {
    pub fn new(cfg: &Config, interpreter: &Interpreter) -> Option<FrontHooks> {
        let hooks = cfg.hooks.clone()?;
        Some(FrontHooks {
            hooks,
            interpreter: interpreter.clone(),
            info: server_info(cfg),
            chdir: cfg.chdir.clone(),
            pythonpath: cfg.pythonpath.clone(),
        })
    }

    /// Runs hook `name` if the file defines it; `extra` adds to the `server` facts
    /// (`worker_pid` for `pre_fork`/`child_exit`, `new`/`old` for `nworkers_changed`).
    pub async fn run(&self, name: &str, extra: Value) {
        if !self.hooks.has(name) {
            return;
        }
        let mut info = self.info.clone();
        if let (Some(info), Value::Object(extra)) = (info.as_object_mut(), extra) {
            info.extend(extra);
        }
        let mut cmd = tokio::process::Command::new(&self.interpreter.path);
        cmd.args([
            "-m",
            "porch.hooks",
            name,
            &self.hooks.source,
            &info.to_string(),
        ])
        .stdin(Stdio::null())
        .kill_on_drop(true);
        if let Some(dir) = &self.chdir {
            cmd.current_dir(dir);
        }
        if let Some(venv) = &self.interpreter.venv {
            cmd.env("VIRTUAL_ENV", venv);
        }
        if !self.pythonpath.is_empty() {
            let mut paths: Vec<String> = self
                .pythonpath
                .iter()
                .map(|p| p.display().to_string())
                .collect();
            paths.extend(std::env::var("PYTHONPATH").ok().filter(|p| !p.is_empty()));
            cmd.env("PYTHONPATH", paths.join(":"));
        }
        for var in ["LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"] {
            cmd.env_remove(var);
        }
        match tokio::time::timeout(HOOK_TIMEOUT, cmd.status()).await {
            Ok(Ok(s)) if s.success() => tracing::debug!("hook {name} ran"),
            Ok(Ok(s)) => tracing::error!("hook {name} failed ({s})"),
            Ok(Err(e)) => tracing::error!("cannot run hook {name}: {e}"),
            Err(_) => tracing::error!(
                "hook {name} still running after {} s; going on without it",
                HOOK_TIMEOUT.as_secs()
            ),
        }
    }
}
