//! What the front and its workers share, and nothing else: the frames on the socket
//! between them ([`frame`], re-exported at the root) and the contract by which the front
//! starts a worker ([`spawn`]). Both sides depend on this crate; neither on the other.

#![forbid(unsafe_code)]

mod frame;
pub mod spawn;

pub use frame::*;
