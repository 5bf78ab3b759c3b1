//! The broker's vocabulary: the values its API takes and returns, shared by the broker, the
//! client and the native protocol. Plain data, no actors: a program that only talks to a
//! remote broker builds this module without the actor system (`--no-default-features`).

use std::time::Duration;

use bytes::Bytes;
use weir_storage::{Batch, CommittedOffset, LogOffsets, Offset, TopicPartition};

use crate::config::TopicConfig;

/// How a publish is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum Acks {
    /// Fire and forget: answered at once, before the append (Kafka `acks=0`).
    None,
    /// After the append returned (Kafka `acks=1`).
    Leader,
    /// After the append is durable under the topic's durability (Kafka `acks=all`).
    /// Weir is one node, so this is the same moment as `Leader`; both wait for the log.
    #[default]
    All,
}

/// What a publish got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PublishAck {
    /// Offset of the first record of the first batch (-1 under `Acks::None`).
    pub base_offset: Offset,
    /// The log start offset after the append.
    pub log_start_offset: Offset,
    /// The time the broker stamped the batches with, on a `LogAppendTime` topic; else -1
    /// (also for a duplicate, as in Kafka). Absent from older brokers' frames.
    #[serde(default = "no_append_time")]
    pub log_append_time_ms: i64,
}

fn no_append_time() -> i64 {
    -1
}

/// What a fetch returns.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct FetchResult {
    /// Whole batches; the first may start before the requested offset.
    pub batches: Vec<Batch>,
    /// The log end offset when the read ran.
    pub high_watermark: Offset,
    /// The log start offset when the read ran.
    pub log_start_offset: Offset,
    /// The last stable offset: below it every transaction is decided (the high watermark
    /// when none is open). A `read_committed` fetch returns no batch at or above it.
    /// Absent from older brokers' frames.
    #[serde(default = "unknown_offset")]
    pub last_stable_offset: Offset,
    /// For a `read_committed` fetch: the aborted transactions the batches may hold (a reader
    /// skips the producer's transactional batches from the first offset up to its abort
    /// marker). Empty for `read_uncommitted`.
    #[serde(default)]
    pub aborted: Vec<AbortedTxn>,
}

fn unknown_offset() -> Offset {
    -1
}

/// A producer a partition remembers (Kafka's DescribeProducers): its last write and any
/// transaction it has open there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ActiveProducer {
    /// The producer id.
    pub producer_id: i64,
    /// The epoch of its last write (or transaction marker).
    pub epoch: i16,
    /// The sequence number of its last record written, -1 when none is remembered.
    pub last_sequence: i32,
    /// When its last batch was written (the broker's clock; for a batch replayed from the log
    /// after a restart, the batch's max timestamp), -1 when unknown.
    pub last_timestamp_ms: i64,
    /// The first offset of its open transaction in the partition.
    pub current_txn_start_offset: Option<Offset>,
}

/// One aborted transaction in one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AbortedTxn {
    /// The producer.
    pub producer_id: i64,
    /// The offset of its first batch in the partition.
    pub first_offset: Offset,
    /// The offset of its abort marker.
    pub last_offset: Offset,
}

/// Drops the batches of aborted transactions from a `read_committed` answer, as Kafka's
/// consumers do: a transaction listed in [`FetchResult::aborted`] applies to its producer's
/// transactional batches from its first offset until that producer's abort marker. Control
/// batches (markers) hold no records to deliver.
#[derive(Debug, Default)]
pub struct AbortedFilter {
    /// Not reached yet, the lowest first offset last.
    pending: Vec<AbortedTxn>,
    /// Producers inside an aborted transaction.
    active: std::collections::HashSet<i64>,
}

impl AbortedFilter {
    /// A filter for one answer's batches, given in offset order to [`AbortedFilter::keep`].
    pub fn new(aborted: &[AbortedTxn]) -> Self {
        let mut pending = aborted.to_vec();
        pending.sort_by_key(|a| std::cmp::Reverse(a.first_offset));
        AbortedFilter {
            pending,
            active: std::collections::HashSet::new(),
        }
    }

