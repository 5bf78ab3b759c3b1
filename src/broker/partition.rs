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
//! Timers: every `retention_check_interval_ms`, retention (for `delete` topics), a compaction
//! pass (for `compact` topics: [`PartitionLog::compact`], one at a time across the broker), the
//! expiry of idempotent producers idle for `producer_id_expiration_ms` and a producer-state
//! snapshot when due; under `interval` durability, a sync every `flush_interval_ms` when
//! something was appended since the last one, and sooner once [`SYNC_AFTER_BYTES`] are unsynced
//! (small fsyncs do not stall the appends; big ones do).
//!
//! # Idempotent producers
//! Publishes whose batches carry a producer id are checked by [`ProducerStates`] (the rules
//! are in [`super::idempotence`]) before they queue; batches without one skip all of it (one
//! header read per batch, no allocation). A duplicate is not queued: it is acknowledged with
//! the original's offset at once, or, while the original is still queued or in flight, parked
//! under the original's ticket and acknowledged when that append completes. A successful
//! append commits the idempotent batches' pending state with their offsets; a failed one
//! drops all pending state and fails every queued idempotent publish (see the module docs
//! there for why).
//!
//! # Transactions
//! The producer state carries the partition's transactions ([`super::txn_state`]). A
//! transactional batch opens its producer's transaction at its offset *before* its append
//! starts (the log's end is known: one append at a time), and a marker
//! ([`WriteTxnMarker`], from the coordinator, queued like a publish) closes it once written;
//! so the last stable offset a fetch sees never passes undecided data. `read_committed`
//! fetches read below it and get the aborted transactions in their range; they, the
//! committed `ListOffsets` latest and markers wait for the state to load (`deferred`), on a
//! partition ever added to a transaction; on the others a committed read is a plain read.
//!
//! **Rebuild.** When the first idempotent publish (or marker, or `read_committed` fetch of a
//! transactional partition) reaches an actor started over a non-empty log (partitions that
//! never see one never pay for it), a task rebuilds the producer state.
//! Until it finishes, idempotent publishes park (answered in order once it has); other
//! publishes go straight on while nothing is parked, and park behind parked ones otherwise,
//! so the order of arrival holds. A rebuild that fails (an unreadable log) makes idempotent
//! publishes fail with a storage error; other publishes are unaffected.
//!
//! **Snapshots.** As Kafka does, the state is saved with the log
//! ([`PartitionLog::save_snapshot`]): at a clean stop, and at the retention check when it
//! changed or when half of [`REBUILD_TAIL_BYTES`] was appended since the last one; only while
//! no idempotent batch is pending, so a snapshot describes exactly the log below its end. A
//! rebuild starts from the snapshot and replays only the batches after its end (a clean
//! restart reads nothing), provided that end is at most the log end when the actor started: a
//! crash under `interval` durability can cut the log below what a snapshot saw, and the
//! snapshot's batches may then be gone. Without a usable snapshot, or with more than
//! [`REBUILD_TAIL_BYTES`] written after it, the rebuild reads the log's tail instead (about the
//! last [`REBUILD_TAIL_BYTES`], estimated from the average batch size; the whole log when it
//! is smaller): reading all of a large partition would make start-up time grow with
//! retention. A producer whose last batch lies before the tail becomes unknown and may
//! continue at any sequence (lenient mode); the producers that matter, those with batches in
//! flight at the crash, wrote last, so they are in the tail unless more than
//! [`REBUILD_TAIL_BYTES`] of other writes followed within their retry window.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::oneshot;
use weir_storage::{
    AppendDone, Batch, Durability, LogOffsets, Offset, PartitionLog, TopicPartition, TxnMarker,
};

use super::error::BrokerError;
use super::idempotence::{Position, ProducerStates, Ticket, Verdict};
use super::messages::{
    DescribeProducers, Fetch, ListOffset, Publish, ReadLimit, StopPartition, TrimLog,
    UpdateTopicConfig, WriteTxnMarker,
};
use super::types::{now_ms, Acks, ActiveProducer, FetchResult, Isolation, OffsetSpec, PublishAck};
use crate::config::{TimestampMode, TopicConfig};

/// Broker-wide limits a partition enforces.
#[derive(Debug, Clone)]
pub struct PartitionLimits {
    /// Bytes of queued publishes before `Busy`.
    pub queue_bytes: usize,
    /// Most bytes per append.
    pub append_batch_bytes: usize,
    /// Retention timer period.
    pub retention_check_interval: Duration,
    /// Longest long-poll.
    pub max_fetch_wait: Duration,
    /// Most bytes one read returns (beyond it, only a lone first batch).
    pub fetch_max_bytes: usize,
    /// How long a producer that writes nothing is remembered.
    pub producer_id_expiration: Duration,
    /// The most keys one compaction pass maps.
    pub compaction_max_keys: usize,
    /// Compaction passes of all partitions take a permit here: one runs at a time, which
    /// bounds their memory and their share of the disk (Kafka's one cleaner thread).
    pub compaction_slots: Arc<tokio::sync::Semaphore>,
    /// The partitions that may hold transactions: without a usable snapshot, they replay
    /// their whole log ([`super::transactions`]).
    pub txn_logs: Arc<super::transactions::TxnLogs>,
}

type Reply = oneshot::Sender<Result<PublishAck, BrokerError>>;

