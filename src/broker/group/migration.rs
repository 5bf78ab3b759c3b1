//! Groups that change protocol while they have members (KIP-848's migration path, Kafka's
//! `group.consumer.migration.policy`; here `[groups] migration_policy`), and the classic
//! members of a consumer-protocol group in between.
//!
//! ```text
//!  classic group of Kafka consumers ──ConsumerGroupHeartbeat join──► upgrade():
//!      its members become classic members of a consumer-protocol group at their generation,
//!      with their subscriptions and assignments (read from their join and sync bytes);
//!      waiting joins and syncs are told REBALANCE_IN_PROGRESS
//!  consumer-protocol group ◄──JoinGroup/SyncGroup/Heartbeat/LeaveGroup── classic members
//!      (consumer_protocol::classic_join/classic_sync/classic_heartbeat; the group assigns)
//!  last consumer-protocol member leaves or expires, classic ones remain ──► maybe_downgrade():
//!      a classic group at their generation with their assignments, rebalancing: they rejoin
//!      and their leader assigns again
//! ```
//!
//! A rolling restart of a group's consumers from `group.protocol=classic` to `consumer` (or
//! back) so goes on without stopping the group, as with Kafka 4. Only groups of Kafka
//! consumers (protocol type `consumer`) migrate; with the policy against it a group keeps its
//! protocol while it has members (the other protocol's joins are refused as before).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::oneshot;

use super::{names_other, ConsumerGroup, SyncGroup};
use crate::broker::consumer_protocol::{
    Assignment, ClassicJoinInput, ClassicMeta, ConsumerGroupState, ConsumerMember, Deadlines,
    MemberState, DEFAULT_ASSIGNOR,
};
use crate::broker::error::BrokerError;
use crate::broker::types::{now_ms, GroupState, JoinGroup, JoinResult, SyncResult};
use crate::protocol::kafka::embedded::{self, TopicPartitions};

/// An assignment as the embedded protocol lists it.
fn listed(a: &Assignment) -> TopicPartitions {
    a.iter()
        .map(|(t, ps)| (t.clone(), ps.iter().copied().collect()))
        .collect()
}

/// Partitions by topic, of topics the broker has (the others are no longer anyone's).
fn known(tps: TopicPartitions, topics: &BTreeMap<String, u32>) -> Assignment {
    let mut a = Assignment::new();
    for (t, ps) in tps {
        if topics.contains_key(&t) {
            a.entry(t).or_default().extend(ps);
        }
    }
    a
}

impl ConsumerGroup {
    /// Whether classic requests go to the consumer-protocol state: the group has its members.
    pub(super) fn classic_in_consumer_group(&self) -> bool {
        !self.consumer.members.is_empty()
    }

