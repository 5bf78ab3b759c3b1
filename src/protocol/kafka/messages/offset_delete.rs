//! OffsetDelete (API key 47): request and response, version 0 (not flexible).
//!
//! Field layouts follow Apache Kafka's message definitions (`OffsetDeleteRequest.json`,
//! `OffsetDeleteResponse.json`); each `kafka_struct!` below is one struct of them.

use crate::protocol::kafka::macros::kafka_struct;

kafka_struct! {
    /// The OffsetDelete request (API key 47).
    pub struct OffsetDeleteRequest {
        group_id: String [0..],
        topics: Vec<OffsetDeleteRequestTopic> [0..],
    }
}

kafka_struct! {
    /// An element of [`OffsetDeleteRequest::topics`].
    pub struct OffsetDeleteRequestTopic {
        name: String [0..],
        partitions: Vec<OffsetDeleteRequestPartition> [0..],
    }
}

kafka_struct! {
    /// An element of [`OffsetDeleteRequestTopic::partitions`].
    pub struct OffsetDeleteRequestPartition {
        partition_index: i32 [0..],
    }
}

kafka_struct! {
    /// The OffsetDelete response (API key 47).
    pub struct OffsetDeleteResponse {
        error_code: i16 [0..],
        throttle_time_ms: i32 [0..],
        topics: Vec<OffsetDeleteResponseTopic> [0..],
    }
}

kafka_struct! {
    /// An element of [`OffsetDeleteResponse::topics`].
    pub struct OffsetDeleteResponseTopic {
        name: String [0..],
        partitions: Vec<OffsetDeleteResponsePartition> [0..],
    }
}

kafka_struct! {
    /// An element of [`OffsetDeleteResponseTopic::partitions`].
    pub struct OffsetDeleteResponsePartition {
        partition_index: i32 [0..],
        error_code: i16 [0..],
    }
}
