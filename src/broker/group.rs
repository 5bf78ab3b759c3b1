//! The consumer-group actor: one per group, the coordinator of its members and the keeper of
//! its committed offsets.
//!
//! One state machine (Kafka's classic group protocol) serves two kinds of members:
//!
//! - **Kafka clients** (any protocol type but `weir`): the group picks an assignment protocol
//!   all members support (by vote), the leader receives every member's opaque metadata with its
//!   JoinGroup answer, computes the assignment itself and hands it over in SyncGroup; the broker
//!   passes the bytes on without reading them.
//! - **Weir consumers** (protocol type [`WEIR_PROTOCOL_TYPE`]): each protocol is a strategy name
//!   (`range`, `roundrobin`, `sticky`) and its metadata a MessagePack list of topics; the broker
//!   computes the assignment itself when the join phase completes, so no member leads.
//!
//! ```text
//!  Empty ──join──► PreparingRebalance ──all known members joined, or timeout──► CompletingRebalance
//!    ▲                 ▲        (members that did not rejoin are removed)         │ leader's sync
//!    │ last leaves     └──── join / leave / session expiry ◄── Stable ◄───────────┘ (weir: at once)
//! ```
//!
//! Generations: each completed join phase increments the generation; heartbeats, syncs and
//! commits name their generation and a stale one gets [`BrokerError::IllegalGeneration`].
//! Sessions: a member not heard from (join, sync, heartbeat, commit) within its session timeout
//! is removed, which starts a rebalance. Committed offsets are written through [`Storage`]
//! before they are acknowledged (commits are atomic responses, so they persist in order), and
//! loaded when the actor starts, so a group resumes after a broker restart. For the same
//! reason a group without members can unload after `[groups] empty_group_unload_ms` and be
//! loaded again when next named: groups that clients name once do not accumulate. Membership
//! is stored too ([`super::group_record`]): a completed join phase, the leader's assignment,
//! the group becoming Empty and a member removed during a rebalance write the group's record
//! before anything else reaches the actor; a restarted broker loads every group that had
//! members, which carry on in their generation without a rebalance.
//!
//! Kafka's consumer group protocol (KIP-848) lives beside it in [`consumer_protocol`]: a group
//! is of one protocol at a time while it has members, and Kafka consumers may move a group
//! from one to the other without stopping it ([`migration`]: classic members in a
//! consumer-protocol group, and the conversions both ways).
//!
//! Static members (Kafka's `group.instance.id`, KIP-345) join without MEMBER_ID_REQUIRED; one
//! that restarts (a join with its instance id and no member id) replaces its old incarnation,
//! taking its assignment, and in a stable group without a rebalance unless the protocol the
//! group would choose changes. Requests still naming the old incarnation's member id with that
//! instance id get [`BrokerError::FencedInstanceId`].

mod migration;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::Bytes;
use tokio::sync::oneshot;
use weir_storage::{CommittedOffset, Storage, TopicPartition};

use super::assignor::{self, MemberSubscription};
use super::consumer_protocol::{
    self, Assignment, ConsumerGroupState, Deadlines, HeartbeatInput, MemberState,
};
use super::error::BrokerError;
use super::group_record::{GroupRecord, MemberRecord, VERSION};
use super::registry::Routes;
use super::types::{
    now_ms, ConsumerGroupDescription, ConsumerMemberDescription, GroupDescription, GroupState,
    JoinGroup, JoinResult, JoinedMember, MemberDescription, SyncResult, TopicPartitions,
    WEIR_PROTOCOL_TYPE,
};
use crate::config::{GroupsSection, MigrationPolicy};

struct Member {
    instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    last_seen: Instant,
    join_reply: Option<oneshot::Sender<Result<JoinResult, BrokerError>>>,
    sync_reply: Option<oneshot::Sender<Result<SyncResult, BrokerError>>>,
}

impl Member {
    /// Answers whatever join or sync of this member is waiting, with `e`.
    fn fail_waiting(&mut self, e: &BrokerError) {
        if let Some(r) = self.join_reply.take() {
            let _ = r.send(Err(e.clone()));
        }
        if let Some(r) = self.sync_reply.take() {
            let _ = r.send(Err(e.clone()));
        }
    }

    /// The member's metadata for `protocol` (empty when it has none).
    fn metadata(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(n, _)| n == protocol)
            .map(|(_, md)| md.clone())
            .unwrap_or_default()
    }
}

/// The broker's live group actors by group id; a group unloads itself from it.
pub type GroupRegistry = Arc<Mutex<HashMap<String, Addr<ConsumerGroup>>>>;

/// The consumer-group actor. See the module docs.
pub struct ConsumerGroup {
    id: String,
    registry: GroupRegistry,
    /// Since when the group has had no members (see [`ConsumerGroup::maybe_unload`]).
    empty_since: Option<Instant>,
    storage: Arc<dyn Storage>,
    routes: Routes,
    settings: GroupsSection,
    state: GroupState,
    generation: i32,
    protocol_type: Option<String>,
    protocol: Option<String>,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// Ids handed out with MEMBER_ID_REQUIRED, waiting for the member's second join.
    pending: BTreeMap<String, Instant>,
    offsets: BTreeMap<TopicPartition, CommittedOffset>,
    /// When the group last became Empty, ms since the epoch (stored with its record); its
    /// offsets expire `[groups] offsets_retention_ms` later. `None` for a group that never had
    /// members: its offsets expire by their commit times.
    emptied_at_ms: Option<i64>,
    /// `offsets` holds what storage has (false after a failed load: then nothing is removed
    /// from storage on the strength of `offsets` being empty).
    offsets_loaded: bool,
    rebalance_deadline: Option<SpawnHandle>,
    /// The rebalance deadline is the initial delay of a join into an Empty group (Kafka's
    /// `group.initial.rebalance.delay.ms`): it runs out even when everyone has joined.
    initial_delay: bool,
    /// Set by [`ReleaseWaiting`]: joins and syncs are refused.
    closing: bool,
    next_member: u64,
    /// Membership and assignment under Kafka's consumer protocol (KIP-848); its members and
    /// the classic `members` are never both non-empty.
    consumer: ConsumerGroupState,
    /// Its members' session and revocation timers.
    deadlines: Deadlines,
}

impl ConsumerGroup {
    /// A group actor; it loads its committed offsets from `storage` when it starts, and
    /// removes itself from `registry` when it unloads.
    pub fn new(
        id: String,
        storage: Arc<dyn Storage>,
        routes: Routes,
        settings: GroupsSection,
        registry: GroupRegistry,
    ) -> Self {
        ConsumerGroup {
            id,
            registry,
            empty_since: None,
            storage,
            routes,
            settings,
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            pending: BTreeMap::new(),
            offsets: BTreeMap::new(),
            emptied_at_ms: None,
            offsets_loaded: false,
            rebalance_deadline: None,
            initial_delay: false,
            closing: false,
            next_member: 0,
            consumer: ConsumerGroupState::default(),
            deadlines: Deadlines::default(),
        }
    }

    /// Whether the group has members of either protocol.
    fn has_members(&self) -> bool {
        !self.members.is_empty() || !self.consumer.members.is_empty()
    }

    /// The group's state as the classic protocol names it: a consumer-protocol group with
    /// members is Stable when every member has its target, else rebalancing.
    fn classic_state(&self) -> GroupState {
        match consumer_protocol::state_name(&self.consumer) {
            _ if self.consumer.members.is_empty() => self.state,
            "Stable" => GroupState::Stable,
            "Assigning" => GroupState::PreparingRebalance,
            _ => GroupState::CompletingRebalance,
        }
    }

