//! [`Producer`]: records in, batches out, in the way Kafka's producers batch.
//!
//! `send` puts the record into its partition's open batch and returns a [`DeliveryFuture`] that
//! resolves to the record's offset once the broker acknowledged it. It waits only when the
//! producer already holds `buffer_bytes` of unacknowledged records (Kafka's `buffer.memory`):
//! memory stays bounded however fast the application sends.
//! A batch is sent when it reaches `batch_bytes` or when `linger` has passed since its first
//! record. Per partition, up to `max_in_flight` publishes (default 5, Kafka's
//! `max.in.flight.requests.per.connection`) are in flight, each carrying the batches ready when
//! it left (at most ~1 MiB); order per partition is the order of `send` calls.
//!
//! With more than one publish in flight the producer is idempotent, as Kafka's is by default:
//! each partition's batches carry a producer id (one `InitProducerId` per partition, on first
//! use) and consecutive sequence numbers. A publish the broker refused without writing it (a
//! full partition queue: `Busy`) makes the broker refuse everything sent behind it too (a
//! sequence gap); the producer then sends them all again, in order, under a fresh producer id,
//! so a retry can neither reorder nor duplicate. Outcomes the producer cannot know (the
//! connection broke) are reported, never retried. `acks = none` and `max_in_flight = 1` send
//! plain batches, one publish at a time.
//!
//! Partitions: an explicit partition wins; a keyed record goes to `murmur2(key) % partitions`
//! (Kafka's rule); keyless records stick to one partition until a batch of it is sent.
//! A topic's partition count is looked up (and the topic auto-created where the broker allows)
//! on first use; records sent meanwhile wait in order.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::future::{BoxFuture, FutureExt, Shared};
use tokio::sync::{oneshot, Notify, OwnedSemaphorePermit, Semaphore};
use weir_storage::{Batch, BatchBuilder, Compression, Header, Offset, Record};

use super::Transport;
use crate::broker::partitioner::partition_for_key;
use crate::broker::{Acks, BrokerError, PublishAck};

/// Producer settings.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// When the broker acknowledges.
    pub acks: Acks,
    /// How long a batch waits for more records (Kafka's `linger.ms`).
    pub linger: Duration,
    /// Send a batch once it holds about this many bytes (Kafka's `batch.size`).
    pub batch_bytes: usize,
    /// Batch compression.
    pub compression: Compression,
    /// Most bytes of records sent but not yet acknowledged; `send` waits beyond it.
    pub buffer_bytes: usize,
    /// Most publishes in flight per partition (Kafka's `max.in.flight.requests.per.connection`).
    /// Above 1 the producer is idempotent: its batches carry a producer id and sequence
    /// numbers, so a publish refused while others were in flight behind it (a full partition
    /// queue) is resent without reordering or duplicating them. `Acks::None` always uses 1.
    pub max_in_flight: usize,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            acks: Acks::All,
            linger: Duration::from_millis(5),
            batch_bytes: 1024 * 1024,
            compression: Compression::None,
            buffer_bytes: 32 * 1024 * 1024,
            max_in_flight: 5,
        }
    }
}

/// A record to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerRecord {
    /// The topic.
    pub topic: String,
    /// A fixed partition, or `None` to let the key (or the sticky partitioner) decide.
    pub partition: Option<i32>,
    /// The key.
    pub key: Option<Bytes>,
    /// The value (`None` is a tombstone).
    pub value: Option<Bytes>,
    /// Headers, in order.
    pub headers: Vec<Header>,
    /// The timestamp (ms); now when `None`.
    pub timestamp_ms: Option<i64>,
}

impl ProducerRecord {
    /// A record with a value for `topic`.
    pub fn new(topic: impl Into<String>, value: impl Into<Bytes>) -> Self {
        ProducerRecord {
            topic: topic.into(),
            partition: None,
            key: None,
            value: Some(value.into()),
            headers: Vec::new(),
            timestamp_ms: None,
        }
    }

