//! The transaction coordinator: Kafka's transactional producer (writes to several partitions
//! and a consumer group's offsets that become visible together, or not at all) on one broker.
//!
//! ```text
//!  InitProducerId(id)  ──► init: finish or abort what id left open, epoch + 1 ──► (pid, epoch)
//!  AddPartitionsToTxn  ──► add_partitions: Ongoing, partitions recorded ─┐ each change durable:
//!  AddOffsetsToTxn     ──► add_offsets: Ongoing, group recorded          ├─ Storage metadata
//!  TxnOffsetCommit     ──► commit_offsets: offsets staged in the txn     ┘  "txn/<id>"
//!  Produce(transactional batch) ──► verify_produce: Ongoing, its epoch, partition added
//!  EndTxn(commit|abort) ──► PrepareCommit|PrepareAbort (durable) ──► a marker in every
//!      partition (WriteTxnMarker, in parallel) ──► commit: staged offsets to their groups
//!      ──► CompleteCommit|CompleteAbort (durable) ──► EndTxn answered
//!  timer ──► Ongoing past its timeout: epoch + 1, abort (the producer is fenced)
//!        ──► Prepare* left by a failure or a crash: finished again
//!        ──► ids idle past transactional_id_expiration_ms: forgotten
//! ```
//!
//! # Shape
//! One [`TxnMeta`] per transactional id behind an async mutex of its own: requests for one id
//! run one at a time (a commit holds it while its markers are written), ids run in parallel.
//! This is the per-group actor's discipline without an actor: every step awaits other actors
//! (partitions, groups, storage) and none keeps state between requests but the meta itself.
//!
//! # Rules (Kafka's)
//! - A request names the id, the producer id and epoch it was given. Another producer id is
//!   [`BrokerError::InvalidProducerIdMapping`]; another epoch is
//!   [`BrokerError::InvalidProducerEpoch`] (a fenced producer: one whose transaction timed out,
//!   or whose id a newer instance initialised).
//! - InitProducerId bumps the epoch (a fresh producer id once it would pass `i16::MAX - 1`),
//!   aborting an open transaction with the new epoch first, which fences the old instance in
//!   every partition it wrote to. Its retry (KIP-360: the producer id and epoch it replaced,
//!   nothing begun since) gets the same answer again.
//! - A transactional batch is accepted only from the current epoch of an `Ongoing`
//!   transaction that added the partition ([`BrokerError::InvalidTxnState`] otherwise), so a
//!   partition never opens a transaction its coordinator will not end.
//! - EndTxn writes the markers before it answers, so the next transaction's writes follow them;
//!   a retry of a finished EndTxn succeeds, the other outcome is
//!   [`BrokerError::InvalidTxnState`]. A marker failure leaves the transaction in `Prepare*`:
//!   the retry (or the timer) writes the markers again; a second marker of a closed
//!   transaction changes nothing in a partition.
//! - Offsets staged by TxnOffsetCommit reach the group only with the commit.
//!
//! # Which logs hold transactions
//! A partition learns its open and aborted transactions from its log: from a snapshot and
//! the batches after it, or, without a usable snapshot (a crash), by replaying the log.
//! Replaying only the tail is enough for idempotence but not here: an aborted transaction
//! before the tail would be served as committed. So the first time a partition is added to
//! a transaction, [`TxnLogs`] records it durably (`txn-log/<topic>/<partition>`), before
//! any transactional batch can reach it, and a partition in that set replays its whole log
//! when it has no usable snapshot. Every other partition keeps the cheap tail replay, and
//! serves `read_committed` reads as plain reads: it cannot hold a transactional batch.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};
use weir_storage::{CommittedOffset, Storage, StorageError, TopicPartition};

use super::error::BrokerError;
use super::types::{now_ms, MemberRef};
use super::BrokerHandle;

/// The metadata key prefix of transactional ids.
pub const TXN_META_PREFIX: &str = "txn/";

/// The metadata key prefix of the partitions that may hold transactions.
pub const TXN_LOG_PREFIX: &str = "txn-log/";

/// The partitions ever added to a transaction (see the module docs), durable.
#[derive(Debug, Default)]
pub struct TxnLogs {
    set: RwLock<HashSet<TopicPartition>>,
}