    /// The broker's topics: partition counts by name, and names and ids both ways.
    fn topics(
        &self,
    ) -> (
        BTreeMap<String, u32>,
        HashMap<u128, String>,
        HashMap<String, u128>,
    ) {
        let routes = self.routes.read().unwrap_or_else(|e| e.into_inner());
        let mut counts = BTreeMap::new();
        let mut names = HashMap::with_capacity(routes.len());
        let mut ids = HashMap::with_capacity(routes.len());
        for (name, r) in routes.iter() {
            counts.insert(name.clone(), r.partitions.len() as u32);
            names.insert(r.id, name.clone());
            ids.insert(name.clone(), r.id);
        }
        (counts, names, ids)
    }

    fn new_member_id(&mut self, client_id: &str) -> String {
        self.next_member += 1;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let prefix = if client_id.is_empty() {
            "member"
        } else {
            client_id
        };
        let id = format!("{prefix}-{}-{nanos:08x}", self.next_member);
        // Restored members keep ids an earlier run gave out.
        if self.members.contains_key(&id) || self.pending.contains_key(&id) {
            return self.new_member_id(client_id);
        }
        id
    }

    /// The record to store (see [`super::group_record`]); none for a deleted group.
    fn record(&self) -> Option<GroupRecord> {
        if self.state == GroupState::Dead {
            return None;
        }
        Some(GroupRecord {
            version: VERSION,
            generation: self.generation,
            rebalancing: matches!(
                self.state,
                GroupState::PreparingRebalance | GroupState::CompletingRebalance
            ),
            protocol_type: self.protocol_type.clone(),
            protocol: self.protocol.clone(),
            leader: self.leader.clone(),
            empty_since_ms: self
                .emptied_at_ms
                .filter(|_| self.state == GroupState::Empty && !self.has_members()),
            members: self
                .members
                .iter()
                .map(|(id, m)| MemberRecord {
                    id: id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    session_timeout_ms: m.session_timeout.as_millis() as u64,
                    rebalance_timeout_ms: m.rebalance_timeout.as_millis() as u64,
                    protocols: m.protocols.clone(),
                    assignment: m.assignment.clone(),
                })
                .collect(),
            consumer: (self.consumer.group_epoch > 0).then(|| self.consumer.clone()),
        })
    }

    /// Stores the group's record. The actor handles nothing else until it is written, so
    /// records reach storage in the order of the states they describe. A failed write is
    /// reported and changes nothing for the members: the stored record stays the one before,
    /// and after a restart its members would rejoin.
    fn persist(&mut self, ctx: &mut Context<Self>) {
        let Some(record) = self.record() else {
            return;
        };
        let bytes = match record.encode() {
            Ok(b) => b,
            Err(e) => {
                eprintln!("weir: group {}: encoding its record failed: {e}", self.id);
                return;
            }
        };
        let (storage, id) = (self.storage.clone(), self.id.clone());
        ctx.wait(
            async move { storage.put_group_state(&id, &bytes).await }
                .into_actor(self)
                .map(|r, act, _| {
                    if let Err(e) = r {
                        eprintln!("weir: group {}: storing its record failed: {e}", act.id);
                    }
                }),
        );
    }

    /// Takes the stored record's state: a group with members is Stable in the recorded
    /// generation, their sessions counted from now, or, if it was rebalancing, rebalances again
    /// (its members are told to rejoin).
    fn restore(&mut self, record: GroupRecord, ctx: &mut Context<Self>) {
        let rebalancing = record.rebalancing;
        let now = Instant::now();
        if let Some(c) = record.consumer {
            // Sessions and revocations are counted from the load, as for classic members.
            for (id, m) in &c.members {
                self.deadlines.last_seen.insert(id.clone(), now);
                if m.state == MemberState::UnrevokedPartitions {
                    let timeout = Duration::from_millis(m.rebalance_timeout_ms.max(1) as u64);
                    self.deadlines.revoke_by.insert(id.clone(), now + timeout);
                }
            }
            self.consumer = c;
        }
        self.generation = record.generation;
        self.protocol_type = record.protocol_type;
        self.protocol = record.protocol;
        self.leader = record.leader;
        self.emptied_at_ms = record.empty_since_ms;
        self.members = record
            .members
            .into_iter()
            .map(|m| {
                let member = Member {
                    instance_id: m.instance_id,
                    client_id: m.client_id,
                    client_host: m.client_host,
                    session_timeout: Duration::from_millis(m.session_timeout_ms),
                    rebalance_timeout: Duration::from_millis(m.rebalance_timeout_ms.max(1)),
                    protocols: m.protocols,
                    assignment: m.assignment,
                    last_seen: now,
                    join_reply: None,
                    sync_reply: None,
                };
                (m.id, member)
            })
            .collect();
        self.state = if self.members.is_empty() {
            self.protocol_type = None;
            self.protocol = None;
            self.leader = None;
            GroupState::Empty
        } else {
            GroupState::Stable
        };
        if rebalancing && self.state == GroupState::Stable {
            self.prepare_rebalance(ctx);
        }
    }

    /// Protocols every member supports.
    fn candidates(&self) -> BTreeSet<String> {
        let mut it = self.members.values();
        let Some(first) = it.next() else {
            return BTreeSet::new();
        };
        let mut set: BTreeSet<String> = first.protocols.iter().map(|(n, _)| n.clone()).collect();
        for m in it {
            let theirs: BTreeSet<String> = m.protocols.iter().map(|(n, _)| n.clone()).collect();
            set = set.intersection(&theirs).cloned().collect();
        }
        set
    }

