//! The two storage traits and their contract.
//!
//! A broker opens one [`Storage`] (memory, segment files or sled, chosen by config). Each
//! topic-partition's actor opens one [`PartitionLog`] through it and is its only writer.
//!
//! # The contract every backend keeps
//!
//! **Offsets.** The log assigns offsets in [`PartitionLog::append`]: the first batch gets the log
//! end offset, each next batch the offset after the previous one. Offsets are assigned densely
//! and never reused, also across reopen and retention. Only compaction
//! ([`PartitionLog::compact`]) leaves gaps: it removes records and whole batches below the
//! offset it reports, and every backend remembers durably where gaps may be, so that a gap there
//! is a compacted-away range and anywhere else a hole (corruption). Storage, not the broker, is the source of truth, so
//! a backend shared by several brokers can own the sequence.
//!
//! **Atomicity and order.** An append is atomic per batch: after any crash each batch is either
//! entirely in the log or entirely absent, and if a batch is present so is every batch appended
//! before it (no holes). Batches of one `append` call that fail validation leave the log
//! untouched. Appends are serialized by the log itself; the owner keeps at most one in flight to
//! keep acknowledgements in order.
//!
//! **Visibility.** A batch becomes readable once the `append` that wrote it has returned `Ok`
//! (for [`Durability::Always`] that is after it is durable), never partially. Reads run
//! concurrently with an append and with each other.
//!
//! **Durability: what `Ok` from `append` means.**
//! - [`Durability::None`]: the bytes are handed to the OS; for a file backend a process crash
//!   keeps them, a power loss may not. An embedded engine that buffers inside the process (sled)
//!   may lose its unflushed buffer even on a process crash; such a backend documents it.
//! - [`Durability::Interval`]: as `None`, and a sync has started within the last interval (an
//!   append starts one when the interval has passed, and may return before it completes); the
//!   owner calls [`PartitionLog::sync`] on a timer for idle logs.
//! - [`Durability::Always`]: the batch, and everything before it, survives a power loss.
//!
//! **Failure is fail-stop.** After an I/O error (a failed write, fsync or flush) the log reports
//! itself broken: every later call returns [`StorageError::Failed`] until the log is reopened,
//! which runs recovery from what is on disk. A log never retries an fsync (the kernel may have
//! dropped the dirty pages it could not write) and never reports unsynced data as durable.
//!
//! **Recovery.** Opening a log after a crash keeps every whole batch and cuts a torn tail (a
//! partially written last append). Damage anywhere else is [`StorageError::Corrupt`]: loud, and
//! never silently cut or served.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;

use crate::{
    AppendInfo, Batch, CommittedOffset, CompactionPolicy, CompactionStats, LogConfig, LogOffsets,
    Offset, Result, Retention, StorageError, TopicPartition,
};

/// What [`PartitionLog::append_then`] calls with the outcome of the append.
pub type AppendDone = Box<dyn FnOnce(&Result<AppendInfo>) + Send + 'static>;

