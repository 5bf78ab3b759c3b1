//! [`BrokerError`]: every error the broker reports to a client, with its stable wire codes.
//!
//! One mapping serves both protocols: [`BrokerError::code`] is Weir's native code (never
//! reused), [`BrokerError::kafka_code`] the Kafka protocol's error code.

use weir_storage::{BatchError, Offset, StorageError};

/// An error the broker reports. Cloneable, so one failure can answer every waiting request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum BrokerError {
    /// No topic by that name.
    #[error("unknown topic {0:?}")]
    UnknownTopic(String),
    /// The topic exists but not that partition.
    #[error("topic {topic:?} has no partition {partition}")]
    UnknownPartition {
        /// The topic.
        topic: String,
        /// The partition asked for.
        partition: i32,
    },
    /// Creating a topic that exists.
    #[error("topic {0:?} already exists")]
    TopicExists(String),
    /// A topic name outside Kafka's rules.
    #[error("invalid topic name {name:?}: {reason}")]
    InvalidTopicName {
        /// The name.
        name: String,
        /// Which rule it breaks.
        reason: String,
    },
    /// A partition count that is zero, too large, or a decrease.
    #[error("invalid partition count: {0}")]
    InvalidPartitions(String),
    /// A topic configuration that does not parse or validate.
    #[error("invalid topic config: {0}")]
    InvalidConfig(String),
    /// A fetch or seek outside `[start, end]`.
    #[error("offset {requested} out of range [{start}, {end}]")]
    OffsetOutOfRange {
        /// The offset asked for.
        requested: Offset,
        /// The log start offset.
        start: Offset,
        /// The log end offset.
        end: Offset,
    },
    /// A batch larger than the topic's `max_message_bytes`.
    #[error("batch of {size} bytes exceeds the topic's max_message_bytes {max}")]
    MessageTooLarge {
        /// The batch size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The bytes are not an acceptable RecordBatch.
    #[error("invalid record batch: {0}")]
    InvalidBatch(String),
    /// The partition's queue is full; retry after a short wait.
    #[error("partition {partition} is busy: {queued_bytes} bytes queued (limit {max_bytes})")]
    Busy {
        /// The partition, as `topic-partition`.
        partition: String,
        /// Bytes waiting for the log.
        queued_bytes: usize,
        /// The configured queue limit.
        max_bytes: usize,
    },
    /// The storage failed; for a log this is fail-stop until the broker restarts it.
    #[error("storage error: {message}")]
    Storage {
        /// The storage error, as text.
        message: String,
    },
    /// A malformed request (a bad argument, an unknown option).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The broker is shutting down or the actor is gone.
    #[error("broker is shutting down")]
    ShuttingDown,
    /// A consumer-group member the group does not know.
    #[error("unknown member {0:?}")]
    UnknownMember(String),
    /// A request from an older (or newer) generation of the group.
    #[error("illegal generation {got} (group is at {current})")]
    IllegalGeneration {
        /// The generation in the request.
        got: i32,
        /// The group's generation.
        current: i32,
    },
    /// The group is rebalancing; rejoin.
    #[error("group is rebalancing")]
    RebalanceInProgress,
    /// A session timeout outside the broker's allowed range.
    #[error("session timeout {0} ms is outside the allowed range")]
    InvalidSessionTimeout(u64),
    /// Members that share no assignment protocol, or a request naming a protocol type or
    /// protocol that is not the group's.
    #[error("inconsistent group protocol: not one the group's members share")]
    InconsistentGroupProtocol,
    /// A new member must rejoin with the id it was given (Kafka's MEMBER_ID_REQUIRED).
    #[error("member id required: rejoin with {0:?}")]
    MemberIdRequired(String),
    /// The group has active members (delete, reset offsets).
    #[error("group {0:?} is not empty")]
    GroupNotEmpty(String),
    /// No group by that name.
    #[error("unknown group {0:?}")]
    UnknownGroup(String),
    /// A static member's instance id is in use by a newer member.
    #[error("group instance id {0:?} is fenced by a newer member")]
    FencedInstanceId(String),
    /// The connection to a remote broker broke while the request was in flight: it may or may
    /// not have been applied (a publish may have been written). Never retried automatically.
    #[error("connection lost, outcome unknown: {0}")]
    ConnectionLost(String),
    /// An idempotent producer's batch does not continue its sequence: a gap, or a first
    /// sequence other than 0 for a new epoch or an unknown producer. Nothing was written.
    #[error(
        "out of order sequence from producer {producer_id}: expected sequence {expected}, got {got}"
    )]
    OutOfOrderSequence {
        /// The producer id.
        producer_id: i64,
        /// The first sequence the partition expected.
        expected: i32,
        /// The batch's first sequence.
        got: i32,
    },
    /// A batch from an older epoch of an idempotent producer (a fenced, zombie instance).
    #[error(
        "producer {producer_id} is fenced: epoch {got} is older than the current epoch {current}"
    )]
    InvalidProducerEpoch {
        /// The producer id.
        producer_id: i64,
        /// The partition's current epoch for it.
        current: i16,
        /// The batch's epoch.
        got: i16,
    },
    /// A transaction request that does not fit the transaction's state: ending one that is not
    /// open, committing what is being aborted, a transactional write to a partition not added
    /// to the transaction (Kafka's INVALID_TXN_STATE). The text says which.
    #[error("invalid transaction state: {0}")]
    InvalidTxnState(String),
    /// A producer id that is not the one of the transactional id named (Kafka's
    /// INVALID_PRODUCER_ID_MAPPING): an unknown transactional id, or one re-initialised since.
    #[error("invalid producer id mapping: {0}")]
    InvalidProducerIdMapping(String),
    /// The transaction is being completed; retry shortly (Kafka's CONCURRENT_TRANSACTIONS).
    #[error("concurrent transactions: {0}")]
    ConcurrentTransactions(String),
    /// A transaction timeout outside `1..=transaction_max_timeout_ms` (Kafka's
    /// INVALID_TRANSACTION_TIMEOUT).
    #[error("transaction timeout {got} ms is not within 1..={max} ms")]
    InvalidTransactionTimeout {
        /// The timeout asked for.
        got: i64,
        /// The broker's `transaction_max_timeout_ms`.
        max: u64,
    },
    /// An acks=all publish to a topic whose `min.insync.replicas` is more than the one replica
    /// a single broker has (Kafka's NOT_ENOUGH_REPLICAS). Nothing was written.
    #[error(
        "acks=all needs {required} in-sync replicas (min.insync.replicas); Weir is one broker"
    )]
    NotEnoughReplicas {
        /// The topic's `min.insync.replicas`.
        required: u32,
    },
    /// A record the topic cannot take: on a compacted topic, one without a key.
    #[error("invalid record: {0}")]
    InvalidRecord(String),
    /// A new member would take the group past `[groups] max_size` (Kafka's `group.max.size`).
    #[error("group {group:?} is full: it has its maximum of {max} members")]
    GroupMaxSizeReached {
        /// The group.
        group: String,
        /// `[groups] max_size`.
        max: u32,
    },
    /// A consumer-protocol heartbeat named an epoch the member does not have (KIP-848): it
    /// must rejoin.
    #[error("member {member:?} is fenced: it named epoch {got}, its epoch is {current}")]
    FencedMemberEpoch {
        /// The member.
        member: String,
        /// The epoch it named.
        got: i32,
        /// Its epoch.
        current: i32,
    },
    /// An offset commit or fetch named an epoch other than the member's (KIP-848): retry with
    /// the epoch of the latest heartbeat.
    #[error("member {member:?} named epoch {got}, its epoch is {current}")]
    StaleMemberEpoch {
        /// The member.
        member: String,
        /// The epoch it named.
        got: i32,
        /// Its epoch.
        current: i32,
    },
    /// A static member joined with an instance id another live member holds.
    #[error("instance id {0:?} is held by a member that has not left")]
    UnreleasedInstanceId(String),
    /// A heartbeat asked for a server-side assignor the broker does not have.
    #[error("no server-side assignor {0:?} (there are: uniform, range)")]
    UnsupportedAssignor(String),
    /// A subscription pattern that does not compile.
    #[error("invalid regular expression {0}")]
    InvalidRegularExpression(String),
    /// A group of the other protocol (classic or consumer) has this id.
    #[error("group {group:?} is a {actual} group: it has members of that protocol")]
    GroupTypeMismatch {
        /// The group.
        group: String,
        /// Its type: `classic` or `consumer`.
        actual: String,
    },
    /// A request the broker understands but that cannot speak for what it names: an offset
    /// commit in a version without member epochs for a consumer-protocol member (Kafka's
    /// OffsetCommit below v9, UNSUPPORTED_VERSION).
    #[error("unsupported request version: {0}")]
    UnsupportedVersion(String),
    /// A group's committed offsets of a topic its members consume cannot be deleted.
    #[error("group {group:?} is subscribed to topic {topic:?}")]
    GroupSubscribedToTopic {
        /// The group.
        group: String,
        /// The topic.
        topic: String,
    },
}

