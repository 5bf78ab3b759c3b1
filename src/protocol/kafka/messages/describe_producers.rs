//! DescribeProducers (API key 61): request and response, version 0 (flexible).
//!
//! Field layouts follow Apache Kafka's message definitions (`DescribeProducersRequest.json`,
//! `DescribeProducersResponse.json`); each `kafka_struct!` below is one struct of them.

use crate::protocol::kafka::macros::kafka_struct;

kafka_struct! {
    /// The DescribeProducers request (API key 61).
    pub struct DescribeProducersRequest {
        topics: Vec<DescribeProducersTopicRequest> [0..],
    }
}

kafka_struct! {
    /// An element of [`DescribeProducersRequest::topics`].
    pub struct DescribeProducersTopicRequest {
        name: String [0..],
        partition_indexes: Vec<i32> [0..],
    }
}

kafka_struct! {
    /// The DescribeProducers response (API key 61).
    pub struct DescribeProducersResponse {
        throttle_time_ms: i32 [0..],
        topics: Vec<DescribeProducersTopicResponse> [0..],
    }
}

kafka_struct! {
    /// An element of [`DescribeProducersResponse::topics`].
    pub struct DescribeProducersTopicResponse {
        name: String [0..],
        partitions: Vec<DescribeProducersPartitionResponse> [0..],
    }
}

kafka_struct! {
    /// An element of [`DescribeProducersTopicResponse::partitions`].
    pub struct DescribeProducersPartitionResponse {
        partition_index: i32 [0..],
        error_code: i16 [0..],
        error_message: Option<String> [0..] null 0,
        active_producers: Vec<ProducerState> [0..],
    }
}

kafka_struct! {
    /// An element of [`DescribeProducersPartitionResponse::active_producers`].
    pub struct ProducerState {
        producer_id: i64 [0..],
        producer_epoch: i32 [0..],
        last_sequence: i32 [0..] = -1,
        last_timestamp: i64 [0..] = -1,
        coordinator_epoch: i32 [0..],
        current_txn_start_offset: i64 [0..] = -1,
    }
}
