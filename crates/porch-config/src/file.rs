//! `porch.toml` as written: the raw tables, before any value is checked. Unknown keys are
//! refused here so a typo never silently falls back to a default.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::{CertKey, ConfigError};

/// `porch.toml`: the same settings as the flags, named with underscores.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub app: Option<String>,
    #[serde(default)]
    pub bind: Vec<String>,
    pub workers: Option<usize>,
    pub threads: Option<usize>,
    pub prefetch: Option<usize>,
    pub timeout: Option<f64>,
    pub boot_timeout: Option<f64>,
    pub queue_timeout: Option<f64>,
    pub graceful_timeout: Option<f64>,
    pub shutdown_delay: Option<f64>,
    pub keep_alive: Option<f64>,
    pub header_timeout: Option<f64>,
    pub body_timeout: Option<f64>,
    pub send_timeout: Option<f64>,
    pub limit_connections: Option<usize>,
    pub limit_connections_per_ip: Option<usize>,
    pub max_requests: Option<u64>,
    pub max_requests_jitter: Option<u64>,
    pub max_worker_memory: Option<u64>,
    pub user: Option<String>,
    pub group: Option<String>,
    pub limit_rate: Option<f64>,
    pub limit_burst: Option<u32>,
    pub chdir: Option<String>,
    #[serde(default)]
    pub pythonpath: Vec<String>,
    pub venv: Option<String>,
    pub python: Option<String>,
    pub access_logfile: Option<String>,
    pub access_logformat: Option<String>,
    pub error_logfile: Option<String>,
    pub log_level: Option<String>,
    pub forwarded_allow_ips: Option<String>,
    pub limit_request_line: Option<usize>,
    pub limit_request_fields: Option<usize>,
    pub limit_request_field_size: Option<usize>,
    pub limit_request_body: Option<u64>,
    pub body_memory: Option<usize>,
    pub body_memory_total: Option<usize>,
    pub response_memory: Option<usize>,
    pub response_memory_total: Option<usize>,
    pub limit_handshakes_per_ip: Option<usize>,
    pub static_cache_entries: Option<usize>,
    pub static_cache_memory: Option<usize>,
    pub backlog: Option<usize>,
    pub admin_bind: Option<String>,
    pub script_name: Option<String>,
    /// Gunicorn's worker class (`-k`): sync, gthread, gevent, eventlet.
    pub worker_class: Option<String>,
    pub worker_connections: Option<usize>,
    pub pidfile: Option<String>,
    /// `KEY=VALUE` strings set in the workers' environment.
    #[serde(default)]
    pub raw_env: Vec<String>,
    /// TLS on the `bind` addresses (PEM files).
    pub certfile: Option<String>,
    pub keyfile: Option<String>,
    pub ca_certs: Option<String>,
    pub cert_reqs: Option<u8>,
    pub daemon: Option<bool>,
    pub umask: Option<String>,
    pub reload: Option<bool>,
    #[serde(default)]
    pub reload_extra_files: Vec<String>,
    pub capture_output: Option<bool>,
    pub batch_scheduling: Option<bool>,
    pub preload_app: Option<bool>,
    pub proc_name: Option<String>,
    pub worker_tmp_dir: Option<String>,
    pub interface: Option<String>,
    pub r#loop: Option<String>,
    pub asgi_concurrency: Option<usize>,
    pub ws_max_message: Option<usize>,
    pub ws_ping_interval: Option<f64>,
    pub ws_ping_timeout: Option<f64>,
    /// `[static]` table: URL prefix → directory.
    #[serde(default, rename = "static")]
    pub statics: BTreeMap<String, String>,
    #[serde(default)]
    pub listener: Vec<toml::Spanned<ListenerFile>>,
    #[serde(default)]
    pub upstream: BTreeMap<String, toml::Spanned<UpstreamFile>>,
}

/// `[[listener]]` in porch.toml.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerFile {
    pub bind: String,
    pub tls: Option<TlsFile>,
    #[serde(default)]
    pub h2c: bool,
    pub redirect_https: Option<u16>,
    #[serde(default)]
    pub route: Vec<toml::Spanned<RouteFile>>,
}

