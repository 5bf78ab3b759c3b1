//! [`SegmentLog`]: one partition's log as a directory of segment files.
//!
//! ```text
//! <data>/logs/<topic>-<partition>/
//!     00000000000000000000.log     batches, byte for byte as appended
//!     00000000000000000000.index   offset + time index of a sealed segment (rebuilt if stale)
//!     00000000000000004711.log     the active segment: the only one written
//!     start-offset                 the log start offset, when it lies inside a segment
//!     compacted-upto               below this offset compaction may have left gaps
//!     cleaner-checkpoint           where the last compaction pass stopped (saves work only)
//!     snapshot                     the owner's snapshot (`save_snapshot`), when there is one
//!     <base>.<end>.swap            a decided merge of the segments from base to end (transient)
//! ```
//!
//! Compaction ([`PartitionLog::compact`]) rewrites sealed segments a group at a time: runs of
//! neighbouring segments whose bytes together fit in `segment.bytes` (Kafka's cleaner groups
//! them alike) become one segment, so that a compacted log does not keep one ever smaller file
//! (and open descriptor) per segment it ever rolled. The batches that survive go to
//! `<base>.cleaned.tmp`, synced. A lone segment's rewrite is renamed over it under the writer
//! lock (a reader that planned on the old file keeps reading its still-open inode). A merge is
//! renamed to `<base>.<end>.swap` (from then on it is decided), the group's files are deleted,
//! and the swap file is renamed to `<base>.log`; recovery finishes a merge a crash interrupted
//! by the same steps. `compacted-upto` is made durable before the first rename: below it a gap
//! between batches is what compaction removed, anywhere else it is corruption. A group left
//! with nothing is deleted, except the log's first segment, which stays (empty) to anchor the
//! log start.
//!
//! Concurrency. Two locks with distinct jobs:
//! - `writer` (a `std::sync::Mutex`, taken only on blocking threads) serializes everything that
//!   changes files: append, roll, retention, sync. It owns the active file's write cursor.
//! - `state` (an `RwLock`) holds the segments' committed view. Writers take it briefly, after
//!   their I/O, to publish; readers take it briefly to snapshot a [`ReadPlan`] and then read
//!   the file without any lock. So a read never waits for an fsync.
//!
//! Every file operation runs in `spawn_blocking`, never on an async executor thread.
//!
//! Failure is fail-stop: the first I/O error on a write path is kept in `failed`, and every
//! later call returns [`StorageError::Failed`] until the log is reopened, which re-runs recovery
//! (the torn tail of the failed append is cut then). An fsync is never retried. The exception
//! is a write that found no room (a full disk, a quota, a file-size limit): the append's bytes
//! are cut off again, the caller gets [`StorageError::NoSpace`] and the log stays usable, so
//! appends succeed again once there is room (a roll that finds no room for its new files
//! likewise). If the cut fails too, the log fails.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{IoSlice, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Instant;

use async_trait::async_trait;
use weir_storage::batch::STORED_PREFIX_LEN;
use weir_storage::compaction::{Cleaned, CleanerCheckpoint, KeyMap};
use weir_storage::log::{
    check_range, largest_timestamp, max_timestamp_by_scan, offset_for_time_in, plan_offsets,
    NO_LEADER_EPOCH,
};
use weir_storage::retention::{retention_cut, Unit};
use weir_storage::{
    AppendDone, AppendInfo, Batch, CompactionPolicy, CompactionStats, Durability, LogConfig,
    LogOffsets, Offset, PartitionLog, Result, Retention, StorageError,
};

use crate::fsutil::{read_if_exists, remove_if_exists, sync_dir, write_atomic};
use crate::index::{self, SegmentSummary};
use crate::segment::{
    index_name, log_name, read_batches, read_batches_within, scan, BatchInfo, ReadPlan, Segment,
};

const START_FILE: &str = "start-offset";
const COMPACTED_FILE: &str = "compacted-upto";
const CLEANER_FILE: &str = "cleaner-checkpoint";
/// How much one read of a compaction pass takes in.
const COMPACTION_READ_BYTES: usize = 4 * 1024 * 1024;
pub(crate) const SNAPSHOT_FILE: &str = "snapshot";

/// Runs blocking work off the async executor.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StorageError::Backend(format!("blocking task failed: {e}")))?
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[derive(Debug)]
struct State {
    segments: VecDeque<Segment>,
    start: Offset,
    size_bytes: u64,
    /// Below this offset batches may have gaps between them (see the module docs).
    compacted_upto: Offset,
}

impl State {
    fn end(&self) -> Offset {
        self.segments.back().map_or(self.start, |s| s.next)
    }

    fn offsets(&self) -> LogOffsets {
        LogOffsets {
            start: self.start,
            end: self.end(),
            size_bytes: self.size_bytes,
        }
    }

    /// The segment holding `offset`: the last one whose base is at or below it.
    fn segment_for(&self, offset: Offset) -> Option<usize> {
        self.segments
            .partition_point(|s| s.base <= offset)
            .checked_sub(1)
    }

    /// A read plan for `seg`, to find `from` in it.
    fn read_plan(&self, seg: &Segment, from: Offset) -> ReadPlan {
        ReadPlan {
            path: seg.path.clone(),
            file: seg.file.clone(),
            pos: seg.position_for(from),
            len: seg.len,
            // `from` before the segment's base: it lies in a gap compaction left.
            gaps: seg.base < self.compacted_upto || from < seg.base,
        }
    }
}

