//! Log compaction (Kafka's `cleanup.policy=compact`): the rule every backend applies, so that
//! they keep the same records for the same log.
//!
//! A compacted log keeps, for every key, at least its latest record: older records of a key go,
//! offsets never change, and a consumer that reads from the start still ends up with the latest
//! value of every key. Kafka's rules, which clients and tools (Kafka Connect, Schema Registry,
//! Kafka Streams changelogs) rely on:
//!
//! - Only the closed part of the log is compacted, never its head: a backend's sealed segments
//!   (the active one is the head), or for a backend without segments every batch but the
//!   newest; and of those only the leading ones whose newest timestamp is at least
//!   [`CompactionPolicy::min_lag_ms`] old (`min.compaction.lag.ms`). A consumer that keeps up
//!   with the head sees every record.
//! - A record survives when no later record of the closed part has its key. A record without a
//!   key has nothing to be the latest of and goes, as in Kafka (a compacted topic refuses such
//!   records on produce; they exist only if the topic was switched from `delete`).
//! - A tombstone (a key with a null value) that is its key's latest record stays for
//!   [`CompactionPolicy::delete_retention_ms`] (`delete.retention.ms`) after the first pass
//!   that kept it, so that a consumer that is behind still sees the delete; then it goes too.
//!   As in Kafka since KIP-534, that pass stamps the batch with its *delete horizon* (now plus
//!   the retention: the base timestamp, with attribute bit 6 set; records keep their
//!   timestamps), and the first pass at or after the horizon removes the batch's tombstones.
//!   The clock is the broker's, never the record's timestamp (a producer may stamp records
//!   with any time: a replay or a mirror keeps the original ones), and it lives in the batch,
//!   so it survives restarts.
//! - Offsets stay as they were. A batch whose records partly survive is rewritten with the same
//!   base offset and last offset delta (so a producer's last sequence number survives), its
//!   producer identity and its codec ([`Batch::filtered`]); a batch with no survivor goes, except
//!   the last batch of each idempotent producer in the range, which is kept whole so that the
//!   producer's sequence state can still be rebuilt from the log after a restart. The log
//!   therefore has gaps between batches after compaction; readers serve the batch holding an
//!   offset or, if compaction removed it, the next one.
//! - Batches whose records do not decode or whose record offsets do not ascend inside the
//!   batch are kept unchanged (counted in [`CompactionStats::unreadable_batches`]) and their
//!   keys are not mapped; control batches map no keys either.
//! - Transactions (Kafka's cleaner reads the same from its transaction index): a transactional
//!   batch's keys count only once its producer's commit marker follows in the range; an
//!   aborted transaction's batches never shadow anything and are removed (but for a
//!   producer's last batch, kept whole as above); a transaction without its marker in the
//!   range is still open, and the pass neither compacts nor counts anything from its first
//!   batch on (Kafka's cleaner stops at the last stable offset). A commit marker whose
//!   transaction has no batch left goes like a tombstone (stamped with a delete horizon, gone
//!   after it), unless it follows its producer's last data batch; abort markers stay (see
//!   [`KeyMap::clean`]).
//! - A pass runs when at least [`CompactionPolicy::min_cleanable_dirty_ratio`] of the closed
//!   part is dirty (not compacted by an earlier pass), when a tombstone an earlier pass kept has
//!   expired, or when the oldest dirty unit is older than [`CompactionPolicy::max_lag_ms`]
//!   (`max.compaction.lag.ms`).
//!
//! Data flow: a backend picks its closed part and asks [`CleanerCheckpoint::is_due`] whether a
//! pass is due. The first pass
//! feeds the closed part's batches from the log start to a [`KeyMap`]
//! ([`KeyMap::add_from_start`]): the dirty batches' keys, every batch's producer, up to where
//! the map is full ([`KeyMap::upto`]). The second pass sends every batch below that through
//! [`KeyMap::clean`] (the part compacted before loses the keys the dirty part overwrote) and
//! the backend replaces what changed, atomically per unit (a segment, or a batch). The map
//! holds 128-bit hashes of the keys (two SipHash keyed at random per pass), not the keys, as
//! Kafka's cleaner holds digests: its memory is bounded by [`CompactionPolicy::max_keys`]
//! whatever the keys' size, and two keys would have to collide in all 128 bits for one to lose
//! a record it should keep.
//! [`pass_over_batches`] is the whole pass for a backend without segments, and the reference
//! the conformance suite holds every backend to.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;

use serde::{Deserialize, Serialize};

use crate::batch::{Batch, LogRecord, TxnMarker, DEFAULT_MAX_UNCOMPRESSED_BYTES};
use crate::{BatchError, Offset};

/// How a compacted log is cleaned.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CompactionPolicy {
    /// A pass runs once the closed part's bytes not yet compacted are at least this share of it
    /// (`min.cleanable.dirty.ratio`), or when a kept tombstone has expired.
    pub min_cleanable_dirty_ratio: f64,
    /// A batch is compacted only once its newest timestamp is at least this old.
    pub min_lag_ms: i64,
    /// A pass is due, however little is dirty, once the oldest dirty unit's newest timestamp
    /// is this old (`max.compaction.lag.ms`; `i64::MAX`: never).
    pub max_lag_ms: i64,
    /// A latest tombstone stays this long after its timestamp.
    pub delete_retention_ms: i64,
    /// The most distinct keys one pass maps; a pass stops before the batch that could exceed it
    /// (the rest waits for the next pass). About 40 bytes of memory per key.
    pub max_keys: usize,
    /// Transaction markers at or above this offset stay whatever their transaction kept: the
    /// log's owner replays the log from here after a restart (its last durable snapshot of
    /// the transaction state) and must meet every marker there. 0: no marker goes.
    pub markers_below: Offset,
}

impl Default for CompactionPolicy {
    /// Kafka's defaults: half the closed part dirty, no lag either way, tombstones kept a day;
    /// four million keys per pass; no marker removed (the owner says from where it may).
    fn default() -> Self {
        CompactionPolicy {
            min_cleanable_dirty_ratio: 0.5,
            min_lag_ms: 0,
            max_lag_ms: i64::MAX,
            delete_retention_ms: 24 * 60 * 60 * 1000,
            max_keys: 4 * 1024 * 1024,
            markers_below: 0,
        }
    }
}

impl CompactionPolicy {
    /// Whether a batch whose newest timestamp is `max_timestamp_ms` may be compacted at `now_ms`.
    pub fn is_cleanable(&self, max_timestamp_ms: i64, now_ms: i64) -> bool {
        max_timestamp_ms <= now_ms.saturating_sub(self.min_lag_ms.max(0))
    }

    /// The clock a pass at `now_ms` judges tombstones by.
    pub fn tombstones(&self, now_ms: i64) -> TombstoneClock {
        TombstoneClock {
            now_ms,
            delete_retention_ms: self.delete_retention_ms.max(0),
            markers_below: self.markers_below,
        }
    }
}

/// When tombstones (and commit markers) go (module docs): a batch whose delete horizon has
/// come loses the tombstones it still holds; a batch without one that keeps a tombstone gets
/// `now_ms + delete_retention_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TombstoneClock {
    /// The time of the pass.
    pub now_ms: i64,
    /// `delete.retention.ms`.
    pub delete_retention_ms: i64,
    /// [`CompactionPolicy::markers_below`].
    pub markers_below: Offset,
}