    /// Sets the key.
    #[must_use]
    pub fn key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Fixes the partition.
    #[must_use]
    pub fn partition(mut self, partition: i32) -> Self {
        self.partition = Some(partition);
        self
    }

    /// Adds a header.
    #[must_use]
    pub fn header(mut self, key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.headers.push(Header::new(key, value));
        self
    }

    /// Sets the timestamp.
    #[must_use]
    pub fn timestamp(mut self, timestamp_ms: i64) -> Self {
        self.timestamp_ms = Some(timestamp_ms);
        self
    }
}

/// Where a record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordMetadata {
    /// The partition.
    pub partition: i32,
    /// The offset (-1 under `Acks::None`).
    pub offset: Offset,
    /// The record's timestamp.
    pub timestamp_ms: i64,
}

/// What a sent batch got: its partition and base offset.
#[derive(Debug, Clone, Copy)]
struct BatchAck {
    partition: i32,
    base_offset: Offset,
}

/// One acknowledgement per batch, shared by its records' futures (an `Arc` clone per record
/// instead of a channel per record).
type SharedAck = Shared<BoxFuture<'static, Result<BatchAck, BrokerError>>>;

/// A record's place: its batch's acknowledgement, its index in the batch, its timestamp.
type Slot = (SharedAck, i64, i64);

/// Resolves when the broker acknowledged the record.
pub struct DeliveryFuture {
    state: Delivery,
}

enum Delivery {
    /// In a batch.
    Queued(Slot),
    /// Waiting for its topic's partition count.
    Resolving(oneshot::Receiver<Result<Slot, BrokerError>>),
    /// Failed before it was queued.
    Failed(Option<BrokerError>),
}

impl std::fmt::Debug for DeliveryFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeliveryFuture").finish_non_exhaustive()
    }
}

impl Future for DeliveryFuture {
    type Output = Result<RecordMetadata, BrokerError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            match &mut self.state {
                Delivery::Failed(e) => {
                    return Poll::Ready(Err(e.take().unwrap_or(BrokerError::ShuttingDown)))
                }
                Delivery::Resolving(rx) => match Pin::new(rx).poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(Ok(slot))) => self.state = Delivery::Queued(slot),
                    Poll::Ready(Ok(Err(e))) => self.state = Delivery::Failed(Some(e)),
                    Poll::Ready(Err(_)) => self.state = Delivery::Failed(None),
                },
                Delivery::Queued((ack, index, ts)) => {
                    let (index, ts) = (*index, *ts);
                    return Pin::new(ack).poll(cx).map(|r| {
                        r.map(|a| RecordMetadata {
                            partition: a.partition,
                            offset: if a.base_offset < 0 {
                                -1
                            } else {
                                a.base_offset + index
                            },
                            timestamp_ms: ts,
                        })
                    });
                }
            }
        }
    }
}

struct Building {
    builder: BatchBuilder,
    epoch: u64,
    /// The buffer space the batch's records hold, released when it is acknowledged.
    permit: Option<OwnedSemaphorePermit>,
    done: oneshot::Sender<Result<BatchAck, BrokerError>>,
    ack: SharedAck,
}

impl Building {
    fn new(compression: Compression, epoch: u64) -> Self {
        let (done, rx) = oneshot::channel::<Result<BatchAck, BrokerError>>();
        let ack = rx
            .map(|r| r.unwrap_or(Err(BrokerError::ShuttingDown)))
            .boxed()
            .shared();
        Building {
            builder: BatchBuilder::new(compression),
            epoch,
            permit: None,
            done,
            ack,
        }
    }
}

