//! Log settings: Gunicorn's level names and porch's access log formats.

use crate::ConfigError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessLogFormat {
    Combined,
    Json,
}

impl AccessLogFormat {
    pub(crate) fn parse(s: Option<&str>) -> Result<AccessLogFormat, ConfigError> {
        match s {
            None | Some("combined") => Ok(AccessLogFormat::Combined),
            Some("json") => Ok(AccessLogFormat::Json),
            Some(other) => Err(ConfigError::value(
                "access_logformat",
                other,
                "combined or json",
            )),
        }
    }
}

/// Gunicorn's names (`critical`, `warning`) map onto tracing's levels.
pub(crate) fn log_level(s: &str) -> Result<tracing::Level, ConfigError> {
    Ok(match s.to_ascii_lowercase().as_str() {
        "debug" | "trace" => tracing::Level::DEBUG,
        "info" => tracing::Level::INFO,
        "warning" | "warn" => tracing::Level::WARN,
        "error" | "critical" => tracing::Level::ERROR,
        _ => {
            return Err(ConfigError::value(
                "log_level",
                s,
                "one of debug, info, warning, error, critical",
            ))
        }
    })
}
