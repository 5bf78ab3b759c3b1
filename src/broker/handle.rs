//! [`Broker`] starts the actor system; [`BrokerHandle`] is its one API.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::oneshot;
use weir_storage::{Batch, CommittedOffset, LogOffsets, Offset, Storage, TopicPartition};

pub use super::error::BrokerError;
use super::group::{
    CheckMember, CommitOffsets, CommitTxnOffsets, ConsumerGroup, DeleteGroup, DescribeGroup,
    FetchOffsets, ForgetPartitions, Heartbeat, LeaveGroup, StopGroup, SyncGroup,
};
use super::group_record::GroupRecord;
use super::messages::{
    DescribeProducers, Fetch, GetOffsets, ListOffset, Publish, ReadLimit, TrimLog, WriteTxnMarker,
};
use super::partition::PartitionLimits;
use super::registry::{
    AlterTopicConfig, CreatePartitions, CreateTopic, DeleteTopic, RecoverTopics, Routes,
    ShutdownRegistry, TopicRegistry,
};
use super::topic::{PublishKeyless, Route};
use super::transactions::{TxnCoordinator, TxnLogs};
use super::types::{
    Acks, ActiveProducer, FetchResult, GroupDescription, GroupState, Isolation, JoinGroup,
    JoinResult, MemberRef, OffsetSpec, PublishAck, ResetTo, SyncResult, TopicDescription,
};
use super::{group, idempotence, messages};
use crate::config::Config;

/// Starts brokers.
#[derive(Debug)]
pub struct Broker;

/// Why a broker did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The storage did not open, or recovery failed.
    #[error("storage: {0}")]
    Storage(#[from] weir_storage::StorageError),
    /// Recovering topics failed.
    #[error("recovering topics: {0}")]
    Recover(#[from] BrokerError),
    /// The actor thread could not start.
    #[error("starting the actor system: {0}")]
    Thread(String),
}

/// The actor system's threads, taken by the first `shutdown`.
type Threads = (actix_rt::System, Vec<Arbiter>, std::thread::JoinHandle<()>);

struct Shared {
    registry: Addr<TopicRegistry>,
    routes: Routes,
    storage: Arc<dyn Storage>,
    config: Config,
    system: Mutex<Option<Threads>>,
    arbiters: Vec<ArbiterHandle>,
    next_arbiter: std::sync::atomic::AtomicUsize,
    groups: group::GroupRegistry,
    /// Async: allocating may write a block reservation to storage under the lock.
    producer_ids: tokio::sync::Mutex<idempotence::ProducerIdAllocator>,
    /// Set by [`BrokerHandle::begin_shutdown`].
    closing: std::sync::atomic::AtomicBool,
    /// Transactional ids and their transactions.
    txns: TxnCoordinator,
    /// The partitions ever added to a transaction.
    txn_logs: Arc<TxnLogs>,
}

/// The one API of a running broker. Cheap to clone; `Send + Sync`.
#[derive(Clone)]
pub struct BrokerHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for BrokerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerHandle")
            .field("storage", &self.shared.storage.name())
            .field("topics", &self.list_topics().len())
            .finish()
    }
}

impl Broker {
    /// Starts a broker with `config`. See the module docs.
    ///
    /// # Errors
    /// An invalid config, a storage that fails to open or recover, or topics that fail to load.
    pub async fn start(config: Config) -> Result<BrokerHandle, StartError> {
        Self::start_inner(config, None).await
    }

    /// Starts a broker on a storage the caller opened (a custom backend, a test wrapper);
    /// `config.storage` and `config.data_dir` are then unused.
    ///
    /// # Errors
    /// As [`Broker::start`].
    pub async fn start_with_storage(
        config: Config,
        storage: Arc<dyn Storage>,
    ) -> Result<BrokerHandle, StartError> {
        Self::start_inner(config, Some(storage)).await
    }

    async fn start_inner(
        config: Config,
        storage: Option<Arc<dyn Storage>>,
    ) -> Result<BrokerHandle, StartError> {
        config.validate()?;
        let (tx, rx) = oneshot::channel();
        let cfg = config.clone();
        let thread = std::thread::Builder::new()
            .name("weir-broker".into())
            .spawn(move || run_system(cfg, storage, tx))
            .map_err(|e| StartError::Thread(e.to_string()))?;
        let started = rx
            .await
            .map_err(|_| StartError::Thread("the actor system exited while starting".into()))?;
        let (registry, routes, storage, system, arbiters, (txns, txn_logs)) = match started {
            Ok(parts) => parts,
            Err(e) => {
                let _ = thread.join();
                return Err(e);
            }
        };
        let handle = BrokerHandle {
            shared: Arc::new(Shared {
                registry,
                routes,
                storage,
                config,
                arbiters: arbiters.iter().map(Arbiter::handle).collect(),
                system: Mutex::new(Some((system, arbiters, thread))),
                next_arbiter: std::sync::atomic::AtomicUsize::new(0),
                groups: Arc::new(Mutex::new(HashMap::new())),
                producer_ids: tokio::sync::Mutex::new(idempotence::ProducerIdAllocator::new()),
                closing: std::sync::atomic::AtomicBool::new(false),
                txns,
                txn_logs,
            }),
        };
        handle
            .shared
            .registry
            .send(RecoverTopics)
            .await
            .map_err(BrokerError::from)??;
        handle.load_groups_with_members().await?;
        handle.start_transaction_timer();
        handle.start_offsets_retention_timer();
        Ok(handle)
    }
}

type Started = (
    Addr<TopicRegistry>,
    Routes,
    Arc<dyn Storage>,
    actix_rt::System,
    Vec<Arbiter>,
    (TxnCoordinator, Arc<TxnLogs>),
);