/// `tls = { cert = "...", key = "..." }` or `tls = { certs = [{cert, key}, ...] }`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFile {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    #[serde(default)]
    pub certs: Vec<CertKey>,
    pub hsts_max_age: Option<u64>,
}

/// `[[listener.route]]` in porch.toml: `path` (and `host`) plus exactly one action.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteFile {
    pub host: Option<String>,
    pub path: Option<String>,
    pub app: Option<bool>,
    #[serde(rename = "static")]
    pub static_dir: Option<String>,
    pub proxy: Option<String>,
    pub redirect: Option<String>,
    #[serde(rename = "return")]
    pub return_status: Option<u16>,
    pub status: Option<u16>,
    pub body: Option<String>,
    /// Static routes: `Cache-Control` for names without a content hash.
    pub cache_control: Option<String>,
    /// Static routes: file served for directory URLs, e.g. `index.html`.
    pub index: Option<String>,
    /// Static routes: serve names starting with `.`.
    pub allow_dotfiles: Option<bool>,
    /// Static routes: only reachable through `X-Accel-Redirect` from the app.
    pub internal: Option<bool>,
    /// Proxy routes: the protocols a client may switch to (`Upgrade`) through the route.
    pub upgrades: Option<Vec<String>>,
}

/// `[upstream.NAME]` in porch.toml.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamFile {
    pub servers: Vec<String>,
    pub balance: Option<String>,
    pub connect_timeout: Option<f64>,
    pub header_timeout: Option<f64>,
    pub idle_timeout: Option<f64>,
    pub read_timeout: Option<f64>,
    pub tunnel_idle_timeout: Option<f64>,
    pub max_fails: Option<u32>,
    pub fail_timeout: Option<f64>,
    pub health_check_path: Option<String>,
    pub health_check_interval: Option<f64>,
    pub resolve_interval: Option<f64>,
}

impl FileConfig {
    pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
            path: path.display().to_string(),
            message: format!("cannot read: {e}"),
        })?;
        Self::parse(&text).map_err(|message| ConfigError::File {
            path: path.display().to_string(),
            message,
        })
    }

    /// Parses TOML text; the error says the line, the key and what was expected.
    pub fn parse(text: &str) -> Result<FileConfig, String> {
        toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            let Some(l) = line else {
                return e.message().to_string();
            };
            // Name the key written on that line, so "expected usize" reads as a fix.
            let key = text
                .lines()
                .nth(l - 1)
                .and_then(|t| t.split_once('='))
                .map(|(k, v)| (k.trim().trim_matches('"'), v.trim()))
                .filter(|(k, _)| !k.is_empty() && !k.starts_with('['));
            match key {
                Some((k, v)) if !e.message().contains(k) => {
                    format!("line {l}: `{k}` = {v}: {}", e.message())
                }
                _ => format!("line {l}: {}", e.message()),
            }
        })
    }
}

/// Places errors found after parsing (a bad route, an unknown upstream) on their line
/// of porch.toml, since the checked values no longer carry their spans.
pub(crate) struct Lines {
    path: String,
    text: String,
}

impl Lines {
    /// Without a file (flags only) errors still name `porch.toml`; the line is then 1.
    pub(crate) fn read(config_file: Option<&Path>) -> Lines {
        Lines::new(
            config_file.map_or_else(|| "porch.toml".into(), |p| p.display().to_string()),
            config_file
                .and_then(|p| std::fs::read_to_string(p).ok())
                .unwrap_or_default(),
        )
    }

    pub(crate) fn new(path: String, text: String) -> Lines {
        Lines { path, text }
    }

    pub(crate) fn at(&self, span: Range<usize>, e: ConfigError) -> ConfigError {
        let line = self.text[..span.start.min(self.text.len())]
            .matches('\n')
            .count()
            + 1;
        ConfigError::File {
            path: self.path.clone(),
            message: format!("line {line}: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_errors_name_line_and_key() {
        let err = FileConfig::parse("app = 'x'\nworkerz = 3\n").unwrap_err();
        assert!(err.contains("line 2") && err.contains("workerz"), "{err}");
        let err = FileConfig::parse("workers = 'many'\n").unwrap_err();
        assert!(err.contains("line 1"), "{err}");
    }
}
