//! The WSGI app reference (`MODULE:CALLABLE`), checked here so a typo fails before any
//! worker tries to import it.

use crate::ConfigError;

pub use porch_ipc::spawn::AppSpec;

/// Reads `MODULE`, `MODULE:CALLABLE` or `MODULE:factory()`.
pub fn parse_app(s: &str) -> Result<AppSpec, ConfigError> {
    let bad = |why: &str| ConfigError::value("app", s, why);
    let (module, callable) = match s.split_once(':') {
        Some((m, c)) => (m, c),
        None => (s, "application"),
    };
    let (callable, factory) = match callable.strip_suffix("()") {
        Some(c) => (c, true),
        None => (callable, false),
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
        for bad in ["", ":app", "a:", "a b:app", "a:1x", "a..b:app"] {
            assert!(parse_app(bad).is_err(), "{bad:?} must be refused");
        }
    }
}
