//! # weir-segment: the segment-file storage backend (Weir's default)
//!
//! ```text
//! <data_dir>/
//!     logs/<topic>-<partition>/   one directory per partition log (see [`SegmentLog`])
//!     metadata                    every metadata entry, rewritten atomically on change
//!     groups/<group>.offsets      one group's committed offsets, rewritten atomically
//! ```
//!
//! Names are escaped for the file system (`%XX` for anything outside `[A-Za-z0-9._]`), so any
//! topic or group name maps to one file name and back.
//!
//! Durability of logs follows each log's [`weir_storage::Durability`]; metadata and offsets are
//! always written durably (write a temporary file, fsync, rename, fsync the directory). All file
//! I/O runs on blocking threads (`spawn_blocking`), never on an async executor thread.
//!
//! Small files are cached in memory after the first read; a `std::sync::Mutex` per store
//! serializes their rewrites.

// Weir's shipped code has no unsafe code (the workspace denies it; only a benchmark's calls
// into librdkafka are allowed it).
#![forbid(unsafe_code)]

mod fsutil;
mod index;
mod log;
mod records;
mod segment;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use weir_storage::{
    CommittedOffset, LogConfig, PartitionLog, Result, Storage, StorageError, TopicPartition,
};

use crate::fsutil::{escape, unescape, write_atomic};
pub use crate::log::SegmentLog;
use crate::records::GroupOffsets;

/// Storage in segment files under one data directory.
#[derive(Debug, Clone)]
pub struct SegmentStorage {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// The directory lock, released by `close`.
    lock: Mutex<Option<std::fs::File>>,
    root: PathBuf,
    metadata: Mutex<Option<BTreeMap<String, Vec<u8>>>>,
    groups: Mutex<BTreeMap<String, GroupOffsets>>,
    /// Groups' stored states (`<group>.state` files), loaded at open.
    group_states: Mutex<BTreeMap<String, Vec<u8>>>,
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StorageError::Backend(format!("blocking task failed: {e}")))?
}

impl SegmentStorage {
    /// Opens (creating if needed) storage rooted at `root`, loading group offsets.
    ///
    /// # Errors
    /// I/O errors, or a damaged offsets file ([`StorageError::Corrupt`]).
    pub async fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        blocking(move || Self::open_blocking(&root)).await
    }

    /// [`SegmentStorage::open`] for callers already on a blocking thread.
    ///
    /// # Errors
    /// As [`SegmentStorage::open`].
    pub fn open_blocking(root: &Path) -> Result<Self> {
        fsutil::create_dir_durable(root)?;
        // One storage per directory: a second broker on the same files would interleave two
        // writers in every log. The lock lives until `close` (or the storage is dropped).
        let lock_path = root.join("LOCK");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| StorageError::io(format!("opening {}", lock_path.display()), e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StorageError::InvalidArgument(format!(
                    "{} is in use by another Weir storage (process or instance)",
                    root.display()
                )))
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(StorageError::io(
                    format!("locking {}", lock_path.display()),
                    e,
                ))
            }
        }
        fsutil::create_dir_durable(&root.join("logs"))?;
        fsutil::create_dir_durable(&root.join("groups"))?;
        let (mut groups, mut group_states) = (BTreeMap::new(), BTreeMap::new());
        let dir = root.join("groups");
        for entry in std::fs::read_dir(&dir)
            .map_err(|e| StorageError::io(format!("listing {}", dir.display()), e))?
        {
            let entry =
                entry.map_err(|e| StorageError::io(format!("listing {}", dir.display()), e))?;
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".tmp") {
                fsutil::remove_if_exists(&path)?;
                continue;
            }
            let (offsets, state) = (name.ends_with(".offsets"), name.ends_with(".state"));
            if !offsets && !state {
                continue;
            }
            let buf = std::fs::read(&path)
                .map_err(|e| StorageError::io(format!("reading {}", path.display()), e))?;
            if offsets {
                let (group, offsets) = records::decode_offsets(&path, &buf)?;
                groups.insert(group, offsets);
            } else {
                let (group, state) = records::decode_group_state(&path, &buf)?;
                group_states.insert(group, state);
            }
        }
        Ok(SegmentStorage {
            inner: Arc::new(Inner {
                lock: Mutex::new(Some(lock)),
                root: root.to_path_buf(),
                metadata: Mutex::new(None),
                groups: Mutex::new(groups),
                group_states: Mutex::new(group_states),
            }),
        })
    }

    /// The data directory.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// The directory of the log of `tp`.
    pub fn log_dir(&self, tp: &TopicPartition) -> PathBuf {
        self.inner
            .root
            .join("logs")
            .join(format!("{}-{}", escape(&tp.topic), tp.partition))
    }
}

