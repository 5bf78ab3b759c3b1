//! The partition actor: the only writer of one topic-partition's log.
//!
//! ```text
//!  Publish ──► pending queue ──(one append in flight)──► PartitionLog::append ──► acks, in order
//!                                                                     └──► wake parked fetches
//!  Fetch ──► data available and enough of it? ──yes──► PartitionLog::read (off the actor)
//!              └─no──► parked until an append brings `min_bytes` or `max_wait` passes
//! ```
//!
//! Group commit: while one append is in flight, publishes queue; when it completes, everything
//! queued (up to `append_batch_bytes`) goes down as the next append, so one fsync covers all of
//! them under `always` durability. Acknowledgements go out in queue order with the offsets the
//! log assigned. The queue is bounded in bytes: past `partition_queue_bytes` a publish gets
//! [`BrokerError::Busy`] at once instead of the broker growing memory.
//!
//! Reads do not touch actor state: a fetch that can be answered runs `read` in a task of its
//! own, so a slow read never holds up publishes. The actor only decides when a fetch may run,
//! from the log end and the bytes appended since (a small ring of `(end offset, bytes)` marks
//! answers "how many bytes lie after offset X" without I/O).
//!
//! Timers: retention every `retention_check_interval_ms`; under `interval` durability, a sync
//! every `flush_interval_ms` when something was appended since the last one.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::oneshot;
use weir_storage::{Batch, Durability, LogOffsets, Offset, PartitionLog, TopicPartition};

use super::error::BrokerError;
use super::messages::{
    Acks, Fetch, FetchResult, ListOffset, OffsetSpec, Publish, PublishAck, StopPartition, TrimLog,
    UpdateTopicConfig,
};
use crate::config::TopicConfig;

/// Broker-wide limits a partition enforces.
#[derive(Debug, Clone, Copy)]
pub struct PartitionLimits {
    /// Bytes of queued publishes before `Busy`.
    pub queue_bytes: usize,
    /// Most bytes per append.
    pub append_batch_bytes: usize,
    /// Retention timer period.
    pub retention_check_interval: Duration,
    /// Longest long-poll.
    pub max_fetch_wait: Duration,
}

struct PendingPublish {
    batches: Vec<Batch>,
    bytes: usize,
    reply: Option<oneshot::Sender<Result<PublishAck, BrokerError>>>,
}

struct Waiter {
    id: u64,
    from: Offset,
    max_bytes: usize,
    min_bytes: usize,
    reply: oneshot::Sender<Result<FetchResult, BrokerError>>,
}

/// How many `(end, cumulative bytes)` marks to keep for "bytes after offset" estimates.
const MARKS: usize = 4096;

/// One topic-partition's actor. See the module docs.
pub struct Partition {
    tp: TopicPartition,
    log: Arc<dyn PartitionLog>,
    config: TopicConfig,
    limits: PartitionLimits,
    pending: VecDeque<PendingPublish>,
    pending_bytes: usize,
    appending: bool,
    waiters: Vec<Waiter>,
    next_waiter: u64,
    /// `(end offset after an append, bytes appended up to then)`, oldest first.
    marks: VecDeque<(Offset, u64)>,
    appended_bytes: u64,
    unsynced: bool,
    syncing: bool,
    retention_running: bool,
    stop: Option<oneshot::Sender<Result<(), BrokerError>>>,
}

impl Partition {
    /// A partition actor over an open log.
    pub fn new(
        tp: TopicPartition,
        log: Arc<dyn PartitionLog>,
        config: TopicConfig,
        limits: PartitionLimits,
    ) -> Self {
        Partition {
            tp,
            log,
            config,
            limits,
            pending: VecDeque::new(),
            pending_bytes: 0,
            appending: false,
            waiters: Vec::new(),
            next_waiter: 0,
            marks: VecDeque::new(),
            appended_bytes: 0,
            unsynced: false,
            syncing: false,
            retention_running: false,
            stop: None,
        }
    }

