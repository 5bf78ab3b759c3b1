//! # weir-memory: the in-memory storage backend
//!
//! The reference implementation of the [`weir_storage`] contract and the oracle other backends
//! are compared with. Nothing survives the process; every durability mode is trivially met.
//!
//! Data flow: a log is a `VecDeque` of batches behind an `RwLock`. `append` validates, assigns
//! offsets and pushes under the write lock, so a reader sees each batch whole or not at all.
//! Retention works in units of batches. Compaction (every batch but the newest is closed) runs
//! its passes over a snapshot of the batches, off the lock, and swaps the changed batches in by
//! base offset under the write lock. Metadata and group offsets live in ordered maps.

// Weir's shipped code has no unsafe code (the workspace denies it; only a benchmark's calls
// into librdkafka are allowed it).
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};

use async_trait::async_trait;
use weir_storage::compaction::{apply_changes, pass_over_batches, CleanerCheckpoint};
use weir_storage::log::{assign_offsets, check_range, offset_for_time_in};
use weir_storage::retention::{retention_cut, Unit};
use weir_storage::{
    AppendInfo, Batch, CommittedOffset, CompactionPolicy, CompactionStats, LogConfig, LogOffsets,
    Offset, PartitionLog, Result, Retention, Storage, StorageError, TopicPartition,
};

/// In-memory storage. Cloning shares the same data.
#[derive(Debug, Default, Clone)]
pub struct MemoryStorage {
    inner: Arc<Mutex<Shared>>,
}

#[derive(Debug, Default)]
struct Shared {
    logs: BTreeMap<TopicPartition, Arc<LogData>>,
    metadata: BTreeMap<String, Vec<u8>>,
    offsets: BTreeMap<String, BTreeMap<TopicPartition, CommittedOffset>>,
    group_states: BTreeMap<String, Vec<u8>>,
}

/// The data of one log, kept by the storage so that reopening a log (without restarting the
/// process) sees what was written, as with the durable backends.
#[derive(Debug, Default)]
struct LogData {
    state: RwLock<LogState>,
    snapshot: std::sync::Mutex<Option<Vec<u8>>>,
    /// Serializes compaction passes; holds where the last one stopped.
    cleaner: std::sync::Mutex<CleanerCheckpoint>,
}

#[derive(Debug, Default)]
struct LogState {
    batches: VecDeque<Batch>,
    start: Offset,
    end: Offset,
    size_bytes: u64,
}

impl LogState {
    fn offsets(&self) -> LogOffsets {
        LogOffsets {
            start: self.start,
            end: self.end,
            size_bytes: self.size_bytes,
        }
    }

    /// Drops whole batches that lie entirely below `self.start`.
    fn drop_below_start(&mut self) {
        while let Some(front) = self.batches.front() {
            if front.next_offset() > self.start {
                break;
            }
            self.size_bytes -= front.len() as u64;
            self.batches.pop_front();
        }
    }
}

impl MemoryStorage {
    /// An empty storage.
    pub fn new() -> Self {
        Self::default()
    }

    fn shared(&self) -> std::sync::MutexGuard<'_, Shared> {
        // A poisoned lock means a panic elsewhere while holding it; the maps stay consistent
        // because every critical section here is a single map operation.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl Storage for MemoryStorage {
    fn name(&self) -> &'static str {
        "memory"
    }

    async fn open_log(
        &self,
        tp: &TopicPartition,
        _cfg: &LogConfig,
    ) -> Result<Arc<dyn PartitionLog>> {
        let data = self.shared().logs.entry(tp.clone()).or_default().clone();
        Ok(Arc::new(MemoryLog {
            data,
            closed: std::sync::atomic::AtomicBool::new(false),
        }))
    }

    async fn delete_log(&self, tp: &TopicPartition) -> Result<()> {
        self.shared().logs.remove(tp);
        Ok(())
    }

    async fn list_logs(&self) -> Result<Vec<TopicPartition>> {
        Ok(self.shared().logs.keys().cloned().collect())
    }

    async fn put_metadata(&self, key: &str, value: &[u8]) -> Result<()> {
        if key.is_empty() {
            return Err(StorageError::InvalidArgument("empty metadata key".into()));
        }
        self.shared()
            .metadata
            .insert(key.to_string(), value.to_vec());
        Ok(())
    }

    async fn delete_metadata(&self, key: &str) -> Result<()> {
        self.shared().metadata.remove(key);
        Ok(())
    }

    async fn list_metadata(&self) -> Result<Vec<(String, Vec<u8>)>> {
        Ok(self
            .shared()
            .metadata
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    async fn commit_offsets(
        &self,
        group: &str,
        offsets: &[(TopicPartition, CommittedOffset)],
    ) -> Result<()> {
        let mut shared = self.shared();
        let g = shared.offsets.entry(group.to_string()).or_default();
        for (tp, o) in offsets {
            g.insert(tp.clone(), o.clone());
        }
        Ok(())
    }

    async fn fetch_offsets(&self, group: &str) -> Result<Vec<(TopicPartition, CommittedOffset)>> {
        Ok(self.shared().offsets.get(group).map_or_else(Vec::new, |g| {
            g.iter().map(|(tp, o)| (tp.clone(), o.clone())).collect()
        }))
    }

    async fn delete_offsets(&self, group: &str, partitions: &[TopicPartition]) -> Result<()> {
        let mut shared = self.shared();
        if let Some(g) = shared.offsets.get_mut(group) {
            for tp in partitions {
                g.remove(tp);
            }
            if g.is_empty() {
                shared.offsets.remove(group);
            }
        }
        Ok(())
    }

    async fn put_group_state(&self, group: &str, state: &[u8]) -> Result<()> {
        self.shared()
            .group_states
            .insert(group.to_string(), state.to_vec());
        Ok(())
    }

    async fn group_state(&self, group: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.shared().group_states.get(group).cloned())
    }

    async fn list_groups(&self) -> Result<Vec<String>> {
        let shared = self.shared();
        let names: std::collections::BTreeSet<&String> = shared
            .offsets
            .keys()
            .chain(shared.group_states.keys())
            .collect();
        Ok(names.into_iter().cloned().collect())
    }

    async fn delete_group(&self, group: &str) -> Result<()> {
        let mut shared = self.shared();
        shared.offsets.remove(group);
        shared.group_states.remove(group);
        Ok(())
    }

    async fn close(&self) -> Result<()> {
        Ok(())
    }
}