#[derive(Default)]
struct PartitionQueue {
    building: Option<Building>,
    ready: VecDeque<Building>,
    /// A sender runs for this partition.
    in_flight: bool,
    /// Tells the running sender that batches became ready: it sends them while earlier
    /// publishes are still in flight, up to `max_in_flight`.
    wake: Arc<Notify>,
    /// The producer id and epoch of this partition's idempotent publishes (taken on first use,
    /// replaced after a failure breaks the sequence), and the next sequence number.
    identity: Option<(i64, i16)>,
    next_sequence: i32,
}

/// A batch's record count, where its acknowledgement goes, and the buffer space it holds.
type PendingAck = (
    i64,
    oneshot::Sender<Result<BatchAck, BrokerError>>,
    Option<OwnedSemaphorePermit>,
);

/// One publish in flight: its batches' builders (to send them again), what to acknowledge,
/// and the outcome once the broker answers.
struct Flight {
    builders: Vec<BatchBuilder>,
    acks: Vec<PendingAck>,
    outcome: Option<super::transport::PublishOutcome>,
}

impl Flight {
    /// Acknowledges every batch with `result` (the batches of one publish were appended
    /// together, with consecutive offsets).
    fn finish(self, result: Result<(i32, PublishAck), BrokerError>) {
        let mut next = result.as_ref().map(|(_, a)| a.base_offset);
        for (count, done, _permit) in self.acks {
            let _ = done.send(match (&result, &next) {
                (Ok((partition, _)), Ok(base)) => Ok(BatchAck {
                    partition: *partition,
                    base_offset: *base,
                }),
                (Err(e), _) => Err(e.clone()),
                (_, Err(e)) => Err((*e).clone()),
            });
            if let Ok(base) = &mut next {
                if *base >= 0 {
                    *base += count;
                }
            }
        }
    }
}

/// The most bytes of batches one publish carries (one batch may be larger).
const MAX_REQUEST_BYTES: usize = 1024 * 1024;

/// Errors after which a publish was not written and may be sent again as it is.
fn resendable(e: &BrokerError) -> bool {
    matches!(
        e,
        BrokerError::Busy { .. } | BrokerError::OutOfOrderSequence { .. }
    )
}

/// A record waiting for its topic's partition count, with where to report its slot.
type Waiting = (
    ProducerRecord,
    oneshot::Sender<Result<Slot, BrokerError>>,
    OwnedSemaphorePermit,
);

enum TopicState {
    Resolving(Vec<Waiting>),
    Ready {
        queues: Vec<PartitionQueue>,
        sticky: usize,
    },
}

struct Inner {
    transport: Arc<dyn Transport>,
    config: ProducerConfig,
    topics: Mutex<HashMap<String, TopicState>>,
    epochs: std::sync::atomic::AtomicU64,
    drained: Notify,
    buffer: Arc<Semaphore>,
}

/// Sends records to topics; cheap to clone (clones share batches).
#[derive(Clone)]
pub struct Producer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

fn now_ms() -> i64 {
    crate::broker::now_ms()
}

/// The buffer space a record holds until acknowledged (its bytes plus record overhead).
fn record_size(record: &ProducerRecord) -> usize {
    24 + record.key.as_ref().map_or(0, Bytes::len)
        + record.value.as_ref().map_or(0, Bytes::len)
        + record
            .headers
            .iter()
            .map(|h| h.key.len() + h.value.as_ref().map_or(0, Bytes::len))
            .sum::<usize>()
}

impl Producer {
    /// A producer over `transport` (a [`crate::BrokerHandle`] for an embedded broker). Must be
    /// used inside a tokio runtime: batches are sent by tasks it spawns.
    pub fn new(transport: impl Transport, config: ProducerConfig) -> Self {
        Self::with_transport(Arc::new(transport), config)
    }

    /// A producer over a transport shared with other clients.
    pub fn with_transport(transport: Arc<dyn Transport>, config: ProducerConfig) -> Self {
        Producer {
            inner: Arc::new(Inner {
                transport,
                topics: Mutex::new(HashMap::new()),
                epochs: std::sync::atomic::AtomicU64::new(0),
                drained: Notify::new(),
                buffer: Arc::new(Semaphore::new(config.buffer_bytes.max(1))),
                config,
            }),
        }
    }

