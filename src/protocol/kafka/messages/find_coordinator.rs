//! FindCoordinator (API key 10): request and response, versions 0–6 decoded, flexible from version 3.
//!
//! Field layouts follow Apache Kafka's message definitions (`FindCoordinatorRequest.json`,
//! `FindCoordinatorResponse.json`); each `kafka_struct!` below is one struct of them.

use crate::protocol::kafka::macros::kafka_struct;

kafka_struct! {
    /// The FindCoordinator request (API key 10).
    pub struct FindCoordinatorRequest {
        key: String [0..3],
        key_type: i8 [1..],
        coordinator_keys: Vec<String> [4..],
    }
}

kafka_struct! {
    /// The FindCoordinator response (API key 10).
    pub struct FindCoordinatorResponse {
        throttle_time_ms: i32 [1..],
        error_code: i16 [0..3],
        error_message: Option<String> [1..3] null 1,
        node_id: i32 [0..3],
        host: String [0..3],
        port: i32 [0..3],
        coordinators: Vec<Coordinator> [4..],
    }
}

kafka_struct! {
    /// An element of [`FindCoordinatorResponse::coordinators`].
    pub struct Coordinator {
        key: String [4..],
        node_id: i32 [4..],
        host: String [4..],
        port: i32 [4..],
        error_code: i16 [4..],
        error_message: Option<String> [4..] null 4,
    }
}
