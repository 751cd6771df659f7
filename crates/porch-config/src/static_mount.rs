//! Folders served under a URL prefix, from `--static`, `[static]` or a `static = DIR` route.

use std::path::PathBuf;

use crate::ConfigError;

/// A folder served under a URL prefix (see `front::static_files` for what it answers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticMount {
    /// Always starts and ends with `/`.
    pub prefix: String,
    pub dir: PathBuf,
    /// `Cache-Control` for names without a content hash; `None` sends
    /// `public, max-age=60`. Content-hashed names (`app.3f2a9c1b7d4e.css`) always get
    /// `public, max-age=31536000, immutable`.
    pub cache_control: Option<String>,
    /// File served for a directory URL (e.g. `index.html`); `None`: directories are 404.
    pub index: Option<String>,
    /// Serve names starting with `.` (e.g. `.well-known/`); `.` and `..` never are.
    pub allow_dotfiles: bool,
    /// Only reachable through `X-Accel-Redirect` from the app; clients get 404.
    pub internal: bool,
}

impl StaticMount {
    pub fn parse(key: &str, s: &str) -> Result<StaticMount, ConfigError> {
        let (prefix, dir) = s
            .split_once('=')
            .ok_or_else(|| ConfigError::value(key, s, "PREFIX=DIR, e.g. /static/=staticfiles"))?;
        StaticMount::new(key, prefix, dir)
    }

    /// A mount with the defaults: no index, no dotfiles, public, default `Cache-Control`.
    pub fn new(key: &str, prefix: &str, dir: &str) -> Result<StaticMount, ConfigError> {
        if !prefix.starts_with('/') {
            return Err(ConfigError::value(
                key,
                prefix,
                "a URL prefix starting with '/'",
            ));
        }
        if dir.is_empty() {
            return Err(ConfigError::value(key, dir, "a directory path"));
        }
        let mut prefix = prefix.to_string();
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        Ok(StaticMount {
            prefix,
            dir: dir.into(),
            cache_control: None,
            index: None,
            allow_dotfiles: false,
            internal: false,
        })
    }

    /// Checks the optional settings; `key` names the mount (e.g. `route.0`) in errors.
    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        if let Some(cc) = &self.cache_control {
            if cc.trim().is_empty() || http::HeaderValue::from_str(cc).is_err() {
                return Err(ConfigError::value(
                    &format!("{key}.cache_control"),
                    cc,
                    "a Cache-Control header value, e.g. \"public, max-age=3600\" or \"no-cache\"",
                ));
            }
        }
        if let Some(index) = &self.index {
            if index.is_empty() || index.starts_with('.') || index.contains(['/', '\\', '\0']) {
                return Err(ConfigError::value(
                    &format!("{key}.index"),
                    index,
                    "a plain file name, e.g. index.html",
                ));
            }
        }
        Ok(())
    }
}