    /// Queues a record, waiting first while `buffer_bytes` are unacknowledged; the returned
    /// future resolves once the broker acknowledged the record. Records of one partition are
    /// written in the order of `send` calls.
    pub async fn send(&self, mut record: ProducerRecord) -> DeliveryFuture {
        let want = record_size(&record).min(self.inner.config.buffer_bytes.max(1)) as u32;
        let Ok(permit) = self.inner.buffer.clone().acquire_many_owned(want).await else {
            return DeliveryFuture {
                state: Delivery::Failed(Some(BrokerError::ShuttingDown)),
            };
        };
        let inner = &self.inner;
        let mut topics = inner.topics.lock().unwrap_or_else(|e| e.into_inner());
        let state = match topics.get_mut(record.topic.as_str()) {
            Some(TopicState::Ready { queues, sticky }) => {
                let topic = std::mem::take(&mut record.topic);
                match Inner::enqueue(inner, &topic, queues, sticky, record, permit) {
                    Ok(slot) => Delivery::Queued(slot),
                    Err(e) => Delivery::Failed(Some(e)),
                }
            }
            Some(TopicState::Resolving(waiting)) => {
                let (tx, rx) = oneshot::channel();
                waiting.push((record, tx, permit));
                Delivery::Resolving(rx)
            }
            None => {
                let (tx, rx) = oneshot::channel();
                let topic = record.topic.clone();
                topics.insert(
                    topic.clone(),
                    TopicState::Resolving(vec![(record, tx, permit)]),
                );
                let inner = inner.clone();
                tokio::spawn(async move { Inner::resolve(inner, topic).await });
                Delivery::Resolving(rx)
            }
        };
        DeliveryFuture { state }
    }

    /// Queues several records in order (see [`Producer::send`]); one future per record.
    pub async fn send_many(
        &self,
        records: impl IntoIterator<Item = ProducerRecord>,
    ) -> Vec<DeliveryFuture> {
        let mut out = Vec::new();
        for r in records {
            out.push(self.send(r).await);
        }
        out
    }