impl TxnLogs {
    /// The set `storage` holds.
    ///
    /// # Errors
    /// A storage failure listing the metadata.
    pub async fn load(storage: &dyn Storage) -> Result<TxnLogs, StorageError> {
        Ok(TxnLogs::from_metadata(&storage.list_metadata().await?))
    }

    /// The set in a listing of the storage's metadata.
    pub fn from_metadata(metadata: &[(String, Vec<u8>)]) -> TxnLogs {
        let mut set = HashSet::new();
        for (key, _) in metadata {
            let parsed = key
                .strip_prefix(TXN_LOG_PREFIX)
                .and_then(|rest| rest.rsplit_once('/'))
                .and_then(|(topic, p)| Some(TopicPartition::new(topic, p.parse().ok()?)));
            set.extend(parsed);
        }
        TxnLogs {
            set: RwLock::new(set),
        }
    }

    /// Whether `tp` was ever added to a transaction.
    pub fn contains(&self, tp: &TopicPartition) -> bool {
        self.set
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(tp)
    }

    /// Records `tp` durably (once).
    ///
    /// # Errors
    /// A storage failure.
    pub async fn mark(
        &self,
        storage: &dyn Storage,
        tp: &TopicPartition,
    ) -> Result<(), StorageError> {
        if self.contains(tp) {
            return Ok(());
        }
        let key = format!("{TXN_LOG_PREFIX}{}/{}", tp.topic, tp.partition);
        storage.put_metadata(&key, &[]).await?;
        self.set
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(tp.clone());
        Ok(())
    }
}

/// Where a transaction stands (Kafka's coordinator states).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnStatus {
    /// Initialised, nothing added yet.
    Empty,
    /// Partitions or a group were added.
    Ongoing,
    /// Commit decided; markers being written.
    PrepareCommit,
    /// Abort decided; markers being written.
    PrepareAbort,
    /// The last transaction committed.
    CompleteCommit,
    /// The last transaction aborted.
    CompleteAbort,
}

impl TxnStatus {
    /// Kafka's name of the state (DescribeTransactions, ListTransactions).
    pub fn name(self) -> &'static str {
        match self {
            TxnStatus::Empty => "Empty",
            TxnStatus::Ongoing => "Ongoing",
            TxnStatus::PrepareCommit => "PrepareCommit",
            TxnStatus::PrepareAbort => "PrepareAbort",
            TxnStatus::CompleteCommit => "CompleteCommit",
            TxnStatus::CompleteAbort => "CompleteAbort",
        }
    }

    /// Every state, for filters by name.
    pub const ALL: [TxnStatus; 6] = [
        TxnStatus::Empty,
        TxnStatus::Ongoing,
        TxnStatus::PrepareCommit,
        TxnStatus::PrepareAbort,
        TxnStatus::CompleteCommit,
        TxnStatus::CompleteAbort,
    ];
}

/// One transactional id's state, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnMeta {
    /// Its producer id.
    pub producer_id: i64,
    /// The current epoch.
    pub epoch: i16,
    /// The producer's `transaction.timeout.ms`.
    pub timeout_ms: i32,
    /// Where it stands.
    pub status: TxnStatus,
    /// The partitions of the open (or deciding) transaction.
    pub partitions: BTreeSet<(String, i32)>,
    /// The groups whose offsets it commits.
    pub groups: BTreeSet<String>,
    /// Offsets staged by TxnOffsetCommit, by group.
    pub offsets: BTreeMap<String, BTreeMap<TopicPartition, CommittedOffset>>,
    /// When the open transaction started (ms).
    pub started_ms: i64,
    /// When the state last changed (ms).
    pub updated_ms: i64,
    /// The producer id and epoch the last InitProducerId replaced: a retry of that request
    /// (its answer lost) names them, and gets the current ones again while nothing happened
    /// since (Kafka's KIP-360 rule). Absent in states stored before it.
    #[serde(default)]
    pub previous: Option<(i64, i16)>,
}

