//! Kafka's consumer group protocol (KIP-848), the coordinator's side: server-side assignment
//! and the reconciliation of each member towards it. Pure state, no actor and no I/O: the
//! group actor ([`super::group`]) owns a [`ConsumerGroupState`], feeds it heartbeats with the
//! topics that exist, and stores what it says.
//!
//! ```text
//!  member ──ConsumerGroupHeartbeat(epoch, subscription?, owned?)──► heartbeat()
//!     1. join (epoch 0), leave (-1), static leave (-2), or check the epoch it names
//!     2. a new member, a changed subscription or changed topic metadata bumps the group epoch
//!     3. group epoch > assignment epoch: the assignor computes the target assignment
//!     4. the member is reconciled towards its target (below); the answer carries its epoch
//!        and, when it changed, its assignment
//! ```
//!
//! Reconciliation keeps a partition from ever being assigned to two members at once. A member
//! whose target lacks partitions it holds is first told to give them up (its assignment without
//! them, its epoch unchanged: *unrevoked partitions*); once a heartbeat shows it no longer owns
//! them, it moves to the target epoch with the partitions of its target that nobody else holds
//! (*unreleased partitions* while some still are held by others, then *stable*). Epochs: a
//! member naming an epoch above its own, or below it other than the previous one it was given
//! (a lost answer), is fenced (FENCED_MEMBER_EPOCH) and must rejoin. A member that does not
//! give up its partitions within its rebalance timeout, or sends no heartbeat within the
//! session timeout, is removed, and its partitions go to the others.
//!
//! Assignors: `uniform` (the default: balanced, keeping each member's partitions where it
//! can) and `range` (each topic's partitions split in ranges over its subscribers in member
//! id order).
//!
//! Classic members (KIP-848's migration path): a Kafka consumer of the classic protocol in
//! such a group ([`ClassicMeta`]) is a member like the others, driven by its classic requests
//! instead of heartbeats:
//!
//! ```text
//!  JoinGroup(subscription, owned) ──► classic_join(): as a heartbeat that names what it owns
//!      (an eager consumer owns nothing when it rejoins); answered at once with its epoch as
//!      the generation, and no leader: the group assigns
//!  SyncGroup(generation = epoch) ──► classic_sync(): its assigned partitions
//!  Heartbeat(generation = epoch) ──► classic_heartbeat(): REBALANCE_IN_PROGRESS when the group
//!      epoch moved past it, it must give up partitions, or partitions it waits for are free;
//!      it then has its rebalance timeout to rejoin
//! ```
//!
//! A cooperative consumer told to give up partitions gets its assignment without them, revokes
//! them and rejoins, owning less; an eager one gives up everything before it rejoins.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::error::BrokerError;

/// Partitions by topic name.
pub type Assignment = BTreeMap<String, BTreeSet<i32>>;

/// The assignor used when no member names one.
pub const DEFAULT_ASSIGNOR: &str = "uniform";

/// The server-side assignors.
pub const ASSIGNORS: &[&str] = &["uniform", "range"];

/// The member epoch of a join.
pub const JOIN_EPOCH: i32 = 0;
/// The member epoch of a leave.
pub const LEAVE_EPOCH: i32 = -1;
/// The member epoch of a static member's temporary leave (it keeps its partitions for its
/// session timeout, for its next incarnation).
pub const STATIC_LEAVE_EPOCH: i32 = -2;

/// Where a member is in its reconciliation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum MemberState {
    /// It has its target assignment, at the assignment epoch.
    Stable,
    /// It must give up partitions before it moves on.
    UnrevokedPartitions,
    /// It is at the target epoch, waiting for partitions other members still hold.
    UnreleasedPartitions,
}

/// A member of a consumer-protocol group.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ConsumerMember {
    /// Its static instance id (`group.instance.id`).
    pub instance_id: Option<String>,
    /// Its rack.
    pub rack_id: Option<String>,
    /// The client id of its requests.
    pub client_id: String,
    /// Where its requests come from.
    pub client_host: String,
    /// The topics it subscribes to by name, sorted.
    pub subscribed_names: Vec<String>,
    /// The topics it subscribes to by pattern (Kafka's RE2/J syntax, matching whole names).
    pub subscribed_regex: Option<String>,
    /// `subscribed_regex` compiled (once per change of subscription; not stored).
    #[serde(skip)]
    pub pattern: Option<Pattern>,
    /// The server-side assignor it asks for.
    pub server_assignor: Option<String>,
    /// How long it may take to give up partitions, in ms.
    pub rebalance_timeout_ms: i32,
    /// Its epoch (-2: a static member that left for now).
    pub epoch: i32,
    /// The epoch before (a heartbeat naming it is accepted: the answer may have been lost).
    pub previous_epoch: i32,
    /// Its reconciliation state.
    pub state: MemberState,
    /// The partitions it has been given and may consume.
    pub assigned: Assignment,
    /// Partitions it must give up (it still owns them until it says otherwise).
    pub revoking: Assignment,
    /// Set for a member of the classic protocol (JoinGroup, SyncGroup, Heartbeat).
    #[serde(default)]
    pub classic: Option<ClassicMeta>,
}

/// What a classic member's JoinGroup said beyond its subscription.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ClassicMeta {
    /// Its session timeout, ms.
    pub session_timeout_ms: u64,
    /// Its assignment protocols in preference order, with their metadata: the first names
    /// the protocol its join is answered with.
    pub protocols: Vec<(String, bytes::Bytes)>,
    /// The version of its subscription (its assignment is written in it).
    pub version: i16,
}

/// A classic member's JoinGroup, its subscription read.
#[derive(Debug, Clone, Default)]
pub struct ClassicJoinInput {
    /// Its member id (empty: a static member's new incarnation; the group names it).
    pub member_id: String,
    /// Its static instance id.
    pub instance_id: Option<String>,
    /// The client id.
    pub client_id: String,
    /// The client's host.
    pub client_host: String,
    /// Its session timeout, ms.
    pub session_timeout_ms: u64,
    /// Its rebalance timeout, ms.
    pub rebalance_timeout_ms: i32,
    /// Its protocols with their metadata.
    pub protocols: Vec<(String, bytes::Bytes)>,
    /// The topics it subscribes to.
    pub subscribed_names: Vec<String>,
    /// What it owns (topics the broker no longer knows left out).
    pub owned: Assignment,
    /// Its subscription's version.
    pub version: i16,
    /// Its rack.
    pub rack_id: Option<String>,
}

/// The answer to a classic member's SyncGroup.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassicSyncOutput {
    /// Its assigned partitions.
    pub assigned: Assignment,
    /// The version to write them in.
    pub version: i16,
    /// The protocol its join was answered with.
    pub protocol: String,
}

/// A compiled subscription pattern. Equal when their sources are.
#[derive(Clone)]
pub struct Pattern(std::sync::Arc<regex::Regex>);

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

impl std::fmt::Debug for Pattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pattern({:?})", self.0.as_str())
    }
}

/// What a heartbeat brings (null fields of the request: `None`, unchanged).
#[derive(Debug, Clone, Default)]
pub struct HeartbeatInput {
    /// The member id (v1: chosen by the client; empty on a v0 join: the group chooses).
    pub member_id: String,
    /// The epoch it names.
    pub member_epoch: i32,
    /// Its static instance id.
    pub instance_id: Option<String>,
    /// Its rack.
    pub rack_id: Option<String>,
    /// Its rebalance timeout (-1: unchanged).
    pub rebalance_timeout_ms: i32,
    /// Topics by name.
    pub subscribed_names: Option<Vec<String>>,
    /// Topics by pattern.
    pub subscribed_regex: Option<String>,
    /// The assignor it asks for.
    pub server_assignor: Option<String>,
    /// What it owns now, by topic name (topics the broker no longer knows are left out).
    pub owned: Option<Assignment>,
    /// The client id.
    pub client_id: String,
    /// The client's host.
    pub client_host: String,
}

/// The answer to a heartbeat.
#[derive(Debug, Clone, PartialEq)]
pub struct HeartbeatOutput {
    /// The member id.
    pub member_id: String,
    /// Its epoch now (-1 or -2 after a leave).
    pub member_epoch: i32,
    /// Its assignment, when it changed or the member asked in full; `None` otherwise.
    pub assignment: Option<Assignment>,
}

