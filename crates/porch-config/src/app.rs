//! The WSGI app reference (`MODULE:CALLABLE`), checked here so a typo fails before any
//! worker tries to import it.

use crate::ConfigError;

pub use porch_ipc::spawn::AppSpec;

/// Reads `MODULE`, `MODULE:CALLABLE`, `MODULE:factory()` or `MODULE:factory("prod", x=1)`
/// (literal arguments, as Gunicorn allows; the worker evaluates them).
pub fn parse_app(s: &str) -> Result<AppSpec, ConfigError> {
    let bad = |why: &str| ConfigError::value("app", s, why);
    let (module, callable) = match s.split_once(':') {
        Some((m, c)) => (m, c),
        None => (s, "application"),
    };
    let (callable, factory, args) = match callable.split_once('(') {
        Some((c, rest)) => match rest.trim_end().strip_suffix(')') {
            Some(inner) if inner.trim().is_empty() => (c.trim(), true, None),
            Some(inner) => (c.trim(), true, Some(inner.to_string())),
            None => return Err(bad(
                "a call with its closing parenthesis, e.g. create_app() or create_app(\"prod\")",
            )),
        },
        None => (callable, false, None),
    };
    let is_dotted_name = |x: &str| {
        !x.is_empty()
            && x.split('.').all(|part| {
                !part.is_empty()
                    && !part.starts_with(|c: char| c.is_ascii_digit())
                    && part.chars().all(|c| c.is_alphanumeric() || c == '_')
            })
    };
    if !is_dotted_name(module) {
        return Err(bad(
            "MODULE:CALLABLE with a dotted Python module name, e.g. mysite.wsgi:application",
        ));
    }
    if !is_dotted_name(callable) {
        return Err(bad(
            "a Python name after ':', e.g. application or create_app()",
        ));
    }
    Ok(AppSpec {
        module: module.into(),
        callable: callable.into(),
        factory,
        args,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_specs() {
        assert_eq!(parse_app("a.b").unwrap().callable, "application");
        let f = parse_app("pkg.mod:create_app()").unwrap();
        assert!(f.factory);
        assert_eq!(f.callable, "create_app");
        assert_eq!(f.to_string(), "pkg.mod:create_app()");
        let f = parse_app("app:create_app(\"prod\", debug=True)").unwrap();
        assert_eq!(f.callable, "create_app");
        assert_eq!(f.args.as_deref(), Some("\"prod\", debug=True"));
        assert_eq!(f.to_string(), "app:create_app(\"prod\", debug=True)");
        for bad in ["", ":app", "a:", "a b:app", "a:1x", "a..b:app", "a:f(x"] {
            assert!(parse_app(bad).is_err(), "{bad:?} must be refused");
        }
    }
}
