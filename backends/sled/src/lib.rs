//! # weir-sled: Weir's storage backend on the sled embedded database (0.34)
//!
//! One [`SledStorage`] owns one `sled::Db` in one directory. Inside it:
//!
//! | tree | key | value |
//! |---|---|---|
//! | `log:<topic>:<partition>` (one per log; topic bytes outside `[A-Za-z0-9._-]` as `%XX`) | base offset, 8 bytes big-endian | the batch, byte for byte |
//! | `logs` | the partition (order-preserving encoding) | the log's start offset and a lower bound of its end offset |
//! | `snapshots` | as in `logs` | the log owner's snapshot (`save_snapshot`) |
//! | `cleaners` | as in `logs` | where the last compaction pass stopped (`CleanerCheckpoint::encode`) |
//! | `metadata` | the key (UTF-8) | the opaque value |
//! | `offsets` | group, then partition (order-preserving encoding) | the [`CommittedOffset`], a small versioned binary layout |
//!
//! The default tree holds only a format marker. Keys sort the way the contract lists things, so
//! `list_logs`, `list_metadata`, `fetch_offsets` and `list_groups` are ordered scans.
//!
//! ## Data flow
//! [`SledLog::append`](weir_storage::PartitionLog::append) validates and assigns offsets under
//! the log's writer lock (one append at a time), inserts the batches of the call one by one
//! (each atomic; sled recovers a prefix of its writes, so never a hole; `apply_batch` is avoided
//! on this path because it deadlocks against sled's flusher under load, sled #1412), flushes as the
//! log's [`Durability`](weir_storage::Durability) asks, and only then publishes the new end
//! offset, which bounds every read. Start, end and size live in memory, so `offsets()` does no
//! I/O. Reads find the batch holding `from` with `range(..=from).next_back()` and walk forward,
//! re-checking every batch's CRC (a bad one is [`StorageError::Corrupt`], never served).
//! Retention deletes whole batches (a batch is the unit given to
//! [`retention_cut`](weir_storage::retention::retention_cut)), persists the new start in `logs`
//! before deleting, and flushes.
//!
//! ## Durability: weaker than the segment backend, know what you get
//! sled acknowledges a write once it is in its in-memory log buffers, **before** it reaches the
//! disk; a background thread flushes every `flush_every_ms` (500 ms by default, see
//! [`SledConfig`]). So:
//! - `Durability::None`: a process crash or power loss can lose the writes of the last flush
//!   interval even though `append` returned `Ok`. (The segment backend's `None` survives a
//!   process crash; sled's does not.)
//! - `Durability::Interval`: an append flushes when this log's last flush is older than the
//!   interval; between flushes the same loss window applies.
//! - `Durability::Always`: every append calls sled's `flush` (write and fsync) before it
//!   returns, so an acknowledged batch survives a crash. This is what `acks=all` relies on.
//!
//! A flush is database-wide: one flush makes every log's writes durable, which is group commit
//! across partitions for free. Metadata and group-offset writes always flush before returning.
//!
//! ## Format stability
//! sled 0.34's on-disk format is not stable across sled major versions (before 1.0 that means
//! any 0.x bump, and sled 1.0 is a rewrite with a new format): a directory written by this crate
//! can only be opened by a build using sled 0.34. Moving to another sled version or backend
//! means reading every log and store through a 0.34 build and writing them to the new one. The
//! `weir-sled-format` marker in the default tree versions this crate's own layout on top.
//!
//! ## Threads, failure and closing
//! - Every sled call that can do I/O runs in `tokio::task::spawn_blocking`, never on an async
//!   worker thread. [`SledStorage::open`] itself blocks (sled recovery); call it from a blocking
//!   context.
//! - Fail-stop: the first sled error in a log (a write, flush or read failing inside the engine)
//!   is recorded, and every later call on that log returns [`StorageError::Failed`]; nothing is
//!   retried. The storage handle does the same for metadata and offset writes.
//! - sled locks its directory while any handle to the database lives. `close` on a log waits
//!   for its operations in flight (even ones whose caller stopped waiting: the read guard travels
//!   with the blocking work) and drops its handles; `close` on the storage closes every log still
//!   open, then drops the database on a blocking thread, which joins sled's flusher. No handle of
//!   this crate outlives `close`. sled's own I/O pool may keep the file (and its lock) a few ms
//!   longer while it finishes a truncation (sled #1234); reopening in the same process waits for
//!   that, boundedly, and only for that (see `directory.rs`). A second storage on a directory
//!   that is open (here or in another process) is refused at once.
//!
//! ## Costs
//! Opening a log reads and CRC-checks all its batches (recovery, and the log's size). sled has
//! no time index, so `offset_for_time` scans batches from the start offset until it finds one.

