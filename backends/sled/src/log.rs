//! One partition log in sled: [`SledLog`].
//!
//! Data flow: `append` validates and assigns offsets under the writer lock, inserts the batches
//! of the call one by one (each atomic; sled recovers a prefix, so no holes), flushes as the log's
//! [`Durability`] asks, and only then publishes the new end offset. Readers take the published
//! offsets, so they never see a batch before its `append` has finished, and never past the end.
//!
//! Compaction runs its passes (`weir_storage::compaction::pass_over_batches`) over the tree
//! without the writer lock, then takes it to persist the new `compacted_upto` in the log's
//! state (below it a gap between batches is what compaction removed) and to replace or remove
//! the batches that changed, skipping any that retention deleted meanwhile.
//!
//! Every operation that touches sled runs on a blocking thread (`spawn_blocking`) together with
//! an owned read guard of the log's `gate`. `close` takes the gate for writing, so it waits for
//! every operation in flight, even one whose caller gave up waiting, and then drops the log's
//! sled handles: after `close` returns the log holds no reference to the database.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::RwLock;
use weir_storage::compaction::{pass_over_batches, Cleaned, CleanerCheckpoint};
use weir_storage::log::{assign_offsets, check_range, offset_for_time_in};
use weir_storage::retention::{retention_cut, Unit};
use weir_storage::{
    AppendInfo, Batch, CompactionPolicy, CompactionStats, Durability, LogConfig, LogOffsets,
    Offset, PartitionLog, Result, Retention, StorageError, TopicPartition,
};

use crate::codec::{decode_offset_key, encode_log_state, offset_key, LogState};
use crate::{lock, map_sled, run_blocking};

/// Fail-stop state shared by a log or a storage: the first engine error, kept forever.
#[derive(Debug, Default)]
pub(crate) struct FailStop(OnceLock<String>);

