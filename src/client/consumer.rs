//! [`Consumer`]: reads records from assigned partitions, alone or as a member of a group.
//!
//! Two ways to get partitions, as in Kafka:
//! - [`Consumer::subscribe`] joins the group `group_id`; the broker assigns partitions with the
//!   configured strategy (range, roundrobin, sticky) and rebalances when members come and go.
//!   A background task heartbeats; when the broker answers "rebalance", the next `poll`
//!   commits what was consumed (with auto-commit) and rejoins.
//! - [`Consumer::assign`] takes fixed partitions, no group membership (commits still work with
//!   a `group_id`, as Kafka's "simple consumer" does).
//!
//! Positions: a newly assigned partition starts at the group's committed offset, or where
//! `auto_offset_reset` says. [`Consumer::seek`] moves a position. Commits store positions,
//! that is the offset of the next record to read, as Kafka does.
//!
//! Fetching runs ahead of the application, as Kafka's consumers do: each assigned partition
//! has one fetch in flight (a long poll of up to `fetch_max_wait`), and the next one leaves as
//! soon as `poll` takes its records, so they travel while the application works. Positions
//! and commits only count records `poll` returned.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::{BoxFuture, FutureExt};
use futures::stream::{FuturesUnordered, StreamExt};
use weir_storage::{CommittedOffset, Header, Offset, TopicPartition};

use super::Transport;
use crate::broker::{
    AbortedFilter, BrokerError, FetchResult, JoinGroup, OffsetSpec, WEIR_PROTOCOL_TYPE,
};

/// Where a partition without a committed offset starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AutoOffsetReset {
    /// At the log start.
    #[default]
    Earliest,
    /// At the log end: only new records.
    Latest,
}

/// Consumer settings.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// The group; needed for `subscribe` and for commits.
    pub group_id: Option<String>,
    /// A name for this client, the prefix of its member id.
    pub client_id: String,
    /// Commit positions this often (and before rebalances and on close); `None` for manual.
    pub auto_commit_interval: Option<Duration>,
    /// Where partitions without a committed offset start.
    pub auto_offset_reset: AutoOffsetReset,
    /// The broker drops a member it has not heard from for this long.
    pub session_timeout: Duration,
    /// How long the group waits for members to rejoin in a rebalance.
    pub rebalance_timeout: Duration,
    /// How often the background task heartbeats.
    pub heartbeat_interval: Duration,
    /// Assignment strategies, preferred first: `range`, `roundrobin`, `sticky`.
    pub strategies: Vec<String>,
    /// Bytes per partition per fetch (at least one batch comes back).
    pub fetch_max_bytes: usize,
    /// How long the broker holds a fetch that finds no new records (Kafka's
    /// `fetch.max.wait.ms`). Fetches run on their own, ahead of `poll`: a `poll` with a
    /// shorter timeout returns empty and the next one takes the answer.
    pub fetch_max_wait: Duration,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            group_id: None,
            client_id: "weir-consumer".into(),
            auto_commit_interval: Some(Duration::from_secs(5)),
            auto_offset_reset: AutoOffsetReset::Earliest,
            session_timeout: Duration::from_secs(10),
            rebalance_timeout: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(1),
            strategies: vec!["range".into()],
            fetch_max_bytes: 1024 * 1024,
            fetch_max_wait: Duration::from_millis(500),
        }
    }
}

/// A record read from a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerRecord {
    /// The topic (shared by the records of one fetch).
    pub topic: Arc<str>,
    /// The partition.
    pub partition: i32,
    /// The record's offset.
    pub offset: Offset,
    /// Its timestamp (ms).
    pub timestamp_ms: i64,
    /// The key.
    pub key: Option<Bytes>,
    /// The value.
    pub value: Option<Bytes>,
    /// The headers.
    pub headers: Vec<Header>,
}

#[derive(Debug, Clone, Default)]
struct Membership {
    member_id: String,
    generation: i32,
    /// Set by the heartbeat task when the broker asks members to rejoin.
    rejoin: bool,
}

