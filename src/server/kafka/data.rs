//! Records in and out: Produce, Fetch, ListOffsets.
//!
//! Produce: each partition's record set is split into RecordBatch v2 batches (validated: CRC,
//! lengths, magic) and enters the partition's queue **while the connection still holds the
//! request** ([`start_produce`]), so pipelined produce requests (idempotent clients send up to
//! five) are appended in the order sent. Batches are stored byte for byte as sent; the broker
//! writes only the base offset and partition leader epoch, which the CRC does not cover.
//!
//! Fetch: a partition named twice is read once. The partitions are read without waiting, in
//! request order, within one budget (`max_bytes`, capped by `[broker] fetch_max_bytes`): the
//! first partition with data returns at least one whole batch even above the limits; a later
//! one returns records only if they fit in what is left (the client fetches them next); every
//! partition answers with its offsets ([`gather`]). If that gives less than `min_bytes`, the
//! partitions are long-polled together for their offsets until one has data or
//! `max_wait_ms` passes, then read again. A connection's fetches run one at a time
//! (`super::accept_request`), so its records in memory stay within one budget.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use weir_storage::batch::{split_batches, DEFAULT_MAX_UNCOMPRESSED_BYTES};
use weir_storage::{Batch, BatchError};

use crate::broker::{Acks, BrokerError, FetchResult, Isolation, OffsetSpec, PublishAck};
use crate::protocol::kafka::messages::fetch::{
    AbortedTransaction, FetchRequest, FetchResponse, FetchableTopicResponse, PartitionData,
};
use crate::protocol::kafka::messages::list_offsets::{
    ListOffsetsPartitionResponse, ListOffsetsRequest, ListOffsetsResponse, ListOffsetsTopicResponse,
};
use crate::protocol::kafka::messages::produce::{
    PartitionProduceResponse, ProduceRequest, ProduceResponse, TopicProduceResponse,
};
use crate::protocol::kafka::RecordSet;
use crate::protocol::kafka::Response;

use super::Session;

const CORRUPT_MESSAGE: i16 = 2;
const INVALID_REQUIRED_ACKS: i16 = 21;
const INVALID_REQUEST: i16 = 42;
const UNSUPPORTED_FOR_MESSAGE_FORMAT: i16 = 43;
const UNSUPPORTED_VERSION: i16 = 35;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;