struct PendingPublish {
    batches: Vec<Batch>,
    bytes: usize,
    reply: Option<Reply>,
    /// Some batch carries a producer id (its pending state must be committed or dropped).
    idempotent: bool,
    /// Some batch is transactional (data or a marker): the append opens or closes
    /// transactions.
    txn: bool,
}

/// The transactions an append opens (producer ids, to take back if it fails) and the markers
/// it writes (`(index in the append, producer, epoch, commit)`).
#[derive(Default)]
struct TxnAppend {
    opened: Vec<i64>,
    markers: Vec<(usize, i64, i16, bool)>,
}

/// Work that waits for the producer and transaction state to load (a `read_committed` fetch,
/// a marker), run in arrival order once it has.
type Deferred = Box<dyn FnOnce(&mut Partition, &mut Context<Partition>)>;

/// A publish that arrived while the producer state was being rebuilt, validated but not yet
/// checked or queued.
struct Parked {
    batches: Vec<Batch>,
    bytes: usize,
    acks: Acks,
    reply: Reply,
    idempotent: bool,
}

/// Where the producer state stands.
enum Load {
    /// Not read yet: no idempotent publish has arrived since the actor started.
    Unloaded,
    /// Being rebuilt from the log; idempotent publishes park.
    Loading,
    /// Ready.
    Ready,
    /// The rebuild failed; idempotent publishes get this error.
    Failed(BrokerError),
}

/// Under `interval` durability, a sync starts once this many bytes are unsynced, even before
/// the interval is up. Measured on ext4 (`scripts/bench-ab.sh`, one producer at ~6 M records/s):
/// 32 MiB left appends stalled behind each fsync (p99 5–9 ms, p999 14–16 ms); 4 MiB gave p99
/// 2–6 ms, p999 4–10 ms and more throughput; 1 MiB paid for the extra fsyncs.
pub const SYNC_AFTER_BYTES: u64 = 4 * 1024 * 1024;

/// About how many bytes of the log's tail a restart reads to rebuild the producer state.
pub const REBUILD_TAIL_BYTES: u64 = 64 * 1024 * 1024;

/// Bytes per read while rebuilding.
const REBUILD_READ_BYTES: usize = 1024 * 1024;

struct Waiter {
    id: u64,
    from: Offset,
    limit: ReadLimit,
    min_bytes: usize,
    isolation: Isolation,
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
    compaction_running: bool,
    stop: Option<oneshot::Sender<Result<(), BrokerError>>>,
    /// Bytes appended since the last sync started.
    unsynced_bytes: u64,
    producers: ProducerStates,
    load: Load,
    /// The producer state changed since the last snapshot.
    snapshot_dirty: bool,
    /// A snapshot is being saved.
    snapshot_saving: bool,
    /// `appended_bytes` when the last snapshot was taken.
    snapshot_at_bytes: u64,
    /// The log end of the last snapshot saved in this run, or of the one the state was
    /// rebuilt from: a restart replays the log from there (or from a later one, or all of it),
    /// so compaction may drop transaction markers below it only.
    snapshot_saved_end: Offset,
    /// The log end when this actor started: a snapshot from an earlier run is trusted only
    /// up to it (a crash may have cut the log below what a snapshot saw).
    opened_end: Offset,
    parked: VecDeque<Parked>,
    parked_bytes: usize,
    /// Replies of duplicates whose original is still pending, by the original's ticket.
    duplicate_waiters: HashMap<Ticket, Vec<Reply>>,
    /// Waiting for the state to load.
    deferred: Vec<Deferred>,
    /// The partition was added to a transaction (once true, for good).
    transactional: bool,
}

impl Partition {
    /// A partition actor over an open log.
    pub fn new(
        tp: TopicPartition,
        log: Arc<dyn PartitionLog>,
        config: TopicConfig,
        limits: PartitionLimits,
    ) -> Self {
        let opened_end = log.offsets().end;
        Partition {
            opened_end,
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
            compaction_running: false,
            stop: None,
            unsynced_bytes: 0,
            producers: ProducerStates::new(false),
            load: Load::Unloaded,
            snapshot_dirty: false,
            snapshot_saving: false,
            snapshot_at_bytes: 0,
            snapshot_saved_end: 0,
            parked: VecDeque::new(),
            parked_bytes: 0,
            duplicate_waiters: HashMap::new(),
            deferred: Vec::new(),
            transactional: false,
        }
    }

    /// Whether `read_committed` readers need the transaction state: only a partition ever
    /// added to a transaction can hold transactional batches (the coordinator records it
    /// durably before any can be written), so the others serve committed reads as they serve
    /// the rest, without loading anything.
    fn needs_txn_state(&mut self) -> bool {
        if !self.transactional {
            self.transactional = self.limits.txn_logs.contains(&self.tp);
        }
        self.transactional
    }

    /// Whether the producer and transaction state is loaded (or failed to load); starts
    /// loading it when not.
    fn ensure_loaded(&mut self, ctx: &mut Context<Self>) -> bool {
        match self.load {
            Load::Ready | Load::Failed(_) => true,
            Load::Loading => false,
            Load::Unloaded => {
                self.load = Load::Loading;
                self.start_rebuild(ctx);
                matches!(self.load, Load::Ready)
            }
        }
    }

