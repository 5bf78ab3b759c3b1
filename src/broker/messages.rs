//! Every message the broker's actors exchange. They carry owned data; handlers stay short.

use std::time::Duration;

use actix::prelude::*;
use weir_storage::{Batch, LogOffsets, Offset};

use super::error::BrokerError;
use crate::config::TopicConfig;

/// How a publish is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum Acks {
    /// Fire and forget: answered at once, before the append (Kafka `acks=0`).
    None,
    /// After the append returned (Kafka `acks=1`).
    Leader,
    /// After the append is durable under the topic's durability (Kafka `acks=all`).
    /// Weir is one node, so this is the same moment as `Leader`; both wait for the log.
    #[default]
    All,
}

/// What a publish got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PublishAck {
    /// Offset of the first record of the first batch (-1 under `Acks::None`).
    pub base_offset: Offset,
    /// The log start offset after the append.
    pub log_start_offset: Offset,
    /// The time the broker stamped the batches with, on a `LogAppendTime` topic; else -1
    /// (also for a duplicate, as in Kafka). Absent from older brokers' frames.
    #[serde(default = "no_append_time")]
    pub log_append_time_ms: i64,
}

fn no_append_time() -> i64 {
    -1
}

/// Appends batches to one partition.
#[derive(Debug, Message)]
#[rtype(result = "Result<PublishAck, BrokerError>")]
pub struct Publish {
    /// The batches, each a valid RecordBatch v2 (offsets assigned by the log).
    pub batches: Vec<Batch>,
    /// When to answer.
    pub acks: Acks,
}

/// [`Publish`] with its answer going to a channel, so that a sender can enqueue it with
/// `try_send` (which reports a full mailbox) and await the answer separately: a connection
/// uses it to keep pipelined publishes in arrival order.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct PublishTo {
    /// The batches.
    pub batches: Vec<Batch>,
    /// When to answer.
    pub acks: Acks,
    /// Where the outcome goes.
    pub reply: tokio::sync::oneshot::Sender<Result<PublishAck, BrokerError>>,
}

/// What a fetch returns.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct FetchResult {
    /// Whole batches; the first may start before the requested offset.
    pub batches: Vec<Batch>,
    /// The log end offset when the read ran.
    pub high_watermark: Offset,
    /// The log start offset when the read ran.
    pub log_start_offset: Offset,
}

/// Reads from one partition, waiting up to `max_wait` for `min_bytes`.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<FetchResult, BrokerError>")]
pub struct Fetch {
    /// First offset wanted.
    pub from: Offset,
    /// Soft limit on the bytes returned (at least one batch is).
    pub max_bytes: usize,
    /// Wait until at least this many bytes are available...
    pub min_bytes: usize,
    /// ... or this long.
    pub max_wait: Duration,
}

/// Which offset [`ListOffset`] looks up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum OffsetSpec {
    /// The log start offset.
    Earliest,
    /// The log end offset.
    Latest,
    /// The first offset whose timestamp is at or after this (ms).
    Timestamp(i64),
}

/// Looks up an offset.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Result<Option<Offset>, BrokerError>")]
pub struct ListOffset {
    /// Which offset.
    pub spec: OffsetSpec,
}

/// The partition's current offsets.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "LogOffsets")]
pub struct GetOffsets;

/// Deletes records below an offset (Kafka's DeleteRecords).
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Result<Offset, BrokerError>")]
pub struct TrimLog {
    /// The new log start offset.
    pub before: Offset,
}

/// The topic's config changed.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct UpdateTopicConfig(pub TopicConfig);

/// Drains pending publishes, answers parked fetches, closes the log and stops the actor.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Result<(), BrokerError>")]
pub struct StopPartition;
