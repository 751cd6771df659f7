//! The access log: Gunicorn's/nginx's combined format, a Gunicorn `--access-logformat`
//! template, or one JSON object per line.

use std::io::Write;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::http_util::header_str;
use porch_config::{AccessLogFormat, Atom, Piece};

/// Where access lines go. Lines are written whole under a lock, so they never interleave.
pub struct AccessLog {
    out: Mutex<Box<dyn Write + Send>>,
    format: AccessLogFormat,
    /// Request headers the template logs, kept with each record.
    headers: Vec<http::HeaderName>,
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
        let headers = format
            .request_headers()
            .iter()
            .filter_map(|h| http::HeaderName::from_bytes(h.as_bytes()).ok())
            .collect();
        Ok(Arc::new(AccessLog {
            out: Mutex::new(out),
            format,
            headers,
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
    /// The request headers a Gunicorn template asks for, in the log's order.
    pub headers: Vec<String>,
}

impl AccessRecord {
    /// The line of one request, completed (status, bytes, route) as its answer goes out.
    pub fn new(
        log: &Arc<AccessLog>,
        remote: Option<IpAddr>,
        method: &str,
        target: &str,
        protocol: &'static str,
        headers: Option<&http::HeaderMap>,
        started: Instant,
    ) -> AccessRecord {
        let header = |name| headers.map_or_else(String::new, |h| header_str(h, name));
        AccessRecord {
            log: log.clone(),
            remote,
            method: method.to_string(),
            target: target.to_string(),
            protocol,
            status: 0,
            app_status: None,
            bytes: 0,
            referer: header(http::header::REFERER),
            user_agent: header(http::header::USER_AGENT),
            route: "",
            started,
            queue_wait: None,
            aborted: false,
            headers: log.headers.iter().map(|h| header(h.clone())).collect(),
        }
    }

    pub fn emit(self) {
        let line = match &self.log.format {
            AccessLogFormat::Template(pieces) => self.render(pieces),
            AccessLogFormat::Combined => {
                let when = clf_time(SystemTime::now());
                format!(
                    "{} - - [{}] \"{} {} {}\" {} {} \"{}\" \"{}\" {:.6}\n",
                    self.remote.map_or("-".to_string(), |ip| ip.to_string()),
                    when,
                    escape(&self.method),
                    escape(&self.target),
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
                format!("{}\n", ascii_json(&v.to_string()))
            }
        };
        self.log.write(&line);
    }
}

impl AccessRecord {
    /// A Gunicorn template line; client text is escaped as in the combined format.
    fn render(&self, pieces: &[Piece]) -> String {
        use std::fmt::Write as _;
        let mut out = String::with_capacity(160);
        let elapsed = self.started.elapsed();
        let mut wanted = self.headers.iter();
        for piece in pieces {
            let atom = match piece {
                Piece::Text(t) => {
                    out.push_str(t);
                    continue;
                }
                Piece::Atom(a) => a,
            };
            let (path, query) = self
                .target
                .split_once('?')
                .unwrap_or((self.target.as_str(), ""));
            let _ = match atom {
                Atom::Remote => write!(
                    out,
                    "{}",
                    self.remote.map_or("-".to_string(), |ip| ip.to_string())
                ),
                Atom::Dash => write!(out, "-"),
                Atom::Time => write!(out, "[{}]", clf_time(SystemTime::now())),
                Atom::RequestLine => write!(
                    out,
                    "{} {} {}",
                    escape(&self.method),
                    escape(&self.target),
                    self.protocol
                ),
                Atom::Method => write!(out, "{}", escape(&self.method)),
                Atom::Path => write!(out, "{}", escape(path)),
                Atom::Query => write!(out, "{}", if query.is_empty() { "" } else { query }),
                Atom::Protocol => write!(out, "{}", self.protocol),
                Atom::Status => write!(out, "{}", self.status),
                Atom::Bytes => write!(out, "{}", self.bytes),
                Atom::BytesOrDash if self.bytes == 0 => write!(out, "-"),
                Atom::BytesOrDash => write!(out, "{}", self.bytes),
                Atom::Referer => write!(out, "{}", escape(&self.referer)),
                Atom::UserAgent => write!(out, "{}", escape(&self.user_agent)),
                Atom::Seconds => write!(out, "{}", elapsed.as_secs()),
                Atom::Millis => write!(out, "{}", elapsed.as_millis()),
                Atom::Micros => write!(out, "{}", elapsed.as_micros()),
                Atom::DecimalSeconds => write!(out, "{:.6}", elapsed.as_secs_f64()),
                Atom::Pid => write!(out, "<{}>", std::process::id()),
                Atom::RequestHeader(_) => {
                    write!(out, "{}", escape(wanted.next().map_or("", |v| v.as_str())))
                }
                Atom::ResponseHeader(_) => write!(out, "-"),
                Atom::Env(name) => {
                    write!(out, "{}", escape(&std::env::var(name).unwrap_or_default()))
                }
            };
        }
        out.push('\n');
        out
    }
}

/// The time as the combined log format writes it (strftime `%d/%b/%Y:%H:%M:%S %z`, local
/// time): `01/Dec/2026:13:28:32 +0000`, which GoAccess and COMBINEDAPACHELOG expect.
pub(crate) fn clf_time(t: SystemTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as libc::time_t;
    // SAFETY: localtime_r reads `secs` and writes into the zeroed struct we own.
    let tm = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&secs, &mut tm).is_null() {
            libc::gmtime_r(&secs, &mut tm);
        }
        tm
    };
    let offset = tm.tm_gmtoff / 60;
    let sign = if offset < 0 { '-' } else { '+' };
    format!(
        "{:02}/{}/{}:{:02}:{:02}:{:02} {sign}{:02}{:02}",
        tm.tm_mday,
        MONTHS[tm.tm_mon.clamp(0, 11) as usize],
        tm.tm_year + 1900,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        offset.abs() / 60,
        offset.abs() % 60,
    )
}

/// A field of the combined format, escaped as nginx does: `"`, `\\`, control bytes and
/// every non-ASCII byte (C1 controls and bidi overrides among them) become `\\xHH`, so a
/// client can neither break the quoted fields apart nor hide text from whoever reads the
/// log.
fn escape(s: &str) -> String {
    if s.is_empty() {
        return "-".into();
    }
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b) {
            out.push_str(&format!("\\x{b:02X}"));
        } else {
            out.push(b as char);
        }
    }
    out
}

