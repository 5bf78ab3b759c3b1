//! Wire protocols, sans-IO: bytes in, typed messages out, and back. No sockets, no runtime.
//!
//! - [`native`]: Weir's own protocol, length-prefixed MessagePack frames.
//! - [`kafka`]: the Kafka wire protocol (the APIs and versions Weir serves), requests and
//!   responses both ways, with zero-copy record payloads.

pub mod kafka;
pub mod native;
