//! AddPartitionsToTxn (API key 24): request and response, versions 0–3 decoded, flexible from version 3.
//!
//! Field layouts follow Apache Kafka's message definitions (`AddPartitionsToTxnRequest.json`,
//! `AddPartitionsToTxnResponse.json`); each `kafka_struct!` below is one struct of them.
//! Versions 4+ (the broker-to-broker batched form: `Transactions`, `VerifyOnly`,
//! `ResultsByTransaction` and a top-level error code) are left out: clients use 0–3 only. The
//! request's `V3AndBelow*` fields are named here without that prefix.

use crate::protocol::kafka::macros::kafka_struct;

kafka_struct! {
    /// The AddPartitionsToTxn request (API key 24).
    pub struct AddPartitionsToTxnRequest {
        transactional_id: String [0..3],
        producer_id: i64 [0..3],
        producer_epoch: i16 [0..3],
        topics: Vec<AddPartitionsToTxnTopic> [0..3],
    }
}

kafka_struct! {
    /// An element of [`AddPartitionsToTxnRequest::topics`].
    pub struct AddPartitionsToTxnTopic {
        name: String [0..],
        partitions: Vec<i32> [0..],
    }
}

kafka_struct! {
    /// The AddPartitionsToTxn response (API key 24).
    pub struct AddPartitionsToTxnResponse {
        throttle_time_ms: i32 [0..],
        results_by_topic_v3_and_below: Vec<AddPartitionsToTxnTopicResult> [0..3],
    }
}

kafka_struct! {
    /// An element of [`AddPartitionsToTxnResponse::results_by_topic_v3_and_below`].
    pub struct AddPartitionsToTxnTopicResult {
        name: String [0..],
        results_by_partition: Vec<AddPartitionsToTxnPartitionResult> [0..],
    }
}

kafka_struct! {
    /// An element of [`AddPartitionsToTxnTopicResult::results_by_partition`].
    pub struct AddPartitionsToTxnPartitionResult {
        partition_index: i32 [0..],
        partition_error_code: i16 [0..],
    }
}