impl BrokerError {
    /// Weir's native protocol code. Numbers are never reused.
    pub fn code(&self) -> u16 {
        match self {
            BrokerError::UnknownTopic(_) => 1,
            BrokerError::UnknownPartition { .. } => 2,
            BrokerError::TopicExists(_) => 3,
            BrokerError::InvalidTopicName { .. } => 4,
            BrokerError::InvalidPartitions(_) => 5,
            BrokerError::InvalidConfig(_) => 6,
            BrokerError::OffsetOutOfRange { .. } => 7,
            BrokerError::MessageTooLarge { .. } => 8,
            BrokerError::InvalidBatch(_) => 9,
            BrokerError::Busy { .. } => 10,
            BrokerError::Storage { .. } => 11,
            BrokerError::InvalidRequest(_) => 12,
            BrokerError::ShuttingDown => 13,
            BrokerError::UnknownMember(_) => 14,
            BrokerError::IllegalGeneration { .. } => 15,
            BrokerError::RebalanceInProgress => 16,
            BrokerError::InvalidSessionTimeout(_) => 17,
            BrokerError::InconsistentGroupProtocol => 18,
            BrokerError::MemberIdRequired(_) => 19,
            BrokerError::GroupNotEmpty(_) => 20,
            BrokerError::UnknownGroup(_) => 21,
            BrokerError::FencedInstanceId(_) => 22,
            BrokerError::ConnectionLost(_) => 23,
            BrokerError::OutOfOrderSequence { .. } => 24,
            BrokerError::InvalidProducerEpoch { .. } => 25,
            // 26 was "transactions unsupported", retired when transactions came.
            BrokerError::GroupSubscribedToTopic { .. } => 27,
            BrokerError::InvalidRecord(_) => 28,
            BrokerError::NotEnoughReplicas { .. } => 29,
            BrokerError::InvalidTxnState(_) => 30,
            BrokerError::InvalidProducerIdMapping(_) => 31,
            BrokerError::ConcurrentTransactions(_) => 32,
            BrokerError::InvalidTransactionTimeout { .. } => 33,
            BrokerError::GroupMaxSizeReached { .. } => 34,
            BrokerError::FencedMemberEpoch { .. } => 35,
            BrokerError::StaleMemberEpoch { .. } => 36,
            BrokerError::UnreleasedInstanceId(_) => 37,
            BrokerError::UnsupportedAssignor(_) => 38,
            BrokerError::InvalidRegularExpression(_) => 39,
            BrokerError::GroupTypeMismatch { .. } => 40,
            BrokerError::UnsupportedVersion(_) => 41,
        }
    }