impl TombstoneClock {
    /// The horizon a pass now stamps on a batch that keeps a tombstone.
    pub fn new_horizon(&self) -> i64 {
        self.now_ms.saturating_add(self.delete_retention_ms)
    }

    /// Whether the tombstones of a batch with this delete horizon go.
    pub fn expired(&self, horizon_ms: Option<i64>) -> bool {
        horizon_ms.is_some_and(|h| self.now_ms >= h)
    }
}

/// What one compaction pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CompactionStats {
    /// Below this offset the log is now compacted: the end of the last batch the pass mapped,
    /// or where the pass before it stopped when it mapped nothing new.
    pub cleaned_upto: Offset,
    /// Records the first pass mapped (those of the dirty part).
    pub records_read: u64,
    /// Records removed.
    pub records_removed: u64,
    /// Bytes of the batches below `cleaned_upto` before and after the pass.
    pub bytes_before: u64,
    /// See `bytes_before`.
    pub bytes_after: u64,
    /// Dirty batches the first pass could not map (records that do not decode, or offsets
    /// that do not ascend inside the batch); they stay unchanged.
    pub unreadable_batches: u64,
    /// The earliest delete horizon of a tombstone or transaction marker the pass kept: a pass
    /// is due then.
    pub tombstone_due_ms: Option<i64>,
    /// The lowest commit marker the pass kept only for [`CompactionPolicy::markers_below`]: a
    /// pass is due once that floor passes it.
    pub held_marker: Option<Offset>,
}

impl CompactionStats {
    fn note(&mut self, before: &Batch, after: &Cleaned) {
        self.bytes_before += before.len() as u64;
        match after {
            Cleaned::Unchanged => self.bytes_after += before.len() as u64,
            Cleaned::Rewritten(b) => {
                self.bytes_after += b.len() as u64;
                self.records_removed += (before.record_count() - b.record_count()).max(0) as u64;
            }
            Cleaned::Removed => self.records_removed += before.record_count().max(0) as u64,
        }
    }
}

const CHECKPOINT_VERSION: u8 = 1;
/// Version, three offsets or times, CRC.
const CHECKPOINT_LEN: usize = 1 + 3 * 8 + 4;

/// What a log remembers between passes. Backends that persist (segment, sled) keep it beside
/// the log ([`CleanerCheckpoint::encode`], as Kafka keeps its `cleaner-offset-checkpoint`), so
/// that a restart does not take the whole closed part for dirty again; one lost or damaged
/// costs a pass over the closed part, nothing else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CleanerCheckpoint {
    /// Where the last pass stopped: the closed part below it is compacted.
    pub cleaned_upto: Offset,
    /// When a tombstone the last pass kept expires.
    pub tombstone_due_ms: Option<i64>,
    /// The lowest commit marker the last pass kept only for the owner's floor
    /// ([`CompactionPolicy::markers_below`]).
    pub held_marker: Option<Offset>,
}

impl CleanerCheckpoint {
    /// Whether a pass is worth running: the closed part holds `closed_bytes`, of which
    /// `dirty_bytes` lie at or after [`CleanerCheckpoint::cleaned_upto`], the oldest of them in a
    /// unit whose newest timestamp is `oldest_dirty_ms`.
    pub fn is_due(
        &self,
        policy: &CompactionPolicy,
        closed_bytes: u64,
        dirty_bytes: u64,
        oldest_dirty_ms: Option<i64>,
        now_ms: i64,
    ) -> bool {
        let dirty = dirty_bytes > 0
            && dirty_bytes as f64 >= policy.min_cleanable_dirty_ratio * closed_bytes as f64;
        let overdue = dirty_bytes > 0
            && oldest_dirty_ms.is_some_and(|t| t <= now_ms.saturating_sub(policy.max_lag_ms));
        let floor_passed = self.held_marker.is_some_and(|o| o < policy.markers_below);
        dirty || overdue || floor_passed || self.tombstone_due_ms.is_some_and(|t| t <= now_ms)
    }

    /// The checkpoint as bytes: a version byte, `cleaned_upto`, the tombstone due time and the
    /// held marker (`i64::MIN` for none), big-endian, and a CRC-32C of the rest.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(CHECKPOINT_LEN);
        v.push(CHECKPOINT_VERSION);
        v.extend_from_slice(&self.cleaned_upto.to_be_bytes());
        v.extend_from_slice(&self.tombstone_due_ms.unwrap_or(i64::MIN).to_be_bytes());
        v.extend_from_slice(&self.held_marker.unwrap_or(i64::MIN).to_be_bytes());
        let crc = crc32c::crc32c(&v);
        v.extend_from_slice(&crc.to_be_bytes());
        v
    }

    /// Reads [`CleanerCheckpoint::encode`]'s bytes; `None` for anything else (a damaged or
    /// unknown checkpoint is forgotten: it only saves work). `cleaned_upto` is capped at `end`,
    /// the log's end as recovered (below a checkpoint past it, new records would pass for
    /// clean).
    pub fn decode(buf: &[u8], end: Offset) -> Option<Self> {
        let (body, crc) = buf.split_at_checked(CHECKPOINT_LEN - 4)?;
        let crc = u32::from_be_bytes(crc.try_into().ok()?);
        let [version, rest @ ..] = body else {
            return None;
        };
        if *version != CHECKPOINT_VERSION || crc32c::crc32c(body) != crc {
            return None;
        }
        let field = |i: usize| {
            let bytes = rest.get(8 * i..8 * i + 8)?;
            let v = i64::from_be_bytes(bytes.try_into().ok()?);
            Some((v != i64::MIN).then_some(v))
        };
        Some(CleanerCheckpoint {
            cleaned_upto: field(0)?.unwrap_or(0).clamp(0, end.max(0)),
            tombstone_due_ms: field(1)?,
            held_marker: field(2)?,
        })
    }

    /// The checkpoint after a pass that did `stats`.
    pub fn after(stats: &CompactionStats) -> Self {
        CleanerCheckpoint {
            cleaned_upto: stats.cleaned_upto,
            tombstone_due_ms: stats.tombstone_due_ms,
            held_marker: stats.held_marker,
        }
    }
}

/// What becomes of one batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cleaned {
    /// Every record survives (or the batch is kept whole): keep the stored bytes.
    Unchanged,
    /// Some records survive: store this batch (same offsets) in its place.
    Rewritten(Batch),
    /// No record survives: drop the batch.
    Removed,
}

/// The first pass of a compaction: every key's latest offset in the range fed so far.
#[derive(Debug)]
pub struct KeyMap {
    hashers: (RandomState, RandomState),
    latest: HashMap<u128, Offset>,
    /// The base offset of each idempotent producer's last data batch in the range.
    last_of_producer: HashMap<i64, Offset>,
    /// Per producer, the transaction whose marker has not come yet: its first offset and its
    /// keys (mapped once the commit comes).
    open_txns: HashMap<i64, (Offset, Vec<(u128, Offset)>)>,
    /// Keys held in `open_txns`.
    open_keys: usize,
    /// Aborted transactions in the range: (producer, first offset, marker offset).
    aborted: Vec<(i64, Offset, Offset)>,
    /// Second pass: per producer, whether a batch of its current transaction was kept (its
    /// marker must then stay).
    txn_kept: HashMap<i64, bool>,
    max_keys: usize,
    upto: Option<Offset>,
    records: u64,
    unreadable: u64,
}