    /// Whether `batch` holds records to deliver.
    pub fn keep(&mut self, batch: &Batch) -> bool {
        while let Some(a) = self.pending.last() {
            if a.first_offset > batch.last_offset() {
                break;
            }
            self.active.insert(a.producer_id);
            self.pending.pop();
        }
        if batch.is_control() {
            if weir_storage::TxnMarker::of(batch).is_some_and(|m| !m.commit) {
                self.active.remove(&batch.producer_id());
            }
            return false;
        }
        !(batch.is_transactional() && self.active.contains(&batch.producer_id()))
    }
}

/// Which records a fetch may return (Kafka's `isolation.level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum Isolation {
    /// Everything written, open and aborted transactions included, up to the high watermark.
    ReadUncommitted,
    /// Only decided data: up to the last stable offset, with the aborted transactions listed.
    #[default]
    ReadCommitted,
}

/// Which offset a list-offsets lookup finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum OffsetSpec {
    /// The log start offset.
    Earliest,
    /// The log end offset.
    Latest,
    /// The first offset whose timestamp is at or after this (ms).
    Timestamp(i64),
    /// The first record with the largest timestamp (Kafka's `MAX_TIMESTAMP`), below the last
    /// stable offset under `ReadCommitted`.
    MaxTimestamp,
}

/// A topic as `BrokerHandle::describe_topic` reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TopicDescription {
    /// The name.
    pub name: String,
    /// The topic id.
    pub id: u128,
    /// Its settings.
    pub config: TopicConfig,
    /// Offsets and size per partition, by partition number.
    pub partitions: Vec<LogOffsets>,
}

/// Where `BrokerHandle::reset_offsets` moves a group's offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ResetTo {
    /// The log start.
    Earliest,
    /// The log end.
    Latest,
    /// The first offset at or after this timestamp (ms).
    Timestamp(i64),
    /// This offset, clamped to the log.
    Offset(Offset),
}

/// The protocol type of Weir's own consumers, whose assignment the broker computes.
pub const WEIR_PROTOCOL_TYPE: &str = "weir";

/// Where a group is in its life cycle (Kafka's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum GroupState {
    /// No members (it may still hold committed offsets).
    Empty,
    /// Waiting for members to (re)join.
    PreparingRebalance,
    /// Joined; waiting for the leader's assignment.
    CompletingRebalance,
    /// Every member has its assignment.
    Stable,
    /// Deleted.
    Dead,
}

impl GroupState {
    /// Kafka's name of the state.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// A member in the leader's JoinGroup answer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct JoinedMember {
    /// The member id.
    pub member_id: String,
    /// Its static instance id.
    pub instance_id: Option<String>,
    /// Its metadata for the chosen protocol.
    pub metadata: Bytes,
}

/// The answer to a join, once the join phase completes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct JoinResult {
    /// The new generation.
    pub generation: i32,
    /// The group's protocol type.
    pub protocol_type: String,
    /// The chosen assignment protocol.
    pub protocol: String,
    /// The leader's member id.
    pub leader: String,
    /// This member's id.
    pub member_id: String,
    /// Every member with its metadata, for the leader only (empty for the others, and for
    /// `weir` groups where the broker assigns).
    pub members: Vec<JoinedMember>,
}

/// Joins (or rejoins) the group.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(
    feature = "broker",
    derive(actix::Message),
    rtype(result = "Result<JoinResult, super::error::BrokerError>")
)]
pub struct JoinGroup {
    /// Empty for a new member.
    pub member_id: String,
    /// Static membership id.
    pub instance_id: Option<String>,
    /// The client's id (prefix of new member ids).
    pub client_id: String,
    /// The client's address, for describe.
    pub client_host: String,
    /// Session timeout.
    pub session_timeout: Duration,
    /// How long the group waits for this member to rejoin in a rebalance.
    pub rebalance_timeout: Duration,
    /// `consumer` for Kafka clients, [`WEIR_PROTOCOL_TYPE`] for Weir's.
    pub protocol_type: String,
    /// Supported protocols in preference order, each with its metadata.
    pub protocols: Vec<(String, Bytes)>,
    /// Answer a new dynamic member with [`super::BrokerError::MemberIdRequired`] (JoinGroup v4+;
    /// a static member, known by its instance id, joins at once).
    pub require_known_member_id: bool,
}