    /// The Kafka protocol error code.
    pub fn kafka_code(&self) -> i16 {
        match self {
            BrokerError::OffsetOutOfRange { .. } => 1,
            BrokerError::InvalidBatch(_) => 2,
            BrokerError::UnknownTopic(_) | BrokerError::UnknownPartition { .. } => 3,
            BrokerError::MessageTooLarge { .. } => 10,
            BrokerError::InvalidTopicName { .. } => 17,
            BrokerError::IllegalGeneration { .. } => 22,
            BrokerError::InconsistentGroupProtocol => 23,
            BrokerError::UnknownMember(_) => 25,
            BrokerError::InvalidSessionTimeout(_) => 26,
            BrokerError::RebalanceInProgress => 27,
            BrokerError::TopicExists(_) => 36,
            BrokerError::InvalidPartitions(_) => 37,
            BrokerError::InvalidConfig(_) => 40,
            BrokerError::InvalidRequest(_) => 42,
            BrokerError::UnknownGroup(_) => 69,
            BrokerError::GroupNotEmpty(_) => 68,
            BrokerError::MemberIdRequired(_) => 79,
            BrokerError::FencedInstanceId(_) => 82,
            BrokerError::ConnectionLost(_) => 13, // NETWORK_EXCEPTION
            // NOT_ENOUGH_REPLICAS: retriable, makes clients back off and retry.
            BrokerError::Busy { .. } => 19,
            BrokerError::ShuttingDown => 6, // NOT_LEADER_OR_FOLLOWER: clients refresh and retry
            BrokerError::Storage { .. } => 56, // KAFKA_STORAGE_ERROR
            BrokerError::OutOfOrderSequence { .. } => 45, // OUT_OF_ORDER_SEQUENCE_NUMBER
            BrokerError::InvalidProducerEpoch { .. } => 47, // INVALID_PRODUCER_EPOCH
            BrokerError::InvalidTxnState(_) => 48, // INVALID_TXN_STATE
            BrokerError::InvalidProducerIdMapping(_) => 49, // INVALID_PRODUCER_ID_MAPPING
            BrokerError::InvalidTransactionTimeout { .. } => 50, // INVALID_TRANSACTION_TIMEOUT
            BrokerError::ConcurrentTransactions(_) => 51, // CONCURRENT_TRANSACTIONS
            BrokerError::GroupSubscribedToTopic { .. } => 86,
            BrokerError::GroupMaxSizeReached { .. } => 81, // GROUP_MAX_SIZE_REACHED
            BrokerError::InvalidRecord(_) => 87,           // INVALID_RECORD
            // NOT_ENOUGH_REPLICAS: Kafka clients retry it until their delivery timeout.
            BrokerError::NotEnoughReplicas { .. } => 19,
            BrokerError::FencedMemberEpoch { .. } => 110, // FENCED_MEMBER_EPOCH
            BrokerError::UnreleasedInstanceId(_) => 111,  // UNRELEASED_INSTANCE_ID
            BrokerError::UnsupportedAssignor(_) => 112,   // UNSUPPORTED_ASSIGNOR
            BrokerError::StaleMemberEpoch { .. } => 113,  // STALE_MEMBER_EPOCH
            BrokerError::InvalidRegularExpression(_) => 128, // INVALID_REGULAR_EXPRESSION
            BrokerError::UnsupportedVersion(_) => 35,     // UNSUPPORTED_VERSION
            // GROUP_ID_NOT_FOUND to ConsumerGroupHeartbeat and ConsumerGroupDescribe (Kafka's
            // "not a consumer group"); the classic APIs map it themselves.
            BrokerError::GroupTypeMismatch { .. } => 69,
        }
    }

