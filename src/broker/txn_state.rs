//! What one partition knows about transactions: the open ones, which hold its last stable
//! offset back, and the aborted ones, which `read_committed` consumers skip.
//!
//! ```text
//!  transactional batch of producer P written at offset O ──► P has no open txn here? open at O
//!  marker (control batch) of P written at offset M ──► close P's txn; an abort records
//!                                                      AbortedTxn { P, first: O, last: M }
//!  last stable offset (LSO) = first offset of the oldest open txn, or the log end
//!  Fetch(read_committed) ──► batches below the LSO + the aborted txns overlapping them
//! ```
//!
//! The partition actor opens a transaction *before* the append that writes its first batch
//! (the log assigns offsets densely from its end, so the offset is known), and closes it only
//! once the marker is written: the LSO a fetch sees never passes data that is not yet
//! decided. A consumer given `(P, O)` in a fetch answer drops P's transactional batches from
//! O up to P's abort marker, as Kafka's clients do; the list sent is every aborted
//! transaction that ends at or after the fetch offset and starts below the LSO, a superset of
//! what the batches returned need, which clients accept.
//!
//! **Fencing.** A marker's producer epoch is remembered: a transactional batch of an older
//! epoch is refused ([`BrokerError::InvalidProducerEpoch`]), so a producer whose transaction
//! the coordinator aborted on a timeout (with a bumped epoch) cannot add to the partition.
//!
//! The state is rebuilt from the log with the idempotent-producer state it is part of
//! ([`super::idempotence::ProducerStates`]: [`PartitionTxns::replay`] over the same batches,
//! saved in the same snapshot). Aborted transactions wholly below the log start are dropped
//! when retention moves it.

use std::collections::HashMap;

use weir_storage::{Batch, Offset, TxnMarker};

use super::error::BrokerError;
pub use super::types::AbortedTxn;

/// The transaction state of one partition. See the module docs.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PartitionTxns {
    /// Producer → first offset of its open transaction.
    open: HashMap<i64, Offset>,
    /// Ascending by `last_offset` (markers are appended in offset order).
    aborted: Vec<AbortedTxn>,
    /// Producer → epoch of its last marker.
    fence: HashMap<i64, i16>,
}

/// [`PartitionTxns`] in a snapshot: open `(producer, first offset)`, aborted, fences
/// `(producer, epoch)`.
pub type TxnSnapshot = (Vec<(i64, Offset)>, Vec<AbortedTxn>, Vec<(i64, i16)>);

impl PartitionTxns {
    /// No open or aborted transaction and no fence: the partition never saw one (or retention
    /// and expiry removed every trace).
    pub fn is_empty(&self) -> bool {
        self.open.is_empty() && self.aborted.is_empty() && self.fence.is_empty()
    }

    /// Whether `producer_id` has an open transaction here.
    pub fn is_open(&self, producer_id: i64) -> bool {
        self.open.contains_key(&producer_id)
    }

    /// The first offset of `producer_id`'s open transaction here.
    pub fn open_since(&self, producer_id: i64) -> Option<Offset> {
        self.open.get(&producer_id).copied()
    }

    /// The epoch of `producer_id`'s last marker here.
    pub fn fence_epoch(&self, producer_id: i64) -> Option<i16> {
        self.fence.get(&producer_id).copied()
    }

    /// Checks that a transactional batch of `producer_id` at `epoch` is not fenced.
    ///
    /// # Errors
    /// [`BrokerError::InvalidProducerEpoch`] for an epoch below the producer's last marker.
    pub fn check(&self, producer_id: i64, epoch: i16) -> Result<(), BrokerError> {
        match self.fence.get(&producer_id) {
            Some(&current) if epoch < current => Err(BrokerError::InvalidProducerEpoch {
                producer_id,
                current,
                got: epoch,
            }),
            _ => Ok(()),
        }
    }

    /// A transactional batch of `producer_id` is (about to be) written at `offset`: opens its
    /// transaction there unless one is open. Returns whether this opened one.
    pub fn begin(&mut self, producer_id: i64, offset: Offset) -> bool {
        if self.open.contains_key(&producer_id) {
            return false;
        }
        self.open.insert(producer_id, offset);
        true
    }

    /// Takes back a [`PartitionTxns::begin`] whose append failed.
    pub fn cancel(&mut self, producer_id: i64) {
        self.open.remove(&producer_id);
    }

    /// A marker of `producer_id` at `epoch` was written at `offset`: closes its transaction
    /// (an abort is recorded when one was open) and raises its fence to `epoch`.
    pub fn end(&mut self, producer_id: i64, epoch: i16, offset: Offset, commit: bool) {
        let fence = self.fence.entry(producer_id).or_insert(epoch);
        *fence = (*fence).max(epoch);
        if let Some(first_offset) = self.open.remove(&producer_id) {
            if !commit {
                self.aborted.push(AbortedTxn {
                    producer_id,
                    first_offset,
                    last_offset: offset,
                });
            }
        }
    }

    /// The first offset of the oldest open transaction.
    pub fn first_unstable(&self) -> Option<Offset> {
        self.open.values().copied().min()
    }

    /// The last stable offset of a log ending at `end`.
    pub fn last_stable(&self, end: Offset) -> Offset {
        self.first_unstable().map_or(end, |first| first.min(end))
    }