/// A consumer-protocol group's membership and assignment.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ConsumerGroupState {
    /// Bumped by every change of membership, subscriptions or subscribed topics' partitions.
    pub group_epoch: i32,
    /// The group epoch the target assignment was computed for.
    pub assignment_epoch: i32,
    /// The assignor of the target assignment.
    pub assignor: String,
    /// Members by id.
    pub members: BTreeMap<String, ConsumerMember>,
    /// The target assignment, by member id.
    pub target: BTreeMap<String, Assignment>,
    /// The partition counts of the subscribed topics the target was computed from.
    pub subscribed_topics: BTreeMap<String, u32>,
}

/// Timers of the members (not stored: a restarted broker counts from its start).
#[derive(Debug, Default)]
pub struct Deadlines {
    /// When each member was last heard from.
    pub last_seen: BTreeMap<String, Instant>,
    /// When each member that must give up partitions has to have done so.
    pub revoke_by: BTreeMap<String, Instant>,
}

/// Kafka's group states of a consumer-protocol group.
pub fn state_name(g: &ConsumerGroupState) -> &'static str {
    if g.members.is_empty() {
        "Empty"
    } else if g.assignment_epoch < g.group_epoch {
        "Assigning"
    } else if g
        .members
        .values()
        .any(|m| m.epoch != g.assignment_epoch || m.state != MemberState::Stable)
    {
        "Reconciling"
    } else {
        "Stable"
    }
}

/// The protocol a classic member's join was answered with: the first it listed.
fn joined_protocol(m: &ConsumerMember) -> &str {
    m.classic
        .as_ref()
        .and_then(|c| c.protocols.first())
        .map_or("", |(name, _)| name.as_str())
}

fn is_subset(a: &Assignment, b: &Assignment) -> bool {
    a.iter().all(|(t, ps)| {
        ps.is_empty()
            || b.get(t)
                .is_some_and(|theirs| ps.iter().all(|p| theirs.contains(p)))
    })
}

fn intersects(a: &Assignment, b: &Assignment) -> bool {
    a.iter()
        .any(|(t, ps)| b.get(t).is_some_and(|theirs| !ps.is_disjoint(theirs)))
}

/// The topics a member subscribes to that exist, with their partition counts.
fn member_topics<'a>(
    m: &ConsumerMember,
    topics: &'a BTreeMap<String, u32>,
) -> BTreeMap<&'a str, u32> {
    // (A member restored from storage has its pattern compiled at its group's next heartbeat.)
    let compiled;
    let pattern = match (&m.pattern, &m.subscribed_regex) {
        (Some(p), _) => Some(&*p.0),
        (None, Some(source)) => {
            compiled = compile_pattern(source).ok();
            compiled.as_ref()
        }
        (None, None) => None,
    };
    topics
        .iter()
        .filter(|(name, _)| {
            m.subscribed_names.binary_search(name).is_ok()
                || pattern.is_some_and(|p| p.is_match(name))
        })
        .map(|(name, &n)| (name.as_str(), n))
        .collect()
}

/// Compiles a subscription pattern as Kafka matches it: the whole topic name.
///
/// # Errors
/// [`BrokerError::InvalidRegularExpression`].
fn compile_pattern(pattern: &str) -> Result<regex::Regex, BrokerError> {
    regex::Regex::new(&format!("^(?:{pattern})$"))
        .map_err(|e| BrokerError::InvalidRegularExpression(format!("{pattern:?}: {e}")))
}

impl ConsumerGroupState {
    /// The subscribed topics that exist, by name, with their partition counts.
    pub fn subscribed_metadata(&self, topics: &BTreeMap<String, u32>) -> BTreeMap<String, u32> {
        let mut out = BTreeMap::new();
        for m in self.members.values() {
            for (name, n) in member_topics(m, topics) {
                out.insert(name.to_string(), n);
            }
        }
        out
    }