    /// True when retrying the same request later may succeed.
    pub fn is_retriable(&self) -> bool {
        matches!(
            self,
            BrokerError::Busy { .. }
                | BrokerError::ShuttingDown
                | BrokerError::RebalanceInProgress
                | BrokerError::ConcurrentTransactions(_)
        )
    }
}

impl From<StorageError> for BrokerError {
    fn from(e: StorageError) -> Self {
        BrokerError::from(&e)
    }
}

impl From<&StorageError> for BrokerError {
    fn from(e: &StorageError) -> Self {
        match e {
            StorageError::OffsetOutOfRange {
                requested,
                start,
                end,
            } => BrokerError::OffsetOutOfRange {
                requested: *requested,
                start: *start,
                end: *end,
            },
            StorageError::InvalidBatch(b) => BrokerError::InvalidBatch(b.to_string()),
            StorageError::Closed => BrokerError::ShuttingDown,
            other => BrokerError::Storage {
                message: other.to_string(),
            },
        }
    }
}

impl From<BatchError> for BrokerError {
    fn from(e: BatchError) -> Self {
        BrokerError::InvalidBatch(e.to_string())
    }
}

#[cfg(feature = "broker")]
impl From<actix::MailboxError> for BrokerError {
    fn from(_: actix::MailboxError) -> Self {
        BrokerError::ShuttingDown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_codes_are_unique() {
        let all = [
            BrokerError::UnknownTopic(String::new()),
            BrokerError::UnknownPartition {
                topic: String::new(),
                partition: 0,
            },
            BrokerError::TopicExists(String::new()),
            BrokerError::InvalidTopicName {
                name: String::new(),
                reason: String::new(),
            },
            BrokerError::InvalidPartitions(String::new()),
            BrokerError::InvalidConfig(String::new()),
            BrokerError::OffsetOutOfRange {
                requested: 0,
                start: 0,
                end: 0,
            },
            BrokerError::MessageTooLarge { size: 0, max: 0 },
            BrokerError::InvalidBatch(String::new()),
            BrokerError::Busy {
                partition: String::new(),
                queued_bytes: 0,
                max_bytes: 0,
            },
            BrokerError::Storage {
                message: String::new(),
            },
            BrokerError::InvalidRequest(String::new()),
            BrokerError::ShuttingDown,
            BrokerError::UnknownMember(String::new()),
            BrokerError::IllegalGeneration { got: 0, current: 0 },
            BrokerError::RebalanceInProgress,
            BrokerError::InvalidSessionTimeout(0),
            BrokerError::InconsistentGroupProtocol,
            BrokerError::MemberIdRequired(String::new()),
            BrokerError::GroupNotEmpty(String::new()),
            BrokerError::UnknownGroup(String::new()),
            BrokerError::FencedInstanceId(String::new()),
            BrokerError::ConnectionLost(String::new()),
            BrokerError::OutOfOrderSequence {
                producer_id: 0,
                expected: 0,
                got: 0,
            },
            BrokerError::InvalidProducerEpoch {
                producer_id: 0,
                current: 0,
                got: 0,
            },
            BrokerError::InvalidTxnState(String::new()),
            BrokerError::InvalidProducerIdMapping(String::new()),
            BrokerError::ConcurrentTransactions(String::new()),
            BrokerError::InvalidTransactionTimeout { got: 0, max: 0 },
            BrokerError::InvalidRecord(String::new()),
            BrokerError::NotEnoughReplicas { required: 2 },
            BrokerError::GroupSubscribedToTopic {
                group: String::new(),
                topic: String::new(),
            },
            BrokerError::GroupMaxSizeReached {
                group: String::new(),
                max: 1,
            },
            BrokerError::FencedMemberEpoch {
                member: String::new(),
                got: 0,
                current: 0,
            },
            BrokerError::StaleMemberEpoch {
                member: String::new(),
                got: 0,
                current: 0,
            },
            BrokerError::UnreleasedInstanceId(String::new()),
            BrokerError::UnsupportedAssignor(String::new()),
            BrokerError::InvalidRegularExpression(String::new()),
            BrokerError::GroupTypeMismatch {
                group: String::new(),
                actual: "classic".into(),
            },
            BrokerError::UnsupportedVersion(String::new()),
        ];
        let mut codes: Vec<u16> = all.iter().map(BrokerError::code).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), all.len());
    }
}