// Weir's shipped code has no unsafe code (the workspace denies it; only a benchmark's calls
// into librdkafka are allowed it).
#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::indexing_slicing)]

mod codec;
mod directory;
mod log;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};

use async_trait::async_trait;
use tokio::sync::{Mutex, RwLock};
use weir_storage::compaction::CleanerCheckpoint;
use weir_storage::{
    CommittedOffset, LogConfig, LogOffsets, Offset, PartitionLog, Result, Storage, StorageError,
    TopicPartition,
};

use crate::codec::LogState;
use crate::directory::DirectoryClaim;
pub use crate::log::SledLog;
use crate::log::{FailStop, LogHandles, LogShared, Recovered};

/// The key of the format marker in sled's default tree, and the format this crate writes.
const FORMAT_KEY: &[u8] = b"weir-sled-format";
const FORMAT_VERSION: &[u8] = b"1";

/// Tuning of the sled engine under a [`SledStorage`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SledConfig {
    /// The size of sled's page cache, in bytes.
    pub cache_capacity_bytes: u64,
    /// How often sled's background thread flushes, in ms; `None` turns it off, leaving only
    /// the flushes of `Durability::Always`/`Interval`, `sync` and the metadata stores. This is
    /// the window of acknowledged writes a crash can lose under `Durability::None`.
    pub flush_every_ms: Option<u64>,
}

impl Default for SledConfig {
    /// sled's own defaults: a 1 GiB cache and a flush every 500 ms.
    fn default() -> Self {
        SledConfig {
            cache_capacity_bytes: 1024 * 1024 * 1024,
            flush_every_ms: Some(500),
        }
    }
}

/// Maps a sled error: I/O stays I/O, detected corruption is [`StorageError::Corrupt`], the rest
/// is [`StorageError::Backend`].
pub(crate) fn map_sled(context: &str, path: &Path, e: sled::Error) -> StorageError {
    match e {
        sled::Error::Io(source) => StorageError::io(context, source),
        sled::Error::Corruption { at, .. } => StorageError::Corrupt {
            path: path.to_path_buf(),
            position: 0,
            detail: format!("sled detected corruption while {context} (at {at:?})"),
        },
        other => StorageError::Backend(format!("sled error while {context}: {other}")),
    }
}

/// Locks a mutex whose data stays consistent even if a holder panicked (every critical section
/// in this crate assigns whole values), so poisoning is not an error.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Runs blocking work off the async threads. A panic (a bug) or a runtime shutting down comes
/// back as [`StorageError::Backend`].
pub(crate) async fn run_blocking<T, F>(f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StorageError::Backend(format!("blocking storage task did not finish: {e}")))?
}

/// The handles of the storage-level trees. Dropping the last one releases the database.
#[derive(Clone)]
struct Handles {
    db: sled::Db,
    logs: sled::Tree,
    /// Partition logs' owner snapshots, keyed like `logs`.
    snapshots: sled::Tree,
    /// Partition logs' compaction checkpoints (`CleanerCheckpoint::encode`), keyed like `logs`.
    cleaners: sled::Tree,
    metadata: sled::Tree,
    offsets: sled::Tree,
    /// Groups' stored states (`Storage::put_group_state`), keyed by group name.
    group_states: sled::Tree,
}

struct StorageShared {
    path: PathBuf,
    /// `None` once closed; operations hold a read guard while they use the handles.
    gate: Arc<RwLock<Option<Handles>>>,
    /// Logs opened through this storage, so `close` can close those still open and
    /// `open_log` can refuse a second handle. Locked after `gate`, never before.
    open_logs: Mutex<BTreeMap<TopicPartition, Weak<LogShared>>>,
    fail: FailStop,
    /// This process's hold on the directory. Declared after `gate` so that, when the storage
    /// is dropped without `close`, the database goes before the claim.
    claim: DirectoryClaim,
}

