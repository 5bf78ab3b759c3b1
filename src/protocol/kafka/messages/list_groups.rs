//! ListGroups (API key 16): request and response, versions 0–5 decoded, flexible from version 3.
//!
//! Field layouts follow Apache Kafka's message definitions (`ListGroupsRequest.json`,
//! `ListGroupsResponse.json`); each `kafka_struct!` below is one struct of them.

use crate::protocol::kafka::macros::kafka_struct;

kafka_struct! {
    /// The ListGroups request (API key 16).
    pub struct ListGroupsRequest {
        states_filter: Vec<String> [4..],
        types_filter: Vec<String> [5..],
    }
}

kafka_struct! {
    /// The ListGroups response (API key 16).
    pub struct ListGroupsResponse {
        throttle_time_ms: i32 [1..],
        error_code: i16 [0..],
        groups: Vec<ListedGroup> [0..],
    }
}

kafka_struct! {
    /// An element of [`ListGroupsResponse::groups`].
    pub struct ListedGroup {
        group_id: String [0..],
        protocol_type: String [0..],
        group_state: String [4..],
        group_type: String [5..],
    }
}
