//! The environment variables Gunicorn deployments rely on, read where Gunicorn reads
//! them: `GUNICORN_CMD_ARGS` (and porch's `PORCH_CMD_ARGS`) as extra command-line words,
//! `$PORT` and `WEB_CONCURRENCY` as defaults that a file or a flag overrides.

use std::ffi::OsString;

use crate::ConfigError;

/// The arguments to parse: `GUNICORN_CMD_ARGS`, then `PORCH_CMD_ARGS` (each split like a
/// shell would), then the real command line, so flags typed by hand win, as in Gunicorn.
pub fn effective_args(argv: impl IntoIterator<Item = OsString>) -> Result<Vec<OsString>, String> {
    let mut argv = argv.into_iter();
    let mut out: Vec<OsString> = argv.next().into_iter().collect();
    for var in ["GUNICORN_CMD_ARGS", "PORCH_CMD_ARGS"] {
        if let Ok(extra) = std::env::var(var) {
            let split = shlex::split(&extra)
                .ok_or_else(|| format!("{var}: unbalanced quotes in {extra:?}"))?;
            out.extend(split.into_iter().map(OsString::from));
        }
    }
    out.extend(argv);
    Ok(out)
}

/// `0.0.0.0:$PORT` when `$PORT` is set: Gunicorn's default bind on Heroku-style platforms.
pub(crate) fn port_bind() -> Result<Option<String>, ConfigError> {
    let Ok(port) = std::env::var("PORT") else {
        return Ok(None);
    };
    match port.trim().parse::<u16>() {
        Ok(p) => Ok(Some(format!("0.0.0.0:{p}"))),
        Err(_) => Err(ConfigError::value("PORT", port, "a port number (1-65535)")),
    }
}

/// `WEB_CONCURRENCY`: the number of workers when neither a flag nor the file sets it.
pub(crate) fn web_concurrency() -> Result<Option<usize>, ConfigError> {
    let Ok(v) = std::env::var("WEB_CONCURRENCY") else {
        return Ok(None);
    };
    match v.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(Some(n)),
        _ => Err(ConfigError::value(
            "WEB_CONCURRENCY",
            v,
            "a whole number of workers, at least 1",
        )),
    }
}