    /// The aborted transactions a `read_committed` fetch from `from` that returns data below
    /// `upto` must list: those whose marker lies at or after `from` and whose first batch lies
    /// below `upto`.
    pub fn aborted_overlapping(&self, from: Offset, upto: Offset) -> Vec<AbortedTxn> {
        let i = self.aborted.partition_point(|a| a.last_offset < from);
        self.aborted[i..]
            .iter()
            .filter(|a| a.first_offset < upto)
            .copied()
            .collect()
    }

    /// Records a batch read from the log (a rebuild): the log is the truth, nothing is checked.
    pub fn replay(&mut self, batch: &Batch) {
        let producer_id = batch.producer_id();
        if producer_id < 0 || !batch.is_transactional() {
            return;
        }
        if batch.is_control() {
            if let Some(marker) = TxnMarker::of(batch) {
                self.end(
                    producer_id,
                    batch.producer_epoch(),
                    batch.base_offset(),
                    marker.commit,
                );
            }
        } else {
            self.begin(producer_id, batch.base_offset());
        }
    }

    /// Retention moved the log start to `start`: aborted transactions wholly below it go.
    pub fn expire_before(&mut self, start: Offset) {
        let gone = self.aborted.partition_point(|a| a.last_offset < start);
        self.aborted.drain(..gone);
    }

    /// Forgets the fence of a producer the partition no longer tracks (expired), unless it
    /// has an open transaction here.
    pub fn forget(&mut self, producer_id: i64) {
        if !self.open.contains_key(&producer_id) {
            self.fence.remove(&producer_id);
        }
    }

    /// The producers with a fence or an open transaction.
    pub fn producers(&self) -> impl Iterator<Item = i64> + '_ {
        self.fence
            .keys()
            .chain(self.open.keys().filter(|p| !self.fence.contains_key(p)))
            .copied()
    }

    /// The state as snapshot data.
    pub fn to_snapshot(&self) -> TxnSnapshot {
        let mut open: Vec<_> = self.open.iter().map(|(&p, &o)| (p, o)).collect();
        open.sort_unstable();
        let mut fence: Vec<_> = self.fence.iter().map(|(&p, &e)| (p, e)).collect();
        fence.sort_unstable();
        (open, self.aborted.clone(), fence)
    }

    /// The state a snapshot describes.
    pub fn from_snapshot((open, aborted, fence): TxnSnapshot) -> Self {
        let mut aborted = aborted;
        aborted.sort_by_key(|a| a.last_offset);
        PartitionTxns {
            open: open.into_iter().collect(),
            aborted,
            fence: fence.into_iter().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_storage::{BatchBuilder, Compression, Record};

    fn data(producer_id: i64, epoch: i16, base: Offset) -> Batch {
        let mut b = BatchBuilder::new(Compression::None)
            .producer(producer_id, epoch, 0)
            .transactional(true);
        b.push(Record::new(0, "v"));
        b.build(base).expect("builds")
    }

    fn marker(producer_id: i64, epoch: i16, base: Offset, commit: bool) -> Batch {
        let mut b = TxnMarker {
            commit,
            coordinator_epoch: 0,
        }
        .batch(producer_id, epoch, 0)
        .expect("builds");
        b.set_base_offset(base);
        b
    }

    #[test]
    fn open_transactions_hold_the_stable_offset_back_and_aborts_are_listed() {
        let mut t = PartitionTxns::default();
        assert_eq!(t.last_stable(10), 10);
        assert!(t.begin(1, 10));
        assert!(!t.begin(1, 11), "already open");
        assert!(t.begin(2, 12));
        assert_eq!(t.last_stable(20), 10);
        t.end(1, 0, 13, false);
        assert_eq!(t.last_stable(20), 12);
        t.end(2, 0, 14, true);
        assert_eq!(t.last_stable(20), 20);
        let aborted = AbortedTxn {
            producer_id: 1,
            first_offset: 10,
            last_offset: 13,
        };
        assert_eq!(t.aborted_overlapping(0, 20), vec![aborted]);
        assert_eq!(t.aborted_overlapping(13, 20), vec![aborted]);
        assert!(
            t.aborted_overlapping(14, 20).is_empty(),
            "ended before the fetch"
        );
        assert!(
            t.aborted_overlapping(0, 10).is_empty(),
            "starts at the bound"
        );
        // Markers without an open transaction record nothing but the fence.
        t.end(3, 5, 21, false);
        assert_eq!(t.aborted_overlapping(0, 30), vec![aborted]);
        assert!(t.check(3, 4).is_err() && t.check(3, 5).is_ok() && t.check(9, 0).is_ok());
        t.expire_before(14);
        assert!(t.aborted_overlapping(0, 30).is_empty());
    }

    #[test]
    fn replay_and_snapshots_rebuild_the_same_state() {
        let log = [
            data(1, 0, 0),
            data(2, 0, 1),
            data(1, 0, 2),
            marker(1, 0, 3, false),
            data(1, 0, 4),
            marker(2, 0, 5, true),
        ];
        let mut t = PartitionTxns::default();
        for b in &log {
            t.replay(b);
        }
        assert_eq!(t.first_unstable(), Some(4));
        assert_eq!(
            t.aborted_overlapping(0, 10),
            vec![AbortedTxn {
                producer_id: 1,
                first_offset: 0,
                last_offset: 3
            }]
        );
        assert_eq!(PartitionTxns::from_snapshot(t.to_snapshot()), t);
        // Idempotent and plain batches are not transactions.
        let mut plain = BatchBuilder::new(Compression::None).producer(7, 0, 0);
        plain.push(Record::new(0, "v"));
        t.replay(&plain.build(9).expect("builds"));
        assert!(!t.is_open(7));
    }
}
