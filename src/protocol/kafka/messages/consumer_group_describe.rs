//! ConsumerGroupDescribe (API key 69): request and response, versions 0–1, flexible in all.
//!
//! Describes groups of Kafka's consumer group protocol (KIP-848): epochs, assignor, members
//! with their current and target assignments. Field layouts follow Apache Kafka's message
//! definitions (`ConsumerGroupDescribeRequest.json`, `ConsumerGroupDescribeResponse.json`);
//! each `kafka_struct!` below is one struct of them.

use crate::protocol::kafka::macros::kafka_struct;
use crate::protocol::kafka::wire::Uuid;

kafka_struct! {
    /// The ConsumerGroupDescribe request (API key 69).
    pub struct ConsumerGroupDescribeRequest {
        group_ids: Vec<String> [0..],
        include_authorized_operations: bool [0..],
    }
}

kafka_struct! {
    /// The ConsumerGroupDescribe response (API key 69).
    pub struct ConsumerGroupDescribeResponse {
        throttle_time_ms: i32 [0..],
        groups: Vec<DescribedConsumerGroup> [0..],
    }
}

kafka_struct! {
    /// An element of [`ConsumerGroupDescribeResponse::groups`].
    pub struct DescribedConsumerGroup {
        error_code: i16 [0..],
        error_message: Option<String> [0..] null 0,
        group_id: String [0..],
        group_state: String [0..],
        group_epoch: i32 [0..],
        assignment_epoch: i32 [0..],
        assignor_name: String [0..],
        members: Vec<DescribedConsumerMember> [0..],
        authorized_operations: i32 [0..] = i32::MIN,
    }
}

kafka_struct! {
    /// An element of [`DescribedConsumerGroup::members`].
    pub struct DescribedConsumerMember {
        member_id: String [0..],
        instance_id: Option<String> [0..] null 0,
        rack_id: Option<String> [0..] null 0,
        member_epoch: i32 [0..],
        client_id: String [0..],
        client_host: String [0..],
        subscribed_topic_names: Vec<String> [0..],
        subscribed_topic_regex: Option<String> [0..] null 0,
        assignment: DescribedAssignment [0..],
        target_assignment: DescribedAssignment [0..],
        member_type: i8 [1..] = -1,
    }
}

kafka_struct! {
    /// A member's assignment, current or target.
    pub struct DescribedAssignment {
        topic_partitions: Vec<DescribedTopicPartitions> [0..],
    }
}

kafka_struct! {
    /// Partitions of one topic, by id and name.
    pub struct DescribedTopicPartitions {
        topic_id: Uuid [0..],
        topic_name: String [0..],
        partitions: Vec<i32> [0..],
    }
}
