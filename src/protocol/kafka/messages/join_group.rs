//! JoinGroup (API key 11): request and response, versions 0–9 decoded, flexible from version 6.
//!
//! Field layouts follow Apache Kafka's message definitions (`JoinGroupRequest.json`,
//! `JoinGroupResponse.json`); each `kafka_struct!` below is one struct of them.

use bytes::Bytes;

use crate::protocol::kafka::macros::kafka_struct;

kafka_struct! {
    /// The JoinGroup request (API key 11).
    pub struct JoinGroupRequest {
        group_id: String [0..],
        session_timeout_ms: i32 [0..],
        rebalance_timeout_ms: i32 [1..] = -1,
        member_id: String [0..],
        group_instance_id: Option<String> [5..] null 5,
        protocol_type: String [0..],
        protocols: Vec<JoinGroupRequestProtocol> [0..],
        reason: Option<String> [8..] null 8,
    }
}

kafka_struct! {
    /// An element of [`JoinGroupRequest::protocols`].
    pub struct JoinGroupRequestProtocol {
        name: String [0..],
        metadata: Bytes [0..],
    }
}

kafka_struct! {
    /// The JoinGroup response (API key 11).
    pub struct JoinGroupResponse {
        throttle_time_ms: i32 [2..],
        error_code: i16 [0..],
        generation_id: i32 [0..] = -1,
        protocol_type: Option<String> [7..] null 7,
        protocol_name: Option<String> [0..] null 7,
        leader: String [0..],
        skip_assignment: bool [9..],
        member_id: String [0..],
        members: Vec<JoinGroupResponseMember> [0..],
    }
}

kafka_struct! {
    /// An element of [`JoinGroupResponse::members`].
    pub struct JoinGroupResponseMember {
        member_id: String [0..],
        group_instance_id: Option<String> [5..] null 5,
        metadata: Bytes [0..],
    }
}
