//! ListOffsets (API key 2): request and response, versions 1–10 decoded, flexible from version 6.
//!
//! Field layouts follow Apache Kafka's message definitions (`ListOffsetsRequest.json`,
//! `ListOffsetsResponse.json`); each `kafka_struct!` below is one struct of them.

use crate::protocol::kafka::macros::kafka_struct;

kafka_struct! {
    /// The ListOffsets request (API key 2).
    pub struct ListOffsetsRequest {
        replica_id: i32 [1..],
        isolation_level: i8 [2..],
        topics: Vec<ListOffsetsTopic> [1..],
        timeout_ms: i32 [10..],
    }
}

kafka_struct! {
    /// An element of [`ListOffsetsRequest::topics`].
    pub struct ListOffsetsTopic {
        name: String [1..],
        partitions: Vec<ListOffsetsPartition> [1..],
    }
}

kafka_struct! {
    /// An element of [`ListOffsetsTopic::partitions`].
    pub struct ListOffsetsPartition {
        partition_index: i32 [1..],
        current_leader_epoch: i32 [4..] = -1,
        timestamp: i64 [1..],
    }
}

kafka_struct! {
    /// The ListOffsets response (API key 2).
    pub struct ListOffsetsResponse {
        throttle_time_ms: i32 [2..],
        topics: Vec<ListOffsetsTopicResponse> [1..],
    }
}

kafka_struct! {
    /// An element of [`ListOffsetsResponse::topics`].
    pub struct ListOffsetsTopicResponse {
        name: String [1..],
        partitions: Vec<ListOffsetsPartitionResponse> [1..],
    }
}

kafka_struct! {
    /// An element of [`ListOffsetsTopicResponse::partitions`].
    pub struct ListOffsetsPartitionResponse {
        partition_index: i32 [1..],
        error_code: i16 [1..],
        timestamp: i64 [1..] = -1,
        offset: i64 [1..] = -1,
        leader_epoch: i32 [4..] = -1,
    }
}