/// JSON with every non-ASCII character as a `\\u` escape: the same text for a JSON
/// reader, nothing a terminal or an editor would render as a control (bidi overrides).
fn ascii_json(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if c.is_ascii() && !c.is_ascii_control() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{ascii_json, clf_time, escape};

    #[test]
    fn combined_time_is_the_common_log_format() {
        // 2026-12-01 13:28:32 UTC
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_796_131_712);
        let s = clf_time(t);
        let (date, zone) = s.split_once(' ').unwrap();
        assert_eq!(date.len(), "01/Dec/2026:13:28:32".len(), "{s}");
        assert!(date.contains("/Dec/2026:"), "{s}");
        assert!(
            zone.len() == 5 && (zone.starts_with('+') || zone.starts_with('-')),
            "{s}"
        );
        if zone == "+0000" {
            assert_eq!(s, "01/Dec/2026:13:28:32 +0000");
        }
    }

    #[test]
    fn json_lines_are_ascii() {
        let v = serde_json::json!({"ua": "\u{202e}x\u{1F600}"});
        let line = ascii_json(&v.to_string());
        assert_eq!(line, r#"{"ua":"\u202ex\ud83d\ude00"}"#);
        let back: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(back, v);
    }

    #[test]
    fn quotes_controls_and_non_ascii_are_escaped() {
        assert_eq!(escape(""), "-");
        assert_eq!(escape("curl/8.0"), "curl/8.0");
        assert_eq!(escape("a\"b"), "a\\x22b");
        assert_eq!(escape("a\\b\nc"), "a\\x5Cb\\x0Ac");
        assert_eq!(escape("\u{202e}x"), "\\xE2\\x80\\xAEx");
    }
}