/// Reads records. See the module docs.
pub struct Consumer {
    transport: Arc<dyn Transport>,
    config: ConsumerConfig,
    subscription: Option<BTreeSet<String>>,
    /// Assigned partitions and their positions (`None` until resolved).
    positions: BTreeMap<TopicPartition, Option<Offset>>,
    membership: Arc<Mutex<Option<Membership>>>,
    heartbeat: Option<tokio::task::JoinHandle<()>>,
    buffer: VecDeque<ConsumerRecord>,
    /// Fetches in flight. A partition's next fetch starts as soon as its previous answer is
    /// taken, so the next records travel while the application works on these (Kafka's
    /// consumers prefetch the same way); a fetch that no longer matches its partition's
    /// position (a seek, a new assignment) is dropped when it lands.
    fetches: FuturesUnordered<BoxFuture<'static, Landed>>,
    /// The partitions with a fetch in flight, and the offset it reads from.
    fetching: BTreeMap<TopicPartition, Offset>,
    last_commit: Instant,
    committed: BTreeMap<TopicPartition, Offset>,
}

/// A fetch's answer: the partition, the offset it read from, the outcome.
type Landed = (TopicPartition, Offset, Result<FetchResult, BrokerError>);

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("config", &self.config)
            .field("positions", &self.positions)
            .finish_non_exhaustive()
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        if let Some(h) = self.heartbeat.take() {
            h.abort();
        }
    }
}

impl Consumer {
    /// A consumer over `transport` (a [`crate::BrokerHandle`] for an embedded broker).
    pub fn new(transport: impl Transport, config: ConsumerConfig) -> Self {
        Self::with_transport(Arc::new(transport), config)
    }

    /// A consumer over a transport shared with other clients.
    pub fn with_transport(transport: Arc<dyn Transport>, config: ConsumerConfig) -> Self {
        Consumer {
            transport,
            config,
            subscription: None,
            positions: BTreeMap::new(),
            membership: Arc::new(Mutex::new(None)),
            heartbeat: None,
            buffer: VecDeque::new(),
            fetches: FuturesUnordered::new(),
            fetching: BTreeMap::new(),
            last_commit: Instant::now(),
            committed: BTreeMap::new(),
        }
    }

    /// Subscribes to `topics` as a member of the configured group (joined on the next poll).
    ///
    /// # Errors
    /// [`BrokerError::InvalidRequest`] without a `group_id`.
    pub fn subscribe(&mut self, topics: &[&str]) -> Result<(), BrokerError> {
        if self.config.group_id.is_none() {
            return Err(BrokerError::InvalidRequest(
                "subscribe needs a group_id; use assign without a group".into(),
            ));
        }
        self.subscription = Some(topics.iter().map(|t| t.to_string()).collect());
        self.set_rejoin();
        Ok(())
    }

    /// Takes fixed partitions, outside group management.
    pub fn assign(&mut self, partitions: Vec<TopicPartition>) {
        self.subscription = None;
        self.positions = partitions.into_iter().map(|tp| (tp, None)).collect();
        self.buffer.clear();
        self.fetching.clear();
    }

    /// The partitions currently assigned.
    pub fn assignment(&self) -> Vec<TopicPartition> {
        self.positions.keys().cloned().collect()
    }

    /// The next offset `poll` returns for `tp`, once known.
    pub fn position(&self, tp: &TopicPartition) -> Option<Offset> {
        self.positions.get(tp).copied().flatten()
    }

    /// Moves the position of an assigned partition.
    pub fn seek(&mut self, tp: &TopicPartition, offset: Offset) {
        if let Some(p) = self.positions.get_mut(tp) {
            *p = Some(offset);
            self.buffer
                .retain(|r| !(*r.topic == *tp.topic && r.partition == tp.partition));
            // A fetch from the old position is dropped when it lands; the new one starts now.
            self.fetching.remove(tp);
        }
    }