    /// Queues `records` as one batch of their own for `topic`'s `partition`, after everything
    /// already sent to that partition (its open batch is closed first), waiting first while
    /// `buffer_bytes` are unacknowledged. One future for the whole batch: it resolves to the
    /// partition and the offset of the first record once the broker acknowledged all of them.
    /// Records without a timestamp get the time of this call; the records' own `topic` and
    /// `partition` fields are not looked at. The cheap path for applications
    /// that already hold their records in batches (and for `weir bench`): no per-record future,
    /// no linger.
    pub async fn send_batch(
        &self,
        topic: &str,
        partition: i32,
        records: Vec<ProducerRecord>,
    ) -> DeliveryFuture {
        let failed = |e| DeliveryFuture {
            state: Delivery::Failed(Some(e)),
        };
        if records.is_empty() {
            return failed(BrokerError::InvalidRequest("an empty batch".into()));
        }
        // The topic's partition count comes first: records of an unresolved topic would
        // otherwise wait in per-record order.
        loop {
            let resolved = {
                let topics = self.inner.topics.lock().unwrap_or_else(|e| e.into_inner());
                matches!(topics.get(topic), Some(TopicState::Ready { .. }))
            };
            if resolved {
                break;
            }
            match self.inner.transport.partitions(topic, true).await {
                Ok(n) => {
                    let mut topics = self.inner.topics.lock().unwrap_or_else(|e| e.into_inner());
                    if !topics.contains_key(topic) {
                        let queues = (0..n).map(|_| PartitionQueue::default()).collect();
                        topics.insert(
                            topic.to_string(),
                            TopicState::Ready {
                                queues,
                                sticky: (now_ms() as usize) % (n.max(1) as usize),
                            },
                        );
                    }
                }
                Err(e) => return failed(e),
            }
            // Another sender may be resolving it: wait for that, then look again.
            self.flush_topic_resolution(topic).await;
        }
        let size: usize = records.iter().map(record_size).sum();
        let want = size.min(self.inner.config.buffer_bytes.max(1)) as u32;
        let Ok(permit) = self.inner.buffer.clone().acquire_many_owned(want).await else {
            return failed(BrokerError::ShuttingDown);
        };
        let inner = &self.inner;
        let mut topics = inner.topics.lock().unwrap_or_else(|e| e.into_inner());
        let Some(TopicState::Ready { queues, .. }) = topics.get_mut(topic) else {
            // Deleted from under us by a failed resolution: report it like `send` would.
            return failed(BrokerError::UnknownTopic(topic.to_string()));
        };
        let Some(q) = usize::try_from(partition)
            .ok()
            .and_then(|i| queues.get_mut(i))
        else {
            return failed(BrokerError::UnknownPartition {
                topic: topic.to_string(),
                partition,
            });
        };
        q.ready.extend(q.building.take());
        let epoch = inner
            .epochs
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut building = Building::new(inner.config.compression, epoch);
        building.permit = Some(permit);
        let now = now_ms();
        for r in records {
            building.builder.push(Record {
                timestamp_ms: r.timestamp_ms.unwrap_or(now),
                key: r.key,
                value: r.value,
                headers: r.headers,
            });
        }
        let slot = (building.ack.clone(), 0, now);
        q.ready.push_back(building);
        Inner::kick(inner, topic, partition as usize, q);
        DeliveryFuture {
            state: Delivery::Queued(slot),
        }
    }

    /// Waits while `topic` is being resolved by a `send` (its records queue meanwhile).
    async fn flush_topic_resolution(&self, topic: &str) {
        loop {
            let notified = self.inner.drained.notified();
            {
                let topics = self.inner.topics.lock().unwrap_or_else(|e| e.into_inner());
                if !matches!(topics.get(topic), Some(TopicState::Resolving(_))) {
                    return;
                }
            }
            notified.await;
        }
    }

    /// Sends every open batch now and waits until everything sent so far is acknowledged.
    pub async fn flush(&self) {
        loop {
            let notified = self.inner.drained.notified();
            let idle = {
                let mut topics = self.inner.topics.lock().unwrap_or_else(|e| e.into_inner());
                let mut idle = true;
                for (topic, state) in topics.iter_mut() {
                    match state {
                        TopicState::Resolving(_) => idle = false,
                        TopicState::Ready { queues, .. } => {
                            for (p, q) in queues.iter_mut().enumerate() {
                                if let Some(b) = q.building.take() {
                                    q.ready.push_back(b);
                                }
                                if q.in_flight || !q.ready.is_empty() {
                                    idle = false;
                                }
                                Inner::kick(&self.inner, topic, p, q);
                            }
                        }
                    }
                }
                idle
            };
            if idle {
                return;
            }
            notified.await;
        }
    }
}

impl Inner {
    async fn resolve(inner: Arc<Inner>, topic: String) {
        let result = inner.transport.partitions(&topic, true).await;
        let mut topics = inner.topics.lock().unwrap_or_else(|e| e.into_inner());
        let Some(TopicState::Resolving(waiting)) = topics.remove(&topic) else {
            return;
        };
        match result {
            Ok(n) => {
                let mut queues: Vec<PartitionQueue> =
                    (0..n).map(|_| PartitionQueue::default()).collect();
                let mut sticky = (now_ms() as usize) % (n.max(1) as usize);
                for (record, reply, permit) in waiting {
                    let slot =
                        Inner::enqueue(&inner, &topic, &mut queues, &mut sticky, record, permit);
                    let _ = reply.send(slot);
                }
                topics.insert(topic, TopicState::Ready { queues, sticky });
                drop(topics);
                // `send_batch` callers wait for the resolution on this.
                inner.drained.notify_waiters();
            }
            Err(e) => {
                for (_, reply, _) in waiting {
                    let _ = reply.send(Err(e.clone()));
                }
                inner.drained.notify_waiters();
            }
        }
    }