    fn offsets(&self) -> LogOffsets {
        self.log.offsets()
    }

    /// Bytes appended after `from`, as far as the marks tell; `u64::MAX` ("plenty") for offsets
    /// older than the oldest mark, 0 at the end.
    fn bytes_after(&self, from: Offset) -> u64 {
        if from >= self.offsets().end {
            return 0;
        }
        // The first mark whose end lies beyond `from`: bytes from that append on.
        let i = self.marks.partition_point(|&(end, _)| end <= from);
        if i == 0 {
            return u64::MAX;
        }
        self.appended_bytes - self.marks[i - 1].1
    }

    fn start_append(&mut self, ctx: &mut Context<Self>) {
        if self.appending || self.pending.is_empty() {
            return;
        }
        let mut group: Vec<PendingPublish> = Vec::new();
        let mut bytes = 0;
        while let Some(front) = self.pending.front() {
            if !group.is_empty() && bytes + front.bytes > self.limits.append_batch_bytes {
                break;
            }
            bytes += front.bytes;
            group.extend(self.pending.pop_front());
        }
        self.pending_bytes -= bytes;
        let counts: Vec<usize> = group.iter().map(|p| p.batches.len()).collect();
        let batches: Vec<Batch> = group
            .iter_mut()
            .flat_map(|p| std::mem::take(&mut p.batches))
            .collect();
        self.appending = true;
        let log = self.log.clone();
        ctx.spawn(
            async move { log.append(batches).await }
                .into_actor(self)
                .map(move |result, act, ctx| {
                    act.appending = false;
                    match result {
                        Ok(info) => {
                            let start = act.offsets().start;
                            let mut i = 0;
                            for (p, n) in group.into_iter().zip(counts) {
                                let base_offset = info.base_offsets.get(i).copied().unwrap_or(-1);
                                i += n;
                                if let Some(reply) = p.reply {
                                    let _ = reply.send(Ok(PublishAck {
                                        base_offset,
                                        log_start_offset: start,
                                    }));
                                }
                            }
                            act.appended_bytes += bytes as u64;
                            act.marks.push_back((info.end, act.appended_bytes));
                            if act.marks.len() > MARKS {
                                act.marks.pop_front();
                            }
                            act.unsynced = true;
                            act.wake_waiters(false);
                        }
                        Err(e) => {
                            let e = BrokerError::from(e);
                            for p in group {
                                if let Some(reply) = p.reply {
                                    let _ = reply.send(Err(e.clone()));
                                }
                            }
                        }
                    }
                    act.start_append(ctx);
                    act.maybe_finish_stop(ctx);
                }),
        );
    }

    /// Answers parked fetches that now have enough data (or all, on `expire_all`).
    fn wake_waiters(&mut self, expire_all: bool) {
        let end = self.offsets().end;
        let mut i = 0;
        while i < self.waiters.len() {
            let w = &self.waiters[i];
            let ready =
                expire_all || (w.from < end && self.bytes_after(w.from) >= w.min_bytes as u64);
            if ready {
                let w = self.waiters.swap_remove(i);
                self.answer(w.from, w.max_bytes, w.reply);
            } else {
                i += 1;
            }
        }
    }

    /// Reads and replies in a task of its own.
    fn answer(
        &self,
        from: Offset,
        max_bytes: usize,
        reply: oneshot::Sender<Result<FetchResult, BrokerError>>,
    ) {
        let log = self.log.clone();
        actix::spawn(async move {
            let _ = reply.send(read(log.as_ref(), from, max_bytes).await);
        });
    }

    fn expire_waiter(&mut self, id: u64) {
        if let Some(pos) = self.waiters.iter().position(|w| w.id == id) {
            let w = self.waiters.swap_remove(pos);
            self.answer(w.from, w.max_bytes, w.reply);
        }
    }