    /// A JoinGroup into a consumer-protocol group with members (see the module docs): answered
    /// at once with the member's epoch as its generation and no leader.
    pub(super) fn classic_join_to_consumer_group(
        &mut self,
        msg: JoinGroup,
        reply: oneshot::Sender<Result<JoinResult, BrokerError>>,
        ctx: &mut Context<Self>,
    ) -> Result<(), BrokerError> {
        if msg.protocol_type != embedded::PROTOCOL_TYPE {
            return Err(BrokerError::InconsistentGroupProtocol);
        }
        // Its protocols must include one every other classic member supports.
        let mut common: Option<BTreeSet<&str>> = None;
        for (id, m) in &self.consumer.members {
            let Some(c) = m.classic.as_ref().filter(|_| *id != msg.member_id) else {
                continue;
            };
            let theirs: BTreeSet<&str> = c.protocols.iter().map(|(n, _)| n.as_str()).collect();
            common = Some(match common {
                None => theirs,
                Some(set) => set.intersection(&theirs).copied().collect(),
            });
        }
        if let Some(common) = common {
            if !msg
                .protocols
                .iter()
                .any(|(n, _)| common.contains(n.as_str()))
            {
                return Err(BrokerError::InconsistentGroupProtocol);
            }
        }
        let now = Instant::now();
        if msg.member_id.is_empty() {
            if msg.instance_id.is_none() && msg.require_known_member_id {
                let id = self.new_member_id(&msg.client_id);
                self.pending.insert(id.clone(), now);
                return Err(BrokerError::MemberIdRequired(id));
            }
        } else {
            if let Some(iid) = msg.instance_id.as_deref() {
                let holder = self.consumer.static_member(iid);
                if holder.is_some_and(|(id, _)| *id != msg.member_id) {
                    return Err(BrokerError::FencedInstanceId(iid.to_string()));
                }
            }
            if !self.consumer.members.contains_key(&msg.member_id)
                && self.pending.remove(&msg.member_id).is_none()
            {
                return Err(BrokerError::UnknownMember(msg.member_id));
            }
        }
        // (Metadata that is not a consumer protocol subscription cannot be assigned to.)
        let subscription = msg
            .protocols
            .iter()
            .find_map(|(_, md)| embedded::decode_subscription(md.clone()).ok())
            .ok_or(BrokerError::InconsistentGroupProtocol)?;
        let (topics, _, _) = self.topics();
        let protocol = msg
            .protocols
            .first()
            .map(|(n, _)| n.clone())
            .unwrap_or_default();
        let input = ClassicJoinInput {
            member_id: msg.member_id,
            instance_id: msg.instance_id,
            client_id: msg.client_id.clone(),
            client_host: msg.client_host,
            session_timeout_ms: msg.session_timeout.as_millis() as u64,
            rebalance_timeout_ms: i32::try_from(msg.rebalance_timeout.as_millis())
                .unwrap_or(i32::MAX),
            protocols: msg.protocols,
            subscribed_names: subscription.topics,
            owned: known(subscription.owned_partitions, &topics),
            version: subscription.version,
            rack_id: subscription.rack_id,
        };
        // (Used for a static member's new incarnation.)
        let fresh_id = self.new_member_id(&msg.client_id);
        let out = self.consumer.classic_join(
            input,
            &topics,
            now,
            &mut self.deadlines,
            self.settings.max_size,
            || fresh_id,
        );
        let out = out.map_err(|e| match e {
            BrokerError::GroupMaxSizeReached { max, .. } => BrokerError::GroupMaxSizeReached {
                group: self.id.clone(),
                max,
            },
            e => e,
        })?;
        self.persist(ctx);
        let _ = reply.send(Ok(JoinResult {
            generation: out.member_epoch,
            protocol_type: embedded::PROTOCOL_TYPE.to_string(),
            protocol,
            leader: String::new(),
            member_id: out.member_id,
            members: Vec::new(),
        }));
        // A static consumer-protocol member replaced by this classic one may have been the
        // last of its protocol.
        self.maybe_downgrade(ctx);
        Ok(())
    }

    /// A classic member's SyncGroup in a consumer-protocol group: its assignment, in its
    /// subscription's version of the embedded protocol. A protocol type or protocol the
    /// request names must be `consumer` and the one its join was answered with.
    pub(super) fn classic_sync_to_consumer_group(
        &mut self,
        msg: &SyncGroup,
    ) -> Result<SyncResult, BrokerError> {
        let (id, iid) = (msg.member_id.as_str(), msg.instance_id.as_deref());
        let joined = self.consumer.classic_protocol(id, iid, msg.generation)?;
        if names_other(msg.protocol_type.as_deref(), Some(embedded::PROTOCOL_TYPE))
            || names_other(msg.protocol.as_deref(), Some(joined))
        {
            return Err(BrokerError::InconsistentGroupProtocol);
        }
        let out = self.consumer.classic_sync(
            id,
            iid,
            msg.generation,
            Instant::now(),
            &mut self.deadlines,
        )?;
        Ok(SyncResult {
            protocol_type: embedded::PROTOCOL_TYPE.to_string(),
            protocol: out.protocol,
            assignment: embedded::encode_assignment(out.version, &listed(&out.assigned)),
        })
    }