fn run_system(
    config: Config,
    storage: Option<Arc<dyn Storage>>,
    tx: oneshot::Sender<Result<Started, StartError>>,
) {
    let runner = actix_rt::System::new();
    let ok = runner.block_on(async move {
        let opened = match storage {
            Some(s) => Ok(s),
            None => crate::open_storage(&config.storage_config()).await,
        };
        let storage = match opened {
            Ok(s) => s,
            Err(e) => {
                let _ = tx.send(Err(e.into()));
                return false;
            }
        };
        // Transactional ids and the partitions that may hold transactions: one listing.
        let (txns, txn_logs) = match storage.list_metadata().await {
            Ok(m) => (
                TxnCoordinator::from_metadata(&m),
                Arc::new(TxnLogs::from_metadata(&m)),
            ),
            Err(e) => {
                let _ = tx.send(Err(e.into()));
                return false;
            }
        };
        let n = match config.broker.arbiters {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let arbiters: Vec<Arbiter> = (0..n).map(|_| Arbiter::new()).collect();
        let handles = arbiters.iter().map(Arbiter::handle).collect();
        let limits = PartitionLimits {
            queue_bytes: config.broker.partition_queue_bytes,
            append_batch_bytes: config.broker.append_batch_bytes,
            retention_check_interval: Duration::from_millis(
                config.broker.retention_check_interval_ms,
            ),
            max_fetch_wait: Duration::from_millis(config.broker.max_fetch_wait_ms),
            fetch_max_bytes: config.broker.fetch_max_bytes,
            producer_id_expiration: Duration::from_millis(config.broker.producer_id_expiration_ms),
            compaction_max_keys: config.broker.compaction_max_keys,
            compaction_slots: Arc::new(tokio::sync::Semaphore::new(1)),
            txn_logs: txn_logs.clone(),
        };
        let routes: Routes = Arc::new(RwLock::new(HashMap::new()));
        let registry = TopicRegistry::new(
            storage.clone(),
            config.topic_defaults.clone(),
            limits,
            handles,
            routes.clone(),
        )
        .start();
        tx.send(Ok((
            registry,
            routes,
            storage,
            actix_rt::System::current(),
            arbiters,
            (txns, txn_logs),
        )))
        .is_ok()
    });
    if ok {
        let _ = runner.run();
    }
}

impl BrokerHandle {
    /// The configuration the broker runs with.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// The storage the broker runs on (for group offsets and admin tools).
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.shared.storage
    }

    fn route(&self, topic: &str) -> Option<Arc<Route>> {
        self.shared
            .routes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(topic)
            .cloned()
    }

    /// The route of `topic`, creating the topic when auto-creation is on and `create` is set.
    async fn route_or_create(&self, topic: &str, create: bool) -> Result<Arc<Route>, BrokerError> {
        if let Some(r) = self.route(topic) {
            return Ok(r);
        }
        if !(create && self.shared.config.broker.auto_create_topics) {
            return Err(BrokerError::UnknownTopic(topic.to_string()));
        }
        match self.create_topic(topic, None, Vec::new()).await {
            Ok(r) => Ok(r),
            // Someone else created it meanwhile.
            Err(BrokerError::TopicExists(_)) => self
                .route(topic)
                .ok_or_else(|| BrokerError::UnknownTopic(topic.to_string())),
            Err(e) => Err(e),
        }
    }

    /// Creates a topic with `partitions` (the default when `None`) and config overrides.
    ///
    /// # Errors
    /// An invalid name or config, an existing topic, or a storage failure.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: Option<u32>,
        configs: Vec<(String, String)>,
    ) -> Result<Arc<Route>, BrokerError> {
        self.shared
            .registry
            .send(CreateTopic {
                name: name.to_string(),
                partitions,
                configs,
            })
            .await?
    }

    /// Deletes a topic, its data and its committed offsets.
    ///
    /// # Errors
    /// An unknown topic or a storage failure.
    pub async fn delete_topic(&self, name: &str) -> Result<(), BrokerError> {
        let partitions = self.partition_count(name).unwrap_or(0);
        self.shared
            .registry
            .send(DeleteTopic {
                name: name.to_string(),
            })
            .await??;
        let tps: Vec<TopicPartition> = (0..partitions as i32)
            .map(|p| TopicPartition::new(name, p))
            .collect();
        for g in self.active_groups() {
            let _ = g.send(ForgetPartitions(tps.clone())).await;
        }
        Ok(())
    }

    /// Raises the partition count of a topic to `total`.
    ///
    /// # Errors
    /// An unknown topic, a count that does not grow, or a storage failure.
    pub async fn create_partitions(&self, name: &str, total: u32) -> Result<(), BrokerError> {
        self.shared
            .registry
            .send(CreatePartitions {
                name: name.to_string(),
                total,
            })
            .await?
            .map(|_| ())
    }

    /// Changes settings of a topic (`retention.ms=...`).
    ///
    /// # Errors
    /// An unknown topic or key, an invalid value.
    pub async fn alter_topic_config(
        &self,
        name: &str,
        set: Vec<(String, String)>,
    ) -> Result<(), BrokerError> {
        self.change_topic_config(name, set, Vec::new(), false).await
    }

    /// Changes settings of a topic: `set` them, `reset` others to the broker's topic defaults
    /// (Kafka's IncrementalAlterConfigs SET and DELETE), all or nothing; with `validate_only`,
    /// only checks that the change would be accepted.
    ///
    /// # Errors
    /// An unknown topic or key, an invalid value.
    pub async fn change_topic_config(
        &self,
        name: &str,
        set: Vec<(String, String)>,
        reset: Vec<String>,
        validate_only: bool,
    ) -> Result<(), BrokerError> {
        self.shared
            .registry
            .send(AlterTopicConfig {
                name: name.to_string(),
                set,
                reset,
                validate_only,
            })
            .await?
            .map(|_| ())
    }

    /// Every topic name, sorted.
    pub fn list_topics(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .shared
            .routes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect();
        v.sort();
        v
    }

    /// The name of the topic whose id (Kafka's topic id) is `id`, if it exists.
    pub fn topic_name(&self, id: u128) -> Option<String> {
        self.shared
            .routes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .find(|r| r.id == id)
            .map(|r| r.name.clone())
    }

    /// The partition count of `topic`, if it exists.
    pub fn partition_count(&self, topic: &str) -> Option<u32> {
        self.route(topic).map(|r| r.partitions.len() as u32)
    }

    /// The largest batch `topic` accepts now (its `max.message.bytes`), if it exists.
    pub fn max_message_bytes(&self, topic: &str) -> Option<usize> {
        self.route(topic)
            .map(|r| r.config.max_message_bytes as usize)
    }

    /// A topic's settings and per-partition offsets.
    ///
    /// # Errors
    /// An unknown topic.
    pub async fn describe_topic(&self, name: &str) -> Result<TopicDescription, BrokerError> {
        let route = self
            .route(name)
            .ok_or_else(|| BrokerError::UnknownTopic(name.to_string()))?;
        let mut partitions = Vec::with_capacity(route.partitions.len());
        for p in &route.partitions {
            partitions.push(p.send(GetOffsets).await?);
        }
        Ok(TopicDescription {
            name: route.name.clone(),
            id: route.id,
            config: route.config.clone(),
            partitions,
        })
    }

    /// Appends batches to `topic`: to `partition`, or where the sticky partitioner says when
    /// `None`. Creates the topic first when it is unknown and auto-creation is on. Returns the
    /// partition and what the log assigned.
    ///
    /// # Errors
    /// Unknown topic or partition, a batch over `max_message_bytes` or invalid, a full queue
    /// ([`BrokerError::Busy`]), a storage failure.
    pub async fn publish(
        &self,
        topic: &str,
        partition: Option<i32>,
        batches: Vec<Batch>,
        acks: Acks,
    ) -> Result<(i32, PublishAck), BrokerError> {
        let route = self.route_or_create(topic, true).await?;
        check_replicas(&route, acks)?;
        check_keys(&route, &batches)?;
        self.verify_transactional(topic, partition, &batches)
            .await?;
        let batches = recompress(&route, batches)?;
        match partition {
            Some(p) => {
                let ack = route
                    .partition(p)?
                    .send(Publish { batches, acks })
                    .await??;
                Ok((p, ack))
            }
            None => route.topic.send(PublishKeyless { batches, acks }).await?,
        }
    }

    /// Starts a publish to an explicit partition and returns its outcome as a future, with the
    /// guarantee that the publish is already in the partition's queue when this returns (for a
    /// known topic): calls made in order are appended in that order, however their futures are
    /// awaited. A full mailbox is waited for here, inline, so the order still holds. Unknown
    /// topics (which may be auto-created) and keyless publishes take the ordinary path.
    pub async fn publish_in_order(
        &self,
        topic: &str,
        partition: Option<i32>,
        batches: Vec<Batch>,
        acks: Acks,
    ) -> futures::future::BoxFuture<'static, Result<(i32, PublishAck), BrokerError>> {
        use futures::FutureExt;
        let (Some(route), Some(p)) = (self.route(topic), partition) else {
            let h = self.clone();
            let topic = topic.to_string();
            return async move { h.publish(&topic, partition, batches, acks).await }.boxed();
        };
        if let Err(e) = self.verify_transactional(topic, partition, &batches).await {
            return futures::future::ready(Err(e)).boxed();
        }
        let checked = check_replicas(&route, acks)
            .and_then(|()| check_keys(&route, &batches))
            .and_then(|()| recompress(&route, batches))
            .and_then(|b| Ok((b, route.partition(p)?.clone())));
        let (batches, addr) = match checked {
            Ok(ok) => ok,
            Err(e) => return futures::future::ready(Err(e)).boxed(),
        };
        let (reply, rx) = oneshot::channel();
        let msg = messages::PublishTo {
            batches,
            acks,
            reply,
        };
        match addr.try_send(msg) {
            Ok(()) => {}
            Err(actix::prelude::SendError::Full(msg)) => {
                if addr.send(msg).await.is_err() {
                    return futures::future::ready(Err(BrokerError::ShuttingDown)).boxed();
                }
            }
            Err(actix::prelude::SendError::Closed(_)) => {
                return futures::future::ready(Err(BrokerError::ShuttingDown)).boxed();
            }
        }
        async move {
            let ack = rx.await.unwrap_or(Err(BrokerError::ShuttingDown))?;
            Ok((p, ack))
        }
        .boxed()
    }

    /// Kafka's InitProducerId: returns `(producer id, epoch)`.
    ///
    /// With a transactional id, the transaction coordinator's answer
    /// ([`BrokerHandle::init_transactional_producer`] with Kafka's default transaction timeout
    /// of 60 s). Without one (idempotence only) and without a producer
    /// id (`producer_id == -1`): a fresh id, unique across restarts, with epoch 0. With an id
    /// this broker issued and its current epoch (KIP-360, InitProducerId v3+, sent after a
    /// sequence error): the same id with the next epoch, which fences the older epoch in every
    /// partition once the producer writes with it; a fresh id with epoch 0 when the epoch would
    /// pass `i16::MAX`.
    ///
    /// # Errors
    /// [`BrokerError::InvalidRequest`] for an id below -1, a negative epoch with an id, or an
    /// id this broker never issued; the coordinator's errors for a transactional id; a storage
    /// failure while reserving ids.
    pub async fn init_producer_id(
        &self,
        transactional_id: Option<&str>,
        producer_id: i64,
        producer_epoch: i16,
    ) -> Result<(i64, i16), BrokerError> {
        if let Some(id) = transactional_id {
            return self
                .init_transactional_producer(id, 60_000, producer_id, producer_epoch)
                .await;
        }
        let storage = self.shared.storage.as_ref();
        let mut ids = self.shared.producer_ids.lock().await;
        match (producer_id, producer_epoch) {
            (-1, _) => Ok((ids.allocate(storage).await?, 0)),
            (id, epoch) if id < -1 || epoch < 0 => Err(BrokerError::InvalidRequest(format!(
                "producer id {id} with epoch {epoch}: expected -1, or an id with its epoch"
            ))),
            (id, _) if !ids.was_issued(storage, id).await? => Err(BrokerError::InvalidRequest(
                format!("producer id {id} was never issued by this broker"),
            )),
            (_, i16::MAX) => Ok((ids.allocate(storage).await?, 0)),
            (id, epoch) => Ok((id, epoch + 1)),
        }
    }

    /// InitProducerId with a transactional id and the producer's `transaction.timeout.ms`:
    /// the id's producer id with a new epoch, after ending what its previous instance left
    /// open ([`TxnCoordinator::init`]).
    ///
    /// # Errors
    /// As [`TxnCoordinator::init`].
    pub async fn init_transactional_producer(
        &self,
        transactional_id: &str,
        timeout_ms: i32,
        producer_id: i64,
        producer_epoch: i16,
    ) -> Result<(i64, i16), BrokerError> {
        self.shared
            .txns
            .init(
                self,
                transactional_id,
                timeout_ms,
                producer_id,
                producer_epoch,
            )
            .await
    }

    /// The transaction coordinator (AddPartitionsToTxn, AddOffsetsToTxn, TxnOffsetCommit,
    /// EndTxn, and the state admin tools list).
    pub fn transactions(&self) -> &TxnCoordinator {
        &self.shared.txns
    }

    /// The partitions ever added to a transaction.
    pub(crate) fn txn_logs(&self) -> &TxnLogs {
        &self.shared.txn_logs
    }

    /// A fresh producer id, unique across restarts.
    pub(crate) async fn allocate_producer_id(&self) -> Result<i64, BrokerError> {
        let mut ids = self.shared.producer_ids.lock().await;
        ids.allocate(self.shared.storage.as_ref()).await
    }

    /// Appends a transaction marker to one partition, behind everything queued there.
    pub(crate) async fn write_txn_marker(
        &self,
        topic: &str,
        partition: i32,
        producer_id: i64,
        epoch: i16,
        commit: bool,
    ) -> Result<Offset, BrokerError> {
        let route = self
            .route(topic)
            .ok_or_else(|| BrokerError::UnknownTopic(topic.to_string()))?;
        route
            .partition(partition)?
            .send(WriteTxnMarker {
                producer_id,
                epoch,
                commit,
            })
            .await?
    }

    /// Commits offsets a committed transaction staged.
    pub(crate) async fn commit_txn_offsets(
        &self,
        group: &str,
        offsets: Vec<(TopicPartition, CommittedOffset)>,
    ) -> Result<(), BrokerError> {
        self.ask_group(group, CommitTxnOffsets { offsets }).await?
    }

    /// Checks that a member belongs to a group's current generation.
    pub(crate) async fn check_group_member(
        &self,
        group: &str,
        member: MemberRef<'_>,
        generation: i32,
    ) -> Result<(), BrokerError> {
        self.ask_group(
            group,
            CheckMember {
                member_id: member.id.to_string(),
                instance_id: member.instance.map(str::to_string),
                generation,
            },
        )
        .await?
    }

    /// Checks the transactional batches of a publish with the coordinator (see
    /// [`TxnCoordinator::verify_produce`]); publishes without any cost one header read per
    /// batch.
    async fn verify_transactional(
        &self,
        topic: &str,
        partition: Option<i32>,
        batches: &[Batch],
    ) -> Result<(), BrokerError> {
        let mut checked: Option<(i64, i16)> = None;
        for b in batches.iter().filter(|b| b.is_transactional()) {
            let producer = (b.producer_id(), b.producer_epoch());
            if checked == Some(producer) {
                continue;
            }
            let Some(p) = partition else {
                return Err(BrokerError::InvalidTxnState(
                    "a transactional batch needs an explicit partition".into(),
                ));
            };
            self.shared
                .txns
                .verify_produce(producer.0, producer.1, topic, p)
                .await?;
            checked = Some(producer);
        }
        Ok(())
    }

    /// Runs the coordinator's timer ([`TxnCoordinator::tick`]) on the actor system until the
    /// broker stops.
    fn start_transaction_timer(&self) {
        let period = Duration::from_millis(
            self.shared
                .config
                .broker
                .transaction_abort_check_interval_ms,
        );
        let weak = Arc::downgrade(&self.shared);
        let Some(arbiter) = self.shared.arbiters.first() else {
            return;
        };
        arbiter.spawn(async move {
            loop {
                // Decided transactions left by a crash are finished at once.
                let Some(shared) = weak.upgrade() else { break };
                let h = BrokerHandle { shared };
                h.shared.txns.tick(&h).await;
                drop(h);
                tokio::time::sleep(period).await;
            }
        });
    }

    /// Every `[groups] offsets_retention_check_interval_ms`, expires committed offsets (see
    /// [`BrokerHandle::expire_offsets`]), unless `offsets_retention_ms` is -1.
    fn start_offsets_retention_timer(&self) {
        let groups = &self.shared.config.groups;
        if groups.offsets_retention_ms < 0 {
            return;
        }
        let period = Duration::from_millis(groups.offsets_retention_check_interval_ms);
        let weak = Arc::downgrade(&self.shared);
        let Some(arbiter) = self.shared.arbiters.first() else {
            return;
        };
        arbiter.spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                let Some(shared) = weak.upgrade() else { break };
                let h = BrokerHandle { shared };
                if let Err(e) = h.expire_offsets().await {
                    eprintln!("weir: expiring committed offsets failed: {e}");
                }
            }
        });
    }

    /// Expires committed offsets now (Kafka's offset expiration; the rules are
    /// [`group::ExpireOffsets`]'s): every stored group whose offsets may have expired, judged
    /// from storage, is asked to remove them; a stored empty group without offsets is loaded,
    /// so that it unloads and is forgotten. Returns how many offsets were removed; a group that
    /// fails to remove its own is reported and skipped.
    ///
    /// # Errors
    /// A storage failure while listing the groups or reading what they stored.
    pub async fn expire_offsets(&self) -> Result<usize, BrokerError> {
        let retention_ms = self.shared.config.groups.offsets_retention_ms;
        if retention_ms < 0 {
            return Ok(0);
        }
        let now = super::now_ms();
        let storage = &self.shared.storage;
        let mut removed = 0;
        for name in storage.list_groups().await? {
            let record = match storage.group_state(&name).await? {
                Some(bytes) => GroupRecord::decode(&bytes).ok(),
                None => None,
            };
            if record.as_ref().is_some_and(|r| !r.members.is_empty()) {
                continue;
            }
            let offsets = storage.fetch_offsets(&name).await?;
            let due = if offsets.is_empty() {
                record.is_some()
            } else {
                let emptied = record.as_ref().and_then(|r| r.empty_since_ms);
                !group::expired_offsets(
                    GroupState::Empty,
                    emptied,
                    offsets.iter().map(|(tp, o)| (tp, o)),
                    now,
                    retention_ms,
                )
                .is_empty()
            };
            if due {
                let expire = group::ExpireOffsets {
                    now_ms: now,
                    retention_ms,
                };
                // One group failing does not hold the others back.
                match self.ask_group(&name, expire).await {
                    Ok(Ok(n)) => removed += n,
                    Ok(Err(e)) | Err(e) => {
                        eprintln!("weir: group {name}: expiring its offsets failed: {e}")
                    }
                }
            }
        }
        if removed > 0 {
            eprintln!("weir: {removed} committed offsets expired");
        }
        Ok(removed)
    }

    /// Reads decided data ([`Isolation::ReadCommitted`]) from `topic`/`partition` at `from`: up
    /// to `max_bytes` (at least one batch; capped by `[broker] fetch_max_bytes`), waiting up to
    /// `max_wait` until `min_bytes` are available. The answer lists the aborted transactions
    /// its batches may hold.
    ///
    /// # Errors
    /// Unknown topic or partition, an offset out of range, a storage failure.
    pub async fn fetch(
        &self,
        topic: &str,
        partition: i32,
        from: Offset,
        max_bytes: usize,
        min_bytes: usize,
        max_wait: Duration,
    ) -> Result<FetchResult, BrokerError> {
        let isolation = Isolation::ReadCommitted;
        self.fetch_isolated(
            topic,
            partition,
            from,
            (max_bytes.max(1), min_bytes),
            max_wait,
            isolation,
        )
        .await
    }

    /// [`BrokerHandle::fetch`] with a choice of isolation; `(max, min)` bytes. A `max` of 0
    /// reads no batch: the answer carries the partition's offsets only.
    ///
    /// # Errors
    /// As [`BrokerHandle::fetch`].
    pub async fn fetch_isolated(
        &self,
        topic: &str,
        partition: i32,
        from: Offset,
        (max_bytes, min_bytes): (usize, usize),
        max_wait: Duration,
        isolation: Isolation,
    ) -> Result<FetchResult, BrokerError> {
        let fetch = Fetch {
            from,
            limit: ReadLimit::at_least_one_batch(max_bytes),
            min_bytes,
            max_wait,
            isolation,
        };
        self.send_fetch(topic, partition, fetch).await
    }

    /// Reads from `topic`/`partition` at `from` without waiting, strictly within `max_bytes`:
    /// a first batch larger than that is left unread, and the answer then carries the
    /// partition's offsets only. For the partitions of a Kafka fetch after the first that
    /// returned records, which take only what fits in what the fetch has left.
    ///
    /// # Errors
    /// As [`BrokerHandle::fetch`].
    pub async fn fetch_within(
        &self,
        topic: &str,
        partition: i32,
        from: Offset,
        max_bytes: usize,
        isolation: Isolation,
    ) -> Result<FetchResult, BrokerError> {
        let fetch = Fetch {
            from,
            limit: ReadLimit::within(max_bytes),
            min_bytes: 0,
            max_wait: Duration::ZERO,
            isolation,
        };
        self.send_fetch(topic, partition, fetch).await
    }

    async fn send_fetch(
        &self,
        topic: &str,
        partition: i32,
        fetch: Fetch,
    ) -> Result<FetchResult, BrokerError> {
        let route = self.route_or_create(topic, false).await?;
        route.partition(partition)?.send(fetch).await?
    }

    /// Looks up the earliest, the latest (the last stable offset: [`Isolation::ReadCommitted`]),
    /// or the first offset at or after a timestamp.
    ///
    /// # Errors
    /// Unknown topic or partition, a storage failure.
    pub async fn list_offset(
        &self,
        topic: &str,
        partition: i32,
        spec: OffsetSpec,
    ) -> Result<Option<Offset>, BrokerError> {
        self.list_offset_isolated(topic, partition, spec, Isolation::ReadCommitted)
            .await
    }

    /// [`BrokerHandle::list_offset`] with a choice of isolation: the latest offset is the high
    /// watermark under [`Isolation::ReadUncommitted`].
    ///
    /// # Errors
    /// As [`BrokerHandle::list_offset`].
    pub async fn list_offset_isolated(
        &self,
        topic: &str,
        partition: i32,
        spec: OffsetSpec,
        isolation: Isolation,
    ) -> Result<Option<Offset>, BrokerError> {
        let route = self.route_or_create(topic, false).await?;
        route
            .partition(partition)?
            .send(ListOffset { spec, isolation })
            .await?
    }

    /// The producers one partition remembers: their last writes and open transactions (Kafka's
    /// DescribeProducers, for `kafka-transactions.sh describe-producers` and `find-hanging`).
    ///
    /// # Errors
    /// Unknown topic or partition; the partition's producer state failed to load.
    pub async fn describe_producers(
        &self,
        topic: &str,
        partition: i32,
    ) -> Result<Vec<ActiveProducer>, BrokerError> {
        let route = self.route_or_create(topic, false).await?;
        route.partition(partition)?.send(DescribeProducers).await?
    }

    /// Start, end and size of one partition.
    ///
    /// # Errors
    /// Unknown topic or partition.
    pub async fn offsets(&self, topic: &str, partition: i32) -> Result<LogOffsets, BrokerError> {
        let route = self.route_or_create(topic, false).await?;
        Ok(route.partition(partition)?.send(GetOffsets).await?)
    }

    /// Deletes the records below `before` (Kafka's DeleteRecords); returns the new start.
    ///
    /// # Errors
    /// Unknown topic or partition, a storage failure.
    pub async fn delete_records(
        &self,
        topic: &str,
        partition: i32,
        before: Offset,
    ) -> Result<Offset, BrokerError> {
        let route = self.route_or_create(topic, false).await?;
        route.partition(partition)?.send(TrimLog { before }).await?
    }

    fn active_groups(&self) -> Vec<Addr<ConsumerGroup>> {
        self.shared
            .groups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// The actor of group `id`, started (and its offsets loaded) on first use.
    fn group(&self, id: &str) -> Result<Addr<ConsumerGroup>, BrokerError> {
        if id.is_empty() {
            return Err(BrokerError::InvalidRequest("the group id is empty".into()));
        }
        if self
            .shared
            .system
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_none()
        {
            return Err(BrokerError::ShuttingDown);
        }
        let mut groups = self.shared.groups.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(g) = groups.get(id).filter(|g| g.connected()) {
            return Ok(g.clone());
        }
        let n = self
            .shared
            .next_arbiter
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let home = &self.shared.arbiters[n % self.shared.arbiters.len()];
        let (gid, storage, routes, settings, registry) = (
            id.to_string(),
            self.shared.storage.clone(),
            self.shared.routes.clone(),
            self.shared.config.groups.clone(),
            self.shared.groups.clone(),
        );
        let addr = ConsumerGroup::start_in_arbiter(home, move |_| {
            ConsumerGroup::new(gid, storage, routes, settings, registry)
        });
        if self
            .shared
            .closing
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            // Before any request: a group started while the broker drains holds no join.
            addr.do_send(group::ReleaseWaiting);
        }
        groups.insert(id.to_string(), addr.clone());
        Ok(addr)
    }

    /// Prepares a shutdown while the servers drain their connections: every group answers the
    /// joins and syncs it holds for other members at once, and refuses new ones
    /// ([`group::ReleaseWaiting`]), so that no connection waits for a rebalance (up to the
    /// members' rebalance timeout) before the broker can stop. Everything else goes on until
    /// [`BrokerHandle::shutdown`].
    pub async fn begin_shutdown(&self) {
        self.shared
            .closing
            .store(true, std::sync::atomic::Ordering::SeqCst);
        for g in self.active_groups() {
            let _ = g.send(group::ReleaseWaiting).await;
        }
    }

    /// Starts the actor of every stored group whose record has members (Kafka's coordinator
    /// loads all its groups): they carry on in their generation, and those that do not come
    /// back are removed when their sessions run out. Groups without members load when named.
    async fn load_groups_with_members(&self) -> Result<(), BrokerError> {
        let storage = &self.shared.storage;
        for name in storage.list_groups().await? {
            let Some(bytes) = storage.group_state(&name).await? else {
                continue;
            };
            // An unreadable record is reported by the group when it loads.
            let has_members = |r: GroupRecord| {
                !r.members.is_empty() || r.consumer.is_some_and(|c| !c.members.is_empty())
            };
            if GroupRecord::decode(&bytes).is_ok_and(has_members) {
                self.group(&name)?;
            }
        }
        Ok(())
    }

    /// Sends `msg` to group `group`'s actor (loading the group if needed). A group that
    /// unloaded itself between the lookup and the send closed its mailbox without handling the
    /// message: it is loaded again and the message sent again.
    async fn ask_group<M>(&self, group: &str, msg: M) -> Result<M::Result, BrokerError>
    where
        M: actix::Message + Clone + Send + 'static,
        M::Result: Send,
        ConsumerGroup: actix::Handler<M>,
    {
        let mut attempts = 0;
        loop {
            match self.group(group)?.send(msg.clone()).await {
                Err(actix::MailboxError::Closed) if attempts < 3 => attempts += 1,
                r => return Ok(r?),
            }
        }
    }

    /// Joins group `group`; answers when the join phase completes. See [`group`] for the
    /// protocol.
    ///
    /// # Errors
    /// A bad session timeout, no common protocol, an unknown member, MEMBER_ID_REQUIRED.
    pub async fn join_group(
        &self,
        group: &str,
        join: JoinGroup,
    ) -> Result<JoinResult, BrokerError> {
        self.ask_group(group, join).await?
    }

    /// A heartbeat of Kafka's consumer group protocol (KIP-848): joins (epoch 0), stays in, or
    /// leaves (epoch -1; -2 for a static member that will be back) group `group`. See
    /// [`super::consumer_protocol`].
    ///
    /// # Errors
    /// UNKNOWN_MEMBER_ID, FENCED_MEMBER_EPOCH, UNRELEASED_INSTANCE_ID, FENCED_INSTANCE_ID,
    /// UNSUPPORTED_ASSIGNOR, INVALID_REGULAR_EXPRESSION, GROUP_MAX_SIZE_REACHED, a classic group
    /// with members ([`BrokerError::GroupTypeMismatch`]).
    pub async fn consumer_group_heartbeat(
        &self,
        group: &str,
        input: super::consumer_protocol::HeartbeatInput,
        owned_ids: Option<Vec<(u128, Vec<i32>)>>,
    ) -> Result<group::ConsumerHeartbeatAnswer, BrokerError> {
        self.ask_group(group, group::ConsumerHeartbeat { input, owned_ids })
            .await?
    }

    /// Gets (and from the leader, sets) the assignment of generation `generation`.
    ///
    /// # Errors
    /// Unknown member, illegal generation, a rebalance in progress.
    pub async fn sync_group(
        &self,
        group: &str,
        member: impl Into<MemberRef<'_>>,
        generation: i32,
        assignments: Vec<(String, bytes::Bytes)>,
    ) -> Result<SyncResult, BrokerError> {
        self.sync_group_named(group, member, generation, assignments, None, None)
            .await
    }

    /// [`Self::sync_group`] for a request that names the protocol type and protocol it
    /// joined with (Kafka's SyncGroup v5+).
    ///
    /// # Errors
    /// As [`Self::sync_group`]; [`BrokerError::InconsistentGroupProtocol`] when either name
    /// is not the group's.
    pub async fn sync_group_named(
        &self,
        group: &str,
        member: impl Into<MemberRef<'_>>,
        generation: i32,
        assignments: Vec<(String, bytes::Bytes)>,
        protocol_type: Option<String>,
        protocol: Option<String>,
    ) -> Result<SyncResult, BrokerError> {
        let member = member.into();
        self.ask_group(
            group,
            SyncGroup {
                member_id: member.id.to_string(),
                instance_id: member.instance.map(str::to_string),
                generation,
                assignments,
                protocol_type,
                protocol,
            },
        )
        .await?
    }

    /// Keeps a member's session alive.
    ///
    /// # Errors
    /// [`BrokerError::RebalanceInProgress`] when the member must rejoin; unknown member,
    /// illegal generation.
    pub async fn heartbeat(
        &self,
        group: &str,
        member: impl Into<MemberRef<'_>>,
        generation: i32,
    ) -> Result<(), BrokerError> {
        let member = member.into();
        self.ask_group(
            group,
            Heartbeat {
                member_id: member.id.to_string(),
                instance_id: member.instance.map(str::to_string),
                generation,
            },
        )
        .await?
    }

    /// Members leave the group (by member id, or by static instance id with an empty id); one
    /// outcome per member, in order: an unknown member, a fenced static member.
    ///
    /// # Errors
    /// An empty group id, a stopped broker.
    pub async fn leave_group(
        &self,
        group: &str,
        members: Vec<(String, Option<String>)>,
    ) -> Result<Vec<Result<(), BrokerError>>, BrokerError> {
        self.ask_group(group, LeaveGroup { members }).await
    }

    /// Commits offsets for a member of generation `generation` (or, with an empty member and
    /// generation -1, for a group without members). Durable when it returns.
    ///
    /// # Errors
    /// Unknown member, illegal generation, a rebalance in progress, a storage failure.
    pub async fn commit_offsets(
        &self,
        group: &str,
        member: impl Into<MemberRef<'_>>,
        generation: i32,
        offsets: Vec<(TopicPartition, CommittedOffset)>,
    ) -> Result<(), BrokerError> {
        self.commit_offsets_of(group, member.into(), generation, offsets, true)
            .await
    }

    /// [`Self::commit_offsets`] from a request that can name a classic generation but not a
    /// consumer-protocol member's epoch (Kafka's OffsetCommit below v9).
    ///
    /// # Errors
    /// As [`Self::commit_offsets`]; [`BrokerError::UnsupportedVersion`] for a member of the
    /// consumer protocol.
    pub async fn commit_offsets_by_generation(
        &self,
        group: &str,
        member: impl Into<MemberRef<'_>>,
        generation: i32,
        offsets: Vec<(TopicPartition, CommittedOffset)>,
    ) -> Result<(), BrokerError> {
        self.commit_offsets_of(group, member.into(), generation, offsets, false)
            .await
    }

    async fn commit_offsets_of(
        &self,
        group: &str,
        member: MemberRef<'_>,
        generation: i32,
        offsets: Vec<(TopicPartition, CommittedOffset)>,
        member_epochs: bool,
    ) -> Result<(), BrokerError> {
        self.ask_group(
            group,
            CommitOffsets {
                member_id: member.id.to_string(),
                instance_id: member.instance.map(str::to_string),
                generation,
                offsets,
                admin: false,
                member_epochs,
            },
        )
        .await?
    }

    /// Committed offsets of `group` for `partitions` (all when `None`).
    ///
    /// # Errors
    /// An empty group id, a stopped broker.
    pub async fn fetch_offsets(
        &self,
        group: &str,
        partitions: Option<Vec<TopicPartition>>,
    ) -> Result<Vec<(TopicPartition, CommittedOffset)>, BrokerError> {
        self.ask_group(
            group,
            FetchOffsets {
                partitions,
                member: None,
            },
        )
        .await?
    }

    /// Committed offsets of `group` for `partitions` (all when `None`), asked by member
    /// `member_id` at epoch `epoch` (Kafka's OffsetFetch v9): in a group of the consumer
    /// protocol the member must be at that epoch.
    ///
    /// # Errors
    /// [`BrokerError::UnknownMember`], [`BrokerError::StaleMemberEpoch`], a stopped broker.
    pub async fn fetch_offsets_as_member(
        &self,
        group: &str,
        partitions: Option<Vec<TopicPartition>>,
        member_id: &str,
        epoch: i32,
    ) -> Result<Vec<(TopicPartition, CommittedOffset)>, BrokerError> {
        self.ask_group(
            group,
            FetchOffsets {
                partitions,
                member: Some((member_id.to_string(), epoch)),
            },
        )
        .await?
    }

    /// State, members, assignments and committed offsets of a group.
    ///
    /// # Errors
    /// An empty group id, a stopped broker.
    pub async fn describe_group(&self, group: &str) -> Result<GroupDescription, BrokerError> {
        self.ask_group(group, DescribeGroup).await
    }

    /// Every group: those with members and those with committed offsets, sorted, with state.
    ///
    /// # Errors
    /// A storage failure.
    pub async fn list_groups(&self) -> Result<Vec<(String, GroupState)>, BrokerError> {
        let stored: std::collections::BTreeSet<String> = self
            .shared
            .storage
            .list_groups()
            .await?
            .into_iter()
            .collect();
        let live: std::collections::BTreeSet<String> = self
            .shared
            .groups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(_, addr)| addr.connected())
            .map(|(name, _)| name.clone())
            .collect();
        let mut out = Vec::new();
        for name in stored.union(&live) {
            // A group that is not loaded has no members (members keep it loaded): it is Empty,
            // with its offsets in storage. Only loaded groups are asked.
            let state = if live.contains(name) {
                self.describe_group(name).await?.state
            } else {
                GroupState::Empty
            };
            if state != GroupState::Dead {
                out.push((name.clone(), state));
            }
        }
        Ok(out)
    }

    /// Deletes an empty group and its committed offsets.
    ///
    /// # Errors
    /// [`BrokerError::GroupNotEmpty`], a storage failure.
    pub async fn delete_group(&self, group: &str) -> Result<(), BrokerError> {
        self.ask_group(group, DeleteGroup).await??;
        self.shared
            .groups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(group);
        Ok(())
    }

    /// Deletes a group's committed offsets of `partitions` (Kafka's OffsetDelete), partition by
    /// partition: those of topics a member consumes are refused with
    /// [`BrokerError::GroupSubscribedToTopic`]. `parse` reads the subscriptions of groups of
    /// other protocol types than Weir's own.
    ///
    /// # Errors
    /// [`BrokerError::UnknownGroup`], a storage failure.
    pub async fn delete_group_offsets(
        &self,
        group: &str,
        partitions: Vec<TopicPartition>,
        parse: group::SubscriptionParser,
    ) -> Result<Vec<group::OffsetDeletion>, BrokerError> {
        if !self.list_groups().await?.iter().any(|(g, _)| g == group) {
            return Err(BrokerError::UnknownGroup(group.to_string()));
        }
        self.ask_group(group, group::DeleteOffsets { partitions, parse })
            .await?
    }

    /// Moves a group's committed offsets for every partition of `topic` (the group must have no
    /// members): to the earliest or latest offset, the first at or after a timestamp (the end
    /// when none is), or an explicit offset clamped to the log. Returns what was committed.
    ///
    /// # Errors
    /// [`BrokerError::GroupNotEmpty`], an unknown topic, a storage failure.
    pub async fn reset_offsets(
        &self,
        group: &str,
        topic: &str,
        to: ResetTo,
    ) -> Result<Vec<(TopicPartition, Offset)>, BrokerError> {
        let n = self
            .partition_count(topic)
            .ok_or_else(|| BrokerError::UnknownTopic(topic.to_string()))?;
        let mut offsets = Vec::new();
        for p in 0..n as i32 {
            let o = self.offsets(topic, p).await?;
            let target = match to {
                ResetTo::Earliest => o.start,
                ResetTo::Latest => o.end,
                ResetTo::Offset(x) => x.clamp(o.start, o.end),
                ResetTo::Timestamp(ts) => self
                    .list_offset(topic, p, OffsetSpec::Timestamp(ts))
                    .await?
                    .unwrap_or(o.end),
            };
            offsets.push((TopicPartition::new(topic, p), target));
        }
        let now = super::now_ms();
        let commits = offsets
            .iter()
            .map(|(tp, o)| {
                (
                    tp.clone(),
                    CommittedOffset {
                        offset: *o,
                        leader_epoch: -1,
                        metadata: String::new(),
                        commit_timestamp_ms: now,
                    },
                )
            })
            .collect();
        self.ask_group(
            group,
            CommitOffsets {
                member_id: String::new(),
                instance_id: None,
                generation: -1,
                offsets: commits,
                admin: true,
                member_epochs: true,
            },
        )
        .await??;
        Ok(offsets)
    }

    /// Stops the broker: drains and closes every log, closes the storage, stops the actor
    /// threads. Other clones of the handle get [`BrokerError::ShuttingDown`] afterwards.
    ///
    /// # Errors
    /// The first error while closing logs or the storage (everything is closed regardless).
    pub async fn shutdown(&self) -> Result<(), BrokerError> {
        let Some((system, arbiters, thread)) = self
            .shared
            .system
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        else {
            return Ok(());
        };
        for g in self.active_groups() {
            let _ = g.send(StopGroup).await;
        }
        self.shared
            .groups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        let result = match self.shared.registry.send(ShutdownRegistry).await {
            Ok(r) => r,
            Err(e) => Err(e.into()),
        };
        for a in &arbiters {
            a.stop();
        }
        system.stop();
        let _ = tokio::task::spawn_blocking(move || {
            for a in arbiters {
                let _ = a.join();
            }
            let _ = thread.join();
        })
        .await;
        result
    }
}

