//! CreateTopics (API key 19): request and response, versions 2–7 decoded, flexible from version 5.
//!
//! Field layouts follow Apache Kafka's message definitions (`CreateTopicsRequest.json`,
//! `CreateTopicsResponse.json`); each `kafka_struct!` below is one struct of them.

use crate::protocol::kafka::macros::kafka_struct;
use crate::protocol::kafka::wire::Uuid;

kafka_struct! {
    /// The CreateTopics request (API key 19).
    pub struct CreateTopicsRequest {
        topics: Vec<CreatableTopic> [2..],
        timeout_ms: i32 [2..] = 60000,
        validate_only: bool [2..],
    }
}

kafka_struct! {
    /// An element of [`CreateTopicsRequest::topics`].
    pub struct CreatableTopic {
        name: String [2..],
        num_partitions: i32 [2..],
        replication_factor: i16 [2..],
        assignments: Vec<CreatableReplicaAssignment> [2..],
        configs: Vec<CreatableTopicConfig> [2..],
    }
}

kafka_struct! {
    /// An element of [`CreatableTopic::assignments`].
    pub struct CreatableReplicaAssignment {
        partition_index: i32 [2..],
        broker_ids: Vec<i32> [2..],
    }
}

kafka_struct! {
    /// An element of [`CreatableTopic::configs`].
    pub struct CreatableTopicConfig {
        name: String [2..],
        value: Option<String> [2..] null 0,
    }
}

kafka_struct! {
    /// The CreateTopics response (API key 19).
    pub struct CreateTopicsResponse {
        throttle_time_ms: i32 [2..],
        topics: Vec<CreatableTopicResult> [2..],
    }
}

kafka_struct! {
    /// An element of [`CreateTopicsResponse::topics`].
    pub struct CreatableTopicResult {
        name: String [2..],
        topic_id: Uuid [7..],
        error_code: i16 [2..],
        error_message: Option<String> [2..] null 0,
        num_partitions: i32 [5..] = -1,
        replication_factor: i16 [5..] = -1,
        configs: Option<Vec<CreatableTopicConfigs>> [5..] null 5,
        topic_config_error_code: i16 [5..] tag 0,
    }
}

kafka_struct! {
    /// An element of [`CreatableTopicResult::configs`].
    pub struct CreatableTopicConfigs {
        name: String [5..],
        value: Option<String> [5..] null 5,
        read_only: bool [5..],
        config_source: i8 [5..] = -1,
        is_sensitive: bool [5..],
    }
}