/// One partition's append-only log. Owned by exactly one partition actor; shared (`Arc`) with the
/// futures that actor spawns, so every method takes `&self`.
#[async_trait]
pub trait PartitionLog: Debug + Send + Sync + 'static {
    /// Appends `batches` in order and assigns their base offsets (written into each batch).
    ///
    /// Each batch must pass [`Batch::validate_for_append`]; if any fails, nothing is written.
    /// Returns once the log's [`Durability`](crate::Durability) is reached.
    ///
    /// # Errors
    /// [`StorageError::InvalidBatch`] (nothing written), an I/O error (the log is failed from
    /// then on, and whether the batches survive is unknown), or [`StorageError::Failed`].
    async fn append(&self, batches: Vec<Batch>) -> Result<AppendInfo>;

    /// [`PartitionLog::append`], calling `done` with the outcome as soon as it is known, on
    /// whichever thread finished the append, before the returned future resolves. A caller
    /// that acknowledges appends from `done` saves the hop back to its own thread (a
    /// backend that appends on blocking threads calls it there); everything else it does
    /// after the append can follow when the future resolves.
    async fn append_then(&self, batches: Vec<Batch>, done: AppendDone) -> Result<AppendInfo> {
        let result = self.append(batches).await;
        done(&result);
        result
    }

    /// Reads whole batches starting with the one that holds `from` (or, when compaction removed
    /// it, the first batch after it), in offset order.
    ///
    /// Stops before the batch that would take the total past `max_bytes`, but always returns at
    /// least one batch when `from` is below the log end, however large it is. The first batch
    /// may start before `from` (a consumer skips the records it did not ask for). `from == end`
    /// returns no batch.
    ///
    /// # Errors
    /// [`StorageError::OffsetOutOfRange`] when `from < start` or `from > end`; a corrupt batch
    /// is reported as [`StorageError::Corrupt`], never served.
    async fn read(&self, from: Offset, max_bytes: usize) -> Result<Vec<Batch>>;

    /// [`PartitionLog::read`] strictly within `max_bytes`: a first batch larger than that is
    /// not returned, so the answer may be empty below the log end. Kafka reads the partitions
    /// of a fetch after the first that returned records this way (without `minOneMessage`):
    /// they take only what fits in what the fetch has left.
    ///
    /// The default reads, then keeps the batches that fit; a backend that sees a batch's size
    /// before reading its body overrides it to leave a batch that does not fit unread.
    ///
    /// # Errors
    /// As [`PartitionLog::read`].
    async fn read_within(&self, from: Offset, max_bytes: usize) -> Result<Vec<Batch>> {
        let mut batches = self.read(from, max_bytes).await?;
        let mut total = 0usize;
        let fit = batches
            .iter()
            .take_while(|b| {
                total += b.len();
                total <= max_bytes
            })
            .count();
        batches.truncate(fit);
        Ok(batches)
    }

    /// The current start and end offsets and the log's size. Cheap: no I/O.
    fn offsets(&self) -> LogOffsets;

    /// The offset of the first record whose timestamp is at or after `timestamp_ms`, looking at
    /// batches from the log start in order (Kafka's ListOffsets by time), or `None` if no batch
    /// holds such a record.
    ///
    /// # Errors
    /// I/O errors, or a batch that fails to decode.
    async fn offset_for_time(&self, timestamp_ms: i64) -> Result<Option<Offset>>;

    /// The offset of the first record with the largest timestamp among the batches that start
    /// below `below` (Kafka's ListOffsets `MAX_TIMESTAMP`, -3: a batch's max timestamp, then
    /// the first of its records at that time), or `None` when no batch starts below it.
    ///
    /// The default reads every such batch ([`max_timestamp_by_scan`]); a backend that knows
    /// its segments' largest timestamps answers from them.
    ///
    /// # Errors
    /// I/O errors, or a batch that fails to decode.
    async fn max_timestamp_offset(&self, below: Offset) -> Result<Option<Offset>> {
        max_timestamp_by_scan(self, below).await
    }

    /// Moves the log start offset forward to `offset` (clamped to the log end); records below it
    /// become unreadable at once and the space of whole units below it is reclaimed. The new
    /// start survives reopen. Moving backwards is a no-op. Returns the start offset after the call.
    ///
    /// # Errors
    /// I/O errors while deleting files or persisting the start offset.
    async fn delete_before(&self, offset: Offset) -> Result<Offset>;

    /// Applies a retention policy at time `now_ms`, deleting whole units (segments, or batches for
    /// backends without segments) from the start of the log: by time, a unit whose newest
    /// timestamp is older than `now_ms - ms`; by size, the oldest units while the log without
    /// them still holds at least `bytes`. The log end never moves. Returns the new start offset.
    ///
    /// # Errors
    /// As [`PartitionLog::delete_before`].
    async fn enforce_retention(&self, retention: Retention, now_ms: i64) -> Result<Offset>;

    /// One compaction pass at `now_ms` (Kafka's log cleaner; the rules are in
    /// [`crate::compaction`]): over the log's closed part (sealed segments, or every batch but
    /// the newest for a backend without segments), keeps each key's latest record. Offsets do
    /// not change, nor do the start and end offsets; a concurrent read sees each replaced unit
    /// either before or after its replacement. Returns `None` without reading anything when too
    /// little is dirty ([`crate::compaction::CleanerCheckpoint::is_due`]).
    ///
    /// # Errors
    /// I/O errors (a failure while writing the replacement leaves the log as it was), or a
    /// corrupt batch.
    async fn compact(
        &self,
        policy: CompactionPolicy,
        now_ms: i64,
    ) -> Result<Option<CompactionStats>>;

    /// Stores `snapshot`, state its owner derived from this log (the broker keeps its
    /// idempotent producers there), in place of the previous one. The snapshot lives and dies
    /// with the log (deleting the log deletes it) and is replaced atomically and durably: after
    /// a crash, `load_snapshot` returns the old or the new one whole. Its bytes are the owner's;
    /// the owner also checks that a loaded snapshot still matches the log.
    ///
    /// # Errors
    /// I/O errors (the log itself stays usable), or [`StorageError::Closed`].
    async fn save_snapshot(&self, snapshot: &[u8]) -> Result<()>;

    /// The last snapshot saved with [`PartitionLog::save_snapshot`], if any.
    ///
    /// # Errors
    /// I/O errors, or [`StorageError::Closed`].
    async fn load_snapshot(&self) -> Result<Option<Vec<u8>>>;

    /// Makes everything appended so far durable (fsync, or the engine's flush).
    ///
    /// # Errors
    /// An I/O error, after which the log is failed.
    async fn sync(&self) -> Result<()>;

    /// Applies new settings to the open log (its topic's config was altered): appends from now
    /// on roll segments and reach durability as `cfg` says, as Kafka applies a topic's
    /// `segment.bytes` or flush settings without a restart. Data already written stays as it
    /// is. Returns at once: it never waits for I/O (an append or fsync in progress finishes
    /// under the old settings).
    fn reconfigure(&self, cfg: &LogConfig);

    /// Syncs and releases the log's resources; every later call returns [`StorageError::Closed`],
    /// except `close` itself, which returns `Ok` again.
    ///
    /// # Errors
    /// As [`PartitionLog::sync`].
    async fn close(&self) -> Result<()>;
}