/// Kafka answers acks=all with NOT_ENOUGH_REPLICAS when fewer replicas than the topic's
/// `min.insync.replicas` are in sync; a single broker has one.
fn check_replicas(route: &Route, acks: Acks) -> Result<(), BrokerError> {
    let required = route.config.min_insync_replicas;
    if acks == Acks::All && required > 1 {
        return Err(BrokerError::NotEnoughReplicas { required });
    }
    Ok(())
}

/// A compacted topic takes only records with a key, as Kafka's (INVALID_RECORD otherwise):
/// compaction keeps each key's latest record, and one without a key would simply vanish. Runs
/// on the caller's task, not the partition actor: it decodes (and decompresses) every record.
fn check_keys(route: &Route, batches: &[Batch]) -> Result<(), BrokerError> {
    if !route.config.cleanup_policy.compacts() {
        return Ok(());
    }
    use weir_storage::compaction::{check_keys as keys_of, KeyCheck};
    for b in batches {
        match keys_of(b) {
            KeyCheck::Keyed => {}
            // Compaction maps keys to offsets: records must decode and sit at their offsets.
            KeyCheck::NotWellFormed => {
                return Err(BrokerError::InvalidBatch(
                    "records that do not decode, or whose offsets do not ascend inside the batch"
                        .into(),
                ))
            }
            KeyCheck::Keyless { offset_delta } => {
                return Err(BrokerError::InvalidRecord(format!(
                    "compacted topic {:?} cannot take a record without a key (record {offset_delta} of its batch)",
                    route.name
                )))
            }
        }
    }
    Ok(())
}

/// A topic with a `compression.type` other than `producer` stores every batch in that codec:
/// those the producer compressed otherwise are recompressed here, on the caller's task, as
/// Kafka's broker does. Offsets, producer identity and timestamps stay.
fn recompress(route: &Route, batches: Vec<Batch>) -> Result<Vec<Batch>, BrokerError> {
    let Some(codec) = route.config.compression_type.codec() else {
        return Ok(batches);
    };
    batches
        .into_iter()
        .map(|b| {
            b.recompressed(codec)
                .map_err(|e| BrokerError::InvalidBatch(e.to_string()))
        })
        .collect()
}