impl StorageShared {
    fn engine(&self, context: &str, e: sled::Error) -> StorageError {
        self.fail.record(map_sled(context, &self.path, e))
    }

    fn corrupt(&self, tree: &str, detail: String) -> StorageError {
        StorageError::Corrupt {
            path: self.path.join(tree),
            position: 0,
            detail,
        }
    }

    /// Runs `f` on a blocking thread with the storage's handles, unless closed or failed.
    async fn run<T, F>(self: &Arc<Self>, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&StorageShared, &Handles) -> Result<T> + Send + 'static,
    {
        let guard = Arc::clone(&self.gate).read_owned().await;
        let shared = Arc::clone(self);
        run_blocking(move || {
            let handles = guard.as_ref().ok_or(StorageError::Closed)?;
            shared.fail.check()?;
            f(&shared, handles)
        })
        .await
    }

    fn flush(&self, h: &Handles, context: &str) -> Result<()> {
        h.db.flush().map(drop).map_err(|e| self.engine(context, e))
    }

    /// Opens (creating if absent) the trees of `tp` and recovers the log's offsets.
    fn open_log(&self, h: &Handles, tp: TopicPartition, cfg: &LogConfig) -> Result<Recovered> {
        let state_key = codec::tp_key(&tp);
        let name = codec::log_tree_name(&tp);
        let tree_path = self.path.join(&name);
        let state = h
            .logs
            .get(&state_key)
            .map_err(|e| self.engine("reading a log's state", e))?;
        let data =
            h.db.open_tree(&name)
                .map_err(|e| self.engine("opening a log tree", e))?;
        let (offsets, compacted_upto) = match state {
            None => {
                // A tree without state is what an interrupted delete_log leaves: start over.
                data.clear()
                    .map_err(|e| self.engine("clearing a stale log tree", e))?;
                let fresh = LogState {
                    start: 0,
                    end: 0,
                    compacted_upto: 0,
                };
                h.logs
                    .insert(&state_key, codec::encode_log_state(fresh))
                    .map_err(|e| self.engine("creating a log", e))?;
                self.flush(h, "creating a log")?;
                (LogOffsets::default(), 0)
            }
            Some(raw) => {
                let state = codec::decode_log_state(&raw).ok_or_else(|| {
                    self.corrupt("logs", format!("unreadable state of log {tp}: {raw:?}"))
                })?;
                (
                    self.recover(&data, &tree_path, state)?,
                    state.compacted_upto,
                )
            }
        };
        let cleaner = h
            .cleaners
            .get(&state_key)
            .map_err(|e| self.engine("reading a log's compaction checkpoint", e))?
            .and_then(|b| CleanerCheckpoint::decode(&b, offsets.end))
            .unwrap_or_default();
        Ok(Recovered {
            tp,
            tree_path,
            state_key,
            durability: cfg.durability,
            handles: LogHandles {
                db: h.db.clone(),
                data,
                logs: h.logs.clone(),
                snapshots: h.snapshots.clone(),
                cleaners: h.cleaners.clone(),
            },
            offsets,
            compacted_upto,
            cleaner,
        })
    }

