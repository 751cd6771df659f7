//! Which Python runs the app: `--python`, else the virtualenv's `bin/python` (`--venv`,
//! `$VIRTUAL_ENV`), else the `python3` beside porch's own executable (porch installed by
//! pip lives in the venv's `bin/`), else `python3` on `PATH`. The workers and the
//! evaluation of a Python configuration file use the same one.

use std::path::{Path, PathBuf};

/// The interpreter path, and the virtualenv it came from.
pub fn resolve_python(
    python: Option<&Path>,
    venv: Option<&Path>,
) -> Result<(PathBuf, Option<PathBuf>), String> {
    if let Some(path) = python {
        return Ok((path.to_path_buf(), None));
    }
    if let Some(venv) = venv {
        return Ok((venv.join("bin/python"), Some(venv.to_path_buf())));
    }
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join("python3")))
        .filter(|p| p.is_file());
    if let Some(path) = beside {
        return Ok((path, None));
    }
    match on_path("python3") {
        Some(path) => Ok((path, None)),
        None => Err(
            "no Python interpreter found to run the workers: pass --python PATH \
                     or --venv DIR (or install porch into the app's virtualenv)"
                .into(),
        ),
    }
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
