//! The user-facing API: [`Producer`], [`Consumer`] and [`Admin`], over a [`Transport`].
//!
//! The three types are the same whether the broker runs inside the program (the transport is
//! a `BrokerHandle`) or elsewhere ([`RemoteTransport`], Weir's native protocol over TCP): an
//! application switches by changing how it builds them, nothing else. A program that only
//! talks to remote brokers builds this crate with `default-features = false`: the client and
//! the native codec, without the actor system or a storage backend.
//!
//! ```text
//! Producer ──records──► per-partition batches (linger, batch size) ──► Transport::publish
//! Consumer ◄──records── fetch positions per assigned partition ◄───── Transport::fetch
//!     └── group membership: join → sync → heartbeat task → commit → leave
//! ```

mod admin;
mod consumer;
#[cfg(feature = "broker")]
mod embedded;
mod producer;
mod remote;
mod transport;

pub use admin::Admin;
pub use consumer::{AutoOffsetReset, Consumer, ConsumerConfig, ConsumerRecord};
pub use producer::{DeliveryFuture, Producer, ProducerConfig, ProducerRecord, RecordMetadata};
pub use remote::RemoteTransport;
pub use transport::{PublishOutcome, Transport};

#[cfg(all(doc, feature = "broker"))]
use crate::BrokerHandle;
