//! Log settings: Gunicorn's level names and porch's access log formats, Gunicorn's
//! `--access-logformat` templates among them.

use crate::ConfigError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogFormat {
    Combined,
    Json,
    /// A Gunicorn template such as `%(h)s %(t)s "%(r)s" %(s)s %(b)s %(D)s`.
    Template(Vec<Piece>),
}

/// A part of a Gunicorn access log template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Text(String),
    Atom(Atom),
}

/// Gunicorn's access log atoms (`%(NAME)s`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Atom {
    /// `h`: the client address.
    Remote,
    /// `l`, `u`: `-` (no identd, no user name).
    Dash,
    /// `t`: `[01/Dec/2026:13:28:32 +0000]`.
    Time,
    /// `r`: `GET /path?q HTTP/1.1`.
    RequestLine,
    /// `m`
    Method,
    /// `U`: the path without the query.
    Path,
    /// `q`: the query string.
    Query,
    /// `H`: `HTTP/1.1`.
    Protocol,
    /// `s`
    Status,
    /// `B`: body bytes, `0` for none.
    Bytes,
    /// `b`: body bytes, `-` for none.
    BytesOrDash,
    /// `f`: Referer.
    Referer,
    /// `a`: User-Agent.
    UserAgent,
    /// `T`: whole seconds.
    Seconds,
    /// `M`: milliseconds.
    Millis,
    /// `D`: microseconds.
    Micros,
    /// `L`: seconds with decimals.
    DecimalSeconds,
    /// `p`: the process id, `<1234>`.
    Pid,
    /// `{name}i`: a request header.
    RequestHeader(String),
    /// `{name}o`: a response header (porch's access log does not keep them: `-`).
    ResponseHeader(String),
    /// `{name}e`: an environment variable of porch's process.
    Env(String),
}

impl AccessLogFormat {
    pub(crate) fn parse(s: Option<&str>) -> Result<AccessLogFormat, ConfigError> {
        match s {
            None | Some("combined") => Ok(AccessLogFormat::Combined),
            Some("json") => Ok(AccessLogFormat::Json),
            Some(t) if t.contains("%(") => Ok(AccessLogFormat::Template(template(t)?)),
            Some(other) => Err(ConfigError::value(
                "access_logformat",
                other,
                "combined, json or a Gunicorn template such as '%(h)s %(t)s \"%(r)s\" %(s)s %(b)s'",
            )),
        }
    }

    /// Request headers a template logs (`%({name}i)s`), lower-cased.
    pub fn request_headers(&self) -> Vec<String> {
        match self {
            AccessLogFormat::Template(pieces) => pieces
                .iter()
                .filter_map(|p| match p {
                    Piece::Atom(Atom::RequestHeader(h)) => Some(h.clone()),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        }
    }
}

fn template(t: &str) -> Result<Vec<Piece>, ConfigError> {
    let bad = |why: &str| ConfigError::value("access_logformat", t, why);
    let mut pieces = Vec::new();
    let mut text = String::new();
    let mut rest = t;
    while let Some(at) = rest.find('%') {
        text.push_str(&rest[..at]);
        rest = &rest[at..];
        if let Some(r) = rest.strip_prefix("%%") {
            text.push('%');
            rest = r;
            continue;
        }
        let Some(inner) = rest.strip_prefix("%(") else {
            text.push('%');
            rest = &rest[1..];
            continue;
        };
        let close = inner
            .find(")s")
            .ok_or_else(|| bad("atoms written %(NAME)s"))?;
        let name = &inner[..close];
        rest = &inner[close + 2..];
        if !text.is_empty() {
            pieces.push(Piece::Text(std::mem::take(&mut text)));
        }
        pieces.push(Piece::Atom(atom(name).ok_or_else(|| {
            bad("Gunicorn's atoms: h l u t r m U q H s B b f a T M D L p {header}i {header}o {var}e")
        })?));
    }
    text.push_str(rest);
    if !text.is_empty() {
        pieces.push(Piece::Text(text));
    }
    Ok(pieces)
}

fn atom(name: &str) -> Option<Atom> {
    if let Some(braced) = name.strip_prefix('{') {
        let (key, kind) = braced.rsplit_once('}')?;
        return match kind {
            "i" => Some(Atom::RequestHeader(key.to_ascii_lowercase())),
            "o" => Some(Atom::ResponseHeader(key.to_ascii_lowercase())),
            "e" => Some(Atom::Env(key.to_string())),
            _ => None,
        };
    }
    Some(match name {
        "h" => Atom::Remote,
        "l" | "u" => Atom::Dash,
        "t" => Atom::Time,
        "r" => Atom::RequestLine,
        "m" => Atom::Method,
        "U" => Atom::Path,
        "q" => Atom::Query,
        "H" => Atom::Protocol,
        "s" => Atom::Status,
        "B" => Atom::Bytes,
        "b" => Atom::BytesOrDash,
        "f" => Atom::Referer,
        "a" => Atom::UserAgent,
        "T" => Atom::Seconds,
        "M" => Atom::Millis,
        "D" => Atom::Micros,
        "L" => Atom::DecimalSeconds,
        "p" => Atom::Pid,
        _ => return None,
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gunicorn_templates_become_pieces() {
        let f = AccessLogFormat::parse(Some(
            r#"%(h)s %(l)s [%(t)s] "%(r)s" %(s)s %(b)s %(D)s %({X-Request-Id}i)s 100%%"#,
        ))
        .unwrap();
        let AccessLogFormat::Template(p) = &f else {
            panic!("{f:?}")
        };
        assert_eq!(p[0], Piece::Atom(Atom::Remote));
        assert_eq!(p[1], Piece::Text(" ".into()));
        assert!(p.contains(&Piece::Atom(Atom::RequestHeader("x-request-id".into()))));
        assert_eq!(p.last(), Some(&Piece::Text(" 100%".into())));
        assert_eq!(f.request_headers(), ["x-request-id"]);
        for bad in ["%(zz)s", "%(h", "fancy"] {
            let err = AccessLogFormat::parse(Some(bad)).unwrap_err().to_string();
            assert!(err.contains("access_logformat"), "{err}");
        }
    }
}
