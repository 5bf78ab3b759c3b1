//! [`Producer`]: records in, batches out, in the way Kafka's producers batch.
//!
//! `send` never waits: it puts the record into its partition's open batch and returns a
//! [`DeliveryFuture`] that resolves to the record's offset once the broker acknowledged it.
//! A batch is sent when it reaches `batch_bytes` or when `linger` has passed since its first
//! record. Per partition, at most one publish is in flight; batches that fill meanwhile go
//! together in the next publish, so order per partition is the order of `send` calls.
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
use tokio::sync::{oneshot, Notify};
use weir_storage::{BatchBuilder, Compression, Header, Offset, Record};

use super::Transport;
use crate::broker::partitioner::partition_for_key;
use crate::broker::{Acks, BrokerError};

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
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            acks: Acks::All,
            linger: Duration::from_millis(5),
            batch_bytes: 1024 * 1024,
            compression: Compression::None,
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

type Reply = oneshot::Sender<Result<RecordMetadata, BrokerError>>;

/// Resolves when the broker acknowledged the record.
#[derive(Debug)]
pub struct DeliveryFuture {
    rx: oneshot::Receiver<Result<RecordMetadata, BrokerError>>,
}

impl Future for DeliveryFuture {
    type Output = Result<RecordMetadata, BrokerError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(BrokerError::ShuttingDown)))
    }
}

struct Building {
    builder: BatchBuilder,
    replies: Vec<(Reply, i64)>,
    epoch: u64,
}

#[derive(Default)]
struct PartitionQueue {
    building: Option<Building>,
    ready: VecDeque<Building>,
    in_flight: bool,
}

enum TopicState {
    Resolving(Vec<(ProducerRecord, Reply)>),
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
    crate::broker::partition::now_ms()
}

impl Producer {
    /// A producer over `transport` (a [`crate::BrokerHandle`] for an embedded broker). Must be
    /// used inside a tokio runtime: batches are sent by tasks it spawns.
    pub fn new(transport: impl Transport, config: ProducerConfig) -> Self {
        Producer {
            inner: Arc::new(Inner {
                transport: Arc::new(transport),
                config,
                topics: Mutex::new(HashMap::new()),
                epochs: std::sync::atomic::AtomicU64::new(0),
                drained: Notify::new(),
            }),
        }
    }