/// One in-memory partition log.
#[derive(Debug)]
pub struct MemoryLog {
    data: Arc<LogData>,
    closed: std::sync::atomic::AtomicBool,
}

impl MemoryLog {
    fn check_open(&self) -> Result<()> {
        if self.closed.load(std::sync::atomic::Ordering::Acquire) {
            return Err(StorageError::Closed);
        }
        Ok(())
    }

    fn read_state(&self) -> std::sync::RwLockReadGuard<'_, LogState> {
        self.data.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_state(&self) -> std::sync::RwLockWriteGuard<'_, LogState> {
        self.data.state.write().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl PartitionLog for MemoryLog {
    async fn append(&self, mut batches: Vec<Batch>) -> Result<AppendInfo> {
        self.check_open()?;
        let mut st = self.write_state();
        let info = assign_offsets(&mut batches, st.end)?;
        for b in batches {
            st.size_bytes += b.len() as u64;
            st.batches.push_back(b);
        }
        st.end = info.end;
        Ok(info)
    }

    async fn read(&self, from: Offset, max_bytes: usize) -> Result<Vec<Batch>> {
        self.check_open()?;
        let st = self.read_state();
        check_range(from, st.offsets())?;
        let first = st.batches.partition_point(|b| b.next_offset() <= from);
        let mut out = Vec::new();
        let mut total = 0usize;
        for b in st.batches.range(first..) {
            if !out.is_empty() && total + b.len() > max_bytes {
                break;
            }
            total += b.len();
            out.push(b.clone());
        }
        Ok(out)
    }

    fn offsets(&self) -> LogOffsets {
        self.read_state().offsets()
    }

    async fn offset_for_time(&self, timestamp_ms: i64) -> Result<Option<Offset>> {
        self.check_open()?;
        let st = self.read_state();
        offset_for_time_in(st.batches.iter(), timestamp_ms, st.start)
    }

    async fn delete_before(&self, offset: Offset) -> Result<Offset> {
        self.check_open()?;
        let mut st = self.write_state();
        st.start = offset.min(st.end).max(st.start);
        st.drop_below_start();
        Ok(st.start)
    }

    async fn enforce_retention(&self, retention: Retention, now_ms: i64) -> Result<Offset> {
        self.check_open()?;
        let mut st = self.write_state();
        let units = st.batches.iter().map(|b| Unit {
            max_timestamp_ms: b.max_timestamp(),
            size_bytes: b.len() as u64,
        });
        let cut = retention_cut(units, st.size_bytes, retention, now_ms);
        if cut > 0 {
            let new_start = st
                .batches
                .get(cut)
                .map_or(st.end, Batch::base_offset)
                .max(st.start);
            st.start = new_start;
            st.drop_below_start();
        }
        Ok(st.start)
    }

    async fn compact(
        &self,
        policy: CompactionPolicy,
        now_ms: i64,
    ) -> Result<Option<CompactionStats>> {
        self.check_open()?;
        let mut checkpoint = self.data.cleaner.lock().unwrap_or_else(|e| e.into_inner());
        let batches: Vec<Batch> = self.read_state().batches.iter().cloned().collect();
        let scan = || batches.iter().cloned().map(Ok);
        let Some((changes, stats)) = pass_over_batches(scan, &checkpoint, &policy, now_ms)? else {
            return Ok(None);
        };
        let mut st = self.write_state();
        // Retention may have dropped batches meanwhile, and appends only add after them.
        let old = std::mem::take(&mut st.batches);
        st.batches = apply_changes(old, changes).collect();
        st.size_bytes = st.batches.iter().map(|b| b.len() as u64).sum();
        *checkpoint = CleanerCheckpoint::after(&stats);
        Ok(Some(stats))
    }

    async fn sync(&self) -> Result<()> {
        self.check_open()
    }

    fn reconfigure(&self, _cfg: &LogConfig) {
        // Nothing to apply: memory has no segments and nothing to sync.
    }

    async fn save_snapshot(&self, snapshot: &[u8]) -> Result<()> {
        self.check_open()?;
        *self.data.snapshot.lock().unwrap_or_else(|e| e.into_inner()) = Some(snapshot.to_vec());
        Ok(())
    }

    async fn load_snapshot(&self) -> Result<Option<Vec<u8>>> {
        self.check_open()?;
        Ok(self
            .data
            .snapshot
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone())
    }

    async fn close(&self) -> Result<()> {
        self.closed
            .store(true, std::sync::atomic::Ordering::Release);
        Ok(())
    }
}