impl Inner {
    fn metadata_path(&self) -> PathBuf {
        self.root.join("metadata")
    }

    fn group_path(&self, group: &str) -> PathBuf {
        self.root
            .join("groups")
            .join(format!("{}.offsets", escape(group)))
    }

    fn group_state_path(&self, group: &str) -> PathBuf {
        self.root
            .join("groups")
            .join(format!("{}.state", escape(group)))
    }

    /// Runs `f` on the metadata map (loaded on first use) and persists it when `f` says so.
    fn with_metadata<T>(
        &self,
        f: impl FnOnce(&mut BTreeMap<String, Vec<u8>>) -> (T, bool),
    ) -> Result<T> {
        let mut guard = self.metadata.lock().unwrap_or_else(|e| e.into_inner());
        if guard.is_none() {
            let path = self.metadata_path();
            let map = match fsutil::read_if_exists(&path)? {
                Some(buf) => records::decode_metadata(&path, &buf)?,
                None => BTreeMap::new(),
            };
            *guard = Some(map);
        }
        let current = guard.as_ref().cloned().unwrap_or_default();
        let mut next = current;
        let (out, changed) = f(&mut next);
        if changed {
            write_atomic(&self.metadata_path(), &records::encode_metadata(&next))?;
            *guard = Some(next);
        }
        Ok(out)
    }

    /// Applies `f` to one group's offsets and persists the result (deleting an emptied group).
    fn update_group(&self, group: &str, f: impl FnOnce(&mut GroupOffsets)) -> Result<()> {
        let mut groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = groups.get(group).cloned().unwrap_or_default();
        let existed = groups.contains_key(group);
        f(&mut next);
        let path = self.group_path(group);
        if next.is_empty() {
            if existed {
                fsutil::remove_if_exists(&path)?;
                fsutil::sync_dir(&self.root.join("groups"))?;
                groups.remove(group);
            }
        } else {
            write_atomic(&path, &records::encode_offsets(group, &next))?;
            groups.insert(group.to_string(), next);
        }
        Ok(())
    }
}