#[derive(Debug)]
struct Writer {
    /// The active segment's file, its cursor at the end of the committed data.
    file: Arc<File>,
    last_sync: Instant,
    unsynced: bool,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    /// Read once per append or roll; replaced by `reconfigure`.
    cfg: RwLock<LogConfig>,
    state: RwLock<State>,
    writer: Mutex<Writer>,
    failed: Mutex<Option<String>>,
    closed: AtomicBool,
    /// A background fsync (interval durability) is running.
    syncing: AtomicBool,
    /// Serializes compaction passes; where the last one stopped.
    cleaner: Mutex<CleanerCheckpoint>,
    /// `close` has begun: a compaction pass stops before its next segment, so that `close`
    /// (which waits for the pass) returns soon and no file is written after it.
    closing: AtomicBool,
}

/// One partition's log in segment files. See the module docs for layout and locking.
#[derive(Debug)]
pub struct SegmentLog {
    inner: Arc<Inner>,
}

fn open_rw(path: &Path, create: bool) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .truncate(false)
        .open(path)
        .map_err(|e| StorageError::io(format!("opening {}", path.display()), e))
}

/// An offset checkpoint file (`start-offset`, `compacted-upto`): the offset and its CRC-32C.
fn encode_start(start: Offset) -> Vec<u8> {
    let mut v = start.to_be_bytes().to_vec();
    v.extend_from_slice(&crc32c::crc32c(&start.to_be_bytes()).to_be_bytes());
    v
}

fn decode_start(path: &Path, buf: &[u8]) -> Result<Offset> {
    let ok = buf.len() == 12 && crc32c::crc32c(&buf[..8]).to_be_bytes() == buf[8..12];
    if !ok {
        return Err(StorageError::Corrupt {
            path: path.to_path_buf(),
            position: 0,
            detail: "damaged offset checkpoint".into(),
        });
    }
    let mut a = [0u8; 8];
    a.copy_from_slice(&buf[..8]);
    Ok(i64::from_be_bytes(a))
}

impl SegmentLog {
    /// Opens (creating if needed) the log in `dir` and recovers it. Blocking: call it from a
    /// blocking thread.
    ///
    /// Recovery: interrupted merges are finished, stray temporary files removed; sealed
    /// segments load their index file or, when it is missing or stale, are scanned (any bad
    /// batch is `Corrupt`); the active segment
    /// is always scanned and a torn tail is cut (truncate + fsync); segments entirely below the
    /// start checkpoint are deleted; the segments must continue each other's offsets.
    ///
    /// # Errors
    /// I/O errors and [`StorageError::Corrupt`].
    pub fn open_blocking(dir: &Path, cfg: &LogConfig) -> Result<SegmentLog> {
        crate::fsutil::create_dir_durable(dir)?;
        finish_merges(dir)?;
        let mut bases = Vec::new();
        for entry in std::fs::read_dir(dir)
            .map_err(|e| StorageError::io(format!("listing {}", dir.display()), e))?
        {
            let entry =
                entry.map_err(|e| StorageError::io(format!("listing {}", dir.display()), e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".tmp") {
                remove_if_exists(&entry.path())?;
            } else if let Some(stem) = name.strip_suffix(".log") {
                let base: Offset = stem.parse().map_err(|_| StorageError::Corrupt {
                    path: entry.path(),
                    position: 0,
                    detail: "segment file name is not an offset".into(),
                })?;
                bases.push(base);
            }
        }
        bases.sort_unstable();
        let start_path = dir.join(START_FILE);
        let checkpoint = read_if_exists(&start_path)?
            .map(|b| decode_start(&start_path, &b))
            .transpose()?;
        let compacted_path = dir.join(COMPACTED_FILE);
        let compacted_upto = read_if_exists(&compacted_path)?
            .map(|b| decode_start(&compacted_path, &b))
            .transpose()?
            .unwrap_or(0);

        let interval = u64::from(cfg.index_interval_bytes);
        let mut segments: VecDeque<Segment> = VecDeque::new();
        let count = bases.len();
        for (i, base) in bases.into_iter().enumerate() {
            let path = dir.join(log_name(base));
            let file = Arc::new(open_rw(&path, false)?);
            let mut seg = Segment::new(base, path.clone(), file, interval);
            if let Some(prev) = segments.back() {
                let gap_ok = prev.base < compacted_upto && prev.next <= base;
                if prev.next != base && !gap_ok {
                    return Err(StorageError::Corrupt {
                        path,
                        position: 0,
                        detail: format!(
                            "segment starts at {base} but the previous one ends at {}",
                            prev.next
                        ),
                    });
                }
            }
            let is_tail = i + 1 == count;
            let index_path = dir.join(index_name(base));
            if !is_tail {
                let file_len = seg
                    .file
                    .metadata()
                    .map_err(|e| StorageError::io(format!("stat {}", path.display()), e))?
                    .len();
                let loaded =
                    read_if_exists(&index_path)?.and_then(|buf| index::decode(&buf, file_len));
                match loaded {
                    Some((s, ix)) => seg.install_index(ix, s.len, s.next, s.max_ts),
                    None => {
                        scan(&mut seg, false, base < compacted_upto)?;
                        write_atomic(&index_path, &index::encode(summary(&seg), &seg.index))?;
                    }
                }
            } else {
                remove_if_exists(&index_path)?;
                let scanned = scan(&mut seg, true, false)?;
                if scanned.valid_len < scanned.file_len {
                    seg.file.set_len(scanned.valid_len).map_err(|e| {
                        StorageError::io(format!("truncating torn tail of {}", path.display()), e)
                    })?;
                    seg.file
                        .sync_all()
                        .map_err(|e| StorageError::io(format!("syncing {}", path.display()), e))?;
                }
                if !seg.is_empty() {
                    seg.first_append_ms = Some(now_ms());
                }
            }
            segments.push_back(seg);
        }

        // A log with no segment (new) or whose every segment lies below the checkpoint gets an
        // empty active segment at the end offset.
        let end = segments
            .back()
            .map_or(checkpoint.unwrap_or(0), |s| s.next)
            .max(checkpoint.unwrap_or(0));
        let first_base = segments.front().map_or(end, |s| s.base);
        let start = match checkpoint {
            // Compaction may have emptied what lay between the start and the first segment.
            Some(c) if first_base <= compacted_upto => c,
            Some(c) => c.max(first_base),
            None => first_base,
        }
        .min(end);
        if segments
            .back()
            .is_none_or(|s| s.next < end || s.next <= start && !s.is_empty())
        {
            let seg = create_segment(dir, end, interval)?;
            segments.push_back(seg);
        }
        // Delete sealed segments entirely below the start (a retention that crashed midway);
        // not an empty first segment at the start (compaction emptied it; it anchors the start).
        while segments.len() > 1
            && segments
                .front()
                .is_some_and(|s| s.next <= start && !(s.is_empty() && s.base == start))
        {
            if let Some(s) = segments.pop_front() {
                delete_segment_files(dir, &s)?;
            }
        }
        let size_bytes = segments.iter().map(|s| s.len).sum();
        let cleaner = read_if_exists(&dir.join(CLEANER_FILE))?
            .and_then(|b| CleanerCheckpoint::decode(&b, end))
            .unwrap_or_default();
        let active = segments
            .back()
            .map(|s| s.file.clone())
            .ok_or_else(|| StorageError::Backend("no active segment after recovery".into()))?;
        // The write cursor goes to the end of the committed data.
        {
            use std::io::Seek;
            let len = segments.back().map_or(0, |s| s.len);
            (&*active)
                .seek(std::io::SeekFrom::Start(len))
                .map_err(|e| StorageError::io(format!("seeking in {}", dir.display()), e))?;
        }
        Ok(SegmentLog {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                cfg: RwLock::new(cfg.clone()),
                state: RwLock::new(State {
                    segments,
                    start,
                    size_bytes,
                    compacted_upto,
                }),
                writer: Mutex::new(Writer {
                    file: active,
                    last_sync: Instant::now(),
                    unsynced: false,
                }),
                failed: Mutex::new(None),
                closed: AtomicBool::new(false),
                syncing: AtomicBool::new(false),
                cleaner: Mutex::new(cleaner),
                closing: AtomicBool::new(false),
            }),
        })
    }

    /// The directory this log lives in.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Number of segment files, for tests and metrics.
    pub fn segment_count(&self) -> usize {
        self.inner.read_state().segments.len()
    }
}

