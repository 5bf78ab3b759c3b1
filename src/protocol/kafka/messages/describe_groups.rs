//! DescribeGroups (API key 15): request and response, versions 0–6 decoded, flexible from version 5.
//!
//! Field layouts follow Apache Kafka's message definitions (`DescribeGroupsRequest.json`,
//! `DescribeGroupsResponse.json`); each `kafka_struct!` below is one struct of them.

use bytes::Bytes;

use crate::protocol::kafka::macros::kafka_struct;

kafka_struct! {
    /// The DescribeGroups request (API key 15).
    pub struct DescribeGroupsRequest {
        groups: Vec<String> [0..],
        include_authorized_operations: bool [3..],
    }
}

kafka_struct! {
    /// The DescribeGroups response (API key 15).
    pub struct DescribeGroupsResponse {
        throttle_time_ms: i32 [1..],
        groups: Vec<DescribedGroup> [0..],
    }
}

kafka_struct! {
    /// An element of [`DescribeGroupsResponse::groups`].
    pub struct DescribedGroup {
        error_code: i16 [0..],
        error_message: Option<String> [6..] null 6,
        group_id: String [0..],
        group_state: String [0..],
        protocol_type: String [0..],
        protocol_data: String [0..],
        members: Vec<DescribedGroupMember> [0..],
        authorized_operations: i32 [3..] = i32::MIN,
    }
}

kafka_struct! {
    /// An element of [`DescribedGroup::members`].
    pub struct DescribedGroupMember {
        member_id: String [0..],
        group_instance_id: Option<String> [4..] null 4,
        client_id: String [0..],
        client_host: String [0..],
        member_metadata: Bytes [0..],
        member_assignment: Bytes [0..],
    }
}
