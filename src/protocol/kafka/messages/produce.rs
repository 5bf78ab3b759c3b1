//! Produce (API key 0): request and response, versions 0–13 decoded, flexible from version 9.
//!
//! Versions 0–2 predate the crate used as a test oracle; their layout (no transactional id,
//! throttle time from v1, log append time from v2) is Kafka's own definition.
//!
//! Field layouts follow Apache Kafka's message definitions (`ProduceRequest.json`,
//! `ProduceResponse.json`); each `kafka_struct!` below is one struct of them.

use bytes::Bytes;

use crate::protocol::kafka::macros::kafka_struct;
use crate::protocol::kafka::wire::Uuid;

kafka_struct! {
    /// The Produce request (API key 0).
    pub struct ProduceRequest {
        transactional_id: Option<String> [3..] null 0,
        acks: i16 [0..],
        timeout_ms: i32 [0..],
        topic_data: Vec<TopicProduceData> [0..],
    }
}

kafka_struct! {
    /// An element of [`ProduceRequest::topic_data`].
    pub struct TopicProduceData {
        name: String [0..12],
        topic_id: Uuid [13..],
        partition_data: Vec<PartitionProduceData> [0..],
    }
}

kafka_struct! {
    /// An element of [`TopicProduceData::partition_data`].
    pub struct PartitionProduceData {
        index: i32 [0..],
        records: Option<Bytes> [0..] null 0,
    }
}

kafka_struct! {
    /// The Produce response (API key 0).
    pub struct ProduceResponse {
        responses: Vec<TopicProduceResponse> [0..],
        throttle_time_ms: i32 [1..],
        node_endpoints: Vec<NodeEndpoint> [10..] tag 0,
    }
}

kafka_struct! {
    /// An element of [`ProduceResponse::responses`].
    pub struct TopicProduceResponse {
        name: String [0..12],
        topic_id: Uuid [13..],
        partition_responses: Vec<PartitionProduceResponse> [0..],
    }
}

kafka_struct! {
    /// An element of [`ProduceResponse::node_endpoints`].
    pub struct NodeEndpoint {
        node_id: i32 [10..],
        host: String [10..],
        port: i32 [10..],
        rack: Option<String> [10..] null 0,
    }
}

kafka_struct! {
    /// An element of [`TopicProduceResponse::partition_responses`].
    pub struct PartitionProduceResponse {
        index: i32 [0..],
        error_code: i16 [0..],
        base_offset: i64 [0..],
        log_append_time_ms: i64 [2..] = -1,
        log_start_offset: i64 [5..] = -1,
        record_errors: Vec<BatchIndexAndErrorMessage> [8..],
        error_message: Option<String> [8..] null 0,
        current_leader: LeaderIdAndEpoch [10..] tag 0,
    }
}

kafka_struct! {
    /// An element of [`PartitionProduceResponse::record_errors`].
    pub struct BatchIndexAndErrorMessage {
        batch_index: i32 [8..],
        batch_index_error_message: Option<String> [8..] null 0,
    }
}

kafka_struct! {
    /// The value of [`PartitionProduceResponse::current_leader`].
    pub struct LeaderIdAndEpoch {
        leader_id: i32 [10..] = -1,
        leader_epoch: i32 [10..] = -1,
    }
}