impl KeyMap {
    /// An empty map that holds at most `max_keys` keys.
    pub fn new(max_keys: usize) -> Self {
        KeyMap {
            hashers: (RandomState::new(), RandomState::new()),
            latest: HashMap::new(),
            last_of_producer: HashMap::new(),
            open_txns: HashMap::new(),
            open_keys: 0,
            aborted: Vec::new(),
            txn_kept: HashMap::new(),
            max_keys,
            upto: None,
            records: 0,
            unreadable: 0,
        }
    }

    fn hash(&self, key: &[u8]) -> u128 {
        (u128::from(self.hashers.0.hash_one(key)) << 64) | u128::from(self.hashers.1.hash_one(key))
    }

    /// Takes in the next batch of the range (batches must come in offset order). Returns
    /// `false`, taking nothing, when its records could take the map past its key limit: the
    /// pass then compacts only what was fed before it. The first batch is always taken.
    pub fn add(&mut self, batch: &Batch) -> bool {
        let count = usize::try_from(batch.record_count()).unwrap_or(0);
        if self.upto.is_some() && self.latest.len() + self.open_keys + count > self.max_keys {
            return false;
        }
        self.upto = Some(batch.next_offset());
        let pid = batch.producer_id();
        if batch.is_control() {
            if pid >= 0 && batch.is_transactional() {
                self.end_txn(pid, batch);
            }
            return true;
        }
        if pid >= 0 {
            self.last_of_producer.insert(pid, batch.base_offset());
        }
        if !is_well_formed(batch) {
            self.unreadable += 1;
            return true;
        }
        let txn = pid >= 0 && batch.is_transactional();
        if txn {
            self.open_txns
                .entry(pid)
                .or_insert_with(|| (batch.base_offset(), Vec::new()));
        }
        // Two streams over the records (the check above, then the keys): the decoded records of
        // a small compressed batch could take far more memory than the batch, so they are never
        // all held at once.
        let mut records = 0u64;
        let mut keys = Vec::new();
        let decoded = batch.for_each_record(DEFAULT_MAX_UNCOMPRESSED_BYTES, |r| {
            records += 1;
            if let Some(key) = &r.record.key {
                let h = self.hash(key);
                if txn {
                    keys.push((h, r.offset));
                } else {
                    self.map_key(h, r.offset);
                }
            }
            true
        });
        debug_assert!(decoded.is_ok(), "checked just before");
        if let Some((_, held)) = self.open_txns.get_mut(&pid).filter(|_| txn) {
            self.open_keys += keys.len();
            held.extend(keys);
        }
        self.records += records;
        true
    }

    /// `key` has a record at `offset`: the latest unless a later one is mapped (a committed
    /// transaction's keys are mapped at its marker, after later records of others).
    fn map_key(&mut self, key: u128, offset: Offset) {
        let latest = self.latest.entry(key).or_insert(offset);
        *latest = (*latest).max(offset);
    }

    /// A marker of `pid`: its open transaction's keys are mapped (commit) or it is recorded as
    /// aborted.
    fn end_txn(&mut self, pid: i64, marker: &Batch) {
        let Some((first, keys)) = self.open_txns.remove(&pid) else {
            return;
        };
        self.open_keys -= keys.len();
        match TxnMarker::of(marker) {
            Some(m) if m.commit => {
                for (key, offset) in keys {
                    self.map_key(key, offset);
                }
            }
            Some(_) => self.aborted.push((pid, first, marker.base_offset())),
            // An unknown control type ends nothing; its producer's keys stay held.
            None => {
                self.open_keys += keys.len();
                self.open_txns.insert(pid, (first, keys));
            }
        }
    }

    /// Whether `batch` belongs to a transaction this pass saw aborted.
    fn is_aborted(&self, batch: &Batch) -> bool {
        let (pid, base) = (batch.producer_id(), batch.base_offset());
        batch.is_transactional()
            && self
                .aborted
                .iter()
                .any(|&(p, first, last)| p == pid && first <= base && base < last)
    }

    /// Takes in the next batch of a pass that starts at the log start: a batch below
    /// `cleaned_upto` (compacted by an earlier pass) counts only for its producer, whose last
    /// batch must stay whole; a batch at or after it is [`KeyMap::add`]ed.
    pub fn add_from_start(&mut self, batch: &Batch, cleaned_upto: Offset) -> bool {
        if batch.next_offset() > cleaned_upto {
            return self.add(batch);
        }
        if batch.producer_id() >= 0 && !batch.is_control() {
            self.last_of_producer
                .insert(batch.producer_id(), batch.base_offset());
        }
        true
    }

    /// The offset after the last batch taken in, or the first offset of a transaction still
    /// open there if that is lower: the batches below it are the ones to clean.
    pub fn upto(&self) -> Option<Offset> {
        let open = self.open_txns.values().map(|&(first, _)| first).min();
        match (self.upto, open) {
            (Some(u), Some(first)) => Some(u.min(first)),
            (u, _) => u,
        }
    }

    /// The stats of the pass this map ends: it compacts below the end of what the map took
    /// (never below where the pass before it stopped, `checkpoint`), and the records and
    /// unreadable batches the first pass met. The second pass adds its part
    /// ([`KeyMap::clean`]).
    pub fn pass_stats(&self, checkpoint: &CleanerCheckpoint) -> CompactionStats {
        let upto = self.upto().unwrap_or(checkpoint.cleaned_upto);
        CompactionStats {
            cleaned_upto: upto.max(checkpoint.cleaned_upto),
            records_read: self.records,
            unreadable_batches: self.unreadable,
            ..CompactionStats::default()
        }
    }

    /// Batches the first pass could not decode (kept unchanged by [`KeyMap::clean`]).
    pub fn unreadable_batches(&self) -> u64 {
        self.unreadable
    }

    /// Whether `r` survives: its key's latest record below `upto` (a record from an open
    /// transaction's first offset on shadows nothing yet, as Kafka's cleaner maps only below
    /// the last stable offset), and not a tombstone past the horizon.
    fn survives(&self, r: &LogRecord, tombstones_expired: bool, upto: Offset) -> bool {
        let Some(key) = &r.record.key else {
            return false;
        };
        // A key not in the map lies in the part an earlier pass compacted, or in a batch the
        // map did not take: it has no later record in the mapped range.
        let latest = self.latest.get(&self.hash(key)).copied();
        if latest.is_some_and(|l| l > r.offset && l < upto) {
            return false;
        }
        r.record.value.is_some() || !tombstones_expired
    }

    /// The second pass for one batch below [`KeyMap::upto`] (from the log start: the part an
    /// earlier pass compacted too): which of its records survive. Adds what it did to `stats`.
    ///
    /// # Errors
    /// Re-encoding a partly surviving batch failed (a compression error).
    pub fn clean(
        &mut self,
        batch: &Batch,
        tombstones: TombstoneClock,
        stats: &mut CompactionStats,
    ) -> Result<Cleaned, BatchError> {
        let cleaned = if batch.is_control() {
            self.clean_marker(batch, tombstones, stats)?
        } else {
            self.clean_batch(batch, tombstones, stats)?
        };
        if batch.is_transactional() && !batch.is_control() {
            *self.txn_kept.entry(batch.producer_id()).or_insert(false) |=
                cleaned != Cleaned::Removed;
        }
        stats.note(batch, &cleaned);
        Ok(cleaned)
    }

