//! The plain data the storage contract speaks in: partitions, offsets, log configuration and the
//! results of appends.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A position in a partition. Offsets are dense, start at 0 and are never reused.
pub type Offset = i64;

/// A topic name and a partition number.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TopicPartition {
    /// The topic name.
    pub topic: String,
    /// The partition index, from 0.
    pub partition: i32,
}

impl TopicPartition {
    /// A topic-partition.
    pub fn new(topic: impl Into<String>, partition: i32) -> Self {
        TopicPartition {
            topic: topic.into(),
            partition,
        }
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}

/// When an acknowledged append is on stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum Durability {
    /// Written to the OS (page cache) only; fsync happens when the OS decides or on `sync`.
    None,
    /// fsync at most every `interval_ms`: an append that finds the last fsync older than that
    /// starts one (the segment backend runs it beside later appends rather than in their
    /// way), and the owner calls [`crate::PartitionLog::sync`] on a timer so an idle log is
    /// synced too. A power loss loses at most about one interval (plus one sync) of
    /// acknowledged data.
    Interval {
        /// The longest time acknowledged data may stay unsynced while appends keep coming.
        interval_ms: u64,
    },
    /// fsync (or the engine's flush) before every append returns. Appends queued while one is in
    /// flight go down together as the next append, so one fsync covers all of them.
    #[default]
    Always,
}

/// Per-log settings a backend honours.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogConfig {
    /// When appends are durable.
    pub durability: Durability,
    /// Roll to a new segment once the active one holds at least this many bytes.
    pub segment_bytes: u64,
    /// Roll to a new segment once the active one's first append is this old.
    pub segment_ms: u64,
    /// Bytes between two entries of the sparse offset and time indexes.
    pub index_interval_bytes: u32,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            durability: Durability::Always,
            segment_bytes: 256 * 1024 * 1024,
            segment_ms: 7 * 24 * 60 * 60 * 1000,
            index_interval_bytes: 4096,
        }
    }
}

/// How much of a log to keep. Backends delete whole units (segments, or batches where they have
/// no segments) and never the data at or after the cut they compute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Retention {
    /// Delete a unit once its newest timestamp is older than `now - ms`.
    pub ms: Option<i64>,
    /// Delete the oldest units while the log stays at or above this many bytes without them.
    pub bytes: Option<u64>,
}

/// The offsets that bound a log, plus its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LogOffsets {
    /// First readable offset; moves forward with retention and `delete_before`.
    pub start: Offset,
    /// The offset the next appended record gets (Kafka's log end offset / high watermark).
    pub end: Offset,
    /// Bytes the log occupies in its backend (batches only, not indexes).
    pub size_bytes: u64,
}

/// What an append assigned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendInfo {
    /// The base offset given to each batch, in the order they were passed.
    pub base_offsets: Vec<Offset>,
    /// The log end offset after the append.
    pub end: Offset,
}

/// A committed consumer-group offset for one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedOffset {
    /// The next offset the group will consume.
    pub offset: Offset,
    /// The leader epoch the client saw, -1 when unknown.
    pub leader_epoch: i32,
    /// Free-form metadata the client attached.
    pub metadata: String,
    /// When the commit happened (ms since the epoch).
    pub commit_timestamp_ms: i64,
}