    /// The assignor of the next target: the one most members ask for (ties: by name), or
    /// [`DEFAULT_ASSIGNOR`].
    fn choose_assignor(&self) -> String {
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for m in self.members.values() {
            if let Some(a) = m.server_assignor.as_deref() {
                *votes.entry(a).or_default() += 1;
            }
        }
        let best = votes.iter().max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)));
        best.map_or(DEFAULT_ASSIGNOR, |(name, _)| name).to_string()
    }

    /// Handles one heartbeat at `now`; `topics` are the broker's topics with their partition
    /// counts; `max_members` is `[groups] max_size`; `new_member_id` makes an id for a v0 join.
    ///
    /// # Errors
    /// Kafka's answers: UNKNOWN_MEMBER_ID, FENCED_MEMBER_EPOCH, UNRELEASED_INSTANCE_ID,
    /// FENCED_INSTANCE_ID, UNSUPPORTED_ASSIGNOR, INVALID_REGULAR_EXPRESSION,
    /// GROUP_MAX_SIZE_REACHED, INVALID_REQUEST.
    pub fn heartbeat(
        &mut self,
        req: HeartbeatInput,
        topics: &BTreeMap<String, u32>,
        now: Instant,
        deadlines: &mut Deadlines,
        max_members: u32,
        new_member_id: impl FnOnce() -> String,
    ) -> Result<HeartbeatOutput, BrokerError> {
        if let Some(a) = req.server_assignor.as_deref() {
            if !ASSIGNORS.contains(&a) {
                return Err(BrokerError::UnsupportedAssignor(a.to_string()));
            }
        }
        let pattern = match req.subscribed_regex.as_deref() {
            Some(p) if !p.is_empty() => Some(Pattern(std::sync::Arc::new(compile_pattern(p)?))),
            _ => None,
        };
        for m in self.members.values_mut() {
            if m.pattern.is_none() {
                if let Some(source) = &m.subscribed_regex {
                    m.pattern = compile_pattern(source)
                        .ok()
                        .map(|r| Pattern(std::sync::Arc::new(r)));
                }
            }
        }
        match req.member_epoch {
            LEAVE_EPOCH | STATIC_LEAVE_EPOCH => return self.leave(&req, deadlines),
            e if e < STATIC_LEAVE_EPOCH => {
                return Err(BrokerError::InvalidRequest(format!(
                    "member epoch {e} is not an epoch"
                )))
            }
            _ => {}
        }
        let joining = req.member_epoch == JOIN_EPOCH;
        let (member_id, created) =
            self.resolve_member(&req, joining, false, max_members, deadlines, new_member_id)?;
        let changed = {
            let m = self
                .members
                .get_mut(&member_id)
                .ok_or_else(|| BrokerError::UnknownMember(member_id.clone()))?;
            if !joining {
                if m.classic.is_some() {
                    // Its requests are the classic protocol's.
                    return Err(BrokerError::UnknownMember(member_id));
                }
                check_epoch(&member_id, m, req.member_epoch, req.owned.as_ref())?;
            }
            // (A classic member's new incarnation may speak this protocol.)
            let was_classic = m.classic.take().is_some();
            update_member(m, &req, pattern) || was_classic
        };
        let before = self.members.get(&member_id).map(|m| m.assigned.clone());
        let m = self.advance(
            &member_id,
            changed || created,
            req.owned.as_ref(),
            topics,
            now,
            deadlines,
        )?;
        let full = req.rebalance_timeout_ms != -1
            && (req.subscribed_names.is_some() || req.subscribed_regex.is_some())
            && req.owned.is_some();
        let send = joining || full || before.as_ref() != Some(&m.assigned);
        Ok(HeartbeatOutput {
            member_id: member_id.clone(),
            member_epoch: m.epoch,
            assignment: send.then(|| m.assigned.clone()),
        })
    }

    /// What every request of a member does once it is known: its session restarts; one group
    /// epoch bump for whatever changed (`changed`: its membership or subscription; or the
    /// subscribed topics' partitions); a new target when the epoch moved; the member
    /// reconciled towards it, given what it says it `owned`.
    fn advance(
        &mut self,
        id: &str,
        changed: bool,
        owned: Option<&Assignment>,
        topics: &BTreeMap<String, u32>,
        now: Instant,
        deadlines: &mut Deadlines,
    ) -> Result<&ConsumerMember, BrokerError> {
        deadlines.last_seen.insert(id.to_string(), now);
        let topics_changed = self.topics_changed(topics);
        if changed || topics_changed {
            self.group_epoch += 1;
        }
        if self.group_epoch > self.assignment_epoch {
            self.assignor = self.choose_assignor();
            self.target = compute_target(self, topics);
            self.assignment_epoch = self.group_epoch;
        }
        self.reconcile(id, owned, now, deadlines);
        self.members
            .get(id)
            .ok_or_else(|| BrokerError::UnknownMember(id.to_string()))
    }

    /// Takes the subscribed topics' partition counts; answers whether they changed.
    fn topics_changed(&mut self, topics: &BTreeMap<String, u32>) -> bool {
        let metadata = self.subscribed_metadata(topics);
        let changed = metadata != self.subscribed_topics;
        self.subscribed_topics = metadata;
        changed
    }

    /// A classic member's JoinGroup (see the module docs): joins or rejoins, taking what it
    /// owns into account; the answer's epoch is its generation. The caller has dealt with
    /// MEMBER_ID_REQUIRED and unknown member ids.
    ///
    /// # Errors
    /// GROUP_MAX_SIZE_REACHED.
    pub fn classic_join(
        &mut self,
        join: ClassicJoinInput,
        topics: &BTreeMap<String, u32>,
        now: Instant,
        deadlines: &mut Deadlines,
        max_members: u32,
        new_member_id: impl FnOnce() -> String,
    ) -> Result<HeartbeatOutput, BrokerError> {
        let req = HeartbeatInput {
            member_id: join.member_id,
            member_epoch: JOIN_EPOCH,
            instance_id: join.instance_id,
            rack_id: join.rack_id,
            rebalance_timeout_ms: join.rebalance_timeout_ms,
            subscribed_names: Some(join.subscribed_names),
            // A classic member subscribes by name (its client resolves patterns).
            subscribed_regex: Some(String::new()),
            server_assignor: None,
            owned: Some(join.owned),
            client_id: join.client_id,
            client_host: join.client_host,
        };
        let (member_id, created) =
            self.resolve_member(&req, true, true, max_members, deadlines, new_member_id)?;
        let changed = {
            let m = self
                .members
                .get_mut(&member_id)
                .ok_or_else(|| BrokerError::UnknownMember(member_id.clone()))?;
            m.classic = Some(ClassicMeta {
                session_timeout_ms: join.session_timeout_ms,
                protocols: join.protocols,
                version: join.version,
            });
            // Classic members take no part in choosing the assignor.
            let assignor = m.server_assignor.take().is_some();
            update_member(m, &req, None) || assignor
        };
        // It rejoined: its rebalance timeout stops (reconciling may start it again).
        deadlines.revoke_by.remove(&member_id);
        let m = self.advance(
            &member_id,
            changed || created,
            req.owned.as_ref(),
            topics,
            now,
            deadlines,
        )?;
        Ok(HeartbeatOutput {
            member_id: member_id.clone(),
            member_epoch: m.epoch,
            assignment: Some(m.assigned.clone()),
        })
    }

    /// The classic member a SyncGroup or Heartbeat names, checked: its instance id still its
    /// own, its generation its epoch.
    fn classic_member(
        &self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> Result<&ConsumerMember, BrokerError> {
        if let Some(iid) = instance_id {
            match self.static_member(iid) {
                Some((id, _)) if id != member_id => {
                    return Err(BrokerError::FencedInstanceId(iid.to_string()))
                }
                Some(_) => {}
                None => return Err(BrokerError::UnknownMember(member_id.to_string())),
            }
        }
        let m = self
            .members
            .get(member_id)
            .filter(|m| m.classic.is_some())
            .ok_or_else(|| BrokerError::UnknownMember(member_id.to_string()))?;
        if generation != m.epoch {
            return Err(BrokerError::IllegalGeneration {
                got: generation,
                current: m.epoch,
            });
        }
        Ok(m)
    }

    /// Whether member `id` waits for partitions of its target that another member holds.
    fn waiting_on_others(&self, id: &str) -> bool {
        let (Some(m), Some(target)) = (self.members.get(id), self.target.get(id)) else {
            return false;
        };
        target.iter().any(|(t, ps)| {
            ps.iter().any(|&p| {
                !m.assigned.get(t).is_some_and(|a| a.contains(&p)) && self.held_by_other(id, t, p)
            })
        })
    }

    /// Starts a classic member's rebalance timeout (to rejoin) unless it runs already.
    fn await_rejoin(&self, id: &str, now: Instant, deadlines: &mut Deadlines) {
        if let Some(m) = self.members.get(id) {
            let timeout = Duration::from_millis(m.rebalance_timeout_ms.max(1) as u64);
            deadlines
                .revoke_by
                .entry(id.to_string())
                .or_insert(now + timeout);
        }
    }

    /// A classic member's Heartbeat: `true` when it is to rejoin (REBALANCE_IN_PROGRESS): the
    /// group epoch moved past it (as it does when subscribed topics gain partitions or
    /// matching topics appear), it must give up partitions, or partitions it waits for are
    /// free.
    ///
    /// # Errors
    /// UNKNOWN_MEMBER_ID, FENCED_INSTANCE_ID, ILLEGAL_GENERATION.
    pub fn classic_heartbeat(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        topics: &BTreeMap<String, u32>,
        now: Instant,
        deadlines: &mut Deadlines,
    ) -> Result<bool, BrokerError> {
        self.classic_member(member_id, instance_id, generation)?;
        if self.topics_changed(topics) {
            self.group_epoch += 1;
        }
        let m = self.classic_member(member_id, instance_id, generation)?;
        let rejoin = m.epoch < self.group_epoch
            || m.state == MemberState::UnrevokedPartitions
            || (m.state == MemberState::UnreleasedPartitions && !self.waiting_on_others(member_id));
        deadlines.last_seen.insert(member_id.to_string(), now);
        if rejoin {
            self.await_rejoin(member_id, now, deadlines);
        }
        Ok(rejoin)
    }

    /// A classic member's SyncGroup: its assignment.
    ///
    /// # Errors
    /// UNKNOWN_MEMBER_ID, FENCED_INSTANCE_ID, ILLEGAL_GENERATION, and REBALANCE_IN_PROGRESS when
    /// the group epoch moved past it since it joined (unless it is giving up partitions: its
    /// next join comes anyway).
    pub fn classic_sync(
        &self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        now: Instant,
        deadlines: &mut Deadlines,
    ) -> Result<ClassicSyncOutput, BrokerError> {
        let m = self.classic_member(member_id, instance_id, generation)?;
        deadlines.last_seen.insert(member_id.to_string(), now);
        if self.group_epoch > m.epoch && m.state != MemberState::UnrevokedPartitions {
            self.await_rejoin(member_id, now, deadlines);
            return Err(BrokerError::RebalanceInProgress);
        }
        Ok(ClassicSyncOutput {
            assigned: m.assigned.clone(),
            version: m.classic.as_ref().map_or(0, |c| c.version),
            protocol: joined_protocol(m).to_string(),
        })
    }

    /// The protocol a classic member's join was answered with (its first), once its member
    /// id, instance id and generation are checked as [`Self::classic_sync`] checks them.
    ///
    /// # Errors
    /// Unknown or fenced member, illegal generation.
    pub fn classic_protocol(
        &self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> Result<&str, BrokerError> {
        Ok(joined_protocol(self.classic_member(
            member_id,
            instance_id,
            generation,
        )?))
    }

    /// Whether the group has members of the consumer protocol (not only classic ones).
    pub fn has_consumer_members(&self) -> bool {
        self.members.values().any(|m| m.classic.is_none())
    }

    /// The member holding static instance id `instance_id`, with its member id.
    pub fn static_member(&self, instance_id: &str) -> Option<(&String, &ConsumerMember)> {
        self.members
            .iter()
            .find(|(_, m)| m.instance_id.as_deref() == Some(instance_id))
    }

    /// The member a heartbeat is for: an existing one, a new one (a join), or a static
    /// member's new incarnation taking over from the one that left.
    fn resolve_member(
        &mut self,
        req: &HeartbeatInput,
        joining: bool,
        classic: bool,
        max_members: u32,
        deadlines: &mut Deadlines,
        new_member_id: impl FnOnce() -> String,
    ) -> Result<(String, bool), BrokerError> {
        if let Some(iid) = req.instance_id.as_deref() {
            let holder = self
                .static_member(iid)
                .map(|(id, m)| (id.clone(), m.epoch, m.classic.is_some()));
            match holder {
                Some((id, _, _)) if id == req.member_id => {}
                Some((old, epoch, held_classic)) if joining => {
                    // A classic member never says it left for now: a new incarnation of
                    // either protocol replaces it (and a classic join replaces any).
                    if epoch != STATIC_LEAVE_EPOCH && !classic && !held_classic {
                        return Err(BrokerError::UnreleasedInstanceId(iid.to_string()));
                    }
                    // The new incarnation takes the old one's place, assignment and epoch.
                    let id = if req.member_id.is_empty() {
                        new_member_id()
                    } else {
                        req.member_id.clone()
                    };
                    let mut m = self
                        .members
                        .remove(&old)
                        .ok_or_else(|| BrokerError::UnknownMember(old.clone()))?;
                    if m.epoch == STATIC_LEAVE_EPOCH {
                        m.epoch = m.previous_epoch.max(0);
                    }
                    if let Some(t) = self.target.remove(&old) {
                        self.target.insert(id.clone(), t);
                    }
                    deadlines.last_seen.remove(&old);
                    deadlines.revoke_by.remove(&old);
                    self.members.insert(id.clone(), m);
                    return Ok((id, false));
                }
                Some(_) => return Err(BrokerError::FencedInstanceId(iid.to_string())),
                None => {}
            }
        }
        if self.members.contains_key(&req.member_id) {
            return Ok((req.member_id.clone(), false));
        }
        if !joining {
            return Err(BrokerError::UnknownMember(req.member_id.clone()));
        }
        if req.subscribed_names.is_none() && req.subscribed_regex.is_none() {
            return Err(BrokerError::InvalidRequest(
                "a join names the topics it subscribes to (SubscribedTopicNames or \
                 SubscribedTopicRegex)"
                    .into(),
            ));
        }
        if self.members.len() >= max_members as usize {
            return Err(BrokerError::GroupMaxSizeReached {
                group: String::new(),
                max: max_members,
            });
        }
        let id = if req.member_id.is_empty() {
            new_member_id()
        } else {
            req.member_id.clone()
        };
        self.members.insert(
            id.clone(),
            ConsumerMember {
                instance_id: req.instance_id.clone(),
                rack_id: None,
                client_id: String::new(),
                client_host: String::new(),
                subscribed_names: Vec::new(),
                subscribed_regex: None,
                pattern: None,
                server_assignor: None,
                rebalance_timeout_ms: 300_000,
                epoch: JOIN_EPOCH,
                previous_epoch: JOIN_EPOCH,
                state: MemberState::Stable,
                assigned: Assignment::new(),
                revoking: Assignment::new(),
                classic: None,
            },
        );
        Ok((id, true))
    }

    fn leave(
        &mut self,
        req: &HeartbeatInput,
        deadlines: &mut Deadlines,
    ) -> Result<HeartbeatOutput, BrokerError> {
        let by_instance = req
            .instance_id
            .as_deref()
            .and_then(|iid| self.static_member(iid))
            .map(|(id, _)| id.clone());
        let id = match by_instance {
            Some(id) if id != req.member_id => {
                return Err(BrokerError::FencedInstanceId(
                    req.instance_id.clone().unwrap_or_default(),
                ))
            }
            _ => req.member_id.clone(),
        };
        let Some(m) = self.members.get_mut(&id) else {
            return Err(BrokerError::UnknownMember(id));
        };
        if req.member_epoch == STATIC_LEAVE_EPOCH && m.instance_id.is_some() {
            // Its partitions wait for its next incarnation until its session runs out.
            if m.epoch != STATIC_LEAVE_EPOCH {
                m.previous_epoch = m.epoch;
            }
            m.epoch = STATIC_LEAVE_EPOCH;
            deadlines.revoke_by.remove(&id);
        } else {
            self.remove(&id, deadlines);
        }
        Ok(HeartbeatOutput {
            member_id: id,
            member_epoch: req.member_epoch,
            assignment: None,
        })
    }

    /// Removes a member (it left, or its session or rebalance timeout ran out); its partitions
    /// go to the others with the next target.
    pub fn remove(&mut self, id: &str, deadlines: &mut Deadlines) -> bool {
        deadlines.last_seen.remove(id);
        deadlines.revoke_by.remove(id);
        if self.members.remove(id).is_none() {
            return false;
        }
        self.target.remove(id);
        self.group_epoch += 1;
        true
    }

    /// Members whose session (`session_timeout`; a classic member's own, from its join) or
    /// rebalance timeout ran out at `now`.
    pub fn expired(
        &self,
        now: Instant,
        session_timeout: Duration,
        deadlines: &Deadlines,
    ) -> Vec<String> {
        self.members
            .iter()
            .filter(|(id, m)| {
                // A classic member's session is the one its join asked for.
                let session = m.classic.as_ref().map_or(session_timeout, |c| {
                    Duration::from_millis(c.session_timeout_ms)
                });
                let silent = deadlines
                    .last_seen
                    .get(*id)
                    .is_none_or(|at| now.duration_since(*at) > session);
                let late = deadlines.revoke_by.get(*id).is_some_and(|by| now > *by);
                silent || late
            })
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Whether a partition is held (assigned or being given up) by a member other than `id`.
    fn held_by_other(&self, id: &str, topic: &str, partition: i32) -> bool {
        self.members.iter().any(|(other, m)| {
            other != id
                && (m
                    .assigned
                    .get(topic)
                    .is_some_and(|ps| ps.contains(&partition))
                    || m.revoking
                        .get(topic)
                        .is_some_and(|ps| ps.contains(&partition)))
        })
    }

    /// Moves member `id` towards its target (see the module docs).
    fn reconcile(
        &mut self,
        id: &str,
        owned: Option<&Assignment>,
        now: Instant,
        deadlines: &mut Deadlines,
    ) {
        let Some(m) = self.members.get(id) else {
            return;
        };
        if m.state == MemberState::UnrevokedPartitions {
            match owned {
                Some(owned) if !intersects(owned, &m.revoking) => {}
                // Still holding what it must give up.
                _ => return,
            }
        }
        let target = self.target.get(id).cloned().unwrap_or_default();
        let (epoch, state, assigned) = (m.epoch, m.state, m.assigned.clone());
        if epoch == self.assignment_epoch && state == MemberState::Stable {
            return;
        }
        // What it holds splits into what its target keeps and what it must give up.
        let (mut keep, mut revoke) = (Assignment::new(), Assignment::new());
        for (t, ps) in &assigned {
            let mine = target.get(t);
            for &p in ps {
                let side = if mine.is_some_and(|s| s.contains(&p)) {
                    &mut keep
                } else {
                    &mut revoke
                };
                side.entry(t.clone()).or_default().insert(p);
            }
        }
        // (A member that says what it owns and no longer owns them has nothing to give up.)
        let owns_revoked = owned.is_none_or(|o| intersects(o, &revoke));
        if !revoke.is_empty() && epoch < self.assignment_epoch && owns_revoked {
            let timeout = Duration::from_millis(m.rebalance_timeout_ms.max(1) as u64);
            deadlines.revoke_by.insert(id.to_string(), now + timeout);
            if let Some(m) = self.members.get_mut(id) {
                m.assigned = keep;
                m.revoking = revoke;
                m.state = MemberState::UnrevokedPartitions;
            }
            return;
        }
        deadlines.revoke_by.remove(id);
        let mut next = keep;
        let mut complete = true;
        for (t, ps) in &target {
            for &p in ps {
                if next.get(t).is_some_and(|s| s.contains(&p)) {
                    continue;
                }
                if self.held_by_other(id, t, p) {
                    complete = false;
                } else {
                    next.entry(t.clone()).or_default().insert(p);
                }
            }
        }
        let assignment_epoch = self.assignment_epoch;
        if let Some(m) = self.members.get_mut(id) {
            if m.epoch != assignment_epoch {
                m.previous_epoch = m.epoch;
                m.epoch = assignment_epoch;
            }
            m.revoking.clear();
            m.assigned = next;
            m.state = if complete {
                MemberState::Stable
            } else {
                MemberState::UnreleasedPartitions
            };
        }
    }
}

/// Kafka's epoch check of a heartbeat: above the member's epoch is fenced; below it only the
/// previous epoch is accepted, with owned partitions the member was given (its answer may have
/// been lost).
fn check_epoch(
    id: &str,
    m: &ConsumerMember,
    got: i32,
    owned: Option<&Assignment>,
) -> Result<(), BrokerError> {
    let fenced = || BrokerError::FencedMemberEpoch {
        member: id.to_string(),
        got,
        current: m.epoch,
    };
    if m.epoch == STATIC_LEAVE_EPOCH || got > m.epoch {
        return Err(fenced());
    }
    if got < m.epoch {
        let owns_given = owned.is_some_and(|o| is_subset(o, &m.assigned));
        if got != m.previous_epoch || !owns_given {
            return Err(fenced());
        }
    }
    Ok(())
}

/// Takes the non-null fields of a heartbeat; answers whether what the member consumes changed
/// (its subscription or assignor).
fn update_member(m: &mut ConsumerMember, req: &HeartbeatInput, pattern: Option<Pattern>) -> bool {
    let mut changed = false;
    if let Some(names) = &req.subscribed_names {
        let mut names = names.clone();
        names.sort();
        names.dedup();
        changed |= m.subscribed_names != names;
        m.subscribed_names = names;
    }
    if let Some(p) = &req.subscribed_regex {
        let p = (!p.is_empty()).then(|| p.clone());
        changed |= m.subscribed_regex != p;
        m.subscribed_regex = p;
        m.pattern = pattern;
    }
    if req.server_assignor.is_some() && m.server_assignor != req.server_assignor {
        changed = true;
        m.server_assignor = req.server_assignor.clone();
    }
    if req.rebalance_timeout_ms > 0 {
        m.rebalance_timeout_ms = req.rebalance_timeout_ms;
    }
    if req.rack_id.is_some() {
        m.rack_id = req.rack_id.clone();
    }
    if !req.client_id.is_empty() {
        m.client_id = req.client_id.clone();
    }
    m.client_host = req.client_host.clone();
    changed
}

/// The target assignment of `g`'s members with its assignor.
fn compute_target(
    g: &ConsumerGroupState,
    topics: &BTreeMap<String, u32>,
) -> BTreeMap<String, Assignment> {
    let subscriptions: BTreeMap<&str, BTreeMap<&str, u32>> = g
        .members
        .iter()
        .map(|(id, m)| (id.as_str(), member_topics(m, topics)))
        .collect();
    if g.assignor == "range" {
        range(&subscriptions)
    } else {
        uniform(&subscriptions, &g.target)
    }
}

/// Each topic's partitions in ranges over its subscribers, in member id order: with `n`
/// partitions and `m` subscribers, the first `n % m` get `n / m + 1`, the others `n / m`.
pub fn range(subscriptions: &BTreeMap<&str, BTreeMap<&str, u32>>) -> BTreeMap<String, Assignment> {
    let mut out: BTreeMap<String, Assignment> = subscriptions
        .keys()
        .map(|id| (id.to_string(), Assignment::new()))
        .collect();
    let mut by_topic: BTreeMap<&str, (u32, Vec<&str>)> = BTreeMap::new();
    for (id, topics) in subscriptions {
        for (&t, &n) in topics {
            by_topic.entry(t).or_insert((n, Vec::new())).1.push(id);
        }
    }
    for (t, (n, members)) in by_topic {
        let (each, extra) = (n as usize / members.len(), n as usize % members.len());
        let mut next = 0i32;
        for (i, id) in members.iter().enumerate() {
            let take = each + usize::from(i < extra);
            let ps: BTreeSet<i32> = (next..next + take as i32).collect();
            next += take as i32;
            if !ps.is_empty() {
                out.entry(id.to_string())
                    .or_default()
                    .insert(t.to_string(), ps);
            }
        }
    }
    out
}

/// A balanced assignment that keeps partitions where they were (`previous`) when it can: each
/// member keeps its previous partitions that it still subscribes to, up to its share; the rest
/// go one by one (partitions with the fewest candidates first) to the candidate with the
/// fewest; then partitions move from the fullest members to candidates with two fewer until
/// no such move is left. With identical subscriptions the counts differ by at most one.
pub fn uniform(
    subscriptions: &BTreeMap<&str, BTreeMap<&str, u32>>,
    previous: &BTreeMap<String, Assignment>,
) -> BTreeMap<String, Assignment> {
    // Every subscribed partition with its candidates.
    let mut candidates: BTreeMap<(&str, i32), Vec<&str>> = BTreeMap::new();
    for (id, topics) in subscriptions {
        for (&t, &n) in topics {
            for p in 0..n as i32 {
                candidates.entry((t, p)).or_default().push(id);
            }
        }
    }
    let members_with_topics = subscriptions.values().filter(|t| !t.is_empty()).count();
    let mut owner: BTreeMap<(&str, i32), &str> = BTreeMap::new();
    let mut counts: BTreeMap<&str, usize> = subscriptions.keys().map(|id| (*id, 0)).collect();
    if members_with_topics > 0 {
        let share = candidates.len().div_ceil(members_with_topics);
        // 1. Stickiness, up to the share.
        for (id, assignment) in previous {
            let Some((&id, _)) = subscriptions.get_key_value(id.as_str()) else {
                continue;
            };
            for (t, ps) in assignment {
                for &p in ps {
                    let Some((&key, cands)) = candidates.get_key_value(&(t.as_str(), p)) else {
                        continue;
                    };
                    if counts[id] < share && cands.contains(&id) && !owner.contains_key(&key) {
                        owner.insert(key, id);
                        *counts.entry(id).or_default() += 1;
                    }
                }
            }
        }
        // 2. The rest, most constrained first.
        let mut rest: Vec<(&(&str, i32), &Vec<&str>)> = candidates
            .iter()
            .filter(|(k, _)| !owner.contains_key(*k))
            .collect();
        rest.sort_by_key(|(k, c)| (c.len(), **k));
        for (key, cands) in rest {
            if let Some(&best) = cands.iter().min_by_key(|id| (counts[*id], **id)) {
                owner.insert(*key, best);
                *counts.entry(best).or_default() += 1;
            }
        }
        // 3. Balance: move from a member to a candidate with at least two fewer.
        let mut moves = candidates.len() * subscriptions.len();
        'balance: while moves > 0 {
            moves -= 1;
            for (key, cands) in &candidates {
                let from = owner[key];
                if let Some(&to) = cands
                    .iter()
                    .filter(|c| counts[**c] + 1 < counts[from])
                    .min_by_key(|id| (counts[*id], **id))
                {
                    owner.insert(*key, to);
                    *counts.entry(from).or_default() -= 1;
                    *counts.entry(to).or_default() += 1;
                    continue 'balance;
                }
            }
            break;
        }
    }
    let mut out: BTreeMap<String, Assignment> = subscriptions
        .keys()
        .map(|id| (id.to_string(), Assignment::new()))
        .collect();
    for ((t, p), id) in owner {
        out.entry(id.to_string())
            .or_default()
            .entry(t.to_string())
            .or_default()
            .insert(p);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn topics(list: &[(&str, u32)]) -> BTreeMap<String, u32> {
        list.iter().map(|(t, n)| (t.to_string(), *n)).collect()
    }

    fn count(a: &Assignment) -> usize {
        a.values().map(BTreeSet::len).sum()
    }

    fn parts(t: &str, ps: &[i32]) -> Assignment {
        [(t.to_string(), ps.iter().copied().collect())].into()
    }

    /// A group and the clients of its members, each owning what it was last told to own.
    struct World {
        g: ConsumerGroupState,
        d: Deadlines,
        now: Instant,
        topics: BTreeMap<String, u32>,
        owned: BTreeMap<String, Assignment>,
        epochs: BTreeMap<String, i32>,
        /// The classic members' clients: whether each is cooperative, and its subscription.
        classic: BTreeMap<String, (bool, Vec<String>)>,
    }

    impl World {
        fn new(t: &[(&str, u32)]) -> Self {
            World {
                g: ConsumerGroupState::default(),
                d: Deadlines::default(),
                now: Instant::now(),
                topics: topics(t),
                owned: BTreeMap::new(),
                epochs: BTreeMap::new(),
                classic: BTreeMap::new(),
            }
        }

        /// A classic client joins: JoinGroup, then SyncGroup (see [`World::classic_rejoin`]).
        fn classic_join(&mut self, id: &str, subscribed: &[&str], cooperative: bool) {
            let subs = subscribed.iter().map(|s| s.to_string()).collect();
            self.classic.insert(id.into(), (cooperative, subs));
            self.classic_rejoin(id);
        }

        /// A classic client's (re)join as librdkafka goes about it: an eager one gives up
        /// everything first; it joins naming what it owns, syncs, takes its assignment, and a
        /// cooperative one that lost partitions (revoked them) joins again.
        fn classic_rejoin(&mut self, id: &str) {
            let (cooperative, subs) = self.classic[id].clone();
            for _ in 0..4 {
                if !cooperative {
                    self.owned.insert(id.into(), Assignment::new());
                }
                let owned = self.owned.get(id).cloned().unwrap_or_default();
                let join = ClassicJoinInput {
                    member_id: id.into(),
                    session_timeout_ms: 10_000,
                    rebalance_timeout_ms: 60_000,
                    protocols: vec![("range".into(), bytes::Bytes::new())],
                    subscribed_names: subs.clone(),
                    owned,
                    version: 1,
                    ..ClassicJoinInput::default()
                };
                let out = self
                    .g
                    .classic_join(join, &self.topics, self.now, &mut self.d, 1000, || {
                        "new".into()
                    })
                    .expect("classic join");
                self.epochs.insert(id.into(), out.member_epoch);
                self.check_exclusive();
                match self
                    .g
                    .classic_sync(id, None, out.member_epoch, self.now, &mut self.d)
                {
                    Ok(sync) => {
                        let before = self.owned.get(id).cloned().unwrap_or_default();
                        self.owned.insert(id.into(), sync.assigned.clone());
                        self.check_exclusive();
                        if !cooperative || is_subset(&before, &sync.assigned) {
                            return;
                        }
                    }
                    Err(BrokerError::RebalanceInProgress) => {}
                    Err(e) => panic!("classic sync: {e}"),
                }
            }
        }

        /// A member's client sends its next heartbeat (of its protocol) and acts on it.
        fn tick(&mut self, id: &str) {
            if !self.classic.contains_key(id) {
                self.beat(id);
                return;
            }
            let epoch = self.epochs[id];
            match self
                .g
                .classic_heartbeat(id, None, epoch, &self.topics, self.now, &mut self.d)
            {
                Ok(false) => {}
                Ok(true) | Err(BrokerError::IllegalGeneration { .. }) => self.classic_rejoin(id),
                Err(e) => panic!("classic heartbeat of {id}: {e}"),
            }
        }

        fn send(&mut self, req: HeartbeatInput) -> Result<HeartbeatOutput, BrokerError> {
            let id = req.member_id.clone();
            let out = self
                .g
                .heartbeat(req, &self.topics, self.now, &mut self.d, 1000, || {
                    "new".into()
                });
            if let Ok(o) = &out {
                self.epochs.insert(id, o.member_epoch);
                if let Some(a) = &o.assignment {
                    // A client takes what it is given (and gives up the rest).
                    self.owned.insert(o.member_id.clone(), a.clone());
                }
            }
            self.check_exclusive();
            out
        }

        /// A heartbeat as a client that does not take what it is given would send it.
        fn raw(
            &mut self,
            req: HeartbeatInput,
            max_members: u32,
        ) -> Result<HeartbeatOutput, BrokerError> {
            let out = self.g.heartbeat(
                req,
                &self.topics,
                self.now,
                &mut self.d,
                max_members,
                String::new,
            );
            self.check_exclusive();
            out
        }

        fn join(&mut self, id: &str, subscribed: &[&str]) -> HeartbeatOutput {
            self.send(HeartbeatInput {
                member_id: id.into(),
                member_epoch: 0,
                rebalance_timeout_ms: 60_000,
                subscribed_names: Some(subscribed.iter().map(|s| s.to_string()).collect()),
                owned: Some(Assignment::new()),
                ..HeartbeatInput::default()
            })
            .expect("join")
        }

        fn beat(&mut self, id: &str) -> HeartbeatOutput {
            let req = HeartbeatInput {
                member_id: id.into(),
                member_epoch: self.epochs[id],
                owned: Some(self.owned.get(id).cloned().unwrap_or_default()),
                ..HeartbeatInput::default()
            };
            self.send(req).expect("heartbeat")
        }

        fn leave(&mut self, id: &str) {
            if self.classic.remove(id).is_some() {
                // LeaveGroup.
                assert!(self.g.remove(id, &mut self.d));
                self.owned.remove(id);
                return;
            }
            let req = HeartbeatInput {
                member_id: id.into(),
                member_epoch: LEAVE_EPOCH,
                ..HeartbeatInput::default()
            };
            self.send(req).expect("leave");
            self.owned.remove(id);
        }

        /// No partition is held by two members (in the group's view or the clients').
        fn check_exclusive(&self) {
            let mut holders: BTreeMap<(String, i32), String> = BTreeMap::new();
            for (id, m) in &self.g.members {
                for a in [&m.assigned, &m.revoking] {
                    for (t, ps) in a {
                        for p in ps {
                            let prev = holders.insert((t.clone(), *p), id.clone());
                            assert!(
                                prev.is_none() || prev.as_deref() == Some(id),
                                "{t}-{p} held by {prev:?} and {id}"
                            );
                        }
                    }
                }
            }
            let mut owners: BTreeMap<(String, i32), &str> = BTreeMap::new();
            for (id, a) in &self.owned {
                for (t, ps) in a {
                    for p in ps {
                        let prev = owners.insert((t.clone(), *p), id);
                        assert!(prev.is_none(), "clients {prev:?} and {id} both own {t}-{p}");
                    }
                }
            }
        }

        fn settle(&mut self, rounds: usize) {
            for _ in 0..rounds {
                let ids: Vec<String> = self.g.members.keys().cloned().collect();
                for id in ids {
                    self.tick(&id);
                }
            }
        }

        fn counts(&self) -> Vec<usize> {
            self.g
                .members
                .values()
                .map(|m| count(&m.assigned))
                .collect()
        }
    }

    #[test]
    fn a_classic_member_shares_the_group_through_joins_syncs_and_heartbeats() {
        let mut w = World::new(&[("t", 4)]);
        // An eager classic consumer alone: everything, its epoch as its generation.
        w.classic_join("c", &["t"], false);
        assert_eq!(w.owned["c"], parts("t", &[0, 1, 2, 3]));
        let generation = w.epochs["c"];
        let (topics, now) = (w.topics.clone(), w.now);
        let beat = |w: &mut World, id: &str, generation: i32| {
            w.g.classic_heartbeat(id, None, generation, &topics, now, &mut w.d)
        };
        assert!(matches!(
            beat(&mut w, "c", generation + 1),
            Err(BrokerError::IllegalGeneration { .. })
        ));
        assert!(matches!(
            beat(&mut w, "nobody", generation),
            Err(BrokerError::UnknownMember(_))
        ));
        assert_eq!(beat(&mut w, "c", generation), Ok(false));
        // Its requests are the classic protocol's: a consumer-protocol heartbeat naming it is
        // not its own.
        let stray = HeartbeatInput {
            member_id: "c".into(),
            member_epoch: generation,
            ..HeartbeatInput::default()
        };
        assert!(matches!(
            w.raw(stray, 10),
            Err(BrokerError::UnknownMember(_))
        ));
        // A consumer-protocol member joins: nothing for it while c holds everything.
        let b = w.join("b", &["t"]);
        assert_eq!(b.assignment, Some(Assignment::new()));
        // c is told to rejoin; a sync at its old generation is refused the same way.
        assert_eq!(beat(&mut w, "c", generation), Ok(true));
        assert!(matches!(
            w.g.classic_sync("c", None, generation, now, &mut w.d),
            Err(BrokerError::RebalanceInProgress)
        ));
        // It rejoins (having given everything up), gets half; b then gets the rest.
        w.classic_rejoin("c");
        assert_eq!(count(&w.owned["c"]), 2);
        assert!(w.epochs["c"] > generation);
        let rejoined = w.epochs["c"];
        assert_eq!(beat(&mut w, "c", rejoined), Ok(false));
        assert_eq!(count(&w.beat("b").assignment.expect("b's half")), 2);
        assert_eq!(state_name(&w.g), "Stable");
        // A classic member's session is the one it asked for (10 s), not the group's.
        let later = w.now + Duration::from_secs(11);
        assert_eq!(
            w.g.expired(later, Duration::from_secs(45), &w.d),
            vec!["c".to_string()]
        );
    }

    #[test]
    fn a_cooperative_classic_member_gives_up_partitions_before_they_move() {
        let mut w = World::new(&[("t", 4)]);
        w.classic_join("c", &["t"], true);
        let b = w.join("b", &["t"]);
        assert_eq!(b.assignment, Some(Assignment::new()));
        let (generation, now) = (w.epochs["c"], w.now);
        // c rejoins still owning all four: it is to give up two, at its generation.
        let join = ClassicJoinInput {
            member_id: "c".into(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 60_000,
            protocols: vec![("cooperative-sticky".into(), bytes::Bytes::new())],
            subscribed_names: vec!["t".into()],
            owned: parts("t", &[0, 1, 2, 3]),
            version: 3,
            ..ClassicJoinInput::default()
        };
        let out =
            w.g.classic_join(join, &w.topics, now, &mut w.d, 10, String::new)
                .expect("rejoin");
        assert_eq!(out.member_epoch, generation);
        assert_eq!(w.g.members["c"].state, MemberState::UnrevokedPartitions);
        let sync =
            w.g.classic_sync("c", None, generation, now, &mut w.d)
                .expect("sync while revoking");
        assert_eq!(
            (count(&sync.assigned), sync.version, sync.protocol.as_str()),
            (2, 3, "cooperative-sticky")
        );
        // b still waits; the two c gives up go to b once c rejoins without them.
        assert_eq!(count(&w.beat("b").assignment.unwrap_or_default()), 0);
        w.owned.insert("c".into(), sync.assigned);
        w.classic_rejoin("c");
        assert!(w.epochs["c"] > generation);
        assert_eq!(count(&w.beat("b").assignment.expect("b's half")), 2);
        assert_eq!(state_name(&w.g), "Stable");
    }

    #[test]
    fn a_second_member_gets_partitions_only_after_the_first_gave_them_up() {
        let mut w = World::new(&[("t", 4)]);
        let a = w.join("a", &["t"]);
        assert_eq!(
            (a.member_epoch, a.assignment),
            (1, Some(parts("t", &[0, 1, 2, 3])))
        );
        let b = w.join("b", &["t"]);
        // b is at the new epoch, but a still holds everything.
        assert_eq!(b.member_epoch, 2);
        assert_eq!(b.assignment, Some(Assignment::new()));
        assert_eq!(state_name(&w.g), "Reconciling");
        // a is told to keep half (its epoch unchanged until it has given up the rest).
        let a = w.beat("a");
        assert_eq!(a.member_epoch, 1);
        let kept = a.assignment.expect("a's assignment changed");
        assert_eq!(count(&kept), 2);
        assert_eq!(w.g.members["a"].state, MemberState::UnrevokedPartitions);
        // Its next heartbeat (owning only the kept half) moves it to epoch 2.
        let a = w.beat("a");
        assert_eq!((a.member_epoch, a.assignment), (2, None));
        let b = w.beat("b");
        assert_eq!(b.member_epoch, 2);
        let got = b.assignment.expect("b's partitions");
        assert_eq!(count(&got), 2);
        assert!(!intersects(&got, &kept));
        assert_eq!(state_name(&w.g), "Stable");
    }

    #[test]
    fn a_member_that_does_not_give_up_its_partitions_keeps_the_others_waiting_until_its_timeout() {
        let mut w = World::new(&[("t", 2)]);
        w.join("a", &["t"]);
        w.join("b", &["t"]);
        // a's client answers, but does not let go: it keeps reporting both partitions.
        let out = w
            .raw(
                HeartbeatInput {
                    member_id: "a".into(),
                    member_epoch: 1,
                    owned: Some(parts("t", &[0, 1])),
                    ..HeartbeatInput::default()
                },
                1000,
            )
            .unwrap();
        assert_eq!(out.member_epoch, 1);
        assert_eq!(w.g.members["a"].state, MemberState::UnrevokedPartitions);
        for _ in 0..3 {
            let b = w.beat("b");
            assert_eq!(count(&w.g.members["b"].assigned), 0, "{b:?}");
        }
        // Its rebalance timeout (60 s) runs out: it is removed and b gets everything.
        let later = w.now + Duration::from_secs(61);
        assert_eq!(
            w.g.expired(later, Duration::from_secs(3600), &w.d),
            vec!["a"]
        );
        w.g.remove("a", &mut w.d);
        w.owned.remove("a");
        let b = w.beat("b");
        assert_eq!(b.assignment, Some(parts("t", &[0, 1])));
    }

    #[test]
    fn epochs_are_checked_and_a_lost_answer_is_forgiven() {
        let mut w = World::new(&[("t", 2)]);
        w.join("a", &["t"]);
        let bad = |w: &mut World, epoch: i32, owned: Assignment| {
            w.raw(
                HeartbeatInput {
                    member_id: "a".into(),
                    member_epoch: epoch,
                    owned: Some(owned),
                    ..HeartbeatInput::default()
                },
                1000,
            )
        };
        assert!(matches!(
            bad(&mut w, 2, parts("t", &[0, 1])),
            Err(BrokerError::FencedMemberEpoch {
                got: 2,
                current: 1,
                ..
            })
        ));
        w.join("b", &["t"]);
        w.settle(3);
        assert_eq!(w.g.members["a"].epoch, 2);
        // The answer that gave epoch 2 was lost: epoch 1 with what it was given is accepted.
        let kept = w.g.members["a"].assigned.clone();
        assert!(bad(&mut w, 1, kept).is_ok());
        // Epoch 1 claiming partitions it was not given is fenced.
        assert!(matches!(
            bad(&mut w, 1, parts("t", &[0, 1])),
            Err(BrokerError::FencedMemberEpoch { .. })
        ));
        assert!(matches!(
            bad(&mut w, 0, Assignment::new()),
            Ok(HeartbeatOutput {
                member_epoch: 2,
                assignment: Some(_),
                ..
            })
        ));
        let unknown = w.raw(
            HeartbeatInput {
                member_id: "zz".into(),
                member_epoch: 3,
                ..HeartbeatInput::default()
            },
            1000,
        );
        assert!(matches!(unknown, Err(BrokerError::UnknownMember(_))));
    }

    #[test]
    fn a_static_member_comes_back_to_its_partitions_without_a_rebalance() {
        let mut w = World::new(&[("t", 4)]);
        let join = |w: &mut World, id: &str, iid: &str| {
            w.send(HeartbeatInput {
                member_id: id.into(),
                member_epoch: 0,
                instance_id: Some(iid.into()),
                rebalance_timeout_ms: 60_000,
                subscribed_names: Some(vec!["t".into()]),
                owned: Some(Assignment::new()),
                ..HeartbeatInput::default()
            })
        };
        join(&mut w, "a1", "a").unwrap();
        join(&mut w, "b1", "b").unwrap();
        w.settle(3);
        let before = w.g.members["a1"].assigned.clone();
        let epoch = w.g.group_epoch;
        w.send(HeartbeatInput {
            member_id: "a1".into(),
            member_epoch: STATIC_LEAVE_EPOCH,
            instance_id: Some("a".into()),
            ..HeartbeatInput::default()
        })
        .unwrap();
        w.owned.remove("a1");
        assert_eq!(w.g.group_epoch, epoch, "a temporary leave is no change");
        // Another live member with b's instance id is refused.
        assert!(matches!(
            join(&mut w, "b2", "b"),
            Err(BrokerError::UnreleasedInstanceId(_))
        ));
        let back = join(&mut w, "a2", "a").unwrap();
        assert_eq!(back.assignment, Some(before));
        assert_eq!(w.g.group_epoch, epoch);
        assert!(!w.g.members.contains_key("a1"));
        // The old incarnation is fenced.
        assert!(matches!(
            w.raw(
                HeartbeatInput {
                    member_id: "a1".into(),
                    member_epoch: epoch,
                    instance_id: Some("a".into()),
                    ..HeartbeatInput::default()
                },
                1000
            ),
            Err(BrokerError::FencedInstanceId(_))
        ));
    }

    #[test]
    fn new_partitions_and_matching_topics_are_assigned() {
        let mut w = World::new(&[("orders", 2), ("other", 1)]);
        w.send(HeartbeatInput {
            member_id: "a".into(),
            member_epoch: 0,
            subscribed_regex: Some("ord.*".into()),
            owned: Some(Assignment::new()),
            ..HeartbeatInput::default()
        })
        .unwrap();
        assert_eq!(w.owned["a"], parts("orders", &[0, 1]));
        // As restored after a restart: the pattern is compiled again from its source.
        let stored = rmp_serde::to_vec_named(&w.g).expect("encode");
        w.g = rmp_serde::from_slice(&stored).expect("decode");
        assert!(w.g.members["a"].pattern.is_none());
        w.topics.insert("orders".into(), 3);
        w.topics.insert("ordinals".into(), 1);
        w.topics.insert("xorders".into(), 1);
        let a = w.beat("a");
        assert!(w.g.members["a"].pattern.is_some());
        let mut want = parts("orders", &[0, 1, 2]);
        want.extend(parts("ordinals", &[0]));
        assert_eq!(a.assignment, Some(want));
        // Bad patterns and assignors are refused.
        let refused = |w: &mut World, regex: &str, assignor: Option<&str>| {
            w.raw(
                HeartbeatInput {
                    member_id: "z".into(),
                    member_epoch: 0,
                    subscribed_regex: Some(regex.into()),
                    server_assignor: assignor.map(str::to_string),
                    ..HeartbeatInput::default()
                },
                1000,
            )
        };
        assert!(matches!(
            refused(&mut w, "(", None),
            Err(BrokerError::InvalidRegularExpression(_))
        ));
        assert!(matches!(
            refused(&mut w, "x", Some("sticky")),
            Err(BrokerError::UnsupportedAssignor(_))
        ));
    }

    #[test]
    fn a_full_group_refuses_a_new_member_and_a_join_without_a_subscription_is_invalid() {
        let mut w = World::new(&[("t", 1)]);
        w.join("a", &["t"]);
        let r = w.raw(
            HeartbeatInput {
                member_id: "b".into(),
                member_epoch: 0,
                subscribed_names: Some(vec!["t".into()]),
                ..HeartbeatInput::default()
            },
            1,
        );
        assert!(matches!(
            r,
            Err(BrokerError::GroupMaxSizeReached { max: 1, .. })
        ));
        let r = w.raw(
            HeartbeatInput {
                member_id: "c".into(),
                member_epoch: 0,
                ..HeartbeatInput::default()
            },
            10,
        );
        assert!(matches!(r, Err(BrokerError::InvalidRequest(_))));
    }

    #[test]
    fn range_and_uniform_assignments() {
        let subs: BTreeMap<&str, BTreeMap<&str, u32>> = [
            ("a", [("x", 3), ("y", 2)].into()),
            ("b", [("x", 3)].into()),
            ("c", [("y", 2)].into()),
        ]
        .into();
        let r = range(&subs);
        assert_eq!(r["a"], {
            let mut a = parts("x", &[0, 1]);
            a.extend(parts("y", &[0]));
            a
        });
        assert_eq!(r["b"], parts("x", &[2]));
        assert_eq!(r["c"], parts("y", &[1]));
        let u = uniform(&subs, &BTreeMap::new());
        let sizes: Vec<usize> = u.values().map(count).collect();
        assert_eq!(sizes.iter().sum::<usize>(), 5);
        assert!(sizes.iter().all(|&n| (1..=2).contains(&n)), "{u:?}");
        // Sticky: a member that joins takes partitions from the others, who keep the rest.
        let two: BTreeMap<&str, BTreeMap<&str, u32>> =
            [("a", [("x", 6)].into()), ("b", [("x", 6)].into())].into();
        let before = uniform(&two, &BTreeMap::new());
        let three: BTreeMap<&str, BTreeMap<&str, u32>> = [
            ("a", [("x", 6)].into()),
            ("b", [("x", 6)].into()),
            ("c", [("x", 6)].into()),
        ]
        .into();
        let after = uniform(&three, &before);
        for id in ["a", "b"] {
            assert_eq!(count(&after[id]), 2);
            assert!(is_subset(&after[id], &before[id]), "{id} kept its own");
        }
    }

    #[derive(Debug, Clone)]
    enum Step {
        Join(u8, bool),
        /// A classic member joins: subscribing to both topics or one, cooperative or eager.
        ClassicJoin(u8, bool, bool),
        Beat(u8),
        Leave(u8),
        AddPartition,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (0u8..5, any::<bool>()).prop_map(|(m, both)| Step::Join(m, both)),
            (0u8..5, any::<bool>(), any::<bool>())
                .prop_map(|(m, both, coop)| Step::ClassicJoin(m, both, coop)),
            (0u8..5).prop_map(Step::Beat),
            (0u8..5).prop_map(Step::Beat),
            (0u8..5).prop_map(Step::Beat),
            (0u8..5).prop_map(Step::Leave),
            Just(Step::AddPartition),
        ]
    }

    proptest! {
        /// Whatever members do, of either protocol (classic ones eager or cooperative), no
        /// partition is ever held by two of them (checked after every request), and once they
        /// only send heartbeats, every member reaches its target: the
        /// group is Stable, every subscribed partition is someone's, and with the same
        /// subscriptions the counts differ by at most one.
        #[test]
        fn no_partition_is_ever_held_twice_and_the_group_settles(
            steps in proptest::collection::vec(step(), 1..60),
            assignor in prop_oneof![Just("uniform"), Just("range")],
        ) {
            let mut w = World::new(&[("x", 5), ("y", 3)]);
            for s in steps {
                match s {
                    Step::Join(m, both) => {
                        let id = format!("m{m}");
                        if w.g.members.contains_key(&id) {
                            continue;
                        }
                        let subs: &[&str] = if both { &["x", "y"] } else { &["x"] };
                        w.send(HeartbeatInput {
                            member_id: id,
                            member_epoch: 0,
                            rebalance_timeout_ms: 60_000,
                            subscribed_names: Some(subs.iter().map(|s| s.to_string()).collect()),
                            server_assignor: Some(assignor.to_string()),
                            owned: Some(Assignment::new()),
                            ..HeartbeatInput::default()
                        }).unwrap();
                    }
                    Step::ClassicJoin(m, both, cooperative) => {
                        let id = format!("m{m}");
                        if w.g.members.contains_key(&id) {
                            continue;
                        }
                        let subs: &[&str] = if both { &["x", "y"] } else { &["x"] };
                        w.classic_join(&id, subs, cooperative);
                    }
                    Step::Beat(m) => {
                        let id = format!("m{m}");
                        if w.g.members.contains_key(&id) {
                            w.tick(&id);
                        }
                    }
                    Step::Leave(m) => {
                        let id = format!("m{m}");
                        if w.g.members.contains_key(&id) {
                            w.leave(&id);
                        }
                    }
                    Step::AddPartition => {
                        *w.topics.get_mut("x").unwrap() += 1;
                    }
                }
            }
            w.settle(6);
            if !w.g.members.is_empty() {
                prop_assert_eq!(state_name(&w.g), "Stable");
                let x = w.topics["x"] as usize;
                let any_y = w.g.members.values().any(|m| m.subscribed_names.len() == 2);
                let total: usize = w.counts().iter().sum();
                prop_assert_eq!(total, x + if any_y { 3 } else { 0 });
                for (id, m) in &w.g.members {
                    prop_assert_eq!(&w.owned[id], &m.assigned);
                }
                let same = w.g.members.values().all(|m| m.subscribed_names.len() == 1)
                    || w.g.members.values().all(|m| m.subscribed_names.len() == 2);
                if same && assignor == "uniform" {
                    let c = w.counts();
                    prop_assert!(c.iter().max().unwrap() - c.iter().min().unwrap() <= 1, "{:?}", c);
                }
            }
        }
    }
}