    /// A control batch: a commit marker whose transaction has no batch left goes
    /// `delete.retention.ms` after the pass that first found it so (stamped with a delete
    /// horizon, as a tombstone's batch is), as Kafka's cleaner removes such markers; without
    /// this a transactional compacted topic (Kafka Streams' exactly-once changelogs commit
    /// every 100 ms) would keep a marker per commit forever. A producer's markers after its
    /// last data batch stay (the newest carries its epoch for a replay of the log), and so do
    /// markers the owner may replay after a restart ([`CompactionPolicy::markers_below`]). Abort
    /// markers stay: the partition lists its aborted transactions to `read_committed`
    /// readers, who skip a producer's batches from an aborted transaction's first offset until
    /// they meet its marker.
    fn clean_marker(
        &mut self,
        batch: &Batch,
        tombstones: TombstoneClock,
        stats: &mut CompactionStats,
    ) -> Result<Cleaned, BatchError> {
        let pid = batch.producer_id();
        let kept = self.txn_kept.remove(&pid).unwrap_or(false);
        let commit = TxnMarker::of(batch).is_some_and(|m| m.commit);
        let producers_newest = self
            .last_of_producer
            .get(&pid)
            .is_none_or(|&last| last < batch.base_offset());
        if !commit || kept || producers_newest {
            return Ok(Cleaned::Unchanged);
        }
        if batch.base_offset() >= tombstones.markers_below {
            let o = batch.base_offset();
            stats.held_marker = Some(stats.held_marker.map_or(o, |h| h.min(o)));
            return Ok(Cleaned::Unchanged);
        }
        let horizon = batch.delete_horizon_ms();
        if tombstones.expired(horizon) {
            return Ok(Cleaned::Removed);
        }
        let due = horizon.unwrap_or_else(|| tombstones.new_horizon());
        stats.tombstone_due_ms = Some(stats.tombstone_due_ms.map_or(due, |d| d.min(due)));
        if horizon.is_some() {
            return Ok(Cleaned::Unchanged);
        }
        Ok(
            match batch.filtered_with_delete_horizon(|_| true, tombstones.new_horizon())? {
                Some(b) => Cleaned::Rewritten(b),
                None => Cleaned::Removed,
            },
        )
    }

    fn clean_batch(
        &self,
        batch: &Batch,
        tombstones: TombstoneClock,
        stats: &mut CompactionStats,
    ) -> Result<Cleaned, BatchError> {
        // An idempotent producer's last batch: no later batch of it below `upto`.
        let pid = batch.producer_id();
        if pid >= 0
            && self
                .last_of_producer
                .get(&pid)
                .is_none_or(|&last| last <= batch.base_offset())
        {
            return Ok(Cleaned::Unchanged);
        }
        if self.is_aborted(batch) {
            return Ok(Cleaned::Removed);
        }
        if !is_well_formed(batch) {
            return Ok(Cleaned::Unchanged);
        }
        // A first stream decides (and notes the tombstones that stay); only a batch that loses
        // records, or keeps a tombstone without a delete horizon yet, is re-encoded, by a
        // second one.
        let upto = self.upto().unwrap_or(Offset::MAX);
        let horizon = batch.delete_horizon_ms();
        let expired = tombstones.expired(horizon);
        let (mut removed, mut kept_tombstone) = (false, false);
        batch.for_each_record(DEFAULT_MAX_UNCOMPRESSED_BYTES, |r| {
            let survives = self.survives(&r, expired, upto);
            removed |= !survives;
            kept_tombstone |= survives && r.record.value.is_none();
            true
        })?;
        if kept_tombstone {
            let due = horizon.unwrap_or_else(|| tombstones.new_horizon());
            stats.tombstone_due_ms = Some(stats.tombstone_due_ms.map_or(due, |d| d.min(due)));
        }
        let keep = |r: &LogRecord| self.survives(r, expired, upto);
        let rebuilt = match (removed, kept_tombstone && horizon.is_none()) {
            (false, false) => return Ok(Cleaned::Unchanged),
            (_, true) => batch.filtered_with_delete_horizon(keep, tombstones.new_horizon())?,
            (true, false) => batch.filtered(keep)?,
        };
        Ok(match rebuilt {
            None => Cleaned::Removed,
            Some(b) => Cleaned::Rewritten(b),
        })
    }
}

/// Whether `batch`'s records decode and their offsets ascend strictly inside the batch's range
/// (a producer's batch need not: the broker stores it unread). A batch that is not well formed
/// is neither mapped nor cleaned: its keys could claim offsets it does not cover. Decodes one
/// record at a time.
pub fn is_well_formed(batch: &Batch) -> bool {
    let (base, last) = (batch.base_offset(), batch.last_offset());
    let mut prev: Option<Offset> = None;
    let mut ok = true;
    let decoded = batch.for_each_record(DEFAULT_MAX_UNCOMPRESSED_BYTES, |r| {
        ok = r.offset >= base && r.offset <= last && prev.is_none_or(|p| r.offset > p);
        prev = Some(r.offset);
        ok
    });
    decoded.is_ok() && ok
}

/// What a compacted topic checks of a produced batch (one record decoded at a time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyCheck {
    /// Well formed, and every record has a key.
    Keyed,
    /// The record at this offset delta has no key.
    Keyless {
        /// Its position in the batch.
        offset_delta: i64,
    },
    /// Not [`is_well_formed`].
    NotWellFormed,
}

/// Checks `batch` for a compacted topic: well formed, and a key on every record.
pub fn check_keys(batch: &Batch) -> KeyCheck {
    if !is_well_formed(batch) {
        return KeyCheck::NotWellFormed;
    }
    let mut keyless = None;
    let decoded = batch.for_each_record(DEFAULT_MAX_UNCOMPRESSED_BYTES, |r| {
        if r.record.key.is_none() {
            keyless = Some(r.offset - batch.base_offset());
        }
        keyless.is_none()
    });
    match (decoded, keyless) {
        (Err(_), _) => KeyCheck::NotWellFormed,
        (Ok(()), Some(offset_delta)) => KeyCheck::Keyless { offset_delta },
        (Ok(()), None) => KeyCheck::Keyed,
    }
}

/// `batches` (in offset order) with `changes` applied: rewritten batches in place of the
/// originals, removed ones left out, batches not named (or no longer there) as they were.
pub fn apply_changes(
    batches: impl IntoIterator<Item = Batch>,
    changes: Vec<(Offset, Cleaned)>,
) -> impl Iterator<Item = Batch> {
    let mut changes: HashMap<Offset, Cleaned> = changes.into_iter().collect();
    batches
        .into_iter()
        .filter_map(move |b| match changes.remove(&b.base_offset()) {
            Some(Cleaned::Removed) => None,
            Some(Cleaned::Rewritten(nb)) => Some(nb),
            Some(Cleaned::Unchanged) | None => Some(b),
        })
}

