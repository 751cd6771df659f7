//! How the app is called: WSGI or ASGI (`--interface`), and for ASGI the event loop
//! (`--loop`) and how many requests one worker runs at once (`--asgi-concurrency`).

use porch_ipc::spawn::{EventLoop, Interface};

use crate::values::positive;
use crate::{ConfigError, FileConfig};

/// The flags, as typed (flattened into [`crate::cli::Args`]).
#[derive(clap::Args, Debug, Default, Clone)]
pub struct InterfaceArgs {
    /// How workers call the app: `wsgi`, `asgi`, or `auto` (an `async def app(scope,
    /// receive, send)`, or an object whose `__call__` is one, is ASGI) [default: auto].
    #[arg(long, value_name = "wsgi|asgi|auto", env = "PORCH_INTERFACE")]
    pub interface: Option<String>,

    /// Event loop of ASGI workers: `auto` (uvloop when installed), `asyncio` or `uvloop` [default: auto].
    #[arg(long = "loop", value_name = "auto|asyncio|uvloop", env = "PORCH_LOOP")]
    pub event_loop: Option<String>,

    /// Requests one ASGI worker runs at once (its tasks); more wait in porch's queue
    /// [default: 100].
    #[arg(long = "asgi-concurrency", env = "PORCH_ASGI_CONCURRENCY")]
    pub asgi_concurrency: Option<usize>,
}

/// The validated settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InterfaceConfig {
    pub interface: Interface,
    pub event_loop: EventLoop,
    /// Why 100: an ASGI worker earns its keep on requests that wait (database, upstream
    /// calls, Server-Sent Events, long polls), so it must hold many at once; but past a
    /// bound, extra requests are better off in porch's queue than in one loop: there they
    /// go to the next worker with room, get 503 at `--queue-timeout` and are never
    /// started late, while in a loop every request would slow down together.
    pub asgi_concurrency: usize,
}

impl Default for InterfaceConfig {
    fn default() -> Self {
        InterfaceConfig {
            interface: Interface::Auto,
            event_loop: EventLoop::Auto,
            asgi_concurrency: 100,
        }
    }
}

pub(crate) fn interface(
    args: &InterfaceArgs,
    file: &FileConfig,
) -> Result<InterfaceConfig, ConfigError> {
    let interface = match args.interface.as_deref().or(file.interface.as_deref()) {
        None | Some("auto") => Interface::Auto,
        Some("wsgi") => Interface::Wsgi,
        Some("asgi") => Interface::Asgi,
        Some(other) => {
            return Err(ConfigError::value(
                "interface",
                other,
                "`wsgi`, `asgi` or `auto`",
            ))
        }
    };
    let event_loop = match args.event_loop.as_deref().or(file.r#loop.as_deref()) {
        None | Some("auto") => EventLoop::Auto,
        Some("asyncio") => EventLoop::Asyncio,
        Some("uvloop") => EventLoop::Uvloop,
        Some(other) => {
            return Err(ConfigError::value(
                "loop",
                other,
                "`auto`, `asyncio` or `uvloop`",
            ))
        }
    };
    let asgi_concurrency = positive(
        "asgi_concurrency",
        args.asgi_concurrency.or(file.asgi_concurrency),
        InterfaceConfig::default().asgi_concurrency,
    )?;
    Ok(InterfaceConfig {
        interface,
        event_loop,
        asgi_concurrency,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_file_and_mistakes_are_named() {
        let file =
            FileConfig::parse("interface = 'asgi'\nloop = 'asyncio'\nasgi_concurrency = 7\n")
                .unwrap();
        let c = interface(&InterfaceArgs::default(), &file).unwrap();
        assert_eq!(c.interface, Interface::Asgi);
        assert_eq!(c.event_loop, EventLoop::Asyncio);
        assert_eq!(c.asgi_concurrency, 7);
        let args = InterfaceArgs {
            interface: Some("wsgi".into()),
            ..Default::default()
        };
        assert_eq!(interface(&args, &file).unwrap().interface, Interface::Wsgi);
        let bad = InterfaceArgs {
            event_loop: Some("trio".into()),
            ..Default::default()
        };
        let err = interface(&bad, &FileConfig::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("`loop`") && err.contains("trio"), "{err}");
        let zero = InterfaceArgs {
            asgi_concurrency: Some(0),
            ..Default::default()
        };
        assert!(interface(&zero, &FileConfig::default()).is_err());
        assert_eq!(
            interface(&InterfaceArgs::default(), &FileConfig::default()).unwrap(),
            InterfaceConfig::default()
        );
    }
}
