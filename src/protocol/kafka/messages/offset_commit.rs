//! OffsetCommit (API key 8): request and response, versions 2–9 decoded, flexible from version 8.
//!
//! Field layouts follow Apache Kafka's message definitions (`OffsetCommitRequest.json`,
//! `OffsetCommitResponse.json`); each `kafka_struct!` below is one struct of them.

use crate::protocol::kafka::macros::kafka_struct;
use crate::protocol::kafka::wire::Uuid;

kafka_struct! {
    /// The OffsetCommit request (API key 8).
    pub struct OffsetCommitRequest {
        group_id: String [2..],
        generation_id_or_member_epoch: i32 [2..] = -1,
        member_id: String [2..],
        group_instance_id: Option<String> [7..] null 7,
        retention_time_ms: i64 [2..4] = -1,
        topics: Vec<OffsetCommitRequestTopic> [2..],
    }
}

kafka_struct! {
    /// An element of [`OffsetCommitRequest::topics`].
    pub struct OffsetCommitRequestTopic {
        name: String [2..],
        partitions: Vec<OffsetCommitRequestPartition> [2..],
    }
}

kafka_struct! {
    /// An element of [`OffsetCommitRequestTopic::partitions`].
    pub struct OffsetCommitRequestPartition {
        partition_index: i32 [2..],
        committed_offset: i64 [2..],
        committed_leader_epoch: i32 [6..] = -1,
        committed_metadata: Option<String> [2..] null 0,
    }
}

kafka_struct! {
    /// The OffsetCommit response (API key 8).
    pub struct OffsetCommitResponse {
        throttle_time_ms: i32 [3..],
        topics: Vec<OffsetCommitResponseTopic> [2..],
    }
}

kafka_struct! {
    /// An element of [`OffsetCommitResponse::topics`].
    pub struct OffsetCommitResponseTopic {
        name: String [2..],
        topic_id: Uuid [10..],
        partitions: Vec<OffsetCommitResponsePartition> [2..],
    }
}

kafka_struct! {
    /// An element of [`OffsetCommitResponseTopic::partitions`].
    pub struct OffsetCommitResponsePartition {
        partition_index: i32 [2..],
        error_code: i16 [2..],
    }
}