    /// The last stable offset: the log end unless a transaction is open. Before the state is
    /// loaded, the log end (only `read_uncommitted` answers, and committed answers of
    /// partitions never added to a transaction, are given then).
    fn last_stable(&self) -> Offset {
        let end = self.offsets().end;
        match self.load {
            Load::Ready => self.producers.txns().last_stable(end),
            _ => end,
        }
    }

    /// How far a fetch with `isolation` may read.
    fn visible_end(&self, isolation: Isolation) -> Offset {
        match isolation {
            Isolation::ReadCommitted => self.last_stable(),
            Isolation::ReadUncommitted => self.offsets().end,
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
        // (producer id, index in the append) of every idempotent batch, in append order;
        // empty, and allocation-free, for groups without idempotent publishes.
        let mut idempotent: Vec<(i64, usize)> = Vec::new();
        let mut index = 0;
        for (p, &n) in group.iter().zip(&counts) {
            if p.idempotent {
                for (i, b) in p.batches.iter().enumerate() {
                    if b.producer_id() >= 0 {
                        idempotent.push((b.producer_id(), index + i));
                    }
                }
            }
            index += n;
        }
        let mut batches: Vec<Batch> = group
            .iter_mut()
            .flat_map(|p| std::mem::take(&mut p.batches))
            .collect();
        let txns = if group.iter().any(|p| p.txn) {
            self.open_transactions(&batches)
        } else {
            TxnAppend::default()
        };
        // A `LogAppendTime` topic's batches carry the time of their append (Kafka restamps
        // them the same way: attribute, max timestamp, CRC).
        let append_time = match self.config.message_timestamp_type {
            TimestampMode::LogAppendTime => {
                let now = now_ms();
                for b in &mut batches {
                    b.set_log_append_time(now);
                }
                now
            }
            TimestampMode::CreateTime => -1,
        };
        self.appending = true;
        let log = self.log.clone();
        // The publishers are answered from the thread that finished the append (`done`), not
        // after a hop back to this actor: one thread wake less on every publish's path. Acks
        // stay in order: the next append starts only once this one is back here.
        let replies: Vec<(Option<Reply>, usize)> = group
            .iter_mut()
            .zip(&counts)
            .map(|(p, &n)| (p.reply.take(), n))
            .collect();
        let start_of = self.log.clone();
        let done: AppendDone = Box::new(move |result| match result {
            Ok(info) => {
                let log_start_offset = start_of.offsets().start;
                let mut i = 0;
                for (reply, n) in replies {
                    let base_offset = info.base_offsets.get(i).copied().unwrap_or(-1);
                    i += n;
                    if let Some(reply) = reply {
                        let _ = reply.send(Ok(PublishAck {
                            base_offset,
                            log_start_offset,
                            log_append_time_ms: append_time,
                        }));
                    }
                }
            }
            Err(e) => {
                let e = BrokerError::from(e);
                for (reply, _) in replies {
                    if let Some(reply) = reply {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
            }
        });
        ctx.spawn(
            async move { log.append_then(batches, done).await }
                .into_actor(self)
                .map(move |result, act, ctx| {
                    act.appending = false;
                    match result {
                        Ok(info) => {
                            let start = act.offsets().start;
                            act.commit_producers(&idempotent, &info.base_offsets, start);
                            act.close_transactions(&txns, &info.base_offsets);
                            act.appended_bytes += bytes as u64;
                            act.marks.push_back((info.end, act.appended_bytes));
                            if act.marks.len() > MARKS {
                                act.marks.pop_front();
                            }
                            act.unsynced = true;
                            act.unsynced_bytes += bytes as u64;
                            // Under `interval`, a sync also starts once this much is unsynced:
                            // one fsync of a second's worth of a fast producer takes long
                            // enough to stall the appends behind it (ext4), many small ones
                            // do not. Only ever earlier than the interval asks.
                            if act.unsynced_bytes >= SYNC_AFTER_BYTES
                                && matches!(act.config.durability(), Durability::Interval { .. })
                            {
                                act.run_sync(ctx);
                            }
                            act.wake_waiters(false);
                        }
                        Err(e) => {
                            for &producer_id in &txns.opened {
                                act.producers.txns_mut().cancel(producer_id);
                            }
                            act.abandon_producers(&BrokerError::from(e));
                        }
                    }
                    act.start_append(ctx);
                    act.maybe_finish_stop(ctx);
                }),
        );
    }

    /// Opens the transactions of `batches` (about to be appended at the log end) that start
    /// there, before the append: the LSO must never pass their first offset. Notes the markers
    /// among them, which close transactions once written.
    fn open_transactions(&mut self, batches: &[Batch]) -> TxnAppend {
        let mut out = TxnAppend::default();
        let mut offset = self.offsets().end;
        for (i, b) in batches.iter().enumerate() {
            if b.is_transactional() && b.producer_id() >= 0 {
                if b.is_control() {
                    if let Some(m) = TxnMarker::of(b) {
                        out.markers
                            .push((i, b.producer_id(), b.producer_epoch(), m.commit));
                    }
                } else if self.producers.txns_mut().begin(b.producer_id(), offset) {
                    out.opened.push(b.producer_id());
                }
            }
            offset += i64::from(b.last_offset_delta()) + 1;
        }
        out
    }

    /// Closes the transactions whose markers were just written at `base_offsets`.
    fn close_transactions(&mut self, txns: &TxnAppend, base_offsets: &[Offset]) {
        for &(i, producer_id, epoch, commit) in &txns.markers {
            if let Some(&offset) = base_offsets.get(i) {
                self.producers
                    .txns_mut()
                    .end(producer_id, epoch, offset, commit);
                self.snapshot_dirty = true;
            }
        }
    }

    /// Commits the pending producer state of the idempotent batches just written (`(producer
    /// id, index)` into `base_offsets`) and answers the duplicates that waited for them.
    fn commit_producers(
        &mut self,
        idempotent: &[(i64, usize)],
        base_offsets: &[Offset],
        log_start: Offset,
    ) {
        let now = now_ms();
        self.snapshot_dirty |= !idempotent.is_empty();
        for &(producer_id, i) in idempotent {
            let Some(&offset) = base_offsets.get(i) else {
                continue;
            };
            let ticket = self.producers.commit(producer_id, offset, now);
            debug_assert!(ticket.is_some(), "commits follow the pending order");
            if self.duplicate_waiters.is_empty() {
                continue;
            }
            for reply in ticket
                .and_then(|t| self.duplicate_waiters.remove(&t))
                .unwrap_or_default()
            {
                let _ = reply.send(Ok(PublishAck {
                    base_offset: offset,
                    log_start_offset: log_start,
                    log_append_time_ms: -1,
                }));
            }
        }
    }

    /// After a failed append: queued idempotent publishes were checked against pending state
    /// that will never be written, so they fail with `e` too, as do duplicates waiting for a
    /// pending original; then the pending state is dropped. Other queued publishes stay.
    fn abandon_producers(&mut self, e: &BrokerError) {
        if !self.producers.has_pending() && self.duplicate_waiters.is_empty() {
            return;
        }
        let mut kept = VecDeque::with_capacity(self.pending.len());
        for p in self.pending.drain(..) {
            if p.idempotent {
                self.pending_bytes -= p.bytes;
                if let Some(reply) = p.reply {
                    let _ = reply.send(Err(e.clone()));
                }
            } else {
                kept.push_back(p);
            }
        }
        self.pending = kept;
        for reply in self.duplicate_waiters.drain().flat_map(|(_, v)| v) {
            let _ = reply.send(Err(e.clone()));
        }
        self.producers.abandon_pending();
    }

    /// Starts rebuilding the producer state from the log (see the module docs).
    fn start_rebuild(&mut self, ctx: &mut Context<Self>) {
        let o = self.offsets();
        if o.end <= o.start {
            // Nothing to read; anything written before a start above 0 is gone.
            self.producers = ProducerStates::new(o.start > 0);
            self.load = Load::Ready;
            return;
        }
        let log = self.log.clone();
        let (tp, opened_end) = (self.tp.clone(), self.opened_end);
        let transactional = self.limits.txn_logs.contains(&tp);
        ctx.spawn(
            async move { rebuild(log.as_ref(), o, opened_end, &tp, transactional).await }
                .into_actor(self)
                .map(|r, act, ctx| act.rebuilt(r, ctx)),
        );
    }

    fn rebuilt(
        &mut self,
        result: Result<(ProducerStates, Offset), weir_storage::StorageError>,
        ctx: &mut Context<Self>,
    ) {
        match result {
            Ok((states, snapshot_end)) => {
                self.producers = states;
                self.load = Load::Ready;
                // The snapshot it started from is the one a restart would start from again.
                self.snapshot_saved_end = self.snapshot_saved_end.max(snapshot_end);
            }
            Err(e) => {
                log_error(&self.tp, "rebuilding the idempotent producer state", &e);
                self.load = Load::Failed(BrokerError::Storage {
                    message: format!("the idempotent producer state could not be rebuilt: {e}"),
                });
            }
        }
        self.parked_bytes = 0;
        for p in std::mem::take(&mut self.parked) {
            self.enqueue(p.batches, p.bytes, p.idempotent, p.acks, p.reply, ctx);
        }
        for work in std::mem::take(&mut self.deferred) {
            work(self, ctx);
        }
    }

    /// Answers parked fetches that now have enough data (or all, on `expire_all`).
    fn wake_waiters(&mut self, expire_all: bool) {
        let end = self.offsets().end;
        let stable = self.last_stable();
        let mut i = 0;
        while i < self.waiters.len() {
            let w = &self.waiters[i];
            let visible = match w.isolation {
                Isolation::ReadCommitted => stable,
                Isolation::ReadUncommitted => end,
            };
            let ready =
                expire_all || (w.from < visible && self.bytes_after(w.from) >= w.min_bytes as u64);
            if ready {
                let w = self.waiters.swap_remove(i);
                self.answer(w.from, w.limit, w.isolation, w.reply);
            } else {
                i += 1;
            }
        }
    }

    /// Reads and replies in a task of its own. A `read_committed` answer stops at the last
    /// stable offset as it is now and lists the aborted transactions below it.
    fn answer(
        &self,
        from: Offset,
        limit: ReadLimit,
        isolation: Isolation,
        reply: oneshot::Sender<Result<FetchResult, BrokerError>>,
    ) {
        if let (Isolation::ReadCommitted, Load::Failed(e)) = (isolation, &self.load) {
            let _ = reply.send(Err(e.clone()));
            return;
        }
        let stable = self.last_stable();
        let (upto, aborted) = match isolation {
            Isolation::ReadCommitted if matches!(self.load, Load::Ready) => (
                Some(stable),
                self.producers.txns().aborted_overlapping(from, stable),
            ),
            _ => (None, Vec::new()),
        };
        let log = self.log.clone();
        let limit = ReadLimit {
            max_bytes: limit.max_bytes.min(self.limits.fetch_max_bytes),
            ..limit
        };
        actix::spawn(async move {
            let result = read(log.as_ref(), from, limit, upto).await;
            let _ = reply.send(result.map(|r| FetchResult {
                last_stable_offset: stable.min(r.high_watermark),
                aborted,
                ..r
            }));
        });
    }

    fn expire_waiter(&mut self, id: u64) {
        if let Some(pos) = self.waiters.iter().position(|w| w.id == id) {
            let w = self.waiters.swap_remove(pos);
            self.answer(w.from, w.limit, w.isolation, w.reply);
        }
    }

    /// Forgets the idempotent producers idle for `producer_id_expiration` (only once the state
    /// is loaded: an unloaded state is rebuilt from the log when needed).
    fn expire_idle_producers(&mut self) {
        if matches!(self.load, Load::Ready) {
            let max_idle = i64::try_from(self.limits.producer_id_expiration.as_millis());
            let forgotten = self
                .producers
                .expire_idle(now_ms(), max_idle.unwrap_or(i64::MAX));
            self.snapshot_dirty |= forgotten > 0;
        }
    }

    /// The producer state as a snapshot of the log as it is now, when there is a state to
    /// save: loaded, and nothing pending (an idempotent batch in flight is not in the log yet).
    fn take_snapshot(&mut self) -> Option<(Vec<u8>, Offset)> {
        if !matches!(self.load, Load::Ready) {
            return None;
        }
        let end = self.offsets().end;
        let bytes = self.producers.snapshot(end)?;
        self.snapshot_dirty = false;
        self.snapshot_at_bytes = self.appended_bytes;
        Some((bytes, end))
    }

    /// Saves a snapshot of the producer state when it changed, or when so much was appended
    /// since the last one that a restart could no longer replay the difference (see the module
    /// docs), so that a restart after a crash reads little of the log.
    fn save_snapshot(&mut self, ctx: &mut Context<Self>) {
        let stale = self.appended_bytes - self.snapshot_at_bytes > REBUILD_TAIL_BYTES / 2;
        if self.snapshot_saving || !(self.snapshot_dirty || stale) {
            return;
        }
        let Some((bytes, end)) = self.take_snapshot() else {
            return;
        };
        self.snapshot_saving = true;
        let log = self.log.clone();
        let tp = self.tp.clone();
        ctx.spawn(
            async move { log.save_snapshot(&bytes).await }
                .into_actor(self)
                .map(move |r, act, _| {
                    act.snapshot_saving = false;
                    match r {
                        Ok(()) => act.snapshot_saved_end = act.snapshot_saved_end.max(end),
                        Err(e) => {
                            log_error(&tp, "saving the producer-state snapshot", &e);
                            act.snapshot_dirty = true;
                        }
                    }
                }),
        );
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
                    match r {
                        Ok(start) => {
                            if matches!(act.load, Load::Ready) {
                                act.snapshot_dirty |= act.producers.expire_before(start) > 0;
                            }
                        }
                        Err(e) => log_error(&tp, "retention", &e),
                    }
                }),
        );
    }

