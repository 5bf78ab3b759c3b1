//! Idempotent producers (Kafka semantics): producer ids, and per partition the sequence state
//! that turns a retried batch into an acknowledgement instead of a second copy.
//!
//! ```text
//!  InitProducerId ──► ProducerIdAllocator ──(a block of 1,000 ids per metadata write)──► Storage
//!
//!  Publish ──► Partition::accept ──► ProducerStates::check_publish ──► Append    ──► pending queue
//!                                             │                      Duplicate ──► ack with the
//!                                             │                                   original offset
//!                                             └─► Err(OutOfOrderSequence | InvalidProducerEpoch)
//!  append Ok  ──► ProducerStates::commit (pending entry ► written, with its offset)
//!  append Err ──► ProducerStates::abandon_pending (every pending entry is dropped)
//!  actor start ──► rebuild: ProducerStates::replay over the log's tail
//! ```
//!
//! # The rules, per producer id and partition
//! A batch carries a producer id, an epoch and the sequence of its first record; its last
//! sequence is `first + last_offset_delta`, wrapping from `i32::MAX` to 0 as Kafka does.
//! Batches without a producer id (-1) are not looked at. For the others, in arrival order:
//! - an epoch below the producer's current one: [`BrokerError::InvalidProducerEpoch`];
//! - an epoch above it: the first sequence must be 0 (else
//!   [`BrokerError::OutOfOrderSequence`]), and the producer's state restarts at the new epoch;
//! - the same epoch: a batch whose `(first, last)` sequences equal one of the producer's last
//!   [`TRACKED_BATCHES`] batches is a **duplicate**, acknowledged with the original's base
//!   offset and never written again; a batch starting right after the last one is appended;
//!   anything else is [`BrokerError::OutOfOrderSequence`];
//! - an unknown producer id: first sequence 0 is accepted. Any other first sequence is
//!   accepted only when this partition's state may be incomplete (**lenient** mode): the
//!   rebuild after a restart did not read the log from offset 0 (retention removed the head,
//!   or the rebuild read a bounded tail), or producers were expired because retention removed
//!   all their batches. That is Kafka's behaviour (≥ 2.5) for producers whose state was lost;
//!   where Weir knows its state is complete, a non-zero first sequence from a stranger is a
//!   gap and refused with OUT_OF_ORDER_SEQUENCE_NUMBER.
//! - Transactional batches follow the same sequence rules; they are also refused from an epoch
//!   below the producer's last transaction marker in the partition ([`PartitionTxns`]).
//!   Control batches are written by the broker only: one in a publish is
//!   [`BrokerError::InvalidBatch`]. Markers carry no sequence and leave the sequence state
//!   alone.
//!
//! # Pending state, commits and failures
//! A producer's state has two parts: `written`, the last [`TRACKED_BATCHES`] batches the log
//! holds (with their offsets), and `pending`, the batches accepted but not yet appended (queued
//! or in flight), in queue order, each with a [`Ticket`]. Checks run against both, so up to five
//! pipelined publishes (and several batches of one publish) chain their sequences. Only a
//! successful append moves entries from `pending` to `written` ([`ProducerStates::commit`], in
//! append order: the front pending entry of a producer is always the next one written). A
//! failed append drops **every** pending entry ([`ProducerStates::abandon_pending`]); the
//! partition then rejects every queued idempotent publish with the same error, since they were
//! checked against entries that never reached the log. Storage is fail-stop, so those publishes
//! would fail anyway; their retries are checked against what the log really holds. A publish
//! whose check fails leaves no trace: its own tentative entries are rolled back.
//!
//! A duplicate of a batch still pending is acknowledged once the original is written: the
//! partition parks its reply under the original's [`Position::Pending`] ticket.
//!
//! # Publishes that mix duplicates and new batches
//! Kafka clients send one batch per partition per request, so a publish is either new or a
//! retry. A publish holding both duplicates and new batches is refused with
//! [`BrokerError::InvalidRequest`] and changes nothing (Kafka would silently skip the whole
//! append; refusing says what happened).
//!
//! # Invariants
//! - Per producer, `written` holds at most [`TRACKED_BATCHES`] entries, all of `epoch`, oldest
//!   first; `pending` epochs never decrease and are never below `epoch`.
//! - A producer entry exists only while it has written or pending batches.
//! - Tickets increase and are never reused.

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use weir_storage::{Batch, Offset, Storage};

use super::error::BrokerError;
use super::txn_state::{PartitionTxns, TxnSnapshot};
use super::types::ActiveProducer;

/// How many of a producer's most recent batches are remembered for duplicate detection
/// (Kafka's five in-flight requests per connection).
pub const TRACKED_BATCHES: usize = 5;

/// The epoch of a producer that has written nothing yet.
const NO_EPOCH: i16 = -1;

/// Identifies one accepted, not yet written batch in a partition's pending state.
pub type Ticket = u64;

/// The producer fields of one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerBatch {
    /// The producer id (≥ 0).
    pub producer_id: i64,
    /// The producer epoch.
    pub epoch: i16,
    /// The sequence of the first record.
    pub first_seq: i32,
    /// The sequence of the last record (wrapped past `i32::MAX`).
    pub last_seq: i32,
    /// A transactional batch (data or control).
    pub transactional: bool,
    /// A control batch (a transaction marker).
    pub control: bool,
}

