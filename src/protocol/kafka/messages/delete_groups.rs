//! DeleteGroups (API key 42): request and response, versions 0–2, flexible from version 2.
//!
//! Field layouts follow Apache Kafka's message definitions (`DeleteGroupsRequest.json`,
//! `DeleteGroupsResponse.json`); each `kafka_struct!` below is one struct of them.

use crate::protocol::kafka::macros::kafka_struct;

kafka_struct! {
    /// The DeleteGroups request (API key 42).
    pub struct DeleteGroupsRequest {
        groups_names: Vec<String> [0..],
    }
}

kafka_struct! {
    /// The DeleteGroups response (API key 42).
    pub struct DeleteGroupsResponse {
        throttle_time_ms: i32 [0..],
        results: Vec<DeletableGroupResult> [0..],
    }
}

kafka_struct! {
    /// An element of [`DeleteGroupsResponse::results`].
    pub struct DeletableGroupResult {
        group_id: String [0..],
        error_code: i16 [0..],
    }
}