    /// Checks every batch of a log (key, CRC, density) and computes its offsets and size.
    /// Batches wholly below the persisted start are leftovers of an interrupted deletion and
    /// are removed; anything else out of place is corruption.
    fn recover(&self, data: &sled::Tree, tree_path: &Path, state: LogState) -> Result<LogOffsets> {
        let corrupt = |position: Offset, detail: String| StorageError::Corrupt {
            path: tree_path.to_path_buf(),
            position: u64::try_from(position).unwrap_or(0),
            detail,
        };
        let mut leftovers = sled::Batch::default();
        let mut any_leftover = false;
        let mut next: Option<Offset> = None;
        let mut size_bytes = 0u64;
        for item in data.iter() {
            let (key, value) = item.map_err(|e| self.engine("recovering a log", e))?;
            let base = codec::decode_offset_key(&key)
                .ok_or_else(|| corrupt(0, format!("batch key of {} bytes", key.len())))?;
            let batch = weir_storage::Batch::new(bytes::Bytes::copy_from_slice(&value))
                .map_err(|e| corrupt(base, format!("batch stored at offset {base}: {e}")))?;
            if batch.base_offset() != base {
                return Err(corrupt(
                    base,
                    format!(
                        "batch stored at {base} says base offset {}",
                        batch.base_offset()
                    ),
                ));
            }
            if batch.next_offset() <= state.start {
                leftovers.remove(key);
                any_leftover = true;
                continue;
            }
            let expected = next.unwrap_or(state.start);
            // Below `compacted_upto` compaction may have removed what lay in between.
            let fits = match next {
                None => base <= state.start || state.start < state.compacted_upto,
                Some(n) => base == n || n < state.compacted_upto && base > n,
            };
            if !fits {
                return Err(corrupt(
                    base,
                    format!("batch at {base} where offset {expected} was expected (a hole)"),
                ));
            }
            next = Some(batch.next_offset());
            size_bytes += value.len() as u64;
        }
        let end = match next {
            Some(n) if n >= state.end => n,
            Some(n) => {
                return Err(corrupt(
                    n,
                    format!("batches end at {n} but the log's end was {}", state.end),
                ))
            }
            None if state.start == state.end => state.end,
            None => {
                return Err(corrupt(
                    state.start,
                    format!(
                        "no batches, but the log's records [{}, {}) should be there",
                        state.start, state.end
                    ),
                ))
            }
        };
        if any_leftover {
            data.apply_batch(leftovers)
                .map_err(|e| self.engine("removing batches below the start", e))?;
        }
        Ok(LogOffsets {
            start: state.start,
            end,
            size_bytes,
        })
    }

    /// Drops log trees, snapshots and compaction checkpoints that have no state in `logs` (an
    /// interrupted `delete_log`).
    fn drop_orphan_trees(&self, h: &Handles) -> Result<()> {
        for name in h.db.tree_names() {
            let Some(tp) = codec::decode_log_tree_name(&name) else {
                continue;
            };
            let known = h
                .logs
                .contains_key(codec::tp_key(&tp))
                .map_err(|e| self.engine("listing logs", e))?;
            if !known {
                h.db.drop_tree(&name)
                    .map_err(|e| self.engine("dropping an orphan log tree", e))?;
            }
        }
        for (tree, what) in [
            (&h.snapshots, "snapshots"),
            (&h.cleaners, "compaction checkpoints"),
        ] {
            for key in tree.iter().keys() {
                let key = key.map_err(|e| self.engine(&format!("listing {what}"), e))?;
                let known = h
                    .logs
                    .contains_key(&key)
                    .map_err(|e| self.engine("listing logs", e))?;
                if !known {
                    tree.remove(&key)
                        .map_err(|e| self.engine(&format!("dropping orphan {what}"), e))?;
                }
            }
        }
        Ok(())
    }
}

/// Weir's storage in one sled database: partition logs, metadata and group offsets.
///
/// Cloning shares the same database. Call [`Storage::close`] before dropping the last clone
/// to release the directory from an async context without blocking it; dropping without
/// `close` also releases it, but flushes on the dropping thread.
#[derive(Clone)]
pub struct SledStorage {
    shared: Arc<StorageShared>,
}

impl std::fmt::Debug for SledStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStorage")
            .field("path", &self.shared.path)
            .finish_non_exhaustive()
    }
}

impl SledStorage {
    /// Opens (creating if absent) the storage in directory `path` with [`SledConfig::default`].
    /// Blocks while sled recovers; from async code, call it inside `spawn_blocking`.
    ///
    /// If this process closed a storage on the same directory just before, this waits (at most
    /// a few seconds) for sled's I/O threads to let go of the directory lock.
    ///
    /// # Errors
    /// [`StorageError::Io`] when the directory cannot be created or is locked by another open
    /// storage (in this or another process), [`StorageError::Corrupt`] when sled finds damage,
    /// [`StorageError::Backend`] for a directory written by an unknown format.
    pub fn open(path: impl AsRef<Path>) -> Result<SledStorage> {
        Self::with_config(path, SledConfig::default())
    }

