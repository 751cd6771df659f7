//! `porch.toml` text → `FileConfig::parse` → a built `Config` (as `porch -c FILE` does).
//!
//! Never panics; a file that parses either builds a `Config` that keeps the invariants
//! the rest of porch relies on, or fails with an error that names what is wrong.

use std::path::PathBuf;
use std::sync::OnceLock;

use porch_config::cli::Args;
use porch_config::{Config, FileConfig, RouteAction};

/// One scratch file per fuzzing process; `Config::from_args` reads the file it names.
fn scratch() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        std::env::temp_dir().join(format!("porch-fuzz-config-{}.toml", std::process::id()))
    })
}

pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let file = match FileConfig::parse(text) {
        Ok(f) => f,
        Err(message) => {
            assert!(!message.is_empty(), "empty parse error for {text:?}");
            return;
        }
    };
    let file_mib = file.max_worker_memory;
    let path = scratch();
    std::fs::write(path, data).expect("write scratch config");
    let args = Args {
        config: Some(path.display().to_string()),
        ..Args::default()
    };
    let built = Config::from_args(&args);
    let _ = std::fs::remove_file(path);
    let cfg = match built {
        Ok(cfg) => cfg,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    assert!(cfg.workers >= 1 && cfg.threads >= 1);
    assert!(!cfg.listeners.is_empty(), "a built config always listens somewhere");
    assert!(!cfg.timeout.is_zero() && !cfg.graceful_timeout.is_zero());
    assert!(!cfg.keep_alive.is_zero());
    assert!(cfg.limits.request_line >= 1 && cfg.limits.request_fields >= 1);
    assert!(cfg.limits.request_field_size >= 1);
    if let Some(rl) = &cfg.rate_limit {
        assert!(rl.per_second > 0.0 && rl.per_second.is_finite() && rl.burst >= 1);
    }
    // A memory bound in MiB is kept as bytes, never silently wrapped to another value.
    if let (Some(mib), Some(bytes)) = (file_mib, cfg.max_worker_memory) {
        assert_eq!(bytes >> 20, mib, "max_worker_memory {mib} MiB became {bytes} bytes");
    }
    for l in &cfg.listeners {
        assert!(!l.routes.is_empty());
        for r in &l.routes {
            assert!(r.prefix.starts_with('/'), "route prefix {:?}", r.prefix);
            match &r.action {
                RouteAction::Static(m) => {
                    assert!(m.prefix.starts_with('/') && m.prefix.ends_with('/'));
                }
                RouteAction::App => assert!(cfg.app.is_some()),
                RouteAction::Proxy(p) => {
                    assert!(cfg.upstreams.iter().any(|u| u.name == p.upstream()));
                }
                _ => {}
            }
        }
    }
    for u in &cfg.upstreams {
        assert!(!u.servers.is_empty());
    }
}
