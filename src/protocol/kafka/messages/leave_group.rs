//! LeaveGroup (API key 13): request and response, versions 0–5 decoded, flexible from version 4.
//!
//! Field layouts follow Apache Kafka's message definitions (`LeaveGroupRequest.json`,
//! `LeaveGroupResponse.json`); each `kafka_struct!` below is one struct of them.

use crate::protocol::kafka::macros::kafka_struct;

kafka_struct! {
    /// The LeaveGroup request (API key 13).
    pub struct LeaveGroupRequest {
        group_id: String [0..],
        member_id: String [0..2],
        members: Vec<MemberIdentity> [3..],
    }
}

kafka_struct! {
    /// An element of [`LeaveGroupRequest::members`].
    pub struct MemberIdentity {
        member_id: String [3..],
        group_instance_id: Option<String> [3..] null 3,
        reason: Option<String> [5..] null 5,
    }
}

kafka_struct! {
    /// The LeaveGroup response (API key 13).
    pub struct LeaveGroupResponse {
        throttle_time_ms: i32 [1..],
        error_code: i16 [0..],
        members: Vec<MemberResponse> [3..],
    }
}

kafka_struct! {
    /// An element of [`LeaveGroupResponse::members`].
    pub struct MemberResponse {
        member_id: String [3..],
        group_instance_id: Option<String> [3..] null 3,
        error_code: i16 [3..],
    }
}
