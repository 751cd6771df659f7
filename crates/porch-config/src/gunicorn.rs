//! Gunicorn's command line as real projects type it: every one of Gunicorn's options is
//! known here. Those porch implements are [`Args`] fields; the rest are either accepted
//! with a one-line note (they have no meaning in porch) or refused with what to do
//! instead. [`screen`] reads the whole command line first, so every refused or unknown
//! option is reported in one message, before clap sees the rest.

use std::ffi::OsString;

use clap::CommandFactory;

use crate::cli::Args;

/// What porch does with a Gunicorn option it has no field for.
#[derive(Debug, Clone, Copy)]
enum Treat {
    /// Accepted and dropped; the note says why it makes no difference (or what differs).
    Note(&'static str),
    /// Refused: the text says what to do instead.
    Refuse(&'static str),
}

/// How many values an option takes.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Takes {
    Nothing,
    Value,
    /// `--proxy-protocol [MODE]`: a value only when the next word is one of these.
    Maybe(&'static [&'static str]),
}

struct Known {
    names: &'static [&'static str],
    /// The setting's name in a gunicorn.conf.py.
    setting: &'static str,
    takes: Takes,
    treat: Treat,
}

const SYSLOG: Treat = Treat::Note(
    "porch logs to --error-logfile (stderr by default, which journald and Docker collect), not to syslog",
);
const STATSD: Treat = Treat::Note(
    "porch sends no StatsD metrics; scrape its Prometheus /metrics on --admin-bind instead",
);
const LOG_CONFIG: Treat = Treat::Note(
    "porch's own log lines go to --error-logfile at --log-level; the app's loggers are configured by the app",
);
const STRICT_HTTP: Treat =
    Treat::Note("porch's front keeps its strict request checks (malformed requests get 400)");
const TLS_DETAIL: Treat =
    Treat::Note("porch's TLS (rustls) offers TLS 1.2 and 1.3 with its own safe cipher suites");
const HTTP2: Treat = Treat::Note(
    "porch speaks HTTP/1.1 everywhere and HTTP/2 on TLS listeners (h2c = true on a porch.toml listener)",
);
const ASGI: Treat = Treat::Note(
    "an option of Gunicorn's ASGI workers; porch's ASGI workers take --loop and --asgi-concurrency, and always run lifespan when the app supports it",
);
const DIRTY: Treat = Treat::Refuse("porch has no dirty arbiters; drop the option");
const PASTE: Treat = Treat::Refuse(
    "porch does not read PasteDeploy files: name the WSGI callable instead, e.g. `porch mysite.wsgi:application`",
);

