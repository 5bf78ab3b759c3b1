//! DescribeCluster (API key 60): request and response, versions 0–2 decoded, flexible from version 0.
//!
//! Field layouts follow Apache Kafka's message definitions (`DescribeClusterRequest.json`,
//! `DescribeClusterResponse.json`); each `kafka_struct!` below is one struct of them.

use crate::protocol::kafka::macros::kafka_struct;

kafka_struct! {
    /// The DescribeCluster request (API key 60).
    pub struct DescribeClusterRequest {
        include_cluster_authorized_operations: bool [0..],
        endpoint_type: i8 [1..] = 1,
        include_fenced_brokers: bool [2..],
    }
}

kafka_struct! {
    /// The DescribeCluster response (API key 60).
    pub struct DescribeClusterResponse {
        throttle_time_ms: i32 [0..],
        error_code: i16 [0..],
        error_message: Option<String> [0..] null 0,
        endpoint_type: i8 [1..] = 1,
        cluster_id: String [0..],
        controller_id: i32 [0..] = -1,
        brokers: Vec<DescribeClusterBroker> [0..],
        cluster_authorized_operations: i32 [0..] = i32::MIN,
    }
}

kafka_struct! {
    /// An element of [`DescribeClusterResponse::brokers`].
    pub struct DescribeClusterBroker {
        broker_id: i32 [0..],
        host: String [0..],
        port: i32 [0..],
        rack: Option<String> [0..] null 0,
        is_fenced: bool [2..],
    }
}