    /// As [`SledStorage::open`], with explicit engine tuning.
    ///
    /// # Errors
    /// As [`SledStorage::open`].
    pub fn with_config(path: impl AsRef<Path>, config: SledConfig) -> Result<SledStorage> {
        let path = path.as_ref().to_path_buf();
        let mut claim = DirectoryClaim::new(&path)?;
        let err = |context: &str, e| map_sled(context, &path, e);
        let sled_config = sled::Config::new()
            .path(&path)
            .cache_capacity(config.cache_capacity_bytes)
            .flush_every_ms(config.flush_every_ms);
        let db =
            directory::open_db(&sled_config, &claim).map_err(|e| err("opening the database", e))?;
        claim.opened = true;
        match db
            .get(FORMAT_KEY)
            .map_err(|e| err("reading the format", e))?
        {
            Some(v) if v.as_ref() == FORMAT_VERSION => {}
            Some(v) => {
                return Err(StorageError::Backend(format!(
                    "{} holds weir-sled format {:?}, this build reads {:?}",
                    path.display(),
                    String::from_utf8_lossy(&v),
                    String::from_utf8_lossy(FORMAT_VERSION)
                )))
            }
            None => {
                db.insert(FORMAT_KEY, FORMAT_VERSION)
                    .map_err(|e| err("writing the format", e))?;
            }
        }
        let tree = |name: &str| db.open_tree(name).map_err(|e| err("opening a tree", e));
        let handles = Handles {
            logs: tree("logs")?,
            snapshots: tree("snapshots")?,
            cleaners: tree("cleaners")?,
            metadata: tree("metadata")?,
            offsets: tree("offsets")?,
            group_states: tree("group_states")?,
            db: db.clone(),
        };
        let shared = StorageShared {
            path,
            gate: Arc::new(RwLock::new(Some(handles.clone()))),
            open_logs: Mutex::new(BTreeMap::new()),
            fail: FailStop::default(),
            claim,
        };
        shared.drop_orphan_trees(&handles)?;
        shared.flush(&handles, "opening the database")?;
        drop(handles);
        Ok(SledStorage {
            shared: Arc::new(shared),
        })
    }

    /// The directory this storage lives in.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }
}

fn check_tp(tp: &TopicPartition) -> Result<()> {
    if tp.topic.is_empty() || tp.partition < 0 {
        return Err(StorageError::InvalidArgument(format!(
            "cannot store partition {tp}: the topic must be non-empty and the partition >= 0"
        )));
    }
    Ok(())
}