/// Gunicorn's options that are not [`Args`] fields (those are found through clap).
const KNOWN: &[Known] = &[
    Known { names: &["--spew"], setting: "spew", takes: Takes::Nothing, treat: Treat::Note("porch does not trace every executed line") },
    Known { names: &["--print-config"], setting: "print_config", takes: Takes::Nothing, treat: Treat::Refuse("use --check-config, which validates the configuration and imports the app") },
    Known { names: &["--no-sendfile"], setting: "sendfile", takes: Takes::Nothing, treat: Treat::Note("no effect: porch's front sends static files itself and apps' file responses whole") },
    Known { names: &["--reuse-port"], setting: "reuse_port", takes: Takes::Nothing, treat: Treat::Note("no effect: porch binds each address once for all its workers") },
    Known { names: &["--initgroups"], setting: "initgroups", takes: Takes::Nothing, treat: Treat::Note("porch switches to --group as the only group") },
    Known { names: &["--disable-redirect-access-to-syslog"], setting: "disable_redirect_access_to_syslog", takes: Takes::Nothing, treat: SYSLOG },
    Known { names: &["--logger-class"], setting: "logger_class", takes: Takes::Value, treat: LOG_CONFIG },
    Known { names: &["--log-config"], setting: "logconfig", takes: Takes::Value, treat: LOG_CONFIG },
    Known { names: &["--log-config-json"], setting: "logconfig_json", takes: Takes::Value, treat: LOG_CONFIG },
    Known { names: &["--log-syslog-to"], setting: "syslog_addr", takes: Takes::Value, treat: SYSLOG },
    Known { names: &["--log-syslog"], setting: "syslog", takes: Takes::Nothing, treat: SYSLOG },
    Known { names: &["--log-syslog-prefix"], setting: "syslog_prefix", takes: Takes::Value, treat: SYSLOG },
    Known { names: &["--log-syslog-facility"], setting: "syslog_facility", takes: Takes::Value, treat: SYSLOG },
    Known { names: &["-R", "--enable-stdio-inheritance"], setting: "enable_stdio_inheritance", takes: Takes::Nothing, treat: Treat::Note("no effect: porch's workers always write to porch's stdout and stderr") },
    Known { names: &["--statsd-host"], setting: "statsd_host", takes: Takes::Value, treat: STATSD },
    Known { names: &["--dogstatsd-tags"], setting: "dogstatsd_tags", takes: Takes::Value, treat: STATSD },
    Known { names: &["--statsd-prefix"], setting: "statsd_prefix", takes: Takes::Value, treat: STATSD },
    Known { names: &["--enable-backlog-metric"], setting: "enable_backlog_metric", takes: Takes::Nothing, treat: STATSD },
    Known { names: &["--paste", "--paster"], setting: "paste", takes: Takes::Value, treat: PASTE },
    Known { names: &["--paste-global"], setting: "raw_paste_global_conf", takes: Takes::Value, treat: PASTE },
    Known { names: &["--proxy-protocol"], setting: "proxy_protocol", takes: Takes::Maybe(&["off", "auto", "v1", "v2", "true", "false"]), treat: Treat::Refuse("porch does not read the PROXY protocol: have the load balancer send X-Forwarded-For and list it in --forwarded-allow-ips") },
    Known { names: &["--proxy-allow-from"], setting: "proxy_allow_ips", takes: Takes::Value, treat: Treat::Note("no effect without the PROXY protocol; --forwarded-allow-ips decides whom porch trusts") },
    Known { names: &["--protocol"], setting: "protocol", takes: Takes::Value, treat: Treat::Note("porch speaks HTTP to clients (not uwsgi)") },
    Known { names: &["--uwsgi-allow-from"], setting: "uwsgi_allow_ips", takes: Takes::Value, treat: Treat::Note("porch speaks HTTP to clients (not uwsgi)") },
    Known { names: &["--ssl-version"], setting: "ssl_version", takes: Takes::Value, treat: TLS_DETAIL },
    Known { names: &["--ciphers"], setting: "ciphers", takes: Takes::Value, treat: TLS_DETAIL },
    Known { names: &["--suppress-ragged-eofs"], setting: "suppress_ragged_eofs", takes: Takes::Nothing, treat: TLS_DETAIL },
    Known { names: &["--do-handshake-on-connect"], setting: "do_handshake_on_connect", takes: Takes::Nothing, treat: TLS_DETAIL },
    Known { names: &["--http-protocols"], setting: "http_protocols", takes: Takes::Value, treat: HTTP2 },
    Known { names: &["--http2-cleartext"], setting: "http2_cleartext", takes: Takes::Nothing, treat: HTTP2 },
    Known { names: &["--http2-max-concurrent-streams"], setting: "http2_max_concurrent_streams", takes: Takes::Value, treat: HTTP2 },
    Known { names: &["--http2-initial-window-size"], setting: "http2_initial_window_size", takes: Takes::Value, treat: HTTP2 },
    Known { names: &["--http2-max-frame-size"], setting: "http2_max_frame_size", takes: Takes::Value, treat: HTTP2 },
    Known { names: &["--http2-max-header-list-size"], setting: "http2_max_header_list_size", takes: Takes::Value, treat: HTTP2 },
    Known { names: &["--permit-obsolete-folding"], setting: "permit_obsolete_folding", takes: Takes::Nothing, treat: STRICT_HTTP },
    Known { names: &["--strip-header-spaces"], setting: "strip_header_spaces", takes: Takes::Nothing, treat: STRICT_HTTP },
    Known { names: &["--permit-unconventional-http-method"], setting: "permit_unconventional_http_method", takes: Takes::Nothing, treat: STRICT_HTTP },
    Known { names: &["--permit-unconventional-http-version"], setting: "permit_unconventional_http_version", takes: Takes::Nothing, treat: STRICT_HTTP },
    Known { names: &["--casefold-http-method"], setting: "casefold_http_method", takes: Takes::Nothing, treat: STRICT_HTTP },
    Known { names: &["--forwarder-headers"], setting: "forwarder_headers", takes: Takes::Value, treat: Treat::Note("porch passes X-Forwarded-For/-Proto from --forwarded-allow-ips peers; other headers reach the app as sent") },
    Known { names: &["--header-map"], setting: "header_map", takes: Takes::Value, treat: Treat::Note("porch drops headers with underscores from clients, as Gunicorn's default does") },
    Known { names: &["--http-parser"], setting: "http_parser", takes: Takes::Value, treat: Treat::Note("porch's front parses HTTP itself") },
    Known { names: &["--root-path"], setting: "root_path", takes: Takes::Value, treat: Treat::Note("an ASGI setting; for WSGI set SCRIPT_NAME") },
    Known { names: &["--asgi-loop"], setting: "asgi_loop", takes: Takes::Value, treat: ASGI },
    Known { names: &["--asgi-lifespan"], setting: "asgi_lifespan", takes: Takes::Value, treat: ASGI },
    Known { names: &["--asgi-disconnect-grace-period"], setting: "asgi_disconnect_grace_period", takes: Takes::Value, treat: ASGI },
    Known { names: &["--dirty-app"], setting: "dirty_apps", takes: Takes::Value, treat: DIRTY },
    Known { names: &["--dirty-workers"], setting: "dirty_workers", takes: Takes::Value, treat: DIRTY },
    Known { names: &["--dirty-timeout"], setting: "dirty_timeout", takes: Takes::Value, treat: DIRTY },
    Known { names: &["--dirty-threads"], setting: "dirty_threads", takes: Takes::Value, treat: DIRTY },
    Known { names: &["--dirty-graceful-timeout"], setting: "dirty_graceful_timeout", takes: Takes::Value, treat: DIRTY },
    Known { names: &["--control-socket"], setting: "control_socket", takes: Takes::Value, treat: Treat::Note("porch takes signals instead (HUP reload, TTIN/TTOU workers, TERM stop)") },
    Known { names: &["--control-socket-mode"], setting: "control_socket_mode", takes: Takes::Value, treat: Treat::Note("porch has no control socket") },
    Known { names: &["--no-control-socket"], setting: "control_socket_disable", takes: Takes::Nothing, treat: Treat::Note("porch has no control socket") },
    Known { names: &["--reload-engine"], setting: "reload_engine", takes: Takes::Value, treat: Treat::Note("--reload checks file times once a second") },
    // Settings Gunicorn reads from configuration files only.
    Known { names: &[], setting: "logconfig_dict", takes: Takes::Value, treat: LOG_CONFIG },
    Known { names: &[], setting: "secure_scheme_headers", takes: Takes::Value, treat: Treat::Note("porch takes the scheme from X-Forwarded-Proto of --forwarded-allow-ips peers") },
    Known { names: &[], setting: "tmp_upload_dir", takes: Takes::Value, treat: Treat::Note("porch's front spills large request bodies to temporary files itself") },
    Known { names: &["--debug"], setting: "debug", takes: Takes::Nothing, treat: Treat::Note("use --log-level debug") },
];