fn summary(seg: &Segment) -> SegmentSummary {
    SegmentSummary {
        len: seg.len,
        next: seg.next,
        max_ts: seg.max_ts,
    }
}

fn create_segment(dir: &Path, base: Offset, interval: u64) -> Result<Segment> {
    let path = dir.join(log_name(base));
    let file = open_rw(&path, true)?;
    // An existing file at this name can only be an empty leftover.
    file.set_len(0)
        .map_err(|e| StorageError::io(format!("truncating {}", path.display()), e))?;
    sync_dir(dir)?;
    Ok(Segment::new(base, path, Arc::new(file), interval))
}

fn delete_segment_files(dir: &Path, seg: &Segment) -> Result<()> {
    remove_if_exists(&seg.path)?;
    remove_if_exists(&dir.join(index_name(seg.base)))
}

/// Writes all of `bufs` with `writev`, continuing after short writes.
fn write_all_vectored(mut file: &File, bufs: &mut [IoSlice<'_>]) -> std::io::Result<()> {
    let mut bufs = bufs;
    while !bufs.is_empty() {
        let n = file.write_vectored(bufs)?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut bufs, n);
    }
    Ok(())
}

impl Inner {
    fn read_state(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_state(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    fn config(&self) -> LogConfig {
        self.cfg.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn check_usable(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StorageError::Closed);
        }
        if let Some(reason) = self
            .failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        {
            return Err(StorageError::Failed { reason });
        }
        Ok(())
    }

    /// Takes the writer and checks the log is usable.
    fn writer(&self) -> Result<MutexGuard<'_, Writer>> {
        let w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        self.check_usable()?;
        Ok(w)
    }

    /// Marks the log failed (fail-stop) and passes the error on.
    fn fail(&self, e: StorageError) -> StorageError {
        if e.is_fatal() {
            let mut failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
            failed.get_or_insert_with(|| e.to_string());
        }
        e
    }

    /// A failed append's error. A write that found no room is cut back to `len`, where it
    /// started, with the file cursor: nothing of it stays and the log remains usable. Any other
    /// failure, or a failed cut, fails the log.
    fn undo_append(&self, file: &File, len: u64, e: std::io::Error) -> StorageError {
        let context = format!("appending to {}", self.dir.display());
        if !StorageError::is_out_of_space(&e) {
            return self.fail(StorageError::io(context, e));
        }
        let mut cursor = file;
        match file
            .set_len(len)
            .and_then(|()| cursor.seek(SeekFrom::Start(len)))
        {
            Ok(_) => StorageError::NoSpace { context, source: e },
            Err(cut) => self.fail(StorageError::io(
                format!("{context}, cutting back a write that found no room ({e})"),
                cut,
            )),
        }
    }

