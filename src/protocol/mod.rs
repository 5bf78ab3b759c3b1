//! Wire protocols, sans-IO: bytes in, typed messages out, and back. No sockets, no runtime.
//!
//! - [`native`]: Weir's own protocol, length-prefixed MessagePack frames.

pub mod native;
