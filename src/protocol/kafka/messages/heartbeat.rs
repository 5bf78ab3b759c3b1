//! Heartbeat (API key 12): request and response, versions 0–4 decoded, flexible from version 4.
//!
//! Field layouts follow Apache Kafka's message definitions (`HeartbeatRequest.json`,
//! `HeartbeatResponse.json`); each `kafka_struct!` below is one struct of them.

use crate::protocol::kafka::macros::kafka_struct;

kafka_struct! {
    /// The Heartbeat request (API key 12).
    pub struct HeartbeatRequest {
        group_id: String [0..],
        generation_id: i32 [0..],
        member_id: String [0..],
        group_instance_id: Option<String> [3..] null 3,
    }
}

kafka_struct! {
    /// The Heartbeat response (API key 12).
    pub struct HeartbeatResponse {
        throttle_time_ms: i32 [1..],
        error_code: i16 [0..],
    }
}