    /// [`Inner::fail`], except for a file operation that found no room and left the log as it
    /// was (a roll's index or new segment file): [`StorageError::NoSpace`], the log stays usable.
    fn fail_unless_no_room(&self, e: StorageError) -> StorageError {
        match e {
            StorageError::Io { context, source } if StorageError::is_out_of_space(&source) => {
                StorageError::NoSpace { context, source }
            }
            e => self.fail(e),
        }
    }

    fn sync_writer(&self, w: &mut Writer) -> Result<()> {
        if w.unsynced {
            w.file.sync_data().map_err(|e| {
                self.fail(StorageError::io(
                    format!("fsync in {}", self.dir.display()),
                    e,
                ))
            })?;
            w.unsynced = false;
        }
        w.last_sync = Instant::now();
        Ok(())
    }

    /// fsyncs `file` on another blocking thread, at most one such sync at a time.
    fn background_sync(self: &Arc<Self>, file: Arc<File>) {
        if self.syncing.swap(true, Ordering::AcqRel) {
            return;
        }
        let inner = self.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = file.sync_data() {
                inner.fail(StorageError::io(
                    format!("fsync in {}", inner.dir.display()),
                    e,
                ));
            }
            inner.syncing.store(false, Ordering::Release);
        });
    }

    /// Makes everything written so far durable without holding appends back for the fsync.
    fn sync_blocking(&self) -> Result<()> {
        let file = {
            let mut w = self.writer()?;
            if !w.unsynced {
                return Ok(());
            }
            w.unsynced = false;
            w.last_sync = Instant::now();
            w.file.clone()
        };
        file.sync_data().map_err(|e| {
            self.fail(StorageError::io(
                format!("fsync in {}", self.dir.display()),
                e,
            ))
        })
    }

    fn append_blocking(self: &Arc<Self>, batches: Vec<Batch>) -> Result<AppendInfo> {
        let mut w = self.writer()?;
        let (end, active_len, active_age) = {
            let st = self.read_state();
            let active = st.segments.back();
            (
                st.end(),
                active.map_or(0, |s| s.len),
                active.and_then(|s| s.first_append_ms).map(|t| now_ms() - t),
            )
        };
        // The batches are written as they came (often slices of a request's buffer) behind
        // their stored header prefixes: the offsets are never written into the batches, which
        // would copy each one.
        let info = plan_offsets(&batches, end)?;
        let total: u64 = batches.iter().map(|b| b.len() as u64).sum();
        let cfg = self.config();
        let too_big = active_len > 0 && active_len + total > cfg.segment_bytes;
        let too_old = active_age.is_some_and(|age| age >= cfg.segment_ms as i64);
        if too_big || too_old {
            self.roll(&mut w, end)?;
        }
        let prefixes: Vec<[u8; STORED_PREFIX_LEN]> = batches
            .iter()
            .zip(&info.base_offsets)
            .map(|(b, &base)| b.stored_prefix(base, NO_LEADER_EPOCH))
            .collect();
        let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(2 * batches.len());
        for (b, prefix) in batches.iter().zip(&prefixes) {
            slices.push(IoSlice::new(prefix));
            slices.push(IoSlice::new(&b.as_bytes()[STORED_PREFIX_LEN..]));
        }
        let from = if too_big || too_old { 0 } else { active_len };
        if let Err(e) = write_all_vectored(&w.file, &mut slices) {
            return Err(self.undo_append(&w.file, from, e));
        }
        w.unsynced = true;
        match cfg.durability {
            Durability::Always => self.sync_writer(&mut w)?,
            Durability::Interval { interval_ms } => {
                if w.last_sync.elapsed().as_millis() >= u128::from(interval_ms) {
                    // The fsync runs beside the appends, not in their way: a sync of a second
                    // of writes can take hundreds of ms, and appends meanwhile only need the
                    // page cache. Its failure fails the log like any other.
                    w.last_sync = Instant::now();
                    w.unsynced = false;
                    self.background_sync(w.file.clone());
                }
            }
            Durability::None => {}
        }
        let mut st = self.write_state();
        let now = now_ms();
        let Some(active) = st.segments.back_mut() else {
            return Err(self.fail(StorageError::Backend("log has no active segment".into())));
        };
        active.first_append_ms.get_or_insert(now);
        for (b, &base) in batches.iter().zip(&info.base_offsets) {
            active.note_batch(BatchInfo::stored_at(b, base));
        }
        st.size_bytes += total;
        Ok(info)
    }

    /// Seals the active segment (fsync, index file) and starts a new one at `end`.
    fn roll(&self, w: &mut Writer, end: Offset) -> Result<()> {
        w.unsynced = true;
        self.sync_writer(w)?;
        let (base, encoded) = {
            let st = self.read_state();
            let Some(active) = st.segments.back() else {
                return Err(StorageError::Backend("log has no active segment".into()));
            };
            (active.base, index::encode(summary(active), &active.index))
        };
        write_atomic(&self.dir.join(index_name(base)), &encoded)
            .map_err(|e| self.fail_unless_no_room(e))?;
        let interval = u64::from(self.config().index_interval_bytes);
        let seg =
            create_segment(&self.dir, end, interval).map_err(|e| self.fail_unless_no_room(e))?;
        w.file = seg.file.clone();
        w.unsynced = false;
        self.write_state().segments.push_back(seg);
        Ok(())
    }

    /// Moves the start to `new_start` and deletes the segments entirely below it.
    fn truncate_front(&self, w: &mut Writer, new_start: Offset) -> Result<Offset> {
        let (start, end, active_below) = {
            let st = self.read_state();
            let active_below = st
                .segments
                .back()
                .is_some_and(|s| !s.is_empty() && s.next <= new_start);
            (st.start, st.end(), active_below)
        };
        let new_start = new_start.min(end).max(start);
        if new_start == start {
            return Ok(start);
        }
        // Durable first: after a crash the checkpoint wins and leftover files are cleaned up.
        write_atomic(&self.dir.join(START_FILE), &encode_start(new_start))
            .map_err(|e| self.fail(e))?;
        if active_below {
            self.roll(w, end)?;
        }
        let removed: Vec<Segment> = {
            let mut st = self.write_state();
            st.start = new_start;
            let mut removed = Vec::new();
            while st.segments.len() > 1 && st.segments.front().is_some_and(|s| s.next <= new_start)
            {
                if let Some(s) = st.segments.pop_front() {
                    st.size_bytes -= s.len;
                    removed.push(s);
                }
            }
            removed
        };
        if !removed.is_empty() {
            for s in &removed {
                delete_segment_files(&self.dir, s).map_err(|e| self.fail(e))?;
            }
            sync_dir(&self.dir).map_err(|e| self.fail(e))?;
        }
        Ok(new_start)
    }

    fn plan(&self, from: Offset) -> Result<Option<(ReadPlan, Offset)>> {
        let st = self.read_state();
        check_range(from, st.offsets())?;
        // Before the first segment only when compaction deleted what held the start.
        let mut i = st.segment_for(from).unwrap_or(0);
        // An empty segment, or one that ends at or before `from`: move on.
        while let Some(s) = st.segments.get(i) {
            if from < s.next && !s.is_empty() {
                return Ok(Some((st.read_plan(s, from), s.next)));
            }
            i += 1;
        }
        Ok(None)
    }
}