    fn run_retention(&mut self, ctx: &mut Context<Self>) {
        if self.retention_running {
            return;
        }
        let retention = self.config.retention();
        if retention.ms.is_none() && retention.bytes.is_none() {
            return;
        }
        self.retention_running = true;
        let log = self.log.clone();
        let tp = self.tp.clone();
        ctx.spawn(
            async move { log.enforce_retention(retention, now_ms()).await }
                .into_actor(self)
                .map(move |r, act, _| {
                    act.retention_running = false;
                    if let Err(e) = r {
                        log_error(&tp, "retention", &e);
                    }
                }),
        );
    }

    fn run_sync(&mut self, ctx: &mut Context<Self>) {
        if !self.unsynced || self.syncing {
            return;
        }
        self.syncing = true;
        self.unsynced = false;
        let log = self.log.clone();
        let tp = self.tp.clone();
        ctx.spawn(
            async move { log.sync().await }
                .into_actor(self)
                .map(move |r, act, _| {
                    act.syncing = false;
                    if let Err(e) = r {
                        log_error(&tp, "sync", &e);
                    }
                }),
        );
    }

    fn maybe_finish_stop(&mut self, ctx: &mut Context<Self>) {
        if self.stop.is_none() || self.appending || !self.pending.is_empty() {
            return;
        }
        self.wake_waiters(true);
        let reply = self.stop.take();
        let log = self.log.clone();
        ctx.spawn(
            async move { log.close().await }
                .into_actor(self)
                .map(move |r, _act, ctx| {
                    if let Some(reply) = reply {
                        let _ = reply.send(r.map_err(BrokerError::from));
                    }
                    ctx.stop();
                }),
        );
    }
}

fn log_error(tp: &TopicPartition, what: &str, e: &weir_storage::StorageError) {
    eprintln!("weir: {tp}: {what} failed: {e}");
}

/// Wall-clock milliseconds since the Unix epoch (record timestamps, retention).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

async fn read(
    log: &dyn PartitionLog,
    from: Offset,
    max_bytes: usize,
) -> Result<FetchResult, BrokerError> {
    let batches = log.read(from, max_bytes).await?;
    let o = log.offsets();
    Ok(FetchResult {
        batches,
        high_watermark: o.end,
        log_start_offset: o.start,
    })
}

impl Actor for Partition {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(1024);
        ctx.run_interval(self.limits.retention_check_interval, |act, ctx| {
            act.run_retention(ctx);
        });
        if let Durability::Interval { interval_ms } = self.config.durability() {
            ctx.run_interval(Duration::from_millis(interval_ms.max(1)), |act, ctx| {
                act.run_sync(ctx);
            });
        }
    }
}

impl Partition {
    /// Validates a publish and queues it; the outcome goes to `reply` (at once for errors and
    /// for `Acks::None`, after the append otherwise).
    fn accept(
        &mut self,
        batches: Vec<Batch>,
        acks: Acks,
        reply: oneshot::Sender<Result<PublishAck, BrokerError>>,
        ctx: &mut Context<Self>,
    ) {
        let checked = (|| {
            if self.stop.is_some() {
                return Err(BrokerError::ShuttingDown);
            }
            let max = self.config.max_message_bytes as usize;
            let mut bytes = 0;
            for b in &batches {
                if b.len() > max {
                    return Err(BrokerError::MessageTooLarge { size: b.len(), max });
                }
                b.validate_for_append()?;
                bytes += b.len();
            }
            if batches.is_empty() {
                return Err(BrokerError::InvalidBatch("a publish needs a batch".into()));
            }
            if self.pending_bytes + bytes > self.limits.queue_bytes {
                return Err(BrokerError::Busy {
                    partition: self.tp.to_string(),
                    queued_bytes: self.pending_bytes,
                    max_bytes: self.limits.queue_bytes,
                });
            }
            Ok(bytes)
        })();
        let bytes = match checked {
            Ok(b) => b,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        let reply = match acks {
            Acks::None => {
                let _ = reply.send(Ok(PublishAck {
                    base_offset: -1,
                    log_start_offset: self.offsets().start,
                }));
                None
            }
            Acks::Leader | Acks::All => Some(reply),
        };
        self.pending.push_back(PendingPublish {
            batches,
            bytes,
            reply,
        });
        self.pending_bytes += bytes;
        self.start_append(ctx);
    }
}

impl Handler<Publish> for Partition {
    type Result = ResponseFuture<Result<PublishAck, BrokerError>>;