impl ProducerBatch {
    /// The producer fields of `batch`, or `None` for a batch without a producer id.
    pub fn of(batch: &Batch) -> Option<ProducerBatch> {
        let producer_id = batch.producer_id();
        if producer_id < 0 {
            return None;
        }
        let first_seq = batch.base_sequence();
        Some(ProducerBatch {
            producer_id,
            epoch: batch.producer_epoch(),
            first_seq,
            last_seq: seq_add(first_seq, batch.last_offset_delta()),
            transactional: batch.is_transactional(),
            control: batch.is_control(),
        })
    }
}

/// `seq + delta` in Kafka's sequence space: non-negative, wrapping from `i32::MAX` to 0.
pub fn seq_add(seq: i32, delta: i32) -> i32 {
    let modulus = i64::from(i32::MAX) + 1;
    // Both operands are non-negative for valid input; rem_euclid keeps garbage in range too.
    (i64::from(seq) + i64::from(delta)).rem_euclid(modulus) as i32
}

/// Where the original of a duplicate batch is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// In the log, at this base offset.
    Written(Offset),
    /// Accepted but not yet written.
    Pending(Ticket),
}

/// What to do with a publish that passed the checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Append it; its idempotent batches are now pending.
    Append,
    /// Every batch is a duplicate: acknowledge with the first batch's original.
    Duplicate(Position),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Written {
    first_seq: i32,
    last_seq: i32,
    base_offset: Offset,
    /// When it was written (ms since the epoch): the broker's clock for a live append, the
    /// batch's max timestamp for one replayed from the log (as Kafka does).
    time_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pending {
    epoch: i16,
    first_seq: i32,
    last_seq: i32,
    ticket: Ticket,
}

#[derive(Debug)]
struct Producer {
    /// The epoch of `written` ([`NO_EPOCH`] before the first write).
    epoch: i16,
    written: VecDeque<Written>,
    pending: VecDeque<Pending>,
}

impl Default for Producer {
    fn default() -> Self {
        Producer {
            epoch: NO_EPOCH,
            written: VecDeque::with_capacity(TRACKED_BATCHES),
            pending: VecDeque::new(),
        }
    }
}

impl Producer {
    fn is_empty(&self) -> bool {
        self.written.is_empty() && self.pending.is_empty()
    }

    fn current_epoch(&self) -> i16 {
        self.pending.back().map_or(self.epoch, |p| p.epoch)
    }

    /// The original of `(first, last)` among the last [`TRACKED_BATCHES`] batches of `epoch`,
    /// pending ones included.
    fn find(&self, epoch: i16, first: i32, last: i32) -> Option<Position> {
        let pending = self.pending.iter().rev().take_while(|p| p.epoch == epoch);
        let pending_seen = pending.clone().count();
        if let Some(p) = pending
            .take(TRACKED_BATCHES)
            .find(|p| p.first_seq == first && p.last_seq == last)
        {
            return Some(Position::Pending(p.ticket));
        }
        // Written entries count only when no pending entry of an older epoch lies between.
        if self.epoch != epoch || pending_seen != self.pending.len() {
            return None;
        }
        self.written
            .iter()
            .rev()
            .take(TRACKED_BATCHES.saturating_sub(pending_seen))
            .find(|w| w.first_seq == first && w.last_seq == last)
            .map(|w| Position::Written(w.base_offset))
    }

    /// The last sequence of `epoch`, if the producer has a batch of it.
    fn last_seq(&self, epoch: i16) -> Option<i32> {
        match self.pending.back() {
            Some(p) if p.epoch == epoch => Some(p.last_seq),
            Some(_) => None,
            None if self.epoch == epoch => self.written.back().map(|w| w.last_seq),
            None => None,
        }
    }

    /// Records a written batch: a newer epoch starts over; older epochs are ignored.
    fn write(
        &mut self,
        epoch: i16,
        first_seq: i32,
        last_seq: i32,
        base_offset: Offset,
        time_ms: i64,
    ) {
        if epoch < self.epoch {
            return;
        }
        if epoch > self.epoch {
            self.epoch = epoch;
            self.written.clear();
        }
        if self.written.len() == TRACKED_BATCHES {
            self.written.pop_front();
        }
        self.written.push_back(Written {
            first_seq,
            last_seq,
            base_offset,
            time_ms,
        });
    }
}

/// One partition's idempotent-producer state. See the module docs.
#[derive(Debug, Default)]
pub struct ProducerStates {
    producers: HashMap<i64, Producer>,
    lenient_unknown: bool,
    next_ticket: Ticket,
    pending: usize,
    /// The partition's transactions, rebuilt and saved with the producers.
    txns: PartitionTxns,
}

impl ProducerStates {
    /// An empty state. `lenient_unknown`: this state may miss producers (see the module docs),
    /// so an unknown producer may start at any sequence.
    pub fn new(lenient_unknown: bool) -> Self {
        ProducerStates {
            lenient_unknown,
            ..ProducerStates::default()
        }
    }

    /// From now on, unknown producers may start at any sequence (this state may miss some).
    pub fn mark_lenient(&mut self) {
        self.lenient_unknown = true;
    }

    /// Whether unknown producers may start at any sequence.
    pub fn is_lenient(&self) -> bool {
        self.lenient_unknown
    }

    /// How many producers the partition remembers.
    pub fn producer_count(&self) -> usize {
        self.producers.len()
    }

    /// Every producer the partition remembers (its idempotent writes, its transactions), by
    /// producer id: what Kafka's DescribeProducers lists. A batch being written counts (its
    /// producer may hold the acknowledgement already: replies go out as the log append
    /// returns, before this state catches up), stamped `now_ms`.
    pub fn active(&self, now_ms: i64) -> Vec<ActiveProducer> {
        let ids: std::collections::BTreeSet<i64> = self
            .producers
            .iter()
            .filter(|(_, p)| !p.is_empty() || p.epoch != NO_EPOCH)
            .map(|(&id, _)| id)
            .chain(self.txns.producers())
            .collect();
        ids.into_iter()
            .map(|id| {
                let p = self.producers.get(&id);
                let pending = p.and_then(|p| p.pending.back());
                let written = p.and_then(|p| p.written.back());
                let (epoch, last_sequence, last_timestamp_ms) = match (pending, written) {
                    (Some(q), _) => (q.epoch, q.last_seq, now_ms),
                    (None, Some(w)) => (p.map_or(NO_EPOCH, |p| p.epoch), w.last_seq, w.time_ms),
                    (None, None) => (p.map_or(NO_EPOCH, |p| p.epoch), -1, -1),
                };
                let epoch = [epoch]
                    .into_iter()
                    .chain(self.txns.fence_epoch(id))
                    .max()
                    .unwrap_or(NO_EPOCH);
                ActiveProducer {
                    producer_id: id,
                    epoch,
                    last_sequence,
                    last_timestamp_ms,
                    current_txn_start_offset: self.txns.open_since(id),
                }
            })
            .collect()
    }

    /// The partition's transaction state.
    pub fn txns(&self) -> &PartitionTxns {
        &self.txns
    }

    /// The partition's transaction state, to open and close transactions as batches are
    /// written.
    pub fn txns_mut(&mut self) -> &mut PartitionTxns {
        &mut self.txns
    }

    /// True while some accepted batch awaits its append.
    pub fn has_pending(&self) -> bool {
        self.pending > 0
    }

    /// Checks a publish's batches in order (see the module docs). On [`Verdict::Append`] its
    /// idempotent batches become pending, to be passed to [`ProducerStates::commit`] in the
    /// same order once written.
    ///
    /// # Errors
    /// [`BrokerError::OutOfOrderSequence`], [`BrokerError::InvalidProducerEpoch`],
    /// [`BrokerError::InvalidBatch`] (a producer id with a negative epoch or sequence, a control
    /// batch), [`BrokerError::InvalidRequest`] (duplicates mixed with new batches). The state is
    /// then unchanged.
    pub fn check_publish(&mut self, batches: &[Batch]) -> Result<Verdict, BrokerError> {
        self.check_all(batches.iter().map(ProducerBatch::of))
    }

    /// [`ProducerStates::check_publish`] over batches' producer fields (`None`: a batch without
    /// a producer id).
    ///
    /// # Errors
    /// As [`ProducerStates::check_publish`].
    pub fn check_all<I>(&mut self, parts: I) -> Result<Verdict, BrokerError>
    where
        I: IntoIterator<Item = Option<ProducerBatch>>,
        I::IntoIter: Clone,
    {
        let parts = parts.into_iter();
        let mark = self.next_ticket;
        let (mut new, mut duplicates) = (0usize, 0usize);
        let mut first = None;
        for part in parts.clone() {
            let Some(pb) = part else {
                new += 1;
                first.get_or_insert(Verdict::Append);
                continue;
            };
            match self.check_one(&pb) {
                Ok(v @ Verdict::Duplicate(_)) => {
                    duplicates += 1;
                    first.get_or_insert(v);
                }
                Ok(Verdict::Append) => {
                    new += 1;
                    first.get_or_insert(Verdict::Append);
                    self.add_pending(&pb);
                }
                Err(e) => {
                    self.rollback(parts, mark);
                    return Err(e);
                }
            }
        }
        if duplicates > 0 && new > 0 {
            self.rollback(parts, mark);
            return Err(BrokerError::InvalidRequest(format!(
                "a publish mixes {duplicates} duplicate batch(es) of an idempotent producer with \
                 {new} new one(s); send retries apart from new batches"
            )));
        }
        match first {
            Some(v) if duplicates > 0 => Ok(v),
            _ => Ok(Verdict::Append),
        }
    }

    fn check_one(&self, pb: &ProducerBatch) -> Result<Verdict, BrokerError> {
        if pb.control {
            return Err(BrokerError::InvalidBatch(format!(
                "a control batch from producer {}: transaction markers are written by the broker",
                pb.producer_id
            )));
        }
        if pb.transactional {
            self.txns.check(pb.producer_id, pb.epoch)?;
        }
        if pb.epoch < 0 || pb.first_seq < 0 {
            return Err(BrokerError::InvalidBatch(format!(
                "producer id {} with epoch {} and base sequence {}: both must be >= 0",
                pb.producer_id, pb.epoch, pb.first_seq
            )));
        }
        let out_of_order = |expected: i32| BrokerError::OutOfOrderSequence {
            producer_id: pb.producer_id,
            expected,
            got: pb.first_seq,
        };
        let Some(p) = self.producers.get(&pb.producer_id) else {
            if pb.first_seq == 0 || self.lenient_unknown {
                return Ok(Verdict::Append);
            }
            return Err(out_of_order(0));
        };
        let current = p.current_epoch();
        if pb.epoch < current {
            return Err(BrokerError::InvalidProducerEpoch {
                producer_id: pb.producer_id,
                current,
                got: pb.epoch,
            });
        }
        if pb.epoch > current {
            return if pb.first_seq == 0 {
                Ok(Verdict::Append)
            } else {
                Err(out_of_order(0))
            };
        }
        if let Some(pos) = p.find(pb.epoch, pb.first_seq, pb.last_seq) {
            return Ok(Verdict::Duplicate(pos));
        }
        match p.last_seq(pb.epoch) {
            Some(last) if pb.first_seq == seq_add(last, 1) => Ok(Verdict::Append),
            Some(last) => Err(out_of_order(seq_add(last, 1))),
            // Unreachable while the invariants hold (the current epoch comes from an entry).
            None => Err(out_of_order(0)),
        }
    }

    fn add_pending(&mut self, pb: &ProducerBatch) {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.pending += 1;
        self.producers
            .entry(pb.producer_id)
            .or_default()
            .pending
            .push_back(Pending {
                epoch: pb.epoch,
                first_seq: pb.first_seq,
                last_seq: pb.last_seq,
                ticket,
            });
    }

    /// Drops the pending entries from ticket `mark` on, for the producers in `parts`.
    fn rollback(&mut self, parts: impl Iterator<Item = Option<ProducerBatch>>, mark: Ticket) {
        for pb in parts.flatten() {
            let Some(p) = self.producers.get_mut(&pb.producer_id) else {
                continue;
            };
            while p.pending.back().is_some_and(|e| e.ticket >= mark) {
                p.pending.pop_back();
                self.pending -= 1;
            }
            if p.is_empty() {
                self.producers.remove(&pb.producer_id);
            }
        }
    }

    /// Marks the oldest pending batch of `producer_id` as written at `base_offset` at `now_ms`;
    /// returns its ticket (duplicates may wait on it). `None` when the producer has nothing
    /// pending, which means the caller broke the commit order.
    pub fn commit(&mut self, producer_id: i64, base_offset: Offset, now_ms: i64) -> Option<Ticket> {
        let p = self.producers.get_mut(&producer_id)?;
        let e = p.pending.pop_front()?;
        self.pending -= 1;
        p.write(e.epoch, e.first_seq, e.last_seq, base_offset, now_ms);
        Some(e.ticket)
    }

    /// Forgets every pending batch (their append failed, or they were checked against batches
    /// whose append failed).
    pub fn abandon_pending(&mut self) {
        if self.pending == 0 {
            return;
        }
        self.producers.retain(|_, p| {
            p.pending.clear();
            !p.is_empty()
        });
        self.pending = 0;
    }

    /// Records a batch read from the log (rebuild after a restart). No checks: the log is the
    /// truth.
    pub fn replay(&mut self, batch: &Batch) {
        self.txns.replay(batch);
        if let Some(pb) = ProducerBatch::of(batch).filter(|pb| !pb.control) {
            self.producers.entry(pb.producer_id).or_default().write(
                pb.epoch,
                pb.first_seq,
                pb.last_seq,
                batch.base_offset(),
                batch.max_timestamp(),
            );
        }
    }

    /// Forgets producers whose last written batch lies below `log_start` (retention removed
    /// them) and that have nothing pending; unknown producers are then accepted leniently.
    /// Returns how many were forgotten.
    pub fn expire_before(&mut self, log_start: Offset) -> usize {
        self.txns.expire_before(log_start);
        self.forget(|last| last.base_offset < log_start)
    }

    /// Forgets producers whose last written batch is older than `max_idle_ms` at `now_ms`
    /// (Kafka's `producer.id.expiration.ms`) and that have nothing pending; unknown producers
    /// are then accepted leniently, as after [`ProducerStates::expire_before`]. Returns how many
    /// were forgotten.
    pub fn expire_idle(&mut self, now_ms: i64, max_idle_ms: i64) -> usize {
        let cutoff = now_ms.saturating_sub(max_idle_ms);
        self.forget(|last| last.time_ms <= cutoff)
    }

    /// Forgets the producers with nothing pending whose last written batch is `stale`; this
    /// state is lenient from then on when any was forgotten.
    fn forget(&mut self, stale: impl Fn(&Written) -> bool) -> usize {
        let before = self.producers.len();
        self.producers
            .retain(|_, p| !p.pending.is_empty() || p.written.back().is_some_and(|w| !stale(w)));
        let forgotten = before - self.producers.len();
        // A fence outlives its producer's sequence state only while the producer is tracked.
        let gone: Vec<i64> = self
            .txns
            .producers()
            .filter(|p| !self.producers.contains_key(p))
            .collect();
        for p in gone {
            self.txns.forget(p);
        }
        if forgotten > 0 {
            self.lenient_unknown = true;
        }
        forgotten
    }
}

/// The bytes of a producer-state snapshot ([`ProducerStates::snapshot`]), MessagePack.
#[derive(Debug, Serialize, Deserialize)]
struct Snapshot {
    /// [`SNAPSHOT_VERSION`].
    version: u8,
    /// The log end the state describes: every batch below it and none above.
    end: Offset,
    lenient: bool,
    /// Per producer: id, epoch, written batches oldest first.
    producers: Vec<(i64, i16, Vec<SnapshotBatch>)>,
    /// The partition's transactions (absent in snapshots written before transactions).
    #[serde(default)]
    txns: TxnSnapshot,
}

/// One written batch in a snapshot: `(first_seq, last_seq, base_offset, time_ms)`.
type SnapshotBatch = (i32, i32, Offset, i64);

/// The snapshot format this build writes and reads.
const SNAPSHOT_VERSION: u8 = 1;

impl ProducerStates {
    /// The state as a snapshot for the log ending at `end` (every batch below `end` is
    /// reflected in it), or `None` while some batch is pending: pending entries are not state
    /// the log holds yet.
    pub fn snapshot(&self, end: Offset) -> Option<Vec<u8>> {
        if self.pending > 0 {
            return None;
        }
        let mut producers: Vec<_> = self
            .producers
            .iter()
            .map(|(&id, p)| {
                let written = p
                    .written
                    .iter()
                    .map(|w| (w.first_seq, w.last_seq, w.base_offset, w.time_ms))
                    .collect();
                (id, p.epoch, written)
            })
            .collect();
        producers.sort_unstable_by_key(|p| p.0);
        rmp_serde::to_vec(&Snapshot {
            version: SNAPSHOT_VERSION,
            end,
            lenient: self.lenient_unknown,
            producers,
            txns: self.txns.to_snapshot(),
        })
        .ok()
    }

    /// The state a [`ProducerStates::snapshot`] holds, and the log end it describes.
    ///
    /// # Errors
    /// Bytes that are not a snapshot of this version, or one that breaks the state's
    /// invariants (the caller then rebuilds from the log instead).
    pub fn from_snapshot(bytes: &[u8]) -> Result<(ProducerStates, Offset), String> {
        let s: Snapshot = rmp_serde::from_slice(bytes).map_err(|e| e.to_string())?;
        if s.version != SNAPSHOT_VERSION {
            return Err(format!("snapshot version {}", s.version));
        }
        let mut states = ProducerStates::new(s.lenient);
        states.txns = PartitionTxns::from_snapshot(s.txns);
        for (id, epoch, written) in s.producers {
            if id < 0 || epoch < 0 || written.is_empty() || written.len() > TRACKED_BATCHES {
                return Err(format!(
                    "producer {id} epoch {epoch} with {} batches",
                    written.len()
                ));
            }
            let p = states.producers.entry(id).or_default();
            p.epoch = epoch;
            for (first_seq, last_seq, base_offset, time_ms) in written {
                if first_seq < 0 || last_seq < 0 || base_offset < 0 || base_offset >= s.end {
                    return Err(format!(
                        "producer {id}: batch at {base_offset} of end {}",
                        s.end
                    ));
                }
                p.written.push_back(Written {
                    first_seq,
                    last_seq,
                    base_offset,
                    time_ms,
                });
            }
        }
        Ok((states, s.end))
    }
}

/// The metadata key of the producer id allocator: the big-endian `i64` limit of the last block
/// handed out (every id below it may have been issued).
pub const PRODUCER_ID_KEY: &str = "producer-ids/limit";

/// Producer ids reserved per metadata write.
pub const PRODUCER_ID_BLOCK: i64 = 1000;

/// Hands out producer ids, unique across restarts: ids come from a block reserved by persisting
/// the block's end through [`Storage::put_metadata`] before any id of it is issued, and a
/// restart continues after the persisted end (the rest of a block is skipped, never reused).
#[derive(Debug, Default)]
pub struct ProducerIdAllocator {
    next: i64,
    limit: i64,
    loaded: bool,
}

impl ProducerIdAllocator {
    /// An allocator that loads its state from storage on first use.
    pub fn new() -> Self {
        ProducerIdAllocator::default()
    }

    async fn load(&mut self, storage: &dyn Storage) -> Result<(), BrokerError> {
        if self.loaded {
            return Ok(());
        }
        let mut limit = 0;
        for (key, value) in storage.list_metadata().await? {
            if key == PRODUCER_ID_KEY {
                let bytes: [u8; 8] =
                    value
                        .as_slice()
                        .try_into()
                        .map_err(|_| BrokerError::Storage {
                            message: format!(
                                "{PRODUCER_ID_KEY} holds {} bytes, not an 8-byte id",
                                value.len()
                            ),
                        })?;
                limit = i64::from_be_bytes(bytes);
            }
        }
        self.next = limit;
        self.limit = limit;
        self.loaded = true;
        Ok(())
    }

    /// A fresh producer id.
    ///
    /// # Errors
    /// A storage failure while loading or reserving a block (no id is issued then).
    pub async fn allocate(&mut self, storage: &dyn Storage) -> Result<i64, BrokerError> {
        self.load(storage).await?;
        if self.next >= self.limit {
            let limit =
                self.next
                    .checked_add(PRODUCER_ID_BLOCK)
                    .ok_or_else(|| BrokerError::Storage {
                        message: "producer ids are exhausted".into(),
                    })?;
            storage
                .put_metadata(PRODUCER_ID_KEY, &limit.to_be_bytes())
                .await?;
            self.limit = limit;
        }
        let id = self.next;
        self.next += 1;
        Ok(id)
    }

    /// Whether `id` may have been issued by this broker (now or before a restart).
    ///
    /// # Errors
    /// A storage failure while loading.
    pub async fn was_issued(
        &mut self,
        storage: &dyn Storage,
        id: i64,
    ) -> Result<bool, BrokerError> {
        self.load(storage).await?;
        Ok((0..self.next).contains(&id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pb(id: i64, epoch: i16, first: i32, count: i32) -> Option<ProducerBatch> {
        Some(ProducerBatch {
            producer_id: id,
            epoch,
            first_seq: first,
            last_seq: seq_add(first, count - 1),
            transactional: false,
            control: false,
        })
    }

    fn check(s: &mut ProducerStates, b: Option<ProducerBatch>) -> Result<Verdict, BrokerError> {
        s.check_all([b])
    }

    #[test]
    fn sequences_wrap_at_i32_max() {
        assert_eq!(seq_add(i32::MAX, 1), 0);
        assert_eq!(seq_add(i32::MAX - 1, 3), 1);
        assert_eq!(seq_add(5, 0), 5);
    }

    #[test]
    fn next_sequence_appends_and_a_gap_is_out_of_order() {
        let mut s = ProducerStates::new(false);
        assert_eq!(check(&mut s, pb(7, 0, 0, 3)), Ok(Verdict::Append));
        assert_eq!(check(&mut s, pb(7, 0, 3, 1)), Ok(Verdict::Append));
        assert_eq!(
            check(&mut s, pb(7, 0, 5, 1)),
            Err(BrokerError::OutOfOrderSequence {
                producer_id: 7,
                expected: 4,
                got: 5
            })
        );
        assert_eq!(s.commit(7, 100, 0), Some(0));
        assert_eq!(s.commit(7, 103, 0), Some(1));
        assert_eq!(s.commit(7, 104, 0), None);
        assert!(!s.has_pending());
    }

    #[test]
    fn duplicates_point_at_pending_then_written_originals() {
        let mut s = ProducerStates::new(false);
        check(&mut s, pb(1, 0, 0, 2)).expect("first");
        assert_eq!(
            check(&mut s, pb(1, 0, 0, 2)),
            Ok(Verdict::Duplicate(Position::Pending(0)))
        );
        s.commit(1, 40, 0);
        assert_eq!(
            check(&mut s, pb(1, 0, 0, 2)),
            Ok(Verdict::Duplicate(Position::Written(40)))
        );
        // Same first sequence, different length: not a duplicate, and not in sequence.
        assert!(matches!(
            check(&mut s, pb(1, 0, 0, 3)),
            Err(BrokerError::OutOfOrderSequence { .. })
        ));
    }

    #[test]
    fn only_the_last_five_batches_are_remembered() {
        let mut s = ProducerStates::new(false);
        for i in 0..7 {
            check(&mut s, pb(1, 0, i, 1)).expect("in sequence");
            if i < 4 {
                s.commit(1, i64::from(i), 0);
            }
        }
        // 0..4 written, 4..7 pending: the last five are 2, 3 (written) and 4, 5, 6 (pending).
        assert!(matches!(
            check(&mut s, pb(1, 0, 1, 1)),
            Err(BrokerError::OutOfOrderSequence { .. })
        ));
        assert_eq!(
            check(&mut s, pb(1, 0, 2, 1)),
            Ok(Verdict::Duplicate(Position::Written(2)))
        );
        assert_eq!(
            check(&mut s, pb(1, 0, 4, 1)),
            Ok(Verdict::Duplicate(Position::Pending(4)))
        );
    }

    #[test]
    fn epochs_fence_and_bump() {
        let mut s = ProducerStates::new(false);
        check(&mut s, pb(1, 3, 0, 1)).expect("first");
        s.commit(1, 0, 0);
        assert_eq!(
            check(&mut s, pb(1, 2, 1, 1)),
            Err(BrokerError::InvalidProducerEpoch {
                producer_id: 1,
                current: 3,
                got: 2
            })
        );
        assert!(matches!(
            check(&mut s, pb(1, 4, 5, 1)),
            Err(BrokerError::OutOfOrderSequence { expected: 0, .. })
        ));
        assert_eq!(check(&mut s, pb(1, 4, 0, 1)), Ok(Verdict::Append));
        // Pending bump: the old epoch is fenced at once, before the append.
        assert!(matches!(
            check(&mut s, pb(1, 3, 1, 1)),
            Err(BrokerError::InvalidProducerEpoch { current: 4, .. })
        ));
        // The written batch of epoch 3 is no longer a duplicate target.
        assert!(matches!(
            check(&mut s, pb(1, 4, 0, 1)),
            Ok(Verdict::Duplicate(Position::Pending(_)))
        ));
        s.commit(1, 1, 0);
        assert_eq!(check(&mut s, pb(1, 4, 1, 1)), Ok(Verdict::Append));
    }

    #[test]
    fn unknown_producers_start_at_zero_unless_lenient() {
        let mut strict = ProducerStates::new(false);
        assert!(matches!(
            check(&mut strict, pb(9, 0, 12, 1)),
            Err(BrokerError::OutOfOrderSequence { expected: 0, .. })
        ));
        assert_eq!(strict.producer_count(), 0);
        let mut lenient = ProducerStates::new(true);
        assert_eq!(check(&mut lenient, pb(9, 0, 12, 1)), Ok(Verdict::Append));
    }

    #[test]
    fn a_failed_publish_leaves_no_trace() {
        let mut s = ProducerStates::new(false);
        // Second batch out of order: the first must not stay pending.
        assert!(s.check_all([pb(1, 0, 0, 1), pb(1, 0, 5, 1)]).is_err());
        assert!(!s.has_pending());
        assert_eq!(s.producer_count(), 0);
        // Chained batches of one publish.
        assert_eq!(
            s.check_all([pb(1, 0, 0, 2), pb(1, 0, 2, 2), None]),
            Ok(Verdict::Append)
        );
        // Duplicate mixed with a new batch: refused, nothing recorded.
        assert!(matches!(
            s.check_all([pb(1, 0, 0, 2), pb(1, 0, 4, 1)]),
            Err(BrokerError::InvalidRequest(_))
        ));
        assert_eq!(s.check_all([pb(1, 0, 4, 1)]), Ok(Verdict::Append));
    }

    #[test]
    fn abandoning_pending_state_reverts_to_the_written_state() {
        let mut s = ProducerStates::new(false);
        check(&mut s, pb(1, 0, 0, 1)).expect("first");
        s.commit(1, 0, 0);
        check(&mut s, pb(1, 0, 1, 1)).expect("second");
        check(&mut s, pb(2, 0, 0, 1)).expect("other producer");
        s.abandon_pending();
        assert!(!s.has_pending());
        assert_eq!(s.producer_count(), 1);
        // The retry of the failed batch is new again, not a duplicate.
        assert_eq!(check(&mut s, pb(1, 0, 1, 1)), Ok(Verdict::Append));
    }

    #[test]
    fn control_batches_and_fenced_transactional_batches_are_refused() {
        let mut s = ProducerStates::new(false);
        let with = |b: Option<ProducerBatch>, transactional: bool, control: bool| {
            b.map(|b| ProducerBatch {
                transactional,
                control,
                ..b
            })
        };
        assert!(matches!(
            check(&mut s, with(pb(1, 0, 0, 1), true, true)),
            Err(BrokerError::InvalidBatch(_))
        ));
        assert!(matches!(
            check(&mut s, pb(1, -1, 0, 1)),
            Err(BrokerError::InvalidBatch(_))
        ));
        assert_eq!(check(&mut s, None), Ok(Verdict::Append));
        assert!(!s.has_pending());
        // A marker of epoch 2 fences transactional batches of epoch 1, not of epoch 2.
        s.txns_mut().end(1, 2, 0, false);
        assert!(matches!(
            check(&mut s, with(pb(1, 1, 0, 1), true, false)),
            Err(BrokerError::InvalidProducerEpoch { current: 2, .. })
        ));
        assert_eq!(
            check(&mut s, with(pb(1, 2, 0, 1), true, false)),
            Ok(Verdict::Append)
        );
    }

    #[test]
    fn expiry_forgets_producers_below_the_log_start() {
        let mut s = ProducerStates::new(false);
        check(&mut s, pb(1, 0, 0, 1)).expect("a");
        s.commit(1, 10, 0);
        check(&mut s, pb(2, 0, 0, 1)).expect("b");
        s.commit(2, 20, 0);
        assert_eq!(s.expire_before(15), 1);
        assert!(s.is_lenient());
        assert_eq!(check(&mut s, pb(1, 0, 1, 1)), Ok(Verdict::Append));
    }

    /// Snapshots written before transactions (four fields) still restore, with no
    /// transaction state; new ones carry it.
    #[test]
    fn snapshots_from_before_transactions_restore_and_new_ones_carry_them() {
        let old = rmp_serde::to_vec(&(
            SNAPSHOT_VERSION,
            50i64,
            false,
            vec![(7i64, 0i16, vec![(0i32, 0i32, 10i64, 1i64)])],
        ))
        .expect("encode");
        let (back, end) = ProducerStates::from_snapshot(&old).expect("an old snapshot");
        assert_eq!((end, back.producer_count()), (50, 1));
        assert!(back.txns().is_empty());

        let mut s = ProducerStates::new(false);
        s.txns_mut().begin(7, 3);
        s.txns_mut().end(8, 1, 4, false);
        let (back, _) =
            ProducerStates::from_snapshot(&s.snapshot(10).expect("snapshot")).expect("restore");
        assert_eq!(back.txns(), s.txns());
        assert_eq!(back.txns().first_unstable(), Some(3));
    }

    #[test]
    fn snapshots_round_trip_and_garbage_is_refused() {
        let mut s = ProducerStates::new(false);
        for i in 0..7 {
            check(&mut s, pb(1, 0, i * 2, 2)).expect("1");
            s.commit(1, i64::from(i) * 10, 1_000 + i64::from(i));
        }
        check(&mut s, pb(2, 3, 0, 1)).expect("2");
        s.commit(2, 80, 5);
        check(&mut s, pb(3, 0, 0, 1)).expect("3 pending");
        assert_eq!(s.snapshot(100), None, "not while a batch is pending");
        s.abandon_pending();
        let bytes = s.snapshot(100).expect("snapshot");
        let (mut back, end) = ProducerStates::from_snapshot(&bytes).expect("restore");
        assert_eq!(end, 100);
        assert_eq!(back.producer_count(), 2);
        assert!(!back.is_lenient());
        // The last five batches of 1 are known, with their offsets; older ones are not.
        assert_eq!(
            check(&mut back, pb(1, 0, 8, 2)),
            Ok(Verdict::Duplicate(Position::Written(40)))
        );
        assert!(matches!(
            check(&mut back, pb(1, 0, 2, 2)),
            Err(BrokerError::OutOfOrderSequence { expected: 14, .. })
        ));
        assert!(matches!(
            check(&mut back, pb(2, 2, 1, 1)),
            Err(BrokerError::InvalidProducerEpoch { current: 3, .. })
        ));
        // Expiry sees the restored times.
        assert_eq!(back.expire_idle(1_006, 1_000), 1);
        // Garbage, a batch at or past the end, another version: refused.
        assert!(ProducerStates::from_snapshot(b"\x93garbage").is_err());
        assert!(ProducerStates::from_snapshot(&s.snapshot(80).expect("snapshot")).is_err());
        let mut other = bytes.clone();
        other[1] = 9;
        assert!(ProducerStates::from_snapshot(&other).is_err());
    }

    #[test]
    fn idle_producers_are_forgotten_after_the_expiration() {
        let mut s = ProducerStates::new(false);
        check(&mut s, pb(1, 0, 0, 1)).expect("a");
        s.commit(1, 10, 1_000);
        check(&mut s, pb(2, 0, 0, 1)).expect("b");
        s.commit(2, 20, 5_000);
        // Producer 3 has a batch pending: never forgotten while it waits for its append.
        check(&mut s, pb(3, 0, 0, 1)).expect("c");
        assert_eq!(s.expire_idle(5_999, 5_000), 0, "1 idled 4,999 ms");
        assert!(!s.is_lenient());
        assert_eq!(s.expire_idle(6_000, 5_000), 1, "1 idled 5,000 ms");
        assert_eq!(s.producer_count(), 2);
        assert!(s.is_lenient());
        // A retry of 1's batch is no longer recognised: it is appended again, as in Kafka.
        assert_eq!(check(&mut s, pb(1, 0, 0, 1)), Ok(Verdict::Append));
        // 2 is still known: a gap is still refused.
        assert!(matches!(
            check(&mut s, pb(2, 0, 5, 1)),
            Err(BrokerError::OutOfOrderSequence { expected: 1, .. })
        ));
    }

    /// The model: each producer's full history of accepted batches, pending or written.
    #[derive(Debug, Clone, Default)]
    struct Model {
        history: Vec<(i16, i32, i32, Option<Offset>, Ticket)>,
    }

    #[derive(Debug, Clone)]
    enum Op {
        New(i32),
        Duplicate(usize),
        Gap(i32),
        OldEpoch,
        Bump,
        Commit,
        Fail,
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            4 => (1..4i32).prop_map(Op::New),
            3 => (0..7usize).prop_map(Op::Duplicate),
            1 => (1..4i32).prop_map(Op::Gap),
            1 => Just(Op::OldEpoch),
            1 => Just(Op::Bump),
            4 => Just(Op::Commit),
            1 => Just(Op::Fail),
        ]
    }

    proptest::proptest! {
        #[test]
        fn matches_a_model_of_full_histories(ops in proptest::collection::vec(op(), 1..120)) {
            let mut s = ProducerStates::new(false);
            let mut m = Model::default();
            let mut offset: Offset = 0;
            let mut next_ticket: Ticket = 0;
            for op in ops {
                let epoch = m.history.last().map_or(5, |h| h.0);
                let next = m.history.last().map_or(0, |h| seq_add(h.2, 1));
                let batch = match op {
                    Op::New(n) => pb(1, epoch, next, n),
                    Op::Gap(g) => pb(1, epoch, seq_add(next, g), 1),
                    Op::OldEpoch => pb(1, epoch - 1, next, 1),
                    Op::Bump => pb(1, epoch + 1, 0, 1),
                    Op::Duplicate(back) => {
                        let same: Vec<_> =
                            m.history.iter().rev().take_while(|h| h.0 == epoch).collect();
                        match same.get(back) {
                            Some(h) => pb(1, epoch, h.1, seq_add(h.2, -h.1) + 1),
                            None => pb(1, epoch, next, 1),
                        }
                    }
                    Op::Commit => {
                        let first_pending = m.history.iter_mut().find(|h| h.3.is_none());
                        let got = s.commit(1, offset, 0);
                        match first_pending {
                            Some(h) => {
                                proptest::prop_assert_eq!(got, Some(h.4));
                                h.3 = Some(offset);
                                offset += 10;
                            }
                            None => proptest::prop_assert_eq!(got, None),
                        }
                        continue;
                    }
                    Op::Fail => {
                        s.abandon_pending();
                        m.history.retain(|h| h.3.is_some());
                        continue;
                    }
                };
                let b = batch.expect("a producer batch");
                // The model's verdict, straight from the rules over the whole history.
                let same: Vec<_> = m.history.iter().rev().take_while(|h| h.0 == epoch).collect();
                let expected = if m.history.is_empty() {
                    if b.first_seq == 0 { Ok(None) } else { Err(45) }
                } else if b.epoch < epoch {
                    Err(47)
                } else if b.epoch > epoch {
                    if b.first_seq == 0 { Ok(None) } else { Err(45) }
                } else if let Some(h) = same
                    .iter()
                    .take(TRACKED_BATCHES)
                    .find(|h| h.1 == b.first_seq && h.2 == b.last_seq)
                {
                    Ok(Some(match h.3 {
                        Some(o) => Position::Written(o),
                        None => Position::Pending(h.4),
                    }))
                } else if b.first_seq == next {
                    Ok(None)
                } else {
                    Err(45)
                };
                let got = s.check_all([Some(b)]);
                match (expected, got) {
                    (Ok(None), Ok(Verdict::Append)) => {
                        m.history.push((b.epoch, b.first_seq, b.last_seq, None, next_ticket));
                        next_ticket += 1;
                    }
                    (Ok(Some(pos)), Ok(Verdict::Duplicate(p))) => proptest::prop_assert_eq!(pos, p),
                    (Err(code), Err(e)) => proptest::prop_assert_eq!(code, e.kafka_code()),
                    (want, got) => proptest::prop_assert!(false, "model {want:?}, state {got:?}"),
                }
            }
        }
    }
}