/// Calls `f` with each batch of the segment `plan` reads, `base..next`, in order, with its byte
/// position, until `f` returns `false`.
fn for_each_batch(
    plan: &ReadPlan,
    base: Offset,
    next: Offset,
    mut f: impl FnMut(Batch, u64) -> Result<bool>,
) -> Result<()> {
    let mut plan = plan.clone();
    let mut from = base;
    while from < next && plan.pos < plan.len {
        let batches = read_batches(&plan, from, COMPACTION_READ_BYTES)?;
        if batches.is_empty() {
            break;
        }
        for b in batches {
            let (pos, len) = (plan.pos, b.len() as u64);
            from = b.next_offset();
            plan.pos += len;
            if !f(b, pos)? {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// A sealed segment of a compaction pass.
struct Closed {
    /// Its position among the log's segments when the pass began.
    at: usize,
    base: Offset,
    next: Offset,
    len: u64,
    max_ts: i64,
    plan: ReadPlan,
}

/// The replacement of one segment being written: `<base>.cleaned.tmp`.
struct Rewrite {
    path: PathBuf,
    file: File,
    infos: Vec<BatchInfo>,
}

impl Inner {
    /// One compaction pass (module docs; the rules are `weir_storage::compaction`'s).
    fn compact_blocking(
        &self,
        policy: CompactionPolicy,
        now_ms: i64,
    ) -> Result<Option<CompactionStats>> {
        let mut checkpoint = self.cleaner.lock().unwrap_or_else(|e| e.into_inner());
        let (start, closed) = {
            let st = self.read_state();
            let sealed = st.segments.len().saturating_sub(1);
            let closed: Vec<Closed> = st
                .segments
                .iter()
                .enumerate()
                .take(sealed)
                .filter(|(_, s)| !s.is_empty())
                .take_while(|(_, s)| policy.is_cleanable(s.max_ts, now_ms))
                .map(|(at, s)| Closed {
                    at,
                    base: s.base,
                    next: s.next,
                    len: s.len,
                    max_ts: s.max_ts,
                    plan: st.read_plan(s, s.base),
                })
                .collect();
            (st.start, closed)
        };
        let Some(closed_end) = closed.last().map(|c| c.next) else {
            return Ok(None);
        };
        let closed_bytes = closed.iter().map(|c| c.len).sum();
        let dirty = || closed.iter().filter(|c| c.next > checkpoint.cleaned_upto);
        let dirty_bytes = dirty().map(|c| c.len).sum();
        let oldest_dirty_ms = dirty().next().map(|c| c.max_ts);
        if !checkpoint.is_due(&policy, closed_bytes, dirty_bytes, oldest_dirty_ms, now_ms) {
            return Ok(None);
        }

        // First pass: every key's latest offset, from the start to where the map fills.
        let mut map = KeyMap::new(policy.max_keys);
        let mut full = false;
        for c in &closed {
            for_each_batch(&c.plan, c.base, c.next, |b, _| {
                if b.next_offset() <= start {
                    return Ok(true);
                }
                full = b.next_offset() > closed_end
                    || !map.add_from_start(&b, checkpoint.cleaned_upto);
                Ok(!full)
            })?;
            if full {
                break;
            }
        }
        let mut stats = map.pass_stats(&checkpoint);
        let upto = stats.cleaned_upto;

        // Second pass: the segments below `upto`, in groups that fit in one segment together;
        // a group of one that loses anything is rewritten and swapped, a larger group is
        // merged into one segment.
        let tombstones = policy.tombstones(now_ms);
        let below: Vec<&Closed> = closed.iter().take_while(|c| c.base < upto).collect();
        for group in merge_groups(&below, self.config().segment_bytes) {
            // A log closing or failed meanwhile is left as it is.
            if self.closing.load(Ordering::Acquire) {
                return Err(StorageError::Closed);
            }
            self.check_usable()?;
            let first = group[0];
            // A merge writes every batch anew; a lone segment only from its first change on.
            let mut rewrite: Option<Rewrite> = match group.len() {
                1 => None,
                _ => Some(self.start_rewrite(first, 0, Vec::new())?),
            };
            let mut infos = Vec::new();
            for c in &group {
                for_each_batch(&c.plan, c.base, c.next, |b, pos| {
                    let cleaned = if b.next_offset() <= start || b.next_offset() > upto {
                        Cleaned::Unchanged
                    } else {
                        map.clean(&b, tombstones, &mut stats)?
                    };
                    if cleaned != Cleaned::Unchanged && rewrite.is_none() {
                        rewrite = Some(self.start_rewrite(c, pos, std::mem::take(&mut infos))?);
                    }
                    let kept = match cleaned {
                        Cleaned::Unchanged => Some(b),
                        Cleaned::Rewritten(nb) => Some(nb),
                        Cleaned::Removed => None,
                    };
                    if let Some(kept) = kept {
                        match &mut rewrite {
                            Some(r) => {
                                (&r.file).write_all(kept.as_bytes()).map_err(|e| {
                                    StorageError::io(format!("writing {}", r.path.display()), e)
                                })?;
                                r.infos.push(BatchInfo::of(&kept));
                            }
                            None => infos.push(BatchInfo::of(&kept)),
                        }
                    }
                    Ok(true)
                })?;
            }
            if let Some(r) = rewrite {
                self.swap_segments(&group, r, upto)?;
            }
        }
        *checkpoint = CleanerCheckpoint::after(&stats);
        write_atomic(&self.dir.join(CLEANER_FILE), &checkpoint.encode())?;
        Ok(Some(stats))
    }

    /// Starts the replacement of `c` at the first batch that changes (at byte `pos`): the bytes
    /// before it are copied as they are.
    fn start_rewrite(&self, c: &Closed, pos: u64, infos: Vec<BatchInfo>) -> Result<Rewrite> {
        let path = self.dir.join(format!("{:020}.cleaned.tmp", c.base));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| StorageError::io(format!("creating {}", path.display()), e))?;
        let mut copied = 0u64;
        let mut buf = vec![0u8; COMPACTION_READ_BYTES.min(pos as usize)];
        while copied < pos {
            let n = (pos - copied).min(buf.len() as u64) as usize;
            std::os::unix::fs::FileExt::read_exact_at(&*c.plan.file, &mut buf[..n], copied)
                .map_err(|e| StorageError::io(format!("reading {}", c.plan.path.display()), e))?;
            (&file)
                .write_all(&buf[..n])
                .map_err(|e| StorageError::io(format!("writing {}", path.display()), e))?;
            copied += n as u64;
        }
        Ok(Rewrite { path, file, infos })
    }

    /// Puts the rewrite of `group` in place, under the writer lock so that no append, roll or
    /// retention interleaves. A lone segment's rewrite is renamed over it. A merge is renamed
    /// to `<base>.<end>.swap` first (from then on it is decided: recovery finishes it, see
    /// [`finish_merges`]), then the group's files are deleted and the swap file becomes the
    /// first segment's `.log`. A group left with nothing is deleted, except the log's first
    /// segment, which stays (empty) to anchor the start.
    fn swap_segments(&self, group: &[&Closed], r: Rewrite, upto: Offset) -> Result<()> {
        let synced = r
            .file
            .sync_all()
            .map_err(|e| StorageError::io(format!("syncing {}", r.path.display()), e));
        let discard = |e: StorageError| {
            let _ = std::fs::remove_file(&r.path);
            e
        };
        synced.map_err(discard)?;
        let (Some(first), Some(last)) = (group.first(), group.last()) else {
            return remove_if_exists(&r.path);
        };
        // Also checks the log is still usable (not closed meanwhile).
        let _w = self.writer().map_err(discard)?;
        let (at, compacted_upto) = {
            let st = self.read_state();
            (position_of(&st.segments, group), st.compacted_upto)
        };
        let Some(at) = at else {
            // Retention deleted some of it meanwhile.
            return remove_if_exists(&r.path);
        };
        if compacted_upto < upto {
            // Durable before any gap exists on disk.
            write_atomic(&self.dir.join(COMPACTED_FILE), &encode_start(upto)).map_err(discard)?;
            self.write_state().compacted_upto = upto;
        }
        let replaced = at..at + group.len();
        if r.infos.is_empty() && at > 0 {
            let removed: Vec<Segment> = {
                let mut st = self.write_state();
                let removed: Vec<Segment> = st.segments.drain(replaced).collect();
                st.size_bytes -= removed.iter().map(|s| s.len).sum::<u64>();
                removed
            };
            remove_if_exists(&r.path).map_err(|e| self.fail(e))?;
            for s in &removed {
                delete_segment_files(&self.dir, s).map_err(|e| self.fail(e))?;
            }
            return sync_dir(&self.dir).map_err(|e| self.fail(e));
        }
        let log_path = self.dir.join(log_name(first.base));
        let rename = |from: &Path, to: &Path| {
            std::fs::rename(from, to).map_err(|e| {
                self.fail(StorageError::io(
                    format!("renaming {} to {}", from.display(), to.display()),
                    e,
                ))
            })
        };
        // The old index goes before the new file takes its name: were both to meet after a
        // crash with equal lengths, the index would pass for the new file's.
        let remove = |path: PathBuf| remove_if_exists(&path).map_err(|e| self.fail(e));
        if group.len() > 1 {
            let swap = self.dir.join(swap_name(first.base, last.next));
            rename(&r.path, &swap)?;
            sync_dir(&self.dir).map_err(|e| self.fail(e))?;
            for c in &group[1..] {
                remove(self.dir.join(log_name(c.base)))?;
                remove(self.dir.join(index_name(c.base)))?;
            }
            remove(self.dir.join(index_name(first.base)))?;
            rename(&swap, &log_path)?;
        } else {
            remove(self.dir.join(index_name(first.base)))?;
            rename(&r.path, &log_path)?;
        }
        sync_dir(&self.dir).map_err(|e| self.fail(e))?;
        let mut seg = Segment::new(
            first.base,
            log_path,
            Arc::new(r.file),
            u64::from(self.config().index_interval_bytes),
        );
        for info in r.infos {
            seg.note_batch(info);
        }
        write_atomic(
            &self.dir.join(index_name(first.base)),
            &index::encode(summary(&seg), &seg.index),
        )
        .map_err(|e| self.fail(e))?;
        let mut st = self.write_state();
        let gone: u64 = st.segments.drain(replaced).map(|s| s.len).sum();
        st.size_bytes = st.size_bytes - gone + seg.len;
        st.segments.insert(at, seg);
        Ok(())
    }
}

/// Where `group` lies in `segments`: side by side, each as the compaction pass read it.
fn position_of(segments: &VecDeque<Segment>, group: &[&Closed]) -> Option<usize> {
    let first = group.first()?;
    let at = segments
        .iter()
        .position(|s| s.base == first.base && s.len == first.len)?;
    group
        .iter()
        .enumerate()
        .all(|(k, c)| {
            segments
                .get(at + k)
                .is_some_and(|s| s.base == c.base && s.len == c.len)
        })
        .then_some(at)
}

/// Splits the segments a pass cleans into runs of neighbours (adjacent in the log) whose bytes
/// together fit in one segment (`segment.bytes`), as Kafka's cleaner groups them: each run is
/// written back as one segment, so a compacted log does not keep one ever smaller file per
/// segment it ever rolled.
fn merge_groups<'a>(segments: &[&'a Closed], segment_bytes: u64) -> Vec<Vec<&'a Closed>> {
    let mut groups: Vec<Vec<&Closed>> = Vec::new();
    let mut bytes = 0;
    for &c in segments {
        match groups.last_mut() {
            Some(g)
                if g.last().is_some_and(|p| p.at + 1 == c.at) && bytes + c.len <= segment_bytes =>
            {
                g.push(c);
                bytes += c.len;
            }
            _ => {
                groups.push(vec![c]);
                bytes = c.len;
            }
        }
    }
    groups
}