/// The command line after screening: what clap parses, and the notes to log once
/// logging is set up.
#[derive(Debug, Default)]
pub struct Screened {
    pub args: Vec<OsString>,
    pub notes: Vec<String>,
}

/// One of clap's options: its spellings and whether it takes a value.
struct ClapOpt {
    longs: Vec<String>,
    short: Option<char>,
    takes_value: bool,
}

fn clap_options() -> Vec<ClapOpt> {
    let mut opts: Vec<ClapOpt> = Args::command()
        .get_arguments()
        .filter(|a| !a.is_positional())
        .map(|a| ClapOpt {
            longs: a
                .get_long()
                .into_iter()
                .chain(a.get_all_aliases().unwrap_or_default())
                .map(str::to_string)
                .collect(),
            short: a.get_short(),
            takes_value: a.get_action().takes_values(),
        })
        .collect();
    for (long, short) in [("help", 'h'), ("version", 'V')] {
        opts.push(ClapOpt {
            longs: vec![long.into()],
            short: Some(short),
            takes_value: false,
        });
    }
    opts
}

/// Reads the whole command line: drops the options accepted with a note, and reports
/// every refused or unknown option (and a worker class porch cannot run) in one message.
pub fn screen(argv: Vec<OsString>) -> Result<Screened, String> {
    let clap = clap_options();
    let mut out = Screened::default();
    let mut errors: Vec<String> = Vec::new();
    let mut words = argv.into_iter();
    out.args.extend(words.next());
    let words: Vec<OsString> = words.collect();
    let mut i = 0;
    while i < words.len() {
        let word = words[i].to_string_lossy().into_owned();
        i += 1;
        if word == "--" {
            out.args.extend(words[i - 1..].iter().cloned());
            break;
        }
        let (name, inline) = if let Some(long) = word.strip_prefix("--") {
            match long.split_once('=') {
                Some((n, v)) => (format!("--{n}"), Some(v.to_string())),
                None => (word.clone(), None),
            }
        } else if word.len() > 1 && word.starts_with('-') && !is_number(&word) {
            let mut chars = word.chars().skip(1);
            let c = chars.next().unwrap_or('-');
            let rest: String = chars.collect();
            (format!("-{c}"), (!rest.is_empty()).then_some(rest))
        } else {
            out.args.push(words[i - 1].clone());
            continue;
        };
        let next = words.get(i).map(|w| w.to_string_lossy().into_owned());
        if let Some(opt) = clap.iter().find(|o| matches_clap(o, &name)) {
            out.args.push(words[i - 1].clone());
            let mut value = inline.clone();
            if opt.takes_value && inline.is_none() {
                if let Some(w) = words.get(i) {
                    out.args.push(w.clone());
                    value = next.clone();
                    i += 1;
                }
            }
            if let (true, Some(v)) = (name == "-k" || name == "--worker-class", value) {
                if let Err(e) = crate::worker_class::WorkerClass::parse(&v) {
                    errors.push(e);
                }
            }
            continue;
        }
        let Some(known) = KNOWN.iter().find(|k| k.names.contains(&name.as_str())) else {
            errors.push(format!(
                "`{name}` is neither a porch nor a Gunicorn option: `porch --help` lists them"
            ));
            continue;
        };
        let consumes_next = inline.is_none()
            && match known.takes {
                Takes::Nothing => false,
                Takes::Value => next.is_some(),
                Takes::Maybe(values) => next.as_deref().is_some_and(|n| values.contains(&n)),
            };
        if consumes_next {
            i += 1;
        }
        match known.treat {
            Treat::Note(why) => out.notes.push(format!("`{name}` accepted: {why}")),
            Treat::Refuse(what) => errors.push(format!("`{name}` is not supported: {what}")),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors.join("\n  "))
    }
}