    /// A classic member's Heartbeat in a consumer-protocol group.
    pub(super) fn classic_heartbeat_to_consumer_group(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        ctx: &mut Context<Self>,
    ) -> Result<(), BrokerError> {
        let (topics, _, _) = self.topics();
        let epoch = self.consumer.group_epoch;
        let rejoin = self.consumer.classic_heartbeat(
            member_id,
            instance_id,
            generation,
            &topics,
            Instant::now(),
            &mut self.deadlines,
        )?;
        if self.consumer.group_epoch != epoch {
            // Its subscribed topics changed: the new epoch is stored like any other.
            self.persist(ctx);
        }
        if rejoin {
            return Err(BrokerError::RebalanceInProgress);
        }
        Ok(())
    }

    /// A classic LeaveGroup of one member of a consumer-protocol group: by member id, or by
    /// instance id alone (an administrator removing a static member).
    pub(super) fn classic_leave_consumer_group(
        &mut self,
        id: String,
        instance: Option<String>,
        ctx: &mut Context<Self>,
    ) -> Result<(), BrokerError> {
        if self.pending.remove(&id).is_some() {
            return Ok(());
        }
        let by_instance = instance
            .as_deref()
            .and_then(|iid| self.consumer.static_member(iid))
            .map(|(id, _)| id.clone());
        let target = match (by_instance, instance) {
            (Some(owner), _) if id.is_empty() || owner == id => owner,
            (Some(_), Some(iid)) => return Err(BrokerError::FencedInstanceId(iid)),
            (None, Some(_)) if id.is_empty() => {
                return Err(BrokerError::UnknownMember(String::new()))
            }
            _ => id,
        };
        if !self.consumer.remove(&target, &mut self.deadlines) {
            return Err(BrokerError::UnknownMember(target));
        }
        self.after_consumer_removal(ctx);
        Ok(())
    }

    /// After consumer-protocol members were removed: the group may be empty now, or hold
    /// classic members only (a downgrade); its record is written either way.
    pub(super) fn after_consumer_removal(&mut self, ctx: &mut Context<Self>) {
        if self.consumer.members.is_empty() {
            self.emptied_at_ms = Some(now_ms());
        }
        self.persist(ctx);
        self.maybe_downgrade(ctx);
    }

