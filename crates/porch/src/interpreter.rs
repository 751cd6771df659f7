//! Which Python runs the workers, and whether porch's worker extension is installed in it.
//!
//! Workers are the app's own interpreter (`python -m porch.worker`), so porch serves any
//! CPython the app uses. The interpreter is, in order: `--python`; the virtualenv's
//! `bin/python` (`--venv`, `$VIRTUAL_ENV`); the `python3` beside porch's own executable
//! (porch installed by pip lives in the venv's `bin/`); `python3` on `PATH`.

use std::path::PathBuf;
use std::time::Duration;

use porch_config::Config;
use porch_ipc::spawn::{PROTOCOL, VERSION};

/// The interpreter workers are started with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interpreter {
    pub path: PathBuf,
    /// Set as `$VIRTUAL_ENV` for the workers when the interpreter came from a virtualenv.
    pub venv: Option<PathBuf>,
}

/// What the probe of an interpreter found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// `3.12.1`
    pub python_version: String,
}

/// The oldest CPython the worker extension is built for (its stable-ABI floor).
const MIN_PYTHON: (u32, u32) = (3, 9);

impl Interpreter {
    /// Picks the interpreter for a configuration; an error says what to pass instead.
    pub fn resolve(cfg: &Config) -> Result<Interpreter, String> {
        let (path, venv) =
            porch_config::resolve_python(cfg.python.as_deref(), cfg.venv.as_deref())?;
        Ok(Interpreter { path, venv })
    }

    /// Starts the interpreter once to check that it is a CPython porch supports and that
    /// it has this release's worker extension; the error names the fix.
    pub async fn probe(&self) -> Result<Found, String> {
        const SCRIPT: &str = "import sys\n\
            print('%d.%d.%d' % tuple(sys.version_info[:3]))\n\
            try:\n    import porch._worker as w\n\
            except Exception as e:\n    print('missing'); print(repr(e)); sys.exit(0)\n\
            print(w.VERSION); print(w.PROTOCOL)\n";
        let path = self.path.display();
        let run = tokio::process::Command::new(&self.path)
            .args(["-c", SCRIPT])
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output();
        let out = match tokio::time::timeout(Duration::from_secs(60), run).await {
            Err(_) => {
                return Err(format!(
                    "the Python interpreter {path} did not answer within 60 s"
                ))
            }
            Ok(Err(e)) => return Err(format!("cannot run the Python interpreter {path}: {e}")),
            Ok(Ok(out)) => out,
        };
        let text = String::from_utf8_lossy(&out.stdout);
        let mut lines = text.lines();
        let (Some(version), true) = (lines.next(), out.status.success()) else {
            return Err(format!(
                "the Python interpreter {path} failed to start ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        };
        let install = format!("{path} -m pip install porch=={VERSION}");
        let numbers: Vec<u32> = version.split('.').filter_map(|n| n.parse().ok()).collect();
        if numbers.len() < 2 || (numbers[0], numbers[1]) < MIN_PYTHON {
            return Err(format!(
                "porch's workers need CPython {}.{} or later; {path} is Python {version}: \
                 pass --python or --venv with a newer interpreter",
                MIN_PYTHON.0, MIN_PYTHON.1
            ));
        }
        match (lines.next(), lines.next()) {
            (Some("missing"), why) => Err(format!(
                "porch's worker extension is not installed for {path} (Python {version}; {}): \
                 run `{install}`, or pass --python/--venv with the app's interpreter",
                why.unwrap_or("import failed")
            )),
            (Some(theirs), Some(protocol))
                if theirs == VERSION && protocol == PROTOCOL.to_string() =>
            {
                Ok(Found {
                    python_version: version.to_string(),
                })
            }
            (theirs, protocol) => Err(format!(
                "{path} (Python {version}) has porch {} (worker protocol {}) installed, but this \
                 is porch {VERSION} (worker protocol {PROTOCOL}): run `{install}`",
                theirs.unwrap_or("(unknown)"),
                protocol.unwrap_or("(unknown)")
            )),
        }
    }
}