    fn run_compaction(&mut self, ctx: &mut Context<Self>) {
        if self.compaction_running || self.stop.is_some() {
            return;
        }
        let Some(mut policy) = self.config.compaction(self.limits.compaction_max_keys) else {
            return;
        };
        // A restart replays from the last saved snapshot: the markers from there on stay.
        policy.markers_below = self.snapshot_saved_end;
        self.compaction_running = true;
        let log = self.log.clone();
        let tp = self.tp.clone();
        let slots = self.limits.compaction_slots.clone();
        ctx.spawn(
            async move {
                let _slot = slots.acquire_owned().await;
                log.compact(policy, now_ms()).await
            }
            .into_actor(self)
            .map(move |r, act, _| {
                act.compaction_running = false;
                match r {
                    Ok(Some(stats)) if stats.records_removed > 0 => eprintln!(
                        "weir: compacted {tp} below offset {}: {} records removed, {} -> {} bytes",
                        stats.cleaned_upto,
                        stats.records_removed,
                        stats.bytes_before,
                        stats.bytes_after
                    ),
                    Ok(_) => {}
                    // The partition is stopping (its log closing): the pass stopped early.
                    Err(weir_storage::StorageError::Closed) => {}
                    Err(e) => log_error(&tp, "compaction", &e),
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
        self.unsynced_bytes = 0;
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
        // A clean stop leaves a snapshot of the whole log: the next start reads none of it.
        let snapshot = self.take_snapshot();
        let tp = self.tp.clone();
        ctx.spawn(
            async move {
                if let Some((bytes, _)) = snapshot {
                    if let Err(e) = log.save_snapshot(&bytes).await {
                        log_error(&tp, "saving the producer-state snapshot", &e);
                    }
                }
                log.close().await
            }
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

/// The offset a rebuild starts reading at: the log start, or about [`REBUILD_TAIL_BYTES`]
/// before the end, estimated from the log's average bytes per offset.
fn rebuild_from(o: LogOffsets) -> Offset {
    if o.size_bytes <= REBUILD_TAIL_BYTES || o.end <= o.start {
        return o.start;
    }
    let span = (o.end - o.start) as u128;
    let tail = span * u128::from(REBUILD_TAIL_BYTES) / u128::from(o.size_bytes) + 1;
    (o.end - tail.min(span) as i64).max(o.start)
}

/// The producer state of the log up to `o.end`: from the log's snapshot when it has one that
/// fits (a snapshot of an end at most `opened_end`, then only the batches after it are read, at
/// most about [`REBUILD_TAIL_BYTES`] of them), else by replaying the batches from
/// [`rebuild_from`]; from the log start when the log may hold transactions (`transactional`,
/// or a snapshot or that tail shows some). With the end of the snapshot it started from (0
/// without one).
async fn rebuild(
    log: &dyn PartitionLog,
    o: LogOffsets,
    opened_end: Offset,
    tp: &TopicPartition,
    mut transactional: bool,
) -> Result<(ProducerStates, Offset), weir_storage::StorageError> {
    // Transactions make a partial replay unsafe: an aborted transaction before the part
    // replayed would be served as committed. A log that may hold any reads all of it.
    let snapshot = match log.load_snapshot().await {
        Ok(Some(bytes)) => match ProducerStates::from_snapshot(&bytes) {
            Ok((states, end)) if end <= opened_end => Some((states, end)),
            Ok((states, end)) => {
                transactional |= !states.txns().is_empty();
                eprintln!(
                    "weir: {tp}: the producer-state snapshot describes offsets up to {end}, \
                     beyond the log's end at start {opened_end} (a crash cut the log); \
                     rebuilding from the log"
                );
                None
            }
            Err(e) => {
                eprintln!(
                    "weir: {tp}: unreadable producer-state snapshot ({e}); \
                         rebuilding from the log"
                );
                None
            }
        },
        Ok(None) => None,
        Err(e) => {
            log_error(tp, "loading the producer-state snapshot", &e);
            None
        }
    };
    if let Some((mut states, end)) = snapshot {
        transactional |= !states.txns().is_empty();
        if end < o.start {
            // Retention removed batches the snapshot remembers.
            states.expire_before(o.start);
        }
        if replay(
            log,
            &mut states,
            end.max(o.start),
            o.end,
            Some(REBUILD_TAIL_BYTES),
        )
        .await?
        {
            return Ok((states, end));
        }
        // More was written after the snapshot than a rebuild reads: the tail, as without one.
    }
    let from = if transactional {
        o.start
    } else {
        rebuild_from(o)
    };
    // Reading from above offset 0 may miss producers: unknown ones are then treated leniently.
    let mut states = ProducerStates::new(from > 0);
    replay(log, &mut states, from, o.end, None).await?;
    if from > o.start && !states.txns().is_empty() {
        states = ProducerStates::new(o.start > 0);
        replay(log, &mut states, o.start, o.end, None).await?;
    }
    Ok((states, 0))
}

/// Replays the producer fields of the log's batches from `from` up to `end` into `states`;
/// `false` (and `states` half replayed) when more than `budget` bytes would have to be read.
async fn replay(
    log: &dyn PartitionLog,
    states: &mut ProducerStates,
    mut from: Offset,
    end: Offset,
    budget: Option<u64>,
) -> Result<bool, weir_storage::StorageError> {
    let mut read_bytes = 0u64;
    while from < end {
        if budget.is_some_and(|b| read_bytes > b) {
            return Ok(false);
        }
        let batches = match log.read(from, REBUILD_READ_BYTES).await {
            Ok(b) => b,
            // Retention moved the start meanwhile: go on from the new start.
            Err(weir_storage::StorageError::OffsetOutOfRange { start, .. }) if start > from => {
                from = start;
                states.mark_lenient();
                continue;
            }
            Err(e) => return Err(e),
        };
        let Some(last) = batches.last() else { break };
        from = last.next_offset();
        for b in &batches {
            read_bytes += b.len() as u64;
            states.replay(b);
        }
    }
    Ok(true)
}

/// Reads from `from`; with `upto`, only batches that start below it (transactions end at
/// batch boundaries, so no batch straddles a last stable offset). A `max_bytes` of 0 reads no
/// batch (the offsets only).
async fn read(
    log: &dyn PartitionLog,
    from: Offset,
    limit: ReadLimit,
    upto: Option<Offset>,
) -> Result<FetchResult, BrokerError> {
    let mut batches = match upto {
        _ if limit.max_bytes == 0 => Vec::new(),
        Some(upto) if from >= upto => Vec::new(),
        _ if limit.min_one_batch => log.read(from, limit.max_bytes).await?,
        _ => log.read_within(from, limit.max_bytes).await?,
    };
    if let Some(upto) = upto {
        batches.retain(|b| b.base_offset() < upto);
    }
    let o = log.offsets();
    Ok(FetchResult {
        batches,
        high_watermark: o.end,
        log_start_offset: o.start,
        last_stable_offset: o.end,
        aborted: Vec::new(),
    })
}

impl Actor for Partition {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(1024);
        ctx.run_interval(self.limits.retention_check_interval, |act, ctx| {
            act.expire_idle_producers();
            act.run_retention(ctx);
            act.run_compaction(ctx);
            act.save_snapshot(ctx);
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
            let queued = self.pending_bytes + self.parked_bytes;
            if queued + bytes > self.limits.queue_bytes {
                return Err(BrokerError::Busy {
                    partition: self.tp.to_string(),
                    queued_bytes: queued,
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
        let idempotent = batches.iter().any(|b| b.producer_id() >= 0);
        if idempotent && matches!(self.load, Load::Unloaded) {
            // The first idempotent publish since the start reads the log's tail: partitions
            // that never see one never pay for it.
            self.load = Load::Loading;
            self.start_rebuild(ctx);
        }
        if matches!(self.load, Load::Loading) && (idempotent || !self.parked.is_empty()) {
            self.parked_bytes += bytes;
            self.parked.push_back(Parked {
                batches,
                bytes,
                acks,
                reply,
                idempotent,
            });
            return;
        }
        self.enqueue(batches, bytes, idempotent, acks, reply, ctx);
    }

    /// Checks an idempotent publish against the producer state, then queues it (or answers a
    /// duplicate, or the error).
    fn enqueue(
        &mut self,
        batches: Vec<Batch>,
        bytes: usize,
        idempotent: bool,
        acks: Acks,
        reply: Reply,
        ctx: &mut Context<Self>,
    ) {
        if idempotent {
            let verdict = match &self.load {
                Load::Failed(e) => Err(e.clone()),
                Load::Unloaded | Load::Loading | Load::Ready => {
                    debug_assert!(matches!(self.load, Load::Ready), "parked while loading");
                    self.producers.check_publish(&batches)
                }
            };
            match verdict {
                Ok(Verdict::Append) => {}
                Ok(Verdict::Duplicate(original)) => {
                    self.answer_duplicate(original, acks, reply);
                    return;
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                    return;
                }
            }
        }
        let reply = match acks {
            Acks::None => {
                let _ = reply.send(Ok(PublishAck {
                    base_offset: -1,
                    log_start_offset: self.offsets().start,
                    log_append_time_ms: -1,
                }));
                None
            }
            Acks::Leader | Acks::All => Some(reply),
        };
        let txn = idempotent && batches.iter().any(Batch::is_transactional);
        self.pending.push_back(PendingPublish {
            batches,
            bytes,
            reply,
            idempotent,
            txn,
        });
        self.pending_bytes += bytes;
        self.start_append(ctx);
    }

    /// Acknowledges a publish of duplicates with its original's offset, now or (for a pending
    /// original) when the original is written. Nothing is written.
    fn answer_duplicate(&mut self, original: Position, acks: Acks, reply: Reply) {
        let log_start_offset = self.offsets().start;
        match (acks, original) {
            (Acks::None, _) => {
                let _ = reply.send(Ok(PublishAck {
                    base_offset: -1,
                    log_start_offset,
                    log_append_time_ms: -1,
                }));
            }
            (_, Position::Written(base_offset)) => {
                let _ = reply.send(Ok(PublishAck {
                    base_offset,
                    log_start_offset,
                    log_append_time_ms: -1,
                }));
            }
            (_, Position::Pending(ticket)) => {
                self.duplicate_waiters
                    .entry(ticket)
                    .or_default()
                    .push(reply);
            }
        }
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

impl Partition {
    /// Answers a fetch now, or parks it until enough data is visible or its wait is over. A
    /// `read_committed` fetch first waits for the transaction state to load.
    fn fetch(
        &mut self,
        msg: Fetch,
        reply: oneshot::Sender<Result<FetchResult, BrokerError>>,
        ctx: &mut Context<Self>,
    ) {
        if msg.isolation == Isolation::ReadCommitted
            && self.needs_txn_state()
            && !self.ensure_loaded(ctx)
        {
            self.deferred
                .push(Box::new(move |act, ctx| act.fetch(msg, reply, ctx)));
            return;
        }
        let o = self.offsets();
        if msg.from < o.start || msg.from > o.end {
            let _ = reply.send(Err(BrokerError::OffsetOutOfRange {
                requested: msg.from,
                start: o.start,
                end: o.end,
            }));
            return;
        }
        let wait = msg.max_wait.min(self.limits.max_fetch_wait);
        let visible = self.visible_end(msg.isolation);
        let enough =
            msg.from < visible && self.bytes_after(msg.from) >= msg.min_bytes.max(1) as u64;
        if enough || wait.is_zero() || self.stop.is_some() {
            self.answer(msg.from, msg.limit, msg.isolation, reply);
        } else {
            let id = self.next_waiter;
            self.next_waiter += 1;
            self.waiters.push(Waiter {
                id,
                from: msg.from,
                limit: msg.limit,
                min_bytes: msg.min_bytes.max(1),
                isolation: msg.isolation,
                reply,
            });
            ctx.run_later(wait, move |act, _| act.expire_waiter(id));
        }
    }

    /// Looks an offset up; the latest `read_committed` offset is the last stable one, known
    /// once the transaction state is loaded.
    fn list_offset(
        &mut self,
        msg: ListOffset,
        reply: oneshot::Sender<Result<Option<Offset>, BrokerError>>,
        ctx: &mut Context<Self>,
    ) {
        let committed = msg.isolation == Isolation::ReadCommitted;
        if committed
            && matches!(msg.spec, OffsetSpec::Latest | OffsetSpec::MaxTimestamp)
            && self.needs_txn_state()
            && !self.ensure_loaded(ctx)
        {
            self.deferred
                .push(Box::new(move |act, ctx| act.list_offset(msg, reply, ctx)));
            return;
        }
        let o = self.offsets();
        let answer = match msg.spec {
            OffsetSpec::Earliest => Ok(Some(o.start)),
            OffsetSpec::Latest => match (&self.load, committed) {
                (Load::Failed(e), true) => Err(e.clone()),
                _ => Ok(Some(self.visible_end(msg.isolation))),
            },
            OffsetSpec::Timestamp(ts) => {
                let log = self.log.clone();
                actix::spawn(async move {
                    let _ = reply.send(log.offset_for_time(ts).await.map_err(Into::into));
                });
                return;
            }
            OffsetSpec::MaxTimestamp => {
                if let (Load::Failed(e), true) = (&self.load, committed) {
                    let _ = reply.send(Err(e.clone()));
                    return;
                }
                let (log, below) = (self.log.clone(), self.visible_end(msg.isolation));
                actix::spawn(async move {
                    let found = log.max_timestamp_offset(below).await;
                    let _ = reply.send(found.map_err(Into::into));
                });
                return;
            }
        };
        let _ = reply.send(answer);
    }

    /// Queues a transaction marker behind everything queued for the partition. Markers skip
    /// the queue's byte bound (the coordinator must be able to end what it started).
    fn write_marker(
        &mut self,
        msg: WriteTxnMarker,
        reply: oneshot::Sender<Result<Offset, BrokerError>>,
        ctx: &mut Context<Self>,
    ) {
        if self.stop.is_some() {
            let _ = reply.send(Err(BrokerError::ShuttingDown));
            return;
        }
        if !self.ensure_loaded(ctx) {
            self.deferred
                .push(Box::new(move |act, ctx| act.write_marker(msg, reply, ctx)));
            return;
        }
        if let Load::Failed(e) = &self.load {
            let _ = reply.send(Err(e.clone()));
            return;
        }
        let marker = TxnMarker {
            commit: msg.commit,
            coordinator_epoch: 0,
        };
        let batch = match marker.batch(msg.producer_id, msg.epoch, now_ms()) {
            Ok(b) => b,
            Err(e) => {
                let _ = reply.send(Err(BrokerError::InvalidBatch(e.to_string())));
                return;
            }
        };
        let (tx, rx) = oneshot::channel();
        let bytes = batch.len();
        self.pending.push_back(PendingPublish {
            batches: vec![batch],
            bytes,
            reply: Some(tx),
            idempotent: false,
            txn: true,
        });
        self.pending_bytes += bytes;
        self.start_append(ctx);
        actix::spawn(async move {
            let result = rx.await.unwrap_or(Err(BrokerError::ShuttingDown));
            let _ = reply.send(result.map(|ack| ack.base_offset));
        });
    }

    /// The producers the partition remembers, once its producer state is loaded.
    fn describe_producers(
        &mut self,
        reply: oneshot::Sender<Result<Vec<ActiveProducer>, BrokerError>>,
        ctx: &mut Context<Self>,
    ) {
        if !self.ensure_loaded(ctx) {
            self.deferred
                .push(Box::new(move |act, ctx| act.describe_producers(reply, ctx)));
            return;
        }
        let answer = match &self.load {
            Load::Failed(e) => Err(e.clone()),
            _ => Ok(self.producers.active(now_ms())),
        };
        let _ = reply.send(answer);
    }
}

impl Handler<Fetch> for Partition {
    type Result = ResponseFuture<Result<FetchResult, BrokerError>>;

    fn handle(&mut self, msg: Fetch, ctx: &mut Self::Context) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.fetch(msg, tx, ctx);
        Box::pin(async move { rx.await.unwrap_or(Err(BrokerError::ShuttingDown)) })
    }
}

impl Handler<ListOffset> for Partition {
    type Result = ResponseFuture<Result<Option<Offset>, BrokerError>>;

    fn handle(&mut self, msg: ListOffset, ctx: &mut Self::Context) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.list_offset(msg, tx, ctx);
        Box::pin(async move { rx.await.unwrap_or(Err(BrokerError::ShuttingDown)) })
    }
}

impl Handler<WriteTxnMarker> for Partition {
    type Result = ResponseFuture<Result<Offset, BrokerError>>;

    fn handle(&mut self, msg: WriteTxnMarker, ctx: &mut Self::Context) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.write_marker(msg, tx, ctx);
        Box::pin(async move { rx.await.unwrap_or(Err(BrokerError::ShuttingDown)) })
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
        // Segment size and age, durability: the log applies them from its next append on.
        if msg.0.log_config() != self.config.log_config() {
            self.log.reconfigure(&msg.0.log_config());
        }
        self.config = msg.0;
        self.run_retention(ctx);
        self.run_compaction(ctx);
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
        // Publishes parked behind the producer-state rebuild were never queued: refuse them
        // (retriable) rather than hold the shutdown for the rebuild.
        self.parked_bytes = 0;
        for p in std::mem::take(&mut self.parked) {
            let _ = p.reply.send(Err(BrokerError::ShuttingDown));
        }
        // Fetches and markers waiting for the state: their replies drop (ShuttingDown).
        self.deferred.clear();
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

impl Handler<DescribeProducers> for Partition {
    type Result = ResponseFuture<Result<Vec<ActiveProducer>, BrokerError>>;

    fn handle(&mut self, _: DescribeProducers, ctx: &mut Self::Context) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.describe_producers(tx, ctx);
        Box::pin(async move { rx.await.unwrap_or(Err(BrokerError::ShuttingDown)) })
    }
}