impl TxnMeta {
    fn new(producer_id: i64, epoch: i16, timeout_ms: i32) -> Self {
        let now = now_ms();
        TxnMeta {
            producer_id,
            epoch,
            timeout_ms,
            status: TxnStatus::Empty,
            partitions: BTreeSet::new(),
            groups: BTreeSet::new(),
            offsets: BTreeMap::new(),
            started_ms: now,
            updated_ms: now,
            previous: None,
        }
    }

    /// Opens a transaction unless one is open.
    fn open(&mut self) -> Result<(), BrokerError> {
        match self.status {
            TxnStatus::Ongoing => Ok(()),
            TxnStatus::PrepareCommit | TxnStatus::PrepareAbort => {
                Err(BrokerError::ConcurrentTransactions(
                    "the previous transaction is being completed".into(),
                ))
            }
            TxnStatus::Empty | TxnStatus::CompleteCommit | TxnStatus::CompleteAbort => {
                self.status = TxnStatus::Ongoing;
                self.started_ms = now_ms();
                self.partitions.clear();
                self.groups.clear();
                self.offsets.clear();
                Ok(())
            }
        }
    }

    fn expired(&self, now: i64) -> bool {
        self.status == TxnStatus::Ongoing
            && now.saturating_sub(self.started_ms) > i64::from(self.timeout_ms)
    }
}

type Slot = Arc<tokio::sync::Mutex<Option<TxnMeta>>>;

/// The coordinator of every transactional id. See the module docs.
#[derive(Debug, Default)]
pub struct TxnCoordinator {
    slots: Mutex<HashMap<String, Slot>>,
    by_producer: Mutex<HashMap<i64, String>>,
}

/// A partition of a transaction and what became of adding it: `None` when it was fine.
pub type PartitionOutcome = ((String, i32), Option<BrokerError>);

impl TxnCoordinator {
    /// The transactional ids in a listing of the storage's metadata. An entry that does not
    /// decode is reported and skipped: its producer then gets
    /// [`BrokerError::InvalidProducerIdMapping`] and initialises again.
    pub fn from_metadata(metadata: &[(String, Vec<u8>)]) -> TxnCoordinator {
        let c = TxnCoordinator::default();
        for (key, value) in metadata {
            let Some(id) = key.strip_prefix(TXN_META_PREFIX) else {
                continue;
            };
            match rmp_serde::from_slice::<TxnMeta>(value) {
                Ok(meta) => {
                    c.index(id, meta.producer_id);
                    c.lock_slots().insert(
                        id.to_string(),
                        Arc::new(tokio::sync::Mutex::new(Some(meta))),
                    );
                }
                Err(e) => {
                    eprintln!("weir: transactional id {id:?}: unreadable state ({e}); skipped")
                }
            }
        }
        c
    }