/// A broker's storage: partition logs, broker metadata and consumer-group offsets.
///
/// Metadata is a small key-value store of opaque values (the broker serializes topic records
/// into it); group offsets are kept per group and partition. Every write here is durable and
/// atomic when it returns `Ok` (the segment backend writes, fsyncs, renames and fsyncs the
/// directory), whatever the logs' durability.
#[async_trait]
pub trait Storage: Debug + Send + Sync + 'static {
    /// A short name for logs and metrics: `memory`, `segment`, `sled`.
    fn name(&self) -> &'static str;

    /// Opens (creating if absent) the log of `tp`, running recovery on what is stored.
    ///
    /// A log must not be opened twice at once; the broker keeps one handle per partition.
    ///
    /// # Errors
    /// I/O errors, [`StorageError::Corrupt`] when recovery finds damage it may not cut, or
    /// [`StorageError::InvalidArgument`] for a partition it cannot store.
    async fn open_log(&self, tp: &TopicPartition, cfg: &LogConfig)
        -> Result<Arc<dyn PartitionLog>>;

    /// Deletes the log of `tp` and all its data. Deleting an absent log is not an error.
    /// The caller must have closed the log first.
    ///
    /// # Errors
    /// I/O errors.
    async fn delete_log(&self, tp: &TopicPartition) -> Result<()>;

    /// Every partition that has a log in this storage, sorted.
    ///
    /// # Errors
    /// I/O errors.
    async fn list_logs(&self) -> Result<Vec<TopicPartition>>;

    /// Stores `value` under `key` in the metadata store, replacing any old value.
    ///
    /// # Errors
    /// I/O errors, or [`StorageError::InvalidArgument`] for an empty key.
    async fn put_metadata(&self, key: &str, value: &[u8]) -> Result<()>;

    /// Removes `key` from the metadata store (absent keys are fine).
    ///
    /// # Errors
    /// I/O errors.
    async fn delete_metadata(&self, key: &str) -> Result<()>;

    /// Every metadata entry, sorted by key.
    ///
    /// # Errors
    /// I/O errors, or damaged metadata ([`StorageError::Corrupt`]).
    async fn list_metadata(&self) -> Result<Vec<(String, Vec<u8>)>>;

    /// Commits offsets for `group`, atomically as a whole: replaces the listed partitions' entries
    /// and keeps the group's others.
    ///
    /// # Errors
    /// I/O errors.
    async fn commit_offsets(
        &self,
        group: &str,
        offsets: &[(TopicPartition, CommittedOffset)],
    ) -> Result<()>;

    /// The committed offsets of `group`, sorted by partition; empty for an unknown group.
    ///
    /// # Errors
    /// I/O errors, or damaged offset data ([`StorageError::Corrupt`]).
    async fn fetch_offsets(&self, group: &str) -> Result<Vec<(TopicPartition, CommittedOffset)>>;

    /// Removes the listed partitions from `group`'s committed offsets (a deleted topic, an admin
    /// request); a group left without offsets is forgotten.
    ///
    /// # Errors
    /// I/O errors.
    async fn delete_offsets(&self, group: &str, partitions: &[TopicPartition]) -> Result<()>;

    /// Stores `state` for `group`, replacing what was stored before: the broker's record of the
    /// group's membership (generation, members, assignments; opaque here), written when a
    /// rebalance completes so that members carry on after a restart, as Kafka's group metadata
    /// in its offsets topic. Kept apart from the offsets: committing does not touch it.
    ///
    /// # Errors
    /// I/O errors.
    async fn put_group_state(&self, group: &str, state: &[u8]) -> Result<()>;

    /// What [`Storage::put_group_state`] last stored for `group`, if anything.
    ///
    /// # Errors
    /// I/O errors, or a damaged record ([`StorageError::Corrupt`]).
    async fn group_state(&self, group: &str) -> Result<Option<Vec<u8>>>;

    /// Every group that has committed offsets or a stored state, sorted.
    ///
    /// # Errors
    /// I/O errors.
    async fn list_groups(&self) -> Result<Vec<String>>;

    /// Forgets `group`: all its offsets and its state.
    ///
    /// # Errors
    /// I/O errors.
    async fn delete_group(&self, group: &str) -> Result<()>;

    /// Flushes everything the storage holds open; called once at broker shutdown.
    ///
    /// # Errors
    /// I/O errors.
    async fn close(&self) -> Result<()>;
}