    /// The member id and generation while in a group.
    pub fn member(&self) -> Option<(String, i32)> {
        self.membership
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|m| (m.member_id.clone(), m.generation))
    }

    fn set_rejoin(&self) {
        if let Some(m) = self
            .membership
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            m.rejoin = true;
        }
    }

    fn needs_join(&self) -> bool {
        self.subscription.is_some()
            && self
                .membership
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .is_none_or(|m| m.rejoin)
    }

    /// Returns records that arrived, waiting up to `timeout` for some. Joins or rejoins the
    /// group first when needed, and auto-commits on its interval.
    ///
    /// # Errors
    /// Errors of the group protocol or the transport that retrying cannot fix.
    pub async fn poll(&mut self, timeout: Duration) -> Result<Vec<ConsumerRecord>, BrokerError> {
        let deadline = Instant::now() + timeout;
        if self.needs_join() {
            self.join().await?;
        }
        if let Some(every) = self.config.auto_commit_interval {
            if self.last_commit.elapsed() >= every {
                self.commit_quietly().await;
            }
        }
        if self.buffer.is_empty() {
            self.resolve_positions().await?;
            self.fetch(deadline).await?;
        }
        Ok(self.buffer.drain(..).collect())
    }

    /// Commits the position of every assigned partition.
    ///
    /// # Errors
    /// [`BrokerError::RebalanceInProgress`] / [`BrokerError::IllegalGeneration`] when the group
    /// moved on (the next poll rejoins), or a storage failure.
    pub async fn commit(&mut self) -> Result<(), BrokerError> {
        let Some(group) = self.config.group_id.clone() else {
            return Err(BrokerError::InvalidRequest(
                "commit needs a group_id".into(),
            ));
        };
        let now = crate::broker::now_ms();
        let offsets: Vec<(TopicPartition, CommittedOffset)> = self
            .positions
            .iter()
            .filter_map(|(tp, p)| p.map(|o| (tp.clone(), o)))
            .filter(|(tp, o)| self.committed.get(tp) != Some(o))
            .map(|(tp, o)| {
                (
                    tp,
                    CommittedOffset {
                        offset: o,
                        leader_epoch: -1,
                        metadata: String::new(),
                        commit_timestamp_ms: now,
                    },
                )
            })
            .collect();
        self.last_commit = Instant::now();
        if offsets.is_empty() {
            return Ok(());
        }
        let (member, generation) = self.member().unwrap_or((String::new(), -1));
        let result = self
            .transport
            .commit_offsets(&group, &member, generation, offsets.clone())
            .await;
        if let Err(e) = &result {
            if matches!(
                e,
                BrokerError::RebalanceInProgress
                    | BrokerError::IllegalGeneration { .. }
                    | BrokerError::UnknownMember(_)
            ) {
                self.set_rejoin();
            }
        } else {
            for (tp, o) in offsets {
                self.committed.insert(tp, o.offset);
            }
        }
        result
    }

    async fn commit_quietly(&mut self) {
        if self.config.group_id.is_some() {
            let _ = self.commit().await;
        }
    }

    /// Commits (with auto-commit), leaves the group and stops the heartbeat.
    ///
    /// # Errors
    /// A failed final commit (the group is left regardless).
    pub async fn close(mut self) -> Result<(), BrokerError> {
        let commit = if self.config.auto_commit_interval.is_some() && self.config.group_id.is_some()
        {
            self.commit().await
        } else {
            Ok(())
        };
        if let Some(h) = self.heartbeat.take() {
            h.abort();
        }
        let member = self.member();
        if let (Some(group), Some((member, _))) = (self.config.group_id.clone(), member) {
            let _ = self.transport.leave_group(&group, &member).await;
        }
        commit
    }

    /// Joins (or rejoins) the group and takes the assignment.
    async fn join(&mut self) -> Result<(), BrokerError> {
        let group = self.config.group_id.clone().unwrap_or_default();
        let topics: Vec<String> = self.subscription.iter().flatten().cloned().collect();
        for t in &topics {
            // Subscribing creates missing topics where the broker allows, as Kafka's metadata
            // requests do; otherwise the topic joins the assignment once it exists.
            let _ = self.transport.partitions(t, true).await;
        }
        if self.member().is_some() && self.config.auto_commit_interval.is_some() {
            self.commit_quietly().await;
        }
        let metadata = Bytes::from(rmp_serde::to_vec(&topics).unwrap_or_default());
        let protocols: Vec<(String, Bytes)> = self
            .config
            .strategies
            .iter()
            .map(|s| (s.clone(), metadata.clone()))
            .collect();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let member_id = self.member().map(|m| m.0).unwrap_or_default();
            let join = JoinGroup {
                member_id,
                instance_id: None,
                client_id: self.config.client_id.clone(),
                client_host: "in-process".into(),
                session_timeout: self.config.session_timeout,
                rebalance_timeout: self.config.rebalance_timeout,
                protocol_type: WEIR_PROTOCOL_TYPE.into(),
                protocols: protocols.clone(),
                require_known_member_id: false,
            };
            let joined = match self.transport.join_group(&group, join).await {
                Ok(j) => j,
                Err(BrokerError::UnknownMember(_)) if attempts < 10 => {
                    *self.membership.lock().unwrap_or_else(|e| e.into_inner()) = None;
                    continue;
                }
                Err(e) => return Err(e),
            };
            *self.membership.lock().unwrap_or_else(|e| e.into_inner()) = Some(Membership {
                member_id: joined.member_id.clone(),
                generation: joined.generation,
                rejoin: false,
            });
            let synced = self
                .transport
                .sync_group(&group, &joined.member_id, joined.generation, Vec::new())
                .await;
            let assignment = match synced {
                Ok(s) => s.assignment,
                Err(
                    BrokerError::RebalanceInProgress
                    | BrokerError::IllegalGeneration { .. }
                    | BrokerError::UnknownMember(_),
                ) if attempts < 50 => continue,
                Err(e) => return Err(e),
            };
            let assigned: Vec<(String, Vec<i32>)> =
                rmp_serde::from_slice(&assignment).unwrap_or_default();
            let new: BTreeSet<TopicPartition> = assigned
                .into_iter()
                .flat_map(|(t, ps)| {
                    ps.into_iter()
                        .map(move |p| TopicPartition::new(t.clone(), p))
                })
                .collect();
            // Keep positions of partitions we keep (sticky); the rest start from commits.
            let old = std::mem::take(&mut self.positions);
            self.positions = new
                .into_iter()
                .map(|tp| {
                    let pos = old.get(&tp).copied().flatten();
                    (tp, pos)
                })
                .collect();
            self.buffer.clear();
            self.fetching.clear();
            self.start_heartbeat(group.clone());
            return Ok(());
        }
    }

    fn start_heartbeat(&mut self, group: String) {
        if self.heartbeat.is_some() {
            return;
        }
        let membership = self.membership.clone();
        let transport = self.transport.clone();
        let every = self.config.heartbeat_interval;
        self.heartbeat = Some(tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let current = membership.lock().unwrap_or_else(|e| e.into_inner()).clone();
                let Some(m) = current else { continue };
                if m.rejoin {
                    continue;
                }
                match transport
                    .heartbeat(&group, &m.member_id, m.generation)
                    .await
                {
                    Ok(()) => {}
                    Err(
                        BrokerError::RebalanceInProgress
                        | BrokerError::IllegalGeneration { .. }
                        | BrokerError::UnknownMember(_),
                    ) => {
                        if let Some(m) = membership
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .as_mut()
                        {
                            m.rejoin = true;
                        }
                    }
                    Err(_) => {}
                }
            }
        }));
    }

    /// Gives every assigned partition a position: the committed offset, else the reset policy.
    async fn resolve_positions(&mut self) -> Result<(), BrokerError> {
        let missing: Vec<TopicPartition> = self
            .positions
            .iter()
            .filter(|(_, p)| p.is_none())
            .map(|(tp, _)| tp.clone())
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let committed: BTreeMap<TopicPartition, Offset> = match &self.config.group_id {
            Some(g) => self
                .transport
                .fetch_offsets(g, Some(missing.clone()))
                .await?
                .into_iter()
                .map(|(tp, o)| (tp, o.offset))
                .collect(),
            None => BTreeMap::new(),
        };
        for tp in missing {
            let pos = match committed.get(&tp) {
                Some(o) => *o,
                None => self.reset_position(&tp).await?,
            };
            self.committed.entry(tp.clone()).or_insert(pos);
            self.positions.insert(tp, Some(pos));
        }
        Ok(())
    }

    // `&mut self`: the consumer holds its fetches in flight, which are not `Sync`, so a shared
    // borrow held across an await would make `poll`'s future not `Send`.
    async fn reset_position(&mut self, tp: &TopicPartition) -> Result<Offset, BrokerError> {
        let spec = match self.config.auto_offset_reset {
            AutoOffsetReset::Earliest => OffsetSpec::Earliest,
            AutoOffsetReset::Latest => OffsetSpec::Latest,
        };
        Ok(self
            .transport
            .list_offset(&tp.topic, tp.partition, spec)
            .await?
            .unwrap_or(0))
    }

    /// Starts a fetch for every assigned partition with a position and none in flight.
    fn start_fetches(&mut self) {
        let idle: Vec<(TopicPartition, Offset)> = self
            .positions
            .iter()
            .filter_map(|(tp, p)| p.map(|o| (tp.clone(), o)))
            .filter(|(tp, _)| !self.fetching.contains_key(tp))
            .collect();
        for (tp, from) in idle {
            self.start_fetch(tp, from);
        }
    }

    fn start_fetch(&mut self, tp: TopicPartition, from: Offset) {
        let transport = self.transport.clone();
        let (max_bytes, max_wait) = (self.config.fetch_max_bytes, self.config.fetch_max_wait);
        self.fetching.insert(tp.clone(), from);
        self.fetches.push(
            async move {
                let r = transport
                    .fetch(&tp.topic, tp.partition, from, max_bytes, 1, max_wait)
                    .await;
                (tp, from, r)
            }
            .boxed(),
        );
    }

    /// Waits until a fetch brings records or the deadline passes; takes every answer that has
    /// landed meanwhile.
    async fn fetch(&mut self, deadline: Instant) -> Result<(), BrokerError> {
        self.start_fetches();
        loop {
            let landed = if self.fetches.is_empty() {
                None
            } else {
                match tokio::time::timeout_at(deadline.into(), self.fetches.next()).await {
                    Ok(landed) => landed,
                    Err(_) => return Ok(()),
                }
            };
            let Some(landed) = landed else {
                // Nothing to fetch (no positions, or partitions that went away): don't spin.
                let wait = deadline.saturating_duration_since(Instant::now());
                tokio::time::sleep(wait.min(Duration::from_millis(100))).await;
                return Ok(());
            };
            self.land(landed).await?;
            while let Some(Some(landed)) = self.fetches.next().now_or_never() {
                self.land(landed).await?;
            }
            // Records from one partition are enough: don't wait for the others' long polls.
            if !self.buffer.is_empty() || Instant::now() >= deadline {
                return Ok(());
            }
        }
    }

    /// Takes a fetch's answer: its records into the buffer, the position past them, and the
    /// partition's next fetch started.
    async fn land(&mut self, (tp, from, result): Landed) -> Result<(), BrokerError> {
        if self.fetching.get(&tp) != Some(&from) {
            return Ok(()); // superseded by a seek or a new assignment
        }
        self.fetching.remove(&tp);
        if self.positions.get(&tp) != Some(&Some(from)) {
            return Ok(()); // the position moved meanwhile; the next round fetches from there
        }
        match result {
            Ok(r) => {
                let topic: Arc<str> = Arc::from(tp.topic.as_str());
                let mut next = from;
                let mut aborted = AbortedFilter::new(&r.aborted);
                for b in &r.batches {
                    if aborted.keep(b) {
                        for rec in b.records()? {
                            if rec.offset >= from {
                                self.buffer.push_back(ConsumerRecord {
                                    topic: topic.clone(),
                                    partition: tp.partition,
                                    offset: rec.offset,
                                    timestamp_ms: rec.record.timestamp_ms,
                                    key: rec.record.key,
                                    value: rec.record.value,
                                    headers: rec.record.headers,
                                });
                            }
                        }
                    }
                    next = next.max(b.next_offset());
                }
                self.positions.insert(tp.clone(), Some(next));
                self.start_fetch(tp, next);
            }
            Err(BrokerError::OffsetOutOfRange { .. }) => {
                let pos = self.reset_position(&tp).await?;
                self.positions.insert(tp.clone(), Some(pos));
                self.start_fetch(tp, pos);
            }
            Err(BrokerError::UnknownTopic(_) | BrokerError::UnknownPartition { .. }) => {
                // Deleted meanwhile; the group's next rebalance drops it, and until then the
                // next poll asks again.
            }
            Err(e) => return Err(e),
        }
        Ok(())
    }

    /// The records as an endless stream (polling with a 1 s timeout).
    pub fn stream(self) -> impl futures::Stream<Item = Result<ConsumerRecord, BrokerError>> {
        futures::stream::unfold(
            (self, VecDeque::<ConsumerRecord>::new()),
            |(mut consumer, mut buf)| async move {
                loop {
                    if let Some(r) = buf.pop_front() {
                        return Some((Ok(r), (consumer, buf)));
                    }
                    match consumer.poll(Duration::from_secs(1)).await {
                        Ok(records) => buf.extend(records),
                        Err(e) => return Some((Err(e), (consumer, buf))),
                    }
                }
            },
        )
    }
}