impl FailStop {
    /// `Failed` once an engine error was recorded.
    pub(crate) fn check(&self) -> Result<()> {
        match self.0.get() {
            Some(reason) => Err(StorageError::Failed {
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Records `err` (the first one wins) and hands it back.
    pub(crate) fn record(&self, err: StorageError) -> StorageError {
        let _first = self.0.set(err.to_string());
        err
    }
}

/// The sled handles a log needs. Dropped by `close`, which is what lets the database go.
pub(crate) struct LogHandles {
    pub(crate) db: sled::Db,
    pub(crate) data: sled::Tree,
    pub(crate) logs: sled::Tree,
    /// Owners' snapshots, under the same key as the log's state in `logs`.
    pub(crate) snapshots: sled::Tree,
    /// Compaction checkpoints, under the same key.
    pub(crate) cleaners: sled::Tree,
}

/// State only writers (append, retention, sync) touch, under `LogShared::writer`.
#[derive(Debug)]
struct Writer {
    /// The end offset; equal to the published end outside an append.
    end: Offset,
    /// When the last flush that covered everything appended so far started.
    last_flush: Instant,
}

/// Everything about one open log; shared by the [`SledLog`] handle and the storage's registry
/// (which closes logs still open when the storage closes).
pub(crate) struct LogShared {
    tp: TopicPartition,
    /// The batches tree, for error reports.
    tree_path: PathBuf,
    /// This log's key in the `logs` tree.
    state_key: Vec<u8>,
    /// Replaced by `reconfigure`; read once per append.
    durability: Mutex<Durability>,
    /// `None` once closed. Operations hold a read guard for as long as they use the handles.
    gate: Arc<RwLock<Option<LogHandles>>>,
    closed: AtomicBool,
    /// Serializes append, retention and sync; held only on blocking threads.
    writer: Mutex<Writer>,
    /// What readers may see; updated after the write (and flush) it describes.
    published: Mutex<LogOffsets>,
    /// Below this offset compaction may have left gaps; persisted in the log's state first.
    compacted_upto: AtomicI64,
    /// Serializes compaction passes; where the last one stopped.
    cleaner: Mutex<CleanerCheckpoint>,
    fail: FailStop,
}

/// What recovery found when opening a log.
pub(crate) struct Recovered {
    pub(crate) tp: TopicPartition,
    pub(crate) tree_path: PathBuf,
    pub(crate) state_key: Vec<u8>,
    pub(crate) durability: Durability,
    pub(crate) handles: LogHandles,
    pub(crate) offsets: LogOffsets,
    pub(crate) compacted_upto: Offset,
    /// Where the last compaction pass stopped, as persisted.
    pub(crate) cleaner: CleanerCheckpoint,
}

impl LogShared {
    pub(crate) fn new(r: Recovered) -> Arc<LogShared> {
        Arc::new(LogShared {
            tp: r.tp,
            tree_path: r.tree_path,
            state_key: r.state_key,
            durability: Mutex::new(r.durability),
            gate: Arc::new(RwLock::new(Some(r.handles))),
            closed: AtomicBool::new(false),
            writer: Mutex::new(Writer {
                end: r.offsets.end,
                last_flush: Instant::now(),
            }),
            published: Mutex::new(r.offsets),
            compacted_upto: AtomicI64::new(r.compacted_upto),
            cleaner: Mutex::new(r.cleaner),
            fail: FailStop::default(),
        })
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    fn offsets(&self) -> LogOffsets {
        *lock(&self.published)
    }

    /// Maps a sled error and makes the log fail-stop.
    fn engine(&self, context: &str, e: sled::Error) -> StorageError {
        self.fail.record(map_sled(context, &self.tree_path, e))
    }

    /// Decodes and re-validates (CRC included) a stored batch.
    fn decode(&self, key: &[u8], value: &[u8]) -> Result<Batch> {
        let corrupt = |position: u64, detail: String| StorageError::Corrupt {
            path: self.tree_path.clone(),
            position,
            detail,
        };
        let base = decode_offset_key(key)
            .ok_or_else(|| corrupt(0, format!("batch key of {} bytes, expected 8", key.len())))?;
        let position = u64::try_from(base).unwrap_or(0);
        let batch = Batch::new(Bytes::copy_from_slice(value))
            .map_err(|e| corrupt(position, format!("batch stored at offset {base}: {e}")))?;
        if batch.base_offset() != base {
            return Err(corrupt(
                position,
                format!(
                    "batch stored at offset {base} says base offset {}",
                    batch.base_offset()
                ),
            ));
        }
        Ok(batch)
    }

    /// The error for a batch that should hold `at` but is missing: a concurrent `delete_before`
    /// moved the start past `from` (out of range, as if the read came a moment later), or a hole.
    fn missing(&self, from: Offset, at: Offset) -> StorageError {
        let now = self.offsets();
        if from < now.start {
            return StorageError::OffsetOutOfRange {
                requested: from,
                start: now.start,
                end: now.end,
            };
        }
        StorageError::Corrupt {
            path: self.tree_path.clone(),
            position: u64::try_from(at).unwrap_or(0),
            detail: format!(
                "no batch holds offset {at}, inside the log [{}, {})",
                now.start, now.end
            ),
        }
    }

    fn flush(&self, h: &LogHandles, w: &mut Writer) -> Result<()> {
        let began = Instant::now();
        h.db.flush().map_err(|e| self.engine("flushing", e))?;
        w.last_flush = began;
        Ok(())
    }

    fn append(&self, h: &LogHandles, mut batches: Vec<Batch>) -> Result<AppendInfo> {
        let mut w = lock(&self.writer);
        let info = assign_offsets(&mut batches, w.end)?;
        // One insert per batch rather than one `apply_batch` per append: the contract asks
        // for atomicity per batch only, sled recovers its log as a prefix (so no holes), and
        // `apply_batch` takes sled's database-wide concurrency-control write lock, which under
        // sustained load deadlocks against sled's own flusher thread in 0.34.7 (sled issue
        // #1412; reproduced here by the 1 KiB `interval` append benchmark).
        let mut bytes = 0u64;
        for b in &batches {
            h.data
                .insert(offset_key(b.base_offset()), b.as_bytes().as_ref())
                .map_err(|e| self.engine("writing batches", e))?;
            bytes += b.len() as u64;
        }
        let durability = *lock(&self.durability);
        match durability {
            Durability::None => {}
            Durability::Interval { interval_ms } => {
                if w.last_flush.elapsed() >= Duration::from_millis(interval_ms) {
                    self.flush(h, &mut w)?;
                }
            }
            Durability::Always => self.flush(h, &mut w)?,
        }
        w.end = info.end;
        let mut p = lock(&self.published);
        p.end = info.end;
        p.size_bytes += bytes;
        Ok(info)
    }

    /// Batches from `from` (see [`PartitionLog::read`]); without `min_one_batch`, a first batch
    /// larger than `max_bytes` is left undecoded and nothing is returned.
    fn read(
        &self,
        h: &LogHandles,
        from: Offset,
        max_bytes: usize,
        min_one_batch: bool,
    ) -> Result<Vec<Batch>> {
        let offsets = self.offsets();
        check_range(from, offsets)?;
        if from == offsets.end {
            return Ok(Vec::new());
        }
        let sled_err = |e| self.engine("reading batches", e);
        let compacted_upto = self.compacted_upto.load(Ordering::Acquire);
        // The batch at or before `from`, if it holds `from` by its header (decoding checks it).
        let at_or_before = h
            .data
            .range(..=offset_key(from))
            .next_back()
            .transpose()
            .map_err(sled_err)?
            .filter(|(key, value)| stored_next_offset(key, value).is_none_or(|n| n > from));
        let (key, value) = match at_or_before {
            Some(pair) => pair,
            None => {
                // Compaction removed what held `from`: serve the batch after the gap (never one
                // at or past the published end, which may be an append in flight).
                if from >= compacted_upto {
                    return Err(self.missing(from, from));
                }
                let after = h
                    .data
                    .range(offset_key(from + 1)..offset_key(offsets.end))
                    .next()
                    .transpose()
                    .map_err(sled_err)?;
                let Some(pair) = after else {
                    return Err(self.missing(from, from));
                };
                pair
            }
        };
        if !min_one_batch && value.len() > max_bytes {
            return Ok(Vec::new());
        }
        let first = self.decode(&key, &value)?;
        let mut next = first.next_offset();
        let mut total = first.len();
        let mut out = vec![first];
        // Batches at or past the published end may be an append in flight: never served.
        for item in h.data.range(offset_key(next)..offset_key(offsets.end)) {
            let (key, value) = item.map_err(sled_err)?;
            // The stored value is the whole batch: one that does not fit is not decoded.
            total = total.saturating_add(value.len());
            if total > max_bytes {
                break;
            }
            let batch = self.decode(&key, &value)?;
            let gap_ok = next < compacted_upto && batch.base_offset() > next;
            if batch.base_offset() != next && !gap_ok {
                return Err(self.missing(from, next));
            }
            next = batch.next_offset();
            out.push(batch);
        }
        Ok(out)
    }

    fn offset_for_time(&self, h: &LogHandles, timestamp_ms: i64) -> Result<Option<Offset>> {
        let offsets = self.offsets();
        let sled_err = |e| self.engine("scanning for a timestamp", e);
        // Start at the batch holding the start offset; sled has no time index, so this scans.
        let first = h
            .data
            .range(..=offset_key(offsets.start))
            .next_back()
            .transpose()
            .map_err(sled_err)?
            .and_then(|(k, _)| decode_offset_key(&k))
            .unwrap_or(offsets.start);
        for item in h.data.range(offset_key(first)..offset_key(offsets.end)) {
            let (key, value) = item.map_err(sled_err)?;
            let batch = self.decode(&key, &value)?;
            let found = offset_for_time_in(std::iter::once(&batch), timestamp_ms, offsets.start)
                .map_err(|e| match e {
                    StorageError::InvalidBatch(e) => StorageError::Corrupt {
                        path: self.tree_path.clone(),
                        position: u64::try_from(batch.base_offset()).unwrap_or(0),
                        detail: format!("records of batch {}: {e}", batch.base_offset()),
                    },
                    other => other,
                })?;
            if found.is_some() {
                return Ok(found);
            }
        }
        Ok(None)
    }

    /// Moves the start to `target` (clamped to `[start, end]`), deleting the batches that lie
    /// entirely below it. Caller holds the writer lock.
    fn move_start(&self, h: &LogHandles, w: &Writer, target: Offset) -> Result<Offset> {
        let offsets = self.offsets();
        let new_start = target.min(w.end).max(offsets.start);
        if new_start == offsets.start {
            return Ok(new_start);
        }
        // Every batch with a base <= new_start lies below it except the last one, which holds
        // new_start, unless new_start is the end. Keys and value sizes are enough.
        let mut doomed: Vec<(sled::IVec, u64)> = Vec::new();
        for item in h.data.range(..=offset_key(new_start)) {
            let (key, value) = item.map_err(|e| self.engine("finding batches to delete", e))?;
            doomed.push((key, value.len() as u64));
        }
        if new_start < w.end {
            doomed.pop();
        }
        // Readers see the new start at once; then the state, then the batches. sled recovers a
        // prefix of its writes, so a crash in between leaves batches below a persisted start,
        // which recovery removes; never a start below missing batches.
        lock(&self.published).start = new_start;
        let state = LogState {
            start: new_start,
            end: w.end,
            compacted_upto: self.compacted_upto.load(Ordering::Acquire),
        };
        h.logs
            .insert(self.state_key.as_slice(), encode_log_state(state))
            .map_err(|e| self.engine("persisting the start offset", e))?;
        // Removed one by one, not with `apply_batch` (see `append`): a crash midway leaves
        // batches below the persisted start, which recovery removes.
        let mut freed = 0u64;
        for (key, size) in doomed {
            h.data
                .remove(key)
                .map_err(|e| self.engine("deleting batches", e))?;
            freed += size;
        }
        h.db.flush()
            .map_err(|e| self.engine("flushing a new start offset", e))?;
        let mut p = lock(&self.published);
        p.size_bytes = p.size_bytes.saturating_sub(freed);
        Ok(new_start)
    }

    fn delete_before(&self, h: &LogHandles, offset: Offset) -> Result<Offset> {
        let w = lock(&self.writer);
        self.move_start(h, &w, offset)
    }

    fn enforce_retention(
        &self,
        h: &LogHandles,
        retention: Retention,
        now_ms: i64,
    ) -> Result<Offset> {
        let w = lock(&self.writer);
        let offsets = self.offsets();
        let mut bases = Vec::new();
        let mut failure = None;
        // One unit per stored batch, oldest first, read lazily: retention_cut stops at the
        // first batch that stays.
        let units = h.data.range(..offset_key(w.end)).map_while(|item| {
            let decoded = item
                .map_err(|e| self.engine("scanning for retention", e))
                .and_then(|(k, v)| self.decode(&k, &v));
            match decoded {
                Ok(b) => {
                    bases.push(b.base_offset());
                    Some(Unit {
                        max_timestamp_ms: b.max_timestamp(),
                        size_bytes: b.len() as u64,
                    })
                }
                Err(e) => {
                    failure = Some(e);
                    None
                }
            }
        });
        let cut = retention_cut(units, offsets.size_bytes, retention, now_ms);
        if let Some(e) = failure {
            return Err(e);
        }
        if cut == 0 {
            return Ok(offsets.start);
        }
        let new_start = bases.get(cut).copied().unwrap_or(w.end);
        self.move_start(h, &w, new_start)
    }

    fn sync(&self, h: &LogHandles) -> Result<()> {
        let mut w = lock(&self.writer);
        self.flush(h, &mut w)
    }

    fn compact(
        &self,
        h: &LogHandles,
        policy: CompactionPolicy,
        now_ms: i64,
    ) -> Result<Option<CompactionStats>> {
        let mut checkpoint = lock(&self.cleaner);
        let offsets = self.offsets();
        let scan = || {
            h.data
                .range(..offset_key(offsets.end))
                .map(|item| {
                    let (k, v) = item.map_err(|e| self.engine("scanning for compaction", e))?;
                    self.decode(&k, &v)
                })
                .filter(|b| b.as_ref().map_or(true, |b| b.next_offset() > offsets.start))
        };
        let Some((changes, stats)) = pass_over_batches(scan, &checkpoint, &policy, now_ms)? else {
            return Ok(None);
        };
        let w = lock(&self.writer);
        if stats.cleaned_upto > self.compacted_upto.load(Ordering::Acquire) {
            let state = LogState {
                start: self.offsets().start,
                end: w.end,
                compacted_upto: stats.cleaned_upto,
            };
            h.logs
                .insert(self.state_key.as_slice(), encode_log_state(state))
                .map_err(|e| self.engine("persisting the compacted offset", e))?;
            self.compacted_upto
                .store(stats.cleaned_upto, Ordering::Release);
        }
        let mut freed = 0u64;
        let mut added = 0u64;
        for (base, cleaned) in changes {
            let key = offset_key(base);
            // Retention may have deleted it since the pass read it.
            let Some(old) = h
                .data
                .get(key)
                .map_err(|e| self.engine("compacting batches", e))?
            else {
                continue;
            };
            match cleaned {
                Cleaned::Removed => {
                    h.data
                        .remove(key)
                        .map_err(|e| self.engine("compacting batches", e))?;
                }
                Cleaned::Rewritten(b) => {
                    h.data
                        .insert(key, b.as_bytes().as_ref())
                        .map_err(|e| self.engine("compacting batches", e))?;
                    added += b.len() as u64;
                }
                Cleaned::Unchanged => continue,
            }
            freed += old.len() as u64;
        }
        *checkpoint = CleanerCheckpoint::after(&stats);
        h.cleaners
            .insert(self.state_key.as_slice(), checkpoint.encode())
            .map_err(|e| self.engine("persisting the compaction checkpoint", e))?;
        h.db.flush()
            .map_err(|e| self.engine("flushing a compaction", e))?;
        drop(w);
        let mut p = lock(&self.published);
        p.size_bytes = (p.size_bytes + added).saturating_sub(freed);
        Ok(Some(stats))
    }

    /// Runs `f` on a blocking thread with the log's handles, unless the log is closed or failed.
    async fn run<T, F>(self: &Arc<Self>, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&LogShared, &LogHandles) -> Result<T> + Send + 'static,
    {
        if self.is_closed() {
            return Err(StorageError::Closed);
        }
        self.fail.check()?;
        let guard = Arc::clone(&self.gate).read_owned().await;
        let shared = Arc::clone(self);
        let result = run_blocking(move || {
            let handles = guard.as_ref().ok_or(StorageError::Closed)?;
            shared.fail.check()?;
            f(&shared, handles)
        })
        .await;
        result.map_err(|e| match e {
            // A panic or cancelled task leaves the log in an unknown state.
            StorageError::Backend(_) => self.fail.record(e),
            other => other,
        })
    }

    /// Flushes and drops the handles once every operation in flight is done. Idempotent.
    pub(crate) async fn close(self: &Arc<Self>) -> Result<()> {
        let mut gate = Arc::clone(&self.gate).write_owned().await;
        self.closed.store(true, Ordering::Release);
        let Some(handles) = gate.take() else {
            return Ok(());
        };
        let shared = Arc::clone(self);
        run_blocking(move || {
            let result = shared.fail.check().and_then(|()| {
                handles
                    .db
                    .flush()
                    .map(drop)
                    .map_err(|e| shared.engine("flushing on close", e))
            });
            // Dropping sled handles can do I/O; it happens here, off the async threads.
            drop(handles);
            result
        })
        .await
    }
}

/// One partition's log in sled, opened by [`crate::SledStorage`]'s `open_log`.
///
/// Cheap to share (`Arc`); every method is safe to call concurrently, and appends are
/// serialized inside the log.
pub struct SledLog {
    shared: Arc<LogShared>,
}

impl SledLog {
    pub(crate) fn new(shared: Arc<LogShared>) -> SledLog {
        SledLog { shared }
    }
}

impl std::fmt::Debug for SledLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledLog")
            .field("tp", &self.shared.tp)
            .field("durability", &*lock(&self.shared.durability))
            .field("offsets", &self.shared.offsets())
            .field("closed", &self.shared.is_closed())
            .finish_non_exhaustive()
    }
}

/// The offset after a stored batch, from its key and header, without decoding it; `None` when
/// either is too short (decoding then reports the damage).
fn stored_next_offset(key: &[u8], value: &[u8]) -> Option<Offset> {
    let base = decode_offset_key(key)?;
    let last_delta = i32::from_be_bytes(value.get(23..27)?.try_into().ok()?);
    Some(base + Offset::from(last_delta) + 1)
}

#[async_trait]
impl PartitionLog for SledLog {
    fn reconfigure(&self, cfg: &LogConfig) {
        // Sled has no segments of ours: only when appends flush changes.
        *lock(&self.shared.durability) = cfg.durability;
    }

    async fn append(&self, batches: Vec<Batch>) -> Result<AppendInfo> {
        self.shared.run(move |s, h| s.append(h, batches)).await
    }

    async fn read(&self, from: Offset, max_bytes: usize) -> Result<Vec<Batch>> {
        self.shared
            .run(move |s, h| s.read(h, from, max_bytes, true))
            .await
    }

    async fn read_within(&self, from: Offset, max_bytes: usize) -> Result<Vec<Batch>> {
        self.shared
            .run(move |s, h| s.read(h, from, max_bytes, false))
            .await
    }

    fn offsets(&self) -> LogOffsets {
        self.shared.offsets()
    }

    async fn offset_for_time(&self, timestamp_ms: i64) -> Result<Option<Offset>> {
        self.shared
            .run(move |s, h| s.offset_for_time(h, timestamp_ms))
            .await
    }

    async fn delete_before(&self, offset: Offset) -> Result<Offset> {
        self.shared
            .run(move |s, h| s.delete_before(h, offset))
            .await
    }

    async fn enforce_retention(&self, retention: Retention, now_ms: i64) -> Result<Offset> {
        self.shared
            .run(move |s, h| s.enforce_retention(h, retention, now_ms))
            .await
    }

    async fn compact(
        &self,
        policy: CompactionPolicy,
        now_ms: i64,
    ) -> Result<Option<CompactionStats>> {
        self.shared
            .run(move |s, h| s.compact(h, policy, now_ms))
            .await
    }

    async fn sync(&self) -> Result<()> {
        self.shared.run(|s, h| s.sync(h)).await
    }

    async fn save_snapshot(&self, snapshot: &[u8]) -> Result<()> {
        let snapshot = snapshot.to_vec();
        self.shared
            .run(move |s, h| {
                // Not through the fail-stop: a snapshot that could not be written leaves the
                // log intact. The flush makes it durable, as the trait promises.
                let engine = |e: sled::Error| {
                    StorageError::Backend(format!("saving the snapshot of {}: {e}", s.tp))
                };
                h.snapshots
                    .insert(s.state_key.as_slice(), snapshot)
                    .map_err(engine)?;
                h.db.flush().map_err(engine)?;
                Ok(())
            })
            .await
    }

    async fn load_snapshot(&self) -> Result<Option<Vec<u8>>> {
        self.shared
            .run(|s, h| {
                h.snapshots
                    .get(s.state_key.as_slice())
                    .map(|v| v.map(|v| v.to_vec()))
                    .map_err(|e| {
                        StorageError::Backend(format!("loading the snapshot of {}: {e}", s.tp))
                    })
            })
            .await
    }

    async fn close(&self) -> Result<()> {
        self.shared.close().await
    }
}