    /// Kafka's vote: each member votes for its most preferred candidate; most votes wins
    /// (ties: the name that sorts first).
    fn select_protocol(&self) -> Option<String> {
        let candidates = self.candidates();
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for m in self.members.values() {
            if let Some((name, _)) = m.protocols.iter().find(|(n, _)| candidates.contains(n)) {
                *votes.entry(name.as_str()).or_default() += 1;
            }
        }
        votes
            .into_iter()
            .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(a.0)))
            .map(|(n, _)| n.to_string())
    }

    fn fail_pending_syncs(&mut self, e: &BrokerError) {
        for m in self.members.values_mut() {
            if let Some(reply) = m.sync_reply.take() {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }

    fn prepare_rebalance(&mut self, ctx: &mut Context<Self>) {
        if self.state == GroupState::PreparingRebalance {
            self.maybe_complete_join(ctx);
            return;
        }
        let was_empty = self.state == GroupState::Empty;
        self.fail_pending_syncs(&BrokerError::RebalanceInProgress);
        self.state = GroupState::PreparingRebalance;
        let timeout = if was_empty {
            Duration::from_millis(self.settings.initial_rebalance_delay_ms)
        } else {
            self.members
                .values()
                .map(|m| m.rebalance_timeout)
                .max()
                .unwrap_or(Duration::ZERO)
        };
        if let Some(h) = self.rebalance_deadline.take() {
            ctx.cancel_future(h);
        }
        if timeout.is_zero() {
            self.complete_join(ctx);
        } else {
            self.initial_delay = was_empty;
            self.rebalance_deadline = Some(ctx.run_later(timeout, |act, ctx| {
                act.rebalance_deadline = None;
                if act.state == GroupState::PreparingRebalance {
                    act.complete_join(ctx);
                }
            }));
            // A non-empty group may already have everyone (a single member rejoining).
            if !was_empty {
                self.maybe_complete_join(ctx);
            }
        }
    }

    fn maybe_complete_join(&mut self, ctx: &mut Context<Self>) {
        let initial_delay_running = self.initial_delay && self.rebalance_deadline.is_some();
        if self.state == GroupState::PreparingRebalance
            && !initial_delay_running
            && self.members.values().all(|m| m.join_reply.is_some())
        {
            self.complete_join(ctx);
        }
    }

    fn complete_join(&mut self, ctx: &mut Context<Self>) {
        if let Some(h) = self.rebalance_deadline.take() {
            ctx.cancel_future(h);
        }
        // Members that did not rejoin in time are out.
        self.members.retain(|_, m| m.join_reply.is_some());
        self.generation += 1;
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.protocol = None;
            self.protocol_type = None;
            self.leader = None;
            self.emptied_at_ms = Some(now_ms());
            self.persist(ctx);
            return;
        }
        self.protocol = self.select_protocol();
        let Some(protocol) = self.protocol.clone() else {
            // Cannot happen: joins that share no protocol are refused on arrival.
            for m in self.members.values_mut() {
                if let Some(r) = m.join_reply.take() {
                    let _ = r.send(Err(BrokerError::InconsistentGroupProtocol));
                }
            }
            self.members.clear();
            self.state = GroupState::Empty;
            return;
        };
        if self
            .leader
            .as_ref()
            .is_none_or(|l| !self.members.contains_key(l))
        {
            self.leader = self.members.keys().next().cloned();
        }
        let broker_assigns = self.protocol_type.as_deref() == Some(WEIR_PROTOCOL_TYPE);
        if broker_assigns {
            self.assign_on_broker(&protocol);
            self.state = GroupState::Stable;
        } else {
            self.state = GroupState::CompletingRebalance;
        }
        self.persist(ctx);
        let leader = self.leader.clone().unwrap_or_default();
        let roster: Vec<JoinedMember> = self
            .members
            .iter()
            .map(|(id, m)| JoinedMember {
                member_id: id.clone(),
                instance_id: m.instance_id.clone(),
                metadata: m.metadata(&protocol),
            })
            .collect();
        let generation = self.generation;
        let protocol_type = self.protocol_type.clone().unwrap_or_default();
        for (id, m) in self.members.iter_mut() {
            m.last_seen = Instant::now();
            if let Some(reply) = m.join_reply.take() {
                let is_leader = *id == leader && !broker_assigns;
                let _ = reply.send(Ok(JoinResult {
                    generation,
                    protocol_type: protocol_type.clone(),
                    protocol: protocol.clone(),
                    leader: leader.clone(),
                    member_id: id.clone(),
                    members: if is_leader {
                        roster.clone()
                    } else {
                        Vec::new()
                    },
                }));
            }
        }
    }

    /// Computes the assignment of a `weir` group with the chosen strategy.
    fn assign_on_broker(&mut self, strategy: &str) {
        let subs: Vec<MemberSubscription> = self
            .members
            .iter()
            .map(|(id, m)| {
                let topics = m
                    .protocols
                    .iter()
                    .find(|(n, _)| n == strategy)
                    .and_then(|(_, md)| rmp_serde::from_slice::<Vec<String>>(md).ok())
                    .unwrap_or_default();
                let owned = rmp_serde::from_slice::<Vec<(String, Vec<i32>)>>(&m.assignment)
                    .unwrap_or_default()
                    .into_iter()
                    .flat_map(|(t, ps)| ps.into_iter().map(move |p| (t.clone(), p)))
                    .collect();
                MemberSubscription {
                    member_id: id.clone(),
                    topics: topics.into_iter().collect(),
                    owned,
                }
            })
            .collect();
        let counts: BTreeMap<String, u32> = {
            let routes = self.routes.read().unwrap_or_else(|e| e.into_inner());
            subs.iter()
                .flat_map(|s| s.topics.iter())
                .filter_map(|t| {
                    routes
                        .get(t)
                        .map(|r| (t.clone(), r.partitions.len() as u32))
                })
                .collect()
        };
        let result = assignor::assign(strategy, &subs, &counts).unwrap_or_default();
        for (id, m) in self.members.iter_mut() {
            let mine: Vec<(String, Vec<i32>)> = result
                .get(id)
                .map(|t| t.iter().map(|(t, ps)| (t.clone(), ps.clone())).collect())
                .unwrap_or_default();
            m.assignment = Bytes::from(rmp_serde::to_vec(&mine).unwrap_or_default());
        }
    }

    fn remove_member(&mut self, id: &str, ctx: &mut Context<Self>) {
        let removed = self.members.remove(id).map(|mut m| {
            m.fail_waiting(&BrokerError::UnknownMember(id.to_string()));
        });
        if self.leader.as_deref() == Some(id) {
            self.leader = None;
        }
        match self.state {
            GroupState::PreparingRebalance => self.maybe_complete_join(ctx),
            GroupState::Stable | GroupState::CompletingRebalance => {
                if self.members.is_empty() {
                    self.fail_pending_syncs(&BrokerError::RebalanceInProgress);
                    self.generation += 1;
                    self.state = GroupState::Empty;
                    self.protocol = None;
                    self.protocol_type = None;
                    self.emptied_at_ms = Some(now_ms());
                    self.persist(ctx);
                } else {
                    self.prepare_rebalance(ctx);
                }
            }
            GroupState::Empty | GroupState::Dead => {}
        }
        // A rebalance still waiting for members is recorded without the one that went, so that
        // after a restart the others do not wait for it (a completed join recorded itself).
        if removed.is_some() && self.state == GroupState::PreparingRebalance {
            self.persist(ctx);
        }
    }

    fn expire_sessions(&mut self, ctx: &mut Context<Self>) {
        let now = Instant::now();
        let expired: Vec<String> = self
            .members
            .iter()
            // A member waiting for its join answer is alive: the broker holds its request.
            .filter(|(_, m)| {
                m.join_reply.is_none() && now.duration_since(m.last_seen) > m.session_timeout
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            self.remove_member(&id, ctx);
        }
        let session = Duration::from_millis(self.settings.consumer_session_timeout_ms);
        let gone = self.consumer.expired(now, session, &self.deadlines);
        if !gone.is_empty() {
            for id in gone {
                self.consumer.remove(&id, &mut self.deadlines);
            }
            self.after_consumer_removal(ctx);
        }
        let max = Duration::from_millis(self.settings.max_session_timeout_ms);
        self.pending.retain(|_, at| now.duration_since(*at) <= max);
    }

    /// A group without members (none about to join either) unloads after
    /// `empty_group_unload_ms`: it leaves the registry, so that the next request naming it
    /// starts a new actor, which loads the committed offsets from storage, where every commit
    /// already is. Requests already on their way find this mailbox closed, unhandled, and are
    /// sent again ([`crate::BrokerHandle`] does). This bounds the memory and timers of groups
    /// named once: consumers with a new group id per run, a DescribeGroups of many names.
    fn maybe_unload(&mut self, ctx: &mut Context<Self>) {
        let idle =
            self.state == GroupState::Empty && !self.has_members() && self.pending.is_empty();
        if !idle {
            self.empty_since = None;
            return;
        }
        let since = *self.empty_since.get_or_insert_with(Instant::now);
        if since.elapsed() < Duration::from_millis(self.settings.empty_group_unload_ms) {
            return;
        }
        let used = self.generation > 0 || self.consumer.group_epoch > 0;
        if self.offsets_loaded && self.offsets.is_empty() && used {
            // Nothing of it is worth keeping: its record goes too (Kafka's cleanup removes an
            // empty group without offsets), then it unloads (nothing else runs in between).
            let (storage, id) = (self.storage.clone(), self.id.clone());
            ctx.wait(
                async move { storage.delete_group(&id).await }
                    .into_actor(self)
                    .map(|r, act, ctx| {
                        if let Err(e) = r {
                            eprintln!("weir: group {}: removing its record failed: {e}", act.id);
                        }
                        act.unload(ctx);
                    }),
            );
            return;
        }
        self.unload(ctx);
    }

    /// Leaves the registry and stops (see [`ConsumerGroup::maybe_unload`]).
    fn unload(&mut self, ctx: &mut Context<Self>) {
        let me = ctx.address();
        {
            let mut live = self.registry.lock().unwrap_or_else(|e| e.into_inner());
            if live.get(&self.id) == Some(&me) {
                live.remove(&self.id);
            }
        }
        ctx.stop();
    }

    /// A static member whose instance id now belongs to another member id was replaced by a
    /// newer incarnation: FENCED_INSTANCE_ID, so that the old one stops (Kafka's rule; an
    /// UNKNOWN_MEMBER_ID would make it rejoin and replace the new one in turn).
    fn check_fenced(&self, member_id: &str, instance_id: Option<&str>) -> Result<(), BrokerError> {
        let Some(iid) = instance_id else {
            return Ok(());
        };
        let owner = self
            .members
            .iter()
            .find(|(_, m)| m.instance_id.as_deref() == Some(iid));
        match owner {
            Some((id, _)) if id != member_id => Err(BrokerError::FencedInstanceId(iid.to_string())),
            _ => Ok(()),
        }
    }

    fn check_member(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> Result<&mut Member, BrokerError> {
        self.check_fenced(member_id, instance_id)?;
        let current = self.generation;
        let m = self
            .members
            .get_mut(member_id)
            .ok_or_else(|| BrokerError::UnknownMember(member_id.to_string()))?;
        if generation != current {
            return Err(BrokerError::IllegalGeneration {
                got: generation,
                current,
            });
        }
        m.last_seen = Instant::now();
        Ok(m)
    }
}

impl ConsumerGroup {
    /// An offset commit of a consumer-protocol member names its current epoch (Kafka's
    /// STALE_MEMBER_EPOCH otherwise: the client retries with the epoch of its latest
    /// heartbeat), in a request that can carry one (`member_epochs`).
    fn check_consumer_member(
        &self,
        member_id: &str,
        epoch: i32,
        member_epochs: bool,
    ) -> Result<(), BrokerError> {
        let m = self
            .consumer
            .members
            .get(member_id)
            .ok_or_else(|| BrokerError::UnknownMember(member_id.to_string()))?;
        if m.classic.is_none() && !member_epochs {
            return Err(BrokerError::UnsupportedVersion(
                "a consumer-protocol member commits with OffsetCommit v9 or later".into(),
            ));
        }
        if m.classic.is_some() && m.epoch != epoch {
            // A classic member names its generation.
            return Err(BrokerError::IllegalGeneration {
                got: epoch,
                current: m.epoch,
            });
        }
        if m.epoch != epoch {
            return Err(BrokerError::StaleMemberEpoch {
                member: member_id.to_string(),
                got: epoch,
                current: m.epoch,
            });
        }
        Ok(())
    }
}

impl Actor for ConsumerGroup {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let storage = self.storage.clone();
        let id = self.id.clone();
        // Nothing else runs until the offsets and the record are loaded (`wait` holds the
        // mailbox).
        ctx.wait(
            async move {
                let offsets = storage.fetch_offsets(&id).await;
                (offsets, storage.group_state(&id).await)
            }
            .into_actor(self)
            .map(|(offsets, record), act, ctx| {
                match offsets {
                    Ok(v) => {
                        act.offsets = v.into_iter().collect();
                        act.offsets_loaded = true;
                    }
                    Err(e) => eprintln!("weir: group {}: loading offsets failed: {e}", act.id),
                }
                match record.map(|r| r.map(|bytes| GroupRecord::decode(&bytes))) {
                    Ok(None) => {}
                    Ok(Some(Ok(record))) => act.restore(record, ctx),
                    Ok(Some(Err(e))) => eprintln!(
                        "weir: group {}: its stored record is unreadable ({e}); it starts empty",
                        act.id
                    ),
                    Err(e) => eprintln!("weir: group {}: loading its record failed: {e}", act.id),
                }
            }),
        );
        ctx.run_interval(Duration::from_millis(100), |act, ctx| {
            act.expire_sessions(ctx);
            act.maybe_unload(ctx);
        });
    }
}

impl Handler<JoinGroup> for ConsumerGroup {
    type Result = ResponseFuture<Result<JoinResult, BrokerError>>;

    fn handle(&mut self, msg: JoinGroup, ctx: &mut Self::Context) -> Self::Result {
        if self.closing {
            return Box::pin(async { Err(BrokerError::ShuttingDown) });
        }
        let (tx, rx) = oneshot::channel();
        if let Err(e) = self.join(msg, tx, ctx) {
            return Box::pin(async move { Err(e) });
        }
        Box::pin(async move { rx.await.unwrap_or(Err(BrokerError::ShuttingDown)) })
    }
}

impl ConsumerGroup {
    fn join(
        &mut self,
        msg: JoinGroup,
        reply: oneshot::Sender<Result<JoinResult, BrokerError>>,
        ctx: &mut Context<Self>,
    ) -> Result<(), BrokerError> {
        let min = Duration::from_millis(self.settings.min_session_timeout_ms);
        let max = Duration::from_millis(self.settings.max_session_timeout_ms);
        if msg.session_timeout < min || msg.session_timeout > max {
            return Err(BrokerError::InvalidSessionTimeout(
                msg.session_timeout.as_millis() as u64,
            ));
        }
        if msg.protocols.is_empty() || msg.protocol_type.is_empty() {
            return Err(BrokerError::InconsistentGroupProtocol);
        }
        // A group whose members use Kafka's consumer protocol takes classic Kafka consumers
        // as members of its own ([`migration`]), unless its protocol may not change.
        if self.classic_in_consumer_group() {
            if self.settings.migration_policy == MigrationPolicy::Disabled {
                return Err(BrokerError::InconsistentGroupProtocol);
            }
            return self.classic_join_to_consumer_group(msg, reply, ctx);
        }
        if !self.members.is_empty() && self.protocol_type.as_deref() != Some(&msg.protocol_type) {
            return Err(BrokerError::InconsistentGroupProtocol);
        }
        if !self.members.is_empty() {
            let mut candidates = self.candidates();
            candidates.retain(|c| msg.protocols.iter().any(|(n, _)| n == c));
            let existing_only =
                self.members.len() == 1 && self.members.contains_key(&msg.member_id);
            if candidates.is_empty() && !existing_only {
                return Err(BrokerError::InconsistentGroupProtocol);
            }
        }
        // A member the group does not have yet (not a known one rejoining, not a static member
        // replacing its old incarnation) must fit in `max_size`.
        let adds = !self.members.contains_key(&msg.member_id)
            && !msg.instance_id.as_ref().is_some_and(|iid| {
                self.members
                    .values()
                    .any(|m| m.instance_id.as_ref() == Some(iid))
            });
        if adds && self.members.len() >= self.settings.max_size as usize {
            self.pending.remove(&msg.member_id);
            return Err(BrokerError::GroupMaxSizeReached {
                group: self.id.clone(),
                max: self.settings.max_size,
            });
        }
        let mut member_id = msg.member_id.clone();
        // A static member coming back: its previous incarnation, and the leader before it.
        let mut replaced: Option<(Member, Option<String>)> = None;
        if member_id.is_empty() {
            // A static member coming back replaces its old incarnation.
            let previous = msg.instance_id.as_ref().and_then(|iid| {
                self.members
                    .iter()
                    .find(|(_, m)| m.instance_id.as_ref() == Some(iid))
                    .map(|(id, _)| id.clone())
            });
            member_id = self.new_member_id(&msg.client_id);
            if let Some(old) = previous {
                let leader = self.leader.clone();
                if let Some(mut m) = self.members.remove(&old) {
                    m.fail_waiting(&BrokerError::FencedInstanceId(
                        msg.instance_id.clone().unwrap_or_default(),
                    ));
                    replaced = Some((m, leader));
                }
                if self.leader.as_deref() == Some(old.as_str()) {
                    self.leader = Some(member_id.clone());
                }
            } else if msg.require_known_member_id && msg.instance_id.is_none() {
                // (A static member is known by its instance id: Kafka asks only dynamic
                // members to come back with the id it gives them.)
                self.pending.insert(member_id.clone(), Instant::now());
                return Err(BrokerError::MemberIdRequired(member_id));
            }
        } else {
            self.check_fenced(&member_id, msg.instance_id.as_deref())?;
            if !self.members.contains_key(&member_id) && self.pending.remove(&member_id).is_none() {
                return Err(BrokerError::UnknownMember(member_id));
            }
        }
        let existing = self.members.get(&member_id);
        let unchanged = existing.is_some_and(|m| m.protocols == msg.protocols);
        let is_leader = self.leader.as_deref() == Some(member_id.as_str());
        if self.members.is_empty() {
            self.protocol_type = Some(msg.protocol_type.clone());
        }
        let assignment = existing
            .or(replaced.as_ref().map(|(m, _)| m))
            .map(|m| m.assignment.clone())
            .unwrap_or_default();
        self.members.insert(
            member_id.clone(),
            Member {
                instance_id: msg.instance_id,
                client_id: msg.client_id,
                client_host: msg.client_host,
                session_timeout: msg.session_timeout,
                rebalance_timeout: msg.rebalance_timeout.max(Duration::from_millis(1)),
                protocols: msg.protocols,
                assignment,
                last_seen: Instant::now(),
                join_reply: Some(reply),
                sync_reply: None,
            },
        );
        // A known member rejoining a stable group with nothing changed gets the current
        // generation back without a rebalance (its heartbeat would have said if one started).
        if self.state == GroupState::Stable && unchanged && !is_leader {
            let leader = self.leader.clone().unwrap_or_default();
            self.rejoined_without_rebalance(member_id, leader);
            return Ok(());
        }
        // A static member restarting into a stable group takes its old incarnation's place and
        // assignment without a rebalance (KIP-345), unless the protocol the group would choose
        // changes. It is told the leader as it was, so that it does not lead (a stable group
        // would not pass a new assignment on); its SyncGroup gets the assignment.
        if let (Some((_, leader)), GroupState::Stable) = (&replaced, self.state) {
            if self.select_protocol() == self.protocol {
                let leader = leader.clone().unwrap_or_default();
                self.rejoined_without_rebalance(member_id, leader);
                // The record names the new incarnation.
                self.persist(ctx);
                return Ok(());
            }
        }
        self.prepare_rebalance(ctx);
        Ok(())
    }
}

/// Gets (and, from the leader, sets) the assignment of the current generation.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<SyncResult, BrokerError>")]
pub struct SyncGroup {
    /// The member.
    pub member_id: String,
    /// A static member's instance id.
    pub instance_id: Option<String>,
    /// Its generation.
    pub generation: i32,
    /// From the leader: every member's assignment.
    pub assignments: Vec<(String, Bytes)>,
    /// The protocol type and protocol the request names, if it does (Kafka's SyncGroup v5+):
    /// INCONSISTENT_GROUP_PROTOCOL when either is not the group's (checked after the member
    /// and its generation, before anything changes).
    pub protocol_type: Option<String>,
    /// See `protocol_type`.
    pub protocol: Option<String>,
}

/// Whether a request's `named` protocol type or protocol contradicts the group's `current`
/// (Kafka's rule: only when both are known).
pub(crate) fn names_other(named: Option<&str>, current: Option<&str>) -> bool {
    matches!((named, current), (Some(n), Some(c)) if n != c)
}

impl Handler<SyncGroup> for ConsumerGroup {
    type Result = ResponseFuture<Result<SyncResult, BrokerError>>;

    fn handle(&mut self, msg: SyncGroup, ctx: &mut Self::Context) -> Self::Result {
        if self.closing {
            return Box::pin(async { Err(BrokerError::ShuttingDown) });
        }
        if self.classic_in_consumer_group() {
            let result = self.classic_sync_to_consumer_group(&msg);
            return Box::pin(async move { result });
        }
        let mut completed = false;
        let result = (|| {
            let state = self.state;
            let is_leader = self.leader.as_deref() == Some(msg.member_id.as_str());
            self.check_member(&msg.member_id, msg.instance_id.as_deref(), msg.generation)?;
            if names_other(msg.protocol_type.as_deref(), self.protocol_type.as_deref())
                || names_other(msg.protocol.as_deref(), self.protocol.as_deref())
            {
                return Err(BrokerError::InconsistentGroupProtocol);
            }
            let (tx, rx) = oneshot::channel();
            match state {
                GroupState::PreparingRebalance => return Err(BrokerError::RebalanceInProgress),
                GroupState::CompletingRebalance if is_leader => {
                    let given: BTreeMap<String, Bytes> = msg.assignments.into_iter().collect();
                    for (id, m) in self.members.iter_mut() {
                        m.assignment = given.get(id).cloned().unwrap_or_default();
                    }
                    self.state = GroupState::Stable;
                    completed = true;
                    let (pt, p) = (
                        self.protocol_type.clone().unwrap_or_default(),
                        self.protocol.clone().unwrap_or_default(),
                    );
                    for m in self.members.values_mut() {
                        if let Some(r) = m.sync_reply.take() {
                            let _ = r.send(Ok(SyncResult {
                                protocol_type: pt.clone(),
                                protocol: p.clone(),
                                assignment: m.assignment.clone(),
                            }));
                        }
                    }
                }
                GroupState::CompletingRebalance => {
                    if let Some(m) = self.members.get_mut(&msg.member_id) {
                        m.sync_reply = Some(tx);
                    }
                    return Ok(rx);
                }
                GroupState::Stable => {}
                GroupState::Empty | GroupState::Dead => {
                    return Err(BrokerError::UnknownMember(msg.member_id.clone()))
                }
            }
            let m = self
                .members
                .get(&msg.member_id)
                .ok_or_else(|| BrokerError::UnknownMember(msg.member_id.clone()))?;
            let _ = tx.send(Ok(SyncResult {
                protocol_type: self.protocol_type.clone().unwrap_or_default(),
                protocol: self.protocol.clone().unwrap_or_default(),
                assignment: m.assignment.clone(),
            }));
            Ok(rx)
        })();
        if completed {
            self.persist(ctx);
        }
        Box::pin(async move {
            match result {
                Ok(rx) => rx.await.unwrap_or(Err(BrokerError::ShuttingDown)),
                Err(e) => Err(e),
            }
        })
    }
}

/// Keeps a member's session alive; says when to rejoin.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<(), BrokerError>")]
pub struct Heartbeat {
    /// The member.
    pub member_id: String,
    /// A static member's instance id.
    pub instance_id: Option<String>,
    /// Its generation.
    pub generation: i32,
}

impl Handler<Heartbeat> for ConsumerGroup {
    type Result = Result<(), BrokerError>;

    fn handle(&mut self, msg: Heartbeat, ctx: &mut Self::Context) -> Self::Result {
        if self.classic_in_consumer_group() {
            return self.classic_heartbeat_to_consumer_group(
                &msg.member_id,
                msg.instance_id.as_deref(),
                msg.generation,
                ctx,
            );
        }
        let state = self.state;
        self.check_member(&msg.member_id, msg.instance_id.as_deref(), msg.generation)?;
        match state {
            GroupState::PreparingRebalance => Err(BrokerError::RebalanceInProgress),
            _ => Ok(()),
        }
    }
}

/// Members leaving the group; the answer has one outcome per member, in order.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Vec<Result<(), BrokerError>>")]
pub struct LeaveGroup {
    /// The members (by id; an empty id with an instance id names a static member).
    pub members: Vec<(String, Option<String>)>,
}

impl Handler<LeaveGroup> for ConsumerGroup {
    type Result = MessageResult<LeaveGroup>;

    fn handle(&mut self, msg: LeaveGroup, ctx: &mut Self::Context) -> Self::Result {
        let outcomes = msg
            .members
            .into_iter()
            .map(|(id, instance)| self.leave(id, instance, ctx))
            .collect();
        MessageResult(outcomes)
    }
}

impl ConsumerGroup {
    /// Answers a member's join at once with the current generation, naming `leader` as its
    /// leader and no members (nothing to assign).
    fn rejoined_without_rebalance(&mut self, member_id: String, leader: String) {
        let generation = self.generation;
        let protocol_type = self.protocol_type.clone().unwrap_or_default();
        let protocol = self.protocol.clone().unwrap_or_default();
        if let Some(r) = self
            .members
            .get_mut(&member_id)
            .and_then(|m| m.join_reply.take())
        {
            let _ = r.send(Ok(JoinResult {
                generation,
                protocol_type,
                protocol,
                leader,
                member_id,
                members: Vec::new(),
            }));
        }
    }

    /// One member leaves: by member id (fenced if its instance id now belongs to another), a
    /// member still to rejoin with the id MEMBER_ID_REQUIRED gave it, or by instance id alone
    /// (an administrator removing a static member).
    fn leave(
        &mut self,
        id: String,
        instance: Option<String>,
        ctx: &mut Context<Self>,
    ) -> Result<(), BrokerError> {
        if self.classic_in_consumer_group() {
            return self.classic_leave_consumer_group(id, instance, ctx);
        }
        if id.is_empty() {
            let owner = instance.as_ref().and_then(|iid| {
                self.members
                    .iter()
                    .find(|(_, m)| m.instance_id.as_ref() == Some(iid))
                    .map(|(id, _)| id.clone())
            });
            let owner = owner.ok_or_else(|| BrokerError::UnknownMember(String::new()))?;
            self.remove_member(&owner, ctx);
            return Ok(());
        }
        if self.pending.remove(&id).is_some() {
            return Ok(());
        }
        self.check_fenced(&id, instance.as_deref())?;
        if !self.members.contains_key(&id) {
            return Err(BrokerError::UnknownMember(id));
        }
        self.remove_member(&id, ctx);
        Ok(())
    }
}

/// A heartbeat of Kafka's consumer protocol (KIP-848): joins, stays in or leaves the group,
/// and answers with the member's epoch and, when it changed, its assignment (see
/// [`consumer_protocol`]).
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<ConsumerHeartbeatAnswer, BrokerError>")]
pub struct ConsumerHeartbeat {
    /// The request (its `owned` is filled in from `owned_ids`).
    pub input: HeartbeatInput,
    /// The partitions the member owns, by topic id; `None`: unchanged.
    pub owned_ids: Option<Vec<(u128, Vec<i32>)>>,
}

/// The answer to a [`ConsumerHeartbeat`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerHeartbeatAnswer {
    /// The member id (chosen by the group for a v0 join).
    pub member_id: String,
    /// Its epoch.
    pub member_epoch: i32,
    /// How often it is to send heartbeats.
    pub heartbeat_interval_ms: i32,
    /// Its assignment by topic id, when it changed or the member asked in full.
    pub assignment: Option<Vec<(u128, Vec<i32>)>>,
}