    fn enqueue(
        inner: &Arc<Inner>,
        topic: &str,
        queues: &mut [PartitionQueue],
        sticky: &mut usize,
        record: ProducerRecord,
        permit: OwnedSemaphorePermit,
    ) -> Result<Slot, BrokerError> {
        let n = queues.len();
        let keyless = record.partition.is_none() && record.key.is_none();
        let p = match (record.partition, &record.key) {
            (Some(p), _) => p,
            (None, Some(key)) => partition_for_key(key, n as u32),
            (None, None) => (*sticky % n.max(1)) as i32,
        };
        let Some(q) = usize::try_from(p).ok().and_then(|i| queues.get_mut(i)) else {
            return Err(BrokerError::UnknownPartition {
                topic: topic.to_string(),
                partition: p,
            });
        };
        let ts = record.timestamp_ms.unwrap_or_else(now_ms);
        let building = q.building.get_or_insert_with(|| {
            let epoch = inner
                .epochs
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Building::new(inner.config.compression, epoch)
        });
        match &mut building.permit {
            Some(held) => held.merge(permit),
            None => building.permit = Some(permit),
        }
        let index = building.builder.len() as i64;
        building.builder.push(Record {
            timestamp_ms: ts,
            key: record.key,
            value: record.value,
            headers: record.headers,
        });
        let slot = (building.ack.clone(), index, ts);
        let epoch = building.epoch;
        if building.builder.size_estimate() >= inner.config.batch_bytes {
            q.ready.extend(q.building.take());
            if keyless {
                *sticky += 1;
            }
            Inner::kick(inner, topic, p as usize, q);
        } else if index == 0 {
            let inner = inner.clone();
            let topic = topic.to_string();
            let linger = inner.config.linger;
            tokio::spawn(async move {
                tokio::time::sleep(linger).await;
                let mut topics = inner.topics.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(TopicState::Ready { queues, sticky }) = topics.get_mut(&topic) {
                    if let Some(q) = queues.get_mut(p as usize) {
                        if q.building.as_ref().is_some_and(|b| b.epoch == epoch) {
                            q.ready.extend(q.building.take());
                            if keyless {
                                *sticky += 1;
                            }
                            Inner::kick(&inner, &topic, p as usize, q);
                        }
                    }
                }
            });
        }
        Ok(slot)
    }

    /// Starts the sender of a partition that has ready batches, or wakes the running one.
    fn kick(inner: &Arc<Inner>, topic: &str, p: usize, q: &mut PartitionQueue) {
        if q.ready.is_empty() {
            return;
        }
        if q.in_flight {
            q.wake.notify_one();
            return;
        }
        q.in_flight = true;
        let inner = inner.clone();
        let topic = topic.to_string();
        tokio::spawn(async move { Inner::send_loop(inner, topic, p).await });
    }

    /// The partition's sender wake-up.
    fn wake_of(inner: &Inner, topic: &str, p: usize) -> Option<Arc<Notify>> {
        let topics = inner.topics.lock().unwrap_or_else(|e| e.into_inner());
        match topics.get(topic) {
            Some(TopicState::Ready { queues, .. }) => queues.get(p).map(|q| q.wake.clone()),
            _ => None,
        }
    }

