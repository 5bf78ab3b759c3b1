//! TxnOffsetCommit (API key 28): request and response, versions 0–3 decoded, flexible from version 3.
//!
//! Field layouts follow Apache Kafka's message definitions (`TxnOffsetCommitRequest.json`,
//! `TxnOffsetCommitResponse.json`); each `kafka_struct!` below is one struct of them.

use crate::protocol::kafka::macros::kafka_struct;

kafka_struct! {
    /// The TxnOffsetCommit request (API key 28).
    pub struct TxnOffsetCommitRequest {
        transactional_id: String [0..],
        group_id: String [0..],
        producer_id: i64 [0..],
        producer_epoch: i16 [0..],
        generation_id: i32 [3..] = -1,
        member_id: String [3..],
        group_instance_id: Option<String> [3..] null 3,
        topics: Vec<TxnOffsetCommitRequestTopic> [0..],
    }
}

kafka_struct! {
    /// An element of [`TxnOffsetCommitRequest::topics`].
    pub struct TxnOffsetCommitRequestTopic {
        name: String [0..],
        partitions: Vec<TxnOffsetCommitRequestPartition> [0..],
    }
}

kafka_struct! {
    /// An element of [`TxnOffsetCommitRequestTopic::partitions`].
    pub struct TxnOffsetCommitRequestPartition {
        partition_index: i32 [0..],
        committed_offset: i64 [0..],
        committed_leader_epoch: i32 [2..] = -1,
        committed_metadata: Option<String> [0..] null 0,
    }
}

kafka_struct! {
    /// The TxnOffsetCommit response (API key 28).
    pub struct TxnOffsetCommitResponse {
        throttle_time_ms: i32 [0..],
        topics: Vec<TxnOffsetCommitResponseTopic> [0..],
    }
}

kafka_struct! {
    /// An element of [`TxnOffsetCommitResponse::topics`].
    pub struct TxnOffsetCommitResponseTopic {
        name: String [0..],
        partitions: Vec<TxnOffsetCommitResponsePartition> [0..],
    }
}

kafka_struct! {
    /// An element of [`TxnOffsetCommitResponseTopic::partitions`].
    pub struct TxnOffsetCommitResponsePartition {
        partition_index: i32 [0..],
        error_code: i16 [0..],
    }
}