/// The name of a decided merge of the segments from `base` to `end` (exclusive).
fn swap_name(base: Offset, end: Offset) -> String {
    format!("{base:020}.{end:020}.swap")
}

/// Finishes the merges a crash interrupted: a `<base>.<end>.swap` file holds the merged
/// segments whose bases lie in `base..end`; those still there are deleted (with their
/// indexes) and the swap file becomes `<base>.log`.
fn finish_merges(dir: &Path) -> Result<()> {
    let mut swaps = Vec::new();
    let mut bases = Vec::new();
    for entry in std::fs::read_dir(dir)
        .map_err(|e| StorageError::io(format!("listing {}", dir.display()), e))?
    {
        let entry = entry.map_err(|e| StorageError::io(format!("listing {}", dir.display()), e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(stem) = name.strip_suffix(".swap") {
            let range = stem
                .split_once('.')
                .and_then(|(b, e)| Some((b.parse::<Offset>().ok()?, e.parse::<Offset>().ok()?)));
            let Some((base, end)) = range else {
                return Err(StorageError::Corrupt {
                    path: entry.path(),
                    position: 0,
                    detail: "merge file name is not <base>.<end>.swap".into(),
                });
            };
            swaps.push((base, end, entry.path()));
        } else if let Some(base) = name
            .strip_suffix(".log")
            .and_then(|s| s.parse::<Offset>().ok())
        {
            bases.push(base);
        }
    }
    for (base, end, path) in &swaps {
        for b in bases.iter().filter(|b| (*base..*end).contains(b)) {
            remove_if_exists(&dir.join(log_name(*b)))?;
            remove_if_exists(&dir.join(index_name(*b)))?;
        }
        remove_if_exists(&dir.join(index_name(*base)))?;
        std::fs::rename(path, dir.join(log_name(*base)))
            .map_err(|e| StorageError::io(format!("finishing the merge {}", path.display()), e))?;
    }
    if !swaps.is_empty() {
        sync_dir(dir)?;
    }
    Ok(())
}

#[async_trait]
impl PartitionLog for SegmentLog {
    fn reconfigure(&self, cfg: &LogConfig) {
        *self.inner.cfg.write().unwrap_or_else(|e| e.into_inner()) = cfg.clone();
    }

    async fn append(&self, batches: Vec<Batch>) -> Result<AppendInfo> {
        self.inner.check_usable()?;
        let inner = self.inner.clone();
        blocking(move || inner.append_blocking(batches)).await
    }

    async fn append_then(&self, batches: Vec<Batch>, done: AppendDone) -> Result<AppendInfo> {
        if let Err(e) = self.inner.check_usable() {
            let e = Err(e);
            done(&e);
            return e;
        }
        let inner = self.inner.clone();
        let finished = blocking(move || {
            let result = inner.append_blocking(batches);
            done(&result);
            result
        })
        .await;
        // `done` has run unless the blocking task itself did not (a panic, a runtime going
        // away): then `done` was dropped with its replies, which tells their receivers.
        finished
    }

    async fn read(&self, from: Offset, max_bytes: usize) -> Result<Vec<Batch>> {
        self.inner.check_usable()?;
        let Some((plan, _)) = self.inner.plan(from)? else {
            return Ok(Vec::new());
        };
        blocking(move || read_batches(&plan, from, max_bytes)).await
    }

    async fn read_within(&self, from: Offset, max_bytes: usize) -> Result<Vec<Batch>> {
        self.inner.check_usable()?;
        let Some((plan, _)) = self.inner.plan(from)? else {
            return Ok(Vec::new());
        };
        blocking(move || read_batches_within(&plan, from, max_bytes)).await
    }

    fn offsets(&self) -> LogOffsets {
        self.inner.read_state().offsets()
    }

    async fn offset_for_time(&self, timestamp_ms: i64) -> Result<Option<Offset>> {
        self.inner.check_usable()?;
        // Candidate segments, in order: those holding a batch with a max timestamp >= target.
        let candidates: Vec<Offset> = {
            let st = self.inner.read_state();
            st.segments
                .iter()
                .filter(|s| !s.is_empty() && s.max_ts >= timestamp_ms && s.next > st.start)
                .map(|s| s.offset_for_time_hint(timestamp_ms).max(st.start))
                .collect()
        };
        for mut from in candidates {
            loop {
                let Some((plan, seg_next)) = self.inner.plan(from)? else {
                    break;
                };
                let batches = blocking(move || read_batches(&plan, from, 1 << 20)).await?;
                let start = self.inner.read_state().start;
                if let Some(found) = offset_for_time_in(batches.iter(), timestamp_ms, start)? {
                    return Ok(Some(found));
                }
                from = batches.last().map_or(seg_next, Batch::next_offset);
                if from >= seg_next {
                    break;
                }
            }
        }
        Ok(None)
    }

    async fn max_timestamp_offset(&self, below: Offset) -> Result<Option<Offset>> {
        self.inner.check_usable()?;
        // Each segment knows its largest batch timestamp: the largest of those below `below`,
        // with the batches of a segment `below` cuts (a last stable offset inside it) read up
        // to it, is the log's, and the first record at that time is where `offset_for_time`
        // finds it, reading one segment from its time index. A segment's figure can only be
        // too high (compaction may have removed the batch it came from): then no record below
        // `below` has that time, and the whole log is read instead.
        let (claimed, cut) = {
            let st = self.inner.read_state();
            let live = st
                .segments
                .iter()
                .filter(|s| !s.is_empty() && s.next > st.start && s.base < below);
            let (mut claimed, mut cut) = (None, None);
            for s in live {
                if below < s.next {
                    cut = Some(s.base);
                    break;
                }
                claimed = claimed.max(Some(s.max_ts));
            }
            (claimed, cut)
        };
        let tail = match cut {
            Some(base) => largest_timestamp(self, base, below).await?,
            None => None,
        };
        if let Some(ts) = claimed.max(tail.map(|(ts, _)| ts)) {
            if let Some(found) = self.offset_for_time(ts).await? {
                if found < below {
                    return Ok(Some(found));
                }
            }
        }
        max_timestamp_by_scan(self, below).await
    }

    async fn delete_before(&self, offset: Offset) -> Result<Offset> {
        self.inner.check_usable()?;
        let inner = self.inner.clone();
        blocking(move || {
            let mut w = inner.writer()?;
            inner.truncate_front(&mut w, offset)
        })
        .await
    }

    async fn enforce_retention(&self, retention: Retention, now_ms: i64) -> Result<Offset> {
        self.inner.check_usable()?;
        let inner = self.inner.clone();
        blocking(move || {
            let mut w = inner.writer()?;
            let new_start = {
                let st = inner.read_state();
                let units = st.segments.iter().filter(|s| !s.is_empty()).map(|s| Unit {
                    max_timestamp_ms: s.max_ts,
                    size_bytes: s.len,
                });
                let cut = retention_cut(units, st.size_bytes, retention, now_ms);
                if cut == 0 {
                    return Ok(st.start);
                }
                // The first segment that stays starts the log (after compaction its base may
                // lie past where the segment before it ends).
                st.segments
                    .iter()
                    .filter(|s| !s.is_empty())
                    .nth(cut)
                    .map_or(st.end(), |s| s.base)
            };
            inner.truncate_front(&mut w, new_start)
        })
        .await
    }

    async fn sync(&self) -> Result<()> {
        self.inner.check_usable()?;
        let inner = self.inner.clone();
        blocking(move || inner.sync_blocking()).await
    }

    async fn compact(
        &self,
        policy: CompactionPolicy,
        now_ms: i64,
    ) -> Result<Option<CompactionStats>> {
        self.inner.check_usable()?;
        let inner = self.inner.clone();
        blocking(move || inner.compact_blocking(policy, now_ms)).await
    }

    async fn save_snapshot(&self, snapshot: &[u8]) -> Result<()> {
        self.inner.check_usable()?;
        let path = self.inner.dir.join(SNAPSHOT_FILE);
        let snapshot = snapshot.to_vec();
        // Not through `fail`: a snapshot that could not be written leaves the log intact.
        blocking(move || write_atomic(&path, &snapshot)).await
    }

    async fn load_snapshot(&self) -> Result<Option<Vec<u8>>> {
        self.inner.check_usable()?;
        let path = self.inner.dir.join(SNAPSHOT_FILE);
        blocking(move || read_if_exists(&path)).await
    }

    async fn close(&self) -> Result<()> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Ok(());
        }
        self.inner.closing.store(true, Ordering::Release);
        let inner = self.inner.clone();
        let r = blocking(move || {
            // A compaction pass in flight finishes its segment first.
            let _cleaner = inner.cleaner.lock().unwrap_or_else(|e| e.into_inner());
            let mut w = inner.writer()?;
            inner.sync_writer(&mut w)
        })
        .await;
        self.inner.closed.store(true, Ordering::Release);
        r
    }
}