/// A group member as a request names it: its member id and, for a static member (Kafka's
/// `group.instance.id`), its instance id. A `&str` is a member without one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberRef<'a> {
    /// The member id the coordinator gave it.
    pub id: &'a str,
    /// A static member's instance id.
    pub instance: Option<&'a str>,
}

impl<'a> From<&'a str> for MemberRef<'a> {
    fn from(id: &'a str) -> Self {
        MemberRef { id, instance: None }
    }
}

impl<'a> From<&'a String> for MemberRef<'a> {
    fn from(id: &'a String) -> Self {
        MemberRef::from(id.as_str())
    }
}

/// What a member gets from SyncGroup.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SyncResult {
    /// The group's protocol type.
    pub protocol_type: String,
    /// The chosen protocol.
    pub protocol: String,
    /// The member's assignment: opaque for Kafka clients; for `weir` groups a MessagePack
    /// list of `(topic, partitions)`.
    pub assignment: Bytes,
}

/// A member as a group description reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MemberDescription {
    /// The member id.
    pub member_id: String,
    /// Its static instance id.
    pub instance_id: Option<String>,
    /// The client id.
    pub client_id: String,
    /// The client's address.
    pub client_host: String,
    /// Its metadata for the chosen protocol.
    pub metadata: Bytes,
    /// Its current assignment.
    pub assignment: Bytes,
}

/// A group as `BrokerHandle::describe_group` reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GroupDescription {
    /// The group id.
    pub group_id: String,
    /// The state.
    pub state: GroupState,
    /// The current generation.
    pub generation: i32,
    /// The protocol type (empty with no members).
    pub protocol_type: String,
    /// The chosen protocol (empty unless stable or completing).
    pub protocol: String,
    /// The leader (empty with no members).
    pub leader: String,
    /// The members.
    pub members: Vec<MemberDescription>,
    /// Committed offsets.
    pub offsets: Vec<(TopicPartition, CommittedOffset)>,
    /// For a group of Kafka's consumer protocol (KIP-848): its epochs, assignor and members
    /// (`members` above are the classic protocol's). `None` for a classic group.
    #[serde(default)]
    pub consumer: Option<ConsumerGroupDescription>,
}

/// A group of Kafka's consumer protocol, as `BrokerHandle::describe_group` reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ConsumerGroupDescription {
    /// Kafka's state name: `Empty`, `Assigning`, `Reconciling` or `Stable`.
    pub state: String,
    /// The group epoch.
    pub group_epoch: i32,
    /// The epoch of the target assignment.
    pub assignment_epoch: i32,
    /// The assignor of the target assignment.
    pub assignor: String,
    /// The members, by member id.
    pub members: Vec<ConsumerMemberDescription>,
}

/// Partitions of one topic: its name, its id, the partitions.
pub type TopicPartitions = (String, u128, Vec<i32>);

/// A member of a consumer-protocol group.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ConsumerMemberDescription {
    /// The member id.
    pub member_id: String,
    /// Its static instance id.
    pub instance_id: Option<String>,
    /// Its rack.
    pub rack_id: Option<String>,
    /// Its epoch.
    pub member_epoch: i32,
    /// The client id.
    pub client_id: String,
    /// The client's address.
    pub client_host: String,
    /// Topics it subscribes to by name.
    pub subscribed_topic_names: Vec<String>,
    /// Topics it subscribes to by pattern.
    pub subscribed_topic_regex: Option<String>,
    /// What it has been given.
    pub assignment: Vec<TopicPartitions>,
    /// What it is to have.
    pub target_assignment: Vec<TopicPartitions>,
    /// A member of the classic protocol (see [`super::consumer_protocol::ClassicMeta`]).
    #[serde(default)]
    pub classic: bool,
}

/// Wall-clock milliseconds since the Unix epoch (record timestamps, retention).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
