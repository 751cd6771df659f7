//! Strict HTTP/1 framing checks in front of hyper.
//!
//! hyper (through httparse) is deliberately lenient: it accepts bare LF line endings,
//! quietly resolves `Content-Length` together with `Transfer-Encoding`, and closes the
//! connection without an answer on some malformed heads. Request smuggling lives in
//! exactly those gaps, and no crate offers a strict mode, so this wrapper checks every
//! byte a client sends before hyper sees it: heads line by line (CRLF only, no obs-fold,
//! token header names, no NUL or stray CR, sane and unambiguous framing headers, the
//! request-line and header limits) and bodies by their framing (exact `Content-Length`,
//! well-formed chunks). The first violation ends the connection with a specific 4xx;
//! nothing after it ever reaches hyper, so no smuggled request reaches the app.
//!
//! Bytes are only released to hyper once validated; a head's final empty line is released
//! only after the whole head passed, so hyper never dispatches a request this rejects.
//!
//! An `Upgrade` header only asks to switch protocols. Checking stops for good only once a
//! `101` answered it ([`Switch`]); until that answer, the bytes after the request are held
//! unread, and after any other answer they are checked as the next request.

mod checker;
mod grammar;
mod io;
mod switch;
mod timeouts;

pub use checker::{Checker, HeadLimits, Reject};
pub use io::StrictIo;
pub use switch::Switch;
pub use timeouts::{Activity, ActivityGuard, Timeouts};
