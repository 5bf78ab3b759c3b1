//! DeleteRecords (API key 21): request and response, versions 0–2, flexible from version 2.
//!
//! Field layouts follow Apache Kafka's message definitions (`DeleteRecordsRequest.json`,
//! `DeleteRecordsResponse.json`); each `kafka_struct!` below is one struct of them.

use crate::protocol::kafka::macros::kafka_struct;

kafka_struct! {
    /// The DeleteRecords request (API key 21).
    pub struct DeleteRecordsRequest {
        topics: Vec<DeleteRecordsTopic> [0..],
        timeout_ms: i32 [0..],
    }
}

kafka_struct! {
    /// An element of [`DeleteRecordsRequest::topics`].
    pub struct DeleteRecordsTopic {
        name: String [0..],
        partitions: Vec<DeleteRecordsPartition> [0..],
    }
}

kafka_struct! {
    /// An element of [`DeleteRecordsTopic::partitions`]: delete below `offset` (-1: the high
    /// watermark).
    pub struct DeleteRecordsPartition {
        partition_index: i32 [0..],
        offset: i64 [0..],
    }
}

kafka_struct! {
    /// The DeleteRecords response (API key 21).
    pub struct DeleteRecordsResponse {
        throttle_time_ms: i32 [0..],
        topics: Vec<DeleteRecordsTopicResult> [0..],
    }
}

kafka_struct! {
    /// An element of [`DeleteRecordsResponse::topics`].
    pub struct DeleteRecordsTopicResult {
        name: String [0..],
        partitions: Vec<DeleteRecordsPartitionResult> [0..],
    }
}

kafka_struct! {
    /// An element of [`DeleteRecordsTopicResult::partitions`].
    pub struct DeleteRecordsPartitionResult {
        partition_index: i32 [0..],
        low_watermark: i64 [0..],
        error_code: i16 [0..],
    }
}