/// A partition's outcome: known at once (an error), or an append in progress.
enum Outcome {
    Done(i16),
    Appending(BoxFuture<'static, Result<(i32, PublishAck), BrokerError>>),
}

/// A produce whose batches are queued; [`PendingProduce::finish`] waits for the appends.
pub(super) struct PendingProduce {
    acks: i16,
    topics: Vec<(String, Vec<(i32, Outcome)>)>,
}

/// Validates the record sets and queues every partition's batches, in request order.
pub(super) async fn start_produce(s: &Session, r: ProduceRequest, version: i16) -> PendingProduce {
    let acks = match r.acks {
        0 => Some(Acks::None),
        1 => Some(Acks::Leader),
        -1 => Some(Acks::All),
        _ => None,
    };
    let mut topics = Vec::with_capacity(r.topic_data.len());
    for t in r.topic_data {
        let known = s.broker.partition_count(&t.name);
        let mut partitions = Vec::with_capacity(t.partition_data.len());
        for p in t.partition_data {
            let outcome = match (acks, known) {
                (None, _) => Outcome::Done(INVALID_REQUIRED_ACKS),
                // Message formats v0/v1 (Produce v0–v2) are not accepted, as in Kafka 4.
                _ if version < 3 => Outcome::Done(UNSUPPORTED_VERSION),
                (_, None) => Outcome::Done(UNKNOWN_TOPIC_OR_PARTITION),
                (Some(_), Some(n)) if p.index < 0 || p.index as u32 >= n => {
                    Outcome::Done(UNKNOWN_TOPIC_OR_PARTITION)
                }
                (Some(acks), Some(_)) => match parse_records(p.records) {
                    Err(code) => Outcome::Done(code),
                    Ok(batches) => Outcome::Appending(
                        s.broker
                            .publish_in_order(&t.name, Some(p.index), batches, acks)
                            .await,
                    ),
                },
            };
            partitions.push((p.index, outcome));
        }
        topics.push((t.name, partitions));
    }
    PendingProduce {
        acks: r.acks,
        topics,
    }
}

/// The batches of a record set, or the Kafka error code that refuses it.
fn parse_records(records: Option<Bytes>) -> Result<Vec<Batch>, i16> {
    let records = records.filter(|r| !r.is_empty()).ok_or(CORRUPT_MESSAGE)?;
    split_batches(records).map_err(|e| match e {
        BatchError::UnsupportedMagic(_) => UNSUPPORTED_FOR_MESSAGE_FORMAT,
        _ => CORRUPT_MESSAGE,
    })
}

/// How a produce is answered.
pub(super) enum ProduceOutcome {
    /// The response.
    Respond(Response),
    /// `acks=0` and everything was accepted: no response at all.
    Silent,
    /// `acks=0` and something failed: Kafka closes the connection, the only way to tell a
    /// client that expects no answer (librdkafka then refreshes its metadata).
    Close,
}

impl PendingProduce {
    /// Waits for every append.
    pub(super) async fn finish(self) -> ProduceOutcome {
        let mut responses = Vec::with_capacity(self.topics.len());
        for (name, partitions) in self.topics {
            let mut partition_responses = Vec::with_capacity(partitions.len());
            for (index, outcome) in partitions {
                let result = match outcome {
                    Outcome::Done(code) => Err(code),
                    Outcome::Appending(f) => {
                        f.await.map(|(_, ack)| ack).map_err(|e| e.kafka_code())
                    }
                };
                partition_responses.push(match result {
                    Ok(ack) => PartitionProduceResponse {
                        index,
                        error_code: 0,
                        base_offset: ack.base_offset,
                        log_start_offset: ack.log_start_offset,
                        log_append_time_ms: ack.log_append_time_ms,
                        ..PartitionProduceResponse::default()
                    },
                    Err(code) => PartitionProduceResponse {
                        index,
                        error_code: code,
                        base_offset: -1,
                        ..PartitionProduceResponse::default()
                    },
                });
            }
            responses.push(TopicProduceResponse {
                name,
                partition_responses,
                ..TopicProduceResponse::default()
            });
        }
        if self.acks == 0 {
            let failed = responses
                .iter()
                .flat_map(|t| &t.partition_responses)
                .any(|p| p.error_code != 0);
            return if failed {
                ProduceOutcome::Close
            } else {
                ProduceOutcome::Silent
            };
        }
        ProduceOutcome::Respond(Response::Produce(ProduceResponse {
            responses,
            ..ProduceResponse::default()
        }))
    }
}

/// One partition of a fetch.
struct Want {
    topic: usize,
    partition: i32,
    offset: i64,
    max_bytes: usize,
}

type Read = Result<FetchResult, BrokerError>;

/// Kafka's `isolation_level`: 1 reads committed data only, anything else everything.
fn isolation(level: i8) -> Isolation {
    if level == 1 {
        Isolation::ReadCommitted
    } else {
        Isolation::ReadUncommitted
    }
}

fn read_bytes(r: &Read) -> usize {
    r.as_ref()
        .map_or(0, |f| f.batches.iter().map(Batch::len).sum())
}

/// Whether a read's partition holds records past `offset` that the fetch may see.
fn has_data(r: &Read, offset: i64, isolation: Isolation) -> bool {
    r.as_ref().is_ok_and(|f| {
        let visible = match isolation {
            Isolation::ReadCommitted => f.last_stable_offset,
            Isolation::ReadUncommitted => f.high_watermark,
        };
        offset < visible
    })
}

/// One read of `w` without waiting: up to `max_bytes` (0: its offsets only).
async fn read_one(
    s: &Session,
    topics: &[&str],
    w: &Want,
    max_bytes: usize,
    isolation: Isolation,
) -> Read {
    s.broker
        .fetch_isolated(
            topics[w.topic],
            w.partition,
            w.offset,
            (max_bytes, 0),
            Duration::ZERO,
            isolation,
        )
        .await
}

/// Reads the wanted partitions within `budget` bytes, in request order, without waiting.
///
/// The first partition with data returns at least one whole batch (however large); after it,
/// a partition's records go out only if they fit in what is left (a batch that does not is
/// left unread, as Kafka reads only its header), and once nothing is left the rest answer with
/// their offsets only. Memory stays within the budget plus a batch: one partition is read
/// alone directly; several are first asked for their offsets all at once (no records), then
/// those with data are read one after the other, each up to what is left (the first one's
/// first batch can exceed its limit, so reading them together could not be bounded).
async fn gather(
    s: &Session,
    topics: &[&str],
    wants: &[Want],
    budget: usize,
    isolation: Isolation,
) -> Vec<Read> {
    if let [w] = wants {
        return vec![read_one(s, topics, w, w.max_bytes.min(budget).max(1), isolation).await];
    }
    let mut reads: Vec<Read> =
        futures::future::join_all(wants.iter().map(|w| read_one(s, topics, w, 0, isolation))).await;
    let (mut left, mut sent_any) = (budget, false);
    for (w, slot) in wants.iter().zip(reads.iter_mut()) {
        if sent_any && left == 0 {
            break;
        }
        if !has_data(slot, w.offset, isolation) {
            continue;
        }
        let limit = w.max_bytes.min(left);
        let read = if sent_any {
            let (topic, p) = (topics[w.topic], w.partition);
            s.broker
                .fetch_within(topic, p, w.offset, limit, isolation)
                .await
        } else {
            read_one(s, topics, w, limit.max(1), isolation).await
        };
        let size = read_bytes(&read);
        if size > 0 {
            sent_any = true;
            left = left.saturating_sub(size);
        }
        *slot = read;
    }
    reads
}

/// Reads, long-polling when there is less than `min_bytes`.
pub(super) async fn fetch(s: &Session, r: FetchRequest) -> FetchResponse {
    // One entry per distinct topic and partition, in request order (Kafka keeps a request's
    // partitions in a map: a repeated one is read and answered once).
    let mut responses: Vec<FetchableTopicResponse> = Vec::new();
    let mut wants: Vec<Want> = Vec::new();
    let mut topic_index: HashMap<&str, usize> = HashMap::new();
    let mut seen: HashSet<(usize, i32)> = HashSet::new();
    for t in &r.topics {
        let index = *topic_index.entry(t.topic.as_str()).or_insert_with(|| {
            responses.push(FetchableTopicResponse {
                topic: t.topic.clone(),
                topic_id: t.topic_id,
                partitions: Vec::new(),
            });
            responses.len() - 1
        });
        for p in &t.partitions {
            if seen.insert((index, p.partition)) {
                wants.push(Want {
                    topic: index,
                    partition: p.partition,
                    offset: p.fetch_offset,
                    max_bytes: p.partition_max_bytes.max(1) as usize,
                });
            }
        }
    }
    let topics: Vec<&str> = responses.iter().map(|t| t.topic.as_str()).collect();
    let budget = (r.max_bytes.max(0) as usize).min(s.broker.config().broker.fetch_max_bytes);
    let min_bytes = r.min_bytes.max(0) as usize;
    let max_wait = Duration::from_millis(r.max_wait_ms.max(0) as u64);
    let isolation = isolation(r.isolation_level);
    let mut reads = gather(s, &topics, &wants, budget, isolation).await;
    let have: usize = reads.iter().map(read_bytes).sum();
    let failed = reads.iter().any(Result::is_err);
    if have < min_bytes.max(1) && !max_wait.is_zero() && !failed && !wants.is_empty() {
        // Long-poll every partition for its offsets (no records); the first with data ends
        // the wait for all.
        drop(reads);
        let mut polls: FuturesUnordered<_> = wants
            .iter()
            .map(|w| async {
                let r = s
                    .broker
                    .fetch_isolated(
                        topics[w.topic],
                        w.partition,
                        w.offset,
                        (0, 1),
                        max_wait,
                        isolation,
                    )
                    .await;
                r.is_err() || has_data(&r, w.offset, isolation)
            })
            .collect();
        while let Some(ready) = polls.next().await {
            if ready {
                break;
            }
        }
        drop(polls);
        reads = gather(s, &topics, &wants, budget, isolation).await;
    }
    for (w, read) in wants.iter().zip(reads) {
        let data = match read {
            Ok(f) => {
                let aborted_transactions = (isolation == Isolation::ReadCommitted).then(|| {
                    f.aborted
                        .iter()
                        .map(|a| AbortedTransaction {
                            producer_id: a.producer_id,
                            first_offset: a.first_offset,
                        })
                        .collect()
                });
                // The stored batches go out as they are, each its own chunk of the answer.
                let records =
                    RecordSet::new(f.batches.into_iter().map(Batch::into_bytes).collect());
                PartitionData {
                    partition_index: w.partition,
                    error_code: 0,
                    high_watermark: f.high_watermark,
                    last_stable_offset: f.last_stable_offset,
                    log_start_offset: f.log_start_offset,
                    aborted_transactions,
                    preferred_read_replica: -1,
                    records: Some(records),
                    ..PartitionData::default()
                }
            }
            Err(e) => PartitionData {
                partition_index: w.partition,
                error_code: e.kafka_code(),
                high_watermark: -1,
                last_stable_offset: -1,
                log_start_offset: -1,
                records: Some(RecordSet::default()),
                ..PartitionData::default()
            },
        };
        if let Some(t) = responses.get_mut(w.topic) {
            t.partitions.push(data);
        }
    }
    FetchResponse {
        // Fetch sessions: answering session id 0 opts out (every fetch is a full fetch).
        session_id: 0,
        responses,
        ..FetchResponse::default()
    }
}

/// The record set of several batches: the batch itself when there is one (no copy).
/// Earliest (-2), latest (-1), max timestamp (-3), or the first offset at or after a time.
pub(super) async fn list_offsets(s: &Session, r: ListOffsetsRequest) -> ListOffsetsResponse {
    // A partition named more than once is answered INVALID_REQUEST each time, as Kafka does:
    // each lookup may read the log, and one request must not repeat it at will.
    let repeated = super::repeated(r.topics.iter().flat_map(|t| {
        t.partitions
            .iter()
            .map(|p| (t.name.clone(), p.partition_index))
    }));
    let mut topics = Vec::with_capacity(r.topics.len());
    for t in r.topics {
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in t.partitions {
            if !repeated.is_empty() && repeated.contains(&(t.name.clone(), p.partition_index)) {
                partitions.push(ListOffsetsPartitionResponse {
                    partition_index: p.partition_index,
                    error_code: INVALID_REQUEST,
                    ..ListOffsetsPartitionResponse::default()
                });
                continue;
            }
            let found = lookup(
                s,
                &t.name,
                p.partition_index,
                p.timestamp,
                r.isolation_level,
            )
            .await;
            partitions.push(match found {
                Ok((offset, timestamp)) => ListOffsetsPartitionResponse {
                    partition_index: p.partition_index,
                    error_code: 0,
                    timestamp,
                    offset,
                    leader_epoch: -1,
                },
                Err(e) => ListOffsetsPartitionResponse {
                    partition_index: p.partition_index,
                    error_code: e.kafka_code(),
                    ..ListOffsetsPartitionResponse::default()
                },
            });
        }
        topics.push(ListOffsetsTopicResponse {
            name: t.name,
            partitions,
        });
    }
    ListOffsetsResponse {
        topics,
        ..ListOffsetsResponse::default()
    }
}

/// `(offset, timestamp)` for a ListOffsets query; `(-1, -1)` when no record matches a time.
async fn lookup(
    s: &Session,
    topic: &str,
    partition: i32,
    ts: i64,
    isolation_level: i8,
) -> Result<(i64, i64), BrokerError> {
    let isolation = isolation(isolation_level);
    match ts {
        -2 => Ok((
            s.broker
                .list_offset(topic, partition, OffsetSpec::Earliest)
                .await?
                .unwrap_or(0),
            -1,
        )),
        -1 => Ok((
            s.broker
                .list_offset_isolated(topic, partition, OffsetSpec::Latest, isolation)
                .await?
                .unwrap_or(0),
            -1,
        )),
        -3 => max_timestamp(s, topic, partition, isolation).await,
        ts if ts < 0 => Err(BrokerError::InvalidRequest(format!(
            "timestamp {ts} is not a time nor -1, -2, -3"
        ))),
        ts => {
            let Some(offset) = s
                .broker
                .list_offset(topic, partition, OffsetSpec::Timestamp(ts))
                .await?
            else {
                return Ok((-1, -1));
            };
            let timestamp = record_timestamp(s, topic, partition, offset)
                .await?
                .unwrap_or(ts);
            Ok((offset, timestamp))
        }
    }
}

/// The timestamp of the record at `offset`.
async fn record_timestamp(
    s: &Session,
    topic: &str,
    partition: i32,
    offset: i64,
) -> Result<Option<i64>, BrokerError> {
    let read = s
        .broker
        .fetch_isolated(
            topic,
            partition,
            offset,
            (1, 0),
            Duration::ZERO,
            Isolation::ReadUncommitted,
        )
        .await?;
    // One record at a time: a stored batch's records may decode to far more than its size.
    let mut found = None;
    for b in read.batches {
        b.for_each_record(DEFAULT_MAX_UNCOMPRESSED_BYTES, |r| {
            if r.offset == offset {
                found = Some(r.record.timestamp_ms);
            }
            found.is_none()
        })?;
        if found.is_some() {
            break;
        }
    }
    Ok(found)
}

/// The offset and timestamp of the first record with the largest timestamp (below the last
/// stable offset for `read_committed`), `(-1, -1)` when there is none. The segment backend
/// finds it from its segments' largest timestamps without reading the log.
async fn max_timestamp(
    s: &Session,
    topic: &str,
    partition: i32,
    isolation: Isolation,
) -> Result<(i64, i64), BrokerError> {
    let Some(offset) = s
        .broker
        .list_offset_isolated(topic, partition, OffsetSpec::MaxTimestamp, isolation)
        .await?
    else {
        return Ok((-1, -1));
    };
    let timestamp = record_timestamp(s, topic, partition, offset)
        .await?
        .unwrap_or(-1);
    Ok((offset, timestamp))
}