impl Handler<ConsumerHeartbeat> for ConsumerGroup {
    type Result = Result<ConsumerHeartbeatAnswer, BrokerError>;

    fn handle(&mut self, msg: ConsumerHeartbeat, ctx: &mut Self::Context) -> Self::Result {
        if self.closing {
            return Err(BrokerError::ShuttingDown);
        }
        if self.state == GroupState::Dead {
            return Err(BrokerError::UnknownGroup(self.id.clone()));
        }
        if !self.members.is_empty() {
            // A classic group with members: only a join may change its protocol.
            if msg.input.member_epoch != consumer_protocol::JOIN_EPOCH {
                return Err(BrokerError::GroupTypeMismatch {
                    group: self.id.clone(),
                    actual: "classic".into(),
                });
            }
            // A join the group would refuse anyway changes nothing: it is tried on an empty
            // group first.
            let (topics, _, _) = self.topics();
            ConsumerGroupState::default().heartbeat(
                msg.input.clone(),
                &topics,
                Instant::now(),
                &mut Deadlines::default(),
                u32::MAX,
                String::new,
            )?;
            self.upgrade(ctx)?;
        }
        let (topics, names, ids) = self.topics();
        let mut input = msg.input;
        input.owned = msg.owned_ids.map(|owned| {
            let mut a = Assignment::new();
            for (id, ps) in owned {
                // Partitions of topics deleted since are no longer anyone's.
                if let Some(name) = names.get(&id) {
                    a.entry(name.clone()).or_default().extend(ps);
                }
            }
            a
        });
        let before = self.consumer.clone();
        let was_empty = !self.has_members();
        let client_id = input.client_id.clone();
        let next = &mut self.next_member;
        let out = self.consumer.heartbeat(
            input,
            &topics,
            Instant::now(),
            &mut self.deadlines,
            self.settings.max_size,
            || {
                *next += 1;
                format!(
                    "{}-{}-{:x}",
                    if client_id.is_empty() {
                        "member"
                    } else {
                        &client_id
                    },
                    next,
                    rand::random::<u64>()
                )
            },
        );
        let out = out.map_err(|e| match e {
            BrokerError::GroupMaxSizeReached { max, .. } => BrokerError::GroupMaxSizeReached {
                group: self.id.clone(),
                max,
            },
            e => e,
        });
        if self.consumer != before {
            if self.consumer.members.is_empty() && !was_empty {
                self.emptied_at_ms = Some(now_ms());
            }
            self.persist(ctx);
            // The last consumer-protocol member may have left classic ones behind.
            self.maybe_downgrade(ctx);
        }
        let out = out?;
        Ok(ConsumerHeartbeatAnswer {
            member_id: out.member_id,
            member_epoch: out.member_epoch,
            heartbeat_interval_ms: self.settings.consumer_heartbeat_interval_ms as i32,
            assignment: out.assignment.map(|a| {
                a.into_iter()
                    .filter_map(|(t, ps)| ids.get(&t).map(|id| (*id, ps.into_iter().collect())))
                    .collect()
            }),
        })
    }
}

