//! The access log: Gunicorn's/nginx's combined format, or one JSON object per line.

use std::io::Write;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use porch_config::AccessLogFormat;

/// Where access lines go. Lines are written whole under a lock, so they never interleave.
pub struct AccessLog {
    out: Mutex<Box<dyn Write + Send>>,
    format: AccessLogFormat,
}

impl AccessLog {
    pub fn open(target: &str, format: AccessLogFormat) -> std::io::Result<Arc<AccessLog>> {
        let out: Box<dyn Write + Send> = if target == "-" {
            Box::new(std::io::stdout())
        } else {
            Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(target)?,
            )
        };
        Ok(Arc::new(AccessLog {
            out: Mutex::new(out),
            format,
        }))
    }

    fn write(&self, line: &str) {
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        let _ = out.write_all(line.as_bytes());
        let _ = out.flush();
    }
}

/// One request's facts, written when its response is done.
pub struct AccessRecord {
    pub log: Arc<AccessLog>,
    pub remote: Option<IpAddr>,
    pub method: String,
    pub target: String,
    pub protocol: &'static str,
    pub status: u16,
    /// The app's status when the line says 499 (the client left during the answer).
    pub app_status: Option<u16>,
    pub bytes: u64,
    pub referer: String,
    pub user_agent: String,
    pub route: &'static str,
    pub started: Instant,
    pub queue_wait: Option<Duration>,
    pub aborted: bool,
}

impl AccessRecord {
    pub fn emit(self) {
        let line = match self.log.format {
            AccessLogFormat::Combined => {
                let when = httpdate::fmt_http_date(SystemTime::now());
                format!(
                    "{} - - [{}] \"{} {} {}\" {} {} \"{}\" \"{}\" {:.6}\n",
                    self.remote.map_or("-".to_string(), |ip| ip.to_string()),
                    when,
                    self.method,
                    self.target,
                    self.protocol,
                    self.status,
                    if self.bytes == 0 {
                        "-".to_string()
                    } else {
                        self.bytes.to_string()
                    },
                    escape(&self.referer),
                    escape(&self.user_agent),
                    self.started.elapsed().as_secs_f64(),
                )
            }
            AccessLogFormat::Json => {
                let v = serde_json::json!({
                    "time": httpdate::fmt_http_date(SystemTime::now()),
                    "remote": self.remote.map(|ip| ip.to_string()),
                    "method": self.method,
                    "target": self.target,
                    "protocol": self.protocol,
                    "status": self.status,
                    "app_status": self.app_status,
                    "bytes": self.bytes,
                    "referer": self.referer,
                    "user_agent": self.user_agent,
                    "route": self.route,
                    "duration_s": self.started.elapsed().as_secs_f64(),
                    "queue_wait_s": self.queue_wait.map(|d| d.as_secs_f64()),
                    "aborted": self.aborted,
                });
                format!("{v}\n")
            }
        };
        self.log.write(&line);
    }
}

fn escape(s: &str) -> String {
    if s.is_empty() {
        return "-".into();
    }
    s.replace('\\', "\\\\").replace('"', "\\\"")
}
