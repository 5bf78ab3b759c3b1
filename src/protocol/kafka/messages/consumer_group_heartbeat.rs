//! ConsumerGroupHeartbeat (API key 68): request and response, versions 0–1, flexible in all.
//!
//! Kafka's consumer group protocol (KIP-848): members join, stay and leave with this one
//! request, and the coordinator assigns partitions itself. Field layouts follow Apache Kafka's
//! message definitions (`ConsumerGroupHeartbeatRequest.json`,
//! `ConsumerGroupHeartbeatResponse.json`); each `kafka_struct!` below is one struct of them.

use crate::protocol::kafka::macros::kafka_struct;
use crate::protocol::kafka::wire::Uuid;

kafka_struct! {
    /// The ConsumerGroupHeartbeat request (API key 68). A null field means "unchanged since
    /// the last heartbeat"; a member sends them all when it joins (member epoch 0).
    pub struct ConsumerGroupHeartbeatRequest {
        group_id: String [0..],
        member_id: String [0..],
        member_epoch: i32 [0..],
        instance_id: Option<String> [0..] null 0,
        rack_id: Option<String> [0..] null 0,
        rebalance_timeout_ms: i32 [0..] = -1,
        subscribed_topic_names: Option<Vec<String>> [0..] null 0,
        subscribed_topic_regex: Option<String> [1..] null 1,
        server_assignor: Option<String> [0..] null 0,
        topic_partitions: Option<Vec<HeartbeatTopicPartitions>> [0..] null 0,
    }
}

kafka_struct! {
    /// Partitions of one topic, by topic id: what a member owns (request) or is assigned
    /// (response).
    pub struct HeartbeatTopicPartitions {
        topic_id: Uuid [0..],
        partitions: Vec<i32> [0..],
    }
}

kafka_struct! {
    /// The ConsumerGroupHeartbeat response (API key 68).
    pub struct ConsumerGroupHeartbeatResponse {
        throttle_time_ms: i32 [0..],
        error_code: i16 [0..],
        error_message: Option<String> [0..] null 0,
        member_id: Option<String> [0..] null 0,
        member_epoch: i32 [0..],
        heartbeat_interval_ms: i32 [0..],
        assignment: Option<HeartbeatAssignment> [0..] null 0,
    }
}

kafka_struct! {
    /// [`ConsumerGroupHeartbeatResponse::assignment`]: sent when it changed (or the member
    /// sent a full request), null otherwise.
    pub struct HeartbeatAssignment {
        topic_partitions: Vec<HeartbeatTopicPartitions> [0..],
    }
}
