//! OffsetFetch (API key 9): request and response, versions 1–9 decoded, flexible from version 6.
//!
//! Field layouts follow Apache Kafka's message definitions (`OffsetFetchRequest.json`,
//! `OffsetFetchResponse.json`); each `kafka_struct!` below is one struct of them.

use crate::protocol::kafka::macros::kafka_struct;
use crate::protocol::kafka::wire::Uuid;

kafka_struct! {
    /// The OffsetFetch request (API key 9).
    pub struct OffsetFetchRequest {
        group_id: String [1..7],
        topics: Option<Vec<OffsetFetchRequestTopic>> [1..7] null 2,
        groups: Vec<OffsetFetchRequestGroup> [8..],
        require_stable: bool [7..],
    }
}

kafka_struct! {
    /// An element of [`OffsetFetchRequest::topics`].
    pub struct OffsetFetchRequestTopic {
        name: String [1..7],
        partition_indexes: Vec<i32> [1..7],
    }
}

kafka_struct! {
    /// An element of [`OffsetFetchRequest::groups`].
    pub struct OffsetFetchRequestGroup {
        group_id: String [8..],
        member_id: Option<String> [9..] null 9,
        member_epoch: i32 [9..] = -1,
        topics: Option<Vec<OffsetFetchRequestTopics>> [8..] null 8,
    }
}

kafka_struct! {
    /// An element of [`OffsetFetchRequestGroup::topics`].
    pub struct OffsetFetchRequestTopics {
        name: String [8..],
        partition_indexes: Vec<i32> [8..],
    }
}

kafka_struct! {
    /// The OffsetFetch response (API key 9).
    pub struct OffsetFetchResponse {
        throttle_time_ms: i32 [3..],
        topics: Vec<OffsetFetchResponseTopic> [1..7],
        error_code: i16 [2..7],
        groups: Vec<OffsetFetchResponseGroup> [8..],
    }
}

kafka_struct! {
    /// An element of [`OffsetFetchResponse::topics`].
    pub struct OffsetFetchResponseTopic {
        name: String [1..7],
        partitions: Vec<OffsetFetchResponsePartition> [1..7],
    }
}

kafka_struct! {
    /// An element of [`OffsetFetchResponse::groups`].
    pub struct OffsetFetchResponseGroup {
        group_id: String [8..],
        topics: Vec<OffsetFetchResponseTopics> [8..],
        error_code: i16 [8..],
    }
}

kafka_struct! {
    /// An element of [`OffsetFetchResponseTopic::partitions`].
    pub struct OffsetFetchResponsePartition {
        partition_index: i32 [1..7],
        committed_offset: i64 [1..7],
        committed_leader_epoch: i32 [5..7] = -1,
        metadata: Option<String> [1..7] null 0,
        error_code: i16 [1..7],
    }
}

kafka_struct! {
    /// An element of [`OffsetFetchResponseGroup::topics`].
    pub struct OffsetFetchResponseTopics {
        name: String [8..],
        topic_id: Uuid [10..],
        partitions: Vec<OffsetFetchResponsePartitions> [8..],
    }
}

kafka_struct! {
    /// An element of [`OffsetFetchResponseTopics::partitions`].
    pub struct OffsetFetchResponsePartitions {
        partition_index: i32 [8..],
        committed_offset: i64 [8..],
        committed_leader_epoch: i32 [8..] = -1,
        metadata: Option<String> [8..] null 0,
        error_code: i16 [8..],
    }
}