    fn lock_slots(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_index(&self) -> std::sync::MutexGuard<'_, HashMap<i64, String>> {
        self.by_producer.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn slot(&self, id: &str) -> Slot {
        self.lock_slots().entry(id.to_string()).or_default().clone()
    }

    /// The slot of an id InitProducerId created; requests naming another get
    /// INVALID_PRODUCER_ID_MAPPING and leave nothing behind.
    fn known_slot(&self, id: &str) -> Result<Slot, BrokerError> {
        self.lock_slots().get(id).cloned().ok_or_else(|| {
            BrokerError::InvalidProducerIdMapping(format!("unknown transactional id {id:?}"))
        })
    }

    /// The state of an id InitProducerId created, locked for one request.
    async fn lock_known(
        &self,
        id: &str,
    ) -> Result<tokio::sync::OwnedMutexGuard<Option<TxnMeta>>, BrokerError> {
        Ok(self.known_slot(id)?.lock_owned().await)
    }

    fn index(&self, id: &str, producer_id: i64) {
        self.lock_index().insert(producer_id, id.to_string());
    }

    /// How many transactional ids are known.
    pub fn len(&self) -> usize {
        self.lock_slots().len()
    }

    /// True when no transactional id is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The transactional ids with their state, sorted by id.
    pub async fn list(&self) -> Vec<(String, TxnMeta)> {
        let slots: Vec<(String, Slot)> = self
            .lock_slots()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut out = Vec::new();
        for (id, slot) in slots {
            if let Some(meta) = slot.lock().await.clone() {
                out.push((id, meta));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// The state of one transactional id.
    pub async fn describe(&self, id: &str) -> Option<TxnMeta> {
        let slot = self.lock_slots().get(id).cloned()?;
        let meta = slot.lock().await.clone();
        meta
    }

    async fn persist(h: &BrokerHandle, id: &str, meta: &TxnMeta) -> Result<(), BrokerError> {
        let bytes = rmp_serde::to_vec_named(meta).map_err(|e| BrokerError::Storage {
            message: format!("encoding transaction state: {e}"),
        })?;
        h.storage()
            .put_metadata(&format!("{TXN_META_PREFIX}{id}"), &bytes)
            .await?;
        Ok(())
    }

    /// InitProducerId with a transactional id: `(producer id, epoch)` for its new instance.
    /// `producer_id`/`producer_epoch` are -1, or (KIP-360) the ones the instance had.
    ///
    /// # Errors
    /// An empty id, a timeout out of range, a producer id or epoch that is not the current
    /// one, a failure ending the open transaction, a storage failure.
    pub async fn init(
        &self,
        h: &BrokerHandle,
        id: &str,
        timeout_ms: i32,
        producer_id: i64,
        producer_epoch: i16,
    ) -> Result<(i64, i16), BrokerError> {
        if id.is_empty() {
            return Err(BrokerError::InvalidRequest(
                "an empty transactional id".into(),
            ));
        }
        let max = h.config().broker.transaction_max_timeout_ms;
        if timeout_ms < 1 || timeout_ms as u64 > max {
            return Err(BrokerError::InvalidTransactionTimeout {
                got: i64::from(timeout_ms),
                max,
            });
        }
        let slot = self.slot(id);
        let mut guard = slot.lock().await;
        let meta = match guard.as_mut() {
            None => {
                let meta = TxnMeta::new(h.allocate_producer_id().await?, 0, timeout_ms);
                guard.insert(meta)
            }
            Some(meta)
                if producer_id != -1
                    && meta.status == TxnStatus::Empty
                    && meta.previous == Some((producer_id, producer_epoch)) =>
            {
                // A retry of the InitProducerId that made the current epoch.
                return Ok((meta.producer_id, meta.epoch));
            }
            Some(meta) => {
                if producer_id != -1
                    && (producer_id != meta.producer_id || producer_epoch != meta.epoch)
                {
                    return Err(BrokerError::InvalidProducerEpoch {
                        producer_id,
                        current: meta.epoch,
                        got: producer_epoch,
                    });
                }
                let old = meta.producer_id;
                meta.previous = Some((meta.producer_id, meta.epoch));
                if meta.epoch >= i16::MAX - 1 {
                    // Finish what is open with the old id first; the new id starts clean.
                    self.finish_open(h, id, meta).await?;
                    meta.producer_id = h.allocate_producer_id().await?;
                    meta.epoch = 0;
                } else {
                    // The new epoch goes on the abort markers: it fences the old instance.
                    meta.epoch += 1;
                    self.finish_open(h, id, meta).await?;
                }
                if old != meta.producer_id {
                    self.lock_index().remove(&old);
                }
                meta.status = TxnStatus::Empty;
                meta.timeout_ms = timeout_ms;
                meta.updated_ms = now_ms();
                meta
            }
        };
        Self::persist(h, id, meta).await?;
        self.index(id, meta.producer_id);
        Ok((meta.producer_id, meta.epoch))
    }

    /// Ends whatever `meta` left open: an `Ongoing` transaction aborts, a `Prepare*` one is
    /// finished as decided.
    async fn finish_open(
        &self,
        h: &BrokerHandle,
        id: &str,
        meta: &mut TxnMeta,
    ) -> Result<(), BrokerError> {
        match meta.status {
            TxnStatus::Ongoing | TxnStatus::PrepareAbort => complete(h, id, meta, false).await,
            TxnStatus::PrepareCommit => complete(h, id, meta, true).await,
            _ => Ok(()),
        }
    }

    /// AddPartitionsToTxn: adds partitions to the producer's transaction, opening one. When
    /// some partition is unknown nothing is added, and the outcomes say which.
    ///
    /// # Errors
    /// For the whole request: as the module docs' rules say; a storage failure.
    pub async fn add_partitions(
        &self,
        h: &BrokerHandle,
        id: &str,
        producer_id: i64,
        epoch: i16,
        partitions: Vec<(String, i32)>,
    ) -> Result<Vec<PartitionOutcome>, BrokerError> {
        let mut guard = self.lock_known(id).await?;
        let meta = current(&mut guard, id, producer_id, epoch)?;
        let outcomes: Vec<PartitionOutcome> = partitions
            .into_iter()
            .map(|(topic, p)| {
                let e = match h.partition_count(&topic) {
                    None => Some(BrokerError::UnknownTopic(topic.clone())),
                    Some(n) if p < 0 || p as u32 >= n => Some(BrokerError::UnknownPartition {
                        topic: topic.clone(),
                        partition: p,
                    }),
                    Some(_) => None,
                };
                ((topic, p), e)
            })
            .collect();
        if outcomes.iter().any(|(_, e)| e.is_some()) {
            return Ok(outcomes);
        }
        for ((topic, p), _) in &outcomes {
            h.txn_logs()
                .mark(
                    h.storage().as_ref(),
                    &TopicPartition::new(topic.clone(), *p),
                )
                .await?;
        }
        let before = (meta.status, meta.partitions.len());
        meta.open()?;
        meta.partitions
            .extend(outcomes.iter().map(|(tp, _)| tp.clone()));
        if before != (meta.status, meta.partitions.len()) {
            meta.updated_ms = now_ms();
            Self::persist(h, id, meta).await?;
        }
        Ok(outcomes)
    }

    /// AddOffsetsToTxn: the transaction will commit offsets of `group`.
    ///
    /// # Errors
    /// As the module docs' rules say; an empty group; a storage failure.
    pub async fn add_offsets(
        &self,
        h: &BrokerHandle,
        id: &str,
        producer_id: i64,
        epoch: i16,
        group: &str,
    ) -> Result<(), BrokerError> {
        if group.is_empty() {
            return Err(BrokerError::InvalidRequest("an empty group id".into()));
        }
        let mut guard = self.lock_known(id).await?;
        let meta = current(&mut guard, id, producer_id, epoch)?;
        let before = meta.status;
        meta.open()?;
        if meta.groups.insert(group.to_string()) || before != meta.status {
            meta.updated_ms = now_ms();
            Self::persist(h, id, meta).await?;
        }
        Ok(())
    }

    /// TxnOffsetCommit: stages `offsets` of `group` in the transaction. With a member and
    /// generation (KIP-447), the member must belong to the group's current generation.
    ///
    /// # Errors
    /// As the module docs' rules say; a group the transaction did not add
    /// ([`BrokerError::InvalidTxnState`]); the group's member checks; a storage failure.
    #[allow(clippy::too_many_arguments)]
    pub async fn commit_offsets<'m>(
        &self,
        h: &BrokerHandle,
        id: &str,
        producer_id: i64,
        epoch: i16,
        group: &str,
        member: (impl Into<MemberRef<'m>>, i32),
        offsets: Vec<(TopicPartition, CommittedOffset)>,
    ) -> Result<(), BrokerError> {
        let mut guard = self.lock_known(id).await?;
        let meta = current(&mut guard, id, producer_id, epoch)?;
        if meta.status != TxnStatus::Ongoing || !meta.groups.contains(group) {
            return Err(BrokerError::InvalidTxnState(format!(
                "group {group:?} was not added to the transaction of {id:?} (AddOffsetsToTxn)"
            )));
        }
        let (member, generation) = (member.0.into(), member.1);
        if generation >= 0 || !member.id.is_empty() {
            h.check_group_member(group, member, generation).await?;
        }
        meta.offsets
            .entry(group.to_string())
            .or_default()
            .extend(offsets);
        meta.updated_ms = now_ms();
        Self::persist(h, id, meta).await
    }

    /// EndTxn: commits or aborts the open transaction; answers once every marker is written.
    ///
    /// # Errors
    /// As the module docs' rules say; a marker or offset commit that failed (the transaction
    /// stays decided; retry); a storage failure.
    pub async fn end(
        &self,
        h: &BrokerHandle,
        id: &str,
        producer_id: i64,
        epoch: i16,
        commit: bool,
    ) -> Result<(), BrokerError> {
        let mut guard = self.lock_known(id).await?;
        let meta = current(&mut guard, id, producer_id, epoch)?;
        use TxnStatus::*;
        match (meta.status, commit) {
            (Ongoing, _) | (PrepareCommit, true) | (PrepareAbort, false) => {
                complete(h, id, meta, commit).await
            }
            (CompleteCommit, true) | (CompleteAbort, false) => Ok(()),
            (status, _) => Err(BrokerError::InvalidTxnState(format!(
                "cannot {} the transaction of {id:?}: it is {status:?}",
                if commit { "commit" } else { "abort" }
            ))),
        }
    }

    /// The partitions of `group` with offsets staged by an undecided transaction: an
    /// OffsetFetch that asks for stable offsets (KIP-447, `read_committed` consumers) gets
    /// UNSTABLE_OFFSET_COMMIT for them and retries, instead of resuming before what the
    /// transaction consumed.
    pub async fn pending_offsets(&self, group: &str) -> HashSet<TopicPartition> {
        let slots: Vec<Slot> = self.lock_slots().values().cloned().collect();
        let mut out = HashSet::new();
        for slot in slots {
            if let Some(meta) = slot.lock().await.as_ref() {
                if let Some(offsets) = meta.offsets.get(group) {
                    out.extend(offsets.keys().cloned());
                }
            }
        }
        out
    }

    /// Checks that a transactional batch of `producer_id` at `epoch` may go to `tp`.
    ///
    /// # Errors
    /// As the module docs' rules say.
    pub async fn verify_produce(
        &self,
        producer_id: i64,
        epoch: i16,
        topic: &str,
        partition: i32,
    ) -> Result<(), BrokerError> {
        let not_added = || {
            BrokerError::InvalidTxnState(format!(
                "producer {producer_id} wrote to {topic}/{partition} without adding it to a \
                 transaction (AddPartitionsToTxn)"
            ))
        };
        let id = self.lock_index().get(&producer_id).cloned();
        let Some(id) = id else {
            return Err(not_added());
        };
        let slot = self.known_slot(&id).map_err(|_| not_added())?;
        let mut guard = slot.lock().await;
        let meta = current(&mut guard, &id, producer_id, epoch)?;
        if meta.status == TxnStatus::Ongoing
            && meta.partitions.contains(&(topic.to_string(), partition))
        {
            Ok(())
        } else {
            Err(not_added())
        }
    }

    /// One timer round: aborts transactions open past their timeout (with a new epoch, which
    /// fences their producer), finishes decided ones whose markers failed, and forgets ids
    /// idle past `transactional_id_expiration_ms`. Failures are reported and retried next
    /// round.
    pub async fn tick(&self, h: &BrokerHandle) {
        let now = now_ms();
        let expiry =
            i64::try_from(h.config().broker.transactional_id_expiration_ms).unwrap_or(i64::MAX);
        let slots: Vec<(String, Slot)> = self
            .lock_slots()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (id, slot) in slots {
            let mut guard = slot.lock().await;
            let Some(meta) = guard.as_mut() else { continue };
            let result = match meta.status {
                TxnStatus::Ongoing if meta.expired(now) => {
                    eprintln!(
                        "weir: transaction of {id:?} open for more than {} ms: aborted",
                        meta.timeout_ms
                    );
                    if meta.epoch < i16::MAX - 1 {
                        meta.epoch += 1;
                    }
                    complete(h, &id, meta, false).await
                }
                TxnStatus::PrepareCommit => complete(h, &id, meta, true).await,
                TxnStatus::PrepareAbort => complete(h, &id, meta, false).await,
                TxnStatus::Empty | TxnStatus::CompleteCommit | TxnStatus::CompleteAbort
                    if now.saturating_sub(meta.updated_ms) > expiry =>
                {
                    let key = format!("{TXN_META_PREFIX}{id}");
                    match h.storage().delete_metadata(&key).await {
                        Ok(()) => {
                            self.lock_index().remove(&meta.producer_id);
                            *guard = None;
                            drop(guard);
                            self.lock_slots().remove(&id);
                            Ok(())
                        }
                        Err(e) => Err(e.into()),
                    }
                }
                _ => Ok(()),
            };
            if let Err(e) = result {
                eprintln!("weir: transaction of {id:?}: {e}; retried later");
            }
        }
    }
}

/// The meta of `id` when `producer_id` and `epoch` are its current ones.
fn current<'a>(
    guard: &'a mut Option<TxnMeta>,
    id: &str,
    producer_id: i64,
    epoch: i16,
) -> Result<&'a mut TxnMeta, BrokerError> {
    let meta = guard.as_mut().ok_or_else(|| {
        BrokerError::InvalidProducerIdMapping(format!("unknown transactional id {id:?}"))
    })?;
    if meta.producer_id != producer_id {
        return Err(BrokerError::InvalidProducerIdMapping(format!(
            "transactional id {id:?} has producer id {}, not {producer_id}",
            meta.producer_id
        )));
    }
    if meta.epoch != epoch {
        return Err(BrokerError::InvalidProducerEpoch {
            producer_id,
            current: meta.epoch,
            got: epoch,
        });
    }
    Ok(meta)
}

/// Decides the open transaction of `meta` (durably), writes its markers, commits its staged
/// offsets (on commit) and completes it (durably).
async fn complete(
    h: &BrokerHandle,
    id: &str,
    meta: &mut TxnMeta,
    commit: bool,
) -> Result<(), BrokerError> {
    meta.status = if commit {
        TxnStatus::PrepareCommit
    } else {
        TxnStatus::PrepareAbort
    };
    meta.updated_ms = now_ms();
    TxnCoordinator::persist(h, id, meta).await?;
    let (producer_id, epoch) = (meta.producer_id, meta.epoch);
    let writes = meta.partitions.iter().map(|(topic, partition)| async move {
        match h
            .write_txn_marker(topic, *partition, producer_id, epoch, commit)
            .await
        {
            // A topic deleted since holds nothing to end.
            Ok(_) | Err(BrokerError::UnknownTopic(_) | BrokerError::UnknownPartition { .. }) => {
                Ok(())
            }
            Err(e) => Err(e),
        }
    });
    for result in futures::future::join_all(writes).await {
        result?;
    }
    if commit {
        for (group, offsets) in &meta.offsets {
            let offsets = offsets
                .iter()
                .map(|(tp, o)| (tp.clone(), o.clone()))
                .collect();
            h.commit_txn_offsets(group, offsets).await?;
        }
    }
    meta.status = if commit {
        TxnStatus::CompleteCommit
    } else {
        TxnStatus::CompleteAbort
    };
    meta.partitions.clear();
    meta.groups.clear();
    meta.offsets.clear();
    meta.updated_ms = now_ms();
    TxnCoordinator::persist(h, id, meta).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What is stored reads back whole, staged offsets (keyed by partition) included.
    #[test]
    fn a_stored_transaction_reads_back_whole() {
        let mut meta = TxnMeta::new(42, 3, 60_000);
        meta.open().expect("open");
        meta.partitions.insert(("orders".into(), 2));
        meta.groups.insert("etl".into());
        meta.offsets.entry("etl".into()).or_default().insert(
            TopicPartition::new("in", 1),
            CommittedOffset {
                offset: 17,
                leader_epoch: -1,
                metadata: "m".into(),
                commit_timestamp_ms: 5,
            },
        );
        let bytes = rmp_serde::to_vec_named(&meta).expect("encode");
        let back: TxnMeta = rmp_serde::from_slice(&bytes).expect("decode");
        assert_eq!(back, meta);
        assert_eq!(back.status.name(), "Ongoing");
    }

    #[tokio::test]
    async fn partitions_added_to_a_transaction_are_remembered_across_a_reload() {
        let storage = weir_memory::MemoryStorage::new();
        let logs = TxnLogs::load(&storage).await.expect("load");
        let tp = TopicPartition::new("a.b-c_d", 7);
        assert!(!logs.contains(&tp));
        logs.mark(&storage, &tp).await.expect("mark");
        logs.mark(&storage, &tp)
            .await
            .expect("again: nothing to do");
        let reloaded = TxnLogs::load(&storage).await.expect("load");
        assert!(reloaded.contains(&tp));
        assert!(!reloaded.contains(&TopicPartition::new("a.b-c_d", 8)));
    }
}
