//! The one error type: every check in this crate reports through it, so `--check-config`,
//! start-up and SIGHUP all print the same sentence for the same mistake.

/// A configuration mistake, phrased for the person who made it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid value {value:?} for `{key}`: expected {expected}")]
    Value {
        key: String,
        value: String,
        expected: String,
    },
    #[error("missing `{key}`: {hint}")]
    Missing {
        key: &'static str,
        hint: &'static str,
    },
    #[error("{path}: {message}")]
    File { path: String, message: String },
}

impl ConfigError {
    pub fn value(key: &str, value: impl std::fmt::Display, expected: &str) -> ConfigError {
        ConfigError::Value {
            key: key.to_string(),
            value: value.to_string(),
            expected: expected.to_string(),
        }
    }
}