#[async_trait]
impl Storage for SegmentStorage {
    fn name(&self) -> &'static str {
        "segment"
    }

    async fn open_log(
        &self,
        tp: &TopicPartition,
        cfg: &LogConfig,
    ) -> Result<Arc<dyn PartitionLog>> {
        if tp.partition < 0 {
            return Err(StorageError::InvalidArgument(format!(
                "negative partition in {tp}"
            )));
        }
        let dir = self.log_dir(tp);
        let cfg = cfg.clone();
        let log = blocking(move || SegmentLog::open_blocking(&dir, &cfg)).await?;
        Ok(Arc::new(log))
    }

    async fn delete_log(&self, tp: &TopicPartition) -> Result<()> {
        let dir = self.log_dir(tp);
        let logs = self.inner.root.join("logs");
        blocking(move || {
            // The owner's snapshot first, durably: whatever a crash leaves of the directory,
            // a log recreated here never meets its predecessor's snapshot.
            let snapshot = dir.join(crate::log::SNAPSHOT_FILE);
            if snapshot.exists() {
                fsutil::remove_if_exists(&snapshot)?;
                fsutil::sync_dir(&dir)?;
            }
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(StorageError::io(format!("deleting {}", dir.display()), e)),
            }
            fsutil::sync_dir(&logs)
        })
        .await
    }

    async fn list_logs(&self) -> Result<Vec<TopicPartition>> {
        let logs = self.inner.root.join("logs");
        blocking(move || {
            let mut out = Vec::new();
            for entry in std::fs::read_dir(&logs)
                .map_err(|e| StorageError::io(format!("listing {}", logs.display()), e))?
            {
                let entry = entry
                    .map_err(|e| StorageError::io(format!("listing {}", logs.display()), e))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let parsed = name
                    .rsplit_once('-')
                    .and_then(|(t, p)| Some(TopicPartition::new(unescape(t)?, p.parse().ok()?)));
                if let Some(tp) = parsed {
                    out.push(tp);
                }
            }
            out.sort();
            Ok(out)
        })
        .await
    }

    async fn put_metadata(&self, key: &str, value: &[u8]) -> Result<()> {
        if key.is_empty() {
            return Err(StorageError::InvalidArgument("empty metadata key".into()));
        }
        let inner = self.inner.clone();
        let (key, value) = (key.to_string(), value.to_vec());
        blocking(move || {
            inner.with_metadata(|m| {
                let changed = m.get(&key) != Some(&value);
                m.insert(key, value);
                ((), changed)
            })
        })
        .await
    }

    async fn delete_metadata(&self, key: &str) -> Result<()> {
        let inner = self.inner.clone();
        let key = key.to_string();
        blocking(move || inner.with_metadata(|m| ((), m.remove(&key).is_some()))).await
    }

    async fn list_metadata(&self) -> Result<Vec<(String, Vec<u8>)>> {
        let inner = self.inner.clone();
        blocking(move || {
            inner.with_metadata(|m| {
                (
                    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                    false,
                )
            })
        })
        .await
    }

    async fn commit_offsets(
        &self,
        group: &str,
        offsets: &[(TopicPartition, CommittedOffset)],
    ) -> Result<()> {
        let inner = self.inner.clone();
        let group = group.to_string();
        let offsets = offsets.to_vec();
        blocking(move || {
            inner.update_group(&group, |g| {
                for (tp, o) in offsets {
                    g.insert(tp, o);
                }
            })
        })
        .await
    }

    async fn fetch_offsets(&self, group: &str) -> Result<Vec<(TopicPartition, CommittedOffset)>> {
        let groups = self.inner.groups.lock().unwrap_or_else(|e| e.into_inner());
        Ok(groups.get(group).map_or_else(Vec::new, |g| {
            g.iter().map(|(tp, o)| (tp.clone(), o.clone())).collect()
        }))
    }

    async fn delete_offsets(&self, group: &str, partitions: &[TopicPartition]) -> Result<()> {
        let inner = self.inner.clone();
        let group = group.to_string();
        let partitions = partitions.to_vec();
        blocking(move || {
            inner.update_group(&group, |g| {
                for tp in &partitions {
                    g.remove(tp);
                }
            })
        })
        .await
    }

    async fn put_group_state(&self, group: &str, state: &[u8]) -> Result<()> {
        let inner = self.inner.clone();
        let (group, state) = (group.to_string(), state.to_vec());
        // A group's states are written by its one actor, one after the other; the lock is not
        // held over the write, so that readers never wait for a sync.
        blocking(move || {
            write_atomic(
                &inner.group_state_path(&group),
                &records::encode_group_state(&group, &state),
            )?;
            inner
                .group_states
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(group, state);
            Ok(())
        })
        .await
    }

    async fn group_state(&self, group: &str) -> Result<Option<Vec<u8>>> {
        let states = self
            .inner
            .group_states
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        Ok(states.get(group).cloned())
    }

    async fn list_groups(&self) -> Result<Vec<String>> {
        let groups = self.inner.groups.lock().unwrap_or_else(|e| e.into_inner());
        let states = self
            .inner
            .group_states
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let names: BTreeSet<&String> = groups.keys().chain(states.keys()).collect();
        Ok(names.into_iter().cloned().collect())
    }

    async fn delete_group(&self, group: &str) -> Result<()> {
        let inner = self.inner.clone();
        let group = group.to_string();
        blocking(move || {
            inner.update_group(&group, GroupOffsets::clear)?;
            let removed = inner
                .group_states
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&group);
            if removed.is_some() {
                fsutil::remove_if_exists(&inner.group_state_path(&group))?;
                fsutil::sync_dir(&inner.root.join("groups"))?;
            }
            Ok(())
        })
        .await
    }

    async fn close(&self) -> Result<()> {
        // Logs are closed by their owners and the small files are durable on every write; what
        // is left is to let another storage open the directory.
        self.inner
            .lock
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        Ok(())
    }
}
