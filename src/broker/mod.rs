//! The broker: an actor system behind one cloneable handle.
//!
//! ```text
//! BrokerHandle ──(route cache)──► Partition actors (spread over arbiters) ──► PartitionLog
//!      └──► TopicRegistry actor (create/alter/delete topics) ──► Topic actors
//! ```
//!
//! [`Broker::start`] starts the actor system on a thread of its own (an arbiter per core by
//! default), opens the configured storage, recovers every topic and returns a
//! [`BrokerHandle`]. The handle is `Send + Clone` and works from any async runtime: the
//! protocol servers and an embedding program use the same one. [`BrokerHandle::shutdown`]
//! drains every partition, closes every log and the storage, and stops the actor threads.
//!
//! Idempotent producers: [`BrokerHandle::init_producer_id`] hands out producer ids and epochs;
//! each partition actor checks their sequences ([`idempotence`]).
//!
//! The values this API takes and returns ([`types`], [`error`], [`partitioner`]) are plain data
//! and always built; the actors and the handle need the `broker` feature (on by default), so a
//! remote-only client shares the vocabulary without the actor system.

// The vocabulary, always built (the remote client uses it too).
pub mod error;
pub mod partitioner;
pub mod types;

// The actor system, behind the `broker` feature (on by default).
#[cfg(feature = "broker")]
pub mod assignor;
#[cfg(feature = "broker")]
pub mod consumer_protocol;
#[cfg(feature = "broker")]
pub mod group;
#[cfg(feature = "broker")]
pub mod group_record;
#[cfg(feature = "broker")]
mod handle;
#[cfg(feature = "broker")]
pub mod idempotence;
#[cfg(feature = "broker")]
pub mod messages;
#[cfg(feature = "broker")]
pub mod partition;
#[cfg(feature = "broker")]
pub mod registry;
#[cfg(feature = "broker")]
pub mod topic;
#[cfg(feature = "broker")]
pub mod transactions;
#[cfg(feature = "broker")]
pub mod txn_state;

pub use self::error::BrokerError;
#[cfg(feature = "broker")]
pub use self::handle::{Broker, BrokerHandle, StartError};
pub use self::types::{
    now_ms, AbortedFilter, AbortedTxn, Acks, ConsumerGroupDescription, ConsumerMemberDescription,
    FetchResult, GroupDescription, GroupState, Isolation, JoinGroup, JoinResult, JoinedMember,
    MemberDescription, MemberRef, OffsetSpec, PublishAck, ResetTo, SyncResult, TopicDescription,
    WEIR_PROTOCOL_TYPE,
};