/// Commits offsets: from a member of the current generation, from anyone while the group has
/// no members (generation -1, Kafka's "simple" consumers), or as an admin reset (`admin`),
/// which requires an empty group.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<(), BrokerError>")]
pub struct CommitOffsets {
    /// The member (empty for simple and admin commits).
    pub member_id: String,
    /// A static member's instance id.
    pub instance_id: Option<String>,
    /// Its generation (-1 for simple and admin commits).
    pub generation: i32,
    /// The offsets.
    pub offsets: Vec<(TopicPartition, CommittedOffset)>,
    /// An admin reset: only allowed while the group has no members.
    pub admin: bool,
    /// Whether the request can carry a consumer-protocol member's epoch (Kafka's
    /// OffsetCommit v9+, the native protocol); if not, such a member's commit is
    /// [`BrokerError::UnsupportedVersion`].
    pub member_epochs: bool,
}

impl Handler<CommitOffsets> for ConsumerGroup {
    type Result = AtomicResponse<Self, Result<(), BrokerError>>;

    fn handle(&mut self, msg: CommitOffsets, _: &mut Self::Context) -> Self::Result {
        let checked = (|| {
            if self.state == GroupState::Dead {
                return Err(BrokerError::UnknownGroup(self.id.clone()));
            }
            if msg.admin {
                if self.has_members() {
                    return Err(BrokerError::GroupNotEmpty(self.id.clone()));
                }
                return Ok(());
            }
            if msg.generation < 0 && msg.member_id.is_empty() {
                if self.has_members() {
                    return Err(BrokerError::UnknownMember(String::new()));
                }
                return Ok(());
            }
            if !self.consumer.members.is_empty() {
                return self.check_consumer_member(
                    &msg.member_id,
                    msg.generation,
                    msg.member_epochs,
                );
            }
            let state = self.state;
            self.check_member(&msg.member_id, msg.instance_id.as_deref(), msg.generation)?;
            if state == GroupState::CompletingRebalance {
                return Err(BrokerError::RebalanceInProgress);
            }
            Ok(())
        })();
        if let Err(e) = checked {
            return AtomicResponse::new(Box::pin(async move { Err(e) }.into_actor(self)));
        }
        self.store_offsets(msg.offsets)
    }
}

