//! Number checks shared by every group of settings, so `0` and negative values are
//! refused the same way whatever the key.

use std::time::Duration;

use crate::ConfigError;

pub(crate) fn positive(key: &str, v: Option<usize>, default: usize) -> Result<usize, ConfigError> {
    match v {
        None => Ok(default),
        Some(0) => Err(ConfigError::value(key, 0, "a whole number of at least 1")),
        Some(n) => Ok(n),
    }
}

pub(crate) fn seconds(key: &str, v: Option<f64>, default: f64) -> Result<Duration, ConfigError> {
    checked_seconds(key, v.unwrap_or(default))
}

/// For a default derived from another, already checked, setting: only a value given
/// here is checked, so an unset key never fails because of another key's value.
pub(crate) fn seconds_or(
    key: &str,
    v: Option<f64>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    v.map_or(Ok(default), |v| checked_seconds(key, v))
}

/// What Gunicorn's `0` ("no limit") becomes for a time: about three years.
pub(crate) const UNLIMITED: Duration = Duration::from_secs(100_000_000);

/// Like [`seconds`], but `0` means no limit, as in Gunicorn (`--timeout 0`).
pub(crate) fn seconds_or_unlimited(
    key: &str,
    v: Option<f64>,
    default: f64,
) -> Result<Duration, ConfigError> {
    match v {
        Some(0.0) => Ok(UNLIMITED),
        v => seconds(key, v, default),
    }
}

/// Like [`seconds`], but `0` is kept as zero (`--keep-alive 0`: no keep-alive).
pub(crate) fn seconds_or_zero(
    key: &str,
    v: Option<f64>,
    default: f64,
) -> Result<Duration, ConfigError> {
    match v {
        Some(0.0) => Ok(Duration::ZERO),
        v => seconds(key, v, default),
    }
}

/// A count where Gunicorn's `0` means "the largest allowed".
pub(crate) fn count_or_max(
    key: &str,
    v: Option<usize>,
    default: usize,
    max: usize,
) -> Result<usize, ConfigError> {
    match v {
        Some(0) => Ok(max),
        v => positive(key, v, default),
    }
}

fn checked_seconds(key: &str, v: f64) -> Result<Duration, ConfigError> {
    if !(v.is_finite() && v > 0.0 && v < 1e9) {
        return Err(ConfigError::value(key, v, "a positive number of seconds"));
    }
    Ok(Duration::from_secs_f64(v))
}