/// Checks that `from` lies in `[start, end]`.
///
/// # Errors
/// [`StorageError::OffsetOutOfRange`] otherwise.
pub fn check_range(from: Offset, offsets: LogOffsets) -> Result<()> {
    if from < offsets.start || from > offsets.end {
        return Err(StorageError::OffsetOutOfRange {
            requested: from,
            start: offsets.start,
            end: offsets.end,
        });
    }
    Ok(())
}

/// The partition leader epoch every stored batch carries: Kafka's "no epoch".
pub const NO_LEADER_EPOCH: i32 = -1;

/// Validates a whole append and assigns base offsets from `end`, writing them into the batches.
/// Sets each batch's partition leader epoch to [`NO_LEADER_EPOCH`]. Returns the offsets assigned
/// and the new end. Nothing is changed when any batch is invalid.
///
/// Writing into a batch copies it when its bytes are shared (a batch decoded from a request is
/// a slice of the request's buffer); a backend that writes the bytes out rather than keeping the
/// `Batch` can use [`plan_offsets`] and [`Batch::stored_prefix`] instead and copy nothing.
///
/// # Errors
/// [`StorageError::InvalidBatch`] for the first batch that fails [`Batch::validate_for_append`],
/// or an empty append.
pub fn assign_offsets(batches: &mut [Batch], end: Offset) -> Result<AppendInfo> {
    let info = plan_offsets(batches, end)?;
    for (b, &base) in batches.iter_mut().zip(&info.base_offsets) {
        // Weir has no leader epochs yet; a fixed -1 (Kafka's "unknown") also lets recovery
        // check these four bytes, which the CRC does not cover.
        b.set_partition_leader_epoch(NO_LEADER_EPOCH);
        b.set_base_offset(base);
    }
    Ok(info)
}