impl ConsumerGroup {
    /// Writes `offsets` to storage, then takes them as the group's committed offsets; the
    /// group's next message waits for both.
    fn store_offsets(
        &mut self,
        offsets: Vec<(TopicPartition, CommittedOffset)>,
    ) -> AtomicResponse<Self, Result<(), BrokerError>> {
        let storage = self.storage.clone();
        let group = self.id.clone();
        AtomicResponse::new(Box::pin(
            async move {
                storage.commit_offsets(&group, &offsets).await?;
                Ok(offsets)
            }
            .into_actor(self)
            .map(|r: Result<_, BrokerError>, act, _| {
                for (tp, o) in r? {
                    act.offsets.insert(tp, o);
                }
                Ok(())
            }),
        ))
    }
}

/// Commits the offsets a transaction staged, as its commit completes: the member checks were
/// made when they were staged (TxnOffsetCommit), and the transaction's commit is decided.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<(), BrokerError>")]
pub struct CommitTxnOffsets {
    /// The offsets.
    pub offsets: Vec<(TopicPartition, CommittedOffset)>,
}

impl Handler<CommitTxnOffsets> for ConsumerGroup {
    type Result = AtomicResponse<Self, Result<(), BrokerError>>;

    fn handle(&mut self, msg: CommitTxnOffsets, _: &mut Self::Context) -> Self::Result {
        self.store_offsets(msg.offsets)
    }
}