    /// Takes the partition's ready batches, or `None` when there are none (and, with nothing
    /// in flight either, ends the sender).
    fn take_ready(inner: &Inner, topic: &str, p: usize, idle: bool) -> Option<Vec<Building>> {
        let mut topics = inner.topics.lock().unwrap_or_else(|e| e.into_inner());
        let Some(TopicState::Ready { queues, .. }) = topics.get_mut(topic) else {
            return None;
        };
        let q = queues.get_mut(p)?;
        if q.ready.is_empty() {
            if idle {
                q.in_flight = false;
                drop(topics);
                inner.drained.notify_waiters();
            }
            return None;
        }
        // One publish carries at most about `MAX_REQUEST_BYTES` (at least one batch), as
        // Kafka's `max.request.size`: a publish larger than the partition's queue would be
        // refused however often it is sent.
        let mut bytes = 0;
        let mut take = 0;
        for b in &q.ready {
            if take > 0 && bytes + b.builder.size_estimate() > MAX_REQUEST_BYTES {
                break;
            }
            bytes += b.builder.size_estimate();
            take += 1;
        }
        Some(q.ready.drain(..take).collect())
    }

    /// The partition's producer id, epoch and next sequence for `records` more records;
    /// a fresh producer id first when there is none (or `renew`).
    async fn sequence(
        inner: &Inner,
        topic: &str,
        p: usize,
        records: i32,
        renew: bool,
    ) -> Result<(i64, i16, i32), BrokerError> {
        let current = {
            let topics = inner.topics.lock().unwrap_or_else(|e| e.into_inner());
            match topics.get(topic) {
                Some(TopicState::Ready { queues, .. }) => queues.get(p).and_then(|q| q.identity),
                _ => None,
            }
        };
        let fresh = match (current, renew) {
            (Some(_), false) => None,
            _ => Some(inner.transport.init_producer_id(-1, -1).await?),
        };
        let mut topics = inner.topics.lock().unwrap_or_else(|e| e.into_inner());
        let Some(TopicState::Ready { queues, .. }) = topics.get_mut(topic) else {
            return Err(BrokerError::UnknownTopic(topic.to_string()));
        };
        let q = queues
            .get_mut(p)
            .ok_or_else(|| BrokerError::UnknownPartition {
                topic: topic.to_string(),
                partition: p as i32,
            })?;
        if let Some(identity) = fresh {
            q.identity = Some(identity);
            q.next_sequence = 0;
        }
        let (id, epoch) = q.identity.unwrap_or((-1, -1));
        let first = q.next_sequence;
        // Kafka's sequences wrap from i32::MAX to 0.
        q.next_sequence =
            ((i64::from(first) + i64::from(records)) % (i64::from(i32::MAX) + 1)) as i32;
        Ok((id, epoch, first))
    }

    /// Encodes a publish's batches, idempotent ones with consecutive sequence numbers.
    async fn encode(
        inner: &Inner,
        topic: &str,
        p: usize,
        builders: &mut [BatchBuilder],
        idempotent: bool,
        renew: bool,
    ) -> Result<Vec<Batch>, BrokerError> {
        let mut batches = Vec::with_capacity(builders.len());
        let mut renew = renew;
        for b in builders.iter_mut() {
            if idempotent {
                let (id, epoch, seq) =
                    Inner::sequence(inner, topic, p, b.len() as i32, renew).await?;
                renew = false;
                *b = std::mem::replace(b, BatchBuilder::new(inner.config.compression))
                    .producer(id, epoch, seq);
            }
            batches.push(b.build(0)?);
        }
        Ok(batches)
    }

    /// A flight from ready batches (batches that fail to encode are answered at once).
    fn flight(buildings: Vec<Building>) -> Flight {
        let mut flight = Flight {
            builders: Vec::with_capacity(buildings.len()),
            acks: Vec::with_capacity(buildings.len()),
            outcome: None,
        };
        for b in buildings {
            flight.acks.push((b.builder.len() as i64, b.done, b.permit));
            flight.builders.push(b.builder);
        }
        flight
    }