    /// Kafka's online upgrade: a classic group of Kafka consumers becomes a consumer-protocol
    /// group whose classic members go on at their generation with what they were assigned.
    ///
    /// # Errors
    /// The group's protocol cannot change ([`BrokerError::GroupTypeMismatch`]): the policy
    /// forbids it, its members are not Kafka consumers, or no member could join it.
    pub(super) fn upgrade(&mut self, ctx: &mut Context<Self>) -> Result<(), BrokerError> {
        let consumers = self.protocol_type.as_deref() == Some(embedded::PROTOCOL_TYPE);
        let room = self.members.len() < self.settings.max_size as usize;
        if !self.settings.migration_policy.upgrades() || !consumers || !room {
            return Err(BrokerError::GroupTypeMismatch {
                group: self.id.clone(),
                actual: "classic".into(),
            });
        }
        if let Some(h) = self.rebalance_deadline.take() {
            ctx.cancel_future(h);
        }
        let (topics, _, _) = self.topics();
        let epoch = self.generation.max(1);
        let chosen = self.protocol.clone();
        let mut state = ConsumerGroupState {
            group_epoch: epoch,
            assignment_epoch: epoch,
            assignor: DEFAULT_ASSIGNOR.to_string(),
            ..ConsumerGroupState::default()
        };
        let mut deadlines = Deadlines::default();
        // Whoever holds a partition first keeps it: no partition has two holders, even if a
        // rebalance was under way.
        let mut taken: BTreeSet<(String, i32)> = BTreeSet::new();
        for (id, mut m) in std::mem::take(&mut self.members) {
            m.fail_waiting(&BrokerError::RebalanceInProgress);
            let metadata = chosen
                .as_ref()
                .and_then(|p| m.protocols.iter().find(|(n, _)| n == p))
                .into_iter()
                .chain(m.protocols.iter())
                .find_map(|(_, md)| embedded::decode_subscription(md.clone()).ok())
                .unwrap_or_default();
            let mut assigned = known(
                embedded::decode_assignment(m.assignment.clone()).unwrap_or_default(),
                &topics,
            );
            for (t, ps) in assigned.iter_mut() {
                ps.retain(|&p| taken.insert((t.clone(), p)));
            }
            assigned.retain(|_, ps| !ps.is_empty());
            let mut names = metadata.topics;
            names.sort();
            names.dedup();
            deadlines.last_seen.insert(id.clone(), m.last_seen);
            state.target.insert(id.clone(), assigned.clone());
            state.members.insert(
                id,
                ConsumerMember {
                    instance_id: m.instance_id,
                    rack_id: metadata.rack_id,
                    client_id: m.client_id,
                    client_host: m.client_host,
                    subscribed_names: names,
                    subscribed_regex: None,
                    pattern: None,
                    server_assignor: None,
                    rebalance_timeout_ms: i32::try_from(m.rebalance_timeout.as_millis())
                        .unwrap_or(i32::MAX),
                    epoch,
                    previous_epoch: epoch,
                    state: MemberState::Stable,
                    assigned,
                    revoking: Assignment::new(),
                    classic: Some(ClassicMeta {
                        session_timeout_ms: m.session_timeout.as_millis() as u64,
                        protocols: m.protocols,
                        version: metadata.version,
                    }),
                },
            );
        }
        state.subscribed_topics = state.subscribed_metadata(&topics);
        self.consumer = state;
        self.deadlines = deadlines;
        self.state = GroupState::Empty;
        self.protocol = None;
        self.protocol_type = None;
        self.leader = None;
        self.initial_delay = false;
        Ok(())
    }

    /// Kafka's online downgrade: once a consumer-protocol group's members all use the classic
    /// protocol, it becomes a classic group at their generation with their assignments, and
    /// rebalances so that a leader of theirs assigns.
    pub(super) fn maybe_downgrade(&mut self, ctx: &mut Context<Self>) {
        if !self.settings.migration_policy.downgrades()
            || self.consumer.members.is_empty()
            || self.consumer.has_consumer_members()
        {
            return;
        }
        let now = Instant::now();
        let consumer = std::mem::take(&mut self.consumer);
        let deadlines = std::mem::take(&mut self.deadlines);
        // Members at the latest epoch get REBALANCE_IN_PROGRESS on their next heartbeat and
        // rejoin; any other gets ILLEGAL_GENERATION, and rejoins too.
        self.generation = consumer
            .members
            .values()
            .map(|m| m.epoch)
            .max()
            .unwrap_or(1)
            .max(1);
        for (id, m) in consumer.members {
            let meta = m.classic.unwrap_or(ClassicMeta {
                session_timeout_ms: self.settings.min_session_timeout_ms,
                protocols: Vec::new(),
                version: 0,
            });
            let member = super::Member {
                instance_id: m.instance_id,
                client_id: m.client_id,
                client_host: m.client_host,
                session_timeout: Duration::from_millis(meta.session_timeout_ms),
                rebalance_timeout: Duration::from_millis(m.rebalance_timeout_ms.max(1) as u64),
                assignment: embedded::encode_assignment(meta.version, &listed(&m.assigned)),
                protocols: meta.protocols,
                last_seen: deadlines.last_seen.get(&id).copied().unwrap_or(now),
                join_reply: None,
                sync_reply: None,
            };
            self.members.insert(id, member);
        }
        self.protocol_type = Some(embedded::PROTOCOL_TYPE.to_string());
        self.protocol = self.select_protocol().or_else(|| {
            let first = self.members.values().next()?;
            first.protocols.first().map(|(n, _)| n.clone())
        });
        self.leader = None;
        self.state = GroupState::Stable;
        self.prepare_rebalance(ctx);
        self.persist(ctx);
    }
}