/// Checks that `member_id` belongs to the group's current generation `generation` (a
/// transactional offset commit from a consumer-driven producer, KIP-447).
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<(), BrokerError>")]
pub struct CheckMember {
    /// The member.
    pub member_id: String,
    /// A static member's instance id.
    pub instance_id: Option<String>,
    /// Its generation.
    pub generation: i32,
}

impl Handler<CheckMember> for ConsumerGroup {
    type Result = Result<(), BrokerError>;

    fn handle(&mut self, msg: CheckMember, _: &mut Self::Context) -> Self::Result {
        if !self.consumer.members.is_empty() {
            // (A transactional commit: Kafka checks no request version for those.)
            return self.check_consumer_member(&msg.member_id, msg.generation, true);
        }
        self.check_member(&msg.member_id, msg.instance_id.as_deref(), msg.generation)
            .map(|_| ())
    }
}

/// Committed offsets of the listed partitions (all when `None`).
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<Vec<(TopicPartition, CommittedOffset)>, BrokerError>")]
pub struct FetchOffsets {
    /// The partitions, or all.
    pub partitions: Option<Vec<TopicPartition>>,
    /// The member asking and its epoch (Kafka's OffsetFetch v9): in a group of the consumer
    /// protocol it must be a member at that epoch (STALE_MEMBER_EPOCH otherwise), so that it
    /// reads offsets its partitions' previous owners committed before giving them up.
    pub member: Option<(String, i32)>,
}

impl Handler<FetchOffsets> for ConsumerGroup {
    type Result = Result<Vec<(TopicPartition, CommittedOffset)>, BrokerError>;

    fn handle(&mut self, msg: FetchOffsets, _: &mut Self::Context) -> Self::Result {
        if let Some((id, epoch)) = &msg.member {
            if !self.consumer.members.is_empty() {
                self.check_consumer_member(id, *epoch, true)?;
            }
        }
        Ok(match msg.partitions {
            None => self
                .offsets
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            Some(ps) => ps
                .into_iter()
                .filter_map(|tp| self.offsets.get(&tp).map(|o| (tp, o.clone())))
                .collect(),
        })
    }
}

/// Describes the group.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "GroupDescription")]
pub struct DescribeGroup;

impl Handler<DescribeGroup> for ConsumerGroup {
    type Result = MessageResult<DescribeGroup>;

    fn handle(&mut self, _: DescribeGroup, _: &mut Self::Context) -> Self::Result {
        let protocol = self.protocol.clone().unwrap_or_default();
        // A group nobody joined or committed to does not exist, as far as Kafka's clients are
        // told (Kafka answers such a name with the state Dead, and does not list it).
        let unused = self.state == GroupState::Empty
            && self.generation == 0
            && self.consumer.group_epoch == 0
            && self.offsets.is_empty();
        // A group is of the consumer protocol while it has such members, and once they all
        // left if it never had classic ones (Kafka keeps an empty group's type).
        let consumer_type = self.members.is_empty()
            && self.consumer.group_epoch > 0
            && (!self.consumer.members.is_empty() || self.generation == 0);
        let consumer = consumer_type.then(|| self.describe_consumer());
        MessageResult(GroupDescription {
            group_id: self.id.clone(),
            state: if unused {
                GroupState::Dead
            } else {
                self.classic_state()
            },
            generation: self.generation,
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            protocol: protocol.clone(),
            leader: self.leader.clone().unwrap_or_default(),
            members: self
                .members
                .iter()
                .map(|(id, m)| MemberDescription {
                    member_id: id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: m.metadata(&protocol),
                    assignment: m.assignment.clone(),
                })
                .collect(),
            offsets: self
                .offsets
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            consumer,
        })
    }
}

impl ConsumerGroup {
    fn describe_consumer(&self) -> ConsumerGroupDescription {
        let (_, _, ids) = self.topics();
        let with_ids = |a: &Assignment| -> Vec<TopicPartitions> {
            a.iter()
                .map(|(t, ps)| {
                    let id = ids.get(t).copied().unwrap_or(0);
                    (t.clone(), id, ps.iter().copied().collect())
                })
                .collect()
        };
        let c = &self.consumer;
        ConsumerGroupDescription {
            state: consumer_protocol::state_name(c).to_string(),
            group_epoch: c.group_epoch,
            assignment_epoch: c.assignment_epoch,
            assignor: c.assignor.clone(),
            members: c
                .members
                .iter()
                .map(|(id, m)| ConsumerMemberDescription {
                    member_id: id.clone(),
                    instance_id: m.instance_id.clone(),
                    rack_id: m.rack_id.clone(),
                    member_epoch: m.epoch,
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    subscribed_topic_names: m.subscribed_names.clone(),
                    subscribed_topic_regex: m.subscribed_regex.clone(),
                    assignment: with_ids(&m.assigned),
                    target_assignment: c.target.get(id).map(&with_ids).unwrap_or_default(),
                    classic: m.classic.is_some(),
                })
                .collect(),
        }
    }
}

/// Removes the committed offsets that `[groups] offsets_retention_ms` says have expired (Kafka's
/// offset expiration, KIP-211): none while the group has members; all of them once it has been
/// Empty for the retention; for a group that never had members, each offset by its commit time.
/// Answers how many were removed. A group left without offsets is forgotten when it unloads.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Result<usize, BrokerError>")]
pub struct ExpireOffsets {
    /// The time to judge by, ms since the epoch.
    pub now_ms: i64,
    /// `[groups] offsets_retention_ms` (positive).
    pub retention_ms: i64,
}