    /// Sends a partition's batches: up to `max_in_flight` publishes at once (idempotent), in
    /// order; a publish refused as resendable is sent again, with everything sent behind it,
    /// under a fresh producer id so the sequence numbers start clean.
    async fn send_loop(inner: Arc<Inner>, topic: String, p: usize) {
        let idempotent = inner.config.acks != Acks::None && inner.config.max_in_flight > 1;
        let max = if idempotent {
            inner.config.max_in_flight
        } else {
            1
        };
        let mut flights: VecDeque<Flight> = VecDeque::new();
        let Some(wake) = Inner::wake_of(&inner, &topic, p) else {
            return;
        };
        loop {
            while flights.len() < max {
                let Some(buildings) = Inner::take_ready(&inner, &topic, p, flights.is_empty())
                else {
                    break;
                };
                let mut flight = Inner::flight(buildings);
                let sent =
                    match Inner::encode(&inner, &topic, p, &mut flight.builders, idempotent, false)
                        .await
                    {
                        Ok(batches) => {
                            inner
                                .transport
                                .publish_queued(&topic, p as i32, batches, inner.config.acks)
                                .await
                        }
                        Err(e) => Err(e),
                    };
                match sent {
                    Ok(outcome) => {
                        flight.outcome = Some(outcome);
                        flights.push_back(flight);
                    }
                    Err(e) => flight.finish(Err(e)),
                }
            }
            // Nothing in flight means nothing was ready either: `take_ready` has marked the
            // partition idle (a later batch starts a new sender).
            let room = flights.len() < max;
            let Some(head) = flights.front_mut() else {
                return;
            };
            // The oldest publish's answer; with room for more publishes, batches that become
            // ready meanwhile go out at once instead of after it (the pipeline never drains
            // while the application keeps sending).
            let result = match head.outcome.as_mut() {
                Some(outcome) if room => tokio::select! {
                    r = outcome => r,
                    () = wake.notified() => continue,
                },
                Some(outcome) => outcome.await,
                None => Err(BrokerError::ShuttingDown),
            };
            let Some(mut head) = flights.pop_front() else {
                return;
            };
            head.outcome = None;
            match result {
                Err(e) if resendable(&e) => {
                    // Nothing sent behind it can have been written (sequence gap, or the same
                    // full queue): collect them, then send everything again, in order.
                    let mut again = vec![head];
                    while let Some(mut f) = flights.pop_front() {
                        let r = match f.outcome.take() {
                            Some(outcome) => outcome.await,
                            None => Err(BrokerError::ShuttingDown),
                        };
                        match r {
                            Err(e) if resendable(&e) => again.push(f),
                            r => f.finish(r),
                        }
                    }
                    let mut renew = idempotent;
                    for mut f in again {
                        let r = Inner::resend(&inner, &topic, p, &mut f, idempotent, renew).await;
                        renew = false;
                        f.finish(r);
                    }
                }
                r => head.finish(r),
            }
        }
    }

    /// Sends one flight again until it is written or fails for good: a full queue is retried
    /// with a short backoff, as Kafka's producer retries retriable errors.
    async fn resend(
        inner: &Inner,
        topic: &str,
        p: usize,
        flight: &mut Flight,
        idempotent: bool,
        renew: bool,
    ) -> Result<(i32, PublishAck), BrokerError> {
        let mut renew = renew;
        for attempt in 0..1000 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            // Each attempt under a fresh producer id when idempotent: the previous attempt was
            // not written, so its sequence numbers are free to start over.
            let batches =
                Inner::encode(inner, topic, p, &mut flight.builders, idempotent, renew).await?;
            renew = idempotent;
            match inner
                .transport
                .publish(topic, Some(p as i32), batches, inner.config.acks)
                .await
            {
                Err(e) if resendable(&e) => continue,
                r => return r,
            }
        }
        Err(BrokerError::Busy {
            partition: format!("{topic}-{p}"),
            queued_bytes: 0,
            max_bytes: 0,
        })
    }
}
