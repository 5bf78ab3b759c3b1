//! One segment file: a run of whole batches with consecutive offsets, named by its base offset.
//!
//! A [`Segment`] is the in-memory view of one `.log` file: its committed length (what readers
//! may see), the next offset after its last batch, its max timestamp and its indexes. The log
//! mutates it under its state lock only after the bytes are written (and synced when the
//! durability asks for it), so a reader never sees a length that covers unwritten bytes.
//!
//! [`scan`] walks a file batch by batch, checking each batch's framing, CRC-32C, leader epoch
//! and that its base offset continues the previous one. It is the recovery of the active
//! segment and the rebuild of a sealed segment whose index file is missing or stale. For the
//! active segment a bad batch is a torn tail only if no valid batch follows it anywhere in the
//! file; then the file is cut there. Anything else is [`StorageError::Corrupt`].
//!
//! [`read_batches`] serves reads: one `pread` of a window starting at the indexed position,
//! batches sliced out of it without copying, each re-validated (CRC) before it is served.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use weir_storage::batch::{HEADER_LEN, LOG_OVERHEAD};
use weir_storage::log::NO_LEADER_EPOCH;
use weir_storage::{Batch, Offset, Result, StorageError};

use crate::index::{OffsetEntry, SegmentIndex, TimeEntry};

/// How much a scan reads per `pread`.
const SCAN_WINDOW: usize = 4 * 1024 * 1024;
/// The smallest window a read asks for; small windows cost a syscall per few batches.
const MIN_READ_WINDOW: usize = 64 * 1024;

/// File name of the segment with base offset `base` (`00000000000000000042.log`).
pub(crate) fn log_name(base: Offset) -> String {
    format!("{base:020}.log")
}

/// File name of the index of the segment with base offset `base`.
pub(crate) fn index_name(base: Offset) -> String {
    format!("{base:020}.index")
}

/// The in-memory state of one segment.
#[derive(Debug)]
pub(crate) struct Segment {
    pub base: Offset,
    pub path: PathBuf,
    pub file: Arc<File>,
    /// Committed bytes: readers never look past this.
    pub len: u64,
    /// The offset after the last batch (`base` when empty).
    pub next: Offset,
    /// Largest batch max timestamp, `i64::MIN` when empty.
    pub max_ts: i64,
    pub index: SegmentIndex,
    last_index_pos: Option<u64>,
    last_time_pos: u64,
    index_interval: u64,
    /// Wall-clock ms when the segment got its first batch (or was recovered), for roll by age.
    pub first_append_ms: Option<i64>,
}

/// The facts about one batch a segment records.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchInfo {
    pub base: Offset,
    pub next: Offset,
    pub max_ts: i64,
    pub len: u64,
}

impl BatchInfo {
    pub(crate) fn of(b: &Batch) -> Self {
        Self::stored_at(b, b.base_offset())
    }

    /// The facts about `b` once stored at `base` (its own header may still say otherwise).
    pub(crate) fn stored_at(b: &Batch, base: Offset) -> Self {
        BatchInfo {
            base,
            next: base + i64::from(b.last_offset_delta()) + 1,
            max_ts: b.max_timestamp(),
            len: b.len() as u64,
        }
    }
}

impl Segment {
    pub(crate) fn new(base: Offset, path: PathBuf, file: Arc<File>, index_interval: u64) -> Self {
        Segment {
            base,
            path,
            file,
            len: 0,
            next: base,
            max_ts: i64::MIN,
            index: SegmentIndex::default(),
            last_index_pos: None,
            last_time_pos: 0,
            index_interval: index_interval.max(1),
            first_append_ms: None,
        }
    }

    /// Records a batch written at the current end of the segment.
    pub(crate) fn note_batch(&mut self, b: BatchInfo) {
        let pos = self.len;
        if self
            .last_index_pos
            .is_none_or(|p| pos - p >= self.index_interval)
        {
            self.index.offsets.push((b.base, pos));
            self.last_index_pos = Some(pos);
        }
        if self.max_ts != i64::MIN && pos - self.last_time_pos >= self.index_interval {
            self.index.times.push((self.max_ts, b.base));
            self.last_time_pos = pos;
        }
        self.max_ts = self.max_ts.max(b.max_ts);
        self.len += b.len;
        self.next = b.next;
    }

