//! Metadata (API key 3): request and response, versions 0–13 decoded, flexible from version 9.
//!
//! Field layouts follow Apache Kafka's message definitions (`MetadataRequest.json`,
//! `MetadataResponse.json`); each `kafka_struct!` below is one struct of them.

use crate::protocol::kafka::macros::kafka_struct;
use crate::protocol::kafka::wire::Uuid;

kafka_struct! {
    /// The Metadata request (API key 3).
    pub struct MetadataRequest {
        topics: Option<Vec<MetadataRequestTopic>> [0..] null 1,
        allow_auto_topic_creation: bool [4..] = true,
        include_cluster_authorized_operations: bool [8..10],
        include_topic_authorized_operations: bool [8..],
    }
}

kafka_struct! {
    /// An element of [`MetadataRequest::topics`].
    pub struct MetadataRequestTopic {
        topic_id: Uuid [10..],
        name: Option<String> [0..] null 10,
    }
}

kafka_struct! {
    /// The Metadata response (API key 3).
    pub struct MetadataResponse {
        throttle_time_ms: i32 [3..],
        brokers: Vec<MetadataResponseBroker> [0..],
        cluster_id: Option<String> [2..] null 2,
        controller_id: i32 [1..] = -1,
        topics: Vec<MetadataResponseTopic> [0..],
        cluster_authorized_operations: i32 [8..10] = i32::MIN,
        error_code: i16 [13..],
    }
}

kafka_struct! {
    /// An element of [`MetadataResponse::brokers`].
    pub struct MetadataResponseBroker {
        node_id: i32 [0..],
        host: String [0..],
        port: i32 [0..],
        rack: Option<String> [1..] null 1,
    }
}

kafka_struct! {
    /// An element of [`MetadataResponse::topics`].
    pub struct MetadataResponseTopic {
        error_code: i16 [0..],
        name: Option<String> [0..] null 12,
        topic_id: Uuid [10..],
        is_internal: bool [1..],
        partitions: Vec<MetadataResponsePartition> [0..],
        topic_authorized_operations: i32 [8..] = i32::MIN,
    }
}

kafka_struct! {
    /// An element of [`MetadataResponseTopic::partitions`].
    pub struct MetadataResponsePartition {
        error_code: i16 [0..],
        partition_index: i32 [0..],
        leader_id: i32 [0..],
        leader_epoch: i32 [7..] = -1,
        replica_nodes: Vec<i32> [0..],
        isr_nodes: Vec<i32> [0..],
        offline_replicas: Vec<i32> [5..],
    }
}
