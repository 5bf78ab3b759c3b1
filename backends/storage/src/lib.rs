//! # weir-storage: the storage contract of Weir
//!
//! Everything below the broker's partition actors speaks the types of this crate:
//!
//! - [`Batch`]: a Kafka RecordBatch v2 as bytes, the unit of append, storage and transfer, with a
//!   [`BatchBuilder`] and a bounded decoder ([`Batch::records`]).
//! - [`Storage`]: one per broker, chosen by config. Opens and deletes partition logs, and keeps the
//!   broker's metadata and the consumer groups' committed offsets.
//! - [`PartitionLog`]: one per topic-partition, owned by its partition actor. Assigns offsets on
//!   append, serves whole batches from an offset, applies retention.
//! - `testkit` (feature `testkit`): the conformance suite every backend runs, expanded by
//!   [`conformance_suite!`] with one line per backend.
//!
//! Data flow: a producer's batch arrives as bytes, is validated once ([`Batch::new`] checks the
//! CRC), gets its base offset written in place by the log, and is stored and served unchanged.

// Weir's shipped code has no unsafe code (the workspace denies it; only a benchmark's calls
// into librdkafka are allowed it).
#![forbid(unsafe_code)]

pub mod batch;
pub mod compaction;
mod compression;
pub mod error;
pub mod log;
pub mod retention;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod types;

pub use batch::{
    Batch, BatchBuilder, Compression, Header, LogRecord, Record, TimestampType, TxnMarker,
};
pub use compaction::{CompactionPolicy, CompactionStats};
pub use error::{BatchError, Result, StorageError};
pub use log::{AppendDone, PartitionLog, Storage};
pub use types::{
    AppendInfo, CommittedOffset, Durability, LogConfig, LogOffsets, Offset, Retention,
    TopicPartition,
};