/// Validates a whole append and computes the base offsets [`assign_offsets`] would give its
/// batches from `end`, and the new end, without changing the batches.
///
/// # Errors
/// As [`assign_offsets`].
pub fn plan_offsets(batches: &[Batch], end: Offset) -> Result<AppendInfo> {
    if batches.is_empty() {
        return Err(StorageError::InvalidBatch(crate::BatchError::Empty));
    }
    for b in batches {
        b.validate_for_append()?;
    }
    let mut next = end;
    let mut base_offsets = Vec::with_capacity(batches.len());
    for b in batches {
        base_offsets.push(next);
        next += i64::from(b.last_offset_delta()) + 1;
    }
    Ok(AppendInfo {
        base_offsets,
        end: next,
    })
}

/// [`PartitionLog::max_timestamp_offset`] by reading every batch from the log start to
/// `below`, a few MiB at a time: the earliest batch with the largest max timestamp (of a batch
/// the log start cuts, of its records from the start on), then the first of its records at
/// that time (its last offset if none is: a batch whose header claims more than its records).
///
/// # Errors
/// As [`PartitionLog::read`]; a batch that fails to decode.
pub async fn max_timestamp_by_scan<L: PartitionLog + ?Sized>(
    log: &L,
    below: Offset,
) -> Result<Option<Offset>> {
    let start = log.offsets().start;
    Ok(largest_timestamp(log, start, below)
        .await?
        .map(|(_, offset)| offset))
}

/// The largest timestamp among the batches from the one holding `from` (or the log start,
/// if later) to those starting below `below`, and the offset of the first record at that
/// time, as [`max_timestamp_by_scan`] finds them (which is this from the log start).
///
/// # Errors
/// As [`PartitionLog::read`]; a batch that fails to decode.
pub async fn largest_timestamp<L: PartitionLog + ?Sized>(
    log: &L,
    from: Offset,
    below: Offset,
) -> Result<Option<(i64, Offset)>> {
    let o = log.offsets();
    let (first, end) = (from.max(o.start), below.min(o.end));
    let mut at = first;
    let mut best: Option<(i64, Batch)> = None;
    'read: while at < end {
        let batches = log.read(at, 4 << 20).await?;
        if batches.is_empty() {
            break;
        }
        for b in batches {
            if b.base_offset() >= end {
                break 'read;
            }
            at = at.max(b.next_offset());
            // A batch cut by where the scan starts counts with its records from there on.
            let max = if b.base_offset() < first {
                let mut max = None;
                b.for_each_record(crate::batch::DEFAULT_MAX_UNCOMPRESSED_BYTES, |r| {
                    if r.offset >= first {
                        max = max.max(Some(r.record.timestamp_ms));
                    }
                    true
                })?;
                match max {
                    Some(max) => max,
                    None => continue,
                }
            } else {
                b.max_timestamp()
            };
            if best.as_ref().is_none_or(|(ts, _)| max > *ts) {
                best = Some((max, b));
            }
        }
    }
    let Some((ts, batch)) = best else {
        return Ok(None);
    };
    let mut found = None;
    batch.for_each_record(crate::batch::DEFAULT_MAX_UNCOMPRESSED_BYTES, |r| {
        if r.offset >= first && r.record.timestamp_ms == ts {
            found = Some(r.offset);
        }
        found.is_none()
    })?;
    Ok(Some((ts, found.unwrap_or_else(|| batch.last_offset()))))
}

/// The first offset in `batches` (in offset order) whose record timestamp is `>= timestamp_ms`,
/// decoding only the first batch whose max timestamp qualifies.
///
/// # Errors
/// A batch that fails to decode.
pub fn offset_for_time_in<'a>(
    batches: impl IntoIterator<Item = &'a Batch>,
    timestamp_ms: i64,
    start: Offset,
) -> Result<Option<Offset>> {
    for b in batches {
        if b.max_timestamp() < timestamp_ms || b.next_offset() <= start {
            continue;
        }
        // One record at a time: a stored batch's records may decode to far more than its size.
        let mut found = None;
        b.for_each_record(crate::batch::DEFAULT_MAX_UNCOMPRESSED_BYTES, |r| {
            if r.offset >= start && r.record.timestamp_ms >= timestamp_ms {
                found = Some(r.offset);
            }
            found.is_none()
        })?;
        if found.is_some() {
            return Ok(found);
        }
    }
    Ok(None)
}
