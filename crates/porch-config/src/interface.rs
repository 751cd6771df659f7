//! How the app is called: WSGI or ASGI (`--interface`), and for ASGI the event loop
//! (`--loop`), how many requests one worker runs at once (`--asgi-concurrency`) and the
//! WebSocket limits (`--ws-*`).

use std::time::Duration;

use porch_ipc::spawn::{EventLoop, Interface};

use crate::values::{positive, seconds_or_unlimited};
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

    /// Largest WebSocket message, in bytes, either way; a bigger one from a client closes
    /// its socket with 1009 [default: 16777216, as Uvicorn's --ws-max-size].
    #[arg(
        long = "ws-max-message",
        env = "PORCH_WS_MAX_MESSAGE",
        value_name = "BYTES"
    )]
    pub ws_max_message: Option<usize>,

    /// Seconds between the pings porch sends on an idle WebSocket; 0 sends none [default: 20].
    #[arg(
        long = "ws-ping-interval",
        env = "PORCH_WS_PING_INTERVAL",
        value_name = "SECONDS"
    )]
    pub ws_ping_interval: Option<f64>,

    /// Seconds a client has to answer a ping before its socket is closed with 1011
    /// [default: 20].
    #[arg(
        long = "ws-ping-timeout",
        env = "PORCH_WS_PING_TIMEOUT",
        value_name = "SECONDS"
    )]
    pub ws_ping_timeout: Option<f64>,
}

/// The largest message the front-to-worker frames can carry, with room for the header.
pub const WS_MAX_MESSAGE_LIMIT: usize = porch_ipc::MAX_FRAME - 64;

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
    pub websocket: WebSocketConfig,
}

/// How porch's front keeps the WebSockets it terminates for ASGI apps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WebSocketConfig {
    pub max_message: usize,
    /// `None`: no pings (a dead peer is then noticed only by TCP).
    pub ping_interval: Option<Duration>,
    pub ping_timeout: Duration,
}

impl Default for WebSocketConfig {
    fn default() -> Self {
        WebSocketConfig {
            max_message: 16 << 20,
            ping_interval: Some(Duration::from_secs(20)),
            ping_timeout: Duration::from_secs(20),
        }
    }
}

impl Default for InterfaceConfig {
    fn default() -> Self {
        InterfaceConfig {
            interface: Interface::Auto,
            event_loop: EventLoop::Auto,
            asgi_concurrency: 100,
            websocket: WebSocketConfig::default(),
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
        websocket: websocket(args, file)?,
    })
}

fn websocket(args: &InterfaceArgs, file: &FileConfig) -> Result<WebSocketConfig, ConfigError> {
    let default = WebSocketConfig::default();
    let max_message = positive(
        "ws_max_message",
        args.ws_max_message.or(file.ws_max_message),
        default.max_message,
    )?;
    if max_message > WS_MAX_MESSAGE_LIMIT {
        return Err(ConfigError::value(
            "ws_max_message",
            max_message,
            &format!("a number of bytes from 1 to {WS_MAX_MESSAGE_LIMIT}"),
        ));
    }
    let ping_interval = match args.ws_ping_interval.or(file.ws_ping_interval) {
        Some(0.0) => None,
        v => Some(seconds_or_unlimited("ws_ping_interval", v, 20.0)?),
    };
    let ping_timeout = seconds_or_unlimited(
        "ws_ping_timeout",
        args.ws_ping_timeout.or(file.ws_ping_timeout),
        20.0,
    )?;
    Ok(WebSocketConfig {
        max_message,
        ping_interval,
        ping_timeout,
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

    #[test]
    fn websocket_limits() {
        let file = FileConfig::parse("ws_max_message = 1024\nws_ping_interval = 0\n").unwrap();
        let ws = interface(&InterfaceArgs::default(), &file)
            .unwrap()
            .websocket;
        assert_eq!(ws.max_message, 1024);
        assert_eq!(ws.ping_interval, None, "0 turns pings off");
        let args = InterfaceArgs {
            ws_ping_timeout: Some(2.5),
            ..Default::default()
        };
        let ws = interface(&args, &FileConfig::default()).unwrap().websocket;
        assert_eq!(ws.ping_timeout, Duration::from_millis(2500));
        assert_eq!(ws.ping_interval, Some(Duration::from_secs(20)));
        let huge = InterfaceArgs {
            ws_max_message: Some(1 << 30),
            ..Default::default()
        };
        let err = interface(&huge, &FileConfig::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("ws_max_message"), "{err}");
        let negative = FileConfig::parse("ws_ping_timeout = -1\n").unwrap();
        let err = interface(&InterfaceArgs::default(), &negative)
            .unwrap_err()
            .to_string();
        assert!(err.contains("ws_ping_timeout"), "{err}");
    }
}
