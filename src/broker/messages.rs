//! Every message the broker's actors exchange. They carry owned data; handlers stay short.

use std::time::Duration;

use actix::prelude::*;
use weir_storage::{Batch, LogOffsets, Offset};

use super::error::BrokerError;
use super::types::{Acks, ActiveProducer, FetchResult, Isolation, OffsetSpec, PublishAck};
use crate::config::TopicConfig;

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

/// Reads from one partition, waiting up to `max_wait` for `min_bytes`.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<FetchResult, BrokerError>")]
pub struct Fetch {
    /// First offset wanted.
    pub from: Offset,
    /// How much to read.
    pub limit: ReadLimit,
    /// Wait until at least this many bytes are available...
    pub min_bytes: usize,
    /// ... or this long.
    pub max_wait: Duration,
    /// Up to the high watermark, or only decided data.
    pub isolation: Isolation,
}

/// How many bytes one fetch reads from a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadLimit {
    /// The limit, capped by the broker's `fetch_max_bytes`; 0 reads no batch at all (the
    /// partition's offsets only).
    pub max_bytes: usize,
    /// Whether a first batch larger than `max_bytes` is returned whole, so that a consumer
    /// always makes progress (Kafka's `minOneMessage`), or left unread: the partitions of a
    /// Kafka fetch after the first that returned records take only what fits.
    pub min_one_batch: bool,
}

impl ReadLimit {
    /// Up to `max_bytes`, but at least one batch.
    #[must_use]
    pub fn at_least_one_batch(max_bytes: usize) -> Self {
        Self {
            max_bytes,
            min_one_batch: true,
        }
    }

    /// Nothing past `max_bytes`.
    #[must_use]
    pub fn within(max_bytes: usize) -> Self {
        Self {
            max_bytes,
            min_one_batch: false,
        }
    }
}

/// Looks up an offset.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Result<Option<Offset>, BrokerError>")]
pub struct ListOffset {
    /// Which offset.
    pub spec: OffsetSpec,
    /// [`OffsetSpec::Latest`] is the last stable offset under `ReadCommitted`.
    pub isolation: Isolation,
}

/// Ends a producer's transaction in one partition: appends a commit or abort marker (a
/// control batch) after everything queued before it. Answers the marker's offset.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Result<Offset, BrokerError>")]
pub struct WriteTxnMarker {
    /// The producer.
    pub producer_id: i64,
    /// The epoch the marker carries (the coordinator's current one for the producer).
    pub epoch: i16,
    /// Commit, or abort.
    pub commit: bool,
}

/// The producers the partition remembers (Kafka's DescribeProducers), once its producer state
/// is loaded.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Result<Vec<ActiveProducer>, BrokerError>")]
pub struct DescribeProducers;

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