/// The offsets of a group in `state`, last Empty since `emptied_at_ms`, that have expired at
/// `now_ms` (see [`ExpireOffsets`]).
pub fn expired_offsets<'a>(
    state: GroupState,
    emptied_at_ms: Option<i64>,
    offsets: impl IntoIterator<Item = (&'a TopicPartition, &'a CommittedOffset)>,
    now_ms: i64,
    retention_ms: i64,
) -> Vec<TopicPartition> {
    if state != GroupState::Empty {
        return Vec::new();
    }
    let due = |at: i64| now_ms.saturating_sub(at) >= retention_ms;
    offsets
        .into_iter()
        .filter(|(_, o)| emptied_at_ms.map_or(due(o.commit_timestamp_ms), due))
        .map(|(tp, _)| tp.clone())
        .collect()
}

impl Handler<ExpireOffsets> for ConsumerGroup {
    type Result = AtomicResponse<Self, Result<usize, BrokerError>>;

    fn handle(&mut self, msg: ExpireOffsets, _: &mut Self::Context) -> Self::Result {
        let expired = expired_offsets(
            if self.has_members() {
                GroupState::Stable
            } else {
                self.state
            },
            self.emptied_at_ms,
            &self.offsets,
            msg.now_ms,
            msg.retention_ms,
        );
        if expired.is_empty() || !self.offsets_loaded {
            return AtomicResponse::new(Box::pin(async { Ok(0) }.into_actor(self)));
        }
        let (storage, id) = (self.storage.clone(), self.id.clone());
        AtomicResponse::new(Box::pin(
            async move {
                storage.delete_offsets(&id, &expired).await?;
                Ok(expired)
            }
            .into_actor(self)
            .map(|r: Result<Vec<TopicPartition>, BrokerError>, act, _| {
                let expired = r?;
                for tp in &expired {
                    act.offsets.remove(tp);
                }
                Ok(expired.len())
            }),
        ))
    }
}

/// Deletes an empty group and its offsets; the actor stops.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Result<(), BrokerError>")]
pub struct DeleteGroup;

impl Handler<DeleteGroup> for ConsumerGroup {
    type Result = AtomicResponse<Self, Result<(), BrokerError>>;

    fn handle(&mut self, _: DeleteGroup, _: &mut Self::Context) -> Self::Result {
        if self.has_members() {
            let e = BrokerError::GroupNotEmpty(self.id.clone());
            return AtomicResponse::new(Box::pin(async move { Err(e) }.into_actor(self)));
        }
        let storage = self.storage.clone();
        let id = self.id.clone();
        AtomicResponse::new(Box::pin(
            async move { storage.delete_group(&id).await }
                .into_actor(self)
                .map(|r, act, ctx| {
                    r?;
                    act.state = GroupState::Dead;
                    act.offsets.clear();
                    ctx.stop();
                    Ok(())
                }),
        ))
    }
}

/// Parses a member's subscription (its metadata for the group's protocol) into topic names,
/// `None` when it cannot: the protocol layer that owns the format supplies it.
pub type SubscriptionParser = fn(&[u8]) -> Option<Vec<String>>;

/// One partition's outcome of [`DeleteOffsets`].
pub type OffsetDeletion = (TopicPartition, Result<(), BrokerError>);

/// Deletes the group's committed offsets of `partitions` (Kafka's OffsetDelete), except those of
/// topics a member consumes ([`BrokerError::GroupSubscribedToTopic`]); a `weir` group's
/// subscriptions are read by the broker, any other protocol type's with `parse` (a member whose
/// subscription cannot be read protects every topic).
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<Vec<OffsetDeletion>, BrokerError>")]
pub struct DeleteOffsets {
    /// The partitions.
    pub partitions: Vec<TopicPartition>,
    /// Reads other protocol types' subscriptions.
    pub parse: SubscriptionParser,
}

impl Handler<DeleteOffsets> for ConsumerGroup {
    type Result = AtomicResponse<Self, Result<Vec<OffsetDeletion>, BrokerError>>;

    fn handle(&mut self, msg: DeleteOffsets, _: &mut Self::Context) -> Self::Result {
        // The topics the members consume; `None`: a subscription could not be read.
        let mut subscribed: Option<BTreeSet<String>> = Some(BTreeSet::new());
        let protocol = self.protocol.clone().unwrap_or_default();
        for m in self.members.values() {
            let md = m.metadata(&protocol);
            let topics = if self.protocol_type.as_deref() == Some(WEIR_PROTOCOL_TYPE) {
                rmp_serde::from_slice::<Vec<String>>(&md).ok()
            } else {
                (msg.parse)(&md)
            };
            match (topics, subscribed.as_mut()) {
                (Some(t), Some(all)) => all.extend(t),
                _ => subscribed = None,
            }
        }
        if !self.consumer.members.is_empty() {
            let (topics, _, _) = self.topics();
            let consumed = self.consumer.subscribed_metadata(&topics);
            if let Some(all) = subscribed.as_mut() {
                all.extend(consumed.into_keys());
            }
        }
        let mut outcomes = Vec::with_capacity(msg.partitions.len());
        let mut delete = Vec::new();
        for tp in msg.partitions {
            let protected = subscribed.as_ref().is_none_or(|s| s.contains(&tp.topic));
            if protected {
                let e = BrokerError::GroupSubscribedToTopic {
                    group: self.id.clone(),
                    topic: tp.topic.clone(),
                };
                outcomes.push((tp, Err(e)));
            } else {
                delete.push(tp.clone());
                outcomes.push((tp, Ok(())));
            }
        }
        let storage = self.storage.clone();
        let id = self.id.clone();
        AtomicResponse::new(Box::pin(
            async move {
                if !delete.is_empty() {
                    storage.delete_offsets(&id, &delete).await?;
                }
                Ok(delete)
            }
            .into_actor(self)
            .map(move |r: Result<Vec<TopicPartition>, BrokerError>, act, _| {
                for tp in r? {
                    act.offsets.remove(&tp);
                }
                Ok(outcomes)
            }),
        ))
    }
}

/// Forgets offsets of deleted partitions.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct ForgetPartitions(pub Vec<TopicPartition>);

impl Handler<ForgetPartitions> for ConsumerGroup {
    type Result = ();

    fn handle(&mut self, msg: ForgetPartitions, _: &mut Self::Context) {
        for tp in msg.0 {
            self.offsets.remove(&tp);
        }
    }
}

/// The broker is about to stop: joins and syncs waiting for other members are answered with
/// [`BrokerError::ShuttingDown`] at once (Kafka's NOT_COORDINATOR: the clients find the
/// coordinator again and rejoin), and new ones are refused, so that connections drain without
/// waiting for a rebalance. Members, offsets and the stored record stay as they are.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct ReleaseWaiting;

impl Handler<ReleaseWaiting> for ConsumerGroup {
    type Result = ();

    fn handle(&mut self, _: ReleaseWaiting, _: &mut Self::Context) {
        self.release_waiting();
    }
}

impl ConsumerGroup {
    /// Answers every join and sync waiting with [`BrokerError::ShuttingDown`] and refuses new
    /// ones (see [`ReleaseWaiting`]).
    fn release_waiting(&mut self) {
        self.closing = true;
        for m in self.members.values_mut() {
            m.fail_waiting(&BrokerError::ShuttingDown);
        }
    }
}

/// Stops the actor (broker shutdown).
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct StopGroup;

impl Handler<StopGroup> for ConsumerGroup {
    type Result = ();

    fn handle(&mut self, _: StopGroup, ctx: &mut Self::Context) {
        self.release_waiting();
        ctx.stop();
    }
}
