//! SyncGroup (API key 14): request and response, versions 0–5 decoded, flexible from version 4.
//!
//! Field layouts follow Apache Kafka's message definitions (`SyncGroupRequest.json`,
//! `SyncGroupResponse.json`); each `kafka_struct!` below is one struct of them.

use bytes::Bytes;

use crate::protocol::kafka::macros::kafka_struct;

kafka_struct! {
    /// The SyncGroup request (API key 14).
    pub struct SyncGroupRequest {
        group_id: String [0..],
        generation_id: i32 [0..],
        member_id: String [0..],
        group_instance_id: Option<String> [3..] null 3,
        protocol_type: Option<String> [5..] null 5,
        protocol_name: Option<String> [5..] null 5,
        assignments: Vec<SyncGroupRequestAssignment> [0..],
    }
}

kafka_struct! {
    /// An element of [`SyncGroupRequest::assignments`].
    pub struct SyncGroupRequestAssignment {
        member_id: String [0..],
        assignment: Bytes [0..],
    }
}

kafka_struct! {
    /// The SyncGroup response (API key 14).
    pub struct SyncGroupResponse {
        throttle_time_ms: i32 [1..],
        error_code: i16 [0..],
        protocol_type: Option<String> [5..] null 5,
        protocol_name: Option<String> [5..] null 5,
        assignment: Bytes [0..],
    }
}
