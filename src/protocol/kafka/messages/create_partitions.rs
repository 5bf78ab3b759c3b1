//! CreatePartitions (API key 37): request and response, versions 0–3 decoded, flexible from version 2.
//!
//! Field layouts follow Apache Kafka's message definitions (`CreatePartitionsRequest.json`,
//! `CreatePartitionsResponse.json`); each `kafka_struct!` below is one struct of them.

use crate::protocol::kafka::macros::kafka_struct;

kafka_struct! {
    /// The CreatePartitions request (API key 37).
    pub struct CreatePartitionsRequest {
        topics: Vec<CreatePartitionsTopic> [0..],
        timeout_ms: i32 [0..],
        validate_only: bool [0..],
    }
}

kafka_struct! {
    /// An element of [`CreatePartitionsRequest::topics`].
    pub struct CreatePartitionsTopic {
        name: String [0..],
        count: i32 [0..],
        assignments: Option<Vec<CreatePartitionsAssignment>> [0..] null 0,
    }
}

kafka_struct! {
    /// An element of [`CreatePartitionsTopic::assignments`].
    pub struct CreatePartitionsAssignment {
        broker_ids: Vec<i32> [0..],
    }
}

kafka_struct! {
    /// The CreatePartitions response (API key 37).
    pub struct CreatePartitionsResponse {
        throttle_time_ms: i32 [0..],
        results: Vec<CreatePartitionsTopicResult> [0..],
    }
}

kafka_struct! {
    /// An element of [`CreatePartitionsResponse::results`].
    pub struct CreatePartitionsTopicResult {
        name: String [0..],
        error_code: i16 [0..],
        error_message: Option<String> [0..] null 0,
    }
}