/// What a pass decided: the batches that change, by base offset, and the stats.
pub type PassOutcome = (Vec<(Offset, Cleaned)>, CompactionStats);

/// One pass over a log without segments (its closed part is every batch but the newest),
/// whose batches `scan` yields in offset order from the log start, anew on each call (a pass
/// scans up to three times: sizes, keys, cleaning). Returns `None` when the pass is not due;
/// else the batches that change, by base offset, and the stats.
///
/// # Errors
/// What `scan` yields, or a failed re-encoding.
pub fn pass_over_batches<I>(
    scan: impl Fn() -> I,
    checkpoint: &CleanerCheckpoint,
    policy: &CompactionPolicy,
    now_ms: i64,
) -> crate::Result<Option<PassOutcome>>
where
    I: Iterator<Item = crate::Result<Batch>>,
{
    // Sizes: the closed part is the cleanable prefix of every batch but the last.
    let mut summaries: Vec<(Offset, u64, i64)> = Vec::new();
    for b in scan() {
        let b = b?;
        summaries.push((b.next_offset(), b.len() as u64, b.max_timestamp()));
    }
    summaries.pop();
    let closed: Vec<_> = summaries
        .into_iter()
        .take_while(|&(_, _, ts)| policy.is_cleanable(ts, now_ms))
        .collect();
    let Some(&(closed_end, _, _)) = closed.last() else {
        return Ok(None);
    };
    let closed_bytes = closed.iter().map(|&(_, len, _)| len).sum();
    let dirty = || {
        closed
            .iter()
            .filter(|&&(next, _, _)| next > checkpoint.cleaned_upto)
    };
    let dirty_bytes = dirty().map(|&(_, len, _)| len).sum();
    let oldest_dirty_ms = dirty().next().map(|&(_, _, ts)| ts);
    if !checkpoint.is_due(policy, closed_bytes, dirty_bytes, oldest_dirty_ms, now_ms) {
        return Ok(None);
    }
    let mut map = KeyMap::new(policy.max_keys);
    for b in scan() {
        let b = b?;
        if b.next_offset() > closed_end || !map.add_from_start(&b, checkpoint.cleaned_upto) {
            break;
        }
    }
    let mut stats = map.pass_stats(checkpoint);
    let upto = stats.cleaned_upto;
    let tombstones = policy.tombstones(now_ms);
    let mut changes = Vec::new();
    for b in scan() {
        let b = b?;
        if b.next_offset() > upto {
            break;
        }
        let cleaned = map.clean(&b, tombstones, &mut stats)?;
        if cleaned != Cleaned::Unchanged {
            changes.push((b.base_offset(), cleaned));
        }
    }
    Ok(Some((changes, stats)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BatchBuilder, Compression, Record};

    const NOW: i64 = 1_700_000_000_000;

    /// A batch at `base` of (key, value) records, all stamped `ts`.
    fn batch(base: Offset, ts: i64, recs: &[(Option<&str>, Option<&str>)]) -> Batch {
        batch_with(Compression::None, base, ts, recs)
    }

    fn batch_with(
        c: Compression,
        base: Offset,
        ts: i64,
        recs: &[(Option<&str>, Option<&str>)],
    ) -> Batch {
        let mut b = BatchBuilder::new(c);
        for (k, v) in recs {
            b.push(Record {
                timestamp_ms: ts,
                key: k.map(|k| k.as_bytes().to_vec().into()),
                value: v.map(|v| v.as_bytes().to_vec().into()),
                headers: Vec::new(),
            });
        }
        b.build(base).expect("build")
    }

    fn offsets_and_values(b: &Batch) -> Vec<(Offset, Option<String>)> {
        b.records()
            .expect("decode")
            .into_iter()
            .map(|r| {
                let v = r
                    .record
                    .value
                    .map(|v| String::from_utf8_lossy(&v).into_owned());
                (r.offset, v)
            })
            .collect()
    }

    /// A pass at `now_ms` with a `delete.retention.ms` of 1000.
    fn clean(m: &mut KeyMap, b: &Batch, now_ms: i64) -> Result<Cleaned, BatchError> {
        m.clean(b, clock(now_ms), &mut CompactionStats::default())
    }

    fn clock(now_ms: i64) -> TombstoneClock {
        TombstoneClock {
            now_ms,
            delete_retention_ms: 1000,
            markers_below: Offset::MAX,
        }
    }

    fn map_of(batches: &[Batch]) -> KeyMap {
        let mut m = KeyMap::new(1000);
        for b in batches {
            assert!(m.add(b));
        }
        m
    }

    #[test]
    fn keeps_the_latest_record_of_each_key_at_its_offset() {
        let b0 = batch(0, NOW, &[(Some("a"), Some("1")), (Some("b"), Some("1"))]);
        let b1 = batch(2, NOW, &[(Some("a"), Some("2")), (Some("c"), Some("1"))]);
        let b2 = batch(4, NOW, &[(Some("b"), Some("2"))]);
        let mut m = map_of(&[b0.clone(), b1.clone(), b2.clone()]);
        assert_eq!(m.upto(), Some(5));
        assert_eq!(clean(&mut m, &b0, 0), Ok(Cleaned::Removed));
        assert_eq!(clean(&mut m, &b1, 0), Ok(Cleaned::Unchanged));
        assert_eq!(clean(&mut m, &b2, 0), Ok(Cleaned::Unchanged));

        let b3 = batch(5, NOW, &[(Some("a"), Some("3"))]);
        let mut m = map_of(&[b0, b1.clone(), b2, b3]);
        let Ok(Cleaned::Rewritten(r)) = clean(&mut m, &b1, 0) else {
            panic!("b1 loses a=2");
        };
        assert_eq!(offsets_and_values(&r), vec![(3, Some("1".into()))]);
        assert_eq!(r.base_offset(), 2);
        assert_eq!(r.last_offset_delta(), 1, "the batch still covers 2..=3");
        assert_eq!(r.record_count(), 1);
        Batch::new(r.as_bytes().clone()).expect("a valid batch");
    }

    #[test]
    fn rewritten_batches_keep_codec_producer_and_timestamps() {
        for c in Compression::ALL {
            let mut builder = BatchBuilder::new(c).producer(7, 3, 40);
            for (i, k) in ["x", "y", "x"].iter().enumerate() {
                builder.push(Record::new(NOW + i as i64, "v").with_key(*k));
            }
            let b = builder.build(10).expect("build");
            // A later batch of another producer makes this one not its producer's last.
            let later = BatchBuilder::new(c).producer(7, 3, 43);
            let mut later = later;
            later.push(Record::new(NOW + 5, "w").with_key("z"));
            let later = later.build(13).expect("build");
            let mut m = map_of(&[b.clone(), later]);
            let Ok(Cleaned::Rewritten(r)) = clean(&mut m, &b, 0) else {
                panic!("{c:?}: x@10 goes");
            };
            assert_eq!(r.compression(), Ok(c));
            assert_eq!(
                (r.producer_id(), r.producer_epoch(), r.base_sequence()),
                (7, 3, 40)
            );
            assert_eq!((r.base_offset(), r.last_offset()), (10, 12));
            let recs = r.records().expect("decode");
            assert_eq!(
                recs.iter().map(|r| r.offset).collect::<Vec<_>>(),
                vec![11, 12]
            );
            assert_eq!(
                recs.iter()
                    .map(|r| r.record.timestamp_ms)
                    .collect::<Vec<_>>(),
                vec![NOW + 1, NOW + 2]
            );
            assert_eq!((r.first_timestamp(), r.max_timestamp()), (NOW + 1, NOW + 2));
        }
    }

    #[test]
    fn the_last_batch_of_an_idempotent_producer_is_kept_whole() {
        let mut p = BatchBuilder::new(Compression::None).producer(9, 0, 0);
        p.push(Record::new(NOW, "old").with_key("k"));
        let p = p.build(0).expect("build");
        let newer = batch(1, NOW, &[(Some("k"), Some("new"))]);
        let mut m = map_of(&[p.clone(), newer]);
        assert_eq!(clean(&mut m, &p, 0), Ok(Cleaned::Unchanged));
    }

    #[test]
    fn tombstones_stay_until_their_delete_horizon_and_null_keys_go() {
        let b0 = batch(0, NOW, &[(Some("a"), Some("1")), (None, Some("nokey"))]);
        let b1 = batch(2, NOW, &[(Some("a"), None)]);
        let mut m = map_of(&[b0.clone(), b1.clone()]);
        assert_eq!(clean(&mut m, &b0, 0), Ok(Cleaned::Removed));
        // The first pass that keeps the tombstone stamps its batch with a delete horizon (now
        // plus the retention); the record keeps its offset and timestamp.
        let Ok(Cleaned::Rewritten(stamped)) = clean(&mut m, &b1, NOW + 5) else {
            panic!("stamped with a horizon");
        };
        assert_eq!(stamped.delete_horizon_ms(), Some(NOW + 1005));
        assert_eq!(b1.delete_horizon_ms(), None);
        let (r0, r1) = (
            b1.records().expect("decode"),
            stamped.records().expect("decode"),
        );
        assert_eq!(r1, r0);
        assert_eq!(stamped.max_timestamp(), NOW);
        // Later passes keep it as it is until the horizon, then it goes.
        assert_eq!(clean(&mut m, &stamped, NOW + 1004), Ok(Cleaned::Unchanged));
        assert_eq!(clean(&mut m, &stamped, NOW + 1005), Ok(Cleaned::Removed));
        // The record's own timestamp is no clock: a tombstone stamped long ago stays its
        // retention from the pass that first kept it.
        let old = batch(2, 1_000, &[(Some("a"), None)]);
        let Ok(Cleaned::Rewritten(old)) = clean(&mut m, &old, NOW) else {
            panic!("stamped with a horizon");
        };
        assert_eq!(old.delete_horizon_ms(), Some(NOW + 1000));
        assert_eq!(old.records().expect("decode")[0].record.timestamp_ms, 1_000);
        let p = CompactionPolicy {
            delete_retention_ms: 1000,
            ..CompactionPolicy::default()
        };
        assert_eq!(p.tombstones(NOW).new_horizon(), NOW + 1000);
        assert!(p.is_cleanable(NOW, NOW));
        let lagged = CompactionPolicy {
            min_lag_ms: 10,
            ..p
        };
        assert!(!lagged.is_cleanable(NOW, NOW + 9));
        assert!(lagged.is_cleanable(NOW, NOW + 10));
    }

    #[test]
    fn a_checkpoint_reads_back_and_a_damaged_one_is_forgotten() {
        let c = CleanerCheckpoint {
            cleaned_upto: 4711,
            tombstone_due_ms: Some(NOW),
            held_marker: Some(99),
        };
        let bytes = c.encode();
        assert_eq!(CleanerCheckpoint::decode(&bytes, 10_000), Some(c));
        let none = CleanerCheckpoint {
            tombstone_due_ms: None,
            held_marker: None,
            ..c
        };
        assert_eq!(
            CleanerCheckpoint::decode(&none.encode(), 10_000),
            Some(none)
        );
        // Past the recovered end (a tail lost in a crash): capped there.
        assert_eq!(
            CleanerCheckpoint::decode(&bytes, 100).map(|c| c.cleaned_upto),
            Some(100)
        );
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            assert_eq!(CleanerCheckpoint::decode(&bad, 10_000), None, "byte {i}");
        }
        assert_eq!(CleanerCheckpoint::decode(&bytes[..28], 10_000), None);
        assert_eq!(
            CleanerCheckpoint::decode(&[bytes.clone(), vec![0]].concat(), 10_000),
            None
        );
        assert_eq!(CleanerCheckpoint::decode(&[], 10_000), None);
    }

    #[test]
    fn a_full_map_stops_the_pass_and_unmapped_keys_stay() {
        let b0 = batch(0, NOW, &[(Some("a"), Some("1")), (Some("b"), Some("1"))]);
        let b1 = batch(2, NOW, &[(Some("a"), Some("2")), (Some("c"), Some("1"))]);
        let mut m = KeyMap::new(3);
        assert!(m.add(&b0));
        assert!(!m.add(&b1), "2 + 2 records could exceed 3 keys");
        assert_eq!(m.upto(), Some(2));
        assert_eq!(clean(&mut m, &b0, 0), Ok(Cleaned::Unchanged));
        // The first batch is taken whatever its size, so a pass always makes progress.
        let mut tiny = KeyMap::new(0);
        assert!(tiny.add(&b0));
        assert_eq!(tiny.upto(), Some(2));
    }

    #[test]
    fn undecodable_and_control_batches_are_kept() {
        let good = batch(0, NOW, &[(Some("a"), Some("1"))]);
        // A batch whose CRC is valid but whose record length runs past the end.
        let mut raw = batch(1, NOW, &[(Some("a"), Some("2"))])
            .into_bytes()
            .to_vec();
        raw[61] = 0x7e; // zig-zag 63
        let crc = crc32c::crc32c(&raw[21..]);
        raw[17..21].copy_from_slice(&crc.to_be_bytes());
        let bad = Batch::new(raw.into()).expect("header-valid");
        let mut m = KeyMap::new(10);
        assert!(m.add(&good) && m.add(&bad));
        assert_eq!(m.unreadable_batches(), 1);
        assert_eq!(clean(&mut m, &bad, 0), Ok(Cleaned::Unchanged));
        // The bad batch's key was not mapped, so the good one stays.
        assert_eq!(clean(&mut m, &good, 0), Ok(Cleaned::Unchanged));
    }

    #[test]
    fn batches_whose_record_offsets_leave_their_range_are_not_mapped() {
        // Two records both at offset delta 0, claiming the same offset: found by the
        // compaction fuzz target.
        let good = batch(0, NOW, &[(Some("a"), Some("1"))]);
        let twin = BatchBuilder::new(Compression::None);
        let mut twin = twin;
        twin.push(Record::new(NOW, "x").with_key("a"));
        twin.push(Record::new(NOW, "y").with_key("a"));
        let mut raw = twin.build(1).expect("build").into_bytes().to_vec();
        // The second record's offset delta (after length, attributes, timestamp delta) := 0.
        let first_len = usize::from(raw[61] >> 1) + 1;
        let second = 61 + first_len;
        assert_eq!(raw[second + 3], 2, "zig-zag 1");
        raw[second + 3] = 0;
        let crc = crc32c::crc32c(&raw[21..]);
        raw[17..21].copy_from_slice(&crc.to_be_bytes());
        let twin = Batch::new(raw.into()).expect("header-valid");
        assert_eq!(twin.records().expect("decodes")[1].offset, 1);
        let mut m = map_of(&[good.clone(), twin.clone()]);
        assert_eq!(m.unreadable_batches(), 1);
        assert_eq!(clean(&mut m, &twin, 0), Ok(Cleaned::Unchanged));
        assert_eq!(
            clean(&mut m, &good, 0),
            Ok(Cleaned::Unchanged),
            "a is not mapped from it"
        );
    }

    #[test]
    fn a_base_offset_at_the_bottom_of_the_range_does_not_overflow() {
        // Found by the compaction fuzz target: `base - 1` overflowed for base i64::MIN.
        let low = batch(
            i64::MIN,
            NOW,
            &[(Some("a"), Some("1")), (Some("a"), Some("2"))],
        );
        assert!(is_well_formed(&low));
        assert_eq!(check_keys(&low), KeyCheck::Keyed);
        let mut m = map_of(std::slice::from_ref(&low));
        let Ok(Cleaned::Rewritten(r)) = clean(&mut m, &low, 0) else {
            panic!("the first a goes");
        };
        assert_eq!(r.base_offset(), i64::MIN);
        assert_eq!(r.records().expect("decode")[0].offset, i64::MIN + 1);
    }

    #[test]
    fn stats_add_up_and_the_checkpoint_waits_for_dirt_or_an_expiring_tombstone() {
        let b0 = batch(0, NOW, &[(Some("a"), Some("1")), (Some("b"), Some("1"))]);
        let b1 = batch(2, NOW + 7, &[(Some("a"), Some("2")), (Some("b"), None)]);
        let mut m = map_of(&[b0.clone(), b1.clone()]);
        let mut s = CompactionStats {
            cleaned_upto: 4,
            ..CompactionStats::default()
        };
        let p = CompactionPolicy {
            delete_retention_ms: 100,
            ..CompactionPolicy::default()
        };
        let mut after = Vec::new();
        for b in [&b0, &b1] {
            after.push(m.clean(b, p.tombstones(NOW + 7), &mut s).expect("clean"));
        }
        let Cleaned::Rewritten(stamped) = &after[1] else {
            panic!("b1 keeps its records and gets a horizon: {after:?}");
        };
        assert_eq!(s.records_removed, 2);
        assert_eq!(s.bytes_before, (b0.len() + b1.len()) as u64);
        assert_eq!(s.bytes_after, stamped.len() as u64);
        assert_eq!(s.tombstone_due_ms, Some(NOW + 107));

        let c = CleanerCheckpoint::after(&s);
        assert_eq!(c.cleaned_upto, 4);
        assert!(
            !c.is_due(&p, 1000, 0, None, NOW + 106),
            "nothing dirty, tombstone alive"
        );
        assert!(
            c.is_due(&p, 1000, 0, None, NOW + 107),
            "the tombstone's horizon came"
        );
        let clean = CleanerCheckpoint::default();
        assert!(!clean.is_due(&p, 1000, 499, Some(NOW), NOW));
        assert!(clean.is_due(&p, 1000, 500, Some(NOW), NOW));
        assert!(!clean.is_due(&p, 0, 0, None, NOW), "an empty closed part");
        // max.compaction.lag.ms: a little dirt is due once its oldest unit is old enough.
        let max_lag = CompactionPolicy {
            max_lag_ms: 60,
            ..p
        };
        assert!(!clean.is_due(&max_lag, 1000, 10, Some(NOW), NOW + 59));
        assert!(clean.is_due(&max_lag, 1000, 10, Some(NOW), NOW + 60));
        assert!(
            !clean.is_due(&max_lag, 1000, 0, None, NOW + 600),
            "nothing dirty"
        );
    }

    /// Runs `pass_over_batches` on `log` and applies the changes, as a backend would.
    fn pass(log: &mut Vec<Batch>, cp: &mut CleanerCheckpoint, p: &CompactionPolicy) -> bool {
        pass_at(log, cp, p, NOW)
    }

    /// [`pass`] at `now`.
    fn pass_at(
        log: &mut Vec<Batch>,
        cp: &mut CleanerCheckpoint,
        p: &CompactionPolicy,
        now: i64,
    ) -> bool {
        let snapshot = log.clone();
        let scan = || snapshot.iter().cloned().map(Ok);
        let Some((changes, stats)) = pass_over_batches(scan, cp, p, now).expect("pass") else {
            return false;
        };
        *log = apply_changes(log.drain(..), changes).collect();
        *cp = CleanerCheckpoint::after(&stats);
        true
    }

    fn values(log: &[Batch]) -> Vec<(Offset, Option<String>)> {
        log.iter().flat_map(offsets_and_values).collect()
    }

    #[test]
    fn passes_skip_the_newest_batch_and_clean_earlier_passes_again() {
        let p = CompactionPolicy {
            min_cleanable_dirty_ratio: 0.0,
            ..CompactionPolicy::default()
        };
        let mut cp = CleanerCheckpoint::default();
        let mut idem = BatchBuilder::new(Compression::None).producer(5, 0, 0);
        idem.push(Record::new(NOW, "p1").with_key("a"));
        let mut idem2 = BatchBuilder::new(Compression::None).producer(5, 0, 1);
        idem2.push(Record::new(NOW, "p2").with_key("b"));
        let mut log = vec![
            idem.build(0).expect("build"),
            idem2.build(1).expect("build"),
            batch(2, NOW, &[(Some("c"), Some("1"))]),
        ];
        // The newest batch is the head: nothing of it is mapped, so nothing changes.
        assert!(pass(&mut log, &mut cp, &p));
        assert_eq!(cp.cleaned_upto, 2);
        assert_eq!(values(&log).len(), 3);
        // Nothing new is closed: not due.
        assert!(!pass(&mut log, &mut cp, &p));
        log.push(batch(
            3,
            NOW,
            &[(Some("a"), Some("2")), (Some("b"), Some("2"))],
        ));
        log.push(batch(5, NOW, &[(Some("z"), Some("head"))]));
        assert!(pass(&mut log, &mut cp, &p));
        assert_eq!(cp.cleaned_upto, 5);
        // a@0 goes (its producer's last batch is 1); b@1 is producer 5's last batch: kept whole.
        assert_eq!(
            values(&log),
            vec![
                (1, Some("p2".into())),
                (2, Some("1".into())),
                (3, Some("2".into())),
                (4, Some("2".into())),
                (5, Some("head".into())),
            ]
        );
        // Lag: a batch newer than the lag ends the closed part.
        let lagged = CompactionPolicy { min_lag_ms: 1, ..p };
        log.push(batch(6, NOW, &[(Some("c"), Some("2"))]));
        log.push(batch(7, NOW, &[(Some("c"), Some("3"))]));
        let mut fresh = CleanerCheckpoint::default();
        let snapshot = log.clone();
        let later = pass_over_batches(|| snapshot.iter().cloned().map(Ok), &fresh, &lagged, NOW)
            .expect("pass");
        assert!(later.is_none(), "every batch is within the lag");
        fresh.cleaned_upto = 0;
        assert!(pass(&mut log, &mut fresh, &p));
        assert!(!values(&log).contains(&(2, Some("1".into()))));
        assert!(
            values(&log).contains(&(6, Some("2".into()))),
            "6 is mapped, 7 is the head"
        );
    }

    /// A transactional batch of `pid` (sequence `seq`) at `base`.
    fn txn(pid: i64, seq: i32, base: Offset, key: &str, value: &str) -> Batch {
        let mut b = BatchBuilder::new(Compression::None)
            .producer(pid, 0, seq)
            .transactional(true);
        b.push(Record::new(NOW, value.to_string()).with_key(key.to_string()));
        b.build(base).expect("build")
    }

    fn marker(pid: i64, base: Offset, commit: bool) -> Batch {
        let m = TxnMarker {
            commit,
            coordinator_epoch: 0,
        };
        let mut b = m.batch(pid, 0, NOW).expect("marker");
        b.set_base_offset(base);
        b
    }

    #[test]
    fn transactions_count_once_committed_never_when_aborted_and_stop_a_pass_while_open() {
        let p = CompactionPolicy {
            min_cleanable_dirty_ratio: 0.0,
            ..CompactionPolicy::default()
        };
        let mut cp = CleanerCheckpoint::default();
        let mut log = vec![
            batch(0, NOW, &[(Some("a"), Some("a0")), (Some("b"), Some("b0"))]),
            // Producer 7 aborts an update of a: it must not shadow a0.
            txn(7, 0, 2, "a", "aborted"),
            txn(7, 1, 3, "x", "aborted"),
            marker(7, 4, false),
            // Producer 8 commits b: it shadows b0, at its marker.
            txn(8, 0, 5, "b", "b1"),
            batch(6, NOW, &[(Some("c"), Some("c0"))]),
            marker(8, 7, true),
            // Producer 9 is still open: nothing from 8 on is compacted.
            txn(9, 0, 8, "c", "open"),
            batch(9, NOW, &[(Some("a"), Some("a1"))]),
            batch(10, NOW, &[(Some("z"), Some("head"))]),
        ];
        assert!(pass(&mut log, &mut cp, &p));
        assert_eq!(cp.cleaned_upto, 8, "stops at the open transaction");
        let v = values(&log);
        assert!(v.contains(&(0, Some("a0".into()))), "a0 stays: {v:?}");
        assert!(
            !v.contains(&(1, Some("b0".into()))),
            "b1 committed over b0: {v:?}"
        );
        assert!(
            !v.contains(&(2, Some("aborted".into()))),
            "aborted batches go: {v:?}"
        );
        // Producer 7's last data batch stays whole (its sequence state), the marker too.
        assert!(v.contains(&(3, Some("aborted".into()))), "{v:?}");
        assert!(log.iter().any(|b| b.is_control() && b.base_offset() == 4));
        assert!(v.contains(&(6, Some("c0".into()))) && v.contains(&(9, Some("a1".into()))));
        // Once 9 commits, its c shadows c0 and a1 shadows a0.
        log.push(marker(9, 11, true));
        log.push(batch(12, NOW, &[(Some("z"), Some("head2"))]));
        assert!(pass(&mut log, &mut cp, &p));
        let v = values(&log);
        assert!(!v.contains(&(6, Some("c0".into()))) && !v.contains(&(0, Some("a0".into()))));
        assert!(v.contains(&(8, Some("open".into()))) && v.contains(&(9, Some("a1".into()))));
        // The key map never counts an aborted key: the map's size bound holds keys held for
        // open transactions too.
        let mut m = KeyMap::new(1);
        assert!(m.add(&txn(3, 0, 0, "k", "v")));
        assert!(
            !m.add(&batch(1, NOW, &[(Some("j"), Some("v"))])),
            "full: k is held"
        );
    }

    /// Kafka's cleaner rule for markers: a commit marker whose transaction has no batch left
    /// is stamped with a delete horizon and goes once it has passed; a marker whose
    /// transaction keeps a batch, an abort marker, and a producer's marker after its last
    /// data batch stay.
    #[test]
    fn commit_markers_of_emptied_transactions_go_after_their_horizon() {
        let p = CompactionPolicy {
            min_cleanable_dirty_ratio: 0.0,
            delete_retention_ms: 1000,
            markers_below: 8,
            ..CompactionPolicy::default()
        };
        let mut cp = CleanerCheckpoint::default();
        let mut log = vec![
            txn(7, 0, 0, "a", "a0"),
            marker(7, 1, true),
            txn(7, 1, 2, "b", "b0"),
            marker(7, 3, true),
            txn(7, 2, 4, "a", "aborted"),
            marker(7, 5, false),
            txn(7, 3, 6, "a", "a1"),
            marker(7, 7, true),
            batch(8, NOW, &[(Some("z"), Some("head"))]),
        ];
        assert!(pass_at(&mut log, &mut cp, &p, NOW));
        let marker_at = |log: &[Batch], o: Offset| {
            log.iter()
                .find(|b| b.is_control() && b.base_offset() == o)
                .map(Batch::delete_horizon_ms)
        };
        // a1 shadows a0: the first transaction keeps nothing, its marker gets a horizon.
        assert_eq!(marker_at(&log, 1), Some(Some(NOW + 1000)));
        for o in [3, 5, 7] {
            assert_eq!(marker_at(&log, o), Some(None), "marker {o} stays as it is");
        }
        let data: Vec<Batch> = log.iter().filter(|b| !b.is_control()).cloned().collect();
        assert_eq!(
            values(&data),
            vec![
                (2, Some("b0".into())),
                (6, Some("a1".into())),
                (8, Some("head".into()))
            ]
        );
        assert_eq!(cp.tombstone_due_ms, Some(NOW + 1000));
        assert!(!pass_at(&mut log, &mut cp, &p, NOW + 999), "not due yet");
        assert!(pass_at(&mut log, &mut cp, &p, NOW + 1000));
        assert_eq!(marker_at(&log, 1), None, "gone at its horizon");
        for o in [3, 5, 7] {
            assert!(marker_at(&log, o).is_some(), "marker {o} stays");
        }
        assert_eq!(cp.tombstone_due_ms, None);

        // Markers the owner may replay stay: with the floor at 1, none goes.
        let floor = CompactionPolicy {
            markers_below: 1,
            ..p
        };
        let mut cp = CleanerCheckpoint::default();
        let mut log = vec![
            txn(7, 0, 0, "a", "a0"),
            marker(7, 1, true),
            txn(7, 1, 2, "a", "a1"),
            marker(7, 3, true),
            batch(4, NOW, &[(Some("z"), Some("head"))]),
        ];
        assert!(pass_at(&mut log, &mut cp, &floor, NOW));
        assert_eq!(marker_at(&log, 1), Some(None));
        assert_eq!(cp.held_marker, Some(1));
        // Nothing dirty: not due until the owner's floor passes the held marker.
        assert!(!pass_at(&mut log, &mut cp, &floor, NOW));
        let raised = CompactionPolicy {
            markers_below: 2,
            ..p
        };
        assert!(pass_at(&mut log, &mut cp, &raised, NOW));
        assert_eq!(marker_at(&log, 1), Some(Some(NOW + 1000)));
        assert_eq!(cp.held_marker, None);
    }
}