    fn handle(&mut self, msg: Publish, ctx: &mut Self::Context) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.accept(msg.batches, msg.acks, tx, ctx);
        Box::pin(async move { rx.await.unwrap_or(Err(BrokerError::ShuttingDown)) })
    }
}

impl Handler<super::messages::PublishTo> for Partition {
    type Result = ();

    fn handle(&mut self, msg: super::messages::PublishTo, ctx: &mut Self::Context) {
        self.accept(msg.batches, msg.acks, msg.reply, ctx);
    }
}

impl Handler<Fetch> for Partition {
    type Result = ResponseFuture<Result<FetchResult, BrokerError>>;

    fn handle(&mut self, msg: Fetch, ctx: &mut Self::Context) -> Self::Result {
        let o = self.offsets();
        if msg.from < o.start || msg.from > o.end {
            let e = BrokerError::OffsetOutOfRange {
                requested: msg.from,
                start: o.start,
                end: o.end,
            };
            return Box::pin(async move { Err(e) });
        }
        let wait = msg.max_wait.min(self.limits.max_fetch_wait);
        let (tx, rx) = oneshot::channel();
        let enough = msg.from < o.end && self.bytes_after(msg.from) >= msg.min_bytes.max(1) as u64;
        if enough || wait.is_zero() || self.stop.is_some() {
            self.answer(msg.from, msg.max_bytes, tx);
        } else {
            let id = self.next_waiter;
            self.next_waiter += 1;
            self.waiters.push(Waiter {
                id,
                from: msg.from,
                max_bytes: msg.max_bytes,
                min_bytes: msg.min_bytes.max(1),
                reply: tx,
            });
            ctx.run_later(wait, move |act, _| act.expire_waiter(id));
        }
        Box::pin(async move { rx.await.unwrap_or(Err(BrokerError::ShuttingDown)) })
    }
}

impl Handler<ListOffset> for Partition {
    type Result = ResponseFuture<Result<Option<Offset>, BrokerError>>;

    fn handle(&mut self, msg: ListOffset, _: &mut Self::Context) -> Self::Result {
        let o = self.offsets();
        let log = self.log.clone();
        Box::pin(async move {
            match msg.spec {
                OffsetSpec::Earliest => Ok(Some(o.start)),
                OffsetSpec::Latest => Ok(Some(o.end)),
                OffsetSpec::Timestamp(ts) => Ok(log.offset_for_time(ts).await?),
            }
        })
    }
}

impl Handler<TrimLog> for Partition {
    type Result = ResponseFuture<Result<Offset, BrokerError>>;

    fn handle(&mut self, msg: TrimLog, _: &mut Self::Context) -> Self::Result {
        let log = self.log.clone();
        Box::pin(async move { Ok(log.delete_before(msg.before).await?) })
    }
}

impl Handler<UpdateTopicConfig> for Partition {
    type Result = ();

    fn handle(&mut self, msg: UpdateTopicConfig, ctx: &mut Self::Context) {
        self.config = msg.0;
        self.run_retention(ctx);
    }
}

impl Handler<StopPartition> for Partition {
    type Result = ResponseFuture<Result<(), BrokerError>>;

    fn handle(&mut self, _: StopPartition, ctx: &mut Self::Context) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        if self.stop.is_some() {
            return Box::pin(async { Ok(()) });
        }
        self.stop = Some(tx);
        self.maybe_finish_stop(ctx);
        Box::pin(async move { rx.await.unwrap_or(Ok(())) })
    }
}

impl Handler<super::messages::GetOffsets> for Partition {
    type Result = MessageResult<super::messages::GetOffsets>;

    fn handle(&mut self, _: super::messages::GetOffsets, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.offsets())
    }
}
