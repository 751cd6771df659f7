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

/// A pause that may be zero (off).
pub(crate) fn seconds_or_zero(key: &str, v: Option<f64>) -> Result<Duration, ConfigError> {
    match v {
        None => Ok(Duration::ZERO),
        Some(v) if v.is_finite() && (0.0..1e9).contains(&v) => Ok(Duration::from_secs_f64(v)),
        Some(v) => Err(ConfigError::value(key, v, "a number of seconds, 0 or more")),
    }
}

fn checked_seconds(key: &str, v: f64) -> Result<Duration, ConfigError> {
    if !(v.is_finite() && v > 0.0 && v < 1e9) {
        return Err(ConfigError::value(key, v, "a positive number of seconds"));
    }
    Ok(Duration::from_secs_f64(v))
}