    /// Installs an index loaded from a sealed segment's index file.
    pub(crate) fn install_index(
        &mut self,
        index: SegmentIndex,
        len: u64,
        next: Offset,
        max_ts: i64,
    ) {
        self.last_index_pos = index.offsets.iter().last().map(|e| e.1);
        self.last_time_pos = len;
        self.index = index;
        self.len = len;
        self.next = next;
        self.max_ts = max_ts;
    }

    /// The byte position to start scanning from to find offset `from`.
    pub(crate) fn position_for(&self, from: Offset) -> u64 {
        self.index
            .offsets
            .last_at_or_before(from, |e: &OffsetEntry| e.0)
            .map_or(0, |e| e.1)
    }

    /// The first offset at which a batch with a max timestamp `>= ts` can start.
    pub(crate) fn offset_for_time_hint(&self, ts: i64) -> Offset {
        self.index
            .times
            .last_before(ts, |e: &TimeEntry| e.0)
            .map_or(self.base, |e| e.1)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// What a scan found.
#[derive(Debug)]
pub(crate) struct Scanned {
    /// Bytes of whole, valid batches from the start of the file.
    pub valid_len: u64,
    /// The file length before any cut.
    pub file_len: u64,
}

fn corrupt(path: &Path, position: u64, detail: impl Into<String>) -> StorageError {
    StorageError::Corrupt {
        path: path.to_path_buf(),
        position,
        detail: detail.into(),
    }
}

/// Reads `n` bytes of `file` at `pos` into a new buffer, through `pread` into its spare
/// capacity: a buffer zeroed first (as `read_exact_at` needs) cost the fetch path a `memset` of
/// every byte it served, 11% of a broker's CPU while serving a librdkafka consumer.
fn read_at(file: &File, path: &Path, n: usize, pos: u64) -> Result<Vec<u8>> {
    let failed =
        |e: std::io::Error| StorageError::io(format!("reading {} at {pos}", path.display()), e);
    let mut buf = Vec::with_capacity(n);
    while buf.len() < n {
        let at = pos + buf.len() as u64;
        match rustix::io::pread(file, rustix::buffer::spare_capacity(&mut buf), at) {
            Ok(0) => return Err(failed(std::io::ErrorKind::UnexpectedEof.into())),
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(failed(e.into())),
        }
    }
    // (Should the buffer have had room past `n`, the bytes there are not this read's.)
    buf.truncate(n);
    Ok(buf)
}

/// Checks one candidate batch at the start of `buf`: framing, CRC, leader epoch and base offset
/// (`expected_base`, or with `gaps` at least that: a compacted segment).
fn check_batch(
    buf: &Bytes,
    expected_base: Offset,
    gaps: bool,
) -> std::result::Result<Batch, String> {
    let len = Batch::frame_len(buf).map_err(|e| e.to_string())?;
    let batch = Batch::new(buf.slice(..len)).map_err(|e| e.to_string())?;
    if batch.partition_leader_epoch() != NO_LEADER_EPOCH {
        return Err(format!(
            "partition leader epoch {} where Weir writes {NO_LEADER_EPOCH}",
            batch.partition_leader_epoch()
        ));
    }
    let base = batch.base_offset();
    if base < expected_base || !gaps && base != expected_base {
        return Err(format!(
            "base offset {base} where {expected_base} was expected"
        ));
    }
    Ok(batch)
}

/// Scans a segment from byte 0, feeding every valid batch to `seg`.
///
/// With `tail == true` (the active segment) the first bad batch ends the scan when nothing valid
/// follows it (a torn tail: the caller truncates to `valid_len`); otherwise, and for sealed
/// segments always, a bad batch is `Corrupt`. With `gaps` (a compacted segment) a batch may
/// start after the offset the one before it ends at.
pub(crate) fn scan(seg: &mut Segment, tail: bool, gaps: bool) -> Result<Scanned> {
    let path = seg.path.clone();
    let file_len = seg
        .file
        .metadata()
        .map_err(|e| StorageError::io(format!("stat {}", path.display()), e))?
        .len();
    let mut pos = 0u64;
    let mut window = Bytes::new();
    let mut window_pos = 0u64;
    while pos < file_len {
        // Make sure the window holds at least the 12-byte length prefix at `pos`.
        let in_window = |window: &Bytes, window_pos: u64, need: u64| {
            pos >= window_pos && pos + need <= window_pos + window.len() as u64
        };
        let need_header = (LOG_OVERHEAD as u64).min(file_len - pos);
        if !in_window(&window, window_pos, need_header) {
            let n = (file_len - pos).min(SCAN_WINDOW as u64) as usize;
            window = Bytes::from(read_at(&seg.file, &path, n, pos)?);
            window_pos = pos;
        }
        let off = (pos - window_pos) as usize;
        let len = Batch::peek_len(&window[off..]).ok().map(|l| l as u64);
        let bad = match len {
            None => Some("truncated or invalid batch length".to_string()),
            Some(l) if pos + l > file_len => Some(format!("batch of {l} bytes runs past the end")),
            Some(l) => {
                if !in_window(&window, window_pos, l) {
                    window = Bytes::from(read_at(&seg.file, &path, l as usize, pos)?);
                    window_pos = pos;
                }
                let off = (pos - window_pos) as usize;
                match check_batch(&window.slice(off..off + l as usize), seg.next, gaps) {
                    Ok(batch) => {
                        seg.note_batch(BatchInfo::of(&batch));
                        pos += l;
                        None
                    }
                    Err(e) => Some(e),
                }
            }
        };
        if let Some(detail) = bad {
            if !tail {
                return Err(corrupt(&path, pos, detail));
            }
            if let Some(later) = find_valid_batch_after(seg, pos + 1, file_len)? {
                return Err(corrupt(
                    &path,
                    pos,
                    format!("{detail}; a valid batch follows at byte {later}, so this is not a torn tail"),
                ));
            }
            return Ok(Scanned {
                valid_len: pos,
                file_len,
            });
        }
    }
    Ok(Scanned {
        valid_len: pos,
        file_len,
    })
}

/// Looks for any position at or after `from` where a whole valid batch with a plausible base
/// offset (at or after the segment's next offset) starts. Candidates must carry magic 2 and
/// Weir's leader epoch before their CRC is computed, which keeps the search cheap.
fn find_valid_batch_after(seg: &Segment, from: u64, file_len: u64) -> Result<Option<u64>> {
    if from >= file_len {
        return Ok(None);
    }
    let buf = Bytes::from(read_at(
        &seg.file,
        &seg.path,
        (file_len - from) as usize,
        from,
    )?);
    let epoch = NO_LEADER_EPOCH.to_be_bytes();
    for i in 0..buf.len().saturating_sub(HEADER_LEN - 1) {
        if buf[i + 16] != 2 || buf[i + 12..i + 16] != epoch {
            continue;
        }
        let Ok(len) = Batch::frame_len(&buf[i..]) else {
            continue;
        };
        if let Ok(b) = Batch::new(buf.slice(i..i + len)) {
            if b.base_offset() >= seg.next {
                return Ok(Some(from + i as u64));
            }
        }
    }
    Ok(None)
}

/// A consistent snapshot of what a read may look at in one segment.
#[derive(Debug, Clone)]
pub(crate) struct ReadPlan {
    pub path: PathBuf,
    pub file: Arc<File>,
    /// Where to start scanning (from the offset index).
    pub pos: u64,
    /// The committed length of the segment at snapshot time.
    pub len: u64,
    /// Whether batches may leave gaps between them (compaction removed what was there), so
    /// that the first batch served may start after the offset asked for.
    pub gaps: bool,
}

/// Reads whole batches from one segment, starting with the batch holding `from` (with
/// `plan.gaps`, the first batch that ends after it), up to `max_bytes` (at least one batch).
/// Every batch is CRC-checked and must continue the offsets of the one before it (with gaps:
/// start at or after where it ends); anything else is `Corrupt`, never served.
pub(crate) fn read_batches(plan: &ReadPlan, from: Offset, max_bytes: usize) -> Result<Vec<Batch>> {
    read_window(plan, from, max_bytes, true)
}

/// [`read_batches`] strictly within `max_bytes`: a first batch that does not fit is left
/// unread (its header, in the window read, tells its length).
pub(crate) fn read_batches_within(
    plan: &ReadPlan,
    from: Offset,
    max_bytes: usize,
) -> Result<Vec<Batch>> {
    read_window(plan, from, max_bytes, false)
}

fn read_window(
    plan: &ReadPlan,
    from: Offset,
    max_bytes: usize,
    min_one_batch: bool,
) -> Result<Vec<Batch>> {
    let mut out: Vec<Batch> = Vec::new();
    let mut total = 0usize;
    let mut pos = plan.pos;
    let window_len = (max_bytes.saturating_add(MIN_READ_WINDOW)).max(MIN_READ_WINDOW) as u64;
    let mut window = Bytes::new();
    let mut window_pos = pos;
    while pos < plan.len {
        let rel = pos - window_pos;
        if rel + LOG_OVERHEAD as u64 > window.len() as u64 {
            if !out.is_empty() && total >= max_bytes {
                break;
            }
            let n = (plan.len - pos).min(window_len) as usize;
            window = Bytes::from(read_at(&plan.file, &plan.path, n, pos)?);
            window_pos = pos;
        }
        let rel = (pos - window_pos) as usize;
        let len =
            Batch::peek_len(&window[rel..]).map_err(|e| corrupt(&plan.path, pos, e.to_string()))?;
        if pos + len as u64 > plan.len {
            return Err(corrupt(
                &plan.path,
                pos,
                "batch runs past the committed end",
            ));
        }
        // Skipping a batch below `from` needs only its header.
        let needs_body = !out.is_empty() || {
            let hdr_end = rel + HEADER_LEN;
            let hdr = if hdr_end <= window.len() {
                window.slice(rel..hdr_end)
            } else {
                Bytes::from(read_at(&plan.file, &plan.path, HEADER_LEN, pos)?)
            };
            let base = i64::from_be_bytes(hdr[0..8].try_into().expect("8 bytes"));
            let lod = i32::from_be_bytes(hdr[23..27].try_into().expect("4 bytes"));
            base + lod as i64 >= from
        };
        if !needs_body {
            pos += len as u64;
            continue;
        }
        if (!out.is_empty() || !min_one_batch) && total + len > max_bytes {
            break;
        }
        let bytes = if rel + len <= window.len() {
            window.slice(rel..rel + len)
        } else if out.is_empty() {
            Bytes::from(read_at(&plan.file, &plan.path, len, pos)?)
        } else {
            // Re-read the window from here on the next turn.
            window = Bytes::new();
            window_pos = pos;
            continue;
        };
        let batch = Batch::new(bytes).map_err(|e| corrupt(&plan.path, pos, e.to_string()))?;
        if batch.partition_leader_epoch() != NO_LEADER_EPOCH {
            return Err(corrupt(
                &plan.path,
                pos,
                "unexpected partition leader epoch",
            ));
        }
        if let Some(prev) = out.last() {
            let base = batch.base_offset();
            if base < prev.next_offset() || !plan.gaps && base != prev.next_offset() {
                return Err(corrupt(
                    &plan.path,
                    pos,
                    format!(
                        "base offset {} does not continue {}",
                        batch.base_offset(),
                        prev.next_offset()
                    ),
                ));
            }
        } else if !plan.gaps && batch.base_offset() > from || batch.next_offset() <= from {
            return Err(corrupt(
                &plan.path,
                pos,
                format!(
                    "batch {}..{} where offset {from} was expected",
                    batch.base_offset(),
                    batch.next_offset()
                ),
            ));
        }
        total += len;
        pos += len as u64;
        out.push(batch);
    }
    Ok(out)
}