#[async_trait]
impl Storage for SledStorage {
    fn name(&self) -> &'static str {
        "sled"
    }

    async fn open_log(
        &self,
        tp: &TopicPartition,
        cfg: &LogConfig,
    ) -> Result<Arc<dyn PartitionLog>> {
        check_tp(tp)?;
        // Lock order: gate, then the registry (as in close and delete_log).
        let guard = Arc::clone(&self.shared.gate).read_owned().await;
        let mut open_logs = self.shared.open_logs.lock().await;
        open_logs.retain(|_, log| log.upgrade().is_some_and(|l| !l.is_closed()));
        if open_logs.contains_key(tp) {
            return Err(StorageError::InvalidArgument(format!(
                "log {tp} is already open; close it before opening it again"
            )));
        }
        let shared = Arc::clone(&self.shared);
        let (tp2, cfg) = (tp.clone(), cfg.clone());
        let recovered = run_blocking(move || {
            let handles = guard.as_ref().ok_or(StorageError::Closed)?;
            shared.fail.check()?;
            shared.open_log(handles, tp2, &cfg)
        })
        .await?;
        let log = LogShared::new(recovered);
        open_logs.insert(tp.clone(), Arc::downgrade(&log));
        Ok(Arc::new(SledLog::new(log)))
    }

    async fn delete_log(&self, tp: &TopicPartition) -> Result<()> {
        let guard = Arc::clone(&self.shared.gate).read_owned().await;
        let mut open_logs = self.shared.open_logs.lock().await;
        // The caller should have closed it; if not, close it so no write lands in a dropped tree.
        if let Some(live) = open_logs.remove(tp).and_then(|w| w.upgrade()) {
            live.close().await?;
        }
        let shared = Arc::clone(&self.shared);
        let tp = tp.clone();
        run_blocking(move || {
            let h = guard.as_ref().ok_or(StorageError::Closed)?;
            shared.fail.check()?;
            // State first: a crash before the tree is dropped leaves an orphan tree, which
            // the next open drops; never a listed log without its batches.
            // The snapshot before the state: a recreated log must never meet its
            // predecessor's snapshot.
            h.snapshots
                .remove(codec::tp_key(&tp))
                .map_err(|e| shared.engine("deleting a log's snapshot", e))?;
            h.cleaners
                .remove(codec::tp_key(&tp))
                .map_err(|e| shared.engine("deleting a log's compaction checkpoint", e))?;
            h.logs
                .remove(codec::tp_key(&tp))
                .map_err(|e| shared.engine("deleting a log's state", e))?;
            h.db.drop_tree(codec::log_tree_name(&tp))
                .map_err(|e| shared.engine("dropping a log tree", e))?;
            shared.flush(h, "deleting a log")
        })
        .await
    }

    async fn list_logs(&self) -> Result<Vec<TopicPartition>> {
        self.shared
            .run(|s, h| {
                let mut out = Vec::new();
                for item in h.logs.iter().keys() {
                    let key = item.map_err(|e| s.engine("listing logs", e))?;
                    out.push(codec::decode_tp_key(&key).ok_or_else(|| {
                        s.corrupt("logs", format!("unreadable partition key {key:?}"))
                    })?);
                }
                Ok(out)
            })
            .await
    }

    async fn put_metadata(&self, key: &str, value: &[u8]) -> Result<()> {
        if key.is_empty() {
            return Err(StorageError::InvalidArgument("empty metadata key".into()));
        }
        let (key, value) = (key.as_bytes().to_vec(), value.to_vec());
        self.shared
            .run(move |s, h| {
                h.metadata
                    .insert(key, value)
                    .map_err(|e| s.engine("writing metadata", e))?;
                s.flush(h, "writing metadata")
            })
            .await
    }

    async fn delete_metadata(&self, key: &str) -> Result<()> {
        let key = key.as_bytes().to_vec();
        self.shared
            .run(move |s, h| {
                h.metadata
                    .remove(key)
                    .map_err(|e| s.engine("deleting metadata", e))?;
                s.flush(h, "deleting metadata")
            })
            .await
    }

    async fn list_metadata(&self) -> Result<Vec<(String, Vec<u8>)>> {
        self.shared
            .run(|s, h| {
                let mut out = Vec::new();
                for item in h.metadata.iter() {
                    let (k, v) = item.map_err(|e| s.engine("listing metadata", e))?;
                    let key = String::from_utf8(k.to_vec()).map_err(|e| {
                        s.corrupt("metadata", format!("metadata key is not UTF-8: {e}"))
                    })?;
                    out.push((key, v.to_vec()));
                }
                Ok(out)
            })
            .await
    }

    async fn commit_offsets(
        &self,
        group: &str,
        offsets: &[(TopicPartition, CommittedOffset)],
    ) -> Result<()> {
        let mut batch = sled::Batch::default();
        for (tp, committed) in offsets {
            batch.insert(
                codec::group_offset_key(group, tp),
                codec::encode_committed(committed),
            );
        }
        self.shared
            .run(move |s, h| {
                h.offsets
                    .apply_batch(batch)
                    .map_err(|e| s.engine("committing offsets", e))?;
                s.flush(h, "committing offsets")
            })
            .await
    }

    async fn fetch_offsets(&self, group: &str) -> Result<Vec<(TopicPartition, CommittedOffset)>> {
        let group = group.to_string();
        self.shared
            .run(move |s, h| {
                let mut out = Vec::new();
                for item in h.offsets.scan_prefix(codec::group_prefix(&group)) {
                    let (k, v) = item.map_err(|e| s.engine("fetching offsets", e))?;
                    let tp = codec::decode_group_offset_key(&k)
                        .filter(|(g, _)| *g == group)
                        .map(|(_, tp)| tp)
                        .ok_or_else(|| s.corrupt("offsets", format!("unreadable key {k:?}")))?;
                    let committed = codec::decode_committed(&v).ok_or_else(|| {
                        s.corrupt("offsets", format!("unreadable committed offset for {tp}"))
                    })?;
                    out.push((tp, committed));
                }
                Ok(out)
            })
            .await
    }

    async fn delete_offsets(&self, group: &str, partitions: &[TopicPartition]) -> Result<()> {
        let mut batch = sled::Batch::default();
        for tp in partitions {
            batch.remove(codec::group_offset_key(group, tp));
        }
        self.shared
            .run(move |s, h| {
                h.offsets
                    .apply_batch(batch)
                    .map_err(|e| s.engine("deleting offsets", e))?;
                s.flush(h, "deleting offsets")
            })
            .await
    }

    async fn put_group_state(&self, group: &str, state: &[u8]) -> Result<()> {
        let (key, value) = (group.as_bytes().to_vec(), state.to_vec());
        self.shared
            .run(move |s, h| {
                h.group_states
                    .insert(key, value)
                    .map_err(|e| s.engine("storing a group's state", e))?;
                s.flush(h, "storing a group's state")
            })
            .await
    }

    async fn group_state(&self, group: &str) -> Result<Option<Vec<u8>>> {
        let key = group.as_bytes().to_vec();
        self.shared
            .run(move |s, h| {
                Ok(h.group_states
                    .get(key)
                    .map_err(|e| s.engine("reading a group's state", e))?
                    .map(|v| v.to_vec()))
            })
            .await
    }

    async fn list_groups(&self) -> Result<Vec<String>> {
        self.shared
            .run(|s, h| {
                let mut out = std::collections::BTreeSet::new();
                for key in h.group_states.iter().keys() {
                    let key = key.map_err(|e| s.engine("listing groups", e))?;
                    let group = String::from_utf8(key.to_vec()).map_err(|_| {
                        s.corrupt("group states", format!("unreadable key {key:?}"))
                    })?;
                    out.insert(group);
                }
                let mut from = Vec::new();
                // One seek per group: after reading a group, jump past all its keys.
                while let Some(item) = h.offsets.range(from..).next() {
                    let (k, _) = item.map_err(|e| s.engine("listing groups", e))?;
                    let group = codec::decode_group(&k)
                        .ok_or_else(|| s.corrupt("offsets", format!("unreadable key {k:?}")))?;
                    from = codec::after_group(&group);
                    out.insert(group);
                }
                Ok(out.into_iter().collect())
            })
            .await
    }

    async fn delete_group(&self, group: &str) -> Result<()> {
        let prefix = codec::group_prefix(group);
        let group_key = group.as_bytes().to_vec();
        self.shared
            .run(move |s, h| {
                let mut batch = sled::Batch::default();
                for key in h.offsets.scan_prefix(&prefix).keys() {
                    batch.remove(key.map_err(|e| s.engine("deleting a group", e))?);
                }
                h.offsets
                    .apply_batch(batch)
                    .map_err(|e| s.engine("deleting a group", e))?;
                h.group_states
                    .remove(group_key)
                    .map_err(|e| s.engine("deleting a group", e))?;
                s.flush(h, "deleting a group")
            })
            .await
    }

    async fn close(&self) -> Result<()> {
        // Wait for every storage operation in flight, then shut the gate for good.
        let mut gate = Arc::clone(&self.shared.gate).write_owned().await;
        let Some(handles) = gate.take() else {
            return Ok(());
        };
        let logs: Vec<Arc<LogShared>> = std::mem::take(&mut *self.shared.open_logs.lock().await)
            .into_values()
            .filter_map(|w| w.upgrade())
            .collect();
        let mut first_error = None;
        for log in logs {
            if let Err(e) = log.close().await {
                first_error.get_or_insert(e);
            }
        }
        let shared = Arc::clone(&self.shared);
        let flushed = run_blocking(move || {
            let result = shared
                .fail
                .check()
                .and_then(|()| shared.flush(&handles, "closing the storage"));
            // The last handles: dropping them flushes and joins sled's flusher thread.
            // Blocking, so done here. (sled's I/O pool may hold the file a moment longer; see
            // `directory`.)
            drop(handles);
            shared.claim.release();
            result
        })
        .await;
        match first_error {
            Some(e) => Err(e),
            None => flushed,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use weir_storage::testkit::{batch_of, run};
    use weir_storage::Compression;

    fn tp() -> TopicPartition {
        TopicPartition::new("state", 0)
    }

    /// Three batches of two records (offsets 0..6), then the storage closed.
    async fn three_batches(path: &Path) -> u64 {
        let s = SledStorage::open(path).unwrap();
        let log = s.open_log(&tp(), &LogConfig::default()).await.unwrap();
        for _ in 0..3 {
            log.append(vec![batch_of(2, 0, 30, Compression::None)])
                .await
                .unwrap();
        }
        let size = log.offsets().size_bytes;
        s.close().await.unwrap();
        size
    }

    fn copy_dir(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                copy_dir(&entry.path(), &to.join(entry.file_name()));
            } else {
                std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
            }
        }
    }

    /// Edits a copy of `from` with raw sled, behind the backend's back, and returns a copy of
    /// the result. Copies, because sled's I/O threads may hold a just-dropped database's lock a
    /// moment longer (see `directory.rs`), and a copy carries no lock.
    fn edited_copy(from: &Path, work: &Path, name: &str, edit: impl FnOnce(&sled::Db)) -> PathBuf {
        let scratch = work.join(format!("{name}-scratch"));
        copy_dir(from, &scratch);
        {
            let db = sled::open(&scratch).unwrap();
            edit(&db);
            db.flush().unwrap();
        }
        let result = work.join(name);
        copy_dir(&scratch, &result);
        result
    }

    fn set_state(db: &sled::Db, state: LogState) {
        db.open_tree("logs")
            .unwrap()
            .insert(codec::tp_key(&tp()), codec::encode_log_state(state))
            .unwrap();
    }

    fn open_log_result(path: &Path) -> Result<LogOffsets> {
        let path = path.to_path_buf();
        let mut out = None;
        run(async {
            let s = SledStorage::open(&path).unwrap();
            out = Some(
                s.open_log(&tp(), &LogConfig::default())
                    .await
                    .map(|l| l.offsets()),
            );
            s.close().await.unwrap();
        });
        out.unwrap()
    }

    /// A start persisted before its batches were deleted (a crash in `delete_before`): recovery
    /// removes the batches wholly below it.
    #[test]
    fn recovery_removes_batches_below_a_persisted_start() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("live");
        let mut size = 0;
        run(async { size = three_batches(&live).await });
        let edited = edited_copy(&live, dir.path(), "edited", |db| {
            set_state(
                db,
                LogState {
                    start: 4,
                    end: 4,
                    compacted_upto: 0,
                },
            );
        });
        let o = open_log_result(&edited).unwrap();
        assert_eq!((o.start, o.end, o.size_bytes), (4, 6, size / 3));
        let mut keys = Vec::new();
        edited_copy(&edited, dir.path(), "inspected", |db| {
            let tree = db.open_tree(codec::log_tree_name(&tp())).unwrap();
            for k in tree.iter().keys() {
                keys.push(codec::decode_offset_key(&k.unwrap()).unwrap());
            }
        });
        assert_eq!(keys, vec![4]);
    }

    /// Offsets the state promises but no batch holds are corruption, not silently skipped.
    #[test]
    fn recovery_reports_missing_batches() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("live");
        run(async {
            three_batches(&live).await;
        });
        // The end persisted past the last batch.
        let past_end = edited_copy(&live, dir.path(), "past-end", |db| {
            set_state(
                db,
                LogState {
                    start: 0,
                    end: 9,
                    compacted_upto: 0,
                },
            );
        });
        assert!(matches!(
            open_log_result(&past_end),
            Err(StorageError::Corrupt { .. })
        ));
        // A hole between the start and the first batch.
        let hole = edited_copy(&live, dir.path(), "hole", |db| {
            db.open_tree(codec::log_tree_name(&tp()))
                .unwrap()
                .remove(codec::offset_key(0))
                .unwrap();
            set_state(
                db,
                LogState {
                    start: 1,
                    end: 1,
                    compacted_upto: 0,
                },
            );
        });
        match open_log_result(&hole) {
            Err(StorageError::Corrupt { position, .. }) => assert_eq!(position, 2),
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }
}