    /// Queues a record; the future resolves once the broker acknowledged it. Records of one
    /// partition are written in the order of `send` calls.
    pub fn send(&self, record: ProducerRecord) -> DeliveryFuture {
        let (tx, rx) = oneshot::channel();
        let inner = &self.inner;
        let mut topics = inner.topics.lock().unwrap_or_else(|e| e.into_inner());
        match topics.get_mut(&record.topic) {
            Some(TopicState::Resolving(waiting)) => waiting.push((record, tx)),
            Some(TopicState::Ready { .. }) => {
                let topic = record.topic.clone();
                if let Some(TopicState::Ready { queues, sticky }) = topics.get_mut(&topic) {
                    Inner::enqueue(inner, &topic, queues, sticky, record, tx);
                }
            }
            None => {
                let topic = record.topic.clone();
                topics.insert(topic.clone(), TopicState::Resolving(vec![(record, tx)]));
                let inner = inner.clone();
                tokio::spawn(async move { Inner::resolve(inner, topic).await });
            }
        }
        DeliveryFuture { rx }
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
                for (record, reply) in waiting {
                    Inner::enqueue(&inner, &topic, &mut queues, &mut sticky, record, reply);
                }
                topics.insert(topic, TopicState::Ready { queues, sticky });
            }
            Err(e) => {
                for (_, reply) in waiting {
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
        reply: Reply,
    ) {
        let n = queues.len();
        let p = match (record.partition, &record.key) {
            (Some(p), _) => p,
            (None, Some(key)) => partition_for_key(key, n as u32),
            (None, None) => (*sticky % n.max(1)) as i32,
        };
        let Some(q) = usize::try_from(p).ok().and_then(|i| queues.get_mut(i)) else {
            let _ = reply.send(Err(BrokerError::UnknownPartition {
                topic: topic.to_string(),
                partition: p,
            }));
            return;
        };
        let ts = record.timestamp_ms.unwrap_or_else(now_ms);
        let building = q.building.get_or_insert_with(|| Building {
            builder: BatchBuilder::new(inner.config.compression),
            replies: Vec::new(),
            epoch: inner
                .epochs
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        });
        building.builder.push(Record {
            timestamp_ms: ts,
            key: record.key.clone(),
            value: record.value,
            headers: record.headers,
        });
        building.replies.push((reply, ts));
        let first = building.replies.len() == 1;
        let epoch = building.epoch;
        if building.builder.size_estimate() >= inner.config.batch_bytes {
            q.ready.extend(q.building.take());
            if record.partition.is_none() && record.key.is_none() {
                *sticky += 1;
            }
            Inner::kick(inner, topic, p as usize, q);
        } else if first {
            let inner = inner.clone();
            let topic = topic.to_string();
            let linger = inner.config.linger;
            let keyless = record.partition.is_none() && record.key.is_none();
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
    }

    /// Starts the sender of a partition when it has ready batches and none in flight.
    fn kick(inner: &Arc<Inner>, topic: &str, p: usize, q: &mut PartitionQueue) {
        if q.in_flight || q.ready.is_empty() {
            return;
        }
        q.in_flight = true;
        let inner = inner.clone();
        let topic = topic.to_string();
        tokio::spawn(async move { Inner::send_loop(inner, topic, p).await });
    }

    async fn send_loop(inner: Arc<Inner>, topic: String, p: usize) {
        loop {
            let batches: Vec<Building> = {
                let mut topics = inner.topics.lock().unwrap_or_else(|e| e.into_inner());
                let Some(TopicState::Ready { queues, .. }) = topics.get_mut(&topic) else {
                    return;
                };
                let Some(q) = queues.get_mut(p) else { return };
                if q.ready.is_empty() {
                    q.in_flight = false;
                    drop(topics);
                    inner.drained.notify_waiters();
                    return;
                }
                q.ready.drain(..).collect()
            };
            let mut encoded = Vec::new();
            let mut groups = Vec::new();
            for b in batches {
                match b.builder.build(0) {
                    Ok(batch) => {
                        groups.push((batch.record_count() as i64, b.replies));
                        encoded.push(batch);
                    }
                    Err(e) => {
                        for (reply, _) in b.replies {
                            let _ = reply.send(Err(e.clone().into()));
                        }
                    }
                }
            }
            if encoded.is_empty() {
                continue;
            }
            // A full partition queue (Busy) is retried with a short backoff, as Kafka's
            // producer retries retriable errors; anything else goes back to the sender.
            let mut attempts = 0;
            let result = loop {
                let r = inner
                    .transport
                    .publish(&topic, Some(p as i32), encoded.clone(), inner.config.acks)
                    .await;
                match r {
                    Err(BrokerError::Busy { .. }) if attempts < 1000 => {
                        attempts += 1;
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    other => break other,
                }
            };
            match result {
                Ok((partition, ack)) => {
                    let mut offset = ack.base_offset;
                    for (count, replies) in groups {
                        for (i, (reply, ts)) in replies.into_iter().enumerate() {
                            let _ = reply.send(Ok(RecordMetadata {
                                partition,
                                offset: if offset < 0 { -1 } else { offset + i as i64 },
                                timestamp_ms: ts,
                            }));
                        }
                        if offset >= 0 {
                            offset += count;
                        }
                    }
                }
                Err(e) => {
                    for (_, replies) in groups {
                        for (reply, _) in replies {
                            let _ = reply.send(Err(e.clone()));
                        }
                    }
                }
            }
        }
    }
}