/// The note or refusal for a Gunicorn setting with no porch field, named as in a
/// gunicorn.conf.py: `Ok(Some(note))`, `Err(what to do)`, or `Ok(None)` when porch
/// does not know the name (ignored, as Gunicorn ignores unknown names).
pub fn setting_note(setting: &str) -> Result<Option<String>, String> {
    let Some(known) = KNOWN.iter().find(|k| k.setting == setting) else {
        return Ok(None);
    };
    match known.treat {
        Treat::Note(why) => Ok(Some(format!("`{setting}` accepted: {why}"))),
        Treat::Refuse(what) => Err(format!("`{setting}` is not supported: {what}")),
    }
}

fn matches_clap(opt: &ClapOpt, name: &str) -> bool {
    match name.strip_prefix("--") {
        Some(long) => opt.longs.iter().any(|l| l == long),
        None => name.chars().nth(1) == opt.short,
    }
}

/// `-1` is a value (clap is told to allow negative numbers), not an option.
fn is_number(word: &str) -> bool {
    word[1..].parse::<f64>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn screen_words(v: &[&str]) -> Result<Screened, String> {
        screen(
            std::iter::once("porch")
                .chain(v.iter().copied())
                .map(OsString::from)
                .collect(),
        )
    }

    #[test]
    fn every_gunicorn_option_has_one_treatment() {
        let clap = clap_options();
        for k in KNOWN {
            for n in k.names {
                assert!(
                    !clap.iter().any(|o| matches_clap(o, n)),
                    "{n} is both a field and in the table"
                );
            }
        }
    }

    #[test]
    fn noted_options_are_dropped_with_their_values() {
        let s = screen_words(&[
            "--statsd-host",
            "localhost:8125",
            "-w",
            "2",
            "--log-syslog",
            "--statsd-prefix=web",
            "app:app",
        ])
        .unwrap();
        let args: Vec<_> = s.args.iter().map(|a| a.to_string_lossy()).collect();
        assert_eq!(args, ["porch", "-w", "2", "app:app"]);
        assert_eq!(s.notes.len(), 3);
    }

    #[test]
    fn every_refused_and_unknown_option_is_reported_at_once() {
        let err = screen_words(&[
            "--paste",
            "x.ini",
            "--frobnicate",
            "-k",
            "aiohttp.GunicornWebWorker",
            "--proxy-protocol",
            "app:app",
        ])
        .unwrap_err();
        for part in [
            "--paste",
            "--frobnicate",
            "GunicornWebWorker",
            "--proxy-protocol",
        ] {
            assert!(err.contains(part), "{part} missing in {err}");
        }
        // `--proxy-protocol` did not swallow the app.
        assert!(!err.contains("app:app"), "{err}");
    }

    #[test]
    fn clap_options_keep_their_values_in_every_spelling() {
        let s = screen_words(&["-w4", "--bind=:80", "-t", "-1", "--", "--x"]).unwrap();
        assert_eq!(s.args.len(), 7);
        assert!(s.notes.is_empty());
    }
}
